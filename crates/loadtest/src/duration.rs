//! Durations as users of k6 and oha write them: `250ms`, `30s`, `5m`, `1h`, `1m30s`, `1.5s`.
//! A number without a unit is refused (is `30` seconds or milliseconds?), except `0`.

use std::time::Duration;

const UNITS: &str = "units: ms, s, m, h; such as 250ms, 30s, 5m, 1m30s";

/// Reads a duration; `Err` says what is wrong and what is allowed, quoting `text`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    if t == "0" {
        return Ok(Duration::ZERO);
    }
    if t.is_empty() {
        return Err(format!("{text:?} is not a duration ({UNITS})"));
    }
    let mut rest = t;
    let mut secs = 0.0_f64;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (number, after) = rest.split_at(digits);
        let value: f64 = number
            .parse()
            .map_err(|_| format!("{text:?} is not a duration ({UNITS})"))?;
        let letters = after
            .find(|c: char| !c.is_ascii_alphabetic())
            .unwrap_or(after.len());
        let (unit, next) = after.split_at(letters);
        let scale = match unit {
            "ms" => 0.001,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            "" => {
                return Err(format!(
                    "{text:?} has no unit: write {number}s for seconds ({UNITS})"
                ));
            }
            other => return Err(format!("{text:?}: unknown unit {other:?} ({UNITS})")),
        };
        secs += value * scale;
        rest = next;
    }
    if !secs.is_finite() || secs > 1e9 {
        return Err(format!("{text:?} is too long a duration"));
    }
    Ok(Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_as_k6_writes_them() {
        let s = |t: &str| parse_duration(t).map(|d| d.as_secs_f64());
        assert_eq!(s("30s"), Ok(30.0));
        assert_eq!(s("250ms"), Ok(0.25));
        assert_eq!(s("5m"), Ok(300.0));
        assert_eq!(s("1h"), Ok(3600.0));
        assert_eq!(s("1m30s"), Ok(90.0));
        assert_eq!(s("1.5s"), Ok(1.5));
        assert_eq!(s(" 2h30m "), Ok(9000.0));
        assert_eq!(s("0"), Ok(0.0));
        assert_eq!(s("0s"), Ok(0.0));
    }

    #[test]
    fn a_bare_number_or_an_unknown_unit_is_refused_with_what_to_write() {
        let e = parse_duration("30").unwrap_err();
        assert!(
            e.contains("\"30\" has no unit: write 30s for seconds"),
            "{e}"
        );
        let e = parse_duration("1m30").unwrap_err();
        assert!(e.contains("has no unit"), "{e}");
        let e = parse_duration("3d").unwrap_err();
        assert!(e.contains("unknown unit \"d\""), "{e}");
        for bad in ["", "s", "-5s", "1..2s", "ten seconds"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }
}
