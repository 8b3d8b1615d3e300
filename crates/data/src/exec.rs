//! The AWS calls of each step.

use std::time::Duration;

use infra::{Backoff, Step, WaitError};
use infra::{Context, WaitPolicy, aws, waited};

use crate::config::{DatabaseSpec, Deployment};
use crate::desired::{Desired, MODULE, Op};
use crate::error::Error;
use crate::observe::Names;
use crate::sg;
use crate::{Clients, PORT};

/// The longest an instance or cluster may take to become available or to be deleted: RDS
/// documents no bound; a Multi-AZ instance typically takes 10-20 minutes to create.
const DB_STATE: Duration = Duration::from_secs(60 * 60);

/// What the steps carry: the security group's id once known.
#[derive(Debug, Clone, Default)]
pub struct Ids {
    pub(crate) sg: Option<String>,
}

fn rds_tags(cx: &Context, name: &str) -> Vec<aws_sdk_rds::types::Tag> {
    cx.tags(MODULE, name)
        .into_iter()
        .map(|(k, v)| aws_sdk_rds::types::Tag::builder().key(k).value(v).build())
        .collect()
}

fn need_sg(ids: &Ids, names: &Names) -> Result<String, Error> {
    ids.sg.clone().ok_or_else(|| Error::Missing {
        kind: "security group",
        name: names.security_group.clone(),
    })
}

/// The new values of the settings a `ModifyInstance` changes (none: unchanged), from the
/// spec; a cluster's diff never names `multi-az` or `publicly-accessible`.
#[derive(Debug, Default)]
struct Changes {
    engine_version: Option<String>,
    class: Option<String>,
    storage: Option<i32>,
    multi_az: Option<bool>,
    protection: Option<bool>,
    backups: Option<i32>,
    public: Option<bool>,
}

impl Changes {
    fn of(s: &DatabaseSpec, settings: &[crate::desired::Setting]) -> Changes {
        let mut ch = Changes::default();
        for setting in settings {
            match setting.field {
                "engine-version" => ch.engine_version = Some(s.engine_version.to_string()),
                "instance-class" => ch.class = Some(s.instance_class.clone()),
                "allocated-storage" => ch.storage = Some(s.allocated_storage),
                "multi-az" => ch.multi_az = Some(s.multi_az),
                "deletion-protection" => ch.protection = Some(s.deletion_protection),
                "backup-retention-days" => ch.backups = Some(s.backup_retention_days),
                "publicly-accessible" => ch.public = Some(false),
                _ => {}
            }
        }
        ch
    }

    /// A version change may cross a major version (the diff allows only upgrades).
    fn major_upgrade(&self) -> Option<bool> {
        self.engine_version.as_ref().map(|_| true)
    }
}

/// Runs one step; returns the id of what it made or changed, when it has one.
pub(crate) async fn step(
    c: &Clients,
    cx: &Context,
    d: Option<&Desired>,
    op: &Op,
    ids: &mut Ids,
) -> Result<Option<String>, Error> {
    let names = Names::of(cx);
    let missing = || Error::Missing {
        kind: "configuration",
        name: "the desired database (a destroy cannot create)".to_owned(),
    };
    match op {
        Op::CreateSecurityGroup { vpc } => {
            let description = format!(
                "stackproof {}: the database, reachable on {PORT} from the service's tasks only",
                cx.stack()
            );
            let id =
                sg::create(&c.ec2, cx, MODULE, &names.security_group, description, vpc).await?;
            ids.sg = Some(id.clone());
            Ok(Some(id))
        }
        Op::AllowClients { from } => {
            let id = need_sg(ids, &names)?;
            sg::allow(&c.ec2, cx, &id, from, PORT).await?;
            Ok(Some(id))
        }
        Op::RevokeClients { from } => {
            let id = need_sg(ids, &names)?;
            sg::revoke(&c.ec2, &id, from, PORT).await?;
            Ok(Some(id))
        }
        Op::CreateSubnetGroup { subnets } | Op::SetSubnets { to: subnets, .. } => {
            let name = &names.subnet_group;
            let what = format!("DB subnet group {name}");
            let description = format!("stackproof {}: the database's private subnets", cx.stack());
            if matches!(op, Op::CreateSubnetGroup { .. }) {
                c.rds
                    .create_db_subnet_group()
                    .db_subnet_group_name(name)
                    .db_subnet_group_description(description)
                    .set_subnet_ids(Some(subnets.clone()))
                    .set_tags(Some(rds_tags(cx, name)))
                    .send()
                    .await
                    .map_err(aws("CreateDBSubnetGroup", &what))?;
            } else {
                c.rds
                    .modify_db_subnet_group()
                    .db_subnet_group_name(name)
                    .db_subnet_group_description(description)
                    .set_subnet_ids(Some(subnets.clone()))
                    .send()
                    .await
                    .map_err(aws("ModifyDBSubnetGroup", &what))?;
            }
            Ok(Some(name.clone()))
        }
        Op::CreateInstance { spec } => {
            let sg = need_sg(ids, &names)?;
            match spec.deployment {
                Deployment::Instance => create_instance(c, cx, spec, &names, &sg).await,
                Deployment::Cluster => create_cluster(c, cx, spec, &names, &sg).await,
            }
        }
        Op::ModifyInstance {
            deployment,
            settings,
        } => {
            let d = d.ok_or_else(missing)?;
            let ch = Changes::of(&d.spec, settings);
            let name = &names.instance;
            let what = format!("{} {name}", deployment.noun());
            match deployment {
                Deployment::Instance => c
                    .rds
                    .modify_db_instance()
                    .db_instance_identifier(name)
                    .apply_immediately(true)
                    .set_allow_major_version_upgrade(ch.major_upgrade())
                    .set_engine_version(ch.engine_version)
                    .set_db_instance_class(ch.class)
                    .set_allocated_storage(ch.storage)
                    .set_multi_az(ch.multi_az)
                    .set_deletion_protection(ch.protection)
                    .set_backup_retention_period(ch.backups)
                    .set_publicly_accessible(ch.public)
                    .send()
                    .await
                    .map(|_| ())
                    .map_err(aws("ModifyDBInstance", what))?,
                Deployment::Cluster => c
                    .rds
                    .modify_db_cluster()
                    .db_cluster_identifier(name)
                    .apply_immediately(true)
                    .set_allow_major_version_upgrade(ch.major_upgrade())
                    .set_engine_version(ch.engine_version)
                    .set_db_cluster_instance_class(ch.class)
                    .set_allocated_storage(ch.storage)
                    .set_deletion_protection(ch.protection)
                    .set_backup_retention_period(ch.backups)
                    .send()
                    .await
                    .map(|_| ())
                    .map_err(aws("ModifyDBCluster", what))?,
            }
            Ok(Some(name.clone()))
        }
        Op::WaitAvailable { deployment } => {
            wait_database(c, cx, *deployment, &names.instance, true)
                .await
                .map(|()| None)
        }
        Op::DeleteInstance {
            deployment: Deployment::Cluster,
            final_snapshot,
        } => {
            let name = &names.instance;
            let mut req = c.rds.delete_db_cluster().db_cluster_identifier(name);
            req = match final_snapshot {
                Some(snapshot) => req.final_db_snapshot_identifier(snapshot),
                None => req.skip_final_snapshot(true),
            };
            match req.send().await {
                Ok(_) => {}
                Err(e)
                    if e.as_service_error()
                        .is_some_and(|s| s.is_db_cluster_not_found_fault()) => {}
                Err(e) => {
                    return Err(aws("DeleteDBCluster", format!("DB cluster {name}"))(e).into());
                }
            }
            wait_database(c, cx, Deployment::Cluster, name, false).await?;
            Ok(final_snapshot.clone())
        }
        Op::DeleteInstance {
            deployment: Deployment::Instance,
            final_snapshot,
        } => {
            let name = &names.instance;
            let mut req = c
                .rds
                .delete_db_instance()
                .db_instance_identifier(name)
                .delete_automated_backups(false);
            req = match final_snapshot {
                Some(snapshot) => req.final_db_snapshot_identifier(snapshot),
                None => req.skip_final_snapshot(true),
            };
            match req.send().await {
                Ok(_) => {}
                Err(e)
                    if e.as_service_error()
                        .is_some_and(|s| s.is_db_instance_not_found_fault()) => {}
                Err(e) => {
                    return Err(aws("DeleteDBInstance", format!("DB instance {name}"))(e).into());
                }
            }
            wait_database(c, cx, Deployment::Instance, name, false).await?;
            Ok(final_snapshot.clone())
        }
        Op::DeleteSubnetGroup => {
            let name = &names.subnet_group;
            // Still in use while the instance's deletion finishes.
            let result = Backoff::dependency(cx.waits())
                .retry_codes(
                    format!("DeleteDBSubnetGroup {name}"),
                    &["InvalidDBSubnetGroupStateFault"],
                    || {
                        c.rds
                            .delete_db_subnet_group()
                            .db_subnet_group_name(name)
                            .send()
                    },
                )
                .await;
            match result {
                Ok(_) => Ok(None),
                Err(WaitError::Failed(e))
                    if e.as_service_error()
                        .is_some_and(|s| s.is_db_subnet_group_not_found_fault()) =>
                {
                    Ok(None)
                }
                Err(e) => Err(waited("DeleteDBSubnetGroup", name)(e).into()),
            }
        }
        Op::DeleteSecurityGroup { id } => {
            sg::delete(&c.ec2, cx, id).await?;
            Ok(None)
        }
    }
}

async fn create_instance(
    c: &Clients,
    cx: &Context,
    s: &DatabaseSpec,
    names: &Names,
    sg: &str,
) -> Result<Option<String>, Error> {
    let name = &names.instance;
    c.rds
        .create_db_instance()
        .db_instance_identifier(name)
        .engine("postgres")
        .engine_version(s.engine_version.to_string())
        .db_instance_class(&s.instance_class)
        .allocated_storage(s.allocated_storage)
        .storage_type("gp3")
        .storage_encrypted(true)
        .multi_az(s.multi_az)
        .publicly_accessible(false)
        .deletion_protection(s.deletion_protection)
        .backup_retention_period(s.backup_retention_days)
        .copy_tags_to_snapshot(true)
        .db_name(&s.database_name)
        .master_username(&s.master_username)
        .manage_master_user_password(true)
        .db_subnet_group_name(&names.subnet_group)
        .vpc_security_group_ids(sg)
        .port(PORT)
        .set_tags(Some(rds_tags(cx, name)))
        .send()
        .await
        .map_err(aws("CreateDBInstance", format!("DB instance {name}")))?;
    Ok(Some(name.clone()))
}

/// A Multi-AZ DB cluster: RDS makes its three DB instances (a writer and two readable
/// standbys, one per zone of the subnet group) itself.
async fn create_cluster(
    c: &Clients,
    cx: &Context,
    s: &DatabaseSpec,
    names: &Names,
    sg: &str,
) -> Result<Option<String>, Error> {
    let name = &names.instance;
    c.rds
        .create_db_cluster()
        .db_cluster_identifier(name)
        .engine("postgres")
        .engine_version(s.engine_version.to_string())
        .db_cluster_instance_class(&s.instance_class)
        .allocated_storage(s.allocated_storage)
        .storage_type("gp3")
        .storage_encrypted(true)
        .publicly_accessible(false)
        .deletion_protection(s.deletion_protection)
        .backup_retention_period(s.backup_retention_days)
        .copy_tags_to_snapshot(true)
        .database_name(&s.database_name)
        .master_username(&s.master_username)
        .manage_master_user_password(true)
        .db_subnet_group_name(&names.subnet_group)
        .vpc_security_group_ids(sg)
        .port(PORT)
        .set_tags(Some(rds_tags(cx, name)))
        .send()
        .await
        .map_err(aws("CreateDBCluster", format!("DB cluster {name}")))?;
    Ok(Some(name.clone()))
}

/// The instance's or cluster's status, or none when RDS does not know it.
async fn status(
    c: &Clients,
    deployment: Deployment,
    name: &str,
) -> Result<Option<String>, aws_sdk_rds::Error> {
    match deployment {
        Deployment::Instance => match c
            .rds
            .describe_db_instances()
            .db_instance_identifier(name)
            .send()
            .await
        {
            Ok(out) => Ok(out
                .db_instances()
                .first()
                .and_then(|i| i.db_instance_status())
                .map(str::to_owned)),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_db_instance_not_found_fault()) =>
            {
                Ok(None)
            }
            Err(e) => Err(e.into()),
        },
        Deployment::Cluster => match c
            .rds
            .describe_db_clusters()
            .db_cluster_identifier(name)
            .send()
            .await
        {
            Ok(out) => Ok(out
                .db_clusters()
                .first()
                .and_then(|k| k.status())
                .map(str::to_owned)),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_db_cluster_not_found_fault()) =>
            {
                Ok(None)
            }
            Err(e) => Err(e.into()),
        },
    }
}

/// Waits until the instance or cluster is `available` (or, `available` false, gone).
async fn wait_database(
    c: &Clients,
    cx: &Context,
    deployment: Deployment,
    name: &str,
    available: bool,
) -> Result<(), Error> {
    let waits = WaitPolicy {
        resource_state: cx.waits().resource_state.max(DB_STATE),
        ..*cx.waits()
    };
    let kind = deployment.noun();
    let operation = match deployment {
        Deployment::Instance => "DescribeDBInstances",
        Deployment::Cluster => "DescribeDBClusters",
    };
    let what = if available {
        format!("{kind} {name} available")
    } else {
        format!("{kind} {name} deleted")
    };
    Backoff::resource_state(&waits)
        .run(what, || async {
            match status(c, deployment, name).await {
                Ok(Some(status)) if available && status == "available" => Step::Done(()),
                Ok(Some(status)) => Step::Retry(format!("status {status}")),
                Ok(None) if !available => Step::Done(()),
                Ok(None) => Step::Retry("not found yet".to_owned()),
                Err(e) => Step::Fail(e),
            }
        })
        .await
        .map_err(|e| waited(operation, name)(e).into())
}
