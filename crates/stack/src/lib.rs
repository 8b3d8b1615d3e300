//! The seeds' web stack: one `stack.toml`, checked as a whole, wired module by module.
//!
//! [`StackConfig`] is what users write (every field has a documented default, unknown keys
//! are errors naming the key and line); [`StackConfig::validate`] turns it into a [`Stack`] or
//! reports every problem at once, before any AWS call. [`Stack`] runs the modules in
//! dependency order. Today that is the network; storage, compute and observability follow.
//!
//! ```
//! let config = stack::StackConfig::from_toml("name = \"web\"\n[network]\naz-count = 3\n", "stack.toml")?;
//! let stack = config.validate()?;
//! assert_eq!(stack.name().as_str(), "web");
//! Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::collections::BTreeMap;
use std::path::Path;

use infra::{Context, Module, Plan, Problems, StackName};
use network::{Network, NetworkConfig, NetworkOutputs, NetworkSpec};
use serde::{Deserialize, Serialize};

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
    /// The network module failed.
    #[error("network: {0}")]
    Network(#[from] network::Error),
}

/// The whole `stack.toml`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct StackConfig {
    /// The stack's name: 1-24 of a-z, 0-9 and '-', starting with a letter. It tags every
    /// resource and prefixes resource names. Default `"stackproof"`.
    pub name: String,
    /// The AWS region. Default `"eu-west-1"`.
    pub region: String,
    /// Tags for every resource, besides stackproof's own (`stackproof:*` keys are reserved).
    /// Default: none.
    pub tags: BTreeMap<String, String>,
    /// The network (see `network::NetworkConfig`).
    pub network: NetworkConfig,
}

impl Default for StackConfig {
    fn default() -> Self {
        Self {
            name: "stackproof".to_owned(),
            region: "eu-west-1".to_owned(),
            tags: BTreeMap::new(),
            network: NetworkConfig::default(),
        }
    }
}

/// AWS allows 50 tags a resource; stackproof uses 4 of them.
const MAX_USER_TAGS: usize = 46;

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

    /// Checks everything, reporting every problem at once.
    pub fn validate(&self) -> Result<Stack, Problems> {
        let mut problems = Problems::default();
        let name = StackName::new(&self.name)
            .map_err(|e| {
                problems.add(
                    "name",
                    format!("{:?}", e.value),
                    "1 to 24 of a-z, 0-9 and '-', starting with a letter, not ending with '-'",
                )
            })
            .ok();
        let region_ok = {
            let parts: Vec<&str> = self.region.split('-').collect();
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
                format!("{:?}", self.region),
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
            }
        }
        let network = match self.network.validate(&self.region, "network") {
            Ok(spec) => Some(spec),
            Err(p) => {
                problems.merge(p);
                None
            }
        };
        match (name, network) {
            (Some(name), Some(network)) if problems.0.is_empty() => Ok(Stack {
                name,
                region: self.region.clone(),
                tags: self.tags.clone(),
                network,
            }),
            _ => Err(problems),
        }
    }
}

/// A checked stack configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stack {
    name: StackName,
    region: String,
    tags: BTreeMap<String, String>,
    network: NetworkSpec,
}

/// Everything the stack gives its user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StackOutputs {
    /// The stack's name.
    pub stack: String,
    /// The region.
    pub region: String,
    /// The network's outputs.
    pub network: NetworkOutputs,
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

    fn network(&self, cx: &Context) -> Network {
        Network::new(cx, self.network.clone())
    }

    /// What `apply` would change, module by module. Reads only.
    pub async fn plan(&self, cx: &Context) -> Result<Plan, Error> {
        Ok(self.network(cx).plan(cx, &()).await?)
    }

    /// Converges every module, in dependency order, and returns the outputs.
    pub async fn apply(&self, cx: &Context) -> Result<StackOutputs, Error> {
        let network = self.network(cx).apply(cx, &()).await?;
        Ok(StackOutputs {
            stack: self.name.to_string(),
            region: self.region.clone(),
            network,
        })
    }

    /// The outputs of what is deployed, or `None` when nothing is. Reads only.
    pub async fn outputs(&self, cx: &Context) -> Result<Option<StackOutputs>, Error> {
        let network = self.network(cx).outputs(cx).await?;
        Ok(network.map(|network| StackOutputs {
            stack: self.name.to_string(),
            region: self.region.clone(),
            network,
        }))
    }

    /// What `destroy` would delete, in reverse dependency order. Reads only.
    pub async fn plan_destroy(&self, cx: &Context) -> Result<Plan, Error> {
        Ok(self.network(cx).plan_destroy(cx).await?)
    }

    /// Deletes everything tagged with the stack, in reverse dependency order.
    pub async fn destroy(&self, cx: &Context) -> Result<Plan, Error> {
        Ok(self.network(cx).destroy(cx).await?)
    }

    /// The isolation state of every zone.
    pub async fn zone_isolation(&self, cx: &Context) -> Result<Vec<network::ZoneIsolation>, Error> {
        Ok(self.network(cx).zone_isolation(cx).await?)
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
