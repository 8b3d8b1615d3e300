//! Carrying out the steps of a plan against IAM, ECS, CloudWatch Logs and Application Auto
//! Scaling, with the retries AWS needs (IAM propagation, service draining, concurrent updates).

use std::future::Future;

use aws_sdk_ecs::error::SdkError;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use infra::{Backoff, Context};

use crate::Clients;
use crate::desired::{Desired, Observed, Op, RoleKind};
use crate::error::Error;
use infra::waited;

mod cluster;
mod log_group;
mod role;
mod scaling;
mod service;
mod task_definition;

/// The ARNs of the stack's compute resources: those that existed, then those created.
#[derive(Debug, Default, Clone)]
pub(crate) struct Ids {
    pub(crate) execution_role: Option<String>,
    pub(crate) task_role: Option<String>,
    pub(crate) fault_role: Option<String>,
    pub(crate) cluster: Option<String>,
    pub(crate) task_definition: Option<String>,
    pub(crate) service: Option<String>,
}

impl Ids {
    pub(crate) fn from_observed(o: &Observed) -> Ids {
        Ids {
            execution_role: o.roles.get(&RoleKind::Execution).map(|r| r.arn.clone()),
            task_role: o.roles.get(&RoleKind::Task).map(|r| r.arn.clone()),
            fault_role: o.roles.get(&RoleKind::Fault).map(|r| r.arn.clone()),
            cluster: o
                .cluster
                .as_ref()
                .filter(|c| c.status != "INACTIVE")
                .map(|c| c.arn.clone()),
            task_definition: o.task_definition.as_ref().map(|t| t.arn.clone()),
            service: o
                .service
                .as_ref()
                .filter(|s| s.status == "ACTIVE")
                .map(|s| s.arn.clone()),
        }
    }

    fn role_mut(&mut self, kind: RoleKind) -> &mut Option<String> {
        match kind {
            RoleKind::Execution => &mut self.execution_role,
            RoleKind::Task => &mut self.task_role,
            RoleKind::Fault => &mut self.fault_role,
        }
    }

    fn role(&self, kind: RoleKind) -> &Option<String> {
        match kind {
            RoleKind::Execution => &self.execution_role,
            RoleKind::Task => &self.task_role,
            RoleKind::Fault => &self.fault_role,
        }
    }
}

pub(crate) fn need<'a>(
    id: &'a Option<String>,
    kind: &'static str,
    name: &str,
) -> Result<&'a str, Error> {
    id.as_deref().ok_or_else(|| Error::Missing {
        kind,
        name: name.to_owned(),
    })
}

/// ECS says this while the roles it is given are not visible to it yet (IAM propagation).
pub(crate) fn is_role_propagation(code: Option<&str>, message: Option<&str>) -> bool {
    code == Some("InvalidParameterException")
        && message.is_some_and(|m| m.to_ascii_lowercase().contains("unable to assume"))
}

/// Runs an Application Auto Scaling write, retrying `ConcurrentUpdateException` (the scalable
/// target is being changed by someone else, or by our previous call).
pub(crate) async fn serialized<T, E, F, Fut>(
    cx: &Context,
    operation: &'static str,
    resource: &str,
    ok_codes: &[&str],
    call: F,
) -> Result<Option<T>, Error>
where
    E: std::error::Error + ProvideErrorMetadata + std::fmt::Debug + Send + Sync + 'static,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, SdkError<E>>>,
{
    match Backoff::consistency(cx.waits())
        .retry_codes(
            format!("{operation} {resource}"),
            &["ConcurrentUpdateException"],
            call,
        )
        .await
    {
        Ok(v) => Ok(Some(v)),
        Err(infra::WaitError::Failed(e)) if e.code().is_some_and(|c| ok_codes.contains(&c)) => {
            Ok(None)
        }
        Err(e) => Err(waited(operation, resource)(e).into()),
    }
}

/// A delete that counts "already gone" as done and retries while dependencies linger.
async fn delete<T, E, F, Fut>(
    cx: &Context,
    operation: &'static str,
    resource: &str,
    gone: &[&str],
    retry: &[&str],
    call: F,
) -> Result<(), Error>
where
    E: std::error::Error + ProvideErrorMetadata + std::fmt::Debug + Send + Sync + 'static,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, SdkError<E>>>,
{
    match Backoff::dependency(cx.waits())
        .retry_codes(format!("{operation} {resource}"), retry, call)
        .await
    {
        Ok(_) => Ok(()),
        Err(infra::WaitError::Failed(e)) if e.code().is_some_and(|c| gone.contains(&c)) => Ok(()),
        Err(e) => Err(waited(operation, resource)(e).into()),
    }
}

/// What compute's steps carry from one to the next: the desired shapes they make (for a
/// destroy, whose steps use only names, shapes from placeholder inputs) and the ARNs found or
/// made.
#[derive(Debug)]
pub struct Run {
    pub(crate) desired: Desired,
    pub(crate) ids: Ids,
}

/// The ARN of the revision a RegisterTaskDefinition made (`what` names the family).
pub(crate) fn registered_arn(
    out: &aws_sdk_ecs::operation::register_task_definition::RegisterTaskDefinitionOutput,
    what: String,
) -> Result<String, Error> {
    out.task_definition()
        .and_then(|t| t.task_definition_arn())
        .map(str::to_owned)
        .ok_or_else(|| Error::Unexpected {
            operation: "RegisterTaskDefinition",
            resource: what,
            detail: "no task definition ARN in the answer".to_owned(),
        })
}

pub(crate) fn ecs_tags(
    tags: &std::collections::BTreeMap<String, String>,
) -> Vec<aws_sdk_ecs::types::Tag> {
    tags.iter()
        .map(|(k, v)| aws_sdk_ecs::types::Tag::builder().key(k).value(v).build())
        .collect()
}

/// Carries out one step.
pub(crate) async fn step(
    clients: &Clients,
    cx: &Context,
    op: &Op,
    run: &mut Run,
) -> Result<Option<String>, Error> {
    let Run { desired: d, ids } = run;
    let d = &*d;
    let (iam, ecs, logs) = (&clients.iam, &clients.ecs, &clients.logs);
    match op {
        Op::CreateRole(kind) => role::create(iam, d, *kind, ids).await,
        Op::UpdateTrust(kind) => role::update_trust(iam, d, *kind).await,
        Op::AttachPolicy(kind, arn) => role::attach(iam, d, *kind, arn).await,
        Op::DetachPolicy(kind, arn) => role::detach(iam, d, *kind, arn).await,
        Op::PutInline(kind, policy) => role::put_inline(iam, d, *kind, policy).await,
        Op::DeleteInline(kind, policy) => role::delete_inline(iam, d, *kind, policy).await,
        Op::TagRole(kind, tags) => role::tag(iam, d, *kind, tags).await,
        Op::DeleteRole {
            kind,
            managed,
            inline,
        } => role::delete_role(iam, cx, d, *kind, managed, inline).await,
        Op::CreateLogGroup => log_group::create(clients, d).await,
        Op::PutRetention { .. } => service::put_retention(clients, d).await.map(|()| None),
        Op::TagLogGroup { arn, tags } => log_group::tag(logs, d, arn, tags).await,
        Op::DeleteLogGroup => log_group::delete_log_group(logs, cx, d).await,
        Op::CreateCluster => cluster::create(ecs, d, ids).await,
        Op::UpdateInsights { .. } => cluster::update_insights(ecs, d).await,
        Op::TagEcs { kind, arn, tags } => cluster::tag(ecs, *kind, arn, tags).await,
        Op::DeleteCluster => cluster::delete_cluster(ecs, cx, d).await,
        Op::RegisterTaskDefinition { .. } => {
            let arn = service::register_task_definition(ecs, d, ids).await?;
            ids.task_definition = Some(arn.clone());
            Ok(Some(arn))
        }
        Op::DeregisterTaskDefinition { arn } => task_definition::deregister(ecs, cx, arn).await,
        Op::DeleteTaskDefinitions { arns, .. } => {
            task_definition::delete_revisions(ecs, d, arns).await
        }
        Op::WaitServiceInactive => service::wait_service_inactive(ecs, cx, d)
            .await
            .map(|()| None),
        Op::CreateService => {
            let arn = service::create_service(ecs, cx, d, ids).await?;
            ids.service = Some(arn.clone());
            Ok(Some(arn))
        }
        Op::UpdateService { .. } => service::update_service(ecs, d, ids).await.map(|()| None),
        Op::ScaleToZero { .. } => service::scale_to_zero(ecs, d).await.map(|()| None),
        Op::DeleteService => service::delete_service(ecs, cx, d).await.map(|()| None),
        Op::RegisterTarget { was } => scaling::register_target(clients, cx, d, *was).await,
        Op::PutPolicy { name, .. } => {
            service::put_policy(clients, cx, d, name).await?;
            Ok(Some(name.clone()))
        }
        Op::DeletePolicy { name } => scaling::delete_policy(clients, cx, d, name).await,
        Op::DeregisterTarget => scaling::deregister_target(clients, cx, d).await,
    }
}
