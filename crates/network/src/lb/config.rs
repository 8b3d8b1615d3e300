//! The load balancer's configuration: the `[load-balancer]` table users write, and the checked
//! [`LoadBalancerSpec`] it becomes.

use infra::{Problems, Scope};
use serde::{Deserialize, Serialize};

/// The target group's health check: the `[load-balancer.health-check]` table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct HealthCheckConfig {
    /// The HTTP path probed on each target. Default `"/health"`.
    pub path: String,
    /// Seconds between probes of one target, 5 to 300. Default 10.
    pub interval_seconds: u32,
    /// Seconds without an answer that fail a probe, 2 to 120 and less than the interval.
    /// Default 5.
    pub timeout_seconds: u32,
    /// Consecutive successes that make an unhealthy target healthy, 2 to 10. Default 2.
    pub healthy_threshold: u32,
    /// Consecutive failures that make a healthy target unhealthy, 2 to 10. Default 2.
    pub unhealthy_threshold: u32,
    /// The HTTP codes that count as healthy: a code (`"200"`), a list (`"200,202"`) or a range
    /// (`"200-299"`), all from 200 to 499. Default `"200"`.
    pub matcher: String,
}

impl Default for HealthCheckConfig {
    fn default() -> Self {
        Self {
            path: "/health".to_owned(),
            interval_seconds: 10,
            timeout_seconds: 5,
            healthy_threshold: 2,
            unhealthy_threshold: 2,
            matcher: "200".to_owned(),
        }
    }
}

/// The `[load-balancer]` table of `stack.toml`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct LoadBalancerConfig {
    /// Whether AWS refuses to delete the load balancer until this is turned off. `destroy`
    /// turns it off first (and says so in its plan). Default false.
    pub deletion_protection: bool,
    /// Seconds an idle client connection stays open, 1 to 4000. Default 60.
    pub idle_timeout_seconds: u32,
    /// An ACM certificate in the stack's region
    /// (`arn:aws:acm:<region>:<account>:certificate/<id>`). With one, port 80 redirects to
    /// HTTPS on 443. Default: none, HTTP only.
    pub certificate_arn: Option<String>,
    /// The target group's health check. Defaults: see [`HealthCheckConfig`].
    pub health_check: HealthCheckConfig,
    /// Seconds a deregistered target keeps serving in-flight requests, 0 to 3600. Default 60
    /// (AWS's own default of 300 makes failover slow).
    pub deregistration_delay_seconds: u32,
    /// Whether access logs go to the stack's log bucket (when the stack has one). Default true.
    pub access_logs: bool,
}

impl Default for LoadBalancerConfig {
    fn default() -> Self {
        Self {
            deletion_protection: false,
            idle_timeout_seconds: 60,
            certificate_arn: None,
            health_check: HealthCheckConfig::default(),
            deregistration_delay_seconds: 60,
            access_logs: true,
        }
    }
}

/// A checked health check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheckSpec {
    /// The path.
    pub(crate) path: String,
    /// Seconds between probes.
    pub(crate) interval_seconds: i32,
    /// Seconds before a probe fails.
    pub(crate) timeout_seconds: i32,
    /// Successes to become healthy.
    pub(crate) healthy_threshold: i32,
    /// Failures to become unhealthy.
    pub(crate) unhealthy_threshold: i32,
    /// Healthy HTTP codes, as AWS writes them (`200`, `200,202`, `200-299`).
    pub(crate) matcher: String,
}

/// A checked load balancer configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadBalancerSpec {
    /// Deletion protection.
    pub(crate) deletion_protection: bool,
    /// Idle timeout in seconds.
    pub(crate) idle_timeout_seconds: u32,
    /// The certificate for HTTPS, when there is one.
    pub(crate) certificate_arn: Option<String>,
    /// The health check.
    pub(crate) health_check: HealthCheckSpec,
    /// Deregistration delay in seconds.
    pub(crate) deregistration_delay_seconds: u32,
    /// Whether to write access logs when the stack has a log bucket.
    pub(crate) access_logs: bool,
}

impl LoadBalancerConfig {
    /// Checks the configuration for `region`, every problem naming its field as
    /// `[load-balancer]` does (`idle-timeout-seconds`).
    fn check(&self, region: &str) -> Result<LoadBalancerSpec, Problems> {
        let mut problems = Problems::default();
        let mut range = |name: &str, value: u32, lo: u32, hi: u32, what: &str| {
            if !(lo..=hi).contains(&value) {
                problems.add(name, value, format!("{lo} to {hi} {what}"));
            }
        };
        range(
            "idle-timeout-seconds",
            self.idle_timeout_seconds,
            1,
            4000,
            "seconds",
        );
        range(
            "deregistration-delay-seconds",
            self.deregistration_delay_seconds,
            0,
            3600,
            "seconds",
        );
        let hc = &self.health_check;
        range(
            "health-check.interval-seconds",
            hc.interval_seconds,
            5,
            300,
            "seconds (AWS's limits for a health check interval)",
        );
        range(
            "health-check.timeout-seconds",
            hc.timeout_seconds,
            2,
            120,
            "seconds",
        );
        range(
            "health-check.healthy-threshold",
            hc.healthy_threshold,
            2,
            10,
            "consecutive successes",
        );
        range(
            "health-check.unhealthy-threshold",
            hc.unhealthy_threshold,
            2,
            10,
            "consecutive failures",
        );
        if hc.timeout_seconds >= hc.interval_seconds {
            problems.add(
                "health-check.timeout-seconds",
                hc.timeout_seconds,
                format!(
                    "less than health-check.interval-seconds ({}): a probe must time out before the next one starts",
                    hc.interval_seconds
                ),
            );
        }
        let path_ok = hc.path.starts_with('/')
            && hc.path.len() <= 1024
            && hc.path.chars().all(|c| c.is_ascii_graphic());
        if !path_ok {
            problems.add(
                "health-check.path",
                format!("{:?}", hc.path),
                "a path starting with '/', up to 1024 printable ASCII characters, no spaces",
            );
        }
        if !matcher_ok(&hc.matcher) {
            problems.add(
                "health-check.matcher",
                format!("{:?}", hc.matcher),
                "HTTP codes from 200 to 499: one (\"200\"), a list (\"200,202\") or a range (\"200-299\")",
            );
        }
        if let Some(arn) = &self.certificate_arn
            && !certificate_ok(arn, region)
        {
            problems.add(
                "certificate-arn",
                format!("{arn:?}"),
                format!(
                    "an ACM certificate ARN in {region}: arn:aws:acm:{region}:<12-digit account>:certificate/<id>"
                ),
            );
        }
        let to_i32 = |v: u32| i32::try_from(v).unwrap_or(i32::MAX);
        problems.into_result(LoadBalancerSpec {
            deletion_protection: self.deletion_protection,
            idle_timeout_seconds: self.idle_timeout_seconds,
            certificate_arn: self.certificate_arn.clone(),
            health_check: HealthCheckSpec {
                path: hc.path.clone(),
                interval_seconds: to_i32(hc.interval_seconds),
                timeout_seconds: to_i32(hc.timeout_seconds),
                healthy_threshold: to_i32(hc.healthy_threshold),
                unhealthy_threshold: to_i32(hc.unhealthy_threshold),
                matcher: hc.matcher.clone(),
            },
            deregistration_delay_seconds: self.deregistration_delay_seconds,
            access_logs: self.access_logs,
        })
    }
}

impl infra::Config for LoadBalancerConfig {
    type Spec = LoadBalancerSpec;

    /// Checks the configuration for the scope's region (the certificate's region). Reports
    /// every problem, not the first.
    fn validate(&self, scope: &Scope<'_>) -> Result<LoadBalancerSpec, Problems> {
        self.check(scope.region())
    }
}

/// `200`, `200,202`, `200-299`: codes from 200 to 499, ranges low to high.
fn matcher_ok(text: &str) -> bool {
    let code = |s: &str| {
        (s.len() == 3 && s.chars().all(|c| c.is_ascii_digit()))
            .then(|| s.parse::<u16>().ok())
            .flatten()
            .filter(|c| (200..=499).contains(c))
    };
    if let Some((lo, hi)) = text.split_once('-') {
        return matches!((code(lo), code(hi)), (Some(lo), Some(hi)) if lo <= hi);
    }
    !text.is_empty() && text.split(',').all(|part| code(part).is_some())
}

/// `arn:<partition>:acm:<region>:<account>:certificate/<id>`, partition `aws` or `aws-*`.
fn certificate_ok(arn: &str, region: &str) -> bool {
    let parts: Vec<&str> = arn.splitn(6, ':').collect();
    let [arn_, partition, service, arn_region, account, resource] = parts.as_slice() else {
        return false;
    };
    let id = resource.strip_prefix("certificate/").unwrap_or_default();
    *arn_ == "arn"
        && (*partition == "aws" || partition.starts_with("aws-"))
        && *service == "acm"
        && *arn_region == region
        && account.len() == 12
        && account.chars().all(|c| c.is_ascii_digit())
        && !id.is_empty()
        && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
}

#[cfg(test)]
mod tests {
    use super::*;

    const CERT: &str =
        "arn:aws:acm:eu-west-1:123456789012:certificate/0a1b2c3d-4e5f-6789-abcd-ef0123456789";

    fn check(toml_text: &str) -> Result<LoadBalancerSpec, Problems> {
        use infra::Config as _;
        let config: LoadBalancerConfig = toml::from_str(toml_text).expect("parses");
        config
            .validate(&infra::Scope::new("web", "eu-west-1"))
            .map_err(|p| p.within("load-balancer"))
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
    fn defaults_match_the_team_contract() {
        let spec = check("").unwrap();
        assert!(!spec.deletion_protection);
        assert_eq!(spec.idle_timeout_seconds, 60);
        assert_eq!(spec.certificate_arn, None);
        assert_eq!(spec.deregistration_delay_seconds, 60);
        assert!(spec.access_logs);
        assert_eq!(
            spec.health_check,
            HealthCheckSpec {
                path: "/health".to_owned(),
                interval_seconds: 10,
                timeout_seconds: 5,
                healthy_threshold: 2,
                unhealthy_threshold: 2,
                matcher: "200".to_owned(),
            }
        );
    }

    #[test]
    fn a_full_configuration_is_accepted() {
        let spec = check(&format!(
            r#"
            deletion-protection = true
            idle-timeout-seconds = 4000
            certificate-arn = "{CERT}"
            deregistration-delay-seconds = 0
            access-logs = false
            [health-check]
            path = "/ready?x=1"
            interval-seconds = 300
            timeout-seconds = 120
            healthy-threshold = 10
            unhealthy-threshold = 10
            matcher = "200-299"
            "#
        ))
        .unwrap();
        assert!(spec.deletion_protection);
        assert_eq!(spec.certificate_arn.as_deref(), Some(CERT));
        assert_eq!(spec.health_check.interval_seconds, 300);
        assert_eq!(spec.health_check.matcher, "200-299");
    }

    #[test]
    fn every_problem_is_reported_at_once_with_field_value_and_rule() {
        let found = problems(
            r#"
            idle-timeout-seconds = 0
            deregistration-delay-seconds = 3601
            certificate-arn = "arn:aws:iam::123456789012:server-certificate/web"
            [health-check]
            path = "health"
            interval-seconds = 4
            timeout-seconds = 121
            healthy-threshold = 1
            unhealthy-threshold = 11
            matcher = "200-600"
            "#,
        );
        assert_eq!(
            found,
            [
                "load-balancer.idle-timeout-seconds = 0: 1 to 4000 seconds",
                "load-balancer.deregistration-delay-seconds = 3601: 0 to 3600 seconds",
                "load-balancer.health-check.interval-seconds = 4: 5 to 300 seconds (AWS's limits for a health check interval)",
                "load-balancer.health-check.timeout-seconds = 121: 2 to 120 seconds",
                "load-balancer.health-check.healthy-threshold = 1: 2 to 10 consecutive successes",
                "load-balancer.health-check.unhealthy-threshold = 11: 2 to 10 consecutive failures",
                "load-balancer.health-check.timeout-seconds = 121: less than health-check.interval-seconds (4): a probe must time out before the next one starts",
                "load-balancer.health-check.path = \"health\": a path starting with '/', up to 1024 printable ASCII characters, no spaces",
                "load-balancer.health-check.matcher = \"200-600\": HTTP codes from 200 to 499: one (\"200\"), a list (\"200,202\") or a range (\"200-299\")",
                "load-balancer.certificate-arn = \"arn:aws:iam::123456789012:server-certificate/web\": an ACM certificate ARN in eu-west-1: arn:aws:acm:eu-west-1:<12-digit account>:certificate/<id>",
            ]
        );
    }

    #[test]
    fn the_timeout_must_be_shorter_than_the_interval() {
        assert_eq!(
            problems("[health-check]\ninterval-seconds = 10\ntimeout-seconds = 10"),
            [
                "load-balancer.health-check.timeout-seconds = 10: less than health-check.interval-seconds (10): a probe must time out before the next one starts"
            ]
        );
        assert!(check("[health-check]\ninterval-seconds = 10\ntimeout-seconds = 9").is_ok());
    }

    #[test]
    fn matchers() {
        for ok in [
            "200",
            "499",
            "200,202",
            "200,301,404",
            "200-299",
            "200-200",
            "200-499",
        ] {
            assert!(matcher_ok(ok), "{ok}");
        }
        for bad in [
            "",
            "199",
            "500",
            "2000",
            "20",
            "abc",
            "200,",
            ",200",
            "299-200",
            "200-500",
            "200-",
            "200-299,302",
            " 200",
            "200,500",
        ] {
            assert!(!matcher_ok(bad), "{bad}");
        }
    }

    #[test]
    fn certificate_arns() {
        assert!(certificate_ok(CERT, "eu-west-1"));
        assert!(certificate_ok(
            "arn:aws-cn:acm:cn-north-1:123456789012:certificate/abc-1",
            "cn-north-1"
        ));
        for bad in [
            // Another region: an ALB only takes certificates from its own region.
            "arn:aws:acm:us-east-1:123456789012:certificate/abc",
            "arn:aws:acm:eu-west-1:12345678901:certificate/abc",
            "arn:aws:acm:eu-west-1:123456789012:certificate/",
            "arn:aws:acm:eu-west-1:123456789012:cert/abc",
            "arn:aws:iam::123456789012:server-certificate/abc",
            "arn:azure:acm:eu-west-1:123456789012:certificate/abc",
            "certificate/abc",
            "",
        ] {
            assert!(!certificate_ok(bad, "eu-west-1"), "{bad}");
        }
    }

    #[test]
    fn unknown_keys_are_rejected_by_name() {
        let err = toml::from_str::<LoadBalancerConfig>("[health-check]\nintervall-seconds = 5")
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown field `intervall-seconds`"), "{err}");
    }
}
