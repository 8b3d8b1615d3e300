//! The differences between what the configuration asks for and what exists, as ordered steps,
//! and the order in which everything of the stack can be deleted. Pure: no AWS call.

use aws_sdk_ec2::types::{IpPermission, RouteState, SecurityGroup};

use super::dedup::{Deduped, dedup};
use super::*;
use crate::Error;
use crate::observe::{Observed, name_tag, tag_map};
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
fn one<'a, T>(
    name: &str,
    items: &'a [T],
    tags: impl Fn(&T) -> &[aws_sdk_ec2::types::Tag],
) -> Option<&'a T> {
    items.iter().find(|i| name_tag(tags(i)) == Some(name))
}

fn retag(
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
    let vpc = vpc_steps(cx, desired, observed, &mut ops, &mut retags)?;
    subnet_steps(cx, desired, observed, &mut ops, &mut retags)?;
    gateway_steps(cx, vpc, observed, &mut ops, &mut retags);
    nat_steps(cx, desired, observed, &mut ops, &mut retags);
    group_steps(cx, desired, observed, &mut ops, &mut retags);
    let subnet_ids: BTreeMap<&str, &str> = observed
        .subnets
        .iter()
        .filter_map(|s| Some((name_tag(s.tags())?, s.subnet_id()?)))
        .collect();
    let route_ops = table_steps(cx, desired, observed, &subnet_ids, &mut ops, &mut retags);
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
    ops.extend(endpoint_ops(
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

/// The VPC: created, or checked (its CIDR cannot change) and its DNS settings repaired.
/// Returns the one that exists.
fn vpc_steps<'a>(
    cx: &Context,
    desired: &Desired,
    observed: &'a Observed,
    ops: &mut Vec<Op>,
    retags: &mut Vec<Op>,
) -> Result<Option<&'a aws_sdk_ec2::types::Vpc>, Error> {
    let vpc = one(VPC, &observed.vpcs, |v| v.tags());
    match vpc {
        None => ops.push(Op::CreateVpc {
            cidr: desired.vpc_cidr.clone(),
        }),
        Some(v) => {
            let have = v.cidr_block().unwrap_or_default();
            if have != desired.vpc_cidr {
                return Err(Error::NeedsReplacement {
                    resource: format!("vpc {:?} ({})", VPC, v.vpc_id().unwrap_or_default()),
                    field: "cidr",
                    have: have.to_owned(),
                    want: desired.vpc_cidr.clone(),
                });
            }
            if let Some(was) = observed.dns.filter(|d| *d != (true, true)) {
                ops.push(Op::SetDns { was });
            }
            retag(cx, Kind::Vpc, VPC, v.vpc_id(), v.tags(), retags);
        }
    }
    Ok(vpc)
}

/// One public and one private subnet per zone; a CIDR or zone that differs needs a new one.
fn subnet_steps(
    cx: &Context,
    desired: &Desired,
    observed: &Observed,
    ops: &mut Vec<Op>,
    retags: &mut Vec<Op>,
) -> Result<(), Error> {
    for s in &desired.subnets {
        match one(&s.name, &observed.subnets, |x| x.tags()) {
            None => ops.push(Op::CreateSubnet(s.clone())),
            Some(have) => {
                let id = have.subnet_id().unwrap_or_default();
                for (field, h, w) in [
                    ("cidr", have.cidr_block(), &s.cidr),
                    ("availability zone", have.availability_zone(), &s.zone),
                ] {
                    if h.unwrap_or_default() != w {
                        return Err(Error::NeedsReplacement {
                            resource: format!("subnet {:?} ({id})", s.name),
                            field,
                            have: h.unwrap_or_default().to_owned(),
                            want: w.clone(),
                        });
                    }
                }
                retag(
                    cx,
                    Kind::Subnet,
                    &s.name,
                    have.subnet_id(),
                    have.tags(),
                    retags,
                );
            }
        }
    }
    Ok(())
}

/// The internet gateway, attached to the VPC.
fn gateway_steps(
    cx: &Context,
    vpc: Option<&aws_sdk_ec2::types::Vpc>,
    observed: &Observed,
    ops: &mut Vec<Op>,
    retags: &mut Vec<Op>,
) {
    match one(IGW, &observed.igws, |x| x.tags()) {
        None => ops.push(Op::CreateIgw),
        Some(igw) => {
            let attached =
                vpc.is_some_and(|v| igw.attachments().iter().any(|a| a.vpc_id() == v.vpc_id()));
            if !attached {
                ops.push(Op::AttachIgw);
            }
            retag(
                cx,
                Kind::InternetGateway,
                IGW,
                igw.internet_gateway_id(),
                igw.tags(),
                retags,
            );
        }
    }
}

/// An Elastic IP and a NAT gateway per wanted NAT.
fn nat_steps(
    cx: &Context,
    desired: &Desired,
    observed: &Observed,
    ops: &mut Vec<Op>,
    retags: &mut Vec<Op>,
) {
    for nat in &desired.nats {
        match one(&nat.name, &observed.addresses, |x| x.tags()) {
            None => ops.push(Op::AllocateEip {
                name: nat.name.clone(),
            }),
            Some(a) => retag(
                cx,
                Kind::ElasticIp,
                &nat.name,
                a.allocation_id(),
                a.tags(),
                retags,
            ),
        }
        match one(&nat.name, &observed.nats, |x| x.tags()) {
            None => ops.push(Op::CreateNat {
                nat: nat.clone(),
                generation: observed.dead_nats.get(&nat.name).copied().unwrap_or(0),
            }),
            Some(n) => retag(
                cx,
                Kind::NatGateway,
                &nat.name,
                n.nat_gateway_id(),
                n.tags(),
                retags,
            ),
        }
    }
}

/// The security groups and their ingress rules: missing rules authorized, extra ones revoked.
fn group_steps(
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

/// The route tables and their subnet associations (into `ops`); returns the default routes'
/// steps, which wait for the NAT gateways.
fn table_steps(
    cx: &Context,
    desired: &Desired,
    observed: &Observed,
    subnet_ids: &BTreeMap<&str, &str>,
    ops: &mut Vec<Op>,
    retags: &mut Vec<Op>,
) -> Vec<Op> {
    let mut route_ops = Vec::new();
    for t in &desired.tables {
        let have = one(&t.name, &observed.route_tables, |x| x.tags());
        if have.is_none() {
            ops.push(Op::CreateTable {
                name: t.name.clone(),
            });
        }
        for subnet in &t.subnets {
            let sid = subnet_ids.get(subnet.as_str()).copied();
            let here = have.is_some_and(|h| {
                h.associations()
                    .iter()
                    .any(|a| sid.is_some() && a.subnet_id() == sid)
            });
            if !here {
                // Associated with another of our tables? Then the association is replaced.
                let elsewhere = observed
                    .route_tables
                    .iter()
                    .flat_map(|rt| rt.associations())
                    .find(|a| sid.is_some() && a.subnet_id() == sid)
                    .and_then(|a| a.route_table_association_id())
                    .map(str::to_owned);
                ops.push(Op::Associate {
                    table: t.name.clone(),
                    subnet: subnet.clone(),
                    replace: elsewhere,
                });
            }
        }
        let route = have.and_then(|h| {
            h.routes()
                .iter()
                .find(|r| r.destination_cidr_block() == Some(DEFAULT_ROUTE))
        });
        let nat_ids: BTreeMap<&str, &str> = observed
            .nats
            .iter()
            .filter_map(|n| Some((name_tag(n.tags())?, n.nat_gateway_id()?)))
            .collect();
        let igw_id = one(IGW, &observed.igws, |x| x.tags()).and_then(|i| i.internet_gateway_id());
        let op = match (&t.default_route, route) {
            (None, None) => None,
            (None, Some(_)) => Some(RouteOp::Delete),
            (Some(_), None) => Some(RouteOp::Create),
            (Some(target), Some(r)) => {
                let points_right = match target {
                    Target::Igw => igw_id.is_some() && r.gateway_id() == igw_id,
                    Target::Nat(name) => nat_ids
                        .get(name.as_str())
                        .is_some_and(|id| r.nat_gateway_id() == Some(*id)),
                };
                let dead = r.state() == Some(&RouteState::Blackhole);
                (!points_right || dead).then_some(RouteOp::Replace)
            }
        };
        if let Some(op) = op {
            route_ops.push(Op::Route {
                table: t.name.clone(),
                op,
                target: t.default_route.clone(),
            });
        }
        if let Some(h) = have {
            retag(
                cx,
                Kind::RouteTable,
                &t.name,
                h.route_table_id(),
                h.tags(),
                retags,
            );
        }
    }
    route_ops
}

/// The VPC endpoints: created, replaced when their service or type changed, moved to the
/// route tables or subnets they should be in (a second one of a name went in `dedup`).
fn endpoint_ops(
    cx: &Context,
    desired: &Desired,
    observed: &Observed,
    subnet_ids: &BTreeMap<&str, &str>,
    retags: &mut Vec<Op>,
) -> Vec<Op> {
    let table_ids: BTreeMap<&str, &str> = observed
        .route_tables
        .iter()
        .filter_map(|t| Some((name_tag(t.tags())?, t.route_table_id()?)))
        .collect();
    let mut ops = Vec::new();
    for e in &desired.endpoints {
        let Some(have) = one(&e.name, &observed.endpoints, |x| x.tags()) else {
            ops.push(Op::CreateEndpoint(e.clone()));
            continue;
        };
        let id = have.vpc_endpoint_id().unwrap_or_default();
        let gateway = have
            .vpc_endpoint_type()
            .is_some_and(|t| t.as_str().eq_ignore_ascii_case("gateway"));
        if have.service_name() != Some(e.service.as_str()) || gateway != e.gateway {
            ops.push(Op::Delete {
                kind: Kind::VpcEndpoint,
                name: e.name.clone(),
                id: id.to_owned(),
                related: Vec::new(),
                duplicate: None,
            });
            ops.push(Op::CreateEndpoint(e.clone()));
            continue;
        }
        let (have_ids, ids): (BTreeSet<&str>, &BTreeMap<&str, &str>) = if e.gateway {
            (
                have.route_table_ids().iter().map(String::as_str).collect(),
                &table_ids,
            )
        } else {
            (
                have.subnet_ids().iter().map(String::as_str).collect(),
                subnet_ids,
            )
        };
        let add: Vec<String> = e
            .attach
            .iter()
            .filter(|n| ids.get(n.as_str()).is_none_or(|id| !have_ids.contains(id)))
            .cloned()
            .collect();
        let want_ids: BTreeSet<&str> = e
            .attach
            .iter()
            .filter_map(|n| ids.get(n.as_str()).copied())
            .collect();
        let remove: Vec<String> = have_ids
            .difference(&want_ids)
            .map(|s| (*s).to_owned())
            .collect();
        if !add.is_empty() || !remove.is_empty() {
            ops.push(Op::ModifyEndpoint {
                name: e.name.clone(),
                id: id.to_owned(),
                gateway: e.gateway,
                add,
                remove,
            });
        }
        retag(
            cx,
            Kind::VpcEndpoint,
            &e.name,
            have.vpc_endpoint_id(),
            have.tags(),
            retags,
        );
    }
    ops
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
