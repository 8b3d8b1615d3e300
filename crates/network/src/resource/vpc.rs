//! The VPC: created with DNS support and hostnames on, repaired when either is off.

use aws_sdk_ec2::Client;
use aws_sdk_ec2::types::{AttributeBooleanValue, ResourceType};
use infra::{Context, aws};

use super::{Ids, delete, need_one, settle, tag_spec};
use crate::desired::{Desired, Kind, Op, VPC, one, retag};
use crate::error::Error;
use crate::observe::Observed;

pub(super) async fn create(
    ec2: &Client,
    cx: &Context,
    cidr: &str,
    ids: &mut Ids,
) -> Result<Option<String>, Error> {
    let out = ec2
        .create_vpc()
        .cidr_block(cidr)
        .tag_specifications(tag_spec(cx, ResourceType::Vpc, VPC))
        .send()
        .await
        .map_err(aws("CreateVpc", format!("vpc {VPC:?}")))?;
    let id = out
        .vpc()
        .and_then(|v| v.vpc_id())
        .unwrap_or_default()
        .to_owned();
    ids.vpc = Some(id.clone());
    set_dns(ec2, cx, &id).await?;
    Ok(Some(id))
}

/// Turns DNS support and hostnames on for the stack's VPC.
pub(super) async fn repair_dns(
    ec2: &Client,
    cx: &Context,
    ids: &Ids,
) -> Result<Option<String>, Error> {
    let id = need_one(&ids.vpc, "vpc", VPC)?;
    set_dns(ec2, cx, id).await?;
    Ok(Some(id.to_owned()))
}

pub(super) async fn set_dns(ec2: &Client, cx: &Context, vpc: &str) -> Result<(), Error> {
    let on = || AttributeBooleanValue::builder().value(true).build();
    let what = format!("vpc {VPC:?} ({vpc})");
    // One attribute per call: EC2 rejects both in one request.
    settle(cx, "ModifyVpcAttribute", &what, || {
        ec2.modify_vpc_attribute()
            .vpc_id(vpc)
            .enable_dns_support(on())
            .send()
    })
    .await?;
    settle(cx, "ModifyVpcAttribute", &what, || {
        ec2.modify_vpc_attribute()
            .vpc_id(vpc)
            .enable_dns_hostnames(on())
            .send()
    })
    .await?;
    Ok(())
}

pub(super) async fn remove(ec2: &Client, cx: &Context, id: &str, what: &str) -> Result<(), Error> {
    delete(cx, "DeleteVpc", what, &[], || {
        ec2.delete_vpc().vpc_id(id).send()
    })
    .await
}

// The diff: the steps that take what exists to what is wanted. Pure: no AWS call.

/// The VPC: created, or checked (its CIDR cannot change) and its DNS settings repaired.
/// Returns the one that exists.
pub(crate) fn steps<'a>(
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
