//! The seeds' web stack: one `stack.toml`, checked as a whole, wired module by module.
//!
//! [`StackConfig`] is what users write (every field has a documented default, unknown keys
//! are errors naming the key and line); [`StackConfig::validate`] turns it into a [`Stack`] or
//! reports every problem at once, before any AWS call. [`Stack`] runs the modules in
//! dependency order: storage and the network at once, then the load balancer, then compute and
//! observability at once; destroy walks the same graph backwards.
//!
//! ```
//! let config = stackproof_stack::StackConfig::from_toml("name = \"web\"\n[network]\naz-count = 3\n", "stack.toml")?;
//! let stack = config.validate()?;
//! assert_eq!(stack.name().as_str(), "web");
//! Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::collections::BTreeMap;

use compute::{Compute, ComputeInputs, ComputeOutputs, ComputeSpec};
use infra::pipeline;
use infra::{Context, Module, Plan, Problems, StackName};
use network::{
    AccessLogs, LoadBalancer, LoadBalancerInputs, LoadBalancerOutputs, LoadBalancerSpec, Network,
    NetworkOutputs, NetworkSpec,
};
use observability::{Observability, ObservabilityInputs, ObservabilityOutputs, ObservabilitySpec};
use serde::{Deserialize, Serialize};
use storage::{Storage, StorageOutputs, StorageSpec};

mod apply;
mod config;
mod example;
pub mod fault;
pub mod lock;
pub mod steady;
pub use config::{DEFAULT_REGION, StackConfig};
pub use example::example_toml;

/// Errors of the stack crate.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The configuration file could not be read.
    #[error("could not read {path}")]
    Read {
        /// The file.
        path: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The configuration file is not valid TOML for a stack (unknown key, wrong type...).
    #[error("{path}: {message}")]
    Parse {
        /// The file.
        path: String,
        /// The parser's message, with line and column.
        message: String,
    },
    /// The configuration breaks rules.
    #[error(transparent)]
    Invalid(#[from] Problems),
    /// The storage module failed.
    #[error("storage")]
    Storage(#[from] storage::Error),
    /// The network or load balancer module failed.
    #[error("network")]
    Network(#[from] network::Error),
    /// The compute module failed.
    #[error("compute")]
    Compute(#[from] compute::Error),
    /// The observability module failed.
    #[error("observability")]
    Observability(#[from] observability::Error),
    /// The data module failed.
    #[error("data")]
    Data(#[from] data::Error),
    /// An AWS call of the stack's own (the fault experiments) failed.
    #[error(transparent)]
    Call(#[from] infra::CallError),
    /// A zone that is not the stack's.
    #[error("zone {zone:?} is not one of the stack's zones ({})", .zones.join(", "))]
    UnknownZone {
        /// The zone asked for.
        zone: String,
        /// The stack's zones.
        zones: Vec<String>,
    },
    /// A fault experiment did not run, or did not end, as it should.
    #[error("AWS FIS experiment {id} is {status}: {reason}")]
    Experiment {
        /// The experiment's id.
        id: String,
        /// Its state.
        status: String,
        /// FIS's reason, or what was waited for.
        reason: String,
    },
    /// After its restore, a zone's subnets are still on a deny-all network ACL.
    #[error("zone {zone} is still cut off after its restore: subnets {} are on a deny-all network ACL", .subnets.join(", "))]
    StillIsolated {
        /// The zone.
        zone: String,
        /// Its subnets still cut off.
        subnets: Vec<String>,
    },
    /// Destroy found, before deleting anything, what would stop it part way; nothing was
    /// deleted.
    #[error("{}", preflight_message(.0))]
    Preflight(Vec<Blocker>),
}

/// What stops destroy; found by its preflight, before the first delete.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Blocker {
    /// Destroy would turn off the load balancer's deletion protection and was not allowed to.
    #[error(
        "the load balancer has deletion protection on (load-balancer.deletion-protection). Pass --override-deletion-protection to turn it off and destroy, or set deletion-protection = false and deploy first"
    )]
    DeletionProtected,
    /// Storage would refuse (a non-empty bucket or repository without `force-destroy`).
    #[error(transparent)]
    Storage(storage::Error),
    /// The database has deletion protection on.
    #[error(transparent)]
    Data(data::Error),
}

fn preflight_message(blockers: &[Blocker]) -> String {
    let mut text = String::from("nothing was deleted: destroy would stop part way");
    match blockers {
        [one] => text.push_str(&format!(": {one}")),
        many => {
            for b in many {
                text.push_str(&format!("\n  - {b}"));
            }
        }
    }
    text
}

/// A checked stack configuration.
#[derive(Debug, Clone)]
pub struct Stack {
    name: StackName,
    region: String,
    tags: BTreeMap<String, String>,
    storage: StorageSpec,
    network: NetworkSpec,
    load_balancer: LoadBalancerSpec,
    service: ComputeSpec,
    observability: ObservabilitySpec,
    /// `[database]`, when the stack has one.
    database: Option<data::DatabaseSpec>,
    /// `[cache]`, when the stack has one.
    cache: Option<data::CacheSpec>,
}

/// Everything the stack gives its user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StackOutputs {
    /// The stack's name.
    pub stack: String,
    /// The region.
    pub region: String,
    /// The storage's outputs (log bucket, image repository).
    pub storage: StorageOutputs,
    /// The network's outputs.
    pub network: NetworkOutputs,
    /// The load balancer's outputs (its DNS name is the stack's address).
    pub load_balancer: LoadBalancerOutputs,
    /// The service's outputs.
    pub compute: ComputeOutputs,
    /// The dashboard and alarms.
    pub observability: ObservabilityOutputs,
    /// The database, when the stack has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<data::DataOutputs>,
    /// The cache, when the stack has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache: Option<data::CacheOutputs>,
}

/// The tag the task definition names in the stack's own repository when `[service] image` is
/// left out.
pub const DEFAULT_IMAGE_TAG: &str = "latest";

/// What plan shows for an id that exists only after apply (Terraform's "known after apply").
pub const AFTER_APPLY: &str = "(known after apply)";

/// The modules of one stack, built for one context.
struct Modules {
    storage: Storage,
    network: Network,
    load_balancer: LoadBalancer,
    compute: Compute,
    observability: Observability,
    data: Option<data::Data>,
    cache: Option<data::Cache>,
}

impl Stack {
    /// The stack's name.
    pub fn name(&self) -> &StackName {
        &self.name
    }

    /// The region.
    pub fn region(&self) -> &str {
        &self.region
    }

    /// The user's tags for every resource.
    pub fn tags(&self) -> &BTreeMap<String, String> {
        &self.tags
    }

    /// The port the tasks listen on.
    pub fn task_port(&self) -> u16 {
        self.network.task_port()
    }

    /// The CPU architecture of the tasks (`[service] cpu-architecture`).
    pub fn cpu_architecture(&self) -> compute::CpuArchitecture {
        self.service.cpu_architecture()
    }

    /// The tag of the stack's own repository (`repository_uri`) that the task definition
    /// names: [`DEFAULT_IMAGE_TAG`] unless `[service] image` says otherwise; `None` when the
    /// image lives elsewhere (a public image, another repository), which deploy never pushes.
    pub fn own_image_tag(&self, repository_uri: &str) -> Option<String> {
        match self.service.image() {
            None => Some(DEFAULT_IMAGE_TAG.to_owned()),
            Some(image) => image
                .strip_prefix(repository_uri)
                .and_then(|rest| rest.strip_prefix(':'))
                .filter(|tag| !tag.is_empty())
                .map(str::to_owned),
        }
    }

    fn modules(&self, cx: &Context) -> Modules {
        Modules {
            storage: Storage::new(cx, self.storage.clone()),
            network: Network::new(cx, self.network.clone()),
            load_balancer: LoadBalancer::new(cx, self.load_balancer.clone()),
            compute: Compute::new(cx, self.service.clone()),
            observability: Observability::new(cx, self.observability.clone()),
            data: self.database.clone().map(|spec| data::Data::new(cx, spec)),
            cache: self.cache.clone().map(|spec| data::Cache::new(cx, spec)),
        }
    }

    /// What the service is handed of a database that does not exist yet (plan only).
    fn placeholder_data(&self) -> Option<data::DataOutputs> {
        let spec = self.database.as_ref()?;
        Some(data::DataOutputs {
            deployment: spec.deployment(),
            instance_id: AFTER_APPLY.to_owned(),
            instance_arn: AFTER_APPLY.to_owned(),
            endpoint: AFTER_APPLY.to_owned(),
            reader_endpoint: (spec.deployment() == data::Deployment::Cluster)
                .then(|| AFTER_APPLY.to_owned()),
            port: data::PORT,
            database_name: spec.database_name().to_owned(),
            master_username: spec.master_username().to_owned(),
            master_secret_arn: Some(AFTER_APPLY.to_owned()),
            security_group_id: AFTER_APPLY.to_owned(),
            multi_az: spec.multi_az(),
            primary_zone: None,
        })
    }

    /// What the service is handed of a cache that does not exist yet (plan only).
    fn placeholder_cache(&self) -> Option<data::CacheOutputs> {
        let spec = self.cache.as_ref()?;
        Some(data::CacheOutputs {
            group_id: AFTER_APPLY.to_owned(),
            group_arn: AFTER_APPLY.to_owned(),
            primary_endpoint: AFTER_APPLY.to_owned(),
            reader_endpoint: None,
            port: data::cache::PORT,
            transit_encryption: spec.transit_encryption(),
            multi_az: spec.multi_az(),
            security_group_id: AFTER_APPLY.to_owned(),
            primary_zone: None,
        })
    }

    /// The database's inputs: the VPC, the private subnets, the tasks' security group.
    fn data_inputs(net: &NetworkOutputs) -> data::DataInputs {
        data::DataInputs {
            vpc_id: net.vpc_id.clone(),
            subnet_ids: net.private_subnet_ids.clone(),
            client_security_group_id: net.task_security_group_id.clone(),
        }
    }

    fn lb_inputs(&self, net: &NetworkOutputs, storage: &StorageOutputs) -> LoadBalancerInputs {
        LoadBalancerInputs {
            vpc_id: net.vpc_id.clone(),
            zones: net.zones.clone(),
            public_subnet_ids: net.public_subnet_ids.clone(),
            security_group_id: net.load_balancer_security_group_id.clone(),
            target_port: self.network.task_port(),
            access_logs: Some(AccessLogs {
                bucket: storage.log_bucket.clone(),
                prefix: storage.log_prefix.clone(),
            }),
        }
    }

    fn compute_inputs(
        &self,
        net: &NetworkOutputs,
        storage: &StorageOutputs,
        lb: &LoadBalancerOutputs,
        db: Option<&data::DataOutputs>,
        cache: Option<&data::CacheOutputs>,
    ) -> ComputeInputs {
        ComputeInputs {
            linked: links(db, cache),
            private_subnet_ids: net.private_subnet_ids.clone(),
            task_security_group_id: net.task_security_group_id.clone(),
            target_group_arn: lb.target_group_arn.clone(),
            load_balancer_arn_suffix: lb.arn_suffix.clone(),
            target_group_arn_suffix: lb.target_group_arn_suffix.clone(),
            container_port: self.network.task_port(),
            default_image: format!("{}:{DEFAULT_IMAGE_TAG}", storage.repository_uri),
            account_id: storage.account_id.clone(),
        }
    }

    fn observability_inputs(
        &self,
        net: &NetworkOutputs,
        lb: &LoadBalancerOutputs,
    ) -> ObservabilityInputs {
        // Compute names its cluster and service after the stack.
        ObservabilityInputs {
            zones: net.zones.clone(),
            load_balancer_arn_suffix: lb.arn_suffix.clone(),
            target_group_arn_suffix: lb.target_group_arn_suffix.clone(),
            cluster_name: self.name.to_string(),
            service_name: self.name.to_string(),
        }
    }

    /// Stand-ins for upstream outputs that do not exist yet, so that plan can show what
    /// downstream modules would create.
    fn placeholder_network(&self) -> NetworkOutputs {
        let zones: Vec<String> = match self.network.zones() {
            network::Zones::Named(names) => names.clone(),
            network::Zones::First(n) => (0..*n)
                .map(|i| format!("{AFTER_APPLY} zone {}", i + 1))
                .collect(),
        };
        let ids = |kind: &str| -> Vec<String> {
            (0..zones.len())
                .map(|i| format!("{AFTER_APPLY} {kind} {}", i + 1))
                .collect()
        };
        NetworkOutputs {
            vpc_id: AFTER_APPLY.to_owned(),
            vpc_cidr: self.network.vpc_cidr().to_string(),
            public_subnet_ids: ids("public subnet"),
            private_subnet_ids: ids("private subnet"),
            zones,
            internet_gateway_id: AFTER_APPLY.to_owned(),
            nat_gateway_ids: Vec::new(),
            load_balancer_security_group_id: AFTER_APPLY.to_owned(),
            task_security_group_id: AFTER_APPLY.to_owned(),
        }
    }

    fn placeholder_storage(&self) -> StorageOutputs {
        StorageOutputs {
            account_id: AFTER_APPLY.to_owned(),
            log_bucket: AFTER_APPLY.to_owned(),
            log_prefix: AFTER_APPLY.to_owned(),
            repository_name: storage::repository_name(self.name.as_str()),
            repository_uri: AFTER_APPLY.to_owned(),
            repository_arn: AFTER_APPLY.to_owned(),
        }
    }

    fn placeholder_lb(&self) -> LoadBalancerOutputs {
        LoadBalancerOutputs {
            arn: AFTER_APPLY.to_owned(),
            arn_suffix: AFTER_APPLY.to_owned(),
            name: network::lb_name(self.name.as_str()),
            dns_name: AFTER_APPLY.to_owned(),
            hosted_zone_id: AFTER_APPLY.to_owned(),
            target_group_arn: AFTER_APPLY.to_owned(),
            target_group_arn_suffix: AFTER_APPLY.to_owned(),
            listener_arns: Vec::new(),
            security_group_ids: Vec::new(),
        }
    }

    /// What `apply` would change, module by module, in the order apply makes the changes.
    /// Reads only; ids of what does not exist yet show as `(known after apply)`.
    pub async fn plan(&self, cx: &Context) -> Result<Plan, Error> {
        Ok(self.plan_and_existing(cx).await?.0)
    }

    /// What `apply` would change and what exists of the stack (every resource once, as
    /// destroy names it, in destroy's order: what an apply then leaves unchanged), from one
    /// read of each module. Reads only.
    pub async fn plan_and_existing(&self, cx: &Context) -> Result<(Plan, Plan), Error> {
        let m = self.modules(cx);
        let (storage, network) = tokio::try_join!(
            async { m.storage.survey(cx).await.map_err(Error::from) },
            async { m.network.survey(cx).await.map_err(Error::from) },
        )?;
        let storage_out = (storage.outputs.clone()).unwrap_or_else(|| self.placeholder_storage());
        let network_out = (network.outputs.clone()).unwrap_or_else(|| self.placeholder_network());
        let lb_inputs = self.lb_inputs(&network_out, &storage_out);
        let lb = m.load_balancer.survey(cx, &lb_inputs).await?;
        let lb_out = (lb.outputs.clone()).unwrap_or_else(|| self.placeholder_lb());
        let obs_inputs = self.observability_inputs(&network_out, &lb_out);
        let data_inputs = Self::data_inputs(&network_out);
        // Compute's plan shows what the service is handed of the database and the cache: their
        // outputs first.
        let data = async {
            let Some(d) = &m.data else {
                return Ok::<_, Error>((Plan::default(), Plan::default(), None));
            };
            let s = d.survey(cx, &data_inputs).await?;
            Ok((s.plan, s.existing, s.outputs))
        };
        let cache = async {
            let Some(c) = &m.cache else {
                return Ok::<_, Error>((Plan::default(), Plan::default(), None));
            };
            let s = c.survey(cx, &data_inputs).await?;
            Ok((s.plan, s.existing, s.outputs))
        };
        let ((compute, data, cache), obs) = tokio::try_join!(
            async {
                let (data, cache) = tokio::try_join!(data, cache)?;
                let db = data.2.clone().or_else(|| self.placeholder_data());
                let cached = cache.2.clone().or_else(|| self.placeholder_cache());
                let compute_inputs = self.compute_inputs(
                    &network_out,
                    &storage_out,
                    &lb_out,
                    db.as_ref(),
                    cached.as_ref(),
                );
                let seen = pipeline::observe(&m.compute, cx, &compute_inputs).await?;
                Ok::<_, Error>((
                    (seen.plan(&m.compute, cx), seen.existing(&m.compute, cx)?),
                    (data.0, data.1),
                    (cache.0, cache.1),
                ))
            },
            async {
                let seen = pipeline::observe(&m.observability, cx, &obs_inputs).await?;
                Ok::<_, Error>((
                    seen.plan(&m.observability, cx),
                    seen.existing(&m.observability, cx)?,
                ))
            },
        )?;
        let mut plan = storage.plan;
        for part in [network.plan, data.0, cache.0, lb.plan, compute.0, obs.0] {
            plan.extend(part);
        }
        let mut existing = obs.1;
        for part in [
            data.1,
            cache.1,
            compute.1,
            lb.existing,
            network.existing,
            storage.existing,
        ] {
            existing.extend(part);
        }
        Ok((plan, existing))
    }

    /// The outputs of what is deployed, or `None` when some module is not (fully) deployed.
    /// Reads only.
    pub async fn outputs(&self, cx: &Context) -> Result<Option<StackOutputs>, Error> {
        let m = self.modules(cx);
        let (storage, network, load_balancer, compute) = tokio::try_join!(
            async { m.storage.outputs(cx).await.map_err(Error::from) },
            async { m.network.outputs(cx).await.map_err(Error::from) },
            async { m.load_balancer.outputs(cx).await.map_err(Error::from) },
            async { m.compute.outputs(cx).await.map_err(Error::from) },
        )?;
        let (Some(storage), Some(network), Some(load_balancer), Some(compute)) =
            (storage, network, load_balancer, compute)
        else {
            return Ok(None);
        };
        let obs_inputs = self.observability_inputs(&network, &load_balancer);
        let Some(observability) = m.observability.outputs(cx, &obs_inputs).await? else {
            return Ok(None);
        };
        let data = match &m.data {
            Some(d) => match d.outputs(cx, &Self::data_inputs(&network)).await? {
                Some(out) => Some(out),
                None => return Ok(None),
            },
            None => None,
        };
        let cache = match &m.cache {
            Some(c) => match c.outputs(cx, &Self::data_inputs(&network)).await? {
                Some(out) => Some(out),
                None => return Ok(None),
            },
            None => None,
        };
        let stack = self.name.as_str();
        Ok(Some(StackOutputs {
            stack: stack.to_owned(),
            region: self.region.clone(),
            storage,
            network,
            load_balancer,
            compute,
            observability,
            data,
            cache,
        }))
    }

    /// What `destroy` would delete, in the order destroy deletes it. Reads only.
    pub async fn plan_destroy(&self, cx: &Context) -> Result<Plan, Error> {
        let m = self.modules(cx);
        let (obs, data, cache, compute, lb, network, storage) = tokio::try_join!(
            async { m.observability.plan_destroy(cx).await.map_err(Error::from) },
            async {
                match &m.data {
                    Some(d) => d.plan_destroy(cx).await.map_err(Error::from),
                    None => Ok(Plan::default()),
                }
            },
            async {
                match &m.cache {
                    Some(c) => c.plan_destroy(cx).await.map_err(Error::from),
                    None => Ok(Plan::default()),
                }
            },
            async { m.compute.plan_destroy(cx).await.map_err(Error::from) },
            async { m.load_balancer.plan_destroy(cx).await.map_err(Error::from) },
            async { m.network.plan_destroy(cx).await.map_err(Error::from) },
            async { m.storage.plan_destroy(cx).await.map_err(Error::from) },
        )?;
        let mut plan = obs;
        for part in [data, cache, compute, lb, network, storage] {
            plan.extend(part);
        }
        Ok(plan)
    }

    /// Deletes everything tagged with the stack, in reverse dependency order: observability
    /// with compute, then the load balancer, then the network with storage. A load balancer
    /// with deletion protection is only destroyed when `override_protection` is true.
    ///
    /// Runs [`Stack::destroy_preflight`] first: what would stop it part way stops it before the
    /// first delete. (Access logs the load balancer delivers between the preflight and its own
    /// deletion can still make storage refuse at the end; then the rest is deleted anyway.)
    pub async fn destroy(&self, cx: &Context, override_protection: bool) -> Result<Plan, Error> {
        self.destroy_preflight(cx, override_protection).await?;
        let m = self.modules(cx);
        // Side by side modules each run to their end: one that stops (storage refusing a bucket
        // that holds logs) does not cut the other off half way (the network's NAT gateways,
        // which cost money, go either way). The first error is returned after both.
        let (obs, data, cache, compute) = tokio::join!(
            async { m.observability.destroy(cx).await.map_err(Error::from) },
            // Before the network: their security groups' rules name the tasks' group.
            async {
                match &m.data {
                    Some(d) => d.destroy(cx).await.map_err(Error::from),
                    None => Ok(Plan::default()),
                }
            },
            async {
                match &m.cache {
                    Some(c) => c.destroy(cx).await.map_err(Error::from),
                    None => Ok(Plan::default()),
                }
            },
            async {
                let plan = m.compute.destroy(cx).await?;
                // The load generators' task definition and role (`loadtest --workers`), if any.
                let ecs: aws_sdk_ecs::Client = infra::client!(cx, aws_sdk_ecs);
                compute::loadgen::remove(&ecs, cx).await?;
                let iam: aws_sdk_iam::Client = infra::client!(cx, aws_sdk_iam);
                compute::loadgen::remove_role(&iam, cx).await?;
                Ok::<_, Error>(plan)
            },
        );
        let (obs, data, cache, compute) = (obs?, data?, cache?, compute?);
        let lb = m.load_balancer.destroy(cx).await?;
        let (network, storage) = tokio::join!(
            async { m.network.destroy(cx).await.map_err(Error::from) },
            async { m.storage.destroy(cx).await.map_err(Error::from) },
        );
        let (network, storage) = (network?, storage?);
        let mut plan = obs;
        for part in [data, cache, compute, lb, network, storage] {
            plan.extend(part);
        }
        Ok(plan)
    }

    /// Everything that would stop destroy part way, each once: the load balancer's deletion
    /// protection (unless `override_protection`) and a non-empty bucket or repository without
    /// `force-destroy`. Reads only; `Error::Preflight` lists them.
    pub async fn destroy_preflight(
        &self,
        cx: &Context,
        override_protection: bool,
    ) -> Result<(), Error> {
        let m = self.modules(cx);
        let (lb_plan, storage) = tokio::try_join!(
            async { m.load_balancer.plan_destroy(cx).await.map_err(Error::from) },
            async { m.storage.destroy_refusal(cx).await.map_err(Error::from) },
        )?;
        let mut blockers = Vec::new();
        if !override_protection && LoadBalancer::turns_off_protection(&lb_plan) {
            blockers.push(Blocker::DeletionProtected);
        }
        if let Some(refusal) = storage {
            blockers.push(Blocker::Storage(refusal));
        }
        if let Some(d) = &m.data
            && let Some(refusal) = d.destroy_refusal(cx).await?
        {
            blockers.push(Blocker::Data(refusal));
        }
        if blockers.is_empty() {
            Ok(())
        } else {
            Err(Error::Preflight(blockers))
        }
    }

    /// The isolation state of every zone.
    pub async fn zone_isolation(&self, cx: &Context) -> Result<Vec<network::ZoneIsolation>, Error> {
        Ok(self.modules(cx).network.zone_isolation(cx).await?)
    }

    /// Cuts one zone off from the client (its subnets move to the stack's deny-all network
    /// ACL), the way AWS FIS does but with no service to undo it: a client that dies leaves
    /// it. The proof uses [`Stack::start_zone_fault`]; this remains for a network without FIS.
    pub async fn isolate_zone(&self, cx: &Context, zone: &str) -> Result<(), Error> {
        self.modules(cx).network.isolate_zone(cx, zone).await?;
        Ok(())
    }

    /// Heals a zone cut off by [`Stack::start_zone_fault`] or [`Stack::isolate_zone`]: stops
    /// the stack's FIS experiments there and waits until FIS has reverted them, moves subnets
    /// off the stack's own deny-all ACL, then checks that none of the zone's subnets is still
    /// cut off ([`Error::StillIsolated`] otherwise). Returns the experiments it stopped.
    pub async fn restore_zone(&self, cx: &Context, zone: &str) -> Result<Vec<String>, Error> {
        let stopped = self.stop_zone_faults(cx, zone).await?;
        self.modules(cx).network.restore_zone(cx, zone).await?;
        let left: Vec<String> = self
            .zone_isolation(cx)
            .await?
            .into_iter()
            .filter(|z| z.zone == zone)
            .flat_map(|z| z.isolated_subnet_ids.into_iter().chain(z.fis_subnet_ids))
            .collect();
        if !left.is_empty() {
            return Err(Error::StillIsolated {
                zone: zone.to_owned(),
                subnets: left,
            });
        }
        Ok(stopped)
    }
}

/// The variables the service's container is handed of the stack's database (see
/// ARCHITECTURE.md): where it is and who to log in as; the password as an ECS secret, the
/// `password` key of the secret RDS manages, so it never passes through stackproof.
pub const DATABASE_VARIABLES: [&str; 5] = [
    "DATABASE_HOST",
    "DATABASE_PORT",
    "DATABASE_NAME",
    "DATABASE_USER",
    "DATABASE_PASSWORD",
];

/// The variables the service's container is handed of the stack's cache: where its primary
/// endpoint is and whether to speak TLS (`true` with encryption in transit). No password: the
/// cache's security group is its gate.
pub const CACHE_VARIABLES: [&str; 3] = ["REDIS_HOST", "REDIS_PORT", "REDIS_TLS"];

/// What the service is handed of the stack's database and cache, each when there.
pub(crate) fn links(
    db: Option<&data::DataOutputs>,
    cache: Option<&data::CacheOutputs>,
) -> compute::Linked {
    let mut linked = db.map(database_link).unwrap_or_default();
    if let Some(c) = cache {
        let [host, port, tls] = CACHE_VARIABLES.map(str::to_owned);
        linked.environment.extend([
            (host, c.primary_endpoint.clone()),
            (port, c.port.to_string()),
            (tls, c.transit_encryption.to_string()),
        ]);
        // The zone fault interrupts a Multi-AZ cache's power in the zone, as AWS's AZ power
        // scenario does; AWS has no managed policy for it.
        if c.multi_az {
            linked
                .fault_actions
                .extend(crate::fault::FIS_CACHE_ACTIONS.map(str::to_owned));
        }
    }
    linked
}

pub(crate) fn database_link(db: &data::DataOutputs) -> compute::Linked {
    let [host, port, name, user, password] = DATABASE_VARIABLES.map(str::to_owned);
    let environment = BTreeMap::from([
        (host, db.endpoint.clone()),
        (port, db.port.to_string()),
        (name, db.database_name.clone()),
        (user, db.master_username.clone()),
    ]);
    let secrets = db
        .master_secret_arn
        .iter()
        .map(|arn| {
            let secret = compute::Secret::SecretsManager {
                value_from: format!("{arn}:password::"),
                arn: arn.clone(),
            };
            (password.clone(), secret)
        })
        .collect();
    compute::Linked {
        environment,
        secrets,
        // The zone fault fails a Multi-AZ database over as AWS's AZ power scenario does.
        fault_policies: [crate::fault::FIS_RDS_POLICY.to_owned()].into(),
        fault_actions: Default::default(),
    }
}
