//! Browser sign-in with an OAuth 2 / OIDC provider, as GoTrue does it:
//! `GET /authorize` (or `GET /user/identities/authorize` to link) → the
//! provider → `GET|POST /callback` → the app's `redirect_to`, with a PKCE auth
//! code (`?code=`, traded by `POST /token?grant_type=pkce`) or, for the
//! implicit flow, the session in the fragment.
//!
//! parse (query, state) → plan (`auth.oauth_flows` row: single use, bound to
//! this flow's state, PKCE verifier and nonce, 10 minutes) → exec (the
//! provider, through [`crate::oauth`]; the user, through [`super::identities`])
//! → response (302, errors as GoTrue redirects them).

use super::ctx::{Keyed, Meta, UserCaller};
use super::error::{AuthApiError, AuthResult};
use super::{identities, redirect, session, tokens, users};
use crate::oauth::{Provider, ProviderError, ProviderUser};
use crate::server::state::AppState;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use bytes::Bytes;
use http::StatusCode;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::Arc;
use uuid::Uuid;

/// How long a started flow may take to come back from the provider.
const FLOW_TTL_SECS: f64 = 600.0;

/// `GET /authorize?provider=…`: starts a sign-in; a browser navigation, so no key.
pub async fn authorize(State(st): State<AppState>, _k: Keyed, meta: Meta) -> AuthResult<Response> {
    start(&st, &meta, None).await
}

/// `GET /user/identities/authorize?provider=…` (signed in): starts linking a
/// provider to the caller; auth-js asks for `{url}` with `skip_http_redirect`.
pub async fn link_authorize(
    State(st): State<AppState>,
    u: UserCaller,
    meta: Meta,
) -> AuthResult<Response> {
    if !st.config.auth.manual_linking {
        return Err(identities::manual_linking_disabled());
    }
    users::load_session_user(&st, u.user_id, u.session_id).await?;
    start(&st, &meta, Some(u.user_id)).await
}

/// Query parameters of `/authorize` that are Wasmbase's own; the rest go to the
/// provider (`queryParams` such as `prompt` or `access_type`).
const OWN_PARAMS: &[&str] = &[
    "provider",
    "scopes",
    "redirect_to",
    "code_challenge",
    "code_challenge_method",
    "skip_http_redirect",
    "invite_token",
    "client_secret",
    "code_verifier",
    "apikey",
    "request",
    "request_uri",
];

async fn start(st: &AppState, meta: &Meta, linking: Option<Uuid>) -> AuthResult<Response> {
    let q = &meta.query;
    let name = q
        .get("provider")
        .map(|s| s.to_ascii_lowercase())
        .unwrap_or_default();
    let provider = provider(st, &name)?;
    let pkce = tokens::pkce_params(
        q.get("code_challenge").map(String::as_str),
        q.get("code_challenge_method").map(String::as_str),
    )
    .map_err(AuthApiError::validation)?;
    let redirect_to = redirect::resolve(&st.config.auth, meta.redirect_to());
    let scopes: Vec<String> = q
        .get("scopes")
        .map(|s| {
            s.split([' ', ','])
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    let mut extra: Vec<(String, String)> = q
        .iter()
        .filter(|(k, _)| !OWN_PARAMS.contains(&k.to_ascii_lowercase().as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    extra.sort();
    // Per IP, as the other sign-in routes: each start writes a row and may
    // call the provider's discovery endpoint.
    super::ctx::ip_limit(st, meta)?;
    let state = tokens::random_secret();
    let nonce = tokens::random_secret();
    let (verifier, challenge) = tokens::new_pkce_pair();
    let url = st
        .auth
        .providers
        .authorize_url(&provider, &state, &challenge, &nonce, &scopes, &extra)
        .await
        .map_err(|e| {
            tracing::warn!(provider = %name, error = %e, "auth: starting an OAuth sign-in");
            AuthApiError::new(
                502,
                "unexpected_failure",
                "The sign-in provider could not be reached",
            )
        })?;
    let row = (
        tokens::sha256_hex(&state),
        name,
        redirect_to,
        pkce.as_ref().map(|p| p.0.clone()),
        pkce.as_ref().map(|p| p.1.clone()),
        tokens::seal(&state, SEAL_VERIFIER, &verifier),
        nonce,
        linking,
    );
    users::tx(st, move |c| {
        Box::pin(async move {
            c.execute(
                "INSERT INTO auth.oauth_flows (state_hash, provider, redirect_to, code_challenge, \
                   code_challenge_method, verifier_sealed, nonce, linking_user_id) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                &[
                    &row.0, &row.1, &row.2, &row.3, &row.4, &row.5, &row.6, &row.7,
                ],
            )
            .await?;
            Ok(())
        })
    })
    .await?;
    if q.get("skip_http_redirect").map(String::as_str) == Some("true") {
        return Ok(Json(json!({ "url": url.as_str() })).into_response());
    }
    Ok(redirect::to(StatusCode::FOUND, &url))
}

/// Purpose tags of sealed values (see [`tokens::seal`]).
const SEAL_VERIFIER: &str = "oauth provider verifier";
/// Seals the provider's tokens of a PKCE flow with its auth code.
pub const SEAL_PROVIDER_TOKENS: &str = "oauth provider tokens";

/// An enabled provider, or GoTrue's 400 for `/authorize`.
fn provider(st: &AppState, name: &str) -> AuthResult<Arc<Provider>> {
    st.auth.providers.get(name).ok_or_else(|| {
        let why = if st.config.auth.external.contains_key(name) {
            "provider is not enabled".to_string()
        } else {
            format!("Provider {name} could not be found")
        };
        AuthApiError::validation(format!("Unsupported provider: {why}"))
    })
}

/// `GET /callback`: the provider sends the browser back here.
pub async fn callback(State(st): State<AppState>, _k: Keyed, meta: Meta) -> Response {
    let params = meta.query.clone();
    finish(&st, &meta, params).await
}

/// `POST /callback` (`response_mode=form_post` providers): the same, from a form.
pub async fn callback_form(
    State(st): State<AppState>,
    _k: Keyed,
    meta: Meta,
    raw: Bytes,
) -> Response {
    let mut params: HashMap<String, String> =
        url::form_urlencoded::parse(&raw).into_owned().collect();
    for (k, v) in &meta.query {
        params.entry(k.clone()).or_insert_with(|| v.clone());
    }
    finish(&st, &meta, params).await
}

/// A started flow, read (and deleted) by its state.
struct Flow {
    provider: String,
    redirect_to: String,
    pkce: Option<(String, String)>,
    verifier: String,
    nonce: String,
    linking: Option<Uuid>,
}

async fn finish(st: &AppState, meta: &Meta, params: HashMap<String, String>) -> Response {
    // A state that finds no flow has no redirect_to: the site gets the error.
    let site = st.config.auth.site_url.clone();
    let to_site = |e: &AuthApiError| {
        redirect::to_browser(&site, redirect::error_pairs(e), true, StatusCode::SEE_OTHER)
    };
    let Some(state) = params.get("state").filter(|s| !s.is_empty()).cloned() else {
        let e = AuthApiError::new(400, "bad_oauth_callback", "OAuth state parameter missing");
        return to_site(&e);
    };
    // Taken once: a replayed or forged state finds nothing.
    let hash = tokens::sha256_hex(&state);
    let taken = users::tx(st, move |c| {
        Box::pin(async move {
            let row = c
                .query_opt(
                    "DELETE FROM auth.oauth_flows WHERE state_hash = $1 RETURNING provider, redirect_to, \
                       code_challenge, code_challenge_method, verifier_sealed, nonce, linking_user_id, \
                       created_at > now() - make_interval(secs => $2)",
                    &[&hash, &FLOW_TTL_SECS],
                )
                .await?;
            Ok(row)
        })
    })
    .await;
    let row = match taken {
        Ok(Some(r)) => r,
        Ok(None) => {
            let e = AuthApiError::new(400, "bad_oauth_state", "OAuth state not found or expired");
            return to_site(&e);
        }
        Err(e) => return to_site(&e),
    };
    let challenge: Option<String> = row.get(2);
    let method: Option<String> = row.get(3);
    let sealed: String = row.get(4);
    let flow = Flow {
        provider: row.get(0),
        redirect_to: row.get(1),
        pkce: challenge.zip(method),
        verifier: tokens::open(&state, SEAL_VERIFIER, &sealed).unwrap_or_default(),
        nonce: row.get(5),
        linking: row.get(6),
    };
    if !row.get::<_, bool>(7) {
        let e = AuthApiError::new(400, "bad_oauth_state", "OAuth state has expired");
        return to_site(&e);
    }
    let target = flow.redirect_to.clone();
    match complete(st, meta, &params, flow).await {
        Ok(resp) => resp,
        Err(Failure::Provider { error, description }) => {
            // The provider's own error (the user said no), passed on as it came.
            let pairs = vec![("error", error), ("error_description", description)];
            redirect::to_browser(&target, pairs, true, StatusCode::FOUND)
        }
        Err(Failure::Api(e)) => {
            redirect::to_browser(&target, redirect::error_pairs(&e), true, StatusCode::FOUND)
        }
    }
}

enum Failure {
    /// The provider's own `error` (the user said no): passed through, no code.
    Provider {
        error: String,
        description: String,
    },
    Api(AuthApiError),
}

impl From<AuthApiError> for Failure {
    fn from(e: AuthApiError) -> Failure {
        Failure::Api(e)
    }
}

async fn complete(
    st: &AppState,
    meta: &Meta,
    params: &HashMap<String, String>,
    flow: Flow,
) -> Result<Response, Failure> {
    if let Some(error) = params.get("error").filter(|s| !s.is_empty()) {
        return Err(Failure::Provider {
            error: crate::oauth::short(error),
            description: crate::oauth::short(
                params
                    .get("error_description")
                    .map(String::as_str)
                    .unwrap_or(""),
            ),
        });
    }
    let code = params
        .get("code")
        .filter(|s| !s.is_empty())
        .ok_or_else(|| {
            AuthApiError::new(
                400,
                "bad_oauth_callback",
                "OAuth callback with missing authorization code",
            )
        })?;
    let provider = st.auth.providers.get(&flow.provider).ok_or_else(|| {
        AuthApiError::new(
            400,
            "oauth_provider_not_supported",
            "Unsupported provider: provider is not enabled",
        )
    })?;
    let providers = &st.auth.providers;
    let tokens = providers
        .exchange(&provider, code, &flow.verifier)
        .await
        .map_err(|e| provider_failure(&flow.provider, "Unable to exchange external code", e))?;
    let who = providers
        .user(&provider, &tokens, &flow.nonce)
        .await
        .map_err(|e| {
            provider_failure(
                &flow.provider,
                "Error getting user profile from external provider",
                e,
            )
        })?;
    let (s, m, name) = (st.clone(), meta.clone(), flow.provider.clone());
    let (pkce, linking) = (flow.pkce.clone(), flow.linking);
    let provider_tokens = json!({
        "provider_token": tokens.access_token,
        "provider_refresh_token": tokens.refresh_token,
    });
    let outcome = users::tx(st, move |c| {
        Box::pin(async move {
            match pkce {
                Some((challenge, method)) => {
                    // A link waits for the code exchange, where the verifier proves
                    // that the browser finishing it is the one that started it: a
                    // link URL sent to someone else cannot attach their account.
                    let (user, pending) = match linking {
                        Some(target) => (target, Some(pending_identity(&name, &who))),
                        None => (identities::sign_in(&s, c, &name, &who, None, &m).await?, None),
                    };
                    let code = Uuid::new_v4().to_string();
                    let sealed = tokens::seal(&code, SEAL_PROVIDER_TOKENS, &provider_tokens.to_string());
                    c.execute(
                        "INSERT INTO auth.flow_state (user_id, auth_code, code_challenge, code_challenge_method, \
                           authentication_method, auth_code_issued_at, provider_tokens_sealed, pending_identity) \
                         VALUES ($1, $2, $3, $4, 'oauth', now(), $5, $6)",
                        &[&user, &tokens::sha256_hex(&code), &challenge, &method, &sealed, &pending],
                    )
                    .await?;
                    Ok(Done::Code(code))
                }
                None => {
                    let user = identities::sign_in(&s, c, &name, &who, linking, &m).await?;
                    Ok(Done::Session(session::create(&s, c, user, "oauth", &m).await?))
                }
            }
        })
    })
    .await?;
    Ok(match outcome {
        Done::Code(code) => redirect::with_code(&flow.redirect_to, &code, StatusCode::FOUND),
        Done::Session(session) => {
            let mut pairs = redirect::session_pairs(&session);
            // GoTrue sends provider_token always, provider_refresh_token when given.
            pairs.push(("provider_token", tokens.access_token.clone()));
            if let Some(r) = &tokens.refresh_token {
                pairs.push(("provider_refresh_token", r.clone()));
            }
            redirect::to_browser(&flow.redirect_to, pairs, false, StatusCode::FOUND)
        }
    })
}

enum Done {
    Code(String),
    Session(Value),
}

/// A provider identity waiting in a PKCE flow for its code exchange
/// ([`finish_link`]).
fn pending_identity(provider: &str, who: &ProviderUser) -> Value {
    json!({
        "provider": provider,
        "id": who.id,
        "email": who.email,
        "email_verified": who.email_verified,
        "data": who.data,
    })
}

/// Completes a link at the PKCE code exchange: the identity parked by the
/// callback joins the flow's user.
pub async fn finish_link(
    st: &AppState,
    c: &tokio_postgres::Client,
    user: Uuid,
    pending: &Value,
    meta: &Meta,
) -> AuthResult<()> {
    let who = ProviderUser {
        id: pending["id"].as_str().unwrap_or_default().to_string(),
        email: pending["email"].as_str().map(str::to_string),
        email_verified: pending["email_verified"] == json!(true),
        data: pending["data"].clone(),
    };
    let provider = pending["provider"].as_str().unwrap_or_default();
    identities::sign_in(st, c, provider, &who, Some(user), meta).await?;
    Ok(())
}

/// A provider failure as GoTrue reports it (500 → `server_error`); the cause is
/// logged without codes or tokens.
fn provider_failure(provider: &str, what: &str, e: ProviderError) -> AuthApiError {
    tracing::warn!(provider, error = %e, "auth: OAuth callback");
    AuthApiError::new(500, "unexpected_failure", what)
}
