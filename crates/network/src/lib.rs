//! The network slice of a stackproof stack.
//!
//! [`Network`] is a [`Module`](infra::Module): a VPC with DNS support and hostnames, a public and a private
//! subnet in each of N availability zones, an internet gateway and the public route table, NAT
//! gateways (`per-az`, `single` or `none`) with one private route table per zone, and two
//! security groups: `load-balancer` (80/443 from anywhere by default) and `tasks` (the task port
//! from the load-balancer group only). Everything carries the stack's tags and is found by them,
//! so `apply` after a crash resumes and `destroy` needs nothing but the stack name.
//!
//! [`LoadBalancer`] is a second [`Module`](infra::Module) (`load-balancer`, table `[load-balancer]`) on top of
//! the network's outputs: an internet-facing application load balancer `{stack}-alb` in the
//! public subnets with its attributes (access logs, drop invalid headers, idle timeout,
//! deletion protection, zonal shift), a target group `{stack}-tg` of `ip` targets with its
//! health check and deregistration delay, an HTTP listener that forwards (or redirects to HTTPS
//! when a certificate is configured) and the HTTPS listener with a TLS 1.3 policy.
//!
//! [`Network::isolate_zone`] and [`Network::restore_zone`] cut one zone off and heal it by
//! swapping its subnets to a deny-all network ACL and back, as AWS FIS
//! `aws:network:disrupt-connectivity` does.
//!
//! ```no_run
//! # async fn demo(cx: &infra::Context) -> Result<(), Box<dyn std::error::Error>> {
//! use infra::{Config, Module};
//! let spec = stackproof_network::NetworkConfig::default().validate(&cx.scope())?;
//! let net = stackproof_network::Network::new(cx, spec);
//! println!("{}", net.plan(cx, &()).await?);
//! let outputs = net.apply(cx, &()).await?;
//! println!("VPC {}", outputs.vpc_id);
//! # Ok(()) }
//! ```

mod config;
mod desired;
mod error;
mod isolate;
mod lb;
mod observe;
mod resource;

use aws_sdk_ec2::Client;
use aws_sdk_ec2::types::{AvailabilityZoneState, Filter};
use infra::pipeline::{self, Pipeline};
use infra::{Context, Survey};
use serde::{Deserialize, Serialize};

pub use config::{
    ENDPOINT_SERVICES, IngressConfig, NO_NAT_ENDPOINTS, NatMode, NetworkConfig, NetworkSpec, Zones,
    known_zone_count,
};
pub use error::Error;
pub use isolate::{MANAGED_BY_FIS_TAG, RESTORE_ACL_TAG, ZoneIsolation};
pub use lb::{
    AccessLogs, HealthCheckConfig, HealthCheckSpec, LoadBalancer, LoadBalancerConfig,
    LoadBalancerInputs, LoadBalancerOutputs, LoadBalancerSpec, lb_name, tg_name,
};

use crate::desired::{Desired, IGW, LB_GROUP, Op, TASK_GROUP, diff, teardown};
use crate::error::unless_missing;
use crate::observe::Observed;
use crate::resource::Ids;
use infra::aws;

/// What the network gives the modules downstream and the user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkOutputs {
    /// The VPC.
    pub vpc_id: String,
    /// Its CIDR block.
    pub vpc_cidr: String,
    /// The zones, in order; subnet lists below follow it.
    pub zones: Vec<String>,
    /// One public subnet per zone (load balancer, NAT gateways).
    pub public_subnet_ids: Vec<String>,
    /// One private subnet per zone (tasks).
    pub private_subnet_ids: Vec<String>,
    /// The internet gateway.
    pub internet_gateway_id: String,
    /// The NAT gateways (none with `nat = "none"`).
    pub nat_gateway_ids: Vec<String>,
    /// The load balancer's security group.
    pub load_balancer_security_group_id: String,
    /// The tasks' security group.
    pub task_security_group_id: String,
}

/// The network module.
#[derive(Debug, Clone)]
pub struct Network {
    spec: NetworkSpec,
    ec2: Client,
}

impl Network {
    /// The module for `spec`, calling EC2 with a client built from `cx`.
    pub fn new(cx: &Context, spec: NetworkSpec) -> Self {
        Self {
            spec,
            ec2: infra::client!(cx, aws_sdk_ec2),
        }
    }

    /// The module with a client of the caller's (for tests with mocked responses).
    pub fn with_client(spec: NetworkSpec, ec2: Client) -> Self {
        Self { spec, ec2 }
    }

    /// The checked configuration.
    pub fn spec(&self) -> &NetworkSpec {
        &self.spec
    }

    /// The zones to use: the named ones, checked to exist, or the region's first N available.
    async fn zones(&self, cx: &Context) -> Result<Vec<String>, Error> {
        let out = self
            .ec2
            .describe_availability_zones()
            .filters(
                Filter::builder()
                    .name("zone-type")
                    .values("availability-zone")
                    .build(),
            )
            .send()
            .await
            .map_err(aws(
                "DescribeAvailabilityZones",
                format!("region {}", cx.region()),
            ))?;
        let mut available: Vec<String> = out
            .availability_zones()
            .iter()
            .filter(|z| z.state() == Some(&AvailabilityZoneState::Available))
            .filter_map(|z| z.zone_name().map(str::to_owned))
            .collect();
        available.sort();
        match &self.spec.zones {
            Zones::First(n) if available.len() >= *n => Ok(available[..*n].to_vec()),
            Zones::First(n) => Err(Error::Zones {
                field: "network.az-count",
                region: cx.region().to_owned(),
                available,
                wanted: format!("{n} zones"),
            }),
            Zones::Named(names) if names.iter().all(|n| available.contains(n)) => Ok(names.clone()),
            Zones::Named(names) => Err(Error::Zones {
                field: "network.availability-zones",
                region: cx.region().to_owned(),
                available,
                wanted: format!("{names:?}"),
            }),
        }
    }

    /// [`Module::apply`](infra::Module::apply) that hands `ready` the outputs as soon as everything a load balancer
    /// or a service attaches to exists (the VPC, subnets, internet gateway, NAT gateways still
    /// pending, security groups, route tables), then waits for the NAT gateways and makes the
    /// default routes: on AWS a NAT gateway takes minutes to become available, and the load
    /// balancer need not wait for it. `ready` is called exactly once when this returns `Ok`,
    /// with outputs equal to the returned ones (NAT gateway ids included).
    pub async fn apply_staged(
        &self,
        cx: &Context,
        ready: impl FnOnce(NetworkOutputs) + Send,
    ) -> Result<NetworkOutputs, Error> {
        let seen = pipeline::observe(self, cx, &()).await?;
        let split = seen
            .ops
            .iter()
            .position(|op| matches!(op, Op::WaitNats))
            .unwrap_or(seen.ops.len());
        let (now, after) = seen.ops.split_at(split);
        let mut ids = seen.state(self, cx);
        pipeline::run(self, cx, now, &mut ids).await?;
        ready(outputs(&seen.desired, &ids)?);
        pipeline::run(self, cx, after, &mut ids).await?;
        outputs(&seen.desired, &ids)
    }

    /// The outputs of the deployed network, or `None` when it is not (fully) deployed. Read-only.
    pub async fn outputs(&self, cx: &Context) -> Result<Option<NetworkOutputs>, Error> {
        let (observed, zones) = tokio::try_join!(
            Observed::read(&self.ec2, cx.stack().as_str()),
            self.zones(cx)
        )?;
        let desired = Desired::new(&self.spec, cx.region(), zones);
        // A network partly created (a run killed after the VPC) has no outputs yet.
        unless_missing(outputs(&desired, &Ids::from_observed(&observed)))
    }

    /// What `plan` shows, what exists and what [`Network::outputs`] returns, from one read
    /// of the account (the stack previews every module and needs upstream outputs at the same
    /// time). Read-only.
    pub async fn survey(&self, cx: &Context) -> Result<Survey<NetworkOutputs>, Error> {
        let seen = pipeline::observe(self, cx, &()).await?;
        // Partly created (a run killed after the VPC): no outputs yet, so the stack plans the
        // modules downstream with placeholders.
        let outputs = unless_missing(outputs(&seen.desired, &seen.state(self, cx)))?;
        Ok(Survey {
            plan: seen.plan(self, cx),
            existing: seen.existing(self, cx)?,
            outputs,
        })
    }
}

fn outputs(desired: &Desired, ids: &Ids) -> Result<NetworkOutputs, Error> {
    let missing = |kind: &'static str, name: &str| Error::Missing {
        kind,
        name: name.to_owned(),
    };
    let subnet = |public: bool| -> Result<Vec<String>, Error> {
        desired
            .subnets
            .iter()
            .filter(|s| s.public == public)
            .map(|s| {
                ids.subnets
                    .get(&s.name)
                    .cloned()
                    .ok_or_else(|| missing("subnet", &s.name))
            })
            .collect()
    };
    let group = |name: &str| {
        ids.groups
            .get(name)
            .cloned()
            .ok_or_else(|| missing("security-group", name))
    };
    Ok(NetworkOutputs {
        vpc_id: ids
            .vpc
            .clone()
            .ok_or_else(|| missing("vpc", desired::VPC))?,
        vpc_cidr: desired.vpc_cidr.clone(),
        zones: desired.zones.clone(),
        public_subnet_ids: subnet(true)?,
        private_subnet_ids: subnet(false)?,
        internet_gateway_id: ids
            .igw
            .clone()
            .ok_or_else(|| missing("internet-gateway", IGW))?,
        nat_gateway_ids: desired
            .nats
            .iter()
            .filter_map(|n| ids.nats.get(&n.name).cloned())
            .collect(),
        load_balancer_security_group_id: group(LB_GROUP)?,
        task_security_group_id: group(TASK_GROUP)?,
    })
}

impl Pipeline for Network {
    const NAME: &'static str = desired::MODULE;
    type Inputs = ();
    type Outputs = NetworkOutputs;
    type Error = Error;
    type Observed = Observed;
    type Desired = Desired;
    type Op = Op;
    type State = Ids;

    async fn observe(&self, cx: &Context, _inputs: Option<&()>) -> Result<Observed, Error> {
        Observed::read(&self.ec2, cx.stack().as_str()).await
    }

    async fn desired(
        &self,
        cx: &Context,
        _inputs: &(),
        _observed: &Observed,
    ) -> Result<Desired, Error> {
        Ok(Desired::new(&self.spec, cx.region(), self.zones(cx).await?))
    }

    fn diff(&self, cx: &Context, desired: &Desired, observed: &Observed) -> Result<Vec<Op>, Error> {
        diff(cx, desired, observed)
    }

    fn teardown(&self, _cx: &Context, observed: &Observed) -> Result<Vec<Op>, Error> {
        Ok(teardown(observed))
    }

    fn change(&self, _cx: &Context, op: &Op) -> Vec<infra::Change> {
        op.change().into_iter().collect()
    }

    fn state(&self, _cx: &Context, _desired: Option<&Desired>, observed: &Observed) -> Ids {
        Ids::from_observed(observed)
    }

    async fn step(&self, cx: &Context, op: &Op, ids: &mut Ids) -> Result<Option<String>, Error> {
        resource::step(&self.ec2, cx, op, ids).await
    }

    async fn outputs(
        &self,
        _cx: &Context,
        desired: &Desired,
        ids: Ids,
    ) -> Result<NetworkOutputs, Error> {
        outputs(desired, &ids)
    }
}
