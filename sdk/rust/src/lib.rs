//! Write Wasmbase functions in Rust.
//!
//! A function is a WebAssembly component (target `wasm32-wasip2`) exporting
//! `wasmbase:platform/buffered-handler`: Wasmbase hands it the whole request in
//! one call, without wasi:http's per-request host calls. With the `wasi-http`
//! feature it also exports `wasi:http/incoming-handler`, for hosts that speak
//! only wasi:http. Implement [`Handler`] and call [`export!`]:
//!
//! ```ignore
//! use wasmbase_sdk::{Handler, Request, Response};
//! struct Hello;
//! impl Handler for Hello {
//!     fn handle(req: Request) -> Response {
//!         Response::json(200, &serde_json::json!({"path": req.path}))
//!     }
//! }
//! wasmbase_sdk::export!(Hello);
//! ```
//!
//! What the function may touch is granted in its `function.toml`; calling a
//! capability that is not granted makes the platform refuse the component at
//! load time, naming the import.

#![allow(clippy::missing_safety_doc)]

#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "wit",
        world: "wasmbase:platform/function",
        pub_export_macro: true,
        export_macro_name: "__export_function",
        default_bindings_module: "wasmbase_sdk::bindings",
        generate_all,
    });

    /// The `cron-handler` export (world `wasmbase:platform/cron`).
    pub mod cron {
        wit_bindgen::generate!({
            path: "wit",
            world: "wasmbase:platform/cron",
            pub_export_macro: true,
            export_macro_name: "__export_cron",
            default_bindings_module: "wasmbase_sdk::bindings::cron",
        });
    }

    /// The `buffered-handler` export (world `wasmbase:platform/buffered`).
    pub mod buffered {
        wit_bindgen::generate!({
            path: "wit",
            world: "wasmbase:platform/buffered",
            pub_export_macro: true,
            export_macro_name: "__export_buffered",
            default_bindings_module: "wasmbase_sdk::bindings::buffered",
        });
    }
}

pub mod auth;
pub mod cron;
pub mod data;
pub mod env;
pub mod http;
pub mod log;
pub mod realtime;
pub mod sql;
pub mod storage;

pub use cron::{CronHandler, ScheduleEvent};
pub use http::{fetch, Handler, Request, Response};

/// The error of a platform call (data, sql): a stable `code`, a message, and
/// the HTTP status the data API would give it (it implements `Display` and
/// `std::error::Error`).
pub type Error = bindings::wasmbase::platform::types::Error;

/// Exports `$t` (a [`Handler`]) as the component's HTTP handler:
/// `wasmbase:platform/buffered-handler` (what Wasmbase calls: the whole request
/// in one call), and with the `wasi-http` feature also
/// `wasi:http/incoming-handler` (what any wasi:http host calls).
///
/// Without the feature the component imports none of wasi:http's types, and
/// each fresh instance is cheaper to create: half the imports to link
/// (measured in docs/FUNCTIONS.md, "Performance").
#[macro_export]
macro_rules! export {
    ($t:ty) => {
        #[doc(hidden)]
        pub struct __WasmbaseExport;

        $crate::__export_wasi_http!($t);

        impl $crate::bindings::buffered::exports::wasmbase::platform::buffered_handler::Guest
            for __WasmbaseExport
        {
            fn handle(
                request: $crate::bindings::buffered::exports::wasmbase::platform::buffered_handler::Request,
            ) -> $crate::bindings::buffered::exports::wasmbase::platform::buffered_handler::Response {
                $crate::http::serve_buffered::<$t>(request)
            }
        }

        $crate::bindings::buffered::__export_buffered!(__WasmbaseExport with_types_in $crate::bindings::buffered);
    };
}

/// Exports `$t` (a [`CronHandler`]) as the component's
/// `wasmbase:platform/cron-handler`: what the `[[cron]]` entries of its
/// `function.toml` call. Use it next to [`export!`] (a function with both an
/// HTTP entry point and schedules) or alone (a function that only runs on a
/// schedule).
#[macro_export]
macro_rules! export_cron {
    ($t:ty) => {
        #[doc(hidden)]
        pub struct __WasmbaseCronExport;

        impl $crate::bindings::cron::exports::wasmbase::platform::cron_handler::Guest
            for __WasmbaseCronExport
        {
            fn on_schedule(
                event: $crate::bindings::cron::exports::wasmbase::platform::cron_handler::ScheduleEvent,
            ) -> Result<(), String> {
                <$t as $crate::CronHandler>::on_schedule($crate::cron::event(event))
            }
        }

        $crate::bindings::cron::__export_cron!(__WasmbaseCronExport with_types_in $crate::bindings::cron);
    };
}

/// The `wasi:http/incoming-handler` half of [`export!`] (feature `wasi-http`).
#[cfg(feature = "wasi-http")]
#[doc(hidden)]
#[macro_export]
macro_rules! __export_wasi_http {
    ($t:ty) => {
        impl $crate::bindings::exports::wasi::http::incoming_handler::Guest for __WasmbaseExport {
            fn handle(
                request: $crate::bindings::wasi::http::types::IncomingRequest,
                out: $crate::bindings::wasi::http::types::ResponseOutparam,
            ) {
                $crate::http::serve::<$t>(request, out)
            }
        }

        $crate::bindings::__export_function!(__WasmbaseExport with_types_in $crate::bindings);
    };
}

/// Without the `wasi-http` feature, [`export!`] exports only the one-call handler.
#[cfg(not(feature = "wasi-http"))]
#[doc(hidden)]
#[macro_export]
macro_rules! __export_wasi_http {
    ($t:ty) => {};
}
