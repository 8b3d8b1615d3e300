//! Results: the per-second [`Second`] series, live [`Snapshot`]s, the final [`Report`] with its
//! outputs (summary, JSON, CSV, HdrHistogram interval log) and the SLO [`Verdict`].

use std::collections::BTreeMap;
use std::fmt::{self, Write as _};
use std::io;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use hdrhistogram::Histogram;
use hdrhistogram::serialization::interval_log::IntervalLogWriterBuilder;
use hdrhistogram::serialization::{Deserializer, Serializer, V2DeflateSerializer, V2Serializer};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::config::{Config, Slo, Spec, Stage, addr_key};
use crate::record::{ErrorKind, Frame, count, new_histogram};
use crate::schedule::Schedule;

mod collect;
mod shard;

pub(crate) use collect::{Collector, Live};
pub use collect::{histogram, scheduled_requests};

/// Latency percentiles in milliseconds.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Percentiles {
    /// Number of samples.
    pub count: u64,
    /// Smallest.
    pub min: f64,
    /// Mean.
    pub mean: f64,
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 95th percentile.
    pub p95: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p99_9: f64,
    /// Largest.
    pub max: f64,
}

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

impl Percentiles {
    /// Percentiles of a histogram of microseconds.
    pub fn of(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return Self::default();
        }
        Self {
            count: h.len(),
            min: ms(h.min()),
            mean: h.mean() / 1000.0,
            p50: ms(h.value_at_quantile(0.50)),
            p90: ms(h.value_at_quantile(0.90)),
            p95: ms(h.value_at_quantile(0.95)),
            p99: ms(h.value_at_quantile(0.99)),
            p99_9: ms(h.value_at_quantile(0.999)),
            max: ms(h.max()),
        }
    }
}

/// One second of the run (all workers merged).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Second {
    /// Seconds since the start: this entry covers `[t, t + 1)`.
    pub t: u32,
    /// Requests started.
    pub sent: u64,
    /// Responses received (any status).
    pub completed: u64,
    /// 2xx and 3xx responses.
    pub ok: u64,
    /// Requests that failed without a response.
    pub errors: u64,
    /// Requests started later than the late-start threshold.
    pub late_starts: u64,
    /// Median corrected latency of the responses completed in this second, ms (0 when none).
    pub p50_ms: f64,
    /// 99th percentile corrected latency, ms.
    pub p99_ms: f64,
    /// Largest corrected latency, ms.
    pub max_ms: f64,
    /// Responses per status code.
    pub statuses: BTreeMap<String, u64>,
    /// Errors per kind (only kinds that occurred).
    pub errors_by_kind: BTreeMap<String, u64>,
    /// Responses and errors per remote address `ip:port`.
    pub by_addr: BTreeMap<String, u64>,
    /// Failed requests per remote address `ip:port` (also in `by_addr`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub errors_by_addr: BTreeMap<String, u64>,
    /// Failed connection attempts per remote address `ip:port` (the next address was tried).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub connect_failures: BTreeMap<String, u64>,
    /// Per breakdown header: responses per header value (`"(none)"` when absent).
    pub by_header: BTreeMap<String, BTreeMap<String, u64>>,
}

/// The live state of a run, published once per second.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    /// Seconds since the start.
    pub elapsed_s: f64,
    /// Seconds of schedule left (0 while draining).
    pub remaining_s: f64,
    /// Requests started so far.
    pub sent: u64,
    /// Responses so far.
    pub completed: u64,
    /// Errors so far.
    pub errors: u64,
    /// Number of complete seconds in the series.
    pub seconds: usize,
    /// The latest complete second.
    pub last: Option<Second>,
}

impl Snapshot {
    /// A one-line progress display: rate, errors, p99, elapsed/remaining.
    pub fn line(&self) -> String {
        let (rate, p99) = self
            .last
            .as_ref()
            .map(|s| (s.completed + s.errors, s.p99_ms))
            .unwrap_or((0, 0.0));
        format!(
            "{:>6.0}s elapsed {:>6.0}s left | {rate:>7} req/s | p99 {p99:>8.2} ms | sent {} ok+other {} errors {}",
            self.elapsed_s, self.remaining_s, self.sent, self.completed, self.errors
        )
    }
}

/// DNS activity during the run.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Dns {
    /// Resolutions made (the first one included).
    pub resolutions: u64,
    /// Re-resolutions that failed or returned nothing (the previous list was kept).
    pub failures: u64,
    /// Re-resolutions that changed the address list.
    pub changes: u64,
    /// Every address seen.
    pub addresses: Vec<String>,
}

/// Corrected and raw latency.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Latency {
    /// From the intended send time (coordinated-omission corrected).
    pub corrected: Percentiles,
    /// From the actual send time.
    pub raw: Percentiles,
}

/// The result of a run. Serializes to the JSON schema documented at the crate root; a
/// generator of a distributed run hands it on whole with [`Report::to_shard`], and
/// [`Report::merge`] adds several exactly.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Report {
    /// JSON schema version (1).
    pub schema: u32,
    /// Target URL.
    pub url: String,
    /// HTTP method.
    pub method: String,
    /// Starting (or constant) rate.
    pub rate: f64,
    /// Stages (one for a constant-rate run).
    pub stages: Vec<Stage>,
    /// Connection cap.
    pub connections: usize,
    /// Worker threads.
    pub threads: usize,
    /// Start time, ms since the Unix epoch.
    pub started_unix_ms: u64,
    /// Scheduled length, s.
    pub schedule_s: f64,
    /// Wall time from the start to the last response, s.
    pub elapsed_s: f64,
    /// Requests released by the schedule (sent + unsent).
    pub scheduled: u64,
    /// Requests started.
    pub sent: u64,
    /// Responses (any status).
    pub completed: u64,
    /// 2xx and 3xx responses.
    pub ok: u64,
    /// Requests that failed without a response.
    pub errors: u64,
    /// Scheduled requests never started (still queued when the drain deadline passed).
    pub unsent: u64,
    /// Requests started later than the late-start threshold.
    pub late_starts: u64,
    /// Connections opened.
    pub connects: u64,
    /// Responses and errors per second of schedule.
    pub achieved_rate: f64,
    /// Responses per status code.
    pub statuses: BTreeMap<String, u64>,
    /// Errors per kind (every kind listed).
    pub errors_by_kind: BTreeMap<String, u64>,
    /// Latency percentiles, ms.
    pub latency_ms: Latency,
    /// How late the pacer released intended send times, ms.
    pub pacer_lateness_ms: Percentiles,
    /// Responses and errors per remote address.
    pub by_addr: BTreeMap<String, u64>,
    /// Failed requests per remote address (also in `by_addr`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub errors_by_addr: BTreeMap<String, u64>,
    /// Failed connection attempts per remote address (the next address was tried).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub connect_failures: BTreeMap<String, u64>,
    /// Per breakdown header: responses per value.
    pub by_header: BTreeMap<String, BTreeMap<String, u64>>,
    /// DNS activity.
    pub dns: Dns,
    /// One entry per second.
    pub series: Vec<Second>,
    /// Corrected latency histogram, µs (merged from every worker).
    #[serde(skip, default = "histogram")]
    pub corrected: Histogram<u64>,
    /// Raw latency histogram, µs.
    #[serde(skip, default = "histogram")]
    pub raw: Histogram<u64>,
    /// How late the pacer released intended send times, µs.
    #[serde(skip, default = "histogram")]
    pub(crate) lateness: Histogram<u64>,
    /// Per-second corrected histograms, V2-serialized (for the interval log).
    #[serde(skip)]
    intervals: Vec<Vec<u8>>,
}

/// The outcome of checking a [`Report`] against an [`Slo`].
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Verdict {
    /// True when no threshold was broken.
    pub passed: bool,
    /// One sentence per broken threshold.
    pub failures: Vec<String>,
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.passed {
            return write!(f, "PASS: every objective met");
        }
        write!(f, "FAIL:")?;
        for s in &self.failures {
            write!(f, "\n  - {s}")?;
        }
        Ok(())
    }
}

fn pct(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 * 100.0 / whole as f64
    }
}

impl Report {
    /// 5xx responses.
    pub fn server_errors(&self) -> u64 {
        self.statuses
            .iter()
            .filter(|(k, _)| k.starts_with('5'))
            .map(|(_, v)| v)
            .sum()
    }

    /// Transport errors, unsent requests and 5xx responses over scheduled requests (0..=1).
    pub fn error_rate(&self) -> f64 {
        pct(
            self.errors + self.unsent + self.server_errors(),
            self.scheduled,
        ) / 100.0
    }

    /// 2xx/3xx responses over scheduled requests (0..=1).
    pub fn success_rate(&self) -> f64 {
        pct(self.ok, self.scheduled) / 100.0
    }

    /// Completed requests whose corrected latency exceeded `ms` milliseconds.
    pub fn count_over(&self, ms: f64) -> u64 {
        let us = (ms * 1000.0).max(0.0) as u64;
        self.corrected.len() - self.corrected.count_between(0, us)
    }

    /// The corrected latency of the responses completed in seconds `[from, to)` of the run,
    /// merged from the per-second histograms (exact, not an average of percentiles). Empty when
    /// the window holds no response.
    pub fn latency_between(&self, from: u32, to: u32) -> Histogram<u64> {
        let mut merged = histogram();
        let mut de = Deserializer::new();
        let end = usize::try_from(to)
            .unwrap_or(usize::MAX)
            .min(self.intervals.len());
        let start = usize::try_from(from).unwrap_or(usize::MAX).min(end);
        for bytes in &self.intervals[start..end] {
            if bytes.is_empty() {
                continue;
            }
            if let Ok(h) = de.deserialize::<u64, _>(&mut &bytes[..]) {
                let _ = merged.add(&h);
            }
        }
        merged
    }

    /// Checks the report against `slo`, with one sentence per broken threshold.
    pub fn verdict(&self, slo: &Slo) -> Verdict {
        let mut failures = Vec::new();
        let c = &self.latency_ms.corrected;
        for (name, limit, got) in [
            ("p50", slo.p50_ms, c.p50),
            ("p95", slo.p95_ms, c.p95),
            ("p99", slo.p99_ms, c.p99),
            ("maximum", slo.max_ms, c.max),
        ] {
            if let Some(limit) = limit
                && got > limit
            {
                failures.push(format!(
                    "{name} latency was {got:.2} ms, over the {limit} ms objective."
                ));
            }
        }
        if let Some(limit) = slo.max_error_rate {
            let r = self.error_rate();
            if r > limit {
                failures.push(format!(
                    "error rate was {:.3}% ({} of {} requests: {} errors, {} unsent, {} 5xx), over the {}% objective.",
                    r * 100.0,
                    self.errors + self.unsent + self.server_errors(),
                    self.scheduled,
                    self.errors,
                    self.unsent,
                    self.server_errors(),
                    limit * 100.0
                ));
            }
        }
        if let Some(limit) = slo.min_success_rate {
            let r = self.success_rate();
            if r < limit {
                failures.push(format!(
                    "success rate was {:.3}% ({} of {} requests), under the {}% objective.",
                    r * 100.0,
                    self.ok,
                    self.scheduled,
                    limit * 100.0
                ));
            }
        }
        if let (Some(over), Some(limit)) = (slo.over_ms, slo.max_fraction_over) {
            let n = self.count_over(over);
            let whole = self.corrected.len();
            let f = if whole == 0 {
                0.0
            } else {
                n as f64 / whole as f64
            };
            if f > limit {
                failures.push(format!(
                    "{:.3}% of responses ({n} of {whole}) took longer than {over} ms, over the allowed {}%.",
                    f * 100.0,
                    limit * 100.0
                ));
            }
        }
        Verdict {
            passed: failures.is_empty(),
            failures,
        }
    }

    /// The report as pretty JSON (schema at the crate root).
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
    }

    /// The per-second series as CSV: `t,sent,completed,ok,errors,late_starts,p50_ms,p99_ms,max_ms`
    /// followed by one `<header>=<value>` column per breakdown header value seen.
    pub fn to_csv(&self) -> String {
        let mut cols: Vec<(String, String)> = Vec::new();
        for (h, vals) in &self.by_header {
            for v in vals.keys() {
                cols.push((h.clone(), v.clone()));
            }
        }
        let mut out = String::from("t,sent,completed,ok,errors,late_starts,p50_ms,p99_ms,max_ms");
        for (h, v) in &cols {
            let _ = write!(out, ",{h}={}", v.replace([',', '"', '\n'], "_"));
        }
        out.push('\n');
        for s in &self.series {
            let _ = write!(
                out,
                "{},{},{},{},{},{},{:.3},{:.3},{:.3}",
                s.t,
                s.sent,
                s.completed,
                s.ok,
                s.errors,
                s.late_starts,
                s.p50_ms,
                s.p99_ms,
                s.max_ms
            );
            for (h, v) in &cols {
                let n = s
                    .by_header
                    .get(h)
                    .and_then(|m| m.get(v))
                    .copied()
                    .unwrap_or(0);
                let _ = write!(out, ",{n}");
            }
            out.push('\n');
        }
        out
    }

    /// Writes the per-second corrected-latency histograms in the HdrHistogram interval log
    /// format (values in µs; `max_value_divisor` 1000 so plotters show ms).
    pub fn write_interval_log<W: io::Write>(&self, w: &mut W) -> io::Result<()> {
        write_interval_log(w, self.started_unix_ms, &self.intervals, 0)
    }

    /// The same log from second `first` of the run on (a short tail for live progress).
    pub fn write_interval_log_from<W: io::Write>(&self, w: &mut W, first: usize) -> io::Result<()> {
        write_interval_log(w, self.started_unix_ms, &self.intervals, first)
    }

    /// A human summary: counts, percentile table, status and error counts, per-address and
    /// per-header tables.
    pub fn summary(&self) -> String {
        let mut o = String::new();
        let _ = writeln!(
            o,
            "{} {}  rate {} /s  schedule {:.1} s  connections {}  threads {}",
            self.method, self.url, self.rate, self.schedule_s, self.connections, self.threads
        );
        let _ = writeln!(
            o,
            "requests  scheduled {}  sent {}  completed {}  ok {}  errors {}  unsent {}  late starts {} ({:.2}%)  connects {}",
            self.scheduled,
            self.sent,
            self.completed,
            self.ok,
            self.errors,
            self.unsent,
            self.late_starts,
            pct(self.late_starts, self.sent),
            self.connects
        );
        let _ = writeln!(
            o,
            "achieved  {:.1} req/s   error rate {:.3}%",
            self.achieved_rate,
            self.error_rate() * 100.0
        );
        let _ = writeln!(
            o,
            "\nlatency (ms)        p50       p90       p95       p99     p99.9       max      mean"
        );
        for (name, p) in [
            ("corrected", &self.latency_ms.corrected),
            ("raw", &self.latency_ms.raw),
            ("pacer lateness", &self.pacer_lateness_ms),
        ] {
            let _ = writeln!(
                o,
                "{name:<15}{:>8.3}  {:>8.3}  {:>8.3}  {:>8.3}  {:>8.3}  {:>8.3}  {:>8.3}",
                p.p50, p.p90, p.p95, p.p99, p.p99_9, p.max, p.mean
            );
        }
        let _ = write!(o, "\nstatus   ");
        if self.statuses.is_empty() {
            let _ = write!(o, " (no responses)");
        }
        for (k, v) in &self.statuses {
            let _ = write!(o, " {k}: {v}");
        }
        let _ = write!(o, "\nerrors   ");
        for (k, v) in &self.errors_by_kind {
            let _ = write!(o, " {k}: {v}");
        }
        let _ = writeln!(o);
        let total = self.completed + self.errors;
        if !self.by_addr.is_empty() {
            let _ = writeln!(o, "\nby address");
            for (k, v) in &self.by_addr {
                let _ = writeln!(o, "  {k:<40} {v:>10}  {:>6.2}%", pct(*v, total));
            }
        }
        if !self.connect_failures.is_empty() {
            let _ = writeln!(
                o,
                "\nfailed connects by address (the next address was tried)"
            );
            for (k, v) in &self.connect_failures {
                let _ = writeln!(o, "  {k:<40} {v:>10}");
            }
        }
        for (h, vals) in &self.by_header {
            let _ = writeln!(o, "\nby {h}");
            for (k, v) in vals {
                let _ = writeln!(o, "  {k:<40} {v:>10}  {:>6.2}%", pct(*v, self.completed));
            }
        }
        if self.dns.resolutions > 1 {
            let _ = writeln!(
                o,
                "\ndns  resolutions {}  changes {}  failures {}  addresses {}",
                self.dns.resolutions,
                self.dns.changes,
                self.dns.failures,
                self.dns.addresses.join(" ")
            );
        }
        o
    }
}

/// Writes per-second corrected-latency histograms (V2, one per second from `started_unix_ms`)
/// as an HdrHistogram interval log (values in µs; `max_value_divisor` 1000 so plotters show
/// ms). An empty entry (a second whose histogram did not serialize) is written empty. Seconds
/// before `first` are left out.
pub(crate) fn write_interval_log<W: io::Write>(
    w: &mut W,
    started_unix_ms: u64,
    intervals: &[Vec<u8>],
    first: usize,
) -> io::Result<()> {
    let start = UNIX_EPOCH + Duration::from_millis(started_unix_ms);
    let mut ser = V2DeflateSerializer::new();
    let mut log = IntervalLogWriterBuilder::new()
        .add_comment("stackproof loadtest: corrected latency per second, microseconds")
        .with_start_time(start)
        .with_base_time(start)
        .with_max_value_divisor(1000.0)
        .begin_log_with(w, &mut ser)?;
    let mut de = Deserializer::new();
    for (i, bytes) in intervals.iter().enumerate().skip(first) {
        let h: Histogram<u64> = if bytes.is_empty() {
            histogram()
        } else {
            de.deserialize(&mut &bytes[..])
                .map_err(|e| io::Error::other(format!("{e:?}")))?
        };
        log.write_histogram(
            &h,
            Duration::from_secs(i as u64),
            Duration::from_secs(1),
            None,
        )
        .map_err(|e| io::Error::other(e.to_string()))?;
    }
    Ok(())
}
