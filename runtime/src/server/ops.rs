//! `/health` (process alive), `/ready` (database reachable through the request
//! path, migrations applied, keys loaded) and `/metrics` (Prometheus text).

use super::caller::Keyed;
use super::state::AppState;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use http::{header, StatusCode};
use std::time::Duration;

const HEALTH: &str = concat!(
    r#"{"status":"ok","version":""#,
    env!("CARGO_PKG_VERSION"),
    r#""}"#
);

/// Liveness: answers as long as the process serves HTTP.
pub async fn health(_k: Keyed) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], HEALTH).into_response()
}

/// Readiness: 200 only when the request pool can reach the database and startup
/// finished; load balancers should route on this.
pub async fn ready(State(st): State<AppState>, _k: Keyed) -> Response {
    let json = |code: StatusCode, body: &'static str| {
        (code, [(header::CONTENT_TYPE, "application/json")], body).into_response()
    };
    if !st.is_ready() {
        return json(
            StatusCode::SERVICE_UNAVAILABLE,
            r#"{"status":"starting","database":false}"#,
        );
    }
    let ping = async {
        let c = st.pool.get().await.ok()?;
        c.simple_query("SELECT 1").await.ok()
    };
    match tokio::time::timeout(Duration::from_secs(2), ping).await {
        Ok(Some(_)) => json(StatusCode::OK, r#"{"status":"ready","database":true}"#),
        _ => json(
            StatusCode::SERVICE_UNAVAILABLE,
            r#"{"status":"unavailable","database":false}"#,
        ),
    }
}

/// Prometheus metrics.
pub async fn metrics(State(st): State<AppState>, _k: Keyed) -> Response {
    let pool = st.pool.status();
    let text = st.metrics.render(&[
        (
            "wasmbase_db_pool_size",
            "Open connections in the request pool.",
            pool.size as f64,
        ),
        (
            "wasmbase_db_pool_available",
            "Idle connections in the request pool.",
            pool.available as f64,
        ),
        (
            "wasmbase_db_pool_waiting",
            "Requests waiting for a connection.",
            pool.waiting as f64,
        ),
        (
            "wasmbase_db_pool_max",
            "Request pool size limit.",
            pool.max_size as f64,
        ),
        (
            "wasmbase_api_keys_version",
            "Reloads of the API key cache (increments on every key change).",
            st.gate.keys().version() as f64,
        ),
        (
            "wasmbase_realtime_rls_queries_total",
            "postgres_changes visibility round trips (one per table per batch of changes, for all its subscribers).",
            st.realtime.changes.rls_queries.load(std::sync::atomic::Ordering::Relaxed) as f64,
        ),
        (
            "wasmbase_realtime_rls_inline_total",
            "postgres_changes visibility checks of a batch decided without a round trip (policies of the owner shape, docs/REALTIME.md).",
            st.realtime.changes.rls_inline.load(std::sync::atomic::Ordering::Relaxed) as f64,
        ),
        (
            "wasmbase_realtime_changes_sent_total",
            "postgres_changes events queued to sockets.",
            st.realtime.changes.events_out.load(std::sync::atomic::Ordering::Relaxed) as f64,
        ),
        (
            "wasmbase_realtime_channels",
            "Channels joined on this node.",
            st.realtime.counts().iter().map(|(_, n)| *n).sum::<usize>() as f64,
        ),
        (
            "wasmbase_realtime_connections",
            "WebSocket connections open on this node.",
            st.realtime.connections() as f64,
        ),
        (
            "wasmbase_realtime_messages_in_total",
            "Frames received from realtime clients.",
            st.realtime.messages_in.load(std::sync::atomic::Ordering::Relaxed) as f64,
        ),
        (
            "wasmbase_realtime_messages_out_total",
            "Broadcast and presence frames queued to realtime clients.",
            st.realtime.messages_out.load(std::sync::atomic::Ordering::Relaxed) as f64,
        ),
        (
            "wasmbase_realtime_changes_lag_seconds",
            "From the last delivered change's transaction to its delivery.",
            st.realtime.changes.lag_ms.load(std::sync::atomic::Ordering::Relaxed) as f64 / 1000.0,
        ),
        (
            "wasmbase_schema_version",
            "Schema-cache loads (increments after every DDL reload).",
            st.schema.version() as f64,
        ),
        (
            "wasmbase_ready",
            "1 when the server is ready.",
            if st.is_ready() { 1.0 } else { 0.0 },
        ),
    ]);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}
