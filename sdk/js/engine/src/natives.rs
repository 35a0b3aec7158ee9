//! `globalThis.__wb`: what the JS prelude builds the web APIs and the
//! `wasmbase` module on. Each native does the part JS would do slowly or
//! cannot do at all (bytes, URLs, hashes, randomness, host calls); the
//! prelude keeps `__wb` non-enumerable. A script can still call it directly:
//! that reaches nothing more, since the host checks every call's grant.

use crate::init::wasi::random::random;
use crate::{codec, crypto, url_api};
use rquickjs::function::Opt;
use rquickjs::{Array, Ctx, Exception, Function, Object, Result, TypedArray, Value};
use std::cell::Cell;
use wasmbase_sdk::bindings::wasi::cli::environment;
use wasmbase_sdk::bindings::wasi::clocks::monotonic_clock;
use wasmbase_sdk::bindings::wasmbase::platform;
use wasmbase_sdk::Response;

thread_local! {
    /// The xorshift128+ state behind `Math.random` (QuickJS's own would be
    /// frozen in the snapshot with everything else).
    static RNG: Cell<[u64; 2]> = const { Cell::new([0x9e37_79b9_7f4a_7c15, 0xbf58_476d_1ce4_e5b9]) };
    /// While the snapshot is taken: whether it is, and which per-instance
    /// value the top level read first.
    static SNAPSHOTTING: Cell<(bool, Option<&'static str>)> = const { Cell::new((false, None)) };
}

thread_local! {
    /// While a per-instance top level runs (in its instance's first call).
    static TOP_LEVEL: Cell<bool> = const { Cell::new(false) };
}

/// Marks a per-instance top level running: it runs in the first call of its
/// instance, and with `reuse` what it computes serves later callers too, so
/// nothing that depends on the caller may reach it.
pub fn set_top_level(on: bool) {
    TOP_LEVEL.with(|t| t.set(on));
}

/// Refuses a call whose answer depends on the caller while a top level runs.
fn refuse_at_top_level(ctx: &Ctx<'_>, what: &str) -> Result<()> {
    match TOP_LEVEL.with(Cell::get) {
        true => Err(Exception::throw_message(
            ctx,
            &format!("{what} is not available at the top level of a module: the caller is only known inside the handler"),
        )),
        false => Ok(()),
    }
}

/// Starts (true) or ends (false) the snapshot phase; ending returns what the
/// top level read that differs per instance, if anything.
pub fn set_snapshotting(on: bool) -> Option<&'static str> {
    SNAPSHOTTING.with(|s| s.replace((on, None)).1)
}

/// Notes that `what` was read; during the snapshot that makes the top level
/// run per instance. True while the snapshot is taken.
fn per_instance(what: &'static str) -> bool {
    SNAPSHOTTING.with(|s| match s.get() {
        (true, None) => {
            s.set((true, Some(what)));
            true
        }
        (on, _) => on,
    })
}

/// What a host call with effects does while the snapshot is taken: nothing
/// (it throws, so the top level runs per instance instead, where the call
/// happens for real).
fn refuse_while_building(ctx: &Ctx<'_>, what: &'static str) -> Result<()> {
    match per_instance(what) {
        true => Err(Exception::throw_message(
            ctx,
            &format!("{what} is not available while the function is being built (the top level runs again per instance)"),
        )),
        false => Ok(()),
    }
}

/// Seeds `Math.random` from the host's random source (once per instance).
pub fn reseed() {
    RNG.with(|r| r.set([random::get_random_u64(), random::get_random_u64() | 1]));
}

fn next_random() -> f64 {
    per_instance("Math.random");
    RNG.with(|r| {
        let [mut s1, s0] = r.get();
        let result = s0.wrapping_add(s1);
        s1 ^= s1 << 23;
        r.set([s0, s1 ^ s0 ^ (s1 >> 17) ^ (s0 >> 26)]);
        (result >> 11) as f64 / (1u64 << 53) as f64
    })
}

/// Monotonic milliseconds (for `performance.now()` and timers).
fn now_ms() -> f64 {
    monotonic_clock::now() as f64 / 1e6
}

/// `[[name, value], …]` as a JS array.
pub fn pairs<'js>(ctx: &Ctx<'js>, list: &[(String, String)]) -> Result<Array<'js>> {
    let out = Array::new(ctx.clone())?;
    for (i, (k, v)) in list.iter().enumerate() {
        let pair = Array::new(ctx.clone())?;
        pair.set(0, k.as_str())?;
        pair.set(1, v.as_str())?;
        out.set(i, pair)?;
    }
    Ok(out)
}

fn read_pairs(list: Array<'_>) -> Result<Vec<(String, String)>> {
    let mut out = Vec::with_capacity(list.len());
    for pair in list.iter::<Array>() {
        let pair = pair?;
        out.push((pair.get(0)?, pair.get(1)?));
    }
    Ok(out)
}

/// The `[status, headers, body]` the prelude's `__wbFetch` resolves with.
pub fn response<'js>(_ctx: &Ctx<'js>, value: Value<'js>) -> Result<Response> {
    let parts: Array = Array::from_value(value)?;
    let status: u16 = parts.get(0)?;
    let headers = read_pairs(parts.get(1)?)?;
    let body: TypedArray<u8> = parts.get(2)?;
    let mut resp = Response::new(status);
    resp.headers = headers;
    resp.body = body.as_bytes().unwrap_or_default().to_vec();
    Ok(resp)
}

/// Runs the earliest due timer, waiting for it if it is not yet due; false
/// when there is none.
pub fn run_next_timer(ctx: &Ctx<'_>) -> Result<bool> {
    let run: Function = ctx.globals().get("__wbRunTimer")?;
    run.call(())
}

fn bytes<'js>(ctx: &Ctx<'js>, v: Vec<u8>) -> Result<TypedArray<'js, u8>> {
    TypedArray::new(ctx.clone(), v)
}

fn slice<'a>(a: &'a TypedArray<'_, u8>) -> &'a [u8] {
    a.as_bytes().unwrap_or_default()
}

fn type_error(ctx: &Ctx<'_>, m: &str) -> rquickjs::Error {
    Exception::throw_type(ctx, m)
}

/// Sets `globalThis.__wb`. (The environment is read from WASI on every
/// call: wasi-libc caches it on first use, and that cache would be the
/// snapshot's empty one.)
pub fn install<'js>(ctx: &Ctx<'js>) -> Result<()> {
    let wb = Object::new(ctx.clone())?;
    let c = ctx.clone();
    macro_rules! native {
        ($name:literal, $f:expr) => {
            wb.set($name, Function::new(c.clone(), $f)?)?
        };
    }
    native!("utf8Encode", |ctx: Ctx<'js>, s: String| bytes(
        &ctx,
        s.into_bytes()
    ));
    native!("utf8Decode", |ctx: Ctx<'js>,
                           b: TypedArray<'js, u8>,
                           fatal: bool,
                           stream: bool|
     -> Result<Array<'js>> {
        let (text, held) =
            codec::decode_utf8(slice(&b), fatal, stream).map_err(|m| type_error(&ctx, m))?;
        let out = Array::new(ctx.clone())?;
        out.set(0, text)?;
        out.set(1, held)?;
        Ok(out)
    });
    native!("b64encode", |b: TypedArray<'js, u8>| codec::base64_encode(
        slice(&b)
    ));
    native!("b64decode", |ctx: Ctx<'js>,
                          s: String|
     -> Result<TypedArray<'js, u8>> {
        match codec::base64_decode(&s) {
            Some(v) => bytes(&ctx, v),
            None => Err(Exception::throw_message(
                &ctx,
                "The string to be decoded is not correctly encoded.",
            )),
        }
    });
    native!("urlParse", |ctx: Ctx<'js>,
                         input: String,
                         base: Opt<String>|
     -> Result<Value<'js>> {
        match url_api::parse(&input, base.0.as_deref()) {
            Some(parts) => Ok(url_api::to_js(&ctx, &parts)?.into_value()),
            None => Ok(Value::new_null(ctx)),
        }
    });
    native!("urlSet", |ctx: Ctx<'js>,
                       href: String,
                       prop: String,
                       value: String|
     -> Result<Value<'js>> {
        match url_api::set(&href, &prop, &value) {
            Some(parts) => Ok(url_api::to_js(&ctx, &parts)?.into_value()),
            None => Ok(Value::new_null(ctx)),
        }
    });
    native!("randomBytes", |ctx: Ctx<'js>,
                            n: u32|
     -> Result<TypedArray<'js, u8>> {
        if n > 65536 {
            return Err(Exception::throw_message(
                &ctx,
                "QuotaExceededError: getRandomValues takes at most 65536 bytes",
            ));
        }
        per_instance("crypto.getRandomValues");
        bytes(&ctx, random::get_random_bytes(n as u64))
    });
    native!("mathRandom", || next_random());
    native!("uuid", || {
        per_instance("crypto.randomUUID");
        crypto::uuid_v4(&random::get_random_bytes(16))
    });
    native!("now", || now_ms());
    native!("sleepUntil", |due: f64| {
        let left = due - now_ms();
        if left > 0.0 {
            monotonic_clock::subscribe_duration((left * 1e6) as u64).block();
        }
    });
    native!("digest", |ctx: Ctx<'js>,
                       alg: String,
                       data: TypedArray<'js, u8>|
     -> Result<TypedArray<'js, u8>> {
        match crypto::digest(&alg, slice(&data)) {
            Some(v) => bytes(&ctx, v),
            None => Err(Exception::throw_message(
                &ctx,
                &format!("NotSupportedError: unknown digest {alg}"),
            )),
        }
    });
    native!("hmac", |ctx: Ctx<'js>,
                     alg: String,
                     key: TypedArray<'js, u8>,
                     data: TypedArray<'js, u8>|
     -> Result<TypedArray<'js, u8>> {
        match crypto::hmac(&alg, slice(&key), slice(&data)) {
            Some(v) => bytes(&ctx, v),
            None => Err(Exception::throw_message(
                &ctx,
                &format!("NotSupportedError: unknown hash {alg}"),
            )),
        }
    });
    native!("log", |level: String, message: String| {
        use wasmbase_sdk::log::Level;
        let level = match level.as_str() {
            "error" => Level::Error,
            "warn" => Level::Warn,
            "debug" => Level::Debug,
            _ => Level::Info,
        };
        wasmbase_sdk::log::write(level, &message, &[]);
    });
    native!("envAll", |ctx: Ctx<'js>| -> Result<Array<'js>> {
        per_instance("the environment");
        pairs(&ctx, &environment::get_environment())
    });
    native!("env", |name: String| {
        per_instance("the environment");
        environment::get_environment()
            .into_iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v)
    });
    native!("fetch", |ctx: Ctx<'js>,
                      method: String,
                      url: String,
                      headers: Array<'js>,
                      body: TypedArray<'js, u8>|
     -> Result<Array<'js>> {
        refuse_while_building(&ctx, "fetch")?;
        let mut req = wasmbase_sdk::Request::new(&method, &url);
        req.headers = read_pairs(headers)?;
        req.body = slice(&body).to_vec();
        let resp = wasmbase_sdk::fetch(req)
            .map_err(|e| type_error(&ctx, &format!("fetch failed: {e}")))?;
        let out = Array::new(ctx.clone())?;
        out.set(0, resp.status)?;
        out.set(1, pairs(&ctx, &resp.headers)?)?;
        out.set(2, bytes(&ctx, resp.body)?)?;
        Ok(out)
    });
    native!("authUser", |ctx: Ctx<'js>| -> Result<Array<'js>> {
        refuse_while_building(&ctx, "authUser")?;
        refuse_at_top_level(&ctx, "auth")?;
        let p = platform::auth::current();
        let out = Array::new(ctx.clone())?;
        out.set(0, p.role)?;
        out.set(1, p.user_id)?;
        out.set(2, p.claims)?;
        Ok(out)
    });
    native!("dataRun", |ctx: Ctx<'js>,
                        req: String|
     -> Result<Array<'js>> {
        refuse_while_building(&ctx, "dataRun")?;
        refuse_at_top_level(&ctx, "db")?;
        let r = crate::codec::data_request(&req).map_err(|m| type_error(&ctx, &m))?;
        platform_result(
            &ctx,
            platform::data::run(&r).map(|rows| (rows.json, rows.affected, rows.total)),
        )
    });
    native!("dataRpc", |ctx: Ctx<'js>,
                        schema: Opt<String>,
                        function: String,
                        args: String|
     -> Result<Array<'js>> {
        refuse_while_building(&ctx, "dataRpc")?;
        refuse_at_top_level(&ctx, "db.rpc")?;
        platform_result(
            &ctx,
            platform::data::rpc(schema.0.as_deref(), &function, &args, &[])
                .map(|rows| (rows.json, rows.affected, rows.total)),
        )
    });
    native!("sql", |ctx: Ctx<'js>,
                    kind: String,
                    text: String,
                    params: String|
     -> Result<Array<'js>> {
        refuse_while_building(&ctx, "sql")?;
        crate::codec::sql_call(&ctx, &kind, &text, &params)
    });
    native!("storage", |ctx: Ctx<'js>,
                        op: String,
                        bucket: String,
                        arg: String,
                        body: Opt<TypedArray<'js, u8>>|
     -> Result<Array<'js>> {
        refuse_while_building(&ctx, "storage")?;
        refuse_at_top_level(&ctx, "storage")?;
        crate::storage::call(&ctx, &op, &bucket, &arg, body.0.as_ref().map(slice))
    });
    ctx.globals().set("__wb", wb)?;
    Ok(())
}

/// `[ok, value, affected, total]` or `[false, error]`: the prelude turns the
/// error into the `{ data, error }` shape supabase-js users expect.
fn platform_result<'js>(
    ctx: &Ctx<'js>,
    r: std::result::Result<(String, u64, Option<u64>), platform::types::Error>,
) -> Result<Array<'js>> {
    let out = Array::new(ctx.clone())?;
    match r {
        Ok((json, affected, total)) => {
            out.set(0, true)?;
            out.set(1, json)?;
            out.set(2, affected as f64)?;
            out.set(3, total.map(|t| t as f64))?;
        }
        Err(e) => {
            out.set(0, false)?;
            out.set(1, crate::codec::error_json(&e))?;
        }
    }
    Ok(out)
}
