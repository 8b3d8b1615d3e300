//! What a distributed run gives: each generator's part, the reasons a run is invalid, the
//! merged report with its breakdowns, the coordinator's own overhead, and live progress.

use std::collections::BTreeMap;

use loadtest::{Percentiles, Report, Slo, Verdict};
use serde::Serialize;

/// How a generator ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum WorkerState {
    /// It sent its share and uploaded its report.
    Finished,
    /// Its task stopped without a report.
    Died,
    /// It failed and said why.
    Failed,
    /// It did not start (or say where it runs) in time.
    NotStarted,
    /// The run ended before it did (another generator made it invalid).
    Stopped,
}

/// One generator's part.
#[derive(Debug, Clone, Serialize)]
pub struct WorkerOutcome {
    /// Its index.
    pub index: u32,
    /// Its task.
    pub task_arn: String,
    /// Its zone (`unknown` before it said).
    pub zone: String,
    /// How it ended.
    pub state: WorkerState,
    /// Its share of the schedule, requests.
    pub share: u64,
    /// Requests it sent (its last progress, when it did not finish).
    pub sent: u64,
    /// Its share it never sent (`share - sent` when it did not finish; its report's unsent
    /// otherwise).
    pub unsent: u64,
    /// How late its pacer released requests at p99, ms (when it finished).
    pub pacer_p99_ms: Option<f64>,
    /// Its corrected latency (when it finished).
    pub latency: Option<Percentiles>,
    /// The task's stop reason and exit code, or the generator's own error.
    pub detail: Option<String>,
    /// Its whole report (when it finished).
    #[serde(skip)]
    pub report: Option<Report>,
}

/// What the coordinator spent.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Overhead {
    /// Wall time from the first RunTask to the merged report, s.
    pub wall_s: f64,
    /// CPU time of this process meanwhile, s.
    pub cpu_s: f64,
    /// Peak resident memory of this process, KiB (Linux).
    pub peak_rss_kib: Option<u64>,
    /// S3 calls made.
    pub s3_calls: u64,
    /// ECS calls made.
    pub ecs_calls: u64,
    /// The same per generator and minute of wall time.
    pub per_worker_minute: PerWorkerMinute,
}

/// Overhead per generator and minute.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PerWorkerMinute {
    /// CPU, s.
    pub cpu_s: f64,
    /// S3 calls.
    pub s3_calls: f64,
    /// ECS calls.
    pub ecs_calls: f64,
}

/// The result of a distributed run.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    /// The run's folder (`s3://bucket/loadtest/{run-id}`).
    pub run: String,
    /// Generators.
    pub workers: Vec<WorkerOutcome>,
    /// Why the run is invalid; empty when it is valid.
    pub invalid: Vec<String>,
    /// The finished generators' reports added (all of them when the run is valid).
    #[serde(skip)]
    pub report: Option<Report>,
    /// Corrected latency per generator zone (the finished generators' histograms added).
    pub by_worker_zone: BTreeMap<String, Percentiles>,
    /// Responses per generator zone and serving zone (the `x-az` header).
    pub served: BTreeMap<String, BTreeMap<String, u64>>,
    /// Generators StopTask failed for at the end (task ARN and why): still running.
    pub not_stopped: Vec<String>,
    /// What the coordinator spent.
    pub overhead: Overhead,
}

impl Outcome {
    /// Whether the load was delivered as scheduled (every generator ran its share on time).
    pub fn valid(&self) -> bool {
        self.invalid.is_empty()
    }

    /// The merged report checked against `slo`; `None` for an invalid run, which is never
    /// judged.
    pub fn verdict(&self, slo: &Slo) -> Option<Verdict> {
        if !self.valid() {
            return None;
        }
        self.report.as_ref().map(|r| r.verdict(slo))
    }

    /// One line per generator and per reason the run is invalid.
    pub fn summary(&self) -> String {
        use std::fmt::Write as _;
        let mut o = String::new();
        for w in &self.workers {
            let _ = write!(
                o,
                "  generator {} in {}: {:?}, share {}, sent {}, unsent {}",
                w.index, w.zone, w.state, w.share, w.sent, w.unsent
            );
            if let Some(l) = &w.latency {
                let _ = write!(o, ", p99 {:.2} ms", l.p99);
            }
            if let Some(p) = w.pacer_p99_ms {
                let _ = write!(o, ", pacer p99 {p:.3} ms late");
            }
            if let Some(d) = &w.detail {
                let _ = write!(o, " ({d})");
            }
            o.push('\n');
        }
        for (zone, p) in &self.by_worker_zone {
            let _ = writeln!(
                o,
                "  from {zone}: {} responses, p50 {:.2} ms, p99 {:.2} ms",
                p.count, p.p50, p.p99
            );
        }
        for (from, to) in &self.served {
            let served: Vec<String> = to.iter().map(|(z, n)| format!("{z} {n}")).collect();
            let _ = writeln!(o, "  from {from}, served by: {}", served.join(", "));
        }
        let h = &self.overhead;
        let _ = writeln!(
            o,
            "  coordinator: {:.1} s CPU, {} S3 and {} ECS calls in {:.0} s; per generator-minute {:.3} s CPU, {:.1} S3, {:.1} ECS calls; peak RSS {} KiB",
            h.cpu_s,
            h.s3_calls,
            h.ecs_calls,
            h.wall_s,
            h.per_worker_minute.cpu_s,
            h.per_worker_minute.s3_calls,
            h.per_worker_minute.ecs_calls,
            h.peak_rss_kib
                .map_or_else(|| "?".to_owned(), |k| k.to_string())
        );
        for reason in &self.invalid {
            let _ = writeln!(o, "  INVALID: {reason}");
        }
        for task in &self.not_stopped {
            let _ = writeln!(o, "  NOT STOPPED (still running): {task}");
        }
        o
    }
}

/// Live progress.
#[derive(Debug, Clone, Default)]
pub struct Progress {
    /// Generators running (RUNNING in ECS and said where).
    pub running: u32,
    /// Generators in all.
    pub workers: u32,
    /// Whether the schedule has started.
    pub started: bool,
    /// The latest complete second every live generator has uploaded: responses and p99 ms
    /// (their histograms added).
    pub second: Option<(u64, f64)>,
    /// Responses so far (all generators).
    pub responses: u64,
    /// Errors so far.
    pub errors: u64,
}

impl Progress {
    /// One line for a terminal.
    pub fn line(&self) -> String {
        if !self.started {
            return format!(
                "generators running {}/{}, waiting for all",
                self.running, self.workers
            );
        }
        let (rate, p99) = self.second.unwrap_or((0, 0.0));
        format!(
            "{rate:>7} req/s | p99 {p99:>8.2} ms | responses {} errors {} | generators {}/{}",
            self.responses, self.errors, self.running, self.workers
        )
    }
}

/// This process's CPU time (user + system), s; Linux.
pub(crate) fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / 100.0)
}

/// This process's peak resident memory, KiB; Linux.
pub(crate) fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}
