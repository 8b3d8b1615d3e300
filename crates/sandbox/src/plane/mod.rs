//! The sandbox data plane: a reconciler that reads the desired state from the control plane
//! (moto) with the AWS SDK and makes it real on this machine.
//!
//! Every [`PlaneOptions::interval`] it reads the ECS services, task definitions, subnets (with
//! their zones and network ACLs), target groups, load balancers and listeners, and the
//! Application Auto Scaling targets and policies, then:
//! - keeps each service's `desiredCount` task processes running (the sample-app for images whose
//!   repository ends in `sample-app`), balanced across the service's zones, recorded in ECS with
//!   RunTask/StopTask, replaced when they exit or are stopped through the API, rolled on a new
//!   task definition within the deployment's maximum/minimum percent;
//! - registers the tasks in their target groups and drives one local ALB proxy per HTTP
//!   listener, marking the tasks of subnets whose network ACL denies inbound TCP unreachable;
//! - evaluates target-tracking policies and updates the desired count as AWS would;
//! - publishes the ALB and ECS CloudWatch metrics and the access logs.
//!
//! Errors of an iteration are logged and the next iteration retries; nothing panics.

mod nacl;
mod observe;
mod report;
mod scaling;
mod tasks;

use crate::alb;

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use aws_config::SdkConfig;
use aws_sdk_ecs::types::{AwsVpcConfiguration, LaunchType, NetworkConfiguration};
use aws_sdk_elasticloadbalancingv2::types::TargetDescription;
use aws_smithy_runtime_api::client::interceptors::{Intercept, SharedInterceptor};
use aws_smithy_types::error::display::DisplayErrorContext;
use serde::Serialize;
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;

use crate::Error;
use observe::{ListenerSpec, ServiceSpec, SubnetSpec, TargetGroupSpec, TaskDefSpec, World};
use tasks::{Metadata, TaskProc};

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
    /// Time between CloudWatch metric and access-log publications. Default 60 s.
    pub metrics_period: Duration,
    /// The sliding window over which scaling metrics (requests per target, CPU) are measured.
    /// Default 60 s.
    pub scaling_window: Duration,
}

impl PlaneOptions {
    /// Options with the defaults and the given sample-app binary.
    pub fn new(sample_app: impl Into<PathBuf>) -> Self {
        Self {
            sample_app: sample_app.into(),
            interval: Duration::from_secs(1),
            state_dir: None,
            interceptors: Vec::new(),
            metrics_period: Duration::from_secs(60),
            scaling_window: Duration::from_secs(60),
        }
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
    /// Its DNS name (as moto reports it; it resolves nowhere).
    pub dns_name: String,
    /// The listener port.
    pub port: u16,
    /// The local address serving that listener.
    pub local_addr: SocketAddr,
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
    /// Tasks that failed to start (e.g. an image the sandbox cannot run).
    pub failed_starts: u32,
}

/// A snapshot of the data plane after an iteration.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PlaneStatus {
    /// Iterations done.
    pub iterations: u64,
    /// The services.
    pub services: Vec<ServiceStatus>,
    /// The running tasks.
    pub tasks: Vec<TaskStatus>,
    /// The local ALB listeners.
    pub endpoints: Vec<AlbEndpoint>,
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
        let clients = Clients::new(&sdk, &options.interceptors);
        let (status_tx, status) = watch::channel(PlaneStatus::default());
        let (stop, stopped) = watch::channel(false);
        let region = sdk
            .region()
            .map_or_else(|| "us-east-1".to_owned(), ToString::to_string);
        let reconciler = Reconciler {
            c: clients,
            region,
            opts: options,
            metadata,
            zones: Vec::new(),
            task_defs: HashMap::new(),
            tasks: BTreeMap::new(),
            stopping: JoinSet::new(),
            registered: HashMap::new(),
            proxies: BTreeMap::new(),
            failures: HashMap::new(),
            scaling_memory: HashMap::new(),
            window: VecDeque::new(),
            started: Instant::now(),
            report: report::Report::default(),
            last_publish: Instant::now(),
            activities: Vec::new(),
            written_endpoints: None,
            status_tx,
            iterations: 0,
            last_services: Vec::new(),
            unrecorded: 0,
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
        }
    }
}

#[derive(Debug)]
struct ProxyEntry {
    spec: ListenerSpec,
    proxy: alb::Proxy,
    pushed: Option<(observe::HealthKey, Duration, Vec<alb::Target>)>,
}

/// Most task starts per service per iteration.
const MAX_STARTS: usize = 10;

/// A task process that exits this soon after its start counts as a failed start: the service
/// backs off (2 s doubling to 60 s) before starting the next one, so a crash loop stays cheap.
const EARLY_EXIT: Duration = Duration::from_secs(5);

struct Reconciler {
    c: Clients,
    region: String,
    opts: PlaneOptions,
    metadata: Metadata,
    /// All zone names of the region, sorted: zone n uses 127.0.{n+1}.0/24.
    zones: Vec<String>,
    task_defs: HashMap<String, TaskDefSpec>,
    tasks: BTreeMap<String, TaskProc>,
    stopping: JoinSet<()>,
    /// Target group ARN -> task ARN -> registered address.
    registered: HashMap<String, HashMap<String, SocketAddr>>,
    proxies: BTreeMap<String, ProxyEntry>,
    /// Service key -> (failed starts, no new start before).
    failures: HashMap<String, (u32, Instant)>,
    scaling_memory: HashMap<String, scaling::Memory>,
    /// (when, target group ARN, requests)
    window: VecDeque<(Instant, String, u64)>,
    started: Instant,
    report: report::Report,
    last_publish: Instant,
    activities: Vec<String>,
    written_endpoints: Option<Vec<AlbEndpoint>>,
    status_tx: watch::Sender<PlaneStatus>,
    iterations: u64,
    last_services: Vec<ServiceSpec>,
    /// Tasks run without an ECS record so far.
    unrecorded: u64,
}

fn log(msg: impl std::fmt::Display) {
    eprintln!("sandbox plane: {msg}");
}

impl Reconciler {
    async fn run(mut self, mut stopped: watch::Receiver<bool>) {
        loop {
            let result = self.iterate().await;
            self.iterations += 1;
            let last_error = result.err().map(|e| {
                log(format_args!("iteration failed (retrying): {e}"));
                e.to_string()
            });
            self.publish_status(last_error);
            tokio::select! {
                _ = tokio::time::sleep(self.opts.interval) => {}
                _ = stopped.changed() => break,
            }
            if *stopped.borrow() {
                break;
            }
        }
        self.shutdown().await;
    }

    async fn shutdown(mut self) {
        let tasks = std::mem::take(&mut self.tasks);
        for (_, t) in tasks {
            self.stopping.spawn(tasks::stop_child(t.child, t.pid));
        }
        while self.stopping.join_next().await.is_some() {}
        for (_, p) in std::mem::take(&mut self.proxies) {
            p.proxy.shutdown().await;
        }
        self.metadata.shutdown().await;
    }

    async fn iterate(&mut self) -> Result<(), Error> {
        // Reap finished stops so the set stays small.
        while self.stopping.try_join_next().is_some() {}
        if self.zones.is_empty() {
            self.zones = self.read_zones().await?;
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
        let subnet_ids: BTreeSet<String> = world
            .services
            .iter()
            .flat_map(|s| s.subnets.iter().cloned())
            .collect();
        world.subnets =
            observe::subnets(&self.c, &subnet_ids.into_iter().collect::<Vec<_>>()).await?;
        world.listeners = observe::listeners(&self.c).await?;
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

        self.reap_exited(&world).await;
        self.sync_stopped_from_api().await;
        self.stop_orphans(&world).await;
        self.replace_unhealthy(&world).await;
        for svc in &world.services {
            if let Err(e) = self.converge_service(svc, &world).await {
                log(format_args!("service {}: {e}", svc.key()));
            }
        }
        self.last_services = world.services.clone();
        self.sync_targets(&world).await;
        self.sync_proxies(&world).await;
        let now = Instant::now();
        self.collect_stats(now);
        self.autoscale(&world, now).await;
        if now.duration_since(self.last_publish) >= self.opts.metrics_period {
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
        Ok(())
    }

    async fn read_zones(&self) -> Result<Vec<String>, Error> {
        let out = self
            .c
            .ec2
            .describe_availability_zones()
            .send()
            .await
            .map_err(|e| Error::Aws {
                operation: "DescribeAvailabilityZones",
                resource: self.region.clone(),
                message: DisplayErrorContext(&e).to_string(),
            })?;
        let mut zones: Vec<String> = out
            .availability_zones()
            .iter()
            .filter_map(|z| z.zone_name().map(str::to_owned))
            .collect();
        zones.sort();
        Ok(zones)
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
                .filter_map(|t| report::memory_percent(t.pid, self.memory_of(&t.task_definition)))
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

    /// Removes a task: forgets it, stops its process in the background (SIGTERM, then
    /// SIGKILL), and records the stop in ECS when `api_reason` is given.
    async fn stop_task(&mut self, arn: &str, api_reason: Option<&str>) {
        let Some(t) = self.tasks.remove(arn) else {
            return;
        };
        self.metadata.remove(&t.id);
        log(format_args!(
            "stopping task {} ({} in {}, pid {}){}",
            t.id,
            t.addr,
            t.zone,
            t.pid,
            api_reason.map(|r| format!(": {r}")).unwrap_or_default()
        ));
        if let (Some(reason), true) = (api_reason, t.recorded)
            && let Err(e) = self
                .c
                .ecs
                .stop_task()
                .cluster(&t.cluster)
                .task(arn)
                .reason(reason)
                .send()
                .await
        {
            log(format_args!("StopTask {arn}: {}", DisplayErrorContext(&e)));
        }
        self.stopping.spawn(tasks::stop_child(t.child, t.pid));
    }

    /// Replaces processes that exited on their own.
    async fn reap_exited(&mut self, world: &World) {
        let mut exited = Vec::new();
        for (arn, t) in &mut self.tasks {
            if let Ok(Some(status)) = t.child.try_wait() {
                let early = t.started.elapsed() < EARLY_EXIT;
                exited.push((
                    arn.clone(),
                    status,
                    t.cluster.clone(),
                    t.service.clone(),
                    early,
                ));
            }
        }
        for (arn, status, cluster, service, early) in exited {
            let reason = format!("Essential container in task exited ({status})");
            self.stop_task(&arn, Some(&reason)).await;
            if early
                && world
                    .services
                    .iter()
                    .any(|s| s.cluster == cluster && s.name == service)
            {
                self.note_failure(&format!("{cluster}/{service}"));
            }
        }
    }

    fn note_failure(&mut self, key: &str) {
        let e = self
            .failures
            .entry(key.to_owned())
            .or_insert((0, Instant::now()));
        e.0 += 1;
        let backoff = Duration::from_secs(1 << e.0.min(6)).min(Duration::from_secs(60));
        e.1 = Instant::now() + backoff;
    }

    /// Stops processes whose task was stopped through the ECS API (by someone else).
    async fn sync_stopped_from_api(&mut self) {
        let mut by_cluster: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for t in self.tasks.values().filter(|t| t.recorded) {
            by_cluster
                .entry(t.cluster.clone())
                .or_default()
                .push(t.arn.clone());
        }
        let mut gone = Vec::new();
        for (cluster, arns) in by_cluster {
            for chunk in arns.chunks(100) {
                match self
                    .c
                    .ecs
                    .describe_tasks()
                    .cluster(&cluster)
                    .set_tasks(Some(chunk.to_vec()))
                    .send()
                    .await
                {
                    Ok(out) => {
                        for t in out.tasks() {
                            // Only the desired status: moto advances lastStatus on its own
                            // as it is described.
                            let stopped = t.desired_status() == Some("STOPPED");
                            if let (true, Some(arn)) = (stopped, t.task_arn()) {
                                gone.push(arn.to_owned());
                            }
                        }
                        for f in out.failures() {
                            if f.reason() == Some("MISSING")
                                && let Some(arn) = f.arn()
                            {
                                gone.push(arn.to_owned());
                            }
                        }
                    }
                    Err(e) => log(format_args!(
                        "DescribeTasks {cluster}: {}",
                        DisplayErrorContext(&e)
                    )),
                }
            }
        }
        for arn in gone {
            self.stop_task(&arn, None).await;
        }
    }

    /// Stops tasks of services that no longer exist (deleted, or inactive).
    async fn stop_orphans(&mut self, world: &World) {
        let orphans: Vec<String> = self
            .tasks
            .values()
            .filter(|t| {
                !world
                    .services
                    .iter()
                    .any(|s| s.cluster == t.cluster && s.name == t.service)
            })
            .map(|t| t.arn.clone())
            .collect();
        for arn in orphans {
            self.stop_task(&arn, Some("Service deleted")).await;
        }
    }

    /// Stops the tasks their load balancer marked unhealthy, once the service's health check
    /// grace period since their start has passed, with the reason ECS gives; `converge_service`
    /// starts their replacements, and `sync_targets` deregisters them (they drain).
    async fn replace_unhealthy(&mut self, world: &World) {
        let now = Instant::now();
        let mut victims: BTreeMap<String, String> = BTreeMap::new();
        for p in self.proxies.values() {
            let Some(tg) = &p.spec.target_group else {
                continue;
            };
            for h in p.proxy.health() {
                if h.state != alb::TargetState::Unhealthy || victims.contains_key(&h.id) {
                    continue;
                }
                let Some(t) = self.tasks.get(&h.id) else {
                    continue;
                };
                let Some(svc) = world
                    .services
                    .iter()
                    .find(|s| s.cluster == t.cluster && s.name == t.service)
                else {
                    continue;
                };
                let behind_it = svc.load_balancers.iter().any(|(arn, _)| arn == tg);
                if behind_it && now.duration_since(t.started) >= svc.health_check_grace {
                    victims.insert(h.id, tg.clone());
                }
            }
        }
        for (arn, tg) in victims {
            let reason = format!("Task failed ELB health checks in (target-group {tg})");
            self.stop_task(&arn, Some(&reason)).await;
        }
    }

    fn is_healthy(
        &self,
        t: &TaskProc,
        svc: &ServiceSpec,
        health: &HashMap<String, alb::TargetState>,
    ) -> bool {
        if svc.load_balancers.is_empty() {
            return true;
        }
        health.get(&t.arn) == Some(&alb::TargetState::Healthy)
    }

    async fn converge_service(&mut self, svc: &ServiceSpec, world: &World) -> Result<(), Error> {
        let Some(td) = self.task_defs.get(&svc.task_definition).cloned() else {
            return Ok(());
        };
        let desired = usize::try_from(svc.desired).unwrap_or(0);
        let health = self.health();
        let (new, old): (Vec<&TaskProc>, Vec<&TaskProc>) = self
            .service_tasks(svc)
            .partition(|t| t.task_definition == svc.task_definition);
        let healthy_new = new
            .iter()
            .filter(|t| self.is_healthy(t, svc, &health))
            .count();
        let mut old_sorted: Vec<(bool, String)> = old
            .iter()
            .map(|t| (self.is_healthy(t, svc, &health), t.arn.clone()))
            .collect();
        // Unhealthy old tasks go first: stopping them costs no capacity.
        old_sorted.sort();
        let mut to_stop: Vec<(String, String)> = Vec::new();
        let mut to_start = 0usize;
        if old_sorted.is_empty() {
            if new.len() < desired {
                to_start = desired - new.len();
            } else if new.len() > desired {
                for arn in self.scale_in_victims(svc, new.len() - desired) {
                    to_stop.push((
                        arn,
                        format!(
                            "Scaling activity initiated by (deployment {})",
                            svc.deployment_id
                        ),
                    ));
                }
            }
        } else {
            let max_total =
                desired * usize::try_from(svc.max_percent.max(100)).unwrap_or(200) / 100;
            let min_healthy = (desired
                * usize::try_from(svc.min_healthy_percent.max(0)).unwrap_or(100))
            .div_ceil(100);
            let healthy_old = old_sorted.iter().filter(|(h, _)| *h).count();
            let mut healthy_total = healthy_new + healthy_old;
            let mut remaining_old = old_sorted.len();
            for (healthy, arn) in &old_sorted {
                if *healthy {
                    if healthy_total <= min_healthy {
                        break;
                    }
                    healthy_total -= 1;
                }
                remaining_old -= 1;
                to_stop.push((
                    arn.clone(),
                    "Deployment: replaced by a new task definition".to_owned(),
                ));
            }
            let room = max_total.saturating_sub(new.len() + remaining_old);
            to_start = room.min(desired.saturating_sub(new.len()));
            // Too many new tasks (desired fell during the deployment).
            if new.len() > desired {
                for arn in self.scale_in_victims(svc, new.len() - desired) {
                    to_stop.push((
                        arn,
                        format!(
                            "Scaling activity initiated by (deployment {})",
                            svc.deployment_id
                        ),
                    ));
                }
            }
        }
        for (arn, reason) in to_stop {
            self.stop_task(&arn, Some(&reason)).await;
        }
        let key = svc.key();
        if to_start > 0
            && let Some((_, not_before)) = self.failures.get(&key)
            && Instant::now() < *not_before
        {
            return Ok(());
        }
        for _ in 0..to_start.min(MAX_STARTS) {
            if let Err(e) = self.start_task(svc, &td, world).await {
                self.note_failure(&key);
                return Err(e);
            }
        }
        Ok(())
    }

    /// Which tasks to stop when scaling in: each from the zone with the most tasks of the
    /// service (then the newest).
    fn scale_in_victims(&self, svc: &ServiceSpec, count: usize) -> Vec<String> {
        let mut by_zone: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for t in self
            .service_tasks(svc)
            .filter(|t| t.task_definition == svc.task_definition)
        {
            by_zone
                .entry(t.zone.clone())
                .or_default()
                .push(t.arn.clone());
        }
        let mut victims = Vec::new();
        for _ in 0..count {
            let Some((_, list)) = by_zone
                .iter_mut()
                .filter(|(_, l)| !l.is_empty())
                .max_by(|a, b| a.1.len().cmp(&b.1.len()).then_with(|| b.0.cmp(a.0)))
            else {
                break;
            };
            if let Some(arn) = list.pop() {
                victims.push(arn);
            }
        }
        victims
    }

    async fn start_task(
        &mut self,
        svc: &ServiceSpec,
        td: &TaskDefSpec,
        world: &World,
    ) -> Result<(), Error> {
        // The service's zones, and the subnet to use in each.
        let mut zones: BTreeMap<usize, (String, String)> = BTreeMap::new();
        for sid in &svc.subnets {
            if let Some(SubnetSpec { zone, .. }) = world.subnets.get(sid)
                && let Some(i) = self.zone_index(zone)
            {
                zones
                    .entry(i)
                    .or_insert_with(|| (zone.clone(), sid.clone()));
            }
        }
        if zones.is_empty() {
            return Err(Error::Aws {
                operation: "RunTask",
                resource: svc.key(),
                message: "the service has no subnet in a known zone".to_owned(),
            });
        }
        let mut counts: BTreeMap<usize, usize> = zones.keys().map(|i| (*i, 0)).collect();
        for t in self.service_tasks(svc) {
            if let Some(i) = self.zone_index(&t.zone)
                && let Some(c) = counts.get_mut(&i)
            {
                *c += 1;
            }
        }
        let Some((&zi, _)) = counts.iter().min_by_key(|(i, c)| (**c, **i)) else {
            return Ok(());
        };
        let Some((zone, subnet)) = zones.get(&zi).cloned() else {
            return Ok(());
        };
        // Not the address of a running task, nor of one still registered (a stopped task is
        // deregistered later in the iteration: registering its replacement on the same
        // address and then deregistering the old one would leave neither in the group).
        let used: BTreeSet<usize> = self
            .tasks
            .values()
            .map(|t| t.addr)
            .chain(self.registered.values().flat_map(|m| m.values().copied()))
            .filter_map(|a| match a.ip() {
                std::net::IpAddr::V4(ip) => Some(tasks::zone_slot(ip)),
                std::net::IpAddr::V6(_) => None,
            })
            .filter(|(z, _)| *z == zi)
            .map(|(_, k)| k)
            .collect();
        let port = svc
            .load_balancers
            .iter()
            .find_map(|(_, p)| *p)
            .or(td.container_port)
            .unwrap_or(8080);
        // The lowest free host of the zone's range that nothing else on this machine listens
        // on (another data plane, a test, any program): the third octet still tells the zone.
        let Some(ip) = tasks::free_task_ip(zi, port, &used) else {
            return Err(Error::Aws {
                operation: "RunTask",
                resource: svc.key(),
                message: format!(
                    "no free task address left on port {port} in 127.0.{}.10-254 ({zone})",
                    zi + 1
                ),
            });
        };
        let addr = SocketAddr::from((ip, port));

        let mut net = AwsVpcConfiguration::builder().subnets(&subnet);
        for sg in &svc.security_groups {
            net = net.security_groups(sg);
        }
        let net = net.build().map_err(|e| Error::Aws {
            operation: "RunTask",
            resource: svc.key(),
            message: e.to_string(),
        })?;
        let out = self
            .c
            .ecs
            .run_task()
            .cluster(&svc.cluster)
            .task_definition(&svc.task_definition)
            .launch_type(LaunchType::Fargate)
            .started_by(&svc.deployment_id)
            .group(format!("service:{}", svc.name))
            .network_configuration(
                NetworkConfiguration::builder()
                    .awsvpc_configuration(net)
                    .build(),
            )
            .send()
            .await;
        // moto answers 500 to RunTask when a container definition has neither `memory` nor
        // `memoryReservation` (legal on Fargate): run the task anyway, unrecorded in ECS.
        let (arn, recorded) = match out {
            Ok(out) => {
                let Some(arn) = out
                    .tasks()
                    .first()
                    .and_then(|t| t.task_arn())
                    .map(str::to_owned)
                else {
                    return Err(Error::Aws {
                        operation: "RunTask",
                        resource: svc.key(),
                        message: format!("no task started: {:?}", out.failures()),
                    });
                };
                (arn, true)
            }
            Err(e) if e.raw_response().is_some_and(|r| r.status().as_u16() == 500) => {
                self.unrecorded += 1;
                if self.unrecorded == 1 {
                    log(format_args!(
                        "RunTask {} failed inside the control plane (moto needs container-level memory or memoryReservation); running tasks unrecorded in ECS: {}",
                        svc.key(),
                        DisplayErrorContext(&e)
                    ));
                }
                let arn = format!(
                    "arn:aws:ecs:{}:000000000000:task/{}/sandbox{:024x}",
                    self.region, svc.cluster, self.unrecorded
                );
                (arn, false)
            }
            Err(e) => return Err(observe::aws("RunTask", svc.key())(e)),
        };
        let id = arn.rsplit('/').next().unwrap_or(&arn).to_owned();
        if !td.runnable() {
            let reason = format!(
                "CannotPullContainerError: the sandbox runs only images whose repository ends in sample-app, not {}",
                td.image
            );
            log(format_args!(
                "task {id} of {} failed to start: {reason}",
                svc.key()
            ));
            let _ = self
                .c
                .ecs
                .stop_task()
                .cluster(&svc.cluster)
                .task(&arn)
                .reason(&reason)
                .send()
                .await;
            return Err(Error::Aws {
                operation: "RunTask",
                resource: svc.key(),
                message: reason,
            });
        }
        self.metadata.insert(
            &id,
            serde_json::json!({
                "Cluster": svc.cluster,
                "TaskARN": arn,
                "Family": td.family,
                "Revision": td.revision.to_string(),
                "DesiredStatus": "RUNNING",
                "KnownStatus": "RUNNING",
                "AvailabilityZone": zone,
                "LaunchType": "FARGATE",
                "Containers": [{
                    "Name": td.container_name,
                    "Image": td.image,
                    "Networks": [{"NetworkMode": "awsvpc", "IPv4Addresses": [ip.to_string()]}],
                }],
            }),
            serde_json::json!({
                "Name": td.container_name,
                "Image": td.image,
                "Networks": [{"NetworkMode": "awsvpc", "IPv4Addresses": [ip.to_string()]}],
            }),
        );
        let log_path = self.opts.state_dir.as_ref().map(|d| {
            let dir = d.join("tasks");
            let _ = std::fs::create_dir_all(&dir);
            dir.join(format!("{id}.log"))
        });
        let launch = tasks::Launch {
            program: &self.opts.sample_app,
            addr,
            metadata_uri: self.metadata.uri(&id),
            zone: &zone,
            arn: &arn,
            log: log_path.as_deref(),
        };
        let (child, pid) = match tasks::spawn(&launch) {
            Ok(x) => x,
            Err(e) => {
                self.metadata.remove(&id);
                let _ = self
                    .c
                    .ecs
                    .stop_task()
                    .cluster(&svc.cluster)
                    .task(&arn)
                    .reason(format!("CannotStartContainerError: {e}"))
                    .send()
                    .await;
                return Err(e);
            }
        };
        log(format_args!(
            "started task {id} of {} at {addr} in {zone} (pid {pid})",
            svc.key()
        ));
        self.tasks.insert(
            arn.clone(),
            TaskProc {
                arn,
                id,
                cluster: svc.cluster.clone(),
                service: svc.name.clone(),
                task_definition: svc.task_definition.clone(),
                zone,
                subnet,
                addr,
                pid,
                child,
                cpu_units: td.cpu_units,
                cpu: VecDeque::new(),
                started: Instant::now(),
                recorded,
            },
        );
        Ok(())
    }

    /// The targets each target group should have: the tasks of the services that use it.
    fn desired_targets(&self, world: &World) -> BTreeMap<String, Vec<alb::Target>> {
        let mut map: BTreeMap<String, Vec<alb::Target>> = BTreeMap::new();
        for svc in &world.services {
            for (tg, _) in &svc.load_balancers {
                let list = map.entry(tg.clone()).or_default();
                for t in self.service_tasks(svc) {
                    let reachable = world
                        .subnets
                        .get(&t.subnet)
                        .is_none_or(|s| s.reachable(t.addr.port()));
                    list.push(alb::Target {
                        id: t.arn.clone(),
                        addr: t.addr,
                        zone: t.zone.clone(),
                        reachable,
                    });
                }
            }
        }
        map
    }

    /// Registers running tasks in their target groups in the control plane, deregisters gone ones.
    async fn sync_targets(&mut self, world: &World) {
        let desired = self.desired_targets(world);
        let all: BTreeSet<String> = desired
            .keys()
            .cloned()
            .chain(self.registered.keys().cloned())
            .collect();
        for tg in all {
            let want: HashMap<String, (SocketAddr, String)> = desired
                .get(&tg)
                .map(|l| {
                    l.iter()
                        .map(|t| (t.id.clone(), (t.addr, t.zone.clone())))
                        .collect()
                })
                .unwrap_or_default();
            if !self.registered.contains_key(&tg) {
                self.clean_stale_targets(&tg, &want).await;
            }
            let have = self.registered.entry(tg.clone()).or_default().clone();
            let add: Vec<(String, SocketAddr, String)> = want
                .iter()
                .filter(|(id, _)| !have.contains_key(*id))
                .map(|(id, (a, z))| (id.clone(), *a, z.clone()))
                .collect();
            let remove: Vec<(String, SocketAddr)> = have
                .iter()
                .filter(|(id, _)| !want.contains_key(*id))
                .map(|(id, a)| (id.clone(), *a))
                .collect();
            if !add.is_empty() {
                let targets = add.iter().map(|(_, a, z)| {
                    TargetDescription::builder()
                        .id(a.ip().to_string())
                        .port(i32::from(a.port()))
                        .availability_zone(z)
                        .build()
                });
                match self
                    .c
                    .elb
                    .register_targets()
                    .target_group_arn(&tg)
                    .set_targets(Some(targets.collect()))
                    .send()
                    .await
                {
                    Ok(_) => {
                        let reg = self.registered.entry(tg.clone()).or_default();
                        for (id, a, _) in add {
                            reg.insert(id, a);
                        }
                    }
                    Err(e) => log(format_args!(
                        "RegisterTargets {tg}: {}",
                        DisplayErrorContext(&e)
                    )),
                }
            }
            if !remove.is_empty() {
                let targets = remove.iter().map(|(_, a)| {
                    TargetDescription::builder()
                        .id(a.ip().to_string())
                        .port(i32::from(a.port()))
                        .build()
                });
                let result = self
                    .c
                    .elb
                    .deregister_targets()
                    .target_group_arn(&tg)
                    .set_targets(Some(targets.collect()))
                    .send()
                    .await;
                if let Err(e) = &result {
                    log(format_args!(
                        "DeregisterTargets {tg}: {}",
                        DisplayErrorContext(e)
                    ));
                }
                // Forget them either way: a failure means the target group or the target is gone.
                let reg = self.registered.entry(tg.clone()).or_default();
                for (id, _) in remove {
                    reg.remove(&id);
                }
            }
            if self.registered.get(&tg).is_some_and(HashMap::is_empty) && !desired.contains_key(&tg)
            {
                self.registered.remove(&tg);
            }
        }
    }

    /// On first sight of a target group, deregisters loopback targets no task of ours has
    /// (left by an earlier run of the sandbox).
    async fn clean_stale_targets(&self, tg: &str, want: &HashMap<String, (SocketAddr, String)>) {
        let Ok(out) = self
            .c
            .elb
            .describe_target_health()
            .target_group_arn(tg)
            .send()
            .await
        else {
            return;
        };
        let ours: BTreeSet<String> = want.values().map(|(a, _)| a.ip().to_string()).collect();
        let stale: Vec<TargetDescription> = out
            .target_health_descriptions()
            .iter()
            .filter_map(|d| d.target())
            .filter(|t| {
                t.id()
                    .is_some_and(|id| id.starts_with("127.") && !ours.contains(id))
            })
            .cloned()
            .collect();
        if !stale.is_empty() {
            let _ = self
                .c
                .elb
                .deregister_targets()
                .target_group_arn(tg)
                .set_targets(Some(stale))
                .send()
                .await;
        }
    }

    /// One proxy per HTTP listener, fed with its target group.
    async fn sync_proxies(&mut self, world: &World) {
        let wanted: BTreeSet<String> = world.listeners.iter().map(|l| l.arn.clone()).collect();
        let gone: Vec<String> = self
            .proxies
            .keys()
            .filter(|k| !wanted.contains(*k))
            .cloned()
            .collect();
        for arn in gone {
            if let Some(p) = self.proxies.remove(&arn) {
                p.proxy.shutdown().await;
            }
        }
        let targets = self.desired_targets(world);
        for l in &world.listeners {
            if !self.proxies.contains_key(&l.arn) {
                let settings = alb::ProxySettings {
                    idle_timeout: l.idle_timeout,
                    name: l.lb_arn_suffix.clone(),
                };
                match alb::Proxy::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)), settings).await {
                    Ok(proxy) => {
                        log(format_args!(
                            "ALB {} ({}:{}) listens on {}",
                            l.lb_name,
                            l.dns_name,
                            l.port,
                            proxy.local_addr()
                        ));
                        self.proxies.insert(
                            l.arn.clone(),
                            ProxyEntry {
                                spec: l.clone(),
                                proxy,
                                pushed: None,
                            },
                        );
                    }
                    Err(e) => {
                        log(format_args!("ALB {}: {e}", l.lb_name));
                        continue;
                    }
                }
            }
            let Some(entry) = self.proxies.get_mut(&l.arn) else {
                continue;
            };
            entry.spec = l.clone();
            let Some(tg_arn) = &l.target_group else {
                continue;
            };
            let Some(TargetGroupSpec {
                health,
                deregistration_delay,
                ..
            }) = world.target_groups.get(tg_arn)
            else {
                continue;
            };
            let list = targets.get(tg_arn).cloned().unwrap_or_default();
            let key = (health.clone(), *deregistration_delay, list.clone());
            if entry.pushed.as_ref() != Some(&key) {
                entry.proxy.set_target_group(alb::TargetGroup {
                    health_check: health.to_check(),
                    deregistration_delay: *deregistration_delay,
                    targets: list,
                });
                entry.pushed = Some(key);
            }
        }
        let endpoints = self.endpoints();
        if self.written_endpoints.as_ref() != Some(&endpoints) {
            if let Some(dir) = &self.opts.state_dir {
                let path = dir.join("sandbox-endpoints.json");
                let text = serde_json::to_string_pretty(&endpoints).unwrap_or_default();
                let tmp = dir.join("sandbox-endpoints.json.tmp");
                let result = std::fs::create_dir_all(dir)
                    .and_then(|()| std::fs::write(&tmp, text))
                    .and_then(|()| std::fs::rename(&tmp, &path));
                if let Err(e) = result {
                    log(format_args!("writing {}: {e}", path.display()));
                }
            }
            self.written_endpoints = Some(endpoints);
        }
    }

    fn endpoints(&self) -> Vec<AlbEndpoint> {
        self.proxies
            .values()
            .map(|p| AlbEndpoint {
                name: p.spec.lb_name.clone(),
                dns_name: p.spec.dns_name.clone(),
                port: p.spec.port,
                local_addr: p.proxy.local_addr(),
            })
            .collect()
    }

    fn collect_stats(&mut self, now: Instant) {
        for p in self.proxies.values() {
            let stats = p.proxy.take_stats();
            if let Some(tg) = &p.spec.target_group {
                let total: u64 = stats.zones.values().map(|z| z.requests).sum();
                self.window.push_back((now, tg.clone(), total));
            }
            self.report.add(&p.spec, stats);
        }
        while self
            .window
            .front()
            .is_some_and(|(t, _, _)| now.duration_since(*t) > self.opts.scaling_window)
        {
            self.window.pop_front();
        }
        for t in self.tasks.values_mut() {
            t.sample_cpu(now, self.opts.scaling_window);
        }
    }

    /// Requests per healthy target per minute over the window, for a target group.
    fn request_count_per_target(&self, tg: &str, now: Instant) -> Option<f64> {
        let span = now
            .duration_since(self.started)
            .min(self.opts.scaling_window)
            .as_secs_f64();
        if span <= 0.0 {
            return None;
        }
        let requests: u64 = self
            .window
            .iter()
            .filter(|(_, t, _)| t == tg)
            .map(|(_, _, n)| n)
            .sum();
        let healthy = self
            .proxies
            .values()
            .filter(|p| p.spec.target_group.as_deref() == Some(tg))
            .flat_map(|p| p.proxy.health())
            .filter(|h| h.state == alb::TargetState::Healthy)
            .map(|h| h.id)
            .collect::<BTreeSet<_>>()
            .len();
        if healthy == 0 {
            return None;
        }
        Some(requests as f64 / span * 60.0 / healthy as f64)
    }

    async fn autoscale(&mut self, world: &World, now: Instant) {
        for svc in &world.services {
            let key = svc.key();
            let Some(spec) = world.scaling.get(&key) else {
                continue;
            };
            let cpu: Vec<f64> = self
                .service_tasks(svc)
                .filter_map(TaskProc::cpu_percent)
                .collect();
            let cpu = (!cpu.is_empty()).then(|| cpu.iter().sum::<f64>() / cpu.len() as f64);
            let tg = svc.load_balancers.first().map(|(t, _)| t.clone());
            let measured: Vec<(scaling::Policy, Option<f64>)> = spec
                .policies
                .iter()
                .map(|p| {
                    let v = match p.metric {
                        scaling::Metric::RequestCountPerTarget => tg
                            .as_deref()
                            .and_then(|tg| self.request_count_per_target(tg, now)),
                        scaling::Metric::Cpu => cpu,
                        scaling::Metric::Memory => None,
                    };
                    (p.clone(), v)
                })
                .collect();
            let memory = self.scaling_memory.entry(key.clone()).or_default();
            let Some(activity) =
                scaling::evaluate(svc.desired, spec.min, spec.max, &measured, memory, now)
            else {
                continue;
            };
            let result = self
                .c
                .ecs
                .update_service()
                .cluster(&svc.cluster)
                .service(&svc.name)
                .desired_count(activity.desired)
                .send()
                .await;
            let line = match result {
                Ok(_) => format!("{key}: {}", activity.cause),
                Err(e) => format!(
                    "{key}: {} FAILED: {}",
                    activity.cause,
                    DisplayErrorContext(&e)
                ),
            };
            log(&line);
            self.activities.push(line);
            if self.activities.len() > 100 {
                self.activities.remove(0);
            }
        }
    }

    fn publish_status(&self, last_error: Option<String>) {
        let health = self.health();
        let mut services: BTreeMap<(String, String), ServiceStatus> = BTreeMap::new();
        let mut tasks = Vec::new();
        for t in self.tasks.values() {
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
                pid: t.pid,
                health: h,
                reachable,
            });
        }
        // Services come from the last observation; keep them in the snapshot via tasks and the
        // cached desired counts.
        for s in &self.last_services {
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
                    failed_starts: self.failures.get(&s.key()).map_or(0, |f| f.0),
                },
            );
        }
        let status = PlaneStatus {
            iterations: self.iterations,
            services: services.into_values().collect(),
            tasks,
            endpoints: self.endpoints(),
            scaling_activities: self.activities.clone(),
            last_error,
        };
        self.status_tx.send_replace(status);
    }
}
