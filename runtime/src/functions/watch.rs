//! `dev` hot reload: watches the functions directory and rebuilds and reloads a
//! function when its sources change. Requests in flight finish on the version
//! they started with; a failed build leaves the old version serving.
//!
//! Only content changes count (a file created, written, removed or renamed):
//! cargo, rustc and the loader open and read every source on each build, and
//! reacting to those reads rebuilt forever. Build output (`target/`,
//! `node_modules/`, the `Cargo.lock` cargo writes), hidden files and editor
//! temp files never trigger a rebuild.

use crate::server::state::AppState;
use notify::event::{AccessKind, AccessMode, ModifyKind};
use notify::{EventKind, RecursiveMode, Watcher};
use std::collections::HashSet;
use std::ffi::OsStr;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Starts watching the functions directory and rebuilding on change until
/// `cancel`. A missing directory is created first, so a function scaffolded
/// (`wasmbase fn new`) after `dev` started is served without a restart. The
/// watch is in place when this returns: call it before the first load, and a
/// function created in between is seen by one or the other.
pub fn start(st: AppState, cancel: CancellationToken) {
    let dir = st.functions.dir.clone();
    if !dir.is_dir() {
        match std::fs::create_dir_all(&dir) {
            Ok(()) => tracing::info!(dir = %dir.display(), "created the functions directory"),
            Err(e) => {
                tracing::warn!(error = %e, dir = %dir.display(), "cannot create functions/; hot reload is off");
                return;
            }
        }
    }
    let root = std::fs::canonicalize(&dir).unwrap_or(dir.clone());
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<PathBuf>();
    let filter_root = root.clone();
    let watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        let Ok(ev) = res else { return };
        if !is_content_change(&ev.kind) {
            return;
        }
        for p in &ev.paths {
            if let Some(fdir) = function_dir_of(&filter_root, p) {
                let _ = tx.send(fdir);
            }
        }
    });
    let mut watcher = match watcher {
        Ok(w) => w,
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch functions/; hot reload is off");
            return;
        }
    };
    if let Err(e) = watcher.watch(&root, RecursiveMode::Recursive) {
        tracing::warn!(error = %e, dir = %root.display(), "cannot watch functions/; hot reload is off");
        return;
    }
    tracing::info!(dir = %root.display(), "watching functions for changes");
    tokio::spawn(rebuild_loop(st, watcher, rx, cancel));
}

/// Rebuilds the function directories the watcher reports, a burst at a time.
async fn rebuild_loop(
    st: AppState,
    // Kept alive for as long as the loop runs (dropping it stops the watch).
    _watcher: notify::RecommendedWatcher,
    mut rx: tokio::sync::mpsc::UnboundedReceiver<PathBuf>,
    cancel: CancellationToken,
) {
    loop {
        let first = tokio::select! {
            p = rx.recv() => match p { Some(p) => p, None => return },
            _ = cancel.cancelled() => return,
        };
        // Collect a burst of events (an editor save is several) before building.
        let mut changed = HashSet::from([first]);
        let quiet = tokio::time::sleep(Duration::from_millis(300));
        tokio::pin!(quiet);
        loop {
            tokio::select! {
                p = rx.recv() => match p { Some(p) => { changed.insert(p); }, None => return },
                _ = &mut quiet => break,
            }
        }
        let mut dirs: Vec<PathBuf> = changed.into_iter().collect();
        dirs.sort();
        for d in dirs {
            if d.join("function.toml").is_file() {
                tracing::info!(function_dir = %d.display(), "change detected; rebuilding");
                super::load_dir(&st, &d).await;
            }
        }
    }
}

/// Whether an event can change what a function's sources say: a file or
/// directory created, removed or renamed, contents written, or a file closed
/// after being opened for writing (`touch`). Opens, reads, closes without
/// writing and metadata-only changes are not.
pub fn is_content_change(kind: &EventKind) -> bool {
    match kind {
        EventKind::Create(_) | EventKind::Remove(_) => true,
        EventKind::Modify(ModifyKind::Metadata(_)) => false,
        EventKind::Modify(_) => true,
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) | EventKind::Any | EventKind::Other => false,
    }
}

/// The function directory (`root/<name>`) a changed `path` belongs to, or
/// `None` when the path is not a function's source: outside `root`, `root`
/// itself, build output, a hidden file or directory, or an editor temp file.
pub fn function_dir_of(root: &Path, path: &Path) -> Option<PathBuf> {
    let rel = path.strip_prefix(root).ok()?;
    let parts: Vec<&OsStr> = rel
        .components()
        .map(|c| match c {
            Component::Normal(s) => Some(s),
            _ => None,
        })
        .collect::<Option<_>>()?;
    let (first, rest) = parts.split_first()?;
    if first.to_string_lossy().starts_with('.') {
        return None; // .wasmbase-sdk, .git, …
    }
    if rest.len() == 1 && rest[0] == "Cargo.lock" {
        return None; // written by cargo on a build
    }
    for part in rest {
        let s = part.to_string_lossy();
        if s == "target" || s == "node_modules" || s.starts_with('.') {
            return None; // build output; hidden (.git, vim .x.swp, emacs .#x)
        }
    }
    if let Some(last) = rest.last() {
        let s = last.to_string_lossy();
        let temp = s.ends_with('~')
            || (s.starts_with('#') && s.ends_with('#'))
            || s == "4913" // vim's write probe
            || [".swp", ".swo", ".swx", ".tmp", ".bak", ".orig"]
                .iter()
                .any(|x| s.ends_with(x));
        if temp {
            return None;
        }
    }
    Some(root.join(first))
}

#[cfg(test)]
mod tests {
    use super::*;
    use notify::event::{CreateKind, DataChange, MetadataKind, RemoveKind, RenameMode};

    #[test]
    fn only_content_changes_count() {
        assert!(is_content_change(&EventKind::Create(CreateKind::File)));
        assert!(is_content_change(&EventKind::Remove(RemoveKind::File)));
        assert!(is_content_change(&EventKind::Modify(ModifyKind::Data(
            DataChange::Any
        ))));
        assert!(is_content_change(&EventKind::Modify(ModifyKind::Name(
            RenameMode::To
        ))));
        assert!(is_content_change(&EventKind::Access(AccessKind::Close(
            AccessMode::Write
        ))));
        // What cargo, rustc and the loader do to every source on every build.
        assert!(!is_content_change(&EventKind::Access(AccessKind::Open(
            AccessMode::Any
        ))));
        assert!(!is_content_change(&EventKind::Access(AccessKind::Close(
            AccessMode::Read
        ))));
        assert!(!is_content_change(&EventKind::Access(AccessKind::Read)));
        assert!(!is_content_change(&EventKind::Modify(
            ModifyKind::Metadata(MetadataKind::Any)
        )));
    }

    #[test]
    fn build_output_hidden_and_temp_files_are_not_sources() {
        let root = Path::new("/p/functions");
        let f = |p: &str| function_dir_of(root, &root.join(p));
        let greet = Some(root.join("greet"));
        assert_eq!(f("greet"), greet);
        assert_eq!(f("greet/src/lib.rs"), greet);
        assert_eq!(f("greet/function.toml"), greet);
        assert_eq!(f("greet/Cargo.toml"), greet);
        assert_eq!(f("greet/greet.wasm"), greet);
        for not in [
            "",
            "greet/Cargo.lock",
            "greet/target/release/x.wasm",
            "greet/node_modules/a/b.js",
            "greet/.git/index",
            "greet/src/.lib.rs.swp",
            "greet/src/.#lib.rs",
            "greet/src/#lib.rs#",
            "greet/src/lib.rs~",
            "greet/src/4913",
            "greet/src/lib.rs.tmp",
            ".wasmbase-sdk/src/lib.rs",
        ] {
            assert_eq!(f(not), None, "{not}");
        }
        assert_eq!(function_dir_of(root, Path::new("/elsewhere/x")), None);
        // A nested Cargo.lock is a source like any other file.
        assert_eq!(f("greet/src/Cargo.lock"), greet);
    }
}
