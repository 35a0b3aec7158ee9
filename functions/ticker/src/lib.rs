//! A cron handler next to an HTTP entry point (docs/CRON.md).
//!
//! Each tick inserts `(run_id, attempt, name, payload)` into
//! `public.ticker_runs` when that table exists, so a retry of a tick is
//! recognisable by its run id. The payload can ask for a failure, to see
//! retries at work: `{"fail_before_attempt": 3}` fails attempts 1 and 2,
//! `{"panic": true}` traps; `{"lines": 3, "pause_ms": 300}` logs three lines
//! that far apart (to watch `wasmbase cron logs --follow`). `GET /fn/ticker`
//! answers the row count.

use serde_json::{json, Value};
use wasmbase_sdk::sql::{self, Value as Sql};
use wasmbase_sdk::{info, CronHandler, Handler, Request, Response, ScheduleEvent};

struct Ticker;

impl CronHandler for Ticker {
    fn on_schedule(event: ScheduleEvent) -> Result<(), String> {
        let payload: Value = event
            .payload_json()
            .transpose()
            .map_err(|e| format!("payload: {e}"))?
            .unwrap_or(Value::Null);
        info!("tick {} at {} (attempt {})", event.name, event.scheduled_at, event.attempt);
        if payload["panic"] == json!(true) {
            panic!("asked to panic");
        }
        let pause = std::time::Duration::from_millis(payload["pause_ms"].as_u64().unwrap_or(0));
        for i in 1..=payload["lines"].as_u64().unwrap_or(0) {
            std::thread::sleep(pause);
            info!("line {i}");
        }
        let record = sql::execute(
            "INSERT INTO public.ticker_runs (run_id, attempt, name, payload) VALUES ($1::uuid, $2, $3, $4)",
            &[
                Sql::Text(event.run_id.clone()),
                Sql::Int(i64::from(event.attempt)),
                Sql::Text(event.name.clone()),
                Sql::Json(payload.to_string()),
            ],
        );
        match record {
            Ok(_) => {}
            // No table: nothing to record, and nothing wrong.
            Err(e) if e.code == "42P01" => info!("public.ticker_runs does not exist; nothing recorded"),
            Err(e) => return Err(format!("recording the tick: {} ({})", e.message, e.code)),
        }
        match payload["fail_before_attempt"].as_u64() {
            Some(n) if u64::from(event.attempt) < n => Err(format!("failing attempt {} on purpose", event.attempt)),
            _ => Ok(()),
        }
    }
}

impl Handler for Ticker {
    fn handle(_req: Request) -> Response {
        match sql::query("SELECT count(*)::int8 FROM public.ticker_runs", &[]) {
            Ok(rows) => {
                let n = match rows.rows.first().and_then(|r| r.first()) {
                    Some(Sql::Int(n)) => *n,
                    _ => 0,
                };
                Response::json(200, &json!({"ticks": n}))
            }
            Err(e) => Response::json(e.status, &json!({"code": e.code, "message": e.message})),
        }
    }
}

wasmbase_sdk::export!(Ticker);
wasmbase_sdk::export_cron!(Ticker);
