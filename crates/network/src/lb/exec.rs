//! Carrying out the steps of a load balancer plan against Elastic Load Balancing.

use std::collections::BTreeMap;

use aws_sdk_elasticloadbalancingv2::Client;
use aws_sdk_elasticloadbalancingv2::types::{
    Action, ActionTypeEnum, Certificate, IpAddressType, LoadBalancer as Alb, LoadBalancerAttribute,
    LoadBalancerSchemeEnum, LoadBalancerTypeEnum, Matcher, ProtocolEnum, RedirectActionConfig,
    RedirectActionStatusCodeEnum, Tag, TargetGroupAttribute, TargetTypeEnum,
};
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use infra::{Backoff, Context, Step};

use crate::error::Error;
use crate::exec::delete;
use crate::lb::config::HealthCheckSpec;
use crate::lb::diff::{LB, ListenerWant, MODULE, Op, PROTECTION, Route, Setting, TG, TLS_POLICY};
use crate::lb::observe::Observed;
use infra::{aws, waited};

/// What downstream needs of the load balancer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LbIds {
    pub(crate) arn: String,
    pub(crate) name: String,
    pub(crate) dns_name: String,
    pub(crate) hosted_zone_id: String,
    pub(crate) security_groups: Vec<String>,
}

impl LbIds {
    fn of(lb: &Alb) -> Option<LbIds> {
        Some(LbIds {
            arn: lb.load_balancer_arn()?.to_owned(),
            name: lb.load_balancer_name().unwrap_or_default().to_owned(),
            dns_name: lb.dns_name().unwrap_or_default().to_owned(),
            hosted_zone_id: lb.canonical_hosted_zone_id().unwrap_or_default().to_owned(),
            security_groups: lb.security_groups().to_vec(),
        })
    }
}

/// The ARNs of what exists: what was observed, then what the run created.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Ids {
    pub(crate) lb: Option<LbIds>,
    pub(crate) tg: Option<String>,
    /// Listener ARNs by port.
    pub(crate) listeners: BTreeMap<i32, String>,
}

impl Ids {
    pub(crate) fn from_observed(o: &Observed) -> Ids {
        Ids {
            lb: o.lb.as_ref().and_then(LbIds::of),
            tg: o
                .tg
                .as_ref()
                .and_then(|t| t.target_group_arn())
                .map(str::to_owned),
            listeners: o
                .listeners
                .iter()
                .filter_map(|l| Some((l.port()?, l.listener_arn()?.to_owned())))
                .collect(),
        }
    }
}

fn tags(cx: &Context, name: &str) -> Vec<Tag> {
    cx.tags(MODULE, name)
        .into_iter()
        .map(|(k, v)| Tag::builder().key(k).value(v).build())
        .collect()
}

/// Error codes that mean "not visible yet" right after a create (of this module's resources or
/// the network's subnets). Others, such as an unknown certificate, fail at once.
const NOT_VISIBLE_YET: &[&str] = &[
    "LoadBalancerNotFound",
    "TargetGroupNotFound",
    "ListenerNotFound",
    "SubnetNotFound",
];

/// Runs a call that refers to resources created moments ago, retrying while ELB does not see
/// them yet.
async fn settle<T, E, F, Fut>(
    cx: &Context,
    operation: &'static str,
    resource: &str,
    call: F,
) -> Result<T, Error>
where
    E: std::error::Error + ProvideErrorMetadata + std::fmt::Debug + Send + Sync + 'static,
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    Backoff::consistency(cx.waits())
        .retry_codes(format!("{operation} {resource}"), NOT_VISIBLE_YET, call)
        .await
        .map_err(|e| waited(operation, resource)(e).into())
}

fn missing(kind: &'static str, name: &str) -> Error {
    Error::Missing {
        kind,
        name: name.to_owned(),
    }
}

fn lb_attributes<'a>(
    pairs: impl Iterator<Item = (&'a String, &'a String)>,
) -> Vec<LoadBalancerAttribute> {
    pairs
        .map(|(k, v)| LoadBalancerAttribute::builder().key(k).value(v).build())
        .collect()
}

fn tg_attributes<'a>(
    pairs: impl Iterator<Item = (&'a String, &'a String)>,
) -> Vec<TargetGroupAttribute> {
    pairs
        .map(|(k, v)| TargetGroupAttribute::builder().key(k).value(v).build())
        .collect()
}

fn changed(changes: &[Setting]) -> impl Iterator<Item = (&String, &String)> {
    changes.iter().map(|s| (&s.key, &s.want))
}

/// Sets load balancer attributes. Access logs fail with `InvalidConfigurationRequest: Access
/// Denied for bucket` while a bucket policy written moments ago is not in force yet: retried.
async fn set_lb_attributes(
    elb: &Client,
    cx: &Context,
    arn: &str,
    attributes: Vec<LoadBalancerAttribute>,
) -> Result<(), Error> {
    let what = format!("load-balancer {LB:?} ({arn})");
    Backoff::consistency(cx.waits())
        .run(format!("ModifyLoadBalancerAttributes {what}"), || async {
            match elb
                .modify_load_balancer_attributes()
                .load_balancer_arn(arn)
                .set_attributes(Some(attributes.clone()))
                .send()
                .await
            {
                Ok(_) => Step::Done(()),
                Err(e)
                    if e.code() == Some("LoadBalancerNotFound")
                        || (e.code() == Some("InvalidConfigurationRequest")
                            && e.message().is_some_and(|m| m.contains("Access Denied"))) =>
                {
                    Step::Retry(format!(
                        "{}: {}",
                        e.code().unwrap_or_default(),
                        e.message().unwrap_or_default()
                    ))
                }
                Err(e) => Step::Fail(e),
            }
        })
        .await
        .map_err(|e| waited("ModifyLoadBalancerAttributes", &what)(e).into())
}

fn listener_actions(want: &ListenerWant, tg: Option<&str>) -> Result<Vec<Action>, Error> {
    Ok(vec![match want.route {
        Route::Forward => Action::builder()
            .r#type(ActionTypeEnum::Forward)
            .target_group_arn(tg.ok_or_else(|| missing("target-group", TG))?)
            .build(),
        Route::RedirectToHttps => Action::builder()
            .r#type(ActionTypeEnum::Redirect)
            .redirect_config(
                RedirectActionConfig::builder()
                    .protocol("HTTPS")
                    .port("443")
                    .host("#{host}")
                    .path("/#{path}")
                    .query("#{query}")
                    .status_code(RedirectActionStatusCodeEnum::Http301)
                    .build(),
            )
            .build(),
    }])
}

fn protocol(want: &ListenerWant) -> ProtocolEnum {
    if want.certificate.is_some() {
        ProtocolEnum::Https
    } else {
        ProtocolEnum::Http
    }
}

pub(crate) async fn step(
    elb: &Client,
    cx: &Context,
    op: &Op,
    ids: &mut Ids,
) -> Result<Option<String>, Error> {
    Ok(match op {
        Op::CreateLoadBalancer {
            name,
            subnets,
            security_groups,
            attributes,
        } => {
            let out = settle(
                cx,
                "CreateLoadBalancer",
                &format!("load-balancer {name}"),
                || {
                    elb.create_load_balancer()
                        .name(name)
                        .r#type(LoadBalancerTypeEnum::Application)
                        .scheme(LoadBalancerSchemeEnum::InternetFacing)
                        .ip_address_type(IpAddressType::Ipv4)
                        .set_subnets(Some(subnets.clone()))
                        .set_security_groups(Some(security_groups.clone()))
                        .set_tags(Some(tags(cx, LB)))
                        .send()
                },
            )
            .await?;
            let lb = out
                .load_balancers()
                .first()
                .and_then(LbIds::of)
                .ok_or_else(|| missing("load-balancer", LB))?;
            let arn = lb.arn.clone();
            ids.lb = Some(lb);
            set_lb_attributes(elb, cx, &arn, lb_attributes(attributes.iter())).await?;
            Some(arn)
        }
        Op::SetSubnets { arn, want, .. } => {
            elb.set_subnets()
                .load_balancer_arn(arn)
                .set_subnets(Some(want.clone()))
                .send()
                .await
                .map_err(aws("SetSubnets", format!("load-balancer {LB:?} ({arn})")))?;
            Some(arn.clone())
        }
        Op::SetSecurityGroups { arn, want, .. } => {
            elb.set_security_groups()
                .load_balancer_arn(arn)
                .set_security_groups(Some(want.clone()))
                .send()
                .await
                .map_err(aws(
                    "SetSecurityGroups",
                    format!("load-balancer {LB:?} ({arn})"),
                ))?;
            if let Some(lb) = ids.lb.as_mut() {
                lb.security_groups = want.clone();
            }
            Some(arn.clone())
        }
        Op::SetLbAttributes { arn, changes } => {
            set_lb_attributes(elb, cx, arn, lb_attributes(changed(changes))).await?;
            Some(arn.clone())
        }
        Op::CreateTargetGroup {
            name,
            vpc_id,
            port,
            health,
            attributes,
        } => {
            let out = settle(
                cx,
                "CreateTargetGroup",
                &format!("target-group {name}"),
                || {
                    let h: &HealthCheckSpec = health;
                    elb.create_target_group()
                        .name(name)
                        .protocol(ProtocolEnum::Http)
                        .port(*port)
                        .vpc_id(vpc_id)
                        .target_type(TargetTypeEnum::Ip)
                        .health_check_enabled(true)
                        .health_check_protocol(ProtocolEnum::Http)
                        .health_check_path(&h.path)
                        .health_check_interval_seconds(h.interval_seconds)
                        .health_check_timeout_seconds(h.timeout_seconds)
                        .healthy_threshold_count(h.healthy_threshold)
                        .unhealthy_threshold_count(h.unhealthy_threshold)
                        .matcher(Matcher::builder().http_code(&h.matcher).build())
                        .set_tags(Some(tags(cx, TG)))
                        .send()
                },
            )
            .await?;
            let arn = out
                .target_groups()
                .first()
                .and_then(|t| t.target_group_arn())
                .ok_or_else(|| missing("target-group", TG))?
                .to_owned();
            ids.tg = Some(arn.clone());
            set_tg_attributes(elb, cx, &arn, tg_attributes(attributes.iter())).await?;
            Some(arn)
        }
        Op::SetHealthCheck { arn, health: h, .. } => {
            settle(
                cx,
                "ModifyTargetGroup",
                &format!("target-group {TG:?} ({arn})"),
                || {
                    elb.modify_target_group()
                        .target_group_arn(arn)
                        .health_check_enabled(true)
                        .health_check_protocol(ProtocolEnum::Http)
                        .health_check_path(&h.path)
                        .health_check_interval_seconds(h.interval_seconds)
                        .health_check_timeout_seconds(h.timeout_seconds)
                        .healthy_threshold_count(h.healthy_threshold)
                        .unhealthy_threshold_count(h.unhealthy_threshold)
                        .matcher(Matcher::builder().http_code(&h.matcher).build())
                        .send()
                },
            )
            .await?;
            Some(arn.clone())
        }
        Op::SetTgAttributes { arn, changes } => {
            set_tg_attributes(elb, cx, arn, tg_attributes(changed(changes))).await?;
            Some(arn.clone())
        }
        Op::CreateListener(want) => {
            let lb = ids
                .lb
                .as_ref()
                .ok_or_else(|| missing("load-balancer", LB))?
                .arn
                .clone();
            let actions = listener_actions(want, ids.tg.as_deref())?;
            let out = settle(
                cx,
                "CreateListener",
                &format!("listener {:?} on {lb}", want.name),
                || {
                    elb.create_listener()
                        .load_balancer_arn(&lb)
                        .protocol(protocol(want))
                        .port(want.port)
                        .set_certificates(
                            want.certificate
                                .as_ref()
                                .map(|c| vec![Certificate::builder().certificate_arn(c).build()]),
                        )
                        .set_ssl_policy(want.certificate.as_ref().map(|_| TLS_POLICY.to_owned()))
                        .set_default_actions(Some(actions.clone()))
                        .set_tags(Some(tags(cx, want.name)))
                        .send()
                },
            )
            .await?;
            let arn = out
                .listeners()
                .first()
                .and_then(|l| l.listener_arn())
                .ok_or_else(|| missing("listener", want.name))?
                .to_owned();
            ids.listeners.insert(want.port, arn.clone());
            Some(arn)
        }
        Op::ModifyListener { want, arn, .. } => {
            let actions = listener_actions(want, ids.tg.as_deref())?;
            settle(
                cx,
                "ModifyListener",
                &format!("listener {:?} ({arn})", want.name),
                || {
                    elb.modify_listener()
                        .listener_arn(arn)
                        .protocol(protocol(want))
                        .port(want.port)
                        .set_certificates(
                            want.certificate
                                .as_ref()
                                .map(|c| vec![Certificate::builder().certificate_arn(c).build()]),
                        )
                        .set_ssl_policy(want.certificate.as_ref().map(|_| TLS_POLICY.to_owned()))
                        .set_default_actions(Some(actions.clone()))
                        .send()
                },
            )
            .await?;
            Some(arn.clone())
        }
        Op::Retag {
            kind,
            name,
            arn,
            tags,
        } => {
            let tags: Vec<Tag> = tags
                .iter()
                .map(|(k, v)| Tag::builder().key(k).value(v).build())
                .collect();
            settle(
                cx,
                "AddTags",
                &format!("{} {name:?} ({arn})", kind.as_str()),
                || {
                    elb.add_tags()
                        .resource_arns(arn)
                        .set_tags(Some(tags.clone()))
                        .send()
                },
            )
            .await?;
            Some(arn.clone())
        }
        Op::DeleteListener { name, arn } => {
            delete(
                cx,
                "DeleteListener",
                &format!("listener {name:?} ({arn})"),
                &[],
                || elb.delete_listener().listener_arn(arn).send(),
            )
            .await?;
            ids.listeners.retain(|_, a| a != arn);
            Some(arn.clone())
        }
        Op::Unprotect { arn } => {
            let off = LoadBalancerAttribute::builder()
                .key(PROTECTION)
                .value("false")
                .build();
            set_lb_attributes(elb, cx, arn, vec![off]).await?;
            Some(arn.clone())
        }
        Op::DeleteTargetGroup { arn } => {
            // Still "in use" for a moment after its listeners are deleted.
            delete(
                cx,
                "DeleteTargetGroup",
                &format!("target-group {TG:?} ({arn})"),
                &["ResourceInUse"],
                || elb.delete_target_group().target_group_arn(arn).send(),
            )
            .await?;
            ids.tg = None;
            Some(arn.clone())
        }
        Op::DeleteLoadBalancer { arn } => {
            let what = format!("load-balancer {LB:?} ({arn})");
            delete(cx, "DeleteLoadBalancer", &what, &[], || {
                elb.delete_load_balancer().load_balancer_arn(arn).send()
            })
            .await?;
            wait_gone(elb, cx, arn, &what).await?;
            ids.lb = None;
            Some(arn.clone())
        }
    })
}

async fn set_tg_attributes(
    elb: &Client,
    cx: &Context,
    arn: &str,
    attributes: Vec<TargetGroupAttribute>,
) -> Result<(), Error> {
    settle(
        cx,
        "ModifyTargetGroupAttributes",
        &format!("target-group {TG:?} ({arn})"),
        || {
            elb.modify_target_group_attributes()
                .target_group_arn(arn)
                .set_attributes(Some(attributes.clone()))
                .send()
        },
    )
    .await
    .map(drop)
}

/// Waits until DescribeLoadBalancers no longer finds the load balancer.
async fn wait_gone(elb: &Client, cx: &Context, arn: &str, what: &str) -> Result<(), Error> {
    Backoff::resource_state(cx.waits())
        .run(format!("wait for {what} to be deleted"), || async {
            match elb
                .describe_load_balancers()
                .load_balancer_arns(arn)
                .send()
                .await
            {
                Ok(out) if out.load_balancers().is_empty() => Step::Done(()),
                Ok(out) => Step::Retry(format!(
                    "state {}",
                    out.load_balancers()
                        .first()
                        .and_then(|l| l.state())
                        .and_then(|s| s.code())
                        .map(|c| c.as_str())
                        .unwrap_or("unknown")
                )),
                Err(e) if e.code() == Some("LoadBalancerNotFound") => Step::Done(()),
                Err(e) => Step::Fail(e),
            }
        })
        .await
        .map_err(|e| waited("DescribeLoadBalancers", what)(e).into())
}

#[cfg(test)]
mod tests {
    //! The error paths moto cannot produce, with mocked Elastic Load Balancing responses.

    use std::time::Duration;

    use aws_sdk_elasticloadbalancingv2::operation::delete_load_balancer::{
        DeleteLoadBalancerError, DeleteLoadBalancerOutput,
    };
    use aws_sdk_elasticloadbalancingv2::operation::delete_target_group::{
        DeleteTargetGroupError, DeleteTargetGroupOutput,
    };
    use aws_sdk_elasticloadbalancingv2::operation::describe_load_balancers::DescribeLoadBalancersError;
    use aws_sdk_elasticloadbalancingv2::operation::modify_load_balancer_attributes::{
        ModifyLoadBalancerAttributesError, ModifyLoadBalancerAttributesOutput,
    };
    use aws_smithy_mocks::{RuleMode, mock, mock_client};
    use aws_smithy_types::error::ErrorMetadata;
    use infra::{StackName, WaitPolicy};

    use super::*;

    fn meta(code: &str, message: &str) -> ErrorMetadata {
        ErrorMetadata::builder().code(code).message(message).build()
    }

    fn cx() -> Context {
        let waits = WaitPolicy {
            eventual_consistency: Duration::from_secs(30),
            dependency: Duration::from_secs(60),
            resource_state: Duration::from_secs(60),
            initial_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(5),
        };
        Context::builder(
            aws_config::SdkConfig::builder().build(),
            StackName::new("mock").unwrap(),
        )
        .waits(waits)
        .build()
    }

    #[tokio::test(start_paused = true)]
    async fn a_target_group_still_in_use_is_retried_until_its_listener_lets_go() {
        let rule = mock!(Client::delete_target_group)
            .sequence()
            .error(|| {
                DeleteTargetGroupError::generic(meta("ResourceInUse", "in use by a listener"))
            })
            .times(2)
            .output(|| DeleteTargetGroupOutput::builder().build())
            .build();
        let elb = mock_client!(
            aws_sdk_elasticloadbalancingv2,
            RuleMode::Sequential,
            [&rule]
        );
        let op = Op::DeleteTargetGroup {
            arn: "arn:tg".to_owned(),
        };
        step(&elb, &cx(), &op, &mut Ids::default()).await.unwrap();
        assert_eq!(rule.num_calls(), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn access_logs_denied_while_the_bucket_policy_settles_are_retried() {
        let rule = mock!(Client::modify_load_balancer_attributes)
            .sequence()
            .error(|| {
                ModifyLoadBalancerAttributesError::generic(meta(
                    "InvalidConfigurationRequest",
                    "Access Denied for bucket: logs. Please check S3bucket permission",
                ))
            })
            .times(2)
            .output(|| ModifyLoadBalancerAttributesOutput::builder().build())
            .build();
        let elb = mock_client!(
            aws_sdk_elasticloadbalancingv2,
            RuleMode::Sequential,
            [&rule]
        );
        set_lb_attributes(&elb, &cx(), "arn:lb", Vec::new())
            .await
            .unwrap();
        assert_eq!(rule.num_calls(), 3);

        // Any other invalid configuration fails at once.
        let other = mock!(Client::modify_load_balancer_attributes).then_error(|| {
            ModifyLoadBalancerAttributesError::generic(meta(
                "InvalidConfigurationRequest",
                "Key zonal_shift.config.enabled not valid",
            ))
        });
        let elb = mock_client!(aws_sdk_elasticloadbalancingv2, [&other]);
        let err = set_lb_attributes(&elb, &cx(), "arn:lb", Vec::new())
            .await
            .unwrap_err();
        assert_eq!(err.code(), Some("InvalidConfigurationRequest"));
        assert!(
            err.to_string().starts_with(
                "ModifyLoadBalancerAttributes for load-balancer \"alb\" (arn:lb) failed"
            ),
            "{err}"
        );
        assert_eq!(other.num_calls(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_protected_load_balancer_fails_at_once_and_a_deleted_one_is_waited_for() {
        let refused = mock!(Client::delete_load_balancer).then_error(|| {
            DeleteLoadBalancerError::generic(meta(
                "OperationNotPermitted",
                "Load balancer is protected from deletion",
            ))
        });
        let elb = mock_client!(aws_sdk_elasticloadbalancingv2, [&refused]);
        let op = Op::DeleteLoadBalancer {
            arn: "arn:lb".to_owned(),
        };
        let err = step(&elb, &cx(), &op, &mut Ids::default())
            .await
            .unwrap_err();
        assert_eq!(err.code(), Some("OperationNotPermitted"));
        assert_eq!(refused.num_calls(), 1);

        let deleted = mock!(Client::delete_load_balancer)
            .then_output(|| DeleteLoadBalancerOutput::builder().build());
        let gone = mock!(Client::describe_load_balancers).then_error(|| {
            DescribeLoadBalancersError::generic(meta("LoadBalancerNotFound", "gone"))
        });
        let elb = mock_client!(aws_sdk_elasticloadbalancingv2, [&deleted, &gone]);
        step(&elb, &cx(), &op, &mut Ids::default()).await.unwrap();
        assert_eq!((deleted.num_calls(), gone.num_calls()), (1, 1));
    }
}
