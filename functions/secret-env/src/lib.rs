//! Shows that only granted variables reach the guest: `GREETING_SECRET` is
//! granted, `NOT_GRANTED` is not (even when the host has it).

use serde_json::json;
use wasmbase_sdk::{env, Handler, Request, Response};

struct SecretEnv;

impl Handler for SecretEnv {
    fn handle(_req: Request) -> Response {
        Response::json(
            200,
            &json!({
                "granted_present": env::get("GREETING_SECRET").is_some(),
                "granted_length": env::get("GREETING_SECRET").map(|s| s.len()),
                "ungranted_present": env::get("NOT_GRANTED").is_some(),
                "visible": std::env::vars().map(|(k, _)| k).collect::<Vec<_>>(),
            }),
        )
    }
}

wasmbase_sdk::export!(SecretEnv);
