//! [`HealthTiming`]: what a target group's health check settings mean in time.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::Span;
use crate::aws::elb;

/// A target group's health check timing (model time).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthTiming {
    /// Time between two checks of a target.
    pub interval: Duration,
    /// How long one check may take.
    pub timeout: Duration,
    /// Passes in a row that bring an unhealthy target back.
    pub healthy_threshold: u32,
    /// Failures in a row that make a target unhealthy.
    pub unhealthy_threshold: u32,
}

impl Default for HealthTiming {
    /// AWS's defaults for ip targets.
    fn default() -> Self {
        HealthTiming {
            interval: elb::DEFAULT_HEALTH_INTERVAL,
            timeout: elb::DEFAULT_HEALTH_TIMEOUT,
            healthy_threshold: elb::DEFAULT_HEALTHY_THRESHOLD,
            unhealthy_threshold: elb::DEFAULT_UNHEALTHY_THRESHOLD,
        }
    }
}

impl HealthTiming {
    fn interval_s(&self) -> f64 {
        self.interval.as_secs_f64()
    }

    /// From a target's registration until it takes traffic: its first check comes within one
    /// interval (the checker's phase) and one pass is enough ([`elb::NEW_TARGET_PASSES`]).
    pub fn first_pass(&self) -> Span {
        let passes = f64::from(elb::NEW_TARGET_PASSES.max(1) - 1);
        Span {
            min: passes * self.interval_s(),
            expected: (passes + 0.5) * self.interval_s(),
            max: (passes + 1.0) * self.interval_s(),
        }
    }

    /// From the moment a target stops answering until it is unhealthy: the next check starts
    /// within one interval, and `unhealthy_threshold` checks in a row each wait out the
    /// timeout, one interval apart.
    pub fn to_unhealthy(&self) -> Span {
        let rest = f64::from(self.unhealthy_threshold.max(1) - 1) * self.interval_s()
            + self.timeout.as_secs_f64();
        Span {
            min: rest,
            expected: rest + self.interval_s() / 2.0,
            max: rest + self.interval_s(),
        }
    }

    /// From the moment an unhealthy target answers again until it is healthy:
    /// `healthy_threshold` passes in a row, the first within one interval.
    pub fn to_recovered(&self) -> Span {
        let rest = f64::from(self.healthy_threshold.max(1) - 1) * self.interval_s();
        Span {
            min: rest,
            expected: rest + self.interval_s() / 2.0,
            max: rest + self.interval_s(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aws_defaults_take_a_minute_to_fail_and_two_and_a_half_to_recover() {
        let d = HealthTiming::default();
        assert_eq!(d.to_unhealthy().max, 65.0);
        assert_eq!(d.to_recovered().max, 150.0);
        assert_eq!(d.first_pass().max, 30.0);
        let stack = HealthTiming {
            interval: Duration::from_secs(10),
            timeout: Duration::from_secs(5),
            healthy_threshold: 2,
            unhealthy_threshold: 2,
        };
        assert_eq!(stack.to_unhealthy().min, 15.0);
        assert_eq!(stack.to_unhealthy().max, 25.0);
        assert_eq!(stack.first_pass().expected, 5.0);
    }
}
