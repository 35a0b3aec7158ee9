//! Who is calling, as the platform resolved it from the key and JWT.

pub use crate::bindings::wasmbase::platform::auth::Principal;

/// The caller of this invocation.
pub fn user() -> Principal {
    crate::bindings::wasmbase::platform::auth::current()
}
