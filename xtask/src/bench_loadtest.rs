//! `cargo xtask bench loadtest`: our load engine side by side with `wrk` and `oha` (when
//! installed) against one local server (Debian nginx with one worker, else a built-in server):
//! open loop at fixed rates, the 1 s stall (coordinated-omission) test and the highest open-loop
//! rate one core sustains. Beside them at each fixed rate, the pacing floor (the `paced_floor`
//! example of the loadtest crate: one blocking connection, sleep, write, read), the least CPU per
//! request any client spends here when it sends each request at its own time. Server on CPU 0,
//! generators on CPU 1 (`taskset`), CPU time and peak RSS from `/usr/bin/time`. Prints a table;
//! numbers, not assertions.

use std::io::{BufRead as _, BufReader, Write as _};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

/// Options of `cargo xtask bench loadtest`.
#[derive(clap::Args, Debug)]
pub(crate) struct BenchLoadtestArgs {
    /// Fixed rates to compare, requests per second.
    #[arg(long = "rps", value_delimiter = ',', default_values_t = [500u32, 5000])]
    pub(crate) rates: Vec<u32>,
    /// Length of each fixed-rate run (`10s`), whole seconds.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = crate::whole_seconds)]
    pub(crate) duration: u64,
    /// Connections per generator.
    #[arg(long, default_value_t = 50)]
    pub(crate) connections: u32,
    /// Rounds of the fixed-rate comparison (the tools take turns in a rotating order); the
    /// table shows each column's median and the CPU's spread. One 10 s run on a shared VM
    /// varies by +-20 %.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=20))]
    pub(crate) rounds: u32,
    /// Skip the 1 s stall test.
    #[arg(long)]
    pub(crate) no_stall: bool,
    /// Skip the search for the highest open-loop rate one core sustains.
    #[arg(long)]
    pub(crate) no_max_rate: bool,
    /// Use this loadtest binary instead of building `cargo build --release -p stackproof-loadtest`.
    #[arg(long)]
    pub(crate) loadtest_bin: Option<PathBuf>,
}

/// One measured run.
#[derive(Debug, Default, Clone)]
struct Row {
    tool: String,
    what: String,
    achieved: f64,
    p50: f64,
    p95: f64,
    p99: f64,
    p999: f64,
    requests: f64,
    cpu_s: f64,
    rss_kb: u64,
    note: String,
}

impl Row {
    fn cpu_per_10k(&self) -> f64 {
        if self.requests > 0.0 {
            self.cpu_s * 10_000.0 / self.requests
        } else {
            f64::NAN
        }
    }
}

/// The server under load.
pub(crate) enum Server {
    Nginx { master: Child, dir: PathBuf },
    BuiltIn,
}

impl Server {
    pub(crate) fn start() -> anyhow::Result<(Server, u16)> {
        let port = free_port()?;
        if let Some(nginx) = which("nginx") {
            let dir =
                std::env::temp_dir().join(format!("stackproof-bench-nginx-{}", std::process::id()));
            std::fs::create_dir_all(&dir)?;
            let d = dir.display();
            let conf = format!(
                "worker_processes 1;\ndaemon off;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\n\
                 events {{ worker_connections 8192; }}\n\
                 http {{\n  access_log off;\n  keepalive_requests 100000000;\n  keepalive_timeout 300s;\n\
                 client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n  fastcgi_temp_path {d}/fastcgi;\n\
                 uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n\
                 server {{ listen 127.0.0.1:{port}; location / {{ return 200 \"ok\"; }} }}\n}}\n"
            );
            let path = dir.join("nginx.conf");
            std::fs::write(&path, conf)?;
            let master = Command::new("taskset")
                .args(["-c", "0"])
                .arg(nginx)
                .arg("-c")
                .arg(&path)
                .arg("-p")
                .arg(&dir)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .context("starting nginx")?;
            let server = Server::Nginx { master, dir };
            wait_for_port(port)?;
            Ok((server, port))
        } else {
            let listener = TcpListener::bind(("127.0.0.1", port))?;
            std::thread::spawn(move || builtin_server(listener));
            wait_for_port(port)?;
            Ok((Server::BuiltIn, port))
        }
    }

    pub(crate) fn name(&self) -> &'static str {
        match self {
            Server::Nginx { .. } => "nginx (1 worker, CPU 0)",
            Server::BuiltIn => "built-in server (unpinned)",
        }
    }

    /// The PID of the process that answers (nginx's worker), for SIGSTOP/SIGCONT.
    fn worker_pid(&self) -> Option<u32> {
        let Server::Nginx { master, .. } = self else {
            return None;
        };
        let pid = master.id();
        let children = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).ok()?;
        children.split_whitespace().next()?.parse().ok()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Server::Nginx { master, dir } = self {
            let _ = Command::new("kill")
                .args(["-QUIT", &master.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = master.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            if let Ok(None) = master.try_wait() {
                let _ = master.kill();
                let _ = master.wait();
            }
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// A minimal keep-alive HTTP/1.1 server, one thread per connection, answering `ok`.
fn builtin_server(listener: TcpListener) {
    for stream in listener.incoming().flatten() {
        std::thread::spawn(move || {
            let _ = stream.set_nodelay(true);
            let Ok(mut out) = stream.try_clone() else {
                return;
            };
            let mut r = BufReader::new(stream);
            let mut line = String::new();
            loop {
                // Read one request head (requests without body).
                let mut empty_head = true;
                loop {
                    line.clear();
                    match r.read_line(&mut line) {
                        Ok(0) | Err(_) => return,
                        Ok(_) => {}
                    }
                    if line == "\r\n" || line == "\n" {
                        break;
                    }
                    empty_head = false;
                }
                if empty_head {
                    continue;
                }
                if out
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                    .is_err()
                {
                    return;
                }
            }
        });
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn wait_for_port(port: u16) -> anyhow::Result<()> {
    for _ in 0..100 {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    bail!("the server did not listen on 127.0.0.1:{port} within 2 s")
}

fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// Runs `cmd` pinned to CPU 1 under `/usr/bin/time`; returns stdout and (elapsed, cpu s, rss kB).
fn timed(program: &Path, args: &[String]) -> anyhow::Result<(String, f64, u64)> {
    let mut c = Command::new("taskset");
    c.args(["-c", "1", "/usr/bin/time", "-f", "TIME %e %U %S %M"])
        .arg(program)
        .args(args);
    let out = c
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {}", program.display()))?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    let Some(t) = stderr.lines().rev().find_map(|l| l.strip_prefix("TIME ")) else {
        bail!("{} printed no timing: {stderr}", program.display());
    };
    let f: Vec<f64> = t
        .split_whitespace()
        .filter_map(|x| x.parse().ok())
        .collect();
    if f.len() < 4 {
        bail!("unparsable timing {t:?}");
    }
    Ok((
        String::from_utf8_lossy(&out.stdout).into_owned(),
        f[1] + f[2],
        f[3] as u64,
    ))
}

fn ours(
    bin: &Path,
    url: &str,
    rate: f64,
    secs: f64,
    connections: u32,
    what: &str,
    pacer: &str,
) -> anyhow::Result<Row> {
    let args: Vec<String> = [
        "--pacer".into(),
        pacer.to_string(),
        url.to_string(),
        "--rps".into(),
        rate.to_string(),
        "--duration".into(),
        format!("{secs}s"),
        "--connections".into(),
        connections.to_string(),
        "--json-stdout".into(),
        "--quiet".into(),
        "--timeout".into(),
        "5s".into(),
    ]
    .into();
    let (stdout, cpu_s, rss_kb) = timed(bin, &args)?;
    let j: serde_json::Value =
        serde_json::from_str(&stdout).context("parsing the loadtest JSON report")?;
    let c = &j["latency_ms"]["corrected"];
    let f = |v: &serde_json::Value| v.as_f64().unwrap_or(f64::NAN);
    Ok(Row {
        tool: format!("stackproof loadtest ({pacer} pacer)"),
        what: what.into(),
        achieved: f(&j["achieved_rate"]),
        p50: f(&c["p50"]),
        p95: f(&c["p95"]),
        p99: f(&c["p99"]),
        p999: f(&c["p99_9"]),
        requests: f(&j["completed"]) + f(&j["errors"]),
        cpu_s,
        rss_kb,
        note: format!(
            "pacer lateness p50 {:.3} ms; late starts {}; errors {}; unsent {}",
            f(&j["pacer_lateness_ms"]["p50"]),
            j["late_starts"],
            j["errors"],
            j["unsent"]
        ),
    })
}

/// The pacing floor (`crates/loadtest/examples/paced_floor.rs`): one blocking connection,
/// sleep, write, read; nothing else.
fn floor(bin: &Path, url: &str, rate: f64, secs: u64, what: &str) -> anyhow::Result<Row> {
    let addr = url
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string();
    let args = vec![addr, rate.to_string(), secs.to_string()];
    let (stdout, cpu_s, rss_kb) = timed(bin, &args)?;
    let f: Vec<f64> = stdout
        .split_whitespace()
        .filter_map(|x| x.parse().ok())
        .collect();
    let [requests, p50, p99, p999] = f.as_slice() else {
        bail!("paced_floor printed {stdout:?}");
    };
    Ok(Row {
        tool: "floor: 1 blocking connection (sleep, write, read), the least CPU for requests sent one at a time".into(),
        what: what.into(),
        achieved: requests / secs as f64,
        p50: *p50,
        p95: f64::NAN,
        p99: *p99,
        p999: *p999,
        requests: *requests,
        cpu_s,
        rss_kb,
        note: String::new(),
    })
}

fn oha(
    bin: &Path,
    url: &str,
    rate: Option<f64>,
    secs: u64,
    connections: u32,
    what: &str,
) -> anyhow::Result<Row> {
    let mut args: Vec<String> = vec![
        "-z".into(),
        format!("{secs}s"),
        "-c".into(),
        connections.to_string(),
        "--no-tui".into(),
        "--output-format".into(),
        "json".into(),
    ];
    if let Some(r) = rate {
        args.extend(["-q".into(), r.to_string(), "--latency-correction".into()]);
    }
    args.push(url.into());
    let (stdout, cpu_s, rss_kb) = timed(bin, &args)?;
    let j: serde_json::Value = serde_json::from_str(&stdout).context("parsing oha's JSON")?;
    let f = |v: &serde_json::Value| v.as_f64().unwrap_or(f64::NAN) * 1000.0;
    let rps = j["summary"]["requestsPerSec"].as_f64().unwrap_or(f64::NAN);
    let p = &j["latencyPercentiles"];
    Ok(Row {
        tool: "oha".into(),
        what: what.into(),
        achieved: rps,
        p50: f(&p["p50"]),
        p95: f(&p["p95"]),
        p99: f(&p["p99"]),
        p999: f(&p["p99.9"]),
        requests: rps * secs as f64,
        cpu_s,
        rss_kb,
        note: String::new(),
    })
}

/// wrk (Debian's is wrk 4, closed loop only: no `-R`): used for the closed-loop maximum.
fn wrk(bin: &Path, url: &str, secs: u64, connections: u32) -> anyhow::Result<Row> {
    let args: Vec<String> = vec![
        "-t1".into(),
        format!("-c{connections}"),
        format!("-d{secs}s"),
        "--latency".into(),
        url.into(),
    ];
    let (stdout, cpu_s, rss_kb) = timed(bin, &args)?;
    let mut row = Row {
        tool: "wrk (closed loop)".into(),
        what: "max, 1 core".into(),
        cpu_s,
        rss_kb,
        ..Row::default()
    };
    let ms = |s: &str| -> f64 {
        let s = s.trim();
        if let Some(v) = s.strip_suffix("us") {
            v.parse::<f64>().unwrap_or(f64::NAN) / 1000.0
        } else if let Some(v) = s.strip_suffix("ms") {
            v.parse().unwrap_or(f64::NAN)
        } else if let Some(v) = s.strip_suffix('s') {
            v.parse::<f64>().unwrap_or(f64::NAN) * 1000.0
        } else {
            f64::NAN
        }
    };
    for line in stdout.lines() {
        let w: Vec<&str> = line.split_whitespace().collect();
        match w.as_slice() {
            ["50%", v] => row.p50 = ms(v),
            ["99%", v] => row.p99 = ms(v),
            ["Requests/sec:", v] => row.achieved = v.parse().unwrap_or(f64::NAN),
            [n, "requests", "in", ..] => row.requests = n.parse().unwrap_or(f64::NAN),
            _ => {}
        }
    }
    row.p95 = f64::NAN;
    row.p999 = f64::NAN;
    row.note = "closed loop: latency is not corrected".into();
    Ok(row)
}

/// One row per tool (in first-seen order): the median of each column over that tool's runs, the
/// peak RSS's maximum, and the CPU's spread in the note when there was more than one run.
fn medians(runs: Vec<Row>) -> Vec<Row> {
    let mut tools: Vec<String> = Vec::new();
    for r in &runs {
        if !tools.contains(&r.tool) {
            tools.push(r.tool.clone());
        }
    }
    tools
        .into_iter()
        .filter_map(|tool| {
            let mine: Vec<&Row> = runs.iter().filter(|r| r.tool == tool).collect();
            let median = |f: &dyn Fn(&Row) -> f64| -> f64 {
                let mut v: Vec<f64> = mine.iter().map(|r| f(r)).collect();
                v.sort_by(f64::total_cmp);
                v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
            };
            let first = mine.first()?;
            let cpu: Vec<f64> = mine.iter().map(|r| r.cpu_per_10k()).collect();
            let (lo, hi) = cpu
                .iter()
                .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &c| {
                    (lo.min(c), hi.max(c))
                });
            let mut note = first.note.clone();
            if mine.len() > 1 {
                let spread = format!("median of {} runs, CPU-s/10k {lo:.3}-{hi:.3}", mine.len());
                note = if note.is_empty() {
                    spread
                } else {
                    format!("{spread}; first run: {note}")
                };
            }
            Some(Row {
                tool,
                what: first.what.clone(),
                achieved: median(&|r| r.achieved),
                p50: median(&|r| r.p50),
                p95: median(&|r| r.p95),
                p99: median(&|r| r.p99),
                p999: median(&|r| r.p999),
                // Stated per 10k so that `cpu_per_10k` gives the median.
                requests: 10_000.0,
                cpu_s: median(&|r| r.cpu_per_10k()),
                rss_kb: mine.iter().map(|r| r.rss_kb).max().unwrap_or(0),
                note,
            })
        })
        .collect()
}

fn print(rows: &[Row]) {
    println!(
        "\n| tool | run | achieved/s | p50 | p95 | p99 | p99.9 (ms, corrected) | CPU-s per 10k | peak RSS | note |\n|---|---|---|---|---|---|---|---|---|---|"
    );
    for r in rows {
        println!(
            "| {} | {} | {:.0} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} | {:.1} MB | {} |",
            r.tool,
            r.what,
            r.achieved,
            r.p50,
            r.p95,
            r.p99,
            r.p999,
            r.cpu_per_10k(),
            r.rss_kb as f64 / 1024.0,
            r.note
        );
    }
}

/// Runs the side-by-side benchmark and prints the table.
pub(crate) fn run(args: &BenchLoadtestArgs) -> anyhow::Result<()> {
    let bin = match &args.loadtest_bin {
        Some(b) => b.clone(),
        None => crate::build_release(&["-p", "stackproof-loadtest", "--bin", "loadtest"])?
            .join("loadtest"),
    };
    let floor_bin =
        crate::build_release(&["-p", "stackproof-loadtest", "--example", "paced_floor"])?
            .join("examples")
            .join("paced_floor");
    let (server, port) = Server::start()?;
    let url = format!("http://127.0.0.1:{port}/");
    println!(
        "server: {} at {url}; generators on CPU 1; {} s per run, {} connections, {} round(s) of the fixed-rate runs",
        server.name(),
        args.duration,
        args.connections,
        args.rounds
    );
    let oha_bin = which("oha").or_else(|| {
        let p = PathBuf::from(std::env::var_os("HOME")?).join(".cargo/bin/oha");
        p.is_file().then_some(p)
    });
    let wrk_bin = which("wrk");
    let mut rows = Vec::new();
    let secs = args.duration;
    // Warm-up (connections, page cache).
    let _ = ours(
        &bin,
        &url,
        1000.0,
        1.0,
        args.connections,
        "warm-up",
        "precise",
    );
    // The fixed-rate runs, `rounds` times; in each round the tools take turns in a rotated
    // order, so no tool always runs first (or right after another).
    for &rate in &args.rates {
        let what = format!("{rate}/s open loop");
        let mut runs: Vec<Row> = Vec::new();
        for round in 0..args.rounds as usize {
            for turn in 0..4 {
                let r = match (round + turn) % 4 {
                    pacer @ (0 | 1) => ours(
                        &bin,
                        &url,
                        f64::from(rate),
                        secs as f64,
                        args.connections,
                        &what,
                        if pacer == 0 { "precise" } else { "timer" },
                    ),
                    2 => floor(&floor_bin, &url, f64::from(rate), secs, &what),
                    _ => match &oha_bin {
                        Some(o) => oha(
                            o,
                            &url,
                            Some(f64::from(rate)),
                            secs,
                            args.connections,
                            &what,
                        ),
                        None => continue,
                    },
                };
                match r {
                    Ok(r) => runs.push(r),
                    Err(e) => eprintln!("a run at {rate}/s failed: {e:#}"),
                }
            }
        }
        rows.extend(medians(runs));
    }
    if wrk_bin.is_some() {
        println!(
            "wrk: Debian's wrk 4 has no fixed-rate mode (-R is wrk2); it runs the closed-loop maximum only"
        );
    }
    if !args.no_stall {
        rows.extend(stall_run(&server, &bin, &url, secs, args.connections));
    }
    if !args.no_max_rate {
        rows.extend(max_rate_rows(
            &bin,
            &url,
            args.connections,
            wrk_bin.as_deref(),
        ));
    }
    drop(server);
    print(&rows);
    Ok(())
}

/// 500/s while the server is stopped (SIGSTOP) for 1 s half way: how the tool counts the
/// requests that the stall delays (coordinated omission).
fn stall_run(server: &Server, bin: &Path, url: &str, secs: u64, connections: u32) -> Option<Row> {
    match server.worker_pid() {
        Some(pid) => {
            let url2 = url.to_owned();
            let bin2 = bin.to_path_buf();
            let conns = connections;
            let h = std::thread::spawn(move || {
                ours(
                    &bin2,
                    &url2,
                    500.0,
                    secs as f64,
                    conns,
                    "500/s, 1 s stall",
                    "precise",
                )
            });
            std::thread::sleep(Duration::from_secs(secs / 2));
            let _ = Command::new("kill")
                .args(["-STOP", &pid.to_string()])
                .status();
            std::thread::sleep(Duration::from_secs(1));
            let _ = Command::new("kill")
                .args(["-CONT", &pid.to_string()])
                .status();
            match h.join() {
                Ok(Ok(r)) => return Some(r),
                Ok(Err(e)) => eprintln!("stall test failed: {e:#}"),
                Err(_) => eprintln!("stall test thread panicked"),
            }
        }
        None => println!(
            "stall test skipped: the built-in server cannot be SIGSTOPped apart from this process"
        ),
    }
    None
}

/// The highest rate whose run achieves >= 98 % of the target with p99 under 10 ms, the first
/// one that does not, and wrk's closed-loop maximum when wrk is installed.
fn max_rate_rows(bin: &Path, url: &str, connections: u32, wrk_bin: Option<&Path>) -> Vec<Row> {
    let mut rows = Vec::new();
    // Highest rate whose run achieves >= 98 % of the target with p99 under 10 ms.
    let mut best: Option<Row> = None;
    for rate in [
        20_000u32, 30_000, 40_000, 50_000, 60_000, 80_000, 100_000, 120_000,
    ] {
        let what = format!("max search {rate}/s");
        match ours(
            bin,
            url,
            f64::from(rate),
            5.0,
            connections,
            &what,
            "precise",
        ) {
            Ok(r) => {
                let ok = r.achieved >= 0.98 * f64::from(rate) && r.p99 < 10.0;
                println!(
                    "  {rate}/s: achieved {:.0}/s, p99 {:.2} ms, CPU-s/10k {:.3} -> {}",
                    r.achieved,
                    r.p99,
                    r.cpu_per_10k(),
                    if ok { "sustained" } else { "not sustained" }
                );
                if !ok {
                    rows.push(r);
                    break;
                }
                best = Some(r);
            }
            Err(e) => {
                eprintln!("max-rate run at {rate}/s failed: {e:#}");
                break;
            }
        }
    }
    if let Some(mut b) = best {
        b.what = format!("max sustained open loop ({})", b.what);
        rows.push(b);
    }
    if let Some(w) = wrk_bin {
        match wrk(w, url, 5, connections) {
            Ok(r) => rows.push(r),
            Err(e) => eprintln!("wrk failed: {e:#}"),
        }
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(tool: &str, cpu_s: f64, p50: f64, rss_kb: u64) -> Row {
        Row {
            tool: tool.into(),
            what: "5000/s open loop".into(),
            achieved: 5000.0,
            p50,
            requests: 50_000.0,
            cpu_s,
            rss_kb,
            ..Row::default()
        }
    }

    #[test]
    fn rounds_collapse_to_one_row_per_tool_with_medians_and_the_cpu_spread() {
        let rows = medians(vec![
            run("ours", 1.5, 0.05, 7000),
            run("oha", 2.0, 0.10, 30000),
            run("ours", 2.0, 0.04, 7100),
            run("oha", 1.8, 0.12, 32000),
            run("ours", 1.4, 0.06, 6900),
            run("oha", 2.2, 0.11, 31000),
        ]);
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].tool, "ours");
        // CPU-s per 10k of the three runs: 0.30, 0.40, 0.28 -> median 0.30.
        assert!((rows[0].cpu_per_10k() - 0.30).abs() < 1e-9);
        assert!((rows[0].p50 - 0.05).abs() < 1e-9);
        assert_eq!(rows[0].rss_kb, 7100);
        assert!(
            rows[0]
                .note
                .contains("median of 3 runs, CPU-s/10k 0.280-0.400")
        );
        assert!((rows[1].cpu_per_10k() - 0.40).abs() < 1e-9);
        // A single run is passed through with its own note.
        let one = medians(vec![run("wrk", 1.0, 0.2, 5000)]);
        assert_eq!(one.len(), 1);
        assert!(one[0].note.is_empty());
        assert!((one[0].cpu_per_10k() - 0.2).abs() < 1e-9);
    }
}
