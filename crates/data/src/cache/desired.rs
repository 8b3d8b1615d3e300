//! What `[cache]` wants, the steps between it and what exists (pure), and how each step shows
//! in a plan.

use infra::{Action, Change};

use super::config::CacheSpec;
use super::observe::{CacheNames, CacheObserved, Group};
use super::{MODULE, PORT};
use crate::DataInputs;
use crate::desired::{Setting, setting};
use crate::error::Error;

/// What the stack wants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheDesired {
    pub(crate) names: CacheNames,
    pub(crate) spec: CacheSpec,
    pub(crate) vpc: String,
    pub(crate) subnets: Vec<String>,
    pub(crate) clients: String,
}

impl CacheDesired {
    pub(crate) fn new(names: CacheNames, spec: CacheSpec, inputs: &DataInputs) -> CacheDesired {
        let mut subnets = inputs.subnet_ids.clone();
        subnets.sort();
        CacheDesired {
            names,
            spec,
            vpc: inputs.vpc_id.clone(),
            subnets,
            clients: inputs.client_security_group_id.clone(),
        }
    }
}

/// One step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CacheOp {
    /// Create the security group in the VPC.
    CreateSecurityGroup {
        /// Its VPC.
        vpc: String,
    },
    /// Let the clients' security group in on 6379.
    AllowClients {
        /// The clients' security group.
        from: String,
    },
    /// Take a group that should not reach the cache out.
    RevokeClients {
        /// The group to take out.
        from: String,
    },
    /// Create the cache subnet group over the private subnets.
    CreateSubnetGroup {
        /// Its subnets.
        subnets: Vec<String>,
    },
    /// Set the subnet group's subnets.
    SetSubnets {
        /// The subnets now.
        from: Vec<String>,
        /// The subnets wanted.
        to: Vec<String>,
    },
    /// Create the replication group: a primary and its replicas, each in the next zone.
    CreateGroup {
        /// What it is.
        spec: Box<CacheSpec>,
    },
    /// Change settings of the group in place, at once.
    ModifyGroup {
        /// The settings that change.
        settings: Vec<Setting>,
    },
    /// Wait until the group is available.
    WaitAvailable,
    /// Delete the replication group and wait until it is gone.
    DeleteGroup,
    /// Delete the cache subnet group.
    DeleteSubnetGroup,
    /// Delete the security group.
    DeleteSecurityGroup {
        /// Its id.
        id: String,
    },
}

/// The in-place changes an existing group needs, or the setting that cannot change.
fn group_settings(d: &CacheDesired, g: &Group) -> Result<Vec<Setting>, Error> {
    let s = &d.spec;
    let replace = |field: &'static str, have: String, want: String| Error::CacheNeedsReplacement {
        name: d.names.group.clone(),
        field,
        have,
        want,
    };
    if g.transit_encryption != s.transit_encryption {
        return Err(replace(
            "transit-encryption",
            g.transit_encryption.to_string(),
            s.transit_encryption.to_string(),
        ));
    }
    if !g.at_rest_encryption {
        return Err(replace("at-rest encryption", "false".into(), "true".into()));
    }
    let replicas = i32::try_from(g.members.len().saturating_sub(1)).unwrap_or(i32::MAX);
    if replicas != s.replicas {
        return Err(replace(
            "replicas",
            replicas.to_string(),
            s.replicas.to_string(),
        ));
    }
    let mut out = Vec::new();
    if g.node_type != s.node_type {
        out.push(setting("node-type", &g.node_type, &s.node_type));
    }
    if g.multi_az != s.multi_az || g.automatic_failover != s.multi_az {
        out.push(setting("multi-az", g.multi_az, s.multi_az));
    }
    if g.snapshot_retention_days != s.snapshot_retention_days {
        out.push(setting(
            "snapshot-retention-days",
            g.snapshot_retention_days,
            s.snapshot_retention_days,
        ));
    }
    Ok(out)
}

/// The steps from `o` to `d`: the security group and subnet group before the group that uses
/// them.
pub(crate) fn diff(
    stack: &str,
    d: &CacheDesired,
    o: &CacheObserved,
) -> Result<Vec<CacheOp>, Error> {
    let not_ours = |kind: &'static str, name: &str| Error::NotOurs {
        kind,
        name: name.to_owned(),
        stack: stack.to_owned(),
    };
    let mut ops = Vec::new();
    match &o.sg {
        None => {
            ops.push(CacheOp::CreateSecurityGroup { vpc: d.vpc.clone() });
            ops.push(CacheOp::AllowClients {
                from: d.clients.clone(),
            });
        }
        Some(sg) if !sg.ours => return Err(not_ours("security group", &d.names.security_group)),
        Some(sg) => {
            let (allow, revoke) = sg.ingress_changes(&d.clients);
            if allow {
                ops.push(CacheOp::AllowClients {
                    from: d.clients.clone(),
                });
            }
            ops.extend(
                revoke
                    .into_iter()
                    .map(|from| CacheOp::RevokeClients { from }),
            );
        }
    }
    match &o.subnet_group {
        None => ops.push(CacheOp::CreateSubnetGroup {
            subnets: d.subnets.clone(),
        }),
        Some(g) if !g.ours => return Err(not_ours("cache subnet group", &d.names.subnet_group)),
        Some(g) if g.subnets != d.subnets => ops.push(CacheOp::SetSubnets {
            from: g.subnets.clone(),
            to: d.subnets.clone(),
        }),
        Some(_) => {}
    }
    match &o.group {
        None => {
            ops.push(CacheOp::CreateGroup {
                spec: Box::new(d.spec.clone()),
            });
            ops.push(CacheOp::WaitAvailable);
        }
        Some(g) if !g.ours => return Err(not_ours("replication group", &d.names.group)),
        Some(g) => {
            let settings = group_settings(d, g)?;
            if !settings.is_empty() {
                ops.push(CacheOp::ModifyGroup { settings });
                ops.push(CacheOp::WaitAvailable);
            } else if g.status != "available" {
                ops.push(CacheOp::WaitAvailable);
            }
        }
    }
    Ok(ops)
}

/// The steps that delete what the stack has: the group, then the subnet group and the security
/// group. A cache holds nothing the database does not, so no final snapshot is kept.
pub(crate) fn teardown(o: &CacheObserved) -> Vec<CacheOp> {
    let mut ops = Vec::new();
    if o.group.as_ref().is_some_and(|g| g.ours) {
        ops.push(CacheOp::DeleteGroup);
    }
    if o.subnet_group.as_ref().is_some_and(|g| g.ours) {
        ops.push(CacheOp::DeleteSubnetGroup);
    }
    if let Some(sg) = o.sg.as_ref().filter(|g| g.ours) {
        ops.push(CacheOp::DeleteSecurityGroup { id: sg.id.clone() });
    }
    ops
}

impl CacheOp {
    /// How the step shows in a plan (a wait shows nothing).
    pub(crate) fn change(&self, names: &CacheNames) -> Vec<Change> {
        let c = |action, kind: &str, name: &str| Change::new(action, MODULE, kind, name);
        let sg = |action| c(action, "security-group", &names.security_group);
        let group = |action| c(action, "cache-subnet-group", &names.subnet_group);
        let rg = |action| c(action, "replication-group", &names.group);
        vec![match self {
            CacheOp::CreateSecurityGroup { vpc } => sg(Action::Create).detail(format!("in {vpc}")),
            CacheOp::AllowClients { from } => {
                sg(Action::Update).detail(format!("allow tcp/{PORT} from {from}"))
            }
            CacheOp::RevokeClients { from } => {
                sg(Action::Update).detail(format!("revoke tcp/{PORT} from {from}"))
            }
            CacheOp::CreateSubnetGroup { subnets } => {
                group(Action::Create).detail(format!("subnets {}", subnets.join(", ")))
            }
            CacheOp::SetSubnets { from, to } => {
                group(Action::Update).field("subnets", Some(from.join(",")), to.join(","))
            }
            CacheOp::CreateGroup { spec: s } => rg(Action::Create)
                .detail(format!(
                    "redis {} on {}, a primary and {} replica(s), each in the next zone",
                    s.engine_version, s.node_type, s.replicas
                ))
                .detail(format!(
                    "multi-az (automatic failover) {}, encryption at rest, in transit {}, snapshots {} days",
                    s.multi_az, s.transit_encryption, s.snapshot_retention_days
                )),
            CacheOp::ModifyGroup { settings } => settings.iter().fold(rg(Action::Update), |ch, s| {
                ch.field(s.field, Some(s.from.clone()), s.to.clone())
            }),
            CacheOp::WaitAvailable => return Vec::new(),
            CacheOp::DeleteGroup => rg(Action::Delete),
            CacheOp::DeleteSubnetGroup => group(Action::Delete),
            CacheOp::DeleteSecurityGroup { id } => sg(Action::Delete).id(id),
        }]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::observe::{Member, SubnetGroup};
    use crate::sg::Sg;
    use infra::Config as _;

    fn desired() -> CacheDesired {
        let spec = crate::CacheConfig::default()
            .validate(&infra::Scope::new("web", "eu-west-1"))
            .unwrap();
        let names = CacheNames {
            group: "web-cache".into(),
            subnet_group: "web-cache".into(),
            security_group: "web-cache".into(),
        };
        CacheDesired::new(
            names,
            spec,
            &DataInputs {
                vpc_id: "vpc-1".into(),
                subnet_ids: vec!["subnet-b".into(), "subnet-a".into()],
                client_security_group_id: "sg-tasks".into(),
            },
        )
    }

    fn everything(d: &CacheDesired) -> CacheObserved {
        let member = |id: &str, zone: &str, primary| Member {
            id: id.into(),
            zone: Some(zone.into()),
            primary,
        };
        CacheObserved {
            sg: Some(Sg {
                id: "sg-cache".into(),
                vpc: "vpc-1".into(),
                ingress_from: vec!["sg-tasks".into()],
                ours: true,
            }),
            subnet_group: Some(SubnetGroup {
                subnets: vec!["subnet-a".into(), "subnet-b".into()],
                ours: true,
            }),
            group: Some(Group {
                arn: "arn:aws:elasticache:eu-west-1:1:replicationgroup:web-cache".into(),
                status: "available".into(),
                node_type: d.spec.node_type.clone(),
                automatic_failover: true,
                multi_az: true,
                transit_encryption: true,
                at_rest_encryption: true,
                snapshot_retention_days: 1,
                members: vec![
                    member("web-cache-001", "eu-west-1a", true),
                    member("web-cache-002", "eu-west-1b", false),
                ],
                primary_endpoint: Some(("master.web-cache".into(), PORT)),
                reader_endpoint: Some("replica.web-cache".into()),
                ours: true,
            }),
        }
    }

    #[test]
    fn nothing_then_everything_in_order_and_nothing_when_converged() {
        let d = desired();
        let ops = diff("web", &d, &CacheObserved::default()).unwrap();
        assert_eq!(
            ops,
            [
                CacheOp::CreateSecurityGroup {
                    vpc: "vpc-1".into()
                },
                CacheOp::AllowClients {
                    from: "sg-tasks".into()
                },
                CacheOp::CreateSubnetGroup {
                    subnets: vec!["subnet-a".into(), "subnet-b".into()]
                },
                CacheOp::CreateGroup {
                    spec: Box::new(d.spec.clone())
                },
                CacheOp::WaitAvailable,
            ]
        );
        assert_eq!(diff("web", &d, &everything(&d)).unwrap(), []);
    }

    #[test]
    fn drift_is_modified_in_place_and_what_cannot_change_is_refused() {
        let d = desired();
        let mut o = everything(&d);
        if let Some(g) = o.group.as_mut() {
            g.node_type = "cache.t4g.small".into();
            g.multi_az = false;
            g.automatic_failover = false;
        }
        if let Some(sg) = o.subnet_group.as_mut() {
            sg.subnets.pop();
        }
        let ops = diff("web", &d, &o).unwrap();
        assert!(matches!(ops[0], CacheOp::SetSubnets { .. }), "{ops:?}");
        let CacheOp::ModifyGroup { settings } = &ops[1] else {
            panic!("{ops:?}");
        };
        let fields: Vec<&str> = settings.iter().map(|s| s.field).collect();
        assert_eq!(fields, ["node-type", "multi-az"]);

        if let Some(g) = o.group.as_mut() {
            g.transit_encryption = false;
        }
        let err = diff("web", &d, &o).unwrap_err().to_string();
        assert!(err.contains("transit-encryption false"), "{err}");
        if let Some(g) = o.group.as_mut() {
            g.transit_encryption = true;
            g.members.pop();
        }
        let err = diff("web", &d, &o).unwrap_err().to_string();
        assert!(err.contains("replicas 0"), "{err}");
        assert_eq!(
            teardown(&everything(&d)),
            [
                CacheOp::DeleteGroup,
                CacheOp::DeleteSubnetGroup,
                CacheOp::DeleteSecurityGroup {
                    id: "sg-cache".into()
                }
            ]
        );
    }
}
