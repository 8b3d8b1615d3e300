//! The sandbox ALB proxy benchmark (`cargo xtask bench sandbox` builds this example and the
//! sample-app in release and runs it): what the proxy adds to a loadtest, and how much one core
//! of it carries.
//!
//! ```text
//! cargo build --release -p stackproof-sample-app -p sandbox-alb --example bench
//! $CARGO_TARGET_DIR/release/examples/bench --sample-app $CARGO_TARGET_DIR/release/sample-app
//! ```
//!
//! Two sample-app processes are the targets. The `loadtest` engine (as a library) drives an
//! open-loop rate straight at one of them, then through a [`sandbox_alb::Proxy`] over both
//! (health-checked, round robin, access log lines formatted every second as the data plane
//! does), and prints p50/p99/p99.9 of both and the p99 difference. Then it steps the rate
//! through the proxy up (each step judged sustained or not by achieved rate, errors, late
//! starts and p99; it stops once errors appear or throughput gives out), with the proxy alone on a
//! current-thread runtime; the proxy's own CPU time (from `/proc`) gives its cost per request
//! and the rate one core of it would carry. With `taskset` and two CPUs or more the proxy
//! thread runs on CPU 0 and everything else (generator, targets) on CPU 1. Numbers, not
//! assertions.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use hdrhistogram::Histogram;
use stackproof_sandbox_alb::{HealthCheck, Proxy, ProxySettings, Target, TargetGroup, TargetState};

/// Options (those of `cargo xtask bench sandbox`).
#[derive(clap::Parser, Debug)]
#[command(about = "What the sandbox ALB proxy adds to p50/p99 and how much one core of it carries")]
struct Args {
    /// Rate of the comparison runs (direct and through the proxy), requests per second.
    #[arg(long, default_value_t = 2000)]
    rate: u32,
    /// Length of each comparison run, seconds (split over the rounds).
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// The comparison alternates direct and proxied runs this many times, so that both see the
    /// same background load.
    #[arg(long, default_value_t = 5)]
    rounds: u32,
    /// Rates tried, in order, in the search for the highest rate one proxy core sustains.
    #[arg(long, value_delimiter = ',', default_values_t = [5000u32, 7500, 10000, 12500, 15000, 17500, 20000, 25000])]
    steps: Vec<u32>,
    /// Length of each step of that search, seconds.
    #[arg(long, default_value_t = 5)]
    step_duration: u64,
    /// Skip that search.
    #[arg(long)]
    no_max_rate: bool,
    /// Run the proxy for the direct/proxied comparison as `sandbox-daemon` does (a
    /// multi-thread runtime of 2 workers, on every CPU) instead of alone on a current-thread
    /// runtime; the search for the highest rate per core still uses the latter.
    #[arg(long)]
    daemon_runtime: bool,
    /// Do not pin threads to CPUs (on a machine busy with other work, a pinned proxy waits for
    /// its one CPU).
    #[arg(long)]
    no_pin: bool,
    /// The sample-app binary. Default: `sample-app` in the folder above this example's
    /// (`cargo build --release -p stackproof-sample-app`).
    #[arg(long)]
    sample_app: Option<PathBuf>,
}

/// A step is sustained when it completes at least this share of its rate...
const MIN_ACHIEVED: f64 = 0.99;
/// ...with at most this share of late starts...
const MAX_LATE: f64 = 0.01;
/// ...and a corrected p99 under this many milliseconds (queueing shows here first).
const MAX_P99_MS: f64 = 10.0;

/// Clock ticks per second of `/proc/*/stat` CPU times.
const TICKS_PER_SECOND: f64 = 100.0;

fn main() -> anyhow::Result<()> {
    let args = <Args as clap::Parser>::parse();
    run(&args)
}

fn run(args: &Args) -> anyhow::Result<()> {
    if args.rate == 0 || args.duration == 0 || args.step_duration == 0 {
        bail!("--rate, --duration and --step-duration must be at least 1");
    }
    let app = args
        .sample_app
        .clone()
        .or_else(sample_app_beside)
        .unwrap_or_else(|| PathBuf::from("sample-app"));
    if !app.is_file() {
        bail!(
            "no sample-app binary at {}: build it with `cargo build --release -p stackproof-sample-app` or pass --sample-app",
            app.display()
        );
    }
    let cpus = std::thread::available_parallelism().map_or(1, usize::from);
    let pinned = !args.no_pin && cpus >= 2 && which("taskset").is_some();
    if pinned {
        // Every thread of this process (and what it starts) on CPU 1; the proxy moves to 0.
        taskset(&["-a", "-c", "-p", "1", &std::process::id().to_string()])?;
    }
    let targets = [
        Backend::start(&app, "bench-a", pinned)?,
        Backend::start(&app, "bench-b", pinned)?,
    ];
    let one_core = if pinned {
        Placement::Pinned
    } else {
        Placement::Unpinned
    };
    let placement = if args.daemon_runtime {
        Placement::Daemon { pinned }
    } else {
        one_core
    };
    let mut proxy = ProxyThread::start(targets.iter().map(|t| t.addr).collect(), placement)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;

    println!(
        "sandbox ALB proxy benchmark: {} CPUs; {}; comparison with {}",
        cpus,
        if pinned {
            "load generator and 2 sample-app targets on CPU 1"
        } else {
            "not pinned (--no-pin, or no taskset, or 1 CPU)"
        },
        match placement {
            Placement::Pinned => "the proxy alone on CPU 0 (current-thread runtime)",
            Placement::Unpinned => "the proxy on a current-thread runtime",
            Placement::Daemon { .. } =>
                "the proxy as sandbox-daemon runs it (multi-thread runtime, 2 workers, every CPU)",
        }
    );
    // Warm up both paths (connections, caches).
    rt.block_on(load(targets[0].addr, 500, 1.0))?;
    rt.block_on(load(proxy.addr, 500, 1.0))?;

    let rate = args.rate;
    let rounds = args.rounds.max(1);
    let round_s = args.duration as f64 / f64::from(rounds);
    let m = measure(&rt, &targets, &proxy, rate, rounds, round_s)?;
    report(&m, rate, rounds, round_s);

    if !args.no_max_rate {
        if placement != one_core {
            drop(proxy);
            proxy = ProxyThread::start(targets.iter().map(|t| t.addr).collect(), one_core)?;
        }
        max_rate(&rt, &proxy, args)?;
    }
    drop(proxy);
    drop(targets);
    Ok(())
}

/// What the rounds measured, direct and through the proxy.
struct Measured {
    direct: Merged,
    via: Merged,
    added_p99: Vec<f64>,
    app_ticks: u64,
    proxy_ticks: u64,
    stats_max_us: u64,
}

/// `rounds` rounds of `round_s` seconds at `rate`: direct to one target, then through the
/// proxy, so both see the same background load.
fn measure(
    rt: &tokio::runtime::Runtime,
    targets: &[Backend; 2],
    proxy: &ProxyThread,
    rate: u32,
    rounds: u32,
    round_s: f64,
) -> anyhow::Result<Measured> {
    let (mut direct, mut via) = (Merged::default(), Merged::default());
    let mut added_p99 = Vec::new();
    let (mut app_ticks, mut proxy_ticks) = (0u64, 0u64);
    proxy.stats_max_us.store(0, Ordering::Relaxed);
    for _ in 0..rounds {
        let app0 = targets[0].cpu_ticks();
        let d = rt.block_on(load(targets[0].addr, rate, round_s))?;
        app_ticks += ticks(app0, targets[0].cpu_ticks());
        let cpu0 = proxy.cpu_ticks();
        let v = rt.block_on(load(proxy.addr, rate, round_s))?;
        proxy_ticks += ticks(cpu0, proxy.cpu_ticks());
        added_p99.push(v.latency_ms.corrected.p99 - d.latency_ms.corrected.p99);
        direct.add(&d);
        via.add(&v);
    }
    Ok(Measured {
        direct,
        via,
        added_p99,
        app_ticks,
        proxy_ticks,
        stats_max_us: proxy.stats_max_us.load(Ordering::Relaxed),
    })
}

/// Prints the table, what the proxy adds, and the CPU each side spent.
fn report(m: &Measured, rate: u32, rounds: u32, round_s: f64) {
    let Measured {
        direct,
        via,
        app_ticks,
        proxy_ticks,
        stats_max_us,
        ..
    } = m;
    let (app_ticks, proxy_ticks, stats_max_us) = (*app_ticks, *proxy_ticks, *stats_max_us);
    let mut added_p99 = m.added_p99.clone();
    println!(
        "\n{rate} requests/s, {rounds} rounds of {round_s:.1} s direct then {round_s:.1} s through the proxy (so both see the same background load), latency from the intended send time (ms):"
    );
    println!(
        "{:<28} {:>9} {:>8} {:>8} {:>8} {:>8} {:>7} {:>6}",
        "path", "achieved", "p50", "p99", "p99.9", "max", "errors", "late"
    );
    for (name, r) in [
        ("direct to one task", direct),
        ("through the proxy (2 tasks)", via),
    ] {
        let h = &r.corrected;
        let max = h.as_ref().map_or(0, Histogram::max);
        println!(
            "{:<28} {:>9.0} {:>8.3} {:>8.3} {:>8.3} {:>8.3} {:>7} {:>6}",
            name,
            r.done as f64 / r.elapsed_s.max(1e-9),
            ms(h, 0.5),
            ms(h, 0.99),
            ms(h, 0.999),
            max as f64 / 1000.0,
            r.errors,
            r.late
        );
    }
    println!(
        "added by the proxy: p50 {:+.3} ms, p99 {:+.3} ms (target < 0.3 ms), p99.9 {:+.3} ms; raw (from the actual send) p99 {:+.3} ms",
        ms(&via.corrected, 0.5) - ms(&direct.corrected, 0.5),
        ms(&via.corrected, 0.99) - ms(&direct.corrected, 0.99),
        ms(&via.corrected, 0.999) - ms(&direct.corrected, 0.999),
        ms(&via.raw, 0.99) - ms(&direct.raw, 0.99),
    );
    added_p99.sort_by(f64::total_cmp);
    println!(
        "added p99 per round: {} (median {:+.3} ms)",
        added_p99
            .iter()
            .map(|a| format!("{a:+.3}"))
            .collect::<Vec<_>>()
            .join(", "),
        added_p99[added_p99.len() / 2]
    );
    let per_request =
        |ticks: u64, r: &Merged| ticks as f64 / TICKS_PER_SECOND * 1e6 / r.done.max(1) as f64;
    println!(
        "proxy CPU at {rate}/s: {:.1}% of one core, {:.1} µs per request",
        100.0 * proxy_ticks as f64 / TICKS_PER_SECOND / via.elapsed_s.max(1e-9),
        per_request(proxy_ticks, via)
    );
    println!(
        "longest take_stats (statistics and access log lines taken every second on the proxy's thread, as the data plane does) during those runs: {:.3} ms",
        stats_max_us as f64 / 1000.0
    );
    let app_cpu =
        (app_ticks > 0).then(|| app_ticks as f64 / TICKS_PER_SECOND / direct.elapsed_s.max(1e-9));
    let per_request = |f: f64, r: &Merged| f * r.elapsed_s * 1e6 / r.done.max(1) as f64;
    if let Some(f) = app_cpu {
        println!(
            "for scale, the sample-app (a plain hyper server) answering the direct run: {:.1}% of a core, {:.1} µs per request",
            100.0 * f,
            per_request(f, direct)
        );
    }
}

/// Steps the rate through the proxy up until a step is not sustained.
fn max_rate(rt: &tokio::runtime::Runtime, proxy: &ProxyThread, args: &Args) -> anyhow::Result<()> {
    println!(
        "\nhighest rate through one proxy core ({} s steps; sustained = achieved >= {:.0}%, no errors, late starts <= {:.0}%, p99 < {MAX_P99_MS} ms):",
        args.step_duration,
        MIN_ACHIEVED * 100.0,
        MAX_LATE * 100.0
    );
    println!(
        "{:>7} {:>9} {:>8} {:>8} {:>7} {:>7} {:>10} {:>11}",
        "rate", "achieved", "p50", "p99", "errors", "late%", "proxy CPU", "µs/request"
    );
    let mut best: Option<u32> = None;
    let mut served = 0.0f64;
    let mut per_request_us: Vec<f64> = Vec::new();
    for &rate in &args.steps {
        let cpu0 = proxy.cpu_ticks();
        let r = rt.block_on(load(proxy.addr, rate, args.step_duration as f64))?;
        let cpu = cpu_fraction(cpu0, proxy.cpu_ticks(), r.elapsed_s);
        let done = (r.completed + r.errors) as f64;
        let us = cpu
            .filter(|_| done > 0.0)
            .map(|f| f * r.elapsed_s * 1e6 / done);
        let late = if r.sent > 0 {
            r.late_starts as f64 / r.sent as f64
        } else {
            1.0
        };
        let errors = r.errors + r.unsent + r.server_errors();
        let l = &r.latency_ms.corrected;
        let sustained = r.achieved_rate >= MIN_ACHIEVED * f64::from(rate)
            && errors == 0
            && late <= MAX_LATE
            && l.p99 < MAX_P99_MS;
        println!(
            "{:>7} {:>9.0} {:>8.3} {:>8.3} {:>7} {:>6.2}% {:>9} {:>11} {}",
            rate,
            r.achieved_rate,
            l.p50,
            l.p99,
            errors,
            100.0 * late,
            cpu.map_or_else(|| "-".to_owned(), |f| format!("{:.0}%", 100.0 * f)),
            us.map_or_else(|| "-".to_owned(), |u| format!("{u:.1}")),
            if sustained {
                "sustained"
            } else {
                "NOT sustained"
            }
        );
        if let Some(u) = us {
            per_request_us.push(u);
        }
        if sustained {
            best = Some(rate);
        }
        // Throughput itself gave out: higher steps only queue more.
        if r.achieved_rate < 0.9 * f64::from(rate) || errors > 0 {
            break;
        }
        served = served.max(r.achieved_rate);
    }
    match best {
        Some(b) => {
            println!("highest sustained rate through the proxy: {b} requests/s (target >= 10000)")
        }
        None => println!("no step sustained"),
    }
    println!("highest rate served without errors (latency aside): {served:.0} requests/s");
    if let Some(u) = per_request_us
        .iter()
        .copied()
        .filter(|u| u.is_finite() && *u > 0.0)
        .min_by(f64::total_cmp)
    {
        println!(
            "proxy CPU per request: {u:.1} µs at best -> one core of proxy alone would carry ~{:.0} requests/s",
            1e6 / u
        );
    }
    Ok(())
}

/// One open-loop run of the project's load engine.
async fn load(addr: SocketAddr, rate: u32, seconds: f64) -> anyhow::Result<loadtest::Report> {
    let config = loadtest::Config {
        url: format!("http://{addr}/"),
        rate: f64::from(rate),
        duration: seconds,
        connections: 64,
        threads: 1,
        breakdown_headers: vec!["x-task".into()],
        ..Default::default()
    };
    loadtest::run(config, None)
        .await
        .with_context(|| format!("loadtest at {rate}/s against {addr}"))
}

/// Several runs of one path, merged.
#[derive(Default)]
struct Merged {
    corrected: Option<Histogram<u64>>,
    raw: Option<Histogram<u64>>,
    done: u64,
    errors: u64,
    late: u64,
    elapsed_s: f64,
}

impl Merged {
    fn add(&mut self, r: &loadtest::Report) {
        for (into, from) in [(&mut self.corrected, &r.corrected), (&mut self.raw, &r.raw)] {
            match into {
                Some(h) => {
                    let _ = h.add(from);
                }
                None => *into = Some(from.clone()),
            }
        }
        self.done += r.completed + r.errors;
        self.errors += r.errors + r.unsent + r.server_errors();
        self.late += r.late_starts;
        self.elapsed_s += r.elapsed_s;
    }
}

/// A quantile of a µs histogram, in ms (0 when there is none).
fn ms(h: &Option<Histogram<u64>>, q: f64) -> f64 {
    h.as_ref()
        .map_or(0.0, |h| h.value_at_quantile(q) as f64 / 1000.0)
}

/// Ticks between two readings (0 when either is unknown).
fn ticks(before: Option<u64>, after: Option<u64>) -> u64 {
    before.zip(after).map_or(0, |(b, a)| a.saturating_sub(b))
}

/// CPU used between two tick readings, as a fraction of one core over `seconds`.
fn cpu_fraction(before: Option<u64>, after: Option<u64>, seconds: f64) -> Option<f64> {
    let (b, a) = (before?, after?);
    (seconds > 0.0).then(|| a.saturating_sub(b) as f64 / TICKS_PER_SECOND / seconds)
}

/// A sample-app process on a free port of 127.0.0.1, killed (by PID) when dropped.
struct Backend {
    child: Child,
    addr: SocketAddr,
}

impl Backend {
    fn start(app: &Path, name: &str, pinned: bool) -> anyhow::Result<Backend> {
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let mut cmd = if pinned {
            let mut c = Command::new("taskset");
            c.args(["-c", "1"]).arg(app);
            c
        } else {
            Command::new(app)
        };
        let child = cmd
            .env("BIND_ADDR", "127.0.0.1")
            .env("PORT", port.to_string())
            .env("AZ", name)
            .env("TASK_ID", name)
            .env_remove("ECS_CONTAINER_METADATA_URI_V4")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {}", app.display()))?;
        let backend = Backend {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(backend.addr).is_err() {
            if Instant::now() > deadline {
                bail!("sample-app did not listen on {} within 20 s", backend.addr);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(backend)
    }
}

impl Backend {
    /// utime + stime of the process (all its threads), in clock ticks.
    fn cpu_ticks(&self) -> Option<u64> {
        stat_ticks(&format!("/proc/{}/stat", self.child.id()))
    }
}

/// utime + stime of a `/proc/.../stat` file, in clock ticks.
fn stat_ticks(path: &str) -> Option<u64> {
    let stat = std::fs::read_to_string(path).ok()?;
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

impl Drop for Backend {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Where the proxy runs.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Placement {
    /// A current-thread runtime on CPU 0 (the rest of the benchmark on CPU 1).
    Pinned,
    /// A current-thread runtime anywhere.
    Unpinned,
    /// As `sandbox-daemon` runs it: a multi-thread runtime of 2 workers on every CPU.
    Daemon {
        /// The rest of the benchmark is on CPU 1.
        pinned: bool,
    },
}

/// The proxy on a thread (or runtime) of its own.
struct ProxyThread {
    addr: SocketAddr,
    tid: Option<u32>,
    /// The longest `take_stats` call so far, microseconds: the
    /// proxy answers nothing meanwhile.
    stats_max_us: Arc<AtomicU64>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ProxyThread {
    fn start(targets: Vec<SocketAddr>, placement: Placement) -> anyhow::Result<ProxyThread> {
        let (ready_tx, ready_rx) = mpsc::channel::<Result<(SocketAddr, Option<u32>), String>>();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let stats_max_us = Arc::new(AtomicU64::new(0));
        let max_us = stats_max_us.clone();
        let thread = std::thread::Builder::new()
            .name("alb-proxy".into())
            .spawn(move || {
                let tid = thread_id();
                let cpus = match placement {
                    Placement::Pinned => Some("0".to_owned()),
                    // The process runs on CPU 1: the daemon's workers may use every CPU.
                    Placement::Daemon { pinned: true } => Some(format!(
                        "0-{}",
                        std::thread::available_parallelism().map_or(1, usize::from) - 1
                    )),
                    Placement::Daemon { pinned: false } | Placement::Unpinned => None,
                };
                if let (Some(cpus), Some(t)) = (cpus, tid) {
                    let _ = taskset(&["-c", "-p", &cpus, &t.to_string()]);
                }
                let built = match placement {
                    Placement::Daemon { .. } => tokio::runtime::Builder::new_multi_thread()
                        .worker_threads(2)
                        .thread_name("alb-proxy-w")
                        .enable_all()
                        .build(),
                    _ => tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build(),
                };
                let rt = match built {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e.to_string()));
                        return;
                    }
                };
                rt.block_on(serve(targets, tid, ready_tx, stopped, max_us));
            })?;
        let ready = ready_rx
            .recv_timeout(Duration::from_secs(30))
            .context("the proxy did not become ready within 30 s")?;
        let (addr, tid) = match ready {
            Ok(x) => x,
            Err(e) => bail!("proxy: {e}"),
        };
        Ok(ProxyThread {
            addr,
            tid,
            stats_max_us,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// utime + stime of the proxy's threads (named `alb-proxy...`), in clock ticks.
    fn cpu_ticks(&self) -> Option<u64> {
        self.tid?;
        let mut total = 0;
        for task in std::fs::read_dir("/proc/self/task").ok()?.flatten() {
            let path = task.path();
            let comm = std::fs::read_to_string(path.join("comm")).unwrap_or_default();
            if comm.starts_with("alb-proxy") {
                total += stat_ticks(&path.join("stat").to_string_lossy())?;
            }
        }
        Some(total)
    }
}

impl Drop for ProxyThread {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Runs the proxy over `targets` until `stopped`: waits until both are healthy, reports its
/// address, and takes its statistics (access log lines included) every second, as the data
/// plane does.
async fn serve(
    targets: Vec<SocketAddr>,
    tid: Option<u32>,
    ready: mpsc::Sender<Result<(SocketAddr, Option<u32>), String>>,
    stopped: tokio::sync::oneshot::Receiver<()>,
    stats_max_us: Arc<AtomicU64>,
) {
    let settings = ProxySettings::new("app/bench/0123456789abcdef");
    let proxy = match Proxy::bind(SocketAddr::from(([127, 0, 0, 1], 0)), settings).await {
        Ok(p) => p,
        Err(e) => {
            let _ = ready.send(Err(e.to_string()));
            return;
        }
    };
    let zones = ["bench-a", "bench-b"];
    proxy.set_target_group(TargetGroup {
        health_check: HealthCheck {
            interval: Duration::from_millis(500),
            timeout: Duration::from_secs(1),
            ..HealthCheck::default()
        },
        deregistration_delay: Duration::from_secs(1),
        targets: targets
            .iter()
            .enumerate()
            .map(|(i, addr)| Target {
                id: format!("task-{i}"),
                addr: *addr,
                zone: zones[i % zones.len()].to_owned(),
                reachable: true,
            })
            .collect(),
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    while proxy
        .health()
        .iter()
        .any(|h| h.state != TargetState::Healthy)
    {
        if Instant::now() > deadline {
            let _ = ready.send(Err(format!(
                "targets not healthy within 20 s: {:?}",
                proxy.health()
            )));
            proxy.shutdown().await;
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = ready.send(Ok((proxy.local_addr(), tid)));
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tokio::pin!(stopped);
    loop {
        tokio::select! {
            _ = &mut stopped => break,
            _ = tick.tick() => {
                let started = Instant::now();
                std::hint::black_box(proxy.take_stats());
                let us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
                stats_max_us.fetch_max(us, Ordering::Relaxed);
            }
        }
    }
    proxy.shutdown().await;
}

/// This thread's id (`/proc/thread-self` links to `{pid}/task/{tid}`).
fn thread_id() -> Option<u32> {
    let link = std::fs::read_link("/proc/thread-self").ok()?;
    link.file_name()?.to_str()?.parse().ok()
}

fn taskset(args: &[&str]) -> anyhow::Result<()> {
    let status = Command::new("taskset")
        .args(args)
        .stdout(Stdio::null())
        .status()
        .context("running taskset")?;
    if !status.success() {
        bail!("taskset {} failed: {status}", args.join(" "));
    }
    Ok(())
}

/// `../sample-app` from this program (`target/release/examples/bench`).
fn sample_app_beside() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    Some(exe.parent()?.parent()?.join("sample-app"))
}

fn which(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
}
