//! Figures of a span of seconds of one load run: counts, exact latency percentiles (merged
//! from the per-second histograms), and the traffic per zone and per task.

use std::collections::{BTreeMap, BTreeSet};

use loadtest::{Percentiles, Report, Second};

use crate::report::SloSpec;

/// The header whose values name the zone that answered.
pub(crate) const ZONE_HEADER: &str = "x-az";
/// The header whose values name the task that answered.
pub(crate) const TASK_HEADER: &str = "x-task";
const NONE: &str = "(none)";

/// Requests that failed in one second: transport errors and 5xx responses.
pub(crate) fn failed(s: &Second) -> u64 {
    s.errors
        + s.statuses
            .iter()
            .filter(|(k, _)| k.starts_with('5'))
            .map(|(_, v)| v)
            .sum::<u64>()
}

/// Responses per value of `header` in one second (without "(none)").
pub(crate) fn values<'a>(s: &'a Second, header: &str) -> impl Iterator<Item = (&'a String, u64)> {
    s.by_header
        .get(header)
        .into_iter()
        .flat_map(|m| m.iter())
        .filter(|(k, n)| k.as_str() != NONE && **n > 0)
        .map(|(k, n)| (k, *n))
}

/// The figures of seconds `[from, to)` of a run.
#[derive(Debug, Clone, Default)]
pub(crate) struct Window {
    /// Seconds covered.
    pub(crate) seconds: u32,
    pub(crate) sent: u64,
    pub(crate) ok: u64,
    pub(crate) failed: u64,
    pub(crate) latency: Option<Percentiles>,
    pub(crate) zones: BTreeMap<String, u64>,
    pub(crate) tasks: BTreeSet<String>,
}

impl Window {
    /// Seconds `[from, to)` of `report` (clamped to the run).
    pub(crate) fn of(report: &Report, from: u32, to: u32) -> Window {
        let n = u32::try_from(report.series.len()).unwrap_or(u32::MAX);
        let (from, to) = (from.min(n), to.min(n));
        let mut w = Window {
            seconds: to.saturating_sub(from),
            ..Window::default()
        };
        for s in report
            .series
            .iter()
            .skip(from as usize)
            .take(w.seconds as usize)
        {
            w.sent += s.sent;
            w.ok += s.ok;
            w.failed += failed(s);
            for (zone, n) in values(s, ZONE_HEADER) {
                *w.zones.entry(zone.clone()).or_default() += n;
            }
            w.tasks
                .extend(values(s, TASK_HEADER).map(|(task, _)| task.clone()));
        }
        let h = report.latency_between(from, to);
        if !h.is_empty() {
            w.latency = Some(Percentiles::of(&h));
        }
        w
    }

    /// Failed requests over requests (0 when none was sent).
    pub(crate) fn error_rate(&self) -> f64 {
        let total = (self.ok + self.failed).max(self.sent);
        if total == 0 {
            0.0
        } else {
            self.failed as f64 / total as f64
        }
    }

    /// The 99th percentile, ms (0 when nothing completed).
    pub(crate) fn p99(&self) -> f64 {
        self.latency.as_ref().map_or(0.0, |l| l.p99)
    }

    /// The median, ms.
    pub(crate) fn p50(&self) -> f64 {
        self.latency.as_ref().map_or(0.0, |l| l.p50)
    }

    /// The share of responses `zone` gave, percent.
    pub(crate) fn zone_share(&self, zone: &str) -> f64 {
        let total: u64 = self.zones.values().sum();
        if total == 0 {
            0.0
        } else {
            self.zones.get(zone).copied().unwrap_or(0) as f64 * 100.0 / total as f64
        }
    }

    /// The zones and their shares, e.g. `eu-west-1a 50.2 %, eu-west-1b 49.8 %`.
    pub(crate) fn split(&self) -> String {
        if self.zones.is_empty() {
            return "no zone answered".to_owned();
        }
        self.zones
            .keys()
            .map(|z| format!("{z} {:.1} %", self.zone_share(z)))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Whether the window meets `slo`, and the sentence that says so.
    pub(crate) fn slo(&self, slo: &SloSpec) -> (bool, String) {
        let p99 = self.p99();
        let rate = self.error_rate();
        let ok = self.sent > 0 && p99 <= slo.p99_ms && rate <= slo.max_error_rate;
        let detail = if self.sent == 0 {
            format!("no request was sent in {} s", self.seconds)
        } else {
            format!(
                "p99 {p99:.1} ms (objective {} ms), errors {:.2} % (objective {:.2} %) over {} requests in {} s",
                slo.p99_ms,
                rate * 100.0,
                slo.max_error_rate * 100.0,
                self.sent,
                self.seconds
            )
        };
        (ok, detail)
    }
}
