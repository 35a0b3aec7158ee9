//! Broadcast to realtime channels (needs a `realtime` grant in
//! `function.toml`, e.g. `realtime = ["room:*"]`). The message reaches the
//! channel's subscribers on every node, as one sent with
//! `channel.send({type: 'broadcast', ...})` or `realtime.send(...)` from the
//! database would; a topic outside the grants answers 403 `AccessDenied`.
//!
//! ```ignore
//! use wasmbase_sdk::realtime;
//! realtime::broadcast("room:42", "message", &serde_json::json!({"text": "hi"}))?;
//! // Only to subscribers the SELECT policies on realtime.messages allow:
//! realtime::broadcast_private("team:7", "alert", &serde_json::json!({"level": 2}))?;
//! ```

use crate::bindings::wasmbase::platform::realtime as wit;
use crate::Error;

/// Sends `payload` as `event` on the public channel `topic`.
pub fn broadcast(topic: &str, event: &str, payload: &serde_json::Value) -> Result<(), Error> {
    wit::broadcast(topic, event, &payload.to_string(), false)
}

/// Sends `payload` as `event` on the private channel `topic`: delivered to
/// the subscribers its policies allow, and kept for broadcast replay.
pub fn broadcast_private(
    topic: &str,
    event: &str,
    payload: &serde_json::Value,
) -> Result<(), Error> {
    wit::broadcast(topic, event, &payload.to_string(), true)
}
