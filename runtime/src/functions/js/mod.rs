//! JavaScript and TypeScript functions, built by this binary alone: the
//! function's files ([`sources`]: TypeScript stripped, relative imports
//! resolved) are snapshotted into the QuickJS engine component
//! ([`snapshot`]), marked with the capabilities they import ([`marker`]),
//! and from there on loaded, deployed and called exactly like a Rust
//! component. docs/FUNCTIONS.md ("JavaScript and TypeScript") is the guide;
//! docs/ARCHITECTURE.md ("JS engine") says why this engine and this shape.

pub mod marker;
pub mod snapshot;
pub mod sources;
pub mod split;

use super::engine::Engine;
use super::manifest::Manifest;
use std::path::Path;
use std::sync::Arc;

/// What `import { … } from "wasmbase"` offers, and the platform interface
/// each one calls (whose grant it needs; None: always granted).
const CAPABILITIES: &[(&str, Option<&str>)] = &[
    ("db", Some("data")),
    ("sql", Some("sql")),
    ("storage", Some("storage")),
    ("auth", None),
    ("log", None),
    ("env", None),
    ("PlatformError", None),
    ("default", None),
    ("*", None),
];

/// The SDK's TypeScript types (what `fn new` writes for editors).
const TYPES: &str = include_str!("../../../../sdk/js/wasmbase.d.ts");

/// Whether `name` is a type the SDK's declarations export (an import of one is
/// elided when the TypeScript is stripped, even without `import type`).
fn is_sdk_type(name: &str) -> bool {
    TYPES.lines().any(|l| {
        let l = l.trim_start();
        ["export type ", "export interface "]
            .iter()
            .filter_map(|p| l.strip_prefix(p))
            .any(|rest| {
                rest.strip_prefix(name)
                    .is_some_and(|r| r.starts_with([' ', '<', '=', '{']))
            })
    })
}

/// Checks the names a script imports from `"wasmbase"` against `manifest`:
/// the error names the capability and the grant it needs.
pub fn check_uses(manifest: &Manifest, uses: &[String]) -> Result<(), String> {
    let allowed = manifest.allowed_platform_imports();
    for name in uses {
        if is_sdk_type(name) {
            continue;
        }
        let Some((_, iface)) = CAPABILITIES.iter().find(|(n, _)| n == name) else {
            return Err(match name.as_str() {
                "realtime" => format!(
                    "imports `{name}` from \"wasmbase\", which JS functions do not have yet (Rust functions do: docs/FUNCTIONS.md)"
                ),
                _ => format!("imports `{name}` from \"wasmbase\", which has no such export (it has db, sql, storage, auth, log, env)"),
            });
        };
        if let Some(iface) = iface {
            if !allowed.contains(iface) {
                let what = format!("`{name}` from \"wasmbase\"");
                return Err(super::load::not_granted(manifest, &what, iface));
            }
        }
    }
    Ok(())
}

/// Whether the function in `dir` is a JS/TS one (it has an entry file and no
/// Cargo.toml).
pub fn is_js(dir: &Path, manifest: &Manifest) -> bool {
    // A `main` that names a missing file is still a JS function (its build
    // then says the file is missing); without `main`, a component
    // `<name>.wasm` made by another toolchain (an `index.js` beside it is
    // that toolchain's source) is loaded as it is.
    !dir.join("Cargo.toml").exists()
        && (manifest.main.is_some()
            || (sources::entry(dir, None).is_some()
                && !dir.join(format!("{}.wasm", manifest.name)).is_file()))
}

/// Builds the JS/TS function in `dir` into its component.
pub async fn build(
    engine: &Arc<Engine>,
    dir: &Path,
    manifest: &Arc<Manifest>,
) -> anyhow::Result<Vec<u8>> {
    let name = &manifest.name;
    let entry = sources::entry(dir, manifest.main.as_deref()).ok_or_else(|| {
        anyhow::anyhow!(
            "function {name}: no entry file ({})",
            sources::ENTRIES.join(", ")
        )
    })?;
    let root = dir.to_path_buf();
    let src = tokio::task::spawn_blocking(move || sources::collect(&root, &entry))
        .await?
        .map_err(|e| anyhow::anyhow!("function {name}: {e}"))?;
    let uses: Vec<String> = src.uses.iter().cloned().collect();
    check_uses(manifest, &uses).map_err(|e| anyhow::anyhow!("function {name}: {e}"))?;
    let wasm = snapshot::take(engine, manifest, &src)
        .await
        .map_err(|e| anyhow::anyhow!("function {name}: {e}"));
    engine.js_idle();
    // The snapshot copied the engine's memory around on this thread.
    crate::alloc::release_free_memory();
    wasm
}

#[cfg(test)]
mod tests {
    #[test]
    fn sdk_types_import_like_capabilities() {
        let m = crate::functions::manifest::Manifest::parse("name = \"x\"").unwrap();
        let ok = |n: &str| super::check_uses(&m, &[n.to_string()]);
        assert!(ok("ScheduledEvent").is_ok() && ok("User").is_ok() && ok("auth").is_ok());
        assert!(ok("Use").is_err(), "a prefix of a type is no type");
        assert!(ok("db").unwrap_err().contains("db = \"caller\""));
        assert!(ok("storage").unwrap_err().contains("no storage grant"));
        assert!(ok("realtime").unwrap_err().contains("do not have yet"));
    }
}
