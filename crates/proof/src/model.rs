//! The proof's side of the model: what it reads of the deployed stack (health check, scaling
//! policies), what it predicts with `aws_model` before the run (a new service starting, the
//! scale-out, the zone's failure, and what tuning the stack would buy), and the deadlines it
//! derives from the prediction. Deadlines are never constants tuned to the sandbox: on AWS and
//! in the sandbox, on any clock, they come from the same model and the stack's settings.

use std::time::Duration;

use aws_model::predict::{self, Failover, FailurePlan, LoadPlan, ScaleOut, ServiceModel};
use aws_model::tracking::{Metric, Policy};
use aws_model::{Clock, HealthTiming, Span};
use serde::{Deserialize, Serialize};

use crate::config::{Fault, ProveConfig};
use crate::error::Error;
use crate::observe::Scaling;

pub use aws_model::predict::MARGIN;

/// What tuning one setting of the stack would buy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tuning {
    /// The setting, as written in `stack.toml`.
    pub setting: String,
    /// What it shortens.
    pub what: String,
    /// With the stack as it is (AWS seconds).
    pub now: Span,
    /// With the setting.
    pub tuned: Span,
}

/// The prediction of a proof run, AWS seconds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Prediction {
    /// The clock the stack runs on.
    pub clock: Clock,
    /// What the prediction knows of the service.
    pub service: ServiceModel,
    /// From a desired count rising until the new tasks serve.
    pub service_start: Span,
    /// The scaling scenario's load and the scale-out it causes (`None`: no requests-per-target
    /// policy, or the load does not pass what the tasks carry).
    pub scale_out: Option<ScaleOut>,
    /// The az-failover scenario's failure.
    pub failover: Failover,
    /// How it fails.
    pub failure: FailurePlan,
    /// What tuning the stack would buy.
    pub tuning: Vec<Tuning>,
    /// Derived: longest wait for the steady state once the load passed capacity.
    pub scale_timeout_s: f64,
    /// The objective: errors must stop within this after the fault.
    pub max_failover_s: f64,
    /// Derived: the fault is undone at the latest after this (the objective times the margin,
    /// at least the objective and the settle window).
    pub fault_max_s: f64,
}

/// Reads the target group's health check timing (`stack::steady::health_timing`).
pub(crate) async fn health_timing(
    elb: &aws_sdk_elasticloadbalancingv2::Client,
    tg_arn: &str,
) -> Result<HealthTiming, Error> {
    stack::steady::health_timing(elb, tg_arn)
        .await
        .map_err(|e| Error::Aws {
            operation: "DescribeTargetGroups",
            resource: tg_arn.to_owned(),
            message: e.to_string(),
        })?
        .ok_or_else(|| Error::Aws {
            operation: "DescribeTargetGroups",
            resource: tg_arn.to_owned(),
            message: "the target group does not exist".to_owned(),
        })
}

/// What the run plans, for the prediction.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Plan {
    /// Tasks running before the scaling scenario.
    pub(crate) tasks: u32,
    /// The rate the scaling scenario starts from.
    pub(crate) start_rps: f64,
}

/// Predicts the run of `config` against a service with `health` checks and `scaling`.
pub(crate) fn predict(
    config: &ProveConfig,
    health: HealthTiming,
    scaling: Option<&Scaling>,
    plan: Plan,
) -> Prediction {
    let clock = config.clock;
    let service = ServiceModel {
        health,
        launch: config.launch,
        policies: scaling.map(|s| s.policies.clone()).unwrap_or_default(),
        min: scaling.map_or(1, |s| i32::try_from(s.min).unwrap_or(1)),
        max: scaling.map_or(1, |s| i32::try_from(s.max).unwrap_or(1)),
    };
    let service_start = predict::service_start(&service);
    let scale_out = predict::scale_out(
        &service,
        &LoadPlan {
            tasks: i32::try_from(plan.tasks.max(1)).unwrap_or(1),
            from_rps: plan.start_rps,
            to_rps: config.rps,
            ramp_s: clock.model_s(config.ramp_s),
            settle_s: clock.model_s(config.settle_s),
        },
    );
    let failure = FailurePlan {
        node_isolated: config.fault == Fault::NetworkAcl,
        // The proof sees a failure within about a second of load.
        zonal_shift_after_s: config.zonal_shift.then(|| clock.model_s(1.0)),
        client_timeout_s: clock.model_s(config.request_timeout()),
        client_idle_turnover_s: clock.model_s(config.connections() as f64 / config.rps.max(1.0)),
    };
    let failover = predict::failover(&health, &failure);
    // Without a prediction of the steady state (no requests-per-target policy), the slowest
    // alarm of the service's policies and a start.
    let steady_max = scale_out.map_or_else(
        || {
            service
                .policies
                .iter()
                .map(|p| predict::alarm_reaction(p.metric).max)
                .fold(
                    predict::alarm_reaction(Metric::RequestCountPerTarget).max,
                    f64::max,
                )
                + service_start.max
        },
        |s| s.steady.max,
    );
    let max_failover_s = config.max_failover_s;
    Prediction {
        clock,
        tuning: tuning(&service, &failure),
        service,
        service_start,
        scale_out,
        failover,
        failure,
        scale_timeout_s: config
            .scale_timeout_s
            .unwrap_or((steady_max * MARGIN).ceil()),
        max_failover_s,
        // Long enough, too, for the errors to stop and the SLOs to hold for the settle window
        // (wall seconds) after them.
        fault_max_s: config.fault_max_s.unwrap_or({
            let longest = max_failover_s.max(failover.errors_stop.max);
            (longest * MARGIN)
                .max(longest + clock.model_s(config.settle_s))
                .ceil()
        }),
    }
}

/// What each fast-reaction setting would buy the stack: health checks every 5 s (the least
/// ALB allows) with the least thresholds, 20-second CPU metrics, no deregistration delay.
fn tuning(service: &ServiceModel, failure: &FailurePlan) -> Vec<Tuning> {
    let mut out = Vec::new();
    let fast_health = HealthTiming {
        interval: Duration::from_secs(5),
        timeout: Duration::from_secs(2),
        healthy_threshold: 2,
        unhealthy_threshold: 2,
    };
    if service.health != fast_health {
        out.push(Tuning {
            setting: "[load-balancer.health-check] interval-seconds = 5, timeout-seconds = 2, healthy-threshold = 2, unhealthy-threshold = 2".to_owned(),
            what: "a zone's failure (until errors stop)".to_owned(),
            now: predict::failover(&service.health, failure).errors_stop,
            tuned: predict::failover(&fast_health, failure).errors_stop,
        });
    }
    let cpu = |p: &Policy| matches!(p.metric, Metric::Cpu { .. });
    if let Some(p) = service.policies.iter().find(|p| cpu(p))
        && p.metric
            == (Metric::Cpu {
                high_resolution: false,
            })
    {
        out.push(Tuning {
            setting: "[service] high-resolution-metrics = true".to_owned(),
            what: "the CPU policy's scale-out, from a sustained breach".to_owned(),
            now: predict::alarm_reaction(p.metric),
            tuned: predict::alarm_reaction(Metric::Cpu {
                high_resolution: true,
            }),
        });
    }
    out
}

impl Prediction {
    /// The prediction for people, one line each, in AWS seconds (and wall seconds on a faster
    /// clock).
    pub fn lines(&self) -> Vec<String> {
        let c = self.clock;
        let wall = |s: f64| {
            if c.is_aws() {
                String::new()
            } else {
                format!(" [{:.1} s of wall time]", c.wall_s(s))
            }
        };
        let mut out = vec![format!(
            "prediction ({}; AWS seconds): health check every {} s, timeout {} s, {} to fail, {} to recover; Fargate launch {}; {} scaling policies",
            c,
            self.service.health.interval.as_secs(),
            self.service.health.timeout.as_secs(),
            self.service.health.unhealthy_threshold,
            self.service.health.healthy_threshold,
            self.service.launch,
            self.service.policies.len(),
        )];
        out.push(format!(
            "  a new task serves {} after the desired count rises (scheduler, launch, one health check){}",
            self.service_start,
            wall(self.service_start.expected)
        ));
        match &self.scale_out {
            Some(s) => {
                out.push(format!(
                    "  scaling: first scale-out {} after the load passes capacity (three datapoints and CloudWatch's lag){}",
                    s.first_scale_out,
                    wall(s.first_scale_out.expected)
                ));
                out.push(format!(
                    "  scaling: steady with {} tasks {} after it{}; waiting at most {:.0} s",
                    s.tasks,
                    s.steady,
                    wall(s.steady.expected),
                    self.scale_timeout_s
                ));
            }
            None => out.push(format!(
                "  scaling: not predicted (no requests-per-target policy, or the load stays within what the tasks carry); waiting at most {:.0} s",
                self.scale_timeout_s
            )),
        }
        let f = &self.failover;
        out.push(format!(
            "  az-failover: the zone's targets unhealthy {}, out of routing {}; errors stop {}{}; objective {:.0} s, fault undone by {:.0} s",
            f.targets_unhealthy,
            f.targets_out,
            f.errors_stop,
            wall(f.errors_stop.expected),
            self.max_failover_s,
            self.fault_max_s
        ));
        if f.errors_stop.min > self.max_failover_s {
            out.push(format!(
                "  az-failover: the stack's settings cannot meet the objective: errors stop {} after a zone fails, the objective is {:.0} s (see the tuning lines)",
                f.errors_stop, self.max_failover_s
            ));
        }
        if let Some(n) = f.node_leaves_dns {
            out.push(format!(
                "  az-failover: the zone's load balancer node drops connections at once and leaves DNS {} ({}; clients keep the answer up to its 60 s TTL)",
                n,
                if self.failure.zonal_shift_after_s.is_some() {
                    "zonal shift"
                } else {
                    "Route 53's health checks of the node"
                }
            ));
        }
        out.push(format!(
            "  recovery: the zone's targets healthy again {} after it returns",
            f.recovered
        ));
        for t in &self.tuning {
            out.push(format!(
                "  tuning: {} -> {}: {} instead of {}",
                t.setting, t.what, t.tuned, t.now
            ));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scaling() -> Scaling {
        let policy = |name: &str, metric, target| Policy {
            name: name.into(),
            metric,
            target,
            scale_out_cooldown: 60.0,
            scale_in_cooldown: 300.0,
            disable_scale_in: false,
        };
        Scaling {
            min: 2,
            max: 8,
            requests_per_target: Some(6000.0),
            policies: vec![
                policy("requests", Metric::RequestCountPerTarget, 6000.0),
                policy(
                    "cpu",
                    Metric::Cpu {
                        high_resolution: false,
                    },
                    60.0,
                ),
            ],
        }
    }

    fn stack_health() -> HealthTiming {
        HealthTiming {
            interval: Duration::from_secs(10),
            timeout: Duration::from_secs(5),
            healthy_threshold: 2,
            unhealthy_threshold: 2,
        }
    }

    #[test]
    fn the_default_run_is_predicted_and_its_deadlines_derived_from_it() {
        let p = predict(
            &ProveConfig::default(),
            stack_health(),
            Some(&scaling()),
            Plan {
                tasks: 2,
                start_rps: 100.0,
            },
        );
        let s = p.scale_out.unwrap();
        assert_eq!(
            s.tasks, 6,
            "500 rps is five tasks' worth: noise makes it six"
        );
        assert!(s.first_scale_out.min >= 273.0, "{s:?}");
        assert_eq!(p.scale_timeout_s, (s.steady.max * MARGIN).ceil());
        assert!(p.scale_timeout_s > 600.0, "AWS's clock: minutes, not 240 s");
        assert_eq!(p.max_failover_s, 60.0);
        assert!(p.failover.errors_stop.max < 60.0, "{:?}", p.failover);
        assert!(p.fault_max_s >= 90.0);
        assert!(p.failover.node_leaves_dns.is_some());
        assert_eq!(p.tuning.len(), 2);
        let text = p.lines().join("\n");
        assert!(
            text.contains("first scale-out") && text.contains("high-resolution-metrics"),
            "{text}"
        );
        // The fast clock: the same prediction in AWS seconds; the windows of load, in wall
        // seconds, stand for ten times as much model time.
        let fast = predict(
            &ProveConfig {
                clock: Clock::fast(),
                ..ProveConfig::default()
            },
            stack_health(),
            Some(&scaling()),
            Plan {
                tasks: 2,
                start_rps: 100.0,
            },
        );
        assert_eq!(fast.service_start, p.service_start);
        assert!(fast.lines()[1].contains("of wall time"));
        // A deadline given is kept.
        let given = predict(
            &ProveConfig {
                fault_max_s: Some(99.0),
                ..ProveConfig::default()
            },
            stack_health(),
            None,
            Plan {
                tasks: 2,
                start_rps: 100.0,
            },
        );
        assert_eq!(given.fault_max_s, 99.0);
        assert!(given.scale_out.is_none());
    }
}
