//! Reading the region's ElastiCache replication groups from the control plane.

use super::GroupSpec;
use crate::Error;
use crate::plane::Clients;
use crate::plane::observe::{MAX_PAGES, aws, port};

/// The region's cache subnet groups: name and subnet ids (their zones are the subnets' own:
/// moto does not describe a subnet's zone in a cache subnet group).
async fn subnet_groups(c: &Clients) -> Result<Vec<(String, Vec<String>)>, Error> {
    let mut groups = Vec::new();
    let mut marker = None;
    for _ in 0..MAX_PAGES {
        let out = c
            .elasticache
            .describe_cache_subnet_groups()
            .set_marker(marker)
            .send()
            .await
            .map_err(aws("DescribeCacheSubnetGroups", "*"))?;
        for g in out.cache_subnet_groups() {
            let subnets = g
                .subnets()
                .iter()
                .filter_map(|s| s.subnet_identifier().map(str::to_owned))
                .collect();
            groups.push((
                g.cache_subnet_group_name().unwrap_or_default().to_owned(),
                subnets,
            ));
        }
        marker = out.marker().map(str::to_owned);
        if marker.is_none() {
            break;
        }
    }
    Ok(groups)
}

/// Reads the region's replication groups (cluster mode disabled) that are available or
/// modifying. ElastiCache names a group's subnet group only on its member clusters, which moto
/// does not make: the subnet group of the group's own name is taken (stackproof's naming), else
/// the region's only one.
pub(crate) async fn groups(c: &Clients) -> Result<Vec<GroupSpec>, Error> {
    let mut specs = Vec::new();
    let mut marker = None;
    // Read once, and only when there is a group (most stacks have no cache).
    let mut subnet_groups: Option<Vec<(String, Vec<String>)>> = None;
    for _ in 0..MAX_PAGES {
        let out = c
            .elasticache
            .describe_replication_groups()
            .set_marker(marker)
            .send()
            .await
            .map_err(aws("DescribeReplicationGroups", "*"))?;
        for g in out.replication_groups() {
            if !matches!(g.status(), Some("available" | "modifying" | "snapshotting")) {
                continue;
            }
            let Some(node_group) = g.node_groups().first() else {
                continue;
            };
            let Some((endpoint, port)) = node_group
                .primary_endpoint()
                .and_then(|e| Some((e.address()?.to_owned(), port(e.port())?)))
            else {
                continue;
            };
            let members: Vec<(String, String, bool)> = node_group
                .node_group_members()
                .iter()
                .filter_map(|m| {
                    Some((
                        m.cache_cluster_id()?.to_owned(),
                        m.preferred_availability_zone()?.to_owned(),
                        m.current_role() == Some("primary"),
                    ))
                })
                .collect();
            let id = g.replication_group_id().unwrap_or_default().to_owned();
            if subnet_groups.is_none() {
                subnet_groups = Some(self::subnet_groups(c).await?);
            }
            let subnet_groups = subnet_groups.as_deref().unwrap_or_default();
            let subnets = subnet_groups
                .iter()
                .find(|(name, _)| *name == id)
                .or(match subnet_groups {
                    [only] => Some(only),
                    _ => None,
                })
                .map(|(_, subnets)| subnets.clone())
                .unwrap_or_default();
            specs.push(GroupSpec {
                arn: g.arn().unwrap_or_default().to_owned(),
                endpoint,
                reader_endpoint: node_group
                    .reader_endpoint()
                    .and_then(|e| e.address())
                    .map(str::to_owned),
                port,
                automatic_failover: g.automatic_failover()
                    == Some(&aws_sdk_elasticache::types::AutomaticFailoverStatus::Enabled),
                transit_encryption: g.transit_encryption_enabled().unwrap_or(false),
                members,
                subnets,
                id,
            });
        }
        marker = out.marker().map(str::to_owned);
        if marker.is_none() {
            break;
        }
    }
    Ok(specs)
}
