//! A small OAuth 2 / OpenID Connect client: the provider side of "Sign in with
//! GitHub / Google / any OIDC issuer". It knows providers, builds their
//! authorize URLs, trades codes for tokens, verifies ID tokens against the
//! issuer's published keys, and reads who the user is. It knows nothing about
//! Wasmbase users or sessions — `/auth/v1` (and later the dashboard's operator
//! sign-in) decides what a provider identity means — so it stays reusable.
//!
//! Every call to a provider is bounded (timeout, body size) and every failure
//! is a [`ProviderError`] that never carries a secret: client secrets, codes
//! and tokens are not put in errors or logs.

mod client;
mod github;
mod oidc;

pub use client::short;
pub use oidc::IdTokenCheck;

use crate::config::ExternalProvider;
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// What kind of provider a name is, which decides the endpoints and how the
/// user is read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Kind {
    /// GitHub's OAuth 2 (no ID token; the user and e-mails come from its API).
    GitHub {
        /// Web base, for `/login/oauth/authorize` and `/login/oauth/access_token`.
        web: String,
        /// API base, for `/user` and `/user/emails`.
        api: String,
    },
    /// OpenID Connect, endpoints from the issuer's discovery document.
    Oidc {
        /// The issuer URL (`iss` of its ID tokens).
        issuer: String,
    },
}

/// One configured provider, resolved from `[auth.external.<name>]`.
#[derive(Clone)]
pub struct Provider {
    /// The name apps pass as `provider` (`github`, `google`, `acme`).
    pub name: String,
    /// GitHub or OIDC.
    pub kind: Kind,
    /// OAuth client id.
    pub client_id: String,
    /// OAuth client secret (never logged: `Debug` leaves it out).
    secret: String,
    /// Where the provider sends the browser back.
    pub redirect_uri: String,
    /// Scopes always requested, plus the configured extra ones.
    pub scopes: Vec<String>,
    /// Accepted `aud` values of ID tokens: the client id and any additional ones.
    pub audiences: Vec<String>,
}

impl Provider {
    /// Resolves one configured provider; `callback` is this server's
    /// `/auth/v1/callback` URL, the default redirect URI.
    pub fn from_config(name: &str, c: &ExternalProvider, callback: &str) -> Provider {
        let trim = |s: &str| s.trim_end_matches('/').to_string();
        let kind = match (name, &c.issuer) {
            ("github", _) => Kind::GitHub {
                web: trim(c.url.as_deref().unwrap_or("https://github.com")),
                api: trim(c.api_url.as_deref().unwrap_or("https://api.github.com")),
            },
            (_, Some(i)) => Kind::Oidc { issuer: trim(i) },
            ("google", None) => Kind::Oidc {
                issuer: "https://accounts.google.com".into(),
            },
            // `Config::validate` refuses any other name without an issuer.
            _ => Kind::Oidc {
                issuer: "https://appleid.apple.com".into(),
            },
        };
        let mut scopes: Vec<String> = match kind {
            Kind::GitHub { .. } => vec!["user:email".into()],
            Kind::Oidc { .. } => vec!["openid".into(), "email".into(), "profile".into()],
        };
        for s in &c.scopes {
            if !scopes.contains(s) {
                scopes.push(s.clone());
            }
        }
        let mut audiences = vec![c.client_id.clone()];
        audiences.extend(
            c.additional_client_ids
                .iter()
                .filter(|a| !a.is_empty())
                .cloned(),
        );
        Provider {
            name: name.to_string(),
            kind,
            client_id: c.client_id.clone(),
            secret: c.secret.clone(),
            redirect_uri: c
                .redirect_uri
                .clone()
                .unwrap_or_else(|| callback.to_string()),
            scopes,
            audiences,
        }
    }
}

/// Why a provider call failed. The texts are safe to show and to log.
#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    /// Could not reach the provider, it timed out, or it answered 5xx.
    #[error("the provider could not be reached: {0}")]
    Unreachable(String),
    /// The provider answered something that is not what the protocol says.
    #[error("the provider answered something unexpected: {0}")]
    Garbage(String),
    /// The provider refused (a bad or used code, a wrong client secret).
    #[error("the provider refused: {0}")]
    Refused(String),
    /// An ID token failed verification (signature, issuer, audience, expiry, nonce).
    #[error("{0}")]
    BadIdToken(String),
}

/// Who the provider says the user is.
#[derive(Clone, Debug)]
pub struct ProviderUser {
    /// The provider's stable user id (`sub`; GitHub's numeric id as text).
    pub id: String,
    /// The e-mail address the provider reports, lower-cased.
    pub email: Option<String>,
    /// Whether the provider says the address is verified.
    pub email_verified: bool,
    /// GoTrue's `identity_data`: `sub`, `email`, `email_verified`, `name`,
    /// `avatar_url`, … as the provider gave them.
    pub data: Value,
}

impl ProviderUser {
    /// A user with GoTrue's `identity_data`: `iss`, `sub`, `provider_id`,
    /// `email`, `email_verified`, `phone_verified`, `name`, `full_name`,
    /// `avatar_url`, plus the provider's `extra` fields; absent ones left out.
    fn new(
        iss: &str,
        id: String,
        email: Option<String>,
        email_verified: bool,
        name: Option<String>,
        avatar_url: Option<String>,
        extra: Value,
    ) -> ProviderUser {
        let mut data = serde_json::json!({
            "iss": iss,
            "sub": id,
            "provider_id": id,
            "email": email,
            "email_verified": email_verified,
            "phone_verified": false,
            "name": name,
            "full_name": name,
            "avatar_url": avatar_url,
        });
        if let (Some(d), Value::Object(x)) = (data.as_object_mut(), extra) {
            d.extend(x);
            d.retain(|_, v| !v.is_null());
        }
        ProviderUser {
            id,
            email,
            email_verified,
            data,
        }
    }
}

/// Tokens from the provider's token endpoint (`Debug` shows none of them).
pub struct Tokens {
    /// The provider's access token (an app may call the provider's API with it).
    pub access_token: String,
    /// The provider's refresh token, if it gave one.
    pub refresh_token: Option<String>,
    /// The OIDC ID token, if any.
    pub id_token: Option<String>,
}

impl std::fmt::Debug for Provider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Provider")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("client_id", &self.client_id)
            .field("redirect_uri", &self.redirect_uri)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokens")
            .field("refresh_token", &self.refresh_token.is_some())
            .field("id_token", &self.id_token.is_some())
            .finish_non_exhaustive()
    }
}

/// The configured providers and the client that talks to them (with its
/// discovery and key caches). One per server.
pub struct Providers {
    providers: BTreeMap<String, Arc<Provider>>,
    client: client::Client,
    oidc: oidc::Cache,
}

impl Providers {
    /// The enabled providers of `config`; `callback` is `<external_url>/auth/v1/callback`.
    pub fn new(
        config: &BTreeMap<String, ExternalProvider>,
        callback: &str,
        timeout: Duration,
    ) -> reqwest::Result<Providers> {
        Ok(Providers {
            providers: config
                .iter()
                .filter(|(_, c)| c.enabled)
                .map(|(n, c)| (n.clone(), Arc::new(Provider::from_config(n, c, callback))))
                .collect(),
            client: client::Client::new(timeout)?,
            oidc: oidc::Cache::default(),
        })
    }

    /// An enabled provider by name.
    pub fn get(&self, name: &str) -> Option<Arc<Provider>> {
        self.providers.get(name).cloned()
    }

    /// Names of the enabled providers.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.providers.keys().map(String::as_str)
    }

    /// The provider's token endpoint (`token`) or its authorization endpoint:
    /// GitHub's fixed paths, or the issuer's discovery document.
    async fn endpoint(&self, p: &Provider, token: bool) -> Result<String, ProviderError> {
        Ok(match &p.kind {
            Kind::GitHub { web, .. } if token => format!("{web}/login/oauth/access_token"),
            Kind::GitHub { web, .. } => format!("{web}/login/oauth/authorize"),
            Kind::Oidc { issuer } => {
                let d = self.oidc.discovery(&self.client, issuer).await?;
                if token {
                    d.token_endpoint.clone()
                } else {
                    d.authorization_endpoint.clone()
                }
            }
        })
    }

    /// The URL to send the browser to. `state` and `challenge` (S256 of our own
    /// verifier) bind the answer to this flow; `nonce` binds the ID token.
    pub async fn authorize_url(
        &self,
        p: &Provider,
        state: &str,
        challenge: &str,
        nonce: &str,
        extra_scopes: &[String],
        extra_params: &[(String, String)],
    ) -> Result<url::Url, ProviderError> {
        let endpoint = self.endpoint(p, false).await?;
        let mut url = url::Url::parse(&endpoint)
            .map_err(|e| ProviderError::Garbage(format!("authorization endpoint: {e}")))?;
        let mut scopes = p.scopes.clone();
        for s in extra_scopes {
            if !scopes.contains(s) {
                scopes.push(s.clone());
            }
        }
        {
            let mut q = url.query_pairs_mut();
            // The app's extra parameters first, so none of ours can be replaced.
            for (k, v) in extra_params {
                if !RESERVED_PARAMS.contains(&k.as_str()) {
                    q.append_pair(k, v);
                }
            }
            q.append_pair("client_id", &p.client_id)
                .append_pair("redirect_uri", &p.redirect_uri)
                .append_pair("response_type", "code")
                .append_pair("scope", &scopes.join(" "))
                .append_pair("state", state)
                .append_pair("code_challenge", challenge)
                .append_pair("code_challenge_method", "S256");
            if matches!(p.kind, Kind::Oidc { .. }) {
                q.append_pair("nonce", nonce);
            }
        }
        Ok(url)
    }

    /// Trades the code the provider sent back for tokens.
    pub async fn exchange(
        &self,
        p: &Provider,
        code: &str,
        verifier: &str,
    ) -> Result<Tokens, ProviderError> {
        let endpoint = self.endpoint(p, true).await?;
        self.client
            .token(
                &endpoint,
                &p.client_id,
                &p.secret,
                code,
                &p.redirect_uri,
                verifier,
            )
            .await
    }

    /// Who signed in, from the tokens of [`Providers::exchange`]. For OIDC the
    /// ID token is verified (issuer, audience, expiry, signature, `nonce`).
    pub async fn user(
        &self,
        p: &Provider,
        tokens: &Tokens,
        nonce: &str,
    ) -> Result<ProviderUser, ProviderError> {
        match &p.kind {
            Kind::GitHub { api, .. } => github::user(&self.client, api, &tokens.access_token).await,
            Kind::Oidc { issuer } => {
                let id_token = tokens.id_token.as_deref().ok_or_else(|| {
                    ProviderError::Garbage("the token response has no id_token".into())
                })?;
                let claims = self
                    .oidc
                    .verify(
                        &self.client,
                        issuer,
                        id_token,
                        &p.audiences,
                        IdTokenCheck::Nonce(nonce),
                    )
                    .await?;
                Ok(oidc::user_from_claims(issuer, claims))
            }
        }
    }

    /// Verifies an ID token a native app got from the provider itself
    /// (`signInWithIdToken`) and reads the user from it.
    pub async fn user_from_id_token(
        &self,
        p: &Provider,
        id_token: &str,
        check: IdTokenCheck<'_>,
    ) -> Result<ProviderUser, ProviderError> {
        let Kind::Oidc { issuer } = &p.kind else {
            return Err(ProviderError::BadIdToken(format!(
                "{} does not issue ID tokens",
                p.name
            )));
        };
        let claims = self
            .oidc
            .verify(&self.client, issuer, id_token, &p.audiences, check)
            .await?;
        Ok(oidc::user_from_claims(issuer, claims))
    }
}

/// Authorize-URL parameters an app's `queryParams` may not set: they carry the
/// flow's binding (state, PKCE, nonce) or its identity (client, callback).
const RESERVED_PARAMS: &[&str] = &[
    "client_id",
    "redirect_uri",
    "response_type",
    "scope",
    "state",
    "code_challenge",
    "code_challenge_method",
    "nonce",
];
