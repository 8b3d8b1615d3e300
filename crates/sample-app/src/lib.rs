//! The small HTTP service stackproof deploys by default: reports its AZ and task, burns CPU on request.
//!
//! Routes (every response carries the headers `x-az` and `x-task`):
//! - `GET /` -> 200, `{"az":"eu-west-1a","task":"arn:aws:ecs:...:task/cluster/0123"}`;
//! - `GET /health` -> 200, `ok`;
//! - `GET /work?cpu_ms=N&sleep_ms=M` (only when `$WORK_ROUTES` is `1` or `true`) -> burns N ms
//!   of CPU (at most [`MAX_CPU_MS`]) on a blocking thread, then sleeps M ms (at most
//!   [`MAX_SLEEP_MS`]), then 200 with a small JSON; a value that is not a number is a 400;
//! - `POST /fail-health` (only when `$FAULT_ROUTES` is `1` or `true`) -> 200, and from then on
//!   `GET /health` answers 503 `failing`, so a load balancer marks this one task unhealthy
//!   while `/` keeps answering;
//!
//!   Both are off unless the task's environment turns them on (`[service.environment]` of the
//!   stack): on a public load balancer `/work` lets anyone burn the service's CPU and
//!   `/fail-health` lets anyone take a task out. Off, they are 404s like any unknown route;
//! - `POST /orders` with `{"id": "...", "item": "..."}` -> 201 (stored) or 200 (that id was
//!   already stored), once the commit is acknowledged; `GET /orders/{id}` -> 200 with the order
//!   or 404; 503 when the database does not answer after [`orders::ATTEMPTS`] tries. Served
//!   when the task has a database (`$DATABASE_HOST`, see [`orders`]); `/health` never asks
//!   it, so a database failover does not get healthy tasks replaced. With a cache
//!   (`$REDIS_HOST`, see [`cache`]) a read tries the cache first and a committed write is
//!   stored there too; the `x-cache` header says what the cache did (`hit`, `miss`, `stored`,
//!   `down`: a cache that does not answer is passed by, never an error); with
//!   `Cache-Control: only-if-cached` only the cache answers (504 when it has nothing);
//! - anything else -> 404.
//!
//! The AZ and task come from the ECS task metadata endpoint v4 ([`Identity::discover`]), as on
//! Fargate; the sandbox serves the same endpoint. [`serve`] drains in-flight requests when its
//! shutdown future completes.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let identity = stackproof_sample_app::Identity::discover().await;
//! let listener = tokio::net::TcpListener::bind(stackproof_sample_app::bind_addr()?).await?;
//! stackproof_sample_app::serve(listener, identity, std::future::pending::<()>(), std::time::Duration::from_secs(10)).await;
//! # Ok(()) }
//! ```

use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

pub mod cache;
pub mod orders;

/// The most CPU time one `/work` request may burn, in milliseconds.
pub const MAX_CPU_MS: u64 = 10_000;
/// The longest one `/work` request may sleep, in milliseconds.
pub const MAX_SLEEP_MS: u64 = 60_000;
/// How long [`Identity::discover`] waits for the metadata endpoint.
pub const METADATA_TIMEOUT: Duration = Duration::from_secs(2);
/// The port when `$PORT` is unset.
pub const DEFAULT_PORT: u16 = 8080;

const X_AZ: HeaderName = HeaderName::from_static("x-az");
const X_TASK: HeaderName = HeaderName::from_static("x-task");

/// Errors of the sample app.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An environment variable holds something unusable.
    #[error("environment variable {name}={value:?} is not {expected}")]
    Env {
        /// The variable.
        name: &'static str,
        /// Its value.
        value: String,
        /// What is allowed.
        expected: &'static str,
    },
    /// The ECS metadata endpoint could not be read.
    #[error("ECS metadata endpoint {uri}: {reason}")]
    Metadata {
        /// The URI asked.
        uri: String,
        /// What went wrong.
        reason: String,
    },
}

/// Where this task runs, as reported in every response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The availability zone, e.g. `eu-west-1a`, or `unknown`.
    pub az: String,
    /// The task ARN from the metadata endpoint (or `$TASK_ID`), or `unknown`.
    pub task: String,
}

#[derive(serde::Deserialize)]
struct TaskMetadata {
    #[serde(rename = "AvailabilityZone")]
    availability_zone: String,
    #[serde(rename = "TaskARN")]
    task_arn: String,
}

impl Identity {
    /// Reads `GET $ECS_CONTAINER_METADATA_URI_V4/task` (within [`METADATA_TIMEOUT`]); when the
    /// variable is unset or the endpoint fails, falls back to `$AZ` and `$TASK_ID`, else
    /// `unknown`, with a warning on stderr.
    pub async fn discover() -> Identity {
        if let Ok(uri) = std::env::var("ECS_CONTAINER_METADATA_URI_V4") {
            match Self::from_metadata(&uri).await {
                Ok(identity) => return identity,
                Err(err) => eprintln!("sample-app: warning: {err}; falling back to $AZ/$TASK_ID"),
            }
        } else {
            eprintln!(
                "sample-app: warning: ECS_CONTAINER_METADATA_URI_V4 is not set; using $AZ/$TASK_ID"
            );
        }
        let var = |name| std::env::var(name).unwrap_or_else(|_| "unknown".to_owned());
        Identity {
            az: var("AZ"),
            task: var("TASK_ID"),
        }
    }

    /// Reads `GET {base}/task` of a metadata endpoint v4.
    pub async fn from_metadata(base: &str) -> Result<Identity, Error> {
        let uri = format!("{}/task", base.trim_end_matches('/'));
        let fail = |reason: String| Error::Metadata {
            uri: uri.clone(),
            reason,
        };
        let (status, body) = tokio::time::timeout(METADATA_TIMEOUT, http_get(&uri))
            .await
            .map_err(|_| fail(format!("no answer within {METADATA_TIMEOUT:?}")))?
            .map_err(fail)?;
        if status != StatusCode::OK {
            return Err(fail(format!("status {status}")));
        }
        let meta: TaskMetadata =
            serde_json::from_slice(&body).map_err(|err| fail(format!("unexpected JSON: {err}")))?;
        Ok(Identity {
            az: meta.availability_zone,
            task: meta.task_arn,
        })
    }
}

/// A one-shot HTTP/1.1 GET of an `http://` URI; returns status and body.
pub async fn http_get(uri: &str) -> Result<(StatusCode, Bytes), String> {
    let uri: http::Uri = uri.parse().map_err(|err| format!("bad URI: {err}"))?;
    if uri.scheme_str() != Some("http") {
        return Err("only http:// URIs are supported".to_owned());
    }
    let authority = uri.authority().ok_or("URI without host")?.clone();
    let port = authority.port_u16().unwrap_or(80);
    let stream = TcpStream::connect((authority.host(), port))
        .await
        .map_err(|err| format!("connect: {err}"))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|err| format!("handshake: {err}"))?;
    let conn = tokio::spawn(conn);
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let request = Request::get(path)
        .header(http::header::HOST, authority.as_str())
        .body(Empty::<Bytes>::new())
        .map_err(|err| err.to_string())?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|err| format!("request: {err}"))?;
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|err| format!("body: {err}"))?
        .to_bytes();
    conn.abort();
    Ok((status, body))
}

/// The port from `$PORT` (default [`DEFAULT_PORT`]).
pub fn port() -> Result<u16, Error> {
    match std::env::var("PORT") {
        Err(_) => Ok(DEFAULT_PORT),
        Ok(value) => value.parse().map_err(|_| Error::Env {
            name: "PORT",
            value,
            expected: "a port number (1-65535)",
        }),
    }
}

/// The routes that are off unless the task's environment turns them on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Routes {
    /// `GET /work` (`$WORK_ROUTES`).
    pub work: bool,
    /// `POST /fail-health` (`$FAULT_ROUTES`).
    pub fault: bool,
}

impl Routes {
    /// Reads `$WORK_ROUTES` and `$FAULT_ROUTES`: `1` or `true` is on; unset, empty, `0` or
    /// `false` is off; anything else is an error naming the variable.
    pub fn from_env() -> Result<Routes, Error> {
        Ok(Routes {
            work: flag("WORK_ROUTES")?,
            fault: flag("FAULT_ROUTES")?,
        })
    }
}

fn flag(name: &'static str) -> Result<bool, Error> {
    match std::env::var(name) {
        Err(_) => Ok(false),
        Ok(value) => match value.as_str() {
            "1" | "true" => Ok(true),
            "" | "0" | "false" => Ok(false),
            _ => Err(Error::Env {
                name,
                value,
                expected: "1, true, 0 or false",
            }),
        },
    }
}

/// The listen address from `$BIND_ADDR` (default `0.0.0.0`) and [`port`].
pub fn bind_addr() -> Result<SocketAddr, Error> {
    let ip = match std::env::var("BIND_ADDR") {
        Err(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        Ok(value) => value.parse().map_err(|_| Error::Env {
            name: "BIND_ADDR",
            value,
            expected: "an IP address",
        })?,
    };
    Ok(SocketAddr::new(ip, port()?))
}

/// Everything prepared once so a request allocates only its response.
#[derive(Debug)]
struct App {
    root_body: Bytes,
    az: HeaderValue,
    task: HeaderValue,
    /// Which optional routes are served.
    routes: Routes,
    /// Set by `POST /fail-health`: `/health` answers 503.
    failing_health: AtomicBool,
    /// The orders' database, when the task has one.
    db: Option<orders::Database>,
    /// The orders' cache, when the task has one (used with a database only).
    cache: Option<cache::Cache>,
}

/// The header that says what the cache did for a request.
pub const X_CACHE: &str = "x-cache";

/// The cache's key of order `id`.
fn cache_key(id: &str) -> String {
    format!("order:{id}")
}

/// `response` with its `x-cache` header, when the cache took part.
fn with_cache(
    mut response: Response<Full<Bytes>>,
    outcome: Option<cache::Outcome>,
) -> Response<Full<Bytes>> {
    if let Some(o) = outcome {
        response
            .headers_mut()
            .insert(X_CACHE, HeaderValue::from_static(o.as_str()));
    }
    response
}

/// The largest request body read (an order).
const MAX_BODY: usize = 4096;

impl App {
    fn new(
        identity: &Identity,
        routes: Routes,
        db: Option<orders::Database>,
        cache: Option<cache::Cache>,
    ) -> App {
        let header = |value: &str| {
            HeaderValue::from_str(value).unwrap_or_else(|_| HeaderValue::from_static("invalid"))
        };
        let body = serde_json::json!({ "az": identity.az, "task": identity.task });
        App {
            root_body: Bytes::from(body.to_string()),
            az: header(&identity.az),
            task: header(&identity.task),
            routes,
            failing_health: AtomicBool::new(false),
            db,
            cache,
        }
    }

    /// `POST /orders` and `GET /orders/{id}`.
    async fn orders(
        &self,
        db: &orders::Database,
        request: Request<Incoming>,
    ) -> Response<Full<Bytes>> {
        const JSON: &str = "application/json";
        const TEXT: &str = "text/plain; charset=utf-8";
        let unavailable = |e: String| {
            eprintln!("sample-app: database: {e}");
            self.respond(
                StatusCode::SERVICE_UNAVAILABLE,
                TEXT,
                Bytes::from(format!("database unavailable: {e}\n")),
            )
        };
        let path = request.uri().path().to_owned();
        if request.method() == Method::POST && path == "/orders" {
            let limited = http_body_util::Limited::new(request.into_body(), MAX_BODY);
            let body = match limited.collect().await {
                Ok(b) => b.to_bytes(),
                Err(e) => {
                    return self.respond(
                        StatusCode::BAD_REQUEST,
                        TEXT,
                        Bytes::from(format!("body: {e} (at most {MAX_BODY} bytes)\n")),
                    );
                }
            };
            let order: orders::Order = match serde_json::from_slice(&body) {
                Ok(o) => o,
                Err(e) => {
                    return self.respond(
                        StatusCode::BAD_REQUEST,
                        TEXT,
                        Bytes::from(format!(
                            "body: {e}; expected {{\"id\": \"...\", \"item\": \"...\"}}\n"
                        )),
                    );
                }
            };
            if let Err(e) = order.check() {
                return self.respond(StatusCode::BAD_REQUEST, TEXT, Bytes::from(format!("{e}\n")));
            }
            return match db.put(&order).await {
                Ok(created) => {
                    let body = serde_json::to_string(&order).unwrap_or_default();
                    // Write-through once committed, so a read finds it in the cache.
                    let outcome = self.cache_set(&order.id, body.as_bytes()).await;
                    with_cache(
                        self.respond(
                            if created {
                                StatusCode::CREATED
                            } else {
                                StatusCode::OK
                            },
                            JSON,
                            Bytes::from(body),
                        ),
                        outcome,
                    )
                }
                Err(e) => unavailable(e),
            };
        }
        if request.method() == Method::GET
            && let Some(id) = path.strip_prefix("/orders/")
        {
            // `Cache-Control: only-if-cached` (RFC 9111 5.2.1.7): the cache's answer alone, 504
            // when it has none; what the proof probes the cache with.
            let only_if_cached = request
                .headers()
                .get_all(hyper::header::CACHE_CONTROL)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(','))
                .any(|d| d.trim().eq_ignore_ascii_case("only-if-cached"));
            // Cache-aside: the cache first; the database on a miss (then cached) or when the
            // cache does not answer.
            let mut outcome = None;
            if let Some(cache) = &self.cache {
                match cache.get(&cache_key(id)).await {
                    Ok(Some(value)) => {
                        return with_cache(
                            self.respond(StatusCode::OK, JSON, Bytes::from(value)),
                            Some(cache::Outcome::Hit),
                        );
                    }
                    Ok(None) => outcome = Some(cache::Outcome::Miss),
                    Err(e) => {
                        eprintln!("sample-app: cache: {e}");
                        outcome = Some(cache::Outcome::Down);
                    }
                }
            }
            if only_if_cached {
                return with_cache(
                    self.respond(
                        StatusCode::GATEWAY_TIMEOUT,
                        TEXT,
                        Bytes::from_static(b"not in the cache (only-if-cached)\n"),
                    ),
                    outcome,
                );
            }
            return match db.get(id).await {
                Ok(Some(order)) => {
                    let body = serde_json::to_string(&order).unwrap_or_default();
                    if outcome == Some(cache::Outcome::Miss)
                        && self.cache_set(id, body.as_bytes()).await == Some(cache::Outcome::Down)
                    {
                        outcome = Some(cache::Outcome::Down);
                    }
                    with_cache(
                        self.respond(StatusCode::OK, JSON, Bytes::from(body)),
                        outcome,
                    )
                }
                Ok(None) => with_cache(
                    self.respond(
                        StatusCode::NOT_FOUND,
                        TEXT,
                        Bytes::from_static(b"no such order\n"),
                    ),
                    outcome,
                ),
                Err(e) => with_cache(unavailable(e), outcome),
            };
        }
        self.respond(
            StatusCode::NOT_FOUND,
            TEXT,
            Bytes::from_static(b"not found\n"),
        )
    }

    /// Stores an order's JSON in the cache, when there is one: `stored` or `down`.
    async fn cache_set(&self, id: &str, body: &[u8]) -> Option<cache::Outcome> {
        let cache = self.cache.as_ref()?;
        Some(match cache.set(&cache_key(id), body).await {
            Ok(()) => cache::Outcome::Stored,
            Err(e) => {
                eprintln!("sample-app: cache: {e}");
                cache::Outcome::Down
            }
        })
    }

    fn respond(
        &self,
        status: StatusCode,
        content_type: &'static str,
        body: Bytes,
    ) -> Response<Full<Bytes>> {
        let mut response = Response::new(Full::new(body));
        *response.status_mut() = status;
        let headers = response.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
        headers.insert(X_AZ, self.az.clone());
        headers.insert(X_TASK, self.task.clone());
        response
    }

    async fn handle(&self, request: Request<Incoming>) -> Response<Full<Bytes>> {
        const JSON: &str = "application/json";
        const TEXT: &str = "text/plain; charset=utf-8";
        if self.routes.fault
            && request.method() == Method::POST
            && request.uri().path() == "/fail-health"
        {
            self.failing_health.store(true, Ordering::Relaxed);
            eprintln!("sample-app: POST /fail-health: /health answers 503 from now on");
            return self.respond(
                StatusCode::OK,
                TEXT,
                Bytes::from_static(b"health checks fail from now on\n"),
            );
        }
        if let Some(db) = &self.db
            && (request.uri().path() == "/orders" || request.uri().path().starts_with("/orders/"))
        {
            return self.orders(db, request).await;
        }
        if request.method() != Method::GET && request.method() != Method::HEAD {
            return self.respond(
                StatusCode::NOT_FOUND,
                TEXT,
                Bytes::from_static(b"not found\n"),
            );
        }
        match request.uri().path() {
            "/" => self.respond(StatusCode::OK, JSON, self.root_body.clone()),
            "/health" if self.failing_health.load(Ordering::Relaxed) => self.respond(
                StatusCode::SERVICE_UNAVAILABLE,
                TEXT,
                Bytes::from_static(b"failing"),
            ),
            "/health" => self.respond(StatusCode::OK, TEXT, Bytes::from_static(b"ok")),
            "/work" if self.routes.work => match parse_work(request.uri().query().unwrap_or("")) {
                Err(message) => self.respond(StatusCode::BAD_REQUEST, TEXT, Bytes::from(message)),
                Ok((cpu_ms, sleep_ms)) => {
                    if cpu_ms > 0 {
                        let _ = tokio::task::spawn_blocking(move || burn_cpu(cpu_ms)).await;
                    }
                    if sleep_ms > 0 {
                        tokio::time::sleep(Duration::from_millis(sleep_ms)).await;
                    }
                    let body = format!(r#"{{"cpu_ms":{cpu_ms},"sleep_ms":{sleep_ms}}}"#);
                    self.respond(StatusCode::OK, JSON, Bytes::from(body))
                }
            },
            _ => self.respond(
                StatusCode::NOT_FOUND,
                TEXT,
                Bytes::from_static(b"not found\n"),
            ),
        }
    }
}

/// Parses `cpu_ms` and `sleep_ms` of a `/work` query, clamped to [`MAX_CPU_MS`] and [`MAX_SLEEP_MS`].
fn parse_work(query: &str) -> Result<(u64, u64), String> {
    let (mut cpu, mut sleep) = (0, 0);
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let slot = match key {
            "cpu_ms" => &mut cpu,
            "sleep_ms" => &mut sleep,
            _ => continue,
        };
        *slot = value
            .parse::<u64>()
            .map_err(|_| format!("{key}={value:?} is not a whole number of milliseconds\n"))?;
    }
    Ok((cpu.min(MAX_CPU_MS), sleep.min(MAX_SLEEP_MS)))
}

/// Spins for `ms` milliseconds of wall time on the calling thread (one core busy).
fn burn_cpu(ms: u64) {
    let end = Instant::now() + Duration::from_millis(ms);
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    while Instant::now() < end {
        for _ in 0..1_000 {
            x = x.rotate_left(5) ^ x.wrapping_mul(0x2545_f491_4f6c_dd1d);
        }
        std::hint::black_box(x);
    }
}

/// Serves HTTP/1.1 on `listener` until `shutdown` completes, then stops accepting, lets
/// in-flight requests finish (keep-alive connections close after their current response) for
/// at most `drain`, and returns. The fault routes are off (see [`serve_with`]).
pub async fn serve(
    listener: TcpListener,
    identity: Identity,
    shutdown: impl Future<Output = ()>,
    drain: Duration,
) {
    serve_with(
        listener,
        identity,
        Routes::default(),
        None,
        None,
        shutdown,
        drain,
    )
    .await;
}

/// [`serve`], with the optional routes `routes` turns on, the orders' database `db` and their
/// cache `cache`.
pub async fn serve_with(
    listener: TcpListener,
    identity: Identity,
    routes: Routes,
    db: Option<orders::Database>,
    cache: Option<cache::Cache>,
    shutdown: impl Future<Output = ()>,
    drain: Duration,
) {
    let app = Arc::new(App::new(&identity, routes, db, cache));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut connections = JoinSet::new();
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.timer(hyper_util::rt::TokioTimer::new());
    let builder = Arc::new(builder);
    tokio::pin!(shutdown);
    loop {
        while connections.try_join_next().is_some() {}
        let (stream, _) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    // EMFILE and the like: back off a little instead of spinning.
                    eprintln!("sample-app: accept failed: {err}");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let builder = builder.clone();
        let mut stop = stop_rx.clone();
        connections.spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let app = app.clone();
                async move { Ok::<_, Infallible>(app.handle(request).await) }
            });
            let conn = builder.serve_connection(TokioIo::new(stream), service);
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => return,
                _ = stop.wait_for(|stop| *stop) => {}
            }
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        });
    }
    drop(listener);
    let _ = stop_tx.send(true);
    let drained = tokio::time::timeout(drain, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        eprintln!(
            "sample-app: {} connection(s) still busy after {drain:?}; closing them",
            connections.len()
        );
        connections.abort_all();
    }
}

/// Completes on the first SIGTERM or SIGINT (Ctrl-C). The handlers are installed when this is
/// called (inside a Tokio runtime), not when the future is first polled, so a signal that arrives
/// during start-up is not lost.
pub fn shutdown_signal() -> impl Future<Output = ()> + Send {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let signals = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        );
        async move {
            match signals {
                (Ok(mut term), Ok(mut int)) => {
                    tokio::select! {
                        _ = term.recv() => {}
                        _ = int.recv() => {}
                    }
                }
                _ => {
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
        }
    }
    #[cfg(not(unix))]
    {
        async move {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// The `health` subcommand: `GET http://127.0.0.1:$PORT/health` within 3 s; true on a 200.
pub async fn probe_health() -> bool {
    let port = match port() {
        Ok(port) => port,
        Err(err) => {
            eprintln!("sample-app health: {err}");
            return false;
        }
    };
    let uri = format!("http://127.0.0.1:{port}/health");
    match tokio::time::timeout(Duration::from_secs(3), http_get(&uri)).await {
        Ok(Ok((StatusCode::OK, _))) => true,
        Ok(Ok((status, _))) => {
            eprintln!("sample-app health: {uri} answered {status}");
            false
        }
        Ok(Err(err)) => {
            eprintln!("sample-app health: {uri}: {err}");
            false
        }
        Err(_) => {
            eprintln!("sample-app health: {uri}: no answer within 3s");
            false
        }
    }
}

/// How long in-flight requests may take to finish after SIGTERM.
const DRAIN: Duration = Duration::from_secs(10);

/// The program's whole life, given its arguments (without the program name): `serve` (the
/// default) listens until SIGTERM and drains; `health` probes the local server (exit 0 when
/// healthy). The `sample-app` binary and `stackproof-sample-app` (installed beside the
/// `stackproof` CLI) both run this.
pub async fn main_with_args(args: impl IntoIterator<Item = String>) -> std::process::ExitCode {
    use std::process::ExitCode;
    let mut args = args.into_iter();
    match args.next().as_deref() {
        None | Some("serve") => {}
        Some("health") => {
            return if probe_health().await {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            };
        }
        Some(other) => {
            eprintln!("sample-app: unknown command {other:?}; usage: sample-app [serve|health]");
            return ExitCode::from(2);
        }
    }
    let addr = match bind_addr() {
        Ok(addr) => addr,
        Err(err) => {
            eprintln!("sample-app: {err}");
            return ExitCode::from(2);
        }
    };
    let routes = match Routes::from_env() {
        Ok(routes) => routes,
        Err(err) => {
            eprintln!("sample-app: {err}");
            return ExitCode::from(2);
        }
    };
    let db = match orders::Database::from_env() {
        Ok(db) => db,
        Err(err) => {
            eprintln!("sample-app: {err}");
            return ExitCode::from(2);
        }
    };
    let cache = match cache::Cache::from_env() {
        Ok(cache) => cache,
        Err(err) => {
            eprintln!("sample-app: {err}");
            return ExitCode::from(2);
        }
    };
    let shutdown = shutdown_signal();
    let identity = Identity::discover().await;
    let listener = match tokio::net::TcpListener::bind(addr).await {
        Ok(listener) => listener,
        Err(err) => {
            eprintln!("sample-app: cannot listen on {addr}: {err}");
            return ExitCode::FAILURE;
        }
    };
    eprintln!(
        "sample-app: listening on {addr} (az {}, task {})",
        identity.az, identity.task
    );
    serve_with(listener, identity, routes, db, cache, shutdown, DRAIN).await;
    eprintln!("sample-app: stopped");
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn work_query_is_parsed_and_bounded() {
        assert_eq!(parse_work(""), Ok((0, 0)));
        assert_eq!(parse_work("cpu_ms=5"), Ok((5, 0)));
        assert_eq!(parse_work("sleep_ms=7&x=1&cpu_ms=3"), Ok((3, 7)));
        assert_eq!(
            parse_work("cpu_ms=999999999&sleep_ms=999999999"),
            Ok((MAX_CPU_MS, MAX_SLEEP_MS))
        );
        assert!(parse_work("cpu_ms=abc").is_err());
        assert!(parse_work("sleep_ms=-1").is_err());
    }
}
