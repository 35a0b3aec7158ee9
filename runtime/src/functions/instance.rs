//! The instance step of a call: a `Store` for it (fresh from the function's
//! cached `InstancePre`, or a warm one of a function that opted into `reuse`),
//! its limits (memory over all memories, resources, header sizes), an epoch
//! budget that yields to tokio every tick, the guest's handler under a
//! wall-clock timeout, and afterwards, for a clean call, the instance put back
//! for the next one. Kept apart from admission and the log record so the call
//! path reads as its three steps, and so `bench-instantiate` times exactly the
//! store and handler code that serves calls.

use super::buffered::{self, Buffered};
use super::load::{HandlerPre, Loaded};
use super::manifest::Manifest;
use super::outbound::Outbound;
use super::warm::Warm;
use crate::server::error::ApiError;
use http::StatusCode;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use wasmbase_host_api::guest::realtime::RealtimeAccess;
use wasmbase_host_api::guest::storage::{StorageAccess, StorageView};
use wasmbase_host_api::guest::{DbAccess, GuestCtx};
use wasmbase_host_api::Principal;
use wasmtime::component::{Resource, ResourceTable};
use wasmtime::{ResourceLimiter, Store, Trap, UpdateDeadline};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::p2::bindings::Proxy;
use wasmtime_wasi_http::p2::types::{HostIncomingRequest, HostResponseOutparam};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

/// Bytes of log text one invocation may keep.
const LOG_BUDGET: usize = 64 * 1024;

/// Resources the guest may hold at once (handles of all kinds).
const MAX_RESOURCES: usize = 4096;

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

impl Ctx {
    /// The storage interface's view: the call's state and the table its
    /// streams live in (the one WASI uses).
    pub fn storage_view(&mut self) -> StorageView<'_> {
        StorageView {
            guest: &mut self.guest,
            table: &mut self.table,
        }
    }
}

/// A loaded instance's entry point, kept with a warm instance.
pub enum Entry {
    /// `wasi:http/incoming-handler`.
    Http(Proxy),
    /// `wasmbase:platform/buffered-handler`.
    Buffered(Buffered),
}

/// One request as the entry point takes it (two shapes, one call path).
pub(super) enum Input {
    /// As wasi:http resources (body streamed, response through the outparam).
    Http(
        Resource<HostIncomingRequest>,
        Resource<HostResponseOutparam>,
    ),
    /// Read whole; the response goes to the same channel the outparam feeds.
    Buffered(buffered::Request, ResponseTx),
}

/// Where a guest's response head goes (wasi:http's outparam, or the
/// buffered handler's answer), so both entry points answer alike.
pub(super) type ResponseTx = tokio::sync::oneshot::Sender<
    Result<
        hyper::Response<wasmtime_wasi_http::p2::body::HyperOutgoingBody>,
        wasmtime_wasi_http::p2::bindings::http::types::ErrorCode,
    >,
>;

/// A store ready for one call, with the warm instance's entry if it has one.
pub(super) struct Instance {
    /// The call's store (its per-call state already set).
    pub store: Store<Ctx>,
    /// The warm instance's handler (None: instantiate from the `InstancePre`).
    pub entry: Option<Entry>,
    /// Calls the instance served before this one.
    pub served: u32,
}

/// The instance for a call of `f`: a warm one built with `env` when `f` opted
/// into reuse and one is idle, else a fresh store. Either way armed with the
/// epoch budget of `timeout`.
pub(super) fn acquire(
    f: &Loaded,
    guest: GuestCtx,
    env: &Arc<HashMap<String, String>>,
    tick: Duration,
    timeout: Duration,
) -> Instance {
    let warm = if f.manifest.reuse > 1 {
        f.warm.take(env)
    } else {
        None
    };
    match warm {
        Some(w) => {
            let mut store = w.store;
            store.data_mut().guest = guest;
            arm(&mut store, tick, timeout);
            Instance {
                store,
                entry: Some(w.entry),
                served: w.served,
            }
        }
        None => Instance {
            store: new_store(f, guest, env, tick, timeout),
            entry: None,
            served: 0,
        },
    }
}

/// Runs `f`'s handler on `input` under the wall-clock `timeout` and says how
/// it ended; returns the entry only after a clean call (a failed instance is
/// never reused).
pub(super) async fn run(
    store: &mut Store<Ctx>,
    f: &Loaded,
    warm: Option<Entry>,
    input: Input,
    timeout: Duration,
) -> (Result<(), Failure>, Option<Entry>) {
    let run = run_handler(store, f, warm, input);
    match tokio::time::timeout(timeout, run).await {
        Ok(Ok(entry)) => (Ok(()), Some(entry)),
        Ok(Err(e)) => (Err(failure(store, e)), None),
        Err(_) => (Err(Failure::Timeout), None),
    }
}

/// What a call that failed with `e` on `store` ran into.
pub(super) fn failure(store: &Store<Ctx>, e: wasmtime::Error) -> Failure {
    if store.data().limits.exceeded {
        Failure::Memory
    } else if e.downcast_ref::<Trap>() == Some(&Trap::Interrupt) {
        Failure::Cpu
    } else if e.downcast_ref::<Trap>() == Some(&Trap::StackOverflow) {
        Failure::Stack
    } else {
        Failure::Trap(format!("{e:?}"))
    }
}

/// After a clean call of `f` (which opted into reuse): keeps the instance for
/// a later call if it has served fewer than `reuse` calls and handed every
/// resource back; otherwise drops it.
pub(super) fn keep(
    f: &Loaded,
    mut store: Store<Ctx>,
    entry: Entry,
    served: u32,
    env: Arc<HashMap<String, String>>,
) {
    if served + 1 < f.manifest.reuse && store.data().table.is_empty() {
        // An idle store keeps no trace of its last caller.
        store.data_mut().guest = call_ctx(
            store.data().guest.function.clone(),
            Principal::for_role(wasmbase_host_api::Role::Anon),
            String::new(),
            None,
            None,
            None,
            Duration::ZERO,
        );
        f.warm.put(Warm {
            store,
            entry,
            served: served + 1,
            env,
        });
    }
}

/// Runs `f`'s handler on one request, on the `warm` instance or on a new one;
/// returns the instance's entry so a clean call can keep it.
pub(super) async fn run_handler(
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
                (_, HandlerPre::Buffered(_) | HandlerPre::None) => {
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
                (_, HandlerPre::Http(_) | HandlerPre::None) => {
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
/// id, database, storage and realtime access and the deadline. (Everything else in a
/// store may serve several calls of a warm instance; this never does.)
pub(super) fn call_ctx(
    function: Arc<str>,
    caller: Principal,
    request_id: String,
    db: Option<DbAccess>,
    storage: Option<StorageAccess>,
    realtime: Option<RealtimeAccess>,
    timeout: Duration,
) -> GuestCtx {
    GuestCtx {
        caller,
        function,
        request_id,
        db,
        storage,
        realtime,
        deadline: Instant::now() + timeout,
        logs: Vec::new(),
        log_budget: LOG_BUDGET,
        logs_dropped: 0,
        log_tap: None,
    }
}

/// A fresh store for a call of `f`: granted env only, the memory cap, and
/// an epoch budget that yields every tick and interrupts past the timeout.
pub(super) fn new_store(
    f: &Loaded,
    guest: GuestCtx,
    env: &HashMap<String, String>,
    tick: Duration,
    timeout: Duration,
) -> Store<Ctx> {
    store_for(
        f.instance.engine(),
        f.manifest.clone(),
        guest,
        env,
        tick,
        timeout,
    )
}

/// [`new_store`] for a manifest that is not loaded yet (a JS function's
/// snapshot is taken under the same limits as its calls).
pub(super) fn store_for(
    engine: &wasmtime::Engine,
    manifest: Arc<Manifest>,
    guest: GuestCtx,
    env: &HashMap<String, String>,
    tick: Duration,
    timeout: Duration,
) -> Store<Ctx> {
    let name: Arc<str> = guest.function.clone();
    let limits = &manifest.limits;
    let mut wasi = WasiCtx::builder();
    for var in &manifest.env {
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
            manifest,
            function: name,
        },
        limits: store_limits,
        guest,
    };
    let mut store = Store::new(engine, ctx);
    store.limiter(|c| &mut c.limits);
    arm(&mut store, tick, timeout);
    store
}

/// Sets the epoch budget of the next call on `store`.
pub(super) fn arm(store: &mut Store<Ctx>, tick: Duration, timeout: Duration) {
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

/// How a call ended badly (each has its own status and log outcome).
#[derive(Debug)]
pub(super) enum Failure {
    /// Trapped or failed (a panic, a bad instruction, a host error).
    Trap(String),
    /// Asked for more memory than `limits.memory_mb` (all memories together).
    Memory,
    /// Ran out of its CPU budget (epoch ticks).
    Cpu,
    /// Ran out of native stack (runaway recursion).
    Stack,
    /// Ran out of wall-clock time.
    Timeout,
}

impl Failure {
    /// The caller's answer to a call of `name` that failed this way.
    pub(super) fn error(&self, name: &str, timeout_ms: u64) -> ApiError {
        match self {
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
            Failure::Stack => ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "function_stack_overflow",
                format!("Function {name} ran out of stack (recursion too deep)"),
            ),
            Failure::Trap(_) => ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "function_crashed",
                format!("Function {name} crashed"),
            ),
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Trap(m) => write!(f, "trap: {m}"),
            Failure::Memory => write!(f, "memory limit reached"),
            Failure::Cpu => write!(f, "CPU budget spent"),
            Failure::Stack => write!(f, "stack exhausted"),
            Failure::Timeout => write!(f, "wall-clock timeout"),
        }
    }
}

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
