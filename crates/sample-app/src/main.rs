//! `sample-app`: serve (default) or `sample-app health` (exit 0 when the local server is healthy).

use std::process::ExitCode;
use std::time::Duration;

/// How long in-flight requests may take to finish after SIGTERM.
const DRAIN: Duration = Duration::from_secs(10);

#[tokio::main]
async fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    match args.next().as_deref() {
        None | Some("serve") => {}
        Some("health") => {
            return if sample_app::probe_health().await {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            };
        }
        Some(other) => {
            eprintln!("sample-app: unknown command {other:?}; usage: sample-app [serve|health]");
            return ExitCode::from(2);
        }
    }
    let addr = match sample_app::bind_addr() {
        Ok(addr) => addr,
        Err(err) => {
            eprintln!("sample-app: {err}");
            return ExitCode::from(2);
        }
    };
    let routes = match sample_app::Routes::from_env() {
        Ok(routes) => routes,
        Err(err) => {
            eprintln!("sample-app: {err}");
            return ExitCode::from(2);
        }
    };
    let shutdown = sample_app::shutdown_signal();
    let identity = sample_app::Identity::discover().await;
    let listener = match tokio::net::TcpListener::bind(addr).await {
        Ok(listener) => listener,
        Err(err) => {
            eprintln!("sample-app: cannot listen on {addr}: {err}");
            return ExitCode::FAILURE;
        }
    };
    eprintln!(
        "sample-app: listening on {addr} (az {}, task {})",
        identity.az, identity.task
    );
    sample_app::serve_with(listener, identity, routes, shutdown, DRAIN).await;
    eprintln!("sample-app: stopped");
    ExitCode::SUCCESS
}
