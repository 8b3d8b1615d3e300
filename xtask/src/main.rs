//! `cargo xtask`: the stackproof command line.
//!
//! Exit codes: 0 success; 1 failure (the message says what and how to resume); 2 bad usage;
//! 4 (`deploy`, `destroy`) another run holds the stack's lock.
//! `plan --detailed-exitcode` and `status` give 2 another meaning (changes pending); see their
//! `--help`.

mod bench_deploy;
mod bench_loadtest;
mod bench_sandbox;
mod bench_soak;
mod check;
mod deploy;
mod image_cmd;
mod init;
mod loadtest_cmd;
mod progress;
mod sandbox_cmd;
mod setup;
mod status;
mod steady;
mod target;

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "cargo xtask",
    about = "Build a web stack on AWS (or the local sandbox) and prove it."
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

/// Where the stack lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Target {
    /// The local sandbox (moto on 127.0.0.1), started on demand. The default.
    Sandbox,
    /// Real AWS, with the standard credential chain.
    Aws,
}

/// Options shared by the commands that work on a stack.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct StackArgs {
    /// The stack configuration. Default: `stack.toml` in the project root if it exists,
    /// else the built-in defaults.
    #[arg(long, value_name = "FILE")]
    pub(crate) config: Option<PathBuf>,
    /// Where to deploy.
    #[arg(long, value_enum, default_value_t = Target::Sandbox)]
    pub(crate) target: Target,
    /// AWS profile (with `--target aws`).
    #[arg(long)]
    pub(crate) profile: Option<String>,
    /// AWS region; overrides the configuration's `region`.
    #[arg(long)]
    pub(crate) region: Option<String>,
    /// Print the AWS calls made, per service and operation, at the end.
    #[arg(long, short)]
    pub(crate) verbose: bool,
}

/// The stack's lock (deploy, destroy and loadtest).
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct LockArgs {
    /// Delete the stack's lock before taking it, if its id is LOCK_ID (the id printed when the
    /// lock was found): for a lock left by a run that was killed. A lock another run took
    /// since has another id and stays. If its holder is in fact still running, two writers may
    /// interleave; running deploy again converges.
    #[arg(long, value_name = "LOCK_ID", num_args = 0..=1, default_missing_value = "")]
    pub(crate) force_unlock: Option<String>,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Install what the tests and the sandbox need (a Python virtualenv with moto; the
    /// docker-registry Debian package, with apt-get).
    Setup,
    /// Set up, then run the whole test suite (extra arguments go to `cargo test`).
    Test {
        /// Arguments for `cargo test`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Start, stop or inspect the local sandbox.
    Sandbox {
        #[command(subcommand)]
        action: sandbox_cmd::Action,
    },
    /// Show what deploy would change. Reads only.
    ///
    /// Exit codes: 0 success, 1 error, 2 bad usage. With --detailed-exitcode (as `terraform
    /// plan -detailed-exitcode`): 0 no changes, 2 changes pending (drift), 1 any error, bad
    /// usage included.
    Plan {
        #[command(flatten)]
        stack: StackArgs,
        /// Print the plan as JSON.
        #[arg(long)]
        json: bool,
        /// Exit 0 when there are no changes, 2 when there are, 1 on error (for CI).
        #[arg(long)]
        detailed_exitcode: bool,
    },
    /// Show what exists of the stack (per module, by kind, with ids), its outputs and whether it
    /// has drifted from its configuration. Reads only: makes no write call.
    ///
    /// Exit codes: 0 deployed with no drift, 2 drifted or partially deployed, 3 nothing
    /// deployed (or the sandbox is not running), 1 error.
    Status {
        #[command(flatten)]
        stack: StackArgs,
        /// Print the status as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Write a commented stack.toml: every key with its default value and what it allows.
    ///
    /// Exit codes: 0 written, 1 the file exists (without --force) or cannot be written.
    Init {
        /// Where to write it. Default: `stack.toml` in the project root.
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// Overwrite the file if it exists (what it held is lost).
        #[arg(long)]
        force: bool,
    },
    /// Create or repair the stack, print its outputs, then wait until the service serves.
    ///
    /// Takes the stack's lock first (one deploy or destroy of a stack at a time). Exit codes:
    /// 0 deployed and steady, 1 error (running it again resumes), 4 another run holds the lock
    /// (the message names it and its age), 5 deployed but the service is not steady (the
    /// message says why), 130 interrupted (the lock is released).
    Deploy {
        #[command(flatten)]
        stack: StackArgs,
        /// Do not ask before changing real AWS resources.
        #[arg(long)]
        yes: bool,
        /// Return once the apply is complete, without waiting for the service's tasks to run
        /// and its targets to be healthy in every zone.
        #[arg(long)]
        no_wait: bool,
        /// Wait at most this many seconds for a steady service [default: the predicted
        /// longest start of a new task (scheduler, Fargate launch, first health check) x 1.5,
        /// on the stack's clock].
        #[arg(long, value_name = "SECONDS", conflicts_with = "no_wait", value_parser = parse_wait_timeout)]
        wait_timeout: Option<f64>,
        #[command(flatten)]
        lock: LockArgs,
    },
    /// Delete everything tagged with the stack. Asks you to type the stack name first, unless
    /// --yes.
    ///
    /// Exit codes: 0 destroyed (or nothing to destroy), 1 error or cancelled (the name typed
    /// was not the stack's; nothing deleted), 2 bad usage: no --yes and stdin is not a
    /// terminal to ask on (nothing deleted; input piped to stdin is never taken as an answer),
    /// 4 another run holds the stack's lock, 130 interrupted (the lock is released).
    Destroy {
        #[command(flatten)]
        stack: StackArgs,
        /// Do not ask before deleting (needed when stdin is not a terminal).
        #[arg(long)]
        yes: bool,
        /// Turn off the load balancer's deletion protection and delete it anyway.
        #[arg(long)]
        override_deletion_protection: bool,
        #[command(flatten)]
        lock: LockArgs,
    },
    /// Probe the deployed stack briefly at a low rate: an SLO verdict (exit 0 pass, 1 fail, 3 not
    /// deployed), JSON and JUnit XML, and CloudWatch metrics for the dashboard. For cron and CI.
    Check {
        #[command(flatten)]
        stack: StackArgs,
        #[command(flatten)]
        args: check::CheckArgs,
    },
    /// Prove the deployed stack under load: baseline, scale-out and availability-zone
    /// failover, each with a verdict; writes report.json and report.html. Holds the stack's
    /// lock for the run (a deploy meanwhile would undo the fault). Exit codes: 0 every
    /// scenario passed, 1 one failed, 2 bad usage, 3 no deployed stack, 4 another run holds the
    /// lock, 130 interrupted (Ctrl-C, SIGTERM or SIGHUP; the fault is undone).
    Loadtest {
        #[command(flatten)]
        stack: StackArgs,
        #[command(flatten)]
        args: loadtest_cmd::LoadtestArgs,
        #[command(flatten)]
        lock: LockArgs,
    },
    /// Build the service's image without Docker (the sample-app, statically linked, or
    /// --binary) and push it: to the stack's ECR repository (--target aws, with ECR's token) or
    /// to --registry. A push of an unchanged program uploads no blob.
    ///
    /// Exit codes: 0 pushed, 1 error, 2 bad usage (the message names the option), 3 the stack
    /// is not deployed (no repository yet).
    Image {
        #[command(flatten)]
        stack: StackArgs,
        #[command(flatten)]
        args: image_cmd::ImageArgs,
    },
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
    /// The load engine side by side with other tools against one local server.
    Loadtest(bench_loadtest::BenchLoadtestArgs),
    /// The sandbox ALB proxy: latency it adds at 2,000 requests/s and the rate one core carries.
    Sandbox(bench_sandbox::BenchSandboxArgs),
    /// The load engine held at one rate for minutes (default 10 min at 5,000 requests/s)
    /// against a local server: RSS and CPU per request every 10 s, errors at the end.
    Soak(bench_soak::BenchSoakArgs),
}

/// `--wait-timeout`: seconds, more than 0 and at most a day.
fn parse_wait_timeout(s: &str) -> Result<f64, String> {
    s.parse::<f64>()
        .ok()
        .filter(|v| v.is_finite() && *v > 0.0 && *v <= 86_400.0)
        .ok_or_else(|| format!("{s:?} is not a number of seconds from 0 (excluded) to 86400"))
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

/// The project's own hidden folder for state and logs: `.stackproof` in the project root, or
/// `$STACKPROOF_STATE_DIR` (tests use their own).
pub(crate) fn state_dir() -> PathBuf {
    match std::env::var_os("STACKPROOF_STATE_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => project_root().join(".stackproof"),
    }
}

fn main() -> std::process::ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        // With --detailed-exitcode, 2 means "changes pending": bad usage exits 1 there.
        Err(e) if e.use_stderr() && std::env::args().any(|a| a == "--detailed-exitcode") => {
            let _ = e.print();
            return std::process::ExitCode::FAILURE;
        }
        Err(e) => e.exit(),
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: could not start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = match cli.cmd {
        Cmd::Setup => setup::setup().map(|_| ()),
        Cmd::Test { args } => setup::test(&args),
        Cmd::Sandbox { action } => sandbox_cmd::run(action),
        Cmd::Plan {
            stack,
            json,
            detailed_exitcode,
        } => runtime.block_on(deploy::plan(&stack, json, detailed_exitcode)),
        Cmd::Status { stack, json } => runtime.block_on(status::run(&stack, json)),
        Cmd::Init { config, force } => init::run(config.as_deref(), force),
        Cmd::Deploy {
            stack,
            yes,
            no_wait,
            wait_timeout,
            lock,
        } => {
            let wait = if no_wait {
                deploy::Wait::No
            } else {
                deploy::Wait::Steady {
                    timeout: wait_timeout.map(std::time::Duration::from_secs_f64),
                }
            };
            runtime.block_on(deploy::deploy(
                &stack,
                yes,
                lock.force_unlock.as_deref(),
                wait,
            ))
        }
        Cmd::Destroy {
            stack,
            yes,
            override_deletion_protection,
            lock,
        } => runtime.block_on(deploy::destroy(
            &stack,
            yes,
            override_deletion_protection,
            lock.force_unlock.as_deref(),
        )),
        Cmd::Check { stack, args } => runtime.block_on(check::run(&stack, &args)),
        Cmd::Loadtest { stack, args, lock } => runtime.block_on(loadtest_cmd::run(
            &stack,
            &args,
            lock.force_unlock.as_deref(),
        )),
        Cmd::Image { stack, args } => runtime.block_on(image_cmd::run(&stack, &args)),
        Cmd::Bench {
            what: BenchCmd::Deploy(args),
        } => bench_deploy::run(&args),
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
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            if let Some(exit) = e.downcast_ref::<target::Exit>() {
                if !exit.message.is_empty() {
                    eprintln!("{exit}");
                }
                return std::process::ExitCode::from(exit.code);
            }
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
