//! The compute slice of a stackproof stack: IAM roles, the ECS cluster, the task log group, a
//! Fargate task definition and service behind the load balancer, and its autoscaling.
//!
//! [`Compute`] is a [`Module`](infra::Module). Every resource is named after the stack (`{stack}` for the
//! cluster, service and task definition family, `/ecs/{stack}` for the log group,
//! `{stack}-task-execution` and `{stack}-task` for the roles), carries the stack's tags, and is
//! only changed or deleted when those tags say it is the stack's.
//!
//! - Least privilege: the execution role has one inline policy, not AWS's managed
//!   `AmazonECSTaskExecutionRolePolicy` (every repository, every log group): an ECR token,
//!   pulling from the image's own repository when it is a private ECR image, and writing
//!   streams of the task log group. The task role has nothing unless `task-role-statements`
//!   gives it an inline policy. Only `ecs-tasks.amazonaws.com` may assume either, and only for
//!   the stack's account (`aws:SourceAccount`, from `ComputeInputs::account_id`). The
//!   foundation (roles, log group, cluster) waits for `FoundationInputs` (the account and the
//!   image), not for the network.
//! - The task definition gets a new revision only when the newest one differs (compared field
//!   by field, not as text). Its container `app` has the health check
//!   `["CMD", "/sample-app", "health"]`, which the sample app image provides: a custom image must
//!   provide `/sample-app` or set `container-health-check = false`.
//! - The service's desired count is set at creation only; afterwards Application Auto Scaling
//!   owns it and `apply` never changes it.
//! - Drift in the service's deployment settings (circuit breaker, 100/200 %, grace period, AZ
//!   rebalancing, ECS managed tags) is compared only when DescribeServices reports a deployment
//!   configuration, as AWS always does. moto drops these settings on CreateService (it keeps
//!   them after an UpdateService), so against moto they are proved by the mocked request tests.
//! - Waits and retries use [`infra::Backoff`]: IAM propagation on CreateService ("unable to
//!   assume role"), a DRAINING service before re-creating it, `ConcurrentUpdateException` from
//!   Application Auto Scaling, and deletes blocked by dependents.
//!
//! ```no_run
//! # async fn demo(cx: &infra::Context, inputs: stackproof_compute::ComputeInputs) -> Result<(), Box<dyn std::error::Error>> {
//! use infra::{Config, Module};
//! let spec = stackproof_compute::ComputeConfig::default().validate(&cx.scope())?;
//! let compute = stackproof_compute::Compute::new(cx, spec);
//! println!("{}", compute.plan(cx, &inputs).await?);
//! let outputs = compute.apply(cx, &inputs).await?;
//! println!("service {}", outputs.service_arn);
//! # Ok(()) }
//! ```

mod config;
mod desired;
mod error;
mod exec;
pub mod loadgen;
mod observe;
mod secret;

use infra::pipeline::{self, Pipeline};
use infra::{Change, Context, Plan};
use serde::{Deserialize, Serialize};

pub use config::{
    ComputeConfig, ComputeSpec, CpuArchitecture, LOG_RETENTION_DAYS, MAX_TASKS, fargate_memory,
};
pub use error::Error;
pub use secret::Secret;

use crate::desired::{
    CONTAINER, Desired, Names, Observed, Op, diff, diff_foundation, diff_service, kept_log_group,
    policies_since, teardown,
};
use crate::exec::{Ids, Run, need};

/// What compute needs from the modules upstream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ComputeInputs {
    /// The subnets the tasks run in (one private subnet per zone).
    pub private_subnet_ids: Vec<String>,
    /// The tasks' security group.
    pub task_security_group_id: String,
    /// The target group the service registers its tasks with.
    pub target_group_arn: String,
    /// The load balancer's ARN suffix (`app/name/id`), for the requests-per-target policy.
    pub load_balancer_arn_suffix: String,
    /// The target group's ARN suffix (`targetgroup/name/id`).
    pub target_group_arn_suffix: String,
    /// The port the container listens on (its `PORT`).
    pub container_port: u16,
    /// The image when the configuration names none: `{repository_uri}:latest`.
    pub default_image: String,
    /// The account the stack runs in: the roles trust ECS only on its behalf
    /// (`aws:SourceAccount`), and the execution role's log permission names it.
    pub account_id: String,
    /// What other modules hand the container (a database's endpoint and password), added to
    /// the configuration's own `environment` and `secrets`.
    #[serde(default)]
    pub linked: Linked,
}

/// Variables and secrets another module hands the container, e.g. the data module's
/// endpoint and the RDS-managed secret of its password. The configuration's own
/// `[service.environment]` / `[service.secrets]` win on a name both set, so a user can point
/// a variable elsewhere (a proxy, say). A linked secret is granted to the execution role
/// exactly as a configured one is.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Linked {
    /// Plain variables.
    pub environment: std::collections::BTreeMap<String, String>,
    /// Secrets, resolved by ECS when a task starts.
    pub secrets: std::collections::BTreeMap<String, Secret>,
    /// AWS managed policies (by path and name, e.g.
    /// `service-role/AWSFaultInjectionSimulatorRDSAccess`) the fault role also needs: what
    /// the zone fault's extra actions act on (a database's forced failover).
    #[serde(default)]
    pub fault_policies: std::collections::BTreeSet<String>,
    /// IAM actions the fault role also needs where AWS has no managed policy for them (the
    /// cache's `aws:elasticache:replicationgroup-interrupt-az-power`), granted on every
    /// resource in one inline policy `{stack}-fis-actions`.
    #[serde(default)]
    pub fault_actions: std::collections::BTreeSet<String>,
}

/// The part of [`ComputeInputs`] the foundation (the roles' policies) needs, known before
/// the network and the load balancer are: see [`Compute::apply_staged`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundationInputs {
    /// [`ComputeInputs::account_id`].
    pub account_id: String,
    /// [`ComputeInputs::default_image`].
    pub default_image: String,
    /// [`ComputeInputs::linked`]: the roles' policies grant what is linked, so the foundation
    /// needs it too (without it, every apply would take a linked secret's grant away and put it
    /// back a moment later, and a task starting in between could not read its secret).
    pub linked: Linked,
}

/// What compute gives the modules downstream and the user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ComputeOutputs {
    /// The ECS cluster's name.
    pub cluster_name: String,
    /// The ECS cluster's ARN.
    pub cluster_arn: String,
    /// The service's name.
    pub service_name: String,
    /// The service's ARN.
    pub service_arn: String,
    /// The task definition revision the service runs.
    pub task_definition_arn: String,
    /// The container's name (`app`).
    pub container_name: String,
    /// The log group of the tasks.
    pub log_group_name: String,
    /// The task execution role.
    pub execution_role_arn: String,
    /// The task role.
    pub task_role_arn: String,
    /// The role AWS FIS assumes for the stack's fault experiments (trusts
    /// `fis.amazonaws.com` on behalf of the stack's account; AWS's managed
    /// `AWSFaultInjectionSimulatorNetworkAccess` policy).
    pub fault_role_arn: String,
}

/// The four service clients compute calls.
#[derive(Debug, Clone)]
pub struct Clients {
    /// IAM.
    pub iam: aws_sdk_iam::Client,
    /// ECS.
    pub ecs: aws_sdk_ecs::Client,
    /// CloudWatch Logs.
    pub logs: aws_sdk_cloudwatchlogs::Client,
    /// Application Auto Scaling.
    pub scaling: aws_sdk_applicationautoscaling::Client,
}

impl Clients {
    /// Clients built from `cx` (its SDK configuration and interceptors).
    pub fn new(cx: &Context) -> Self {
        Self {
            iam: infra::client!(cx, aws_sdk_iam),
            ecs: infra::client!(cx, aws_sdk_ecs),
            logs: infra::client!(cx, aws_sdk_cloudwatchlogs),
            scaling: infra::client!(cx, aws_sdk_applicationautoscaling),
        }
    }
}

/// The compute module.
#[derive(Debug, Clone)]
pub struct Compute {
    spec: ComputeSpec,
    clients: Clients,
}

impl Compute {
    /// The module for `spec`, with clients built from `cx`.
    pub fn new(cx: &Context, spec: ComputeSpec) -> Self {
        Self {
            spec,
            clients: Clients::new(cx),
        }
    }

    /// The module with clients of the caller's (for tests with mocked responses).
    pub fn with_clients(spec: ComputeSpec, clients: Clients) -> Self {
        Self { spec, clients }
    }

    /// The checked configuration.
    pub fn spec(&self) -> &ComputeSpec {
        &self.spec
    }

    /// The outputs of the deployed compute slice, or `None` when nothing is deployed.
    /// Read-only: for printing outputs without applying.
    pub async fn outputs(&self, cx: &Context) -> Result<Option<ComputeOutputs>, Error> {
        let names = Names::new(cx.stack().as_str());
        let observed = Observed::read(&self.clients, &names, false).await?;
        let ids = Ids::from_observed(&observed);
        if ids.cluster.is_none() && ids.service.is_none() {
            return Ok(None);
        }
        let desired = Desired::new(cx, &self.spec, &ComputeInputs::placeholder());
        outputs(&desired, &ids).map(Some)
    }

    /// [`Module::apply`](infra::Module::apply) for a caller still building the inputs: the foundation (the IAM
    /// roles, the log group, the cluster) converges as soon as `foundation` resolves (the
    /// account and the image, which the roles' policies name), while `inputs` resolves; the
    /// task definition, the service and its scaling follow. The result is that of
    /// `apply(cx, &inputs.await)`, sooner: on AWS the roles and the cluster are made while the
    /// network waits for its NAT gateways and the load balancer is created.
    pub async fn apply_staged<E, F>(
        &self,
        cx: &Context,
        foundation: E,
        inputs: F,
    ) -> Result<ComputeOutputs, Error>
    where
        E: Future<Output = FoundationInputs> + Send,
        F: Future<Output = ComputeInputs> + Send,
    {
        let names = Names::new(cx.stack().as_str());
        let (observed, known) =
            tokio::join!(Observed::read(&self.clients, &names, false), foundation);
        let observed = observed?;
        // Placeholders shape only the parts of `Desired` the foundation does not read.
        let early = Desired::new(
            cx,
            &self.spec,
            &ComputeInputs {
                account_id: known.account_id,
                default_image: known.default_image,
                linked: known.linked,
                ..ComputeInputs::placeholder()
            },
        );
        let foundation = diff_foundation(&early, &observed)?;
        let mut run = self.state(cx, Some(&early), &observed);
        let (made, inputs) = tokio::join!(pipeline::run(self, cx, &foundation, &mut run), inputs);
        made?;
        run.desired = Desired::new(cx, &self.spec, &inputs);
        // Whatever the whole inputs grant beyond the foundation's (nothing when the caller
        // handed the foundation the same links) reaches the roles before the task definition.
        let mut rest = policies_since(&early, &run.desired);
        rest.extend(diff_service(&run.desired, &observed)?);
        pipeline::run(self, cx, &rest, &mut run).await?;
        outputs(&run.desired, &run.ids)
    }
}

fn outputs(desired: &Desired, ids: &Ids) -> Result<ComputeOutputs, Error> {
    let n = &desired.names;
    Ok(ComputeOutputs {
        cluster_name: n.cluster.clone(),
        cluster_arn: need(&ids.cluster, "ECS cluster", &n.cluster)?.to_owned(),
        service_name: n.service.clone(),
        service_arn: need(&ids.service, "ECS service", &n.service)?.to_owned(),
        task_definition_arn: need(&ids.task_definition, "task definition", &n.family)?.to_owned(),
        container_name: CONTAINER.to_owned(),
        log_group_name: n.log_group.clone(),
        execution_role_arn: need(&ids.execution_role, "IAM role", &n.execution_role)?.to_owned(),
        task_role_arn: need(&ids.task_role, "IAM role", &n.task_role)?.to_owned(),
        fault_role_arn: need(&ids.fault_role, "IAM role", &n.fault_role)?.to_owned(),
    })
}

impl Pipeline for Compute {
    const NAME: &'static str = desired::MODULE;
    type Inputs = ComputeInputs;
    type Outputs = ComputeOutputs;
    type Error = Error;
    type Observed = Observed;
    type Desired = Desired;
    type Op = Op;
    type State = Run;

    /// For a destroy, also what the log group holds (kept unless `force-destroy`).
    async fn observe(
        &self,
        cx: &Context,
        inputs: Option<&ComputeInputs>,
    ) -> Result<Observed, Error> {
        let names = Names::new(cx.stack().as_str());
        Observed::read(&self.clients, &names, inputs.is_none()).await
    }

    async fn desired(
        &self,
        cx: &Context,
        inputs: &ComputeInputs,
        _observed: &Observed,
    ) -> Result<Desired, Error> {
        Ok(Desired::new(cx, &self.spec, inputs))
    }

    fn diff(
        &self,
        _cx: &Context,
        desired: &Desired,
        observed: &Observed,
    ) -> Result<Vec<Op>, Error> {
        diff(desired, observed)
    }

    fn teardown(&self, cx: &Context, observed: &Observed) -> Result<Vec<Op>, Error> {
        let names = Names::new(cx.stack().as_str());
        Ok(teardown(&names, observed, self.spec.force_destroy))
    }

    fn change(&self, cx: &Context, op: &Op) -> Vec<Change> {
        self.changes(cx, std::slice::from_ref(op)).concat()
    }

    /// A policy put on a role the same run creates shows as part of creating it.
    fn changes(&self, cx: &Context, ops: &[Op]) -> Vec<Vec<Change>> {
        let names = Names::new(cx.stack().as_str());
        desired::changes(&names, ops)
            .into_iter()
            .map(|c| c.into_iter().collect())
            .collect()
    }

    /// An apply reads the service's task definition only, a destroy every revision of its
    /// family: the one the apply read stands for them.
    fn existing(&self, cx: &Context, observed: &Observed) -> Result<Plan, Error> {
        let names = Names::new(cx.stack().as_str());
        let mut all = observed.clone();
        if all.task_definition_arns.is_empty()
            && let Some(current) = &observed.task_definition
        {
            all.task_definition_arns.push(current.arn.clone());
        }
        Ok(pipeline::plan(
            self,
            cx,
            &teardown(&names, &all, self.spec.force_destroy),
        ))
    }

    /// The log group that holds logs, unless `force-destroy`.
    fn kept(&self, cx: &Context, observed: &Observed) -> Vec<Change> {
        let names = Names::new(cx.stack().as_str());
        kept_log_group(&names, observed, self.spec.force_destroy)
            .into_iter()
            .collect()
    }

    fn state(&self, cx: &Context, desired: Option<&Desired>, observed: &Observed) -> Run {
        // A destroy's steps use only names and what was observed.
        let desired = desired
            .cloned()
            .unwrap_or_else(|| Desired::new(cx, &self.spec, &ComputeInputs::placeholder()));
        Run {
            desired,
            ids: Ids::from_observed(observed),
        }
    }

    async fn step(&self, cx: &Context, op: &Op, run: &mut Run) -> Result<Option<String>, Error> {
        exec::step(&self.clients, cx, op, run).await
    }

    async fn outputs(
        &self,
        _cx: &Context,
        desired: &Desired,
        run: Run,
    ) -> Result<ComputeOutputs, Error> {
        outputs(desired, &run.ids)
    }
}

impl ComputeInputs {
    fn placeholder() -> Self {
        Self {
            private_subnet_ids: Vec::new(),
            task_security_group_id: String::new(),
            target_group_arn: String::new(),
            load_balancer_arn_suffix: String::new(),
            target_group_arn_suffix: String::new(),
            container_port: 0,
            default_image: String::new(),
            account_id: String::new(),
            linked: Linked::default(),
        }
    }
}
