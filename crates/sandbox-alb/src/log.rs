//! ALB access log lines (the documented space-separated format) and their timestamps.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::{SystemTime, UNIX_EPOCH};

/// Everything one access log line says about a request.
#[derive(Debug)]
pub(crate) struct Entry {
    pub(crate) time: SystemTime,
    pub(crate) client: SocketAddr,
    pub(crate) target: Option<SocketAddr>,
    /// Seconds; `None` is written as `-1` (no target answered).
    pub(crate) request_processing: Option<f64>,
    pub(crate) target_processing: Option<f64>,
    pub(crate) response_processing: Option<f64>,
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
    /// documentation ("http" entries). Formatted when statistics are taken, not per request.
    pub(crate) fn line(&self, elb: &str) -> String {
        let mut out = String::with_capacity(320);
        let secs = |v: Option<f64>| v.map_or_else(|| "-1".to_owned(), |s| format!("{s:.3}"));
        let target = self
            .target
            .map_or_else(|| "-".to_owned(), |t| t.to_string());
        let target_status = self
            .target_status
            .map_or_else(|| "-".to_owned(), |s| s.to_string());
        let _ = write!(
            out,
            "http {} {} {} {} {} {} {} {} {} {} {} \"{}\" \"{}\" - - - \"-\" \"-\" \"-\" 0 {} \"forward\" \"-\" \"{}\" \"{}\" \"{}\" \"-\" \"-\" -",
            rfc3339_micros(self.time),
            elb,
            self.client,
            target,
            secs(self.request_processing),
            secs(self.target_processing),
            secs(self.response_processing),
            self.elb_status,
            target_status,
            self.received_bytes,
            self.sent_bytes,
            escape(&self.request),
            escape(&self.user_agent),
            rfc3339_micros(self.request_creation_time),
            self.error_reason.unwrap_or("-"),
            target,
            target_status,
        );
        out
    }
}

/// Quotes are part of the format: a quote or backslash inside a field is escaped.
fn escape(field: &str) -> std::borrow::Cow<'_, str> {
    if field.bytes().any(|b| b == b'"' || b == b'\\' || b < 0x20) {
        let mut out = String::with_capacity(field.len() + 8);
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
        out.into()
    } else {
        field.into()
    }
}

/// `2026-11-23T14:30:17.123456Z`.
pub(crate) fn rfc3339_micros(time: SystemTime) -> String {
    let since = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:06}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
        since.subsec_micros()
    )
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
    use std::time::Duration;

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
            request_processing: Some(0.0),
            target_processing: Some(0.001),
            response_processing: Some(0.0),
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
}
