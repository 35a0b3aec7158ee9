//! Who may use a private channel, as Supabase decides it: row-level security
//! policies on `realtime.messages`, asked as the caller (role and claims, with
//! `realtime.topic` set) in a transaction that is always rolled back. Reading
//! (join, receive) is the SELECT policies seeing probe rows, one per
//! extension, that `realtime.wasmbase_probe` wrote past the policies;
//! writing (broadcast, track) is the INSERT policies taking a row. One round
//! trip each (the statements are pipelined behind `BEGIN`).

use std::time::Duration;
use tokio_postgres::error::SqlState;
use wasmbase_host_api::db::{Acting, DbError, PoolKind, Tx};
use wasmbase_host_api::Principal;

/// What a caller may read on a private topic.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Reads {
    /// Broadcasts (and joining at all).
    pub broadcast: bool,
    /// Presence.
    pub presence: bool,
}

impl Reads {
    /// What a public channel allows: everything.
    pub const ALL: Reads = Reads {
        broadcast: true,
        presence: true,
    };

    /// Whether these reads keep all of `before` (a new token that loses one
    /// closes the channel, as Supabase does).
    pub fn keeps(self, before: Reads) -> bool {
        (!before.broadcast || self.broadcast) && (!before.presence || self.presence)
    }
}

/// What a private channel's write needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ext {
    /// A broadcast.
    Broadcast,
    /// A presence track.
    Presence,
}

impl Ext {
    fn as_str(self) -> &'static str {
        match self {
            Ext::Broadcast => "broadcast",
            Ext::Presence => "presence",
        }
    }
}

/// Why a check could not say yes or no.
#[derive(Debug)]
pub enum AuthzError {
    /// A policy failed (raised, or the role lacks grants): logged, answered
    /// as a refusal.
    Policy,
    /// The database took longer than the caller's statement timeout.
    Canceled(String),
    /// No connection (pool exhausted or database down).
    Unavailable,
}

impl AuthzError {
    /// Supabase's reply to a join that could not be checked.
    pub fn join_reason(&self, topic: &str) -> String {
        match self {
            AuthzError::Policy => unauthorized(topic),
            AuthzError::Canceled(m) => format!("QueryCanceled: {m}"),
            AuthzError::Unavailable => {
                "UnableToConnectToProject: Realtime was unable to connect to the project database"
                    .into()
            }
        }
    }
}

/// Supabase's refusal of a private join.
pub fn unauthorized(topic: &str) -> String {
    format!("Unauthorized: You do not have permissions to read from this Channel topic: {topic}")
}

fn classify(e: DbError) -> AuthzError {
    match &e {
        DbError::Pool(_) => AuthzError::Unavailable,
        DbError::Pg(pg) if pg.code() == Some(&SqlState::QUERY_CANCELED) => AuthzError::Canceled(
            pg.as_db_error()
                .map_or_else(|| pg.to_string(), |d| d.message().to_string()),
        ),
        DbError::Pg(pg) if pg.is_closed() || pg.as_db_error().is_none() => AuthzError::Unavailable,
        _ => {
            tracing::warn!(error = %e.describe(), "realtime: a policy on realtime.messages failed");
            AuthzError::Policy
        }
    }
}

/// What `p` may read on `topic` (the sub-topic, as policies see it).
pub async fn reads(
    pool: &deadpool_postgres::Pool,
    p: &Principal,
    timeout: Duration,
    topic: &str,
) -> Result<Reads, AuthzError> {
    let tx = Tx::connect(pool, PoolKind::Request)
        .await
        .map_err(classify)?;
    let acting = Acting::principal(p, timeout);
    let ids = [uuid::Uuid::new_v4(), uuid::Uuid::new_v4()];
    let c = tx.conn();
    let work = async {
        c.execute(
            "SELECT set_config('realtime.topic', $1, true), realtime.wasmbase_probe($1, $2)",
            &[&topic, &ids.as_slice()],
        )
        .await?;
        c.query(
            "SELECT extension FROM realtime.messages WHERE id = ANY($1)",
            &[&ids.as_slice()],
        )
        .await
    };
    let rows = tx.begin(Some(&acting), work).await.map_err(classify)?;
    let ended = tx.end(false).await;
    let rows = rows.map_err(|e| classify(DbError::Pg(e)))?;
    ended.map_err(classify)?;
    let seen = |ext: Ext| rows.iter().any(|r| r.get::<_, String>(0) == ext.as_str());
    Ok(Reads {
        broadcast: seen(Ext::Broadcast),
        presence: seen(Ext::Presence),
    })
}

/// Whether `p` may write `ext` on `topic`.
pub async fn can_write(
    pool: &deadpool_postgres::Pool,
    p: &Principal,
    timeout: Duration,
    topic: &str,
    ext: Ext,
) -> Result<bool, AuthzError> {
    let tx = Tx::connect(pool, PoolKind::Request)
        .await
        .map_err(classify)?;
    let acting = Acting::principal(p, timeout);
    let c = tx.conn();
    let work = async {
        c.execute("SELECT set_config('realtime.topic', $1, true)", &[&topic])
            .await?;
        c.execute(
            "INSERT INTO realtime.messages (topic, extension) VALUES ($1, $2)",
            &[&topic, &ext.as_str()],
        )
        .await
    };
    let inserted = tx.begin(Some(&acting), work).await.map_err(classify)?;
    let ended = tx.end(false).await;
    let allowed = match inserted {
        Ok(_) => true,
        Err(e) if e.code() == Some(&SqlState::INSUFFICIENT_PRIVILEGE) => false,
        Err(e) => return Err(classify(DbError::Pg(e))),
    };
    ended.map_err(classify)?;
    Ok(allowed)
}
