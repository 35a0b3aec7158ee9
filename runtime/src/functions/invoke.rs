//! One call of a function, in three steps: admission (`admission`: the
//! node's and the function's concurrency caps, the database share, 503 +
//! Retry-After), the instance (`instance`: a store from the cached
//! `InstancePre` or a warm one, its limits, the epoch budget, the handler under
//! a wall-clock timeout) and the record (`record`: the invocation log record).
//! This file holds what ties them together: the request as the entry point
//! takes it, and the response streamed back while the guest's future keeps the
//! store alive. SDK components are called through their one-call
//! `buffered-handler` (see `buffered`), others through wasi:http.

use super::admission;
use super::buffered;
use super::instance::{self, Ctx, Entry, Input};
use super::load::{HandlerPre, Loaded};
use super::record::{self, Recorder};
use crate::server::error::ApiError;
use axum::body::Body;
use axum::response::Response;
use http::StatusCode;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;
use wasmbase_host_api::guest::realtime::RealtimeAccess;
use wasmbase_host_api::guest::storage::StorageAccess;
use wasmbase_host_api::guest::DbAccess;
use wasmbase_host_api::Principal;
use wasmtime::Store;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
use wasmtime_wasi_http::WasiHttpView;

/// What an invocation needs from the server.
pub struct Inputs {
    /// The caller.
    pub caller: Principal,
    /// Request id for logs.
    pub request_id: String,
    /// Database access (None when `db = "none"`).
    pub db: Option<DbAccess>,
    /// Storage access (None without a `storage` grant).
    pub storage: Option<StorageAccess>,
    /// Realtime access, when topics are granted.
    pub realtime: Option<RealtimeAccess>,
    /// Env values (secrets and `.env`); only granted names reach the guest.
    pub env: Arc<HashMap<String, String>>,
    /// All calls across functions.
    pub global: Arc<Semaphore>,
    /// Epoch tick.
    pub tick: Duration,
    /// Where the call's log record goes.
    pub state: crate::server::state::AppState,
    /// The server's request timeout (calls end before it).
    pub max_timeout: Duration,
    /// Most bytes of request body the function may receive.
    pub body_limit: usize,
}

/// What a call of `f` as `caller` gets: database access as the caller (or as
/// service_role with `db = "service"`), the storage grants, the env, and the
/// server's limits. `request_id` is left empty for the caller to set.
pub fn inputs(st: &crate::server::state::AppState, f: &Loaded, caller: Principal) -> Inputs {
    use super::manifest::DbMode;
    use wasmbase_host_api::Role;
    let fx = &st.functions;
    // Whom the grants act as: service_role for `db = "service"`, else the
    // caller (built only when a grant needs it: this runs on every call).
    let acting = || match f.manifest.db {
        DbMode::Service => Principal::for_role(Role::ServiceRole),
        _ => caller.clone(),
    };
    let db = match f.manifest.db {
        DbMode::None => None,
        mode => {
            let principal = acting();
            Some(DbAccess {
                pool: st.pool.clone(),
                statement_timeout: st.statement_timeout(&principal),
                principal,
                schema: st.schema.clone(),
                limits: st.data_limits(),
                cost: st.cost_guard.clone(),
                cache_size: st.config.database.statement_cache_size,
                sql: (mode == DbMode::Service).then(|| fx.sql_pool.clone()),
                permits: fx.db_permits.clone(),
            })
        }
    };
    let storage = (!f.storage.is_empty()).then(|| {
        let principal = acting();
        StorageAccess {
            storage: st.storage.clone(),
            pool: st.pool.clone(),
            statement_timeout: st.statement_timeout(&principal),
            principal,
            grants: f.storage.clone(),
            jwt: st.gate.jwt().clone(),
            base_url: st.config.auth.external_url.as_deref().map(Arc::from),
            permits: fx.db_permits.clone(),
        }
    });
    let realtime = (!f.realtime.is_empty()).then(|| RealtimeAccess {
        system: st.system.clone(),
        grants: f.realtime.clone(),
        max_payload: st.config.realtime.max_payload_bytes,
        statement_timeout: Duration::from_secs(5),
        permits: fx.db_permits.clone(),
    });
    Inputs {
        caller,
        storage,
        realtime,
        request_id: String::new(),
        db,
        env: fx.env.load_full(),
        global: fx.global.clone(),
        tick: Duration::from_millis(st.config.functions.tick_ms.max(1)),
        state: st.clone(),
        max_timeout: st
            .request_timeout
            .saturating_sub(Duration::from_millis(100))
            .max(Duration::from_millis(1)),
        body_limit: st.body_limit as usize,
    }
}

/// A request body as the entry point takes it.
enum ReqBody {
    Read(bytes::Bytes),
    Stream(Body),
}

/// The request body, read up to `limit` (413 past it).
async fn read_body(body: Body, limit: usize) -> Result<bytes::Bytes, ApiError> {
    match Limited::new(body, limit).collect().await {
        Ok(b) => Ok(b.to_bytes()),
        Err(e) if e.is::<LengthLimitError>() => Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("Request body is larger than {limit} bytes"),
        )),
        Err(e) => Err(ApiError::bad_request(
            "invalid_request",
            format!("Reading the request body failed: {e}"),
        )),
    }
}

/// Runs `f` on `req`: admission, then the instance, then the record.
pub async fn call(
    f: Arc<Loaded>,
    inputs: Inputs,
    req: http::Request<Body>,
) -> Result<Response, ApiError> {
    let name: Arc<str> = Arc::from(f.manifest.name.as_str());
    let (parts, body) = req.into_parts();
    // The one-call handler gets the body whole, read before the call takes a
    // slot (a slow upload holds no instance); wasi:http streams it.
    let body = match f.handler {
        HandlerPre::Buffered(_) => ReqBody::Read(read_body(body, inputs.body_limit).await?),
        HandlerPre::Http(_) => ReqBody::Stream(body),
        HandlerPre::None => {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "no_http_handler",
                format!(
                    "Function {} has no HTTP entry point (it runs on its [[cron]] schedules only)",
                    f.manifest.name
                ),
            ))
        }
    };
    let permits = admission::admit(&f, inputs.global)?;
    let limits = &f.manifest.limits;
    // The server's own request timeout bounds every call; stop first, so the
    // call ends with its own error and log record.
    let timeout = Duration::from_millis(limits.timeout_ms).min(inputs.max_timeout);
    let guest_ctx = instance::call_ctx(
        name.clone(),
        inputs.caller,
        inputs.request_id.clone(),
        admission::db_share(&f, inputs.db),
        inputs.storage,
        inputs.realtime,
        timeout,
    );
    let instance::Instance {
        mut store,
        entry,
        served,
    } = instance::acquire(&f, guest_ctx, &inputs.env, inputs.tick, timeout);

    let (tx, rx) = tokio::sync::oneshot::channel();
    let input = match body {
        ReqBody::Read(bytes) => Input::Buffered(buffered::request(&parts, bytes), tx),
        ReqBody::Stream(body) => {
            let body = Limited::new(body, inputs.body_limit)
                .map_err(|e| wasmtime_wasi_http::Error::InternalError(Some(e.to_string())));
            let hreq = http::Request::from_parts(parts, body);
            let incoming = store
                .data_mut()
                .http()
                .new_incoming_request(Scheme::Http, hreq)
                .map_err(|e| ApiError::bad_request("invalid_request", format!("{e}")))?;
            let out = store
                .data_mut()
                .http()
                .new_response_outparam(tx)
                .map_err(|e| ApiError::internal(format!("{e}")))?;
            Input::Http(incoming, out)
        }
    };
    let func = f.clone();
    let rid = inputs.request_id;
    let fname = name.clone();
    // What putting the instance back needs (only functions that opted in).
    let keep = (f.manifest.reuse > 1).then(|| (f.clone(), inputs.env));
    let recorder = Recorder::start(inputs.state, name, f.version);
    // The guest runs in this task; only if its response head arrives while it is
    // still running (a streaming body) does the rest move to its own task. Most
    // calls finish here, without a spawn or a cross-thread wake-up.
    let mut guest = Box::pin(async move {
        let _permits = permits;
        let (result, entry) = instance::run(&mut store, &func, entry, input, timeout).await;
        if let Err(e) = &result {
            tracing::warn!(function = &*fname, request_id = %rid, error = %e, "function call failed");
        }
        let lines = std::mem::take(&mut store.data_mut().guest.logs);
        // A clean call that handed every resource back leaves a reusable
        // instance (only kept when the function opted in).
        if let (Some(entry), Some((func, env))) = (entry, keep) {
            instance::keep(&func, store, entry, served, env);
        }
        (result, lines, rid)
    });
    let mut rx = rx;
    let (head, done) = tokio::select! {
        biased;
        done = &mut guest => (rx.try_recv().map_err(|_| ()), Some(done)),
        head = &mut rx => (head.map_err(|_| ()), None),
    };
    match head {
        Ok(Ok(resp)) => {
            let status = resp.status().as_u16();
            match done {
                Some((result, lines, rid)) => {
                    recorder.record(status, record::outcome(&result), lines, rid)
                }
                // The body may still be streaming: keep driving the guest.
                None => {
                    tokio::spawn(async move {
                        let (result, lines, rid) = guest.await;
                        recorder.record(status, record::outcome(&result), lines, rid);
                    });
                }
            }
            Ok(resp.map(Body::new))
        }
        Ok(Err(code)) => {
            let err = ApiError::new(
                StatusCode::BAD_GATEWAY,
                "function_error",
                format!("The function answered with an error: {code:?}"),
            );
            let (result, lines, rid) = match done {
                Some(d) => d,
                None => guest.await,
            };
            recorder.record(err.status.as_u16(), record::outcome(&result), lines, rid);
            Err(err)
        }
        Err(()) => {
            let (result, lines, rid) = match done {
                Some(d) => d,
                None => guest.await,
            };
            let name = &f.manifest.name;
            let (err, outcome) = match &result {
                Err(e) => (e.error(name, limits.timeout_ms), record::outcome(&result)),
                Ok(()) => (
                    ApiError::new(
                        StatusCode::BAD_GATEWAY,
                        "function_no_response",
                        format!("Function {name} returned without sending a response"),
                    ),
                    "no_response",
                ),
            };
            recorder.record(err.status.as_u16(), outcome, lines, rid);
            Err(err)
        }
    }
}

/// Times `n` instantiations of `f` from its `InstancePre` in fresh stores set
/// up as for a call (used by `wasmbase bench-instantiate`); returns the
/// durations sorted.
pub async fn time_instantiations(f: &Loaded, n: usize) -> anyhow::Result<Vec<Duration>> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let mut store = bench_store(f);
        let t = Instant::now();
        f.instance
            .instantiate_async(&mut store)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        out.push(t.elapsed());
    }
    out.sort();
    Ok(out)
}

fn bench_store(f: &Loaded) -> Store<Ctx> {
    let ctx = instance::call_ctx(
        Arc::from(f.manifest.name.as_str()),
        Principal::for_role(wasmbase_host_api::Role::Anon),
        String::new(),
        None,
        None,
        None,
        Duration::from_secs(10),
    );
    instance::new_store(
        f,
        ctx,
        &HashMap::new(),
        Duration::from_millis(2),
        Duration::from_secs(10),
    )
}

/// Times `n` whole calls of `f` (store, instantiate, wasi:http request in,
/// handler, response body out) without any HTTP server around them; with
/// `warm`, every call after the first reuses one instance and its store, as a
/// function with `reuse` > 1 does. Returns the durations sorted (used by
/// `wasmbase bench-instantiate`).
pub async fn time_calls(
    f: &Loaded,
    n: usize,
    body: &'static [u8],
    warm: bool,
) -> anyhow::Result<Vec<Duration>> {
    let mut out = Vec::with_capacity(n);
    let mut kept: Option<(Store<Ctx>, Entry)> = None;
    for _ in 0..n {
        let t = Instant::now();
        let (mut store, entry) = match kept.take() {
            Some((mut store, entry)) => {
                instance::arm(
                    &mut store,
                    Duration::from_millis(2),
                    Duration::from_secs(10),
                );
                (store, Some(entry))
            }
            None => (bench_store(f), None),
        };
        let (parts, ()) = http::Request::builder()
            .method("POST")
            .uri("http://bench/fn/bench")
            .header("content-type", "application/json")
            .body(())?
            .into_parts();
        let body = bytes::Bytes::from_static(body);
        let (tx, rx) = tokio::sync::oneshot::channel();
        // The same entry point a served call of `f` takes.
        let input = if matches!(f.handler, HandlerPre::Buffered(_)) {
            Input::Buffered(buffered::request(&parts, body), tx)
        } else {
            let body = http_body_util::Full::new(body)
                .map_err(|e: std::convert::Infallible| -> wasmtime_wasi_http::Error { match e {} });
            let mut http = store.data_mut().http();
            let incoming = http
                .new_incoming_request(Scheme::Http, http::Request::from_parts(parts, body))
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            let outp = http
                .new_response_outparam(tx)
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            Input::Http(incoming, outp)
        };
        let entry = instance::run_handler(&mut store, f, entry, input)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let resp = rx.await?.map_err(|e| anyhow::anyhow!("{e:?}"))?;
        let _ = resp.into_body().collect().await;
        if warm {
            kept = Some((store, entry));
        }
        out.push(t.elapsed());
    }
    out.sort();
    Ok(out)
}
