//! Adding the latency of several load generators exactly.
//!
//! Each generator of a striped run (see [`crate::Stripe`]) writes its corrected latency as an
//! HdrHistogram interval log (one histogram per second, what `--hdr-log` writes). Percentiles of
//! the whole run are percentiles of the *sum* of those histograms, per second and overall:
//! HdrHistogram's addition is exact (bucket counts add), so the merged p99 is the p99 the same
//! requests would have had in one generator's histogram. Averaging each generator's p99, as
//! some distributed load tools do, is not: a generator that saw the slow requests weighs as much
//! as one that saw ten times more fast ones.

use std::collections::BTreeMap;
use std::time::Duration;

use base64::Engine as _;
use hdrhistogram::Histogram;
use hdrhistogram::serialization::Deserializer;
use hdrhistogram::serialization::interval_log::{IntervalLogIterator, LogEntry};

use crate::record::new_histogram;
use crate::report::Percentiles;

/// Why a log could not be merged.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MergeError {
    /// A line of log `log` is not an interval log line.
    #[error("interval log {log}: not an HdrHistogram interval log ({detail})")]
    Parse {
        /// Which log (0-based, in the order given).
        log: usize,
        /// What the parser said.
        detail: String,
    },
    /// An interval's histogram could not be decoded.
    #[error(
        "interval log {log}: the histogram of the interval at {at:?} does not decode ({detail})"
    )]
    Histogram {
        /// Which log.
        log: usize,
        /// The interval's timestamp (since the log's base time).
        at: Duration,
        /// What the decoder said.
        detail: String,
    },
    /// A report shard (see [`crate::Report::to_shard`]) could not be read or added.
    #[error("report shard: {detail}")]
    Shard {
        /// What was wrong.
        detail: String,
    },
    /// A histogram's values do not fit the engine's bounds (another tool's log).
    #[error("interval log {log}: values beyond the engine's histogram bounds ({detail})")]
    Bounds {
        /// Which log.
        log: usize,
        /// What the histogram said.
        detail: String,
    },
}

/// The corrected latency of several generators, added.
#[derive(Debug, Clone)]
pub struct Merged {
    /// Per Unix second (the interval's start, its base time added): the sum of every log's
    /// histogram of that second, µs.
    pub seconds: BTreeMap<u64, Histogram<u64>>,
    /// The sum of every interval of every log, µs.
    pub total: Histogram<u64>,
    /// How many logs were added.
    pub logs: usize,
}

impl Merged {
    /// Percentiles of the whole run, ms.
    pub fn percentiles(&self) -> Percentiles {
        Percentiles::of(&self.total)
    }
}

/// Adds the interval logs `logs` (the text `--hdr-log` writes), exactly.
pub fn merge_interval_logs(logs: &[&[u8]]) -> Result<Merged, MergeError> {
    let mut merged = Merged {
        seconds: BTreeMap::new(),
        total: new_histogram(),
        logs: logs.len(),
    };
    let mut de = Deserializer::new();
    for (log, bytes) in logs.iter().enumerate() {
        let mut base = Duration::ZERO;
        for entry in IntervalLogIterator::new(bytes) {
            let entry = entry.map_err(|e| MergeError::Parse {
                log,
                detail: format!("{e:?}"),
            })?;
            let interval = match entry {
                LogEntry::BaseTime(t) => {
                    base = t;
                    continue;
                }
                LogEntry::StartTime(_) => continue,
                LogEntry::Interval(i) => i,
            };
            let at = interval.start_timestamp();
            let failed = |detail: String| MergeError::Histogram { log, at, detail };
            let raw = base64::engine::general_purpose::STANDARD
                .decode(interval.encoded_histogram())
                .map_err(|e| failed(e.to_string()))?;
            let h: Histogram<u64> = de
                .deserialize(&mut &raw[..])
                .map_err(|e| failed(format!("{e:?}")))?;
            let second = (base + at).as_secs();
            let bounds = |e: hdrhistogram::AdditionError| MergeError::Bounds {
                log,
                detail: format!("{e:?}"),
            };
            merged
                .seconds
                .entry(second)
                .or_insert_with(new_histogram)
                .add(&h)
                .map_err(bounds)?;
            merged.total.add(&h).map_err(bounds)?;
        }
    }
    Ok(merged)
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use hdrhistogram::serialization::V2DeflateSerializer;
    use hdrhistogram::serialization::interval_log::IntervalLogWriterBuilder;

    use super::*;

    /// One second's log of `values` µs, starting at Unix second `at`, as a generator writes it.
    fn log_of(at: u64, values: &[(u64, u64)]) -> (Vec<u8>, Histogram<u64>) {
        let mut h = new_histogram();
        for &(value, count) in values {
            h.record_n(value, count).unwrap();
        }
        let start = UNIX_EPOCH + Duration::from_secs(at);
        let mut out = Vec::new();
        let mut ser = V2DeflateSerializer::new();
        let mut log = IntervalLogWriterBuilder::new()
            .with_start_time(start)
            .with_base_time(start)
            .begin_log_with(&mut out, &mut ser)
            .unwrap();
        log.write_histogram(&h, Duration::ZERO, Duration::from_secs(1), None)
            .unwrap();
        (out, h)
    }

    #[test]
    fn the_merged_p99_is_the_p99_of_all_requests_and_averaging_understates_it() {
        // Generator A: 10,000 fast requests. Generator B: 1,000 requests, 200 of them slow.
        let (a, ha) = log_of(1_800_000_000, &[(1_000, 10_000)]);
        let (b, hb) = log_of(1_800_000_000, &[(1_000, 800), (1_000_000, 200)]);
        let merged = merge_interval_logs(&[&a, &b]).unwrap();

        // The same 11,000 latencies recorded in one histogram.
        let mut all = new_histogram();
        all.record_n(1_000, 10_800).unwrap();
        all.record_n(1_000_000, 200).unwrap();
        assert_eq!(merged.total, all);
        assert_eq!(merged.total.len(), 11_000);
        let p99 = merged.percentiles().p99;
        assert_eq!(p99, Percentiles::of(&all).p99);
        // The slowest 110 requests are slow ones: p99 is about a second.
        assert!((999.0..1_001.0).contains(&p99), "{p99}");
        // Averaging the generators' p99s halves it.
        let averaged = (Percentiles::of(&ha).p99 + Percentiles::of(&hb).p99) / 2.0;
        assert!(
            averaged < 0.6 * p99,
            "averaged {averaged} ms, exact {p99} ms"
        );
        assert_eq!(merged.seconds.len(), 1);
        assert_eq!(merged.seconds[&1_800_000_000], all);
    }

    #[test]
    fn seconds_line_up_by_wall_time_and_bad_logs_are_named() {
        let (a, _) = log_of(1_800_000_000, &[(2_000, 10)]);
        let (b, _) = log_of(1_800_000_001, &[(3_000, 5)]);
        let merged = merge_interval_logs(&[&a, &b]).unwrap();
        let counts: Vec<(u64, u64)> = merged.seconds.iter().map(|(s, h)| (*s, h.len())).collect();
        assert_eq!(counts, [(1_800_000_000, 10), (1_800_000_001, 5)]);

        let err = merge_interval_logs(&[&a, b"not a log\n"]).unwrap_err();
        assert!(err.to_string().starts_with("interval log 1: "), "{err}");
    }
}
