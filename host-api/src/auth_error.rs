//! The typed error of the key/JWT layer. Each API renders it in its own client's
//! shape (PostgREST, GoTrue, storage-api, platform), so it carries a stable code and
//! an HTTP status but no body format.

/// Why a request's key or token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No `apikey` header (nor `apikey` query parameter).
    #[error("No API key found in request")]
    NoApiKey,
    /// The `apikey` is unknown, revoked, malformed or not an API key at all.
    #[error("Invalid API key")]
    InvalidApiKey,
    /// The bearer token is malformed, forged, uses a refused algorithm or role.
    #[error("Invalid JWT: {0}")]
    InvalidJwt(&'static str),
    /// The bearer token's `exp` has passed.
    #[error("JWT expired")]
    JwtExpired,
    /// A secret key (or a `service_role` JWT key) came in the query string, where
    /// proxies, browsers and access logs record it; only publishable keys may.
    #[error("Secret keys must not be sent in the query string; send the key in the apikey header")]
    SecretKeyInQuery,
    /// Keys are not loaded yet (database unreachable at start).
    #[error("Service not ready: API keys are not loaded yet")]
    NotReady,
}

impl AuthError {
    /// Stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            AuthError::NoApiKey => "no_api_key",
            AuthError::InvalidApiKey => "invalid_api_key",
            AuthError::InvalidJwt(_) => "invalid_jwt",
            AuthError::SecretKeyInQuery => "secret_key_in_query",
            AuthError::JwtExpired => "jwt_expired",
            AuthError::NotReady => "not_ready",
        }
    }

    /// HTTP status for this error.
    pub fn status(&self) -> u16 {
        match self {
            AuthError::NotReady => 503,
            _ => 401,
        }
    }
}
