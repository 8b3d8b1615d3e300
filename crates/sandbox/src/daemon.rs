//! The sandbox daemon: one background process that owns a moto server (which exits with it)
//! and the [`DataPlane`] reading from it, so stopping the daemon stops everything. It runs in
//! its own process group: every task process and moto are in that group, and [`stop`] ends
//! the daemon with SIGTERM (the data plane stops its tasks) and then SIGKILLs whatever of the
//! group is left, by process group id.
//!
//! State files in the state folder: `sandbox.json` ([`DaemonState`], written once moto and the
//! data plane run), `sandbox-endpoints.json` (the local ALB listeners, see [`AlbEndpoint`]),
//! `sandbox-status.json` (the latest [`crate::PlaneStatus`]), `sandbox.log`, `tasks/*.log`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use aws_model::{Clock, LaunchLatency};

use crate::plane::{AlbEndpoint, DataPlane, PlaneOptions};
use crate::{Error, MotoServer};

/// The daemon's state file name in the state folder.
pub const STATE_FILE: &str = "sandbox.json";
/// The data plane's endpoints file name in the state folder.
pub const ENDPOINTS_FILE: &str = "sandbox-endpoints.json";
/// The data plane's status file name in the state folder.
pub const STATUS_FILE: &str = "sandbox-status.json";

/// How the daemon runs.
#[derive(Debug, Clone)]
pub struct DaemonOptions {
    /// The Python with moto.
    pub python: PathBuf,
    /// moto's port; 0 picks a free one.
    pub port: u16,
    /// The state folder (`.stackproof` of the project).
    pub state_dir: PathBuf,
    /// The region whose ECS services and load balancers the data plane runs.
    pub region: String,
    /// The sample-app binary (see [`sample_app_path`]).
    pub sample_app: PathBuf,
    /// The clock the data plane's model runs on (default AWS's).
    pub clock: Clock,
    /// Fargate launch latency (default AWS's typical 30-60 s).
    pub launch: LaunchLatency,
    /// Seed of the data plane's draws (default 1).
    pub seed: u64,
    /// The program tasks of `loadgen` images run (the stackproof command line; see
    /// [`PlaneOptions::loadgen`]). Default none.
    pub loadgen: Option<PathBuf>,
}

impl DaemonOptions {
    /// The defaults: moto on a free port, region `eu-west-1`, AWS's clock, AWS's launch
    /// latency, seed 1.
    pub fn new(python: PathBuf, state_dir: PathBuf, sample_app: PathBuf) -> Self {
        DaemonOptions {
            python,
            port: 0,
            state_dir,
            region: "eu-west-1".to_owned(),
            sample_app,
            clock: Clock::AWS,
            launch: LaunchLatency::default(),
            seed: 1,
            loadgen: None,
        }
    }
}

/// What [`ENDPOINTS_FILE`] holds: the DNS server that answers for the load balancers' names,
/// the clock the data plane runs on, and every load balancer listener with its nodes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EndpointsFile {
    /// The DNS server (UDP) that answers for the load balancers' names.
    pub dns: Option<std::net::SocketAddr>,
    /// The data plane's clock.
    #[serde(default)]
    pub clock: Clock,
    /// The data plane's Fargate launch latency (model time).
    #[serde(default)]
    pub launch: LaunchLatency,
    /// The listeners.
    pub load_balancers: Vec<AlbEndpoint>,
}

/// One listener the sandbox serves, with how the sandbox runs.
#[derive(Debug, Clone, PartialEq)]
pub struct SandboxEndpoint {
    /// The listener and its nodes.
    pub endpoint: AlbEndpoint,
    /// The DNS server that answers for its name.
    pub dns: Option<std::net::SocketAddr>,
    /// The data plane's clock.
    pub clock: Clock,
    /// The data plane's Fargate launch latency.
    pub launch: LaunchLatency,
}

/// What a running daemon wrote about itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DaemonState {
    /// The daemon's process id (also its process group id).
    pub pid: u32,
    /// moto's endpoint URL.
    pub endpoint: String,
    /// moto's process id (0 in the state of an older sandbox that ran moto alone).
    #[serde(default)]
    pub moto_pid: u32,
    /// The region the data plane runs (empty for an older sandbox).
    #[serde(default)]
    pub region: String,
    /// Unix seconds when it started.
    #[serde(default)]
    pub started: u64,
    /// Its log file.
    #[serde(default)]
    pub log: PathBuf,
    /// The data plane's clock.
    #[serde(default)]
    pub clock: Clock,
    /// The DNS server that answers for the load balancers' names.
    #[serde(default)]
    pub dns: Option<std::net::SocketAddr>,
}

/// The sample-app binary for the sandbox's tasks: `$STACKPROOF_SAMPLE_APP`, else `sample-app`
/// beside the current executable (a build in the workspace), else `stackproof-sample-app`
/// beside it (installed with the `stackproof` CLI), else `sample-app` one folder above it
/// (`target/debug/deps/..`, a test's executable). When none exists, the first of these paths.
pub fn sample_app_path() -> PathBuf {
    if let Some(p) = std::env::var_os("STACKPROOF_SAMPLE_APP") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().unwrap_or_default();
    let dir = exe.parent().map(Path::to_path_buf).unwrap_or_default();
    let beside = dir.join("sample-app");
    [
        beside.clone(),
        dir.join("stackproof-sample-app"),
        dir.parent()
            .map(|p| p.join("sample-app"))
            .unwrap_or_default(),
    ]
    .into_iter()
    .find(|p| p.is_file())
    .unwrap_or(beside)
}

fn io(operation: &'static str, resource: &Path) -> impl FnOnce(std::io::Error) -> Error + use<> {
    let resource = resource.display().to_string();
    move |source| Error::Io {
        operation,
        resource,
        source,
    }
}

fn write_atomic(path: &Path, text: &str) -> Result<(), Error> {
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, text).map_err(io("write", &tmp))?;
    std::fs::rename(&tmp, path).map_err(io("rename", path))
}

/// Runs the daemon in this process until SIGTERM or SIGINT: starts moto and the data plane,
/// writes [`STATE_FILE`], keeps [`STATUS_FILE`] current, and on the signal stops the data
/// plane (and its tasks) and moto, and removes the state file.
pub async fn run(options: DaemonOptions) -> Result<(), Error> {
    use tokio::signal::unix::{SignalKind, signal};
    let dir = &options.state_dir;
    std::fs::create_dir_all(dir).map_err(io("create", dir))?;
    let mut term = signal(SignalKind::terminate()).map_err(io("signal", dir))?;
    let mut int = signal(SignalKind::interrupt()).map_err(io("signal", dir))?;
    let python = options.python.clone();
    let port = options.port;
    let moto = tokio::task::spawn_blocking(move || MotoServer::start_on(&python, port))
        .await
        .map_err(|e| Error::NotReady {
            output: e.to_string(),
        })??;
    let sdk = crate::sdk_config(moto.endpoint(), &options.region);
    let mut plane_options = PlaneOptions::new(&options.sample_app).clock(options.clock);
    plane_options.state_dir = Some(dir.clone());
    plane_options.launch = options.launch;
    plane_options.seed = options.seed;
    plane_options.loadgen = options.loadgen.clone();
    plane_options.task_env = crate::task_env(moto.endpoint());
    let plane = DataPlane::start(sdk, plane_options).await?;
    let state = DaemonState {
        pid: std::process::id(),
        endpoint: moto.endpoint().to_owned(),
        moto_pid: moto.pid(),
        region: options.region.clone(),
        started: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
        log: dir.join("sandbox.log"),
        clock: options.clock,
        dns: plane.dns(),
    };
    let text = serde_json::to_string_pretty(&state).unwrap_or_default();
    write_atomic(&dir.join(STATE_FILE), &text)?;
    eprintln!(
        "sandbox daemon: pid {}, moto {} (pid {}), region {}, {}, DNS {}, sample-app {}",
        state.pid,
        state.endpoint,
        state.moto_pid,
        state.region,
        state.clock,
        state
            .dns
            .map_or_else(|| "none".to_owned(), |d| d.to_string()),
        options.sample_app.display()
    );
    let mut status = plane.watch();
    let status_path = dir.join(STATUS_FILE);
    let mut written = std::time::Instant::now() - Duration::from_secs(1);
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            changed = status.changed() => {
                if changed.is_err() {
                    break;
                }
                // The plane ticks many times a second on a fast clock: the file at most once a
                // second.
                if written.elapsed() < Duration::from_secs(1) {
                    continue;
                }
                written = std::time::Instant::now();
                let snapshot = status.borrow_and_update().clone();
                let text = serde_json::to_string_pretty(&snapshot).unwrap_or_default();
                if let Err(e) = write_atomic(&status_path, &text) {
                    eprintln!("sandbox daemon: {e}");
                }
            }
        }
    }
    eprintln!("sandbox daemon: stopping");
    plane.stop().await;
    drop(moto);
    let _ = std::fs::remove_file(dir.join(STATE_FILE));
    let _ = std::fs::remove_file(dir.join(ENDPOINTS_FILE));
    eprintln!("sandbox daemon: stopped");
    Ok(())
}

/// Reads the daemon's state file, if the daemon it names is alive.
pub fn read_state(state_dir: &Path) -> Option<DaemonState> {
    let text = std::fs::read_to_string(state_dir.join(STATE_FILE)).ok()?;
    let state: DaemonState = serde_json::from_str(&text).ok()?;
    alive(state.pid).then_some(state)
}

/// Reads what the daemon's data plane wrote of its load balancers.
pub fn read_endpoints(state_dir: &Path) -> Option<EndpointsFile> {
    std::fs::read_to_string(state_dir.join(ENDPOINTS_FILE))
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
}

/// The listener serving `http://{host}:{port}` (an ALB DNS name and listener port), with the
/// DNS server that answers for `host` and how the data plane runs.
pub fn endpoint_for(state_dir: &Path, host: &str, port: u16) -> Option<SandboxEndpoint> {
    let file = read_endpoints(state_dir)?;
    let endpoint = file
        .load_balancers
        .into_iter()
        .find(|e| e.dns_name.eq_ignore_ascii_case(host) && e.port == port)?;
    Some(SandboxEndpoint {
        endpoint,
        dns: file.dns,
        clock: file.clock,
        launch: file.launch,
    })
}

/// Whether `pid` runs (a zombie does not count).
pub fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        s.rsplit_once(')')
            .is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z'))
    })
}

/// Starts `program args...` as the daemon, detached in its own process group with its output
/// in `state_dir/sandbox.log`, and waits (up to `timeout`) until it has written its state.
pub fn spawn(
    program: &Path,
    args: &[String],
    state_dir: &Path,
    timeout: Duration,
) -> Result<DaemonState, Error> {
    use std::os::unix::process::CommandExt as _;
    std::fs::create_dir_all(state_dir).map_err(io("create", state_dir))?;
    let _ = std::fs::remove_file(state_dir.join(STATE_FILE));
    let log_path = state_dir.join("sandbox.log");
    let log = std::fs::File::create(&log_path).map_err(io("create", &log_path))?;
    let err = log.try_clone().map_err(io("clone", &log_path))?;
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::from(log))
        .stderr(Stdio::from(err))
        .process_group(0)
        .spawn()
        .map_err(io("spawn", program))?;
    let started = std::time::Instant::now();
    let mut delay = Duration::from_millis(20);
    loop {
        if let Some(state) = read_state(state_dir).filter(|s| s.pid == child.id()) {
            // Reap it later through init: the daemon outlives us.
            drop(child);
            return Ok(state);
        }
        if let Ok(Some(status)) = child.try_wait() {
            let log = std::fs::read_to_string(&log_path).unwrap_or_default();
            return Err(Error::NotReady {
                output: format!("the daemon exited ({status}): {}", tail(&log)),
            });
        }
        if started.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            let log = std::fs::read_to_string(&log_path).unwrap_or_default();
            return Err(Error::NotReady {
                output: format!("no state after {timeout:?}: {}", tail(&log)),
            });
        }
        std::thread::sleep(delay);
        delay = (delay * 2).min(Duration::from_millis(250));
    }
}

fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(10)..].join("\n")
}

fn kill(signal: &str, target: &str) -> bool {
    Command::new("kill")
        .args([signal, "--", target])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Whether any process of process group `pgid` runs.
pub fn group_alive(pgid: u32) -> bool {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return false;
    };
    dir.filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .any(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
                s.rsplit_once(')').is_some_and(|(_, rest)| {
                    let f: Vec<&str> = rest.split_whitespace().collect();
                    // rest: state ppid pgrp ...
                    f.first().is_some_and(|st| *st != "Z")
                        && f.get(2).and_then(|g| g.parse::<u32>().ok()) == Some(pgid)
                })
            })
        })
}

/// Stops the daemon `state` names: SIGTERM (it stops its tasks and moto), waits up to
/// `grace`, then SIGKILLs its whole process group, and waits until none of it runs.
pub fn stop(state: &DaemonState, grace: Duration) -> Result<(), Error> {
    let pid = state.pid;
    let started = std::time::Instant::now();
    if alive(pid) {
        kill("-TERM", &pid.to_string());
    }
    let mut delay = Duration::from_millis(20);
    while (alive(pid) || group_alive(pid)) && started.elapsed() < grace {
        std::thread::sleep(delay);
        delay = (delay * 2).min(Duration::from_millis(200));
    }
    if group_alive(pid) || alive(pid) {
        kill("-KILL", &format!("-{pid}"));
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while group_alive(pid) && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    if alive(pid) || group_alive(pid) {
        return Err(Error::NotReady {
            output: format!("process group {pid} still runs after SIGKILL"),
        });
    }
    Ok(())
}
