//! Target tracking in the data plane: what the load balancer and the task processes measured
//! becomes CloudWatch datapoints and alarm evaluations of `aws_model::tracking` (the model the
//! proof predicts with), on the plane's clock, and its decisions become UpdateService calls.

use std::collections::BTreeMap;

use aws_model::tracking::{Decision, MetricStream, Observation, Policy, Tracker};

use super::*;

/// The target-tracking state of one scalable service: its alarms and one metric stream per
/// policy.
#[derive(Debug, Default)]
pub(crate) struct ServiceScaling {
    tracker: Tracker,
    streams: BTreeMap<String, MetricStream>,
}

impl ServiceScaling {
    /// Adds an observation, publishes the datapoints that became visible by `now` (model
    /// seconds) and decides.
    pub(crate) fn step(
        &mut self,
        spec: &observe::ScalingSpec,
        o: &Observation,
        now: f64,
        desired: i32,
        deploying: bool,
    ) -> Option<Decision> {
        for p in &spec.policies {
            let stream = self
                .streams
                .entry(p.name.clone())
                .or_insert_with(|| MetricStream::new(p.metric));
            if stream.metric() != p.metric {
                *stream = MetricStream::new(p.metric);
            }
            stream.observe(o);
            for d in stream.publish(now) {
                self.tracker.record(&p.name, d);
            }
        }
        let policies: &[Policy] = &spec.policies;
        self.tracker
            .decide(now, desired, (spec.min, spec.max), policies, deploying)
    }
}

impl Reconciler {
    /// Model seconds now: the Unix time on the plane's clock, so metric periods line up with
    /// the minute as CloudWatch's do (on a faster clock, with its shorter minute).
    pub(super) fn model_now(&self) -> f64 {
        let unix = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        self.opts.clock.model_s(unix)
    }

    /// Feeds each scalable service's policies with what was measured since the last call
    /// (`requests` per target group over `dt` wall time) and applies their decisions.
    pub(super) async fn autoscale(
        &mut self,
        world: &World,
        requests: &HashMap<String, u64>,
        dt: Duration,
    ) {
        if dt.is_zero() {
            return;
        }
        let now = self.model_now();
        let health = self.health();
        for svc in &world.services {
            let key = svc.key();
            let Some(spec) = world.scaling.get(&key) else {
                continue;
            };
            let running: Vec<&TaskProc> = self.service_tasks(svc).filter(|t| t.running()).collect();
            let cpu: Vec<f64> = running.iter().filter_map(|t| t.cpu_percent()).collect();
            let tg = svc.load_balancers.first().map(|(t, _)| t.as_str());
            let healthy = tg.map_or(0, |tg| {
                self.registered.get(tg).map_or(0, |reg| {
                    reg.keys()
                        .filter(|id| health.get(*id) == Some(&alb::TargetState::Healthy))
                        .count()
                })
            });
            let o = Observation {
                at: now,
                span: self.opts.clock.model_s(dt.as_secs_f64()),
                requests_per_second: tg
                    .and_then(|tg| requests.get(tg))
                    .map_or(0.0, |n| *n as f64 / dt.as_secs_f64()),
                healthy_targets: healthy as f64,
                running_tasks: running.len() as f64,
                cpu_percent: (!cpu.is_empty()).then(|| cpu.iter().sum::<f64>() / cpu.len() as f64),
                memory_percent: None,
            };
            let decision = self.scaling.entry(key.clone()).or_default().step(
                spec,
                &o,
                now,
                svc.desired,
                svc.deploying,
            );
            let Some(decision) = decision else {
                continue;
            };
            let result = self
                .c
                .ecs
                .update_service()
                .cluster(&svc.cluster)
                .service(&svc.name)
                .desired_count(decision.desired)
                .send()
                .await;
            let line = match result {
                Ok(_) => {
                    // Act on the new count now rather than at the next read.
                    self.pending_desired.insert(key.clone(), decision.desired);
                    format!("{key}: {}", decision.cause)
                }
                Err(e) => format!(
                    "{key}: {} FAILED: {}",
                    decision.cause,
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
}
