//! Security groups and their ingress rules.

use std::collections::{BTreeMap, BTreeSet};

use aws_sdk_ec2::Client;
use aws_sdk_ec2::types::{
    IpPermission, IpRange, Ipv6Range, ResourceType, SecurityGroup, UserIdGroupPair,
};
use infra::{Context, aws};

use super::{Ids, delete, need, need_one, settle, tag_spec};
use crate::desired::{Desired, Kind, Op, Rule, Source, VPC, observed_rules, one, retag};
use crate::error::Error;
use crate::observe::{Observed, name_tag};

pub(super) async fn create(
    ec2: &Client,
    cx: &Context,
    name: &str,
    description: &str,
    ids: &mut Ids,
) -> Result<Option<String>, Error> {
    let vpc = need_one(&ids.vpc, "vpc", VPC)?;
    let out = settle(
        cx,
        "CreateSecurityGroup",
        &format!("security-group {name:?}"),
        || {
            ec2.create_security_group()
                .group_name(format!("{}-{name}", cx.stack()))
                .description(description)
                .vpc_id(vpc)
                .tag_specifications(tag_spec(cx, ResourceType::SecurityGroup, name))
                .send()
        },
    )
    .await?;
    let id = out.group_id().unwrap_or_default().to_owned();
    ids.groups.insert(name.to_owned(), id.clone());
    Ok(Some(id))
}

/// Adds `rules` to `group`; a rule that is there already counts as added.
pub(super) async fn authorize(
    ec2: &Client,
    cx: &Context,
    group: &str,
    rules: &[Rule],
    ids: &Ids,
) -> Result<Option<String>, Error> {
    let id = need(&ids.groups, "security-group", group)?;
    let perms = permissions(rules, &ids.groups)?;
    let res = settle(
        cx,
        "AuthorizeSecurityGroupIngress",
        &format!("security-group {group:?} ({id})"),
        || {
            ec2.authorize_security_group_ingress()
                .group_id(id)
                .set_ip_permissions(Some(perms.clone()))
                .send()
        },
    )
    .await;
    match res {
        Err(e) if e.code() == Some("InvalidPermission.Duplicate") => {}
        other => drop(other?),
    }
    Ok(Some(id.to_owned()))
}

pub(super) async fn revoke(
    ec2: &Client,
    group: &str,
    id: &str,
    rules: &[Rule],
    ids: &Ids,
) -> Result<Option<String>, Error> {
    ec2.revoke_security_group_ingress()
        .group_id(id)
        .set_ip_permissions(Some(permissions(rules, &ids.groups)?))
        .send()
        .await
        .map_err(aws(
            "RevokeSecurityGroupIngress",
            format!("security-group {group:?} ({id})"),
        ))?;
    Ok(Some(id.to_owned()))
}

fn permissions(
    rules: &[Rule],
    group_ids: &BTreeMap<String, String>,
) -> Result<Vec<IpPermission>, Error> {
    rules.iter().map(|r| permission(r, group_ids)).collect()
}

fn permission(rule: &Rule, group_ids: &BTreeMap<String, String>) -> Result<IpPermission, Error> {
    let p = IpPermission::builder()
        .ip_protocol(&rule.protocol)
        .from_port(rule.from)
        .to_port(rule.to);
    Ok(match &rule.source {
        Source::Ipv4(c) => p.ip_ranges(IpRange::builder().cidr_ip(c).build()),
        Source::Ipv6(c) => p.ipv6_ranges(Ipv6Range::builder().cidr_ipv6(c).build()),
        Source::Group(g) if g.starts_with("sg-") => {
            p.user_id_group_pairs(UserIdGroupPair::builder().group_id(g).build())
        }
        Source::Group(name) => p.user_id_group_pairs(
            UserIdGroupPair::builder()
                .group_id(need(group_ids, "security-group", name)?)
                .build(),
        ),
    }
    .build())
}

pub(super) async fn remove(ec2: &Client, cx: &Context, id: &str, what: &str) -> Result<(), Error> {
    delete(cx, "DeleteSecurityGroup", what, &[], || {
        ec2.delete_security_group().group_id(id).send()
    })
    .await
}

// The diff: the steps that take what exists to what is wanted. Pure: no AWS call.

/// The security groups and their ingress rules: missing rules authorized, extra ones revoked.
pub(crate) fn steps(
    cx: &Context,
    desired: &Desired,
    observed: &Observed,
    ops: &mut Vec<Op>,
    retags: &mut Vec<Op>,
) {
    let group_ids: BTreeMap<&str, &str> = observed
        .security_groups
        .iter()
        .filter_map(|g| Some((name_tag(g.tags())?, g.group_id()?)))
        .collect();
    for g in &desired.groups {
        let have: Option<&SecurityGroup> = one(&g.name, &observed.security_groups, |x| x.tags());
        if have.is_none() {
            ops.push(Op::CreateGroup {
                name: g.name.clone(),
                description: g.description.clone(),
            });
        }
        let have_rules = have
            .map(|h| observed_rules(h.ip_permissions()))
            .unwrap_or_default();
        // Compare with group references resolved to ids where the group exists.
        let resolve = |r: &Rule| match &r.source {
            Source::Group(name) => group_ids.get(name.as_str()).map(|id| Rule {
                source: Source::Group((*id).to_owned()),
                ..r.clone()
            }),
            _ => Some(r.clone()),
        };
        let want_resolved: BTreeSet<Rule> = g.rules.iter().filter_map(resolve).collect();
        let missing: Vec<Rule> = g
            .rules
            .iter()
            .filter(|r| resolve(r).is_none_or(|r| !have_rules.contains(&r)))
            .cloned()
            .collect();
        if !missing.is_empty() {
            ops.push(Op::Authorize {
                group: g.name.clone(),
                rules: missing,
            });
        }
        if let Some(h) = have {
            let extra: Vec<Rule> = have_rules.difference(&want_resolved).cloned().collect();
            if !extra.is_empty() {
                ops.push(Op::Revoke {
                    group: g.name.clone(),
                    id: h.group_id().unwrap_or_default().to_owned(),
                    rules: extra,
                });
            }
            retag(
                cx,
                Kind::SecurityGroup,
                &g.name,
                h.group_id(),
                h.tags(),
                retags,
            );
        }
    }
}
