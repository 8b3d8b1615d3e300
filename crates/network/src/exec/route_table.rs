//! Route tables, their subnet associations and their default routes.

use aws_sdk_ec2::Client;
use aws_sdk_ec2::types::ResourceType;
use infra::Context;

use super::{Ids, delete, need, need_one, settle, tag_spec};
use crate::desired::{DEFAULT_ROUTE, IGW, RouteOp, Target, VPC};
use crate::error::Error;

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
