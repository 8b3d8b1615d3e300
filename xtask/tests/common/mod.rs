//! What the command-line tests share: running `xtask` against a state folder of the test's
//! own, and that folder, whose sandbox is stopped and which is removed at the end.

#![allow(dead_code)] // Each test binary uses its own part of it.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Runs xtask with `state` as its state folder (stdin closed).
pub(crate) fn xtask(state: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(args)
        .env("STACKPROOF_STATE_DIR", state)
        // The built-in defaults, not the checkout's stack.toml (the seeds' stack).
        .env("STACKPROOF_CONFIG_DIR", state)
        .env_remove("AWS_PROFILE")
        .output()
        .expect("xtask runs")
}

/// Stdout then stderr, for assertions and their messages.
pub(crate) fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A state folder; at the end a sandbox a failed assertion left running is stopped by its
/// recorded pid, and the folder is removed.
pub(crate) struct TempDir(pub(crate) PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        if let Ok(state) = std::fs::read_to_string(self.0.join("sandbox.json"))
            && let Ok(v) = serde_json::from_str::<serde_json::Value>(&state)
            && let Some(pid) = v["pid"].as_u64()
        {
            let _ = Command::new("kill").arg(pid.to_string()).status();
        }
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A fresh, empty state folder named after `name` and this process.
pub(crate) fn temp_dir(name: &str) -> TempDir {
    let dir = std::env::temp_dir().join(format!("stackproof-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("a temporary state folder");
    TempDir(dir)
}
