//! Starting moto and talking to it.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_credential_types::Credentials;
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::interceptors::context::BeforeTransmitInterceptorContextMut;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::ConfigBag;
use infra::{Context, ContextBuilder, StackName, WaitPolicy};

const LAUNCHER: &str = include_str!("moto_launcher.py");

/// The oldest moto whose ECS answers the Rust SDK can parse.
pub const MIN_MOTO_VERSION: &str = "5.2.5";

/// Errors of the sandbox.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The Python that has moto installed is missing.
    #[error(
        "no Python with moto at {path}: install moto[server] >= {min} there (in a stackproof checkout `cargo xtask setup` does), or set STACKPROOF_MOTO_PYTHON to a Python that has it",
        min = MIN_MOTO_VERSION
    )]
    NoPython {
        /// Where it was looked for.
        path: PathBuf,
    },
    /// Starting the moto process failed.
    #[error("could not start moto with {python}")]
    Spawn {
        /// The interpreter used.
        python: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// moto exited or printed something else before it was ready.
    #[error("moto did not start: {output}")]
    NotReady {
        /// What it printed instead of the ready line (see its log for more).
        output: String,
    },
    /// An AWS call (to moto or AWS) failed.
    #[error("{operation} {resource}: {message}")]
    Aws {
        /// The API operation, e.g. `RunTask`.
        operation: &'static str,
        /// The resource it concerned.
        resource: String,
        /// The error, printed with its full context.
        message: String,
    },
    /// The loopback container registry could not start (see [`crate::RegistryServer`]).
    #[error("container registry: {0}")]
    Registry(String),
    /// A local operation (a socket, a process, a file) failed.
    #[error("{operation} {resource}")]
    Io {
        /// What was done, e.g. `bind`.
        operation: &'static str,
        /// What it was done to.
        resource: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// The folder for stackproof's caches outside the checkout: `$STACKPROOF_CACHE`, else
/// `$HOME/.cache/stackproof`.
pub fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("STACKPROOF_CACHE") {
        return PathBuf::from(dir);
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."));
    home.join(".cache").join("stackproof")
}

/// The Python interpreter of the virtualenv that holds moto: `$STACKPROOF_MOTO_PYTHON`, else
/// `cache_dir()/moto-venv/bin/python`. Fails when it does not exist.
pub fn python_path() -> Result<PathBuf, Error> {
    let path = match std::env::var_os("STACKPROOF_MOTO_PYTHON") {
        Some(p) => PathBuf::from(p),
        None => cache_dir().join("moto-venv").join("bin").join("python"),
    };
    if path.exists() {
        Ok(path)
    } else {
        Err(Error::NoPython { path })
    }
}

/// A moto server owned by this process, on a free port of 127.0.0.1. It exits when this value
/// is dropped or when this process dies (it watches its stdin), so tests leave nothing behind.
#[derive(Debug)]
pub struct MotoServer {
    child: Child,
    stdin: Option<ChildStdin>,
    endpoint: String,
    next_account: AtomicU64,
}

impl MotoServer {
    /// Starts moto with `python` on a free port and waits until it listens.
    pub fn start(python: &Path) -> Result<Self, Error> {
        Self::start_on(python, 0)
    }

    /// Starts moto with `python` on `port` (0: a free one) and waits until it listens.
    pub fn start_on(python: &Path, port: u16) -> Result<Self, Error> {
        let mut child = launch(python, &port.to_string(), "watch-stdin", Stdio::null())?;
        let stdin = child.stdin.take();
        let endpoint = read_ready(&mut child)?;
        Ok(Self {
            child,
            stdin,
            endpoint,
            next_account: AtomicU64::new(100_000_000_001),
        })
    }

    /// One server for the whole process, started on first use. Tests share it and isolate
    /// themselves with [`MotoServer::fresh_account`].
    pub fn shared() -> Result<&'static MotoServer, Error> {
        static SHARED: OnceLock<MotoServer> = OnceLock::new();
        static STARTING: Mutex<()> = Mutex::new(());
        if let Some(server) = SHARED.get() {
            return Ok(server);
        }
        let _guard = STARTING
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(server) = SHARED.get() {
            return Ok(server);
        }
        let server = MotoServer::start(&python_path()?)?;
        Ok(SHARED.get_or_init(|| server))
    }

    /// The endpoint URL, `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The process id of the server.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The start of a context for `stack` in `region` against this server: in an account of
    /// its own ([`MotoServer::fresh_account`]) and with [`TEST_WAITS`]. Every module's tests
    /// against moto begin here; add a progress sink or interceptors, then `build()`.
    pub fn context(&self, stack: StackName, region: &str) -> ContextBuilder {
        Context::builder(crate::sdk_config(self.endpoint(), region), stack)
            .interceptor(self.fresh_account())
            .waits(TEST_WAITS)
    }

    /// A moto account id no other caller of this server has had: its resources are invisible
    /// to every other account.
    pub fn fresh_account(&self) -> MotoAccount {
        MotoAccount(
            self.next_account
                .fetch_add(1, Ordering::Relaxed)
                .to_string(),
        )
    }
}

/// Waits for tests against moto, which makes everything at once: seconds, not AWS's minutes,
/// so that a test of a wait that never ends fails quickly.
pub const TEST_WAITS: WaitPolicy = WaitPolicy {
    eventual_consistency: Duration::from_secs(5),
    dependency: Duration::from_secs(5),
    resource_state: Duration::from_secs(10),
    initial_delay: Duration::from_millis(20),
    max_delay: Duration::from_millis(200),
};

impl Drop for MotoServer {
    fn drop(&mut self) {
        drop(self.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts moto as a background daemon that outlives this process, logging to `log`.
/// Returns its process id and endpoint. `port` 0 picks a free port.
pub fn spawn_daemon(python: &Path, port: u16, log: &Path) -> Result<(u32, String), Error> {
    let log_file = std::fs::File::create(log).map_err(|source| Error::Spawn {
        python: python.to_owned(),
        source,
    })?;
    let mut child = launch(python, &port.to_string(), "forever", Stdio::from(log_file))?;
    let endpoint = read_ready(&mut child)?;
    Ok((child.id(), endpoint))
}

fn launch(python: &Path, port: &str, mode: &str, stderr: Stdio) -> Result<Child, Error> {
    Command::new(python)
        .args(["-c", LAUNCHER, "127.0.0.1", port, mode])
        .env("MOTO_IAM_LOAD_MANAGED_POLICIES", "true")
        .stdin(if mode == "watch-stdin" {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .map_err(|source| Error::Spawn {
            python: python.to_owned(),
            source,
        })
}

fn read_ready(child: &mut Child) -> Result<String, Error> {
    let Some(stdout) = child.stdout.take() else {
        return Err(Error::NotReady {
            output: "no stdout".to_owned(),
        });
    };
    let mut line = String::new();
    let read = BufReader::new(stdout).read_line(&mut line);
    match (read, line.trim().strip_prefix("READY ")) {
        (Ok(_), Some(addr)) => Ok(format!("http://{addr}")),
        (Ok(_), None) => {
            let _ = child.kill();
            let _ = child.wait();
            Err(Error::NotReady {
                output: format!("{:?}", line.trim()),
            })
        }
        (Err(e), _) => {
            let _ = child.kill();
            let _ = child.wait();
            Err(Error::NotReady {
                output: e.to_string(),
            })
        }
    }
}

/// SDK configuration for moto at `endpoint`: fixed dummy credentials, the given region.
/// S3 clients built from it still need path-style addressing.
pub fn sdk_config(endpoint: &str, region: &str) -> SdkConfig {
    SdkConfig::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new(region.to_owned()))
        .endpoint_url(endpoint)
        .credentials_provider(
            aws_credential_types::provider::SharedCredentialsProvider::new(Credentials::new(
                "stackproof",
                "sandbox",
                None,
                None,
                "stackproof-sandbox",
            )),
        )
        .build()
}

/// The environment a sandbox task gets to reach the sandbox's AWS API with the AWS SDK's
/// default chain: moto's endpoint and the credentials [`sdk_config`] uses (on AWS a task gets
/// its role's credentials and the regional endpoints instead).
pub fn task_env(endpoint: &str) -> Vec<(String, String)> {
    [
        ("AWS_ENDPOINT_URL", endpoint),
        ("AWS_ACCESS_KEY_ID", "stackproof"),
        ("AWS_SECRET_ACCESS_KEY", "sandbox"),
        ("AWS_EC2_METADATA_DISABLED", "true"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

/// An interceptor that sends every request as moto account `0`: moto keeps each account's
/// resources apart, so tests sharing one server never see each other.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MotoAccount(pub String);

impl Intercept for MotoAccount {
    fn name(&self) -> &'static str {
        "stackproof-moto-account"
    }

    fn modify_before_transmit(
        &self,
        context: &mut BeforeTransmitInterceptorContextMut<'_>,
        _runtime_components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        context
            .request_mut()
            .headers_mut()
            .insert("x-moto-account-id", self.0.clone());
        Ok(())
    }
}
