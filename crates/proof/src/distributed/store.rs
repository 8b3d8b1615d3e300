//! A run's objects in S3, under `{prefix}` (`loadtest/{run-id}` in the stack's log bucket):
//!
//! | object | written by | what |
//! |---|---|---|
//! | `start.json` | coordinator | the global start `t0` and the whole schedule (a `loadtest::Config`) |
//! | `worker-{i}/hello.json` | generator `i` | its zone, task and process, as soon as it runs |
//! | `worker-{i}/progress.hlog` | generator `i` | the interval log of its last complete seconds, its counts as the object's metadata, every 2 s |
//! | `worker-{i}/report.json` | generator `i` | its whole report with histograms ([`loadtest::Report::to_shard`]), last |
//! | `worker-{i}/error.txt` | generator `i` | why it could not run |
//!
//! Every call is counted: the coordinator's overhead is reported per generator and minute. The
//! coordinator lists the folder once per poll and reads only what is there: one GET per
//! running generator.

use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

use crate::error::{Error, aws};

/// The start object.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Start {
    /// When the shared schedule starts, ms since the Unix epoch.
    pub(crate) t0_unix_ms: u64,
    /// How many generators share it.
    pub(crate) workers: u32,
    /// The whole schedule (each generator adds its stripe and the start).
    pub(crate) config: loadtest::Config,
}

/// What a generator says when it runs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Hello {
    pub(crate) zone: String,
    pub(crate) task_arn: String,
    pub(crate) pid: u32,
}

/// A generator's counts so far.
#[derive(Debug, Clone, Default)]
pub(crate) struct Counts {
    pub(crate) sent: u64,
    pub(crate) completed: u64,
    pub(crate) errors: u64,
    pub(crate) seconds: usize,
}

/// The objects' names.
pub(crate) const START: &str = "start.json";

pub(crate) fn hello(i: u32) -> String {
    format!("worker-{i}/hello.json")
}
pub(crate) fn progress_log(i: u32) -> String {
    format!("worker-{i}/progress.hlog")
}
pub(crate) fn report(i: u32) -> String {
    format!("worker-{i}/report.json")
}
pub(crate) fn error(i: u32) -> String {
    format!("worker-{i}/error.txt")
}

/// The run's folder in the bucket, with a count of the calls made.
#[derive(Debug)]
pub(crate) struct Store {
    s3: aws_sdk_s3::Client,
    bucket: String,
    prefix: String,
    calls: AtomicU64,
}

impl Store {
    pub(crate) fn new(s3: aws_sdk_s3::Client, bucket: &str, prefix: &str) -> Store {
        Store {
            s3,
            bucket: bucket.to_owned(),
            prefix: prefix.trim_end_matches('/').to_owned(),
            calls: AtomicU64::new(0),
        }
    }

    fn key(&self, name: &str) -> String {
        format!("{}/{name}", self.prefix)
    }

    /// `s3://bucket/key` of an object, for messages.
    pub(crate) fn url(&self, name: &str) -> String {
        format!("s3://{}/{}", self.bucket, self.key(name))
    }

    /// S3 calls made so far.
    pub(crate) fn calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }

    pub(crate) async fn put(&self, name: &str, body: Vec<u8>) -> Result<(), Error> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        self.s3
            .put_object()
            .bucket(&self.bucket)
            .key(self.key(name))
            .body(body.into())
            .send()
            .await
            .map_err(aws("PutObject", self.url(name)))?;
        Ok(())
    }

    /// The object's bytes, `None` when it does not exist (yet).
    pub(crate) async fn get(&self, name: &str) -> Result<Option<Vec<u8>>, Error> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        let out = match self
            .s3
            .get_object()
            .bucket(&self.bucket)
            .key(self.key(name))
            .send()
            .await
        {
            Ok(out) => out,
            Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_key()) => return Ok(None),
            Err(e) => return Err(aws("GetObject", self.url(name))(e)),
        };
        let bytes = out.body.collect().await.map_err(|e| Error::Aws {
            operation: "GetObject",
            resource: self.url(name),
            message: format!("reading the body: {e}"),
        })?;
        Ok(Some(bytes.into_bytes().to_vec()))
    }

    /// The object read as JSON, `None` when it does not exist.
    pub(crate) async fn get_json<T: for<'de> Deserialize<'de>>(
        &self,
        name: &str,
    ) -> Result<Option<T>, Error> {
        let Some(bytes) = self.get(name).await? else {
            return Ok(None);
        };
        serde_json::from_slice(&bytes).map(Some).map_err(|e| {
            Error::Generators(format!("{} is not what it should be: {e}", self.url(name)))
        })
    }

    /// A generator's progress: the log, its counts as the object's metadata.
    pub(crate) async fn put_progress(
        &self,
        i: u32,
        counts: &Counts,
        log: Vec<u8>,
    ) -> Result<(), Error> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        let name = progress_log(i);
        self.s3
            .put_object()
            .bucket(&self.bucket)
            .key(self.key(&name))
            .metadata("sent", counts.sent.to_string())
            .metadata("completed", counts.completed.to_string())
            .metadata("errors", counts.errors.to_string())
            .metadata("seconds", counts.seconds.to_string())
            .body(log.into())
            .send()
            .await
            .map_err(aws("PutObject", self.url(&name)))?;
        Ok(())
    }

    /// A generator's progress: its counts and its log; `None` before its first upload.
    pub(crate) async fn get_progress(&self, i: u32) -> Result<Option<(Counts, Vec<u8>)>, Error> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        let name = progress_log(i);
        let out = match self
            .s3
            .get_object()
            .bucket(&self.bucket)
            .key(self.key(&name))
            .send()
            .await
        {
            Ok(out) => out,
            Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_key()) => return Ok(None),
            Err(e) => return Err(aws("GetObject", self.url(&name))(e)),
        };
        let meta = out.metadata().cloned().unwrap_or_default();
        let n = |k: &str| meta.get(k).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        let counts = Counts {
            sent: n("sent"),
            completed: n("completed"),
            errors: n("errors"),
            seconds: usize::try_from(n("seconds")).unwrap_or(usize::MAX),
        };
        let bytes = out.body.collect().await.map_err(|e| Error::Aws {
            operation: "GetObject",
            resource: self.url(&name),
            message: format!("reading the body: {e}"),
        })?;
        Ok(Some((counts, bytes.into_bytes().to_vec())))
    }

    /// The names of the run's objects (relative to the run's folder).
    pub(crate) async fn list(&self) -> Result<std::collections::BTreeSet<String>, Error> {
        let mut names = std::collections::BTreeSet::new();
        let prefix = format!("{}/", self.prefix);
        let mut token = None;
        // 1,000 keys a page: a run of MAX_WORKERS generators has at most 4 objects each.
        for _ in 0..10 {
            self.calls.fetch_add(1, Ordering::Relaxed);
            let out = self
                .s3
                .list_objects_v2()
                .bucket(&self.bucket)
                .prefix(&prefix)
                .set_continuation_token(token)
                .send()
                .await
                .map_err(aws("ListObjectsV2", self.url("")))?;
            names.extend(
                out.contents()
                    .iter()
                    .filter_map(|o| o.key()?.strip_prefix(&prefix).map(str::to_owned)),
            );
            token = out.next_continuation_token().map(str::to_owned);
            if token.is_none() {
                break;
            }
        }
        Ok(names)
    }

    pub(crate) async fn put_json<T: Serialize>(&self, name: &str, value: &T) -> Result<(), Error> {
        let body = serde_json::to_vec(value)
            .map_err(|e| Error::Internal(format!("encoding {name}: {e}")))?;
        self.put(name, body).await
    }
}
