//! [`LaunchLatency`]: how long a Fargate task takes from its creation to RUNNING, and the
//! seeded generator it is drawn with.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::Span;
use crate::aws::ecs;

/// A small seeded generator (SplitMix64): the same seed gives the same draws, so a sandbox
/// run with a given seed launches its tasks with the same latencies.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator started from `seed`.
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A draw from [0, 1).
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// A value derived from `seed` and `key` alone (e.g. a target's first health-check offset
    /// from its id), stable whatever else was drawn.
    pub fn keyed(seed: u64, key: &str) -> f64 {
        let h = key.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
        Rng::new(seed ^ h).next_f64()
    }
}

/// Time from a Fargate task's creation (PROVISIONING) to RUNNING: uniform between `min` and
/// `max` (model time). Default [`ecs::LAUNCH_MIN`]..[`ecs::LAUNCH_MAX`]. Written `30s..60s`
/// (or `45s` for a fixed latency).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LaunchLatency {
    /// Shortest.
    pub min: Duration,
    /// Longest.
    pub max: Duration,
}

/// The phases of one task launch (model time).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LaunchPhases {
    /// PROVISIONING: the ENI and capacity.
    pub provisioning: Duration,
    /// PENDING: the image pull ([`ecs::PULL_SHARE`] of the whole).
    pub pending: Duration,
}

impl LaunchLatency {
    /// A latency between `min` and `max`.
    pub fn new(min: Duration, max: Duration) -> Result<LaunchLatency, String> {
        if min > max {
            return Err(format!(
                "{}s..{}s: the shortest is longer than the longest",
                min.as_secs_f64(),
                max.as_secs_f64()
            ));
        }
        if max > Duration::from_secs(3600) {
            return Err(format!("{}s: at most 3600s", max.as_secs_f64()));
        }
        Ok(LaunchLatency { min, max })
    }

    /// One draw.
    pub fn sample(&self, rng: &mut Rng) -> Duration {
        let span = self.max.saturating_sub(self.min);
        self.min + span.mul_f64(rng.next_f64())
    }

    /// The phases of a launch that takes `total`.
    pub fn phases(total: Duration) -> LaunchPhases {
        let pending = total.mul_f64(ecs::PULL_SHARE);
        LaunchPhases {
            provisioning: total.saturating_sub(pending),
            pending,
        }
    }

    /// As a predicted span in model seconds.
    pub fn span(&self) -> Span {
        let (min, max) = (self.min.as_secs_f64(), self.max.as_secs_f64());
        Span {
            min,
            expected: (min + max) / 2.0,
            max,
        }
    }
}

impl Default for LaunchLatency {
    fn default() -> Self {
        LaunchLatency {
            min: ecs::LAUNCH_MIN,
            max: ecs::LAUNCH_MAX,
        }
    }
}

impl fmt::Display for LaunchLatency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.min == self.max {
            write!(f, "{}s", self.min.as_secs_f64())
        } else {
            write!(
                f,
                "{}s..{}s",
                self.min.as_secs_f64(),
                self.max.as_secs_f64()
            )
        }
    }
}

impl FromStr for LaunchLatency {
    type Err = String;

    /// `30s..60s`, `30..60` or `45s`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let secs = |t: &str| -> Result<Duration, String> {
            let t = t.trim();
            let n = t.strip_suffix('s').unwrap_or(t);
            n.parse::<f64>()
                .ok()
                .filter(|v| v.is_finite() && *v >= 0.0)
                .map(Duration::from_secs_f64)
                .ok_or_else(|| format!("{s:?}: write seconds as `30s..60s` or `45s`"))
        };
        match s.split_once("..") {
            Some((a, b)) => LaunchLatency::new(secs(a)?, secs(b)?),
            None => {
                let v = secs(s)?;
                LaunchLatency::new(v, v)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_are_reproducible_and_within_bounds() {
        let l = LaunchLatency::default();
        let draw = |seed| {
            let mut r = Rng::new(seed);
            (0..200).map(|_| l.sample(&mut r)).collect::<Vec<_>>()
        };
        let a = draw(7);
        assert_eq!(a, draw(7), "same seed, same latencies");
        assert_ne!(a, draw(8));
        assert!(a.iter().all(|d| *d >= l.min && *d <= l.max));
        let mean = a.iter().map(Duration::as_secs_f64).sum::<f64>() / a.len() as f64;
        assert!((40.0..50.0).contains(&mean), "mean {mean}");
        assert_eq!(Rng::keyed(1, "task-a"), Rng::keyed(1, "task-a"));
        assert_ne!(Rng::keyed(1, "task-a"), Rng::keyed(1, "task-b"));
    }

    #[test]
    fn parses_and_splits_into_phases() {
        let l: LaunchLatency = "30s..60s".parse().unwrap();
        assert_eq!(l, LaunchLatency::default());
        assert_eq!(l.to_string(), "30s..60s");
        assert_eq!("45".parse::<LaunchLatency>().unwrap().span().expected, 45.0);
        assert!("60s..30s".parse::<LaunchLatency>().is_err());
        assert!(
            "soon"
                .parse::<LaunchLatency>()
                .unwrap_err()
                .contains("30s..60s")
        );
        let p = LaunchLatency::phases(Duration::from_secs(50));
        assert_eq!(p.pending, Duration::from_secs(38));
        assert_eq!(p.provisioning, Duration::from_secs(12));
    }
}
