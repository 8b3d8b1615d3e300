//! One generator's [`Report`] handed whole to another process ([`Report::to_shard`],
//! [`Report::from_shard`]), and the reports of several generators added exactly
//! ([`Report::merge`]): counts add, HdrHistograms add bucket by bucket (overall, per second and
//! the pacer's lateness), and every percentile is read from the sums, never averaged.

use base64::Engine as _;
use hdrhistogram::serialization::Deserializer;

use super::*;
use crate::merge::MergeError;

/// Version of the shard format.
const SHARD_SCHEMA: u32 = 1;

/// A report with its histograms, as JSON (histograms V2 + DEFLATE, base64).
#[derive(Serialize, Deserialize)]
struct Shard {
    shard: u32,
    report: Report,
    corrected: String,
    raw: String,
    lateness: String,
    intervals: Vec<String>,
}

fn encode(h: &Histogram<u64>) -> String {
    let mut bytes = Vec::new();
    // Serializing into a Vec fails only for a histogram too large for the format's counts.
    let _ = V2DeflateSerializer::new().serialize(h, &mut bytes);
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn decode(what: &str, text: &str) -> Result<Histogram<u64>, MergeError> {
    let failed = |detail: String| MergeError::Shard {
        detail: format!("{what}: {detail}"),
    };
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text)
        .map_err(|e| failed(e.to_string()))?;
    if bytes.is_empty() {
        return Ok(histogram());
    }
    Deserializer::new()
        .deserialize(&mut &bytes[..])
        .map_err(|e| failed(format!("{e:?}")))
}

fn add(into: &mut Histogram<u64>, h: &Histogram<u64>) -> Result<(), MergeError> {
    into.add(h).map_err(|e| MergeError::Shard {
        detail: format!("histogram beyond the engine's bounds: {e:?}"),
    })
}

fn add_counts(into: &mut BTreeMap<String, u64>, from: &BTreeMap<String, u64>) {
    for (k, n) in from {
        *into.entry(k.clone()).or_default() += n;
    }
}

fn add_tables(
    into: &mut BTreeMap<String, BTreeMap<String, u64>>,
    from: &BTreeMap<String, BTreeMap<String, u64>>,
) {
    for (k, m) in from {
        add_counts(into.entry(k.clone()).or_default(), m);
    }
}

impl Report {
    /// The whole report, histograms included, as one JSON document another process reads
    /// back with [`Report::from_shard`] (a generator of a distributed run uploads it).
    pub fn to_shard(&self) -> Vec<u8> {
        let shard = Shard {
            shard: SHARD_SCHEMA,
            report: self.clone(),
            corrected: encode(&self.corrected),
            raw: encode(&self.raw),
            lateness: encode(&self.lateness),
            intervals: self
                .intervals
                .iter()
                .map(|b| base64::engine::general_purpose::STANDARD.encode(b))
                .collect(),
        };
        serde_json::to_vec(&shard).unwrap_or_default()
    }

    /// Reads a report [`Report::to_shard`] wrote.
    pub fn from_shard(bytes: &[u8]) -> Result<Report, MergeError> {
        let shard: Shard = serde_json::from_slice(bytes).map_err(|e| MergeError::Shard {
            detail: format!("not a report shard: {e}"),
        })?;
        if shard.shard != SHARD_SCHEMA {
            return Err(MergeError::Shard {
                detail: format!(
                    "shard format {} (this build reads {SHARD_SCHEMA})",
                    shard.shard
                ),
            });
        }
        let mut report = shard.report;
        report.corrected = decode("corrected", &shard.corrected)?;
        report.raw = decode("raw", &shard.raw)?;
        report.lateness = decode("lateness", &shard.lateness)?;
        report.intervals = Vec::with_capacity(shard.intervals.len());
        for (i, text) in shard.intervals.iter().enumerate() {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(text)
                .map_err(|e| MergeError::Shard {
                    detail: format!("interval {i}: {e}"),
                })?;
            report.intervals.push(bytes);
        }
        Ok(report)
    }

    /// The reports of generators that shared one schedule (striped, one start), added into
    /// the report one generator would have written for all their requests: counts and tables
    /// add, latency (overall, per second of the run, the pacer's lateness) is read from the
    /// summed histograms, so percentiles are exact to HdrHistogram precision. Connections and
    /// threads add up; the URL, rate and stages are the first report's (the shared schedule's);
    /// the schedule and elapsed time are the longest. `None` when `reports` is empty.
    pub fn merge(reports: &[Report]) -> Result<Option<Report>, MergeError> {
        let Some(first) = reports.first() else {
            return Ok(None);
        };
        let mut m = first.clone();
        for r in &reports[1..] {
            m.started_unix_ms = m.started_unix_ms.min(r.started_unix_ms);
            m.schedule_s = m.schedule_s.max(r.schedule_s);
            m.elapsed_s = m.elapsed_s.max(r.elapsed_s);
            m.connections += r.connections;
            m.threads += r.threads;
            m.scheduled += r.scheduled;
            m.sent += r.sent;
            m.completed += r.completed;
            m.ok += r.ok;
            m.errors += r.errors;
            m.unsent += r.unsent;
            m.late_starts += r.late_starts;
            m.connects += r.connects;
            add_counts(&mut m.statuses, &r.statuses);
            add_counts(&mut m.errors_by_kind, &r.errors_by_kind);
            add_counts(&mut m.by_addr, &r.by_addr);
            add_counts(&mut m.errors_by_addr, &r.errors_by_addr);
            add_counts(&mut m.connect_failures, &r.connect_failures);
            add_tables(&mut m.by_header, &r.by_header);
            m.dns.resolutions += r.dns.resolutions;
            m.dns.failures += r.dns.failures;
            m.dns.changes += r.dns.changes;
            m.dns.addresses.extend(r.dns.addresses.iter().cloned());
            add(&mut m.corrected, &r.corrected)?;
            add(&mut m.raw, &r.raw)?;
            add(&mut m.lateness, &r.lateness)?;
            merge_series(&mut m, r)?;
        }
        m.dns.addresses.sort();
        m.dns.addresses.dedup();
        m.achieved_rate = if m.schedule_s > 0.0 {
            (m.completed + m.errors) as f64 / m.schedule_s
        } else {
            0.0
        };
        m.latency_ms = Latency {
            corrected: Percentiles::of(&m.corrected),
            raw: Percentiles::of(&m.raw),
        };
        m.pacer_lateness_ms = Percentiles::of(&m.lateness);
        Ok(Some(m))
    }
}

/// Adds `r`'s seconds into `m`'s, second by second (both count from the shared start), and
/// reads each second's percentiles from the summed histogram.
fn merge_series(m: &mut Report, r: &Report) -> Result<(), MergeError> {
    let n = m.series.len().max(r.series.len());
    m.series.resize_with(n, Second::default);
    m.intervals.resize_with(n, Vec::new);
    let mut de = Deserializer::new();
    let mut read = |bytes: &[u8]| -> Result<Histogram<u64>, MergeError> {
        if bytes.is_empty() {
            return Ok(histogram());
        }
        de.deserialize(&mut &bytes[..])
            .map_err(|e| MergeError::Shard {
                detail: format!("a second's histogram: {e:?}"),
            })
    };
    for (i, s) in r.series.iter().enumerate() {
        let into = &mut m.series[i];
        into.t = u32::try_from(i).unwrap_or(u32::MAX);
        into.sent += s.sent;
        into.completed += s.completed;
        into.ok += s.ok;
        into.errors += s.errors;
        into.late_starts += s.late_starts;
        add_counts(&mut into.statuses, &s.statuses);
        add_counts(&mut into.errors_by_kind, &s.errors_by_kind);
        add_counts(&mut into.by_addr, &s.by_addr);
        add_counts(&mut into.errors_by_addr, &s.errors_by_addr);
        add_counts(&mut into.connect_failures, &s.connect_failures);
        add_tables(&mut into.by_header, &s.by_header);
        let mut h = read(&m.intervals[i])?;
        add(
            &mut h,
            &read(r.intervals.get(i).map_or(&[][..], Vec::as_slice))?,
        )?;
        let quantile = |q: f64| {
            if h.is_empty() {
                0.0
            } else {
                ms(h.value_at_quantile(q))
            }
        };
        into.p50_ms = quantile(0.5);
        into.p99_ms = quantile(0.99);
        into.max_ms = ms(h.max());
        let mut bytes = Vec::new();
        if V2Serializer::new().serialize(&h, &mut bytes).is_err() {
            bytes.clear();
        }
        m.intervals[i] = bytes;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A report of `seconds` seconds, each with `values` (µs, count) responses of 200.
    fn report(started: u64, seconds: &[&[(u64, u64)]]) -> Report {
        let mut r = Report {
            schema: 1,
            url: "http://127.0.0.1/".into(),
            method: "GET".into(),
            rate: 100.0,
            stages: Vec::new(),
            connections: 10,
            threads: 1,
            started_unix_ms: started,
            schedule_s: seconds.len() as f64,
            elapsed_s: seconds.len() as f64,
            scheduled: 0,
            sent: 0,
            completed: 0,
            ok: 0,
            errors: 0,
            unsent: 0,
            late_starts: 0,
            connects: 1,
            achieved_rate: 0.0,
            statuses: BTreeMap::new(),
            errors_by_kind: BTreeMap::new(),
            latency_ms: Latency::default(),
            pacer_lateness_ms: Percentiles::default(),
            by_addr: BTreeMap::new(),
            errors_by_addr: BTreeMap::new(),
            connect_failures: BTreeMap::new(),
            by_header: BTreeMap::new(),
            dns: Dns::default(),
            series: Vec::new(),
            corrected: histogram(),
            raw: histogram(),
            lateness: histogram(),
            intervals: Vec::new(),
        };
        for (t, values) in seconds.iter().enumerate() {
            let mut h = histogram();
            for &(v, n) in *values {
                h.record_n(v, n).unwrap();
            }
            let n = h.len();
            r.scheduled += n;
            r.sent += n;
            r.completed += n;
            r.ok += n;
            *r.statuses.entry("200".into()).or_default() += n;
            r.corrected.add(&h).unwrap();
            r.raw.add(&h).unwrap();
            r.lateness.record(50).unwrap();
            r.series.push(Second {
                t: t as u32,
                sent: n,
                completed: n,
                ok: n,
                p99_ms: ms(h.value_at_quantile(0.99)),
                ..Second::default()
            });
            let mut bytes = Vec::new();
            V2Serializer::new().serialize(&h, &mut bytes).unwrap();
            r.intervals.push(bytes);
        }
        r.latency_ms.corrected = Percentiles::of(&r.corrected);
        r
    }

    #[test]
    fn a_shard_reads_back_whole() {
        let r = report(
            1_800_000_000_000,
            &[&[(1_000, 10)], &[(2_000, 5), (9_000, 1)]],
        );
        let back = Report::from_shard(&r.to_shard()).unwrap();
        assert_eq!(back.to_json(), r.to_json());
        assert_eq!(back.corrected, r.corrected);
        assert_eq!(back.lateness, r.lateness);
        assert_eq!(back.latency_between(1, 2), r.latency_between(1, 2));
        let err = Report::from_shard(b"{}").unwrap_err();
        assert!(err.to_string().contains("not a report shard"), "{err}");
    }

    #[test]
    fn merged_reports_are_the_report_of_all_their_requests() {
        // Generator A: 10,000 fast responses in second 0 and 100 in second 1. B: 800 fast and
        // 200 slow in second 0 only (its run was shorter).
        let a = report(1_800_000_000_000, &[&[(1_000, 10_000)], &[(1_500, 100)]]);
        let b = report(1_800_000_000_003, &[&[(1_000, 800), (1_000_000, 200)]]);
        let m = Report::merge(&[a.clone(), b.clone()]).unwrap().unwrap();
        let one = report(
            1_800_000_000_000,
            &[&[(1_000, 10_800), (1_000_000, 200)], &[(1_500, 100)]],
        );
        assert_eq!(m.corrected, one.corrected);
        assert_eq!(m.latency_ms.corrected, one.latency_ms.corrected);
        assert_eq!(m.sent, 11_100);
        assert_eq!(m.statuses["200"], 11_100);
        assert_eq!(m.connections, 20);
        assert_eq!(m.started_unix_ms, 1_800_000_000_000);
        assert_eq!(m.series.len(), 2);
        assert_eq!(m.series[0].sent, 11_000);
        assert_eq!(m.series[0].p99_ms, one.series[0].p99_ms);
        assert_eq!(m.series[1].p99_ms, one.series[1].p99_ms);
        assert_eq!(m.latency_between(0, 2), one.corrected);
        assert_eq!(m.pacer_lateness_ms.count, 3);
        // The p99 of all requests is a slow one; the average of the two p99s is not.
        assert!(m.latency_ms.corrected.p99 > 999.0);
        let averaged = (a.latency_ms.corrected.p99 + b.latency_ms.corrected.p99) / 2.0;
        assert!(averaged < 0.6 * m.latency_ms.corrected.p99, "{averaged}");
        assert!(Report::merge(&[]).unwrap().is_none());
    }
}
