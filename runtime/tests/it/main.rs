//! Integration tests: real PostgreSQL (`DATABASE_URL` if set, else a private cluster
//! started with the same code as `wasmbase dev`), the real server on port 0, the
//! real binary for CLI tests. One test binary, so the crate links once.

mod harness;

mod auth;
mod auth_keys;
mod cli;
mod conn;
mod cron;
mod fake_oauth;
mod functions;
mod js_functions;
mod migrations;
mod oauth;
mod ops;
mod principal;
mod realtime;
mod realtime_catchup;
mod realtime_functions;
mod realtime_private;
mod rest;
mod rest_parity;
mod session;
mod storage;
mod storage_functions;
mod storage_render;
mod storage_resumable;
