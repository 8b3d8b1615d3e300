//! The requests with many settings: the cluster's and log group's settings, the Fargate task
//! definition, the service (created, updated, waited out while draining) and the scaling
//! policies.

use aws_sdk_applicationautoscaling::types::{
    MetricType, PolicyType, PredefinedMetricSpecification, ScalableDimension, ServiceNamespace,
    TargetTrackingScalingPolicyConfiguration,
};
use aws_sdk_ecs::types::{
    AssignPublicIp, AvailabilityZoneRebalancing, AwsVpcConfiguration, ClusterSetting,
    ClusterSettingName, Compatibility, ContainerDefinition, CpuArchitecture,
    DeploymentCircuitBreaker, DeploymentConfiguration, HealthCheck, KeyValuePair, LaunchType,
    LoadBalancer, LogConfiguration, LogDriver, NetworkConfiguration, NetworkMode, OsFamily,
    PortMapping, PropagateTags, RuntimePlatform, TransportProtocol,
};
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use infra::{Backoff, Context, Step, aws, built, waited};

use super::{Ids, delete, ecs_tags, is_role_propagation, need, serialized};
use crate::Clients;
use crate::desired::{DEPLOYMENT, DIMENSION, Desired, RoleKind, SERVICE, TASK_DEFINITION};
use crate::error::Error;
use crate::observe::arn_name;

pub(super) fn insights(d: &Desired) -> ClusterSetting {
    ClusterSetting::builder()
        .name(ClusterSettingName::ContainerInsights)
        .value(d.insights)
        .build()
}

pub(super) async fn put_retention(clients: &Clients, d: &Desired) -> Result<(), Error> {
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
                .set_secrets(if c.secrets.is_empty() {
                    None
                } else {
                    Some(
                        c.secrets
                            .iter()
                            .map(|(name, from)| {
                                aws_sdk_ecs::types::Secret::builder()
                                    .name(name)
                                    .value_from(from)
                                    .build()
                                    .map_err(built("RegisterTaskDefinition", &what))
                            })
                            .collect::<Result<_, _>>()?,
                    )
                })
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
    super::registered_arn(&out, what)
}

pub(super) fn network(d: &Desired) -> Result<NetworkConfiguration, Error> {
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

pub(super) fn load_balancers(d: &Desired) -> Vec<LoadBalancer> {
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

pub(super) fn deployment() -> DeploymentConfiguration {
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
        .map_err(|e| waited("DescribeServices", &what)(e).into())
}

/// Scales the service to zero tasks before it is deleted, so that deletion does not wait for
/// a full drain of a running fleet.
pub(super) async fn scale_to_zero(ecs: &aws_sdk_ecs::Client, d: &Desired) -> Result<(), Error> {
    let n = &d.names;
    ecs.update_service()
        .cluster(&n.cluster)
        .service(&n.service)
        .desired_count(0)
        .send()
        .await
        .map_err(aws("UpdateService", format!("ECS service {}", n.service)))?;
    Ok(())
}

/// Deletes the service; one already gone or inactive counts as deleted.
pub(super) async fn delete_service(
    ecs: &aws_sdk_ecs::Client,
    cx: &Context,
    d: &Desired,
) -> Result<(), Error> {
    let n = &d.names;
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
    .await
}

pub(super) async fn put_policy(
    clients: &Clients,
    cx: &Context,
    d: &Desired,
    name: &str,
) -> Result<(), Error> {
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

    use tokio::time::Instant;

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
        // IAM propagation (the service's role not assumable yet) is retried for a minute.
        let waits = WaitPolicy {
            eventual_consistency: Duration::from_secs(60),
            ..WaitPolicy::MOCKED
        };
        Context::mocked(StackName::new("mock").unwrap())
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
            account_id: "123456789012".into(),
            linked: crate::Linked::default(),
        }
    }

    fn desired(cx: &Context, toml_text: &str) -> Desired {
        let config: ComputeConfig = toml::from_str(toml_text).unwrap();
        Desired::new(
            cx,
            &infra::Config::validate(&config, &cx.scope()).unwrap(),
            &inputs(),
        )
    }

    fn ids() -> Ids {
        Ids {
            execution_role: Some("arn:aws:iam::1:role/mock-task-execution".into()),
            task_role: Some("arn:aws:iam::1:role/mock-task".into()),
            fault_role: Some("arn:aws:iam::1:role/mock-fis".into()),
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
