//! Whether the deployed service serves: what deploy waits for after the apply. ECS's own
//! `services-stable` waiter counts running tasks only; this adds the load balancer's view
//! (healthy targets, per zone) and reads why tasks stopped, so a deploy that cannot become
//! steady says why. Reads only.
//!
//! [`ServiceHealth::judge`] is pure: steady when the service runs its desired count, as many
//! targets are healthy, and every zone that should hold a task has a healthy one; failed
//! early when ECS failed the deployment or when as many tasks of the current revision
//! stopped as ECS's circuit breaker tolerates.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::time::SystemTime;

use aws_model::aws::ecs::circuit_breaker_threshold;
use aws_model::predict::{ServiceModel, service_start};
use aws_model::{HealthTiming, LaunchLatency, Span};
use aws_sdk_ecs::types::DesiredStatus;
use infra::{CallError, Context, aws};

use crate::StackOutputs;

/// A task that stopped, and ECS's reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoppedTask {
    /// The task's id (the last part of its ARN).
    pub id: String,
    /// `stoppedReason`, or the container's reason when ECS gave none for the task.
    pub reason: String,
}

/// The service as ECS and the load balancer see it at one moment.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ServiceHealth {
    /// The desired count.
    pub desired: u32,
    /// RUNNING tasks of the current task definition, by zone.
    pub running_by_zone: BTreeMap<String, u32>,
    /// Healthy targets of the target group, by zone.
    pub healthy_by_zone: BTreeMap<String, u32>,
    /// Targets not healthy, with the load balancer's reason (`Target.FailedHealthChecks`, ...).
    pub not_healthy: Vec<(String, String)>,
    /// Tasks of the current task definition that stopped since the deploy began.
    pub stopped: Vec<StoppedTask>,
    /// The service's newest events, newest first (at most 3).
    pub events: Vec<String>,
    /// ECS failed the primary deployment (circuit breaker): its reason.
    pub rollout_failed: Option<String>,
}

/// What [`ServiceHealth::judge`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Steadiness {
    /// Serving as desired.
    Steady,
    /// Not yet.
    Waiting,
    /// It will not get there by waiting: why.
    Failed(String),
}

impl ServiceHealth {
    /// RUNNING tasks in all zones.
    pub fn running(&self) -> u32 {
        self.running_by_zone.values().sum()
    }

    /// Healthy targets in all zones.
    pub fn healthy(&self) -> u32 {
        self.healthy_by_zone.values().sum()
    }

    /// Steady, waiting, or failed, for a service spread over `zones`.
    pub fn judge(&self, zones: &[String]) -> Steadiness {
        if let Some(reason) = &self.rollout_failed {
            return Steadiness::Failed(format!("ECS failed the deployment: {reason}"));
        }
        let threshold = circuit_breaker_threshold(self.desired);
        let stopped = u32::try_from(self.stopped.len()).unwrap_or(u32::MAX);
        if stopped >= threshold && self.healthy() < self.desired {
            return Steadiness::Failed(format!(
                "{stopped} tasks stopped before serving (ECS's circuit breaker fails a deployment of {} at {threshold}): {}",
                self.desired,
                self.why()
            ));
        }
        let needed = usize::try_from(self.desired)
            .unwrap_or(usize::MAX)
            .min(zones.len());
        let zones_serving = zones
            .iter()
            .filter(|z| self.healthy_by_zone.get(*z).is_some_and(|n| *n > 0))
            .count();
        if self.running() >= self.desired
            && self.healthy() >= self.desired
            && zones_serving >= needed
        {
            Steadiness::Steady
        } else {
            Steadiness::Waiting
        }
    }

    /// One line: `2/2 tasks running, 1/2 targets healthy (eu-west-1a 1, eu-west-1b 0)`.
    pub fn summary(&self, zones: &[String]) -> String {
        let per_zone: Vec<String> = zones
            .iter()
            .map(|z| format!("{z} {}", self.healthy_by_zone.get(z).copied().unwrap_or(0)))
            .collect();
        format!(
            "{}/{} tasks running, {}/{} targets healthy ({})",
            self.running(),
            self.desired,
            self.healthy(),
            self.desired,
            per_zone.join(", ")
        )
    }

    /// Why it is not steady, from what AWS said: the stopped tasks' reasons (each once, with
    /// a count), the targets' reasons, the newest service events.
    pub fn why(&self) -> String {
        let mut parts = Vec::new();
        let mut reasons: Vec<(&str, usize)> = Vec::new();
        for t in &self.stopped {
            match reasons.iter_mut().find(|(r, _)| *r == t.reason) {
                Some((_, n)) => *n += 1,
                None => reasons.push((&t.reason, 1)),
            }
        }
        for (reason, n) in reasons {
            parts.push(format!("stopped task{}: {reason}", plural(n, " x")));
        }
        let mut targets: Vec<(&str, usize)> = Vec::new();
        for (_, reason) in &self.not_healthy {
            match targets.iter_mut().find(|(r, _)| *r == reason) {
                Some((_, n)) => *n += 1,
                None => targets.push((reason, 1)),
            }
        }
        for (reason, n) in targets {
            parts.push(format!("target{}: {reason}", plural(n, " x")));
        }
        for e in &self.events {
            parts.push(format!("ECS event: {e}"));
        }
        if parts.is_empty() {
            "AWS gave no reason (no stopped task, no unhealthy target, no service event)".to_owned()
        } else {
            parts.join("; ")
        }
    }
}

/// `" xN"` after a word when there are several.
fn plural(n: usize, sep: &str) -> String {
    if n > 1 {
        format!("{sep}{n}")
    } else {
        String::new()
    }
}

impl fmt::Display for Steadiness {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Steadiness::Steady => f.write_str("steady"),
            Steadiness::Waiting => f.write_str("not steady yet"),
            Steadiness::Failed(why) => f.write_str(why),
        }
    }
}

/// How long a new service takes to serve, in AWS seconds: the scheduler's delay, a Fargate
/// launch of `launch`, and the first passing check of `health` (`aws_model::predict`).
pub fn expected_start(health: HealthTiming, launch: LaunchLatency) -> Span {
    service_start(&ServiceModel {
        health,
        launch,
        policies: Vec::new(),
        min: 1,
        max: 1,
    })
}

/// Reads the service's health: the service (desired count, deployments, events), its RUNNING
/// and STOPPED tasks of the current task definition (stopped after `since`), and the target
/// group's health. About five calls.
///
/// A target's zone is the one the load balancer names, else that of the task with its
/// address, else the zone of the first of `address_zones` (address prefix, zone) its address
/// starts with: the sandbox registers its tasks' loopback addresses (`127.0.{zone+1}.h`),
/// which are not the addresses moto gives the tasks.
pub async fn read(
    cx: &Context,
    outputs: &StackOutputs,
    since: SystemTime,
    address_zones: &[(String, String)],
) -> Result<ServiceHealth, CallError> {
    let ecs: aws_sdk_ecs::Client = infra::client!(cx, aws_sdk_ecs);
    let elb: aws_sdk_elasticloadbalancingv2::Client =
        infra::client!(cx, aws_sdk_elasticloadbalancingv2);
    let c = &outputs.compute;
    let what = format!(
        "ECS service {} in cluster {}",
        c.service_name, c.cluster_name
    );
    let mut health = ServiceHealth::default();
    let current = read_service(&ecs, outputs, since, &what, &mut health).await?;
    let zone_of_ip = read_tasks(&ecs, outputs, since, &current, &what, &mut health).await?;
    read_targets(&elb, outputs, &zone_of_ip, address_zones, &mut health).await?;
    Ok(health)
}

/// The service's desired count, failed rollout and recent events into `health`; returns the
/// task definition it runs.
async fn read_service(
    ecs: &aws_sdk_ecs::Client,
    outputs: &StackOutputs,
    since: SystemTime,
    what: &str,
    health: &mut ServiceHealth,
) -> Result<String, CallError> {
    let c = &outputs.compute;
    let out = ecs
        .describe_services()
        .cluster(&c.cluster_name)
        .services(&c.service_name)
        .send()
        .await
        .map_err(aws("DescribeServices", what))?;
    let mut current = c.task_definition_arn.clone();
    if let Some(svc) = out.services().first() {
        health.desired = u32::try_from(svc.desired_count()).unwrap_or(0);
        if let Some(td) = svc.task_definition() {
            current = td.to_owned();
        }
        if let Some(primary) = svc
            .deployments()
            .iter()
            .find(|d| d.status() == Some("PRIMARY"))
            && primary.rollout_state().map(|s| s.as_str()) == Some("FAILED")
        {
            health.rollout_failed = Some(
                primary
                    .rollout_state_reason()
                    .unwrap_or("no reason given")
                    .to_owned(),
            );
        }
        health.events = svc
            .events()
            .iter()
            .filter(|e| {
                e.created_at()
                    .and_then(|t| SystemTime::try_from(*t).ok())
                    .is_none_or(|t| t >= since)
            })
            .filter_map(|e| e.message().map(str::to_owned))
            .take(3)
            .collect();
    }
    Ok(current)
}

/// The service's tasks of the `current` task definition: running ones per zone, and those
/// stopped since `since` with their reasons. Returns the zone of each running task's address.
async fn read_tasks(
    ecs: &aws_sdk_ecs::Client,
    outputs: &StackOutputs,
    since: SystemTime,
    current: &str,
    what: &str,
    health: &mut ServiceHealth,
) -> Result<HashMap<String, String>, CallError> {
    let c = &outputs.compute;
    let zone_of_subnet: HashMap<&str, &str> = outputs
        .network
        .private_subnet_ids
        .iter()
        .map(String::as_str)
        .zip(outputs.network.zones.iter().map(String::as_str))
        .collect();
    let mut zone_of_ip: HashMap<String, String> = HashMap::new();
    for status in [DesiredStatus::Running, DesiredStatus::Stopped] {
        let arns = ecs
            .list_tasks()
            .cluster(&c.cluster_name)
            .service_name(&c.service_name)
            .desired_status(status.clone())
            .send()
            .await
            .map_err(aws("ListTasks", what))?
            .task_arns()
            .to_vec();
        for chunk in arns.chunks(100) {
            let out = ecs
                .describe_tasks()
                .cluster(&c.cluster_name)
                .set_tasks(Some(chunk.to_vec()))
                .send()
                .await
                .map_err(aws("DescribeTasks", what))?;
            for task in out.tasks() {
                if task.task_definition_arn() != Some(current) {
                    continue;
                }
                let details = || task.attachments().iter().flat_map(|a| a.details());
                let detail = |name: &str| {
                    details()
                        .find(|d| d.name() == Some(name))
                        .and_then(|d| d.value())
                };
                let zone = task
                    .availability_zone()
                    .or_else(|| detail("subnetId").and_then(|s| zone_of_subnet.get(s).copied()))
                    .unwrap_or("(unknown zone)")
                    .to_owned();
                match task.last_status() {
                    Some("RUNNING") => {
                        if let Some(ip) = detail("privateIPv4Address") {
                            zone_of_ip.insert(ip.to_owned(), zone.clone());
                        }
                        *health.running_by_zone.entry(zone).or_default() += 1;
                    }
                    Some("STOPPED") => {
                        let stopped_at = task
                            .stopped_at()
                            .or(task.created_at())
                            .and_then(|t| SystemTime::try_from(*t).ok());
                        if stopped_at.is_some_and(|t| t < since) {
                            continue;
                        }
                        let reason = task
                            .stopped_reason()
                            .map(str::to_owned)
                            .or_else(|| {
                                task.containers()
                                    .iter()
                                    .find_map(|c| c.reason().map(str::to_owned))
                            })
                            .unwrap_or_else(|| "no reason given".to_owned());
                        let arn = task.task_arn().unwrap_or_default();
                        health.stopped.push(StoppedTask {
                            id: arn.rsplit('/').next().unwrap_or(arn).to_owned(),
                            reason,
                        });
                    }
                    _ => {}
                }
            }
        }
    }
    Ok(zone_of_ip)
}

/// The target group's healthy targets per zone, and the others with their reasons.
async fn read_targets(
    elb: &aws_sdk_elasticloadbalancingv2::Client,
    outputs: &StackOutputs,
    zone_of_ip: &HashMap<String, String>,
    address_zones: &[(String, String)],
    health: &mut ServiceHealth,
) -> Result<(), CallError> {
    let tg = &outputs.load_balancer.target_group_arn;
    let out = elb
        .describe_target_health()
        .target_group_arn(tg)
        .send()
        .await
        .map_err(aws("DescribeTargetHealth", tg))?;
    for d in out.target_health_descriptions() {
        let Some(target) = d.target() else { continue };
        let id = target.id().unwrap_or_default();
        let zone = target
            .availability_zone()
            .filter(|z| *z != "all")
            .map(str::to_owned)
            .or_else(|| zone_of_ip.get(id).cloned())
            .or_else(|| {
                address_zones
                    .iter()
                    .find(|(prefix, _)| id.starts_with(prefix.as_str()))
                    .map(|(_, zone)| zone.clone())
            })
            .unwrap_or_else(|| "(unknown zone)".to_owned());
        let Some(state) = d.target_health() else {
            continue;
        };
        match state.state().map(|s| s.as_str()) {
            Some("healthy") => *health.healthy_by_zone.entry(zone).or_default() += 1,
            // Draining targets belong to tasks on their way out.
            Some("draining") => {}
            other => health.not_healthy.push((
                id.to_owned(),
                format!(
                    "{} ({})",
                    other.unwrap_or("unknown"),
                    state
                        .description()
                        .or(state.reason().map(|r| r.as_str()))
                        .unwrap_or("no reason given")
                ),
            )),
        }
    }
    Ok(())
}

/// Reads the target group's health check timing (AWS's defaults for what it leaves out);
/// `None` when the target group does not exist. The proof reads it here too.
pub async fn health_timing(
    elb: &aws_sdk_elasticloadbalancingv2::Client,
    target_group_arn: &str,
) -> Result<Option<HealthTiming>, CallError> {
    let out = elb
        .describe_target_groups()
        .target_group_arns(target_group_arn)
        .send()
        .await
        .map_err(aws("DescribeTargetGroups", target_group_arn))?;
    let Some(tg) = out.target_groups().first() else {
        return Ok(None);
    };
    let d = HealthTiming::default();
    let secs = |v: Option<i32>, default: std::time::Duration| {
        v.and_then(|v| u64::try_from(v).ok())
            .map_or(default, std::time::Duration::from_secs)
    };
    let count =
        |v: Option<i32>, default: u32| v.and_then(|v| u32::try_from(v).ok()).unwrap_or(default);
    Ok(Some(HealthTiming {
        interval: secs(tg.health_check_interval_seconds(), d.interval),
        timeout: secs(tg.health_check_timeout_seconds(), d.timeout),
        healthy_threshold: count(tg.healthy_threshold_count(), d.healthy_threshold),
        unhealthy_threshold: count(tg.unhealthy_threshold_count(), d.unhealthy_threshold),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn zones() -> Vec<String> {
        vec!["eu-west-1a".to_owned(), "eu-west-1b".to_owned()]
    }

    fn health(desired: u32, running: &[u32], healthy: &[u32]) -> ServiceHealth {
        let by_zone = |counts: &[u32]| {
            zones()
                .into_iter()
                .zip(counts.iter().copied())
                .collect::<BTreeMap<_, _>>()
        };
        ServiceHealth {
            desired,
            running_by_zone: by_zone(running),
            healthy_by_zone: by_zone(healthy),
            ..ServiceHealth::default()
        }
    }

    #[test]
    fn steady_needs_the_tasks_the_targets_and_every_zone() {
        assert_eq!(
            health(2, &[1, 1], &[1, 1]).judge(&zones()),
            Steadiness::Steady
        );
        // Running but not yet healthy.
        assert_eq!(
            health(2, &[1, 1], &[1, 0]).judge(&zones()),
            Steadiness::Waiting
        );
        // Enough healthy targets, all in one zone: a zone's loss would take the service.
        assert_eq!(
            health(2, &[2, 0], &[2, 0]).judge(&zones()),
            Steadiness::Waiting
        );
        // One task needs one zone only.
        assert_eq!(
            health(1, &[0, 1], &[0, 1]).judge(&zones()),
            Steadiness::Steady
        );
        // Fewer running than desired.
        assert_eq!(
            health(3, &[1, 1], &[1, 1]).judge(&zones()),
            Steadiness::Waiting
        );
        assert_eq!(
            health(2, &[1, 1], &[0, 1]).summary(&zones()),
            "2/2 tasks running, 1/2 targets healthy (eu-west-1a 0, eu-west-1b 1)"
        );
    }

    #[test]
    fn it_fails_early_where_ecs_s_circuit_breaker_would_with_the_reasons_once() {
        let mut h = health(2, &[0, 0], &[0, 0]);
        let pull = "CannotPullContainerError: pull image manifest has been retried 5 time(s)";
        for id in ["a", "b"] {
            h.stopped.push(StoppedTask {
                id: id.to_owned(),
                reason: pull.to_owned(),
            });
        }
        // Two failures of a desired count of 2: ECS's threshold is 3.
        assert_eq!(h.judge(&zones()), Steadiness::Waiting);
        h.stopped.push(StoppedTask {
            id: "c".to_owned(),
            reason: "Essential container in task exited".to_owned(),
        });
        h.events
            .push("(service web) is unable to consistently start tasks successfully.".to_owned());
        let Steadiness::Failed(why) = h.judge(&zones()) else {
            panic!("{:?}", h.judge(&zones()));
        };
        assert_eq!(
            why,
            format!(
                "3 tasks stopped before serving (ECS's circuit breaker fails a deployment of 2 at 3): stopped task x2: {pull}; stopped task: Essential container in task exited; ECS event: (service web) is unable to consistently start tasks successfully."
            )
        );
        // ECS's own verdict wins.
        h.rollout_failed = Some("tasks failed to start".to_owned());
        assert_eq!(
            h.judge(&zones()),
            Steadiness::Failed("ECS failed the deployment: tasks failed to start".to_owned())
        );
    }

    #[test]
    fn the_threshold_follows_ecs_s_formula() {
        assert_eq!(circuit_breaker_threshold(1), 3);
        assert_eq!(circuit_breaker_threshold(10), 5);
        assert_eq!(circuit_breaker_threshold(11), 6);
        assert_eq!(circuit_breaker_threshold(1000), 200);
    }

    #[test]
    fn a_new_service_serves_within_the_scheduler_launch_and_first_check() {
        // 23 s scheduler, 30-60 s launch, first pass within one 30 s interval.
        let s = expected_start(HealthTiming::default(), LaunchLatency::default());
        assert_eq!((s.min, s.max), (53.0, 113.0));
    }
}
