//! One load generator of a distributed run, as an ECS task runs it (`stackproof loadgen`): it
//! says where it runs, waits for the start object, sends its stripe of the shared schedule
//! from the shared start, uploads its progress every 2 seconds and its whole report at the end.

use std::time::Duration;

use loadtest::Stripe;

use super::store::{self, Counts, Hello, Start, Store};
use crate::error::Error;

/// How often a generator uploads its progress.
pub(crate) const PROGRESS_EVERY: Duration = Duration::from_secs(2);

/// Seconds of interval log in each progress upload.
pub(crate) const LIVE_SECONDS: usize = 5;

/// How often a generator looks for the start object.
const START_POLL: Duration = Duration::from_millis(250);

/// What a generator is told (the task's command).
#[derive(Debug, Clone)]
pub struct WorkerOptions {
    /// The run's bucket.
    pub bucket: String,
    /// The run's folder in it.
    pub prefix: String,
    /// Its share of the schedule.
    pub stripe: Stripe,
    /// How long to wait for the start object.
    pub wait: Duration,
    /// Its zone (from the task metadata endpoint).
    pub zone: String,
    /// Its task's ARN.
    pub task_arn: String,
}

/// Runs generator `opts.stripe` of the run in `opts.bucket`/`opts.prefix` to its end; its
/// report is in S3 when this returns `Ok`. A failure is uploaded too (`error.txt`), so the
/// coordinator can say why. `log` gets one line per event.
pub async fn work(
    s3: aws_sdk_s3::Client,
    opts: &WorkerOptions,
    log: &(dyn Fn(&str) + Sync),
) -> Result<loadtest::Report, Error> {
    let store = Store::new(s3, &opts.bucket, &opts.prefix);
    let i = opts.stripe.index;
    let result = run(&store, opts, log).await;
    if let Err(e) = &result {
        // Best effort: the coordinator also sees the task stop.
        let _ = store
            .put(&store::error(i), e.to_string().into_bytes())
            .await;
    }
    result
}

async fn run(
    store: &Store,
    opts: &WorkerOptions,
    log: &(dyn Fn(&str) + Sync),
) -> Result<loadtest::Report, Error> {
    let i = opts.stripe.index;
    store
        .put_json(
            &store::hello(i),
            &Hello {
                zone: opts.zone.clone(),
                task_arn: opts.task_arn.clone(),
                pid: std::process::id(),
            },
        )
        .await?;
    log(&format!(
        "generator {i}/{} (pid {}) in {}: waiting for {}",
        opts.stripe.of,
        std::process::id(),
        opts.zone,
        store.url(store::START)
    ));
    let start = wait_for_start(store, opts.wait).await?;
    if start.workers != opts.stripe.of {
        return Err(Error::Generators(format!(
            "the start object is for {} generators, this one was started as {i}/{}",
            start.workers, opts.stripe.of
        )));
    }
    let mut config = start.config;
    config.worker = Some(opts.stripe);
    config.start_at_unix_ms = Some(start.t0_unix_ms);
    let handle = loadtest::start(config).await?;
    log(&format!(
        "generator {i}/{}: sending its share from {}",
        opts.stripe.of, start.t0_unix_ms
    ));
    let mut snapshots = handle.snapshots();
    let mut last_upload = tokio::time::Instant::now();
    loop {
        let over = tokio::select! {
            changed = snapshots.changed() => changed.is_err(),
            () = tokio::time::sleep(PROGRESS_EVERY) => false,
        };
        if over {
            break;
        }
        if last_upload.elapsed() >= PROGRESS_EVERY {
            last_upload = tokio::time::Instant::now();
            let snap = snapshots.borrow().clone();
            let counts = Counts {
                sent: snap.sent,
                completed: snap.completed,
                errors: snap.errors,
                seconds: snap.seconds,
            };
            // The last seconds only: the live view needs no more. Progress is best effort: a
            // failed upload is retried at the next one.
            let tail = snap.seconds.saturating_sub(LIVE_SECONDS);
            if let Err(e) = store
                .put_progress(i, &counts, handle.interval_log_from(tail))
                .await
            {
                log(&format!("generator {i}: progress not uploaded: {e}"));
            }
        }
    }
    let report = handle.wait().await?;
    store.put(&store::report(i), report.to_shard()).await?;
    log(&format!(
        "generator {i}/{}: done, {} sent, {} responses, {} errors, p99 {:.2} ms",
        opts.stripe.of,
        report.sent,
        report.completed,
        report.errors,
        report.latency_ms.corrected.p99
    ));
    Ok(report)
}

async fn wait_for_start(store: &Store, wait: Duration) -> Result<Start, Error> {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        if let Some(start) = store.get_json::<Start>(store::START).await? {
            return Ok(start);
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(Error::Generators(format!(
                "no start object at {} within {wait:?}",
                store.url(store::START)
            )));
        }
        tokio::time::sleep(START_POLL).await;
    }
}

/// The zone and task ARN of the task this process runs in, from the ECS task metadata
/// endpoint v4 (`ECS_CONTAINER_METADATA_URI_V4`); `None` outside a task.
pub async fn task_identity() -> Option<(String, String)> {
    let base = std::env::var("ECS_CONTAINER_METADATA_URI_V4").ok()?;
    let rest = base.strip_prefix("http://")?;
    let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
    let body = tokio::time::timeout(
        Duration::from_secs(5),
        http_get(host, &format!("/{path}/task")),
    )
    .await
    .ok()??;
    let doc: serde_json::Value = serde_json::from_str(&body).ok()?;
    Some((
        doc.get("AvailabilityZone")?.as_str()?.to_owned(),
        doc.get("TaskARN")?.as_str()?.to_owned(),
    ))
}

/// A plain HTTP/1.0 GET of `path` on `host` (the metadata endpoint speaks nothing else).
async fn http_get(host: &str, path: &str) -> Option<String> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut stream = tokio::net::TcpStream::connect(host).await.ok()?;
    let request = format!("GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n");
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut response = Vec::new();
    stream.take(1 << 20).read_to_end(&mut response).await.ok()?;
    let text = String::from_utf8(response).ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.")
        .then_some(())
        .filter(|()| head.split_whitespace().nth(1) == Some("200"))?;
    Some(body.to_owned())
}
