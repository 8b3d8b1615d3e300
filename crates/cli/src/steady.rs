//! Deploy's wait for a steady service: after the apply, the service's tasks RUNNING and its
//! targets healthy in every zone (`stack::steady`), within a deadline derived from the model
//! of AWS (a new task's longest start times the margin, on the stack's clock). A line when
//! what it sees changes, and every 10 s while it does not; a failure says why with what ECS
//! and the load balancer said.

use std::time::{Duration, Instant, SystemTime};

use anyhow::Context as _;
use infra::Context;
use sandbox::{Clock, LaunchLatency};
use stack::StackOutputs;
use stack::steady::{self, Steadiness};

use crate::target::{EXIT_NOT_STEADY, Exit};

/// A line at least this often while nothing changes.
const QUIET_LINE_EVERY: Duration = Duration::from_secs(10);

/// Waits until the service of `outputs` is steady, at most `timeout` (wall time) or the
/// derived deadline. `since`: when this deploy began (older stopped tasks are not its).
/// `address_zones`: see `stack::steady::read`.
pub(crate) async fn wait(
    cx: &Context,
    outputs: &StackOutputs,
    clock: Clock,
    launch: LaunchLatency,
    timeout: Option<Duration>,
    since: SystemTime,
    address_zones: &[(String, String)],
) -> anyhow::Result<()> {
    let elb: aws_sdk_elasticloadbalancingv2::Client =
        infra::client!(cx, aws_sdk_elasticloadbalancingv2);
    let health = steady::health_timing(&elb, &outputs.load_balancer.target_group_arn)
        .await
        .context("reading the target group's health check")?
        .unwrap_or_default();
    let start = steady::expected_start(health, launch);
    let derived = clock.wall(Duration::from_secs_f64(start.max * proof::model::MARGIN));
    let deadline = timeout.unwrap_or(derived);
    let on_clock = if clock.is_aws() {
        String::new()
    } else {
        format!(
            " ({:.1}-{:.1} s on the sandbox's {clock})",
            clock.wall_s(start.min),
            clock.wall_s(start.max)
        )
    };
    println!(
        "Waiting for a steady service: a new task serves {:.0}-{:.0} s after it is asked for on AWS{on_clock}; waiting at most {:.0} s",
        start.min,
        start.max,
        deadline.as_secs_f64()
    );
    // Polls about 12 times per model minute: every 5 s on AWS, faster on a faster clock.
    let poll = clock
        .wall(Duration::from_secs(5))
        .clamp(Duration::from_millis(250), Duration::from_secs(5));
    let zones = &outputs.network.zones;
    let t0 = Instant::now();
    let mut last: Option<(String, Instant)> = None;
    loop {
        let h = steady::read(cx, outputs, since, address_zones)
            .await
            .context("reading the service's tasks and targets")?;
        let summary = h.summary(zones);
        let elapsed = t0.elapsed();
        match h.judge(zones) {
            Steadiness::Steady => {
                println!(
                    "Service steady: {summary}, after {:.1} s",
                    elapsed.as_secs_f64()
                );
                return Ok(());
            }
            Steadiness::Failed(why) => {
                return Err(not_steady(format!(
                    "the service cannot become steady: {why}"
                )));
            }
            Steadiness::Waiting => {}
        }
        if elapsed >= deadline {
            return Err(not_steady(format!(
                "the service was not steady within {:.0} s: {summary}; {}",
                deadline.as_secs_f64(),
                h.why()
            )));
        }
        let quiet = last
            .as_ref()
            .is_some_and(|(s, at)| *s == summary && at.elapsed() < QUIET_LINE_EVERY);
        if !quiet {
            println!("  {summary} ({:.0} s)", elapsed.as_secs_f64());
            last = Some((summary, Instant::now()));
        }
        tokio::time::sleep(poll).await;
    }
}

fn not_steady(message: String) -> anyhow::Error {
    Exit {
        code: EXIT_NOT_STEADY,
        message: format!(
            "error: {message}\nThe stack is deployed (exit 5); fix the cause, then run deploy again, or `{} status`",
            crate::program()
        ),
    }
    .into()
}
