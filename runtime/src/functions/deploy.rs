//! Deployed functions: versions stored in PostgreSQL (the WebAssembly bytes as
//! uploaded), one active version per name, NOTIFY `wasmbase_functions` with
//! the name on every change. Each node loads the active version itself
//! (compiling into its own cache) and re-syncs everything after a reconnect.

use super::load::{self, LoadError};
use super::manifest::Manifest;
use crate::server::state::AppState;
use anyhow::{Context, Result};
use serde::Serialize;
use std::sync::Arc;
use tokio_postgres::GenericClient;

/// NOTIFY channel of function changes (payload: the name).
pub const CHANNEL: &str = "wasmbase_functions";

/// One stored version.
#[derive(Debug, Serialize)]
pub struct Version {
    /// Version number (1, 2, …).
    pub version: i32,
    /// SHA-256 of the component.
    pub hash: String,
    /// When it was deployed (RFC 3339).
    pub created_at: String,
    /// Who deployed it.
    pub created_by: String,
    /// Whether it is the active version.
    pub active: bool,
}

/// Validates (compiles, checks grants and exports) and records a new version,
/// making it active. A bad component changes nothing.
pub async fn deploy(
    st: &AppState,
    manifest_text: &str,
    wasm: Vec<u8>,
    by: &str,
) -> Result<(String, i32, String), LoadError> {
    let manifest = Manifest::parse(manifest_text).map_err(LoadError)?;
    let engine = st.functions.engine.clone();
    let name = manifest.name.clone();
    let bytes = wasm.clone();
    let loaded = tokio::task::spawn_blocking(move || {
        load::prepare(&engine, manifest, &bytes, "deploy".into(), None)
    })
    .await
    .map_err(|e| LoadError(format!("validation failed: {e}")))??;
    let hash = loaded.hash.clone();
    let c = st
        .system
        .get()
        .await
        .map_err(|e| LoadError(format!("database unavailable: {e}")))?;
    let row = c
        .query_one(
            "WITH v AS (
               INSERT INTO wasmbase.function_versions (name, version, manifest, component, hash, created_by)
               SELECT $1, coalesce((SELECT max(version) FROM wasmbase.function_versions WHERE name = $1), 0) + 1,
                      $2, $3, $4, $5
               RETURNING version)
             INSERT INTO wasmbase.functions (name, active_version) SELECT $1, version FROM v
             ON CONFLICT (name) DO UPDATE SET active_version = EXCLUDED.active_version, updated_at = now()
             RETURNING active_version",
            &[&name, &manifest_text, &wasm, &hash, &by],
        )
        .await
        .map_err(|e| LoadError(format!("recording the version: {}", wasmbase_host_api::db::describe(&e))))?;
    let version: i32 = row.get(0);
    // Serve it here at once (other nodes follow through NOTIFY).
    let mut loaded = loaded;
    loaded.version = Some(i64::from(version));
    loaded.source = format!("deploy v{version}");
    st.functions.registry.install(loaded);
    Ok((name, version, hash))
}

/// Makes `version` (default: the one before the active one) active.
pub async fn rollback(st: &AppState, name: &str, version: Option<i32>) -> Result<Option<i32>> {
    let c = st.system.get().await?;
    let row = c
        .query_opt(
            "UPDATE wasmbase.functions f SET active_version = v.version, updated_at = now()
             FROM (SELECT version FROM wasmbase.function_versions
                   WHERE name = $1 AND CASE WHEN $2::int IS NULL
                     THEN version < (SELECT active_version FROM wasmbase.functions WHERE name = $1)
                     ELSE version = $2 END
                   ORDER BY version DESC LIMIT 1) v
             WHERE f.name = $1 RETURNING f.active_version",
            &[&name, &version],
        )
        .await?;
    let Some(row) = row else { return Ok(None) };
    let v: i32 = row.get(0);
    sync_one(st, &**c, name).await;
    Ok(Some(v))
}

/// Versions of `name`, newest first.
pub async fn versions(c: &impl GenericClient, name: &str) -> Result<Vec<Version>> {
    Ok(c
        .query(
            "SELECT v.version, v.hash, to_char(v.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'),
                    v.created_by, v.version = f.active_version
             FROM wasmbase.function_versions v JOIN wasmbase.functions f USING (name)
             WHERE v.name = $1 ORDER BY v.version DESC",
            &[&name],
        )
        .await?
        .iter()
        .map(|r| Version {
            version: r.get(0),
            hash: r.get(1),
            created_at: r.get(2),
            created_by: r.get(3),
            active: r.get(4),
        })
        .collect())
}

/// Deletes `name` and all its versions; false if it did not exist.
pub async fn delete(st: &AppState, name: &str) -> Result<bool> {
    let c = st.system.get().await?;
    let n = c
        .execute("DELETE FROM wasmbase.functions WHERE name = $1", &[&name])
        .await?;
    if n > 0 {
        st.functions.registry.remove(name);
    }
    Ok(n > 0)
}

/// Loads the active version of `name` unless this node already serves it.
pub async fn sync_one(st: &AppState, c: &impl GenericClient, name: &str) {
    let row = match c
        .query_opt(
            "SELECT v.version, v.hash, v.manifest, v.component FROM wasmbase.functions f
             JOIN wasmbase.function_versions v ON v.name = f.name AND v.version = f.active_version
             WHERE f.name = $1",
            &[&name],
        )
        .await
    {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(function = name, error = %wasmbase_host_api::db::describe(&e), "reading the deployed function");
            return;
        }
    };
    let Some(row) = row else {
        // Deleted: stop serving it if it was a deployed one.
        if let super::registry::Lookup::Ready(f) = st.functions.registry.get(name) {
            if f.version.is_some() {
                st.functions.registry.remove(name);
            }
        }
        return;
    };
    let (version, hash): (i32, String) = (row.get(0), row.get(1));
    if let super::registry::Lookup::Ready(f) = st.functions.registry.get(name) {
        if f.hash == hash && f.version == Some(i64::from(version)) {
            return;
        }
    }
    let manifest: String = row.get(2);
    let wasm: Vec<u8> = row.get(3);
    let engine = st.functions.engine.clone();
    let result = tokio::task::spawn_blocking(move || {
        let m = Manifest::parse(&manifest).map_err(LoadError)?;
        load::prepare(
            &engine,
            m,
            &wasm,
            format!("deploy v{version}"),
            Some(i64::from(version)),
        )
    })
    .await;
    match result {
        Ok(Ok(f)) => {
            tracing::info!(function = name, version, "deployed version loaded");
            st.functions.registry.install(f);
        }
        Ok(Err(e)) => {
            st.functions.registry.failed(name, e.0.clone());
            tracing::error!(
                function = name,
                version,
                "deployed version does not load here: {e}"
            );
        }
        Err(e) => tracing::error!(function = name, error = %e, "loading a deployed version"),
    }
}

/// Loads every deployed function (after start and after each reconnect).
pub async fn sync_all(st: &AppState) -> Result<()> {
    let c = st
        .system
        .get()
        .await
        .context("connecting to load deployed functions")?;
    let names: Vec<String> = c
        .query("SELECT name FROM wasmbase.functions ORDER BY name", &[])
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    for n in &names {
        sync_one(st, &**c, n).await;
    }
    // Deployed functions deleted while this node was not listening.
    for served in st.functions.registry.names() {
        if !names.contains(&served) {
            if let super::registry::Lookup::Ready(f) = st.functions.registry.get(&served) {
                if f.version.is_some() {
                    st.functions.registry.remove(&served);
                }
            }
        }
    }
    Ok(())
}

/// Reloads this node's secret cache (values for granted env names), merging
/// the dev `.env` (secrets win).
pub async fn reload_secrets(st: &AppState) -> Result<()> {
    let Some(cipher) = &st.functions.secrets else {
        return Ok(());
    };
    let c = st.system.get().await?;
    let mut env = st.functions.dotenv.clone();
    env.extend(super::secrets::load_all(&**c, cipher).await?);
    st.functions.env.store(Arc::new(env));
    Ok(())
}
