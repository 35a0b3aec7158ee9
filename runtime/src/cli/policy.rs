//! `wasmbase policy`: row-level security presets (as in KickStack). Each preset
//! becomes an ordinary, checksummed migration in the project's migrations directory,
//! so the policies are reviewed, committed and replayed like any other schema change.
//!
//! Identifiers come from the command line, so they are validated (plain
//! `[A-Za-z_][A-Za-z0-9_]*`) before any SQL is built, and always emitted double-quoted.
//! Lookups pass names as bind parameters.

use super::{cli_config, owner_client, ConfigArg};
use anyhow::{anyhow, bail, Context, Result};
use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use tokio_postgres::Client;

/// Arguments of `policy`.
#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(clap::Subcommand)]
enum Cmd {
    /// Only a row's owner may read or change it (owner column = auth.uid()).
    Owner {
        /// Table: `name` or `schema.name` (schema defaults to public).
        table: String,
        /// Column holding the owner's user id (uuid).
        #[arg(long, default_value = "user_id")]
        owner_col: String,
        /// Add the owner column (uuid, default auth.uid(), references auth.users).
        #[arg(long)]
        add_owner_col: bool,
        #[command(flatten)]
        common: PresetArgs,
    },
    /// Anyone (anon and authenticated) may read every row; writes stay denied.
    #[command(name = "public_read", alias = "public-read")]
    PublicRead {
        /// Table: `name` or `schema.name` (schema defaults to public).
        table: String,
        #[command(flatten)]
        common: PresetArgs,
    },
    /// Rows belong to a team: org column = the token's app_metadata.org_id.
    #[command(name = "team_scope", alias = "team-scope")]
    TeamScope {
        /// Table: `name` or `schema.name` (schema defaults to public).
        table: String,
        /// Column holding the row's organisation id (uuid).
        #[arg(long, default_value = "org_id")]
        org_col: String,
        /// Add the org column (uuid, default the token's app_metadata.org_id).
        #[arg(long)]
        add_org_col: bool,
        #[command(flatten)]
        common: PresetArgs,
    },
    /// Users whose token has app_metadata.role = "admin" may read and change every row.
    #[command(name = "admin_override", alias = "admin-override")]
    AdminOverride {
        /// Table: `name` or `schema.name` (schema defaults to public).
        table: String,
        #[command(flatten)]
        common: PresetArgs,
    },
    /// Show a table's policies and whether row-level security is enabled.
    List {
        /// Table: `name` or `schema.name` (schema defaults to public).
        table: String,
        #[command(flatten)]
        config: ConfigArg,
    },
}

/// Flags shared by the preset commands.
#[derive(clap::Args)]
struct PresetArgs {
    /// Print the migration instead of writing and applying it.
    #[arg(long)]
    dry_run: bool,
    #[command(flatten)]
    config: ConfigArg,
}

/// Runs a policy subcommand. Input is validated before connecting to the database.
pub async fn run(a: Args) -> Result<()> {
    match a.cmd {
        Cmd::Owner {
            table,
            owner_col,
            add_owner_col,
            common,
        } => {
            let col = ident(&owner_col, "--owner-col")?.to_string();
            let preset = Preset::Owner {
                col,
                add_col: add_owner_col,
            };
            run_preset(&preset, &table, common).await
        }
        Cmd::PublicRead { table, common } => run_preset(&Preset::PublicRead, &table, common).await,
        Cmd::TeamScope {
            table,
            org_col,
            add_org_col,
            common,
        } => {
            let col = ident(&org_col, "--org-col")?.to_string();
            let preset = Preset::TeamScope {
                col,
                add_col: add_org_col,
            };
            run_preset(&preset, &table, common).await
        }
        Cmd::AdminOverride { table, common } => {
            run_preset(&Preset::AdminOverride, &table, common).await
        }
        Cmd::List { table, config } => list(&table, config).await,
    }
}

/// The longest identifier PostgreSQL keeps (NAMEDATALEN - 1); longer ones are
/// silently truncated, which would make the policy target another name.
const MAX_IDENT_BYTES: usize = 63;

/// Whether `s` is a plain identifier that is safe to put between double quotes.
fn is_ident(s: &str) -> bool {
    let mut chars = s.chars();
    let first_ok = matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_');
    first_ok && s.len() <= MAX_IDENT_BYTES && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Validates one identifier given as command-line argument `what`.
fn ident<'a>(s: &'a str, what: &str) -> Result<&'a str> {
    if is_ident(s) {
        Ok(s)
    } else {
        bail!(
            "{what} must be a plain name: letters, digits and _, not starting with a digit, \
             at most {MAX_IDENT_BYTES} bytes (got {s:?})"
        )
    }
}

/// Double-quotes an identifier that [`is_ident`] accepted (so it holds no quote).
fn quote(ident: &str) -> String {
    format!("\"{ident}\"")
}

/// A validated table name; `schema` defaults to `public`. Kept case-sensitive,
/// because it is always emitted quoted.
#[derive(Debug, Clone, PartialEq, Eq)]
struct QualifiedName {
    schema: String,
    name: String,
}

impl QualifiedName {
    /// Parses `name` or `schema.name`, given as command-line argument `what`.
    fn parse(arg: &str, what: &str) -> Result<Self> {
        let parts: Vec<&str> = arg.split('.').collect();
        let (schema, name) = match parts.as_slice() {
            [name] => ("public", *name),
            [schema, name] => (*schema, *name),
            _ => bail!("{what} must be `name` or `schema.name` (got {arg:?})"),
        };
        if !is_ident(schema) || !is_ident(name) {
            bail!(
                "{what} must be `name` or `schema.name`, each part letters, digits and _, \
                 not starting with a digit, at most {MAX_IDENT_BYTES} bytes (got {arg:?})"
            );
        }
        Ok(QualifiedName {
            schema: schema.to_string(),
            name: name.to_string(),
        })
    }

    /// The quoted SQL form, `"schema"."name"`.
    fn sql(&self) -> String {
        format!("{}.{}", quote(&self.schema), quote(&self.name))
    }

    /// The part of a migration file name naming the table.
    fn file_part(&self) -> String {
        if self.schema == "public" {
            self.name.clone()
        } else {
            format!("{}_{}", self.schema, self.name)
        }
    }
}

impl fmt::Display for QualifiedName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.schema, self.name)
    }
}

/// The org id claim, as the team_scope preset reads it from the access token.
const ORG_CLAIM: &str = "(auth.jwt()->'app_metadata'->>'org_id')::uuid";

/// The admin test of the admin_override preset.
const ADMIN_CLAIM: &str = "auth.jwt()->'app_metadata'->>'role' = 'admin'";

/// A preset with its (validated) options.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Preset {
    /// `col = auth.uid()` for every command.
    Owner { col: String, add_col: bool },
    /// SELECT for anon and authenticated; no write policies.
    PublicRead,
    /// `col = app_metadata.org_id` for every command.
    TeamScope { col: String, add_col: bool },
    /// Every command when `app_metadata.role = 'admin'`.
    AdminOverride,
}

/// The column a preset filters on, for the pre-flight checks and their messages.
struct PresetColumn<'a> {
    name: &'a str,
    add: bool,
    /// The flag naming the column, e.g. `--owner-col`.
    col_flag: &'static str,
    /// The flag adding it, e.g. `--add-owner-col`.
    add_flag: &'static str,
}

/// One policy of a preset: the command and its USING / WITH CHECK expressions.
struct Policy {
    command: &'static str,
    using: Option<String>,
    check: Option<String>,
}

impl Preset {
    /// The preset's name, as on the command line, in policy and file names.
    fn name(&self) -> &'static str {
        match self {
            Preset::Owner { .. } => "owner",
            Preset::PublicRead => "public_read",
            Preset::TeamScope { .. } => "team_scope",
            Preset::AdminOverride => "admin_override",
        }
    }

    fn column(&self) -> Option<PresetColumn<'_>> {
        match self {
            Preset::Owner { col, add_col } => Some(PresetColumn {
                name: col,
                add: *add_col,
                col_flag: "--owner-col",
                add_flag: "--add-owner-col",
            }),
            Preset::TeamScope { col, add_col } => Some(PresetColumn {
                name: col,
                add: *add_col,
                col_flag: "--org-col",
                add_flag: "--add-org-col",
            }),
            Preset::PublicRead | Preset::AdminOverride => None,
        }
    }

    /// The column definition for `ALTER TABLE ... ADD COLUMN IF NOT EXISTS`, if asked.
    fn add_column(&self) -> Option<String> {
        match self {
            Preset::Owner { col, add_col: true } => Some(format!(
                "{} uuid NOT NULL DEFAULT auth.uid() REFERENCES auth.users(id) ON DELETE CASCADE",
                quote(col)
            )),
            Preset::TeamScope { col, add_col: true } => {
                Some(format!("{} uuid NOT NULL DEFAULT {ORG_CLAIM}", quote(col)))
            }
            _ => None,
        }
    }

    /// The roles the policies apply to.
    fn roles(&self) -> &'static str {
        match self {
            Preset::PublicRead => "anon, authenticated",
            _ => "authenticated",
        }
    }

    /// One line saying what the preset allows, for the migration's header.
    fn summary(&self) -> String {
        match self {
            Preset::Owner { col, .. } => format!(
                "only the row's owner ({} = auth.uid()) may read or change it",
                quote(col)
            ),
            Preset::PublicRead => "anon and authenticated may read every row".to_string(),
            Preset::TeamScope { col, .. } => format!(
                "only members of the row's team ({} = app_metadata.org_id) may read or change it",
                quote(col)
            ),
            Preset::AdminOverride => {
                "tokens with app_metadata.role = 'admin' may read and change every row".to_string()
            }
        }
    }

    /// The policies, in the order they are written.
    fn policies(&self) -> Vec<Policy> {
        let cond = match self {
            Preset::PublicRead => {
                return vec![Policy {
                    command: "select",
                    using: Some("true".to_string()),
                    check: None,
                }];
            }
            Preset::Owner { col, .. } => format!("{} = auth.uid()", quote(col)),
            Preset::TeamScope { col, .. } => format!("{} = {ORG_CLAIM}", quote(col)),
            Preset::AdminOverride => ADMIN_CLAIM.to_string(),
        };
        // INSERT takes only WITH CHECK; UPDATE checks the old row (USING) and the new one.
        vec![
            Policy {
                command: "select",
                using: Some(cond.clone()),
                check: None,
            },
            Policy {
                command: "insert",
                using: None,
                check: Some(cond.clone()),
            },
            Policy {
                command: "update",
                using: Some(cond.clone()),
                check: Some(cond.clone()),
            },
            Policy {
                command: "delete",
                using: Some(cond),
                check: None,
            },
        ]
    }
}

/// The migration for `preset` on `table`. Pure, and idempotent in the database:
/// each policy is dropped (if it exists) before it is created, so running a preset
/// again replaces its policies instead of failing.
fn migration_sql(preset: &Preset, table: &QualifiedName) -> String {
    let t = table.sql();
    let mut lines = vec![
        format!("-- Generated by wasmbase policy {}", preset.name()),
        format!("-- {table}: {}.", preset.summary()),
        "-- Applied migrations are checksummed: do not edit this file once applied;".to_string(),
        "-- run the command again or write a new migration to change these policies.".to_string(),
    ];
    if let Some(def) = preset.add_column() {
        lines.push(format!("ALTER TABLE {t} ADD COLUMN IF NOT EXISTS {def};"));
    }
    lines.push(format!("ALTER TABLE {t} ENABLE ROW LEVEL SECURITY;"));
    for p in preset.policies() {
        let name = quote(&format!("wb_{}_{}", preset.name(), p.command));
        lines.push(String::new());
        lines.push(format!("DROP POLICY IF EXISTS {name} ON {t};"));
        lines.push(format!("CREATE POLICY {name} ON {t}"));
        let mut clauses = vec![format!(
            "  FOR {} TO {}",
            p.command.to_uppercase(),
            preset.roles()
        )];
        if let Some(using) = &p.using {
            clauses.push(format!("  USING ({using})"));
        }
        if let Some(check) = &p.check {
            clauses.push(format!("  WITH CHECK ({check})"));
        }
        if let Some(last) = clauses.last_mut() {
            last.push(';');
        }
        lines.extend(clauses);
    }
    lines.push(String::new());
    lines.join("\n")
}

/// `<timestamp>_policy_<preset>_<table>.sql`; timestamps keep it after earlier
/// migrations in name order.
fn file_name(preset: &Preset, table: &QualifiedName, timestamp: &str) -> String {
    format!(
        "{timestamp}_policy_{}_{}.sql",
        preset.name(),
        table.file_part()
    )
}

/// The current UTC time as `YYYYMMDDHHMMSS`.
fn utc_timestamp() -> String {
    wasmbase_host_api::time::rfc3339_seconds(std::time::SystemTime::now())
        .chars()
        .filter(char::is_ascii_digit)
        .collect()
}

/// Refuses the platform's own schemas: their tables are read by the platform's
/// roles, and policies there would break auth or bookkeeping.
fn check_user_schema(table: &QualifiedName) -> Result<()> {
    let s = table.schema.as_str();
    if wasmbase_host_api::data::profile::is_platform_schema(s) {
        bail!("{table} is in the platform schema {s}; policy presets are for the project's tables");
    }
    Ok(())
}

/// "table x does not exist", with the likely reasons.
fn not_found(table: &QualifiedName, dry_run: bool) -> String {
    let mut msg = format!("table {table} does not exist");
    if table
        .schema
        .chars()
        .chain(table.name.chars())
        .any(|c| c.is_ascii_uppercase())
    {
        msg.push_str(" (names are case-sensitive here: they are quoted in SQL)");
    }
    if dry_run {
        msg.push_str("; if a pending migration creates it, run `wasmbase migrate` first");
    }
    msg
}

/// Checks that `table` is an existing table (not a view or sequence).
async fn check_table(client: &Client, table: &QualifiedName, dry_run: bool) -> Result<()> {
    let regclass = table.sql();
    let row = client
        .query_opt(
            "SELECT c.relkind::text FROM pg_class c WHERE c.oid = to_regclass($1::text)",
            &[&regclass],
        )
        .await
        .context("looking up the table")?;
    let Some(row) = row else {
        bail!("{}", not_found(table, dry_run));
    };
    let kind: String = row.get(0);
    if kind != "r" && kind != "p" {
        bail!("{table} is not a table (relkind {kind}); row-level security applies to tables");
    }
    Ok(())
}

/// The data type of `table.col`, if that column exists.
async fn column_type(client: &Client, table: &QualifiedName, col: &str) -> Result<Option<String>> {
    let row = client
        .query_opt(
            "SELECT data_type::text FROM information_schema.columns \
             WHERE table_schema = $1::text AND table_name = $2::text AND column_name = $3::text",
            &[&table.schema, &table.name, &col],
        )
        .await
        .context("looking up the column")?;
    Ok(row.map(|r| r.get(0)))
}

/// Whether `table` has at least one row.
async fn has_rows(client: &Client, table: &QualifiedName) -> Result<bool> {
    // `table` is validated and quoted; nothing else goes into this statement.
    let q = format!("SELECT EXISTS (SELECT 1 FROM {})", table.sql());
    let row = client
        .query_one(q.as_str(), &[])
        .await
        .with_context(|| format!("reading {table}"))?;
    Ok(row.get(0))
}

/// Checks the preset's column before anything is written: it must be a uuid, and
/// exist unless it is to be added. Adding a NOT NULL column whose default is NULL
/// outside a request (a migration has no token) fails on a table with rows.
async fn check_column(
    client: &Client,
    table: &QualifiedName,
    preset: &Preset,
    dry_run: bool,
) -> Result<()> {
    let Some(c) = preset.column() else {
        return Ok(());
    };
    match column_type(client, table, c.name).await? {
        Some(ty) if ty != "uuid" => bail!(
            "column {table}.{} is {ty}, but the {} preset compares it with a uuid",
            c.name,
            preset.name()
        ),
        Some(_) => {}
        None if !c.add => bail!(
            "column {table}.{} does not exist; pass {} to add it, or {} to name another column",
            c.name,
            c.add_flag,
            c.col_flag
        ),
        None => {
            if has_rows(client, table).await? {
                let msg = format!(
                    "{table} has rows, and {} would add a NOT NULL column {} whose default \
                     is NULL in a migration (there is no token); add the column yourself, \
                     fill it, then run this again without {}",
                    c.add_flag, c.name, c.add_flag
                );
                if dry_run {
                    eprintln!("warning: {msg}");
                } else {
                    bail!("{msg}");
                }
            }
        }
    }
    Ok(())
}

/// Writes `sql` to `dir/name`, creating `dir`; never overwrites a file.
fn write_migration(dir: &Path, name: &str, sql: &str) -> Result<PathBuf> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join(name);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                anyhow!("{} already exists; not overwriting it", path.display())
            } else {
                anyhow!("creating {}: {e}", path.display())
            }
        })?;
    f.write_all(sql.as_bytes())
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

/// Prints what a migration run applied, as `wasmbase migrate` does.
fn print_report(dir: &Path, report: &crate::migrate::Report) {
    for m in &report.platform {
        println!("applied platform migration {m}");
    }
    for m in &report.user {
        println!("applied {}", dir.join(m).display());
    }
}

/// Validates, checks the database, then writes and applies the preset's migration
/// (or, with `--dry-run`, prints it and writes nothing).
async fn run_preset(preset: &Preset, table: &str, common: PresetArgs) -> Result<()> {
    let table = QualifiedName::parse(table, "TABLE")?;
    check_user_schema(&table)?;
    let cfg = cli_config(common.config.config.as_deref())?;
    let dir = cfg.migrations.dir.as_path();
    let mut client = owner_client(&cfg).await?;
    if !common.dry_run {
        // Apply what is pending first: the checks then see the schema the new
        // migration will run against (e.g. a table created by a pending file).
        let report = crate::migrate::run(&mut client, Some(dir))
            .await
            .context("applying pending migrations first")?;
        print_report(dir, &report);
    }
    check_table(&client, &table, common.dry_run).await?;
    check_column(&client, &table, preset, common.dry_run).await?;
    let sql = migration_sql(preset, &table);
    if common.dry_run {
        print!("{sql}");
        return Ok(());
    }
    let path = write_migration(dir, &file_name(preset, &table, &utc_timestamp()), &sql)?;
    println!("wrote {}", path.display());
    match crate::migrate::run(&mut client, Some(dir)).await {
        Ok(report) => {
            print_report(dir, &report);
            Ok(())
        }
        Err(e) => Err(anyhow!(
            "{e:#}\nthe migration was not applied; {} was kept: fix it and run \
             `wasmbase migrate`, or delete it",
            path.display()
        )),
    }
}

/// Prints `table`'s policies (from pg_policies) and whether RLS is enabled.
async fn list(table: &str, config: ConfigArg) -> Result<()> {
    let table = QualifiedName::parse(table, "TABLE")?;
    let cfg = cli_config(config.config.as_deref())?;
    let client = owner_client(&cfg).await?;
    let regclass = table.sql();
    let row = client
        .query_opt(
            "SELECT c.relrowsecurity, c.relforcerowsecurity FROM pg_class c \
             WHERE c.oid = to_regclass($1::text)",
            &[&regclass],
        )
        .await
        .context("looking up the table")?;
    let Some(row) = row else {
        bail!("{}", not_found(&table, false));
    };
    let (enabled, forced): (bool, bool) = (row.get(0), row.get(1));
    let policies = client
        .query(
            "SELECT policyname::text, cmd, permissive, array_to_string(roles, ', '), \
             qual, with_check FROM pg_policies \
             WHERE schemaname = $1::text AND tablename = $2::text ORDER BY policyname",
            &[&table.schema, &table.name],
        )
        .await
        .context("reading pg_policies")?;
    let state = match (enabled, forced) {
        (false, _) => "disabled",
        (true, false) => "enabled",
        (true, true) => "enabled and forced (the table owner too)",
    };
    println!("row-level security on {table}: {state}");
    if policies.is_empty() {
        if enabled {
            println!("no policies: anon and authenticated see no rows and can change none");
        } else {
            println!("no policies");
        }
        return Ok(());
    }
    if !enabled {
        println!("(the policies below have no effect until row-level security is enabled)");
    }
    let rows: Vec<[String; 5]> = policies
        .iter()
        .map(|r| {
            let cmd: String = r.get(1);
            let permissive: String = r.get(2);
            let cmd = if permissive == "RESTRICTIVE" {
                format!("{cmd} (restrictive)")
            } else {
                cmd
            };
            let dash = |v: Option<String>| v.unwrap_or_else(|| "-".to_string());
            [r.get(0), cmd, r.get(3), dash(r.get(4)), dash(r.get(5))]
        })
        .collect();
    print_table(["NAME", "COMMAND", "ROLES", "USING", "WITH CHECK"], &rows);
    Ok(())
}

/// Prints rows in columns, all but the last padded to their widest cell.
fn print_table(header: [&str; 5], rows: &[[String; 5]]) {
    let mut widths = header.map(str::len);
    for r in rows {
        for (w, cell) in widths.iter_mut().zip(r) {
            *w = (*w).max(cell.len());
        }
    }
    let line = |cells: [&str; 5]| {
        let mut out = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<w$}  ", w = widths[i]));
            }
        }
        println!("{}", out.trim_end());
    };
    line(header);
    for r in rows {
        line(r.each_ref().map(String::as_str));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn todos() -> QualifiedName {
        QualifiedName::parse("todos", "TABLE").unwrap()
    }

    fn owner(add_col: bool) -> Preset {
        Preset::Owner {
            col: "user_id".into(),
            add_col,
        }
    }

    /// The statement (up to its `;`) that starts with `start`.
    fn statement<'a>(sql: &'a str, start: &str) -> &'a str {
        let i = sql
            .find(start)
            .unwrap_or_else(|| panic!("no {start:?} in:\n{sql}"));
        let end = sql[i..].find(';').expect("statement ends") + i;
        &sql[i..=end]
    }

    #[test]
    fn identifiers_are_validated() {
        let long = "a".repeat(64);
        for bad in [
            "t; drop table x",
            "\"t\"",
            "a.b.c",
            "",
            ".t",
            "t.",
            "1t",
            "t-x",
            "tä",
            "t x",
            long.as_str(),
        ] {
            let err = QualifiedName::parse(bad, "TABLE").unwrap_err().to_string();
            assert!(err.starts_with("TABLE must be"), "{bad:?}: {err}");
            assert!(ident(bad, "--owner-col").is_err(), "{bad:?}");
        }
        let err = ident("x; drop", "--owner-col").unwrap_err().to_string();
        assert!(err.contains("--owner-col"), "{err}");
        assert!(ident("_user_id2", "--owner-col").is_ok());
        assert!(ident(&"a".repeat(63), "--owner-col").is_ok());
    }

    #[test]
    fn table_names_default_to_public() {
        assert_eq!(
            todos(),
            QualifiedName {
                schema: "public".into(),
                name: "todos".into()
            }
        );
        let t = QualifiedName::parse("app.Notes", "TABLE").unwrap();
        assert_eq!(t.sql(), "\"app\".\"Notes\"");
        assert_eq!(t.to_string(), "app.Notes");
    }

    #[test]
    fn platform_schemas_are_refused() {
        for t in ["auth.users", "wasmbase.api_keys", "pg_catalog.pg_class"] {
            let t = QualifiedName::parse(t, "TABLE").unwrap();
            assert!(check_user_schema(&t).is_err(), "{t}");
        }
        assert!(check_user_schema(&todos()).is_ok());
    }

    #[test]
    fn owner_preset() {
        let sql = migration_sql(&owner(false), &todos());
        assert!(
            sql.starts_with("-- Generated by wasmbase policy owner\n"),
            "{sql}"
        );
        assert!(sql.contains("ALTER TABLE \"public\".\"todos\" ENABLE ROW LEVEL SECURITY;"));
        assert!(!sql.contains("ADD COLUMN"), "{sql}");
        for cmd in ["select", "insert", "update", "delete"] {
            let name = format!("\"wb_owner_{cmd}\"");
            assert!(
                sql.contains(&format!(
                    "DROP POLICY IF EXISTS {name} ON \"public\".\"todos\";"
                )),
                "{sql}"
            );
            let create = statement(&sql, &format!("CREATE POLICY {name}"));
            let upper = cmd.to_uppercase();
            let head = format!("ON \"public\".\"todos\"\n  FOR {upper} TO authenticated\n");
            assert!(create.contains(&head), "{create}");
        }
        let cond = "(\"user_id\" = auth.uid())";
        let select = statement(&sql, "CREATE POLICY \"wb_owner_select\"");
        assert!(select.contains(&format!("USING {cond}")), "{select}");
        assert!(!select.contains("WITH CHECK"), "{select}");
        let insert = statement(&sql, "CREATE POLICY \"wb_owner_insert\"");
        assert!(insert.contains(&format!("WITH CHECK {cond}")), "{insert}");
        assert!(!insert.contains("USING"), "{insert}");
        let update = statement(&sql, "CREATE POLICY \"wb_owner_update\"");
        assert!(update.contains(&format!("USING {cond}")), "{update}");
        assert!(update.contains(&format!("WITH CHECK {cond}")), "{update}");
        let delete = statement(&sql, "CREATE POLICY \"wb_owner_delete\"");
        assert!(delete.contains(&format!("USING {cond}")), "{delete}");
        assert_eq!(sql.matches("CREATE POLICY").count(), 4);
    }

    #[test]
    fn owner_preset_can_add_the_column_first() {
        let sql = migration_sql(&owner(true), &todos());
        let add = "ALTER TABLE \"public\".\"todos\" ADD COLUMN IF NOT EXISTS \"user_id\" uuid \
                   NOT NULL DEFAULT auth.uid() REFERENCES auth.users(id) ON DELETE CASCADE;";
        let i = sql.find(add).unwrap_or_else(|| panic!("{sql}"));
        assert!(i < sql.find("ENABLE ROW LEVEL SECURITY").unwrap());
        assert!(i < sql.find("CREATE POLICY").unwrap());
    }

    #[test]
    fn public_read_preset() {
        let sql = migration_sql(&Preset::PublicRead, &todos());
        assert!(sql.starts_with("-- Generated by wasmbase policy public_read\n"));
        assert!(sql.contains("ENABLE ROW LEVEL SECURITY;"));
        let select = statement(&sql, "CREATE POLICY \"wb_public_read_select\"");
        assert!(
            select.contains("FOR SELECT TO anon, authenticated\n  USING (true);"),
            "{select}"
        );
        assert_eq!(sql.matches("CREATE POLICY").count(), 1);
        assert!(!sql.contains("WITH CHECK"), "{sql}");
    }

    #[test]
    fn team_scope_preset() {
        let preset = Preset::TeamScope {
            col: "Tenant".into(),
            add_col: false,
        };
        let table = QualifiedName::parse("app.projects", "TABLE").unwrap();
        let sql = migration_sql(&preset, &table);
        let cond = "(\"Tenant\" = (auth.jwt()->'app_metadata'->>'org_id')::uuid)";
        assert_eq!(sql.matches("CREATE POLICY \"wb_team_scope_").count(), 4);
        assert_eq!(sql.matches(&format!("USING {cond}")).count(), 3, "{sql}");
        assert_eq!(
            sql.matches(&format!("WITH CHECK {cond}")).count(),
            2,
            "{sql}"
        );
        assert!(sql.contains("ON \"app\".\"projects\""));
        assert!(sql.contains("TO authenticated"));
        assert!(!sql.contains("anon"));
        assert!(!sql.contains("ADD COLUMN"));

        let preset = Preset::TeamScope {
            col: "org_id".into(),
            add_col: true,
        };
        let sql = migration_sql(&preset, &table);
        assert!(sql.contains(
            "ALTER TABLE \"app\".\"projects\" ADD COLUMN IF NOT EXISTS \"org_id\" uuid \
             NOT NULL DEFAULT (auth.jwt()->'app_metadata'->>'org_id')::uuid;"
        ));
    }

    #[test]
    fn admin_override_preset() {
        let sql = migration_sql(&Preset::AdminOverride, &todos());
        let cond = "(auth.jwt()->'app_metadata'->>'role' = 'admin')";
        for cmd in ["select", "insert", "update", "delete"] {
            assert!(sql.contains(&format!("CREATE POLICY \"wb_admin_override_{cmd}\"")));
        }
        assert_eq!(sql.matches(&format!("USING {cond}")).count(), 3, "{sql}");
        assert_eq!(
            sql.matches(&format!("WITH CHECK {cond}")).count(),
            2,
            "{sql}"
        );
    }

    #[test]
    fn file_names() {
        let t = todos();
        assert_eq!(
            file_name(&owner(false), &t, "20240102030405"),
            "20240102030405_policy_owner_todos.sql"
        );
        let t = QualifiedName::parse("app.projects", "TABLE").unwrap();
        assert_eq!(
            file_name(&Preset::PublicRead, &t, "20240102030405"),
            "20240102030405_policy_public_read_app_projects.sql"
        );
        let ts = utc_timestamp();
        assert_eq!(ts.len(), 14, "{ts}");
        assert!(ts.bytes().all(|b| b.is_ascii_digit()), "{ts}");
    }

    #[test]
    fn write_migration_never_overwrites() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("db").join("migrations");
        let path = write_migration(&sub, "1_x.sql", "SELECT 1;").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "SELECT 1;");
        let err = write_migration(&sub, "1_x.sql", "SELECT 2;").unwrap_err();
        assert!(err.to_string().contains("already exists"), "{err}");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "SELECT 1;");
    }
}
