//! One real PostgreSQL server of the sandbox: made with `initdb` (or `pg_basebackup` from a
//! primary, as a streaming-replication standby), run as a child process on one zone's loopback
//! address, paused (SIGSTOP to the postmaster and every backend: packets to it go nowhere, as
//! to a host whose zone is cut off), resumed, promoted, and killed.
//!
//! The programs come from Debian's `postgresql` package (`cargo xtask setup` installs it).
//! PostgreSQL refuses to run as root: run as root, the server runs as the `postgres` user the
//! package creates, in a folder of the system's temporary directory that user owns.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};

/// The application name the standby connects to its primary with: what
/// `synchronous_standby_names` names.
pub(crate) const STANDBY_NAME: &str = "standby";

/// How long a starting server has to accept connections.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// The folder with `initdb`, `postgres`, `pg_basebackup`, `psql` and `pg_isready`: the newest
/// `/usr/lib/postgresql/N/bin` (Debian's layout), else the folder of `initdb` on `PATH`.
pub fn bin_dir() -> Option<PathBuf> {
    let debian = std::fs::read_dir("/usr/lib/postgresql")
        .ok()
        .and_then(|dir| {
            dir.filter_map(Result::ok)
                .filter_map(|e| {
                    let version: u32 = e.file_name().to_str()?.parse().ok()?;
                    let bin = e.path().join("bin");
                    bin.join("initdb").is_file().then_some((version, bin))
                })
                .max()
                .map(|(_, bin)| bin)
        });
    debian.or_else(|| {
        let paths = std::env::var_os("PATH")?;
        std::env::split_paths(&paths).find(|dir| {
            ["initdb", "postgres", "pg_basebackup", "psql", "pg_isready"]
                .iter()
                .all(|p| dir.join(p).is_file())
        })
    })
}

/// The user a server runs as: `None` to run as this process's user, or the `postgres` user's
/// (uid, gid) when this process is root.
pub(crate) fn server_user() -> Result<Option<(u32, u32)>, String> {
    use std::os::unix::fs::MetadataExt as _;
    let me = std::fs::metadata("/proc/self").map_err(|e| format!("/proc/self: {e}"))?;
    if me.uid() != 0 {
        return Ok(None);
    }
    let passwd = std::fs::read_to_string("/etc/passwd").map_err(|e| format!("/etc/passwd: {e}"))?;
    passwd
        .lines()
        .find_map(|line| {
            let f: Vec<&str> = line.split(':').collect();
            (f.first() == Some(&"postgres") && f.len() > 3)
                .then(|| Some((f[2].parse().ok()?, f[3].parse().ok()?)))
                .flatten()
        })
        .map(Some)
        .ok_or_else(|| {
            "PostgreSQL does not run as root and there is no `postgres` user (install Debian's postgresql package: cargo xtask setup)".to_owned()
        })
}

/// Where one data plane's servers of `kind` (`db`, `cache`) keep their data: a folder of the
/// system's temporary directory (the `postgres` user can reach it, unlike root's home), one per
/// plane of this process.
pub(crate) fn root_dir(kind: &str) -> PathBuf {
    static PLANES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = PLANES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    std::env::temp_dir().join(format!("stackproof-{kind}-{}-{n}", std::process::id()))
}

/// One running server.
#[derive(Debug)]
pub(crate) struct Server {
    pub(crate) zone: String,
    pub(crate) addr: SocketAddr,
    pub(crate) dir: PathBuf,
    child: Child,
    pid: u32,
    pub(crate) paused: bool,
}

/// How to make and run servers: the programs, the user, the credentials.
#[derive(Debug, Clone)]
pub(crate) struct Postgres {
    pub(crate) bin: PathBuf,
    pub(crate) user: Option<(u32, u32)>,
    /// The master user and its password (from the RDS-managed secret).
    pub(crate) login: String,
    pub(crate) password: String,
    /// The plane's data folder ([`root_dir`]).
    pub(crate) root: PathBuf,
}

impl Postgres {
    fn command(&self, program: &str, as_server: bool) -> Command {
        let mut cmd = Command::new(self.bin.join(program));
        cmd.stdin(Stdio::null())
            .env("PGPASSWORD", &self.password)
            .env("PGCONNECT_TIMEOUT", "5");
        if as_server && let Some((uid, gid)) = self.user {
            cmd.uid(uid).gid(gid);
        }
        cmd
    }

    async fn run(&self, program: &str, as_server: bool, args: &[&str]) -> Result<String, String> {
        let out = self
            .command(program, as_server)
            .args(args)
            .output()
            .await
            .map_err(|e| format!("{program}: {e}"))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(format!(
                "{program} {}: {}: {}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    }

    /// A folder the server's user owns.
    fn make_dir(&self, dir: &Path) -> Result<(), String> {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        if let Some((uid, gid)) = self.user {
            for d in dir.ancestors().take_while(|d| d.starts_with(&self.root)) {
                std::os::unix::fs::chown(d, Some(uid), Some(gid))
                    .map_err(|e| format!("chown {}: {e}", d.display()))?;
            }
        }
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| format!("chmod {}: {e}", dir.display()))
    }

    /// A new primary in `dir`: `initdb` with the master user and password, replication and
    /// logins from loopback, then started on `addr` with `database` created.
    pub(crate) async fn primary(
        &self,
        zone: &str,
        addr: SocketAddr,
        dir: &Path,
        database: &str,
    ) -> Result<Server, String> {
        self.make_dir(dir)?;
        let pwfile = dir.with_extension("pw");
        std::fs::write(&pwfile, &self.password).map_err(|e| format!("password file: {e}"))?;
        if let Some((uid, gid)) = self.user {
            std::os::unix::fs::chown(&pwfile, Some(uid), Some(gid))
                .map_err(|e| format!("chown password file: {e}"))?;
        }
        let made = self
            .run(
                "initdb",
                true,
                &[
                    "-D",
                    &dir.display().to_string(),
                    "-U",
                    &self.login,
                    &format!("--pwfile={}", pwfile.display()),
                    "--auth-host=scram-sha-256",
                    "--auth-local=trust",
                    "-E",
                    "UTF8",
                    "--no-sync",
                ],
            )
            .await;
        let _ = std::fs::remove_file(&pwfile);
        made?;
        // Logins with the password from anywhere on loopback; the standby's replication
        // connection without one (the sandbox's own link, as RDS's is its own).
        let hba = "host replication all 127.0.0.0/8 trust\nhost all all 127.0.0.0/8 scram-sha-256\nlocal all all trust\n";
        std::fs::write(dir.join("pg_hba.conf"), hba).map_err(|e| format!("pg_hba.conf: {e}"))?;
        let server = self.start(zone, addr, dir).await?;
        self.sql(addr, "postgres", &format!("CREATE DATABASE \"{database}\""))
            .await?;
        Ok(server)
    }

    /// A standby of `primary` in `dir`: `pg_basebackup` with the connection recorded, so it
    /// streams from the primary under [`STANDBY_NAME`], started on `addr`.
    pub(crate) async fn standby(
        &self,
        zone: &str,
        addr: SocketAddr,
        dir: &Path,
        primary: SocketAddr,
    ) -> Result<Server, String> {
        if dir.exists() {
            std::fs::remove_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        }
        self.make_dir(dir)?;
        let conninfo = format!(
            "host={} port={} user={} application_name={STANDBY_NAME}",
            primary.ip(),
            primary.port(),
            self.login
        );
        self.run(
            "pg_basebackup",
            true,
            &[
                "-d",
                &conninfo,
                "-D",
                &dir.display().to_string(),
                "-R",
                "-X",
                "stream",
                "-c",
                "fast",
                "--no-sync",
            ],
        )
        .await?;
        self.start(zone, addr, dir).await
    }

    /// Starts the server of `dir` on `addr` and waits until it accepts connections.
    async fn start(&self, zone: &str, addr: SocketAddr, dir: &Path) -> Result<Server, String> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.with_extension("log"))
            .map_err(|e| format!("server log: {e}"))?;
        let err = log.try_clone().map_err(|e| format!("server log: {e}"))?;
        let mut cmd = self.command("postgres", true);
        cmd.args(["-D", &dir.display().to_string()])
            .args(["-c", &format!("listen_addresses={}", addr.ip())])
            .args(["-c", &format!("port={}", addr.port())])
            .args(["-c", "unix_socket_directories="])
            .args(["-c", "wal_level=replica", "-c", "max_wal_senders=8"])
            .args(["-c", "hot_standby=on", "-c", "synchronous_commit=on"])
            // Process faults only (pause, kill): the kernel keeps what was written, so the
            // sandbox skips the disk flushes that only a machine crash would need.
            .args(["-c", "fsync=off", "-c", "shared_buffers=16MB"])
            .args(["-c", "max_connections=100"])
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(err))
            .process_group(0)
            .kill_on_drop(true);
        let child = cmd.spawn().map_err(|e| format!("postgres: {e}"))?;
        let pid = child.id().ok_or("postgres exited at once")?;
        let mut server = Server {
            zone: zone.to_owned(),
            addr,
            dir: dir.to_owned(),
            child,
            pid,
            paused: false,
        };
        let deadline = tokio::time::Instant::now() + READY_TIMEOUT;
        loop {
            let ip = addr.ip().to_string();
            let port = addr.port().to_string();
            let ready = self
                .run(
                    "pg_isready",
                    false,
                    &["-h", &ip, "-p", &port, "-d", "postgres", "-t", "2"],
                )
                .await;
            if ready.is_ok() {
                return Ok(server);
            }
            if let Ok(Some(status)) = server.child.try_wait() {
                return Err(format!(
                    "postgres on {addr} exited ({status}); see {}",
                    dir.with_extension("log").display()
                ));
            }
            if tokio::time::Instant::now() >= deadline {
                server.kill().await;
                return Err(format!(
                    "postgres on {addr} did not accept connections within {} s",
                    READY_TIMEOUT.as_secs()
                ));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Runs one statement on `database` of the server at `addr` as the master user.
    pub(crate) async fn sql(
        &self,
        addr: SocketAddr,
        database: &str,
        statement: &str,
    ) -> Result<String, String> {
        let conn = format!(
            "host={} port={} user={} dbname={database}",
            addr.ip(),
            addr.port(),
            self.login
        );
        self.run(
            "psql",
            false,
            &["-X", "-q", "-A", "-t", "-d", &conn, "-c", statement],
        )
        .await
    }
}

/// The processes whose parent is `pid`, from `/proc/*/stat`.
fn children(pid: u32) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|child| {
            std::fs::read_to_string(format!("/proc/{child}/stat"))
                .ok()
                .and_then(|stat| {
                    // `pid (comm) state ppid ...`: comm may hold spaces, so after the last ')'.
                    let rest = &stat[stat.rfind(')')? + 1..];
                    rest.split_whitespace().nth(1)?.parse::<u32>().ok()
                })
                == Some(pid)
        })
        .collect()
}

impl Server {
    /// Signals the postmaster and every process it started (its backends put themselves in
    /// sessions of their own, so its process group alone does not reach them): the postmaster
    /// first when stopping, so it starts no one in between, and last when continuing.
    async fn signal(&self, signal: &str) {
        let kids = children(self.pid);
        let mut pids: Vec<String> = std::iter::once(self.pid)
            .chain(kids)
            .map(|p| p.to_string())
            .collect();
        if signal == "-CONT" {
            pids.reverse();
        }
        let _ = Command::new("kill")
            .arg(signal)
            .arg("--")
            .args(&pids)
            .stderr(Stdio::null())
            .status()
            .await;
    }

    /// Freezes it: connections to it and its replication stall, as when its zone is cut off.
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

    /// Kills the postmaster and its backends at once and waits for the postmaster.
    pub(crate) async fn kill(&mut self) {
        self.signal("-KILL").await;
        let _ = tokio::time::timeout(Duration::from_secs(10), self.child.wait()).await;
    }

    /// Whether the postmaster has exited.
    pub(crate) fn exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }
}

impl Drop for Server {
    /// A server dropped without [`Server::kill`] (a plane that panicked or was aborted) takes
    /// its backends with it, paused ones included, and its data.
    fn drop(&mut self) {
        if !self.exited() {
            let pids: Vec<String> = std::iter::once(self.pid)
                .chain(children(self.pid))
                .map(|p| p.to_string())
                .collect();
            let _ = std::process::Command::new("kill")
                .arg("-KILL")
                .arg("--")
                .args(&pids)
                .stderr(Stdio::null())
                .status();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The first address of zone `n`'s range (127.0.{n+1}.{4..=9}) where nothing listens on
/// `port`, by a bind test.
pub(crate) fn free_addr(zone_index: usize, port: u16) -> Option<SocketAddr> {
    let third = u8::try_from(zone_index + 1).ok()?;
    (4..=9).find_map(|last| {
        let addr = SocketAddr::from((Ipv4Addr::new(127, 0, third, last), port));
        std::net::TcpListener::bind(addr).ok().map(|_| addr)
    })
}
