//! The availability check end to end, against HTTP servers this test starts on 127.0.0.1 (one
//! that answers 200 with an `x-az` header, one that answers 500, one that answers 404, a slow
//! one, a closed port) and moto for the published metrics.

#![allow(clippy::unwrap_used)] // Test helpers outside #[test] functions.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use aws_sdk_cloudwatch::operation::get_metric_statistics::GetMetricStatisticsOutput;
use aws_sdk_cloudwatch::primitives::DateTime;
use aws_sdk_cloudwatch::types::{Datapoint, StandardUnit, Statistic};
use sandbox::MotoServer;
use stackproof_proof::check::{self, CheckConfig, CheckResult};
use stackproof_proof::{ConnectTo, Target};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// What a test server answers to every request.
#[derive(Debug, Clone, Copy)]
enum Answer {
    /// 200, zones a and b in turn.
    Ok,
    /// 200 after this many milliseconds.
    Slow(u64),
    /// This status.
    Status(u16),
}

/// Starts an HTTP/1.1 keep-alive server on a free port of 127.0.0.1; it runs until the test's
/// runtime ends.
async fn serve(answer: Answer) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let served = Arc::new(AtomicU64::new(0));
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let served = Arc::clone(&served);
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    let end = loop {
                        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            break i + 4;
                        }
                        match sock.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    };
                    buf.drain(..end);
                    let n = served.fetch_add(1, Ordering::Relaxed);
                    let zone = if n.is_multiple_of(2) {
                        "eu-west-1a"
                    } else {
                        "eu-west-1b"
                    };
                    let status = match answer {
                        Answer::Ok => "200 OK".to_owned(),
                        Answer::Slow(ms) => {
                            tokio::time::sleep(Duration::from_millis(ms)).await;
                            "200 OK".to_owned()
                        }
                        Answer::Status(s) => format!("{s} Status"),
                    };
                    let response =
                        format!("HTTP/1.1 {status}\r\ncontent-length: 2\r\nx-az: {zone}\r\n\r\nok");
                    if sock.write_all(response.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

/// A port on 127.0.0.1 that nothing listens on.
async fn closed_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap()
}

fn direct(addr: SocketAddr) -> Target {
    Target {
        url: format!("http://{addr}/"),
        connect_to: Vec::new(),
        dns_server: None,
        nodes: Vec::new(),
        kind: "sandbox".into(),
    }
}

/// Short and quick: 40 requests.
fn short() -> CheckConfig {
    CheckConfig {
        rps: 20.0,
        duration_s: 2.0,
        ..CheckConfig::default()
    }
}

fn failed(r: &CheckResult) -> Vec<&str> {
    r.objectives
        .iter()
        .filter(|o| !o.passed)
        .map(|o| o.name.as_str())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_healthy_service_passes_with_its_zones_counted() {
    let addr = serve(Answer::Ok).await;
    // Through the target's connect-to mapping, as in the sandbox: the URL names the load
    // balancer, the connection goes to the loopback address.
    let target = Target {
        url: "http://stackproof-alb-1.eu-west-1.elb.amazonaws.com/".into(),
        connect_to: vec![ConnectTo {
            host: "stackproof-alb-1.eu-west-1.elb.amazonaws.com".into(),
            port: 80,
            addr,
        }],
        dns_server: None,
        nodes: Vec::new(),
        kind: "sandbox".into(),
    };
    let r = check::run(&target, &short()).await.unwrap();
    assert!(r.passed, "{}\n{}", r.summary(), r.verdict());
    assert!(r.reasons.is_empty());
    assert_eq!(r.requests, 40);
    assert_eq!(r.responses, 40);
    assert_eq!(r.errors, 0);
    assert_eq!(r.success_percent, 100.0);
    assert!(r.p99_ms > 0.0 && r.p99_ms < 500.0, "{}", r.p99_ms);
    assert!(r.p50_ms <= r.p99_ms);
    assert_eq!(r.zones.values().sum::<u64>(), 40);
    assert_eq!(
        r.zones.keys().collect::<Vec<_>>(),
        ["eu-west-1a", "eu-west-1b"]
    );
    assert!(r.started_unix_ms > 1_600_000_000_000);
    // The last of 40 requests at 20 per second is due at 1.95 s.
    assert!(r.duration_s >= 1.9, "{}", r.duration_s);
    assert!(r.verdict().starts_with("PASS"), "{}", r.verdict());
    assert!(r.summary().contains("40 requests"), "{}", r.summary());

    // The JSON reads back into the result (floats to within their printed precision).
    let back: CheckResult = serde_json::from_str(&r.to_json()).unwrap();
    assert_eq!(
        (&back.objectives, &back.zones, back.requests, back.config),
        (&r.objectives, &r.zones, r.requests, r.config.clone())
    );
    let json: serde_json::Value = serde_json::from_str(&r.to_json()).unwrap();
    assert_eq!(json["passed"], true);
    assert_eq!(json["zones"]["eu-west-1a"], 20);

    let xml = r.to_junit();
    let doc = roxmltree::Document::parse(&xml).unwrap();
    let suite = doc.root_element();
    assert_eq!(suite.tag_name().name(), "testsuite");
    assert_eq!(suite.attribute("name"), Some("stackproof-check"));
    assert_eq!(suite.attribute("tests"), Some("3"));
    assert_eq!(suite.attribute("failures"), Some("0"));
    let names: Vec<_> = suite
        .children()
        .filter(|n| n.has_tag_name("testcase"))
        .map(|c| c.attribute("name").unwrap())
        .collect();
    assert_eq!(names, ["success-rate", "latency-p99", "errors"]);
    assert!(
        doc.descendants().all(|n| !n.has_tag_name("failure")),
        "{xml}"
    );
}

/// One broken service: the objectives it must break and how its reasons end.
type Case<'a> = (
    &'a str,
    SocketAddr,
    CheckConfig,
    &'a [&'a str],
    &'a [&'a str],
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_services_fail_with_a_reason_per_broken_objective() {
    let server_errors = serve(Answer::Status(500)).await;
    let not_found = serve(Answer::Status(404)).await;
    let slow = serve(Answer::Slow(300)).await;
    let closed = closed_port().await;
    let slow_objective = CheckConfig {
        p99_ms: 100.0,
        ..short()
    };
    let cases: [Case<'_>; 4] = [
        (
            "500s",
            server_errors,
            short(),
            &["success-rate", "errors"],
            &[
                "success rate was 0.00% (0 of 40 requests answered 2xx/3xx), under the 99% objective.",
                "error rate was 100.00% (40 of 40 requests: 40 5xx), over the 1% objective.",
            ],
        ),
        (
            "404s",
            not_found,
            short(),
            &["success-rate"],
            &[
                "success rate was 0.00% (0 of 40 requests answered 2xx/3xx), under the 99% objective.",
            ],
        ),
        (
            "slow",
            slow,
            slow_objective,
            &["latency-p99"],
            &["over the 100 ms objective."],
        ),
        (
            "closed port",
            closed,
            short(),
            &["success-rate", "latency-p99", "errors"],
            &[
                "under the 99% objective.",
                "no request was answered, so the p99 latency (objective 500 ms) could not be measured.",
                "error rate was 100.00% (40 of 40 requests: 40 refused), over the 1% objective.",
            ],
        ),
    ];
    for (what, addr, config, broken, reasons) in cases {
        let r = check::run(&direct(addr), &config).await.unwrap();
        assert!(!r.passed, "{what}: {}", r.summary());
        assert_eq!(failed(&r), broken, "{what}: {:?}", r.reasons);
        assert_eq!(r.reasons.len(), reasons.len(), "{what}: {:?}", r.reasons);
        for (got, want) in r.reasons.iter().zip(reasons) {
            assert!(
                got.ends_with(want),
                "{what}: {got:?} does not end with {want:?}"
            );
        }
        assert!(r.verdict().starts_with("FAIL:"), "{what}");
        assert_eq!(r.requests, 40, "{what}");

        // JUnit: a <failure> exactly in the broken test cases, its message the reason.
        let xml = r.to_junit();
        let doc = roxmltree::Document::parse(&xml).unwrap_or_else(|e| panic!("{what}: {e}\n{xml}"));
        let suite = doc.root_element();
        assert_eq!(
            suite.attribute("failures"),
            Some(broken.len().to_string().as_str())
        );
        for case in suite.children().filter(|n| n.has_tag_name("testcase")) {
            let name = case.attribute("name").unwrap();
            let failures: Vec<_> = case
                .children()
                .filter(|n| n.has_tag_name("failure"))
                .collect();
            if broken.contains(&name) {
                assert_eq!(failures.len(), 1, "{what}: {name}\n{xml}");
                let message = failures[0].attribute("message").unwrap();
                assert!(r.reasons.iter().any(|x| x == message), "{what}: {message}");
            } else {
                assert!(failures.is_empty(), "{what}: {name}\n{xml}");
            }
        }
    }
}

#[tokio::test]
async fn a_bad_configuration_is_refused_before_any_request() {
    let closed = closed_port().await;
    let config = CheckConfig {
        rps: -1.0,
        max_error_rate: 2.0,
        ..CheckConfig::default()
    };
    let e = check::run(&direct(closed), &config).await.unwrap_err();
    let stackproof_proof::Error::Invalid(problems) = &e else {
        panic!("not a configuration error: {e}")
    };
    let shown: Vec<String> = problems.0.iter().map(ToString::to_string).collect();
    assert_eq!(shown.len(), 2, "{shown:?}");
    assert!(shown[0].starts_with("rps = -1: "), "{shown:?}");
    assert!(shown[1].starts_with("max-error-rate = 2: "), "{shown:?}");
}

fn one(out: &GetMetricStatisticsOutput) -> Datapoint {
    assert_eq!(out.datapoints().len(), 1, "{out:?}");
    out.datapoints()[0].clone()
}

/// A passing and a failing check, both published (the dashboard shows both), read back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn published_metrics_are_the_dashboards_and_read_back_from_cloudwatch() {
    let moto = MotoServer::shared().expect("moto starts (run `cargo xtask setup` first)");
    let sdk = sandbox::sdk_config(moto.endpoint(), "eu-west-1");
    let cx = infra::Context::builder(sdk, infra::StackName::new("probe").unwrap())
        .interceptor(moto.fresh_account())
        .build();
    let cw = check::cloudwatch(&cx);
    let namespace = observability::check_namespace("probe");

    let ok = check::run(&direct(serve(Answer::Ok).await), &short())
        .await
        .unwrap();
    let bad = check::run(&direct(serve(Answer::Status(500)).await), &short())
        .await
        .unwrap();
    assert!(ok.passed && !bad.passed);
    check::publish(&cw, &namespace, &ok).await.unwrap();
    check::publish(&cw, &namespace, &bad).await.unwrap();

    let listed = cw
        .list_metrics()
        .namespace(&namespace)
        .send()
        .await
        .unwrap();
    let mut names: Vec<&str> = listed
        .metrics()
        .iter()
        .map(|m| {
            assert_eq!(m.namespace(), Some(namespace.as_str()));
            assert!(m.dimensions().is_empty(), "{m:?}");
            m.metric_name().unwrap()
        })
        .collect();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names, ["LatencyP99", "RequestCount", "SuccessPercent"]);

    let from = i64::try_from(ok.started_unix_ms.min(bad.started_unix_ms)).unwrap() - 600_000;
    let to = i64::try_from(ok.started_unix_ms.max(bad.started_unix_ms)).unwrap() + 600_000;
    let stats = |name: &'static str| {
        cw.get_metric_statistics()
            .namespace(&namespace)
            .metric_name(name)
            .start_time(DateTime::from_millis(from))
            .end_time(DateTime::from_millis(to))
            .period(3600)
            .statistics(Statistic::Minimum)
            .statistics(Statistic::Maximum)
            .statistics(Statistic::Sum)
            .statistics(Statistic::SampleCount)
            .send()
    };
    let success = one(&stats("SuccessPercent").await.unwrap());
    assert_eq!(success.minimum(), Some(0.0));
    assert_eq!(success.maximum(), Some(100.0));
    assert_eq!(success.sample_count(), Some(2.0));
    assert_eq!(success.unit(), Some(&StandardUnit::Percent));
    let latency = one(&stats("LatencyP99").await.unwrap());
    assert_eq!(latency.maximum(), Some(ok.p99_ms.max(bad.p99_ms)));
    assert_eq!(latency.unit(), Some(&StandardUnit::Milliseconds));
    let count = one(&stats("RequestCount").await.unwrap());
    assert_eq!(count.sum(), Some(80.0));
    assert_eq!(count.unit(), Some(&StandardUnit::Count));
}
