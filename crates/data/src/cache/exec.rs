//! The AWS calls of each cache step.

use std::time::Duration;

use aws_sdk_ec2::types::Filter;
use infra::{Backoff, Context, Step, WaitError, WaitPolicy, aws, waited};

use super::config::CacheSpec;
use super::desired::{CacheDesired, CacheOp};
use super::observe::CacheNames;
use super::{CacheClients, MODULE, PORT};
use crate::error::Error;
use crate::sg;

/// The longest a replication group may take to become available or to be deleted: ElastiCache
/// documents no bound; a two-node group typically takes 10-15 minutes to create.
const GROUP_STATE: Duration = Duration::from_secs(45 * 60);

/// What the steps carry: the security group's id once known.
#[derive(Debug, Clone, Default)]
pub struct CacheIds {
    pub(crate) sg: Option<String>,
}

fn cache_tags(cx: &Context, name: &str) -> Vec<aws_sdk_elasticache::types::Tag> {
    cx.tags(MODULE, name)
        .into_iter()
        .map(|(k, v)| {
            aws_sdk_elasticache::types::Tag::builder()
                .key(k)
                .value(v)
                .build()
        })
        .collect()
}

fn need_sg(ids: &CacheIds, names: &CacheNames) -> Result<String, Error> {
    ids.sg.clone().ok_or_else(|| Error::Missing {
        kind: "security group",
        name: names.security_group.clone(),
    })
}

/// Runs one step; returns the id of what it made or changed, when it has one.
pub(crate) async fn step(
    c: &CacheClients,
    cx: &Context,
    d: Option<&CacheDesired>,
    op: &CacheOp,
    ids: &mut CacheIds,
) -> Result<Option<String>, Error> {
    let names = CacheNames::of(cx);
    let missing = || Error::Missing {
        kind: "configuration",
        name: "the desired cache (a destroy cannot create)".to_owned(),
    };
    match op {
        CacheOp::CreateSecurityGroup { vpc } => {
            let description = format!(
                "stackproof {}: the cache, reachable on {PORT} from the service's tasks only",
                cx.stack()
            );
            let id =
                sg::create(&c.ec2, cx, MODULE, &names.security_group, description, vpc).await?;
            ids.sg = Some(id.clone());
            Ok(Some(id))
        }
        CacheOp::AllowClients { from } => {
            let id = need_sg(ids, &names)?;
            sg::allow(&c.ec2, cx, &id, from, PORT).await?;
            Ok(Some(id))
        }
        CacheOp::RevokeClients { from } => {
            let id = need_sg(ids, &names)?;
            sg::revoke(&c.ec2, &id, from, PORT).await?;
            Ok(Some(id))
        }
        CacheOp::CreateSubnetGroup { subnets } | CacheOp::SetSubnets { to: subnets, .. } => {
            let name = &names.subnet_group;
            let what = format!("cache subnet group {name}");
            let description = format!("stackproof {}: the cache's private subnets", cx.stack());
            if matches!(op, CacheOp::CreateSubnetGroup { .. }) {
                c.elasticache
                    .create_cache_subnet_group()
                    .cache_subnet_group_name(name)
                    .cache_subnet_group_description(description)
                    .set_subnet_ids(Some(subnets.clone()))
                    .set_tags(Some(cache_tags(cx, name)))
                    .send()
                    .await
                    .map_err(aws("CreateCacheSubnetGroup", &what))?;
            } else {
                c.elasticache
                    .modify_cache_subnet_group()
                    .cache_subnet_group_name(name)
                    .cache_subnet_group_description(description)
                    .set_subnet_ids(Some(subnets.clone()))
                    .send()
                    .await
                    .map_err(aws("ModifyCacheSubnetGroup", &what))?;
            }
            Ok(Some(name.clone()))
        }
        CacheOp::CreateGroup { spec } => {
            let d = d.ok_or_else(missing)?;
            let zones = zones_of(c, &d.subnets).await?;
            create_group(c, cx, spec, &names, &need_sg(ids, &names)?, &zones).await
        }
        CacheOp::ModifyGroup { settings } => {
            let d = d.ok_or_else(missing)?;
            let s = &d.spec;
            let name = &names.group;
            let mut req = c
                .elasticache
                .modify_replication_group()
                .replication_group_id(name)
                .apply_immediately(true);
            for setting in settings {
                req = match setting.field {
                    "node-type" => req.cache_node_type(&s.node_type),
                    "multi-az" => req
                        .automatic_failover_enabled(s.multi_az)
                        .multi_az_enabled(s.multi_az),
                    "snapshot-retention-days" => {
                        req.snapshot_retention_limit(s.snapshot_retention_days)
                    }
                    _ => req,
                };
            }
            req.send().await.map_err(aws(
                "ModifyReplicationGroup",
                format!("replication group {name}"),
            ))?;
            Ok(Some(name.clone()))
        }
        CacheOp::WaitAvailable => wait_group(c, cx, &names.group, true).await.map(|()| None),
        CacheOp::DeleteGroup => {
            let name = &names.group;
            match c
                .elasticache
                .delete_replication_group()
                .replication_group_id(name)
                .send()
                .await
            {
                Ok(_) => {}
                Err(e)
                    if e.as_service_error()
                        .is_some_and(|s| s.is_replication_group_not_found_fault()) => {}
                Err(e) => {
                    return Err(aws(
                        "DeleteReplicationGroup",
                        format!("replication group {name}"),
                    )(e)
                    .into());
                }
            }
            wait_group(c, cx, name, false).await?;
            Ok(None)
        }
        CacheOp::DeleteSubnetGroup => {
            let name = &names.subnet_group;
            // Still in use while the group's deletion finishes.
            let result = Backoff::dependency(cx.waits())
                .retry_codes(
                    format!("DeleteCacheSubnetGroup {name}"),
                    &["CacheSubnetGroupInUse"],
                    || {
                        c.elasticache
                            .delete_cache_subnet_group()
                            .cache_subnet_group_name(name)
                            .send()
                    },
                )
                .await;
            match result {
                Ok(_) => Ok(None),
                Err(WaitError::Failed(e))
                    if e.as_service_error()
                        .is_some_and(|s| s.is_cache_subnet_group_not_found_fault()) =>
                {
                    Ok(None)
                }
                Err(e) => Err(waited("DeleteCacheSubnetGroup", name)(e).into()),
            }
        }
        CacheOp::DeleteSecurityGroup { id } => {
            sg::delete(&c.ec2, cx, id).await?;
            Ok(None)
        }
    }
}

/// The zones of the subnets, in their order: the primary goes in the first, each replica in
/// the next (ElastiCache's `PreferredCacheClusterAZs`).
async fn zones_of(c: &CacheClients, subnets: &[String]) -> Result<Vec<String>, Error> {
    let out = c
        .ec2
        .describe_subnets()
        .filters(
            Filter::builder()
                .name("subnet-id")
                .set_values(Some(subnets.to_vec()))
                .build(),
        )
        .send()
        .await
        .map_err(aws("DescribeSubnets", subnets.join(", ")))?;
    let mut zones: Vec<String> = out
        .subnets()
        .iter()
        .filter_map(|s| s.availability_zone().map(str::to_owned))
        .collect();
    zones.sort();
    zones.dedup();
    Ok(zones)
}

async fn create_group(
    c: &CacheClients,
    cx: &Context,
    s: &CacheSpec,
    names: &CacheNames,
    sg: &str,
    zones: &[String],
) -> Result<Option<String>, Error> {
    let name = &names.group;
    let nodes = s.replicas + 1;
    let placed: Vec<String> = (0..usize::try_from(nodes).unwrap_or(1))
        .filter_map(|i| zones.get(i % zones.len().max(1)).cloned())
        .collect();
    c.elasticache
        .create_replication_group()
        .replication_group_id(name)
        .replication_group_description(format!(
            "stackproof {}: the service's cache, a primary and {} replica(s)",
            cx.stack(),
            s.replicas
        ))
        .engine("redis")
        .engine_version(&s.engine_version)
        .cache_node_type(&s.node_type)
        .num_cache_clusters(nodes)
        .set_preferred_cache_cluster_azs((!placed.is_empty()).then_some(placed))
        .automatic_failover_enabled(s.multi_az)
        .multi_az_enabled(s.multi_az)
        .transit_encryption_enabled(s.transit_encryption)
        .at_rest_encryption_enabled(true)
        .snapshot_retention_limit(s.snapshot_retention_days)
        .cache_subnet_group_name(&names.subnet_group)
        .security_group_ids(sg)
        .port(PORT)
        .set_tags(Some(cache_tags(cx, name)))
        .send()
        .await
        .map_err(aws(
            "CreateReplicationGroup",
            format!("replication group {name}"),
        ))?;
    Ok(Some(name.clone()))
}

/// Waits until the group is `available` (or, `available` false, gone).
async fn wait_group(
    c: &CacheClients,
    cx: &Context,
    name: &str,
    available: bool,
) -> Result<(), Error> {
    let waits = WaitPolicy {
        resource_state: cx.waits().resource_state.max(GROUP_STATE),
        ..*cx.waits()
    };
    let what = if available {
        format!("replication group {name} available")
    } else {
        format!("replication group {name} deleted")
    };
    Backoff::resource_state(&waits)
        .run(what, || async {
            match c
                .elasticache
                .describe_replication_groups()
                .replication_group_id(name)
                .send()
                .await
            {
                Ok(out) => {
                    let status = out
                        .replication_groups()
                        .first()
                        .and_then(|g| g.status())
                        .unwrap_or_default()
                        .to_owned();
                    if available && status == "available" {
                        Step::Done(())
                    } else {
                        Step::Retry(format!("status {status}"))
                    }
                }
                Err(e)
                    if !available
                        && e.as_service_error()
                            .is_some_and(|s| s.is_replication_group_not_found_fault()) =>
                {
                    Step::Done(())
                }
                Err(e) => Step::Fail(e),
            }
        })
        .await
        .map_err(|e| waited("DescribeReplicationGroups", name)(e).into())
}
