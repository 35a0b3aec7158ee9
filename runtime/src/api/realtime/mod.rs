//! `/realtime/v1`: Supabase Realtime's protocol, so `supabase.channel(...)`
//! works unchanged (docs/REALTIME.md). routes (this file: the WebSocket
//! upgrade and the HTTP broadcast API) → parse (`frame`) → the channel's rule
//! (`socket`) → fan-out on this node and, through PostgreSQL, the others
//! (`hub`).
//!
//! Built: both protocol versions, heartbeats, joins with tokens and their
//! expiry, broadcast (self, ack, binary payloads, HTTP), presence shared by
//! all nodes, postgres_changes under each subscriber's RLS (`changes`),
//! private channels authorized by the policies on `realtime.messages`
//! (`authz`), broadcast from the database (`realtime.send`, read back by
//! `hub`), catch-up after reconnects (broadcast replay in `hub`,
//! postgres_changes positions in `position`).

mod authz;
mod changes;
mod frame;
mod hub;
mod policy;
mod position;
mod socket;

pub use changes::{prune as prune_changes, Changes, CHANNEL as CHANGES_CHANNEL};
pub use hub::{Hub, CHANNEL, MESSAGES_CHANNEL};

use crate::server::caller::Caller;
use crate::server::error::ApiError;
use crate::server::state::AppState;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State, WebSocketUpgrade};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use frame::{Broadcast, Payload, Vsn};
use http::{HeaderMap, StatusCode};
use serde_json::{json, Value};
use std::sync::Arc;

/// Per-socket limits, from `[realtime]`.
#[derive(Debug, Clone, Copy)]
pub struct RealtimeLimits {
    /// Channels one socket may join.
    pub max_channels_per_client: usize,
    /// Largest broadcast or presence payload.
    pub max_payload_bytes: usize,
    /// Joins per second per socket.
    pub max_joins_per_second: u32,
    /// Broadcast and presence messages per second per socket.
    pub max_events_per_second: u32,
}

/// Largest WebSocket message (as Supabase's `max_frame_size`).
const MAX_MESSAGE: usize = 5_000_000;

/// Bytes read from a socket at a time. Every open socket keeps a buffer this
/// size for its life, so it is sized for the frames realtime-js sends most
/// (heartbeats, joins, small broadcasts: well under 1 KiB); a larger frame
/// grows the buffer while it is read.
pub const READ_BUFFER: usize = 1024;

/// Bytes of queued frames a socket's writer gathers into one write. The
/// buffer grows to this only while a burst is written (an idle socket holds
/// what its largest frame needed).
pub const WRITE_BUFFER: usize = 8192;

/// Routes of this module.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/realtime/v1/websocket", get(websocket))
        .route("/realtime/v1/api/broadcast", post(broadcast_batch))
        .route(
            "/realtime/v1/api/broadcast/{topic}/events/{event}",
            post(broadcast_one),
        )
        .route("/admin/v1/realtime", get(admin_list))
}

/// `GET /admin/v1/realtime` (secret key): every node's open connections, and
/// each topic's joined channels over all nodes (as of each node's last
/// heartbeat, at most a third of `realtime.presence_timeout_secs` old) with
/// its presences.
async fn admin_list(
    State(st): State<AppState>,
    _: crate::api::admin::Service,
) -> Result<Response, ApiError> {
    let c = st
        .system
        .get()
        .await
        .map_err(|e| ApiError::internal(format!("{e}")))?;
    let row = c
        .query_one(
            "WITH c AS (SELECT key AS topic, sum(value::int) AS subscribers \
                 FROM wasmbase.realtime_nodes, jsonb_each_text(channels) GROUP BY key), \
               p AS (SELECT topic, count(*) AS presences FROM wasmbase.realtime_presence GROUP BY topic) \
             SELECT json_build_object( \
               'nodes', (SELECT coalesce(json_agg(json_build_object('node', node, 'seen_at', seen_at, \
                   'connections', connections) ORDER BY node), '[]') FROM wasmbase.realtime_nodes), \
               'channels', (SELECT coalesce(json_agg(json_build_object( \
                   'topic', coalesce(c.topic, p.topic), 'subscribers', coalesce(c.subscribers, 0), \
                   'presences', coalesce(p.presences, 0)) ORDER BY coalesce(c.topic, p.topic)), '[]') \
                 FROM c FULL JOIN p ON p.topic = c.topic))::text",
            &[],
        )
        .await
        .map_err(|e| ApiError::internal(wasmbase_host_api::db::describe(&e)))?;
    Ok((
        [(http::header::CONTENT_TYPE, "application/json")],
        row.get::<_, String>(0),
    )
        .into_response())
}

fn query_param(q: Option<&str>, key: &str) -> Option<String> {
    url::form_urlencoded::parse(q?.as_bytes())
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.into_owned())
}

/// `GET /realtime/v1/websocket?apikey=...&vsn=...`: the key (publishable only:
/// a secret key in a URL is refused by the gate) and the protocol version are
/// checked before the upgrade.
async fn websocket(
    State(st): State<AppState>,
    Caller(key): Caller,
    RawQuery(q): RawQuery,
    ws: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    let vsn = Vsn::parse(query_param(q.as_deref(), "vsn").as_deref())
        .ok_or_else(|| ApiError::bad_request("unsupported_vsn", "vsn must be 1.0.0 or 2.0.0"))?;
    let rc = &st.config.realtime;
    let limits = RealtimeLimits {
        max_channels_per_client: rc.max_channels_per_client,
        max_payload_bytes: rc.max_payload_bytes,
        max_joins_per_second: rc.max_joins_per_second,
        max_events_per_second: rc.max_events_per_second,
    };
    let hub = st.realtime.clone();
    // Taken before the upgrade, so a flood of upgrades cannot pass the cap.
    let Some(slot) = hub.connect(rc.max_connections) else {
        return Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_connections",
            "Too many connected users",
        ));
    };
    Ok(ws
        .max_message_size(MAX_MESSAGE)
        .max_frame_size(MAX_MESSAGE)
        // tungstenite's defaults hold 128 KiB per buffer per connection from
        // the start; an idle socket needs a fraction of that (the buffers
        // grow for a large message).
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(WRITE_BUFFER)
        .on_upgrade(move |socket| async move {
            let _slot = slot;
            socket::serve(socket, st, hub, limits, vsn, key).await
        })
        .into_response())
}

/// A 422 in realtime's shape.
fn invalid(field: &str, message: &str) -> Response {
    (
        StatusCode::UNPROCESSABLE_ENTITY,
        axum::Json(json!({ "errors": { field: [message] } })),
    )
        .into_response()
}

/// `POST /realtime/v1/api/broadcast` `{messages: [{topic, event, payload,
/// private}]}` (supabase-js's `send()` when the channel is not joined):
/// 202 and an empty body. A private message needs the caller's INSERT
/// policy on `realtime.messages` (asked once per topic); one refused is
/// skipped, as Supabase does.
async fn broadcast_batch(State(st): State<AppState>, Caller(p): Caller, body: Bytes) -> Response {
    let Ok(v) = serde_json::from_slice::<Value>(&body) else {
        return invalid("body", "must be JSON");
    };
    let Some(messages) = v["messages"].as_array() else {
        return invalid("messages", "can't be blank");
    };
    let max = st.config.realtime.max_payload_bytes;
    let mut out = Vec::with_capacity(messages.len());
    for m in messages {
        let (Some(topic), Some(event)) = (m["topic"].as_str(), m["event"].as_str()) else {
            return invalid("messages", "each message needs a topic and an event");
        };
        let payload = match m.get("payload") {
            Some(p @ Value::Object(_)) => p.to_string(),
            _ => return invalid("messages", "payload must be a JSON object"),
        };
        if payload.len() > max {
            return invalid("messages", "Payload size exceeds tenant limit");
        }
        let private = m["private"].as_bool() == Some(true);
        out.push((topic.to_string(), private, event.to_string(), payload));
    }
    let timeout = st.statement_timeout(&p);
    let mut allowed: std::collections::HashMap<String, bool> = Default::default();
    for (topic, private, event, payload) in out {
        if private {
            let ok = match allowed.get(&topic) {
                Some(ok) => *ok,
                None => {
                    let ok = authz::can_write(&st.pool, &p, timeout, &topic, authz::Ext::Broadcast)
                        .await
                        .unwrap_or(false);
                    allowed.insert(topic.clone(), ok);
                    ok
                }
            };
            if !ok {
                continue;
            }
        }
        let topic = hub::key(&format!("realtime:{topic}"), private);
        let b = Broadcast {
            event,
            payload: Payload::Json(Arc::from(payload)),
        };
        st.realtime.broadcast(&topic, b, None, false).await;
    }
    StatusCode::ACCEPTED.into_response()
}

/// `POST /realtime/v1/api/broadcast/:topic/events/:event` (`channel.httpSend`):
/// the body is the payload, JSON or `application/octet-stream`; 202.
async fn broadcast_one(
    State(st): State<AppState>,
    Caller(p): Caller,
    Path((topic, event)): Path<(String, String)>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    // A private message needs the caller's INSERT policy (Supabase's answers).
    let private = query_param(q.as_deref(), "private").as_deref() == Some("true");
    if private {
        let timeout = st.statement_timeout(&p);
        let refusal =
            match authz::can_write(&st.pool, &p, timeout, &topic, authz::Ext::Broadcast).await {
                Ok(true) => None,
                Ok(false) => Some((StatusCode::FORBIDDEN, "Unauthorized")),
                Err(authz::AuthzError::Unavailable) => {
                    Some((StatusCode::SERVICE_UNAVAILABLE, "Database unavailable"))
                }
                Err(_) => Some((StatusCode::UNPROCESSABLE_ENTITY, "RLS policy error")),
            };
        if let Some((status, message)) = refusal {
            return (status, axum::Json(json!({ "message": message }))).into_response();
        }
    }
    if body.len() > st.config.realtime.max_payload_bytes {
        return invalid("payload", "Payload size exceeds tenant limit");
    }
    let ctype = headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json");
    let payload = if ctype.starts_with("application/octet-stream") {
        Payload::Binary(body)
    } else if ctype.starts_with("application/json") {
        match std::str::from_utf8(&body)
            .ok()
            .filter(|s| serde_json::from_str::<Value>(s).is_ok_and(|v| !v.is_null()))
        {
            Some(s) => Payload::Json(Arc::from(s)),
            None => return invalid("payload", "must be JSON"),
        }
    } else {
        return (
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            axum::Json(json!({"error": "Unsupported Media Type. Use application/json or application/octet-stream"})),
        )
            .into_response();
    };
    st.realtime
        .broadcast(
            &hub::key(&format!("realtime:{topic}"), private),
            Broadcast { event, payload },
            None,
            false,
        )
        .await;
    StatusCode::ACCEPTED.into_response()
}
