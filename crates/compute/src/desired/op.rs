//! The steps of an apply or destroy and how each shows in a plan.

use std::collections::BTreeMap;

use infra::{Action, Change};

use super::*;
/// Which ECS resource a tag update concerns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EcsKind {
    Cluster,
    Service,
    TaskDefinition,
}

impl EcsKind {
    pub(crate) fn logical(self) -> &'static str {
        match self {
            EcsKind::Cluster => CLUSTER,
            EcsKind::Service => SERVICE,
            EcsKind::TaskDefinition => TASK_DEFINITION,
        }
    }
}

/// One step of an apply or destroy, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    CreateRole(RoleKind),
    UpdateTrust(RoleKind),
    AttachPolicy(RoleKind, String),
    DetachPolicy(RoleKind, String),
    PutInline(RoleKind, String),
    DeleteInline(RoleKind, String),
    TagRole(RoleKind, BTreeMap<String, String>),
    CreateLogGroup,
    PutRetention {
        was: Option<i32>,
    },
    TagLogGroup {
        arn: String,
        tags: BTreeMap<String, String>,
    },
    CreateCluster,
    UpdateInsights {
        was: Option<String>,
    },
    TagEcs {
        kind: EcsKind,
        arn: String,
        tags: BTreeMap<String, String>,
    },
    RegisterTaskDefinition {
        why: Vec<String>,
    },
    /// Wait until a DRAINING service with our name is INACTIVE.
    WaitServiceInactive,
    CreateService,
    UpdateService {
        why: Vec<String>,
    },
    RegisterTarget {
        was: Option<(i32, i32)>,
    },
    PutPolicy {
        name: String,
        exists: bool,
        why: Vec<String>,
    },
    DeletePolicy {
        name: String,
    },
    DeregisterTarget,
    ScaleToZero {
        was: i32,
    },
    DeleteService,
    DeregisterTaskDefinition {
        arn: String,
    },
    /// Delete INACTIVE revisions (DeleteTaskDefinitions, ten per call).
    DeleteTaskDefinitions {
        arns: Vec<String>,
        /// How many of them were INACTIVE before this run.
        leftover: usize,
    },
    DeleteCluster,
    DeleteLogGroup,
    DeleteRole {
        kind: RoleKind,
        managed: Vec<String>,
        inline: Vec<String>,
    },
}

/// The plan change of each of `ops`, in order (`None` for steps that are no change of their
/// own). A policy put on a role the same steps create is created with it: a create, as plan
/// and apply's summary both count it.
pub(crate) fn changes(names: &Names, ops: &[Op]) -> Vec<Option<Change>> {
    let created: Vec<RoleKind> = ops
        .iter()
        .filter_map(|op| match op {
            Op::CreateRole(k) => Some(*k),
            _ => None,
        })
        .collect();
    ops.iter()
        .map(|op| {
            let mut change = op.change(names)?;
            if let Op::PutInline(k, _) = op
                && created.contains(k)
            {
                change.action = Action::Create;
            }
            Some(change)
        })
        .collect()
}

impl Op {
    /// How the step shows in a plan; `None` for waits.
    pub(crate) fn change(&self, names: &Names) -> Option<Change> {
        let c = |action, kind: &str, name: &str| Change::new(action, MODULE, kind, name);
        let role = |k: RoleKind| names.role(k).to_owned();
        Some(match self {
            Op::CreateRole(k) => c(Action::Create, "iam-role", &role(*k))
                .detail(format!("assumable by {} only", k.principal())),
            Op::UpdateTrust(k) => c(Action::Update, "iam-role", &role(*k))
                .detail(format!("trust policy -> only {}", k.principal())),
            Op::AttachPolicy(k, arn) => {
                c(Action::Create, "iam-role-policy-attachment", &role(*k)).detail(arn.clone())
            }
            Op::DetachPolicy(k, arn) => {
                c(Action::Delete, "iam-role-policy-attachment", &role(*k)).detail(arn.clone())
            }
            Op::PutInline(k, name) => c(Action::Update, "iam-role-policy", &role(*k))
                .detail(format!("inline policy {name}")),
            Op::DeleteInline(k, name) => c(Action::Delete, "iam-role-policy", &role(*k))
                .detail(format!("inline policy {name}")),
            Op::TagRole(k, tags) => tag_change(c(Action::Update, "iam-role", &role(*k)), tags),
            Op::CreateLogGroup => c(Action::Create, "log-group", &names.log_group),
            Op::PutRetention { was } => c(Action::Update, "log-group", &names.log_group)
                .detail(format!("retention {} -> configured", show(was))),
            Op::TagLogGroup { arn, tags } => tag_change(
                c(Action::Update, "log-group", &names.log_group).id(arn),
                tags,
            ),
            Op::CreateCluster => c(Action::Create, "ecs-cluster", &names.cluster)
                .detail("Container Insights enabled"),
            Op::UpdateInsights { was } => c(Action::Update, "ecs-cluster", &names.cluster)
                .detail(format!("containerInsights {} -> enabled", show(was))),
            Op::TagEcs { kind, arn, tags } => {
                let kind_name = match kind {
                    EcsKind::Cluster => "ecs-cluster",
                    EcsKind::Service => "ecs-service",
                    EcsKind::TaskDefinition => "ecs-task-definition",
                };
                tag_change(c(Action::Update, kind_name, &names.family).id(arn), tags)
            }
            Op::RegisterTaskDefinition { why } => {
                let mut ch = c(Action::Create, "ecs-task-definition", &names.family);
                ch.details = why.clone();
                ch
            }
            Op::WaitServiceInactive => return None,
            Op::CreateService => c(Action::Create, "ecs-service", &names.service)
                .detail("FARGATE, circuit breaker with rollback, 100/200 %"),
            Op::UpdateService { why } => {
                let mut ch = c(Action::Update, "ecs-service", &names.service);
                ch.details = why.clone();
                ch
            }
            Op::RegisterTarget { was } => {
                let action = if was.is_some() {
                    Action::Update
                } else {
                    Action::Create
                };
                let ch = c(action, "scalable-target", &names.resource_id());
                match was {
                    Some((min, max)) => ch.detail(format!("min/max {min}/{max} -> configured")),
                    None => ch,
                }
            }
            Op::PutPolicy { name, exists, why } => {
                let action = if *exists {
                    Action::Update
                } else {
                    Action::Create
                };
                let mut ch = c(action, "scaling-policy", name);
                ch.details = why.clone();
                ch
            }
            Op::DeletePolicy { name } => c(Action::Delete, "scaling-policy", name),
            Op::DeregisterTarget => c(Action::Delete, "scalable-target", &names.resource_id()),
            Op::ScaleToZero { was } => c(Action::Update, "ecs-service", &names.service)
                .detail(format!("desired count {was} -> 0")),
            Op::DeleteService => c(Action::Delete, "ecs-service", &names.service),
            Op::DeregisterTaskDefinition { arn } => {
                c(Action::Delete, "ecs-task-definition", &names.family)
                    .id(arn)
                    .detail("deregistered, then deleted (DeleteTaskDefinitions)")
            }
            // The revisions deregistered in this run show on their own lines; only those
            // earlier runs left INACTIVE are resources of their own.
            Op::DeleteTaskDefinitions { leftover, .. } if *leftover == 0 => return None,
            Op::DeleteTaskDefinitions { leftover, .. } => {
                c(Action::Delete, "ecs-task-definition-revisions", &names.family).detail(format!(
                    "{leftover} deregistered revision{} left by earlier deploys (ECS keeps them until deleted)",
                    if *leftover == 1 { "" } else { "s" }
                ))
            }
            Op::DeleteCluster => c(Action::Delete, "ecs-cluster", &names.cluster),
            Op::DeleteLogGroup => c(Action::Delete, "log-group", &names.log_group),
            Op::DeleteRole { kind, .. } => c(Action::Delete, "iam-role", &role(*kind)),
        })
    }
}

pub(super) fn show<T: std::fmt::Display>(v: &Option<T>) -> String {
    v.as_ref().map_or("none".to_owned(), T::to_string)
}

fn tag_change(mut ch: Change, tags: &BTreeMap<String, String>) -> Change {
    ch.details = tags
        .iter()
        .map(|(k, v)| format!("tag {k} = {v:?}"))
        .collect();
    ch
}
