//! What a proof run is asked to do, with the defaults `cargo xtask loadtest --help` states.

use infra::Problems;
use serde::{Deserialize, Serialize};

use crate::report::SloSpec;

/// The scenarios, in the order they run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scenario {
    /// Steady load below the scaling threshold.
    Baseline,
    /// Load above what the running tasks carry: the service must scale out.
    Scaling,
    /// One availability zone fails at steady load.
    AzFailover,
}

impl Scenario {
    /// Its name in reports and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Scenario::Baseline => "baseline",
            Scenario::Scaling => "scaling",
            Scenario::AzFailover => "az-failover",
        }
    }
}

/// How the failover scenario fails a zone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Fault {
    /// The zone's subnets move to a deny-all network ACL (what AWS FIS does); restored after.
    NetworkAcl,
    /// The zone's running tasks are stopped (ECS starts replacements).
    StopTasks,
}

/// The options of a proof run. Durations in seconds, rates in requests per second.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProveConfig {
    /// The peak rate: scaling ramps to it, failover holds it. Default 500.
    pub rps: f64,
    /// The scenarios to run (always in the order baseline, scaling, az-failover). Default all.
    pub scenarios: Vec<Scenario>,
    /// The objectives. Default p99 <= 250 ms, errors <= 0.5 %.
    pub slo: SloSpec,
    /// Baseline rate. Default: a fifth of `rps`, at most half of what the running tasks
    /// carry at their target-tracking value.
    pub baseline_rps: Option<f64>,
    /// Baseline length, after the warm-up. Default 20.
    pub baseline_s: f64,
    /// Seconds of baseline load before the measured window: the engine opens its
    /// connections (thousands at a high `rps`) as the run starts, and that burst is not the
    /// service's latency. Default 5; 0 measures from the first second.
    pub warmup_s: f64,
    /// Scaling: time to ramp from the baseline rate to `rps`. Default 20.
    pub ramp_s: f64,
    /// Scaling: the longest wait for the steady state after the load exceeds capacity.
    /// Default 240.
    pub scale_timeout_s: f64,
    /// How long the SLOs must hold once the service settled (scaling) or errors stopped
    /// (failover) before the scenario moves on. Default 15.
    pub settle_s: f64,
    /// Failover: how the zone fails. Default network ACL isolation.
    pub fault: Fault,
    /// Failover: the zone to fail. Default: the one that served the most traffic.
    pub zone: Option<String>,
    /// Failover: steady load before the fault. Default 10.
    pub before_s: f64,
    /// Failover: errors must stop within this many seconds of the fault. Default 60.
    pub max_failover_s: f64,
    /// Failover: the fault is undone at the latest this long after it began. Default 90.
    pub fault_max_s: f64,
    /// Failover: failed requests allowed, as seconds of the whole rate (`rps` x this).
    /// Default 20.
    pub error_budget_s: f64,
    /// Failover: load after the zone is restored, to measure recovery. Default 30.
    pub after_s: f64,
    /// Connection cap of the load engine. Default: enough for every request of 12 s at `rps`
    /// to be in flight at once (a failed zone holds requests until the load balancer's
    /// timeout), 256 at least, 8,000 at most.
    pub connections: Option<usize>,
    /// Request timeout. Default 15 (longer than the load balancer's 10 s connect timeout, so
    /// its 504 is what is counted).
    pub timeout_s: f64,
}

impl Default for ProveConfig {
    fn default() -> Self {
        ProveConfig {
            rps: 500.0,
            scenarios: vec![Scenario::Baseline, Scenario::Scaling, Scenario::AzFailover],
            slo: SloSpec {
                p99_ms: 250.0,
                max_error_rate: 0.005,
            },
            baseline_rps: None,
            baseline_s: 20.0,
            warmup_s: 5.0,
            ramp_s: 20.0,
            scale_timeout_s: 240.0,
            settle_s: 15.0,
            fault: Fault::NetworkAcl,
            zone: None,
            before_s: 10.0,
            max_failover_s: 60.0,
            fault_max_s: 90.0,
            error_budget_s: 20.0,
            after_s: 30.0,
            connections: None,
            timeout_s: 15.0,
        }
    }
}

fn check_range(p: &mut Problems, field: &str, value: f64, min: f64, max: f64, allowed: &str) {
    if !value.is_finite() || value < min || value > max {
        p.add(field, value, allowed);
    }
}

impl ProveConfig {
    /// Every problem at once, each naming the field, the value and what is allowed.
    pub fn validate(&self) -> Result<(), Problems> {
        let mut p = Problems::default();
        check_range(
            &mut p,
            "rps",
            self.rps,
            1.0,
            100_000.0,
            "1 to 100000 requests per second",
        );
        if self.scenarios.is_empty() {
            p.add(
                "scenarios",
                "(none)",
                "at least one of baseline, scaling, az-failover",
            );
        }
        check_range(
            &mut p,
            "p99-ms",
            self.slo.p99_ms,
            0.001,
            600_000.0,
            "milliseconds, > 0",
        );
        check_range(
            &mut p,
            "max-error-rate",
            self.slo.max_error_rate,
            0.0,
            1.0,
            "a fraction from 0 to 1",
        );
        if let Some(b) = self.baseline_rps {
            check_range(
                &mut p,
                "baseline-rps",
                b,
                1.0,
                self.rps.max(1.0),
                "1 to --rps",
            );
        }
        for (field, v, min) in [
            ("baseline-s", self.baseline_s, 1.0),
            ("warmup-s", self.warmup_s, 0.0),
            ("ramp-s", self.ramp_s, 0.0),
            ("scale-timeout-s", self.scale_timeout_s, 5.0),
            ("settle-s", self.settle_s, 1.0),
            ("before-s", self.before_s, 1.0),
            ("max-failover-s", self.max_failover_s, 1.0),
            ("fault-max-s", self.fault_max_s, 1.0),
            ("error-budget-s", self.error_budget_s, 0.0),
            ("after-s", self.after_s, 1.0),
            ("timeout-s", self.timeout_s, 0.1),
        ] {
            check_range(
                &mut p,
                field,
                v,
                min,
                3600.0,
                &format!("seconds, {min} to 3600"),
            );
        }
        if self.fault_max_s.is_finite()
            && self.max_failover_s.is_finite()
            && self.fault_max_s < self.max_failover_s
        {
            p.add(
                "fault-max-s",
                self.fault_max_s,
                format!(
                    "at least max-failover-s ({}): the fault must last long enough to see errors stop",
                    self.max_failover_s
                ),
            );
        }
        if let Some(c) = self.connections
            && !(1..=50_000).contains(&c)
        {
            p.add("connections", c, "1 to 50000");
        }
        p.into_result(())
    }

    /// The connection cap to use.
    pub(crate) fn connections(&self) -> usize {
        self.connections
            .unwrap_or_else(|| ((self.rps * 12.0).ceil() as usize).clamp(256, 8000))
    }

    /// Whether `s` is to run.
    pub(crate) fn runs(&self, s: Scenario) -> bool {
        self.scenarios.contains(&s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        ProveConfig::default().validate().unwrap();
    }

    #[test]
    fn every_problem_is_named_at_once() {
        let c = ProveConfig {
            rps: 0.0,
            scenarios: Vec::new(),
            slo: SloSpec {
                p99_ms: -1.0,
                max_error_rate: 2.0,
            },
            fault_max_s: 10.0,
            connections: Some(0),
            ..ProveConfig::default()
        };
        let problems = c.validate().unwrap_err();
        let text = problems.to_string();
        for field in [
            "rps",
            "scenarios",
            "p99-ms",
            "max-error-rate",
            "fault-max-s",
            "connections",
        ] {
            assert!(problems.mentions(field), "{field} missing in {text}");
        }
        assert!(text.contains("max-failover-s (60)"), "{text}");
    }

    #[test]
    fn the_connection_cap_covers_twelve_seconds_of_load() {
        let c = ProveConfig::default();
        assert_eq!(c.connections(), 6000);
        let small = ProveConfig {
            rps: 10.0,
            ..ProveConfig::default()
        };
        assert_eq!(small.connections(), 256);
    }
}
