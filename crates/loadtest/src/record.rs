//! Recording: the per-worker, per-second [`Frame`] every response and error lands in.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Highest latency the histograms track, in microseconds (one hour); longer values saturate.
pub const HIST_MAX_US: u64 = 3_600_000_000;

/// A latency histogram in microseconds, 3 significant figures, 1 µs to one hour.
pub fn new_histogram() -> Histogram<u64> {
    // Bounds are constants that `new_with_bounds` accepts; fall back to an auto-resizing one.
    Histogram::new_with_bounds(1, HIST_MAX_US, 3).unwrap_or_else(|_| {
        let mut h = Histogram::new(3).unwrap_or_else(|_| unreachable_histogram());
        h.auto(true);
        h
    })
}

fn unreachable_histogram() -> Histogram<u64> {
    // `Histogram::new(3)` only fails for sigfig > 5.
    Histogram::new(2)
        .unwrap_or_else(|_| Histogram::new(1).unwrap_or_else(|_| unreachable_histogram()))
}

/// Duration as whole microseconds (at least 1).
#[inline]
pub(crate) fn micros(d: Duration) -> u64 {
    (d.as_micros() as u64).max(1)
}

/// Why a request failed without a response.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum ErrorKind {
    /// The connection was refused.
    Refused,
    /// Connect or request timeout.
    Timeout,
    /// The peer reset or closed the connection mid-exchange.
    Reset,
    /// The host did not resolve (or resolved to nothing).
    Dns,
    /// TLS handshake or certificate failure.
    Tls,
    /// Anything else (protocol errors, local resource errors).
    Other,
}

impl ErrorKind {
    /// Every kind, in report order.
    pub const ALL: [ErrorKind; 6] = [
        ErrorKind::Refused,
        ErrorKind::Timeout,
        ErrorKind::Reset,
        ErrorKind::Dns,
        ErrorKind::Tls,
        ErrorKind::Other,
    ];

    /// The kebab-case name used in reports.
    pub fn name(self) -> &'static str {
        match self {
            ErrorKind::Refused => "refused",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Reset => "reset",
            ErrorKind::Dns => "dns",
            ErrorKind::Tls => "tls",
            ErrorKind::Other => "other",
        }
    }

    fn index(self) -> usize {
        match self {
            ErrorKind::Refused => 0,
            ErrorKind::Timeout => 1,
            ErrorKind::Reset => 2,
            ErrorKind::Dns => 3,
            ErrorKind::Tls => 4,
            ErrorKind::Other => 5,
        }
    }

    /// Classifies an I/O error (one that carries a rustls error is `Tls`).
    pub fn of_io(e: &std::io::Error) -> ErrorKind {
        use std::io::ErrorKind as K;
        if crate::tls::is_rustls(e) {
            return ErrorKind::Tls;
        }
        match e.kind() {
            K::ConnectionRefused => ErrorKind::Refused,
            K::TimedOut => ErrorKind::Timeout,
            K::ConnectionReset
            | K::ConnectionAborted
            | K::BrokenPipe
            | K::UnexpectedEof
            | K::NotConnected => ErrorKind::Reset,
            _ => ErrorKind::Other,
        }
    }
}

/// What one worker recorded during one second of the run (frame `second` covers
/// `[second, second + 1)` seconds after the start).
#[derive(Debug)]
pub struct Frame {
    /// Second index since the start.
    pub second: u32,
    /// Requests started.
    pub sent: u64,
    /// Responses received (any status).
    pub completed: u64,
    /// Requests that failed without a response.
    pub errors: u64,
    /// Requests that started later than the late-start threshold.
    pub late_starts: u64,
    /// Connections opened.
    pub connects: u64,
    /// Latency from the intended send time, µs.
    pub corrected: Histogram<u64>,
    /// Latency from the actual send time, µs.
    pub raw: Histogram<u64>,
    /// Responses per status code (index = status - 100).
    pub statuses: Vec<u64>,
    /// Errors per kind, indexed like [`ErrorKind::ALL`].
    pub error_kinds: [u64; 6],
    /// Responses and errors per remote address.
    pub by_addr: Vec<(SocketAddr, u64)>,
    /// Failed requests per remote address (also counted in `by_addr`).
    pub errors_by_addr: Vec<(SocketAddr, u64)>,
    /// Connection attempts that failed per address (the next address was tried).
    pub connect_failures: Vec<(SocketAddr, u64)>,
    /// Per breakdown header (same order as configured): responses per header value (`None` when
    /// the header was absent).
    pub by_header: Vec<Vec<(Option<Bytes>, u64)>>,
}

impl Frame {
    /// An empty frame for `second` with `headers` breakdown headers.
    pub fn new(second: u32, headers: usize) -> Self {
        Self {
            second,
            sent: 0,
            completed: 0,
            errors: 0,
            late_starts: 0,
            connects: 0,
            corrected: new_histogram(),
            raw: new_histogram(),
            statuses: vec![0; 500],
            error_kinds: [0; 6],
            by_addr: Vec::new(),
            errors_by_addr: Vec::new(),
            connect_failures: Vec::new(),
            by_header: vec![Vec::new(); headers],
        }
    }

    /// Records a response.
    #[inline]
    pub fn response(&mut self, status: u16, corrected: Duration, raw: Duration, addr: SocketAddr) {
        self.completed += 1;
        self.corrected.saturating_record(micros(corrected));
        self.raw.saturating_record(micros(raw));
        if let Some(c) = self.statuses.get_mut(usize::from(status).wrapping_sub(100)) {
            *c += 1;
        }
        self.count_addr(addr);
    }

    /// Records the value of breakdown header `i` in a response.
    #[inline]
    pub fn header_value(&mut self, i: usize, value: Option<&[u8]>) {
        let Some(slot) = self.by_header.get_mut(i) else {
            return;
        };
        for (v, c) in slot.iter_mut() {
            if v.as_deref() == value {
                *c += 1;
                return;
            }
        }
        slot.push((value.map(Bytes::copy_from_slice), 1));
    }

    /// Records a failed request.
    #[inline]
    pub fn error(&mut self, kind: ErrorKind, addr: Option<SocketAddr>) {
        self.errors += 1;
        self.error_kinds[kind.index()] += 1;
        if let Some(a) = addr {
            self.count_addr(a);
            count(&mut self.errors_by_addr, a, 1);
        }
    }

    /// Records a connection attempt to `addr` that failed.
    pub fn connect_failure(&mut self, addr: SocketAddr) {
        count(&mut self.connect_failures, addr, 1);
    }

    #[inline]
    fn count_addr(&mut self, addr: SocketAddr) {
        count(&mut self.by_addr, addr, 1);
    }
}

/// Adds `n` to `addr`'s count in a short list.
#[inline]
pub(crate) fn count(list: &mut Vec<(SocketAddr, u64)>, addr: SocketAddr, n: u64) {
    match list.iter_mut().find(|(a, _)| *a == addr) {
        Some((_, c)) => *c += n,
        None => list.push((addr, n)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_count_statuses_errors_and_header_values() {
        let a: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let mut f = Frame::new(0, 1);
        f.response(200, Duration::from_millis(2), Duration::from_millis(1), a);
        f.header_value(0, Some(b"az-a"));
        f.response(503, Duration::from_millis(2), Duration::from_millis(1), a);
        f.header_value(0, Some(b"az-a"));
        f.response(200, Duration::from_millis(2), Duration::from_millis(1), a);
        f.header_value(0, None);
        f.error(ErrorKind::Reset, Some(a));
        assert_eq!((f.completed, f.errors), (3, 1));
        assert_eq!(f.statuses[100], 2);
        assert_eq!(f.statuses[403], 1);
        assert_eq!(
            f.by_header[0],
            vec![(Some(Bytes::from_static(b"az-a")), 2), (None, 1)]
        );
        assert_eq!(f.by_addr, vec![(a, 4)]);
        assert_eq!(f.corrected.len(), 3);
    }
}
