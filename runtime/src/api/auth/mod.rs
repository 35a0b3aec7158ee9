//! `/auth/v1`: a GoTrue-compatible auth API that `@supabase/supabase-js` uses
//! unchanged. Paths, JSON shapes and error codes follow GoTrue; see docs/AUTH.md.
//!
//! Every request: routes (this file) → parse (`ctx`: body, meta, callers) →
//! logic (one file per flow) → exec (SQL as the `wasmbase_auth` role through
//! host-api's `as_principal`) → response (GoTrue JSON, `error` for failures).

mod account;
mod admin;
mod ctx;
mod email;
pub mod error;
mod lookup;
pub mod mail;
mod meta;
mod redirect;
mod session;
mod signup;
mod token;
mod tokens;
mod user_cache;
mod users;

use crate::config::Config;
use crate::server::rate_limit::RateLimiter;
use crate::server::state::AppState;
use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use http::HeaderValue;
use wasmbase_host_api::db;
use wasmbase_host_api::password::{self, Hasher};

/// State of the auth API, built once at start.
pub struct AuthState {
    /// The auth service's own connections (`authenticator` pinned to `wasmbase_auth`).
    pub pool: deadpool_postgres::Pool,
    /// Bounded argon2id pool.
    pub hasher: Hasher,
    /// Per-IP limiter on sign-in, sign-up, recover, otp and verify.
    pub ip_limit: RateLimiter,
    /// Per-email limiter on the same endpoints.
    pub email_limit: RateLimiter,
    /// SMTP or the dev mailbox.
    pub mailer: mail::Mailer,
    /// Sign up without email confirmation.
    pub autoconfirm: bool,
    /// Public base URL of this server (no trailing slash), for email links.
    pub external_url: String,
    /// `iss` of issued access tokens: `<external_url>/auth/v1`.
    pub issuer: String,
    /// Rendered users for `GET /user`, valid per row version.
    pub user_cache: user_cache::UserCache,
    /// Shared, pipelined connections for the session check.
    pub lookup: lookup::Lookup,
}

impl AuthState {
    /// Builds the auth state; `bound` is the server's real address (port 0 resolved).
    pub fn new(
        config: &Config,
        bound: std::net::SocketAddr,
        db: tokio_postgres::Config,
    ) -> anyhow::Result<AuthState> {
        let a = &config.auth;
        let external_url = a
            .external_url
            .clone()
            .unwrap_or_else(|| {
                if bound.ip().is_unspecified() {
                    format!("http://localhost:{}", bound.port())
                } else {
                    format!("http://{bound}") // SocketAddr brackets IPv6 hosts
                }
            })
            .trim_end_matches('/')
            .to_string();
        let cores = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2);
        if a.smtp.is_none() {
            // Only with auth.dev_mailbox = true (Config::validate).
            tracing::warn!(
                "no [auth.smtp]: auth emails (live sign-in, recovery and invite links) are kept in the \
                 dev mailbox (`wasmbase mail`), not sent to users"
            );
        }
        let pool = db::service_pool(
            db,
            &db::PoolSettings {
                max_size: (config.database.pool_size / 2).max(2),
                wait_timeout: std::time::Duration::from_millis(config.database.pool_timeout_ms),
                application_name: "wasmbase-auth",
            },
            std::time::Duration::from_millis(config.database.statement_timeout_ms),
        )?;
        Ok(AuthState {
            pool,
            // One core is left to requests and PostgreSQL: measured on 2 cores, one
            // hashing thread gave more sign-ins/s than two *and* kept /health fast.
            hasher: Hasher::new(
                a.hash_concurrency.unwrap_or(cores.saturating_sub(1).max(1)),
                a.hash_queue,
                password::default_params(),
            ),
            ip_limit: RateLimiter::new(a.rate_limit_ip_per_minute),
            email_limit: RateLimiter::new(a.rate_limit_email_per_minute),
            mailer: mail::Mailer::from_config(a.smtp.as_ref())?,
            autoconfirm: a.autoconfirm.unwrap_or(false),
            issuer: format!("{external_url}/auth/v1"),
            user_cache: Default::default(),
            // One shared connection per two cores: on 2 cores, one connection
            // (8 requests pipelined) gave 18.9k req/s where two gave 16.2k.
            lookup: lookup::Lookup::new(cores / 2),
            external_url,
        })
    }
}

/// Every few minutes, on every node, [`sweep_once`]; the deletes are idempotent,
/// so N nodes need no coordination.
pub async fn sweep(st: &AppState, cancel: tokio_util::sync::CancellationToken) {
    let every = std::time::Duration::from_secs(300);
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = cancel.cancelled() => return,
        }
        if let Err(e) = sweep_once(st).await {
            tracing::warn!(code = e.code, "sweeping expired auth tokens");
        }
    }
}

/// Deletes what can no longer be used: email tokens past `otp_ttl_secs`, PKCE
/// flows older than a day (their codes live 10 minutes) and send times older than
/// `email_min_interval_secs`. Returns the rows removed.
pub async fn sweep_once(st: &AppState) -> Result<u64, error::AuthApiError> {
    let ttl = st.config.auth.otp_ttl_secs as f64;
    let interval = st.config.auth.email_min_interval_secs as f64;
    db::in_transaction(&st.auth.pool, move |c| {
        Box::pin(async move {
            let tokens = c
                .execute("DELETE FROM auth.one_time_tokens WHERE created_at < now() - make_interval(secs => $1)", &[&ttl])
                .await?;
            let flows = c.execute("DELETE FROM auth.flow_state WHERE created_at < now() - interval '1 day'", &[]).await?;
            let sends = c
                .execute("DELETE FROM auth.email_send_times WHERE sent_at < now() - make_interval(secs => $1)", &[&interval])
                .await?;
            Ok(tokens + flows + sends)
        })
    })
    .await
}

/// Routes of the auth API.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/auth/v1/signup", post(signup::signup))
        .route("/auth/v1/token", post(token::token))
        .route("/auth/v1/logout", post(account::logout))
        .route(
            "/auth/v1/user",
            get(account::get_user).put(account::update_user),
        )
        .route("/auth/v1/recover", post(email::recover))
        .route("/auth/v1/otp", post(email::otp))
        .route("/auth/v1/resend", post(email::resend))
        .route(
            "/auth/v1/verify",
            get(email::verify_get).post(email::verify_post),
        )
        .route("/auth/v1/settings", get(meta::settings))
        .route("/auth/v1/health", get(meta::health))
        .route("/auth/v1/.well-known/jwks.json", get(meta::jwks))
        .route("/auth/v1/invite", post(admin::invite))
        .route("/auth/v1/admin/users", get(admin::list).post(admin::create))
        .route(
            "/auth/v1/admin/users/{id}",
            get(admin::get).put(admin::update).delete(admin::delete),
        )
        .route("/auth/v1/admin/generate_link", post(admin::generate_link))
        .layer(axum::middleware::from_fn(api_version))
}

/// Reads `X-Supabase-Api-Version` for the error format and echoes it.
async fn api_version(req: Request, next: Next) -> Response {
    let modern = req
        .headers()
        .get("x-supabase-api-version")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.len() == 10 && v.as_bytes()[4] == b'-' && v >= "2024-01-01");
    let mut resp = error::API_2024.scope(modern, next.run(req)).await;
    if modern {
        resp.headers_mut().insert(
            "x-supabase-api-version",
            HeaderValue::from_static("2024-01-01"),
        );
    }
    resp
}
