//! Tokens this node has already verified, each with the principal it grants.
//!
//! Every request with a user token pays for base64, an HMAC or signature check,
//! two JSON parses and the claims' re-serialisation; measured on `GET
//! /auth/v1/user` that was a seventh of the server's CPU, while an app sends the
//! same access token for its whole hour. An entry is found only by the token's
//! exact text (compared in full), is kept only until the token's `exp` (with the
//! verifier's leeway) and lives inside the [`crate::jwt::JwtKeys`] that verified
//! it, so different keys never see it. Failures are never cached.

use crate::Principal;
use std::collections::HashMap;
use std::sync::Mutex;

/// Entries kept at most (a token and its principal: about 2 KiB each).
const CAPACITY: usize = 4096;

/// The cache; cheap to share behind the keys.
#[derive(Default)]
pub struct VerifiedTokens {
    /// Keyed by the token's last bytes (its signature, already uniform); the
    /// entry holds the whole text, compared before use.
    entries: Mutex<HashMap<[u8; TAIL], Entry>>,
}

/// How many trailing bytes of a token make its key.
const TAIL: usize = 16;

struct Entry {
    token: Box<str>,
    principal: Principal,
    /// Last second (Unix time, leeway included) the token is valid in.
    valid_until: i64,
}

fn key(token: &str) -> [u8; TAIL] {
    let b = token.as_bytes();
    let tail = &b[b.len().saturating_sub(TAIL)..];
    let mut k = [0u8; TAIL];
    k[..tail.len()].copy_from_slice(tail);
    k
}

impl VerifiedTokens {
    /// The principal of `token` if it was verified here and is still valid at `now`.
    pub fn get(&self, token: &str, now: i64) -> Option<Principal> {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries
            .get(&key(token))
            .filter(|e| &*e.token == token && now <= e.valid_until)
            .map(|e| e.principal.clone())
    }

    /// Remembers a verified token (replacing any other with the same tail); when
    /// full, expired entries go first, then an arbitrary one.
    pub fn put(&self, token: &str, principal: Principal, valid_until: i64, now: i64) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if entries.len() >= CAPACITY {
            entries.retain(|_, e| now <= e.valid_until);
            if let Some(victim) = entries
                .keys()
                .next()
                .copied()
                .filter(|_| entries.len() >= CAPACITY)
            {
                entries.remove(&victim);
            }
        }
        entries.insert(
            key(token),
            Entry {
                token: token.into(),
                principal,
                valid_until,
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Role;

    #[test]
    fn finds_only_the_exact_token_and_only_until_it_expires() {
        let cache = VerifiedTokens::default();
        let token = "aaaa.bbbb.signature-tail-0123456789";
        cache.put(token, Principal::for_role(Role::Authenticated), 100, 0);
        assert!(cache.get(token, 100).is_some());
        assert!(cache.get(token, 101).is_none(), "expired");
        // Same tail (same hash), different text: not the same token.
        assert!(cache
            .get("xxxx.bbbb.signature-tail-0123456789", 50)
            .is_none());
        assert!(cache.get("signature-tail-0123456789", 50).is_none());
    }

    #[test]
    fn stays_bounded() {
        let cache = VerifiedTokens::default();
        for i in 0..CAPACITY + 10 {
            cache.put(&format!("t{i}"), Principal::for_role(Role::Anon), 10, 0);
        }
        assert_eq!(cache.entries.lock().unwrap().len(), CAPACITY);
    }
}
