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
    js: tokio::sync::OnceCell<Arc<super::js::snapshot::Prepared>>,
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
        }))
    }

    /// The component for `wasm`, compiled once per node and engine version:
    /// loaded from the local cache when present (mmap), else compiled and
    /// written there atomically. Returns it with its content hash.
    pub fn component(&self, wasm: &[u8]) -> Result<(Component, String)> {
        let hash = hex::encode(Sha256::digest(wasm));
        let path = self
            .cache_dir
            .join(format!("{hash}-{}.cwasm", self.fingerprint));
        if owned_private_file(&path) {
            // SAFETY: the file was written by `serialize` of this engine on this
            // node (name carries the engine fingerprint); a mismatch is detected
            // by wasmtime and reported as an error, not undefined behaviour.
            match unsafe { Component::deserialize_file(&self.engine, &path) } {
                Ok(c) => return Ok((c, hash)),
                Err(e) => {
                    tracing::warn!(error = %e, path = %path.display(), "ignoring a bad cached artifact")
                }
            }
        }
        let mut c = Component::from_binary(&self.engine, wasm)
            .map_err(|e| anyhow::anyhow!("not a valid WebAssembly component: {e}"))?;
        if let Ok(bytes) = c.serialize() {
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
                    // Served from the file (mmap) rather than the compiler's
                    // copy: only the code pages a call touches are resident.
                    // Measured with 10 JS functions: each compiled copy kept
                    // 3.2 MiB resident.
                    // SAFETY: as above; this node just wrote the file.
                    if let Ok(mapped) = unsafe { Component::deserialize_file(&self.engine, &path) }
                    {
                        c = mapped;
                    }
                }
            }
        }
        // Compiling allocated and freed tens of megabytes on this thread and
        // on the compiler's.
        crate::alloc::release_free_memory_after_compile();
        Ok((c, hash))
    }

    /// The JS engine instrumented for snapshots, prepared once (compiling it
    /// takes a second or two the first time on a node, then its cached code
    /// is loaded).
    pub async fn js(self: &Arc<Self>) -> Result<Arc<super::js::snapshot::Prepared>> {
        let me = self.clone();
        self.js
            .get_or_try_init(|| async move {
                tokio::task::spawn_blocking(move || super::js::snapshot::prepare(&me).map(Arc::new))
                    .await?
            })
            .await
            .cloned()
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
