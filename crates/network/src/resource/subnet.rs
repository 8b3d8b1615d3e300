//! Subnets: one public and one private per zone.

use aws_sdk_ec2::Client;
use aws_sdk_ec2::types::ResourceType;
use infra::Context;

use super::{Ids, delete, need_one, settle, tag_spec};
use crate::desired::{Desired, Kind, Op, SubnetWant, VPC, one, retag};
use crate::error::Error;
use crate::observe::Observed;

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

// The diff: the steps that take what exists to what is wanted. Pure: no AWS call.

/// One public and one private subnet per zone; a CIDR or zone that differs needs a new one.
pub(crate) fn steps(
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
