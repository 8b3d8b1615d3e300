//! What the configuration asks for, what exists (normalized so the two compare semantically),
//! and the ordered operations that take the one to the other. Everything here is pure.

use std::collections::{BTreeMap, BTreeSet};

use infra::{Action, Change, Context};
use serde_json::{Value, json};

use crate::config::{ComputeSpec, policy_document};
use crate::{ComputeInputs, Error};

pub(crate) const MODULE: &str = "compute";
/// The one container of the task.
pub(crate) const CONTAINER: &str = "app";
/// The log stream prefix of the container.
pub(crate) const STREAM_PREFIX: &str = "app";
/// The container health check command (the sample app image has `/sample-app`).
pub(crate) const HEALTH_COMMAND: [&str; 3] = ["CMD", "/sample-app", "health"];
/// The only service allowed to assume the roles.
pub(crate) const TASKS_PRINCIPAL: &str = "ecs-tasks.amazonaws.com";
/// Application Auto Scaling's dimension of an ECS service.
pub(crate) const DIMENSION: &str = "ecs:service:DesiredCount";
/// The predefined metric of the CPU policy.
pub(crate) const CPU_METRIC: &str = "ECSServiceAverageCPUUtilization";
/// The predefined metric of the requests policy.
pub(crate) const REQUESTS_METRIC: &str = "ALBRequestCountPerTarget";

/// Logical names: the `stackproof:name` tag of each resource.
pub(crate) const CLUSTER: &str = "cluster";
pub(crate) const SERVICE: &str = "service";
pub(crate) const TASK_DEFINITION: &str = "task-definition";
pub(crate) const LOG_GROUP: &str = "log-group";
pub(crate) const SCALING: &str = "scalable-target";

/// The two IAM roles.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum RoleKind {
    /// Used by ECS to pull the image and write logs.
    Execution,
    /// Assumed by the application.
    Task,
}

impl RoleKind {
    pub(crate) const ALL: [RoleKind; 2] = [RoleKind::Execution, RoleKind::Task];

    /// The logical name (tag) of the role.
    pub(crate) fn logical(self) -> &'static str {
        match self {
            RoleKind::Execution => "execution-role",
            RoleKind::Task => "task-role",
        }
    }
}

/// The AWS names of the stack's compute resources.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Names {
    pub(crate) stack: String,
    pub(crate) cluster: String,
    pub(crate) service: String,
    pub(crate) family: String,
    pub(crate) log_group: String,
    pub(crate) execution_role: String,
    pub(crate) task_role: String,
    pub(crate) inline_policy: String,
    pub(crate) cpu_policy: String,
    pub(crate) requests_policy: String,
}

impl Names {
    pub(crate) fn new(stack: &str) -> Names {
        Names {
            stack: stack.to_owned(),
            cluster: stack.to_owned(),
            service: stack.to_owned(),
            family: stack.to_owned(),
            log_group: format!("/ecs/{stack}"),
            execution_role: format!("{stack}-task-execution"),
            task_role: format!("{stack}-task"),
            inline_policy: format!("{stack}-task"),
            cpu_policy: format!("{stack}-cpu"),
            requests_policy: format!("{stack}-requests"),
        }
    }

    pub(crate) fn role(&self, kind: RoleKind) -> &str {
        match kind {
            RoleKind::Execution => &self.execution_role,
            RoleKind::Task => &self.task_role,
        }
    }

    /// The Application Auto Scaling resource id of the service.
    pub(crate) fn resource_id(&self) -> String {
        format!("service/{}/{}", self.cluster, self.service)
    }
}

/// The partition of a region (`aws`, `aws-cn`, `aws-us-gov`).
pub(crate) fn partition(region: &str) -> &'static str {
    if region.starts_with("cn-") {
        "aws-cn"
    } else if region.starts_with("us-gov-") {
        "aws-us-gov"
    } else {
        "aws"
    }
}

/// The trust policy of both roles: only ECS tasks may assume them.
pub(crate) fn trust_policy() -> Value {
    json!({
        "Version": "2012-10-17",
        "Statement": [{
            "Effect": "Allow",
            "Principal": { "Service": TASKS_PRINCIPAL },
            "Action": "sts:AssumeRole"
        }]
    })
}

/// A policy document in a form where equal policies compare equal: one-element lists become
/// their element, lists of strings are sorted, `Statement` is always a list.
pub(crate) fn normalize_policy(doc: &Value) -> Value {
    fn norm(v: &Value) -> Value {
        match v {
            Value::Array(items) if items.len() == 1 => norm(&items[0]),
            Value::Array(items) => {
                let mut out: Vec<Value> = items.iter().map(norm).collect();
                if out.iter().all(Value::is_string) {
                    out.sort_by(|a, b| a.as_str().cmp(&b.as_str()));
                }
                Value::Array(out)
            }
            Value::Object(map) => {
                Value::Object(map.iter().map(|(k, v)| (k.clone(), norm(v))).collect())
            }
            other => other.clone(),
        }
    }
    let mut doc = norm(doc);
    if let Some(st) = doc.get_mut("Statement")
        && !st.is_array()
    {
        *st = Value::Array(vec![st.take()]);
    }
    doc
}

/// One role as wanted.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct RoleWant {
    pub(crate) kind: RoleKind,
    pub(crate) name: String,
    /// Normalized trust policy.
    pub(crate) trust: Value,
    /// Attached managed policy ARNs.
    pub(crate) managed: BTreeSet<String>,
    /// Inline policies by name, normalized.
    pub(crate) inline: BTreeMap<String, Value>,
    pub(crate) tags: BTreeMap<String, String>,
}

/// One role as it exists.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct RoleHave {
    pub(crate) arn: String,
    /// Normalized trust policy.
    pub(crate) trust: Value,
    pub(crate) managed: BTreeSet<String>,
    /// Inline policies by name, normalized.
    pub(crate) inline: BTreeMap<String, Value>,
    pub(crate) tags: BTreeMap<String, String>,
}

/// The cluster as it exists (only an ACTIVE one counts).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ClusterHave {
    pub(crate) arn: String,
    pub(crate) status: String,
    pub(crate) insights: Option<String>,
    pub(crate) tags: BTreeMap<String, String>,
}

/// The log group as it exists.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct LogGroupHave {
    /// The ARN without the trailing `:*`.
    pub(crate) arn: String,
    pub(crate) retention: Option<i32>,
    pub(crate) tags: BTreeMap<String, String>,
}

/// A container health check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HealthShape {
    pub(crate) command: Vec<String>,
    pub(crate) interval: i32,
    pub(crate) timeout: i32,
    pub(crate) retries: i32,
    pub(crate) start_period: i32,
}

/// The settings of a container that we manage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ContainerShape {
    pub(crate) name: String,
    pub(crate) image: String,
    pub(crate) essential: bool,
    /// `(container port, protocol)`.
    pub(crate) ports: BTreeSet<(i32, String)>,
    pub(crate) environment: BTreeMap<String, String>,
    pub(crate) health: Option<HealthShape>,
    pub(crate) log_driver: Option<String>,
    pub(crate) log_options: BTreeMap<String, String>,
    pub(crate) read_only: bool,
}

/// The settings of a task definition that we manage, with roles by name (not ARN) so a plan
/// can compare before the roles exist.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TaskShape {
    pub(crate) cpu: String,
    pub(crate) memory: String,
    pub(crate) network_mode: String,
    pub(crate) compatibilities: BTreeSet<String>,
    pub(crate) os: String,
    pub(crate) arch: String,
    pub(crate) execution_role: String,
    pub(crate) task_role: String,
    pub(crate) containers: Vec<ContainerShape>,
}

/// The newest ACTIVE revision of the family.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct TaskDefHave {
    pub(crate) arn: String,
    pub(crate) shape: TaskShape,
    pub(crate) tags: BTreeMap<String, String>,
}

/// Deployment settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Deployment {
    pub(crate) circuit_breaker: bool,
    pub(crate) rollback: bool,
    pub(crate) min_healthy: i32,
    pub(crate) max_percent: i32,
}

/// Service settings that real ECS reports in DescribeServices but moto drops: compared only
/// when the answer carries a deployment configuration (AWS always sends one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FullSettings {
    pub(crate) deployment: Deployment,
    pub(crate) grace: Option<i32>,
    pub(crate) az_rebalancing: Option<String>,
    pub(crate) managed_tags: bool,
}

/// The settings of a service that we manage (desired count excluded: autoscaling owns it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ServiceShape {
    pub(crate) launch_type: Option<String>,
    pub(crate) subnets: BTreeSet<String>,
    pub(crate) security_groups: BTreeSet<String>,
    pub(crate) public_ip: Option<String>,
    /// `(target group ARN, container name, container port)`.
    pub(crate) load_balancers: BTreeSet<(String, String, i32)>,
    pub(crate) propagate_tags: Option<String>,
    pub(crate) full: Option<FullSettings>,
}

/// The service as it exists.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ServiceHave {
    pub(crate) arn: String,
    pub(crate) status: String,
    pub(crate) task_definition: String,
    pub(crate) desired_count: i32,
    pub(crate) shape: ServiceShape,
    pub(crate) tags: BTreeMap<String, String>,
}

/// A target-tracking policy.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct PolicyShape {
    pub(crate) metric: String,
    pub(crate) label: Option<String>,
    pub(crate) target: f64,
    pub(crate) scale_out_cooldown: i32,
    pub(crate) scale_in_cooldown: i32,
}

impl PolicyShape {
    fn same(&self, other: &PolicyShape) -> bool {
        self.metric == other.metric
            && self.label == other.label
            && (self.target - other.target).abs() < 1e-9
            && self.scale_out_cooldown == other.scale_out_cooldown
            && self.scale_in_cooldown == other.scale_in_cooldown
    }
}

/// Everything of the stack's compute that exists.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Observed {
    pub(crate) roles: BTreeMap<RoleKind, RoleHave>,
    pub(crate) cluster: Option<ClusterHave>,
    pub(crate) log_group: Option<LogGroupHave>,
    pub(crate) task_definition: Option<TaskDefHave>,
    pub(crate) service: Option<ServiceHave>,
    /// `(min, max)` of the scalable target.
    pub(crate) target: Option<(i32, i32)>,
    /// Scaling policies of the service by name.
    pub(crate) policies: BTreeMap<String, PolicyShape>,
    /// Every ACTIVE revision of the family (read for destroy only).
    pub(crate) task_definition_arns: Vec<String>,
}

/// The whole compute slice the configuration asks for.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Desired {
    pub(crate) names: Names,
    pub(crate) roles: Vec<RoleWant>,
    pub(crate) insights: &'static str,
    pub(crate) retention: i32,
    pub(crate) task: TaskShape,
    pub(crate) service: ServiceShape,
    pub(crate) desired_count: i32,
    pub(crate) grace: i32,
    pub(crate) min: i32,
    pub(crate) max: i32,
    pub(crate) policies: BTreeMap<String, PolicyShape>,
    pub(crate) tags: BTreeMap<&'static str, BTreeMap<String, String>>,
}

/// The deployment settings we want.
pub(crate) const DEPLOYMENT: Deployment = Deployment {
    circuit_breaker: true,
    rollback: true,
    min_healthy: 100,
    max_percent: 200,
};

/// Health check timing: every 30 s, 5 s timeout, 3 retries, 10 s start period.
pub(crate) const HEALTH_TIMING: (i32, i32, i32, i32) = (30, 5, 3, 10);

fn int(n: u32) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

impl Desired {
    pub(crate) fn new(cx: &Context, spec: &ComputeSpec, inputs: &ComputeInputs) -> Desired {
        let names = Names::new(cx.stack().as_str());
        let region = cx.region();
        let mut tags = BTreeMap::new();
        for logical in [
            RoleKind::Execution.logical(),
            RoleKind::Task.logical(),
            CLUSTER,
            SERVICE,
            TASK_DEFINITION,
            LOG_GROUP,
            SCALING,
        ] {
            tags.insert(logical, cx.tags(MODULE, logical));
        }
        let roles = RoleKind::ALL
            .iter()
            .map(|&kind| RoleWant {
                kind,
                name: names.role(kind).to_owned(),
                trust: normalize_policy(&trust_policy()),
                managed: match kind {
                    RoleKind::Execution => BTreeSet::from([format!(
                        "arn:{}:iam::aws:policy/service-role/AmazonECSTaskExecutionRolePolicy",
                        partition(region)
                    )]),
                    RoleKind::Task => BTreeSet::new(),
                },
                inline: match kind {
                    RoleKind::Task if !spec.task_role_statements.is_empty() => BTreeMap::from([(
                        names.inline_policy.clone(),
                        normalize_policy(&policy_document(&spec.task_role_statements)),
                    )]),
                    _ => BTreeMap::new(),
                },
                tags: tags[kind.logical()].clone(),
            })
            .collect();
        let port = i32::from(inputs.container_port);
        let mut environment = spec.environment.clone();
        environment.insert("PORT".to_owned(), inputs.container_port.to_string());
        let (interval, timeout, retries, start_period) = HEALTH_TIMING;
        let container = ContainerShape {
            name: CONTAINER.to_owned(),
            image: spec
                .image
                .clone()
                .unwrap_or_else(|| inputs.default_image.clone()),
            essential: true,
            ports: BTreeSet::from([(port, "tcp".to_owned())]),
            environment,
            health: spec.container_health_check.then(|| HealthShape {
                command: HEALTH_COMMAND.iter().map(|s| (*s).to_owned()).collect(),
                interval,
                timeout,
                retries,
                start_period,
            }),
            log_driver: Some("awslogs".to_owned()),
            log_options: BTreeMap::from([
                ("awslogs-group".to_owned(), names.log_group.clone()),
                ("awslogs-region".to_owned(), region.to_owned()),
                ("awslogs-stream-prefix".to_owned(), STREAM_PREFIX.to_owned()),
            ]),
            read_only: spec.read_only_root_filesystem,
        };
        let task = TaskShape {
            cpu: spec.cpu.to_string(),
            memory: spec.memory.to_string(),
            network_mode: "awsvpc".to_owned(),
            compatibilities: BTreeSet::from(["FARGATE".to_owned()]),
            os: "LINUX".to_owned(),
            arch: spec.cpu_architecture.as_ecs().to_owned(),
            execution_role: names.execution_role.clone(),
            task_role: names.task_role.clone(),
            containers: vec![container],
        };
        let grace = int(spec.health_check_grace_seconds);
        let service = ServiceShape {
            launch_type: Some("FARGATE".to_owned()),
            subnets: inputs
                .private_subnet_ids
                .iter()
                .take(spec.zone_count.map_or(usize::MAX, |n| n as usize))
                .cloned()
                .collect(),
            security_groups: BTreeSet::from([inputs.task_security_group_id.clone()]),
            public_ip: Some("DISABLED".to_owned()),
            load_balancers: BTreeSet::from([(
                inputs.target_group_arn.clone(),
                CONTAINER.to_owned(),
                port,
            )]),
            propagate_tags: Some("SERVICE".to_owned()),
            full: Some(FullSettings {
                deployment: DEPLOYMENT,
                grace: Some(grace),
                az_rebalancing: Some("ENABLED".to_owned()),
                managed_tags: true,
            }),
        };
        let policy = |metric: &str, label: Option<String>, target: f64| PolicyShape {
            metric: metric.to_owned(),
            label,
            target,
            scale_out_cooldown: int(spec.scale_out_cooldown_seconds),
            scale_in_cooldown: int(spec.scale_in_cooldown_seconds),
        };
        let policies = BTreeMap::from([
            (
                names.cpu_policy.clone(),
                policy(CPU_METRIC, None, f64::from(spec.cpu_target_percent)),
            ),
            (
                names.requests_policy.clone(),
                policy(
                    REQUESTS_METRIC,
                    Some(format!(
                        "{}/{}",
                        inputs.load_balancer_arn_suffix, inputs.target_group_arn_suffix
                    )),
                    f64::from(spec.requests_per_target),
                ),
            ),
        ]);
        Desired {
            names,
            roles,
            insights: "enabled",
            retention: int(spec.log_retention_days),
            task,
            service,
            desired_count: int(spec.desired_count),
            grace,
            min: int(spec.min_count),
            max: int(spec.max_count),
            policies,
            tags,
        }
    }

    pub(crate) fn tags(&self, logical: &str) -> BTreeMap<String, String> {
        self.tags.get(logical).cloned().unwrap_or_default()
    }
}

/// Which ECS resource a tag update concerns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EcsKind {
    Cluster,
    Service,
    TaskDefinition,
}

impl EcsKind {
    pub(crate) fn logical(self) -> &'static str {
        match self {
            EcsKind::Cluster => CLUSTER,
            EcsKind::Service => SERVICE,
            EcsKind::TaskDefinition => TASK_DEFINITION,
        }
    }
}

/// One step of an apply or destroy, in order.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Op {
    CreateRole(RoleKind),
    UpdateTrust(RoleKind),
    AttachPolicy(RoleKind, String),
    DetachPolicy(RoleKind, String),
    PutInline(RoleKind, String),
    DeleteInline(RoleKind, String),
    TagRole(RoleKind, BTreeMap<String, String>),
    CreateLogGroup,
    PutRetention {
        was: Option<i32>,
    },
    TagLogGroup {
        arn: String,
        tags: BTreeMap<String, String>,
    },
    CreateCluster,
    UpdateInsights {
        was: Option<String>,
    },
    TagEcs {
        kind: EcsKind,
        arn: String,
        tags: BTreeMap<String, String>,
    },
    RegisterTaskDefinition {
        why: Vec<String>,
    },
    /// Wait until a DRAINING service with our name is INACTIVE.
    WaitServiceInactive,
    CreateService,
    UpdateService {
        why: Vec<String>,
    },
    RegisterTarget {
        was: Option<(i32, i32)>,
    },
    PutPolicy {
        name: String,
        exists: bool,
        why: Vec<String>,
    },
    DeletePolicy {
        name: String,
    },
    DeregisterTarget,
    ScaleToZero {
        was: i32,
    },
    DeleteService,
    DeregisterTaskDefinition {
        arn: String,
    },
    DeleteCluster,
    DeleteLogGroup,
    DeleteRole {
        kind: RoleKind,
        managed: Vec<String>,
        inline: Vec<String>,
    },
}

impl Op {
    /// How the step shows in a plan; `None` for waits.
    pub(crate) fn change(&self, names: &Names) -> Option<Change> {
        let c = |action, kind: &str, name: &str| Change::new(action, MODULE, kind, name);
        let role = |k: RoleKind| names.role(k).to_owned();
        Some(match self {
            Op::CreateRole(k) => c(Action::Create, "iam-role", &role(*k))
                .detail(format!("assumable by {TASKS_PRINCIPAL} only")),
            Op::UpdateTrust(k) => c(Action::Update, "iam-role", &role(*k))
                .detail(format!("trust policy -> only {TASKS_PRINCIPAL}")),
            Op::AttachPolicy(k, arn) => {
                c(Action::Create, "iam-role-policy-attachment", &role(*k)).detail(arn.clone())
            }
            Op::DetachPolicy(k, arn) => {
                c(Action::Delete, "iam-role-policy-attachment", &role(*k)).detail(arn.clone())
            }
            Op::PutInline(k, name) => c(Action::Update, "iam-role-policy", &role(*k))
                .detail(format!("inline policy {name}")),
            Op::DeleteInline(k, name) => c(Action::Delete, "iam-role-policy", &role(*k))
                .detail(format!("inline policy {name}")),
            Op::TagRole(k, tags) => tag_change(c(Action::Update, "iam-role", &role(*k)), tags),
            Op::CreateLogGroup => c(Action::Create, "log-group", &names.log_group),
            Op::PutRetention { was } => c(Action::Update, "log-group", &names.log_group)
                .detail(format!("retention {} -> configured", show(was))),
            Op::TagLogGroup { arn, tags } => tag_change(
                c(Action::Update, "log-group", &names.log_group).id(arn),
                tags,
            ),
            Op::CreateCluster => c(Action::Create, "ecs-cluster", &names.cluster)
                .detail("Container Insights enabled"),
            Op::UpdateInsights { was } => c(Action::Update, "ecs-cluster", &names.cluster)
                .detail(format!("containerInsights {} -> enabled", show(was))),
            Op::TagEcs { kind, arn, tags } => {
                let kind_name = match kind {
                    EcsKind::Cluster => "ecs-cluster",
                    EcsKind::Service => "ecs-service",
                    EcsKind::TaskDefinition => "ecs-task-definition",
                };
                tag_change(c(Action::Update, kind_name, &names.family).id(arn), tags)
            }
            Op::RegisterTaskDefinition { why } => {
                let mut ch = c(Action::Create, "ecs-task-definition", &names.family);
                ch.details = why.clone();
                ch
            }
            Op::WaitServiceInactive => return None,
            Op::CreateService => c(Action::Create, "ecs-service", &names.service)
                .detail("FARGATE, circuit breaker with rollback, 100/200 %"),
            Op::UpdateService { why } => {
                let mut ch = c(Action::Update, "ecs-service", &names.service);
                ch.details = why.clone();
                ch
            }
            Op::RegisterTarget { was } => {
                let action = if was.is_some() {
                    Action::Update
                } else {
                    Action::Create
                };
                let ch = c(action, "scalable-target", &names.resource_id());
                match was {
                    Some((min, max)) => ch.detail(format!("min/max {min}/{max} -> configured")),
                    None => ch,
                }
            }
            Op::PutPolicy { name, exists, why } => {
                let action = if *exists {
                    Action::Update
                } else {
                    Action::Create
                };
                let mut ch = c(action, "scaling-policy", name);
                ch.details = why.clone();
                ch
            }
            Op::DeletePolicy { name } => c(Action::Delete, "scaling-policy", name),
            Op::DeregisterTarget => c(Action::Delete, "scalable-target", &names.resource_id()),
            Op::ScaleToZero { was } => c(Action::Update, "ecs-service", &names.service)
                .detail(format!("desired count {was} -> 0")),
            Op::DeleteService => c(Action::Delete, "ecs-service", &names.service),
            Op::DeregisterTaskDefinition { arn } => {
                c(Action::Delete, "ecs-task-definition", &names.family).id(arn)
            }
            Op::DeleteCluster => c(Action::Delete, "ecs-cluster", &names.cluster),
            Op::DeleteLogGroup => c(Action::Delete, "log-group", &names.log_group),
            Op::DeleteRole { kind, .. } => c(Action::Delete, "iam-role", &role(*kind)),
        })
    }
}

fn show<T: std::fmt::Display>(v: &Option<T>) -> String {
    v.as_ref().map_or("none".to_owned(), T::to_string)
}

fn tag_change(mut ch: Change, tags: &BTreeMap<String, String>) -> Change {
    ch.details = tags
        .iter()
        .map(|(k, v)| format!("tag {k} = {v:?}"))
        .collect();
    ch
}

/// The tags in `want` that `have` lacks or holds with another value.
fn missing_tags(
    want: &BTreeMap<String, String>,
    have: &BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    infra::tags::missing(want, have)
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// True when `tags` say the resource belongs to `stack`'s compute module.
pub(crate) fn owned(tags: &BTreeMap<String, String>, stack: &str) -> bool {
    tags.get(infra::tags::STACK).map(String::as_str) == Some(stack)
        && tags.get(infra::tags::MODULE).map(String::as_str) == Some(MODULE)
}

fn not_ours(kind: &'static str, name: &str, stack: &str) -> Error {
    Error::NotOurs {
        kind,
        name: name.to_owned(),
        stack: stack.to_owned(),
    }
}

/// What differs between two task shapes, one line each.
pub(crate) fn task_differences(want: &TaskShape, have: &TaskShape) -> Vec<String> {
    let mut why = Vec::new();
    let mut cmp = |what: &str, w: String, h: String| {
        if w != h {
            why.push(format!("{what} {h} -> {w}"));
        }
    };
    cmp("cpu", want.cpu.clone(), have.cpu.clone());
    cmp("memory", want.memory.clone(), have.memory.clone());
    cmp(
        "network mode",
        want.network_mode.clone(),
        have.network_mode.clone(),
    );
    cmp(
        "compatibilities",
        format!("{:?}", want.compatibilities),
        format!("{:?}", have.compatibilities),
    );
    cmp(
        "platform",
        format!("{}/{}", want.os, want.arch),
        format!("{}/{}", have.os, have.arch),
    );
    cmp(
        "execution role",
        want.execution_role.clone(),
        have.execution_role.clone(),
    );
    cmp("task role", want.task_role.clone(), have.task_role.clone());
    if want.containers.len() != have.containers.len() {
        why.push(format!(
            "containers {} -> {}",
            have.containers.len(),
            want.containers.len()
        ));
        return why;
    }
    for (w, h) in want.containers.iter().zip(&have.containers) {
        let n = &w.name;
        let mut cmp = |what: &str, wv: String, hv: String| {
            if wv != hv {
                why.push(format!("container {n} {what} {hv} -> {wv}"));
            }
        };
        cmp("name", w.name.clone(), h.name.clone());
        cmp("image", w.image.clone(), h.image.clone());
        cmp(
            "essential",
            w.essential.to_string(),
            h.essential.to_string(),
        );
        cmp("ports", format!("{:?}", w.ports), format!("{:?}", h.ports));
        cmp(
            "environment",
            format!("{:?}", w.environment),
            format!("{:?}", h.environment),
        );
        cmp(
            "health check",
            format!("{:?}", w.health),
            format!("{:?}", h.health),
        );
        cmp(
            "log driver",
            format!("{:?} {:?}", w.log_driver, w.log_options),
            format!("{:?} {:?}", h.log_driver, h.log_options),
        );
        cmp(
            "read-only root filesystem",
            w.read_only.to_string(),
            h.read_only.to_string(),
        );
    }
    why
}

/// What differs between the wanted and existing service settings, one line each. Settings the
/// endpoint does not report (moto) are not compared.
pub(crate) fn service_differences(want: &ServiceShape, have: &ServiceShape) -> Vec<String> {
    let mut why = Vec::new();
    let mut cmp = |what: &str, w: String, h: String| {
        if w != h {
            why.push(format!("{what} {h} -> {w}"));
        }
    };
    cmp(
        "subnets",
        format!("{:?}", want.subnets),
        format!("{:?}", have.subnets),
    );
    cmp(
        "security groups",
        format!("{:?}", want.security_groups),
        format!("{:?}", have.security_groups),
    );
    cmp(
        "assign public ip",
        show(&want.public_ip),
        show(&have.public_ip),
    );
    cmp(
        "load balancers",
        format!("{:?}", want.load_balancers),
        format!("{:?}", have.load_balancers),
    );
    cmp(
        "propagate tags",
        show(&want.propagate_tags),
        show(&have.propagate_tags),
    );
    if let (Some(w), Some(h)) = (&want.full, &have.full) {
        cmp(
            "deployment configuration",
            format!("{:?}", w.deployment),
            format!("{:?}", h.deployment),
        );
        cmp("health check grace period", show(&w.grace), show(&h.grace));
        cmp(
            "availability zone rebalancing",
            show(&w.az_rebalancing),
            show(&h.az_rebalancing),
        );
        cmp(
            "ECS managed tags",
            w.managed_tags.to_string(),
            h.managed_tags.to_string(),
        );
    }
    why
}

/// The steps that take what exists to what the configuration asks for.
pub(crate) fn diff(desired: &Desired, observed: &Observed) -> Result<Vec<Op>, Error> {
    let mut ops = diff_foundation(desired, observed)?;
    ops.extend(diff_service(desired, observed)?);
    Ok(ops)
}

/// The steps for what needs none of the module's inputs: the IAM roles, the log group and the
/// cluster. They can run while the network and the load balancer are still being built.
pub(crate) fn diff_foundation(desired: &Desired, observed: &Observed) -> Result<Vec<Op>, Error> {
    let names = &desired.names;
    let stack = names.stack.as_str();
    let mut ops = Vec::new();

    for want in &desired.roles {
        let k = want.kind;
        match observed.roles.get(&k) {
            None => {
                ops.push(Op::CreateRole(k));
                ops.extend(want.managed.iter().map(|a| Op::AttachPolicy(k, a.clone())));
                ops.extend(want.inline.keys().map(|n| Op::PutInline(k, n.clone())));
            }
            Some(have) => {
                if !owned(&have.tags, stack) {
                    return Err(not_ours("IAM role", &want.name, stack));
                }
                if have.trust != want.trust {
                    ops.push(Op::UpdateTrust(k));
                }
                for arn in want.managed.difference(&have.managed) {
                    ops.push(Op::AttachPolicy(k, arn.clone()));
                }
                for arn in have.managed.difference(&want.managed) {
                    ops.push(Op::DetachPolicy(k, arn.clone()));
                }
                for (name, doc) in &want.inline {
                    if have.inline.get(name) != Some(doc) {
                        ops.push(Op::PutInline(k, name.clone()));
                    }
                }
                for name in have.inline.keys().filter(|n| !want.inline.contains_key(*n)) {
                    ops.push(Op::DeleteInline(k, name.clone()));
                }
                let tags = missing_tags(&want.tags, &have.tags);
                if !tags.is_empty() {
                    ops.push(Op::TagRole(k, tags));
                }
            }
        }
    }

    match &observed.log_group {
        None => ops.push(Op::CreateLogGroup),
        Some(have) => {
            if !owned(&have.tags, stack) {
                return Err(not_ours("log group", &names.log_group, stack));
            }
            if have.retention != Some(desired.retention) {
                ops.push(Op::PutRetention {
                    was: have.retention,
                });
            }
            let tags = missing_tags(&desired.tags(LOG_GROUP), &have.tags);
            if !tags.is_empty() {
                ops.push(Op::TagLogGroup {
                    arn: have.arn.clone(),
                    tags,
                });
            }
        }
    }

    match observed.cluster.as_ref().filter(|c| c.status != "INACTIVE") {
        None => ops.push(Op::CreateCluster),
        Some(have) => {
            if !owned(&have.tags, stack) {
                return Err(not_ours("ECS cluster", &names.cluster, stack));
            }
            if have.insights.as_deref() != Some(desired.insights) {
                ops.push(Op::UpdateInsights {
                    was: have.insights.clone(),
                });
            }
            let tags = missing_tags(&desired.tags(CLUSTER), &have.tags);
            if !tags.is_empty() {
                ops.push(Op::TagEcs {
                    kind: EcsKind::Cluster,
                    arn: have.arn.clone(),
                    tags,
                });
            }
        }
    }

    Ok(ops)
}

/// The steps for what the inputs shape: the task definition (its image may be the stack's
/// repository), the service (subnets, security group, target group) and its scaling.
pub(crate) fn diff_service(desired: &Desired, observed: &Observed) -> Result<Vec<Op>, Error> {
    let names = &desired.names;
    let stack = names.stack.as_str();
    let mut ops = Vec::new();

    // The task definition: a new revision only when the newest one differs.
    let current_task = match &observed.task_definition {
        None => {
            ops.push(Op::RegisterTaskDefinition {
                why: vec![format!(
                    "revision 1 of family {}: {} cpu, {} MiB, image {}",
                    names.family,
                    desired.task.cpu,
                    desired.task.memory,
                    desired.task.containers[0].image
                )],
            });
            None
        }
        Some(have) => {
            let why = task_differences(&desired.task, &have.shape);
            if why.is_empty() {
                let tags = missing_tags(&desired.tags(TASK_DEFINITION), &have.tags);
                if !tags.is_empty() {
                    ops.push(Op::TagEcs {
                        kind: EcsKind::TaskDefinition,
                        arn: have.arn.clone(),
                        tags,
                    });
                }
                Some(have.arn.as_str())
            } else {
                ops.push(Op::RegisterTaskDefinition { why });
                None
            }
        }
    };

    let service = observed.service.as_ref();
    let status = service.map(|s| s.status.as_str());
    match (service, status) {
        (None, _) | (Some(_), Some("INACTIVE")) => ops.push(Op::CreateService),
        (Some(_), Some("DRAINING")) => {
            ops.push(Op::WaitServiceInactive);
            ops.push(Op::CreateService);
        }
        (Some(have), _) => {
            if !owned(&have.tags, stack) {
                return Err(not_ours("ECS service", &names.service, stack));
            }
            if let Some(lt) = &have.shape.launch_type
                && Some(lt) != desired.service.launch_type.as_ref()
            {
                return Err(Error::NeedsReplacement {
                    resource: format!("ECS service {}", names.service),
                    field: "launch type",
                    have: lt.clone(),
                    want: "FARGATE".to_owned(),
                });
            }
            let mut why = service_differences(&desired.service, &have.shape);
            match current_task {
                Some(arn) if arn == have.task_definition => {}
                Some(arn) => why.push(format!("task definition {} -> {arn}", have.task_definition)),
                None => why.push(format!(
                    "task definition {} -> the new revision",
                    have.task_definition
                )),
            }
            if !why.is_empty() {
                ops.push(Op::UpdateService { why });
            }
            let tags = missing_tags(&desired.tags(SERVICE), &have.tags);
            if !tags.is_empty() {
                ops.push(Op::TagEcs {
                    kind: EcsKind::Service,
                    arn: have.arn.clone(),
                    tags,
                });
            }
        }
    }

    if observed.target != Some((desired.min, desired.max)) {
        ops.push(Op::RegisterTarget {
            was: observed.target,
        });
    }
    for (name, want) in &desired.policies {
        match observed.policies.get(name) {
            None => ops.push(Op::PutPolicy {
                name: name.clone(),
                exists: false,
                why: vec![format!(
                    "target tracking {} = {}{}",
                    want.metric,
                    want.target,
                    want.label
                        .as_ref()
                        .map(|l| format!(" (resource label {l})"))
                        .unwrap_or_default()
                )],
            }),
            Some(have) if !want.same(have) => ops.push(Op::PutPolicy {
                name: name.clone(),
                exists: true,
                why: vec![format!(
                    "{} {} -> {}, cooldowns out/in {}/{} -> {}/{}",
                    want.metric,
                    have.target,
                    want.target,
                    have.scale_out_cooldown,
                    have.scale_in_cooldown,
                    want.scale_out_cooldown,
                    want.scale_in_cooldown
                )],
            }),
            Some(_) => {}
        }
    }
    Ok(ops)
}

/// The steps that remove everything of the stack's compute that exists and is the stack's.
pub(crate) fn teardown(names: &Names, observed: &Observed) -> Vec<Op> {
    let stack = names.stack.as_str();
    let mut ops = Vec::new();
    for name in observed.policies.keys() {
        ops.push(Op::DeletePolicy { name: name.clone() });
    }
    if observed.target.is_some() {
        ops.push(Op::DeregisterTarget);
    }
    if let Some(s) = &observed.service
        && owned(&s.tags, stack)
    {
        match s.status.as_str() {
            "ACTIVE" => {
                if s.desired_count > 0 {
                    ops.push(Op::ScaleToZero {
                        was: s.desired_count,
                    });
                }
                ops.push(Op::DeleteService);
                ops.push(Op::WaitServiceInactive);
            }
            "DRAINING" => ops.push(Op::WaitServiceInactive),
            _ => {}
        }
    }
    for arn in &observed.task_definition_arns {
        ops.push(Op::DeregisterTaskDefinition { arn: arn.clone() });
    }
    if let Some(c) = &observed.cluster
        && c.status != "INACTIVE"
        && owned(&c.tags, stack)
    {
        ops.push(Op::DeleteCluster);
    }
    if observed
        .log_group
        .as_ref()
        .is_some_and(|g| owned(&g.tags, stack))
    {
        ops.push(Op::DeleteLogGroup);
    }
    for (kind, role) in &observed.roles {
        if owned(&role.tags, stack) {
            ops.push(Op::DeleteRole {
                kind: *kind,
                managed: role.managed.iter().cloned().collect(),
                inline: role.inline.keys().cloned().collect(),
            });
        }
    }
    ops
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use infra::StackName;

    use super::*;
    use crate::config::ComputeConfig;

    fn cx() -> Context {
        let sdk = aws_config::SdkConfig::builder()
            .region(aws_config::Region::new("eu-west-1"))
            .build();
        Context::builder(sdk, StackName::new("demo").unwrap())
            .waits(infra::WaitPolicy {
                initial_delay: Duration::from_millis(1),
                ..Default::default()
            })
            .build()
    }

    fn desired(toml_text: &str) -> Desired {
        let config: ComputeConfig = toml::from_str(toml_text).unwrap();
        let inputs = ComputeInputs {
            private_subnet_ids: vec!["subnet-b".into(), "subnet-a".into()],
            task_security_group_id: "sg-1".into(),
            target_group_arn: "arn:tg".into(),
            load_balancer_arn_suffix: "app/demo/1".into(),
            target_group_arn_suffix: "targetgroup/demo/2".into(),
            container_port: 8080,
            default_image: "repo/sample-app:latest".into(),
        };
        Desired::new(&cx(), &config.validate("service").unwrap(), &inputs)
    }

    /// What AWS would report after a perfect apply of `d`.
    fn matching(d: &Desired) -> Observed {
        let roles = d
            .roles
            .iter()
            .map(|r| {
                (
                    r.kind,
                    RoleHave {
                        arn: format!("arn:aws:iam::1:role/{}", r.name),
                        trust: r.trust.clone(),
                        managed: r.managed.clone(),
                        inline: r.inline.clone(),
                        tags: r.tags.clone(),
                    },
                )
            })
            .collect();
        Observed {
            roles,
            cluster: Some(ClusterHave {
                arn: "arn:cluster".into(),
                status: "ACTIVE".into(),
                insights: Some("enabled".into()),
                tags: d.tags(CLUSTER),
            }),
            log_group: Some(LogGroupHave {
                arn: "arn:lg".into(),
                retention: Some(d.retention),
                tags: d.tags(LOG_GROUP),
            }),
            task_definition: Some(TaskDefHave {
                arn: "arn:td:1".into(),
                shape: d.task.clone(),
                tags: d.tags(TASK_DEFINITION),
            }),
            service: Some(ServiceHave {
                arn: "arn:svc".into(),
                status: "ACTIVE".into(),
                task_definition: "arn:td:1".into(),
                desired_count: 5,
                shape: d.service.clone(),
                tags: d.tags(SERVICE),
            }),
            target: Some((d.min, d.max)),
            policies: d.policies.clone(),
            task_definition_arns: Vec::new(),
        }
    }

    #[test]
    fn a_matching_stack_needs_nothing_whatever_its_desired_count() {
        let d = desired("");
        let o = matching(&d);
        assert_eq!(diff(&d, &o).unwrap(), []);
        // moto's answer lacks the deployment settings: not a difference.
        let mut moto = o.clone();
        if let Some(s) = moto.service.as_mut() {
            s.shape.full = None;
        }
        assert_eq!(diff(&d, &moto).unwrap(), []);
    }

    #[test]
    fn zone_count_keeps_the_first_subnets_in_zone_order() {
        let all = desired("");
        assert_eq!(
            all.service.subnets,
            BTreeSet::from(["subnet-a".to_owned(), "subnet-b".to_owned()])
        );
        // The inputs list subnet-b first: it is the first zone's.
        let one = desired("zone-count = 1");
        assert_eq!(one.service.subnets, BTreeSet::from(["subnet-b".to_owned()]));
    }

    #[test]
    fn drifted_service_settings_are_updated() {
        let d = desired("");
        let mut o = matching(&d);
        let s = o.service.as_mut().unwrap();
        let full = s.shape.full.as_mut().unwrap();
        full.deployment.circuit_breaker = false;
        full.grace = Some(0);
        s.shape.public_ip = Some("ENABLED".into());
        let ops = diff(&d, &o).unwrap();
        let [Op::UpdateService { why }] = ops.as_slice() else {
            panic!("{ops:?}")
        };
        assert_eq!(why.len(), 3, "{why:?}");
        assert!(
            why.iter()
                .any(|w| w.starts_with("health check grace period 0 -> 60")),
            "{why:?}"
        );
    }

    #[test]
    fn a_changed_task_definition_means_a_new_revision_and_a_service_update() {
        let d = desired("");
        let mut o = matching(&d);
        let td = o.task_definition.as_mut().unwrap();
        td.shape.containers[0].image = "nginx".into();
        td.shape.containers[0]
            .environment
            .insert("X".into(), "1".into());
        let ops = diff(&d, &o).unwrap();
        assert!(
            matches!(&ops[0], Op::RegisterTaskDefinition { why } if why.len() == 2),
            "{ops:?}"
        );
        assert!(matches!(&ops[1], Op::UpdateService { .. }), "{ops:?}");
        assert_eq!(ops.len(), 2);
    }

    #[test]
    fn a_service_pointing_at_another_revision_is_updated() {
        let d = desired("");
        let mut o = matching(&d);
        o.service.as_mut().unwrap().task_definition = "arn:td:0".into();
        assert!(matches!(
            diff(&d, &o).unwrap().as_slice(),
            [Op::UpdateService { .. }]
        ));
    }

    #[test]
    fn service_lifecycle() {
        let d = desired("");
        let mut o = matching(&d);
        o.service.as_mut().unwrap().status = "DRAINING".into();
        assert_eq!(
            diff(&d, &o).unwrap(),
            [Op::WaitServiceInactive, Op::CreateService]
        );
        o.service.as_mut().unwrap().status = "INACTIVE".into();
        assert_eq!(diff(&d, &o).unwrap(), [Op::CreateService]);
        o.service.as_mut().unwrap().status = "ACTIVE".into();
        o.service.as_mut().unwrap().shape.launch_type = Some("EC2".into());
        let err = diff(&d, &o).unwrap_err();
        assert!(err.to_string().contains("launch type EC2"), "{err}");
    }

    #[test]
    fn roles_policies_logs_cluster_and_scaling_drift() {
        let d = desired("log-retention-days = 7");
        let mut o = matching(&desired(""));
        let exec = o.roles.get_mut(&RoleKind::Execution).unwrap();
        exec.trust = normalize_policy(&json!({"Statement": []}));
        exec.managed
            .insert("arn:aws:iam::aws:policy/AdministratorAccess".into());
        exec.tags.remove("Name");
        o.cluster.as_mut().unwrap().insights = Some("disabled".into());
        o.target = Some((1, 3));
        o.policies.values_mut().for_each(|p| p.target = 1.0);
        let ops = diff(&d, &o).unwrap();
        assert_eq!(
            ops,
            [
                Op::UpdateTrust(RoleKind::Execution),
                Op::DetachPolicy(
                    RoleKind::Execution,
                    "arn:aws:iam::aws:policy/AdministratorAccess".into()
                ),
                Op::TagRole(
                    RoleKind::Execution,
                    BTreeMap::from([("Name".into(), "demo-execution-role".into())])
                ),
                Op::PutRetention { was: Some(30) },
                Op::UpdateInsights {
                    was: Some("disabled".into())
                },
                Op::RegisterTarget { was: Some((1, 3)) },
                Op::PutPolicy {
                    name: "demo-cpu".into(),
                    exists: true,
                    why: vec!["ECSServiceAverageCPUUtilization 1 -> 60, cooldowns out/in 60/300 -> 60/300".into()]
                },
                Op::PutPolicy {
                    name: "demo-requests".into(),
                    exists: true,
                    why: vec!["ALBRequestCountPerTarget 1 -> 6000, cooldowns out/in 60/300 -> 60/300".into()]
                },
            ]
        );
    }

    #[test]
    fn inline_policies_follow_the_statements() {
        let with = desired(
            r#"task-role-statements = [{ Effect = "Allow", Action = "s3:GetObject", Resource = "*" }]"#,
        );
        let o = matching(&desired(""));
        assert_eq!(
            diff(&with, &o).unwrap(),
            [Op::PutInline(RoleKind::Task, "demo-task".into())]
        );
        assert_eq!(
            diff(&desired(""), &matching(&with)).unwrap(),
            [Op::DeleteInline(RoleKind::Task, "demo-task".into())]
        );
    }

    #[test]
    fn foreign_resources_are_refused_and_never_torn_down() {
        let d = desired("");
        let mut o = matching(&d);
        o.cluster.as_mut().unwrap().tags.clear();
        assert!(matches!(
            diff(&d, &o),
            Err(Error::NotOurs {
                kind: "ECS cluster",
                ..
            })
        ));
        let ops = teardown(&d.names, &o);
        assert!(!ops.contains(&Op::DeleteCluster), "{ops:?}");
        assert!(ops.contains(&Op::DeleteService), "{ops:?}");
    }

    #[test]
    fn teardown_order() {
        let d = desired("");
        let mut o = matching(&d);
        o.task_definition_arns = vec!["arn:td:1".into()];
        let ops = teardown(&d.names, &o);
        let names: Vec<String> = ops
            .iter()
            .map(|op| {
                format!("{op:?}")
                    .split([' ', '(', '{'])
                    .next()
                    .unwrap_or_default()
                    .to_owned()
            })
            .collect();
        assert_eq!(
            names,
            [
                "DeletePolicy",
                "DeletePolicy",
                "DeregisterTarget",
                "ScaleToZero",
                "DeleteService",
                "WaitServiceInactive",
                "DeregisterTaskDefinition",
                "DeleteCluster",
                "DeleteLogGroup",
                "DeleteRole",
                "DeleteRole"
            ]
        );
    }

    #[test]
    fn policy_documents_compare_semantically() {
        let a = json!({"Version": "2012-10-17", "Statement": {"Effect": "Allow", "Action": ["b", "a"], "Resource": ["*"]}});
        let b = json!({"Statement": [{"Resource": "*", "Action": ["a", "b"], "Effect": "Allow"}], "Version": "2012-10-17"});
        assert_eq!(normalize_policy(&a), normalize_policy(&b));
    }
}
