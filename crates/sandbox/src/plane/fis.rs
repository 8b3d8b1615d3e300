//! The sandbox's AWS FIS: moto keeps experiment templates and experiments (the control
//! plane); this executor runs them, as FIS does on AWS, so that a fault is undone by the
//! service, not by the client that started it.
//!
//! It runs one action, `aws:network:disrupt-connectivity` with scope `all`, on subnets named
//! by ARN (FIS UG, actions reference): each target subnet moves to a network ACL FIS creates
//! for it (tagged `managedByFIS=true`, as the managed policy
//! `AWSFaultInjectionSimulatorNetworkAccess` requires), which denies all traffic into and out of
//! the subnet but traffic within it; when the action's `duration` has passed on the sandbox's
//! clock, when the experiment is stopped, or when a stop-condition alarm is in ALARM, the
//! subnet goes back to the ACL it had and FIS's ACL is deleted. The ACL to go back to is kept
//! in a tag of FIS's ACL, so a restarted sandbox still reverts what it applied.
//!
//! It also runs `aws:rds:reboot-db-instances` with `forceFailover` and
//! `aws:rds:failover-db-cluster` (the data plane fails the DB instance or cluster over) and `aws:elasticache:replicationgroup-interrupt-az-power` (the data plane
//! cuts the power of the replication group's nodes in the target's
//! `availabilityZoneIdentifier` for the action's duration), the database and cache actions of
//! AWS's "AZ Availability: Power Interruption" scenario.
//!
//! moto does not move an experiment's state by itself here (the launcher sets its transition
//! to manual); the executor reports each state with a `stackproof:sandbox-state` tag that the
//! launcher turns into the experiment's state, as the ECS agent reports a task's state.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, SystemTime};

use aws_sdk_ec2::types::{Filter, ResourceType, RuleAction, Tag, TagSpecification};
use aws_sdk_fis::types::{Experiment, ExperimentStatus};

use aws_model::Clock;

use super::cache::Caches;
use super::database::Databases;
use super::observe::aws;
use super::{Clients, log};
use crate::Error;

/// The network action the executor runs.
pub(crate) const DISRUPT_CONNECTIVITY: &str = "aws:network:disrupt-connectivity";
/// The database action it runs (with `forceFailover`: a Multi-AZ failover).
pub(crate) const REBOOT_DB_INSTANCES: &str = "aws:rds:reboot-db-instances";
/// The FIS action that fails a Multi-AZ DB cluster over to a reader.
pub(crate) const FAILOVER_DB_CLUSTER: &str = "aws:rds:failover-db-cluster";
/// The cache action it runs: the power of a replication group's nodes in one zone.
pub(crate) const INTERRUPT_CACHE_AZ_POWER: &str =
    "aws:elasticache:replicationgroup-interrupt-az-power";
/// The tag FIS puts on what it creates.
const MANAGED_BY_FIS: &str = "managedByFIS";
/// On FIS's ACL: the experiment that made it.
const EXPERIMENT_TAG: &str = "stackproof:fis-experiment";
/// On FIS's ACL: the subnet it holds.
const SUBNET_TAG: &str = "stackproof:fis-subnet";
/// On FIS's ACL: the ACL the subnet had.
const RESTORE_TAG: &str = "stackproof:fis-restore";
/// The tag through which the executor sets an experiment's state in moto (the launcher's
/// patch reads it, sets the state and drops the tag): `running`, `completed`, `stopped` or
/// `failed`, then `: reason` where there is one.
pub(crate) const STATE_TAG: &str = "stackproof:sandbox-state";

/// Most experiments read per listing page, and pages per read.
const MAX_PAGES: usize = 10;

/// What the executor remembers between reads.
#[derive(Debug, Default)]
pub(crate) struct Executor {
    /// Experiment id -> when its action started (wall time).
    started: HashMap<String, SystemTime>,
}

/// The ISO 8601 duration FIS takes (`PT2M`, `PT1H30M`, `PT90S`), or `None`.
pub(crate) fn parse_iso_duration(text: &str) -> Option<Duration> {
    let rest = text.strip_prefix("PT")?;
    if rest.is_empty() {
        return None;
    }
    let mut total = 0u64;
    let mut number = String::new();
    for c in rest.chars() {
        if c.is_ascii_digit() {
            number.push(c);
            continue;
        }
        let n: u64 = number.parse().ok()?;
        number.clear();
        total += n * match c {
            'H' => 3600,
            'M' => 60,
            'S' => 1,
            _ => return None,
        };
    }
    number.is_empty().then_some(Duration::from_secs(total))
}

/// What an experiment does, as the executor runs it.
#[derive(Debug, Clone, PartialEq)]
struct Disruption {
    /// How long the network action lasts (zero without one).
    duration: Duration,
    /// The subnets it cuts off.
    subnets: Vec<String>,
    /// DB instances (ARNs) to fail over at the start.
    failovers: Vec<String>,
    /// Replication groups (ARN, zone) whose nodes there lose power while it runs.
    power: Vec<(String, String)>,
    alarms: Vec<String>,
}

/// The resources an action's target names (by ARN), checked to be of `resource_type`.
fn target_arns(
    e: &Experiment,
    action: &str,
    key: &str,
    targets: Option<&std::collections::HashMap<String, String>>,
    resource_type: &str,
) -> Result<Vec<String>, String> {
    let Some(target_name) = targets.and_then(|t| t.get(key)) else {
        return Err(format!("action {action}: no {key} target"));
    };
    let Some(target) = e.targets().and_then(|t| t.get(target_name)) else {
        return Err(format!("target {target_name}: not in the experiment"));
    };
    if target.resource_type() != Some(resource_type) {
        return Err(format!(
            "target {target_name}: resource type {:?}: {resource_type}",
            target.resource_type().unwrap_or_default()
        ));
    }
    let arns = target.resource_arns().to_vec();
    if arns.is_empty() {
        return Err(format!(
            "target {target_name}: the sandbox resolves targets by ARN only (resourceArns)"
        ));
    }
    Ok(arns)
}

/// The FIS action that fails the database `arn` over: a cluster's or an instance's.
fn db_action(arn: &str) -> &'static str {
    if super::database::is_cluster_arn(arn) {
        FAILOVER_DB_CLUSTER
    } else {
        REBOOT_DB_INSTANCES
    }
}

/// The experiment's actions, checked: at most one [`DISRUPT_CONNECTIVITY`], any
/// [`REBOOT_DB_INSTANCES`] with `forceFailover` and any [`FAILOVER_DB_CLUSTER`]; the reason it
/// cannot run otherwise.
fn disruption(e: &Experiment) -> Result<Disruption, String> {
    let actions = e.actions().map(|a| a.iter().collect::<BTreeMap<_, _>>());
    let actions = actions.unwrap_or_default();
    if actions.is_empty() {
        return Err("the experiment has no action".to_owned());
    }
    let mut plan = Disruption {
        duration: Duration::ZERO,
        subnets: Vec::new(),
        failovers: Vec::new(),
        power: Vec::new(),
        alarms: Vec::new(),
    };
    let mut networks = 0;
    for (name, action) in actions {
        let params = action.parameters();
        match action.action_id() {
            Some(DISRUPT_CONNECTIVITY) => {
                networks += 1;
                if networks > 1 {
                    return Err(format!(
                        "action {name}: the sandbox runs one {DISRUPT_CONNECTIVITY} per experiment"
                    ));
                }
                let scope = params
                    .and_then(|p| p.get("scope"))
                    .map_or("all", String::as_str);
                if scope != "all" {
                    return Err(format!(
                        "action {name}: scope {scope:?}: the sandbox runs scope \"all\" only"
                    ));
                }
                plan.duration = plan.duration.max(action_duration(name, params)?);
                let arns = target_arns(e, name, "Subnets", action.targets(), "aws:ec2:subnet")?;
                plan.subnets = arns
                    .iter()
                    .filter_map(|arn| arn.rsplit_once("subnet/").map(|(_, id)| id.to_owned()))
                    .collect();
            }
            Some(REBOOT_DB_INSTANCES) => {
                let force = params
                    .and_then(|p| p.get("forceFailover"))
                    .map_or("false", String::as_str);
                if force != "true" {
                    return Err(format!(
                        "action {name}: forceFailover {force:?}: the sandbox runs {REBOOT_DB_INSTANCES} with forceFailover \"true\" only"
                    ));
                }
                plan.failovers.extend(target_arns(
                    e,
                    name,
                    "DBInstances",
                    action.targets(),
                    "aws:rds:db",
                )?);
            }
            Some(FAILOVER_DB_CLUSTER) => {
                plan.failovers.extend(target_arns(
                    e,
                    name,
                    "Clusters",
                    action.targets(),
                    "aws:rds:cluster",
                )?);
            }
            Some(INTERRUPT_CACHE_AZ_POWER) => {
                plan.duration = plan.duration.max(action_duration(name, params)?);
                let arns = target_arns(
                    e,
                    name,
                    "ReplicationGroups",
                    action.targets(),
                    "aws:elasticache:replicationgroup",
                )?;
                let zone = action
                    .targets()
                    .and_then(|t| t.get("ReplicationGroups"))
                    .and_then(|t| e.targets()?.get(t))
                    .and_then(|t| t.parameters()?.get("availabilityZoneIdentifier").cloned())
                    .ok_or_else(|| {
                        format!("action {name}: its target has no availabilityZoneIdentifier")
                    })?;
                plan.power
                    .extend(arns.into_iter().map(|arn| (arn, zone.clone())));
            }
            other => {
                return Err(format!(
                    "action {name}: {:?}: the sandbox runs {DISRUPT_CONNECTIVITY}, {REBOOT_DB_INSTANCES}, {FAILOVER_DB_CLUSTER} and {INTERRUPT_CACHE_AZ_POWER} only",
                    other.unwrap_or_default()
                ));
            }
        }
    }
    plan.alarms = e
        .stop_conditions()
        .iter()
        .filter(|s| s.source() == Some("aws:cloudwatch:alarm"))
        .filter_map(|s| s.value())
        .filter_map(|arn| arn.rsplit_once(":alarm:").map(|(_, n)| n.to_owned()))
        .collect();
    Ok(plan)
}

/// An action's `duration`: PT1M to PT12H.
fn action_duration(
    name: &str,
    params: Option<&std::collections::HashMap<String, String>>,
) -> Result<Duration, String> {
    let text = params
        .and_then(|p| p.get("duration"))
        .map(String::as_str)
        .unwrap_or_default();
    parse_iso_duration(text)
        .filter(|d| (Duration::from_secs(60)..=Duration::from_secs(12 * 3600)).contains(d))
        .ok_or_else(|| {
            format!("action {name}: duration {text:?}: an ISO 8601 duration from PT1M to PT12H")
        })
}

/// What the experiments started or ended in one pass asks of the data plane.
#[derive(Debug, Default)]
pub(crate) struct Effects {
    /// DB instances (ARNs) to fail over.
    pub(crate) failovers: Vec<String>,
    /// Replication groups (ARN, zone) whose nodes there lose power.
    pub(crate) cuts: Vec<(String, String)>,
    /// Replication groups (ARN, zone) whose power comes back.
    pub(crate) restores: Vec<(String, String)>,
}

impl Executor {
    /// One pass over the region's experiments: starts the new ones, ends those whose time
    /// is up, that were stopped or whose stop condition fired. Errors of one experiment are
    /// logged and retried on the next read; they do not stop the others.
    /// Returns what the experiments started or ended now ask of the data plane.
    pub(crate) async fn run(
        &mut self,
        c: &Clients,
        clock: Clock,
        databases: &Databases,
        caches: &Caches,
    ) -> Result<Effects, Error> {
        let mut token = None;
        let mut live = Vec::new();
        let mut effects = Effects::default();
        for _ in 0..MAX_PAGES {
            let out = c
                .fis
                .list_experiments()
                .set_next_token(token)
                .send()
                .await
                .map_err(aws("ListExperiments", "*"))?;
            for e in out.experiments() {
                let status = e.state().and_then(|s| s.status());
                if matches!(
                    status,
                    Some(
                        ExperimentStatus::Pending
                            | ExperimentStatus::Initiating
                            | ExperimentStatus::Running
                            | ExperimentStatus::Stopping
                    )
                ) && let Some(id) = e.id()
                {
                    live.push(id.to_owned());
                }
            }
            token = out.next_token().map(str::to_owned);
            if token.is_none() {
                break;
            }
        }
        for id in live {
            if let Err(e) = self
                .step(c, clock, &id, databases, caches, &mut effects)
                .await
            {
                log(format_args!("FIS experiment {id}: {e} (retrying)"));
            }
        }
        Ok(effects)
    }

    async fn step(
        &mut self,
        c: &Clients,
        clock: Clock,
        id: &str,
        databases: &Databases,
        caches: &Caches,
        effects: &mut Effects,
    ) -> Result<(), Error> {
        let out = c
            .fis
            .get_experiment()
            .id(id)
            .send()
            .await
            .map_err(aws("GetExperiment", id))?;
        let Some(e) = out.experiment() else {
            return Ok(());
        };
        let arn = e.arn().unwrap_or_default().to_owned();
        let status = e.state().and_then(|s| s.status()).cloned();
        let plan = match disruption(e) {
            Ok(p) => p,
            Err(reason) => {
                revert(c, id).await?;
                self.started.remove(id);
                return set_state(c, &arn, "failed", &reason).await;
            }
        };
        match status {
            Some(ExperimentStatus::Pending | ExperimentStatus::Initiating) => {
                // RebootDBInstance's own check first: a forced failover needs Multi-AZ.
                if let Some(why) = plan.failovers.iter().find_map(|db| {
                    let why = databases.can_fail_over(db).err()?;
                    Some(format!("{}: {why}", db_action(db)))
                }) {
                    return set_state(c, &arn, "failed", &why).await;
                }
                if let Some(why) = plan
                    .power
                    .iter()
                    .find_map(|(arn, _)| caches.can_cut_power(arn).err())
                {
                    return set_state(
                        c,
                        &arn,
                        "failed",
                        &format!("{INTERRUPT_CACHE_AZ_POWER}: {why}"),
                    )
                    .await;
                }
                if !plan.subnets.is_empty()
                    && let Err(e) = apply(c, id, &plan.subnets).await
                {
                    revert(c, id).await?;
                    return set_state(c, &arn, "failed", &e.to_string()).await;
                }
                effects.failovers.extend(plan.failovers.iter().cloned());
                effects.cuts.extend(plan.power.iter().cloned());
                self.started.insert(id.to_owned(), SystemTime::now());
                if !plan.subnets.is_empty() {
                    log(format_args!(
                        "FIS experiment {id}: {DISRUPT_CONNECTIVITY} on {} for {} s",
                        plan.subnets.join(", "),
                        plan.duration.as_secs()
                    ));
                }
                for db in &plan.failovers {
                    log(format_args!(
                        "FIS experiment {id}: {} on {db}",
                        db_action(db)
                    ));
                }
                for (group, zone) in &plan.power {
                    log(format_args!(
                        "FIS experiment {id}: {INTERRUPT_CACHE_AZ_POWER} on {group} in {zone} for {} s",
                        plan.duration.as_secs()
                    ));
                }
                set_state(c, &arn, "running", "").await
            }
            Some(ExperimentStatus::Running) => {
                let started = *self.started.entry(id.to_owned()).or_insert_with(|| {
                    e.start_time()
                        .and_then(|t| SystemTime::try_from(*t).ok())
                        .unwrap_or_else(SystemTime::now)
                });
                let elapsed = clock.model(started.elapsed().unwrap_or_default());
                if elapsed >= plan.duration {
                    revert(c, id).await?;
                    self.started.remove(id);
                    effects.restores.extend(plan.power.iter().cloned());
                    log(format_args!(
                        "FIS experiment {id}: completed, subnets restored"
                    ));
                    return set_state(c, &arn, "completed", "").await;
                }
                if let Some(alarm) = alarm_firing(c, &plan.alarms).await? {
                    revert(c, id).await?;
                    self.started.remove(id);
                    effects.restores.extend(plan.power.iter().cloned());
                    log(format_args!("FIS experiment {id}: stopped by {alarm}"));
                    return set_state(
                        c,
                        &arn,
                        "stopped",
                        &format!("Experiment stopped by stop condition: alarm {alarm} is in ALARM"),
                    )
                    .await;
                }
                Ok(())
            }
            Some(ExperimentStatus::Stopping) => {
                revert(c, id).await?;
                self.started.remove(id);
                effects.restores.extend(plan.power.iter().cloned());
                log(format_args!(
                    "FIS experiment {id}: stopped, subnets restored"
                ));
                set_state(c, &arn, "stopped", "").await
            }
            _ => Ok(()),
        }
    }
}

/// The first of `alarms` in ALARM.
async fn alarm_firing(c: &Clients, alarms: &[String]) -> Result<Option<String>, Error> {
    if alarms.is_empty() {
        return Ok(None);
    }
    let out =
        c.cw.describe_alarms()
            .set_alarm_names(Some(alarms.to_vec()))
            .send()
            .await
            .map_err(aws("DescribeAlarms", alarms.join(", ")))?;
    Ok(out
        .metric_alarms()
        .iter()
        .find(|a| a.state_value() == Some(&aws_sdk_cloudwatch::types::StateValue::Alarm))
        .and_then(|a| a.alarm_name().map(str::to_owned)))
}

async fn set_state(c: &Clients, arn: &str, status: &str, reason: &str) -> Result<(), Error> {
    let value = if reason.is_empty() {
        status.to_owned()
    } else {
        // Tag values hold 256 characters.
        let mut v = format!("{status}: {reason}");
        v.truncate(v.floor_char_boundary(256));
        v
    };
    c.fis
        .tag_resource()
        .resource_arn(arn)
        .tags(STATE_TAG, value)
        .send()
        .await
        .map_err(aws("TagResource", arn))?;
    Ok(())
}

/// Moves each subnet to an ACL of FIS's that denies all but traffic within the subnet.
/// Idempotent: a subnet already on this experiment's ACL is left there.
async fn apply(c: &Clients, experiment: &str, subnets: &[String]) -> Result<(), Error> {
    let described = c
        .ec2
        .describe_subnets()
        .set_subnet_ids(Some(subnets.to_vec()))
        .send()
        .await
        .map_err(aws("DescribeSubnets", subnets.join(", ")))?;
    for subnet in described.subnets() {
        let (Some(sid), Some(vpc), Some(cidr)) =
            (subnet.subnet_id(), subnet.vpc_id(), subnet.cidr_block())
        else {
            continue;
        };
        let acls = c
            .ec2
            .describe_network_acls()
            .filters(
                Filter::builder()
                    .name("association.subnet-id")
                    .values(sid)
                    .build(),
            )
            .send()
            .await
            .map_err(aws("DescribeNetworkAcls", sid))?;
        let Some((assoc, current)) = acls.network_acls().iter().find_map(|acl| {
            let a = acl
                .associations()
                .iter()
                .find(|a| a.subnet_id() == Some(sid))?;
            Some((a.network_acl_association_id()?.to_owned(), acl.clone()))
        }) else {
            continue;
        };
        let ours = |k: &str, v: &str| {
            current
                .tags()
                .iter()
                .any(|t| t.key() == Some(k) && t.value() == Some(v))
        };
        if ours(EXPERIMENT_TAG, experiment) {
            continue;
        }
        let tag = |k: &str, v: &str| Tag::builder().key(k).value(v).build();
        let created = c
            .ec2
            .create_network_acl()
            .vpc_id(vpc)
            .tag_specifications(
                TagSpecification::builder()
                    .resource_type(ResourceType::NetworkAcl)
                    .tags(tag(MANAGED_BY_FIS, "true"))
                    .tags(tag(EXPERIMENT_TAG, experiment))
                    .tags(tag(SUBNET_TAG, sid))
                    .tags(tag(
                        RESTORE_TAG,
                        current.network_acl_id().unwrap_or_default(),
                    ))
                    .tags(tag("Name", &format!("FIS {experiment} {sid}")))
                    .build(),
            )
            .send()
            .await
            .map_err(aws("CreateNetworkAcl", vpc))?;
        let acl_id = created
            .network_acl()
            .and_then(|a| a.network_acl_id())
            .unwrap_or_default()
            .to_owned();
        // Scope `all` denies everything into and out of the subnet but traffic within it.
        for egress in [false, true] {
            c.ec2
                .create_network_acl_entry()
                .network_acl_id(&acl_id)
                .rule_number(100)
                .protocol("-1")
                .rule_action(RuleAction::Allow)
                .egress(egress)
                .cidr_block(cidr)
                .send()
                .await
                .map_err(aws("CreateNetworkAclEntry", &acl_id))?;
        }
        c.ec2
            .replace_network_acl_association()
            .association_id(assoc)
            .network_acl_id(&acl_id)
            .send()
            .await
            .map_err(aws("ReplaceNetworkAclAssociation", sid))?;
    }
    Ok(())
}

/// Puts every subnet the experiment moved back on the ACL it had (the VPC's default one
/// when that is gone) and deletes FIS's ACLs.
async fn revert(c: &Clients, experiment: &str) -> Result<(), Error> {
    let ours = c
        .ec2
        .describe_network_acls()
        .filters(
            Filter::builder()
                .name(format!("tag:{EXPERIMENT_TAG}"))
                .values(experiment)
                .build(),
        )
        .send()
        .await
        .map_err(aws("DescribeNetworkAcls", experiment))?;
    for acl in ours.network_acls() {
        let acl_id = acl.network_acl_id().unwrap_or_default();
        let tag = |k: &str| {
            acl.tags()
                .iter()
                .find(|t| t.key() == Some(k))
                .and_then(|t| t.value())
                .map(str::to_owned)
        };
        let restore = restore_target(c, acl.vpc_id().unwrap_or_default(), tag(RESTORE_TAG)).await?;
        for a in acl.associations() {
            let Some(assoc) = a.network_acl_association_id() else {
                continue;
            };
            c.ec2
                .replace_network_acl_association()
                .association_id(assoc)
                .network_acl_id(&restore)
                .send()
                .await
                .map_err(aws(
                    "ReplaceNetworkAclAssociation",
                    a.subnet_id().unwrap_or_default(),
                ))?;
        }
        c.ec2
            .delete_network_acl()
            .network_acl_id(acl_id)
            .send()
            .await
            .map_err(aws("DeleteNetworkAcl", acl_id))?;
    }
    Ok(())
}

/// The ACL to put a subnet back on: `remembered` if it still exists in `vpc`, else the
/// VPC's default one.
async fn restore_target(
    c: &Clients,
    vpc: &str,
    remembered: Option<String>,
) -> Result<String, Error> {
    let out = c
        .ec2
        .describe_network_acls()
        .filters(Filter::builder().name("vpc-id").values(vpc).build())
        .send()
        .await
        .map_err(aws("DescribeNetworkAcls", vpc))?;
    let acls = out.network_acls();
    if let Some(id) = remembered
        && acls.iter().any(|a| a.network_acl_id() == Some(id.as_str()))
    {
        return Ok(id);
    }
    acls.iter()
        .find(|a| a.is_default() == Some(true))
        .and_then(|a| a.network_acl_id())
        .map(str::to_owned)
        .ok_or_else(|| Error::Aws {
            operation: "DescribeNetworkAcls",
            resource: vpc.to_owned(),
            message: "the VPC has no default network ACL".to_owned(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso_durations_as_fis_takes_them() {
        assert_eq!(parse_iso_duration("PT2M"), Some(Duration::from_secs(120)));
        assert_eq!(
            parse_iso_duration("PT1H30M"),
            Some(Duration::from_secs(5400))
        );
        assert_eq!(parse_iso_duration("PT90S"), Some(Duration::from_secs(90)));
        assert_eq!(
            parse_iso_duration("PT10M5S"),
            Some(Duration::from_secs(605))
        );
        for bad in ["", "PT", "2M", "PT2", "PT2D", "P1D", "PTM"] {
            assert_eq!(parse_iso_duration(bad), None, "{bad}");
        }
    }
}
