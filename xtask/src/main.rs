//! `cargo xtask`: the project's own tasks (setup, test, bench) and, with the checkout as home,
//! every command of the `stackproof` binary (package `stackproof` in `crates/cli`, the same code).
//!
//! Exit codes: those of `stackproof` (see the crate `cli`); setup, test and bench exit 0 or 1.

mod bench_deploy;
mod bench_distributed;
mod bench_loadtest;
mod bench_sandbox;
mod bench_soak;
mod setup;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "cargo xtask",
    about = "Build a web stack on AWS (or the local sandbox) and prove it."
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Install what the tests and the sandbox need (a Python virtualenv with moto; the
    /// docker-registry, postgresql, redis-server and openssl Debian packages, with apt-get).
    Setup,
    /// Set up, then run the whole test suite (extra arguments go to `cargo test`).
    Test {
        /// Arguments for `cargo test`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// The stackproof commands (deploy, plan, status, destroy, loadtest, check, sandbox, init,
    /// image): the same code the `stackproof` binary runs, with this checkout as its home.
    #[command(flatten)]
    Stack(Box<cli::Command>),
    /// Benchmarks.
    Bench {
        #[command(subcommand)]
        what: BenchCmd,
    },
}

#[derive(Debug, Subcommand)]
enum BenchCmd {
    /// Whole-stack deploy, no-change plan, second deploy and destroy into a moto of its own:
    /// wall time and AWS calls, three runs each.
    Deploy(bench_deploy::BenchDeployArgs),
    /// A distributed load test's coordinator (`loadtest --workers N`, N generators as ECS
    /// tasks in a sandbox of its own): wall time, CPU, memory and S3 / ECS calls, in all and
    /// per generator and minute.
    Distributed(bench_distributed::BenchDistributedArgs),
    /// The load engine side by side with other tools against one local server.
    Loadtest(bench_loadtest::BenchLoadtestArgs),
    /// The sandbox ALB proxy: latency it adds at 2,000 requests/s and the rate one core carries.
    Sandbox(bench_sandbox::BenchSandboxArgs),
    /// The load engine held at one rate for minutes (default 10 min at 5,000 requests/s)
    /// against a local server: RSS and CPU per request every 10 s, errors at the end.
    Soak(bench_soak::BenchSoakArgs),
}

/// The project root (the workspace folder).
///
/// Found at run time: `cargo run` (and `cargo test`) set `CARGO_MANIFEST_DIR` to xtask's folder.
/// The path baked in at compile time is only the fallback: with a target directory shared by
/// several clones (CI keeps it outside the clone), an unchanged xtask binary may have been
/// built from another clone that no longer exists.
pub(crate) fn project_root() -> PathBuf {
    let manifest = std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .filter(|dir| dir.join("Cargo.toml").is_file())
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")));
    manifest.parent().map(PathBuf::from).unwrap_or(manifest)
}

/// A benchmark's duration option (`10s`, `5m`): whole seconds, at least one.
pub(crate) fn whole_seconds(text: &str) -> Result<u64, String> {
    let d = loadtest::parse_duration(text)?;
    if d.subsec_nanos() != 0 || d.as_secs() == 0 {
        return Err(format!(
            "{text:?} is not a whole number of seconds, at least 1s"
        ));
    }
    Ok(d.as_secs())
}

/// Runs `cargo build --release ARGS` in the project (a benchmark's programs) and returns the
/// release output folder.
pub(crate) fn build_release(args: &[&str]) -> anyhow::Result<PathBuf> {
    use anyhow::Context as _;
    let root = project_root();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = std::process::Command::new(cargo)
        .args(["build", "--release"])
        .args(args)
        .current_dir(&root)
        .status()
        .with_context(|| format!("running cargo build --release {}", args.join(" ")))?;
    if !status.success() {
        anyhow::bail!("cargo build --release {} failed", args.join(" "));
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    Ok(target.join("release"))
}

fn main() -> std::process::ExitCode {
    let cli = match cli::parse_or_exit(Cli::try_parse) {
        Ok(cli) => cli,
        Err(code) => return code,
    };
    cli::init_logging();
    let root = project_root();
    cli::set_home(cli::Home {
        root: root.clone(),
        program: "cargo xtask",
        checkout: Some(root),
    });
    let result = match cli.cmd {
        Cmd::Stack(command) => return cli::run(*command),
        Cmd::Setup => setup::setup().map(|_| ()),
        Cmd::Test { args } => setup::test(&args),
        Cmd::Bench {
            what: BenchCmd::Deploy(args),
        } => bench_deploy::run(&args),
        Cmd::Bench {
            what: BenchCmd::Distributed(args),
        } => bench_distributed::run(&args),
        Cmd::Bench {
            what: BenchCmd::Loadtest(args),
        } => bench_loadtest::run(&args),
        Cmd::Bench {
            what: BenchCmd::Sandbox(args),
        } => bench_sandbox::run(&args),
        Cmd::Bench {
            what: BenchCmd::Soak(args),
        } => bench_soak::run(&args),
    };
    cli::exit_code(result)
}
