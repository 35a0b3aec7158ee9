//! Wasmbase's JavaScript engine: QuickJS in a component that a JS/TS function
//! becomes once its modules are snapshotted into it.
//!
//! Why this shape: the server runs `wizer-initialize` once per build (the
//! modules are parsed, the web APIs set up and the user's top level run), and
//! Wizer keeps the memory that results. Every request then starts from that
//! memory in a fresh instance, which costs copy-on-write page mapping instead
//! of parsing and setting up again. What a snapshot would freeze is renewed
//! when an instance serves its first call ([`instance_start`]): the
//! `Math.random` state; clocks are read live from WASI.

mod codec;
mod crypto;
mod natives;
mod storage;
mod url_api;

use relative_path::RelativePath;
use rquickjs::loader::{Loader, Resolver};
use rquickjs::promise::PromiseState;
use rquickjs::{
    CatchResultExt, CaughtError, Context, Ctx, Function, Module, Object, Promise, Runtime, Value,
};
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use wasmbase_sdk::{Request, Response, ScheduleEvent};

pub(crate) mod init {
    wit_bindgen::generate!({
        path: "../../rust/wit",
        world: "wasmbase:platform/js-init",
        generate_all,
    });
}

/// The web APIs and globals every function sees (runs inside the snapshot).
const PRELUDE: &str = include_str!("prelude.js");
/// The `wasmbase` module (`import { db, sql, auth, log, env } from "wasmbase"`).
const SDK: &str = include_str!("wasmbase.js");

struct Engine {
    ctx: Context,
    /// Kept with its context for the life of the instance.
    _rt: Runtime,
    /// What a runtime is rebuilt from when a per-instance top level fails.
    modules: Modules,
    /// Set when the top level must run per instance (it read the environment
    /// or random values while the snapshot was taken): the entry module then,
    /// evaluated by the first call.
    late: Option<String>,
}

thread_local! {
    static ENGINE: RefCell<Option<Engine>> = const { RefCell::new(None) };
    /// False in the snapshot; set by the first call an instance serves.
    static STARTED: Cell<bool> = const { Cell::new(false) };
}

/// The function's modules and how its relative imports resolve.
#[derive(Clone)]
struct Modules {
    sources: Rc<HashMap<String, String>>,
    aliases: Rc<HashMap<String, String>>,
}

impl Resolver for Modules {
    fn resolve<'js>(
        &mut self,
        _ctx: &Ctx<'js>,
        base: &str,
        name: &str,
    ) -> rquickjs::Result<String> {
        if name == "wasmbase" {
            return Ok(name.to_string());
        }
        let full = if name.starts_with('.') {
            let dir = RelativePath::new(base)
                .parent()
                .map(|d| d.to_relative_path_buf())
                .unwrap_or_default();
            dir.join_normalized(name).to_string()
        } else {
            name.to_string()
        };
        if let Some(to) = self.aliases.get(&full) {
            return Ok(to.clone());
        }
        if self.sources.contains_key(&full) {
            return Ok(full);
        }
        Err(rquickjs::Error::new_resolving_message(
            base,
            name,
            "no such module (the build resolves relative imports; packages must be bundled first)",
        ))
    }
}

impl Loader for Modules {
    fn load<'js>(
        &mut self,
        ctx: &Ctx<'js>,
        name: &str,
    ) -> rquickjs::Result<Module<'js, rquickjs::module::Declared>> {
        if name == "wasmbase" {
            return Module::declare(ctx.clone(), "wasmbase", SDK);
        }
        match self.sources.get(name) {
            Some(source) => Module::declare(ctx.clone(), name, source.clone()),
            None => Err(rquickjs::Error::new_loading(name)),
        }
    }
}

/// A runtime with the natives and the web APIs, and the function's modules
/// behind its loader.
fn fresh(modules: &Modules) -> Result<(Runtime, Context), String> {
    // No `set_max_stack_size`: QuickJS ignores it under WASI. Runaway
    // recursion exhausts the call's native stack instead, which the host
    // reports as `function_stack_overflow`.
    let rt = Runtime::new().map_err(|e| e.to_string())?;
    let ctx = Context::full(&rt).map_err(|e| e.to_string())?;
    rt.set_loader(modules.clone(), modules.clone());
    ctx.with(|ctx| -> Result<(), String> {
        natives::install(&ctx).map_err(|e| describe(&ctx, e))?;
        ctx.eval::<(), _>(PRELUDE).catch(&ctx).map_err(caught)
    })?;
    Ok((rt, ctx))
}

/// Compiles every module into the context without running it: the first
/// call's import then finds them compiled (QuickJS keeps declared modules by
/// name), so a top level that must run per instance costs its run, not a
/// parse of every module on every fresh instance (measured: 1.08 ms a fresh
/// call for hello-ts with one `Deno.env.get` at the top level, before).
fn declare_all(ctx: &Context, modules: &Modules) -> Result<(), String> {
    ctx.with(|ctx| -> Result<(), String> {
        Module::declare(ctx.clone(), "wasmbase", SDK)
            .catch(&ctx)
            .map_err(caught)?;
        for (name, source) in modules.sources.iter() {
            Module::declare(ctx.clone(), name.as_str(), source.clone())
                .catch(&ctx)
                .map_err(caught)?;
        }
        Ok(())
    })
}

/// Evaluates the entry module and hands its exports to the prelude.
fn start(ctx: &Ctx<'_>, entry: &str) -> Result<(), String> {
    let done = Module::import(ctx, entry).catch(ctx).map_err(caught)?;
    let ns: Object = settle(ctx, done)?
        .into_object()
        .ok_or_else(|| "the entry module has no namespace".to_string())?;
    let install: Function = ctx
        .globals()
        .get("__wbInstall")
        .map_err(|e| describe(ctx, e))?;
    install.call::<_, ()>((ns,)).catch(ctx).map_err(caught)
}

struct Export;

impl init::Guest for Export {
    fn wizer_initialize(
        modules: Vec<(String, String)>,
        aliases: Vec<(String, String)>,
        entry: String,
    ) -> Result<(), String> {
        let modules = Modules {
            sources: Rc::new(modules.into_iter().collect()),
            aliases: Rc::new(aliases.into_iter().collect()),
        };
        if !modules.sources.contains_key(&entry) {
            return Err(format!("entry module {entry} is missing"));
        }
        // Importing parses every module before any top level runs, so a
        // syntax error always fails the build.
        let (rt, ctx) = fresh(&modules)?;
        natives::set_snapshotting(true);
        let ran = ctx.with(|ctx| start(&ctx, &entry));
        let touched = natives::set_snapshotting(false);
        let engine = match (ran, touched) {
            (Ok(()), None) => Engine {
                _rt: rt,
                ctx,
                late: None,
                modules,
            },
            // The top level read something that differs per instance (or
            // failed without it): it runs in each instance instead.
            (_, Some(_)) => {
                drop(ctx);
                drop(rt);
                let (rt, ctx) = fresh(&modules)?;
                declare_all(&ctx, &modules)?;
                Engine {
                    _rt: rt,
                    ctx,
                    late: Some(entry),
                    modules,
                }
            }
            (Err(e), None) => return Err(e),
        };
        ENGINE.with(|e| *e.borrow_mut() = Some(engine));
        Ok(())
    }
}

init::export!(Export with_types_in init);

/// Runs the job queue and due timers until `promise` settles; its value, or
/// why it did not (a rejection, or nothing left that could settle it).
fn settle<'js>(ctx: &Ctx<'js>, promise: Promise<'js>) -> Result<Value<'js>, String> {
    loop {
        // A job's exception is its promise's rejection: seen below.
        while ctx.execute_pending_job() {}
        match promise.state() {
            PromiseState::Resolved => {
                return promise
                    .result::<Value>()
                    .unwrap_or(Ok(Value::new_undefined(ctx.clone())))
                    .catch(ctx)
                    .map_err(caught)
            }
            PromiseState::Rejected => {
                let err = promise.result::<Value>().and_then(|r| r.catch(ctx).err());
                return Err(err
                    .map(caught)
                    .unwrap_or_else(|| "the promise was rejected".into()));
            }
            PromiseState::Pending => {
                if !natives::run_next_timer(ctx).map_err(|e| describe(ctx, e))? {
                    return Err("the function's promise never settled (nothing left that could settle it: no pending timer, fetch or job)".into());
                }
            }
        }
    }
}

/// Text of a caught exception: message and stack, as a developer reads them.
fn caught(e: CaughtError<'_>) -> String {
    match e {
        CaughtError::Exception(ex) => {
            let msg = ex.message().unwrap_or_default();
            let name = ex
                .as_object()
                .get::<_, Object>("constructor")
                .and_then(|c| c.get::<_, String>("name"))
                .unwrap_or_else(|_| "Error".into());
            let stack = ex.stack().unwrap_or_default();
            let head = if msg.is_empty() {
                name
            } else {
                format!("{name}: {msg}")
            };
            if stack.trim().is_empty() {
                head
            } else {
                format!("{head}\n{}", stack.trim_end())
            }
        }
        CaughtError::Value(v) => {
            let s = v
                .ctx()
                .json_stringify(v.clone())
                .ok()
                .flatten()
                .and_then(|s| s.to_string().ok())
                .unwrap_or_else(|| format!("{v:?}"));
            format!("Uncaught {s}")
        }
        CaughtError::Error(e) => e.to_string(),
    }
}

fn describe(ctx: &Ctx<'_>, e: rquickjs::Error) -> String {
    if e.is_exception() {
        caught(CaughtError::from_error(ctx, e))
    } else {
        e.to_string()
    }
}

/// Renews what the snapshot froze, once per instance, and runs a top level
/// that could not be snapshotted.
fn instance_start() -> Result<(), String> {
    if STARTED.with(|s| s.replace(true)) {
        return Ok(());
    }
    natives::reseed();
    let late = ENGINE.with(|e| e.borrow().as_ref().and_then(|e| e.late.clone()));
    let started = with_engine(|ctx| -> Result<(), String> {
        let reset: Function = ctx
            .globals()
            .get("__wbStart")
            .map_err(|e| describe(ctx, e))?;
        reset.call::<_, ()>(()).catch(ctx).map_err(caught)?;
        match &late {
            // The caller is not the top level's: `auth` and `db` refuse here.
            Some(entry) => {
                natives::set_top_level(true);
                let r = start(ctx, entry);
                natives::set_top_level(false);
                r
            }
            None => Ok(()),
        }
    })
    .unwrap_or(Ok(()));
    match started {
        Ok(()) => {
            ENGINE.with(|e| {
                if let Some(e) = e.borrow_mut().as_mut() {
                    e.late = None;
                }
            });
            Ok(())
        }
        // The next call on this instance (with `reuse`) tries again, in a
        // new runtime: QuickJS remembers a module's failed evaluation.
        Err(e) => {
            STARTED.with(|s| s.set(false));
            ENGINE.with(|cell| {
                let mut cell = cell.borrow_mut();
                if let Some(old) = cell.take() {
                    let modules = old.modules.clone();
                    let late = old.late.clone();
                    drop(old);
                    if let Ok((rt, ctx)) = fresh(&modules)
                        .and_then(|(rt, ctx)| declare_all(&ctx, &modules).map(|_| (rt, ctx)))
                    {
                        *cell = Some(Engine {
                            ctx,
                            _rt: rt,
                            late,
                            modules,
                        });
                    }
                }
            });
            Err(e)
        }
    }
}

fn with_engine<R>(f: impl FnOnce(&Ctx<'_>) -> R) -> Option<R> {
    ENGINE.with(|e| {
        let e = e.borrow();
        let e = e.as_ref()?;
        Some(e.ctx.with(|ctx| f(&ctx)))
    })
}

/// The platform's error shape for a failed call, with the log line the
/// stack goes to.
fn failure(code: &str, message: &str) -> Response {
    wasmbase_sdk::log::write(wasmbase_sdk::log::Level::Error, message, &[]);
    let first = message.lines().next().unwrap_or(message);
    Response::json(
        500,
        &serde_json::json!({ "code": code, "message": format!("{first} (the stack is in the function's log)") }),
    )
}

impl wasmbase_sdk::Handler for Export {
    fn handle(req: Request) -> Response {
        if let Err(e) = instance_start() {
            return failure("function_exception", &e);
        }
        let out = with_engine(|ctx| -> Result<Response, String> {
            let dispatch: Function = ctx
                .globals()
                .get("__wbFetch")
                .map_err(|e| describe(ctx, e))?;
            let headers = natives::pairs(ctx, &req.headers).map_err(|e| describe(ctx, e))?;
            let body = rquickjs::TypedArray::<u8>::new(ctx.clone(), req.body.clone())
                .map_err(|e| describe(ctx, e))?;
            let promise: Promise = dispatch
                .call((req.method.as_str(), req.path.as_str(), headers, body))
                .catch(ctx)
                .map_err(caught)?;
            let value = settle(ctx, promise)?;
            natives::response(ctx, value).map_err(|e| describe(ctx, e))
        });
        match out {
            Some(Ok(resp)) => resp,
            Some(Err(e)) => failure("function_exception", &e),
            None => failure(
                "function_not_initialized",
                "the engine was not snapshotted with a script",
            ),
        }
    }
}

impl wasmbase_sdk::CronHandler for Export {
    fn on_schedule(event: ScheduleEvent) -> Result<(), String> {
        instance_start()?;
        let out = with_engine(|ctx| -> Result<(), String> {
            let run: Function = ctx
                .globals()
                .get("__wbScheduled")
                .map_err(|e| describe(ctx, e))?;
            let promise: Promise = run
                .call((
                    event.name.as_str(),
                    event.scheduled_at.as_str(),
                    event.run_id.as_str(),
                    event.attempt,
                    event.payload.as_deref(),
                ))
                .catch(ctx)
                .map_err(caught)?;
            settle(ctx, promise).map(|_| ())
        });
        match out {
            Some(r) => {
                r.inspect_err(|e| wasmbase_sdk::log::write(wasmbase_sdk::log::Level::Error, e, &[]))
            }
            None => Err("the engine was not snapshotted with a script".into()),
        }
    }
}

wasmbase_sdk::export!(Export);
wasmbase_sdk::export_cron!(Export);
