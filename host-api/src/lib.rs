//! Capabilities shared by Wasmbase's HTTP APIs and (later) its WebAssembly guests.
//!
//! Every rule about *who* is calling (keys, JWTs, the resulting [`Principal`]) and
//! *how* the database is reached on their behalf ([`db::Tx`]) lives here, so
//! the `/rest`, `/auth`, `/storage` APIs and the guest bindings cannot drift apart.
//! This crate never depends on the `wasmbase` runtime crate.

pub mod audit;
pub mod auth_error;
pub mod data;
pub mod db;
pub mod gate;
pub mod guest;
pub mod jwt;
pub mod keys;
pub mod listen;
pub mod password;
pub mod principal;
pub mod sqlstate;
pub mod storage;
pub mod time;
pub mod verified_tokens;
pub mod wildcard;

pub use auth_error::AuthError;
pub use principal::{Principal, Role};
