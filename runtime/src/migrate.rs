//! Migrations: the platform's own schema (`migrations/`, embedded in the binary) and
//! a project's (`db/migrations/*.sql`), each applied in order, recorded with a
//! SHA-256 checksum, one transaction per file.
//!
//! Safe on every start and from N nodes at once: the migrating connection holds a
//! session advisory lock, so the second node waits and then finds nothing to do.
//! Roles are cluster-wide (the lock is not), which the role migration handles.

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};
use std::path::Path;
use tokio_postgres::Client;

/// One embedded platform migration.
pub struct Migration {
    /// Ordinal; also the primary key of `wasmbase.schema_migrations`.
    pub version: i32,
    /// File name, for messages.
    pub name: &'static str,
    /// The SQL.
    pub sql: &'static str,
}

macro_rules! migration {
    ($v:expr, $name:literal) => {
        Migration {
            version: $v,
            name: $name,
            sql: include_str!(concat!("../../migrations/", $name)),
        }
    };
}

/// The platform's migrations, in order. Append only; never edit an applied one.
pub const PLATFORM: &[Migration] = &[
    migration!(1, "0001_auth_helpers.sql"),
    migration!(2, "0002_platform.sql"),
    migration!(3, "0003_exposed_defaults.sql"),
    migration!(4, "0004_auth.sql"),
    migration!(5, "0005_schema_reload.sql"),
    migration!(6, "0006_functions.sql"),
    migration!(7, "0007_function_logs_unlogged.sql"),
    migration!(8, "0008_user_version.sql"),
    migration!(9, "0009_function_log_batches.sql"),
    migration!(10, "0010_views_security_invoker.sql"),
    migration!(11, "0011_email_send_times.sql"),
    migration!(12, "0012_audit_request_id.sql"),
    migration!(13, "0013_storage.sql"),
    migration!(14, "0014_storage_user_delete.sql"),
    migration!(15, "0015_realtime.sql"),
    migration!(16, "0016_realtime_changes.sql"),
    migration!(17, "0017_realtime_node_channels.sql"),
    migration!(18, "0018_auth_claim_gucs.sql"),
    migration!(19, "0019_cron.sql"),
    migration!(20, "0020_pg_cron_compat.sql"),
    migration!(21, "0021_pg_net_compat.sql"),
    migration!(22, "0022_auth_oauth.sql"),
    migration!(23, "0023_storage_resumable.sql"),
    migration!(24, "0024_realtime_messages.sql"),
    migration!(25, "0025_realtime_positions.sql"),
];

/// Roles are cluster-wide and outside any dump; this idempotent script runs on
/// every start, before the numbered migrations (see the file's header).
pub const ROLES: &str = include_str!("../../migrations/roles.sql");

/// A digest of all platform migrations, e.g. to name a migrated template database.
pub fn platform_fingerprint() -> String {
    let mut h = Sha256::new();
    h.update(ROLES.as_bytes());
    for m in PLATFORM {
        h.update(m.sql.as_bytes());
    }
    hex::encode(&h.finalize()[..8])
}

const LOCK_KEY: i64 = 0x7761_736d_6261_7365; // "wasmbase"

fn checksum(sql: &str) -> String {
    hex::encode(Sha256::digest(sql.as_bytes()))
}

/// What a run applied.
#[derive(Debug, Default)]
pub struct Report {
    /// Platform migrations applied now.
    pub platform: Vec<&'static str>,
    /// User migrations applied now.
    pub user: Vec<String>,
}

/// Applies pending platform migrations, then (if `user_dir` exists) the project's.
pub async fn run(client: &mut Client, user_dir: Option<&Path>) -> Result<Report> {
    client
        .query_one("SELECT pg_advisory_lock($1)", &[&LOCK_KEY])
        .await
        .context("taking the migration lock")?;
    let result = run_locked(client, user_dir).await;
    let _ = client
        .query_one("SELECT pg_advisory_unlock($1)", &[&LOCK_KEY])
        .await;
    result
}

async fn run_locked(client: &mut Client, user_dir: Option<&Path>) -> Result<Report> {
    client
        .batch_execute(
            "CREATE SCHEMA IF NOT EXISTS wasmbase;
             CREATE TABLE IF NOT EXISTS wasmbase.schema_migrations (
               version int PRIMARY KEY,
               name text NOT NULL,
               checksum text NOT NULL,
               applied_at timestamptz NOT NULL DEFAULT now());",
        )
        .await
        .context("creating wasmbase.schema_migrations")?;
    client.batch_execute(ROLES).await.map_err(|e| {
        anyhow::anyhow!("ensuring roles (migrations/roles.sql): {}", pg_message(&e))
    })?;
    let mut report = Report::default();
    let applied = client
        .query(
            "SELECT version, checksum FROM wasmbase.schema_migrations",
            &[],
        )
        .await?;
    for m in PLATFORM {
        let sum = checksum(m.sql);
        if let Some(row) = applied.iter().find(|r| r.get::<_, i32>(0) == m.version) {
            if row.get::<_, String>(1) != sum {
                bail!(
                    "platform migration {} differs from the one applied to this database; \
                     this binary does not match the database's schema",
                    m.name
                );
            }
            continue;
        }
        let tx = client.transaction().await?;
        tx.batch_execute(m.sql)
            .await
            .map_err(|e| anyhow::anyhow!("platform migration {}: {}", m.name, pg_message(&e)))?;
        tx.execute(
            "INSERT INTO wasmbase.schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
            &[&m.version, &m.name, &sum],
        )
        .await?;
        tx.commit().await?;
        report.platform.push(m.name);
    }
    if let Some(dir) = user_dir {
        report.user = run_user(client, dir).await?;
    }
    Ok(report)
}

/// The `*.sql` files of a user migration directory, sorted by name.
pub fn user_files(dir: &Path) -> Result<Vec<(String, String)>> {
    let mut files = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(files),
        Err(e) => return Err(e).with_context(|| format!("reading {}", dir.display())),
    };
    for e in entries {
        let path = e?.path();
        if path.extension().and_then(|x| x.to_str()) != Some("sql") {
            continue;
        }
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .map(str::to_string);
        let Some(name) = name else { continue };
        let sql = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        files.push((name, sql));
    }
    files.sort();
    Ok(files)
}

async fn run_user(client: &mut Client, dir: &Path) -> Result<Vec<String>> {
    let files = user_files(dir)?;
    let applied = client
        .query("SELECT name, checksum FROM wasmbase.user_migrations", &[])
        .await?;
    let mut done = Vec::new();
    for (name, sql) in files {
        let sum = checksum(&sql);
        if let Some(row) = applied.iter().find(|r| r.get::<_, &str>(0) == name) {
            if row.get::<_, String>(1) != sum {
                bail!(
                    "{}: this migration was changed after it was applied; put the change in a new migration file instead",
                    dir.join(&name).display()
                );
            }
            continue;
        }
        let tx = client.transaction().await?;
        tx.batch_execute(&sql)
            .await
            .map_err(|e| anyhow::anyhow!("{}: {}", dir.join(&name).display(), pg_message(&e)))?;
        tx.execute(
            "INSERT INTO wasmbase.user_migrations (name, checksum) VALUES ($1, $2)",
            &[&name, &sum],
        )
        .await?;
        tx.commit().await?;
        done.push(name);
    }
    Ok(done)
}

/// A PostgreSQL error with its SQLSTATE, hint and detail: for migration errors,
/// which the operator reads and which concern their own SQL.
pub fn pg_message(e: &tokio_postgres::Error) -> String {
    let base = wasmbase_host_api::db::describe(e);
    match e.as_db_error().and_then(|d| d.detail()) {
        Some(d) => format!("{base}; detail: {d}"),
        None => base,
    }
}

/// Writes settings the database reads itself (the RLS event trigger) from config.
pub async fn sync_settings(
    client: &Client,
    rls_by_default: bool,
    exposed: &[String],
) -> Result<()> {
    client
        .execute(
            "UPDATE wasmbase.settings SET rls_by_default = $1, exposed_schemas = $2 WHERE id",
            &[&rls_by_default, &exposed],
        )
        .await?;
    grant_schema_usage(client, exposed).await
}

/// `authenticator` prepares data-API statements before switching role, so it
/// must be able to look names up in the exposed schemas. USAGE grants no access
/// to any table or function; those stay with the request roles. Runs at start
/// and on every schema reload (so a schema created later works without a
/// restart); grants only what is missing, so the GRANT's own DDL notification
/// does not cause another round.
pub async fn grant_schema_usage(client: &Client, exposed: &[String]) -> Result<()> {
    let rows = client
        .query(
            "SELECT format('GRANT USAGE ON SCHEMA %I TO authenticator', s) FROM unnest($1::text[]) s \
             WHERE to_regnamespace(s) IS NOT NULL \
               AND NOT has_schema_privilege('authenticator', s, 'USAGE')",
            &[&exposed],
        )
        .await?;
    for row in rows {
        client.batch_execute(row.get::<_, &str>(0)).await?;
    }
    Ok(())
}

/// The platform's login roles, each with the config key of its password.
pub const LOGIN_ROLES: [(&str, &str); 3] = [
    ("authenticator", "database.authenticator_password"),
    ("wasmbase_auth", "database.auth_password"),
    ("wasmbase_functions", "database.functions_password"),
];

/// The password of each platform login role (cluster-wide). Each role has its
/// own, so the request pool's credential does not open the auth tables
/// (`wasmbase_auth`) or a `service_role` session (`wasmbase_functions`).
#[derive(Clone, Copy)]
pub struct LoginPasswords<'a> {
    /// `database.authenticator_password`.
    pub authenticator: &'a str,
    /// `database.auth_password`.
    pub auth: &'a str,
    /// `database.functions_password`.
    pub functions: &'a str,
}

impl<'a> LoginPasswords<'a> {
    /// (role, password) pairs, in [`LOGIN_ROLES`] order.
    pub fn pairs(&self) -> [(&'static str, &'a str); 3] {
        [
            (LOGIN_ROLES[0].0, self.authenticator),
            (LOGIN_ROLES[1].0, self.auth),
            (LOGIN_ROLES[2].0, self.functions),
        ]
    }
}

/// Sets the password of all three login roles (`authenticator`,
/// `wasmbase_auth`, `wasmbase_functions`), each its own.
pub async fn set_login_passwords(client: &Client, pw: &LoginPasswords<'_>) -> Result<()> {
    for (role, password) in pw.pairs() {
        set_login_password(client, role, password).await?;
    }
    Ok(())
}

/// Sets the password of one login role (cluster-wide).
///
/// Only a SCRAM-SHA-256 verifier computed here is sent, never the password, so
/// statement logs and pg_stat_statements cannot capture it.
pub async fn set_login_password(client: &Client, role: &str, password: &str) -> Result<()> {
    let verifier = postgres_protocol::password::scram_sha_256(password.as_bytes());
    // ALTER ROLE takes no bind parameters; format's %I/%L quote server-side.
    let row = client
        .query_one(
            "SELECT format('ALTER ROLE %I WITH LOGIN PASSWORD %L', $1::text, $2::text)",
            &[&role, &verifier],
        )
        .await?;
    let stmt: String = row.get(0);
    client
        .batch_execute(&stmt)
        .await
        .map_err(|e| anyhow::anyhow!("setting the {role} password: {}", pg_message(&e)))?;
    Ok(())
}
