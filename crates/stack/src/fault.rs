//! A zone's network cut off through AWS FIS, so that the service, not the client, undoes it.
//!
//! [`Stack::start_zone_fault`] starts an experiment of `aws:network:disrupt-connectivity`
//! (scope `all`) on the zone's subnets, with the run's fault limit as the action's duration
//! and the stack's alarms as FIS stop conditions, run by the stack's fault role (compute's
//! `{stack}-fis`). A client that dies (SIGKILL, a lost machine) leaves a running experiment
//! that FIS ends by itself when the duration is up; [`Stack::restore_zone`] ends it at once,
//! and `status` lists it ([`Stack::fault_experiments`]).
//!
//! When the stack has a Multi-AZ database whose primary RDS reports in the zone, the same
//! experiment also fails it over (`aws:rds:reboot-db-instances` with `forceFailover`), as the
//! Failover-RDS action of AWS's "AZ Availability: Power Interruption" scenario does: a network
//! ACL alone cuts clients off from the primary but does not make RDS fail over; a Multi-AZ DB
//! cluster whose writer is in the zone fails over by `aws:rds:failover-db-cluster`, the
//! scenario's choice for clusters. The fault role then has AWS's
//! `AWSFaultInjectionSimulatorRDSAccess` too. A Multi-AZ cache with a node in
//! the zone loses that node's power (`aws:elasticache:replicationgroup-interrupt-az-power`, the
//! scenario's Pause-ElastiCache): a primary there fails over; the fault role is granted the
//! action's calls inline (AWS has no managed policy for it).
//!
//! The experiment template is made for the one experiment and deleted once the experiment
//! runs (an experiment keeps its own copy); a template left by a client killed in between is
//! deleted by the next restore.

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime};

use aws_sdk_fis::types::{
    CreateExperimentTemplateActionInput, CreateExperimentTemplateStopConditionInput,
    CreateExperimentTemplateTargetInput, ExperimentStatus,
};
use infra::{Context, aws, built};
use serde::Serialize;

use crate::{Error, Stack};

/// The FIS action that cuts a subnet's network off.
pub const DISRUPT_CONNECTIVITY: &str = "aws:network:disrupt-connectivity";
/// The FIS action that fails a Multi-AZ DB instance over (`forceFailover`), as the "AZ
/// Availability: Power Interruption" scenario's Failover-RDS does.
pub const REBOOT_DB_INSTANCES: &str = "aws:rds:reboot-db-instances";
/// The FIS action that fails a Multi-AZ DB cluster over to a reader.
pub const FAILOVER_DB_CLUSTER: &str = "aws:rds:failover-db-cluster";
/// The AWS managed policy that lets FIS reboot (fail over) DB instances and clusters.
pub const FIS_RDS_POLICY: &str = "service-role/AWSFaultInjectionSimulatorRDSAccess";
/// The FIS action that cuts the power of a Multi-AZ replication group's nodes in one zone: a
/// primary there fails over to a replica, and no replacement is made there while it runs; as
/// the "AZ Availability: Power Interruption" scenario's Pause-ElastiCache does.
pub const INTERRUPT_CACHE_AZ_POWER: &str = "aws:elasticache:replicationgroup-interrupt-az-power";
/// What FIS needs to run [`INTERRUPT_CACHE_AZ_POWER`] (FIS UG, actions reference).
pub const FIS_CACHE_ACTIONS: [&str; 3] = [
    "elasticache:InterruptClusterAzPower",
    "elasticache:DescribeReplicationGroups",
    "tag:GetResources",
];
/// The tag naming the zone an experiment cuts off.
pub const ZONE_TAG: &str = "stackproof:zone";
/// FIS takes at most this many stop conditions per template (FIS UG, quotas).
pub const MAX_STOP_CONDITIONS: usize = 5;
/// The action's duration FIS accepts: PT1M to PT12H (FIS UG, actions reference).
pub const DURATION_RANGE: (Duration, Duration) =
    (Duration::from_secs(60), Duration::from_secs(12 * 3600));
/// How long an experiment may take to start running or to end once stopped. FIS does not
/// document either; this bounds the wait, it is no model of FIS.
pub const SETTLE_DEADLINE: Duration = Duration::from_secs(120);
/// Between reads of an experiment's state while waiting.
const POLL: Duration = Duration::from_millis(250);

/// A fault experiment of the stack that has not ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FaultExperiment {
    /// FIS's experiment id.
    pub id: String,
    /// The zone it cuts off.
    pub zone: String,
    /// `pending`, `initiating`, `running` or `stopping`.
    pub status: String,
    /// When it was created, in seconds since the Unix epoch.
    pub started_unix_s: Option<i64>,
}

/// The action's duration as FIS writes it: whole minutes, `limit` rounded up, within
/// [`DURATION_RANGE`].
pub fn fis_duration(limit: Duration) -> String {
    let (lo, hi) = DURATION_RANGE;
    let secs = limit.clamp(lo, hi).as_secs();
    let minutes = secs.div_ceil(60);
    if minutes % 60 == 0 {
        format!("PT{}H", minutes / 60)
    } else {
        format!("PT{minutes}M")
    }
}

/// The account of an ARN (`arn:aws:iam::123456789012:role/x` -> `123456789012`).
fn account_of(arn: &str) -> &str {
    arn.split(':').nth(4).unwrap_or_default()
}

fn partition_of(arn: &str) -> &str {
    arn.split(':').nth(1).unwrap_or("aws")
}

fn is_live(status: Option<&ExperimentStatus>) -> bool {
    matches!(
        status,
        Some(
            ExperimentStatus::Pending
                | ExperimentStatus::Initiating
                | ExperimentStatus::Running
                | ExperimentStatus::Stopping
        )
    )
}

impl Stack {
    fn fis(cx: &Context) -> aws_sdk_fis::Client {
        infra::client!(cx, aws_sdk_fis)
    }

    /// Cuts `zone` off through AWS FIS and returns the experiment's id once it runs: the
    /// zone's subnets are on FIS's deny-all network ACLs then. FIS undoes it when `limit` is
    /// up (rounded up to whole minutes, 1 minute to 12 hours), when one of `stop_alarms`
    /// (alarm names, at most [`MAX_STOP_CONDITIONS`]) goes into ALARM, or when
    /// [`Stack::restore_zone`] stops it. `fault_role_arn` is the role FIS runs it as (the
    /// compute outputs' `fault_role_arn`).
    pub async fn start_zone_fault(
        &self,
        cx: &Context,
        fault_role_arn: &str,
        zone: &str,
        limit: Duration,
        stop_alarms: &[String],
    ) -> Result<String, Error> {
        let isolation = self.zone_isolation(cx).await?;
        let Some(z) = isolation.iter().find(|z| z.zone == zone) else {
            return Err(Error::UnknownZone {
                zone: zone.to_owned(),
                zones: isolation.iter().map(|z| z.zone.clone()).collect(),
            });
        };
        let (partition, account) = (partition_of(fault_role_arn), account_of(fault_role_arn));
        let region = cx.region();
        let stack = self.name.as_str();
        let what = format!("fault experiment for {zone}");
        let target = CreateExperimentTemplateTargetInput::builder()
            .resource_type("aws:ec2:subnet")
            .set_resource_arns(Some(
                z.subnet_ids
                    .iter()
                    .map(|s| format!("arn:{partition}:ec2:{region}:{account}:subnet/{s}"))
                    .collect(),
            ))
            .selection_mode("ALL")
            .build()
            .map_err(built("CreateExperimentTemplate", &what))?;
        let action = CreateExperimentTemplateActionInput::builder()
            .action_id(DISRUPT_CONNECTIVITY)
            .description(format!("stackproof az-failover: {zone} fails"))
            .parameters("duration", fis_duration(limit))
            .parameters("scope", "all")
            .targets("Subnets", "zone-subnets")
            .build()
            .map_err(built("CreateExperimentTemplate", &what))?;
        // A Multi-AZ database whose primary is in the zone fails over, as in AWS's AZ power
        // scenario (a network ACL alone does not make RDS fail over).
        let database = self.database_in(cx, zone).await?;
        let db_target = match &database {
            Some((deployment, arn)) => Some(
                CreateExperimentTemplateTargetInput::builder()
                    .resource_type(match deployment {
                        data::Deployment::Instance => "aws:rds:db",
                        data::Deployment::Cluster => "aws:rds:cluster",
                    })
                    .resource_arns(arn)
                    .selection_mode("ALL")
                    .build()
                    .map_err(built("CreateExperimentTemplate", &what))?,
            ),
            None => None,
        };
        let description = format!("stackproof az-failover: the database in {zone} fails over");
        let db_action = match &database {
            Some((data::Deployment::Instance, _)) => Some(
                CreateExperimentTemplateActionInput::builder()
                    .action_id(REBOOT_DB_INSTANCES)
                    .description(description)
                    .parameters("forceFailover", "true")
                    .targets("DBInstances", "zone-db")
                    .build()
                    .map_err(built("CreateExperimentTemplate", &what))?,
            ),
            Some((data::Deployment::Cluster, _)) => Some(
                CreateExperimentTemplateActionInput::builder()
                    .action_id(FAILOVER_DB_CLUSTER)
                    .description(description)
                    .targets("Clusters", "zone-db")
                    .build()
                    .map_err(built("CreateExperimentTemplate", &what))?,
            ),
            None => None,
        };
        // A Multi-AZ cache with a node in the zone loses that node's power: a primary there
        // fails over to a replica in another zone.
        let cache = self.cache_in(cx, zone).await?;
        let cache_parts = match &cache {
            Some(arn) => Some((
                CreateExperimentTemplateTargetInput::builder()
                    .resource_type("aws:elasticache:replicationgroup")
                    .resource_arns(arn)
                    .parameters("availabilityZoneIdentifier", zone)
                    .selection_mode("ALL")
                    .build()
                    .map_err(built("CreateExperimentTemplate", &what))?,
                CreateExperimentTemplateActionInput::builder()
                    .action_id(INTERRUPT_CACHE_AZ_POWER)
                    .description(format!(
                        "stackproof az-failover: the cache's nodes in {zone} lose power"
                    ))
                    .parameters("duration", fis_duration(limit))
                    .targets("ReplicationGroups", "zone-cache")
                    .build()
                    .map_err(built("CreateExperimentTemplate", &what))?,
            )),
            None => None,
        };
        let stop_conditions = stop_conditions(
            &format!("arn:{partition}:cloudwatch:{region}:{account}:alarm:"),
            stop_alarms,
            &what,
        )?;
        let tags: HashMap<String, String> = HashMap::from([
            (infra::tags::STACK.to_owned(), stack.to_owned()),
            (ZONE_TAG.to_owned(), zone.to_owned()),
            ("Name".to_owned(), format!("{stack}-{zone}-fault")),
        ]);
        let fis = Self::fis(cx);
        let mut create = fis.create_experiment_template();
        if let (Some(target), Some(action)) = (db_target, db_action) {
            create = create
                .targets("zone-db", target)
                .actions("fail-over-db", action);
        }
        if let Some((target, action)) = cache_parts {
            create = create
                .targets("zone-cache", target)
                .actions("cut-cache-power", action);
        }
        let template = create
            .client_token(cx.client_token(
                "fis-template",
                &format!(
                    "{zone}-{}",
                    SystemTime::now()
                        .duration_since(SystemTime::UNIX_EPOCH)
                        .map_or(0, |d| d.as_millis())
                ),
            ))
            .description(format!(
                "stackproof: {stack}'s zone {zone} cut off (deny-all network ACLs)"
            ))
            .role_arn(fault_role_arn)
            .targets("zone-subnets", target)
            .actions("cut-off-zone", action)
            .set_stop_conditions(Some(stop_conditions))
            .set_tags(Some(tags.clone()))
            .send()
            .await
            .map_err(aws("CreateExperimentTemplate", &what))?;
        let template_id = template
            .experiment_template()
            .and_then(|t| t.id())
            .unwrap_or_default()
            .to_owned();
        let started = fis
            .start_experiment()
            .client_token(cx.client_token("fis-experiment", &template_id))
            .experiment_template_id(&template_id)
            .set_tags(Some(tags))
            .send()
            .await
            .map_err(aws("StartExperiment", &what));
        // The experiment keeps its own copy of the template.
        let deleted = fis
            .delete_experiment_template()
            .id(&template_id)
            .send()
            .await
            .map_err(aws("DeleteExperimentTemplate", &template_id));
        let id = started?
            .experiment()
            .and_then(|e| e.id())
            .unwrap_or_default()
            .to_owned();
        deleted?;
        match self.wait_experiment(cx, &id, true).await {
            Ok(()) => Ok(id),
            Err(e) => {
                // Never leave a fault that did not start right behind.
                let _ = fis.stop_experiment().id(&id).send().await;
                Err(e)
            }
        }
    }

    /// The stack's database (its kind and ARN) when it is Multi-AZ with its primary (a
    /// cluster's writer) in `zone`.
    async fn database_in(
        &self,
        cx: &Context,
        zone: &str,
    ) -> Result<Option<(data::Deployment, String)>, Error> {
        let Some(spec) = &self.database else {
            return Ok(None);
        };
        let db = data::Data::new(cx, spec.clone());
        let Some(p) = db.placement(cx).await? else {
            return Ok(None);
        };
        let multi_az = p.multi_az || p.deployment == data::Deployment::Cluster;
        Ok((multi_az && p.zone.as_deref() == Some(zone)).then_some((p.deployment, p.instance_arn)))
    }

    /// The ARN of the stack's cache when it is Multi-AZ with a node in `zone`.
    async fn cache_in(&self, cx: &Context, zone: &str) -> Result<Option<String>, Error> {
        let Some(spec) = &self.cache else {
            return Ok(None);
        };
        let cache = data::Cache::new(cx, spec.clone());
        let Some(p) = cache.placement(cx).await? else {
            return Ok(None);
        };
        Ok((p.multi_az && p.zones.iter().any(|z| z == zone)).then_some(p.group_arn))
    }

    /// Waits until experiment `id` runs (`running`) or has ended (otherwise); an experiment
    /// that failed, or that ended while it should run, is an error with FIS's reason.
    async fn wait_experiment(&self, cx: &Context, id: &str, running: bool) -> Result<(), Error> {
        let fis = Self::fis(cx);
        let deadline = Instant::now() + SETTLE_DEADLINE;
        loop {
            let out = fis
                .get_experiment()
                .id(id)
                .send()
                .await
                .map_err(aws("GetExperiment", id))?;
            let state = out.experiment().and_then(|e| e.state());
            let status = state.and_then(|s| s.status());
            let reason = state.and_then(|s| s.reason()).unwrap_or_default();
            match status {
                Some(ExperimentStatus::Failed) => {
                    return Err(Error::Experiment {
                        id: id.to_owned(),
                        status: "failed".to_owned(),
                        reason: reason.to_owned(),
                    });
                }
                Some(ExperimentStatus::Running) if running => return Ok(()),
                Some(s) if !is_live(Some(s)) => {
                    return if running {
                        Err(Error::Experiment {
                            id: id.to_owned(),
                            status: s.as_str().to_owned(),
                            reason: format!("{reason} (it ended before it ran)"),
                        })
                    } else {
                        Ok(())
                    };
                }
                _ => {}
            }
            if Instant::now() >= deadline {
                return Err(Error::Experiment {
                    id: id.to_owned(),
                    status: status.map_or("unknown", |s| s.as_str()).to_owned(),
                    reason: format!(
                        "still {} after {} s (waited for it to {})",
                        status.map_or("unknown", |s| s.as_str()),
                        SETTLE_DEADLINE.as_secs(),
                        if running { "run" } else { "end" }
                    ),
                });
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// The stack's fault experiments that have not ended (FIS lists an account's
    /// experiments; those tagged with the stack are its).
    pub async fn fault_experiments(&self, cx: &Context) -> Result<Vec<FaultExperiment>, Error> {
        let fis = Self::fis(cx);
        let stack = self.name.as_str();
        let mut found = Vec::new();
        let mut token = None;
        for _ in 0..20 {
            let out = fis
                .list_experiments()
                .set_next_token(token)
                .send()
                .await
                .map_err(aws("ListExperiments", stack))?;
            for e in out.experiments() {
                let status = e.state().and_then(|s| s.status());
                let tags = e.tags();
                let tag = |k: &str| tags.and_then(|t| t.get(k)).cloned();
                if !is_live(status) || tag(infra::tags::STACK).as_deref() != Some(stack) {
                    continue;
                }
                found.push(FaultExperiment {
                    id: e.id().unwrap_or_default().to_owned(),
                    zone: tag(ZONE_TAG).unwrap_or_default(),
                    status: status.map(|s| s.as_str().to_owned()).unwrap_or_default(),
                    started_unix_s: e.creation_time().map(|t| t.secs()),
                });
            }
            token = out.next_token().map(str::to_owned);
            if token.is_none() {
                break;
            }
        }
        Ok(found)
    }

    /// Stops the stack's fault experiments in `zone` and waits until FIS has ended them
    /// (reverted their network ACLs); deletes experiment templates of the stack a killed
    /// client left. Returns the experiments it stopped.
    pub(crate) async fn stop_zone_faults(
        &self,
        cx: &Context,
        zone: &str,
    ) -> Result<Vec<String>, Error> {
        let fis = Self::fis(cx);
        let mut stopped = Vec::new();
        for e in self.fault_experiments(cx).await? {
            if e.zone != zone {
                continue;
            }
            if e.status != "stopping" {
                fis.stop_experiment()
                    .id(&e.id)
                    .send()
                    .await
                    .map_err(aws("StopExperiment", &e.id))?;
            }
            self.wait_experiment(cx, &e.id, false).await?;
            stopped.push(e.id);
        }
        self.delete_left_templates(cx).await?;
        Ok(stopped)
    }

    async fn delete_left_templates(&self, cx: &Context) -> Result<(), Error> {
        let fis = Self::fis(cx);
        let stack = self.name.as_str();
        let out = fis
            .list_experiment_templates()
            .send()
            .await
            .map_err(aws("ListExperimentTemplates", stack))?;
        for t in out.experiment_templates() {
            let ours = t
                .tags()
                .and_then(|tags| tags.get(infra::tags::STACK))
                .is_some_and(|s| s == stack);
            if let (true, Some(id)) = (ours, t.id()) {
                fis.delete_experiment_template()
                    .id(id)
                    .send()
                    .await
                    .map_err(aws("DeleteExperimentTemplate", id))?;
            }
        }
        Ok(())
    }
}

/// FIS's stop conditions: the first [`MAX_STOP_CONDITIONS`] of `alarms` (names; their ARNs
/// are `alarm_arn_prefix` and the name), or "none" when there is no alarm.
fn stop_conditions(
    alarm_arn_prefix: &str,
    alarms: &[String],
    what: &str,
) -> Result<Vec<CreateExperimentTemplateStopConditionInput>, Error> {
    let mut stop_conditions = Vec::new();
    for alarm in alarms.iter().take(MAX_STOP_CONDITIONS) {
        stop_conditions.push(
            CreateExperimentTemplateStopConditionInput::builder()
                .source("aws:cloudwatch:alarm")
                .value(format!("{alarm_arn_prefix}{alarm}"))
                .build()
                .map_err(built("CreateExperimentTemplate", what))?,
        );
    }
    if stop_conditions.is_empty() {
        stop_conditions.push(
            CreateExperimentTemplateStopConditionInput::builder()
                .source("none")
                .build()
                .map_err(built("CreateExperimentTemplate", what))?,
        );
    }
    Ok(stop_conditions)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_as_fis_takes_them() {
        assert_eq!(fis_duration(Duration::from_secs(0)), "PT1M");
        assert_eq!(fis_duration(Duration::from_secs(61)), "PT2M");
        assert_eq!(fis_duration(Duration::from_secs(600)), "PT10M");
        assert_eq!(fis_duration(Duration::from_secs(3600)), "PT1H");
        assert_eq!(fis_duration(Duration::from_secs(3601)), "PT61M");
        assert_eq!(fis_duration(Duration::from_secs(100 * 3600)), "PT12H");
    }

    #[test]
    fn arns_name_account_and_partition() {
        let arn = "arn:aws-cn:iam::123456789012:role/web-fis";
        assert_eq!(account_of(arn), "123456789012");
        assert_eq!(partition_of(arn), "aws-cn");
    }
}
