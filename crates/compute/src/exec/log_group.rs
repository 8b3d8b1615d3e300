//! The task log group: created tagged with its retention, tagged, deleted.

use std::collections::BTreeMap;

use infra::{Context, aws};

use super::delete;
use super::service::put_retention;
use crate::Clients;
use crate::desired::{Desired, LOG_GROUP};
use crate::error::Error;

/// Creates the log group, tagged in the same call, then sets its retention; returns its name.
pub(super) async fn create(clients: &Clients, d: &Desired) -> Result<Option<String>, Error> {
    let n = &d.names;
    let what = format!("log group {}", n.log_group);
    clients
        .logs
        .create_log_group()
        .log_group_name(&n.log_group)
        .set_tags(Some(d.tags(LOG_GROUP).into_iter().collect()))
        .send()
        .await
        .map_err(aws("CreateLogGroup", &what))?;
    put_retention(clients, d).await?;
    Ok(Some(n.log_group.clone()))
}

pub(super) async fn tag(
    logs: &aws_sdk_cloudwatchlogs::Client,
    d: &Desired,
    arn: &str,
    tags: &BTreeMap<String, String>,
) -> Result<Option<String>, Error> {
    logs.tag_resource()
        .resource_arn(arn)
        .set_tags(Some(tags.clone().into_iter().collect()))
        .send()
        .await
        .map_err(aws(
            "TagResource",
            format!("log group {}", d.names.log_group),
        ))?;
    Ok(None)
}

pub(super) async fn delete_log_group(
    logs: &aws_sdk_cloudwatchlogs::Client,
    cx: &Context,
    d: &Desired,
) -> Result<Option<String>, Error> {
    let n = &d.names;
    delete(
        cx,
        "DeleteLogGroup",
        &format!("log group {}", n.log_group),
        &["ResourceNotFoundException"],
        &[],
        || logs.delete_log_group().log_group_name(&n.log_group).send(),
    )
    .await?;
    Ok(None)
}
