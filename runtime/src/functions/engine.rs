//! The one wasmtime `Engine` of a node: component model, pooling allocator,
//! copy-on-write memory images, epoch interruption driven by a std thread (a
//! tokio task would starve behind a spinning guest), and a local cache of
//! compiled artifacts keyed by content hash + engine fingerprint. Precompiled
//! native code is only ever produced on this node and read back from this
//! node's disk, never from the database or a shared store.

use super::instance::Ctx;
use super::warm::WarmBudget;
use anyhow::Result;
use sha2::{Digest, Sha256};
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use wasmtime::component::{Component, Linker};
use wasmtime::{Config, Enabled, InstanceAllocationStrategy, PoolingAllocationConfig};

/// How long the instrumented JS engine outlives the last build that used it
/// (`Engine::js_idle`): long enough for the builds of a `dev` start or a
/// burst of saves, which then share one.
const JS_ENGINE_IDLE: Duration = Duration::from_secs(2);

/// A component's identity: the hex SHA-256 of its bytes (artifact cache
/// file names, `Loaded::hash`, the shared JS code's key).
pub fn content_hash(wasm: &[u8]) -> String {
    hex::encode(Sha256::digest(wasm))
}

/// Distinct shared JS engine codes a node keeps (`Engine::js_parts`).
const JS_CODE_COPIES_MAX: usize = 4;

/// Largest linear memory any function may ask for (`limits.memory_mb` caps it
/// per function below this).
pub const MAX_MEMORY_BYTES: usize = 1 << 30;

/// Native stack a call may use (see `Engine::new`).
const MAX_WASM_STACK: usize = 2 << 20;

/// Engine, linker and artifact cache, shared by every function.
pub struct Engine {
    /// The wasmtime engine.
    pub engine: wasmtime::Engine,
    /// WASI (inert: no preopens, no sockets), wasi:http and the platform
    /// interfaces, linked once.
    pub linker: Linker<Ctx>,
    cache_dir: PathBuf,
    fingerprint: String,
    /// Epoch tick.
    pub tick: Duration,
    /// Idle warm instances this node may keep (each holds a pool slot).
    pub warm: Arc<WarmBudget>,
    /// The JS engine, instrumented for snapshots (on first use).
    js: tokio::sync::Mutex<Option<Arc<super::js::snapshot::Prepared>>>,
    /// When a build last finished with it.
    js_last_use: std::sync::Mutex<std::time::Instant>,
    /// The settings of the short-lived engines that compile (`cached`).
    compile_config: Config,
    /// The JS engine's code components (`js::split`) by content hash: one
    /// per engine build, compiled and mapped once for all JS functions.
    js_code: std::sync::Mutex<std::collections::HashMap<String, Component>>,
}

/// wasmtime's incremental compilation cache: the code of every JS function
/// is the JS engine's, so compiling one after the first is almost all cache
/// hits (milliseconds instead of seconds). Entries live in `<cache_dir>/code/`
/// (private like the artifact cache: this is native code the process runs),
/// not in memory, so they cost no resident memory between compiles, and a
/// node that restarts, or another node sharing the directory, starts warm.
/// Keys include the compiler settings, so another engine version cannot hit
/// them.
#[derive(Debug)]
pub struct CodeCache {
    dir: PathBuf,
}

/// What the directory may hold; past it, it is emptied when an engine starts
/// (entries are only ever added, one per compiled function).
const CODE_CACHE_DISK_BYTES: u64 = 512 << 20;

impl CodeCache {
    fn new(cache_dir: &Path) -> Result<CodeCache> {
        let dir = cache_dir.join("code");
        crate::cache_dir::private(&dir, "functions.cache_dir")?;
        let files: Vec<_> = std::fs::read_dir(&dir)?.filter_map(|e| e.ok()).collect();
        let held: u64 = files
            .iter()
            .filter_map(|e| e.metadata().ok())
            .map(|m| m.len())
            .sum();
        if held > CODE_CACHE_DISK_BYTES {
            for f in files {
                let _ = std::fs::remove_file(f.path());
            }
        }
        Ok(CodeCache { dir })
    }

    fn file(&self, key: &[u8]) -> PathBuf {
        self.dir.join(hex::encode(Sha256::digest(key)))
    }
}

impl wasmtime::CacheStore for CodeCache {
    fn get(&self, key: &[u8]) -> Option<std::borrow::Cow<'_, [u8]>> {
        let path = self.file(key);
        if !owned_private_file(&path) {
            return None;
        }
        std::fs::read(&path).ok().map(std::borrow::Cow::Owned)
    }

    fn insert(&self, key: &[u8], value: Vec<u8>) -> bool {
        if let Ok(mut tmp) = tempfile::NamedTempFile::new_in(&self.dir) {
            use std::io::Write;
            if tmp.write_all(&value).is_ok() {
                return tmp.persist(self.file(key)).is_ok();
            }
        }
        false
    }
}

impl Engine {
    /// Builds the engine and starts its epoch ticker thread (stops when the
    /// engine is dropped). The instance pool holds `calls` instances in flight
    /// plus `warm` idle ones kept for reuse.
    pub fn new(cache_dir: PathBuf, tick: Duration, calls: u32, warm: u32) -> Result<Arc<Engine>> {
        let instances = calls + warm;
        let mut pool = PoolingAllocationConfig::new();
        pool.total_component_instances(instances)
            .total_core_instances(instances * 8)
            .total_memories(instances * 2)
            .total_tables(instances * 4)
            // A store keeps its last fiber stack, so idle warm ones hold one too.
            .total_stacks(instances)
            .max_memory_size(MAX_MEMORY_BYTES)
            .max_core_instances_per_component(64)
            // Reset small memories and tables with memset instead of madvise:
            // no syscall and no page faults per request, and no contention on
            // the kernel's mmap lock between worker threads.
            .linear_memory_keep_resident(2 << 20)
            .table_keep_resident(64 << 10)
            // ...and only the pages the guest wrote, found with Linux's
            // PAGEMAP_SCAN (6.7+; elsewhere the whole kept region is memset).
            // Measured on `/fn/hello`: without it, memset of the 2 MiB kept
            // resident was a third of the server's CPU.
            .pagemap_scan(Enabled::Auto)
            .decommit_batch_size(32);
        let mut cfg = Config::new();
        cfg.wasm_component_model(true)
            // An interpreter (the JS engine) needs more native stack per
            // script call than its own stack check sees: with wasmtime's
            // default (512 KiB) deep JS recursion overflowed the native stack
            // before QuickJS could throw its RangeError.
            .max_wasm_stack(MAX_WASM_STACK)
            .async_stack_size(MAX_WASM_STACK + (1 << 20))
            .epoch_interruption(true)
            .memory_init_cow(true)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        crate::cache_dir::private(&cache_dir, "functions.cache_dir")?;
        // `WASMBASE_WASM_PROFILER=perfmap`: names guest code for `perf`
        // (/tmp/perf-PID.map); used to profile the JS engine's calls.
        if std::env::var("WASMBASE_WASM_PROFILER").as_deref() == Ok("perfmap") {
            cfg.profiler(wasmtime::ProfilingStrategy::PerfMap);
        }
        cfg.enable_incremental_compilation(Arc::new(CodeCache::new(&cache_dir)?))
            .map_err(anyhow::Error::from)?;
        let engine = wasmtime::Engine::new(&cfg).map_err(anyhow::Error::from)?;
        // What compiles (see `cached`): the same settings, instances never
        // made in it, so no pool.
        let mut compile_config = cfg.clone();
        compile_config.allocation_strategy(InstanceAllocationStrategy::OnDemand);
        let mut h = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut h);
        let fingerprint = format!("{:016x}", h.finish());
        let mut linker = Linker::<Ctx>::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(anyhow::Error::from)?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)
            .map_err(anyhow::Error::from)?;
        wasmbase_host_api::guest::add_to_linker(
            &mut linker,
            |c: &mut Ctx| &mut c.guest,
            Ctx::storage_view,
        )
        .map_err(anyhow::Error::from)?;
        let weak = engine.weak();
        std::thread::Builder::new()
            .name("wasmbase-epoch".into())
            .spawn(move || loop {
                std::thread::sleep(tick);
                match weak.upgrade() {
                    Some(e) => e.increment_epoch(),
                    None => return,
                }
            })?;
        Ok(Arc::new(Engine {
            engine,
            linker,
            cache_dir,
            fingerprint,
            tick,
            warm: WarmBudget::new(warm as usize),
            js: Default::default(),
            js_last_use: std::sync::Mutex::new(std::time::Instant::now()),
            js_code: Default::default(),
            compile_config,
        }))
    }

    /// The component for `wasm`, compiled once per node and engine version:
    /// loaded from the local cache when present (mmap), else compiled and
    /// written there atomically. Returns it with its content hash.
    pub fn component(&self, wasm: &[u8]) -> Result<(Component, String)> {
        self.cached(
            wasm,
            "component",
            |e, wasm| e.precompile_component(wasm),
            // SAFETY (both): see `cached`.
            |e, path| unsafe { Component::deserialize_file(e, path) },
            |e, bytes| unsafe { Component::deserialize(e, bytes) },
        )
    }

    /// The core module for `wasm`, cached like [`Engine::component`] (a JS
    /// function's data module: served from its file, its memory image is
    /// the file's pages rather than a copy).
    pub fn module(&self, wasm: &[u8]) -> Result<wasmtime::Module> {
        let (m, _) = self.cached(
            wasm,
            "module",
            |e, wasm| e.precompile_module(wasm),
            // SAFETY (both): see `cached`.
            |e, path| unsafe { wasmtime::Module::deserialize_file(e, path) },
            |e, bytes| unsafe { wasmtime::Module::deserialize(e, bytes) },
        )?;
        Ok(m)
    }

    /// A JS function's snapshot loaded as the engine's code, shared by every
    /// JS function of this node, and its own data module (`js::split`).
    /// None when the snapshot's shape is not one the split handles (it is
    /// then loaded whole).
    pub fn js_parts(&self, wasm: &[u8]) -> Option<(Component, wasmtime::Module)> {
        // A bug in the cut must not cost the function: it is loaded whole.
        let cut = std::panic::catch_unwind(|| super::js::split::split(wasm))
            .unwrap_or_else(|_| Err("the split panicked".into()));
        let split = match cut {
            Ok(s) => s,
            Err(why) => {
                tracing::warn!(%why, "a JS function is loaded whole, its code not shared");
                return None;
            }
        };
        let key = content_hash(&split.code);
        let code = {
            // Held while compiling: concurrent loads wait for one compile.
            let mut shared = self.js_code.lock().unwrap_or_else(|p| p.into_inner());
            match shared.get(&key) {
                Some(c) => c.clone(),
                None => match self.component(&split.code) {
                    Ok((c, _)) => {
                        // One entry per engine build in practice; a bound
                        // keeps crafted components (a deployer can mark any
                        // component as JS) from growing the map: past it,
                        // code is not shared.
                        if shared.len() < JS_CODE_COPIES_MAX {
                            shared.insert(key, c.clone());
                        }
                        c
                    }
                    Err(e) => {
                        tracing::warn!(error = %format!("{e:#}"), "the JS engine's shared code did not compile; loading whole");
                        return None;
                    }
                },
            }
        };
        match self.module(&split.data) {
            Ok(data) => Some((code, data)),
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "a JS function's data module did not compile; loading whole");
                None
            }
        }
    }

    /// How many compiled copies of the JS engine's code this node holds
    /// (one per engine build; tests check that functions share it).
    pub fn js_code_copies(&self) -> usize {
        self.js_code.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Compiled once per node and engine version: `load` maps the cached
    /// file when present, else `precompile` compiles it with a short-lived
    /// engine of the same configuration, and the result is written there
    /// atomically and mapped (`from_bytes` only when it cannot be written).
    ///
    /// Why a second engine: wasmtime's compiler keeps each compiling
    /// thread's cranelift context for the next compile, for the engine's
    /// lifetime; after the JS engine's code (one interpreter function is
    /// huge) that was ~30 MB of idle RSS (10 JS functions, cold: 113 MB;
    /// the same server restarted, nothing to compile: 80 MB). Dropped with
    /// its engine, that memory goes back.
    ///
    /// `load` and `from_bytes` are only ever given what `precompile` of this
    /// configuration wrote on this node (the file name carries the engine
    /// fingerprint, and only a private file owned by this user is read); a
    /// mismatch is detected by wasmtime and reported as an error, not
    /// undefined behaviour.
    fn cached<T>(
        &self,
        wasm: &[u8],
        what: &str,
        precompile: impl Fn(&wasmtime::Engine, &[u8]) -> wasmtime::Result<Vec<u8>>,
        load: impl Fn(&wasmtime::Engine, &Path) -> wasmtime::Result<T>,
        from_bytes: impl Fn(&wasmtime::Engine, &[u8]) -> wasmtime::Result<T>,
    ) -> Result<(T, String)> {
        let hash = content_hash(wasm);
        let path = self
            .cache_dir
            .join(format!("{hash}-{}.cwasm", self.fingerprint));
        if owned_private_file(&path) {
            match load(&self.engine, &path) {
                Ok(c) => return Ok((c, hash)),
                Err(e) => {
                    tracing::warn!(error = %e, path = %path.display(), "ignoring a bad cached artifact")
                }
            }
        }
        let compiler = wasmtime::Engine::new(&self.compile_config).map_err(anyhow::Error::from)?;
        let bytes = precompile(&compiler, wasm);
        drop(compiler);
        // Compiling allocated and freed tens of megabytes on this thread and
        // on the compiler's.
        crate::alloc::release_free_memory_after_compile();
        let bytes = bytes.map_err(|e| anyhow::anyhow!("not a valid WebAssembly {what}: {e}"))?;
        // A unique temporary file, synced, then renamed: concurrent compiles
        // of the same bytes never interleave their writes.
        if let Ok(mut tmp) = tempfile::NamedTempFile::new_in(&self.cache_dir) {
            use std::io::Write;
            if tmp
                .write_all(&bytes)
                .and_then(|_| tmp.as_file().sync_all())
                .is_ok()
                && tmp.persist(&path).is_ok()
            {
                // Served from the file (mmap) rather than a copy in memory:
                // only the pages a call touches are resident. Measured with
                // 10 JS functions: each in-memory copy kept 3.2 MiB resident.
                if let Ok(mapped) = load(&self.engine, &path) {
                    return Ok((mapped, hash));
                }
            }
        }
        let c = from_bytes(&self.engine, &bytes).map_err(anyhow::Error::from)?;
        Ok((c, hash))
    }

    /// The JS engine instrumented for snapshots, prepared on demand
    /// (compiling it takes a second or two the first time on a node, then
    /// its cached code is mapped in milliseconds) and kept while builds
    /// come: [`Engine::js_idle`] drops it once they stop.
    pub async fn js(self: &Arc<Self>) -> Result<Arc<super::js::snapshot::Prepared>> {
        let mut slot = self.js.lock().await;
        if let Some(p) = &*slot {
            return Ok(p.clone());
        }
        let me = self.clone();
        let p =
            tokio::task::spawn_blocking(move || super::js::snapshot::prepare(&me).map(Arc::new))
                .await??;
        *slot = Some(p.clone());
        Ok(p)
    }

    /// Called after a JS build: drops the instrumented engine when no build
    /// has used it for [`JS_ENGINE_IDLE`]. Why: it is a second compiled copy
    /// of the engine (its code, read-only data and a pool slot's image,
    /// ~4 MB resident) that only builds use; `dev` builds on start and on
    /// save, a node serving deployed functions never.
    pub fn js_idle(self: &Arc<Self>) {
        *self.js_last_use.lock().unwrap_or_else(|p| p.into_inner()) = std::time::Instant::now();
        let me = Arc::downgrade(self);
        tokio::spawn(async move {
            tokio::time::sleep(JS_ENGINE_IDLE).await;
            let Some(me) = me.upgrade() else { return };
            let mut slot = me.js.lock().await;
            // Only the slot holds it: no build is using it, and none took it
            // since this one finished (it would have scheduled its own drop).
            if slot.as_ref().is_some_and(|p| Arc::strong_count(p) == 1)
                && me
                    .js_last_use
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .elapsed()
                    >= JS_ENGINE_IDLE
            {
                let p = slot.take();
                drop(slot);
                let _ = tokio::task::spawn_blocking(move || {
                    drop(p);
                    crate::alloc::release_free_memory();
                })
                .await;
            }
        });
    }

    /// Cache directory (tests and status).
    pub fn cache_dir(&self) -> &Path {
        &self.cache_dir
    }
}

/// Whether `path` is a regular file (not a symlink) owned by this user and not
/// writable by anyone else: only such a cached artifact is loaded.
fn owned_private_file(path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match std::fs::symlink_metadata(path) {
        Ok(m) => {
            m.file_type().is_file()
                && m.uid() == nix::unistd::Uid::effective().as_raw()
                && m.mode() & 0o022 == 0
        }
        Err(_) => false,
    }
}
