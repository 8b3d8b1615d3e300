//! Predictions from a stack's settings: how long a new service takes to serve, when target
//! tracking first scales out under a planned load and when the service is steady again, and
//! how long a zone's failure shows. Scale-out is predicted by running the model itself
//! ([`crate::tracking`]) on the planned load for every phase of the metric periods, so the
//! prediction and the sandbox cannot drift apart; the rest is arithmetic on
//! [`HealthTiming`] and the constants of [`crate::aws`]. Everything is model seconds.

use serde::{Deserialize, Serialize};

use crate::aws::{ecs, elb};
use crate::tracking::{Metric, MetricStream, Observation, Policy, Tracker};
use crate::{HealthTiming, LaunchLatency, Span};

/// What the prediction needs to know of a service and its load balancer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceModel {
    /// The target group's health check.
    pub health: HealthTiming,
    /// Fargate launch latency.
    pub launch: LaunchLatency,
    /// The target-tracking policies.
    pub policies: Vec<Policy>,
    /// The scalable target's minimum.
    pub min: i32,
    /// Its maximum.
    pub max: i32,
}

/// A planned load: `from_rps` with `tasks` serving, then a linear ramp to `to_rps` over
/// `ramp_s`, held.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LoadPlan {
    /// Tasks serving when the ramp starts.
    pub tasks: i32,
    /// Rate before the ramp (requests per second).
    pub from_rps: f64,
    /// Rate held after it.
    pub to_rps: f64,
    /// Length of the ramp, model seconds.
    pub ramp_s: f64,
    /// How long the steady state must hold to count (the proof's settle window), model
    /// seconds.
    pub settle_s: f64,
}

/// The predicted course of a scale-out, from the moment the load passed what the tasks carry
/// at the target value.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ScaleOut {
    /// Seconds after the ramp starts that the load passes what the tasks carry.
    pub over_after_s: f64,
    /// Until the desired count first rises.
    pub first_scale_out: Span,
    /// Until enough tasks serve the load (or the maximum serves).
    pub steady: Span,
    /// Tasks at the end.
    pub tasks: i32,
}

/// Deadlines are the predicted longest time times this: room for what the model leaves out
/// (the control plane's own latency, a loaded machine), never so much that a stack twice as
/// slow as AWS allows passes. The proof's deadlines and deploy's wait for a steady service
/// both use it.
pub const MARGIN: f64 = 1.5;

/// From a service's desired count rising (or its creation) until its new tasks serve: the
/// scheduler's delay, the Fargate launch, and the first passing health check.
pub fn service_start(m: &ServiceModel) -> Span {
    Span::exactly(ecs::SCHEDULER_DELAY.as_secs_f64())
        .then(m.launch.span())
        .then(m.health.first_pass())
}

/// From the moment a policy's metric starts to breach its target (and stays there) until the
/// scale-out: three breaching datapoints, the first being the period the breach began in
/// (when its average already breaches) or the next one, plus CloudWatch's lag.
pub fn alarm_reaction(metric: Metric) -> Span {
    let (p, lag) = (metric.period(), metric.lag());
    let n = crate::aws::autoscaling::SCALE_OUT_DATAPOINTS as f64;
    Span {
        min: (n - 1.0) * p + lag,
        expected: n * p + lag,
        max: (n + 1.0) * p + lag,
    }
}

/// Requests per second one task carries at the requests-per-target target value, if the
/// service tracks it.
pub fn per_task_rps(m: &ServiceModel) -> Option<f64> {
    m.policies
        .iter()
        .find(|p| p.metric == Metric::RequestCountPerTarget)
        .map(|p| p.target / 60.0)
}

#[derive(Debug, Clone, Copy)]
enum Case {
    Least,
    Expected,
    Greatest,
}

/// A measured rate wanders a little around the rate sent: a datapoint is as likely just above
/// it as just below. Where the load is an exact multiple of what a task carries (500 rps at
/// 100 per task), `ceil` adds a task for a datapoint above: the expected case sees every
/// datapoint this much above (one scale-out, one task more), the greatest case the one that
/// triggers at the rate sent and every later one above (a second scale-out a period later),
/// the least case the rate sent.
const MEASURED_ABOVE: f64 = 1.01;

/// Simulates one case of the scale-out; `phase` is where the metric periods start relative to
/// the ramp. Returns (seconds from the ramp to the load passing capacity, to the first
/// scale-out, to the steady state, tasks at the end).
fn simulate(
    m: &ServiceModel,
    policies: &[Policy],
    load: &LoadPlan,
    per_task: f64,
    phase: f64,
    case: Case,
    above_from: Option<f64>,
) -> Option<(f64, f64, f64, i32)> {
    let start_up = match case {
        Case::Least => service_start(m).min,
        Case::Expected => service_start(m).expected,
        Case::Greatest => service_start(m).max,
    };
    let sent = |t: f64| -> f64 {
        if t < 0.0 {
            load.from_rps
        } else if t < load.ramp_s && load.ramp_s > 0.0 {
            load.from_rps + (load.to_rps - load.from_rps) * t / load.ramp_s
        } else {
            load.to_rps
        }
    };
    let capacity = f64::from(load.tasks) * per_task;
    // The history before the ramp: twenty periods at the starting rate.
    let longest = policies
        .iter()
        .map(|p| p.metric.period())
        .fold(60.0, f64::max);
    let t0 = -20.0 * longest;
    let horizon = load.ramp_s + 4000.0;
    let mut streams: Vec<MetricStream> = policies
        .iter()
        .map(|p| MetricStream::new(p.metric))
        .collect();
    let mut tracker = Tracker::default();
    let mut desired = load.tasks;
    let mut serving = f64::from(load.tasks);
    // (time a task starts serving)
    let mut arriving: Vec<f64> = Vec::new();
    let mut over: Option<f64> = None;
    let mut first: Option<f64> = None;
    let needed = ((load.to_rps / per_task).ceil() as i32).clamp(m.min, m.max);
    let mut steady_since: Option<f64> = None;
    let mut t = t0;
    while t < horizon {
        let next = t + 1.0;
        // The observation covers (next - 1, next]: above from the period after `from`.
        let above = above_from.is_some_and(|from| next > from);
        let r = sent(next) * if above { MEASURED_ABOVE } else { 1.0 };
        if over.is_none() && next >= 0.0 && r > capacity {
            over = Some(next);
        }
        arriving.retain(|at| {
            if *at <= next {
                serving += 1.0;
                false
            } else {
                true
            }
        });
        let o = Observation {
            at: next + phase,
            span: 1.0,
            requests_per_second: r,
            healthy_targets: serving,
            running_tasks: serving,
            cpu_percent: None,
            memory_percent: None,
        };
        for (s, p) in streams.iter_mut().zip(policies) {
            s.observe(&o);
            for d in s.publish(next + phase) {
                tracker.record(&p.name, d);
            }
        }
        if let Some(d) = tracker.decide(next + phase, desired, (m.min, m.max), policies, false)
            && d.scale_out
        {
            if next >= 0.0 {
                first.get_or_insert(next);
            }
            for _ in desired..d.desired {
                arriving.push(next + start_up);
            }
            desired = d.desired;
        }
        // Steady (as the proof sees it): the tasks the load needs serve; it must hold for the
        // settle window. A later scale-out beyond them does not start it over.
        let is_steady = first.is_some() && serving as i32 >= needed && desired >= needed;
        match (steady_since, is_steady) {
            (None, true) => steady_since = Some(next),
            (Some(_), false) => steady_since = None,
            _ => {}
        }
        if let (Some(o), Some(f), Some(since)) = (over, first, steady_since)
            && next - since >= load.settle_s
        {
            return Some((o, f - o, since - o, desired));
        }
        t = next;
    }
    None
}

/// Predicts the scale-out under `load`, following only the requests-per-target policy (CPU
/// cannot be told from a rate; where a CPU policy acts first, the service scales sooner but
/// never before its alarm allows). `None` when the service does not track requests per
/// target, or the load never passes what the tasks carry, or the model never gets there.
pub fn scale_out(m: &ServiceModel, load: &LoadPlan) -> Option<ScaleOut> {
    let policies: Vec<Policy> = m
        .policies
        .iter()
        .filter(|p| p.metric == Metric::RequestCountPerTarget)
        .cloned()
        .collect();
    let per_task = per_task_rps(m)?;
    if load.to_rps <= f64::from(load.tasks) * per_task {
        return None;
    }
    let period = policies.first()?.metric.period();
    let lag = policies.first()?.metric.lag();
    let phases = 30;
    let mut least = (f64::INFINITY, f64::INFINITY);
    let mut greatest = (0.0f64, 0.0f64);
    let mut sum = (0.0, 0.0);
    let mut over_after = 0.0;
    let mut tasks = load.tasks;
    for i in 0..phases {
        let phase = period * f64::from(i) / f64::from(phases);
        for case in [Case::Least, Case::Expected, Case::Greatest] {
            let above_from = match case {
                Case::Least => None,
                Case::Expected => Some(f64::NEG_INFINITY),
                // From the period after the one whose datapoint first triggered.
                Case::Greatest => {
                    let (o, first, _, _) =
                        simulate(m, &policies, load, per_task, phase, case, None)?;
                    Some(o + first - lag)
                }
            };
            let (o, first, steady, n) =
                simulate(m, &policies, load, per_task, phase, case, above_from)?;
            over_after = o;
            match case {
                Case::Least => least = (least.0.min(first), least.1.min(steady)),
                Case::Greatest => greatest = (greatest.0.max(first), greatest.1.max(steady)),
                Case::Expected => {
                    sum = (sum.0 + first, sum.1 + steady);
                    tasks = n;
                }
            }
        }
    }
    let n = f64::from(phases);
    Some(ScaleOut {
        over_after_s: over_after,
        first_scale_out: Span {
            min: least.0,
            expected: sum.0 / n,
            max: greatest.0,
        },
        steady: Span {
            min: least.1,
            expected: sum.1 / n,
            max: greatest.1,
        },
        tasks,
    })
}

/// How a zone fails and how the client and the operator react.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct FailurePlan {
    /// The load balancer's node in the zone is cut off too (its public subnet is isolated),
    /// not only the tasks.
    pub node_isolated: bool,
    /// A zonal shift away from the zone starts this long after the failure (`None`: none).
    pub zonal_shift_after_s: Option<f64>,
    /// The client's request timeout: a request on a connection to an isolated node fails
    /// after it.
    pub client_timeout_s: f64,
    /// The longest a client's idle keep-alive connection waits before it is used again (its
    /// pool turns over in this long): every connection to the isolated node fails once, at its
    /// next use.
    pub client_idle_turnover_s: f64,
}

/// The predicted course of a zone's failure, from its start (and, for `recovered`, from its
/// end).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Failover {
    /// Until the zone's targets are unhealthy.
    pub targets_unhealthy: Span,
    /// Until the load balancer stops sending to the zone's targets (unhealthy, or the zonal
    /// shift).
    pub targets_out: Span,
    /// Until the last failed request (the failover time).
    pub errors_stop: Span,
    /// Until the isolated node's address leaves the DNS answer (`None`: the node is not cut).
    pub node_leaves_dns: Option<Span>,
    /// After the zone returns, until its targets are healthy again.
    pub recovered: Span,
}

/// Predicts a zone's failure for a service with `health` checks.
pub fn failover(health: &HealthTiming, plan: &FailurePlan) -> Failover {
    let unhealthy = health.to_unhealthy();
    let shift = plan.zonal_shift_after_s.map(Span::exactly);
    let targets_out = shift.map_or(unhealthy, |s| s.earlier(unhealthy));
    // A request routed to a dead target until it is out of routing fails when the client
    // gives up or the load balancer answers 504: after the connect timeout on a new
    // connection to the target, after the idle timeout on a kept-alive one (the usual case
    // under load). Errors are seen when they happen, not when the request was sent.
    let client = plan.client_timeout_s;
    let connect = elb::CONNECT_TIMEOUT.as_secs_f64().min(client);
    let idle = elb::DEFAULT_IDLE_TIMEOUT.as_secs_f64().min(client);
    let target_errors = targets_out.then(Span {
        min: connect,
        expected: idle,
        max: idle,
    });
    let node_checks = elb::NODE_CHECK_INTERVAL.as_secs_f64();
    let failures = f64::from(elb::NODE_CHECK_FAILURES);
    let impaired = Span {
        min: (failures - 1.0) * node_checks,
        expected: (failures - 0.5) * node_checks,
        max: failures * node_checks,
    };
    let node_leaves_dns = plan
        .node_isolated
        .then(|| shift.map_or(impaired, |s| s.earlier(impaired)));
    let errors_stop = if plan.node_isolated {
        let node_errors = Span {
            min: plan.client_timeout_s,
            expected: plan.client_timeout_s + plan.client_idle_turnover_s / 2.0,
            max: plan.client_timeout_s + plan.client_idle_turnover_s,
        };
        target_errors.later(node_errors)
    } else {
        target_errors
    };
    Failover {
        targets_unhealthy: unhealthy,
        targets_out,
        errors_stop,
        node_leaves_dns,
        recovered: health.to_recovered(),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn model(high_res_cpu: bool) -> ServiceModel {
        let mut policies = vec![Policy {
            name: "requests".into(),
            metric: Metric::RequestCountPerTarget,
            target: 6000.0,
            scale_out_cooldown: 60.0,
            scale_in_cooldown: 300.0,
            disable_scale_in: false,
        }];
        if high_res_cpu {
            policies.push(Policy {
                name: "cpu".into(),
                metric: Metric::Cpu {
                    high_resolution: true,
                },
                target: 60.0,
                scale_out_cooldown: 60.0,
                scale_in_cooldown: 300.0,
                disable_scale_in: false,
            });
        }
        ServiceModel {
            health: HealthTiming {
                interval: Duration::from_secs(10),
                timeout: Duration::from_secs(5),
                healthy_threshold: 2,
                unhealthy_threshold: 2,
            },
            launch: LaunchLatency::default(),
            policies,
            min: 2,
            max: 8,
        }
    }

    #[test]
    fn twenty_second_metrics_react_within_about_a_minute_and_a_half() {
        let standard = alarm_reaction(Metric::Cpu {
            high_resolution: false,
        });
        let fast = alarm_reaction(Metric::Cpu {
            high_resolution: true,
        });
        assert_eq!((standard.min, standard.max), (273.0, 393.0));
        assert_eq!((fast.min, fast.expected, fast.max), (56.0, 76.0, 96.0));
    }

    #[test]
    fn a_new_service_serves_after_the_scheduler_the_launch_and_one_check() {
        let s = service_start(&model(false));
        assert_eq!((s.min, s.expected, s.max), (53.0, 73.0, 93.0));
    }

    #[test]
    fn one_minute_metrics_take_about_six_minutes_as_aws_measured() {
        // A step from well below to 2.5x what two tasks carry.
        let p = scale_out(
            &model(false),
            &LoadPlan {
                tasks: 2,
                from_rps: 50.0,
                to_rps: 500.0,
                ramp_s: 0.0,
                settle_s: 15.0,
            },
        )
        .unwrap();
        // AWS's benchmark: 363 s from the load increase to the trigger. The minute the load
        // rose in breaches already when the step falls in its first two thirds (2.5x the
        // target), so the model triggers one period sooner then: 322 s on average.
        assert!(
            (300.0..=363.0).contains(&p.first_scale_out.expected),
            "{:?}",
            p.first_scale_out
        );
        // Never sooner than three breaching datapoints (the first may be the minute the load
        // rose in) and the lag; never later than three full ones after that minute.
        assert!(p.first_scale_out.min >= 2.0 * 60.0 + 153.0, "{p:?}");
        assert!(p.first_scale_out.max <= 4.0 * 60.0 + 153.0 + 1.0, "{p:?}");
        // 500 rps at 100 rps per task: five tasks, one more when a datapoint comes out just
        // above (the expected case), serving a scheduler delay, a launch and one check after
        // the trigger.
        assert_eq!(p.tasks, 6);
        let after = p.steady.expected - p.first_scale_out.expected;
        assert!((after - (23.0 + 45.0 + 5.0)).abs() < 2.0, "{p:?}");
    }

    #[test]
    fn a_ramp_passes_capacity_part_way() {
        let p = scale_out(
            &model(false),
            &LoadPlan {
                tasks: 2,
                from_rps: 100.0,
                to_rps: 500.0,
                ramp_s: 20.0,
                settle_s: 15.0,
            },
        )
        .unwrap();
        // 200 rps (two tasks' worth) is a quarter of the way up the ramp.
        assert_eq!(p.over_after_s, 6.0);
        assert!(p.first_scale_out.expected > 300.0, "{p:?}");
        assert!(
            scale_out(
                &model(false),
                &LoadPlan {
                    tasks: 6,
                    from_rps: 100.0,
                    to_rps: 500.0,
                    ramp_s: 20.0,
                    settle_s: 15.0,
                }
            )
            .is_none()
        );
    }

    #[test]
    fn losing_a_zone_shows_for_about_half_a_minute_and_a_zonal_shift_cuts_the_target_side() {
        let health = model(false).health;
        let tasks_only = failover(
            &health,
            &FailurePlan {
                node_isolated: false,
                zonal_shift_after_s: None,
                client_timeout_s: 15.0,
                client_idle_turnover_s: 12.0,
            },
        );
        assert_eq!(tasks_only.targets_unhealthy.max, 25.0);
        // Unhealthy after 25 s at the latest; a request routed to it just before then waits
        // out the client's 15 s on a kept-alive connection.
        assert_eq!(tasks_only.errors_stop.max, 40.0);
        assert_eq!(tasks_only.errors_stop.min, 25.0);
        assert!(tasks_only.node_leaves_dns.is_none());
        let shifted = failover(
            &health,
            &FailurePlan {
                node_isolated: true,
                zonal_shift_after_s: Some(2.0),
                client_timeout_s: 15.0,
                client_idle_turnover_s: 12.0,
            },
        );
        assert_eq!(shifted.targets_out.max, 2.0);
        assert_eq!(shifted.node_leaves_dns.map(|s| s.max), Some(2.0));
        // The clients' connections to the node still fail once each.
        assert_eq!(shifted.errors_stop.max, 27.0);
        let left = failover(
            &health,
            &FailurePlan {
                node_isolated: true,
                zonal_shift_after_s: None,
                client_timeout_s: 15.0,
                client_idle_turnover_s: 12.0,
            },
        );
        assert_eq!(left.node_leaves_dns.map(|s| s.max), Some(90.0));
        assert_eq!(health.to_recovered().max, 20.0);
    }
}
