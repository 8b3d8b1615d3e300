//! A minimal private stand-in for the `alb` module (the sandbox ALB proxy another engineer
//! writes), with the same names, so the data plane compiles and runs before it lands.
//! Forwards each request over a fresh connection to a round-robin healthy target, health-checks
//! targets, drains removed ones for the deregistration delay, answers 502/503/504 like an ALB.

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::Error;

/// How the proxy listens.
#[derive(Debug, Clone)]
pub(crate) struct ProxySettings {
    /// The ALB idle timeout, also the target response timeout (504 after it).
    pub(crate) idle_timeout: Duration,
    /// The load balancer's name (for access logs).
    pub(crate) name: String,
}

/// A target group as the proxy sees it.
#[derive(Debug, Clone)]
pub(crate) struct TargetGroup {
    /// The health check.
    pub(crate) health_check: HealthCheck,
    /// How long removed targets drain.
    pub(crate) deregistration_delay: Duration,
    /// The registered targets.
    pub(crate) targets: Vec<Target>,
}

/// A target group's health check.
#[derive(Debug, Clone)]
pub(crate) struct HealthCheck {
    /// The path.
    pub(crate) path: String,
    /// Time between checks.
    pub(crate) interval: Duration,
    /// Time a check may take.
    pub(crate) timeout: Duration,
    /// Successes to become healthy.
    pub(crate) healthy_threshold: u32,
    /// Failures to become unhealthy.
    pub(crate) unhealthy_threshold: u32,
    /// Status codes counted as success, e.g. `200` or `200-299`.
    pub(crate) matcher: String,
}

/// One registered target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Target {
    /// Its id (the task ARN).
    pub(crate) id: String,
    /// Where it listens.
    pub(crate) addr: SocketAddr,
    /// Its zone.
    pub(crate) zone: String,
    /// Whether the network lets connections reach it.
    pub(crate) reachable: bool,
}

/// A target's health state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TargetState {
    /// Registered, not yet checked enough.
    Initial,
    /// Passing.
    Healthy,
    /// Failing.
    Unhealthy,
    /// Deregistered, draining.
    Draining,
    /// Not in use.
    #[allow(dead_code)]
    Unused,
}

/// A target's health.
#[derive(Debug, Clone)]
#[allow(dead_code)] // Same fields as the real module.
pub(crate) struct TargetHealth {
    /// Its id.
    pub(crate) id: String,
    /// Its address.
    pub(crate) addr: SocketAddr,
    /// Its zone.
    pub(crate) zone: String,
    /// Its state.
    pub(crate) state: TargetState,
    /// Why.
    pub(crate) reason: String,
}

/// Counters of one zone since the last `take_stats`.
#[derive(Debug, Clone, Default)]
pub(crate) struct ZoneStats {
    /// Requests forwarded to targets in the zone.
    pub(crate) requests: u64,
    /// Target 2xx answers.
    pub(crate) target_2xx: u64,
    /// Target 4xx answers.
    pub(crate) target_4xx: u64,
    /// Target 5xx answers.
    pub(crate) target_5xx: u64,
    /// 5xx the proxy made itself (502, 504) for targets in the zone.
    pub(crate) elb_5xx: u64,
    /// Sum of target response times.
    pub(crate) response_time_sum: Duration,
    /// Answers counted in the sum.
    pub(crate) response_time_count: u64,
}

/// What happened since the last `take_stats`.
#[derive(Debug, Clone, Default)]
pub(crate) struct ProxyStats {
    /// Per zone.
    pub(crate) zones: BTreeMap<String, ZoneStats>,
    /// 503s with no healthy target (no zone).
    pub(crate) elb_5xx_no_target: u64,
    /// Requests per target id.
    pub(crate) per_target: BTreeMap<String, u64>,
    /// Access log lines.
    pub(crate) access_log: Vec<String>,
}

#[derive(Debug)]
struct Member {
    target: Target,
    state: TargetState,
    reason: String,
    streak_ok: u32,
    streak_fail: u32,
    draining_until: Option<Instant>,
}

#[derive(Debug, Default)]
struct Shared {
    members: Vec<Member>,
    health: Option<HealthCheck>,
    delay: Duration,
    stats: ProxyStats,
}

/// The stand-in proxy.
#[derive(Debug)]
pub(crate) struct Proxy {
    addr: SocketAddr,
    shared: Arc<Mutex<Shared>>,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

fn lock(m: &Mutex<Shared>) -> std::sync::MutexGuard<'_, Shared> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Proxy {
    /// Listens on `addr`.
    pub(crate) async fn bind(addr: SocketAddr, settings: ProxySettings) -> Result<Proxy, Error> {
        let listener = TcpListener::bind(addr).await.map_err(|source| Error::Io {
            operation: "bind",
            resource: addr.to_string(),
            source,
        })?;
        let addr = listener.local_addr().map_err(|source| Error::Io {
            operation: "local_addr",
            resource: addr.to_string(),
            source,
        })?;
        let shared = Arc::new(Mutex::new(Shared::default()));
        let (stop, stopped) = watch::channel(false);
        let rr = Arc::new(AtomicUsize::new(0));
        let accept = tokio::spawn(accept_loop(
            listener,
            shared.clone(),
            settings,
            rr,
            stopped.clone(),
        ));
        let checks = tokio::spawn(health_loop(shared.clone(), stopped));
        Ok(Proxy {
            addr,
            shared,
            stop,
            tasks: vec![accept, checks],
        })
    }

    /// The address it listens on.
    pub(crate) fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Replaces the target group: new targets start `Initial`, removed ones drain.
    pub(crate) fn set_target_group(&self, group: TargetGroup) {
        let mut s = lock(&self.shared);
        let now = Instant::now();
        for m in &mut s.members {
            match group.targets.iter().find(|t| t.id == m.target.id) {
                Some(t) => {
                    m.target = t.clone();
                    if m.state == TargetState::Draining {
                        m.state = TargetState::Initial;
                        m.draining_until = None;
                    }
                }
                None if m.state != TargetState::Draining => {
                    m.state = TargetState::Draining;
                    m.reason = "Target.DeregistrationInProgress".to_owned();
                    m.draining_until = Some(now + group.deregistration_delay);
                }
                None => {}
            }
        }
        for t in &group.targets {
            if !s.members.iter().any(|m| m.target.id == t.id) {
                s.members.push(Member {
                    target: t.clone(),
                    state: TargetState::Initial,
                    reason: "Elb.RegistrationInProgress".to_owned(),
                    streak_ok: 0,
                    streak_fail: 0,
                    draining_until: None,
                });
            }
        }
        s.members
            .retain(|m| m.draining_until.is_none_or(|until| until > now));
        s.health = Some(group.health_check);
        s.delay = group.deregistration_delay;
    }

    /// Every target's health.
    pub(crate) fn health(&self) -> Vec<TargetHealth> {
        lock(&self.shared)
            .members
            .iter()
            .map(|m| TargetHealth {
                id: m.target.id.clone(),
                addr: m.target.addr,
                zone: m.target.zone.clone(),
                state: m.state,
                reason: m.reason.clone(),
            })
            .collect()
    }

    /// The counters since the last call.
    pub(crate) fn take_stats(&self) -> ProxyStats {
        std::mem::take(&mut lock(&self.shared).stats)
    }

    /// Stops listening and checking.
    pub(crate) async fn shutdown(self) {
        let _ = self.stop.send(true);
        for t in self.tasks {
            t.abort();
            let _ = t.await;
        }
    }
}

async fn accept_loop(
    listener: TcpListener,
    shared: Arc<Mutex<Shared>>,
    settings: ProxySettings,
    rr: Arc<AtomicUsize>,
    mut stopped: watch::Receiver<bool>,
) {
    loop {
        let conn = tokio::select! {
            c = listener.accept() => c,
            _ = stopped.changed() => return,
        };
        let Ok((stream, client)) = conn else {
            continue;
        };
        let shared = shared.clone();
        let settings = settings.clone();
        let rr = rr.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let shared = shared.clone();
                let settings = settings.clone();
                let rr = rr.clone();
                async move { Ok::<_, Infallible>(forward(req, client, &shared, &settings, &rr).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn pick(shared: &Mutex<Shared>, rr: &AtomicUsize) -> Option<Target> {
    let s = lock(shared);
    let healthy: Vec<&Member> = s
        .members
        .iter()
        .filter(|m| m.state == TargetState::Healthy)
        .collect();
    if healthy.is_empty() {
        return None;
    }
    let i = rr.fetch_add(1, Ordering::Relaxed) % healthy.len();
    Some(healthy[i].target.clone())
}

fn simple(status: StatusCode) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(format!("{status}\n"))));
    *r.status_mut() = status;
    r
}

async fn forward(
    req: Request<Incoming>,
    client: SocketAddr,
    shared: &Mutex<Shared>,
    settings: &ProxySettings,
    rr: &AtomicUsize,
) -> Response<Full<Bytes>> {
    let started = Instant::now();
    let line = format!("{} {}", req.method(), req.uri());
    let Some(target) = pick(shared, rr) else {
        let mut s = lock(shared);
        s.stats.elb_5xx_no_target += 1;
        let log = log_line(&settings.name, client, None, 503, started, &line);
        s.stats.access_log.push(log);
        return simple(StatusCode::SERVICE_UNAVAILABLE);
    };
    let result = tokio::time::timeout(settings.idle_timeout, send(req, &target)).await;
    let elapsed = started.elapsed();
    let (response, code, from_target) = match result {
        Ok(Ok(resp)) => {
            let code = resp.status().as_u16();
            (resp, code, true)
        }
        Ok(Err(())) => (simple(StatusCode::BAD_GATEWAY), 502, false),
        Err(_) => (simple(StatusCode::GATEWAY_TIMEOUT), 504, false),
    };
    let mut s = lock(shared);
    let z = s.stats.zones.entry(target.zone.clone()).or_default();
    z.requests += 1;
    if from_target {
        match code {
            200..=299 => z.target_2xx += 1,
            400..=499 => z.target_4xx += 1,
            500..=599 => z.target_5xx += 1,
            _ => {}
        }
        z.response_time_sum += elapsed;
        z.response_time_count += 1;
    } else {
        z.elb_5xx += 1;
    }
    *s.stats.per_target.entry(target.id.clone()).or_default() += 1;
    let log = log_line(&settings.name, client, Some(&target), code, started, &line);
    s.stats.access_log.push(log);
    response
}

fn log_line(
    name: &str,
    client: SocketAddr,
    target: Option<&Target>,
    code: u16,
    started: Instant,
    line: &str,
) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0);
    let t = target.map_or("-".to_owned(), |t| t.addr.to_string());
    format!(
        "http {now:.6} {name} {client} {t} 0.000 {:.6} 0.000 {code} {code} 0 0 \"{line} HTTP/1.1\"",
        started.elapsed().as_secs_f64()
    )
}

async fn send(req: Request<Incoming>, target: &Target) -> Result<Response<Full<Bytes>>, ()> {
    if !target.reachable {
        // A partitioned network: the SYN is dropped, the connection hangs.
        std::future::pending::<()>().await;
    }
    let stream = TcpStream::connect(target.addr).await.map_err(|_| ())?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|_| ())?;
    tokio::spawn(conn);
    let (parts, body) = req.into_parts();
    let body = body.collect().await.map_err(|_| ())?.to_bytes();
    let mut out = Request::from_parts(parts, Full::new(body));
    out.headers_mut().insert(
        http::header::HOST,
        http::HeaderValue::from_str(&target.addr.to_string()).map_err(|_| ())?,
    );
    let resp = sender.send_request(out).await.map_err(|_| ())?;
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.map_err(|_| ())?.to_bytes();
    Ok(Response::from_parts(parts, Full::new(body)))
}

async fn check(target: &Target, health: &HealthCheck) -> Result<(), String> {
    let probe = async {
        if !target.reachable {
            std::future::pending::<()>().await;
        }
        let stream = TcpStream::connect(target.addr)
            .await
            .map_err(|_| "Target.FailedHealthChecks".to_owned())?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        let req = Request::get(health.path.as_str())
            .header(http::header::HOST, target.addr.to_string())
            .body(Full::new(Bytes::new()))
            .map_err(|e| e.to_string())?;
        let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
        let code = resp.status().as_u16();
        if matches(&health.matcher, code) {
            Ok(())
        } else {
            Err("Target.ResponseCodeMismatch".to_owned())
        }
    };
    tokio::time::timeout(health.timeout, probe)
        .await
        .map_err(|_| "Target.Timeout".to_owned())?
}

fn matches(matcher: &str, code: u16) -> bool {
    matcher.split(',').any(|part| match part.split_once('-') {
        Some((a, b)) => {
            a.trim().parse().is_ok_and(|a: u16| code >= a)
                && b.trim().parse().is_ok_and(|b: u16| code <= b)
        }
        None => part.trim().parse() == Ok(code),
    })
}

async fn health_loop(shared: Arc<Mutex<Shared>>, mut stopped: watch::Receiver<bool>) {
    let mut next: HashMap<String, Instant> = HashMap::new();
    loop {
        let current = lock(&shared).health.clone();
        let Some(health) = current else {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(100)) => continue,
                _ = stopped.changed() => return,
            }
        };
        let due = {
            let s = lock(&shared);
            let now = Instant::now();
            let due: Vec<Target> = s
                .members
                .iter()
                .filter(|m| m.state != TargetState::Draining)
                .filter(|m| next.get(&m.target.id).is_none_or(|t| *t <= now))
                .map(|m| m.target.clone())
                .collect::<Vec<Target>>();
            due
        };
        for t in &due {
            next.insert(t.id.clone(), Instant::now() + health.interval);
            let shared = shared.clone();
            let health = health.clone();
            let t = t.clone();
            tokio::spawn(async move {
                let result = check(&t, &health).await;
                let mut s = lock(&shared);
                if let Some(m) = s.members.iter_mut().find(|m| m.target.id == t.id) {
                    if m.state == TargetState::Draining {
                        return;
                    }
                    match result {
                        Ok(()) => {
                            m.streak_ok += 1;
                            m.streak_fail = 0;
                            if m.streak_ok >= health.healthy_threshold {
                                m.state = TargetState::Healthy;
                                m.reason.clear();
                            }
                        }
                        Err(reason) => {
                            m.streak_fail += 1;
                            m.streak_ok = 0;
                            if m.streak_fail >= health.unhealthy_threshold {
                                m.state = TargetState::Unhealthy;
                                m.reason = reason;
                            }
                        }
                    }
                }
            });
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(50)) => {}
            _ = stopped.changed() => return,
        }
    }
}
