//! Reading what exists, by the stack's resource names, and normalizing it so it compares with
//! what the configuration wants. Reads only.

use std::collections::{BTreeMap, BTreeSet};

use aws_sdk_applicationautoscaling::types::{ScalableDimension, ServiceNamespace};
use aws_sdk_ecs::types::{ClusterField, ServiceField, TaskDefinitionField};
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use serde_json::Value;

use crate::Clients;
use crate::desired::{
    ClusterHave, ContainerShape, Deployment, FullSettings, HealthShape, LogContents, LogGroupHave,
    Names, Observed, PolicyShape, RoleHave, RoleKind, ServiceHave, ServiceShape, TaskDefHave,
    TaskShape, normalize_policy,
};
use crate::error::Error;
use infra::aws;

/// Decodes `%XX` escapes (IAM returns policy documents URL-encoded).
pub(crate) fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(b) = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(b);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A policy document as IAM returns it (URL-encoded or not), normalized; `Null` if unreadable.
pub(crate) fn parse_policy(text: &str) -> Value {
    serde_json::from_str::<Value>(text)
        .or_else(|_| serde_json::from_str::<Value>(&percent_decode(text)))
        .map(|v| normalize_policy(&v))
        .unwrap_or(Value::Null)
}

/// The last path segment of an ARN (`arn:aws:iam::1:role/x/name` -> `name`).
pub(crate) fn arn_name(arn: &str) -> String {
    arn.rsplit('/').next().unwrap_or(arn).to_owned()
}

fn ecs_tags(tags: &[aws_sdk_ecs::types::Tag]) -> BTreeMap<String, String> {
    tags.iter()
        .filter_map(|t| {
            Some((
                t.key()?.to_owned(),
                t.value().unwrap_or_default().to_owned(),
            ))
        })
        .collect()
}

/// Pages of GetAccountAuthorizationDetails read at most: 1,000 roles a page, 50,000 roles,
/// more than IAM's role quota allows an account.
const MAX_ROLE_PAGES: usize = 50;

/// Both roles from one GetAccountAuthorizationDetails (roles only): trust policy, attached and
/// inline policies (with their documents) and tags, in one call where GetRole,
/// ListAttachedRolePolicies, ListRolePolicies and GetRolePolicy take three or more per role.
/// An account with more than 1,000 roles takes a call per 1,000.
async fn roles(
    iam: &aws_sdk_iam::Client,
    names: &[&str],
) -> Result<BTreeMap<String, RoleHave>, Error> {
    let what = format!("IAM roles {names:?}");
    let mut found = BTreeMap::new();
    let mut marker: Option<String> = None;
    for _ in 0..MAX_ROLE_PAGES {
        let out = iam
            .get_account_authorization_details()
            .filter(aws_sdk_iam::types::EntityType::Role)
            .max_items(1000)
            .set_marker(marker.take())
            .send()
            .await
            .map_err(aws("GetAccountAuthorizationDetails", &what))?;
        for r in out.role_detail_list() {
            let Some(name) = r.role_name().filter(|n| names.contains(n)) else {
                continue;
            };
            let Some(arn) = r.arn() else {
                continue;
            };
            let inline = r
                .role_policy_list()
                .iter()
                .filter_map(|p| {
                    Some((
                        p.policy_name()?.to_owned(),
                        p.policy_document().map_or(Value::Null, parse_policy),
                    ))
                })
                .collect();
            found.insert(
                name.to_owned(),
                RoleHave {
                    arn: arn.to_owned(),
                    trust: r
                        .assume_role_policy_document()
                        .map_or(Value::Null, parse_policy),
                    managed: r
                        .attached_managed_policies()
                        .iter()
                        .filter_map(|p| p.policy_arn().map(str::to_owned))
                        .collect(),
                    inline,
                    tags: r
                        .tags()
                        .iter()
                        .map(|t| (t.key().to_owned(), t.value().to_owned()))
                        .collect(),
                },
            );
        }
        match out.marker() {
            Some(m) if out.is_truncated() && found.len() < names.len() && !m.is_empty() => {
                marker = Some(m.to_owned());
            }
            _ => break,
        }
    }
    Ok(found)
}

async fn cluster(ecs: &aws_sdk_ecs::Client, names: &Names) -> Result<Option<ClusterHave>, Error> {
    let out = ecs
        .describe_clusters()
        .clusters(&names.cluster)
        .include(ClusterField::Tags)
        .include(ClusterField::Settings)
        .send()
        .await
        .map_err(aws(
            "DescribeClusters",
            format!("ECS cluster {}", names.cluster),
        ))?;
    Ok(out
        .clusters()
        .iter()
        .find(|c| c.cluster_name() == Some(names.cluster.as_str()))
        .map(|c| ClusterHave {
            arn: c.cluster_arn().unwrap_or_default().to_owned(),
            status: c.status().unwrap_or_default().to_owned(),
            insights: c
                .settings()
                .iter()
                .find(|s| s.name().is_some_and(|n| n.as_str() == "containerInsights"))
                .and_then(|s| s.value().map(str::to_owned)),
            tags: ecs_tags(c.tags()),
        }))
}

async fn log_group(
    logs: &aws_sdk_cloudwatchlogs::Client,
    names: &Names,
    with_contents: bool,
) -> Result<Option<LogGroupHave>, Error> {
    let what = format!("log group {}", names.log_group);
    let out = logs
        .describe_log_groups()
        .log_group_name_prefix(&names.log_group)
        .send()
        .await
        .map_err(aws("DescribeLogGroups", &what))?;
    let Some(g) = out
        .log_groups()
        .iter()
        .find(|g| g.log_group_name() == Some(names.log_group.as_str()))
    else {
        return Ok(None);
    };
    let arn = g
        .log_group_arn()
        .map(str::to_owned)
        .or_else(|| g.arn().map(|a| a.trim_end_matches(":*").to_owned()))
        .unwrap_or_default();
    let tags = logs
        .list_tags_for_resource()
        .resource_arn(&arn)
        .send()
        .await
        .map_err(aws("ListTagsForResource", &what))?;
    let stored_bytes = g.stored_bytes().unwrap_or(0);
    let contents = if with_contents {
        let streams = logs
            .describe_log_streams()
            .log_group_name(&names.log_group)
            .order_by(aws_sdk_cloudwatchlogs::types::OrderBy::LastEventTime)
            .descending(true)
            .limit(1)
            .send()
            .await
            .map_err(aws("DescribeLogStreams", &what))?;
        Some(LogContents {
            newest_stream: streams
                .log_streams()
                .first()
                .and_then(|s| s.log_stream_name())
                .map(str::to_owned),
            stored_bytes,
        })
    } else {
        None
    };
    Ok(Some(LogGroupHave {
        arn,
        retention: g.retention_in_days(),
        tags: tags
            .tags()
            .map(|t| t.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default(),
        contents,
    }))
}

async fn task_definition(
    ecs: &aws_sdk_ecs::Client,
    names: &Names,
) -> Result<Option<TaskDefHave>, Error> {
    let out = match ecs
        .describe_task_definition()
        .task_definition(&names.family)
        .include(TaskDefinitionField::Tags)
        .send()
        .await
    {
        Ok(out) => out,
        // "Unable to describe task definition": the family has no revision.
        Err(e) if e.code() == Some("ClientException") => return Ok(None),
        Err(e) => {
            return Err(aws(
                "DescribeTaskDefinition",
                format!("task definition family {}", names.family),
            )(e)
            .into());
        }
    };
    let Some(td) = out.task_definition() else {
        return Ok(None);
    };
    if td.status().is_some_and(|s| s.as_str() != "ACTIVE") {
        return Ok(None);
    }
    let platform = td.runtime_platform();
    let containers = td
        .container_definitions()
        .iter()
        .map(|c| ContainerShape {
            name: c.name().unwrap_or_default().to_owned(),
            image: c.image().unwrap_or_default().to_owned(),
            essential: c.essential().unwrap_or(true),
            ports: c
                .port_mappings()
                .iter()
                .map(|p| {
                    (
                        p.container_port().unwrap_or_default(),
                        p.protocol().map_or("tcp", |p| p.as_str()).to_owned(),
                    )
                })
                .collect(),
            environment: c
                .environment()
                .iter()
                .filter_map(|kv| {
                    Some((
                        kv.name()?.to_owned(),
                        kv.value().unwrap_or_default().to_owned(),
                    ))
                })
                .collect(),
            secrets: c
                .secrets()
                .iter()
                .map(|s| (s.name().to_owned(), s.value_from().to_owned()))
                .collect(),
            health: c.health_check().map(|h| HealthShape {
                command: h.command().to_vec(),
                interval: h.interval().unwrap_or(30),
                timeout: h.timeout().unwrap_or(5),
                retries: h.retries().unwrap_or(3),
                start_period: h.start_period().unwrap_or(0),
            }),
            log_driver: c
                .log_configuration()
                .map(|l| l.log_driver().as_str().to_owned()),
            log_options: c
                .log_configuration()
                .and_then(|l| l.options())
                .map(|o| o.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
                .unwrap_or_default(),
            read_only: c.readonly_root_filesystem().unwrap_or(false),
        })
        .collect();
    Ok(Some(TaskDefHave {
        arn: td.task_definition_arn().unwrap_or_default().to_owned(),
        shape: TaskShape {
            cpu: td.cpu().unwrap_or_default().to_owned(),
            memory: td.memory().unwrap_or_default().to_owned(),
            network_mode: td
                .network_mode()
                .map(|m| m.as_str().to_owned())
                .unwrap_or_default(),
            compatibilities: td
                .requires_compatibilities()
                .iter()
                .map(|c| c.as_str().to_owned())
                .collect(),
            os: platform
                .and_then(|p| p.operating_system_family())
                .map_or("LINUX", |o| o.as_str())
                .to_owned(),
            arch: platform
                .and_then(|p| p.cpu_architecture())
                .map_or("X86_64", |a| a.as_str())
                .to_owned(),
            execution_role: td.execution_role_arn().map(arn_name).unwrap_or_default(),
            task_role: td.task_role_arn().map(arn_name).unwrap_or_default(),
            containers,
        },
        tags: ecs_tags(out.tags()),
    }))
}

async fn service(ecs: &aws_sdk_ecs::Client, names: &Names) -> Result<Option<ServiceHave>, Error> {
    let out = match ecs
        .describe_services()
        .cluster(&names.cluster)
        .services(&names.service)
        .include(ServiceField::Tags)
        .send()
        .await
    {
        Ok(out) => out,
        Err(e) if e.code() == Some("ClusterNotFoundException") => return Ok(None),
        Err(e) => {
            return Err(
                aws("DescribeServices", format!("ECS service {}", names.service))(e).into(),
            );
        }
    };
    let Some(s) = out
        .services()
        .iter()
        .find(|s| s.service_name() == Some(names.service.as_str()))
    else {
        return Ok(None);
    };
    let vpc = s
        .network_configuration()
        .and_then(|n| n.awsvpc_configuration());
    let full = s.deployment_configuration().map(|d| FullSettings {
        deployment: Deployment {
            circuit_breaker: d.deployment_circuit_breaker().is_some_and(|c| c.enable()),
            rollback: d.deployment_circuit_breaker().is_some_and(|c| c.rollback()),
            min_healthy: d.minimum_healthy_percent().unwrap_or(100),
            max_percent: d.maximum_percent().unwrap_or(200),
        },
        grace: s.health_check_grace_period_seconds(),
        az_rebalancing: s
            .availability_zone_rebalancing()
            .map(|a| a.as_str().to_owned()),
        managed_tags: s.enable_ecs_managed_tags(),
    });
    Ok(Some(ServiceHave {
        arn: s.service_arn().unwrap_or_default().to_owned(),
        status: s.status().unwrap_or_default().to_owned(),
        task_definition: s.task_definition().unwrap_or_default().to_owned(),
        desired_count: s.desired_count(),
        shape: ServiceShape {
            launch_type: s.launch_type().map(|l| l.as_str().to_owned()),
            subnets: vpc
                .map(|v| v.subnets().iter().cloned().collect())
                .unwrap_or_default(),
            security_groups: vpc
                .map(|v| v.security_groups().iter().cloned().collect())
                .unwrap_or_default(),
            public_ip: vpc
                .and_then(|v| v.assign_public_ip())
                .map(|a| a.as_str().to_owned()),
            load_balancers: s
                .load_balancers()
                .iter()
                .map(|lb| {
                    (
                        lb.target_group_arn().unwrap_or_default().to_owned(),
                        lb.container_name().unwrap_or_default().to_owned(),
                        lb.container_port().unwrap_or_default(),
                    )
                })
                .collect::<BTreeSet<_>>(),
            propagate_tags: s.propagate_tags().map(|p| p.as_str().to_owned()),
            full,
        },
        tags: ecs_tags(s.tags()),
    }))
}

async fn scaling(
    aas: &aws_sdk_applicationautoscaling::Client,
    names: &Names,
) -> Result<(Option<(i32, i32)>, BTreeMap<String, PolicyShape>), Error> {
    let id = names.resource_id();
    let (targets, policies) = tokio::try_join!(
        async {
            aas.describe_scalable_targets()
                .service_namespace(ServiceNamespace::Ecs)
                .resource_ids(&id)
                .scalable_dimension(ScalableDimension::EcsServiceDesiredCount)
                .send()
                .await
                .map_err(aws(
                    "DescribeScalableTargets",
                    format!("scalable target {id}"),
                ))
        },
        async {
            aas.describe_scaling_policies()
                .service_namespace(ServiceNamespace::Ecs)
                .resource_id(&id)
                .scalable_dimension(ScalableDimension::EcsServiceDesiredCount)
                .send()
                .await
                .map_err(aws(
                    "DescribeScalingPolicies",
                    format!("scalable target {id}"),
                ))
        }
    )?;
    let target = targets
        .scalable_targets()
        .iter()
        .find(|t| t.resource_id() == id)
        .map(|t| (t.min_capacity(), t.max_capacity()));
    let policies = policies
        .scaling_policies()
        .iter()
        .filter(|p| p.resource_id() == id)
        .map(|p| {
            let tt = p.target_tracking_scaling_policy_configuration();
            let predefined = tt.and_then(|t| t.predefined_metric_specification());
            (
                p.policy_name().to_owned(),
                PolicyShape {
                    metric: predefined
                        .map(|m| m.predefined_metric_type().as_str().to_owned())
                        .unwrap_or_default(),
                    label: predefined.and_then(|m| m.resource_label().map(str::to_owned)),
                    target: tt.map(|t| t.target_value()).unwrap_or_default(),
                    scale_out_cooldown: tt.and_then(|t| t.scale_out_cooldown()).unwrap_or(0),
                    scale_in_cooldown: tt.and_then(|t| t.scale_in_cooldown()).unwrap_or(0),
                },
            )
        })
        .collect();
    Ok((target, policies))
}

/// Every revision of the family in `status` (exactly that family, not others sharing the
/// prefix).
pub(crate) async fn task_definition_arns(
    ecs: &aws_sdk_ecs::Client,
    family: &str,
    status: aws_sdk_ecs::types::TaskDefinitionStatus,
) -> Result<Vec<String>, Error> {
    let mut arns = Vec::new();
    let mut token: Option<String> = None;
    // Bounded: 100 pages of 100 revisions.
    for _ in 0..100 {
        let out = ecs
            .list_task_definitions()
            .family_prefix(family)
            .status(status.clone())
            .set_next_token(token.take())
            .send()
            .await
            .map_err(aws("ListTaskDefinitions", format!("family {family}")))?;
        arns.extend(
            out.task_definition_arns()
                .iter()
                .filter(|a| {
                    arn_name(a)
                        .rsplit_once(':')
                        .is_some_and(|(f, _)| f == family)
                })
                .cloned(),
        );
        match out.next_token() {
            Some(t) if !t.is_empty() => token = Some(t.to_owned()),
            _ => break,
        }
    }
    Ok(arns)
}

impl Observed {
    /// Reads everything of the stack's compute, with the reads running at once (each boxed:
    /// the SDK's futures are large, and side by side they overflow a test thread's stack).
    pub(crate) async fn read(
        clients: &Clients,
        names: &Names,
        with_revisions: bool,
    ) -> Result<Observed, Error> {
        let role_names = RoleKind::ALL.map(|k| names.role(k));
        let (mut found_roles, cluster, log_group, task_definition, service, scaling, arns) = tokio::try_join!(
            Box::pin(roles(&clients.iam, &role_names)),
            Box::pin(cluster(&clients.ecs, names)),
            Box::pin(log_group(&clients.logs, names, with_revisions)),
            Box::pin(task_definition(&clients.ecs, names)),
            Box::pin(service(&clients.ecs, names)),
            Box::pin(scaling(&clients.scaling, names)),
            Box::pin(async {
                if with_revisions {
                    use aws_sdk_ecs::types::TaskDefinitionStatus;
                    let (active, inactive) = tokio::try_join!(
                        task_definition_arns(
                            &clients.ecs,
                            &names.family,
                            TaskDefinitionStatus::Active
                        ),
                        task_definition_arns(
                            &clients.ecs,
                            &names.family,
                            TaskDefinitionStatus::Inactive
                        ),
                    )?;
                    Ok((active, inactive))
                } else {
                    Ok((Vec::new(), Vec::new()))
                }
            })
        )?;
        let roles = RoleKind::ALL
            .into_iter()
            .filter_map(|k| Some((k, found_roles.remove(names.role(k))?)))
            .collect();
        Ok(Observed {
            roles,
            cluster,
            log_group,
            task_definition,
            service,
            target: scaling.0,
            policies: scaling.1,
            task_definition_arns: arns.0,
            inactive_task_definition_arns: arns.1,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies_compare_whatever_their_encoding() {
        let plain = r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Principal":{"Service":["ecs-tasks.amazonaws.com"]},"Action":"sts:AssumeRole","Condition":{"StringEquals":{"aws:SourceAccount":"123456789012"}}}}"#;
        let encoded = "%7B%22Version%22%3A%222012-10-17%22%2C%22Statement%22%3A%5B%7B%22Effect%22%3A%22Allow%22%2C%22Principal%22%3A%7B%22Service%22%3A%22ecs-tasks.amazonaws.com%22%7D%2C%22Action%22%3A%22sts%3AAssumeRole%22%2C%22Condition%22%3A%7B%22StringEquals%22%3A%7B%22aws%3ASourceAccount%22%3A%22123456789012%22%7D%7D%7D%5D%7D";
        assert_eq!(parse_policy(plain), parse_policy(encoded));
        assert_eq!(
            parse_policy(plain),
            normalize_policy(&crate::desired::trust_policy(
                crate::desired::TASKS_PRINCIPAL,
                "123456789012"
            ))
        );
        assert_eq!(parse_policy("%zz"), Value::Null);
    }

    #[test]
    fn arn_names() {
        assert_eq!(arn_name("arn:aws:iam::1:role/a/b/demo-task"), "demo-task");
        assert_eq!(
            arn_name("arn:aws:ecs:eu-west-1:1:task-definition/demo:3"),
            "demo:3"
        );
    }
}
