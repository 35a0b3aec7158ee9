//! Function secrets: env values stored in PostgreSQL encrypted with
//! AES-256-GCM under the configured master key, so every node sees them and
//! the database (and its backups) never holds a plaintext value. Values are
//! never logged or listed; `list` shows names only. Every change is recorded
//! in `wasmbase.audit_log` (`secret.set`, `secret.unset`: the name, never the
//! value).

use aes_gcm::aead::{Aead, KeyInit};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use anyhow::{anyhow, bail, Context, Result};
use base64::Engine as _;
use rand::RngCore;
use std::collections::HashMap;
use tokio_postgres::GenericClient;
use wasmbase_host_api::audit::{self, Actor};

/// A new random master key, base64.
pub fn generate_key() -> String {
    let mut k = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut k);
    base64::engine::general_purpose::STANDARD.encode(k)
}

/// The cipher of a base64 master key (32 bytes).
pub fn cipher(key_b64: &str) -> Result<Aes256Gcm> {
    let raw = base64::engine::general_purpose::STANDARD
        .decode(key_b64.trim())
        .context("`functions.secrets_key` is not base64")?;
    if raw.len() != 32 {
        bail!("`functions.secrets_key` must be 32 bytes (base64 of 32 random bytes)");
    }
    Ok(Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(&raw)))
}

/// Names may be env variable names only.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Stores (or replaces) `name` and audits it under `actor` (run both in one
/// transaction to have both or neither). The name is bound as associated
/// data, so a ciphertext copied onto another name does not decrypt.
pub async fn set<'a>(
    client: &impl GenericClient,
    cipher: &Aes256Gcm,
    name: &str,
    value: &str,
    actor: impl Into<Actor<'a>>,
) -> Result<()> {
    if !valid_name(name) {
        bail!(
            "{name:?} is not a valid secret name (letters, digits, _; not starting with a digit)"
        );
    }
    let mut nonce = [0u8; 12];
    rand::thread_rng().fill_bytes(&mut nonce);
    let ct = cipher
        .encrypt(
            Nonce::from_slice(&nonce),
            aes_gcm::aead::Payload {
                msg: value.as_bytes(),
                aad: name.as_bytes(),
            },
        )
        .map_err(|_| anyhow!("encrypting the secret failed"))?;
    client
        .execute(
            "INSERT INTO wasmbase.secrets (name, nonce, ciphertext) VALUES ($1, $2, $3) \
             ON CONFLICT (name) DO UPDATE SET nonce = EXCLUDED.nonce, ciphertext = EXCLUDED.ciphertext, updated_at = now()",
            &[&name, &nonce.as_slice(), &ct],
        )
        .await?;
    audit::record(client, actor, "secret.set", name, serde_json::json!({})).await?;
    Ok(())
}

/// Removes `name` and audits it under `actor`; false (and nothing recorded)
/// if it did not exist.
pub async fn unset<'a>(
    client: &impl GenericClient,
    name: &str,
    actor: impl Into<Actor<'a>>,
) -> Result<bool> {
    let removed = client
        .execute("DELETE FROM wasmbase.secrets WHERE name = $1", &[&name])
        .await?
        > 0;
    if removed {
        audit::record(client, actor, "secret.unset", name, serde_json::json!({})).await?;
    }
    Ok(removed)
}

/// Names and last-update times, never values.
pub async fn list(client: &impl GenericClient) -> Result<Vec<(String, String)>> {
    Ok(client
        .query(
            "SELECT name, to_char(updated_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"') FROM wasmbase.secrets ORDER BY name",
            &[],
        )
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect())
}

/// All secrets decrypted (for the node's env cache). A value that does not
/// decrypt (another key) is skipped with a warning naming it.
pub async fn load_all(
    client: &impl GenericClient,
    cipher: &Aes256Gcm,
) -> Result<HashMap<String, String>> {
    let mut out = HashMap::new();
    for r in client
        .query("SELECT name, nonce, ciphertext FROM wasmbase.secrets", &[])
        .await?
    {
        let (name, nonce, ct): (String, Vec<u8>, Vec<u8>) = (r.get(0), r.get(1), r.get(2));
        if nonce.len() != 12 {
            continue;
        }
        let pt = cipher.decrypt(
            Nonce::from_slice(&nonce),
            aes_gcm::aead::Payload {
                msg: &ct,
                aad: name.as_bytes(),
            },
        );
        match pt.ok().and_then(|p| String::from_utf8(p).ok()) {
            Some(v) => {
                out.insert(name, v);
            }
            None => {
                tracing::warn!(secret = %name, "secret does not decrypt with this node's functions.secrets_key; skipped")
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_names() {
        let k = generate_key();
        assert!(cipher(&k).is_ok());
        assert!(cipher("c2hvcnQ=").is_err());
        assert!(cipher("not base64!").is_err());
        assert!(valid_name("OPENAI_KEY") && valid_name("_x1"));
        assert!(!valid_name("1X") && !valid_name("A-B") && !valid_name("") && !valid_name("A B"));
    }
}
