//! `cargo xtask setup` and `cargo xtask test`: the Python virtualenv with moto, the Debian
//! packages of the servers the tests start (docker-registry, PostgreSQL, Redis), and the tests.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context as _, bail};

/// Servers the tests start on loopback, from Debian packages: (program, package). PostgreSQL
/// is the sandbox's database (a primary and a standby per RDS DB instance), Redis its cache (a
/// primary and replicas per ElastiCache replication group), openssl makes the cache's TLS
/// certificates.
const SYSTEM_PACKAGES: &[(&str, &str)] = &[
    ("docker-registry", "docker-registry"),
    ("postgres", "postgresql"),
    ("redis-server", "redis-server"),
    ("openssl", "openssl"),
];

/// Everything `setup` installs: moto, and the Debian packages of [`SYSTEM_PACKAGES`] (with
/// apt-get, when a program is missing).
pub(crate) fn setup() -> anyhow::Result<PathBuf> {
    let python = cli::ensure_moto()?;
    ensure_system_packages()?;
    Ok(python)
}

fn ensure_system_packages() -> anyhow::Result<()> {
    let missing: Vec<&str> = SYSTEM_PACKAGES
        .iter()
        .filter(|(program, _)| match *program {
            "docker-registry" => sandbox::registry_program().is_none(),
            "postgres" => sandbox::postgres_bin_dir().is_none(),
            "redis-server" => sandbox::redis_programs().is_none(),
            other => !on_path(other),
        })
        .map(|(_, package)| *package)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let listed = missing.join(" ");
    if !on_path("apt-get") {
        bail!("the tests need {listed} (Debian packages); install them with your package manager");
    }
    eprintln!("setup: apt-get install {listed}");
    let update = Command::new("apt-get")
        .args(["update", "-qq"])
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status()
        .context("running apt-get update")?;
    let install = Command::new("apt-get")
        .args(["install", "-y", "-qq", "--no-install-recommends"])
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status()
        .context("running apt-get install")?;
    if !update.success() || !install.success() {
        bail!(
            "apt-get install {listed} failed (update {update}, install {install}); install them as root, then run setup again"
        );
    }
    Ok(())
}

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()))
}

/// Sets up, then runs `cargo test --workspace` with the moto Python in the environment.
pub(crate) fn test(args: &[String]) -> anyhow::Result<()> {
    let python = setup()?;
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let mut command = Command::new(cargo);
    // `cargo run` hands xtask the package variables of xtask (CARGO_PKG_NAME, ...). ring's build
    // script declares `rerun-if-env-changed` on them, so a nested cargo that inherits them
    // rebuilds ring, and with it rustls and the whole AWS SDK, every time it alternates with a
    // plain `cargo` call. The tests' cargo gets a clean environment instead.
    for (key, _) in std::env::vars_os() {
        let name: String = key.to_string_lossy().into_owned();
        if name.starts_with("CARGO_PKG_")
            || name.starts_with("CARGO_MANIFEST_")
            || matches!(
                name.as_str(),
                "CARGO_CRATE_NAME" | "CARGO_BIN_NAME" | "CARGO_PRIMARY_PACKAGE"
            )
        {
            command.env_remove(&key);
        }
    }
    let status = command
        .current_dir(crate::project_root())
        .args(["test", "--workspace"])
        .args(args)
        .env("STACKPROOF_MOTO_PYTHON", &python)
        .status()
        .context("running cargo test")?;
    if !status.success() {
        bail!("tests failed ({status})");
    }
    Ok(())
}
