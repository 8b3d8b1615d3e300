//! The observability configuration: what users write (`[observability]`), and the checked
//! [`ObservabilitySpec`] it becomes.

use infra::{Problems, Scope};
use serde::{Deserialize, Serialize};

/// The table name, and the prefix of every field named in a [`Problems`] report.
pub const TABLE: &str = "observability";

/// The `[observability]` table of `stack.toml`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct ObservabilityConfig {
    /// Where alarm notifications go: an SNS topic `{stack}-alarms` with an email subscription
    /// to this address is made, and every alarm notifies it (alarm and OK). Default: none, so
    /// no topic and alarms without actions.
    pub alarm_email: Option<String>,
    /// The load balancer's 5xx error rate, in percent of requests, above which the error-rate
    /// alarm fires. Default 1.0; more than 0, at most 100.
    pub error_rate_percent: f64,
    /// The 99th percentile of the targets' response time, in milliseconds, above which the
    /// latency alarm fires. Default 1000; more than 0.
    pub(crate) latency_p99_ms: u32,
    /// How many consecutive periods must breach before an alarm fires. Default 3; at least 1,
    /// and `evaluation-periods * period-seconds` at most one day (AWS's limit).
    pub evaluation_periods: u32,
    /// The length of one alarm period and the dashboard's default period, in seconds.
    /// Default 60; a multiple of 60 (the metrics alarmed on are one-minute metrics).
    pub period_seconds: u32,
    /// Whether to make the CloudWatch dashboard `{stack}`. Default true.
    pub dashboard: bool,
}

impl Default for ObservabilityConfig {
    fn default() -> Self {
        Self {
            alarm_email: None,
            error_rate_percent: 1.0,
            latency_p99_ms: 1000,
            evaluation_periods: 3,
            period_seconds: 60,
            dashboard: true,
        }
    }
}

/// A checked observability configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct ObservabilitySpec {
    /// The address alarm notifications are mailed to, when any.
    pub(crate) alarm_email: Option<String>,
    /// The 5xx error-rate threshold, in percent (0, 100].
    pub(crate) error_rate_percent: f64,
    /// The p99 latency threshold, in milliseconds (> 0).
    pub(crate) latency_p99_ms: u32,
    /// Consecutive breaching periods before an alarm fires (>= 1).
    pub(crate) evaluation_periods: u32,
    /// The period, in seconds: a multiple of 60.
    pub(crate) period_seconds: u32,
    /// Whether the dashboard exists.
    pub(crate) dashboard: bool,
}

/// The default configuration, checked: what `[observability]` left empty gives.
impl Default for ObservabilitySpec {
    fn default() -> Self {
        let c = ObservabilityConfig::default();
        Self {
            alarm_email: c.alarm_email,
            error_rate_percent: c.error_rate_percent,
            latency_p99_ms: c.latency_p99_ms,
            evaluation_periods: c.evaluation_periods,
            period_seconds: c.period_seconds,
            dashboard: c.dashboard,
        }
    }
}

/// The longest evaluation window AWS allows for an alarm: one day.
const MAX_WINDOW_SECONDS: u64 = 86_400;

/// What `period-seconds` allows, and why.
const PERIOD_ALLOWED: &str = "a multiple of 60: the alarms watch load balancer and ECS metrics, which CloudWatch has once a minute (10 and 30 are for high-resolution metrics only)";

impl ObservabilityConfig {
    /// Checks the configuration, every problem naming its field as `[observability]` does
    /// (`alarm-email`).
    fn check(&self) -> Result<ObservabilitySpec, Problems> {
        let mut problems = Problems::default();

        if let Some(email) = &self.alarm_email
            && !is_email(email)
        {
            problems.add(
                "alarm-email",
                format!("{email:?}"),
                "an email address such as \"ops@example.com\" (or leave it out for no notifications)",
            );
        }
        let rate = self.error_rate_percent;
        if !(rate.is_finite() && rate > 0.0 && rate <= 100.0) {
            problems.add(
                "error-rate-percent",
                rate,
                "a percentage more than 0 and at most 100",
            );
        }
        if self.latency_p99_ms == 0 {
            problems.add(
                "latency-p99-ms",
                self.latency_p99_ms,
                "a number of milliseconds more than 0",
            );
        }
        // CloudWatch takes 10 and 30 only for high-resolution metrics; the alarms watch ALB
        // and ECS metrics, published once a minute, where a shorter period never has data.
        let period_ok = self.period_seconds > 0 && self.period_seconds.is_multiple_of(60);
        if !period_ok {
            problems.add("period-seconds", self.period_seconds, PERIOD_ALLOWED);
        }
        if self.evaluation_periods == 0 {
            problems.add("evaluation-periods", self.evaluation_periods, "at least 1");
        } else if period_ok
            && u64::from(self.evaluation_periods) * u64::from(self.period_seconds)
                > MAX_WINDOW_SECONDS
        {
            problems.add(
                "evaluation-periods",
                self.evaluation_periods,
                format!(
                    "at most {} with period-seconds = {}: evaluation-periods * period-seconds may not exceed one day ({MAX_WINDOW_SECONDS} s)",
                    MAX_WINDOW_SECONDS / u64::from(self.period_seconds),
                    self.period_seconds
                ),
            );
        }
        problems.into_result(ObservabilitySpec {
            alarm_email: self.alarm_email.clone(),
            error_rate_percent: self.error_rate_percent,
            latency_p99_ms: self.latency_p99_ms,
            evaluation_periods: self.evaluation_periods,
            period_seconds: self.period_seconds,
            dashboard: self.dashboard,
        })
    }
}

impl infra::Config for ObservabilityConfig {
    type Spec = ObservabilitySpec;

    /// Checks the configuration (it needs neither the stack nor the region). Reports every
    /// problem, not the first.
    fn validate(&self, _scope: &Scope<'_>) -> Result<ObservabilitySpec, Problems> {
        self.check()
    }
}

/// A plain check of an email address, the shape SNS accepts: `local@domain.tld`, no spaces,
/// at most 254 characters, a domain of dot-separated labels of letters, digits and hyphens.
fn is_email(text: &str) -> bool {
    let Some((local, domain)) = text.split_once('@') else {
        return false;
    };
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
    };
    let labels: Vec<&str> = domain.split('.').collect();
    text.len() <= 254
        && !local.is_empty()
        && local.len() <= 64
        && !local.starts_with('.')
        && !local.ends_with('.')
        && !local.contains("..")
        && local
            .chars()
            .all(|c| c.is_ascii_graphic() && !"@\"(),:;<>[\\]".contains(c))
        && labels.len() >= 2
        && labels.iter().all(|l| label_ok(l))
        && labels
            .last()
            .is_some_and(|tld| tld.chars().all(|c| c.is_ascii_alphabetic()) && tld.len() >= 2)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(toml_text: &str) -> Result<ObservabilitySpec, Problems> {
        use infra::Config as _;
        let config: ObservabilityConfig = toml::from_str(toml_text).expect("parses");
        config
            .validate(&infra::Scope::new("web", "eu-west-1"))
            .map_err(|p| p.within(TABLE))
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
    fn defaults() {
        let spec = check("").unwrap();
        assert_eq!(spec, ObservabilitySpec::default());
        assert_eq!(spec.alarm_email, None);
        assert_eq!(spec.error_rate_percent, 1.0);
        assert_eq!(spec.latency_p99_ms, 1000);
        assert_eq!(spec.evaluation_periods, 3);
        assert_eq!(spec.period_seconds, 60);
        assert!(spec.dashboard);
    }

    #[test]
    fn a_full_table_is_accepted() {
        let spec = check(
            r#"
            alarm-email = "ops@example.com"
            error-rate-percent = 0.5
            latency-p99-ms = 250
            evaluation-periods = 5
            period-seconds = 300
            dashboard = false
            "#,
        )
        .unwrap();
        assert_eq!(spec.alarm_email.as_deref(), Some("ops@example.com"));
        assert_eq!(spec.error_rate_percent, 0.5);
        assert_eq!(spec.latency_p99_ms, 250);
        assert_eq!(spec.evaluation_periods, 5);
        assert_eq!(spec.period_seconds, 300);
        assert!(!spec.dashboard);
        for period in [60, 120, 3600] {
            assert!(
                check(&format!("period-seconds = {period}")).is_ok(),
                "{period}"
            );
        }
        // High-resolution periods: the alarmed metrics have none.
        for period in [10, 30] {
            assert!(
                check(&format!("period-seconds = {period}")).is_err(),
                "{period}"
            );
        }
        assert!(check("error-rate-percent = 100.0").is_ok());
    }

    #[test]
    fn every_problem_is_reported_with_field_value_and_rule() {
        assert_eq!(
            problems(
                r#"
                alarm-email = "not an email"
                error-rate-percent = 0.0
                latency-p99-ms = 0
                evaluation-periods = 0
                period-seconds = 45
                "#
            ),
            [
                "observability.alarm-email = \"not an email\": an email address such as \"ops@example.com\" (or leave it out for no notifications)",
                "observability.error-rate-percent = 0: a percentage more than 0 and at most 100",
                "observability.latency-p99-ms = 0: a number of milliseconds more than 0",
                "observability.period-seconds = 45: a multiple of 60: the alarms watch load balancer and ECS metrics, which CloudWatch has once a minute (10 and 30 are for high-resolution metrics only)",
                "observability.evaluation-periods = 0: at least 1",
            ]
        );
    }

    #[test]
    fn bad_values_one_at_a_time() {
        let cases: &[(&str, &str)] = &[
            (
                "error-rate-percent = 100.5",
                "observability.error-rate-percent = 100.5: a percentage more than 0 and at most 100",
            ),
            (
                "error-rate-percent = -1.0",
                "observability.error-rate-percent = -1: a percentage more than 0 and at most 100",
            ),
            (
                "error-rate-percent = nan",
                "observability.error-rate-percent = NaN: a percentage more than 0 and at most 100",
            ),
            (
                "period-seconds = 0",
                "observability.period-seconds = 0: a multiple of 60: the alarms watch load balancer and ECS metrics, which CloudWatch has once a minute (10 and 30 are for high-resolution metrics only)",
            ),
            (
                "period-seconds = 30",
                "observability.period-seconds = 30: a multiple of 60: the alarms watch load balancer and ECS metrics, which CloudWatch has once a minute (10 and 30 are for high-resolution metrics only)",
            ),
            (
                "period-seconds = 90",
                "observability.period-seconds = 90: a multiple of 60: the alarms watch load balancer and ECS metrics, which CloudWatch has once a minute (10 and 30 are for high-resolution metrics only)",
            ),
            (
                "period-seconds = 3600\nevaluation-periods = 25",
                "observability.evaluation-periods = 25: at most 24 with period-seconds = 3600: evaluation-periods * period-seconds may not exceed one day (86400 s)",
            ),
        ];
        for (input, expected) in cases {
            assert_eq!(problems(input), [*expected], "{input}");
        }
    }

    #[test]
    fn email_addresses() {
        for ok in [
            "ops@example.com",
            "a.b+alerts@sub.example.co.uk",
            "x_y@ex-ample.io",
        ] {
            assert!(is_email(ok), "{ok}");
        }
        for bad in [
            "",
            "ops",
            "ops@",
            "@example.com",
            "ops@example",
            "ops@@example.com",
            "ops@example..com",
            "o ps@example.com",
            "ops@-example.com",
            ".ops@example.com",
            "ops@example.c0m",
            "ops@exa_mple.com",
        ] {
            assert!(!is_email(bad), "{bad}");
            assert!(
                check(&format!("alarm-email = {bad:?}"))
                    .unwrap_err()
                    .mentions("observability.alarm-email"),
                "{bad}"
            );
        }
    }

    #[test]
    fn unknown_keys_are_rejected_by_name() {
        let err = toml::from_str::<ObservabilityConfig>("alarm-mail = \"a@b.co\"")
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown field `alarm-mail`"), "{err}");
    }
}
