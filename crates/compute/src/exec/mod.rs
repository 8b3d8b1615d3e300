//! Carrying out the steps of a plan against IAM, ECS, CloudWatch Logs and Application Auto
//! Scaling, with the retries AWS needs (IAM propagation, service draining, concurrent updates).

use std::future::Future;

use aws_sdk_applicationautoscaling::types::{
    MetricType, PolicyType, PredefinedMetricSpecification, ScalableDimension, ServiceNamespace,
    TargetTrackingScalingPolicyConfiguration,
};
use aws_sdk_ecs::error::SdkError;
use aws_sdk_ecs::types::{
    AssignPublicIp, AvailabilityZoneRebalancing, AwsVpcConfiguration, ClusterSetting,
    ClusterSettingName, Compatibility, ContainerDefinition, CpuArchitecture,
    DeploymentCircuitBreaker, DeploymentConfiguration, HealthCheck, KeyValuePair, LaunchType,
    LoadBalancer, LogConfiguration, LogDriver, NetworkConfiguration, NetworkMode, OsFamily,
    PortMapping, PropagateTags, RuntimePlatform, TransportProtocol,
};
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use infra::{Backoff, Context, Step};

use crate::Clients;
use crate::desired::{
    CLUSTER, DEPLOYMENT, DIMENSION, Desired, LOG_GROUP, Observed, Op, RoleKind, SCALING, SERVICE,
    TASK_DEFINITION,
};
use crate::error::Error;
use crate::observe::arn_name;
use infra::{aws, built, waited};

mod service;

use service::{
    create_service, insights, put_policy, put_retention, register_task_definition, update_service,
    wait_service_inactive,
};

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

pub(crate) async fn run(
    clients: &Clients,
    cx: &Context,
    desired: &Desired,
    ops: &[Op],
    mut ids: Ids,
) -> Result<Ids, Error> {
    let changes = crate::desired::changes(&desired.names, ops);
    for (op, change) in ops.iter().zip(changes) {
        infra::reported(
            cx.progress(),
            change.as_slice(),
            Box::pin(step(clients, cx, desired, op, &mut ids)),
        )
        .await?;
    }
    Ok(ids)
}

fn ecs_tags(tags: &std::collections::BTreeMap<String, String>) -> Vec<aws_sdk_ecs::types::Tag> {
    tags.iter()
        .map(|(k, v)| aws_sdk_ecs::types::Tag::builder().key(k).value(v).build())
        .collect()
}

async fn step(
    clients: &Clients,
    cx: &Context,
    d: &Desired,
    op: &Op,
    ids: &mut Ids,
) -> Result<Option<String>, Error> {
    let n = &d.names;
    let (iam, ecs, logs) = (&clients.iam, &clients.ecs, &clients.logs);
    Ok(match op {
        Op::CreateRole(kind) => {
            let name = n.role(*kind);
            let what = format!("IAM role {name}");
            let mut tags = Vec::new();
            for (k, v) in d.tags(kind.logical()) {
                tags.push(
                    aws_sdk_iam::types::Tag::builder()
                        .key(k)
                        .value(v)
                        .build()
                        .map_err(built("CreateRole", &what))?,
                );
            }
            let out = iam
                .create_role()
                .role_name(name)
                .assume_role_policy_document(d.trust(*kind).to_string())
                .description(kind.description())
                .set_tags(Some(tags))
                .send()
                .await
                .map_err(aws("CreateRole", &what))?;
            let arn = out.role().map(|r| r.arn().to_owned()).unwrap_or_default();
            *ids.role_mut(*kind) = Some(arn.clone());
            Some(arn)
        }
        Op::UpdateTrust(kind) => {
            let name = n.role(*kind);
            iam.update_assume_role_policy()
                .role_name(name)
                .policy_document(d.trust(*kind).to_string())
                .send()
                .await
                .map_err(aws("UpdateAssumeRolePolicy", format!("IAM role {name}")))?;
            None
        }
        Op::AttachPolicy(kind, arn) => {
            let name = n.role(*kind);
            iam.attach_role_policy()
                .role_name(name)
                .policy_arn(arn)
                .send()
                .await
                .map_err(aws("AttachRolePolicy", format!("IAM role {name}")))?;
            None
        }
        Op::DetachPolicy(kind, arn) => {
            let name = n.role(*kind);
            iam.detach_role_policy()
                .role_name(name)
                .policy_arn(arn)
                .send()
                .await
                .map_err(aws("DetachRolePolicy", format!("IAM role {name}")))?;
            None
        }
        Op::PutInline(kind, policy) => {
            let name = n.role(*kind);
            let doc = d
                .roles
                .iter()
                .find(|r| r.kind == *kind)
                .and_then(|r| r.inline.get(policy))
                .ok_or_else(|| Error::Missing {
                    kind: "inline policy",
                    name: policy.clone(),
                })?;
            iam.put_role_policy()
                .role_name(name)
                .policy_name(policy)
                .policy_document(doc.to_string())
                .send()
                .await
                .map_err(aws("PutRolePolicy", format!("IAM role {name}")))?;
            None
        }
        Op::DeleteInline(kind, policy) => {
            let name = n.role(*kind);
            iam.delete_role_policy()
                .role_name(name)
                .policy_name(policy)
                .send()
                .await
                .map_err(aws("DeleteRolePolicy", format!("IAM role {name}")))?;
            None
        }
        Op::TagRole(kind, tags) => {
            let name = n.role(*kind);
            let what = format!("IAM role {name}");
            let mut list = Vec::new();
            for (k, v) in tags {
                list.push(
                    aws_sdk_iam::types::Tag::builder()
                        .key(k)
                        .value(v)
                        .build()
                        .map_err(built("TagRole", &what))?,
                );
            }
            iam.tag_role()
                .role_name(name)
                .set_tags(Some(list))
                .send()
                .await
                .map_err(aws("TagRole", &what))?;
            None
        }
        Op::CreateLogGroup => {
            let what = format!("log group {}", n.log_group);
            logs.create_log_group()
                .log_group_name(&n.log_group)
                .set_tags(Some(d.tags(LOG_GROUP).into_iter().collect()))
                .send()
                .await
                .map_err(aws("CreateLogGroup", &what))?;
            put_retention(clients, d).await?;
            Some(n.log_group.clone())
        }
        Op::PutRetention { .. } => {
            put_retention(clients, d).await?;
            None
        }
        Op::TagLogGroup { arn, tags } => {
            logs.tag_resource()
                .resource_arn(arn)
                .set_tags(Some(tags.clone().into_iter().collect()))
                .send()
                .await
                .map_err(aws("TagResource", format!("log group {}", n.log_group)))?;
            None
        }
        Op::CreateCluster => {
            let out = ecs
                .create_cluster()
                .cluster_name(&n.cluster)
                .settings(insights(d))
                .set_tags(Some(ecs_tags(&d.tags(CLUSTER))))
                .send()
                .await
                .map_err(aws("CreateCluster", format!("ECS cluster {}", n.cluster)))?;
            let arn = out
                .cluster()
                .and_then(|c| c.cluster_arn())
                .unwrap_or_default()
                .to_owned();
            ids.cluster = Some(arn.clone());
            Some(arn)
        }
        Op::UpdateInsights { .. } => {
            ecs.update_cluster()
                .cluster(&n.cluster)
                .settings(insights(d))
                .send()
                .await
                .map_err(aws("UpdateCluster", format!("ECS cluster {}", n.cluster)))?;
            None
        }
        Op::TagEcs { kind, arn, tags } => {
            ecs.tag_resource()
                .resource_arn(arn)
                .set_tags(Some(ecs_tags(tags)))
                .send()
                .await
                .map_err(aws("TagResource", format!("ECS {} {arn}", kind.logical())))?;
            None
        }
        Op::RegisterTaskDefinition { .. } => {
            let arn = register_task_definition(ecs, d, ids).await?;
            ids.task_definition = Some(arn.clone());
            Some(arn)
        }
        Op::WaitServiceInactive => {
            wait_service_inactive(ecs, cx, d).await?;
            None
        }
        Op::CreateService => {
            let arn = create_service(ecs, cx, d, ids).await?;
            ids.service = Some(arn.clone());
            Some(arn)
        }
        Op::UpdateService { .. } => {
            update_service(ecs, d, ids).await?;
            None
        }
        Op::RegisterTarget { was } => {
            let id = n.resource_id();
            let aas = &clients.scaling;
            let tags = (was.is_none()).then(|| d.tags(SCALING).into_iter().collect());
            serialized(cx, "RegisterScalableTarget", &id, &[], || {
                aas.register_scalable_target()
                    .service_namespace(ServiceNamespace::Ecs)
                    .resource_id(&id)
                    .scalable_dimension(ScalableDimension::EcsServiceDesiredCount)
                    .min_capacity(d.min)
                    .max_capacity(d.max)
                    .set_tags(tags.clone())
                    .send()
            })
            .await?;
            Some(id)
        }
        Op::PutPolicy { name, .. } => {
            put_policy(clients, cx, d, name).await?;
            Some(name.clone())
        }
        Op::DeletePolicy { name } => {
            let id = n.resource_id();
            let aas = &clients.scaling;
            serialized(
                cx,
                "DeleteScalingPolicy",
                name,
                &["ObjectNotFoundException"],
                || {
                    aas.delete_scaling_policy()
                        .policy_name(name)
                        .service_namespace(ServiceNamespace::Ecs)
                        .resource_id(&id)
                        .scalable_dimension(ScalableDimension::EcsServiceDesiredCount)
                        .send()
                },
            )
            .await?;
            None
        }
        Op::DeregisterTarget => {
            let id = n.resource_id();
            let aas = &clients.scaling;
            serialized(
                cx,
                "DeregisterScalableTarget",
                &id,
                &["ObjectNotFoundException"],
                || {
                    aas.deregister_scalable_target()
                        .service_namespace(ServiceNamespace::Ecs)
                        .resource_id(&id)
                        .scalable_dimension(ScalableDimension::EcsServiceDesiredCount)
                        .send()
                },
            )
            .await?;
            None
        }
        Op::ScaleToZero { .. } => {
            ecs.update_service()
                .cluster(&n.cluster)
                .service(&n.service)
                .desired_count(0)
                .send()
                .await
                .map_err(aws("UpdateService", format!("ECS service {}", n.service)))?;
            None
        }
        Op::DeleteService => {
            delete(
                cx,
                "DeleteService",
                &format!("ECS service {}", n.service),
                &["ServiceNotFoundException", "ServiceNotActiveException"],
                &[],
                || {
                    ecs.delete_service()
                        .cluster(&n.cluster)
                        .service(&n.service)
                        .send()
                },
            )
            .await?;
            None
        }
        Op::DeregisterTaskDefinition { arn } => {
            delete(cx, "DeregisterTaskDefinition", arn, &[], &[], || {
                ecs.deregister_task_definition().task_definition(arn).send()
            })
            .await?;
            None
        }
        Op::DeleteTaskDefinitions { arns, .. } => {
            for chunk in arns.chunks(10) {
                let out = ecs
                    .delete_task_definitions()
                    .set_task_definitions(Some(chunk.to_vec()))
                    .send()
                    .await
                    .map_err(aws(
                        "DeleteTaskDefinitions",
                        format!("task definitions {}", n.family),
                    ))?;
                // A revision deleted meanwhile is gone, as asked; any other failure is not.
                if let Some(f) = out
                    .failures()
                    .iter()
                    .find(|f| !f.reason().is_some_and(|r| r.contains("does not exist")))
                {
                    return Err(Error::Unexpected {
                        operation: "DeleteTaskDefinitions",
                        resource: f.arn().unwrap_or(&n.family).to_owned(),
                        detail: format!(
                            "the revision was not deleted: {}",
                            f.reason().unwrap_or("no reason given")
                        ),
                    });
                }
            }
            None
        }
        Op::DeleteCluster => {
            delete(
                cx,
                "DeleteCluster",
                &format!("ECS cluster {}", n.cluster),
                &["ClusterNotFoundException"],
                &[
                    "ClusterContainsServicesException",
                    "ClusterContainsTasksException",
                    "UpdateInProgressException",
                ],
                || ecs.delete_cluster().cluster(&n.cluster).send(),
            )
            .await?;
            None
        }
        Op::DeleteLogGroup => {
            delete(
                cx,
                "DeleteLogGroup",
                &format!("log group {}", n.log_group),
                &["ResourceNotFoundException"],
                &[],
                || logs.delete_log_group().log_group_name(&n.log_group).send(),
            )
            .await?;
            None
        }
        Op::DeleteRole {
            kind,
            managed,
            inline,
        } => {
            let name = n.role(*kind);
            let what = format!("IAM role {name}");
            for arn in managed {
                delete(
                    cx,
                    "DetachRolePolicy",
                    &what,
                    &["NoSuchEntity"],
                    &[],
                    || {
                        iam.detach_role_policy()
                            .role_name(name)
                            .policy_arn(arn)
                            .send()
                    },
                )
                .await?;
            }
            for policy in inline {
                delete(
                    cx,
                    "DeleteRolePolicy",
                    &what,
                    &["NoSuchEntity"],
                    &[],
                    || {
                        iam.delete_role_policy()
                            .role_name(name)
                            .policy_name(policy)
                            .send()
                    },
                )
                .await?;
            }
            delete(
                cx,
                "DeleteRole",
                &what,
                &["NoSuchEntity"],
                &["DeleteConflict"],
                || iam.delete_role().role_name(name).send(),
            )
            .await?;
            None
        }
    })
}
