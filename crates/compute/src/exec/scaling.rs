//! Application Auto Scaling: the service's scalable target and the removal of its policies
//! (policies are put by `service::put_policy`). Calls on one target are serialized: AWS refuses
//! concurrent updates of a target.

use aws_sdk_applicationautoscaling::types::{ScalableDimension, ServiceNamespace};
use infra::Context;

use super::serialized;
use crate::Clients;
use crate::desired::{Desired, SCALING};
use crate::error::Error;

/// Registers (or updates) the service's scalable target with the desired bounds; tags it when
/// it is new (`was` none). Returns the target's resource id.
pub(super) async fn register_target(
    clients: &Clients,
    cx: &Context,
    d: &Desired,
    was: Option<(i32, i32)>,
) -> Result<Option<String>, Error> {
    let id = d.names.resource_id();
    let aas = &clients.scaling;
    let tags = was.is_none().then(|| d.tags(SCALING).into_iter().collect());
    serialized(cx, "RegisterScalableTarget", &id, &[], || {
        aas.register_scalable_target()
            .service_namespace(ServiceNamespace::Ecs)
            .resource_id(&id)
            .scalable_dimension(ScalableDimension::EcsServiceDesiredCount)
            .min_capacity(d.min)
            .max_capacity(d.max)
            .set_tags(tags.clone())
            .send()
    })
    .await?;
    Ok(Some(id))
}

pub(super) async fn delete_policy(
    clients: &Clients,
    cx: &Context,
    d: &Desired,
    name: &str,
) -> Result<Option<String>, Error> {
    let id = d.names.resource_id();
    let aas = &clients.scaling;
    serialized(
        cx,
        "DeleteScalingPolicy",
        name,
        &["ObjectNotFoundException"],
        || {
            aas.delete_scaling_policy()
                .policy_name(name)
                .service_namespace(ServiceNamespace::Ecs)
                .resource_id(&id)
                .scalable_dimension(ScalableDimension::EcsServiceDesiredCount)
                .send()
        },
    )
    .await?;
    Ok(None)
}

pub(super) async fn deregister_target(
    clients: &Clients,
    cx: &Context,
    d: &Desired,
) -> Result<Option<String>, Error> {
    let id = d.names.resource_id();
    let aas = &clients.scaling;
    serialized(
        cx,
        "DeregisterScalableTarget",
        &id,
        &["ObjectNotFoundException"],
        || {
            aas.deregister_scalable_target()
                .service_namespace(ServiceNamespace::Ecs)
                .resource_id(&id)
                .scalable_dimension(ScalableDimension::EcsServiceDesiredCount)
                .send()
        },
    )
    .await?;
    Ok(None)
}
