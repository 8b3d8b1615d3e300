//! An open-loop HTTP load generator: coordinated-omission-corrected latency, per-AZ breakdowns,
//! SLO verdicts.
//!
//! A schedule gives *intended* send times (constant rate, or linear ramps in [`Config::stages`]);
//! worker threads, each a single-threaded tokio runtime with its share of the schedule and of the
//! connections, release them on time and send them on HTTP/1.1 keep-alive connections (at most
//! [`Config::connections`]) that each connection's task speaks itself: the request is encoded
//! once per run, responses are parsed with `httparse` and their bodies framed by length, chunks or
//! close; an idle connection the server closed is reopened before the next request. Latency is recorded
//! from the intended time (corrected) and from the actual send (raw). A request whose slot comes
//! while every connection is busy waits in the queue and is charged from its intended time; it
//! is never dropped (late starts are counted; requests still queued when the drain deadline, one
//! request timeout after the schedule ends, passes are reported as `unsent` and count as errors).
//! Each worker paces itself on its own reactor (a timerfd with the `precise` pacer, so nothing
//! crosses threads per request) and releases every due slot per wake-up, waking at most once per
//! 0.1 ms (above 10,000 requests/s per worker slots go out in small batches, each at most 0.1 ms
//! late); the pacers' own lateness is reported separately. Workers record into one frame per second (HdrHistograms,
//! counts per status / error kind / remote address / breakdown header value) that the collector
//! merges, so memory stays flat however long the run.
//!
//! The host is re-resolved when its answer expires (the records' TTL when the resolver knows it,
//! [`Config::dns_server`] asks a DNS server directly; at most every [`Config::dns_ttl`] seconds)
//! and connection `i` goes to address `i mod n`, so connections spread over every address (an
//! ALB answers with one per AZ) and move when the answer changes. A connection that cannot
//! connect to its address (refused, or no answer within [`Config::connect_timeout`], as when a
//! load balancer node's subnet is cut off) tries the next addresses of the answer in turn, as
//! curl, Go's dialer and browsers do; each failed attempt is counted per address
//! (`connect_failures`), and the request's latency includes the time it cost.
//! [`Config::resolve`] maps a host to addresses like curl `--resolve`; [`Config::resolver`]
//! injects any [`Resolve`].
//!
//! `https://` URLs use rustls (aws-lc-rs crypto, TLS 1.2 and 1.3, ALPN `http/1.1`) on the same raw
//! HTTP/1.1 keep-alive connections; the maximum connection age and requests per connection
//! apply as for plain HTTP, and a reopened connection resumes its TLS session. The server name (SNI
//! and the certificate check) is always the URL's host, also when [`Config::resolve`] maps it to
//! another address. Trusted roots are the system's (`rustls-native-certs`: the platform store, or
//! `SSL_CERT_FILE` / `SSL_CERT_DIR`) plus the PEM certificates of [`Config::cacert`]; a `cacert`
//! that cannot be read or holds no certificate is an [`Error::Invalid`] before the run. The
//! [`Config::connect_timeout`] covers the TCP connect and the TLS handshake; a failed handshake
//! (unknown issuer, wrong name, expired, not TLS at all) or any TLS error later counts as error
//! kind `tls`.
//!
//! ```no_run
//! # async fn f() -> Result<(), Box<dyn std::error::Error>> {
//! let config = stackproof_loadtest::Config {
//!     url: "http://127.0.0.1:8080/".into(),
//!     rate: 500.0,
//!     duration: 10.0,
//!     slo: stackproof_loadtest::Slo { p99_ms: Some(50.0), max_error_rate: Some(0.001), ..Default::default() },
//!     ..Default::default()
//! };
//! let report = stackproof_loadtest::run(config.clone(), Some(&|s: &stackproof_loadtest::Snapshot| eprintln!("{}", s.line()))).await?;
//! println!("{}", report.summary());
//! let verdict = report.verdict(&config.slo);
//! println!("{verdict}");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # }
//! ```
//!
//! For a run in the background (e.g. while a fault is injected) use [`start`]: the returned
//! [`RunHandle`] gives a `watch` of [`Snapshot`]s (one per second), the series so far, `stop()`
//! and `wait()`.
//!
//! # JSON schema (version 1)
//!
//! [`Report::to_json`] writes one object; fields are only ever added within a schema version.
//! Latencies are milliseconds (floats), rates per second, counts integers.
//!
//! | field | type | meaning |
//! |---|---|---|
//! | `schema` | int | 1 |
//! | `url`, `method` | string | target |
//! | `rate` | float | constant or starting rate |
//! | `stages` | `[{target, duration}]` | ramps (one stage for a constant run) |
//! | `connections`, `threads` | int | connection cap, worker threads |
//! | `started_unix_ms` | int | start of the schedule |
//! | `schedule_s`, `elapsed_s` | float | scheduled length; wall time to the end of the drain |
//! | `scheduled` | int | requests released by the schedule = `sent + unsent` |
//! | `sent`, `completed`, `ok`, `errors`, `unsent` | int | started; responses (any status); 2xx/3xx; failed without a response; never started |
//! | `late_starts` | int | started more than `late-start-ms` after the intended time |
//! | `connects` | int | connections opened |
//! | `achieved_rate` | float | (completed + errors) / schedule_s |
//! | `statuses` | `{"200": n}` | responses per status |
//! | `errors_by_kind` | `{"refused"\|"timeout"\|"reset"\|"dns"\|"tls"\|"other": n}` | every kind, zeros included |
//! | `latency_ms.corrected`, `latency_ms.raw`, `pacer_lateness_ms` | percentiles | `{count, min, mean, p50, p90, p95, p99, p99_9, max}` |
//! | `by_addr` | `{"ip:port": n}` | responses and errors per remote address |
//! | `errors_by_addr` | `{"ip:port": n}` | failed requests per remote address (also in `by_addr`) |
//! | `connect_failures` | `{"ip:port": n}` | connection attempts that failed per address (a next address was tried) |
//! | `by_header` | `{"x-az": {"value": n}}` | responses per breakdown header value (`"(none)"` when absent) |
//! | `dns` | `{resolutions, failures, changes, addresses}` | DNS activity |
//! | `series` | `[second]` | one per second: `{t, sent, completed, ok, errors, late_starts, p50_ms, p99_ms, max_ms, statuses, errors_by_kind, by_addr, errors_by_addr, connect_failures, by_header}` |
//!
//! Error rate = (errors + unsent + 5xx) / scheduled; success rate = ok / scheduled.
//!
//! Other outputs: [`Report::summary`] (human), [`Report::to_csv`] (series),
//! [`Report::write_interval_log`] (HdrHistogram interval log of corrected latency, µs).

mod config;
mod dns;
mod duration;
mod engine;
mod error;
mod h1;
mod merge;
mod pacer;
mod record;
mod report;
mod resolve;
mod schedule;
mod tls;

pub use config::{
    Config, MAX_RATE_PER_CONNECTION, MAX_START_LATE, Pacer, Problem, Problems, Slo, Stage, Stripe,
};
pub use dns::DnsResolver;
pub use duration::parse_duration;
pub use engine::{RunHandle, run, start};
pub use error::Error;
pub use merge::{MergeError, Merged, merge_interval_logs};
pub use record::{ErrorKind, Frame, HIST_MAX_US, new_histogram};
pub use report::{
    Dns, Latency, Percentiles, Report, Second, Snapshot, Verdict, histogram, scheduled_requests,
};
pub use resolve::{
    Resolve, ResolveFuture, Resolved, ResolvedFuture, StaticResolver, SystemResolver,
};
pub use schedule::Schedule;
