//! Deployed functions: versions stored in PostgreSQL (the WebAssembly bytes as
//! uploaded), one active version per name, NOTIFY `wasmbase_functions` with
//! the name on every change. Each node loads the active version itself
//! (compiling into its own cache) and re-syncs everything after a reconnect.
//! Deploys, rollbacks and deletes are recorded in `wasmbase.audit_log` in the
//! transaction that makes them.

use super::load::{self, LoadError};
use super::manifest::Manifest;
use crate::server::state::AppState;
use anyhow::{Context, Result};
use serde::Serialize;
use std::sync::Arc;
use tokio_postgres::GenericClient;
use wasmbase_host_api::audit::{self, Actor};

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

/// Why a deploy failed.
#[derive(Debug)]
pub enum DeployError {
    /// The upload is not acceptable (nothing was recorded).
    Invalid(LoadError),
    /// The database could not record it.
    Database(String),
}

impl From<LoadError> for DeployError {
    fn from(e: LoadError) -> DeployError {
        DeployError::Invalid(e)
    }
}

/// The active version of `name`, if deployed.
async fn active_version(c: &impl GenericClient, name: &str) -> Option<i32> {
    c.query_opt(
        "SELECT active_version FROM wasmbase.functions WHERE name = $1",
        &[&name],
    )
    .await
    .ok()
    .flatten()
    .map(|r| r.get(0))
}

/// Validates (compiles, checks grants and exports) and records a new version,
/// making it active, and audits it under `by`. A bad component changes nothing.
pub async fn deploy(
    st: &AppState,
    manifest_text: &str,
    wasm: Vec<u8>,
    by: Actor<'_>,
) -> Result<(String, i32, String), DeployError> {
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
    let mut c = st
        .system
        .get()
        .await
        .map_err(|e| DeployError::Database(format!("database unavailable: {e}")))?;
    let db = |e: tokio_postgres::Error| {
        DeployError::Database(format!(
            "recording the version: {}",
            wasmbase_host_api::db::describe(&e)
        ))
    };
    let tx = c.transaction().await.map_err(db)?;
    // Two deploys of one name at once take turns (no duplicate version numbers).
    tx.execute(
        "SELECT pg_advisory_xact_lock(hashtext('wasmbase.functions/' || $1))",
        &[&name],
    )
    .await
    .map_err(db)?;
    let row = tx
        .query_one(
            "WITH v AS (
               INSERT INTO wasmbase.function_versions (name, version, manifest, component, hash, created_by)
               SELECT $1, coalesce((SELECT max(version) FROM wasmbase.function_versions WHERE name = $1), 0) + 1,
                      $2, $3, $4, $5
               RETURNING version)
             INSERT INTO wasmbase.functions (name, active_version) SELECT $1, version FROM v
             ON CONFLICT (name) DO UPDATE SET active_version = EXCLUDED.active_version, updated_at = now()
             RETURNING active_version",
            &[&name, &manifest_text, &wasm, &hash, &by.name],
        )
        .await
        .map_err(db)?;
    let version: i32 = row.get(0);
    audit::record(
        &*tx,
        by,
        "function.deploy",
        &name,
        serde_json::json!({"version": version, "hash": hash}),
    )
    .await
    .map_err(db)?;
    crate::cron::job::sync_manifest(&*tx, &name, &loaded.manifest.cron_jobs(), by)
        .await
        .map_err(|e| DeployError::Database(format!("registering its [[cron]] jobs: {e}")))?;
    tx.commit().await.map_err(db)?;
    // Serve it here at once (other nodes follow through NOTIFY), unless a
    // newer change already replaced it.
    let mut loaded = loaded;
    loaded.version = Some(i64::from(version));
    loaded.source = format!("deploy v{version}");
    let _one = st.functions.sync_lock.lock().await;
    if active_version(&**c, &name).await == Some(version) {
        st.functions.registry.install(loaded);
    }
    Ok((name, version, hash))
}

/// Makes `version` (default: the one before the active one) active, audited
/// under `by`.
pub async fn rollback(
    st: &AppState,
    name: &str,
    version: Option<i32>,
    by: Actor<'_>,
) -> Result<Option<i32>> {
    let mut c = st.system.get().await?;
    let tx = c.transaction().await?;
    let from = active_version(&*tx, name).await;
    let row = tx
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
    // The schedules of the version now active.
    let text: String = tx
        .query_one(
            "SELECT manifest FROM wasmbase.function_versions WHERE name = $1 AND version = $2",
            &[&name, &v],
        )
        .await?
        .get(0);
    let jobs = Manifest::parse(&text)
        .map(|m| m.cron_jobs())
        .unwrap_or_default();
    crate::cron::job::sync_manifest(&*tx, name, &jobs, by).await?;
    audit::record(
        &*tx,
        by,
        "function.rollback",
        name,
        serde_json::json!({"version": v, "from": from}),
    )
    .await?;
    tx.commit().await?;
    drop(c);
    sync_one(st, name).await;
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

/// Deletes `name` and all its versions, audited under `by`; false (and
/// nothing recorded) if it did not exist.
pub async fn delete(st: &AppState, name: &str, by: Actor<'_>) -> Result<bool> {
    let mut c = st.system.get().await?;
    let tx = c.transaction().await?;
    let n = tx
        .execute("DELETE FROM wasmbase.functions WHERE name = $1", &[&name])
        .await?;
    if n > 0 {
        audit::record(&*tx, by, "function.delete", name, serde_json::json!({})).await?;
        crate::cron::job::sync_manifest(&*tx, name, &[], by).await?;
    }
    tx.commit().await?;
    if n > 0 {
        st.functions.registry.remove(name);
    }
    Ok(n > 0)
}

/// Loads the active version of `name` unless this node already serves it.
/// Compiling happens without holding a database connection; the result is
/// installed only if it is still the active version (so a rollback that lands
/// while a slower deploy compiles is never undone), one change at a time.
pub async fn sync_one(st: &AppState, name: &str) {
    let c = match st.system.get().await {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(function = name, error = %e, "loading a deployed function: no database connection");
            return;
        }
    };
    let head = c
        .query_opt(
            "SELECT f.active_version, v.hash FROM wasmbase.functions f
             JOIN wasmbase.function_versions v ON v.name = f.name AND v.version = f.active_version
             WHERE f.name = $1",
            &[&name],
        )
        .await;
    let head = match head {
        Ok(h) => h,
        Err(e) => {
            tracing::warn!(function = name, error = %wasmbase_host_api::db::describe(&e), "reading the deployed function");
            return;
        }
    };
    let Some(head) = head else {
        // Deleted: stop serving it if it was a deployed one.
        let _one = st.functions.sync_lock.lock().await;
        if let super::registry::Availability::Ready(f) = st.functions.registry.get(name) {
            if f.version.is_some() {
                st.functions.registry.remove(name);
            }
        }
        return;
    };
    let (version, hash): (i32, String) = (head.get(0), head.get(1));
    if let super::registry::Availability::Ready(f) = st.functions.registry.get(name) {
        if f.hash == hash && f.version == Some(i64::from(version)) {
            return;
        }
    }
    let row = match c
        .query_one(
            "SELECT manifest, component FROM wasmbase.function_versions WHERE name = $1 AND version = $2",
            &[&name, &version],
        )
        .await
    {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(function = name, error = %wasmbase_host_api::db::describe(&e), "reading the deployed function");
            return;
        }
    };
    let manifest: String = row.get(0);
    let wasm: Vec<u8> = row.get(1);
    drop(row);
    drop(c); // not held while compiling
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
    let _one = st.functions.sync_lock.lock().await;
    let Ok(c) = st.system.get().await else {
        return;
    };
    if active_version(&**c, name).await != Some(version) {
        return; // superseded while compiling; the newer change syncs itself
    }
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
    drop(c);
    for n in &names {
        sync_one(st, n).await;
    }
    // Deployed functions deleted while this node was not listening.
    for served in st.functions.registry.names() {
        if !names.contains(&served) {
            if let super::registry::Availability::Ready(f) = st.functions.registry.get(&served) {
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
