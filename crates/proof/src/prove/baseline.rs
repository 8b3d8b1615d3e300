//! Baseline: steady load well within capacity; records the SLO figures and the per-zone split.

use std::collections::BTreeSet;

use super::{Run, by_zone, check, fig, finish};
use crate::error::Error;
use crate::report::{Mark, MarkKind, ScenarioResult};
use crate::window::Window;

impl Run {
    pub(super) async fn baseline(&mut self) -> Result<ScenarioResult, Error> {
        let before = self.sample();
        let rate = super::baseline_rate(&self.config, self.scaling.as_ref(), before.running);
        // Whole seconds: the report's series is per second.
        let warmup = self.config.warmup_s.ceil();
        self.say(&format!(
            "baseline: {rate:.0} rps for {:.0} s after {warmup:.0} s of warm-up",
            self.config.baseline_s
        ));
        let load = self
            .start_load(rate, Vec::new(), warmup + self.config.baseline_s)
            .await?;
        let report = load.handle.wait().await?;
        // Validated: 0 to 3600 seconds.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let w = Window::of(&report, warmup as u32, u32::MAX);
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
        // A service whose tasks all run in one zone has nowhere to fail over to.
        checks.push(check(
            "tasks in two or more zones",
            with_tasks.len() >= 2,
            by_zone(&after.running_by_zone),
        ));
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
        let mut notes = Vec::new();
        if warmup > 0.0 {
            self.marks.push(Mark {
                kind: MarkKind::Warmup,
                label: "warm-up".to_owned(),
                start_s: self.global(&report, 0.0),
                end_s: self.global(&report, warmup),
            });
            notes.push(format!(
                "the first {warmup:.0} s of load (warm-up: the engine opening up to {} connections) are not counted",
                self.config.connections()
            ));
        }
        let (start_s, end_s) = self.mark_scenario("baseline", &report);
        self.reports.push(report);
        Ok(finish("baseline", start_s, end_s, checks, figures, notes))
    }
}
