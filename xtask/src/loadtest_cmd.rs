//! `cargo xtask loadtest`: proves the deployed stack (baseline, scaling, az-failover) and
//! writes the report.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use clap::ValueEnum;
use proof::{Fault, ProveConfig, Scenario, SloSpec};

use crate::StackArgs;
use crate::target::{EXIT_FAILED, Exit};

/// Exit code of bad options (as clap's).
const EXIT_USAGE: u8 = 2;
/// Exit code when Ctrl-C (or SIGTERM) interrupted the run (the fault was undone).
const EXIT_INTERRUPTED: u8 = 130;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ScenarioArg {
    Baseline,
    Scaling,
    AzFailover,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum FaultArg {
    /// Move the zone's subnets to a deny-all network ACL (AWS FIS style); restored after.
    NetworkAcl,
    /// Stop the zone's running tasks.
    StopTasks,
}

/// Options of `cargo xtask loadtest`. Durations are seconds: windows of load are wall seconds;
/// the times that concern AWS's behaviour (timeouts, objectives, the error budget) are AWS
/// seconds, divided by the sandbox clock's factor on a faster clock, and derived from the
/// prediction unless given.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct LoadtestArgs {
    /// Peak request rate: scaling ramps to it, failover holds it.
    #[arg(long, default_value_t = 500.0)]
    rps: f64,
    /// Send the load here instead of the stack's load balancer (`http://{dns}/`).
    #[arg(long)]
    url: Option<String>,
    /// Scenarios to run (repeat the flag); default all three, always in this order.
    #[arg(long = "scenario", value_enum)]
    scenarios: Vec<ScenarioArg>,
    /// SLO: p99 latency, ms, from the intended send time.
    #[arg(long, default_value_t = 250.0)]
    p99_ms: f64,
    /// SLO: failed requests allowed (errors and 5xx), a fraction.
    #[arg(long, default_value_t = 0.005)]
    max_error_rate: f64,
    /// Baseline rate [default: rps/5, at most half what the running tasks carry].
    #[arg(long)]
    baseline_rps: Option<f64>,
    /// Baseline length (measured after the warm-up).
    #[arg(long, default_value_t = 20.0)]
    baseline_s: f64,
    /// Baseline load before the measured window, while the engine's connections open.
    #[arg(long, default_value_t = 5.0)]
    warmup_s: f64,
    /// Scaling: ramp from the baseline rate to --rps over this long.
    #[arg(long, default_value_t = 20.0)]
    ramp_s: f64,
    /// Scaling: longest wait for the steady state once the load exceeds capacity, AWS seconds
    /// [default: the predicted longest time to the steady state x 1.5].
    #[arg(long)]
    scale_timeout_s: Option<f64>,
    /// SLOs must hold this long once settled (scaling) or once errors stop (failover).
    #[arg(long, default_value_t = 15.0)]
    settle_s: f64,
    /// Failover: how the zone fails.
    #[arg(long, value_enum, default_value_t = FaultArg::NetworkAcl)]
    fault: FaultArg,
    /// Failover: the zone to fail [default: the one serving the most traffic].
    #[arg(long)]
    zone: Option<String>,
    /// Failover: steady load before the fault.
    #[arg(long, default_value_t = 10.0)]
    before_s: f64,
    /// Failover objective: errors must stop within this long after the fault, AWS seconds (the
    /// prediction says beforehand whether the stack's settings can meet it).
    #[arg(long, default_value_t = 60.0)]
    max_failover_s: f64,
    /// Failover: the fault is undone at the latest after this long, AWS seconds [default: the
    /// longer of max-failover-s and the predicted failover x 1.5, at least that plus the
    /// settle window].
    #[arg(long)]
    fault_max_s: Option<f64>,
    /// Failover: failed requests allowed, in AWS seconds of the whole rate (rps x this).
    #[arg(long, default_value_t = 20.0)]
    error_budget_s: f64,
    /// Failover: start an ARC zonal shift away from the failed zone as soon as the failure
    /// shows (the load balancer's node leaves DNS, its targets get no traffic), and cancel it
    /// when the zone is restored.
    #[arg(long)]
    zonal_shift: bool,
    /// Failover: load after the zone is restored, to measure recovery.
    #[arg(long, default_value_t = 30.0)]
    after_s: f64,
    /// Connection cap [default: one request timeout of requests at --rps, 256 to 8000].
    #[arg(long)]
    connections: Option<usize>,
    /// Request timeout, AWS seconds [default: the load balancer's 10 s connect timeout + 5 s].
    #[arg(long)]
    timeout_s: Option<f64>,
    /// Where to write report.json and report.html [default: .stackproof/loadtest].
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
}

impl LoadtestArgs {
    fn config(&self, clock: sandbox::Clock, launch: sandbox::LaunchLatency) -> ProveConfig {
        let mut scenarios: Vec<Scenario> = if self.scenarios.is_empty() {
            vec![Scenario::Baseline, Scenario::Scaling, Scenario::AzFailover]
        } else {
            self.scenarios
                .iter()
                .map(|s| match s {
                    ScenarioArg::Baseline => Scenario::Baseline,
                    ScenarioArg::Scaling => Scenario::Scaling,
                    ScenarioArg::AzFailover => Scenario::AzFailover,
                })
                .collect()
        };
        scenarios.sort();
        scenarios.dedup();
        ProveConfig {
            rps: self.rps,
            scenarios,
            slo: SloSpec {
                p99_ms: self.p99_ms,
                max_error_rate: self.max_error_rate,
            },
            baseline_rps: self.baseline_rps,
            baseline_s: self.baseline_s,
            warmup_s: self.warmup_s,
            ramp_s: self.ramp_s,
            scale_timeout_s: self.scale_timeout_s,
            settle_s: self.settle_s,
            fault: match self.fault {
                FaultArg::NetworkAcl => Fault::NetworkAcl,
                FaultArg::StopTasks => Fault::StopTasks,
            },
            zone: self.zone.clone(),
            before_s: self.before_s,
            max_failover_s: self.max_failover_s,
            fault_max_s: self.fault_max_s,
            error_budget_s: self.error_budget_s,
            after_s: self.after_s,
            connections: self.connections,
            timeout_s: self.timeout_s,
            clock,
            launch,
            zonal_shift: self.zonal_shift,
        }
    }
}

/// Waits for Ctrl-C or SIGTERM.
async fn interrupted() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = term => {}
    }
}

pub(crate) async fn run(stack: &StackArgs, args: &LoadtestArgs) -> anyhow::Result<()> {
    // Bad options are reported before anything is read or started.
    args.config(sandbox::Clock::AWS, sandbox::LaunchLatency::default())
        .validate()
        .map_err(|problems| Exit {
            code: EXIT_USAGE,
            message: problems.to_string(),
        })?;
    let deployed = crate::target::deployed(stack, args.url.as_deref()).await?;
    let config = args.config(deployed.clock, deployed.launch);
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| crate::state_dir().join("loadtest"));
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    println!(
        "Proving stack {} at {} ({}, {})",
        deployed.outputs.stack, deployed.target.url, deployed.target.kind, deployed.clock
    );
    let progress: proof::ProgressFn = Arc::new(|line: &str| println!("  {line}"));
    let result = proof::prove(
        proof::Deployment {
            stack: deployed.stack,
            cx: deployed.cx,
            outputs: deployed.outputs,
            target: deployed.target,
        },
        config,
        progress,
        interrupted(),
    )
    .await;
    let report = match result {
        Ok(r) => r,
        Err(proof::Error::Interrupted { undone }) => {
            return Err(Exit {
                code: EXIT_INTERRUPTED,
                message: format!("interrupted; {undone}"),
            }
            .into());
        }
        // The fault is still in place: say so, never that it was undone.
        Err(e @ proof::Error::NotUndone { .. }) => {
            return Err(anyhow::Error::new(e).context("the proof run failed"));
        }
        Err(e) => {
            return Err(e).context(
                "the proof run failed; a zone it isolated is restored (the next run also restores any it finds)",
            );
        }
    };
    let json = out.join("report.json");
    let html = out.join("report.html");
    std::fs::write(&json, report.to_json())
        .with_context(|| format!("writing {}", json.display()))?;
    std::fs::write(&html, proof::html::render(&report))
        .with_context(|| format!("writing {}", html.display()))?;
    println!("\n{}", report.table());
    println!("Report: {} and {}", html.display(), json.display());
    if !report.passed {
        return Err(Exit {
            code: EXIT_FAILED,
            message: "Verdict: FAIL (see the checks above)".to_owned(),
        }
        .into());
    }
    Ok(())
}
