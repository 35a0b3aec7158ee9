//! POST `{"url": "...", "body": "..."}`: fetches the URL (a POST carrying
//! `body` when one is given) and returns the status and body, or the error the
//! host gave (an ungranted host is refused by the platform).

use serde_json::json;
use wasmbase_sdk::{fetch, Handler, Request, Response};

struct FetchAllowed;

impl Handler for FetchAllowed {
    fn handle(req: Request) -> Response {
        let input = req.json::<serde_json::Value>().unwrap_or_default();
        let url = input["url"].as_str().unwrap_or_default();
        let out = match input["body"].as_str() {
            Some(body) => Request::new("POST", url).with_body(body),
            None => Request::new("GET", url),
        };
        match fetch(out) {
            Ok(r) => Response::json(200, &json!({"status": r.status, "body": String::from_utf8_lossy(&r.body)})),
            Err(e) => Response::json(502, &json!({"error": e})),
        }
    }
}

wasmbase_sdk::export!(FetchAllowed);
