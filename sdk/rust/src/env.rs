//! Environment variables granted in `function.toml` (`env = [...]`); anything
//! else is absent. Secrets set with `wasmbase secrets set` arrive here too.

/// The value of `name`, if granted and set.
pub fn get(name: &str) -> Option<String> {
    std::env::var(name).ok()
}
