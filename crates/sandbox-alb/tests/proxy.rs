//! The sandbox ALB proxy against small in-test HTTP servers on 127.0.0.1: routing, health
//! checks, failures, partitions, draining, statistics and access logs. Also a benchmark that
//! runs only with `STACKPROOF_BENCH=1`.

#![allow(clippy::unwrap_used)] // Test helpers outside #[test] functions fail loudly.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use stackproof_sandbox_alb::{
    HealthCheck, Proxy, ProxySettings, Target, TargetGroup, TargetHealth, TargetState,
};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

/// A sample-app-like target: `/` names it, `/health` answers `health` (settable), `/slow?ms=N`
/// sleeps, `/hang` never answers. Counts requests by kind.
struct Server {
    addr: SocketAddr,
    id: String,
    zone: String,
    health: Arc<AtomicU16>,
    served: Arc<AtomicU64>,
    checks: Arc<AtomicU64>,
    task: Option<JoinHandle<()>>,
}

impl Server {
    async fn start(id: &str, zone: &str) -> Server {
        Self::start_on(
            "127.0.0.1:0".parse().unwrap(),
            id,
            zone,
            Default::default(),
            Default::default(),
            Default::default(),
        )
        .await
    }

    async fn start_on(
        addr: SocketAddr,
        id: &str,
        zone: &str,
        health: Arc<AtomicU16>,
        served: Arc<AtomicU64>,
        checks: Arc<AtomicU64>,
    ) -> Server {
        if health.load(Ordering::SeqCst) == 0 {
            health.store(200, Ordering::SeqCst);
        }
        let listener = TcpListener::bind(addr).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (h, s, c, name) = (
            health.clone(),
            served.clone(),
            checks.clone(),
            id.to_owned(),
        );
        let task = tokio::spawn(async move {
            let mut conns = JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let (h, s, c, name) = (h.clone(), s.clone(), c.clone(), name.clone());
                conns.spawn(async move {
                    let service =
                        hyper::service::service_fn(move |req: http::Request<Incoming>| {
                            let (h, s, c, name) = (h.clone(), s.clone(), c.clone(), name.clone());
                            async move {
                                let mut status = 200;
                                let path = req.uri().path().to_owned();
                                let body = match path.as_str() {
                                    "/health" => {
                                        c.fetch_add(1, Ordering::SeqCst);
                                        status = h.load(Ordering::SeqCst);
                                        "ok".to_owned()
                                    }
                                    "/slow" => {
                                        s.fetch_add(1, Ordering::SeqCst);
                                        let ms: u64 = req
                                            .uri()
                                            .query()
                                            .and_then(|q| q.strip_prefix("ms="))
                                            .and_then(|v| v.parse().ok())
                                            .unwrap_or(0);
                                        tokio::time::sleep(Duration::from_millis(ms)).await;
                                        name.clone()
                                    }
                                    "/hang" => {
                                        s.fetch_add(1, Ordering::SeqCst);
                                        std::future::pending::<()>().await;
                                        String::new()
                                    }
                                    "/big" => {
                                        s.fetch_add(1, Ordering::SeqCst);
                                        "x".repeat(1 << 20)
                                    }
                                    _ => {
                                        s.fetch_add(1, Ordering::SeqCst);
                                        name.clone()
                                    }
                                };
                                let xff = req
                                    .headers()
                                    .get("x-forwarded-for")
                                    .cloned()
                                    .unwrap_or(http::HeaderValue::from_static("-"));
                                let proto = req
                                    .headers()
                                    .get("x-forwarded-proto")
                                    .cloned()
                                    .unwrap_or(http::HeaderValue::from_static("-"));
                                let port = req
                                    .headers()
                                    .get("x-forwarded-port")
                                    .cloned()
                                    .unwrap_or(http::HeaderValue::from_static("-"));
                                Ok::<_, std::convert::Infallible>(
                                    http::Response::builder()
                                        .status(status)
                                        .header("x-task", name.as_str())
                                        .header("x-seen-xff", xff)
                                        .header("x-seen-proto", proto)
                                        .header("x-seen-port", port)
                                        .body(Full::new(Bytes::from(body)))
                                        .unwrap(),
                                )
                            }
                        });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Server {
            addr,
            id: id.to_owned(),
            zone: zone.to_owned(),
            health,
            served,
            checks,
            task: Some(task),
        }
    }

    fn target(&self) -> Target {
        Target {
            id: self.id.clone(),
            addr: self.addr,
            zone: self.zone.clone(),
            reachable: true,
        }
    }

    /// Stops listening and closes every connection (connections are then refused).
    async fn kill(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
    }

    /// Listens again on the same address.
    async fn restart(&mut self) {
        let again = Server::start_on(
            self.addr,
            &self.id,
            &self.zone,
            self.health.clone(),
            self.served.clone(),
            self.checks.clone(),
        )
        .await;
        *self = again;
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

fn check(interval_ms: u64, timeout_ms: u64) -> HealthCheck {
    HealthCheck {
        path: "/health".into(),
        interval: Duration::from_millis(interval_ms),
        timeout: Duration::from_millis(timeout_ms),
        healthy_threshold: 2,
        unhealthy_threshold: 2,
        matcher: "200-299".into(),
    }
}

fn group(targets: Vec<Target>) -> TargetGroup {
    TargetGroup {
        health_check: check(50, 100),
        deregistration_delay: Duration::from_secs(5),
        targets,
    }
}

async fn proxy(idle_ms: u64) -> Proxy {
    Proxy::bind(
        "127.0.0.1:0".parse().unwrap(),
        ProxySettings {
            idle_timeout: Duration::from_millis(idle_ms),
            ..ProxySettings::new("app/test-alb/0123456789abcdef")
        },
    )
    .await
    .unwrap()
}

/// A response: status, the target's `x-task` ("" for ELB pages), headers.
struct Answer {
    status: u16,
    task: String,
    headers: http::HeaderMap,
    body_len: usize,
}

/// One request on a fresh connection.
async fn get(addr: SocketAddr, path: &str) -> Answer {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let request = http::Request::get(path)
        .header("host", "test.example")
        .header("user-agent", "alb-test/1")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    let (parts, body) = response.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    Answer {
        status: parts.status.as_u16(),
        task: parts
            .headers
            .get("x-task")
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default(),
        headers: parts.headers,
        body_len: body.len(),
    }
}

/// Polls `f` every 10 ms until it holds; panics after `limit`. Returns the time it took.
async fn eventually(limit: Duration, what: &str, mut f: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < limit, "not within {limit:?}: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    start.elapsed()
}

fn state_of(health: &[TargetHealth], id: &str) -> Option<(TargetState, String)> {
    health
        .iter()
        .find(|h| h.id == id)
        .map(|h| (h.state, h.reason.clone()))
}

async fn all_healthy(proxy: &Proxy, n: usize) {
    eventually(Duration::from_secs(5), "all targets healthy", || {
        let h = proxy.health();
        h.len() == n && h.iter().all(|t| t.state == TargetState::Healthy)
    })
    .await;
}

/// Splits an access log line into fields, keeping quoted fields whole (as Athena's regex does).
fn fields(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut chars = line.chars().peekable();
    while let Some(&c) = chars.peek() {
        if c == ' ' {
            chars.next();
        } else if c == '"' {
            chars.next();
            let mut field = String::new();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => field.extend(chars.next()),
                    '"' => break,
                    c => field.push(c),
                }
            }
            out.push(field);
        } else {
            let mut field = String::new();
            while let Some(&c) = chars.peek() {
                if c == ' ' {
                    break;
                }
                field.push(c);
                chars.next();
            }
            out.push(field);
        }
    }
    out
}

#[tokio::test]
async fn round_robin_across_zones_with_forwarded_headers_stats_and_access_logs() {
    let servers = [
        Server::start("a1", "zone-a").await,
        Server::start("a2", "zone-a").await,
        Server::start("b1", "zone-b").await,
        Server::start("b2", "zone-b").await,
    ];
    let proxy = proxy(2_000).await;
    proxy.set_target_group(group(servers.iter().map(Server::target).collect()));
    all_healthy(&proxy, 4).await;
    let _ = proxy.take_stats();

    let mut per_task: BTreeMap<String, u32> = BTreeMap::new();
    for _ in 0..40 {
        let answer = get(proxy.local_addr(), "/").await;
        assert_eq!(answer.status, 200);
        assert_eq!(answer.headers["x-seen-xff"], "127.0.0.1");
        assert_eq!(answer.headers["x-seen-proto"], "http");
        assert_eq!(
            answer.headers["x-seen-port"],
            proxy.local_addr().port().to_string().as_str()
        );
        *per_task.entry(answer.task).or_default() += 1;
    }
    assert_eq!(
        per_task,
        BTreeMap::from([
            ("a1".into(), 10),
            ("a2".into(), 10),
            ("b1".into(), 10),
            ("b2".into(), 10)
        ])
    );
    // A big body streams through whole.
    assert_eq!(get(proxy.local_addr(), "/big").await.body_len, 1 << 20);

    let stats = proxy.take_stats();
    assert_eq!(stats.total_requests(), 41);
    let (a, b) = (&stats.zones["zone-a"], &stats.zones["zone-b"]);
    assert_eq!(a.requests + b.requests, 41);
    assert_eq!(a.target_2xx + b.target_2xx, 41);
    assert_eq!((a.elb_5xx, b.elb_5xx, stats.elb_5xx_no_target), (0, 0, 0));
    assert_eq!(a.response_time_count + b.response_time_count, 41);
    assert!(a.response_time_p99 >= a.response_time_p50);
    assert_eq!(stats.per_target.values().sum::<u64>(), 41);
    assert_eq!(stats.access_log.len(), 41);
    let addrs: Vec<String> = servers.iter().map(|s| s.addr.to_string()).collect();
    for line in &stats.access_log {
        let f = fields(line);
        assert!(f.len() >= 29, "{line}");
        assert_eq!(f[0], "http");
        assert!(f[1].ends_with('Z') && f[1].contains('T'), "{line}");
        assert_eq!(f[2], "app/test-alb/0123456789abcdef");
        assert!(f[3].starts_with("127.0.0.1:"));
        assert!(addrs.contains(&f[4]), "{line}");
        for t in &f[5..8] {
            assert!(t.parse::<f64>().unwrap() >= 0.0, "{line}");
        }
        assert_eq!((f[8].as_str(), f[9].as_str()), ("200", "200"));
        assert!(f[11].parse::<u64>().unwrap() > 0);
        assert!(
            f[12].starts_with("GET http://test.example:") && f[12].ends_with(" HTTP/1.1"),
            "{line}"
        );
        assert_eq!(f[13], "alb-test/1");
    }
    // The next call starts from zero.
    assert_eq!(proxy.take_stats().total_requests(), 0);
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_dead_target_is_marked_unhealthy_gets_no_traffic_and_recovers() {
    let mut dead = Server::start("dead", "zone-a").await;
    let live = Server::start("live", "zone-b").await;
    let proxy = proxy(2_000).await;
    proxy.set_target_group(group(vec![dead.target(), live.target()]));
    all_healthy(&proxy, 2).await;

    dead.kill().await;
    // interval 50 ms x threshold 2 (+ scheduling slack).
    eventually(Duration::from_secs(2), "dead target unhealthy", || {
        state_of(&proxy.health(), "dead").map(|s| s.0) == Some(TargetState::Unhealthy)
    })
    .await;
    assert_eq!(
        state_of(&proxy.health(), "dead").unwrap().1,
        "Target.FailedHealthChecks"
    );
    let _ = proxy.take_stats();
    for _ in 0..20 {
        let answer = get(proxy.local_addr(), "/").await;
        assert_eq!((answer.status, answer.task.as_str()), (200, "live"));
    }
    assert_eq!(
        proxy
            .take_stats()
            .zones
            .get("zone-a")
            .map_or(0, |z| z.requests),
        0
    );

    dead.restart().await;
    eventually(Duration::from_secs(2), "restarted target healthy", || {
        state_of(&proxy.health(), "dead").map(|s| s.0) == Some(TargetState::Healthy)
    })
    .await;
    let mut tasks = Vec::new();
    for _ in 0..4 {
        tasks.push(get(proxy.local_addr(), "/").await.task);
    }
    assert_eq!(
        tasks.iter().filter(|t| *t == "dead").count(),
        2,
        "{tasks:?}"
    );
    proxy.shutdown().await;
}

#[tokio::test]
async fn answers_503_502_504_like_an_alb() {
    let proxy = proxy(300).await;
    // No target registered.
    let answer = get(proxy.local_addr(), "/").await;
    assert_eq!(answer.status, 503);
    assert_eq!(answer.headers["server"], "awselb/2.0");
    let stats = proxy.take_stats();
    assert_eq!((stats.elb_5xx_no_target, stats.total_requests()), (1, 1));
    let line = fields(&stats.access_log[0]);
    assert_eq!(
        (
            line[4].as_str(),
            line[5].as_str(),
            line[8].as_str(),
            line[9].as_str()
        ),
        ("-", "-1", "503", "-")
    );

    // A registered target that refuses connections (fail open sends to it anyway): 502.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let refused = Target {
        id: "refused".into(),
        addr: closed,
        zone: "zone-a".into(),
        reachable: true,
    };
    proxy.set_target_group(group(vec![refused]));
    let answer = get(proxy.local_addr(), "/").await;
    assert_eq!(answer.status, 502);

    // A target that accepts but never answers: 504 after the idle timeout.
    let slow = Server::start("slow", "zone-b").await;
    proxy.set_target_group(group(vec![slow.target()]));
    all_healthy(&proxy, 1).await;
    let start = Instant::now();
    let answer = get(proxy.local_addr(), "/hang").await;
    assert_eq!(answer.status, 504);
    assert!(start.elapsed() >= Duration::from_millis(300));

    let stats = proxy.take_stats();
    assert_eq!(stats.zones["zone-a"].elb_502, 1);
    assert_eq!(stats.zones["zone-b"].elb_504, 1);
    assert_eq!(stats.zones["zone-b"].elb_5xx, 1);
    assert_eq!(stats.total_requests(), 2);
    proxy.shutdown().await;
}

#[tokio::test]
async fn all_unhealthy_fails_open_and_the_matcher_is_honoured() {
    let a = Server::start("a", "zone-a").await;
    let b = Server::start("b", "zone-b").await;
    a.health.store(500, Ordering::SeqCst);
    b.health.store(204, Ordering::SeqCst); // Matches "200-299".
    let proxy = proxy(2_000).await;
    proxy.set_target_group(group(vec![a.target(), b.target()]));
    eventually(Duration::from_secs(3), "a unhealthy, b healthy", || {
        let h = proxy.health();
        state_of(&h, "a").map(|s| s.0) == Some(TargetState::Unhealthy)
            && state_of(&h, "b").map(|s| s.0) == Some(TargetState::Healthy)
    })
    .await;
    assert_eq!(
        state_of(&proxy.health(), "a").unwrap().1,
        "Target.ResponseCodeMismatch"
    );
    for _ in 0..6 {
        assert_eq!(get(proxy.local_addr(), "/").await.task, "b");
    }
    b.health.store(500, Ordering::SeqCst);
    eventually(Duration::from_secs(3), "both unhealthy", || {
        proxy
            .health()
            .iter()
            .all(|h| h.state == TargetState::Unhealthy)
    })
    .await;
    let mut seen = Vec::new();
    for _ in 0..6 {
        let answer = get(proxy.local_addr(), "/").await;
        assert_eq!(answer.status, 200);
        seen.push(answer.task);
    }
    assert!(
        seen.contains(&"a".to_owned()) && seen.contains(&"b".to_owned()),
        "{seen:?}"
    );
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_partitioned_target_times_out_its_checks_and_gets_no_traffic_until_healed() {
    let a = Server::start("a", "zone-a").await;
    let b = Server::start("b", "zone-b").await;
    let proxy = proxy(2_000).await;
    let mut cut = b.target();
    cut.reachable = false;
    let mut tg = group(vec![a.target(), b.target()]);
    tg.health_check = check(50, 200);
    proxy.set_target_group(tg.clone());
    all_healthy(&proxy, 2).await;
    // Warm a keep-alive connection to b.
    for _ in 0..2 {
        get(proxy.local_addr(), "/").await;
    }

    tg.targets = vec![a.target(), cut.clone()];
    proxy.set_target_group(tg.clone());
    let checks_before = b.checks.load(Ordering::SeqCst);
    let served_before = b.served.load(Ordering::SeqCst);
    let took = eventually(
        Duration::from_secs(3),
        "partitioned target unhealthy",
        || state_of(&proxy.health(), "b").map(|s| s.0) == Some(TargetState::Unhealthy),
    )
    .await;
    // Checks hang until their timeout instead of failing fast: two of them take >= 2 x 200 ms.
    assert!(took >= Duration::from_millis(350), "{took:?}");
    assert_eq!(state_of(&proxy.health(), "b").unwrap().1, "Target.Timeout");
    for _ in 0..10 {
        assert_eq!(get(proxy.local_addr(), "/").await.task, "a");
    }
    // Nothing reached b: not the checks, not requests.
    assert!(b.checks.load(Ordering::SeqCst) <= checks_before + 1);
    assert_eq!(b.served.load(Ordering::SeqCst), served_before);

    tg.targets = vec![a.target(), b.target()];
    proxy.set_target_group(tg);
    all_healthy(&proxy, 2).await;
    let tasks: Vec<String> = [
        get(proxy.local_addr(), "/").await.task,
        get(proxy.local_addr(), "/").await.task,
    ]
    .into();
    assert!(tasks.contains(&"b".to_owned()), "{tasks:?}");
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_request_to_a_partitioned_target_hangs_then_504s() {
    let a = Server::start("a", "zone-a").await;
    let proxy = proxy(300).await;
    let mut target = a.target();
    target.reachable = false;
    // Only target, never healthy: the group fails open to it.
    proxy.set_target_group(group(vec![target]));
    let start = Instant::now();
    let answer = get(proxy.local_addr(), "/").await;
    assert_eq!(answer.status, 504);
    assert!(start.elapsed() >= Duration::from_millis(300));
    assert_eq!(a.served.load(Ordering::SeqCst), 0);
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_removed_target_drains_its_in_flight_requests() {
    let old = Server::start("old", "zone-a").await;
    let new = Server::start("new", "zone-b").await;
    let proxy = Arc::new(proxy(5_000).await);
    proxy.set_target_group(group(vec![old.target()]));
    all_healthy(&proxy, 1).await;

    let addr = proxy.local_addr();
    let slow = tokio::spawn(async move { get(addr, "/slow?ms=600").await });
    eventually(Duration::from_secs(2), "slow request reached old", || {
        old.served.load(Ordering::SeqCst) == 1
    })
    .await;
    proxy.set_target_group(group(vec![new.target()]));
    assert_eq!(
        state_of(&proxy.health(), "old"),
        Some((
            TargetState::Draining,
            "Target.DeregistrationInProgress".into()
        ))
    );
    all_healthy_or_draining(&proxy).await;
    let answer = get(proxy.local_addr(), "/").await;
    assert_eq!(answer.task, "new");
    let answer = slow.await.unwrap();
    assert_eq!((answer.status, answer.task.as_str()), (200, "old"));
    // Deregistration completes once nothing is in flight, before the 5 s delay.
    eventually(Duration::from_secs(3), "old target gone", || {
        state_of(&proxy.health(), "old").is_none()
    })
    .await;
    assert_eq!(old.served.load(Ordering::SeqCst), 1);
}

async fn all_healthy_or_draining(proxy: &Proxy) {
    eventually(Duration::from_secs(3), "new target healthy", || {
        state_of(&proxy.health(), "new").map(|s| s.0) == Some(TargetState::Healthy)
    })
    .await;
}

/// CPU seconds used so far by the calling thread (Linux), from `/proc/thread-self/stat`.
fn thread_cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap_or_default();
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let f: Vec<&str> = after.split_whitespace().collect();
    // Fields after the command: state is 0, utime is 11, stime is 12 (clock ticks, 100/s).
    let ticks: u64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0)
        + f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0);
    ticks as f64 / 100.0
}

/// A runtime on its own thread (one core at most).
fn single_thread_runtime(name: &str) -> tokio::runtime::Handle {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            tx.send(rt.handle().clone()).unwrap();
            rt.block_on(std::future::pending::<()>());
        })
        .unwrap();
    rx.recv().unwrap()
}

async fn keep_alive(addr: SocketAddr) -> hyper::client::conn::http1::SendRequest<Empty<Bytes>> {
    let stream = TcpStream::connect(addr).await.unwrap();
    stream.set_nodelay(true).unwrap();
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    sender
}

async fn one(sender: &mut hyper::client::conn::http1::SendRequest<Empty<Bytes>>) -> bool {
    if sender.ready().await.is_err() {
        return false;
    }
    let request = http::Request::get("/")
        .header("host", "bench")
        .body(Empty::new())
        .unwrap();
    match sender.send_request(request).await {
        Ok(response) => {
            let ok = response.status() == 200;
            ok && response.into_body().collect().await.is_ok()
        }
        Err(_) => false,
    }
}

/// Open loop at `rate` requests/s for `secs` over `conns` keep-alive connections spread over
/// `addrs`; latency from the intended send time (coordinated-omission corrected), in µs.
async fn open_loop(
    addrs: &[SocketAddr],
    rate: u64,
    secs: u64,
    conns: usize,
) -> (hdrhistogram::Histogram<u64>, u64) {
    let per_conn = Duration::from_nanos(1_000_000_000 * conns as u64 / rate);
    let total = rate * secs / conns as u64;
    let mut set = JoinSet::new();
    let start = tokio::time::Instant::now() + Duration::from_millis(50);
    for c in 0..conns {
        let addr = addrs[c % addrs.len()];
        set.spawn(async move {
            let mut sender = keep_alive(addr).await;
            let mut h = hdrhistogram::Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
            let mut errors = 0;
            let offset = per_conn * c as u32 / conns as u32;
            for i in 0..total {
                let intended = start + offset + per_conn * i as u32;
                tokio::time::sleep_until(intended).await;
                if !one(&mut sender).await {
                    errors += 1;
                    sender = keep_alive(addr).await;
                }
                h.record(intended.elapsed().as_micros().max(1) as u64)
                    .unwrap();
            }
            (h, errors)
        });
    }
    let mut all = hdrhistogram::Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
    let mut errors = 0;
    while let Some(r) = set.join_next().await {
        let (h, e) = r.unwrap();
        all.add(h).unwrap();
        errors += e;
    }
    (all, errors)
}

/// Closed loop: `conns` connections send back to back for `secs`; completed requests.
async fn closed_loop(addr: SocketAddr, secs: u64, conns: usize) -> (u64, u64) {
    let end = tokio::time::Instant::now() + Duration::from_secs(secs);
    let mut set = JoinSet::new();
    for _ in 0..conns {
        set.spawn(async move {
            let mut sender = keep_alive(addr).await;
            let (mut ok, mut errors) = (0u64, 0u64);
            while tokio::time::Instant::now() < end {
                if one(&mut sender).await {
                    ok += 1;
                } else {
                    errors += 1;
                    sender = keep_alive(addr).await;
                }
            }
            (ok, errors)
        });
    }
    let (mut ok, mut errors) = (0, 0);
    while let Some(r) = set.join_next().await {
        let (o, e) = r.unwrap();
        ok += o;
        errors += e;
    }
    (ok, errors)
}

fn ms(h: &hdrhistogram::Histogram<u64>, q: f64) -> f64 {
    h.value_at_quantile(q) as f64 / 1000.0
}

/// `STACKPROOF_BENCH=1 cargo test --workspace -- --nocapture bench_proxy`: p99 through the
/// proxy vs direct at 2,000 requests/s to two targets, and requests per proxy CPU-second.
/// Proxy, targets and load generator each run on their own single-threaded runtime.
#[test]
fn bench_proxy_overhead_and_throughput() {
    if std::env::var("STACKPROOF_BENCH").as_deref() != Ok("1") {
        eprintln!("skipped: set STACKPROOF_BENCH=1 to run the ALB benchmark");
        return;
    }
    let rate: u64 = std::env::var("BENCH_RATE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000);
    let secs: u64 = std::env::var("BENCH_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let targets_rt = single_thread_runtime("bench-targets");
    let proxy_rt = single_thread_runtime("bench-proxy");
    let load = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let servers = targets_rt.block_on(async {
        tokio::spawn(async {
            [
                Server::start("t1", "zone-a").await,
                Server::start("t2", "zone-b").await,
            ]
        })
        .await
        .unwrap()
    });
    let direct = [servers[0].addr, servers[1].addr];
    let targets: Vec<Target> = servers.iter().map(Server::target).collect();
    let proxy = Arc::new(
        proxy_rt
            .block_on(async move {
                tokio::spawn(async move {
                    let p = proxy(60_000).await;
                    let mut tg = group(targets);
                    tg.health_check = check(1_000, 500);
                    p.set_target_group(tg);
                    p
                })
                .await
            })
            .unwrap(),
    );
    load.block_on(async {
        eventually(Duration::from_secs(10), "targets healthy", || {
            proxy
                .health()
                .iter()
                .all(|h| h.state == TargetState::Healthy)
        })
        .await;
    });
    let via = [proxy.local_addr()];
    println!(
        "ALB bench (test profile: crate unoptimised, deps opt-level 1), {rate} rps for {secs} s, 16 connections:"
    );
    let cpu = |rt: &tokio::runtime::Handle| {
        rt.block_on(async { tokio::spawn(async { thread_cpu_seconds() }).await.unwrap() })
    };
    for round in 1..=2 {
        for (label, addrs) in [("direct", &direct[..]), ("proxy ", &via[..])] {
            let (cpu0, wall0) = (cpu(&proxy_rt), Instant::now());
            let (h, errors) = load.block_on(open_loop(addrs, rate, secs, 16));
            let busy = (cpu(&proxy_rt) - cpu0) / wall0.elapsed().as_secs_f64();
            println!(
                "  round {round} {label}: n={} errors={errors} p50={:.3} ms p90={:.3} ms p99={:.3} ms p99.9={:.3} ms max={:.3} ms; proxy thread busy {:.0}%",
                h.len(),
                ms(&h, 0.5),
                ms(&h, 0.9),
                ms(&h, 0.99),
                ms(&h, 0.999),
                h.max() as f64 / 1000.0,
                busy * 100.0
            );
        }
    }
    let _ = proxy.take_stats();
    let (cpu0, wall0) = (cpu(&proxy_rt), Instant::now());
    let (ok, errors) = load.block_on(closed_loop(proxy.local_addr(), secs, 64));
    let (cpu1, wall) = (cpu(&proxy_rt), wall0.elapsed().as_secs_f64());
    let proxy_cpu = cpu1 - cpu0;
    println!(
        "  max through proxy (64 connections, closed loop): {ok} ok, {errors} errors in {wall:.1} s = {:.0} rps; proxy thread CPU {proxy_cpu:.2} s ({:.0}% of one core) => {:.0} requests per proxy CPU-second",
        ok as f64 / wall,
        100.0 * proxy_cpu / wall,
        ok as f64 / proxy_cpu.max(0.01)
    );
    let stats = proxy.take_stats();
    assert!(
        stats.total_requests() >= ok,
        "{} < {ok}",
        stats.total_requests()
    );
    let (ok_direct, _) = load.block_on(closed_loop(direct[0], secs, 64));
    println!(
        "  max direct to one target (64 connections): {:.0} rps",
        ok_direct as f64 / secs as f64
    );
}

#[tokio::test]
async fn idle_client_connections_are_closed_after_the_idle_timeout() {
    let a = Server::start("a", "zone-a").await;
    let proxy = proxy(300).await;
    proxy.set_target_group(group(vec![a.target()]));
    all_healthy(&proxy, 1).await;
    let mut sender = keep_alive(proxy.local_addr()).await;
    assert!(one(&mut sender).await);
    assert!(one(&mut sender).await);
    eventually(
        Duration::from_secs(3),
        "idle connection closed by the proxy",
        || sender.is_closed(),
    )
    .await;
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_partition_stalls_requests_in_flight_and_the_delay_end_cuts_draining_ones() {
    let a = Server::start("a", "zone-a").await;
    let proxy = Arc::new(proxy(1_500).await);
    let mut tg = group(vec![a.target()]);
    proxy.set_target_group(tg.clone());
    all_healthy(&proxy, 1).await;

    // Partitioned while its answer (due after 400 ms) is pending: 504 at the idle timeout.
    let addr = proxy.local_addr();
    let start = Instant::now();
    let slow = tokio::spawn(async move { get(addr, "/slow?ms=400").await });
    eventually(Duration::from_secs(2), "slow request reached a", || {
        a.served.load(Ordering::SeqCst) == 1
    })
    .await;
    tg.targets[0].reachable = false;
    proxy.set_target_group(tg.clone());
    let answer = slow.await.unwrap();
    assert_eq!(answer.status, 504);
    assert!(
        start.elapsed() >= Duration::from_millis(1_400),
        "{:?}",
        start.elapsed()
    );

    // Healed, then deregistered with a 300 ms delay while a 1 s request is in flight: cut (502).
    tg.targets[0].reachable = true;
    proxy.set_target_group(tg.clone());
    all_healthy(&proxy, 1).await;
    let slow = tokio::spawn(async move { get(addr, "/slow?ms=1000").await });
    eventually(
        Duration::from_secs(2),
        "second slow request reached a",
        || a.served.load(Ordering::SeqCst) == 2,
    )
    .await;
    let start = Instant::now();
    tg.targets.clear();
    tg.deregistration_delay = Duration::from_millis(300);
    proxy.set_target_group(tg);
    let answer = slow.await.unwrap();
    assert_eq!(answer.status, 502);
    assert!(
        start.elapsed() < Duration::from_millis(900),
        "{:?}",
        start.elapsed()
    );
    assert!(proxy.health().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_target_needs_one_pass_and_a_recovering_one_the_healthy_threshold() {
    let p = proxy(5_000).await;
    let s = Server::start("t1", "eu-west-1a").await;
    // Checks every 200 ms, three passes to recover: a new target is healthy after its first
    // check (within one interval), long before three.
    let mut g = group(vec![s.target()]);
    g.health_check = HealthCheck {
        healthy_threshold: 3,
        ..check(200, 100)
    };
    p.set_target_group(g);
    let took = eventually(Duration::from_secs(2), "new target healthy", || {
        state_of(&p.health(), "t1").is_some_and(|(st, _)| st == TargetState::Healthy)
    })
    .await;
    assert!(
        s.checks.load(Ordering::SeqCst) <= 2,
        "healthy after {took:?}"
    );
    // Fails: unhealthy after two failed checks.
    s.health.store(503, Ordering::SeqCst);
    eventually(Duration::from_secs(3), "unhealthy", || {
        state_of(&p.health(), "t1").is_some_and(|(st, _)| st == TargetState::Unhealthy)
    })
    .await;
    // Back: three passes in a row are needed now.
    let before = s.checks.load(Ordering::SeqCst);
    s.health.store(200, Ordering::SeqCst);
    eventually(Duration::from_secs(3), "recovered", || {
        state_of(&p.health(), "t1").is_some_and(|(st, _)| st == TargetState::Healthy)
    })
    .await;
    let passes = s.checks.load(Ordering::SeqCst) - before;
    assert!(passes >= 3, "recovered after {passes} checks");
    p.shutdown().await;
}

#[test]
fn the_first_check_comes_within_one_interval_fixed_by_seed_and_id() {
    let i = Duration::from_secs(10);
    let a = stackproof_sandbox_alb::first_check_delay(7, "task-a", i);
    assert_eq!(a, stackproof_sandbox_alb::first_check_delay(7, "task-a", i));
    assert!(a < i);
    let spread: std::collections::BTreeSet<u64> = (0..50)
        .map(|k| stackproof_sandbox_alb::first_check_delay(7, &format!("task-{k}"), i).as_secs())
        .collect();
    assert!(spread.len() >= 8, "{spread:?}");
}

/// Two nodes, in zones a and b, of one proxy with one target.
async fn two_nodes(base: u8) -> (Proxy, Server) {
    let nodes = vec![
        stackproof_sandbox_alb::Node {
            zone: "a".into(),
            addr: SocketAddr::from(([127, 0, base, 2], 0)),
        },
        stackproof_sandbox_alb::Node {
            zone: "b".into(),
            addr: SocketAddr::from(([127, 0, base + 1, 2], 0)),
        },
    ];
    let p = Proxy::bind_nodes(&nodes, ProxySettings::new("app/nodes/0123456789abcdef"))
        .await
        .unwrap();
    let s = Server::start("t1", "a").await;
    p.set_target_group(group(vec![s.target()]));
    all_healthy(&p, 1).await;
    (p, s)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_cut_off_drops_connection_attempts_and_stalls_open_connections() {
    let (p, _s) = two_nodes(71).await;
    let nodes = p.nodes();
    assert_eq!(nodes.len(), 2);
    let (a, b) = (nodes[0].1, nodes[1].1);
    assert_eq!(a.port(), b.port(), "every node on one port");
    assert_eq!(get(a, "/").await.task, "t1");
    // A keep-alive connection to node a, open before the cut.
    let stream = TcpStream::connect(a).await.unwrap();
    let (mut open, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = || {
        http::Request::get("/")
            .header("host", "x")
            .body(Empty::<Bytes>::new())
            .unwrap()
    };
    assert_eq!(open.send_request(req()).await.unwrap().status(), 200);

    p.set_node_reachable("a", false).await;
    assert!(!p.nodes()[0].2, "node a reports itself cut off");
    // New connections to a: no answer at all (not refused).
    for _ in 0..3 {
        let attempt = tokio::time::timeout(Duration::from_millis(500), TcpStream::connect(a)).await;
        assert!(attempt.is_err(), "connect to a cut-off node: {attempt:?}");
    }
    // The open connection gets no answer either.
    let stalled = tokio::time::timeout(Duration::from_millis(500), open.send_request(req())).await;
    assert!(stalled.is_err(), "answered on a cut-off node");
    // Node b serves.
    assert_eq!(get(b, "/").await.task, "t1");

    p.set_node_reachable("a", true).await;
    assert_eq!(get(a, "/").await.status, 200);
    p.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zonal_shift_moves_requests_off_the_zones_targets() {
    let p = proxy(5_000).await;
    let a = Server::start("in-a", "a").await;
    let b = Server::start("in-b", "b").await;
    p.set_target_group(group(vec![a.target(), b.target()]));
    all_healthy(&p, 2).await;
    p.set_shifted_zones(vec!["a".into()]);
    for _ in 0..10 {
        assert_eq!(get(p.local_addr(), "/").await.task, "in-b");
    }
    // With nothing healthy outside the shifted zone, its targets serve after all.
    b.health.store(503, Ordering::SeqCst);
    eventually(Duration::from_secs(3), "b unhealthy", || {
        state_of(&p.health(), "in-b").is_some_and(|(st, _)| st == TargetState::Unhealthy)
    })
    .await;
    assert_eq!(get(p.local_addr(), "/").await.task, "in-a");
    b.health.store(200, Ordering::SeqCst);
    p.set_shifted_zones(Vec::new());
    p.shutdown().await;
}

/// Checks start one interval apart, start to start, whatever each took (ELB's health check
/// interval; its timeout must be shorter): a partitioned target, whose every check waits out
/// its timeout, is unhealthy `threshold - 1` intervals and one timeout after its first check,
/// not `threshold` x (interval + timeout). On tokio's paused clock, so the times are exact.
#[tokio::test(start_paused = true)]
async fn checks_start_one_interval_apart_even_when_each_times_out() {
    let proxy = proxy(60_000).await;
    let target = Target {
        id: "cut".into(),
        addr: "127.0.0.1:9".parse().unwrap(),
        zone: "zone-a".into(),
        reachable: false,
    };
    let interval = Duration::from_secs(10);
    let mut tg = group(vec![target]);
    tg.health_check = check(10_000, 5_000);
    let first = stackproof_sandbox_alb::first_check_delay(0, "cut", interval);
    let start = tokio::time::Instant::now();
    proxy.set_target_group(tg);
    while state_of(&proxy.health(), "cut").map(|s| s.0) != Some(TargetState::Unhealthy) {
        assert!(start.elapsed() < Duration::from_secs(60), "never unhealthy");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // First check at `first`, fails at +5 s; the second starts at `first` + 10 s and fails 5 s
    // later (a loop that waited an interval after each timeout would take 5 s more).
    let took = start.elapsed();
    let expected = first + interval + Duration::from_secs(5);
    assert!(
        took >= expected && took <= expected + Duration::from_millis(20),
        "unhealthy after {took:?}, expected {expected:?}"
    );
    proxy.shutdown().await;
}
