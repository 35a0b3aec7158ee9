fn main() -> std::process::ExitCode {
    wasmbase::cli::main()
}
