//! Opaque secrets of the auth API: refresh tokens, email OTPs and their hashes,
//! PKCE checks. Only hashes reach the database.

use base64::Engine;
use rand::{Rng, RngCore};
use sha2::{Digest, Sha256};

/// A new refresh token: 32 random bytes, hex (64 lowercase characters).
pub fn new_refresh_token() -> String {
    random_secret()
}

/// 32 random bytes from the OS, hex: refresh tokens, OAuth states and nonces.
pub fn random_secret() -> String {
    let mut b = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut b);
    hex::encode(b)
}

/// SHA-256 hex, the stored form of refresh and email tokens.
pub fn sha256_hex(s: &str) -> String {
    hex::encode(Sha256::digest(s.as_bytes()))
}

/// The pad that encrypts a token's child: derived from the parent token itself
/// (with a domain tag, so it differs from the stored hash), 32 bytes, used once.
fn pad(parent: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"wasmbase refresh child v1\0");
    h.update(parent.as_bytes());
    h.finalize().into()
}

/// Encrypts `child` (a refresh token) so only the holder of `parent` can read it.
pub fn seal_child(parent: &str, child: &str) -> String {
    let raw = hex::decode(child).expect("refresh tokens are hex");
    let p = pad(parent);
    hex::encode(
        raw.iter()
            .zip(p.iter())
            .map(|(a, b)| a ^ b)
            .collect::<Vec<u8>>(),
    )
}

/// Inverse of [`seal_child`].
pub fn open_child(parent: &str, sealed: &str) -> Option<String> {
    let raw = hex::decode(sealed).ok()?;
    let p = pad(parent);
    (raw.len() == 32).then(|| {
        hex::encode(
            raw.iter()
                .zip(p.iter())
                .map(|(a, b)| a ^ b)
                .collect::<Vec<u8>>(),
        )
    })
}

/// A 6-digit email OTP, uniformly random, zero-padded.
pub fn new_otp() -> String {
    format!("{:06}", rand::rngs::OsRng.gen_range(0..1_000_000u32))
}

/// The token an email link carries: 32 random bytes (hex), `pkce_`-prefixed for
/// PKCE flows. Independent of the 6-digit code, so a link cannot be brute-forced
/// from the address (GoTrue derives it from email and code; clients treat it as
/// opaque).
pub fn new_link_token(pkce: bool) -> String {
    let mut b = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut b);
    format!("{}{}", if pkce { "pkce_" } else { "" }, hex::encode(b))
}

/// The stored form of a 6-digit code: bound to the (ASCII-lower-cased) address.
pub fn otp_hash(email: &str, otp: &str) -> String {
    sha256_hex(&format!("{}:{otp}", email.to_ascii_lowercase()))
}

/// Checks a PKCE verifier against the stored challenge.
pub fn pkce_matches(method: &str, challenge: &str, verifier: &str) -> bool {
    use subtle::ConstantTimeEq;
    let computed = match method {
        "s256" => base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(Sha256::digest(verifier.as_bytes())),
        _ => verifier.to_string(),
    };
    computed.len() == challenge.len() && bool::from(computed.as_bytes().ct_eq(challenge.as_bytes()))
}

/// A PKCE verifier towards a provider and its S256 challenge (RFC 7636): 32
/// random bytes, base64url.
pub fn new_pkce_pair() -> (String, String) {
    let mut b = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut b);
    let verifier = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(Sha256::digest(verifier.as_bytes()));
    (verifier, challenge)
}

/// The AES-256-GCM key of [`seal`]: the secret hashed with a purpose tag, so a
/// key is never the stored hash of the secret and differs per purpose.
fn sealing_key(secret: &str, purpose: &str) -> aes_gcm::Aes256Gcm {
    use aes_gcm::KeyInit;
    let mut h = Sha256::new();
    h.update(b"wasmbase seal v1\0");
    h.update(purpose.as_bytes());
    h.update(b"\0");
    h.update(secret.as_bytes());
    aes_gcm::Aes256Gcm::new(&h.finalize())
}

/// Encrypts `plain` so only the holder of `secret` (a random state or auth code
/// the database never sees in clear) can read it back: a value stored next to
/// the secret's hash is useless to whoever reads the database.
pub fn seal(secret: &str, purpose: &str, plain: &str) -> String {
    use aes_gcm::aead::Aead;
    let mut nonce = [0u8; 12];
    rand::rngs::OsRng.fill_bytes(&mut nonce);
    let ct = sealing_key(secret, purpose)
        .encrypt(aes_gcm::Nonce::from_slice(&nonce), plain.as_bytes())
        .expect("AES-GCM encrypts any length that fits in memory");
    let mut out = nonce.to_vec();
    out.extend_from_slice(&ct);
    hex::encode(out)
}

/// Inverse of [`seal`]; `None` for another secret or purpose, or a damaged value.
pub fn open(secret: &str, purpose: &str, sealed: &str) -> Option<String> {
    use aes_gcm::aead::Aead;
    let raw = hex::decode(sealed).ok()?;
    if raw.len() < 12 {
        return None;
    }
    let (nonce, ct) = raw.split_at(12);
    let plain = sealing_key(secret, purpose)
        .decrypt(aes_gcm::Nonce::from_slice(nonce), ct)
        .ok()?;
    String::from_utf8(plain).ok()
}

/// Validates `code_challenge`/`code_challenge_method`; `Ok(None)` when absent.
pub fn pkce_params(
    challenge: Option<&str>,
    method: Option<&str>,
) -> Result<Option<(String, String)>, &'static str> {
    match (
        challenge.filter(|s| !s.is_empty()),
        method.filter(|s| !s.is_empty()),
    ) {
        (None, None) => Ok(None),
        (Some(c), Some(m)) => {
            let m = m.to_ascii_lowercase();
            if m != "s256" && m != "plain" {
                return Err("code_challenge_method must be s256 or plain");
            }
            let ok = (43..=128).contains(&c.len())
                && c.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b));
            if !ok {
                return Err("code_challenge must be 43-128 characters of [A-Za-z0-9-._~]");
            }
            Ok(Some((c.to_string(), m)))
        }
        _ => Err("PKCE flow requires code_challenge_method and code_challenge"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn child_sealing_roundtrips_only_with_the_parent() {
        let (p, c) = (new_refresh_token(), new_refresh_token());
        let sealed = seal_child(&p, &c);
        assert_eq!(open_child(&p, &sealed).as_deref(), Some(c.as_str()));
        assert_ne!(
            open_child(&new_refresh_token(), &sealed).as_deref(),
            Some(c.as_str())
        );
        assert_ne!(sealed, sha256_hex(&c));
    }

    #[test]
    fn sealed_values_open_only_with_their_secret_and_purpose() {
        let sealed = seal("state-1", "verifier", "the verifier");
        assert_eq!(
            open("state-1", "verifier", &sealed).as_deref(),
            Some("the verifier")
        );
        assert_eq!(open("state-2", "verifier", &sealed), None);
        assert_eq!(open("state-1", "tokens", &sealed), None);
        assert_eq!(open("state-1", "verifier", "00"), None);
        let (v, c) = new_pkce_pair();
        assert!(pkce_matches("s256", &c, &v));
    }

    #[test]
    fn pkce_s256_and_token_shapes() {
        // RFC 7636 appendix B.
        assert!(pkce_matches(
            "s256",
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM",
            "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
        ));
        assert!(!pkce_matches(
            "s256",
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM",
            "wrong"
        ));
        assert_eq!(otp_hash("A@b.c", "123456"), otp_hash("a@b.c", "123456"));
        assert_ne!(otp_hash("a@b.c", "123456"), otp_hash("b@b.c", "123456"));
        assert!(new_link_token(true).starts_with("pkce_") && new_link_token(false).len() == 64);
        assert!(pkce_params(Some("x"), None).is_err());
        assert!(pkce_params(Some(&"a".repeat(43)), Some("S256"))
            .unwrap()
            .is_some());
    }
}
