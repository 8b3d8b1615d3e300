//! The proof run: scenarios in order against one deployed stack, the fault always undone, and
//! everything gathered into a [`ProofReport`].

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use infra::{Context, Problems};
use loadtest::{Report, RunHandle, Second, Stage};
use stack::{Stack, StackOutputs};
use tokio::time::Instant;

use crate::config::{Fault, ProveConfig, Scenario};
use crate::error::{Error, aws};
use crate::observe::{Sample, Sampler, Scaling, ServiceRef};
use crate::report::{Check, Figure, Mark, MarkKind, Point, ProofReport, SCHEMA, ScenarioResult};
use crate::target::Target;
use crate::window::{self, TASK_HEADER, Window, ZONE_HEADER};

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

/// A fault in place, to undo.
#[derive(Debug, Clone, PartialEq)]
enum Applied {
    Isolated(String),
}

type FaultState = Arc<Mutex<Option<Applied>>>;

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
        joined = task => Some(joined),
        () = &mut cancel => {
            abort.abort();
            None
        }
    };
    let undone = undo(&d, &fault, &progress).await;
    match outcome {
        None => Err(Error::Interrupted {
            undone: undone?.unwrap_or_else(|| "no fault was in place".to_owned()),
        }),
        Some(Err(join)) => {
            undone?;
            Err(Error::Internal(format!("the proof run stopped: {join}")))
        }
        Some(Ok(result)) => {
            undone?;
            result
        }
    }
}

/// Undoes the fault in place, if any; says what it did.
async fn undo(
    d: &Deployment,
    fault: &FaultState,
    progress: &ProgressFn,
) -> Result<Option<String>, Error> {
    let applied = fault.lock().ok().and_then(|f| f.clone());
    let Some(Applied::Isolated(zone)) = applied else {
        return Ok(None);
    };
    d.stack.restore_zone(&d.cx, &zone).await?;
    if let Ok(mut f) = fault.lock() {
        *f = None;
    }
    let line = format!("fault undone: {zone} restored");
    progress(&line);
    Ok(Some(line))
}

/// Restores every zone an earlier run left isolated; returns a note per zone.
async fn restore_leftovers(d: &Deployment, progress: &ProgressFn) -> Result<Vec<String>, Error> {
    let mut notes = Vec::new();
    for z in d.stack.zone_isolation(&d.cx).await? {
        if z.isolated_subnet_ids.is_empty() {
            continue;
        }
        d.stack.restore_zone(&d.cx, &z.zone).await?;
        let line = format!(
            "{} was still isolated ({} subnets), left by an earlier run that did not finish: restored it before starting",
            z.zone,
            z.isolated_subnet_ids.len()
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
    /// Each load run's report, with the scenario it belongs to.
    reports: Vec<Report>,
    marks: Vec<Mark>,
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
    // One sample now: the service exists and answers.
    let first = service.sample().await?;
    progress(&format!(
        "service {}: desired {}, running {} ({}); {}",
        service.service,
        first.desired,
        first.running,
        by_zone(&first.running_by_zone),
        match scaling {
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
        reports: Vec::new(),
        marks: Vec::new(),
    };
    let mut scenarios = Vec::new();
    if run.config.runs(Scenario::Baseline) {
        scenarios.push(run.baseline().await?);
    }
    if run.config.runs(Scenario::Scaling) {
        scenarios.push(run.scaling_scenario().await?);
    }
    if run.config.runs(Scenario::AzFailover) {
        let mut s = run.failover().await?;
        s.notes.extend(leftovers);
        scenarios.push(s);
    } else if let Some(first) = scenarios.first_mut() {
        first.notes.extend(leftovers);
    }
    let sampling_errors = run.sampler.errors();
    if !sampling_errors.is_empty()
        && let Some(last) = scenarios.last_mut()
    {
        last.notes.push(format!(
            "reading the service failed {} times (first: {})",
            sampling_errors.len(),
            sampling_errors[0]
        ));
    }
    let passed = scenarios.iter().all(|s| s.passed);
    let timeline = run.timeline();
    Ok(ProofReport {
        schema: SCHEMA,
        stack: run.d.outputs.stack.clone(),
        region: run.d.outputs.region.clone(),
        url: run.d.target.url.clone(),
        target: run.d.target.kind.clone(),
        started_unix_ms: origin_ms,
        elapsed_s: origin.elapsed().as_secs_f64(),
        rps: run.config.rps,
        slo: run.config.slo,
        scenarios,
        timeline,
        service: run.sampler.points(),
        marks: run.marks,
        passed,
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
            timeout: c.timeout_s,
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
            .and_then(|s| s.per_task_rps())
            .map(|r| r * f64::from(tasks))
    }

    fn sample(&self) -> Sample {
        self.sampler.last().unwrap_or_default()
    }

    async fn baseline(&mut self) -> Result<ScenarioResult, Error> {
        let before = self.sample();
        let rate = self.config.baseline_rps.unwrap_or_else(|| {
            let fifth = self.config.rps / 5.0;
            match self.capacity(before.running.max(1)) {
                Some(cap) => fifth.min(cap / 2.0),
                None => fifth,
            }
            .max(1.0)
        });
        self.say(&format!(
            "baseline: {rate:.0} rps for {:.0} s",
            self.config.baseline_s
        ));
        let load = self
            .start_load(rate, Vec::new(), self.config.baseline_s)
            .await?;
        let report = load.handle.wait().await?;
        let w = Window::of(&report, 0, u32::MAX);
        let (slo_ok, slo_detail) = w.slo(&self.config.slo);
        let after = self.sample();
        let with_tasks: BTreeSet<&String> = after
            .running_by_zone
            .iter()
            .filter(|(_, n)| **n > 0)
            .map(|(z, _)| z)
            .collect();
        let missing: Vec<&str> = with_tasks
            .iter()
            .filter(|z| !w.zones.contains_key(z.as_str()))
            .map(|z| z.as_str())
            .collect();
        let mut checks = vec![
            check("SLO holds", slo_ok, slo_detail),
            check(
                "every zone with tasks serves",
                missing.is_empty() && !w.zones.is_empty(),
                if missing.is_empty() {
                    w.split()
                } else {
                    format!("{} (no answer from {})", w.split(), missing.join(", "))
                },
            ),
        ];
        if w.tasks.is_empty() {
            checks.push(check(
                "tasks answer",
                false,
                "no response carried an x-task header".to_owned(),
            ));
        }
        let mut figures = vec![
            fig(
                "rate_rps",
                "rate achieved",
                Some(report.achieved_rate),
                "rps",
            ),
            fig("p50_ms", "p50 latency", Some(w.p50()), "ms"),
            fig("p99_ms", "p99 latency", Some(w.p99()), "ms"),
            fig("error_pct", "errors", Some(w.error_rate() * 100.0), "%"),
            fig(
                "tasks",
                "tasks running",
                Some(f64::from(after.running)),
                "tasks",
            ),
        ];
        for z in w.zones.keys() {
            figures.push(fig(
                &format!("share_{z}_pct"),
                &format!("share of {z}"),
                Some(w.zone_share(z)),
                "%",
            ));
        }
        let (start_s, end_s) = self.mark_scenario("baseline", &report);
        self.reports.push(report);
        Ok(finish(
            "baseline",
            start_s,
            end_s,
            checks,
            figures,
            Vec::new(),
        ))
    }

    async fn scaling_scenario(&mut self) -> Result<ScenarioResult, Error> {
        let c = self.config.clone();
        let before = self.sample();
        let initial_tasks: BTreeSet<String> =
            before.tasks_by_zone.values().flatten().cloned().collect();
        let Some(scaling) = self.scaling else {
            return Ok(finish(
                "scaling",
                0.0,
                0.0,
                vec![check(
                    "the service scales",
                    false,
                    "the service has no scalable target in Application Auto Scaling".to_owned(),
                )],
                Vec::new(),
                Vec::new(),
            ));
        };
        let d0 = before.desired;
        if d0 >= scaling.max {
            return Ok(finish(
                "scaling",
                0.0,
                0.0,
                vec![check(
                    "desired count rises",
                    false,
                    format!(
                        "{d0} -> {d0}: the service already runs its max-count ({}); it cannot scale out",
                        scaling.max
                    ),
                )],
                Vec::new(),
                Vec::new(),
            ));
        }
        let capacity = self.capacity(before.running.max(1));
        if let Some(cap) = capacity
            && cap >= c.rps
        {
            return Ok(finish(
                "scaling",
                0.0,
                0.0,
                vec![check(
                    "the load exceeds what the tasks carry",
                    false,
                    format!(
                        "{} rps does not exceed what {} tasks carry at the target-tracking value ({cap:.0} rps): scaling cannot be shown; raise --rps above {cap:.0}",
                        c.rps, before.running
                    ),
                )],
                Vec::new(),
                Vec::new(),
            ));
        }
        let start_rate = c.baseline_rps.unwrap_or(c.rps / 5.0).min(c.rps);
        self.say(&format!(
            "scaling: {start_rate:.0} -> {} rps over {:.0} s, then held until the service settles (at most {:.0} s); {} tasks carry {}",
            c.rps,
            c.ramp_s,
            c.scale_timeout_s,
            before.running,
            capacity.map_or("an unknown rate (no requests-per-target policy)".to_owned(), |x| format!("{x:.0} rps"))
        ));
        let mut stages = Vec::new();
        if c.ramp_s > 0.0 {
            stages.push(Stage {
                target: c.rps,
                duration: c.ramp_s,
            });
        }
        stages.push(Stage {
            target: c.rps,
            duration: c.scale_timeout_s + c.settle_s + 30.0,
        });
        let load = self.start_load(start_rate, stages, 0.0).await?;
        let mut rx = load.handle.snapshots();
        let threshold = capacity.unwrap_or(0.0);
        let mut t_over: Option<f64> = None;
        let mut t_first_out: Option<f64> = None;
        let mut t_steady: Option<f64> = None;
        let mut peak_desired = d0;
        let mut last_desired = d0;
        while load.tick(&mut rx).await {
            let now = load.now_s();
            let series = load.handle.series();
            if t_over.is_none()
                && let Some(s) = series.iter().find(|s| s.sent as f64 > threshold)
            {
                t_over = Some(f64::from(s.t));
                self.say(&format!(
                    "scaling: the load passed {threshold:.0} rps at {}s",
                    s.t
                ));
            }
            let s = self.sample();
            peak_desired = peak_desired.max(s.desired);
            if s.desired != last_desired {
                self.say(&format!(
                    "scaling: desired {} -> {} at {now:.0}s (running {})",
                    last_desired, s.desired, s.running
                ));
                last_desired = s.desired;
            }
            if t_first_out.is_none() && s.desired > d0 {
                t_first_out = Some(now);
            }
            let serving = serving(&series, 5);
            let enough = f64::from(s.desired) * scaling.per_task_rps().unwrap_or(f64::INFINITY)
                >= c.rps * 0.999
                || s.desired >= scaling.max;
            let steady = t_over.is_some()
                && s.desired > d0
                && s.running >= s.desired
                && serving.len() >= s.desired as usize
                && enough;
            match (t_steady, steady) {
                (None, true) => {
                    t_steady = Some(now);
                    self.say(&format!(
                        "scaling: steady at {now:.0}s: {} tasks running and serving",
                        s.running
                    ));
                }
                (Some(_), false) if s.desired > d0 && s.desired != s.running => t_steady = None,
                _ => {}
            }
            if t_steady.is_some_and(|t| now - t >= c.settle_s) {
                break;
            }
            if t_over.is_some_and(|t| now - t >= c.scale_timeout_s) {
                self.say("scaling: no steady state within the time allowed");
                break;
            }
            if t_over.is_none() && now >= c.ramp_s + 30.0 {
                self.say("scaling: the load never exceeded the capacity");
                break;
            }
        }
        load.handle.stop();
        let report = load.handle.wait().await?;
        let end = self.sample();
        let n = u32::try_from(report.series.len()).unwrap_or(u32::MAX);
        let settle_from = t_steady.map_or(n.saturating_sub(c.settle_s as u32), |t| t.ceil() as u32);
        let settled = Window::of(&report, settle_from, n);
        let whole = Window::of(&report, 0, n);
        let new_tasks: Vec<&String> = whole
            .tasks
            .iter()
            .filter(|t| !initial_tasks.contains(*t))
            .collect();
        let (slo_ok, slo_detail) = settled.slo(&c.slo);
        let checks = vec![
            check(
                "desired count rises",
                peak_desired > d0,
                format!(
                    "{d0} -> {peak_desired} (scalable {}..{})",
                    scaling.min, scaling.max
                ),
            ),
            check(
                "running count follows",
                end.running >= end.desired && end.running > before.running,
                format!(
                    "running {} -> {} (desired {})",
                    before.running, end.running, end.desired
                ),
            ),
            check(
                "new tasks take traffic",
                !new_tasks.is_empty(),
                format!(
                    "{} tasks answered that were not running before ({} before, {} answered in all)",
                    new_tasks.len(),
                    initial_tasks.len(),
                    whole.tasks.len()
                ),
            ),
            check(
                "settles",
                t_steady.is_some(),
                match (t_steady, t_over) {
                    (Some(s), Some(o)) => format!(
                        "steady {:.0} s after the load passed capacity: {} tasks carry {} rps",
                        s - o,
                        end.desired,
                        c.rps
                    ),
                    _ => format!(
                        "not steady within {:.0} s: desired {}, running {}, {} serving",
                        c.scale_timeout_s,
                        end.desired,
                        end.running,
                        serving(&report.series, 5).len()
                    ),
                },
            ),
            check(
                "SLO holds once settled",
                slo_ok && t_steady.is_some(),
                slo_detail,
            ),
        ];
        let since = |t: Option<f64>| t.zip(t_over).map(|(t, o)| (t - o).max(0.0));
        let figures = vec![
            fig(
                "peak_rps",
                "peak rate achieved",
                report.series.iter().map(|s| s.sent as f64).reduce(f64::max),
                "rps",
            ),
            fig(
                "capacity_rps",
                "capacity before (at target value)",
                capacity,
                "rps",
            ),
            fig(
                "time_to_first_scale_out_s",
                "time to first scale-out",
                since(t_first_out),
                "s",
            ),
            fig(
                "time_to_steady_s",
                "time to steady state",
                since(t_steady),
                "s",
            ),
            fig(
                "tasks_before",
                "tasks before",
                Some(f64::from(before.running)),
                "tasks",
            ),
            fig(
                "tasks_after",
                "tasks after",
                Some(f64::from(end.running)),
                "tasks",
            ),
            fig(
                "new_tasks_serving",
                "new tasks serving",
                Some(new_tasks.len() as f64),
                "tasks",
            ),
            fig(
                "p99_settled_ms",
                "p99 once settled",
                Some(settled.p99()),
                "ms",
            ),
            fig(
                "error_settled_pct",
                "errors once settled",
                Some(settled.error_rate() * 100.0),
                "%",
            ),
        ];
        let mut notes = Vec::new();
        if peak_desired >= scaling.max && scaling.max > d0 {
            notes.push(format!(
                "the service reached its max-count ({})",
                scaling.max
            ));
        }
        let (start_s, end_s) = self.mark_scenario("scaling", &report);
        self.reports.push(report);
        Ok(finish("scaling", start_s, end_s, checks, figures, notes))
    }

    async fn inject(&self, zone: &str, tasks: &[String]) -> Result<(), Error> {
        match self.config.fault {
            Fault::NetworkAcl => {
                // Recorded first: even a call that fails half way gets undone.
                if let Ok(mut f) = self.fault.lock() {
                    *f = Some(Applied::Isolated(zone.to_owned()));
                }
                self.d.stack.isolate_zone(&self.d.cx, zone).await?;
            }
            Fault::StopTasks => {
                for arn in tasks {
                    self.service
                        .ecs
                        .stop_task()
                        .cluster(&self.service.cluster)
                        .task(arn)
                        .reason(format!("stackproof az-failover: {zone} fails"))
                        .send()
                        .await
                        .map_err(aws("StopTask", arn.clone()))?;
                }
            }
        }
        Ok(())
    }

    async fn failover(&mut self) -> Result<ScenarioResult, Error> {
        let c = self.config.clone();
        let slo = c.slo;
        let total = c.before_s + c.fault_max_s + c.after_s + 10.0;
        self.say(&format!(
            "az-failover: {} rps; {:.0} s steady, then a zone fails ({})",
            c.rps,
            c.before_s,
            match c.fault {
                Fault::NetworkAcl => "deny-all network ACL",
                Fault::StopTasks => "its tasks stopped",
            }
        ));
        let load = self.start_load(c.rps, Vec::new(), total).await?;
        let mut rx = load.handle.snapshots();
        while load.now_s() < c.before_s {
            if !load.tick(&mut rx).await {
                break;
            }
        }
        let series = load.handle.series();
        let before_w = zones_of(&series, 0, series.len());
        let zone = match &c.zone {
            Some(z) => z.clone(),
            None => before_w
                .iter()
                .max_by_key(|(_, n)| **n)
                .map(|(z, _)| z.clone())
                .or_else(|| self.d.outputs.network.zones.first().cloned())
                .unwrap_or_default(),
        };
        let before = self.sample();
        let remaining_before: u32 = before
            .running_by_zone
            .iter()
            .filter(|(z, _)| **z != zone)
            .map(|(_, n)| n)
            .sum();
        let zone_tasks = before.tasks_by_zone.get(&zone).cloned().unwrap_or_default();
        // Requests normally in flight: those slower than the objective mean a stall.
        let stall_limit = (c.rps * slo.p99_ms / 1000.0).ceil() as u64 + 5;
        let fault_ms = unix_ms();
        let fault_at = load.now_s();
        self.inject(&zone, &zone_tasks).await?;
        self.say(&format!(
            "az-failover: {zone} failed at {fault_at:.0}s ({} of its tasks)",
            zone_tasks.len()
        ));
        let fault_second = fault_at.floor() as u32;
        let mut first_bad: Option<f64> = None;
        let mut last_bad: Option<f64> = None;
        let mut stalled_at: Option<f64> = None;
        loop {
            if !load.tick(&mut rx).await {
                break;
            }
            let now = load.now_s();
            let series = load.handle.series();
            for s in series.iter().filter(|s| s.t >= fault_second) {
                if failed_or_slow(s, slo.p99_ms) {
                    let t = f64::from(s.t);
                    first_bad = Some(first_bad.map_or(t, |f: f64| f.min(t)));
                    last_bad = Some(last_bad.map_or(t + 1.0, |l: f64| l.max(t + 1.0)));
                }
            }
            if load.outstanding(&rx) > stall_limit {
                stalled_at.get_or_insert(now);
                first_bad = Some(first_bad.map_or(now, |f: f64| f.min(now)));
                last_bad = Some(last_bad.map_or(now, |l: f64| l.max(now)));
            }
            let elapsed = now - fault_at;
            if elapsed >= c.fault_max_s {
                self.say("az-failover: the longest fault allowed has passed");
                break;
            }
            match last_bad {
                Some(l) if now - l >= c.settle_s => break,
                None if elapsed >= c.settle_s.max(20.0) => break,
                _ => {}
            }
        }
        let restore_ms = unix_ms();
        let restore_at = load.now_s();
        let at_end = self.sample();
        if c.fault == Fault::NetworkAcl {
            self.d.stack.restore_zone(&self.d.cx, &zone).await?;
            if let Ok(mut f) = self.fault.lock() {
                *f = None;
            }
        }
        self.say(&format!(
            "az-failover: {zone} restored at {restore_at:.0}s; watching recovery for {:.0} s",
            c.after_s
        ));
        while load.now_s() < restore_at + c.after_s {
            if !load.tick(&mut rx).await {
                break;
            }
        }
        load.handle.stop();
        let report = load.handle.wait().await?;
        self.marks.push(Mark {
            kind: MarkKind::Fault,
            label: format!(
                "{zone} {}",
                match c.fault {
                    Fault::NetworkAcl => "isolated",
                    Fault::StopTasks => "tasks stopped",
                }
            ),
            start_s: fault_ms.saturating_sub(self.origin_ms) as f64 / 1000.0,
            end_s: restore_ms.saturating_sub(self.origin_ms) as f64 / 1000.0,
        });
        let n = u32::try_from(report.series.len()).unwrap_or(u32::MAX);
        let (f0, f1) = (fault_at.floor() as u32, restore_at.ceil() as u32);
        let before_w = Window::of(&report, 0, f0);
        let during = Window::of(&report, f0, f1);
        let clean_from = last_bad.map_or(f0, |l| l.ceil() as u32).max(f0);
        let clean = Window::of(&report, clean_from, f1);
        let after = Window::of(&report, f1, n);
        // Requests the fault cost: everything that failed from the fault until the zone came
        // back, plus what failed in flight when it did.
        let failed = during.failed;
        let budget = (c.rps * c.error_budget_s).ceil();
        let detect = first_bad.map(|t| (t - fault_at).max(0.0));
        let stop = last_bad.map(|t| (t - fault_at).max(0.0));
        let recovered = match last_bad {
            None => true,
            Some(l) => restore_at - l >= c.settle_s,
        };
        let remaining_end: u32 = at_end
            .running_by_zone
            .iter()
            .filter(|(z, _)| **z != zone)
            .map(|(_, n)| n)
            .sum();
        let needed = self
            .scaling
            .and_then(|s| s.per_task_rps())
            .map(|r| (c.rps / r).ceil());
        let back = report
            .series
            .iter()
            .filter(|s| s.t >= f1)
            .find(|s| window::values(s, ZONE_HEADER).any(|(z, _)| *z == zone))
            .map(|s| f64::from(s.t) - restore_at);
        let (after_ok, after_detail) = after.slo(&slo);
        let (clean_ok, clean_detail) = clean.slo(&slo);
        let checks = vec![
            check(
                "errors stop",
                recovered && stop.is_none_or(|s| s <= c.max_failover_s),
                match (stop, recovered) {
                    (None, _) => "no failed or slow request was seen".to_owned(),
                    (Some(s), true) => format!(
                        "errors stopped {s:.0} s after the fault (objective {:.0} s)",
                        c.max_failover_s
                    ),
                    (Some(s), false) => format!(
                        "errors went on until the fault was undone {s:.0} s after it began (objective: stop within {:.0} s)",
                        c.max_failover_s
                    ),
                },
            ),
            check(
                "error budget",
                (failed as f64) <= budget,
                format!(
                    "{failed} failed requests: {:.0} % of the budget of {budget:.0} ({} s at {} rps)",
                    if budget > 0.0 {
                        failed as f64 * 100.0 / budget
                    } else {
                        100.0
                    },
                    c.error_budget_s,
                    c.rps
                ),
            ),
            check(
                "remaining zones carry the load",
                recovered && clean.zone_share(&zone) == 0.0 && clean_ok,
                if recovered {
                    format!("after errors stopped: {}; {clean_detail}", clean.split())
                } else {
                    format!("errors never stopped while {zone} was failed")
                },
            ),
            check(
                "capacity in the remaining zones",
                remaining_end >= remaining_before && remaining_end > 0,
                format!(
                    "{remaining_end} tasks running outside {zone} when the fault ended ({remaining_before} before it){}",
                    needed
                        .map(|n| format!("; {n:.0} carry {} rps at the target value", c.rps))
                        .unwrap_or_default()
                ),
            ),
            check(
                "recovers after the zone returns",
                after_ok && (c.fault == Fault::StopTasks || back.is_some()),
                format!(
                    "{after_detail}; {zone} {}",
                    match back {
                        Some(b) => format!("answered again {b:.0} s after it was restored"),
                        None => format!("did not answer in the {:.0} s after", c.after_s),
                    }
                ),
            ),
        ];
        let share = |w: &Window| Some(w.zone_share(&zone));
        let figures = vec![
            fig("time_to_detect_s", "time to detect", detect, "s"),
            fig("time_to_errors_stop_s", "time until errors stop", stop, "s"),
            fig(
                "failed_requests",
                "failed requests",
                Some(failed as f64),
                "requests",
            ),
            fig(
                "error_budget_pct",
                "error budget spent",
                Some(if budget > 0.0 {
                    failed as f64 * 100.0 / budget
                } else {
                    100.0
                }),
                "%",
            ),
            fig(
                "share_before_pct",
                &format!("share of {zone} before"),
                share(&before_w),
                "%",
            ),
            fig(
                "share_during_pct",
                &format!("share of {zone} during"),
                share(&during),
                "%",
            ),
            fig(
                "share_after_pct",
                &format!("share of {zone} after"),
                share(&after),
                "%",
            ),
            fig(
                "remaining_tasks_before",
                "tasks in other zones before",
                Some(f64::from(remaining_before)),
                "tasks",
            ),
            fig(
                "remaining_tasks_end",
                "tasks in other zones at the end",
                Some(f64::from(remaining_end)),
                "tasks",
            ),
            fig("fault_s", "fault length", Some(restore_at - fault_at), "s"),
            fig(
                "time_to_zone_back_s",
                "time until the zone answers again",
                back,
                "s",
            ),
            fig("p99_after_ms", "p99 after restore", Some(after.p99()), "ms"),
        ];
        let mut notes = vec![format!("failed zone: {zone}")];
        if let Some(n) = needed
            && f64::from(remaining_end) < n
        {
            notes.push(format!(
                "the other zones run {remaining_end} tasks, fewer than the {n:.0} that carry {} rps at the target value{}",
                c.rps,
                self.scaling
                    .map(|s| format!(" (max-count {} is spread over every zone)", s.max))
                    .unwrap_or_default()
            ));
        }
        if stalled_at.is_some() {
            notes.push(format!(
                "requests stalled in flight (more than {stall_limit} outstanding) during the fault"
            ));
        }
        let (start_s, end_s) = self.mark_scenario("az-failover", &report);
        self.reports.push(report);
        Ok(finish(
            "az-failover",
            start_s,
            end_s,
            checks,
            figures,
            notes,
        ))
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

/// Tasks that answered in the last `n` complete seconds.
fn serving(series: &[Second], n: usize) -> BTreeSet<String> {
    series
        .iter()
        .rev()
        .take(n)
        .flat_map(|s| window::values(s, TASK_HEADER).map(|(t, _)| t.clone()))
        .collect()
}

/// Responses per zone in `series[from..to]`.
fn zones_of(series: &[Second], from: usize, to: usize) -> BTreeMap<String, u64> {
    let mut m = BTreeMap::new();
    for s in series.iter().take(to).skip(from) {
        for (z, n) in window::values(s, ZONE_HEADER) {
            *m.entry(z.clone()).or_default() += n;
        }
    }
    m
}

/// A second with failed requests or a p99 over the objective.
fn failed_or_slow(s: &Second, p99_ms: f64) -> bool {
    window::failed(s) > 0 || (s.completed > 0 && s.p99_ms > p99_ms)
}
