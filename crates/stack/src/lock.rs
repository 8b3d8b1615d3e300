//! One writer per stack: a lock object in S3, written with a conditional put.
//!
//! `deploy` and `destroy` take the lock of their stack before they change anything and release
//! it when they end (success, error or interrupt). The lock is the object
//! `locks/{stack}.json` in the account's state bucket `stackproof-state-{account}-{region}`,
//! created on first use (public access blocked, SSE-S3, tagged `stackproof:project`, not with
//! any stack's tag, so destroying a stack never sees it). It is written with
//! `If-None-Match: *`, as Terraform's S3 backend does: S3 refuses the put (412
//! `PreconditionFailed`) when the object exists, so of two writers exactly one gets it. The
//! object says who holds it (user@host, pid), for what command, and since when.
//!
//! A run killed with SIGKILL cannot release its lock: the next run fails with
//! [`LockError::Held`] naming the dead holder, its age and the lock's id, and
//! [`LockStore::force_unlock`] given that id removes it (as Terraform's `force-unlock LOCK_ID`):
//! a lock another run took since is never removed by an id that is not its own. Release and
//! force-unlock delete with `If-Match` on the ETag they read, so a lock replaced between the
//! read and the delete stays. Every call on the state bucket (but CreateBucket, which has no
//! such parameter) passes `ExpectedBucketOwner`: the bucket's name is predictable, and a bucket
//! of that name in another account is refused (403) instead of written to.

use std::fmt;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_sdk_s3::Client as S3;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{
    BucketLocationConstraint, CreateBucketConfiguration, PublicAccessBlockConfiguration,
    ServerSideEncryption, ServerSideEncryptionByDefault, ServerSideEncryptionConfiguration,
    ServerSideEncryptionRule, Tag, Tagging,
};
use aws_smithy_types::error::display::DisplayErrorContext;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use infra::Context;
use serde::{Deserialize, Serialize};

/// The tag key the state bucket carries instead of `stackproof:stack`: it is shared by every
/// stack of the account and region, and no stack's destroy may touch it.
pub const PROJECT_TAG: &str = "stackproof:project";

/// The state bucket of `account` in `region`.
pub fn state_bucket_name(account: &str, region: &str) -> String {
    format!("stackproof-state-{account}-{region}")
}

/// The lock's key in the state bucket.
pub fn lock_key(stack: &str) -> String {
    format!("locks/{stack}.json")
}

/// What the lock object holds: who took it, for what, since when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockInfo {
    /// `user@host` of the process that took it.
    pub holder: String,
    /// Its process id.
    pub pid: u32,
    /// The command (`deploy`, `destroy`).
    pub command: String,
    /// When it was taken, seconds since the Unix epoch.
    pub started: u64,
    /// A value unique to this taking of the lock, so that a release deletes only its own lock.
    pub id: String,
}

impl LockInfo {
    /// The lock this process takes for `command`, now.
    pub fn current(command: &str) -> Self {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let pid = std::process::id();
        Self {
            holder: format!("{}@{}", user(), host()),
            pid,
            command: command.to_owned(),
            started: now.as_secs(),
            id: format!("{pid}-{}", now.as_nanos()),
        }
    }

    /// How long it has been held at `now` (zero when its clock is ahead of ours).
    pub fn age(&self, now: SystemTime) -> Duration {
        let now = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
        Duration::from_secs(now.saturating_sub(self.started))
    }

    /// Whether the holder ran on this host and its process is gone (Linux: no `/proc/{pid}`).
    /// `false` when that cannot be told.
    pub fn holder_is_gone_from_this_host(&self) -> bool {
        let here = format!("@{}", host());
        self.holder.ends_with(&here)
            && Path::new("/proc/self").exists()
            && !Path::new(&format!("/proc/{}", self.pid)).exists()
    }
}

impl fmt::Display for LockInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "`{}` by {} (pid {}) since {}",
            self.command,
            self.holder,
            self.pid,
            utc(self.started)
        )
    }
}

fn user() -> String {
    ["USER", "LOGNAME", "USERNAME"]
        .iter()
        .find_map(|k| std::env::var(k).ok().filter(|v| !v.is_empty()))
        .unwrap_or_else(|| "unknown".to_owned())
}

fn host() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .or_else(|| std::env::var("COMPUTERNAME").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown-host".to_owned())
}

/// `secs` since the epoch as `YYYY-MM-DDTHH:MM:SSZ`.
pub fn utc(secs: u64) -> String {
    infra::UtcTime::from_unix(secs).to_string()
}

/// A duration as `1h 2m 3s`, `2m 3s` or `3s`.
pub fn human(age: Duration) -> String {
    let s = age.as_secs();
    match (s / 3600, s % 3600 / 60, s % 60) {
        (0, 0, s) => format!("{s}s"),
        (0, m, s) => format!("{m}m {s}s"),
        (h, m, s) => format!("{h}h {m}m {s}s"),
    }
}

/// What can go wrong with the lock.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LockError {
    /// Someone else holds the lock of the stack.
    #[error(
        "stack {stack} is locked: {info} ({} ago; lock id {}, s3://{bucket}/{key})",
        human(*age),
        info.id
    )]
    Held {
        /// The stack.
        stack: String,
        /// The state bucket.
        bucket: String,
        /// The lock's key.
        key: String,
        /// Who holds it.
        info: Box<LockInfo>,
        /// How long it has been held.
        age: Duration,
    },
    /// `--force-unlock ID` named a lock that is not the one there now.
    #[error(
        "the lock of stack {stack} is not {asked}: it is now {info} (lock id {}); nothing was removed. If that run is gone too, force-unlock that id",
        info.id
    )]
    NotThatLock {
        /// The stack.
        stack: String,
        /// The id given.
        asked: String,
        /// The lock there now.
        info: Box<LockInfo>,
    },
    /// An AWS call failed.
    #[error("{operation} for {resource} failed: {detail}")]
    Aws {
        /// The API operation (`PutObject`).
        operation: &'static str,
        /// What it concerned (`s3://bucket/key`).
        resource: String,
        /// The AWS error code, when there is one.
        code: Option<String>,
        /// The error with its whole chain of causes.
        detail: String,
    },
}

fn aws<E>(operation: &'static str, resource: &str) -> impl FnOnce(E) -> LockError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    let resource = resource.to_owned();
    move |e| LockError::Aws {
        operation,
        resource,
        code: e.code().map(str::to_owned),
        detail: DisplayErrorContext(&e).to_string(),
    }
}

/// Where the lock of one stack lives, with the client to reach it.
#[derive(Debug, Clone)]
pub struct LockStore {
    s3: S3,
    account: String,
    bucket: String,
    key: String,
    stack: String,
    region: String,
}

/// A lock this process holds. Release it with [`HeldLock::release`]; a lock that is dropped
/// without release stays in S3 (as one whose process was killed would).
#[derive(Debug)]
#[must_use = "a lock that is not released stays held until --force-unlock"]
pub struct HeldLock {
    store: LockStore,
    info: LockInfo,
}

/// The account `cx`'s credentials act in, from STS GetCallerIdentity.
pub async fn caller_account(cx: &Context) -> Result<String, LockError> {
    let sts: aws_sdk_sts::Client = infra::client!(cx, aws_sdk_sts);
    let identity = sts
        .get_caller_identity()
        .send()
        .await
        .map_err(aws("GetCallerIdentity", "the caller's account"))?;
    identity
        .account()
        .map(str::to_owned)
        .ok_or_else(|| LockError::Aws {
            operation: "GetCallerIdentity",
            resource: "the caller's account".to_owned(),
            code: None,
            detail: "the answer carries no account id, which names the state bucket".to_owned(),
        })
}

impl LockStore {
    /// The lock store of `cx`'s stack: the account id is the context's when the caller read it
    /// ([`Context::account`]), else STS's. The clients carry `cx`'s interceptors (so its call
    /// counter counts the lock's calls).
    pub async fn new(cx: &Context) -> Result<Self, LockError> {
        let read;
        let account = match cx.account() {
            Some(account) => account,
            None => {
                read = caller_account(cx).await?;
                read.as_str()
            }
        };
        Ok(Self::with_client(
            storage::s3_client(cx),
            account,
            cx.region(),
            cx.stack().as_str(),
        ))
    }

    /// The lock store of `stack` in `account` and `region`, with an S3 client of the caller's.
    pub fn with_client(s3: S3, account: &str, region: &str, stack: &str) -> Self {
        Self {
            s3,
            account: account.to_owned(),
            bucket: state_bucket_name(account, region),
            key: lock_key(stack),
            stack: stack.to_owned(),
            region: region.to_owned(),
        }
    }

    /// The state bucket.
    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// The lock's key.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The account that must own the state bucket (`ExpectedBucketOwner` of every call).
    pub fn account(&self) -> &str {
        &self.account
    }

    fn location(&self) -> String {
        format!("s3://{}/{}", self.bucket, self.key)
    }

    /// Takes the lock for `command`, or fails at once with [`LockError::Held`] naming the
    /// holder. Creates the state bucket when it does not exist yet.
    pub async fn acquire(&self, command: &str) -> Result<HeldLock, LockError> {
        let info = LockInfo::current(command);
        let body = serde_json::to_vec_pretty(&info).map_err(|e| LockError::Aws {
            operation: "PutObject",
            resource: self.location(),
            code: None,
            detail: format!("the lock's JSON could not be written: {e}"),
        })?;
        // Two attempts: the second after creating the bucket a first put did not find.
        for attempt in 0..2 {
            let put = self
                .s3
                .put_object()
                .bucket(&self.bucket)
                .expected_bucket_owner(&self.account)
                .key(&self.key)
                .if_none_match("*")
                .content_type("application/json")
                .body(ByteStream::from(body.clone()))
                .send()
                .await;
            match put {
                Ok(_) => {
                    return Ok(HeldLock {
                        store: self.clone(),
                        info,
                    });
                }
                Err(e) if e.code() == Some("NoSuchBucket") && attempt == 0 => {
                    self.create_bucket().await?;
                }
                // 409 ConditionalRequestConflict: a concurrent put of the same key is in
                // flight; whoever it is, the lock is not ours.
                Err(e)
                    if matches!(
                        e.code(),
                        Some("PreconditionFailed" | "ConditionalRequestConflict")
                    ) =>
                {
                    return Err(self.held().await);
                }
                Err(e) => return Err(aws("PutObject", &self.location())(e)),
            }
        }
        Err(LockError::Aws {
            operation: "PutObject",
            resource: self.location(),
            code: Some("NoSuchBucket".to_owned()),
            detail: format!(
                "the state bucket {} was created but is not found",
                self.bucket
            ),
        })
    }

    /// The error for a lock someone else holds (what it says, as far as it can be read).
    async fn held(&self) -> LockError {
        let info = match self.read().await {
            Ok(Some(info)) => info,
            // Released between our put and our read: still not ours; say so.
            Ok(None) => LockInfo {
                holder: "another run (it released the lock just now; try again)".to_owned(),
                pid: 0,
                command: "unknown".to_owned(),
                started: SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .unwrap_or_default()
                    .as_secs(),
                id: String::new(),
            },
            Err(e) => return e,
        };
        LockError::Held {
            stack: self.stack.clone(),
            bucket: self.bucket.clone(),
            key: self.key.clone(),
            age: info.age(SystemTime::now()),
            info: Box::new(info),
        }
    }

    /// The lock as it stands: `None` when nobody holds it. A lock object that is not a
    /// stackproof lock is reported with holder `unknown (...)` and its ETag as its id.
    pub async fn read(&self) -> Result<Option<LockInfo>, LockError> {
        Ok(self.read_versioned().await?.map(|(info, _)| info))
    }

    /// The lock and the ETag of the object it was read from.
    async fn read_versioned(&self) -> Result<Option<(LockInfo, String)>, LockError> {
        let got = match self
            .s3
            .get_object()
            .bucket(&self.bucket)
            .expected_bucket_owner(&self.account)
            .key(&self.key)
            .send()
            .await
        {
            Ok(got) => got,
            Err(e) if matches!(e.code(), Some("NoSuchKey" | "NoSuchBucket")) => return Ok(None),
            Err(e) => return Err(aws("GetObject", &self.location())(e)),
        };
        let started = got
            .last_modified()
            .map(|t| u64::try_from(t.secs()).unwrap_or_default())
            .unwrap_or_default();
        let etag = got.e_tag().unwrap_or_default().to_owned();
        let bytes = got
            .body
            .collect()
            .await
            .map_err(|e| LockError::Aws {
                operation: "GetObject",
                resource: self.location(),
                code: None,
                detail: e.to_string(),
            })?
            .into_bytes();
        let info = serde_json::from_slice(&bytes).unwrap_or_else(|e| LockInfo {
            holder: format!("unknown (the lock object is not a stackproof lock: {e})"),
            pid: 0,
            command: "unknown".to_owned(),
            started,
            id: etag.trim_matches('"').to_owned(),
        });
        Ok(Some((info, etag)))
    }

    /// Deletes the lock whose id is `id` (the id [`LockError::Held`] shows) and returns what it
    /// said; `None` when there is no lock. A lock with another id (a run that took the lock
    /// after the one the caller saw) is left alone: [`LockError::NotThatLock`]. What it risks:
    /// if the holder is still running, two writers may interleave; running deploy again
    /// afterwards converges (it finds resources by tag).
    pub async fn force_unlock(&self, id: &str) -> Result<Option<LockInfo>, LockError> {
        let Some((info, etag)) = self.read_versioned().await? else {
            return Ok(None);
        };
        if info.id != id {
            return Err(self.not_that_lock(id, info));
        }
        match self.delete_if(&etag).await? {
            Deleted::Yes | Deleted::Gone => Ok(Some(info)),
            // Replaced between the read and the delete: by another run's lock.
            Deleted::Changed => match self.read().await? {
                Some(now) => Err(self.not_that_lock(id, now)),
                None => Ok(Some(info)),
            },
        }
    }

    fn not_that_lock(&self, asked: &str, info: LockInfo) -> LockError {
        LockError::NotThatLock {
            stack: self.stack.clone(),
            asked: asked.to_owned(),
            info: Box::new(info),
        }
    }

    /// Deletes the lock object if its ETag is still `etag` (S3 conditional delete,
    /// `If-Match`).
    async fn delete_if(&self, etag: &str) -> Result<Deleted, LockError> {
        match self
            .s3
            .delete_object()
            .bucket(&self.bucket)
            .expected_bucket_owner(&self.account)
            .key(&self.key)
            .if_match(etag)
            .send()
            .await
        {
            Ok(_) => Ok(Deleted::Yes),
            Err(e) if matches!(e.code(), Some("NoSuchKey" | "NoSuchBucket")) => Ok(Deleted::Gone),
            Err(e)
                if matches!(
                    e.code(),
                    Some("PreconditionFailed" | "ConditionalRequestConflict")
                ) =>
            {
                Ok(Deleted::Changed)
            }
            Err(e) => Err(aws("DeleteObject", &self.location())(e)),
        }
    }

    /// Creates the state bucket (idempotently) with public access blocked, SSE-S3 and the
    /// project tag.
    async fn create_bucket(&self) -> Result<(), LockError> {
        let resource = format!("bucket {}", self.bucket);
        let mut request = self.s3.create_bucket().bucket(&self.bucket);
        if self.region != "us-east-1" {
            request = request.create_bucket_configuration(
                CreateBucketConfiguration::builder()
                    .location_constraint(BucketLocationConstraint::from(self.region.as_str()))
                    .build(),
            );
        }
        match request.send().await {
            Ok(_) => {}
            Err(e) if e.code() == Some("BucketAlreadyOwnedByYou") => {}
            Err(e) => return Err(aws("CreateBucket", &resource)(e)),
        }
        self.s3
            .put_public_access_block()
            .bucket(&self.bucket)
            .expected_bucket_owner(&self.account)
            .public_access_block_configuration(
                PublicAccessBlockConfiguration::builder()
                    .block_public_acls(true)
                    .ignore_public_acls(true)
                    .block_public_policy(true)
                    .restrict_public_buckets(true)
                    .build(),
            )
            .send()
            .await
            .map_err(aws("PutPublicAccessBlock", &resource))?;
        let rule = ServerSideEncryptionRule::builder()
            .apply_server_side_encryption_by_default(
                ServerSideEncryptionByDefault::builder()
                    .sse_algorithm(ServerSideEncryption::Aes256)
                    .build()
                    .map_err(|e| build_error("PutBucketEncryption", &resource, &e))?,
            )
            .build();
        self.s3
            .put_bucket_encryption()
            .bucket(&self.bucket)
            .expected_bucket_owner(&self.account)
            .server_side_encryption_configuration(
                ServerSideEncryptionConfiguration::builder()
                    .rules(rule)
                    .build()
                    .map_err(|e| build_error("PutBucketEncryption", &resource, &e))?,
            )
            .send()
            .await
            .map_err(aws("PutBucketEncryption", &resource))?;
        let tags = [
            (PROJECT_TAG, "stackproof"),
            ("Name", "stackproof-state"),
            ("stackproof:purpose", "locks"),
        ]
        .into_iter()
        .map(|(k, v)| {
            Tag::builder()
                .key(k)
                .value(v)
                .build()
                .map_err(|e| build_error("PutBucketTagging", &resource, &e))
        })
        .collect::<Result<Vec<_>, _>>()?;
        self.s3
            .put_bucket_tagging()
            .bucket(&self.bucket)
            .expected_bucket_owner(&self.account)
            .tagging(
                Tagging::builder()
                    .set_tag_set(Some(tags))
                    .build()
                    .map_err(|e| build_error("PutBucketTagging", &resource, &e))?,
            )
            .send()
            .await
            .map_err(aws("PutBucketTagging", &resource))?;
        Ok(())
    }
}

/// What a conditional delete did.
enum Deleted {
    /// The object was deleted.
    Yes,
    /// There was no object.
    Gone,
    /// The object is not the one read (another ETag): left alone.
    Changed,
}

fn build_error(operation: &'static str, resource: &str, e: &dyn std::error::Error) -> LockError {
    LockError::Aws {
        operation,
        resource: resource.to_owned(),
        code: None,
        detail: e.to_string(),
    }
}

impl HeldLock {
    /// What the lock says.
    pub fn info(&self) -> &LockInfo {
        &self.info
    }

    /// Releases the lock: deletes it if it is still this one, conditionally on the ETag it
    /// read (a lock that was force-unlocked and taken by another run is left alone, also when
    /// that happens between the read and the delete).
    pub async fn release(self) -> Result<(), LockError> {
        match self.store.read_versioned().await? {
            Some((now, etag)) if now.id == self.info.id => {
                self.store.delete_if(&etag).await.map(|_| ())
            }
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_times() {
        assert_eq!(
            state_bucket_name("123456789012", "eu-west-1"),
            "stackproof-state-123456789012-eu-west-1"
        );
        assert_eq!(lock_key("web"), "locks/web.json");
        assert_eq!(utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(utc(1_795_462_800 + 3661), "2026-11-23T20:41:01Z");
        assert_eq!(human(Duration::from_secs(5)), "5s");
        assert_eq!(human(Duration::from_secs(125)), "2m 5s");
        assert_eq!(human(Duration::from_secs(3 * 3600 + 61)), "3h 1m 1s");
    }

    #[test]
    fn the_held_error_names_holder_command_and_age() {
        let info = LockInfo {
            holder: "ana@build-7".to_owned(),
            pid: 4242,
            command: "deploy".to_owned(),
            started: 0,
            id: "x".to_owned(),
        };
        assert_eq!(
            info.age(UNIX_EPOCH + Duration::from_secs(190)),
            Duration::from_secs(190)
        );
        // A clock behind the holder's: no negative age.
        assert_eq!(info.age(UNIX_EPOCH), Duration::ZERO);
        let err = LockError::Held {
            stack: "web".to_owned(),
            bucket: "stackproof-state-1-eu-west-1".to_owned(),
            key: lock_key("web"),
            age: info.age(UNIX_EPOCH + Duration::from_secs(190)),
            info: Box::new(info),
        };
        assert_eq!(
            err.to_string(),
            "stack web is locked: `deploy` by ana@build-7 (pid 4242) since 1970-01-01T00:00:00Z (3m 10s ago; lock id x, s3://stackproof-state-1-eu-west-1/locks/web.json)"
        );
    }

    #[test]
    fn this_process_is_not_gone() {
        let me = LockInfo::current("deploy");
        assert!(!me.holder_is_gone_from_this_host());
        assert!(me.holder.contains('@'));
        assert_eq!(me.pid, std::process::id());
    }

    fn cx_in(stack: &str, account: &sandbox::MotoAccount) -> Context {
        let moto = sandbox::MotoServer::shared().expect("moto starts (run `cargo xtask setup`)");
        Context::builder(
            sandbox::sdk_config(moto.endpoint(), "eu-west-1"),
            infra::StackName::new(stack).unwrap(),
        )
        .interceptor(account.clone())
        .build()
    }

    fn cx(stack: &str) -> Context {
        let moto = sandbox::MotoServer::shared().expect("moto starts (run `cargo xtask setup`)");
        cx_in(stack, &moto.fresh_account())
    }

    #[tokio::test]
    async fn one_writer_at_a_time_against_moto() {
        let account = sandbox::MotoServer::shared().unwrap().fresh_account();
        let cx = cx_in("web", &account);
        let store = LockStore::new(&cx).await.unwrap();
        assert_eq!(store.read().await.unwrap(), None);

        // First use creates the state bucket, tagged with the project, not a stack.
        let first = store.acquire("deploy").await.unwrap();
        let s3 = storage::s3_client(&cx);
        let tags = s3
            .get_bucket_tagging()
            .bucket(store.bucket())
            .send()
            .await
            .unwrap();
        let keys: Vec<_> = tags.tag_set().iter().map(|t| t.key()).collect();
        assert!(keys.contains(&PROJECT_TAG), "{keys:?}");
        assert!(!keys.contains(&infra::tags::STACK), "{keys:?}");
        assert_eq!(store.read().await.unwrap().as_ref(), Some(first.info()));

        // A second writer fails at once, naming the holder.
        match store.acquire("destroy").await {
            Err(LockError::Held { info, stack, .. }) => {
                assert_eq!(*info, *first.info());
                assert_eq!(stack, "web");
            }
            other => panic!("expected Held, got {other:?}"),
        }
        // Another stack of the same account has a lock of its own.
        let other = LockStore::new(&cx_in("api", &account)).await.unwrap();
        let other_lock = other.acquire("deploy").await.unwrap();

        first.release().await.unwrap();
        assert_eq!(store.read().await.unwrap(), None);
        let second = store.acquire("destroy").await.unwrap();

        // Force-unlock needs the lock's id: another id removes nothing and names the lock
        // there now.
        match store.force_unlock("1-2").await {
            Err(LockError::NotThatLock { info, asked, .. }) => {
                assert_eq!(*info, *second.info());
                assert_eq!(asked, "1-2");
            }
            other => panic!("expected NotThatLock, got {other:?}"),
        }
        assert_eq!(store.read().await.unwrap().as_ref(), Some(second.info()));
        // With its id it returns what it removed; the old holder's release leaves the new lock.
        let removed = store
            .force_unlock(&second.info().id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(removed.command, "destroy");
        assert_eq!(store.force_unlock(&second.info().id).await.unwrap(), None);
        let third = store.acquire("deploy").await.unwrap();
        // The id of a lock that is gone does not remove the one taken since.
        assert!(matches!(
            store.force_unlock(&second.info().id).await,
            Err(LockError::NotThatLock { .. })
        ));
        second.release().await.unwrap();
        assert_eq!(store.read().await.unwrap().as_ref(), Some(third.info()));
        third.release().await.unwrap();
        other_lock.release().await.unwrap();
        assert_eq!(other.read().await.unwrap(), None);
    }

    #[tokio::test]
    async fn an_unreadable_lock_still_holds() {
        let cx = cx("junk");
        let store = LockStore::new(&cx).await.unwrap();
        let held = store.acquire("deploy").await.unwrap();
        storage::s3_client(&cx)
            .put_object()
            .bucket(store.bucket())
            .key(store.key())
            .body(ByteStream::from_static(b"not json"))
            .send()
            .await
            .unwrap();
        let err = store.acquire("deploy").await.unwrap_err();
        assert!(
            err.to_string()
                .contains("by unknown (the lock object is not a stackproof lock"),
            "{err}"
        );
        // Release leaves a lock that is not its own; force-unlock removes it by the id shown
        // for it (its ETag).
        held.release().await.unwrap();
        let junk = store.read().await.unwrap().unwrap();
        assert!(!junk.id.is_empty() && !junk.id.contains('"'), "{junk:?}");
        assert!(
            err.to_string().contains(&format!("lock id {},", junk.id)),
            "{err}"
        );
        store.force_unlock(&junk.id).await.unwrap();
        assert_eq!(store.read().await.unwrap(), None);
    }

    /// Records, for every S3 call, its operation and its `x-amz-expected-bucket-owner`.
    #[derive(Debug, Clone, Default)]
    struct Owners(std::sync::Arc<std::sync::Mutex<Vec<Seen>>>);

    /// An operation and the `x-amz-expected-bucket-owner` it carried.
    type Seen = (String, Option<String>);

    impl aws_smithy_runtime_api::client::interceptors::Intercept for Owners {
        fn name(&self) -> &'static str {
            "expected-bucket-owner-recorder"
        }

        fn read_before_transmit(
            &self,
            context: &aws_smithy_runtime_api::client::interceptors::context::BeforeTransmitInterceptorContextRef<'_>,
            _components: &aws_smithy_runtime_api::client::runtime_components::RuntimeComponents,
            cfg: &mut aws_smithy_types::config_bag::ConfigBag,
        ) -> Result<(), aws_smithy_runtime_api::box_error::BoxError> {
            let operation = cfg
                .load::<aws_smithy_runtime_api::client::orchestrator::Metadata>()
                .map(|m| m.name().to_owned())
                .unwrap_or_default();
            let owner = context
                .request()
                .headers()
                .get("x-amz-expected-bucket-owner")
                .map(str::to_owned);
            self.0.lock().unwrap().push((operation, owner));
            Ok(())
        }
    }

    #[tokio::test]
    async fn every_state_bucket_call_names_the_expected_owner() {
        let moto = sandbox::MotoServer::shared().unwrap();
        let account = moto.fresh_account();
        let owners = Owners::default();
        let cx = Context::builder(
            sandbox::sdk_config(moto.endpoint(), "eu-west-1"),
            infra::StackName::new("owned").unwrap(),
        )
        .interceptor(account.clone())
        .interceptor(owners.clone())
        .build();
        let store = LockStore::new(&cx).await.unwrap();
        let held = store.acquire("deploy").await.unwrap();
        assert!(store.acquire("deploy").await.is_err());
        held.release().await.unwrap();
        let again = store.acquire("destroy").await.unwrap();
        store.force_unlock(&again.info().id).await.unwrap();
        let seen = owners.0.lock().unwrap().clone();
        let s3: Vec<_> = seen
            .iter()
            .filter(|(op, _)| op != "GetCallerIdentity")
            .collect();
        for op in [
            "CreateBucket",
            "PutPublicAccessBlock",
            "PutBucketEncryption",
            "PutBucketTagging",
            "PutObject",
            "GetObject",
            "DeleteObject",
        ] {
            assert!(s3.iter().any(|(o, _)| o == op), "{op} not called: {seen:?}");
        }
        for (op, owner) in &s3 {
            if op == "CreateBucket" {
                // CreateBucket has no ExpectedBucketOwner: the bucket is new or ours
                // (BucketAlreadyOwnedByYou); another owner's bucket fails every later call.
                continue;
            }
            assert_eq!(
                owner.as_deref(),
                Some(store.account()),
                "{op} without the expected owner"
            );
        }
    }
}
