//! The observability slice of a stackproof stack: CloudWatch dashboard, alarms and their SNS
//! topic.
//!
//! [`Observability`] is a [`Module`](infra::Module) that makes, for the service and load balancer the
//! upstream modules built ([`ObservabilityInputs`]):
//! - the dashboard `{stack}`, built from typed widgets ([`dashboard::Dashboard`]): ECS CPU and
//!   memory, running tasks, load balancer requests and status codes, target response time
//!   p50/p99, healthy and unhealthy hosts per zone, and the availability check's metrics
//!   (namespace [`check_namespace`], metrics [`SUCCESS_PERCENT`], [`LATENCY_P99`],
//!   [`REQUEST_COUNT`]);
//! - the alarms `{stack}-5xx-rate` (metric math: load balancer and target 5xx per request, in
//!   percent), `{stack}-latency-p99` and one `{stack}-unhealthy-hosts-{zone}` per zone;
//! - with `alarm-email`, the SNS topic `{stack}-alarms` with an email subscription, which
//!   every alarm notifies on ALARM and OK.
//!
//! Alarms and the topic are tagged at creation. Plans compare every alarm setting, the
//! dashboard body (as JSON) and the subscription with what exists, so drift is repaired by the
//! next apply and an apply after an apply writes nothing.
//!
//! ```no_run
//! # async fn demo(cx: &infra::Context) -> Result<(), Box<dyn std::error::Error>> {
//! use infra::{Config, Module};
//! use stackproof_observability::{Observability, ObservabilityConfig, ObservabilityInputs};
//! let spec = ObservabilityConfig::default().validate(&cx.scope())?;
//! let inputs = ObservabilityInputs {
//!     zones: vec!["eu-west-1a".into(), "eu-west-1b".into()],
//!     load_balancer_arn_suffix: "app/demo/0123456789abcdef".into(),
//!     target_group_arn_suffix: "targetgroup/demo/0123456789abcdef".into(),
//!     cluster_name: "demo".into(),
//!     service_name: "demo-app".into(),
//! };
//! let module = Observability::new(cx, spec);
//! println!("{}", module.plan(cx, &inputs).await?);
//! let outputs = module.apply(cx, &inputs).await?;
//! println!("dashboard {}, alarms {:?}", outputs.dashboard_name, outputs.alarm_names);
//! # Ok(()) }
//! ```

mod alarms;
mod config;
pub mod dashboard;
mod desired;
mod error;
mod exec;
mod observe;

use infra::{Context, Pipeline};
use serde::{Deserialize, Serialize};

pub use config::{ObservabilityConfig, ObservabilitySpec, TABLE};
pub use error::Error;

use crate::desired::{Desired, Op, diff, known_alarm_names, teardown};
use crate::exec::Clients;
use crate::observe::Observed;

/// The module name, also the value of the `stackproof:module` tag.
pub(crate) const MODULE: &str = "observability";
/// The topic's logical name (its `stackproof:name` tag); the topic is `{stack}-alarms`.
pub(crate) const TOPIC: &str = "alarms";

/// The availability check's success rate, in percent (unit `Percent`).
pub const SUCCESS_PERCENT: &str = "SuccessPercent";
/// The availability check's 99th percentile latency, in milliseconds (unit `Milliseconds`).
pub const LATENCY_P99: &str = "LatencyP99";
/// The number of requests the availability check made (unit `Count`).
pub const REQUEST_COUNT: &str = "RequestCount";

/// The CloudWatch namespace of the availability check's metrics: `stackproof/{stack}`. The
/// metrics have no dimensions.
pub fn check_namespace(stack: &str) -> String {
    format!("stackproof/{stack}")
}

/// Whether `alarm` is one of `stack`'s per-zone alarms (`{stack}-unhealthy-hosts-{zone}`):
/// those go off by design when a zone fails, so a fault experiment does not stop on them.
pub fn is_zone_alarm(stack: &str, alarm: &str) -> bool {
    alarm.starts_with(&alarms::alarm_name(stack, alarms::UNHEALTHY_PREFIX))
}

/// What observability needs from the modules upstream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObservabilityInputs {
    /// The zones the service runs in (one unhealthy-hosts alarm and dashboard line each).
    pub zones: Vec<String>,
    /// The load balancer's ARN suffix (`app/name/id`), its CloudWatch dimension.
    pub load_balancer_arn_suffix: String,
    /// The target group's ARN suffix (`targetgroup/name/id`).
    pub target_group_arn_suffix: String,
    /// The ECS cluster.
    pub cluster_name: String,
    /// The ECS service.
    pub service_name: String,
}

/// What observability gives the user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObservabilityOutputs {
    /// The dashboard's name (`{stack}`); empty when `dashboard = false`.
    pub dashboard_name: String,
    /// Every alarm's name, in a stable order.
    pub alarm_names: Vec<String>,
    /// The alarm topic, when `alarm-email` is set.
    pub topic_arn: Option<String>,
    /// The availability check's namespace ([`check_namespace`]).
    pub check_namespace: String,
}

/// The observability module.
#[derive(Debug, Clone)]
pub struct Observability {
    spec: ObservabilitySpec,
    clients: Clients,
}

impl Observability {
    /// The module for `spec`, calling CloudWatch and SNS with clients built from `cx`.
    pub fn new(cx: &Context, spec: ObservabilitySpec) -> Self {
        Self {
            spec,
            clients: Clients {
                cw: infra::client!(cx, aws_sdk_cloudwatch),
                sns: infra::client!(cx, aws_sdk_sns),
            },
        }
    }

    /// The module with clients of the caller's (for tests with mocked responses).
    pub fn with_clients(
        spec: ObservabilitySpec,
        cloudwatch: aws_sdk_cloudwatch::Client,
        sns: aws_sdk_sns::Client,
    ) -> Self {
        Self {
            spec,
            clients: Clients {
                cw: cloudwatch,
                sns,
            },
        }
    }

    /// The checked configuration.
    pub fn spec(&self) -> &ObservabilitySpec {
        &self.spec
    }

    /// The dashboard this module makes for `inputs`, without calling AWS.
    pub fn dashboard(&self, cx: &Context, inputs: &ObservabilityInputs) -> dashboard::Dashboard {
        dashboard::build(cx.stack().as_str(), cx.region(), &self.spec, inputs)
    }

    /// The outputs of what is deployed for `inputs`, read from CloudWatch and SNS (what
    /// `apply` returned, changing nothing): the dashboard when it exists, the stack's alarms that
    /// exist, its topic. `None` when nothing of the module exists.
    pub async fn outputs(
        &self,
        cx: &Context,
        inputs: &ObservabilityInputs,
    ) -> Result<Option<ObservabilityOutputs>, Error> {
        let observed = self.read(cx, Some(inputs)).await?;
        let desired = self.want(cx, inputs, &observed);
        let stack = cx.stack().as_str();
        if observed.is_empty(stack) {
            return Ok(None);
        }
        Ok(Some(ObservabilityOutputs {
            dashboard_name: observed
                .dashboard
                .as_ref()
                .map(|_| desired.dashboard_name.clone())
                .unwrap_or_default(),
            alarm_names: desired
                .alarms
                .iter()
                .filter(|a| observed.alarms.contains_key(&a.name))
                .map(|a| a.name.clone())
                .collect(),
            topic_arn: observed
                .topic
                .as_ref()
                .filter(|t| t.is_ours(stack))
                .map(|t| t.arn.clone()),
            check_namespace: check_namespace(stack),
        }))
    }

    async fn read(
        &self,
        cx: &Context,
        inputs: Option<&ObservabilityInputs>,
    ) -> Result<Observed, Error> {
        let stack = cx.stack().as_str();
        Observed::read(
            &self.clients.cw,
            &self.clients.sns,
            stack,
            stack,
            &known_alarm_names(stack, inputs),
        )
        .await
    }

    fn want(&self, cx: &Context, inputs: &ObservabilityInputs, observed: &Observed) -> Desired {
        Desired::new(
            cx.stack().as_str(),
            cx.region(),
            &self.spec,
            inputs,
            observed,
        )
    }
}

impl Pipeline for Observability {
    const NAME: &'static str = MODULE;
    type Inputs = ObservabilityInputs;
    type Outputs = ObservabilityOutputs;
    type Error = Error;
    type Observed = Observed;
    type Desired = Desired;
    type Op = Op;
    /// The topic's ARN once one exists.
    type State = Option<String>;

    async fn observe(
        &self,
        cx: &Context,
        inputs: Option<&ObservabilityInputs>,
    ) -> Result<Observed, Error> {
        self.read(cx, inputs).await
    }

    async fn desired(
        &self,
        cx: &Context,
        inputs: &ObservabilityInputs,
        observed: &Observed,
    ) -> Result<Desired, Error> {
        Ok(self.want(cx, inputs, observed))
    }

    fn diff(
        &self,
        _cx: &Context,
        desired: &Desired,
        observed: &Observed,
    ) -> Result<Vec<Op>, Error> {
        Ok(diff(desired, observed))
    }

    fn teardown(&self, cx: &Context, observed: &Observed) -> Result<Vec<Op>, Error> {
        Ok(teardown(cx.stack().as_str(), observed))
    }

    fn change(&self, _cx: &Context, op: &Op) -> Vec<infra::Change> {
        op.changes()
    }

    /// A topic an apply keeps only while an address is subscribed.
    fn state(
        &self,
        _cx: &Context,
        desired: Option<&Desired>,
        observed: &Observed,
    ) -> Option<String> {
        let desired = desired?;
        observed
            .topic
            .as_ref()
            .filter(|_| desired.email.is_some())
            .map(|t| t.arn.clone())
    }

    async fn step(
        &self,
        cx: &Context,
        op: &Op,
        topic: &mut Option<String>,
    ) -> Result<Option<String>, Error> {
        exec::step(&self.clients, cx, op, topic).await
    }

    async fn outputs(
        &self,
        cx: &Context,
        desired: &Desired,
        topic: Option<String>,
    ) -> Result<ObservabilityOutputs, Error> {
        Ok(ObservabilityOutputs {
            dashboard_name: if self.spec.dashboard {
                desired.dashboard_name.clone()
            } else {
                String::new()
            },
            alarm_names: desired.alarms.iter().map(|a| a.name.clone()).collect(),
            topic_arn: topic,
            check_namespace: check_namespace(cx.stack().as_str()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_metrics_have_the_agreed_names() {
        assert_eq!(check_namespace("demo"), "stackproof/demo");
        assert_eq!(
            [SUCCESS_PERCENT, LATENCY_P99, REQUEST_COUNT],
            ["SuccessPercent", "LatencyP99", "RequestCount"]
        );
    }
}
