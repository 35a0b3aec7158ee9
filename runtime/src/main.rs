/// mimalloc instead of glibc's malloc: requests allocate and free many small
/// objects across worker threads (hyper, tokio-postgres, wasmtime stores), where
/// glibc's allocator showed up as a tenth of the server's CPU.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    wasmbase::cli::main()
}
