//! What the configuration asks of the account, and the ordered operations that take what
//! exists there. Pure: plan and apply share [`diff`], destroy and its preview share
//! [`teardown`].

use std::collections::BTreeMap;

use infra::{Action, Change, Context};
use serde_json::Value;

use crate::config::{LogBucket, StorageSpec, derived_bucket_name, repository_name};
use crate::error::Error;
use crate::observe::{BucketState, ExpiryRule, Observed, RepoState, check_owner};
use crate::policy::{
    LogDeliveryPrincipal, bucket_policy, log_key_prefix, repository_lifecycle_policy, same_policy,
};

/// The module name, also its `stackproof:module` tag.
pub(crate) const MODULE: &str = "storage";
/// Logical names (the `stackproof:name` tags).
pub(crate) const LOG_BUCKET: &str = "log-bucket";
pub(crate) const REPOSITORY: &str = "repository";
/// The id of the lifecycle rule that expires access logs.
pub(crate) const EXPIRY_RULE: &str = "expire-access-logs";
/// Default encryption: SSE-S3, the only kind ALB access logs support.
pub(crate) const ENCRYPTION: &str = "AES256";
/// Object ownership: ACLs off, the bucket owner owns every object.
pub(crate) const OWNERSHIP: &str = "BucketOwnerEnforced";

/// Everything the configuration asks for, with names resolved for the account.
#[derive(Debug, Clone, PartialEq)]
pub struct Desired {
    pub(crate) region: String,
    pub(crate) account_id: String,
    pub(crate) bucket: String,
    /// True when the bucket name is the derived one: a bucket of that name without tags is
    /// the stack's own, left untagged by an interrupted create.
    pub(crate) adopt_untagged_bucket: bool,
    pub(crate) log_prefix: String,
    pub(crate) expire_days: i32,
    pub(crate) policy: Value,
    pub(crate) bucket_tags: BTreeMap<String, String>,
    pub(crate) repo: String,
    pub(crate) scan_on_push: bool,
    pub(crate) immutable: bool,
    pub(crate) repo_lifecycle: Value,
    pub(crate) repo_tags: BTreeMap<String, String>,
}

impl Desired {
    pub(crate) fn new(cx: &Context, spec: &StorageSpec, account_id: &str) -> Desired {
        let stack = cx.stack().as_str();
        let region = cx.region();
        let (bucket, adopt_untagged_bucket) = match &spec.log_bucket {
            LogBucket::Derived => (derived_bucket_name(stack, account_id, region), true),
            LogBucket::Named(name) => (name.clone(), false),
        };
        Desired {
            region: region.to_owned(),
            account_id: account_id.to_owned(),
            policy: bucket_policy(&bucket, &spec.log_prefix, account_id, region),
            bucket,
            adopt_untagged_bucket,
            log_prefix: spec.log_prefix.clone(),
            expire_days: spec.log_expire_days,
            bucket_tags: cx.tags(MODULE, LOG_BUCKET),
            repo: repository_name(stack),
            scan_on_push: spec.scan_on_push,
            immutable: spec.immutable_tags,
            repo_lifecycle: repository_lifecycle_policy(spec.keep_images),
            repo_tags: cx.tags(MODULE, REPOSITORY),
        }
    }

    fn expiry(&self) -> ExpiryRule {
        ExpiryRule {
            id: EXPIRY_RULE.to_owned(),
            enabled: true,
            prefix: String::new(),
            days: Some(self.expire_days),
        }
    }

    fn policy_line(&self) -> String {
        let who = match LogDeliveryPrincipal::for_region(&self.region) {
            LogDeliveryPrincipal::Account { arn, .. } => {
                format!("the {} Elastic Load Balancing account {arn}", self.region)
            }
            LogDeliveryPrincipal::Service => {
                format!("the service {}", crate::policy::LOG_DELIVERY_SERVICE)
            }
        };
        format!(
            "policy: deny requests without TLS; allow {who} to put objects under {}",
            log_key_prefix(&self.log_prefix, &self.account_id)
        )
    }
}

/// One setting of the bucket to put in place.
#[derive(Debug, Clone, PartialEq)]
pub enum BucketFix {
    /// Put this whole tag set (S3 replaces the set: it holds the tags found too).
    Tags(BTreeMap<String, String>),
    /// Block all four kinds of public access.
    PublicAccessBlock,
    /// Object ownership [`OWNERSHIP`].
    Ownership,
    /// Default encryption [`ENCRYPTION`].
    Encryption,
    /// The one lifecycle rule: expire objects after this many days.
    Lifecycle(i32),
    /// This bucket policy.
    Policy(Value),
}

/// One setting of the repository to put in place.
#[derive(Debug, Clone, PartialEq)]
pub enum RepoFix {
    /// Add these tags.
    Tags(BTreeMap<String, String>),
    ScanOnPush(bool),
    Immutable(bool),
    Lifecycle(Value),
}

/// One step of an apply or destroy, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    /// Create the bucket, then put every setting (tags first).
    CreateBucket {
        name: String,
        region: String,
        settings: Vec<BucketFix>,
        details: Vec<String>,
    },
    /// Put the settings that drifted; `lines` say what differed.
    RepairBucket {
        name: String,
        fixes: Vec<BucketFix>,
        lines: Vec<String>,
    },
    CreateRepository {
        name: String,
        scan_on_push: bool,
        immutable: bool,
        tags: BTreeMap<String, String>,
        lifecycle: Value,
    },
    RepairRepository {
        name: String,
        arn: String,
        fixes: Vec<RepoFix>,
        lines: Vec<String>,
    },
    /// Delete the repository, deleting its `images` first when there are any (force-destroy
    /// only).
    DeleteRepository {
        name: String,
        arn: String,
        images: u64,
    },
    /// Delete the bucket, deleting its `objects` (all versions and delete markers) first when
    /// there are any (force-destroy only; with it, objects written meanwhile go too).
    DeleteBucket {
        name: String,
        objects: u64,
        force: bool,
    },
}

impl Op {
    /// How the step shows in a plan.
    pub(crate) fn change(&self) -> Change {
        let bucket = |action| Change::new(action, MODULE, "bucket", LOG_BUCKET);
        let repo = |action| Change::new(action, MODULE, "repository", REPOSITORY);
        let with = |mut c: Change, lines: &[String]| {
            c.details.extend(lines.iter().cloned());
            c
        };
        match self {
            Op::CreateBucket { name, details, .. } => {
                with(bucket(Action::Create).id(name), details)
            }
            Op::RepairBucket { name, lines, .. } => with(bucket(Action::Update).id(name), lines),
            Op::CreateRepository {
                name,
                scan_on_push,
                immutable,
                lifecycle,
                ..
            } => repo(Action::Create)
                .id(name)
                .detail(format!("scan on push {scan_on_push}"))
                .detail(format!(
                    "tag mutability {}",
                    if *immutable { "IMMUTABLE" } else { "MUTABLE" }
                ))
                .detail(format!(
                    "lifecycle: keep the newest {} images",
                    lifecycle["rules"][0]["selection"]["countNumber"]
                )),
            Op::RepairRepository { arn, lines, .. } => with(repo(Action::Update).id(arn), lines),
            Op::DeleteRepository { arn, images, .. } => {
                let c = repo(Action::Delete).id(arn);
                if *images > 0 {
                    c.detail(format!("first delete its {images} images (force-destroy)"))
                } else {
                    c
                }
            }
            Op::DeleteBucket { name, objects, .. } => {
                let c = bucket(Action::Delete).id(name);
                if *objects > 0 {
                    c.detail(format!(
                        "first delete its policy (no more log writes) and its {objects} objects, all versions and delete markers (force-destroy)"
                    ))
                } else {
                    c
                }
            }
        }
    }
}

fn bucket_settings(desired: &Desired) -> (Vec<BucketFix>, Vec<String>) {
    (
        vec![
            BucketFix::Tags(desired.bucket_tags.clone()),
            BucketFix::PublicAccessBlock,
            BucketFix::Ownership,
            BucketFix::Encryption,
            BucketFix::Lifecycle(desired.expire_days),
            BucketFix::Policy(desired.policy.clone()),
        ],
        vec![
            format!("bucket {} in {}", desired.bucket, desired.region),
            "block all public access".to_owned(),
            format!("object ownership {OWNERSHIP}"),
            format!("default encryption {ENCRYPTION} (SSE-S3)"),
            format!("expire objects after {} days", desired.expire_days),
            desired.policy_line(),
        ],
    )
}

fn show_rules(rules: &[ExpiryRule]) -> String {
    if rules.is_empty() {
        return "(none)".to_owned();
    }
    rules
        .iter()
        .map(|r| {
            format!(
                "{}{}{}{}",
                r.id,
                if r.enabled { "" } else { " (disabled)" },
                if r.prefix.is_empty() {
                    String::new()
                } else {
                    format!(" prefix {:?}", r.prefix)
                },
                r.days
                    .map(|d| format!(" expire after {d} days"))
                    .unwrap_or_default()
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn repair_bucket(desired: &Desired, have: &BucketState) -> Option<Op> {
    let mut fixes = Vec::new();
    let mut lines = Vec::new();
    let missing = infra::tags::missing(&desired.bucket_tags, &have.tags);
    if !missing.is_empty() {
        let mut all = have.tags.clone();
        all.extend(desired.bucket_tags.clone());
        lines.extend(missing.iter().map(|(k, v)| format!("tag {k} = {v:?}")));
        fixes.push(BucketFix::Tags(all));
    }
    if have.public_access != Some([true; 4]) {
        let was = match have.public_access {
            None => "(none)".to_owned(),
            Some([a, b, c, d]) => format!(
                "block-public-acls {a}, ignore-public-acls {b}, block-public-policy {c}, restrict-public-buckets {d}"
            ),
        };
        lines.push(format!("public access block {was} -> all on"));
        fixes.push(BucketFix::PublicAccessBlock);
    }
    if have.ownership.as_deref() != Some(OWNERSHIP) {
        lines.push(format!(
            "object ownership {} -> {OWNERSHIP}",
            have.ownership.as_deref().unwrap_or("(none)")
        ));
        fixes.push(BucketFix::Ownership);
    }
    if have.encryption.as_deref() != Some(ENCRYPTION) {
        lines.push(format!(
            "default encryption {} -> {ENCRYPTION}",
            have.encryption.as_deref().unwrap_or("(none)")
        ));
        fixes.push(BucketFix::Encryption);
    }
    let want = desired.expiry();
    if have.lifecycle != [want.clone()] {
        lines.push(format!(
            "lifecycle {} -> {} expire after {} days",
            show_rules(&have.lifecycle),
            want.id,
            desired.expire_days
        ));
        fixes.push(BucketFix::Lifecycle(desired.expire_days));
    }
    let policy_ok = have
        .policy
        .as_ref()
        .is_some_and(|p| same_policy(p, &desired.policy));
    if !policy_ok {
        lines.push(format!(
            "bucket {} -> {}",
            if have.policy.is_some() {
                "policy differs"
            } else {
                "policy (none)"
            },
            desired.policy_line()
        ));
        fixes.push(BucketFix::Policy(desired.policy.clone()));
    }
    (!fixes.is_empty()).then(|| Op::RepairBucket {
        name: have.name.clone(),
        fixes,
        lines,
    })
}

fn repair_repository(desired: &Desired, have: &RepoState) -> Option<Op> {
    let mut fixes = Vec::new();
    let mut lines = Vec::new();
    let missing = infra::tags::missing(&desired.repo_tags, &have.tags);
    if !missing.is_empty() {
        lines.extend(missing.iter().map(|(k, v)| format!("tag {k} = {v:?}")));
        fixes.push(RepoFix::Tags(
            missing
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
        ));
    }
    if have.scan_on_push != desired.scan_on_push {
        lines.push(format!(
            "scan on push {} -> {}",
            have.scan_on_push, desired.scan_on_push
        ));
        fixes.push(RepoFix::ScanOnPush(desired.scan_on_push));
    }
    if have.immutable != desired.immutable {
        let show = |i: bool| if i { "IMMUTABLE" } else { "MUTABLE" };
        lines.push(format!(
            "tag mutability {} -> {}",
            show(have.immutable),
            show(desired.immutable)
        ));
        fixes.push(RepoFix::Immutable(desired.immutable));
    }
    let lifecycle_ok = have
        .lifecycle
        .as_ref()
        .is_some_and(|p| same_policy(p, &desired.repo_lifecycle));
    if !lifecycle_ok {
        let count = |p: &Value| p["rules"][0]["selection"]["countNumber"].to_string();
        lines.push(format!(
            "lifecycle policy {} -> keep the newest {} images",
            match &have.lifecycle {
                None => "(none)".to_owned(),
                Some(p) => format!("keeping {} (or other rules)", count(p)),
            },
            count(&desired.repo_lifecycle)
        ));
        fixes.push(RepoFix::Lifecycle(desired.repo_lifecycle.clone()));
    }
    (!fixes.is_empty()).then(|| Op::RepairRepository {
        name: have.name.clone(),
        arn: have.arn.clone(),
        fixes,
        lines,
    })
}

/// Checks that what was found is the stack's (see [`check_owner`]).
pub(crate) fn check_owners(
    cx: &Context,
    desired: &Desired,
    observed: &Observed,
) -> Result<(), Error> {
    let stack = cx.stack().as_str();
    if let Some(b) = &observed.bucket {
        check_owner(
            "bucket",
            &b.name,
            &b.tags,
            stack,
            desired.adopt_untagged_bucket,
        )?;
    }
    if let Some(r) = &observed.repo {
        check_owner("repository", &r.name, &r.tags, stack, false)?;
    }
    Ok(())
}

/// The steps that take `observed` to `desired`. Pure: no AWS call.
pub(crate) fn diff(cx: &Context, desired: &Desired, observed: &Observed) -> Result<Vec<Op>, Error> {
    check_owners(cx, desired, observed)?;
    let mut ops = Vec::new();
    match &observed.bucket {
        None => {
            let (settings, details) = bucket_settings(desired);
            ops.push(Op::CreateBucket {
                name: desired.bucket.clone(),
                region: desired.region.clone(),
                settings,
                details,
            });
        }
        Some(have) => ops.extend(repair_bucket(desired, have)),
    }
    match &observed.repo {
        None => ops.push(Op::CreateRepository {
            name: desired.repo.clone(),
            scan_on_push: desired.scan_on_push,
            immutable: desired.immutable,
            tags: desired.repo_tags.clone(),
            lifecycle: desired.repo_lifecycle.clone(),
        }),
        Some(have) => ops.extend(repair_repository(desired, have)),
    }
    Ok(ops)
}

/// What the bucket and repository hold, counted before a destroy.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Contents {
    pub(crate) objects: u64,
    pub(crate) images: u64,
}

/// The steps that delete what exists: the repository, then the bucket, each emptied first when
/// it holds something and `force` is set. Without `force`, a non-empty one is an error and
/// nothing is deleted.
pub(crate) fn teardown(
    observed: &Observed,
    contents: Contents,
    force: bool,
) -> Result<Vec<Op>, Error> {
    if !force {
        if let Some(b) = observed.bucket.as_ref().filter(|_| contents.objects > 0) {
            return Err(Error::NotEmpty {
                kind: "bucket",
                name: b.name.clone(),
                count: contents.objects,
                unit: "objects (versions and delete markers included)",
            });
        }
        if let Some(r) = observed.repo.as_ref().filter(|_| contents.images > 0) {
            return Err(Error::NotEmpty {
                kind: "repository",
                name: r.name.clone(),
                count: contents.images,
                unit: "images",
            });
        }
    }
    let mut ops = Vec::new();
    if let Some(r) = &observed.repo {
        ops.push(Op::DeleteRepository {
            name: r.name.clone(),
            arn: r.arn.clone(),
            images: contents.images,
        });
    }
    if let Some(b) = &observed.bucket {
        ops.push(Op::DeleteBucket {
            name: b.name.clone(),
            objects: contents.objects,
            force,
        });
    }
    Ok(ops)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn observed() -> Observed {
        Observed {
            bucket: Some(BucketState {
                name: "logs".to_owned(),
                ..BucketState::default()
            }),
            repo: Some(RepoState {
                name: "demo/sample-app".to_owned(),
                arn: "arn:repo".to_owned(),
                ..RepoState::default()
            }),
        }
    }

    #[test]
    fn teardown_refuses_before_deleting_anything_and_names_the_bucket_first() {
        let both = Contents {
            objects: 3,
            images: 2,
        };
        let err = teardown(&observed(), both, false).unwrap_err();
        assert!(
            matches!(
                &err,
                Error::NotEmpty {
                    kind: "bucket",
                    count: 3,
                    ..
                }
            ),
            "{err:?}"
        );
        let images = Contents {
            objects: 0,
            images: 2,
        };
        let err = teardown(&observed(), images, false).unwrap_err();
        assert!(
            matches!(
                &err,
                Error::NotEmpty {
                    kind: "repository",
                    count: 2,
                    ..
                }
            ),
            "{err:?}"
        );
        // Empty ones go without force: the repository first, then the bucket.
        let ops = teardown(&observed(), Contents::default(), false).unwrap();
        let kinds: Vec<String> = ops.iter().map(|o| o.change().to_string()).collect();
        assert_eq!(
            kinds,
            [
                "- delete storage repository \"repository\" (arn:repo)",
                "- delete storage bucket \"log-bucket\" (logs)"
            ]
        );
        // With force, the plan says what goes first.
        let ops = teardown(&observed(), both, true).unwrap();
        let text: Vec<String> = ops.iter().map(|o| o.change().to_string()).collect();
        assert!(text[0].contains("first delete its 2 images"), "{text:?}");
        assert!(text[1].contains("and its 3 objects"), "{text:?}");
        assert!(
            teardown(&Observed::default(), both, false)
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn only_the_stacks_own_or_an_untagged_derived_bucket_is_touched() {
        let ours = BTreeMap::from([(infra::tags::STACK.to_owned(), "demo".to_owned())]);
        let theirs = BTreeMap::from([(infra::tags::STACK.to_owned(), "other".to_owned())]);
        let none = BTreeMap::new();
        assert!(check_owner("bucket", "b", &ours, "demo", false).is_ok());
        assert!(check_owner("bucket", "b", &none, "demo", true).is_ok());
        let err = check_owner("bucket", "b", &theirs, "demo", true).unwrap_err();
        assert!(err.to_string().contains("tag is \"other\""), "{err}");
        let err = check_owner("repository", "r", &none, "demo", false).unwrap_err();
        assert!(
            err.to_string().contains("has no stackproof:stack tag"),
            "{err}"
        );
    }
}
