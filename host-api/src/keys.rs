//! Opaque API keys in Supabase's format (`sb_publishable_…`, `sb_secret_…`).
//!
//! Only the SHA-256 of a key is stored; the plaintext is shown once, at creation.
//! Every node keeps the active keys in memory ([`KeyStore`]) and reloads them when
//! `wasmbase.api_keys` changes (a trigger sends `NOTIFY wasmbase_keys, <id>`), so a
//! revoke reaches all nodes within the NOTIFY latency.

use crate::{AuthError, Role};
use arc_swap::ArcSwap;
use base64::Engine;
use rand::RngCore;
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use subtle::ConstantTimeEq;
use tokio_postgres::GenericClient;
use uuid::Uuid;

/// NOTIFY channel on which key changes are announced (payload: the key id).
pub const CHANNEL: &str = "wasmbase_keys";

/// Characters of the random part kept in clear as the lookup/display prefix.
const PREFIX_CHARS: usize = 8;
/// Random bytes in a key (Supabase asks for at least 32).
const RANDOM_BYTES: usize = 32;

/// The two kinds of opaque key and the role each one grants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyKind {
    /// Safe to ship in apps; grants `anon`.
    Publishable,
    /// Server-side only; grants `service_role`.
    Secret,
}

impl KeyKind {
    /// Stored and displayed name.
    pub fn as_str(self) -> &'static str {
        match self {
            KeyKind::Publishable => "publishable",
            KeyKind::Secret => "secret",
        }
    }
    /// Parses the stored name.
    pub fn parse(s: &str) -> Option<KeyKind> {
        match s {
            "publishable" => Some(KeyKind::Publishable),
            "secret" => Some(KeyKind::Secret),
            _ => None,
        }
    }
    fn tag(self) -> &'static str {
        match self {
            KeyKind::Publishable => "sb_publishable_",
            KeyKind::Secret => "sb_secret_",
        }
    }
    /// The role a key of this kind runs requests as.
    pub fn role(self) -> Role {
        match self {
            KeyKind::Publishable => Role::Anon,
            KeyKind::Secret => Role::ServiceRole,
        }
    }
}

/// A key as listed: never the secret part.
#[derive(Debug, Clone, Serialize)]
pub struct KeyInfo {
    /// Stable id used by `rotate` and `revoke`.
    pub id: Uuid,
    /// publishable or secret.
    pub kind: KeyKind,
    /// Free-form label.
    pub name: String,
    /// The first characters of the key, enough to recognise it (`sb_secret_AbCd1234…`).
    pub prefix: String,
    /// Creation time, RFC 3339.
    pub created_at: String,
    /// Revocation time, RFC 3339, if revoked.
    pub revoked_at: Option<String>,
}

/// Whether a string has the shape of an opaque key (as opposed to a JWT key).
pub fn is_opaque(key: &str) -> bool {
    kind_by_prefix(key).is_some()
}

/// The kind an opaque key claims by its prefix, before any lookup: the gate refuses
/// a secret key in a query string without telling whether the key is valid.
pub fn kind_by_prefix(key: &str) -> Option<KeyKind> {
    [KeyKind::Publishable, KeyKind::Secret]
        .into_iter()
        .find(|k| key.starts_with(k.tag()))
}

fn split(key: &str) -> Option<(KeyKind, &str)> {
    let (kind, rest) = if let Some(r) = key.strip_prefix("sb_publishable_") {
        (KeyKind::Publishable, r)
    } else {
        (KeyKind::Secret, key.strip_prefix("sb_secret_")?)
    };
    let ok = rest.len() >= 43
        && rest.len() <= 64
        && rest
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    ok.then_some((kind, rest))
}

fn hash(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

fn prefix_of(kind: KeyKind, random: &str) -> String {
    format!("{}{}", kind.tag(), &random[..PREFIX_CHARS])
}

/// Makes a fresh key: returns (plaintext, lookup prefix, sha256).
pub fn generate(kind: KeyKind) -> (String, String, [u8; 32]) {
    let mut bytes = [0u8; RANDOM_BYTES];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    let random = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    let key = format!("{}{}", kind.tag(), random);
    let prefix = prefix_of(kind, &random);
    let h = hash(&key);
    (key, prefix, h)
}

#[derive(Debug, Clone)]
struct Active {
    kind: KeyKind,
    hash: [u8; 32],
}

/// In-memory view of the active (unrevoked) keys, swapped whole on reload.
#[derive(Debug, Default)]
pub struct KeyStore {
    by_prefix: ArcSwap<HashMap<String, Vec<Active>>>,
    version: AtomicU64,
    loaded: AtomicBool,
}

impl KeyStore {
    /// An empty store; [`KeyStore::resolve`] answers `NotReady` until the first load.
    pub fn new() -> KeyStore {
        KeyStore::default()
    }

    /// Increments on every reload, so tests and operators can see a revoke arrive.
    pub fn version(&self) -> u64 {
        self.version.load(Ordering::Acquire)
    }

    /// Whether keys have been loaded at least once.
    pub fn is_loaded(&self) -> bool {
        self.loaded.load(Ordering::Acquire)
    }

    /// Reloads all active keys from `wasmbase.api_keys`.
    pub async fn reload(
        &self,
        client: &impl GenericClient,
    ) -> Result<usize, tokio_postgres::Error> {
        let rows = client
            .query(
                "SELECT kind, prefix, hash FROM wasmbase.api_keys WHERE revoked_at IS NULL",
                &[],
            )
            .await?;
        let mut map: HashMap<String, Vec<Active>> = HashMap::new();
        for r in &rows {
            let kind: &str = r.get(0);
            let prefix: String = r.get(1);
            let h: &[u8] = r.get(2);
            let (Some(kind), Ok(hash)) = (KeyKind::parse(kind), <[u8; 32]>::try_from(h)) else {
                continue;
            };
            map.entry(prefix).or_default().push(Active { kind, hash });
        }
        let n = rows.len();
        self.by_prefix.store(Arc::new(map));
        self.loaded.store(true, Ordering::Release);
        self.version.fetch_add(1, Ordering::AcqRel);
        Ok(n)
    }

    /// Resolves a presented opaque key to its kind, comparing hashes in constant time.
    pub fn resolve(&self, key: &str) -> Result<KeyKind, AuthError> {
        let (kind, random) = split(key).ok_or(AuthError::InvalidApiKey)?;
        if !self.is_loaded() {
            return Err(AuthError::NotReady);
        }
        let h = hash(key);
        let map = self.by_prefix.load();
        let candidates = map
            .get(&prefix_of(kind, random))
            .ok_or(AuthError::InvalidApiKey)?;
        let mut found = None;
        for c in candidates {
            if bool::from(c.hash.ct_eq(&h)) && c.kind == kind {
                found = Some(c.kind);
            }
        }
        found.ok_or(AuthError::InvalidApiKey)
    }
}

fn info(r: &tokio_postgres::Row) -> KeyInfo {
    KeyInfo {
        id: r.get("id"),
        kind: KeyKind::parse(r.get("kind")).unwrap_or(KeyKind::Secret),
        name: r.get("name"),
        prefix: format!("{}…", r.get::<_, String>("prefix")),
        created_at: r.get("created_at"),
        revoked_at: r.get("revoked_at"),
    }
}

const INFO_COLS: &str = "id, kind, name, prefix, to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"') AS created_at, \
     to_char(revoked_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"') AS revoked_at";

/// Creates a key; returns its listing and the plaintext (shown to the caller once).
pub async fn create<'a>(
    client: &impl GenericClient,
    kind: KeyKind,
    name: &str,
    actor: impl Into<crate::audit::Actor<'a>>,
) -> Result<(KeyInfo, String), tokio_postgres::Error> {
    let (key, prefix, h) = generate(kind);
    let row = client
        .query_one(
            &format!(
                "INSERT INTO wasmbase.api_keys (kind, name, prefix, hash) VALUES ($1, $2, $3, $4) RETURNING {INFO_COLS}"
            ),
            &[&kind.as_str(), &name, &prefix, &h.as_slice()],
        )
        .await?;
    let info = info(&row);
    crate::audit::record(
        client,
        actor,
        "key.create",
        &info.id.to_string(),
        serde_json::json!({"kind": kind.as_str(), "name": name}),
    )
    .await?;
    Ok((info, key))
}

/// Lists all keys, newest first, without their secret part.
pub async fn list(client: &impl GenericClient) -> Result<Vec<KeyInfo>, tokio_postgres::Error> {
    let rows = client
        .query(
            &format!("SELECT {INFO_COLS} FROM wasmbase.api_keys ORDER BY created_at DESC, id"),
            &[],
        )
        .await?;
    Ok(rows.iter().map(info).collect())
}

/// Revokes a key; `None` when no unrevoked key has that id.
pub async fn revoke<'a>(
    client: &impl GenericClient,
    id: Uuid,
    actor: impl Into<crate::audit::Actor<'a>>,
) -> Result<Option<KeyInfo>, tokio_postgres::Error> {
    let row = client
        .query_opt(
            &format!("UPDATE wasmbase.api_keys SET revoked_at = now() WHERE id = $1 AND revoked_at IS NULL RETURNING {INFO_COLS}"),
            &[&id],
        )
        .await?;
    if row.is_some() {
        crate::audit::record(
            client,
            actor,
            "key.revoke",
            &id.to_string(),
            serde_json::json!({}),
        )
        .await?;
    }
    Ok(row.as_ref().map(info))
}

/// Replaces a key with a new one of the same kind and name and revokes the old one,
/// in one transaction. `None` when no unrevoked key has that id.
pub async fn rotate<'a>(
    client: &mut tokio_postgres::Client,
    id: Uuid,
    actor: impl Into<crate::audit::Actor<'a>>,
) -> Result<Option<(KeyInfo, String)>, tokio_postgres::Error> {
    let actor = actor.into();
    let tx = client.transaction().await?;
    let Some(old) = revoke(&tx, id, actor).await? else {
        return Ok(None);
    };
    let created = create(&tx, old.kind, &old.name, actor).await?;
    tx.commit().await?;
    Ok(Some(created))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shape() {
        let (k, p, _) = generate(KeyKind::Secret);
        assert!(k.starts_with("sb_secret_") && k.len() == 10 + 43);
        assert!(k.starts_with(&p));
        assert!(split(&k).is_some());
        assert!(split("sb_secret_short").is_none());
        assert!(
            split("sb_secret_' OR 1=1 --aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa").is_none()
        );
    }
}
