//! JWT signing and verification with the algorithm pinned.
//!
//! One verifier serves API keys in JWT form (legacy `anon` / `service_role` keys) and
//! user access tokens. `alg: none`, algorithm confusion (an HS256 token signed with a
//! public key, or any algorithm we did not configure) and tokens without `exp` are
//! refused before any claim is trusted.
//!
//! Optionally the project has asymmetric signing keys (ES256 or RS256, PKCS#8 PEM):
//! the first one signs access tokens (with its `kid`), all of them verify, and
//! their public halves are published as JWKS. Rotation: put the new key first and
//! keep the old one listed until the tokens it signed have expired. An
//! asymmetric token is only checked against the key its `kid` names, with that
//! key's own algorithm; the HS256 secret never verifies an ES256/RS256 token and
//! a public key never verifies an HS256 one.

use crate::verified_tokens::VerifiedTokens;
use crate::{AuthError, Principal, Role};
use base64::Engine;
use jsonwebtoken::{
    decode, decode_header, encode, Algorithm, DecodingKey, EncodingKey, Header, Validation,
};
use serde_json::{json, Value};
use std::sync::Arc;

/// Seconds a token is still accepted after its `exp` (clock skew between nodes).
const LEEWAY: u64 = 5;

/// Shortest HS256 secret accepted; shorter secrets are brute-forceable.
pub const MIN_SECRET_LEN: usize = 32;

/// Signs and verifies tokens with the project's JWT secret (and signing keys).
#[derive(Clone)]
pub struct JwtKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    audience: Option<String>,
    issuer: String,
    signing: Vec<SigningKey>,
    /// Tokens these keys verified, for [`JwtKeys::principal`].
    verified: Arc<VerifiedTokens>,
}

/// An asymmetric key pair with its id and public JWK.
#[derive(Clone)]
struct SigningKey {
    kid: String,
    alg: Algorithm,
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    public_jwk: Value,
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// The DER inside a PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`).
fn pkcs8_der(pem: &str) -> Result<Vec<u8>, String> {
    let body: String = pem
        .lines()
        .skip_while(|l| !l.starts_with("-----BEGIN PRIVATE KEY-----"))
        .skip(1)
        .take_while(|l| !l.starts_with("-----END"))
        .collect();
    if body.is_empty() {
        return Err("not a PKCS#8 PEM private key (expected '-----BEGIN PRIVATE KEY-----'; convert with `openssl pkcs8 -topk8 -nocrypt`)".into());
    }
    base64::engine::general_purpose::STANDARD
        .decode(body)
        .map_err(|e| format!("bad PEM body: {e}"))
}

/// A new P-256 key pair as PKCS#8 PEM, for `auth.signing_keys`
/// (`wasmbase keys signing-key` prints one).
pub fn generate_es256_pem() -> String {
    use ring::signature::{EcdsaKeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
    let doc = EcdsaKeyPair::generate_pkcs8(
        &ECDSA_P256_SHA256_FIXED_SIGNING,
        &ring::rand::SystemRandom::new(),
    )
    .expect("the system RNG works");
    let b = base64::engine::general_purpose::STANDARD.encode(doc.as_ref());
    let lines: Vec<&str> = b
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).expect("base64 is ascii"))
        .collect();
    format!(
        "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
        lines.join("\n")
    )
}

impl SigningKey {
    /// Parses a PKCS#8 PEM holding a P-256 (ES256) or RSA (RS256) private key.
    fn from_pem(pem: &str) -> Result<SigningKey, String> {
        use ring::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
        let der = pkcs8_der(pem)?;
        let rng = ring::rand::SystemRandom::new();
        let (alg, mut jwk, encoding, decoding) = if let Ok(kp) =
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &der, &rng)
        {
            let point = kp.public_key().as_ref();
            let (x, y) = (b64(&point[1..33]), b64(&point[33..65]));
            let decoding = DecodingKey::from_ec_components(&x, &y).map_err(|e| e.to_string())?;
            let encoding = EncodingKey::from_ec_der(&der);
            (
                Algorithm::ES256,
                json!({"kty": "EC", "crv": "P-256", "x": x, "y": y}),
                encoding,
                decoding,
            )
        } else if let Ok(kp) = ring::rsa::KeyPair::from_pkcs8(&der) {
            let pk = ring::rsa::PublicKeyComponents::<Vec<u8>>::from(kp.public());
            let (n, e) = (b64(&pk.n), b64(&pk.e));
            let decoding = DecodingKey::from_rsa_components(&n, &e).map_err(|e| e.to_string())?;
            // jsonwebtoken signs RSA from PKCS#1; its PEM reader unwraps PKCS#8.
            let encoding = EncodingKey::from_rsa_pem(pem.as_bytes()).map_err(|e| e.to_string())?;
            (
                Algorithm::RS256,
                json!({"kty": "RSA", "n": n, "e": e}),
                encoding,
                decoding,
            )
        } else {
            return Err("the key is neither a P-256 EC key (ES256) nor an RSA key (RS256)".into());
        };
        // kid: a stable digest of the public key, so every node derives the same one.
        let digest = ring::digest::digest(&ring::digest::SHA256, jwk.to_string().as_bytes());
        let kid = b64(&digest.as_ref()[..12]);
        let alg_name = if alg == Algorithm::ES256 {
            "ES256"
        } else {
            "RS256"
        };
        jwk["kid"] = json!(kid);
        jwk["alg"] = json!(alg_name);
        jwk["use"] = json!("sig");
        jwk["key_ops"] = json!(["verify"]);
        let mut validation = Validation::new(alg);
        validation.set_required_spec_claims(&["exp"]);
        validation.validate_aud = false;
        validation.leeway = LEEWAY;
        Ok(SigningKey {
            kid,
            alg,
            encoding,
            decoding,
            validation,
            public_jwk: jwk,
        })
    }
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
        validation.leeway = LEEWAY;
        Ok(JwtKeys {
            encoding: EncodingKey::from_secret(secret.as_bytes()),
            decoding: DecodingKey::from_secret(secret.as_bytes()),
            validation,
            audience,
            issuer: issuer.to_string(),
            signing: Vec::new(),
            verified: Default::default(),
        })
    }

    /// Adds asymmetric signing keys (PKCS#8 PEM text, ES256 or RS256). The first
    /// signs new tokens; all verify. `name` labels errors (e.g. the file path).
    pub fn with_signing_keys(mut self, pems: &[(String, String)]) -> Result<JwtKeys, String> {
        self.verified = Default::default(); // verified under other keys
        for (name, pem) in pems {
            let key = SigningKey::from_pem(pem).map_err(|e| format!("{name}: {e}"))?;
            if self.signing.iter().any(|k| k.kid == key.kid) {
                return Err(format!("{name}: the same key is listed twice"));
            }
            self.signing.push(key);
        }
        Ok(self)
    }

    /// The public signing keys as a JWK set (`{"keys": [...]}`); empty for HS256.
    pub fn jwks(&self) -> Value {
        json!({ "keys": self.signing.iter().map(|k| k.public_jwk.clone()).collect::<Vec<_>>() })
    }

    /// The `iss` this project puts in the tokens it issues.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// Signs `claims` (which must already hold `exp`) with HS256.
    pub fn sign(&self, claims: &Value) -> Result<String, AuthError> {
        match self.signing.first() {
            Some(k) => {
                let mut h = Header::new(k.alg);
                h.kid = Some(k.kid.clone());
                encode(&h, claims, &k.encoding).map_err(|_| AuthError::InvalidJwt("could not sign"))
            }
            None => self.sign_hs256(claims),
        }
    }

    /// Signs with the HS256 secret (legacy `anon`/`service_role` API keys are HS256,
    /// as on Supabase, whatever signs access tokens).
    pub fn sign_hs256(&self, claims: &Value) -> Result<String, AuthError> {
        encode(&Header::new(Algorithm::HS256), claims, &self.encoding)
            .map_err(|_| AuthError::InvalidJwt("could not sign"))
    }

    /// The principal a token grants: [`JwtKeys::verify`], remembered per exact
    /// token text until it expires (see [`crate::verified_tokens`]).
    pub fn principal(&self, token: &str) -> Result<Principal, AuthError> {
        let now = jsonwebtoken::get_current_timestamp() as i64;
        if let Some(p) = self.verified.get(token, now) {
            return Ok(p);
        }
        let v = self.verify(token)?;
        // `verify` required a numeric `exp` and accepts it up to `LEEWAY` late.
        let valid_until = v
            .claims
            .get("exp")
            .and_then(Value::as_f64)
            .map(|e| e as i64 + LEEWAY as i64);
        let principal = Principal::new(v.role, v.claims);
        if let Some(until) = valid_until {
            self.verified.put(token, principal.clone(), until, now);
        }
        Ok(principal)
    }

    /// Verifies an HS256 token that is not an access token (a signed storage
    /// URL): signature and `exp` with no leeway. It grants no role; the caller
    /// checks the claims it needs.
    pub fn verify_purpose(&self, token: &str) -> Result<Value, AuthError> {
        let mut validation = self.validation.clone();
        validation.leeway = 0;
        decode::<Value>(token, &self.decoding, &validation)
            .map(|d| d.claims)
            .map_err(|e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => AuthError::JwtExpired,
                _ => AuthError::InvalidJwt("malformed token or bad signature"),
            })
    }

    /// Verifies signature, algorithm, expiry, role and (for user tokens) audience.
    pub fn verify(&self, token: &str) -> Result<Verified, AuthError> {
        let header = decode_header(token).map_err(|_| AuthError::InvalidJwt("malformed token"))?;
        let (key, validation) = match header.alg {
            Algorithm::HS256 => (&self.decoding, &self.validation),
            Algorithm::ES256 | Algorithm::RS256 => {
                let kid = header
                    .kid
                    .as_deref()
                    .ok_or(AuthError::InvalidJwt("asymmetric token without kid"))?;
                let k = self
                    .signing
                    .iter()
                    .find(|k| k.kid == kid && k.alg == header.alg)
                    .ok_or(AuthError::InvalidJwt("unknown signing key"))?;
                (&k.decoding, &k.validation)
            }
            _ => return Err(AuthError::InvalidJwt("signing algorithm not allowed")),
        };
        let data = decode::<Value>(token, key, validation).map_err(|e| {
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

    fn es256_pem() -> String {
        generate_es256_pem()
    }

    #[test]
    fn es256_signing_rotation_and_no_confusion() {
        let (new, old) = (es256_pem(), es256_pem());
        let rotated = keys()
            .with_signing_keys(&[("new".into(), new.clone()), ("old".into(), old.clone())])
            .unwrap();
        let before = keys().with_signing_keys(&[("old".into(), old)]).unwrap();
        let claims =
            json!({"role":"authenticated","aud":"authenticated","sub":"u","exp": now()+60});
        let t_new = rotated.sign(&claims).unwrap();
        let t_old = before.sign(&claims).unwrap();
        assert_eq!(decode_header(&t_new).unwrap().alg, Algorithm::ES256);
        // Old tokens stay valid after rotation; new ones verify too.
        assert!(rotated.verify(&t_old).is_ok());
        assert!(rotated.verify(&t_new).is_ok());
        // The node that never had the new key refuses it.
        assert!(before.verify(&t_new).is_err());
        // HS256 tokens still verify (legacy keys), asymmetric JWKS lists both keys.
        assert!(rotated
            .verify(&rotated.sign_hs256(&claims).unwrap())
            .is_ok());
        let jwks = rotated.jwks();
        assert_eq!(jwks["keys"].as_array().unwrap().len(), 2);
        assert!(
            jwks["keys"][0].get("d").is_none(),
            "no private part published"
        );
        // A token signed HS256 with the *public key* as secret (confusion) fails.
        let x = jwks["keys"][0]["x"].as_str().unwrap();
        let mut h = Header::new(Algorithm::HS256);
        h.kid = Some(jwks["keys"][0]["kid"].as_str().unwrap().into());
        let confused = encode(&h, &claims, &EncodingKey::from_secret(x.as_bytes())).unwrap();
        assert!(rotated.verify(&confused).is_err());
        assert!(
            JwtKeys::hs256("0123456789abcdef0123456789abcdef", None, "x")
                .unwrap()
                .with_signing_keys(&[("bad".into(), "nope".into())])
                .is_err()
        );
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
