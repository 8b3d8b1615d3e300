//! Unit tests of the load balancer module's pure parts: the diff, the teardown order, the
//! ownership check, the input check and the outputs. Validation is tested in `config.rs`.

use std::collections::BTreeMap;

use aws_sdk_elasticloadbalancingv2::types::{
    Action, ActionTypeEnum, AvailabilityZone, Certificate, Listener, LoadBalancer as Alb,
    LoadBalancerSchemeEnum, LoadBalancerTypeEnum, Matcher, ProtocolEnum, RedirectActionConfig,
    RedirectActionStatusCodeEnum, TargetGroup, TargetTypeEnum,
};
use infra::{Action as Verb, Context, StackName};

use super::diff::{Desired, ListenerWant, Op, Route, TLS_POLICY, check_inputs, diff, teardown};
use super::observe::Observed;
use super::*;

const LB_ARN: &str = "arn:aws:elasticloadbalancing:eu-west-1:123456789012:loadbalancer/app/demo-alb/50dc6c495c0c9188";
const TG_ARN: &str =
    "arn:aws:elasticloadbalancing:eu-west-1:123456789012:targetgroup/demo-tg/73e2d6bc24d8a067";
const CERT: &str = "arn:aws:acm:eu-west-1:123456789012:certificate/abc-123";

fn cx() -> Context {
    Context::mocked(StackName::new("demo").unwrap()).build()
}

fn spec(toml_text: &str) -> LoadBalancerSpec {
    let config: LoadBalancerConfig = toml::from_str(toml_text).unwrap();
    infra::Config::validate(&config, &infra::Scope::new("web", "eu-west-1")).unwrap()
}

fn inputs() -> LoadBalancerInputs {
    LoadBalancerInputs {
        vpc_id: "vpc-1".to_owned(),
        zones: vec!["eu-west-1a".to_owned(), "eu-west-1b".to_owned()],
        public_subnet_ids: vec!["subnet-b".to_owned(), "subnet-a".to_owned()],
        security_group_id: "sg-lb".to_owned(),
        target_port: 8080,
        access_logs: Some(AccessLogs {
            bucket: "logs".to_owned(),
            prefix: "alb".to_owned(),
        }),
    }
}

fn listener_arn(port: i32) -> String {
    format!("{}/{port}", LB_ARN.replace(":loadbalancer/", ":listener/"))
}

fn listener(cx: &Context, want: &ListenerWant) -> (Listener, BTreeMap<String, String>) {
    let action = match want.route {
        Route::Forward => Action::builder()
            .r#type(ActionTypeEnum::Forward)
            .target_group_arn(TG_ARN)
            .build(),
        Route::RedirectToHttps => Action::builder()
            .r#type(ActionTypeEnum::Redirect)
            .redirect_config(
                RedirectActionConfig::builder()
                    .protocol("HTTPS")
                    .port("443")
                    .status_code(RedirectActionStatusCodeEnum::Http301)
                    .build(),
            )
            .build(),
    };
    let mut l = Listener::builder()
        .listener_arn(listener_arn(want.port))
        .port(want.port)
        .protocol(ProtocolEnum::from(want.protocol()))
        .default_actions(action);
    if let Some(cert) = &want.certificate {
        l = l
            .certificates(Certificate::builder().certificate_arn(cert).build())
            .ssl_policy(TLS_POLICY);
    }
    (l.build(), cx.tags(diff::MODULE, want.name))
}

/// What exists when everything matches `desired`.
fn matching(cx: &Context, desired: &Desired) -> Observed {
    let lb = Alb::builder()
        .load_balancer_arn(LB_ARN)
        .load_balancer_name(&desired.lb_name)
        .dns_name("demo-alb-1.eu-west-1.elb.amazonaws.com")
        .canonical_hosted_zone_id("Z32O12XQLNTSW2")
        .scheme(LoadBalancerSchemeEnum::InternetFacing)
        .r#type(LoadBalancerTypeEnum::Application)
        .vpc_id(&desired.vpc_id)
        .set_availability_zones(Some(
            desired
                .subnets
                .iter()
                .map(|s| AvailabilityZone::builder().subnet_id(s).build())
                .collect(),
        ))
        .set_security_groups(Some(desired.security_groups.clone()))
        .build();
    let h = &desired.health;
    let tg = TargetGroup::builder()
        .target_group_arn(TG_ARN)
        .target_group_name(&desired.tg_name)
        .protocol(ProtocolEnum::Http)
        .port(desired.target_port)
        .vpc_id(&desired.vpc_id)
        .target_type(TargetTypeEnum::Ip)
        .health_check_protocol(ProtocolEnum::Http)
        .health_check_path(&h.path)
        .health_check_interval_seconds(h.interval_seconds)
        .health_check_timeout_seconds(h.timeout_seconds)
        .healthy_threshold_count(h.healthy_threshold)
        .unhealthy_threshold_count(h.unhealthy_threshold)
        .matcher(Matcher::builder().http_code(&h.matcher).build())
        .build();
    let mut tags = BTreeMap::from([
        (LB_ARN.to_owned(), cx.tags(diff::MODULE, diff::LB)),
        (TG_ARN.to_owned(), cx.tags(diff::MODULE, diff::TG)),
    ]);
    let mut listeners = Vec::new();
    for want in &desired.listeners {
        let (l, t) = listener(cx, want);
        tags.insert(listener_arn(want.port), t);
        listeners.push(l);
    }
    Observed {
        lb: Some(lb),
        lb_attributes: desired.lb_attributes.clone(),
        tg: Some(tg),
        tg_attributes: desired.tg_attributes.clone(),
        listeners,
        tags,
    }
}

fn lines(ops: &[Op]) -> Vec<String> {
    ops.iter().map(|o| o.change().to_string()).collect()
}

#[test]
fn an_empty_account_gets_the_load_balancer_the_target_group_and_a_forwarding_listener() {
    let cx = cx();
    let desired = Desired::new(&spec(""), "demo", &inputs());
    assert_eq!(desired.lb_name, "demo-alb");
    assert_eq!(desired.subnets, ["subnet-a", "subnet-b"]);
    let ops = diff(&cx, &desired, &Observed::default()).unwrap();
    let text = lines(&ops).join("\n");
    assert_eq!(ops.len(), 3, "{text}");
    assert!(matches!(&ops[0], Op::CreateLoadBalancer { name, .. } if name == "demo-alb"));
    assert!(matches!(&ops[1], Op::CreateTargetGroup { name, port: 8080, .. } if name == "demo-tg"));
    assert!(matches!(&ops[2], Op::CreateListener(l) if l.port == 80 && l.route == Route::Forward));
    for line in [
        "+ create load-balancer load-balancer \"alb\"",
        "access_logs.s3.bucket = logs",
        "access_logs.s3.enabled = true",
        "access_logs.s3.prefix = alb",
        "deletion_protection.enabled = false",
        "idle_timeout.timeout_seconds = 60",
        "routing.http.drop_invalid_header_fields.enabled = true",
        "zonal_shift.config.enabled = true",
        "deregistration_delay.timeout_seconds = 60",
        "+ create load-balancer listener \"http\"\n      HTTP :80\n      forward to target group \"tg\"",
    ] {
        assert!(text.contains(line), "missing {line:?} in\n{text}");
    }
}

#[test]
fn a_certificate_makes_http_redirect_and_adds_https() {
    let desired = Desired::new(
        &spec(&format!("certificate-arn = \"{CERT}\"")),
        "demo",
        &inputs(),
    );
    let ops = diff(&cx(), &desired, &Observed::default()).unwrap();
    let text = lines(&ops).join("\n");
    assert!(
        text.contains("listener \"http\"\n      HTTP :80\n      redirect (301) to HTTPS :443"),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "listener \"https\"\n      HTTPS :443\n      certificate {CERT}\n      TLS policy ELBSecurityPolicy-TLS13-1-3-2021-06\n      forward to target group \"tg\""
        )),
        "{text}"
    );
}

#[test]
fn access_logs_are_off_without_a_bucket_or_when_configured_off() {
    let mut no_bucket = inputs();
    no_bucket.access_logs = None;
    for (spec, inputs) in [
        (spec(""), no_bucket),
        (spec("access-logs = false"), inputs()),
    ] {
        let desired = Desired::new(&spec, "demo", &inputs);
        assert_eq!(desired.lb_attributes["access_logs.s3.enabled"], "false");
        assert!(!desired.lb_attributes.contains_key("access_logs.s3.bucket"));
    }
}

#[test]
fn what_matches_needs_nothing() {
    let cx = cx();
    for config in ["", &format!("certificate-arn = \"{CERT}\"")] {
        let desired = Desired::new(&spec(config), "demo", &inputs());
        let ops = diff(&cx, &desired, &matching(&cx, &desired)).unwrap();
        assert!(ops.is_empty(), "{config}: {:#?}", lines(&ops));
    }
}

#[test]
fn a_changed_health_check_interval_is_one_update_that_puts_the_whole_check_back() {
    let cx = cx();
    let desired = Desired::new(&spec(""), "demo", &inputs());
    let mut observed = matching(&cx, &desired);
    observed.tg = observed.tg.map(|tg| {
        let mut b = TargetGroup::builder()
            .set_target_group_arn(tg.target_group_arn().map(str::to_owned))
            .set_target_group_name(tg.target_group_name().map(str::to_owned))
            .set_protocol(tg.protocol().cloned())
            .set_port(tg.port())
            .set_vpc_id(tg.vpc_id().map(str::to_owned))
            .set_target_type(tg.target_type().cloned())
            .set_health_check_protocol(tg.health_check_protocol().cloned())
            .set_health_check_path(tg.health_check_path().map(str::to_owned))
            .set_health_check_timeout_seconds(tg.health_check_timeout_seconds())
            .set_healthy_threshold_count(tg.healthy_threshold_count())
            .set_unhealthy_threshold_count(tg.unhealthy_threshold_count())
            .set_matcher(tg.matcher().cloned());
        b = b.health_check_interval_seconds(30);
        b.build()
    });
    let ops = diff(&cx, &desired, &observed).unwrap();
    assert_eq!(
        lines(&ops),
        [format!(
            "~ update load-balancer target-group \"tg\" ({TG_ARN})\n      health check interval 30 -> 10"
        )]
    );
    let [Op::SetHealthCheck { health, .. }] = ops.as_slice() else {
        panic!("{ops:?}")
    };
    assert_eq!(health, &desired.health);
}

#[test]
fn changed_and_missing_attributes_are_updates_of_just_those_keys() {
    let cx = cx();
    let desired = Desired::new(&spec(""), "demo", &inputs());
    let mut observed = matching(&cx, &desired);
    observed
        .lb_attributes
        .insert("idle_timeout.timeout_seconds".to_owned(), "120".to_owned());
    observed.lb_attributes.remove("zonal_shift.config.enabled");
    observed.tg_attributes.insert(
        "deregistration_delay.timeout_seconds".to_owned(),
        "300".to_owned(),
    );
    let ops = diff(&cx, &desired, &observed).unwrap();
    assert_eq!(
        lines(&ops),
        [
            format!(
                "~ update load-balancer load-balancer \"alb\" ({LB_ARN})\n      idle_timeout.timeout_seconds 120 -> 60\n      zonal_shift.config.enabled (unset) -> true"
            ),
            format!(
                "~ update load-balancer target-group \"tg\" ({TG_ARN})\n      deregistration_delay.timeout_seconds 300 -> 60"
            ),
        ]
    );
}

#[test]
fn listeners_missing_extra_or_pointing_elsewhere_are_created_deleted_and_modified() {
    let cx = cx();
    let desired = Desired::new(
        &spec(&format!("certificate-arn = \"{CERT}\"")),
        "demo",
        &inputs(),
    );
    let mut observed = matching(&cx, &desired);
    // The HTTPS listener is gone; HTTP forwards instead of redirecting; someone added 8443.
    observed.listeners.retain(|l| l.port() != Some(443));
    let (forwarding, _) = listener(
        &cx,
        &ListenerWant {
            name: "http",
            port: 80,
            certificate: None,
            route: Route::Forward,
        },
    );
    observed.listeners[0] = forwarding;
    let (extra, _) = listener(
        &cx,
        &ListenerWant {
            name: "extra",
            port: 8443,
            certificate: None,
            route: Route::Forward,
        },
    );
    observed.listeners.push(extra);
    let ops = diff(&cx, &desired, &observed).unwrap();
    let found: Vec<(Verb, String)> = ops
        .iter()
        .map(|o| {
            let c = o.change();
            (c.action, format!("{} {}", c.kind, c.name))
        })
        .collect();
    assert_eq!(
        found,
        [
            (Verb::Update, "listener http".to_owned()),
            (Verb::Create, "listener https".to_owned()),
            (Verb::Delete, "listener port-8443".to_owned()),
        ]
    );
    assert!(
        lines(&ops)[0].contains("default action forward -> redirect (301) to HTTPS :443"),
        "{:?}",
        lines(&ops)
    );
}

#[test]
fn a_listener_on_an_old_policy_or_certificate_is_modified() {
    let cx = cx();
    let desired = Desired::new(
        &spec(&format!("certificate-arn = \"{CERT}\"")),
        "demo",
        &inputs(),
    );
    let mut observed = matching(&cx, &desired);
    let (old, _) = listener(
        &cx,
        &ListenerWant {
            name: "https",
            port: 443,
            certificate: Some("arn:aws:acm:eu-west-1:123456789012:certificate/old".to_owned()),
            route: Route::Forward,
        },
    );
    observed.listeners[1] = Listener::builder()
        .set_listener_arn(old.listener_arn().map(str::to_owned))
        .port(443)
        .protocol(ProtocolEnum::Https)
        .set_certificates(Some(old.certificates().to_vec()))
        .ssl_policy("ELBSecurityPolicy-2016-08")
        .set_default_actions(Some(old.default_actions().to_vec()))
        .build();
    let ops = diff(&cx, &desired, &observed).unwrap();
    let text = lines(&ops).join("\n");
    assert_eq!(ops.len(), 1, "{text}");
    assert!(
        text.contains(&format!(
            "certificate arn:aws:acm:eu-west-1:123456789012:certificate/old -> {CERT}"
        )),
        "{text}"
    );
    assert!(
        text.contains(
            "TLS policy ELBSecurityPolicy-2016-08 -> ELBSecurityPolicy-TLS13-1-3-2021-06"
        ),
        "{text}"
    );
}

#[test]
fn lost_tags_are_put_back_and_moved_subnets_are_set_again() {
    let cx = cx();
    let desired = Desired::new(&spec(""), "demo", &inputs());
    let mut observed = matching(&cx, &desired);
    if let Some(tags) = observed.tags.get_mut(LB_ARN) {
        tags.remove("Name");
    }
    let mut fewer = inputs();
    fewer.public_subnet_ids = vec!["subnet-a".to_owned(), "subnet-c".to_owned()];
    let moved = Desired::new(&spec(""), "demo", &fewer);
    let ops = diff(&cx, &moved, &observed).unwrap();
    assert_eq!(
        lines(&ops),
        [
            format!(
                "~ update load-balancer load-balancer \"alb\" ({LB_ARN})\n      subnets subnet-a, subnet-b -> subnet-a, subnet-c"
            ),
            format!(
                "~ update load-balancer load-balancer \"alb\" ({LB_ARN})\n      tag Name = \"demo-alb\""
            ),
        ]
    );
}

#[test]
fn what_cannot_change_in_place_is_refused() {
    let cx = cx();
    let desired = Desired::new(&spec(""), "demo", &inputs());
    let observed = matching(&cx, &desired);
    let mut other_vpc = inputs();
    other_vpc.vpc_id = "vpc-2".to_owned();
    let err = diff(&cx, &Desired::new(&spec(""), "demo", &other_vpc), &observed)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("has vpc vpc-1 but the configuration says vpc-2"),
        "{err}"
    );
    let mut other_port = inputs();
    other_port.target_port = 9090;
    let err = diff(
        &cx,
        &Desired::new(&spec(""), "demo", &other_port),
        &observed,
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.starts_with(&format!("target-group \"tg\" ({TG_ARN}) has port 8080")),
        "{err}"
    );
}

#[test]
fn teardown_goes_listeners_target_group_then_the_load_balancer_unprotected_first() {
    let cx = cx();
    let desired = Desired::new(
        &spec(&format!(
            "certificate-arn = \"{CERT}\"\ndeletion-protection = true"
        )),
        "demo",
        &inputs(),
    );
    let observed = matching(&cx, &desired);
    let ops = teardown(&observed);
    let found: Vec<String> = ops
        .iter()
        .map(|o| {
            let c = o.change();
            format!("{:?} {} {}", c.action, c.kind, c.name)
        })
        .collect();
    assert_eq!(
        found,
        [
            "Delete listener http",
            "Delete listener https",
            "Delete target-group tg",
            "Update load-balancer alb",
            "Delete load-balancer alb",
        ]
    );
    assert!(lines(&ops)[3].contains("deletion_protection.enabled true -> false"));
    let plan = infra::Plan {
        changes: ops.iter().map(Op::change).collect(),
    };
    assert!(LoadBalancer::turns_off_protection(&plan));

    let unprotected = matching(&cx, &Desired::new(&spec(""), "demo", &inputs()));
    let ops = teardown(&unprotected);
    assert!(!ops.iter().any(|o| matches!(o, Op::Unprotect { .. })));
    let plan = infra::Plan {
        changes: ops.iter().map(Op::change).collect(),
    };
    assert!(!LoadBalancer::turns_off_protection(&plan));
    assert!(teardown(&Observed::default()).is_empty());
}

#[test]
fn a_load_balancer_of_another_stack_or_untagged_is_not_ours() {
    let cx = cx();
    let desired = Desired::new(&spec(""), "demo", &inputs());
    let mut observed = matching(&cx, &desired);
    assert!(observed.check_owner("demo").is_ok());
    observed.tags.insert(
        LB_ARN.to_owned(),
        BTreeMap::from([("stackproof:stack".to_owned(), "other".to_owned())]),
    );
    let err = observed.check_owner("demo").unwrap_err().to_string();
    assert!(
        err.starts_with(&format!(
            "load balancer \"demo-alb\" ({LB_ARN}) exists but is not part of stack demo (its stackproof:stack tag is Some(\"other\"))"
        )),
        "{err}"
    );
    observed
        .tags
        .insert(LB_ARN.to_owned(), cx.tags(diff::MODULE, diff::LB));
    observed.tags.remove(TG_ARN);
    let err = observed.check_owner("demo").unwrap_err().to_string();
    assert!(
        err.contains("target group \"demo-tg\"") && err.contains("tag is None"),
        "{err}"
    );
}

#[test]
fn fewer_than_two_zones_is_a_problem_of_network_az_count() {
    let mut one = inputs();
    one.zones = vec!["eu-west-1a".to_owned()];
    one.public_subnet_ids = vec!["subnet-a".to_owned()];
    let err = check_inputs(&one).unwrap_err();
    let Error::Config(problems) = &err else {
        panic!("{err}")
    };
    assert!(problems.mentions("network.az-count"), "{err}");
    // The same zone twice is still one zone.
    let mut twice = inputs();
    twice.zones = vec!["eu-west-1a".to_owned(), "eu-west-1a".to_owned()];
    assert!(check_inputs(&twice).is_err());
    assert!(check_inputs(&inputs()).is_ok());
}

#[test]
fn outputs_carry_the_arn_suffixes_cloudwatch_wants() {
    let cx = cx();
    let desired = Desired::new(&spec(""), "demo", &inputs());
    let out = outputs(&Ids::from_observed(&matching(&cx, &desired))).unwrap();
    assert_eq!(out.arn_suffix, "app/demo-alb/50dc6c495c0c9188");
    assert_eq!(
        out.target_group_arn_suffix,
        "targetgroup/demo-tg/73e2d6bc24d8a067"
    );
    assert_eq!(out.listener_arns, [listener_arn(80)]);
    assert_eq!(out.security_group_ids, ["sg-lb"]);
    assert_eq!(out.hosted_zone_id, "Z32O12XQLNTSW2");
    // The longest stack name still makes valid ELB names (32 characters at most).
    let longest = "a".repeat(StackName::MAX_LEN);
    assert!(lb_name(&longest).len() <= 32 && tg_name(&longest).len() <= 32);
}
