//! The proof run: scenarios in order against one deployed stack, the fault always undone, and
//! everything gathered into a [`ProofReport`]. Each scenario is in a file of its own; this one
//! holds the fault guard and what the scenarios share.

mod baseline;
mod failover;
mod scaling;
mod writes;

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use infra::{Context, Problems};
use loadtest::{Report, RunHandle, Stage};
use stack::{Stack, StackOutputs};
use tokio::time::Instant;

use crate::config::{ProveConfig, Scenario};
use crate::error::{Error, aws};
use crate::model::{Plan, Prediction};
use crate::observe::{Sample, Sampler, Scaling, ServiceRef};
use crate::report::{Check, Figure, Mark, MarkKind, Point, ProofReport, SCHEMA, ScenarioResult};
use crate::target::Target;
use crate::window::{self, TASK_HEADER, ZONE_HEADER};

/// Where progress lines go (one per event, for a terminal).
pub type ProgressFn = Arc<dyn Fn(&str) + Send + Sync>;

/// The stack a proof run works on.
#[derive(Debug, Clone)]
pub struct Deployment {
    /// Its checked configuration (zone isolation goes through it).
    pub stack: Stack,
    /// The context to call AWS (or the sandbox) with.
    pub cx: Context,
    /// What is deployed.
    pub outputs: StackOutputs,
    /// Where its load balancer answers.
    pub target: Target,
}

/// What is in place, to undo.
#[derive(Debug, Clone, Default, PartialEq)]
struct Applied {
    /// The zone isolated.
    isolated: Option<String>,
    /// The zonal shift started (its id).
    shift: Option<String>,
}

type FaultState = Arc<Mutex<Applied>>;

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Runs the scenarios of `config` against `d`.
///
/// Before anything else, a zone left isolated by an earlier run that did not finish is
/// restored. The failover's fault is undone when the scenario ends, fails, panics, or when
/// `cancel` completes (Ctrl-C): then the result is [`Error::Interrupted`].
pub async fn prove(
    d: Deployment,
    config: ProveConfig,
    progress: ProgressFn,
    cancel: impl Future<Output = ()>,
) -> Result<ProofReport, Error> {
    config.validate().map_err(Error::Invalid)?;
    if let Some(zone) = &config.zone
        && !d.outputs.network.zones.contains(zone)
    {
        let mut p = Problems::default();
        p.add(
            "zone",
            zone,
            format!(
                "one of the stack's zones: {}",
                d.outputs.network.zones.join(", ")
            ),
        );
        return Err(Error::Invalid(p));
    }
    let leftovers = restore_leftovers(&d, &progress).await?;
    // Stop conditions: one in ALARM already keeps the run from starting.
    let cw: aws_sdk_cloudwatch::Client = infra::client!(&d.cx, aws_sdk_cloudwatch);
    let stop_alarms = stop_alarms(&config, &d.outputs);
    if let Some((alarm, reason)) = in_alarm(&cw, &stop_alarms).await? {
        return Err(Error::Stopped {
            alarm,
            reason,
            undone: "the run did not start".to_owned(),
        });
    }
    if !stop_alarms.is_empty() {
        progress(&format!(
            "stop conditions: the run stops, its fault undone, when any of {} is in ALARM",
            stop_alarms.join(", ")
        ));
    }
    let every = config.clock.wall(STOP_CHECK_EVERY);
    let fault: FaultState = Arc::default();
    let task = tokio::spawn(run_scenarios(
        d.clone(),
        config,
        Arc::clone(&progress),
        Arc::clone(&fault),
        leftovers,
    ));
    let abort = task.abort_handle();
    tokio::pin!(cancel);
    let outcome = tokio::select! {
        joined = task => Ok(joined),
        () = &mut cancel => {
            abort.abort();
            Err(None)
        }
        stop = watch_alarms(&cw, &stop_alarms, every, &progress) => {
            abort.abort();
            progress(&format!("stop condition: alarm {} is in ALARM ({})", stop.0, stop.1));
            Err(Some(stop))
        }
    };
    let undone = undo(&d, &fault, &progress).await;
    match outcome {
        Err(stopped) => {
            let undone = undone?.unwrap_or_else(|| "no fault was in place".to_owned());
            Err(match stopped {
                None => Error::Interrupted { undone },
                Some((alarm, reason)) => Error::Stopped {
                    alarm,
                    reason,
                    undone,
                },
            })
        }
        Ok(Err(join)) => {
            undone?;
            Err(Error::Internal(format!("the proof run stopped: {join}")))
        }
        Ok(Ok(result)) => {
            undone?;
            result
        }
    }
}

/// How often the stop conditions are read, AWS seconds (on the run's clock).
const STOP_CHECK_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// The run's stop conditions: [`ProveConfig::stop_alarms`], or by default the stack's alarms
/// but the per-zone ones (a failed zone sets those off by design).
fn stop_alarms(config: &ProveConfig, outputs: &StackOutputs) -> Vec<String> {
    match &config.stop_alarms {
        Some(names) => names.clone(),
        None => outputs
            .observability
            .alarm_names
            .iter()
            .filter(|a| !observability::is_zone_alarm(&outputs.stack, a))
            .cloned()
            .collect(),
    }
}

/// The first of `names` in ALARM, with its state reason.
async fn in_alarm(
    cw: &aws_sdk_cloudwatch::Client,
    names: &[String],
) -> Result<Option<(String, String)>, Error> {
    if names.is_empty() {
        return Ok(None);
    }
    let out = cw
        .describe_alarms()
        .set_alarm_names(Some(names.to_vec()))
        .send()
        .await
        .map_err(aws("DescribeAlarms", names.join(", ")))?;
    Ok(out
        .metric_alarms()
        .iter()
        .find(|a| a.state_value() == Some(&aws_sdk_cloudwatch::types::StateValue::Alarm))
        .map(|a| {
            (
                a.alarm_name().unwrap_or_default().to_owned(),
                a.state_reason().unwrap_or_default().to_owned(),
            )
        }))
}

/// Completes with the first of `names` found in ALARM, reading them every `every`; never
/// when there are none. A failed read is not a stop (the next one decides) but is said, once
/// until a read works again: the read before the run already failed it for good errors
/// (a missing permission).
async fn watch_alarms(
    cw: &aws_sdk_cloudwatch::Client,
    names: &[String],
    every: std::time::Duration,
    progress: &ProgressFn,
) -> (String, String) {
    if names.is_empty() {
        return std::future::pending().await;
    }
    let mut failing = false;
    loop {
        tokio::time::sleep(every).await;
        match in_alarm(cw, names).await {
            Ok(Some(found)) => return found,
            Ok(None) => failing = false,
            Err(e) if !failing => {
                failing = true;
                progress(&format!(
                    "stop conditions: could not read the alarms ({e}); reading again"
                ));
            }
            Err(_) => {}
        }
    }
}

/// Undoes the fault in place, if any (the zonal shift too); says what it did.
async fn undo(
    d: &Deployment,
    fault: &FaultState,
    progress: &ProgressFn,
) -> Result<Option<String>, Error> {
    let applied = fault.lock().map(|f| f.clone()).unwrap_or_default();
    let mut done = Vec::new();
    if let Some(id) = &applied.shift {
        cancel_shift(d, id).await.map_err(|e| Error::NotUndone {
            fault: format!("zonal shift {id} is active"),
            source: Box::new(e),
        })?;
        done.push(format!("zonal shift {id} cancelled"));
    }
    if let Some(zone) = &applied.isolated {
        let stopped = d
            .stack
            .restore_zone(&d.cx, zone)
            .await
            .map_err(|e| Error::NotUndone {
                fault: format!("zone {zone} is isolated"),
                source: Box::new(e.into()),
            })?;
        done.push(if stopped.is_empty() {
            format!("{zone} restored")
        } else {
            format!(
                "{zone} restored (AWS FIS experiment {} stopped)",
                stopped.join(", ")
            )
        });
    }
    if let Ok(mut f) = fault.lock() {
        *f = Applied::default();
    }
    if done.is_empty() {
        return Ok(None);
    }
    let line = format!("fault undone: {}", done.join(", "));
    progress(&line);
    Ok(Some(line))
}

/// Cancels zonal shift `id` (one that has ended already counts as cancelled).
async fn cancel_shift(d: &Deployment, id: &str) -> Result<(), Error> {
    let arc: aws_sdk_arczonalshift::Client = infra::client!(&d.cx, aws_sdk_arczonalshift);
    match arc.cancel_zonal_shift().zonal_shift_id(id).send().await {
        Ok(_) => Ok(()),
        Err(e)
            if e.as_service_error().is_some_and(|s| {
                s.is_conflict_exception() || s.is_resource_not_found_exception()
            }) =>
        {
            Ok(())
        }
        Err(e) => Err(aws("CancelZonalShift", id)(e)),
    }
}

/// Restores every zone an earlier run left isolated; returns a note per zone.
async fn restore_leftovers(d: &Deployment, progress: &ProgressFn) -> Result<Vec<String>, Error> {
    let mut notes = Vec::new();
    let mut zones: std::collections::BTreeMap<String, usize> = d
        .stack
        .zone_isolation(&d.cx)
        .await?
        .into_iter()
        .filter(|z| z.is_isolated())
        .map(|z| (z.zone, z.isolated_subnet_ids.len() + z.fis_subnet_ids.len()))
        .collect();
    for e in d.stack.fault_experiments(&d.cx).await? {
        zones.entry(e.zone).or_default();
    }
    for (zone, subnets) in zones {
        let stopped = d.stack.restore_zone(&d.cx, &zone).await?;
        let line = format!(
            "{zone} was still isolated ({subnets} subnets{}), left by an earlier run that did not finish: restored it before starting",
            if stopped.is_empty() {
                String::new()
            } else {
                format!("; AWS FIS experiment {} stopped", stopped.join(", "))
            }
        );
        progress(&line);
        notes.push(line);
    }
    Ok(notes)
}

/// What every scenario needs.
struct Run {
    d: Deployment,
    config: ProveConfig,
    progress: ProgressFn,
    fault: FaultState,
    origin_ms: u64,
    sampler: Sampler,
    service: ServiceRef,
    scaling: Option<Scaling>,
    /// What the model predicts, and the deadlines derived from it.
    prediction: Prediction,
    /// Each load run's report, with the scenario it belongs to.
    reports: Vec<Report>,
    marks: Vec<Mark>,
    /// Seconds of writes (az-failover with a database), for the report's chart.
    writes: Vec<crate::report::WritePoint>,
}

async fn run_scenarios(
    d: Deployment,
    config: ProveConfig,
    progress: ProgressFn,
    fault: FaultState,
    leftovers: Vec<String>,
) -> Result<ProofReport, Error> {
    let origin = Instant::now();
    let origin_ms = unix_ms();
    let ecs: aws_sdk_ecs::Client = infra::client!(&d.cx, aws_sdk_ecs);
    let aas: aws_sdk_applicationautoscaling::Client =
        infra::client!(&d.cx, aws_sdk_applicationautoscaling);
    let net = &d.outputs.network;
    let service = ServiceRef {
        ecs,
        cluster: d.outputs.compute.cluster_name.clone(),
        service: d.outputs.compute.service_name.clone(),
        zone_of_subnet: net
            .private_subnet_ids
            .iter()
            .cloned()
            .zip(net.zones.iter().cloned())
            .collect::<HashMap<_, _>>(),
    };
    let scaling = crate::observe::scaling(&aas, &service.cluster, &service.service).await?;
    let elb: aws_sdk_elasticloadbalancingv2::Client =
        infra::client!(&d.cx, aws_sdk_elasticloadbalancingv2);
    let health =
        crate::model::health_timing(&elb, &d.outputs.load_balancer.target_group_arn).await?;
    // One sample now: the service exists.
    let first = service.sample().await?;
    let mut prediction = crate::model::predict(
        &config,
        health,
        scaling.as_ref(),
        Plan {
            tasks: first.desired,
            start_rps: config
                .baseline_rps
                .unwrap_or(config.rps / 5.0)
                .min(config.rps),
        },
    );
    // With a database, the zone stays failed long enough for it to fail over too, unless the
    // fault's length is given.
    if d.outputs.data.is_some() && config.fault_max_s.is_none() {
        prediction.fault_max_s = prediction.fault_max_s.max(writes::fault_max_s());
    }
    for line in prediction.lines() {
        progress(&line);
    }
    progress(&format!(
        "service {}: desired {}, running {} ({}); {}",
        service.service,
        first.desired,
        first.running,
        by_zone(&first.running_by_zone),
        match &scaling {
            Some(s) => format!(
                "scales {}..{}{}",
                s.min,
                s.max,
                s.per_task_rps()
                    .map(|r| format!(", {r:.0} rps per task at its target value"))
                    .unwrap_or_default()
            ),
            None => "no autoscaling".to_owned(),
        }
    ));
    let sampler = Sampler::start(service.clone(), origin, first);
    let mut run = Run {
        d,
        config,
        progress,
        fault,
        origin_ms,
        sampler,
        service,
        scaling,
        prediction,
        reports: Vec::new(),
        marks: Vec::new(),
        writes: Vec::new(),
    };
    let scenarios = run.all_scenarios(leftovers).await?;
    let passed = scenarios.iter().all(|s| s.passed);
    let timeline = run.timeline();
    Ok(ProofReport {
        schema: SCHEMA,
        stack: run.d.outputs.stack.clone(),
        region: run.d.outputs.region.clone(),
        url: run.d.target.url.clone(),
        target: run.d.target.kind.clone(),
        clock: run.config.clock,
        prediction: Some(run.prediction.clone()),
        started_unix_ms: origin_ms,
        elapsed_s: origin.elapsed().as_secs_f64(),
        rps: run.config.rps,
        slo: run.config.slo,
        scenarios,
        timeline,
        service: run.sampler.points(),
        marks: run.marks,
        writes: run.writes,
        passed,
    })
}

impl Run {
    /// Waits for a steady service, then runs the scenarios asked for, in order; `leftovers`
    /// (what an earlier, killed run left) go to the az-failover scenario's notes, else to the
    /// first scenario's.
    async fn all_scenarios(
        &mut self,
        leftovers: Vec<String>,
    ) -> Result<Vec<ScenarioResult>, Error> {
        self.wait_for_service().await?;
        let mut scenarios = Vec::new();
        if self.config.runs(Scenario::Baseline) {
            scenarios.push(self.baseline().await?);
        }
        if self.config.runs(Scenario::Scaling) {
            scenarios.push(self.scaling_scenario().await?);
        }
        if self.config.runs(Scenario::AzFailover) {
            let mut s = self.failover().await?;
            s.notes.extend(leftovers);
            scenarios.push(s);
        } else if let Some(first) = scenarios.first_mut() {
            first.notes.extend(leftovers);
        }
        let sampling_errors = self.sampler.errors();
        if !sampling_errors.is_empty()
            && let Some(last) = scenarios.last_mut()
        {
            last.notes.push(format!(
                "reading the service failed {} times (first: {})",
                sampling_errors.len(),
                sampling_errors[0]
            ));
        }
        Ok(scenarios)
    }
}

/// The baseline's rate: `baseline_rps`, else a fifth of `rps`, at most half of what `tasks`
/// carry at their target-tracking value.
fn baseline_rate(c: &ProveConfig, scaling: Option<&Scaling>, tasks: u32) -> f64 {
    c.baseline_rps.unwrap_or_else(|| {
        let fifth = c.rps / 5.0;
        match scaling.and_then(Scaling::per_task_rps) {
            Some(r) => fifth.min(r * f64::from(tasks.max(1)) / 2.0),
            None => fifth,
        }
        .max(1.0)
    })
}

fn by_zone(m: &BTreeMap<String, u32>) -> String {
    if m.is_empty() {
        return "no task runs".to_owned();
    }
    m.iter()
        .map(|(z, n)| format!("{n} in {z}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn check(name: &str, passed: bool, detail: String) -> Check {
    Check {
        name: name.to_owned(),
        passed,
        detail,
    }
}

fn fig(key: &str, label: &str, value: Option<f64>, unit: &str) -> Figure {
    Figure::new(key, label, value, unit)
}

/// A load run in progress, with the wall clock of its schedule's start.
struct Load {
    handle: RunHandle,
    start_ms: u64,
}

impl Load {
    /// The second of the run we are in now.
    fn now_s(&self) -> f64 {
        (unix_ms().saturating_sub(self.start_ms)) as f64 / 1000.0
    }

    /// Waits for the next complete second; false once the run is over.
    async fn tick(&self, rx: &mut tokio::sync::watch::Receiver<loadtest::Snapshot>) -> bool {
        rx.changed().await.is_ok()
    }

    /// Requests in flight now: started, not yet answered.
    fn outstanding(&self, rx: &tokio::sync::watch::Receiver<loadtest::Snapshot>) -> u64 {
        let s = rx.borrow();
        s.sent.saturating_sub(s.completed + s.errors)
    }
}

impl Run {
    fn say(&self, line: &str) {
        (self.progress)(line);
    }

    async fn start_load(
        &self,
        rate: f64,
        stages: Vec<Stage>,
        duration: f64,
    ) -> Result<Load, Error> {
        let c = &self.config;
        let config = loadtest::Config {
            url: self.d.target.url.clone(),
            rate,
            duration,
            stages,
            connections: c.connections(),
            threads: 1,
            timeout: c.request_timeout(),
            connect_timeout: c.connect_timeout(),
            // A client that keeps DNS answers as long as their TTL allows (the ALB's is 60 s);
            // on AWS the system's resolver gives no TTL: at most the same 60 s.
            dns_ttl: c.clock.wall_s(aws_model::aws::elb::DNS_TTL.as_secs_f64()),
            breakdown_headers: vec![ZONE_HEADER.to_owned(), TASK_HEADER.to_owned()],
            resolver: self.d.target.resolver(),
            ..loadtest::Config::default()
        };
        let handle = loadtest::start(config).await?;
        // The engine starts its schedule 100 ms after `start` returns.
        Ok(Load {
            handle,
            start_ms: unix_ms() + 100,
        })
    }

    /// Seconds from the report's start of second `t` of `report`.
    fn global(&self, report: &Report, t: f64) -> f64 {
        (report.started_unix_ms.saturating_sub(self.origin_ms)) as f64 / 1000.0 + t
    }

    fn mark_scenario(&mut self, name: &str, report: &Report) -> (f64, f64) {
        let start = self.global(report, 0.0);
        let end = self.global(report, report.series.len() as f64);
        self.marks.push(Mark {
            kind: MarkKind::Scenario,
            label: name.to_owned(),
            start_s: start,
            end_s: end,
        });
        (start, end)
    }

    fn capacity(&self, tasks: u32) -> Option<f64> {
        self.scaling
            .as_ref()
            .and_then(Scaling::per_task_rps)
            .map(|r| r * f64::from(tasks))
    }

    /// Wall seconds of `model_s` AWS seconds on the run's clock.
    fn wall(&self, model_s: f64) -> f64 {
        self.config.clock.wall_s(model_s)
    }

    /// Waits until the service runs its desired count and its new tasks had time for their
    /// first health check, within the predicted start of a service times the margin: a stack
    /// deployed a moment ago is still launching its tasks (about a minute and a half on AWS).
    async fn wait_for_service(&mut self) -> Result<(), Error> {
        let start = self.prediction.service_start;
        let deadline = self.wall(start.max * crate::model::MARGIN);
        let first_check = self.wall(self.prediction.service.health.first_pass().max);
        let t0 = Instant::now();
        let mut announced = false;
        loop {
            let s = self.sample();
            if s.desired > 0 && s.running >= s.desired {
                if announced {
                    self.say(&format!(
                        "service steady: {} tasks running after {:.0} s; waiting {:.1} s for their first health check",
                        s.running,
                        t0.elapsed().as_secs_f64(),
                        first_check
                    ));
                    tokio::time::sleep(std::time::Duration::from_secs_f64(first_check)).await;
                }
                return Ok(());
            }
            if !announced {
                self.say(&format!(
                    "waiting for the service: desired {}, running {} (a task starts {} after it is asked for; at most {:.0} s of wall time)",
                    s.desired, s.running, start, deadline
                ));
                announced = true;
            }
            if t0.elapsed().as_secs_f64() > deadline {
                return Err(Error::Internal(format!(
                    "the service did not run its {} tasks within {deadline:.0} s (predicted {start}); see the service's ECS events (in the sandbox, also the sandbox's status and log)",
                    s.desired
                )));
            }
            tokio::time::sleep(std::time::Duration::from_millis(250)).await;
        }
    }

    fn sample(&self) -> Sample {
        self.sampler.last().unwrap_or_default()
    }

    fn timeline(&self) -> Vec<Point> {
        let mut points = Vec::new();
        for r in &self.reports {
            for s in &r.series {
                points.push(Point {
                    t: self.global(r, f64::from(s.t)),
                    sent: s.sent,
                    ok: s.ok,
                    errors: window::failed(s),
                    p50_ms: s.p50_ms,
                    p99_ms: s.p99_ms,
                    by_zone: window::values(s, ZONE_HEADER)
                        .map(|(z, n)| (z.clone(), n))
                        .collect(),
                    tasks_serving: u32::try_from(window::values(s, TASK_HEADER).count())
                        .unwrap_or(u32::MAX),
                });
            }
        }
        points
    }
}

fn finish(
    name: &str,
    start_s: f64,
    end_s: f64,
    checks: Vec<Check>,
    figures: Vec<Figure>,
    notes: Vec<String>,
) -> ScenarioResult {
    ScenarioResult {
        name: name.to_owned(),
        passed: checks.iter().all(|c| c.passed),
        start_s,
        end_s,
        checks,
        figures,
        notes,
    }
}
