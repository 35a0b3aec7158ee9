//! Parsing shared by the auth handlers: lenient JSON bodies, request metadata,
//! and the three kinds of caller (any key, a signed-in user, an admin).

use super::error::{AuthApiError, AuthResult};
use crate::server::caller;
use crate::server::state::AppState;
use axum::extract::{ConnectInfo, FromRequestParts};
use http::request::Parts;
use serde::de::DeserializeOwned;
use serde_json::Value;
use std::collections::HashMap;
use std::net::SocketAddr;
use uuid::Uuid;
use wasmbase_host_api::{Principal, Role};

/// Parses a JSON body leniently, as GoTrue does: unknown fields are ignored,
/// `null` is accepted wherever a value is optional, an empty body is `{}`.
pub fn body<T: DeserializeOwned>(bytes: &[u8]) -> AuthResult<T> {
    let bytes = if bytes.iter().all(u8::is_ascii_whitespace) {
        b"{}" as &[u8]
    } else {
        bytes
    };
    serde_json::from_slice(bytes).map_err(|e| {
        AuthApiError::new(
            400,
            "bad_json",
            format!("Could not parse request body as JSON: {e}"),
        )
    })
}

/// Refuses user data holding a NUL character in any key or string (400
/// `validation_failed`): PostgreSQL's text and jsonb cannot store one, so it
/// would only fail later, in SQL.
pub fn reject_nul(v: &Value, field: &str) -> AuthResult<()> {
    fn has_nul(v: &Value) -> bool {
        match v {
            Value::String(s) => s.contains('\0'),
            Value::Array(a) => a.iter().any(has_nul),
            Value::Object(m) => m.iter().any(|(k, v)| k.contains('\0') || has_nul(v)),
            _ => false,
        }
    }
    if has_nul(v) {
        return Err(AuthApiError::validation(format!(
            "{field} must not contain the NUL character (\\u0000)"
        )));
    }
    Ok(())
}

/// Where a request comes from and what it asks to be redirected to.
#[derive(Clone)]
pub struct Meta {
    /// Client IP (the peer, or the last `X-Forwarded-For` hop when trusted).
    pub ip: String,
    /// `User-Agent`, for the session row.
    pub user_agent: Option<String>,
    /// Query parameters.
    pub query: HashMap<String, String>,
}

impl Meta {
    /// The `redirect_to` query parameter (auth-js sends it there).
    pub fn redirect_to(&self) -> Option<&str> {
        self.query
            .get("redirect_to")
            .map(String::as_str)
            .filter(|s| !s.is_empty())
    }
}

impl FromRequestParts<AppState> for Meta {
    type Rejection = AuthApiError;

    async fn from_request_parts(parts: &mut Parts, st: &AppState) -> AuthResult<Meta> {
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip().to_string())
            .unwrap_or_default();
        let forwarded = st
            .config
            .server
            .trust_forwarded_for
            .then(|| {
                parts
                    .headers
                    .get("x-forwarded-for")?
                    .to_str()
                    .ok()?
                    .rsplit(',')
                    .next()
                    .map(|s| s.trim().to_string())
            })
            .flatten()
            .filter(|s| !s.is_empty());
        let query = parts
            .uri
            .query()
            .map(|q| {
                url::form_urlencoded::parse(q.as_bytes())
                    .into_owned()
                    .collect()
            })
            .unwrap_or_default();
        Ok(Meta {
            ip: forwarded.unwrap_or(peer),
            user_agent: parts
                .headers
                .get(http::header::USER_AGENT)
                .and_then(|v| v.to_str().ok())
                .map(|s| s.chars().take(512).collect()),
            query,
        })
    }
}

/// Any request with a valid `apikey` (the gateway rule of Supabase), or a route
/// on the gate's open list; rendered in GoTrue's error shape.
pub type Keyed = caller::Keyed<AuthApiError>;

/// A signed-in user: a valid key plus a user access token. The session is checked
/// against the database by [`super::users::load_session_user`].
pub struct UserCaller {
    /// The user's id (`sub`).
    pub user_id: Uuid,
    /// The session the token belongs to (`session_id`), if any.
    pub session_id: Option<Uuid>,
}

impl FromRequestParts<AppState> for UserCaller {
    type Rejection = AuthApiError;

    async fn from_request_parts(parts: &mut Parts, st: &AppState) -> AuthResult<UserCaller> {
        let v = caller::user_token(parts, st)?.ok_or_else(|| {
            AuthApiError::new(
                401,
                "no_authorization",
                "This endpoint requires a valid Bearer token",
            )
        })?;
        let sub =
            v.claims.get("sub").and_then(Value::as_str).ok_or_else(|| {
                AuthApiError::new(403, "bad_jwt", "invalid claim: missing sub claim")
            })?;
        if v.role != Role::Authenticated {
            return Err(AuthApiError::new(
                403,
                "bad_jwt",
                "invalid claim: not a user token",
            ));
        }
        let user_id = Uuid::parse_str(sub).map_err(|_| {
            AuthApiError::new(400, "bad_jwt", "invalid claim: sub claim must be a UUID")
        })?;
        let bad_session =
            || AuthApiError::new(403, "bad_jwt", "invalid claim: session_id must be a UUID");
        let session_id = match v.claims.get("session_id") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(Uuid::parse_str(s).map_err(|_| bad_session())?),
            Some(_) => return Err(bad_session()),
        };
        Ok(UserCaller {
            user_id,
            session_id,
        })
    }
}

/// For `POST /token`: the bearer's user, looked at only for
/// `grant_type=id_token` (its `link_identity`), so the refresh and password
/// grants do not verify a bearer they do not use.
pub struct IdTokenCaller(pub Option<AuthResult<UserCaller>>);

impl FromRequestParts<AppState> for IdTokenCaller {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        st: &AppState,
    ) -> Result<IdTokenCaller, std::convert::Infallible> {
        // The refresh and password grants (the hot ones) stop at `contains`.
        let id_token = parts.uri.query().is_some_and(|q| {
            q.contains("id_token")
                && url::form_urlencoded::parse(q.as_bytes())
                    .any(|(k, v)| k == "grant_type" && v == "id_token")
        });
        if !id_token {
            return Ok(IdTokenCaller(None));
        }
        Ok(IdTokenCaller(Some(
            UserCaller::from_request_parts(parts, st).await,
        )))
    }
}

/// A caller with the service role (secret key or service_role JWT).
pub struct AdminCaller(pub Principal);

impl FromRequestParts<AppState> for AdminCaller {
    type Rejection = AuthApiError;

    async fn from_request_parts(parts: &mut Parts, st: &AppState) -> AuthResult<AdminCaller> {
        let p = caller::authenticate(parts, st)?;
        if !p.is_service() {
            return Err(AuthApiError::new(403, "not_admin", "User not allowed"));
        }
        Ok(AdminCaller(p))
    }
}

/// Enforces the per-IP and (when given) per-email limits.
pub fn rate_limit(st: &AppState, meta: &Meta, email: Option<&str>) -> AuthResult<()> {
    ip_limit(st, meta)?;
    if let Some(e) = email {
        st.auth
            .email_limit
            .check(&format!("email:{e}"))
            .map_err(too_many)?;
    }
    Ok(())
}

/// The per-IP limit alone.
pub fn ip_limit(st: &AppState, meta: &Meta) -> AuthResult<()> {
    st.auth.ip_limit.check(&ip_key(&meta.ip)).map_err(too_many)
}

/// The per-IP limit on anonymous sign-ins (counted per hour, as GoTrue's).
pub fn anonymous_limit(st: &AppState, meta: &Meta) -> AuthResult<()> {
    st.auth
        .anonymous_limit
        .check(&ip_key(&meta.ip))
        .map_err(too_many)
}

/// The per-IP limiter's key: the address, or its /64 for IPv6 (one host usually
/// controls a whole /64, so per-address keys would give it 2^64 budgets).
fn ip_key(ip: &str) -> String {
    match ip.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V6(v6)) if v6.to_ipv4_mapped().is_none() => {
            let s = v6.segments();
            format!("ip6:{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
        }
        Ok(std::net::IpAddr::V6(v6)) => format!("ip:{}", v6.to_ipv4_mapped().expect("checked")),
        _ => format!("ip:{ip}"),
    }
}

/// Password sign-in counts only *failed* attempts per address, so nobody can lock
/// a user out with traffic alone, yet guessing stays at the configured rate.
pub fn password_failures_limited(st: &AppState, email: &str) -> AuthResult<()> {
    st.auth
        .email_limit
        .limited(&format!("login:{email}"))
        .map_err(too_many)
}

/// Records a failed password attempt for `email`.
pub fn record_password_failure(st: &AppState, email: &str) {
    st.auth.email_limit.record(&format!("login:{email}"));
}

fn too_many(wait: u64) -> AuthApiError {
    AuthApiError::new(429, "over_request_rate_limit", "Request rate limit reached")
        .retry_after(wait)
}

#[cfg(test)]
mod tests {
    #[test]
    fn ipv6_clients_share_their_64() {
        assert_eq!(
            super::ip_key("2001:db8:1:2:aaaa::1"),
            super::ip_key("2001:db8:1:2:bbbb::9")
        );
        assert_ne!(
            super::ip_key("2001:db8:1:2::1"),
            super::ip_key("2001:db8:1:3::1")
        );
        assert_eq!(super::ip_key("::ffff:10.0.0.1"), super::ip_key("10.0.0.1"));
        assert_eq!(super::ip_key("127.0.0.1"), "ip:127.0.0.1");
    }
}
