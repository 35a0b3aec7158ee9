//! Taking a JS function's snapshot: the engine component (built from
//! `sdk/js/engine`, embedded in this binary) is instrumented by Wizer once
//! per node, instantiated in a sandbox like any function call (the
//! function's memory cap, epoch budget and timeout), handed the function's
//! modules, and its memory saved as a new component.
//!
//! Every JS function shares the engine's code, so compiling a snapshot is
//! mostly cache hits in wasmtime's incremental compilation cache
//! (`engine::CodeCache`).

use super::marker::{self, Marker};
use super::sources::Sources;
use crate::functions::engine::Engine;
use crate::functions::instance::{self, Ctx};
use crate::functions::manifest::Manifest;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use wasmbase_host_api::Principal;
use wasmtime::component::{Component, Instance, Lift, WasmList};
use wasmtime::Store;
use wasmtime_wizer::ComponentInstanceState;
use wasmtime_wizer::{ComponentContext, Wizer};

/// The engine component (`scripts/build-js-engine` writes it).
pub const ENGINE_WASM: &[u8] = include_bytes!("../../../assets/js-engine.wasm");

/// The instrumented engine, compiled for one wasmtime engine.
pub struct Prepared {
    cx: ComponentContext<'static>,
    component: Component,
    /// SHA-256 of [`ENGINE_WASM`].
    pub hash: String,
}

/// Instruments and compiles the engine (compiled code is cached on disk like
/// any component's).
pub fn prepare(engine: &Engine) -> anyhow::Result<Prepared> {
    let (cx, instrumented) = Wizer::new()
        .instrument_component(ENGINE_WASM)
        .map_err(|e| anyhow::anyhow!("instrumenting the JS engine: {e}"))?;
    let (component, _) = engine.component(&instrumented)?;
    Ok(Prepared {
        cx,
        component,
        hash: crate::functions::engine::content_hash(ENGINE_WASM),
    })
}

/// Wizer reads the instance's state through the exports it added.
struct State<'a> {
    store: &'a mut Store<Ctx>,
    instance: Instance,
}

impl State<'_> {
    async fn call<R: Lift + Send + Sync + 'static, O>(
        &mut self,
        instance: &str,
        func: &str,
        use_ret: impl FnOnce(&mut Store<Ctx>, R) -> O,
    ) -> O {
        let (_, inst) = self
            .instance
            .get_export(&mut *self.store, None, instance)
            .expect("Wizer's instrumentation exports its accessors");
        let (_, f) = self
            .instance
            .get_export(&mut *self.store, Some(&inst), func)
            .expect("Wizer's instrumentation exports its accessors");
        let f = self
            .instance
            .get_typed_func::<(), (R,)>(&mut *self.store, f)
            .expect("Wizer's accessors have the types it expects");
        let r = f
            .call_async(&mut *self.store, ())
            .await
            .expect("Wizer's accessors do not trap")
            .0;
        use_ret(&mut *self.store, r)
    }
}

impl ComponentInstanceState for State<'_> {
    async fn call_func_ret_list_u8(
        &mut self,
        instance: &str,
        func: &str,
        contents: impl FnOnce(&[u8]) + Send,
    ) {
        self.call(instance, func, |store, list: WasmList<u8>| {
            contents(list.as_le_slice(&store))
        })
        .await
    }

    async fn call_func_ret_s32(&mut self, instance: &str, func: &str) -> i32 {
        self.call(instance, func, |_, r| r).await
    }

    async fn call_func_ret_s64(&mut self, instance: &str, func: &str) -> i64 {
        self.call(instance, func, |_, r| r).await
    }

    async fn call_func_ret_f32(&mut self, instance: &str, func: &str) -> u32 {
        self.call(instance, func, |_, r: f32| r.to_bits()).await
    }

    async fn call_func_ret_f64(&mut self, instance: &str, func: &str) -> u64 {
        self.call(instance, func, |_, r: f64| r.to_bits()).await
    }
}

type InitArgs = (Vec<(String, String)>, Vec<(String, String)>, String);

/// The component of `src` snapshotted into the engine, marked with what it
/// uses. The error is the build's (a script error, or the limit it hit).
pub async fn take(
    engine: &Arc<Engine>,
    manifest: &Arc<Manifest>,
    src: &Sources,
) -> Result<Vec<u8>, String> {
    let prep = engine
        .js()
        .await
        .map_err(|e| format!("the JS engine is unavailable: {e:#}"))?;
    let timeout = Duration::from_millis(manifest.limits.timeout_ms);
    let guest = instance::call_ctx(
        Arc::from(manifest.name.as_str()),
        Principal::for_role(wasmbase_host_api::Role::Anon),
        String::new(),
        None,
        None,
        None,
        timeout,
    );
    let mut store = instance::store_for(
        &engine.engine,
        manifest.clone(),
        guest,
        &HashMap::new(),
        engine.tick,
        timeout,
    );
    let run = async {
        let inst = engine
            .linker
            .instantiate_async(&mut store, &prep.component)
            .await?;
        let init =
            inst.get_typed_func::<InitArgs, (Result<(), String>,)>(&mut store, "wizer-initialize")?;
        let (r,) = init
            .call_async(
                &mut store,
                (src.modules.clone(), src.aliases.clone(), src.entry.clone()),
            )
            .await?;
        wasmtime::Result::Ok((inst, r))
    };
    let (inst, r) = match tokio::time::timeout(timeout, run).await {
        Err(_) => {
            return Err(format!(
                "the top level did not finish within {} ms",
                timeout.as_millis()
            ))
        }
        Ok(Err(e)) => {
            return Err(format!(
                "the top level failed: {}",
                instance::failure(&store, e)
            ))
        }
        Ok(Ok(v)) => v,
    };
    r?;
    // Wizer's reads below are the host's own work: the script's budget no
    // longer applies (an armed deadline could interrupt them).
    store.epoch_deadline_callback(|_| Ok(wasmtime::UpdateDeadline::Continue(u64::MAX / 2)));
    // The init export stays: removing it leaves the component lifting a core
    // export that is gone (wasmtime-wizer 48 removes both names). Nothing
    // calls it after the snapshot.
    let bytes = Wizer::new()
        .keep_init_func(true)
        .snapshot_component(
            &prep.cx,
            &mut State {
                store: &mut store,
                instance: inst,
            },
        )
        .await
        .map_err(|e| format!("taking the snapshot: {e}"))?;
    let mut uses: Vec<String> = src.uses.iter().cloned().collect();
    uses.sort();
    Ok(marker::append(
        bytes,
        &Marker {
            engine: prep.hash.clone(),
            uses,
        },
    ))
}
