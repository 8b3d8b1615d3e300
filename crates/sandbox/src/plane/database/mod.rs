//! The databases' data plane: for every RDS PostgreSQL DB instance moto holds, a real
//! PostgreSQL primary on its zone's loopback range and, when the instance is Multi-AZ, a
//! streaming-replication standby in another zone of its DB subnet group with synchronous
//! commit (what Multi-AZ promises: a commit is acknowledged once the standby has it). The
//! instance's endpoint name resolves through the plane's DNS server, with RDS's TTL, to the
//! primary.
//!
//! Faults, as AWS has them:
//! - a network ACL of the primary's subnet that denies TCP on the port cuts it off: the server
//!   is paused (SIGSTOP to the postmaster and its backends), so connections to it stall as packets to a lost
//!   host do; it resumes when the ACL lets traffic in again. RDS does not fail over for a
//!   customer's network ACL;
//! - a forced failover (FIS `aws:rds:reboot-db-instances` with `forceFailover`, which AWS's
//!   "AZ Availability: Power Interruption" scenario runs): the primary stops at once, and after
//!   a failover time drawn from AWS's 60-120 s (on the plane's clock) the standby is promoted
//!   and the endpoint names it. The old primary is gone; once its zone is reachable again a new
//!   standby is built there from the new primary, and synchronous commit resumes;
//! - a standby cut off: the primary stops waiting for it (RDS goes on with the primary alone).
//!
//! Not modelled: the failover RDS starts by itself when the primary's host fails (the sandbox
//! has no host failure but the forced one), Single-AZ recovery into another zone, engines other
//! than PostgreSQL, Multi-AZ DB clusters.

mod postgres;
pub(crate) mod read;

use std::collections::BTreeMap;
use std::net::SocketAddr;

use aws_model::aws::rds;
use aws_model::{Clock, Rng};
use serde::Serialize;
use tokio::task::JoinHandle;
use tokio::time::Instant;

pub use postgres::bin_dir;
pub(crate) use postgres::free_addr;
use postgres::{Postgres, Server};

use super::dns::DnsServer;
use super::log;
use super::observe::World;

/// The tag through which the plane reports a primary's new zone after a failover (the
/// launcher's patch sets the instance's AvailabilityZone from it and drops it).
pub(crate) const ZONE_TAG: &str = "stackproof:sandbox-az";

/// One RDS DB instance as the plane reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DbSpec {
    pub(crate) id: String,
    pub(crate) arn: String,
    pub(crate) engine: String,
    pub(crate) endpoint: String,
    pub(crate) port: u16,
    pub(crate) multi_az: bool,
    /// Where RDS says the primary is.
    pub(crate) zone: String,
    /// The DB subnet group: (subnet id, zone).
    pub(crate) subnets: Vec<(String, String)>,
    pub(crate) user: String,
    pub(crate) database: String,
    pub(crate) secret_arn: Option<String>,
}

/// A database as the plane runs it, for [`super::PlaneStatus`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DatabaseStatus {
    /// The DB instance identifier.
    pub id: String,
    /// Its endpoint name (the plane's DNS server answers for it).
    pub endpoint: String,
    /// `starting`, `available`, `unreachable` (the primary's zone cut off), `failing-over`,
    /// `without-standby` (after a failover, until the new standby runs) or `failed: why`.
    pub state: String,
    /// The primary: its zone and address.
    pub primary: Option<(String, SocketAddr)>,
    /// The standby, when one runs.
    pub standby: Option<(String, SocketAddr)>,
    /// Failovers done.
    pub failovers: u32,
}

/// What one instance runs.
#[derive(Debug)]
struct Pair {
    pg: Postgres,
    primary: Server,
    standby: Option<Server>,
    /// A forced failover under way: when the standby takes over.
    failover_at: Option<Instant>,
    /// After a failover, the zone of the old primary: a new standby is built there once the
    /// zone is reachable.
    lost_zone: Option<String>,
    /// A new standby being built.
    rebuilding: Option<JoinHandle<Result<Server, String>>>,
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
            root: postgres::root_dir(),
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
            return Err(format!("DBInstanceNotFound: no DB instance {arn}"));
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
    /// Returns the instances (ARN, zone) whose primary moved to another zone in this step.
    pub(crate) async fn step(
        &mut self,
        world: &World,
        zones: &[String],
        passwords: &BTreeMap<String, String>,
        clock: Clock,
        rng: &mut Rng,
        dns: &DnsServer,
    ) -> Vec<(String, String)> {
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
                            pair.standby.as_ref().map_or(String::new(), |s| format!(
                                ", synchronous standby on {} ({})",
                                s.addr, s.zone
                            ))
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
                let model = rds::INSTANCE_FAILOVER_MIN
                    + (rds::INSTANCE_FAILOVER_MAX - rds::INSTANCE_FAILOVER_MIN).mul_f64(draw);
                pair.failover_at = Some(Instant::now() + clock.wall(model));
                // The reboot: the primary is gone from now on.
                pair.primary.pause().await;
                log(format_args!(
                    "database {}: forced failover; the standby takes over in {:.0} s (model)",
                    db.spec.id,
                    model.as_secs_f64()
                ));
            }
            let failovers = pair.failovers;
            follow(&db.spec, pair, world, zones).await;
            if pair.failovers != failovers {
                moved.push((db.spec.arn.clone(), pair.primary.zone.clone()));
            }
            let addr = pair.primary.addr;
            let ttl = u32::try_from(clock.wall(rds::ENDPOINT_TTL).as_secs().max(1)).unwrap_or(5);
            if let std::net::IpAddr::V4(ip) = addr.ip() {
                dns.set(&db.spec.endpoint, vec![ip], ttl);
            }
        }
        moved
    }

    /// The databases' states.
    pub(crate) fn status(&self) -> Vec<DatabaseStatus> {
        self.dbs
            .values()
            .map(|db| {
                let (state, primary, standby, failovers) = match &db.phase {
                    Phase::Starting(_) => ("starting".to_owned(), None, None, 0),
                    Phase::Failed(why) => (format!("failed: {why}"), None, None, 0),
                    Phase::Ready(p) => {
                        let state = if p.failover_at.is_some() {
                            "failing-over"
                        } else if p.primary.paused {
                            "unreachable"
                        } else if db.spec.multi_az && p.standby.is_none() {
                            "without-standby"
                        } else {
                            "available"
                        };
                        (
                            state.to_owned(),
                            Some((p.primary.zone.clone(), p.primary.addr)),
                            p.standby.as_ref().map(|s| (s.zone.clone(), s.addr)),
                            p.failovers,
                        )
                    }
                };
                DatabaseStatus {
                    id: db.spec.id.clone(),
                    endpoint: db.spec.endpoint.clone(),
                    state,
                    primary,
                    standby,
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
            if let Some(h) = pair.rebuilding.take() {
                h.abort();
            }
            for server in std::iter::once(&mut pair.primary).chain(pair.standby.as_mut()) {
                server.kill().await;
            }
        }
    }
}

/// Starts an instance's servers in the background: the primary in RDS's zone for it, a
/// standby in the next zone of its subnet group when Multi-AZ.
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
            standby: None,
            failover_at: None,
            lost_zone: None,
            rebuilding: None,
            failovers: 0,
            synchronous: false,
        };
        if spec.multi_az {
            let zone = standby_zone(&spec, &primary_zone)
                .ok_or("a Multi-AZ instance needs a subnet in a second zone")?;
            let standby_addr = index(&zone)
                .and_then(|n| postgres::free_addr(n, spec.port))
                .ok_or_else(|| format!("no free address for port {} in {zone}", spec.port))?;
            let standby = pair
                .pg
                .standby(&zone, standby_addr, &dir.join("b"), addr)
                .await?;
            pair.standby = Some(standby);
            set_synchronous(&mut pair, true).await?;
        }
        Ok(pair)
    }))
}

/// The zone of the subnet group after `primary`'s, in order: where the standby runs.
fn standby_zone(spec: &DbSpec, primary: &str) -> Option<String> {
    let mut zones: Vec<&str> = spec.subnets.iter().map(|(_, z)| z.as_str()).collect();
    zones.sort_unstable();
    zones.dedup();
    zones
        .iter()
        .find(|z| **z > primary)
        .or_else(|| zones.iter().find(|z| **z != primary))
        .map(|z| (*z).to_owned())
}

/// Makes the primary wait (or not) for the standby on every commit.
async fn set_synchronous(pair: &mut Pair, on: bool) -> Result<(), String> {
    if pair.synchronous == on {
        return Ok(());
    }
    let names = if on { postgres::STANDBY_NAME } else { "" };
    pair.pg
        .sql(
            pair.primary.addr,
            "postgres",
            &format!("ALTER SYSTEM SET synchronous_standby_names = '{names}'"),
        )
        .await?;
    pair.pg
        .sql(pair.primary.addr, "postgres", "SELECT pg_reload_conf()")
        .await?;
    pair.synchronous = on;
    Ok(())
}

/// Follows one running database's faults: its zones' network ACLs and a failover under way.
async fn follow(spec: &DbSpec, pair: &mut Pair, world: &World, zones: &[String]) {
    let id = &spec.id;
    // A failover whose time has come: the standby is promoted and becomes the primary.
    if let Some(at) = pair.failover_at
        && Instant::now() >= at
    {
        if let Some(mut standby) = pair.standby.take() {
            standby.resume().await;
            match pair
                .pg
                .sql(standby.addr, "postgres", "SELECT pg_promote(true, 60)")
                .await
            {
                Ok(_) => {
                    let mut old = std::mem::replace(&mut pair.primary, standby);
                    old.kill().await;
                    pair.synchronous = true; // the promoted server inherited the setting
                    if let Err(e) = set_synchronous(pair, false).await {
                        log(format_args!("database {id}: {e}"));
                    }
                    pair.failovers += 1;
                    pair.failover_at = None;
                    log(format_args!(
                        "database {id}: failed over; the primary is now on {} ({})",
                        pair.primary.addr, pair.primary.zone
                    ));
                    pair.lost_zone = Some(old.zone.clone());
                }
                Err(e) => {
                    log(format_args!(
                        "database {id}: promotion failed (retrying): {e}"
                    ));
                    pair.standby = Some(standby);
                }
            }
        } else {
            pair.failover_at = None;
        }
    }
    // The primary's zone cut off: it stalls; back, it runs on (unless it failed over).
    if pair.failover_at.is_none() {
        if zone_reachable(spec, world, &pair.primary.zone) {
            pair.primary.resume().await;
        } else {
            pair.primary.pause().await;
        }
    }
    // The standby's zone cut off: the primary goes on without waiting for it.
    if let Some(standby) = pair.standby.as_mut() {
        let reachable = zone_reachable(spec, world, &standby.zone);
        if reachable {
            standby.resume().await;
        } else {
            standby.pause().await;
        }
        if !pair.primary.paused
            && pair.failover_at.is_none()
            && let Err(e) = set_synchronous(pair, reachable).await
        {
            log(format_args!("database {id}: {e}"));
        }
    }
    // The old primary's zone back: a new standby there.
    if pair.rebuilding.is_none()
        && let Some(zone) = pair.lost_zone.clone()
        && zone_reachable(spec, world, &zone)
    {
        pair.lost_zone = None;
        pair.rebuilding = Some(rebuild(spec, pair, zone, zones));
    }
    // A new standby ready: synchronous commit again.
    if let Some(h) = &pair.rebuilding
        && h.is_finished()
        && let Some(h) = pair.rebuilding.take()
    {
        match h.await {
            Ok(Ok(server)) => {
                log(format_args!(
                    "database {id}: new standby on {} ({})",
                    server.addr, server.zone
                ));
                pair.standby = Some(server);
                if let Err(e) = set_synchronous(pair, true).await {
                    log(format_args!("database {id}: {e}"));
                }
            }
            Ok(Err(e)) => log(format_args!("database {id}: new standby failed: {e}")),
            Err(e) => log(format_args!("database {id}: new standby failed: {e}")),
        }
    }
    if let Some(server) = pair.standby.as_mut()
        && server.exited()
    {
        log(format_args!("database {id}: the standby exited"));
        pair.standby = None;
        if let Err(e) = set_synchronous(pair, false).await {
            log(format_args!("database {id}: {e}"));
        }
    }
}

/// Builds a new standby in `zone` (the old primary's) from the current primary.
fn rebuild(
    spec: &DbSpec,
    pair: &Pair,
    zone: String,
    zones: &[String],
) -> JoinHandle<Result<Server, String>> {
    let pg = pair.pg.clone();
    let primary = pair.primary.addr;
    let port = spec.port;
    let index = zones.iter().position(|z| *z == zone);
    let dir = pair
        .pg
        .root
        .join(&spec.id)
        .join(format!("r{}", pair.failovers));
    tokio::spawn(async move {
        let addr = index
            .and_then(|n| postgres::free_addr(n, port))
            .ok_or_else(|| format!("no free address for port {port} in {zone}"))?;
        pg.standby(&zone, addr, &dir, primary).await
    })
}
