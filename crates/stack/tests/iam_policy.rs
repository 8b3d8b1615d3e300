//! `docs/iam.json`, the policy the deploying identity needs, against what the code calls:
//! deploy, plan, status, the steady-service wait, a zone's isolation and restore, the lock and
//! destroy run against moto with a call counter, and every (service, operation) seen must be
//! allowed by an action of the published policy. Run with `STACKPROOF_PRINT_IAM=1` to print
//! the actions seen.
#![allow(clippy::unwrap_used)] // Test helpers outside #[test] functions.

mod common;

use std::collections::BTreeSet;
use std::time::SystemTime;

use infra::{Context, StackName};
use stackproof_stack::StackConfig;

/// The IAM action of an SDK operation (service as the SDK names it, operation).
fn action(service: &str, operation: &str) -> String {
    let prefix = match service {
        "EC2" => "ec2",
        "Elastic Load Balancing v2" => "elasticloadbalancing",
        "IAM" => "iam",
        "ECS" => "ecs",
        "CloudWatch Logs" => "logs",
        "S3" => "s3",
        "ECR" => "ecr",
        "CloudWatch" => "cloudwatch",
        "Application Auto Scaling" => "application-autoscaling",
        "STS" => "sts",
        "SNS" => "sns",
        "fis" | "FIS" => "fis",
        other => panic!("no IAM prefix known for the SDK service {other:?}"),
    };
    // S3 operations whose IAM action has another name (S3 UG, "Actions, resources, and
    // condition keys for Amazon S3").
    let name = match (prefix, operation) {
        ("s3", "HeadBucket" | "ListObjectsV2" | "ListObjects") => "ListBucket",
        ("s3", "ListObjectVersions") => "ListBucketVersions",
        ("s3", "HeadObject") => "GetObject",
        ("s3", "DeleteObjects") => "DeleteObject",
        ("s3", "ListBuckets") => "ListAllMyBuckets",
        ("s3", "GetBucketEncryption") => "GetEncryptionConfiguration",
        ("s3", "PutBucketEncryption") => "PutEncryptionConfiguration",
        ("s3", "GetBucketLifecycleConfiguration") => "GetLifecycleConfiguration",
        ("s3", "PutBucketLifecycleConfiguration") => "PutLifecycleConfiguration",
        ("s3", "GetPublicAccessBlock") => "GetBucketPublicAccessBlock",
        ("s3", "PutPublicAccessBlock") => "PutBucketPublicAccessBlock",
        ("s3", "DeleteBucketLifecycle") => "PutLifecycleConfiguration",
        ("s3", "DeleteBucketEncryption") => "PutEncryptionConfiguration",
        _ => operation,
    };
    format!("{prefix}:{name}")
}

/// The actions of `docs/iam.json`.
fn published() -> BTreeSet<String> {
    // Read at run time (cargo sets it for the test): a test binary reused from a clone at
    // another path still reads this clone's policy.
    let dir = std::env::var("CARGO_MANIFEST_DIR")
        .unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_owned());
    let path = std::path::Path::new(&dir).join("../../docs/iam.json");
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let mut actions = BTreeSet::new();
    for statement in doc["Statement"].as_array().unwrap() {
        assert_eq!(statement["Effect"], "Allow", "{statement}");
        match &statement["Action"] {
            serde_json::Value::String(a) => {
                actions.insert(a.clone());
            }
            serde_json::Value::Array(list) => {
                actions.extend(list.iter().map(|a| a.as_str().unwrap().to_owned()));
            }
            other => panic!("Action {other}"),
        }
    }
    actions
}

fn allowed(published: &BTreeSet<String>, action: &str) -> bool {
    published.contains(action)
        || published.iter().any(|p| {
            p.strip_suffix('*')
                .is_some_and(|prefix| action.starts_with(prefix))
        })
}

#[test]
fn the_published_policy_allows_every_call_the_stack_makes() {
    common::on_a_big_stack(every_call);
}

async fn every_call() {
    let moto = sandbox::MotoServer::shared().expect("moto starts (run `cargo xtask setup` first)");
    let account = moto.fresh_account();
    let in_account = || -> Context {
        Context::builder(
            sandbox::sdk_config(moto.endpoint(), "eu-west-1"),
            StackName::new("iam").unwrap(),
        )
        .interceptor(account.clone())
        .waits(sandbox::TEST_WAITS)
        .build()
    };
    let cx = in_account();
    let stack = StackConfig::from_toml(
        // VPC endpoints too: their calls are the deploying identity's.
        "name = \"iam\"\n[storage]\nforce-destroy = true\n[service]\nforce-destroy = true\n[network]\nvpc-endpoints = [\"s3\", \"ecr.api\"]\n",
        "stack.toml",
    )
    .unwrap()
    .validate()
    .unwrap();

    let lock = stackproof_stack::lock::LockStore::new(&cx).await.unwrap();
    let held = lock.acquire("deploy").await.unwrap();
    stack.plan(&cx).await.unwrap();
    stack.plan_destroy(&cx).await.unwrap();
    let outputs = stack.apply(&cx).await.unwrap();
    stack.plan(&cx).await.unwrap();
    stack.outputs(&cx).await.unwrap().unwrap();
    stackproof_stack::steady::read(&cx, &outputs, SystemTime::now(), &[])
        .await
        .unwrap();
    let elb: aws_sdk_elasticloadbalancingv2::Client =
        infra::client!(&cx, aws_sdk_elasticloadbalancingv2);
    stackproof_stack::steady::health_timing(&elb, &outputs.load_balancer.target_group_arn)
        .await
        .unwrap()
        .unwrap();
    let zone = outputs.network.zones[0].clone();
    stack.isolate_zone(&cx, &zone).await.unwrap();
    stack.zone_isolation(&cx).await.unwrap();
    stack.restore_zone(&cx, &zone).await.unwrap();
    // The proof's fault through AWS FIS, which the data plane runs here (no task of the
    // service starts without the sample-app: only FIS is of interest).
    let mut options = sandbox::PlaneOptions::new("/nonexistent/sample-app")
        .interceptor(account.clone())
        .clock(sandbox::Clock::fast());
    options.interval = std::time::Duration::from_millis(200);
    let plane =
        sandbox::DataPlane::start(sandbox::sdk_config(moto.endpoint(), "eu-west-1"), options)
            .await
            .unwrap();
    let alarms = vec![outputs.observability.alarm_names[0].clone()];
    stack
        .start_zone_fault(
            &cx,
            &outputs.compute.fault_role_arn,
            &zone,
            std::time::Duration::from_secs(600),
            &alarms,
        )
        .await
        .unwrap();
    assert_eq!(stack.fault_experiments(&cx).await.unwrap().len(), 1);
    assert_eq!(stack.restore_zone(&cx, &zone).await.unwrap().len(), 1);
    plane.stop().await;
    // An access log to empty (written by a context of its own: not the tool's call).
    let s3: aws_sdk_s3::Client = infra::client!(&in_account(), aws_sdk_s3);
    s3.put_object()
        .bucket(&outputs.storage.log_bucket)
        .key(format!("{}/AWSLogs/log.gz", outputs.storage.log_prefix))
        .body(b"log".to_vec().into())
        .send()
        .await
        .unwrap();
    stack.destroy_preflight(&cx, false).await.unwrap();
    stack.destroy(&cx, false).await.unwrap();
    held.release().await.unwrap();

    let seen: BTreeSet<String> = cx
        .calls()
        .snapshot()
        .by_operation
        .keys()
        .map(|(service, operation)| action(service, operation))
        .collect();
    if std::env::var_os("STACKPROOF_PRINT_IAM").is_some() {
        println!("{}", serde_json::to_string_pretty(&seen).unwrap());
    }
    let published = published();
    let missing: Vec<&String> = seen.iter().filter(|a| !allowed(&published, a)).collect();
    assert!(
        missing.is_empty(),
        "docs/iam.json lacks {missing:?} (the code calls them)"
    );
    assert!(seen.len() > 80, "{seen:?}");
}
