//! OpenID Connect: discovery documents and key sets, cached per issuer, and ID
//! token verification (signature by a published key, `iss`, `aud`, `exp`,
//! `nonce`).
//!
//! Keys rotate: a token whose `kid` is not in the cached set makes the set be
//! fetched again, at most [`REFETCH_BUDGET`] times a minute per issuer, so a
//! stream of tokens with made-up key ids cannot turn into a stream of requests
//! to the provider. Cached entries live [`TTL`].

use super::client::Client;
use super::{ProviderError, ProviderUser};
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use parking_lot::Mutex;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long a discovery document or key set is used before it is fetched again.
const TTL: Duration = Duration::from_secs(3600);
/// Key-set fetches allowed per issuer per minute for unknown key ids.
const REFETCH_BUDGET: usize = 10;
/// Clock skew tolerated on `exp`, `iat` and `nbf`.
const LEEWAY_SECS: u64 = 60;

/// The endpoints of an issuer (its `/.well-known/openid-configuration`).
#[derive(Clone, Debug)]
pub struct Discovery {
    /// Where the browser goes to sign in.
    pub authorization_endpoint: String,
    /// Where codes are traded for tokens.
    pub token_endpoint: String,
    /// The issuer's public keys.
    pub jwks_uri: String,
}

/// How an ID token's `nonce` is checked.
#[derive(Clone, Copy, Debug)]
pub enum IdTokenCheck<'a> {
    /// Our own browser flow: the token must carry exactly the nonce we sent.
    Nonce(&'a str),
    /// A token a native app obtained (`grant_type=id_token`), with the nonce the
    /// app sent us, if any. GoTrue's rule: the app gives the raw nonce, the token
    /// carries its SHA-256 in hex (Apple and Google sign-in SDKs hash it); both
    /// or neither must be present.
    Native(Option<&'a str>),
}

struct Keys {
    set: Arc<JwkSet>,
    fetched: Instant,
    /// When unknown key ids made the set be fetched again, newest last.
    refetches: Vec<Instant>,
}

/// Discovery documents and key sets by issuer.
#[derive(Default)]
pub struct Cache {
    discovery: Mutex<HashMap<String, (Instant, Arc<Discovery>)>>,
    keys: Mutex<HashMap<String, Keys>>,
}

impl Cache {
    /// The issuer's endpoints (cached).
    pub async fn discovery(
        &self,
        client: &Client,
        issuer: &str,
    ) -> Result<Arc<Discovery>, ProviderError> {
        if let Some((at, d)) = self.discovery.lock().get(issuer) {
            if at.elapsed() < TTL {
                return Ok(d.clone());
            }
        }
        let doc = client
            .get_json(&format!("{issuer}/.well-known/openid-configuration"), None)
            .await?;
        // An https issuer's endpoints are https too: the client secret and the
        // code go to the token endpoint.
        let https_only = issuer.starts_with("https://");
        let field = |k: &str| {
            doc.get(k)
                .and_then(Value::as_str)
                .filter(|s| s.starts_with("https://") || (!https_only && s.starts_with("http://")))
                .map(str::to_string)
                .ok_or_else(|| ProviderError::Garbage(format!("the discovery document has no {k}")))
        };
        if doc
            .get("issuer")
            .and_then(Value::as_str)
            .map(|s| s.trim_end_matches('/'))
            != Some(issuer)
        {
            return Err(ProviderError::Garbage(
                "the discovery document names another issuer".into(),
            ));
        }
        let d = Arc::new(Discovery {
            authorization_endpoint: field("authorization_endpoint")?,
            token_endpoint: field("token_endpoint")?,
            jwks_uri: field("jwks_uri")?,
        });
        self.discovery
            .lock()
            .insert(issuer.to_string(), (Instant::now(), d.clone()));
        Ok(d)
    }

    /// The issuer's key set; `refresh` when a token names a key not in the cached
    /// one (refused once the budget is spent: the cached set is returned).
    async fn keys(
        &self,
        client: &Client,
        issuer: &str,
        refresh: bool,
    ) -> Result<Arc<JwkSet>, ProviderError> {
        {
            let mut map = self.keys.lock();
            if let Some(k) = map.get_mut(issuer) {
                let fresh = k.fetched.elapsed() < TTL;
                if fresh && !refresh {
                    return Ok(k.set.clone());
                }
                if fresh {
                    k.refetches
                        .retain(|t| t.elapsed() < Duration::from_secs(60));
                    if k.refetches.len() >= REFETCH_BUDGET {
                        return Ok(k.set.clone());
                    }
                    k.refetches.push(Instant::now());
                }
            }
        }
        let d = self.discovery(client, issuer).await?;
        let raw = client.get_json(&d.jwks_uri, None).await?;
        let set: JwkSet = serde_json::from_value(raw)
            .map_err(|_| ProviderError::Garbage("the key set is not a JWK set".into()))?;
        let set = Arc::new(set);
        let mut map = self.keys.lock();
        let refetches = map.remove(issuer).map(|k| k.refetches).unwrap_or_default();
        map.insert(
            issuer.to_string(),
            Keys {
                set: set.clone(),
                fetched: Instant::now(),
                refetches,
            },
        );
        Ok(set)
    }

    /// Verifies `token` as an ID token of `issuer` for one of `audiences` and
    /// returns its claims.
    pub async fn verify(
        &self,
        client: &Client,
        issuer: &str,
        token: &str,
        audiences: &[String],
        check: IdTokenCheck<'_>,
    ) -> Result<Value, ProviderError> {
        let bad = |m: &str| ProviderError::BadIdToken(m.to_string());
        let header = jsonwebtoken::decode_header(token).map_err(|_| bad("Bad ID token"))?;
        if !matches!(
            header.alg,
            Algorithm::RS256
                | Algorithm::RS384
                | Algorithm::RS512
                | Algorithm::PS256
                | Algorithm::PS384
                | Algorithm::PS512
                | Algorithm::ES256
                | Algorithm::ES384
                | Algorithm::EdDSA
        ) {
            return Err(bad("Bad ID token: unsupported signing algorithm"));
        }
        let mut set = self.keys(client, issuer, false).await?;
        let find = |set: &JwkSet| match &header.kid {
            Some(kid) => set.find(kid).cloned(),
            // No key id: only unambiguous when the set has one key.
            None if set.keys.len() == 1 => set.keys.first().cloned(),
            None => None,
        };
        let jwk = match find(&set) {
            Some(k) => k,
            None => {
                set = self.keys(client, issuer, true).await?;
                find(&set).ok_or_else(|| bad("Bad ID token: signed by an unknown key"))?
            }
        };
        let key = DecodingKey::from_jwk(&jwk).map_err(|_| bad("Bad ID token: unusable key"))?;
        let mut v = Validation::new(header.alg);
        v.leeway = LEEWAY_SECS;
        v.set_audience(audiences);
        // As configured, or with the trailing `/` some issuers put in `iss`
        // (Auth0's); the configured one is kept without it.
        let mut issuers = vec![issuer.to_string(), format!("{issuer}/")];
        if issuer == "https://accounts.google.com" {
            // Google's tokens carry either form.
            issuers.push("accounts.google.com".into());
        }
        v.set_issuer(&issuers);
        v.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        let data = jsonwebtoken::decode::<Value>(token, &key, &v).map_err(|e| {
            use jsonwebtoken::errors::ErrorKind as K;
            bad(match e.kind() {
                K::InvalidAudience => "Unacceptable audience in id_token",
                K::InvalidIssuer => "Bad ID token: wrong issuer",
                K::ExpiredSignature => "Bad ID token: token is expired",
                K::ImmatureSignature => "Bad ID token: token is not valid yet",
                K::InvalidSignature => "Bad ID token: invalid signature",
                K::MissingRequiredClaim(_) => "Bad ID token: a required claim is missing",
                _ => "Bad ID token",
            })
        })?;
        let claims = data.claims;
        let got = claims.get("nonce").and_then(Value::as_str);
        match check {
            IdTokenCheck::Nonce(sent) => {
                if got != Some(sent) {
                    return Err(bad("Nonces mismatch"));
                }
            }
            IdTokenCheck::Native(given) => match (given.filter(|n| !n.is_empty()), got) {
                (None, None) => {}
                (Some(raw), Some(got)) => {
                    let hashed = hex::encode(Sha256::digest(raw.as_bytes()));
                    if got != hashed {
                        return Err(bad("Nonces mismatch"));
                    }
                }
                _ => {
                    return Err(bad(
                        "Passed nonce and nonce in id_token should either both exist or not.",
                    ))
                }
            },
        }
        Ok(claims)
    }
}

/// The user an ID token (or userinfo answer) describes, with GoTrue's
/// `identity_data` fields.
pub fn user_from_claims(issuer: &str, c: Value) -> ProviderUser {
    let text = |k: &str| c.get(k).and_then(Value::as_str).map(str::to_string);
    let id = text("sub").unwrap_or_default();
    let email = text("email")
        .filter(|e| !e.is_empty())
        .map(|e| e.to_ascii_lowercase());
    // Apple sends the flag as the string "true".
    let verified = email.is_some()
        && match c.get("email_verified") {
            Some(Value::Bool(b)) => *b,
            Some(Value::String(s)) => s == "true",
            _ => false,
        };
    let picture = text("picture");
    ProviderUser::new(
        issuer,
        id,
        email,
        verified,
        text("name"),
        picture.clone(),
        json!({
            "given_name": text("given_name"),
            "family_name": text("family_name"),
            "preferred_username": text("preferred_username"),
            "picture": picture,
        }),
    )
}
