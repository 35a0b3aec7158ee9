//! Manifest + component bytes → a [`Loaded`] function, or a clear refusal.
//!
//! A component must export a handler, `wasi:http/incoming-handler@0.2.x`
//! (any wasi:http tooling) or `wasmbase:platform/buffered-handler@0.1.x`
//! (`wasmbase-sdk`; Wasmbase prefers it when both are there), or only
//! `wasmbase:platform/cron-handler@0.1.x` (a function that runs on its
//! `[[cron]]` schedules alone), and may import
//! WASI (always linked, inert beyond what is granted) and only the
//! `wasmbase:platform` interfaces its manifest grants (`storage` only with a
//! `storage` grant; which buckets, the call checks); anything else is refused
//! here, naming the import, before it can serve. A JS function (the engine,
//! which imports them all) is checked by what its script imports instead
//! (`js::marker`). Either way this check is for clear errors at deploy: each
//! host call checks its grant again.

use super::buffered::BufferedPre;
use super::engine::Engine;
use super::instance::Ctx;
use super::manifest::Manifest;
use super::registry::InFlight;
use super::warm::WarmPool;
use std::sync::Arc;
use wasmbase_host_api::guest::realtime::TopicGrants;
use wasmbase_host_api::guest::storage::Grants;
use wasmtime::component::InstancePre;
use wasmtime_wasi_http::p2::bindings::ProxyPre;

/// A function ready to serve.
pub struct Loaded {
    /// Its grants and limits.
    pub manifest: Arc<Manifest>,
    /// Linked and type-checked once; each request instantiates from it
    /// through `handler`.
    pub instance: InstancePre<Ctx>,
    /// The entry point calls take.
    pub handler: HandlerPre,
    /// SHA-256 of the component bytes.
    pub hash: String,
    /// Calls of this function running now, capped at `limits.max_concurrency`;
    /// shared with every other version of the name once installed.
    pub inflight: Arc<InFlight>,
    /// Where it came from (a path, or a deployed version).
    pub source: String,
    /// Deployed version number (None for functions loaded from `dev`'s directory).
    pub version: Option<i64>,
    /// Idle instances kept between calls (only used when `reuse` > 1).
    pub warm: WarmPool,
    /// The manifest's storage grants, parsed once.
    pub storage: Arc<Grants>,
    /// The manifest's realtime grants, parsed once.
    pub realtime: Arc<TopicGrants>,
    /// The `cron-handler` export, when the component has one (what its
    /// `[[cron]]` entries call).
    pub cron: Option<super::scheduled::CronPre<Ctx>>,
}

/// The typed view of [`Loaded::instance`] that serves calls: the one-call
/// handler when the component exports it (see `buffered`), else wasi:http.
pub enum HandlerPre {
    /// `wasi:http/incoming-handler`.
    Http(ProxyPre<Ctx>),
    /// `wasmbase:platform/buffered-handler`.
    Buffered(BufferedPre<Ctx>),
    /// No HTTP entry point: a component that only exports `cron-handler`.
    None,
}

/// Why a function was not loaded (shown to whoever deployed or edited it).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct LoadError(pub String);

/// Why `what` (an import naming platform interface `iface`) is refused:
/// what function.toml has, and the setting that would grant it.
pub(super) fn not_granted(manifest: &Manifest, what: &str, iface: &str) -> String {
    let has = match iface {
        "storage" => "no storage grant".to_string(),
        "realtime" => "no realtime grant".to_string(),
        _ => format!("db = \"{}\"", manifest.db.as_str()),
    };
    format!(
        "imports {what}, which function.toml does not grant ({has}; it needs {})",
        grant_for(iface)
    )
}

/// The `function.toml` setting that grants a platform interface.
fn grant_for(iface: &str) -> &'static str {
    match iface {
        "sql" => "db = \"service\"",
        "data" => "db = \"caller\" or db = \"service\"",
        "storage" => "storage = [\"<bucket>:read\" or \"<bucket>:write\", ...]",
        "realtime" => "realtime = [\"<topic pattern>\", ...]",
        _ => "a newer platform",
    }
}

/// Checks `wasm` against `manifest` and prepares it for instantiation.
pub fn prepare(
    engine: &Engine,
    manifest: Manifest,
    wasm: &[u8],
    source: String,
    version: Option<i64>,
) -> Result<Loaded, LoadError> {
    manifest.check().map_err(LoadError)?;
    let storage = Arc::new(manifest.storage_grants().map_err(LoadError)?);
    let realtime = Arc::new(manifest.realtime_grants().map_err(LoadError)?);
    let name = manifest.name.clone();
    let err = |m: String| LoadError(format!("function {name}: {m}"));
    // A JS function is the engine, which imports every platform interface:
    // its script's own imports are checked instead (see `js::marker`).
    let script = super::js::marker::read(wasm);
    if let Some(m) = &script {
        super::js::check_uses(&manifest, &m.uses).map_err(err)?;
    }
    // A JS function shares the engine's compiled code with every other one
    // and brings only its snapshot's data (`js::split`), provided to the
    // code component as the module it imports.
    let parts = script.as_ref().and_then(|_| engine.js_parts(wasm));
    let (component, linker, hash) = match parts {
        Some((code, data)) => {
            let mut linker = engine.linker.clone();
            linker
                .root()
                .module(super::js::split::SNAPSHOT_IMPORT, &data)
                .map_err(|e| err(format!("cannot be linked: {e}")))?;
            let hash = super::engine::content_hash(wasm);
            (code, std::borrow::Cow::Owned(linker), hash)
        }
        None => {
            let (component, hash) = engine.component(wasm).map_err(|e| err(format!("{e:#}")))?;
            (component, std::borrow::Cow::Borrowed(&engine.linker), hash)
        }
    };
    let ty = component.component_type();
    let allowed = manifest.allowed_platform_imports();
    for (import, _) in ty.imports(&engine.engine) {
        let iface = import.split('@').next().unwrap_or(import);
        // The JS engine's shared code imports its snapshot (provided below).
        let snapshot = script.is_some() && import == super::js::split::SNAPSHOT_IMPORT;
        if let Some(rest) = iface.strip_prefix("wasmbase:platform/") {
            if script.is_none() && !allowed.contains(&rest) {
                return Err(err(not_granted(&manifest, import, rest)));
            }
        } else if !iface.starts_with("wasi:") && !snapshot {
            return Err(err(format!(
                "imports {import}, which the platform does not provide"
            )));
        }
    }
    let exports = |prefix: &str| {
        ty.exports(&engine.engine)
            .any(|(n, _)| n.starts_with(prefix))
    };
    let http = exports("wasi:http/incoming-handler@0.2.");
    let one_call = exports("wasmbase:platform/buffered-handler@0.1.");
    let scheduled = exports("wasmbase:platform/cron-handler@0.1.");
    let no_handler = || {
        err("exports no handler: neither wasi:http/incoming-handler@0.2.x nor wasmbase:platform/buffered-handler@0.1.x nor wasmbase:platform/cron-handler@0.1.x (build it with wasmbase-sdk's export! or export_cron!, or any wasi:http tooling)".into())
    };
    if !http && !one_call && !scheduled {
        return Err(no_handler());
    }
    if !manifest.cron.is_empty() && !scheduled {
        return Err(err("has [[cron]] entries in function.toml but does not export wasmbase:platform/cron-handler@0.1.x (wasmbase-sdk's export_cron!)".into()));
    }
    let instance = linker
        .instantiate_pre(&component)
        .map_err(|e| err(format!("cannot be linked: {e}")))?;
    let linked = |e: wasmtime::Error| err(format!("cannot be linked: {e}"));
    let proxy = match http {
        true => Some(ProxyPre::new(instance.clone()).map_err(linked)?),
        false => None,
    };
    let handler = match (one_call.then(|| BufferedPre::new(instance.clone())), proxy) {
        (Some(Ok(b)), _) => HandlerPre::Buffered(b),
        // A one-call export of another shape (another platform version) next
        // to a wasi:http export is ignored, and wasi:http serves.
        (_, Some(p)) => HandlerPre::Http(p),
        (Some(Err(e)), None) => return Err(linked(e)),
        (None, None) => HandlerPre::None,
    };
    let cron = match scheduled {
        true => Some(super::scheduled::CronPre::new(instance.clone()).map_err(linked)?),
        false => None,
    };
    Ok(Loaded {
        manifest: Arc::new(manifest),
        instance,
        handler,
        hash,
        inflight: Default::default(),
        source,
        version,
        warm: WarmPool::new(engine.warm.clone()),
        storage,
        realtime,
        cron,
    })
}
