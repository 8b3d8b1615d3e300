//! Scaling: load raised in stages past what the running tasks carry at the target-tracking
//! value; passes when the desired and running counts rise, new tasks take traffic and the SLOs
//! hold once settled.

use std::collections::BTreeSet;

use loadtest::{Second, Stage};

use super::{Run, check, fig, finish};
use crate::error::Error;
use crate::report::ScenarioResult;
use crate::window::{self, TASK_HEADER, Window};

impl Run {
    pub(super) async fn scaling_scenario(&mut self) -> Result<ScenarioResult, Error> {
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
