//! The load balancer slice: an internet-facing application load balancer in the public subnets,
//! one target group of `ip` targets, and its listeners.
//!
//! [`LoadBalancer`] is a [`Module`](infra::Module) of its own (`load-balancer`), fed by the network's outputs
//! and, for access logs, the storage module's log bucket. Its resources are named after the
//! stack (`{stack}-alb`, `{stack}-tg`), created with the stack's tags, and found again by name
//! and checked by tag: one that has the name but another stack's tags is never touched.

mod config;
mod diff;
mod observe;
mod resource;

use aws_sdk_elasticloadbalancingv2::Client;
use infra::pipeline::{self, Pipeline};
use infra::{Context, Plan, Survey};
use serde::{Deserialize, Serialize};

pub use config::{HealthCheckConfig, HealthCheckSpec, LoadBalancerConfig, LoadBalancerSpec};

use crate::Error;
use crate::error::unless_missing;
use diff::{Desired, Op, check_inputs, diff, teardown};
use observe::Observed;
use resource::Ids;

/// Where the load balancer writes its access logs: the storage module's bucket, whose policy
/// must already let the load balancer write there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessLogs {
    /// The bucket.
    pub bucket: String,
    /// The key prefix (no leading or trailing `/`).
    pub prefix: String,
}

/// What the load balancer needs from the network (and storage).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoadBalancerInputs {
    /// The VPC (the target group lives there).
    pub vpc_id: String,
    /// The zones of the subnets below; two or more.
    pub zones: Vec<String>,
    /// One public subnet per zone.
    pub public_subnet_ids: Vec<String>,
    /// The load balancer's security group.
    pub security_group_id: String,
    /// The port the targets listen on.
    pub target_port: u16,
    /// Access logs, when the stack has a log bucket.
    pub access_logs: Option<AccessLogs>,
}

/// What the load balancer gives the modules downstream and the user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoadBalancerOutputs {
    /// The load balancer's ARN.
    pub arn: String,
    /// The part of the ARN after `loadbalancer/` (`app/{name}/{id}`), as CloudWatch dimensions
    /// and `ALBRequestCountPerTarget` want it.
    pub arn_suffix: String,
    /// Its name.
    pub name: String,
    /// Its DNS name.
    pub dns_name: String,
    /// The Route 53 hosted zone of the DNS name (for alias records).
    pub hosted_zone_id: String,
    /// The target group's ARN.
    pub target_group_arn: String,
    /// The part of the target group ARN from `targetgroup/` on.
    pub target_group_arn_suffix: String,
    /// The listeners, in port order (80, then 443 when there is a certificate).
    pub listener_arns: Vec<String>,
    /// The load balancer's security groups.
    pub security_group_ids: Vec<String>,
}

/// The load balancer's name for `stack` (at most 28 characters: stack names have at most 24).
pub fn lb_name(stack: &str) -> String {
    format!("{stack}-alb")
}

/// The target group's name for `stack`.
pub fn tg_name(stack: &str) -> String {
    format!("{stack}-tg")
}

/// The load balancer module.
#[derive(Debug, Clone)]
pub struct LoadBalancer {
    spec: LoadBalancerSpec,
    elb: Client,
}

impl LoadBalancer {
    /// The module for `spec`, calling Elastic Load Balancing with a client built from `cx`.
    pub fn new(cx: &Context, spec: LoadBalancerSpec) -> Self {
        Self {
            spec,
            elb: infra::client!(cx, aws_sdk_elasticloadbalancingv2),
        }
    }

    /// The module with a client of the caller's (for tests with mocked responses).
    pub fn with_client(spec: LoadBalancerSpec, elb: Client) -> Self {
        Self { spec, elb }
    }

    /// The checked configuration.
    pub fn spec(&self) -> &LoadBalancerSpec {
        &self.spec
    }

    /// True when `plan` (from [`Module::plan_destroy`](infra::Module::plan_destroy) or [`Module::destroy`](infra::Module::destroy)) turns deletion
    /// protection off: the guard for callers that must not override it without being asked.
    pub fn turns_off_protection(plan: &Plan) -> bool {
        plan.changes.iter().any(|c| {
            c.module == diff::MODULE
                && c.kind == diff::Kind::LoadBalancer.as_str()
                && c.action == infra::Action::Update
                && c.sets(diff::PROTECTION, "false")
        })
    }

    async fn read(&self, cx: &Context) -> Result<Observed, Error> {
        let stack = cx.stack().as_str();
        Observed::read(&self.elb, stack, &lb_name(stack), &tg_name(stack)).await
    }

    /// The outputs of the deployed load balancer, or `None` when it is not (fully) deployed.
    /// Read-only.
    pub async fn outputs(&self, cx: &Context) -> Result<Option<LoadBalancerOutputs>, Error> {
        let observed = self.read(cx).await?;
        // Partly created (a run killed after the load balancer, before its target group): no
        // outputs yet.
        unless_missing(outputs(&Ids::from_observed(&observed)))
    }

    /// What `plan` shows, what exists and what [`LoadBalancer::outputs`] returns, from one
    /// read of the account (the stack needs them at the same time). Read-only.
    pub async fn survey(
        &self,
        cx: &Context,
        inputs: &LoadBalancerInputs,
    ) -> Result<Survey<LoadBalancerOutputs>, Error> {
        let seen = pipeline::observe(self, cx, inputs).await?;
        Ok(Survey {
            plan: seen.plan(self, cx),
            existing: seen.existing(self, cx)?,
            outputs: unless_missing(outputs(&seen.state(self, cx)))?,
        })
    }
}

/// The part of `arn` after `marker` (`include` keeps the marker itself).
fn suffix(arn: &str, marker: &str, include: bool) -> Option<String> {
    let at = arn.find(marker)?;
    Some(if include {
        arn[at..].to_owned()
    } else {
        arn[at + marker.len()..].to_owned()
    })
}

fn outputs(ids: &Ids) -> Result<LoadBalancerOutputs, Error> {
    let missing = |kind: &'static str, name: &str| Error::Missing {
        kind,
        name: name.to_owned(),
    };
    let lb = ids
        .lb
        .as_ref()
        .ok_or_else(|| missing("load-balancer", diff::LB))?;
    let tg = ids
        .tg
        .as_ref()
        .ok_or_else(|| missing("target-group", diff::TG))?;
    Ok(LoadBalancerOutputs {
        arn: lb.arn.clone(),
        arn_suffix: suffix(&lb.arn, "loadbalancer/", false)
            .ok_or_else(|| missing("load-balancer ARN suffix", &lb.arn))?,
        name: lb.name.clone(),
        dns_name: lb.dns_name.clone(),
        hosted_zone_id: lb.hosted_zone_id.clone(),
        target_group_arn: tg.clone(),
        target_group_arn_suffix: suffix(tg, "targetgroup/", true)
            .ok_or_else(|| missing("target-group ARN suffix", tg))?,
        listener_arns: ids.listeners.values().cloned().collect(),
        security_group_ids: lb.security_groups.clone(),
    })
}

/// Deletes the listeners, the target group and the load balancer, turning deletion protection
/// off first when it is on: the destroy's plan shows that as an `~ update`, so callers that
/// must not override protection check [`Module::plan_destroy`](infra::Module::plan_destroy)
/// first.
impl Pipeline for LoadBalancer {
    const NAME: &'static str = diff::MODULE;
    type Inputs = LoadBalancerInputs;
    type Outputs = LoadBalancerOutputs;
    type Error = Error;
    type Observed = Observed;
    type Desired = Desired;
    type Op = Op;
    type State = Ids;

    /// Checks the inputs before the first call.
    async fn observe(
        &self,
        cx: &Context,
        inputs: Option<&LoadBalancerInputs>,
    ) -> Result<Observed, Error> {
        if let Some(inputs) = inputs {
            check_inputs(inputs)?;
        }
        self.read(cx).await
    }

    async fn desired(
        &self,
        cx: &Context,
        inputs: &LoadBalancerInputs,
        _observed: &Observed,
    ) -> Result<Desired, Error> {
        Ok(Desired::new(&self.spec, cx.stack().as_str(), inputs))
    }

    fn diff(&self, cx: &Context, desired: &Desired, observed: &Observed) -> Result<Vec<Op>, Error> {
        diff(cx, desired, observed)
    }

    fn teardown(&self, _cx: &Context, observed: &Observed) -> Result<Vec<Op>, Error> {
        Ok(teardown(observed))
    }

    fn change(&self, _cx: &Context, op: &Op) -> Vec<infra::Change> {
        vec![op.change()]
    }

    fn state(&self, _cx: &Context, _desired: Option<&Desired>, observed: &Observed) -> Ids {
        Ids::from_observed(observed)
    }

    async fn step(&self, cx: &Context, op: &Op, ids: &mut Ids) -> Result<Option<String>, Error> {
        resource::step(&self.elb, cx, op, ids).await
    }

    async fn outputs(
        &self,
        _cx: &Context,
        _desired: &Desired,
        ids: Ids,
    ) -> Result<LoadBalancerOutputs, Error> {
        outputs(&ids)
    }
}

#[cfg(test)]
mod tests;
