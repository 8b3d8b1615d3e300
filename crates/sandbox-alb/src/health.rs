//! Target health checks: one task per registered target, like an ALB node's checker.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, header};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::target::{Member, Shared};
use crate::{HealthCheck, TargetState, lock};

/// Parses a matcher (`"200"`, `"200,202"`, `"200-299"`) into inclusive ranges; unparsable
/// parts are ignored; nothing valid means `200`.
pub(crate) fn parse_matcher(matcher: &str) -> Vec<(u16, u16)> {
    let ranges: Vec<(u16, u16)> = matcher
        .split(',')
        .filter_map(|part| {
            let part = part.trim();
            let (low, high) = part.split_once('-').unwrap_or((part, part));
            let (low, high) = (low.trim().parse().ok()?, high.trim().parse().ok()?);
            (low <= high).then_some((low, high))
        })
        .collect();
    if ranges.is_empty() {
        vec![(200, 200)]
    } else {
        ranges
    }
}

/// Why one check failed, as an ELB reason code.
type Outcome = Result<(), &'static str>;

/// When a new target's first check comes after its registration: a point within one interval,
/// fixed by the seed and the target's id (an ALB checks on its own schedule; with AWS's
/// defaults a new target takes traffic 0-30 s after registration).
pub fn first_check_delay(seed: u64, id: &str, interval: Duration) -> Duration {
    interval.mul_f64(aws_model::Rng::keyed(seed, id))
}

/// Checks `member` every interval (start to start) until aborted or the proxy is gone; the first check after
/// [`first_check_delay`].
pub(crate) async fn check_loop(shared: Weak<Shared>, member: Arc<Member>) {
    let first = shared.upgrade().and_then(|s| {
        let interval = lock(&s.control).health_check.as_ref().map(|c| c.interval)?;
        Some(first_check_delay(s.seed, &member.id, interval))
    });
    if let Some(delay) = first {
        tokio::time::sleep(delay).await;
    }
    loop {
        let Some((check, matcher)) = shared.upgrade().and_then(|s| {
            let control = lock(&s.control);
            control
                .health_check
                .clone()
                .map(|c| (c, control.matcher.clone()))
        }) else {
            return;
        };
        // Checks start on a fixed cadence, one interval apart whatever each took (ELB requires
        // the timeout to be shorter than the interval): a check that times out does not push
        // the next one back by its timeout.
        let started = tokio::time::Instant::now();
        let outcome = check_once(&member, &check, &matcher).await;
        let changed = {
            let mut health = lock(&member.health);
            let before = health.state;
            match outcome {
                Ok(()) => {
                    health.passes = health.passes.saturating_add(1);
                    health.failures = 0;
                    // A new target needs one pass; the threshold is for a target recovering.
                    let needed = if health.state == TargetState::Initial {
                        aws_model::aws::elb::NEW_TARGET_PASSES
                    } else {
                        check.healthy_threshold
                    };
                    if health.state != TargetState::Healthy && health.passes >= needed.max(1) {
                        health.state = TargetState::Healthy;
                        health.reason = "";
                    }
                }
                Err(reason) => {
                    health.failures = health.failures.saturating_add(1);
                    health.passes = 0;
                    if health.state == TargetState::Unhealthy {
                        health.reason = reason;
                    } else if health.failures >= check.unhealthy_threshold.max(1) {
                        health.state = TargetState::Unhealthy;
                        health.reason = reason;
                    }
                }
            }
            health.state != before
        };
        if changed {
            match shared.upgrade() {
                Some(shared) => shared.reroute_now(),
                None => return,
            }
        }
        tokio::time::sleep_until(started + check.interval.max(Duration::from_millis(1))).await;
    }
}

async fn check_once(member: &Member, check: &HealthCheck, matcher: &[(u16, u16)]) -> Outcome {
    if !member.reachable.load(Ordering::Relaxed) {
        // Partitioned: the connection attempt hangs until the check times out.
        tokio::time::sleep(check.timeout).await;
        return Err("Target.Timeout");
    }
    match tokio::time::timeout(check.timeout, probe(member.addr, &check.path)).await {
        Err(_) => Err("Target.Timeout"),
        Ok(Err(reason)) => Err(reason),
        Ok(Ok(status)) => {
            if matcher
                .iter()
                .any(|&(low, high)| (low..=high).contains(&status))
            {
                Ok(())
            } else {
                Err("Target.ResponseCodeMismatch")
            }
        }
    }
}

/// `GET path` on a new connection; the status code.
async fn probe(addr: SocketAddr, path: &str) -> Result<u16, &'static str> {
    let stream = TcpStream::connect(addr)
        .await
        .map_err(|_| "Target.FailedHealthChecks")?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|_| "Target.FailedHealthChecks")?;
    let conn = tokio::spawn(conn);
    let request = Request::get(path)
        .header(header::HOST, addr.to_string())
        .header(header::USER_AGENT, "ELB-HealthChecker/2.0")
        .header(header::CONNECTION, "close")
        .body(Empty::<Bytes>::new())
        .map_err(|_| "Target.InvalidState")?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|_| "Target.FailedHealthChecks")?;
    let status = response.status().as_u16();
    let _ = response.into_body().collect().await;
    conn.abort();
    Ok(status)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matchers() {
        assert_eq!(parse_matcher("200"), vec![(200, 200)]);
        assert_eq!(parse_matcher("200,202"), vec![(200, 200), (202, 202)]);
        assert_eq!(parse_matcher(" 200-299 "), vec![(200, 299)]);
        assert_eq!(parse_matcher("x,299-200"), vec![(200, 200)]);
        assert_eq!(parse_matcher(""), vec![(200, 200)]);
    }
}
