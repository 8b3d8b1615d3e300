//! The `[database]` table users write, and the checked [`DatabaseSpec`] it becomes.

use infra::{Config, Problems, Scope};
use serde::{Deserialize, Serialize};

/// PostgreSQL major versions RDS offers that this module accepts.
pub const ENGINE_VERSIONS: std::ops::RangeInclusive<u32> = 13..=17;

/// How RDS runs the database: what a zone's loss costs, and in how long it fails over.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Deployment {
    /// A DB instance: a primary and, when Multi-AZ, one synchronous standby in another zone
    /// that takes no traffic; RDS fails over to it in 60-120 s.
    #[default]
    Instance,
    /// A Multi-AZ DB cluster: a writer and two readable standbys, one in each of three zones;
    /// a commit waits for one of the two; RDS fails over in under 35 s. Needs three zones.
    Cluster,
}

impl Deployment {
    /// How plans name the resource: `db-instance` or `db-cluster`.
    pub fn kind(self) -> &'static str {
        match self {
            Deployment::Instance => "db-instance",
            Deployment::Cluster => "db-cluster",
        }
    }

    /// How errors and waits name it: `DB instance` or `DB cluster`.
    pub fn noun(self) -> &'static str {
        match self {
            Deployment::Instance => "DB instance",
            Deployment::Cluster => "DB cluster",
        }
    }
}

impl std::fmt::Display for Deployment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Deployment::Instance => "instance",
            Deployment::Cluster => "cluster",
        })
    }
}

/// The `[database]` table of `stack.toml`: an RDS PostgreSQL DB instance or Multi-AZ DB
/// cluster in the private subnets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct DatabaseConfig {
    /// `instance` (a DB instance, Multi-AZ or not) or `cluster` (a Multi-AZ DB cluster: a
    /// writer and two readable standbys over three zones, failing over in under 35 s; needs
    /// `[network] az-count = 3` and a class RDS offers for it, such as `db.m6gd.large`).
    /// Default `instance`.
    pub deployment: Deployment,
    /// PostgreSQL major version, 13 to 17. Default 16.
    pub engine_version: u32,
    /// The DB instance class (`db.` and a family and size) of the instance, or of each of the
    /// cluster's three. Default `db.t4g.micro`.
    pub instance_class: String,
    /// Storage in GiB (gp3), 20 to 65,536; it can grow in place, never shrink. Default 20.
    pub allocated_storage: u32,
    /// A standby in another zone, synchronously replicated; RDS fails over to it in 60-120 s
    /// when the primary's zone is lost. Default true; a cluster is always Multi-AZ.
    pub multi_az: bool,
    /// RDS refuses to delete the database, and so does destroy. Default true.
    pub deletion_protection: bool,
    /// Destroy deletes the database without a final snapshot. Default false: a snapshot
    /// `{stack}-db-final-{unix-seconds}` is kept.
    pub skip_final_snapshot: bool,
    /// Days of automated backups (point-in-time recovery), 1 to 35. Default 7.
    pub backup_retention_days: u32,
    /// The database created in the instance. Default `app`.
    pub database_name: String,
    /// The master user; its password is generated and kept by RDS in Secrets Manager. Default
    /// `app`.
    pub master_username: String,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self {
            deployment: Deployment::Instance,
            engine_version: 16,
            instance_class: "db.t4g.micro".to_owned(),
            allocated_storage: 20,
            multi_az: true,
            deletion_protection: true,
            skip_final_snapshot: false,
            backup_retention_days: 7,
            database_name: "app".to_owned(),
            master_username: "app".to_owned(),
        }
    }
}

/// A checked `[database]` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatabaseSpec {
    pub(crate) deployment: Deployment,
    pub(crate) engine_version: u32,
    pub(crate) instance_class: String,
    pub(crate) allocated_storage: i32,
    pub(crate) multi_az: bool,
    pub(crate) deletion_protection: bool,
    pub(crate) skip_final_snapshot: bool,
    pub(crate) backup_retention_days: i32,
    pub(crate) database_name: String,
    pub(crate) master_username: String,
}

impl DatabaseSpec {
    /// The database the instance is created with.
    pub fn database_name(&self) -> &str {
        &self.database_name
    }

    /// The master user.
    pub fn master_username(&self) -> &str {
        &self.master_username
    }

    /// Whether a standby runs in another zone.
    pub fn multi_az(&self) -> bool {
        self.multi_az
    }

    /// A DB instance or a Multi-AZ DB cluster.
    pub fn deployment(&self) -> Deployment {
        self.deployment
    }
}

/// Whether `name` is `{prefix}.{family}.{size}` in lowercase letters and digits
/// (`db.t4g.micro`, `cache.r7g.large`): the shape of RDS's instance classes and ElastiCache's
/// node types.
pub(crate) fn class_name_ok(prefix: &str, name: &str) -> bool {
    name.strip_prefix(prefix)
        .and_then(|rest| rest.strip_prefix('.'))
        .and_then(|rest| rest.split_once('.'))
        .is_some_and(|(family, size)| {
            !family.is_empty()
                && !size.is_empty()
                && family
                    .chars()
                    .chain(size.chars())
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        })
}

/// PostgreSQL identifiers RDS accepts for a database or user name: 1 to 63 letters, digits and
/// `_`, starting with a letter.
fn identifier_problem(name: &str) -> Option<&'static str> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name.starts_with(|c: char| c.is_ascii_alphabetic())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    (!ok).then_some("1 to 63 letters, digits and '_', starting with a letter")
}

impl Config for DatabaseConfig {
    type Spec = DatabaseSpec;

    /// Every problem at once, each named as `[database]` names it (`instance-class`).
    fn validate(&self, _scope: &Scope<'_>) -> Result<DatabaseSpec, Problems> {
        let mut p = Problems::default();
        if !ENGINE_VERSIONS.contains(&self.engine_version) {
            p.add(
                "engine-version",
                self.engine_version,
                format!(
                    "a PostgreSQL major version RDS offers, {} to {}",
                    ENGINE_VERSIONS.start(),
                    ENGINE_VERSIONS.end()
                ),
            );
        }
        let class_ok = class_name_ok("db", &self.instance_class);
        if !class_ok {
            p.add(
                "instance-class",
                format!("{:?}", self.instance_class),
                "a DB instance class such as db.t4g.micro or db.m7g.large",
            );
        }
        if !(20..=65_536).contains(&self.allocated_storage) {
            p.add(
                "allocated-storage",
                self.allocated_storage,
                "20 to 65536 GiB (gp3)",
            );
        }
        if self.deployment == Deployment::Cluster && !self.multi_az {
            p.add(
                "multi-az",
                self.multi_az,
                "true with deployment = \"cluster\" (a Multi-AZ DB cluster always has standbys in two other zones); for a Single-AZ database use deployment = \"instance\"",
            );
        }
        if !(1..=35).contains(&self.backup_retention_days) {
            p.add(
                "backup-retention-days",
                self.backup_retention_days,
                "1 to 35 days (0, no backups, is not offered: Multi-AZ and point-in-time recovery need them)",
            );
        }
        if let Some(rule) = identifier_problem(&self.database_name) {
            p.add("database-name", format!("{:?}", self.database_name), rule);
        }
        if let Some(rule) = identifier_problem(&self.master_username) {
            p.add(
                "master-username",
                format!("{:?}", self.master_username),
                rule,
            );
        } else if ["rdsadmin", "postgres"]
            .contains(&self.master_username.to_ascii_lowercase().as_str())
        {
            p.add(
                "master-username",
                format!("{:?}", self.master_username),
                "a name other than rdsadmin or postgres (reserved by RDS and PostgreSQL)",
            );
        }
        p.into_result(DatabaseSpec {
            deployment: self.deployment,
            engine_version: self.engine_version,
            instance_class: self.instance_class.clone(),
            allocated_storage: i32::try_from(self.allocated_storage).unwrap_or(i32::MAX),
            multi_az: self.multi_az,
            deletion_protection: self.deletion_protection,
            skip_final_snapshot: self.skip_final_snapshot,
            backup_retention_days: i32::try_from(self.backup_retention_days).unwrap_or(35),
            database_name: self.database_name.clone(),
            master_username: self.master_username.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_are_valid_and_every_bad_field_is_named() {
        let scope = Scope::new("demo", "eu-west-1");
        let spec = DatabaseConfig::default().validate(&scope).unwrap();
        assert!(spec.multi_az && spec.deletion_protection);
        let bad: DatabaseConfig = toml::from_str(
            r#"
            engine-version = 12
            instance-class = "t4g.micro"
            allocated-storage = 10
            backup-retention-days = 0
            database-name = "1app"
            master-username = "postgres"
            deployment = "cluster"
            multi-az = false
            "#,
        )
        .unwrap();
        let text = bad.validate(&scope).unwrap_err().to_string();
        for field in [
            "engine-version = 12",
            "instance-class = \"t4g.micro\"",
            "allocated-storage = 10",
            "backup-retention-days = 0",
            "database-name = \"1app\"",
            "master-username = \"postgres\"",
            "multi-az = false",
        ] {
            assert!(text.contains(field), "{field}: {text}");
        }
        let cluster: DatabaseConfig = toml::from_str("deployment = \"cluster\"\n").unwrap();
        let spec = cluster.validate(&scope).unwrap();
        assert_eq!(spec.deployment(), Deployment::Cluster);
        let wrong = toml::from_str::<DatabaseConfig>("deployment = \"aurora\"\n").unwrap_err();
        assert!(wrong.to_string().contains("instance"), "{wrong}");
        let unknown = toml::from_str::<DatabaseConfig>("multi_az = true\n").unwrap_err();
        assert!(unknown.to_string().contains("multi_az"), "{unknown}");
    }
}
