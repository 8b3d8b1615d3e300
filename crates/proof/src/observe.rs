//! What the service looks like from the control plane while the load runs: ECS desired and
//! running counts and running tasks per zone, sampled about once a second in the background,
//! and the target-tracking facts (min, max, the requests-per-target value) from Application
//! Auto Scaling.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_applicationautoscaling::types::{MetricType, ScalableDimension, ServiceNamespace};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::error::{Error, aws};
use crate::report::ServicePoint;

/// The ECS service of a stack and how to place its tasks in zones.
#[derive(Debug, Clone)]
pub(crate) struct ServiceRef {
    pub(crate) ecs: aws_sdk_ecs::Client,
    pub(crate) cluster: String,
    pub(crate) service: String,
    /// Subnet id to zone, for tasks that do not report their zone.
    pub(crate) zone_of_subnet: HashMap<String, String>,
}

/// The service's counts and tasks at one moment.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Sample {
    pub(crate) desired: u32,
    /// Tasks RUNNING (counted from the tasks themselves).
    pub(crate) running: u32,
    pub(crate) running_by_zone: BTreeMap<String, u32>,
    /// Running task ARNs per zone.
    pub(crate) tasks_by_zone: BTreeMap<String, Vec<String>>,
}

fn count(n: i32) -> u32 {
    u32::try_from(n).unwrap_or(0)
}

impl ServiceRef {
    /// Reads the service and its running tasks (three calls).
    pub(crate) async fn sample(&self) -> Result<Sample, Error> {
        let what = format!("service {} in cluster {}", self.service, self.cluster);
        let out = self
            .ecs
            .describe_services()
            .cluster(&self.cluster)
            .services(&self.service)
            .send()
            .await
            .map_err(aws("DescribeServices", what.clone()))?;
        let Some(svc) = out.services().first() else {
            return Err(Error::Aws {
                operation: "DescribeServices",
                resource: what,
                message: "the service does not exist".to_owned(),
            });
        };
        let mut sample = Sample {
            desired: count(svc.desired_count()),
            ..Sample::default()
        };
        let arns = self
            .ecs
            .list_tasks()
            .cluster(&self.cluster)
            .service_name(&self.service)
            .desired_status(aws_sdk_ecs::types::DesiredStatus::Running)
            .send()
            .await
            .map_err(aws("ListTasks", what.clone()))?
            .task_arns()
            .to_vec();
        for chunk in arns.chunks(100) {
            let out = self
                .ecs
                .describe_tasks()
                .cluster(&self.cluster)
                .set_tasks(Some(chunk.to_vec()))
                .send()
                .await
                .map_err(aws("DescribeTasks", what.clone()))?;
            for task in out.tasks() {
                if task.last_status() != Some("RUNNING") {
                    continue;
                }
                let zone = task
                    .availability_zone()
                    .map(str::to_owned)
                    .or_else(|| {
                        task.attachments()
                            .iter()
                            .flat_map(|a| a.details())
                            .find(|d| d.name() == Some("subnetId"))
                            .and_then(|d| d.value())
                            .and_then(|s| self.zone_of_subnet.get(s).cloned())
                    })
                    .unwrap_or_else(|| "(unknown)".to_owned());
                *sample.running_by_zone.entry(zone.clone()).or_default() += 1;
                sample
                    .tasks_by_zone
                    .entry(zone)
                    .or_default()
                    .push(task.task_arn().unwrap_or_default().to_owned());
            }
        }
        // The tasks are the truth: ECS's runningCount lags them (and moto never updates it).
        sample.running = sample.running_by_zone.values().sum();
        Ok(sample)
    }
}

/// Samples a service about once a second until dropped.
#[derive(Debug)]
pub(crate) struct Sampler {
    points: Arc<Mutex<Vec<ServicePoint>>>,
    last: Arc<Mutex<Option<Sample>>>,
    errors: Arc<Mutex<Vec<String>>>,
    task: JoinHandle<()>,
}

impl Drop for Sampler {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Sampler {
    /// Starts sampling, `first` being the latest sample until the next; `t` of every point
    /// counts seconds from `origin`.
    pub(crate) fn start(service: ServiceRef, origin: Instant, first: Sample) -> Sampler {
        let points: Arc<Mutex<Vec<ServicePoint>>> = Arc::default();
        let last: Arc<Mutex<Option<Sample>>> = Arc::new(Mutex::new(Some(first)));
        let errors: Arc<Mutex<Vec<String>>> = Arc::default();
        let (p, l, e) = (Arc::clone(&points), Arc::clone(&last), Arc::clone(&errors));
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let at = origin.elapsed().as_secs_f64();
                match service.sample().await {
                    Ok(s) => {
                        if let Ok(mut points) = p.lock() {
                            points.push(ServicePoint {
                                t: at,
                                desired: s.desired,
                                running: s.running,
                                running_by_zone: s.running_by_zone.clone(),
                            });
                        }
                        if let Ok(mut last) = l.lock() {
                            *last = Some(s);
                        }
                    }
                    Err(err) => {
                        if let Ok(mut errors) = e.lock() {
                            // Keep the first few: a flapping API should not grow memory.
                            if errors.len() < 20 {
                                errors.push(format!("{at:.0}s: {err}"));
                            }
                        }
                    }
                }
            }
        });
        Sampler {
            points,
            last,
            errors,
            task,
        }
    }

    /// The latest sample, if any succeeded.
    pub(crate) fn last(&self) -> Option<Sample> {
        self.last.lock().ok().and_then(|l| l.clone())
    }

    /// Every point so far.
    pub(crate) fn points(&self) -> Vec<ServicePoint> {
        self.points.lock().map(|p| p.clone()).unwrap_or_default()
    }

    /// Sampling errors so far (at most 20).
    pub(crate) fn errors(&self) -> Vec<String> {
        self.errors.lock().map(|e| e.clone()).unwrap_or_default()
    }
}

/// The service's scaling limits, its requests-per-target value and its target-tracking
/// policies.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Scaling {
    pub(crate) min: u32,
    pub(crate) max: u32,
    /// `ALBRequestCountPerTarget` target value (requests per target per minute), if tracked.
    pub(crate) requests_per_target: Option<f64>,
    /// Every target-tracking policy with a predefined metric, as the model knows them.
    pub(crate) policies: Vec<aws_model::tracking::Policy>,
}

impl Scaling {
    /// Requests per second one task carries at the target value.
    pub(crate) fn per_task_rps(&self) -> Option<f64> {
        self.requests_per_target.map(|v| v / 60.0)
    }
}

/// Reads the service's scalable target and target-tracking policies; `None` when the service
/// does not scale.
pub(crate) async fn scaling(
    aas: &aws_sdk_applicationautoscaling::Client,
    cluster: &str,
    service: &str,
) -> Result<Option<Scaling>, Error> {
    let resource = format!("service/{cluster}/{service}");
    let targets = aas
        .describe_scalable_targets()
        .service_namespace(ServiceNamespace::Ecs)
        .resource_ids(&resource)
        .scalable_dimension(ScalableDimension::EcsServiceDesiredCount)
        .send()
        .await
        .map_err(aws("DescribeScalableTargets", resource.clone()))?;
    let Some(target) = targets.scalable_targets().first() else {
        return Ok(None);
    };
    let policies = aas
        .describe_scaling_policies()
        .service_namespace(ServiceNamespace::Ecs)
        .resource_id(&resource)
        .scalable_dimension(ScalableDimension::EcsServiceDesiredCount)
        .send()
        .await
        .map_err(aws("DescribeScalingPolicies", resource.clone()))?;
    let mut scaling = Scaling {
        min: count(target.min_capacity()),
        max: count(target.max_capacity()),
        requests_per_target: None,
        policies: Vec::new(),
    };
    let default_cooldown = aws_model::aws::autoscaling::DEFAULT_COOLDOWN.as_secs_f64();
    for p in policies.scaling_policies() {
        let Some(c) = p.target_tracking_scaling_policy_configuration() else {
            continue;
        };
        let Some(metric) = c.predefined_metric_specification() else {
            continue;
        };
        if metric.predefined_metric_type() == &MetricType::AlbRequestCountPerTarget {
            scaling.requests_per_target = Some(c.target_value());
        }
        let Some(m) =
            aws_model::tracking::Metric::from_predefined(metric.predefined_metric_type().as_str())
        else {
            continue;
        };
        let cooldown = |v: Option<i32>| v.map_or(default_cooldown, f64::from);
        scaling.policies.push(aws_model::tracking::Policy {
            name: p.policy_name().to_owned(),
            metric: m,
            target: c.target_value(),
            scale_out_cooldown: cooldown(c.scale_out_cooldown()),
            scale_in_cooldown: cooldown(c.scale_in_cooldown()),
            disable_scale_in: c.disable_scale_in().unwrap_or(false),
        });
    }
    Ok(Some(scaling))
}
