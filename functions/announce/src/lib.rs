//! Broadcasts to realtime rooms through the `realtime` interface (see
//! function.toml): `POST /fn/announce` with
//! `{"topic": "room:42", "event": "message", "payload": {...}, "private": false}`.
//! The grant covers `room:*`; any other topic is refused by the platform
//! (403 `AccessDenied`), which this function passes on with its code.

use serde_json::{json, Value};
use wasmbase_sdk::{realtime, Handler, Request, Response};

struct Announce;

impl Handler for Announce {
    fn handle(req: Request) -> Response {
        let Ok(body) = req.json::<Value>() else {
            return Response::json(
                400,
                &json!({"code": "InvalidJSON", "message": "send a JSON object"}),
            );
        };
        let topic = body["topic"].as_str().unwrap_or_default();
        let event = body["event"].as_str().unwrap_or("message");
        let payload = body.get("payload").cloned().unwrap_or(json!({}));
        let sent = if body["private"] == true {
            realtime::broadcast_private(topic, event, &payload)
        } else {
            realtime::broadcast(topic, event, &payload)
        };
        match sent {
            Ok(()) => Response::json(202, &json!({"sent": topic})),
            Err(e) => Response::json(e.status, &json!({"code": e.code, "message": e.message})),
        }
    }
}

wasmbase_sdk::export!(Announce);
