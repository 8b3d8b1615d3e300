//! The scheduled availability check: a short, low-rate probe of the load balancer with an SLO
//! verdict, JSON and JUnit XML for CI systems, and three CloudWatch metrics for the dashboard.
//!
//! [`run`] sends [`CheckConfig::rps`] requests per second for [`CheckConfig::duration_s`]
//! seconds with the `loadtest` engine (open loop, latency measured from the intended send time)
//! and judges three objectives, one JUnit test case each:
//! - **success-rate**: 2xx/3xx answers over scheduled requests is at least
//!   `100 × (1 − max-error-rate)` percent (a 404 from a wrong path breaks it, too);
//! - **latency-p99**: the corrected p99 latency is at most [`CheckConfig::p99_ms`], and at least
//!   one answer arrived to measure it;
//! - **errors**: transport errors, unsent requests and 5xx answers over scheduled requests is at
//!   most [`CheckConfig::max_error_rate`].
//!
//! A host name that does not resolve is an outage, not an error of the check: the result fails
//! with every scheduled request counted as an error, so it is published like any other failure.
//!
//! [`publish`] puts `SuccessPercent` (Percent), `LatencyP99` (Milliseconds) and `RequestCount`
//! (Count), without dimensions, into the stack's namespace (`observability::check_namespace`):
//! exactly the lines of the dashboard's "Availability check" widget.

mod junit;

use std::collections::BTreeMap;

use aws_sdk_cloudwatch::primitives::DateTime;
use aws_sdk_cloudwatch::types::{MetricDatum, StandardUnit};
use serde::{Deserialize, Serialize};

use crate::{Error, Target};

/// The response header whose values give the per-zone split (the sample app's zone).
pub const ZONE_HEADER: &str = "x-az";

/// The JUnit test suite name.
pub const SUITE: &str = "stackproof-check";

/// The version of [`CheckResult`]'s JSON form; fields are only ever added within a version.
pub const CHECK_SCHEMA: u32 = 1;

/// What the check sends and what it demands. Deserializes from a table with kebab-case keys;
/// every field has a default, documented on the field.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct CheckConfig {
    /// Requests per second, at most 1000 (a probe, not a load test). Default 5.
    pub rps: f64,
    /// How long the probe sends, in seconds, at most 3600. Default 30.
    #[serde(rename = "duration")]
    pub duration_s: f64,
    /// The corrected p99 latency objective, in milliseconds. Default 500.
    pub p99_ms: f64,
    /// The error rate objective, a fraction 0..=1 (the success rate must be at least one minus
    /// this). Default 0.01.
    pub max_error_rate: f64,
    /// The timeout of one request, in seconds, at most 60. Default 5.
    #[serde(rename = "timeout")]
    pub timeout_s: f64,
}

impl Default for CheckConfig {
    fn default() -> Self {
        Self {
            rps: 5.0,
            duration_s: 30.0,
            p99_ms: 500.0,
            max_error_rate: 0.01,
            timeout_s: 5.0,
        }
    }
}

/// Highest [`CheckConfig::rps`].
pub const MAX_RPS: f64 = 1000.0;
/// Longest [`CheckConfig::duration_s`].
pub const MAX_DURATION_S: f64 = 3600.0;
/// Longest [`CheckConfig::timeout_s`].
pub const MAX_TIMEOUT_S: f64 = 60.0;

impl CheckConfig {
    /// Checks every field; every problem names the field (as in the configuration and the
    /// command line), the value and what is allowed.
    pub fn validate(&self) -> Result<(), infra::Problems> {
        let mut p = infra::Problems::default();
        let in_range = |v: f64, max: f64| v.is_finite() && v > 0.0 && v <= max;
        if !in_range(self.rps, MAX_RPS) {
            p.add(
                "rps",
                self.rps,
                format!("requests per second, > 0 and at most {MAX_RPS} (use `loadtest` for more)"),
            );
        }
        if !in_range(self.duration_s, MAX_DURATION_S) {
            p.add(
                "duration",
                self.duration_s,
                format!("seconds, > 0 and at most {MAX_DURATION_S}"),
            );
        }
        if in_range(self.rps, MAX_RPS)
            && in_range(self.duration_s, MAX_DURATION_S)
            && self.rps * self.duration_s < 1.0
        {
            p.add(
                "duration",
                self.duration_s,
                format!(
                    "at least {:.3} seconds at {} requests per second (rps × duration ≥ 1 request)",
                    1.0 / self.rps,
                    self.rps
                ),
            );
        }
        if !(self.p99_ms.is_finite() && self.p99_ms > 0.0) {
            p.add("p99-ms", self.p99_ms, "milliseconds, > 0");
        }
        if !(self.max_error_rate.is_finite() && (0.0..=1.0).contains(&self.max_error_rate)) {
            p.add(
                "max-error-rate",
                self.max_error_rate,
                "a fraction between 0 and 1 (0.01 is 1%)",
            );
        }
        if !in_range(self.timeout_s, MAX_TIMEOUT_S) {
            p.add(
                "timeout",
                self.timeout_s,
                format!("seconds, > 0 and at most {MAX_TIMEOUT_S}"),
            );
        }
        p.into_result(())
    }

    /// The lowest success rate that passes, in percent.
    pub fn min_success_percent(&self) -> f64 {
        100.0 * (1.0 - self.max_error_rate)
    }

    /// The load engine's configuration for `target`.
    fn load(&self, target: &Target) -> loadtest::Config {
        // Enough connections that requests do not queue behind answers that take the whole
        // timeout (open loop: every scheduled request is sent on time while connections last).
        let connect_timeout = self.timeout_s.min(2.0);
        let busy = (self.rps * (self.timeout_s + connect_timeout)).ceil();
        let connections = if busy.is_finite() {
            (busy as usize).clamp(4, 256)
        } else {
            4
        };
        loadtest::Config {
            url: target.url.clone(),
            rate: self.rps,
            duration: self.duration_s,
            connections,
            connect_timeout,
            timeout: self.timeout_s,
            breakdown_headers: vec![ZONE_HEADER.to_owned()],
            // A probe at a few requests per second does not need sub-millisecond pacing.
            pacer: loadtest::Pacer::Timer,
            late_start_ms: 50.0,
            slo: loadtest::Slo {
                p99_ms: Some(self.p99_ms),
                max_error_rate: Some(self.max_error_rate),
                min_success_rate: Some(1.0 - self.max_error_rate),
                ..Default::default()
            },
            resolver: target.resolver(),
            ..Default::default()
        }
    }
}

/// One objective of the check and how it went (a JUnit test case).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Objective {
    /// `success-rate`, `latency-p99` or `errors`.
    pub name: String,
    /// True when met.
    pub passed: bool,
    /// One sentence with the measured value and the objective.
    pub detail: String,
}

/// What a check measured and its verdict. Serializes to the JSON of `--json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckResult {
    /// [`CHECK_SCHEMA`].
    pub schema: u32,
    /// The URL probed.
    pub url: String,
    /// `sandbox` or `aws` ([`Target::kind`]).
    pub target: String,
    /// True when every objective was met.
    pub passed: bool,
    /// One sentence per broken objective, with the numbers; empty when passed.
    pub reasons: Vec<String>,
    /// Every objective, met or not, in the order `success-rate`, `latency-p99`, `errors`.
    pub objectives: Vec<Objective>,
    /// What was asked.
    pub config: CheckConfig,
    /// 2xx/3xx answers over scheduled requests, in percent.
    pub success_percent: f64,
    /// Errors over scheduled requests, in percent.
    pub error_percent: f64,
    /// Corrected median latency of the answers, in milliseconds (0 without answers).
    pub p50_ms: f64,
    /// Corrected 99th percentile latency of the answers, in milliseconds (0 without answers).
    pub p99_ms: f64,
    /// Requests scheduled (each one either answered, failed or never sent).
    pub requests: u64,
    /// Answers (any status).
    pub responses: u64,
    /// Transport errors, unsent requests and 5xx answers.
    pub errors: u64,
    /// Answers per HTTP status.
    pub statuses: BTreeMap<String, u64>,
    /// Failed requests per kind (`refused`, `timeout`, `reset`, `dns`, `tls`, `other`); kinds
    /// that did not happen are left out.
    pub errors_by_kind: BTreeMap<String, u64>,
    /// Answers per availability zone (the `x-az` header; `(none)` when absent).
    pub zones: BTreeMap<String, u64>,
    /// When the probe started, milliseconds since the Unix epoch.
    pub started_unix_ms: u64,
    /// How long it ran, in seconds (the schedule plus the wait for the last answers).
    pub duration_s: f64,
}

/// Probes `target` as `config` asks and judges it. A failing verdict is a result, not an error:
/// `Err` means the check could not run (invalid configuration, the engine could not start).
pub async fn run(target: &Target, config: &CheckConfig) -> Result<CheckResult, Error> {
    config.validate().map_err(Error::Invalid)?;
    let load = config.load(target);
    let started_unix_ms = now_unix_ms();
    match loadtest::run(load.clone(), None).await {
        Ok(report) => Ok(judge(target, config, &report)),
        Err(e @ (loadtest::Error::Resolve { .. } | loadtest::Error::NoAddress { .. })) => Ok(
            unresolved(target, config, &load, started_unix_ms, &e.to_string()),
        ),
        Err(e) => Err(Error::Load(e)),
    }
}

fn now_unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn percent(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 * 100.0 / whole as f64
    }
}

/// The verdict on a finished run.
fn judge(target: &Target, config: &CheckConfig, report: &loadtest::Report) -> CheckResult {
    let errors = report.errors + report.unsent + report.server_errors();
    let latency = &report.latency_ms.corrected;
    let zones = report
        .by_header
        .get(ZONE_HEADER)
        .cloned()
        .unwrap_or_default();
    let errors_by_kind = report
        .errors_by_kind
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|(k, n)| (k.clone(), *n))
        .collect();
    let measured = Measured {
        requests: report.scheduled,
        ok: report.ok,
        responses: report.completed,
        errors,
        p50_ms: latency.p50,
        p99_ms: latency.p99,
        errors_by_kind: &report.errors_by_kind,
        unsent: report.unsent,
        server_errors: report.server_errors(),
    };
    let objectives = measured.objectives(config);
    finish(
        target,
        config,
        objectives,
        Figures {
            measured,
            statuses: report.statuses.clone(),
            errors_by_kind,
            zones,
            started_unix_ms: report.started_unix_ms,
            duration_s: report.elapsed_s,
        },
    )
}

/// The verdict when the host name did not resolve: nothing could be sent.
fn unresolved(
    target: &Target,
    config: &CheckConfig,
    load: &loadtest::Config,
    started_unix_ms: u64,
    why: &str,
) -> CheckResult {
    let requests = loadtest::scheduled_requests(load);
    let kinds = BTreeMap::from([("dns".to_owned(), requests)]);
    let measured = Measured {
        requests,
        ok: 0,
        responses: 0,
        errors: requests,
        p50_ms: 0.0,
        p99_ms: 0.0,
        errors_by_kind: &kinds,
        unsent: 0,
        server_errors: 0,
    };
    let mut objectives = measured.objectives(config);
    if let Some(errors) = objectives.iter_mut().find(|o| o.name == "errors") {
        errors.detail = format!("{why}: none of the {requests} requests could be sent.");
    }
    finish(
        target,
        config,
        objectives,
        Figures {
            measured,
            statuses: BTreeMap::new(),
            errors_by_kind: kinds.clone(),
            zones: BTreeMap::new(),
            started_unix_ms,
            duration_s: 0.0,
        },
    )
}

struct Measured<'a> {
    requests: u64,
    ok: u64,
    responses: u64,
    errors: u64,
    p50_ms: f64,
    p99_ms: f64,
    /// Transport errors by kind.
    errors_by_kind: &'a BTreeMap<String, u64>,
    unsent: u64,
    server_errors: u64,
}

struct Figures<'a> {
    measured: Measured<'a>,
    statuses: BTreeMap<String, u64>,
    errors_by_kind: BTreeMap<String, u64>,
    zones: BTreeMap<String, u64>,
    started_unix_ms: u64,
    duration_s: f64,
}

impl Measured<'_> {
    fn objectives(&self, config: &CheckConfig) -> Vec<Objective> {
        let success = percent(self.ok, self.requests);
        let min_success = config.min_success_percent();
        let success_rate = Objective {
            name: "success-rate".to_owned(),
            passed: self.requests > 0 && success >= min_success,
            detail: format!(
                "success rate was {success:.2}% ({} of {} requests answered 2xx/3xx), {} the {}% objective.",
                self.ok,
                self.requests,
                if success >= min_success {
                    "meeting"
                } else {
                    "under"
                },
                trim(min_success)
            ),
        };
        let latency_p99 = if self.responses == 0 {
            Objective {
                name: "latency-p99".to_owned(),
                passed: false,
                detail: format!(
                    "no request was answered, so the p99 latency (objective {} ms) could not be measured.",
                    trim(config.p99_ms)
                ),
            }
        } else {
            let ok = self.p99_ms <= config.p99_ms;
            Objective {
                name: "latency-p99".to_owned(),
                passed: ok,
                detail: format!(
                    "p99 latency was {:.2} ms (p50 {:.2} ms), {} the {} ms objective.",
                    self.p99_ms,
                    self.p50_ms,
                    if ok { "within" } else { "over" },
                    trim(config.p99_ms)
                ),
            }
        };
        let error_rate = percent(self.errors, self.requests);
        let max_error = config.max_error_rate * 100.0;
        let kinds: Vec<String> = self
            .errors_by_kind
            .iter()
            .filter(|(_, n)| **n > 0)
            .map(|(k, n)| format!("{n} {k}"))
            .collect();
        let mut parts = kinds;
        if self.unsent > 0 {
            parts.push(format!("{} never sent", self.unsent));
        }
        if self.server_errors > 0 {
            parts.push(format!("{} 5xx", self.server_errors));
        }
        let errors = Objective {
            name: "errors".to_owned(),
            passed: error_rate <= max_error,
            detail: format!(
                "error rate was {error_rate:.2}% ({} of {} requests{}), {} the {}% objective.",
                self.errors,
                self.requests,
                if parts.is_empty() {
                    String::new()
                } else {
                    format!(": {}", parts.join(", "))
                },
                if error_rate <= max_error {
                    "within"
                } else {
                    "over"
                },
                trim(max_error)
            ),
        };
        vec![success_rate, latency_p99, errors]
    }
}

/// A number without a trailing `.0`.
fn trim(v: f64) -> String {
    let s = format!("{v:.4}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    s.to_owned()
}

fn finish(
    target: &Target,
    config: &CheckConfig,
    objectives: Vec<Objective>,
    f: Figures<'_>,
) -> CheckResult {
    let reasons: Vec<String> = objectives
        .iter()
        .filter(|o| !o.passed)
        .map(|o| o.detail.clone())
        .collect();
    let m = &f.measured;
    CheckResult {
        schema: CHECK_SCHEMA,
        url: target.url.clone(),
        target: target.kind.clone(),
        passed: reasons.is_empty(),
        reasons,
        objectives,
        config: config.clone(),
        success_percent: percent(m.ok, m.requests),
        error_percent: percent(m.errors, m.requests),
        p50_ms: m.p50_ms,
        p99_ms: m.p99_ms,
        requests: m.requests,
        responses: m.responses,
        errors: m.errors,
        statuses: f.statuses,
        errors_by_kind: f.errors_by_kind,
        zones: f.zones,
        started_unix_ms: f.started_unix_ms,
        duration_s: f.duration_s,
    }
}

impl CheckResult {
    /// The result as pretty JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
    }

    /// The result as a JUnit XML report: one test suite [`SUITE`] with the test cases
    /// `success-rate`, `latency-p99` and `errors`, each with a `<failure>` when broken.
    pub fn to_junit(&self) -> String {
        junit::render(self)
    }

    /// One line of figures, e.g. `150 requests in 30.0 s: 100.00% success, 0 errors, p50 1.20
    /// ms, p99 3.40 ms; zones eu-west-1a 75, eu-west-1b 75`.
    pub fn summary(&self) -> String {
        let zones = if self.zones.is_empty() {
            "no zone seen".to_owned()
        } else {
            let z: Vec<String> = self.zones.iter().map(|(k, v)| format!("{k} {v}")).collect();
            format!("zones {}", z.join(", "))
        };
        format!(
            "{} requests in {:.1} s to {}: {:.2}% success, {} errors, p50 {:.2} ms, p99 {:.2} ms; {zones}",
            self.requests,
            self.duration_s,
            self.url,
            self.success_percent,
            self.errors,
            self.p50_ms,
            self.p99_ms
        )
    }

    /// `PASS` with the objectives, or `FAIL` with one line per broken objective.
    pub fn verdict(&self) -> String {
        if self.passed {
            format!(
                "PASS: success rate >= {}%, p99 <= {} ms, error rate <= {}%",
                trim(self.config.min_success_percent()),
                trim(self.config.p99_ms),
                trim(self.config.max_error_rate * 100.0)
            )
        } else {
            let mut s = String::from("FAIL:");
            for r in &self.reasons {
                s.push_str("\n  - ");
                s.push_str(r);
            }
            s
        }
    }

    /// The CloudWatch data points of the result: `SuccessPercent`, `LatencyP99` and
    /// `RequestCount`, without dimensions, at the time the check started.
    pub fn metric_data(&self) -> Vec<MetricDatum> {
        let at = DateTime::from_millis(i64::try_from(self.started_unix_ms).unwrap_or(i64::MAX));
        [
            (
                observability::SUCCESS_PERCENT,
                self.success_percent,
                StandardUnit::Percent,
            ),
            (
                observability::LATENCY_P99,
                self.p99_ms,
                StandardUnit::Milliseconds,
            ),
            (
                observability::REQUEST_COUNT,
                self.requests as f64,
                StandardUnit::Count,
            ),
        ]
        .into_iter()
        .map(|(name, value, unit)| {
            MetricDatum::builder()
                .metric_name(name)
                .value(value)
                .unit(unit)
                .timestamp(at)
                .build()
        })
        .collect()
    }
}

/// Puts the result's metrics ([`CheckResult::metric_data`]) into `namespace`, the stack's
/// `observability::check_namespace`, in one `PutMetricData` call.
pub async fn publish(
    cw: &aws_sdk_cloudwatch::Client,
    namespace: &str,
    result: &CheckResult,
) -> Result<(), Error> {
    cw.put_metric_data()
        .namespace(namespace)
        .set_metric_data(Some(result.metric_data()))
        .send()
        .await
        .map_err(crate::error::aws("PutMetricData", namespace))?;
    Ok(())
}

/// A CloudWatch client for `cx` (its SDK configuration and interceptors), for [`publish`].
pub fn cloudwatch(cx: &infra::Context) -> aws_sdk_cloudwatch::Client {
    infra::client!(cx, aws_sdk_cloudwatch)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_bad_values_name_field_value_and_range() {
        assert_eq!(CheckConfig::default().validate(), Ok(()));
        let bad = CheckConfig {
            rps: 0.0,
            duration_s: f64::NAN,
            p99_ms: -1.0,
            max_error_rate: 1.5,
            timeout_s: 61.0,
        };
        let problems = bad.validate().unwrap_err();
        let fields: Vec<&str> = problems.0.iter().map(|p| p.field.as_str()).collect();
        assert_eq!(
            fields,
            ["rps", "duration", "p99-ms", "max-error-rate", "timeout"]
        );
        assert_eq!(problems.0[3].value, "1.5");
        assert!(problems.0[3].allowed.contains("between 0 and 1"));
        let too_short = CheckConfig {
            rps: 0.5,
            duration_s: 1.0,
            ..Default::default()
        };
        let p = too_short.validate().unwrap_err();
        assert_eq!(p.0.len(), 1);
        assert!(p.0[0].allowed.contains("at least 2.000 seconds"), "{p:?}");
    }

    #[test]
    fn config_reads_kebab_case_and_rejects_unknown_keys() {
        let c: CheckConfig =
            serde_json::from_str(r#"{"rps": 2, "duration": 10, "p99-ms": 250}"#).unwrap();
        assert_eq!(
            (c.rps, c.duration_s, c.p99_ms, c.max_error_rate),
            (2.0, 10.0, 250.0, 0.01)
        );
        assert!(serde_json::from_str::<CheckConfig>(r#"{"rate": 2}"#).is_err());
    }

    fn target() -> Target {
        Target {
            url: "http://web.example/".into(),
            connect_to: Vec::new(),
            dns_server: None,
            nodes: Vec::new(),
            kind: "aws".into(),
        }
    }

    #[test]
    fn objectives_from_figures() {
        let none = BTreeMap::new();
        let healthy = Measured {
            requests: 100,
            ok: 100,
            responses: 100,
            errors: 0,
            p50_ms: 2.0,
            p99_ms: 8.0,
            errors_by_kind: &none,
            unsent: 0,
            server_errors: 0,
        };
        let o = healthy.objectives(&CheckConfig::default());
        assert!(o.iter().all(|o| o.passed), "{o:?}");

        let refused = BTreeMap::from([("refused".to_owned(), 100)]);
        let down = Measured {
            requests: 100,
            ok: 0,
            responses: 0,
            errors: 100,
            p50_ms: 0.0,
            p99_ms: 0.0,
            errors_by_kind: &refused,
            unsent: 0,
            server_errors: 0,
        };
        let r = finish(
            &target(),
            &CheckConfig::default(),
            down.objectives(&CheckConfig::default()),
            Figures {
                measured: down,
                statuses: BTreeMap::new(),
                errors_by_kind: refused.clone(),
                zones: BTreeMap::new(),
                started_unix_ms: 0,
                duration_s: 1.0,
            },
        );
        assert!(!r.passed);
        assert_eq!(
            r.reasons,
            [
                "success rate was 0.00% (0 of 100 requests answered 2xx/3xx), under the 99% objective.",
                "no request was answered, so the p99 latency (objective 500 ms) could not be measured.",
                "error rate was 100.00% (100 of 100 requests: 100 refused), over the 1% objective.",
            ]
        );
    }

    #[test]
    fn metric_data_are_the_dashboards_three_lines() {
        let c = CheckConfig::default();
        let none = BTreeMap::new();
        let m = Measured {
            requests: 150,
            ok: 147,
            responses: 150,
            errors: 3,
            p50_ms: 1.5,
            p99_ms: 12.5,
            errors_by_kind: &none,
            unsent: 0,
            server_errors: 0,
        };
        let r = finish(
            &target(),
            &c,
            m.objectives(&c),
            Figures {
                measured: m,
                statuses: BTreeMap::new(),
                errors_by_kind: BTreeMap::new(),
                zones: BTreeMap::new(),
                started_unix_ms: 1_700_000_000_000,
                duration_s: 30.0,
            },
        );
        let data = r.metric_data();
        let got: Vec<(&str, f64, &StandardUnit, usize)> = data
            .iter()
            .map(|d| {
                (
                    d.metric_name().unwrap(),
                    d.value().unwrap(),
                    d.unit().unwrap(),
                    d.dimensions().len(),
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                ("SuccessPercent", 98.0, &StandardUnit::Percent, 0),
                ("LatencyP99", 12.5, &StandardUnit::Milliseconds, 0),
                ("RequestCount", 150.0, &StandardUnit::Count, 0),
            ]
        );
    }
}
