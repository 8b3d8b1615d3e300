//! `cargo xtask bench soak`: the load engine held at one open-loop rate for minutes against a
//! local server (Debian nginx with one worker on CPU 0, else the built-in server), the engine
//! on CPU 1. Every 10 s it reads the engine's resident memory (`VmRSS`) and CPU time
//! (`/proc/PID/stat`), and prints them with the CPU seconds per 10,000 requests of that window;
//! at the end the engine's own report: requests, errors, unsent, late starts, percentiles.
//! What a soak shows is a trend: RSS that grows with time (a leak) or CPU per request that
//! rises (work that grows with the run). Numbers, not assertions.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

use crate::bench_loadtest::Server;

/// `--duration` of the soak: whole seconds, from a minute to two hours.
fn soak_length(text: &str) -> Result<u64, String> {
    let secs = crate::whole_seconds(text)?;
    if !(60..=7200).contains(&secs) {
        return Err(format!("{text:?} is not from 1m to 2h"));
    }
    Ok(secs)
}

/// Options of `cargo xtask bench soak`.
#[derive(clap::Args, Debug)]
pub(crate) struct BenchSoakArgs {
    /// How long to hold the rate (`10m`), whole seconds from 1m to 2h.
    #[arg(long, value_name = "DURATION", default_value = "10m", value_parser = soak_length)]
    pub(crate) duration: u64,
    /// The open-loop rate, requests per second.
    #[arg(long, default_value_t = 5000, value_parser = clap::value_parser!(u32).range(1..=200_000))]
    pub(crate) rps: u32,
    /// Connections of the engine.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub(crate) connections: u32,
    /// Use this loadtest binary instead of building `cargo build --release -p stackproof-loadtest`.
    #[arg(long)]
    pub(crate) loadtest_bin: Option<PathBuf>,
}

/// Seconds between samples.
const EVERY: Duration = Duration::from_secs(10);

/// One sample of the engine process.
#[derive(Debug, Clone, Copy)]
struct Sample {
    at: f64,
    rss_kb: u64,
    cpu_s: f64,
}

/// Reads `VmRSS` (kB) and user + system CPU time (s) of `pid`, `hz` clock ticks a second;
/// `None` once it has exited.
fn sample(pid: u32, at: f64, hz: f64) -> Option<Sample> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss_kb = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) : utime is the 14th field, stime
    // the 15th, in clock ticks.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok());
    let cpu_s = (ticks(11)? + ticks(12)?) / hz;
    Some(Sample { at, rss_kb, cpu_s })
}

/// `getconf CLK_TCK`, 100 on Linux almost everywhere.
fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

pub(crate) fn run(args: &BenchSoakArgs) -> anyhow::Result<()> {
    let bin = match &args.loadtest_bin {
        Some(b) => b.clone(),
        None => crate::build_release(&["-p", "stackproof-loadtest", "--bin", "loadtest"])?
            .join("loadtest"),
    };
    let (server, port) = Server::start()?;
    let url = format!("http://127.0.0.1:{port}/");
    let secs = args.duration;
    println!(
        "soak: {} requests/s open loop for {} s, {} connections, against {} at {url}; engine on CPU 1",
        args.rps,
        args.duration,
        args.connections,
        server.name()
    );
    let mut child = Command::new("taskset")
        .args(["-c", "1"])
        .arg(&bin)
        .arg(&url)
        .args(["--rps", &args.rps.to_string()])
        .args(["--duration", &format!("{secs}s")])
        .args(["--connections", &args.connections.to_string()])
        .args(["--timeout", "5s", "--json-stdout", "--quiet"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    let started = Instant::now();
    let mut stdout = child.stdout.take().context("the engine's stdout")?;
    // Read while it runs, so a full pipe never stalls the engine.
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut stdout, &mut text).map(|_| text)
    });
    let samples = watch(&mut child, started, secs, args.rps)?;
    let status = child.wait()?;
    let report = match reader.join() {
        Ok(read) => read.context("reading the engine's report")?,
        Err(_) => bail!("the thread reading the engine's report panicked"),
    };
    let mut stderr = String::new();
    if let Some(mut e) = child.stderr.take() {
        std::io::Read::read_to_string(&mut e, &mut stderr)
            .context("reading the engine's stderr")?;
    }
    summarize(&report, &status, &stderr, &samples)?;
    drop(server);
    Ok(())
}

/// Samples the engine's memory and CPU every [`EVERY`] until it exits (killed 60 s past its
/// duration), printing a line per sample.
fn watch(
    child: &mut std::process::Child,
    started: Instant,
    secs: u64,
    rps: u32,
) -> anyhow::Result<Vec<Sample>> {
    // taskset execs the engine: the child's pid is the engine's.
    let pid = child.id();
    let hz = clock_ticks();
    println!(
        "{:>6} {:>10} {:>9} {:>16}",
        "t (s)", "RSS (MB)", "CPU (s)", "CPU-s per 10k"
    );
    let mut samples: Vec<Sample> = Vec::new();
    let deadline = started + Duration::from_secs(secs + 60);
    let mut next = started + Duration::from_secs(1);
    loop {
        if child.try_wait()?.is_some() {
            break;
        }
        if Instant::now() > deadline {
            // Bounded: the engine stops by itself at its duration; this is the backstop.
            let _ = child.kill();
            let _ = child.wait();
            bail!("the engine ran 60 s past its {secs} s; killed it (pid {pid})");
        }
        let now = Instant::now();
        if now >= next {
            if let Some(s) = sample(pid, now.duration_since(started).as_secs_f64(), hz) {
                let per_10k = samples.last().map(|p| {
                    let requests = f64::from(rps) * (s.at - p.at);
                    (s.cpu_s - p.cpu_s) * 10_000.0 / requests
                });
                println!(
                    "{:>6.0} {:>10.1} {:>9.2} {:>16}",
                    s.at,
                    s.rss_kb as f64 / 1024.0,
                    s.cpu_s,
                    per_10k.map_or("-".to_owned(), |v| format!("{v:.3}"))
                );
                samples.push(s);
            }
            next = if samples.len() <= 1 {
                started + EVERY
            } else {
                next + EVERY
            };
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    Ok(samples)
}

/// Prints the engine's own report (completions, errors, latency from the intended time) and
/// what the samples show (RSS growth, CPU per 10k requests).
fn summarize(
    report: &str,
    status: &std::process::ExitStatus,
    stderr: &str,
    samples: &[Sample],
) -> anyhow::Result<()> {
    let j: serde_json::Value = serde_json::from_str(report).with_context(|| {
        format!("the engine ({status}) printed no JSON report; stderr:\n{stderr}")
    })?;
    let f = |v: &serde_json::Value| v.as_f64().unwrap_or(f64::NAN);
    let completed = f(&j["completed"]);
    let errors = f(&j["errors"]);
    let c = &j["latency_ms"]["corrected"];
    println!(
        "\nengine ({status}): completed {completed:.0}, errors {errors:.0}, unsent {}, late starts {}, achieved {:.1} requests/s",
        j["unsent"],
        j["late_starts"],
        f(&j["achieved_rate"])
    );
    println!(
        "latency (from the intended time) p50 {:.3} ms, p99 {:.3} ms, p99.9 {:.3} ms, max {:.3} ms",
        f(&c["p50"]),
        f(&c["p99"]),
        f(&c["p99_9"]),
        f(&c["max"])
    );
    if let (Some(first), Some(last)) = (samples.get(1).or(samples.first()), samples.last()) {
        let total = last.cpu_s;
        let requests = completed + errors;
        println!(
            "RSS at {:.0} s {:.1} MB, at {:.0} s {:.1} MB ({:+.1} MB); CPU {:.1} s in all, {:.3} CPU-s per 10k requests",
            first.at,
            first.rss_kb as f64 / 1024.0,
            last.at,
            last.rss_kb as f64 / 1024.0,
            (last.rss_kb as f64 - first.rss_kb as f64) / 1024.0,
            total,
            total * 10_000.0 / requests
        );
    }
    Ok(())
}
