//! The compute module against moto: one moto server for this test binary, one moto account per
//! test. moto's ECS checks that the service's subnets and security group exist, so each test
//! makes a VPC, two subnets and a security group with raw EC2 calls; the target group and load
//! balancer ARNs are plausible fakes (moto does not check them).

#![allow(clippy::unwrap_used)] // Test helpers outside #[test] functions.

use std::time::Instant;

use aws_sdk_applicationautoscaling::types::{ScalableDimension, ServiceNamespace};
use aws_sdk_ecs::types::{ClusterField, ServiceField};
use infra::{Action, Config, Context, Module, Plan, StackName};
use sandbox::MotoServer;
use stackproof_compute::{Compute, ComputeConfig, ComputeInputs, ComputeOutputs};

const REGION: &str = "eu-west-1";

fn context(stack: &str) -> Context {
    let moto = MotoServer::shared().expect("moto starts (run `cargo xtask setup` first)");
    moto.context(StackName::new(stack).unwrap(), REGION).build()
}

fn compute(cx: &Context, toml_text: &str) -> Compute {
    let config: ComputeConfig = toml::from_str(toml_text).unwrap();
    Compute::new(cx, config.validate(&cx.scope()).unwrap())
}

fn ecs(cx: &Context) -> aws_sdk_ecs::Client {
    infra::client!(cx, aws_sdk_ecs)
}
fn iam(cx: &Context) -> aws_sdk_iam::Client {
    infra::client!(cx, aws_sdk_iam)
}
fn logs(cx: &Context) -> aws_sdk_cloudwatchlogs::Client {
    infra::client!(cx, aws_sdk_cloudwatchlogs)
}
fn aas(cx: &Context) -> aws_sdk_applicationautoscaling::Client {
    infra::client!(cx, aws_sdk_applicationautoscaling)
}

/// A VPC with two subnets and a security group, made with raw calls; fake ALB ids.
async fn inputs(cx: &Context) -> ComputeInputs {
    let ec2: aws_sdk_ec2::Client = infra::client!(cx, aws_sdk_ec2);
    let vpc = ec2
        .create_vpc()
        .cidr_block("10.0.0.0/16")
        .send()
        .await
        .unwrap();
    let vpc_id = vpc.vpc().unwrap().vpc_id().unwrap().to_owned();
    // The context's account (each test has a moto account of its own), as the stack passes
    // storage's.
    let account_id = vpc.vpc().unwrap().owner_id().unwrap().to_owned();
    let mut subnets = Vec::new();
    for (zone, cidr) in [
        ("eu-west-1a", "10.0.128.0/20"),
        ("eu-west-1b", "10.0.144.0/20"),
    ] {
        let s = ec2
            .create_subnet()
            .vpc_id(&vpc_id)
            .availability_zone(zone)
            .cidr_block(cidr)
            .send()
            .await
            .unwrap();
        subnets.push(s.subnet().unwrap().subnet_id().unwrap().to_owned());
    }
    let sg = ec2
        .create_security_group()
        .vpc_id(&vpc_id)
        .group_name(format!("{}-tasks", cx.stack()))
        .description("tasks")
        .send()
        .await
        .unwrap();
    let stack = cx.stack().as_str();
    ComputeInputs {
        private_subnet_ids: subnets,
        task_security_group_id: sg.group_id().unwrap().to_owned(),
        target_group_arn: format!(
            "arn:aws:elasticloadbalancing:{REGION}:123456789012:targetgroup/{stack}/0123456789abcdef"
        ),
        load_balancer_arn_suffix: format!("app/{stack}/fedcba9876543210"),
        target_group_arn_suffix: format!("targetgroup/{stack}/0123456789abcdef"),
        container_port: 8080,
        default_image: format!(
            "123456789012.dkr.ecr.{REGION}.amazonaws.com/{stack}/sample-app:latest"
        ),
        account_id,
        linked: stackproof_compute::Linked::default(),
    }
}

/// A scaling policy as read back: name, metric, label, target, cooldowns out/in.
type Seen = (
    String,
    String,
    Option<String>,
    f64,
    Option<i32>,
    Option<i32>,
);

fn kinds(plan: &Plan, action: Action) -> Vec<String> {
    plan.changes
        .iter()
        .filter(|c| c.action == action)
        .map(|c| format!("{} {}", c.kind, c.name))
        .collect()
}

async fn service(cx: &Context) -> aws_sdk_ecs::types::Service {
    let stack = cx.stack().as_str();
    let out = ecs(cx)
        .describe_services()
        .cluster(stack)
        .services(stack)
        .include(ServiceField::Tags)
        .send()
        .await
        .unwrap();
    out.services()[0].clone()
}

async fn task_definition(cx: &Context, arn: &str) -> aws_sdk_ecs::types::TaskDefinition {
    ecs(cx)
        .describe_task_definition()
        .task_definition(arn)
        .send()
        .await
        .unwrap()
        .task_definition()
        .unwrap()
        .clone()
}

#[tokio::test]
async fn plan_on_an_empty_account_lists_every_create_and_writes_nothing() {
    let cx = context("plan-empty");
    let inputs = inputs(&cx).await;
    cx.calls().reset();
    let plan = compute(&cx, "").plan(&cx, &inputs).await.unwrap();
    let creates = kinds(&plan, Action::Create);
    assert_eq!(
        creates,
        [
            "iam-role plan-empty-task-execution",
            "iam-role-policy plan-empty-task-execution",
            "iam-role plan-empty-task",
            "iam-role plan-empty-fis",
            "iam-role-policy-attachment plan-empty-fis",
            "log-group /ecs/plan-empty",
            "ecs-cluster plan-empty",
            "ecs-task-definition plan-empty",
            "ecs-service plan-empty",
            "scalable-target service/plan-empty/plan-empty",
            "scaling-policy plan-empty-cpu",
            "scaling-policy plan-empty-requests",
        ],
        "{plan}"
    );
    assert_eq!(plan.changes.len(), creates.len(), "{plan}");
    assert_eq!(cx.calls().snapshot().writes(), 0);
}

#[tokio::test]
async fn apply_creates_everything_with_every_setting_moto_keeps() {
    let cx = context("apply-all");
    let inputs = inputs(&cx).await;
    let module = compute(
        &cx,
        r#"
        cpu = 512
        memory = 2048
        desired-count = 3
        min-count = 2
        max-count = 6
        cpu-target-percent = 70
        requests-per-target = 3000
        scale-out-cooldown-seconds = 30
        scale-in-cooldown-seconds = 600
        log-retention-days = 14
        environment = { GREETING = "hi" }
        read-only-root-filesystem = true
        cpu-architecture = "arm64"
        task-role-statements = [{ Effect = "Allow", Action = ["s3:GetObject"], Resource = ["arn:aws:s3:::b/*"] }]
        secrets = { DB_PASSWORD = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:apply-all/db-AbCdEf:password::", TOKEN = "/apply-all/token" }
        "#,
    );
    cx.calls().reset();
    let start = Instant::now();
    let out: ComputeOutputs = module.apply(&cx, &inputs).await.unwrap();
    eprintln!("create: {:?}\n{}", start.elapsed(), cx.calls().snapshot());
    assert_eq!(out.cluster_name, "apply-all");
    assert_eq!(out.service_name, "apply-all");
    assert_eq!(out.container_name, "app");
    assert_eq!(out.log_group_name, "/ecs/apply-all");
    assert!(
        out.execution_role_arn
            .ends_with(":role/apply-all-task-execution")
    );
    assert!(out.task_role_arn.ends_with(":role/apply-all-task"));

    // IAM: trust only ecs-tasks; the managed policy on the execution role; the task role's
    // inline policy; tags.
    let iam = iam(&cx);
    for role in ["apply-all-task-execution", "apply-all-task"] {
        let r = iam.get_role().role_name(role).send().await.unwrap();
        let r = r.role().unwrap();
        let doc = r.assume_role_policy_document().unwrap();
        assert!(doc.contains("ecs-tasks.amazonaws.com"), "{doc}");
        assert!(!doc.contains("ec2.amazonaws.com"), "{doc}");
        let tags: Vec<(&str, &str)> = r.tags().iter().map(|t| (t.key(), t.value())).collect();
        assert!(
            tags.contains(&("stackproof:stack", "apply-all")),
            "{tags:?}"
        );
        assert!(tags.contains(&("stackproof:module", "compute")), "{tags:?}");
    }
    let attached = iam
        .list_attached_role_policies()
        .role_name("apply-all-task-execution")
        .send()
        .await
        .unwrap();
    let arns: Vec<&str> = attached
        .attached_policies()
        .iter()
        .filter_map(|p| p.policy_arn())
        .collect();
    // Least privilege: no managed policy (AmazonECSTaskExecutionRolePolicy pulls from every
    // repository and writes every log group), one inline policy scoped to the image's
    // repository and the task log group; both roles trusted by ECS for this account only.
    assert!(arns.is_empty(), "{arns:?}");
    let exec_policy = iam
        .get_role_policy()
        .role_name("apply-all-task-execution")
        .policy_name("apply-all-task-execution")
        .send()
        .await
        .unwrap();
    let doc = exec_policy
        .policy_document()
        .replace("%3A", ":")
        .replace("%2F", "/")
        .replace("%2A", "*")
        .replace("%22", "\"");
    let account = inputs.account_id.clone();
    for wanted in [
        "ecr:GetAuthorizationToken",
        "ecr:BatchGetImage",
        "arn:aws:ecr:eu-west-1:123456789012:repository/apply-all/sample-app",
        "logs:PutLogEvents",
        &*format!("arn:aws:logs:eu-west-1:{account}:log-group:/ecs/apply-all:log-stream:*"),
        // Exactly the container's secrets: the secret (without its JSON key) and the
        // parameter by ARN in the stack's region and account.
        "secretsmanager:GetSecretValue",
        "\"arn:aws:secretsmanager:eu-west-1:123456789012:secret:apply-all/db-AbCdEf\"",
        "ssm:GetParameters",
        &*format!("\"arn:aws:ssm:eu-west-1:{account}:parameter/apply-all/token\""),
    ] {
        assert!(doc.contains(wanted), "{wanted} in {doc}");
    }
    assert!(
        !doc.contains("secret:*") && !doc.contains("parameter/*"),
        "{doc}"
    );
    for role in ["apply-all-task", "apply-all-task-execution"] {
        let got = iam.get_role().role_name(role).send().await.unwrap();
        let trust = got
            .role()
            .unwrap()
            .assume_role_policy_document()
            .unwrap()
            .replace("%3A", ":")
            .replace("%22", "\"");
        assert!(
            trust.contains("\"aws:SourceAccount\"") && trust.contains(&account),
            "{role}: {trust}"
        );
    }
    let task_attached = iam
        .list_attached_role_policies()
        .role_name("apply-all-task")
        .send()
        .await
        .unwrap();
    assert!(task_attached.attached_policies().is_empty());
    let inline = iam
        .get_role_policy()
        .role_name("apply-all-task")
        .policy_name("apply-all-task")
        .send()
        .await
        .unwrap();
    // IAM returns documents URL-encoded.
    let doc = inline.policy_document().replace("%3A", ":");
    assert!(doc.contains("s3:GetObject"), "{doc}");

    // Cluster: Container Insights, tags.
    let clusters = ecs(&cx)
        .describe_clusters()
        .clusters("apply-all")
        .include(ClusterField::Settings)
        .include(ClusterField::Tags)
        .send()
        .await
        .unwrap();
    let c = &clusters.clusters()[0];
    assert_eq!(c.cluster_arn(), Some(out.cluster_arn.as_str()));
    let insights = c
        .settings()
        .iter()
        .find(|s| s.name().map(|n| n.as_str()) == Some("containerInsights"))
        .and_then(|s| s.value());
    assert_eq!(insights, Some("enabled"));
    assert!(
        c.tags()
            .iter()
            .any(|t| t.key() == Some("stackproof:stack") && t.value() == Some("apply-all"))
    );

    // Log group with retention.
    let groups = logs(&cx)
        .describe_log_groups()
        .log_group_name_prefix("/ecs/apply-all")
        .send()
        .await
        .unwrap();
    assert_eq!(groups.log_groups()[0].retention_in_days(), Some(14));

    // Task definition.
    let td = task_definition(&cx, &out.task_definition_arn).await;
    assert_eq!(td.family(), Some("apply-all"));
    assert_eq!((td.cpu(), td.memory()), (Some("512"), Some("2048")));
    assert_eq!(td.network_mode().map(|m| m.as_str()), Some("awsvpc"));
    assert_eq!(
        td.requires_compatibilities()
            .iter()
            .map(|c| c.as_str())
            .collect::<Vec<_>>(),
        ["FARGATE"]
    );
    let platform = td.runtime_platform().unwrap();
    assert_eq!(
        platform.cpu_architecture().map(|a| a.as_str()),
        Some("ARM64")
    );
    assert_eq!(
        platform.operating_system_family().map(|o| o.as_str()),
        Some("LINUX")
    );
    assert_eq!(
        td.execution_role_arn(),
        Some(out.execution_role_arn.as_str())
    );
    assert_eq!(td.task_role_arn(), Some(out.task_role_arn.as_str()));
    let app = &td.container_definitions()[0];
    assert_eq!(td.container_definitions().len(), 1);
    assert_eq!(app.name(), Some("app"));
    assert_eq!(app.image(), Some(inputs.default_image.as_str()));
    assert_eq!(app.port_mappings()[0].container_port(), Some(8080));
    assert_eq!(
        app.port_mappings()[0].protocol().map(|p| p.as_str()),
        Some("tcp")
    );
    let env: Vec<(&str, &str)> = app
        .environment()
        .iter()
        .map(|kv| (kv.name().unwrap(), kv.value().unwrap()))
        .collect();
    assert!(
        env.contains(&("PORT", "8080")) && env.contains(&("GREETING", "hi")),
        "{env:?}"
    );
    let secrets: Vec<(&str, &str)> = app
        .secrets()
        .iter()
        .map(|s| (s.name(), s.value_from()))
        .collect();
    assert_eq!(
        secrets,
        [
            (
                "DB_PASSWORD",
                "arn:aws:secretsmanager:eu-west-1:123456789012:secret:apply-all/db-AbCdEf:password::"
            ),
            ("TOKEN", "/apply-all/token")
        ]
    );
    assert_eq!(
        app.health_check().unwrap().command(),
        ["CMD", "/sample-app", "health"]
    );
    let log = app.log_configuration().unwrap();
    assert_eq!(log.log_driver().as_str(), "awslogs");
    let opts = log.options().unwrap();
    assert_eq!(opts["awslogs-group"], "/ecs/apply-all");
    assert_eq!(opts["awslogs-region"], REGION);
    assert_eq!(opts["awslogs-stream-prefix"], "app");
    assert_eq!(app.readonly_root_filesystem(), Some(true));

    // Service: what moto keeps.
    let s = service(&cx).await;
    assert_eq!(s.service_arn(), Some(out.service_arn.as_str()));
    assert_eq!(s.status(), Some("ACTIVE"));
    assert_eq!(s.desired_count(), 3);
    assert_eq!(s.launch_type().map(|l| l.as_str()), Some("FARGATE"));
    assert_eq!(s.task_definition(), Some(out.task_definition_arn.as_str()));
    let vpc = s
        .network_configuration()
        .unwrap()
        .awsvpc_configuration()
        .unwrap();
    let mut subnets = vpc.subnets().to_vec();
    subnets.sort();
    let mut want = inputs.private_subnet_ids.clone();
    want.sort();
    assert_eq!(subnets, want);
    assert_eq!(
        vpc.security_groups(),
        [inputs.task_security_group_id.as_str()]
    );
    assert_eq!(vpc.assign_public_ip().map(|a| a.as_str()), Some("DISABLED"));
    let lb = &s.load_balancers()[0];
    assert_eq!(
        lb.target_group_arn(),
        Some(inputs.target_group_arn.as_str())
    );
    assert_eq!(
        (lb.container_name(), lb.container_port()),
        (Some("app"), Some(8080))
    );
    assert_eq!(s.propagate_tags().map(|p| p.as_str()), Some("SERVICE"));
    assert!(
        s.tags()
            .iter()
            .any(|t| t.key() == Some("stackproof:name") && t.value() == Some("service"))
    );

    // Autoscaling.
    let aas = aas(&cx);
    let targets = aas
        .describe_scalable_targets()
        .service_namespace(ServiceNamespace::Ecs)
        .send()
        .await
        .unwrap();
    let t = &targets.scalable_targets()[0];
    assert_eq!(t.resource_id(), "service/apply-all/apply-all");
    assert_eq!(
        t.scalable_dimension(),
        &ScalableDimension::EcsServiceDesiredCount
    );
    assert_eq!((t.min_capacity(), t.max_capacity()), (2, 6));
    let policies = aas
        .describe_scaling_policies()
        .service_namespace(ServiceNamespace::Ecs)
        .resource_id("service/apply-all/apply-all")
        .send()
        .await
        .unwrap();
    let mut seen: Vec<Seen> = policies
        .scaling_policies()
        .iter()
        .map(|p| {
            let c = p.target_tracking_scaling_policy_configuration().unwrap();
            let m = c.predefined_metric_specification().unwrap();
            (
                p.policy_name().to_owned(),
                m.predefined_metric_type().as_str().to_owned(),
                m.resource_label().map(str::to_owned),
                c.target_value(),
                c.scale_out_cooldown(),
                c.scale_in_cooldown(),
            )
        })
        .collect();
    seen.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        seen,
        [
            (
                "apply-all-cpu".to_owned(),
                "ECSServiceAverageCPUUtilization".to_owned(),
                None,
                70.0,
                Some(30),
                Some(600)
            ),
            (
                "apply-all-requests".to_owned(),
                "ALBRequestCountPerTarget".to_owned(),
                Some(
                    "app/apply-all/fedcba9876543210/targetgroup/apply-all/0123456789abcdef"
                        .to_owned()
                ),
                3000.0,
                Some(30),
                Some(600)
            ),
        ]
    );
    // Everything read back as written, secrets included: nothing left to do.
    let again = module.plan(&cx, &inputs).await.unwrap();
    assert!(again.is_empty(), "{again}");
}

#[tokio::test]
async fn a_second_apply_writes_nothing_and_plans_nothing() {
    let cx = context("apply-twice");
    let inputs = inputs(&cx).await;
    let module = compute(&cx, "");
    let first = module.apply(&cx, &inputs).await.unwrap();
    let before = cx.calls().snapshot();
    let start = Instant::now();
    let plan = module.plan(&cx, &inputs).await.unwrap();
    let plan_time = start.elapsed();
    assert!(plan.is_empty(), "{plan}");
    let plan_calls = cx.calls().snapshot().since(&before);
    let before = cx.calls().snapshot();
    let second = module.apply(&cx, &inputs).await.unwrap();
    let calls = cx.calls().snapshot().since(&before);
    eprintln!("no-change plan: {plan_time:?}\n{plan_calls}no-change apply:\n{calls}");
    assert_eq!(calls.writes(), 0, "{calls}");
    assert_eq!(first, second);
    assert_eq!(module.outputs(&cx).await.unwrap(), Some(first));
    let other = context("apply-twice");
    assert_eq!(compute(&other, "").outputs(&other).await.unwrap(), None);
}

#[tokio::test]
async fn a_task_definition_changed_behind_our_back_gets_a_new_revision_and_a_service_update() {
    let cx = context("drift");
    let inputs = inputs(&cx).await;
    let module = compute(&cx, "");
    let first = module.apply(&cx, &inputs).await.unwrap();

    // Someone registers a revision with another image and points the service at it.
    let ecs = ecs(&cx);
    let td = task_definition(&cx, &first.task_definition_arn).await;
    let mut app = td.container_definitions()[0].clone();
    app.image = Some("public.ecr.aws/nginx/nginx:latest".to_owned());
    let rogue = ecs
        .register_task_definition()
        .family("drift")
        .network_mode(td.network_mode().unwrap().clone())
        .set_requires_compatibilities(Some(td.requires_compatibilities().to_vec()))
        .cpu("256")
        .memory("512")
        .set_execution_role_arn(td.execution_role_arn().map(str::to_owned))
        .set_task_role_arn(td.task_role_arn().map(str::to_owned))
        .container_definitions(app)
        .send()
        .await
        .unwrap();
    let rogue_arn = rogue
        .task_definition()
        .unwrap()
        .task_definition_arn()
        .unwrap()
        .to_owned();
    ecs.update_service()
        .cluster("drift")
        .service("drift")
        .task_definition(&rogue_arn)
        .send()
        .await
        .unwrap();

    let plan = module.plan(&cx, &inputs).await.unwrap();
    assert_eq!(
        kinds(&plan, Action::Create),
        ["ecs-task-definition drift"],
        "{plan}"
    );
    assert_eq!(
        kinds(&plan, Action::Update),
        ["ecs-service drift"],
        "{plan}"
    );
    assert!(plan.to_string().contains("nginx"), "{plan}");

    let fixed = module.apply(&cx, &inputs).await.unwrap();
    assert!(
        fixed.task_definition_arn.ends_with(":3"),
        "{}",
        fixed.task_definition_arn
    );
    let td = task_definition(&cx, &fixed.task_definition_arn).await;
    assert_eq!(
        td.container_definitions()[0].image(),
        Some(inputs.default_image.as_str())
    );
    assert_eq!(
        service(&cx).await.task_definition(),
        Some(fixed.task_definition_arn.as_str())
    );

    let before = cx.calls().snapshot();
    module.apply(&cx, &inputs).await.unwrap();
    let calls = cx.calls().snapshot().since(&before);
    assert_eq!(calls.writes(), 0, "{calls}");
}

#[tokio::test]
async fn a_desired_count_set_by_autoscaling_is_not_reverted() {
    let cx = context("scaled");
    let inputs = inputs(&cx).await;
    let module = compute(&cx, "");
    module.apply(&cx, &inputs).await.unwrap();
    ecs(&cx)
        .update_service()
        .cluster("scaled")
        .service("scaled")
        .desired_count(7)
        .send()
        .await
        .unwrap();
    let plan = module.plan(&cx, &inputs).await.unwrap();
    assert!(plan.is_empty(), "{plan}");
    let before = cx.calls().snapshot();
    module.apply(&cx, &inputs).await.unwrap();
    assert_eq!(cx.calls().snapshot().since(&before).writes(), 0);
    assert_eq!(service(&cx).await.desired_count(), 7);

    // A changed setting is repaired without touching the count.
    let bigger = compute(&cx, "cpu = 512\nmemory = 1024\nmax-count = 10");
    let plan = bigger.plan(&cx, &inputs).await.unwrap();
    assert_eq!(
        kinds(&plan, Action::Update),
        [
            "ecs-service scaled",
            "scalable-target service/scaled/scaled"
        ],
        "{plan}"
    );
    bigger.apply(&cx, &inputs).await.unwrap();
    let s = service(&cx).await;
    assert_eq!(s.desired_count(), 7);
    let td = task_definition(&cx, s.task_definition().unwrap()).await;
    assert_eq!(td.cpu(), Some("512"));
}

#[tokio::test]
async fn destroy_leaves_nothing_and_a_second_destroy_does_nothing() {
    let cx = context("destroy");
    let inputs = inputs(&cx).await;
    let module = compute(
        &cx,
        r#"task-role-statements = [{ Effect = "Allow", Action = "s3:ListBucket", Resource = "*" }]"#,
    );
    module.apply(&cx, &inputs).await.unwrap();
    // A second revision, so destroy has two to deregister.
    compute(
        &cx,
        r#"image = "public.ecr.aws/nginx/nginx:1.27"
task-role-statements = [{ Effect = "Allow", Action = "s3:ListBucket", Resource = "*" }]"#,
    )
    .apply(&cx, &inputs)
    .await
    .unwrap();

    let planned = module.plan_destroy(&cx).await.unwrap();
    let before = cx.calls().snapshot();
    let start = Instant::now();
    let removed = module.destroy(&cx).await.unwrap();
    eprintln!(
        "destroy: {:?}\n{}",
        start.elapsed(),
        cx.calls().snapshot().since(&before)
    );
    assert_eq!(planned, removed);
    let deleted = kinds(&removed, Action::Delete);
    for expected in [
        "scaling-policy destroy-cpu",
        "scaling-policy destroy-requests",
        "scalable-target service/destroy/destroy",
        "ecs-service destroy",
        "ecs-cluster destroy",
        "log-group /ecs/destroy",
        "iam-role destroy-task-execution",
        "iam-role destroy-task",
    ] {
        assert!(
            deleted.contains(&expected.to_owned()),
            "{expected} in\n{removed}"
        );
    }
    assert_eq!(
        deleted
            .iter()
            .filter(|d| d.starts_with("ecs-task-definition "))
            .count(),
        2,
        "{removed}"
    );
    assert!(
        removed
            .to_string()
            .contains("deregistered, then deleted (DeleteTaskDefinitions)"),
        "{removed}"
    );

    let iam = iam(&cx);
    for role in ["destroy-task-execution", "destroy-task"] {
        let err = iam.get_role().role_name(role).send().await.unwrap_err();
        assert_eq!(aws_smithy_types_code(&err), Some("NoSuchEntity".to_owned()));
    }
    let ecs = ecs(&cx);
    let c = ecs
        .describe_clusters()
        .clusters("destroy")
        .send()
        .await
        .unwrap();
    assert!(
        c.clusters().iter().all(|c| c.status() == Some("INACTIVE")),
        "{c:?}"
    );
    let s = service(&cx).await;
    assert_eq!(s.status(), Some("INACTIVE"));
    let active = ecs
        .list_task_definitions()
        .family_prefix("destroy")
        .send()
        .await
        .unwrap();
    assert!(active.task_definition_arns().is_empty());
    let inactive = ecs
        .list_task_definitions()
        .family_prefix("destroy")
        .status(aws_sdk_ecs::types::TaskDefinitionStatus::Inactive)
        .send()
        .await
        .unwrap();
    // Deregistered revisions are deleted too: ECS keeps INACTIVE ones until
    // DeleteTaskDefinitions.
    assert!(inactive.task_definition_arns().is_empty(), "{inactive:?}");
    let groups = logs(&cx)
        .describe_log_groups()
        .log_group_name_prefix("/ecs/destroy")
        .send()
        .await
        .unwrap();
    assert!(groups.log_groups().is_empty());
    let targets = aas(&cx)
        .describe_scalable_targets()
        .service_namespace(ServiceNamespace::Ecs)
        .send()
        .await
        .unwrap();
    assert!(targets.scalable_targets().is_empty());
    let policies = aas(&cx)
        .describe_scaling_policies()
        .service_namespace(ServiceNamespace::Ecs)
        .send()
        .await
        .unwrap();
    assert!(policies.scaling_policies().is_empty());

    // Nothing left: destroy again is a no-op, and apply builds it all again.
    assert!(module.destroy(&cx).await.unwrap().is_empty());
    let again = module.apply(&cx, &inputs).await.unwrap();
    // A new revision of the family (its number is ECS's: the deleted ones are gone).
    let active = ecs
        .list_task_definitions()
        .family_prefix("destroy")
        .send()
        .await
        .unwrap();
    assert_eq!(
        active.task_definition_arns(),
        std::slice::from_ref(&again.task_definition_arn)
    );
    assert_eq!(service(&cx).await.status(), Some("ACTIVE"));
}

fn aws_smithy_types_code<E: aws_sdk_iam::error::ProvideErrorMetadata>(e: &E) -> Option<String> {
    e.code().map(str::to_owned)
}

#[tokio::test]
async fn a_log_group_that_holds_logs_is_kept_unless_force_destroy() {
    let cx = context("keeplogs");
    let inputs = inputs(&cx).await;
    let module = compute(&cx, "");
    module.apply(&cx, &inputs).await.unwrap();
    // What a task's awslogs driver writes: one stream, one event.
    let logs = logs(&cx);
    logs.create_log_stream()
        .log_group_name("/ecs/keeplogs")
        .log_stream_name("app/app/0123456789abcdef")
        .send()
        .await
        .unwrap();
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    logs.put_log_events()
        .log_group_name("/ecs/keeplogs")
        .log_stream_name("app/app/0123456789abcdef")
        .log_events(
            aws_sdk_cloudwatchlogs::types::InputLogEvent::builder()
                .timestamp(now_ms)
                .message("listening on 0.0.0.0:8080")
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();

    // The preflight says it keeps the group, why, and how to delete it.
    let planned = module.plan_destroy(&cx).await.unwrap();
    assert!(
        !kinds(&planned, Action::Delete).contains(&"log-group /ecs/keeplogs".to_owned()),
        "{planned}"
    );
    assert_eq!(
        kinds(&planned, Action::Keep),
        ["log-group /ecs/keeplogs"],
        "{planned}"
    );
    let text = planned.to_string();
    assert!(
        text.contains("= keep compute log-group \"/ecs/keeplogs\""),
        "{text}"
    );
    assert!(
        text.contains("newest stream app/app/0123456789abcdef"),
        "{text}"
    );
    assert!(
        text.contains("CloudWatch deletes its events 30 days"),
        "{text}"
    );
    assert!(
        text.contains("`force-destroy = true` in [service]"),
        "{text}"
    );
    assert!(text.ends_with(", 1 kept."), "{text}");

    let removed = module.destroy(&cx).await.unwrap();
    assert_eq!(planned, removed);
    let group = logs
        .describe_log_groups()
        .log_group_name_prefix("/ecs/keeplogs")
        .send()
        .await
        .unwrap();
    assert_eq!(group.log_groups().len(), 1, "{group:?}");
    // Everything else is gone, so a second destroy has nothing to do but still keeps it.
    let again = module.plan_destroy(&cx).await.unwrap();
    assert!(again.is_empty(), "{again}");
    assert_eq!(again.kept().count(), 1, "{again}");

    // The next deploy takes the kept group over: nothing to create or change for it.
    module.apply(&cx, &inputs).await.unwrap();
    let plan = module.plan(&cx, &inputs).await.unwrap();
    assert!(plan.is_empty(), "{plan}");

    // force-destroy deletes it, logs and all.
    let forced = compute(&cx, "force-destroy = true");
    let planned = forced.plan_destroy(&cx).await.unwrap();
    assert!(
        kinds(&planned, Action::Delete).contains(&"log-group /ecs/keeplogs".to_owned()),
        "{planned}"
    );
    assert_eq!(planned.kept().count(), 0, "{planned}");
    forced.destroy(&cx).await.unwrap();
    let group = logs
        .describe_log_groups()
        .log_group_name_prefix("/ecs/keeplogs")
        .send()
        .await
        .unwrap();
    assert!(group.log_groups().is_empty(), "{group:?}");
    assert!(forced.plan_destroy(&cx).await.unwrap().changes.is_empty());
}

#[tokio::test]
async fn resources_of_our_name_that_are_not_ours_are_left_alone() {
    let cx = context("foreign");
    let inputs = inputs(&cx).await;
    iam(&cx)
        .create_role()
        .role_name("foreign-task")
        .assume_role_policy_document(r#"{"Version":"2012-10-17","Statement":[]}"#)
        .send()
        .await
        .unwrap();
    let err = compute(&cx, "").plan(&cx, &inputs).await.unwrap_err();
    assert!(
        err.to_string()
            .contains("IAM role \"foreign-task\" exists but is not tagged"),
        "{err}"
    );
    let removed = compute(&cx, "").destroy(&cx).await.unwrap();
    assert!(removed.is_empty(), "{removed}");
    iam(&cx)
        .get_role()
        .role_name("foreign-task")
        .send()
        .await
        .unwrap();
}

#[test]
fn validation_reports_every_problem_before_any_call() {
    let config: ComputeConfig = toml::from_str(
        r#"
        cpu = 1024
        memory = 1024
        min-count = 3
        desired-count = 2
        max-count = 1001
        log-retention-days = 10
        "#,
    )
    .unwrap();
    let problems = config
        .validate(&infra::Scope::new("web", "eu-west-1"))
        .map_err(|p| p.within("service"))
        .unwrap_err();
    let fields: Vec<&str> = problems.0.iter().map(|p| p.field.as_str()).collect();
    assert_eq!(
        fields,
        [
            "service.memory",
            "service.max-count",
            "service.desired-count",
            "service.log-retention-days"
        ],
        "{problems}"
    );
}

#[tokio::test]
async fn drift_in_roles_logs_cluster_and_scaling_is_repaired() {
    let cx = context("drift-all");
    let inputs = inputs(&cx).await;
    let module = compute(&cx, "");
    module.apply(&cx, &inputs).await.unwrap();
    let iam = iam(&cx);
    iam.delete_role_policy()
        .role_name("drift-all-task-execution")
        .policy_name("drift-all-task-execution")
        .send()
        .await
        .unwrap();
    iam.update_assume_role_policy()
        .role_name("drift-all-task")
        .policy_document(r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"Service":"ec2.amazonaws.com"},"Action":"sts:AssumeRole"}]}"#)
        .send()
        .await
        .unwrap();
    logs(&cx)
        .put_retention_policy()
        .log_group_name("/ecs/drift-all")
        .retention_in_days(1)
        .send()
        .await
        .unwrap();
    ecs(&cx)
        .update_cluster()
        .cluster("drift-all")
        .settings(
            aws_sdk_ecs::types::ClusterSetting::builder()
                .name(aws_sdk_ecs::types::ClusterSettingName::ContainerInsights)
                .value("disabled")
                .build(),
        )
        .send()
        .await
        .unwrap();
    aas(&cx)
        .register_scalable_target()
        .service_namespace(ServiceNamespace::Ecs)
        .resource_id("service/drift-all/drift-all")
        .scalable_dimension(ScalableDimension::EcsServiceDesiredCount)
        .min_capacity(1)
        .max_capacity(3)
        .send()
        .await
        .unwrap();

    let plan = module.plan(&cx, &inputs).await.unwrap();
    let lines: Vec<String> = plan
        .changes
        .iter()
        .map(|c| format!("{:?} {} {}", c.action, c.kind, c.name))
        .collect();
    assert_eq!(
        lines,
        [
            "Update iam-role-policy drift-all-task-execution",
            "Update iam-role drift-all-task",
            "Update log-group /ecs/drift-all",
            "Update ecs-cluster drift-all",
            "Update scalable-target service/drift-all/drift-all",
        ],
        "{plan}"
    );
    module.apply(&cx, &inputs).await.unwrap();
    assert!(module.plan(&cx, &inputs).await.unwrap().is_empty());
    let trust = iam
        .get_role()
        .role_name("drift-all-task")
        .send()
        .await
        .unwrap();
    let doc = trust.role().unwrap().assume_role_policy_document().unwrap();
    assert!(
        !doc.contains("ec2.amazonaws.com") && doc.contains("ecs-tasks"),
        "{doc}"
    );
}

#[tokio::test]
async fn an_interrupted_apply_is_finished_by_the_next_one() {
    let cx = context("resume");
    let inputs = inputs(&cx).await;
    let module = compute(&cx, "");
    let first = module.apply(&cx, &inputs).await.unwrap();
    // As if the first apply had stopped after the task definition: no service, no scaling.
    let aas = aas(&cx);
    for policy in ["resume-cpu", "resume-requests"] {
        aas.delete_scaling_policy()
            .policy_name(policy)
            .service_namespace(ServiceNamespace::Ecs)
            .resource_id("service/resume/resume")
            .scalable_dimension(ScalableDimension::EcsServiceDesiredCount)
            .send()
            .await
            .unwrap();
    }
    aas.deregister_scalable_target()
        .service_namespace(ServiceNamespace::Ecs)
        .resource_id("service/resume/resume")
        .scalable_dimension(ScalableDimension::EcsServiceDesiredCount)
        .send()
        .await
        .unwrap();
    ecs(&cx)
        .delete_service()
        .cluster("resume")
        .service("resume")
        .force(true)
        .send()
        .await
        .unwrap();

    let plan = module.plan(&cx, &inputs).await.unwrap();
    assert_eq!(
        kinds(&plan, Action::Create),
        [
            "ecs-service resume",
            "scalable-target service/resume/resume",
            "scaling-policy resume-cpu",
            "scaling-policy resume-requests"
        ],
        "{plan}"
    );
    assert_eq!(plan.changes.len(), 4, "{plan}");
    let again = module.apply(&cx, &inputs).await.unwrap();
    // The same task definition revision: nothing about it changed.
    assert_eq!(again.task_definition_arn, first.task_definition_arn);
    let s = service(&cx).await;
    assert_eq!((s.status(), s.desired_count()), (Some("ACTIVE"), 2));
    assert!(module.plan(&cx, &inputs).await.unwrap().is_empty());
}

#[tokio::test]
async fn an_inline_policy_added_and_a_tag_removed_by_hand_show_in_one_iam_read() {
    let cx = context("drift-iam");
    let inputs = inputs(&cx).await;
    let module = compute(&cx, "");
    module.apply(&cx, &inputs).await.unwrap();
    let iam = iam(&cx);
    iam.put_role_policy()
        .role_name("drift-iam-task")
        .policy_name("by-hand")
        .policy_document(r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"s3:*","Resource":"*"}]}"#)
        .send()
        .await
        .unwrap();
    iam.untag_role()
        .role_name("drift-iam-task-execution")
        .tag_keys("Name")
        .send()
        .await
        .unwrap();

    let before = cx.calls().snapshot();
    let plan = module.plan(&cx, &inputs).await.unwrap();
    let calls = cx.calls().snapshot().since(&before);
    let lines: Vec<String> = plan
        .changes
        .iter()
        .map(|c| format!("{:?} {} {}", c.action, c.kind, c.name))
        .collect();
    assert_eq!(
        lines,
        [
            "Update iam-role drift-iam-task-execution",
            "Delete iam-role-policy drift-iam-task",
        ],
        "{plan}"
    );
    let iam_calls: u64 = calls
        .by_operation
        .iter()
        .filter(|((service, _), _)| service == "IAM")
        .map(|(_, n)| n)
        .sum();
    assert_eq!(iam_calls, 1, "{calls}");

    module.apply(&cx, &inputs).await.unwrap();
    assert!(module.plan(&cx, &inputs).await.unwrap().is_empty());
    let inline = iam
        .list_role_policies()
        .role_name("drift-iam-task")
        .send()
        .await
        .unwrap();
    assert!(inline.policy_names().is_empty(), "{inline:?}");
}

#[tokio::test]
async fn high_resolution_metrics_move_the_cpu_policy_to_the_twenty_second_metric() {
    let cx = context("hires");
    let inputs = inputs(&cx).await;
    compute(&cx, "").apply(&cx, &inputs).await.unwrap();
    let cpu_metric = || async {
        aas(&cx)
            .describe_scaling_policies()
            .service_namespace(ServiceNamespace::Ecs)
            .resource_id("service/hires/hires")
            .send()
            .await
            .unwrap()
            .scaling_policies()
            .iter()
            .filter_map(|p| {
                let m = p
                    .target_tracking_scaling_policy_configuration()?
                    .predefined_metric_specification()?
                    .predefined_metric_type()
                    .as_str()
                    .to_owned();
                m.starts_with("ECSServiceAverageCPU").then_some(m)
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(cpu_metric().await, ["ECSServiceAverageCPUUtilization"]);
    let fast = compute(&cx, "high-resolution-metrics = true");
    let plan = fast.plan(&cx, &inputs).await.unwrap();
    assert!(
        plan.to_string()
            .contains("ECSServiceAverageCPUUtilizationHighResolution"),
        "{plan}"
    );
    fast.apply(&cx, &inputs).await.unwrap();
    assert_eq!(
        cpu_metric().await,
        ["ECSServiceAverageCPUUtilizationHighResolution"]
    );
    assert!(fast.plan(&cx, &inputs).await.unwrap().is_empty());
}

#[tokio::test]
async fn the_load_generators_task_definition_is_registered_once_and_removed() {
    use stackproof_compute::loadgen::{self, LoadgenTask};
    let cx = context("loadgen");
    let ecs = ecs(&cx);
    let outputs = ComputeOutputs {
        cluster_name: "loadgen".into(),
        cluster_arn: String::new(),
        service_name: "loadgen".into(),
        service_arn: String::new(),
        task_definition_arn: String::new(),
        container_name: "app".into(),
        log_group_name: "/ecs/loadgen".into(),
        execution_role_arn: "arn:aws:iam::123456789012:role/loadgen-execution".into(),
        task_role_arn: "arn:aws:iam::123456789012:role/loadgen-task".into(),
        fault_role_arn: String::new(),
    };
    let registry = "123456789012.dkr.ecr.eu-west-1.amazonaws.com";
    // The generators' own task role: S3 of the run's prefix only, made once.
    let iam = iam(&cx);
    let role = loadgen::ensure_role(&iam, &cx, "123456789012", "logs-bucket")
        .await
        .unwrap();
    assert_eq!(
        loadgen::ensure_role(&iam, &cx, "123456789012", "logs-bucket")
            .await
            .unwrap(),
        role
    );
    assert!(role.ends_with(":role/loadgen-loadgen"), "{role}");
    let policy = iam
        .get_role_policy()
        .role_name("loadgen-loadgen")
        .policy_name("loadgen-loadgen")
        .send()
        .await
        .unwrap();
    let document = urlencoding_free(policy.policy_document());
    assert!(
        document.contains("arn:aws:s3:::logs-bucket/loadtest/*"),
        "{document}"
    );
    assert!(!document.contains("\"s3:*\""), "{document}");
    let task = LoadgenTask::for_stack(&cx, &outputs, registry, &role);
    assert_eq!(task.task_role_arn, role);
    assert_eq!(task.family, "loadgen-loadgen");
    assert_eq!(task.image, format!("{registry}/loadgen/loadgen:latest"));

    let first = loadgen::ensure(&ecs, &cx, &task).await.unwrap();
    assert!(
        first.ends_with("task-definition/loadgen-loadgen:1"),
        "{first}"
    );
    // The same again: the revision is reused, nothing registered.
    assert_eq!(loadgen::ensure(&ecs, &cx, &task).await.unwrap(), first);
    let td = task_definition(&cx, &first).await;
    assert_eq!(td.cpu(), Some("1024"));
    assert_eq!(td.memory(), Some("2048"));
    let c = &td.container_definitions()[0];
    assert_eq!(c.name(), Some(loadgen::CONTAINER));
    let log = c.log_configuration().unwrap().options().unwrap();
    assert_eq!(log["awslogs-group"], "/ecs/loadgen");
    // Another image: a new revision.
    let newer = LoadgenTask {
        image: format!("{registry}/loadgen/loadgen:v2"),
        ..task.clone()
    };
    let second = loadgen::ensure(&ecs, &cx, &newer).await.unwrap();
    assert!(second.ends_with(":2"), "{second}");

    // Destroy's part: every active revision deregistered, and none left to remove after.
    assert_eq!(loadgen::remove(&ecs, &cx).await.unwrap(), 2);
    assert_eq!(loadgen::remove(&ecs, &cx).await.unwrap(), 0);
    assert!(loadgen::remove_role(&iam, &cx).await.unwrap());
    assert!(!loadgen::remove_role(&iam, &cx).await.unwrap());
}

/// A policy document as IAM returns it (moto may URL-encode it, as AWS does).
fn urlencoding_free(text: &str) -> String {
    let mut out = String::new();
    let mut bytes = text.bytes();
    while let Some(b) = bytes.next() {
        if b == b'%' {
            let hex: String = bytes.by_ref().take(2).map(char::from).collect();
            out.push(char::from(u8::from_str_radix(&hex, 16).unwrap()));
        } else {
            out.push(char::from(b));
        }
    }
    out
}
