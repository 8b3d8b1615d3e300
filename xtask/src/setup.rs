//! `cargo xtask setup` and `cargo xtask test`: the Python virtualenv with moto, and the tests.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context as _, bail};

/// The moto requirement: 5.2.5 or newer (older ECS answers break the Rust SDK).
const MOTO_REQUIREMENT: &str = "moto[server]>=5.2.5,<6";

/// Makes sure the virtualenv with moto exists; returns its Python.
pub(crate) fn ensure_moto() -> anyhow::Result<PathBuf> {
    if let Ok(python) = sandbox::python_path() {
        let ok = Command::new(&python)
            .args(["-c", "import moto, sys; v = tuple(int(x) for x in moto.__version__.split('.')[:3]); sys.exit(0 if v >= (5, 2, 5) else 1)"])
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            return Ok(python);
        }
    }
    let venv = sandbox::cache_dir().join("moto-venv");
    eprintln!("setup: creating {} with {MOTO_REQUIREMENT}", venv.display());
    let status = Command::new("python3")
        .arg("-m")
        .arg("venv")
        .arg(&venv)
        .status()
        .context("running python3 -m venv (is Python 3 installed?)")?;
    if !status.success() {
        bail!(
            "python3 -m venv {} failed ({status}); on Debian: apt-get install python3-venv",
            venv.display()
        );
    }
    let pip = venv.join("bin").join("pip");
    let status = Command::new(&pip)
        .args([
            "install",
            "--quiet",
            "--disable-pip-version-check",
            MOTO_REQUIREMENT,
        ])
        .status()
        .with_context(|| format!("running {}", pip.display()))?;
    if !status.success() {
        bail!("pip install {MOTO_REQUIREMENT} failed ({status})");
    }
    sandbox::python_path().context("moto was installed but its Python is missing")
}

/// Sets up, then runs `cargo test --workspace` with the moto Python in the environment.
pub(crate) fn test(args: &[String]) -> anyhow::Result<()> {
    let python = ensure_moto()?;
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
