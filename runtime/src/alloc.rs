//! The process allocator (mimalloc, set in `main.rs`) and the one hook the
//! rest of the server needs from it.

/// Hands memory freed by this thread back to the operating system. Compiling
/// a component allocates tens of megabytes for a moment on a blocking-pool
/// thread; without this the allocator keeps them for that thread, and idle
/// RSS grows with every function loaded.
pub fn release_free_memory() {
    // SAFETY: `mi_collect` only walks the allocator's own free lists; it is
    // callable from any thread at any time.
    unsafe { libmimalloc_sys::mi_collect(true) }
}
