//! Duplicates: two resources of the stack with one `stackproof:name`.
//!
//! Two writers that interleave (a `--force-unlock` on a run that is still going, a run stopped
//! between observing and creating) can each create what they both found missing. Apply keeps one
//! of each and deletes the others, and the choice is the same from any writer that looks, so two
//! writers converging at once delete the same extras:
//!
//! 1. the VPC with the most network interfaces (load balancer nodes, tasks, NAT gateways: what
//!    AWS would refuse to delete), then the one with the most of the stack's subnets; everything
//!    of the stack in another VPC is an extra, deleted in teardown order;
//! 2. inside the kept VPC, per name: the resource in use (a route table's subnet associations, a
//!    NAT gateway a route points at, an Elastic IP a kept NAT gateway holds, an internet gateway
//!    attached to the kept VPC, a subnet's addresses in use), then the oldest where AWS says when
//!    it was made (NAT gateways), then the lowest id.
//!
//! Pure: no AWS call. The network interfaces per VPC are read by [`Observed::read`] when there
//! is more than one VPC.

use std::cmp::Reverse;

use aws_sdk_ec2::types::{Address, InternetGateway, NatGateway, RouteTable, Tag, Vpc};

use super::*;
use crate::observe::{Observed, name_tag};

/// What an apply works on once duplicates are set aside, and the deletes that remove them.
#[derive(Debug, Default, Clone)]
pub(crate) struct Deduped {
    /// One resource per name, all in one VPC.
    pub(crate) kept: Observed,
    /// The extras, in the order they can be deleted, each saying which one was kept.
    pub(crate) deletes: Vec<Op>,
}

/// The VPC an apply keeps when the stack has more than one; `None` when it has none.
pub(crate) fn keep_vpc(observed: &Observed) -> Option<&Vpc> {
    observed.vpcs.iter().min_by_key(|v| {
        let id = v.vpc_id().unwrap_or_default();
        let enis = observed.enis.get(id).copied().unwrap_or(0);
        let subnets = observed
            .subnets
            .iter()
            .filter(|s| s.vpc_id() == Some(id))
            .count();
        (Reverse(enis), Reverse(subnets), id.to_owned())
    })
}

/// Sets the duplicates of `observed` aside: see the module's documentation for which is kept.
pub(crate) fn dedup(observed: &Observed) -> Deduped {
    let Some(vpc) = keep_vpc(observed) else {
        // No VPC: resources outside one (Elastic IPs, detached internet gateways) still pair up.
        return within(observed.clone(), Observed::default(), BTreeMap::new());
    };
    let vpc_id = vpc.vpc_id().unwrap_or_default().to_owned();
    let here = |v: Option<&str>| v.is_none_or(|v| v == vpc_id);
    let mut kept = Observed {
        dns: observed.dns,
        dead_nats: observed.dead_nats.clone(),
        enis: observed.enis.clone(),
        ..Observed::default()
    };
    let mut other = Observed::default();
    let mut why = BTreeMap::new();
    let elsewhere = |id: Option<&str>, vpc: Option<&str>, why: &mut BTreeMap<String, String>| {
        if let (Some(id), Some(vpc)) = (id, vpc) {
            why.insert(
                id.to_owned(),
                format!("in {vpc}, a second VPC of the stack; {vpc_id} is kept"),
            );
        }
    };
    for v in &observed.vpcs {
        if v.vpc_id() == Some(vpc_id.as_str()) {
            kept.vpcs.push(v.clone());
        } else {
            let id = v.vpc_id();
            if let Some(id) = id {
                why.insert(
                    id.to_owned(),
                    format!(
                        "a second VPC of the stack; {vpc_id} is kept ({})",
                        vpc_reason(observed, &vpc_id, id)
                    ),
                );
            }
            other.vpcs.push(v.clone());
        }
    }
    macro_rules! split {
        ($field:ident, $id:ident) => {
            for x in &observed.$field {
                if here(x.vpc_id()) {
                    kept.$field.push(x.clone());
                } else {
                    elsewhere(x.$id(), x.vpc_id(), &mut why);
                    other.$field.push(x.clone());
                }
            }
        };
    }
    split!(subnets, subnet_id);
    split!(route_tables, route_table_id);
    split!(nats, nat_gateway_id);
    split!(security_groups, group_id);
    split!(network_acls, network_acl_id);
    split!(endpoints, vpc_endpoint_id);
    for igw in &observed.igws {
        let attached: Vec<&str> = igw
            .attachments()
            .iter()
            .filter_map(|a| a.vpc_id())
            .collect();
        if attached.is_empty() || attached.contains(&vpc_id.as_str()) {
            kept.igws.push(igw.clone());
        } else {
            elsewhere(
                igw.internet_gateway_id(),
                attached.first().copied(),
                &mut why,
            );
            other.igws.push(igw.clone());
        }
    }
    // An Elastic IP goes with the NAT gateway that holds it.
    for a in &observed.addresses {
        let holder = other
            .nats
            .iter()
            .find(|n| holds(n, a))
            .and_then(|n| n.vpc_id());
        match holder {
            Some(v) => {
                elsewhere(a.allocation_id(), Some(v), &mut why);
                other.addresses.push(a.clone());
            }
            None => kept.addresses.push(a.clone()),
        }
    }
    within(kept, other, why)
}

/// Why `kept` won over `lost`, in words.
fn vpc_reason(observed: &Observed, kept: &str, lost: &str) -> String {
    let enis = |v: &str| observed.enis.get(v).copied().unwrap_or(0);
    let subnets = |v: &str| {
        observed
            .subnets
            .iter()
            .filter(|s| s.vpc_id() == Some(v))
            .count()
    };
    if enis(kept) != enis(lost) {
        format!(
            "{} network interfaces in use against {}",
            enis(kept),
            enis(lost)
        )
    } else if subnets(kept) != subnets(lost) {
        format!("{} subnets against {}", subnets(kept), subnets(lost))
    } else {
        "the lower id".to_owned()
    }
}

fn holds(nat: &NatGateway, address: &Address) -> bool {
    nat.nat_gateway_addresses()
        .iter()
        .any(|x| x.allocation_id().is_some() && x.allocation_id() == address.allocation_id())
}

/// Keeps one of each name among `items` by `rank` (lowest first, then the lowest id) and moves
/// the others to `extras`, noting why in `why`: `reasons` says in words what each half of the
/// rank means.
fn pick<T: Clone>(
    items: Vec<T>,
    tags: impl Fn(&T) -> &[Tag],
    id: impl Fn(&T) -> Option<&str>,
    rank: impl Fn(&T) -> (u8, i64),
    reasons: [&str; 2],
    extras: &mut Vec<T>,
    why: &mut BTreeMap<String, String>,
) -> Vec<T> {
    let mut by_name: BTreeMap<String, Vec<T>> = BTreeMap::new();
    let mut kept = Vec::new();
    for item in items {
        match name_tag(tags(&item)) {
            Some(name) => by_name.entry(name.to_owned()).or_default().push(item),
            None => kept.push(item),
        }
    }
    for (_, mut group) in by_name {
        group.sort_by(|a, b| {
            (rank(a), id(a).unwrap_or_default()).cmp(&(rank(b), id(b).unwrap_or_default()))
        });
        let mut group = group.into_iter();
        let Some(first) = group.next() else { continue };
        let first_id = id(&first).unwrap_or_default().to_owned();
        let first_rank = rank(&first);
        for extra in group {
            if let Some(x) = id(&extra) {
                let because = if rank(&extra).0 != first_rank.0 {
                    reasons[0]
                } else if rank(&extra).1 != first_rank.1 {
                    reasons[1]
                } else {
                    "the lower id"
                };
                why.insert(
                    x.to_owned(),
                    format!("a duplicate; {first_id} is kept ({because})"),
                );
            }
            extras.push(extra);
        }
        kept.push(first);
    }
    kept
}

/// The NAT gateways (the one a route uses, else the older) and the Elastic IPs (the one a kept
/// gateway holds, else an associated one).
fn pick_nats(kept: &mut Observed, other: &mut Observed, w: &mut BTreeMap<String, String>) {
    let routed: BTreeSet<String> = kept
        .route_tables
        .iter()
        .flat_map(|t| t.routes())
        .filter_map(|r| r.nat_gateway_id().map(str::to_owned))
        .collect();
    kept.nats = pick(
        std::mem::take(&mut kept.nats),
        |x| x.tags(),
        |x| x.nat_gateway_id(),
        |x| {
            let used = x.nat_gateway_id().is_some_and(|id| routed.contains(id));
            let made = x.create_time().map(|t| t.secs()).unwrap_or(i64::MAX);
            (u8::from(!used), made)
        },
        ["a route uses it", "older"],
        &mut other.nats,
        w,
    );
    let held: Vec<NatGateway> = kept.nats.clone();
    kept.addresses = pick(
        std::mem::take(&mut kept.addresses),
        |x| x.tags(),
        |x| x.allocation_id(),
        |x| {
            let rank = if held.iter().any(|n| holds(n, x)) {
                0
            } else if x.association_id().is_some() {
                1
            } else {
                2
            };
            (rank, 0)
        },
        ["a kept NAT gateway holds it, or it is associated", ""],
        &mut other.addresses,
        w,
    );
}

/// One of each name inside the kept VPC; `other` (what lies in other VPCs) and the duplicates
/// become the deletes.
fn within(mut kept: Observed, mut other: Observed, mut why: BTreeMap<String, String>) -> Deduped {
    let w = &mut why;
    kept.subnets = pick(
        std::mem::take(&mut kept.subnets),
        |x| x.tags(),
        |x| x.subnet_id(),
        // Fewer free addresses: more in use.
        |x| (0, i64::from(x.available_ip_address_count().unwrap_or(0))),
        ["", "more addresses in use"],
        &mut other.subnets,
        w,
    );
    let vpc = kept
        .vpcs
        .first()
        .and_then(|v| v.vpc_id())
        .map(str::to_owned);
    kept.igws = pick(
        std::mem::take(&mut kept.igws),
        |x| x.tags(),
        |x| x.internet_gateway_id(),
        |x: &InternetGateway| {
            let attached = x
                .attachments()
                .iter()
                .any(|a| vpc.is_some() && a.vpc_id() == vpc.as_deref());
            (u8::from(!attached), 0)
        },
        ["attached to the VPC", ""],
        &mut other.igws,
        w,
    );
    pick_nats(&mut kept, &mut other, w);
    kept.route_tables = pick(
        std::mem::take(&mut kept.route_tables),
        |x| x.tags(),
        |x| x.route_table_id(),
        |x: &RouteTable| {
            let n = x
                .associations()
                .iter()
                .filter(|a| a.main() != Some(true))
                .count();
            (0, -(n as i64))
        },
        ["", "more subnets associated"],
        &mut other.route_tables,
        w,
    );
    kept.security_groups = pick(
        std::mem::take(&mut kept.security_groups),
        |x| x.tags(),
        |x| x.group_id(),
        |_| (0, 0),
        ["", ""],
        &mut other.security_groups,
        w,
    );
    kept.network_acls = pick(
        std::mem::take(&mut kept.network_acls),
        |x| x.tags(),
        |x| x.network_acl_id(),
        |x| (0, -(x.associations().len() as i64)),
        ["", "more subnets associated"],
        &mut other.network_acls,
        w,
    );
    kept.endpoints = pick(
        std::mem::take(&mut kept.endpoints),
        |x| x.tags(),
        |x| x.vpc_endpoint_id(),
        |x| (0, x.creation_timestamp().map_or(i64::MAX, |t| t.secs())),
        ["", "older"],
        &mut other.endpoints,
        w,
    );
    let mut deletes = super::teardown(&other);
    for op in &mut deletes {
        if let Op::Delete { id, duplicate, .. } = op {
            *duplicate = Some(
                why.get(id.as_str())
                    .cloned()
                    .unwrap_or_else(|| "a duplicate".to_owned()),
            );
        }
    }
    Deduped { kept, deletes }
}

#[cfg(test)]
mod tests {
    use aws_sdk_ec2::types::{NatGatewayAddress, Route, RouteTableAssociation, Subnet, Tag, Vpc};
    use aws_smithy_types::DateTime;

    use super::*;

    fn tags(name: &str) -> Tag {
        Tag::builder().key(infra::tags::NAME).value(name).build()
    }

    fn deleted(d: &Deduped) -> Vec<(String, String)> {
        d.deletes
            .iter()
            .filter_map(|op| match op {
                Op::Delete { id, duplicate, .. } => {
                    Some((id.clone(), duplicate.clone().unwrap_or_default()))
                }
                _ => None,
            })
            .collect()
    }

    fn observed() -> Observed {
        let vpc = |id: &str| Vpc::builder().vpc_id(id).tags(tags(VPC)).build();
        let subnet = |id: &str, vpc: &str| {
            Subnet::builder()
                .subnet_id(id)
                .vpc_id(vpc)
                .tags(tags("public-a"))
                .build()
        };
        let table = |id: &str, vpc: &str, assoc: bool, nat: &str| {
            let mut t = RouteTable::builder()
                .route_table_id(id)
                .vpc_id(vpc)
                .tags(tags("private-a"))
                .routes(Route::builder().nat_gateway_id(nat).build());
            if assoc {
                t = t.associations(
                    RouteTableAssociation::builder()
                        .route_table_association_id(format!("{id}-assoc"))
                        .subnet_id("subnet-2")
                        .main(false)
                        .build(),
                );
            }
            t.build()
        };
        let nat = |id: &str, vpc: &str, eip: &str, made: i64| {
            NatGateway::builder()
                .nat_gateway_id(id)
                .vpc_id(vpc)
                .create_time(DateTime::from_secs(made))
                .nat_gateway_addresses(NatGatewayAddress::builder().allocation_id(eip).build())
                .tags(tags("nat-a"))
                .build()
        };
        let eip = |id: &str| {
            Address::builder()
                .allocation_id(id)
                .tags(tags("nat-a"))
                .build()
        };
        Observed {
            // vpc-1 has the lower id, vpc-2 the network interfaces.
            vpcs: vec![vpc("vpc-1"), vpc("vpc-2")],
            subnets: vec![subnet("subnet-1", "vpc-1"), subnet("subnet-2", "vpc-2")],
            route_tables: vec![
                table("rtb-1", "vpc-1", true, "nat-1"),
                table("rtb-2", "vpc-2", false, "nat-3"),
                table("rtb-3", "vpc-2", true, "nat-3"),
            ],
            nats: vec![
                nat("nat-1", "vpc-1", "eipalloc-1", 100),
                nat("nat-2", "vpc-2", "eipalloc-2", 100),
                nat("nat-3", "vpc-2", "eipalloc-3", 200),
            ],
            addresses: vec![eip("eipalloc-1"), eip("eipalloc-2"), eip("eipalloc-3")],
            enis: [("vpc-2".to_owned(), 3), ("vpc-1".to_owned(), 1)].into(),
            ..Observed::default()
        }
    }

    #[test]
    fn the_vpc_in_use_and_in_it_what_is_in_use_are_kept() {
        let d = dedup(&observed());
        fn kept(v: Vec<Option<&str>>) -> Vec<&str> {
            v.into_iter().flatten().collect()
        }
        assert_eq!(
            kept(d.kept.vpcs.iter().map(|v| v.vpc_id()).collect()),
            ["vpc-2"]
        );
        // The table with the subnet associated, though its id is higher.
        assert_eq!(
            kept(
                d.kept
                    .route_tables
                    .iter()
                    .map(|t| t.route_table_id())
                    .collect()
            ),
            ["rtb-3"]
        );
        // The NAT gateway a route uses, though younger; its Elastic IP.
        assert_eq!(
            kept(d.kept.nats.iter().map(|n| n.nat_gateway_id()).collect()),
            ["nat-3"]
        );
        assert_eq!(
            kept(d.kept.addresses.iter().map(|a| a.allocation_id()).collect()),
            ["eipalloc-3"]
        );
        let deleted = deleted(&d);
        let ids: Vec<&str> = deleted.iter().map(|(id, _)| id.as_str()).collect();
        // Teardown order: NAT gateways, then their addresses, subnets, tables, the VPC last.
        assert_eq!(
            ids,
            [
                "nat-1",
                "nat-2",
                "eipalloc-1",
                "eipalloc-2",
                "subnet-1",
                "rtb-1",
                "rtb-2",
                "vpc-1"
            ]
        );
        let why: BTreeMap<_, _> = deleted.into_iter().collect();
        assert_eq!(
            why["vpc-1"],
            "a second VPC of the stack; vpc-2 is kept (3 network interfaces in use against 1)"
        );
        assert_eq!(
            why["rtb-1"],
            "in vpc-1, a second VPC of the stack; vpc-2 is kept"
        );
        assert_eq!(
            why["rtb-2"],
            "a duplicate; rtb-3 is kept (more subnets associated)"
        );
        assert_eq!(why["nat-2"], "a duplicate; nat-3 is kept (a route uses it)");
        assert_eq!(
            why["eipalloc-2"],
            "a duplicate; eipalloc-3 is kept (a kept NAT gateway holds it, or it is associated)"
        );
    }

    #[test]
    fn the_choice_does_not_depend_on_the_order_aws_lists_them_in() {
        let mut o = observed();
        let first = dedup(&o).deletes;
        o.vpcs.reverse();
        o.subnets.reverse();
        o.route_tables.reverse();
        o.nats.reverse();
        o.addresses.reverse();
        let mut again: Vec<String> = dedup(&o)
            .deletes
            .iter()
            .filter_map(|op| op.change().and_then(|c| c.id))
            .collect();
        let mut first: Vec<String> = first
            .iter()
            .filter_map(|op| op.change().and_then(|c| c.id))
            .collect();
        again.sort();
        first.sort();
        assert_eq!(first, again);
    }

    #[test]
    fn without_network_interfaces_the_vpc_with_more_subnets_then_the_lower_id_is_kept() {
        let mut o = observed();
        o.enis.clear();
        assert_eq!(keep_vpc(&o).and_then(|v| v.vpc_id()), Some("vpc-1"));
        o.subnets.push(
            Subnet::builder()
                .subnet_id("subnet-3")
                .vpc_id("vpc-2")
                .tags(tags("private-a"))
                .build(),
        );
        assert_eq!(keep_vpc(&o).and_then(|v| v.vpc_id()), Some("vpc-2"));
    }
}
