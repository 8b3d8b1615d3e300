//! A stack with `[database]` and `[cache]` against moto: deploy makes the database and the cache
//! in the private subnets behind their own security groups (the tasks' group let in), hands both
//! to the service, the outputs carry them, a second plan changes nothing, and destroy refuses a
//! protected database before deleting anything, then deletes it (with its final snapshot), the
//! cache and everything else.
#![allow(clippy::unwrap_used)] // Test helpers outside #[test] functions.

mod common;

use infra::{Action, Context, StackName};
use stackproof_stack::{Blocker, Error, StackConfig};

fn context() -> Context {
    let moto = sandbox::MotoServer::shared().expect("moto starts (run `cargo xtask setup` first)");
    moto.context(StackName::new("withdb").unwrap(), "eu-west-1")
        .interceptor(moto.fresh_account())
        .waits(sandbox::TEST_WAITS)
        .build()
}

fn stack(database: &str) -> stackproof_stack::Stack {
    StackConfig::from_toml(
        &format!(
            "name = \"withdb\"\n[storage]\nforce-destroy = true\n[cache]\n[database]\n{database}"
        ),
        "stack.toml",
    )
    .unwrap()
    .validate()
    .unwrap()
}

#[test]
fn a_stack_with_a_database_deploys_it_privately_and_destroys_it_last_of_all_with_a_snapshot() {
    common::on_a_big_stack(with_a_database);
}

async fn with_a_database() {
    let cx = context();
    // Bad values are named in the stack's terms before anything is called.
    let err = StackConfig::from_toml("[database]\nallocated-storage = 5\n", "stack.toml")
        .unwrap()
        .validate()
        .unwrap_err()
        .to_string();
    assert!(err.contains("database.allocated-storage = 5"), "{err}");

    let protected = stack("");
    let plan = protected.plan(&cx).await.unwrap();
    assert!(
        plan.changes
            .iter()
            .any(|c| c.module == "data" && c.kind == "db-instance" && c.action == Action::Create),
        "{plan}"
    );
    let outputs = protected.apply(&cx).await.unwrap();
    let db = outputs.data.clone().expect("the database's outputs");
    assert_eq!(db.instance_id, "withdb-db");
    assert!(db.multi_az);
    assert!(db.master_secret_arn.is_some(), "{db:?}");
    let rds: aws_sdk_rds::Client = infra::client!(&cx, aws_sdk_rds);
    let group = rds
        .describe_db_subnet_groups()
        .db_subnet_group_name("withdb-db")
        .send()
        .await
        .unwrap();
    let mut subnets: Vec<String> = group.db_subnet_groups()[0]
        .subnets()
        .iter()
        .filter_map(|s| s.subnet_identifier().map(str::to_owned))
        .collect();
    subnets.sort();
    let mut private = outputs.network.private_subnet_ids.clone();
    private.sort();
    assert_eq!(subnets, private);
    // The service is handed the database: where it is as variables, the password as an ECS
    // secret (the RDS-managed secret's `password` key), which the execution role may read.
    let ecs: aws_sdk_ecs::Client = infra::client!(&cx, aws_sdk_ecs);
    let td = ecs
        .describe_task_definition()
        .task_definition(&outputs.compute.task_definition_arn)
        .send()
        .await
        .unwrap();
    let container = &td.task_definition().unwrap().container_definitions()[0];
    let env: std::collections::BTreeMap<&str, &str> = container
        .environment()
        .iter()
        .filter_map(|kv| Some((kv.name()?, kv.value()?)))
        .collect();
    assert_eq!(
        env.get("DATABASE_HOST"),
        Some(&db.endpoint.as_str()),
        "{env:?}"
    );
    assert_eq!(env.get("DATABASE_PORT"), Some(&"5432"));
    assert_eq!(env.get("DATABASE_NAME"), Some(&db.database_name.as_str()));
    assert_eq!(env.get("DATABASE_USER"), Some(&db.master_username.as_str()));
    // And the cache: its primary endpoint, port and TLS.
    let cache = outputs.cache.clone().expect("the cache's outputs");
    assert_eq!(cache.group_id, "withdb-cache");
    assert_eq!(
        env.get("REDIS_HOST"),
        Some(&cache.primary_endpoint.as_str()),
        "{env:?}"
    );
    assert_eq!(env.get("REDIS_PORT"), Some(&"6379"));
    assert_eq!(env.get("REDIS_TLS"), Some(&"true"));
    let secret_arn = db.master_secret_arn.clone().unwrap();
    let secrets: Vec<(&str, &str)> = container
        .secrets()
        .iter()
        .map(|s| (s.name(), s.value_from()))
        .collect();
    assert_eq!(
        secrets,
        [(
            "DATABASE_PASSWORD",
            format!("{secret_arn}:password::").as_str()
        )]
    );
    let iam: aws_sdk_iam::Client = infra::client!(&cx, aws_sdk_iam);
    let role = outputs
        .compute
        .execution_role_arn
        .rsplit('/')
        .next()
        .unwrap();
    let policy = iam
        .get_role_policy()
        .role_name(role)
        .policy_name(role)
        .send()
        .await
        .unwrap();
    let document = urlencoding_decode(policy.policy_document());
    assert!(
        document.contains("secretsmanager:GetSecretValue") && document.contains(&secret_arn),
        "{document}"
    );
    // The zone fault may fail the database over: the fault role has FIS's RDS policy too.
    let fault_role = outputs.compute.fault_role_arn.rsplit('/').next().unwrap();
    let attached: Vec<String> = iam
        .list_attached_role_policies()
        .role_name(fault_role)
        .send()
        .await
        .unwrap()
        .attached_policies()
        .iter()
        .filter_map(|p| p.policy_arn().map(str::to_owned))
        .collect();
    assert!(
        attached
            .iter()
            .any(|a| a.ends_with("AWSFaultInjectionSimulatorRDSAccess")),
        "{attached:?}"
    );
    // ... and may cut the Multi-AZ cache's power in the zone: AWS has no managed policy for
    // that action, so its calls are granted inline.
    let inline = iam
        .get_role_policy()
        .role_name(fault_role)
        .policy_name("withdb-fis-actions")
        .send()
        .await
        .unwrap();
    let document = urlencoding_decode(inline.policy_document());
    for action in [
        "elasticache:InterruptClusterAzPower",
        "elasticache:DescribeReplicationGroups",
        "tag:GetResources",
    ] {
        assert!(document.contains(action), "{action}: {document}");
    }
    // The stack's outputs, read back, hold it too; a second plan changes nothing.
    assert_eq!(
        protected.outputs(&cx).await.unwrap().unwrap().data,
        Some(db)
    );
    let again = protected.plan(&cx).await.unwrap();
    assert!(again.changes.is_empty(), "{again}");
    // A second apply writes nothing: in particular the execution role's grant of the
    // database's secret is not taken away and put back (a task starting in between could not
    // read its secret).
    let before = cx.calls().snapshot();
    protected.apply(&cx).await.unwrap();
    let calls = cx.calls().snapshot().since(&before);
    assert_eq!(calls.writes(), 0, "{calls:?}");

    // Protected: destroy deletes nothing and says why.
    let err = protected.destroy(&cx, false).await.unwrap_err();
    let Error::Preflight(blockers) = &err else {
        panic!("{err:?}");
    };
    assert!(
        matches!(blockers.as_slice(), [Blocker::Data(_)]),
        "{blockers:?}"
    );
    assert!(
        err.to_string().contains("deletion-protection = false"),
        "{err}"
    );
    assert!(
        rds.describe_db_instances()
            .db_instance_identifier("withdb-db")
            .send()
            .await
            .is_ok()
    );

    // Protection off (a deploy), then destroy: everything goes, the snapshot stays.
    let unprotected = stack("deletion-protection = false\n");
    unprotected.apply(&cx).await.unwrap();
    let plan = unprotected.destroy(&cx, false).await.unwrap();
    for kind in ["db-instance", "replication-group", "cache-subnet-group"] {
        assert!(
            plan.changes
                .iter()
                .any(|c| c.kind == kind && c.action == Action::Delete),
            "{kind}: {plan}"
        );
    }
    assert!(
        unprotected
            .plan_destroy(&cx)
            .await
            .unwrap()
            .changes
            .is_empty()
    );
    let snapshots = rds
        .describe_db_snapshots()
        .db_instance_identifier("withdb-db")
        .send()
        .await
        .unwrap();
    // The final snapshot (moto also keeps the automated one of the creation).
    let finals: Vec<&str> = snapshots
        .db_snapshots()
        .iter()
        .filter(|s| s.snapshot_type() == Some("manual"))
        .filter_map(|s| s.db_snapshot_identifier())
        .collect();
    assert_eq!(finals.len(), 1, "{snapshots:?}");
    assert!(finals[0].starts_with("withdb-db-final-"), "{finals:?}");
}

/// IAM returns policy documents URL-encoded.
fn urlencoding_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Ok(b) = u8::from_str_radix(&text[i + 1..i + 3], 16)
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
