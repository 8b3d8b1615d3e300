//! The engine: a pacer thread that releases intended send times, worker threads (one
//! single-threaded tokio runtime each) whose connections take them, and a collector that merges
//! the workers' per-second frames into the live series and the final [`Report`].

use std::cell::RefCell;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::{Notify, mpsc, oneshot, watch};

use crate::config::{Config, Pacer, Spec};
use crate::error::Error;
use crate::record::{ErrorKind, Frame, micros, new_histogram};
use crate::report::{Collector, Report, Second, Snapshot};
use crate::resolve::{Addrs, Resolve, SystemResolver};
use crate::schedule::Schedule;

/// How long before the first intended send time the connections are opened.
const LEAD: Duration = Duration::from_millis(100);

/// The queue of due intended send times shared by the pacer and every connection.
#[derive(Debug, Default)]
struct Slots {
    queue: Mutex<VecDeque<Instant>>,
    notify: Notify,
    /// The schedule is over: connections exit once the queue is empty.
    done: AtomicBool,
    /// The drain deadline passed: connections exit even if the queue is not empty.
    abandon: AtomicBool,
}

impl Slots {
    #[inline]
    fn pop(&self) -> Option<Instant> {
        self.queue.lock().ok()?.pop_front()
    }

    async fn next(&self) -> Option<Instant> {
        loop {
            if self.abandon.load(Ordering::Acquire) {
                return None;
            }
            let notified = self.notify.notified();
            if let Some(t) = self.pop() {
                return Some(t);
            }
            if self.done.load(Ordering::Acquire) {
                return self.pop();
            }
            notified.await;
        }
    }

    fn finish(&self, flag: &AtomicBool) {
        flag.store(true, Ordering::Release);
        self.notify.notify_waiters();
    }

    fn len(&self) -> usize {
        self.queue.lock().map(|q| q.len()).unwrap_or(0)
    }
}

/// Lowers this thread's timer slack to 1 ns (Linux; best effort) so `thread::sleep` wakes within
/// a few microseconds instead of the default 50 µs.
fn precise_timer_slack() {
    if let Ok(link) = std::fs::read_link("/proc/thread-self")
        && let Some(tid) = link.file_name()
    {
        let path = std::path::Path::new("/proc")
            .join(tid)
            .join("timerslack_ns");
        let _ = std::fs::write(path, "1");
    }
}

/// The schedule as seen by a pacer: the next due instant and the release of every due slot.
#[derive(Debug)]
struct Pacing {
    schedule: Schedule,
    start: Instant,
    next: Option<Instant>,
    lateness: Histogram<u64>,
    batch: Vec<Instant>,
}

impl Pacing {
    fn new(mut schedule: Schedule, start: Instant) -> Self {
        let next = schedule.next_offset().map(|o| start + o);
        Self {
            schedule,
            start,
            next,
            lateness: new_histogram(),
            batch: Vec::with_capacity(256),
        }
    }

    /// Releases every slot due at `now` into `slots` (one lock, one notification per slot).
    fn release(&mut self, now: Instant, slots: &Slots) {
        self.batch.clear();
        while let Some(t) = self.next {
            if t > now {
                break;
            }
            self.batch.push(t);
            self.lateness.saturating_record(micros(now - t));
            self.next = self.schedule.next_offset().map(|o| self.start + o);
        }
        if self.batch.is_empty() {
            return;
        }
        if let Ok(mut q) = slots.queue.lock() {
            q.extend(self.batch.iter().copied());
        }
        for _ in 0..self.batch.len() {
            slots.notify.notify_one();
        }
    }
}

/// The precise pacer (a thread of its own): sleeps with 1 ns timer slack until the next slot,
/// then releases every slot due; records its own lateness (release time minus intended time).
fn pace(schedule: Schedule, start: Instant, slots: &Slots, stop: &AtomicBool) -> Histogram<u64> {
    precise_timer_slack();
    let mut p = Pacing::new(schedule, start);
    while let Some(due) = p.next {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let now = Instant::now();
        if due > now {
            // Never sleep long in one go, so `stop` is noticed.
            std::thread::sleep((due - now).min(Duration::from_millis(50)));
            continue;
        }
        p.release(Instant::now(), slots);
    }
    p.lateness
}

/// The timer pacer (a task on the first worker's runtime): tokio's millisecond timer, every due
/// slot released per wake-up. Cheaper (no cross-thread wake per slot), up to ~1 ms late.
async fn pace_timer(
    schedule: Schedule,
    start: Instant,
    slots: &Slots,
    stop: &AtomicBool,
) -> Histogram<u64> {
    let mut p = Pacing::new(schedule, start);
    while let Some(due) = p.next {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let now = Instant::now();
        if due > now {
            tokio::time::sleep_until(tokio::time::Instant::from_std(
                due.min(now + Duration::from_millis(50)),
            ))
            .await;
            continue;
        }
        p.release(now, slots);
    }
    p.lateness
}

/// Messages from workers to the collector.
#[derive(Debug)]
pub(crate) enum Msg {
    /// One second of one worker.
    Frame(usize, Box<Frame>),
    /// The worker finished (after its last frame).
    Done(usize),
    /// The worker could not start.
    Failed(std::io::Error),
}

/// What one worker thread shares between its connection tasks.
#[derive(Debug)]
struct Worker {
    spec: Arc<Spec>,
    slots: Arc<Slots>,
    addrs: Arc<Addrs>,
    /// The run's TLS client configuration (`https://` URLs only), shared by every worker.
    tls: Option<Arc<rustls::ClientConfig>>,
    frame: RefCell<Frame>,
}

/// Starts an HTTP/1.1 client connection over `io` (its driver runs as a local task).
async fn http1<T>(io: T) -> Result<SendRequest<Full<Bytes>>, ErrorKind>
where
    T: AsyncRead + AsyncWrite + Unpin + 'static,
{
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| ErrorKind::of_hyper(&e))?;
    tokio::task::spawn_local(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

/// One open connection.
#[derive(Debug)]
struct Conn {
    sender: SendRequest<Full<Bytes>>,
    addr: SocketAddr,
    opened: Instant,
    requests: u64,
    generation: u64,
}

impl Worker {
    fn request(&self) -> Request<Full<Bytes>> {
        let mut req = Request::new(Full::new(self.spec.body.clone()));
        *req.method_mut() = self.spec.method.clone();
        *req.uri_mut() = self.spec.path.clone();
        *req.headers_mut() = self.spec.headers.clone();
        req
    }

    /// Whether `c` must be replaced before the next request.
    fn stale(&self, c: &mut Conn, id: usize) -> bool {
        if c.sender.is_closed()
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

    async fn connect(&self, id: usize) -> Result<Conn, (ErrorKind, Option<SocketAddr>)> {
        let generation = self.addrs.generation();
        let list = self.addrs.get();
        if list.is_empty() {
            return Err((ErrorKind::Dns, None));
        }
        let addr = list[id % list.len()];
        // The connect timeout covers the TCP connect and, for https, the TLS handshake.
        let open = async {
            let stream = TcpStream::connect(addr)
                .await
                .map_err(|e| ErrorKind::of_io(&e))?;
            let _ = stream.set_nodelay(true);
            match (&self.tls, &self.spec.tls) {
                (Some(config), Some(t)) => {
                    let stream = tokio_rustls::TlsConnector::from(Arc::clone(config))
                        .connect(t.server_name.clone(), stream)
                        .await
                        .map_err(|e| crate::tls::handshake_error(&e))?;
                    http1(stream).await
                }
                _ => http1(stream).await,
            }
        };
        let sender = match tokio::time::timeout(self.spec.connect_timeout, open).await {
            Err(_) => return Err((ErrorKind::Timeout, Some(addr))),
            Ok(Err(kind)) => return Err((kind, Some(addr))),
            Ok(Ok(s)) => s,
        };
        self.frame.borrow_mut().connects += 1;
        Ok(Conn {
            sender,
            addr,
            opened: Instant::now(),
            requests: 0,
            generation,
        })
    }

    /// One request/response on `c`; returns the status and the breakdown headers' values.
    async fn exchange(&self, c: &mut Conn) -> Result<http::response::Parts, ErrorKind> {
        let req = self.request();
        c.requests += 1;
        let fut = async {
            c.sender
                .ready()
                .await
                .map_err(|e| ErrorKind::of_hyper(&e))?;
            let resp = c
                .sender
                .send_request(req)
                .await
                .map_err(|e| ErrorKind::of_hyper(&e))?;
            let (parts, mut body) = resp.into_parts();
            while let Some(f) = body.frame().await {
                f.map_err(|e| ErrorKind::of_hyper(&e))?;
            }
            Ok(parts)
        };
        match tokio::time::timeout(self.spec.timeout, fut).await {
            Ok(r) => r,
            Err(_) => Err(ErrorKind::Timeout),
        }
    }

    async fn connection(self: Rc<Self>, id: usize) {
        // Open the connection before the run starts; a failure here is retried by the first request.
        let mut conn = self.connect(id).await.ok();
        while let Some(intended) = self.slots.next().await {
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
            let sent = Instant::now();
            match self.exchange(c).await {
                Ok(parts) => {
                    let end = Instant::now();
                    let mut f = self.frame.borrow_mut();
                    f.response(parts.status.as_u16(), end - intended, end - sent, c.addr);
                    for (i, name) in self.spec.breakdown_headers.iter().enumerate() {
                        f.header_value(i, parts.headers.get(name).map(|v| v.as_bytes()));
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

/// What the first worker needs to run the timer pacer.
#[derive(Debug)]
struct TimerPacer {
    schedule: Schedule,
    stop: Arc<AtomicBool>,
    done: oneshot::Sender<Histogram<u64>>,
}

/// What one worker thread starts with.
#[derive(Debug)]
struct WorkerStart {
    index: usize,
    ids: Vec<usize>,
    spec: Arc<Spec>,
    slots: Arc<Slots>,
    addrs: Arc<Addrs>,
    tls: Option<Arc<rustls::ClientConfig>>,
    start: Instant,
    tx: mpsc::UnboundedSender<Msg>,
    pacer: Option<TimerPacer>,
}

/// Runs one worker thread to completion.
fn worker_thread(ws: WorkerStart) {
    let WorkerStart {
        index,
        ids,
        spec,
        slots,
        addrs,
        tls,
        start,
        tx,
        pacer,
    } = ws;
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            let _ = tx.send(Msg::Failed(e));
            return;
        }
    };
    let local = tokio::task::LocalSet::new();
    let headers = spec.breakdown_headers.len();
    local.block_on(&rt, async move {
        let w = Rc::new(Worker {
            spec,
            slots,
            addrs,
            tls,
            frame: RefCell::new(Frame::new(0, headers)),
        });
        if let Some(TimerPacer {
            schedule,
            stop,
            done,
        }) = pacer
        {
            let slots = Arc::clone(&w.slots);
            tokio::task::spawn_local(async move {
                let lateness = pace_timer(schedule, start, &slots, &stop).await;
                slots.finish(&slots.done);
                let _ = done.send(lateness);
            });
        }
        let conns: Vec<_> = ids
            .into_iter()
            .map(|id| tokio::task::spawn_local(Rc::clone(&w).connection(id)))
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
        for c in conns {
            let _ = c.await;
        }
        ticker.abort();
        let last = w.frame.replace(Frame::new(0, 0));
        let _ = tx.send(Msg::Frame(index, Box::new(last)));
        let _ = tx.send(Msg::Done(index));
    });
}

/// A run going on in the background: watch its progress, read its series, stop it early, or
/// wait for its [`Report`].
#[derive(Debug)]
pub struct RunHandle {
    snapshots: watch::Receiver<Snapshot>,
    series: Arc<Mutex<Vec<Second>>>,
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
        self.series.lock().map(|s| s.clone()).unwrap_or_default()
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
    let resolver: Arc<dyn Resolve> = match &config.resolver {
        Some(r) => Arc::clone(r),
        None => Arc::new(SystemResolver::with_overrides(spec.overrides.clone())),
    };
    let first = resolver
        .resolve(&spec.host, spec.port)
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
    let slots = Arc::new(Slots::default());
    let stop = Arc::new(AtomicBool::new(false));
    let start = Instant::now() + LEAD;
    let (tx, rx) = mpsc::unbounded_channel();

    // The pacer: a thread of its own, or a task on the first worker.
    let (pacer_tx, pacer_rx) = oneshot::channel();
    let schedule = Schedule::staged(spec.start_rate, &spec.stages);
    let mut timer_pacer = None;
    match spec.pacer {
        Pacer::Timer => {
            timer_pacer = Some(TimerPacer {
                schedule,
                stop: Arc::clone(&stop),
                done: pacer_tx,
            })
        }
        Pacer::Precise => {
            let (slots, stop) = (Arc::clone(&slots), Arc::clone(&stop));
            std::thread::Builder::new()
                .name("loadtest-pacer".into())
                .spawn(move || {
                    let lateness = pace(schedule, start, &slots, &stop);
                    slots.finish(&slots.done);
                    let _ = pacer_tx.send(lateness);
                })
                .map_err(|source| Error::Start {
                    what: "pacer thread",
                    source,
                })?;
        }
    }

    // Workers, each with its share of the connection ids.
    let mut workers = Vec::new();
    for w in 0..spec.threads {
        let ids: Vec<usize> = (w..spec.connections).step_by(spec.threads).collect();
        let (spec, slots, addrs, tls, tx) = (
            Arc::clone(&spec),
            Arc::clone(&slots),
            Arc::clone(&addrs),
            tls.clone(),
            tx.clone(),
        );
        let pacer = timer_pacer.take();
        let h = std::thread::Builder::new()
            .name(format!("loadtest-worker-{w}"))
            .spawn(move || {
                worker_thread(WorkerStart {
                    index: w,
                    ids,
                    spec,
                    slots,
                    addrs,
                    tls,
                    start,
                    tx,
                    pacer,
                })
            })
            .map_err(|source| Error::Start {
                what: "worker thread",
                source,
            })?;
        workers.push(h);
    }
    drop(tx);

    // DNS refresher.
    let dns = Arc::new(Mutex::new(crate::report::Dns {
        resolutions: 1,
        ..Default::default()
    }));
    if let Ok(mut d) = dns.lock() {
        d.addresses = addrs.get().iter().map(|a| a.ip().to_string()).collect();
    }
    let dns_task = spec.dns_ttl.map(|ttl| {
        let (resolver, addrs, spec, dns) = (
            Arc::clone(&resolver),
            Arc::clone(&addrs),
            Arc::clone(&spec),
            Arc::clone(&dns),
        );
        tokio::spawn(async move {
            let mut every = tokio::time::interval_at(tokio::time::Instant::now() + ttl, ttl);
            loop {
                every.tick().await;
                let r = resolver.resolve(&spec.host, spec.port).await;
                let Ok(mut d) = dns.lock() else { continue };
                d.resolutions += 1;
                match r {
                    Ok(list) if !list.is_empty() => {
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
    });

    let (snap_tx, snap_rx) = watch::channel(Snapshot::default());
    let series = Arc::new(Mutex::new(Vec::new()));
    let collector = Collector::new(&config, &spec, start, Arc::clone(&series), snap_tx);
    let task = tokio::spawn(async move {
        let r = drive(collector, rx, pacer_rx, &slots, spec.timeout, &dns).await;
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
        series,
        stop,
        task,
    })
}

/// Receives frames until every worker is done; starts the drain deadline when the pacer ends.
async fn drive(
    mut collector: Collector,
    mut rx: mpsc::UnboundedReceiver<Msg>,
    mut pacer_rx: oneshot::Receiver<Histogram<u64>>,
    slots: &Arc<Slots>,
    drain: Duration,
    dns: &Mutex<crate::report::Dns>,
) -> Result<Report, Error> {
    let mut lateness = None;
    let mut drain_task = None;
    loop {
        tokio::select! {
            msg = rx.recv() => match msg {
                Some(Msg::Frame(w, f)) => collector.frame(w, *f),
                Some(Msg::Done(w)) => collector.done(w),
                Some(Msg::Failed(source)) => {
                    slots.finish(&slots.abandon);
                    return Err(Error::Start { what: "worker runtime", source });
                }
                None => break,
            },
            l = &mut pacer_rx, if lateness.is_none() => {
                lateness = Some(l.unwrap_or_else(|_| new_histogram()));
                let slots = Arc::clone(slots);
                drain_task = Some(tokio::spawn(async move {
                    tokio::time::sleep(drain).await;
                    slots.finish(&slots.abandon);
                }));
            }
        }
    }
    if let Some(t) = drain_task {
        t.abort();
    }
    let lateness = match lateness {
        Some(l) => l,
        None => pacer_rx.await.unwrap_or_else(|_| new_histogram()),
    };
    let unsent = slots.len() as u64;
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
