//! The `[cache]` table users write, and the checked [`CacheSpec`] it becomes.

use infra::{Config, Problems, Scope};
use serde::{Deserialize, Serialize};

/// Redis OSS versions ElastiCache offers that this module accepts.
pub const CACHE_ENGINE_VERSIONS: [&str; 3] = ["6.2", "7.0", "7.1"];

/// The longest replication group id ElastiCache accepts.
const GROUP_ID_MAX: usize = 40;

/// The `[cache]` table of `stack.toml`: an ElastiCache Redis OSS replication group (cluster mode
/// disabled) in the private subnets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct CacheConfig {
    /// Redis OSS version a new group is made with: 6.2, 7.0 or 7.1. Default 7.1. Upgrades are
    /// not made by stackproof (ElastiCache does not report a group's version on the group).
    pub engine_version: String,
    /// The node type (`cache.` and a family and size). Default `cache.t4g.micro`.
    pub node_type: String,
    /// Read replicas beside the primary, 0 to 5; each in the next zone. Default 1.
    pub replicas: u32,
    /// Automatic failover to a replica in another zone (ElastiCache Multi-AZ); needs a
    /// replica. Default true.
    pub multi_az: bool,
    /// TLS between the tasks and the cache (ElastiCache's encryption in transit). Default
    /// true. At-rest encryption is always on.
    pub transit_encryption: bool,
    /// Days of automatic snapshots, 0 (none) to 35. Default 1.
    pub snapshot_retention_days: u32,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            engine_version: "7.1".to_owned(),
            node_type: "cache.t4g.micro".to_owned(),
            replicas: 1,
            multi_az: true,
            transit_encryption: true,
            snapshot_retention_days: 1,
        }
    }
}

/// A checked `[cache]` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheSpec {
    pub(crate) engine_version: String,
    pub(crate) node_type: String,
    pub(crate) replicas: i32,
    pub(crate) multi_az: bool,
    pub(crate) transit_encryption: bool,
    pub(crate) snapshot_retention_days: i32,
}

impl CacheSpec {
    /// Whether a replica in another zone takes over automatically.
    pub fn multi_az(&self) -> bool {
        self.multi_az
    }

    /// Whether clients speak TLS.
    pub fn transit_encryption(&self) -> bool {
        self.transit_encryption
    }
}

impl Config for CacheConfig {
    type Spec = CacheSpec;

    /// Every problem at once, each named as `[cache]` names it (`node-type`).
    fn validate(&self, scope: &Scope<'_>) -> Result<CacheSpec, Problems> {
        let mut p = Problems::default();
        if !CACHE_ENGINE_VERSIONS.contains(&self.engine_version.as_str()) {
            p.add(
                "engine-version",
                format!("{:?}", self.engine_version),
                format!(
                    "a Redis OSS version ElastiCache offers: {}",
                    CACHE_ENGINE_VERSIONS.join(", ")
                ),
            );
        }
        let type_ok = crate::config::class_name_ok("cache", &self.node_type);
        if !type_ok {
            p.add(
                "node-type",
                format!("{:?}", self.node_type),
                "a cache node type such as cache.t4g.micro or cache.r7g.large",
            );
        }
        if self.replicas > 5 {
            p.add("replicas", self.replicas, "0 to 5 read replicas");
        }
        if self.multi_az && self.replicas == 0 {
            p.add(
                "multi-az",
                true,
                "false, or at least one replica (replicas = 1): failover needs a replica to promote",
            );
        }
        if self.snapshot_retention_days > 35 {
            p.add(
                "snapshot-retention-days",
                self.snapshot_retention_days,
                "0 to 35 days",
            );
        }
        let id = crate::cache::group_id(scope.stack());
        if id.len() > GROUP_ID_MAX {
            p.add(
                "replication group",
                format!("{id:?}"),
                format!("a stack name short enough that {{stack}}-cache is at most {GROUP_ID_MAX} characters"),
            );
        }
        p.into_result(CacheSpec {
            engine_version: self.engine_version.clone(),
            node_type: self.node_type.clone(),
            replicas: i32::try_from(self.replicas).unwrap_or(5),
            multi_az: self.multi_az,
            transit_encryption: self.transit_encryption,
            snapshot_retention_days: i32::try_from(self.snapshot_retention_days).unwrap_or(35),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_are_valid_and_every_bad_field_is_named() {
        let scope = Scope::new("demo", "eu-west-1");
        let spec = CacheConfig::default().validate(&scope).unwrap();
        assert!(spec.multi_az && spec.transit_encryption && spec.replicas == 1);
        let bad: CacheConfig = toml::from_str(
            r#"
            engine-version = "5.0"
            node-type = "t4g.micro"
            replicas = 0
            snapshot-retention-days = 36
            "#,
        )
        .unwrap();
        let long = Scope::new("a-stack-name-that-is-far-too-long-for-it", "eu-west-1");
        let text = bad.validate(&long).unwrap_err().to_string();
        for field in [
            "engine-version = \"5.0\"",
            "node-type = \"t4g.micro\"",
            "multi-az = true",
            "snapshot-retention-days = 36",
            "replication group = \"a-stack-name-that-is-far-too-long-for-it-cache\"",
        ] {
            assert!(text.contains(field), "{field}: {text}");
        }
        let unknown = toml::from_str::<CacheConfig>("multi_az = true\n").unwrap_err();
        assert!(unknown.to_string().contains("multi_az"), "{unknown}");
    }
}
