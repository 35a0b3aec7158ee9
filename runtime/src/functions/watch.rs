//! `dev` hot reload: watches the functions directory and rebuilds and reloads a
//! function when its files change. Requests in flight finish on the version
//! they started with; a failed build leaves the old version serving.

use crate::server::state::AppState;
use notify::{RecursiveMode, Watcher};
use std::collections::HashSet;
use std::path::PathBuf;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Watches until `cancel`.
pub async fn run(st: AppState, cancel: CancellationToken) {
    let dir = st.functions.dir.clone();
    let root = std::fs::canonicalize(&dir).unwrap_or(dir.clone());
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<PathBuf>();
    let mut watcher =
        match notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
            if let Ok(ev) = res {
                for p in ev.paths {
                    let _ = tx.send(p);
                }
            }
        }) {
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
    loop {
        let first = tokio::select! {
            p = rx.recv() => match p { Some(p) => p, None => return },
            _ = cancel.cancelled() => return,
        };
        // Collect a burst of events (an editor save is several) before building.
        let mut changed = HashSet::new();
        let mut note = |p: PathBuf| {
            if let Ok(rel) = p.strip_prefix(&root) {
                let mut parts = rel.components();
                let (Some(first), second) = (parts.next(), parts.next()) else {
                    return;
                };
                // Build output (target/, and the Cargo.lock cargo writes on its
                // first build) never triggers a rebuild.
                if second
                    .is_some_and(|c| c.as_os_str() == "target" || c.as_os_str() == "Cargo.lock")
                {
                    return;
                }
                changed.insert(root.join(first.as_os_str()));
            }
        };
        note(first);
        let quiet = tokio::time::sleep(Duration::from_millis(300));
        tokio::pin!(quiet);
        loop {
            tokio::select! {
                p = rx.recv() => match p { Some(p) => note(p), None => return },
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
