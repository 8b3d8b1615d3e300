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

mod outcome;
mod store;
pub mod worker;

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_sdk_ecs::types::{
    AssignPublicIp, AwsVpcConfiguration, ContainerOverride, LaunchType, NetworkConfiguration,
    TaskOverride,
};
use loadtest::{Percentiles, Report};

use crate::error::{Error, aws};
use store::{Counts, Hello, Start, Store};

pub use outcome::{Outcome, Overhead, PerWorkerMinute, Progress, WorkerOutcome, WorkerState};
pub use worker::{WorkerOptions, task_identity, work};

use outcome::{cpu_seconds, peak_rss_kib};

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
        check_workers(self.workers, &mut p);
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

/// Records a problem (`--workers`) when `workers` is not 1 to [`MAX_WORKERS`].
pub fn check_workers(workers: u32, problems: &mut infra::Problems) {
    if !(1..=MAX_WORKERS).contains(&workers) {
        problems.add(
            "--workers",
            workers,
            format!("1 to {MAX_WORKERS} generators"),
        );
    }
}

/// Most generators of one run (RunTask starts ten at a time; a hundred is far beyond what one
/// stack's load balancer needs here).
pub const MAX_WORKERS: u32 = 100;

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
    let not_stopped = c.stop_all().await;
    if let Err(e) = result {
        if not_stopped.is_empty() {
            return Err(e);
        }
        return Err(Error::Generators(format!(
            "{e}; and these generators could not be stopped (stop them with `aws ecs stop-task`): {}",
            not_stopped.join("; ")
        )));
    }
    let mut outcome = c.outcome()?;
    outcome.not_stopped = not_stopped;
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

    /// Stops every generator that has not finished; returns the ones StopTask failed for.
    async fn stop_all(&mut self) -> Vec<String> {
        let mut failed = Vec::new();
        let running: Vec<String> = self
            .gens
            .iter()
            .filter(|g| g.state != Some(WorkerState::Finished))
            .map(|g| g.arn.clone())
            .collect();
        for arn in running {
            self.ecs_calls += 1;
            if let Err(e) = self
                .ecs
                .stop_task()
                .cluster(&self.fleet.cluster)
                .task(&arn)
                .reason("stackproof: the distributed run ended")
                .send()
                .await
            {
                failed.push(format!(
                    "{arn}: {}",
                    aws_smithy_types::error::display::DisplayErrorContext(&e)
                ));
            }
        }
        for g in &mut self.gens {
            if g.state.is_none() {
                g.state = Some(WorkerState::Stopped);
            }
        }
        failed
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
            not_stopped: Vec::new(),
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
