//! `cargo xtask bench sandbox`: what the sandbox ALB proxy adds to a loadtest, and how much one
//! core of it carries.
//!
//! The benchmark itself is the `bench` example of the `sandbox-alb` crate (the proxy without
//! the AWS SDK, so a release build of it is cheap): this builds it and the sample-app with
//! `cargo build --release` and runs it with these options. It prints p50/p99/p99.9 straight to
//! one sample-app task and through the proxy over two, the added p99, the proxy's CPU per
//! request and the highest rate one proxy core sustains. Numbers, not assertions.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context as _, bail};

/// Options of `cargo xtask bench sandbox`.
#[derive(clap::Args, Debug)]
pub(crate) struct BenchSandboxArgs {
    /// Rate of the comparison runs (direct and through the proxy), requests per second.
    #[arg(long = "rps", default_value_t = 2000)]
    pub(crate) rate: u32,
    /// Length of each comparison run (`10s`, whole seconds, split over the rounds).
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = crate::whole_seconds)]
    pub(crate) duration: u64,
    /// The comparison alternates direct and proxied runs this many times, so that both see the
    /// same background load.
    #[arg(long, default_value_t = 5)]
    pub(crate) rounds: u32,
    /// Rates tried, in order, in the search for the highest rate one proxy core sustains.
    #[arg(long, value_delimiter = ',', default_values_t = [5000u32, 7500, 10000, 12500, 15000, 17500, 20000, 25000])]
    pub(crate) steps: Vec<u32>,
    /// Length of each step of that search (`5s`, whole seconds).
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = crate::whole_seconds)]
    pub(crate) step_duration: u64,
    /// Skip that search.
    #[arg(long)]
    pub(crate) no_max_rate: bool,
    /// Run the proxy for the direct/proxied comparison as `sandbox-daemon` does (a
    /// multi-thread runtime of 2 workers, on every CPU) instead of alone on a current-thread
    /// runtime; the search for the highest rate per core still uses the latter.
    #[arg(long)]
    pub(crate) daemon_runtime: bool,
    /// Do not pin threads to CPUs (on a machine busy with other work, a pinned proxy waits for
    /// its one CPU).
    #[arg(long)]
    pub(crate) no_pin: bool,
    /// The sample-app binary. Default: the release build (`cargo build --release -p stackproof-sample-app`).
    #[arg(long)]
    pub(crate) sample_app: Option<PathBuf>,
}

pub(crate) fn run(args: &BenchSandboxArgs) -> anyhow::Result<()> {
    crate::build_release(&["-p", "stackproof-sample-app", "--bin", "sample-app"])?;
    let release = crate::build_release(&["-p", "stackproof-sandbox-alb", "--example", "bench"])?;
    let mut cmd = Command::new(release.join("examples").join("bench"));
    cmd.arg("--rate")
        .arg(args.rate.to_string())
        .arg("--duration")
        .arg(args.duration.to_string())
        .arg("--rounds")
        .arg(args.rounds.to_string())
        .arg("--steps")
        .arg(
            args.steps
                .iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(","),
        )
        .arg("--step-duration")
        .arg(args.step_duration.to_string())
        .arg("--sample-app")
        .arg(
            args.sample_app
                .clone()
                .unwrap_or_else(|| release.join("sample-app")),
        );
    if args.no_max_rate {
        cmd.arg("--no-max-rate");
    }
    if args.daemon_runtime {
        cmd.arg("--daemon-runtime");
    }
    if args.no_pin {
        cmd.arg("--no-pin");
    }
    let status = cmd
        .status()
        .context("running the sandbox-alb bench example")?;
    if !status.success() {
        bail!("the sandbox ALB benchmark failed: {status}");
    }
    Ok(())
}
