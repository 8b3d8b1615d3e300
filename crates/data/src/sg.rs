//! The security group each data store has of its own: made in the stack's VPC, open on the
//! store's port to the service's tasks' group and to nothing else. The database (5432) and the
//! cache (6379) share these reads and calls.

use std::collections::BTreeMap;

use aws_sdk_ec2::types::{Filter, IpPermission, ResourceType, TagSpecification, UserIdGroupPair};
use infra::{Backoff, Context, aws, tags, waited};

use crate::error::Error;

/// A store's security group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Sg {
    pub(crate) id: String,
    pub(crate) vpc: String,
    /// Security groups allowed in on the store's port.
    pub(crate) ingress_from: Vec<String>,
    pub(crate) ours: bool,
}

impl Sg {
    /// Whether `clients` must be let in, and the groups that must be taken out.
    pub(crate) fn ingress_changes(&self, clients: &str) -> (bool, Vec<String>) {
        let allow = !self.ingress_from.iter().any(|g| g == clients);
        let revoke = self
            .ingress_from
            .iter()
            .filter(|g| *g != clients)
            .cloned()
            .collect();
        (allow, revoke)
    }
}

pub(crate) fn is_ours(cx: &Context, tags: &BTreeMap<String, String>) -> bool {
    tags.get(tags::STACK).map(String::as_str) == Some(cx.stack().as_str())
}

/// The group named `name` (in `vpc` when given, else by the stack's tag), with who may reach
/// `port`.
pub(crate) async fn observe(
    ec2: &aws_sdk_ec2::Client,
    cx: &Context,
    name: &str,
    vpc: Option<&str>,
    port: i32,
) -> Result<Option<Sg>, Error> {
    let mut req = ec2
        .describe_security_groups()
        .filters(Filter::builder().name("group-name").values(name).build());
    req = match vpc {
        Some(vpc) => req.filters(Filter::builder().name("vpc-id").values(vpc).build()),
        None => req.filters(
            Filter::builder()
                .name(format!("tag:{}", tags::STACK))
                .values(cx.stack().as_str())
                .build(),
        ),
    };
    let out = req.send().await.map_err(aws(
        "DescribeSecurityGroups",
        format!("security group {name}"),
    ))?;
    Ok(out.security_groups().first().map(|g| {
        let tags: BTreeMap<String, String> = g
            .tags()
            .iter()
            .filter_map(|t| Some((t.key()?.to_owned(), t.value()?.to_owned())))
            .collect();
        Sg {
            id: g.group_id().unwrap_or_default().to_owned(),
            vpc: g.vpc_id().unwrap_or_default().to_owned(),
            ingress_from: g
                .ip_permissions()
                .iter()
                .filter(|p| p.from_port() == Some(port) && p.to_port() == Some(port))
                .flat_map(|p| p.user_id_group_pairs())
                .filter_map(|pair| pair.group_id().map(str::to_owned))
                .collect(),
            ours: is_ours(cx, &tags),
        }
    }))
}

fn from_group(group: &str, port: i32) -> IpPermission {
    IpPermission::builder()
        .ip_protocol("tcp")
        .from_port(port)
        .to_port(port)
        .user_id_group_pairs(UserIdGroupPair::builder().group_id(group).build())
        .build()
}

/// Creates the group `name` in `vpc`, tagged for `module`; returns its id.
pub(crate) async fn create(
    ec2: &aws_sdk_ec2::Client,
    cx: &Context,
    module: &str,
    name: &str,
    description: String,
    vpc: &str,
) -> Result<String, Error> {
    let mut spec = TagSpecification::builder().resource_type(ResourceType::SecurityGroup);
    for (k, v) in cx.tags(module, name) {
        spec = spec.tags(aws_sdk_ec2::types::Tag::builder().key(k).value(v).build());
    }
    let spec = spec
        .tags(
            aws_sdk_ec2::types::Tag::builder()
                .key(tags::DISPLAY_NAME)
                .value(name)
                .build(),
        )
        .build();
    let out = ec2
        .create_security_group()
        .group_name(name)
        .description(description)
        .vpc_id(vpc)
        .tag_specifications(spec)
        .send()
        .await
        .map_err(aws("CreateSecurityGroup", format!("security group {name}")))?;
    Ok(out.group_id().unwrap_or_default().to_owned())
}

/// Lets `from` in on `port` (retried while the new group is not visible yet).
pub(crate) async fn allow(
    ec2: &aws_sdk_ec2::Client,
    cx: &Context,
    sg: &str,
    from: &str,
    port: i32,
) -> Result<(), Error> {
    Backoff::consistency(cx.waits())
        .retry_codes(
            format!("AuthorizeSecurityGroupIngress {sg}"),
            &["InvalidGroup.NotFound"],
            || {
                ec2.authorize_security_group_ingress()
                    .group_id(sg)
                    .ip_permissions(from_group(from, port))
                    .send()
            },
        )
        .await
        .map_err(waited("AuthorizeSecurityGroupIngress", sg))?;
    Ok(())
}

/// Takes `from` out.
pub(crate) async fn revoke(
    ec2: &aws_sdk_ec2::Client,
    sg: &str,
    from: &str,
    port: i32,
) -> Result<(), Error> {
    ec2.revoke_security_group_ingress()
        .group_id(sg)
        .ip_permissions(from_group(from, port))
        .send()
        .await
        .map_err(aws("RevokeSecurityGroupIngress", sg))?;
    Ok(())
}

/// Deletes the group, retried while the store's network interfaces still leave it.
pub(crate) async fn delete(ec2: &aws_sdk_ec2::Client, cx: &Context, id: &str) -> Result<(), Error> {
    Backoff::dependency(cx.waits())
        .retry_codes(
            format!("DeleteSecurityGroup {id}"),
            &["DependencyViolation"],
            || ec2.delete_security_group().group_id(id).send(),
        )
        .await
        .map_err(waited("DeleteSecurityGroup", id))?;
    Ok(())
}
