//! The platform's one-call way into a function: `wasmbase:platform/buffered-handler`,
//! which `wasmbase-sdk` components export (alone, or with the SDK's `wasi-http`
//! feature next to `wasi:http/incoming-handler`).
//!
//! Why: an SDK function reads its whole request and builds its whole response
//! anyway. Through wasi:http that is about sixteen host calls and as many
//! resources per request, and a profile of `/fn/hello` put a fifth of the
//! server's CPU in those calls. Here the host reads the body (within the
//! server's body limit), lowers the request once, and lifts the response once.
//! Components without this export (any other wasi:http tooling) are called
//! through wasi:http exactly as before; a response goes to hyper through the
//! same channel either way, so admission, limits, timeouts, failures and logs
//! are shared (`invoke`). Exporting only this handler also halves an SDK
//! component's imports (none of wasi:http's types), and with them the work of
//! linking each fresh instance.

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use wasmtime_wasi_http::p2::bindings::http::types::ErrorCode;
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;

/// Generated bindings of world `wasmbase:platform/buffered` (the export only).
pub mod bindings {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "wasmbase:platform/buffered",
        exports: { default: async },
    });
}

pub use bindings::exports::wasmbase::platform::buffered_handler::{Request, Response};
pub use bindings::{Buffered, BufferedPre};

/// The guest's view of `parts` and its already-read `body`.
pub fn request(parts: &http::request::Parts, body: Bytes) -> Request {
    Request {
        method: parts.method.as_str().to_string(),
        path_with_query: parts
            .uri
            .path_and_query()
            .map_or_else(|| "/".to_string(), |p| p.as_str().to_string()),
        headers: parts
            .headers
            .iter()
            .map(|(k, v)| (k.as_str().to_string(), v.as_bytes().to_vec()))
            .collect(),
        body: body.into(),
    }
}

/// The guest's response as hyper sends it. Headers wasi:http would refuse
/// (reserved for the connection, or not valid HTTP) are dropped, as the SDK
/// drops them there; `content-length` comes from the body itself. A status
/// HTTP cannot carry is the function's error (502 `function_error`).
pub fn response(r: Response) -> Result<hyper::Response<HyperOutgoingBody>, ErrorCode> {
    let status = http::StatusCode::from_u16(r.status)
        .map_err(|_| ErrorCode::InternalError(Some(format!("invalid status code {}", r.status))))?;
    let mut out = hyper::Response::builder().status(status);
    if let Some(headers) = out.headers_mut() {
        for (name, value) in r.headers {
            let (Ok(name), Ok(value)) = (
                http::HeaderName::from_bytes(name.as_bytes()),
                http::HeaderValue::from_bytes(&value),
            ) else {
                continue;
            };
            if name == http::header::CONTENT_LENGTH
                || wasmtime_wasi_http::DEFAULT_FORBIDDEN_HEADERS.contains(&name)
            {
                continue;
            }
            headers.append(name, value);
        }
    }
    let body = Full::new(Bytes::from(r.body))
        .map_err(|never: std::convert::Infallible| -> wasmtime_wasi_http::Error { match never {} })
        .boxed_unsync();
    out.body(body)
        .map_err(|e| ErrorCode::InternalError(Some(e.to_string())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserved_and_invalid_headers_are_dropped_and_the_length_is_the_bodys() {
        let r = response(Response {
            status: 201,
            headers: vec![
                ("x-kept".into(), b"yes".to_vec()),
                ("connection".into(), b"close".to_vec()),
                ("transfer-encoding".into(), b"chunked".to_vec()),
                ("content-length".into(), b"999".to_vec()),
                ("bad name".into(), b"v".to_vec()),
                ("x-bad-value".into(), b"a\nb".to_vec()),
            ],
            body: b"hello".to_vec(),
        })
        .unwrap();
        assert_eq!(r.status(), 201);
        let names: Vec<_> = r.headers().keys().map(|k| k.as_str()).collect();
        assert_eq!(names, vec!["x-kept"]);
        assert_eq!(hyper::body::Body::size_hint(r.body()).exact(), Some(5));
    }

    #[test]
    fn a_status_http_cannot_carry_is_the_functions_error() {
        let e = response(Response {
            status: 42,
            headers: vec![],
            body: vec![],
        })
        .unwrap_err();
        assert!(matches!(e, ErrorCode::InternalError(Some(m)) if m.contains("42")));
    }
}
