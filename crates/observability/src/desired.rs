//! What the configuration asks for, and the ordered operations that take what exists there.

use std::collections::BTreeSet;

use infra::{Action, Change};

use crate::alarms::{self, AlarmDef};
use crate::config::ObservabilitySpec;
use crate::dashboard::{self, Dashboard};
use crate::observe::{Observed, Subscription, topic_name};
use crate::{MODULE, ObservabilityInputs, TOPIC};

/// Stands for the ARN of a topic that this apply creates, in alarm actions planned before it
/// exists; replaced by the real ARN when the alarm is written.
pub(crate) const NEW_TOPIC: &str = "(topic created by this apply)";

/// The whole observability the configuration asks for.
#[derive(Debug, Clone, PartialEq)]
pub struct Desired {
    pub(crate) stack: String,
    pub(crate) dashboard_name: String,
    pub(crate) dashboard: Option<Dashboard>,
    pub(crate) email: Option<String>,
    /// Alarms, with actions pointing at the observed topic (or [`NEW_TOPIC`]).
    pub(crate) alarms: Vec<AlarmDef>,
}

/// The alarm names of a stack that are its own by name alone: those whose shape no other
/// stack's alarm can have (see [`crate::observe`]).
pub(crate) fn known_alarm_names(
    stack: &str,
    inputs: Option<&ObservabilityInputs>,
) -> BTreeSet<String> {
    let mut names = BTreeSet::from([
        alarms::alarm_name(stack, alarms::ERROR_RATE),
        alarms::alarm_name(stack, alarms::LATENCY),
    ]);
    if let Some(inputs) = inputs {
        names.extend(
            inputs
                .zones
                .iter()
                .map(|z| alarms::alarm_name(stack, &format!("{}{z}", alarms::UNHEALTHY_PREFIX))),
        );
    }
    names
}

impl Desired {
    /// What `spec` asks for, given what exists (for the topic's ARN).
    pub(crate) fn new(
        stack: &str,
        region: &str,
        spec: &ObservabilitySpec,
        inputs: &ObservabilityInputs,
        observed: &Observed,
    ) -> Desired {
        let topic = spec.alarm_email.as_ref().map(|_| {
            observed
                .topic
                .as_ref()
                .map_or(NEW_TOPIC, |t| t.arn.as_str())
        });
        Desired {
            stack: stack.to_owned(),
            dashboard_name: stack.to_owned(),
            dashboard: spec
                .dashboard
                .then(|| dashboard::build(stack, region, spec, inputs)),
            email: spec.alarm_email.clone(),
            alarms: alarms::desired(stack, spec, inputs, topic),
        }
    }
}

/// One step of an apply or destroy, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    CreateTopic {
        name: String,
    },
    RetagTopic {
        arn: String,
    },
    Subscribe {
        email: String,
    },
    Unsubscribe {
        sub: Subscription,
    },
    /// `differences` is empty for a new alarm.
    PutAlarm {
        alarm: Box<AlarmDef>,
        exists: bool,
        differences: Vec<String>,
    },
    DeleteAlarms {
        names: Vec<String>,
    },
    PutDashboard {
        name: String,
        body: Box<Dashboard>,
        exists: bool,
    },
    DeleteDashboard {
        name: String,
    },
    /// Removes confirmed subscriptions, then the topic.
    DeleteTopic {
        arn: String,
        subscriptions: Vec<Subscription>,
    },
}

impl Op {
    /// How the step shows in a plan.
    pub(crate) fn changes(&self) -> Vec<Change> {
        let c = |action, kind: &str, name: &str| Change::new(action, MODULE, kind, name);
        match self {
            Op::CreateTopic { name } => {
                vec![c(Action::Create, "sns-topic", TOPIC).detail(format!("named {name}, tagged"))]
            }
            Op::RetagTopic { arn } => {
                vec![
                    c(Action::Update, "sns-topic", TOPIC)
                        .id(arn)
                        .detail("tag as the stack's"),
                ]
            }
            Op::Subscribe { email } => {
                vec![
                    c(Action::Create, "sns-subscription", email)
                        .detail("email; the recipient must confirm it"),
                ]
            }
            Op::Unsubscribe { sub } => {
                vec![c(Action::Delete, "sns-subscription", &sub.endpoint).id(&sub.arn)]
            }
            Op::PutAlarm {
                alarm,
                exists: false,
                ..
            } => vec![c(Action::Create, "alarm", &alarm.name).detail(alarm.summary())],
            Op::PutAlarm {
                alarm,
                exists: true,
                differences,
            } => {
                let mut ch = c(Action::Update, "alarm", &alarm.name);
                ch.details = differences.clone();
                vec![ch]
            }
            Op::DeleteAlarms { names } => names
                .iter()
                .map(|n| c(Action::Delete, "alarm", n))
                .collect(),
            Op::PutDashboard { name, body, exists } => {
                let lines: usize = body.metric_widgets().map(|w| w.metrics.len()).sum();
                let detail = format!("{} widgets, {lines} metric lines", body.widgets.len());
                if *exists {
                    vec![
                        c(Action::Update, "dashboard", name)
                            .detail(format!("body differs; rewrite it ({detail})")),
                    ]
                } else {
                    vec![c(Action::Create, "dashboard", name).detail(detail)]
                }
            }
            Op::DeleteDashboard { name } => vec![c(Action::Delete, "dashboard", name)],
            Op::DeleteTopic { arn, subscriptions } => {
                let mut out: Vec<Change> = subscriptions
                    .iter()
                    .filter(|s| !s.pending())
                    .map(|s| c(Action::Delete, "sns-subscription", &s.endpoint).id(&s.arn))
                    .collect();
                out.push(c(Action::Delete, "sns-topic", TOPIC).id(arn));
                out
            }
        }
    }
}

/// The steps from `observed` to `desired`: topic and subscription first (alarms point at the
/// topic), then alarms, the dashboard, and last the topic's removal (after no alarm uses it).
pub(crate) fn diff(desired: &Desired, observed: &Observed) -> Vec<Op> {
    let mut ops = Vec::new();
    let ours = observed
        .topic
        .as_ref()
        .filter(|t| t.is_ours(&desired.stack));
    if let Some(email) = &desired.email {
        match &observed.topic {
            None => {
                ops.push(Op::CreateTopic {
                    name: topic_name(&desired.stack),
                });
                ops.push(Op::Subscribe {
                    email: email.clone(),
                });
            }
            Some(topic) => {
                if ours.is_none() {
                    ops.push(Op::RetagTopic {
                        arn: topic.arn.clone(),
                    });
                }
                let emails = topic.subscriptions.iter().filter(|s| s.protocol == "email");
                let mut subscribed = false;
                for sub in emails {
                    if sub.endpoint == *email {
                        subscribed = true;
                    } else if !sub.pending() {
                        // The address changed: the old one stops getting mail. A pending
                        // subscription cannot be removed; it lapses unconfirmed.
                        ops.push(Op::Unsubscribe { sub: sub.clone() });
                    }
                }
                if !subscribed {
                    ops.push(Op::Subscribe {
                        email: email.clone(),
                    });
                }
            }
        }
    }

    for want in &desired.alarms {
        match observed.alarms.get(&want.name) {
            None => ops.push(Op::PutAlarm {
                alarm: Box::new(want.clone()),
                exists: false,
                differences: Vec::new(),
            }),
            Some(have) => {
                let differences = want.differences(&AlarmDef::from_observed(&want.logical, have));
                if !differences.is_empty() {
                    ops.push(Op::PutAlarm {
                        alarm: Box::new(want.clone()),
                        exists: true,
                        differences,
                    });
                }
            }
        }
    }
    let wanted: BTreeSet<&str> = desired.alarms.iter().map(|a| a.name.as_str()).collect();
    let extra: Vec<String> = observed
        .alarms
        .keys()
        .filter(|n| !wanted.contains(n.as_str()))
        .cloned()
        .collect();
    if !extra.is_empty() {
        ops.push(Op::DeleteAlarms { names: extra });
    }

    match (&desired.dashboard, &observed.dashboard) {
        (Some(want), have) => {
            let matches = have.as_deref().is_some_and(|body| same_body(want, body));
            if !matches {
                ops.push(Op::PutDashboard {
                    name: desired.dashboard_name.clone(),
                    body: Box::new(want.clone()),
                    exists: have.is_some(),
                });
            }
        }
        (None, Some(_)) => ops.push(Op::DeleteDashboard {
            name: desired.dashboard_name.clone(),
        }),
        (None, None) => {}
    }

    if desired.email.is_none()
        && let Some(topic) = ours
    {
        ops.push(Op::DeleteTopic {
            arn: topic.arn.clone(),
            subscriptions: topic.subscriptions.clone(),
        });
    }
    ops
}

/// True when the body read back is, as JSON, the body we want (whitespace and key order do
/// not count).
pub(crate) fn same_body(want: &Dashboard, have: &str) -> bool {
    let Ok(want) = serde_json::to_value(want) else {
        return false;
    };
    serde_json::from_str::<serde_json::Value>(have).is_ok_and(|have| have == want)
}

/// The steps that remove everything of the stack's observability.
pub(crate) fn teardown(stack: &str, observed: &Observed) -> Vec<Op> {
    let mut ops = Vec::new();
    if !observed.alarms.is_empty() {
        ops.push(Op::DeleteAlarms {
            names: observed.alarms.keys().cloned().collect(),
        });
    }
    if observed.dashboard.is_some() {
        ops.push(Op::DeleteDashboard {
            name: stack.to_owned(),
        });
    }
    if let Some(topic) = observed.topic.as_ref().filter(|t| t.is_ours(stack)) {
        ops.push(Op::DeleteTopic {
            arn: topic.arn.clone(),
            subscriptions: topic.subscriptions.clone(),
        });
    }
    ops
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::dashboard::tests::inputs;
    use crate::observe::Topic;

    fn desired(spec: &ObservabilitySpec, observed: &Observed) -> Desired {
        Desired::new("demo", "eu-west-1", spec, &inputs(), observed)
    }

    fn kinds(ops: &[Op]) -> Vec<String> {
        ops.iter()
            .flat_map(Op::changes)
            .map(|c| format!("{:?} {} {}", c.action, c.kind, c.name))
            .collect()
    }

    fn ours(arn: &str, subs: Vec<Subscription>) -> Topic {
        Topic {
            arn: arn.to_owned(),
            tags: BTreeMap::from([
                ("stackproof:stack".to_owned(), "demo".to_owned()),
                ("stackproof:module".to_owned(), "observability".to_owned()),
            ]),
            subscriptions: subs,
        }
    }

    fn sub(arn: &str, email: &str) -> Subscription {
        Subscription {
            arn: arn.to_owned(),
            protocol: "email".to_owned(),
            endpoint: email.to_owned(),
        }
    }

    #[test]
    fn an_empty_account_gets_topic_subscription_alarms_and_dashboard_in_order() {
        let spec = ObservabilitySpec {
            alarm_email: Some("ops@example.com".to_owned()),
            ..ObservabilitySpec::default()
        };
        let observed = Observed::default();
        let want = desired(&spec, &observed);
        assert!(want.alarms.iter().all(|a| a.alarm_actions == [NEW_TOPIC]));
        assert_eq!(
            kinds(&diff(&want, &observed)),
            [
                "Create sns-topic alarms",
                "Create sns-subscription ops@example.com",
                "Create alarm demo-5xx-rate",
                "Create alarm demo-latency-p99",
                "Create alarm demo-unhealthy-hosts-eu-west-1a",
                "Create alarm demo-unhealthy-hosts-eu-west-1b",
                "Create alarm demo-unhealthy-hosts-eu-west-1c",
                "Create dashboard demo",
            ]
        );
    }

    #[test]
    fn a_changed_email_resubscribes_and_an_unset_email_removes_the_topic_last() {
        let spec = ObservabilitySpec {
            alarm_email: Some("new@example.com".to_owned()),
            dashboard: false,
            ..ObservabilitySpec::default()
        };
        let observed = Observed {
            topic: Some(ours(
                "arn:aws:sns:eu-west-1:1:demo-alarms",
                vec![
                    sub("arn:aws:sns:eu-west-1:1:demo-alarms:1", "old@example.com"),
                    sub("PendingConfirmation", "older@example.com"),
                ],
            )),
            ..Observed::default()
        };
        let want = desired(&spec, &observed);
        let ops = diff(&want, &observed);
        let k = kinds(&ops);
        assert_eq!(
            &k[..2],
            [
                "Delete sns-subscription old@example.com",
                "Create sns-subscription new@example.com"
            ]
        );

        let spec = ObservabilitySpec {
            dashboard: false,
            ..ObservabilitySpec::default()
        };
        let want = desired(&spec, &observed);
        let k = kinds(&diff(&want, &observed));
        assert_eq!(
            k.last().map(String::as_str),
            Some("Delete sns-topic alarms")
        );
        assert!(
            k[k.len() - 2].starts_with("Delete sns-subscription old@"),
            "{k:?}"
        );
        assert!(
            !k.iter().any(|c| c.contains("older@")),
            "pending ones cannot be removed"
        );
    }

    #[test]
    fn a_pending_subscription_counts_as_subscribed() {
        let spec = ObservabilitySpec {
            alarm_email: Some("ops@example.com".to_owned()),
            dashboard: false,
            ..ObservabilitySpec::default()
        };
        let observed = Observed {
            topic: Some(ours(
                "arn:t",
                vec![sub("PendingConfirmation", "ops@example.com")],
            )),
            ..Observed::default()
        };
        let want = desired(&spec, &observed);
        assert!(
            !kinds(&diff(&want, &observed))
                .iter()
                .any(|k| k.contains("sns"))
        );
    }

    #[test]
    fn a_dashboard_body_is_compared_as_json() {
        let want = dashboard::build(
            "demo",
            "eu-west-1",
            &ObservabilitySpec::default(),
            &inputs(),
        );
        let compact = serde_json::to_string(&want).unwrap();
        let pretty = serde_json::to_string_pretty(&want).unwrap();
        assert!(same_body(&want, &compact));
        assert!(same_body(&want, &pretty));
        assert!(!same_body(&want, &compact.replace("p99", "p90")));
        assert!(!same_body(&want, "not json"));
    }

    #[test]
    fn extra_alarms_are_deleted_and_nothing_else_when_all_matches() {
        let spec = ObservabilitySpec {
            dashboard: false,
            ..ObservabilitySpec::default()
        };
        let want = desired(&spec, &Observed::default());
        let mut observed = Observed::default();
        for a in &want.alarms {
            let sdk = aws_sdk_cloudwatch::types::MetricAlarm::builder()
                .alarm_name(&a.name)
                .set_alarm_description(a.description.clone())
                .actions_enabled(true)
                .set_namespace(a.namespace.clone())
                .set_metric_name(a.metric.clone())
                .set_dimensions(Some(alarms::sdk_dims(&a.dimensions)))
                .set_statistic(a.statistic.as_deref().map(Into::into))
                .set_extended_statistic(a.extended_statistic.clone())
                .set_period(a.period)
                .set_metrics(Some(a.queries()))
                .evaluation_periods(a.evaluation_periods)
                .set_datapoints_to_alarm(a.datapoints_to_alarm)
                .threshold(a.threshold)
                .comparison_operator(a.comparison.as_str().into())
                .treat_missing_data("notBreaching")
                .build();
            observed.alarms.insert(a.name.clone(), sdk);
        }
        assert!(diff(&want, &observed).is_empty());
        observed.alarms.insert(
            "demo-unhealthy-hosts-eu-west-1d".to_owned(),
            aws_sdk_cloudwatch::types::MetricAlarm::builder().build(),
        );
        assert_eq!(
            kinds(&diff(&want, &observed)),
            ["Delete alarm demo-unhealthy-hosts-eu-west-1d"]
        );
    }
}
