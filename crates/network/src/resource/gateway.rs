//! The internet gateway, the NAT gateways and their Elastic IPs.

use aws_sdk_ec2::Client;
use aws_sdk_ec2::types::{DomainType, NatGatewayState, ResourceType};
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use infra::{Backoff, Context, Event, Step, aws, waited};
use tokio::time::Instant;

use super::{Ids, delete, is_not_found, need, need_one, settle, tag_spec, wait_failed};
use crate::desired::{Desired, IGW, Kind, MODULE, NatWant, Op, VPC, one, retag};
use crate::error::Error;
use crate::observe::{Observed, name_tag};

/// Creates the internet gateway and attaches it to the VPC.
pub(super) async fn create_igw(
    ec2: &Client,
    cx: &Context,
    ids: &mut Ids,
) -> Result<Option<String>, Error> {
    let out = ec2
        .create_internet_gateway()
        .tag_specifications(tag_spec(cx, ResourceType::InternetGateway, IGW))
        .send()
        .await
        .map_err(aws(
            "CreateInternetGateway",
            format!("internet-gateway {IGW:?}"),
        ))?;
    let id = out
        .internet_gateway()
        .and_then(|x| x.internet_gateway_id())
        .unwrap_or_default()
        .to_owned();
    ids.igw = Some(id.clone());
    attach_igw(ec2, cx, ids).await?;
    Ok(Some(id))
}

pub(super) async fn attach_igw(ec2: &Client, cx: &Context, ids: &Ids) -> Result<String, Error> {
    let igw = need_one(&ids.igw, "internet-gateway", IGW)?;
    let vpc = need_one(&ids.vpc, "vpc", VPC)?;
    let res = settle(
        cx,
        "AttachInternetGateway",
        &format!("internet-gateway {IGW:?} ({igw})"),
        || {
            ec2.attach_internet_gateway()
                .internet_gateway_id(igw)
                .vpc_id(vpc)
                .send()
        },
    )
    .await;
    match res {
        // Attached already (a crash between attach and its answer).
        Err(e) if e.code() == Some("Resource.AlreadyAssociated") => {}
        other => drop(other?),
    }
    Ok(igw.to_owned())
}

/// Detaches the gateway from `vpcs`, then deletes it.
pub(super) async fn remove_igw(
    ec2: &Client,
    cx: &Context,
    id: &str,
    what: &str,
    vpcs: &[String],
) -> Result<(), Error> {
    for vpc in vpcs {
        delete(cx, "DetachInternetGateway", what, &[], || {
            ec2.detach_internet_gateway()
                .internet_gateway_id(id)
                .vpc_id(vpc)
                .send()
        })
        .await
        .or_else(|e| {
            if e.code() == Some("Gateway.NotAttached") {
                Ok(())
            } else {
                Err(e)
            }
        })?;
    }
    delete(cx, "DeleteInternetGateway", what, &[], || {
        ec2.delete_internet_gateway().internet_gateway_id(id).send()
    })
    .await
}

pub(super) async fn allocate_eip(
    ec2: &Client,
    cx: &Context,
    name: &str,
    ids: &mut Ids,
) -> Result<Option<String>, Error> {
    let out = ec2
        .allocate_address()
        .domain(DomainType::Vpc)
        .tag_specifications(tag_spec(cx, ResourceType::ElasticIp, name))
        .send()
        .await
        .map_err(aws("AllocateAddress", format!("elastic-ip {name:?}")))?;
    let id = out.allocation_id().unwrap_or_default().to_owned();
    ids.eips.insert(name.to_owned(), id.clone());
    Ok(Some(id))
}

pub(super) async fn release_eip(
    ec2: &Client,
    cx: &Context,
    id: &str,
    what: &str,
) -> Result<(), Error> {
    delete(
        cx,
        "ReleaseAddress",
        what,
        &["InvalidIPAddress.InUse"],
        || ec2.release_address().allocation_id(id).send(),
    )
    .await
}

pub(super) async fn create_nat(
    ec2: &Client,
    cx: &Context,
    nat: &NatWant,
    generation: usize,
    ids: &mut Ids,
) -> Result<Option<String>, Error> {
    let subnet = need(&ids.subnets, "subnet", &nat.subnet)?;
    let eip = need(&ids.eips, "elastic-ip", &nat.name)?;
    // The token makes a retried create return the same gateway; the allocation id in it
    // keeps a stack deployed again after destroy from meeting its old, deleted gateway.
    let token = format!("{eip}-{subnet}-{generation}");
    let out = settle(
        cx,
        "CreateNatGateway",
        &format!("nat-gateway {:?}", nat.name),
        || {
            ec2.create_nat_gateway()
                .subnet_id(subnet)
                .allocation_id(eip)
                .client_token(&token)
                .tag_specifications(tag_spec(cx, ResourceType::Natgateway, &nat.name))
                .send()
        },
    )
    .await?;
    let id = out
        .nat_gateway()
        .and_then(|x| x.nat_gateway_id())
        .unwrap_or_default()
        .to_owned();
    ids.nats.insert(nat.name.clone(), id.clone());
    Ok(Some(id))
}

/// Waits until every NAT gateway is available, polling with backoff.
pub(super) async fn wait_nats(ec2: &Client, cx: &Context, ids: &Ids) -> Result<(), Error> {
    let wanted: Vec<(String, String)> = ids
        .nats
        .iter()
        .map(|(n, i)| (n.clone(), i.clone()))
        .collect();
    if wanted.is_empty() {
        return Ok(());
    }
    let start = Instant::now();
    let waiting = infra::Change::new(infra::Action::Create, MODULE, "nat-gateway", "*");
    Backoff::resource_state(cx.waits())
        .run("wait for NAT gateways to become available", || async {
            let out = match ec2
                .describe_nat_gateways()
                .set_nat_gateway_ids(Some(wanted.iter().map(|(_, i)| i.clone()).collect()))
                .send()
                .await
            {
                Ok(out) => out,
                Err(e) if is_not_found(e.code()) => {
                    return Step::Retry("not visible yet".to_owned());
                }
                Err(e) => return Step::Fail(aws("DescribeNatGateways", "NAT gateways")(e).into()),
            };
            let mut pending = Vec::new();
            for nat in out.nat_gateways() {
                let name = name_tag(nat.tags()).unwrap_or("?").to_owned();
                match nat.state() {
                    Some(NatGatewayState::Available) => {}
                    Some(
                        NatGatewayState::Failed
                        | NatGatewayState::Deleted
                        | NatGatewayState::Deleting,
                    ) => {
                        return Step::Fail(Error::NatFailed {
                            name,
                            id: nat.nat_gateway_id().unwrap_or_default().to_owned(),
                            reason: nat
                                .failure_message()
                                .unwrap_or("no reason given")
                                .to_owned(),
                        });
                    }
                    _ => pending.push(name),
                }
            }
            if pending.is_empty() {
                Step::Done(())
            } else {
                cx.progress().on(&Event::Waiting {
                    change: &waiting,
                    waited: start.elapsed(),
                });
                Step::Retry(format!("still pending: {}", pending.join(", ")))
            }
        })
        .await
        .map_err(wait_failed)
}

/// Deletes a NAT gateway and waits until it is gone (its Elastic IP is in use until then).
pub(super) async fn remove_nat(
    ec2: &Client,
    cx: &Context,
    id: &str,
    what: &str,
) -> Result<(), Error> {
    delete(cx, "DeleteNatGateway", what, &[], || {
        ec2.delete_nat_gateway().nat_gateway_id(id).send()
    })
    .await?;
    Backoff::resource_state(cx.waits())
        .run(format!("wait for {what} to be deleted"), || async {
            match ec2.describe_nat_gateways().nat_gateway_ids(id).send().await {
                Ok(out) => match out.nat_gateways().first().and_then(|n| n.state()) {
                    Some(NatGatewayState::Deleted) | None => Step::Done(()),
                    Some(state) => Step::Retry(format!("state {state}")),
                },
                Err(e) if is_not_found(e.code()) => Step::Done(()),
                Err(e) => Step::Fail(e),
            }
        })
        .await
        .map_err(waited("DescribeNatGateways", what))?;
    Ok(())
}

// The diff: the steps that take what exists to what is wanted. Pure: no AWS call.

/// The internet gateway, attached to the VPC.
pub(crate) fn igw_steps(
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
pub(crate) fn nat_steps(
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
