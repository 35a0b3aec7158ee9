//! `{"total": n, "done": m}` over every user's todos (db = "service": raw SQL).

use serde_json::json;
use wasmbase_sdk::sql::{self, Value};
use wasmbase_sdk::{Handler, Request, Response};

struct Report;

impl Handler for Report {
    fn handle(_req: Request) -> Response {
        let q = "SELECT count(*)::int8 AS total, count(*) FILTER (WHERE done)::int8 AS done FROM public.todos WHERE $1";
        match sql::query(q, &[Value::Boolean(true)]) {
            Ok(rows) => {
                let int = |i: usize| match rows.rows.first().and_then(|r| r.get(i)) {
                    Some(Value::Int(n)) => *n,
                    _ => 0,
                };
                Response::json(200, &json!({"total": int(0), "done": int(1)}))
            }
            Err(e) => Response::json(e.status, &json!({"code": e.code, "message": e.message})),
        }
    }
}

wasmbase_sdk::export!(Report);
