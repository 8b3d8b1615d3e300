//! The data slice of a stackproof stack: a PostgreSQL database on Amazon RDS behind the web
//! tier, and a Redis cache on ElastiCache ([`cache`]), as the seeds' stacks have them.
//!
//! One DB instance `{stack}-db` (PostgreSQL 13-17, gp3 storage encrypted at rest, not publicly
//! accessible, Multi-AZ by default: a synchronous standby in another zone that RDS fails over to
//! in 60-120 s), in a DB subnet group over the stack's private subnets, behind a security group
//! of its own that lets in the service's tasks' group on 5432 and nothing else. Its master
//! password is generated and kept by RDS in Secrets Manager (`ManageMasterUserPassword`): no
//! password passes through stackproof, and [`DataOutputs::master_secret_arn`] is what a task
//! definition's `secrets` names. Deletion protection is on by default and destroy refuses a
//! protected database before deleting anything; destroy keeps a final snapshot unless
//! `skip-final-snapshot`.
//!
//! With `deployment = "cluster"` the database is a Multi-AZ DB cluster `{stack}-db` instead:
//! a writer and two readable standbys, one in each of three zones (RDS makes the three
//! instances), a commit acknowledged once one standby has it, a failover in under 35 s; the
//! service gets the writer endpoint, [`DataOutputs::reader_endpoint`] names the standbys. An
//! instance never becomes a cluster in place (nor back): that needs a new database.
//!
//! Same shape as the other modules ([`infra::Pipeline`]): `config.rs` is `[database]` and its
//! check, `observe.rs` reads the three resources by their names (ownership by the stack's tags),
//! `desired.rs` holds the pure diff and teardown, `exec.rs` the calls.
//!
//! ```no_run
//! # async fn demo(cx: &infra::Context) -> Result<(), Box<dyn std::error::Error>> {
//! use infra::{Config as _, Module as _};
//! use stackproof_data::{Data, DataInputs, DatabaseConfig};
//!
//! let spec = DatabaseConfig::default().validate(&cx.scope())?;
//! let data = Data::new(cx, spec);
//! let inputs = DataInputs {
//!     vpc_id: "vpc-0123".into(),
//!     subnet_ids: vec!["subnet-a".into(), "subnet-b".into()],
//!     client_security_group_id: "sg-tasks".into(),
//! };
//! println!("{}", data.plan(cx, &inputs).await?);
//! let out = data.apply(cx, &inputs).await?;
//! println!("postgres://{}@{}:{}/{}", out.master_username, out.endpoint, out.port, out.database_name);
//! # Ok(()) }
//! ```

pub mod cache;
mod config;
mod desired;
mod error;
mod exec;
mod observe;
mod sg;

use std::time::{SystemTime, UNIX_EPOCH};

use infra::{Change, Context, Pipeline, Plan, pipeline};
use serde::{Deserialize, Serialize};

pub use cache::{Cache, CacheConfig, CacheOutputs, CachePlacement, CacheSpec};
pub use config::{DatabaseConfig, DatabaseSpec, Deployment, ENGINE_VERSIONS};
pub use error::Error;
pub use observe::Names;

use desired::{Desired, Op};
use exec::Ids;
use observe::Observed;

/// PostgreSQL's port, the database's.
pub const PORT: i32 = 5432;

/// What the data module needs from the network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataInputs {
    /// The VPC.
    pub vpc_id: String,
    /// The private subnets (two zones or more, as RDS needs for a DB subnet group).
    pub subnet_ids: Vec<String>,
    /// The service's tasks' security group: the only one let in.
    pub client_security_group_id: String,
}

/// What the data module made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataOutputs {
    /// A DB instance or a Multi-AZ DB cluster.
    #[serde(default)]
    pub deployment: Deployment,
    /// The DB instance identifier (or the DB cluster's).
    pub instance_id: String,
    /// Its ARN.
    pub instance_arn: String,
    /// The endpoint's DNS name (it moves to the standby on a failover); a cluster's writer
    /// endpoint.
    pub endpoint: String,
    /// A cluster's reader endpoint (its readable standbys); none for an instance.
    #[serde(default)]
    pub reader_endpoint: Option<String>,
    /// The port.
    pub port: i32,
    /// The database.
    pub database_name: String,
    /// The master user.
    pub master_username: String,
    /// The Secrets Manager secret RDS keeps the master password in (JSON with `username` and
    /// `password`), when RDS reports it.
    pub master_secret_arn: Option<String>,
    /// The database's security group.
    pub security_group_id: String,
    /// Whether a standby runs in another zone.
    pub multi_az: bool,
    /// The zone RDS reports the primary in (it reports a failover's new zone only minutes
    /// later).
    #[serde(default)]
    pub primary_zone: Option<String>,
}

/// Where a DB instance's primary (a cluster's writer) runs, as RDS reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    /// A DB instance or a Multi-AZ DB cluster.
    pub deployment: Deployment,
    /// The instance's ARN (the cluster's).
    pub instance_arn: String,
    /// Whether a standby runs in another zone.
    pub multi_az: bool,
    /// The primary's zone (RDS reports a failover's new zone only minutes later).
    pub zone: Option<String>,
}

/// The two clients the module calls.
#[derive(Debug, Clone)]
pub struct Clients {
    /// EC2 (the security group).
    pub ec2: aws_sdk_ec2::Client,
    /// RDS.
    pub rds: aws_sdk_rds::Client,
}

/// The data module.
#[derive(Debug, Clone)]
pub struct Data {
    spec: DatabaseSpec,
    c: Clients,
}

impl Data {
    /// The module for `spec`, with clients built from `cx`.
    pub fn new(cx: &Context, spec: DatabaseSpec) -> Self {
        Self {
            spec,
            c: Clients {
                ec2: infra::client!(cx, aws_sdk_ec2),
                rds: infra::client!(cx, aws_sdk_rds),
            },
        }
    }

    /// The checked configuration.
    pub fn spec(&self) -> &DatabaseSpec {
        &self.spec
    }

    /// What `plan` shows, what exists and what `outputs` returns, from one read of the
    /// account (the stack's preview hands the outputs on to compute's plan). Reads only.
    pub async fn survey(
        &self,
        cx: &Context,
        inputs: &DataInputs,
    ) -> Result<pipeline::Survey<DataOutputs>, Error> {
        let seen = pipeline::observe(self, cx, inputs).await?;
        Ok(pipeline::Survey {
            plan: seen.plan(self, cx),
            existing: seen.existing(self, cx)?,
            outputs: outputs_of(&Names::of(cx), &self.spec, seen.observed.clone()).ok(),
        })
    }

    /// Where the database's primary runs, or `None` when there is no instance (or cluster, as
    /// the configuration says). Reads only.
    pub async fn placement(&self, cx: &Context) -> Result<Option<Placement>, Error> {
        let names = Names::of(cx);
        let i = match self.spec.deployment {
            Deployment::Instance => observe::instance(&self.c, cx, &names).await?,
            Deployment::Cluster => observe::cluster(&self.c, cx, &names).await?,
        };
        Ok(i.map(|i| Placement {
            deployment: i.deployment,
            instance_arn: i.arn,
            multi_az: i.multi_az,
            zone: i.zone,
        }))
    }

    /// Why destroy would refuse (deletion protection on), before anything is deleted; `None`
    /// when it would not. Reads only.
    pub async fn destroy_refusal(&self, cx: &Context) -> Result<Option<Error>, Error> {
        let o = observe::observe(&self.c, cx, None).await?;
        Ok(self.teardown(cx, &o).err())
    }

    /// The outputs of what is deployed in `inputs`' VPC, or `None` when the database (its
    /// instance with an endpoint, its security group) is not all there. Reads only.
    pub async fn outputs(
        &self,
        cx: &Context,
        inputs: &DataInputs,
    ) -> Result<Option<DataOutputs>, Error> {
        let o = observe::observe(&self.c, cx, Some(&inputs.vpc_id)).await?;
        Ok(outputs_of(&Names::of(cx), &self.spec, o).ok())
    }
}

/// The outputs of an observed database; the kind of what is missing otherwise.
fn outputs_of(
    names: &Names,
    spec: &DatabaseSpec,
    o: Observed,
) -> Result<DataOutputs, &'static str> {
    let i = match spec.deployment {
        Deployment::Instance => o.instance,
        Deployment::Cluster => o.cluster,
    }
    .ok_or(spec.deployment.noun())?;
    let sg = o.sg.ok_or("security group")?;
    let (endpoint, port) = i.endpoint.clone().ok_or("DB endpoint")?;
    Ok(DataOutputs {
        deployment: i.deployment,
        instance_id: names.instance.clone(),
        instance_arn: i.arn,
        endpoint,
        reader_endpoint: i.reader_endpoint,
        port,
        database_name: i
            .database_name
            .unwrap_or_else(|| spec.database_name.clone()),
        master_username: i
            .master_username
            .unwrap_or_else(|| spec.master_username.clone()),
        master_secret_arn: i.master_secret_arn,
        security_group_id: sg.id,
        multi_az: i.multi_az,
        primary_zone: i.zone.clone(),
    })
}

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Pipeline for Data {
    const NAME: &'static str = desired::MODULE;
    type Inputs = DataInputs;
    type Outputs = DataOutputs;
    type Error = Error;
    type Observed = Observed;
    type Desired = Desired;
    type Op = Op;
    type State = (Option<Desired>, Ids);

    async fn observe(&self, cx: &Context, inputs: Option<&DataInputs>) -> Result<Observed, Error> {
        observe::observe(&self.c, cx, inputs.map(|i| i.vpc_id.as_str())).await
    }

    async fn desired(
        &self,
        cx: &Context,
        inputs: &DataInputs,
        _observed: &Observed,
    ) -> Result<Desired, Error> {
        Ok(Desired::new(Names::of(cx), self.spec.clone(), inputs))
    }

    fn diff(&self, cx: &Context, desired: &Desired, observed: &Observed) -> Result<Vec<Op>, Error> {
        desired::diff(cx.stack().as_str(), desired, observed)
    }

    /// The instance (a protected one refuses), then its subnet group and security group.
    fn teardown(&self, cx: &Context, observed: &Observed) -> Result<Vec<Op>, Error> {
        desired::teardown(
            &Names::of(cx),
            observed,
            self.spec.skip_final_snapshot,
            now_unix(),
            false,
        )
    }

    /// What exists, protected or not.
    fn existing(&self, cx: &Context, observed: &Observed) -> Result<Plan, Error> {
        let ops = desired::teardown(
            &Names::of(cx),
            observed,
            self.spec.skip_final_snapshot,
            now_unix(),
            true,
        )?;
        Ok(pipeline::plan(self, cx, &ops))
    }

    /// A protected database shows as what destroy would delete, with the refusal on it,
    /// rather than failing the preview.
    fn preview_destroy(&self, cx: &Context, observed: &Observed) -> Result<Plan, Error> {
        match self.teardown(cx, observed) {
            Ok(ops) => Ok(pipeline::plan(self, cx, &ops)),
            Err(refusal) => {
                let mut plan = self.existing(cx, observed)?;
                if let Some(first) = plan.changes.first_mut() {
                    first.details.push(format!("REFUSED: {refusal}"));
                }
                Ok(plan)
            }
        }
    }

    fn change(&self, cx: &Context, op: &Op) -> Vec<Change> {
        op.change(&Names::of(cx))
    }

    fn state(&self, _cx: &Context, desired: Option<&Desired>, observed: &Observed) -> Self::State {
        (
            desired.cloned(),
            Ids {
                sg: observed.sg.as_ref().map(|g| g.id.clone()),
            },
        )
    }

    async fn step(
        &self,
        cx: &Context,
        op: &Op,
        state: &mut Self::State,
    ) -> Result<Option<String>, Error> {
        let (desired, ids) = state;
        exec::step(&self.c, cx, desired.as_ref(), op, ids).await
    }

    /// Reads the instance back for its endpoint and its secret.
    async fn outputs(
        &self,
        cx: &Context,
        desired: &Desired,
        _state: Self::State,
    ) -> Result<DataOutputs, Error> {
        let o = observe::observe(&self.c, cx, Some(&desired.vpc)).await?;
        outputs_of(&desired.names, &self.spec, o).map_err(|kind| Error::Missing {
            kind,
            name: desired.names.instance.clone(),
        })
    }
}
