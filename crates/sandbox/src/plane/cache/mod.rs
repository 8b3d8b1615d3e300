//! The caches' data plane: for every ElastiCache replication group moto holds (cluster mode
//! disabled), a real `redis-server` primary and its replicas, each in the zone ElastiCache
//! names for it, on that zone's loopback range; TLS-only with a certificate for the group's
//! endpoints when the group has encryption in transit (the tasks trust the plane's authority,
//! named by [`CA_FILE_VAR`]). The primary endpoint resolves through the plane's DNS server to
//! the primary, the reader endpoint to the replicas.
//!
//! Faults, as AWS has them:
//! - FIS `aws:elasticache:replicationgroup-interrupt-az-power` (the "AZ Availability: Power
//!   Interruption" scenario's Pause-ElastiCache): the group's nodes in the zone lose power at
//!   once (paused: connections to them stall). A primary there, with automatic failover, is
//!   replaced by a replica in another zone after a failover time drawn from
//!   [`aws_model::aws::elasticache`]'s span (on the plane's clock); the primary endpoint then
//!   names it. While the action runs no node is replaced in the zone; when it ends, each node
//!   that lost power is replaced by a new one there (a replica of the current primary; a
//!   primary that had no replica to fail over to comes back empty, its data lost);
//! - a network ACL of a node's subnet that denies the port cuts it off (paused until the ACL
//!   lets traffic in again). ElastiCache does not fail over for a customer's network ACL.
//!
//! Not modelled: the failover ElastiCache starts by itself on a node's hardware failure,
//! cluster mode (shards), AUTH tokens and users, Memcached, Valkey, snapshots.

mod read;
mod redis;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::PathBuf;

use aws_model::aws::elasticache;
use aws_model::{Clock, Rng};
use serde::Serialize;
use tokio::task::JoinHandle;
use tokio::time::Instant;

pub(crate) use read::groups as read_groups;
pub use redis::programs as redis_programs;
use redis::{Node, Redis};

use super::Clients;
use super::database::{free_addr, root_dir};
use super::dns::DnsServer;
use super::log;
use super::observe::World;

/// The tag through which the plane reports a failover's new primary (its member cluster id;
/// the launcher's patch sets the members' roles from it and drops it).
pub(crate) const PRIMARY_TAG: &str = "stackproof:sandbox-primary";

/// The variable that names the file of the certificate authority a task trusts for the
/// caches' TLS (on AWS, ElastiCache's certificates chain to Amazon's public roots, which a
/// task's system trusts already).
pub const CA_FILE_VAR: &str = "STACKPROOF_CA_FILE";

/// One replication group as the plane reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct GroupSpec {
    pub(crate) id: String,
    pub(crate) arn: String,
    pub(crate) endpoint: String,
    pub(crate) reader_endpoint: Option<String>,
    pub(crate) port: u16,
    pub(crate) automatic_failover: bool,
    pub(crate) transit_encryption: bool,
    /// (member cluster id, zone, whether primary).
    pub(crate) members: Vec<(String, String, bool)>,
    /// The cache subnet group's subnets.
    pub(crate) subnets: Vec<String>,
}

/// A cache as the plane runs it, for [`super::PlaneStatus`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CacheStatus {
    /// The replication group id.
    pub id: String,
    /// Its primary endpoint (the plane's DNS server answers for it).
    pub endpoint: String,
    /// `starting`, `available`, `unreachable` (the primary cut off or without power),
    /// `failing-over`, `without-replica` (a replica lost, until it is replaced) or
    /// `failed: why`.
    pub state: String,
    /// The primary: its zone and address.
    pub primary: Option<(String, SocketAddr)>,
    /// The replicas that run.
    pub replicas: Vec<(String, SocketAddr)>,
    /// Failovers done.
    pub failovers: u32,
}

/// What one group runs.
#[derive(Debug)]
struct Nodes {
    redis: Redis,
    primary: Node,
    replicas: Vec<Node>,
    /// Nodes without power, kept (paused) until their zone has power again.
    dark: Vec<Node>,
    /// Zones whose power is cut.
    cut: BTreeSet<String>,
    /// A failover under way: when a replica takes over.
    failover_at: Option<Instant>,
    /// Replacements being built.
    building: Vec<JoinHandle<Result<Node, String>>>,
    failovers: u32,
    /// Nodes made so far (each replacement gets a folder of its own).
    made: u32,
    dir: PathBuf,
}

#[derive(Debug)]
enum Phase {
    Starting(JoinHandle<Result<Nodes, String>>),
    Ready(Box<Nodes>),
    Failed(String),
}

#[derive(Debug)]
struct Group {
    spec: GroupSpec,
    phase: Phase,
}

/// Every cache of the plane.
#[derive(Debug)]
pub(crate) struct Caches {
    /// Where their folders and the authority are (one folder per plane).
    root: PathBuf,
    groups: BTreeMap<String, Group>,
    /// Power cuts (group ARN, zone) asked for and not yet applied.
    cuts: Vec<(String, String)>,
    /// Power back (group ARN, zone).
    restores: Vec<(String, String)>,
}

impl Default for Caches {
    fn default() -> Self {
        Caches {
            root: root_dir("cache"),
            groups: BTreeMap::new(),
            cuts: Vec::new(),
            restores: Vec::new(),
        }
    }
}

impl Drop for Caches {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

/// Whether the network ACLs of the subnet group's subnets in `zone` admit the port.
fn zone_reachable(spec: &GroupSpec, world: &World, zone: &str) -> bool {
    spec.subnets
        .iter()
        .filter_map(|id| world.subnets.get(id))
        .filter(|s| s.zone == zone)
        .all(|s| s.reachable(spec.port))
}

impl Caches {
    /// The authority file tasks are told to trust ([`CA_FILE_VAR`]); it exists once a group
    /// with encryption in transit runs.
    pub(crate) fn ca_file(&self) -> PathBuf {
        self.root.join("ca.pem")
    }

    /// The group `arn`'s nodes in `zone` lose power (FIS), until [`Caches::power_back`].
    pub(crate) fn cut_power(&mut self, arn: &str, zone: &str) {
        self.cuts.push((arn.to_owned(), zone.to_owned()));
    }

    /// The power cut of [`Caches::cut_power`] ends.
    pub(crate) fn power_back(&mut self, arn: &str, zone: &str) {
        self.restores.push((arn.to_owned(), zone.to_owned()));
    }

    /// Why FIS cannot interrupt the group `arn`'s power (it needs Multi-AZ), if it cannot.
    pub(crate) fn can_cut_power(&self, arn: &str) -> Result<(), String> {
        let Some(g) = self.groups.values().find(|g| g.spec.arn == arn) else {
            return Err(format!(
                "ReplicationGroupNotFound: no replication group {arn}"
            ));
        };
        if !g.spec.automatic_failover {
            return Err(format!(
                "InvalidReplicationGroupState: {} does not have Multi-AZ with automatic failover",
                g.spec.id
            ));
        }
        Ok(())
    }

    /// One step: starts the caches of new groups, stops those of deleted ones, and follows
    /// each one's faults. Returns the groups (ARN, member id) whose primary changed.
    pub(crate) async fn step(
        &mut self,
        world: &World,
        zones: &[String],
        clock: Clock,
        rng: &mut Rng,
        dns: &DnsServer,
    ) -> Vec<(String, String)> {
        let mut moved = Vec::new();
        let wanted: BTreeMap<&str, &GroupSpec> =
            world.caches.iter().map(|g| (g.id.as_str(), g)).collect();
        let gone: Vec<String> = self
            .groups
            .keys()
            .filter(|id| !wanted.contains_key(id.as_str()))
            .cloned()
            .collect();
        for id in gone {
            if let Some(g) = self.groups.remove(&id) {
                log(format_args!(
                    "cache {id}: replication group deleted; its nodes stop"
                ));
                stop(g).await;
            }
        }
        for (id, spec) in wanted {
            if !self.groups.contains_key(id) {
                let phase = start(spec, zones, self.root.clone());
                self.groups.insert(
                    id.to_owned(),
                    Group {
                        spec: spec.clone(),
                        phase,
                    },
                );
            }
        }
        let cuts = std::mem::take(&mut self.cuts);
        let restores = std::mem::take(&mut self.restores);
        for g in self.groups.values_mut() {
            if let Phase::Starting(handle) = &mut g.phase
                && handle.is_finished()
            {
                g.phase = match handle.await {
                    Ok(Ok(nodes)) => {
                        let replicas: Vec<String> = nodes
                            .replicas
                            .iter()
                            .map(|r| format!("{} ({})", r.addr, r.zone))
                            .collect();
                        log(format_args!(
                            "cache {}: redis primary on {} ({}), replicas {}{}",
                            g.spec.id,
                            nodes.primary.addr,
                            nodes.primary.zone,
                            if replicas.is_empty() {
                                "none".to_owned()
                            } else {
                                replicas.join(", ")
                            },
                            if nodes.redis.tls.is_some() {
                                ", TLS"
                            } else {
                                ""
                            }
                        ));
                        Phase::Ready(Box::new(nodes))
                    }
                    Ok(Err(why)) => {
                        log(format_args!("cache {}: {why}", g.spec.id));
                        Phase::Failed(why)
                    }
                    Err(e) => Phase::Failed(format!("start: {e}")),
                };
            }
            let Phase::Ready(nodes) = &mut g.phase else {
                continue;
            };
            let spec = &g.spec;
            for (_, zone) in cuts.iter().filter(|(arn, _)| *arn == spec.arn) {
                cut(spec, nodes, zone, clock, rng).await;
            }
            if let Some(member) = follow(spec, nodes, world, zones).await {
                moved.push((spec.arn.clone(), member));
            }
            for (_, zone) in restores.iter().filter(|(arn, _)| *arn == spec.arn) {
                restore(spec, nodes, zone, zones).await;
            }
            let ttl =
                u32::try_from(clock.wall(elasticache::ENDPOINT_TTL).as_secs().max(1)).unwrap_or(5);
            if let std::net::IpAddr::V4(ip) = nodes.primary.addr.ip() {
                dns.set(&spec.endpoint, vec![ip], ttl);
            }
            if let Some(reader) = &spec.reader_endpoint {
                let ips: Vec<std::net::Ipv4Addr> = nodes
                    .replicas
                    .iter()
                    .chain(nodes.replicas.is_empty().then_some(&nodes.primary))
                    .filter_map(|n| match n.addr.ip() {
                        std::net::IpAddr::V4(ip) => Some(ip),
                        std::net::IpAddr::V6(_) => None,
                    })
                    .collect();
                dns.set(reader, ips, ttl);
            }
        }
        moved
    }

    /// The caches' states.
    pub(crate) fn status(&self) -> Vec<CacheStatus> {
        self.groups
            .values()
            .map(|g| {
                let (state, primary, replicas, failovers) = match &g.phase {
                    Phase::Starting(_) => ("starting".to_owned(), None, Vec::new(), 0),
                    Phase::Failed(why) => (format!("failed: {why}"), None, Vec::new(), 0),
                    Phase::Ready(n) => {
                        let wanted = g.spec.members.len().saturating_sub(1);
                        let state = if n.failover_at.is_some() {
                            "failing-over"
                        } else if n.primary.paused {
                            "unreachable"
                        } else if n.replicas.len() < wanted {
                            "without-replica"
                        } else {
                            "available"
                        };
                        (
                            state.to_owned(),
                            Some((n.primary.zone.clone(), n.primary.addr)),
                            n.replicas
                                .iter()
                                .map(|r| (r.zone.clone(), r.addr))
                                .collect(),
                            n.failovers,
                        )
                    }
                };
                CacheStatus {
                    id: g.spec.id.clone(),
                    endpoint: g.spec.endpoint.clone(),
                    state,
                    primary,
                    replicas,
                    failovers,
                }
            })
            .collect()
    }

    /// Stops every node (their folders go as they drop, the plane's as this does).
    pub(crate) async fn shutdown(&mut self) {
        for (_, g) in std::mem::take(&mut self.groups) {
            stop(g).await;
        }
    }
}

/// Reports each group's new primary (ARN, member id) to ElastiCache through [`PRIMARY_TAG`];
/// a failed report is logged and the roles stay as they were.
pub(crate) async fn report_primaries(c: &Clients, moved: Vec<(String, String)>) {
    for (arn, member) in moved {
        let tag = aws_sdk_elasticache::types::Tag::builder()
            .key(PRIMARY_TAG)
            .value(&member)
            .build();
        if let Err(e) = c
            .elasticache
            .add_tags_to_resource()
            .resource_name(&arn)
            .tags(tag)
            .send()
            .await
        {
            log(format_args!(
                "cache {arn}: its new primary {member} not reported: {}",
                aws_smithy_types::error::display::DisplayErrorContext(&e)
            ));
        }
    }
}

/// Kills what a group runs.
async fn stop(g: Group) {
    match g.phase {
        Phase::Starting(handle) => handle.abort(),
        Phase::Failed(_) => {}
        Phase::Ready(mut n) => {
            for h in n.building.drain(..) {
                h.abort();
            }
            for node in std::iter::once(&mut n.primary)
                .chain(n.replicas.iter_mut())
                .chain(n.dark.iter_mut())
            {
                node.kill().await;
            }
        }
    }
}

/// A free address for the port in `zone`.
fn addr_in(zones: &[String], zone: &str, port: u16) -> Result<SocketAddr, String> {
    zones
        .iter()
        .position(|z| z == zone)
        .and_then(|n| free_addr(n, port))
        .ok_or_else(|| format!("no free address for port {port} in {zone}"))
}

/// Starts a group's nodes in the background: the primary in ElastiCache's zone for it, each
/// replica in its own.
fn start(spec: &GroupSpec, zones: &[String], root: PathBuf) -> Phase {
    let spec = spec.clone();
    let zones = zones.to_vec();
    Phase::Starting(tokio::spawn(async move {
        let (server, cli) = redis_programs()
            .ok_or("Redis is not installed (Debian's redis-server package: cargo xtask setup)")?;
        let dir = root.join(&spec.id);
        let tls = if spec.transit_encryption {
            let mut names = vec![spec.endpoint.as_str()];
            names.extend(spec.reader_endpoint.as_deref());
            Some(redis::certificate(&root, &dir.join("tls"), &names).await?)
        } else {
            None
        };
        let redis = Redis { server, cli, tls };
        let mut members = spec.members.clone();
        members.sort_by_key(|(_, _, primary)| !primary);
        let Some((first, first_zone, _)) = members.first().cloned() else {
            return Err("the group has no member".to_owned());
        };
        let addr = addr_in(&zones, &first_zone, spec.port)?;
        let primary = redis
            .start(&first, &first_zone, addr, &dir.join("n0"), None)
            .await?;
        let mut nodes = Nodes {
            redis,
            primary,
            replicas: Vec::new(),
            dark: Vec::new(),
            cut: BTreeSet::new(),
            failover_at: None,
            building: Vec::new(),
            failovers: 0,
            made: 1,
            dir,
        };
        for (member, zone, _) in members.iter().skip(1) {
            let addr = addr_in(&zones, zone, spec.port)?;
            let dir = nodes.dir.join(format!("n{}", nodes.made));
            nodes.made += 1;
            let replica = nodes
                .redis
                .start(member, zone, addr, &dir, Some(nodes.primary.addr))
                .await?;
            nodes.replicas.push(replica);
        }
        Ok(nodes)
    }))
}

/// The nodes in `zone` lose power; a primary there fails over when a replica elsewhere can
/// take over.
async fn cut(spec: &GroupSpec, n: &mut Nodes, zone: &str, clock: Clock, rng: &mut Rng) {
    if !n.cut.insert(zone.to_owned()) {
        return;
    }
    let (dark, lit): (Vec<Node>, Vec<Node>) = std::mem::take(&mut n.replicas)
        .into_iter()
        .partition(|r| r.zone == zone);
    n.replicas = lit;
    for mut node in dark {
        node.pause().await;
        n.dark.push(node);
    }
    if n.primary.zone == zone {
        n.primary.pause().await;
        if spec.automatic_failover && !n.replicas.is_empty() {
            let model = elasticache::FAILOVER_MIN
                + (elasticache::FAILOVER_MAX - elasticache::FAILOVER_MIN).mul_f64(rng.next_f64());
            n.failover_at = Some(Instant::now() + clock.wall(model));
            log(format_args!(
                "cache {}: {zone} without power; a replica takes over in {:.0} s (model)",
                spec.id,
                model.as_secs_f64()
            ));
            return;
        }
    }
    log(format_args!("cache {}: {zone} without power", spec.id));
}

/// Follows one running group: a failover whose time has come, network ACLs, replacements
/// built. Returns the new primary's member id when it changed.
async fn follow(
    spec: &GroupSpec,
    n: &mut Nodes,
    world: &World,
    zones: &[String],
) -> Option<String> {
    let id = &spec.id;
    let mut moved = None;
    if let Some(at) = n.failover_at
        && Instant::now() >= at
    {
        // The replica in the first zone of the group's (the least lag is not known here).
        if let Some(i) = (0..n.replicas.len())
            .min_by_key(|i| zones.iter().position(|z| *z == n.replicas[*i].zone))
        {
            let mut next = n.replicas.remove(i);
            next.resume().await;
            match n.redis.cli(next.addr, &["REPLICAOF", "NO", "ONE"]).await {
                Ok(_) => {
                    let old = std::mem::replace(&mut n.primary, next);
                    n.dark.push(old);
                    for r in &n.replicas {
                        let (ip, port) = (
                            n.primary.addr.ip().to_string(),
                            n.primary.addr.port().to_string(),
                        );
                        if let Err(e) = n.redis.cli(r.addr, &["REPLICAOF", &ip, &port]).await {
                            log(format_args!("cache {id}: {e}"));
                        }
                    }
                    n.failovers += 1;
                    n.failover_at = None;
                    moved = Some(n.primary.member.clone());
                    log(format_args!(
                        "cache {id}: failed over; the primary is now on {} ({})",
                        n.primary.addr, n.primary.zone
                    ));
                }
                Err(e) => {
                    log(format_args!("cache {id}: promotion failed (retrying): {e}"));
                    n.replicas.insert(i, next);
                }
            }
        } else {
            n.failover_at = None;
        }
    }
    // Cut off by a network ACL: paused until it lets traffic in again.
    let primary_dark = n.cut.contains(&n.primary.zone);
    for node in std::iter::once(&mut n.primary)
        .filter(|_| !primary_dark)
        .chain(n.replicas.iter_mut())
    {
        if zone_reachable(spec, world, &node.zone) {
            node.resume().await;
        } else {
            node.pause().await;
        }
    }
    let mut i = 0;
    while i < n.building.len() {
        if n.building[i].is_finished() {
            match n.building.remove(i).await {
                Ok(Ok(node)) => {
                    log(format_args!(
                        "cache {id}: new replica on {} ({})",
                        node.addr, node.zone
                    ));
                    n.replicas.push(node);
                }
                Ok(Err(e)) => log(format_args!("cache {id}: replacement failed: {e}")),
                Err(e) => log(format_args!("cache {id}: replacement failed: {e}")),
            }
        } else {
            i += 1;
        }
    }
    moved
}

/// Power back in `zone`: each node that lost it is replaced there (a replica of the current
/// primary; the primary itself, when no replica took over, comes back empty).
async fn restore(spec: &GroupSpec, n: &mut Nodes, zone: &str, zones: &[String]) {
    if !n.cut.remove(zone) {
        return;
    }
    let id = &spec.id;
    if n.primary.zone == zone && n.primary.paused && n.failover_at.take().is_some() {
        // Power back before a replica took over: the primary goes on.
        n.primary.resume().await;
    } else if n.primary.zone == zone && n.primary.paused {
        // No failover: the primary's node is replaced, empty.
        n.primary.kill().await;
        let dir = n.dir.join(format!("n{}", n.made));
        n.made += 1;
        match addr_in(zones, zone, spec.port) {
            Ok(addr) => match n
                .redis
                .start(&n.primary.member.clone(), zone, addr, &dir, None)
                .await
            {
                Ok(node) => {
                    n.primary = node;
                    let (ip, port) = (addr.ip().to_string(), addr.port().to_string());
                    for r in &n.replicas {
                        if let Err(e) = n.redis.cli(r.addr, &["REPLICAOF", &ip, &port]).await {
                            log(format_args!("cache {id}: {e}"));
                        }
                    }
                    log(format_args!(
                        "cache {id}: primary replaced on {addr} ({zone}), empty"
                    ));
                }
                Err(e) => log(format_args!("cache {id}: primary replacement failed: {e}")),
            },
            Err(e) => log(format_args!("cache {id}: {e}")),
        }
    }
    let (lost, kept): (Vec<Node>, Vec<Node>) = std::mem::take(&mut n.dark)
        .into_iter()
        .partition(|d| d.zone == zone);
    n.dark = kept;
    for mut old in lost {
        old.kill().await;
        let redis = n.redis.clone();
        let primary = n.primary.addr;
        let dir = n.dir.join(format!("n{}", n.made));
        n.made += 1;
        let (zone, member, port, zones) = (
            zone.to_owned(),
            old.member.clone(),
            spec.port,
            zones.to_vec(),
        );
        n.building.push(tokio::spawn(async move {
            let addr = addr_in(&zones, &zone, port)?;
            redis.start(&member, &zone, addr, &dir, Some(primary)).await
        }));
    }
    log(format_args!("cache {id}: power back in {zone}"));
}
