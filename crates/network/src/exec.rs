//! Carrying out the steps of a plan against EC2.

use std::collections::BTreeMap;
use std::future::Future;

use aws_sdk_ec2::Client;
use aws_sdk_ec2::error::SdkError;
use aws_sdk_ec2::types::{
    AttributeBooleanValue, DomainType, Filter, IpPermission, IpRange, Ipv6Range, NatGatewayState,
    ResourceType, Tag, TagSpecification, UserIdGroupPair, VpcEndpointType,
};
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use infra::{Backoff, CallError, Context, Event, Step, aws, waited};
use tokio::time::Instant;

use crate::desired::{
    DEFAULT_ROUTE, ENDPOINT_GROUP, IGW, Kind, MODULE, Op, RouteOp, Rule, Source, Target, VPC,
};
use crate::error::Error;
use crate::observe::{Observed, name_tag};

/// Ids of the stack's resources by logical name: those that existed, then those created.
#[derive(Debug, Default, Clone)]
pub struct Ids {
    pub(crate) vpc: Option<String>,
    pub(crate) igw: Option<String>,
    pub(crate) subnets: BTreeMap<String, String>,
    pub(crate) tables: BTreeMap<String, String>,
    pub(crate) eips: BTreeMap<String, String>,
    pub(crate) nats: BTreeMap<String, String>,
    pub(crate) groups: BTreeMap<String, String>,
}

fn by_name<T>(
    items: &[T],
    tags: impl Fn(&T) -> &[Tag],
    id: impl Fn(&T) -> Option<&str>,
) -> BTreeMap<String, String> {
    items
        .iter()
        .filter_map(|i| Some((name_tag(tags(i))?.to_owned(), id(i)?.to_owned())))
        .collect()
}

impl Ids {
    /// The ids of what exists, duplicates set aside (the ones an apply keeps).
    pub(crate) fn from_observed(o: &Observed) -> Ids {
        let o = &crate::desired::dedup(o).kept;
        Ids {
            vpc: o.vpcs.first().and_then(|v| v.vpc_id()).map(str::to_owned),
            igw: o
                .igws
                .first()
                .and_then(|i| i.internet_gateway_id())
                .map(str::to_owned),
            subnets: by_name(&o.subnets, |x| x.tags(), |x| x.subnet_id()),
            tables: by_name(&o.route_tables, |x| x.tags(), |x| x.route_table_id()),
            eips: by_name(&o.addresses, |x| x.tags(), |x| x.allocation_id()),
            nats: by_name(&o.nats, |x| x.tags(), |x| x.nat_gateway_id()),
            groups: by_name(&o.security_groups, |x| x.tags(), |x| x.group_id()),
        }
    }
}

fn need<'a>(
    map: &'a BTreeMap<String, String>,
    kind: &'static str,
    name: &str,
) -> Result<&'a str, Error> {
    map.get(name)
        .map(String::as_str)
        .ok_or_else(|| Error::Missing {
            kind,
            name: name.to_owned(),
        })
}

fn need_one<'a>(id: &'a Option<String>, kind: &'static str, name: &str) -> Result<&'a str, Error> {
    id.as_deref().ok_or_else(|| Error::Missing {
        kind,
        name: name.to_owned(),
    })
}

/// The tag specification of a new resource.
pub(crate) fn tag_spec(cx: &Context, kind: ResourceType, name: &str) -> TagSpecification {
    let tags = cx
        .tags(MODULE, name)
        .into_iter()
        .map(|(k, v)| Tag::builder().key(k).value(v).build());
    TagSpecification::builder()
        .resource_type(kind)
        .set_tags(Some(tags.collect()))
        .build()
}

fn is_not_found(code: Option<&str>) -> bool {
    code.is_some_and(|c| c.ends_with(".NotFound") || c.ends_with("NotFound"))
}

/// Runs a write that refers to resources created moments ago, retrying while EC2 does not
/// see them yet (`InvalidVpcID.NotFound` and kin).
pub(crate) async fn settle<T, E, F, Fut>(
    cx: &Context,
    operation: &'static str,
    resource: &str,
    mut call: F,
) -> Result<T, Error>
where
    E: std::error::Error + ProvideErrorMetadata + Send + Sync + 'static,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, SdkError<E>>>,
{
    Backoff::consistency(cx.waits())
        .run(format!("{operation} {resource}"), || {
            let fut = call();
            async move {
                match fut.await {
                    Ok(v) => Step::Done(v),
                    Err(e) if is_not_found(e.code()) => Step::Retry(format!(
                        "{}: {}",
                        e.code().unwrap_or_default(),
                        e.message().unwrap_or_default()
                    )),
                    Err(e) => Step::Fail(e),
                }
            }
        })
        .await
        .map_err(|e| waited(operation, resource)(e).into())
}

/// Runs a delete: retries while something still depends on the resource, and counts a
/// resource that is already gone as deleted.
pub(crate) async fn delete<T, E, F, Fut>(
    cx: &Context,
    operation: &'static str,
    resource: &str,
    extra_retry: &[&str],
    mut call: F,
) -> Result<(), Error>
where
    E: std::error::Error + ProvideErrorMetadata + Send + Sync + 'static,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, SdkError<E>>>,
{
    Backoff::dependency(cx.waits())
        .run(format!("{operation} {resource}"), || {
            let fut = call();
            async move {
                match fut.await {
                    Ok(_) => Step::Done(()),
                    Err(e) if is_not_found(e.code()) => Step::Done(()),
                    Err(e)
                        if e.code() == Some("DependencyViolation")
                            || e.code().is_some_and(|c| extra_retry.contains(&c)) =>
                    {
                        Step::Retry(format!(
                            "{}: {}",
                            e.code().unwrap_or_default(),
                            e.message().unwrap_or_default()
                        ))
                    }
                    Err(e) => Step::Fail(e),
                }
            }
        })
        .await
        .map_err(|e| waited(operation, resource)(e).into())
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

pub(crate) async fn step(
    ec2: &Client,
    cx: &Context,
    op: &Op,
    ids: &mut Ids,
) -> Result<Option<String>, Error> {
    Ok(match op {
        Op::CreateVpc { cidr } => {
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
            Some(id)
        }
        Op::SetDns { .. } => {
            let id = need_one(&ids.vpc, "vpc", VPC)?.to_owned();
            set_dns(ec2, cx, &id).await?;
            Some(id)
        }
        Op::CreateSubnet(s) => {
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
            Some(id)
        }
        Op::CreateIgw => {
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
            Some(id)
        }
        Op::AttachIgw => Some(attach_igw(ec2, cx, ids).await?),
        Op::AllocateEip { name } => {
            let out = ec2
                .allocate_address()
                .domain(DomainType::Vpc)
                .tag_specifications(tag_spec(cx, ResourceType::ElasticIp, name))
                .send()
                .await
                .map_err(aws("AllocateAddress", format!("elastic-ip {name:?}")))?;
            let id = out.allocation_id().unwrap_or_default().to_owned();
            ids.eips.insert(name.clone(), id.clone());
            Some(id)
        }
        Op::CreateNat { nat, generation } => {
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
            Some(id)
        }
        Op::CreateGroup { name, description } => {
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
            ids.groups.insert(name.clone(), id.clone());
            Some(id)
        }
        Op::Authorize { group, rules } => {
            let id = need(&ids.groups, "security-group", group)?;
            let perms = rules
                .iter()
                .map(|r| permission(r, &ids.groups))
                .collect::<Result<Vec<_>, _>>()?;
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
            Some(id.to_owned())
        }
        Op::Revoke { group, id, rules } => {
            let perms = rules
                .iter()
                .map(|r| permission(r, &ids.groups))
                .collect::<Result<Vec<_>, _>>()?;
            ec2.revoke_security_group_ingress()
                .group_id(id)
                .set_ip_permissions(Some(perms))
                .send()
                .await
                .map_err(aws(
                    "RevokeSecurityGroupIngress",
                    format!("security-group {group:?} ({id})"),
                ))?;
            Some(id.clone())
        }
        Op::CreateTable { name } => {
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
            ids.tables.insert(name.clone(), id.clone());
            Some(id)
        }
        Op::Associate {
            table,
            subnet,
            replace,
        } => {
            let table_id = need(&ids.tables, "route-table", table)?;
            let subnet_id = need(&ids.subnets, "subnet", subnet)?;
            let what =
                format!("route-table {table:?} ({table_id}) and subnet {subnet:?} ({subnet_id})");
            match replace {
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
            }
        }
        Op::WaitNats => {
            wait_nats(ec2, cx, ids).await?;
            None
        }
        Op::Route { table, op, target } => {
            let table_id = need(&ids.tables, "route-table", table)?;
            let what = format!("route {DEFAULT_ROUTE} of route-table {table:?} ({table_id})");
            let (gateway, nat) = match target {
                Some(Target::Igw) => (Some(need_one(&ids.igw, "internet-gateway", IGW)?), None),
                Some(Target::Nat(name)) => (None, Some(need(&ids.nats, "nat-gateway", name)?)),
                None => (None, None),
            };
            match op {
                RouteOp::Create => drop(
                    settle(cx, "CreateRoute", &what, || {
                        ec2.create_route()
                            .route_table_id(table_id)
                            .destination_cidr_block(DEFAULT_ROUTE)
                            .set_gateway_id(gateway.map(str::to_owned))
                            .set_nat_gateway_id(nat.map(str::to_owned))
                            .send()
                    })
                    .await?,
                ),
                RouteOp::Replace => drop(
                    settle(cx, "ReplaceRoute", &what, || {
                        ec2.replace_route()
                            .route_table_id(table_id)
                            .destination_cidr_block(DEFAULT_ROUTE)
                            .set_gateway_id(gateway.map(str::to_owned))
                            .set_nat_gateway_id(nat.map(str::to_owned))
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
            Some(table_id.to_owned())
        }
        Op::CreateEndpoint(e) => {
            let vpc = need_one(&ids.vpc, "vpc", VPC)?;
            let map = if e.gateway { &ids.tables } else { &ids.subnets };
            let kind = if e.gateway { "route-table" } else { "subnet" };
            let attach = e
                .attach
                .iter()
                .map(|n| need(map, kind, n).map(str::to_owned))
                .collect::<Result<Vec<_>, _>>()?;
            let group = if e.gateway {
                None
            } else {
                Some(need(&ids.groups, "security-group", ENDPOINT_GROUP)?.to_owned())
            };
            let what = format!("vpc-endpoint {:?}", e.name);
            let out = settle(cx, "CreateVpcEndpoint", &what, || {
                let call = ec2
                    .create_vpc_endpoint()
                    .vpc_id(vpc)
                    .service_name(&e.service)
                    .tag_specifications(tag_spec(cx, ResourceType::VpcEndpoint, &e.name));
                if e.gateway {
                    call.vpc_endpoint_type(VpcEndpointType::Gateway)
                        .set_route_table_ids(Some(attach.clone()))
                        .send()
                } else {
                    call.vpc_endpoint_type(VpcEndpointType::Interface)
                        .set_subnet_ids(Some(attach.clone()))
                        .set_security_group_ids(group.clone().map(|g| vec![g]))
                        .private_dns_enabled(true)
                        .send()
                }
            })
            .await?;
            let id = out
                .vpc_endpoint()
                .and_then(|v| v.vpc_endpoint_id())
                .unwrap_or_default()
                .to_owned();
            wait_endpoint(ec2, cx, &id, &what, false).await?;
            Some(id)
        }
        Op::ModifyEndpoint {
            name,
            id,
            gateway,
            add,
            remove,
        } => {
            let map = if *gateway { &ids.tables } else { &ids.subnets };
            let kind = if *gateway { "route-table" } else { "subnet" };
            let add = add
                .iter()
                .map(|n| need(map, kind, n).map(str::to_owned))
                .collect::<Result<Vec<_>, _>>()?;
            let what = format!("vpc-endpoint {name:?} ({id})");
            settle(cx, "ModifyVpcEndpoint", &what, || {
                let call = ec2.modify_vpc_endpoint().vpc_endpoint_id(id);
                let some = |v: &Vec<String>| (!v.is_empty()).then(|| v.clone());
                if *gateway {
                    call.set_add_route_table_ids(some(&add))
                        .set_remove_route_table_ids(some(remove))
                        .send()
                } else {
                    call.set_add_subnet_ids(some(&add))
                        .set_remove_subnet_ids(some(remove))
                        .send()
                }
            })
            .await?;
            Some(id.clone())
        }
        Op::Retag {
            kind,
            name,
            id,
            tags,
        } => {
            let tags: Vec<Tag> = tags
                .iter()
                .map(|(k, v)| Tag::builder().key(k).value(v).build())
                .collect();
            settle(
                cx,
                "CreateTags",
                &format!("{} {name:?} ({id})", kind.as_str()),
                || {
                    ec2.create_tags()
                        .resources(id)
                        .set_tags(Some(tags.clone()))
                        .send()
                },
            )
            .await?;
            Some(id.clone())
        }
        Op::Delete {
            kind,
            name,
            id,
            related,
            duplicate,
        } => {
            delete_resource(ec2, cx, *kind, name, id, related).await?;
            // An extra goes; the one kept under its name stays known.
            if duplicate.is_none() {
                forget(ids, *kind, name);
            }
            Some(id.clone())
        }
    })
}

fn forget(ids: &mut Ids, kind: Kind, name: &str) {
    match kind {
        Kind::Vpc => ids.vpc = None,
        Kind::InternetGateway => ids.igw = None,
        Kind::Subnet => drop(ids.subnets.remove(name)),
        Kind::RouteTable => drop(ids.tables.remove(name)),
        Kind::ElasticIp => drop(ids.eips.remove(name)),
        Kind::NatGateway => drop(ids.nats.remove(name)),
        Kind::SecurityGroup => drop(ids.groups.remove(name)),
        Kind::NetworkAcl | Kind::VpcEndpoint => {}
    }
}

async fn set_dns(ec2: &Client, cx: &Context, vpc: &str) -> Result<(), Error> {
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

async fn attach_igw(ec2: &Client, cx: &Context, ids: &Ids) -> Result<String, Error> {
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

/// Waits until every NAT gateway is available, polling with backoff.
async fn wait_nats(ec2: &Client, cx: &Context, ids: &Ids) -> Result<(), Error> {
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

/// A wait's error: the step's own, or the deadline as a timeout.
fn wait_failed(e: infra::WaitError<Error>) -> Error {
    match e {
        infra::WaitError::Failed(e) => e,
        timeout => CallError::Timeout(timeout.to_string()).into(),
    }
}

/// Waits until endpoint `id` is available (`gone`: deleted or unknown), as its network
/// interfaces (interface endpoints) come up or are released.
async fn wait_endpoint(
    ec2: &Client,
    cx: &Context,
    id: &str,
    what: &str,
    gone: bool,
) -> Result<(), Error> {
    let doing = if gone { "deleted" } else { "available" };
    Backoff::resource_state(cx.waits())
        .run(format!("wait for {what} to be {doing}"), || async {
            match ec2
                .describe_vpc_endpoints()
                .vpc_endpoint_ids(id)
                .send()
                .await
            {
                Ok(out) => {
                    let state = out
                        .vpc_endpoints()
                        .first()
                        .map(crate::observe::endpoint_state);
                    match (gone, state.as_deref()) {
                        (true, None | Some("deleted")) => Step::Done(()),
                        (false, Some("available")) => Step::Done(()),
                        (false, Some(state @ ("failed" | "rejected"))) => {
                            Step::Fail(Error::EndpointFailed {
                                what: what.to_owned(),
                                state: state.to_owned(),
                            })
                        }
                        (_, state) => Step::Retry(format!("state {}", state.unwrap_or("unknown"))),
                    }
                }
                Err(e) if gone && is_not_found(e.code()) => Step::Done(()),
                Err(e) => Step::Fail(aws("DescribeVpcEndpoints", what)(e).into()),
            }
        })
        .await
        .map_err(wait_failed)
}

/// Deletes one resource with the waits and retries its kind needs.
async fn delete_resource(
    ec2: &Client,
    cx: &Context,
    kind: Kind,
    name: &str,
    id: &str,
    related: &[String],
) -> Result<(), Error> {
    let what = format!("{} {name:?} ({id})", kind.as_str());
    match kind {
        Kind::NatGateway => {
            delete(cx, "DeleteNatGateway", &what, &[], || {
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
                .map_err(waited("DescribeNatGateways", &what))?;
        }
        Kind::ElasticIp => {
            delete(
                cx,
                "ReleaseAddress",
                &what,
                &["InvalidIPAddress.InUse"],
                || ec2.release_address().allocation_id(id).send(),
            )
            .await?
        }
        Kind::InternetGateway => {
            for vpc in related {
                delete(cx, "DetachInternetGateway", &what, &[], || {
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
            delete(cx, "DeleteInternetGateway", &what, &[], || {
                ec2.delete_internet_gateway().internet_gateway_id(id).send()
            })
            .await?
        }
        Kind::Subnet => {
            delete(cx, "DeleteSubnet", &what, &[], || {
                ec2.delete_subnet().subnet_id(id).send()
            })
            .await?
        }
        Kind::RouteTable => {
            for assoc in related {
                delete(cx, "DisassociateRouteTable", &what, &[], || {
                    ec2.disassociate_route_table().association_id(assoc).send()
                })
                .await?;
            }
            delete(cx, "DeleteRouteTable", &what, &[], || {
                ec2.delete_route_table().route_table_id(id).send()
            })
            .await?
        }
        Kind::SecurityGroup => {
            delete(cx, "DeleteSecurityGroup", &what, &[], || {
                ec2.delete_security_group().group_id(id).send()
            })
            .await?
        }
        Kind::NetworkAcl => {
            if !related.is_empty() {
                let acls = ec2
                    .describe_network_acls()
                    .network_acl_ids(id)
                    .send()
                    .await
                    .map_err(aws("DescribeNetworkAcls", &what))?;
                let vpc = acls
                    .network_acls()
                    .first()
                    .and_then(|a| a.vpc_id())
                    .unwrap_or_default()
                    .to_owned();
                let default = ec2
                    .describe_network_acls()
                    .filters(Filter::builder().name("vpc-id").values(&vpc).build())
                    .filters(Filter::builder().name("default").values("true").build())
                    .send()
                    .await
                    .map_err(aws("DescribeNetworkAcls", &vpc))?;
                if let Some(default) = default
                    .network_acls()
                    .first()
                    .and_then(|a| a.network_acl_id())
                {
                    for assoc in related {
                        settle(cx, "ReplaceNetworkAclAssociation", &what, || {
                            ec2.replace_network_acl_association()
                                .association_id(assoc)
                                .network_acl_id(default)
                                .send()
                        })
                        .await?;
                    }
                }
            }
            delete(cx, "DeleteNetworkAcl", &what, &[], || {
                ec2.delete_network_acl().network_acl_id(id).send()
            })
            .await?
        }
        Kind::VpcEndpoint => {
            delete(cx, "DeleteVpcEndpoints", &what, &[], || {
                ec2.delete_vpc_endpoints().vpc_endpoint_ids(id).send()
            })
            .await?;
            wait_endpoint(ec2, cx, id, &what, true).await?;
        }
        Kind::Vpc => {
            delete(cx, "DeleteVpc", &what, &[], || {
                ec2.delete_vpc().vpc_id(id).send()
            })
            .await?
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    //! The error paths moto cannot produce, with mocked EC2 responses.

    use std::time::Duration;

    use aws_sdk_ec2::operation::delete_subnet::{DeleteSubnetError, DeleteSubnetOutput};
    use aws_sdk_ec2::operation::modify_vpc_attribute::{
        ModifyVpcAttributeError, ModifyVpcAttributeOutput,
    };
    use aws_smithy_mocks::{RuleMode, mock, mock_client};
    use aws_smithy_types::error::ErrorMetadata;
    use infra::{StackName, WaitPolicy};

    use super::*;

    fn meta(code: &str) -> ErrorMetadata {
        ErrorMetadata::builder()
            .code(code)
            .message("mocked")
            .build()
    }

    fn cx() -> Context {
        let waits = WaitPolicy {
            eventual_consistency: Duration::from_secs(30),
            dependency: Duration::from_secs(60),
            resource_state: Duration::from_secs(60),
            initial_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(5),
        };
        Context::builder(
            aws_config::SdkConfig::builder().build(),
            StackName::new("mock").unwrap(),
        )
        .waits(waits)
        .build()
    }

    #[tokio::test(start_paused = true)]
    async fn a_vpc_not_visible_yet_is_retried_until_it_is() {
        let rule = mock!(Client::modify_vpc_attribute)
            .sequence()
            .error(|| ModifyVpcAttributeError::generic(meta("InvalidVpcID.NotFound")))
            .times(2)
            .output(|| ModifyVpcAttributeOutput::builder().build())
            .repeatedly()
            .build();
        let ec2 = mock_client!(aws_sdk_ec2, RuleMode::Sequential, [&rule]);
        set_dns(&ec2, &cx(), "vpc-1").await.unwrap();
        // Two failures, then support and hostnames each once.
        assert_eq!(rule.num_calls(), 4);
    }

    #[tokio::test(start_paused = true)]
    async fn a_dependency_violation_that_clears_is_waited_out() {
        let rule = mock!(Client::delete_subnet)
            .sequence()
            .error(|| DeleteSubnetError::generic(meta("DependencyViolation")))
            .times(3)
            .output(|| DeleteSubnetOutput::builder().build())
            .build();
        let ec2 = mock_client!(aws_sdk_ec2, RuleMode::Sequential, [&rule]);
        let start = Instant::now();
        delete_resource(&ec2, &cx(), Kind::Subnet, "public-a", "subnet-1", &[])
            .await
            .unwrap();
        assert_eq!(rule.num_calls(), 4);
        // Backoff, not a busy loop: three waits of at least half of 100, 200, 400 ms.
        assert!(
            start.elapsed() >= Duration::from_millis(350),
            "{:?}",
            start.elapsed()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_dependency_violation_that_never_clears_hits_the_deadline_with_a_clear_error() {
        let rule = mock!(Client::delete_subnet)
            .sequence()
            .error(|| DeleteSubnetError::generic(meta("DependencyViolation")))
            .repeatedly()
            .build();
        let ec2 = mock_client!(aws_sdk_ec2, RuleMode::Sequential, [&rule]);
        let start = Instant::now();
        let err = delete_resource(&ec2, &cx(), Kind::Subnet, "public-a", "subnet-1", &[])
            .await
            .unwrap_err();
        let waited = start.elapsed();
        assert!(
            waited >= Duration::from_secs(60) && waited < Duration::from_secs(66),
            "{waited:?}"
        );
        let text = err.to_string();
        assert!(
            text.starts_with("DeleteSubnet subnet \"public-a\" (subnet-1): gave up after"),
            "{text}"
        );
        assert!(text.contains("DependencyViolation: mocked"), "{text}");
        // Delays capped at max_delay (2.5 to 5 s with jitter): 12 to 24 waits plus the ramp.
        assert!(
            (12..=30).contains(&rule.num_calls()),
            "{}",
            rule.num_calls()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn deleting_what_is_already_gone_succeeds_and_other_errors_fail_at_once() {
        let gone = mock!(Client::delete_subnet)
            .then_error(|| DeleteSubnetError::generic(meta("InvalidSubnetID.NotFound")));
        let ec2 = mock_client!(aws_sdk_ec2, [&gone]);
        delete_resource(&ec2, &cx(), Kind::Subnet, "public-a", "subnet-1", &[])
            .await
            .unwrap();

        let denied = mock!(Client::delete_subnet)
            .then_error(|| DeleteSubnetError::generic(meta("UnauthorizedOperation")));
        let ec2 = mock_client!(aws_sdk_ec2, [&denied]);
        let err = delete_resource(&ec2, &cx(), Kind::Subnet, "public-a", "subnet-1", &[])
            .await
            .unwrap_err();
        assert_eq!(err.code(), Some("UnauthorizedOperation"));
        assert_eq!(denied.num_calls(), 1);
    }
}
