//! The application load balancer: created internet-facing in the public subnets with its
//! attributes, its subnets, security groups and attributes repaired, deletion protection turned
//! off before a destroy deletes it.

use aws_sdk_elasticloadbalancingv2::Client;
use aws_sdk_elasticloadbalancingv2::error::SdkError;
use aws_sdk_elasticloadbalancingv2::operation::modify_load_balancer_attributes::ModifyLoadBalancerAttributesError;
use aws_sdk_elasticloadbalancingv2::types::{
    IpAddressType, LoadBalancerAttribute, LoadBalancerSchemeEnum, LoadBalancerTypeEnum,
};
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use infra::{Backoff, Context, Step, aws, waited};

use super::{Ids, LbIds, changed, missing, settle, tags};
use crate::error::Error;
use crate::lb::diff::{Desired, Kind, LB, Op, PROTECTION, Setting, replacement, retag, settings};
use crate::lb::observe::Observed;
use crate::resource::delete;

/// What a new load balancer is made of.
pub(super) struct New<'a> {
    pub(super) name: &'a str,
    pub(super) subnets: &'a [String],
    pub(super) security_groups: &'a [String],
    pub(super) attributes: &'a std::collections::BTreeMap<String, String>,
}

pub(super) async fn create(
    elb: &Client,
    cx: &Context,
    new: New<'_>,
    ids: &mut Ids,
) -> Result<Option<String>, Error> {
    let New {
        name,
        subnets,
        security_groups,
        attributes,
    } = new;
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
                .set_subnets(Some(subnets.to_vec()))
                .set_security_groups(Some(security_groups.to_vec()))
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
    set_attributes(elb, cx, &arn, lb_attributes(attributes.iter())).await?;
    Ok(Some(arn))
}

pub(super) async fn set_subnets(
    elb: &Client,
    arn: &str,
    want: &[String],
) -> Result<Option<String>, Error> {
    elb.set_subnets()
        .load_balancer_arn(arn)
        .set_subnets(Some(want.to_vec()))
        .send()
        .await
        .map_err(aws("SetSubnets", format!("load-balancer {LB:?} ({arn})")))?;
    Ok(Some(arn.to_owned()))
}

pub(super) async fn set_security_groups(
    elb: &Client,
    arn: &str,
    want: &[String],
    ids: &mut Ids,
) -> Result<Option<String>, Error> {
    elb.set_security_groups()
        .load_balancer_arn(arn)
        .set_security_groups(Some(want.to_vec()))
        .send()
        .await
        .map_err(aws(
            "SetSecurityGroups",
            format!("load-balancer {LB:?} ({arn})"),
        ))?;
    if let Some(lb) = ids.lb.as_mut() {
        lb.security_groups = want.to_vec();
    }
    Ok(Some(arn.to_owned()))
}

/// Sets the attributes that drifted.
pub(super) async fn repair_attributes(
    elb: &Client,
    cx: &Context,
    arn: &str,
    changes: &[Setting],
) -> Result<Option<String>, Error> {
    set_attributes(elb, cx, arn, lb_attributes(changed(changes))).await?;
    Ok(Some(arn.to_owned()))
}

/// Turns deletion protection off (a destroy told to override it).
pub(super) async fn unprotect(
    elb: &Client,
    cx: &Context,
    arn: &str,
) -> Result<Option<String>, Error> {
    let off = LoadBalancerAttribute::builder()
        .key(PROTECTION)
        .value("false")
        .build();
    set_attributes(elb, cx, arn, vec![off]).await?;
    Ok(Some(arn.to_owned()))
}

/// Deletes the load balancer and waits until it is gone.
pub(super) async fn remove(
    elb: &Client,
    cx: &Context,
    arn: &str,
    ids: &mut Ids,
) -> Result<Option<String>, Error> {
    let what = format!("load-balancer {LB:?} ({arn})");
    delete(cx, "DeleteLoadBalancer", &what, &[], || {
        elb.delete_load_balancer().load_balancer_arn(arn).send()
    })
    .await?;
    wait_gone(elb, cx, arn, &what).await?;
    ids.lb = None;
    Ok(Some(arn.to_owned()))
}

fn lb_attributes<'a>(
    pairs: impl Iterator<Item = (&'a String, &'a String)>,
) -> Vec<LoadBalancerAttribute> {
    pairs
        .map(|(k, v)| LoadBalancerAttribute::builder().key(k).value(v).build())
        .collect()
}

/// Sets load balancer attributes. Access logs fail with `InvalidConfigurationRequest: Access
/// Denied for bucket` while a bucket policy written moments ago is not in force yet: retried.
pub(super) async fn set_attributes(
    elb: &Client,
    cx: &Context,
    arn: &str,
    attributes: Vec<LoadBalancerAttribute>,
) -> Result<(), Error> {
    let what = format!("load-balancer {LB:?} ({arn})");
    Backoff::consistency(cx.waits())
        .retry_when(
            format!("ModifyLoadBalancerAttributes {what}"),
            |e: &SdkError<ModifyLoadBalancerAttributesError>| {
                e.code() == Some("LoadBalancerNotFound")
                    || (e.code() == Some("InvalidConfigurationRequest")
                        && e.message().is_some_and(|m| m.contains("Access Denied")))
            },
            || {
                elb.modify_load_balancer_attributes()
                    .load_balancer_arn(arn)
                    .set_attributes(Some(attributes.clone()))
                    .send()
            },
        )
        .await
        .map(drop)
        .map_err(|e| waited("ModifyLoadBalancerAttributes", &what)(e).into())
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

// The diff: the steps that take what exists to what is wanted. Pure: no AWS call.

/// The load balancer: created, or checked (scheme, type and VPC cannot change) and its
/// subnets, security groups and attributes repaired.
pub(crate) fn steps(
    cx: &Context,
    desired: &Desired,
    observed: &Observed,
    ops: &mut Vec<Op>,
    retags: &mut Vec<Op>,
) -> Result<(), Error> {
    match &observed.lb {
        None => ops.push(Op::CreateLoadBalancer {
            name: desired.lb_name.clone(),
            subnets: desired.subnets.clone(),
            security_groups: desired.security_groups.clone(),
            attributes: desired.lb_attributes.clone(),
        }),
        Some(lb) => {
            let arn = lb.load_balancer_arn().unwrap_or_default();
            let what = format!("load-balancer {LB:?} ({arn})");
            let scheme = lb.scheme().map(|s| s.as_str()).unwrap_or_default();
            if scheme != "internet-facing" {
                return Err(replacement(what, "scheme", scheme, "internet-facing"));
            }
            let kind = lb.r#type().map(|t| t.as_str()).unwrap_or_default();
            if kind != "application" {
                return Err(replacement(what, "type", kind, "application"));
            }
            let vpc = lb.vpc_id().unwrap_or_default();
            if vpc != desired.vpc_id {
                return Err(replacement(what, "vpc", vpc, &desired.vpc_id));
            }
            let mut subnets: Vec<String> = lb
                .availability_zones()
                .iter()
                .filter_map(|z| z.subnet_id().map(str::to_owned))
                .collect();
            subnets.sort();
            if subnets != desired.subnets {
                ops.push(Op::SetSubnets {
                    arn: arn.to_owned(),
                    have: subnets,
                    want: desired.subnets.clone(),
                });
            }
            let mut groups = lb.security_groups().to_vec();
            groups.sort();
            if groups != desired.security_groups {
                ops.push(Op::SetSecurityGroups {
                    arn: arn.to_owned(),
                    have: groups,
                    want: desired.security_groups.clone(),
                });
            }
            let changes = settings(&desired.lb_attributes, &observed.lb_attributes);
            if !changes.is_empty() {
                ops.push(Op::SetLbAttributes {
                    arn: arn.to_owned(),
                    changes,
                });
            }
            retag(cx, observed, Kind::LoadBalancer, LB, arn, retags);
        }
    }
    Ok(())
}
