//! The JUnit XML form of a [`CheckResult`]: what CI systems (GitHub Actions test reporters,
//! GitLab, Jenkins) read to show a scheduled check's verdict.

use std::fmt::Write as _;

use super::{CheckResult, SUITE};

/// One `<testsuite>` with one `<testcase>` per objective.
pub(super) fn render(r: &CheckResult) -> String {
    let failures = r.objectives.iter().filter(|o| !o.passed).count();
    let time = format!("{:.3}", r.duration_s);
    let mut x = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        x,
        "<testsuite name=\"{SUITE}\" tests=\"{}\" failures=\"{failures}\" errors=\"0\" skipped=\"0\" time=\"{time}\" timestamp=\"{}\">",
        r.objectives.len(),
        iso8601(r.started_unix_ms)
    );
    x.push_str("  <properties>\n");
    for (name, value) in [
        ("url", r.url.clone()),
        ("target", r.target.clone()),
        ("requests", r.requests.to_string()),
        ("success-percent", format!("{:.2}", r.success_percent)),
        ("p50-ms", format!("{:.2}", r.p50_ms)),
        ("p99-ms", format!("{:.2}", r.p99_ms)),
        ("errors", r.errors.to_string()),
    ] {
        let _ = writeln!(
            x,
            "    <property name=\"{}\" value=\"{}\"/>",
            escape(name),
            escape(&value)
        );
    }
    for (zone, n) in &r.zones {
        let _ = writeln!(
            x,
            "    <property name=\"zone.{}\" value=\"{n}\"/>",
            escape(zone)
        );
    }
    x.push_str("  </properties>\n");
    for o in &r.objectives {
        let _ = write!(
            x,
            "  <testcase classname=\"{SUITE}\" name=\"{}\" time=\"{time}\"",
            escape(&o.name)
        );
        if o.passed {
            x.push_str("/>\n");
        } else {
            let _ = writeln!(
                x,
                ">\n    <failure message=\"{}\" type=\"slo\">{}</failure>\n  </testcase>",
                escape(&o.detail),
                escape(&o.detail)
            );
        }
    }
    let _ = writeln!(
        x,
        "  <system-out>{}\n{}</system-out>",
        escape(&r.summary()),
        escape(&r.verdict())
    );
    x.push_str("</testsuite>\n");
    x
}

/// Escapes text for an XML attribute or element: the five entities, line breaks and tabs as
/// character references (attribute values keep them), other control characters dropped (XML 1.0
/// cannot carry them).
pub(super) fn escape(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&apos;"),
            '\n' => o.push_str("&#10;"),
            '\r' => o.push_str("&#13;"),
            '\t' => o.push_str("&#9;"),
            c if (c as u32) < 0x20 || c == '\u{fffe}' || c == '\u{ffff}' => {}
            c => o.push(c),
        }
    }
    o
}

/// `YYYY-MM-DDTHH:MM:SS` (UTC) of a Unix time in milliseconds, as JUnit's `timestamp` wants.
fn iso8601(unix_ms: u64) -> String {
    let t = infra::UtcTime::from_unix(unix_ms / 1000);
    format!("{}T{}", t.date(), t.clock())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup_and_control_characters() {
        assert_eq!(
            escape("a<b & \"c\" 'd'>\n\u{1}e"),
            "a&lt;b &amp; &quot;c&quot; &apos;d&apos;&gt;&#10;e"
        );
    }

    #[test]
    fn timestamps_are_utc_calendar_dates() {
        assert_eq!(iso8601(0), "1970-01-01T00:00:00");
        assert_eq!(iso8601(951_782_400_000), "2000-02-29T00:00:00");
        assert_eq!(iso8601(1_700_000_000_123), "2023-11-14T22:13:20");
    }
}
