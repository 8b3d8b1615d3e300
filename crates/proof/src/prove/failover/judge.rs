//! Judging an AZ failover (pure): the bad seconds, the load per load-balancer node, and the
//! checks, figures and notes of what [`super`]'s run saw.

use std::collections::BTreeMap;

use loadtest::Second;

use super::super::{check, fig};
use crate::config::{Fault, ProveConfig};
use crate::model::Prediction;
use crate::report::{Check, Figure};
use crate::window::{self, Window, ZONE_HEADER};

/// A second with failed requests or a p99 over the objective.
fn failed_or_slow(s: &Second, p99_ms: f64) -> bool {
    window::failed(s) > 0 || (s.completed > 0 && s.p99_ms > p99_ms)
}

/// The first and the end of the last bad second (failed or slow) from second `from` on.
pub(crate) fn bad_span(series: &[Second], from: u32, p99_ms: f64) -> (Option<f64>, Option<f64>) {
    let bad: Vec<f64> = series
        .iter()
        .filter(|s| s.t >= from && failed_or_slow(s, p99_ms))
        .map(|s| f64::from(s.t))
        .collect();
    (
        bad.iter().copied().reduce(f64::min),
        bad.iter().copied().reduce(f64::max).map(|t| t + 1.0),
    )
}

/// The end of the last second with failed requests from second `from` on (slow ones not
/// counted).
pub(crate) fn last_failed(series: &[Second], from: u32) -> Option<f64> {
    series
        .iter()
        .filter(|s| s.t >= from && window::failed(s) > 0)
        .map(|s| f64::from(s.t) + 1.0)
        .reduce(f64::max)
}

/// Responses per zone in `series[from..to]`.
pub(super) fn zones_of(series: &[Second], from: usize, to: usize) -> BTreeMap<String, u64> {
    let mut m = BTreeMap::new();
    for s in series.iter().take(to).skip(from) {
        for (z, n) in window::values(s, ZONE_HEADER) {
            *m.entry(z.clone()).or_default() += n;
        }
    }
    m
}

/// One load balancer node (remote address) as the client saw it.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Node {
    pub(crate) addr: String,
    /// Its zone, where known.
    pub(crate) zone: Option<String>,
    /// Requests per second it took before the fault.
    pub(crate) before_rps: f64,
    /// Requests it answered during the fault.
    pub(crate) answered: u64,
    /// Requests that failed on it during the fault (timeouts on open connections).
    pub(crate) failed: u64,
    /// Connection attempts to it that failed during the fault (the client then tried another).
    pub(crate) connect_failures: u64,
}

/// The load per node over seconds `[from, to)` and before `from`.
pub(crate) fn nodes(
    series: &[Second],
    from: u32,
    to: u32,
    zone_of: impl Fn(&str) -> Option<String>,
) -> Vec<Node> {
    let mut map: BTreeMap<String, Node> = BTreeMap::new();
    let before = series.iter().filter(|s| s.t < from).count().max(1) as f64;
    for s in series {
        let during = s.t >= from && s.t < to;
        for (addr, n) in &s.by_addr {
            let node = map.entry(addr.clone()).or_default();
            let failed = s.errors_by_addr.get(addr).copied().unwrap_or(0);
            if s.t < from {
                node.before_rps += *n as f64 / before;
            } else if during {
                node.answered += n.saturating_sub(failed);
                node.failed += failed;
            }
        }
        if during {
            for (addr, n) in &s.connect_failures {
                map.entry(addr.clone()).or_default().connect_failures += n;
            }
        }
    }
    map.into_iter()
        .map(|(addr, mut n)| {
            n.zone = zone_of(&addr);
            n.addr = addr;
            n
        })
        .collect()
}

/// What the failover scenario saw, for [`judge`]; times are wall seconds from the load's start.
#[derive(Debug, Clone, Default)]
pub(crate) struct Seen {
    pub(crate) zone: String,
    pub(crate) fault_at: f64,
    pub(crate) restore_at: f64,
    pub(crate) first_bad: Option<f64>,
    /// The end of the last second with a failed or slow request.
    pub(crate) last_bad: Option<f64>,
    /// The end of the last second with a failed request.
    pub(crate) last_failed: Option<f64>,
    /// Requests stalled in flight during the fault.
    pub(crate) stalled: bool,
    /// When the zonal shift started, if one did.
    pub(crate) shift_at: Option<f64>,
    pub(crate) remaining_before: u32,
    pub(crate) remaining_end: u32,
    /// Tasks that carry the load at the target value.
    pub(crate) needed: Option<f64>,
    pub(crate) max: Option<u32>,
    /// After the restore, until the zone answered again.
    pub(crate) back: Option<f64>,
    pub(crate) before: Window,
    pub(crate) during: Window,
    /// From the last bad second to the restore.
    pub(crate) clean: Window,
    pub(crate) after: Window,
    pub(crate) nodes: Vec<Node>,
}

/// The checks, figures and notes of a failover run: pure, from what was seen, the options and
/// the prediction. Times are AWS seconds.
pub(crate) fn judge(
    seen: &Seen,
    c: &ProveConfig,
    p: &Prediction,
) -> (Vec<Check>, Vec<Figure>, Vec<String>) {
    let t = Times::of(seen, c);
    (
        failover_checks(seen, c, p, &t),
        failover_figures(seen, c, p, &t),
        failover_notes(seen, c),
    )
}

/// What the checks and figures share: when errors were first seen, when they stopped, when the
/// SLO held again (AWS seconds after the fault), and the error budget.
#[derive(Debug, Clone, Copy)]
struct Times {
    detect: Option<f64>,
    stop: Option<f64>,
    slo_back: Option<f64>,
    budget: f64,
    budget_pct: f64,
}

impl Times {
    fn of(seen: &Seen, c: &ProveConfig) -> Times {
        let clock = c.clock;
        let failed = seen.during.failed;
        let budget = (c.rps * clock.wall_s(c.error_budget_s)).ceil();
        let budget_pct = if budget > 0.0 {
            failed as f64 * 100.0 / budget
        } else {
            100.0
        };
        let after_fault = |t: Option<f64>| t.map(|t| clock.model_s((t - seen.fault_at).max(0.0)));
        // Errors are failed requests; slow ones (over the p99 objective) can go on longer: new
        // connections try the failed zone's load balancer node first, until it leaves DNS, and
        // answer only after the client's connect timeout.
        Times {
            detect: after_fault(seen.first_bad),
            stop: after_fault(seen.last_failed),
            slo_back: after_fault(seen.last_bad),
            budget,
            budget_pct,
        }
    }
}

fn failover_checks(seen: &Seen, c: &ProveConfig, p: &Prediction, t: &Times) -> Vec<Check> {
    let clock = c.clock;
    let slo = c.slo;
    let zone = &seen.zone;
    let failed = seen.during.failed;
    let Times {
        stop,
        slo_back,
        budget,
        budget_pct,
        ..
    } = *t;
    let slow_tail = match (stop, slo_back) {
        (Some(e), Some(b)) if b > e => format!(
            "; slow requests went on until {b:.0} s (new connections tried {zone}'s load balancer node first)"
        ),
        (None, Some(b)) => format!("; no request failed, slow ones went on until {b:.0} s"),
        _ => String::new(),
    };
    let recovered = match seen.last_bad {
        None => true,
        Some(l) => seen.restore_at - l >= c.settle_s,
    };
    let (after_ok, after_detail) = seen.after.slo(&slo);
    let (clean_ok, clean_detail) = seen.clean.slo(&slo);
    let checks = vec![
        check(
            "errors stop",
            recovered && stop.is_none_or(|s| s <= p.max_failover_s),
            match (stop, recovered) {
                (None, true) if slo_back.is_none() => {
                    "no failed or slow request was seen".to_owned()
                }
                (None, true) => format!("no request failed{slow_tail}"),
                (Some(s), true) => format!(
                    "errors stopped {s:.0} s after the fault (objective {:.0} s, predicted {}){slow_tail}",
                    p.max_failover_s, p.failover.errors_stop
                ),
                (None, false) => format!(
                    "slow requests went on until the fault was undone (objective: the SLO holds within {:.0} s)",
                    p.max_failover_s
                ),
                (Some(_), false) => format!(
                    "errors went on until the fault was undone {:.0} s after it began (objective: stop within {:.0} s)",
                    clock.model_s((seen.restore_at - seen.fault_at).max(0.0)),
                    p.max_failover_s
                ),
            },
        ),
        check(
            "error budget",
            (failed as f64) <= budget,
            format!(
                "{failed} failed requests: {budget_pct:.0} % of the budget of {budget:.0} ({} AWS seconds at {} rps)",
                c.error_budget_s, c.rps
            ),
        ),
        check(
            "remaining zones carry the load",
            recovered && seen.clean.zone_share(zone) == 0.0 && clean_ok,
            if recovered {
                format!(
                    "after errors stopped: {}; {clean_detail}",
                    seen.clean.split()
                )
            } else {
                format!("errors never stopped while {zone} was failed")
            },
        ),
        check(
            "capacity in the remaining zones",
            seen.remaining_end >= seen.remaining_before && seen.remaining_end > 0,
            format!(
                "{} tasks running outside {zone} when the fault ended ({} before it){}",
                seen.remaining_end,
                seen.remaining_before,
                seen.needed
                    .map(|n| format!("; {n:.0} carry {} rps at the target value", c.rps))
                    .unwrap_or_default()
            ),
        ),
        check(
            "recovers after the zone returns",
            after_ok && (c.fault == Fault::StopTasks || seen.back.is_some()),
            format!(
                "{after_detail}; {zone} {}",
                match seen.back {
                    Some(b) => format!(
                        "answered again {:.0} s after it was restored",
                        clock.model_s(b)
                    ),
                    None => format!("did not answer in the {:.0} s after", c.after_s),
                }
            ),
        ),
    ];
    checks
}

fn failover_figures(seen: &Seen, c: &ProveConfig, p: &Prediction, t: &Times) -> Vec<Figure> {
    let clock = c.clock;
    let zone = &seen.zone;
    let failed = seen.during.failed;
    let Times {
        detect,
        stop,
        slo_back,
        budget_pct,
        ..
    } = *t;
    let share = |w: &Window| Some(w.zone_share(zone));
    let mut figures = vec![
        fig("time_to_detect_s", "time to detect", detect, "s"),
        fig("time_to_errors_stop_s", "time until errors stop", stop, "s")
            .predicted(Some(p.failover.errors_stop)),
        fig(
            "time_to_slo_s",
            "time until the SLO holds again",
            slo_back,
            "s",
        ),
        fig(
            "failed_requests",
            "failed requests",
            Some(failed as f64),
            "requests",
        ),
        fig(
            "error_budget_pct",
            "error budget spent",
            Some(budget_pct),
            "%",
        ),
        fig(
            "share_before_pct",
            &format!("share of {zone} before"),
            share(&seen.before),
            "%",
        ),
        fig(
            "share_during_pct",
            &format!("share of {zone} during"),
            share(&seen.during),
            "%",
        ),
        fig(
            "share_after_pct",
            &format!("share of {zone} after"),
            share(&seen.after),
            "%",
        ),
        fig(
            "remaining_tasks_before",
            "tasks in other zones before",
            Some(f64::from(seen.remaining_before)),
            "tasks",
        ),
        fig(
            "remaining_tasks_end",
            "tasks in other zones at the end",
            Some(f64::from(seen.remaining_end)),
            "tasks",
        ),
        fig(
            "fault_s",
            "fault length",
            Some(clock.model_s(seen.restore_at - seen.fault_at)),
            "s",
        ),
        fig(
            "time_to_zone_back_s",
            "time until the zone answers again",
            seen.back.map(|b| clock.model_s(b)),
            "s",
        )
        .predicted(Some(p.failover.recovered)),
        fig(
            "p99_after_ms",
            "p99 after restore",
            Some(seen.after.p99()),
            "ms",
        ),
    ];
    if let Some(s) = seen.shift_at {
        figures.push(fig(
            "zonal_shift_after_s",
            "zonal shift started after",
            Some(clock.model_s(s - seen.fault_at)),
            "s",
        ));
    }
    for n in &seen.nodes {
        let zone_of = n.zone.as_deref().unwrap_or("zone unknown");
        let key = n.zone.clone().unwrap_or_else(|| n.addr.clone());
        figures.push(fig(
            &format!("node_{key}_failed"),
            &format!(
                "node {} ({zone_of}): requests failed during the fault",
                n.addr
            ),
            Some(n.failed as f64),
            "requests",
        ));
        figures.push(fig(
            &format!("node_{key}_connect_failures"),
            &format!(
                "node {} ({zone_of}): connects failed during the fault",
                n.addr
            ),
            Some(n.connect_failures as f64),
            "",
        ));
    }
    figures
}

fn failover_notes(seen: &Seen, c: &ProveConfig) -> Vec<String> {
    let zone = &seen.zone;
    let mut notes = vec![format!("failed zone: {zone}")];
    for n in &seen.nodes {
        let zone_of = n.zone.as_deref().unwrap_or("zone unknown");
        notes.push(format!(
            "load balancer node {} ({zone_of}): {:.0} requests/s before; during the fault {} answered, {} failed, {} connection attempts failed (the client then tried another node)",
            n.addr, n.before_rps, n.answered, n.failed, n.connect_failures
        ));
    }
    if let Some(n) = seen.needed
        && f64::from(seen.remaining_end) < n
    {
        notes.push(format!(
            "the other zones run {} tasks, fewer than the {n:.0} that carry {} rps at the target value{}",
            seen.remaining_end,
            c.rps,
            seen.max
                .map(|m| format!(" (max-count {m} is spread over every zone)"))
                .unwrap_or_default()
        ));
    }
    if seen.stalled {
        notes.push("requests stalled in flight during the fault".to_owned());
    }
    notes
}

/// The tasks running outside `zone`.
#[cfg(test)]
mod tests {
    use std::time::Duration;

    use aws_model::{Clock, HealthTiming};

    use super::*;
    use crate::model::{Plan, predict};

    fn prediction(c: &ProveConfig) -> Prediction {
        predict(
            c,
            HealthTiming {
                interval: Duration::from_secs(10),
                timeout: Duration::from_secs(5),
                healthy_threshold: 2,
                unhealthy_threshold: 2,
            },
            None,
            Plan {
                tasks: 6,
                start_rps: 100.0,
            },
        )
    }

    /// A second of load: `sent` requests, `failed` of them errors on `dead`, the rest
    /// answered by `live` in zone b; `connects` failed connection attempts to `dead`.
    fn second(t: u32, sent: u64, failed: u64, connects: u64) -> Second {
        let (dead, live) = ("127.0.1.2:80".to_owned(), "127.0.2.2:80".to_owned());
        let mut s = Second {
            t,
            sent,
            completed: sent - failed,
            ok: sent - failed,
            errors: failed,
            p50_ms: 1.0,
            p99_ms: 2.0,
            ..Second::default()
        };
        s.by_addr.insert(dead.clone(), failed);
        s.by_addr.insert(live, sent - failed);
        if failed > 0 {
            s.errors_by_addr.insert(dead.clone(), failed);
        }
        if connects > 0 {
            s.connect_failures.insert(dead, connects);
        }
        s
    }

    #[test]
    fn bad_seconds_span_the_failures_and_nodes_show_them() {
        let series: Vec<Second> = (0..40)
            .map(|t| match t {
                12..=20 => second(t, 500, 40, 3),
                _ => second(t, 500, 0, 0),
            })
            .collect();
        assert_eq!(bad_span(&series, 10, 250.0), (Some(12.0), Some(21.0)));
        assert_eq!(bad_span(&series, 25, 250.0), (None, None));
        let n = nodes(&series, 10, 30, |a| {
            a.starts_with("127.0.1.").then(|| "eu-west-1a".to_owned())
        });
        let dead = n.iter().find(|n| n.addr == "127.0.1.2:80").unwrap();
        assert_eq!(dead.zone.as_deref(), Some("eu-west-1a"));
        assert_eq!(
            (dead.failed, dead.connect_failures, dead.answered),
            (360, 27, 0)
        );
        let live = n.iter().find(|n| n.addr == "127.0.2.2:80").unwrap();
        assert_eq!(live.before_rps, 500.0);
        assert_eq!(live.failed, 0);
    }

    fn window(sent: u64, failed: u64, zone_b: u64) -> Window {
        let mut w = Window {
            seconds: 10,
            sent,
            ok: sent - failed,
            failed,
            ..Window::default()
        };
        w.zones.insert("eu-west-1b".into(), zone_b);
        w
    }

    fn seen(last_bad: f64, failed: u64) -> Seen {
        Seen {
            zone: "eu-west-1a".into(),
            fault_at: 10.0,
            restore_at: last_bad + 15.5,
            first_bad: Some(10.0),
            last_bad: Some(last_bad),
            last_failed: Some(last_bad),
            remaining_before: 3,
            remaining_end: 3,
            back: Some(1.0),
            before: window(5000, 0, 2500),
            during: window(3000, failed, 2000),
            clean: window(1000, 0, 1000),
            after: window(5000, 0, 2500),
            ..Seen::default()
        }
    }

    #[test]
    fn a_failover_within_the_prediction_passes_and_a_slow_or_costly_one_fails() {
        let c = ProveConfig {
            clock: Clock::fast(),
            ..ProveConfig::default()
        };
        let p = prediction(&c);
        // Errors stopped 2.8 wall seconds (28 AWS seconds) in, 1,000 failed of a budget of 1,000.
        let (checks, figures, _) = judge(&seen(12.8, 1000), &c, &p);
        assert!(checks.iter().all(|c| c.passed), "{checks:?}");
        let stop = figures
            .iter()
            .find(|f| f.key == "time_to_errors_stop_s")
            .unwrap();
        assert!((stop.value.unwrap() - 28.0).abs() < 1e-9);
        assert!(stop.predicted.is_some());
        // Errors that went on past the objective: the check says so.
        let late = 10.0 + p.max_failover_s / 10.0 + 0.5;
        let mut s = seen(late, 1000);
        s.restore_at = late + c.settle_s;
        let (checks, _, _) = judge(&s, &c, &p);
        let stop = checks.iter().find(|c| c.name == "errors stop").unwrap();
        assert!(!stop.passed, "{stop:?}");
        // Over budget (20 AWS seconds at 500 rps = 1,000 requests on this clock).
        let (checks, _, _) = judge(&seen(12.8, 1001), &c, &p);
        assert!(
            !checks
                .iter()
                .find(|c| c.name == "error budget")
                .unwrap()
                .passed
        );
        // Never stopped while the zone was out.
        let mut s = seen(15.9, 10);
        s.restore_at = 16.0;
        let (checks, _, _) = judge(&s, &c, &p);
        assert!(
            checks
                .iter()
                .find(|c| c.name == "errors stop")
                .unwrap()
                .detail
                .contains("went on")
        );
    }

    #[test]
    fn errors_stop_at_the_last_failure_and_slow_seconds_after_it_are_reported_apart() {
        let c = ProveConfig {
            clock: Clock::fast(),
            ..ProveConfig::default()
        };
        let p = prediction(&c);
        // Failures until 3.5 wall seconds in (35 AWS seconds), slow requests until 5.1 (51):
        // as seen on the AWS clock, new connections trying the failed node first.
        let mut s = seen(15.1, 1000);
        s.last_failed = Some(13.5);
        let (checks, figures, _) = judge(&s, &c, &p);
        let value = |key: &str| figures.iter().find(|f| f.key == key).unwrap().value;
        assert_eq!(value("time_to_errors_stop_s").map(f64::round), Some(35.0));
        assert_eq!(value("time_to_slo_s").map(f64::round), Some(51.0));
        let stop = checks.iter().find(|c| c.name == "errors stop").unwrap();
        assert!(stop.passed, "{stop:?}");
        assert!(
            stop.detail
                .starts_with("errors stopped 35 s after the fault")
                && stop.detail.contains("slow requests went on until 51 s"),
            "{stop:?}"
        );
        // Failures past the objective still fail the check, whatever the slow ones did.
        s.last_failed = Some(10.0 + p.max_failover_s / 10.0 + 0.5);
        s.last_bad = s.last_failed;
        s.restore_at = s.last_failed.unwrap() + c.settle_s;
        let (checks, _, _) = judge(&s, &c, &p);
        assert!(
            !checks
                .iter()
                .find(|c| c.name == "errors stop")
                .unwrap()
                .passed
        );
    }
}
