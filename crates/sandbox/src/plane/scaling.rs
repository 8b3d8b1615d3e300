//! Target tracking as Application Auto Scaling does it, for ECS services: each policy proposes
//! `ceil(current * metric / target)`; the service scales out when any policy asks for more
//! (after the scale-out cooldown), and in only when every policy with data agrees, its metric
//! has stayed below its target for the whole scale-in cooldown, and no scaling happened within
//! the cooldowns. The result is clamped to the scalable target's min and max.

use std::collections::HashMap;
use std::time::Duration;

use tokio::time::Instant;

/// The predefined metrics the sandbox measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Metric {
    /// `ALBRequestCountPerTarget`: requests per healthy target per minute.
    RequestCountPerTarget,
    /// `ECSServiceAverageCPUUtilization`: percent of the tasks' CPU units.
    Cpu,
    /// `ECSServiceAverageMemoryUtilization` (not measured: never acts).
    Memory,
}

impl Metric {
    /// The metric of a predefined metric type name.
    pub(crate) fn from_predefined(name: &str) -> Option<Metric> {
        match name {
            "ALBRequestCountPerTarget" => Some(Metric::RequestCountPerTarget),
            "ECSServiceAverageCPUUtilization" => Some(Metric::Cpu),
            "ECSServiceAverageMemoryUtilization" => Some(Metric::Memory),
            _ => None,
        }
    }
}

/// One target-tracking policy.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Policy {
    /// Its name.
    pub(crate) name: String,
    /// What it tracks.
    pub(crate) metric: Metric,
    /// The value to hold.
    pub(crate) target: f64,
    /// Wait after a scale-out before another.
    pub(crate) scale_out_cooldown: Duration,
    /// Wait (and time below target) before a scale-in.
    pub(crate) scale_in_cooldown: Duration,
    /// Never scale in.
    pub(crate) disable_scale_in: bool,
}

/// What the evaluator remembers per scalable target.
#[derive(Debug, Default)]
pub(crate) struct Memory {
    last_out: Option<Instant>,
    last_in: Option<Instant>,
    below_since: HashMap<String, Instant>,
}

/// A decision to change the desired count.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Activity {
    /// The new desired count.
    pub(crate) desired: i32,
    /// Why, in the words of an AWS scaling activity.
    pub(crate) cause: String,
}

fn proposal(current: i32, value: f64, target: f64) -> i32 {
    if target <= 0.0 || !value.is_finite() {
        return current;
    }
    let p = (f64::from(current.max(1)) * value / target).ceil();
    // Float to int: clamp into i32 first (values are small counts).
    p.clamp(0.0, f64::from(i32::MAX)) as i32
}

/// Evaluates `policies` (each with its measured value, `None` when there is no data yet).
pub(crate) fn evaluate(
    current: i32,
    min: i32,
    max: i32,
    policies: &[(Policy, Option<f64>)],
    memory: &mut Memory,
    now: Instant,
) -> Option<Activity> {
    if current < min || current > max {
        let desired = current.clamp(min, max);
        return Some(Activity {
            desired,
            cause: format!("desired count {current} outside [{min}, {max}]: set to {desired}"),
        });
    }
    let mut out: Option<(i32, String)> = None;
    let mut in_votes = Vec::new();
    let mut with_data = 0;
    for (policy, value) in policies {
        let Some(value) = *value else {
            memory.below_since.remove(&policy.name);
            continue;
        };
        with_data += 1;
        if value < policy.target {
            memory.below_since.entry(policy.name.clone()).or_insert(now);
        } else {
            memory.below_since.remove(&policy.name);
        }
        let p = proposal(current, value, policy.target);
        let why = format!(
            "policy {} ({:?}) measured {value:.1} against target {:.1}",
            policy.name, policy.metric, policy.target
        );
        if p > current {
            if out.as_ref().is_none_or(|(d, _)| p > *d) {
                out = Some((p, why));
            }
            continue;
        }
        let below_long = memory
            .below_since
            .get(&policy.name)
            .is_some_and(|since| now.duration_since(*since) >= policy.scale_in_cooldown);
        let cooled = memory
            .last_in
            .is_none_or(|t| now.duration_since(t) >= policy.scale_in_cooldown)
            && memory
                .last_out
                .is_none_or(|t| now.duration_since(t) >= policy.scale_in_cooldown);
        if p < current && !policy.disable_scale_in && below_long && cooled {
            in_votes.push((p, why));
        }
    }
    if let Some((p, why)) = out {
        let cooldown = policies
            .iter()
            .map(|(p, _)| p.scale_out_cooldown)
            .min()
            .unwrap_or_default();
        let desired = p.clamp(min, max);
        if desired > current
            && memory
                .last_out
                .is_none_or(|t| now.duration_since(t) >= cooldown)
        {
            memory.last_out = Some(now);
            return Some(Activity {
                desired,
                cause: format!("scale out from {current} to {desired}: {why}"),
            });
        }
        return None;
    }
    if with_data > 0 && in_votes.len() == with_data {
        let (p, why) = in_votes
            .into_iter()
            .max_by_key(|(p, _)| *p)
            .unwrap_or((current, String::new()));
        let desired = p.clamp(min, max);
        if desired < current {
            memory.last_in = Some(now);
            memory.below_since.clear();
            return Some(Activity {
                desired,
                cause: format!("scale in from {current} to {desired}: {why}"),
            });
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(target: f64) -> Policy {
        Policy {
            name: "req".to_owned(),
            metric: Metric::RequestCountPerTarget,
            target,
            scale_out_cooldown: Duration::from_secs(60),
            scale_in_cooldown: Duration::from_secs(300),
            disable_scale_in: false,
        }
    }

    #[test]
    fn scales_out_to_ceil_clamped_and_respects_cooldown() {
        let t0 = Instant::now();
        let mut m = Memory::default();
        let a = evaluate(2, 2, 8, &[(policy(100.0), Some(250.0))], &mut m, t0).unwrap();
        assert_eq!(a.desired, 5);
        assert!(
            evaluate(
                5,
                2,
                8,
                &[(policy(100.0), Some(300.0))],
                &mut m,
                t0 + Duration::from_secs(30)
            )
            .is_none(),
            "inside the scale-out cooldown"
        );
        let a = evaluate(
            5,
            2,
            8,
            &[(policy(100.0), Some(300.0))],
            &mut m,
            t0 + Duration::from_secs(61),
        )
        .unwrap();
        assert_eq!(a.desired, 8, "clamped to max");
    }

    #[test]
    fn scales_in_only_after_staying_below_for_the_cooldown() {
        let t0 = Instant::now();
        let mut m = Memory::default();
        let p = [(policy(100.0), Some(10.0))];
        assert!(evaluate(6, 2, 8, &p, &mut m, t0).is_none());
        assert!(evaluate(6, 2, 8, &p, &mut m, t0 + Duration::from_secs(200)).is_none());
        let a = evaluate(6, 2, 8, &p, &mut m, t0 + Duration::from_secs(301)).unwrap();
        assert_eq!(a.desired, 2, "ceil(6*0.1)=1 clamped to min 2");
    }

    #[test]
    fn one_policy_wanting_more_blocks_scale_in() {
        let t0 = Instant::now();
        let mut m = Memory::default();
        let mut cpu = policy(60.0);
        cpu.name = "cpu".to_owned();
        cpu.metric = Metric::Cpu;
        let p = [(policy(100.0), Some(10.0)), (cpu, Some(59.0))];
        for s in [0, 400] {
            assert!(evaluate(4, 2, 8, &p, &mut m, t0 + Duration::from_secs(s)).is_none());
        }
    }

    #[test]
    fn no_data_no_action() {
        let mut m = Memory::default();
        assert!(evaluate(3, 2, 8, &[(policy(100.0), None)], &mut m, Instant::now()).is_none());
    }
}
