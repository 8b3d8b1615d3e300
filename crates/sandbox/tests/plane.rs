//! The sandbox data plane end to end against moto, with the real sample-app binary and real
//! HTTP through the local ALB, on a clock 20 times AWS's: tasks in both zones launching through
//! PROVISIONING and PENDING, StopTask replacement, zone isolation by network ACL and its repair,
//! load balancer nodes in DNS, zonal shifts, target-tracking scale-out no sooner than its alarms
//! allow, and no process left after stop.

#![allow(clippy::unwrap_used)] // Test helpers outside #[test] functions.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use aws_sdk_applicationautoscaling::types::{
    MetricType, PolicyType, PredefinedMetricSpecification, ScalableDimension, ServiceNamespace,
    TargetTrackingScalingPolicyConfiguration,
};
use aws_sdk_ecs::types::{
    AwsVpcConfiguration, Compatibility, ContainerDefinition, LaunchType, LoadBalancer,
    NetworkConfiguration, NetworkMode, PortMapping,
};
use aws_sdk_elasticloadbalancingv2::types::{Action, ActionTypeEnum, ProtocolEnum, TargetTypeEnum};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use stackproof_sandbox::daemon;
use stackproof_sandbox::{Clock, DataPlane, MotoServer, PlaneOptions, PlaneStatus, TaskHealth};

const REGION: &str = "eu-west-1";

/// The tests' clock: 20 times AWS's (a 60 s metric period takes 3 s; a health check timeout
/// of 2 s, 100 ms).
const SCALE: f64 = 20.0;

fn clock() -> Clock {
    Clock::scaled(SCALE).unwrap()
}

/// Model seconds in wall time on the tests' clock.
fn wall(model_s: f64) -> Duration {
    Duration::from_secs_f64(model_s / SCALE)
}

/// The plane's options for `st` on the tests' clock, reading moto every 300 ms.
fn options(app: PathBuf, st: &Stack) -> PlaneOptions {
    let mut o = PlaneOptions::new(app)
        .interceptor(st.account.clone())
        .clock(clock());
    o.interval = Duration::from_millis(300);
    o
}

fn sample_app() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("STACKPROOF_SAMPLE_APP") {
        return Some(PathBuf::from(p));
    }
    // target/debug/deps/plane-xxxx -> target/debug/sample-app
    let exe = std::env::current_exe().ok()?;
    let path = exe.parent()?.parent()?.join("sample-app");
    path.exists().then_some(path)
}

struct Stack {
    sdk: aws_config::SdkConfig,
    account: stackproof_sandbox::MotoAccount,
    ec2: aws_sdk_ec2::Client,
    ecs: aws_sdk_ecs::Client,
    aas: aws_sdk_applicationautoscaling::Client,
    vpc: String,
    subnets: BTreeMap<String, String>,
    cluster: String,
    service: String,
    port: u16,
    sg: String,
    /// The target group ARN.
    tg: String,
}

macro_rules! client {
    ($sdk:expr, $acct:expr, $krate:ident) => {{
        $krate::Client::from_conf(
            $krate::config::Builder::from($sdk)
                .interceptor($acct.clone())
                .build(),
        )
    }};
}

/// A free TCP port on loopback, used as the container port so parallel runs do not collide.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn stack() -> Stack {
    let moto = MotoServer::shared().expect("moto starts (run `cargo xtask setup` first)");
    let sdk = stackproof_sandbox::sdk_config(moto.endpoint(), REGION);
    stack_in(sdk, moto.fresh_account()).await
}

async fn stack_in(sdk: aws_config::SdkConfig, account: stackproof_sandbox::MotoAccount) -> Stack {
    let ec2 = client!(&sdk, account, aws_sdk_ec2);
    let elb = client!(&sdk, account, aws_sdk_elasticloadbalancingv2);
    let ecs = client!(&sdk, account, aws_sdk_ecs);
    let aas = client!(&sdk, account, aws_sdk_applicationautoscaling);
    let port = free_port();

    let vpc = ec2
        .create_vpc()
        .cidr_block("10.0.0.0/16")
        .send()
        .await
        .unwrap()
        .vpc()
        .unwrap()
        .vpc_id()
        .unwrap()
        .to_owned();
    let mut subnets = BTreeMap::new();
    for (i, zone) in ["eu-west-1a", "eu-west-1b"].iter().enumerate() {
        let s = ec2
            .create_subnet()
            .vpc_id(&vpc)
            .cidr_block(format!("10.0.{i}.0/24"))
            .availability_zone(*zone)
            .send()
            .await
            .unwrap();
        subnets.insert(
            (*zone).to_owned(),
            s.subnet().unwrap().subnet_id().unwrap().to_owned(),
        );
    }
    // A way out to the registry, as a NAT gateway gives private subnets: without one the
    // tasks cannot pull their image (an internet gateway on the main route table here).
    let igw = ec2
        .create_internet_gateway()
        .send()
        .await
        .unwrap()
        .internet_gateway()
        .unwrap()
        .internet_gateway_id()
        .unwrap()
        .to_owned();
    ec2.attach_internet_gateway()
        .internet_gateway_id(&igw)
        .vpc_id(&vpc)
        .send()
        .await
        .unwrap();
    let main_table = ec2
        .describe_route_tables()
        .filters(
            aws_sdk_ec2::types::Filter::builder()
                .name("vpc-id")
                .values(&vpc)
                .build(),
        )
        .send()
        .await
        .unwrap()
        .route_tables()
        .iter()
        .find(|t| t.associations().iter().any(|a| a.main() == Some(true)))
        .and_then(|t| t.route_table_id())
        .unwrap()
        .to_owned();
    ec2.create_route()
        .route_table_id(&main_table)
        .destination_cidr_block("0.0.0.0/0")
        .gateway_id(&igw)
        .send()
        .await
        .unwrap();
    let sg = ec2
        .create_security_group()
        .group_name("tasks")
        .description("tasks")
        .vpc_id(&vpc)
        .send()
        .await
        .unwrap()
        .group_id()
        .unwrap()
        .to_owned();
    let tg = elb
        .create_target_group()
        .name("web")
        .protocol(ProtocolEnum::Http)
        .port(i32::from(port))
        .vpc_id(&vpc)
        .target_type(TargetTypeEnum::Ip)
        .health_check_path("/health")
        .health_check_interval_seconds(5)
        .health_check_timeout_seconds(2)
        .healthy_threshold_count(2)
        .unhealthy_threshold_count(2)
        .send()
        .await
        .unwrap()
        .target_groups()[0]
        .target_group_arn()
        .unwrap()
        .to_owned();
    elb.modify_target_group_attributes()
        .target_group_arn(&tg)
        .attributes(
            aws_sdk_elasticloadbalancingv2::types::TargetGroupAttribute::builder()
                .key("deregistration_delay.timeout_seconds")
                .value("1")
                .build(),
        )
        .send()
        .await
        .unwrap();
    let lb = elb
        .create_load_balancer()
        .name("web")
        .set_subnets(Some(subnets.values().cloned().collect()))
        .security_groups(&sg)
        .send()
        .await
        .unwrap()
        .load_balancers()[0]
        .load_balancer_arn()
        .unwrap()
        .to_owned();
    elb.create_listener()
        .load_balancer_arn(&lb)
        .protocol(ProtocolEnum::Http)
        .port(80)
        .default_actions(
            Action::builder()
                .r#type(ActionTypeEnum::Forward)
                .target_group_arn(&tg)
                .build(),
        )
        .send()
        .await
        .unwrap();

    // The container's secrets: a JSON key of a Secrets Manager secret and an SSM parameter.
    let sm = client!(&sdk, account, aws_sdk_secretsmanager);
    let secret_arn = sm
        .create_secret()
        .name("web/db")
        .secret_string(r#"{"password":"pw-from-asm","user":"web"}"#)
        .send()
        .await
        .unwrap()
        .arn()
        .unwrap()
        .to_owned();
    client!(&sdk, account, aws_sdk_ssm)
        .put_parameter()
        .name("/web/token")
        .value("tok-from-ssm")
        .r#type(aws_sdk_ssm::types::ParameterType::SecureString)
        .send()
        .await
        .unwrap();

    let cluster = "web".to_owned();
    ecs.create_cluster()
        .cluster_name(&cluster)
        .send()
        .await
        .unwrap();
    let td = ecs
        .register_task_definition()
        .family("web")
        .network_mode(NetworkMode::Awsvpc)
        .requires_compatibilities(Compatibility::Fargate)
        .cpu("256")
        .memory("512")
        .container_definitions(
            ContainerDefinition::builder()
                .name("app")
                .image("x/sample-app:latest")
                .essential(true)
                .port_mappings(
                    PortMapping::builder()
                        .container_port(i32::from(port))
                        .build(),
                )
                // The routes these tests drive are off unless the task's environment asks.
                .environment(env("WORK_ROUTES", "1"))
                .environment(env("FAULT_ROUTES", "1"))
                .environment(env("MODE", "sandbox"))
                .secrets(secret("DB_PASSWORD", &format!("{secret_arn}:password::")))
                .secrets(secret("TOKEN", "/web/token"))
                .build(),
        )
        .send()
        .await
        .unwrap()
        .task_definition()
        .unwrap()
        .task_definition_arn()
        .unwrap()
        .to_owned();
    let service = "web".to_owned();
    ecs.create_service()
        .cluster(&cluster)
        .service_name(&service)
        .task_definition(&td)
        .desired_count(2)
        .launch_type(LaunchType::Fargate)
        .network_configuration(
            NetworkConfiguration::builder()
                .awsvpc_configuration(
                    AwsVpcConfiguration::builder()
                        .set_subnets(Some(subnets.values().cloned().collect()))
                        .security_groups(&sg)
                        .build()
                        .unwrap(),
                )
                .build(),
        )
        .load_balancers(
            LoadBalancer::builder()
                .target_group_arn(&tg)
                .container_name("app")
                .container_port(i32::from(port))
                .build(),
        )
        .send()
        .await
        .unwrap();
    aas.register_scalable_target()
        .service_namespace(ServiceNamespace::Ecs)
        .resource_id(format!("service/{cluster}/{service}"))
        .scalable_dimension(ScalableDimension::EcsServiceDesiredCount)
        .min_capacity(2)
        .max_capacity(4)
        .send()
        .await
        .unwrap();
    Stack {
        sdk,
        account,
        ec2,
        ecs,
        aas,
        vpc,
        subnets,
        cluster,
        service,
        port,
        sg,
        tg,
    }
}

/// The stopped reasons ECS recorded for the cluster's stopped tasks (of `service`, if given).
async fn stopped_reasons(st: &Stack, service: Option<&str>) -> Vec<String> {
    let stopped = st
        .ecs
        .list_tasks()
        .cluster(&st.cluster)
        .set_service_name(service.map(str::to_owned))
        .desired_status(aws_sdk_ecs::types::DesiredStatus::Stopped)
        .send()
        .await
        .unwrap();
    let described = st
        .ecs
        .describe_tasks()
        .cluster(&st.cluster)
        .set_tasks(Some(stopped.task_arns().to_vec()))
        .send()
        .await
        .unwrap();
    described
        .tasks()
        .iter()
        .filter_map(|t| t.stopped_reason().map(str::to_owned))
        .collect()
}

fn env(name: &str, value: &str) -> aws_sdk_ecs::types::KeyValuePair {
    aws_sdk_ecs::types::KeyValuePair::builder()
        .name(name)
        .value(value)
        .build()
}

fn secret(name: &str, value_from: &str) -> aws_sdk_ecs::types::Secret {
    aws_sdk_ecs::types::Secret::builder()
        .name(name)
        .value_from(value_from)
        .build()
        .unwrap()
}

/// The environment of a running process (`/proc/PID/environ`).
fn environ(pid: u32) -> BTreeMap<String, String> {
    std::fs::read(format!("/proc/{pid}/environ"))
        .unwrap_or_default()
        .split(|b| *b == 0)
        .filter_map(|kv| {
            let kv = String::from_utf8_lossy(kv);
            let (k, v) = kv.split_once('=')?;
            Some((k.to_owned(), v.to_owned()))
        })
        .collect()
}

/// One GET through `addr`; returns (status, x-az, x-task).
async fn get(addr: SocketAddr, path: &str) -> Option<(u16, String, String)> {
    let attempt = async {
        let stream = tokio::net::TcpStream::connect(addr).await.ok()?;
        let (mut tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .ok()?;
        tokio::spawn(conn);
        let req = http::Request::get(path)
            .header("host", "web")
            .body(Empty::<Bytes>::new())
            .ok()?;
        let resp = tx.send_request(req).await.ok()?;
        let header = |n: &str| {
            resp.headers()
                .get(n)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned()
        };
        let out = (resp.status().as_u16(), header("x-az"), header("x-task"));
        let _ = resp.into_body().collect().await;
        Some(out)
    };
    tokio::time::timeout(Duration::from_secs(5), attempt)
        .await
        .ok()
        .flatten()
}

/// One `POST path` straight at `addr`; the status.
async fn post(addr: SocketAddr, path: &str) -> Option<u16> {
    let attempt = async {
        let stream = tokio::net::TcpStream::connect(addr).await.ok()?;
        let (mut tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .ok()?;
        tokio::spawn(conn);
        let req = http::Request::post(path)
            .header("host", "web")
            .body(Empty::<Bytes>::new())
            .ok()?;
        let resp = tx.send_request(req).await.ok()?;
        Some(resp.status().as_u16())
    };
    tokio::time::timeout(Duration::from_secs(5), attempt)
        .await
        .ok()
        .flatten()
}

/// The `ip:port` of every target registered in `tg` in the control plane.
async fn registered_targets(st: &Stack, tg: &str) -> BTreeSet<String> {
    let elb = client!(&st.sdk, st.account, aws_sdk_elasticloadbalancingv2);
    let out = elb
        .describe_target_health()
        .target_group_arn(tg)
        .send()
        .await
        .unwrap();
    out.target_health_descriptions()
        .iter()
        .filter_map(|d| d.target())
        .map(|t| format!("{}:{}", t.id().unwrap_or_default(), t.port().unwrap_or(0)))
        .collect()
}

/// `n` sequential requests; the zones and tasks that answered 200.
async fn spray(addr: SocketAddr, n: usize) -> (BTreeSet<String>, BTreeSet<String>, usize) {
    let mut zones = BTreeSet::new();
    let mut tasks = BTreeSet::new();
    let mut ok = 0;
    for _ in 0..n {
        if let Some((200, az, task)) = get(addr, "/").await {
            zones.insert(az);
            tasks.insert(task);
            ok += 1;
        }
    }
    (zones, tasks, ok)
}

fn alive(pid: u32) -> bool {
    // A zombie still has /proc/<pid>; its state is Z.
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        s.rsplit_once(')')
            .is_some_and(|(_, r)| !r.trim_start().starts_with('Z'))
    })
}

fn healthy_in(s: &PlaneStatus, zone: &str) -> usize {
    s.tasks
        .iter()
        .filter(|t| t.zone == zone && t.health == TaskHealth::Healthy)
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plane_serves_heals_isolates_and_scales() {
    let Some(app) = sample_app() else {
        eprintln!(
            "SKIPPED: no sample-app binary beside the test executable; build it with `cargo test --workspace` or set STACKPROOF_SAMPLE_APP"
        );
        return;
    };
    let st = stack().await;
    let state = std::env::temp_dir().join(format!("stackproof-plane-{}", st.account.0));
    let mut options = options(app, &st);
    options.state_dir = Some(state.clone());
    let plane = DataPlane::start(st.sdk.clone(), options).await.unwrap();

    // Two healthy tasks, one per zone, and an ALB endpoint.
    let s = plane
        .wait_for(Duration::from_secs(30), |s| {
            s.converged() && !s.services.is_empty() && !s.endpoints.is_empty()
        })
        .await
        .unwrap_or_else(|| panic!("not converged: {:#?}", plane.status()));
    assert_eq!(s.tasks.len(), 2, "{s:#?}");
    assert_eq!(healthy_in(&s, "eu-west-1a"), 1, "{s:#?}");
    assert_eq!(healthy_in(&s, "eu-west-1b"), 1, "{s:#?}");
    for t in &s.tasks {
        // The task definition's environment and its secrets, read when the task started.
        let env = environ(t.pid);
        assert_eq!(env.get("MODE").map(String::as_str), Some("sandbox"));
        assert_eq!(
            env.get("DB_PASSWORD").map(String::as_str),
            Some("pw-from-asm")
        );
        assert_eq!(env.get("TOKEN").map(String::as_str), Some("tok-from-ssm"));
        assert_eq!(t.addr.port(), st.port);
        let expected = if t.zone == "eu-west-1a" {
            [127, 0, 1]
        } else {
            [127, 0, 2]
        };
        assert_eq!(
            &t.addr.to_string()[..],
            format!(
                "{}.{}.{}.{}:{}",
                expected[0], expected[1], expected[2], 10, st.port
            )
        );
    }
    let ep = s.endpoints[0].clone();
    assert_eq!(ep.port, 80);
    let written = daemon::read_endpoints(&state).unwrap();
    assert_eq!(written.load_balancers, s.endpoints);
    assert_eq!(written.dns, plane.dns());
    assert_eq!(written.clock, clock());

    // Traffic reaches both zones.
    let (zones, _, ok) = spray(ep.local_addr, 20).await;
    assert_eq!(ok, 20);
    assert_eq!(
        zones,
        BTreeSet::from(["eu-west-1a".to_owned(), "eu-west-1b".to_owned()])
    );

    // The tasks are in ECS.
    let listed = st
        .ecs
        .list_tasks()
        .cluster(&st.cluster)
        .desired_status(aws_sdk_ecs::types::DesiredStatus::Running)
        .send()
        .await
        .unwrap();
    assert_eq!(listed.task_arns().len(), 2);

    // StopTask through the API: the process dies, a replacement takes over.
    let victim = s.tasks[0].clone();
    let t0 = std::time::Instant::now();
    st.ecs
        .stop_task()
        .cluster(&st.cluster)
        .task(&victim.arn)
        .reason("test")
        .send()
        .await
        .unwrap();
    let s = plane
        .wait_for(Duration::from_secs(30), |s| {
            s.converged() && s.tasks.iter().all(|t| t.arn != victim.arn)
        })
        .await
        .unwrap_or_else(|| panic!("no replacement: {:#?}", plane.status()));
    eprintln!(
        "measured: StopTask -> replacement healthy in {:?}",
        t0.elapsed()
    );
    assert!(!alive(victim.pid), "pid {} still runs", victim.pid);
    assert_eq!(
        healthy_in(&s, &victim.zone),
        1,
        "replaced in the same zone: {s:#?}"
    );
    let (_, tasks, ok) = spray(ep.local_addr, 10).await;
    assert_eq!(ok, 10);
    assert!(
        !tasks.contains(&victim.arn),
        "the stopped task still answers"
    );

    // A task process that dies (kill -9) is replaced, and the ALB stops sending to it.
    let victim = plane.status().tasks[0].clone();
    let t0 = std::time::Instant::now();
    let killed = std::process::Command::new("kill")
        .args(["-KILL", &victim.pid.to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    plane
        .wait_for(Duration::from_secs(30), |s| {
            s.converged() && s.tasks.iter().all(|t| t.arn != victim.arn)
        })
        .await
        .unwrap_or_else(|| panic!("no replacement after kill: {:#?}", plane.status()));
    eprintln!(
        "measured: kill -9 -> replacement healthy in {:?}",
        t0.elapsed()
    );
    let (_, tasks, ok) = spray(ep.local_addr, 10).await;
    assert_eq!(ok, 10);
    assert!(
        !tasks.contains(&victim.arn),
        "the killed task still answers"
    );
    let described = st
        .ecs
        .describe_tasks()
        .cluster(&st.cluster)
        .tasks(&victim.arn)
        .send()
        .await
        .unwrap();
    assert_eq!(
        described.tasks()[0].desired_status(),
        Some("STOPPED"),
        "the exit is recorded in ECS"
    );

    // Isolate eu-west-1b: its subnet moves to a deny-all network ACL.
    let deny = st
        .ec2
        .create_network_acl()
        .vpc_id(&st.vpc)
        .send()
        .await
        .unwrap()
        .network_acl()
        .unwrap()
        .network_acl_id()
        .unwrap()
        .to_owned();
    let subnet_b = st.subnets["eu-west-1b"].clone();
    let assoc = |acls: &[aws_sdk_ec2::types::NetworkAcl]| {
        acls.iter()
            .flat_map(|a| a.associations())
            .find(|x| x.subnet_id() == Some(subnet_b.as_str()))
            .map(|x| {
                (
                    x.network_acl_association_id().unwrap().to_owned(),
                    x.network_acl_id().unwrap().to_owned(),
                )
            })
            .unwrap()
    };
    let acls = st.ec2.describe_network_acls().send().await.unwrap();
    let (association, original) = assoc(acls.network_acls());
    let t0 = std::time::Instant::now();
    st.ec2
        .replace_network_acl_association()
        .association_id(&association)
        .network_acl_id(&deny)
        .send()
        .await
        .unwrap();
    let s = plane
        .wait_for(Duration::from_secs(20), |s| {
            healthy_in(s, "eu-west-1b") == 0 && healthy_in(s, "eu-west-1a") >= 1
        })
        .await
        .unwrap_or_else(|| panic!("zone b still healthy: {:#?}", plane.status()));
    eprintln!(
        "measured: isolation -> zone b out of the ALB in {:?}",
        t0.elapsed()
    );
    assert!(
        s.tasks
            .iter()
            .filter(|t| t.zone == "eu-west-1b")
            .all(|t| !t.reachable)
    );
    let (zones, _, ok) = spray(ep.local_addr, 20).await;
    assert_eq!(ok, 20, "every request answered by the healthy zone");
    assert_eq!(zones, BTreeSet::from(["eu-west-1a".to_owned()]));

    // Restore: zone b comes back.
    let acls = st.ec2.describe_network_acls().send().await.unwrap();
    let (association, _) = assoc(acls.network_acls());
    let t0 = std::time::Instant::now();
    st.ec2
        .replace_network_acl_association()
        .association_id(&association)
        .network_acl_id(&original)
        .send()
        .await
        .unwrap();
    plane
        .wait_for(Duration::from_secs(20), |s| {
            healthy_in(s, "eu-west-1b") >= 1
        })
        .await
        .unwrap_or_else(|| panic!("zone b did not heal: {:#?}", plane.status()));
    eprintln!(
        "measured: restore -> zone b healthy again in {:?}",
        t0.elapsed()
    );
    let (zones, _, _) = spray(ep.local_addr, 20).await;
    assert_eq!(zones.len(), 2, "both zones again: {zones:?}");

    // Target tracking: 60 requests per target per minute (1 rps); send ~20 rps.
    st.aas
        .put_scaling_policy()
        .policy_name("requests")
        .service_namespace(ServiceNamespace::Ecs)
        .resource_id(format!("service/{}/{}", st.cluster, st.service))
        .scalable_dimension(ScalableDimension::EcsServiceDesiredCount)
        .policy_type(PolicyType::TargetTrackingScaling)
        .target_tracking_scaling_policy_configuration(
            TargetTrackingScalingPolicyConfiguration::builder()
                .target_value(60.0)
                .predefined_metric_specification(
                    PredefinedMetricSpecification::builder()
                        .predefined_metric_type(MetricType::AlbRequestCountPerTarget)
                        .build()
                        .unwrap(),
                )
                .scale_out_cooldown(1)
                .scale_in_cooldown(300)
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    let t0 = std::time::Instant::now();
    let load = tokio::spawn(async move {
        let mut sent = 0;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(45);
        while tokio::time::Instant::now() < deadline && sent < 1000 {
            let _ = get(ep.local_addr, "/").await;
            sent += 1;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    let first = plane
        .wait_for(Duration::from_secs(45), |s| {
            s.services.first().is_some_and(|x| x.desired > 2)
        })
        .await
        .unwrap_or_else(|| panic!("did not scale out: {:#?}", plane.status()));
    let took = t0.elapsed();
    eprintln!(
        "measured: load -> desired {} in {took:?}",
        first.services[0].desired
    );
    // Three breaching one-minute datapoints (the first may be the minute the load started in)
    // and CloudWatch's lag: never sooner than 2 x 60 s + 153 s of model time.
    assert!(
        took >= wall(2.0 * 60.0 + 153.0),
        "scaled out after {took:?}, sooner than the alarm allows"
    );
    assert!(
        took <= wall(4.0 * 60.0 + 153.0) + Duration::from_secs(3),
        "{took:?}"
    );
    let s = plane
        .wait_for(Duration::from_secs(30), |s| {
            s.services.first().is_some_and(|x| x.desired == 4) && s.converged()
        })
        .await
        .unwrap_or_else(|| panic!("did not get 4 healthy tasks: {:#?}", plane.status()));
    eprintln!("measured: load -> 4 healthy tasks in {:?}", t0.elapsed());
    load.abort();
    assert_eq!(s.tasks.len(), 4);
    assert!(
        s.scaling_activities.iter().any(|a| a.contains("scale out")),
        "{s:#?}"
    );
    let described = st
        .ecs
        .describe_services()
        .cluster(&st.cluster)
        .services(&st.service)
        .send()
        .await
        .unwrap();
    assert_eq!(
        described.services()[0].desired_count(),
        4,
        "UpdateService reached ECS"
    );

    // Stop: no task process is left.
    let pids: Vec<u32> = plane.status().tasks.iter().map(|t| t.pid).collect();
    assert!(pids.iter().all(|p| alive(*p)));
    plane.stop().await;
    for pid in pids {
        assert!(!alive(pid), "pid {pid} survived stop()");
    }
    let _ = std::fs::remove_dir_all(state);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemon_runs_moto_and_the_plane_and_stop_leaves_no_process() {
    let Some(app) = sample_app() else {
        eprintln!("SKIPPED: no sample-app binary beside the test executable");
        return;
    };
    let python = stackproof_sandbox::python_path().expect("moto is installed (cargo xtask setup)");
    let dir = std::env::temp_dir().join(format!("stackproof-daemon-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let args: Vec<String> = [
        "--state-dir",
        dir.to_str().unwrap(),
        "--sample-app",
        app.to_str().unwrap(),
        "--python",
        python.to_str().unwrap(),
        "--region",
        REGION,
        "--clock",
        "x20",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    let program = PathBuf::from(env!("CARGO_BIN_EXE_sandbox-daemon"));
    let state = tokio::task::spawn_blocking({
        let dir = dir.clone();
        move || daemon::spawn(&program, &args, &dir, Duration::from_secs(30))
    })
    .await
    .unwrap()
    .unwrap();
    assert!(daemon::alive(state.pid) && daemon::alive(state.moto_pid));

    // The daemon's data plane runs what is declared in its moto (default account).
    let sdk = stackproof_sandbox::sdk_config(&state.endpoint, REGION);
    let _st = stack_in(
        sdk,
        stackproof_sandbox::MotoAccount("123456789012".to_owned()),
    )
    .await;
    let status_file = dir.join(daemon::STATUS_FILE);
    let mut status: Option<serde_json::Value> = None;
    for _ in 0..150 {
        if let Some(v) = std::fs::read_to_string(&status_file)
            .ok()
            .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        {
            let healthy = v["tasks"]
                .as_array()
                .map_or(0, |t| t.iter().filter(|t| t["health"] == "healthy").count());
            if healthy == 2 {
                status = Some(v);
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let status = status.unwrap_or_else(|| {
        panic!(
            "no healthy tasks: {}",
            std::fs::read_to_string(dir.join("sandbox.log")).unwrap_or_default()
        )
    });
    let file = daemon::read_endpoints(&dir).unwrap();
    assert_eq!(file.load_balancers.len(), 1);
    assert_eq!(file.clock, clock());
    assert!(file.dns.is_some() && file.dns == daemon::read_state(&dir).unwrap().dns);
    let lb = &file.load_balancers[0];
    let found = daemon::endpoint_for(&dir, &lb.dns_name, 80).unwrap();
    assert_eq!((&found.endpoint, found.dns), (lb, file.dns));
    assert_eq!(found.clock, clock());
    assert_eq!(lb.nodes.len(), 2, "one node per zone: {lb:?}");
    let (zones, _, ok) = spray(lb.local_addr, 10).await;
    assert_eq!(ok, 10);
    assert_eq!(zones.len(), 2);

    let task_pids: Vec<u32> = status["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| u32::try_from(t["pid"].as_u64().unwrap()).unwrap())
        .collect();
    assert!(task_pids.iter().all(|p| daemon::alive(*p)));
    let stopping = state.clone();
    tokio::task::spawn_blocking(move || daemon::stop(&stopping, Duration::from_secs(15)))
        .await
        .unwrap()
        .unwrap();
    for pid in task_pids.iter().chain([&state.pid, &state.moto_pid]) {
        assert!(!daemon::alive(*pid), "pid {pid} survived sandbox stop");
    }
    assert!(!daemon::group_alive(state.pid));
    assert!(daemon::read_state(&dir).is_none());
    let _ = std::fs::remove_dir_all(&dir);
}

async fn put_request_policy(st: &Stack, target: f64, scale_in_cooldown: i32) {
    st.aas
        .put_scaling_policy()
        .policy_name("requests")
        .service_namespace(ServiceNamespace::Ecs)
        .resource_id(format!("service/{}/{}", st.cluster, st.service))
        .scalable_dimension(ScalableDimension::EcsServiceDesiredCount)
        .policy_type(PolicyType::TargetTrackingScaling)
        .target_tracking_scaling_policy_configuration(
            TargetTrackingScalingPolicyConfiguration::builder()
                .target_value(target)
                .predefined_metric_specification(
                    PredefinedMetricSpecification::builder()
                        .predefined_metric_type(MetricType::AlbRequestCountPerTarget)
                        .build()
                        .unwrap(),
                )
                .scale_out_cooldown(1)
                .scale_in_cooldown(scale_in_cooldown)
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plane_rolls_deployments_reports_and_scales_in() {
    let Some(app) = sample_app() else {
        eprintln!("SKIPPED: no sample-app binary beside the test executable");
        return;
    };
    let st = stack().await;
    let elb = client!(&st.sdk, st.account, aws_sdk_elasticloadbalancingv2);
    let s3 = aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(&st.sdk)
            .interceptor(st.account.clone())
            .force_path_style(true)
            .build(),
    );
    let cw = client!(&st.sdk, st.account, aws_sdk_cloudwatch);
    s3.create_bucket()
        .bucket("web-logs")
        .create_bucket_configuration(
            aws_sdk_s3::types::CreateBucketConfiguration::builder()
                .location_constraint(aws_sdk_s3::types::BucketLocationConstraint::EuWest1)
                .build(),
        )
        .send()
        .await
        .unwrap();
    // The storage module's policy (crates/storage/src/policy.rs): no plain HTTP, and only
    // eu-west-1's ELB log-delivery account may put objects, under the account's log prefix.
    let policy = serde_json::json!({
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "DenyInsecureTransport",
                "Effect": "Deny",
                "Principal": "*",
                "Action": "s3:*",
                "Resource": ["arn:aws:s3:::web-logs", "arn:aws:s3:::web-logs/*"],
                "Condition": { "Bool": { "aws:SecureTransport": "false" } }
            },
            {
                "Sid": "AllowLoadBalancerLogDelivery",
                "Effect": "Allow",
                "Principal": { "AWS": "arn:aws:iam::156460612806:root" },
                "Action": "s3:PutObject",
                "Resource": format!("arn:aws:s3:::web-logs/alb/AWSLogs/{}/*", st.account.0)
            }
        ]
    });
    s3.put_bucket_policy()
        .bucket("web-logs")
        .policy(policy.to_string())
        .send()
        .await
        .unwrap();
    let lb_arn = elb
        .describe_load_balancers()
        .send()
        .await
        .unwrap()
        .load_balancers()[0]
        .load_balancer_arn()
        .unwrap()
        .to_owned();
    let attr = |k: &str, v: &str| {
        aws_sdk_elasticloadbalancingv2::types::LoadBalancerAttribute::builder()
            .key(k)
            .value(v)
            .build()
    };
    elb.modify_load_balancer_attributes()
        .load_balancer_arn(&lb_arn)
        .attributes(attr("access_logs.s3.enabled", "true"))
        .attributes(attr("access_logs.s3.bucket", "web-logs"))
        .attributes(attr("access_logs.s3.prefix", "alb"))
        .send()
        .await
        .unwrap();

    let plane = DataPlane::start(st.sdk.clone(), options(app, &st))
        .await
        .unwrap();
    let s = plane
        .wait_for(Duration::from_secs(30), |s| {
            s.converged() && !s.services.is_empty() && !s.endpoints.is_empty()
        })
        .await
        .unwrap_or_else(|| panic!("not converged: {:#?}", plane.status()));
    let ep = s.endpoints[0].local_addr;
    let (_, _, ok) = spray(ep, 20).await;
    assert_eq!(ok, 20);

    // Access logs land in the bucket under the AWS key layout, gzip, one line per request.
    let mut lines = 0;
    let mut keys = Vec::new();
    let mut sample = String::new();
    for _ in 0..50 {
        let listed = s3
            .list_objects_v2()
            .bucket("web-logs")
            .prefix("alb/AWSLogs/")
            .send()
            .await
            .unwrap();
        keys = listed
            .contents()
            .iter()
            .filter_map(|o| o.key().map(str::to_owned))
            .collect();
        lines = 0;
        for key in &keys {
            let body = s3
                .get_object()
                .bucket("web-logs")
                .key(key)
                .send()
                .await
                .unwrap()
                .body
                .collect()
                .await
                .unwrap()
                .into_bytes();
            let mut text = String::new();
            std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&body[..]), &mut text)
                .unwrap();
            lines += text.lines().filter(|l| l.contains("\"GET ")).count();
            if let Some(l) = text
                .lines()
                .find(|l| l.contains("\"GET http://") && l.split(' ').nth(8) == Some("200"))
            {
                sample = l.to_owned();
            }
        }
        if lines >= 20 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(lines >= 20, "access log lines {lines} in {keys:?}");
    // The ALB format: type, time, elb, client:port, target:port, three processing times,
    // ELB and target status, bytes received and sent, then the quoted request line.
    let f: Vec<&str> = sample.split(' ').collect();
    assert!(f.len() > 14, "{sample}");
    assert_eq!(f[0], "http", "{sample}");
    assert!(
        f[1].len() == 27 && f[1].ends_with('Z') && f[1].contains('T'),
        "RFC 3339 with microseconds: {sample}"
    );
    assert!(f[2].starts_with("app/web/"), "{sample}");
    assert!(f[3].parse::<SocketAddr>().is_ok(), "{sample}");
    let target: SocketAddr = f[4].parse().unwrap();
    assert_eq!(target.port(), st.port, "{sample}");
    for t in &f[5..8] {
        assert!(t.parse::<f64>().is_ok_and(|v| v >= 0.0), "{sample}");
    }
    assert_eq!((f[8], f[9]), ("200", "200"), "{sample}");
    assert!(f[10].parse::<u64>().is_ok() && f[11].parse::<u64>().is_ok_and(|b| b > 0));
    assert_eq!(f[12], "\"GET", "{sample}");
    assert!(f[13].starts_with("http://web:"), "{sample}");
    assert_eq!(f[14], "HTTP/1.1\"", "{sample}");
    assert!(
        keys.iter()
            .all(|k| k.contains("/elasticloadbalancing/eu-west-1/") && k.ends_with(".log.gz")),
        "{keys:?}"
    );

    // ALB metrics per zone and ECS metrics per service are in CloudWatch.
    let mut names = BTreeSet::new();
    for _ in 0..50 {
        let m = cw
            .list_metrics()
            .namespace("AWS/ApplicationELB")
            .send()
            .await
            .unwrap();
        names = m
            .metrics()
            .iter()
            .filter(|m| {
                m.dimensions()
                    .iter()
                    .any(|d| d.name() == Some("AvailabilityZone"))
            })
            .filter_map(|m| m.metric_name().map(str::to_owned))
            .collect();
        let ecs = cw.list_metrics().namespace("AWS/ECS").send().await.unwrap();
        if names.contains("RequestCount")
            && names.contains("HealthyHostCount")
            && names.contains("TargetResponseTime")
            && !ecs.metrics().is_empty()
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for n in [
        "RequestCount",
        "HTTPCode_Target_2XX_Count",
        "TargetResponseTime",
        "HealthyHostCount",
        "UnHealthyHostCount",
    ] {
        assert!(names.contains(n), "{n} missing from {names:?}");
    }

    // A new revision rolls: never fewer than 2 healthy (min 100 %), never more than 4 (max 200 %).
    let td2 = st
        .ecs
        .register_task_definition()
        .family("web")
        .network_mode(NetworkMode::Awsvpc)
        .requires_compatibilities(Compatibility::Fargate)
        .cpu("256")
        .memory("512")
        .container_definitions(
            ContainerDefinition::builder()
                .name("app")
                .image("x/sample-app:v2")
                .port_mappings(
                    PortMapping::builder()
                        .container_port(i32::from(st.port))
                        .build(),
                )
                .build(),
        )
        .send()
        .await
        .unwrap()
        .task_definition()
        .unwrap()
        .task_definition_arn()
        .unwrap()
        .to_owned();
    let mut rx = plane.watch();
    let watcher = tokio::spawn(async move {
        let (mut min_healthy, mut max_tasks) = (usize::MAX, 0);
        while rx.changed().await.is_ok() {
            let s = rx.borrow_and_update().clone();
            let healthy = s
                .tasks
                .iter()
                .filter(|t| t.health == TaskHealth::Healthy)
                .count();
            min_healthy = min_healthy.min(healthy);
            max_tasks = max_tasks.max(s.tasks.len());
            if s.converged() && s.tasks.iter().all(|t| t.task_definition.ends_with("web:2")) {
                return (min_healthy, max_tasks);
            }
        }
        (min_healthy, max_tasks)
    });
    st.ecs
        .update_service()
        .cluster(&st.cluster)
        .service(&st.service)
        .task_definition(&td2)
        .send()
        .await
        .unwrap();
    let (min_healthy, max_tasks) = tokio::time::timeout(Duration::from_secs(40), watcher)
        .await
        .unwrap_or_else(|_| panic!("rollout did not finish: {:#?}", plane.status()))
        .unwrap();
    assert!(min_healthy >= 2, "healthy dipped to {min_healthy}");
    assert!(max_tasks <= 4, "ran {max_tasks} tasks at once");
    let (_, tasks, ok) = spray(ep, 10).await;
    assert_eq!(ok, 10);
    let now: BTreeSet<String> = plane.status().tasks.iter().map(|t| t.arn.clone()).collect();
    assert!(tasks.is_subset(&now), "an old task answered");

    // Scale in: at 4 with no load, the policy brings it back to min 2 after its cooldown.
    st.ecs
        .update_service()
        .cluster(&st.cluster)
        .service(&st.service)
        .desired_count(4)
        .send()
        .await
        .unwrap();
    plane
        .wait_for(Duration::from_secs(30), |s| {
            s.converged() && s.services.first().is_some_and(|x| x.desired == 4)
        })
        .await
        .unwrap_or_else(|| panic!("did not reach 4: {:#?}", plane.status()));
    put_request_policy(&st, 600.0, 2).await;
    let t0 = std::time::Instant::now();
    let s = plane
        .wait_for(Duration::from_secs(90), |s| {
            s.converged() && s.services.first().is_some_and(|x| x.desired == 2)
        })
        .await
        .unwrap_or_else(|| panic!("did not scale in: {:#?}", plane.status()));
    // Fifteen low one-minute datapoints and CloudWatch's lag first.
    assert!(
        t0.elapsed() >= wall(14.0 * 60.0 + 153.0),
        "scaled in after {:?}",
        t0.elapsed()
    );
    assert!(
        s.scaling_activities.iter().any(|a| a.contains("scale in")),
        "{s:#?}"
    );
    assert_eq!(
        healthy_in(&s, "eu-west-1a"),
        1,
        "balanced after scale-in: {s:#?}"
    );
    assert_eq!(
        healthy_in(&s, "eu-west-1b"),
        1,
        "balanced after scale-in: {s:#?}"
    );

    // Tasks that cannot start fail visibly in ECS, with the reason ECS gives: an image the
    // sandbox cannot run, and a secret that does not exist (the agent reads secrets before
    // the container starts).
    let missing = format!(
        "arn:aws:secretsmanager:{REGION}:{}:secret:web/gone-AbCdEf",
        st.account.0
    );
    // A subnet whose route table has no way out and no ECR endpoints (`nat = "none"` without
    // VPC endpoints): the pull times out.
    let closed = st
        .ec2
        .create_subnet()
        .vpc_id(&st.vpc)
        .cidr_block("10.0.9.0/24")
        .availability_zone("eu-west-1a")
        .send()
        .await
        .unwrap()
        .subnet()
        .unwrap()
        .subnet_id()
        .unwrap()
        .to_owned();
    let closed_table = st
        .ec2
        .create_route_table()
        .vpc_id(&st.vpc)
        .send()
        .await
        .unwrap()
        .route_table()
        .unwrap()
        .route_table_id()
        .unwrap()
        .to_owned();
    st.ec2
        .associate_route_table()
        .route_table_id(&closed_table)
        .subnet_id(&closed)
        .send()
        .await
        .unwrap();
    let open: Vec<String> = st.subnets.values().cloned().collect();
    for (name, container, subnets, reason) in [
        (
            "other",
            ContainerDefinition::builder()
                .name("nginx")
                .image("public.ecr.aws/nginx/nginx:latest")
                .build(),
            open.clone(),
            "CannotPullContainerError",
        ),
        (
            "secretless",
            ContainerDefinition::builder()
                .name("app")
                .image("x/sample-app:latest")
                .secrets(secret("DB_PASSWORD", &missing))
                .build(),
            open.clone(),
            "ResourceInitializationError: unable to pull secrets or registry auth",
        ),
        (
            "no-way-out",
            ContainerDefinition::builder()
                .name("app")
                .image("x/sample-app:latest")
                .build(),
            vec![closed.clone()],
            "cannot reach the registry",
        ),
    ] {
        let td = st
            .ecs
            .register_task_definition()
            .family(name)
            .network_mode(NetworkMode::Awsvpc)
            .requires_compatibilities(Compatibility::Fargate)
            .cpu("256")
            .memory("512")
            .container_definitions(container)
            .send()
            .await
            .unwrap()
            .task_definition()
            .unwrap()
            .task_definition_arn()
            .unwrap()
            .to_owned();
        st.ecs
            .create_service()
            .cluster(&st.cluster)
            .service_name(name)
            .task_definition(&td)
            .desired_count(1)
            .launch_type(LaunchType::Fargate)
            .network_configuration(
                NetworkConfiguration::builder()
                    .awsvpc_configuration(
                        AwsVpcConfiguration::builder()
                            .set_subnets(Some(subnets))
                            .security_groups(&st.sg)
                            .build()
                            .unwrap(),
                    )
                    .build(),
            )
            .send()
            .await
            .unwrap();
        let s = plane
            .wait_for(Duration::from_secs(20), |s| {
                s.services
                    .iter()
                    .any(|x| x.name == name && x.failed_starts >= 1)
            })
            .await
            .unwrap_or_else(|| panic!("no failed start of {name}: {:#?}", plane.status()));
        assert!(s.tasks.iter().all(|t| t.service != name));
        let reasons = stopped_reasons(&st, Some(name)).await;
        assert!(
            reasons.iter().any(|r| r.contains(reason)),
            "{name}: no task stopped with {reason:?}: {reasons:?}"
        );
    }

    let pids: Vec<u32> = plane.status().tasks.iter().map(|t| t.pid).collect();
    plane.stop().await;
    assert!(pids.iter().all(|p| !alive(*p)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plane_scales_out_on_task_cpu() {
    let Some(app) = sample_app() else {
        eprintln!("SKIPPED: no sample-app binary beside the test executable");
        return;
    };
    let st = stack().await;
    st.aas
        .put_scaling_policy()
        .policy_name("cpu")
        .service_namespace(ServiceNamespace::Ecs)
        .resource_id(format!("service/{}/{}", st.cluster, st.service))
        .scalable_dimension(ScalableDimension::EcsServiceDesiredCount)
        .policy_type(PolicyType::TargetTrackingScaling)
        .target_tracking_scaling_policy_configuration(
            TargetTrackingScalingPolicyConfiguration::builder()
                .target_value(20.0)
                .predefined_metric_specification(
                    PredefinedMetricSpecification::builder()
                        .predefined_metric_type(MetricType::EcsServiceAverageCpuUtilization)
                        .build()
                        .unwrap(),
                )
                .scale_out_cooldown(1)
                .scale_in_cooldown(300)
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    let plane = DataPlane::start(st.sdk.clone(), options(app, &st))
        .await
        .unwrap();
    let s = plane
        .wait_for(Duration::from_secs(30), |s| {
            s.converged() && !s.services.is_empty() && !s.endpoints.is_empty()
        })
        .await
        .unwrap_or_else(|| panic!("not converged: {:#?}", plane.status()));
    assert!(
        s.scaling_activities.is_empty(),
        "idle tasks do not scale: {s:#?}"
    );
    let ep = s.endpoints[0].local_addr;
    // 256 CPU units = a quarter vCPU: 40 ms of CPU per 100 ms per task is ~160 %.
    let load = tokio::spawn(async move {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(45);
        let mut sent = 0;
        while tokio::time::Instant::now() < deadline && sent < 1500 {
            let _ = get(ep, "/work?cpu_ms=40").await;
            sent += 1;
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
    });
    let s = plane
        .wait_for(Duration::from_secs(45), |s| {
            s.services.first().is_some_and(|x| x.desired > 2)
        })
        .await
        .unwrap_or_else(|| panic!("no CPU scale-out: {:#?}", plane.status()));
    load.abort();
    assert!(
        s.scaling_activities
            .iter()
            .any(|a| a.contains("ECSServiceAverageCPUUtilization")),
        "{:?}",
        s.scaling_activities
    );
    let pids: Vec<u32> = plane.status().tasks.iter().map(|t| t.pid).collect();
    plane.stop().await;
    assert!(pids.iter().all(|p| !alive(*p)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plane_replaces_a_task_that_fails_its_elb_health_checks() {
    let Some(app) = sample_app() else {
        eprintln!("SKIPPED: no sample-app binary beside the test executable");
        return;
    };
    let st = stack().await;
    let plane = DataPlane::start(st.sdk.clone(), options(app, &st))
        .await
        .unwrap();
    let s = plane
        .wait_for(Duration::from_secs(30), |s| {
            s.converged() && !s.services.is_empty() && !s.endpoints.is_empty()
        })
        .await
        .unwrap_or_else(|| panic!("not converged: {:#?}", plane.status()));
    let alb = s.endpoints[0].local_addr;
    let victim = s.tasks[0].clone();
    let other = s.tasks[1].clone();

    // The victim's /health starts failing (its / still answers): the ALB marks it unhealthy,
    // the service starts a replacement first and stops the victim once that one is healthy
    // (ECS since 2023).
    let mut rx = plane.watch();
    let victim_arn = victim.arn.clone();
    let watcher = tokio::spawn(async move {
        // (most tasks running at once, a healthy replacement seen while the victim ran)
        let (mut most, mut overlap) = (0, false);
        while rx.changed().await.is_ok() {
            let s = rx.borrow_and_update().clone();
            most = most.max(s.tasks.len());
            let victim_runs = s.tasks.iter().any(|t| t.arn == victim_arn);
            overlap |= victim_runs
                && s.tasks
                    .iter()
                    .filter(|t| t.health == TaskHealth::Healthy)
                    .count()
                    >= 2;
            if !victim_runs && s.converged() {
                break;
            }
        }
        (most, overlap)
    });
    assert_eq!(post(victim.addr, "/fail-health").await, Some(200));
    let s = plane
        .wait_for(Duration::from_secs(30), |s| {
            s.converged() && s.tasks.iter().all(|t| t.arn != victim.arn)
        })
        .await
        .unwrap_or_else(|| panic!("not replaced: {:#?}", plane.status()));
    let (most, overlap) = watcher.await.unwrap();
    assert_eq!(most, 3, "the replacement ran beside the victim");
    assert!(
        overlap,
        "the victim was stopped only once its replacement was healthy"
    );
    assert!(
        s.tasks.iter().any(|t| t.arn == other.arn),
        "the healthy task is left alone: {s:#?}"
    );
    let new = s.tasks.iter().find(|t| t.arn != other.arn).unwrap().clone();
    assert_eq!(new.health, TaskHealth::Healthy);

    // ECS records the stop with the reason ECS gives.
    let described = st
        .ecs
        .describe_tasks()
        .cluster(&st.cluster)
        .tasks(&victim.arn)
        .send()
        .await
        .unwrap();
    let task = &described.tasks()[0];
    assert_eq!(task.desired_status(), Some("STOPPED"));
    assert_eq!(
        task.stopped_reason(),
        Some(format!("Task failed ELB health checks in (target-group {})", st.tg).as_str())
    );

    // The target group holds the replacement and the other task, not the victim.
    let want = BTreeSet::from([other.addr.to_string(), new.addr.to_string()]);
    let mut have = BTreeSet::new();
    for _ in 0..50 {
        have = registered_targets(&st, &st.tg).await;
        if have == want {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(have, want);

    // Its process is gone (SIGTERM, then SIGKILL after the grace).
    for _ in 0..100 {
        if !alive(victim.pid) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!alive(victim.pid), "pid {} still runs", victim.pid);

    // The ALB sends to the replacement and the other task, never to the victim.
    let (_, tasks, ok) = spray(alb, 20).await;
    assert_eq!(ok, 20);
    assert_eq!(tasks, BTreeSet::from([other.arn.clone(), new.arn.clone()]));

    // With a grace period the service leaves an unhealthy task alone until it has passed.
    st.ecs
        .update_service()
        .cluster(&st.cluster)
        .service(&st.service)
        .health_check_grace_period_seconds(3600)
        .send()
        .await
        .unwrap();
    let grace = st
        .ecs
        .describe_services()
        .cluster(&st.cluster)
        .services(&st.service)
        .send()
        .await
        .unwrap();
    assert_eq!(
        grace.services()[0].health_check_grace_period_seconds(),
        Some(3600)
    );
    let seen = plane.status().iterations;
    plane
        .wait_for(Duration::from_secs(10), |s| s.iterations >= seen + 2)
        .await
        .unwrap();
    assert_eq!(post(new.addr, "/fail-health").await, Some(200));
    let s = plane
        .wait_for(Duration::from_secs(30), |s| {
            s.tasks
                .iter()
                .any(|t| t.arn == new.arn && t.health == TaskHealth::Unhealthy)
        })
        .await
        .unwrap_or_else(|| panic!("never unhealthy: {:#?}", plane.status()));
    let seen = s.iterations;
    let s = plane
        .wait_for(Duration::from_secs(30), |s| s.iterations >= seen + 5)
        .await
        .unwrap();
    assert!(
        s.tasks
            .iter()
            .any(|t| t.arn == new.arn && t.health == TaskHealth::Unhealthy),
        "stopped within its grace period: {s:#?}"
    );
    plane.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plane_moves_a_task_off_an_address_someone_else_listens_on() {
    let Some(app) = sample_app() else {
        eprintln!("SKIPPED: no sample-app binary beside the test executable");
        return;
    };
    let st = stack().await;
    // Another program (say, another data plane's task) holds the address each zone's first
    // task would take.
    let held: Vec<std::net::TcpListener> = ["127.0.1.10", "127.0.2.10"]
        .iter()
        .map(|ip| std::net::TcpListener::bind((*ip, st.port)).unwrap())
        .collect();
    let plane = DataPlane::start(st.sdk.clone(), options(app, &st))
        .await
        .unwrap();
    let s = plane
        .wait_for(Duration::from_secs(30), |s| {
            s.converged() && !s.services.is_empty() && !s.endpoints.is_empty()
        })
        .await
        .unwrap_or_else(|| panic!("not converged: {:#?}", plane.status()));
    let addrs: BTreeMap<String, String> = s
        .tasks
        .iter()
        .map(|t| (t.zone.clone(), t.addr.to_string()))
        .collect();
    let want = BTreeMap::from([
        ("eu-west-1a".to_owned(), format!("127.0.1.11:{}", st.port)),
        ("eu-west-1b".to_owned(), format!("127.0.2.11:{}", st.port)),
    ]);
    assert_eq!(addrs, want, "the next host of each zone's range");
    // Registered with those addresses, and serving through the ALB.
    assert_eq!(
        registered_targets(&st, &st.tg).await,
        want.values().cloned().collect::<BTreeSet<_>>()
    );
    let (zones, _, ok) = spray(s.endpoints[0].local_addr, 10).await;
    assert_eq!(ok, 10);
    assert_eq!(zones.len(), 2);
    // The other program still owns its addresses.
    for l in &held {
        let addr = l.local_addr().unwrap();
        let _client = std::net::TcpStream::connect(addr).unwrap();
        assert_eq!(l.accept().unwrap().0.local_addr().unwrap(), addr);
    }
    plane.stop().await;
}

/// The statuses each task of the cluster went through, in the order first seen, sampled until
/// `done` holds or `limit` passes; with the time each was first seen.
async fn watch_statuses(
    st: &Stack,
    limit: Duration,
    plane: &DataPlane,
) -> BTreeMap<String, Vec<(String, Duration)>> {
    let t0 = std::time::Instant::now();
    let mut seen: BTreeMap<String, Vec<(String, Duration)>> = BTreeMap::new();
    while t0.elapsed() < limit && !plane.status().converged() {
        let arns = st
            .ecs
            .list_tasks()
            .cluster(&st.cluster)
            .send()
            .await
            .unwrap()
            .task_arns()
            .to_vec();
        if !arns.is_empty() {
            let out = st
                .ecs
                .describe_tasks()
                .cluster(&st.cluster)
                .set_tasks(Some(arns))
                .send()
                .await
                .unwrap();
            for t in out.tasks() {
                let list = seen.entry(t.task_arn().unwrap().to_owned()).or_default();
                let status = t.last_status().unwrap_or_default().to_owned();
                if list.last().is_none_or(|(s, _)| *s != status) {
                    list.push((status, t0.elapsed()));
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(40)).await;
    }
    seen
}

/// The addresses the plane's DNS server answers for `name`, and the TTL.
async fn resolve(plane: &DataPlane, name: &str) -> (BTreeSet<String>, Duration) {
    use loadtest::Resolve as _;
    let r = loadtest::DnsResolver::new(plane.dns().unwrap())
        .resolve_ttl(name, 80)
        .await
        .unwrap();
    (
        r.addrs.iter().map(|a| a.ip().to_string()).collect(),
        r.ttl.unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_launch_on_the_clock_and_nodes_follow_dns_zonal_shifts_and_isolation() {
    let Some(app) = sample_app() else {
        eprintln!("SKIPPED: no sample-app binary beside the test executable");
        return;
    };
    let st = stack().await;
    let elb = client!(&st.sdk, st.account, aws_sdk_elasticloadbalancingv2);
    let arc = client!(&st.sdk, st.account, aws_sdk_arczonalshift);
    let lb = elb
        .describe_load_balancers()
        .send()
        .await
        .unwrap()
        .load_balancers()[0]
        .clone();
    let (lb_arn, name) = (
        lb.load_balancer_arn().unwrap().to_owned(),
        lb.dns_name().unwrap().to_owned(),
    );
    elb.modify_load_balancer_attributes()
        .load_balancer_arn(&lb_arn)
        .attributes(
            aws_sdk_elasticloadbalancingv2::types::LoadBalancerAttribute::builder()
                .key("zonal_shift.config.enabled")
                .value("true")
                .build(),
        )
        .send()
        .await
        .unwrap();
    let mut o = options(app, &st);
    o.launch = "40s".parse().unwrap();
    let plane = DataPlane::start(st.sdk.clone(), o).await.unwrap();

    // Each task is PROVISIONING, then PENDING, then RUNNING in ECS, RUNNING no sooner than the
    // scheduler's 23 s and the 40 s launch (model time) after the plane started.
    let seen = watch_statuses(&st, Duration::from_secs(30), &plane).await;
    assert_eq!(seen.len(), 2, "{seen:?}");
    for (arn, statuses) in &seen {
        let names: Vec<&str> = statuses.iter().map(|(s, _)| s.as_str()).collect();
        assert_eq!(
            names,
            ["PROVISIONING", "PENDING", "RUNNING"],
            "{arn}: {statuses:?}"
        );
        let running = statuses[2].1;
        assert!(
            running >= wall(63.0) - Duration::from_millis(100),
            "{running:?}"
        );
        // The pull (PENDING) is 76 % of the launch.
        let pending = statuses[2].1 - statuses[1].1;
        assert!(
            pending >= wall(0.76 * 40.0) - Duration::from_millis(300),
            "{pending:?}"
        );
    }
    let s = plane
        .wait_for(Duration::from_secs(20), PlaneStatus::converged)
        .await
        .unwrap_or_else(|| panic!("not converged: {:#?}", plane.status()));
    let ep = s.endpoints[0].clone();
    assert_eq!(ep.nodes.len(), 2, "{ep:?}");
    let node = |zone: &str| ep.nodes.iter().find(|n| n.zone == zone).unwrap().addr;
    let (a, b) = (node("eu-west-1a"), node("eu-west-1b"));
    // A node's address tells its zone (127.0.{zone+1}.x), as a task's does.
    let octets = |n: SocketAddr| match n.ip() {
        std::net::IpAddr::V4(ip) => ip.octets(),
        std::net::IpAddr::V6(_) => panic!("{n}"),
    };
    assert_eq!(octets(a)[2], 1);
    assert_eq!(octets(b)[2], 2);
    let (ip_a, ip_b) = (a.ip().to_string(), b.ip().to_string());

    // The DNS answer holds both nodes with the ALB's TTL (60 s) on this clock.
    let (ips, ttl) = resolve(&plane, &name).await;
    assert_eq!(ips, BTreeSet::from([ip_a.clone(), ip_b.clone()]));
    assert_eq!(ttl, Duration::from_secs(3));

    // A zonal shift away from eu-west-1a: its node leaves DNS and its task gets no traffic, also
    // from clients still holding node a's address.
    let zones = st.ec2.describe_availability_zones().send().await.unwrap();
    let id_a = zones
        .availability_zones()
        .iter()
        .find(|z| z.zone_name() == Some("eu-west-1a"))
        .and_then(|z| z.zone_id())
        .unwrap()
        .to_owned();
    let shift = arc
        .start_zonal_shift()
        .resource_identifier(&lb_arn)
        .away_from(&id_a)
        .expires_in("10m")
        .comment("test")
        .send()
        .await
        .unwrap();
    // A second shift of the same resource is refused, as by ARC.
    assert!(
        arc.start_zonal_shift()
            .resource_identifier(&lb_arn)
            .away_from(&id_a)
            .expires_in("10m")
            .comment("again")
            .send()
            .await
            .is_err()
    );
    let mut answer = BTreeSet::new();
    for _ in 0..40 {
        answer = resolve(&plane, &name).await.0;
        if answer.len() == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(answer, BTreeSet::from([ip_b.clone()]));
    let (zones_seen, _, ok) = spray(a, 10).await;
    assert_eq!(ok, 10);
    assert_eq!(zones_seen, BTreeSet::from(["eu-west-1b".to_owned()]));
    arc.cancel_zonal_shift()
        .zonal_shift_id(shift.zonal_shift_id())
        .send()
        .await
        .unwrap();
    for _ in 0..40 {
        answer = resolve(&plane, &name).await.0;
        if answer.len() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(answer.len(), 2, "back after the cancel");

    // Zone b's subnet (where its node and task are) moves to a deny-all network ACL: node b
    // drops connection attempts at once, but stays in DNS until Route 53's checks notice (two
    // to three 30 s checks).
    let deny = st
        .ec2
        .create_network_acl()
        .vpc_id(&st.vpc)
        .send()
        .await
        .unwrap()
        .network_acl()
        .unwrap()
        .network_acl_id()
        .unwrap()
        .to_owned();
    let subnet_b = st.subnets["eu-west-1b"].clone();
    let acls = st.ec2.describe_network_acls().send().await.unwrap();
    let (association, original) = acls
        .network_acls()
        .iter()
        .flat_map(|a| a.associations())
        .find(|x| x.subnet_id() == Some(subnet_b.as_str()))
        .map(|x| {
            (
                x.network_acl_association_id().unwrap().to_owned(),
                x.network_acl_id().unwrap().to_owned(),
            )
        })
        .unwrap();
    st.ec2
        .replace_network_acl_association()
        .association_id(&association)
        .network_acl_id(&deny)
        .send()
        .await
        .unwrap();
    let cut = std::time::Instant::now();
    plane
        .wait_for(Duration::from_secs(5), |s| {
            s.endpoints[0]
                .nodes
                .iter()
                .any(|n| n.zone == "eu-west-1b" && !n.reachable)
        })
        .await
        .unwrap_or_else(|| panic!("node b not cut off: {:#?}", plane.status()));
    let attempt = tokio::time::timeout(
        Duration::from_millis(500),
        tokio::net::TcpStream::connect(b),
    )
    .await;
    assert!(attempt.is_err(), "node b answered a connect: {attempt:?}");
    assert_eq!(
        resolve(&plane, &name).await.0.len(),
        2,
        "still in DNS right away"
    );
    let s = plane
        .wait_for(Duration::from_secs(10), |s| {
            s.endpoints[0]
                .nodes
                .iter()
                .any(|n| n.zone == "eu-west-1b" && !n.in_dns)
        })
        .await
        .unwrap_or_else(|| panic!("node b never left DNS: {:#?}", plane.status()));
    let left = cut.elapsed();
    assert!(
        left >= wall(60.0) - Duration::from_millis(300)
            && left <= wall(90.0) + Duration::from_secs(2),
        "node b left DNS after {left:?}"
    );
    assert!(
        s.endpoints[0]
            .nodes
            .iter()
            .any(|n| n.zone == "eu-west-1a" && n.in_dns)
    );
    assert_eq!(resolve(&plane, &name).await.0, BTreeSet::from([ip_a]));

    // The service, blind to the impairment, replaced zone b's unhealthy task; a task it then
    // places in zone b cannot pull its image there.
    let s = plane
        .wait_for(Duration::from_secs(20), |s| {
            s.converged() && s.tasks.iter().all(|t| t.zone == "eu-west-1a")
        })
        .await
        .unwrap_or_else(|| panic!("zone b's task not replaced: {:#?}", plane.status()));
    st.ecs
        .stop_task()
        .cluster(&st.cluster)
        .task(&s.tasks[0].arn)
        .reason("test")
        .send()
        .await
        .unwrap();
    plane
        .wait_for(Duration::from_secs(20), |s| {
            s.services.first().is_some_and(|x| x.failed_starts >= 1)
        })
        .await
        .unwrap_or_else(|| panic!("no failed pull: {:#?}", plane.status()));
    assert!(
        stopped_reasons(&st, None)
            .await
            .iter()
            .any(|r| r.contains("CannotPullContainerError") && r.contains(&subnet_b)),
        "no pull failure recorded in ECS"
    );
    st.ec2
        .replace_network_acl_association()
        .association_id(
            st.ec2
                .describe_network_acls()
                .send()
                .await
                .unwrap()
                .network_acls()
                .iter()
                .flat_map(|a| a.associations())
                .find(|x| x.subnet_id() == Some(subnet_b.as_str()))
                .and_then(|x| x.network_acl_association_id())
                .unwrap(),
        )
        .network_acl_id(&original)
        .send()
        .await
        .unwrap();
    plane.stop().await;
}
