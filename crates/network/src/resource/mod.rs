//! The network's resource kinds, one file each (`vpc.rs`, `subnet.rs`, `gateway.rs` for the
//! internet and NAT gateways and Elastic IPs, `security_group.rs`, `route_table.rs`,
//! `endpoint.rs`, `network_acl.rs`), each owning its pure diff (`steps`) and its calls, waits
//! and retries; this file holds what they share and dispatches a step to its kind.

use std::collections::BTreeMap;
use std::future::Future;

use aws_sdk_ec2::Client;
use aws_sdk_ec2::error::SdkError;
use aws_sdk_ec2::types::{ResourceType, Tag, TagSpecification};
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use infra::{Backoff, CallError, Context, Step, waited};

use crate::desired::{Kind, MODULE, Op};
use crate::error::Error;
use crate::observe::{Observed, name_tag};

pub(crate) mod endpoint;
pub(crate) mod gateway;
mod network_acl;
pub(crate) mod route_table;
pub(crate) mod security_group;
pub(crate) mod subnet;
pub(crate) mod vpc;

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
    call: F,
) -> Result<T, Error>
where
    E: std::error::Error + ProvideErrorMetadata + Send + Sync + 'static,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, SdkError<E>>>,
{
    Backoff::consistency(cx.waits())
        .retry_when(
            format!("{operation} {resource}"),
            |e: &SdkError<E>| is_not_found(e.code()),
            call,
        )
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

/// Carries out one step: the resource kind's file makes the calls.
pub(crate) async fn step(
    ec2: &Client,
    cx: &Context,
    op: &Op,
    ids: &mut Ids,
) -> Result<Option<String>, Error> {
    match op {
        Op::CreateVpc { cidr } => vpc::create(ec2, cx, cidr, ids).await,
        Op::SetDns { .. } => vpc::repair_dns(ec2, cx, ids).await,
        Op::CreateSubnet(s) => subnet::create(ec2, cx, s, ids).await,
        Op::CreateIgw => gateway::create_igw(ec2, cx, ids).await,
        Op::AttachIgw => gateway::attach_igw(ec2, cx, ids).await.map(Some),
        Op::AllocateEip { name } => gateway::allocate_eip(ec2, cx, name, ids).await,
        Op::CreateNat { nat, generation } => {
            gateway::create_nat(ec2, cx, nat, *generation, ids).await
        }
        Op::WaitNats => gateway::wait_nats(ec2, cx, ids).await.map(|()| None),
        Op::CreateGroup { name, description } => {
            security_group::create(ec2, cx, name, description, ids).await
        }
        Op::Authorize { group, rules } => {
            security_group::authorize(ec2, cx, group, rules, ids).await
        }
        Op::Revoke { group, id, rules } => security_group::revoke(ec2, group, id, rules, ids).await,
        Op::CreateTable { name } => route_table::create(ec2, cx, name, ids).await,
        Op::Associate {
            table,
            subnet,
            replace,
        } => route_table::associate(ec2, cx, table, subnet, replace.as_deref(), ids).await,
        Op::Route { table, op, target } => {
            route_table::route(ec2, cx, table, *op, target.as_ref(), ids).await
        }
        Op::CreateEndpoint(e) => endpoint::create(ec2, cx, e, ids).await,
        Op::ModifyEndpoint {
            name,
            id,
            gateway,
            add,
            remove,
        } => endpoint::modify(ec2, cx, (name, id), *gateway, (add, remove), ids).await,
        Op::Retag {
            kind,
            name,
            id,
            tags,
        } => retag(ec2, cx, (*kind, name, id), tags).await,
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
            Ok(Some(id.clone()))
        }
    }
}

/// Sets `tags` on any EC2 resource of the stack.
async fn retag(
    ec2: &Client,
    cx: &Context,
    (kind, name, id): (Kind, &str, &str),
    tags: &BTreeMap<String, String>,
) -> Result<Option<String>, Error> {
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
    Ok(Some(id.to_owned()))
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

/// A wait's error: the step's own, or the deadline as a timeout.
fn wait_failed(e: infra::WaitError<Error>) -> Error {
    match e {
        infra::WaitError::Failed(e) => e,
        timeout => CallError::Timeout(timeout.to_string()).into(),
    }
}

/// Deletes one resource with the waits and retries its kind needs. `related`: the VPCs an
/// internet gateway is attached to, a route table's or network ACL's associations.
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
        Kind::Vpc => vpc::remove(ec2, cx, id, &what).await,
        Kind::Subnet => subnet::remove(ec2, cx, id, &what).await,
        Kind::InternetGateway => gateway::remove_igw(ec2, cx, id, &what, related).await,
        Kind::ElasticIp => gateway::release_eip(ec2, cx, id, &what).await,
        Kind::NatGateway => gateway::remove_nat(ec2, cx, id, &what).await,
        Kind::SecurityGroup => security_group::remove(ec2, cx, id, &what).await,
        Kind::RouteTable => route_table::remove(ec2, cx, id, &what, related).await,
        Kind::NetworkAcl => network_acl::remove(ec2, cx, id, &what, related).await,
        Kind::VpcEndpoint => endpoint::remove(ec2, cx, id, &what).await,
    }
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
    use infra::StackName;
    use tokio::time::Instant;

    use super::*;

    fn meta(code: &str) -> ErrorMetadata {
        ErrorMetadata::builder()
            .code(code)
            .message("mocked")
            .build()
    }

    fn cx() -> Context {
        Context::mocked(StackName::new("mock").unwrap()).build()
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
        vpc::set_dns(&ec2, &cx(), "vpc-1").await.unwrap();
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
