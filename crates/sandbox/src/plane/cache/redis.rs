//! One real Redis server of the sandbox: `redis-server` (Debian's `redis-server` package,
//! which `cargo xtask setup` installs) as a child process on one zone's loopback address, a
//! primary or a replica of one, TLS-only when the group has encryption in transit; paused
//! (SIGSTOP: connections to it stall, as to a node without power or cut off), resumed,
//! promoted and killed. Nothing is written to disk: ElastiCache's nodes keep their data in
//! memory, and a node that is replaced starts empty and syncs from the primary.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};

/// How long a starting server has to answer PING.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long one admin command may take.
const CLI_TIMEOUT: Duration = Duration::from_secs(5);

/// `redis-server` and `redis-cli`: on `PATH`, else Debian's `/usr/bin`.
pub fn programs() -> Option<(PathBuf, PathBuf)> {
    let find = |name: &str| {
        std::env::var_os("PATH")
            .and_then(|paths| {
                std::env::split_paths(&paths)
                    .map(|d| d.join(name))
                    .find(|p| p.is_file())
            })
            .or_else(|| Some(PathBuf::from("/usr/bin").join(name)).filter(|p| p.is_file()))
    };
    Some((find("redis-server")?, find("redis-cli")?))
}

/// A node's certificate and key, and the authority that signed them.
#[derive(Debug, Clone)]
pub(crate) struct Tls {
    pub(crate) ca: PathBuf,
    pub(crate) cert: PathBuf,
    pub(crate) key: PathBuf,
}

async fn openssl(args: &[&str]) -> Result<(), String> {
    let out = Command::new("openssl")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .await
        .map_err(|e| format!("openssl (Debian's openssl package): {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "openssl {}: {}",
            args.first().copied().unwrap_or_default(),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// The plane's certificate authority in `root` (`ca.pem`, made once): what the tasks trust,
/// as ElastiCache's certificates chain to Amazon's roots.
pub(crate) async fn authority(root: &Path) -> Result<PathBuf, String> {
    // Groups start side by side: one makes the authority, the others then find it.
    static MAKING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    let _one = MAKING.lock().await;
    let ca = root.join("ca.pem");
    if ca.is_file() {
        return Ok(ca);
    }
    std::fs::create_dir_all(root).map_err(|e| format!("{}: {e}", root.display()))?;
    let key = root.join("ca.key").display().to_string();
    let pem = root.join("ca.tmp.pem");
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "7",
        "-subj",
        "/CN=stackproof sandbox cache CA",
        "-keyout",
        &key,
        "-out",
        &pem.display().to_string(),
    ])
    .await?;
    std::fs::rename(&pem, &ca).map_err(|e| format!("{}: {e}", ca.display()))?;
    Ok(ca)
}

/// A certificate for `names` signed by the plane's authority, in `dir`.
pub(crate) async fn certificate(root: &Path, dir: &Path, names: &[&str]) -> Result<Tls, String> {
    let ca = authority(root).await?;
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let (key, csr, cert, ext) = (
        dir.join("node.key"),
        dir.join("node.csr"),
        dir.join("node.pem"),
        dir.join("node.ext"),
    );
    let sans: Vec<String> = names.iter().map(|n| format!("DNS:{n}")).collect();
    std::fs::write(
        &ext,
        format!(
            "subjectAltName={}\nextendedKeyUsage=serverAuth\n",
            sans.join(",")
        ),
    )
    .map_err(|e| format!("{}: {e}", ext.display()))?;
    openssl(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        &format!("/CN={}", names.first().copied().unwrap_or("cache")),
        "-keyout",
        &key.display().to_string(),
        "-out",
        &csr.display().to_string(),
    ])
    .await?;
    openssl(&[
        "x509",
        "-req",
        "-days",
        "7",
        "-in",
        &csr.display().to_string(),
        "-CA",
        &ca.display().to_string(),
        "-CAkey",
        &root.join("ca.key").display().to_string(),
        "-CAcreateserial",
        "-extfile",
        &ext.display().to_string(),
        "-out",
        &cert.display().to_string(),
    ])
    .await?;
    Ok(Tls { ca, cert, key })
}

/// How to run a group's servers.
#[derive(Debug, Clone)]
pub(crate) struct Redis {
    pub(crate) server: PathBuf,
    pub(crate) cli: PathBuf,
    pub(crate) tls: Option<Tls>,
}

/// One running server.
#[derive(Debug)]
pub(crate) struct Node {
    /// The member cluster it stands for (`{group}-001`).
    pub(crate) member: String,
    pub(crate) zone: String,
    pub(crate) addr: SocketAddr,
    pub(crate) dir: PathBuf,
    child: Child,
    pid: u32,
    pub(crate) paused: bool,
}

impl Redis {
    /// Starts a server on `addr` (a replica of `primary` when given) and waits until it
    /// answers.
    pub(crate) async fn start(
        &self,
        member: &str,
        zone: &str,
        addr: SocketAddr,
        dir: &Path,
        primary: Option<SocketAddr>,
    ) -> Result<Node, String> {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let log =
            std::fs::File::create(dir.join("redis.log")).map_err(|e| format!("server log: {e}"))?;
        let err = log.try_clone().map_err(|e| format!("server log: {e}"))?;
        let port = addr.port().to_string();
        let mut cmd = Command::new(&self.server);
        cmd.args(["--bind", &addr.ip().to_string()])
            .args(["--dir", &dir.display().to_string()])
            .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"])
            .args(["--daemonize", "no", "--logfile", ""]);
        match &self.tls {
            Some(t) => {
                cmd.args(["--port", "0", "--tls-port", &port])
                    .args(["--tls-cert-file", &t.cert.display().to_string()])
                    .args(["--tls-key-file", &t.key.display().to_string()])
                    .args(["--tls-ca-cert-file", &t.ca.display().to_string()])
                    .args(["--tls-auth-clients", "no", "--tls-replication", "yes"]);
            }
            None => {
                cmd.args(["--port", &port]);
            }
        }
        if let Some(p) = primary {
            cmd.args(["--replicaof", &p.ip().to_string(), &p.port().to_string()]);
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(err))
            .process_group(0)
            .kill_on_drop(true);
        let child = cmd.spawn().map_err(|e| format!("redis-server: {e}"))?;
        let pid = child.id().ok_or("redis-server exited at once")?;
        let mut node = Node {
            member: member.to_owned(),
            zone: zone.to_owned(),
            addr,
            dir: dir.to_owned(),
            child,
            pid,
            paused: false,
        };
        let deadline = tokio::time::Instant::now() + READY_TIMEOUT;
        loop {
            if self.cli(addr, &["PING"]).await.is_ok_and(|r| r == "PONG") {
                return Ok(node);
            }
            if node.exited() {
                return Err(format!(
                    "redis-server on {addr} exited; see {}",
                    dir.join("redis.log").display()
                ));
            }
            if tokio::time::Instant::now() >= deadline {
                node.kill().await;
                return Err(format!(
                    "redis-server on {addr} did not answer within {} s",
                    READY_TIMEOUT.as_secs()
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Runs one command on the server at `addr`; its answer, trimmed.
    pub(crate) async fn cli(&self, addr: SocketAddr, args: &[&str]) -> Result<String, String> {
        let mut cmd = Command::new(&self.cli);
        cmd.args(["-h", &addr.ip().to_string(), "-p", &addr.port().to_string()]);
        if let Some(t) = &self.tls {
            // By address, not by name: the certificate names the endpoints.
            cmd.args([
                "--tls",
                "--cacert",
                &t.ca.display().to_string(),
                "--insecure",
            ]);
        }
        cmd.args(args).stdin(Stdio::null()).kill_on_drop(true);
        let out = tokio::time::timeout(CLI_TIMEOUT, cmd.output())
            .await
            .map_err(|_| format!("redis-cli {}: no answer from {addr}", args.join(" ")))?
            .map_err(|e| format!("redis-cli: {e}"))?;
        let text = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        if out.status.success() && !text.starts_with("ERR") {
            Ok(text)
        } else {
            Err(format!(
                "redis-cli {} on {addr}: {text} {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    }
}

impl Node {
    async fn signal(&self, signal: &str) {
        let _ = Command::new("kill")
            .args([signal, "--", &self.pid.to_string()])
            .stderr(Stdio::null())
            .status()
            .await;
    }

    /// Freezes it: connections to it stall.
    pub(crate) async fn pause(&mut self) {
        if !self.paused {
            self.signal("-STOP").await;
            self.paused = true;
        }
    }

    /// Lets it run again.
    pub(crate) async fn resume(&mut self) {
        if self.paused {
            self.signal("-CONT").await;
            self.paused = false;
        }
    }

    /// Kills it and waits for it.
    pub(crate) async fn kill(&mut self) {
        self.signal("-KILL").await;
        let _ = tokio::time::timeout(Duration::from_secs(10), self.child.wait()).await;
    }

    /// Whether it has exited.
    pub(crate) fn exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }
}

impl Drop for Node {
    /// A node dropped without [`Node::kill`] (a plane aborted) goes with its folder; a paused
    /// one too (SIGKILL reaches a stopped process).
    fn drop(&mut self) {
        if !self.exited() {
            let _ = std::process::Command::new("kill")
                .args(["-KILL", "--", &self.pid.to_string()])
                .stderr(Stdio::null())
                .status();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
