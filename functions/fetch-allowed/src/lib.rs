//! POST `{"url": "..."}`: fetches it and returns the status and body, or the
//! error the host gave (an ungranted host is refused by the platform).

use serde_json::json;
use wasmbase_sdk::{fetch, Handler, Request, Response};

struct FetchAllowed;

impl Handler for FetchAllowed {
    fn handle(req: Request) -> Response {
        let url = req
            .json::<serde_json::Value>()
            .ok()
            .and_then(|v| v["url"].as_str().map(str::to_string))
            .unwrap_or_default();
        match fetch(Request::new("GET", &url)) {
            Ok(r) => Response::json(200, &json!({"status": r.status, "body": String::from_utf8_lossy(&r.body)})),
            Err(e) => Response::json(502, &json!({"error": e})),
        }
    }
}

wasmbase_sdk::export!(FetchAllowed);
