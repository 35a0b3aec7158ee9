//! GET: the caller's todos. POST `{"task": "..."}`: adds one for the caller.
//! Runs as the caller (db = "caller"), so RLS applies and anon sees nothing.

use serde_json::json;
use wasmbase_sdk::{data, Handler, Request, Response};

struct Todos;

impl Handler for Todos {
    fn handle(req: Request) -> Response {
        let result = match req.method.as_str() {
            "POST" => {
                let body: serde_json::Value = match req.json() {
                    Ok(v) => v,
                    Err(e) => return Response::json(400, &json!({"error": e.to_string()})),
                };
                data::from("todos")
                    .insert(&json!({"task": body["task"]}))
                    .select("id,task,done")
                    .execute()
            }
            _ => data::from("todos").select("id,task,done").order("id", true).execute(),
        };
        match result {
            Ok(rows) => Response::new(if req.method == "POST" { 201 } else { 200 })
                .with_header("content-type", "application/json")
                .with_body(rows.json),
            Err(e) => Response::json(e.status, &json!({"code": e.code, "message": e.message})),
        }
    }
}

wasmbase_sdk::export!(Todos);
