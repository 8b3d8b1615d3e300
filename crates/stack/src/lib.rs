//! The seeds' web stack: one `stack.toml`, checked as a whole, wired module by module.
//!
//! [`StackConfig`] is what users write (every field has a documented default, unknown keys
//! are errors naming the key and line); [`StackConfig::validate`] turns it into a [`Stack`] or
//! reports every problem at once, before any AWS call. [`Stack`] runs the modules in
//! dependency order: storage and the network at once, then the load balancer, then compute and
//! observability at once; destroy walks the same graph backwards.
//!
//! ```
//! let config = stack::StackConfig::from_toml("name = \"web\"\n[network]\naz-count = 3\n", "stack.toml")?;
//! let stack = config.validate()?;
//! assert_eq!(stack.name().as_str(), "web");
//! Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::collections::BTreeMap;
use std::path::Path;

use compute::{Compute, ComputeConfig, ComputeInputs, ComputeOutputs, ComputeSpec};
use infra::{Context, Module, Plan, Problems, StackName};
use network::{
    AccessLogs, LoadBalancer, LoadBalancerConfig, LoadBalancerInputs, LoadBalancerOutputs,
    LoadBalancerSpec, Network, NetworkConfig, NetworkOutputs, NetworkSpec,
};
use observability::{
    Observability, ObservabilityConfig, ObservabilityInputs, ObservabilityOutputs,
    ObservabilitySpec,
};
use serde::{Deserialize, Serialize};
use storage::{Storage, StorageConfig, StorageOutputs, StorageSpec};

mod apply;
mod example;
pub mod lock;
pub mod steady;
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

/// The whole `stack.toml`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct StackConfig {
    /// The stack's name: 1-24 of a-z, 0-9 and '-', starting with a letter. It tags every
    /// resource and prefixes resource names. Default `"stackproof"`.
    pub name: String,
    /// The AWS region. Default: none, so the caller's choice: the command line's `--region`,
    /// else the SDK's chain (`AWS_REGION`, the profile's region), else [`DEFAULT_REGION`].
    /// When set, it wins over the SDK's chain.
    pub region: Option<String>,
    /// Tags for every resource, besides stackproof's own (`stackproof:*` keys are reserved).
    /// Default: none.
    pub tags: BTreeMap<String, String>,
    /// The access-log bucket and the image repository (see `storage::StorageConfig`).
    pub storage: StorageConfig,
    /// The network (see `network::NetworkConfig`).
    pub network: NetworkConfig,
    /// The load balancer (see `network::LoadBalancerConfig`).
    pub load_balancer: LoadBalancerConfig,
    /// The ECS service and its autoscaling (see `compute::ComputeConfig`).
    pub service: ComputeConfig,
    /// Dashboard and alarms (see `observability::ObservabilityConfig`).
    pub observability: ObservabilityConfig,
}

impl Default for StackConfig {
    fn default() -> Self {
        Self {
            name: "stackproof".to_owned(),
            region: None,
            tags: BTreeMap::new(),
            storage: StorageConfig::default(),
            network: NetworkConfig::default(),
            load_balancer: LoadBalancerConfig::default(),
            service: ComputeConfig::default(),
            observability: ObservabilityConfig::default(),
        }
    }
}

/// The region of a configuration that names none, when nothing else names one either.
pub const DEFAULT_REGION: &str = "eu-west-1";

/// Addresses AWS reserves in every subnet: the first four and the last (Amazon VPC, "Subnet
/// CIDR blocks").
const AWS_RESERVED_PER_SUBNET: u64 = 5;

/// A character IAM and S3 accept in tag keys and values (`[\p{L}\p{Z}\p{N}_.:/=+\-@]*`).
fn tag_char(c: char) -> bool {
    c.is_alphanumeric() || c == ' ' || "_.:/=+-@".contains(c)
}

/// AWS allows 50 tags a resource; stackproof uses 4 of them.
const MAX_USER_TAGS: usize = 46;

/// Keeps the checked value of one section, or records its problems.
fn section<T>(problems: &mut Problems, result: Result<T, Problems>) -> Option<T> {
    match result {
        Ok(spec) => Some(spec),
        Err(p) => {
            problems.merge(p);
            None
        }
    }
}

impl StackConfig {
    /// Parses `text`; `path` names the file in errors.
    pub fn from_toml(text: &str, path: &str) -> Result<Self, Error> {
        toml::from_str(text).map_err(|e| Error::Parse {
            path: path.to_owned(),
            message: e.to_string(),
        })
    }

    /// Reads and parses a file.
    pub fn load(path: &Path) -> Result<Self, Error> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| Error::Read {
            path: shown.clone(),
            source,
        })?;
        Self::from_toml(&text, &shown)
    }

    /// Checks everything, reporting every problem of every section at once.
    pub fn validate(&self) -> Result<Stack, Problems> {
        let mut problems = Problems::default();
        let name = StackName::new(&self.name)
            .map_err(|e| problems.add("name", format!("{:?}", e.value), e.allowed))
            .ok();
        let region = self.region.as_deref().unwrap_or(DEFAULT_REGION);
        let region_ok = {
            let parts: Vec<&str> = region.split('-').collect();
            parts.len() >= 3
                && parts.iter().all(|p| {
                    !p.is_empty()
                        && p.chars()
                            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
                })
                && parts
                    .last()
                    .is_some_and(|p| p.chars().all(|c| c.is_ascii_digit()))
        };
        if !region_ok {
            problems.add(
                "region",
                format!("{region:?}"),
                "an AWS region name such as \"eu-west-1\"",
            );
        }
        if self.tags.len() > MAX_USER_TAGS {
            problems.add(
                "tags",
                format!("{} tags", self.tags.len()),
                format!("at most {MAX_USER_TAGS} (AWS allows 50, stackproof uses 4)"),
            );
        }
        for (k, v) in &self.tags {
            if k.starts_with(infra::tags::RESERVED_PREFIX)
                || k.starts_with("aws:")
                || k == infra::tags::DISPLAY_NAME
            {
                problems.add(format!("tags.{k}"), format!("{v:?}"), "a key not starting with \"stackproof:\" or \"aws:\" and not \"Name\" (those are set by stackproof or AWS)");
            } else if k.is_empty() || k.chars().count() > 128 || v.chars().count() > 256 {
                problems.add(
                    format!("tags.{k}"),
                    format!("{v:?}"),
                    "a key of 1 to 128 characters and a value of at most 256",
                );
            } else if !k.chars().chain(v.chars()).all(tag_char) {
                problems.add(
                    format!("tags.{k}"),
                    format!("{v:?}"),
                    "a key and value of letters, digits, spaces and _ . : / = + - @ only (what IAM and S3 accept in tags; EC2 would take more, IAM and S3 refuse it after the rest exists)",
                );
            }
        }
        // A bad name is reported once, above, not again as the bucket name derived from it.
        let name_for_storage = name.as_ref().map_or("stackproof", |n| n.as_str());
        let storage = section(
            &mut problems,
            self.storage.validate(name_for_storage, region, "storage"),
        );
        let network = section(&mut problems, self.network.validate(region, "network"));
        if self.network.az_count < 2 && self.network.availability_zones.is_none() {
            problems.add(
                "network.az-count",
                self.network.az_count,
                "at least 2: an application load balancer needs subnets in two or more zones",
            );
        }
        let load_balancer = section(
            &mut problems,
            self.load_balancer.validate(region, "load-balancer"),
        );
        let service = section(&mut problems, self.service.validate("service"));
        let zones = self
            .network
            .availability_zones
            .as_ref()
            .map_or(usize::from(self.network.az_count), Vec::len);
        if let Some(n) = self.service.zone_count
            && n as usize > zones
        {
            problems.add(
                "service.zone-count",
                n,
                format!("1 to the network's zone count ({zones}); leave it out for all zones"),
            );
        }
        let observability = section(&mut problems, self.observability.validate());
        // Rules across sections that AWS would only enforce once other resources exist.
        let ports = &self.network.load_balancer_ingress.ports;
        if self.load_balancer.certificate_arn.is_some() && !ports.contains(&443) {
            problems.add(
                "network.load-balancer-ingress.ports",
                format!("{ports:?}"),
                "a list with 443: with load-balancer.certificate-arn the load balancer serves HTTPS on 443 (HTTP redirects there), so its security group must let clients in on 443",
            );
        }
        if let (Some(network), Some(service)) = (&network, &service) {
            let zones = service
                .zone_count
                .map_or(network.private_cidrs.len(), |n| n as usize);
            let free: u64 = network
                .private_cidrs
                .iter()
                .take(zones)
                .map(|net| {
                    (1u64 << (32 - u32::from(net.prefix_len())))
                        .saturating_sub(AWS_RESERVED_PER_SUBNET)
                })
                .sum();
            if u64::from(service.max_count) > free {
                problems.add(
                    "service.max-count",
                    service.max_count,
                    format!(
                        "at most {free}: each Fargate task takes one address of a private subnet, and the {zones} private subnets the tasks run in have {free} usable addresses (AWS reserves {AWS_RESERVED_PER_SUBNET} of each); or give larger private-subnet-cidrs"
                    ),
                );
            }
        }
        match (
            name,
            storage,
            network,
            load_balancer,
            service,
            observability,
        ) {
            (
                Some(name),
                Some(storage),
                Some(network),
                Some(load_balancer),
                Some(service),
                Some(observability),
            ) if problems.0.is_empty() => Ok(Stack {
                name,
                region: region.to_owned(),
                tags: self.tags.clone(),
                storage,
                network,
                load_balancer,
                service,
                observability,
            }),
            _ => Err(problems),
        }
    }
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
        self.network.task_port
    }

    /// The CPU architecture of the tasks (`[service] cpu-architecture`).
    pub fn cpu_architecture(&self) -> compute::CpuArchitecture {
        self.service.cpu_architecture
    }

    /// The tag of the stack's own repository (`repository_uri`) that the task definition
    /// names: [`DEFAULT_IMAGE_TAG`] unless `[service] image` says otherwise; `None` when the
    /// image lives elsewhere (a public image, another repository), which deploy never pushes.
    pub fn own_image_tag(&self, repository_uri: &str) -> Option<String> {
        match &self.service.image {
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
        }
    }

    fn lb_inputs(&self, net: &NetworkOutputs, storage: &StorageOutputs) -> LoadBalancerInputs {
        LoadBalancerInputs {
            vpc_id: net.vpc_id.clone(),
            zones: net.zones.clone(),
            public_subnet_ids: net.public_subnet_ids.clone(),
            security_group_id: net.load_balancer_security_group_id.clone(),
            target_port: self.network.task_port,
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
    ) -> ComputeInputs {
        ComputeInputs {
            private_subnet_ids: net.private_subnet_ids.clone(),
            task_security_group_id: net.task_security_group_id.clone(),
            target_group_arn: lb.target_group_arn.clone(),
            load_balancer_arn_suffix: lb.arn_suffix.clone(),
            target_group_arn_suffix: lb.target_group_arn_suffix.clone(),
            container_port: self.network.task_port,
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
        let zones: Vec<String> = match &self.network.zones {
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
            vpc_cidr: self.network.vpc_cidr.to_string(),
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
        let m = self.modules(cx);
        // Each module reads the account once for both its plan and its outputs.
        let ((storage_plan, storage_out), (network_plan, network_out)) = tokio::try_join!(
            async { m.storage.plan_and_outputs(cx).await.map_err(Error::from) },
            async { m.network.plan_and_outputs(cx).await.map_err(Error::from) },
        )?;
        let storage_out = storage_out.unwrap_or_else(|| self.placeholder_storage());
        let network_out = network_out.unwrap_or_else(|| self.placeholder_network());
        let lb_inputs = self.lb_inputs(&network_out, &storage_out);
        let (lb_plan, lb_out) = m.load_balancer.plan_and_outputs(cx, &lb_inputs).await?;
        let lb_out = lb_out.unwrap_or_else(|| self.placeholder_lb());
        let compute_inputs = self.compute_inputs(&network_out, &storage_out, &lb_out);
        let obs_inputs = self.observability_inputs(&network_out, &lb_out);
        let (compute_plan, obs_plan) = tokio::try_join!(
            async {
                m.compute
                    .plan(cx, &compute_inputs)
                    .await
                    .map_err(Error::from)
            },
            async {
                m.observability
                    .plan(cx, &obs_inputs)
                    .await
                    .map_err(Error::from)
            },
        )?;
        let mut plan = storage_plan;
        for part in [network_plan, lb_plan, compute_plan, obs_plan] {
            plan.extend(part);
        }
        Ok(plan)
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
        // Observability's outputs are names derived from the stack; apply reports them exactly.
        let obs_inputs = self.observability_inputs(&network, &load_balancer);
        let stack = self.name.as_str();
        let mut alarm_names = vec![format!("{stack}-5xx-rate"), format!("{stack}-latency-p99")];
        alarm_names.extend(
            obs_inputs
                .zones
                .iter()
                .map(|z| format!("{stack}-unhealthy-hosts-{z}")),
        );
        Ok(Some(StackOutputs {
            stack: stack.to_owned(),
            region: self.region.clone(),
            storage,
            network,
            load_balancer,
            compute,
            observability: ObservabilityOutputs {
                dashboard_name: stack.to_owned(),
                alarm_names,
                topic_arn: None,
                check_namespace: observability::check_namespace(stack),
            },
        }))
    }

    /// What `destroy` would delete, in the order destroy deletes it. Reads only.
    pub async fn plan_destroy(&self, cx: &Context) -> Result<Plan, Error> {
        let m = self.modules(cx);
        let (obs, compute, lb, network, storage) = tokio::try_join!(
            async { m.observability.plan_destroy(cx).await.map_err(Error::from) },
            async { m.compute.plan_destroy(cx).await.map_err(Error::from) },
            async { m.load_balancer.plan_destroy(cx).await.map_err(Error::from) },
            async { m.network.plan_destroy(cx).await.map_err(Error::from) },
            async { m.storage.plan_destroy(cx).await.map_err(Error::from) },
        )?;
        let mut plan = obs;
        for part in [compute, lb, network, storage] {
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
        let (obs, compute) = tokio::join!(
            async { m.observability.destroy(cx).await.map_err(Error::from) },
            async { m.compute.destroy(cx).await.map_err(Error::from) },
        );
        let (obs, compute) = (obs?, compute?);
        let lb = m.load_balancer.destroy(cx).await?;
        let (network, storage) = tokio::join!(
            async { m.network.destroy(cx).await.map_err(Error::from) },
            async { m.storage.destroy(cx).await.map_err(Error::from) },
        );
        let (network, storage) = (network?, storage?);
        let mut plan = obs;
        for part in [compute, lb, network, storage] {
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

    /// Cuts one zone off (its subnets move to a deny-all network ACL), as AWS FIS does.
    pub async fn isolate_zone(&self, cx: &Context, zone: &str) -> Result<(), Error> {
        self.modules(cx).network.isolate_zone(cx, zone).await?;
        Ok(())
    }

    /// Heals a zone cut off by [`Stack::isolate_zone`].
    pub async fn restore_zone(&self, cx: &Context, zone: &str) -> Result<(), Error> {
        self.modules(cx).network.restore_zone(cx, zone).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_file_is_the_default_stack() {
        let stack = StackConfig::from_toml("", "stack.toml")
            .unwrap()
            .validate()
            .unwrap();
        assert_eq!(stack.name().as_str(), "stackproof");
        assert_eq!(stack.region(), "eu-west-1");
    }

    #[test]
    fn deploy_pushes_only_tags_of_the_stack_s_own_repository() {
        let repo = "123456789012.dkr.ecr.eu-west-1.amazonaws.com/web/sample-app";
        let with_image = |image: &str| {
            let text = format!("[service]\nimage = \"{image}\"\n");
            StackConfig::from_toml(&text, "stack.toml")
                .unwrap()
                .validate()
                .unwrap()
        };
        let default = StackConfig::from_toml("", "stack.toml")
            .unwrap()
            .validate()
            .unwrap();
        assert_eq!(default.own_image_tag(repo).as_deref(), Some("latest"));
        assert_eq!(
            with_image(&format!("{repo}:v7"))
                .own_image_tag(repo)
                .as_deref(),
            Some("v7")
        );
        // Another repository, a public image, a digest, a longer name with the same prefix.
        for other in [
            "public.ecr.aws/nginx/nginx:1.27".to_owned(),
            format!("{repo}@sha256:{}", "0".repeat(64)),
            format!("{repo}-other:latest"),
        ] {
            assert_eq!(with_image(&other).own_image_tag(repo), None, "{other}");
        }
    }

    #[test]
    fn unknown_keys_name_the_key_the_file_and_the_line() {
        let err = StackConfig::from_toml(
            "name = \"web\"\n\n[network]\nvpc-cidr = \"10.0.0.0/16\"\nnats = \"single\"\n",
            "stack.toml",
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.starts_with("stack.toml: TOML parse error at line 5"),
            "{err}"
        );
        assert!(err.contains("unknown field `nats`"), "{err}");
    }

    #[test]
    fn every_problem_of_every_section_at_once() {
        let text = r#"
            name = "Web_1"
            region = "mars"
            [tags]
            "stackproof:stack" = "other"
            team = "web"
            [network]
            vpc-cidr = "10.0.0.0/8"
            az-count = 9
        "#;
        let problems = StackConfig::from_toml(text, "stack.toml")
            .unwrap()
            .validate()
            .unwrap_err();
        let fields: Vec<&str> = problems.0.iter().map(|p| p.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "name",
                "region",
                "tags.stackproof:stack",
                "network.vpc-cidr",
                "network.az-count"
            ],
            "{problems}"
        );
        assert!(
            problems
                .to_string()
                .starts_with("5 configuration problems:")
        );
    }
}

#[cfg(test)]
mod zones {
    use super::*;

    #[test]
    fn the_service_runs_in_at_most_the_network_s_zones() {
        let problems = StackConfig::from_toml("[service]\nzone-count = 3\n", "stack.toml")
            .unwrap()
            .validate()
            .unwrap_err();
        assert_eq!(problems.0.len(), 1, "{problems}");
        assert_eq!(problems.0[0].field, "service.zone-count");
        assert!(
            problems.to_string().contains("zone count (2)"),
            "{problems}"
        );

        let problems = StackConfig::from_toml("[service]\nzone-count = 0\n", "stack.toml")
            .unwrap()
            .validate()
            .unwrap_err();
        assert_eq!(problems.0[0].field, "service.zone-count", "{problems}");

        let text = "[network]\naz-count = 3\n[service]\nzone-count = 1\n";
        let stack = StackConfig::from_toml(text, "stack.toml")
            .unwrap()
            .validate()
            .unwrap();
        assert_eq!(stack.service.zone_count, Some(1));
    }
}

/// Inputs that pass each section's own checks and that AWS would refuse only after other
/// resources of the stack exist: each is caught before any call.
#[cfg(test)]
mod fails_late_on_aws {
    use super::*;

    fn problems(text: &str) -> Vec<String> {
        match StackConfig::from_toml(text, "stack.toml")
            .unwrap()
            .validate()
        {
            Ok(_) => Vec::new(),
            Err(p) => p.0.iter().map(ToString::to_string).collect(),
        }
    }

    #[test]
    fn names_ecr_or_the_load_balancer_refuse() {
        for name in ["web--1", "internal", "internal-web"] {
            let found = problems(&format!("name = \"{name}\"\n"));
            assert_eq!(found.len(), 1, "{found:#?}");
            assert!(
                found[0].starts_with(&format!("name = \"{name}\": a name ")),
                "{found:#?}"
            );
        }
        assert!(problems("name = \"internalweb\"\n").is_empty());
    }

    #[test]
    fn https_needs_443_in_the_ingress() {
        let text = "[load-balancer]\ncertificate-arn = \"arn:aws:acm:eu-west-1:123456789012:certificate/abc\"\n[network.load-balancer-ingress]\nports = [80]\n";
        assert_eq!(
            problems(text),
            [
                "network.load-balancer-ingress.ports = [80]: a list with 443: with load-balancer.certificate-arn the load balancer serves HTTPS on 443 (HTTP redirects there), so its security group must let clients in on 443"
            ]
        );
        assert!(problems(&text.replace("[80]", "[80, 443]")).is_empty());
    }

    #[test]
    fn more_tasks_than_the_private_subnets_hold() {
        // Two /28 private subnets: 16 - 5 = 11 usable addresses each.
        let text = "[network]\nprivate-subnet-cidrs = [\"10.0.128.0/28\", \"10.0.144.0/28\"]\n[service]\nmax-count = 23\n";
        let found = problems(text);
        assert_eq!(found.len(), 1, "{found:#?}");
        assert!(
            found[0].starts_with("service.max-count = 23: at most 22: "),
            "{found:#?}"
        );
        assert!(problems(&text.replace("23", "22")).is_empty());
        // Tasks in one zone have one subnet's addresses.
        let one_zone = text.replace("max-count = 23", "max-count = 12\nzone-count = 1");
        assert!(
            problems(&one_zone)[0].starts_with("service.max-count = 12: at most 11: "),
            "{:#?}",
            problems(&one_zone)
        );
    }

    #[test]
    fn tag_characters_iam_and_s3_refuse() {
        let found = problems("[tags]\nowner = \"ana<admin>\"\n");
        assert_eq!(found.len(), 1, "{found:#?}");
        assert!(
            found[0].starts_with("tags.owner = \"ana<admin>\": a key and value of letters"),
            "{found:#?}"
        );
        assert!(
            problems("[tags]\n\"cost:centre\" = \"Équipe web / 42 + ops@x=y_z.\"\n").is_empty()
        );
    }
}

#[cfg(test)]
mod readme {
    use super::*;

    /// The `stack.toml` shown in README.md parses, and apart from its example tag it is exactly
    /// the defaults: the README tells the truth about every key and default.
    #[test]
    fn the_readme_example_is_the_defaults() {
        let readme = include_str!("../../../README.md");
        let start = readme
            .find("## stack.toml")
            .and_then(|at| {
                readme[at..]
                    .find("```toml")
                    .map(|s| at + s + "```toml".len())
            })
            .unwrap();
        let end = start + readme[start..].find("```").unwrap();
        let mut config = StackConfig::from_toml(&readme[start..end], "README.md").unwrap();
        assert_eq!(config.tags.remove("team").as_deref(), Some("web"));
        assert_eq!(config, StackConfig::default());
        config.validate().unwrap();
    }
}
