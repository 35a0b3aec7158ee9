//! The HTTP server: router, shared middleware, startup (database with retry) and
//! graceful shutdown. Each API lives in `crate::api::*` with its own routes.

pub mod caller;
pub mod conn;
pub mod cores;
pub mod error;
pub mod metrics;
pub mod middleware;
pub mod ops;
pub mod rate_limit;
pub mod state;

use crate::config::Config;
use crate::{api, migrate};
use anyhow::{Context, Result};
use axum::routing::get;
use axum::Router;
use http::{HeaderName, HeaderValue, Method};
use state::{AppState, Inner};
use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tower_http::cors::{AllowOrigin, CorsLayer};
use wasmbase_host_api::db::{self, PoolSettings};
use wasmbase_host_api::gate::Gate;
use wasmbase_host_api::jwt::JwtKeys;
use wasmbase_host_api::keys::{self, KeyStore};

/// A server that is accepting connections.
pub struct RunningServer {
    /// The bound address (useful with port 0).
    pub addr: SocketAddr,
    /// Shared state, for tests and the dev command.
    pub state: AppState,
    cancel: CancellationToken,
    join: JoinHandle<()>,
    grace: Duration,
}

impl RunningServer {
    /// A token that is cancelled when the server shuts down.
    pub fn cancel_token(&self) -> CancellationToken {
        self.cancel.clone()
    }

    /// Stops accepting, lets in-flight requests finish (up to the grace period).
    pub async fn shutdown(self) {
        self.cancel.cancel();
        if tokio::time::timeout(self.grace, self.join).await.is_err() {
            tracing::warn!("shutdown grace period over; dropping remaining connections");
        }
    }

    /// Waits until startup (migrations, keys) finished.
    pub async fn wait_ready(&self) {
        while !self.state.is_ready() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Waits for SIGINT/SIGTERM or for `cancel` (whichever comes first).
pub async fn serve_signal_or(cancel: CancellationToken) {
    tokio::select! {
        _ = crate::cli::serve::shutdown_signal() => {}
        _ = cancel.cancelled() => {}
    }
}

/// Connection settings for `authenticator` on the owner URL's host and database.
pub fn authenticator_config(
    owner: &tokio_postgres::Config,
    password: Option<&str>,
) -> tokio_postgres::Config {
    login_config(owner, "authenticator", password)
}

/// Connection settings for one of the platform's login roles (`authenticator`,
/// `wasmbase_auth`, `wasmbase_functions`) on the owner URL's host and database,
/// with that role's own password (see [`migrate::LOGIN_ROLES`]).
pub fn login_config(
    owner: &tokio_postgres::Config,
    user: &str,
    password: Option<&str>,
) -> tokio_postgres::Config {
    let mut c = tokio_postgres::Config::new();
    for h in owner.get_hosts() {
        match h {
            tokio_postgres::config::Host::Tcp(s) => c.host(s),
            tokio_postgres::config::Host::Unix(p) => c.host_path(p),
        };
    }
    for p in owner.get_ports() {
        c.port(*p);
    }
    if let Some(d) = owner.get_dbname() {
        c.dbname(d);
    }
    c.ssl_mode(owner.get_ssl_mode());
    c.user(user);
    if let Some(pw) = password {
        c.password(pw);
    }
    c
}

fn cors(config: &Config) -> CorsLayer {
    let origins = &config.server.cors_origins;
    let allow = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()))
    };
    let h = |s: &'static str| HeaderName::from_static(s);
    CorsLayer::new()
        .allow_origin(allow)
        .allow_methods([
            Method::GET,
            Method::HEAD,
            Method::POST,
            Method::PUT,
            Method::PATCH,
            Method::DELETE,
            Method::OPTIONS,
        ])
        .allow_headers([
            h("authorization"),
            h("apikey"),
            h("content-type"),
            h("x-client-info"),
            h("prefer"),
            h("range"),
            h("accept-profile"),
            h("content-profile"),
            h("x-supabase-api-version"),
            h("x-request-id"),
            h("x-upsert"),
            h("cache-control"),
            h("tus-resumable"),
            h("upload-length"),
            h("upload-metadata"),
            h("upload-offset"),
            h("x-http-method-override"),
            h("x-signature"),
        ])
        .expose_headers([
            h("content-range"),
            h("x-request-id"),
            h("content-location"),
            h("location"),
            h("x-total-count"),
            h("link"),
            h("x-supabase-api-version"),
            h("tus-resumable"),
            h("tus-version"),
            h("tus-extension"),
            h("tus-max-size"),
            h("tus-complete"),
            h("upload-offset"),
            h("upload-length"),
            h("upload-metadata"),
            h("upload-expires"),
        ])
        .max_age(Duration::from_secs(3600))
}

/// The full router: ops endpoints and every API, wrapped in the envelope and CORS.
pub fn router(state: AppState) -> Router {
    let cors = cors(&state.config);
    Router::new()
        .route("/health", get(ops::health))
        .route("/ready", get(ops::ready))
        .route("/metrics", get(ops::metrics))
        .merge(api::platform::routes())
        .merge(api::admin::routes())
        .merge(api::cron::routes())
        .merge(api::auth::routes())
        .merge(api::rest::routes())
        .merge(api::storage::routes())
        .merge(api::realtime::routes())
        .merge(api::functions::routes())
        .merge(api::deploy::routes())
        .fallback(|| async { error::ApiError::not_found("No such route") })
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            middleware::envelope,
        ))
        .layer(axum::extract::DefaultBodyLimit::max(
            state.body_limit as usize,
        ))
        .layer(cors)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            api::storage::tus_options,
        ))
        .with_state(state)
}

/// Validates `config`, binds, and serves until [`RunningServer::shutdown`]. The
/// database may be down: startup retries in the background with backoff while
/// `/health` answers and `/ready` says 503.
pub async fn start(config: Config) -> Result<RunningServer> {
    config.validate()?;
    let owner =
        tokio_postgres::Config::from_str(config.database.url.as_deref().expect("validated"))?;
    let auth_cfg = authenticator_config(&owner, config.database.authenticator_password.as_deref());
    let pool = db::pool(
        auth_cfg.clone(),
        &PoolSettings {
            max_size: config.database.pool_size,
            wait_timeout: Duration::from_millis(config.database.pool_timeout_ms),
            application_name: "wasmbase",
        },
    )?;
    let system = db::pool(
        owner.clone(),
        &PoolSettings {
            max_size: 4,
            wait_timeout: Duration::from_secs(10),
            application_name: "wasmbase-system",
        },
    )?;
    let aud = Some(config.auth.jwt_audience.clone()).filter(|a| !a.is_empty());
    let jwt = JwtKeys::hs256(
        config.auth.jwt_secret.as_deref().expect("validated"),
        aud,
        &config.auth.jwt_issuer,
    )
    .map_err(|e| anyhow::anyhow!("configuration error: `auth.jwt_secret`: {e}"))?;
    let mut pems = Vec::new();
    for path in &config.auth.signing_keys {
        let pem = std::fs::read_to_string(path).with_context(|| {
            format!(
                "configuration error: `auth.signing_keys`: reading {}",
                path.display()
            )
        })?;
        pems.push((path.display().to_string(), pem));
    }
    let jwt = jwt
        .with_signing_keys(&pems)
        .map_err(|e| anyhow::anyhow!("configuration error: `auth.signing_keys`: {e}"))?;
    let gate = Gate::new(
        Arc::new(jwt),
        Arc::new(KeyStore::new()),
        config.auth.legacy_jwt_keys,
    );
    let addr = config.listen_addr();
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr} (`server.listen`)"))?;
    let addr = listener.local_addr()?;
    let auth_login = login_config(
        &owner,
        "wasmbase_auth",
        config.database.auth_password.as_deref(),
    );
    let auth = crate::api::auth::AuthState::new(&config, addr, auth_login)?;
    let functions = functions_state(&config, &owner)?;
    let storage = storage_state(&config, &owner, system.clone()).await?;
    let cancel = CancellationToken::new();
    let changes = Arc::new(crate::api::realtime::Changes::new(Duration::from_secs(
        config.realtime.catchup_window_secs,
    )));
    tokio::spawn(
        changes
            .clone()
            .run(system.clone(), pool.clone(), cancel.clone()),
    );
    let realtime = Arc::new(crate::api::realtime::Hub::new(
        system.clone(),
        cancel.clone(),
        changes,
    ));
    let cron_pool = db::pool(
        owner.clone(),
        &PoolSettings {
            max_size: 2,
            wait_timeout: Duration::from_secs(10),
            application_name: "wasmbase-cron",
        },
    )?;
    let cron_records = db::pool(
        owner.clone(),
        &PoolSettings {
            max_size: 3,
            wait_timeout: Duration::from_secs(10),
            application_name: "wasmbase-cron-records",
        },
    )?;
    let cron = Arc::new(crate::cron::Cron::new(
        realtime.node,
        Duration::from_secs(config.cron.lease_secs),
        cron_pool,
        cron_records,
        config.cron.enabled,
    ));
    let sc = &config.storage;
    let render_dir = sc
        .render_cache_dir
        .clone()
        .unwrap_or_else(|| crate::cache_dir::default("render"));
    let render = Arc::new(
        crate::api::storage::Renderer::new(
            render_dir.clone(),
            sc.render_cache_bytes,
            sc.render_concurrency.unwrap_or_else(|| {
                // Half the cores: the other half keeps answering requests.
                std::thread::available_parallelism().map_or(1, |n| (n.get() / 2).max(1))
            }),
        )
        .with_context(|| {
            format!(
                "configuration error: `storage.render_cache_dir`: cannot use {}",
                render_dir.display()
            )
        })?,
    );
    let state = AppState::new(Inner {
        cron,
        render,
        storage: storage.clone(),
        realtime,
        auth,
        request_timeout: Duration::from_millis(config.server.request_timeout_ms),
        body_limit: config.server.body_limit_bytes,
        gate,
        pool,
        system,
        metrics: Default::default(),
        ready: Default::default(),
        schema: Default::default(),
        schema_dirty: Default::default(),
        cost_guard: Arc::new(wasmbase_host_api::data::CostGuard::new(
            config.data.aggregate_max_cost,
        )),
        functions,
        config,
    });
    tokio::spawn({
        let (st, cancel) = (state.clone(), cancel.clone());
        async move { crate::api::auth::sweep(&st, cancel).await }
    });
    tokio::spawn(wasmbase_host_api::storage::gc::worker(
        state.system.clone(),
        storage.store.clone(),
        storage.gc_kick.clone(),
        cancel.clone(),
    ));
    tokio::spawn(wasmbase_host_api::storage::resumable::expiry_worker(
        storage.clone(),
        cancel.clone(),
    ));
    tokio::spawn(wasmbase_host_api::storage::sweep::worker(
        state.system.clone(),
        storage.store.clone(),
        Duration::from_secs(state.config.storage.orphan_grace_secs),
        Duration::from_secs(state.config.storage.orphan_sweep_interval_secs.max(1)),
        cancel.clone(),
    ));
    let mut listen_cfg = owner;
    listen_cfg.application_name("wasmbase-listen");
    // Notice a silently dead LISTEN connection in about a minute, not two hours.
    listen_cfg
        .keepalives(true)
        .keepalives_idle(Duration::from_secs(30));
    tokio::spawn(startup(state.clone(), listen_cfg, cancel.clone()));
    tokio::spawn(crate::alloc::return_idle_memory(cancel.clone(), {
        let st = state.clone();
        move || st.metrics.served()
    }));
    // The watch is in place before the first load, so a function created in
    // between is seen by one or the other.
    if state.functions.watch {
        crate::functions::watch::start(state.clone(), cancel.clone());
    }
    tokio::spawn(crate::functions::load_all(state.clone()));

    let app = router(state.clone());
    let limits = conn::Limits::from_config(&state.config.server);
    let join = match state.config.server.threads {
        // tokio's work-stealing runtime (the default; see docs/ARCHITECTURE.md).
        0 => tokio::spawn(conn::serve_shared(listener, app, limits, cancel.clone())),
        n => tokio::spawn(
            cores::serve(listener, n, app, limits, cancel.clone())
                .context("starting the serving threads")?,
        ),
    };
    Ok(RunningServer {
        addr,
        grace: Duration::from_millis(state.config.server.shutdown_grace_ms),
        state,
        cancel,
        join,
    })
}

/// The storage backend and limits `[storage]` asks for.
async fn storage_state(
    config: &Config,
    owner: &tokio_postgres::Config,
    system: deadpool_postgres::Pool,
) -> Result<wasmbase_host_api::storage::Storage> {
    use wasmbase_host_api::storage::{local::LocalDisk, s3, ObjectStore};
    let sc = &config.storage;
    let store: Arc<dyn ObjectStore> = if sc.backend == "s3" {
        let s3 = s3::S3::new(&s3::S3Settings {
            endpoint: sc.s3_endpoint.clone(),
            region: sc.s3_region.clone(),
            bucket: sc.s3_bucket.clone().unwrap_or_default(),
            access_key_id: sc.s3_access_key_id.clone().unwrap_or_default(),
            secret_access_key: sc.s3_secret_access_key.clone().unwrap_or_default(),
            force_path_style: sc.s3_force_path_style,
            prefix: sc.s3_prefix.clone(),
        });
        // A server that is down at start is not fatal: requests then get
        // 503 StorageBackendError until it answers.
        match tokio::time::timeout(Duration::from_secs(5), s3.ensure_bucket()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "S3 bucket not ready"),
            Err(_) => tracing::warn!("S3 did not answer within 5 s at start"),
        }
        Arc::new(s3)
    } else {
        let dir = sc
            .local_dir
            .clone()
            .unwrap_or_else(|| std::path::PathBuf::from("storage"));
        Arc::new(LocalDisk::open(&dir).with_context(|| {
            format!(
                "configuration error: `storage.local_dir`: cannot use {}",
                dir.display()
            )
        })?)
    };
    Ok(wasmbase_host_api::storage::Storage {
        store,
        max_upload_bytes: config.storage.max_upload_bytes,
        idle_timeout: Duration::from_millis(config.storage.upload_idle_timeout_ms),
        gc_kick: Default::default(),
        system,
        upload_locks: wasmbase_host_api::storage::upload_locks::UploadLocks::new(owner.clone()),
        resumable_expiry: Duration::from_secs(config.storage.resumable_expiry_secs),
    })
}

/// The functions engine, pools and paths from `[functions]`.
fn functions_state(
    config: &Config,
    owner: &tokio_postgres::Config,
) -> Result<crate::functions::Functions> {
    let fc = &config.functions;
    let cache_dir = fc
        .cache_dir
        .clone()
        .unwrap_or_else(|| crate::cache_dir::default("functions"));
    let target_dir = fc
        .target_dir
        .clone()
        .unwrap_or_else(|| fc.dir.join("target"));
    let instances = (fc.max_concurrency as u32).clamp(16, 10_000);
    let engine = crate::functions::Engine::new(
        cache_dir,
        Duration::from_millis(fc.tick_ms.max(1)),
        instances,
        fc.warm_instances as u32,
    )?;
    let db_calls = fc
        .max_db_calls
        .unwrap_or((config.database.pool_size / 2).max(1));
    let sql_login = login_config(
        owner,
        "wasmbase_functions",
        config.database.functions_password.as_deref(),
    );
    let sql_pool = db::isolated_pool(
        sql_login,
        &PoolSettings {
            max_size: db_calls,
            wait_timeout: Duration::from_millis(config.database.pool_timeout_ms),
            application_name: "wasmbase-functions",
        },
    )?;
    let secrets =
        match &fc.secrets_key {
            Some(k) => Some(crate::functions::secrets::cipher(k).map_err(|e| {
                anyhow::anyhow!("configuration error: `functions.secrets_key`: {e:#}")
            })?),
            None => None,
        };
    let dotenv = if fc.local.unwrap_or(false) {
        crate::functions::read_dotenv(std::path::Path::new(".env"))
    } else {
        Default::default()
    };
    let (logs, log_buf) = crate::functions::logs::Sink::new();
    let log_pool = db::pool(
        owner.clone(),
        &PoolSettings {
            max_size: 1,
            wait_timeout: Duration::from_secs(10),
            application_name: "wasmbase-function-logs",
        },
    )?;
    let retention = match fc.log_retention_hours {
        0 => None,
        h => Some(std::time::Duration::from_secs(h.saturating_mul(3600))),
    };
    tokio::spawn(crate::functions::logs::writer(log_pool, log_buf, retention));
    Ok(crate::functions::Functions {
        engine,
        registry: Default::default(),
        global: Arc::new(tokio::sync::Semaphore::new(fc.max_concurrency.max(1))),
        db_permits: Arc::new(tokio::sync::Semaphore::new(db_calls)),
        sql_pool,
        dir: fc.dir.clone(),
        target_dir,
        build: fc.build.unwrap_or(false),
        watch: fc.watch.unwrap_or(false),
        local: fc.local.unwrap_or(false),
        env: arc_swap::ArcSwap::from_pointee(dotenv.clone()),
        dotenv,
        secrets,
        logs,
        build_lock: Default::default(),
        sync_lock: Default::default(),
    })
}

/// Connects and migrates, retrying with backoff until it works; then keeps the key
/// cache in sync through LISTEN/NOTIFY (full reload after every (re)connect).
async fn startup(state: AppState, owner: tokio_postgres::Config, cancel: CancellationToken) {
    let mut backoff = Duration::from_millis(250);
    loop {
        match startup_once(&state).await {
            Ok(()) => break,
            Err(e) => {
                tracing::error!(
                    "database not ready: {e:#}; retrying in {:.1}s (/ready answers 503 meanwhile)",
                    backoff.as_secs_f64()
                );
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = cancel.cancelled() => return,
                }
                backoff = (backoff * 2).min(Duration::from_secs(10));
            }
        }
    }
    // The scheduler needs its tables too.
    if state.config.cron.enabled {
        tokio::spawn(crate::cron::scheduler::run(state.clone(), cancel.clone()));
        tokio::spawn(crate::cron::net::worker(state.clone(), cancel.clone()));
    }
    // Realtime's liveness loop needs its tables (migrations are applied now).
    tokio::spawn(state.realtime.clone().run(
        Duration::from_secs(state.config.realtime.presence_timeout_secs),
        Duration::from_secs(state.config.realtime.messages_retention_hours * 3600),
    ));
    // Realtime's cross-node bus on a LISTEN connection of its own, so a burst
    // of broadcasts never delays key revocations or schema reloads. (Change
    // notifications stay on the main listener: `/ready` implies it listens,
    // so no change committed after a subscription can be missed.)
    tokio::spawn({
        let (st, cfg, cancel) = (state.clone(), owner.clone(), cancel.clone());
        async move {
            wasmbase_host_api::listen::run(
                cfg,
                &[
                    crate::api::realtime::CHANNEL,
                    crate::api::realtime::MESSAGES_CHANNEL,
                ],
                cancel,
                {
                    let st = st.clone();
                    move |channel, payload| {
                        let st = st.clone();
                        async move {
                            if channel == crate::api::realtime::MESSAGES_CHANNEL {
                                let max = st.config.realtime.max_payload_bytes;
                                st.realtime.on_message(&payload, max)
                            } else {
                                st.realtime.on_notify(&payload).await
                            }
                        }
                    }
                },
                move || {
                    let st = st.clone();
                    async move {
                        st.realtime.listening.send_replace(true);
                    }
                },
            )
            .await
        }
    });
    // Ready once the key and schema caches are loaded *and* LISTENing, so a
    // revoke issued after `/ready` answers 200 can never be missed by this node.
    let resync = |first_sync: bool| {
        let st = state.clone();
        async move {
            // Cron and realtime notifications may have been missed too.
            st.cron.resync();
            st.realtime.changes.kick();
            let r = async {
                let c = st.system.get().await?;
                st.gate.keys().reload(&**c).await?;
                reload_schema(&st, &c).await?;
                drop(c);
                crate::functions::deploy::reload_secrets(&st).await?;
                crate::functions::deploy::sync_all(&st).await?;
                anyhow::Ok(())
            };
            match r.await {
                Ok(()) if first_sync && !st.is_ready() => {
                    // Not ready before the realtime bus listens too (bounded:
                    // the same database just answered the other listener).
                    let mut rx = st.realtime.listening.subscribe();
                    let _ =
                        tokio::time::timeout(Duration::from_secs(10), rx.wait_for(|l| *l)).await;
                    st.ready.store(true, Ordering::Release);
                    tracing::info!("ready");
                }
                Ok(()) => {}
                Err(e) => {
                    tracing::warn!(error = %format!("{e:#}"), "reloading API keys and schema")
                }
            }
        }
    };
    let on_notify = |channel: String, payload: String| {
        let st = state.clone();
        async move {
            if channel == keys::CHANNEL {
                let r = async {
                    let c = st.system.get().await?;
                    st.gate.keys().reload(&**c).await?;
                    anyhow::Ok(())
                };
                if let Err(e) = r.await {
                    tracing::warn!(error = %format!("{e:#}"), "reloading API keys");
                }
            } else if channel == crate::functions::deploy::CHANNEL {
                let st2 = st.clone();
                // Compiling may take a moment: never block the listener on it.
                tokio::spawn(async move {
                    crate::functions::deploy::sync_one(&st2, &payload).await;
                });
            } else if channel == "wasmbase_secrets" {
                if let Err(e) = crate::functions::deploy::reload_secrets(&st).await {
                    tracing::warn!(error = %format!("{e:#}"), "reloading function secrets");
                }
            } else if channel == wasmbase_host_api::storage::gc::CHANNEL {
                st.storage.gc_kick.notify_one();
            } else if channel == crate::api::realtime::CHANGES_CHANNEL {
                st.realtime.changes.on_notify(&payload);
            } else if channel == crate::cron::CHANNEL {
                st.cron.on_notify(&payload);
            } else if channel == crate::cron::net::CHANNEL {
                st.cron.net_kick.notify_one();
            } else if channel == crate::cron::logs::CHANNEL {
                if let Ok(run) = payload.parse() {
                    let _ = st.cron.log_wake.send(run);
                }
            } else if channel == SCHEMA_CHANNEL || payload.is_empty() || payload == "reload schema"
            {
                st.schema_dirty.notify_one();
            }
        }
    };
    tokio::spawn(schema_reloader(state.clone(), cancel.clone()));
    wasmbase_host_api::listen::run(
        owner,
        &[
            keys::CHANNEL,
            SCHEMA_CHANNEL,
            "pgrst",
            crate::functions::deploy::CHANNEL,
            "wasmbase_secrets",
            wasmbase_host_api::storage::gc::CHANNEL,
            crate::api::realtime::CHANGES_CHANNEL,
            crate::cron::CHANNEL,
            crate::cron::logs::CHANNEL,
            crate::cron::net::CHANNEL,
        ],
        cancel,
        on_notify,
        || resync(true),
    )
    .await;
}

/// NOTIFY channel of the DDL event trigger (migrations/0005).
pub const SCHEMA_CHANNEL: &str = "wasmbase_schema";

/// Loads the exposed schemas' catalog into a new snapshot and swaps it in.
async fn reload_schema(st: &AppState, c: &tokio_postgres::Client) -> anyhow::Result<()> {
    migrate::grant_schema_usage(c, &st.config.database.exposed_schemas).await?;
    let v = st
        .schema
        .reload(c, &st.config.database.exposed_schemas)
        .await
        .map_err(|e| anyhow::anyhow!("loading the schema cache: {}", db::describe(&e)))?;
    st.realtime.changes.forget_tables();
    // Tables added to the publication where no event trigger did it.
    if let Err(e) = c
        .batch_execute("SELECT wasmbase.realtime_sync_triggers()")
        .await
    {
        tracing::warn!(error = %db::describe(&e), "realtime: syncing the capture triggers");
    }
    tracing::debug!(version = v, "schema cache loaded");
    Ok(())
}

/// Reloads the schema cache whenever a DDL notification arrives (folding
/// bursts into one reload); where no event trigger reports DDL (a non-superuser
/// owner), also checks every `database.schema_poll_secs` and swaps only if the
/// catalog changed.
async fn schema_reloader(st: AppState, cancel: CancellationToken) {
    let poll = Duration::from_secs(st.config.database.schema_poll_secs);
    loop {
        let polling = !poll.is_zero() && st.is_ready() && !has_schema_trigger(&st).await;
        let woke = tokio::select! {
            _ = st.schema_dirty.notified() => true,
            _ = tokio::time::sleep(poll), if polling => false,
            _ = tokio::time::sleep(Duration::from_secs(5)), if !polling => continue,
            _ = cancel.cancelled() => return,
        };
        let r = async {
            let c = st.system.get().await?;
            if woke {
                reload_schema(&st, &c).await?;
            } else {
                let fresh = wasmbase_host_api::data::schema::load(
                    &**c,
                    &st.config.database.exposed_schemas,
                )
                .await?;
                if st.schema.get().as_deref() != Some(&fresh) {
                    st.schema.install(fresh);
                }
                // Realtime's table facts (RLS on or off, privileges) are read
                // afresh too: they decide who gets a change.
                st.realtime.changes.forget_tables();
            }
            anyhow::Ok(())
        };
        if let Err(e) = r.await {
            tracing::warn!(error = %format!("{e:#}"), "reloading the schema cache");
        }
    }
}

async fn has_schema_trigger(st: &AppState) -> bool {
    let Ok(c) = st.system.get().await else {
        return true;
    };
    c.query_one(
        "SELECT EXISTS (SELECT 1 FROM pg_event_trigger WHERE evtname = 'wasmbase_schema_changed' AND evtenabled <> 'D')",
        &[],
    )
    .await
    .map(|r| r.get::<_, bool>(0))
    .unwrap_or(true)
}

async fn startup_once(state: &AppState) -> Result<()> {
    let mut client = state
        .system
        .get()
        .await
        .context("connecting as the owner (`database.url`)")?;
    let dir = &state.config.migrations.dir;
    let report = migrate::run(&mut client, Some(dir.as_path())).await?;
    for m in &report.platform {
        tracing::info!(migration = m, "applied platform migration");
    }
    for m in &report.user {
        tracing::info!(migration = %m, "applied migration");
    }
    migrate::sync_settings(
        &client,
        state.config.database.rls_by_default,
        &state.config.database.exposed_schemas,
    )
    .await?;
    client
        .execute(
            "UPDATE wasmbase.storage_settings SET on_user_delete = $1 \
             WHERE on_user_delete IS DISTINCT FROM $1",
            &[&state.config.storage.on_user_delete],
        )
        .await
        .context("writing storage.on_user_delete")?;
    // Set a role's password only when logging in with it is refused (28P01), so N
    // nodes starting together, or a full server, do not rewrite the roles. Each
    // role is checked on its own: an installation from before each role had its
    // own password gets `wasmbase_auth` and `wasmbase_functions` moved to theirs.
    let db = &state.config.database;
    for (role, pw, pool) in [
        ("authenticator", &db.authenticator_password, &state.pool),
        ("wasmbase_auth", &db.auth_password, &state.auth.pool),
        (
            "wasmbase_functions",
            &db.functions_password,
            &state.functions.sql_pool,
        ),
    ] {
        let Some(pw) = pw else { continue };
        let refused = match pool.get().await {
            Err(deadpool_postgres::PoolError::Backend(e)) => {
                e.code() == Some(&tokio_postgres::error::SqlState::INVALID_PASSWORD)
            }
            _ => false,
        };
        if refused {
            tracing::info!(role, "setting the password of a login role");
            migrate::set_login_password(&client, role, pw).await?;
        }
    }
    drop(
        state
            .auth
            .pool
            .get()
            .await
            .context("logging in as `wasmbase_auth`")?,
    );
    drop(
        state
            .pool
            .get()
            .await
            .context("logging in as `authenticator`")?,
    );
    // Keys are loaded by the LISTEN loop's first resync, which is what makes the
    // node ready.
    warn_degraded(&client).await;
    Ok(())
}

/// Logs, once, what is missing when the owner is not a superuser.
async fn warn_degraded(client: &tokio_postgres::Client) {
    let q = "SELECT (SELECT rolsuper FROM pg_roles WHERE rolname = current_user), \
             EXISTS (SELECT 1 FROM pg_event_trigger WHERE evtname = 'wasmbase_enable_rls'), \
             (SELECT rolbypassrls FROM pg_roles WHERE rolname = 'service_role')";
    if let Ok(row) = client.query_one(q, &[]).await {
        let (sup, trig, bypass): (bool, bool, bool) = (row.get(0), row.get(1), row.get(2));
        if !sup && !trig {
            tracing::warn!("the owner role is not a superuser: new tables get no automatic RLS and anon/authenticated get no default grants (see docs/OPERATIONS.md)");
        }
        if !bypass {
            tracing::warn!("service_role lacks BYPASSRLS: service requests are subject to RLS (see docs/OPERATIONS.md)");
        }
    }
}
