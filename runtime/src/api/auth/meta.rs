//! `GET /settings`, `GET /health`, `GET /.well-known/jwks.json`.

use super::ctx::Keyed;
use crate::server::state::AppState;
use axum::extract::State;
use axum::Json;
use serde_json::{json, Value};

/// What sign-in methods exist, in GoTrue's shape (auth-js and dashboards read it).
pub async fn settings(State(st): State<AppState>, _k: Keyed) -> Json<Value> {
    let mut external = serde_json::Map::new();
    for p in [
        "anonymous_users",
        "apple",
        "azure",
        "bitbucket",
        "discord",
        "facebook",
        "figma",
        "fly",
        "github",
        "gitlab",
        "google",
        "keycloak",
        "kakao",
        "linkedin",
        "linkedin_oidc",
        "notion",
        "spotify",
        "slack",
        "slack_oidc",
        "snapchat",
        "workos",
        "twitch",
        "twitter",
        "phone",
        "zoom",
    ] {
        external.insert(p.into(), json!(false));
    }
    external.insert("email".into(), json!(true));
    for name in st.auth.providers.names() {
        external.insert(name.into(), json!(true));
    }
    external.insert("anonymous_users".into(), json!(st.auth.anonymous));
    Json(json!({
        "external": external,
        "disable_signup": st.config.auth.disable_signup,
        "mailer_autoconfirm": st.auth.autoconfirm,
        "phone_autoconfirm": false,
        "sms_provider": "",
        "saml_enabled": false,
    }))
}

/// Liveness of the auth API (GoTrue's shape).
pub async fn health(_k: Keyed) -> Json<Value> {
    Json(json!({
        "version": env!("CARGO_PKG_VERSION"),
        "name": "GoTrue",
        "description": "Wasmbase's GoTrue-compatible auth API",
    }))
}

/// Public halves of the configured ES256/RS256 signing keys. The HS256 secret is
/// never published, so with HS256 only the set is empty.
pub async fn jwks(State(st): State<AppState>, _k: Keyed) -> Json<Value> {
    Json(st.gate.jwt().jwks())
}
