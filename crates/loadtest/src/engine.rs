//! The engine: worker threads (one single-threaded tokio runtime each), each pacing its share of
//! the intended send times on its own reactor and handing them to its idle connections, and a
//! collector that merges the workers' per-second frames into the live series and the final
//! [`Report`].
//!
//! The pacing is in [`crate::pacer`]; each connection task speaks HTTP/1.1 with [`crate::h1`].

use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use hdrhistogram::Histogram;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};

use crate::config::{Config, Pacer, Spec};
use crate::dns::DnsResolver;
use crate::error::Error;
use crate::h1::{self, Stream};
use crate::pacer::{Pacing, Slots, pace, precise_timer};
use crate::record::{ErrorKind, Frame, new_histogram};
use crate::report::{Collector, Live, Report, Second, Snapshot};
use crate::resolve::{Addrs, Resolve, Resolved, SystemResolver};
use crate::schedule::Schedule;

/// How long before the first intended send time the connections are opened.
const LEAD: Duration = Duration::from_millis(100);

/// Messages from workers to the collector.
#[derive(Debug)]
pub(crate) enum Msg {
    /// One second of one worker.
    Frame(usize, Box<Frame>),
    /// The worker finished (after its last frame): its pacer's lateness and the slots it never
    /// started.
    Done {
        worker: usize,
        lateness: Box<Histogram<u64>>,
        unsent: u64,
    },
    /// The worker could not start `what`, or its precise timer failed.
    Failed(&'static str, std::io::Error),
}

/// What one worker thread shares between its connection tasks.
#[derive(Debug)]
struct Worker {
    spec: Arc<Spec>,
    slots: Slots,
    addrs: Arc<Addrs>,
    /// The run's TLS client configuration (`https://` URLs only), shared by every worker.
    tls: Option<Arc<rustls::ClientConfig>>,
    /// The request as it goes on the wire (the same for every request of the run).
    request: Bytes,
    frame: RefCell<Frame>,
}

/// One open connection.
#[derive(Debug)]
struct Conn {
    h1: h1::Conn<Stream>,
    addr: SocketAddr,
    opened: Instant,
    requests: u64,
    generation: u64,
}

impl Worker {
    /// Whether `c` must be replaced before the next request.
    fn stale(&self, c: &mut Conn, id: usize) -> bool {
        if !c.h1.idle_ok()
            || self.spec.max_requests.is_some_and(|m| c.requests >= m)
            || self.spec.max_age.is_some_and(|a| c.opened.elapsed() >= a)
        {
            return true;
        }
        let g = self.addrs.generation();
        if g != c.generation {
            let list = self.addrs.get();
            if list.is_empty() || list[id % list.len()] != c.addr {
                return true;
            }
            c.generation = g;
        }
        false
    }

    /// Opens connection `id` to its address (`id mod n` of the answer); when that address
    /// refuses or does not answer within the connect timeout, the next addresses in turn (each
    /// failed attempt is counted for its address).
    async fn connect(&self, id: usize) -> Result<Conn, (ErrorKind, Option<SocketAddr>)> {
        let generation = self.addrs.generation();
        let list = self.addrs.get();
        if list.is_empty() {
            return Err((ErrorKind::Dns, None));
        }
        let mut last = (ErrorKind::Other, None);
        for k in 0..list.len() {
            let addr = list[(id + k) % list.len()];
            match self.open(addr).await {
                Ok(h1) => {
                    self.frame.borrow_mut().connects += 1;
                    return Ok(Conn {
                        h1,
                        addr,
                        opened: Instant::now(),
                        requests: 0,
                        generation,
                    });
                }
                // A TLS failure is the server's answer, not an unreachable address.
                Err(ErrorKind::Tls) => return Err((ErrorKind::Tls, Some(addr))),
                Err(kind) => {
                    if k + 1 < list.len() {
                        self.frame.borrow_mut().connect_failure(addr);
                    }
                    last = (kind, Some(addr));
                }
            }
        }
        Err(last)
    }

    /// A connection to `addr` within the connect timeout (TCP and, for https, TLS).
    async fn open(&self, addr: SocketAddr) -> Result<h1::Conn<Stream>, ErrorKind> {
        let open = async {
            let stream = TcpStream::connect(addr)
                .await
                .map_err(|e| ErrorKind::of_io(&e))?;
            let _ = stream.set_nodelay(true);
            let stream = match (&self.tls, &self.spec.tls) {
                (Some(config), Some(t)) => {
                    let tls = tokio_rustls::TlsConnector::from(Arc::clone(config))
                        .connect(t.server_name.clone(), stream)
                        .await
                        .map_err(|e| crate::tls::handshake_error(&e))?;
                    Stream::Tls(Box::new(tls))
                }
                _ => Stream::Plain(stream),
            };
            Ok(h1::Conn::new(stream, self.spec.breakdown_headers.len()))
        };
        match tokio::time::timeout(self.spec.connect_timeout, open).await {
            Err(_) => Err(ErrorKind::Timeout),
            Ok(r) => r,
        }
    }

    /// One request/response on `c`; returns the status, or `Timeout` once the request timeout
    /// passes.
    async fn exchange(&self, c: &mut Conn) -> Result<u16, ErrorKind> {
        c.requests += 1;
        let fut = c.h1.exchange(
            &self.request,
            self.spec.method == http::Method::HEAD,
            &self.spec.breakdown_headers,
        );
        match tokio::time::timeout(self.spec.timeout, fut).await {
            Ok(r) => r,
            Err(_) => Err(ErrorKind::Timeout),
        }
    }

    /// Connection `id` of the run (its address is `id mod n`), `local` of this worker.
    async fn connection(self: Rc<Self>, local: usize, id: usize) {
        // Open the connection before the run starts; a failure here is retried by the first request.
        let mut conn = self.connect(id).await.ok();
        while let Some(intended) = self.slots.next(local).await {
            let started = Instant::now();
            {
                let mut f = self.frame.borrow_mut();
                f.sent += 1;
                if started.saturating_duration_since(intended) > self.spec.late_start {
                    f.late_starts += 1;
                }
            }
            if let Some(c) = conn.as_mut()
                && self.stale(c, id)
            {
                conn = None;
            }
            let c = match conn.as_mut() {
                Some(c) => c,
                None => match self.connect(id).await {
                    Ok(c) => conn.insert(c),
                    Err((kind, addr)) => {
                        self.frame.borrow_mut().error(kind, addr);
                        continue;
                    }
                },
            };
            // The send starts now: at `started`, or when the connection just opened.
            let sent = c.opened.max(started);
            match self.exchange(c).await {
                Ok(status) => {
                    let end = Instant::now();
                    let mut f = self.frame.borrow_mut();
                    f.response(status, end - intended, end - sent, c.addr);
                    for i in 0..self.spec.breakdown_headers.len() {
                        f.header_value(i, c.h1.value(i));
                    }
                }
                Err(kind) => {
                    self.frame.borrow_mut().error(kind, Some(c.addr));
                    conn = None;
                }
            }
        }
    }
}

/// What one worker thread starts with.
#[derive(Debug)]
struct WorkerStart {
    index: usize,
    ids: Vec<usize>,
    spec: Arc<Spec>,
    addrs: Arc<Addrs>,
    tls: Option<Arc<rustls::ClientConfig>>,
    start: Instant,
    tx: mpsc::UnboundedSender<Msg>,
    stop: Arc<AtomicBool>,
}

/// Runs one worker thread to completion: its connections, its pacer, its per-second frames and
/// the drain (one request timeout after its schedule ends, queued slots are abandoned).
fn worker_thread(ws: WorkerStart) {
    let WorkerStart {
        index,
        ids,
        spec,
        addrs,
        tls,
        start,
        tx,
        stop,
    } = ws;
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            let _ = tx.send(Msg::Failed("worker runtime", e));
            return;
        }
    };
    let local = tokio::task::LocalSet::new();
    let headers = spec.breakdown_headers.len();
    local.block_on(&rt, async move {
        // Process `i` of `n` sends the schedule's requests i, i + n, ...; its thread `index`
        // of `threads` every `threads`-th of those.
        let (i, n) = spec.stripe;
        let pacing = Pacing::new(
            Schedule::staged(spec.start_rate, &spec.stages),
            start,
            i + n * index,
            n * spec.threads,
        );
        let precise = match spec.pacer {
            Pacer::Precise => match precise_timer() {
                Ok(timer) => timer,
                Err(e) => {
                    let _ = tx.send(Msg::Failed("precise pacer's timer (timerfd)", e));
                    return;
                }
            },
            Pacer::Timer => None,
        };
        let drain = spec.timeout;
        let request = h1::encode(&spec.method, &spec.path, &spec.headers, &spec.body);
        let w = Rc::new(Worker {
            request,
            slots: Slots::new(ids.len()),
            spec,
            addrs,
            tls,
            frame: RefCell::new(Frame::new(0, headers)),
        });
        let mut conns: Vec<_> = ids
            .into_iter()
            .enumerate()
            .map(|(local, id)| tokio::task::spawn_local(Rc::clone(&w).connection(local, id)))
            .collect();
        let ticker = {
            let w = Rc::clone(&w);
            let tx = tx.clone();
            tokio::task::spawn_local(async move {
                let mut every = tokio::time::interval_at(
                    tokio::time::Instant::from_std(start + Duration::from_secs(1)),
                    Duration::from_secs(1),
                );
                loop {
                    every.tick().await;
                    let next = w.frame.borrow().second + 1;
                    let old = w.frame.replace(Frame::new(next, headers));
                    let _ = tx.send(Msg::Frame(index, Box::new(old)));
                }
            })
        };
        let lateness = match pace(pacing, &w.slots, &stop, precise).await {
            Ok(lateness) => lateness,
            Err(e) => {
                // The collector ends the run with this error; the connections stop now.
                w.slots.finish(&w.slots.abandon);
                ticker.abort();
                let _ = tx.send(Msg::Failed("precise pacer's timer (timerfd)", e));
                return;
            }
        };
        w.slots.finish(&w.slots.done);
        let all_done = async {
            while let Some(c) = conns.last_mut() {
                let _ = c.await;
                conns.pop();
            }
        };
        if tokio::time::timeout(drain, all_done).await.is_err() {
            w.slots.finish(&w.slots.abandon);
            while let Some(c) = conns.last_mut() {
                let _ = c.await;
                conns.pop();
            }
        }
        ticker.abort();
        let last = w.frame.replace(Frame::new(0, 0));
        let _ = tx.send(Msg::Frame(index, Box::new(last)));
        let _ = tx.send(Msg::Done {
            worker: index,
            lateness: Box::new(lateness),
            unsent: w.slots.len() as u64,
        });
    });
}

/// A run going on in the background: watch its progress, read its series, stop it early, or
/// wait for its [`Report`].
#[derive(Debug)]
pub struct RunHandle {
    snapshots: watch::Receiver<Snapshot>,
    live: Arc<Mutex<Live>>,
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<Result<Report, Error>>,
}

impl RunHandle {
    /// A receiver that sees a new [`Snapshot`] once per second of the run (and a last one at
    /// the end); `changed()` fails once the run is over.
    pub fn snapshots(&self) -> watch::Receiver<Snapshot> {
        self.snapshots.clone()
    }

    /// The per-second series so far (complete seconds only).
    pub fn series(&self) -> Vec<Second> {
        self.live
            .lock()
            .map(|l| l.series.clone())
            .unwrap_or_default()
    }

    /// The corrected latency of the complete seconds so far as an HdrHistogram interval log
    /// (what [`Report::write_interval_log`] writes at the end): a generator of a distributed
    /// run uploads it while the run goes, and the coordinator adds the logs for live progress.
    pub fn interval_log(&self) -> Vec<u8> {
        self.interval_log_from(0)
    }

    /// The same log from second `first` of the run on: a generator uploads a short tail, so
    /// the coordinator's work per upload does not grow with the run.
    pub fn interval_log_from(&self, first: usize) -> Vec<u8> {
        let (start, intervals) = self
            .live
            .lock()
            .map(|l| (l.started_unix_ms, l.intervals.clone()))
            .unwrap_or_default();
        let mut out = Vec::new();
        // Writing into a Vec fails only on a histogram that does not decode: none is written.
        let _ = crate::report::write_interval_log(&mut out, start, &intervals, first);
        out
    }

    /// Ends the schedule now; requests already due are still sent, then the run ends normally.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }

    /// Waits for the end of the run.
    pub async fn wait(self) -> Result<Report, Error> {
        match self.task.await {
            Ok(r) => r,
            Err(_) => Err(Error::Internal {
                what: "collector task",
            }),
        }
    }
}

/// Validates `config`, resolves the target and starts the run in the background. Must be called
/// inside a tokio runtime (any flavour): the collector and the DNS refresher run on it; the
/// pacer and the workers run on threads of their own.
pub async fn start(config: Config) -> Result<RunHandle, Error> {
    let spec = Arc::new(config.spec().map_err(Error::Invalid)?);
    let tls = match &spec.tls {
        Some(t) => Some(
            crate::tls::client_config(&t.extra_roots).map_err(|source| Error::Tls { source })?,
        ),
        None => None,
    };
    let resolver: Arc<dyn Resolve> = match (&config.resolver, spec.dns_server) {
        (Some(r), _) => Arc::clone(r),
        (None, Some(server)) => Arc::new(DnsResolver::new(server)),
        (None, None) => Arc::new(SystemResolver::with_overrides(spec.overrides.clone())),
    };
    let Resolved {
        addrs: first,
        ttl: first_ttl,
    } = resolver
        .resolve_ttl(&spec.host, spec.port)
        .await
        .map_err(|source| Error::Resolve {
            host: spec.host.clone(),
            port: spec.port,
            source,
        })?;
    if first.is_empty() {
        return Err(Error::NoAddress {
            host: spec.host.clone(),
            port: spec.port,
        });
    }
    let addrs = Arc::new(Addrs::new(Vec::new()));
    addrs.set(first);
    let stop = Arc::new(AtomicBool::new(false));
    let start = start_instant(spec.start_at)?;
    let (tx, rx) = mpsc::unbounded_channel();

    let workers = spawn_workers(&spec, &addrs, tls.as_ref(), start, &tx, &stop)?;
    drop(tx);

    // DNS refresher.
    let dns = Arc::new(Mutex::new(crate::report::Dns {
        resolutions: 1,
        ..Default::default()
    }));
    if let Ok(mut d) = dns.lock() {
        d.addresses = addrs.get().iter().map(|a| a.ip().to_string()).collect();
    }
    let dns_task = spec.dns_ttl.map(|most| {
        spawn_dns_refresher(
            Arc::clone(&resolver),
            Arc::clone(&addrs),
            Arc::clone(&spec),
            Arc::clone(&dns),
            (first_ttl, most),
        )
    });

    let (snap_tx, snap_rx) = watch::channel(Snapshot::default());
    let live = Arc::new(Mutex::new(Live::default()));
    let collector = Collector::new(&config, &spec, start, Arc::clone(&live), snap_tx);
    let stop_all = Arc::clone(&stop);
    let task = tokio::spawn(async move {
        let r = drive(collector, rx, &stop_all, &dns).await;
        if let Some(t) = dns_task {
            t.abort();
        }
        for w in workers {
            let _ = tokio::task::spawn_blocking(move || w.join()).await;
        }
        r
    });
    Ok(RunHandle {
        snapshots: snap_rx,
        live,
        stop,
        task,
    })
}

/// Starts the worker threads, each with its share of the connection ids and of the schedule.
fn spawn_workers(
    spec: &Arc<Spec>,
    addrs: &Arc<Addrs>,
    tls: Option<&Arc<rustls::ClientConfig>>,
    start: Instant,
    tx: &mpsc::UnboundedSender<Msg>,
    stop: &Arc<AtomicBool>,
) -> Result<Vec<std::thread::JoinHandle<()>>, Error> {
    let mut workers = Vec::new();
    for w in 0..spec.threads {
        let ids: Vec<usize> = (w..spec.connections).step_by(spec.threads).collect();
        let (spec, addrs, tls, tx, stop) = (
            Arc::clone(spec),
            Arc::clone(addrs),
            tls.cloned(),
            tx.clone(),
            Arc::clone(stop),
        );
        let h = std::thread::Builder::new()
            .name(format!("loadtest-worker-{w}"))
            .spawn(move || {
                worker_thread(WorkerStart {
                    index: w,
                    ids,
                    spec,
                    addrs,
                    tls,
                    start,
                    tx,
                    stop,
                })
            })
            .map_err(|source| Error::Start {
                what: "worker thread",
                source,
            })?;
        workers.push(h);
    }
    Ok(workers)
}

/// Resolves the target again whenever the last answer's TTL (at most `dns-ttl`) is up, for
/// the workers' next connections, and counts what it saw in `dns`.
fn spawn_dns_refresher(
    resolver: Arc<dyn Resolve>,
    addrs: Arc<Addrs>,
    spec: Arc<Spec>,
    dns: Arc<Mutex<crate::report::Dns>>,
    (first_ttl, most): (Option<Duration>, Duration),
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut ttl = first_ttl;
        loop {
            tokio::time::sleep(keep_for(ttl, most)).await;
            let r = resolver.resolve_ttl(&spec.host, spec.port).await;
            let Ok(mut d) = dns.lock() else { continue };
            d.resolutions += 1;
            match r {
                Ok(Resolved {
                    addrs: list,
                    ttl: t,
                }) if !list.is_empty() => {
                    ttl = t;
                    for a in &list {
                        let ip = a.ip().to_string();
                        if !d.addresses.contains(&ip) {
                            d.addresses.push(ip);
                        }
                    }
                    if addrs.set(list) {
                        d.changes += 1;
                    }
                }
                _ => d.failures += 1,
            }
        }
    })
}

/// The instant the schedule starts: `at` (a start shared by several generators) when given,
/// else [`LEAD`] from now. A shared start already past by more than
/// [`crate::config::MAX_START_LATE`] is an error: every first request would be late.
fn start_instant(at: Option<SystemTime>) -> Result<Instant, Error> {
    let now = (Instant::now(), SystemTime::now());
    let Some(at) = at else {
        return Ok(now.0 + LEAD);
    };
    match at.duration_since(now.1) {
        Ok(ahead) => Ok(now.0 + ahead),
        Err(past) if past.duration() <= crate::config::MAX_START_LATE => Ok(now.0),
        Err(past) => Err(Error::StartMissed {
            late: past.duration(),
        }),
    }
}

/// How long an answer is kept: its TTL when known, at most `most` (`dns-ttl`), at least
/// 100 ms.
fn keep_for(ttl: Option<Duration>, most: Duration) -> Duration {
    ttl.map_or(most, |t| t.min(most))
        .max(Duration::from_millis(100))
}

/// Receives frames until every worker is done.
async fn drive(
    mut collector: Collector,
    mut rx: mpsc::UnboundedReceiver<Msg>,
    stop: &AtomicBool,
    dns: &Mutex<crate::report::Dns>,
) -> Result<Report, Error> {
    let mut lateness = new_histogram();
    let mut unsent = 0;
    while let Some(msg) = rx.recv().await {
        match msg {
            Msg::Frame(w, f) => collector.frame(w, *f),
            Msg::Done {
                worker,
                lateness: l,
                unsent: u,
            } => {
                let _ = lateness.add(&*l);
                unsent += u;
                collector.done(worker);
            }
            Msg::Failed(what, source) => {
                stop.store(true, Ordering::Relaxed);
                return Err(Error::Start { what, source });
            }
        }
    }
    let dns = dns.lock().map(|d| d.clone()).unwrap_or_default();
    Ok(collector.finish(lateness, unsent, dns))
}

/// Runs a load test to the end. `progress` (if any) is called once per second with a
/// [`Snapshot`]. Use [`start`] to run in the background and watch the series instead.
pub async fn run(
    config: Config,
    progress: Option<&(dyn Fn(&Snapshot) + Sync)>,
) -> Result<Report, Error> {
    let handle = start(config).await?;
    if let Some(cb) = progress {
        let mut rx = handle.snapshots();
        while rx.changed().await.is_ok() {
            let s = rx.borrow_and_update().clone();
            cb(&s);
        }
    }
    handle.wait().await
}
