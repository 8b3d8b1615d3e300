//! Scaling: load raised past what the running tasks carry at the target-tracking value; passes
//! when the desired and running counts rise, new tasks take traffic and the SLOs hold once
//! settled, within the time the model allows. Measuring (the async loop) and judging (pure,
//! [`judge`]) are apart; [`Track`] follows the run second by second for both.

use std::collections::BTreeSet;

use loadtest::{Second, Stage};

use super::{Run, check, fig, finish};
use crate::config::ProveConfig;
use crate::error::Error;
use crate::model::Prediction;
use crate::observe::{Sample, Scaling};
use crate::report::{Check, Figure, ScenarioResult};
use crate::window::{self, TASK_HEADER, Window};

/// The course of a scale-out as it is seen, wall seconds from the load's start.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Track {
    /// The rate the tasks carry at the target value when the load starts (0: unknown).
    pub(crate) threshold: f64,
    /// The desired count before.
    pub(crate) d0: u32,
    /// One task's rate at the target value.
    pub(crate) per_task: Option<f64>,
    /// The scalable target's maximum.
    pub(crate) max: u32,
    /// The peak rate.
    pub(crate) rps: f64,
    /// When the load passed `threshold`.
    pub(crate) t_over: Option<f64>,
    /// When the desired count first rose.
    pub(crate) t_first_out: Option<f64>,
    /// Since when the service is steady.
    pub(crate) t_steady: Option<f64>,
    pub(crate) peak_desired: u32,
    last_desired: u32,
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

impl Track {
    pub(crate) fn new(threshold: f64, d0: u32, scaling: &Scaling, rps: f64) -> Track {
        Track {
            threshold,
            d0,
            per_task: scaling.per_task_rps(),
            max: scaling.max,
            rps,
            peak_desired: d0,
            last_desired: d0,
            ..Track::default()
        }
    }

    /// Takes in second `now` of the load, the series so far and the latest service sample;
    /// returns what to tell.
    pub(crate) fn update(&mut self, now: f64, series: &[Second], s: &Sample) -> Vec<String> {
        let mut said = Vec::new();
        if self.t_over.is_none()
            && let Some(x) = series.iter().find(|x| x.sent as f64 > self.threshold)
        {
            self.t_over = Some(f64::from(x.t));
            said.push(format!(
                "scaling: the load passed {:.0} rps at {}s",
                self.threshold, x.t
            ));
        }
        self.peak_desired = self.peak_desired.max(s.desired);
        if s.desired != self.last_desired {
            said.push(format!(
                "scaling: desired {} -> {} at {now:.0}s (running {})",
                self.last_desired, s.desired, s.running
            ));
            self.last_desired = s.desired;
        }
        if self.t_first_out.is_none() && s.desired > self.d0 {
            self.t_first_out = Some(now);
        }
        // Steady: the tasks the load needs at the target value (or the maximum) run and
        // answer. A later scale-out beyond them (a datapoint just above the target when the
        // load is an exact multiple of a task's share) does not make it unsteady: the load is
        // carried.
        let needed = self.needed();
        let steady = self.t_over.is_some()
            && s.desired > self.d0
            && s.desired >= needed
            && s.running >= needed
            && serving(series, 5).len() >= needed as usize;
        match (self.t_steady, steady) {
            (None, true) => {
                self.t_steady = Some(now);
                said.push(format!(
                    "scaling: steady at {now:.0}s: {} tasks running and serving ({needed} carry the load)",
                    s.running
                ));
            }
            (Some(_), false) => self.t_steady = None,
            _ => {}
        }
        said
    }

    /// Tasks that carry the peak rate at the target value, at most the maximum (the maximum
    /// when a task's share is unknown).
    pub(crate) fn needed(&self) -> u32 {
        match self.per_task {
            Some(p) if p > 0.0 => ((self.rps * 0.999 / p).ceil() as u32).clamp(1, self.max.max(1)),
            _ => self.max.max(1),
        }
    }

    /// Why the scenario should stop at second `now` (`None`: go on): steady for `settle_s`,
    /// no steady state `timeout_s` after the load passed capacity, or the load never passed it
    /// `ramp_s + 30` seconds in.
    pub(crate) fn done(
        &self,
        now: f64,
        settle_s: f64,
        timeout_s: f64,
        ramp_s: f64,
    ) -> Option<&'static str> {
        if self.t_steady.is_some_and(|t| now - t >= settle_s) {
            return Some("settled");
        }
        if self.t_over.is_some_and(|t| now - t >= timeout_s) {
            return Some("scaling: no steady state within the time allowed");
        }
        if self.t_over.is_none() && now >= ramp_s + 30.0 {
            return Some("scaling: the load never exceeded the capacity");
        }
        None
    }
}

/// What the scaling scenario saw, for [`judge`].
#[derive(Debug, Clone, Default)]
pub(crate) struct Seen {
    pub(crate) track: Track,
    pub(crate) min: u32,
    /// Rate the tasks carried at the target value before, if known.
    pub(crate) capacity: Option<f64>,
    pub(crate) before: Sample,
    pub(crate) end: Sample,
    /// Tasks that answered during the run and were not running before.
    pub(crate) new_tasks: usize,
    pub(crate) initial_tasks: usize,
    /// Tasks that answered during the run.
    pub(crate) answered: usize,
    /// Tasks that answered in its last seconds.
    pub(crate) serving_at_end: usize,
    /// Once settled (or the last `settle_s` seconds).
    pub(crate) settled: Window,
    pub(crate) peak_rps: Option<f64>,
}

/// The checks, figures and notes of a scaling run: pure, from what was seen, the options and
/// the prediction. Times are reported in AWS seconds (wall seconds times the clock's factor).
pub(crate) fn judge(
    seen: &Seen,
    c: &ProveConfig,
    p: &Prediction,
) -> (Vec<Check>, Vec<Figure>, Vec<String>) {
    let t = &seen.track;
    let clock = c.clock;
    let since = |x: Option<f64>| {
        x.zip(t.t_over)
            .map(|(x, o)| clock.model_s((x - o).max(0.0)))
    };
    let (slo_ok, slo_detail) = seen.settled.slo(&c.slo);
    let checks = vec![
        check(
            "desired count rises",
            t.peak_desired > t.d0,
            format!(
                "{} -> {} (scalable {}..{})",
                t.d0, t.peak_desired, seen.min, t.max
            ),
        ),
        // As the steady state: the tasks the load needs (or the desired count, when lower) run.
        // A last scale-out beyond them, still launching when the load settled, is no failure
        // to follow (seen once on the AWS clock: desired 6, 5 carrying 500 rps, the sixth
        // starting).
        check(
            "running count follows",
            seen.end.running >= seen.end.desired.min(t.needed())
                && seen.end.running > seen.before.running,
            format!(
                "running {} -> {} (desired {}; {} carry the load)",
                seen.before.running,
                seen.end.running,
                seen.end.desired,
                t.needed()
            ),
        ),
        check(
            "new tasks take traffic",
            seen.new_tasks > 0,
            format!(
                "{} tasks answered that were not running before ({} before, {} answered in all)",
                seen.new_tasks, seen.initial_tasks, seen.answered
            ),
        ),
        check(
            "settles",
            t.t_steady.is_some(),
            match (since(t.t_steady), t.t_over) {
                (Some(s), Some(_)) => format!(
                    "steady {s:.0} s after the load passed capacity: {} tasks carry {} rps (allowed {:.0} s)",
                    seen.end.desired, c.rps, p.scale_timeout_s
                ),
                _ => format!(
                    "not steady within {:.0} s: desired {}, running {}, {} serving",
                    p.scale_timeout_s, seen.end.desired, seen.end.running, seen.serving_at_end
                ),
            },
        ),
        check(
            "SLO holds once settled",
            slo_ok && t.t_steady.is_some(),
            slo_detail,
        ),
    ];
    let figures = scaling_figures(seen, p, &since);
    let predicted = p.scale_out;
    let mut notes = Vec::new();
    if t.peak_desired >= t.max && t.max > t.d0 {
        notes.push(format!("the service reached its max-count ({})", t.max));
    }
    if let (Some(first), Some(pred)) = (since(t.t_first_out), predicted)
        && first < pred.first_scale_out.min - clock.model_s(2.0)
    {
        notes.push(format!(
            "the first scale-out came {first:.0} s after the load passed capacity, sooner than target tracking's alarms allow ({:.0} s at the least): a policy other than requests per target (CPU) acted, or the load passed capacity before it was seen",
            pred.first_scale_out.min
        ));
    }
    (checks, figures, notes)
}

/// The figures of a scaling run; `since` turns a run second into AWS seconds after the load
/// passed capacity.
fn scaling_figures(
    seen: &Seen,
    p: &Prediction,
    since: &dyn Fn(Option<f64>) -> Option<f64>,
) -> Vec<Figure> {
    let t = &seen.track;
    let predicted = p.scale_out;
    vec![
        fig("peak_rps", "peak rate achieved", seen.peak_rps, "rps"),
        fig(
            "capacity_rps",
            "capacity before (at target value)",
            seen.capacity,
            "rps",
        ),
        fig(
            "time_to_first_scale_out_s",
            "time to first scale-out",
            since(t.t_first_out),
            "s",
        )
        .predicted(predicted.map(|s| s.first_scale_out)),
        fig(
            "time_to_steady_s",
            "time to steady state",
            since(t.t_steady),
            "s",
        )
        .predicted(predicted.map(|s| s.steady)),
        fig(
            "tasks_before",
            "tasks before",
            Some(f64::from(seen.before.running)),
            "tasks",
        ),
        fig(
            "tasks_after",
            "tasks after",
            Some(f64::from(seen.end.running)),
            "tasks",
        ),
        fig(
            "new_tasks_serving",
            "new tasks serving",
            Some(seen.new_tasks as f64),
            "tasks",
        ),
        fig(
            "p99_settled_ms",
            "p99 once settled",
            Some(seen.settled.p99()),
            "ms",
        ),
        fig(
            "error_settled_pct",
            "errors once settled",
            Some(seen.settled.error_rate() * 100.0),
            "%",
        ),
    ]
}

/// A scaling run that cannot show anything, with the one check that says why.
fn refused(name: &str, detail: String) -> ScenarioResult {
    finish(
        "scaling",
        0.0,
        0.0,
        vec![check(name, false, detail)],
        Vec::new(),
        Vec::new(),
    )
}

impl Run {
    pub(super) async fn scaling_scenario(&mut self) -> Result<ScenarioResult, Error> {
        let c = self.config.clone();
        let before = self.sample();
        let initial_tasks: BTreeSet<String> =
            before.tasks_by_zone.values().flatten().cloned().collect();
        let Some(scaling) = self.scaling.clone() else {
            return Ok(refused(
                "the service scales",
                "the service has no scalable target in Application Auto Scaling".to_owned(),
            ));
        };
        let d0 = before.desired;
        if d0 >= scaling.max {
            return Ok(refused(
                "desired count rises",
                format!(
                    "{d0} -> {d0}: the service already runs its max-count ({}); it cannot scale out",
                    scaling.max
                ),
            ));
        }
        let capacity = self.capacity(before.running.max(1));
        if let Some(cap) = capacity
            && cap >= c.rps
        {
            return Ok(refused(
                "the load exceeds what the tasks carry",
                format!(
                    "{} rps does not exceed what {} tasks carry at the target-tracking value ({cap:.0} rps): scaling cannot be shown; raise --rps above {cap:.0}",
                    c.rps, before.running
                ),
            ));
        }
        let timeout = self.wall(self.prediction.scale_timeout_s);
        let start_rate = c.baseline_rps.unwrap_or(c.rps / 5.0).min(c.rps);
        self.say(&format!(
            "scaling: {start_rate:.0} -> {} rps over {:.0} s, then held until the service settles (at most {:.0} s of wall time); {} tasks carry {}",
            c.rps,
            c.ramp_s,
            timeout,
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
            duration: timeout + c.settle_s + 30.0,
        });
        let load = self.start_load(start_rate, stages, 0.0).await?;
        let mut rx = load.handle.snapshots();
        let mut track = Track::new(capacity.unwrap_or(0.0), d0, &scaling, c.rps);
        while load.tick(&mut rx).await {
            let now = load.now_s();
            let series = load.handle.series();
            for line in track.update(now, &series, &self.sample()) {
                self.say(&line);
            }
            if let Some(why) = track.done(now, c.settle_s, timeout, c.ramp_s) {
                if why != "settled" {
                    self.say(why);
                }
                break;
            }
        }
        load.handle.stop();
        let report = load.handle.wait().await?;
        let end = self.sample();
        let n = u32::try_from(report.series.len()).unwrap_or(u32::MAX);
        // Whole seconds of the run.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let settle_from = track
            .t_steady
            .map_or(n.saturating_sub(c.settle_s as u32), |t| t.ceil() as u32);
        let whole = Window::of(&report, 0, n);
        let seen = Seen {
            min: scaling.min,
            capacity,
            before: before.clone(),
            new_tasks: whole
                .tasks
                .iter()
                .filter(|t| !initial_tasks.contains(*t))
                .count(),
            initial_tasks: initial_tasks.len(),
            answered: whole.tasks.len(),
            serving_at_end: serving(&report.series, 5).len(),
            settled: Window::of(&report, settle_from, n),
            peak_rps: report.series.iter().map(|s| s.sent as f64).reduce(f64::max),
            end,
            track,
        };
        let (checks, figures, notes) = judge(&seen, &c, &self.prediction);
        let (start_s, end_s) = self.mark_scenario("scaling", &report);
        self.reports.push(report);
        Ok(finish("scaling", start_s, end_s, checks, figures, notes))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::time::Duration;

    use aws_model::tracking::{Metric, Policy};
    use aws_model::{Clock, HealthTiming};

    use super::*;
    use crate::model::{Plan, predict};

    fn scaling() -> Scaling {
        Scaling {
            min: 2,
            max: 8,
            requests_per_target: Some(6000.0),
            policies: vec![Policy {
                name: "requests".into(),
                metric: Metric::RequestCountPerTarget,
                target: 6000.0,
                scale_out_cooldown: 60.0,
                scale_in_cooldown: 300.0,
                disable_scale_in: false,
            }],
        }
    }

    fn prediction(c: &ProveConfig) -> Prediction {
        predict(
            c,
            HealthTiming {
                interval: Duration::from_secs(10),
                timeout: Duration::from_secs(5),
                healthy_threshold: 2,
                unhealthy_threshold: 2,
            },
            Some(&scaling()),
            Plan {
                tasks: 2,
                start_rps: 100.0,
            },
        )
    }

    /// A second of load at `sent` rps answered by `tasks`.
    fn second(t: u32, sent: u64, tasks: &[&str]) -> Second {
        let mut by_task = BTreeMap::new();
        for task in tasks {
            by_task.insert((*task).to_owned(), sent / tasks.len() as u64);
        }
        let mut by_header = BTreeMap::new();
        by_header.insert(TASK_HEADER.to_owned(), by_task);
        Second {
            t,
            sent,
            completed: sent,
            ok: sent,
            by_header,
            ..Second::default()
        }
    }

    fn sample(desired: u32, running: u32) -> Sample {
        Sample {
            desired,
            running,
            ..Sample::default()
        }
    }

    /// A run on the fast clock (x10): the load passes 200 rps at second 2, desired rises at
    /// second `out` to 5, the new tasks run and serve at `steady`; the run goes on to `end`.
    fn run(out: u32, steady: u32, end: u32) -> Track {
        let mut track = Track::new(200.0, 2, &scaling(), 500.0);
        let mut series = Vec::new();
        for t in 0..end {
            let rate = if t < 2 { 100 } else { 500 };
            let tasks: &[&str] = if t >= steady {
                &["a", "b", "c", "d", "e"]
            } else {
                &["a", "b"]
            };
            series.push(second(t, rate, tasks));
            let s = match t {
                _ if t >= steady => sample(5, 5),
                _ if t >= out => sample(5, 2),
                _ => sample(2, 2),
            };
            let _ = track.update(f64::from(t + 1), &series, &s);
            if track.done(f64::from(t + 1), 5.0, 60.0, 2.0).is_some() {
                break;
            }
        }
        track
    }

    fn seen(track: Track, settled_errors: u64) -> Seen {
        Seen {
            min: 2,
            capacity: Some(200.0),
            before: sample(2, 2),
            end: sample(5, 5),
            new_tasks: 3,
            initial_tasks: 2,
            answered: 5,
            serving_at_end: 5,
            settled: Window {
                seconds: 5,
                sent: 2500,
                ok: 2500 - settled_errors,
                failed: settled_errors,
                ..Window::default()
            },
            peak_rps: Some(500.0),
            track,
        }
    }

    #[test]
    fn a_scale_out_on_the_models_schedule_passes_with_figures_in_aws_seconds() {
        let c = ProveConfig {
            clock: Clock::fast(),
            ..ProveConfig::default()
        };
        let p = prediction(&c);
        // First scale-out 33 wall seconds after the load passed capacity (330 AWS seconds),
        // steady 7 seconds later.
        let track = run(35, 42, 60);
        assert_eq!(track.t_over, Some(2.0));
        assert_eq!(track.t_first_out, Some(36.0));
        assert_eq!(track.t_steady, Some(43.0));
        let (checks, figures, notes) = judge(&seen(track, 0), &c, &p);
        assert!(checks.iter().all(|c| c.passed), "{checks:?}");
        let first = figures
            .iter()
            .find(|f| f.key == "time_to_first_scale_out_s")
            .unwrap();
        assert_eq!(first.value, Some(340.0));
        assert!(
            first.predicted.is_some_and(|s| s.contains(340.0, 0.0)),
            "{first:?}"
        );
        assert!(notes.is_empty(), "{notes:?}");
    }

    #[test]
    fn no_steady_state_fails_to_settle_and_a_too_early_scale_out_is_noted() {
        let c = ProveConfig {
            clock: Clock::fast(),
            ..ProveConfig::default()
        };
        let p = prediction(&c);
        // Scales out 5 s (50 AWS s) in: sooner than any alarm allows; never serves.
        let track = run(7, 1000, 80);
        assert!(track.t_steady.is_none());
        let (checks, _, notes) = judge(&seen(track, 0), &c, &p);
        let settles = checks.iter().find(|c| c.name == "settles").unwrap();
        assert!(
            !settles.passed && settles.detail.contains("not steady"),
            "{settles:?}"
        );
        assert!(notes.iter().any(|n| n.contains("sooner than")), "{notes:?}");
        // Errors once settled break the SLO check.
        let (checks, _, _) = judge(&seen(run(35, 42, 60), 100), &c, &p);
        assert!(
            !checks
                .iter()
                .find(|c| c.name == "SLO holds once settled")
                .unwrap()
                .passed
        );
    }

    #[test]
    fn a_last_task_still_launching_beyond_what_the_load_needs_is_no_failure_to_follow() {
        let c = ProveConfig {
            clock: Clock::fast(),
            ..ProveConfig::default()
        };
        let p = prediction(&c);
        let follows = |desired: u32, running: u32| {
            let mut s = seen(run(35, 42, 60), 0);
            s.end = sample(desired, running);
            let (checks, _, _) = judge(&s, &c, &p);
            let check = checks
                .iter()
                .find(|c| c.name == "running count follows")
                .unwrap()
                .clone();
            (check.passed, check.detail)
        };
        // Seen on the AWS clock: desired 6 while the 5 that 500 rps needs carried it.
        let (passed, detail) = follows(6, 5);
        assert!(passed, "{detail}");
        assert_eq!(detail, "running 2 -> 5 (desired 6; 5 carry the load)");
        // Fewer than the load needs is a failure, as is nothing more than before.
        assert!(!follows(6, 4).0);
        assert!(!follows(2, 2).0);
        // Desired below what the load needs: running must reach desired.
        assert!(follows(4, 4).0);
        assert!(!follows(4, 3).0);
    }

    #[test]
    fn the_run_stops_when_settled_timed_out_or_never_over_capacity() {
        let t = Track {
            t_over: Some(10.0),
            t_steady: Some(40.0),
            ..Track::default()
        };
        assert_eq!(t.done(44.0, 5.0, 100.0, 20.0), None);
        assert_eq!(t.done(45.0, 5.0, 100.0, 20.0), Some("settled"));
        let t = Track {
            t_over: Some(10.0),
            ..Track::default()
        };
        assert!(
            t.done(110.0, 5.0, 100.0, 20.0)
                .unwrap()
                .contains("no steady state")
        );
        assert!(
            Track::default()
                .done(50.0, 5.0, 100.0, 20.0)
                .unwrap()
                .contains("never")
        );
    }
}
