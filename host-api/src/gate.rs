//! The key-and-token rule, in one place: from the `apikey` and `Authorization`
//! headers to one [`Principal`].
//!
//! 1. `apikey` is required and must be a valid, unrevoked key: an opaque
//!    `sb_publishable_` / `sb_secret_` key, or (if enabled) a legacy HS256 JWT key
//!    whose role is `anon` or `service_role`.
//! 2. `Authorization: Bearer <t>`: a user JWT gives that user's principal; an opaque
//!    key (supabase-js sends the key itself until a user signs in) gives that key's
//!    principal; no bearer gives the `apikey`'s principal.

use crate::jwt::JwtKeys;
use crate::keys::{self, KeyKind, KeyStore};
use crate::{AuthError, Principal, Role};
use std::sync::Arc;

/// Checks keys and tokens; cheap to clone and shared by every API.
#[derive(Clone, Debug)]
pub struct Gate {
    jwt: Arc<JwtKeys>,
    keys: Arc<KeyStore>,
    legacy_jwt_keys: bool,
    anon: Principal,
    service: Principal,
}

impl Gate {
    /// `legacy_jwt_keys = false` refuses JWT-shaped `apikey`s (only `sb_` keys work).
    pub fn new(jwt: Arc<JwtKeys>, keys: Arc<KeyStore>, legacy_jwt_keys: bool) -> Gate {
        Gate {
            jwt,
            keys,
            legacy_jwt_keys,
            anon: Principal::for_role(Role::Anon),
            service: Principal::for_role(Role::ServiceRole),
        }
    }

    /// The JWT keys, for APIs that issue tokens.
    pub fn jwt(&self) -> &Arc<JwtKeys> {
        &self.jwt
    }

    /// The opaque key store, for reloads and metrics.
    pub fn keys(&self) -> &Arc<KeyStore> {
        &self.keys
    }

    fn opaque_principal(&self, key: &str) -> Result<Principal, AuthError> {
        Ok(match self.keys.resolve(key)? {
            KeyKind::Publishable => self.anon.clone(),
            KeyKind::Secret => self.service.clone(),
        })
    }

    /// Validates the `apikey` alone and returns the principal it grants.
    pub fn api_key(&self, apikey: Option<&str>) -> Result<Principal, AuthError> {
        let key = apikey
            .filter(|k| !k.is_empty())
            .ok_or(AuthError::NoApiKey)?;
        if keys::is_opaque(key) {
            return self.opaque_principal(key);
        }
        if !self.legacy_jwt_keys {
            return Err(AuthError::InvalidApiKey);
        }
        // A JWT key must verify and be an anon or service_role key; a user's access
        // token is not an API key.
        let p = self
            .jwt
            .principal(key)
            .map_err(|_| AuthError::InvalidApiKey)?;
        match p.role {
            Role::Anon | Role::ServiceRole => Ok(p),
            Role::Authenticated => Err(AuthError::InvalidApiKey),
        }
    }

    /// The whole rule: `apikey` first, then the bearer token if any.
    pub fn authenticate(
        &self,
        apikey: Option<&str>,
        authorization: Option<&str>,
    ) -> Result<Principal, AuthError> {
        let key_principal = self.api_key(apikey)?;
        let Some(auth) = authorization else {
            return Ok(key_principal);
        };
        let token = bearer(auth).ok_or(AuthError::InvalidJwt(
            "Authorization must be 'Bearer <token>'",
        ))?;
        if Some(token) == apikey {
            return Ok(key_principal);
        }
        if keys::is_opaque(token) {
            return self.opaque_principal(token);
        }
        self.jwt.principal(token)
    }
}

/// Extracts the token of an `Authorization: Bearer <token>` value.
pub fn bearer(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}
