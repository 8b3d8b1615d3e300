//! The compute configuration: the `[service]` table users write, and the checked
//! [`ComputeSpec`] it becomes.

use std::collections::BTreeMap;

use infra::{Problems, Scope};

use crate::Secret;
use serde::{Deserialize, Serialize};

/// The CPU architecture of the tasks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum CpuArchitecture {
    /// 64-bit x86 (`X86_64`). The default.
    #[default]
    #[serde(rename = "x86_64")]
    X86_64,
    /// 64-bit ARM (Graviton, `ARM64`).
    #[serde(rename = "arm64")]
    Arm64,
}

impl CpuArchitecture {
    /// The value ECS uses in `runtimePlatform.cpuArchitecture`.
    pub fn as_ecs(self) -> &'static str {
        match self {
            CpuArchitecture::X86_64 => "X86_64",
            CpuArchitecture::Arm64 => "ARM64",
        }
    }
}

/// The `[service]` table of `stack.toml`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct ComputeConfig {
    /// The container image. Default: none, which means the stack's own repository
    /// (`ComputeInputs::default_image`, `{repository_uri}:latest`).
    pub image: Option<String>,
    /// Task CPU units (1024 = one vCPU): 256, 512, 1024, 2048, 4096, 8192 or 16384. Default 256.
    pub cpu: u32,
    /// Task memory in MiB; must be one Fargate allows for `cpu`. Default 512.
    pub memory: u32,
    /// Tasks when the service is created. Afterwards autoscaling owns the count and apply never
    /// changes it. Default 2.
    pub desired_count: u32,
    /// Fewest tasks autoscaling keeps. Default 2.
    pub min_count: u32,
    /// Most tasks autoscaling starts (at most 1000). Default 8.
    pub max_count: u32,
    /// Target of the average-CPU target-tracking policy, percent (1 to 100). Default 60.
    pub cpu_target_percent: u32,
    /// Track CPU with ECS's 20-second metric (`ECSServiceAverageCPUUtilizationHighResolution`)
    /// instead of the one-minute one: target tracking reacts in about 76 s instead of about
    /// 6 minutes (AWS's benchmark; `cargo xtask loadtest` prints what it buys). Default false.
    pub high_resolution_metrics: bool,
    /// Target of the `ALBRequestCountPerTarget` policy: requests per task per minute.
    /// Default 6000 (100 requests per second per task).
    pub requests_per_target: u32,
    /// Seconds after a scale-out before another (0 to 3600). Default 60.
    pub scale_out_cooldown_seconds: u32,
    /// Seconds after a scale-in before another (0 to 3600). Default 300.
    pub scale_in_cooldown_seconds: u32,
    /// Days CloudWatch keeps the task logs; one of the values CloudWatch allows
    /// (1, 3, 5, 7, 14, 30, 60, 90, ...). Default 30.
    pub log_retention_days: u32,
    /// Extra environment variables of the container. `PORT` is set to the container port and
    /// may not be given. Default: none.
    pub environment: BTreeMap<String, String>,
    /// Secrets of the container, as environment variables ECS sets from Secrets Manager or
    /// SSM Parameter Store when the task starts: `NAME = "arn:aws:secretsmanager:...:secret:..."`
    /// (the secret's full ARN, optionally followed by `:json-key:version-stage:version-id` as
    /// ECS allows), `NAME = "arn:aws:ssm:...:parameter/..."` or `NAME = "/a/parameter"` (a
    /// parameter of the stack's region by name). Only these references are in the task
    /// definition and the plan, never a value; the execution role may read exactly these and
    /// nothing else (`secretsmanager:GetSecretValue`, `ssm:GetParameters`). Default: none.
    pub secrets: BTreeMap<String, String>,
    /// Mount the container's root filesystem read-only. Default false.
    pub read_only_root_filesystem: bool,
    /// `x86_64` (default) or `arm64`.
    pub cpu_architecture: CpuArchitecture,
    /// Seconds ECS ignores failing load balancer health checks of a new task. Default 60.
    pub health_check_grace_seconds: u32,
    /// Extra IAM statements for the task role, as IAM JSON written in TOML, e.g.
    /// `[{ Effect = "Allow", Action = ["s3:GetObject"], Resource = ["arn:aws:s3:::b/*"] }]`.
    /// Default: none (the task role has no permissions).
    pub task_role_statements: Vec<serde_json::Value>,
    /// Give the container the health check `["CMD", "/sample-app", "health"]`. The sample app
    /// image has that binary; a custom image must provide it or turn this off. Default true.
    pub container_health_check: bool,
    /// Zones the tasks run in: the first N of the network's zones (one private subnet each).
    /// Default: all of them. 1 puts every task in one zone, which leaves the service nowhere
    /// to fail over to; it exists to show that (`cargo xtask loadtest` fails such a stack).
    pub zone_count: Option<u32>,
    /// Let destroy delete the task log group when it holds logs. Logs are data: without this,
    /// destroy keeps such a group (CloudWatch still expires its events after
    /// `log-retention-days`) and the next deploy takes it over. An empty group is deleted
    /// either way. Default false.
    pub force_destroy: bool,
}

impl Default for ComputeConfig {
    fn default() -> Self {
        Self {
            image: None,
            cpu: 256,
            memory: 512,
            desired_count: 2,
            min_count: 2,
            max_count: 8,
            cpu_target_percent: 60,
            high_resolution_metrics: false,
            requests_per_target: 6000,
            scale_out_cooldown_seconds: 60,
            scale_in_cooldown_seconds: 300,
            log_retention_days: 30,
            environment: BTreeMap::new(),
            secrets: BTreeMap::new(),
            read_only_root_filesystem: false,
            cpu_architecture: CpuArchitecture::X86_64,
            health_check_grace_seconds: 60,
            task_role_statements: Vec::new(),
            container_health_check: true,
            zone_count: None,
            force_destroy: false,
        }
    }
}

/// A checked compute configuration: built only by [`infra::Config::validate`] of a
/// [`ComputeConfig`], so every value in it passed the checks.
#[derive(Debug, Clone, PartialEq)]
pub struct ComputeSpec {
    /// The image, or `None` for the stack's default image.
    pub(crate) image: Option<String>,
    /// Task CPU units.
    pub(crate) cpu: u32,
    /// Task memory, MiB.
    pub(crate) memory: u32,
    /// Tasks at creation.
    pub(crate) desired_count: u32,
    /// Autoscaling minimum.
    pub(crate) min_count: u32,
    /// Autoscaling maximum.
    pub(crate) max_count: u32,
    /// CPU target, percent.
    pub(crate) cpu_target_percent: u32,
    /// CPU tracked with the 20-second metric.
    pub(crate) high_resolution_metrics: bool,
    /// Requests per target per minute.
    pub(crate) requests_per_target: u32,
    /// Scale-out cooldown, seconds.
    pub(crate) scale_out_cooldown_seconds: u32,
    /// Scale-in cooldown, seconds.
    pub(crate) scale_in_cooldown_seconds: u32,
    /// Log retention, days.
    pub(crate) log_retention_days: u32,
    /// Extra environment variables.
    pub(crate) environment: BTreeMap<String, String>,
    /// Secrets by environment variable name.
    pub(crate) secrets: BTreeMap<String, Secret>,
    /// Read-only root filesystem.
    pub(crate) read_only_root_filesystem: bool,
    /// CPU architecture.
    pub(crate) cpu_architecture: CpuArchitecture,
    /// Health check grace period, seconds.
    pub(crate) health_check_grace_seconds: u32,
    /// The task role's inline policy statements (empty: no inline policy).
    pub(crate) task_role_statements: Vec<serde_json::Value>,
    /// Whether the container has the sample app's health check.
    pub(crate) container_health_check: bool,
    /// Run the tasks in the first this many of the given private subnets (`None`: all).
    pub(crate) zone_count: Option<u32>,
    /// Destroy deletes a log group that holds logs.
    pub(crate) force_destroy: bool,
}

impl ComputeSpec {
    /// The image, when one is configured; none for the stack's own repository.
    pub fn image(&self) -> Option<&str> {
        self.image.as_deref()
    }

    /// The most tasks autoscaling may run.
    pub fn max_count(&self) -> u32 {
        self.max_count
    }

    /// The tasks' CPU architecture.
    pub fn cpu_architecture(&self) -> CpuArchitecture {
        self.cpu_architecture
    }

    /// The number of zones the tasks run in, when not every zone.
    pub fn zone_count(&self) -> Option<u32> {
        self.zone_count
    }
}

/// The log retention values CloudWatch Logs accepts.
pub const LOG_RETENTION_DAYS: &[u32] = &[
    1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922,
    3288, 3653,
];

/// The memory sizes (MiB) Fargate allows for a CPU size, or `None` for a CPU size it lacks.
pub fn fargate_memory(cpu: u32) -> Option<Vec<u32>> {
    let (from, to, step) = match cpu {
        256 => return Some(vec![512, 1024, 2048]),
        512 => (1024, 4096, 1024),
        1024 => (2048, 8192, 1024),
        2048 => (4096, 16384, 1024),
        4096 => (8192, 30720, 1024),
        8192 => (16384, 61440, 4096),
        16384 => (32768, 122880, 8192),
        _ => return None,
    };
    Some((from..=to).step_by(step).collect())
}

/// The most tasks a service may have.
pub const MAX_TASKS: u32 = 1000;
const MAX_COOLDOWN: u32 = 3600;
const MAX_INLINE_POLICY: usize = 10_240;

fn describe_memory(cpu: u32, allowed: &[u32]) -> String {
    let list = if allowed.len() > 4 {
        format!(
            "{} to {} in steps of {}",
            allowed[0],
            allowed[allowed.len() - 1],
            allowed[1] - allowed[0]
        )
    } else {
        allowed
            .iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    };
    format!("for cpu {cpu}, Fargate allows memory {list} (MiB)")
}

fn is_env_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

impl ComputeConfig {
    /// Checks the configuration, every problem naming its field as `[service]` does
    /// (`cpu`).
    fn check(&self) -> Result<ComputeSpec, Problems> {
        let mut problems = Problems::default();

        if let Some(image) = &self.image
            && (image.is_empty()
                || image.len() > 255
                || image.chars().any(|c| c.is_whitespace() || c.is_control()))
        {
            problems.add(
                "image",
                format!("{image:?}"),
                "an image reference of 1 to 255 characters without spaces, such as \"public.ecr.aws/nginx/nginx:1.27\"; leave it out for the stack's own repository",
            );
        }

        match fargate_memory(self.cpu) {
            None => problems.add(
                "cpu",
                self.cpu,
                "one of the Fargate CPU sizes 256, 512, 1024, 2048, 4096, 8192, 16384",
            ),
            Some(allowed) if !allowed.contains(&self.memory) => {
                problems.add("memory", self.memory, describe_memory(self.cpu, &allowed))
            }
            Some(_) => {}
        }

        self.check_scaling(&mut problems);
        if !LOG_RETENTION_DAYS.contains(&self.log_retention_days) {
            problems.add(
                "log-retention-days",
                self.log_retention_days,
                format!("one of the values CloudWatch Logs allows: {LOG_RETENTION_DAYS:?}"),
            );
        }
        let secrets = self.check_environment(&mut problems);
        if self.health_check_grace_seconds > i32::MAX as u32 {
            problems.add(
                "health-check-grace-seconds",
                self.health_check_grace_seconds,
                format!("0 to {} seconds", i32::MAX),
            );
        }
        if self.zone_count == Some(0) {
            problems.add(
                "zone-count",
                0,
                "1 or more zones (at most the network's zone count); leave it out for all zones",
            );
        }
        check_statements(
            &self.task_role_statements,
            "task-role-statements",
            &mut problems,
        );

        problems.into_result(ComputeSpec {
            image: self.image.clone(),
            cpu: self.cpu,
            memory: self.memory,
            desired_count: self.desired_count,
            min_count: self.min_count,
            max_count: self.max_count,
            cpu_target_percent: self.cpu_target_percent,
            high_resolution_metrics: self.high_resolution_metrics,
            requests_per_target: self.requests_per_target,
            scale_out_cooldown_seconds: self.scale_out_cooldown_seconds,
            scale_in_cooldown_seconds: self.scale_in_cooldown_seconds,
            log_retention_days: self.log_retention_days,
            environment: self.environment.clone(),
            secrets,
            read_only_root_filesystem: self.read_only_root_filesystem,
            cpu_architecture: self.cpu_architecture,
            health_check_grace_seconds: self.health_check_grace_seconds,
            task_role_statements: self.task_role_statements.clone(),
            container_health_check: self.container_health_check,
            zone_count: self.zone_count,
            force_destroy: self.force_destroy,
        })
    }

    /// The task counts and the scaling policies' settings.
    fn check_scaling(&self, problems: &mut Problems) {
        if self.max_count == 0 || self.max_count > MAX_TASKS {
            problems.add(
                "max-count",
                self.max_count,
                format!("1 to {MAX_TASKS} tasks"),
            );
        }
        if self.min_count > self.max_count {
            problems.add(
                "min-count",
                self.min_count,
                format!("at most max-count ({})", self.max_count),
            );
        }
        if self.desired_count < self.min_count || self.desired_count > self.max_count {
            problems.add(
                "desired-count",
                self.desired_count,
                format!(
                    "from min-count ({}) to max-count ({})",
                    self.min_count, self.max_count
                ),
            );
        }
        if !(1..=100).contains(&self.cpu_target_percent) {
            problems.add(
                "cpu-target-percent",
                self.cpu_target_percent,
                "1 to 100 (percent)",
            );
        }
        if self.requests_per_target == 0 {
            problems.add(
                "requests-per-target",
                0,
                "1 or more requests per task per minute",
            );
        }
        for (name, value) in [
            (
                "scale-out-cooldown-seconds",
                self.scale_out_cooldown_seconds,
            ),
            ("scale-in-cooldown-seconds", self.scale_in_cooldown_seconds),
        ] {
            if value > MAX_COOLDOWN {
                problems.add(name, value, format!("0 to {MAX_COOLDOWN} seconds"));
            }
        }
    }

    /// `environment` and `secrets`: names the container may have, each once; returns the
    /// parsed secret references.
    fn check_environment(&self, problems: &mut Problems) -> BTreeMap<String, Secret> {
        for (table, names) in [
            ("environment", self.environment.keys().collect::<Vec<_>>()),
            ("secrets", self.secrets.keys().collect()),
        ] {
            for name in names {
                if name == "PORT" {
                    problems.add(
                        table,
                        "PORT",
                        "any name but PORT, which is set to the container port",
                    );
                } else if !is_env_name(name) || name.starts_with("ECS_") || name.starts_with("AWS_")
                {
                    problems.add(
                        table,
                        format!("{name:?}"),
                        "names of letters, digits and '_', not starting with a digit, ECS_ or AWS_",
                    );
                }
            }
        }
        let mut secrets = BTreeMap::new();
        for (name, reference) in &self.secrets {
            if self.environment.contains_key(name) {
                problems.add(
                    "secrets",
                    format!("{name:?}"),
                    format!(
                        "a name that is not in {} too: the container gets one value per name",
                        "environment"
                    ),
                );
            }
            match Secret::parse(reference) {
                Ok(secret) => {
                    secrets.insert(name.clone(), secret);
                }
                Err(allowed) => {
                    problems.add(format!("secrets.{name}"), format!("{reference:?}"), allowed)
                }
            }
        }
        secrets
    }
}

impl infra::Config for ComputeConfig {
    type Spec = ComputeSpec;

    /// Checks the configuration (Fargate's cpu and memory table, names, secrets). Reports
    /// every problem, not the first.
    fn validate(&self, _scope: &Scope<'_>) -> Result<ComputeSpec, Problems> {
        self.check()
    }
}

/// A string or a non-empty list of non-empty strings (IAM `Action` and `Resource`).
fn is_strings(value: &serde_json::Value) -> bool {
    match value {
        serde_json::Value::String(s) => !s.is_empty(),
        serde_json::Value::Array(items) => {
            !items.is_empty()
                && items
                    .iter()
                    .all(|i| i.as_str().is_some_and(|s| !s.is_empty()))
        }
        _ => false,
    }
}

fn check_statements(statements: &[serde_json::Value], field: &str, problems: &mut Problems) {
    const KEYS: &[&str] = &[
        "Sid",
        "Effect",
        "Action",
        "NotAction",
        "Resource",
        "NotResource",
        "Condition",
    ];
    for (i, st) in statements.iter().enumerate() {
        let at = format!("{field}[{i}]");
        let Some(obj) = st.as_object() else {
            problems.add(
                at,
                st,
                "a table such as { Effect = \"Allow\", Action = [\"s3:GetObject\"], Resource = [\"arn:aws:s3:::bucket/*\"] }",
            );
            continue;
        };
        for key in obj.keys().filter(|k| !KEYS.contains(&k.as_str())) {
            problems.add(
                format!("{at}.{key}"),
                &obj[key],
                format!(
                    "only the statement keys {KEYS:?} (Principal has no place in a role policy)"
                ),
            );
        }
        match obj.get("Effect").and_then(|e| e.as_str()) {
            Some("Allow" | "Deny") => {}
            _ => problems.add(
                format!("{at}.Effect"),
                obj.get("Effect")
                    .map_or("missing".to_owned(), |e| e.to_string()),
                "\"Allow\" or \"Deny\"",
            ),
        }
        for (a, b) in [("Action", "NotAction"), ("Resource", "NotResource")] {
            match (obj.get(a), obj.get(b)) {
                (Some(v), None) | (None, Some(v)) if is_strings(v) => {}
                (None, None) => problems.add(
                    format!("{at}.{a}"),
                    "missing",
                    format!("a string or a list of strings ({a} or {b}, one of them)"),
                ),
                (Some(_), Some(_)) => problems.add(
                    format!("{at}.{a}"),
                    "both given",
                    format!("either {a} or {b}, not both"),
                ),
                (Some(v), None) | (None, Some(v)) => problems.add(
                    format!("{at}.{a}"),
                    v,
                    "a non-empty string or a non-empty list of non-empty strings",
                ),
            }
        }
    }
    if !statements.is_empty() {
        let size = policy_document(statements).to_string().len();
        if size > MAX_INLINE_POLICY {
            problems.add(
                field,
                format!("{size} characters of policy"),
                format!("at most {MAX_INLINE_POLICY} characters (IAM's inline role policy limit)"),
            );
        }
    }
}

/// The IAM policy document holding `statements`.
pub(crate) fn policy_document(statements: &[serde_json::Value]) -> serde_json::Value {
    serde_json::json!({ "Version": "2012-10-17", "Statement": statements })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(toml_text: &str) -> Result<ComputeSpec, Problems> {
        use infra::Config as _;
        let config: ComputeConfig = toml::from_str(toml_text).expect("parses");
        config
            .validate(&infra::Scope::new("web", "eu-west-1"))
            .map_err(|p| p.within("service"))
    }

    fn fields(toml_text: &str) -> Vec<String> {
        check(toml_text)
            .unwrap_err()
            .0
            .iter()
            .map(|p| p.field.clone())
            .collect()
    }

    #[test]
    fn defaults_match_the_agreed_interface() {
        let spec = check("").unwrap();
        assert_eq!((spec.cpu, spec.memory), (256, 512));
        assert_eq!(
            (spec.desired_count, spec.min_count, spec.max_count),
            (2, 2, 8)
        );
        assert_eq!(
            (spec.cpu_target_percent, spec.requests_per_target),
            (60, 6000)
        );
        assert_eq!(
            (
                spec.scale_out_cooldown_seconds,
                spec.scale_in_cooldown_seconds
            ),
            (60, 300)
        );
        assert_eq!(spec.log_retention_days, 30);
        assert_eq!(spec.cpu_architecture, CpuArchitecture::X86_64);
        assert_eq!(spec.health_check_grace_seconds, 60);
        assert!(spec.container_health_check);
        assert!(!spec.read_only_root_filesystem);
        assert!(spec.image.is_none() && spec.task_role_statements.is_empty());
    }

    #[test]
    fn every_fargate_size_is_accepted_and_neighbours_are_not() {
        for (cpu, mems) in [
            (256, vec![512, 1024, 2048]),
            (512, vec![1024, 2048, 3072, 4096]),
            (1024, vec![2048, 5120, 8192]),
            (2048, vec![4096, 16384]),
            (4096, vec![8192, 30720]),
            (8192, vec![16384, 20480, 61440]),
            (16384, vec![32768, 40960, 122880]),
        ] {
            for m in mems {
                assert!(
                    check(&format!("cpu = {cpu}\nmemory = {m}")).is_ok(),
                    "{cpu}/{m}"
                );
            }
        }
        for (cpu, m) in [
            (256, 3072),
            (512, 512),
            (1024, 9216),
            (4096, 31744),
            (8192, 18432),
            (16384, 36864),
        ] {
            assert_eq!(
                fields(&format!("cpu = {cpu}\nmemory = {m}")),
                ["service.memory"]
            );
        }
        let p = check("cpu = 300").unwrap_err();
        assert_eq!(p.0.len(), 1, "{p}");
        assert_eq!(p.0[0].field, "service.cpu");
        let p = check("cpu = 8192\nmemory = 1000").unwrap_err();
        assert!(
            p.to_string().contains("16384 to 61440 in steps of 4096"),
            "{p}"
        );
    }

    #[test]
    fn counts_must_nest() {
        assert_eq!(fields("desired-count = 9"), ["service.desired-count"]);
        assert_eq!(fields("desired-count = 1"), ["service.desired-count"]);
        assert_eq!(
            fields("min-count = 5\nmax-count = 4\ndesired-count = 4"),
            ["service.min-count", "service.desired-count"]
        );
        assert_eq!(
            fields("max-count = 1001\ndesired-count = 2"),
            ["service.max-count"]
        );
        assert_eq!(
            fields("max-count = 0\nmin-count = 0\ndesired-count = 0"),
            ["service.max-count"]
        );
        assert!(check("min-count = 0\ndesired-count = 0\nmax-count = 1000").is_ok());
    }

    #[test]
    fn retention_must_be_a_cloudwatch_value() {
        assert!(check("log-retention-days = 3653").is_ok());
        assert_eq!(
            fields("log-retention-days = 31"),
            ["service.log-retention-days"]
        );
        assert_eq!(
            fields("log-retention-days = 0"),
            ["service.log-retention-days"]
        );
    }

    #[test]
    fn statements_are_checked() {
        assert!(check(
            r#"task-role-statements = [{ Effect = "Allow", Action = ["s3:GetObject"], Resource = "arn:aws:s3:::b/*" }]"#
        )
        .is_ok());
        assert_eq!(
            fields(
                r#"task-role-statements = [{ Effect = "Maybe", Action = [], Principal = "*" }]"#
            ),
            [
                "service.task-role-statements[0].Principal",
                "service.task-role-statements[0].Effect",
                "service.task-role-statements[0].Action",
                "service.task-role-statements[0].Resource",
            ]
        );
        assert_eq!(
            fields(r#"task-role-statements = ["s3:*"]"#),
            ["service.task-role-statements[0]"]
        );
    }

    #[test]
    fn secrets_take_what_ecs_takes_and_name_what_is_wrong() {
        let spec = check(
            r#"
            environment = { MODE = "prod" }
            [secrets]
            DB = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:prod/db-AbCdEf:password::"
            TOKEN = "arn:aws-cn:secretsmanager:cn-north-1:123456789012:secret:token-x1Y2z3"
            KEY = "/prod/api-key"
            FLAT = "api_key.v2"
            SHARED = "arn:aws:ssm:us-east-1:123456789012:parameter/shared/key"
            "#,
        )
        .unwrap();
        assert_eq!(spec.secrets.len(), 5);
        assert_eq!(
            spec.secrets["DB"],
            Secret::SecretsManager {
                value_from:
                    "arn:aws:secretsmanager:eu-west-1:123456789012:secret:prod/db-AbCdEf:password::"
                        .into(),
                arn: "arn:aws:secretsmanager:eu-west-1:123456789012:secret:prod/db-AbCdEf".into(),
            }
        );
        assert_eq!(
            spec.secrets["KEY"],
            Secret::ParameterName("/prod/api-key".into())
        );
        assert_eq!(spec.secrets["KEY"].value_from(), "/prod/api-key");

        for (reference, why) in [
            // ECS takes no Secrets Manager name; a name with a space is no parameter either.
            ("prod db", "needs its full ARN"),
            (
                "arn:aws:secretsmanager:eu-west-1:1234:secret:db-AbCdEf",
                "12-digit account",
            ),
            (
                "arn:aws:secretsmanager:eu-west-1:123456789012:secret:db-AbCdEf:key",
                "all three",
            ),
            (
                "arn:aws:secretsmanager:eu-west-1:123456789012:db-AbCdEf",
                "all three",
            ),
            (
                "arn:aws:ssm:eu-west-1:123456789012:document/x",
                "not a parameter's ARN",
            ),
            ("arn:aws:s3:::bucket/key", "another service"),
            ("/aws/reserved", "needs its full ARN"),
            ("", "needs its full ARN"),
        ] {
            let text = format!("[secrets]\nX = {reference:?}");
            let p = check(&text).unwrap_err();
            assert_eq!(fields(&text), ["service.secrets.X"], "{reference}");
            let message = p.to_string();
            assert!(message.contains(&format!("{reference:?}")), "{message}");
            assert!(message.contains(why), "{reference}: {message}");
            assert!(
                message.contains("arn:aws:secretsmanager:REGION:ACCOUNT:secret:NAME"),
                "{message}"
            );
        }
        // Names follow the environment's rules, and one name is one value.
        assert_eq!(
            fields(
                "environment = { DB = \"x\" }\n[secrets]\nDB = \"/db\"\nPORT = \"/p\"\n\"1X\" = \"/q\""
            ),
            ["service.secrets", "service.secrets", "service.secrets"]
        );
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let p = check(
            r#"
            image = "bad image"
            cpu = 256
            memory = 4096
            desired-count = 20
            min-count = 30
            max-count = 2000
            cpu-target-percent = 0
            requests-per-target = 0
            scale-out-cooldown-seconds = 4000
            scale-in-cooldown-seconds = 4000
            log-retention-days = 2
            environment = { PORT = "1", "1X" = "y" }
            health-check-grace-seconds = 3000000000
            task-role-statements = [{ Effect = "Allow" }]
            "#,
        )
        .unwrap_err();
        let fields: Vec<&str> = p.0.iter().map(|p| p.field.as_str()).collect();
        for f in [
            "service.image",
            "service.memory",
            "service.max-count",
            "service.desired-count",
            "service.cpu-target-percent",
            "service.requests-per-target",
            "service.scale-out-cooldown-seconds",
            "service.scale-in-cooldown-seconds",
            "service.log-retention-days",
            "service.environment",
            "service.health-check-grace-seconds",
            "service.task-role-statements[0].Action",
            "service.task-role-statements[0].Resource",
        ] {
            assert!(fields.contains(&f), "{f} missing from\n{p}");
        }
        assert_eq!(
            fields
                .iter()
                .filter(|f| **f == "service.environment")
                .count(),
            2
        );
        assert!(
            p.to_string().contains(
                "service.memory = 4096: for cpu 256, Fargate allows memory 512, 1024, 2048 (MiB)"
            ),
            "{p}"
        );
    }

    #[test]
    fn unknown_keys_and_architectures_fail_to_parse() {
        assert!(toml::from_str::<ComputeConfig>("cpus = 1").is_err());
        assert!(toml::from_str::<ComputeConfig>("cpu-architecture = \"arm\"").is_err());
        let c: ComputeConfig = toml::from_str("cpu-architecture = \"arm64\"").unwrap();
        assert_eq!(c.cpu_architecture.as_ecs(), "ARM64");
    }
}
