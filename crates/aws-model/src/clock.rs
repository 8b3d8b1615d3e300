//! [`Clock`]: the time scale the model runs at.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// How fast model time passes: `scale` model seconds per wall second. [`Clock::AWS`] (1) is
/// AWS's own clock; a faster clock divides every duration of the model by its scale and
/// leaves rates alone, so the same model runs, only sooner.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "f64", into = "f64")]
pub struct Clock {
    scale: f64,
}

/// A clock scale out of range.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("clock {value:?}: allowed are `aws` (1), `fast` (x{fast}) or a factor from 1 to {max}")]
pub struct ClockError {
    /// What was given.
    pub value: String,
    /// The factor of `fast`.
    pub fast: f64,
    /// The largest factor.
    pub max: f64,
}

impl Clock {
    /// AWS's clock: model time is wall time.
    pub const AWS: Clock = Clock { scale: 1.0 };
    /// The factor of [`Clock::fast`]: the model's shortest durations (a 5 s health-check
    /// timeout) become half a second, still long against a loopback request (about 1 ms).
    pub const FAST_SCALE: f64 = 10.0;
    /// The largest factor: beyond it a 5 s health-check timeout falls under the sandbox's
    /// own reaction time.
    pub const MAX_SCALE: f64 = 50.0;

    /// The fast clock (x[`Clock::FAST_SCALE`]).
    pub fn fast() -> Clock {
        Clock {
            scale: Self::FAST_SCALE,
        }
    }

    /// A clock `scale` times faster than AWS's (1 to [`Clock::MAX_SCALE`]).
    pub fn scaled(scale: f64) -> Result<Clock, ClockError> {
        if scale.is_finite() && (1.0..=Self::MAX_SCALE).contains(&scale) {
            Ok(Clock { scale })
        } else {
            Err(ClockError {
                value: scale.to_string(),
                fast: Self::FAST_SCALE,
                max: Self::MAX_SCALE,
            })
        }
    }

    /// Model seconds per wall second.
    pub fn scale(&self) -> f64 {
        self.scale
    }

    /// Whether this is AWS's own clock.
    pub fn is_aws(&self) -> bool {
        self.scale == 1.0
    }

    /// The wall time a model duration takes.
    pub fn wall(&self, model: Duration) -> Duration {
        model.div_f64(self.scale)
    }

    /// The wall seconds of `model_s` model seconds.
    pub fn wall_s(&self, model_s: f64) -> f64 {
        model_s / self.scale
    }

    /// The model time a wall duration stands for.
    pub fn model(&self, wall: Duration) -> Duration {
        wall.mul_f64(self.scale)
    }

    /// The model seconds of `wall_s` wall seconds.
    pub fn model_s(&self, wall_s: f64) -> f64 {
        wall_s * self.scale
    }
}

impl Default for Clock {
    fn default() -> Self {
        Clock::AWS
    }
}

impl fmt::Display for Clock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_aws() {
            f.write_str("AWS clock")
        } else {
            write!(f, "fast clock (x{})", self.scale)
        }
    }
}

impl FromStr for Clock {
    type Err = ClockError;

    /// `aws`, `fast`, or a factor such as `20` or `x20`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim().to_ascii_lowercase();
        match t.as_str() {
            "aws" => Ok(Clock::AWS),
            "fast" => Ok(Clock::fast()),
            _ => {
                let number = t.strip_prefix('x').unwrap_or(&t);
                number
                    .parse::<f64>()
                    .map_err(|_| ClockError {
                        value: s.to_owned(),
                        fast: Self::FAST_SCALE,
                        max: Self::MAX_SCALE,
                    })
                    .and_then(|scale| {
                        Clock::scaled(scale).map_err(|mut e| {
                            e.value = s.to_owned();
                            e
                        })
                    })
            }
        }
    }
}

impl TryFrom<f64> for Clock {
    type Error = ClockError;
    fn try_from(scale: f64) -> Result<Self, Self::Error> {
        Clock::scaled(scale)
    }
}

impl From<Clock> for f64 {
    fn from(c: Clock) -> f64 {
        c.scale
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_faster_clock_divides_durations_and_converts_back() {
        let c = Clock::fast();
        assert_eq!(c.wall(Duration::from_secs(60)), Duration::from_secs(6));
        assert_eq!(c.model(Duration::from_secs(6)), Duration::from_secs(60));
        assert_eq!(c.model_s(1.5), 15.0);
        assert_eq!(
            Clock::AWS.wall(Duration::from_secs(60)),
            Duration::from_secs(60)
        );
    }

    #[test]
    fn parses_names_and_factors_and_names_what_is_allowed() {
        assert_eq!("aws".parse::<Clock>().unwrap(), Clock::AWS);
        assert_eq!("Fast".parse::<Clock>().unwrap(), Clock::fast());
        assert_eq!("x20".parse::<Clock>().unwrap().scale(), 20.0);
        assert_eq!("2.5".parse::<Clock>().unwrap().scale(), 2.5);
        for bad in ["0.5", "x100", "slow", "nan"] {
            let e = bad.parse::<Clock>().unwrap_err();
            let text = e.to_string();
            assert!(text.contains(bad) && text.contains("`aws`"), "{text}");
        }
        assert_eq!(Clock::fast().to_string(), "fast clock (x10)");
        let json = serde_json::to_string(&Clock::fast()).unwrap();
        assert_eq!(json, "10.0");
        assert!(serde_json::from_str::<Clock>("0.1").is_err());
    }
}
