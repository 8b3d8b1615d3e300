//! `init`: writes the commented example `stack.toml` (`stack::example_toml`).

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};

/// Writes the example to `config` (default `stack.toml` in the project root); an existing file
/// is only replaced with `force`.
pub(crate) fn run(config: Option<&Path>, force: bool) -> anyhow::Result<()> {
    let path = config.map_or_else(|| crate::config_root().join("stack.toml"), PathBuf::from);
    let mut options = std::fs::OpenOptions::new();
    options.write(true);
    if force {
        options.create(true).truncate(true);
    } else {
        // create_new: no window between "does it exist" and writing.
        options.create_new(true);
    }
    let mut file = match options.open(&path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => bail!(
            "{} exists already; nothing was written. Pass --force to overwrite it (what it holds is lost)",
            path.display()
        ),
        Err(e) => return Err(e).with_context(|| format!("creating {}", path.display())),
    };
    file.write_all(stack::example_toml().as_bytes())
        .with_context(|| format!("writing {}", path.display()))?;
    println!(
        "Wrote {}: every key with its default value and what it allows. Edit it, then run `{} plan`.",
        path.display(),
        crate::program()
    );
    Ok(())
}
