//! The load generators' task definition: family `{stack}-loadgen`, one Fargate container that
//! runs the stackproof command line's `loadgen` command (the load engine of a local run) from
//! the image `{registry}/{stack}/loadgen`, logging to the service's log group under the prefix
//! `loadgen`. A distributed load test starts its generators from it with RunTask.
//!
//! [`ensure`] registers a revision only when the newest active one differs from what is wanted
//! (image, size, roles, log group), so a run after a run reuses it; [`remove`] deregisters
//! every revision of the family (the stack's destroy calls it, and [`remove_role`]).
//!
//! The generators have a task role of their own, `{stack}-loadgen` ([`ensure_role`]): ECS tasks
//! may assume it only on behalf of the stack's account, and its one policy lets them read and
//! write the run's objects under `loadtest/` of the log bucket (and list that prefix, so a
//! missing object reads as missing, not as denied), nothing else: the service's task role
//! gets no S3 access for them.

use aws_sdk_ecs::types::{
    Compatibility, ContainerDefinition, LogConfiguration, LogDriver, NetworkMode,
    TaskDefinitionStatus,
};
use infra::{Context, aws, built};

use crate::ComputeOutputs;
use crate::error::Error;

/// The module tag value of the generators' task definition.
const MODULE: &str = "compute";

/// The generators' task role's name: `{stack}-loadgen`.
pub fn role_name(cx: &Context) -> String {
    format!("{}-loadgen", cx.stack().as_str())
}

/// The generators' role's one policy: the run's objects under `loadtest/` of `bucket`.
pub fn role_policy(region: &str, bucket: &str) -> serde_json::Value {
    let p = crate::desired::partition(region);
    serde_json::json!({
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Action": ["s3:GetObject", "s3:PutObject"],
                "Resource": format!("arn:{p}:s3:::{bucket}/loadtest/*")
            },
            {
                "Effect": "Allow",
                "Action": "s3:ListBucket",
                "Resource": format!("arn:{p}:s3:::{bucket}"),
                "Condition": {"StringLike": {"s3:prefix": "loadtest/*"}}
            }
        ]
    })
}

/// Makes the generators' task role when it is missing and puts its one policy (for `bucket`);
/// returns its ARN.
pub async fn ensure_role(
    iam: &aws_sdk_iam::Client,
    cx: &Context,
    account: &str,
    bucket: &str,
) -> Result<String, Error> {
    let name = role_name(cx);
    let what = format!("IAM role {name}");
    let arn = match iam.get_role().role_name(&name).send().await {
        Ok(out) => out.role().map(|r| r.arn().to_owned()),
        Err(e)
            if e.as_service_error()
                .is_some_and(|s| s.is_no_such_entity_exception()) =>
        {
            None
        }
        Err(e) => return Err(aws("GetRole", &what)(e).into()),
    };
    let arn = match arn {
        Some(arn) => arn,
        None => {
            let trust = crate::desired::trust_policy("ecs-tasks.amazonaws.com", account);
            let tags: Vec<aws_sdk_iam::types::Tag> = cx
                .tags(MODULE, &name)
                .into_iter()
                .filter_map(|(k, v)| {
                    aws_sdk_iam::types::Tag::builder()
                        .key(k)
                        .value(v)
                        .build()
                        .ok()
                })
                .collect();
            let out = iam
                .create_role()
                .role_name(&name)
                .assume_role_policy_document(trust.to_string())
                .description("stackproof load generators: the run's objects in S3 only")
                .set_tags(Some(tags))
                .send()
                .await
                .map_err(aws("CreateRole", &what))?;
            out.role().map(|r| r.arn().to_owned()).unwrap_or_default()
        }
    };
    iam.put_role_policy()
        .role_name(&name)
        .policy_name(&name)
        .policy_document(role_policy(cx.region(), bucket).to_string())
        .send()
        .await
        .map_err(aws("PutRolePolicy", &what))?;
    Ok(arn)
}

/// Deletes the generators' task role (and its policy); `false` when there was none.
pub async fn remove_role(iam: &aws_sdk_iam::Client, cx: &Context) -> Result<bool, Error> {
    let name = role_name(cx);
    let what = format!("IAM role {name}");
    match iam
        .delete_role_policy()
        .role_name(&name)
        .policy_name(&name)
        .send()
        .await
    {
        Ok(_) => {}
        Err(e) if infra::error_code(&e) == Some("NoSuchEntity") => {}
        Err(e) => return Err(aws("DeleteRolePolicy", &what)(e).into()),
    }
    match iam.delete_role().role_name(&name).send().await {
        Ok(_) => Ok(true),
        Err(e) if infra::error_code(&e) == Some("NoSuchEntity") => Ok(false),
        Err(e) => Err(aws("DeleteRole", &what)(e).into()),
    }
}

/// The container's name.
pub const CONTAINER: &str = "loadgen";

/// What the generators' task definition is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadgenTask {
    /// `{stack}-loadgen`.
    pub family: String,
    /// The image: a stackproof build whose entry point is the `stackproof` binary.
    pub image: String,
    /// Task CPU units (Fargate: 1024 = one vCPU).
    pub cpu: u32,
    /// Task memory, MiB.
    pub memory: u32,
    /// The execution role (image pull, logs).
    pub execution_role_arn: String,
    /// The task role (the generators' own, [`ensure_role`]: they write their results to S3
    /// with it).
    pub task_role_arn: String,
    /// The log group (the service's).
    pub log_group: String,
    /// The region (for the awslogs driver).
    pub region: String,
}

impl LoadgenTask {
    /// The stack's generators: one vCPU and 2 GiB each (one engine thread per vCPU sustains
    /// far more than a generator's share here), the stack's execution role and log group, the
    /// task role `task_role_arn` ([`ensure_role`]'s), the image
    /// `{registry}/{stack}/loadgen:latest` of the registry that holds the service's image.
    pub fn for_stack(
        cx: &Context,
        compute: &ComputeOutputs,
        registry: &str,
        task_role_arn: &str,
    ) -> LoadgenTask {
        let stack = cx.stack().as_str();
        LoadgenTask {
            family: format!("{stack}-loadgen"),
            image: format!("{registry}/{stack}/loadgen:latest"),
            cpu: 1024,
            memory: 2048,
            execution_role_arn: compute.execution_role_arn.clone(),
            task_role_arn: task_role_arn.to_owned(),
            log_group: compute.log_group_name.clone(),
            region: cx.region().to_owned(),
        }
    }

    /// Whether a registered revision is this task definition.
    fn matches(&self, td: &aws_sdk_ecs::types::TaskDefinition) -> bool {
        let c = td.container_definitions().first();
        let log = c
            .and_then(|c| c.log_configuration())
            .map(|l| l.options().cloned().unwrap_or_default())
            .unwrap_or_default();
        c.and_then(|c| c.image()) == Some(self.image.as_str())
            && td.cpu() == Some(self.cpu.to_string().as_str())
            && td.memory() == Some(self.memory.to_string().as_str())
            && td.execution_role_arn() == Some(self.execution_role_arn.as_str())
            && td.task_role_arn() == Some(self.task_role_arn.as_str())
            && log.get("awslogs-group") == Some(&self.log_group)
    }
}

/// The ARN of the newest active revision of the generators' task definition, registered first
/// when there is none or it differs from `task`.
pub async fn ensure(
    ecs: &aws_sdk_ecs::Client,
    cx: &Context,
    task: &LoadgenTask,
) -> Result<String, Error> {
    let what = format!("task definition family {}", task.family);
    match ecs
        .describe_task_definition()
        .task_definition(&task.family)
        .send()
        .await
    {
        Ok(out) => {
            let same = out
                .task_definition()
                .filter(|td| td.status() == Some(&TaskDefinitionStatus::Active) && task.matches(td))
                .and_then(|td| td.task_definition_arn());
            if let Some(arn) = same {
                return Ok(arn.to_owned());
            }
        }
        // No revision yet (ClientException "Unable to describe task definition").
        Err(e) if e.as_service_error().is_some() => {}
        Err(e) => return Err(aws("DescribeTaskDefinition", &what)(e).into()),
    }
    let log = LogConfiguration::builder()
        .log_driver(LogDriver::Awslogs)
        .options("awslogs-group", &task.log_group)
        .options("awslogs-region", &task.region)
        .options("awslogs-stream-prefix", CONTAINER)
        .build()
        .map_err(built("RegisterTaskDefinition", &what))?;
    let container = ContainerDefinition::builder()
        .name(CONTAINER)
        .image(&task.image)
        .essential(true)
        // Container-level memory too: moto's RunTask needs it (Fargate does not).
        .memory(i32::try_from(task.memory).unwrap_or(i32::MAX))
        .log_configuration(log)
        .build();
    let out = ecs
        .register_task_definition()
        .family(&task.family)
        .network_mode(NetworkMode::Awsvpc)
        .requires_compatibilities(Compatibility::Fargate)
        .cpu(task.cpu.to_string())
        .memory(task.memory.to_string())
        .execution_role_arn(&task.execution_role_arn)
        .task_role_arn(&task.task_role_arn)
        .container_definitions(container)
        .set_tags(Some(crate::exec::ecs_tags(&cx.tags(MODULE, &task.family))))
        .send()
        .await
        .map_err(aws("RegisterTaskDefinition", &what))?;
    crate::exec::registered_arn(&out, what)
}

/// Deregisters every active revision of the stack's generators' task definition (none is an
/// answer too); returns how many.
pub async fn remove(ecs: &aws_sdk_ecs::Client, cx: &Context) -> Result<usize, Error> {
    let family = format!("{}-loadgen", cx.stack().as_str());
    let what = format!("task definition family {family}");
    let mut arns = Vec::new();
    let mut token = None;
    // 100 revisions a page; a family of more than 10,000 revisions is not this stack's.
    for _ in 0..100 {
        let out = ecs
            .list_task_definitions()
            .family_prefix(&family)
            .status(TaskDefinitionStatus::Active)
            .set_next_token(token)
            .send()
            .await
            .map_err(aws("ListTaskDefinitions", &what))?;
        arns.extend(
            out.task_definition_arns()
                .iter()
                // The prefix also matches `{family}-other`: keep the family's own.
                .filter(|a| a.contains(&format!("task-definition/{family}:")))
                .cloned(),
        );
        token = out.next_token().map(str::to_owned);
        if token.is_none() {
            break;
        }
    }
    for arn in &arns {
        ecs.deregister_task_definition()
            .task_definition(arn)
            .send()
            .await
            .map_err(aws("DeregisterTaskDefinition", arn))?;
    }
    Ok(arns.len())
}
