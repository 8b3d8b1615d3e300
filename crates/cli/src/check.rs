//! `check`: the scheduled availability probe of the deployed stack (see
//! `proof::check`). Exit codes: 0 pass, 1 fail, 2 bad usage, 3 not deployed.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use loadtest::parse_duration;
use proof::check::{self, CheckConfig};

use crate::StackArgs;
use crate::target::{EXIT_FAILED, Exit};

/// Exit code of bad usage (as clap's).
const EXIT_USAGE: u8 = 2;

/// The flags of `check`.
#[derive(Debug, Clone, clap::Args)]
pub struct CheckArgs {
    /// Requests per second (at most 1000: a probe, not a load test).
    #[arg(long, default_value_t = CheckConfig::default().rps)]
    rps: f64,
    /// How long to probe (`30s`, `2m`).
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_duration)]
    duration: Duration,
    /// The p99 latency objective (`250ms`).
    #[arg(long, value_name = "DURATION", default_value = "500ms", value_parser = parse_duration)]
    p99: Duration,
    /// The error rate objective, a fraction (0.01 is 1%); the success rate must be at least one
    /// minus this.
    #[arg(long, value_name = "FRACTION", default_value_t = CheckConfig::default().max_error_rate)]
    max_error_rate: f64,
    /// The timeout of one request (`5s`).
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = parse_duration)]
    timeout: Duration,
    /// Probe this URL instead of `http://{load balancer DNS name}/` (e.g. another path).
    #[arg(long)]
    url: Option<String>,
    /// Write the result as JSON to FILE.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Write the result as JUnit XML to FILE (one test suite, one test case per objective).
    #[arg(long, value_name = "FILE")]
    junit: Option<PathBuf>,
    /// Do not publish the CloudWatch metrics (SuccessPercent, LatencyP99, RequestCount).
    #[arg(long)]
    no_publish: bool,
}

/// Probes the deployed stack, prints a summary and the verdict, writes the files asked for,
/// publishes the metrics (pass or fail), and fails with exit code 1 when an objective is broken.
pub(crate) async fn run(stack: &StackArgs, args: &CheckArgs) -> anyhow::Result<()> {
    let config = CheckConfig {
        rps: args.rps,
        duration_s: args.duration.as_secs_f64(),
        p99_ms: args.p99.as_secs_f64() * 1000.0,
        max_error_rate: args.max_error_rate,
        timeout_s: args.timeout.as_secs_f64(),
    };
    if let Err(problems) = config.validate() {
        let lines: Vec<String> = crate::as_options(problems)
            .0
            .iter()
            .map(|p| format!("  {p}"))
            .collect();
        return Err(Exit {
            code: EXIT_USAGE,
            message: format!("error: invalid check options:\n{}", lines.join("\n")),
        }
        .into());
    }
    let deployed = crate::target::deployed(stack, args.url.as_deref()).await?;
    let result = check::run(&deployed.target, &config)
        .await
        .with_context(|| format!("checking {}", deployed.target.url))?;
    println!("{}", result.summary());
    println!("{}", result.verdict());
    if let Some(path) = &args.json {
        write(path, &result.to_json())?;
    }
    if let Some(path) = &args.junit {
        write(path, &result.to_junit())?;
    }
    if !args.no_publish {
        let namespace = &deployed.outputs.observability.check_namespace;
        check::publish(&check::cloudwatch(&deployed.cx), namespace, &result)
            .await
            .context("publishing the check's metrics (--no-publish skips it)")?;
        println!("Published SuccessPercent, LatencyP99 and RequestCount to {namespace}.");
    }
    if result.passed {
        Ok(())
    } else {
        Err(Exit {
            code: EXIT_FAILED,
            message: format!(
                "the availability check failed: {} of {} objectives broken",
                result.reasons.len(),
                result.objectives.len()
            ),
        }
        .into())
    }
}

fn write(path: &Path, text: &str) -> anyhow::Result<()> {
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}
