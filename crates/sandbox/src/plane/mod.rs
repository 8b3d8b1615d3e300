//! The sandbox data plane: a reconciler that reads the desired state from the control plane
//! (moto) with the AWS SDK and makes it real on this machine, on AWS's clock or a faster one
//! ([`PlaneOptions::clock`]): every timing it imitates comes from `aws_model`, scaled.
//!
//! Every [`PlaneOptions::interval`] it reads the ECS services, task definitions, subnets (with
//! their zones and network ACLs), target groups, load balancers and listeners, Application
//! Auto Scaling targets and policies, and the active zonal shifts; between reads it ticks at the
//! model's pace (at most every model second). Then:
//! - keeps each service's `desiredCount` tasks, balanced across the service's zones: each is
//!   recorded with RunTask, launches (PROVISIONING, PENDING, RUNNING, reported with
//!   SubmitTaskStateChange) and runs as a process (the sample-app for images whose repository
//!   ends in `sample-app`); replaced when it exits or is stopped through the API, replaced
//!   first when it fails its load balancer health checks, rolled on a new task definition
//!   within the deployment's maximum/minimum percent;
//! - registers the running tasks in their target groups and drives one local ALB per HTTP
//!   listener with one node per zone of the load balancer (an address in the DNS answer the
//!   plane's DNS server gives for its name); tasks of subnets whose network ACL denies
//!   inbound TCP are unreachable, a node whose subnet denies it drops connection attempts and
//!   leaves the DNS answer once Route 53 would notice, and a zonal shift takes the zone out of
//!   DNS and routing at once;
//! - feeds target tracking (CloudWatch datapoints, alarms, cooldowns) and updates the desired
//!   count as Application Auto Scaling would;
//! - publishes the ALB and ECS CloudWatch metrics and the access logs.
//!
//! Errors of an iteration are logged and the next iteration retries; nothing panics.

mod balancer;
mod cache;
mod database;
mod dns;
mod fis;
mod jobs;
mod nacl;
mod observe;
mod report;
mod scaling;
mod secrets;
mod service;
mod tasks;

use crate::alb;

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use aws_config::SdkConfig;
use aws_model::aws::{cloudwatch, ecs};
use aws_model::{Clock, LaunchLatency, Rng};
use aws_sdk_ecs::types::{AwsVpcConfiguration, LaunchType, NetworkConfiguration};
use aws_sdk_elasticloadbalancingv2::types::TargetDescription;
use aws_smithy_runtime_api::client::interceptors::{Intercept, SharedInterceptor};
use aws_smithy_types::error::display::DisplayErrorContext;
use serde::Serialize;
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;

use crate::Error;
pub use cache::{CA_FILE_VAR, CacheStatus, redis_programs};
pub use database::{DatabaseStatus, bin_dir as postgres_bin_dir};
pub use jobs::JobStatus;
use observe::{ListenerSpec, ServiceSpec, SubnetSpec, TargetGroupSpec, TaskDefSpec, World};
pub use tasks::DNS_SERVER_VAR;
use tasks::{Metadata, TaskProc};

impl World {
    /// The service a task belongs to.
    fn service_of(&self, t: &TaskProc) -> Option<&ServiceSpec> {
        self.services
            .iter()
            .find(|s| s.cluster == t.cluster && s.name == t.service)
    }
}

/// How the data plane runs.
#[derive(Debug, Clone)]
pub struct PlaneOptions {
    /// The sample-app binary run for every task whose image repository ends in `sample-app`.
    pub sample_app: PathBuf,
    /// Time between reconciliations. Default 1 s.
    pub interval: Duration,
    /// Where to write `sandbox-endpoints.json` and the task logs (`tasks/{task-id}.log`).
    /// Default: none (nothing written).
    pub state_dir: Option<PathBuf>,
    /// Interceptors added to every SDK client (e.g. [`crate::MotoAccount`]). Default: none.
    pub interceptors: Vec<SharedInterceptor>,
    /// The clock the model runs on: AWS's (the default), or a faster one for tests, which
    /// divides every duration of the model (launches, health checks, metric periods, cooldowns,
    /// DNS TTL) by its factor.
    pub clock: Clock,
    /// How long a Fargate task takes from creation to RUNNING (model time). Default AWS's
    /// typical 30-60 s.
    pub launch: LaunchLatency,
    /// Seeds the launch latencies and the phases of health checks and Route 53's node checks:
    /// the same seed, the same draws. Default 1.
    pub seed: u64,
    /// The program run for every task whose image repository ends in `loadgen` (the
    /// stackproof command line, whose `loadgen` command the task's command names): a load
    /// generator of a distributed run. Default none: such tasks fail to start.
    pub loadgen: Option<PathBuf>,
    /// Variables added to every standalone task's environment: what the sandbox's tasks need
    /// to reach the sandbox's AWS API (`AWS_ENDPOINT_URL`, credentials), as a task role and
    /// the regional endpoints give them on AWS. Default none.
    pub task_env: Vec<(String, String)>,
}

impl PlaneOptions {
    /// Options with the defaults and the given sample-app binary.
    pub fn new(sample_app: impl Into<PathBuf>) -> Self {
        Self {
            sample_app: sample_app.into(),
            interval: Duration::from_secs(1),
            state_dir: None,
            interceptors: Vec::new(),
            clock: Clock::AWS,
            launch: LaunchLatency::default(),
            seed: 1,
            loadgen: None,
            task_env: Vec::new(),
        }
    }

    /// The same options on `clock`.
    pub fn clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// Adds an interceptor to every SDK client.
    pub fn interceptor(mut self, interceptor: impl Intercept + 'static) -> Self {
        self.interceptors.push(SharedInterceptor::new(interceptor));
        self
    }
}

/// Where a load balancer listener is served locally.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct AlbEndpoint {
    /// The load balancer's name.
    pub name: String,
    /// Its DNS name (as moto reports it); the plane's DNS server answers for it.
    pub dns_name: String,
    /// The listener port.
    pub port: u16,
    /// The local address of the first node.
    pub local_addr: SocketAddr,
    /// Every node: one per zone of the load balancer, all on one port.
    #[serde(default)]
    pub nodes: Vec<NodeEndpoint>,
}

/// One node of a load balancer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct NodeEndpoint {
    /// Its zone.
    pub zone: String,
    /// Where it listens.
    pub addr: SocketAddr,
    /// Whether clients reach it (its subnet's network ACL admits them).
    pub reachable: bool,
    /// Whether its address is in the DNS answer.
    pub in_dns: bool,
}

/// A task's health in its target group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum TaskHealth {
    /// Not in any load-balanced target group.
    NoTargetGroup,
    /// Registered, not yet checked enough.
    Initial,
    /// Passing health checks.
    Healthy,
    /// Failing health checks.
    Unhealthy,
    /// Deregistered, draining.
    Draining,
}

/// One running task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TaskStatus {
    /// The task ARN in ECS.
    pub arn: String,
    /// Its cluster.
    pub cluster: String,
    /// Its service.
    pub service: String,
    /// Its task definition ARN.
    pub task_definition: String,
    /// Its zone.
    pub zone: String,
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its process id.
    pub pid: u32,
    /// Its health in the target group.
    pub health: TaskHealth,
    /// Whether the network (the subnet's network ACL) lets the load balancer reach it.
    pub reachable: bool,
}

/// One ECS service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ServiceStatus {
    /// Its cluster.
    pub cluster: String,
    /// Its name.
    pub name: String,
    /// Its desired count in ECS.
    pub desired: i32,
    /// Task processes running.
    pub running: usize,
    /// Of those, healthy (or running, without a target group) and on the current task definition.
    pub healthy: usize,
    /// Tasks launching (PROVISIONING or PENDING).
    #[serde(default)]
    pub launching: usize,
    /// Tasks that failed to start (e.g. an image the sandbox cannot run).
    pub failed_starts: u32,
}

/// A snapshot of the data plane after an iteration.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct PlaneStatus {
    /// The clock the model runs on.
    pub clock: Clock,
    /// The DNS server that answers for the load balancers' names.
    pub dns: Option<SocketAddr>,
    /// Reads of the control plane done.
    pub iterations: u64,
    /// The services.
    pub services: Vec<ServiceStatus>,
    /// The running tasks (with a process).
    pub tasks: Vec<TaskStatus>,
    /// The standalone tasks (RunTask outside a service) launching or running.
    pub jobs: Vec<JobStatus>,
    /// The local ALB listeners.
    pub endpoints: Vec<AlbEndpoint>,
    /// The databases (a real PostgreSQL per RDS DB instance).
    pub databases: Vec<DatabaseStatus>,
    /// The caches (real Redis nodes per ElastiCache replication group).
    #[serde(default)]
    pub caches: Vec<CacheStatus>,
    /// Scaling activities so far (the last 100), newest last.
    pub scaling_activities: Vec<String>,
    /// The error of the last iteration, if it failed.
    pub last_error: Option<String>,
}

impl PlaneStatus {
    /// Whether every service runs its desired count of tasks and all of them are healthy.
    pub fn converged(&self) -> bool {
        self.iterations > 0
            && self
                .services
                .iter()
                .all(|s| usize::try_from(s.desired).is_ok_and(|d| s.running == d && s.healthy == d))
    }
}

/// The running data plane. Stop it with [`DataPlane::stop`] (dropping it stops the loop too,
/// and the task processes are killed when their handles drop).
#[derive(Debug)]
pub struct DataPlane {
    status: watch::Receiver<PlaneStatus>,
    stop: watch::Sender<bool>,
    handle: JoinHandle<()>,
}

impl DataPlane {
    /// Starts the data plane against the control plane `sdk` points at.
    pub async fn start(sdk: SdkConfig, options: PlaneOptions) -> Result<DataPlane, Error> {
        let metadata = Metadata::start().await?;
        let dns = dns::DnsServer::start().await?;
        let clients = Clients::new(&sdk, &options.interceptors);
        let (status_tx, status) = watch::channel(PlaneStatus {
            clock: options.clock,
            dns: Some(dns.addr()),
            ..PlaneStatus::default()
        });
        let (stop, stopped) = watch::channel(false);
        let region = sdk
            .region()
            .map_or_else(|| "us-east-1".to_owned(), ToString::to_string);
        let reconciler = Reconciler {
            c: clients,
            region,
            rng: Rng::new(options.seed),
            opts: options,
            metadata,
            dns,
            zones: Vec::new(),
            zone_ids: HashMap::new(),
            task_defs: HashMap::new(),
            tasks: BTreeMap::new(),
            jobs: BTreeMap::new(),
            jobs_done: BTreeSet::new(),
            stopping: JoinSet::new(),
            deregistering: Vec::new(),
            registered: HashMap::new(),
            proxies: BTreeMap::new(),
            nodes: HashMap::new(),
            failures: HashMap::new(),
            scaling: HashMap::new(),
            pending_desired: HashMap::new(),
            report: report::Report::default(),
            last_publish: Instant::now(),
            last_tick: Instant::now(),
            last_read: None,
            activities: Vec::new(),
            written_endpoints: None,
            status_tx,
            iterations: 0,
            world: World::default(),
            unrecorded: 0,
            fis: fis::Executor::default(),
            databases: database::Databases::default(),
            caches: cache::Caches::default(),
        };
        let handle = tokio::spawn(reconciler.run(stopped));
        Ok(DataPlane {
            status,
            stop,
            handle,
        })
    }

    /// The local ALB listeners.
    pub fn endpoints(&self) -> Vec<AlbEndpoint> {
        self.status.borrow().endpoints.clone()
    }

    /// The latest status.
    pub fn status(&self) -> PlaneStatus {
        self.status.borrow().clone()
    }

    /// A receiver of every new status.
    pub fn watch(&self) -> watch::Receiver<PlaneStatus> {
        self.status.clone()
    }

    /// Waits until `done` holds for a status (or `timeout` passes: `None`).
    pub async fn wait_for(
        &self,
        timeout: Duration,
        mut done: impl FnMut(&PlaneStatus) -> bool,
    ) -> Option<PlaneStatus> {
        let mut rx = self.status.clone();
        let wait = async {
            loop {
                {
                    let s = rx.borrow_and_update();
                    if done(&s) {
                        return Some(s.clone());
                    }
                }
                if rx.changed().await.is_err() {
                    return None;
                }
            }
        };
        tokio::time::timeout(timeout, wait).await.ok().flatten()
    }

    /// Waits until every service runs its desired count of healthy tasks.
    pub async fn settled(&self, timeout: Duration) -> Option<PlaneStatus> {
        self.wait_for(timeout, PlaneStatus::converged).await
    }

    /// The DNS server that answers for the load balancers' names.
    pub fn dns(&self) -> Option<SocketAddr> {
        self.status.borrow().dns
    }

    /// Stops the loop, every task process it started (by PID: SIGTERM, SIGKILL after 5 s;
    /// waited for) and the local listeners.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.handle.await;
    }
}

/// The SDK clients.
#[derive(Debug, Clone)]
struct Clients {
    ecs: aws_sdk_ecs::Client,
    elb: aws_sdk_elasticloadbalancingv2::Client,
    ec2: aws_sdk_ec2::Client,
    aas: aws_sdk_applicationautoscaling::Client,
    cw: aws_sdk_cloudwatch::Client,
    s3: aws_sdk_s3::Client,
    arc: aws_sdk_arczonalshift::Client,
    sm: aws_sdk_secretsmanager::Client,
    ssm: aws_sdk_ssm::Client,
    fis: aws_sdk_fis::Client,
    rds: aws_sdk_rds::Client,
    elasticache: aws_sdk_elasticache::Client,
}

macro_rules! client {
    ($sdk:expr, $interceptors:expr, $krate:ident $(, $extra:ident)?) => {{
        let mut b = $krate::config::Builder::from($sdk);
        for i in $interceptors {
            b.push_interceptor(i.clone());
        }
        $( b = b.$extra(true); )?
        $krate::Client::from_conf(b.build())
    }};
}

impl Clients {
    fn new(sdk: &SdkConfig, interceptors: &[SharedInterceptor]) -> Self {
        Clients {
            ecs: client!(sdk, interceptors, aws_sdk_ecs),
            elb: client!(sdk, interceptors, aws_sdk_elasticloadbalancingv2),
            ec2: client!(sdk, interceptors, aws_sdk_ec2),
            aas: client!(sdk, interceptors, aws_sdk_applicationautoscaling),
            cw: client!(sdk, interceptors, aws_sdk_cloudwatch),
            s3: client!(sdk, interceptors, aws_sdk_s3, force_path_style),
            arc: client!(sdk, interceptors, aws_sdk_arczonalshift),
            sm: client!(sdk, interceptors, aws_sdk_secretsmanager),
            ssm: client!(sdk, interceptors, aws_sdk_ssm),
            fis: client!(sdk, interceptors, aws_sdk_fis),
            rds: client!(sdk, interceptors, aws_sdk_rds),
            elasticache: client!(sdk, interceptors, aws_sdk_elasticache),
        }
    }
}

#[derive(Debug)]
struct ProxyEntry {
    spec: ListenerSpec,
    proxy: alb::Proxy,
    pushed: Option<(observe::HealthKey, Duration, Vec<alb::Target>)>,
}

/// A load balancer node's standing with Route 53: reachable or not since when, and whether its
/// address is in the DNS answer.
#[derive(Debug, Clone, Copy)]
struct NodeDns {
    reachable: bool,
    since: Instant,
    in_dns: bool,
}

/// Most task starts per service per iteration.
const MAX_STARTS: usize = 10;

/// A task process that exits this soon after its start counts as a failed start: the service
/// backs off (ECS's throttle) before starting the next one, so a crash loop stays cheap.
const EARLY_EXIT: Duration = Duration::from_secs(5);

/// How far back a task's CPU use is measured (wall time).
const CPU_WINDOW: Duration = Duration::from_secs(2);

struct Reconciler {
    c: Clients,
    region: String,
    opts: PlaneOptions,
    /// Draws the launch latencies.
    rng: Rng,
    metadata: Metadata,
    dns: dns::DnsServer,
    /// All zone names of the region, sorted: zone n uses 127.0.{n+1}.0/24.
    zones: Vec<String>,
    /// Zone id -> zone name.
    zone_ids: HashMap<String, String>,
    task_defs: HashMap<String, TaskDefSpec>,
    tasks: BTreeMap<String, TaskProc>,
    /// Standalone tasks by ARN.
    jobs: BTreeMap<String, jobs::Job>,
    /// Standalone tasks that ended (exited, stopped, failed to start): never started again.
    jobs_done: BTreeSet<String>,
    stopping: JoinSet<()>,
    /// Processes of tasks stopped in this iteration, stopped once their targets drain.
    deregistering: Vec<tasks::Process>,
    /// Target group ARN -> task ARN -> registered address.
    registered: HashMap<String, HashMap<String, SocketAddr>>,
    proxies: BTreeMap<String, ProxyEntry>,
    /// (load balancer ARN, zone) -> its node's standing with Route 53.
    nodes: HashMap<(String, String), NodeDns>,
    /// Service key -> (failed starts, no new start before).
    failures: HashMap<String, (u32, Instant)>,
    /// Service key -> target tracking.
    scaling: HashMap<String, scaling::ServiceScaling>,
    /// Desired counts set by target tracking since the last read.
    pending_desired: HashMap<String, i32>,
    report: report::Report,
    last_publish: Instant,
    last_tick: Instant,
    last_read: Option<Instant>,
    activities: Vec<String>,
    written_endpoints: Option<Vec<AlbEndpoint>>,
    status_tx: watch::Sender<PlaneStatus>,
    iterations: u64,
    /// The last read of the control plane.
    world: World,
    /// Tasks run without an ECS record so far.
    unrecorded: u64,
    /// Runs the region's FIS experiments.
    fis: fis::Executor,
    /// The databases of the region's RDS DB instances.
    databases: database::Databases,
    /// The caches of the region's ElastiCache replication groups.
    caches: cache::Caches,
}

fn log(msg: impl std::fmt::Display) {
    eprintln!("sandbox plane: {msg}");
}

impl Reconciler {
    /// Time between ticks: one model second, at most the read interval, at least 50 ms.
    fn tick(&self) -> Duration {
        self.opts.clock.wall(Duration::from_secs(1)).clamp(
            Duration::from_millis(50),
            self.opts.interval.max(Duration::from_millis(50)),
        )
    }

    async fn run(mut self, mut stopped: watch::Receiver<bool>) {
        let tick = self.tick();
        loop {
            let read = self
                .last_read
                .is_none_or(|t| t.elapsed() + tick / 2 >= self.opts.interval);
            let result = self.iterate(read).await;
            if read {
                self.iterations += 1;
                self.last_read = Some(Instant::now());
            }
            let last_error = result.err().map(|e| {
                log(format_args!("iteration failed (retrying): {e}"));
                e.to_string()
            });
            self.publish_status(last_error);
            tokio::select! {
                _ = tokio::time::sleep(tick) => {}
                _ = stopped.changed() => break,
            }
            if *stopped.borrow() {
                break;
            }
        }
        self.shutdown().await;
    }

    async fn shutdown(mut self) {
        self.release_stopped();
        let tasks = std::mem::take(&mut self.tasks);
        for (_, t) in tasks {
            if let Some(p) = t.process {
                self.stopping.spawn(tasks::stop_child(p.child, p.pid));
            }
        }
        for (_, j) in std::mem::take(&mut self.jobs) {
            if let Some(p) = j.into_process() {
                self.stopping.spawn(tasks::stop_child(p.child, p.pid));
            }
        }
        while self.stopping.join_next().await.is_some() {}
        for (_, p) in std::mem::take(&mut self.proxies) {
            p.proxy.shutdown().await;
        }
        self.databases.shutdown().await;
        self.caches.shutdown().await;
        self.metadata.shutdown().await;
        self.dns.shutdown().await;
    }

    /// Reads the control plane.
    async fn read(&mut self) -> Result<World, Error> {
        if self.zones.is_empty() {
            (self.zones, self.zone_ids) = observe::zones(&self.c, &self.region).await?;
        }
        // FIS first: a fault it applies (or reverts) shows in this read's network ACLs.
        match self
            .fis
            .run(&self.c, self.opts.clock, &self.databases, &self.caches)
            .await
        {
            Ok(effects) => {
                for arn in effects.failovers {
                    self.databases.fail_over(&arn);
                }
                for (arn, zone) in effects.cuts {
                    self.caches.cut_power(&arn, &zone);
                }
                for (arn, zone) in effects.restores {
                    self.caches.power_back(&arn, &zone);
                }
            }
            Err(e) => log(format_args!("FIS experiments not run this round: {e}")),
        }
        let mut world = World {
            services: observe::services(&self.c).await?,
            ..World::default()
        };
        for s in &world.services {
            if !self.task_defs.contains_key(&s.task_definition) {
                let td = observe::task_definition(&self.c, &s.task_definition).await?;
                self.task_defs.insert(s.task_definition.clone(), td);
            }
        }
        world.listeners = observe::listeners(&self.c).await?;
        world.databases = match database::read::databases(&self.c).await {
            Ok(dbs) => dbs,
            Err(e) => {
                log(format_args!("databases not read this round: {e}"));
                std::mem::take(&mut self.world.databases)
            }
        };
        world.caches = match cache::read_groups(&self.c).await {
            Ok(groups) => groups,
            Err(e) => {
                log(format_args!("caches not read this round: {e}"));
                std::mem::take(&mut self.world.caches)
            }
        };
        world.jobs = match observe::jobs(&self.c).await {
            Ok(jobs) => jobs,
            Err(e) => {
                log(format_args!("standalone tasks not read this round: {e}"));
                std::mem::take(&mut self.world.jobs)
            }
        };
        let subnet_ids: BTreeSet<String> = world
            .services
            .iter()
            .flat_map(|s| s.subnets.iter().cloned())
            .chain(world.jobs.iter().filter_map(|j| j.subnet.clone()))
            .chain(
                world
                    .databases
                    .iter()
                    .flat_map(|d| d.subnets.iter().map(|(s, _)| s.clone())),
            )
            .chain(world.caches.iter().flat_map(|g| g.subnets.iter().cloned()))
            .chain(
                world
                    .listeners
                    .iter()
                    .flat_map(|l| l.zones.iter().map(|(_, s)| s.clone())),
            )
            .collect();
        world.subnets =
            observe::subnets(&self.c, &subnet_ids.into_iter().collect::<Vec<_>>()).await?;
        let tg_arns: BTreeSet<String> = world
            .services
            .iter()
            .flat_map(|s| s.load_balancers.iter().map(|(t, _)| t.clone()))
            .chain(
                world
                    .listeners
                    .iter()
                    .filter_map(|l| l.target_group.clone()),
            )
            .collect();
        world.target_groups =
            observe::target_groups(&self.c, &tg_arns.into_iter().collect::<Vec<_>>()).await?;
        world.scaling = match observe::scaling(&self.c).await {
            Ok(s) => s,
            Err(e) => {
                log(format_args!("autoscaling skipped this round: {e}"));
                BTreeMap::new()
            }
        };
        world.zonal_shifts = match observe::zonal_shifts(&self.c).await {
            Ok(shifts) => shifts
                .into_iter()
                .filter_map(|(r, id)| Some((r, self.zone_ids.get(&id)?.clone())))
                .collect(),
            Err(e) => {
                log(format_args!("zonal shifts not read this round: {e}"));
                std::mem::take(&mut self.world.zonal_shifts)
            }
        };
        Ok(world)
    }

    /// One step: with `read`, a fresh read of the control plane first (otherwise the last one
    /// is used, as it is between reads).
    async fn iterate(&mut self, read: bool) -> Result<(), Error> {
        // Reap finished stops so the set stays small; stop what an iteration that failed part
        // way left waiting.
        while self.stopping.try_join_next().is_some() {}
        self.release_stopped();
        let mut world = if read {
            self.read().await?
        } else {
            std::mem::take(&mut self.world)
        };
        for (key, desired) in self.pending_desired.drain() {
            if let Some(s) = world.services.iter_mut().find(|s| s.key() == key) {
                s.desired = desired;
            }
        }
        self.advance_launches(&world).await;
        self.reap_exited(&world).await;
        if read {
            self.sync_stopped_from_api().await;
            self.stop_orphans(&world).await;
        }
        self.replace_unhealthy(&world).await;
        if read {
            for svc in &world.services {
                if let Err(e) = self.converge_service(svc, &world).await {
                    log(format_args!("service {}: {e}", svc.key()));
                }
            }
        }
        self.converge_jobs(&world, read).await;
        self.step_databases(&world, read).await;
        self.step_caches(&world).await;
        self.sync_targets(&world).await;
        self.sync_proxies(&world).await;
        self.release_stopped();
        let now = Instant::now();
        let dt = now.duration_since(self.last_tick);
        self.last_tick = now;
        let requests = self.collect_stats(now);
        self.autoscale(&world, &requests, dt).await;
        if now.duration_since(self.last_publish)
            >= self.opts.clock.wall(cloudwatch::STANDARD_PERIOD)
        {
            self.last_publish = now;
            let healthy = self.health_by_zone();
            let cpu = self.service_usage(&world);
            report::publish(
                &self.c,
                &self.region,
                &mut self.report,
                &world,
                &healthy,
                &cpu,
            )
            .await;
        }
        self.world = world;
        Ok(())
    }

    /// Starts, stops and follows the databases; reads the master password of a new one (on a
    /// read of the control plane, not on every tick: a secret that cannot be read yet is asked
    /// for again at the next read).
    async fn step_databases(&mut self, world: &World, read: bool) {
        for d in world
            .databases
            .iter()
            .filter(|d| read && d.failover_requested)
        {
            database::forced_reboot(&self.c, &mut self.databases, d).await;
        }
        let mut passwords = BTreeMap::new();
        for d in world.databases.iter().filter(|_| read) {
            if self.databases.knows(&d.id) {
                continue;
            }
            let Some(arn) = &d.secret_arn else {
                continue;
            };
            match database::read::master_password(&self.c, arn).await {
                Ok(p) => {
                    passwords.insert(arn.clone(), p);
                }
                Err(e) => log(format_args!("database {}: {e} (retrying)", d.id)),
            }
        }
        let moved = self
            .databases
            .step(
                world,
                &self.zones,
                &passwords,
                self.opts.clock,
                &mut self.rng,
                &self.dns,
            )
            .await;
        database::report_moves(&self.c, moved).await;
    }

    /// Starts, stops and follows the caches; reports a failover's new primary to ElastiCache.
    async fn step_caches(&mut self, world: &World) {
        let moved = self
            .caches
            .step(
                world,
                &self.zones,
                self.opts.clock,
                &mut self.rng,
                &self.dns,
            )
            .await;
        cache::report_primaries(&self.c, moved).await;
    }

    fn zone_index(&self, zone: &str) -> Option<usize> {
        self.zones.iter().position(|z| z == zone)
    }

    /// The health of every task known to a proxy, by task ARN.
    fn health(&self) -> HashMap<String, alb::TargetState> {
        let mut map = HashMap::new();
        for p in self.proxies.values() {
            for h in p.proxy.health() {
                map.insert(h.id, h.state);
            }
        }
        map
    }

    /// (healthy, unhealthy) per (target group ARN, zone).
    fn health_by_zone(&self) -> HashMap<(String, String), (u32, u32)> {
        let mut map: HashMap<(String, String), (u32, u32)> = HashMap::new();
        for p in self.proxies.values() {
            let Some(tg) = &p.spec.target_group else {
                continue;
            };
            for h in p.proxy.health() {
                let e = map.entry((tg.clone(), h.zone.clone())).or_default();
                match h.state {
                    alb::TargetState::Healthy => e.0 += 1,
                    alb::TargetState::Unhealthy | alb::TargetState::Initial => e.1 += 1,
                    _ => {}
                }
            }
        }
        map
    }

    /// (cluster, service) -> (average CPU %, average memory %).
    fn service_usage(&self, world: &World) -> BTreeMap<(String, String), (f64, f64)> {
        let mut map = BTreeMap::new();
        for svc in &world.services {
            let mine: Vec<&TaskProc> = self.service_tasks(svc).collect();
            let cpu: Vec<f64> = mine.iter().filter_map(|t| t.cpu_percent()).collect();
            if cpu.is_empty() {
                continue;
            }
            let mem: Vec<f64> = mine
                .iter()
                .filter_map(|t| {
                    report::memory_percent(t.pid()?, self.memory_of(&t.task_definition))
                })
                .collect();
            let avg = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
            map.insert(
                (svc.cluster.clone(), svc.name.clone()),
                (avg(&cpu), avg(&mem)),
            );
        }
        map
    }

    fn memory_of(&self, td: &str) -> u32 {
        self.task_defs.get(td).map_or(512, |t| t.memory_mib)
    }

    fn service_tasks<'a>(
        &'a self,
        svc: &'a ServiceSpec,
    ) -> impl Iterator<Item = &'a TaskProc> + 'a {
        self.tasks
            .values()
            .filter(move |t| t.cluster == svc.cluster && t.service == svc.name)
    }

    fn publish_status(&self, last_error: Option<String>) {
        let health = self.health();
        let mut services: BTreeMap<(String, String), ServiceStatus> = BTreeMap::new();
        let mut tasks = Vec::new();
        for t in self.tasks.values() {
            let Some(pid) = t.pid() else { continue };
            let h = match health.get(&t.arn) {
                None => TaskHealth::NoTargetGroup,
                Some(alb::TargetState::Initial) => TaskHealth::Initial,
                Some(alb::TargetState::Healthy) => TaskHealth::Healthy,
                Some(alb::TargetState::Unhealthy) => TaskHealth::Unhealthy,
                Some(alb::TargetState::Draining | alb::TargetState::Unused) => TaskHealth::Draining,
            };
            let reachable = self
                .proxies
                .values()
                .filter_map(|p| p.pushed.as_ref())
                .flat_map(|(_, _, ts)| ts.iter())
                .find(|x| x.id == t.arn)
                .is_none_or(|x| x.reachable);
            tasks.push(TaskStatus {
                arn: t.arn.clone(),
                cluster: t.cluster.clone(),
                service: t.service.clone(),
                task_definition: t.task_definition.clone(),
                zone: t.zone.clone(),
                addr: t.addr,
                pid,
                health: h,
                reachable,
            });
        }
        // Services come from the last observation; keep them in the snapshot via tasks and the
        // cached desired counts.
        for s in &self.world.services {
            let launching = self
                .tasks
                .values()
                .filter(|t| t.cluster == s.cluster && t.service == s.name && !t.running())
                .count();
            let running: Vec<&TaskStatus> = tasks
                .iter()
                .filter(|t| t.cluster == s.cluster && t.service == s.name)
                .collect();
            let healthy = running
                .iter()
                .filter(|t| {
                    t.task_definition == s.task_definition
                        && matches!(t.health, TaskHealth::Healthy | TaskHealth::NoTargetGroup)
                })
                .count();
            services.insert(
                (s.cluster.clone(), s.name.clone()),
                ServiceStatus {
                    cluster: s.cluster.clone(),
                    name: s.name.clone(),
                    desired: s.desired,
                    running: running.len(),
                    healthy,
                    launching,
                    failed_starts: self.failures.get(&s.key()).map_or(0, |f| f.0),
                },
            );
        }
        let status = PlaneStatus {
            clock: self.opts.clock,
            dns: Some(self.dns.addr()),
            iterations: self.iterations,
            services: services.into_values().collect(),
            tasks,
            jobs: self.jobs.values().map(jobs::Job::status).collect(),
            endpoints: self.endpoints(),
            databases: self.databases.status(),
            caches: self.caches.status(),
            scaling_activities: self.activities.clone(),
            last_error,
        };
        self.status_tx.send_replace(status);
    }
}
