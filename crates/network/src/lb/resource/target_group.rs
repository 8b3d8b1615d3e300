//! The target group of `ip` targets: its health check and attributes.

use aws_sdk_elasticloadbalancingv2::Client;
use aws_sdk_elasticloadbalancingv2::types::{
    Matcher, ProtocolEnum, TargetGroup, TargetGroupAttribute, TargetTypeEnum,
};
use infra::Context;

use super::{Ids, changed, missing, settle, tags};
use crate::error::Error;
use crate::lb::config::HealthCheckSpec;
use crate::lb::diff::{Desired, Kind, Op, Setting, TG, replacement, retag, settings};
use crate::lb::observe::Observed;
use crate::resource::delete;

/// What a new target group is made of.
pub(super) struct New<'a> {
    pub(super) name: &'a str,
    pub(super) vpc_id: &'a str,
    pub(super) port: i32,
    pub(super) health: &'a HealthCheckSpec,
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
        vpc_id,
        port,
        health: h,
        attributes,
    } = new;
    let out = settle(
        cx,
        "CreateTargetGroup",
        &format!("target-group {name}"),
        || {
            elb.create_target_group()
                .name(name)
                .protocol(ProtocolEnum::Http)
                .port(port)
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
    set_attributes(elb, cx, &arn, tg_attributes(attributes.iter())).await?;
    Ok(Some(arn))
}

pub(super) async fn set_health_check(
    elb: &Client,
    cx: &Context,
    arn: &str,
    h: &HealthCheckSpec,
) -> Result<Option<String>, Error> {
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
    Ok(Some(arn.to_owned()))
}

/// Sets the attributes that drifted.
pub(super) async fn repair_attributes(
    elb: &Client,
    cx: &Context,
    arn: &str,
    changes: &[Setting],
) -> Result<Option<String>, Error> {
    set_attributes(elb, cx, arn, tg_attributes(changed(changes))).await?;
    Ok(Some(arn.to_owned()))
}

pub(super) async fn remove(
    elb: &Client,
    cx: &Context,
    arn: &str,
    ids: &mut Ids,
) -> Result<Option<String>, Error> {
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
    Ok(Some(arn.to_owned()))
}

fn tg_attributes<'a>(
    pairs: impl Iterator<Item = (&'a String, &'a String)>,
) -> Vec<TargetGroupAttribute> {
    pairs
        .map(|(k, v)| TargetGroupAttribute::builder().key(k).value(v).build())
        .collect()
}

async fn set_attributes(
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

// The diff: the steps that take what exists to what is wanted. Pure: no AWS call.

/// The target group: created, or checked (protocol, port, VPC and target type cannot change)
/// and its health check and attributes repaired.
pub(crate) fn steps(
    cx: &Context,
    desired: &Desired,
    observed: &Observed,
    ops: &mut Vec<Op>,
    retags: &mut Vec<Op>,
) -> Result<(), Error> {
    match &observed.tg {
        None => ops.push(Op::CreateTargetGroup {
            name: desired.tg_name.clone(),
            vpc_id: desired.vpc_id.clone(),
            port: desired.target_port,
            health: desired.health.clone(),
            attributes: desired.tg_attributes.clone(),
        }),
        Some(tg) => {
            let arn = tg.target_group_arn().unwrap_or_default();
            let what = format!("target-group {TG:?} ({arn})");
            let str_of = |s: Option<&str>| s.unwrap_or_default().to_owned();
            for (field, have, want) in [
                (
                    "protocol",
                    str_of(tg.protocol().map(|p| p.as_str())),
                    "HTTP".to_owned(),
                ),
                (
                    "port",
                    tg.port().unwrap_or_default().to_string(),
                    desired.target_port.to_string(),
                ),
                ("vpc", str_of(tg.vpc_id()), desired.vpc_id.clone()),
                (
                    "target type",
                    str_of(tg.target_type().map(|t| t.as_str())),
                    "ip".to_owned(),
                ),
            ] {
                if have != want {
                    return Err(replacement(what, field, &have, &want));
                }
            }
            let changes = health_changes(&desired.health, tg);
            if !changes.is_empty() {
                ops.push(Op::SetHealthCheck {
                    arn: arn.to_owned(),
                    health: desired.health.clone(),
                    changes,
                });
            }
            let changes = settings(&desired.tg_attributes, &observed.tg_attributes);
            if !changes.is_empty() {
                ops.push(Op::SetTgAttributes {
                    arn: arn.to_owned(),
                    changes,
                });
            }
            retag(cx, observed, Kind::TargetGroup, TG, arn, retags);
        }
    }
    Ok(())
}

/// The health check settings of `tg` that differ from `h`.
fn health_changes(h: &HealthCheckSpec, tg: &TargetGroup) -> Vec<Setting> {
    let num = |v: Option<i32>| v.map(|v| v.to_string());
    let have_health = [
        (
            "path",
            tg.health_check_path().map(str::to_owned),
            h.path.clone(),
        ),
        (
            "interval",
            num(tg.health_check_interval_seconds()),
            h.interval_seconds.to_string(),
        ),
        (
            "timeout",
            num(tg.health_check_timeout_seconds()),
            h.timeout_seconds.to_string(),
        ),
        (
            "healthy threshold",
            num(tg.healthy_threshold_count()),
            h.healthy_threshold.to_string(),
        ),
        (
            "unhealthy threshold",
            num(tg.unhealthy_threshold_count()),
            h.unhealthy_threshold.to_string(),
        ),
        (
            "matcher",
            tg.matcher().and_then(|m| m.http_code()).map(str::to_owned),
            h.matcher.clone(),
        ),
        (
            "protocol",
            tg.health_check_protocol().map(|p| p.as_str().to_owned()),
            "HTTP".to_owned(),
        ),
    ];
    have_health
        .into_iter()
        .filter(|(_, have, want)| have.as_ref() != Some(want))
        .map(|(key, have, want)| Setting {
            key: format!("health check {key}"),
            have,
            want,
        })
        .collect()
}
