//! The load balancer module against moto: each test deploys a network with the `Network` module
//! in its own moto account, then the load balancer on top of it.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use aws_sdk_elasticloadbalancingv2::Client;
use aws_sdk_elasticloadbalancingv2::types::{
    ActionTypeEnum, Listener, LoadBalancerAttribute, LoadBalancerSchemeEnum, LoadBalancerTypeEnum,
    ProtocolEnum, TargetGroup,
};
use infra::{Action, Config, Context, Module, Plan, StackName};
use sandbox::MotoServer;
use stackproof_network::{
    AccessLogs, Error, LoadBalancer, LoadBalancerConfig, LoadBalancerInputs, Network,
    NetworkConfig, NetworkOutputs,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{REGION, kinds};

/// A context in a fresh moto account, and that account's id.
fn context(stack: &str) -> (Context, String) {
    context_with(stack, std::sync::Arc::new(infra::NoProgress))
}

/// [`context`] with a progress sink.
fn context_with(stack: &str, progress: std::sync::Arc<dyn infra::Progress>) -> (Context, String) {
    let moto = MotoServer::shared().expect("moto starts (run `cargo xtask setup` first)");
    let sdk = sandbox::sdk_config(moto.endpoint(), REGION);
    let account = moto.fresh_account();
    let id = account.0.clone();
    let cx = Context::builder(sdk, StackName::new(stack).unwrap())
        .interceptor(account)
        .waits(sandbox::TEST_WAITS)
        .progress(progress)
        .build();
    (cx, id)
}

fn elb(cx: &Context) -> Client {
    infra::client!(cx, aws_sdk_elasticloadbalancingv2)
}

async fn network(cx: &Context, toml_text: &str) -> (Network, NetworkOutputs) {
    let config: NetworkConfig = toml::from_str(toml_text).unwrap();
    let net = Network::new(cx, config.validate(&cx.scope()).unwrap());
    let out = net.apply(cx, &()).await.unwrap();
    (net, out)
}

fn load_balancer(cx: &Context, toml_text: &str) -> LoadBalancer {
    let config: LoadBalancerConfig = toml::from_str(toml_text).unwrap();
    LoadBalancer::new(cx, config.validate(&cx.scope()).unwrap())
}

fn inputs(net: &NetworkOutputs, logs: bool) -> LoadBalancerInputs {
    LoadBalancerInputs {
        vpc_id: net.vpc_id.clone(),
        zones: net.zones.clone(),
        public_subnet_ids: net.public_subnet_ids.clone(),
        security_group_id: net.load_balancer_security_group_id.clone(),
        target_port: 8080,
        access_logs: logs.then(|| AccessLogs {
            bucket: "demo-logs-123456789012-eu-west-1".to_owned(),
            prefix: "alb".to_owned(),
        }),
    }
}

async fn lb_attributes(elb: &Client, arn: &str) -> BTreeMap<String, String> {
    elb.describe_load_balancer_attributes()
        .load_balancer_arn(arn)
        .send()
        .await
        .unwrap()
        .attributes()
        .iter()
        .map(|a| {
            (
                a.key().unwrap().to_owned(),
                a.value().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

async fn target_group(elb: &Client, arn: &str) -> TargetGroup {
    elb.describe_target_groups()
        .target_group_arns(arn)
        .send()
        .await
        .unwrap()
        .target_groups()[0]
        .clone()
}

async fn listeners(elb: &Client, lb_arn: &str) -> Vec<Listener> {
    let mut all = elb
        .describe_listeners()
        .load_balancer_arn(lb_arn)
        .send()
        .await
        .unwrap()
        .listeners()
        .to_vec();
    all.sort_by_key(|l| l.port());
    all
}

/// Records each finished change with its time, to check progress reporting and show where the
/// time goes.
#[derive(Debug, Default)]
struct Record(std::sync::Mutex<Vec<String>>);

impl infra::Progress for Record {
    fn on(&self, event: &infra::Event<'_>) {
        if let infra::Event::Finished {
            change, elapsed, ..
        } = event
        {
            let line = format!(
                "{:?} {} {} {elapsed:.1?}",
                change.action, change.kind, change.name
            );
            self.0.lock().unwrap().push(line);
        }
    }
}

/// Every ELBv2 load balancer and target group in the test's account (nothing else lives there).
async fn elbv2_census(elb: &Client) -> (usize, usize) {
    let lbs = elb
        .describe_load_balancers()
        .send()
        .await
        .unwrap()
        .load_balancers()
        .len();
    let tgs = elb
        .describe_target_groups()
        .send()
        .await
        .unwrap()
        .target_groups()
        .len();
    (lbs, tgs)
}

fn changes(plan: &Plan) -> Vec<String> {
    plan.changes
        .iter()
        .map(|c| format!("{:?} {} {}", c.action, c.kind, c.name))
        .collect()
}

/// Requests an ACM certificate from moto with a raw JSON request (the workspace has no ACM
/// client): moto only lets an HTTPS listener use a certificate its ACM knows.
async fn request_certificate(cx: &Context, account: &str) -> String {
    let moto = MotoServer::shared().unwrap();
    let host = moto.endpoint().trim_start_matches("http://").to_owned();
    let body = r#"{"DomainName":"www.example.com","ValidationMethod":"DNS"}"#;
    let request = format!(
        "POST / HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/x-amz-json-1.1\r\n\
         X-Amz-Target: CertificateManager.RequestCertificate\r\nx-moto-account-id: {account}\r\n\
         Authorization: AWS4-HMAC-SHA256 Credential=stackproof/20260101/{}/acm/aws4_request, SignedHeaders=host, Signature=0\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        cx.region(),
        body.len()
    );
    let mut stream = tokio::net::TcpStream::connect(&host).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    tokio::time::timeout(
        Duration::from_secs(10),
        stream.read_to_string(&mut response),
    )
    .await
    .unwrap()
    .unwrap();
    let (head, json) = response.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{response}");
    let value: serde_json::Value = serde_json::from_str(json).unwrap();
    value["CertificateArn"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn lb_apply_builds_everything_reads_back_and_a_second_apply_writes_nothing() {
    let record = std::sync::Arc::new(Record::default());
    let (cx, _) = context_with("lb-apply", record.clone());
    let (net, net_out) = network(&cx, "nat = \"none\"").await;
    let lb = load_balancer(&cx, "");
    let inputs = inputs(&net_out, true);
    let elb = elb(&cx);

    // A plan on an account with a network but no load balancer: three creates, no write.
    let before = cx.calls().snapshot();
    let plan = lb.plan(&cx, &inputs).await.unwrap();
    assert_eq!(
        changes(&plan),
        [
            "Create load-balancer alb",
            "Create target-group tg",
            "Create listener http"
        ],
        "{plan}"
    );
    assert_eq!(cx.calls().snapshot().since(&before).writes(), 0);
    let text = plan.to_string();
    assert!(text.contains("zonal_shift.config.enabled = true"), "{text}");
    assert!(
        text.contains(
            "health check HTTP /health every 10 s, timeout 5 s, healthy 2, unhealthy 2, codes 200"
        ),
        "{text}"
    );

    let before = cx.calls().snapshot();
    record.0.lock().unwrap().clear();
    let start = Instant::now();
    let out = lb.apply(&cx, &inputs).await.unwrap();
    let apply_time = start.elapsed();
    let apply_calls = cx.calls().snapshot().since(&before);
    // Progress: one finished event per change of the plan, in its order.
    let apply_steps = std::mem::take(&mut *record.0.lock().unwrap());
    let finished: Vec<String> = apply_steps
        .iter()
        .map(|l| l.rsplit_once(' ').unwrap().0.to_owned())
        .collect();
    assert_eq!(finished, changes(&plan));

    // The load balancer: internet-facing, application, the public subnets and the group.
    let found = elb
        .describe_load_balancers()
        .load_balancer_arns(&out.arn)
        .send()
        .await
        .unwrap();
    let alb = &found.load_balancers()[0];
    assert_eq!(alb.load_balancer_name(), Some("lb-apply-alb"));
    assert_eq!(alb.scheme(), Some(&LoadBalancerSchemeEnum::InternetFacing));
    assert_eq!(alb.r#type(), Some(&LoadBalancerTypeEnum::Application));
    let mut subnets: Vec<&str> = alb
        .availability_zones()
        .iter()
        .filter_map(|z| z.subnet_id())
        .collect();
    subnets.sort();
    let mut want_subnets: Vec<&str> = net_out
        .public_subnet_ids
        .iter()
        .map(String::as_str)
        .collect();
    want_subnets.sort();
    assert_eq!(subnets, want_subnets);
    assert_eq!(
        alb.security_groups(),
        std::slice::from_ref(&net_out.load_balancer_security_group_id)
    );

    // Its attributes, read back.
    let attrs = lb_attributes(&elb, &out.arn).await;
    for (key, value) in [
        ("access_logs.s3.enabled", "true"),
        ("access_logs.s3.bucket", "demo-logs-123456789012-eu-west-1"),
        ("access_logs.s3.prefix", "alb"),
        ("routing.http.drop_invalid_header_fields.enabled", "true"),
        ("idle_timeout.timeout_seconds", "60"),
        ("deletion_protection.enabled", "false"),
        ("zonal_shift.config.enabled", "true"),
    ] {
        assert_eq!(
            attrs.get(key).map(String::as_str),
            Some(value),
            "{key}: {attrs:?}"
        );
    }

    // The target group and its health check, read back.
    let tg = target_group(&elb, &out.target_group_arn).await;
    assert_eq!(tg.target_group_name(), Some("lb-apply-tg"));
    assert_eq!(tg.protocol(), Some(&ProtocolEnum::Http));
    assert_eq!(tg.port(), Some(8080));
    assert_eq!(tg.vpc_id(), Some(net_out.vpc_id.as_str()));
    assert_eq!(tg.target_type().map(|t| t.as_str()), Some("ip"));
    assert_eq!(tg.health_check_path(), Some("/health"));
    assert_eq!(tg.health_check_interval_seconds(), Some(10));
    assert_eq!(tg.health_check_timeout_seconds(), Some(5));
    assert_eq!(tg.healthy_threshold_count(), Some(2));
    assert_eq!(tg.unhealthy_threshold_count(), Some(2));
    assert_eq!(tg.matcher().and_then(|m| m.http_code()), Some("200"));
    let tg_attrs = elb
        .describe_target_group_attributes()
        .target_group_arn(&out.target_group_arn)
        .send()
        .await
        .unwrap();
    let dereg = tg_attrs
        .attributes()
        .iter()
        .find(|a| a.key() == Some("deregistration_delay.timeout_seconds"))
        .and_then(|a| a.value());
    assert_eq!(dereg, Some("60"));

    // One HTTP listener on 80 that forwards to the target group.
    let ls = listeners(&elb, &out.arn).await;
    assert_eq!(ls.len(), 1);
    assert_eq!(
        (ls[0].port(), ls[0].protocol()),
        (Some(80), Some(&ProtocolEnum::Http))
    );
    let action = &ls[0].default_actions()[0];
    assert_eq!(action.r#type(), Some(&ActionTypeEnum::Forward));
    assert_eq!(
        action.target_group_arn(),
        Some(out.target_group_arn.as_str())
    );

    // Tags at create time, on all three.
    let tags = elb
        .describe_tags()
        .resource_arns(&out.arn)
        .resource_arns(&out.target_group_arn)
        .resource_arns(&out.listener_arns[0])
        .send()
        .await
        .unwrap();
    let mut names: Vec<(String, String)> = tags
        .tag_descriptions()
        .iter()
        .map(|d| {
            let get = |k: &str| {
                d.tags()
                    .iter()
                    .find(|t| t.key() == Some(k))
                    .and_then(|t| t.value())
                    .unwrap_or_default()
                    .to_owned()
            };
            assert_eq!(get("stackproof:stack"), "lb-apply");
            assert_eq!(get("stackproof:module"), "load-balancer");
            (get("stackproof:name"), get("Name"))
        })
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            ("alb".to_owned(), "lb-apply-alb".to_owned()),
            ("http".to_owned(), "lb-apply-http".to_owned()),
            ("tg".to_owned(), "lb-apply-tg".to_owned())
        ]
    );

    // Outputs.
    assert_eq!(out.name, "lb-apply-alb");
    assert!(
        out.arn_suffix.starts_with("app/lb-apply-alb/"),
        "{}",
        out.arn_suffix
    );
    assert!(
        out.arn
            .ends_with(&format!("loadbalancer/{}", out.arn_suffix))
    );
    assert!(
        out.target_group_arn_suffix
            .starts_with("targetgroup/lb-apply-tg/"),
        "{}",
        out.target_group_arn_suffix
    );
    assert!(
        out.target_group_arn
            .ends_with(&format!(":{}", out.target_group_arn_suffix))
    );
    assert_eq!(
        out.listener_arns,
        [ls[0].listener_arn().unwrap().to_owned()]
    );
    assert_eq!(out.dns_name, alb.dns_name().unwrap());
    assert!(!out.hosted_zone_id.is_empty());
    assert_eq!(
        out.security_group_ids,
        std::slice::from_ref(&net_out.load_balancer_security_group_id)
    );

    // Again: an empty plan, an apply with no write call and the same outputs.
    let before = cx.calls().snapshot();
    let start = Instant::now();
    let plan = lb.plan(&cx, &inputs).await.unwrap();
    let plan_time = start.elapsed();
    let plan_calls = cx.calls().snapshot().since(&before);
    assert!(plan.is_empty(), "{plan}");
    let before = cx.calls().snapshot();
    let again = lb.apply(&cx, &inputs).await.unwrap();
    assert_eq!(cx.calls().snapshot().since(&before).writes(), 0);
    assert_eq!(again, out);
    assert_eq!(lb.outputs(&cx).await.unwrap(), Some(out.clone()));

    // Destroy: listeners, target group, load balancer; then the network goes too.
    let preview = lb.plan_destroy(&cx).await.unwrap();
    assert_eq!(
        changes(&preview),
        [
            "Delete listener http",
            "Delete target-group tg",
            "Delete load-balancer alb"
        ],
        "{preview}"
    );
    assert!(!LoadBalancer::turns_off_protection(&preview));
    let before = cx.calls().snapshot();
    let start = Instant::now();
    let removed = lb.destroy(&cx).await.unwrap();
    let destroy_time = start.elapsed();
    let destroy_calls = cx.calls().snapshot().since(&before);
    let destroy_steps = std::mem::take(&mut *record.0.lock().unwrap());
    assert_eq!(removed, preview);
    assert_eq!(elbv2_census(&elb).await, (0, 0));
    assert!(lb.plan_destroy(&cx).await.unwrap().is_empty());
    assert!(lb.destroy(&cx).await.unwrap().is_empty());
    assert_eq!(lb.outputs(&cx).await.unwrap(), None);
    net.destroy(&cx).await.unwrap();

    eprintln!(
        "load balancer against moto:\n apply {apply_time:.2?}: {apply_calls} steps {apply_steps:?}\n no-change plan {plan_time:.2?}: {plan_calls}\n destroy {destroy_time:.2?}: {destroy_calls} steps {destroy_steps:?}"
    );
}

#[tokio::test]
async fn lb_with_a_certificate_redirects_http_and_serves_https_with_the_tls13_policy() {
    let (cx, account) = context("lb-https");
    let (_, net_out) = network(&cx, "nat = \"none\"").await;
    let cert = request_certificate(&cx, &account).await;
    let lb = load_balancer(&cx, &format!("certificate-arn = \"{cert}\""));
    let inputs = inputs(&net_out, false);
    let out = lb.apply(&cx, &inputs).await.unwrap();
    let elb = elb(&cx);

    let ls = listeners(&elb, &out.arn).await;
    assert_eq!(ls.len(), 2);
    assert_eq!(out.listener_arns.len(), 2);
    let (http, https) = (&ls[0], &ls[1]);
    assert_eq!(
        (http.port(), http.protocol()),
        (Some(80), Some(&ProtocolEnum::Http))
    );
    let redirect = &http.default_actions()[0];
    assert_eq!(redirect.r#type(), Some(&ActionTypeEnum::Redirect));
    let config = redirect.redirect_config().unwrap();
    assert_eq!(config.protocol(), Some("HTTPS"));
    assert_eq!(config.port(), Some("443"));
    assert_eq!(config.status_code().map(|s| s.as_str()), Some("HTTP_301"));

    assert_eq!(
        (https.port(), https.protocol()),
        (Some(443), Some(&ProtocolEnum::Https))
    );
    assert_eq!(
        https.ssl_policy(),
        Some("ELBSecurityPolicy-TLS13-1-3-2021-06")
    );
    assert_eq!(
        https.certificates()[0].certificate_arn(),
        Some(cert.as_str())
    );
    let forward = &https.default_actions()[0];
    assert_eq!(forward.r#type(), Some(&ActionTypeEnum::Forward));
    assert_eq!(
        forward.target_group_arn(),
        Some(out.target_group_arn.as_str())
    );

    // Without access logs configured, they are off.
    let attrs = lb_attributes(&elb, &out.arn).await;
    assert_eq!(attrs["access_logs.s3.enabled"], "false");

    let plan = lb.plan(&cx, &inputs).await.unwrap();
    assert!(plan.is_empty(), "{plan}");

    // The certificate removed from the configuration: HTTP forwards again, HTTPS goes.
    let plain = load_balancer(&cx, "");
    let plan = plain.plan(&cx, &inputs).await.unwrap();
    assert_eq!(
        changes(&plan),
        ["Update listener http", "Delete listener https"],
        "{plan}"
    );
    assert!(
        plan.to_string()
            .contains("default action redirect -> forward to target group \"tg\""),
        "{plan}"
    );
    let out = plain.apply(&cx, &inputs).await.unwrap();
    assert!(plain.plan(&cx, &inputs).await.unwrap().is_empty());
    let ls = listeners(&elb, &out.arn).await;
    assert_eq!(ls.len(), 1);
    assert_eq!(
        ls[0].default_actions()[0].r#type(),
        Some(&ActionTypeEnum::Forward)
    );
    assert_eq!(out.listener_arns.len(), 1);
}

#[tokio::test]
async fn lb_an_unknown_certificate_fails_at_once_naming_the_listener() {
    let (cx, account) = context("lb-no-cert");
    let (_, net_out) = network(&cx, "nat = \"none\"").await;
    let cert = format!("arn:aws:acm:{REGION}:{account:0>12}:certificate/not-issued");
    let lb = load_balancer(&cx, &format!("certificate-arn = \"{cert}\""));
    let before = cx.calls().snapshot();
    let err = lb
        .apply(&cx, &inputs(&net_out, false))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("CreateListener for listener \"https\""),
        "{err}"
    );
    assert!(err.contains("certificate"), "{err}");
    let calls = cx.calls().snapshot().since(&before);
    let creates = calls
        .by_operation
        .iter()
        .filter(|((_, op), _)| op == "CreateListener")
        .map(|(_, n)| *n)
        .sum::<u64>();
    // HTTP (the redirect) once, HTTPS once: no retrying a certificate that does not exist.
    assert_eq!(creates, 2, "{calls}");
}

#[tokio::test]
async fn lb_drift_shows_as_update_and_create_and_apply_repairs_it() {
    let (cx, _) = context("lb-drift");
    let (_, net_out) = network(&cx, "nat = \"none\"").await;
    let lb = load_balancer(&cx, "");
    let inputs = inputs(&net_out, true);
    let out = lb.apply(&cx, &inputs).await.unwrap();
    let elb = elb(&cx);

    // Behind our back: the health check interval, an attribute, a listener deleted.
    elb.modify_target_group()
        .target_group_arn(&out.target_group_arn)
        .health_check_interval_seconds(30)
        .send()
        .await
        .unwrap();
    elb.modify_load_balancer_attributes()
        .load_balancer_arn(&out.arn)
        .attributes(
            LoadBalancerAttribute::builder()
                .key("routing.http.drop_invalid_header_fields.enabled")
                .value("false")
                .build(),
        )
        .send()
        .await
        .unwrap();
    elb.delete_listener()
        .listener_arn(&out.listener_arns[0])
        .send()
        .await
        .unwrap();

    let plan = lb.plan(&cx, &inputs).await.unwrap();
    let text = plan.to_string();
    assert_eq!(
        kinds(&plan, Action::Update),
        ["load-balancer alb", "target-group tg"],
        "{text}"
    );
    assert_eq!(kinds(&plan, Action::Create), ["listener http"], "{text}");
    assert!(kinds(&plan, Action::Delete).is_empty(), "{text}");
    assert!(text.contains("health check interval 30 -> 10"), "{text}");
    assert!(
        text.contains("routing.http.drop_invalid_header_fields.enabled false -> true"),
        "{text}"
    );

    let repaired = lb.apply(&cx, &inputs).await.unwrap();
    assert!(lb.plan(&cx, &inputs).await.unwrap().is_empty());
    let tg = target_group(&elb, &out.target_group_arn).await;
    assert_eq!(tg.health_check_interval_seconds(), Some(10));
    let attrs = lb_attributes(&elb, &out.arn).await;
    assert_eq!(
        attrs["routing.http.drop_invalid_header_fields.enabled"],
        "true"
    );
    let ls = listeners(&elb, &out.arn).await;
    assert_eq!(ls.len(), 1);
    assert_eq!(
        repaired.listener_arns,
        [ls[0].listener_arn().unwrap().to_owned()]
    );
    assert_ne!(repaired.listener_arns, out.listener_arns);
    assert_eq!(elbv2_census(&elb).await, (1, 1));
}

#[tokio::test]
async fn lb_a_protected_load_balancer_is_destroyed_with_protection_turned_off_first() {
    let (cx, _) = context("lb-protected");
    let (net, net_out) = network(&cx, "nat = \"none\"").await;
    let lb = load_balancer(&cx, "deletion-protection = true");
    let out = lb.apply(&cx, &inputs(&net_out, false)).await.unwrap();
    let elb = elb(&cx);
    let attrs = lb_attributes(&elb, &out.arn).await;
    assert_eq!(attrs["deletion_protection.enabled"], "true");

    let preview = lb.plan_destroy(&cx).await.unwrap();
    assert_eq!(
        changes(&preview),
        [
            "Delete listener http",
            "Delete target-group tg",
            "Update load-balancer alb",
            "Delete load-balancer alb"
        ],
        "{preview}"
    );
    assert!(
        preview
            .to_string()
            .contains("deletion_protection.enabled true -> false"),
        "{preview}"
    );
    assert!(LoadBalancer::turns_off_protection(&preview));
    let before = cx.calls().snapshot();
    let removed = lb.destroy(&cx).await.unwrap();
    assert_eq!(removed, preview);
    let calls = cx.calls().snapshot().since(&before);
    let count = |op: &str| {
        calls
            .by_operation
            .iter()
            .filter(|((_, o), _)| o == op)
            .map(|(_, n)| *n)
            .sum::<u64>()
    };
    assert_eq!(count("ModifyLoadBalancerAttributes"), 1, "{calls}");
    assert_eq!(count("DeleteLoadBalancer"), 1, "{calls}");
    assert_eq!(elbv2_census(&elb).await, (0, 0));
    net.destroy(&cx).await.unwrap();
}

#[tokio::test]
async fn lb_one_zone_is_rejected_before_any_call() {
    let (cx, _) = context("lb-one-zone");
    let (_, net_out) = network(&cx, "nat = \"none\"\naz-count = 1").await;
    let lb = load_balancer(&cx, "");
    let before = cx.calls().snapshot();
    for result in [
        lb.plan(&cx, &inputs(&net_out, false)).await.map(drop),
        lb.apply(&cx, &inputs(&net_out, false)).await.map(drop),
    ] {
        let err = result.unwrap_err();
        let Error::Config(problems) = &err else {
            panic!("{err}")
        };
        assert!(problems.mentions("network.az-count"), "{err}");
        let text = err.to_string();
        assert!(
            text.contains("network.az-count = 1: 2 or more: an application load balancer needs subnets in at least two availability zones"),
            "{text}"
        );
    }
    assert_eq!(cx.calls().snapshot().since(&before).total(), 0);
}

#[tokio::test]
async fn lb_a_name_taken_by_another_stack_is_refused_and_left_alone() {
    let (cx, _) = context("lb-taken");
    let (_, net_out) = network(&cx, "nat = \"none\"").await;
    let elb = elb(&cx);
    let foreign = elb
        .create_load_balancer()
        .name("lb-taken-alb")
        .set_subnets(Some(net_out.public_subnet_ids.clone()))
        .tags(
            aws_sdk_elasticloadbalancingv2::types::Tag::builder()
                .key("stackproof:stack")
                .value("someone-else")
                .build(),
        )
        .send()
        .await
        .unwrap();
    let arn = foreign.load_balancers()[0].load_balancer_arn().unwrap();
    let lb = load_balancer(&cx, "");
    let before = cx.calls().snapshot();
    for err in [
        lb.apply(&cx, &inputs(&net_out, false)).await.unwrap_err(),
        lb.destroy(&cx).await.unwrap_err(),
    ] {
        let text = err.to_string();
        assert!(
            text.contains("load balancer \"lb-taken-alb\"")
                && text.contains("is not part of stack lb-taken")
                && text.contains("Some(\"someone-else\")"),
            "{text}"
        );
    }
    assert_eq!(cx.calls().snapshot().since(&before).writes(), 0);
    assert_eq!(elbv2_census(&elb).await, (1, 0));
    let still = elb
        .describe_load_balancers()
        .load_balancer_arns(arn)
        .send()
        .await
        .unwrap();
    assert_eq!(still.load_balancers().len(), 1);
}

/// Runs `apply` and drops it once `calls` AWS calls have started, like a crash or Ctrl-C.
async fn interrupted_apply(
    cx: &Context,
    lb: &LoadBalancer,
    inputs: &LoadBalancerInputs,
    calls: u64,
) -> bool {
    let start = cx.calls().snapshot().total();
    let apply = lb.apply(cx, inputs);
    tokio::pin!(apply);
    loop {
        tokio::select! {
            result = &mut apply => { result.unwrap(); return true; }
            _ = tokio::time::sleep(Duration::from_millis(1)) => {
                if cx.calls().snapshot().total() - start >= calls {
                    return false;
                }
            }
        }
    }
}

#[tokio::test]
async fn lb_an_interrupted_apply_converges_on_the_next_run_without_duplicates() {
    // Nothing exists yet: 2 reads, then create, attributes, create, attributes, listener.
    for stop_after in [1, 2, 3, 4, 5, 6] {
        let (cx, _) = context(&format!("lb-crash-{stop_after}"));
        let (_, net_out) = network(&cx, "nat = \"none\"").await;
        let lb = load_balancer(&cx, "");
        let inputs = inputs(&net_out, true);
        let finished = interrupted_apply(&cx, &lb, &inputs, stop_after).await;
        let out = lb.apply(&cx, &inputs).await.unwrap();
        let elb = elb(&cx);
        assert_eq!(
            elbv2_census(&elb).await,
            (1, 1),
            "interrupted after {stop_after} calls (finished: {finished})"
        );
        let plan = lb.plan(&cx, &inputs).await.unwrap();
        assert!(plan.is_empty(), "after {stop_after}: {plan}");
        assert_eq!(listeners(&elb, &out.arn).await.len(), 1);
    }
}
