//! The storage slice of a stackproof stack: the ALB access-log bucket and the ECR repository.
//!
//! [`Storage`] is a [`Module`](infra::Module) (`storage`, table `[storage]`):
//! - the access-log bucket `{stack}-alb-logs-{account}-{region}` (or `log-bucket`), with all
//!   public access blocked, default encryption SSE-S3, bucket-owner-enforced object ownership,
//!   a lifecycle rule that deletes logs after `log-expire-days`, and a policy that denies every
//!   request without TLS and lets the region's Elastic Load Balancing log delivery put objects
//!   under `{log-prefix}/AWSLogs/{account}/` (see [`LogDeliveryPrincipal`]);
//! - the ECR repository `{stack}/sample-app`, with scan on push, optional immutable tags and a
//!   lifecycle policy that keeps the newest `keep-images` images.
//!
//! Both are found by the name the stack derives and checked by their tags (S3 cannot list
//! buckets by tag): one with the name but another stack's tags is never touched. `destroy`
//! refuses to delete a bucket or repository that still holds something unless `force-destroy`
//! is set, and then empties it first.
//!
//! ```no_run
//! # async fn demo(cx: &infra::Context) -> Result<(), Box<dyn std::error::Error>> {
//! use infra::{Config, Module};
//! let spec = stackproof_storage::StorageConfig::default().validate(&cx.scope())?;
//! let storage = stackproof_storage::Storage::new(cx, spec);
//! println!("{}", storage.plan(cx, &()).await?);
//! let outputs = storage.apply(cx, &()).await?;
//! println!("logs go to s3://{}/{}", outputs.log_bucket, outputs.log_prefix);
//! # Ok(()) }
//! ```

mod config;
mod desired;
mod error;
mod exec;
mod observe;
mod policy;

use aws_sdk_ecr::Client as Ecr;
use aws_sdk_s3::Client as S3;
use aws_sdk_sts::Client as Sts;
use infra::pipeline::{self, Pipeline};
use infra::{Context, Plan, Survey};
use serde::{Deserialize, Serialize};

pub use config::{
    LogBucket, StorageConfig, StorageSpec, bucket_name_problem, derived_bucket_name,
    repository_name,
};
pub use error::Error;
pub use policy::{
    ELB_ACCOUNTS, LOG_DELIVERY_SERVICE, LogDeliveryPrincipal, bucket_policy, log_key_prefix,
    partition, repository_lifecycle_policy, same_policy,
};

use crate::desired::{Contents, Desired, Op, diff, teardown};
use crate::observe::Observed;

/// What storage gives the modules downstream and the user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StorageOutputs {
    /// The account everything lives in.
    pub account_id: String,
    /// The access-log bucket (for the load balancer's `access_logs.s3.bucket`).
    pub log_bucket: String,
    /// The key prefix for the load balancer's `access_logs.s3.prefix` (may be empty).
    pub log_prefix: String,
    /// The ECR repository's name, `{stack}/sample-app`.
    pub repository_name: String,
    /// Its URI, `{account}.dkr.ecr.{region}.amazonaws.com/{stack}/sample-app`.
    pub repository_uri: String,
    /// Its ARN.
    pub repository_arn: String,
}

/// The storage module.
#[derive(Debug, Clone)]
pub struct Storage {
    spec: StorageSpec,
    s3: S3,
    ecr: Ecr,
    sts: Sts,
}

/// An S3 client for `cx`: its SDK configuration and interceptors. Path-style addressing
/// (`https://host/bucket/key`) when the configuration names a custom endpoint (moto, the
/// sandbox, other S3 emulators, which cannot serve `bucket.host` names); virtual-hosted
/// addressing, AWS's default, otherwise.
pub fn s3_client(cx: &Context) -> S3 {
    let sdk = cx.sdk_config();
    let mut builder = aws_sdk_s3::config::Builder::from(sdk);
    if sdk.endpoint_url().is_some() {
        builder = builder.force_path_style(true);
    }
    for interceptor in cx.interceptors() {
        builder.push_interceptor(interceptor.clone());
    }
    S3::from_conf(builder.build())
}

impl Storage {
    /// The module for `spec`, calling S3, ECR and STS with clients built from `cx` (S3 with
    /// [`s3_client`]).
    pub fn new(cx: &Context, spec: StorageSpec) -> Self {
        Self {
            spec,
            s3: s3_client(cx),
            ecr: infra::client!(cx, aws_sdk_ecr),
            sts: infra::client!(cx, aws_sdk_sts),
        }
    }

    /// The module with clients of the caller's (for tests with mocked responses).
    pub fn with_clients(spec: StorageSpec, s3: S3, ecr: Ecr, sts: Sts) -> Self {
        Self { spec, s3, ecr, sts }
    }

    /// The checked configuration.
    pub fn spec(&self) -> &StorageSpec {
        &self.spec
    }

    /// The repository's name does not depend on the account, the derived bucket name does: the
    /// account is the context's when the caller read it, else the repository's ARN names it;
    /// only a stack without a repository, under a caller that did not read it, asks STS.
    async fn read(&self, cx: &Context) -> Result<(Desired, Observed), Error> {
        let repo = observe::repository(&self.ecr, &repository_name(cx.stack().as_str())).await?;
        let known = cx
            .account()
            .or_else(|| repo.as_ref().and_then(|r| arn_account(&r.arn)));
        let account = match known {
            Some(account) => account.to_owned(),
            None => observe::account_id(&self.sts).await?,
        };
        let desired = Desired::new(cx, &self.spec, &account);
        let bucket = observe::bucket(&self.s3, cx.stack().as_str(), &desired.bucket).await?;
        Ok((desired, Observed { bucket, repo }))
    }

    /// The outputs of the deployed storage, or `None` when the bucket or the repository does
    /// not exist. Read-only.
    pub async fn outputs(&self, cx: &Context) -> Result<Option<StorageOutputs>, Error> {
        let (desired, observed) = self.read(cx).await?;
        desired::check_owners(cx, &desired, &observed)?;
        match (&observed.bucket, &observed.repo) {
            (Some(_), Some(repo)) => Ok(Some(outputs(&desired, repo))),
            _ => Ok(None),
        }
    }

    /// What `plan` shows, what exists and what `outputs` returns, from one read of the
    /// account (the stack previews every module and needs upstream outputs at the same time).
    /// Read-only.
    pub async fn survey(&self, cx: &Context) -> Result<Survey<StorageOutputs>, Error> {
        let seen = pipeline::observe(self, cx, &()).await?;
        let outputs = match (&seen.observed.observed.bucket, &seen.observed.observed.repo) {
            (Some(_), Some(repo)) => Some(outputs(&seen.desired, repo)),
            _ => None,
        };
        Ok(Survey {
            plan: seen.plan(self, cx),
            existing: seen.existing(self, cx)?,
            outputs,
        })
    }

    /// What destroy finds: the bucket and repository (if they are the stack's) and what they
    /// hold. Read-only.
    /// Why destroy would stop at this module, read before anything of the stack is deleted: a
    /// non-empty bucket or repository without `force-destroy` (the refusal destroy would
    /// return). `None` when destroy would go through. Reads only.
    pub async fn destroy_refusal(&self, cx: &Context) -> Result<Option<Error>, Error> {
        let found = Pipeline::observe(self, cx, None).await?;
        Ok(teardown(&found.observed, found.contents, self.spec.force_destroy).err())
    }

    /// What a destroy deletes: the bucket and repository, if they are the stack's, and what
    /// they hold.
    async fn contents(&self, cx: &Context) -> Result<Found, Error> {
        let (desired, observed) = self.read(cx).await?;
        desired::check_owners(cx, &desired, &observed)?;
        let (objects, images) = tokio::try_join!(
            async {
                match &observed.bucket {
                    Some(b) => observe::count_objects(&self.s3, &b.name).await,
                    None => Ok(0),
                }
            },
            async {
                match &observed.repo {
                    Some(r) => Ok(observe::image_digests(&self.ecr, &r.name).await?.len() as u64),
                    None => Ok(0),
                }
            },
        )?;
        Ok(Found {
            desired,
            observed,
            contents: Contents { objects, images },
        })
    }
}

/// What storage reads: the bucket and the repository as they are, the names the account
/// gives them, and, for a destroy, what they hold (nothing is counted for an apply).
#[derive(Debug)]
pub struct Found {
    desired: Desired,
    observed: Observed,
    contents: Contents,
}

/// The account field of an ARN (`arn:aws:ecr:eu-west-1:123456789012:repository/x`), when it
/// has one.
fn arn_account(arn: &str) -> Option<&str> {
    arn.split(':')
        .nth(4)
        .filter(|a| !a.is_empty() && a.chars().all(|c| c.is_ascii_digit()))
}

fn outputs(desired: &Desired, repo: &observe::RepoState) -> StorageOutputs {
    StorageOutputs {
        account_id: desired.account_id.clone(),
        log_bucket: desired.bucket.clone(),
        log_prefix: desired.log_prefix.clone(),
        repository_name: repo.name.clone(),
        repository_uri: repo.uri.clone(),
        repository_arn: repo.arn.clone(),
    }
}

impl Pipeline for Storage {
    const NAME: &'static str = desired::MODULE;
    type Inputs = ();
    type Outputs = StorageOutputs;
    type Error = Error;
    type Observed = Found;
    type Desired = Desired;
    type Op = Op;
    /// The repository once it exists (its ARN and URI never change).
    type State = Option<observe::RepoState>;

    async fn observe(&self, cx: &Context, inputs: Option<&()>) -> Result<Found, Error> {
        if inputs.is_none() {
            return self.contents(cx).await;
        }
        let (desired, observed) = self.read(cx).await?;
        Ok(Found {
            desired,
            observed,
            contents: Contents::default(),
        })
    }

    async fn desired(&self, _cx: &Context, _inputs: &(), found: &Found) -> Result<Desired, Error> {
        Ok(found.desired.clone())
    }

    fn diff(&self, cx: &Context, desired: &Desired, found: &Found) -> Result<Vec<Op>, Error> {
        diff(cx, desired, &found.observed)
    }

    /// Deletes the repository, then the bucket. A non-empty one stops destroy before anything
    /// is deleted, unless `force-destroy` is set; then it is emptied first.
    fn teardown(&self, _cx: &Context, found: &Found) -> Result<Vec<Op>, Error> {
        teardown(&found.observed, found.contents, self.spec.force_destroy)
    }

    fn change(&self, _cx: &Context, op: &Op) -> Vec<infra::Change> {
        vec![op.change()]
    }

    fn state(
        &self,
        _cx: &Context,
        _desired: Option<&Desired>,
        found: &Found,
    ) -> Option<observe::RepoState> {
        found.observed.repo.clone()
    }

    async fn step(
        &self,
        cx: &Context,
        op: &Op,
        _repo: &mut Option<observe::RepoState>,
    ) -> Result<Option<String>, Error> {
        exec::step(&self.s3, &self.ecr, cx, op).await.map(|()| None)
    }

    /// A repository made by this apply is read back for its ARN and URI.
    async fn outputs(
        &self,
        _cx: &Context,
        desired: &Desired,
        repo: Option<observe::RepoState>,
    ) -> Result<StorageOutputs, Error> {
        let repo = match repo {
            Some(repo) => Some(repo),
            None => observe::repository(&self.ecr, &desired.repo).await?,
        };
        let repo = repo.ok_or_else(|| Error::Missing {
            kind: "repository",
            name: desired.repo.clone(),
        })?;
        Ok(outputs(desired, &repo))
    }

    /// The preview never fails on a non-empty bucket: it shows the emptying that force-destroy
    /// would do, or the refusal destroy would give.
    fn preview_destroy(&self, cx: &Context, found: &Found) -> Result<Plan, Error> {
        match teardown(&found.observed, found.contents, self.spec.force_destroy) {
            Ok(ops) => Ok(pipeline::plan(self, cx, &ops)),
            Err(refusal) => {
                let ops = teardown(&found.observed, found.contents, true)?;
                let mut plan = pipeline::plan(self, cx, &ops);
                for change in &mut plan.changes {
                    change.details.retain(|d| !d.contains("force-destroy"));
                }
                if let Some(first) = plan.changes.first_mut() {
                    first
                        .details
                        .push(format!("destroy will refuse: {refusal}"));
                }
                Ok(plan)
            }
        }
    }
}
