//! The sandbox ALB data plane: one [`Proxy`] per ALB listener, an HTTP/1.1 reverse proxy on
//! loopback that behaves like an Application Load Balancer listener forwarding to one target
//! group. It knows nothing of AWS (no SDK crate): the `sandbox` crate reads the load balancer
//! from moto and drives it (re-exported there as `sandbox::alb`), and the proxy benchmark
//! (`examples/bench.rs`, run by `cargo xtask bench sandbox`) builds it in release cheaply.
//!
//! What it does like an ALB:
//! - **nodes**: one listener per zone ([`Proxy::bind_nodes`]), as an ALB has one node (one
//!   address in its DNS answer) in each enabled zone. A node cut off by its subnet's network
//!   ACL ([`Proxy::set_node_reachable`]) drops SYNs, so clients' connects time out, and its open
//!   connections stop answering (see the `node` module).
//! - **routing**: round robin over the *healthy* targets of every zone (cross-zone load
//!   balancing is always on for ALBs), except the zones a zonal shift moved traffic away from
//!   ([`Proxy::set_shifted_zones`]). Targets start [`TargetState::Initial`]; a new target's first
//!   check comes at a point within one interval that its id and the seed fix, and one pass makes
//!   it healthy (`aws_model::aws::elb::NEW_TARGET_PASSES`); `healthy_threshold` passes in a row
//!   apply only to an unhealthy target recovering. **Fail open**: when no registered target is
//!   healthy, requests go to every registered, non-draining target whatever its state (ALB does
//!   the same when all targets are unhealthy). No registered target: `503`.
//! - **health checks**: per target, every `interval`, `GET path` on a fresh connection with
//!   `timeout`; the status must match `matcher` (`"200"`, `"200,202"`, `"200-299"`);
//!   `unhealthy_threshold` consecutive failures make a target unhealthy. Reasons use the ELB codes
//!   (`Elb.InitialHealthChecking`, `Target.Timeout`, `Target.ResponseCodeMismatch`,
//!   `Target.FailedHealthChecks`, `Target.DeregistrationInProgress`).
//! - **errors**: connection refused/reset or a malformed answer from the target: `502`; no
//!   answer within the idle timeout, or no connection within the connect timeout (10 s on AWS,
//!   [`CONNECT_TIMEOUT`]): `504`.
//! - **partitions**: a target with `reachable: false` models a subnet whose network ACL denies
//!   everything: the proxy never connects to it; a request routed to it waits for the connect
//!   timeout (or, on an already open keep-alive connection, the idle timeout), whichever of the
//!   two is shorter, then gets a `504`, and its health checks time out instead of failing fast.
//!   A request already waiting for that target's answer when the partition starts gets no
//!   answer either: `504` when the idle timeout since it was sent runs out.
//! - **deregistration**: targets dropped by [`Proxy::set_target_group`] get no new requests and
//!   show [`TargetState::Draining`] until their in-flight requests finished or the
//!   deregistration delay passed, whichever comes first (ALB completes deregistration early
//!   when nothing is in flight); then they disappear from [`Proxy::health`]. Requests still
//!   waiting for the target's answer when the delay ends are cut (`502`), as ALB closes the
//!   connections. (A response body already streaming is not cut.)
//! - **headers**: `X-Forwarded-For` (appended), `X-Forwarded-Proto: http`,
//!   `X-Forwarded-Port`; hop-by-hop headers are not forwarded.
//! - **metrics and logs**: [`Proxy::take_stats`] returns per-zone counters, target response
//!   times and one access log line per request in the ALB format.
//!
//! The hot path takes no lock held across awaits: the routable targets are an `ArcSwap`
//! snapshot rebuilt only when health or registration changes; round robin is one atomic; each
//! target keeps a bounded pool of keep-alive connections (a short `Mutex<Vec<_>>` push/pop);
//! statistics are added under one short mutex per finished request; the access log line is
//! formatted (by hand, ~1 µs) when the request finishes, so that [`Proxy::take_stats`] only
//! swaps buffers: formatting a second's worth of lines there stalled the runtime for
//! milliseconds every second.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::Duration;
//! use stackproof_sandbox_alb::{HealthCheck, Proxy, ProxySettings, Target, TargetGroup};
//! let proxy = Proxy::bind(
//!     "127.0.0.1:0".parse()?,
//!     ProxySettings::new("app/web/0123456789abcdef"),
//! )
//! .await?;
//! proxy.set_target_group(TargetGroup {
//!     health_check: HealthCheck::default(),
//!     deregistration_delay: Duration::from_secs(60),
//!     targets: vec![Target {
//!         id: "task-1".into(),
//!         addr: "127.0.1.10:8080".parse()?,
//!         zone: "eu-west-1a".into(),
//!         reachable: true,
//!     }],
//! });
//! println!("ALB on http://{}", proxy.local_addr());
//! proxy.shutdown().await;
//! # Ok(()) }
//! ```

mod forward;
mod health;
mod log;
mod node;
mod proxy;
mod stats;
mod target;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

pub use health::first_check_delay;
pub use proxy::Proxy;

/// How long an ALB tries to open a connection to a target: [`ProxySettings::connect_timeout`]'s
/// default (AWS's 10 s, `aws_model::aws::elb::CONNECT_TIMEOUT`).
pub const CONNECT_TIMEOUT: Duration = aws_model::aws::elb::CONNECT_TIMEOUT;
/// Idle keep-alive connections kept per target.
pub const MAX_IDLE_PER_TARGET: usize = 256;
/// Access log lines kept between two [`Proxy::take_stats`] calls; more are counted and dropped.
pub const MAX_ACCESS_LOG_LINES: usize = 1_000_000;
/// How long [`Proxy::shutdown`] lets in-flight requests finish.
pub const SHUTDOWN_DRAIN: Duration = Duration::from_secs(5);

/// Errors of the ALB proxy.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The listener could not bind its address.
    #[error("ALB listener {name}: cannot listen on {addr}")]
    Bind {
        /// The load balancer name from [`ProxySettings`].
        name: String,
        /// The address asked for.
        addr: SocketAddr,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// How a listener behaves.
#[derive(Debug, Clone)]
pub struct ProxySettings {
    /// The load balancer's idle timeout (ALB default 60 s): the longest wait for a target's
    /// response (then `504`) and for a client's next request on a keep-alive connection.
    pub idle_timeout: Duration,
    /// The load balancer as written in access logs: its ARN suffix `app/{name}/{id}`; a bare
    /// name is written as `app/{name}/{16 hex digits derived from the name}`.
    pub name: String,
    /// How long it tries to connect to a target before a `504`. Default [`CONNECT_TIMEOUT`].
    pub connect_timeout: Duration,
    /// Fixes each new target's first health check within the interval (the same seed and
    /// target id, the same point). Default 0.
    pub seed: u64,
}

impl ProxySettings {
    /// AWS's defaults (idle timeout 60 s, connect timeout 10 s) for the load balancer `name`.
    pub fn new(name: impl Into<String>) -> Self {
        ProxySettings {
            idle_timeout: Duration::from_secs(60),
            name: name.into(),
            connect_timeout: CONNECT_TIMEOUT,
            seed: 0,
        }
    }
}

/// One node of the load balancer: the zone it is in and the address it listens on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// Its zone.
    pub zone: String,
    /// Where it listens (port 0: any free port; every node of a proxy gets the same port).
    pub addr: SocketAddr,
}

/// A target group: its health check, deregistration delay and registered targets.
#[derive(Debug, Clone)]
pub struct TargetGroup {
    /// How targets are checked.
    pub health_check: HealthCheck,
    /// How long a deregistered target may finish in-flight requests (ALB default 300 s).
    pub deregistration_delay: Duration,
    /// The registered targets; their `id`s are unique.
    pub targets: Vec<Target>,
}

/// A target group's health check.
#[derive(Debug, Clone)]
pub struct HealthCheck {
    /// The path requested, e.g. `/health`.
    pub path: String,
    /// Time between two checks of one target.
    pub interval: Duration,
    /// How long one check may take.
    pub timeout: Duration,
    /// Consecutive passes that make a target healthy.
    pub healthy_threshold: u32,
    /// Consecutive failures that make a target unhealthy.
    pub unhealthy_threshold: u32,
    /// Passing status codes: `"200"`, `"200,202"`, `"200-299"`; unparsable parts are ignored
    /// and an empty result means `200`.
    pub matcher: String,
}

impl Default for HealthCheck {
    /// The stack's defaults: `/health`, 10 s, 5 s, 2, 2, `200`.
    fn default() -> Self {
        HealthCheck {
            path: "/health".into(),
            interval: Duration::from_secs(10),
            timeout: Duration::from_secs(5),
            healthy_threshold: 2,
            unhealthy_threshold: 2,
            matcher: "200".into(),
        }
    }
}

/// One registered target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Its identity (the sandbox uses the task ARN); a target keeps its health state across
    /// [`Proxy::set_target_group`] calls while its `id` and `addr` stay the same.
    pub id: String,
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its availability zone.
    pub zone: String,
    /// `false` models a network partition: connections to it hang (see the module doc).
    pub reachable: bool,
}

/// A target's health state, as `DescribeTargetHealth` names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TargetState {
    /// Registered; not yet `healthy_threshold` passing checks.
    Initial,
    /// Passing its checks; receives traffic.
    Healthy,
    /// Failing its checks; receives traffic only when the group fails open.
    Unhealthy,
    /// Deregistered; finishing in-flight requests.
    Draining,
    /// Registered but not in use (kept for parity with ELB; this proxy never reports it).
    Unused,
}

/// One target's health, as [`Proxy::health`] reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetHealth {
    /// The target's id.
    pub id: String,
    /// Its address.
    pub addr: SocketAddr,
    /// Its zone.
    pub zone: String,
    /// Its state.
    pub state: TargetState,
    /// The ELB reason code of a non-healthy state, e.g. `Target.Timeout`; empty when healthy.
    pub reason: String,
}

/// Counters of one zone since the previous [`Proxy::take_stats`]: the requests routed to
/// targets of that zone.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ZoneStats {
    /// Requests routed to a target of the zone (whatever their outcome).
    pub requests: u64,
    /// Target answers 2xx.
    pub target_2xx: u64,
    /// Target answers 3xx.
    pub target_3xx: u64,
    /// Target answers 4xx.
    pub target_4xx: u64,
    /// Target answers 5xx.
    pub target_5xx: u64,
    /// Load-balancer-generated 5xx (`elb_502 + elb_503 + elb_504`).
    pub elb_5xx: u64,
    /// `502`: the target refused, reset or answered garbage.
    pub elb_502: u64,
    /// `503` (never per zone today; see [`ProxyStats::elb_5xx_no_target`]).
    pub elb_503: u64,
    /// `504`: the target did not connect or answer in time.
    pub elb_504: u64,
    /// Sum of target response times (request sent to target -> response headers received).
    pub response_time_sum: Duration,
    /// How many target response times were measured.
    pub response_time_count: u64,
    /// Median target response time (zero when none).
    pub response_time_p50: Duration,
    /// 99th percentile target response time (zero when none).
    pub response_time_p99: Duration,
    /// Largest target response time (zero when none).
    pub response_time_max: Duration,
}

/// What happened since the previous [`Proxy::take_stats`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProxyStats {
    /// Per availability zone of the target chosen.
    pub zones: BTreeMap<String, ZoneStats>,
    /// `503`s answered because no target was registered (they belong to no zone).
    pub elb_5xx_no_target: u64,
    /// Requests per target id.
    pub per_target: BTreeMap<String, u64>,
    /// One ALB access log line per finished request, oldest first.
    pub access_log: Vec<String>,
    /// Access log lines dropped beyond [`MAX_ACCESS_LOG_LINES`].
    pub access_log_dropped: u64,
}

impl ProxyStats {
    /// All requests answered: the zones' requests plus the no-target `503`s.
    pub fn total_requests(&self) -> u64 {
        self.zones.values().map(|z| z.requests).sum::<u64>() + self.elb_5xx_no_target
    }
}

pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    /// Architecture invariant: the proxy builds without the AWS SDK (a release build of the
    /// SDK takes 20 minutes; this crate's takes one). `aws-model` is AWS's numbers, no SDK.
    #[test]
    fn no_aws_crate_among_the_dependencies() {
        let manifest = include_str!("../Cargo.toml");
        let aws: Vec<&str> = manifest
            .lines()
            .map(str::trim_start)
            .filter(|l| l.starts_with("aws") && !l.starts_with("aws-model"))
            .collect();
        assert!(aws.is_empty(), "AWS crates in sandbox-alb: {aws:?}");
    }
}
