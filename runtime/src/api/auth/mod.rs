//! `/auth/v1`: a GoTrue-compatible auth API that `@supabase/supabase-js` uses
//! unchanged. Paths, JSON shapes and error codes follow GoTrue; see docs/AUTH.md.
//!
//! Every request: routes (this file) → parse (`ctx`: body, meta, callers) →
//! logic (one file per flow) → exec (SQL as the `wasmbase_auth` role through
//! host-api's `db::in_transaction` on the auth pool) → response (GoTrue JSON, `error` for failures).

mod account;
mod admin;
mod anonymous;
mod ctx;
mod email;
pub mod error;
mod external;
mod grant;
mod id_token;
mod identities;
pub mod mail;
mod meta;
mod redirect;
mod session;
mod session_conns;
mod signup;
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
    pub session_conns: session_conns::SessionConns,
    /// Sweep passes this node has finished, so a test can wait for the first
    /// one instead of racing it.
    pub sweeps: std::sync::atomic::AtomicU64,
    /// The configured OAuth / OIDC providers and their client.
    pub providers: crate::oauth::Providers,
    /// Whether `signInAnonymously()` is allowed.
    pub anonymous: bool,
    /// Per-IP limiter on anonymous sign-ins (per hour, as GoTrue's).
    pub anonymous_limit: RateLimiter,
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
            session_conns: session_conns::SessionConns::new(cores / 2),
            sweeps: Default::default(),
            providers: crate::oauth::Providers::new(
                &a.external,
                &format!("{external_url}/auth/v1/callback"),
                std::time::Duration::from_secs(a.provider_timeout_secs.max(1)),
            )?,
            anonymous: a.anonymous_sign_ins.unwrap_or(false),
            anonymous_limit: RateLimiter::per_window(
                a.rate_limit_anonymous_per_hour,
                std::time::Duration::from_secs(3600),
            ),
            external_url,
        })
    }
}

/// How often each node runs [`sweep_once`].
const SWEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(60);

/// How long a rotated-out refresh token is kept: reusing it within this time
/// still ends its session (reuse detection), later it is simply not found.
/// GoTrue's cleanup keeps them 24 hours too.
const REVOKED_TOKEN_RETENTION_SECS: u64 = 24 * 3600;

/// Rows one sweep statement deletes at once, so no statement holds many locks
/// (a sweep repeats it until less than this is left, up to [`SWEEP_BATCHES`]).
const SWEEP_BATCH: i64 = 1000;
/// Batches per statement per pass; the rest waits for the next pass.
const SWEEP_BATCHES: usize = 100;

/// Once the node is ready and then about once a minute, on every node,
/// [`sweep_once`]; its deletes are idempotent and skip rows another transaction
/// holds, so N nodes sharing one database need no coordination.
pub async fn sweep(st: &AppState, cancel: tokio_util::sync::CancellationToken) {
    let mut wait = std::time::Duration::ZERO;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = cancel.cancelled() => return,
        }
        if !st.is_ready() {
            // Migrations may not have run yet: look again shortly.
            wait = std::time::Duration::from_secs(1);
            continue;
        }
        match sweep_once(st).await {
            Ok(n) => tracing::debug!(rows = n, "swept ended auth sessions and tokens"),
            Err(e) => tracing::warn!(code = e.code, "sweeping expired auth tokens"),
        }
        st.auth
            .sweeps
            .fetch_add(1, std::sync::atomic::Ordering::Release);
        wait = SWEEP_EVERY;
    }
}

/// Deletes what can no longer be used and returns the rows removed: email tokens
/// past `otp_ttl_secs`, PKCE flows older than a day (their codes live 10
/// minutes), OAuth flows older than an hour (their state lives 10 minutes),
/// anonymous users older than `anonymous_max_age_days`, rotated-out refresh tokens older than a day, and sessions that have
/// ended — past `not_after`, the time-box (`sessions_timebox_secs`) or the
/// inactivity timeout (`sessions_inactivity_timeout_secs`), or left without a
/// live refresh token (after a minute, so a session being created is never
/// taken), and e-mail send times older than `email_min_interval_secs`. Each statement is its own short transaction and skips locked rows,
/// so a sweep never waits on a refresh and many nodes may sweep at once.
pub async fn sweep_once(st: &AppState) -> Result<u64, error::AuthApiError> {
    let a = &st.config.auth;
    let ttl = a.otp_ttl_secs as f64;
    let retention = REVOKED_TOKEN_RETENTION_SECS.max(a.refresh_token_reuse_interval_secs) as f64;
    let timebox = a.sessions_timebox_secs as f64;
    let inactivity = a.sessions_inactivity_timeout_secs as f64;
    let c = st.auth.pool.get().await.map_err(db::DbError::Pool)?;
    let mut removed = c
        .execute(
            "DELETE FROM auth.one_time_tokens WHERE created_at < now() - make_interval(secs => $1)",
            &[&ttl],
        )
        .await?;
    removed += c
        .execute(
            "DELETE FROM auth.flow_state WHERE created_at < now() - interval '1 day'",
            &[],
        )
        .await?;
    removed += c
        .execute(
            "DELETE FROM auth.oauth_flows WHERE created_at < now() - interval '1 hour'",
            &[],
        )
        .await?;
    removed += c
        .execute(
            "DELETE FROM auth.email_send_times WHERE sent_at < now() - make_interval(secs => $1)",
            &[&(a.email_min_interval_secs as f64)],
        )
        .await?;
    let tokens = "DELETE FROM auth.refresh_tokens WHERE id IN (SELECT id FROM auth.refresh_tokens \
         WHERE revoked AND updated_at < now() - make_interval(secs => $1::float8) \
         LIMIT $2 FOR UPDATE SKIP LOCKED)";
    let sessions = "DELETE FROM auth.sessions WHERE id IN (SELECT s.id FROM auth.sessions s \
         WHERE s.not_after <= now() \
            OR ($1::float8 > 0 AND s.created_at + make_interval(secs => $1::float8) <= now()) \
            OR ($2::float8 > 0 AND coalesce(s.refreshed_at, s.created_at) + make_interval(secs => $2::float8) <= now()) \
            OR (s.created_at < now() - interval '1 minute' AND NOT EXISTS \
                 (SELECT 1 FROM auth.refresh_tokens rt WHERE rt.session_id = s.id AND NOT rt.revoked)) \
         LIMIT $3 FOR UPDATE SKIP LOCKED)";
    for _ in 0..SWEEP_BATCHES {
        let n = c.execute(tokens, &[&retention, &SWEEP_BATCH]).await?;
        removed += n;
        if n < SWEEP_BATCH as u64 {
            break;
        }
    }
    for _ in 0..SWEEP_BATCHES {
        let n = c
            .execute(sessions, &[&timebox, &inactivity, &SWEEP_BATCH])
            .await?;
        removed += n;
        if n < SWEEP_BATCH as u64 {
            break;
        }
    }
    if a.anonymous_max_age_days > 0 {
        let guests = "DELETE FROM auth.users WHERE id IN (SELECT id FROM auth.users \
             WHERE is_anonymous AND created_at < now() - make_interval(days => $1) \
               AND NOT EXISTS (SELECT 1 FROM auth.identities i WHERE i.user_id = auth.users.id) \
             LIMIT $2 FOR UPDATE SKIP LOCKED)";
        let days = a.anonymous_max_age_days.min(i32::MAX as u32) as i32;
        for _ in 0..SWEEP_BATCHES {
            let n = c.execute(guests, &[&days, &SWEEP_BATCH]).await?;
            removed += n;
            if n < SWEEP_BATCH as u64 {
                break;
            }
        }
    }
    Ok(removed)
}

/// Routes of the auth API.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/auth/v1/signup", post(signup::signup))
        .route("/auth/v1/token", post(grant::token))
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
        .route("/auth/v1/authorize", get(external::authorize))
        .route(
            "/auth/v1/callback",
            get(external::callback).post(external::callback_form),
        )
        .route(
            "/auth/v1/user/identities/authorize",
            get(external::link_authorize),
        )
        .route(
            "/auth/v1/user/identities/{id}",
            axum::routing::delete(identities::unlink),
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
