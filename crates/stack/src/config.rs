//! `stack.toml`: [`StackConfig`], what users write, and its check as a whole into a [`Stack`]
//! (every section's own checks, then what only the whole stack can tell: zones, names AWS
//! refuses, tasks the subnets can hold, tag characters), every problem at once.

use std::collections::BTreeMap;
use std::path::Path;

use compute::{ComputeConfig, ComputeSpec};
use data::{CacheConfig, DatabaseConfig};
use infra::{Config, Problems, Scope, StackName};
use network::{LoadBalancerConfig, NetworkConfig, NetworkSpec};
use observability::ObservabilityConfig;
use serde::{Deserialize, Serialize};
use storage::StorageConfig;

use crate::{Error, Stack};

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
    /// The database (see `data::DatabaseConfig`): none unless the table is there.
    pub database: Option<DatabaseConfig>,
    /// The cache (see `data::CacheConfig`): none unless the table is there.
    pub cache: Option<CacheConfig>,
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
            database: None,
            cache: None,
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
/// Checks the module configuration of `[table]`, adding its problems named inside the table.
fn section<C: Config>(
    problems: &mut Problems,
    table: &str,
    config: &C,
    scope: &Scope<'_>,
) -> Option<C::Spec> {
    match config.validate(scope) {
        Ok(spec) => Some(spec),
        Err(p) => {
            problems.merge(p.within(table));
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
        self.check_region_and_tags(region, &mut problems);
        // A bad name is reported once, above, not again as the bucket name derived from it.
        let name_for_storage = name.as_ref().map_or("stackproof", |n| n.as_str());
        let scope = Scope::new(name_for_storage, region);
        let storage = section(&mut problems, "storage", &self.storage, &scope);
        let network = section(&mut problems, "network", &self.network, &scope);
        if self.network.az_count < 2 && self.network.availability_zones.is_none() {
            problems.add(
                "network.az-count",
                self.network.az_count,
                "at least 2: an application load balancer needs subnets in two or more zones",
            );
        }
        let load_balancer = section(&mut problems, "load-balancer", &self.load_balancer, &scope);
        let service = section(&mut problems, "service", &self.service, &scope);
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
        let observability = section(&mut problems, "observability", &self.observability, &scope);
        let database = self
            .database
            .as_ref()
            .map(|d| section(&mut problems, "database", d, &scope));
        let cache = self
            .cache
            .as_ref()
            .map(|c| section(&mut problems, "cache", c, &scope));
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
            check_addresses(network, service, &mut problems);
        }
        if let Some(Some(db)) = &database
            && db.deployment() == data::Deployment::Cluster
            && zones < 3
        {
            problems.add(
                if self.network.availability_zones.is_some() {
                    "network.availability-zones (count)"
                } else {
                    "network.az-count"
                },
                zones,
                "3 with database.deployment = \"cluster\": a Multi-AZ DB cluster puts its writer and two readable standbys in three zones (RDS needs a DB subnet group over three)",
            );
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
                database: database.flatten(),
                cache: cache.flatten(),
            }),
            _ => Err(problems),
        }
    }

    /// `region` (the shape of an AWS region name) and `tags` (count, reserved keys,
    /// characters IAM and S3 accept).
    fn check_region_and_tags(&self, region: &str, problems: &mut Problems) {
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
    }
}

/// The tasks fit in the private subnets they run in: one address each.
fn check_addresses(network: &NetworkSpec, service: &ComputeSpec, problems: &mut Problems) {
    let zones = service
        .zone_count()
        .map_or(network.private_cidrs().len(), |n| n as usize);
    let free: u64 = network
        .private_cidrs()
        .iter()
        .take(zones)
        .map(|net| {
            (1u64 << (32 - u32::from(net.prefix_len()))).saturating_sub(AWS_RESERVED_PER_SUBNET)
        })
        .sum();
    if u64::from(service.max_count()) > free {
        problems.add(
            "service.max-count",
            service.max_count(),
            format!(
                "at most {free}: each Fargate task takes one address of a private subnet, and the {zones} private subnets the tasks run in have {free} usable addresses (AWS reserves {AWS_RESERVED_PER_SUBNET} of each); or give larger private-subnet-cidrs"
            ),
        );
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
    fn a_multi_az_db_cluster_needs_three_zones_before_any_call() {
        let cluster = "[database]\ndeployment = \"cluster\"\ninstance-class = \"db.m6gd.large\"\n";
        let err = StackConfig::from_toml(cluster, "stack.toml")
            .unwrap()
            .validate()
            .unwrap_err()
            .to_string();
        assert!(err.contains("network.az-count = 2"), "{err}");
        assert!(err.contains("three zones"), "{err}");
        let three = format!("[network]\naz-count = 3\n{cluster}");
        let stack = StackConfig::from_toml(&three, "stack.toml")
            .unwrap()
            .validate()
            .unwrap();
        assert_eq!(
            stack.database.map(|d| d.deployment()),
            Some(data::Deployment::Cluster)
        );
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
        assert_eq!(stack.service.zone_count(), Some(1));
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
