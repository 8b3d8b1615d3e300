//! What a proof run found, in one serializable model: the verdict of every scenario with its
//! checks and figures, the per-second timeline of the whole run (load, latency, errors, traffic
//! per zone and per task) and the service's task counts over time, with the scenarios and the
//! fault window marked. The terminal table, the JSON file and the HTML page are all drawn from it.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use aws_model::{Clock, Span};
use serde::{Deserialize, Serialize};

use crate::model::Prediction;

/// The version of [`ProofReport`]'s JSON form; fields are only ever added within a version.
pub const SCHEMA: u32 = 1;

/// The result of `prove`: every scenario, the timeline and the verdict.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProofReport {
    /// [`SCHEMA`].
    pub schema: u32,
    /// The stack's name.
    pub stack: String,
    /// Its region.
    pub region: String,
    /// The URL the load went to (the load balancer).
    pub url: String,
    /// Where it ran: `sandbox` or `aws`.
    pub target: String,
    /// The clock the stack ran on (AWS's, or the sandbox's faster one). Times of figures are
    /// AWS seconds; the timeline's `t` are wall seconds.
    #[serde(default)]
    pub clock: Clock,
    /// What the model predicted before the run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prediction: Option<Prediction>,
    /// Unix time of the start, milliseconds. Every `t` below counts seconds from it.
    pub started_unix_ms: u64,
    /// Wall time of the whole run, seconds.
    pub elapsed_s: f64,
    /// The peak request rate asked for (`--rps`).
    pub rps: f64,
    /// The objectives every scenario is judged by.
    pub slo: SloSpec,
    /// The scenarios, in the order they ran.
    pub scenarios: Vec<ScenarioResult>,
    /// One entry per second of load, across all scenarios.
    pub timeline: Vec<Point>,
    /// The service as ECS reported it, sampled about once a second.
    pub service: Vec<ServicePoint>,
    /// Time spans to show on charts: scenarios and fault windows.
    pub marks: Vec<Mark>,
    /// The writes beside the load (a stack with a database, in az-failover), per second of
    /// their answers. Empty otherwise.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub writes: Vec<WritePoint>,
    /// Whether every scenario passed.
    pub passed: bool,
}

/// One second of writes (`POST /orders`), by when they were answered.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct WritePoint {
    /// Seconds from the report's start; the entry covers `[t, t + 1)`.
    pub t: f64,
    /// Acknowledged (200 or 201: committed).
    pub acknowledged: u64,
    /// Failed (an error status, or no answer).
    pub failed: u64,
}

/// The service-level objectives.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SloSpec {
    /// 99th percentile latency, ms (from the intended send time, coordinated omission corrected).
    pub p99_ms: f64,
    /// Share of failed requests (transport errors, unsent, 5xx) allowed, 0..=1.
    pub max_error_rate: f64,
}

/// One scenario's verdict.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScenarioResult {
    /// `baseline`, `scaling` or `az-failover`.
    pub name: String,
    /// Whether every check passed.
    pub passed: bool,
    /// Start, seconds from the report's start.
    pub start_s: f64,
    /// End, seconds from the report's start.
    pub end_s: f64,
    /// What was judged, each with its outcome and the numbers behind it.
    pub checks: Vec<Check>,
    /// What was measured.
    pub figures: Vec<Figure>,
    /// Remarks that do not change the verdict (e.g. a limit that capped the result).
    pub notes: Vec<String>,
}

/// One judged condition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Check {
    /// What is checked, e.g. `errors stop after the fault`.
    pub name: String,
    /// Whether it held.
    pub passed: bool,
    /// The numbers: what was seen against what was allowed.
    pub detail: String,
}

/// One measured number.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Figure {
    /// Stable key, snake_case, e.g. `time_to_detect_s`.
    pub key: String,
    /// What it is, for people.
    pub label: String,
    /// The value (`None` when it could not be measured, e.g. no scale-out happened).
    pub value: Option<f64>,
    /// Its unit: `s`, `ms`, `%`, `rps`, `requests`, `tasks`.
    pub unit: String,
    /// What the model predicted for it (times in AWS seconds), if it predicts it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub predicted: Option<Span>,
}

/// One second of load.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Point {
    /// Seconds from the report's start; the entry covers `[t, t + 1)`.
    pub t: f64,
    /// Requests started.
    pub sent: u64,
    /// 2xx/3xx responses.
    pub ok: u64,
    /// Failed requests: transport errors and 5xx responses.
    pub errors: u64,
    /// Median corrected latency, ms (0 when nothing completed).
    pub p50_ms: f64,
    /// 99th percentile corrected latency, ms.
    pub p99_ms: f64,
    /// Responses per availability zone (the `x-az` header).
    pub by_zone: BTreeMap<String, u64>,
    /// Distinct tasks (values of the `x-task` header) that answered in this second.
    pub tasks_serving: u32,
}

/// The service's counts at one moment.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ServicePoint {
    /// Seconds from the report's start.
    pub t: f64,
    /// ECS desired count.
    pub desired: u32,
    /// ECS running count.
    pub running: u32,
    /// Running tasks per zone (from each task's subnet).
    pub running_by_zone: BTreeMap<String, u32>,
}

/// What a [`Mark`] marks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MarkKind {
    /// A scenario's span.
    Scenario,
    /// A fault was in place (shaded on charts).
    Fault,
    /// Load that no check counts: the baseline's warm-up (greyed on charts).
    Warmup,
}

/// A labelled time span.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Mark {
    /// What it marks.
    pub kind: MarkKind,
    /// Its label, e.g. `az-failover` or `eu-west-1a isolated`.
    pub label: String,
    /// Start, seconds from the report's start.
    pub start_s: f64,
    /// End, seconds from the report's start.
    pub end_s: f64,
}

impl Figure {
    /// A figure.
    pub fn new(key: &str, label: &str, value: Option<f64>, unit: &str) -> Self {
        Figure {
            key: key.to_owned(),
            label: label.to_owned(),
            value,
            unit: unit.to_owned(),
            predicted: None,
        }
    }

    /// The same figure with what the model predicted for it.
    pub fn predicted(mut self, span: Option<Span>) -> Self {
        self.predicted = span;
        self
    }

    /// How far the value is from the prediction's expected value, as a fraction of it.
    pub fn deviation(&self) -> Option<f64> {
        Some(self.predicted?.deviation(self.value?))
    }

    /// The value with the prediction beside it, for people.
    pub fn display_with_prediction(&self) -> String {
        match (&self.predicted, self.deviation()) {
            (Some(p), Some(d)) => format!(
                "{}  (predicted {p}; {:+.0} %)",
                self.display(),
                (self.value.unwrap_or(0.0) - p.expected).signum() * d * 100.0
            ),
            (Some(p), None) => format!("{}  (predicted {p})", self.display()),
            _ => self.display(),
        }
    }

    /// The value with its unit, for people (`-` when not measured).
    pub fn display(&self) -> String {
        match self.value {
            None => "-".to_owned(),
            Some(v) => match self.unit.as_str() {
                "ms" => format!("{v:.1} ms"),
                "s" => format!("{v:.1} s"),
                "%" => format!("{v:.2} %"),
                "rps" => format!("{v:.0} rps"),
                "" => format!("{v}"),
                unit => format!("{v} {unit}"),
            },
        }
    }
}

impl ScenarioResult {
    /// The figure with `key`, if measured.
    pub fn figure(&self, key: &str) -> Option<f64> {
        self.figures
            .iter()
            .find(|f| f.key == key)
            .and_then(|f| f.value)
    }

    /// The reasons it failed: one line per failed check.
    pub fn failures(&self) -> Vec<String> {
        self.checks
            .iter()
            .filter(|c| !c.passed)
            .map(|c| format!("{}: {}", c.name, c.detail))
            .collect()
    }
}

impl ProofReport {
    /// The JSON form (schema [`SCHEMA`]).
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
    }

    /// The scenario called `name`.
    pub fn scenario(&self, name: &str) -> Option<&ScenarioResult> {
        self.scenarios.iter().find(|s| s.name == name)
    }

    /// The terminal table: one block per scenario with its verdict, checks and figures, and the
    /// overall verdict last.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "stack {} ({}, {}, {}) at {}: {} rps peak, SLO p99 <= {} ms, errors <= {:.2} %; times in AWS seconds",
            self.stack,
            self.target,
            self.region,
            self.clock,
            self.url,
            self.rps,
            self.slo.p99_ms,
            self.slo.max_error_rate * 100.0
        );
        let width = self
            .scenarios
            .iter()
            .flat_map(|s| {
                s.checks
                    .iter()
                    .map(|c| c.name.len())
                    .chain(s.figures.iter().map(|f| f.label.len()))
            })
            .max()
            .unwrap_or(10);
        for s in &self.scenarios {
            let _ = writeln!(
                out,
                "\n{:<12} {}   ({:.0}s .. {:.0}s)",
                s.name,
                if s.passed { "PASS" } else { "FAIL" },
                s.start_s,
                s.end_s
            );
            for c in &s.checks {
                let _ = writeln!(
                    out,
                    "  {} {:<width$}  {}",
                    if c.passed { "ok  " } else { "FAIL" },
                    c.name,
                    c.detail
                );
            }
            for f in &s.figures {
                let _ = writeln!(
                    out,
                    "       {:<width$}  {}",
                    f.label,
                    f.display_with_prediction()
                );
            }
            for n in &s.notes {
                let _ = writeln!(out, "  note: {n}");
            }
        }
        let failed: Vec<&str> = self
            .scenarios
            .iter()
            .filter(|s| !s.passed)
            .map(|s| s.name.as_str())
            .collect();
        let _ = writeln!(
            out,
            "\nVerdict: {} ({} of {} scenarios passed{}) in {:.0} s",
            if self.passed { "PASS" } else { "FAIL" },
            self.scenarios.len() - failed.len(),
            self.scenarios.len(),
            if failed.is_empty() {
                String::new()
            } else {
                format!("; failed: {}", failed.join(", "))
            },
            self.elapsed_s
        );
        out
    }
}
