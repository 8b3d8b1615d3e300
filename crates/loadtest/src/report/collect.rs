//! Gathering results while a run goes: worker frames merged into per-second [`Second`]s, live
//! [`Snapshot`]s, and at the end the [`Report`].

use super::*;

/// Merges `f` into `into`.
pub(crate) fn merge(into: &mut Frame, f: Frame) {
    into.sent += f.sent;
    into.completed += f.completed;
    into.errors += f.errors;
    into.late_starts += f.late_starts;
    into.connects += f.connects;
    let _ = into.corrected.add(&f.corrected);
    let _ = into.raw.add(&f.raw);
    for (a, b) in into.statuses.iter_mut().zip(&f.statuses) {
        *a += b;
    }
    for (a, b) in into.error_kinds.iter_mut().zip(&f.error_kinds) {
        *a += b;
    }
    for (addr, n) in f.by_addr {
        count(&mut into.by_addr, addr, n);
    }
    for (addr, n) in f.errors_by_addr {
        count(&mut into.errors_by_addr, addr, n);
    }
    for (addr, n) in f.connect_failures {
        count(&mut into.connect_failures, addr, n);
    }
    if into.by_header.len() < f.by_header.len() {
        into.by_header.resize(f.by_header.len(), Vec::new());
    }
    for (slot, vals) in into.by_header.iter_mut().zip(f.by_header) {
        for (v, n) in vals {
            match slot.iter_mut().find(|(x, _)| *x == v) {
                Some((_, c)) => *c += n,
                None => slot.push((v, n)),
            }
        }
    }
}

fn value_key(v: &Option<Bytes>) -> String {
    match v {
        Some(b) => String::from_utf8_lossy(b).into_owned(),
        None => "(none)".into(),
    }
}

struct Tables {
    statuses: BTreeMap<String, u64>,
    ok: u64,
    errors_by_kind: BTreeMap<String, u64>,
    by_addr: BTreeMap<String, u64>,
    errors_by_addr: BTreeMap<String, u64>,
    connect_failures: BTreeMap<String, u64>,
    by_header: BTreeMap<String, BTreeMap<String, u64>>,
}

fn tables(f: &Frame, headers: &[String], every_kind: bool) -> Tables {
    let mut statuses = BTreeMap::new();
    let mut ok = 0;
    for (i, n) in f.statuses.iter().enumerate() {
        if *n > 0 {
            let code = i + 100;
            statuses.insert(code.to_string(), *n);
            if (200..400).contains(&code) {
                ok += n;
            }
        }
    }
    let errors_by_kind = ErrorKind::ALL
        .iter()
        .zip(f.error_kinds)
        .filter(|(_, n)| every_kind || *n > 0)
        .map(|(k, n)| (k.name().to_string(), n))
        .collect();
    let by_addr = f.by_addr.iter().map(|(a, n)| (addr_key(a), *n)).collect();
    let errors_by_addr = f
        .errors_by_addr
        .iter()
        .map(|(a, n)| (addr_key(a), *n))
        .collect();
    let connect_failures = f
        .connect_failures
        .iter()
        .map(|(a, n)| (addr_key(a), *n))
        .collect();
    let mut by_header = BTreeMap::new();
    for (name, vals) in headers.iter().zip(&f.by_header) {
        let m: &mut BTreeMap<String, u64> = by_header.entry(name.clone()).or_default();
        for (v, n) in vals {
            *m.entry(value_key(v)).or_default() += n;
        }
    }
    for name in headers {
        by_header.entry(name.clone()).or_default();
    }
    Tables {
        statuses,
        ok,
        errors_by_kind,
        by_addr,
        errors_by_addr,
        connect_failures,
        by_header,
    }
}

/// Merges worker frames second by second, publishes the live series, builds the [`Report`].
#[derive(Debug)]
pub(crate) struct Collector {
    url: String,
    method: String,
    rate: f64,
    stages: Vec<Stage>,
    connections: usize,
    threads: usize,
    headers: Vec<String>,
    start: Instant,
    started_unix_ms: u64,
    schedule_s: f64,
    reported: Vec<Option<u32>>,
    done: Vec<bool>,
    pending: BTreeMap<u32, Frame>,
    next: u32,
    totals: Frame,
    intervals: Vec<Vec<u8>>,
    live: Arc<Mutex<Live>>,
    snapshots: watch::Sender<Snapshot>,
    last_completion: Instant,
}

/// What a run has finalized so far, shared with its [`crate::RunHandle`]: the complete seconds
/// and their corrected-latency histograms (V2), for progress while the run goes.
#[derive(Debug, Default)]
pub(crate) struct Live {
    pub(crate) series: Vec<Second>,
    pub(crate) intervals: Vec<Vec<u8>>,
    pub(crate) started_unix_ms: u64,
}

impl Collector {
    pub(crate) fn new(
        config: &Config,
        spec: &Spec,
        start: Instant,
        live: Arc<Mutex<Live>>,
        snapshots: watch::Sender<Snapshot>,
    ) -> Self {
        let started_unix_ms = SystemTime::now()
            .checked_add(start.saturating_duration_since(Instant::now()))
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        if let Ok(mut l) = live.lock() {
            l.started_unix_ms = started_unix_ms;
        }
        let headers: Vec<String> = spec
            .breakdown_headers
            .iter()
            .map(|h| h.as_str().to_string())
            .collect();
        Self {
            url: config.url.clone(),
            method: spec.method.to_string(),
            rate: spec.start_rate,
            stages: spec.stages.clone(),
            connections: spec.connections,
            threads: spec.threads,
            totals: Frame::new(0, headers.len()),
            headers,
            start,
            started_unix_ms,
            schedule_s: spec.total.as_secs_f64(),
            reported: vec![None; spec.threads],
            done: vec![false; spec.threads],
            pending: BTreeMap::new(),
            next: 0,
            intervals: Vec::new(),
            live,
            snapshots,
            last_completion: start,
        }
    }

    pub(crate) fn frame(&mut self, worker: usize, f: Frame) {
        if let Some(r) = self.reported.get_mut(worker) {
            *r = Some(r.map_or(f.second, |x| x.max(f.second)));
        }
        let second = f.second;
        match self.pending.get_mut(&second) {
            Some(p) => merge(p, f),
            None => {
                self.pending.insert(second, f);
            }
        }
        self.advance(false);
    }

    pub(crate) fn done(&mut self, worker: usize) {
        if let Some(d) = self.done.get_mut(worker) {
            *d = true;
        }
        self.advance(false);
    }

    /// Finalizes every second that no live worker can still add to.
    fn advance(&mut self, all: bool) {
        let mut limit: Option<u32> = None;
        let mut blocked = false;
        for (r, d) in self.reported.iter().zip(&self.done) {
            if *d {
                continue;
            }
            match r {
                Some(s) => limit = Some(limit.map_or(*s, |l: u32| l.min(*s))),
                None => blocked = true,
            }
        }
        let everyone_done = self.done.iter().all(|d| *d);
        loop {
            let last_pending = self.pending.keys().next_back().copied();
            let Some(last_pending) = last_pending else {
                break;
            };
            let can = all || everyone_done || (!blocked && limit.is_some_and(|l| self.next <= l));
            if !can || self.next > last_pending {
                break;
            }
            let f = self
                .pending
                .remove(&self.next)
                .unwrap_or_else(|| Frame::new(self.next, self.headers.len()));
            self.finalize(f);
            self.next += 1;
        }
    }

    fn finalize(&mut self, f: Frame) {
        let t = tables(&f, &self.headers, false);
        let second = Second {
            t: self.next,
            sent: f.sent,
            completed: f.completed,
            ok: t.ok,
            errors: f.errors,
            late_starts: f.late_starts,
            p50_ms: if f.corrected.is_empty() {
                0.0
            } else {
                ms(f.corrected.value_at_quantile(0.5))
            },
            p99_ms: if f.corrected.is_empty() {
                0.0
            } else {
                ms(f.corrected.value_at_quantile(0.99))
            },
            max_ms: ms(f.corrected.max()),
            statuses: t.statuses,
            errors_by_kind: t.errors_by_kind,
            by_addr: t.by_addr,
            errors_by_addr: t.errors_by_addr,
            connect_failures: t.connect_failures,
            by_header: t.by_header,
        };
        if f.completed + f.errors > 0 {
            self.last_completion = self.start + Duration::from_secs(u64::from(self.next) + 1);
        }
        let mut bytes = Vec::new();
        if V2Serializer::new()
            .serialize(&f.corrected, &mut bytes)
            .is_err()
        {
            bytes.clear();
        }
        merge(&mut self.totals, f);
        let seconds = if let Ok(mut l) = self.live.lock() {
            l.series.push(second.clone());
            l.intervals.push(bytes.clone());
            l.series.len()
        } else {
            0
        };
        self.intervals.push(bytes);
        let elapsed = self.start.elapsed().as_secs_f64();
        self.snapshots.send_replace(Snapshot {
            elapsed_s: elapsed,
            remaining_s: (self.schedule_s - elapsed).max(0.0),
            sent: self.totals.sent,
            completed: self.totals.completed,
            errors: self.totals.errors,
            seconds,
            last: Some(second),
        });
    }

    pub(crate) fn finish(mut self, lateness: Histogram<u64>, unsent: u64, dns: Dns) -> Report {
        self.advance(true);
        let end = Instant::now();
        let f = std::mem::replace(&mut self.totals, Frame::new(0, 0));
        let t = tables(&f, &self.headers, true);
        let series = self
            .live
            .lock()
            .map(|l| l.series.clone())
            .unwrap_or_default();
        let scheduled = f.sent + unsent;
        let elapsed = end.saturating_duration_since(self.start).as_secs_f64();
        let report = Report {
            schema: 1,
            url: self.url,
            method: self.method,
            rate: self.rate,
            stages: self.stages,
            connections: self.connections,
            threads: self.threads,
            started_unix_ms: self.started_unix_ms,
            schedule_s: self.schedule_s,
            elapsed_s: elapsed,
            scheduled,
            sent: f.sent,
            completed: f.completed,
            ok: t.ok,
            errors: f.errors,
            unsent,
            late_starts: f.late_starts,
            connects: f.connects,
            achieved_rate: if self.schedule_s > 0.0 {
                (f.completed + f.errors) as f64 / self.schedule_s
            } else {
                0.0
            },
            statuses: t.statuses,
            errors_by_kind: t.errors_by_kind,
            latency_ms: Latency {
                corrected: Percentiles::of(&f.corrected),
                raw: Percentiles::of(&f.raw),
            },
            pacer_lateness_ms: Percentiles::of(&lateness),
            lateness,
            by_addr: t.by_addr,
            errors_by_addr: t.errors_by_addr,
            connect_failures: t.connect_failures,
            by_header: t.by_header,
            dns,
            series,
            corrected: f.corrected,
            raw: f.raw,
            intervals: self.intervals,
        };
        let last = report.series.last().cloned();
        self.snapshots.send_replace(Snapshot {
            elapsed_s: elapsed,
            remaining_s: 0.0,
            sent: report.sent,
            completed: report.completed,
            errors: report.errors,
            seconds: report.series.len(),
            last,
        });
        report
    }
}

/// An empty histogram with the engine's bounds (for callers merging their own).
pub fn histogram() -> Histogram<u64> {
    new_histogram()
}

/// The number of requests a schedule holds (for callers sizing expectations).
pub fn scheduled_requests(config: &Config) -> u64 {
    if config.stages.is_empty() {
        Schedule::constant(config.rate, config.run_length()).total()
    } else {
        Schedule::staged(config.rate, &config.stages).total()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merging_worker_frames_is_lossless() {
        let addrs: Vec<std::net::SocketAddr> = vec![
            "127.0.0.1:1".parse().unwrap(),
            "127.0.0.2:1".parse().unwrap(),
        ];
        let mut all = Frame::new(0, 1);
        let mut parts: Vec<Frame> = (0..4).map(|_| Frame::new(0, 1)).collect();
        let mut x: u64 = 12345;
        for i in 0..20_000u64 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let us = 1 + (x >> 33) % 5_000_000;
            let d = Duration::from_micros(us);
            let status = if i % 7 == 0 { 503 } else { 200 };
            let value: &[u8] = if i % 3 == 0 { b"a" } else { b"b" };
            for f in [&mut all, &mut parts[(i % 4) as usize]] {
                f.sent += 1;
                f.response(status, d, d / 2, addrs[(i % 2) as usize]);
                f.header_value(0, Some(value));
                if i % 11 == 0 {
                    f.error(ErrorKind::Timeout, Some(addrs[0]));
                }
            }
        }
        let mut merged = Frame::new(0, 1);
        for p in parts {
            merge(&mut merged, p);
        }
        assert_eq!(merged.corrected, all.corrected);
        assert_eq!(merged.raw, all.raw);
        assert_eq!(merged.statuses, all.statuses);
        assert_eq!(merged.error_kinds, all.error_kinds);
        assert_eq!(
            (merged.sent, merged.completed, merged.errors),
            (all.sent, all.completed, all.errors)
        );
        let sorted = |mut v: Vec<(std::net::SocketAddr, u64)>| {
            v.sort();
            v
        };
        assert_eq!(sorted(merged.by_addr.clone()), sorted(all.by_addr.clone()));
        assert_eq!(merged.by_header, all.by_header);
        for q in [0.5, 0.9, 0.99, 0.999, 1.0] {
            assert_eq!(
                merged.corrected.value_at_quantile(q),
                all.corrected.value_at_quantile(q)
            );
        }
    }
}
