//! The request envelope every route shares, as one middleware so the hot path pays
//! for one layer: request id (accept a valid `X-Request-Id`, else generate a UUID v4;
//! always echo), body-size check, request timeout, security headers, metrics and
//! the access log (which never prints headers or the query string, where keys and
//! tokens travel).

use super::error::ApiError;
use super::state::AppState;
use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::header::{HeaderName, HeaderValue, CONTENT_LENGTH};
use http::StatusCode;
use std::time::Instant;

tokio::task_local! {
    static REQUEST_ID: HeaderValue;
}

/// The id of the request being handled on this task, for error bodies and logs.
pub fn current_request_id() -> Option<String> {
    REQUEST_ID
        .try_with(|v| v.to_str().ok().map(str::to_string))
        .ok()
        .flatten()
}

static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Security headers set on every response unless the handler set its own.
const SECURITY_HEADERS: [(&str, &str); 4] = [
    ("x-content-type-options", "nosniff"),
    ("x-frame-options", "DENY"),
    ("referrer-policy", "no-referrer"),
    (
        "content-security-policy",
        "default-src 'none'; frame-ancestors 'none'",
    ),
];

/// Accepts ids of 1..=128 characters from a conservative set, so an id can go into
/// logs and headers unescaped.
fn valid_request_id(v: &HeaderValue) -> bool {
    let b = v.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || b"-_.:/+=@~".contains(c))
}

fn new_request_id() -> HeaderValue {
    let mut buf = uuid::Uuid::encode_buffer();
    let s = uuid::Uuid::new_v4().hyphenated().encode_lower(&mut buf);
    HeaderValue::from_str(s).expect("uuid is a valid header value")
}

/// Routes whose requests are not access-logged (probes would drown the log).
fn quiet(route: &str) -> bool {
    matches!(route, "/health" | "/ready" | "/metrics")
}

/// The envelope middleware; see the module doc.
pub async fn envelope(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let start = Instant::now();
    let matched = req.extensions().get::<MatchedPath>().cloned();
    let (id, bad_id) = match req.headers().get(&X_REQUEST_ID) {
        Some(v) if valid_request_id(v) => (v.clone(), false),
        Some(_) => (new_request_id(), true),
        None => (new_request_id(), false),
    };
    let method = req.method().clone();
    // Storage streams its bodies under its own limits (`storage.max_upload_bytes`,
    // the bucket's size limit, `storage.upload_idle_timeout_ms`): a 1 GiB upload
    // or download is neither too large nor too slow for the API.
    let streams = matched.as_ref().is_some_and(|m| {
        m.as_str().starts_with("/storage/v1/object/")
            || m.as_str().starts_with("/storage/v1/upload/")
    });
    let too_large = !streams
        && req
            .headers()
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            .is_some_and(|n| n > state.body_limit);

    let mut resp = REQUEST_ID
        .scope(id.clone(), async {
            if bad_id {
                return ApiError::bad_request(
                    "invalid_request_id",
                    "X-Request-Id must be 1-128 characters of letters, digits and -_.:/+=@~",
                )
                .into_response();
            }
            if too_large {
                return ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "payload_too_large",
                    format!("Request body is larger than {} bytes", state.body_limit),
                )
                .into_response();
            }
            if streams {
                return next.run(req).await;
            }
            match tokio::time::timeout(state.request_timeout, next.run(req)).await {
                Ok(r) => r,
                Err(_) => ApiError::new(
                    StatusCode::GATEWAY_TIMEOUT,
                    "request_timeout",
                    "The request took too long",
                )
                .into_response(),
            }
        })
        .await;

    let headers = resp.headers_mut();
    headers.insert(X_REQUEST_ID.clone(), id.clone());
    for (k, v) in SECURITY_HEADERS {
        if !headers.contains_key(k) {
            headers.insert(k, HeaderValue::from_static(v));
        }
    }
    let route = matched.as_ref().map_or("unmatched", MatchedPath::as_str);
    let status = resp.status().as_u16();
    let elapsed = start.elapsed();
    state.metrics.observe(route, status, elapsed);
    if !quiet(route) {
        tracing::info!(
            target: "wasmbase::access",
            request_id = id.to_str().unwrap_or(""),
            method = %method,
            route = %route,
            status,
            ms = elapsed.as_secs_f64() * 1000.0,
        );
    }
    resp
}
