//! What moto cannot show, with mocked CloudWatch and SNS: the exact requests we send (moto
//! keeps tags given on an alarm *update*, AWS ignores them, so only the request proves tags go
//! with the create), and an email subscription still pending confirmation (moto confirms
//! email subscriptions at once; AWS leaves them `PendingConfirmation` until the recipient
//! clicks), which must count as subscribed and never be re-sent.

use aws_sdk_cloudwatch::operation::describe_alarms::DescribeAlarmsOutput;
use aws_sdk_cloudwatch::operation::get_dashboard::GetDashboardError;
use aws_sdk_cloudwatch::operation::put_dashboard::PutDashboardOutput;
use aws_sdk_cloudwatch::operation::put_metric_alarm::{PutMetricAlarmInput, PutMetricAlarmOutput};
use aws_sdk_cloudwatch::types::error::DashboardNotFoundError;
use aws_sdk_sns::operation::list_subscriptions_by_topic::ListSubscriptionsByTopicOutput;
use aws_sdk_sns::operation::list_tags_for_resource::ListTagsForResourceOutput;
use aws_sdk_sns::operation::list_topics::ListTopicsOutput;
use aws_sdk_sns::operation::subscribe::SubscribeOutput;
use aws_sdk_sns::types::{Subscription, Tag, Topic};
use aws_smithy_mocks::{RuleMode, mock, mock_client};
use infra::{Context, Module, StackName};
use stackproof_observability::{Observability, ObservabilityConfig};

use super::inputs;

const TOPIC: &str = "arn:aws:sns:eu-west-1:123456789012:mocked-alarms";

fn cx() -> Context {
    Context::mocked(StackName::new("mocked").unwrap()).build()
}

fn tag(req: &PutMetricAlarmInput, key: &str) -> Option<String> {
    req.tags()
        .iter()
        .find(|t| t.key() == Some(key))
        .and_then(|t| t.value().map(str::to_owned))
}

/// Every alarm request carries the identity tags, the topic as alarm and OK action, and the
/// missing-data and evaluation settings.
fn well_formed(req: &PutMetricAlarmInput) -> bool {
    let name = req.alarm_name().unwrap_or_default();
    tag(req, "stackproof:stack").as_deref() == Some("mocked")
        && tag(req, "stackproof:module").as_deref() == Some("observability")
        && tag(req, "stackproof:name")
            .map(|n| format!("mocked-{n}"))
            .as_deref()
            == Some(name)
        && req.alarm_actions() == [TOPIC]
        && req.ok_actions() == [TOPIC]
        && req.actions_enabled() == Some(true)
        && req.treat_missing_data() == Some("notBreaching")
        && req.evaluation_periods() == Some(3)
        && req.datapoints_to_alarm() == Some(3)
        && req.comparison_operator().map(|c| c.as_str()) == Some("GreaterThanThreshold")
}

/// The error-rate alarm is metric math: three sums that return no data, one expression that
/// does, no metric of its own.
fn error_rate(req: &PutMetricAlarmInput) -> bool {
    let q = req.metrics();
    req.metric_name().is_none()
        && req.threshold() == Some(1.0)
        && q.len() == 4
        && q[..3].iter().all(|m| {
            m.return_data() == Some(false)
                && m.metric_stat().is_some_and(|s| {
                    s.stat() == Some("Sum")
                        && s.period() == Some(60)
                        && s.metric().and_then(|m| m.namespace()) == Some("AWS/ApplicationELB")
                })
        })
        && q[3].return_data() == Some(true)
        && q[3].expression() == Some("(FILL(elb5xx, 0) + FILL(target5xx, 0)) / requests * 100")
}

#[tokio::test]
async fn alarms_are_sent_tagged_with_actions_and_a_pending_subscription_is_left_alone() {
    let describe = mock!(aws_sdk_cloudwatch::Client::describe_alarms)
        .then_output(|| DescribeAlarmsOutput::builder().build());
    let no_dashboard = mock!(aws_sdk_cloudwatch::Client::get_dashboard).then_error(|| {
        GetDashboardError::DashboardNotFoundError(
            DashboardNotFoundError::builder().message("mocked").build(),
        )
    });
    let rate = mock!(aws_sdk_cloudwatch::Client::put_metric_alarm)
        .match_requests(|r| {
            r.alarm_name() == Some("mocked-5xx-rate") && well_formed(r) && error_rate(r)
        })
        .then_output(|| PutMetricAlarmOutput::builder().build());
    let latency = mock!(aws_sdk_cloudwatch::Client::put_metric_alarm)
        .match_requests(|r| {
            r.alarm_name() == Some("mocked-latency-p99")
                && well_formed(r)
                && r.extended_statistic() == Some("p99")
                && r.statistic().is_none()
                && r.threshold() == Some(1.0)
        })
        .then_output(|| PutMetricAlarmOutput::builder().build());
    let hosts = mock!(aws_sdk_cloudwatch::Client::put_metric_alarm)
        .match_requests(|r| {
            r.alarm_name()
                .is_some_and(|n| n.starts_with("mocked-unhealthy-hosts-"))
                && well_formed(r)
                && r.dimensions().len() == 3
                && r.statistic().map(|s| s.as_str()) == Some("Maximum")
        })
        .then_output(|| PutMetricAlarmOutput::builder().build());
    let dashboard = mock!(aws_sdk_cloudwatch::Client::put_dashboard)
        .match_requests(|r| {
            r.dashboard_name() == Some("mocked")
                && r.dashboard_body()
                    .is_some_and(|b| serde_json::from_str::<serde_json::Value>(b).is_ok())
        })
        .then_output(|| PutDashboardOutput::builder().build());
    let cw = mock_client!(
        aws_sdk_cloudwatch,
        RuleMode::MatchAny,
        [
            &describe,
            &no_dashboard,
            &rate,
            &latency,
            &hosts,
            &dashboard
        ]
    );

    let topics = mock!(aws_sdk_sns::Client::list_topics).then_output(|| {
        ListTopicsOutput::builder()
            .topics(Topic::builder().topic_arn(TOPIC).build())
            .build()
    });
    let tags = mock!(aws_sdk_sns::Client::list_tags_for_resource).then_output(|| {
        ListTagsForResourceOutput::builder()
            .tags(
                Tag::builder()
                    .key("stackproof:stack")
                    .value("mocked")
                    .build()
                    .unwrap(),
            )
            .tags(
                Tag::builder()
                    .key("stackproof:module")
                    .value("observability")
                    .build()
                    .unwrap(),
            )
            .build()
    });
    let pending = mock!(aws_sdk_sns::Client::list_subscriptions_by_topic).then_output(|| {
        ListSubscriptionsByTopicOutput::builder()
            .subscriptions(
                Subscription::builder()
                    .subscription_arn("PendingConfirmation")
                    .protocol("email")
                    .endpoint("ops@example.com")
                    .topic_arn(TOPIC)
                    .build(),
            )
            .build()
    });
    let subscribe =
        mock!(aws_sdk_sns::Client::subscribe).then_output(|| SubscribeOutput::builder().build());
    let sns = mock_client!(
        aws_sdk_sns,
        RuleMode::MatchAny,
        [&topics, &tags, &pending, &subscribe]
    );

    let config: ObservabilityConfig = toml::from_str("alarm-email = \"ops@example.com\"").unwrap();
    let m = Observability::with_clients(
        infra::Config::validate(&config, &infra::Scope::new("web", "eu-west-1")).unwrap(),
        cw,
        sns,
    );
    let cx = cx();
    let out = m.apply(&cx, &inputs("mocked")).await.unwrap();
    assert_eq!(out.topic_arn.as_deref(), Some(TOPIC));
    assert_eq!(
        (rate.num_calls(), latency.num_calls(), hosts.num_calls()),
        (1, 1, 2)
    );
    assert_eq!(dashboard.num_calls(), 1);
    assert_eq!(
        subscribe.num_calls(),
        0,
        "a pending subscription is not sent again"
    );
    assert_eq!(
        describe.num_calls(),
        1,
        "one DescribeAlarms finds every alarm"
    );
}

#[tokio::test]
async fn a_topic_not_yet_visible_to_subscribe_is_retried_with_backoff() {
    use aws_sdk_sns::operation::create_topic::CreateTopicOutput;
    use aws_sdk_sns::operation::subscribe::SubscribeError;
    use aws_sdk_sns::types::error::NotFoundException;

    let describe = mock!(aws_sdk_cloudwatch::Client::describe_alarms)
        .then_output(|| DescribeAlarmsOutput::builder().build());
    let no_dashboard = mock!(aws_sdk_cloudwatch::Client::get_dashboard).then_error(|| {
        GetDashboardError::DashboardNotFoundError(
            DashboardNotFoundError::builder().message("mocked").build(),
        )
    });
    let put = mock!(aws_sdk_cloudwatch::Client::put_metric_alarm)
        .match_requests(well_formed)
        .then_output(|| PutMetricAlarmOutput::builder().build());
    let cw = mock_client!(
        aws_sdk_cloudwatch,
        RuleMode::MatchAny,
        [&describe, &no_dashboard, &put]
    );
    let topics =
        mock!(aws_sdk_sns::Client::list_topics).then_output(|| ListTopicsOutput::builder().build());
    let create = mock!(aws_sdk_sns::Client::create_topic)
        .match_requests(|r| {
            r.name() == Some("mocked-alarms")
                && r.tags()
                    .iter()
                    .any(|t| t.key() == "stackproof:stack" && t.value() == "mocked")
        })
        .then_output(|| CreateTopicOutput::builder().topic_arn(TOPIC).build());
    let subscribe = mock!(aws_sdk_sns::Client::subscribe)
        .match_requests(|r| {
            r.topic_arn() == Some(TOPIC)
                && r.protocol() == Some("email")
                && r.endpoint() == Some("ops@example.com")
        })
        .sequence()
        .error(|| {
            SubscribeError::NotFoundException(
                NotFoundException::builder()
                    .message("Topic does not exist")
                    .meta(
                        aws_smithy_types::error::ErrorMetadata::builder()
                            .code("NotFound")
                            .message("Topic does not exist")
                            .build(),
                    )
                    .build(),
            )
        })
        .times(2)
        .output(|| {
            SubscribeOutput::builder()
                .subscription_arn("pending confirmation")
                .build()
        })
        .build();
    let sns = mock_client!(
        aws_sdk_sns,
        RuleMode::MatchAny,
        [&topics, &create, &subscribe]
    );
    let config: ObservabilityConfig =
        toml::from_str("alarm-email = \"ops@example.com\"\ndashboard = false").unwrap();
    let m = Observability::with_clients(
        infra::Config::validate(&config, &infra::Scope::new("web", "eu-west-1")).unwrap(),
        cw,
        sns,
    );
    let waits = infra::WaitPolicy {
        initial_delay: std::time::Duration::from_millis(5),
        max_delay: std::time::Duration::from_millis(20),
        ..infra::WaitPolicy::default()
    };
    let cx = Context::mocked(StackName::new("mocked").unwrap())
        .waits(waits)
        .build();
    let out = m.apply(&cx, &inputs("mocked")).await.unwrap();
    assert_eq!(out.topic_arn.as_deref(), Some(TOPIC));
    assert_eq!(create.num_calls(), 1);
    assert_eq!(subscribe.num_calls(), 3, "two NotFound, then subscribed");
    assert_eq!(put.num_calls(), 4);
}
