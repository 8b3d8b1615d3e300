//! A container registry on loopback: Docker's Distribution server (`docker-registry`, Debian's
//! package of it, installed by `cargo xtask setup`), speaking the same `/v2/` HTTP API as ECR's
//! endpoint. Pushes are tested against it, as AWS calls are tested against moto.

use std::io::Read as _;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::Error;

/// How long the server may take to answer `GET /v2/` after it starts.
const READY_WITHIN: Duration = Duration::from_secs(20);

/// The server's program: `STACKPROOF_DOCKER_REGISTRY`, else `docker-registry` on `PATH`.
pub fn registry_program() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("STACKPROOF_DOCKER_REGISTRY") {
        return Some(PathBuf::from(p));
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("docker-registry"))
            .find(|p| p.is_file())
    })
}

/// A registry owned by this value: a free port of 127.0.0.1, storage in a directory of its
/// own; the process is stopped (by its PID) and the directory removed on drop.
#[derive(Debug)]
pub struct RegistryServer {
    child: Child,
    dir: PathBuf,
    addr: SocketAddr,
}

impl RegistryServer {
    /// Starts one and waits until it answers.
    pub fn start() -> Result<Self, Error> {
        let program = registry_program().ok_or_else(|| {
            Error::Registry(
                "docker-registry is not installed: apt-get install docker-registry (Debian; in a stackproof checkout `cargo xtask setup` does), or set STACKPROOF_DOCKER_REGISTRY to its path".to_owned(),
            )
        })?;
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .and_then(|l| l.local_addr())
            .map_err(|e| Error::Registry(format!("finding a free port: {e}")))?
            .port();
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let dir =
            std::env::temp_dir().join(format!("stackproof-registry-{}-{port}", std::process::id()));
        std::fs::create_dir_all(dir.join("storage"))
            .map_err(|e| Error::Registry(format!("creating {}: {e}", dir.display())))?;
        let config = format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {addr}\n",
            dir.join("storage").display()
        );
        let config_path = dir.join("config.yml");
        std::fs::write(&config_path, config)
            .map_err(|e| Error::Registry(format!("writing {}: {e}", config_path.display())))?;
        let log = std::fs::File::create(dir.join("registry.log"))
            .map_err(|e| Error::Registry(format!("creating the registry's log: {e}")))?;
        let child = Command::new(&program)
            .arg("serve")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| Error::Registry(format!("starting {}: {e}", program.display())))?;
        let mut server = Self { child, dir, addr };
        server.wait_ready()?;
        Ok(server)
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn wait_ready(&mut self) -> Result<(), Error> {
        let started = Instant::now();
        while started.elapsed() < READY_WITHIN {
            if let Ok(Some(status)) = self.child.try_wait() {
                let log =
                    std::fs::read_to_string(self.dir.join("registry.log")).unwrap_or_default();
                return Err(Error::Registry(format!(
                    "docker-registry exited at start ({status}): {}",
                    log.trim()
                )));
            }
            if answers(self.addr) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(Error::Registry(format!(
            "docker-registry did not answer on {} within {} s",
            self.addr,
            READY_WITHIN.as_secs()
        )))
    }
}

/// Whether `GET /v2/` at `addr` gets a 200.
fn answers(addr: SocketAddr) -> bool {
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    use std::io::Write as _;
    if stream
        .write_all(b"GET /v2/ HTTP/1.1\r\nHost: registry\r\nConnection: close\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).is_ok() && head.starts_with(b"HTTP/1.1 200")
}

impl Drop for RegistryServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
