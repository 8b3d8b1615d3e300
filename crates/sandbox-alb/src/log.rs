//! ALB access log lines (the documented space-separated format) and their timestamps.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Everything one access log line says about a request.
#[derive(Debug)]
pub(crate) struct Entry {
    pub(crate) time: SystemTime,
    pub(crate) client: SocketAddr,
    pub(crate) target: Option<SocketAddr>,
    /// Written as seconds with 3 decimals; `None` is written as `-1` (no target answered).
    pub(crate) request_processing: Option<Duration>,
    pub(crate) target_processing: Option<Duration>,
    pub(crate) response_processing: Option<Duration>,
    pub(crate) elb_status: u16,
    pub(crate) target_status: Option<u16>,
    pub(crate) received_bytes: u64,
    pub(crate) sent_bytes: u64,
    pub(crate) request: String,
    pub(crate) user_agent: String,
    pub(crate) request_creation_time: SystemTime,
    pub(crate) error_reason: Option<&'static str>,
}

impl Entry {
    /// The line for load balancer `elb`, in the field order of the ALB access log
    /// documentation ("http" entries).
    pub(crate) fn line(&self, elb: &str) -> String {
        let mut out = String::with_capacity(360);
        self.write_line(&mut out, elb);
        out
    }

    /// Appends the line to `out`. Every request writes one, so numbers are written by hand:
    /// `core::fmt` made a line cost ~2.5 µs, this ~0.75 µs.
    fn write_line(&self, out: &mut String, elb: &str) {
        out.push_str("http ");
        write_rfc3339_micros(out, self.time);
        out.push(' ');
        out.push_str(elb);
        out.push(' ');
        write_addr(out, Some(self.client));
        out.push(' ');
        write_addr(out, self.target);
        for time in [
            self.request_processing,
            self.target_processing,
            self.response_processing,
        ] {
            out.push(' ');
            write_secs(out, time);
        }
        out.push(' ');
        write_u64(out, u64::from(self.elb_status));
        out.push(' ');
        write_status(out, self.target_status);
        out.push(' ');
        write_u64(out, self.received_bytes);
        out.push(' ');
        write_u64(out, self.sent_bytes);
        out.push_str(" \"");
        write_escaped(out, &self.request);
        out.push_str("\" \"");
        write_escaped(out, &self.user_agent);
        out.push_str("\" - - - \"-\" \"-\" \"-\" 0 ");
        write_rfc3339_micros(out, self.request_creation_time);
        out.push_str(" \"forward\" \"-\" \"");
        out.push_str(self.error_reason.unwrap_or("-"));
        out.push_str("\" \"");
        write_addr(out, self.target);
        out.push_str("\" \"");
        write_status(out, self.target_status);
        out.push_str("\" \"-\" \"-\" -");
    }
}

/// `v` in decimal.
fn write_u64(out: &mut String, v: u64) {
    write_padded(out, v, 1);
}

/// `v` in decimal, zero-padded to at least `width` digits.
fn write_padded(out: &mut String, mut v: u64, width: usize) {
    let mut digits = [b'0'; 20];
    let mut i = digits.len();
    while v > 0 || i == digits.len() {
        i -= 1;
        digits[i] = b'0' + (v % 10) as u8;
        v /= 10;
    }
    for _ in (digits.len() - i)..width {
        out.push('0');
    }
    for &d in &digits[i..] {
        out.push(char::from(d));
    }
}

/// `ip:port`, `-` when absent.
fn write_addr(out: &mut String, addr: Option<SocketAddr>) {
    match addr {
        Some(SocketAddr::V4(a)) => {
            for (i, octet) in a.ip().octets().into_iter().enumerate() {
                if i > 0 {
                    out.push('.');
                }
                write_u64(out, u64::from(octet));
            }
            out.push(':');
            write_u64(out, u64::from(a.port()));
        }
        Some(a @ SocketAddr::V6(_)) => {
            let _ = write!(out, "{a}");
        }
        None => out.push('-'),
    }
}

/// A status code, `-` when absent.
fn write_status(out: &mut String, status: Option<u16>) {
    match status {
        Some(s) => write_u64(out, u64::from(s)),
        None => out.push('-'),
    }
}

/// Seconds with three decimals (rounded to the millisecond), `-1` when absent.
fn write_secs(out: &mut String, time: Option<Duration>) {
    match time {
        Some(t) => {
            let ms = (t.as_micros() + 500) / 1000;
            write_u64(out, u64::try_from(ms / 1000).unwrap_or(u64::MAX));
            out.push('.');
            write_padded(out, (ms % 1000) as u64, 3);
        }
        None => out.push_str("-1"),
    }
}

/// Quotes are part of the format: a quote or backslash inside a field is escaped.
fn write_escaped(out: &mut String, field: &str) {
    if !field.bytes().any(|b| b == b'"' || b == b'\\' || b < 0x20) {
        out.push_str(field);
        return;
    }
    for c in field.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c => out.push(c),
        }
    }
}

/// `2026-11-23T14:30:17.123456Z`.
#[cfg(test)]
pub(crate) fn rfc3339_micros(time: SystemTime) -> String {
    let mut out = String::with_capacity(27);
    write_rfc3339_micros(&mut out, time);
    out
}

/// Appends `2026-11-23T14:30:17.123456Z`.
fn write_rfc3339_micros(out: &mut String, time: SystemTime) {
    let since = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days((secs / 86_400) as i64);
    write_padded(out, u64::try_from(y).unwrap_or(0), 4);
    out.push('-');
    write_padded(out, u64::from(m), 2);
    out.push('-');
    write_padded(out, u64::from(d), 2);
    out.push('T');
    write_padded(out, rem / 3600, 2);
    out.push(':');
    write_padded(out, rem / 60 % 60, 2);
    out.push(':');
    write_padded(out, rem % 60, 2);
    out.push('.');
    write_padded(out, u64::from(since.subsec_micros()), 6);
    out.push('Z');
}

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian calendar (H. Hinnant).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps() {
        assert_eq!(rfc3339_micros(UNIX_EPOCH), "1970-01-01T00:00:00.000000Z");
        let t = UNIX_EPOCH + Duration::from_micros(1_530_570_180_186_641);
        assert_eq!(rfc3339_micros(t), "2018-07-02T22:23:00.186641Z");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(rfc3339_micros(leap), "2000-02-29T00:00:00.000000Z");
    }

    #[test]
    fn line_has_the_documented_fields() {
        let t = UNIX_EPOCH + Duration::from_micros(1_530_570_180_186_641);
        let entry = Entry {
            time: t,
            client: "192.168.131.39:2817".parse().unwrap(),
            target: Some("10.0.0.1:80".parse().unwrap()),
            request_processing: Some(Duration::ZERO),
            target_processing: Some(Duration::from_millis(1)),
            response_processing: Some(Duration::from_micros(1)),
            elb_status: 200,
            target_status: Some(200),
            received_bytes: 34,
            sent_bytes: 366,
            request: "GET http://www.example.com:80/ HTTP/1.1".into(),
            user_agent: "curl/\"7\"".into(),
            request_creation_time: t,
            error_reason: None,
        };
        assert_eq!(
            entry.line("app/web/50dc6c495c0c9188"),
            "http 2018-07-02T22:23:00.186641Z app/web/50dc6c495c0c9188 192.168.131.39:2817 10.0.0.1:80 0.000 0.001 0.000 200 200 34 366 \"GET http://www.example.com:80/ HTTP/1.1\" \"curl/\\\"7\\\"\" - - - \"-\" \"-\" \"-\" 0 2018-07-02T22:23:00.186641Z \"forward\" \"-\" \"-\" \"10.0.0.1:80\" \"200\" \"-\" \"-\" -"
        );
    }

    #[test]
    fn a_load_balancer_answer_has_no_target_fields_and_fields_are_escaped() {
        let t = UNIX_EPOCH + Duration::from_micros(1_530_570_180_000_001);
        let entry = Entry {
            time: t,
            client: "[::1]:40000".parse().unwrap(),
            target: None,
            request_processing: None,
            target_processing: None,
            response_processing: None,
            elb_status: 503,
            target_status: None,
            received_bytes: 0,
            sent_bytes: 1_234_567,
            request: "GET http://a:80/\\x HTTP/1.1".into(),
            user_agent: "bad\tagent".into(),
            request_creation_time: t,
            error_reason: Some("TargetConnectionError"),
        };
        assert_eq!(
            entry.line("app/web/1"),
            "http 2018-07-02T22:23:00.000001Z app/web/1 [::1]:40000 - -1 -1 -1 503 - 0 1234567 \"GET http://a:80/\\\\x HTTP/1.1\" \"bad\\x09agent\" - - - \"-\" \"-\" \"-\" 0 2018-07-02T22:23:00.000001Z \"forward\" \"-\" \"TargetConnectionError\" \"-\" \"-\" \"-\" \"-\" -"
        );
        let mut secs = String::new();
        write_secs(&mut secs, Some(Duration::from_micros(12_345_678)));
        assert_eq!(secs, "12.346");
    }
}
