//! Per-request outcomes ([`Pending`]) and the accumulated statistics they are added to.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use hdrhistogram::Histogram;
use tokio::time::Instant;

use crate::target::{Member, Shared};
use crate::{MAX_ACCESS_LOG_LINES, ZoneStats, lock, log};

#[derive(Debug)]
pub(crate) struct ZoneAcc {
    pub(crate) stats: ZoneStats,
    pub(crate) times: Option<Histogram<u64>>,
}

#[derive(Debug, Default)]
pub(crate) struct StatsAcc {
    pub(crate) zones: HashMap<Arc<str>, ZoneAcc>,
    pub(crate) no_target: u64,
    pub(crate) per_target: HashMap<String, u64>,
    /// Access log lines, formatted as requests finish.
    pub(crate) log: Vec<String>,
    pub(crate) dropped: u64,
}

/// What is known of a request when its outcome is recorded.
#[derive(Debug)]
pub(crate) struct Pending {
    pub(crate) shared: Arc<Shared>,
    pub(crate) member: Option<Arc<Member>>,
    pub(crate) client: SocketAddr,
    pub(crate) start: Instant,
    pub(crate) created: SystemTime,
    pub(crate) request_line: String,
    pub(crate) user_agent: String,
    pub(crate) received_bytes: u64,
    pub(crate) request_processing: Option<Duration>,
    pub(crate) target_processing: Option<Duration>,
    pub(crate) target_status: Option<u16>,
    pub(crate) elb_status: u16,
    pub(crate) header_bytes: u64,
    pub(crate) error_reason: Option<&'static str>,
}

impl Pending {
    pub(crate) fn record(self, body_bytes: u64) {
        let response_processing = self.target_processing.map(|_| Duration::from_micros(1));
        let entry = log::Entry {
            time: SystemTime::now(),
            client: self.client,
            target: self.member.as_ref().map(|m| m.addr),
            request_processing: self.target_status.and(self.request_processing),
            target_processing: self.target_status.and(self.target_processing),
            response_processing: self.target_status.and(response_processing),
            elb_status: self.elb_status,
            target_status: self.target_status,
            received_bytes: self.received_bytes,
            sent_bytes: self.header_bytes + body_bytes,
            request: self.request_line,
            user_agent: self.user_agent,
            request_creation_time: self.created,
            error_reason: self.error_reason,
        };
        // Formatted here, a little on every request, rather than a second's worth at once in
        // `take_stats`, which stalled the proxy's runtime for milliseconds.
        let line = entry.line(&self.shared.elb);
        let mut acc = lock(&self.shared.stats);
        if acc.log.len() < MAX_ACCESS_LOG_LINES {
            acc.log.push(line);
        } else {
            acc.dropped += 1;
        }
        let Some(member) = &self.member else {
            acc.no_target += 1;
            return;
        };
        match acc.per_target.get_mut(&member.id) {
            Some(n) => *n += 1,
            None => {
                acc.per_target.insert(member.id.clone(), 1);
            }
        }
        let zone = acc
            .zones
            .entry(member.zone.clone())
            .or_insert_with(|| ZoneAcc {
                stats: ZoneStats::default(),
                times: Histogram::new_with_bounds(1, 3_600_000_000, 3).ok(),
            });
        let stats = &mut zone.stats;
        stats.requests += 1;
        match self.target_status {
            Some(status) => {
                match status {
                    200..=299 => stats.target_2xx += 1,
                    300..=399 => stats.target_3xx += 1,
                    400..=499 => stats.target_4xx += 1,
                    500..=599 => stats.target_5xx += 1,
                    _ => {}
                }
                if let Some(time) = self.target_processing {
                    stats.response_time_sum += time;
                    stats.response_time_count += 1;
                    if let Some(h) = &mut zone.times {
                        let _ = h.record((time.as_micros() as u64).max(1));
                    }
                }
            }
            None => {
                stats.elb_5xx += 1;
                match self.elb_status {
                    502 => stats.elb_502 += 1,
                    503 => stats.elb_503 += 1,
                    _ => stats.elb_504 += 1,
                }
            }
        }
    }
}
