//! `cargo xtask sandbox start|stop|status`: moto in the background on 127.0.0.1, its address in
//! `.stackproof/sandbox.json`, reused by later commands.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, bail};
use serde_json::json;

/// What to do with the sandbox.
#[derive(Debug, clap::Subcommand)]
pub(crate) enum Action {
    /// Start it (nothing happens if it runs already).
    Start {
        /// The port for moto; 0 picks a free one.
        #[arg(long, default_value_t = 0)]
        port: u16,
    },
    /// Stop it and remove its state.
    Stop,
    /// Say whether it runs, and where.
    Status,
}

/// A running sandbox.
#[derive(Debug, Clone)]
pub(crate) struct Running {
    pub(crate) pid: u32,
    pub(crate) endpoint: String,
}

fn state_file() -> PathBuf {
    crate::state_dir().join("sandbox.json")
}

fn alive(pid: u32) -> bool {
    Command::new("kill")
        .args(["-0", &pid.to_string()])
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn answers(endpoint: &str) -> bool {
    let addr = endpoint.trim_start_matches("http://");
    addr.parse()
        .is_ok_and(|a| std::net::TcpStream::connect_timeout(&a, Duration::from_secs(1)).is_ok())
}

/// The sandbox, when one runs.
pub(crate) fn current() -> Option<Running> {
    let text = std::fs::read_to_string(state_file()).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    let pid = u32::try_from(v["pid"].as_u64()?).ok()?;
    let endpoint = v["endpoint"].as_str()?.to_owned();
    (alive(pid) && answers(&endpoint)).then_some(Running { pid, endpoint })
}

/// Starts the sandbox unless it runs; returns it.
pub(crate) fn ensure(port: u16) -> anyhow::Result<Running> {
    if let Some(running) = current() {
        return Ok(running);
    }
    let python = crate::setup::ensure_moto()?;
    let dir = crate::state_dir();
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let log = dir.join("moto.log");
    let (pid, endpoint) = sandbox::spawn_daemon(&python, port, &log).context("starting moto")?;
    let started = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let state = json!({ "pid": pid, "endpoint": endpoint, "started": started, "log": log });
    std::fs::write(state_file(), serde_json::to_string_pretty(&state)?)
        .context("writing the sandbox state")?;
    eprintln!(
        "sandbox: moto started on {endpoint} (pid {pid}, log {})",
        log.display()
    );
    Ok(Running { pid, endpoint })
}

pub(crate) fn run(action: Action) -> anyhow::Result<()> {
    match action {
        Action::Start { port } => {
            let running = ensure(port)?;
            println!(
                "sandbox running: {} (pid {})",
                running.endpoint, running.pid
            );
        }
        Action::Stop => {
            let Some(running) = current() else {
                let _ = std::fs::remove_file(state_file());
                println!("sandbox is not running");
                return Ok(());
            };
            let status = Command::new("kill")
                .arg(running.pid.to_string())
                .status()
                .context("running kill")?;
            if !status.success() {
                bail!("could not stop pid {} ({status})", running.pid);
            }
            for _ in 0..50 {
                if !alive(running.pid) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            if alive(running.pid) {
                bail!(
                    "pid {} did not exit after SIGTERM; stop it with `kill -9 {}`",
                    running.pid,
                    running.pid
                );
            }
            std::fs::remove_file(state_file()).context("removing the sandbox state")?;
            println!("sandbox stopped (pid {})", running.pid);
        }
        Action::Status => match current() {
            Some(r) => println!("sandbox running: {} (pid {})", r.endpoint, r.pid),
            None => {
                println!("sandbox is not running");
                std::process::exit(3);
            }
        },
    }
    Ok(())
}
