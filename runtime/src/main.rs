/// mimalloc instead of glibc's malloc: a `perf` profile of `/fn/hello` put 14%
/// of the server's CPU in glibc's malloc and free, much of it contention on its
/// arena locks between worker threads (a store is built on one thread and often
/// dropped on another).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    wasmbase::cli::main()
}
