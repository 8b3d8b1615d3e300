//! The differences between what the configuration asks for and what exists, as ordered steps,
//! and the order in which everything of the stack can be deleted. Pure: no AWS call.

use aws_sdk_ec2::types::{IpPermission, SecurityGroup};

use super::dedup::{Deduped, dedup};
use super::*;
use crate::Error;
use crate::observe::{Observed, name_tag, tag_map};
use crate::resource;
/// The rules of an existing group, flattened.
pub(crate) fn observed_rules(permissions: &[IpPermission]) -> BTreeSet<Rule> {
    let mut rules = BTreeSet::new();
    for p in permissions {
        let protocol = p.ip_protocol().unwrap_or("-1").to_owned();
        let (from, to) = (p.from_port().unwrap_or(-1), p.to_port().unwrap_or(-1));
        let rule = |source| Rule {
            protocol: protocol.clone(),
            from,
            to,
            source,
        };
        rules.extend(
            p.ip_ranges()
                .iter()
                .filter_map(|r| r.cidr_ip())
                .map(|c| rule(Source::Ipv4(c.to_owned()))),
        );
        rules.extend(
            p.ipv6_ranges()
                .iter()
                .filter_map(|r| r.cidr_ipv6())
                .map(|c| rule(Source::Ipv6(c.to_owned()))),
        );
        rules.extend(
            p.user_id_group_pairs()
                .iter()
                .filter_map(|g| g.group_id())
                .map(|g| rule(Source::Group(g.to_owned()))),
        );
    }
    rules
}

/// The resource named `name` among `items`: after [`dedup`] there is at most one.
pub(crate) fn one<'a, T>(
    name: &str,
    items: &'a [T],
    tags: impl Fn(&T) -> &[aws_sdk_ec2::types::Tag],
) -> Option<&'a T> {
    items.iter().find(|i| name_tag(tags(i)) == Some(name))
}

pub(crate) fn retag(
    cx: &Context,
    kind: Kind,
    name: &str,
    id: Option<&str>,
    have: &[aws_sdk_ec2::types::Tag],
    ops: &mut Vec<Op>,
) {
    let want = cx.tags(MODULE, name);
    let have = tag_map(have);
    let missing = infra::tags::missing(&want, &have);
    if let (Some(id), false) = (id, missing.is_empty()) {
        let tags = missing
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        ops.push(Op::Retag {
            kind,
            name: name.to_owned(),
            id: id.to_owned(),
            tags,
        });
    }
}

/// The steps that take `observed` to `desired`. Pure: no AWS call. Duplicates are deleted
/// first (see [`dedup`]): the ones kept are those in use, so nothing the stack uses goes away.
/// Then each kind in the order EC2 needs (a subnet needs its VPC, a route its gateway); the
/// wait for NAT gateways comes before the default routes that point at them, and missing tags
/// are put back after every create.
pub(crate) fn diff(cx: &Context, desired: &Desired, observed: &Observed) -> Result<Vec<Op>, Error> {
    let Deduped {
        kept: observed,
        deletes: mut ops,
    } = dedup(observed);
    let observed = &observed;
    let mut retags = Vec::new();
    let vpc = resource::vpc::steps(cx, desired, observed, &mut ops, &mut retags)?;
    resource::subnet::steps(cx, desired, observed, &mut ops, &mut retags)?;
    resource::gateway::igw_steps(cx, vpc, observed, &mut ops, &mut retags);
    resource::gateway::nat_steps(cx, desired, observed, &mut ops, &mut retags);
    resource::security_group::steps(cx, desired, observed, &mut ops, &mut retags);
    let subnet_ids: BTreeMap<&str, &str> = observed
        .subnets
        .iter()
        .filter_map(|s| Some((name_tag(s.tags())?, s.subnet_id()?)))
        .collect();
    let route_ops =
        resource::route_table::steps(cx, desired, observed, &subnet_ids, &mut ops, &mut retags);
    let needs_nats = route_ops.iter().any(|o| {
        matches!(
            o,
            Op::Route {
                target: Some(Target::Nat(_)),
                op: RouteOp::Create | RouteOp::Replace,
                ..
            }
        )
    });
    if needs_nats {
        ops.push(Op::WaitNats);
    }
    ops.extend(route_ops);
    ops.extend(resource::endpoint::steps(
        cx,
        desired,
        observed,
        &subnet_ids,
        &mut retags,
    ));
    ops.extend(retags);
    ops.extend(extras(desired, observed));
    Ok(ops)
}

/// Resources of the stack that the configuration no longer asks for (fewer zones, another NAT
/// mode, no endpoints), in the order they can be deleted.
fn extras(desired: &Desired, observed: &Observed) -> Vec<Op> {
    let wanted_nats: BTreeSet<&str> = desired.nats.iter().map(|n| n.name.as_str()).collect();
    let wanted_subnets: BTreeSet<&str> = desired.subnets.iter().map(|s| s.name.as_str()).collect();
    let wanted_tables: BTreeSet<&str> = desired.tables.iter().map(|t| t.name.as_str()).collect();
    let wanted_endpoints: BTreeSet<&str> =
        desired.endpoints.iter().map(|e| e.name.as_str()).collect();
    let wanted_groups: BTreeSet<&str> = desired.groups.iter().map(|g| g.name.as_str()).collect();
    let mut ops = Vec::new();
    let mut push = |kind,
                    name: Option<&str>,
                    id: Option<&str>,
                    related: Vec<String>,
                    keep: &BTreeSet<&str>| {
        if let (Some(name), Some(id)) = (name, id)
            && !keep.contains(name)
        {
            ops.push(Op::Delete {
                kind,
                name: name.to_owned(),
                id: id.to_owned(),
                related,
                duplicate: None,
            });
        }
    };
    for e in &observed.endpoints {
        push(
            Kind::VpcEndpoint,
            name_tag(e.tags()),
            e.vpc_endpoint_id(),
            Vec::new(),
            &wanted_endpoints,
        );
    }
    for n in &observed.nats {
        push(
            Kind::NatGateway,
            name_tag(n.tags()),
            n.nat_gateway_id(),
            Vec::new(),
            &wanted_nats,
        );
    }
    for a in &observed.addresses {
        push(
            Kind::ElasticIp,
            name_tag(a.tags()),
            a.allocation_id(),
            Vec::new(),
            &wanted_nats,
        );
    }
    for s in &observed.subnets {
        push(
            Kind::Subnet,
            name_tag(s.tags()),
            s.subnet_id(),
            Vec::new(),
            &wanted_subnets,
        );
    }
    for t in &observed.route_tables {
        push(
            Kind::RouteTable,
            name_tag(t.tags()),
            t.route_table_id(),
            associations(t),
            &wanted_tables,
        );
    }
    // Only the endpoints' group comes and goes with the configuration.
    for g in &observed.security_groups {
        if name_tag(g.tags()) == Some(ENDPOINT_GROUP) {
            push(
                Kind::SecurityGroup,
                name_tag(g.tags()),
                g.group_id(),
                Vec::new(),
                &wanted_groups,
            );
        }
    }
    ops
}

/// Every resource of the stack, in the order AWS lets them be deleted.
pub(crate) fn teardown(observed: &Observed) -> Vec<Op> {
    let mut ops = Vec::new();
    let name = |tags: &[aws_sdk_ec2::types::Tag]| name_tag(tags).unwrap_or("?").to_owned();
    let mut push = |kind, name: String, id: Option<&str>, related: Vec<String>| {
        if let Some(id) = id {
            ops.push(Op::Delete {
                kind,
                name,
                id: id.to_owned(),
                related,
                duplicate: None,
            });
        }
    };
    // Endpoints hold network interfaces in the subnets and use a security group: first.
    for e in &observed.endpoints {
        push(
            Kind::VpcEndpoint,
            name(e.tags()),
            e.vpc_endpoint_id(),
            Vec::new(),
        );
    }
    for n in &observed.nats {
        push(
            Kind::NatGateway,
            name(n.tags()),
            n.nat_gateway_id(),
            Vec::new(),
        );
    }
    for a in &observed.addresses {
        push(
            Kind::ElasticIp,
            name(a.tags()),
            a.allocation_id(),
            Vec::new(),
        );
    }
    for i in &observed.igws {
        let vpcs = i
            .attachments()
            .iter()
            .filter_map(|a| a.vpc_id().map(str::to_owned))
            .collect();
        push(
            Kind::InternetGateway,
            name(i.tags()),
            i.internet_gateway_id(),
            vpcs,
        );
    }
    // A deny-all ACL left by an isolation: its subnets go back to the default ACL first.
    for a in observed
        .network_acls
        .iter()
        .filter(|a| a.is_default() != Some(true))
    {
        let assocs = a
            .associations()
            .iter()
            .filter_map(|x| x.network_acl_association_id().map(str::to_owned))
            .collect();
        push(Kind::NetworkAcl, name(a.tags()), a.network_acl_id(), assocs);
    }
    for s in &observed.subnets {
        push(Kind::Subnet, name(s.tags()), s.subnet_id(), Vec::new());
    }
    for t in &observed.route_tables {
        let main = t.associations().iter().any(|a| a.main() == Some(true));
        if !main {
            push(
                Kind::RouteTable,
                name(t.tags()),
                t.route_table_id(),
                associations(t),
            );
        }
    }
    // Groups that reference other groups go first, so the referenced ones are free to go.
    let mut groups: Vec<&SecurityGroup> = observed
        .security_groups
        .iter()
        .filter(|g| g.group_name() != Some("default"))
        .collect();
    groups.sort_by_key(|g| {
        observed_rules(g.ip_permissions())
            .iter()
            .all(|r| !matches!(r.source, Source::Group(_)))
    });
    for g in groups {
        push(
            Kind::SecurityGroup,
            name(g.tags()),
            g.group_id(),
            Vec::new(),
        );
    }
    for v in &observed.vpcs {
        push(Kind::Vpc, name(v.tags()), v.vpc_id(), Vec::new());
    }
    ops
}

/// The subnet associations of a route table (not the main one, which goes with the VPC).
fn associations(table: &aws_sdk_ec2::types::RouteTable) -> Vec<String> {
    table
        .associations()
        .iter()
        .filter(|a| a.main() != Some(true))
        .filter_map(|a| a.route_table_association_id().map(str::to_owned))
        .collect()
}
