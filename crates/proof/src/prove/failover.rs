//! AZ failover: at steady load one zone fails (deny-all network ACL, or its tasks stopped);
//! measures detection, errors, the error budget, the zone shares and the capacity left, then
//! restores the zone and measures recovery.

use std::collections::BTreeMap;

use loadtest::Second;

use super::{Applied, Run, check, fig, finish, unix_ms};
use crate::config::Fault;
use crate::error::{Error, aws};
use crate::report::{Mark, MarkKind, ScenarioResult};
use crate::window::{self, Window, ZONE_HEADER};

impl Run {
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

    pub(super) async fn failover(&mut self) -> Result<ScenarioResult, Error> {
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
