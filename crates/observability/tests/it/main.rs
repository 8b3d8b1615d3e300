//! The observability module against moto: one moto server for this test binary, one moto
//! account per test, so tests run in parallel without seeing each other. `mocked` holds the
//! cases moto cannot show (what exactly we send; pending email subscriptions).

#![allow(clippy::unwrap_used)] // Test helpers outside #[test] functions.

mod mocked;

use std::collections::BTreeMap;
use std::time::Instant;

use aws_sdk_cloudwatch::types::{MetricAlarm, MetricDatum, StandardUnit};
use infra::{Action, Config, Context, Module, Plan, StackName};
use sandbox::{MotoAccount, MotoServer};
use serde_json::Value;
use stackproof_observability::{
    Observability, ObservabilityConfig, ObservabilityInputs, ObservabilityOutputs,
};

const REGION: &str = "eu-west-1";

fn context_in(stack: &str, account: MotoAccount) -> Context {
    let moto = MotoServer::shared().expect("moto starts (run `cargo xtask setup` first)");
    let sdk = sandbox::sdk_config(moto.endpoint(), REGION);
    Context::builder(sdk, StackName::new(stack).unwrap())
        .interceptor(account)
        .waits(sandbox::TEST_WAITS)
        .build()
}

fn context(stack: &str) -> Context {
    let moto = MotoServer::shared().expect("moto starts (run `cargo xtask setup` first)");
    context_in(stack, moto.fresh_account())
}

fn module(cx: &Context, toml_text: &str) -> Observability {
    let config: ObservabilityConfig = toml::from_str(toml_text).unwrap();
    Observability::new(cx, config.validate(&cx.scope()).unwrap())
}

fn inputs(stack: &str) -> ObservabilityInputs {
    ObservabilityInputs {
        zones: vec!["eu-west-1a".to_owned(), "eu-west-1b".to_owned()],
        load_balancer_arn_suffix: format!("app/{stack}/50dc6c495c0c9188"),
        target_group_arn_suffix: format!("targetgroup/{stack}/73e2d6bc24d8a067"),
        cluster_name: stack.to_owned(),
        service_name: format!("{stack}-app"),
    }
}

fn cw(cx: &Context) -> aws_sdk_cloudwatch::Client {
    infra::client!(cx, aws_sdk_cloudwatch)
}

fn sns(cx: &Context) -> aws_sdk_sns::Client {
    infra::client!(cx, aws_sdk_sns)
}

fn changes(plan: &Plan, action: Action) -> Vec<String> {
    plan.changes
        .iter()
        .filter(|c| c.action == action)
        .map(|c| format!("{} {}", c.kind, c.name))
        .collect()
}

async fn alarms(cx: &Context) -> BTreeMap<String, MetricAlarm> {
    cw(cx)
        .describe_alarms()
        .send()
        .await
        .unwrap()
        .metric_alarms()
        .iter()
        .map(|a| (a.alarm_name().unwrap().to_owned(), a.clone()))
        .collect()
}

async fn dashboards(cx: &Context) -> Vec<String> {
    cw(cx)
        .list_dashboards()
        .send()
        .await
        .unwrap()
        .dashboard_entries()
        .iter()
        .filter_map(|d| d.dashboard_name().map(str::to_owned))
        .collect()
}

async fn topics(cx: &Context) -> Vec<String> {
    sns(cx)
        .list_topics()
        .send()
        .await
        .unwrap()
        .topics()
        .iter()
        .filter_map(|t| t.topic_arn().map(str::to_owned))
        .collect()
}

fn dims(a: &MetricAlarm) -> BTreeMap<&str, &str> {
    a.dimensions()
        .iter()
        .map(|d| (d.name().unwrap(), d.value().unwrap()))
        .collect()
}

const EMAIL: &str = "alarm-email = \"ops@example.com\"";

#[tokio::test]
async fn plan_on_an_empty_account_lists_every_create_and_writes_nothing() {
    let cx = context("plan-empty");
    let plan = module(&cx, EMAIL)
        .plan(&cx, &inputs("plan-empty"))
        .await
        .unwrap();
    assert_eq!(
        changes(&plan, Action::Create),
        [
            "sns-topic alarms",
            "sns-subscription ops@example.com",
            "alarm plan-empty-5xx-rate",
            "alarm plan-empty-latency-p99",
            "alarm plan-empty-unhealthy-hosts-eu-west-1a",
            "alarm plan-empty-unhealthy-hosts-eu-west-1b",
            "dashboard plan-empty",
        ],
        "{plan}"
    );
    assert_eq!(plan.counts().update + plan.counts().delete, 0);
    let calls = cx.calls().snapshot();
    assert_eq!(calls.writes(), 0, "{calls}");
    assert!(alarms(&cx).await.is_empty());
    assert!(dashboards(&cx).await.is_empty());
}

#[tokio::test]
async fn apply_builds_dashboard_alarms_and_topic_and_a_second_apply_writes_nothing() {
    let stack = "apply-twice";
    let cx = context(stack);
    let m = module(&cx, &format!("{EMAIL}\nlatency-p99-ms = 750"));
    let inputs = inputs(stack);

    let t = Instant::now();
    let out = m.apply(&cx, &inputs).await.unwrap();
    let first = cx.calls().snapshot();
    eprintln!("apply (create) {:?}: {first}", t.elapsed());

    assert_eq!(out.dashboard_name, stack);
    assert_eq!(out.check_namespace, "stackproof/apply-twice");
    assert_eq!(
        out.alarm_names,
        [
            "apply-twice-5xx-rate",
            "apply-twice-latency-p99",
            "apply-twice-unhealthy-hosts-eu-west-1a",
            "apply-twice-unhealthy-hosts-eu-west-1b"
        ]
    );
    let topic = out.topic_arn.clone().unwrap();
    assert!(topic.ends_with(":apply-twice-alarms"), "{topic}");

    // The dashboard body, read back and parsed.
    let body = cw(&cx)
        .get_dashboard()
        .dashboard_name(stack)
        .send()
        .await
        .unwrap();
    let body: Value = serde_json::from_str(body.dashboard_body().unwrap()).unwrap();
    assert_eq!(
        body,
        serde_json::to_value(m.dashboard(&cx, &inputs)).unwrap()
    );
    let lines: Vec<&Value> = body["widgets"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|w| w["properties"]["metrics"].as_array())
        .flatten()
        .collect();
    let has = |ns: &str, metric: &str| lines.iter().any(|l| l[0] == ns && l[1] == metric);
    for (ns, metric) in [
        ("AWS/ECS", "CPUUtilization"),
        ("AWS/ECS", "MemoryUtilization"),
        ("ECS/ContainerInsights", "RunningTaskCount"),
        ("AWS/ApplicationELB", "RequestCount"),
        ("AWS/ApplicationELB", "HTTPCode_Target_2XX_Count"),
        ("AWS/ApplicationELB", "HTTPCode_Target_4XX_Count"),
        ("AWS/ApplicationELB", "HTTPCode_Target_5XX_Count"),
        ("AWS/ApplicationELB", "HTTPCode_ELB_5XX_Count"),
        ("AWS/ApplicationELB", "TargetResponseTime"),
        ("AWS/ApplicationELB", "HealthyHostCount"),
        ("AWS/ApplicationELB", "UnHealthyHostCount"),
        ("stackproof/apply-twice", "SuccessPercent"),
        ("stackproof/apply-twice", "LatencyP99"),
        ("stackproof/apply-twice", "RequestCount"),
    ] {
        assert!(has(ns, metric), "{ns} {metric} missing from {body:#}");
    }
    let unhealthy_zones: Vec<&str> = lines
        .iter()
        .filter(|l| l[1] == "UnHealthyHostCount")
        .map(|l| l[7].as_str().unwrap())
        .collect();
    assert_eq!(unhealthy_zones, ["eu-west-1a", "eu-west-1b"]);

    // The alarms, read back.
    let all = alarms(&cx).await;
    assert_eq!(all.len(), 4);
    let rate = &all["apply-twice-5xx-rate"];
    assert_eq!(rate.threshold(), Some(1.0));
    assert_eq!(rate.evaluation_periods(), Some(3));
    assert_eq!(rate.datapoints_to_alarm(), Some(3));
    assert_eq!(rate.treat_missing_data(), Some("notBreaching"));
    assert_eq!(
        rate.comparison_operator().unwrap().as_str(),
        "GreaterThanThreshold"
    );
    assert_eq!(rate.alarm_actions(), std::slice::from_ref(&topic));
    assert_eq!(rate.ok_actions(), std::slice::from_ref(&topic));
    let expression: Vec<&str> = rate
        .metrics()
        .iter()
        .filter_map(|q| q.expression())
        .collect();
    assert_eq!(
        expression,
        ["(FILL(elb5xx, 0) + FILL(target5xx, 0)) / requests * 100"]
    );
    let stats: Vec<(&str, &str, &str, i32)> = rate
        .metrics()
        .iter()
        .filter_map(|q| {
            let s = q.metric_stat()?;
            let m = s.metric()?;
            assert_eq!(q.return_data(), Some(false));
            assert_eq!(
                m.dimensions()[0].value(),
                Some(inputs.load_balancer_arn_suffix.as_str())
            );
            Some((q.id()?, m.metric_name()?, s.stat()?, s.period()?))
        })
        .collect();
    assert_eq!(
        stats,
        [
            ("requests", "RequestCount", "Sum", 60),
            ("elb5xx", "HTTPCode_ELB_5XX_Count", "Sum", 60),
            ("target5xx", "HTTPCode_Target_5XX_Count", "Sum", 60)
        ]
    );
    let latency = &all["apply-twice-latency-p99"];
    assert_eq!(latency.metric_name(), Some("TargetResponseTime"));
    assert_eq!(latency.extended_statistic(), Some("p99"));
    assert_eq!(latency.threshold(), Some(0.75), "750 ms in seconds");
    assert_eq!(latency.period(), Some(60));
    for zone in &inputs.zones {
        let a = &all[&format!("apply-twice-unhealthy-hosts-{zone}")];
        assert_eq!(a.metric_name(), Some("UnHealthyHostCount"));
        assert_eq!(a.namespace(), Some("AWS/ApplicationELB"));
        assert_eq!(a.statistic().unwrap().as_str(), "Maximum");
        assert_eq!(a.threshold(), Some(0.0));
        assert_eq!(
            dims(a),
            BTreeMap::from([
                ("AvailabilityZone", zone.as_str()),
                ("LoadBalancer", inputs.load_balancer_arn_suffix.as_str()),
                ("TargetGroup", inputs.target_group_arn_suffix.as_str()),
            ])
        );
        assert_eq!(a.alarm_actions(), std::slice::from_ref(&topic));
    }
    // Tagged at creation.
    let tags = cw(&cx)
        .list_tags_for_resource()
        .resource_arn(rate.alarm_arn().unwrap())
        .send()
        .await
        .unwrap();
    let tag = |k: &str| {
        tags.tags()
            .iter()
            .find(|t| t.key() == Some(k))
            .and_then(|t| t.value())
    };
    assert_eq!(tag("stackproof:stack"), Some(stack));
    assert_eq!(tag("stackproof:module"), Some("observability"));
    assert_eq!(tag("stackproof:name"), Some("5xx-rate"));

    // The topic, tagged, with the email subscription.
    let sns = sns(&cx);
    let topic_tags = sns
        .list_tags_for_resource()
        .resource_arn(&topic)
        .send()
        .await
        .unwrap();
    assert!(
        topic_tags
            .tags()
            .iter()
            .any(|t| t.key() == "stackproof:stack" && t.value() == stack)
    );
    let subs = sns
        .list_subscriptions_by_topic()
        .topic_arn(&topic)
        .send()
        .await
        .unwrap();
    let subs: Vec<(&str, &str)> = subs
        .subscriptions()
        .iter()
        .map(|s| (s.protocol().unwrap(), s.endpoint().unwrap()))
        .collect();
    assert_eq!(subs, [("email", "ops@example.com")]);

    // Again: an empty plan in few calls, and an apply that writes nothing.
    let before = cx.calls().snapshot();
    let t = Instant::now();
    let plan = m.plan(&cx, &inputs).await.unwrap();
    let plan_calls = cx.calls().snapshot().since(&before);
    eprintln!("no-change plan {:?}: {plan_calls}", t.elapsed());
    assert!(plan.is_empty(), "{plan}");
    assert!(plan_calls.total() <= 6, "{plan_calls}");
    let before = cx.calls().snapshot();
    let again: ObservabilityOutputs = m.apply(&cx, &inputs).await.unwrap();
    let second = cx.calls().snapshot().since(&before);
    assert_eq!(second.writes(), 0, "{second}");
    assert_eq!(again, out);
}

#[tokio::test]
async fn a_changed_threshold_a_deleted_alarm_and_an_edited_dashboard_are_repaired() {
    let stack = "drift";
    let cx = context(stack);
    let m = module(&cx, "");
    let inputs = inputs(stack);
    m.apply(&cx, &inputs).await.unwrap();
    let cw = cw(&cx);

    // Behind our back: raise the error-rate threshold, delete one zone's alarm, edit the
    // dashboard.
    let rate = alarms(&cx).await["drift-5xx-rate"].clone();
    cw.put_metric_alarm()
        .alarm_name("drift-5xx-rate")
        .set_metrics(Some(rate.metrics().to_vec()))
        .evaluation_periods(3)
        .datapoints_to_alarm(3)
        .threshold(50.0)
        .comparison_operator(aws_sdk_cloudwatch::types::ComparisonOperator::GreaterThanThreshold)
        .treat_missing_data("notBreaching")
        .set_alarm_description(rate.alarm_description().map(str::to_owned))
        .send()
        .await
        .unwrap();
    cw.delete_alarms()
        .alarm_names("drift-unhealthy-hosts-eu-west-1b")
        .send()
        .await
        .unwrap();
    cw.put_dashboard()
        .dashboard_name(stack)
        .dashboard_body(r#"{"widgets":[]}"#)
        .send()
        .await
        .unwrap();

    let plan = m.plan(&cx, &inputs).await.unwrap();
    assert_eq!(
        changes(&plan, Action::Update),
        ["alarm drift-5xx-rate", "dashboard drift"],
        "{plan}"
    );
    let update = plan
        .changes
        .iter()
        .find(|c| c.name == "drift-5xx-rate")
        .unwrap();
    assert_eq!(update.details, ["threshold 50.0 -> 1.0"], "{plan}");
    assert_eq!(
        changes(&plan, Action::Create),
        ["alarm drift-unhealthy-hosts-eu-west-1b"],
        "{plan}"
    );

    m.apply(&cx, &inputs).await.unwrap();
    let all = alarms(&cx).await;
    assert_eq!(all["drift-5xx-rate"].threshold(), Some(1.0));
    assert!(all.contains_key("drift-unhealthy-hosts-eu-west-1b"));
    let body = cw
        .get_dashboard()
        .dashboard_name(stack)
        .send()
        .await
        .unwrap();
    let body: Value = serde_json::from_str(body.dashboard_body().unwrap()).unwrap();
    assert_eq!(
        body,
        serde_json::to_value(m.dashboard(&cx, &inputs)).unwrap()
    );
    assert!(m.plan(&cx, &inputs).await.unwrap().is_empty());
}

#[tokio::test]
async fn unsetting_the_email_removes_the_topic_and_the_alarm_actions() {
    let stack = "email-off";
    let cx = context(stack);
    let inputs = inputs(stack);
    let out = module(&cx, EMAIL).apply(&cx, &inputs).await.unwrap();
    let topic = out.topic_arn.unwrap();
    assert_eq!(topics(&cx).await, std::slice::from_ref(&topic));

    // A new address: the old subscription goes, the new one comes, the topic stays.
    let m = module(&cx, "alarm-email = \"oncall@example.com\"");
    let plan = m.plan(&cx, &inputs).await.unwrap();
    assert_eq!(
        changes(&plan, Action::Delete),
        ["sns-subscription ops@example.com"],
        "{plan}"
    );
    assert_eq!(
        changes(&plan, Action::Create),
        ["sns-subscription oncall@example.com"],
        "{plan}"
    );
    m.apply(&cx, &inputs).await.unwrap();
    let subs = sns(&cx)
        .list_subscriptions_by_topic()
        .topic_arn(&topic)
        .send()
        .await
        .unwrap();
    let endpoints: Vec<&str> = subs
        .subscriptions()
        .iter()
        .filter_map(|s| s.endpoint())
        .collect();
    assert_eq!(endpoints, ["oncall@example.com"]);

    // No address: alarms lose their actions, then the topic is deleted.
    let m = module(&cx, "");
    let plan = m.plan(&cx, &inputs).await.unwrap();
    assert_eq!(plan.counts().update, 4, "{plan}");
    assert_eq!(
        changes(&plan, Action::Delete),
        ["sns-subscription oncall@example.com", "sns-topic alarms"],
        "{plan}"
    );
    let out = m.apply(&cx, &inputs).await.unwrap();
    assert_eq!(out.topic_arn, None);
    assert!(topics(&cx).await.is_empty());
    for a in alarms(&cx).await.values() {
        assert!(
            a.alarm_actions().is_empty() && a.ok_actions().is_empty(),
            "{a:?}"
        );
    }
    assert!(m.plan(&cx, &inputs).await.unwrap().is_empty());
}

#[tokio::test]
async fn fewer_zones_and_no_dashboard_remove_what_is_no_longer_wanted() {
    let stack = "shrink";
    let cx = context(stack);
    let mut inputs = inputs(stack);
    module(&cx, "").apply(&cx, &inputs).await.unwrap();
    inputs.zones.pop();
    let m = module(&cx, "dashboard = false");
    let plan = m.plan(&cx, &inputs).await.unwrap();
    assert_eq!(
        changes(&plan, Action::Delete),
        [
            "alarm shrink-unhealthy-hosts-eu-west-1b",
            "dashboard shrink"
        ],
        "{plan}"
    );
    let out = m.apply(&cx, &inputs).await.unwrap();
    assert_eq!(out.dashboard_name, "");
    assert_eq!(alarms(&cx).await.len(), 3);
    assert!(dashboards(&cx).await.is_empty());
}

#[tokio::test]
async fn destroy_leaves_nothing_and_spares_a_stack_whose_name_shares_the_prefix() {
    let moto = MotoServer::shared().unwrap();
    let account = moto.fresh_account();
    let cx = context_in("gone", account.clone());
    let other = context_in("gone-x", account);
    let m = module(&cx, EMAIL);
    m.apply(&cx, &inputs("gone")).await.unwrap();
    module(&other, "dashboard = false")
        .apply(&other, &inputs("gone-x"))
        .await
        .unwrap();
    assert_eq!(alarms(&cx).await.len(), 8);
    // The other stack's alarms start with "gone-" too, yet are not ours.
    assert!(m.plan(&cx, &inputs("gone")).await.unwrap().is_empty());

    let before = cx.calls().snapshot();
    let plan = m.plan_destroy(&cx).await.unwrap();
    assert_eq!(cx.calls().snapshot().since(&before).writes(), 0);
    assert_eq!(plan.counts().delete, 7, "{plan}");

    let t = Instant::now();
    let before = cx.calls().snapshot();
    let removed = m.destroy(&cx).await.unwrap();
    let calls = cx.calls().snapshot().since(&before);
    eprintln!("destroy {:?}: {calls}", t.elapsed());
    assert_eq!(removed, plan);
    let left: Vec<String> = alarms(&cx).await.into_keys().collect();
    assert!(left.iter().all(|n| n.starts_with("gone-x-")), "{left:?}");
    assert_eq!(left.len(), 4);
    assert!(dashboards(&cx).await.is_empty());
    assert!(topics(&cx).await.is_empty());
    // Again: nothing to do.
    assert!(m.destroy(&cx).await.unwrap().is_empty());
}

#[tokio::test]
async fn check_metrics_can_be_published_and_listed() {
    let stack = "check";
    let cx = context(stack);
    let ns = stackproof_observability::check_namespace(stack);
    let cw = cw(&cx);
    let datum = |name: &str, value: f64, unit: StandardUnit| {
        MetricDatum::builder()
            .metric_name(name)
            .value(value)
            .unit(unit)
            .build()
    };
    cw.put_metric_data()
        .namespace(&ns)
        .metric_data(datum(
            stackproof_observability::SUCCESS_PERCENT,
            99.5,
            StandardUnit::Percent,
        ))
        .metric_data(datum(
            stackproof_observability::LATENCY_P99,
            120.0,
            StandardUnit::Milliseconds,
        ))
        .metric_data(datum(
            stackproof_observability::REQUEST_COUNT,
            600.0,
            StandardUnit::Count,
        ))
        .send()
        .await
        .unwrap();
    let listed = cw.list_metrics().namespace(&ns).send().await.unwrap();
    let mut names: Vec<&str> = listed
        .metrics()
        .iter()
        .filter_map(|m| m.metric_name())
        .collect();
    names.sort();
    assert_eq!(names, ["LatencyP99", "RequestCount", "SuccessPercent"]);
}

#[tokio::test]
async fn a_half_finished_apply_is_resumed_and_an_untagged_topic_is_adopted() {
    let stack = "resume";
    let cx = context(stack);
    let inputs = inputs(stack);
    // As if an earlier apply died after creating the topic (here: without tags) and nothing else.
    let topic = sns(&cx)
        .create_topic()
        .name("resume-alarms")
        .send()
        .await
        .unwrap()
        .topic_arn()
        .unwrap()
        .to_owned();
    let m = module(&cx, EMAIL);
    let plan = m.plan(&cx, &inputs).await.unwrap();
    assert_eq!(
        changes(&plan, Action::Update),
        ["sns-topic alarms"],
        "{plan}"
    );
    assert_eq!(plan.counts().create, 6, "{plan}");
    let out = m.apply(&cx, &inputs).await.unwrap();
    assert_eq!(out.topic_arn.as_deref(), Some(topic.as_str()));
    let tags = sns(&cx)
        .list_tags_for_resource()
        .resource_arn(&topic)
        .send()
        .await
        .unwrap();
    assert!(
        tags.tags()
            .iter()
            .any(|t| t.key() == "stackproof:module" && t.value() == "observability")
    );
    assert!(
        alarms(&cx)
            .await
            .values()
            .all(|a| a.alarm_actions() == [topic.clone()])
    );
    assert!(m.plan(&cx, &inputs).await.unwrap().is_empty());
}
