//! What a proof run is asked to do, with the defaults `cargo xtask loadtest --help` states.
//!
//! Two kinds of durations: the windows of load (`warmup_s`, `baseline_s`, `ramp_s`,
//! `settle_s`, `before_s`, `after_s`) are wall seconds of load; the times that concern AWS's
//! behaviour (`scale_timeout_s`, `max_failover_s`, `fault_max_s`, `timeout_s`,
//! `error_budget_s`) are AWS (model) seconds, divided by the clock's factor on a faster clock,
//! and unless given they are derived from the prediction (`crate::model`).

use aws_model::{Clock, LaunchLatency};
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
    /// Scaling: the longest wait for the steady state after the load exceeds capacity, AWS
    /// seconds. Default: the predicted longest time to the steady state, times
    /// [`crate::model::MARGIN`].
    pub scale_timeout_s: Option<f64>,
    /// How long the SLOs must hold once the service settled (scaling) or errors stopped
    /// (failover) before the scenario moves on. Default 15.
    pub settle_s: f64,
    /// Failover: how the zone fails. Default network ACL isolation.
    pub fault: Fault,
    /// Failover: the zone to fail. Default: the one that served the most traffic.
    pub zone: Option<String>,
    /// Failover: steady load before the fault. Default 10.
    pub before_s: f64,
    /// Failover: errors must stop within this many AWS seconds of the fault (an objective:
    /// the prediction says beforehand whether the stack's settings can meet it). Default 60.
    pub max_failover_s: f64,
    /// Failover: the fault is undone at the latest this long (AWS seconds) after it began.
    /// Default: the longer of `max_failover_s` and the predicted longest failover, times
    /// [`crate::model::MARGIN`], and at least that plus the settle window.
    pub fault_max_s: Option<f64>,
    /// Failover: failed requests allowed, as AWS seconds of the whole rate (`rps` x this, on a
    /// faster clock divided by its factor). Default 20.
    pub error_budget_s: f64,
    /// Failover: load after the zone is restored, to measure recovery. Default 30.
    pub after_s: f64,
    /// Connection cap of the load engine. Default: enough for every request of one request
    /// timeout at `rps` to be in flight at once (a failed zone holds requests until then), 256
    /// at least, 8,000 at most.
    pub connections: Option<usize>,
    /// Request timeout, AWS seconds. Default: the load balancer's connect timeout (10 s) plus
    /// 5 s, so its 504 is what is counted.
    pub timeout_s: Option<f64>,
    /// The clock the stack runs on: AWS's, or the sandbox's faster one. Default AWS's.
    pub clock: Clock,
    /// What the prediction assumes of a Fargate task's launch. Default AWS's typical 30-60 s.
    pub launch: LaunchLatency,
    /// Failover: start an ARC zonal shift away from the failed zone as soon as the failure is
    /// seen (an operator's or zonal autoshift's move; the load balancer needs zonal shift
    /// enabled), and cancel it when the zone is restored. Default off: the stack's own reaction.
    pub zonal_shift: bool,
    /// Stop conditions, as AWS FIS has them: CloudWatch alarms whose ALARM state stops the run
    /// (the fault undone, the run an error naming the alarm); one already in ALARM keeps the run
    /// from starting. Default (`None`): the stack's alarms except the per-zone unhealthy-hosts
    /// ones, which a failed zone sets off by design. `Some(vec![])`: none.
    pub stop_alarms: Option<Vec<String>>,
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
            scale_timeout_s: None,
            settle_s: 15.0,
            fault: Fault::NetworkAcl,
            zone: None,
            before_s: 10.0,
            max_failover_s: 60.0,
            fault_max_s: None,
            error_budget_s: 20.0,
            after_s: 30.0,
            connections: None,
            timeout_s: None,
            clock: Clock::AWS,
            launch: LaunchLatency::default(),
            zonal_shift: false,
            stop_alarms: None,
        }
    }
}

/// How much longer than the load balancer's connect timeout the proof's client waits for an
/// answer (AWS seconds), so the load balancer's 504 is what is counted.
pub(crate) const CLIENT_TIMEOUT_MARGIN_S: f64 = 5.0;

/// The proof's client gives up a connection attempt after this long (AWS seconds), then tries
/// the load balancer's next address, as curl and Go's dialer do.
pub(crate) const CLIENT_CONNECT_TIMEOUT_S: f64 = 2.0;

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
            ("baseline-s", Some(self.baseline_s), 1.0),
            ("warmup-s", Some(self.warmup_s), 0.0),
            ("ramp-s", Some(self.ramp_s), 0.0),
            ("scale-timeout-s", self.scale_timeout_s, 5.0),
            ("settle-s", Some(self.settle_s), 1.0),
            ("before-s", Some(self.before_s), 1.0),
            ("max-failover-s", Some(self.max_failover_s), 1.0),
            ("fault-max-s", self.fault_max_s, 1.0),
            ("error-budget-s", Some(self.error_budget_s), 0.0),
            ("after-s", Some(self.after_s), 1.0),
            ("timeout-s", self.timeout_s, 0.1),
        ] {
            let Some(v) = v else { continue };
            check_range(
                &mut p,
                field,
                v,
                min,
                3600.0,
                &format!("seconds, {min} to 3600"),
            );
        }
        let max = self.max_failover_s;
        if let Some(fault) = self.fault_max_s
            && fault.is_finite()
            && max.is_finite()
            && fault < max
        {
            p.add(
                "fault-max-s",
                fault,
                format!(
                    "at least max-failover-s ({max}): the fault must last long enough to see errors stop"
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

    /// The request timeout, wall seconds: `timeout_s` (AWS seconds) or the load balancer's
    /// connect timeout plus 5 s, on the clock.
    pub(crate) fn request_timeout(&self) -> f64 {
        let model = self.timeout_s.unwrap_or_else(|| {
            aws_model::aws::elb::CONNECT_TIMEOUT.as_secs_f64() + CLIENT_TIMEOUT_MARGIN_S
        });
        self.clock.wall_s(model)
    }

    /// The connection cap to use: every request of one request timeout in flight at once.
    pub(crate) fn connections(&self) -> usize {
        self.connections.unwrap_or_else(|| {
            ((self.rps * self.request_timeout()).ceil() as usize).clamp(256, 8000)
        })
    }

    /// The load engine's connect timeout, wall seconds: a client's 2 s, on the clock.
    pub(crate) fn connect_timeout(&self) -> f64 {
        self.clock.wall_s(CLIENT_CONNECT_TIMEOUT_S)
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
            fault_max_s: Some(10.0),
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
    fn the_connection_cap_covers_a_request_timeout_of_load_on_the_clock() {
        let c = ProveConfig::default();
        assert_eq!(c.request_timeout(), 15.0);
        assert_eq!(c.connections(), 7500, "500 rps x 15 s");
        let fast = ProveConfig {
            clock: Clock::fast(),
            ..ProveConfig::default()
        };
        assert_eq!(fast.request_timeout(), 1.5);
        assert_eq!(fast.connections(), 750);
        let small = ProveConfig {
            rps: 10.0,
            ..ProveConfig::default()
        };
        assert_eq!(small.connections(), 256);
    }
}
