//! Writes through the zone fault, when the stack has a database: what a zone's loss does to
//! data, next to what it does to requests.
//!
//! A [`Writer`] sends `POST /orders` with ids it chooses (`proof-{run}-{k}`), at
//! [`write_rate`] beside the read load, through the load balancer as any client does (its DNS
//! name, re-resolved per write); each write is acknowledged (200 or 201: the sample app answers
//! after the commit) or failed. After the zone is back, [`read_back`] asks `GET /orders/{id}` for
//! every acknowledged id. [`judge`] gives three checks: no acknowledged write lost; the
//! database's failover (from the fault to the first write acknowledged after writes began to
//! fail) within AWS's time for a Multi-AZ DB instance; and the failed writes within the budget
//! that time allows.
//!
//! When the stack has a cache too, the writer also reads the latest acknowledged order back at
//! each tick from the cache alone (`GET /orders/{id}` with `Cache-Control: only-if-cached`, so a
//! database failing over at the same time does not hold the answer up) and records its
//! `x-cache` header: `down` while the cache does not answer, `hit` or `miss` once it does. The
//! fourth check, cache failover, is from the fault to the first read the cache answered after
//! one it did not, within AWS's time for an ElastiCache Multi-AZ failover.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_model::Clock;
use aws_model::aws::{elasticache, rds};
use loadtest::{Resolve, SystemResolver};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use super::{check, fig, unix_ms};
use crate::report::{Check, Figure};
use crate::target::Target;

/// The share of the read load's rate sent as writes, and its bounds (writes per second).
const WRITE_SHARE: f64 = 0.02;
const MIN_WRITE_RATE: f64 = 5.0;
const MAX_WRITE_RATE: f64 = 20.0;
/// The most writes one run sends.
const MAX_WRITES: u64 = 20_000;
/// How long one write or read may take (wall time) before it counts as failed.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(20);
/// Beyond AWS's failover time, what a client needs to write again: its connection to the old
/// primary breaks, it resolves the endpoint anew (TTL 5 s) and reconnects (model time).
pub(crate) const RESUME_ALLOWANCE: Duration = Duration::from_secs(30);

/// The longest fault a stack with a database needs (model seconds): AWS's longest Multi-AZ
/// failover and a client's reconnect, with the model's margin.
pub(crate) fn fault_max_s() -> f64 {
    ((rds::INSTANCE_FAILOVER_MAX + RESUME_ALLOWANCE).as_secs_f64() * crate::model::MARGIN).ceil()
}

/// Writes per second for a read load of `rps`.
pub(crate) fn write_rate(rps: f64) -> f64 {
    (rps * WRITE_SHARE).clamp(MIN_WRITE_RATE, MAX_WRITE_RATE)
}

/// One read of the cache probe: what the `x-cache` header said (`hit`, `miss`, `down`; `none`
/// without the header), or why the request failed.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct CacheRead {
    pub(crate) sent_ms: u64,
    pub(crate) answered_ms: u64,
    pub(crate) cache: Result<String, String>,
}

impl CacheRead {
    /// The cache answered it.
    fn answered(&self) -> bool {
        matches!(self.cache.as_deref(), Ok("hit" | "miss"))
    }

    /// The app found the cache away.
    fn down(&self) -> bool {
        matches!(self.cache.as_deref(), Ok("down"))
    }
}

/// One write.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Write {
    pub(crate) id: String,
    /// When it was sent and answered (Unix ms).
    pub(crate) sent_ms: u64,
    pub(crate) answered_ms: u64,
    /// Acknowledged (200 or 201), or why not.
    pub(crate) outcome: Result<u16, String>,
}

impl Write {
    fn acked(&self) -> bool {
        matches!(self.outcome, Ok(200 | 201))
    }
}

/// Writes in the background.
#[derive(Debug)]
pub(crate) struct Writer {
    log: Arc<Mutex<Vec<Write>>>,
    reads: Arc<Mutex<Vec<CacheRead>>>,
    stop: Arc<AtomicBool>,
    handle: tokio::task::JoinHandle<()>,
}

/// Where the target's requests go: host, port, and how its name is resolved.
#[derive(Debug, Clone)]
struct Endpoint {
    host: String,
    port: u16,
    resolver: Arc<dyn Resolve>,
}

impl Endpoint {
    /// `None` for a target the writer cannot speak to (https).
    fn of(target: &Target) -> Option<Endpoint> {
        let rest = target.url.strip_prefix("http://")?;
        let authority = rest.split('/').next()?;
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) => (h.to_owned(), p.parse().ok()?),
            None => (authority.to_owned(), 80),
        };
        let resolver = target
            .resolver()
            .unwrap_or_else(|| Arc::new(SystemResolver::default()));
        Some(Endpoint {
            host,
            port,
            resolver,
        })
    }

    /// One request; the status and the `x-cache` header. A new connection each time, to an
    /// address of a fresh resolution (the `k`-th, in turn), as a client that honours DNS
    /// spreads its connections.
    async fn request(
        &self,
        k: u64,
        method: &str,
        path: &str,
        body: &str,
    ) -> Result<(u16, Option<String>), String> {
        self.request_within(REQUEST_TIMEOUT, k, method, path, body, "")
            .await
    }

    /// [`Endpoint::request`] with its own time limit and header lines (`Name: value\r\n`).
    async fn request_within(
        &self,
        timeout: Duration,
        k: u64,
        method: &str,
        path: &str,
        body: &str,
        headers: &str,
    ) -> Result<(u16, Option<String>), String> {
        let exchange = async {
            let addrs: Vec<SocketAddr> = self
                .resolver
                .resolve(&self.host, self.port)
                .await
                .map_err(|e| format!("resolve {}: {e}", self.host))?;
            let n = u64::try_from(addrs.len()).unwrap_or(1).max(1);
            let addr = addrs
                .get(usize::try_from(k % n).unwrap_or(0))
                .ok_or_else(|| format!("resolve {}: no address", self.host))?;
            let mut s = tokio::net::TcpStream::connect(addr)
                .await
                .map_err(|e| format!("connect {addr}: {e}"))?;
            let head = format!(
                "{method} {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{headers}Connection: close\r\n\r\n{body}",
                self.host,
                body.len()
            );
            s.write_all(head.as_bytes())
                .await
                .map_err(|e| format!("send: {e}"))?;
            let mut answer = Vec::with_capacity(512);
            s.read_to_end(&mut answer)
                .await
                .map_err(|e| format!("receive: {e}"))?;
            let text = String::from_utf8_lossy(&answer);
            let head = text.split("\r\n\r\n").next().unwrap_or_default();
            let cache = head.lines().skip(1).find_map(|line| {
                let (name, value) = line.split_once(':')?;
                name.trim()
                    .eq_ignore_ascii_case("x-cache")
                    .then(|| value.trim().to_owned())
            });
            let status = text
                .split(' ')
                .nth(1)
                .and_then(|code| code.parse().ok())
                .ok_or_else(|| "no HTTP status in the answer".to_owned())?;
            Ok((status, cache))
        };
        tokio::time::timeout(timeout, exchange)
            .await
            .map_err(|_| format!("no answer within {} s", timeout.as_secs()))?
    }
}

impl Writer {
    /// Starts writing at `rate` per second with ids `proof-{run}-{k}`, for at most `limit`,
    /// and, with `probe_cache`, reading the latest acknowledged one back at each tick; `None`
    /// for a target it cannot speak to (https).
    pub(crate) fn start(
        target: &Target,
        run: &str,
        rate: f64,
        limit: Duration,
        probe_cache: bool,
    ) -> Option<Writer> {
        let endpoint = Endpoint::of(target)?;
        let log: Arc<Mutex<Vec<Write>>> = Arc::default();
        let reads: Arc<Mutex<Vec<CacheRead>>> = Arc::default();
        let latest: Arc<Mutex<Option<String>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let (l, r, s) = (log.clone(), reads.clone(), stop.clone());
        let run = run.to_owned();
        let interval = Duration::from_secs_f64(1.0 / rate.max(MIN_WRITE_RATE));
        let handle = tokio::spawn(async move {
            let end = tokio::time::Instant::now() + limit;
            let mut inflight = tokio::task::JoinSet::new();
            let mut tick = tokio::time::interval(interval);
            for k in 0..MAX_WRITES {
                tick.tick().await;
                if s.load(Ordering::Relaxed) || tokio::time::Instant::now() >= end {
                    break;
                }
                while inflight.try_join_next().is_some() {}
                let lock = |m: &Arc<Mutex<Option<String>>>| {
                    m.lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .clone()
                };
                if probe_cache && let Some(id) = lock(&latest) {
                    let (r, endpoint) = (r.clone(), endpoint.clone());
                    inflight.spawn(async move {
                        let sent_ms = unix_ms();
                        let got = endpoint
                            .request_within(
                                REQUEST_TIMEOUT,
                                k,
                                "GET",
                                &format!("/orders/{id}"),
                                "",
                                "Cache-Control: only-if-cached\r\n",
                            )
                            .await;
                        let read = CacheRead {
                            sent_ms,
                            answered_ms: unix_ms(),
                            cache: got.map(|(_, cache)| cache.unwrap_or_else(|| "none".to_owned())),
                        };
                        r.lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner)
                            .push(read);
                    });
                }
                let (l, endpoint, latest) = (l.clone(), endpoint.clone(), latest.clone());
                let id = format!("proof-{run}-{k}");
                inflight.spawn(async move {
                    let sent_ms = unix_ms();
                    let body = format!(r#"{{"id":"{id}","item":"stackproof"}}"#);
                    let outcome = endpoint
                        .request(k, "POST", "/orders", &body)
                        .await
                        .map(|(status, _)| status);
                    let w = Write {
                        id,
                        sent_ms,
                        answered_ms: unix_ms(),
                        outcome,
                    };
                    if w.acked() {
                        *latest
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner) =
                            Some(w.id.clone());
                    }
                    l.lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .push(w);
                });
            }
            while inflight.join_next().await.is_some() {}
        });
        Some(Writer {
            log,
            reads,
            stop,
            handle,
        })
    }

    /// Whether writes go through again after the fault at `fault_ms`: the latest answered
    /// write sent at least `settle` after the fault was acknowledged. While the database is
    /// cut off writes hang or fail, so this stays false until it is back (or failed over).
    pub(crate) fn settled(&self, fault_ms: u64, settle: Duration) -> bool {
        let from = fault_ms + u64::try_from(settle.as_millis()).unwrap_or(u64::MAX);
        let log = self
            .log
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        log.iter()
            .filter(|w| w.sent_ms >= from)
            .max_by_key(|w| w.sent_ms)
            .is_some_and(Write::acked)
    }

    /// Stops writing, waits for the writes and reads in flight (each bounded), and returns
    /// them all in the order they were sent.
    pub(crate) async fn finish(self) -> (Vec<Write>, Vec<CacheRead>) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.handle.await;
        let mut writes = std::mem::take(
            &mut *self
                .log
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        writes.sort_by_key(|w| w.sent_ms);
        let mut reads = std::mem::take(
            &mut *self
                .reads
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        reads.sort_by_key(|r| r.sent_ms);
        (writes, reads)
    }
}

/// What reading the acknowledged writes back found.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct ReadBack {
    /// Acknowledged, then not found (404).
    pub(crate) lost: Vec<String>,
    /// Could not be read (no answer, 5xx) after three tries: neither found nor lost.
    pub(crate) unread: Vec<(String, String)>,
}

/// Reads every acknowledged write of `writes` back (three tries each, one at a time).
pub(crate) async fn read_back(target: &Target, writes: &[Write]) -> ReadBack {
    let mut found = ReadBack::default();
    let Some(endpoint) = Endpoint::of(target) else {
        return found;
    };
    for (k, w) in writes.iter().filter(|w| w.acked()).enumerate() {
        let mut last = Err(String::new());
        for attempt in 0..3u64 {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            let k = u64::try_from(k).unwrap_or(0) + attempt;
            last = endpoint
                .request(k, "GET", &format!("/orders/{}", w.id), "")
                .await
                .map(|(status, _)| status);
            if matches!(last, Ok(200 | 404)) {
                break;
            }
        }
        match last {
            Ok(200) => {}
            Ok(404) => found.lost.push(w.id.clone()),
            Ok(status) => found
                .unread
                .push((w.id.clone(), format!("status {status}"))),
            Err(e) => found.unread.push((w.id.clone(), e)),
        }
    }
    found
}

/// `writes` per second of their answers, from `origin_ms`.
pub(crate) fn per_second(writes: &[Write], origin_ms: u64) -> Vec<crate::report::WritePoint> {
    let mut by_second: std::collections::BTreeMap<u64, (u64, u64)> =
        std::collections::BTreeMap::new();
    for w in writes {
        let t = w.answered_ms.saturating_sub(origin_ms) / 1000;
        let e = by_second.entry(t).or_default();
        if w.acked() {
            e.0 += 1;
        } else {
            e.1 += 1;
        }
    }
    by_second
        .into_iter()
        .map(|(t, (acknowledged, failed))| crate::report::WritePoint {
            t: t as f64,
            acknowledged,
            failed,
        })
        .collect()
}

/// What the scenario saw of its writes.
#[derive(Debug, Clone, Default)]
pub(crate) struct WritesSeen {
    pub(crate) writes: Vec<Write>,
    pub(crate) read: ReadBack,
    /// When the fault was in place and when it was undone (Unix ms).
    pub(crate) fault_ms: u64,
    pub(crate) restore_ms: u64,
    /// Writes per second sent.
    pub(crate) rate: f64,
    /// Whether the database is Multi-AZ.
    pub(crate) multi_az: bool,
    /// Whether it is a Multi-AZ DB cluster (else a DB instance).
    pub(crate) cluster: bool,
    /// With a cache: whether it is Multi-AZ, and the probe's reads.
    pub(crate) cache: Option<(bool, Vec<CacheRead>)>,
}

/// Beyond AWS's failover time, what the sample app needs to reach the promoted replica: its
/// command to the old primary times out, it resolves the endpoint anew (TTL 5 s) and
/// reconnects (model time; as [`RESUME_ALLOWANCE`] for the database).
pub(crate) const CACHE_RESUME_ALLOWANCE: Duration = Duration::from_secs(30);

/// The cache's check and figure, from the probe's reads.
fn judge_cache(
    seen: &WritesSeen,
    multi_az: bool,
    reads: &[CacheRead],
    clock: Clock,
) -> (Check, Figure, String) {
    let since_fault = |ms: u64| clock.model_s(ms.saturating_sub(seen.fault_ms) as f64 / 1000.0);
    let during: Vec<&CacheRead> = reads
        .iter()
        .filter(|r| r.sent_ms >= seen.fault_ms && r.sent_ms < seen.restore_ms)
        .collect();
    let first_down = during.iter().find(|r| r.down());
    let back = first_down.and_then(|d| {
        during
            .iter()
            .find(|r| r.answered() && r.sent_ms > d.sent_ms && r.answered_ms <= seen.restore_ms)
    });
    let interval_s = clock.model_s(1.0 / seen.rate.max(MIN_WRITE_RATE));
    let limit_s = (elasticache::FAILOVER_MAX + CACHE_RESUME_ALLOWANCE).as_secs_f64() + interval_s;
    let range = format!(
        "AWS promotes a Multi-AZ replica in {}-{} s; allowed {limit_s:.0} s with the app's reconnect ({} s) and the reads' interval ({interval_s:.0} s)",
        elasticache::FAILOVER_MIN.as_secs(),
        elasticache::FAILOVER_MAX.as_secs(),
        CACHE_RESUME_ALLOWANCE.as_secs()
    );
    let answered = during.iter().filter(|r| r.answered()).count();
    let down = during.iter().filter(|r| r.down()).count();
    let failover_s = back.map(|r| since_fault(r.answered_ms));
    let check = match (first_down, failover_s) {
        (None, _) => check(
            "cache failover",
            true,
            format!(
                "the cache answered all {answered} reads during the fault (its primary was not in the zone)"
            ),
        ),
        (Some(_), Some(s)) => check(
            "cache failover",
            s <= limit_s,
            format!("the cache answered again {s:.0} s after the fault; {range}"),
        ),
        (Some(d), None) => check(
            "cache failover",
            false,
            format!(
                "the cache did not answer from {:.0} s after the fault until the zone returned at {:.0} s: {}; {range}",
                since_fault(d.sent_ms),
                since_fault(seen.restore_ms),
                if multi_az {
                    "no replica took over"
                } else {
                    "the cache is not Multi-AZ, so no replica takes over"
                }
            ),
        ),
    };
    let figure = fig(
        "cache_failover_s",
        "cache failover (reads served by the cache again)",
        failover_s,
        "s",
    );
    let note = format!(
        "cache: the latest acknowledged order read from the cache at each write's tick (GET /orders/{{id}}, Cache-Control: only-if-cached): {} reads during the fault, {answered} answered by the cache, {down} with the cache away",
        during.len()
    );
    (check, figure, note)
}

/// The checks, figures and notes of the writes.
pub(crate) fn judge(seen: &WritesSeen, clock: Clock) -> (Vec<Check>, Vec<Figure>, Vec<String>) {
    let acked = seen.writes.iter().filter(|w| w.acked()).count();
    let lost = seen.read.lost.len();
    let since_fault = |ms: u64| clock.model_s(ms.saturating_sub(seen.fault_ms) as f64 / 1000.0);
    let during: Vec<&Write> = seen
        .writes
        .iter()
        .filter(|w| w.sent_ms >= seen.fault_ms && w.sent_ms < seen.restore_ms)
        .collect();
    let failed = during.iter().filter(|w| !w.acked()).count();
    let first_failed = during.iter().find(|w| !w.acked());
    // Acknowledged again while the zone was still away.
    let resumed = first_failed.and_then(|f| {
        during
            .iter()
            .find(|w| w.acked() && w.sent_ms > f.sent_ms && w.answered_ms <= seen.restore_ms)
            .copied()
    });
    // The writes are a write interval apart: the measurement is that much coarse.
    let interval_s = clock.model_s(1.0 / seen.rate.max(MIN_WRITE_RATE));
    // AWS's failover time for the deployment option.
    let (aws, max) = if seen.cluster {
        (
            format!(
                "AWS fails a Multi-AZ DB cluster over in under {} s",
                rds::CLUSTER_FAILOVER_MAX.as_secs()
            ),
            rds::CLUSTER_FAILOVER_MAX,
        )
    } else {
        (
            format!(
                "AWS fails a Multi-AZ DB instance over in {}-{} s",
                rds::INSTANCE_FAILOVER_MIN.as_secs(),
                rds::INSTANCE_FAILOVER_MAX.as_secs()
            ),
            rds::INSTANCE_FAILOVER_MAX,
        )
    };
    let limit_s = (max + RESUME_ALLOWANCE).as_secs_f64() + interval_s;
    let range = format!(
        "{aws}; allowed {limit_s:.0} s with a client's reconnect ({} s) and the writes' interval ({interval_s:.0} s)",
        RESUME_ALLOWANCE.as_secs()
    );
    let failover_s = resumed.map(|w| since_fault(w.answered_ms));
    let away_s = since_fault(seen.restore_ms);
    let mut checks = vec![check(
        "no acknowledged write lost",
        lost == 0 && seen.read.unread.is_empty(),
        if lost > 0 {
            format!(
                "{lost} of {acked} acknowledged writes are gone (e.g. {})",
                seen.read
                    .lost
                    .iter()
                    .take(5)
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        } else if !seen.read.unread.is_empty() {
            let (id, why) = &seen.read.unread[0];
            format!(
                "{} of {acked} acknowledged writes could not be read back (e.g. {id}: {why})",
                seen.read.unread.len()
            )
        } else {
            format!("all {acked} acknowledged writes read back after the zone returned")
        },
    )];
    let failover = match (first_failed, failover_s) {
        (None, _) => check(
            "database failover",
            true,
            format!("no write failed during the fault ({} sent)", during.len()),
        ),
        (Some(_), Some(s)) => check(
            "database failover",
            s <= limit_s,
            format!("writes acknowledged again {s:.0} s after the fault; {range}"),
        ),
        (Some(f), None) => check(
            "database failover",
            false,
            format!(
                "writes failed from {:.0} s after the fault until the zone returned at {away_s:.0} s: {}; {range}",
                since_fault(f.sent_ms),
                if seen.multi_az {
                    "the standby did not take over"
                } else {
                    "the database is Single-AZ, so no standby can take over"
                }
            ),
        ),
    };
    checks.push(failover);
    // Failed writes: at most what the failover time allows at the write rate.
    let budget = (seen.rate * clock.wall_s(limit_s)).ceil();
    checks.push(check(
        "write error budget",
        (failed as f64) <= budget,
        format!(
            "{failed} of {} writes failed during the fault; the budget is {budget:.0} ({:.1} writes/s for {limit_s:.0} s)",
            during.len(),
            seen.rate
        ),
    ));
    let count = |n: usize| Some(n as f64);
    let figures = vec![
        fig(
            "writes_acknowledged",
            "acknowledged writes",
            count(acked),
            "requests",
        ),
        fig(
            "writes_lost",
            "acknowledged writes lost",
            count(lost),
            "requests",
        ),
        fig(
            "writes_failed",
            "writes failed during the fault",
            count(failed),
            "requests",
        ),
        fig(
            "db_failover_s",
            "database failover (writes acknowledged again)",
            failover_s,
            "s",
        ),
    ];
    let mut figures = figures;
    let mut notes = vec![format!(
        "writes: {:.1}/s of POST /orders with ids the proof chose, {} sent, {acked} acknowledged, {failed} failed during the fault; every acknowledged id read back with GET /orders/{{id}}",
        seen.rate,
        seen.writes.len()
    )];
    if let Some((multi_az, reads)) = &seen.cache {
        let (c, f, n) = judge_cache(seen, *multi_az, reads, clock);
        checks.push(c);
        figures.push(f);
        notes.push(n);
    }
    (checks, figures, notes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(k: u64, sent_s: f64, outcome: Result<u16, String>) -> Write {
        let ms = (sent_s * 1000.0) as u64;
        Write {
            id: format!("proof-t-{k}"),
            sent_ms: ms,
            answered_ms: ms + 50,
            outcome,
        }
    }

    /// Writes every 0.1 s from 0 to 30 s (wall); failing from `fail_from` until `ok_from`.
    fn seen(fail_from: f64, ok_from: f64, multi_az: bool) -> WritesSeen {
        let writes = (0..300)
            .map(|k| {
                let t = k as f64 / 10.0;
                let failing = t >= fail_from && t < ok_from;
                write(k, t, if failing { Ok(504) } else { Ok(201) })
            })
            .collect();
        WritesSeen {
            writes,
            read: ReadBack::default(),
            fault_ms: 5_000,
            restore_ms: 25_000,
            rate: 10.0,
            multi_az,
            cluster: false,
            cache: None,
        }
    }

    fn passed(checks: &[Check], name: &str) -> bool {
        checks.iter().find(|c| c.name == name).unwrap().passed
    }

    #[test]
    fn a_failover_in_aws_s_time_passes_and_no_failover_fails() {
        let clock = Clock::fast();
        // Writes fail from the fault (5 s) until 15 s: 100 AWS seconds.
        let (checks, figures, _) = judge(&seen(5.0, 15.0, true), clock);
        assert!(checks.iter().all(|c| c.passed), "{checks:?}");
        let s = figures.iter().find(|f| f.key == "db_failover_s").unwrap();
        assert_eq!(s.value.map(f64::round), Some(101.0));
        // Until 21 s: 160 AWS seconds, past 120 + 30 + one write interval.
        let (checks, _, _) = judge(&seen(5.0, 21.0, true), clock);
        assert!(!passed(&checks, "database failover"), "{checks:?}");
        assert!(!passed(&checks, "write error budget"), "{checks:?}");
        // Single-AZ: failing until the zone is back (25 s): no failover, said why.
        let (checks, _, _) = judge(&seen(5.0, 26.0, false), clock);
        let failover = checks
            .iter()
            .find(|c| c.name == "database failover")
            .unwrap();
        assert!(!failover.passed);
        assert!(failover.detail.contains("Single-AZ"), "{failover:?}");
    }

    #[test]
    fn a_cluster_is_held_to_its_own_shorter_failover_time() {
        let clock = Clock::fast();
        // Writes fail from the fault (5 s) until 10 s: 50 AWS seconds, within 35 + 30 + one
        // write interval for a cluster.
        let mut cluster = seen(5.0, 10.0, true);
        cluster.cluster = true;
        let (checks, _, _) = judge(&cluster, clock);
        assert!(checks.iter().all(|c| c.passed), "{checks:?}");
        // Until 15 s: 100 AWS seconds, an instance's time, which a cluster fails.
        let mut slow = seen(5.0, 15.0, true);
        slow.cluster = true;
        let (checks, _, _) = judge(&slow, clock);
        let failover = checks
            .iter()
            .find(|c| c.name == "database failover")
            .unwrap();
        assert!(!failover.passed, "{failover:?}");
        assert!(
            failover
                .detail
                .contains("Multi-AZ DB cluster over in under 35 s"),
            "{failover:?}"
        );
        assert!(!passed(&checks, "write error budget"), "{checks:?}");
    }

    #[test]
    fn an_acknowledged_write_that_is_gone_fails_the_proof() {
        let mut s = seen(5.0, 15.0, true);
        s.read.lost = vec!["proof-t-3".into()];
        let (checks, figures, _) = judge(&s, Clock::fast());
        assert!(!passed(&checks, "no acknowledged write lost"));
        assert_eq!(
            figures
                .iter()
                .find(|f| f.key == "writes_lost")
                .unwrap()
                .value,
            Some(1.0)
        );
        let mut s = seen(5.0, 15.0, true);
        s.read.unread = vec![("proof-t-3".into(), "no answer".into())];
        assert!(!passed(
            &judge(&s, Clock::fast()).0,
            "no acknowledged write lost"
        ));
    }

    /// Cache reads every 0.1 s from 0 to 30 s: `down` from `down_from` until `back_from`.
    fn cache_reads(down_from: f64, back_from: f64) -> Vec<CacheRead> {
        (0..300)
            .map(|k| {
                let t = k as f64 / 10.0;
                let ms = (t * 1000.0) as u64;
                let down = t >= down_from && t < back_from;
                CacheRead {
                    sent_ms: ms,
                    answered_ms: ms + 20,
                    cache: Ok(if down { "down" } else { "hit" }.to_owned()),
                }
            })
            .collect()
    }

    #[test]
    fn a_cache_failover_in_aws_s_time_passes_and_none_fails() {
        let clock = Clock::fast();
        let cache_check = |s: &WritesSeen| {
            let (checks, figures, _) = judge(s, clock);
            let c = checks
                .into_iter()
                .find(|c| c.name == "cache failover")
                .unwrap();
            let f = figures
                .into_iter()
                .find(|f| f.key == "cache_failover_s")
                .unwrap();
            (c, f.value)
        };
        // Away from the fault (5 s) until 8 s: 30 AWS seconds.
        let mut s = seen(5.0, 15.0, true);
        s.cache = Some((true, cache_reads(5.0, 8.0)));
        let (c, value) = cache_check(&s);
        assert!(c.passed, "{c:?}");
        assert_eq!(value.map(f64::round), Some(30.0));
        // Until 12 s: 70 AWS seconds, past 30 + 30 + one interval.
        s.cache = Some((true, cache_reads(5.0, 12.0)));
        assert!(!cache_check(&s).0.passed);
        // Never back while the zone was away, and not Multi-AZ: says so.
        s.cache = Some((false, cache_reads(5.0, 26.0)));
        let (c, value) = cache_check(&s);
        assert!(!c.passed && c.detail.contains("not Multi-AZ"), "{c:?}");
        assert_eq!(value, None);
        // Its primary elsewhere: never away, passes.
        s.cache = Some((true, cache_reads(99.0, 99.0)));
        assert!(cache_check(&s).0.passed);
    }

    #[test]
    fn the_write_rate_is_a_share_of_the_load_within_bounds() {
        assert_eq!(write_rate(500.0), 10.0);
        assert_eq!(write_rate(10.0), 5.0);
        assert_eq!(write_rate(5000.0), 20.0);
    }
}
