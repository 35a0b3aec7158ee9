//! JWT signing and verification with the algorithm pinned.
//!
//! One verifier serves API keys in JWT form (legacy `anon` / `service_role` keys) and
//! user access tokens. `alg: none`, algorithm confusion (an HS256 token signed with a
//! public key, or any algorithm we did not configure) and tokens without `exp` are
//! refused before any claim is trusted.

use crate::{AuthError, Role};
use jsonwebtoken::{
    decode, decode_header, encode, Algorithm, DecodingKey, EncodingKey, Header, Validation,
};
use serde_json::Value;

/// Shortest HS256 secret accepted; shorter secrets are brute-forceable.
pub const MIN_SECRET_LEN: usize = 32;

/// Signs and verifies tokens with the project's JWT secret.
#[derive(Clone)]
pub struct JwtKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    audience: Option<String>,
    issuer: String,
}

impl std::fmt::Debug for JwtKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print key material.
        f.debug_struct("JwtKeys")
            .field("audience", &self.audience)
            .field("issuer", &self.issuer)
            .finish_non_exhaustive()
    }
}

/// Claims verified from a token: the role it grants and the whole claim set.
#[derive(Debug, Clone)]
pub struct Verified {
    /// The `role` claim, restricted to the roles requests may run as.
    pub role: Role,
    /// All claims as sent.
    pub claims: Value,
}

impl JwtKeys {
    /// Builds keys from an HS256 secret; refuses an empty or short secret.
    ///
    /// `audience`, when set, is required in the `aud` of user (`authenticated`) tokens.
    pub fn hs256(secret: &str, audience: Option<String>, issuer: &str) -> Result<JwtKeys, String> {
        if secret.len() < MIN_SECRET_LEN {
            return Err(format!(
                "the JWT secret must be at least {MIN_SECRET_LEN} characters (got {})",
                secret.len()
            ));
        }
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_required_spec_claims(&["exp"]);
        validation.validate_exp = true;
        validation.validate_aud = false; // checked by hand: only user tokens carry `aud`
        validation.leeway = 5;
        Ok(JwtKeys {
            encoding: EncodingKey::from_secret(secret.as_bytes()),
            decoding: DecodingKey::from_secret(secret.as_bytes()),
            validation,
            audience,
            issuer: issuer.to_string(),
        })
    }

    /// The `iss` this project puts in the tokens it issues.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// Signs `claims` (which must already hold `exp`) with HS256.
    pub fn sign(&self, claims: &Value) -> Result<String, AuthError> {
        encode(&Header::new(Algorithm::HS256), claims, &self.encoding)
            .map_err(|_| AuthError::InvalidJwt("could not sign"))
    }

    /// Verifies signature, algorithm, expiry, role and (for user tokens) audience.
    pub fn verify(&self, token: &str) -> Result<Verified, AuthError> {
        let header = decode_header(token).map_err(|_| AuthError::InvalidJwt("malformed token"))?;
        if header.alg != Algorithm::HS256 {
            return Err(AuthError::InvalidJwt("signing algorithm not allowed"));
        }
        let data = decode::<Value>(token, &self.decoding, &self.validation).map_err(|e| {
            use jsonwebtoken::errors::ErrorKind;
            match e.kind() {
                ErrorKind::ExpiredSignature => AuthError::JwtExpired,
                ErrorKind::InvalidSignature => AuthError::InvalidJwt("signature mismatch"),
                ErrorKind::MissingRequiredClaim(_) => AuthError::InvalidJwt("missing exp claim"),
                ErrorKind::InvalidAlgorithm => {
                    AuthError::InvalidJwt("signing algorithm not allowed")
                }
                _ => AuthError::InvalidJwt("malformed token"),
            }
        })?;
        let claims = data.claims;
        if !claims.is_object() {
            return Err(AuthError::InvalidJwt("claims are not an object"));
        }
        let role = claims
            .get("role")
            .and_then(Value::as_str)
            .and_then(Role::parse)
            .ok_or(AuthError::InvalidJwt("role claim missing or not allowed"))?;
        if role == Role::Authenticated {
            if let Some(want) = &self.audience {
                let ok = match claims.get("aud") {
                    Some(Value::String(s)) => s == want,
                    Some(Value::Array(a)) => a.iter().any(|v| v.as_str() == Some(want)),
                    _ => false,
                };
                if !ok {
                    return Err(AuthError::InvalidJwt("audience mismatch"));
                }
            }
        }
        Ok(Verified { role, claims })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn keys() -> JwtKeys {
        JwtKeys::hs256(
            "0123456789abcdef0123456789abcdef",
            Some("authenticated".into()),
            "wasmbase",
        )
        .unwrap()
    }

    fn now() -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64
    }

    #[test]
    fn short_secret_refused() {
        assert!(JwtKeys::hs256("short", None, "x").is_err());
        assert!(JwtKeys::hs256("", None, "x").is_err());
    }

    #[test]
    fn roundtrip_and_rules() {
        let k = keys();
        let t = k
            .sign(&json!({"role":"authenticated","aud":"authenticated","sub":"u","exp": now()+60}))
            .unwrap();
        assert_eq!(k.verify(&t).unwrap().role, Role::Authenticated);
        // wrong audience
        let t = k
            .sign(&json!({"role":"authenticated","aud":"other","exp": now()+60}))
            .unwrap();
        assert_eq!(
            k.verify(&t).unwrap_err(),
            AuthError::InvalidJwt("audience mismatch")
        );
        // expired
        let t = k.sign(&json!({"role":"anon","exp": now()-60})).unwrap();
        assert_eq!(k.verify(&t).unwrap_err(), AuthError::JwtExpired);
        // no exp
        let t = k.sign(&json!({"role":"anon"})).unwrap();
        assert!(matches!(
            k.verify(&t).unwrap_err(),
            AuthError::InvalidJwt(_)
        ));
        // role outside the closed set (e.g. the owner)
        let t = k.sign(&json!({"role":"postgres","exp": now()+60})).unwrap();
        assert!(matches!(
            k.verify(&t).unwrap_err(),
            AuthError::InvalidJwt(_)
        ));
    }

    #[test]
    fn alg_none_and_forged_refused() {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let k = keys();
        let claims = b64.encode(json!({"role":"service_role","exp": now()+60}).to_string());
        let none = format!(
            "{}.{}.",
            b64.encode(r#"{"alg":"none","typ":"JWT"}"#),
            claims
        );
        assert!(matches!(
            k.verify(&none).unwrap_err(),
            AuthError::InvalidJwt(_)
        ));
        let other = JwtKeys::hs256("ffffffffffffffffffffffffffffffff", None, "x").unwrap();
        let forged = other
            .sign(&json!({"role":"service_role","exp": now()+60}))
            .unwrap();
        assert_eq!(
            k.verify(&forged).unwrap_err(),
            AuthError::InvalidJwt("signature mismatch")
        );
        let hs512 = encode(
            &Header::new(Algorithm::HS512),
            &json!({"role":"anon","exp": now()+60}),
            &EncodingKey::from_secret(b"0123456789abcdef0123456789abcdef"),
        )
        .unwrap();
        assert!(matches!(
            k.verify(&hs512).unwrap_err(),
            AuthError::InvalidJwt(_)
        ));
    }
}
