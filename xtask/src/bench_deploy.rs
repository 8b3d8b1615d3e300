//! `cargo xtask bench deploy`: the whole stack against a moto of its own (control plane only,
//! no data plane): deploy, a no-change plan, a second deploy and destroy, several runs each,
//! with wall time and the AWS calls counted by `infra::CallCounter`. Prints a table beside the
//! issue's targets and the seeds' Terraform figures; numbers, not assertions.
//!
//! "deploy" is what `cargo xtask deploy` does (plan, and at the same time what exists for its
//! summary, then apply) and "destroy" what `cargo xtask destroy --yes` does (plan_destroy, then
//! destroy). Each run uses a fresh moto account, so every first deploy starts from nothing.

use std::future::Future;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use infra::{CallCounts, Context};
use stack::{Stack, StackConfig};

/// Options of `cargo xtask bench deploy`.
#[derive(clap::Args, Debug)]
pub(crate) struct BenchDeployArgs {
    /// Runs of each phase.
    #[arg(long, default_value_t = 3)]
    pub(crate) runs: u32,
    /// The stack configuration. Default: the built-in defaults (not the project's stack.toml,
    /// so that numbers are comparable between machines).
    #[arg(long, value_name = "FILE")]
    pub(crate) config: Option<PathBuf>,
    /// Print the calls per service and operation of each phase (of the last run).
    #[arg(long, short)]
    pub(crate) verbose: bool,
}

/// The phases, in the order each run makes them.
const PHASES: [Phase; 4] = [
    Phase {
        name: "deploy",
        target: "< 5 s",
        terraform: "77 s, 204 calls",
    },
    Phase {
        name: "no-change plan",
        target: "< 1 s, <= 40 calls",
        terraform: "10 s, 81 calls",
    },
    Phase {
        name: "second deploy",
        target: "0 writes",
        terraform: "-",
    },
    Phase {
        name: "destroy",
        target: "< 3 s",
        terraform: "29 s, 193 calls",
    },
];

#[derive(Debug, Clone, Copy)]
struct Phase {
    name: &'static str,
    target: &'static str,
    terraform: &'static str,
}

/// One measured phase of one run.
#[derive(Debug, Clone)]
struct Sample {
    wall: Duration,
    calls: CallCounts,
}

pub(crate) fn run(args: &BenchDeployArgs) -> anyhow::Result<()> {
    if args.runs == 0 {
        bail!("--runs 0 is not allowed: use 1 or more");
    }
    let config = match &args.config {
        Some(path) => StackConfig::load(path)?,
        None => StackConfig::default(),
    };
    let stack = config.validate()?;
    let python = sandbox::python_path().context("finding moto (run `cargo xtask setup` first)")?;
    let moto = sandbox::MotoServer::start(&python).context("starting moto")?;
    println!(
        "bench deploy: stack {:?} ({}) into moto at {} (pid {}), {} runs",
        stack.name().as_str(),
        stack.region(),
        moto.endpoint(),
        moto.pid(),
        args.runs
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let mut samples: Vec<Vec<Sample>> = vec![Vec::new(); PHASES.len()];
    for run in 1..=args.runs {
        let sdk = sandbox::sdk_config(moto.endpoint(), stack.region());
        let cx = Context::builder(sdk, stack.name().clone())
            .user_tags(stack.tags().clone())
            .interceptor(moto.fresh_account())
            .build();
        let run_samples = rt.block_on(one_run(&stack, &cx))?;
        print!("run {run}:");
        for (phase, sample) in PHASES.iter().zip(&run_samples) {
            print!(
                "  {} {:.2}s {} calls ({} writes);",
                phase.name,
                sample.wall.as_secs_f64(),
                sample.calls.total(),
                sample.calls.writes()
            );
        }
        println!();
        if args.verbose && run == args.runs {
            for (phase, sample) in PHASES.iter().zip(&run_samples) {
                print!("\n{}: {}", phase.name, sample.calls);
            }
        }
        for (all, sample) in samples.iter_mut().zip(run_samples) {
            all.push(sample);
        }
    }
    print_table(&samples);
    println!(
        "(run 1 also pays moto's first use of each service in a fresh process: its first EC2 call loads moto's EC2 data, about 2 s on a 2-core machine)"
    );
    drop(moto);
    Ok(())
}

/// Deploy, no-change plan, second deploy, destroy; the calls of each phase alone.
async fn one_run(stack: &Stack, cx: &Context) -> anyhow::Result<Vec<Sample>> {
    let deploy = measure(cx, async {
        cli::plan_and_existing(stack, cx)
            .await
            .context("planning the deploy")?;
        Box::pin(stack.apply(cx)).await.context("deploying")?;
        Ok(())
    })
    .await?;
    let plan = measure(cx, async {
        let plan = stack.plan(cx).await.context("planning with no change")?;
        if !plan.is_empty() {
            println!("note: the plan after a deploy is not empty:\n{plan}");
        }
        Ok(())
    })
    .await?;
    let second = measure(cx, async {
        cli::plan_and_existing(stack, cx)
            .await
            .context("planning the second deploy")?;
        Box::pin(stack.apply(cx))
            .await
            .context("deploying a second time")?;
        Ok(())
    })
    .await?;
    let destroy = measure(cx, async {
        stack
            .plan_destroy(cx)
            .await
            .context("reading what to destroy")?;
        stack.destroy(cx, false).await.context("destroying")?;
        Ok(())
    })
    .await?;
    Ok(vec![deploy, plan, second, destroy])
}

async fn measure(
    cx: &Context,
    work: impl Future<Output = anyhow::Result<()>>,
) -> anyhow::Result<Sample> {
    let before = cx.calls().snapshot();
    let started = Instant::now();
    work.await?;
    let wall = started.elapsed();
    Ok(Sample {
        wall,
        calls: cx.calls().snapshot().since(&before),
    })
}

/// Min, median and max (the lower median for an even count).
fn spread<T: Copy + PartialOrd>(mut values: Vec<T>) -> Option<(T, T, T)> {
    values.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    let min = *values.first()?;
    let max = *values.last()?;
    let median = values[(values.len() - 1) / 2];
    Some((min, median, max))
}

fn print_table(samples: &[Vec<Sample>]) {
    println!(
        "\n{:<15} {:>22} {:>16} {:>16}  {:<20} Terraform (seeds)",
        "phase", "wall s (min/med/max)", "calls (m/m/m)", "writes (m/m/m)", "target",
    );
    for (phase, runs) in PHASES.iter().zip(samples) {
        let wall = spread(runs.iter().map(|s| s.wall.as_secs_f64()).collect());
        let calls = spread(runs.iter().map(|s| s.calls.total()).collect());
        let writes = spread(runs.iter().map(|s| s.calls.writes()).collect());
        let (Some(wall), Some(calls), Some(writes)) = (wall, calls, writes) else {
            continue;
        };
        println!(
            "{:<15} {:>22} {:>16} {:>16}  {:<20} {}",
            phase.name,
            format!("{:.2}/{:.2}/{:.2}", wall.0, wall.1, wall.2),
            format!("{}/{}/{}", calls.0, calls.1, calls.2),
            format!("{}/{}/{}", writes.0, writes.1, writes.2),
            phase.target,
            phase.terraform
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spread_is_min_median_max() {
        assert_eq!(spread(vec![3, 1, 2]), Some((1, 2, 3)));
        assert_eq!(spread(vec![4.0, 1.0]), Some((1.0, 1.0, 4.0)));
        assert_eq!(spread::<u64>(Vec::new()), None);
    }
}
