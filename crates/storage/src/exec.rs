//! Carrying out the steps of a storage plan against S3 and ECR.

use std::collections::BTreeMap;
use std::future::Future;

use aws_sdk_ecr::Client as Ecr;
use aws_sdk_ecr::types::{ImageIdentifier, ImageScanningConfiguration, ImageTagMutability};
use aws_sdk_s3::Client as S3;
use aws_sdk_s3::error::SdkError;
use aws_sdk_s3::operation::put_bucket_policy::PutBucketPolicyError;
use aws_sdk_s3::types::{
    BucketLifecycleConfiguration, BucketLocationConstraint, CreateBucketConfiguration, Delete,
    ExpirationStatus, LifecycleExpiration, LifecycleRule, LifecycleRuleFilter, ObjectIdentifier,
    ObjectOwnership, OwnershipControls, OwnershipControlsRule, PublicAccessBlockConfiguration,
    ServerSideEncryption, ServerSideEncryptionByDefault, ServerSideEncryptionConfiguration,
    ServerSideEncryptionRule, Tagging,
};
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use infra::{Backoff, CallError, Context, Step, aws, built, waited};

use crate::desired::{BucketFix, EXPIRY_RULE, Op, RepoFix};
use crate::error::Error;
use crate::observe::{count_objects, image_digests};

/// The most keys one DeleteObjects call accepts.
const DELETE_BATCH: usize = 1000;
/// The most images one BatchDeleteImage call accepts.
const IMAGE_BATCH: usize = 100;

/// Runs a call on a resource created moments ago, retrying while AWS does not see it yet.
async fn settle<T, E, F, Fut>(
    cx: &Context,
    operation: &'static str,
    resource: &str,
    not_yet: &[&str],
    call: F,
) -> Result<T, Error>
where
    E: std::error::Error + ProvideErrorMetadata + std::fmt::Debug + Send + Sync + 'static,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    Backoff::consistency(cx.waits())
        .retry_codes(format!("{operation} {resource}"), not_yet, call)
        .await
        .map_err(|e| waited(operation, resource)(e).into())
}

pub(crate) async fn step(s3: &S3, ecr: &Ecr, cx: &Context, op: &Op) -> Result<(), Error> {
    match op {
        Op::CreateBucket {
            name,
            region,
            settings,
            ..
        } => {
            create_bucket(s3, cx, name, region).await?;
            for fix in settings {
                put_bucket_setting(s3, cx, name, fix).await?;
            }
            Ok(())
        }
        Op::RepairBucket { name, fixes, .. } => {
            for fix in fixes {
                put_bucket_setting(s3, cx, name, fix).await?;
            }
            Ok(())
        }
        Op::CreateRepository {
            name,
            scan_on_push,
            immutable,
            tags,
            lifecycle,
        } => {
            let what = format!("repository {name}");
            let tags = ecr_tags(tags, &what)?;
            ecr.create_repository()
                .repository_name(name)
                .image_scanning_configuration(
                    ImageScanningConfiguration::builder()
                        .scan_on_push(*scan_on_push)
                        .build(),
                )
                .image_tag_mutability(mutability(*immutable))
                .set_tags(Some(tags))
                .send()
                .await
                .map_err(aws("CreateRepository", &what))?;
            put_repo_setting(ecr, cx, name, "", &RepoFix::Lifecycle(lifecycle.clone())).await
        }
        Op::RepairRepository {
            name, arn, fixes, ..
        } => {
            for fix in fixes {
                put_repo_setting(ecr, cx, name, arn, fix).await?;
            }
            Ok(())
        }
        Op::DeleteRepository { name, images, .. } => delete_repository(ecr, name, *images).await,
        Op::DeleteBucket {
            name,
            objects,
            force,
        } => delete_bucket(s3, cx, name, *objects, *force).await,
    }
}

fn mutability(immutable: bool) -> ImageTagMutability {
    if immutable {
        ImageTagMutability::Immutable
    } else {
        ImageTagMutability::Mutable
    }
}

fn ecr_tags(
    tags: &BTreeMap<String, String>,
    what: &str,
) -> Result<Vec<aws_sdk_ecr::types::Tag>, Error> {
    tags.iter()
        .map(|(k, v)| {
            aws_sdk_ecr::types::Tag::builder()
                .key(k)
                .value(v)
                .build()
                .map_err(built("TagResource", what))
        })
        .collect::<Result<_, _>>()
        .map_err(Error::from)
}

async fn create_bucket(s3: &S3, cx: &Context, name: &str, region: &str) -> Result<(), Error> {
    let mut request = s3.create_bucket().bucket(name);
    // us-east-1 is the one region that takes no location constraint.
    if region != "us-east-1" {
        request = request.create_bucket_configuration(
            CreateBucketConfiguration::builder()
                .location_constraint(BucketLocationConstraint::from(region))
                .build(),
        );
    }
    match request.send().await {
        Ok(_) => Ok(()),
        // Created by an earlier, interrupted run.
        Err(e) if e.code() == Some("BucketAlreadyOwnedByYou") => Ok(()),
        Err(e) if e.code() == Some("BucketAlreadyExists") => Err(Error::NotOurs {
            kind: "bucket",
            name: name.to_owned(),
            stack: cx.stack().to_string(),
            owner: "another AWS account owns it: bucket names are global".to_owned(),
        }),
        Err(e) => Err(aws("CreateBucket", format!("bucket {name}"))(e).into()),
    }
}

/// Error codes that mean the bucket just created is not visible yet.
const BUCKET_NOT_YET: &[&str] = &["NoSuchBucket"];

async fn put_bucket_setting(
    s3: &S3,
    cx: &Context,
    name: &str,
    fix: &BucketFix,
) -> Result<(), Error> {
    let what = format!("bucket {name}");
    match fix {
        BucketFix::Tags(tags) => put_tags(s3, cx, name, &what, tags).await,
        BucketFix::PublicAccessBlock => put_public_access_block(s3, cx, name, &what).await,
        BucketFix::Ownership => put_ownership(s3, cx, name, &what).await,
        BucketFix::Encryption => put_encryption(s3, cx, name, &what).await,
        BucketFix::Lifecycle(days) => put_lifecycle(s3, cx, name, &what, *days).await,
        BucketFix::Policy(policy) => put_policy(s3, cx, name, &what, policy).await,
    }
}

async fn put_tags(
    s3: &S3,
    cx: &Context,
    name: &str,
    what: &str,
    tags: &BTreeMap<String, String>,
) -> Result<(), Error> {
    let set = tags
        .iter()
        .map(|(k, v)| {
            aws_sdk_s3::types::Tag::builder()
                .key(k)
                .value(v)
                .build()
                .map_err(built("PutBucketTagging", what))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let tagging = Tagging::builder()
        .set_tag_set(Some(set))
        .build()
        .map_err(built("PutBucketTagging", what))?;
    settle(cx, "PutBucketTagging", what, BUCKET_NOT_YET, || {
        s3.put_bucket_tagging()
            .bucket(name)
            .tagging(tagging.clone())
            .send()
    })
    .await?;
    Ok(())
}

async fn put_public_access_block(
    s3: &S3,
    cx: &Context,
    name: &str,
    what: &str,
) -> Result<(), Error> {
    let block = PublicAccessBlockConfiguration::builder()
        .block_public_acls(true)
        .ignore_public_acls(true)
        .block_public_policy(true)
        .restrict_public_buckets(true)
        .build();
    settle(cx, "PutPublicAccessBlock", what, BUCKET_NOT_YET, || {
        s3.put_public_access_block()
            .bucket(name)
            .public_access_block_configuration(block.clone())
            .send()
    })
    .await?;
    Ok(())
}

async fn put_ownership(s3: &S3, cx: &Context, name: &str, what: &str) -> Result<(), Error> {
    let controls = OwnershipControls::builder()
        .rules(
            OwnershipControlsRule::builder()
                .object_ownership(ObjectOwnership::BucketOwnerEnforced)
                .build()
                .map_err(built("PutBucketOwnershipControls", what))?,
        )
        .build()
        .map_err(built("PutBucketOwnershipControls", what))?;
    settle(
        cx,
        "PutBucketOwnershipControls",
        what,
        BUCKET_NOT_YET,
        || {
            s3.put_bucket_ownership_controls()
                .bucket(name)
                .ownership_controls(controls.clone())
                .send()
        },
    )
    .await?;
    Ok(())
}

async fn put_encryption(s3: &S3, cx: &Context, name: &str, what: &str) -> Result<(), Error> {
    let by_default = ServerSideEncryptionByDefault::builder()
        .sse_algorithm(ServerSideEncryption::Aes256)
        .build()
        .map_err(built("PutBucketEncryption", what))?;
    let config = ServerSideEncryptionConfiguration::builder()
        .rules(
            ServerSideEncryptionRule::builder()
                .apply_server_side_encryption_by_default(by_default)
                .build(),
        )
        .build()
        .map_err(built("PutBucketEncryption", what))?;
    settle(cx, "PutBucketEncryption", what, BUCKET_NOT_YET, || {
        s3.put_bucket_encryption()
            .bucket(name)
            .server_side_encryption_configuration(config.clone())
            .send()
    })
    .await?;
    Ok(())
}

async fn put_lifecycle(
    s3: &S3,
    cx: &Context,
    name: &str,
    what: &str,
    days: i32,
) -> Result<(), Error> {
    let rule = LifecycleRule::builder()
        .id(EXPIRY_RULE)
        .status(ExpirationStatus::Enabled)
        .filter(LifecycleRuleFilter::builder().prefix("").build())
        .expiration(LifecycleExpiration::builder().days(days).build())
        .build()
        .map_err(built("PutBucketLifecycleConfiguration", what))?;
    let config = BucketLifecycleConfiguration::builder()
        .rules(rule)
        .build()
        .map_err(built("PutBucketLifecycleConfiguration", what))?;
    settle(
        cx,
        "PutBucketLifecycleConfiguration",
        what,
        BUCKET_NOT_YET,
        || {
            s3.put_bucket_lifecycle_configuration()
                .bucket(name)
                .lifecycle_configuration(config.clone())
                .send()
        },
    )
    .await?;
    Ok(())
}

async fn put_policy(
    s3: &S3,
    cx: &Context,
    name: &str,
    what: &str,
    policy: &serde_json::Value,
) -> Result<(), Error> {
    let text = policy.to_string();
    // "Invalid principal" while a principal is not yet known everywhere (IAM
    // propagation) is worth a retry too.
    Backoff::consistency(cx.waits())
        .retry_when(
            format!("PutBucketPolicy {what}"),
            |e: &SdkError<PutBucketPolicyError>| {
                e.code() == Some("NoSuchBucket")
                    || (e.code() == Some("MalformedPolicy")
                        && e.message().is_some_and(|m| m.contains("Invalid principal")))
            },
            || s3.put_bucket_policy().bucket(name).policy(&text).send(),
        )
        .await
        .map_err(waited("PutBucketPolicy", what))?;
    Ok(())
}

/// Error codes that mean the repository just created is not visible yet.
const REPO_NOT_YET: &[&str] = &["RepositoryNotFoundException"];

async fn put_repo_setting(
    ecr: &Ecr,
    cx: &Context,
    name: &str,
    arn: &str,
    fix: &RepoFix,
) -> Result<(), Error> {
    let what = format!("repository {name}");
    match fix {
        RepoFix::Tags(tags) => {
            let tags = ecr_tags(tags, &what)?;
            settle(cx, "TagResource", &what, REPO_NOT_YET, || {
                ecr.tag_resource()
                    .resource_arn(arn)
                    .set_tags(Some(tags.clone()))
                    .send()
            })
            .await?;
        }
        RepoFix::ScanOnPush(on) => {
            settle(
                cx,
                "PutImageScanningConfiguration",
                &what,
                REPO_NOT_YET,
                || {
                    ecr.put_image_scanning_configuration()
                        .repository_name(name)
                        .image_scanning_configuration(
                            ImageScanningConfiguration::builder()
                                .scan_on_push(*on)
                                .build(),
                        )
                        .send()
                },
            )
            .await?;
        }
        RepoFix::Immutable(immutable) => {
            settle(cx, "PutImageTagMutability", &what, REPO_NOT_YET, || {
                ecr.put_image_tag_mutability()
                    .repository_name(name)
                    .image_tag_mutability(mutability(*immutable))
                    .send()
            })
            .await?;
        }
        RepoFix::Lifecycle(policy) => {
            let text = policy.to_string();
            settle(cx, "PutLifecyclePolicy", &what, REPO_NOT_YET, || {
                ecr.put_lifecycle_policy()
                    .repository_name(name)
                    .lifecycle_policy_text(&text)
                    .send()
            })
            .await?;
        }
    }
    Ok(())
}

async fn delete_repository(ecr: &Ecr, name: &str, images: u64) -> Result<(), Error> {
    let what = format!("repository {name}");
    if images > 0 {
        let digests = image_digests(ecr, name).await?;
        for batch in digests.chunks(IMAGE_BATCH) {
            let ids = batch
                .iter()
                .map(|d| ImageIdentifier::builder().image_digest(d).build())
                .collect();
            match ecr
                .batch_delete_image()
                .repository_name(name)
                .set_image_ids(Some(ids))
                .send()
                .await
            {
                Ok(_) => {}
                Err(e) if e.code() == Some("RepositoryNotFoundException") => return Ok(()),
                Err(e) => return Err(aws("BatchDeleteImage", &what)(e).into()),
            }
        }
    }
    // `force` only when emptying was asked for: it also takes images pushed meanwhile.
    match ecr
        .delete_repository()
        .repository_name(name)
        .force(images > 0)
        .send()
        .await
    {
        Ok(_) => Ok(()),
        Err(e) if e.code() == Some("RepositoryNotFoundException") => Ok(()),
        Err(e) if e.code() == Some("RepositoryNotEmptyException") => {
            let count = image_digests(ecr, name).await?.len() as u64;
            Err(Error::NotEmpty {
                kind: "repository",
                name: name.to_owned(),
                count,
                unit: "images (pushed while destroy ran)",
            })
        }
        Err(e) => Err(aws("DeleteRepository", &what)(e).into()),
    }
}

/// Deletes every object version and delete marker in the bucket, 1000 at a time.
async fn empty_bucket(s3: &S3, name: &str) -> Result<(), Error> {
    let what = format!("bucket {name}");
    // Each round lists from the start (what it deleted is gone); bounded like the count.
    for _ in 0..100_000 {
        let out = match s3.list_object_versions().bucket(name).send().await {
            Ok(out) => out,
            Err(e) if e.code() == Some("NoSuchBucket") => return Ok(()),
            Err(e) => return Err(aws("ListObjectVersions", &what)(e).into()),
        };
        let ids = out
            .versions()
            .iter()
            .map(|v| (v.key(), v.version_id()))
            .chain(
                out.delete_markers()
                    .iter()
                    .map(|m| (m.key(), m.version_id())),
            )
            .filter_map(|(key, version)| {
                Some(
                    ObjectIdentifier::builder()
                        .key(key?)
                        .set_version_id(version.map(str::to_owned))
                        .build(),
                )
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(built("DeleteObjects", &what))?;
        if ids.is_empty() {
            return Ok(());
        }
        for batch in ids.chunks(DELETE_BATCH) {
            let delete = Delete::builder()
                .set_objects(Some(batch.to_vec()))
                .quiet(true)
                .build()
                .map_err(built("DeleteObjects", &what))?;
            let out = s3
                .delete_objects()
                .bucket(name)
                .delete(delete)
                .send()
                .await
                .map_err(aws("DeleteObjects", &what))?;
            if let Some(err) = out.errors().first() {
                return Err(Error::Aws(CallError::Failed {
                    operation: "DeleteObjects",
                    resource: format!("{what} key {:?}", err.key().unwrap_or_default()),
                    code: err.code().map(str::to_owned),
                    detail: format!(
                        "{} of {} objects not deleted; first: {}",
                        out.errors().len(),
                        batch.len(),
                        err.message().unwrap_or_default()
                    ),
                }));
            }
        }
    }
    Ok(())
}

async fn delete_bucket(
    s3: &S3,
    cx: &Context,
    name: &str,
    objects: u64,
    force: bool,
) -> Result<(), Error> {
    let what = format!("bucket {name}");
    if objects > 0 && force {
        // The policy goes first: that revokes the load balancer's right to write, so no new
        // log lands while the bucket is emptied. (moto also needs it: it ignores the `Bool`
        // condition and applies the non-TLS deny to every object request, TLS or not; see the
        // integration tests.)
        match s3.delete_bucket_policy().bucket(name).send().await {
            Ok(_) => {}
            Err(e) if e.code() == Some("NoSuchBucket") => return Ok(()),
            Err(e) => return Err(aws("DeleteBucketPolicy", &what)(e).into()),
        }
        empty_bucket(s3, name).await?;
    }
    // A load balancer may still write a last log file: with force-destroy, empty again and
    // retry; without, say how many objects arrived.
    let result = Backoff::dependency(cx.waits())
        .run(format!("DeleteBucket {what}"), || async {
            match s3.delete_bucket().bucket(name).send().await {
                Ok(_) => Step::Done(()),
                Err(e) if e.code() == Some("NoSuchBucket") => Step::Done(()),
                Err(e) if e.code() == Some("BucketNotEmpty") && force => {
                    match empty_bucket(s3, name).await {
                        Ok(()) => Step::Retry("BucketNotEmpty: emptied it again".to_owned()),
                        Err(err) => Step::Retry(format!("BucketNotEmpty; emptying failed: {err}")),
                    }
                }
                Err(e) => Step::Fail(e),
            }
        })
        .await;
    match result {
        Ok(()) => Ok(()),
        Err(infra::WaitError::Failed(e)) if e.code() == Some("BucketNotEmpty") => {
            Err(Error::NotEmpty {
                kind: "bucket",
                name: name.to_owned(),
                count: count_objects(s3, name).await?,
                unit: "objects (written while destroy ran)",
            })
        }
        Err(e) => Err(waited("DeleteBucket", &what)(e).into()),
    }
}

#[cfg(test)]
mod tests {
    //! The error paths moto cannot produce, with mocked S3 responses.

    use aws_sdk_s3::operation::create_bucket::{CreateBucketError, CreateBucketOutput};
    use aws_sdk_s3::operation::delete_bucket::{DeleteBucketError, DeleteBucketOutput};
    use aws_sdk_s3::operation::delete_objects::DeleteObjectsOutput;
    use aws_sdk_s3::operation::list_object_versions::ListObjectVersionsOutput;
    use aws_sdk_s3::operation::put_bucket_tagging::{
        PutBucketTaggingError, PutBucketTaggingOutput,
    };
    use aws_sdk_s3::types::ObjectVersion;
    use aws_smithy_mocks::{RuleMode, mock, mock_client};
    use aws_smithy_types::error::ErrorMetadata;
    use infra::StackName;

    use super::*;

    fn meta(code: &str, message: &str) -> ErrorMetadata {
        ErrorMetadata::builder().code(code).message(message).build()
    }

    fn cx() -> Context {
        Context::mocked(StackName::new("mock").unwrap()).build()
    }

    fn one_version() -> ListObjectVersionsOutput {
        ListObjectVersionsOutput::builder()
            .versions(
                ObjectVersion::builder()
                    .key("alb/AWSLogs/1/late.log.gz")
                    .version_id("null")
                    .build(),
            )
            .is_truncated(false)
            .build()
    }

    #[tokio::test(start_paused = true)]
    async fn a_log_written_during_destroy_stops_it_without_force() {
        let refused = mock!(aws_sdk_s3::Client::delete_bucket).then_error(|| {
            DeleteBucketError::generic(meta(
                "BucketNotEmpty",
                "The bucket you tried to delete is not empty",
            ))
        });
        let listed = mock!(aws_sdk_s3::Client::list_object_versions).then_output(one_version);
        let s3 = mock_client!(aws_sdk_s3, RuleMode::MatchAny, [&refused, &listed]);
        let err = delete_bucket(&s3, &cx(), "logs", 0, false)
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                Error::NotEmpty {
                    count: 1,
                    kind: "bucket",
                    ..
                }
            ),
            "{err:?}"
        );
        let text = err.to_string();
        assert!(
            text.contains("written while destroy ran") && text.contains("force-destroy = true"),
            "{text}"
        );
        assert_eq!(refused.num_calls(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn with_force_a_late_log_is_deleted_and_the_delete_retried() {
        let delete = mock!(aws_sdk_s3::Client::delete_bucket)
            .sequence()
            .error(|| DeleteBucketError::generic(meta("BucketNotEmpty", "not empty")))
            .output(|| DeleteBucketOutput::builder().build())
            .build();
        let listed = mock!(aws_sdk_s3::Client::list_object_versions)
            .sequence()
            .output(one_version)
            .output(|| {
                ListObjectVersionsOutput::builder()
                    .is_truncated(false)
                    .build()
            })
            .build();
        let deleted = mock!(aws_sdk_s3::Client::delete_objects)
            .then_output(|| DeleteObjectsOutput::builder().build());
        let s3 = mock_client!(aws_sdk_s3, RuleMode::MatchAny, [&delete, &listed, &deleted]);
        delete_bucket(&s3, &cx(), "logs", 0, true).await.unwrap();
        assert_eq!(
            (delete.num_calls(), listed.num_calls(), deleted.num_calls()),
            (2, 2, 1)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_bucket_not_yet_visible_after_create_is_waited_for() {
        let created = mock!(aws_sdk_s3::Client::create_bucket)
            .then_output(|| CreateBucketOutput::builder().build());
        let tagged = mock!(aws_sdk_s3::Client::put_bucket_tagging)
            .sequence()
            .error(|| PutBucketTaggingError::generic(meta("NoSuchBucket", "not yet")))
            .times(2)
            .output(|| PutBucketTaggingOutput::builder().build())
            .build();
        let s3 = mock_client!(aws_sdk_s3, RuleMode::MatchAny, [&created, &tagged]);
        let cx = cx();
        create_bucket(&s3, &cx, "logs", "eu-west-1").await.unwrap();
        let tags = BTreeMap::from([("k".to_owned(), "v".to_owned())]);
        put_bucket_setting(&s3, &cx, "logs", &BucketFix::Tags(tags))
            .await
            .unwrap();
        assert_eq!(tagged.num_calls(), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn a_bucket_name_taken_by_another_account_is_not_ours() {
        let taken = mock!(aws_sdk_s3::Client::create_bucket).then_error(|| {
            CreateBucketError::generic(meta("BucketAlreadyExists", "name not available"))
        });
        let s3 = mock_client!(aws_sdk_s3, [&taken]);
        let err = create_bucket(&s3, &cx(), "logs", "eu-west-1")
            .await
            .unwrap_err();
        assert!(
            matches!(err, Error::NotOurs { kind: "bucket", .. }),
            "{err:?}"
        );
        assert!(err.to_string().contains("another AWS account"), "{err}");
    }
}
