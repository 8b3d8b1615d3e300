//! Target tracking for an ECS service as Application Auto Scaling does it, over CloudWatch
//! datapoints: the one implementation the sandbox runs and the prediction simulates.
//!
//! - A [`MetricStream`] turns what was measured ([`Observation`]s: request rate, healthy
//!   targets, running tasks, CPU) into one [`Datapoint`] per period of the policy's metric
//!   (60 s, or 20 s for ECS's high-resolution metrics), aligned to the model epoch as
//!   CloudWatch aligns to the minute, and makes each visible only `lag` after its period
//!   ends ([`aws::cloudwatch`]).
//! - A [`Tracker`] keeps each policy's recent datapoints, evaluates its two alarms
//!   (AlarmHigh: [`aws::autoscaling::SCALE_OUT_DATAPOINTS`] in a row above the target;
//!   AlarmLow: [`aws::autoscaling::SCALE_IN_DATAPOINTS`] in a row below
//!   [`aws::autoscaling::SCALE_IN_THRESHOLD`] x target) and decides: scale out when any
//!   policy's AlarmHigh is in ALARM, to `ceil(capacity x value / target)` where capacity is what
//!   the datapoint was measured over (so capacity already added counts toward the next
//!   calculation, as the docs say of the scale-out cooldown); scale in only when every
//!   scale-in-enabled policy's AlarmLow is in ALARM (none INSUFFICIENT_DATA), no deployment
//!   is in progress and the scale-in cooldown has passed, to the largest of their proposals.
//!   Scale-out is aggressive, scale-in conservative (App Auto Scaling UG). The exact
//!   formula is not published; this one is our inference from the documented behaviour (L).
//!
//! Times are model seconds (`f64`) since the model epoch.

use std::collections::{BTreeMap, VecDeque};
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::aws::{autoscaling, cloudwatch};

/// The predefined metrics an ECS service's target tracking can follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Metric {
    /// `ALBRequestCountPerTarget`: requests per healthy target per minute (60 s periods).
    RequestCountPerTarget,
    /// `ECSServiceAverageCPUUtilization` (60 s), or its `HighResolution` variant (20 s).
    Cpu {
        /// The 20-second variant.
        high_resolution: bool,
    },
    /// `ECSServiceAverageMemoryUtilization` (60 s), or its `HighResolution` variant (20 s).
    Memory {
        /// The 20-second variant.
        high_resolution: bool,
    },
}

impl Metric {
    /// The metric of a predefined metric type name.
    pub fn from_predefined(name: &str) -> Option<Metric> {
        Some(match name {
            "ALBRequestCountPerTarget" => Metric::RequestCountPerTarget,
            "ECSServiceAverageCPUUtilization" => Metric::Cpu {
                high_resolution: false,
            },
            "ECSServiceAverageCPUUtilizationHighResolution" => Metric::Cpu {
                high_resolution: true,
            },
            "ECSServiceAverageMemoryUtilization" => Metric::Memory {
                high_resolution: false,
            },
            "ECSServiceAverageMemoryUtilizationHighResolution" => Metric::Memory {
                high_resolution: true,
            },
            _ => return None,
        })
    }

    fn high_resolution(self) -> bool {
        matches!(
            self,
            Metric::Cpu {
                high_resolution: true
            } | Metric::Memory {
                high_resolution: true
            }
        )
    }

    /// Its period in model seconds.
    pub fn period(self) -> f64 {
        if self.high_resolution() {
            cloudwatch::HIGH_RESOLUTION_PERIOD.as_secs_f64()
        } else {
            cloudwatch::STANDARD_PERIOD.as_secs_f64()
        }
    }

    /// From the end of a period until the alarm acts on its datapoint, model seconds.
    pub fn lag(self) -> f64 {
        if self.high_resolution() {
            cloudwatch::HIGH_RESOLUTION_LAG.as_secs_f64()
        } else {
            cloudwatch::STANDARD_LAG.as_secs_f64()
        }
    }
}

impl fmt::Display for Metric {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Metric::RequestCountPerTarget => "ALBRequestCountPerTarget",
            Metric::Cpu {
                high_resolution: false,
            } => "ECSServiceAverageCPUUtilization",
            Metric::Cpu {
                high_resolution: true,
            } => "ECSServiceAverageCPUUtilizationHighResolution",
            Metric::Memory {
                high_resolution: false,
            } => "ECSServiceAverageMemoryUtilization",
            Metric::Memory {
                high_resolution: true,
            } => "ECSServiceAverageMemoryUtilizationHighResolution",
        })
    }
}

/// One target-tracking policy. Cooldowns in model seconds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Policy {
    /// Its name.
    pub name: String,
    /// What it follows.
    pub metric: Metric,
    /// The value to hold.
    pub target: f64,
    /// After a scale-out, only a larger one (see the module doc).
    pub scale_out_cooldown: f64,
    /// After a scale-in, no further scale-in this long.
    pub scale_in_cooldown: f64,
    /// Never scale in on this policy.
    pub disable_scale_in: bool,
}

impl Policy {
    /// The proposal of a datapoint: `ceil(capacity x value / target)`.
    pub fn proposal(&self, d: &Datapoint) -> i32 {
        if self.target <= 0.0 || !d.value.is_finite() {
            return 0;
        }
        let p = (d.capacity.max(1.0) * d.value / self.target).ceil();
        // Counts are small: clamp into i32 before the conversion.
        p.clamp(0.0, f64::from(i32::MAX)) as i32
    }
}

/// What was measured from `at - span` to `at` (model seconds).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Observation {
    /// End of the measured time.
    pub at: f64,
    /// Its length.
    pub span: f64,
    /// Requests per (wall) second the load balancer routed to the target group. A rate, so the
    /// same on every clock.
    pub requests_per_second: f64,
    /// Healthy targets in the target group.
    pub healthy_targets: f64,
    /// Running tasks of the service.
    pub running_tasks: f64,
    /// The tasks' average CPU use, percent of their CPU units (`None`: not measured).
    pub cpu_percent: Option<f64>,
    /// The tasks' average memory use, percent (`None`: not measured).
    pub memory_percent: Option<f64>,
}

/// One datapoint of a policy's metric.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Datapoint {
    /// Start of its period (model seconds).
    pub period_start: f64,
    /// The metric's value over the period.
    pub value: f64,
    /// What the value was measured over: healthy targets (request count) or running tasks
    /// (CPU, memory), averaged over the period.
    pub capacity: f64,
}

#[derive(Debug, Clone, Copy, Default)]
struct Acc {
    k: i64,
    weight: f64,
    requests: f64,
    healthy: f64,
    running: f64,
    value: f64,
    value_weight: f64,
}

/// One policy metric's datapoints: aggregated per period, published after the lag.
#[derive(Debug, Clone)]
pub struct MetricStream {
    metric: Metric,
    open: Option<Acc>,
    waiting: VecDeque<Datapoint>,
}

impl MetricStream {
    /// An empty stream for `metric`.
    pub fn new(metric: Metric) -> MetricStream {
        MetricStream {
            metric,
            open: None,
            waiting: VecDeque::new(),
        }
    }

    /// The metric it aggregates.
    pub fn metric(&self) -> Metric {
        self.metric
    }

    /// Adds what was measured; parts of it fall into the periods they overlap.
    pub fn observe(&mut self, o: &Observation) {
        let period = self.metric.period();
        if o.span <= 0.0 || !o.at.is_finite() {
            return;
        }
        let mut from = o.at - o.span;
        while from < o.at {
            // Period numbers of model times since the epoch fit an i64 easily.
            let k = (from / period).floor() as i64;
            let end = ((k + 1) as f64 * period).min(o.at);
            let w = end - from;
            self.add(k, w, o);
            from = end;
        }
    }

    fn add(&mut self, k: i64, w: f64, o: &Observation) {
        if self.open.is_some_and(|a| a.k != k) {
            self.close();
        }
        let acc = self.open.get_or_insert(Acc {
            k,
            ..Acc::default()
        });
        acc.weight += w;
        acc.requests += o.requests_per_second * w;
        acc.healthy += o.healthy_targets * w;
        acc.running += o.running_tasks * w;
        let v = match self.metric {
            Metric::RequestCountPerTarget => None,
            Metric::Cpu { .. } => o.cpu_percent,
            Metric::Memory { .. } => o.memory_percent,
        };
        if let Some(v) = v {
            acc.value += v * w;
            acc.value_weight += w;
        }
    }

    fn close(&mut self) {
        let Some(a) = self.open.take() else { return };
        if a.weight <= 0.0 {
            return;
        }
        let period = self.metric.period();
        let healthy = a.healthy / a.weight;
        let running = a.running / a.weight;
        let point = match self.metric {
            // Requests per healthy target in the period, at the measured rate (the period's
            // sum on AWS's clock; the same per-minute value on a faster one).
            Metric::RequestCountPerTarget if healthy > 0.0 => Some(Datapoint {
                period_start: a.k as f64 * period,
                value: a.requests / a.weight * 60.0 / healthy,
                capacity: healthy,
            }),
            Metric::RequestCountPerTarget => None,
            Metric::Cpu { .. } | Metric::Memory { .. } if a.value_weight > 0.0 => Some(Datapoint {
                period_start: a.k as f64 * period,
                value: a.value / a.value_weight,
                capacity: running,
            }),
            Metric::Cpu { .. } | Metric::Memory { .. } => None,
        };
        if let Some(p) = point {
            self.waiting.push_back(p);
        }
    }

    /// The datapoints that became visible by `now` (their period ended `lag` ago), oldest
    /// first. A period still open at `now` closes once `now` is past its end.
    pub fn publish(&mut self, now: f64) -> Vec<Datapoint> {
        let period = self.metric.period();
        if self.open.is_some_and(|a| (a.k + 1) as f64 * period <= now) {
            self.close();
        }
        let lag = self.metric.lag();
        let mut out = Vec::new();
        while self
            .waiting
            .front()
            .is_some_and(|d| d.period_start + period + lag <= now)
        {
            if let Some(d) = self.waiting.pop_front() {
                out.push(d);
            }
        }
        out
    }
}

/// A CloudWatch alarm's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum AlarmState {
    /// Fewer datapoints than it evaluates.
    InsufficientData,
    /// Not breaching.
    Ok,
    /// Every datapoint it evaluates breaches.
    Alarm,
}

/// A policy's recent datapoints (newest last).
#[derive(Debug, Clone, Default)]
struct History(VecDeque<Datapoint>);

impl History {
    fn push(&mut self, d: Datapoint) {
        self.0.push_back(d);
        while self.0.len() > autoscaling::SCALE_IN_DATAPOINTS.max(autoscaling::SCALE_OUT_DATAPOINTS)
        {
            self.0.pop_front();
        }
    }

    fn alarm(&self, n: usize, breaches: impl Fn(f64) -> bool) -> AlarmState {
        if self.0.len() < n {
            return AlarmState::InsufficientData;
        }
        if self.0.iter().rev().take(n).all(|d| breaches(d.value)) {
            AlarmState::Alarm
        } else {
            AlarmState::Ok
        }
    }

    fn high(&self, target: f64) -> AlarmState {
        self.alarm(autoscaling::SCALE_OUT_DATAPOINTS, |v| v > target)
    }

    fn low(&self, target: f64) -> AlarmState {
        self.alarm(autoscaling::SCALE_IN_DATAPOINTS, |v| {
            v < autoscaling::SCALE_IN_THRESHOLD * target
        })
    }
}

/// A decision to change the desired count.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// The new desired count.
    pub desired: i32,
    /// Whether it adds tasks.
    pub scale_out: bool,
    /// Why, in the words of an AWS scaling activity.
    pub cause: String,
}

/// The target-tracking state of one scalable target (an ECS service).
#[derive(Debug, Clone, Default)]
pub struct Tracker {
    history: BTreeMap<String, History>,
    last_out: Option<(f64, i32)>,
    last_in: Option<f64>,
}

impl Tracker {
    /// Adds a datapoint that became visible for `policy`.
    pub fn record(&mut self, policy: &str, d: Datapoint) {
        self.history.entry(policy.to_owned()).or_default().push(d);
    }

    /// The alarm states of `policy`: (AlarmHigh, AlarmLow).
    pub fn alarms(&self, policy: &Policy) -> (AlarmState, AlarmState) {
        match self.history.get(&policy.name) {
            Some(h) => (h.high(policy.target), h.low(policy.target)),
            None => (AlarmState::InsufficientData, AlarmState::InsufficientData),
        }
    }

    /// Decides at model time `now` for a service whose desired count is `current`, within
    /// `[min, max]`. `deployment` is whether an ECS deployment is in progress (scale-in waits
    /// for it to end).
    pub fn decide(
        &mut self,
        now: f64,
        current: i32,
        (min, max): (i32, i32),
        policies: &[Policy],
        deployment: bool,
    ) -> Option<Decision> {
        if current < min || current > max {
            let desired = current.clamp(min, max);
            return Some(Decision {
                desired,
                scale_out: desired > current,
                cause: format!("desired count {current} outside [{min}, {max}]: set to {desired}"),
            });
        }
        let latest = |p: &Policy| self.history.get(&p.name).and_then(|h| h.0.back().copied());
        let mut out: Option<(i32, String, f64)> = None;
        for p in policies {
            let (high, _) = self.alarms(p);
            let Some(d) = latest(p) else { continue };
            if high == AlarmState::Alarm {
                let proposal = p.proposal(&d);
                if out.as_ref().is_none_or(|(o, _, _)| proposal > *o) {
                    let why = format!(
                        "alarm TargetTracking-{}-AlarmHigh: {} {:.1} > {:.1} for {} datapoints",
                        p.name,
                        p.metric,
                        d.value,
                        p.target,
                        autoscaling::SCALE_OUT_DATAPOINTS
                    );
                    out = Some((proposal, why, p.scale_out_cooldown));
                }
            }
        }
        if let Some((proposal, why, cooldown)) = out {
            let desired = proposal.clamp(min, max);
            let in_cooldown = self
                .last_out
                .is_some_and(|(t, d)| now - t < cooldown && desired <= d);
            if desired > current && !in_cooldown {
                self.last_out = Some((now, desired));
                return Some(Decision {
                    desired,
                    scale_out: true,
                    cause: format!("scale out from {current} to {desired}: {why}"),
                });
            }
            return None;
        }
        if deployment {
            return None;
        }
        let enabled: Vec<&Policy> = policies.iter().filter(|p| !p.disable_scale_in).collect();
        if enabled.is_empty() {
            return None;
        }
        let mut proposal = i32::MIN;
        let mut cooldown: f64 = 0.0;
        let mut why = Vec::new();
        for p in &enabled {
            let (_, low) = self.alarms(p);
            let d = latest(p)?;
            if low != AlarmState::Alarm {
                return None;
            }
            proposal = proposal.max(p.proposal(&d));
            cooldown = cooldown.max(p.scale_in_cooldown);
            why.push(format!(
                "{} {:.1} < {:.1}",
                p.metric,
                d.value,
                p.target * autoscaling::SCALE_IN_THRESHOLD
            ));
        }
        let desired = proposal.clamp(min, max);
        let cooled = self.last_in.is_none_or(|t| now - t >= cooldown);
        if desired < current && cooled {
            self.last_in = Some(now);
            return Some(Decision {
                desired,
                scale_out: false,
                cause: format!(
                    "scale in from {current} to {desired}: AlarmLow of every policy for {} datapoints ({})",
                    autoscaling::SCALE_IN_DATAPOINTS,
                    why.join(", ")
                ),
            });
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn requests(target: f64) -> Policy {
        Policy {
            name: "req".to_owned(),
            metric: Metric::RequestCountPerTarget,
            target,
            scale_out_cooldown: 60.0,
            scale_in_cooldown: 300.0,
            disable_scale_in: false,
        }
    }

    fn point(value: f64, capacity: f64) -> Datapoint {
        Datapoint {
            period_start: 0.0,
            value,
            capacity,
        }
    }

    /// One observation per second from `from` to `to` at `rps` with `healthy` targets.
    fn feed(s: &mut MetricStream, from: u32, to: u32, rps: f64, healthy: f64) {
        for t in from..to {
            s.observe(&Observation {
                at: f64::from(t + 1),
                span: 1.0,
                requests_per_second: rps,
                healthy_targets: healthy,
                running_tasks: healthy,
                cpu_percent: Some(50.0),
                memory_percent: None,
            });
        }
    }

    #[test]
    fn datapoints_are_per_period_per_target_and_appear_after_the_lag() {
        let mut s = MetricStream::new(Metric::RequestCountPerTarget);
        feed(&mut s, 0, 120, 100.0, 2.0);
        assert!(s.publish(120.0).is_empty(), "not before the lag");
        let lag = cloudwatch::STANDARD_LAG.as_secs_f64();
        let first = s.publish(60.0 + lag);
        assert_eq!(first.len(), 1);
        // 100 rps for a minute over two targets.
        assert_eq!(first[0].value, 3000.0);
        assert_eq!(first[0].capacity, 2.0);
        assert_eq!(s.publish(120.0 + lag).len(), 1);
        // An observation across a boundary is split.
        let mut s = MetricStream::new(Metric::Cpu {
            high_resolution: true,
        });
        s.observe(&Observation {
            at: 30.0,
            span: 20.0,
            cpu_percent: Some(40.0),
            running_tasks: 3.0,
            ..Observation::default()
        });
        let lag = cloudwatch::HIGH_RESOLUTION_LAG.as_secs_f64();
        assert!(
            s.publish(20.0 + lag).len() == 1,
            "the first period, 10 s of it"
        );
        let p = s.publish(40.0 + lag);
        assert_eq!(p.len(), 1);
        assert_eq!(
            (p[0].period_start, p[0].value, p[0].capacity),
            (20.0, 40.0, 3.0)
        );
    }

    #[test]
    fn scale_out_needs_three_breaching_datapoints_and_goes_to_the_proportional_count() {
        let p = [requests(6000.0)];
        let mut t = Tracker::default();
        t.record("req", point(15000.0, 2.0));
        t.record("req", point(15000.0, 2.0));
        assert_eq!(t.decide(0.0, 2, (2, 8), &p, false), None, "two datapoints");
        t.record("req", point(15000.0, 2.0));
        let d = t.decide(1.0, 2, (2, 8), &p, false).unwrap();
        assert_eq!(d.desired, 5, "ceil(2 x 15000 / 6000)");
        assert!(d.scale_out && d.cause.contains("AlarmHigh"), "{}", d.cause);
        // The next datapoint was still measured over two targets: the same proposal, no
        // second scale-out (the capacity added counts).
        t.record("req", point(15000.0, 2.0));
        assert_eq!(t.decide(30.0, 5, (2, 8), &p, false), None);
        // A larger one goes through, even within the cooldown; max clamps it.
        t.record("req", point(30000.0, 2.0));
        assert_eq!(t.decide(40.0, 5, (2, 8), &p, false).unwrap().desired, 8);
        // A dip resets the run of breaching datapoints.
        let mut t = Tracker::default();
        for v in [15000.0, 100.0, 15000.0, 15000.0] {
            t.record("req", point(v, 2.0));
        }
        assert_eq!(t.decide(0.0, 2, (2, 8), &p, false), None);
    }

    #[test]
    fn scale_in_needs_fifteen_low_datapoints_every_policy_and_the_cooldown() {
        let mut cpu = requests(60.0);
        cpu.name = "cpu".to_owned();
        cpu.metric = Metric::Cpu {
            high_resolution: false,
        };
        let both = [requests(6000.0), cpu.clone()];
        let mut t = Tracker::default();
        for i in 0..15 {
            t.record("req", point(1000.0, 6.0));
            if i < 14 {
                t.record("cpu", point(10.0, 6.0));
            }
        }
        assert_eq!(t.decide(0.0, 6, (2, 8), &both, false), None, "cpu has 14");
        t.record("cpu", point(10.0, 6.0));
        assert_eq!(t.decide(0.0, 6, (2, 8), &both, true), None, "deployment");
        let d = t.decide(0.0, 6, (2, 8), &both, false).unwrap();
        assert!(!d.scale_out);
        // ceil(6 x 1000 / 6000) = 1, ceil(6 x 10 / 60) = 1: min 2.
        assert_eq!(d.desired, 2);
        t.record("req", point(1000.0, 6.0));
        t.record("cpu", point(10.0, 6.0));
        assert_eq!(t.decide(100.0, 4, (2, 8), &both, false), None, "cooldown");
        assert!(t.decide(301.0, 4, (2, 8), &both, false).is_some());
        // Just under the target is not low enough (0.9 x target).
        let mut t = Tracker::default();
        for _ in 0..15 {
            t.record("req", point(5500.0, 6.0));
        }
        assert_eq!(t.decide(0.0, 6, (2, 8), &[requests(6000.0)], false), None);
        // A policy that never scales in is left out of the vote.
        let mut quiet = cpu;
        quiet.disable_scale_in = true;
        let mut t = Tracker::default();
        for _ in 0..15 {
            t.record("req", point(1000.0, 6.0));
        }
        assert!(
            t.decide(0.0, 6, (2, 8), &[requests(6000.0), quiet], false)
                .is_some()
        );
    }

    #[test]
    fn outside_the_limits_is_clamped_at_once() {
        let mut t = Tracker::default();
        let d = t
            .decide(0.0, 9, (2, 8), &[requests(6000.0)], false)
            .unwrap();
        assert_eq!(d.desired, 8);
        assert_eq!(
            Metric::from_predefined("ECSServiceAverageCPUUtilizationHighResolution")
                .map(Metric::period),
            Some(20.0)
        );
        assert_eq!(Metric::from_predefined("Other"), None);
    }
}
