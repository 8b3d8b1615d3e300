//! AZ failover: at steady load one zone fails (deny-all network ACL on its subnets, load
//! balancer node included, or its tasks stopped); measures detection, errors, the error budget,
//! the zone shares, the capacity left and the load per load-balancer node, optionally moves
//! traffic away with an ARC zonal shift, then restores the zone and measures recovery.
//! Measuring (the async loop, here) and judging (pure, [`judge`]) are apart.

mod judge;

use std::collections::BTreeMap;

pub(crate) use judge::{Seen, bad_span, judge, last_failed, nodes};

use super::{Load, Run, finish, unix_ms, writes};
use crate::config::{Fault, ProveConfig};
use crate::error::{Error, aws};
use crate::report::{Mark, MarkKind, ScenarioResult};
use crate::window::{self, Window, ZONE_HEADER};
use judge::zones_of;

fn outside(running_by_zone: &BTreeMap<String, u32>, zone: &str) -> u32 {
    running_by_zone
        .iter()
        .filter(|(z, _)| *z != zone)
        .map(|(_, n)| n)
        .sum()
}

/// What watching a fault saw: run seconds of the first and last second over the objective,
/// whether requests stalled in flight, when a zonal shift began.
#[derive(Debug, Clone, Copy)]
struct Watched {
    first_bad: Option<f64>,
    last_bad: Option<f64>,
    stalled: bool,
    shift_at: Option<f64>,
}

/// How long after the longest fault allowed FIS ends the experiment by itself, AWS seconds:
/// the client's own undo comes first; FIS's is for a client that died.
const FIS_GRACE_S: f64 = 60.0;

impl Run {
    /// Fails `zone`; returns a note on how, for the report.
    async fn inject(&self, zone: &str, tasks: &[String]) -> Result<Option<String>, Error> {
        match self.config.fault {
            Fault::NetworkAcl => {
                // Recorded first: even a call that fails half way gets undone.
                if let Ok(mut f) = self.fault.lock() {
                    f.isolated = Some(zone.to_owned());
                }
                // Through AWS FIS, which undoes it by itself when the longest fault allowed
                // (and a minute's grace) is up, or a stop condition fires, should this client
                // die before its own undo.
                let limit = std::time::Duration::from_secs_f64(
                    self.prediction.fault_max_s.max(0.0) + FIS_GRACE_S,
                );
                let alarms = super::stop_alarms(&self.config, &self.d.outputs);
                let id = self
                    .d
                    .stack
                    .start_zone_fault(
                        &self.d.cx,
                        &self.d.outputs.compute.fault_role_arn,
                        zone,
                        limit,
                        &alarms,
                    )
                    .await?;
                let note = format!(
                    "the zone was cut off by AWS FIS experiment {id} ({}, scope all, duration {}: FIS would have ended it by itself)",
                    stack::fault::DISRUPT_CONNECTIVITY,
                    stack::fault::fis_duration(limit)
                );
                self.say(&format!("az-failover: {note}"));
                Ok(Some(note))
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
                Ok(None)
            }
        }
    }

    /// Starts a zonal shift of the load balancer away from `zone` (recorded, so it is
    /// cancelled however the run ends).
    async fn shift_away(&self, zone: &str) -> Result<String, Error> {
        let ec2: aws_sdk_ec2::Client = infra::client!(&self.d.cx, aws_sdk_ec2);
        let zones = ec2
            .describe_availability_zones()
            .zone_names(zone)
            .send()
            .await
            .map_err(aws("DescribeAvailabilityZones", zone))?;
        let Some(id) = zones.availability_zones().first().and_then(|z| z.zone_id()) else {
            return Err(Error::Internal(format!("no zone id for {zone}")));
        };
        let arc: aws_sdk_arczonalshift::Client = infra::client!(&self.d.cx, aws_sdk_arczonalshift);
        let lb = &self.d.outputs.load_balancer.arn;
        let out = arc
            .start_zonal_shift()
            .resource_identifier(lb)
            .away_from(id)
            .expires_in("1h")
            .comment(format!("stackproof az-failover: {zone} fails"))
            .send()
            .await
            .map_err(aws("StartZonalShift", lb.clone()))?;
        let shift = out.zonal_shift_id().to_owned();
        if let Ok(mut f) = self.fault.lock() {
            f.shift = Some(shift.clone());
        }
        Ok(shift)
    }

    /// Watches the load while `zone` is failed, until the SLO has held for `settle-s`, or
    /// the longest fault allowed has passed (a zonal shift, when asked for, once errors show).
    async fn watch_fault(
        &mut self,
        load: &Load,
        rx: &mut tokio::sync::watch::Receiver<loadtest::Snapshot>,
        zone: &str,
        fault_at: f64,
        stall_limit: u64,
    ) -> Result<Watched, Error> {
        let c = self.config.clone();
        let slo = c.slo;
        let fault_max = self.wall(self.prediction.fault_max_s);
        // Whole seconds of the run.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let fault_second = fault_at.floor() as u32;
        let mut stalled_at: Option<f64> = None;
        let mut shift_at: Option<f64> = None;
        let (mut first_bad, mut last_bad);
        loop {
            if !load.tick(rx).await {
                (first_bad, last_bad) = bad_span(&load.handle.series(), fault_second, slo.p99_ms);
                break;
            }
            let now = load.now_s();
            (first_bad, last_bad) = bad_span(&load.handle.series(), fault_second, slo.p99_ms);
            if load.outstanding(rx) > stall_limit {
                stalled_at.get_or_insert(now);
            }
            if let Some(s) = stalled_at {
                first_bad = Some(first_bad.map_or(s, |f| f.min(s)));
                if load.outstanding(rx) > stall_limit {
                    last_bad = Some(last_bad.map_or(now, |l| l.max(now)));
                }
            }
            if c.zonal_shift && shift_at.is_none() && first_bad.is_some() {
                let id = self.shift_away(zone).await?;
                shift_at = Some(load.now_s());
                self.say(&format!(
                    "az-failover: zonal shift {id} away from {zone} at {:.0}s",
                    load.now_s()
                ));
            }
            let elapsed = now - fault_at;
            if elapsed >= fault_max {
                self.say("az-failover: the longest fault allowed has passed");
                break;
            }
            match last_bad {
                Some(l) if now - l >= c.settle_s => break,
                None if elapsed >= c.settle_s.max(20.0) => break,
                _ => {}
            }
        }
        Ok(Watched {
            first_bad,
            last_bad,
            stalled: stalled_at.is_some(),
            shift_at,
        })
    }

    /// Says what the scenario does.
    fn announce_failover(&self, c: &ProveConfig) {
        self.say(&format!(
            "az-failover: {} rps; {:.0} s steady, then a zone fails ({}){}",
            c.rps,
            c.before_s,
            match c.fault {
                Fault::NetworkAcl =>
                    "deny-all network ACL on its subnets, its load balancer node's too",
                Fault::StopTasks => "its tasks stopped",
            },
            if c.zonal_shift {
                "; a zonal shift moves traffic away once the failure shows"
            } else {
                ""
            }
        ));
    }

    /// The zone to fail: the one asked for, else the database's primary's (where a zone's
    /// loss costs the most), else the one that served the most requests so far.
    fn failed_zone(&self, load: &Load) -> String {
        let series = load.handle.series();
        let before_zones = zones_of(&series, 0, series.len());
        let primary = self
            .d
            .outputs
            .data
            .as_ref()
            .and_then(|db| db.primary_zone.clone());
        match self.config.zone.clone().or(primary) {
            Some(z) => z,
            None => before_zones
                .iter()
                .max_by_key(|(_, n)| **n)
                .map(|(z, _)| z.clone())
                .or_else(|| self.d.outputs.network.zones.first().cloned())
                .unwrap_or_default(),
        }
    }

    /// Marks the fault on the report's timeline.
    fn mark_fault(&mut self, zone: &str, fault_ms: u64, restore_ms: u64) {
        let what = match self.config.fault {
            Fault::NetworkAcl => "isolated",
            Fault::StopTasks => "tasks stopped",
        };
        self.marks.push(Mark {
            kind: MarkKind::Fault,
            label: format!("{zone} {what}"),
            start_s: fault_ms.saturating_sub(self.origin_ms) as f64 / 1000.0,
            end_s: restore_ms.saturating_sub(self.origin_ms) as f64 / 1000.0,
        });
    }

    pub(super) async fn failover(&mut self) -> Result<ScenarioResult, Error> {
        let c = self.config.clone();
        let slo = c.slo;
        let fault_max = self.wall(self.prediction.fault_max_s);
        let total = c.before_s + fault_max + c.after_s + 10.0;
        self.announce_failover(&c);
        let load = self.start_load(c.rps, Vec::new(), total).await?;
        // With a database, writes beside the reads: what the fault does to data.
        let rate = writes::write_rate(c.rps);
        let writer = self.d.outputs.data.as_ref().and_then(|_| {
            writes::Writer::start(
                &self.d.target,
                &self.origin_ms.to_string(),
                rate,
                std::time::Duration::from_secs_f64(total),
                self.d.outputs.cache.is_some(),
            )
        });
        if writer.is_some() {
            self.say(&format!(
                "az-failover: the stack has a database: {rate:.1} writes/s of POST /orders beside the load"
            ));
        }
        let mut rx = load.handle.snapshots();
        while load.now_s() < c.before_s {
            if !load.tick(&mut rx).await {
                break;
            }
        }
        let zone = self.failed_zone(&load);
        let before = self.sample();
        let remaining_before = outside(&before.running_by_zone, &zone);
        let zone_tasks = before.tasks_by_zone.get(&zone).cloned().unwrap_or_default();
        // Requests normally in flight: more than those slower than the objective mean a stall.
        let stall_limit = (c.rps * slo.p99_ms / 1000.0).ceil() as u64 + 5;
        let fault_note = self.inject(&zone, &zone_tasks).await?;
        // From when the fault is in place: FIS takes a while to start an experiment.
        let fault_ms = unix_ms();
        let fault_at = load.now_s();
        self.say(&format!(
            "az-failover: {zone} failed at {fault_at:.0}s ({} of its tasks)",
            zone_tasks.len()
        ));
        // Whole seconds of the run.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let fault_second = fault_at.floor() as u32;
        let Watched {
            first_bad,
            last_bad,
            stalled,
            shift_at,
        } = self
            .watch_fault(&load, &mut rx, &zone, fault_at, stall_limit)
            .await?;
        // The database may take longer than the web tier (60-120 s on AWS): the zone stays
        // failed until writes go through again, within the longest fault allowed.
        if let Some(w) = &writer {
            let fault_max = self.wall(self.prediction.fault_max_s);
            let settle = std::time::Duration::from_secs(2);
            while !w.settled(fault_ms, settle) && load.now_s() - fault_at < fault_max {
                if !load.tick(&mut rx).await {
                    break;
                }
            }
        }
        let restore_ms = unix_ms();
        let restore_at = load.now_s();
        let at_end = self.sample();
        super::undo(&self.d, &self.fault, &self.progress).await?;
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
        let written = match writer {
            Some(w) => {
                let (all, reads) = w.finish().await;
                let read = writes::read_back(&self.d.target, &all).await;
                Some(writes::WritesSeen {
                    writes: all,
                    read,
                    fault_ms,
                    restore_ms,
                    rate,
                    multi_az: self.d.outputs.data.as_ref().is_some_and(|d| d.multi_az),
                    cluster: self
                        .d
                        .outputs
                        .data
                        .as_ref()
                        .is_some_and(|d| d.deployment == data::Deployment::Cluster),
                    cache: self.d.outputs.cache.as_ref().map(|c| (c.multi_az, reads)),
                })
            }
            None => None,
        };
        self.mark_fault(&zone, fault_ms, restore_ms);
        let n = u32::try_from(report.series.len()).unwrap_or(u32::MAX);
        // Whole seconds of the run.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let (f0, f1) = (fault_at.floor() as u32, restore_at.ceil() as u32);
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let clean_from = last_bad.map_or(f0, |l| l.ceil() as u32).max(f0);
        let target = &self.d.target;
        let seen = Seen {
            zone: zone.clone(),
            fault_at,
            restore_at,
            first_bad,
            last_bad,
            last_failed: last_failed(&report.series, fault_second),
            stalled,
            shift_at,
            remaining_before,
            remaining_end: outside(&at_end.running_by_zone, &zone),
            needed: self
                .scaling
                .as_ref()
                .and_then(crate::observe::Scaling::per_task_rps)
                .map(|r| (c.rps / r).ceil()),
            max: self.scaling.as_ref().map(|s| s.max),
            back: report
                .series
                .iter()
                .filter(|s| s.t >= f1)
                .find(|s| window::values(s, ZONE_HEADER).any(|(z, _)| *z == zone))
                .map(|s| f64::from(s.t) - restore_at),
            before: Window::of(&report, 0, f0),
            during: Window::of(&report, f0, f1),
            clean: Window::of(&report, clean_from, f1),
            after: Window::of(&report, f1, n),
            nodes: nodes(&report.series, f0, f1, |a| {
                target.node_zone(a).map(str::to_owned)
            }),
        };
        let (mut checks, mut figures, mut notes) = judge(&seen, &c, &self.prediction);
        if let Some(w) = &written {
            self.writes = writes::per_second(&w.writes, self.origin_ms);
            let (more_checks, more_figures, more_notes) = writes::judge(w, c.clock);
            checks.extend(more_checks);
            figures.extend(more_figures);
            notes.extend(more_notes);
        }
        notes.extend(fault_note);
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
