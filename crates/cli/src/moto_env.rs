//! The sandbox's moto: a Python virtualenv with moto in the cache folder, created on first use.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context as _, bail};

/// The moto requirement: 5.2.5 or newer (older ECS answers break the Rust SDK).
const MOTO_REQUIREMENT: &str = "moto[server]>=5.2.5,<6";

/// Makes sure the virtualenv with moto exists; returns its Python.
pub fn ensure_moto() -> anyhow::Result<PathBuf> {
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
