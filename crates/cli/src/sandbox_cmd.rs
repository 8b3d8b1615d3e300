//! `sandbox start|stop|status`: the sandbox daemon (moto and the data plane that
//! runs the declared tasks and serves the ALB) in the background on 127.0.0.1, its state in
//! `.stackproof/` (`sandbox.json`, `sandbox-endpoints.json`, `sandbox-status.json`,
//! `sandbox.log`, `tasks/*.log`), reused by later commands.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use sandbox::{Clock, LaunchLatency, daemon};

/// The region the sandbox's data plane runs unless told otherwise.
pub(crate) const DEFAULT_REGION: &str = "eu-west-1";

/// How the data plane's model of AWS runs.
#[derive(Debug, Clone, clap::Args)]
pub struct ModelArgs {
    /// The clock the sandbox imitates AWS on: `aws` (AWS's own timings: a scale-out takes
    /// about six minutes, as on AWS), `fast` (the same model ten times faster), or a factor
    /// from 1 to 50. Also `$STACKPROOF_CLOCK`.
    #[arg(long, env = "STACKPROOF_CLOCK", default_value = "aws")]
    pub(crate) clock: Clock,
    /// How long a Fargate task takes from creation to RUNNING, drawn uniformly (model time):
    /// `30s..60s` (AWS's typical range, the default) or a fixed `45s`.
    #[arg(long, default_value = "30s..60s")]
    pub(crate) launch: LaunchLatency,
    /// Seed of the launch latencies and health-check phases: the same seed, the same run.
    #[arg(long, default_value_t = 1)]
    pub(crate) seed: u64,
}

impl Default for ModelArgs {
    fn default() -> Self {
        let clock = std::env::var("STACKPROOF_CLOCK")
            .ok()
            .and_then(|c| c.parse().ok())
            .unwrap_or(Clock::AWS);
        ModelArgs {
            clock,
            launch: LaunchLatency::default(),
            seed: 1,
        }
    }
}

/// What to do with the sandbox.
#[derive(Debug, clap::Subcommand)]
#[allow(missing_docs)] // `model`: a flattened group, documented on `ModelArgs`.
pub enum SandboxAction {
    /// Start it (nothing happens if it runs already).
    Start {
        /// The port for moto; 0 picks a free one.
        #[arg(long, default_value_t = 0)]
        port: u16,
        /// The region whose services and load balancers the data plane runs.
        #[arg(long, default_value = DEFAULT_REGION)]
        region: String,
        #[command(flatten)]
        model: ModelArgs,
    },
    /// Stop it, every task process it runs, and remove its state.
    Stop,
    /// Say whether it runs, where, and what it serves.
    Status,
    /// Run the daemon in the foreground (what `start` runs in the background).
    #[command(hide = true)]
    Daemon {
        /// The port for moto; 0 picks a free one.
        #[arg(long, default_value_t = 0)]
        port: u16,
        /// The region whose services and load balancers the data plane runs.
        #[arg(long, default_value = DEFAULT_REGION)]
        region: String,
        /// The Python with moto. Default: the one in the cache folder (created on first use).
        #[arg(long)]
        python: Option<PathBuf>,
        /// The sample-app binary. Default: `$STACKPROOF_SAMPLE_APP`, else beside this program.
        #[arg(long)]
        sample_app: Option<PathBuf>,
        #[command(flatten)]
        model: ModelArgs,
    },
}

/// A running sandbox.
#[derive(Debug, Clone)]
pub(crate) struct Running {
    pub(crate) pid: u32,
    pub(crate) endpoint: String,
}

fn answers(endpoint: &str) -> bool {
    let addr = endpoint.trim_start_matches("http://");
    addr.parse()
        .is_ok_and(|a| std::net::TcpStream::connect_timeout(&a, Duration::from_secs(1)).is_ok())
}

/// The sandbox, when one runs.
pub(crate) fn current() -> Option<Running> {
    let state = daemon::read_state(&crate::state_dir())?;
    answers(&state.endpoint).then_some(Running {
        pid: state.pid,
        endpoint: state.endpoint,
    })
}

/// Starts the sandbox with its data plane for `region` unless one runs; returns it.
pub(crate) fn ensure_in(port: u16, region: &str, model: &ModelArgs) -> anyhow::Result<Running> {
    let dir = crate::state_dir();
    if let Some(running) = current() {
        if let Some(state) = daemon::read_state(&dir) {
            if !state.region.is_empty() && state.region != region {
                eprintln!(
                    "sandbox: warning: it runs the data plane for {}, not {region}; restart it with `{program} sandbox stop` then `start --region {region}`",
                    state.region,
                    program = crate::program()
                );
            }
            if state.clock != model.clock {
                eprintln!(
                    "sandbox: note: it runs on the {}, not the {} asked for; restart it with `{program} sandbox stop` then `start --clock ...`",
                    state.clock,
                    model.clock,
                    program = crate::program()
                );
            }
        }
        return Ok(running);
    }
    if let Some(stale) = daemon::read_state(&dir) {
        // Alive but not answering: stop it before starting another.
        daemon::stop(&stale, Duration::from_secs(10))
            .with_context(|| format!("stopping the unresponsive sandbox (pid {})", stale.pid))?;
    }
    let python = crate::moto_env::ensure_moto()?;
    let sample_app = daemon::sample_app_path();
    if !sample_app.exists() {
        eprintln!(
            "sandbox: warning: no sample-app binary at {}: tasks cannot start until it is built (`cargo build --workspace --all-targets`) or STACKPROOF_SAMPLE_APP names it",
            sample_app.display()
        );
    }
    let exe = std::env::current_exe().context("finding the xtask executable")?;
    let args: Vec<String> = vec![
        "sandbox".into(),
        "daemon".into(),
        "--port".into(),
        port.to_string(),
        "--region".into(),
        region.to_owned(),
        "--python".into(),
        python.display().to_string(),
        "--sample-app".into(),
        sample_app.display().to_string(),
        "--clock".into(),
        model.clock.scale().to_string(),
        "--launch".into(),
        model.launch.to_string(),
        "--seed".into(),
        model.seed.to_string(),
    ];
    let state = daemon::spawn(&exe, &args, &dir, Duration::from_secs(60))
        .context("starting the sandbox daemon")?;
    eprintln!(
        "sandbox: started (pid {}): moto on {} (pid {}), data plane for {} on the {}, log {}",
        state.pid,
        state.endpoint,
        state.moto_pid,
        state.region,
        state.clock,
        state.log.display()
    );
    Ok(Running {
        pid: state.pid,
        endpoint: state.endpoint,
    })
}

fn print_status(dir: &std::path::Path) {
    if let Some(file) = daemon::read_endpoints(dir) {
        println!("  {}", file.clock);
        if let Some(dns) = file.dns {
            println!(
                "  DNS server {dns} answers for the load balancers' names (try: dig @{} -p {} NAME)",
                dns.ip(),
                dns.port()
            );
        }
        for e in &file.load_balancers {
            println!("  ALB {} http://{}:{}", e.name, e.dns_name, e.port);
            for n in &e.nodes {
                println!(
                    "    node {} ({}){}{}",
                    n.addr,
                    n.zone,
                    if n.reachable {
                        ""
                    } else {
                        ", cut off by its subnet's network ACL"
                    },
                    if n.in_dns {
                        ""
                    } else {
                        ", out of the DNS answer"
                    }
                );
            }
        }
    }
    let status: Option<serde_json::Value> = std::fs::read_to_string(dir.join(daemon::STATUS_FILE))
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok());
    // Each database: where its servers are (psql connects there; the password is the
    // RDS-managed secret's `password`).
    if let Some(dbs) = status.as_ref().and_then(|s| s["databases"].as_array()) {
        for d in dbs {
            let server = |v: &serde_json::Value| match (v[0].as_str(), v[1].as_str()) {
                (Some(zone), Some(addr)) => format!("{addr} ({zone})"),
                _ => "none".to_owned(),
            };
            let standbys: Vec<String> = d["standbys"]
                .as_array()
                .map(|list| list.iter().map(server).collect())
                .unwrap_or_default();
            println!(
                "  database {} {}: {}; primary {}, standby {}, {} failovers{}",
                d["id"].as_str().unwrap_or("?"),
                d["endpoint"].as_str().unwrap_or("?"),
                d["state"].as_str().unwrap_or("?"),
                server(&d["primary"]),
                if standbys.is_empty() {
                    "none".to_owned()
                } else {
                    standbys.join(", ")
                },
                d["failovers"],
                if d["deployment"] == "cluster" {
                    " (a Multi-AZ DB cluster)"
                } else {
                    ""
                }
            );
        }
    }
    // Each cache: where its Redis nodes are (redis-cli --tls --cacert <the plane's authority>).
    if let Some(caches) = status.as_ref().and_then(|s| s["caches"].as_array()) {
        for c in caches {
            let node = |v: &serde_json::Value| match (v[0].as_str(), v[1].as_str()) {
                (Some(zone), Some(addr)) => format!("{addr} ({zone})"),
                _ => "none".to_owned(),
            };
            let replicas: Vec<String> = c["replicas"]
                .as_array()
                .map(|r| r.iter().map(node).collect())
                .unwrap_or_default();
            println!(
                "  cache {} {}: {}; primary {}, replicas {}, {} failovers",
                c["id"].as_str().unwrap_or("?"),
                c["endpoint"].as_str().unwrap_or("?"),
                c["state"].as_str().unwrap_or("?"),
                node(&c["primary"]),
                if replicas.is_empty() {
                    "none".to_owned()
                } else {
                    replicas.join(", ")
                },
                c["failovers"]
            );
        }
    }
    if let Some(services) = status.as_ref().and_then(|s| s["services"].as_array()) {
        for s in services {
            println!(
                "  service {}/{}: desired {}, running {}, healthy {}",
                s["cluster"].as_str().unwrap_or("?"),
                s["name"].as_str().unwrap_or("?"),
                s["desired"],
                s["running"],
                s["healthy"]
            );
        }
    }
}

pub(crate) fn run(action: SandboxAction) -> anyhow::Result<()> {
    let dir = crate::state_dir();
    match action {
        SandboxAction::Start {
            port,
            region,
            model,
        } => {
            let running = ensure_in(port, &region, &model)?;
            println!(
                "sandbox running: {} (pid {})",
                running.endpoint, running.pid
            );
        }
        SandboxAction::Stop => {
            let Some(state) = daemon::read_state(&dir) else {
                let _ = std::fs::remove_file(dir.join(daemon::STATE_FILE));
                println!("sandbox is not running");
                return Ok(());
            };
            daemon::stop(&state, Duration::from_secs(20))
                .with_context(|| format!("stopping the sandbox (pid {})", state.pid))?;
            let _ = std::fs::remove_file(dir.join(daemon::STATE_FILE));
            let _ = std::fs::remove_file(dir.join(daemon::ENDPOINTS_FILE));
            println!("sandbox stopped (pid {} and its task processes)", state.pid);
        }
        SandboxAction::Status => match current() {
            Some(r) => {
                println!("sandbox running: {} (pid {})", r.endpoint, r.pid);
                print_status(&dir);
            }
            None => {
                println!("sandbox is not running");
                std::process::exit(3);
            }
        },
        SandboxAction::Daemon {
            port,
            region,
            python,
            sample_app,
            model,
        } => {
            let python = match python {
                Some(p) => p,
                None => sandbox::python_path()?,
            };
            let mut options = daemon::DaemonOptions::new(
                python,
                dir,
                sample_app.unwrap_or_else(daemon::sample_app_path),
            );
            options.port = port;
            options.region = region;
            options.clock = model.clock;
            options.launch = model.launch;
            options.seed = model.seed;
            // This program's `loadgen` command is what the load generators' tasks run.
            options.loadgen = std::env::current_exe().ok();
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .context("starting the async runtime")?;
            runtime.block_on(daemon::run(options))?;
        }
    }
    Ok(())
}
