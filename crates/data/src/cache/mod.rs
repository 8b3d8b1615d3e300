//! The cache of the data tier: an ElastiCache Redis OSS replication group (cluster mode
//! disabled) `{stack}-cache`, a primary and its replicas each in the next zone, automatic
//! failover to a replica in another zone (Multi-AZ), encryption at rest always and in transit
//! (TLS) by default, in a cache subnet group over the private subnets, behind a security group
//! of its own that lets the service's tasks in on 6379 and nothing else. No AUTH token: the
//! security group is the only gate (say so to whoever adds one).
//!
//! The same shape as the database ([`infra::Pipeline`]): `config.rs` is `[cache]`,
//! `observe.rs` reads the three resources by name, `desired.rs` the pure diff and teardown,
//! `exec.rs` the calls.

mod config;
mod desired;
mod exec;
mod observe;

use infra::{Change, Context, Pipeline, pipeline};
use serde::{Deserialize, Serialize};

pub use config::{CACHE_ENGINE_VERSIONS, CacheConfig, CacheSpec};
pub use desired::{CacheDesired, CacheOp};
pub use exec::CacheIds;
pub use observe::{CacheNames, CacheObserved};

use crate::DataInputs;
use crate::error::Error;

/// Redis's port, the cache's.
pub const PORT: i32 = 6379;

/// The cache's name in plans and tags.
pub(crate) const MODULE: &str = "cache";

/// The replication group id of `stack`'s cache.
pub(crate) fn group_id(stack: &str) -> String {
    format!("{stack}-cache")
}

/// What the cache module made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheOutputs {
    /// The replication group id.
    pub group_id: String,
    /// Its ARN.
    pub group_arn: String,
    /// The primary endpoint's DNS name (it moves to the promoted replica on a failover).
    pub primary_endpoint: String,
    /// The reader endpoint's DNS name (the replicas), when there is one.
    pub reader_endpoint: Option<String>,
    /// The port.
    pub port: i32,
    /// Whether clients must speak TLS.
    pub transit_encryption: bool,
    /// Whether a replica in another zone takes over automatically.
    pub multi_az: bool,
    /// The cache's security group.
    pub security_group_id: String,
    /// The zone the primary is in, as ElastiCache reports it.
    #[serde(default)]
    pub primary_zone: Option<String>,
}

/// Where a replication group's nodes run, as ElastiCache reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachePlacement {
    /// The group's ARN.
    pub group_arn: String,
    /// Whether a replica takes over automatically (Multi-AZ).
    pub multi_az: bool,
    /// The primary's zone.
    pub primary_zone: Option<String>,
    /// Every node's zone, the primary's first.
    pub zones: Vec<String>,
}

/// The two clients the cache calls.
#[derive(Debug, Clone)]
pub struct CacheClients {
    /// EC2 (the security group, the subnets' zones).
    pub ec2: aws_sdk_ec2::Client,
    /// ElastiCache.
    pub elasticache: aws_sdk_elasticache::Client,
}

/// The cache module.
#[derive(Debug, Clone)]
pub struct Cache {
    spec: CacheSpec,
    c: CacheClients,
}

impl Cache {
    /// The module for `spec`, with clients built from `cx`.
    pub fn new(cx: &Context, spec: CacheSpec) -> Self {
        Self {
            spec,
            c: CacheClients {
                ec2: infra::client!(cx, aws_sdk_ec2),
                elasticache: infra::client!(cx, aws_sdk_elasticache),
            },
        }
    }

    /// The checked configuration.
    pub fn spec(&self) -> &CacheSpec {
        &self.spec
    }

    /// What `plan` shows, what exists and what `outputs` returns, from one read. Reads only.
    pub async fn survey(
        &self,
        cx: &Context,
        inputs: &DataInputs,
    ) -> Result<pipeline::Survey<CacheOutputs>, Error> {
        let seen = pipeline::observe(self, cx, inputs).await?;
        Ok(pipeline::Survey {
            plan: seen.plan(self, cx),
            existing: seen.existing(self, cx)?,
            outputs: outputs_of(&CacheNames::of(cx), seen.observed.clone()).ok(),
        })
    }

    /// Where the group's nodes run, or `None` when there is no group. Reads only.
    pub async fn placement(&self, cx: &Context) -> Result<Option<CachePlacement>, Error> {
        let g = observe::group(&self.c, cx, &CacheNames::of(cx)).await?;
        Ok(g.map(|g| {
            let mut members = g.members.clone();
            members.sort_by_key(|m| !m.primary);
            CachePlacement {
                group_arn: g.arn,
                multi_az: g.multi_az,
                primary_zone: members
                    .iter()
                    .find(|m| m.primary)
                    .and_then(|m| m.zone.clone()),
                zones: members.into_iter().filter_map(|m| m.zone).collect(),
            }
        }))
    }

    /// The outputs of what is deployed in `inputs`' VPC, or `None` when the cache is not all
    /// there. Reads only.
    pub async fn outputs(
        &self,
        cx: &Context,
        inputs: &DataInputs,
    ) -> Result<Option<CacheOutputs>, Error> {
        let o = observe::observe(&self.c, cx, Some(&inputs.vpc_id)).await?;
        Ok(outputs_of(&CacheNames::of(cx), o).ok())
    }
}

/// The outputs of an observed cache; the kind of what is missing otherwise.
fn outputs_of(names: &CacheNames, o: CacheObserved) -> Result<CacheOutputs, &'static str> {
    let g = o.group.ok_or("replication group")?;
    let sg = o.sg.ok_or("security group")?;
    let (primary_endpoint, port) = g.primary_endpoint.clone().ok_or("primary endpoint")?;
    Ok(CacheOutputs {
        group_id: names.group.clone(),
        group_arn: g.arn,
        primary_endpoint,
        reader_endpoint: g.reader_endpoint,
        port,
        transit_encryption: g.transit_encryption,
        multi_az: g.multi_az,
        security_group_id: sg.id,
        primary_zone: g
            .members
            .iter()
            .find(|m| m.primary)
            .and_then(|m| m.zone.clone()),
    })
}

impl Pipeline for Cache {
    const NAME: &'static str = MODULE;
    type Inputs = DataInputs;
    type Outputs = CacheOutputs;
    type Error = Error;
    type Observed = CacheObserved;
    type Desired = CacheDesired;
    type Op = CacheOp;
    type State = (Option<CacheDesired>, CacheIds);

    async fn observe(
        &self,
        cx: &Context,
        inputs: Option<&DataInputs>,
    ) -> Result<CacheObserved, Error> {
        observe::observe(&self.c, cx, inputs.map(|i| i.vpc_id.as_str())).await
    }

    async fn desired(
        &self,
        cx: &Context,
        inputs: &DataInputs,
        _observed: &CacheObserved,
    ) -> Result<CacheDesired, Error> {
        Ok(CacheDesired::new(
            CacheNames::of(cx),
            self.spec.clone(),
            inputs,
        ))
    }

    fn diff(
        &self,
        cx: &Context,
        desired: &CacheDesired,
        observed: &CacheObserved,
    ) -> Result<Vec<CacheOp>, Error> {
        desired::diff(cx.stack().as_str(), desired, observed)
    }

    /// The group, then its subnet group and security group.
    fn teardown(&self, _cx: &Context, observed: &CacheObserved) -> Result<Vec<CacheOp>, Error> {
        Ok(desired::teardown(observed))
    }

    fn change(&self, cx: &Context, op: &CacheOp) -> Vec<Change> {
        op.change(&CacheNames::of(cx))
    }

    fn state(
        &self,
        _cx: &Context,
        desired: Option<&CacheDesired>,
        observed: &CacheObserved,
    ) -> Self::State {
        (
            desired.cloned(),
            CacheIds {
                sg: observed.sg.as_ref().map(|g| g.id.clone()),
            },
        )
    }

    async fn step(
        &self,
        cx: &Context,
        op: &CacheOp,
        state: &mut Self::State,
    ) -> Result<Option<String>, Error> {
        let (desired, ids) = state;
        exec::step(&self.c, cx, desired.as_ref(), op, ids).await
    }

    /// Reads the group back for its endpoints.
    async fn outputs(
        &self,
        cx: &Context,
        desired: &CacheDesired,
        _state: Self::State,
    ) -> Result<CacheOutputs, Error> {
        let o = observe::observe(&self.c, cx, Some(&desired.vpc)).await?;
        outputs_of(&desired.names, o).map_err(|kind| Error::Missing {
            kind,
            name: desired.names.group.clone(),
        })
    }
}
