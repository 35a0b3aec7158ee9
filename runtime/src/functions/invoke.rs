//! One call: admission (global and per-function caps), a fresh `Store` with a
//! memory cap and an epoch budget that yields to tokio every tick, the guest's
//! handler under a wall-clock timeout, and the response streamed back while the
//! guest's future keeps the store alive. SDK components are called through
//! their one-call `buffered-handler` (see `buffered`), others through wasi:http.

use super::buffered::{self, Buffered};
use super::load::{HandlerPre, Loaded};
use super::manifest::DbMode;
use super::outbound::Outbound;
use super::warm::Warm;
use crate::server::error::ApiError;
use axum::body::Body;
use axum::response::Response;
use http::StatusCode;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;
use wasmbase_host_api::guest::{DbAccess, GuestCtx, LogLine};
use wasmbase_host_api::Principal;
use wasmtime::component::{Resource, ResourceTable};
use wasmtime::{ResourceLimiter, Store, Trap, UpdateDeadline};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
use wasmtime_wasi_http::p2::bindings::Proxy;
use wasmtime_wasi_http::p2::types::{HostIncomingRequest, HostResponseOutparam};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

/// Bytes of log text one invocation may keep.
const LOG_BUDGET: usize = 64 * 1024;

/// The data of one invocation's `Store`.
pub struct Ctx {
    wasi: WasiCtx,
    http: WasiHttpCtx,
    table: ResourceTable,
    hooks: Outbound,
    limits: Budget,
    /// State behind the platform interfaces.
    pub guest: GuestCtx,
}

impl WasiView for Ctx {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for Ctx {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.hooks,
        }
    }
}

/// What an invocation needs from the server.
pub struct Inputs {
    /// The caller.
    pub caller: Principal,
    /// Request id for logs.
    pub request_id: String,
    /// Database access (None when `db = "none"`).
    pub db: Option<DbAccess>,
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

/// A loaded instance's entry point, kept with a warm instance.
pub enum Entry {
    /// `wasi:http/incoming-handler`.
    Http(Proxy),
    /// `wasmbase:platform/buffered-handler`.
    Buffered(Buffered),
}

/// One request as the entry point takes it.
enum Input {
    /// As wasi:http resources (body streamed, response through the outparam).
    Http(
        Resource<HostIncomingRequest>,
        Resource<HostResponseOutparam>,
    ),
    /// Read whole; the response goes to the same channel the outparam feeds.
    Buffered(buffered::Request, ResponseTx),
}

/// Where a guest's response head goes (wasi:http's outparam, or the
/// buffered handler's answer).
type ResponseTx = tokio::sync::oneshot::Sender<
    Result<
        hyper::Response<wasmtime_wasi_http::p2::body::HyperOutgoingBody>,
        wasmtime_wasi_http::p2::bindings::http::types::ErrorCode,
    >,
>;

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

fn busy(what: &str) -> ApiError {
    let mut e = ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "function_busy",
        format!("Too many calls {what}; retry shortly"),
    );
    e.retry_after = Some(1);
    e
}

/// Runs `f` on `req`.
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
    };
    let global = inputs
        .global
        .clone()
        .try_acquire_owned()
        .map_err(|_| busy("in flight"))?;
    let own = f
        .inflight
        .try_admit(f.manifest.limits.max_concurrency)
        .ok_or_else(|| busy("to this function"))?;
    let limits = &f.manifest.limits;
    // The server's own request timeout bounds every call; stop first, so the
    // call ends with its own error and log record.
    let timeout = Duration::from_millis(limits.timeout_ms).min(inputs.max_timeout);
    let db = match f.manifest.db {
        DbMode::None => None,
        _ => inputs.db,
    };
    let guest_ctx = call_ctx(
        name.clone(),
        inputs.caller,
        inputs.request_id.clone(),
        db,
        timeout,
    );
    let reuse = f.manifest.reuse;
    let warm = if reuse > 1 {
        f.warm.take(&inputs.env)
    } else {
        None
    };
    let (mut store, entry, served) = match warm {
        Some(w) => {
            let mut store = w.store;
            store.data_mut().guest = guest_ctx;
            arm(&mut store, inputs.tick, timeout);
            (store, Some(w.entry), w.served)
        }
        None => (
            new_store(&f, guest_ctx, &inputs.env, inputs.tick, timeout),
            None,
            0,
        ),
    };

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
    let keep = (reuse > 1).then(|| (f.clone(), inputs.env.clone()));
    let started = Instant::now();
    // The guest runs in this task; only if its response head arrives while it is
    // still running (a streaming body) does the rest move to its own task. Most
    // calls finish here, without a spawn or a cross-thread wake-up.
    let mut guest = Box::pin(async move {
        let _permits = (global, own);
        let run = run_handler(&mut store, &func, entry, input);
        let (result, entry) = match tokio::time::timeout(timeout, run).await {
            Ok(Ok(entry)) => (Ok(()), Some(entry)),
            Ok(Err(e)) => (
                Err(if store.data().limits.exceeded {
                    Failure::Memory
                } else if e.downcast_ref::<Trap>() == Some(&Trap::Interrupt) {
                    Failure::Cpu
                } else {
                    Failure::Trap(format!("{e:?}"))
                }),
                None,
            ),
            Err(_) => (Err(Failure::Timeout), None),
        };
        if let Err(e) = &result {
            tracing::warn!(function = &*fname, request_id = %rid, error = %e, "function call failed");
        }
        let lines = std::mem::take(&mut store.data_mut().guest.logs);
        // A clean call that handed every resource back leaves a reusable
        // instance (only kept when the function opted in).
        if let (Some(entry), Some((func, env))) = (entry, keep) {
            if served + 1 < reuse && store.data().table.is_empty() {
                // An idle store keeps no trace of its last caller.
                store.data_mut().guest = call_ctx(
                    store.data().guest.function.clone(),
                    Principal::for_role(wasmbase_host_api::Role::Anon),
                    String::new(),
                    None,
                    Duration::ZERO,
                );
                func.warm.put(Warm {
                    store,
                    entry,
                    served: served + 1,
                    env,
                });
            }
        }
        (result, lines, rid)
    });
    let record = {
        let st = inputs.state.clone();
        let name = name.to_string();
        let version = f.version.map(|v| v as i32);
        move |status: u16, outcome: &'static str, lines: Vec<LogLine>, rid: String| {
            if !st.config.functions.invocation_logs {
                return;
            }
            st.functions.logs.push(super::logs::Record {
                at: std::time::SystemTime::now(),
                name,
                version,
                request_id: rid,
                status,
                duration_ms: started.elapsed().as_secs_f64() * 1000.0,
                outcome,
                lines,
            });
        }
    };
    let outcome_of = |r: &Result<(), Failure>| match r {
        Ok(()) => "ok",
        Err(Failure::Timeout) | Err(Failure::Cpu) => "timeout",
        Err(Failure::Memory) => "memory",
        Err(Failure::Trap(_)) => "trap",
    };
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
                Some((result, lines, rid)) => record(status, outcome_of(&result), lines, rid),
                // The body may still be streaming: keep driving the guest.
                None => {
                    tokio::spawn(async move {
                        let (result, lines, rid) = guest.await;
                        record(status, outcome_of(&result), lines, rid);
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
            record(err.status.as_u16(), outcome_of(&result), lines, rid);
            Err(err)
        }
        Err(()) => {
            let (result, lines, rid) = match done {
                Some(d) => d,
                None => guest.await,
            };
            let (err, outcome) = match &result {
                Err(f) => (
                    failure_error(&name, f, limits.timeout_ms),
                    outcome_of(&result),
                ),
                Ok(()) => (
                    ApiError::new(
                        StatusCode::BAD_GATEWAY,
                        "function_no_response",
                        format!("Function {name} returned without sending a response"),
                    ),
                    "no_response",
                ),
            };
            record(err.status.as_u16(), outcome, lines, rid);
            Err(err)
        }
    }
}

/// Runs `f`'s handler on one request, on the `warm` instance or on a new one;
/// returns the instance's entry so a clean call can keep it.
async fn run_handler(
    store: &mut Store<Ctx>,
    f: &Loaded,
    warm: Option<Entry>,
    input: Input,
) -> wasmtime::Result<Entry> {
    match input {
        Input::Http(request, out) => {
            let proxy = match (warm, &f.handler) {
                (Some(Entry::Http(p)), _) => p,
                (_, HandlerPre::Http(pre)) => pre.instantiate_async(&mut *store).await?,
                (_, HandlerPre::Buffered(_)) => {
                    wasmtime::bail!("{} has no wasi:http handler", f.manifest.name)
                }
            };
            proxy
                .wasi_http_incoming_handler()
                .call_handle(&mut *store, request, out)
                .await?;
            Ok(Entry::Http(proxy))
        }
        Input::Buffered(request, tx) => {
            let handler = match (warm, &f.handler) {
                (Some(Entry::Buffered(b)), _) => b,
                (_, HandlerPre::Buffered(pre)) => pre.instantiate_async(&mut *store).await?,
                (_, HandlerPre::Http(_)) => {
                    wasmtime::bail!("{} has no buffered handler", f.manifest.name)
                }
            };
            let response = handler
                .wasmbase_platform_buffered_handler()
                .call_handle(&mut *store, &request)
                .await?;
            let _ = tx.send(buffered::response(response));
            Ok(Entry::Buffered(handler))
        }
    }
}

/// The per-call state behind the platform interfaces: who calls, the request
/// id, database access and the deadline. (Everything else in a store may
/// serve several calls of a warm instance; this never does.)
fn call_ctx(
    function: Arc<str>,
    caller: Principal,
    request_id: String,
    db: Option<DbAccess>,
    timeout: Duration,
) -> GuestCtx {
    GuestCtx {
        caller,
        function,
        request_id,
        db,
        deadline: Instant::now() + timeout,
        logs: Vec::new(),
        log_budget: LOG_BUDGET,
        logs_dropped: 0,
    }
}

/// A fresh store for a call of `f`: granted env only, the memory cap, and
/// an epoch budget that yields every tick and interrupts past the timeout.
fn new_store(
    f: &Loaded,
    guest: GuestCtx,
    env: &HashMap<String, String>,
    tick: Duration,
    timeout: Duration,
) -> Store<Ctx> {
    let name: Arc<str> = guest.function.clone();
    let limits = &f.manifest.limits;
    let mut wasi = WasiCtx::builder();
    for var in &f.manifest.env {
        if let Some(v) = env.get(var) {
            wasi.env(var, v);
        }
    }
    let store_limits = Budget {
        max_bytes: (limits.memory_mb as usize) << 20,
        used: 0,
        exceeded: false,
    };
    let mut http = WasiHttpCtx::new();
    http.set_field_size_limit(64 << 10);
    let mut table = ResourceTable::new();
    table.set_max_capacity(MAX_RESOURCES);
    let ctx = Ctx {
        wasi: wasi.build(),
        http,
        table,
        hooks: Outbound {
            manifest: f.manifest.clone(),
            function: name,
        },
        limits: store_limits,
        guest,
    };
    let mut store = Store::new(f.instance.engine(), ctx);
    store.limiter(|c| &mut c.limits);
    arm(&mut store, tick, timeout);
    store
}

/// Sets the epoch budget of the next call on `store`.
fn arm(store: &mut Store<Ctx>, tick: Duration, timeout: Duration) {
    store.set_epoch_deadline(1);
    // Yield to tokio every tick (a spinning guest never holds a worker for
    // longer); past the budget, interrupt (the wall-clock timeout usually
    // fires first, this bounds pure CPU).
    let mut left = (timeout.as_millis() / tick.as_millis().max(1)) as u64 + 1;
    store.epoch_deadline_callback(move |_| {
        if left == 0 {
            return Ok(UpdateDeadline::Interrupt);
        }
        left -= 1;
        // tokio's yield_now wakes the task only after the scheduler has polled
        // its I/O driver, so other connections are served between two slices of
        // a spinning guest (a plain self-wake would let I/O wait ~61 slices).
        Ok(UpdateDeadline::YieldCustom(
            1,
            Box::pin(tokio::task::yield_now()),
        ))
    });
}

/// How a call ended badly.
#[derive(Debug)]
enum Failure {
    /// Trapped or failed (a panic, a bad instruction, a host error).
    Trap(String),
    /// Asked for more memory than `limits.memory_mb` (all memories together).
    Memory,
    /// Ran out of its CPU budget (epoch ticks).
    Cpu,
    /// Ran out of wall-clock time.
    Timeout,
}

/// Resources the guest may hold at once (handles of all kinds).
const MAX_RESOURCES: usize = 4096;

/// The memory cap of one call, over all its linear memories together (the
/// limit counts every growth, so a component with several memories cannot
/// multiply its share), plus counts of instances, tables and memories.
struct Budget {
    max_bytes: usize,
    used: usize,
    exceeded: bool,
}

impl ResourceLimiter for Budget {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let add = desired.saturating_sub(current);
        if self.used.saturating_add(add) > self.max_bytes {
            self.exceeded = true;
            return Err(wasmtime::format_err!(
                "memory limit of {} MiB reached",
                self.max_bytes >> 20
            ));
        }
        self.used += add;
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 100_000)
    }

    fn instances(&self) -> usize {
        64
    }

    fn tables(&self) -> usize {
        64
    }

    fn memories(&self) -> usize {
        16
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Trap(m) => write!(f, "trap: {m}"),
            Failure::Memory => write!(f, "memory limit reached"),
            Failure::Cpu => write!(f, "CPU budget spent"),
            Failure::Timeout => write!(f, "wall-clock timeout"),
        }
    }
}

fn failure_error(name: &str, f: &Failure, timeout_ms: u64) -> ApiError {
    match f {
        Failure::Timeout => ApiError::new(
            StatusCode::GATEWAY_TIMEOUT,
            "function_timeout",
            format!("Function {name} did not finish within {timeout_ms} ms"),
        ),
        Failure::Cpu => ApiError::new(
            StatusCode::GATEWAY_TIMEOUT,
            "function_timeout",
            format!("Function {name} ran out of CPU time"),
        ),
        Failure::Memory => ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "function_memory",
            format!("Function {name} ran out of memory"),
        ),
        Failure::Trap(_) => ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "function_crashed",
            format!("Function {name} crashed"),
        ),
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
    let ctx = call_ctx(
        Arc::from(f.manifest.name.as_str()),
        Principal::for_role(wasmbase_host_api::Role::Anon),
        String::new(),
        None,
        Duration::from_secs(10),
    );
    new_store(
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
                arm(
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
        let entry = run_handler(&mut store, f, entry, input)
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
