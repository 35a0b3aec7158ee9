//! Responds `{"message", "received": <posted JSON>, "user": <sub or null>}`.

use serde_json::{json, Value};
use wasmbase_sdk::{auth, info, Handler, Request, Response};

struct Hello;

impl Handler for Hello {
    fn handle(req: Request) -> Response {
        let received: Value = if req.body.is_empty() {
            Value::Null
        } else {
            match req.json() {
                Ok(v) => v,
                Err(e) => return Response::json(400, &json!({"error": format!("invalid JSON: {e}")})),
            }
        };
        let user = auth::user();
        info!("hello from {}", user.role);
        Response::json(
            200,
            &json!({
                "message": "Hello from Wasmbase!",
                "received": received,
                "user": user.user_id,
            }),
        )
    }
}

wasmbase_sdk::export!(Hello);
