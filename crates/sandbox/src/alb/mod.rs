//! The sandbox ALB data plane: one [`Proxy`] per ALB listener, an HTTP/1.1 reverse proxy on
//! loopback that behaves like an Application Load Balancer listener forwarding to one target
//! group.
//!
//! What it does like an ALB:
//! - **routing**: round robin over the *healthy* targets of every zone (cross-zone load
//!   balancing is always on for ALBs). Targets start [`TargetState::Initial`] and receive traffic
//!   once `healthy_threshold` consecutive checks passed. **Fail open**: when no registered target
//!   is healthy, requests go to every registered, non-draining target whatever its state (ALB does
//!   the same when all targets are unhealthy). No registered target: `503`.
//! - **health checks**: per target, every `interval`, `GET path` on a fresh connection with
//!   `timeout`; the status must match `matcher` (`"200"`, `"200,202"`, `"200-299"`).
//!   `healthy_threshold` consecutive passes make a target healthy, `unhealthy_threshold`
//!   consecutive failures unhealthy. Reasons use the ELB codes (`Elb.InitialHealthChecking`,
//!   `Target.Timeout`, `Target.ResponseCodeMismatch`, `Target.FailedHealthChecks`,
//!   `Target.DeregistrationInProgress`).
//! - **errors**: connection refused/reset or a malformed answer from the target: `502`; no
//!   answer within the idle timeout, or no connection within [`CONNECT_TIMEOUT`]: `504`.
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
//! statistics are added under one short mutex per finished request; access log lines are
//! formatted by [`Proxy::take_stats`], off the request path.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::Duration;
//! use sandbox::alb::{HealthCheck, Proxy, ProxySettings, Target, TargetGroup};
//! let proxy = Proxy::bind(
//!     "127.0.0.1:0".parse()?,
//!     ProxySettings { idle_timeout: Duration::from_secs(60), name: "app/web/0123456789abcdef".into() },
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

mod health;
mod log;

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use bytes::Bytes;
use hdrhistogram::Histogram;
use http::header::{self, HeaderName, HeaderValue};
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{Either, Full};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;

/// How long the proxy tries to open a connection to a target (ALB: 10 s; not configurable).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
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

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Health bookkeeping of one target (control path only).
#[derive(Debug)]
struct Health {
    state: TargetState,
    reason: &'static str,
    passes: u32,
    failures: u32,
}

/// One registered (or draining) target and its connections.
#[derive(Debug)]
struct Member {
    id: String,
    addr: SocketAddr,
    zone: Arc<str>,
    reachable: AtomicBool,
    health: Mutex<Health>,
    pool: Mutex<Vec<SendRequest<Incoming>>>,
    in_flight: AtomicUsize,
    /// Woken when the target gets partitioned or its deregistration delay ends: requests
    /// waiting for its answer stall (partition) or are cut (deregistered).
    cut: tokio::sync::Notify,
    /// Set when the deregistration delay ended.
    gone: AtomicBool,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl Member {
    fn new(target: &Target) -> Arc<Member> {
        Arc::new(Member {
            id: target.id.clone(),
            addr: target.addr,
            zone: Arc::from(target.zone.as_str()),
            reachable: AtomicBool::new(target.reachable),
            health: Mutex::new(Health {
                state: TargetState::Initial,
                reason: "Elb.InitialHealthChecking",
                passes: 0,
                failures: 0,
            }),
            pool: Mutex::new(Vec::new()),
            in_flight: AtomicUsize::new(0),
            cut: tokio::sync::Notify::new(),
            gone: AtomicBool::new(false),
            task: Mutex::new(None),
        })
    }

    fn state(&self) -> TargetState {
        lock(&self.health).state
    }

    fn set_task(&self, task: JoinHandle<()>) {
        if let Some(old) = lock(&self.task).replace(task) {
            old.abort();
        }
    }

    fn stop_task(&self) {
        if let Some(task) = lock(&self.task).take() {
            task.abort();
        }
    }

    fn report(&self) -> TargetHealth {
        let health = lock(&self.health);
        TargetHealth {
            id: self.id.clone(),
            addr: self.addr,
            zone: self.zone.to_string(),
            state: health.state,
            reason: health.reason.to_owned(),
        }
    }
}

/// Registration and health-check settings (control path).
#[derive(Debug, Default)]
struct Control {
    registered: Vec<Arc<Member>>,
    draining: Vec<Arc<Member>>,
    health_check: Option<HealthCheck>,
    matcher: Vec<(u16, u16)>,
}

/// The targets requests may go to now.
#[derive(Debug, Default)]
struct Routing {
    targets: Vec<Arc<Member>>,
}

#[derive(Debug)]
struct ZoneAcc {
    stats: ZoneStats,
    times: Option<Histogram<u64>>,
}

#[derive(Debug, Default)]
struct StatsAcc {
    zones: HashMap<Arc<str>, ZoneAcc>,
    no_target: u64,
    per_target: HashMap<String, u64>,
    log: Vec<log::Entry>,
    dropped: u64,
}

#[derive(Debug)]
struct Shared {
    /// The runtime the proxy was bound on: health checks and drains run there, whoever calls
    /// [`Proxy::set_target_group`].
    runtime: tokio::runtime::Handle,
    name: String,
    elb: String,
    idle_timeout: Duration,
    forwarded_port: HeaderValue,
    routing: ArcSwap<Routing>,
    next: AtomicUsize,
    control: Mutex<Control>,
    stats: Mutex<StatsAcc>,
}

impl Shared {
    /// Recomputes the routable snapshot: healthy registered targets, else (fail open) all
    /// registered ones.
    fn reroute(&self, control: &Control) {
        let healthy: Vec<_> = control
            .registered
            .iter()
            .filter(|m| m.state() == TargetState::Healthy)
            .cloned()
            .collect();
        let targets = if healthy.is_empty() {
            control.registered.clone()
        } else {
            healthy
        };
        self.routing.store(Arc::new(Routing { targets }));
    }

    fn reroute_now(&self) {
        let control = lock(&self.control);
        self.reroute(&control);
    }
}

/// One ALB listener on loopback forwarding to one target group.
#[derive(Debug)]
pub struct Proxy {
    shared: Arc<Shared>,
    addr: SocketAddr,
    stop: tokio::sync::watch::Sender<bool>,
    accept: Option<JoinHandle<()>>,
}

impl Proxy {
    /// Listens on `addr` (port 0: any free port) with no target registered (every request is
    /// a `503` until [`Proxy::set_target_group`]). The listener, health checks and drains run
    /// on the Tokio runtime this is called on; the other methods may be called from anywhere.
    pub async fn bind(addr: SocketAddr, settings: ProxySettings) -> Result<Proxy, Error> {
        let bind_error = |source| Error::Bind {
            name: settings.name.clone(),
            addr,
            source,
        };
        let listener = TcpListener::bind(addr).await.map_err(bind_error)?;
        let local = listener.local_addr().map_err(bind_error)?;
        let elb = if settings.name.starts_with("app/") {
            settings.name.clone()
        } else {
            format!(
                "app/{}/{:016x}",
                settings.name,
                fnv1a(settings.name.as_bytes())
            )
        };
        let shared = Arc::new(Shared {
            runtime: tokio::runtime::Handle::current(),
            name: settings.name,
            elb,
            idle_timeout: settings.idle_timeout,
            forwarded_port: HeaderValue::from(local.port()),
            routing: ArcSwap::from_pointee(Routing::default()),
            next: AtomicUsize::new(0),
            control: Mutex::new(Control::default()),
            stats: Mutex::new(StatsAcc::default()),
        });
        let (stop, stop_rx) = tokio::sync::watch::channel(false);
        let accept = tokio::spawn(accept_loop(listener, shared.clone(), stop_rx));
        Ok(Proxy {
            shared,
            addr: local,
            stop,
            accept: Some(accept),
        })
    }

    /// The address the listener is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Replaces the health check, deregistration delay and targets. Targets that stay (same
    /// `id` and `addr`) keep their health state and connections (their `reachable` flag is
    /// updated); new ones start [`TargetState::Initial`]; removed ones drain (see module doc).
    pub fn set_target_group(&self, group: TargetGroup) {
        let mut control = lock(&self.shared.control);
        control.matcher = health::parse_matcher(&group.health_check.matcher);
        control.health_check = Some(group.health_check.clone());
        let mut old: HashMap<(String, SocketAddr), Arc<Member>> = control
            .registered
            .drain(..)
            .map(|m| ((m.id.clone(), m.addr), m))
            .collect();
        let mut registered = Vec::with_capacity(group.targets.len());
        for target in &group.targets {
            if registered.iter().any(|m: &Arc<Member>| m.id == target.id) {
                continue; // A duplicate id: the first one wins.
            }
            let member = match old.remove(&(target.id.clone(), target.addr)) {
                Some(member) => {
                    let was = member.reachable.swap(target.reachable, Ordering::AcqRel);
                    if was && !target.reachable {
                        // A partition also stalls open connections: forget them, and stall
                        // the requests waiting on them.
                        lock(&member.pool).clear();
                        member.cut.notify_waiters();
                    }
                    member
                }
                None => {
                    let member = Member::new(target);
                    member.set_task(self.shared.runtime.spawn(health::check_loop(
                        Arc::downgrade(&self.shared),
                        member.clone(),
                    )));
                    member
                }
            };
            registered.push(member);
        }
        control.registered = registered;
        for (_, member) in old {
            member.stop_task();
            {
                let mut health = lock(&member.health);
                health.state = TargetState::Draining;
                health.reason = "Target.DeregistrationInProgress";
            }
            control.draining.push(member.clone());
            let shared = Arc::downgrade(&self.shared);
            let delay = group.deregistration_delay;
            member
                .clone()
                .set_task(self.shared.runtime.spawn(drain(shared, member, delay)));
        }
        self.shared.reroute(&control);
    }

    /// Every registered target, then every draining one, with its state.
    pub fn health(&self) -> Vec<TargetHealth> {
        let control = lock(&self.shared.control);
        control
            .registered
            .iter()
            .chain(&control.draining)
            .map(|m| m.report())
            .collect()
    }

    /// The statistics since the previous call (or since [`Proxy::bind`]), resetting them.
    pub fn take_stats(&self) -> ProxyStats {
        let acc = std::mem::take(&mut *lock(&self.shared.stats));
        let zones = acc
            .zones
            .into_iter()
            .map(|(zone, acc)| {
                let mut stats = acc.stats;
                if let Some(h) = acc.times.filter(|h| !h.is_empty()) {
                    stats.response_time_p50 = Duration::from_micros(h.value_at_quantile(0.5));
                    stats.response_time_p99 = Duration::from_micros(h.value_at_quantile(0.99));
                    stats.response_time_max = Duration::from_micros(h.max());
                }
                (zone.to_string(), stats)
            })
            .collect();
        ProxyStats {
            zones,
            elb_5xx_no_target: acc.no_target,
            per_target: acc.per_target.into_iter().collect(),
            access_log: acc.log.iter().map(|e| e.line(&self.shared.elb)).collect(),
            access_log_dropped: acc.dropped,
        }
    }

    /// Stops accepting, lets in-flight requests finish for at most [`SHUTDOWN_DRAIN`], stops
    /// the health checks and closes every connection.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        if let Some(accept) = self.accept.take() {
            let _ = accept.await;
        }
        // Drop stops the health checks and drains.
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        if let Some(accept) = self.accept.take() {
            accept.abort();
        }
        let mut control = lock(&self.shared.control);
        let members: Vec<_> = control.registered.drain(..).collect();
        let draining: Vec<_> = control.draining.drain(..).collect();
        for member in members.into_iter().chain(draining) {
            member.stop_task();
            lock(&member.pool).clear();
        }
        self.shared.routing.store(Arc::new(Routing::default()));
    }
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Waits until `member` has nothing in flight or `delay` passed, then forgets it.
async fn drain(shared: std::sync::Weak<Shared>, member: Arc<Member>, delay: Duration) {
    let deadline = Instant::now() + delay;
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    while Instant::now() < deadline && member.in_flight.load(Ordering::Acquire) > 0 {
        tick.tick().await;
    }
    lock(&member.pool).clear();
    member.gone.store(true, Ordering::Release);
    member.cut.notify_waiters();
    if let Some(shared) = shared.upgrade() {
        lock(&shared.control)
            .draining
            .retain(|m| !Arc::ptr_eq(m, &member));
    }
}

/// Completes once the stop flag is set (or its sender is gone).
async fn stopped(stop: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

async fn accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(shared.idle_timeout)
        .keep_alive(true);
    let builder = Arc::new(builder);
    let mut connections = JoinSet::new();
    loop {
        while connections.try_join_next().is_some() {}
        let (stream, client) = tokio::select! {
            () = stopped(&mut stop) => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    eprintln!("sandbox ALB {}: accept failed: {err}", shared.name);
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let shared = shared.clone();
        let builder = builder.clone();
        let mut stop = stop.clone();
        connections.spawn(async move {
            let client_ip = HeaderValue::from_str(&client.ip().to_string())
                .unwrap_or_else(|_| HeaderValue::from_static("-"));
            let service = hyper::service::service_fn(move |request| {
                let shared = shared.clone();
                let client_ip = client_ip.clone();
                async move {
                    Ok::<_, Infallible>(forward(shared, request, client, client_ip).await)
                }
            });
            let conn = builder.serve_connection(TokioIo::new(stream), service);
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => return,
                () = stopped(&mut stop) => {}
            }
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        });
    }
    drop(listener);
    if tokio::time::timeout(SHUTDOWN_DRAIN, async {
        while connections.join_next().await.is_some() {}
    })
    .await
    .is_err()
    {
        connections.abort_all();
    }
}

/// The response body: a target's streamed body, or a load balancer page.
type ProxyBody = Either<TargetBody, Full<Bytes>>;

const HOP_BY_HOP: [HeaderName; 6] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TE,
    header::TRAILER,
    header::UPGRADE,
];

fn strip_hop_by_hop(headers: &mut HeaderMap) {
    if headers.contains_key(header::CONNECTION) {
        // Headers named by `Connection` are hop-by-hop too.
        let named: Vec<HeaderName> = headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
            .collect();
        for name in named {
            headers.remove(name);
        }
    }
    for name in &HOP_BY_HOP {
        headers.remove(name);
    }
}

/// What is known of a request when its outcome is recorded.
#[derive(Debug)]
struct Pending {
    shared: Arc<Shared>,
    member: Option<Arc<Member>>,
    client: SocketAddr,
    start: Instant,
    created: SystemTime,
    request_line: String,
    user_agent: String,
    received_bytes: u64,
    request_processing: Option<Duration>,
    target_processing: Option<Duration>,
    target_status: Option<u16>,
    elb_status: u16,
    header_bytes: u64,
    error_reason: Option<&'static str>,
}

impl Pending {
    fn record(self, body_bytes: u64) {
        let response_processing = self
            .target_processing
            .map(|_| Duration::from_micros(1).as_secs_f64());
        let entry = log::Entry {
            time: SystemTime::now(),
            client: self.client,
            target: self.member.as_ref().map(|m| m.addr),
            request_processing: self
                .target_status
                .and(self.request_processing)
                .map(|d| d.as_secs_f64()),
            target_processing: self
                .target_status
                .and(self.target_processing)
                .map(|d| d.as_secs_f64()),
            response_processing: self.target_status.and(response_processing),
            elb_status: self.elb_status,
            target_status: self.target_status,
            received_bytes: self.received_bytes,
            sent_bytes: self.header_bytes + body_bytes,
            request: self.request_line,
            user_agent: self.user_agent,
            request_creation_time: self.created,
            error_reason: self.error_reason,
        };
        let mut acc = lock(&self.shared.stats);
        if acc.log.len() < MAX_ACCESS_LOG_LINES {
            acc.log.push(entry);
        } else {
            acc.dropped += 1;
        }
        let Some(member) = &self.member else {
            acc.no_target += 1;
            return;
        };
        match acc.per_target.get_mut(&member.id) {
            Some(n) => *n += 1,
            None => {
                acc.per_target.insert(member.id.clone(), 1);
            }
        }
        let zone = acc
            .zones
            .entry(member.zone.clone())
            .or_insert_with(|| ZoneAcc {
                stats: ZoneStats::default(),
                times: Histogram::new_with_bounds(1, 3_600_000_000, 3).ok(),
            });
        let stats = &mut zone.stats;
        stats.requests += 1;
        match self.target_status {
            Some(status) => {
                match status {
                    200..=299 => stats.target_2xx += 1,
                    300..=399 => stats.target_3xx += 1,
                    400..=499 => stats.target_4xx += 1,
                    500..=599 => stats.target_5xx += 1,
                    _ => {}
                }
                if let Some(time) = self.target_processing {
                    stats.response_time_sum += time;
                    stats.response_time_count += 1;
                    if let Some(h) = &mut zone.times {
                        let _ = h.record((time.as_micros() as u64).max(1));
                    }
                }
            }
            None => {
                stats.elb_5xx += 1;
                match self.elb_status {
                    502 => stats.elb_502 += 1,
                    503 => stats.elb_503 += 1,
                    _ => stats.elb_504 += 1,
                }
            }
        }
    }
}

/// Decrements a target's in-flight count when dropped.
#[derive(Debug)]
struct InFlight(Arc<Member>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A target's response body, streamed; records the request and returns the connection to the
/// pool when it ends.
#[derive(Debug)]
struct TargetBody {
    inner: Incoming,
    conn: Option<SendRequest<Incoming>>,
    pending: Option<Pending>,
    sent: u64,
    _in_flight: InFlight,
}

impl TargetBody {
    fn finish(&mut self, complete: bool) {
        if let Some(conn) = self.conn.take()
            && complete
            && self._in_flight.0.reachable.load(Ordering::Relaxed)
        {
            let mut pool = lock(&self._in_flight.0.pool);
            if pool.len() < MAX_IDLE_PER_TARGET {
                pool.push(conn);
            }
        }
        if let Some(pending) = self.pending.take() {
            pending.record(self.sent);
        }
    }
}

impl Body for TargetBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.sent += data.len() as u64;
                }
                if this.inner.is_end_stream() {
                    this.finish(true);
                }
            }
            Poll::Ready(None) => this.finish(true),
            Poll::Ready(Some(Err(_))) => this.finish(false),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for TargetBody {
    fn drop(&mut self) {
        let complete = self.inner.is_end_stream();
        self.finish(complete);
    }
}

fn elb_page(status: StatusCode) -> Response<ProxyBody> {
    let body: &'static [u8] = match status.as_u16() {
        502 => b"<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n<center><h1>502 Bad Gateway</h1></center>\r\n</body>\r\n</html>\r\n",
        503 => b"<html>\r\n<head><title>503 Service Temporarily Unavailable</title></head>\r\n<body>\r\n<center><h1>503 Service Temporarily Unavailable</h1></center>\r\n</body>\r\n</html>\r\n",
        _ => b"<html>\r\n<head><title>504 Gateway Time-out</title></head>\r\n<body>\r\n<center><h1>504 Gateway Time-out</h1></center>\r\n</body>\r\n</html>\r\n",
    };
    let mut response = Response::new(Either::Right(Full::new(Bytes::from_static(body))));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::SERVER, HeaderValue::from_static("awselb/2.0"));
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html"));
    response
}

/// Why a request got no target response.
enum Failure {
    /// 502.
    Refused,
    /// 504.
    Timeout,
}

async fn forward(
    shared: Arc<Shared>,
    mut request: Request<Incoming>,
    client: SocketAddr,
    client_ip: HeaderValue,
) -> Response<ProxyBody> {
    let start = Instant::now();
    let created = SystemTime::now();
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(|h| h.rsplit_once(':').map_or(h, |(host, _)| host))
        .unwrap_or("-");
    let request_line = format!(
        "{} http://{}:{}{} {:?}",
        request.method(),
        host,
        shared.forwarded_port.to_str().unwrap_or("80"),
        request.uri().path_and_query().map_or("/", |p| p.as_str()),
        request.version(),
    );
    let user_agent = request
        .headers()
        .get(header::USER_AGENT)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("-")
        .to_owned();
    let received_bytes = request_line.len() as u64
        + request
            .headers()
            .iter()
            .map(|(k, v)| (k.as_str().len() + v.len() + 4) as u64)
            .sum::<u64>()
        + request.body().size_hint().exact().unwrap_or(0);
    let member = {
        let routing = shared.routing.load();
        if routing.targets.is_empty() {
            None
        } else {
            let i = shared.next.fetch_add(1, Ordering::Relaxed) % routing.targets.len();
            Some(routing.targets[i].clone())
        }
    };
    let mut pending = Pending {
        shared: shared.clone(),
        member: member.clone(),
        client,
        start,
        created,
        request_line,
        user_agent,
        received_bytes,
        request_processing: None,
        target_processing: None,
        target_status: None,
        elb_status: 503,
        header_bytes: 0,
        error_reason: None,
    };
    let Some(member) = member else {
        let response = elb_page(StatusCode::SERVICE_UNAVAILABLE);
        pending.header_bytes = 120;
        let len = response.body().size_hint().exact().unwrap_or(0);
        pending.record(len);
        return response;
    };
    member.in_flight.fetch_add(1, Ordering::AcqRel);
    let in_flight = InFlight(member.clone());

    // Headers the target sees.
    let headers = request.headers_mut();
    strip_hop_by_hop(headers);
    let xff = match headers.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
        Some(existing) => HeaderValue::from_str(&format!(
            "{existing}, {}",
            client_ip.to_str().unwrap_or("-")
        ))
        .unwrap_or(client_ip),
        None => client_ip,
    };
    headers.insert(HeaderName::from_static("x-forwarded-for"), xff);
    headers.insert(
        HeaderName::from_static("x-forwarded-proto"),
        HeaderValue::from_static("http"),
    );
    headers.insert(
        HeaderName::from_static("x-forwarded-port"),
        shared.forwarded_port.clone(),
    );

    match send(&shared, &member, request, &mut pending).await {
        Ok((mut response, conn)) => {
            pending.target_processing = pending
                .request_processing
                .map(|sent| start.elapsed().saturating_sub(sent));
            pending.target_status = Some(response.status().as_u16());
            pending.elb_status = response.status().as_u16();
            strip_hop_by_hop(response.headers_mut());
            pending.header_bytes = 17
                + response
                    .headers()
                    .iter()
                    .map(|(k, v)| (k.as_str().len() + v.len() + 4) as u64)
                    .sum::<u64>();
            let (parts, body) = response.into_parts();
            let body = TargetBody {
                inner: body,
                conn: Some(conn),
                pending: Some(pending),
                sent: 0,
                _in_flight: in_flight,
            };
            Response::from_parts(parts, Either::Left(body))
        }
        Err(failure) => {
            drop(in_flight);
            let status = match failure {
                Failure::Refused => StatusCode::BAD_GATEWAY,
                Failure::Timeout => StatusCode::GATEWAY_TIMEOUT,
            };
            pending.elb_status = status.as_u16();
            let response = elb_page(status);
            pending.header_bytes = 120;
            let len = response.body().size_hint().exact().unwrap_or(0);
            pending.record(len);
            response
        }
    }
}

/// Sends `request` to `member` on a pooled or new connection. Sets `request_processing` (time
/// until the request could be sent).
async fn send(
    shared: &Shared,
    member: &Member,
    request: Request<Incoming>,
    pending: &mut Pending,
) -> Result<(Response<Incoming>, SendRequest<Incoming>), Failure> {
    let idle = shared.idle_timeout;
    let mut request = request;
    for attempt in 0..2 {
        if !member.reachable.load(Ordering::Relaxed) {
            // Partitioned: SYNs (or data on an open connection) go unanswered.
            tokio::time::sleep(CONNECT_TIMEOUT.min(idle)).await;
            pending.error_reason = Some("TargetConnectionError");
            return Err(Failure::Timeout);
        }
        let mut conn = match pooled(member) {
            Some(conn) => conn,
            None => match connect(member.addr).await {
                Ok(conn) => conn,
                Err(failure) => {
                    pending.error_reason = Some("TargetConnectionError");
                    return Err(failure);
                }
            },
        };
        if conn.ready().await.is_err() {
            continue;
        }
        pending.request_processing = Some(pending.start.elapsed());
        let sent_at = Instant::now();
        let cut = member.cut.notified();
        tokio::pin!(cut);
        cut.as_mut().enable();
        let sent = tokio::select! {
            sent = tokio::time::timeout(idle, conn.try_send_request(request)) => sent,
            () = cut => {
                drop(conn);
                if member.gone.load(Ordering::Acquire) {
                    // The deregistration delay ended: ALB closes the connection.
                    pending.error_reason = Some("TargetConnectionError");
                    return Err(Failure::Refused);
                }
                // Partitioned mid-request: the answer never arrives; wait out the idle timeout.
                tokio::time::sleep_until(sent_at + idle).await;
                pending.error_reason = Some("TargetIdleTimeout");
                return Err(Failure::Timeout);
            }
        };
        match sent {
            Ok(Ok(response)) => return Ok((response, conn)),
            Ok(Err(mut err)) => match err.take_message() {
                // The connection closed before the request went out: retry once on a new one.
                Some(unsent) if attempt == 0 => {
                    request = unsent;
                    lock(&member.pool).clear();
                }
                _ => {
                    pending.error_reason = Some("TargetResponseError");
                    return Err(Failure::Refused);
                }
            },
            Err(_) => {
                pending.error_reason = Some("TargetIdleTimeout");
                return Err(Failure::Timeout);
            }
        }
    }
    pending.error_reason = Some("TargetConnectionError");
    Err(Failure::Refused)
}

/// An idle pooled connection that is still open.
fn pooled(member: &Member) -> Option<SendRequest<Incoming>> {
    let mut pool = lock(&member.pool);
    while let Some(conn) = pool.pop() {
        if !conn.is_closed() {
            return Some(conn);
        }
    }
    None
}

async fn connect(addr: SocketAddr) -> Result<SendRequest<Incoming>, Failure> {
    let stream = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(_)) => return Err(Failure::Refused),
        Err(_) => return Err(Failure::Timeout),
    };
    let _ = stream.set_nodelay(true);
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|_| Failure::Refused)?;
    tokio::spawn(conn);
    Ok(sender)
}
