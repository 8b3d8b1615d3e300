//! Removing task definitions: deregistering the current revision, then deleting every
//! INACTIVE revision of the family (registering is `service::register_task_definition`).

use infra::{Context, aws};

use super::delete;
use crate::desired::Desired;
use crate::error::Error;

pub(super) async fn deregister(
    ecs: &aws_sdk_ecs::Client,
    cx: &Context,
    arn: &str,
) -> Result<Option<String>, Error> {
    delete(cx, "DeregisterTaskDefinition", arn, &[], &[], || {
        ecs.deregister_task_definition().task_definition(arn).send()
    })
    .await?;
    Ok(None)
}

/// Deletes `arns` ten at a time (the API's limit). A revision deleted meanwhile is gone, as
/// asked; any other failure is an error naming the revision.
pub(super) async fn delete_revisions(
    ecs: &aws_sdk_ecs::Client,
    d: &Desired,
    arns: &[String],
) -> Result<Option<String>, Error> {
    let n = &d.names;
    for chunk in arns.chunks(10) {
        let out = ecs
            .delete_task_definitions()
            .set_task_definitions(Some(chunk.to_vec()))
            .send()
            .await
            .map_err(aws(
                "DeleteTaskDefinitions",
                format!("task definitions {}", n.family),
            ))?;
        if let Some(f) = out
            .failures()
            .iter()
            .find(|f| !f.reason().is_some_and(|r| r.contains("does not exist")))
        {
            return Err(Error::Unexpected {
                operation: "DeleteTaskDefinitions",
                resource: f.arn().unwrap_or(&n.family).to_owned(),
                detail: format!(
                    "the revision was not deleted: {}",
                    f.reason().unwrap_or("no reason given")
                ),
            });
        }
    }
    Ok(None)
}
