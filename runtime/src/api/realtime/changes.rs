//! postgres_changes: bindings as realtime-js sends them (`parse_binding`,
//! Supabase's filter grammar), and the delivery of committed changes. A
//! table's row trigger records each change, and its transaction is stamped
//! at pre-commit with its snapshot and commit order (migrations/0016, 0025).
//! Every node with subscribers reads by position (`position`): on a NOTIFY,
//! in one snapshot, every committed change after its cursor, in commit order
//! — so a missed NOTIFY, a restart or a client resuming a position from
//! another node loses nothing and repeats nothing. It matches the changes
//! against its channels' bindings and filters, and decides who may see them:
//! for the owner policy most apps use (`owner = auth.uid()`), the server
//! itself from each change's record (`policy`); otherwise in one round trip
//! per table for a whole batch of changes: one transaction in which, for each group of subscribers with
//! identical role and claims, the server switches to that role and claims and
//! runs the table's prepared lookup of the batch's rows, so RLS applies as for
//! `/rest/v1` (Supabase's `apply_rls` loops over subscribers the same way, one
//! change at a time). Changes that queue up while a batch is checked form the
//! next batch, so delivery keeps up with the insert rate. Many groups are
//! split over a few connections checked side by side (one round trip of wall
//! time, on several cores). DELETE, and any change of a table without RLS,
//! checks only the role's SELECT privilege, as on Supabase.

use super::frame::{self, Frame, Vsn};
use super::policy::{self, Inline, Owners, Uid};
use super::position::{Position, Resume};
use deadpool_postgres::Pool;
use rustc_hash::{FxHashMap, FxHashSet};
use serde_json::value::RawValue;
use serde_json::{json, Value};
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_postgres::types::ToSql;
use tokio_util::sync::CancellationToken;
use wasmbase_host_api::data::parse::{parse_list, split_top, unquote};
use wasmbase_host_api::data::plan::sql::ident;
use wasmbase_host_api::db::{Acting, PoolKind, Tx, SET_ROLE_AND_CLAIMS};
use wasmbase_host_api::Principal;

/// NOTIFY channel of the commit trigger (payload: the transaction id).
pub const CHANNEL: &str = "wasmbase_realtime_changes";

/// Which operations a binding wants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// `*`.
    All,
    /// `INSERT`.
    Insert,
    /// `UPDATE`.
    Update,
    /// `DELETE`.
    Delete,
}

impl Event {
    fn matches(self, kind: &str) -> bool {
        matches!(
            (self, kind),
            (Event::All, _)
                | (Event::Insert, "INSERT")
                | (Event::Update, "UPDATE")
                | (Event::Delete, "DELETE")
        )
    }
}

/// One condition of a binding's `filter` (`column=[not.]op.value`).
#[derive(Debug, Clone, PartialEq)]
pub struct Filter {
    column: String,
    negate: bool,
    op: String,
    values: Vec<String>,
    /// `match`/`imatch`'s pattern, compiled once at join.
    pattern: Option<Pattern>,
}

/// A regular expression of a `match`/`imatch` filter. `regex-lite` never
/// backtracks: its time is the text's length times the compiled program's
/// size, and both are capped ([`MAX_PROGRAM`], [`MAX_MATCHED`]), as is the
/// number of patterns a channel may hold ([`MAX_PATTERNS`]), so no join can
/// stall the delivery task or hold much memory. PostgreSQL's own dialect
/// (`~`) agrees with it on the common syntax (classes, anchors, alternation,
/// repetition).
#[derive(Debug, Clone)]
pub struct Pattern(regex_lite::Regex);

impl PartialEq for Pattern {
    fn eq(&self, other: &Pattern) -> bool {
        self.0.as_str() == other.0.as_str()
    }
}

/// Longest `match`/`imatch` pattern.
const MAX_PATTERN: usize = 256;

/// Largest compiled pattern, in bytes (a counted repetition such as
/// `(a{1000}){300}` is short but compiles big: refused).
const MAX_PROGRAM: usize = 8 * 1024;

/// Longest text a pattern is run on; a longer value never matches.
const MAX_MATCHED: usize = 64 * 1024;

/// Most `match`/`imatch` filters one channel's bindings may hold.
pub const MAX_PATTERNS: usize = 10;

/// Most conditions one binding's filter may have.
const MAX_FILTERS: usize = 16;

/// One `postgres_changes` binding of a join.
#[derive(Debug, Clone, PartialEq)]
pub struct Binding {
    /// The id the join reply gave it (sent back in each event's `ids`).
    pub id: u64,
    event: Event,
    /// Schema.
    pub schema: String,
    /// Table, or `*` for every published table of the schema.
    pub table: String,
    /// ANDed conditions.
    pub filters: Vec<Filter>,
}

const OPS: &[&str] = &[
    "eq",
    "neq",
    "lt",
    "lte",
    "gt",
    "gte",
    "in",
    "like",
    "ilike",
    "is",
    "isdistinct",
    "match",
    "imatch",
];

fn parse_filter(f: &str) -> Option<Vec<Filter>> {
    let f = f.trim();
    if f.is_empty() {
        return Some(Vec::new());
    }
    let mut out = Vec::new();
    let segments = split_top(f).ok()?;
    if segments.len() > MAX_FILTERS {
        return None;
    }
    for seg in segments {
        let (column, rest) = seg.split_once('=')?;
        let (negate, rest) = match rest.strip_prefix("not.") {
            Some(r) => (true, r),
            None => (false, rest),
        };
        let (op, value) = rest.split_once('.')?;
        if column.trim().is_empty() || !OPS.contains(&op) || value.len() > MAX_FILTER_VALUE {
            return None;
        }
        let values = if op == "in" {
            let inner = value.strip_prefix('(')?.strip_suffix(')')?;
            parse_list(inner).ok().filter(|v| !v.is_empty())?
        } else {
            vec![unquote(value)]
        };
        let pattern = match op {
            "match" | "imatch" if values[0].len() > MAX_PATTERN => return None,
            "match" | "imatch" => Some(Pattern(
                regex_lite::RegexBuilder::new(&values[0])
                    .case_insensitive(op == "imatch")
                    .size_limit(MAX_PROGRAM)
                    .nest_limit(32)
                    .build()
                    .ok()?,
            )),
            _ => None,
        };
        out.push(Filter {
            column: column.trim().to_string(),
            negate,
            op: op.to_string(),
            values,
            pattern,
        });
    }
    Some(out)
}

/// A binding from the join's `config.postgres_changes[i]`, or Supabase's
/// words for why not.
pub fn parse_binding(v: &Value, id: u64) -> Result<Binding, String> {
    let event = match v["event"].as_str().map(str::to_ascii_uppercase).as_deref() {
        Some("INSERT") => Event::Insert,
        Some("UPDATE") => Event::Update,
        Some("DELETE") => Event::Delete,
        _ => Event::All,
    };
    let schema = v["schema"].as_str().filter(|s| !s.is_empty());
    let table = v["table"].as_str().filter(|s| !s.is_empty());
    let (schema, table) = match (schema, table) {
        (Some(s), Some(t)) => (s.to_string(), t.to_string()),
        (Some(s), None) => (s.to_string(), "*".to_string()),
        (None, Some(t)) => ("public".to_string(), t.to_string()),
        (None, None) => {
            return Err(format!(
                "No subscription params provided. Please provide at least a `schema` or `table` to subscribe to: {v}"
            ))
        }
    };
    let raw = v["filter"].as_str().unwrap_or("");
    let filters = parse_filter(raw)
        .ok_or_else(|| format!("Error parsing `filter` params: [{}]", json!(raw)))?;
    if !filters.is_empty() && table == "*" {
        return Err("Filters are not supported for wildcard subscriptions. Provide an explicit schema and table name.".into());
    }
    Ok(Binding {
        id,
        event,
        schema,
        table,
        filters,
    })
}

/// SQL LIKE (`%`, `_`) on characters.
fn like(s: &[char], p: &[char]) -> bool {
    wasmbase_host_api::wildcard::matches(s, p, '%', Some('_'))
}

/// Longest filter value (a filter is a short condition, not a document).
const MAX_FILTER_VALUE: usize = 1024;

impl Filter {
    /// Whether `row` passes, comparing as the JSON value's type (numbers as
    /// numbers, booleans, text). A NULL (or missing) value passes only `is.null`.
    fn passes(&self, row: &Value) -> bool {
        let v = row.get(&self.column).unwrap_or(&Value::Null);
        let want = &self.values[0];
        if self.op == "is" {
            let r = match want.as_str() {
                "null" => v.is_null(),
                "true" => v == &Value::Bool(true),
                "false" => v == &Value::Bool(false),
                "unknown" => v.is_null(),
                _ => false,
            };
            return r != self.negate;
        }
        let cmp = |want: &str| -> Option<std::cmp::Ordering> {
            match v {
                Value::Number(n) => n.as_f64()?.partial_cmp(&want.parse::<f64>().ok()?),
                Value::Bool(b) => Some(b.cmp(&want.parse::<bool>().ok()?)),
                Value::String(s) => Some(s.as_str().cmp(want)),
                Value::Null => None,
                other => Some(other.to_string().as_str().cmp(want)),
            }
        };
        use std::cmp::Ordering::*;
        let r = match self.op.as_str() {
            "isdistinct" => {
                if v.is_null() {
                    true
                } else {
                    cmp(want) != Some(Equal)
                }
            }
            _ if v.is_null() => return false,
            "eq" => cmp(want) == Some(Equal),
            "neq" => matches!(cmp(want), Some(Less | Greater)),
            "lt" => cmp(want) == Some(Less),
            "lte" => matches!(cmp(want), Some(Less | Equal)),
            "gt" => cmp(want) == Some(Greater),
            "gte" => matches!(cmp(want), Some(Greater | Equal)),
            "in" => self.values.iter().any(|w| cmp(w) == Some(Equal)),
            "like" | "ilike" => {
                let s = match v {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                let (s, p) = if self.op == "ilike" {
                    (s.to_lowercase(), want.to_lowercase())
                } else {
                    (s, want.clone())
                };
                like(
                    &s.chars().collect::<Vec<_>>(),
                    &p.chars().collect::<Vec<_>>(),
                )
            }
            "match" | "imatch" => {
                let s = match v {
                    Value::String(s) => std::borrow::Cow::Borrowed(s.as_str()),
                    other => std::borrow::Cow::Owned(other.to_string()),
                };
                s.len() <= MAX_MATCHED && self.pattern.as_ref().is_some_and(|p| p.0.is_match(&s))
            }
            _ => false,
        };
        r != self.negate
    }

    /// Whether it is a `match`/`imatch` (counted against [`MAX_PATTERNS`]).
    pub fn is_pattern(&self) -> bool {
        self.pattern.is_some()
    }

    /// The column it reads (checked against the table at join).
    pub fn column(&self) -> &str {
        &self.column
    }
}

/// A channel's postgres_changes subscription on this node.
#[derive(Clone)]
pub struct PgSub {
    /// The channel (unique on the node).
    pub channel: u64,
    /// Its joined topic (`realtime:...`).
    pub topic: String,
    /// The socket's protocol version.
    pub vsn: Vsn,
    /// The socket's queue and kill switch.
    pub tx: mpsc::Sender<Frame>,
    /// Cancelled when the socket must close.
    pub kill: CancellationToken,
    /// The bindings.
    pub bindings: Vec<Binding>,
    /// Who the channel acts as (updated by `access_token`).
    pub principal: Principal,
    /// The join's ref (system messages carry it).
    pub join_ref: Option<String>,
    /// Set when the channel left (a round under way skips it).
    pub gone: Arc<std::sync::atomic::AtomicBool>,
    /// [`digest`] of `principal`: subscribers are grouped by it on every
    /// page without hashing their claims again.
    pub digest: u64,
}

/// A principal's role and claims, hashed (subscribers with equal digests
/// are compared in full before they share a group).
pub fn digest(p: &Principal) -> u64 {
    let mut h = rustc_hash::FxHasher::default();
    p.role.as_str().hash(&mut h);
    p.claims_json.hash(&mut h);
    h.finish()
}

impl PgSub {
    /// A postgres_changes system message, with the position the client can
    /// resume from.
    fn system(&self, status: &str, message: &str, position: Option<&Position>) {
        if self.gone.load(Ordering::Relaxed) {
            return;
        }
        let mut payload = frame::system_payload(&self.topic, "postgres_changes", status, message);
        if let Some(p) = position {
            payload["position"] = json!(p.to_string());
        }
        let text = frame::encode_text(
            self.vsn,
            self.join_ref.as_deref(),
            None,
            &self.topic,
            "system",
            &payload,
        );
        if let Err(mpsc::error::TrySendError::Full(_)) = self.tx.try_send(Frame::Text(text.into()))
        {
            self.kill.cancel();
        }
    }
}

/// A table as change events describe it.
#[derive(Debug, Clone)]
pub struct Rel {
    schema: String,
    table: String,
    columns: Vec<(String, String)>,
    pk: Vec<String>,
    /// The key columns' types (`pg_catalog.<name>` from the catalog, with no
    /// length: `char(2)` casts as `bpchar`, never as `char(1)`) when every
    /// one is a built-in scalar a JSON value's text casts back to: the lookup
    /// then takes one typed array per key column. `None` (an array, composite
    /// or user-defined key type, which `authenticator` might not see by
    /// name) looks the rows up through `jsonb_populate_record` instead.
    pk_types: Option<Vec<String>>,
    replica_full: bool,
    rls: bool,
}

impl Rel {
    /// Whether the table has this column.
    pub fn has_column(&self, c: &str) -> bool {
        self.columns.iter().any(|(n, _)| n == c)
    }
}

const REL_SQL: &str =
    "SELECT c.oid, n.nspname::text, c.relname::text, c.relreplident = 'f', c.relrowsecurity, \
   coalesce((SELECT json_agg(json_build_array(a.attname, t.typname) ORDER BY a.attnum) \
      FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid \
      WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped), '[]'), \
   coalesce((SELECT json_agg(json_build_array(a.attname, \
        'pg_catalog.' || quote_ident(t.typname), \
        t.typnamespace = 'pg_catalog'::regnamespace AND t.typcategory NOT IN ('A', 'C') \
          AND t.typtype <> 'c') ORDER BY a.attnum) \
      FROM pg_index x \
      JOIN pg_attribute a ON a.attrelid = x.indrelid AND a.attnum = ANY (x.indkey) \
      JOIN pg_type t ON t.oid = a.atttypid \
      WHERE x.indrelid = c.oid AND x.indisprimary), '[]') \
 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace";

fn rel_of(r: &tokio_postgres::Row) -> (u32, Rel) {
    let cols: Value = r.get(5);
    let pk: Value = r.get(6);
    let key = pk.as_array().cloned().unwrap_or_default();
    (
        r.get(0),
        Rel {
            schema: r.get(1),
            table: r.get(2),
            replica_full: r.get(3),
            rls: r.get(4),
            columns: cols
                .as_array()
                .map(|a| {
                    a.iter()
                        .map(|c| {
                            (
                                c[0].as_str().unwrap_or_default().to_string(),
                                c[1].as_str().unwrap_or_default().to_string(),
                            )
                        })
                        .collect()
                })
                .unwrap_or_default(),
            pk: key
                .iter()
                .map(|c| c[0].as_str().unwrap_or_default().to_string())
                .collect(),
            pk_types: key.iter().all(|c| c[2] == true).then(|| {
                key.iter()
                    .map(|c| c[1].as_str().unwrap_or_default().to_string())
                    .collect()
            }),
        },
    )
}

/// The published table `schema.table`, if it is in `supabase_realtime`.
pub async fn published(system: &Pool, schema: &str, table: &str) -> anyhow::Result<Option<Rel>> {
    let c = system.get().await?;
    let row = c
        .query_opt(
            &format!(
                "{REL_SQL} WHERE n.nspname = $1 AND c.relname = $2 AND EXISTS (\
                   SELECT 1 FROM pg_publication_tables p WHERE p.pubname = 'supabase_realtime' \
                   AND p.schemaname = n.nspname AND p.tablename = c.relname)"
            ),
            &[&schema, &table],
        )
        .await?;
    Ok(row.map(|r| rel_of(&r).1))
}

/// This node's postgres_changes: subscriptions, the table cache, and the
/// wake-up of the delivery task.
pub struct Changes {
    /// Subscriptions being delivered to. Shared with each round as it
    /// started (a round takes the `Arc`, not a copy of 1,000 entries; a
    /// change while a round holds it copies the list once).
    subs: parking_lot::RwLock<Arc<Vec<Arc<PgSub>>>>,
    /// Subscriptions the delivery task takes on at its next round, with the
    /// position a client asked to catch up from. Lock order: `pending`, then
    /// `subs`.
    pending: parking_lot::Mutex<Vec<(Arc<PgSub>, Option<Resume>)>>,
    rels: parking_lot::Mutex<FxHashMap<u32, Rel>>,
    /// Whether a role may SELECT a table, by (role, table oid).
    privs: parking_lot::Mutex<FxHashMap<(String, u32), bool>>,
    /// How a role's policies on a table decide when the server evaluates
    /// them itself (`policy`), by (role, table oid); `None`: PostgreSQL
    /// decides.
    policies: parking_lot::Mutex<FxHashMap<(String, u32), Option<Inline>>>,
    /// `pg_policy`'s count and newest row version when last read: a round
    /// that finds them changed forgets `policies` (a policy changed where
    /// no DDL notification told this node yet).
    policy_mark: parking_lot::Mutex<String>,
    /// Set by a NOTIFY, a join that catches up, or a listener reconnect.
    wake: tokio::sync::Notify,
    /// Changes are kept (and can be caught up on) this long.
    window: Duration,
    /// RLS round trips made (`wasmbase_realtime_rls_queries_total`).
    pub rls_queries: AtomicU64,
    /// Visibility checks of a batch the server decided itself, for every
    /// group whose policies it recognizes (`wasmbase_realtime_rls_inline_total`).
    pub rls_inline: AtomicU64,
    /// Change events queued to sockets.
    pub events_out: AtomicU64,
    /// Milliseconds from the last delivered change's commit to its delivery
    /// (the fan-out lag).
    pub lag_ms: AtomicU64,
}

/// Most postgres_changes bindings one join may have.
pub const MAX_BINDINGS: usize = 100;

/// The delivery task's own state: what it has read, and each channel's.
struct Cursor {
    /// Every transaction in it was delivered to every live channel (none
    /// while nobody listens).
    live: Option<Position>,
    /// Per channel.
    chans: FxHashMap<u64, ChanState>,
    /// The subscription list `chans` was last trimmed to.
    subs: Option<Arc<Vec<Arc<PgSub>>>>,
}

struct ChanState {
    /// While its client catches up: what it has (its own read cursor).
    catching: Option<Resume>,
    /// A live channel whose client already had transactions past `live` (its
    /// position came from a node that had read further): not sent again.
    also_has: Option<Position>,
    /// When it was last told a position.
    told: std::time::Instant,
}

/// One page of a read: changes in commit order, each with the position
/// after it.
struct Page {
    changes: Vec<Change>,
    /// The read position after the page.
    end: Position,
    /// Transactions read.
    txns: usize,
}

impl Changes {
    /// The registry; changes are kept for `window` (`realtime.catchup_window_secs`).
    pub fn new(window: Duration) -> Changes {
        Changes {
            subs: Default::default(),
            pending: Default::default(),
            rels: Default::default(),
            privs: Default::default(),
            policies: Default::default(),
            policy_mark: Default::default(),
            wake: tokio::sync::Notify::new(),
            window,
            rls_queries: AtomicU64::new(0),
            rls_inline: AtomicU64::new(0),
            events_out: AtomicU64::new(0),
            lag_ms: AtomicU64::new(0),
        }
    }

    /// Adds a channel's subscription, delivered from the next round on
    /// (after the changes since `from`, when a client resumes a position).
    pub fn subscribe(&self, s: PgSub, from: Option<Resume>) {
        self.pending.lock().push((Arc::new(s), from));
        self.wake.notify_one();
    }

    /// Removes a channel's subscription (a round under way sends it nothing
    /// more).
    pub fn unsubscribe(&self, channel: u64) {
        let mut pending = self.pending.lock();
        pending.retain(|(s, _)| s.channel != channel);
        Arc::make_mut(&mut self.subs.write()).retain(|s| {
            if s.channel == channel {
                s.gone.store(true, Ordering::Relaxed);
            }
            s.channel != channel
        });
    }

    /// A channel's new principal (its `access_token` changed).
    pub fn set_principal(&self, channel: u64, p: &Principal) {
        let renew = |s: &mut Arc<PgSub>| {
            if s.channel == channel {
                *s = Arc::new(PgSub {
                    principal: p.clone(),
                    digest: digest(p),
                    ..PgSub::clone(s)
                });
            }
        };
        let mut pending = self.pending.lock();
        pending.iter_mut().for_each(|(s, _)| renew(s));
        Arc::make_mut(&mut self.subs.write())
            .iter_mut()
            .for_each(renew);
    }

    /// A NOTIFY from the commit trigger (its payload, a transaction id, is
    /// not needed: nodes read by position, so anyone's NOTIFY can only cause
    /// a read).
    pub fn on_notify(&self, _xid: &str) {
        if !self.subs.read().is_empty() {
            self.wake.notify_one();
        }
    }

    /// Reads again (the listener reconnected: a NOTIFY may have been missed).
    pub fn kick(&self) {
        self.wake.notify_one();
    }

    /// How long changes are kept.
    pub fn window(&self) -> Duration {
        self.window
    }

    /// Clears the table cache (after DDL).
    pub fn forget_tables(&self) {
        self.rels.lock().clear();
        self.privs.lock().clear();
        self.policies.lock().clear();
    }

    async fn rel(&self, system: &Pool, oid: u32) -> anyhow::Result<Option<Rel>> {
        if let Some(r) = self.rels.lock().get(&oid) {
            return Ok(Some(r.clone()));
        }
        let c = system.get().await?;
        let row = c
            .query_opt(&format!("{REL_SQL} WHERE c.oid = $1"), &[&oid])
            .await?;
        let Some(row) = row else { return Ok(None) };
        let (oid, rel) = rel_of(&row);
        self.rels.lock().insert(oid, rel.clone());
        Ok(Some(rel))
    }

    /// Delivers committed changes until shutdown: a round whenever woken,
    /// and every [`TICK`] while anyone listens (a safety net: a round reads
    /// by position, so it finds whatever a lost NOTIFY announced).
    pub async fn run(self: Arc<Self>, system: Pool, pool: Pool, stop: CancellationToken) {
        let mut cursor = Cursor {
            live: None,
            chans: FxHashMap::default(),
            subs: None,
        };
        let mut last_start = tokio::time::Instant::now();
        loop {
            tokio::select! {
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(TICK) => {
                    if self.subs.read().is_empty() {
                        continue;
                    }
                }
                _ = stop.cancelled() => return,
            }
            // Rounds start at most every ROUND_GAP: under load the commits
            // of that moment share one round instead of each paying its own.
            tokio::select! {
                _ = tokio::time::sleep_until(last_start + ROUND_GAP) => {}
                _ = stop.cancelled() => return,
            }
            last_start = tokio::time::Instant::now();
            let again = match self.round(&mut cursor, &system, &pool).await {
                Ok(again) => again,
                Err(e) => {
                    tracing::warn!(error = %format!("{e:#}"), "realtime: delivering changes");
                    // The next round resumes after the last page delivered; a
                    // database outage is not retried in a tight loop.
                    Some(Duration::from_millis(500))
                }
            };
            if let Some(after) = again {
                tokio::select! {
                    _ = tokio::time::sleep(after) => self.wake.notify_one(),
                    _ = stop.cancelled() => return,
                }
            }
        }
    }

    /// One round, in one snapshot: takes on the new subscriptions; delivers
    /// every committed change after `live` to the live channels, in commit
    /// order, [`BATCH`] transactions a page; then lets channels that resume
    /// a position catch up from their own cursors, at most
    /// [`CATCHUP_BUDGET`] transactions a round, and no faster than each
    /// client reads, so no client's catch-up holds back the live ones for
    /// long. Returns when the next round is due if catch-up is not done.
    async fn round(
        &self,
        cur: &mut Cursor,
        system: &Pool,
        pool: &Pool,
    ) -> anyhow::Result<Option<Duration>> {
        let mut c = system.get().await?;
        let tx = c
            .build_transaction()
            .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await?;
        let row = tx
            .query_one(
                "SELECT pg_current_snapshot()::text, \
                   (SELECT mark::text FROM wasmbase.realtime_pruned), \
                   (SELECT count(*) || ':' || coalesce(max(xmin::text::int8), 0) FROM pg_policy)",
                &[],
            )
            .await?;
        let bad = || anyhow::anyhow!("realtime: unreadable snapshot");
        let now = Position::parse_trusted(row.try_get(0)?).ok_or_else(bad)?;
        // No mark row (deleted by hand): nothing counts as pruned.
        let mark = row
            .try_get::<_, Option<&str>>(1)?
            .and_then(Position::parse_trusted)
            .unwrap_or_else(|| Position::parse_trusted("1:1:").expect("a valid position"));
        let policy_mark: String = row.try_get(2)?;
        {
            let mut m = self.policy_mark.lock();
            if *m != policy_mark {
                self.policies.lock().clear();
                *m = policy_mark;
            }
        }
        // Taken on after the snapshot: a channel that joins later gets every
        // change committed after it from the next round.
        let (newly, subs) = {
            let mut pending = self.pending.lock();
            let mut subs = self.subs.write();
            if subs.is_empty() {
                // Nobody was listening: nothing before now is owed to anyone.
                cur.live = None;
            }
            let newly: Vec<_> = pending.drain(..).collect();
            if !newly.is_empty() {
                Arc::make_mut(&mut subs).extend(newly.iter().map(|(s, _)| s.clone()));
            }
            (newly, Arc::clone(&subs))
        };
        // Channels gone since the last round are forgotten (the list is the
        // same one when nobody joined or left: nothing to forget).
        if !cur.subs.as_ref().is_some_and(|l| Arc::ptr_eq(l, &subs)) {
            let ids: FxHashSet<u64> = subs.iter().map(|s| s.channel).collect();
            cur.chans.retain(|ch, _| ids.contains(ch));
            cur.subs = Some(Arc::clone(&subs));
        }
        let mut live = cur.live.clone().unwrap_or_else(|| now.clone());
        if !live.covers(&mark) {
            // This node fell behind the pruning: its live channels are told,
            // and go on from now.
            for s in subs.iter() {
                // Not the new ones (nothing was owed to them yet), nor those
                // catching up (they check their own position).
                let live_one = cur
                    .chans
                    .get(&s.channel)
                    .is_some_and(|c| c.catching.is_none());
                if live_one {
                    s.system("error", &gap_message(self.window), Some(&now));
                }
            }
            live = now.clone();
        }
        for (s, from) in newly {
            let fresh = |s: &PgSub| {
                s.system("ok", "Subscribed to PostgreSQL", Some(&live));
                None
            };
            let catching = match from {
                None => fresh(&s),
                Some(r) if r.position.xmax() > now.xmax().saturating_add(FUTURE) => {
                    s.system(
                        "error",
                        "InvalidPosition: not a position of this database; delivering from now on",
                        Some(&live),
                    );
                    fresh(&s)
                }
                Some(r) if !r.position.covers(&mark) => {
                    s.system("error", &gap_message(self.window), Some(&live));
                    fresh(&s)
                }
                Some(r) => Some(r),
            };
            cur.chans.insert(
                s.channel,
                ChanState {
                    catching,
                    also_has: None,
                    told: std::time::Instant::now(),
                },
            );
        }
        let state = |s: &PgSub| cur.chans.get(&s.channel);
        // Live channels: everything after `live`.
        let live_subs: Vec<Arc<PgSub>> = subs
            .iter()
            .filter(|s| state(s).is_some_and(|c| c.catching.is_none()))
            .cloned()
            .collect();
        let also: Vec<Option<Position>> = live_subs
            .iter()
            .map(|s| state(s).and_then(|c| c.also_has.clone()))
            .collect();
        let catching_any = cur.chans.values().any(|c| c.catching.is_some());
        let mut tx = Some(tx);
        if !live_subs.is_empty() {
            while let Some(open) = tx.as_ref() {
                let page = self.read_page(open, system, &live, None, BATCH).await?;
                let deliver = self.deliver(pool, system, &page.changes, &live_subs, &also, true);
                let got = match tx.take() {
                    // The last page, and no catch-up: the snapshot's
                    // transaction ends while the page is delivered.
                    Some(open) if page.txns < BATCH && !catching_any => {
                        let (_, got) = futures::join!(open.commit(), deliver);
                        got?
                    }
                    open => {
                        tx = open;
                        deliver.await?
                    }
                };
                self.told(cur, &live_subs, &got);
                live = page.end;
                cur.live = Some(live.clone());
                if page.txns < BATCH {
                    break;
                }
            }
        }
        // Everything committed in `now` is read.
        cur.live = Some(now.clone());
        // Catching channels, from their own cursors, within the budget.
        let mut budget = CATCHUP_BUDGET;
        let mut again = None;
        let waited = std::time::Instant::now();
        for s in subs.iter() {
            let Some(mut resume) = cur.chans.get(&s.channel).and_then(|c| c.catching.clone())
            else {
                continue;
            };
            let Some(tx) = tx.as_ref() else { break };
            if s.gone.load(Ordering::Relaxed) {
                continue;
            }
            if !resume.position.covers(&mark) {
                // Pruning overtook this catch-up: told, and live from now.
                s.system("error", &gap_message(self.window), Some(&now));
                s.system("ok", "Subscribed to PostgreSQL", Some(&now));
                if let Some(st) = cur.chans.get_mut(&s.channel) {
                    st.catching = None;
                    st.told = std::time::Instant::now();
                }
                continue;
            }
            let mut done = false;
            while budget > 0 {
                // No more than the client's queue takes: a catch-up waits
                // for a slow reader rather than overflowing it.
                let half = s.tx.max_capacity() / 2;
                if s.tx.capacity() < half {
                    // Wait for the client to read, a little (the live
                    // channels wait meanwhile), then give them a round.
                    let left = PACE.saturating_sub(waited.elapsed());
                    match tokio::time::timeout(left, s.tx.reserve_many(half)).await {
                        Ok(Ok(permits)) => drop(permits),
                        Ok(Err(_)) => break, // the socket is gone
                        Err(_) => {
                            again = Some(Duration::ZERO);
                            break;
                        }
                    }
                }
                // A quarter of the queue stays free for the client's other
                // channels and system messages.
                let room = s.tx.capacity().saturating_sub(s.tx.max_capacity() / 4);
                let limit = budget.min(BATCH).min(room);
                let page = self
                    .read_page(tx, system, &resume.position, resume.partial, limit)
                    .await?;
                // A page with more changes than that (a large transaction)
                // is cut: the rest follows from the last one sent's position.
                let max = room.max(1);
                let cut = page.changes.len() > max;
                let sent = &page.changes[..page.changes.len().min(max)];
                self.deliver(pool, system, sent, std::slice::from_ref(s), &[None], false)
                    .await?;
                // Charged what was sent (a cut page's tail is read again).
                let mut charged: Vec<u64> = sent.iter().map(|c| c.xid).collect();
                charged.dedup();
                budget -= if cut { charged.len().max(1) } else { page.txns };
                resume = match sent.last().filter(|_| cut) {
                    Some(last) => last.after.resume(),
                    None => Resume {
                        // A partial transaction not reached yet stays partial.
                        partial: resume.partial.filter(|(x, _)| !page.end.contains(*x)),
                        position: page.end,
                    },
                };
                // Kept as it goes: a later page's failure repeats nothing.
                if let Some(st) = cur.chans.get_mut(&s.channel) {
                    st.catching = Some(resume.clone());
                }
                if !cut && page.txns < limit {
                    done = true;
                    break;
                }
            }
            let Some(st) = cur.chans.get_mut(&s.channel) else {
                continue;
            };
            if done {
                // It has what `now` holds, and what its own position held.
                let has = resume.position.union(&now);
                st.also_has = (!now.covers(&resume.position)).then_some(resume.position);
                st.catching = None;
                st.told = std::time::Instant::now();
                s.system("ok", "Subscribed to PostgreSQL", Some(&has));
            } else if budget == 0 {
                again = Some(Duration::ZERO);
            }
        }
        // Read-only: nothing to lose if the commit fails.
        if let Some(open) = tx {
            let _ = open.commit().await;
        }
        // A quiet channel's position is refreshed, so it can resume after
        // changes elsewhere were pruned (one clock read for them all).
        let round_end = std::time::Instant::now();
        for s in subs.iter() {
            let Some(st) = cur.chans.get_mut(&s.channel) else {
                continue;
            };
            if st.also_has.as_ref().is_some_and(|a| now.covers(a)) {
                st.also_has = None;
            }
            if st.catching.is_none() && round_end.duration_since(st.told) > self.window / 6 {
                let has = match &st.also_has {
                    Some(a) => a.union(&now),
                    None => now.clone(),
                };
                s.system("ok", "Position", Some(&has));
                st.told = round_end;
            }
        }
        Ok(again)
    }

    /// Notes which channels were just sent a position.
    fn told(&self, cur: &mut Cursor, subs: &[Arc<PgSub>], got: &[bool]) {
        let now = std::time::Instant::now();
        for (s, _) in subs.iter().zip(got).filter(|(_, g)| **g) {
            if let Some(st) = cur.chans.get_mut(&s.channel) {
                st.told = now;
            }
        }
    }

    /// The committed changes of up to `limit` transactions after `after`, in
    /// commit order (changes of transaction `skip.0` up to id `skip.1` left
    /// out), each with the position after it: inside a transaction,
    /// `<position before it>@<xid>:<change id>`; at its last change, the
    /// position after it.
    async fn read_page(
        &self,
        tx: &deadpool_postgres::Transaction<'_>,
        system: &Pool,
        after: &Position,
        skip: Option<(u64, i64)>,
        limit: usize,
    ) -> anyhow::Result<Page> {
        let xmax = after.xmax().to_string();
        let xip = after.xip_text();
        let limit = limit as i64;
        let rows = match skip {
            None => {
                let statement = tx.prepare_cached(PAGE).await?;
                tx.query(&statement, &[&xmax, &xip, &limit]).await?
            }
            Some((x, id)) => {
                let statement = tx.prepare_cached(PAGE_AFTER_PART).await?;
                tx.query(&statement, &[&xmax, &xip, &limit, &x.to_string(), &id])
                    .await?
            }
        };
        let mut end = after.clone();
        let mut txns = 0;
        let mut changes: Vec<Change> = Vec::with_capacity(rows.len());
        let mut i = 0;
        while i < rows.len() {
            // One transaction's rows.
            let xid: &str = rows[i].get(0);
            let mut j = i + 1;
            while j < rows.len() && rows[j].get::<_, &str>(0) == xid {
                j += 1;
            }
            txns += 1;
            let x: u64 = xid.parse()?;
            let snap = Position::parse_trusted(rows[i].get(1))
                .ok_or_else(|| anyhow::anyhow!("realtime: unreadable snapshot"))?;
            let before = Arc::new(end.clone());
            end = end.union(&snap).with(x);
            let after_x = Arc::new(end.clone());
            let first = changes.len();
            for r in &rows[i..j] {
                let (Some(id), Some(oid)) =
                    (r.get::<_, Option<i64>>(3), r.get::<_, Option<u32>>(4))
                else {
                    continue;
                };
                let Some(rel) = self.rel(system, oid).await? else {
                    continue;
                };
                changes.push(Change {
                    oid,
                    rel,
                    xid: x,
                    after: After {
                        position: before.clone(),
                        partial: Some((x, id)),
                    },
                    kind: r.get(5),
                    record: r.get(6),
                    old: r.get(7),
                    at: r.get(2),
                });
            }
            if let Some(last) = changes[first..].last_mut() {
                last.after = After {
                    position: after_x.clone(),
                    partial: None,
                };
            }
            i = j;
        }
        Ok(Page { changes, end, txns })
    }

    /// Delivers one page of changes (in commit order) to `subs`, each event
    /// with its position as the message's `ref` (realtime-js hands it to the
    /// callback); a change in a channel's `also` is not sent again. Who may
    /// see a change is decided per group of subscribers with identical role
    /// and claims (`visible`), so a change costs its own subscribers' work,
    /// not every channel's. Returns which channels were sent something.
    async fn deliver(
        &self,
        pool: &Pool,
        system: &Pool,
        changes: &[Change],
        subs: &[Arc<PgSub>],
        also: &[Option<Position>],
        live: bool,
    ) -> anyhow::Result<Vec<bool>> {
        let mut got = vec![false; subs.len()];
        if changes.is_empty() {
            return Ok(got);
        }
        let groups = Groups::of(subs);
        // The groups that may see each change, one table at a time.
        let mut sees: Vec<Vec<usize>> = vec![Vec::new(); changes.len()];
        let mut tables: Vec<u32> = changes.iter().map(|c| c.oid).collect();
        tables.sort_unstable();
        tables.dedup();
        for oid in tables {
            let idx: Vec<usize> = (0..changes.len())
                .filter(|&i| changes[i].oid == oid)
                .collect();
            let page = TablePage {
                changes,
                idx: &idx,
                subs,
                also,
                groups: &groups,
            };
            self.visible(system, pool, &page, &mut sees).await?;
        }
        // Delivery in commit order.
        for (i, c) in changes.iter().enumerate() {
            // Serialized once per change; each subscriber's frame adds its
            // topic and binding ids around it.
            let mut data: Option<Box<RawValue>> = None;
            let mut position: Option<String> = None;
            for &g in &sees[i] {
                for &s in &groups.members[g] {
                    let sub = &subs[s];
                    if sub.gone.load(Ordering::Relaxed)
                        || also[s].as_ref().is_some_and(|a| a.contains(c.xid))
                    {
                        continue;
                    }
                    let ids: Vec<u64> = sub
                        .bindings
                        .iter()
                        .filter(|b| c.matches(b))
                        .map(|b| b.id)
                        .collect();
                    if ids.is_empty() {
                        continue;
                    }
                    let data = match &mut data {
                        Some(d) => d,
                        None => data.insert(serde_json::value::to_raw_value(&c.event())?),
                    };
                    let position = position.get_or_insert_with(|| c.after.text());
                    let text = frame::encode_text(
                        sub.vsn,
                        None,
                        Some(position),
                        &sub.topic,
                        "postgres_changes",
                        &ChangePayload { ids: &ids, data },
                    );
                    if let Err(mpsc::error::TrySendError::Full(_)) =
                        sub.tx.try_send(Frame::Text(text.into()))
                    {
                        sub.kill.cancel();
                    }
                    got[s] = true;
                    self.events_out.fetch_add(1, Ordering::Relaxed);
                }
            }
            if live && data.is_some() {
                let lag = c.at.elapsed().unwrap_or_default().as_millis() as u64;
                self.lag_ms.store(lag, Ordering::Relaxed);
            }
        }
        Ok(got)
    }

    /// Whether `role` may SELECT table `oid` (cached until the next DDL).
    async fn may_select(&self, system: &Pool, role: &str, oid: u32) -> anyhow::Result<bool> {
        if let Some(v) = self.privs.lock().get(&(role.to_string(), oid)) {
            return Ok(*v);
        }
        let c = system.get().await?;
        let v: bool = c
            .query_one(
                "SELECT has_table_privilege($1, $2::oid, 'SELECT')",
                &[&role, &oid],
            )
            .await?
            .get(0);
        self.privs.lock().insert((role.to_string(), oid), v);
        Ok(v)
    }

    /// How `role`'s policies on table `oid` decide, when the server can
    /// evaluate them itself (cached until the next DDL or policy change).
    async fn inline(&self, system: &Pool, role: &str, oid: u32) -> anyhow::Result<Option<Inline>> {
        if let Some(v) = self.policies.lock().get(&(role.to_string(), oid)) {
            return Ok(v.clone());
        }
        let v = policy::load(system, role, oid).await?;
        self.policies
            .lock()
            .insert((role.to_string(), oid), v.clone());
        Ok(v)
    }

    /// Adds to `sees` the groups that may see each change of one table's
    /// page. DELETEs, and every change of a table without RLS, need only the
    /// role's SELECT privilege, as on Supabase. Groups whose policies the
    /// server recognizes (`policy`) are decided here, each change's owner
    /// looked up among the groups by `sub`; the rest in one round trip for
    /// the whole page: one transaction that, for each such group, switches
    /// to its role and claims and runs the table's prepared lookup of the
    /// page's rows by primary key (RLS applies).
    async fn visible(
        &self,
        system: &Pool,
        pool: &Pool,
        page: &TablePage<'_>,
        sees: &mut [Vec<usize>],
    ) -> anyhow::Result<()> {
        let TablePage {
            changes,
            idx,
            subs,
            groups,
            ..
        } = *page;
        let (oid, rel) = (changes[idx[0]].oid, &changes[idx[0]].rel);
        // The changes whose rows RLS must pass, and the deletes.
        let (looked, deletes): (Vec<usize>, Vec<usize>) = idx
            .iter()
            .copied()
            .partition(|&i| changes[i].kind != "DELETE");
        let lookups = rel.rls && !rel.pk.is_empty() && !looked.is_empty();
        // Owner rules met, each with its groups by `auth.uid()`.
        let mut owners = Owners::default();
        let mut check = Vec::new();
        let mut inline = false;
        for (g, key) in groups.keys.iter().enumerate() {
            // Only groups with a binding on this table.
            let on_table = groups.members[g].iter().any(|&s| {
                subs[s]
                    .bindings
                    .iter()
                    .any(|b| b.schema == rel.schema && (b.table == "*" || b.table == rel.table))
            });
            if !on_table || !self.may_select(system, key.role, oid).await? {
                continue;
            }
            for &i in &deletes {
                sees[i].push(g);
            }
            if !rel.rls {
                looked.iter().for_each(|&i| sees[i].push(g));
                continue;
            }
            if !lookups {
                continue;
            }
            match (self.inline(system, key.role, oid).await?, key.uid) {
                (Some(Inline::All), _) => {
                    inline = true;
                    looked.iter().for_each(|&i| sees[i].push(g));
                }
                // `auth.uid()` is NULL: equal to no row's owner.
                (Some(Inline::Owner(_)), Some(Uid::Null)) => inline = true,
                (Some(Inline::Owner(cols)), Some(Uid::Is(uid))) => {
                    inline = true;
                    owners.add(cols, uid, g);
                }
                _ => check.push(g),
            }
        }
        for &i in &looked {
            owners.seen_by(changes[i].row(), &mut sees[i]);
        }
        if inline {
            self.rls_inline.fetch_add(1, Ordering::Relaxed);
        }
        // Asked of PostgreSQL: the groups that want one of the changes, for
        // the changes one of them wants.
        check.retain(|&g| looked.iter().any(|&i| page.wants(g, i)));
        let asked: Vec<usize> = looked
            .iter()
            .copied()
            .filter(|&i| check.iter().any(|&g| page.wants(g, i)))
            .collect();
        if check.is_empty() || asked.is_empty() {
            return Ok(());
        }
        self.rls_queries.fetch_add(1, Ordering::Relaxed);
        let lookup = Lookup::new(rel, asked.iter().map(|&i| changes[i].row()));
        let roles: Vec<&str> = check.iter().map(|&g| groups.keys[g].role).collect();
        let claims: Vec<&str> = check.iter().map(|&g| groups.keys[g].claims).collect();
        let all: Vec<usize> = (0..check.len()).collect();
        // Many groups are split over a few connections checked side by side
        // (PostgreSQL runs each on its own core): still one round trip of
        // wall time, in less of it.
        let parts = (check.len() / GROUPS_PER_PART).clamp(1, *PARALLEL);
        let chunk = check.len().div_ceil(parts);
        let checks = all
            .chunks(chunk)
            .map(|part| check_part(pool, &lookup, part, &roles, &claims));
        let parts = match futures::future::try_join_all(checks).await {
            Ok(parts) => parts,
            Err(e) => {
                // One group's policy may raise (or run past the timeout) for
                // its claims: each group alone, so only its own subscribers
                // miss these changes (logged), and the page is not retried
                // for ever. A database that is down fails every group: that
                // error is the page's, and it is read again later.
                tracing::warn!(error = %format!("{e:#}"), "realtime: a visibility check failed; checking each group alone");
                let mut parts = Vec::new();
                for &k in &all {
                    match check_part(pool, &lookup, &[k], &roles, &claims).await {
                        Ok(part) => parts.push(part),
                        // The statement failed (a SQLSTATE that is not the
                        // connection's or the server's state): this group's
                        // policy, raising or running past the timeout.
                        Err(e) if policy_error(&e) => {
                            tracing::warn!(error = %format!("{e:#}"), role = roles[k], "realtime: changes hidden from one group: its visibility check failed");
                        }
                        Err(e) => return Err(e),
                    }
                }
                parts
            }
        };
        for part in parts {
            for (k, ord) in part {
                sees[asked[ord - 1]].push(check[k]);
            }
        }
        Ok(())
    }
}

/// One table's changes of a page, and who they are delivered to.
#[derive(Clone, Copy)]
struct TablePage<'a> {
    changes: &'a [Change],
    /// The table's changes, by position in `changes`.
    idx: &'a [usize],
    subs: &'a [Arc<PgSub>],
    also: &'a [Option<Position>],
    groups: &'a Groups<'a>,
}

impl TablePage<'_> {
    /// Whether a subscriber of group `g` wants change `i` and has not had it.
    fn wants(&self, g: usize, i: usize) -> bool {
        let c = &self.changes[i];
        self.groups.members[g].iter().any(|&s| {
            let sub = &self.subs[s];
            !sub.gone.load(Ordering::Relaxed)
                && self.also[s].as_ref().is_none_or(|a| !a.contains(c.xid))
                && sub.bindings.iter().any(|b| c.matches(b))
        })
    }
}

/// A group's principal: its role and claims, and what `auth.uid()` reads
/// for them where the server can tell.
struct GroupKey<'a> {
    role: &'a str,
    claims: &'a str,
    uid: Option<Uid>,
}

/// Subscribers with identical role and claims, decided once per change.
struct Groups<'a> {
    keys: Vec<GroupKey<'a>>,
    /// Each group's subscribers, by position in the page's `subs`.
    members: Vec<Vec<usize>>,
}

impl<'a> Groups<'a> {
    /// Groups `subs` by their principal (its digest found at subscription,
    /// so a page hashes no claims).
    fn of(subs: &'a [Arc<PgSub>]) -> Groups<'a> {
        let mut keys: Vec<GroupKey<'a>> = Vec::new();
        let mut members: Vec<Vec<usize>> = Vec::new();
        let mut by_digest: FxHashMap<u64, Vec<usize>> = FxHashMap::default();
        for (s, sub) in subs.iter().enumerate() {
            let (role, claims) = (sub.principal.role.as_str(), &*sub.principal.claims_json);
            let same = by_digest.entry(sub.digest).or_default();
            let g = match same
                .iter()
                .find(|&&g| keys[g].role == role && keys[g].claims == claims)
            {
                Some(&g) => g,
                None => {
                    keys.push(GroupKey {
                        role,
                        claims,
                        uid: Uid::of(&sub.principal.claims),
                    });
                    members.push(Vec::new());
                    same.push(keys.len() - 1);
                    keys.len() - 1
                }
            };
            members[g].push(s);
        }
        Groups { keys, members }
    }
}

/// Whether a failed visibility check is the policy's fault (it raised, or
/// ran past the statement timeout) rather than the database's state (a lost
/// connection, no resources, a shutdown, a conflict), which is retried.
fn policy_error(e: &anyhow::Error) -> bool {
    use wasmbase_host_api::sqlstate::{classify, Kind};
    e.chain().any(|c| {
        c.downcast_ref::<tokio_postgres::Error>()
            .and_then(|e| e.code())
            .is_some_and(|code| {
                let s = code.code();
                // Class 40 (a serialization failure, a deadlock) is retried too.
                classify(s) != Kind::Unavailable && !s.starts_with("40")
            })
    })
}

/// Groups below which a visibility check is not split over connections.
const GROUPS_PER_PART: usize = 16;

/// Connections one visibility check may use side by side: the cores here.
static PARALLEL: std::sync::LazyLock<usize> = std::sync::LazyLock::new(|| {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .min(4)
});

/// One transaction on one connection that, for each group of `part` in
/// turn, switches to its role and claims and runs `lookup` (pipelined: every
/// group's switch and lookup go out before the first answer). Returns the
/// visible (group, 1-based row of the lookup) pairs.
async fn check_part(
    pool: &Pool,
    lookup: &Lookup,
    part: &[usize],
    roles: &[&str],
    claims: &[&str],
) -> anyhow::Result<Vec<(usize, usize)>> {
    let tx = Tx::connect(pool, PoolKind::Request).await?;
    // As `authenticator` itself (the login role, which alone may become each
    // group's role).
    let acting = Acting {
        role: "authenticator",
        claims: "{}",
        timeout: Duration::from_secs(5),
        read_only: true,
    };
    let c = tx.conn();
    let statement = c.prepare_cached(&lookup.sql).await?;
    let switch = c.prepare_cached(SET_ROLE_AND_CLAIMS).await?;
    let params = lookup.params();
    let work = async {
        // A lookup by primary key never needs a custom plan: plan it once
        // for all the groups, not once per group.
        let generic = c.batch_execute("SET LOCAL plan_cache_mode = force_generic_plan");
        let calls = part.iter().map(|&g| {
            let (statement, switch, params) = (&statement, &switch, &params);
            async move {
                let switch_params: [&(dyn ToSql + Sync); 2] = [&roles[g], &claims[g]];
                let (s, rows) = futures::join!(
                    c.query_one(switch, &switch_params),
                    c.query(statement, params)
                );
                s?;
                Ok::<_, tokio_postgres::Error>((g, rows?))
            }
        });
        let (g, out) = futures::join!(generic, futures::future::join_all(calls));
        g.map(|_| out)
    };
    let results = tx.once(Some(&acting), work).await?;
    tx.release();
    let mut out = Vec::new();
    for r in results? {
        let (g, rows) = r?;
        out.extend(rows.iter().map(|row| (g, row.get::<_, i32>(0) as usize)));
    }
    Ok(out)
}

/// A table's lookup of a batch's rows by primary key, and its parameters.
/// Identifiers and types come from the catalog (`Rel`), quoted; the keys
/// are parameters.
struct Lookup {
    sql: String,
    /// One text array per key column (cast to the column's type in SQL).
    keys: Vec<Vec<Option<String>>>,
    /// Or, for an array or composite key, the rows themselves.
    rows: Vec<Value>,
}

impl Lookup {
    fn new<'a>(rel: &Rel, records: impl Iterator<Item = &'a Value> + Clone) -> Lookup {
        let table = format!("{}.{}", ident(&rel.schema), ident(&rel.table));
        // `=`, not IS NOT DISTINCT FROM: key columns are never NULL, and only
        // `=` uses the key's index (the other scans the whole table).
        // `t.<key column> = <its value in x>`, ANDed.
        let on = |x: fn(usize, &str) -> String| {
            rel.pk
                .iter()
                .enumerate()
                .map(|(i, c)| format!("t.{} = {}", ident(c), x(i, c)))
                .collect::<Vec<_>>()
                .join(" AND ")
        };
        match &rel.pk_types {
            Some(types) => {
                let arrays = types
                    .iter()
                    .enumerate()
                    .map(|(i, t)| format!("${}::text[]::{t}[]", i + 1))
                    .collect::<Vec<_>>()
                    .join(", ");
                let names = (1..=types.len())
                    .map(|i| format!("k{i}"))
                    .collect::<Vec<_>>()
                    .join(", ");
                let keys = rel
                    .pk
                    .iter()
                    .zip(types)
                    .map(|(col, ty)| {
                        let json = ty == "pg_catalog.json" || ty == "pg_catalog.jsonb";
                        records
                            .clone()
                            .map(|r| match r.get(col) {
                                None | Some(Value::Null) => None,
                                Some(Value::String(s)) if !json => Some(s.clone()),
                                Some(v) => Some(v.to_string()),
                            })
                            .collect()
                    })
                    .collect();
                Lookup {
                    sql: format!(
                        "SELECT x.ord::int FROM unnest({arrays}) WITH ORDINALITY AS x({names}, ord) \
                         JOIN {table} t ON {}",
                        on(|i, _| format!("x.k{}", i + 1))
                    ),
                    keys,
                    rows: Vec::new(),
                }
            }
            None => Lookup {
                sql: format!(
                    "SELECT r.ord::int FROM unnest($1::jsonb[]) WITH ORDINALITY AS r(rec, ord) \
                     CROSS JOIN LATERAL jsonb_populate_record(NULL::{table}, r.rec) x \
                     JOIN {table} t ON {}",
                    on(|_, c| format!("x.{}", ident(c)))
                ),
                keys: Vec::new(),
                rows: records.cloned().collect(),
            },
        }
    }

    fn params(&self) -> Vec<&(dyn ToSql + Sync)> {
        if self.keys.is_empty() {
            vec![&self.rows]
        } else {
            self.keys.iter().map(|k| k as &(dyn ToSql + Sync)).collect()
        }
    }
}

/// One page: the committed transactions not in a position (`xmax`, `xip`),
/// in commit order, with their changes. The changes are looked up per
/// transaction through the xid index (a LATERAL the planner may not flatten:
/// as a join it chose to hash the whole retained table on every round).
const PAGE: &str = "SELECT t.xid::text, t.snap::text, t.committed_at, \
       c.id, c.rel, c.kind, c.record, c.old_record \
     FROM (SELECT xid, seq, snap, committed_at FROM wasmbase.realtime_txns \
           WHERE (xid >= $1::text::xid8 OR xid = ANY ($2::text[]::xid8[])) AND seq IS NOT NULL \
           ORDER BY seq LIMIT $3) t \
     LEFT JOIN LATERAL (SELECT c.id, c.rel, c.kind, c.record, c.old_record \
       FROM wasmbase.realtime_changes c WHERE c.xid = t.xid OFFSET 0) c ON true \
     ORDER BY t.seq, c.id";

/// [`PAGE`] for a client that had part of transaction `$4` (its changes up
/// to id `$5`): that transaction comes first (one that sorts before it was
/// still running when it was cut), without the part it had.
const PAGE_AFTER_PART: &str = "SELECT t.xid::text, t.snap::text, t.committed_at, \
       c.id, c.rel, c.kind, c.record, c.old_record \
     FROM (SELECT xid, seq, snap, committed_at FROM wasmbase.realtime_txns \
           WHERE (xid >= $1::text::xid8 OR xid = ANY ($2::text[]::xid8[])) AND seq IS NOT NULL \
           ORDER BY xid = $4::text::xid8 DESC, seq LIMIT $3) t \
     LEFT JOIN LATERAL (SELECT c.id, c.rel, c.kind, c.record, c.old_record \
       FROM wasmbase.realtime_changes c \
       WHERE c.xid = t.xid AND (t.xid <> $4::text::xid8 OR c.id > $5) OFFSET 0) c ON true \
     ORDER BY t.xid = $4::text::xid8 DESC, t.seq, c.id";

/// Least time between the starts of two delivery rounds. Why: each round is a
/// REPEATABLE READ transaction, a snapshot query and a page read, and with a
/// round per NOTIFY the database ran one round per insert (measured at 1,300
/// inserts/s: 35,958 commits for 18,200 inserts). A change committed right
/// after a round started waits at most this long for the next; at a steady
/// 200 inserts/s rounds are 5 ms apart and never wait.
const ROUND_GAP: Duration = Duration::from_millis(2);

/// Transactions one page of a round reads at most.
const BATCH: usize = 500;

/// A round this often while anyone listens, woken or not.
const TICK: Duration = Duration::from_secs(5);

/// Transactions catching-up channels may read in one round, together.
const CATCHUP_BUDGET: usize = 2_000;

/// Longest a round waits, in all, for catching-up clients to read what they
/// were sent before it lets the live channels have a round.
const PACE: Duration = Duration::from_millis(20);

/// How far past this node's snapshot a resumed position may reach (it came
/// from a node that had read a little further) before it is refused as
/// another database's.
const FUTURE: u64 = 10_000;

/// The system message for a position whose changes were partly pruned.
fn gap_message(window: Duration) -> String {
    format!(
        "CatchUpUnavailable: changes after this position are no longer kept \
         (realtime.catchup_window_secs = {}); reload the data, then resume from the position given here",
        window.as_secs()
    )
}

/// Transactions one pruning batch deletes: small, so that under a steady
/// write load no batch holds a core for long (one statement deleting 10,000
/// transactions every heartbeat put a spike of a few hundred milliseconds
/// into every delivery's latency, bench/README.md).
const PRUNE_BATCH: i64 = 1_000;

/// Pause between two pruning batches: the writers and the delivery get the
/// cores in between.
const PRUNE_PAUSE: Duration = Duration::from_millis(10);

/// Deletes the transactions committed longer than `window` ago with their
/// changes, a batch per transaction (at most 500 batches a call, so a backlog
/// clears within a few heartbeats), and adds their positions to the pruned
/// mark in the same transaction, so a position that misses one of them is
/// told. Changes whose transaction has no row (it hid itself by setting the
/// capture's transaction-local flag) go an hour after the window.
pub async fn prune(c: &mut tokio_postgres::Client, window: Duration) -> anyhow::Result<()> {
    for _ in 0..500 {
        if prune_batch(c, window).await? < PRUNE_BATCH as usize {
            break;
        }
        tokio::time::sleep(PRUNE_PAUSE).await;
    }
    c.execute(
        "DELETE FROM wasmbase.realtime_changes WHERE id IN ( \
           SELECT id FROM wasmbase.realtime_changes c \
           WHERE at < now() - make_interval(secs => $1) - interval '1 hour' \
             AND NOT EXISTS (SELECT 1 FROM wasmbase.realtime_txns t WHERE t.xid = c.xid) \
           LIMIT 10000)",
        &[&window.as_secs_f64()],
    )
    .await?;
    Ok(())
}

async fn prune_batch(c: &mut tokio_postgres::Client, window: Duration) -> anyhow::Result<usize> {
    let tx = c.transaction().await?;
    let mark: String = tx
        .query_one(
            "SELECT mark::text FROM wasmbase.realtime_pruned FOR UPDATE",
            &[],
        )
        .await?
        .get(0);
    let rows = tx
        .query(
            "WITH gone AS ( \
               DELETE FROM wasmbase.realtime_txns WHERE xid IN ( \
                 SELECT xid FROM wasmbase.realtime_txns \
                 WHERE committed_at < now() - make_interval(secs => $1) \
                 ORDER BY committed_at LIMIT $2) \
               RETURNING xid, snap), \
             changes AS (DELETE FROM wasmbase.realtime_changes c USING gone WHERE c.xid = gone.xid) \
             SELECT xid::text, snap::text FROM gone",
            &[&window.as_secs_f64(), &PRUNE_BATCH],
        )
        .await?;
    if rows.is_empty() {
        return Ok(0);
    }
    let mut mark =
        Position::parse_trusted(&mark).ok_or_else(|| anyhow::anyhow!("bad pruned mark"))?;
    for r in &rows {
        let x: u64 = r.get::<_, &str>(0).parse()?;
        if let Some(snap) = Position::parse_trusted(r.get(1)) {
            mark = mark.union(&snap).with_covering(x);
        }
    }
    tx.execute(
        "UPDATE wasmbase.realtime_pruned SET mark = $1::text::pg_snapshot",
        &[&mark.to_string()],
    )
    .await?;
    tx.commit().await?;
    Ok(rows.len())
}

/// A postgres_changes message's payload as realtime-js reads it.
#[derive(serde::Serialize)]
struct ChangePayload<'a> {
    /// The subscriber's bindings this change matched.
    ids: &'a [u64],
    data: &'a RawValue,
}

/// The position after a change: inside a transaction, the position before
/// it and the change (`<position>@<xid>:<change id>`); at its last change,
/// the position after it. Shared per transaction, and written out only for
/// a frame actually sent.
#[derive(Clone)]
struct After {
    position: Arc<Position>,
    partial: Option<(u64, i64)>,
}

impl After {
    fn text(&self) -> String {
        match self.partial {
            Some((x, id)) => format!("{}@{x}:{id}", self.position),
            None => self.position.to_string(),
        }
    }

    fn resume(&self) -> Resume {
        Resume {
            position: (*self.position).clone(),
            partial: self.partial,
        }
    }
}

/// One captured change.
struct Change {
    oid: u32,
    rel: Rel,
    /// Its transaction.
    xid: u64,
    /// The position after it.
    after: After,
    kind: String,
    record: Option<Value>,
    old: Option<Value>,
    at: std::time::SystemTime,
}

impl Change {
    /// Whether binding `b` wants this change (its table, event and filters).
    fn matches(&self, b: &Binding) -> bool {
        b.schema == self.rel.schema
            && (b.table == "*" || b.table == self.rel.table)
            && b.event.matches(&self.kind)
            && b.filters.iter().all(|f| f.passes(self.row()))
    }

    /// The row filters and visibility look at: the new one, or the old one of
    /// a DELETE.
    fn row(&self) -> &Value {
        self.record
            .as_ref()
            .or(self.old.as_ref())
            .unwrap_or(&Value::Null)
    }

    /// The event's `data`, as realtime-js reads it.
    fn event(&self) -> Value {
        let rel = &self.rel;
        let mut data = json!({
            "schema": rel.schema,
            "table": rel.table,
            "commit_timestamp": wasmbase_host_api::time::rfc3339_millis(self.at),
            "type": self.kind,
            "columns": rel.columns.iter().map(|(n, t)| json!({"name": n, "type": t})).collect::<Vec<_>>(),
            "errors": null,
        });
        if let Some(r) = &self.record {
            data["record"] = r.clone();
        }
        if let (Some(o), false) = (&self.old, self.kind == "INSERT") {
            // The old row as the replica identity keeps it: every column with
            // REPLICA IDENTITY FULL (never for a DELETE under RLS), else the key.
            let all = rel.replica_full && !(self.kind == "DELETE" && rel.rls);
            let mut m = serde_json::Map::new();
            for (k, _) in &rel.columns {
                if all || rel.pk.contains(k) {
                    if let Some(x) = o.get(k) {
                        m.insert(k.clone(), x.clone());
                    }
                }
            }
            data["old_record"] = Value::Object(m);
        }
        data
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bindings_and_filters_as_supabase_parses_them() {
        let b = parse_binding(
            &json!({"event": "insert", "schema": "public", "table": "todos", "filter": "id=eq.1"}),
            7,
        )
        .unwrap();
        assert_eq!(
            (b.event, b.table.as_str(), b.filters.len()),
            (Event::Insert, "todos", 1)
        );
        let b = parse_binding(&json!({"event": "*", "schema": "public"}), 1).unwrap();
        assert_eq!(b.table, "*");
        assert!(parse_binding(&json!({"event": "*"}), 1).is_err());
        let e = parse_binding(
            &json!({"schema": "public", "table": "t", "filter": "subject=foo.hey"}),
            1,
        )
        .unwrap_err();
        assert_eq!(e, "Error parsing `filter` params: [\"subject=foo.hey\"]");
        assert!(parse_binding(&json!({"schema": "public", "filter": "id=eq.1"}), 1).is_err());
        let f = |s: &str| parse_filter(s).unwrap();
        let row = json!({"id": 5, "name": "a,b", "done": false, "note": null, "tag": "Hello"});
        let pass = |s: &str| f(s).iter().all(|x| x.passes(&row));
        assert!(pass("id=eq.5") && pass("id=gte.5") && pass("id=lt.10") && !pass("id=gt.5"));
        assert!(pass("id=in.(1,5)") && !pass("id=in.(1,2)") && pass("id=not.in.(1,2)"));
        assert!(pass("name=eq.\"a,b\"") && pass("id=eq.5,done=is.false"));
        assert!(pass("note=is.null") && pass("id=not.is.null") && !pass("note=eq.x"));
        assert!(pass("tag=like.H%") && pass("tag=ilike.%LLO") && !pass("tag=like.h%"));
        assert!(pass("tag=like.H_l%o") && pass("tag=like.%") && !pass("tag=like.Hello_"));
        // Patterns that would blow up a naive matcher finish at once.
        let row = json!({"s": "a".repeat(1000)});
        let stars = format!("s=like.{}b", "%a".repeat(400));
        assert!(!f(&stars).iter().all(|x| x.passes(&row)));
        assert!(
            parse_filter(&format!("s=like.{}", "%".repeat(2000))).is_none(),
            "too long"
        );
        assert!(pass("id=neq.4") && pass("note=isdistinct.x"));
        assert!(parse_filter("id=eq.1,,x=eq.2").is_none());
        assert!(parse_filter("id=in.1,2").is_none());
        assert!(parse_filter("id=regex.x").is_none());
        // Regular expressions, as PostgreSQL's `~` and `~*`.
        let row = json!({"tag": "Hello", "id": 42});
        let pass = |s: &str| f(s).iter().all(|x| x.passes(&row));
        assert!(pass("tag=match.^H.l+o$") && !pass("tag=match.^h") && pass("tag=imatch.^h"));
        assert!(pass("tag=not.match.^x") && pass("id=match.^4[0-9]$"));
        assert!(parse_filter("tag=match.(").is_none(), "invalid pattern");
        assert!(parse_filter(&format!("tag=match.{}", "a".repeat(300))).is_none());
        assert!(
            parse_filter("tag=match.(?:a{1000}){300}").is_none(),
            "compiles too big"
        );
        let long = json!({"tag": "a".repeat(MAX_MATCHED + 1)});
        assert!(
            !f("tag=match.a").iter().all(|x| x.passes(&long)),
            "too long to match"
        );
        let many = vec!["id=eq.1"; MAX_FILTERS + 1].join(",");
        assert!(parse_filter(&many).is_none(), "too many conditions");
    }
}
