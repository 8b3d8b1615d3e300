//! The storage configuration: the `[storage]` table users write, and the checked
//! [`StorageSpec`] it becomes.

use infra::{Problems, Scope};
use serde::{Deserialize, Serialize};

/// The `[storage]` table of `stack.toml`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct StorageConfig {
    /// The access-log bucket's name: 3 to 63 characters of a-z, 0-9 and '-', starting and
    /// ending with a letter or digit. Default: `{stack}-alb-logs-{account}-{region}` (see
    /// [`derived_bucket_name`]), unique per stack, account and region.
    pub log_bucket: Option<String>,
    /// The key prefix the load balancer writes its logs under, without leading or trailing
    /// '/' and without `AWSLogs`; empty for none. Default `"alb"`.
    pub log_prefix: String,
    /// Days after which access logs are deleted, 1 or more. Default 90.
    pub log_expire_days: u32,
    /// Whether ECR scans each image for vulnerabilities when it is pushed. Default true.
    pub scan_on_push: bool,
    /// Whether an image tag, once pushed, can never point to another image. Default false
    /// (the service's default image is `:latest`, which moves).
    pub immutable_tags: bool,
    /// How many of the newest images the repository keeps (older ones expire), 1 to 1000.
    /// Default 30.
    pub keep_images: u32,
    /// Whether destroy deletes a bucket that still holds logs, or a repository that still
    /// holds images, emptying it first. Default false: destroy refuses and says so.
    pub force_destroy: bool,
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self {
            log_bucket: None,
            log_prefix: "alb".to_owned(),
            log_expire_days: 90,
            scan_on_push: true,
            immutable_tags: false,
            keep_images: 30,
            force_destroy: false,
        }
    }
}

/// Which bucket holds the access logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogBucket {
    /// [`derived_bucket_name`] of the stack, the account (known once AWS is asked) and the
    /// region.
    Derived,
    /// The name the configuration gives.
    Named(String),
}

/// A checked storage configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StorageSpec {
    /// The access-log bucket.
    pub(crate) log_bucket: LogBucket,
    /// The log key prefix (may be empty).
    pub(crate) log_prefix: String,
    /// Days before logs expire.
    pub(crate) log_expire_days: i32,
    /// Scan images on push.
    pub(crate) scan_on_push: bool,
    /// Immutable image tags.
    pub(crate) immutable_tags: bool,
    /// Images kept.
    pub(crate) keep_images: u32,
    /// Empty non-empty bucket and repository on destroy.
    pub(crate) force_destroy: bool,
}

/// The access-log bucket's default name: `{stack}-alb-logs-{account}-{region}`.
pub fn derived_bucket_name(stack: &str, account_id: &str, region: &str) -> String {
    format!("{stack}-alb-logs-{account_id}-{region}")
}

/// The ECR repository's name: `{stack}/sample-app`.
pub fn repository_name(stack: &str) -> String {
    format!("{stack}/sample-app")
}

/// What S3 allows of a general purpose bucket name, and what we add (no dots), or `None` when
/// `name` is fine.
pub fn bucket_name_problem(name: &str) -> Option<&'static str> {
    let len = name.len();
    if !(3..=63).contains(&len) {
        return Some("3 to 63 characters");
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    {
        return Some(
            "only lowercase letters a-z, digits and '-' (S3 also allows '.', but dots break TLS for virtual-hosted requests)",
        );
    }
    let edge_ok = |c: Option<char>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    if !edge_ok(name.chars().next()) || !edge_ok(name.chars().last()) {
        return Some("a name that starts and ends with a letter or digit");
    }
    if ["xn--", "sthree-", "amzn-s3-demo-"]
        .iter()
        .any(|p| name.starts_with(p))
    {
        return Some(
            "a name that does not start with xn--, sthree- or amzn-s3-demo- (reserved by S3)",
        );
    }
    if ["-s3alias", "--ol-s3", "--x-s3", "--table-s3"]
        .iter()
        .any(|s| name.ends_with(s))
    {
        return Some(
            "a name that does not end with -s3alias, --ol-s3, --x-s3 or --table-s3 (reserved by S3)",
        );
    }
    None
}

/// A placeholder account id of the right length, for checking derived names before AWS is
/// asked for the real one (account ids always have 12 digits).
const ACCOUNT_PLACEHOLDER: &str = "000000000000";

impl StorageConfig {
    /// Checks the configuration for `stack` in `region`, every problem naming its field as
    /// `[storage]` does (`log-bucket`).
    fn check(&self, stack: &str, region: &str) -> Result<StorageSpec, Problems> {
        let mut problems = Problems::default();

        let log_bucket = match &self.log_bucket {
            Some(name) => {
                if let Some(rule) = bucket_name_problem(name) {
                    problems.add("log-bucket", format!("{name:?}"), rule);
                }
                LogBucket::Named(name.clone())
            }
            None => {
                let example = derived_bucket_name(stack, ACCOUNT_PLACEHOLDER, region);
                if let Some(rule) = bucket_name_problem(&example) {
                    problems.add(
                        "log-bucket",
                        format!("(not set; derived from stack name {stack:?} and region {region:?}: {example:?})"),
                        format!(
                            "{rule}: the name derived from the stack name, the 12-digit account id and the region breaks S3's rules; set {} to a valid bucket name, or use a shorter stack name",
                            "log-bucket"
                        ),
                    );
                }
                LogBucket::Derived
            }
        };

        let p = &self.log_prefix;
        let prefix_ok = p.len() <= 200
            && !p.starts_with('/')
            && !p.ends_with('/')
            && !p.contains("//")
            && !p.contains("AWSLogs")
            && p.chars()
                .all(|c| c.is_ascii_alphanumeric() || "!-_.*'()/".contains(c));
        if !prefix_ok {
            problems.add(
                "log-prefix",
                format!("{p:?}"),
                "up to 200 characters of a-z, A-Z, 0-9 and !-_.*'()/, no leading, trailing or double '/', not containing AWSLogs (the load balancer adds that itself); \"\" for no prefix",
            );
        }

        let log_expire_days = match i32::try_from(self.log_expire_days) {
            Ok(days) if days >= 1 => days,
            _ => {
                problems.add(
                    "log-expire-days",
                    self.log_expire_days,
                    "1 or more days (logs older than this are deleted)",
                );
                0
            }
        };
        if !(1..=1000).contains(&self.keep_images) {
            problems.add(
                "keep-images",
                self.keep_images,
                "1 to 1000 images (ECR's limit for an image count rule)",
            );
        }
        if region.is_empty() {
            problems.add(
                "region",
                "\"\"",
                "an AWS region such as \"eu-west-1\": the bucket policy depends on it",
            );
        }

        problems.into_result(StorageSpec {
            log_bucket,
            log_prefix: self.log_prefix.clone(),
            log_expire_days,
            scan_on_push: self.scan_on_push,
            immutable_tags: self.immutable_tags,
            keep_images: self.keep_images,
            force_destroy: self.force_destroy,
        })
    }
}

impl infra::Config for StorageConfig {
    type Spec = StorageSpec;

    /// Checks the configuration for the scope's stack and region (the derived bucket name).
    /// Reports every problem, not the first.
    fn validate(&self, scope: &Scope<'_>) -> Result<StorageSpec, Problems> {
        self.check(scope.stack(), scope.region())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use infra::Config as _;

    fn check(toml_text: &str) -> Result<StorageSpec, Problems> {
        let config: StorageConfig = toml::from_str(toml_text).expect("parses");
        config
            .validate(&Scope::new("demo", "eu-west-1"))
            .map_err(|p| p.within("storage"))
    }

    fn problems(toml_text: &str) -> Vec<String> {
        check(toml_text)
            .unwrap_err()
            .0
            .iter()
            .map(|p| p.to_string())
            .collect()
    }

    #[test]
    fn defaults_are_documented_ones() {
        let spec = check("").unwrap();
        assert_eq!(spec.log_bucket, LogBucket::Derived);
        assert_eq!(spec.log_prefix, "alb");
        assert_eq!(spec.log_expire_days, 90);
        assert!(spec.scan_on_push);
        assert!(!spec.immutable_tags);
        assert_eq!(spec.keep_images, 30);
        assert!(!spec.force_destroy);
        assert_eq!(
            derived_bucket_name("demo", "123456789012", "eu-west-1"),
            "demo-alb-logs-123456789012-eu-west-1"
        );
        assert_eq!(repository_name("demo"), "demo/sample-app");
    }

    #[test]
    fn every_field_can_be_set() {
        let spec = check(
            r#"
            log-bucket = "my-logs-1"
            log-prefix = "web/alb"
            log-expire-days = 7
            scan-on-push = false
            immutable-tags = true
            keep-images = 5
            force-destroy = true
            "#,
        )
        .unwrap();
        assert_eq!(spec.log_bucket, LogBucket::Named("my-logs-1".to_owned()));
        assert_eq!(spec.log_prefix, "web/alb");
        assert_eq!(spec.log_expire_days, 7);
        assert!(!spec.scan_on_push && spec.immutable_tags && spec.force_destroy);
        assert_eq!(spec.keep_images, 5);
        assert_eq!(check("log-prefix = \"\"").unwrap().log_prefix, "");
    }

    #[test]
    fn every_problem_is_reported_with_field_value_and_rule() {
        let found = problems(
            r#"
            log-bucket = "My_Logs"
            log-prefix = "/alb/AWSLogs/"
            log-expire-days = 0
            keep-images = 1001
            "#,
        );
        assert_eq!(found.len(), 4, "{found:#?}");
        assert!(
            found[0].starts_with("storage.log-bucket = \"My_Logs\": only lowercase"),
            "{found:#?}"
        );
        assert!(
            found[1].starts_with("storage.log-prefix = \"/alb/AWSLogs/\": up to 200"),
            "{found:#?}"
        );
        assert_eq!(
            found[2],
            "storage.log-expire-days = 0: 1 or more days (logs older than this are deleted)"
        );
        assert_eq!(
            found[3],
            "storage.keep-images = 1001: 1 to 1000 images (ECR's limit for an image count rule)"
        );
        assert_eq!(
            problems("keep-images = 0"),
            ["storage.keep-images = 0: 1 to 1000 images (ECR's limit for an image count rule)"]
        );
    }

    #[test]
    fn bucket_names_follow_s3_rules() {
        for ok in ["abc", "my-logs-1", "0logs", &"a".repeat(63)] {
            assert_eq!(bucket_name_problem(ok), None, "{ok}");
        }
        for bad in [
            "ab",
            &"a".repeat(64),
            "Logs",
            "my.logs",
            "my_logs",
            "-logs",
            "logs-",
            "xn--logs",
            "sthree-logs",
            "logs-s3alias",
            "logs--ol-s3",
            "192.168.5.4",
        ] {
            assert!(bucket_name_problem(bad).is_some(), "{bad}");
        }
    }

    #[test]
    fn a_derived_name_that_would_be_too_long_names_the_fields() {
        let config = StorageConfig::default();
        // 24-character stack (the longest allowed) and a long region: 24+10+12+1+17 = 64.
        let err = config
            .validate(&Scope::new("abcdefghijklmnopqrstuvwx", "ap-southeast-9xyz"))
            .unwrap_err();
        let text = err.to_string();
        assert!(err.mentions("log-bucket"), "{text}");
        assert!(text.contains("3 to 63 characters"), "{text}");
        assert!(text.contains("stack name"), "{text}");
        assert!(text.contains("set log-bucket"), "{text}");
        // The longest real combination fits: a 24-character stack in ap-southeast-3.
        assert!(
            config
                .validate(&Scope::new("abcdefghijklmnopqrstuvwx", "ap-southeast-3"))
                .is_ok()
        );
        // An explicit name is used instead of the derived one.
        let named = StorageConfig {
            log_bucket: Some("short-logs".to_owned()),
            ..StorageConfig::default()
        };
        assert!(
            named
                .validate(&Scope::new("abcdefghijklmnopqrstuvwx", "ap-southeast-9xyz"))
                .is_ok()
        );
    }

    #[test]
    fn unknown_keys_are_rejected_by_name() {
        let err = toml::from_str::<StorageConfig>("log-expiry-days = 3")
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown field `log-expiry-days`"), "{err}");
    }
}
