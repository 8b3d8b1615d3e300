//! Subnets: one public and one private per zone.

use aws_sdk_ec2::Client;
use aws_sdk_ec2::types::ResourceType;
use infra::Context;

use super::{Ids, delete, need_one, settle, tag_spec};
use crate::desired::{SubnetWant, VPC};
use crate::error::Error;

pub(super) async fn create(
    ec2: &Client,
    cx: &Context,
    s: &SubnetWant,
    ids: &mut Ids,
) -> Result<Option<String>, Error> {
    let vpc = need_one(&ids.vpc, "vpc", VPC)?;
    let out = settle(cx, "CreateSubnet", &format!("subnet {:?}", s.name), || {
        ec2.create_subnet()
            .vpc_id(vpc)
            .cidr_block(&s.cidr)
            .availability_zone(&s.zone)
            .tag_specifications(tag_spec(cx, ResourceType::Subnet, &s.name))
            .send()
    })
    .await?;
    let id = out
        .subnet()
        .and_then(|x| x.subnet_id())
        .unwrap_or_default()
        .to_owned();
    ids.subnets.insert(s.name.clone(), id.clone());
    Ok(Some(id))
}

pub(super) async fn remove(ec2: &Client, cx: &Context, id: &str, what: &str) -> Result<(), Error> {
    delete(cx, "DeleteSubnet", what, &[], || {
        ec2.delete_subnet().subnet_id(id).send()
    })
    .await
}
