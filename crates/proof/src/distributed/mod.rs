//! Load from many ECS tasks, with exactly merged latency.
//!
//! [`coordinate`] starts `N` generators with RunTask (Fargate, one per subnet in turn, so they
//! spread over the zones), waits until every one runs and has said where (`hello.json`), then
//! writes the start object: the global start `t0` and the whole schedule. Generator `i` sends
//! the schedule's requests `k` with `k mod N = i` from `t0` ([`loadtest::Stripe`]; latency
//! from the intended time), uploads its progress every 2 s and its whole report at the end
//! ([`worker::work`]). The coordinator shows live progress from the uploaded interval logs
//! (added exactly), and at the end adds the generators' reports ([`loadtest::Report::merge`]):
//! percentiles of the summed histograms, never averages, with the latency per generator zone
//! and the responses per generator zone and serving zone (`x-az`).
//!
//! A run is **invalid** (the load failed, not the system) when a generator dies (its task stops
//! without a report: its share of unsent requests is named), does not start in time, fails, or
//! paced its requests later than the bound at p99; an invalid run is never judged
//! ([`Outcome::verdict`] is `None`). Every generator still running is stopped when the
//! coordinator returns, whatever the outcome.

mod store;
pub mod worker;

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_sdk_ecs::types::{
    AssignPublicIp, AwsVpcConfiguration, ContainerOverride, LaunchType, NetworkConfiguration,
    TaskOverride,
};
use loadtest::{Percentiles, Report, Slo, Verdict};
use serde::Serialize;

use crate::error::{Error, aws};
use store::{Counts, Hello, Start, Store};

pub use worker::{WorkerOptions, task_identity, work};

/// Where the generators run and meet.
#[derive(Debug, Clone)]
pub struct Fleet {
    /// The ECS cluster.
    pub cluster: String,
    /// The generators' task definition (see `compute::loadgen`).
    pub task_definition: String,
    /// Its container's name.
    pub container: String,
    /// Subnets to place generators in, in turn (one per zone spreads them over the zones).
    pub subnets: Vec<String>,
    /// Their security groups (outbound to the load balancer and S3).
    pub security_groups: Vec<String>,
    /// The bucket the run's objects go to.
    pub bucket: String,
    /// The run's folder in it (`loadtest/{run-id}`).
    pub prefix: String,
}

/// What to run.
#[derive(Debug, Clone)]
pub struct Distributed {
    /// How many generators share the schedule.
    pub workers: u32,
    /// The whole schedule: URL, rate, duration or stages, SLO.
    pub config: loadtest::Config,
    /// How long the generators may take to start (RUNNING and `hello.json`), wall time.
    pub launch_timeout: Duration,
    /// From the start object to `t0`: long enough for every generator to read it.
    pub lead: Duration,
    /// A generator whose pacer released its requests later than this at p99 makes the run
    /// invalid.
    pub max_lateness: Duration,
    /// How often the coordinator reads the tasks and the uploads.
    pub poll: Duration,
}

impl Distributed {
    /// `workers` generators sending `config`'s schedule, with the default lead (3 s), lateness
    /// bound (100 ms, as a shared start may be late: `loadtest::MAX_START_LATE`) and poll
    /// (2 s, as often as the generators upload).
    pub fn new(workers: u32, config: loadtest::Config, launch_timeout: Duration) -> Distributed {
        Distributed {
            workers,
            config,
            launch_timeout,
            lead: Duration::from_secs(3),
            max_lateness: loadtest::MAX_START_LATE,
            poll: worker::PROGRESS_EVERY,
        }
    }

    fn check(&self, fleet: &Fleet) -> Result<(), Error> {
        let mut p = infra::Problems::default();
        if !(1..=MAX_WORKERS).contains(&self.workers) {
            p.add(
                "--workers",
                self.workers,
                format!("1 to {MAX_WORKERS} generators"),
            );
        }
        if fleet.subnets.is_empty() {
            p.add(
                "subnets",
                "none",
                "at least one subnet to run generators in",
            );
        }
        if let Err(problems) = self.config.validate() {
            for problem in problems.0 {
                p.add(problem.field, problem.value, problem.allowed);
            }
        }
        p.into_result(()).map_err(Error::Invalid)
    }

    /// The requests of generator `i`'s share: the `k < total` with `k mod N = i`.
    fn share(&self, i: u32) -> u64 {
        let total = loadtest::scheduled_requests(&self.config);
        let n = u64::from(self.workers.max(1));
        let i = u64::from(i);
        if i >= total {
            0
        } else {
            (total - i).div_ceil(n)
        }
    }
}

/// How long generators may take to start: twice the model's longest start of a Fargate task
/// (the scheduler's delay and the longest launch of `launch`), on `clock`; AWS's clock gives
/// (23 s + 60 s) x 2 = 166 s.
pub fn launch_timeout(clock: aws_model::Clock, launch: aws_model::LaunchLatency) -> Duration {
    clock.wall((aws_model::aws::ecs::SCHEDULER_DELAY + launch.max) * 2)
}

/// Most generators of one run (RunTask starts ten at a time; a hundred is far beyond what one
/// stack's load balancer needs here).
pub const MAX_WORKERS: u32 = 100;

/// How a generator ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum WorkerState {
    /// It sent its share and uploaded its report.
    Finished,
    /// Its task stopped without a report.
    Died,
    /// It failed and said why.
    Failed,
    /// It did not start (or say where it runs) in time.
    NotStarted,
    /// The run ended before it did (another generator made it invalid).
    Stopped,
}

/// One generator's part.
#[derive(Debug, Clone, Serialize)]
pub struct WorkerOutcome {
    /// Its index.
    pub index: u32,
    /// Its task.
    pub task_arn: String,
    /// Its zone (`unknown` before it said).
    pub zone: String,
    /// How it ended.
    pub state: WorkerState,
    /// Its share of the schedule, requests.
    pub share: u64,
    /// Requests it sent (its last progress, when it did not finish).
    pub sent: u64,
    /// Its share it never sent (`share - sent` when it did not finish; its report's unsent
    /// otherwise).
    pub unsent: u64,
    /// How late its pacer released requests at p99, ms (when it finished).
    pub pacer_p99_ms: Option<f64>,
    /// Its corrected latency (when it finished).
    pub latency: Option<Percentiles>,
    /// The task's stop reason and exit code, or the generator's own error.
    pub detail: Option<String>,
    /// Its whole report (when it finished).
    #[serde(skip)]
    pub report: Option<Report>,
}

/// What the coordinator spent.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Overhead {
    /// Wall time from the first RunTask to the merged report, s.
    pub wall_s: f64,
    /// CPU time of this process meanwhile, s.
    pub cpu_s: f64,
    /// Peak resident memory of this process, KiB (Linux).
    pub peak_rss_kib: Option<u64>,
    /// S3 calls made.
    pub s3_calls: u64,
    /// ECS calls made.
    pub ecs_calls: u64,
    /// The same per generator and minute of wall time.
    pub per_worker_minute: PerWorkerMinute,
}

/// Overhead per generator and minute.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PerWorkerMinute {
    /// CPU, s.
    pub cpu_s: f64,
    /// S3 calls.
    pub s3_calls: f64,
    /// ECS calls.
    pub ecs_calls: f64,
}

/// The result of a distributed run.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    /// The run's folder (`s3://bucket/loadtest/{run-id}`).
    pub run: String,
    /// Generators.
    pub workers: Vec<WorkerOutcome>,
    /// Why the run is invalid; empty when it is valid.
    pub invalid: Vec<String>,
    /// The finished generators' reports added (all of them when the run is valid).
    #[serde(skip)]
    pub report: Option<Report>,
    /// Corrected latency per generator zone (the finished generators' histograms added).
    pub by_worker_zone: BTreeMap<String, Percentiles>,
    /// Responses per generator zone and serving zone (the `x-az` header).
    pub served: BTreeMap<String, BTreeMap<String, u64>>,
    /// What the coordinator spent.
    pub overhead: Overhead,
}

impl Outcome {
    /// Whether the load was delivered as scheduled (every generator ran its share on time).
    pub fn valid(&self) -> bool {
        self.invalid.is_empty()
    }

    /// The merged report checked against `slo`; `None` for an invalid run, which is never
    /// judged.
    pub fn verdict(&self, slo: &Slo) -> Option<Verdict> {
        if !self.valid() {
            return None;
        }
        self.report.as_ref().map(|r| r.verdict(slo))
    }

    /// One line per generator and per reason the run is invalid.
    pub fn summary(&self) -> String {
        use std::fmt::Write as _;
        let mut o = String::new();
        for w in &self.workers {
            let _ = write!(
                o,
                "  generator {} in {}: {:?}, share {}, sent {}, unsent {}",
                w.index, w.zone, w.state, w.share, w.sent, w.unsent
            );
            if let Some(l) = &w.latency {
                let _ = write!(o, ", p99 {:.2} ms", l.p99);
            }
            if let Some(p) = w.pacer_p99_ms {
                let _ = write!(o, ", pacer p99 {p:.3} ms late");
            }
            if let Some(d) = &w.detail {
                let _ = write!(o, " ({d})");
            }
            o.push('\n');
        }
        for (zone, p) in &self.by_worker_zone {
            let _ = writeln!(
                o,
                "  from {zone}: {} responses, p50 {:.2} ms, p99 {:.2} ms",
                p.count, p.p50, p.p99
            );
        }
        for (from, to) in &self.served {
            let served: Vec<String> = to.iter().map(|(z, n)| format!("{z} {n}")).collect();
            let _ = writeln!(o, "  from {from}, served by: {}", served.join(", "));
        }
        let h = &self.overhead;
        let _ = writeln!(
            o,
            "  coordinator: {:.1} s CPU, {} S3 and {} ECS calls in {:.0} s; per generator-minute {:.3} s CPU, {:.1} S3, {:.1} ECS calls; peak RSS {} KiB",
            h.cpu_s,
            h.s3_calls,
            h.ecs_calls,
            h.wall_s,
            h.per_worker_minute.cpu_s,
            h.per_worker_minute.s3_calls,
            h.per_worker_minute.ecs_calls,
            h.peak_rss_kib
                .map_or_else(|| "?".to_owned(), |k| k.to_string())
        );
        for reason in &self.invalid {
            let _ = writeln!(o, "  INVALID: {reason}");
        }
        o
    }
}

/// Live progress.
#[derive(Debug, Clone, Default)]
pub struct Progress {
    /// Generators running (RUNNING in ECS and said where).
    pub running: u32,
    /// Generators in all.
    pub workers: u32,
    /// Whether the schedule has started.
    pub started: bool,
    /// The latest complete second every live generator has uploaded: responses and p99 ms
    /// (their histograms added).
    pub second: Option<(u64, f64)>,
    /// Responses so far (all generators).
    pub responses: u64,
    /// Errors so far.
    pub errors: u64,
}

impl Progress {
    /// One line for a terminal.
    pub fn line(&self) -> String {
        if !self.started {
            return format!(
                "generators running {}/{}, waiting for all",
                self.running, self.workers
            );
        }
        let (rate, p99) = self.second.unwrap_or((0, 0.0));
        format!(
            "{rate:>7} req/s | p99 {p99:>8.2} ms | responses {} errors {} | generators {}/{}",
            self.responses, self.errors, self.running, self.workers
        )
    }
}

/// A generator while the run goes.
#[derive(Debug, Clone)]
struct Gen {
    arn: String,
    hello: Option<Hello>,
    state: Option<WorkerState>,
    counts: Counts,
    detail: Option<String>,
    report: Option<Report>,
}

/// The coordinator: clients and counts.
struct Coordinator<'a> {
    ecs: aws_sdk_ecs::Client,
    ecs_calls: u64,
    store: Store,
    fleet: &'a Fleet,
    run: &'a Distributed,
    gens: Vec<Gen>,
    invalid: Vec<String>,
}

/// Runs `run` on `fleet`: starts the generators, starts the schedule, follows it (`progress`
/// after every poll), stops what still runs, and adds the reports. Bad options are an error
/// before any call; a failed or missing generator makes the outcome invalid rather than an
/// error.
pub async fn coordinate(
    ecs: aws_sdk_ecs::Client,
    s3: aws_sdk_s3::Client,
    fleet: &Fleet,
    run: &Distributed,
    progress: &(dyn Fn(&Progress) + Sync),
) -> Result<Outcome, Error> {
    run.check(fleet)?;
    let began = std::time::Instant::now();
    let cpu0 = cpu_seconds();
    let mut c = Coordinator {
        ecs,
        ecs_calls: 0,
        store: Store::new(s3, &fleet.bucket, &fleet.prefix),
        fleet,
        run,
        gens: Vec::new(),
        invalid: Vec::new(),
    };
    let result = c.drive(progress).await;
    // Whatever happened: no generator is left running.
    c.stop_all().await;
    result?;
    let mut outcome = c.outcome()?;
    let wall = began.elapsed().as_secs_f64();
    let cpu = cpu_seconds().zip(cpu0).map_or(0.0, |(a, b)| a - b);
    let worker_minutes = (f64::from(run.workers) * wall / 60.0).max(f64::EPSILON);
    outcome.overhead = Overhead {
        wall_s: wall,
        cpu_s: cpu,
        peak_rss_kib: peak_rss_kib(),
        s3_calls: c.store.calls(),
        ecs_calls: c.ecs_calls,
        per_worker_minute: PerWorkerMinute {
            cpu_s: cpu / worker_minutes,
            s3_calls: c.store.calls() as f64 / worker_minutes,
            ecs_calls: c.ecs_calls as f64 / worker_minutes,
        },
    };
    Ok(outcome)
}

impl Coordinator<'_> {
    async fn drive(&mut self, progress: &(dyn Fn(&Progress) + Sync)) -> Result<(), Error> {
        for i in 0..self.run.workers {
            let arn = self.run_task(i).await?;
            self.gens.push(Gen {
                arn,
                hello: None,
                state: None,
                counts: Counts::default(),
                detail: None,
                report: None,
            });
        }
        if !self.wait_running(progress).await? {
            return Ok(());
        }
        let t0 = unix_ms() + u64::try_from(self.run.lead.as_millis()).unwrap_or(u64::MAX);
        self.store
            .put_json(
                store::START,
                &Start {
                    t0_unix_ms: t0,
                    workers: self.run.workers,
                    config: self.run.config.clone(),
                },
            )
            .await?;
        self.follow(t0, progress).await
    }

    async fn run_task(&mut self, i: u32) -> Result<String, Error> {
        let f = self.fleet;
        let subnet = &f.subnets[i as usize % f.subnets.len()];
        let net = AwsVpcConfiguration::builder()
            .subnets(subnet)
            .set_security_groups(Some(f.security_groups.clone()))
            .assign_public_ip(AssignPublicIp::Disabled)
            .build()
            .map_err(|e| Error::Internal(format!("RunTask request: {e}")))?;
        let command = vec![
            "loadgen".to_owned(),
            "--bucket".to_owned(),
            f.bucket.clone(),
            "--prefix".to_owned(),
            f.prefix.clone(),
            "--worker".to_owned(),
            format!("{i}/{}", self.run.workers),
        ];
        self.ecs_calls += 1;
        let out = self
            .ecs
            .run_task()
            .cluster(&f.cluster)
            .task_definition(&f.task_definition)
            .launch_type(LaunchType::Fargate)
            .count(1)
            .started_by("stackproof-loadgen")
            .group("loadgen")
            .network_configuration(
                NetworkConfiguration::builder()
                    .awsvpc_configuration(net)
                    .build(),
            )
            .overrides(
                TaskOverride::builder()
                    .container_overrides(
                        ContainerOverride::builder()
                            .name(&f.container)
                            .set_command(Some(command))
                            .build(),
                    )
                    .build(),
            )
            .send()
            .await
            .map_err(aws("RunTask", format!("generator {i} in {}", f.cluster)))?;
        out.tasks()
            .first()
            .and_then(|t| t.task_arn())
            .map(str::to_owned)
            .ok_or_else(|| Error::Aws {
                operation: "RunTask",
                resource: format!("generator {i}"),
                message: format!("no task started: {:?}", out.failures()),
            })
    }

    /// The tasks' last status, stop reason and exit code, by ARN.
    async fn describe(&mut self) -> Result<BTreeMap<String, (String, String)>, Error> {
        let mut map = BTreeMap::new();
        let arns: Vec<String> = self.gens.iter().map(|g| g.arn.clone()).collect();
        for chunk in arns.chunks(100) {
            self.ecs_calls += 1;
            let out = self
                .ecs
                .describe_tasks()
                .cluster(&self.fleet.cluster)
                .set_tasks(Some(chunk.to_vec()))
                .send()
                .await
                .map_err(aws("DescribeTasks", &self.fleet.cluster))?;
            for t in out.tasks() {
                let exit = t
                    .containers()
                    .first()
                    .and_then(|c| c.exit_code())
                    .map(|c| format!(", exit code {c}"))
                    .unwrap_or_default();
                let reason = format!("{}{exit}", t.stopped_reason().unwrap_or("stopped"));
                map.insert(
                    t.task_arn().unwrap_or_default().to_owned(),
                    (t.last_status().unwrap_or_default().to_owned(), reason),
                );
            }
        }
        Ok(map)
    }

    /// Waits until every generator runs and has said where; `false` (the run invalid) when
    /// one stops first or the launch timeout passes.
    async fn wait_running(&mut self, progress: &(dyn Fn(&Progress) + Sync)) -> Result<bool, Error> {
        let deadline = tokio::time::Instant::now() + self.run.launch_timeout;
        loop {
            let tasks = self.describe().await?;
            for i in 0..self.gens.len() {
                let (status, reason) = tasks.get(&self.gens[i].arn).cloned().unwrap_or_default();
                if status == "STOPPED" {
                    self.gens[i].state = Some(WorkerState::NotStarted);
                    self.gens[i].detail = Some(reason.clone());
                    self.invalid
                        .push(format!("generator {i} stopped before the start: {reason}"));
                } else if status == "RUNNING" && self.gens[i].hello.is_none() {
                    let i = u32::try_from(i).unwrap_or(u32::MAX);
                    let hello = self.store.get_json::<Hello>(&store::hello(i)).await?;
                    self.gens[i as usize].hello = hello;
                }
            }
            if !self.invalid.is_empty() {
                return Ok(false);
            }
            let running = self.gens.iter().filter(|g| g.hello.is_some()).count();
            progress(&Progress {
                running: u32::try_from(running).unwrap_or(u32::MAX),
                workers: self.run.workers,
                ..Progress::default()
            });
            if running == self.gens.len() {
                return Ok(true);
            }
            if tokio::time::Instant::now() >= deadline {
                for (i, g) in self.gens.iter_mut().enumerate() {
                    if g.hello.is_none() {
                        g.state = Some(WorkerState::NotStarted);
                        self.invalid.push(format!(
                            "generator {i} was not running within {:?} of its RunTask",
                            self.run.launch_timeout
                        ));
                    }
                }
                return Ok(false);
            }
            tokio::time::sleep(self.run.poll.min(Duration::from_secs(1))).await;
        }
    }

    /// Follows the run until every generator finished, or one failed (the run is invalid).
    async fn follow(
        &mut self,
        t0: u64,
        progress: &(dyn Fn(&Progress) + Sync),
    ) -> Result<(), Error> {
        let length = self.run.config.run_length();
        let drain = Duration::from_secs_f64(self.run.config.timeout.max(0.0));
        // The schedule, its drain, and time to upload; then whoever has not reported is late.
        let deadline = tokio::time::Instant::now()
            + self.run.lead
            + length
            + drain
            + Duration::from_secs(30)
            + self.run.poll * 2;
        loop {
            tokio::time::sleep(self.run.poll).await;
            let tasks = self.describe().await?;
            let mut logs = Vec::new();
            // One listing, then only what is there: one read per running generator.
            let there = self.store.list().await?;
            for i in 0..self.gens.len() {
                let idx = u32::try_from(i).unwrap_or(u32::MAX);
                if let Some(r) = &self.gens[i].report {
                    // A finished generator's last seconds still count in the live view.
                    logs.push(tail(r));
                }
                if self.gens[i].state.is_some() {
                    continue;
                }
                if there.contains(&store::report(idx)) {
                    let bytes = self
                        .store
                        .get(&store::report(idx))
                        .await?
                        .unwrap_or_default();
                    let report = Report::from_shard(&bytes)
                        .map_err(|e| Error::Generators(format!("generator {i}'s report: {e}")))?;
                    logs.push(tail(&report));
                    self.gens[i].state = Some(WorkerState::Finished);
                    self.gens[i].report = Some(report);
                    continue;
                }
                if there.contains(&store::error(idx)) {
                    let error = self
                        .store
                        .get(&store::error(idx))
                        .await?
                        .unwrap_or_default();
                    let error = String::from_utf8_lossy(&error).into_owned();
                    self.fail(i, WorkerState::Failed, format!("failed: {error}"));
                    continue;
                }
                let progressed = if there.contains(&store::progress_log(idx)) {
                    self.store.get_progress(idx).await?
                } else {
                    None
                };
                if let Some((counts, log)) = progressed {
                    self.gens[i].counts = counts;
                    logs.push(log);
                }
                let (status, reason) = tasks.get(&self.gens[i].arn).cloned().unwrap_or_default();
                if status == "STOPPED" {
                    self.fail(
                        i,
                        WorkerState::Died,
                        format!("its task stopped ({reason}) without a report"),
                    );
                }
            }
            if !self.invalid.is_empty() {
                return Ok(());
            }
            progress(&self.live(t0, &logs));
            if self.gens.iter().all(|g| g.state.is_some()) {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                for i in 0..self.gens.len() {
                    if self.gens[i].state.is_none() {
                        self.fail(
                            i,
                            WorkerState::Died,
                            "no report by the end of the schedule, its drain and 30 s to upload"
                                .to_owned(),
                        );
                    }
                }
                return Ok(());
            }
        }
    }

    fn fail(&mut self, i: usize, state: WorkerState, detail: String) {
        let share = self.run.share(u32::try_from(i).unwrap_or(u32::MAX));
        let sent = self.gens[i].counts.sent;
        self.invalid.push(format!(
            "generator {i}: {detail}; {} of its {share} requests unsent (its last progress said {sent} sent)",
            share.saturating_sub(sent)
        ));
        self.gens[i].state = Some(state);
        self.gens[i].detail = Some(detail);
    }

    /// Progress from the live generators' counts and interval logs (added exactly).
    fn live(&self, t0: u64, logs: &[Vec<u8>]) -> Progress {
        let refs: Vec<&[u8]> = logs.iter().map(Vec::as_slice).collect();
        let mut p = Progress {
            running: u32::try_from(self.gens.iter().filter(|g| g.state.is_none()).count())
                .unwrap_or(u32::MAX),
            workers: self.run.workers,
            started: unix_ms() >= t0,
            ..Progress::default()
        };
        for g in &self.gens {
            let (completed, errors) = match &g.report {
                Some(r) => (r.completed, r.errors),
                None => (g.counts.completed, g.counts.errors),
            };
            p.responses += completed;
            p.errors += errors;
        }
        // The latest second every generator's upload holds, their histograms of it added.
        let each: Vec<loadtest::Merged> = refs
            .iter()
            .filter_map(|log| loadtest::merge_interval_logs(&[log]).ok())
            .collect();
        let complete = each
            .iter()
            .map(|m| m.seconds.keys().next_back().copied())
            .collect::<Option<Vec<u64>>>()
            .and_then(|last| last.into_iter().min());
        if let Some(second) = complete {
            let mut sum = loadtest::histogram();
            for h in each.iter().filter_map(|m| m.seconds.get(&second)) {
                let _ = sum.add(h);
            }
            p.second = Some((sum.len(), Percentiles::of(&sum).p99));
        }
        p
    }

    async fn stop_all(&mut self) {
        let running: Vec<String> = self
            .gens
            .iter()
            .filter(|g| g.state != Some(WorkerState::Finished))
            .map(|g| g.arn.clone())
            .collect();
        for arn in running {
            self.ecs_calls += 1;
            let _ = self
                .ecs
                .stop_task()
                .cluster(&self.fleet.cluster)
                .task(&arn)
                .reason("stackproof: the distributed run ended")
                .send()
                .await;
        }
        for g in &mut self.gens {
            if g.state.is_none() {
                g.state = Some(WorkerState::Stopped);
            }
        }
    }

    fn outcome(&self) -> Result<Outcome, Error> {
        let mut workers = Vec::new();
        let mut by_zone: BTreeMap<String, Vec<Report>> = BTreeMap::new();
        let mut served: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
        let mut invalid = self.invalid.clone();
        for (i, g) in self.gens.iter().enumerate() {
            let index = u32::try_from(i).unwrap_or(u32::MAX);
            let zone = g
                .hello
                .as_ref()
                .map_or_else(|| "unknown".to_owned(), |h| h.zone.clone());
            let share = self.run.share(index);
            let mut w = WorkerOutcome {
                index,
                task_arn: g.arn.clone(),
                zone: zone.clone(),
                state: g.state.clone().unwrap_or(WorkerState::Stopped),
                share,
                sent: g.counts.sent,
                unsent: share.saturating_sub(g.counts.sent),
                pacer_p99_ms: None,
                latency: None,
                detail: g.detail.clone(),
                report: g.report.clone(),
            };
            if let Some(r) = &g.report {
                w.sent = r.sent;
                w.unsent = r.unsent;
                w.pacer_p99_ms = Some(r.pacer_lateness_ms.p99);
                w.latency = Some(r.latency_ms.corrected.clone());
                let bound = self.run.max_lateness.as_secs_f64() * 1000.0;
                if r.pacer_lateness_ms.p99 > bound {
                    invalid.push(format!(
                        "generator {i} in {zone} released its requests {:.1} ms late at p99 (bound {bound:.0} ms): the generator, not the system, was slow",
                        r.pacer_lateness_ms.p99
                    ));
                }
                by_zone.entry(zone.clone()).or_default().push(r.clone());
                if let Some(values) = r.by_header.get("x-az") {
                    let to = served.entry(zone.clone()).or_default();
                    for (az, n) in values {
                        *to.entry(az.clone()).or_default() += n;
                    }
                }
            }
            workers.push(w);
        }
        let merge = |reports: &[Report]| {
            Report::merge(reports)
                .map_err(|e| Error::Generators(format!("adding the reports: {e}")))
        };
        let all: Vec<Report> = self.gens.iter().filter_map(|g| g.report.clone()).collect();
        let mut by_worker_zone = BTreeMap::new();
        for (zone, reports) in &by_zone {
            if let Some(m) = merge(reports)? {
                by_worker_zone.insert(zone.clone(), m.latency_ms.corrected);
            }
        }
        Ok(Outcome {
            run: format!("s3://{}/{}", self.fleet.bucket, self.fleet.prefix),
            workers,
            invalid,
            report: merge(&all)?,
            by_worker_zone,
            served,
            overhead: Overhead::default(),
        })
    }
}

/// The last seconds of a finished generator's interval log, as its progress uploads hold.
fn tail(r: &Report) -> Vec<u8> {
    let mut log = Vec::new();
    let first = r.series.len().saturating_sub(worker::LIVE_SECONDS);
    // Into a Vec: fails only on a second that does not decode; the live view then skips it.
    let _ = r.write_interval_log_from(&mut log, first);
    log
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// This process's CPU time (user + system), s; Linux.
fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / 100.0)
}

/// This process's peak resident memory, KiB; Linux.
fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_cover_the_schedule_once() {
        let config = loadtest::Config {
            rate: 100.0,
            duration: 10.0,
            ..loadtest::Config::default()
        };
        let total = loadtest::scheduled_requests(&config);
        for n in [1, 3, 4, 7] {
            let d = Distributed::new(n, config.clone(), Duration::from_secs(1));
            let sum: u64 = (0..n).map(|i| d.share(i)).sum();
            assert_eq!(sum, total, "{n} generators");
        }
    }

    #[test]
    fn bad_options_name_the_field_before_any_call() {
        let fleet = Fleet {
            cluster: "c".into(),
            task_definition: "t".into(),
            container: "loadgen".into(),
            subnets: Vec::new(),
            security_groups: Vec::new(),
            bucket: "b".into(),
            prefix: "p".into(),
        };
        let d = Distributed::new(0, loadtest::Config::default(), Duration::from_secs(1));
        let err = d.check(&fleet).unwrap_err().to_string();
        assert!(err.contains("--workers"), "{err}");
        assert!(err.contains("subnets"), "{err}");
    }
}
