//! A stack with a database and a cache, deployed into the sandbox: a real PostgreSQL primary
//! (and, Multi-AZ, a synchronous standby in another zone), a real Redis primary and replica, the
//! sample app writing orders through the load balancer and reading them cache-aside, and the
//! zone fault of the proof: the primary's zone cut off through AWS FIS, with the database failed
//! over and the cache's nodes there without power, as AWS's "AZ Availability: Power
//! Interruption" scenario does.
//!
//! Multi-AZ: no acknowledged write is lost, writes resume after AWS's failover time (60-120 s for
//! a Multi-AZ DB instance, on the fast clock), the cache's replica takes over after ElastiCache's
//! (a few to about 30 s). The proof's az-failover judges the same with its writes and reads: it
//! passes Multi-AZ and fails Single-AZ, whose writes fail, and whose cache is away, for as long
//! as the zone is.

#![allow(clippy::unwrap_used)] // Tests fail loudly.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sandbox::{CacheStatus, Clock, DatabaseStatus};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// One at a time: each runs a data plane, two PostgreSQL servers and load on a 2-core machine.
static MACHINE: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn clock() -> Clock {
    Clock::fast()
}

fn stack_toml(name: &str, multi_az: bool) -> String {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    format!(
        r#"
name = "{name}"
[network]
nat = "none"
task-port = {port}
[database]
multi-az = {multi_az}
deletion-protection = false
skip-final-snapshot = true
[cache]
multi-az = {multi_az}
"#
    )
}

/// One HTTP/1.1 request to `addr` (a load balancer node) with `Connection: close`; the status.
async fn request(addr: SocketAddr, method: &str, path: &str, body: &str) -> Result<u16, String> {
    let exchange = async {
        let mut s = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| e.to_string())?;
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: app\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        s.write_all(head.as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        let mut answer = Vec::new();
        s.read_to_end(&mut answer)
            .await
            .map_err(|e| e.to_string())?;
        let text = String::from_utf8_lossy(&answer);
        text.split(' ')
            .nth(1)
            .and_then(|code| code.parse().ok())
            .ok_or_else(|| format!("no status in {text:?}"))
    };
    tokio::time::timeout(Duration::from_secs(20), exchange)
        .await
        .map_err(|_| "no answer within 20 s".to_owned())?
}

async fn post(addr: SocketAddr, id: &str) -> Result<u16, String> {
    let body = format!(r#"{{"id":"{id}","item":"book"}}"#);
    request(addr, "POST", "/orders", &body).await
}

/// What a writer saw: (when the answer came, id, status or error).
type Log = Arc<Mutex<Vec<(Instant, String, Result<u16, String>)>>>;

/// Writes an order every 100 ms (each on its own, so one that hangs holds up no other) until
/// `stop` or `limit` writes; bounded in count and time.
fn writer(
    node: SocketAddr,
    prefix: &str,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> (Log, tokio::task::JoinHandle<()>) {
    let log: Log = Arc::default();
    let l = log.clone();
    let prefix = prefix.to_owned();
    let handle = tokio::spawn(async move {
        let mut inflight = tokio::task::JoinSet::new();
        for k in 0..3000 {
            if stop.load(std::sync::atomic::Ordering::Relaxed) {
                break;
            }
            let id = format!("{prefix}-{k}");
            let l = l.clone();
            inflight.spawn(async move {
                let got = post(node, &id).await;
                l.lock().unwrap().push((Instant::now(), id, got));
            });
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        while inflight.join_next().await.is_some() {}
    });
    (log, handle)
}

async fn database(
    d: &stackproof_tests::Deployed,
    done: impl Fn(&DatabaseStatus) -> bool,
) -> DatabaseStatus {
    let status = d
        .plane
        .wait_for(Duration::from_secs(120), |s| s.databases.iter().any(&done))
        .await
        .unwrap_or_else(|| panic!("database: {:?}", d.plane.status().databases));
    status.databases.into_iter().find(|db| done(db)).unwrap()
}

async fn cache(d: &stackproof_tests::Deployed, done: impl Fn(&CacheStatus) -> bool) -> CacheStatus {
    let status = d
        .plane
        .wait_for(Duration::from_secs(120), |s| s.caches.iter().any(&done))
        .await
        .unwrap_or_else(|| panic!("cache: {:?}", d.plane.status().caches));
    status.caches.into_iter().find(|c| done(c)).unwrap()
}

/// One GET of order `id`: the status and the `x-cache` header.
async fn read_cached(addr: SocketAddr, id: &str) -> Result<(u16, String), String> {
    let exchange = async {
        let mut s = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| e.to_string())?;
        let head = format!("GET /orders/{id} HTTP/1.1\r\nHost: app\r\nConnection: close\r\n\r\n");
        s.write_all(head.as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        let mut answer = Vec::new();
        s.read_to_end(&mut answer)
            .await
            .map_err(|e| e.to_string())?;
        let text = String::from_utf8_lossy(&answer).to_string();
        let status = text
            .split(' ')
            .nth(1)
            .and_then(|code| code.parse().ok())
            .ok_or_else(|| format!("no status in {text:?}"))?;
        let cache = text
            .lines()
            .find_map(|l| l.strip_prefix("x-cache: "))
            .unwrap_or("none")
            .trim()
            .to_owned();
        Ok((status, cache))
    };
    tokio::time::timeout(Duration::from_secs(40), exchange)
        .await
        .map_err(|_| "no answer within 40 s".to_owned())?
}

/// Deploys, waits for the database, and returns the node in the zone that stays up, the
/// primary's zone and the fault role.
async fn ready(d: &stackproof_tests::Deployed, multi_az: bool) -> (SocketAddr, String) {
    let db = database(d, |db| {
        db.state == "available" && db.standbys.is_empty() != multi_az
    })
    .await;
    let (zone, _) = db.primary.clone().unwrap();
    let node = d
        .deployment
        .target
        .nodes
        .iter()
        .find(|(_, z)| *z != zone)
        .map(|(a, _)| *a)
        .unwrap();
    // The service reaches it: a first order, then the same id again (idempotent).
    let mut first = Err(String::new());
    for _ in 0..50 {
        first = post(node, "first").await;
        if first == Ok(201) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(first, Ok(201), "the first order");
    assert_eq!(post(node, "first").await, Ok(200), "written once");
    assert_eq!(request(node, "GET", "/orders/first", "").await, Ok(200));
    assert_eq!(request(node, "GET", "/orders/none", "").await, Ok(404));
    assert_eq!(post(node, "bad id!").await, Ok(400));
    (node, zone)
}

/// Every acknowledged order of `log` reads back; returns how many there were.
async fn read_back(node: SocketAddr, log: &Log) -> usize {
    let acked: Vec<String> = log
        .lock()
        .unwrap()
        .iter()
        .filter(|(_, _, r)| matches!(r, Ok(200 | 201)))
        .map(|(_, id, _)| id.clone())
        .collect();
    let mut lost = Vec::new();
    for id in &acked {
        let mut got = Err(String::new());
        for _ in 0..5 {
            got = request(node, "GET", &format!("/orders/{id}"), "").await;
            if matches!(got, Ok(200 | 404)) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        if got != Ok(200) {
            lost.push((id.clone(), got));
        }
    }
    assert!(lost.is_empty(), "acknowledged, then lost: {lost:?}");
    acked.len()
}

/// The first acknowledged write answered after `since`.
fn first_success_after(log: &Log, since: Instant) -> Option<Instant> {
    log.lock()
        .unwrap()
        .iter()
        .filter(|(t, _, r)| *t > since && matches!(r, Ok(200 | 201)))
        .map(|(t, _, _)| *t)
        .min()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_multi_az_database_fails_over_in_aws_s_time_and_loses_no_acknowledged_write() {
    let _machine = MACHINE.lock().await;
    let d = Box::pin(stackproof_tests::deploy(
        &stack_toml("dbmulti", true),
        clock(),
    ))
    .await
    .unwrap();
    let (node, zone) = ready(&d, true).await;
    let dep = &d.deployment;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (log, writing) = writer(node, "multi", stop.clone());
    tokio::time::sleep(Duration::from_secs(2)).await;

    let fault_at = Instant::now();
    dep.stack
        .start_zone_fault(
            &dep.cx,
            &dep.outputs.compute.fault_role_arn,
            &zone,
            Duration::from_secs(600),
            &[],
        )
        .await
        .unwrap();
    let failed_over = database(&d, |db| db.failovers == 1).await;
    let promoted = clock().model(fault_at.elapsed()).as_secs_f64();
    let (new_zone, _) = failed_over.primary.clone().unwrap();
    assert_ne!(new_zone, zone, "the standby in another zone took over");
    // RDS reports the new zone, so the next proof fails that one.
    let mut reported = None;
    for _ in 0..50 {
        let out = dep.stack.outputs(&dep.cx).await.unwrap().unwrap();
        reported = out.data.and_then(|db| db.primary_zone);
        if reported.as_deref() == Some(new_zone.as_str()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(reported.as_deref(), Some(new_zone.as_str()));
    // Writes resume on the promoted standby, within AWS's failover time.
    let deadline = Instant::now() + Duration::from_secs(30);
    let resumed = loop {
        if let Some(t) = first_success_after(&log, fault_at + clock().wall(Duration::from_secs(30)))
        {
            break t;
        }
        assert!(Instant::now() < deadline, "no write after the failover");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    dep.stack.restore_zone(&dep.cx, &zone).await.unwrap();
    // The old primary's zone is back: a new standby is built there.
    database(&d, |db| {
        db.state == "available" && db.standbys.iter().any(|(z, _)| *z == zone)
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    writing.await.unwrap();

    let model = clock().model(resumed - fault_at).as_secs_f64();
    let failed = log
        .lock()
        .unwrap()
        .iter()
        .filter(|(t, _, r)| *t > fault_at && !matches!(r, Ok(200 | 201)))
        .count();
    let acked = read_back(node, &log).await;
    eprintln!(
        "multi-AZ: {acked} writes acknowledged, {failed} failed during the fault; writes resumed {model:.0} s (model) after the fault"
    );
    assert!(failed > 0, "the fault made no write fail");
    // The plane's promotion: AWS's 60-120 s, and the plane's own work around it (FIS's start
    // of the experiment, `pg_promote`, a status poll), which is real time and so counts ten
    // times on the fast clock: 2 s of it allowed.
    let slack = clock().model(Duration::from_secs(2)).as_secs_f64();
    assert!(
        (60.0..=120.0 + slack).contains(&promoted),
        "promoted {promoted:.0} s (model) after the fault: AWS's Multi-AZ instance failover takes 60-120 s (allowed {slack:.0} s of the plane's own work)"
    );
    // The app then reconnects: the proof's 30 s allowance, plus (on the fast clock) a statement
    // that was waiting on the lost primary when it went, whose timeout is real time.
    let reconnect = 30.0
        + clock()
            .model(sample_app::orders::STATEMENT_TIMEOUT)
            .as_secs_f64();
    assert!(
        model - promoted <= reconnect,
        "writes resumed {model:.0} s (model) after the fault, {:.0} s after the promotion (allowed {reconnect:.0} s)",
        model - promoted
    );

    // RebootDBInstance with ForceFailover, called directly as an operator would: the primary
    // moves back to the rebuilt standby after AWS's failover time.
    let rds: aws_sdk_rds::Client = infra::client!(&d.deployment.cx, aws_sdk_rds);
    let id = d
        .deployment
        .outputs
        .data
        .as_ref()
        .unwrap()
        .instance_id
        .clone();
    let asked = Instant::now();
    rds.reboot_db_instance()
        .db_instance_identifier(&id)
        .force_failover(true)
        .send()
        .await
        .unwrap();
    let again = database(&d, |db| db.failovers == 2 && db.state == "available").await;
    let took = clock().model(asked.elapsed()).as_secs_f64();
    assert_eq!(
        again.primary.map(|(z, _)| z),
        Some(zone),
        "back in the rebuilt standby's zone"
    );
    assert!(
        (60.0..=120.0 + 2.0 * slack).contains(&took),
        "the reboot's failover took {took:.0} s (model): AWS's 60-120 s"
    );
    d.plane.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_multi_az_cache_fails_over_in_aws_s_time_and_serves_reads_meanwhile() {
    let _machine = MACHINE.lock().await;
    let d = Box::pin(stackproof_tests::deploy(
        &stack_toml("cachemulti", true),
        clock(),
    ))
    .await
    .unwrap();
    let (node, zone) = ready(&d, true).await;
    let dep = &d.deployment;
    let c = cache(&d, |c| c.state == "available" && c.replicas.len() == 1).await;
    assert_eq!(
        c.primary.as_ref().map(|(z, _)| z.as_str()),
        Some(zone.as_str())
    );
    // Written through on the commit, then read from the cache, over TLS.
    assert_eq!(
        read_cached(node, "first").await,
        Ok((200, "hit".to_owned()))
    );

    let fault_at = Instant::now();
    dep.stack
        .start_zone_fault(
            &dep.cx,
            &dep.outputs.compute.fault_role_arn,
            &zone,
            Duration::from_secs(600),
            &[],
        )
        .await
        .unwrap();
    let failed_over = cache(&d, |c| c.failovers == 1).await;
    let promoted = clock().model(fault_at.elapsed()).as_secs_f64();
    let (new_zone, _) = failed_over.primary.clone().unwrap();
    assert_ne!(new_zone, zone, "the replica in another zone took over");
    // The order written before the fault is read from the promoted replica, while the database
    // is still failing over (60-120 s): the cache answers without it.
    let mut got = Err(String::new());
    for _ in 0..100 {
        got = read_cached(node, "first").await;
        if got == Ok((200, "hit".to_owned())) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        got,
        Ok((200, "hit".to_owned())),
        "read from the promoted replica"
    );
    let served = clock().model(fault_at.elapsed()).as_secs_f64();
    // ElastiCache reports the new primary, so the stack's outputs name its zone.
    let out = dep.stack.outputs(&dep.cx).await.unwrap().unwrap();
    assert_eq!(
        out.cache.and_then(|c| c.primary_zone).as_deref(),
        Some(new_zone.as_str())
    );
    dep.stack.restore_zone(&dep.cx, &zone).await.unwrap();
    // Power back: the lost node is replaced in its zone, as a replica of the new primary.
    cache(&d, |c| {
        c.state == "available" && c.replicas.iter().any(|(z, _)| *z == zone)
    })
    .await;
    eprintln!(
        "cache: promoted {promoted:.0} s (model) after the fault, reads served by the cache again at {served:.0} s"
    );
    assert!(
        (5.0..=45.0).contains(&promoted),
        "promoted {promoted:.0} s (model) after the fault: ElastiCache takes a few to about 30 s"
    );
    d.plane.stop().await;
}

/// The proof's az-failover with writes: it fails the primary's zone, writes orders beside the
/// reads, and reads every acknowledged one back.
async fn prove(name: &str, multi_az: bool) -> proof::ProofReport {
    let d = Box::pin(stackproof_tests::deploy(
        &stack_toml(name, multi_az),
        clock(),
    ))
    .await
    .unwrap();
    ready(&d, multi_az).await;
    let report = prove_deployed(&d).await;
    d.plane.stop().await;
    report
}

/// The proof's az-failover of a deployed stack.
async fn prove_deployed(d: &stackproof_tests::Deployed) -> proof::ProofReport {
    let config = proof::ProveConfig {
        rps: 40.0,
        scenarios: vec![proof::Scenario::AzFailover],
        slo: proof::SloSpec {
            p99_ms: 1500.0,
            max_error_rate: 0.02,
        },
        before_s: 5.0,
        settle_s: 5.0,
        after_s: 5.0,
        error_budget_s: 400.0,
        connections: Some(64),
        clock: clock(),
        ..proof::ProveConfig::default()
    };
    let progress: proof::ProgressFn = Arc::new(|line: &str| eprintln!("  {line}"));
    let report = Box::pin(proof::prove(
        d.deployment.clone(),
        config,
        progress,
        std::future::pending(),
    ))
    .await
    .unwrap();
    eprintln!("{}", report.table());
    report
}

fn check<'a>(r: &'a proof::ProofReport, name: &str) -> &'a proof::Check {
    let s = r.scenario("az-failover").unwrap();
    s.checks
        .iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no check {name}: {}", r.table()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_proof_passes_a_multi_az_database_and_fails_a_single_az_one() {
    let _machine = MACHINE.lock().await;
    let multi = prove("proofdbmulti", true).await;
    for name in [
        "no acknowledged write lost",
        "database failover",
        "write error budget",
        "cache failover",
    ] {
        assert!(check(&multi, name).passed, "{name}: {}", multi.table());
    }
    let failover = multi.scenario("az-failover").unwrap();
    let s = failover.figure("db_failover_s").unwrap();
    assert!((60.0..=150.0).contains(&s), "{}", multi.table());
    assert!(failover.figure("writes_acknowledged").unwrap() > 0.0);
    assert_eq!(failover.figure("writes_lost"), Some(0.0));

    // Single-AZ: the same verdict fails, and says why; what was acknowledged is still there.
    let single = prove("proofdbsingle", false).await;
    let failover = check(&single, "database failover");
    assert!(!failover.passed, "{}", single.table());
    assert!(failover.detail.contains("Single-AZ"), "{}", single.table());
    assert!(
        check(&single, "no acknowledged write lost").passed,
        "{}",
        single.table()
    );
    // Its cache, without Multi-AZ, is away for as long as the zone is.
    let cached = check(&single, "cache failover");
    assert!(
        !cached.passed && cached.detail.contains("not Multi-AZ"),
        "{}",
        single.table()
    );
    assert!(!single.passed);
}

/// Where RDS (moto) says the cluster's writer is.
async fn writer_zone(d: &stackproof_tests::Deployed, cluster: &str) -> String {
    let rds: aws_sdk_rds::Client = infra::client!(&d.deployment.cx, aws_sdk_rds);
    let out = rds
        .describe_db_clusters()
        .db_cluster_identifier(cluster)
        .send()
        .await
        .unwrap();
    let writer = out.db_clusters()[0]
        .db_cluster_members()
        .iter()
        .find(|m| m.is_cluster_writer() == Some(true))
        .and_then(|m| m.db_instance_identifier())
        .unwrap()
        .to_owned();
    let i = rds
        .describe_db_instances()
        .db_instance_identifier(writer)
        .send()
        .await
        .unwrap();
    i.db_instances()[0].availability_zone().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_multi_az_db_cluster_runs_a_writer_and_two_readers_and_passes_within_its_shorter_failover()
 {
    let _machine = MACHINE.lock().await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let toml = format!(
        r#"
name = "proofdbcluster"
[network]
nat = "none"
az-count = 3
task-port = {port}
[database]
deployment = "cluster"
instance-class = "db.m6gd.large"
deletion-protection = false
skip-final-snapshot = true
"#
    );
    let d = Box::pin(stackproof_tests::deploy(&toml, clock()))
        .await
        .unwrap();
    // A writer and two readable standbys, one in each zone.
    let db = database(&d, |db| db.state == "available" && db.standbys.len() == 2).await;
    assert_eq!(db.deployment, "cluster");
    let (zone, _) = db.primary.clone().unwrap();
    let mut zones: Vec<&str> = db.standbys.iter().map(|(z, _)| z.as_str()).collect();
    zones.push(&zone);
    zones.sort_unstable();
    zones.dedup();
    assert_eq!(zones.len(), 3, "{db:?}");
    assert_eq!(writer_zone(&d, "proofdbcluster-db").await, zone);
    ready(&d, true).await;

    let report = prove_deployed(&d).await;
    for name in [
        "no acknowledged write lost",
        "database failover",
        "write error budget",
    ] {
        assert!(check(&report, name).passed, "{name}: {}", report.table());
    }
    let failover = check(&report, "database failover");
    assert!(
        failover
            .detail
            .contains("Multi-AZ DB cluster over in under 35 s"),
        "{}",
        report.table()
    );
    let s = report
        .scenario("az-failover")
        .unwrap()
        .figure("db_failover_s")
        .unwrap();
    // AWS's under 35 s, the sample app's reconnect and the writes' interval; well under a DB
    // instance's 60-120 s.
    assert!(s < 70.0, "{}", report.table());
    // RDS names the new writer, in another zone; the old writer's zone has a standby again.
    let moved = writer_zone(&d, "proofdbcluster-db").await;
    assert_ne!(moved, zone);
    let db = database(&d, |db| {
        db.failovers == 1 && db.standbys.len() == 2 && db.standbys.iter().any(|(z, _)| *z == zone)
    })
    .await;
    assert_eq!(db.primary.map(|(z, _)| z), Some(moved));
    d.plane.stop().await;
}
