//! The databases' data plane: for every RDS PostgreSQL DB instance moto holds, a real
//! PostgreSQL primary on its zone's loopback range and, when the instance is Multi-AZ, a
//! streaming-replication standby in another zone of its DB subnet group with synchronous
//! commit (what Multi-AZ promises: a commit is acknowledged once the standby has it). For a
//! Multi-AZ DB cluster, a writer and two readable standbys, one in each other zone, a commit
//! acknowledged once either standby has it (RDS's semi-synchronous replication). The endpoint
//! name (a cluster's writer endpoint) resolves through the plane's DNS server, with RDS's TTL,
//! to the primary; a cluster's reader endpoint to its standbys.
//!
//! Faults, as AWS has them:
//! - a network ACL of the primary's subnet that denies TCP on the port cuts it off: the server
//!   is paused (SIGSTOP to the postmaster and its backends), so connections to it stall as packets to a lost
//!   host do; it resumes when the ACL lets traffic in again. RDS does not fail over for a
//!   customer's network ACL;
//! - a forced failover (FIS `aws:rds:reboot-db-instances` with `forceFailover`, or
//!   `aws:rds:failover-db-cluster` for a cluster, which AWS's "AZ Availability: Power
//!   Interruption" scenario runs): the primary stops at once, and after a failover time drawn
//!   from AWS's 60-120 s (a cluster: under 35 s) on the plane's clock the standby that received
//!   the most is promoted and the endpoint names it. The old primary is gone; once its zone is
//!   reachable again a new standby is built there from the new primary, and synchronous commit
//!   resumes; a cluster's other standby is built again from the new writer at once;
//! - a standby cut off: the primary stops waiting for it (RDS goes on with the primary alone,
//!   a cluster with its other standby).
//!
//! Not modelled: the failover RDS starts by itself when the primary's host fails (the sandbox
//! has no host failure but the forced one), Single-AZ recovery into another zone, engines other
//! than PostgreSQL, a cluster's other standby following the new writer without a new copy.

mod follow;
mod postgres;
pub(crate) mod read;

use follow::{follow, set_synchronous};

use std::collections::BTreeMap;
use std::net::SocketAddr;

use aws_model::aws::rds;
use aws_model::{Clock, Rng};
use aws_smithy_types::error::display::DisplayErrorContext;
use serde::Serialize;
use tokio::task::JoinHandle;
use tokio::time::Instant;

pub use postgres::bin_dir;
use postgres::{Postgres, Server};
pub(crate) use postgres::{free_addr, root_dir};

use super::dns::DnsServer;
use super::log;
use super::observe::World;

/// The tag through which the plane reports a primary's new zone after a failover (the
/// launcher's patch sets the instance's AvailabilityZone from it and drops it).
pub(crate) const ZONE_TAG: &str = "stackproof:sandbox-az";

/// The tag through which the launcher's patch hands on a `RebootDBInstance` with
/// `ForceFailover` (moto ignores the flag); the plane begins the failover and removes it.
pub(crate) const FAILOVER_TAG: &str = "stackproof:sandbox-failover";

/// One RDS DB instance, or Multi-AZ DB cluster, as the plane reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DbSpec {
    /// The instance's identifier, or the cluster's.
    pub(crate) id: String,
    pub(crate) arn: String,
    pub(crate) engine: String,
    /// The endpoint (a cluster's writer endpoint).
    pub(crate) endpoint: String,
    /// A cluster's reader endpoint.
    pub(crate) reader_endpoint: Option<String>,
    /// A cluster's DB instances: (identifier, zone).
    pub(crate) members: Vec<(String, String)>,
    pub(crate) port: u16,
    pub(crate) multi_az: bool,
    /// A Multi-AZ DB cluster (else a DB instance).
    pub(crate) cluster: bool,
    /// `RebootDBInstance` with `ForceFailover` was called (see [`FAILOVER_TAG`]).
    pub(crate) failover_requested: bool,
    /// Where RDS says the primary is.
    pub(crate) zone: String,
    /// The DB subnet group: (subnet id, zone).
    pub(crate) subnets: Vec<(String, String)>,
    pub(crate) user: String,
    pub(crate) database: String,
    pub(crate) secret_arn: Option<String>,
}

impl DbSpec {
    /// How many standbys run: none (Single-AZ), one (a Multi-AZ instance), two (a cluster).
    pub(crate) fn standbys(&self) -> usize {
        if self.cluster {
            2
        } else {
            usize::from(self.multi_az)
        }
    }
}

/// Whether an RDS ARN names a DB cluster (`arn:aws:rds:REGION:ACCOUNT:cluster:ID`), not a DB
/// instance (`...:db:ID`).
pub(crate) fn is_cluster_arn(arn: &str) -> bool {
    arn.split(':').nth(5) == Some("cluster")
}

/// A database as the plane runs it, for [`super::PlaneStatus`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DatabaseStatus {
    /// The DB instance identifier (or the cluster's).
    pub id: String,
    /// `instance` or `cluster`.
    pub deployment: String,
    /// Its endpoint name (the plane's DNS server answers for it).
    pub endpoint: String,
    /// `starting`, `available`, `unreachable` (the primary's zone cut off), `failing-over`,
    /// `without-standby` (after a failover, until the new standby runs) or `failed: why`.
    pub state: String,
    /// The primary: its zone and address.
    pub primary: Option<(String, SocketAddr)>,
    /// The standbys that run: their zones and addresses.
    pub standbys: Vec<(String, SocketAddr)>,
    /// Failovers done.
    pub failovers: u32,
}

/// What one instance (or cluster) runs.
#[derive(Debug)]
struct Pair {
    pg: Postgres,
    primary: Server,
    standbys: Vec<Server>,
    /// A forced failover under way: when a standby takes over.
    failover_at: Option<Instant>,
    /// Zones where a standby is to be built again once the zone is reachable: the old
    /// primary's after a failover, a cluster's other standby's.
    lost_zones: Vec<String>,
    /// New standbys being built.
    rebuilding: Vec<JoinHandle<Result<Server, String>>>,
    /// Standbys built since the start (their folders' names).
    builds: u32,
    failovers: u32,
    /// Whether the primary waits for the standby on commit.
    synchronous: bool,
}

#[derive(Debug)]
enum Phase {
    Starting(JoinHandle<Result<Pair, String>>),
    Ready(Box<Pair>),
    Failed(String),
}

#[derive(Debug)]
struct Db {
    spec: DbSpec,
    phase: Phase,
}

/// Every database of the plane.
#[derive(Debug)]
pub(crate) struct Databases {
    /// Where their data is (one folder per plane).
    root: std::path::PathBuf,
    dbs: BTreeMap<String, Db>,
    /// Forced failovers asked for (instance ARNs) and not yet begun.
    requested: Vec<String>,
}

/// Whether the network ACLs of the subnet group's subnets in `zone` admit the database's port.
fn zone_reachable(spec: &DbSpec, world: &World, zone: &str) -> bool {
    spec.subnets
        .iter()
        .filter(|(_, z)| z == zone)
        .filter_map(|(id, _)| world.subnets.get(id))
        .all(|s| s.reachable(spec.port))
}

impl Default for Databases {
    fn default() -> Self {
        Databases {
            root: postgres::root_dir("db"),
            dbs: BTreeMap::new(),
            requested: Vec::new(),
        }
    }
}

impl Drop for Databases {
    /// The plane's data folder goes with it, however the plane ends (its servers are killed
    /// as they drop).
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

impl Databases {
    /// A forced failover of the instance `arn` (FIS `aws:rds:reboot-db-instances` with
    /// `forceFailover`): begun at the next step.
    pub(crate) fn fail_over(&mut self, arn: &str) {
        self.requested.push(arn.to_owned());
    }

    /// Whether the plane runs a database for the instance `id` (started or starting).
    pub(crate) fn knows(&self, id: &str) -> bool {
        self.dbs.contains_key(id)
    }

    /// Whether the plane runs a Multi-AZ database for `arn` that can fail over.
    pub(crate) fn can_fail_over(&self, arn: &str) -> Result<(), String> {
        let Some(db) = self.dbs.values().find(|d| d.spec.arn == arn) else {
            return Err(if is_cluster_arn(arn) {
                format!("DBClusterNotFoundFault: no DB cluster {arn}")
            } else {
                format!("DBInstanceNotFound: no DB instance {arn}")
            });
        };
        if !db.spec.multi_az {
            return Err(format!(
                "InvalidParameterCombination: {} is a Single-AZ DB instance; a forced failover needs a Multi-AZ one",
                db.spec.id
            ));
        }
        Ok(())
    }

    /// One step: starts the databases of new instances, stops those of deleted ones, and
    /// follows each one's faults. `passwords` maps a secret ARN to the master password.
    /// Returns the databases whose primary moved to another zone in this step: (instance ARN,
    /// zone) or, for a cluster, (cluster ARN, zone, the new writer's instance identifier).
    pub(crate) async fn step(
        &mut self,
        world: &World,
        zones: &[String],
        passwords: &BTreeMap<String, String>,
        clock: Clock,
        rng: &mut Rng,
        dns: &DnsServer,
    ) -> Vec<Moved> {
        let mut moved = Vec::new();
        let wanted: BTreeMap<&str, &DbSpec> =
            world.databases.iter().map(|d| (d.id.as_str(), d)).collect();
        let gone: Vec<String> = self
            .dbs
            .keys()
            .filter(|id| !wanted.contains_key(id.as_str()))
            .cloned()
            .collect();
        for id in gone {
            if let Some(db) = self.dbs.remove(&id) {
                log(format_args!(
                    "database {id}: instance deleted; its servers stop"
                ));
                stop(db).await;
            }
        }
        for (id, spec) in wanted {
            if !self.dbs.contains_key(id) {
                let Some(password) = spec.secret_arn.as_ref().and_then(|a| passwords.get(a)) else {
                    continue; // Read again next time: the secret may not be readable yet.
                };
                let phase = start(spec, zones, password.clone(), self.root.clone());
                self.dbs.insert(
                    id.to_owned(),
                    Db {
                        spec: spec.clone(),
                        phase,
                    },
                );
            }
        }
        let requested = std::mem::take(&mut self.requested);
        for db in self.dbs.values_mut() {
            if let Phase::Starting(handle) = &mut db.phase
                && handle.is_finished()
            {
                db.phase = match handle.await {
                    Ok(Ok(pair)) => {
                        log(format_args!(
                            "database {}: PostgreSQL primary on {} ({}){}",
                            db.spec.id,
                            pair.primary.addr,
                            pair.primary.zone,
                            pair.standbys
                                .iter()
                                .map(|s| format!(
                                    ", synchronous standby on {} ({})",
                                    s.addr, s.zone
                                ))
                                .collect::<String>()
                        ));
                        Phase::Ready(Box::new(pair))
                    }
                    Ok(Err(why)) => {
                        log(format_args!("database {}: {why}", db.spec.id));
                        Phase::Failed(why)
                    }
                    Err(e) => Phase::Failed(format!("start: {e}")),
                };
            }
            let Phase::Ready(pair) = &mut db.phase else {
                continue;
            };
            if requested.contains(&db.spec.arn) && pair.failover_at.is_none() {
                let draw = rng.next_f64();
                let (min, max) = if db.spec.cluster {
                    (rds::CLUSTER_FAILOVER_MIN, rds::CLUSTER_FAILOVER_MAX)
                } else {
                    (rds::INSTANCE_FAILOVER_MIN, rds::INSTANCE_FAILOVER_MAX)
                };
                let model = min + (max - min).mul_f64(draw);
                pair.failover_at = Some(Instant::now() + clock.wall(model));
                // The reboot: the primary is gone from now on.
                pair.primary.pause().await;
                log(format_args!(
                    "database {}: forced failover; a standby takes over in {:.0} s (model)",
                    db.spec.id,
                    model.as_secs_f64()
                ));
            }
            let failovers = pair.failovers;
            follow(&db.spec, pair, world, zones).await;
            if pair.failovers != failovers {
                let zone = pair.primary.zone.clone();
                let writer = db
                    .spec
                    .members
                    .iter()
                    .find(|(_, z)| *z == zone)
                    .map(|(id, _)| id.clone());
                moved.push(Moved {
                    id: db.spec.id.clone(),
                    arn: db.spec.arn.clone(),
                    zone,
                    writer,
                });
            }
            let ttl = u32::try_from(clock.wall(rds::ENDPOINT_TTL).as_secs().max(1)).unwrap_or(5);
            let v4 = |addr: SocketAddr| match addr.ip() {
                std::net::IpAddr::V4(ip) => Some(ip),
                std::net::IpAddr::V6(_) => None,
            };
            if let Some(ip) = v4(pair.primary.addr) {
                dns.set(&db.spec.endpoint, vec![ip], ttl);
            }
            if let Some(reader) = &db.spec.reader_endpoint {
                // The reader endpoint names the standbys (the writer while there are none).
                let mut ips: Vec<_> = pair.standbys.iter().filter_map(|s| v4(s.addr)).collect();
                if ips.is_empty() {
                    ips.extend(v4(pair.primary.addr));
                }
                dns.set(reader, ips, ttl);
            }
        }
        moved
    }

    /// The databases' states.
    pub(crate) fn status(&self) -> Vec<DatabaseStatus> {
        self.dbs
            .values()
            .map(|db| {
                let (state, primary, standbys, failovers) = match &db.phase {
                    Phase::Starting(_) => ("starting".to_owned(), None, Vec::new(), 0),
                    Phase::Failed(why) => (format!("failed: {why}"), None, Vec::new(), 0),
                    Phase::Ready(p) => {
                        let state = if p.failover_at.is_some() {
                            "failing-over"
                        } else if p.primary.paused {
                            "unreachable"
                        } else if p.standbys.len() < db.spec.standbys() {
                            "without-standby"
                        } else {
                            "available"
                        };
                        (
                            state.to_owned(),
                            Some((p.primary.zone.clone(), p.primary.addr)),
                            p.standbys
                                .iter()
                                .map(|s| (s.zone.clone(), s.addr))
                                .collect(),
                            p.failovers,
                        )
                    }
                };
                DatabaseStatus {
                    id: db.spec.id.clone(),
                    deployment: if db.spec.cluster {
                        "cluster"
                    } else {
                        "instance"
                    }
                    .to_owned(),
                    endpoint: db.spec.endpoint.clone(),
                    state,
                    primary,
                    standbys,
                    failovers,
                }
            })
            .collect()
    }

    /// Stops every server (their data goes as they drop, the plane's folder as this does).
    pub(crate) async fn shutdown(&mut self) {
        for (_, db) in std::mem::take(&mut self.dbs) {
            stop(db).await;
        }
    }
}

/// Kills what a database runs (a server's data goes when it drops).
async fn stop(db: Db) {
    match db.phase {
        Phase::Starting(handle) => handle.abort(),
        Phase::Failed(_) => {}
        Phase::Ready(mut pair) => {
            for h in pair.rebuilding.drain(..) {
                h.abort();
            }
            for server in std::iter::once(&mut pair.primary).chain(pair.standbys.iter_mut()) {
                server.kill().await;
            }
        }
    }
}

/// Starts an instance's servers in the background: the primary in RDS's zone for it, a
/// standby in the next zone of its subnet group when Multi-AZ (a cluster: one in each of the
/// next two).
fn start(spec: &DbSpec, zones: &[String], password: String, root: std::path::PathBuf) -> Phase {
    let spec = spec.clone();
    let zones = zones.to_vec();
    Phase::Starting(tokio::spawn(async move {
        if spec.engine != "postgres" {
            return Err(format!(
                "engine {}: the sandbox runs PostgreSQL only",
                spec.engine
            ));
        }
        let bin = bin_dir().ok_or(
            "PostgreSQL is not installed (Debian's postgresql package: cargo xtask setup)",
        )?;
        let pg = Postgres {
            bin,
            user: postgres::server_user()?,
            login: spec.user.clone(),
            password,
            root: root.clone(),
        };
        let index = |zone: &str| zones.iter().position(|z| z == zone);
        let primary_zone = if index(&spec.zone).is_some() {
            spec.zone.clone()
        } else {
            spec.subnets
                .first()
                .map(|(_, z)| z.clone())
                .unwrap_or_default()
        };
        let addr = index(&primary_zone)
            .and_then(|n| postgres::free_addr(n, spec.port))
            .ok_or_else(|| format!("no free address for port {} in {primary_zone}", spec.port))?;
        let dir = root.join(&spec.id);
        let primary = pg
            .primary(&primary_zone, addr, &dir.join("a"), &spec.database)
            .await?;
        let mut pair = Pair {
            pg,
            primary,
            standbys: Vec::new(),
            failover_at: None,
            lost_zones: Vec::new(),
            rebuilding: Vec::new(),
            builds: 0,
            failovers: 0,
            synchronous: false,
        };
        let zones_wanted = standby_zones(&spec, &primary_zone);
        let wanted = spec.standbys();
        if zones_wanted.len() < wanted {
            return Err(format!(
                "{wanted} standbys need subnets in {wanted} zones besides {primary_zone}; the DB subnet group has {}",
                zones_wanted.len()
            ));
        }
        for zone in zones_wanted.into_iter().take(wanted) {
            let standby_addr = index(&zone)
                .and_then(|n| postgres::free_addr(n, spec.port))
                .ok_or_else(|| format!("no free address for port {} in {zone}", spec.port))?;
            pair.builds += 1;
            let dir = dir.join(format!("s{}", pair.builds));
            let standby = pair.pg.standby(&zone, standby_addr, &dir, addr).await?;
            pair.standbys.push(standby);
        }
        if !pair.standbys.is_empty() {
            set_synchronous(&mut pair, true).await?;
        }
        Ok(pair)
    }))
}

/// The zones of the subnet group after `primary`'s, in order and around: where standbys run.
fn standby_zones(spec: &DbSpec, primary: &str) -> Vec<String> {
    let mut zones: Vec<&str> = spec.subnets.iter().map(|(_, z)| z.as_str()).collect();
    zones.sort_unstable();
    zones.dedup();
    let (before, after): (Vec<&str>, Vec<&str>) = zones
        .into_iter()
        .filter(|z| *z != primary)
        .partition(|z| *z < primary);
    after.into_iter().chain(before).map(str::to_owned).collect()
}

/// A database whose primary moved to another zone in a step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Moved {
    /// The instance's identifier, or the cluster's.
    pub(crate) id: String,
    /// The instance's ARN, or the cluster's.
    pub(crate) arn: String,
    /// The primary's zone now.
    pub(crate) zone: String,
    /// A cluster's DB instance in that zone: its writer now.
    pub(crate) writer: Option<String>,
}

/// `RebootDBInstance` with `ForceFailover`, called directly (not through FIS): the failover
/// begins as FIS's does, and the request's tag goes.
pub(crate) async fn forced_reboot(c: &super::Clients, dbs: &mut Databases, spec: &DbSpec) {
    log(format_args!(
        "database {}: RebootDBInstance with ForceFailover",
        spec.id
    ));
    dbs.fail_over(&spec.arn);
    if let Err(e) = c
        .rds
        .remove_tags_from_resource()
        .resource_name(&spec.arn)
        .tag_keys(FAILOVER_TAG)
        .send()
        .await
    {
        log(format_args!(
            "database {}: the failover request's tag not removed: {}",
            spec.id,
            DisplayErrorContext(e)
        ));
    }
}

/// RDS reports where each moved primary is now: an instance's zone (the launcher's patch
/// takes [`ZONE_TAG`] for it), a cluster's writer (FailoverDBCluster to the instance in the
/// new zone, which moto records as the writer).
pub(crate) async fn report_moves(c: &super::Clients, moved: Vec<Moved>) {
    for m in moved {
        let result = match &m.writer {
            Some(writer) => c
                .rds
                .failover_db_cluster()
                .db_cluster_identifier(&m.id)
                .target_db_instance_identifier(writer)
                .send()
                .await
                .map(|_| ())
                .map_err(|e| DisplayErrorContext(e).to_string()),
            None => c
                .rds
                .add_tags_to_resource()
                .resource_name(&m.arn)
                .tags(
                    aws_sdk_rds::types::Tag::builder()
                        .key(ZONE_TAG)
                        .value(&m.zone)
                        .build(),
                )
                .send()
                .await
                .map(|_| ())
                .map_err(|e| DisplayErrorContext(e).to_string()),
        };
        if let Err(e) = result {
            log(format_args!(
                "database {}: its new primary in {} not reported: {e}",
                m.id, m.zone
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(zones: &[&str], standbys: usize) -> DbSpec {
        DbSpec {
            id: "web-db".into(),
            arn: "arn:aws:rds:eu-west-1:1:cluster:web-db".into(),
            engine: "postgres".into(),
            endpoint: "web-db.cluster-x.eu-west-1.rds.amazonaws.com".into(),
            reader_endpoint: None,
            members: Vec::new(),
            port: 5432,
            multi_az: standbys > 0,
            cluster: standbys == 2,
            failover_requested: false,
            zone: zones[0].into(),
            subnets: zones
                .iter()
                .enumerate()
                .map(|(n, z)| (format!("subnet-{n}"), (*z).to_owned()))
                .collect(),
            user: "app".into(),
            database: "app".into(),
            secret_arn: None,
        }
    }

    #[test]
    fn standbys_go_to_the_zones_after_the_primary_s_and_around() {
        let three = spec(&["eu-west-1c", "eu-west-1a", "eu-west-1b", "eu-west-1a"], 2);
        assert_eq!(
            standby_zones(&three, "eu-west-1b"),
            ["eu-west-1c", "eu-west-1a"]
        );
        assert_eq!(
            standby_zones(&three, "eu-west-1a"),
            ["eu-west-1b", "eu-west-1c"]
        );
        // A Multi-AZ instance's one standby: the next zone, as before clusters.
        let two = spec(&["eu-west-1a", "eu-west-1b"], 1);
        assert_eq!(standby_zones(&two, "eu-west-1b"), ["eu-west-1a"]);
    }

    #[test]
    fn cluster_arns_are_told_from_instance_arns() {
        assert!(is_cluster_arn(
            "arn:aws:rds:eu-west-1:123456789012:cluster:web-db"
        ));
        assert!(!is_cluster_arn(
            "arn:aws:rds:eu-west-1:123456789012:db:web-db"
        ));
        // An instance named like a cluster is still an instance.
        assert!(!is_cluster_arn(
            "arn:aws:rds:eu-west-1:123456789012:db:cluster"
        ));
        assert_eq!(
            spec(&["eu-west-1a", "eu-west-1b", "eu-west-1c"], 2).standbys(),
            2
        );
        assert_eq!(spec(&["eu-west-1a", "eu-west-1b"], 1).standbys(), 1);
    }
}
