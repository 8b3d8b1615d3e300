//! `stackproof`: build a web stack on AWS (or the local sandbox) and prove it scales and
//! survives the loss of an availability zone.
//!
//! Its home is the working folder: `stack.toml` there is the configuration when `--config` is
//! not given, and `.stackproof/` there holds the sandbox's state and the reports' defaults.

use std::io::Write as _;
use std::process::ExitCode;

use clap::{CommandFactory as _, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "stackproof",
    version,
    about = "Build a web stack on AWS (or the local sandbox) and prove it scales and survives the loss of a zone.",
    after_help = "Without an AWS target every command runs against the local sandbox (moto and a data plane on 127.0.0.1), started on demand.\nLogs: RUST_LOG (e.g. RUST_LOG=debug). NO_COLOR and TERM=dumb turn off the redrawn progress block."
)]
struct Cli {
    #[command(subcommand)]
    cmd: Top,
}

#[derive(Debug, Subcommand)]
enum Top {
    #[command(flatten)]
    Stack(Box<cli::Command>),
    /// Print the shell completion script for SHELL on stdout, e.g.
    /// `stackproof completions bash > ~/.local/share/bash-completion/completions/stackproof`.
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

fn main() -> ExitCode {
    let parsed = match cli::parse_or_exit(Cli::try_parse) {
        Ok(parsed) => parsed,
        Err(code) => return code,
    };
    cli::init_logging();
    let root = match std::env::current_dir() {
        Ok(dir) => dir,
        Err(e) => {
            eprintln!("error: reading the working folder (stackproof's home): {e}");
            return ExitCode::FAILURE;
        }
    };
    cli::set_home(cli::Home {
        root,
        program: "stackproof",
        checkout: source_checkout(),
    });
    match parsed.cmd {
        Top::Stack(command) => cli::run(*command),
        Top::Completions { shell } => {
            let mut out = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "stackproof", &mut out);
            match std::io::stdout().write_all(&out) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: writing the completion script: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

/// The stackproof checkout this binary was built from, when it is still there (`cargo install
/// --path crates/cli` keeps it): `image` builds the sample-app statically from it.
fn source_checkout() -> Option<std::path::PathBuf> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()?
        .parent()?;
    root.join("crates/sample-app/Cargo.toml")
        .is_file()
        .then(|| root.to_path_buf())
}
