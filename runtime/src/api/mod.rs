//! The HTTP APIs, one module each, all shaped routes → parse → plan/logic → exec →
//! response, all taking their `Principal` from `server::caller`.

pub mod admin;
pub mod auth;
pub mod cron;
pub mod deploy;
pub mod functions;
pub mod platform;
pub mod realtime;
pub mod rest;
pub mod storage;
