//! Route tables, their subnet associations and their default routes.

use std::collections::BTreeMap;

use aws_sdk_ec2::Client;
use aws_sdk_ec2::types::{ResourceType, RouteState};
use infra::Context;

use super::{Ids, delete, need, need_one, settle, tag_spec};
use crate::desired::{DEFAULT_ROUTE, Desired, IGW, Kind, Op, RouteOp, Target, VPC, one, retag};
use crate::error::Error;
use crate::observe::{Observed, name_tag};

pub(super) async fn create(
    ec2: &Client,
    cx: &Context,
    name: &str,
    ids: &mut Ids,
) -> Result<Option<String>, Error> {
    let vpc = need_one(&ids.vpc, "vpc", VPC)?;
    // Sent again after an error that hid a success, the token returns the same table.
    let token = cx.client_token("route-table", name);
    let out = settle(
        cx,
        "CreateRouteTable",
        &format!("route-table {name:?}"),
        || {
            ec2.create_route_table()
                .vpc_id(vpc)
                .client_token(&token)
                .tag_specifications(tag_spec(cx, ResourceType::RouteTable, name))
                .send()
        },
    )
    .await?;
    let id = out
        .route_table()
        .and_then(|x| x.route_table_id())
        .unwrap_or_default()
        .to_owned();
    ids.tables.insert(name.to_owned(), id.clone());
    Ok(Some(id))
}

/// Associates `subnet` with `table`, replacing the association `replace` when there is one.
pub(super) async fn associate(
    ec2: &Client,
    cx: &Context,
    table: &str,
    subnet: &str,
    replace: Option<&str>,
    ids: &Ids,
) -> Result<Option<String>, Error> {
    let table_id = need(&ids.tables, "route-table", table)?;
    let subnet_id = need(&ids.subnets, "subnet", subnet)?;
    let what = format!("route-table {table:?} ({table_id}) and subnet {subnet:?} ({subnet_id})");
    Ok(match replace {
        Some(assoc) => settle(cx, "ReplaceRouteTableAssociation", &what, || {
            ec2.replace_route_table_association()
                .association_id(assoc)
                .route_table_id(table_id)
                .send()
        })
        .await?
        .new_association_id()
        .map(str::to_owned),
        None => settle(cx, "AssociateRouteTable", &what, || {
            ec2.associate_route_table()
                .route_table_id(table_id)
                .subnet_id(subnet_id)
                .send()
        })
        .await?
        .association_id()
        .map(str::to_owned),
    })
}

/// Creates, replaces or deletes `table`'s default route.
pub(super) async fn route(
    ec2: &Client,
    cx: &Context,
    table: &str,
    op: RouteOp,
    target: Option<&Target>,
    ids: &Ids,
) -> Result<Option<String>, Error> {
    let table_id = need(&ids.tables, "route-table", table)?;
    let what = format!("route {DEFAULT_ROUTE} of route-table {table:?} ({table_id})");
    let (gateway, nat) = match target {
        Some(Target::Igw) => (Some(need_one(&ids.igw, "internet-gateway", IGW)?), None),
        Some(Target::Nat(name)) => (None, Some(need(&ids.nats, "nat-gateway", name)?)),
        None => (None, None),
    };
    let (gateway, nat) = (gateway.map(str::to_owned), nat.map(str::to_owned));
    match op {
        RouteOp::Create => drop(
            settle(cx, "CreateRoute", &what, || {
                ec2.create_route()
                    .route_table_id(table_id)
                    .destination_cidr_block(DEFAULT_ROUTE)
                    .set_gateway_id(gateway.clone())
                    .set_nat_gateway_id(nat.clone())
                    .send()
            })
            .await?,
        ),
        RouteOp::Replace => drop(
            settle(cx, "ReplaceRoute", &what, || {
                ec2.replace_route()
                    .route_table_id(table_id)
                    .destination_cidr_block(DEFAULT_ROUTE)
                    .set_gateway_id(gateway.clone())
                    .set_nat_gateway_id(nat.clone())
                    .send()
            })
            .await?,
        ),
        RouteOp::Delete => {
            delete(cx, "DeleteRoute", &what, &[], || {
                ec2.delete_route()
                    .route_table_id(table_id)
                    .destination_cidr_block(DEFAULT_ROUTE)
                    .send()
            })
            .await?
        }
    }
    Ok(Some(table_id.to_owned()))
}

/// Ends the table's `associations`, then deletes it.
pub(super) async fn remove(
    ec2: &Client,
    cx: &Context,
    id: &str,
    what: &str,
    associations: &[String],
) -> Result<(), Error> {
    for assoc in associations {
        delete(cx, "DisassociateRouteTable", what, &[], || {
            ec2.disassociate_route_table().association_id(assoc).send()
        })
        .await?;
    }
    delete(cx, "DeleteRouteTable", what, &[], || {
        ec2.delete_route_table().route_table_id(id).send()
    })
    .await
}

// The diff: the steps that take what exists to what is wanted. Pure: no AWS call.

/// The route tables and their subnet associations (into `ops`); returns the default routes'
/// steps, which wait for the NAT gateways.
pub(crate) fn steps(
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
