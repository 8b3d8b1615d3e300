//! The data module against moto: a VPC with two private subnets and the tasks' security group
//! made with raw EC2 calls, then the database and the cache planned, applied, changed and
//! destroyed.

#![allow(clippy::unwrap_used)] // Test helpers outside #[test] functions.

use infra::{Action, Config as _, Context, Module as _, StackName};
use sandbox::MotoServer;
use stackproof_data::{Cache, CacheConfig, Data, DataInputs, DatabaseConfig, Deployment};

const REGION: &str = "eu-west-1";

fn context(stack: &str) -> Context {
    let moto = MotoServer::shared().expect("moto starts (run `cargo xtask setup` first)");
    moto.context(StackName::new(stack).unwrap(), REGION).build()
}

fn data(cx: &Context, toml_text: &str) -> Data {
    let config: DatabaseConfig = toml::from_str(toml_text).unwrap();
    Data::new(cx, config.validate(&cx.scope()).unwrap())
}

/// A VPC, two subnets in two zones and the tasks' security group.
async fn network(cx: &Context) -> DataInputs {
    network_in(cx, 2).await
}

/// A VPC, a subnet in each of `zones` zones (2 or 3) and the tasks' security group.
async fn network_in(cx: &Context, zones: usize) -> DataInputs {
    let ec2: aws_sdk_ec2::Client = infra::client!(cx, aws_sdk_ec2);
    let vpc = ec2
        .create_vpc()
        .cidr_block("10.0.0.0/16")
        .send()
        .await
        .unwrap();
    let vpc_id = vpc.vpc().unwrap().vpc_id().unwrap().to_owned();
    let mut subnet_ids = Vec::new();
    for (zone, cidr) in [
        ("eu-west-1a", "10.0.128.0/20"),
        ("eu-west-1b", "10.0.144.0/20"),
        ("eu-west-1c", "10.0.160.0/20"),
    ]
    .into_iter()
    .take(zones)
    {
        let s = ec2
            .create_subnet()
            .vpc_id(&vpc_id)
            .availability_zone(zone)
            .cidr_block(cidr)
            .send()
            .await
            .unwrap();
        subnet_ids.push(s.subnet().unwrap().subnet_id().unwrap().to_owned());
    }
    let sg = ec2
        .create_security_group()
        .group_name("tasks")
        .description("tasks")
        .vpc_id(&vpc_id)
        .send()
        .await
        .unwrap();
    DataInputs {
        vpc_id,
        subnet_ids,
        client_security_group_id: sg.group_id().unwrap().to_owned(),
    }
}

#[tokio::test]
async fn a_private_encrypted_multi_az_database_is_made_changed_and_destroyed_with_a_snapshot() {
    let cx = context("shop");
    let inputs = network(&cx).await;
    let db = data(&cx, "");
    let rds: aws_sdk_rds::Client = infra::client!(&cx, aws_sdk_rds);
    let ec2: aws_sdk_ec2::Client = infra::client!(&cx, aws_sdk_ec2);

    let plan = db.plan(&cx, &inputs).await.unwrap();
    let kinds: Vec<(Action, &str)> = plan
        .changes
        .iter()
        .map(|c| (c.action, c.kind.as_str()))
        .collect();
    assert_eq!(
        kinds,
        [
            (Action::Create, "security-group"),
            (Action::Update, "security-group"),
            (Action::Create, "db-subnet-group"),
            (Action::Create, "db-instance"),
        ],
        "{plan}"
    );
    assert!(plan.to_string().contains("multi-az true"), "{plan}");

    let out = db.apply(&cx, &inputs).await.unwrap();
    assert_eq!(out.instance_id, "shop-db");
    assert_eq!(out.port, 5432);
    assert!(!out.endpoint.is_empty());
    assert!(out.multi_az);
    // The password is RDS's, in Secrets Manager: the module only knows the secret.
    assert!(
        out.master_secret_arn
            .as_deref()
            .is_some_and(|a| a.starts_with("arn:aws:secretsmanager:")),
        "{out:?}"
    );
    let described = rds
        .describe_db_instances()
        .db_instance_identifier("shop-db")
        .send()
        .await
        .unwrap();
    let i = &described.db_instances()[0];
    assert_eq!(i.engine(), Some("postgres"));
    assert_eq!(i.multi_az(), Some(true));
    assert_eq!(i.storage_encrypted(), Some(true));
    assert_eq!(i.publicly_accessible(), Some(false));
    assert_eq!(i.deletion_protection(), Some(true));
    assert_eq!(i.backup_retention_period(), Some(7));
    assert_eq!(
        i.db_subnet_group().and_then(|g| g.db_subnet_group_name()),
        Some("shop-db")
    );
    assert_eq!(
        i.vpc_security_groups()[0].vpc_security_group_id(),
        Some(out.security_group_id.as_str())
    );
    // Only the tasks' group reaches it, on 5432.
    let sg = ec2
        .describe_security_groups()
        .group_ids(&out.security_group_id)
        .send()
        .await
        .unwrap();
    let rules = sg.security_groups()[0].ip_permissions();
    assert_eq!(rules.len(), 1);
    assert_eq!(rules[0].from_port(), Some(5432));
    let from: Vec<&str> = rules[0]
        .user_id_group_pairs()
        .iter()
        .filter_map(|p| p.group_id())
        .collect();
    assert_eq!(from, [inputs.client_security_group_id.as_str()]);
    assert!(rules[0].ip_ranges().is_empty());

    // Converged: nothing to do.
    let again = db.plan(&cx, &inputs).await.unwrap();
    assert!(again.changes.is_empty(), "{again}");

    // Protected: destroy refuses before deleting anything.
    let err = db.destroy(&cx).await.unwrap_err().to_string();
    assert!(err.contains("deletion-protection = false"), "{err}");
    assert!(
        rds.describe_db_instances()
            .db_instance_identifier("shop-db")
            .send()
            .await
            .is_ok()
    );

    // Changed in place: protection off, a larger disk.
    let changed = data(&cx, "deletion-protection = false\nallocated-storage = 50\n");
    let plan = changed.plan(&cx, &inputs).await.unwrap();
    assert_eq!(plan.changes.len(), 1, "{plan}");
    assert!(
        plan.changes[0].sets("deletion-protection", "false"),
        "{plan}"
    );
    assert!(plan.changes[0].sets("allocated-storage", "50"), "{plan}");
    changed.apply(&cx, &inputs).await.unwrap();
    assert!(changed.plan(&cx, &inputs).await.unwrap().changes.is_empty());
    // A smaller disk than there is cannot be had in place.
    let err = data(&cx, "deletion-protection = false\n")
        .plan(&cx, &inputs)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("storage never shrinks"), "{err}");

    // Destroy: the instance with a final snapshot, then its subnet group and security group.
    let plan = changed.plan_destroy(&cx).await.unwrap();
    assert!(
        plan.to_string().contains("final snapshot shop-db-final-"),
        "{plan}"
    );
    changed.destroy(&cx).await.unwrap();
    let snapshots = rds
        .describe_db_snapshots()
        .db_instance_identifier("shop-db")
        .send()
        .await
        .unwrap();
    assert!(
        snapshots.db_snapshots().iter().any(|s| s
            .db_snapshot_identifier()
            .is_some_and(|n| n.starts_with("shop-db-final-"))),
        "{snapshots:?}"
    );
    assert!(
        rds.describe_db_instances()
            .db_instance_identifier("shop-db")
            .send()
            .await
            .is_err()
    );
    assert!(
        rds.describe_db_subnet_groups()
            .db_subnet_group_name("shop-db")
            .send()
            .await
            .is_err()
    );
    assert!(changed.plan_destroy(&cx).await.unwrap().changes.is_empty());

    // A forced failover needs a standby: RDS refuses it for a Single-AZ instance (another
    // stack: moto names automated snapshots by the minute, so a second `shop-db` now collides).
    let cx = context("shopsingle");
    let inputs = network(&cx).await;
    let single = data(
        &cx,
        "multi-az = false\ndeletion-protection = false\nskip-final-snapshot = true\n",
    );
    single.apply(&cx, &inputs).await.unwrap();
    let rds: aws_sdk_rds::Client = infra::client!(&cx, aws_sdk_rds);
    let err = rds
        .reboot_db_instance()
        .db_instance_identifier("shopsingle-db")
        .force_failover(true)
        .send()
        .await
        .unwrap_err();
    let text = format!("{}", aws_sdk_rds::error::DisplayErrorContext(&err));
    assert!(text.contains("not Multi-AZ"), "{text}");
    single.destroy(&cx).await.unwrap();
}

#[tokio::test]
async fn a_multi_az_db_cluster_has_a_writer_and_two_readers_in_three_zones_and_is_changed_and_destroyed()
 {
    let cx = context("ledger");
    let inputs = network_in(&cx, 3).await;
    let rds: aws_sdk_rds::Client = infra::client!(&cx, aws_sdk_rds);
    let toml_text = "deployment = \"cluster\"\ninstance-class = \"db.m6gd.large\"\n";
    let db = data(&cx, toml_text);

    let plan = db.plan(&cx, &inputs).await.unwrap();
    let last = plan.changes.last().unwrap();
    assert_eq!(
        (last.action, last.kind.as_str()),
        (Action::Create, "db-cluster"),
        "{plan}"
    );
    assert!(
        plan.to_string()
            .contains("two readable standbys in three zones"),
        "{plan}"
    );

    let out = db.apply(&cx, &inputs).await.unwrap();
    assert_eq!(out.deployment, Deployment::Cluster);
    assert_eq!(out.instance_id, "ledger-db");
    assert!(out.endpoint.contains(".cluster-"), "{out:?}");
    assert!(
        out.reader_endpoint
            .as_deref()
            .is_some_and(|r| r.contains(".cluster-ro-")),
        "{out:?}"
    );
    assert!(out.multi_az, "{out:?}");
    assert_eq!(out.primary_zone.as_deref(), Some("eu-west-1a"));
    assert!(
        out.master_secret_arn
            .as_deref()
            .is_some_and(|a| a.starts_with("arn:aws:secretsmanager:")),
        "{out:?}"
    );
    let described = rds
        .describe_db_clusters()
        .db_cluster_identifier("ledger-db")
        .send()
        .await
        .unwrap();
    let k = &described.db_clusters()[0];
    assert_eq!(k.engine(), Some("postgres"));
    assert_eq!(k.db_cluster_instance_class(), Some("db.m6gd.large"));
    assert_eq!(k.storage_encrypted(), Some(true));
    assert_eq!(k.deletion_protection(), Some(true));
    assert_eq!(k.database_name(), Some("app"));
    let members = k.db_cluster_members();
    assert_eq!(members.len(), 3, "{members:?}");
    assert_eq!(
        members
            .iter()
            .filter(|m| m.is_cluster_writer() == Some(true))
            .count(),
        1
    );
    let mut zones = Vec::new();
    for m in members {
        let i = rds
            .describe_db_instances()
            .db_instance_identifier(m.db_instance_identifier().unwrap())
            .send()
            .await
            .unwrap();
        zones.push(i.db_instances()[0].availability_zone().unwrap().to_owned());
    }
    zones.sort();
    assert_eq!(zones, ["eu-west-1a", "eu-west-1b", "eu-west-1c"]);
    let placement = db.placement(&cx).await.unwrap().unwrap();
    assert_eq!(placement.deployment, Deployment::Cluster);
    assert_eq!(placement.zone.as_deref(), Some("eu-west-1a"));

    // Converged: nothing to do.
    let again = db.plan(&cx, &inputs).await.unwrap();
    assert!(again.changes.is_empty(), "{again}");
    // An instance is not a cluster: no swap in place.
    let err = data(&cx, "")
        .plan(&cx, &inputs)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("deployment \"cluster\""), "{err}");

    // Changed in place: a larger class, protection off.
    let changed = data(
        &cx,
        "deployment = \"cluster\"\ninstance-class = \"db.m6gd.xlarge\"\ndeletion-protection = false\nskip-final-snapshot = true\n",
    );
    let plan = changed.plan(&cx, &inputs).await.unwrap();
    assert_eq!(plan.changes.len(), 1, "{plan}");
    assert_eq!(plan.changes[0].kind, "db-cluster");
    assert!(
        plan.changes[0].sets("instance-class", "db.m6gd.xlarge"),
        "{plan}"
    );
    changed.apply(&cx, &inputs).await.unwrap();
    assert!(changed.plan(&cx, &inputs).await.unwrap().changes.is_empty());

    // Destroy: the cluster and its three instances, then the subnet group and security group.
    changed.destroy(&cx).await.unwrap();
    assert!(
        rds.describe_db_clusters()
            .db_cluster_identifier("ledger-db")
            .send()
            .await
            .is_err()
    );
    for n in 1..=3 {
        assert!(
            rds.describe_db_instances()
                .db_instance_identifier(format!("ledger-db-instance-{n}"))
                .send()
                .await
                .is_err()
        );
    }
    assert!(changed.plan_destroy(&cx).await.unwrap().changes.is_empty());
}

fn cache(cx: &Context, toml_text: &str) -> Cache {
    let config: CacheConfig = toml::from_str(toml_text).unwrap();
    Cache::new(cx, config.validate(&cx.scope()).unwrap())
}

#[tokio::test]
async fn a_multi_az_encrypted_cache_spans_two_zones_and_is_changed_and_destroyed() {
    let cx = context("kiosk");
    let inputs = network(&cx).await;
    let ec = cache(&cx, "");
    let elasticache: aws_sdk_elasticache::Client = infra::client!(&cx, aws_sdk_elasticache);
    let ec2: aws_sdk_ec2::Client = infra::client!(&cx, aws_sdk_ec2);

    let plan = ec.plan(&cx, &inputs).await.unwrap();
    let kinds: Vec<(Action, &str)> = plan
        .changes
        .iter()
        .map(|c| (c.action, c.kind.as_str()))
        .collect();
    assert_eq!(
        kinds,
        [
            (Action::Create, "security-group"),
            (Action::Update, "security-group"),
            (Action::Create, "cache-subnet-group"),
            (Action::Create, "replication-group"),
        ],
        "{plan}"
    );

    let out = ec.apply(&cx, &inputs).await.unwrap();
    assert_eq!(out.group_id, "kiosk-cache");
    assert_eq!(out.port, 6379);
    assert!(out.multi_az && out.transit_encryption, "{out:?}");
    assert!(!out.primary_endpoint.is_empty());
    assert_eq!(out.primary_zone.as_deref(), Some("eu-west-1a"));
    let described = elasticache
        .describe_replication_groups()
        .replication_group_id("kiosk-cache")
        .send()
        .await
        .unwrap();
    let g = &described.replication_groups()[0];
    assert_eq!(g.at_rest_encryption_enabled(), Some(true));
    assert_eq!(g.transit_encryption_enabled(), Some(true));
    assert_eq!(
        g.automatic_failover(),
        Some(&aws_sdk_elasticache::types::AutomaticFailoverStatus::Enabled)
    );
    // A primary and a replica, each in its own zone.
    let members: Vec<(Option<&str>, Option<&str>)> = g.node_groups()[0]
        .node_group_members()
        .iter()
        .map(|m| (m.current_role(), m.preferred_availability_zone()))
        .collect();
    assert_eq!(
        members,
        [
            (Some("primary"), Some("eu-west-1a")),
            (Some("replica"), Some("eu-west-1b"))
        ]
    );
    // Only the tasks' group reaches it, on 6379.
    let sg = ec2
        .describe_security_groups()
        .group_ids(&out.security_group_id)
        .send()
        .await
        .unwrap();
    let rules = sg.security_groups()[0].ip_permissions();
    assert_eq!(rules.len(), 1);
    assert_eq!(rules[0].from_port(), Some(6379));
    assert_eq!(
        rules[0].user_id_group_pairs()[0].group_id(),
        Some(inputs.client_security_group_id.as_str())
    );

    // Converged: nothing to do.
    let again = ec.plan(&cx, &inputs).await.unwrap();
    assert!(again.changes.is_empty(), "{again}");

    // Changed in place: a larger node; what cannot change is refused before any call.
    let bigger = cache(&cx, "node-type = \"cache.t4g.small\"\n");
    let plan = bigger.plan(&cx, &inputs).await.unwrap();
    assert_eq!(plan.changes.len(), 1, "{plan}");
    assert!(
        plan.changes[0].sets("node-type", "cache.t4g.small"),
        "{plan}"
    );
    bigger.apply(&cx, &inputs).await.unwrap();
    assert!(bigger.plan(&cx, &inputs).await.unwrap().changes.is_empty());
    let err = cache(
        &cx,
        "node-type = \"cache.t4g.small\"\ntransit-encryption = false\n",
    )
    .plan(&cx, &inputs)
    .await
    .unwrap_err()
    .to_string();
    assert!(err.contains("transit-encryption true"), "{err}");

    // Destroy: the group, then its subnet group and security group.
    bigger.destroy(&cx).await.unwrap();
    assert!(
        elasticache
            .describe_replication_groups()
            .replication_group_id("kiosk-cache")
            .send()
            .await
            .is_err()
    );
    assert!(
        elasticache
            .describe_cache_subnet_groups()
            .cache_subnet_group_name("kiosk-cache")
            .send()
            .await
            .is_err()
    );
    assert!(
        ec2.describe_security_groups()
            .group_ids(&out.security_group_id)
            .send()
            .await
            .is_err()
    );
    assert!(bigger.plan_destroy(&cx).await.unwrap().changes.is_empty());
}
