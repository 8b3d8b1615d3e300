//! The network module against moto: one moto server for this test binary, one moto account per
//! test, so tests run in parallel without seeing each other.

#![allow(clippy::unwrap_used)] // Test helpers outside #[test] functions.

use std::collections::BTreeSet;
use std::time::Duration;

use aws_sdk_ec2::types::{Filter, IpPermission, IpRange, Tag};
use infra::{Action, Config, Context, Module, Plan, StackName};
use sandbox::MotoServer;
use stackproof_network::{Network, NetworkConfig, NetworkOutputs};

mod lb;
mod readme;

const REGION: &str = "eu-west-1";

fn context(stack: &str) -> Context {
    let moto = MotoServer::shared().expect("moto starts (run `cargo xtask setup` first)");
    moto.context(StackName::new(stack).unwrap(), REGION).build()
}

fn network(cx: &Context, toml_text: &str) -> Network {
    let config: NetworkConfig = toml::from_str(toml_text).unwrap();
    Network::new(cx, config.validate(&cx.scope()).unwrap())
}

fn ec2(cx: &Context) -> aws_sdk_ec2::Client {
    infra::client!(cx, aws_sdk_ec2)
}

fn stack_filter(cx: &Context) -> Filter {
    Filter::builder()
        .name("tag:stackproof:stack")
        .values(cx.stack().as_str())
        .build()
}

fn tag<'a>(tags: &'a [Tag], key: &str) -> Option<&'a str> {
    tags.iter()
        .find(|t| t.key() == Some(key))
        .and_then(|t| t.value())
}

fn kinds(plan: &Plan, action: Action) -> Vec<String> {
    plan.changes
        .iter()
        .filter(|c| c.action == action)
        .map(|c| format!("{} {}", c.kind, c.name))
        .collect()
}

/// Counts of every kind of resource the stack has, read with describe calls.
#[derive(Debug, PartialEq, Eq)]
struct Census {
    vpcs: usize,
    subnets: usize,
    igws: usize,
    route_tables: usize,
    eips: usize,
    nats: usize,
    groups: usize,
}

async fn census(cx: &Context) -> Census {
    let ec2 = ec2(cx);
    let f = stack_filter(cx);
    let nats = ec2
        .describe_nat_gateways()
        .filter(f.clone())
        .send()
        .await
        .unwrap();
    Census {
        vpcs: ec2
            .describe_vpcs()
            .filters(f.clone())
            .send()
            .await
            .unwrap()
            .vpcs()
            .len(),
        subnets: ec2
            .describe_subnets()
            .filters(f.clone())
            .send()
            .await
            .unwrap()
            .subnets()
            .len(),
        igws: ec2
            .describe_internet_gateways()
            .filters(f.clone())
            .send()
            .await
            .unwrap()
            .internet_gateways()
            .len(),
        route_tables: ec2
            .describe_route_tables()
            .filters(f.clone())
            .send()
            .await
            .unwrap()
            .route_tables()
            .len(),
        eips: ec2
            .describe_addresses()
            .filters(f.clone())
            .send()
            .await
            .unwrap()
            .addresses()
            .len(),
        nats: nats
            .nat_gateways()
            .iter()
            .filter(|n| n.state().is_some_and(|s| s.as_str() != "deleted"))
            .count(),
        groups: ec2
            .describe_security_groups()
            .filters(f)
            .send()
            .await
            .unwrap()
            .security_groups()
            .len(),
    }
}

const TWO_ZONES: Census = Census {
    vpcs: 1,
    subnets: 4,
    igws: 1,
    route_tables: 3,
    eips: 2,
    nats: 2,
    groups: 2,
};

#[tokio::test]
async fn plan_on_an_empty_account_lists_every_create() {
    let cx = context("plan-empty");
    let plan = network(&cx, "").plan(&cx, &()).await.unwrap();
    let counts = plan.counts();
    assert_eq!((counts.update, counts.delete), (0, 0), "{plan}");
    let creates = kinds(&plan, Action::Create);
    for expected in [
        "vpc vpc",
        "subnet public-a",
        "subnet public-b",
        "subnet private-a",
        "subnet private-b",
        "internet-gateway igw",
        "elastic-ip nat-a",
        "nat-gateway nat-b",
        "security-group load-balancer",
        "security-group tasks",
        "security-group-rule load-balancer",
        "security-group-rule tasks",
        "route-table public",
        "route-table private-a",
        "route-table-association private-b",
        "route public 0.0.0.0/0",
        "route private-b 0.0.0.0/0",
    ] {
        assert!(
            creates.iter().any(|c| c == expected),
            "missing {expected:?} in\n{plan}"
        );
    }
    assert_eq!(creates.len(), 24, "{plan}");
    // A plan reads and never writes.
    assert_eq!(cx.calls().snapshot().writes(), 0);
    assert_eq!(
        census(&cx).await,
        Census {
            vpcs: 0,
            subnets: 0,
            igws: 0,
            route_tables: 0,
            eips: 0,
            nats: 0,
            groups: 0
        }
    );
}

#[tokio::test]
async fn apply_builds_the_network_and_a_second_apply_changes_nothing() {
    let cx = context("apply-twice");
    let net = network(&cx, "");
    let out = net.apply(&cx, &()).await.unwrap();
    let ec2 = ec2(&cx);

    // The VPC, with DNS support and hostnames on.
    let vpcs = ec2
        .describe_vpcs()
        .vpc_ids(&out.vpc_id)
        .send()
        .await
        .unwrap();
    assert_eq!(vpcs.vpcs()[0].cidr_block(), Some("10.0.0.0/16"));
    assert_eq!(tag(vpcs.vpcs()[0].tags(), "Name"), Some("apply-twice-vpc"));
    for attr in [
        aws_sdk_ec2::types::VpcAttributeName::EnableDnsSupport,
        aws_sdk_ec2::types::VpcAttributeName::EnableDnsHostnames,
    ] {
        let a = ec2
            .describe_vpc_attribute()
            .vpc_id(&out.vpc_id)
            .attribute(attr.clone())
            .send()
            .await
            .unwrap();
        let on = a
            .enable_dns_support()
            .or(a.enable_dns_hostnames())
            .and_then(|v| v.value());
        assert_eq!(on, Some(true), "{attr:?}");
    }

    // Subnets: one public and one private per zone, with derived CIDRs.
    let subnets = ec2
        .describe_subnets()
        .filters(stack_filter(&cx))
        .send()
        .await
        .unwrap();
    let mut seen: Vec<(String, String, String)> = subnets
        .subnets()
        .iter()
        .map(|s| {
            (
                tag(s.tags(), "stackproof:name").unwrap().to_owned(),
                s.availability_zone().unwrap().to_owned(),
                s.cidr_block().unwrap().to_owned(),
            )
        })
        .collect();
    seen.sort();
    assert_eq!(
        seen,
        [
            (
                "private-a".into(),
                "eu-west-1a".into(),
                "10.0.128.0/20".into()
            ),
            (
                "private-b".into(),
                "eu-west-1b".into(),
                "10.0.144.0/20".into()
            ),
            ("public-a".into(), "eu-west-1a".into(), "10.0.0.0/20".into()),
            (
                "public-b".into(),
                "eu-west-1b".into(),
                "10.0.16.0/20".into()
            ),
        ]
    );
    assert_eq!(out.zones, ["eu-west-1a", "eu-west-1b"]);

    // Internet gateway attached; NAT gateways in the public subnets.
    let igw = ec2
        .describe_internet_gateways()
        .internet_gateway_ids(&out.internet_gateway_id)
        .send()
        .await
        .unwrap();
    assert_eq!(
        igw.internet_gateways()[0].attachments()[0].vpc_id(),
        Some(out.vpc_id.as_str())
    );
    let nats = ec2
        .describe_nat_gateways()
        .set_nat_gateway_ids(Some(out.nat_gateway_ids.clone()))
        .send()
        .await
        .unwrap();
    let nat_subnets: BTreeSet<&str> = nats
        .nat_gateways()
        .iter()
        .filter_map(|n| n.subnet_id())
        .collect();
    assert_eq!(
        nat_subnets,
        out.public_subnet_ids.iter().map(String::as_str).collect()
    );

    // Routes: public to the IGW; each private subnet to the NAT gateway of its own zone.
    let tables = ec2
        .describe_route_tables()
        .filters(stack_filter(&cx))
        .send()
        .await
        .unwrap();
    for t in tables.route_tables() {
        let name = tag(t.tags(), "stackproof:name").unwrap();
        let default = t
            .routes()
            .iter()
            .find(|r| r.destination_cidr_block() == Some("0.0.0.0/0"))
            .unwrap();
        let subnets: Vec<&str> = t
            .associations()
            .iter()
            .filter_map(|a| a.subnet_id())
            .collect();
        if name == "public" {
            assert_eq!(default.gateway_id(), Some(out.internet_gateway_id.as_str()));
            assert_eq!(subnets.len(), 2);
        } else {
            let nat = nats
                .nat_gateways()
                .iter()
                .find(|n| n.nat_gateway_id() == default.nat_gateway_id())
                .unwrap();
            assert_eq!(subnets.len(), 1, "{name}");
            let sub = ec2
                .describe_subnets()
                .subnet_ids(subnets[0])
                .send()
                .await
                .unwrap();
            let nat_sub = ec2
                .describe_subnets()
                .subnet_ids(nat.subnet_id().unwrap())
                .send()
                .await
                .unwrap();
            assert_eq!(
                sub.subnets()[0].availability_zone(),
                nat_sub.subnets()[0].availability_zone(),
                "{name}"
            );
        }
    }

    // Security groups: the load balancer open on 80/443 to the world; tasks only from it.
    let groups = ec2
        .describe_security_groups()
        .filters(stack_filter(&cx))
        .send()
        .await
        .unwrap();
    let lb = groups
        .security_groups()
        .iter()
        .find(|g| g.group_id() == Some(&out.load_balancer_security_group_id))
        .unwrap();
    let mut lb_ports: Vec<(i32, Vec<&str>, Vec<&str>)> = lb
        .ip_permissions()
        .iter()
        .map(|p| {
            (
                p.from_port().unwrap(),
                p.ip_ranges().iter().filter_map(|r| r.cidr_ip()).collect(),
                p.ipv6_ranges()
                    .iter()
                    .filter_map(|r| r.cidr_ipv6())
                    .collect(),
            )
        })
        .collect();
    lb_ports.sort();
    assert_eq!(
        lb_ports,
        [
            (80, vec!["0.0.0.0/0"], vec!["::/0"]),
            (443, vec!["0.0.0.0/0"], vec!["::/0"])
        ]
    );
    let tasks = groups
        .security_groups()
        .iter()
        .find(|g| g.group_id() == Some(&out.task_security_group_id))
        .unwrap();
    let [rule] = tasks.ip_permissions() else {
        panic!("one rule: {:?}", tasks.ip_permissions())
    };
    assert_eq!((rule.from_port(), rule.to_port()), (Some(8080), Some(8080)));
    assert!(rule.ip_ranges().is_empty());
    assert_eq!(
        rule.user_id_group_pairs()[0].group_id(),
        Some(out.load_balancer_security_group_id.as_str())
    );

    // Again: an empty plan, and an apply that writes nothing and returns the same outputs.
    assert!(net.plan(&cx, &()).await.unwrap().is_empty());
    let before = cx.calls().snapshot();
    let again: NetworkOutputs = net.apply(&cx, &()).await.unwrap();
    assert_eq!(cx.calls().snapshot().since(&before).writes(), 0);
    assert_eq!(again, out);
    assert_eq!(census(&cx).await, TWO_ZONES);
}

async fn subnets_all(ec2: &aws_sdk_ec2::Client, cx: &Context) -> Vec<aws_sdk_ec2::types::Subnet> {
    ec2.describe_subnets()
        .filters(stack_filter(cx))
        .send()
        .await
        .unwrap()
        .subnets()
        .to_vec()
}

fn subnets_zone(all: &[aws_sdk_ec2::types::Subnet], id: &str) -> Option<String> {
    all.iter()
        .find(|s| s.subnet_id() == Some(id))
        .and_then(|s| s.availability_zone().map(str::to_owned))
}

#[tokio::test]
async fn drift_shows_in_plan_and_apply_repairs_it() {
    let cx = context("drift");
    let net = network(&cx, "");
    let out = net.apply(&cx, &()).await.unwrap();
    let ec2 = ec2(&cx);

    // Behind our back: a route deleted, a tag removed, a rule added, DNS hostnames turned off.
    let tables = ec2
        .describe_route_tables()
        .filters(stack_filter(&cx))
        .send()
        .await
        .unwrap();
    let public = tables
        .route_tables()
        .iter()
        .find(|t| tag(t.tags(), "stackproof:name") == Some("public"))
        .unwrap();
    ec2.delete_route()
        .route_table_id(public.route_table_id().unwrap())
        .destination_cidr_block("0.0.0.0/0")
        .send()
        .await
        .unwrap();
    ec2.delete_tags()
        .resources(&out.private_subnet_ids[0])
        .tags(Tag::builder().key("Name").build())
        .send()
        .await
        .unwrap();
    let ssh = IpPermission::builder()
        .ip_protocol("tcp")
        .from_port(22)
        .to_port(22)
        .ip_ranges(IpRange::builder().cidr_ip("0.0.0.0/0").build())
        .build();
    ec2.authorize_security_group_ingress()
        .group_id(&out.task_security_group_id)
        .ip_permissions(ssh)
        .send()
        .await
        .unwrap();
    ec2.modify_vpc_attribute()
        .vpc_id(&out.vpc_id)
        .enable_dns_hostnames(
            aws_sdk_ec2::types::AttributeBooleanValue::builder()
                .value(false)
                .build(),
        )
        .send()
        .await
        .unwrap();

    let plan = net.plan(&cx, &()).await.unwrap();
    let text = plan.to_string();
    assert_eq!(
        kinds(&plan, Action::Create),
        ["route public 0.0.0.0/0"],
        "{text}"
    );
    assert_eq!(
        kinds(&plan, Action::Delete),
        ["security-group-rule tasks"],
        "{text}"
    );
    assert_eq!(
        kinds(&plan, Action::Update),
        ["vpc vpc", "subnet private-a"],
        "{text}"
    );
    assert!(text.contains("ingress tcp 22 from 0.0.0.0/0"), "{text}");
    assert!(text.contains("tag Name = \"drift-private-a\""), "{text}");
    assert!(
        text.contains("enable-dns-hostnames false -> true"),
        "{text}"
    );

    net.apply(&cx, &()).await.unwrap();
    let plan = net.plan(&cx, &()).await.unwrap();
    assert!(plan.is_empty(), "{plan}");
    let tasks = ec2
        .describe_security_groups()
        .group_ids(&out.task_security_group_id)
        .send()
        .await
        .unwrap();
    assert_eq!(tasks.security_groups()[0].ip_permissions().len(), 1);
    assert_eq!(census(&cx).await, TWO_ZONES);
}

/// Runs `apply` and drops it once `calls` AWS calls have started, like a crash or Ctrl-C.
async fn interrupted_apply(cx: &Context, net: &Network, calls: u64) -> bool {
    let start = cx.calls().snapshot().total();
    let apply = net.apply(cx, &());
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
async fn an_interrupted_apply_converges_on_the_next_run_without_duplicates() {
    for stop_after in [1, 3, 6, 10, 14, 18, 22, 27, 32, 38] {
        let cx = context(&format!("crash-{stop_after}"));
        let net = network(&cx, "");
        let finished = interrupted_apply(&cx, &net, stop_after).await;
        // A request already sent when the run was dropped still completes in moto, as one
        // in flight when a process dies does on AWS; the next run starts after it landed
        // (otherwise it can observe before a create it then duplicates: seen once, a fourth
        // route table after a stop at 32 calls).
        tokio::time::sleep(Duration::from_millis(500)).await;
        let out = net.apply(&cx, &()).await.unwrap();
        assert_eq!(
            census(&cx).await,
            TWO_ZONES,
            "interrupted after {stop_after} calls (finished: {finished})"
        );
        let plan = net.plan(&cx, &()).await.unwrap();
        assert!(plan.is_empty(), "after {stop_after}: {plan}");
        assert_eq!(out.nat_gateway_ids.len(), 2);
    }
}

/// Holds every writer at its first `CreateVpc` until all `parties` have come (or 20 s passed):
/// each has observed the stack by then, so each creates what it found missing.
#[derive(Debug, Clone)]
struct Rendezvous {
    parties: usize,
    arrived: std::sync::Arc<(std::sync::Mutex<usize>, std::sync::Condvar)>,
}

impl aws_smithy_runtime_api::client::interceptors::Intercept for Rendezvous {
    fn name(&self) -> &'static str {
        "rendezvous"
    }

    fn read_before_serialization(
        &self,
        _: &aws_smithy_runtime_api::client::interceptors::context::BeforeSerializationInterceptorContextRef<'_>,
        _: &aws_smithy_runtime_api::client::runtime_components::RuntimeComponents,
        cfg: &mut aws_smithy_types::config_bag::ConfigBag,
    ) -> Result<(), aws_smithy_runtime_api::box_error::BoxError> {
        let op = cfg.load::<aws_smithy_runtime_api::client::orchestrator::Metadata>();
        if op.is_some_and(|m| m.name() == "CreateVpc") {
            let (count, all) = &*self.arrived;
            let mut n = count.lock().unwrap();
            *n += 1;
            all.notify_all();
            let _held = all
                .wait_timeout_while(n, Duration::from_secs(20), |n| *n < self.parties)
                .unwrap();
        }
        Ok(())
    }
}

/// Two writers of one stack at once (as after a `--force-unlock` on a run still going): both
/// observe before either creates, so the stack ends up with two of everything. One more apply
/// keeps one of each, the same one from either writer, and deletes the rest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_interleaved_writers_leave_duplicates_that_the_next_apply_deletes() {
    // Two contexts (two runs) in one moto account.
    let moto = MotoServer::shared().unwrap();
    let account = moto.fresh_account();
    let meet = Rendezvous {
        parties: 2,
        arrived: Default::default(),
    };
    let writer = || {
        let stack = StackName::new("writers").unwrap();
        Context::builder(sandbox::sdk_config(moto.endpoint(), REGION), stack)
            .interceptor(account.clone())
            .interceptor(meet.clone())
            .waits(sandbox::TEST_WAITS)
            .build()
    };
    let (a, b) = (writer(), writer());
    let (net_a, net_b) = (network(&a, ""), network(&b, ""));
    // Each on its own task (and thread): the rendezvous blocks the thread that waits.
    let run = |cx: &Context| {
        let cx = cx.clone();
        tokio::spawn(async move { network(&cx, "").apply(&cx, &()).await.map(|_| ()) })
    };
    let (ha, hb) = (run(&a), run(&b));
    let (ra, rb) = (ha.await.unwrap(), hb.await.unwrap());
    // Each built a whole network in its own VPC; what matters is what the next run makes of it.
    let twice = census(&a).await;
    assert_eq!(
        twice.vpcs, 2,
        "both writers created a VPC: {twice:?} ({:?} / {:?})",
        ra, rb
    );

    // Both writers, looking now, plan to delete the same extras, each saying which one is kept.
    let (plan_a, plan_b) = (
        net_a.plan(&a, &()).await.unwrap(),
        net_b.plan(&b, &()).await.unwrap(),
    );
    let deletes = |p: &Plan| -> Vec<String> {
        p.changes
            .iter()
            .filter(|c| c.action == Action::Delete)
            .map(|c| format!("{} {} {}", c.kind, c.name, c.id.clone().unwrap_or_default()))
            .collect()
    };
    assert_eq!(deletes(&plan_a), deletes(&plan_b));
    assert!(!deletes(&plan_a).is_empty(), "{plan_a}");
    for c in plan_a.changes.iter().filter(|c| c.action == Action::Delete) {
        assert!(
            c.details.iter().any(|d| d.contains(" is kept")),
            "a delete of a duplicate says which one is kept: {c:?}"
        );
    }

    let out = net_a.apply(&a, &()).await.unwrap();
    assert_eq!(census(&a).await, TWO_ZONES);
    let plan = net_b.plan(&b, &()).await.unwrap();
    assert!(plan.is_empty(), "{plan}");
    assert_eq!(out.nat_gateway_ids.len(), 2);
    // The outputs name what is left.
    let ec2 = ec2(&a);
    let vpcs = ec2
        .describe_vpcs()
        .filters(stack_filter(&a))
        .send()
        .await
        .unwrap();
    assert_eq!(vpcs.vpcs()[0].vpc_id(), Some(out.vpc_id.as_str()));
}

#[tokio::test]
async fn destroy_leaves_nothing_tagged_with_the_stack() {
    let cx = context("destroy");
    let net = network(&cx, "");
    net.apply(&cx, &()).await.unwrap();
    // An isolated zone must not block destroy.
    net.isolate_zone(&cx, "eu-west-1b").await.unwrap();

    let preview = net.plan_destroy(&cx).await.unwrap();
    assert_eq!(preview.counts().create + preview.counts().update, 0);
    // 2 NATs, 2 EIPs, IGW, 4 subnets, 3 route tables, 2 groups, the isolation ACL, the VPC.
    assert_eq!(preview.counts().delete, 16, "{preview}");
    assert_eq!(census(&cx).await, TWO_ZONES, "plan_destroy must not delete");

    let removed = net.destroy(&cx).await.unwrap();
    assert_eq!(removed, preview);
    assert_eq!(
        census(&cx).await,
        Census {
            vpcs: 0,
            subnets: 0,
            igws: 0,
            route_tables: 0,
            eips: 0,
            nats: 0,
            groups: 0
        }
    );
    let acls = ec2(&cx)
        .describe_network_acls()
        .filters(stack_filter(&cx))
        .send()
        .await
        .unwrap();
    assert!(acls.network_acls().is_empty());
    // Nothing left to do.
    assert!(net.plan_destroy(&cx).await.unwrap().is_empty());
    assert!(net.destroy(&cx).await.unwrap().is_empty());
}

#[tokio::test]
async fn isolating_a_zone_moves_exactly_its_subnets_and_restore_heals_it() {
    let cx = context("isolate");
    let net = network(&cx, "az-count = 3");
    let out = net.apply(&cx, &()).await.unwrap();
    let ec2 = ec2(&cx);
    let acl_of = |acls: &[aws_sdk_ec2::types::NetworkAcl], subnet: &str| {
        acls.iter()
            .find(|a| {
                a.associations()
                    .iter()
                    .any(|x| x.subnet_id() == Some(subnet))
            })
            .map(|a| {
                (
                    a.network_acl_id().unwrap().to_owned(),
                    a.is_default() == Some(true),
                )
            })
            .unwrap()
    };
    let vpc_filter = Filter::builder().name("vpc-id").values(&out.vpc_id).build();
    let before = ec2
        .describe_network_acls()
        .filters(vpc_filter.clone())
        .send()
        .await
        .unwrap()
        .network_acls()
        .to_vec();

    let moved = net.isolate_zone(&cx, "eu-west-1b").await.unwrap();
    assert_eq!(moved.len(), 2);
    let acls = ec2
        .describe_network_acls()
        .filters(vpc_filter.clone())
        .send()
        .await
        .unwrap()
        .network_acls()
        .to_vec();
    let all: Vec<&String> = out
        .public_subnet_ids
        .iter()
        .chain(&out.private_subnet_ids)
        .collect();
    for subnet in &all {
        let zone = subnets_zone(&subnets_all(&ec2, &cx).await, subnet).unwrap();
        let (acl, is_default) = acl_of(&acls, subnet);
        if zone == "eu-west-1b" {
            assert!(!is_default, "{subnet} in {zone} is isolated");
            let isolation = acls
                .iter()
                .find(|a| a.network_acl_id() == Some(acl.as_str()))
                .unwrap();
            // Only the implicit deny-all entries.
            assert!(
                isolation
                    .entries()
                    .iter()
                    .all(|e| e.rule_action().map(|a| a.as_str()) == Some("deny")),
                "{isolation:?}"
            );
        } else {
            assert_eq!(
                acl_of(&before, subnet),
                (acl, is_default),
                "{subnet} in {zone} untouched"
            );
        }
    }
    let state = net.zone_isolation(&cx).await.unwrap();
    let isolated: Vec<(&str, usize)> = state
        .iter()
        .map(|z| (z.zone.as_str(), z.isolated_subnet_ids.len()))
        .collect();
    assert_eq!(
        isolated,
        [("eu-west-1a", 0), ("eu-west-1b", 2), ("eu-west-1c", 0)]
    );
    // Isolating again changes nothing; the network plan does not fight the fault.
    assert!(
        net.isolate_zone(&cx, "eu-west-1b")
            .await
            .unwrap()
            .is_empty()
    );
    assert!(net.plan(&cx, &()).await.unwrap().is_empty());

    let restored = net.restore_zone(&cx, "eu-west-1b").await.unwrap();
    assert_eq!(restored.len(), 2);
    let after = ec2
        .describe_network_acls()
        .filters(vpc_filter)
        .send()
        .await
        .unwrap()
        .network_acls()
        .to_vec();
    for subnet in &all {
        assert_eq!(
            acl_of(&after, subnet),
            acl_of(&before, subnet),
            "{subnet} restored"
        );
    }
    assert_eq!(after.len(), before.len(), "the deny-all ACL is gone");
    assert!(
        net.restore_zone(&cx, "eu-west-1b")
            .await
            .unwrap()
            .is_empty()
    );

    let err = net
        .isolate_zone(&cx, "eu-west-1z")
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("\"eu-west-1z\" has no subnet of stack isolate"),
        "{err}"
    );
}

#[tokio::test]
async fn three_zones_with_a_single_nat_gateway() {
    let cx = context("three-single");
    let net = network(&cx, "az-count = 3\nnat = \"single\"");
    let out = net.apply(&cx, &()).await.unwrap();
    assert_eq!(out.zones.len(), 3);
    assert_eq!(out.private_subnet_ids.len(), 3);
    assert_eq!(out.nat_gateway_ids.len(), 1);
    let tables = ec2(&cx)
        .describe_route_tables()
        .filters(stack_filter(&cx))
        .send()
        .await
        .unwrap();
    let private_targets: BTreeSet<&str> = tables
        .route_tables()
        .iter()
        .filter(|t| tag(t.tags(), "stackproof:name").is_some_and(|n| n.starts_with("private-")))
        .flat_map(|t| t.routes())
        .filter_map(|r| r.nat_gateway_id())
        .collect();
    assert_eq!(
        private_targets,
        BTreeSet::from([out.nat_gateway_ids[0].as_str()])
    );
    assert_eq!(
        census(&cx).await,
        Census {
            vpcs: 1,
            subnets: 6,
            igws: 1,
            route_tables: 4,
            eips: 1,
            nats: 1,
            groups: 2
        }
    );

    // Back to one NAT gateway per zone: two more, and the routes follow.
    let per_az = network(&cx, "az-count = 3");
    let plan = per_az.plan(&cx, &()).await.unwrap();
    assert_eq!(
        kinds(&plan, Action::Create),
        [
            "elastic-ip nat-b",
            "nat-gateway nat-b",
            "elastic-ip nat-c",
            "nat-gateway nat-c"
        ],
        "{plan}"
    );
    assert_eq!(
        kinds(&plan, Action::Update),
        ["route private-b 0.0.0.0/0", "route private-c 0.0.0.0/0"],
        "{plan}"
    );
    per_az.apply(&cx, &()).await.unwrap();
    assert!(per_az.plan(&cx, &()).await.unwrap().is_empty());
    assert_eq!(census(&cx).await.nats, 3);

    // And to none: NAT gateways and their addresses go, private routes are removed.
    let none = network(&cx, "az-count = 3\nnat = \"none\"");
    none.apply(&cx, &()).await.unwrap();
    assert!(none.plan(&cx, &()).await.unwrap().is_empty());
    let c = census(&cx).await;
    assert_eq!((c.nats, c.eips, c.subnets), (0, 0, 6));
}

#[tokio::test]
async fn zones_the_region_lacks_fail_before_any_write() {
    let cx = context("zones");
    let config: NetworkConfig =
        toml::from_str("availability-zones = [\"eu-west-1a\", \"eu-west-1q\"]").unwrap();
    let net = Network::new(&cx, config.validate(&cx.scope()).unwrap());
    let err = net.apply(&cx, &()).await.unwrap_err().to_string();
    assert!(
        err.starts_with("network.availability-zones: the region eu-west-1 offers"),
        "{err}"
    );
    assert!(err.contains("eu-west-1q"), "{err}");
    assert_eq!(cx.calls().snapshot().writes(), 0);
}

#[tokio::test]
async fn a_changed_vpc_cidr_is_refused_not_half_applied() {
    let cx = context("replace");
    network(&cx, "").apply(&cx, &()).await.unwrap();
    let before = cx.calls().snapshot();
    let err = network(&cx, "vpc-cidr = \"10.1.0.0/16\"")
        .apply(&cx, &())
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("has cidr 10.0.0.0/16 but the configuration says 10.1.0.0/16"),
        "{err}"
    );
    assert_eq!(cx.calls().snapshot().since(&before).writes(), 0);
}

/// The finished changes as "kind name", and "ready" where a staged apply handed over.
#[derive(Debug, Default)]
struct Finished(std::sync::Mutex<Vec<String>>);

impl infra::Progress for Finished {
    fn on(&self, event: &infra::Event<'_>) {
        if let infra::Event::Finished { change, .. } = event {
            self.0
                .lock()
                .unwrap()
                .push(format!("{} {}", change.kind, change.name));
        }
    }
}

#[tokio::test]
async fn a_staged_apply_hands_over_its_outputs_before_the_nat_wait_and_the_routes() {
    let log = std::sync::Arc::new(Finished::default());
    let moto = MotoServer::shared().expect("moto starts (run `cargo xtask setup` first)");
    let cx = moto
        .context(StackName::new("staged").unwrap(), REGION)
        .progress(log.clone())
        .build();
    let net = network(&cx, "");
    let mut early = None;
    let out = net
        .apply_staged(&cx, |outputs| {
            log.0.lock().unwrap().push("ready".to_owned());
            early = Some(outputs);
        })
        .await
        .unwrap();
    // The same outputs as the finished apply, NAT gateway ids included.
    assert_eq!(early.as_ref(), Some(&out));
    assert_eq!(out.nat_gateway_ids.len(), 2);

    let events = log.0.lock().unwrap().clone();
    let ready = events.iter().position(|e| e == "ready").unwrap();
    let kind_of = |e: &String| e.split(' ').next().unwrap_or_default().to_owned();
    // Everything a load balancer or a service attaches to came before the hand-over...
    for kind in [
        "vpc",
        "subnet",
        "internet-gateway",
        "security-group",
        "nat-gateway",
    ] {
        let last = events.iter().rposition(|e| kind_of(e) == kind).unwrap();
        assert!(last < ready, "{kind} after the hand-over: {events:#?}");
    }
    // ... and the default routes (the public one, and the private ones that waited for the
    // NAT gateways) after it.
    let routes: Vec<usize> = (0..events.len())
        .filter(|&i| kind_of(&events[i]) == "route")
        .collect();
    assert_eq!(routes.len(), 3, "{events:#?}");
    assert!(routes.iter().all(|&i| i > ready), "{events:#?}");
}

/// Two stacks in one account: each sees only its own NAT gateways (moto's DescribeNatGateways
/// ignores tag filters, so the module checks the stack tag itself), and destroying one leaves
/// the other whole.
#[tokio::test]
async fn a_stack_never_takes_another_stack_s_nat_gateways_for_its_own() {
    let moto = MotoServer::shared().expect("moto starts (run `cargo xtask setup` first)");
    let account = moto.fresh_account();
    let in_account = |stack: &str| {
        Context::builder(
            sandbox::sdk_config(moto.endpoint(), REGION),
            StackName::new(stack).unwrap(),
        )
        .interceptor(account.clone())
        .waits(sandbox::TEST_WAITS)
        .build()
    };
    let cx_a = in_account("nat-owner-a");
    let cx_b = in_account("nat-owner-b");
    let (net_a, net_b) = (network(&cx_a, ""), network(&cx_b, ""));
    net_a.apply(&cx_a, &()).await.unwrap();
    // B's plan creates its own gateways, not "updates" A's.
    let plan_b = net_b.plan(&cx_b, &()).await.unwrap();
    assert!(
        plan_b
            .changes
            .iter()
            .filter(|c| c.kind == "nat-gateway")
            .all(|c| c.action == infra::Action::Create),
        "{plan_b}"
    );
    net_b.apply(&cx_b, &()).await.unwrap();
    net_b.destroy(&cx_b).await.unwrap();
    assert!(net_a.plan(&cx_a, &()).await.unwrap().is_empty());
    assert_eq!(census(&cx_a).await, TWO_ZONES);
    net_a.destroy(&cx_a).await.unwrap();
}

/// The endpoints of the stack that are not deleted, by their name tag: (type, service,
/// route tables, subnets, groups, private DNS).
async fn endpoints(
    cx: &Context,
) -> std::collections::BTreeMap<String, (String, String, usize, usize, usize, bool)> {
    let out = ec2(cx)
        .describe_vpc_endpoints()
        .filters(stack_filter(cx))
        .send()
        .await
        .unwrap();
    out.vpc_endpoints()
        .iter()
        .filter(|e| e.state().is_some_and(|s| s.as_str() != "deleted"))
        .map(|e| {
            (
                tag(e.tags(), "stackproof:name").unwrap().to_owned(),
                (
                    e.vpc_endpoint_type().unwrap().as_str().to_owned(),
                    e.service_name().unwrap().to_owned(),
                    e.route_table_ids().len(),
                    e.subnet_ids().len(),
                    e.groups().len(),
                    e.private_dns_enabled().unwrap_or(false),
                ),
            )
        })
        .collect()
}

/// Without NAT gateways the tasks reach ECR, S3 and CloudWatch Logs through VPC endpoints: an
/// S3 gateway endpoint on the private route tables, interface endpoints with private DNS in
/// the private subnets behind a group open on 443 to the VPC only. A second apply changes
/// nothing; a NAT mode with no endpoints deletes them and their group; destroy leaves none.
#[tokio::test]
async fn without_nat_gateways_the_private_subnets_reach_aws_through_vpc_endpoints() {
    let cx = context("endpoints");
    let net = network(&cx, "nat = \"none\"");
    let plan = Box::pin(net.plan(&cx, &())).await.unwrap();
    let created = kinds(&plan, Action::Create);
    for e in ["ecr.api", "ecr.dkr", "s3", "logs"] {
        assert!(
            created.contains(&format!("vpc-endpoint endpoint-{e}")),
            "{plan}"
        );
    }
    assert!(
        created.contains(&"security-group endpoints".to_owned()),
        "{plan}"
    );
    assert!(
        plan.to_string()
            .contains("gateway com.amazonaws.eu-west-1.s3 on route tables private-a, private-b"),
        "{plan}"
    );
    Box::pin(net.apply(&cx, &())).await.unwrap();
    let made = endpoints(&cx).await;
    assert_eq!(made.len(), 4, "{made:?}");
    // (Private DNS is an interface endpoint's setting; moto reports it on for a gateway one.)
    let s3 = &made["endpoint-s3"];
    assert_eq!(
        (&*s3.0, &*s3.1, s3.2, s3.3, s3.4),
        ("Gateway", "com.amazonaws.eu-west-1.s3", 2, 0, 0)
    );
    for e in ["ecr.api", "ecr.dkr", "logs"] {
        assert_eq!(
            made[&format!("endpoint-{e}")],
            (
                "Interface".into(),
                format!("com.amazonaws.eu-west-1.{e}"),
                0,
                2,
                1,
                true
            ),
            "{e}"
        );
    }
    // The endpoints' group: HTTPS from the VPC, nothing else.
    let groups = ec2(&cx)
        .describe_security_groups()
        .filters(stack_filter(&cx))
        .send()
        .await
        .unwrap();
    let group = groups
        .security_groups()
        .iter()
        .find(|g| tag(g.tags(), "stackproof:name") == Some("endpoints"))
        .unwrap();
    let rules: Vec<(Option<i32>, Vec<&str>)> = group
        .ip_permissions()
        .iter()
        .map(|p| {
            (
                p.from_port(),
                p.ip_ranges().iter().filter_map(|r| r.cidr_ip()).collect(),
            )
        })
        .collect();
    assert_eq!(rules, [(Some(443), vec!["10.0.0.0/16"])]);
    let again = Box::pin(net.plan(&cx, &())).await.unwrap();
    assert!(again.is_empty(), "{again}");

    // NAT gateways instead: the endpoints and their group go.
    let with_nat = network(&cx, "nat = \"single\"");
    let plan = Box::pin(with_nat.plan(&cx, &())).await.unwrap();
    let deleted = kinds(&plan, Action::Delete);
    assert!(
        deleted.contains(&"vpc-endpoint endpoint-logs".to_owned()),
        "{plan}"
    );
    assert!(
        deleted.contains(&"security-group endpoints".to_owned()),
        "{plan}"
    );
    Box::pin(with_nat.apply(&cx, &())).await.unwrap();
    assert!(endpoints(&cx).await.is_empty());
    assert!(Box::pin(with_nat.plan(&cx, &())).await.unwrap().is_empty());

    // Chosen by hand, with a NAT: only what is named; destroy takes them first.
    let chosen = network(
        &cx,
        "nat = \"single\"\nvpc-endpoints = [\"secretsmanager\", \"s3\"]",
    );
    Box::pin(chosen.apply(&cx, &())).await.unwrap();
    assert_eq!(
        endpoints(&cx).await.keys().cloned().collect::<Vec<_>>(),
        ["endpoint-s3", "endpoint-secretsmanager"]
    );
    Box::pin(chosen.destroy(&cx)).await.unwrap();
    assert!(endpoints(&cx).await.is_empty());
    assert!(Box::pin(chosen.plan_destroy(&cx)).await.unwrap().is_empty());
}
