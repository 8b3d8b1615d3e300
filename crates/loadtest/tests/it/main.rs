//! Integration tests of the load engine against in-process servers on 127.0.0.0/8.
#![allow(clippy::unwrap_used)] // test helpers fail loudly

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use stackproof_loadtest::{Config, Error, Slo, StaticResolver};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

mod tls;

/// A test HTTP server: counts requests, answers `x-az`/`x-task` headers in rotation, can stall
/// every response until a given instant, or sleep a fixed time per request.
struct Server {
    addr: SocketAddr,
    requests: Arc<AtomicU64>,
    stall_until: Arc<Mutex<Option<Instant>>>,
    task: JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Server {
    async fn start(bind: &str, delay: Duration) -> Server {
        let listener = TcpListener::bind(bind).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(AtomicU64::new(0));
        let stall_until: Arc<Mutex<Option<Instant>>> = Arc::new(Mutex::new(None));
        let (r, s) = (Arc::clone(&requests), Arc::clone(&stall_until));
        let task = tokio::spawn(async move {
            let mut conns = Vec::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    break;
                };
                let (r, s) = (Arc::clone(&r), Arc::clone(&s));
                conns.push(tokio::spawn(async move {
                    let svc = service_fn(move |_req| {
                        let n = r.fetch_add(1, Ordering::Relaxed);
                        let until = *s.lock().unwrap();
                        async move {
                            if let Some(until) = until {
                                tokio::time::sleep_until(until.into()).await;
                            }
                            if !delay.is_zero() {
                                tokio::time::sleep(delay).await;
                            }
                            let resp = hyper::Response::builder()
                                .header("x-az", if n % 2 == 0 { "zone-a" } else { "zone-b" })
                                .header("x-task", format!("task-{}", n % 3))
                                .body(Full::new(Bytes::from_static(b"ok")))
                                .unwrap();
                            Ok::<_, std::convert::Infallible>(resp)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                }));
            }
            for c in conns {
                c.abort();
            }
        });
        Server {
            addr,
            requests,
            stall_until,
            task,
        }
    }

    /// Holds every response (arriving or in flight) for `d` from now.
    fn stall_for(&self, d: Duration) {
        *self.stall_until.lock().unwrap() = Some(Instant::now() + d);
    }

    fn url(&self) -> String {
        format!("http://{}/", self.addr)
    }
}

fn config(url: String, rate: f64, duration: f64) -> Config {
    Config {
        url,
        rate,
        duration,
        connections: 20,
        timeout: 3.0,
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fixed_rate_sends_exactly_the_scheduled_requests() {
    let server = Server::start("127.0.0.1:0", Duration::ZERO).await;
    let c = Config {
        threads: 2,
        ..config(server.url(), 200.0, 2.0)
    };
    assert_eq!(stackproof_loadtest::scheduled_requests(&c), 400);
    let r = stackproof_loadtest::run(c, None).await.unwrap();
    assert_eq!(
        (r.scheduled, r.sent, r.completed, r.ok, r.errors, r.unsent),
        (400, 400, 400, 400, 0, 0)
    );
    assert_eq!(server.requests.load(Ordering::Relaxed), 400);
    assert_eq!(r.statuses.get("200"), Some(&400));
    assert_eq!(
        r.corrected.len(),
        400,
        "the merged histogram holds every response of both workers"
    );
    assert_eq!(r.series.iter().map(|s| s.sent).sum::<u64>(), 400);
    assert_eq!(r.series.iter().map(|s| s.completed).sum::<u64>(), 400);
    // Each full second carries its share of the rate.
    assert!((195..=205).contains(&r.series[0].sent), "{:?}", r.series[0]);
    assert!(r.latency_ms.corrected.p50 >= r.latency_ms.raw.p50);
    assert_eq!(r.by_addr.get(&server.addr.to_string()), Some(&400));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_server_shows_in_corrected_latency_not_in_raw() {
    let server = Server::start("127.0.0.1:0", Duration::ZERO).await;
    let c = Config {
        connections: 10,
        ..config(server.url(), 500.0, 4.0)
    };
    let handle = stackproof_loadtest::start(c).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1600)).await;
    // The live series is readable while the run goes on.
    assert!(!handle.series().is_empty());
    server.stall_for(Duration::from_secs(1));
    let r = handle.wait().await.unwrap();
    assert_eq!(r.completed, 2000);
    assert!(
        r.latency_ms.corrected.p95 >= 400.0,
        "corrected p95 {}",
        r.latency_ms.corrected.p95
    );
    assert!(
        r.latency_ms.raw.p95 < 50.0,
        "raw p95 {}",
        r.latency_ms.raw.p95
    );
    assert!(r.late_starts >= 400, "late starts {}", r.late_starts);
    assert!(
        r.count_over(500.0) >= 200,
        "over 500 ms: {}",
        r.count_over(500.0)
    );
    // The stall shows in the per-second series: a second with nothing completed or a huge p99.
    assert!(r.series.iter().any(|s| s.p99_ms >= 500.0));
    // Windows merge the per-second histograms exactly: the whole run equals the total, the
    // first second (before the stall) is fast, the stalled seconds hold the slow responses.
    let n = u32::try_from(r.series.len()).unwrap();
    assert_eq!(r.latency_between(0, n), r.corrected);
    assert!(r.latency_between(0, 1).value_at_quantile(0.99) < 100_000);
    let stalled = r.latency_between(1, n);
    assert_eq!(stalled.len() + r.latency_between(0, 1).len(), 2000);
    assert!(stalled.count_between(400_000, u64::MAX) >= 200);
    assert!(r.latency_between(n, n + 5).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_connections_are_counted_by_kind() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let r = stackproof_loadtest::run(
        config(format!("http://127.0.0.1:{port}/"), 100.0, 1.0),
        None,
    )
    .await
    .unwrap();
    assert_eq!((r.sent, r.completed, r.errors), (100, 0, 100));
    assert_eq!(r.errors_by_kind["refused"], 100);
    assert_eq!(r.error_rate(), 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeouts_are_counted_by_kind() {
    let server = Server::start("127.0.0.1:0", Duration::from_secs(2)).await;
    let c = Config {
        timeout: 0.2,
        connections: 50,
        ..config(server.url(), 50.0, 1.0)
    };
    let r = stackproof_loadtest::run(c, None).await.unwrap();
    assert_eq!((r.sent, r.completed, r.errors), (50, 0, 50));
    assert_eq!(r.errors_by_kind["timeout"], 50);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resets_are_counted_by_kind() {
    // Accepts, reads the request, then closes without answering.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        for _ in 0..10_000 {
            let Ok((mut s, _)) = listener.accept().await else {
                break;
            };
            tokio::spawn(async move {
                use tokio::io::AsyncReadExt;
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf).await;
                drop(s);
            });
        }
    });
    let r = stackproof_loadtest::run(config(format!("http://{addr}/"), 100.0, 1.0), None)
        .await
        .unwrap();
    task.abort();
    assert_eq!((r.sent, r.completed, r.errors), (100, 0, 100));
    assert_eq!(r.errors_by_kind["reset"], 100, "{:?}", r.errors_by_kind);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dns_re_resolution_follows_a_changed_answer_and_spreads_connections() {
    let a = Server::start("127.0.0.1:0", Duration::ZERO).await;
    let port = a.addr.port();
    let b = Server::start(&format!("127.0.0.2:{port}"), Duration::ZERO).await;
    let c2 = Server::start(&format!("127.0.0.3:{port}"), Duration::ZERO).await;
    let resolver = StaticResolver::new(vec![a.addr.ip()]);
    let c = Config {
        url: format!("http://service.test:{port}/"),
        dns_ttl: 0.2,
        resolver: Some(resolver.clone()),
        ..config(String::new(), 100.0, 3.0)
    };
    let handle = stackproof_loadtest::start(c).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    resolver.set(vec![
        "127.0.0.2".parse::<IpAddr>().unwrap(),
        "127.0.0.3".parse().unwrap(),
    ]);
    let r = handle.wait().await.unwrap();
    assert_eq!(r.completed, 300);
    assert!(resolver.calls() >= 5, "resolved {} times", resolver.calls());
    assert!(r.dns.changes >= 1);
    let (na, nb, nc) = (
        a.requests.load(Ordering::Relaxed),
        b.requests.load(Ordering::Relaxed),
        c2.requests.load(Ordering::Relaxed),
    );
    assert_eq!(na + nb + nc, 300);
    assert!(na >= 90 && nb >= 40 && nc >= 40, "{na} {nb} {nc}");
    // The last full second went only to the new addresses.
    let last = &r.series[2];
    assert!(
        !last.by_addr.contains_key(&a.addr.to_string()),
        "{:?}",
        last.by_addr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_header_breakdowns_add_up_to_the_total() {
    let server = Server::start("127.0.0.1:0", Duration::ZERO).await;
    let c = Config {
        breakdown_headers: vec!["x-az".into(), "x-task".into(), "x-absent".into()],
        ..config(server.url(), 300.0, 2.0)
    };
    let r = stackproof_loadtest::run(c, None).await.unwrap();
    assert_eq!(r.completed, 600);
    for h in ["x-az", "x-task", "x-absent"] {
        assert_eq!(
            r.by_header[h].values().sum::<u64>(),
            600,
            "{h}: {:?}",
            r.by_header[h]
        );
        for s in &r.series {
            assert_eq!(
                s.by_header
                    .get(h)
                    .map(|m| m.values().sum::<u64>())
                    .unwrap_or(0),
                s.completed,
                "{h} at {}",
                s.t
            );
        }
    }
    assert_eq!(r.by_header["x-az"].len(), 2);
    assert_eq!(r.by_header["x-task"].len(), 3);
    assert_eq!(r.by_header["x-absent"]["(none)"], 600);
    let csv = r.to_csv();
    assert!(csv.lines().next().unwrap().contains("x-az=zone-a"));
    assert_eq!(csv.lines().count(), r.series.len() + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slo_verdicts_fail_exactly_when_a_threshold_is_broken() {
    let server = Server::start("127.0.0.1:0", Duration::from_millis(5)).await;
    let r = stackproof_loadtest::run(config(server.url(), 100.0, 1.0), None)
        .await
        .unwrap();
    let c = r.latency_ms.corrected.clone();
    let at = Slo {
        p50_ms: Some(c.p50),
        p95_ms: Some(c.p95),
        p99_ms: Some(c.p99),
        max_ms: Some(c.max),
        max_error_rate: Some(0.0),
        min_success_rate: Some(1.0),
        over_ms: Some(c.max),
        max_fraction_over: Some(0.0),
    };
    assert_eq!(
        r.verdict(&at),
        stackproof_loadtest::Verdict {
            passed: true,
            failures: vec![]
        }
    );
    let below = Slo {
        p50_ms: Some(c.p50 - 0.01),
        p95_ms: Some(c.p95 - 0.01),
        p99_ms: Some(c.p99 - 0.01),
        max_ms: Some(c.max - 0.01),
        over_ms: Some(c.p50 - 0.01),
        max_fraction_over: Some(0.4),
        ..at.clone()
    };
    let v = r.verdict(&below);
    assert!(!v.passed);
    assert_eq!(v.failures.len(), 5, "{v}");
    assert!(v.failures[0].starts_with("p50 latency was"), "{v}");
    assert!(v.failures[4].contains("took longer than"), "{v}");

    // Errors: every request refused.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let bad =
        stackproof_loadtest::run(config(format!("http://127.0.0.1:{port}/"), 50.0, 1.0), None)
            .await
            .unwrap();
    let v = bad.verdict(&Slo {
        max_error_rate: Some(0.01),
        min_success_rate: Some(0.99),
        ..Default::default()
    });
    assert_eq!(v.failures.len(), 2, "{v}");
    assert!(
        v.failures[0].starts_with("error rate was 100.000% (50 of 50 requests"),
        "{v}"
    );
    assert!(v.failures[1].starts_with("success rate was 0.000%"), "{v}");
    assert!(bad.verdict(&Slo::default()).passed);
}

#[tokio::test]
async fn invalid_input_is_reported_field_by_field_before_any_run() {
    let c = Config {
        url: "ftp://x".into(),
        rate: 0.0,
        duration: -1.0,
        connections: 0,
        headers: vec!["no colon".into()],
        resolve: vec!["host:80".into()],
        slo: Slo {
            max_error_rate: Some(2.0),
            ..Default::default()
        },
        ..Default::default()
    };
    let Err(Error::Invalid(p)) = stackproof_loadtest::run(c, None).await else {
        panic!("expected Invalid")
    };
    let fields: Vec<&str> = p.0.iter().map(|p| p.field.as_str()).collect();
    assert_eq!(
        fields,
        [
            "url",
            "headers[0]",
            "rate",
            "duration",
            "connections",
            "resolve[0]",
            "slo.max-error-rate"
        ]
    );
    let text = p.to_string();
    assert!(
        text.contains("rate: \"0\" is not allowed: a rate in requests per second, > 0"),
        "{text}"
    );

    let c = Config {
        rate: 1e6,
        connections: 2,
        ..Default::default()
    };
    let p = c.validate().unwrap_err();
    assert_eq!(p.0[0].field, "rate");
    assert!(p.0[0].allowed.contains("raise connections"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_interval_log_has_one_histogram_per_second_and_json_parses() {
    use hdrhistogram::serialization::interval_log::{IntervalLogIterator, LogEntry};
    let server = Server::start("127.0.0.1:0", Duration::ZERO).await;
    let r = stackproof_loadtest::run(config(server.url(), 100.0, 2.0), None)
        .await
        .unwrap();
    let mut log = Vec::new();
    r.write_interval_log(&mut log).unwrap();
    let n = IntervalLogIterator::new(&log)
        .filter(|e| matches!(e, Ok(LogEntry::Interval(_))))
        .count();
    assert_eq!(n, r.series.len());
    let json: serde_json::Value = serde_json::from_str(&r.to_json()).unwrap();
    assert_eq!(json["schema"], 1);
    assert_eq!(json["completed"], 200);
    assert_eq!(json["errors_by_kind"]["tls"], 0);
    assert!(json["series"][0]["p99_ms"].is_number());
    assert!(r.summary().contains("corrected"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ramps_and_the_timer_pacer_send_exactly_the_scheduled_requests() {
    let server = Server::start("127.0.0.1:0", Duration::ZERO).await;
    // 0 -> 200/s over 1 s (100 requests), then 200/s for 1 s (200 requests).
    let c = Config {
        rate: 0.0,
        stages: vec![
            stackproof_loadtest::Stage {
                target: 200.0,
                duration: 1.0,
            },
            stackproof_loadtest::Stage {
                target: 200.0,
                duration: 1.0,
            },
        ],
        pacer: stackproof_loadtest::Pacer::Timer,
        ..config(server.url(), 0.0, 0.0)
    };
    assert_eq!(stackproof_loadtest::scheduled_requests(&c), 300);
    let r = stackproof_loadtest::run(c, None).await.unwrap();
    assert_eq!((r.sent, r.completed, r.unsent), (300, 300, 0));
    assert!((90..=110).contains(&r.series[0].sent), "{:?}", r.series[0]);
    assert!((190..=210).contains(&r.series[1].sent), "{:?}", r.series[1]);
}

/// A raw HTTP/1.1 server: answers every request on a connection with `response`, and after
/// `per_connection` responses waits `linger` and closes it (without saying so). Counts requests.
async fn closing_server(
    response: &'static [u8],
    per_connection: usize,
    linger: Duration,
) -> (SocketAddr, Arc<AtomicU64>, JoinHandle<()>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let requests = Arc::new(AtomicU64::new(0));
    let counted = Arc::clone(&requests);
    let task = tokio::spawn(async move {
        for _ in 0..10_000 {
            let Ok((mut s, _)) = listener.accept().await else {
                break;
            };
            let counted = Arc::clone(&counted);
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                for _ in 0..per_connection {
                    // The client sends one small request at a time: one read is one request.
                    match s.read(&mut buf).await {
                        Ok(n) if n > 0 => {}
                        _ => return,
                    }
                    counted.fetch_add(1, Ordering::Relaxed);
                    if s.write_all(response).await.is_err() {
                        return;
                    }
                }
                tokio::time::sleep(linger).await;
            });
        }
    });
    (addr, requests, task)
}

/// 40 requests at 20/s over 2 connections to a `closing_server` answering `response`, closing
/// each connection after one response (after `linger`): every request must complete without an
/// error on a connection of its own.
async fn one_response_per_connection(
    response: &'static [u8],
    linger: Duration,
) -> stackproof_loadtest::Report {
    let (addr, requests, task) = closing_server(response, 1, linger).await;
    let c = Config {
        connections: 2,
        ..config(format!("http://{addr}/"), 20.0, 2.0)
    };
    let r = stackproof_loadtest::run(c, None).await.unwrap();
    task.abort();
    assert_eq!(
        (r.sent, r.completed, r.errors),
        (40, 40, 0),
        "{:?}",
        r.errors_by_kind
    );
    assert_eq!(requests.load(Ordering::Relaxed), 40);
    assert!(r.connects >= 40, "{} connects", r.connects);
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_the_server_closes_are_reopened_without_errors() {
    // The server closes each connection while it is idle, without saying so (a keep-alive
    // timeout): the next request must go on a new connection, not fail on the dead one.
    let ok: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nx-az: a\r\n\r\nok";
    let r = one_response_per_connection(ok, Duration::from_millis(5)).await;
    assert_eq!(r.by_header["x-az"].get("a"), Some(&40));

    // `connection: close` (and a chunked body): the server says so and keeps the socket open.
    let close: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nconnection: close\r\ntransfer-encoding: chunked\r\n\r\n4\r\nbusy\r\n0\r\n\r\n";
    let r = one_response_per_connection(close, Duration::from_secs(2)).await;
    assert_eq!(r.statuses.get("503"), Some(&40));
}

/// A listener on `addr` that answers no connection attempt: its accept queue is full and
/// never drained, so the kernel drops SYNs, as a network ACL that denies everything does.
async fn blackhole(addr: SocketAddr) -> (tokio::net::TcpListener, Option<tokio::net::TcpStream>) {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_reuseaddr(true).unwrap();
    socket.bind(addr).unwrap();
    let listener = socket.listen(0).unwrap();
    let addr = listener.local_addr().unwrap();
    // One connection fills a queue of length zero.
    let filler = tokio::time::timeout(
        Duration::from_millis(300),
        tokio::net::TcpStream::connect(addr),
    )
    .await
    .ok()
    .and_then(Result::ok);
    (listener, filler)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_address_that_drops_connection_attempts_is_passed_over_for_the_next() {
    let good = Server::start("127.0.0.1:0", Duration::ZERO).await;
    let port = good.addr.port();
    let dead: SocketAddr = format!("127.0.0.9:{port}").parse().unwrap();
    let (_hole, _filler) = blackhole(dead).await;
    let resolver = StaticResolver::new(vec![dead.ip(), good.addr.ip()]);
    let c = Config {
        url: format!("http://service.test:{port}/"),
        connect_timeout: 0.2,
        resolver: Some(resolver),
        ..config(String::new(), 50.0, 2.0)
    };
    let r = stackproof_loadtest::run(c, None).await.unwrap();
    // Every request was answered, by the live address (the connections open before the
    // schedule starts, so no request waited for the failed attempts).
    assert_eq!((r.completed, r.errors), (100, 0), "{:?}", r.errors_by_kind);
    assert_eq!(good.requests.load(Ordering::Relaxed), 100);
    let failed = r
        .connect_failures
        .get(&dead.to_string())
        .copied()
        .unwrap_or(0);
    // Half of the 20 connections start on the dead address.
    assert!(failed >= 10, "{:?}", r.connect_failures);
    assert!(
        !r.by_addr.contains_key(&dead.to_string()),
        "{:?}",
        r.by_addr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dns_server_is_asked_again_when_its_answer_expires() {
    let a = Server::start("127.0.0.1:0", Duration::ZERO).await;
    let port = a.addr.port();
    let b = Server::start(&format!("127.0.0.2:{port}"), Duration::ZERO).await;
    // A DNS server: `127.0.0.1` with a TTL of 1 s for the first two queries, then `127.0.0.2`.
    let udp = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let server = udp.local_addr().unwrap();
    let queries = Arc::new(AtomicU64::new(0));
    let q = Arc::clone(&queries);
    let dns = tokio::spawn(async move {
        let mut buf = [0u8; 512];
        loop {
            let Ok((n, from)) = udp.recv_from(&mut buf).await else {
                return;
            };
            let ip = if q.fetch_add(1, Ordering::Relaxed) < 2 {
                [127, 0, 0, 1]
            } else {
                [127, 0, 0, 2]
            };
            let mut m = buf[..n].to_vec();
            m[2] = 0x81;
            m[3] = 0x80;
            m[6..8].copy_from_slice(&1u16.to_be_bytes());
            m.extend_from_slice(&[0xC0, 12, 0, 1, 0, 1, 0, 0, 0, 1, 0, 4]);
            m.extend_from_slice(&ip);
            let _ = udp.send_to(&m, from).await;
        }
    });
    let c = Config {
        url: format!("http://alb.sandbox.test:{port}/"),
        // A client that would keep answers for a minute: the TTL of 1 s wins.
        dns_ttl: 60.0,
        dns_server: Some(server.to_string()),
        ..config(String::new(), 50.0, 4.0)
    };
    let r = stackproof_loadtest::run(c, None).await.unwrap();
    dns.abort();
    assert_eq!((r.completed, r.errors), (200, 0), "{:?}", r.errors_by_kind);
    assert!(r.dns.resolutions >= 3, "{:?}", r.dns);
    assert!(r.dns.changes >= 1, "{:?}", r.dns);
    assert!(
        b.requests.load(Ordering::Relaxed) >= 50,
        "the new answer was followed"
    );
    assert!(queries.load(Ordering::Relaxed) >= 3);
    // A DNS server that is not an address is named before the run.
    let bad = Config {
        dns_server: Some("localhost".into()),
        ..config(a.url(), 10.0, 1.0)
    };
    match stackproof_loadtest::start(bad).await {
        Err(Error::Invalid(p)) => assert!(p.to_string().contains("dns-server"), "{p}"),
        other => panic!("{other:?}"),
    }
}

/// Four generators share one schedule (`worker i/4`, one start time): together they send it
/// exactly once, each its quarter, and their interval logs add up to every response. A start
/// time already past fails the run before any request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn striped_generators_send_the_schedule_once_and_their_logs_add_up_exactly() {
    let server = Server::start("127.0.0.1:0", Duration::ZERO).await;
    let start_at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
        + 300;
    let whole = config(server.url(), 200.0, 2.0);
    assert_eq!(stackproof_loadtest::scheduled_requests(&whole), 400);
    let runs = (0..4).map(|index| {
        let c = Config {
            threads: 2,
            worker: Some(stackproof_loadtest::Stripe { index, of: 4 }),
            start_at_unix_ms: Some(start_at),
            ..whole.clone()
        };
        stackproof_loadtest::run(c, None)
    });
    let reports: Vec<_> = futures_join(runs).await;
    let sent: Vec<u64> = reports.iter().map(|r| r.sent).collect();
    assert_eq!(sent, [100, 100, 100, 100], "each generator its quarter");
    assert_eq!(server.requests.load(Ordering::Relaxed), 400);
    // Every generator started at the shared instant.
    for r in &reports {
        assert!(
            r.started_unix_ms.abs_diff(start_at) < 50,
            "{}",
            r.started_unix_ms
        );
    }
    let logs: Vec<Vec<u8>> = reports
        .iter()
        .map(|r| {
            let mut buf = Vec::new();
            r.write_interval_log(&mut buf).unwrap();
            buf
        })
        .collect();
    let slices: Vec<&[u8]> = logs.iter().map(Vec::as_slice).collect();
    let merged = stackproof_loadtest::merge_interval_logs(&slices).unwrap();
    let mut all = stackproof_loadtest::histogram();
    for r in &reports {
        all.add(&r.corrected).unwrap();
    }
    assert_eq!(merged.total.len(), 400);
    assert_eq!(
        merged.total, all,
        "the logs add up to every response, exactly"
    );

    let late = Config {
        start_at_unix_ms: Some(start_at - 60_000),
        worker: Some(stackproof_loadtest::Stripe { index: 0, of: 4 }),
        ..whole
    };
    let err = stackproof_loadtest::run(late, None).await.unwrap_err();
    assert!(
        err.to_string().contains("the start time had passed"),
        "{err}"
    );
}

/// Runs the futures side by side and returns their reports in order.
async fn futures_join<F>(runs: impl Iterator<Item = F>) -> Vec<stackproof_loadtest::Report>
where
    F: std::future::Future<
            Output = Result<stackproof_loadtest::Report, stackproof_loadtest::Error>,
        > + Send
        + 'static,
{
    let handles: Vec<_> = runs.map(tokio::spawn).collect();
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.unwrap().unwrap());
    }
    out
}
