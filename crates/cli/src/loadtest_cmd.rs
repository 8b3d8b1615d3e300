//! `loadtest`: proves the deployed stack (baseline, scaling, az-failover) and
//! writes the report.

use std::io::{IsTerminal as _, Write as _};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::ValueEnum;
use loadtest::parse_duration;
use proof::{Fault, ProveConfig, Scenario, SloSpec};

use crate::target::{EXIT_FAILED, Exit};
use crate::{StackArgs, Target};

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

/// Options of `loadtest`. Durations take a unit as k6 writes them (`250ms`, `20s`, `5m`,
/// `1m30s`): windows of load are wall time; the times that concern AWS's behaviour (timeouts,
/// objectives, the error budget) are AWS time, divided by the sandbox clock's factor on a
/// faster clock, and derived from the prediction unless given.
#[derive(Debug, Clone, clap::Args)]
pub struct LoadtestArgs {
    /// Peak request rate: scaling ramps to it, failover holds it.
    #[arg(long, default_value_t = 500.0)]
    rps: f64,
    /// Send the load here instead of the stack's load balancer (`http://{dns}/`).
    #[arg(long)]
    url: Option<String>,
    /// Scenarios to run (repeat the flag); default all three, always in this order.
    #[arg(long = "scenario", value_enum)]
    scenarios: Vec<ScenarioArg>,
    /// SLO: p99 latency, from the intended send time.
    #[arg(long, value_name = "DURATION", default_value = "250ms", value_parser = parse_duration)]
    p99: Duration,
    /// SLO: failed requests allowed (errors and 5xx), a fraction.
    #[arg(long, default_value_t = 0.005)]
    max_error_rate: f64,
    /// Baseline rate [default: rps/5, at most half what the running tasks carry].
    #[arg(long)]
    baseline_rps: Option<f64>,
    /// Baseline length (measured after the warm-up).
    #[arg(long, value_name = "DURATION", default_value = "20s", value_parser = parse_duration)]
    baseline: Duration,
    /// Baseline load before the measured window, while the engine's connections open.
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = parse_duration)]
    warmup: Duration,
    /// Scaling: ramp from the baseline rate to --rps over this long.
    #[arg(long, value_name = "DURATION", default_value = "20s", value_parser = parse_duration)]
    ramp: Duration,
    /// Scaling: longest wait for the steady state once the load exceeds capacity, AWS time
    /// [default: the predicted longest time to the steady state x 1.5].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    scale_timeout: Option<Duration>,
    /// SLOs must hold this long once settled (scaling) or once errors stop (failover).
    #[arg(long, value_name = "DURATION", default_value = "15s", value_parser = parse_duration)]
    settle: Duration,
    /// Failover: how the zone fails.
    #[arg(long, value_enum, default_value_t = FaultArg::NetworkAcl)]
    fault: FaultArg,
    /// Failover: the zone to fail [default: the one serving the most traffic].
    #[arg(long)]
    zone: Option<String>,
    /// Failover: steady load before the fault.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
    before: Duration,
    /// Failover objective: errors must stop within this long after the fault, AWS time (the
    /// prediction says beforehand whether the stack's settings can meet it).
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = parse_duration)]
    max_failover: Duration,
    /// Failover: the fault is undone at the latest after this long, AWS time [default: the
    /// longer of --max-failover and the predicted failover x 1.5, at least that plus the
    /// settle window].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    fault_max: Option<Duration>,
    /// Failover: failed requests allowed, as AWS time of the whole rate (--rps x this).
    #[arg(long, value_name = "DURATION", default_value = "20s", value_parser = parse_duration)]
    error_budget: Duration,
    /// Failover: start an ARC zonal shift away from the failed zone as soon as the failure
    /// shows (the load balancer's node leaves DNS, its targets get no traffic), and cancel it
    /// when the zone is restored.
    #[arg(long)]
    zonal_shift: bool,
    /// Stop condition (repeat the flag), as AWS FIS has them: the run stops, its fault undone,
    /// when this CloudWatch alarm is in ALARM; one already in ALARM keeps it from starting
    /// [default: the stack's alarms but the per-zone unhealthy-hosts ones, which a failed zone
    /// sets off by design].
    #[arg(long = "stop-on-alarm", value_name = "ALARM")]
    stop_on_alarm: Vec<String>,
    /// No stop conditions at all.
    #[arg(long, conflicts_with = "stop_on_alarm")]
    no_stop_conditions: bool,
    /// Failover: load after the zone is restored, to measure recovery.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_duration)]
    after: Duration,
    /// Connection cap [default: one request timeout of requests at --rps, 256 to 8000].
    #[arg(long)]
    connections: Option<usize>,
    /// Request timeout, AWS time [default: the load balancer's 10 s connect timeout + 5 s].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    timeout: Option<Duration>,
    /// Where to write report.json and report.html [default: .stackproof/loadtest].
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Send the load from this many generators run as ECS tasks (RunTask in the stack's
    /// cluster, spread over its zones), one constant-rate run at --rps for --duration; their
    /// latency is added exactly. The scenarios do not apply.
    #[arg(long, value_name = "N", conflicts_with_all = ["scenarios", "baseline_rps", "zonal_shift"])]
    workers: Option<u32>,
    /// With --workers: how long the load runs.
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = parse_duration, requires = "workers")]
    duration: Duration,
    /// With --target aws: fail a zone of the account without asking (needed when stdin is not
    /// a terminal). Without it, az-failover on AWS asks for the stack name to be typed.
    #[arg(long)]
    yes: bool,
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
                p99_ms: self.p99.as_secs_f64() * 1000.0,
                max_error_rate: self.max_error_rate,
            },
            baseline_rps: self.baseline_rps,
            baseline_s: self.baseline.as_secs_f64(),
            warmup_s: self.warmup.as_secs_f64(),
            ramp_s: self.ramp.as_secs_f64(),
            scale_timeout_s: self.scale_timeout.map(|d| d.as_secs_f64()),
            settle_s: self.settle.as_secs_f64(),
            fault: match self.fault {
                FaultArg::NetworkAcl => Fault::NetworkAcl,
                FaultArg::StopTasks => Fault::StopTasks,
            },
            zone: self.zone.clone(),
            before_s: self.before.as_secs_f64(),
            max_failover_s: self.max_failover.as_secs_f64(),
            fault_max_s: self.fault_max.map(|d| d.as_secs_f64()),
            error_budget_s: self.error_budget.as_secs_f64(),
            after_s: self.after.as_secs_f64(),
            connections: self.connections,
            timeout_s: self.timeout.map(|d| d.as_secs_f64()),
            clock,
            launch,
            zonal_shift: self.zonal_shift,
            stop_alarms: if self.no_stop_conditions {
                Some(Vec::new())
            } else if self.stop_on_alarm.is_empty() {
                None
            } else {
                Some(self.stop_on_alarm.clone())
            },
        }
    }
}

/// Whether the run fails a zone of a real AWS account, and so must be confirmed.
fn faults_aws(stack: &StackArgs, config: &ProveConfig) -> bool {
    stack.target == Target::Aws && config.scenarios.contains(&Scenario::AzFailover)
}

pub(crate) async fn run(
    stack: &StackArgs,
    args: &LoadtestArgs,
    force_unlock: Option<&str>,
) -> anyhow::Result<()> {
    // From here on Ctrl-C, SIGTERM and SIGHUP end the run through the proof, which undoes
    // its fault, and the lock is released.
    let mut cancel = Box::pin(crate::deploy::interrupted());
    if let Some(workers) = args.workers {
        return distributed(stack, args, workers).await;
    }
    // Bad options are reported before anything is read or started.
    let checked = args.config(sandbox::Clock::AWS, sandbox::LaunchLatency::default());
    checked.validate().map_err(|problems| Exit {
        code: EXIT_USAGE,
        message: crate::as_options(problems).to_string(),
    })?;
    let ask = faults_aws(stack, &checked) && !args.yes;
    if ask && !std::io::stdin().is_terminal() {
        return Err(Exit {
            code: EXIT_USAGE,
            message: "error: loadtest --target aws fails an availability zone of the account (az-failover) and asks you to type the stack name first, but stdin is not a terminal; pass --yes to proceed without asking, or --scenario baseline --scenario scaling to run without a fault. Nothing was read or changed.".to_owned(),
        }
        .into());
    }
    let deployed = crate::target::deployed(stack, args.url.as_deref()).await?;
    let config = args.config(deployed.clock, deployed.launch);
    if ask {
        let fault = match config.fault {
            Fault::NetworkAcl => "its subnets get a deny-all network ACL",
            Fault::StopTasks => "its tasks are stopped",
        };
        print!(
            "This fails availability zone {} of stack {} in AWS account {}, region {} ({fault}) while it sends up to {} requests/s to {}; the fault is undone after the scenario, at the latest after {} s. Type the stack name ({}) to proceed: ",
            config
                .zone
                .as_deref()
                .unwrap_or("(the busiest, chosen at run time)"),
            deployed.outputs.stack,
            deployed.outputs.storage.account_id,
            deployed.stack.region(),
            config.rps,
            deployed.target.url,
            config
                .fault_max_s
                .map_or_else(|| "the derived limit".to_owned(), |s| format!("{s:.0}")),
            deployed.outputs.stack,
        );
        std::io::stdout().flush()?;
        let answer = tokio::select! {
            answer = crate::deploy::read_answer() => answer.context("reading the confirmation")?,
            signal = &mut cancel => {
                return Err(Exit {
                    code: EXIT_INTERRUPTED,
                    message: format!("{signal}: cancelled; nothing was changed"),
                }
                .into());
            }
        };
        if answer.trim() != deployed.outputs.stack {
            return Err(Exit {
                code: EXIT_FAILED,
                message: format!(
                    "cancelled: {:?} is not the stack name {:?}; nothing was changed",
                    answer.trim(),
                    deployed.outputs.stack
                ),
            }
            .into());
        }
    }
    // The stack's lock for the whole run: a deploy meanwhile would repair the isolated zone
    // (deploy restores one a killed run left) and spoil the measurement, and two proof runs
    // would fail zones under each other.
    let held = crate::deploy::acquire(&deployed.cx, "loadtest", force_unlock).await?;
    let cx = deployed.cx.clone();
    crate::deploy::with_lock(held, &cx, prove_and_report(args, deployed, config, cancel)).await
}

/// `--workers N`: the distributed run (no fault, so no lock and no confirmation).
async fn distributed(stack: &StackArgs, args: &LoadtestArgs, workers: u32) -> anyhow::Result<()> {
    let request = crate::distributed_cmd::Request {
        workers,
        rps: args.rps,
        duration: args.duration,
        p99: args.p99,
        max_error_rate: args.max_error_rate,
        connections: args.connections,
        timeout: args.timeout,
    };
    let mut problems = infra::Problems::default();
    proof::distributed::check_workers(workers, &mut problems);
    if !(args.rps > 0.0 && args.rps.is_finite()) {
        problems.add("--rps", args.rps, "more than 0 requests/s");
    }
    if args.duration.is_zero() {
        problems.add("--duration", "0s", "more than 0, such as 60s");
    }
    if !problems.0.is_empty() {
        return Err(Exit {
            code: EXIT_USAGE,
            message: problems.to_string(),
        }
        .into());
    }
    let deployed = crate::target::deployed(stack, args.url.as_deref()).await?;
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| crate::state_dir().join("loadtest"));
    crate::distributed_cmd::run(deployed, &request, &out).await
}

async fn prove_and_report(
    args: &LoadtestArgs,
    deployed: crate::target::Deployed,
    config: ProveConfig,
    cancel: impl std::future::Future<Output = &'static str>,
) -> anyhow::Result<()> {
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
        async {
            cancel.await;
        },
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
        Err(e @ proof::Error::Stopped { .. }) => {
            return Err(Exit {
                code: EXIT_FAILED,
                message: format!("Verdict: FAIL ({e})"),
            }
            .into());
        }
        // The fault is still in place: say so, never that it was undone.
        Err(e @ proof::Error::NotUndone { .. }) => {
            return Err(anyhow::Error::new(e).context(format!(
                "the proof run failed; `{} deploy` restores the zone",
                crate::program()
            )));
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
