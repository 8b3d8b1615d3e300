//! The load balancer's resource kinds, one file each (`load_balancer.rs`, `target_group.rs`,
//! `listener.rs`), each owning its pure diff (`steps`) and its Elastic Load Balancing calls and
//! waits; this file holds what they share and dispatches a step to its kind.

use std::collections::BTreeMap;

use aws_sdk_elasticloadbalancingv2::Client;
use aws_sdk_elasticloadbalancingv2::types::{LoadBalancer as Alb, Tag};
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use infra::{Backoff, Context, waited};

use crate::error::Error;
use crate::lb::diff::{MODULE, Op, Setting};
use crate::lb::observe::Observed;

pub(crate) mod listener;
pub(crate) mod load_balancer;
pub(crate) mod target_group;

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

fn changed(changes: &[Setting]) -> impl Iterator<Item = (&String, &String)> {
    changes.iter().map(|s| (&s.key, &s.want))
}

/// Carries out one step: the resource kind's file makes the calls.
pub(crate) async fn step(
    elb: &Client,
    cx: &Context,
    op: &Op,
    ids: &mut Ids,
) -> Result<Option<String>, Error> {
    match op {
        Op::CreateLoadBalancer {
            name,
            subnets,
            security_groups,
            attributes,
        } => {
            let new = load_balancer::New {
                name,
                subnets,
                security_groups,
                attributes,
            };
            load_balancer::create(elb, cx, new, ids).await
        }
        Op::SetSubnets { arn, want, .. } => load_balancer::set_subnets(elb, arn, want).await,
        Op::SetSecurityGroups { arn, want, .. } => {
            load_balancer::set_security_groups(elb, arn, want, ids).await
        }
        Op::SetLbAttributes { arn, changes } => {
            load_balancer::repair_attributes(elb, cx, arn, changes).await
        }
        Op::Unprotect { arn } => load_balancer::unprotect(elb, cx, arn).await,
        Op::DeleteLoadBalancer { arn } => load_balancer::remove(elb, cx, arn, ids).await,
        Op::CreateTargetGroup {
            name,
            vpc_id,
            port,
            health,
            attributes,
        } => {
            let new = target_group::New {
                name,
                vpc_id,
                port: *port,
                health,
                attributes,
            };
            target_group::create(elb, cx, new, ids).await
        }
        Op::SetHealthCheck { arn, health, .. } => {
            target_group::set_health_check(elb, cx, arn, health).await
        }
        Op::SetTgAttributes { arn, changes } => {
            target_group::repair_attributes(elb, cx, arn, changes).await
        }
        Op::DeleteTargetGroup { arn } => target_group::remove(elb, cx, arn, ids).await,
        Op::CreateListener(want) => listener::create(elb, cx, want, ids).await,
        Op::ModifyListener { want, arn, .. } => listener::modify(elb, cx, want, arn, ids).await,
        Op::DeleteListener { name, arn } => listener::remove(elb, cx, name, arn, ids).await,
        Op::Retag {
            kind,
            name,
            arn,
            tags,
        } => retag(elb, cx, (kind.as_str(), name, arn), tags).await,
    }
}

/// Sets `tags` on the load balancer, the target group or a listener.
async fn retag(
    elb: &Client,
    cx: &Context,
    (kind, name, arn): (&str, &str, &str),
    tags: &BTreeMap<String, String>,
) -> Result<Option<String>, Error> {
    let tags: Vec<Tag> = tags
        .iter()
        .map(|(k, v)| Tag::builder().key(k).value(v).build())
        .collect();
    settle(cx, "AddTags", &format!("{kind} {name:?} ({arn})"), || {
        elb.add_tags()
            .resource_arns(arn)
            .set_tags(Some(tags.clone()))
            .send()
    })
    .await?;
    Ok(Some(arn.to_owned()))
}

#[cfg(test)]
mod tests {
    //! The error paths moto cannot produce, with mocked Elastic Load Balancing responses.

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
    use infra::StackName;

    use super::*;

    fn meta(code: &str, message: &str) -> ErrorMetadata {
        ErrorMetadata::builder().code(code).message(message).build()
    }

    fn cx() -> Context {
        Context::mocked(StackName::new("mock").unwrap()).build()
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
        load_balancer::set_attributes(&elb, &cx(), "arn:lb", Vec::new())
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
        let err = load_balancer::set_attributes(&elb, &cx(), "arn:lb", Vec::new())
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
