//! The key-and-token rule, in one place: from the `apikey` and `Authorization`
//! headers to one [`Principal`], and the one list of routes that need no key.
//!
//! 1. `apikey` is required and must be a valid, unrevoked key: an opaque
//!    `sb_publishable_` / `sb_secret_` key, or (if enabled) a legacy HS256 JWT key
//!    whose role is `anon` or `service_role`. In a query string (realtime-js can
//!    send it nowhere else) only a publishable key is accepted.
//! 2. `Authorization: Bearer <t>`: a user JWT gives that user's principal; an opaque
//!    key (supabase-js sends the key itself until a user signs in) gives that key's
//!    principal; no bearer gives the `apikey`'s principal.
//! 3. A route on [`OPEN_ROUTES`] needs no key: a valid key or token still names the
//!    caller, anything else makes it `anon`.

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
    pub fn api_key(&self, apikey: Option<ApiKey<'_>>) -> Result<Principal, AuthError> {
        let ApiKey { key, from } = apikey
            .filter(|k| !k.key.is_empty())
            .ok_or(AuthError::NoApiKey)?;
        if let Some(kind) = keys::kind_by_prefix(key) {
            // Refused before the lookup, so the answer says nothing of the key's validity.
            if kind == KeyKind::Secret && from == KeyFrom::Query {
                return Err(AuthError::SecretKeyInQuery);
            }
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
            Role::ServiceRole if from == KeyFrom::Query => Err(AuthError::SecretKeyInQuery),
            Role::Anon | Role::ServiceRole => Ok(p),
            Role::Authenticated => Err(AuthError::InvalidApiKey),
        }
    }

    /// The whole rule: `apikey` first, then the bearer token if any.
    pub fn authenticate(
        &self,
        apikey: Option<ApiKey<'_>>,
        authorization: Option<&str>,
    ) -> Result<Principal, AuthError> {
        let key_principal = self.api_key(apikey)?;
        let Some(auth) = authorization else {
            return Ok(key_principal);
        };
        let token = bearer(auth).ok_or(AuthError::InvalidJwt(
            "Authorization must be 'Bearer <token>'",
        ))?;
        if Some(token) == apikey.map(|k| k.key) {
            return Ok(key_principal);
        }
        if keys::is_opaque(token) {
            return self.opaque_principal(token);
        }
        self.jwt.principal(token)
    }

    /// The rule for any route: on an open one (see [`is_open`]) a valid key or
    /// token still identifies the caller and anything else is `anon`; elsewhere
    /// [`Gate::authenticate`]. `authorization` is an error when the header was
    /// unreadable.
    pub fn admit(
        &self,
        open: bool,
        apikey: Option<ApiKey<'_>>,
        authorization: Result<Option<&str>, AuthError>,
    ) -> Result<Principal, AuthError> {
        let found = authorization.and_then(|a| self.authenticate(apikey, a));
        if open {
            return Ok(found.unwrap_or_else(|_| self.anon.clone()));
        }
        found
    }

    /// For endpoints that act for a signed-in user (GoTrue's `/user`, `/logout`):
    /// the `apikey` must be valid and the bearer, if any, must verify as a JWT.
    /// `None` when there is no bearer token; the API says so in its own words.
    /// `authorization` is an error when the header was unreadable.
    pub fn user_token(
        &self,
        apikey: Option<ApiKey<'_>>,
        authorization: Result<Option<&str>, AuthError>,
    ) -> Result<Option<Principal>, AuthError> {
        self.api_key(apikey)?;
        match authorization?.and_then(bearer) {
            Some(token) => self.jwt.principal(token).map(Some),
            None => Ok(None),
        }
    }
}

/// Where a request carried its `apikey`: query strings are recorded by proxies,
/// browsers and access logs, so only publishable keys may come that way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyFrom {
    /// The `apikey` header.
    Header,
    /// An `apikey` query parameter (realtime-js, some webhooks).
    Query,
}

/// The `apikey` a request presents, borrowed from it (no copy per request).
#[derive(Debug, Clone, Copy)]
pub struct ApiKey<'a> {
    /// The key as sent.
    pub key: &'a str,
    /// Where it was sent.
    pub from: KeyFrom,
}

impl<'a> ApiKey<'a> {
    /// A key from the `apikey` header.
    pub fn header(key: &'a str) -> ApiKey<'a> {
        ApiKey {
            key,
            from: KeyFrom::Header,
        }
    }
}

/// A route that answers without an `apikey`, and why: docs/SECURITY.md prints
/// every entry, and a unit test keeps the two in sync.
#[derive(Debug)]
pub struct OpenRoute {
    /// `"GET"` (which covers `HEAD`), or `"*"` for any method.
    pub method: &'static str,
    /// The router's path pattern; a trailing `/*` covers every route below it.
    pub path: &'static str,
    /// Set when the route is open only for resources that waive the key
    /// themselves; names that setting for the docs.
    pub only_if: Option<&'static str>,
    /// Why a client cannot or need not send a key there.
    pub why: &'static str,
}

const fn open(method: &'static str, path: &'static str, why: &'static str) -> OpenRoute {
    OpenRoute {
        method,
        path,
        only_if: None,
        why,
    }
}

const fn waived(path: &'static str, only_if: &'static str, why: &'static str) -> OpenRoute {
    OpenRoute {
        method: "*",
        path,
        only_if: Some(only_if),
        why,
    }
}

/// Every route that needs no key; adding one is adding a line here (and to
/// docs/SECURITY.md, which the tests check).
pub const OPEN_ROUTES: &[OpenRoute] = &[
    open("GET", "/health", "liveness probes send no key"),
    open("GET", "/ready", "load balancers send no key"),
    open("GET", "/metrics", "Prometheus scrapers send no key; restrict it at the network"),
    open("GET", "/auth/v1/health", "GoTrue's liveness probe"),
    open("GET", "/auth/v1/.well-known/jwks.json", "public keys, fetched by anyone who verifies tokens"),
    open("GET", "/auth/v1/verify", "email links are opened by a browser, which sends no key; the one-time token is the credential"),
    open("GET", "/auth/v1/authorize", "social sign-in starts with a browser navigation, which sends no key; it only redirects to the provider"),
    open("*", "/auth/v1/callback", "the provider sends the browser back without a key; the single-use state is the credential"),
    open("GET", "/storage/v1/object/public/*", "objects of buckets marked public; the bucket's flag is the permission"),
    open("GET", "/storage/v1/object/info/public/*", "information about objects of public buckets"),
    open("GET", "/storage/v1/object/sign/*", "signed download URLs are opened by anyone holding them; the token is the credential"),
    open("PUT", "/storage/v1/object/upload/sign/*", "signed upload URLs; the token is the credential"),
    open("*", "/storage/v1/upload/resumable/sign*", "signed resumable uploads; the x-signature token is the credential on every request"),
    waived("/functions/v1/*", "the function's manifest sets `verify_jwt = false`", "public webhooks"),
    waived("/fn/*", "the function's manifest sets `verify_jwt = false`", "public webhooks"),
];

/// Whether a request to `route` (the router's matched path pattern) needs no key.
/// `waived`: the resource behind the route waives the key itself (a function's
/// `verify_jwt = false`); it opens only the entries that allow that. A scan of a
/// few static strings: no allocation.
pub fn is_open(method: &str, route: &str, waived: bool) -> bool {
    let method = if method == "HEAD" { "GET" } else { method };
    OPEN_ROUTES.iter().any(|r| {
        (r.method == "*" || r.method == method)
            && (r.only_if.is_none() || waived)
            && match r.path.strip_suffix('*') {
                Some(below) => route.starts_with(below),
                None => route == r.path,
            }
    })
}

/// Extracts the token of an `Authorization: Bearer <token>` value.
pub fn bearer(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn security_doc_prints_every_open_route() {
        let doc = include_str!("../../docs/SECURITY.md");
        for r in OPEN_ROUTES {
            let row = format!("| `{}` | `{}` |", r.method, r.path);
            assert!(doc.contains(&row), "docs/SECURITY.md lacks the row {row}");
            if let Some(cond) = r.only_if {
                assert!(doc.contains(cond), "docs/SECURITY.md lacks {cond}");
            }
        }
    }

    #[test]
    fn open_routes_match_by_method_pattern_and_waiver() {
        assert!(is_open("GET", "/health", false));
        assert!(is_open("HEAD", "/health", false));
        assert!(!is_open("POST", "/health", false));
        assert!(is_open("GET", "/auth/v1/verify", false));
        assert!(!is_open("POST", "/auth/v1/verify", false));
        assert!(!is_open("GET", "/auth/v1/user", false));
        assert!(!is_open("GET", "/rest/v1/{table}", false));
        assert!(!is_open("POST", "/functions/v1/{name}", false));
        assert!(is_open("POST", "/functions/v1/{name}", true));
        assert!(is_open("PUT", "/fn/{name}/{*rest}", true));
        assert!(!is_open("GET", "/rest/v1/{table}", true));
    }
}
