//! The process allocator (mimalloc, set in `main.rs`) and the one hook the
//! rest of the server needs from it.

/// Hands memory freed by this thread back to the operating system. Compiling
/// a component allocates and frees a lot for a moment on a blocking-pool
/// thread; without this the allocator keeps it for that thread, and idle RSS
/// grows with the functions loaded (10 functions: 55 MB without, 50 MB with).
pub fn release_free_memory() {
    // SAFETY: `mi_collect` only walks the allocator's own free lists; it is
    // callable from any thread at any time.
    unsafe { libmimalloc_sys::mi_collect(true) }
}

/// [`release_free_memory`] on this thread and on every thread of rayon's
/// pool, where wasmtime's parallel compilation allocated. Measured: a `dev`
/// server's first JS function (a full compile of the engine) left tens of
/// megabytes with those threads.
pub fn release_free_memory_after_compile() {
    release_free_memory();
    rayon::broadcast(|_| release_free_memory());
}

/// Every second, lets the allocator return memory that has been free for a
/// while — but only on a second in which `served` (a count of finished
/// requests) did not move: an idle server. mimalloc returns freed memory to
/// the OS only after a delay, and only while it is being called; an idle
/// server would keep what its start-up (or its last burst) freed. Measured:
/// idle RSS of `wasmbase dev` 36 MB without this, 17 MB with an immediate
/// return (which costs 4-10% under load, so the delay stays and this tick
/// collects after it). Under load the tick does nothing: a collection walks
/// the worker thread's heap pages and purges (madvise) free ones, which the
/// next requests fault back in — work and page faults in the middle of
/// serving, for memory that is about to be reused anyway.
pub async fn return_idle_memory(
    stop: tokio_util::sync::CancellationToken,
    served: impl Fn() -> u64 + Send + 'static,
) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last = served();
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {
                let now = served();
                if now == last {
                    // SAFETY: as in `release_free_memory`.
                    unsafe { libmimalloc_sys::mi_collect(false) }
                }
                last = now;
            }
        }
    }
}
