//! `sandbox-daemon`: runs the sandbox daemon (moto + data plane) in the foreground until
//! SIGTERM. `cargo xtask sandbox start` runs the same code through a hidden subcommand; this
//! binary lets the sandbox's own tests start and stop a real daemon.
//!
//! Usage: `sandbox-daemon --state-dir DIR [--port N] [--region R] [--python PATH]
//! [--sample-app PATH] [--clock aws|fast|FACTOR] [--launch 30s..60s] [--seed N]`.

use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let mut options = stackproof_sandbox::daemon::DaemonOptions::new(
        PathBuf::new(),
        PathBuf::from(".stackproof"),
        stackproof_sandbox::daemon::sample_app_path(),
    );
    let mut python = None;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let Some(value) = args.next() else {
            eprintln!("sandbox-daemon: {flag} needs a value");
            return ExitCode::from(2);
        };
        match flag.as_str() {
            "--state-dir" => options.state_dir = PathBuf::from(value),
            "--region" => options.region = value,
            "--python" => python = Some(PathBuf::from(value)),
            "--sample-app" => options.sample_app = PathBuf::from(value),
            "--clock" => match value.parse() {
                Ok(c) => options.clock = c,
                Err(e) => {
                    eprintln!("sandbox-daemon: --clock {e}");
                    return ExitCode::from(2);
                }
            },
            "--launch" => match value.parse() {
                Ok(l) => options.launch = l,
                Err(e) => {
                    eprintln!("sandbox-daemon: --launch {e}");
                    return ExitCode::from(2);
                }
            },
            "--seed" => match value.parse() {
                Ok(s) => options.seed = s,
                Err(_) => {
                    eprintln!("sandbox-daemon: --seed {value:?} is not a whole number");
                    return ExitCode::from(2);
                }
            },
            "--port" => match value.parse() {
                Ok(p) => options.port = p,
                Err(_) => {
                    eprintln!("sandbox-daemon: --port {value:?} is not a port");
                    return ExitCode::from(2);
                }
            },
            other => {
                eprintln!("sandbox-daemon: unknown flag {other:?}");
                return ExitCode::from(2);
            }
        }
    }
    options.python = match python.map_or_else(stackproof_sandbox::python_path, Ok) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("sandbox-daemon: {e}");
            return ExitCode::FAILURE;
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("sandbox-daemon: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(stackproof_sandbox::daemon::run(options)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sandbox-daemon: {e}");
            ExitCode::FAILURE
        }
    }
}
