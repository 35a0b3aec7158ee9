//! The redirect allowlist: `redirect_to` must be on the site's origin or match a
//! configured pattern, else the site URL is used — so an email link can never
//! deliver tokens to an attacker's page (no open redirect).

use super::error::AuthApiError;
use crate::config::AuthConfig;
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use serde_json::Value;

/// Longest `redirect_to` considered (longer ones fall back to the site URL).
const MAX_LEN: usize = 2048;

/// The redirect target to use for a requested `redirect_to`.
pub fn resolve(cfg: &AuthConfig, requested: Option<&str>) -> String {
    requested
        .and_then(|r| allowed(cfg, r))
        .unwrap_or_else(|| cfg.site_url.clone())
}

/// The normalised URL when `url` may be redirected to. Matching is done on the
/// URL as the `url` crate parses it — the same host a browser will go to — so
/// tricks like `https://evil.com?.app.dev/`, `https://app.dev@evil.com/` or
/// backslashes cannot smuggle another host past a pattern.
fn allowed(cfg: &AuthConfig, url: &str) -> Option<String> {
    if url.len() > MAX_LEN
        || url
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == '\\')
    {
        return None;
    }
    let mut parsed = url::Url::parse(url).ok()?;
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return None;
    }
    parsed.set_fragment(None);
    let normal = parsed.to_string();
    let site = url::Url::parse(&cfg.site_url).ok()?;
    let same_origin = parsed.origin().is_tuple() && parsed.origin() == site.origin();
    (same_origin || cfg.redirect_urls.iter().any(|p| glob(p, &normal))).then_some(normal)
}

/// `**` matches anything; `*` matches within one URL component, never across
/// `/ ? # @ \ :`; other characters match themselves. Dynamic programming, so the
/// cost is bounded by pattern length × URL length whatever the input.
fn glob(pattern: &str, s: &str) -> bool {
    #[derive(Clone, Copy, PartialEq)]
    enum Tok {
        Any,
        Segment,
        Byte(u8),
    }
    let mut toks = Vec::new();
    let pb = pattern.as_bytes();
    let mut i = 0;
    while i < pb.len() {
        if pb[i] == b'*' {
            if pb.get(i + 1) == Some(&b'*') {
                toks.push(Tok::Any);
                i += 2;
            } else {
                toks.push(Tok::Segment);
                i += 1;
            }
        } else {
            toks.push(Tok::Byte(pb[i]));
            i += 1;
        }
    }
    let sb = s.as_bytes();
    // reach[j]: the tokens so far can match exactly the first j bytes of s.
    let mut reach = vec![false; sb.len() + 1];
    reach[0] = true;
    for t in toks {
        let mut next = vec![false; sb.len() + 1];
        match t {
            Tok::Byte(b) => {
                for j in 0..sb.len() {
                    if reach[j] && sb[j] == b {
                        next[j + 1] = true;
                    }
                }
            }
            Tok::Any => {
                let mut on = false;
                for j in 0..=sb.len() {
                    on |= reach[j];
                    next[j] = on;
                }
            }
            Tok::Segment => {
                let mut on = false;
                for j in 0..=sb.len() {
                    on |= reach[j];
                    next[j] = on;
                    if j < sb.len() && b"/?#@\\:".contains(&sb[j]) {
                        on = false;
                    }
                }
            }
        }
        reach = next;
    }
    reach[sb.len()]
}

/// GoTrue's `error` word for a failure that ends a browser flow
/// (`oauthErrorMap`): by status, except for the codes that always mean the
/// user may not in.
pub fn error_word(e: &AuthApiError) -> &'static str {
    if matches!(
        e.code,
        "signup_disabled" | "user_banned" | "provider_email_needs_verification"
    ) {
        return "access_denied";
    }
    match e.status.as_u16() {
        400 => "invalid_request",
        401 => "unauthorized_client",
        403 => "access_denied",
        429 | 503 => "temporarily_unavailable",
        _ => "server_error",
    }
}

/// `error`, `error_code`, `error_description` of a failed browser flow.
pub fn error_pairs(e: &AuthApiError) -> Vec<(&'static str, String)> {
    vec![
        ("error", error_word(e).to_string()),
        ("error_code", e.code.to_string()),
        ("error_description", e.message.clone()),
    ]
}

/// A session as the implicit flow hands it over in the fragment.
pub fn session_pairs(session: &Value) -> Vec<(&'static str, String)> {
    let text = |k: &str| session[k].as_str().unwrap_or_default().to_string();
    vec![
        ("access_token", text("access_token")),
        ("expires_at", session["expires_at"].to_string()),
        ("expires_in", session["expires_in"].to_string()),
        ("refresh_token", text("refresh_token")),
        ("token_type", "bearer".to_string()),
    ]
}

/// The end of a browser flow: `target` (an allow-listed URL) with `pairs` in
/// the fragment, sorted by key with GoTrue's empty `sb` marker, and, with
/// `query`, in the query as well (GoTrue puts a callback's errors in both, so
/// either flow's parser finds them).
pub fn to_browser(
    target: &str,
    mut pairs: Vec<(&'static str, String)>,
    query: bool,
    status: StatusCode,
) -> Response {
    let Ok(mut url) = url::Url::parse(target) else {
        return AuthApiError::internal("a redirect target is not a URL").into_response();
    };
    if query {
        url.query_pairs_mut()
            .extend_pairs(pairs.iter().map(|(k, v)| (*k, v)));
    }
    pairs.push(("sb", String::new()));
    pairs.sort_by_key(|(k, _)| *k);
    let fragment = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs.iter().map(|(k, v)| (*k, v)))
        .finish();
    url.set_fragment(Some(&fragment));
    to(status, &url)
}

/// The end of a PKCE browser flow: `target` with `?code=` (replacing one it
/// had), the fragment dropped.
pub fn with_code(target: &str, code: &str, status: StatusCode) -> Response {
    let Ok(mut url) = url::Url::parse(target) else {
        return AuthApiError::internal("a redirect target is not a URL").into_response();
    };
    let kept: Vec<(String, String)> = url
        .query_pairs()
        .filter(|(k, _)| k != "code")
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    url.query_pairs_mut()
        .clear()
        .extend_pairs(kept)
        .append_pair("code", code);
    url.set_fragment(None);
    to(status, &url)
}

/// A redirect (`status`: 302 or 303) to `url`.
pub fn to(status: StatusCode, url: &url::Url) -> Response {
    let mut r = status.into_response();
    if let Ok(v) = http::HeaderValue::from_str(url.as_str()) {
        r.headers_mut().insert(http::header::LOCATION, v);
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allowlist() {
        let cfg = AuthConfig {
            site_url: "http://localhost:3000".into(),
            redirect_urls: vec![
                "https://app.example.com/**".into(),
                "myapp://callback".into(),
                "https://*.preview.dev/auth".into(),
            ],
            ..AuthConfig::default()
        };
        let r = |u: &str| resolve(&cfg, Some(u));
        assert_eq!(
            r("http://localhost:3000/welcome"),
            "http://localhost:3000/welcome"
        );
        assert_eq!(
            r("https://app.example.com/a/b?x=1"),
            "https://app.example.com/a/b?x=1"
        );
        assert_eq!(r("myapp://callback"), "myapp://callback");
        assert_eq!(
            r("https://pr-1.preview.dev/auth"),
            "https://pr-1.preview.dev/auth"
        );
        assert_eq!(
            r("https://evil.com/x/.preview.dev/auth"),
            "http://localhost:3000"
        );
        assert_eq!(
            r("https://evil.com/?https://app.example.com/"),
            "http://localhost:3000"
        );
        assert_eq!(
            r("https://app.example.com.evil.com/"),
            "http://localhost:3000"
        );
        assert_eq!(r("http://localhost:3001/"), "http://localhost:3000");
        // Smuggling another host past a `*`:
        assert_eq!(
            r("https://evil.com?.preview.dev/auth"),
            "http://localhost:3000"
        );
        assert_eq!(
            r("https://evil.com#.preview.dev/auth"),
            "http://localhost:3000"
        );
        assert_eq!(
            r("https://evil.com\\.preview.dev/auth"),
            "http://localhost:3000"
        );
        assert_eq!(
            r("http://localhost:3000@evil.com/x"),
            "http://localhost:3000"
        );
        assert_eq!(
            r("https://app.example.com@evil.com/"),
            "http://localhost:3000"
        );
        assert_eq!(
            r(&format!("https://app.example.com/{}", "a".repeat(3000))),
            "http://localhost:3000"
        );
        // A pathological pattern and input stay cheap (DP, not backtracking).
        let slow = AuthConfig {
            redirect_urls: vec!["https://**a**a**a**a**a**a**a**b".into()],
            ..cfg.clone()
        };
        assert_eq!(
            resolve(&slow, Some(&format!("https://{}", "a".repeat(2000)))),
            "http://localhost:3000"
        );
        assert_eq!(resolve(&cfg, None), "http://localhost:3000");
    }
}
