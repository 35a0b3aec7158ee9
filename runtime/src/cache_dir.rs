//! This node's cache directories (compiled functions, transformed images):
//! where they go by default and the rule that only this user may write them,
//! since what they hold is run (native code) or served (renderings of private
//! objects) as it is.

use anyhow::{Context, Result};
use std::path::{Path, PathBuf};

/// `$XDG_CACHE_HOME/wasmbase/<name>`, else `~/.cache/wasmbase/<name>`, else a
/// per-user directory under the temp dir (made private by [`private`]).
pub fn default(name: &str) -> PathBuf {
    if let Some(x) = std::env::var_os("XDG_CACHE_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(x).join("wasmbase").join(name);
    }
    if let Some(h) = std::env::var_os("HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(h).join(".cache/wasmbase").join(name);
    }
    std::env::temp_dir().join(format!(
        "wasmbase-{name}-{}",
        nix::unistd::Uid::effective().as_raw()
    ))
}

/// Creates `dir` (mode 0700) and checks that only this user can write to it;
/// `setting` names the configuration key to point elsewhere when it cannot.
pub fn private(dir: &Path, setting: &str) -> Result<()> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("creating the cache {}", dir.display()))?;
    let meta = std::fs::metadata(dir)?;
    let uid = nix::unistd::Uid::effective().as_raw();
    if meta.uid() != uid {
        anyhow::bail!(
            "the cache {} belongs to another user; set `{setting}` to a directory of your own",
            dir.display()
        );
    }
    if meta.permissions().mode() & 0o022 != 0 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}
