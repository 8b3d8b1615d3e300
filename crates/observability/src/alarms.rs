//! The alarms: what the configuration asks for, as plain comparable values ([`AlarmDef`]),
//! and the same shape read back from `DescribeAlarms`, so drift is a field-by-field diff.

use std::fmt;

use aws_sdk_cloudwatch::types::{
    ComparisonOperator, Dimension, Metric, MetricAlarm, MetricDataQuery, MetricStat, Statistic,
};

use crate::ObservabilityInputs;
use crate::config::ObservabilitySpec;
use crate::dashboard::ALB_NAMESPACE;

/// `TreatMissingData` for every alarm here: no requests means no errors and no latency, and
/// a zone without targets reports no unhealthy hosts, so missing data is good news.
pub(crate) const NOT_BREACHING: &str = "notBreaching";

/// The logical name (and alarm-name suffix) of the 5xx error-rate alarm.
pub(crate) const ERROR_RATE: &str = "5xx-rate";
/// The logical name of the p99 latency alarm.
pub(crate) const LATENCY: &str = "latency-p99";
/// The logical-name prefix of the per-zone unhealthy-hosts alarms.
pub(crate) const UNHEALTHY_PREFIX: &str = "unhealthy-hosts-";

/// The metric-math expression of the error-rate alarm: load balancer and target 5xx per
/// request, in percent; missing 5xx counts (no errors) are zero.
pub(crate) const ERROR_RATE_EXPRESSION: &str =
    "(FILL(elb5xx, 0) + FILL(target5xx, 0)) / requests * 100";

/// One metric of a metric-math alarm.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct QueryDef {
    pub(crate) id: String,
    pub(crate) label: Option<String>,
    pub(crate) return_data: bool,
    pub(crate) expression: Option<String>,
    /// `(namespace, metric name, dimensions, period, stat)`.
    pub(crate) stat: Option<StatDef>,
}

/// The metric and statistic of a query.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct StatDef {
    pub(crate) namespace: String,
    pub(crate) metric: String,
    pub(crate) dimensions: Vec<(String, String)>,
    pub(crate) period: i32,
    pub(crate) stat: String,
}

/// Everything of one alarm that we set and check.
#[derive(Debug, Clone, PartialEq)]
pub struct AlarmDef {
    /// The logical name (`5xx-rate`), also the `stackproof:name` tag.
    pub(crate) logical: String,
    /// The alarm name: `{stack}-{logical}`.
    pub(crate) name: String,
    pub(crate) description: Option<String>,
    pub(crate) actions_enabled: bool,
    /// Alarm actions and OK actions (the same list), sorted.
    pub(crate) alarm_actions: Vec<String>,
    pub(crate) ok_actions: Vec<String>,
    pub(crate) namespace: Option<String>,
    pub(crate) metric: Option<String>,
    /// Sorted by name.
    pub(crate) dimensions: Vec<(String, String)>,
    pub(crate) statistic: Option<String>,
    pub(crate) extended_statistic: Option<String>,
    pub(crate) period: Option<i32>,
    pub(crate) metrics: Vec<QueryDef>,
    pub(crate) evaluation_periods: i32,
    pub(crate) datapoints_to_alarm: Option<i32>,
    pub(crate) threshold: f64,
    pub(crate) comparison: String,
    pub(crate) treat_missing_data: Option<String>,
}

fn dims(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    v.sort();
    v
}

/// The alarm name of logical alarm `logical` of `stack`.
pub(crate) fn alarm_name(stack: &str, logical: &str) -> String {
    format!("{stack}-{logical}")
}

/// The alarms of a stack, in a stable order. `topic` is the ARN every alarm notifies (alarm
/// and OK), when there is one.
pub(crate) fn desired(
    stack: &str,
    spec: &ObservabilitySpec,
    inputs: &ObservabilityInputs,
    topic: Option<&str>,
) -> Vec<AlarmDef> {
    let actions: Vec<String> = topic.map(str::to_owned).into_iter().collect();
    let period = i32::try_from(spec.period_seconds).unwrap_or(i32::MAX);
    let periods = i32::try_from(spec.evaluation_periods).unwrap_or(i32::MAX);
    let base = |logical: String, description: String| AlarmDef {
        name: alarm_name(stack, &logical),
        logical,
        description: Some(description),
        actions_enabled: true,
        alarm_actions: actions.clone(),
        ok_actions: actions.clone(),
        namespace: None,
        metric: None,
        dimensions: Vec::new(),
        statistic: None,
        extended_statistic: None,
        period: None,
        metrics: Vec::new(),
        evaluation_periods: periods,
        datapoints_to_alarm: Some(periods),
        threshold: 0.0,
        comparison: ComparisonOperator::GreaterThanThreshold.as_str().to_owned(),
        treat_missing_data: Some(NOT_BREACHING.to_owned()),
    };
    let lb = dims(&[("LoadBalancer", &inputs.load_balancer_arn_suffix)]);
    let sum_of = |id: &str, metric: &str| QueryDef {
        id: id.to_owned(),
        label: None,
        return_data: false,
        expression: None,
        stat: Some(StatDef {
            namespace: ALB_NAMESPACE.to_owned(),
            metric: metric.to_owned(),
            dimensions: lb.clone(),
            period,
            stat: "Sum".to_owned(),
        }),
    };

    let mut alarms = Vec::new();
    alarms.push(AlarmDef {
        metrics: vec![
            sum_of("requests", "RequestCount"),
            sum_of("elb5xx", "HTTPCode_ELB_5XX_Count"),
            sum_of("target5xx", "HTTPCode_Target_5XX_Count"),
            QueryDef {
                id: "rate".to_owned(),
                label: Some("5xx error rate (%)".to_owned()),
                return_data: true,
                expression: Some(ERROR_RATE_EXPRESSION.to_owned()),
                stat: None,
            },
        ],
        threshold: spec.error_rate_percent,
        ..base(
            ERROR_RATE.to_owned(),
            format!(
                "Stack {stack}: more than {}% of load balancer requests ended in a 5xx (load balancer or target) for {} periods of {} s.",
                spec.error_rate_percent, spec.evaluation_periods, spec.period_seconds
            ),
        )
    });
    alarms.push(AlarmDef {
        namespace: Some(ALB_NAMESPACE.to_owned()),
        metric: Some("TargetResponseTime".to_owned()),
        dimensions: lb.clone(),
        extended_statistic: Some("p99".to_owned()),
        period: Some(period),
        // TargetResponseTime is in seconds.
        threshold: f64::from(spec.latency_p99_ms) / 1000.0,
        ..base(
            LATENCY.to_owned(),
            format!(
                "Stack {stack}: the 99th percentile of target response time was above {} ms for {} periods of {} s.",
                spec.latency_p99_ms, spec.evaluation_periods, spec.period_seconds
            ),
        )
    });
    for zone in &inputs.zones {
        alarms.push(AlarmDef {
            namespace: Some(ALB_NAMESPACE.to_owned()),
            metric: Some("UnHealthyHostCount".to_owned()),
            dimensions: dims(&[
                ("TargetGroup", &inputs.target_group_arn_suffix),
                ("LoadBalancer", &inputs.load_balancer_arn_suffix),
                ("AvailabilityZone", zone),
            ]),
            statistic: Some(Statistic::Maximum.as_str().to_owned()),
            period: Some(period),
            threshold: 0.0,
            ..base(
                format!("{UNHEALTHY_PREFIX}{zone}"),
                format!(
                    "Stack {stack}: the target group had unhealthy targets in {zone} for {} periods of {} s.",
                    spec.evaluation_periods, spec.period_seconds
                ),
            )
        });
    }
    alarms
}

fn observed_dims(dimensions: &[Dimension]) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = dimensions
        .iter()
        .map(|d| {
            (
                d.name().unwrap_or_default().to_owned(),
                d.value().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    v.sort();
    v
}

fn sorted(list: &[String]) -> Vec<String> {
    let mut v = list.to_vec();
    v.sort();
    v
}

impl AlarmDef {
    /// An existing alarm in the same shape; `logical` is the name we know it by.
    pub(crate) fn from_observed(logical: &str, a: &MetricAlarm) -> AlarmDef {
        AlarmDef {
            logical: logical.to_owned(),
            name: a.alarm_name().unwrap_or_default().to_owned(),
            description: a.alarm_description().map(str::to_owned),
            actions_enabled: a.actions_enabled().unwrap_or(true),
            alarm_actions: sorted(a.alarm_actions()),
            ok_actions: sorted(a.ok_actions()),
            namespace: a.namespace().map(str::to_owned),
            metric: a.metric_name().map(str::to_owned),
            dimensions: observed_dims(a.dimensions()),
            statistic: a.statistic().map(|s| s.as_str().to_owned()),
            extended_statistic: a.extended_statistic().map(str::to_owned),
            period: a.period(),
            metrics: a
                .metrics()
                .iter()
                .map(|q| QueryDef {
                    id: q.id().unwrap_or_default().to_owned(),
                    label: q.label().map(str::to_owned),
                    return_data: q.return_data().unwrap_or(true),
                    expression: q.expression().map(str::to_owned),
                    stat: q.metric_stat().map(|s| StatDef {
                        namespace: s
                            .metric()
                            .and_then(|m| m.namespace())
                            .unwrap_or_default()
                            .to_owned(),
                        metric: s
                            .metric()
                            .and_then(|m| m.metric_name())
                            .unwrap_or_default()
                            .to_owned(),
                        dimensions: s
                            .metric()
                            .map(|m| observed_dims(m.dimensions()))
                            .unwrap_or_default(),
                        period: s.period().unwrap_or_default(),
                        stat: s.stat().unwrap_or_default().to_owned(),
                    }),
                })
                .collect(),
            evaluation_periods: a.evaluation_periods().unwrap_or_default(),
            datapoints_to_alarm: a.datapoints_to_alarm(),
            threshold: a.threshold().unwrap_or_default(),
            comparison: a
                .comparison_operator()
                .map(|c| c.as_str().to_owned())
                .unwrap_or_default(),
            treat_missing_data: a.treat_missing_data().map(str::to_owned),
        }
    }

    /// The settings that differ from `have`, one line each: `field have -> want`.
    pub(crate) fn differences(&self, have: &AlarmDef) -> Vec<String> {
        let mut out = Vec::new();
        let mut check = |field: &str, have: &dyn fmt::Debug, want: &dyn fmt::Debug, same: bool| {
            if !same {
                out.push(format!("{field} {have:?} -> {want:?}"));
            }
        };
        macro_rules! field {
            ($name:literal, $f:ident) => {
                check($name, &have.$f, &self.$f, have.$f == self.$f)
            };
        }
        field!("description", description);
        field!("actions-enabled", actions_enabled);
        field!("alarm-actions", alarm_actions);
        field!("ok-actions", ok_actions);
        field!("namespace", namespace);
        field!("metric", metric);
        field!("dimensions", dimensions);
        field!("statistic", statistic);
        field!("extended-statistic", extended_statistic);
        field!("period", period);
        field!("metrics", metrics);
        field!("evaluation-periods", evaluation_periods);
        field!("datapoints-to-alarm", datapoints_to_alarm);
        field!("threshold", threshold);
        field!("comparison", comparison);
        field!("treat-missing-data", treat_missing_data);
        out
    }

    /// The metric-math queries as SDK values.
    pub(crate) fn queries(&self) -> Vec<MetricDataQuery> {
        self.metrics
            .iter()
            .map(|q| {
                MetricDataQuery::builder()
                    .id(&q.id)
                    .set_label(q.label.clone())
                    .return_data(q.return_data)
                    .set_expression(q.expression.clone())
                    .set_metric_stat(q.stat.as_ref().map(|s| {
                        MetricStat::builder()
                            .metric(
                                Metric::builder()
                                    .namespace(&s.namespace)
                                    .metric_name(&s.metric)
                                    .set_dimensions(Some(sdk_dims(&s.dimensions)))
                                    .build(),
                            )
                            .period(s.period)
                            .stat(&s.stat)
                            .build()
                    }))
                    .build()
            })
            .collect()
    }

    /// A one-line summary for plans.
    pub(crate) fn summary(&self) -> String {
        let what = match (&self.metric, self.metrics.iter().find(|q| q.return_data)) {
            (Some(m), _) => {
                let stat = self
                    .extended_statistic
                    .as_deref()
                    .or(self.statistic.as_deref())
                    .unwrap_or_default();
                format!("{stat} {m}")
            }
            (None, Some(q)) => q.expression.clone().unwrap_or_default(),
            (None, None) => String::new(),
        };
        let actions = if self.alarm_actions.is_empty() {
            "no actions".to_owned()
        } else {
            format!("notifies {}", self.alarm_actions.join(", "))
        };
        format!(
            "{what} > {} for {} x {} s; {actions}",
            self.threshold,
            self.evaluation_periods,
            self.period
                .or(self
                    .metrics
                    .iter()
                    .find_map(|q| q.stat.as_ref().map(|s| s.period)))
                .unwrap_or_default()
        )
    }
}

/// Dimensions as SDK values.
pub(crate) fn sdk_dims(pairs: &[(String, String)]) -> Vec<Dimension> {
    pairs
        .iter()
        .map(|(k, v)| Dimension::builder().name(k).value(v).build())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dashboard::tests::inputs;

    #[test]
    fn the_error_rate_alarm_is_metric_math_over_request_count() {
        let alarms = desired("demo", &ObservabilitySpec::default(), &inputs(), None);
        let rate = &alarms[0];
        assert_eq!(rate.name, "demo-5xx-rate");
        assert_eq!(rate.metric, None);
        assert_eq!(rate.threshold, 1.0);
        assert_eq!(rate.comparison, "GreaterThanThreshold");
        assert_eq!(rate.treat_missing_data.as_deref(), Some("notBreaching"));
        let returned: Vec<&QueryDef> = rate.metrics.iter().filter(|q| q.return_data).collect();
        assert_eq!(returned.len(), 1, "exactly one query returns data");
        assert_eq!(
            returned[0].expression.as_deref(),
            Some("(FILL(elb5xx, 0) + FILL(target5xx, 0)) / requests * 100")
        );
        let inputs_ = inputs();
        let metrics: Vec<(&str, &str, &str)> = rate
            .metrics
            .iter()
            .filter_map(|q| {
                let s = q.stat.as_ref()?;
                assert_eq!(s.namespace, "AWS/ApplicationELB");
                assert_eq!(s.stat, "Sum");
                assert_eq!(s.period, 60);
                assert_eq!(
                    s.dimensions,
                    [(
                        "LoadBalancer".to_owned(),
                        inputs_.load_balancer_arn_suffix.clone()
                    )]
                );
                Some((q.id.as_str(), s.metric.as_str(), ""))
            })
            .map(|(id, m, _)| (id, m, ""))
            .collect();
        assert_eq!(
            metrics,
            [
                ("requests", "RequestCount", ""),
                ("elb5xx", "HTTPCode_ELB_5XX_Count", ""),
                ("target5xx", "HTTPCode_Target_5XX_Count", "")
            ]
        );
        // Every id the expression uses is defined.
        for id in ["requests", "elb5xx", "target5xx"] {
            assert!(ERROR_RATE_EXPRESSION.contains(id));
        }
    }

    #[test]
    fn latency_is_p99_in_seconds_and_unhealthy_hosts_has_one_alarm_per_zone() {
        let spec = ObservabilitySpec {
            latency_p99_ms: 250,
            evaluation_periods: 5,
            ..ObservabilitySpec::default()
        };
        let alarms = desired(
            "demo",
            &spec,
            &inputs(),
            Some("arn:aws:sns:x:1:demo-alarms"),
        );
        let latency = alarms.iter().find(|a| a.logical == "latency-p99").unwrap();
        assert_eq!(latency.extended_statistic.as_deref(), Some("p99"));
        assert_eq!(latency.statistic, None);
        assert_eq!(latency.metric.as_deref(), Some("TargetResponseTime"));
        assert_eq!(latency.threshold, 0.25);
        assert_eq!(latency.evaluation_periods, 5);
        assert_eq!(latency.datapoints_to_alarm, Some(5));
        let zones: Vec<&AlarmDef> = alarms
            .iter()
            .filter(|a| a.logical.starts_with("unhealthy-hosts-"))
            .collect();
        assert_eq!(zones.len(), 3);
        for (alarm, zone) in zones.iter().zip(&inputs().zones) {
            assert_eq!(alarm.name, format!("demo-unhealthy-hosts-{zone}"));
            assert_eq!(alarm.metric.as_deref(), Some("UnHealthyHostCount"));
            assert_eq!(alarm.statistic.as_deref(), Some("Maximum"));
            assert_eq!(alarm.threshold, 0.0);
            let az = alarm
                .dimensions
                .iter()
                .find(|(k, _)| k == "AvailabilityZone")
                .unwrap();
            assert_eq!(&az.1, zone);
            assert_eq!(alarm.dimensions.len(), 3);
        }
        for a in &alarms {
            assert_eq!(a.alarm_actions, ["arn:aws:sns:x:1:demo-alarms"]);
            assert_eq!(a.ok_actions, a.alarm_actions);
        }
    }

    #[test]
    fn differences_name_each_changed_setting() {
        let alarms = desired("demo", &ObservabilitySpec::default(), &inputs(), None);
        let want = &alarms[1];
        assert!(want.differences(want).is_empty());
        let mut have = want.clone();
        have.threshold = 5.0;
        have.alarm_actions = vec!["arn:old".to_owned()];
        assert_eq!(
            want.differences(&have),
            ["alarm-actions [\"arn:old\"] -> []", "threshold 5.0 -> 1.0"]
        );
    }

    #[test]
    fn queries_round_trip_through_sdk_values() {
        let alarms = desired("demo", &ObservabilitySpec::default(), &inputs(), None);
        let rate = &alarms[0];
        let sdk = MetricAlarm::builder()
            .alarm_name(&rate.name)
            .set_alarm_description(rate.description.clone())
            .actions_enabled(true)
            .set_metrics(Some(rate.queries()))
            .evaluation_periods(rate.evaluation_periods)
            .set_datapoints_to_alarm(rate.datapoints_to_alarm)
            .threshold(rate.threshold)
            .comparison_operator(ComparisonOperator::GreaterThanThreshold)
            .treat_missing_data("notBreaching")
            .build();
        assert_eq!(AlarmDef::from_observed(ERROR_RATE, &sdk), *rate);
    }
}
