//! VPC endpoints: gateway endpoints on route tables, interface endpoints in subnets.

use std::collections::{BTreeMap, BTreeSet};

use aws_sdk_ec2::Client;
use aws_sdk_ec2::types::{ResourceType, VpcEndpointType};
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use infra::{Backoff, Context, Step, aws};

use super::{Ids, delete, is_not_found, need, need_one, settle, tag_spec, wait_failed};
use crate::desired::{Desired, ENDPOINT_GROUP, EndpointWant, Kind, Op, VPC, one, retag};
use crate::error::Error;
use crate::observe::{Observed, name_tag};

/// The ids of what an endpoint attaches to, by logical name: route tables for a gateway
/// endpoint, subnets for an interface endpoint.
fn attach_ids(ids: &Ids, gateway: bool, names: &[String]) -> Result<Vec<String>, Error> {
    let (map, kind) = if gateway {
        (&ids.tables, "route-table")
    } else {
        (&ids.subnets, "subnet")
    };
    names
        .iter()
        .map(|n| need(map, kind, n).map(str::to_owned))
        .collect()
}

/// Creates the endpoint and waits until it is available.
pub(super) async fn create(
    ec2: &Client,
    cx: &Context,
    e: &EndpointWant,
    ids: &Ids,
) -> Result<Option<String>, Error> {
    let vpc = need_one(&ids.vpc, "vpc", VPC)?;
    let attach = attach_ids(ids, e.gateway, &e.attach)?;
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
    wait(ec2, cx, &id, &what, false).await?;
    Ok(Some(id))
}

/// Adds the route tables or subnets named in `add` and removes those with the ids in `remove`.
pub(super) async fn modify(
    ec2: &Client,
    cx: &Context,
    (name, id): (&str, &str),
    gateway: bool,
    (add, remove): (&[String], &[String]),
    ids: &Ids,
) -> Result<Option<String>, Error> {
    let add = attach_ids(ids, gateway, add)?;
    let what = format!("vpc-endpoint {name:?} ({id})");
    settle(cx, "ModifyVpcEndpoint", &what, || {
        let call = ec2.modify_vpc_endpoint().vpc_endpoint_id(id);
        let some = |v: &[String]| (!v.is_empty()).then(|| v.to_vec());
        if gateway {
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
    Ok(Some(id.to_owned()))
}

/// Deletes the endpoint and waits until it is gone (an interface endpoint holds network
/// interfaces in the subnets until then).
pub(super) async fn remove(ec2: &Client, cx: &Context, id: &str, what: &str) -> Result<(), Error> {
    delete(cx, "DeleteVpcEndpoints", what, &[], || {
        ec2.delete_vpc_endpoints().vpc_endpoint_ids(id).send()
    })
    .await?;
    wait(ec2, cx, id, what, true).await
}

/// Waits until endpoint `id` is available (`gone`: deleted or unknown), as its network
/// interfaces (interface endpoints) come up or are released.
async fn wait(ec2: &Client, cx: &Context, id: &str, what: &str, gone: bool) -> Result<(), Error> {
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

// The diff: the steps that take what exists to what is wanted. Pure: no AWS call.

/// The VPC endpoints: created, replaced when their service or type changed, moved to the
/// route tables or subnets they should be in (a second one of a name went in `dedup`).
pub(crate) fn steps(
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
