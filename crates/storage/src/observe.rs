//! Reading what exists: the account id, the access-log bucket (found by its name, checked by
//! its tags; S3 cannot list buckets by tag) and the ECR repository (found by name, checked by
//! tags), with every setting the module manages.

use std::collections::BTreeMap;

use aws_sdk_ecr::Client as Ecr;
use aws_sdk_s3::Client as S3;
use aws_sdk_sts::Client as Sts;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use infra::tags;
use serde_json::Value;

use crate::error::Error;
use infra::aws;

/// The bucket's public access block: (block ACLs, ignore ACLs, block policy, restrict buckets).
pub(crate) type PublicAccess = [bool; 4];

/// One lifecycle rule, reduced to what the module compares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ExpiryRule {
    pub(crate) id: String,
    pub(crate) enabled: bool,
    /// The key prefix it applies to ("" for the whole bucket).
    pub(crate) prefix: String,
    pub(crate) days: Option<i32>,
}

/// The access-log bucket as it is.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct BucketState {
    pub(crate) name: String,
    pub(crate) tags: BTreeMap<String, String>,
    pub(crate) public_access: Option<PublicAccess>,
    pub(crate) ownership: Option<String>,
    /// The default encryption algorithm (`AES256`, `aws:kms`, ...).
    pub(crate) encryption: Option<String>,
    pub(crate) lifecycle: Vec<ExpiryRule>,
    /// The policy as JSON (a JSON string when AWS returned something that does not parse).
    pub(crate) policy: Option<Value>,
}

/// The repository as it is.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RepoState {
    pub(crate) name: String,
    pub(crate) arn: String,
    pub(crate) uri: String,
    pub(crate) tags: BTreeMap<String, String>,
    pub(crate) scan_on_push: bool,
    pub(crate) immutable: bool,
    pub(crate) lifecycle: Option<Value>,
}

/// Everything of the stack's storage that exists.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Observed {
    pub(crate) bucket: Option<BucketState>,
    pub(crate) repo: Option<RepoState>,
}

/// The account the credentials belong to (STS GetCallerIdentity).
pub(crate) async fn account_id(sts: &Sts) -> Result<String, Error> {
    let out = sts
        .get_caller_identity()
        .send()
        .await
        .map_err(aws("GetCallerIdentity", "the caller"))?;
    out.account()
        .map(str::to_owned)
        .ok_or_else(|| Error::Incomplete {
            operation: "GetCallerIdentity",
            resource: "the caller".to_owned(),
            field: "an account id",
        })
}

/// Maps "not there" error codes to `None`.
fn absent<T, E: ProvideErrorMetadata>(
    result: Result<T, E>,
    codes: &[&str],
) -> Result<Option<T>, E> {
    match result {
        Ok(v) => Ok(Some(v)),
        Err(e) if e.code().is_some_and(|c| codes.contains(&c)) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Reads the bucket `name`, or `None` when there is none.
pub(crate) async fn bucket(s3: &S3, stack: &str, name: &str) -> Result<Option<BucketState>, Error> {
    let what = format!("bucket {name}");
    // GetBucketTagging tells the three cases apart in one read: NoSuchBucket (absent),
    // NoSuchTagSet (ours, untagged), AccessDenied (another account's).
    let tagging = match s3.get_bucket_tagging().bucket(name).send().await {
        Ok(out) => Some(out),
        Err(e) if e.code() == Some("NoSuchBucket") => return Ok(None),
        Err(e) if e.code() == Some("NoSuchTagSet") => None,
        Err(e) if e.code() == Some("AccessDenied") => {
            return Err(Error::NotOurs {
                kind: "bucket",
                name: name.to_owned(),
                stack: stack.to_owned(),
                owner: "reading its tags was denied: another AWS account owns the name (bucket names are global), or these credentials lack s3:GetBucketTagging".to_owned(),
            });
        }
        Err(e) => return Err(aws("GetBucketTagging", &what)(e).into()),
    };
    let tags = tagging
        .map(|t| {
            t.tag_set()
                .iter()
                .map(|t| (t.key().to_owned(), t.value().to_owned()))
                .collect()
        })
        .unwrap_or_default();
    let (public, ownership, encryption, lifecycle, policy) = tokio::try_join!(
        async {
            absent(
                s3.get_public_access_block().bucket(name).send().await,
                &["NoSuchPublicAccessBlockConfiguration"],
            )
            .map_err(aws("GetPublicAccessBlock", &what))
        },
        async {
            absent(
                s3.get_bucket_ownership_controls().bucket(name).send().await,
                &["OwnershipControlsNotFoundError"],
            )
            .map_err(aws("GetBucketOwnershipControls", &what))
        },
        async {
            absent(
                s3.get_bucket_encryption().bucket(name).send().await,
                &["ServerSideEncryptionConfigurationNotFoundError"],
            )
            .map_err(aws("GetBucketEncryption", &what))
        },
        async {
            absent(
                s3.get_bucket_lifecycle_configuration()
                    .bucket(name)
                    .send()
                    .await,
                &["NoSuchLifecycleConfiguration"],
            )
            .map_err(aws("GetBucketLifecycleConfiguration", &what))
        },
        async {
            absent(
                s3.get_bucket_policy().bucket(name).send().await,
                &["NoSuchBucketPolicy"],
            )
            .map_err(aws("GetBucketPolicy", &what))
        },
    )?;
    let public_access = public
        .and_then(|p| p.public_access_block_configuration().cloned())
        .map(|c| {
            [
                c.block_public_acls().unwrap_or(false),
                c.ignore_public_acls().unwrap_or(false),
                c.block_public_policy().unwrap_or(false),
                c.restrict_public_buckets().unwrap_or(false),
            ]
        });
    let ownership = ownership.and_then(|o| {
        o.ownership_controls()
            .and_then(|c| c.rules().first())
            .map(|r| r.object_ownership().as_str().to_owned())
    });
    let encryption = encryption.and_then(|e| {
        e.server_side_encryption_configuration()
            .and_then(|c| c.rules().first())
            .and_then(|r| r.apply_server_side_encryption_by_default())
            .map(|d| d.sse_algorithm().as_str().to_owned())
    });
    let lifecycle = lifecycle
        .map(|l| {
            l.rules()
                .iter()
                .map(|r| ExpiryRule {
                    id: r.id().unwrap_or_default().to_owned(),
                    enabled: r.status().as_str() == "Enabled",
                    prefix: rule_prefix(r).to_owned(),
                    days: r.expiration().and_then(|e| e.days()),
                })
                .collect()
        })
        .unwrap_or_default();
    let policy = policy
        .and_then(|p| p.policy().map(str::to_owned))
        .map(|text| serde_json::from_str::<Value>(&text).unwrap_or(Value::String(text)));
    Ok(Some(BucketState {
        name: name.to_owned(),
        tags,
        public_access,
        ownership,
        encryption,
        lifecycle,
        policy,
    }))
}

/// The key prefix a lifecycle rule applies to: its filter's, or the old top-level one.
#[allow(deprecated)]
fn rule_prefix(rule: &aws_sdk_s3::types::LifecycleRule) -> &str {
    rule.filter()
        .and_then(|f| f.prefix())
        .or(rule.prefix())
        .unwrap_or_default()
}

/// Reads the repository `name`, or `None` when there is none.
pub(crate) async fn repository(ecr: &Ecr, name: &str) -> Result<Option<RepoState>, Error> {
    let what = format!("repository {name}");
    let described = absent(
        ecr.describe_repositories()
            .repository_names(name)
            .send()
            .await,
        &["RepositoryNotFoundException"],
    )
    .map_err(aws("DescribeRepositories", &what))?;
    let Some(repo) = described.and_then(|d| d.repositories().first().cloned()) else {
        return Ok(None);
    };
    let arn = repo
        .repository_arn()
        .ok_or_else(|| Error::Incomplete {
            operation: "DescribeRepositories",
            resource: what.clone(),
            field: "the repository ARN",
        })?
        .to_owned();
    let (tag_list, lifecycle) = tokio::try_join!(
        async {
            ecr.list_tags_for_resource()
                .resource_arn(&arn)
                .send()
                .await
                .map_err(aws("ListTagsForResource", &what))
        },
        async {
            absent(
                ecr.get_lifecycle_policy()
                    .repository_name(name)
                    .send()
                    .await,
                &["LifecyclePolicyNotFoundException"],
            )
            .map_err(aws("GetLifecyclePolicy", &what))
        },
    )?;
    let lifecycle = lifecycle
        .and_then(|l| l.lifecycle_policy_text().map(str::to_owned))
        .map(|text| serde_json::from_str::<Value>(&text).unwrap_or(Value::String(text)));
    Ok(Some(RepoState {
        name: name.to_owned(),
        uri: repo.repository_uri().unwrap_or_default().to_owned(),
        tags: tag_list
            .tags()
            .iter()
            .map(|t| (t.key().to_owned(), t.value().to_owned()))
            .collect(),
        scan_on_push: repo
            .image_scanning_configuration()
            .is_some_and(|c| c.scan_on_push()),
        immutable: repo
            .image_tag_mutability()
            .is_some_and(|m| m.as_str().starts_with("IMMUTABLE")),
        lifecycle,
        arn,
    }))
}

/// Checks that a found resource is the stack's. Its `stackproof:stack` tag must name the
/// stack; a resource without the tag is adopted only when `adopt_untagged` (a bucket whose
/// name the stack derives, which an interrupted create can leave without tags).
pub(crate) fn check_owner(
    kind: &'static str,
    name: &str,
    found: &BTreeMap<String, String>,
    stack: &str,
    adopt_untagged: bool,
) -> Result<(), Error> {
    match found.get(tags::STACK) {
        Some(owner) if owner == stack => Ok(()),
        None if adopt_untagged => Ok(()),
        owner => Err(Error::NotOurs {
            kind,
            name: name.to_owned(),
            stack: stack.to_owned(),
            owner: match owner {
                Some(o) => format!("its {} tag is {o:?}", tags::STACK),
                None => format!("it has no {} tag", tags::STACK),
            },
        }),
    }
}

/// What destroy finds inside: object versions and delete markers, or images.
pub(crate) async fn count_objects(s3: &S3, name: &str) -> Result<u64, Error> {
    let what = format!("bucket {name}");
    let mut count = 0u64;
    let mut key_marker: Option<String> = None;
    let mut version_marker: Option<String> = None;
    // Bounded: 100 000 pages of 1000 is 10^8 objects.
    for _ in 0..100_000 {
        let out = match s3
            .list_object_versions()
            .bucket(name)
            .set_key_marker(key_marker.clone())
            .set_version_id_marker(version_marker.clone())
            .send()
            .await
        {
            Ok(out) => out,
            Err(e) if e.code() == Some("NoSuchBucket") => return Ok(count),
            Err(e) => return Err(aws("ListObjectVersions", &what)(e).into()),
        };
        count += (out.versions().len() + out.delete_markers().len()) as u64;
        if out.is_truncated() != Some(true) {
            break;
        }
        key_marker = out.next_key_marker().map(str::to_owned);
        version_marker = out.next_version_id_marker().map(str::to_owned);
        if key_marker.is_none() && version_marker.is_none() {
            break;
        }
    }
    Ok(count)
}

/// The image digests in repository `name` (each image once, tagged or not).
pub(crate) async fn image_digests(ecr: &Ecr, name: &str) -> Result<Vec<String>, Error> {
    let what = format!("repository {name}");
    let mut digests = Vec::new();
    let mut token: Option<String> = None;
    for _ in 0..100_000 {
        let out = match ecr
            .list_images()
            .repository_name(name)
            .set_next_token(token.clone())
            .send()
            .await
        {
            Ok(out) => out,
            Err(e) if e.code() == Some("RepositoryNotFoundException") => break,
            Err(e) => return Err(aws("ListImages", &what)(e).into()),
        };
        digests.extend(
            out.image_ids()
                .iter()
                .filter_map(|i| i.image_digest().map(str::to_owned)),
        );
        token = out.next_token().map(str::to_owned);
        if token.is_none() {
            break;
        }
    }
    digests.sort();
    digests.dedup();
    Ok(digests)
}

#[cfg(test)]
mod tests {
    use aws_sdk_s3::operation::get_bucket_tagging::GetBucketTaggingError;
    use aws_smithy_mocks::{mock, mock_client};
    use aws_smithy_types::error::ErrorMetadata;

    use super::*;

    #[tokio::test]
    async fn a_bucket_whose_tags_cannot_be_read_is_not_ours() {
        let denied = mock!(aws_sdk_s3::Client::get_bucket_tagging).then_error(|| {
            GetBucketTaggingError::generic(
                ErrorMetadata::builder()
                    .code("AccessDenied")
                    .message("Access Denied")
                    .build(),
            )
        });
        let s3 = mock_client!(aws_sdk_s3, [&denied]);
        let err = bucket(&s3, "demo", "logs").await.unwrap_err();
        assert!(
            matches!(&err, Error::NotOurs { kind: "bucket", .. }),
            "{err:?}"
        );
        assert!(err.to_string().contains("another AWS account"), "{err}");
    }
}
