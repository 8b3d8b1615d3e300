//! The storage module against moto: one moto server for this test binary, one moto account per
//! test, so tests run in parallel without seeing each other.
//!
//! moto answers every read the module makes (GetBucketTagging, GetPublicAccessBlock,
//! GetBucketOwnershipControls, GetBucketEncryption, GetBucketLifecycleConfiguration,
//! GetBucketPolicy, ListObjectVersions, DescribeRepositories, ListTagsForResource,
//! GetLifecyclePolicy, ListImages). Where it falls short:
//! - moto 5.2.5 evaluates bucket policies for object requests, but it implements no condition
//!   operator except `StringEquals` and ignores the others (`moto/iam/policy_conditions.py`),
//!   and it turns any unmet condition into a deny, whatever the statement's effect
//!   (`moto/iam/access_control.py`, `IAMPolicyStatement.is_action_permitted`). So the non-TLS
//!   deny (`Bool aws:SecureTransport false`) applies to every PutObject / DeleteObject, TLS or
//!   not. Tests that write objects lift the policy first ([`lift_policy`]); force-destroy
//!   deletes the policy before emptying (which it also wants on AWS, to stop log writes).
//! - The SDK leaves `scanOnPush: false` out of PutImageScanningConfiguration (a default value)
//!   and moto then keeps the old setting: turning scanning *off* on an existing repository
//!   does not take in moto (it does on AWS). Scanning off at create works.
//! - moto does not run ECR lifecycle policies or scans, and checks no principals.

#![allow(clippy::unwrap_used)] // Test helpers outside #[test] functions.

use std::time::Instant;

use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{
    BucketLifecycleConfiguration, BucketVersioningStatus, ExpirationStatus, LifecycleExpiration,
    LifecycleRule, LifecycleRuleFilter, ObjectOwnership, OwnershipControls, OwnershipControlsRule,
    ServerSideEncryption, ServerSideEncryptionByDefault, ServerSideEncryptionConfiguration,
    ServerSideEncryptionRule, Tag, Tagging, VersioningConfiguration,
};
use infra::{Action, Config, Context, Module, Plan, StackName};
use sandbox::MotoServer;
use serde_json::{Value, json};
use stackproof_storage::{Error, Storage, StorageConfig, StorageOutputs};

const REGION: &str = "eu-west-1";

fn context_in(stack: &str, region: &str) -> Context {
    let moto = MotoServer::shared().expect("moto starts (run `cargo xtask setup` first)");
    moto.context(StackName::new(stack).unwrap(), region).build()
}

fn context(stack: &str) -> Context {
    context_in(stack, REGION)
}

fn storage(cx: &Context, toml_text: &str) -> Storage {
    let config: StorageConfig = toml::from_str(toml_text).unwrap();
    Storage::new(cx, config.validate(&cx.scope()).unwrap())
}

fn s3(cx: &Context) -> aws_sdk_s3::Client {
    stackproof_storage::s3_client(cx)
}

fn ecr(cx: &Context) -> aws_sdk_ecr::Client {
    infra::client!(cx, aws_sdk_ecr)
}

fn kinds(plan: &Plan, action: Action) -> Vec<String> {
    plan.changes
        .iter()
        .filter(|c| c.action == action)
        .map(|c| format!("{} {}", c.kind, c.name))
        .collect()
}

async fn policy_of(cx: &Context, bucket: &str) -> Value {
    let text = s3(cx)
        .get_bucket_policy()
        .bucket(bucket)
        .send()
        .await
        .unwrap()
        .policy()
        .unwrap()
        .to_owned();
    serde_json::from_str(&text).unwrap()
}

/// The statements of `policy` with `Effect` = `effect`.
fn statements<'a>(policy: &'a Value, effect: &str) -> Vec<&'a Value> {
    policy["Statement"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["Effect"] == effect)
        .collect()
}

/// A one-item list and its item mean the same in a policy.
fn one(v: &Value) -> &Value {
    match v.as_array() {
        Some(items) if items.len() == 1 => &items[0],
        _ => v,
    }
}

async fn bucket_exists(cx: &Context, bucket: &str) -> bool {
    match s3(cx).get_bucket_tagging().bucket(bucket).send().await {
        Ok(_) => true,
        Err(e) => {
            let code = aws_sdk_s3::error::ProvideErrorMetadata::code(&e).map(str::to_owned);
            match code.as_deref() {
                Some("NoSuchBucket") => false,
                Some("NoSuchTagSet") => true,
                other => panic!("GetBucketTagging {bucket}: {other:?}"),
            }
        }
    }
}

async fn repository_exists(cx: &Context, name: &str) -> bool {
    ecr(cx)
        .describe_repositories()
        .repository_names(name)
        .send()
        .await
        .is_ok()
}

/// Deletes the bucket policy so that moto lets objects be written (see the file's doc).
async fn lift_policy(cx: &Context, bucket: &str) {
    s3(cx)
        .delete_bucket_policy()
        .bucket(bucket)
        .send()
        .await
        .unwrap();
}

async fn put(cx: &Context, bucket: &str, key: &str, body: &str) {
    s3(cx)
        .put_object()
        .bucket(bucket)
        .key(key)
        .body(ByteStream::from(body.as_bytes().to_vec()))
        .send()
        .await
        .unwrap();
}

async fn push_image(cx: &Context, repo: &str, tag: &str, n: u32) {
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "config": {
            "mediaType": "application/vnd.docker.container.image.v1+json",
            "size": 100 + n,
            "digest": format!("sha256:{:064x}", n)
        },
        // moto derives the image digest from the layer digests: one layer of its own each.
        "layers": [{
            "mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip",
            "size": 1000 + n,
            "digest": format!("sha256:{:064x}", 1000 + n)
        }]
    });
    ecr(cx)
        .put_image()
        .repository_name(repo)
        .image_manifest(manifest.to_string())
        .image_tag(tag)
        .send()
        .await
        .unwrap();
}

#[tokio::test]
async fn plan_on_an_empty_account_lists_both_creates_and_writes_nothing() {
    let cx = context("plan-empty");
    let plan = storage(&cx, "").plan(&cx, &()).await.unwrap();
    assert_eq!(
        kinds(&plan, Action::Create),
        ["bucket log-bucket", "repository repository"],
        "{plan}"
    );
    assert_eq!(plan.changes.len(), 2, "{plan}");
    let text = plan.to_string();
    let account = cx.calls().snapshot();
    assert_eq!(account.writes(), 0, "{account}");
    assert!(
        text.contains(
            "allow the eu-west-1 Elastic Load Balancing account arn:aws:iam::156460612806:root"
        ),
        "{text}"
    );
    assert!(text.contains("expire objects after 90 days"), "{text}");
    assert!(text.contains("keep the newest 30 images"), "{text}");
}

#[tokio::test]
async fn apply_creates_the_bucket_and_repository_with_every_setting() {
    let cx = context("apply-all");
    let module = storage(&cx, "");
    let start = Instant::now();
    let out: StorageOutputs = module.apply(&cx, &()).await.unwrap();
    let apply_calls = cx.calls().snapshot();
    eprintln!("apply into moto: {:?}\n{apply_calls}", start.elapsed());

    // Outputs: the account from STS, the derived names.
    assert_eq!(out.account_id.len(), 12, "{out:?}");
    assert!(
        out.account_id.chars().all(|c| c.is_ascii_digit()),
        "{out:?}"
    );
    assert_eq!(
        out.log_bucket,
        format!("apply-all-alb-logs-{}-eu-west-1", out.account_id)
    );
    assert_eq!(out.log_prefix, "alb");
    assert_eq!(out.repository_name, "apply-all/sample-app");
    assert!(
        out.repository_uri.ends_with("/apply-all/sample-app")
            && out.repository_uri.starts_with(&out.account_id),
        "{out:?}"
    );
    assert!(
        out.repository_arn.starts_with("arn:aws:ecr:eu-west-1:"),
        "{out:?}"
    );

    let s3 = s3(&cx);
    let b = out.log_bucket.as_str();

    // The policy, read back as JSON: a deny of every request without TLS, and an allow of
    // exactly the region's ELB account to put objects under the log prefix.
    let policy = policy_of(&cx, b).await;
    let deny = statements(&policy, "Deny");
    assert_eq!(deny.len(), 1, "{policy:#}");
    assert_eq!(deny[0]["Principal"], "*");
    assert_eq!(one(&deny[0]["Action"]), "s3:*");
    assert_eq!(
        deny[0]["Condition"],
        json!({ "Bool": { "aws:SecureTransport": "false" } })
    );
    let mut resources: Vec<&str> = deny[0]["Resource"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap())
        .collect();
    resources.sort_unstable();
    assert_eq!(
        resources,
        [format!("arn:aws:s3:::{b}"), format!("arn:aws:s3:::{b}/*")]
    );
    let allow = statements(&policy, "Allow");
    assert_eq!(allow.len(), 1, "{policy:#}");
    assert_eq!(
        allow[0]["Principal"],
        json!({ "AWS": "arn:aws:iam::156460612806:root" })
    );
    assert_eq!(one(&allow[0]["Action"]), "s3:PutObject");
    assert_eq!(
        one(&allow[0]["Resource"]),
        &json!(format!("arn:aws:s3:::{b}/alb/AWSLogs/{}/*", out.account_id))
    );

    // Public access blocked, every kind.
    let pab = s3.get_public_access_block().bucket(b).send().await.unwrap();
    let c = pab.public_access_block_configuration().unwrap();
    assert_eq!(
        (
            c.block_public_acls(),
            c.ignore_public_acls(),
            c.block_public_policy(),
            c.restrict_public_buckets()
        ),
        (Some(true), Some(true), Some(true), Some(true))
    );
    // SSE-S3 default encryption.
    let enc = s3.get_bucket_encryption().bucket(b).send().await.unwrap();
    let rule = &enc.server_side_encryption_configuration().unwrap().rules()[0];
    assert_eq!(
        rule.apply_server_side_encryption_by_default()
            .unwrap()
            .sse_algorithm(),
        &ServerSideEncryption::Aes256
    );
    // ACLs off.
    let own = s3
        .get_bucket_ownership_controls()
        .bucket(b)
        .send()
        .await
        .unwrap();
    assert_eq!(
        own.ownership_controls().unwrap().rules()[0].object_ownership(),
        &ObjectOwnership::BucketOwnerEnforced
    );
    // Logs expire after 90 days.
    let lc = s3
        .get_bucket_lifecycle_configuration()
        .bucket(b)
        .send()
        .await
        .unwrap();
    assert_eq!(lc.rules().len(), 1);
    assert_eq!(lc.rules()[0].status(), &ExpirationStatus::Enabled);
    assert_eq!(lc.rules()[0].expiration().unwrap().days(), Some(90));
    // Tagged as the stack's.
    let tags = s3.get_bucket_tagging().bucket(b).send().await.unwrap();
    let tag = |k: &str| {
        tags.tag_set()
            .iter()
            .find(|t| t.key() == k)
            .map(|t| t.value().to_owned())
    };
    assert_eq!(tag("stackproof:stack").as_deref(), Some("apply-all"));
    assert_eq!(tag("stackproof:module").as_deref(), Some("storage"));
    assert_eq!(tag("stackproof:name").as_deref(), Some("log-bucket"));

    // The repository: scan on push, mutable tags, a lifecycle policy keeping 30, tags.
    let ecr = ecr(&cx);
    let repos = ecr
        .describe_repositories()
        .repository_names(&out.repository_name)
        .send()
        .await
        .unwrap();
    let repo = &repos.repositories()[0];
    assert_eq!(repo.repository_arn(), Some(out.repository_arn.as_str()));
    assert_eq!(repo.repository_uri(), Some(out.repository_uri.as_str()));
    assert!(repo.image_scanning_configuration().unwrap().scan_on_push());
    assert_eq!(repo.image_tag_mutability().unwrap().as_str(), "MUTABLE");
    let lp = ecr
        .get_lifecycle_policy()
        .repository_name(&out.repository_name)
        .send()
        .await
        .unwrap();
    let lp: Value = serde_json::from_str(lp.lifecycle_policy_text().unwrap()).unwrap();
    assert_eq!(lp["rules"][0]["selection"]["countNumber"], 30);
    assert_eq!(
        lp["rules"][0]["selection"]["countType"],
        "imageCountMoreThan"
    );
    assert_eq!(lp["rules"][0]["action"]["type"], "expire");
    let rtags = ecr
        .list_tags_for_resource()
        .resource_arn(&out.repository_arn)
        .send()
        .await
        .unwrap();
    assert!(
        rtags
            .tags()
            .iter()
            .any(|t| t.key() == "stackproof:stack" && t.value() == "apply-all"),
        "{rtags:?}"
    );
}

#[tokio::test]
async fn configured_settings_are_applied() {
    let cx = context("configured");
    let out = storage(
        &cx,
        r#"
        log-bucket = "configured-logs-x1"
        log-prefix = "web/lb"
        log-expire-days = 7
        scan-on-push = false
        immutable-tags = true
        keep-images = 5
        "#,
    )
    .apply(&cx, &())
    .await
    .unwrap();
    assert_eq!(out.log_bucket, "configured-logs-x1");
    assert_eq!(out.log_prefix, "web/lb");
    let policy = policy_of(&cx, &out.log_bucket).await;
    assert_eq!(
        one(&statements(&policy, "Allow")[0]["Resource"]),
        &json!(format!(
            "arn:aws:s3:::configured-logs-x1/web/lb/AWSLogs/{}/*",
            out.account_id
        ))
    );
    let lc = s3(&cx)
        .get_bucket_lifecycle_configuration()
        .bucket(&out.log_bucket)
        .send()
        .await
        .unwrap();
    assert_eq!(lc.rules()[0].expiration().unwrap().days(), Some(7));
    let repos = ecr(&cx)
        .describe_repositories()
        .repository_names(&out.repository_name)
        .send()
        .await
        .unwrap();
    let repo = &repos.repositories()[0];
    assert!(!repo.image_scanning_configuration().unwrap().scan_on_push());
    assert_eq!(repo.image_tag_mutability().unwrap().as_str(), "IMMUTABLE");
    let lp = ecr(&cx)
        .get_lifecycle_policy()
        .repository_name(&out.repository_name)
        .send()
        .await
        .unwrap();
    let lp: Value = serde_json::from_str(lp.lifecycle_policy_text().unwrap()).unwrap();
    assert_eq!(lp["rules"][0]["selection"]["countNumber"], 5);
}

#[tokio::test]
async fn a_newer_region_lets_the_log_delivery_service_write() {
    // eu-central-2 (Zurich) opened in November 2022: no ELB account, the service principal.
    let cx = context_in("newer-region", "eu-central-2");
    let out = storage(&cx, "").apply(&cx, &()).await.unwrap();
    assert!(out.log_bucket.ends_with("-eu-central-2"), "{out:?}");
    let policy = policy_of(&cx, &out.log_bucket).await;
    let allow = statements(&policy, "Allow");
    assert_eq!(allow.len(), 1, "{policy:#}");
    assert_eq!(
        allow[0]["Principal"],
        json!({ "Service": "logdelivery.elasticloadbalancing.amazonaws.com" })
    );
    assert_eq!(statements(&policy, "Deny").len(), 1, "{policy:#}");
}

#[tokio::test]
async fn a_second_apply_makes_no_write_call_and_the_plan_is_empty() {
    let cx = context("apply-twice");
    let module = storage(&cx, "");
    let first = module.apply(&cx, &()).await.unwrap();

    let before = cx.calls().snapshot();
    let start = Instant::now();
    let plan = module.plan(&cx, &()).await.unwrap();
    let plan_calls = cx.calls().snapshot().since(&before);
    eprintln!(
        "no-change plan against moto: {:?}\n{plan_calls}",
        start.elapsed()
    );
    assert!(plan.is_empty(), "{plan}");
    assert_eq!(plan_calls.writes(), 0, "{plan_calls}");

    let before = cx.calls().snapshot();
    let second = module.apply(&cx, &()).await.unwrap();
    let apply_calls = cx.calls().snapshot().since(&before);
    assert_eq!(apply_calls.writes(), 0, "{apply_calls}");
    assert_eq!(first, second);
    assert_eq!(module.outputs(&cx).await.unwrap(), Some(first));
}

#[tokio::test]
async fn drift_shows_as_an_update_and_apply_puts_it_back() {
    let cx = context("drift");
    let module = storage(&cx, "");
    let out = module.apply(&cx, &()).await.unwrap();
    let b = out.log_bucket.as_str();
    let s3 = s3(&cx);
    let ecr = ecr(&cx);

    // Behind our back: logs kept 7 days, KMS encryption, ACLs on, no public access block,
    // no policy, a tag lost; tags immutable, the lifecycle policy gone. (Scanning turned off
    // does not take in moto: see the file's doc and the test of a repository made by hand.)
    s3.put_bucket_lifecycle_configuration()
        .bucket(b)
        .lifecycle_configuration(
            BucketLifecycleConfiguration::builder()
                .rules(
                    LifecycleRule::builder()
                        .id("someone-else")
                        .status(ExpirationStatus::Enabled)
                        .filter(LifecycleRuleFilter::builder().prefix("").build())
                        .expiration(LifecycleExpiration::builder().days(7).build())
                        .build()
                        .unwrap(),
                )
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    s3.put_bucket_encryption()
        .bucket(b)
        .server_side_encryption_configuration(
            ServerSideEncryptionConfiguration::builder()
                .rules(
                    ServerSideEncryptionRule::builder()
                        .apply_server_side_encryption_by_default(
                            ServerSideEncryptionByDefault::builder()
                                .sse_algorithm(ServerSideEncryption::AwsKms)
                                .build()
                                .unwrap(),
                        )
                        .build(),
                )
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    s3.put_bucket_ownership_controls()
        .bucket(b)
        .ownership_controls(
            OwnershipControls::builder()
                .rules(
                    OwnershipControlsRule::builder()
                        .object_ownership(ObjectOwnership::ObjectWriter)
                        .build()
                        .unwrap(),
                )
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    s3.delete_public_access_block()
        .bucket(b)
        .send()
        .await
        .unwrap();
    s3.delete_bucket_policy().bucket(b).send().await.unwrap();
    s3.put_bucket_tagging()
        .bucket(b)
        .tagging(
            Tagging::builder()
                .tag_set(
                    Tag::builder()
                        .key("stackproof:stack")
                        .value("drift")
                        .build()
                        .unwrap(),
                )
                .tag_set(Tag::builder().key("team").value("web").build().unwrap())
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    ecr.put_image_tag_mutability()
        .repository_name(&out.repository_name)
        .image_tag_mutability(aws_sdk_ecr::types::ImageTagMutability::Immutable)
        .send()
        .await
        .unwrap();
    ecr.delete_lifecycle_policy()
        .repository_name(&out.repository_name)
        .send()
        .await
        .unwrap();

    let plan = module.plan(&cx, &()).await.unwrap();
    assert_eq!(
        kinds(&plan, Action::Update),
        ["bucket log-bucket", "repository repository"],
        "{plan}"
    );
    assert_eq!(plan.changes.len(), 2, "{plan}");
    let text = plan.to_string();
    for line in [
        "~ update storage bucket \"log-bucket\"",
        "lifecycle someone-else expire after 7 days -> expire-access-logs expire after 90 days",
        "default encryption aws:kms -> AES256",
        "object ownership ObjectWriter -> BucketOwnerEnforced",
        "public access block (none) -> all on",
        "bucket policy (none) -> policy: deny requests without TLS",
        "tag stackproof:module = \"storage\"",
        "~ update storage repository \"repository\"",
        "tag mutability IMMUTABLE -> MUTABLE",
        "lifecycle policy (none) -> keep the newest 30 images",
    ] {
        assert!(text.contains(line), "missing {line:?} in\n{text}");
    }

    let before = cx.calls().snapshot();
    module.apply(&cx, &()).await.unwrap();
    let repair = cx.calls().snapshot().since(&before);
    eprintln!("drift repair:\n{repair}");
    assert!(module.plan(&cx, &()).await.unwrap().is_empty());
    let lc = s3
        .get_bucket_lifecycle_configuration()
        .bucket(b)
        .send()
        .await
        .unwrap();
    assert_eq!(lc.rules().len(), 1);
    assert_eq!(lc.rules()[0].id(), Some("expire-access-logs"));
    assert_eq!(lc.rules()[0].expiration().unwrap().days(), Some(90));
    // The user's own tag survives the repair of ours (S3 replaces the whole tag set).
    let tags = s3.get_bucket_tagging().bucket(b).send().await.unwrap();
    assert!(
        tags.tag_set()
            .iter()
            .any(|t| t.key() == "team" && t.value() == "web")
    );
    assert!(
        tags.tag_set()
            .iter()
            .any(|t| t.key() == "stackproof:module")
    );
    let policy = policy_of(&cx, b).await;
    assert_eq!(statements(&policy, "Deny").len(), 1);
}

#[tokio::test]
async fn destroy_refuses_a_non_empty_bucket_and_says_how_to_proceed() {
    let cx = context("refuse");
    let module = storage(&cx, "");
    let out = module.apply(&cx, &()).await.unwrap();
    lift_policy(&cx, &out.log_bucket).await;
    put(&cx, &out.log_bucket, "alb/AWSLogs/x/one.log", "1").await;
    put(&cx, &out.log_bucket, "alb/AWSLogs/x/two.log", "2").await;

    let preview = module.plan_destroy(&cx).await.unwrap();
    assert!(
        preview.to_string().contains("destroy will refuse"),
        "{preview}"
    );

    let before = cx.calls().snapshot();
    let err = module.destroy(&cx).await.unwrap_err();
    assert_eq!(cx.calls().snapshot().since(&before).writes(), 0);
    let text = err.to_string();
    assert!(matches!(err, Error::NotEmpty { count: 2, .. }), "{err:?}");
    for part in [
        format!("bucket {:?}", out.log_bucket),
        "holds 2 objects".to_owned(),
        "force-destroy = true".to_owned(),
        "[storage]".to_owned(),
        "stack.toml".to_owned(),
        "empty it yourself".to_owned(),
    ] {
        assert!(text.contains(&part), "missing {part:?} in {text}");
    }
    // Nothing was deleted, the repository included.
    assert!(bucket_exists(&cx, &out.log_bucket).await);
    assert!(repository_exists(&cx, &out.repository_name).await);
}

#[tokio::test]
async fn destroy_refuses_a_repository_with_images() {
    let cx = context("refuse-images");
    let module = storage(&cx, "");
    let out = module.apply(&cx, &()).await.unwrap();
    push_image(&cx, &out.repository_name, "latest", 1).await;
    let err = module.destroy(&cx).await.unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains(&format!("repository {:?}", out.repository_name))
            && text.contains("holds 1 images")
            && text.contains("force-destroy = true"),
        "{text}"
    );
    assert!(bucket_exists(&cx, &out.log_bucket).await);
    assert!(repository_exists(&cx, &out.repository_name).await);
}

#[tokio::test]
async fn force_destroy_empties_a_versioned_bucket_and_the_repository() {
    let cx = context("force");
    let module = storage(&cx, "force-destroy = true");
    let out = module.apply(&cx, &()).await.unwrap();
    let b = out.log_bucket.as_str();
    let s3 = s3(&cx);
    lift_policy(&cx, b).await;
    s3.put_bucket_versioning()
        .bucket(b)
        .versioning_configuration(
            VersioningConfiguration::builder()
                .status(BucketVersioningStatus::Enabled)
                .build(),
        )
        .send()
        .await
        .unwrap();
    // Two versions of one key, a deleted key (a version and a delete marker), one more key.
    put(&cx, b, "alb/a.log", "v1").await;
    put(&cx, b, "alb/a.log", "v2").await;
    put(&cx, b, "alb/b.log", "x").await;
    s3.delete_object()
        .bucket(b)
        .key("alb/b.log")
        .send()
        .await
        .unwrap();
    put(&cx, b, "alb/c.log", "y").await;
    let versions = s3.list_object_versions().bucket(b).send().await.unwrap();
    assert_eq!(
        versions.versions().len() + versions.delete_markers().len(),
        5
    );
    push_image(&cx, &out.repository_name, "latest", 1).await;
    push_image(&cx, &out.repository_name, "v2", 2).await;
    // The policy back in place, as destroy would find it.
    module.apply(&cx, &()).await.unwrap();
    assert_eq!(statements(&policy_of(&cx, b).await, "Deny").len(), 1);

    let preview = module.plan_destroy(&cx).await.unwrap();
    let text = preview.to_string();
    assert!(text.contains("and its 5 objects"), "{text}");
    assert!(text.contains("first delete its 2 images"), "{text}");

    let before = cx.calls().snapshot();
    let start = Instant::now();
    let removed = module.destroy(&cx).await.unwrap();
    let calls = cx.calls().snapshot().since(&before);
    eprintln!("force destroy against moto: {:?}\n{calls}", start.elapsed());
    assert_eq!(
        kinds(&removed, Action::Delete),
        ["repository repository", "bucket log-bucket"]
    );
    assert!(!bucket_exists(&cx, b).await);
    assert!(!repository_exists(&cx, &out.repository_name).await);
}

#[tokio::test]
async fn destroy_leaves_nothing_and_a_second_destroy_is_a_no_op() {
    let cx = context("destroy");
    let module = storage(&cx, "");
    let out = module.apply(&cx, &()).await.unwrap();
    let preview = module.plan_destroy(&cx).await.unwrap();
    assert_eq!(
        kinds(&preview, Action::Delete),
        ["repository repository", "bucket log-bucket"]
    );

    let before = cx.calls().snapshot();
    let start = Instant::now();
    let removed = module.destroy(&cx).await.unwrap();
    let calls = cx.calls().snapshot().since(&before);
    eprintln!("destroy against moto: {:?}\n{calls}", start.elapsed());
    assert_eq!(removed, preview);
    assert!(!bucket_exists(&cx, &out.log_bucket).await);
    assert!(!repository_exists(&cx, &out.repository_name).await);
    let buckets = s3(&cx).list_buckets().send().await.unwrap();
    assert!(buckets.buckets().is_empty(), "{buckets:?}");
    let repos = ecr(&cx).describe_repositories().send().await.unwrap();
    assert!(repos.repositories().is_empty(), "{repos:?}");

    assert!(module.plan_destroy(&cx).await.unwrap().is_empty());
    let before = cx.calls().snapshot();
    assert!(module.destroy(&cx).await.unwrap().is_empty());
    assert_eq!(cx.calls().snapshot().since(&before).writes(), 0);
    assert_eq!(module.outputs(&cx).await.unwrap(), None);
    // And it can be built again.
    assert_eq!(module.plan(&cx, &()).await.unwrap().counts().create, 2);
}

#[tokio::test]
async fn a_bucket_or_repository_of_another_stack_is_left_alone() {
    let cx = context("mine");
    let s3c = s3(&cx);
    s3c.create_bucket()
        .bucket("shared-logs-q7")
        .create_bucket_configuration(
            aws_sdk_s3::types::CreateBucketConfiguration::builder()
                .location_constraint(aws_sdk_s3::types::BucketLocationConstraint::EuWest1)
                .build(),
        )
        .send()
        .await
        .unwrap();
    s3c.put_bucket_tagging()
        .bucket("shared-logs-q7")
        .tagging(
            Tagging::builder()
                .tag_set(
                    Tag::builder()
                        .key("stackproof:stack")
                        .value("theirs")
                        .build()
                        .unwrap(),
                )
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    let module = storage(&cx, "log-bucket = \"shared-logs-q7\"");
    let before = cx.calls().snapshot();
    let err = module.plan(&cx, &()).await.unwrap_err();
    assert!(
        matches!(err, Error::NotOurs { kind: "bucket", .. }),
        "{err:?}"
    );
    let text = err.to_string();
    assert!(
        text.contains("shared-logs-q7") && text.contains("\"theirs\""),
        "{text}"
    );
    assert!(module.apply(&cx, &()).await.is_err());
    assert!(module.destroy(&cx).await.is_err());
    assert_eq!(cx.calls().snapshot().since(&before).writes(), 0);
    assert!(bucket_exists(&cx, "shared-logs-q7").await);

    // An untagged repository with the stack's name is not adopted either.
    ecr(&cx)
        .create_repository()
        .repository_name("mine/sample-app")
        .send()
        .await
        .unwrap();
    let err = storage(&cx, "").plan(&cx, &()).await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::NotOurs {
                kind: "repository",
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("no stackproof:stack tag"), "{err}");
}

#[tokio::test]
async fn an_interrupted_create_is_resumed() {
    // A crash right after CreateBucket leaves the derived bucket without tags or settings.
    let cx = context("resume");
    let module = storage(&cx, "");
    let account = {
        let plan = module.plan(&cx, &()).await.unwrap();
        let id = plan.changes[0].id.clone().unwrap();
        id.trim_start_matches("resume-alb-logs-")
            .trim_end_matches("-eu-west-1")
            .to_owned()
    };
    let bucket = format!("resume-alb-logs-{account}-eu-west-1");
    s3(&cx)
        .create_bucket()
        .bucket(&bucket)
        .create_bucket_configuration(
            aws_sdk_s3::types::CreateBucketConfiguration::builder()
                .location_constraint(aws_sdk_s3::types::BucketLocationConstraint::EuWest1)
                .build(),
        )
        .send()
        .await
        .unwrap();
    let plan = module.plan(&cx, &()).await.unwrap();
    assert_eq!(
        kinds(&plan, Action::Update),
        ["bucket log-bucket"],
        "{plan}"
    );
    assert_eq!(
        kinds(&plan, Action::Create),
        ["repository repository"],
        "{plan}"
    );
    let out = module.apply(&cx, &()).await.unwrap();
    assert_eq!(out.log_bucket, bucket);
    assert!(module.plan(&cx, &()).await.unwrap().is_empty());
}

#[tokio::test]
async fn a_repository_without_scanning_gets_it_turned_on() {
    // Made by an earlier version of the stack, say: tagged as ours, scanning off, no policy.
    let cx = context("scan-off");
    let ecr = ecr(&cx);
    let tags = ["stackproof:stack", "stackproof:module", "stackproof:name"]
        .into_iter()
        .zip(["scan-off", "storage", "repository"])
        .map(|(k, v)| {
            aws_sdk_ecr::types::Tag::builder()
                .key(k)
                .value(v)
                .build()
                .unwrap()
        });
    ecr.create_repository()
        .repository_name("scan-off/sample-app")
        .set_tags(Some(tags.collect()))
        .send()
        .await
        .unwrap();
    let module = storage(&cx, "");
    let plan = module.plan(&cx, &()).await.unwrap();
    let text = plan.to_string();
    assert!(
        text.contains("~ update storage repository \"repository\""),
        "{text}"
    );
    assert!(text.contains("scan on push false -> true"), "{text}");
    assert!(
        text.contains("tag Name = \"scan-off-repository\""),
        "{text}"
    );
    module.apply(&cx, &()).await.unwrap();
    let repos = ecr
        .describe_repositories()
        .repository_names("scan-off/sample-app")
        .send()
        .await
        .unwrap();
    assert!(
        repos.repositories()[0]
            .image_scanning_configuration()
            .unwrap()
            .scan_on_push()
    );
    assert!(module.plan(&cx, &()).await.unwrap().is_empty());
}
