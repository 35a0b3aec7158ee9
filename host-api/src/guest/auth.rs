//! `wasmbase:platform/auth`: the caller as the host resolved it. The guest gets
//! a copy; nothing it does changes the principal its calls run as.

use super::bindings::wasmbase::platform::auth::{Host, Principal};
use super::GuestCtx;

impl Host for GuestCtx {
    async fn current(&mut self) -> Principal {
        Principal {
            role: self.caller.role.as_str().to_string(),
            user_id: self.caller.user_id().map(str::to_string),
            claims: self.caller.claims_json.to_string(),
        }
    }
}
