//! The stackproof command line: build a web stack on AWS (or the local sandbox) and prove it.
//!
//! Two programs run this code: the `stackproof` binary of this crate, for users (its working
//! folder holds `stack.toml` and the state in `.stackproof/`), and `cargo xtask` in the
//! project's checkout (its folder is the checkout's root), which adds the project's own tasks
//! (setup, test, bench). [`Home`] says which: where config and state are found and how hints
//! name the program.
//!
//! Exit codes: 0 success; 1 failure (the message says what and how to resume); 2 bad usage;
//! 4 (`deploy`, `destroy`, `loadtest`) another run holds the stack's lock.
//! `plan --detailed-exitcode` and `status` give 2 another meaning (changes pending); see their
//! `--help`.

mod check;
mod deploy;
mod distributed_cmd;
mod image_cmd;
mod init;
mod loadtest_cmd;
mod moto_env;
mod progress;
mod sandbox_cmd;
mod status;
mod steady;
mod target;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::OnceLock;

use clap::{Subcommand, ValueEnum};

pub use check::CheckArgs;
pub use deploy::plan_and_existing;
pub use distributed_cmd::LoadgenArgs;
pub use image_cmd::ImageArgs;
pub use loadtest_cmd::LoadtestArgs;
pub use moto_env::ensure_moto;
pub use sandbox_cmd::{ModelArgs, SandboxAction};

/// Where a program running this code keeps its files, and how its hints name it.
#[derive(Debug, Clone)]
pub struct Home {
    /// The folder of `stack.toml` (the default configuration) and `.stackproof/` (state).
    pub root: PathBuf,
    /// The program as a user types it in a hint: `stackproof` or `cargo xtask`.
    pub program: &'static str,
    /// The project's checkout, when this program can build from it (the sample-app, statically
    /// linked, for `image`; the sample-app binary the sandbox runs when it is missing).
    pub checkout: Option<PathBuf>,
}

static HOME: OnceLock<Home> = OnceLock::new();

/// Sets where this program's files are; the first call wins. Call it before [`run`].
pub fn set_home(home: Home) {
    let _ = HOME.set(home);
}

/// This program's [`Home`]: the one [`set_home`] set, else the working folder as `stackproof`.
pub fn home() -> &'static Home {
    HOME.get_or_init(|| Home {
        root: std::env::current_dir().unwrap_or_else(|_| PathBuf::from(".")),
        program: "stackproof",
        checkout: None,
    })
}

/// The program as hints name it (`stackproof` or `cargo xtask`).
pub(crate) fn program() -> &'static str {
    home().program
}

/// The variable that names the folder of the default `stack.toml` (and where `init` writes it),
/// instead of the working folder (`cargo xtask`: the checkout). The command-line tests set it
/// to a folder of their own, so they act on the built-in defaults whatever the checkout's
/// `stack.toml` says.
pub const CONFIG_DIR_VAR: &str = "STACKPROOF_CONFIG_DIR";

/// The folder of the default `stack.toml`: `$STACKPROOF_CONFIG_DIR`, else the home's root.
pub(crate) fn config_root() -> PathBuf {
    match std::env::var_os(CONFIG_DIR_VAR) {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => home().root.clone(),
    }
}

/// The hidden folder for state and logs: `.stackproof` in the home's root, or
/// `$STACKPROOF_STATE_DIR` (tests use their own).
pub fn state_dir() -> PathBuf {
    match std::env::var_os("STACKPROOF_STATE_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => home().root.join(".stackproof"),
    }
}

/// Where the stack lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Target {
    /// The local sandbox (moto on 127.0.0.1), started on demand. The default.
    Sandbox,
    /// Real AWS, with the standard credential chain.
    Aws,
}

/// Options shared by the commands that work on a stack.
#[derive(Debug, Clone, clap::Args)]
pub struct StackArgs {
    /// The stack configuration. Default: `stack.toml` in the working folder if it exists,
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
pub struct LockArgs {
    /// Delete the stack's lock before taking it, if its id is LOCK_ID (the id printed when the
    /// lock was found): for a lock left by a run that was killed. A lock another run took
    /// since has another id and stays. If its holder is in fact still running, two writers may
    /// interleave; running deploy again converges.
    #[arg(long, value_name = "LOCK_ID", num_args = 0..=1, default_missing_value = "")]
    pub(crate) force_unlock: Option<String>,
}

/// The commands of `stackproof` (and of `cargo xtask`, which flattens them in). Each option's
/// documentation is its `--help`; the flattened groups (`StackArgs`, `LockArgs`, ...) document
/// their own fields.
#[derive(Debug, Subcommand)]
#[allow(missing_docs)] // Fields of flattened groups: documented on the groups themselves.
#[allow(clippy::large_enum_variant)] // One value, parsed once per run.
pub enum Command {
    /// Start, stop or inspect the local sandbox.
    Sandbox {
        #[command(subcommand)]
        action: SandboxAction,
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
        /// Where to write it. Default: `stack.toml` in the working folder.
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
        /// Wait at most this long for a steady service (`3m`) [default: the predicted longest
        /// start of a new task (scheduler, Fargate launch, first health check) x 1.5, on the
        /// stack's clock].
        #[arg(long, value_name = "DURATION", conflicts_with = "no_wait", value_parser = parse_wait_timeout)]
        wait_timeout: Option<std::time::Duration>,
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
        args: CheckArgs,
    },
    /// Prove the deployed stack under load: baseline, scale-out and availability-zone
    /// failover, each with a verdict; writes report.json and report.html. Holds the stack's
    /// lock for the run (a deploy meanwhile would undo the fault). Exit codes: 0 every
    /// scenario passed, 1 one failed, 2 bad usage, 3 no deployed stack, 4 another run holds the
    /// lock, 130 interrupted (Ctrl-C, SIGTERM or SIGHUP; the fault is undone).
    ///
    /// With --workers N, one constant-rate run at --rps for --duration from N load generators
    /// run as ECS tasks in the stack's cluster, their latency added exactly; exit 6 when the
    /// run is invalid (a generator died, failed, did not start or paced late: nothing judged).
    Loadtest {
        #[command(flatten)]
        stack: StackArgs,
        #[command(flatten)]
        args: LoadtestArgs,
        #[command(flatten)]
        lock: LockArgs,
    },
    /// Run one load generator of a distributed load test (`loadtest --workers N`): what each
    /// of its ECS tasks runs. It reads the run's start object from S3, sends its share of the
    /// schedule from the shared start, and uploads its progress and report there.
    ///
    /// Exit codes: 0 its report is uploaded, 1 it failed (the reason is uploaded too).
    Loadgen {
        #[command(flatten)]
        args: LoadgenArgs,
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
        args: ImageArgs,
    },
}

/// `--wait-timeout`: a duration with its unit, more than 0 and at most a day.
fn parse_wait_timeout(s: &str) -> Result<std::time::Duration, String> {
    let d = loadtest::parse_duration(s)?;
    if d.is_zero() || d.as_secs_f64() > 86_400.0 {
        return Err(format!("{s:?} is not from 0 (excluded) to 24h"));
    }
    Ok(d)
}

/// Logs to stderr as `RUST_LOG` asks (`RUST_LOG=debug`, `RUST_LOG=aws_smithy_runtime=trace`):
/// the AWS SDK's requests and retries. Without `RUST_LOG`, nothing is logged. Colour only on a
/// terminal and without `NO_COLOR`.
pub fn init_logging() {
    use std::io::IsTerminal as _;
    let Ok(filter) = tracing_subscriber::EnvFilter::try_from_default_env() else {
        return;
    };
    let colour = std::io::stderr().is_terminal()
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(colour)
        .try_init();
}

/// Options renamed when durations took units: (old, new, unit of the old one's number).
const RENAMED: &[(&str, &str, &str)] = &[
    ("--p99-ms", "--p99", "ms"),
    ("--baseline-s", "--baseline", "s"),
    ("--warmup-s", "--warmup", "s"),
    ("--ramp-s", "--ramp", "s"),
    ("--scale-timeout-s", "--scale-timeout", "s"),
    ("--settle-s", "--settle", "s"),
    ("--before-s", "--before", "s"),
    ("--max-failover-s", "--max-failover", "s"),
    ("--fault-max-s", "--fault-max", "s"),
    ("--error-budget-s", "--error-budget", "s"),
    ("--after-s", "--after", "s"),
    ("--timeout-s", "--timeout", "s"),
];

/// The error for an option of `args` that was renamed, naming the new form with the value
/// given (`--baseline-s 20` -> `--baseline 20s`).
pub fn renamed_option(args: &[String]) -> Option<String> {
    args.iter().enumerate().find_map(|(i, arg)| {
        let (name, inline) = match arg.split_once('=') {
            Some((name, value)) => (name, Some(value.to_owned())),
            None => (arg.as_str(), None),
        };
        let (old, new, unit) = RENAMED.iter().find(|(old, _, _)| *old == name)?;
        let value = inline
            .or_else(|| args.get(i + 1).cloned())
            .unwrap_or_else(|| "N".to_owned());
        Some(format!(
            "error: {old} is now {new}, a duration with its unit (as k6 writes them: 250ms, 20s, 5m, 1m30s): {new} {value}{unit}"
        ))
    })
}

/// `problems` of a proof's configuration with each field named as the command-line option
/// that sets it (`baseline-s` is `--baseline`, its value shown in seconds).
pub(crate) fn as_options(mut problems: infra::Problems) -> infra::Problems {
    for p in &mut problems.0 {
        let (name, unit) = if let Some(n) = p.field.strip_suffix("-ms") {
            (n.to_owned(), "ms")
        } else if let Some(n) = p.field.strip_suffix("-s") {
            (n.to_owned(), "s")
        } else if p.field == "scenarios" {
            ("scenario".to_owned(), "")
        } else {
            (p.field.clone(), "")
        };
        p.field = format!("--{name}");
        if !unit.is_empty() && p.value.parse::<f64>().is_ok() {
            p.value = format!("{}{unit}", p.value);
        }
    }
    problems
}

/// Runs one command to its end and returns the exit code scripts rely on (printing the error,
/// if any, first).
pub fn run(command: Command) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: could not start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = match command {
        Command::Sandbox { action } => sandbox_cmd::run(action),
        Command::Plan {
            stack,
            json,
            detailed_exitcode,
        } => runtime.block_on(deploy::plan(&stack, json, detailed_exitcode)),
        Command::Status { stack, json } => runtime.block_on(status::run(&stack, json)),
        Command::Init { config, force } => init::run(config.as_deref(), force),
        Command::Deploy {
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
                    timeout: wait_timeout,
                }
            };
            runtime.block_on(deploy::deploy(
                &stack,
                yes,
                lock.force_unlock.as_deref(),
                wait,
            ))
        }
        Command::Destroy {
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
        Command::Check { stack, args } => runtime.block_on(check::run(&stack, &args)),
        Command::Loadtest { stack, args, lock } => runtime.block_on(loadtest_cmd::run(
            &stack,
            &args,
            lock.force_unlock.as_deref(),
        )),
        Command::Image { stack, args } => runtime.block_on(image_cmd::run(&stack, &args)),
        Command::Loadgen { args } => runtime.block_on(distributed_cmd::loadgen(&args)),
    };
    exit_code(result)
}

/// The exit code of a command's result: an [`target::Exit`] carries its own, any other error
/// is 1 (printed with its causes).
pub fn exit_code(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if let Some(exit) = e.downcast_ref::<target::Exit>() {
                if !exit.message.is_empty() {
                    eprintln!("{exit}");
                }
                return ExitCode::from(exit.code);
            }
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Parses the command line with `parse` and turns a usage error into its exit code: 2, or 1
/// with `--detailed-exitcode` (where 2 means "changes pending"). An option renamed when
/// durations took units is refused first, with its new form ([`renamed_option`]).
pub fn parse_or_exit<T>(parse: impl FnOnce() -> Result<T, clap::Error>) -> Result<T, ExitCode> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Some(message) = renamed_option(&args) {
        eprintln!("{message}");
        let detailed = args.iter().any(|a| a == "--detailed-exitcode");
        return Err(if detailed {
            ExitCode::FAILURE
        } else {
            ExitCode::from(2)
        });
    }
    match parse() {
        Ok(parsed) => Ok(parsed),
        Err(e) if e.use_stderr() && std::env::args().any(|a| a == "--detailed-exitcode") => {
            let _ = e.print();
            Err(ExitCode::FAILURE)
        }
        Err(e) => e.exit(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(line: &str) -> Vec<String> {
        line.split_whitespace().map(str::to_owned).collect()
    }

    #[test]
    fn a_renamed_option_names_its_new_form_with_the_value_given() {
        let said = renamed_option(&args("loadtest --rps 50 --fault-max-s 600")).unwrap();
        assert!(said.contains("--fault-max-s is now --fault-max"), "{said}");
        assert!(said.ends_with(": --fault-max 600s"), "{said}");
        let said = renamed_option(&args("loadtest --p99-ms=250")).unwrap();
        assert!(said.ends_with(": --p99 250ms"), "{said}");
        assert_eq!(renamed_option(&args("loadtest --baseline 20s")), None);
        // A value that happens to look like an old option is not one.
        assert_eq!(renamed_option(&args("loadtest --zone --after")), None);
    }

    #[test]
    fn problems_are_named_as_the_options_that_set_them() {
        let mut problems = infra::Problems::default();
        problems.add("baseline-s", 0, "seconds, 1 to 3600");
        problems.add("p99-ms", 0, "milliseconds, > 0");
        problems.add("scenarios", "(none)", "at least one");
        problems.add("rps", 0, "1 to 100000");
        let shown = as_options(problems).to_string();
        for line in [
            "--baseline = 0s: seconds",
            "--p99 = 0ms: milliseconds",
            "--scenario = (none)",
            "--rps = 0: 1 to",
        ] {
            assert!(shown.contains(line), "{line} in {shown}");
        }
    }
}
