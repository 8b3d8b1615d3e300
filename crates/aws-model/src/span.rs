//! [`Span`]: a predicted time, as its least, expected and greatest value.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A predicted duration in model seconds: the least, the expected and the greatest value the
/// model allows (phase of the metric periods, launch latency, health-check phase).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Span {
    /// Least.
    pub min: f64,
    /// Expected (the mean over what the model leaves open).
    pub expected: f64,
    /// Greatest.
    pub max: f64,
}

impl Span {
    /// A span of one value.
    pub fn exactly(v: f64) -> Span {
        Span {
            min: v,
            expected: v,
            max: v,
        }
    }

    /// `self` followed by `other` (sums).
    pub fn then(self, other: Span) -> Span {
        Span {
            min: self.min + other.min,
            expected: self.expected + other.expected,
            max: self.max + other.max,
        }
    }

    /// The later of two events.
    pub fn later(self, other: Span) -> Span {
        Span {
            min: self.min.max(other.min),
            expected: self.expected.max(other.expected),
            max: self.max.max(other.max),
        }
    }

    /// The earlier of two events.
    pub fn earlier(self, other: Span) -> Span {
        Span {
            min: self.min.min(other.min),
            expected: self.expected.min(other.expected),
            max: self.max.min(other.max),
        }
    }

    /// How far `measured` is from the expected value, as a fraction of it (0.1 = 10 %).
    pub fn deviation(&self, measured: f64) -> f64 {
        if self.expected.abs() < f64::EPSILON {
            return if measured.abs() < f64::EPSILON {
                0.0
            } else {
                f64::INFINITY
            };
        }
        (measured - self.expected).abs() / self.expected
    }

    /// Whether `measured` lies within the span, widened by `slack` seconds on each side.
    pub fn contains(&self, measured: f64, slack: f64) -> bool {
        measured >= self.min - slack && measured <= self.max + slack
    }
}

impl fmt::Display for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if (self.max - self.min).abs() < 0.5 {
            write!(f, "{:.0} s", self.expected)
        } else {
            write!(
                f,
                "{:.0} s ({:.0}-{:.0})",
                self.expected, self.min, self.max
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_add_and_compare() {
        let a = Span {
            min: 10.0,
            expected: 15.0,
            max: 20.0,
        };
        let b = Span::exactly(5.0);
        assert_eq!(a.then(b).expected, 20.0);
        assert_eq!(a.later(Span::exactly(30.0)).min, 30.0);
        assert_eq!(a.earlier(b).max, 5.0);
        assert!((a.deviation(18.0) - 0.2).abs() < 1e-9);
        assert!(a.contains(21.0, 1.0) && !a.contains(22.0, 1.0));
        assert_eq!(a.to_string(), "15 s (10-20)");
        assert_eq!(b.to_string(), "5 s");
    }
}
