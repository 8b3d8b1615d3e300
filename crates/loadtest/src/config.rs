//! Run configuration ([`Config`], [`Stage`], [`Slo`]) and its validation into a checked [`Spec`].

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{HOST, HeaderName, HeaderValue};
use http::{HeaderMap, Method, Uri};
use serde::{Deserialize, Serialize};

use crate::resolve::Resolve;
use crate::tls::{TlsSpec, read_cacert};

/// Highest rate one connection is assumed able to carry (a loopback HTTP/1.1 exchange takes at
/// least ~10 µs), used to reject rates the connection cap cannot possibly carry.
pub const MAX_RATE_PER_CONNECTION: f64 = 100_000.0;

/// Everything a run needs. Deserializes from a TOML/JSON table with kebab-case keys; every field
/// has a default, documented on the field.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct Config {
    /// Target URL, `http://host[:port]/path?query` or `https://...` (TLS with rustls; the
    /// certificate must be valid for the URL's host, also when `resolve` maps it elsewhere).
    /// Default `http://127.0.0.1:8080/`.
    pub url: String,
    /// HTTP method. Default `GET`.
    pub method: String,
    /// Extra request headers, each `"Name: value"`. Default none (a `Host` header is derived from
    /// the URL unless given here).
    pub headers: Vec<String>,
    /// Request body (sent with every request). Default empty.
    pub body: String,
    /// Requests per second for a constant-rate run, or the starting rate when `stages` is not
    /// empty. Default 100.
    pub rate: f64,
    /// Run length in seconds for a constant-rate run (ignored when `stages` is not empty).
    /// Default 10.
    pub duration: f64,
    /// Ramps, k6 style: each stage goes linearly from the previous rate (the first from `rate`)
    /// to its `target` over its `duration`. Default none (constant `rate` for `duration`).
    pub stages: Vec<Stage>,
    /// Maximum number of concurrent connections (the connection cap). Default 50.
    pub connections: usize,
    /// Worker threads, each with its own single-threaded runtime, share of the connections and
    /// share of the schedule (worker `w` of `n` paces slots `w, w + n, ...`, and only its own
    /// connections take them). Default 1.
    pub threads: usize,
    /// TCP connect timeout in seconds. Default 2.
    pub connect_timeout: f64,
    /// Request timeout in seconds (send to last body byte). Default 10.
    pub timeout: f64,
    /// Close and reopen a connection after this many seconds. Default none (no limit).
    pub max_connection_age: Option<f64>,
    /// Close and reopen a connection after this many requests. Default none (no limit).
    pub max_requests_per_connection: Option<u64>,
    /// Re-resolve the host every this many seconds during the run, or sooner when the answer's
    /// TTL (known with `dns-server`) is shorter; 0 resolves once. Default 5.
    pub dns_ttl: f64,
    /// Ask this DNS server (`ip:port`, UDP) for the host's A records instead of the system
    /// resolver, and honour their TTL (e.g. the sandbox's server, which answers for its load
    /// balancers' names). Default none.
    pub dns_server: Option<String>,
    /// Address overrides like curl `--resolve`: `"host:port:addr[,addr...]"`. Default none.
    pub resolve: Vec<String>,
    /// A PEM file of CA certificates (one or more) trusted for `https://` URLs on top of the
    /// system's roots. Default none (the system's roots only).
    pub cacert: Option<PathBuf>,
    /// Response headers whose values get a per-value breakdown (total and per second).
    /// Default `["x-az"]`.
    pub breakdown_headers: Vec<String>,
    /// A request that starts more than this many milliseconds after its intended time counts as
    /// a late start. Default 1.
    pub late_start_ms: f64,
    /// How intended send times are released: `precise` (each worker's reactor wakes on a timerfd
    /// at the slot's time, Linux; adds ~0.01-0.05 ms) or `timer` (tokio's 1 ms timer; fewer
    /// wake-ups at high rates, adds up to ~1 ms to corrected latency). Default `precise`.
    pub pacer: Pacer,
    /// Service level objectives that turn the run into a verdict. Default none (always passes).
    pub slo: Slo,
    /// This generator's share of a schedule several generators send together: worker `index`
    /// of `of` sends the schedule's requests `k` with `k mod of == index` (their interval logs
    /// add up exactly: [`crate::merge_interval_logs`]). Default none (the whole schedule).
    pub worker: Option<Stripe>,
    /// When the schedule starts, ms since the Unix epoch: the same instant for every worker of
    /// a striped run. Default none (as soon as the run starts). A start already past by more
    /// than [`MAX_START_LATE`] fails the run.
    pub start_at_unix_ms: Option<u64>,
    /// A custom resolver (tests, embedding); not configurable from TOML. Default: the system
    /// resolver with the `resolve` overrides.
    #[serde(skip)]
    pub resolver: Option<Arc<dyn Resolve>>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            url: "http://127.0.0.1:8080/".into(),
            method: "GET".into(),
            headers: Vec::new(),
            body: String::new(),
            rate: 100.0,
            duration: 10.0,
            stages: Vec::new(),
            connections: 50,
            threads: 1,
            connect_timeout: 2.0,
            timeout: 10.0,
            max_connection_age: None,
            max_requests_per_connection: None,
            dns_ttl: 5.0,
            dns_server: None,
            resolve: Vec::new(),
            cacert: None,
            breakdown_headers: vec!["x-az".into()],
            late_start_ms: 1.0,
            pacer: Pacer::Precise,
            slo: Slo::default(),
            worker: None,
            start_at_unix_ms: None,
            resolver: None,
        }
    }
}

/// How late a shared start (`start-at-unix-ms`) may be when the run begins: later, the first
/// requests would be late by design, and the run fails rather than measure the load generator.
pub const MAX_START_LATE: std::time::Duration = std::time::Duration::from_millis(100);

/// One generator's share of a striped schedule: worker `index` of `of` (`"2/4"` is the third
/// of four).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stripe {
    /// Which share, 0-based.
    pub index: u32,
    /// How many generators share the schedule.
    pub of: u32,
}

impl std::str::FromStr for Stripe {
    type Err = String;

    /// `INDEX/OF`, such as `0/4`.
    fn from_str(s: &str) -> Result<Self, String> {
        let parsed = s
            .split_once('/')
            .and_then(|(i, n)| Some((i.trim().parse().ok()?, n.trim().parse().ok()?)));
        match parsed {
            Some((index, of)) if of >= 1 && index < of => Ok(Stripe { index, of }),
            _ => Err(format!(
                "{s:?} is not a worker share: INDEX/OF with 0 <= INDEX < OF, such as 0/4"
            )),
        }
    }
}

/// How intended send times are released (see [`Config::pacer`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Pacer {
    /// A timerfd on each worker's reactor: sub-millisecond wake-ups (tokio's timer elsewhere than
    /// Linux).
    #[default]
    Precise,
    /// tokio's millisecond timer on each worker.
    Timer,
}

/// One ramp of a staged run.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct Stage {
    /// Rate (requests per second) reached at the end of the stage. Default 0.
    pub target: f64,
    /// Stage length in seconds. Default 0 (invalid: must be set).
    pub duration: f64,
}

/// Service level objectives. Every field is optional; unset thresholds are not checked.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct Slo {
    /// Corrected p50 latency must be at most this many ms. Default none.
    pub p50_ms: Option<f64>,
    /// Corrected p95 latency must be at most this many ms. Default none.
    pub p95_ms: Option<f64>,
    /// Corrected p99 latency must be at most this many ms. Default none.
    pub p99_ms: Option<f64>,
    /// Corrected maximum latency must be at most this many ms. Default none.
    pub max_ms: Option<f64>,
    /// Error rate (transport errors, unsent requests and 5xx responses over scheduled requests),
    /// as a fraction 0..=1, must be at most this. Default none.
    pub max_error_rate: Option<f64>,
    /// Success rate (2xx/3xx responses over scheduled requests), a fraction 0..=1, must be at
    /// least this. Default none.
    pub min_success_rate: Option<f64>,
    /// Latency threshold (ms) for `max-fraction-over`. Default none.
    pub over_ms: Option<f64>,
    /// Fraction 0..=1 of completed requests allowed slower than `over-ms`. Default none.
    pub max_fraction_over: Option<f64>,
}

/// One invalid input: the field, the value given and what is allowed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// Field name, kebab-case as in the config file (`rate`, `stages[1].duration`).
    pub field: String,
    /// The value given.
    pub value: String,
    /// What is allowed.
    pub allowed: String,
}

/// Every problem found in a [`Config`]; validation reports them all at once.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Problems(pub Vec<Problem>);

impl Problems {
    fn push(
        &mut self,
        field: impl Into<String>,
        value: impl fmt::Display,
        allowed: impl Into<String>,
    ) {
        self.0.push(Problem {
            field: field.into(),
            value: value.to_string(),
            allowed: allowed.into(),
        });
    }
    /// True when no problem was found.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Display for Problems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(
                f,
                "{}: {:?} is not allowed: {}",
                p.field, p.value, p.allowed
            )?;
        }
        Ok(())
    }
}

/// A checked [`Config`]: everything parsed, every number in range.
#[derive(Clone, Debug)]
pub(crate) struct Spec {
    pub(crate) host: String,
    pub(crate) port: u16,
    pub(crate) method: Method,
    pub(crate) path: Uri,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
    pub(crate) start_rate: f64,
    pub(crate) stages: Vec<Stage>,
    pub(crate) total: Duration,
    pub(crate) connections: usize,
    pub(crate) threads: usize,
    pub(crate) connect_timeout: Duration,
    pub(crate) timeout: Duration,
    pub(crate) max_age: Option<Duration>,
    pub(crate) max_requests: Option<u64>,
    pub(crate) dns_ttl: Option<Duration>,
    pub(crate) dns_server: Option<SocketAddr>,
    pub(crate) overrides: Vec<(String, u16, Vec<IpAddr>)>,
    /// TLS settings for an `https://` URL; `None` for `http://`.
    pub(crate) tls: Option<TlsSpec>,
    pub(crate) breakdown_headers: Vec<HeaderName>,
    pub(crate) late_start: Duration,
    pub(crate) pacer: Pacer,
    /// (index, of): this generator sends the schedule's requests `k` with `k mod of == index`.
    pub(crate) stripe: (usize, usize),
    pub(crate) start_at: Option<std::time::SystemTime>,
}

fn positive(p: &mut Problems, field: &str, v: f64, allowed: &str) -> bool {
    if v.is_finite() && v > 0.0 {
        true
    } else {
        p.push(field, v, allowed);
        false
    }
}

fn fraction(p: &mut Problems, field: &str, v: Option<f64>) {
    if let Some(v) = v
        && !(v.is_finite() && (0.0..=1.0).contains(&v))
    {
        p.push(field, v, "a fraction between 0 and 1");
    }
}

fn ms(p: &mut Problems, field: &str, v: Option<f64>) {
    if let Some(v) = v
        && !(v.is_finite() && v >= 0.0)
    {
        p.push(field, v, "a latency in milliseconds, >= 0");
    }
}

/// Parses one `"host:port:addr[,addr]"` override.
pub(crate) fn parse_override(s: &str) -> Option<(String, u16, Vec<IpAddr>)> {
    let (host, rest) = s.split_once(':')?;
    let (port, addrs) = rest.split_once(':')?;
    let port: u16 = port.parse().ok()?;
    let addrs: Option<Vec<IpAddr>> = addrs
        .split(',')
        .map(|a| {
            a.trim()
                .trim_start_matches('[')
                .trim_end_matches(']')
                .parse()
                .ok()
        })
        .collect();
    let addrs = addrs?;
    if host.is_empty() || addrs.is_empty() {
        return None;
    }
    Some((host.to_ascii_lowercase(), port, addrs))
}

impl Slo {
    /// Checks the thresholds; field names are prefixed with `slo.`.
    fn check(&self, p: &mut Problems) {
        ms(p, "slo.p50-ms", self.p50_ms);
        ms(p, "slo.p95-ms", self.p95_ms);
        ms(p, "slo.p99-ms", self.p99_ms);
        ms(p, "slo.max-ms", self.max_ms);
        ms(p, "slo.over-ms", self.over_ms);
        fraction(p, "slo.max-error-rate", self.max_error_rate);
        fraction(p, "slo.min-success-rate", self.min_success_rate);
        fraction(p, "slo.max-fraction-over", self.max_fraction_over);
        if self.max_fraction_over.is_some() != self.over_ms.is_some() {
            p.push(
                "slo.max-fraction-over",
                format!(
                    "{:?} with over-ms {:?}",
                    self.max_fraction_over, self.over_ms
                ),
                "max-fraction-over and over-ms set together",
            );
        }
    }

    /// Validates the thresholds alone (for callers that build an [`Slo`] apart from a [`Config`]).
    pub fn validate(&self) -> Result<(), Problems> {
        let mut p = Problems::default();
        self.check(&mut p);
        if p.is_empty() { Ok(()) } else { Err(p) }
    }
}

impl Config {
    /// Checks every field and reports every problem before anything runs.
    pub fn validate(&self) -> Result<(), Problems> {
        self.spec().map(|_| ())
    }

    /// Total scheduled length of the run.
    pub fn run_length(&self) -> Duration {
        if self.stages.is_empty() {
            Duration::from_secs_f64(self.duration.max(0.0))
        } else {
            Duration::from_secs_f64(self.stages.iter().map(|s| s.duration.max(0.0)).sum())
        }
    }

    pub(crate) fn spec(&self) -> Result<Spec, Problems> {
        let mut p = Problems::default();
        let uri = self.check_url(&mut p);
        let https = uri
            .as_ref()
            .is_some_and(|u| u.scheme_str() == Some("https"));
        let tls = self.check_tls(uri.as_ref().filter(|_| https), &mut p);
        let (method, mut headers) = self.check_request(&mut p);
        let peak = self.check_schedule(&mut p);
        self.check_limits(peak, &mut p);
        let (dns_server, overrides) = self.check_resolution(&mut p);
        let breakdown_headers = self.check_breakdown(&mut p);
        self.slo.check(&mut p);
        let (Some(uri), true) = (uri, p.is_empty()) else {
            return Err(p);
        };
        let host = uri
            .host()
            .unwrap_or_default()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        if !headers.contains_key(HOST) {
            let authority = uri.authority().map(|a| a.as_str()).unwrap_or(&host);
            if let Ok(v) = HeaderValue::from_str(authority) {
                headers.insert(HOST, v);
            }
        }
        let path: Uri = uri
            .path_and_query()
            .map(|pq| pq.as_str())
            .unwrap_or("/")
            .parse()
            .unwrap_or_else(|_| Uri::from_static("/"));
        Ok(Spec {
            host,
            port,
            method,
            path,
            headers,
            body: Bytes::from(self.body.clone()),
            start_rate: if self.stages.is_empty() {
                self.rate
            } else {
                self.rate.max(0.0)
            },
            stages: if self.stages.is_empty() {
                vec![Stage {
                    target: self.rate,
                    duration: self.duration,
                }]
            } else {
                self.stages.clone()
            },
            total: self.run_length(),
            connections: self.connections,
            threads: self.threads,
            connect_timeout: Duration::from_secs_f64(self.connect_timeout),
            timeout: Duration::from_secs_f64(self.timeout),
            max_age: self.max_connection_age.map(Duration::from_secs_f64),
            max_requests: self.max_requests_per_connection,
            dns_ttl: (self.dns_ttl > 0.0).then(|| Duration::from_secs_f64(self.dns_ttl)),
            dns_server,
            overrides,
            tls,
            breakdown_headers,
            late_start: Duration::from_secs_f64(self.late_start_ms / 1000.0),
            pacer: self.pacer,
            stripe: self
                .worker
                .map_or((0, 1), |w| (w.index as usize, w.of as usize)),
            start_at: self
                .start_at_unix_ms
                .map(|ms| std::time::UNIX_EPOCH + Duration::from_millis(ms)),
        })
    }

    /// `url`: absolute, http or https, with a host.
    fn check_url(&self, p: &mut Problems) -> Option<Uri> {
        match self.url.parse::<Uri>() {
            Ok(u)
                if matches!(u.scheme_str(), Some("http" | "https"))
                    && u.host().is_some_and(|h| !h.is_empty()) =>
            {
                Some(u)
            }
            _ => {
                p.push(
                    "url",
                    &self.url,
                    "an absolute http:// or https:// URL such as http://host:port/path",
                );
                None
            }
        }
    }

    /// The name an https URL's certificate must carry, and the roots `cacert` adds.
    fn check_tls(&self, uri: Option<&Uri>, p: &mut Problems) -> Option<TlsSpec> {
        let server_name = match uri.and_then(|u| u.host()) {
            Some(h) => {
                let h = h.trim_start_matches('[').trim_end_matches(']');
                match rustls::pki_types::ServerName::try_from(h.to_string()) {
                    Ok(n) => Some(n),
                    Err(_) => {
                        p.push(
                            "url",
                            &self.url,
                            "an https:// URL whose host is a DNS name or an IP address a certificate can name",
                        );
                        None
                    }
                }
            }
            None => None,
        };
        let extra_roots = match &self.cacert {
            Some(path) => match read_cacert(path) {
                Ok(certs) => certs,
                Err(allowed) => {
                    p.push("cacert", path.display(), allowed);
                    Vec::new()
                }
            },
            None => Vec::new(),
        };
        server_name.map(|server_name| TlsSpec {
            server_name,
            extra_roots,
        })
    }

    /// `method` and `headers`.
    fn check_request(&self, p: &mut Problems) -> (Method, HeaderMap) {
        let method = match Method::from_bytes(self.method.as_bytes()) {
            Ok(m) => m,
            Err(_) => {
                p.push(
                    "method",
                    &self.method,
                    "an HTTP method token such as GET or POST",
                );
                Method::GET
            }
        };
        let mut headers = HeaderMap::new();
        for (i, h) in self.headers.iter().enumerate() {
            let parsed = h.split_once(':').and_then(|(n, v)| {
                Some((
                    HeaderName::from_bytes(n.trim().as_bytes()).ok()?,
                    HeaderValue::from_str(v.trim()).ok()?,
                ))
            });
            match parsed {
                Some((n, v)) => {
                    headers.append(n, v);
                }
                None => p.push(
                    format!("headers[{i}]"),
                    h,
                    "\"Name: value\" with a valid header name and value",
                ),
            }
        }
        (method, headers)
    }

    /// `rate`, `duration` and `stages`; returns the peak rate.
    fn check_schedule(&self, p: &mut Problems) -> f64 {
        let mut peak = 0.0_f64;
        if self.stages.is_empty() {
            if positive(p, "rate", self.rate, "a rate in requests per second, > 0") {
                peak = self.rate;
            }
            positive(p, "duration", self.duration, "a duration in seconds, > 0");
        } else {
            if !(self.rate.is_finite() && self.rate >= 0.0) {
                p.push(
                    "rate",
                    self.rate,
                    "a starting rate in requests per second, >= 0",
                );
            } else {
                peak = self.rate;
            }
            let mut prev = self.rate.max(0.0);
            let mut total_requests = 0.0;
            for (i, s) in self.stages.iter().enumerate() {
                if !(s.target.is_finite() && s.target >= 0.0) {
                    p.push(
                        format!("stages[{i}].target"),
                        s.target,
                        "a rate in requests per second, >= 0",
                    );
                } else {
                    peak = peak.max(s.target);
                }
                if positive(
                    p,
                    &format!("stages[{i}].duration"),
                    s.duration,
                    "a duration in seconds, > 0",
                ) {
                    total_requests += (prev + s.target.max(0.0)) / 2.0 * s.duration;
                }
                prev = s.target.max(0.0);
            }
            if total_requests < 1.0 && p.is_empty() {
                p.push(
                    "stages",
                    format!("{} stage(s)", self.stages.len()),
                    "stages that schedule at least one request",
                );
            }
        }
        peak
    }

    /// Connections, threads and timeouts, for a schedule that peaks at `peak` requests/s, and
    /// the worker share.
    fn check_limits(&self, peak: f64, p: &mut Problems) {
        if let Some(w) = self.worker
            && (w.of == 0 || w.index >= w.of)
        {
            p.push(
                "worker",
                format!("{}/{}", w.index, w.of),
                "INDEX/OF with 0 <= INDEX < OF, such as 0/4",
            );
        }
        // A worker sends its share of the schedule.
        let peak = peak / self.worker.map_or(1.0, |w| f64::from(w.of.max(1)));
        if self.connections == 0 {
            p.push("connections", self.connections, "at least 1 connection");
        } else if peak > self.connections as f64 * MAX_RATE_PER_CONNECTION {
            p.push(
                "rate",
                peak,
                format!(
                    "at most {} requests/s with {} connection(s) ({} per connection); raise connections",
                    self.connections as f64 * MAX_RATE_PER_CONNECTION,
                    self.connections,
                    MAX_RATE_PER_CONNECTION
                ),
            );
        }
        if self.threads == 0 || self.threads > 256 {
            p.push("threads", self.threads, "between 1 and 256 worker threads");
        } else if self.connections > 0 && self.threads > self.connections {
            p.push(
                "threads",
                self.threads,
                format!("at most connections ({})", self.connections),
            );
        }
        positive(p, "connect-timeout", self.connect_timeout, "seconds, > 0");
        positive(p, "timeout", self.timeout, "seconds, > 0");
        if let Some(a) = self.max_connection_age {
            positive(p, "max-connection-age", a, "seconds, > 0");
        }
        if self.max_requests_per_connection == Some(0) {
            p.push("max-requests-per-connection", 0, "at least 1");
        }
        if !(self.dns_ttl.is_finite() && self.dns_ttl >= 0.0) {
            p.push("dns-ttl", self.dns_ttl, "seconds, >= 0 (0 resolves once)");
        }
        if !(self.late_start_ms.is_finite() && self.late_start_ms >= 0.0) {
            p.push("late-start-ms", self.late_start_ms, "milliseconds, >= 0");
        }
    }

    /// `dns-server` and `resolve`.
    #[allow(clippy::type_complexity)]
    fn check_resolution(
        &self,
        p: &mut Problems,
    ) -> (Option<SocketAddr>, Vec<(String, u16, Vec<IpAddr>)>) {
        let dns_server = match &self.dns_server {
            None => None,
            Some(text) => match text.parse::<SocketAddr>() {
                Ok(a) => Some(a),
                Err(_) => {
                    p.push(
                        "dns-server",
                        text,
                        "ip:port of a DNS server, e.g. 127.0.0.1:5353",
                    );
                    None
                }
            },
        };
        let mut overrides = Vec::new();
        for (i, r) in self.resolve.iter().enumerate() {
            match parse_override(r) {
                Some(o) => overrides.push(o),
                None => p.push(
                    format!("resolve[{i}]"),
                    r,
                    "host:port:addr[,addr...] with IP addresses",
                ),
            }
        }
        (dns_server, overrides)
    }

    /// `breakdown-headers`.
    fn check_breakdown(&self, p: &mut Problems) -> Vec<HeaderName> {
        let mut breakdown_headers = Vec::new();
        for (i, h) in self.breakdown_headers.iter().enumerate() {
            match HeaderName::from_bytes(h.as_bytes()) {
                Ok(n) => breakdown_headers.push(n),
                Err(_) => p.push(
                    format!("breakdown-headers[{i}]"),
                    h,
                    "a valid HTTP header name",
                ),
            }
        }
        breakdown_headers
    }
}

/// Formats a socket address for reports (`ip:port`).
pub(crate) fn addr_key(a: &SocketAddr) -> String {
    a.to_string()
}
