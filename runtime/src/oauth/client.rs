//! HTTP to providers: bounded in time and size, JSON in and out, and errors
//! that say what went wrong without repeating what was sent (codes, secrets).

use super::{ProviderError, Tokens};
use serde_json::Value;
use std::time::Duration;

/// Largest provider answer read (discovery documents, key sets and user
/// objects are a few KiB).
const MAX_BODY: usize = 1 << 20;

/// The provider-facing HTTP client.
pub struct Client {
    http: reqwest::Client,
}

impl Client {
    /// A client whose every call ends within `timeout` (an error only if the
    /// TLS backend cannot start: then the server does not either).
    pub fn new(timeout: Duration) -> reqwest::Result<Client> {
        Ok(Client {
            http: reqwest::Client::builder()
                .timeout(timeout)
                .connect_timeout(timeout)
                // A token endpoint that redirects is misconfigured; discovery and
                // key sets are fetched from where the issuer says they are.
                .redirect(reqwest::redirect::Policy::none())
                // GitHub's API refuses requests without a User-Agent.
                .user_agent(concat!("wasmbase/", env!("CARGO_PKG_VERSION")))
                .build()?,
        })
    }

    /// GETs JSON, with a bearer token when given.
    pub async fn get_json(&self, url: &str, bearer: Option<&str>) -> Result<Value, ProviderError> {
        let mut req = self
            .http
            .get(url)
            .header(http::header::ACCEPT, "application/json");
        if let Some(t) = bearer {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.map_err(unreachable)?;
        let status = resp.status();
        let body = read(resp).await?;
        if status.is_server_error() {
            return Err(ProviderError::Unreachable(format!(
                "{url} answered {status}"
            )));
        }
        if !status.is_success() {
            return Err(ProviderError::Refused(format!("{url} answered {status}")));
        }
        serde_json::from_slice(&body)
            .map_err(|_| ProviderError::Garbage(format!("{url} did not answer JSON")))
    }

    /// The authorization-code grant at `endpoint` (RFC 6749 §4.1.3, with the
    /// PKCE verifier of RFC 7636).
    pub async fn token(
        &self,
        endpoint: &str,
        client_id: &str,
        secret: &str,
        code: &str,
        redirect_uri: &str,
        verifier: &str,
    ) -> Result<Tokens, ProviderError> {
        let form = [
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", redirect_uri),
            ("client_id", client_id),
            ("client_secret", secret),
            ("code_verifier", verifier),
        ];
        let resp = self
            .http
            .post(endpoint)
            .header(http::header::ACCEPT, "application/json")
            .form(&form)
            .send()
            .await
            .map_err(unreachable)?;
        let status = resp.status();
        let body = read(resp).await?;
        if status.is_server_error() {
            return Err(ProviderError::Unreachable(format!(
                "the token endpoint answered {status}"
            )));
        }
        let v: Value = serde_json::from_slice(&body).map_err(|_| {
            ProviderError::Garbage(format!("the token endpoint answered {status}, not JSON"))
        })?;
        // GitHub reports a bad code with 200 and an `error` field.
        if let Some(e) = v.get("error").and_then(Value::as_str) {
            return Err(ProviderError::Refused(format!(
                "token endpoint: {}",
                short(e)
            )));
        }
        if !status.is_success() {
            return Err(ProviderError::Refused(format!(
                "the token endpoint answered {status}"
            )));
        }
        let text = |k: &str| {
            v.get(k)
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
        };
        Ok(Tokens {
            access_token: text("access_token").ok_or_else(|| {
                ProviderError::Garbage("the token response has no access_token".into())
            })?,
            refresh_token: text("refresh_token"),
            id_token: text("id_token"),
        })
    }
}

/// Reads a body of at most [`MAX_BODY`] bytes.
async fn read(mut resp: reqwest::Response) -> Result<Vec<u8>, ProviderError> {
    let mut out = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(unreachable)? {
        if out.len() + chunk.len() > MAX_BODY {
            return Err(ProviderError::Garbage("the answer is too large".into()));
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

/// A transport failure, without the URL's query (which may hold a code).
fn unreachable(e: reqwest::Error) -> ProviderError {
    let what = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "connection failed"
    } else {
        "request failed"
    };
    let host = e
        .url()
        .and_then(|u| u.host_str().map(str::to_string))
        .unwrap_or_default();
    ProviderError::Unreachable(format!("{host}: {what}"))
}

/// A provider-chosen string, cut to a printable length.
pub fn short(s: &str) -> String {
    s.chars().filter(|c| !c.is_control()).take(200).collect()
}
