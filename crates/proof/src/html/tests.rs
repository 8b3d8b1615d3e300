//! Tests of the HTML report: what a person opening the page would look for.

use std::collections::BTreeMap;

use super::*;
use crate::report::{
    Check, Figure, Mark, MarkKind, Point, ProofReport, SCHEMA, ScenarioResult, ServicePoint,
    SloSpec,
};

const URL: &str = "http://demo-alb-1234.eu-west-1.elb.amazonaws.com";
const A: &str = "eu-west-1a";
const B: &str = "eu-west-1b";

fn check(name: &str, passed: bool, detail: &str) -> Check {
    Check {
        name: name.to_owned(),
        passed,
        detail: detail.to_owned(),
    }
}

fn scenario_result(name: &str, span: (f64, f64), checks: Vec<Check>) -> ScenarioResult {
    ScenarioResult {
        name: name.to_owned(),
        passed: checks.iter().all(|c| c.passed),
        start_s: span.0,
        end_s: span.1,
        checks,
        figures: Vec::new(),
        notes: Vec::new(),
    }
}

/// 120 s against two zones: baseline 0-40, scaling 40-60, az-failover 60-120 with zone a cut off
/// from 60 to 90 (its share drops to 0, errors spike, p99 goes to seconds); tasks rise 2 -> 5.
fn realistic() -> ProofReport {
    let timeline = (0..120_u32)
        .map(|t| {
            let fault = (60..90).contains(&t);
            let sent: u32 = if t < 40 { 300 } else { 500 };
            let errors: u32 = match t {
                60..=64 => 120,
                65..=69 => 20,
                _ => 0,
            };
            let ok = sent - errors;
            let mut by_zone = BTreeMap::new();
            if fault {
                by_zone.insert(A.to_owned(), 0);
                by_zone.insert(B.to_owned(), u64::from(ok));
            } else {
                by_zone.insert(A.to_owned(), u64::from(ok / 2));
                by_zone.insert(B.to_owned(), u64::from(ok - ok / 2));
            }
            Point {
                t: f64::from(t),
                sent: u64::from(sent),
                ok: u64::from(ok),
                errors: u64::from(errors),
                p50_ms: 8.0 + f64::from(t % 3),
                p99_ms: if errors > 50 { 5000.0 } else { 40.0 },
                by_zone,
                tasks_serving: if fault { 2 } else { 4 },
            }
        })
        .collect();
    let service = (0..120_u32)
        .step_by(2)
        .map(|t| {
            let desired = match t {
                0..=39 => 2,
                40..=49 => 4,
                _ => 5,
            };
            let running = if t < 44 { desired.min(2) } else { desired };
            let a = if (60..90).contains(&t) {
                0
            } else {
                running / 2
            };
            ServicePoint {
                t: f64::from(t),
                desired,
                running,
                running_by_zone: BTreeMap::from([(A.to_owned(), a), (B.to_owned(), running - a)]),
            }
        })
        .collect();
    let mut failover = scenario_result(
        "az-failover",
        (60.0, 120.0),
        vec![
            check("detected", true, "errors began 0.8 s after the fault"),
            check(
                "errors stop after the fault",
                false,
                "errors for 9.6 s after the fault, allowed <= 5 s",
            ),
        ],
    );
    failover.figures = vec![
        Figure::new("time_to_detect_s", "time to detect", Some(0.8), "s"),
        Figure::new("recovery_s", "time to recover", None, "s"),
    ];
    failover.notes = vec!["zone restored at 90 s".to_owned()];
    let mut baseline = scenario_result(
        "baseline",
        (0.0, 40.0),
        vec![check("p99 within SLO", true, "p99 40.0 ms <= 300 ms")],
    );
    baseline.figures = vec![Figure::new("p99_ms", "p99 latency", Some(40.0), "ms")];
    let scaling = scenario_result(
        "scaling",
        (40.0, 60.0),
        vec![check("scaled out", true, "desired 2 -> 5 in 10 s")],
    );
    ProofReport {
        schema: SCHEMA,
        stack: "demo".to_owned(),
        region: "eu-west-1".to_owned(),
        url: URL.to_owned(),
        target: "sandbox".to_owned(),
        clock: aws_model::Clock::fast(),
        prediction: None,
        started_unix_ms: 1_700_000_000_000,
        elapsed_s: 120.4,
        rps: 500.0,
        slo: SloSpec {
            p99_ms: 300.0,
            max_error_rate: 0.01,
        },
        scenarios: vec![baseline, scaling, failover],
        timeline,
        service,
        marks: vec![
            mark(MarkKind::Scenario, "baseline", 0.0, 40.0),
            mark(MarkKind::Warmup, "warm-up", 0.0, 5.0),
            mark(MarkKind::Scenario, "scaling", 40.0, 60.0),
            mark(MarkKind::Scenario, "az-failover", 60.0, 120.0),
            mark(MarkKind::Fault, "eu-west-1a isolated", 60.0, 90.0),
        ],
        writes: (60..120)
            .map(|t| crate::report::WritePoint {
                t: f64::from(t),
                acknowledged: if (62..75).contains(&t) { 0 } else { 10 },
                failed: u64::from((62..75).contains(&t)) * 10,
            })
            .collect(),
        passed: false,
    }
}

fn mark(kind: MarkKind, label: &str, start_s: f64, end_s: f64) -> Mark {
    Mark {
        kind,
        label: label.to_owned(),
        start_s,
        end_s,
    }
}

fn empty() -> ProofReport {
    ProofReport {
        schema: SCHEMA,
        stack: String::new(),
        region: String::new(),
        url: String::new(),
        target: String::new(),
        clock: aws_model::Clock::AWS,
        prediction: None,
        started_unix_ms: 0,
        elapsed_s: 0.0,
        rps: 0.0,
        slo: SloSpec {
            p99_ms: 0.0,
            max_error_rate: 0.0,
        },
        scenarios: Vec::new(),
        timeline: Vec::new(),
        service: Vec::new(),
        marks: Vec::new(),
        writes: Vec::new(),
        passed: true,
    }
}

/// Fails if the page could show a non-number anywhere.
fn assert_numbers_sane(html: &str) {
    for bad in ["NaN", "inf"] {
        assert!(!html.contains(bad), "page contains {bad}");
    }
}

#[test]
fn realistic_report_shows_what_happened() {
    let report = realistic();
    let html = render(&report);
    if let Ok(dir) = std::env::var("CARGO_TARGET_DIR") {
        let _ = std::fs::write(
            std::path::Path::new(&dir).join("proof-report-sample.html"),
            &html,
        );
    }

    // Self-contained: no script, nothing fetched; the only URL is the stack's, as text.
    assert!(!html.to_lowercase().contains("<script"));
    let without_url = html.replace(URL, "");
    assert!(!without_url.contains("http://") && !without_url.contains("https://"));
    assert!(html.contains(&format!("<code>{URL}</code>")));
    for attr in ["src=", "@import", "url("] {
        assert!(!html.contains(attr), "page loads something: {attr}");
    }

    // One chart each: requests, latency, errors, zone share, tasks, and the writes (the stack
    // has a database).
    assert_eq!(html.matches("<svg").count(), 6);
    assert_eq!(html.matches("</svg>").count(), 6);
    for title in [
        "Requests per second",
        "Latency per second",
        "Errors per second",
        "Share of responses per availability zone",
        "Tasks",
        "Writes per second",
    ] {
        assert!(html.contains(title), "no chart titled {title}");
    }
    // p99 goes from 8 ms to 5 s: more than two decades, so the latency axis is logarithmic.
    assert!(html.contains("ms (log scale)"));
    // The fault is labelled on every chart, the zones are in the legend.
    assert_eq!(html.matches("eu-west-1a isolated").count(), 2 * 6);
    // The baseline's warm-up is greyed and named on every chart (shading title and label).
    assert_eq!(html.matches(">warm-up<").count(), 2 * 6);
    // The writes that failed while the zone was away show as such.
    assert!(html.contains("65 s: 10 failed"));
    assert!(html.contains(A) && html.contains(B));

    // Header and verdict.
    assert!(html.contains("2023-11-14 22:13:20 UTC"));
    assert!(html.contains("2 min 0 s"));
    assert!(html.contains("<div class=\"verdict fail\">FAIL"));
    assert!(html.contains("2 of 3 scenarios passed"));
    assert!(html.contains("p99 latency ≤ 300 ms and errors ≤ 1.00 %"));
    for s in &report.scenarios {
        let (_, word) = verdict(s.passed);
        let row = format!(
            "{}</a></td><td><span class=\"badge {}\">{word}</span>",
            s.name,
            word.to_lowercase()
        );
        assert!(html.contains(&row), "no verdict row {row}");
        assert!(html.contains(&format!("<h2>{} <span", s.name)));
    }
    // The failed check is explained in the verdict table and in its scenario's section.
    let detail = "errors for 9.6 s after the fault, allowed &lt;= 5 s";
    assert_eq!(html.matches(detail).count(), 2);
    // Figures as people read them, including one that was not measured, and the notes.
    assert!(html.contains("<td>time to detect</td><td class=\"num\">0.8 s</td>"));
    assert!(html.contains("<td>time to recover</td><td class=\"num\">-</td>"));
    assert!(html.contains("<li>zone restored at 90 s</li>"));
    assert!(html.contains(&format!("generated by stackproof · report schema {SCHEMA}")));
    assert_numbers_sane(&html);
}

#[test]
fn text_is_escaped() {
    let mut report = realistic();
    report.stack = "a<b&\"c\"".to_owned();
    report.scenarios[0].checks[0].detail = "<img src=x onerror=alert(1)>".to_owned();
    report.marks[3].label = "zone <a> & 'b'".to_owned();
    let html = render(&report);
    assert!(html.contains("<h1>a&lt;b&amp;&quot;c&quot;</h1>"));
    assert!(!html.contains("a<b&"));
    assert!(html.contains("&lt;img src=x onerror=alert(1)&gt;"));
    assert!(!html.contains("<img"));
    assert!(html.contains("zone &lt;a&gt; &amp; &#39;b&#39;"));
}

#[test]
fn empty_and_degenerate_reports_render_without_nan() {
    let html = render(&empty());
    assert_eq!(html.matches("<svg").count(), 5);
    assert!(html.contains("no data"));
    assert!(html.contains("No scenario ran."));
    assert!(html.contains("1970-01-01 00:00:00 UTC"));
    assert_numbers_sane(&html);

    // One point, all zeros, with an unmeasured figure.
    let mut one = empty();
    one.timeline = vec![Point::default()];
    one.service = vec![ServicePoint::default()];
    one.scenarios = vec![scenario_result("baseline", (0.0, 0.0), Vec::new())];
    one.scenarios[0].figures = vec![Figure::new("p99_ms", "p99", None, "ms")];
    assert_numbers_sane(&render(&one));

    // Huge and non-finite values everywhere.
    let mut wild = realistic();
    wild.elapsed_s = f64::NAN;
    wild.rps = f64::INFINITY;
    wild.started_unix_ms = u64::MAX;
    wild.slo.p99_ms = f64::MAX;
    wild.slo.max_error_rate = f64::NAN;
    wild.timeline[3].t = f64::NAN;
    wild.timeline[4].p99_ms = f64::INFINITY;
    wild.timeline[5].p50_ms = -1.0;
    wild.timeline[6].sent = u64::MAX;
    wild.timeline[7].by_zone.insert("z".to_owned(), u64::MAX);
    wild.service[1].desired = u32::MAX;
    wild.marks
        .push(mark(MarkKind::Fault, "backwards", 1e300, -5.0));
    wild.scenarios[0]
        .figures
        .push(Figure::new("x", "x", Some(f64::NAN), "ms"));
    wild.writes[0].t = f64::NAN;
    wild.writes[1].acknowledged = u64::MAX;
    let html = render(&wild);
    assert_eq!(html.matches("<svg").count(), 6);
    assert_numbers_sane(&html);
}

#[test]
fn dates_and_durations_read_naturally() {
    assert_eq!(utc(0), "1970-01-01 00:00:00 UTC");
    assert_eq!(utc(951_782_400_000), "2000-02-29 00:00:00 UTC");
    assert_eq!(utc(1_700_000_000_999), "2023-11-14 22:13:20 UTC");
    assert_eq!(duration(12.34), "12.3 s");
    assert_eq!(duration(252.0), "4 min 12 s");
    assert_eq!(duration(7260.0), "2 h 1 min");
    assert_eq!(duration(f64::NAN), "-");
}
