//! What the configuration asks for, what exists (normalized so the two compare semantically),
//! and the ordered operations that take the one to the other. Everything here is pure.

use std::collections::{BTreeMap, BTreeSet};

use infra::Context;
use serde_json::{Value, json};

use crate::ComputeInputs;
use crate::Secret;
use crate::config::{ComputeSpec, policy_document};

mod diff;
mod op;

pub(crate) use diff::{
    diff, diff_foundation, diff_service, kept_log_group, policies_since, teardown,
};
use op::show;
pub(crate) use op::{EcsKind, Op, changes};

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
/// The same at 20-second resolution (ECS's high-resolution metrics).
pub(crate) const CPU_METRIC_HIGH_RESOLUTION: &str = "ECSServiceAverageCPUUtilizationHighResolution";
/// The predefined metric of the requests policy.
pub(crate) const REQUESTS_METRIC: &str = "ALBRequestCountPerTarget";

/// Logical names: the `stackproof:name` tag of each resource.
pub(crate) const CLUSTER: &str = "cluster";
pub(crate) const SERVICE: &str = "service";
pub(crate) const TASK_DEFINITION: &str = "task-definition";
pub(crate) const LOG_GROUP: &str = "log-group";
pub(crate) const SCALING: &str = "scalable-target";

/// The three IAM roles.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum RoleKind {
    /// Used by ECS to pull the image and write logs.
    Execution,
    /// Assumed by the application.
    Task,
    /// Assumed by AWS FIS to run the stack's fault experiments (a zone's network cut off,
    /// `aws:network:disrupt-connectivity`), so that FIS, not the client, undoes the fault.
    Fault,
}

/// The AWS managed policy FIS documents for its network actions (`aws:network:*`): it may
/// create, associate and delete only network ACLs tagged `managedByFIS=true`.
pub(crate) const FIS_NETWORK_POLICY: &str = "service-role/AWSFaultInjectionSimulatorNetworkAccess";

/// The service that assumes the fault role.
pub(crate) const FIS_PRINCIPAL: &str = "fis.amazonaws.com";

impl RoleKind {
    pub(crate) const ALL: [RoleKind; 3] = [RoleKind::Execution, RoleKind::Task, RoleKind::Fault];

    /// The logical name (tag) of the role.
    pub(crate) fn logical(self) -> &'static str {
        match self {
            RoleKind::Execution => "execution-role",
            RoleKind::Task => "task-role",
            RoleKind::Fault => "fault-role",
        }
    }

    /// The one service that may assume the role.
    pub(crate) fn principal(self) -> &'static str {
        match self {
            RoleKind::Execution | RoleKind::Task => TASKS_PRINCIPAL,
            RoleKind::Fault => FIS_PRINCIPAL,
        }
    }

    /// The role's description in IAM.
    pub(crate) fn description(self) -> &'static str {
        match self {
            RoleKind::Execution => "stackproof: lets ECS pull the image and write logs",
            RoleKind::Task => "stackproof: the application's role",
            RoleKind::Fault => "stackproof: lets AWS FIS cut a zone's network off and restore it",
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
    pub(crate) fault_role: String,
    pub(crate) inline_policy: String,
    pub(crate) fault_actions_policy: String,
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
            fault_role: format!("{stack}-fis"),
            inline_policy: format!("{stack}-task"),
            fault_actions_policy: format!("{stack}-fis-actions"),
            cpu_policy: format!("{stack}-cpu"),
            requests_policy: format!("{stack}-requests"),
        }
    }

    pub(crate) fn role(&self, kind: RoleKind) -> &str {
        match kind {
            RoleKind::Execution => &self.execution_role,
            RoleKind::Task => &self.task_role,
            RoleKind::Fault => &self.fault_role,
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

/// The trust policy of a role: only `principal` (ECS tasks, FIS) may assume it, and only on
/// behalf of `account` (`aws:SourceAccount`, IAM UG "The confused deputy problem").
pub(crate) fn trust_policy(principal: &str, account: &str) -> Value {
    if account.is_empty() {
        return json!({
            "Version": "2012-10-17",
            "Statement": [{
                "Effect": "Allow",
                "Principal": { "Service": principal },
                "Action": "sts:AssumeRole"
            }]
        });
    }
    json!({
        "Version": "2012-10-17",
        "Statement": [{
            "Effect": "Allow",
            "Principal": { "Service": principal },
            "Action": "sts:AssumeRole",
            "Condition": { "StringEquals": { "aws:SourceAccount": account } }
        }]
    })
}

/// The repository ARN of a private ECR image reference
/// (`ACCOUNT.dkr.ecr.REGION.amazonaws.com/NAME[:TAG|@DIGEST]`), or `None` for any other image.
pub(crate) fn ecr_repository_arn(image: &str, partition: &str) -> Option<String> {
    let (host, path) = image.split_once('/')?;
    let mut parts = host.split('.');
    let (account, dkr, ecr, region) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    if dkr != "dkr"
        || ecr != "ecr"
        || account.len() != 12
        || !account.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let name = path.split('@').next()?;
    let name = match name.rsplit_once(':') {
        Some((n, _tag)) => n,
        None => name,
    };
    Some(format!(
        "arn:{partition}:ecr:{region}:{account}:repository/{name}"
    ))
}

/// The execution role's one policy, in place of AWS's managed
/// `AmazonECSTaskExecutionRolePolicy` (which allows pulling every repository and writing
/// every log group): an ECR token (an action without resources), pulling from the image's own
/// repository when it is a private ECR image, and writing streams of the task log group only.
pub(crate) fn execution_policy(
    image: &str,
    log_group: &str,
    region: &str,
    account: &str,
    secrets: &BTreeMap<String, Secret>,
) -> Value {
    let p = partition(region);
    let mut statements = vec![json!({
        "Effect": "Allow",
        "Action": "ecr:GetAuthorizationToken",
        "Resource": "*"
    })];
    if let Some(repo) = ecr_repository_arn(image, p) {
        statements.push(json!({
            "Effect": "Allow",
            "Action": ["ecr:BatchCheckLayerAvailability", "ecr:GetDownloadUrlForLayer", "ecr:BatchGetImage"],
            "Resource": repo
        }));
    }
    statements.push(json!({
        "Effect": "Allow",
        "Action": ["logs:CreateLogStream", "logs:PutLogEvents"],
        "Resource": format!("arn:{p}:logs:{region}:{account}:log-group:{log_group}:log-stream:*")
    }));
    // Read access to exactly the container's secrets, one statement per action.
    let mut grants: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
    for secret in secrets.values() {
        let (action, resource) = secret.grant(p, region, account);
        grants.entry(action).or_default().insert(resource);
    }
    for (action, resources) in grants {
        statements.push(json!({
            "Effect": "Allow",
            "Action": action,
            "Resource": resources.into_iter().collect::<Vec<_>>()
        }));
    }
    json!({ "Version": "2012-10-17", "Statement": statements })
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
    /// Read for destroy only (`None` otherwise): a log stream of the group and the bytes
    /// CloudWatch counts (`storedBytes` lags writes, so a stream is what says it holds logs).
    pub(crate) contents: Option<LogContents>,
}

/// What a log group holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LogContents {
    /// The most recently written stream, if there is any.
    pub(crate) newest_stream: Option<String>,
    /// `storedBytes` of DescribeLogGroups.
    pub(crate) stored_bytes: i64,
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
    /// Secrets: name to `valueFrom` (references, never values).
    pub(crate) secrets: BTreeMap<String, String>,
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
pub struct Observed {
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
    /// Every INACTIVE revision of the family (destroy only): AWS keeps them until
    /// `DeleteTaskDefinitions`.
    pub(crate) inactive_task_definition_arns: Vec<String>,
}

/// The whole compute slice the configuration asks for.
#[derive(Debug, Clone, PartialEq)]
pub struct Desired {
    pub(crate) names: Names,
    /// Whether the roles' policies are final: the inputs name the account (and the image).
    /// Without them (the foundation that runs while the inputs are built) a new role gets a
    /// provisional trust policy without the account condition and no execution policy, and
    /// an existing role's policies are left alone; the apply that has the inputs converges
    /// them.
    pub(crate) policies_known: bool,
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
    /// The trust policy `kind`'s role should have.
    pub(crate) fn trust(&self, kind: RoleKind) -> &Value {
        self.roles
            .iter()
            .find(|r| r.kind == kind)
            .map_or(&Value::Null, |r| &r.trust)
    }

    pub(crate) fn new(cx: &Context, spec: &ComputeSpec, inputs: &ComputeInputs) -> Desired {
        let names = Names::new(cx.stack().as_str());
        let region = cx.region();
        let mut tags = BTreeMap::new();
        for logical in [
            RoleKind::Execution.logical(),
            RoleKind::Task.logical(),
            RoleKind::Fault.logical(),
            CLUSTER,
            SERVICE,
            TASK_DEFINITION,
            LOG_GROUP,
            SCALING,
        ] {
            tags.insert(logical, cx.tags(MODULE, logical));
        }
        let image = spec
            .image
            .clone()
            .unwrap_or_else(|| inputs.default_image.clone());
        let roles = roles(&names, spec, inputs, &image, region, &tags);
        let port = i32::from(inputs.container_port);
        let container = container(&names, spec, inputs, image, region);
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
        let policies = scaling_policies(&names, spec, inputs);
        Desired {
            names,
            policies_known: !inputs.account_id.is_empty(),
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

/// The three roles: trust, managed and inline policies, tags.
fn roles(
    names: &Names,
    spec: &ComputeSpec,
    inputs: &ComputeInputs,
    image: &str,
    region: &str,
    tags: &BTreeMap<&'static str, BTreeMap<String, String>>,
) -> Vec<RoleWant> {
    RoleKind::ALL
        .iter()
        .map(|&kind| RoleWant {
            kind,
            name: names.role(kind).to_owned(),
            trust: normalize_policy(&trust_policy(kind.principal(), &inputs.account_id)),
            managed: match kind {
                RoleKind::Fault => std::iter::once(FIS_NETWORK_POLICY)
                    .chain(inputs.linked.fault_policies.iter().map(String::as_str))
                    .map(|p| format!("arn:{}:iam::aws:policy/{p}", partition(region)))
                    .collect(),
                RoleKind::Execution | RoleKind::Task => BTreeSet::new(),
            },
            inline: match kind {
                RoleKind::Execution if inputs.account_id.is_empty() => BTreeMap::new(),
                RoleKind::Execution => BTreeMap::from([(
                    names.execution_role.clone(),
                    normalize_policy(&execution_policy(
                        image,
                        &names.log_group,
                        region,
                        &inputs.account_id,
                        &secrets(spec, inputs),
                    )),
                )]),
                RoleKind::Task if !spec.task_role_statements.is_empty() => BTreeMap::from([(
                    names.inline_policy.clone(),
                    normalize_policy(&policy_document(&spec.task_role_statements)),
                )]),
                RoleKind::Fault if !inputs.linked.fault_actions.is_empty() => BTreeMap::from([(
                    names.fault_actions_policy.clone(),
                    normalize_policy(&json!({
                        "Version": "2012-10-17",
                        "Statement": [{
                            "Effect": "Allow",
                            "Action": inputs.linked.fault_actions.iter().collect::<Vec<_>>(),
                            "Resource": "*"
                        }]
                    })),
                )]),
                RoleKind::Task | RoleKind::Fault => BTreeMap::new(),
            },
            tags: tags[kind.logical()].clone(),
        })
        .collect()
}

/// The container's secrets: the linked ones, then the configuration's (which win on a name).
fn secrets(spec: &ComputeSpec, inputs: &ComputeInputs) -> BTreeMap<String, Secret> {
    let mut all = inputs.linked.secrets.clone();
    all.extend(spec.secrets.clone());
    all
}

/// The one container: image, port, environment and secrets, health check, logs.
fn container(
    names: &Names,
    spec: &ComputeSpec,
    inputs: &ComputeInputs,
    image: String,
    region: &str,
) -> ContainerShape {
    let port = i32::from(inputs.container_port);
    let mut environment = inputs.linked.environment.clone();
    environment.extend(spec.environment.clone());
    environment.insert("PORT".to_owned(), inputs.container_port.to_string());
    let (interval, timeout, retries, start_period) = HEALTH_TIMING;
    ContainerShape {
        name: CONTAINER.to_owned(),
        image,
        essential: true,
        ports: BTreeSet::from([(port, "tcp".to_owned())]),
        environment,
        secrets: secrets(spec, inputs)
            .iter()
            .map(|(name, secret)| (name.clone(), secret.value_from().to_owned()))
            .collect(),
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
    }
}

/// The two target tracking policies: CPU and requests per target.
fn scaling_policies(
    names: &Names,
    spec: &ComputeSpec,
    inputs: &ComputeInputs,
) -> BTreeMap<String, PolicyShape> {
    let policy = |metric: &str, label: Option<String>, target: f64| PolicyShape {
        metric: metric.to_owned(),
        label,
        target,
        scale_out_cooldown: int(spec.scale_out_cooldown_seconds),
        scale_in_cooldown: int(spec.scale_in_cooldown_seconds),
    };
    BTreeMap::from([
        (
            names.cpu_policy.clone(),
            policy(
                if spec.high_resolution_metrics {
                    CPU_METRIC_HIGH_RESOLUTION
                } else {
                    CPU_METRIC
                },
                None,
                f64::from(spec.cpu_target_percent),
            ),
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
    ])
}

#[cfg(test)]
mod least_privilege {
    use super::*;

    #[test]
    fn the_execution_role_may_pull_only_the_image_s_own_repository() {
        let arn = |image: &str| ecr_repository_arn(image, "aws");
        let repo = "arn:aws:ecr:eu-west-1:123456789012:repository/web/sample-app";
        for image in [
            "123456789012.dkr.ecr.eu-west-1.amazonaws.com/web/sample-app:latest",
            "123456789012.dkr.ecr.eu-west-1.amazonaws.com/web/sample-app",
            "123456789012.dkr.ecr.eu-west-1.amazonaws.com/web/sample-app@sha256:00",
        ] {
            assert_eq!(arn(image).as_deref(), Some(repo), "{image}");
        }
        for other in [
            "public.ecr.aws/nginx/nginx:1.27",
            "nginx:1.27",
            "ghcr.io/org/app:1",
            "12345.dkr.ecr.eu-west-1.amazonaws.com/x:1",
        ] {
            assert_eq!(arn(other), None, "{other}");
        }
        let public = execution_policy(
            "public.ecr.aws/nginx/nginx:1.27",
            "/ecs/web",
            "eu-west-1",
            "123456789012",
            &BTreeMap::new(),
        );
        let text = public.to_string();
        assert!(
            !text.contains("secretsmanager") && !text.contains("ssm:"),
            "{text}"
        );
        assert!(!text.contains("BatchGetImage"), "{text}");
        assert!(
            text.contains("arn:aws:logs:eu-west-1:123456789012:log-group:/ecs/web:log-stream:*"),
            "{text}"
        );
        assert!(
            !text.contains("\"Resource\":\"*\",\"Action\":\"logs"),
            "{text}"
        );
    }

    #[test]
    fn the_execution_role_reads_exactly_the_container_s_secrets() {
        let secrets: BTreeMap<String, Secret> = [
            (
                "DB",
                "arn:aws:secretsmanager:eu-west-1:123456789012:secret:prod/db-AbCdEf:password::",
            ),
            (
                "TOKEN",
                "arn:aws:secretsmanager:eu-west-1:123456789012:secret:token-x1Y2z3",
            ),
            ("KEY", "/prod/api-key"),
            (
                "OTHER",
                "arn:aws:ssm:us-east-1:123456789012:parameter/shared/key",
            ),
        ]
        .into_iter()
        .map(|(n, r)| (n.to_owned(), Secret::parse(r).unwrap()))
        .collect();
        let doc = normalize_policy(&execution_policy(
            "nginx:1",
            "/ecs/web",
            "eu-west-1",
            "123456789012",
            &secrets,
        ));
        let statements = doc["Statement"].as_array().unwrap();
        let on = |action: &str| -> Value {
            statements
                .iter()
                .find(|s| s["Action"] == action)
                .map(|s| s["Resource"].clone())
                .unwrap_or(Value::Null)
        };
        // The JSON key is not part of what IAM names; two secrets, one statement.
        assert_eq!(
            on("secretsmanager:GetSecretValue"),
            json!([
                "arn:aws:secretsmanager:eu-west-1:123456789012:secret:prod/db-AbCdEf",
                "arn:aws:secretsmanager:eu-west-1:123456789012:secret:token-x1Y2z3"
            ])
        );
        // A name becomes the parameter's ARN in the stack's region and account.
        assert_eq!(
            on("ssm:GetParameters"),
            json!([
                "arn:aws:ssm:eu-west-1:123456789012:parameter/prod/api-key",
                "arn:aws:ssm:us-east-1:123456789012:parameter/shared/key"
            ])
        );
        assert!(
            !doc.to_string()
                .contains("\"*\",\"Action\":\"secretsmanager")
        );
        assert_eq!(statements.len(), 4, "{doc}");
    }

    #[test]
    fn roles_trust_ecs_for_the_stack_s_account_only() {
        let trust = trust_policy(TASKS_PRINCIPAL, "123456789012");
        assert_eq!(
            trust["Statement"][0]["Condition"]["StringEquals"]["aws:SourceAccount"],
            "123456789012"
        );
        assert_eq!(
            trust["Statement"][0]["Principal"]["Service"],
            TASKS_PRINCIPAL
        );
    }
}
