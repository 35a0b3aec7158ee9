//! Wasmbase: a self-hosted, Supabase-compatible backend in one binary.
//!
//! `cli` parses commands; `server` is the HTTP host; `api::*` are the APIs;
//! `functions` runs WebAssembly edge functions; `embedded_pg` runs the private PostgreSQL of `wasmbase dev`; `migrate` applies
//! the platform's and the project's SQL. Identity and database-access rules live in
//! the `wasmbase-host-api` crate, shared with function guests.

pub mod alloc;
pub mod api;
pub mod bench_cron;
pub mod bench_fanout;
pub mod bench_hello;
pub mod bench_s3;
pub mod cache_dir;
pub mod cli;
pub mod config;
pub mod cron;
pub mod embedded_pg;
pub mod functions;
pub mod logging;
pub mod migrate;
pub mod oauth;
pub mod project;
pub mod server;
