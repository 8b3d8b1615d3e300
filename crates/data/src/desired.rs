//! What the configuration wants, the steps between it and what exists (pure), and how each
//! step shows in a plan.

use infra::{Action, Change};

use crate::DataInputs;
use crate::config::{DatabaseSpec, Deployment};
use crate::error::Error;
use crate::observe::{Instance, Names, Observed};

/// The module's name in plans and tags.
pub(crate) const MODULE: &str = "data";

/// What the stack wants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Desired {
    pub(crate) names: Names,
    pub(crate) spec: DatabaseSpec,
    pub(crate) vpc: String,
    pub(crate) subnets: Vec<String>,
    pub(crate) clients: String,
}

impl Desired {
    pub(crate) fn new(names: Names, spec: DatabaseSpec, inputs: &DataInputs) -> Desired {
        let mut subnets = inputs.subnet_ids.clone();
        subnets.sort();
        Desired {
            names,
            spec,
            vpc: inputs.vpc_id.clone(),
            subnets,
            clients: inputs.client_security_group_id.clone(),
        }
    }
}

/// A setting of the instance that changes in place, with its value now and the one wanted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setting {
    pub(crate) field: &'static str,
    pub(crate) from: String,
    pub(crate) to: String,
}

/// One step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Create the security group in the VPC.
    CreateSecurityGroup {
        /// Its VPC.
        vpc: String,
    },
    /// Let the clients' security group in on the database port.
    AllowClients {
        /// The clients' security group.
        from: String,
    },
    /// Take a group that should not reach the database out.
    RevokeClients {
        /// The group to take out.
        from: String,
    },
    /// Create the DB subnet group over the private subnets.
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
    /// Create the DB instance or DB cluster (`spec.deployment` says which).
    CreateInstance {
        /// What it is.
        spec: Box<DatabaseSpec>,
    },
    /// Change settings of the instance or cluster in place, at once.
    ModifyInstance {
        /// Which it is.
        deployment: Deployment,
        /// The settings that change.
        settings: Vec<Setting>,
    },
    /// Wait until the instance or cluster is available.
    WaitAvailable {
        /// Which it is.
        deployment: Deployment,
    },
    /// Delete the instance or cluster (a final snapshot under this name, unless none).
    DeleteInstance {
        /// Which it is.
        deployment: Deployment,
        /// The final snapshot's name; none: no snapshot.
        final_snapshot: Option<String>,
    },
    /// Delete the DB subnet group.
    DeleteSubnetGroup,
    /// Delete the security group.
    DeleteSecurityGroup {
        /// Its id.
        id: String,
    },
}

/// The final snapshot's name: `{instance}-final-{unix seconds}`.
pub(crate) fn final_snapshot_name(instance: &str, unix_seconds: u64) -> String {
    format!("{instance}-final-{unix_seconds}")
}

pub(crate) fn setting(field: &'static str, from: impl ToString, to: impl ToString) -> Setting {
    Setting {
        field,
        from: from.to_string(),
        to: to.to_string(),
    }
}

/// The in-place changes an existing instance needs, or the setting that cannot change.
fn instance_settings(d: &Desired, i: &Instance) -> Result<Vec<Setting>, Error> {
    let s = &d.spec;
    let replace = |field: &'static str, have: String, want: String| Error::NeedsReplacement {
        name: d.names.instance.clone(),
        field,
        have,
        want,
    };
    if i.engine != "postgres" {
        return Err(replace("engine", i.engine.clone(), "postgres".into()));
    }
    if !i.storage_encrypted {
        return Err(replace("storage-encrypted", "false".into(), "true".into()));
    }
    if i.allocated_storage > s.allocated_storage {
        return Err(replace(
            "allocated-storage",
            format!("{} GiB", i.allocated_storage),
            format!("{} GiB (storage never shrinks)", s.allocated_storage),
        ));
    }
    let mut out = Vec::new();
    match i.major() {
        Some(have) if have > s.engine_version => {
            return Err(replace(
                "engine-version",
                i.engine_version.clone(),
                format!("{} (no downgrade)", s.engine_version),
            ));
        }
        Some(have) if have < s.engine_version => {
            out.push(setting(
                "engine-version",
                &i.engine_version,
                s.engine_version,
            ));
        }
        _ => {}
    }
    if i.class != s.instance_class {
        out.push(setting("instance-class", &i.class, &s.instance_class));
    }
    if i.allocated_storage < s.allocated_storage {
        out.push(setting(
            "allocated-storage",
            i.allocated_storage,
            s.allocated_storage,
        ));
    }
    // A cluster is Multi-AZ by what it is (RDS reports it from its instances' zones).
    if i.deployment == Deployment::Instance && i.multi_az != s.multi_az {
        out.push(setting("multi-az", i.multi_az, s.multi_az));
    }
    if i.deletion_protection != s.deletion_protection {
        out.push(setting(
            "deletion-protection",
            i.deletion_protection,
            s.deletion_protection,
        ));
    }
    if i.backup_retention_days != s.backup_retention_days {
        out.push(setting(
            "backup-retention-days",
            i.backup_retention_days,
            s.backup_retention_days,
        ));
    }
    if i.publicly_accessible {
        // ModifyDBCluster cannot make a cluster private: only a new one is.
        if i.deployment == Deployment::Cluster {
            return Err(replace(
                "publicly-accessible",
                "true".into(),
                "false".into(),
            ));
        }
        out.push(setting("publicly-accessible", true, false));
    }
    Ok(out)
}

/// The steps from `o` to `d`, in the order RDS needs: the security group and subnet group
/// before the instance that uses them.
pub(crate) fn diff(stack: &str, d: &Desired, o: &Observed) -> Result<Vec<Op>, Error> {
    let not_ours = |kind: &'static str, name: &str| Error::NotOurs {
        kind,
        name: name.to_owned(),
        stack: stack.to_owned(),
    };
    let mut ops = Vec::new();
    match &o.sg {
        None => {
            ops.push(Op::CreateSecurityGroup { vpc: d.vpc.clone() });
            ops.push(Op::AllowClients {
                from: d.clients.clone(),
            });
        }
        Some(sg) if !sg.ours => return Err(not_ours("security group", &d.names.security_group)),
        Some(sg) => {
            let (allow, revoke) = sg.ingress_changes(&d.clients);
            if allow {
                ops.push(Op::AllowClients {
                    from: d.clients.clone(),
                });
            }
            ops.extend(revoke.into_iter().map(|from| Op::RevokeClients { from }));
        }
    }
    match &o.subnet_group {
        None => ops.push(Op::CreateSubnetGroup {
            subnets: d.subnets.clone(),
        }),
        Some(g) if !g.ours => return Err(not_ours("DB subnet group", &d.names.subnet_group)),
        Some(g) if g.subnets != d.subnets => ops.push(Op::SetSubnets {
            from: g.subnets.clone(),
            to: d.subnets.clone(),
        }),
        Some(_) => {}
    }
    let deployment = d.spec.deployment;
    let (database, other) = o.database(deployment);
    if let Some(other) = other.filter(|i| i.ours) {
        return Err(Error::NeedsReplacement {
            name: d.names.instance.clone(),
            field: "deployment",
            have: format!("{:?}", other.deployment.to_string()),
            want: format!("{:?}", deployment.to_string()),
        });
    }
    let wait = Op::WaitAvailable { deployment };
    match database {
        None => {
            ops.push(Op::CreateInstance {
                spec: Box::new(d.spec.clone()),
            });
            ops.push(wait);
        }
        Some(i) if !i.ours => return Err(not_ours(deployment.noun(), &d.names.instance)),
        Some(i) => {
            let settings = instance_settings(d, i)?;
            if !settings.is_empty() {
                ops.push(Op::ModifyInstance {
                    deployment,
                    settings,
                });
                ops.push(wait);
            } else if i.status != "available" {
                ops.push(wait);
            }
        }
    }
    Ok(ops)
}

/// The steps that delete what the stack has: the instance or cluster (with its final snapshot
/// unless `skip_final_snapshot`), then the subnet group and the security group. A protected
/// database refuses before anything is deleted, unless `protected_too` (what exists, for a
/// preview).
pub(crate) fn teardown(
    names: &Names,
    o: &Observed,
    skip_final_snapshot: bool,
    now_unix: u64,
    protected_too: bool,
) -> Result<Vec<Op>, Error> {
    let mut ops = Vec::new();
    for i in [&o.instance, &o.cluster]
        .into_iter()
        .flatten()
        .filter(|i| i.ours)
    {
        if i.deletion_protection && !protected_too {
            return Err(Error::Protected {
                name: names.instance.clone(),
            });
        }
        ops.push(Op::DeleteInstance {
            deployment: i.deployment,
            final_snapshot: (!skip_final_snapshot)
                .then(|| final_snapshot_name(&names.instance, now_unix)),
        });
    }
    if o.subnet_group.as_ref().is_some_and(|g| g.ours) {
        ops.push(Op::DeleteSubnetGroup);
    }
    if let Some(sg) = o.sg.as_ref().filter(|g| g.ours) {
        ops.push(Op::DeleteSecurityGroup { id: sg.id.clone() });
    }
    Ok(ops)
}

impl Op {
    /// How the step shows in a plan (a wait shows nothing).
    pub(crate) fn change(&self, names: &Names) -> Vec<Change> {
        let c = |action, kind: &str, name: &str| Change::new(action, MODULE, kind, name);
        let sg = |action| c(action, "security-group", &names.security_group);
        let group = |action| c(action, "db-subnet-group", &names.subnet_group);
        let db = |action, deployment: &Deployment| c(action, deployment.kind(), &names.instance);
        let port = crate::PORT;
        vec![match self {
            Op::CreateSecurityGroup { vpc } => sg(Action::Create).detail(format!("in {vpc}")),
            Op::AllowClients { from } => {
                sg(Action::Update).detail(format!("allow tcp/{port} from {from}"))
            }
            Op::RevokeClients { from } => {
                sg(Action::Update).detail(format!("revoke tcp/{port} from {from}"))
            }
            Op::CreateSubnetGroup { subnets } => {
                group(Action::Create).detail(format!("subnets {}", subnets.join(", ")))
            }
            Op::SetSubnets { from, to } => {
                group(Action::Update).field("subnets", Some(from.join(",")), to.join(","))
            }
            Op::CreateInstance { spec: s } => db(Action::Create, &s.deployment)
                .detail(match s.deployment {
                    Deployment::Instance => format!(
                        "postgres {} on {}, {} GiB gp3, encrypted, private",
                        s.engine_version, s.instance_class, s.allocated_storage
                    ),
                    Deployment::Cluster => format!(
                        "postgres {}, a writer and two readable standbys in three zones, each on {}, {} GiB gp3, encrypted, private",
                        s.engine_version, s.instance_class, s.allocated_storage
                    ),
                })
                .detail(format!(
                    "multi-az {}, deletion protection {}, backups {} days",
                    s.multi_az, s.deletion_protection, s.backup_retention_days
                ))
                .detail(format!(
                    "database {}, master user {} (password generated and kept by RDS in Secrets Manager)",
                    s.database_name, s.master_username
                )),
            Op::ModifyInstance {
                deployment,
                settings,
            } => settings
                .iter()
                .fold(db(Action::Update, deployment), |ch, s| {
                    ch.field(s.field, Some(s.from.clone()), s.to.clone())
                }),
            Op::WaitAvailable { .. } => return Vec::new(),
            Op::DeleteInstance {
                deployment,
                final_snapshot,
            } => db(Action::Delete, deployment).detail(match final_snapshot {
                Some(name) => format!("final snapshot {name}"),
                None => "no final snapshot (skip-final-snapshot)".to_owned(),
            }),
            Op::DeleteSubnetGroup => group(Action::Delete),
            Op::DeleteSecurityGroup { id } => sg(Action::Delete).id(id),
        }]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observe::SubnetGroup;
    use crate::sg::Sg;
    use infra::Config as _;

    fn desired() -> Desired {
        let spec = crate::DatabaseConfig::default()
            .validate(&infra::Scope::new("web", "eu-west-1"))
            .unwrap();
        let names = Names {
            instance: "web-db".into(),
            subnet_group: "web-db".into(),
            security_group: "web-db".into(),
        };
        Desired::new(
            names,
            spec,
            &DataInputs {
                vpc_id: "vpc-1".into(),
                subnet_ids: vec!["subnet-b".into(), "subnet-a".into()],
                client_security_group_id: "sg-tasks".into(),
            },
        )
    }

    fn instance(d: &Desired) -> Instance {
        Instance {
            deployment: Deployment::Instance,
            arn: "arn:aws:rds:eu-west-1:1:db:web-db".into(),
            status: "available".into(),
            engine: "postgres".into(),
            engine_version: "16.4".into(),
            class: d.spec.instance_class.clone(),
            allocated_storage: d.spec.allocated_storage,
            multi_az: true,
            zone: Some("eu-west-1a".into()),
            storage_encrypted: true,
            publicly_accessible: false,
            deletion_protection: true,
            backup_retention_days: 7,
            database_name: Some("app".into()),
            master_username: Some("app".into()),
            endpoint: None,
            reader_endpoint: None,
            master_secret_arn: None,
            security_groups: vec!["sg-db".into()],
            ours: true,
        }
    }

    fn everything(d: &Desired) -> Observed {
        Observed {
            sg: Some(Sg {
                id: "sg-db".into(),
                vpc: "vpc-1".into(),
                ingress_from: vec!["sg-tasks".into()],
                ours: true,
            }),
            subnet_group: Some(SubnetGroup {
                subnets: vec!["subnet-a".into(), "subnet-b".into()],
                ours: true,
            }),
            instance: Some(instance(d)),
            cluster: None,
        }
    }

    #[test]
    fn nothing_then_everything_in_order_and_nothing_when_converged() {
        let d = desired();
        let ops = diff("web", &d, &Observed::default()).unwrap();
        assert_eq!(
            ops,
            [
                Op::CreateSecurityGroup {
                    vpc: "vpc-1".into()
                },
                Op::AllowClients {
                    from: "sg-tasks".into()
                },
                Op::CreateSubnetGroup {
                    subnets: vec!["subnet-a".into(), "subnet-b".into()]
                },
                Op::CreateInstance {
                    spec: Box::new(d.spec.clone())
                },
                Op::WaitAvailable {
                    deployment: Deployment::Instance
                },
            ]
        );
        assert_eq!(diff("web", &d, &everything(&d)).unwrap(), []);
    }

    #[test]
    fn drift_is_modified_in_place_and_what_cannot_change_is_refused() {
        let d = desired();
        let mut o = everything(&d);
        if let Some(i) = o.instance.as_mut() {
            i.multi_az = false;
            i.publicly_accessible = true;
            i.engine_version = "15.7".into();
        }
        if let Some(sg) = o.sg.as_mut() {
            sg.ingress_from.push("sg-other".into());
        }
        let ops = diff("web", &d, &o).unwrap();
        assert_eq!(
            ops[0],
            Op::RevokeClients {
                from: "sg-other".into()
            }
        );
        let Op::ModifyInstance { settings, .. } = &ops[1] else {
            panic!("{ops:?}");
        };
        let fields: Vec<&str> = settings.iter().map(|s| s.field).collect();
        assert_eq!(
            fields,
            ["engine-version", "multi-az", "publicly-accessible"]
        );
        assert_eq!(
            ops[2],
            Op::WaitAvailable {
                deployment: Deployment::Instance
            }
        );

        if let Some(i) = o.instance.as_mut() {
            i.allocated_storage = 100;
        }
        let err = diff("web", &d, &o).unwrap_err().to_string();
        assert!(err.contains("allocated-storage 100 GiB"), "{err}");
        if let Some(sg) = o.sg.as_mut() {
            sg.ours = false;
        }
        let err = diff("web", &d, &o).unwrap_err().to_string();
        assert!(err.contains("security group \"web-db\""), "{err}");
    }

    #[test]
    fn a_protected_database_refuses_destroy_and_a_final_snapshot_is_kept() {
        let d = desired();
        let mut o = everything(&d);
        let err = teardown(&d.names, &o, false, 1_800_000_000, false).unwrap_err();
        assert!(
            err.to_string().contains("deletion-protection = false"),
            "{err}"
        );
        if let Some(i) = o.instance.as_mut() {
            i.deletion_protection = false;
        }
        let ops = teardown(&d.names, &o, false, 1_800_000_000, false).unwrap();
        assert_eq!(
            ops,
            [
                Op::DeleteInstance {
                    deployment: Deployment::Instance,
                    final_snapshot: Some("web-db-final-1800000000".into())
                },
                Op::DeleteSubnetGroup,
                Op::DeleteSecurityGroup { id: "sg-db".into() },
            ]
        );
        let ops = teardown(&d.names, &o, true, 1_800_000_000, false).unwrap();
        assert_eq!(
            ops[0],
            Op::DeleteInstance {
                deployment: Deployment::Instance,
                final_snapshot: None
            }
        );
    }

    #[test]
    fn a_cluster_is_created_changed_and_deleted_as_one_and_never_swapped_in_place() {
        let mut d = desired();
        d.spec.deployment = Deployment::Cluster;
        d.spec.instance_class = "db.m6gd.large".into();
        let mut o = everything(&d);
        // The stack's instance cannot become a cluster in place.
        let err = diff("web", &d, &o).unwrap_err().to_string();
        assert!(
            err.contains("deployment \"instance\"") && err.contains("says \"cluster\""),
            "{err}"
        );
        let mut cluster = o.instance.take().unwrap();
        cluster.deployment = Deployment::Cluster;
        cluster.class = "db.m6gd.large".into();
        cluster.multi_az = false; // as RDS reports a cluster whose instances are not up yet
        o.cluster = Some(cluster);
        assert_eq!(diff("web", &d, &o).unwrap(), []);
        o.cluster.as_mut().unwrap().class = "db.m6gd.xlarge".into();
        let ops = diff("web", &d, &o).unwrap();
        assert!(
            matches!(&ops[0], Op::ModifyInstance { deployment: Deployment::Cluster, settings }
                if settings.len() == 1 && settings[0].field == "instance-class"),
            "{ops:?}"
        );
        let plan = ops[0].change(&d.names);
        assert_eq!(plan[0].kind, "db-cluster");
        // ModifyDBCluster cannot make a public cluster private.
        o.cluster.as_mut().unwrap().publicly_accessible = true;
        let err = diff("web", &d, &o).unwrap_err().to_string();
        assert!(err.contains("publicly-accessible true"), "{err}");
        o.cluster.as_mut().unwrap().publicly_accessible = false;
        o.cluster.as_mut().unwrap().deletion_protection = false;
        let ops = teardown(&d.names, &o, true, 1, false).unwrap();
        assert_eq!(
            ops[0],
            Op::DeleteInstance {
                deployment: Deployment::Cluster,
                final_snapshot: None
            }
        );
    }
}
