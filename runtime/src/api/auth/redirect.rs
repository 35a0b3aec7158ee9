//! The redirect allowlist: `redirect_to` must be on the site's origin or match a
//! configured pattern, else the site URL is used — so an email link can never
//! deliver tokens to an attacker's page (no open redirect).

use crate::config::AuthConfig;

/// The redirect target to use for a requested `redirect_to`.
pub fn resolve(cfg: &AuthConfig, requested: Option<&str>) -> String {
    match requested {
        Some(r) if allowed(cfg, r) => r.to_string(),
        _ => cfg.site_url.clone(),
    }
}

fn allowed(cfg: &AuthConfig, url: &str) -> bool {
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return false;
    }
    if same_origin(&cfg.site_url, url) {
        return true;
    }
    cfg.redirect_urls.iter().any(|p| glob(p, url))
}

fn same_origin(a: &str, b: &str) -> bool {
    match (url::Url::parse(a), url::Url::parse(b)) {
        (Ok(a), Ok(b)) => a.origin() == b.origin() && b.origin().is_tuple(),
        _ => false,
    }
}

/// `**` matches anything, `*` anything but `/`, other characters themselves.
fn glob(pattern: &str, s: &str) -> bool {
    let (p, s) = (pattern.as_bytes(), s.as_bytes());
    fn go(p: &[u8], s: &[u8]) -> bool {
        match p {
            [] => s.is_empty(),
            [b'*', b'*', rest @ ..] => (0..=s.len()).any(|i| go(rest, &s[i..])),
            [b'*', rest @ ..] => (0..=s.len())
                .take_while(|&i| i == 0 || s[i - 1] != b'/')
                .any(|i| go(rest, &s[i..])),
            [c, rest @ ..] => s.first() == Some(c) && go(rest, &s[1..]),
        }
    }
    go(p, s)
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
        assert_eq!(resolve(&cfg, None), "http://localhost:3000");
    }
}
