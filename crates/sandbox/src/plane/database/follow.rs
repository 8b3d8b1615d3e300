//! Following a running database's faults, step by step: its zones' network ACLs, a failover
//! under way (the standby that received the most takes over), standbys lost and built again,
//! and whether the primary waits for a standby on commit.

use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::postgres::{self, Postgres, Server};
use super::{DbSpec, Pair, World, log, zone_reachable};

/// Makes the primary wait (or not) for a standby on every commit: for any one of them (a
/// cluster's two: RDS acknowledges a commit once one reader has it).
pub(super) async fn set_synchronous(pair: &mut Pair, on: bool) -> Result<(), String> {
    if pair.synchronous == on {
        return Ok(());
    }
    let names = if on {
        format!("ANY 1 ({})", postgres::STANDBY_NAME)
    } else {
        String::new()
    };
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

/// Where a standby's WAL reception stands (`pg_last_wal_receive_lsn()` as a number); 0 when
/// it cannot say.
async fn received(pg: &Postgres, standby: &Server) -> u64 {
    let text = match pg
        .sql(standby.addr, "postgres", "SELECT pg_last_wal_receive_lsn()")
        .await
    {
        Ok(text) => text,
        Err(e) => {
            log(format_args!(
                "database standby {}: its received WAL position unknown ({e}); it is the last choice",
                standby.addr
            ));
            return 0;
        }
    };
    let Some((high, low)) = text.trim().split_once('/') else {
        return 0;
    };
    match (u64::from_str_radix(high, 16), u64::from_str_radix(low, 16)) {
        (Ok(h), Ok(l)) => (h << 32) | l,
        _ => 0,
    }
}

/// The standby a failover promotes: of those whose zone is reachable, the one that received
/// the most (with a commit acknowledged by either of a cluster's two, promoting the other
/// could lose it; RDS waits for the readers to apply what they received).
async fn successor(spec: &DbSpec, pair: &Pair, world: &World) -> Option<usize> {
    let mut best: Option<(usize, u64)> = None;
    for (n, standby) in pair.standbys.iter().enumerate() {
        if !zone_reachable(spec, world, &standby.zone) {
            continue;
        }
        let at = if pair.standbys.len() == 1 {
            0
        } else {
            received(&pair.pg, standby).await
        };
        if best.is_none_or(|(_, b)| at > b) {
            best = Some((n, at));
        }
    }
    best.map(|(n, _)| n)
}

/// Follows one running database's faults: its zones' network ACLs and a failover under way.
pub(super) async fn follow(spec: &DbSpec, pair: &mut Pair, world: &World, zones: &[String]) {
    let id = &spec.id;
    // A failover whose time has come: a standby is promoted and becomes the primary.
    if let Some(at) = pair.failover_at
        && Instant::now() >= at
    {
        if let Some(n) = successor(spec, pair, world).await {
            let mut standby = pair.standbys.remove(n);
            standby.resume().await;
            match pair
                .pg
                .sql(standby.addr, "postgres", "SELECT pg_promote(true, 60)")
                .await
            {
                Ok(_) => {
                    let mut old = std::mem::replace(&mut pair.primary, standby);
                    old.kill().await;
                    // The other standbys followed the old primary: each is built again from
                    // the new one, in its zone.
                    for mut other in pair.standbys.drain(..) {
                        other.kill().await;
                        pair.lost_zones.push(other.zone.clone());
                    }
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
                    pair.lost_zones.push(old.zone.clone());
                }
                Err(e) => {
                    log(format_args!(
                        "database {id}: promotion failed (retrying): {e}"
                    ));
                    pair.standbys.insert(n, standby);
                }
            }
        } else if pair.standbys.is_empty() {
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
    // A standby's zone cut off: the primary goes on without waiting for it.
    let mut reachable = false;
    for standby in &mut pair.standbys {
        if zone_reachable(spec, world, &standby.zone) {
            standby.resume().await;
            reachable = true;
        } else {
            standby.pause().await;
        }
    }
    if !pair.standbys.is_empty()
        && !pair.primary.paused
        && pair.failover_at.is_none()
        && let Err(e) = set_synchronous(pair, reachable).await
    {
        log(format_args!("database {id}: {e}"));
    }
    // A lost standby's zone back: a new standby there.
    let (back, away): (Vec<String>, Vec<String>) = std::mem::take(&mut pair.lost_zones)
        .into_iter()
        .partition(|zone| zone_reachable(spec, world, zone));
    pair.lost_zones = away;
    for zone in back {
        let handle = rebuild(spec, pair, zone, zones);
        pair.rebuilding.push(handle);
    }
    // New standbys ready: synchronous commit again.
    let (done, running): (Vec<_>, Vec<_>) = std::mem::take(&mut pair.rebuilding)
        .into_iter()
        .partition(JoinHandle::is_finished);
    pair.rebuilding = running;
    for h in done {
        match h.await {
            Ok(Ok(server)) => {
                log(format_args!(
                    "database {id}: new standby on {} ({})",
                    server.addr, server.zone
                ));
                pair.standbys.push(server);
                if let Err(e) = set_synchronous(pair, true).await {
                    log(format_args!("database {id}: {e}"));
                }
            }
            Ok(Err(e)) => log(format_args!("database {id}: new standby failed: {e}")),
            Err(e) => log(format_args!("database {id}: new standby failed: {e}")),
        }
    }
    let before = pair.standbys.len();
    pair.standbys.retain_mut(|server| !server.exited());
    if pair.standbys.len() < before {
        log(format_args!("database {id}: a standby exited"));
        if pair.standbys.is_empty()
            && let Err(e) = set_synchronous(pair, false).await
        {
            log(format_args!("database {id}: {e}"));
        }
    }
}

/// Builds a new standby in `zone` from the current primary.
fn rebuild(
    spec: &DbSpec,
    pair: &mut Pair,
    zone: String,
    zones: &[String],
) -> JoinHandle<Result<Server, String>> {
    let pg = pair.pg.clone();
    let primary = pair.primary.addr;
    let port = spec.port;
    let index = zones.iter().position(|z| *z == zone);
    pair.builds += 1;
    let dir = pair
        .pg
        .root
        .join(&spec.id)
        .join(format!("s{}", pair.builds));
    tokio::spawn(async move {
        let addr = index
            .and_then(|n| postgres::free_addr(n, port))
            .ok_or_else(|| format!("no free address for port {port} in {zone}"))?;
        pg.standby(&zone, addr, &dir, primary).await
    })
}
