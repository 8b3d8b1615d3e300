//! The ECS cluster (with Container Insights as desired) and the tags of any ECS resource.

use std::collections::BTreeMap;

use infra::{Context, aws};

use super::service::insights;
use super::{Ids, delete, ecs_tags};
use crate::desired::{CLUSTER, Desired, EcsKind};
use crate::error::Error;

/// Creates the cluster, tagged in the same call; returns its ARN.
pub(super) async fn create(
    ecs: &aws_sdk_ecs::Client,
    d: &Desired,
    ids: &mut Ids,
) -> Result<Option<String>, Error> {
    let n = &d.names;
    let out = ecs
        .create_cluster()
        .cluster_name(&n.cluster)
        .settings(insights(d))
        .set_tags(Some(ecs_tags(&d.tags(CLUSTER))))
        .send()
        .await
        .map_err(aws("CreateCluster", format!("ECS cluster {}", n.cluster)))?;
    let arn = out
        .cluster()
        .and_then(|c| c.cluster_arn())
        .unwrap_or_default()
        .to_owned();
    ids.cluster = Some(arn.clone());
    Ok(Some(arn))
}

pub(super) async fn update_insights(
    ecs: &aws_sdk_ecs::Client,
    d: &Desired,
) -> Result<Option<String>, Error> {
    let n = &d.names;
    ecs.update_cluster()
        .cluster(&n.cluster)
        .settings(insights(d))
        .send()
        .await
        .map_err(aws("UpdateCluster", format!("ECS cluster {}", n.cluster)))?;
    Ok(None)
}

/// Tags the ECS resource `arn` (cluster, task definition or service).
pub(super) async fn tag(
    ecs: &aws_sdk_ecs::Client,
    kind: EcsKind,
    arn: &str,
    tags: &BTreeMap<String, String>,
) -> Result<Option<String>, Error> {
    ecs.tag_resource()
        .resource_arn(arn)
        .set_tags(Some(ecs_tags(tags)))
        .send()
        .await
        .map_err(aws("TagResource", format!("ECS {} {arn}", kind.logical())))?;
    Ok(None)
}

/// Deletes the cluster, retried while its services and tasks drain.
pub(super) async fn delete_cluster(
    ecs: &aws_sdk_ecs::Client,
    cx: &Context,
    d: &Desired,
) -> Result<Option<String>, Error> {
    let n = &d.names;
    delete(
        cx,
        "DeleteCluster",
        &format!("ECS cluster {}", n.cluster),
        &["ClusterNotFoundException"],
        &[
            "ClusterContainsServicesException",
            "ClusterContainsTasksException",
            "UpdateInProgressException",
        ],
        || ecs.delete_cluster().cluster(&n.cluster).send(),
    )
    .await?;
    Ok(None)
}
