//! The `loadtest` command: a thin command line over the `loadtest` library.
//!
//! Exit codes: 0 when every SLO is met, 1 when one is broken, 2 for invalid input or a run that
//! could not start.

use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use stackproof_loadtest::{Config, Slo, Stage, parse_duration};

/// Open-loop HTTP load generator (coordinated-omission corrected).
#[derive(Parser, Debug)]
#[command(name = "loadtest", version)]
struct Args {
    /// Target URL (http://host[:port]/path or https://...).
    #[arg(required_unless_present = "merge")]
    url: Option<String>,
    /// This generator's share of a schedule several send together: `INDEX/OF` sends the
    /// schedule's requests k with k mod OF == INDEX (`--rps` and `--stage` are the whole
    /// run's). Give every generator the same `--start-at`.
    #[arg(long, value_name = "INDEX/OF")]
    worker: Option<stackproof_loadtest::Stripe>,
    /// When the schedule starts, ms since the Unix epoch (the same for every generator of a
    /// striped run; a start already past by more than 100 ms fails the run).
    #[arg(long, value_name = "UNIX_MS")]
    start_at: Option<u64>,
    /// Add these interval logs (what `--hdr-log` writes, one per generator) exactly and print
    /// the whole run's latency percentiles, instead of running load.
    #[arg(long, num_args = 1.., value_name = "HDR_LOG", conflicts_with = "url")]
    merge: Vec<PathBuf>,
    /// Pacer: precise (timerfd, sub-0.1 ms) or timer (tokio 1 ms timer, batches at high rates).
    #[arg(long, value_parser = ["precise", "timer"])]
    pacer: Option<String>,
    /// A TOML file with a loadtest `Config` table; command-line flags override it.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Requests per second (constant run, or starting rate with --stage).
    #[arg(short = 'r', long = "rps", alias = "rate")]
    rps: Option<f64>,
    /// Run length, with a unit: `30s`, `5m`, `1m30s`.
    #[arg(short, long, value_parser = parse_duration)]
    duration: Option<Duration>,
    /// A ramp stage `DURATION:TARGET` as k6 writes it (repeatable): `30s:500` ramps to 500
    /// requests/s over 30 s.
    #[arg(long = "stage", value_name = "DURATION:TARGET")]
    stages: Vec<String>,
    /// Connection cap.
    #[arg(short, long)]
    connections: Option<usize>,
    /// Worker threads.
    #[arg(short, long)]
    threads: Option<usize>,
    /// HTTP method.
    #[arg(short = 'X', long)]
    method: Option<String>,
    /// Request header `Name: value` (repeatable).
    #[arg(short = 'H', long = "header")]
    headers: Vec<String>,
    /// Request body.
    #[arg(long)]
    body: Option<String>,
    /// Connect timeout (`2s`).
    #[arg(long, value_parser = parse_duration)]
    connect_timeout: Option<Duration>,
    /// Request timeout (`5s`).
    #[arg(long, value_parser = parse_duration)]
    timeout: Option<Duration>,
    /// Reopen connections after this long (`30s`).
    #[arg(long, value_parser = parse_duration)]
    max_connection_age: Option<Duration>,
    /// Reopen connections after this many requests.
    #[arg(long)]
    max_requests_per_connection: Option<u64>,
    /// Re-resolve the host this often (`5s`), or sooner when the answer's TTL is shorter
    /// (`0`: once).
    #[arg(long, value_parser = parse_duration)]
    dns_ttl: Option<Duration>,
    /// Ask this DNS server (ip:port, UDP) for the host and honour its TTL (e.g. the sandbox's,
    /// which `cargo xtask sandbox status` prints).
    #[arg(long, value_name = "ADDR")]
    dns_server: Option<String>,
    /// `host:port:addr[,addr]` address override (repeatable); https still verifies the URL's host.
    #[arg(long)]
    resolve: Vec<String>,
    /// PEM file of CA certificates trusted for https on top of the system's roots.
    #[arg(long, value_name = "FILE")]
    cacert: Option<PathBuf>,
    /// Response header to break results down by (repeatable; default x-az).
    #[arg(long = "breakdown-header")]
    breakdown_headers: Vec<String>,
    /// SLO: maximum p50 latency, ms.
    #[arg(long)]
    slo_p50_ms: Option<f64>,
    /// SLO: maximum p95 latency, ms.
    #[arg(long)]
    slo_p95_ms: Option<f64>,
    /// SLO: maximum p99 latency, ms.
    #[arg(long)]
    slo_p99_ms: Option<f64>,
    /// SLO: maximum latency, ms.
    #[arg(long)]
    slo_max_ms: Option<f64>,
    /// SLO: maximum error rate (fraction 0..1).
    #[arg(long)]
    slo_max_error_rate: Option<f64>,
    /// SLO: minimum success rate (fraction 0..1).
    #[arg(long)]
    slo_min_success_rate: Option<f64>,
    /// SLO: latency threshold for --slo-max-fraction-over, ms.
    #[arg(long)]
    slo_over_ms: Option<f64>,
    /// SLO: maximum fraction of responses slower than --slo-over-ms.
    #[arg(long)]
    slo_max_fraction_over: Option<f64>,
    /// Write the JSON report here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Write the per-second CSV series here.
    #[arg(long)]
    csv: Option<PathBuf>,
    /// Write the HdrHistogram interval log here.
    #[arg(long)]
    hdr_log: Option<PathBuf>,
    /// Print the JSON report on stdout instead of the summary.
    #[arg(long)]
    json_stdout: bool,
    /// No live progress line.
    #[arg(short, long)]
    quiet: bool,
}

fn config(a: &Args) -> anyhow::Result<Config> {
    let mut c: Config = match &a.config {
        Some(p) => {
            let text =
                std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
            toml::from_str(&text).with_context(|| format!("parsing {}", p.display()))?
        }
        None => Config::default(),
    };
    c.url = a.url.clone().unwrap_or_default();
    c.worker = a.worker.or(c.worker);
    c.start_at_unix_ms = a.start_at.or(c.start_at_unix_ms);
    macro_rules! set {
        ($($f:ident),*) => { $( if let Some(v) = &a.$f { c.$f = v.clone(); } )* };
    }
    set!(connections, threads, method, body);
    macro_rules! secs {
        ($($f:ident),*) => { $( if let Some(v) = a.$f { c.$f = v.as_secs_f64(); } )* };
    }
    secs!(duration, connect_timeout, timeout, dns_ttl);
    if let Some(rps) = a.rps {
        c.rate = rps;
    }
    if let Some(age) = a.max_connection_age {
        c.max_connection_age = Some(age.as_secs_f64());
    }
    if a.max_requests_per_connection.is_some() {
        c.max_requests_per_connection = a.max_requests_per_connection;
    }
    match a.pacer.as_deref() {
        Some("timer") => c.pacer = stackproof_loadtest::Pacer::Timer,
        Some(_) => c.pacer = stackproof_loadtest::Pacer::Precise,
        None => {}
    }
    c.headers.extend(a.headers.iter().cloned());
    c.resolve.extend(a.resolve.iter().cloned());
    if a.dns_server.is_some() {
        c.dns_server = a.dns_server.clone();
    }
    if a.cacert.is_some() {
        c.cacert = a.cacert.clone();
    }
    if !a.breakdown_headers.is_empty() {
        c.breakdown_headers = a.breakdown_headers.clone();
    }
    for s in &a.stages {
        c.stages.push(stage(s).map_err(anyhow::Error::msg)?);
    }
    let slo = Slo {
        p50_ms: a.slo_p50_ms,
        p95_ms: a.slo_p95_ms,
        p99_ms: a.slo_p99_ms,
        max_ms: a.slo_max_ms,
        max_error_rate: a.slo_max_error_rate,
        min_success_rate: a.slo_min_success_rate,
        over_ms: a.slo_over_ms,
        max_fraction_over: a.slo_max_fraction_over,
    };
    if slo != Slo::default() {
        c.slo = slo;
    }
    Ok(c)
}

/// One `--stage DURATION:TARGET`, k6's form. The form this tool had before (`TARGET:SECONDS`,
/// two bare numbers) is refused with the stage rewritten in the new one.
fn stage(s: &str) -> Result<Stage, String> {
    let allowed = "DURATION:TARGET as k6 writes it, such as 30s:500";
    let Some((d, t)) = s.split_once(':') else {
        return Err(format!("--stage {s:?}: {allowed}"));
    };
    if let (Ok(rate), Ok(secs)) = (d.trim().parse::<f64>(), t.trim().parse::<f64>()) {
        return Err(format!(
            "--stage {s:?} is the old TARGET:SECONDS form; stages are {allowed}: here --stage {secs}s:{rate}"
        ));
    }
    let duration = parse_duration(d).map_err(|e| format!("--stage {s:?}: {e}"))?;
    let target = t
        .trim()
        .parse::<f64>()
        .map_err(|_| format!("--stage {s:?}: the target {t:?} is not a rate ({allowed})"))?;
    Ok(Stage {
        target,
        duration: duration.as_secs_f64(),
    })
}

fn write(path: &PathBuf, what: &str, bytes: &[u8]) -> anyhow::Result<()> {
    std::fs::write(path, bytes).with_context(|| format!("writing the {what} to {}", path.display()))
}

/// `--merge`: the exact sum of the logs' histograms, printed as percentiles (ms).
fn merge(a: &Args) -> anyhow::Result<bool> {
    let logs = a
        .merge
        .iter()
        .map(|p| std::fs::read(p).with_context(|| format!("reading {}", p.display())))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let slices: Vec<&[u8]> = logs.iter().map(Vec::as_slice).collect();
    let merged = stackproof_loadtest::merge_interval_logs(&slices)?;
    let p = merged.percentiles();
    if a.json_stdout {
        let seconds: Vec<serde_json::Value> = merged
            .seconds
            .iter()
            .map(|(t, h)| {
                let s = stackproof_loadtest::Percentiles::of(h);
                serde_json::json!({ "unix_s": t, "count": s.count, "p50_ms": s.p50, "p99_ms": s.p99, "max_ms": s.max })
            })
            .collect();
        let out = serde_json::json!({ "logs": merged.logs, "latency_ms": p, "seconds": seconds });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        println!(
            "{} interval logs, {} seconds, {} requests\nlatency (ms)   p50 {:.3}  p90 {:.3}  p95 {:.3}  p99 {:.3}  p99.9 {:.3}  max {:.3}  mean {:.3}",
            merged.logs,
            merged.seconds.len(),
            p.count,
            p.p50,
            p.p90,
            p.p95,
            p.p99,
            p.p99_9,
            p.max,
            p.mean
        );
    }
    Ok(true)
}

async fn main_inner(a: Args) -> anyhow::Result<bool> {
    if !a.merge.is_empty() {
        return merge(&a);
    }
    let c = config(&a)?;
    let slo = c.slo.clone();
    let tty = !a.quiet && std::io::stderr().is_terminal();
    let show = |s: &stackproof_loadtest::Snapshot| eprint!("\r{}\x1b[K", s.line());
    let report = stackproof_loadtest::run(c, if tty { Some(&show) } else { None }).await?;
    if tty {
        eprintln!();
    }
    if a.json_stdout {
        println!("{}", report.to_json());
    } else {
        println!("{}", report.summary());
    }
    if let Some(p) = &a.json {
        write(p, "JSON report", report.to_json().as_bytes())?;
    }
    if let Some(p) = &a.csv {
        write(p, "CSV series", report.to_csv().as_bytes())?;
    }
    if let Some(p) = &a.hdr_log {
        let mut buf = Vec::new();
        report
            .write_interval_log(&mut buf)
            .context("encoding the interval log")?;
        write(p, "interval log", &buf)?;
    }
    let verdict = report.verdict(&slo);
    if slo != Slo::default() {
        eprintln!("{verdict}");
    }
    Ok(verdict.passed)
}

fn main() -> ExitCode {
    let a = Args::parse();
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: could not start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match rt.block_on(main_inner(a)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(line: &[&str]) -> Result<Config, String> {
        let a = Args::try_parse_from(["loadtest", "http://127.0.0.1:1/"].iter().chain(line))
            .map_err(|e| e.to_string())?;
        config(&a).map_err(|e| e.to_string())
    }

    #[test]
    fn a_worker_share_and_a_shared_start_reach_the_config_and_merge_needs_no_url() {
        let c = args(&["--worker", "2/4", "--start-at", "1800000000000"]).unwrap();
        assert_eq!(
            c.worker,
            Some(stackproof_loadtest::Stripe { index: 2, of: 4 })
        );
        assert_eq!(c.start_at_unix_ms, Some(1_800_000_000_000));
        let err = args(&["--worker", "4/4"]).unwrap_err();
        assert!(err.contains("INDEX/OF with 0 <= INDEX < OF"), "{err}");
        let a = Args::try_parse_from(["loadtest", "--merge", "a.hlog", "b.hlog"]).unwrap();
        assert_eq!(a.merge.len(), 2);
        assert!(a.url.is_none());
        assert!(
            Args::try_parse_from(["loadtest"]).is_err(),
            "a URL or --merge"
        );
    }

    #[test]
    fn durations_take_units_and_stages_are_k6_s() {
        let c = args(&[
            "--rps",
            "200",
            "--duration",
            "1m30s",
            "--timeout",
            "5s",
            "--connect-timeout",
            "250ms",
            "--dns-ttl",
            "0",
            "--max-connection-age",
            "2m",
            "--stage",
            "30s:500",
            "--stage",
            "1m:0",
        ])
        .unwrap();
        assert_eq!((c.rate, c.duration), (200.0, 90.0));
        assert_eq!((c.timeout, c.connect_timeout, c.dns_ttl), (5.0, 0.25, 0.0));
        assert_eq!(c.max_connection_age, Some(120.0));
        assert_eq!(
            c.stages
                .iter()
                .map(|s| (s.duration, s.target))
                .collect::<Vec<_>>(),
            [(30.0, 500.0), (60.0, 0.0)]
        );
        // The rate's old name still reads, as an alias of --rps.
        assert_eq!(args(&["--rate", "7"]).unwrap().rate, 7.0);
    }

    #[test]
    fn old_forms_are_refused_with_the_new_one_spelled_out() {
        let e = args(&["--stage", "500:30"]).unwrap_err();
        assert!(
            e.contains("--stage \"500:30\" is the old TARGET:SECONDS form")
                && e.contains("here --stage 30s:500"),
            "{e}"
        );
        let e = args(&["--duration", "30"]).unwrap_err();
        assert!(
            e.contains("\"30\" has no unit: write 30s for seconds"),
            "{e}"
        );
        let e = args(&["--stage", "30s:lots"]).unwrap_err();
        assert!(e.contains("the target \"lots\" is not a rate"), "{e}");
        let e = args(&["--stage", "soon:5"]).unwrap_err();
        assert!(e.contains("\"soon\""), "{e}");
    }
}
