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
use infra::{Backoff, Context, Event, Step};
use tokio::time::Instant;

use crate::Clients;
use crate::desired::{
    CLUSTER, DEPLOYMENT, DIMENSION, Desired, LOG_GROUP, Observed, Op, RoleKind, SCALING, SERVICE,
    TASK_DEFINITION, trust_policy,
};
use crate::error::{Error, aws, waited};
use crate::observe::arn_name;

/// The ARNs of the stack's compute resources: those that existed, then those created.
#[derive(Debug, Default, Clone)]
pub(crate) struct Ids {
    pub(crate) execution_role: Option<String>,
    pub(crate) task_role: Option<String>,
    pub(crate) cluster: Option<String>,
    pub(crate) task_definition: Option<String>,
    pub(crate) service: Option<String>,
}

impl Ids {
    pub(crate) fn from_observed(o: &Observed) -> Ids {
        Ids {
            execution_role: o.roles.get(&RoleKind::Execution).map(|r| r.arn.clone()),
            task_role: o.roles.get(&RoleKind::Task).map(|r| r.arn.clone()),
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

    fn role(&self, kind: RoleKind) -> &Option<String> {
        match kind {
            RoleKind::Execution => &self.execution_role,
            RoleKind::Task => &self.task_role,
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

fn built<E: std::fmt::Display>(operation: &'static str, resource: &str) -> impl FnOnce(E) -> Error {
    move |e| Error::Unexpected {
        operation,
        resource: resource.to_owned(),
        detail: format!("could not build the request: {e}"),
    }
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
        Err(e) => Err(waited(operation, resource)(e)),
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
        Err(e) => Err(waited(operation, resource)(e)),
    }
}

pub(crate) async fn run(
    clients: &Clients,
    cx: &Context,
    desired: &Desired,
    ops: &[Op],
    mut ids: Ids,
) -> Result<Ids, Error> {
    for op in ops {
        let change = op.change(&desired.names);
        if let Some(change) = &change {
            cx.progress().on(&Event::Started(change));
        }
        let start = Instant::now();
        let id = Box::pin(step(clients, cx, desired, op, &mut ids)).await?;
        if let Some(change) = &change {
            cx.progress().on(&Event::Finished {
                change,
                id: id.as_deref(),
                elapsed: start.elapsed(),
            });
        }
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
                .assume_role_policy_document(trust_policy().to_string())
                .description(match kind {
                    RoleKind::Execution => "stackproof: lets ECS pull the image and write logs",
                    RoleKind::Task => "stackproof: the application's role",
                })
                .set_tags(Some(tags))
                .send()
                .await
                .map_err(aws("CreateRole", &what))?;
            let arn = out.role().map(|r| r.arn().to_owned()).unwrap_or_default();
            match kind {
                RoleKind::Execution => ids.execution_role = Some(arn.clone()),
                RoleKind::Task => ids.task_role = Some(arn.clone()),
            }
            Some(arn)
        }
        Op::UpdateTrust(kind) => {
            let name = n.role(*kind);
            iam.update_assume_role_policy()
                .role_name(name)
                .policy_document(trust_policy().to_string())
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

fn insights(d: &Desired) -> ClusterSetting {
    ClusterSetting::builder()
        .name(ClusterSettingName::ContainerInsights)
        .value(d.insights)
        .build()
}

async fn put_retention(clients: &Clients, d: &Desired) -> Result<(), Error> {
    clients
        .logs
        .put_retention_policy()
        .log_group_name(&d.names.log_group)
        .retention_in_days(d.retention)
        .send()
        .await
        .map_err(aws(
            "PutRetentionPolicy",
            format!("log group {}", d.names.log_group),
        ))?;
    Ok(())
}

/// The RegisterTaskDefinition request for what `d` wants, with the roles' ARNs.
pub(crate) async fn register_task_definition(
    ecs: &aws_sdk_ecs::Client,
    d: &Desired,
    ids: &Ids,
) -> Result<String, Error> {
    let what = format!("task definition family {}", d.names.family);
    let t = &d.task;
    let execution = need(
        ids.role(RoleKind::Execution),
        "IAM role",
        &d.names.execution_role,
    )?;
    let task_role = need(ids.role(RoleKind::Task), "IAM role", &d.names.task_role)?;
    let mut containers = Vec::new();
    for c in &t.containers {
        let log = LogConfiguration::builder()
            .log_driver(LogDriver::from(
                c.log_driver.as_deref().unwrap_or("awslogs"),
            ))
            .set_options(Some(c.log_options.clone().into_iter().collect()))
            .build()
            .map_err(built("RegisterTaskDefinition", &what))?;
        let health = match &c.health {
            Some(h) => Some(
                HealthCheck::builder()
                    .set_command(Some(h.command.clone()))
                    .interval(h.interval)
                    .timeout(h.timeout)
                    .retries(h.retries)
                    .start_period(h.start_period)
                    .build()
                    .map_err(built("RegisterTaskDefinition", &what))?,
            ),
            None => None,
        };
        containers.push(
            ContainerDefinition::builder()
                .name(&c.name)
                .image(&c.image)
                .essential(c.essential)
                .set_port_mappings(Some(
                    c.ports
                        .iter()
                        .map(|(port, proto)| {
                            PortMapping::builder()
                                .container_port(*port)
                                .protocol(TransportProtocol::from(proto.as_str()))
                                .build()
                        })
                        .collect(),
                ))
                .set_environment(Some(
                    c.environment
                        .iter()
                        .map(|(k, v)| KeyValuePair::builder().name(k).value(v).build())
                        .collect(),
                ))
                .set_health_check(health)
                .log_configuration(log)
                .readonly_root_filesystem(c.read_only)
                .build(),
        );
    }
    let out = ecs
        .register_task_definition()
        .family(&d.names.family)
        .network_mode(NetworkMode::from(t.network_mode.as_str()))
        .set_requires_compatibilities(Some(
            t.compatibilities
                .iter()
                .map(|c| Compatibility::from(c.as_str()))
                .collect(),
        ))
        .cpu(&t.cpu)
        .memory(&t.memory)
        .runtime_platform(
            RuntimePlatform::builder()
                .operating_system_family(OsFamily::from(t.os.as_str()))
                .cpu_architecture(CpuArchitecture::from(t.arch.as_str()))
                .build(),
        )
        .execution_role_arn(execution)
        .task_role_arn(task_role)
        .set_container_definitions(Some(containers))
        .set_tags(Some(ecs_tags(&d.tags(TASK_DEFINITION))))
        .send()
        .await
        .map_err(aws("RegisterTaskDefinition", &what))?;
    out.task_definition()
        .and_then(|t| t.task_definition_arn())
        .map(str::to_owned)
        .ok_or_else(|| Error::Unexpected {
            operation: "RegisterTaskDefinition",
            resource: what,
            detail: "no task definition ARN".to_owned(),
        })
}

fn network(d: &Desired) -> Result<NetworkConfiguration, Error> {
    let vpc = AwsVpcConfiguration::builder()
        .set_subnets(Some(d.service.subnets.iter().cloned().collect()))
        .set_security_groups(Some(d.service.security_groups.iter().cloned().collect()))
        .assign_public_ip(AssignPublicIp::Disabled)
        .build()
        .map_err(built("CreateService", &d.names.service))?;
    Ok(NetworkConfiguration::builder()
        .awsvpc_configuration(vpc)
        .build())
}

fn load_balancers(d: &Desired) -> Vec<LoadBalancer> {
    d.service
        .load_balancers
        .iter()
        .map(|(tg, container, port)| {
            LoadBalancer::builder()
                .target_group_arn(tg)
                .container_name(container)
                .container_port(*port)
                .build()
        })
        .collect()
}

fn deployment() -> DeploymentConfiguration {
    DeploymentConfiguration::builder()
        .deployment_circuit_breaker(
            DeploymentCircuitBreaker::builder()
                .enable(DEPLOYMENT.circuit_breaker)
                .rollback(DEPLOYMENT.rollback)
                .build(),
        )
        .minimum_healthy_percent(DEPLOYMENT.min_healthy)
        .maximum_percent(DEPLOYMENT.max_percent)
        .build()
}

/// An idempotency token for CreateService: the same for a retry of the same creation, another
/// one for a later creation (which uses a later task definition revision).
pub(crate) fn client_token(stack: &str, task_definition: &str) -> String {
    let revision = arn_name(task_definition)
        .rsplit_once(':')
        .map(|(_, r)| r.to_owned())
        .unwrap_or_default();
    let mut token = format!("{stack}-r{revision}");
    token.truncate(36);
    token
}

/// CreateService, retried while ECS cannot assume the brand-new roles yet.
pub(crate) async fn create_service(
    ecs: &aws_sdk_ecs::Client,
    cx: &Context,
    d: &Desired,
    ids: &Ids,
) -> Result<String, Error> {
    let n = &d.names;
    let what = format!("ECS service {}", n.service);
    let task_definition = need(&ids.task_definition, "task definition", &n.family)?;
    let network = network(d)?;
    let deployment = deployment();
    let token = client_token(&n.stack, task_definition);
    let out = Backoff::consistency(cx.waits())
        .run(format!("CreateService {what}"), || {
            let fut = ecs
                .create_service()
                .cluster(&n.cluster)
                .service_name(&n.service)
                .task_definition(task_definition)
                .launch_type(LaunchType::Fargate)
                .desired_count(d.desired_count)
                .network_configuration(network.clone())
                .set_load_balancers(Some(load_balancers(d)))
                .deployment_configuration(deployment.clone())
                .health_check_grace_period_seconds(d.grace)
                .availability_zone_rebalancing(AvailabilityZoneRebalancing::Enabled)
                .propagate_tags(PropagateTags::Service)
                .enable_ecs_managed_tags(true)
                .set_tags(Some(ecs_tags(&d.tags(SERVICE))))
                .client_token(&token)
                .send();
            async move {
                match fut.await {
                    Ok(out) => Step::Done(out),
                    Err(e) if is_role_propagation(e.code(), e.message()) => Step::Retry(format!(
                        "IAM role not visible to ECS yet: {}",
                        e.message().unwrap_or_default()
                    )),
                    Err(e) => Step::Fail(e),
                }
            }
        })
        .await
        .map_err(waited("CreateService", &what))?;
    Ok(out
        .service()
        .and_then(|s| s.service_arn())
        .unwrap_or_default()
        .to_owned())
}

/// UpdateService with every setting we own, and never the desired count (autoscaling owns it).
pub(crate) async fn update_service(
    ecs: &aws_sdk_ecs::Client,
    d: &Desired,
    ids: &Ids,
) -> Result<(), Error> {
    let n = &d.names;
    let task_definition = need(&ids.task_definition, "task definition", &n.family)?;
    ecs.update_service()
        .cluster(&n.cluster)
        .service(&n.service)
        .task_definition(task_definition)
        .network_configuration(network(d)?)
        .set_load_balancers(Some(load_balancers(d)))
        .deployment_configuration(deployment())
        .health_check_grace_period_seconds(d.grace)
        .availability_zone_rebalancing(AvailabilityZoneRebalancing::Enabled)
        .propagate_tags(PropagateTags::Service)
        .enable_ecs_managed_tags(true)
        .send()
        .await
        .map_err(aws("UpdateService", format!("ECS service {}", n.service)))?;
    Ok(())
}

/// Waits until no service with our name is ACTIVE or DRAINING.
pub(crate) async fn wait_service_inactive(
    ecs: &aws_sdk_ecs::Client,
    cx: &Context,
    d: &Desired,
) -> Result<(), Error> {
    let n = &d.names;
    let what = format!("ECS service {}", n.service);
    Backoff::resource_state(cx.waits())
        .run(format!("wait for {what} to become INACTIVE"), || async {
            match ecs
                .describe_services()
                .cluster(&n.cluster)
                .services(&n.service)
                .send()
                .await
            {
                Ok(out) => match out
                    .services()
                    .iter()
                    .find(|s| s.service_name() == Some(n.service.as_str()))
                    .and_then(|s| s.status())
                {
                    None | Some("INACTIVE") => Step::Done(()),
                    Some(status) => Step::Retry(format!("status {status}")),
                },
                Err(e) if e.code() == Some("ClusterNotFoundException") => Step::Done(()),
                Err(e) => Step::Fail(e),
            }
        })
        .await
        .map_err(waited("DescribeServices", &what))
}

async fn put_policy(clients: &Clients, cx: &Context, d: &Desired, name: &str) -> Result<(), Error> {
    let id = d.names.resource_id();
    let Some(p) = d.policies.get(name) else {
        return Err(Error::Missing {
            kind: "scaling policy",
            name: name.to_owned(),
        });
    };
    let metric = PredefinedMetricSpecification::builder()
        .predefined_metric_type(MetricType::from(p.metric.as_str()))
        .set_resource_label(p.label.clone())
        .build()
        .map_err(built("PutScalingPolicy", name))?;
    let config = TargetTrackingScalingPolicyConfiguration::builder()
        .target_value(p.target)
        .predefined_metric_specification(metric)
        .scale_out_cooldown(p.scale_out_cooldown)
        .scale_in_cooldown(p.scale_in_cooldown)
        .disable_scale_in(false)
        .build()
        .map_err(built("PutScalingPolicy", name))?;
    let aas = &clients.scaling;
    serialized(cx, "PutScalingPolicy", name, &[], || {
        aas.put_scaling_policy()
            .policy_name(name)
            .service_namespace(ServiceNamespace::Ecs)
            .resource_id(&id)
            .scalable_dimension(ScalableDimension::from(DIMENSION))
            .policy_type(PolicyType::TargetTrackingScaling)
            .target_tracking_scaling_policy_configuration(config.clone())
            .send()
    })
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    //! What moto drops or cannot produce, with mocked responses: the settings we send on
    //! CreateService / UpdateService, IAM propagation, draining services, concurrent updates.

    use std::time::Duration;

    use aws_sdk_applicationautoscaling::operation::put_scaling_policy::{
        PutScalingPolicyError, PutScalingPolicyOutput,
    };
    use aws_sdk_ecs::operation::create_service::{CreateServiceError, CreateServiceOutput};
    use aws_sdk_ecs::operation::describe_services::DescribeServicesOutput;
    use aws_sdk_ecs::operation::register_task_definition::RegisterTaskDefinitionOutput;
    use aws_sdk_ecs::operation::update_service::UpdateServiceOutput;
    use aws_sdk_ecs::types::{Service, TaskDefinition};
    use aws_smithy_mocks::{RuleMode, mock, mock_client};
    use aws_smithy_types::error::ErrorMetadata;
    use infra::{StackName, WaitPolicy};

    use super::*;
    use crate::ComputeInputs;
    use crate::config::ComputeConfig;

    fn meta(code: &str, message: &str) -> ErrorMetadata {
        ErrorMetadata::builder().code(code).message(message).build()
    }

    fn cx() -> Context {
        let waits = WaitPolicy {
            eventual_consistency: Duration::from_secs(60),
            dependency: Duration::from_secs(60),
            resource_state: Duration::from_secs(60),
            initial_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(5),
        };
        let sdk = aws_config::SdkConfig::builder()
            .region(aws_config::Region::new("eu-west-1"))
            .build();
        Context::builder(sdk, StackName::new("mock").unwrap())
            .waits(waits)
            .build()
    }

    fn inputs() -> ComputeInputs {
        ComputeInputs {
            private_subnet_ids: vec!["subnet-a".into(), "subnet-b".into()],
            task_security_group_id: "sg-1".into(),
            target_group_arn: "arn:aws:elasticloadbalancing:eu-west-1:1:targetgroup/mock/1".into(),
            load_balancer_arn_suffix: "app/mock/2".into(),
            target_group_arn_suffix: "targetgroup/mock/1".into(),
            container_port: 8080,
            default_image: "1.dkr.ecr.eu-west-1.amazonaws.com/mock/sample-app:latest".into(),
        }
    }

    fn desired(cx: &Context, toml_text: &str) -> Desired {
        let config: ComputeConfig = toml::from_str(toml_text).unwrap();
        Desired::new(cx, &config.validate("service").unwrap(), &inputs())
    }

    fn ids() -> Ids {
        Ids {
            execution_role: Some("arn:aws:iam::1:role/mock-task-execution".into()),
            task_role: Some("arn:aws:iam::1:role/mock-task".into()),
            cluster: Some("arn:aws:ecs:eu-west-1:1:cluster/mock".into()),
            task_definition: Some("arn:aws:ecs:eu-west-1:1:task-definition/mock:4".into()),
            service: None,
        }
    }

    fn created() -> CreateServiceOutput {
        CreateServiceOutput::builder()
            .service(
                Service::builder()
                    .service_arn("arn:aws:ecs:eu-west-1:1:service/mock/mock")
                    .build(),
            )
            .build()
    }

    /// True when the network, load balancer and deployment settings are the ones we promise.
    fn settings_ok(
        network: Option<&NetworkConfiguration>,
        lbs: &[LoadBalancer],
        deployment: Option<&DeploymentConfiguration>,
    ) -> bool {
        let vpc = network.and_then(|n| n.awsvpc_configuration());
        let cb = deployment.and_then(|d| d.deployment_circuit_breaker());
        vpc.is_some_and(|v| {
            v.subnets() == ["subnet-a", "subnet-b"]
                && v.security_groups() == ["sg-1"]
                && v.assign_public_ip() == Some(&AssignPublicIp::Disabled)
        }) && lbs.len() == 1
            && lbs[0].container_name() == Some("app")
            && lbs[0].container_port() == Some(8080)
            && lbs[0].target_group_arn() == Some(inputs().target_group_arn.as_str())
            && cb.is_some_and(|c| c.enable() && c.rollback())
            && deployment.and_then(|d| d.minimum_healthy_percent()) == Some(100)
            && deployment.and_then(|d| d.maximum_percent()) == Some(200)
    }

    #[tokio::test]
    async fn create_service_sends_every_setting_moto_drops() {
        let cx = cx();
        let d = desired(&cx, "health-check-grace-seconds = 90\ndesired-count = 3");
        let rule = mock!(aws_sdk_ecs::Client::create_service)
            .match_requests(|r| {
                r.cluster() == Some("mock")
                    && r.service_name() == Some("mock")
                    && r.task_definition() == Some("arn:aws:ecs:eu-west-1:1:task-definition/mock:4")
                    && r.launch_type() == Some(&LaunchType::Fargate)
                    && r.capacity_provider_strategy().is_empty()
                    && r.desired_count() == Some(3)
                    && settings_ok(
                        r.network_configuration(),
                        r.load_balancers(),
                        r.deployment_configuration(),
                    )
                    && r.health_check_grace_period_seconds() == Some(90)
                    && r.availability_zone_rebalancing()
                        == Some(&AvailabilityZoneRebalancing::Enabled)
                    && r.propagate_tags() == Some(&PropagateTags::Service)
                    && r.enable_ecs_managed_tags() == Some(true)
                    && r.client_token() == Some("mock-r4")
                    && r.tags()
                        .iter()
                        .any(|t| t.key() == Some("stackproof:stack") && t.value() == Some("mock"))
            })
            .then_output(created);
        let ecs = mock_client!(aws_sdk_ecs, [&rule]);
        let arn = create_service(&ecs, &cx, &d, &ids()).await.unwrap();
        assert_eq!(arn, "arn:aws:ecs:eu-west-1:1:service/mock/mock");
        assert_eq!(rule.num_calls(), 1);
    }

    #[tokio::test]
    async fn update_service_sends_the_settings_and_never_the_desired_count() {
        let cx = cx();
        let d = desired(&cx, "");
        let rule = mock!(aws_sdk_ecs::Client::update_service)
            .match_requests(|r| {
                r.desired_count().is_none()
                    && r.task_definition() == Some("arn:aws:ecs:eu-west-1:1:task-definition/mock:4")
                    && settings_ok(
                        r.network_configuration(),
                        r.load_balancers(),
                        r.deployment_configuration(),
                    )
                    && r.health_check_grace_period_seconds() == Some(60)
                    && r.availability_zone_rebalancing()
                        == Some(&AvailabilityZoneRebalancing::Enabled)
                    && r.propagate_tags() == Some(&PropagateTags::Service)
                    && r.enable_ecs_managed_tags() == Some(true)
            })
            .then_output(|| UpdateServiceOutput::builder().build());
        let ecs = mock_client!(aws_sdk_ecs, [&rule]);
        update_service(&ecs, &d, &ids()).await.unwrap();
        assert_eq!(rule.num_calls(), 1);
    }

    #[tokio::test]
    async fn register_task_definition_sends_the_fargate_task() {
        let cx = cx();
        let d = desired(
            &cx,
            "cpu = 1024\nmemory = 3072\ncpu-architecture = \"arm64\"\nread-only-root-filesystem = true",
        );
        let rule = mock!(aws_sdk_ecs::Client::register_task_definition)
            .match_requests(|r| {
                let c = &r.container_definitions()[0];
                let h = c.health_check();
                r.family() == Some("mock")
                    && r.network_mode() == Some(&NetworkMode::Awsvpc)
                    && r.requires_compatibilities() == [Compatibility::Fargate]
                    && (r.cpu(), r.memory()) == (Some("1024"), Some("3072"))
                    && r.runtime_platform().and_then(|p| p.cpu_architecture())
                        == Some(&CpuArchitecture::Arm64)
                    && r.execution_role_arn() == Some("arn:aws:iam::1:role/mock-task-execution")
                    && r.task_role_arn() == Some("arn:aws:iam::1:role/mock-task")
                    && c.name() == Some("app")
                    && c.readonly_root_filesystem() == Some(true)
                    && h.is_some_and(|h| h.command() == ["CMD", "/sample-app", "health"])
                    && c.environment()
                        .iter()
                        .any(|kv| kv.name() == Some("PORT") && kv.value() == Some("8080"))
            })
            .then_output(|| {
                RegisterTaskDefinitionOutput::builder()
                    .task_definition(
                        TaskDefinition::builder()
                            .task_definition_arn("arn:aws:ecs:eu-west-1:1:task-definition/mock:5")
                            .build(),
                    )
                    .build()
            });
        let ecs = mock_client!(aws_sdk_ecs, [&rule]);
        let arn = register_task_definition(&ecs, &d, &ids()).await.unwrap();
        assert!(arn.ends_with("mock:5"));
        assert_eq!(rule.num_calls(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn create_service_waits_out_iam_propagation_but_not_other_errors() {
        let cx = cx();
        let d = desired(&cx, "");
        let rule = mock!(aws_sdk_ecs::Client::create_service)
            .sequence()
            .error(|| {
                CreateServiceError::generic(meta(
                    "InvalidParameterException",
                    "Unable to assume role and validate the specified targetGroupArn. Please verify that the ECS service role being passed has the proper permissions.",
                ))
            })
            .times(3)
            .output(created)
            .build();
        let ecs = mock_client!(aws_sdk_ecs, RuleMode::Sequential, [&rule]);
        let start = Instant::now();
        create_service(&ecs, &cx, &d, &ids()).await.unwrap();
        assert_eq!(rule.num_calls(), 4);
        // Backoff, not a busy loop: at least half of 100 + 200 + 400 ms.
        assert!(
            start.elapsed() >= Duration::from_millis(350),
            "{:?}",
            start.elapsed()
        );

        let other = mock!(aws_sdk_ecs::Client::create_service).then_error(|| {
            CreateServiceError::generic(meta(
                "InvalidParameterException",
                "subnets can not be empty.",
            ))
        });
        let ecs = mock_client!(aws_sdk_ecs, [&other]);
        let err = create_service(&ecs, &cx, &d, &ids()).await.unwrap_err();
        assert_eq!(err.code(), Some("InvalidParameterException"));
        assert!(
            err.to_string()
                .starts_with("CreateService for ECS service mock failed"),
            "{err}"
        );
        assert_eq!(other.num_calls(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_draining_service_is_waited_out() {
        let cx = cx();
        let d = desired(&cx, "");
        let with_status = |status: &'static str| {
            move || {
                DescribeServicesOutput::builder()
                    .services(
                        Service::builder()
                            .service_name("mock")
                            .status(status)
                            .build(),
                    )
                    .build()
            }
        };
        let rule = mock!(aws_sdk_ecs::Client::describe_services)
            .sequence()
            .output(with_status("DRAINING"))
            .times(3)
            .output(with_status("INACTIVE"))
            .build();
        let ecs = mock_client!(aws_sdk_ecs, RuleMode::Sequential, [&rule]);
        wait_service_inactive(&ecs, &cx, &d).await.unwrap();
        assert_eq!(rule.num_calls(), 4);

        let stuck = mock!(aws_sdk_ecs::Client::describe_services)
            .sequence()
            .output(with_status("DRAINING"))
            .repeatedly()
            .build();
        let ecs = mock_client!(aws_sdk_ecs, RuleMode::Sequential, [&stuck]);
        let err = wait_service_inactive(&ecs, &cx, &d).await.unwrap_err();
        assert!(
            err.to_string()
                .contains("wait for ECS service mock to become INACTIVE: gave up"),
            "{err}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn concurrent_scaling_updates_are_retried() {
        let cx = cx();
        let d = desired(&cx, "");
        let rule = mock!(aws_sdk_applicationautoscaling::Client::put_scaling_policy)
            .match_requests(|r| {
                let c = r.target_tracking_scaling_policy_configuration();
                let m = c.and_then(|c| c.predefined_metric_specification());
                r.policy_name() == Some("mock-requests")
                    && r.resource_id() == Some("service/mock/mock")
                    && r.policy_type() == Some(&PolicyType::TargetTrackingScaling)
                    && m.map(|m| m.predefined_metric_type()) == Some(&MetricType::AlbRequestCountPerTarget)
                    && m.and_then(|m| m.resource_label()) == Some("app/mock/2/targetgroup/mock/1")
                    && c.map(|c| (c.target_value(), c.scale_out_cooldown(), c.scale_in_cooldown()))
                        == Some((6000.0, Some(60), Some(300)))
            })
            .sequence()
            .error(|| {
                PutScalingPolicyError::ConcurrentUpdateException(
                    aws_sdk_applicationautoscaling::types::error::ConcurrentUpdateException::builder()
                        .message("mocked")
                        .meta(meta("ConcurrentUpdateException", "mocked"))
                        .build(),
                )
            })
            .times(2)
            .output(|| PutScalingPolicyOutput::builder().policy_arn("arn:p").build().unwrap())
            .build();
        let scaling = mock_client!(
            aws_sdk_applicationautoscaling,
            RuleMode::Sequential,
            [&rule]
        );
        let clients = Clients {
            iam: mock_client!(aws_sdk_iam, []),
            ecs: mock_client!(aws_sdk_ecs, []),
            logs: mock_client!(aws_sdk_cloudwatchlogs, []),
            scaling,
        };
        put_policy(&clients, &cx, &d, "mock-requests")
            .await
            .unwrap();
        assert_eq!(rule.num_calls(), 3);
    }
}
