//! `cargo xtask bench distributed`: what coordinating a distributed load test costs. In a
//! folder of its own it starts a sandbox (fast clock), deploys the default stack, and runs
//! `loadtest --workers N` for each N asked (the generators are ECS tasks the sandbox runs as
//! processes of this program); from each run's `distributed.json` it prints the coordinator's
//! wall time, CPU, peak RSS and S3 / ECS calls, in all and per generator and minute, with the
//! merged request count and p99. Then it destroys the stack and stops the sandbox. Numbers,
//! not assertions.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, bail};

/// Options of `cargo xtask bench distributed`.
#[derive(clap::Args, Debug)]
pub(crate) struct BenchDistributedArgs {
    /// Generator counts to run, each once (`--workers 1 --workers 4`).
    #[arg(long = "workers", default_values_t = [1, 2, 4], value_parser = clap::value_parser!(u32).range(1..=16))]
    pub(crate) workers: Vec<u32>,
    /// The whole run's rate, requests per second.
    #[arg(long, default_value_t = 400, value_parser = clap::value_parser!(u32).range(1..=20_000))]
    pub(crate) rps: u32,
    /// How long each run sends (`30s`), whole seconds.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = crate::whole_seconds)]
    pub(crate) duration: u64,
}

/// This program with the bench's folder as its state and configuration.
fn xtask(dir: &Path, args: &[&str]) -> anyhow::Result<std::process::Output> {
    let exe = std::env::current_exe().context("finding the xtask executable")?;
    let config = dir.join("stack.toml");
    let mut cmd = Command::new(exe);
    cmd.arg(args[0]);
    // Every command but `sandbox` reads (or, `init`, writes) the bench's own stack.toml.
    if args[0] != "sandbox" {
        cmd.arg("--config").arg(&config);
    }
    cmd.args(&args[1..])
        .env("STACKPROOF_STATE_DIR", dir.join(".stackproof"))
        .current_dir(dir);
    cmd.output()
        .with_context(|| format!("running xtask {}", args.join(" ")))
}

fn must(dir: &Path, args: &[&str]) -> anyhow::Result<String> {
    let out = xtask(dir, args)?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if !out.status.success() {
        bail!("xtask {} failed ({}):\n{text}", args.join(" "), out.status);
    }
    Ok(text)
}

pub(crate) fn run(args: &BenchDistributedArgs) -> anyhow::Result<()> {
    let dir: PathBuf = std::env::temp_dir().join(format!(
        "stackproof-bench-distributed-{}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    must(&dir, &["init"])?;
    let config = dir.join("stack.toml");
    let text = std::fs::read_to_string(&config).context("reading the bench's stack.toml")?;
    // The access logs land in the bucket: let destroy empty it.
    std::fs::write(
        &config,
        text.replacen("\nforce-destroy = false\n", "\nforce-destroy = true\n", 1),
    )
    .context("writing the bench's stack.toml")?;
    must(&dir, &["sandbox", "start", "--clock", "fast"])?;
    let result = measure(&dir, args);
    let destroyed = must(&dir, &["destroy", "--yes"]);
    let stopped = must(&dir, &["sandbox", "stop"]);
    let rows = result?;
    destroyed?;
    stopped?;
    let _ = std::fs::remove_dir_all(&dir);
    println!(
        "\ncoordinator of `loadtest --workers N --rps {} --duration {}s` (sandbox, fast clock)",
        args.rps, args.duration
    );
    println!(
        "{:>7} {:>8} {:>7} {:>9} {:>8} {:>8} | per generator-minute: {:>7} {:>7} {:>7} | {:>9} {:>9}",
        "workers",
        "wall s",
        "CPU s",
        "RSS MiB",
        "S3",
        "ECS",
        "CPU s",
        "S3",
        "ECS",
        "responses",
        "p99 ms"
    );
    for r in rows {
        println!("{r}");
    }
    Ok(())
}

fn measure(dir: &Path, args: &BenchDistributedArgs) -> anyhow::Result<Vec<String>> {
    must(dir, &["deploy", "--yes"])?;
    let mut rows = Vec::new();
    for n in &args.workers {
        let out = dir.join(format!("run-{n}"));
        let out_arg = out.display().to_string();
        let (n_arg, rps, duration) = (
            n.to_string(),
            args.rps.to_string(),
            format!("{}s", args.duration),
        );
        let shown = xtask(
            dir,
            &[
                "loadtest",
                "--workers",
                &n_arg,
                "--rps",
                &rps,
                "--duration",
                &duration,
                "--out",
                &out_arg,
            ],
        )?;
        eprintln!("{}", String::from_utf8_lossy(&shown.stdout));
        let json = std::fs::read_to_string(out.join("distributed.json"))
            .with_context(|| format!("the run with {n} generators wrote no distributed.json"))?;
        let v: serde_json::Value =
            serde_json::from_str(&json).context("reading distributed.json")?;
        let report: serde_json::Value = std::fs::read_to_string(out.join("report.json"))
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or_default();
        let h = &v["overhead"];
        let f = |x: &serde_json::Value| x.as_f64().unwrap_or(f64::NAN);
        rows.push(format!(
            "{n:>7} {:>8.1} {:>7.2} {:>9.1} {:>8} {:>8} | {:>21.3} {:>7.1} {:>7.1} | {:>9} {:>9.2}{}",
            f(&h["wall_s"]),
            f(&h["cpu_s"]),
            f(&h["peak_rss_kib"]) / 1024.0,
            h["s3_calls"].as_u64().unwrap_or(0),
            h["ecs_calls"].as_u64().unwrap_or(0),
            f(&h["per_worker_minute"]["cpu_s"]),
            f(&h["per_worker_minute"]["s3_calls"]),
            f(&h["per_worker_minute"]["ecs_calls"]),
            report["completed"].as_u64().unwrap_or(0),
            f(&report["latency_ms"]["corrected"]["p99"]),
            if v["invalid"].as_array().is_some_and(|a| !a.is_empty()) {
                "  INVALID"
            } else {
                ""
            }
        ));
    }
    Ok(rows)
}
