//! Reads what the stack has of its cache: the security group (EC2), the cache subnet group and
//! the replication group (ElastiCache), by their derived names; ownership by the stack's tags.

use std::collections::BTreeMap;

use aws_sdk_elasticache::types::{AutomaticFailoverStatus, MultiAzStatus};
use infra::{Context, aws};

use super::{CacheClients, PORT};
use crate::error::Error;
use crate::sg::{self, Sg, is_ours};

/// The names the stack's cache resources have: `{stack}-cache` for all three.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheNames {
    /// The replication group id.
    pub group: String,
    /// The cache subnet group.
    pub subnet_group: String,
    /// The security group.
    pub security_group: String,
}

impl CacheNames {
    /// The stack's names.
    pub fn of(cx: &Context) -> CacheNames {
        let base = super::group_id(cx.stack().as_str());
        CacheNames {
            group: base.clone(),
            subnet_group: base.clone(),
            security_group: base,
        }
    }
}

/// The cache subnet group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SubnetGroup {
    pub(crate) subnets: Vec<String>,
    pub(crate) ours: bool,
}

/// One node of the group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Member {
    pub(crate) id: String,
    pub(crate) zone: Option<String>,
    pub(crate) primary: bool,
}

/// The replication group, as ElastiCache describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Group {
    pub(crate) arn: String,
    pub(crate) status: String,
    pub(crate) node_type: String,
    pub(crate) automatic_failover: bool,
    pub(crate) multi_az: bool,
    pub(crate) transit_encryption: bool,
    pub(crate) at_rest_encryption: bool,
    pub(crate) snapshot_retention_days: i32,
    pub(crate) members: Vec<Member>,
    pub(crate) primary_endpoint: Option<(String, i32)>,
    pub(crate) reader_endpoint: Option<String>,
    pub(crate) ours: bool,
}

/// Everything the cache has in the account.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CacheObserved {
    pub(crate) sg: Option<Sg>,
    pub(crate) subnet_group: Option<SubnetGroup>,
    pub(crate) group: Option<Group>,
}

/// Reads the three resources (the security group in `vpc` when given, else by name and the
/// stack's tag).
pub(crate) async fn observe(
    c: &CacheClients,
    cx: &Context,
    vpc: Option<&str>,
) -> Result<CacheObserved, Error> {
    let names = CacheNames::of(cx);
    let (sg, subnet_group, group) = tokio::try_join!(
        sg::observe(&c.ec2, cx, &names.security_group, vpc, PORT),
        subnet_group(c, cx, &names),
        group(c, cx, &names),
    )?;
    Ok(CacheObserved {
        sg,
        subnet_group,
        group,
    })
}

async fn tags_of(c: &CacheClients, arn: &str) -> Result<BTreeMap<String, String>, Error> {
    let out = c
        .elasticache
        .list_tags_for_resource()
        .resource_name(arn)
        .send()
        .await
        .map_err(aws("ListTagsForResource", arn))?;
    Ok(out
        .tag_list()
        .iter()
        .filter_map(|t| Some((t.key()?.to_owned(), t.value()?.to_owned())))
        .collect())
}

async fn subnet_group(
    c: &CacheClients,
    cx: &Context,
    names: &CacheNames,
) -> Result<Option<SubnetGroup>, Error> {
    let out = match c
        .elasticache
        .describe_cache_subnet_groups()
        .cache_subnet_group_name(&names.subnet_group)
        .send()
        .await
    {
        Ok(out) => out,
        Err(e)
            if e.as_service_error()
                .is_some_and(|s| s.is_cache_subnet_group_not_found_fault()) =>
        {
            return Ok(None);
        }
        Err(e) => {
            return Err(aws(
                "DescribeCacheSubnetGroups",
                format!("cache subnet group {}", names.subnet_group),
            )(e)
            .into());
        }
    };
    let Some(g) = out.cache_subnet_groups().first() else {
        return Ok(None);
    };
    let tags = tags_of(c, g.arn().unwrap_or_default()).await?;
    let mut subnets: Vec<String> = g
        .subnets()
        .iter()
        .filter_map(|s| s.subnet_identifier().map(str::to_owned))
        .collect();
    subnets.sort();
    Ok(Some(SubnetGroup {
        subnets,
        ours: is_ours(cx, &tags),
    }))
}

pub(crate) async fn group(
    c: &CacheClients,
    cx: &Context,
    names: &CacheNames,
) -> Result<Option<Group>, Error> {
    let out = match c
        .elasticache
        .describe_replication_groups()
        .replication_group_id(&names.group)
        .send()
        .await
    {
        Ok(out) => out,
        Err(e)
            if e.as_service_error()
                .is_some_and(|s| s.is_replication_group_not_found_fault()) =>
        {
            return Ok(None);
        }
        Err(e) => {
            return Err(aws(
                "DescribeReplicationGroups",
                format!("replication group {}", names.group),
            )(e)
            .into());
        }
    };
    let Some(g) = out.replication_groups().first() else {
        return Ok(None);
    };
    let arn = g.arn().unwrap_or_default().to_owned();
    let tags = tags_of(c, &arn).await?;
    let node_group = g.node_groups().first();
    Ok(Some(Group {
        status: g.status().unwrap_or_default().to_owned(),
        node_type: g.cache_node_type().unwrap_or_default().to_owned(),
        automatic_failover: g.automatic_failover() == Some(&AutomaticFailoverStatus::Enabled),
        multi_az: g.multi_az() == Some(&MultiAzStatus::Enabled),
        transit_encryption: g.transit_encryption_enabled().unwrap_or(false),
        at_rest_encryption: g.at_rest_encryption_enabled().unwrap_or(false),
        snapshot_retention_days: g.snapshot_retention_limit().unwrap_or(0),
        members: node_group
            .map(|n| {
                n.node_group_members()
                    .iter()
                    .map(|m| Member {
                        id: m.cache_cluster_id().unwrap_or_default().to_owned(),
                        zone: m.preferred_availability_zone().map(str::to_owned),
                        primary: m.current_role() == Some("primary"),
                    })
                    .collect()
            })
            .unwrap_or_default(),
        primary_endpoint: node_group
            .and_then(|n| n.primary_endpoint())
            .and_then(|e| Some((e.address()?.to_owned(), e.port()?))),
        reader_endpoint: node_group
            .and_then(|n| n.reader_endpoint())
            .and_then(|e| e.address())
            .map(str::to_owned),
        ours: is_ours(cx, &tags),
        arn,
    }))
}
