//! Signed URL tokens: JWTs signed with the project's HS256 secret carrying
//! `url` (`bucket/path`), `scope` (`download` or `upload`), `iat`, `exp` and,
//! for uploads, `upsert` and `owner` — storage-api's claims, so every node
//! verifies them with the shared secret. They carry no `role`, so no token of
//! this kind ever passes as an access token, and an access token never passes
//! here (no `scope`). A token opens exactly the object it names.

use super::error::StorageError;
use crate::jwt::JwtKeys;
use serde_json::{json, Value};

/// How long a signed upload URL lasts (as Supabase's hosted default).
pub const UPLOAD_URL_SECS: u64 = 2 * 60 * 60;

/// What a token may be used for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// `GET /object/sign/...`
    Download,
    /// `PUT /object/upload/sign/...`
    Upload,
    /// `GET /render/image/sign/...`: one transformation of the object, not
    /// the object itself.
    Render,
}

impl Scope {
    fn as_str(self) -> &'static str {
        match self {
            Scope::Download => "download",
            Scope::Upload => "upload",
            Scope::Render => "render",
        }
    }
}

/// The claims of a verified token.
#[derive(Debug, Clone)]
pub struct Grant {
    /// Upload tokens: whether an existing object may be replaced.
    pub upsert: bool,
    /// Upload tokens: the `sub` of who asked for the URL, if anyone.
    pub owner: Option<String>,
    /// When the token expires (seconds since the epoch): a signed download's
    /// `Expires` header.
    pub exp: u64,
    /// Render tokens: the image transformation the URL serves.
    pub transformations: Option<String>,
}

fn now() -> u64 {
    jsonwebtoken::get_current_timestamp()
}

/// Signs a token for `bucket`/`path`, valid `expires_in` seconds.
pub fn sign(
    jwt: &JwtKeys,
    scope: Scope,
    bucket: &str,
    path: &str,
    expires_in: u64,
    upload: Option<(bool, Option<&str>)>,
) -> Result<String, StorageError> {
    let mut claims = claims(scope, bucket, path, expires_in);
    if let Some((upsert, owner)) = upload {
        claims["upsert"] = json!(upsert);
        if let Some(o) = owner {
            claims["owner"] = json!(o);
        }
    }
    jwt.sign_hs256(&claims)
        .map_err(|_| StorageError::internal())
}

/// Signs a token for a transformed image (`/render/image/sign/...`, scope
/// `render`, so it does not open the original at `/object/sign`):
/// `transformations` (a `Transform::to_query`) are fixed by the token, so the
/// URL's query cannot ask for another rendering.
pub fn sign_render(
    jwt: &JwtKeys,
    bucket: &str,
    path: &str,
    expires_in: u64,
    transformations: &str,
) -> Result<String, StorageError> {
    let mut claims = claims(Scope::Render, bucket, path, expires_in);
    claims["transformations"] = json!(transformations);
    jwt.sign_hs256(&claims)
        .map_err(|_| StorageError::internal())
}

fn claims(scope: Scope, bucket: &str, path: &str, expires_in: u64) -> Value {
    let iat = now();
    json!({
        "url": format!("{bucket}/{path}"),
        "scope": scope.as_str(),
        "iat": iat,
        "exp": iat.saturating_add(expires_in),
    })
}

/// Verifies `token` for `scope` on exactly `bucket`/`path` (signature and
/// expiry first, no leeway: a one-second URL is dead after that second).
pub fn verify(
    jwt: &JwtKeys,
    token: &str,
    scope: Scope,
    bucket: &str,
    path: &str,
) -> Result<Grant, StorageError> {
    let claims = jwt
        .verify_purpose(token)
        .map_err(|e| StorageError::new(400, "InvalidJWT", "InvalidJWT", e.to_string()))?;
    let invalid = |m: &str| StorageError::new(400, "InvalidSignature", "InvalidSignature", m);
    if claims.get("scope").and_then(Value::as_str) != Some(scope.as_str()) {
        return Err(invalid(&format!(
            "Token is not scoped for {}",
            scope.as_str()
        )));
    }
    let want = format!("{bucket}/{path}");
    if claims.get("url").and_then(Value::as_str) != Some(want.as_str()) {
        return Err(invalid("Invalid signature"));
    }
    Ok(Grant {
        upsert: claims
            .get("upsert")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        owner: claims
            .get("owner")
            .and_then(Value::as_str)
            .map(str::to_string),
        exp: claims.get("exp").and_then(Value::as_u64).unwrap_or(0),
        transformations: claims
            .get("transformations")
            .and_then(Value::as_str)
            .map(str::to_string),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> JwtKeys {
        JwtKeys::hs256("a-test-secret-of-at-least-32-chars!!", None, "t").unwrap()
    }

    #[test]
    fn a_token_opens_only_its_object_and_scope() {
        let k = keys();
        let t = sign(&k, Scope::Download, "b", "a/x.png", 60, None).unwrap();
        assert!(verify(&k, &t, Scope::Download, "b", "a/x.png").is_ok());
        let other = verify(&k, &t, Scope::Download, "b", "a/y.png").unwrap_err();
        assert_eq!(other.code, "InvalidSignature");
        assert!(verify(&k, &t, Scope::Upload, "b", "a/x.png").is_err());
        let mut forged = t.clone();
        forged.pop();
        assert_eq!(
            verify(&k, &forged, Scope::Download, "b", "a/x.png")
                .unwrap_err()
                .code,
            "InvalidJWT"
        );
        // Not an access token, and an access token is not a URL token.
        assert!(k.verify(&t).is_err());
        let access = k
            .sign_hs256(&json!({"role": "anon", "exp": now() + 60}))
            .unwrap();
        assert!(verify(&k, &access, Scope::Download, "b", "a/x.png").is_err());
        let up = sign(&k, Scope::Upload, "b", "p", 60, Some((true, Some("u1")))).unwrap();
        let g = verify(&k, &up, Scope::Upload, "b", "p").unwrap();
        assert!(g.upsert);
        assert_eq!(g.owner.as_deref(), Some("u1"));
    }

    #[test]
    fn an_expired_token_is_refused() {
        let k = keys();
        let claims = json!({"url": "b/p", "scope": "download", "iat": 1, "exp": now() - 1});
        let t = k.sign_hs256(&claims).unwrap();
        assert_eq!(
            verify(&k, &t, Scope::Download, "b", "p").unwrap_err().code,
            "InvalidJWT"
        );
    }
}
