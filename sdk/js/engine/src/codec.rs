//! Byte and value conversions between JS and the platform: UTF-8 with
//! WHATWG's decoder rules, base64 for `atob`/`btoa`, and the JSON shapes the
//! `wasmbase` module sends for data and SQL calls.

use rquickjs::{Array, Ctx, Result, TypedArray, Value};
use serde_json::Value as Json;
use wasmbase_sdk::bindings::wasmbase::platform::data::{
    Action, Filter, OnConflict, Order, Request,
};
use wasmbase_sdk::bindings::wasmbase::platform::sql::{self, Statement, Value as SqlValue};
use wasmbase_sdk::bindings::wasmbase::platform::types::Error as PlatformError;

/// Decodes UTF-8 as `TextDecoder` does: invalid sequences become U+FFFD (or
/// an error when `fatal`); with `stream`, an incomplete sequence at the end is
/// held back (its length is returned) for the next chunk.
pub fn decode_utf8(
    b: &[u8],
    fatal: bool,
    stream: bool,
) -> std::result::Result<(String, usize), &'static str> {
    let held = if stream { incomplete_tail(b) } else { 0 };
    let b = &b[..b.len() - held];
    match std::str::from_utf8(b) {
        Ok(s) => Ok((s.to_string(), held)),
        Err(_) if fatal => Err("The encoded data was not valid for encoding utf-8"),
        Err(_) => Ok((String::from_utf8_lossy(b).into_owned(), held)),
    }
}

/// Length of a truncated (but so far valid) multi-byte sequence at the end.
fn incomplete_tail(b: &[u8]) -> usize {
    for back in 1..=3.min(b.len()) {
        let c = b[b.len() - back];
        if c & 0xC0 == 0x80 {
            continue; // continuation byte: look further back
        }
        let need = match c {
            0xC2..=0xDF => 2,
            0xE0..=0xEF => 3,
            0xF0..=0xF4 => 4,
            _ => return 0,
        };
        return if need > back { back } else { 0 };
    }
    0
}

/// Standard base64; decoding takes padding or none, as `atob` does.
const B64: base64::engine::GeneralPurpose = base64::engine::GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    base64::engine::GeneralPurposeConfig::new()
        .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent)
        .with_decode_allow_trailing_bits(true),
);

/// Standard base64 with padding.
pub fn base64_encode(b: &[u8]) -> String {
    use base64::Engine;
    B64.encode(b)
}

/// `atob`'s forgiving base64 decode (ASCII whitespace ignored, padding
/// optional); None when the input is not base64.
pub fn base64_decode(s: &str) -> Option<Vec<u8>> {
    use base64::Engine;
    let clean: Vec<u8> = s
        .bytes()
        .filter(|c| !matches!(c, b' ' | b'\t' | b'\n' | b'\x0c' | b'\r'))
        .collect();
    B64.decode(clean).ok()
}

/// The JSON of a platform error, as the `wasmbase` module's `error` field.
pub fn error_json(e: &PlatformError) -> String {
    serde_json::json!({
        "code": e.code, "message": e.message, "details": e.details, "hint": e.hint, "status": e.status,
    })
    .to_string()
}

/// The data request the JS query builder sent as JSON.
pub fn data_request(text: &str) -> std::result::Result<Request, String> {
    let j: Json = serde_json::from_str(text).map_err(|e| e.to_string())?;
    let s = |k: &str| j.get(k).and_then(Json::as_str).map(str::to_string);
    let action = match j.get("action").and_then(Json::as_str).unwrap_or("select") {
        "select" => Action::Select,
        "insert" => Action::Insert,
        "update" => Action::Update,
        "delete" => Action::Delete,
        other => return Err(format!("unknown action {other}")),
    };
    let list = |k: &str| {
        j.get(k)
            .and_then(Json::as_array)
            .cloned()
            .unwrap_or_default()
    };
    let filters = list("filters")
        .iter()
        .map(|f| Filter {
            column: f[0].as_str().unwrap_or_default().to_string(),
            condition: f[1].as_str().unwrap_or_default().to_string(),
        })
        .collect();
    let order = list("order")
        .iter()
        .map(|o| Order {
            column: o[0].as_str().unwrap_or_default().to_string(),
            descending: o[1].as_bool().unwrap_or(false),
            nulls_first: o[2].as_bool(),
        })
        .collect();
    Ok(Request {
        schema: s("schema"),
        table: s("table").ok_or("a table is required")?,
        action,
        columns: s("columns"),
        filters,
        order,
        limit: j.get("limit").and_then(Json::as_u64),
        offset: j.get("offset").and_then(Json::as_u64),
        count: j.get("count").and_then(Json::as_bool).unwrap_or(false),
        body: j
            .get("body")
            .filter(|b| !b.is_null())
            .map(|b| b.to_string()),
        conflict: match j.get("conflict").and_then(Json::as_str) {
            Some("merge") => OnConflict::Merge,
            Some("ignore") => OnConflict::Ignore,
            _ => OnConflict::Error,
        },
        conflict_columns: list("conflictColumns")
            .iter()
            .filter_map(|c| c.as_str().map(str::to_string))
            .collect(),
        returning: j.get("returning").and_then(Json::as_bool).unwrap_or(false),
    })
}

/// A parameter the `wasmbase` module tagged as `[type, value]`.
fn sql_param(p: &Json) -> std::result::Result<SqlValue, String> {
    let tag = p[0].as_str().unwrap_or_default();
    let v = &p[1];
    Ok(match tag {
        "null" => SqlValue::Null,
        "bool" => SqlValue::Boolean(v.as_bool().unwrap_or(false)),
        // A BigInt arrives as its decimal text.
        "int" => SqlValue::Int(
            v.as_i64()
                .or_else(|| v.as_str().and_then(|t| t.parse().ok()))
                .ok_or("integer out of range")?,
        ),
        "float" => SqlValue::Float(v.as_f64().unwrap_or(f64::NAN)),
        "text" => SqlValue::Text(v.as_str().unwrap_or_default().to_string()),
        "json" => SqlValue::Json(v.to_string()),
        "timestamp" => SqlValue::Timestamp(v.as_str().unwrap_or_default().to_string()),
        "bytes" => {
            SqlValue::Bytes(base64_decode(v.as_str().unwrap_or_default()).ok_or("bad bytes")?)
        }
        other => return Err(format!("unsupported parameter type {other}")),
    })
}

fn sql_params(text: &str) -> std::result::Result<Vec<SqlValue>, String> {
    let j: Json = serde_json::from_str(text).map_err(|e| e.to_string())?;
    j.as_array()
        .ok_or("parameters must be an array")?
        .iter()
        .map(sql_param)
        .collect()
}

fn to_js<'js>(ctx: &Ctx<'js>, v: SqlValue) -> Result<Value<'js>> {
    use rquickjs::IntoJs;
    Ok(match v {
        SqlValue::Null => Value::new_null(ctx.clone()),
        SqlValue::Boolean(b) => b.into_js(ctx)?,
        SqlValue::Int(i) => (i as f64).into_js(ctx)?,
        SqlValue::Float(f) => f.into_js(ctx)?,
        SqlValue::Text(s) | SqlValue::Uuid(s) | SqlValue::Timestamp(s) => s.into_js(ctx)?,
        SqlValue::Json(s) => ctx.json_parse(s)?,
        SqlValue::Bytes(b) => TypedArray::<u8>::new(ctx.clone(), b)?.into_value(),
    })
}

fn rows_to_js<'js>(ctx: &Ctx<'js>, rows: sql::Rows) -> Result<Array<'js>> {
    let out = Array::new(ctx.clone())?;
    let cols = Array::new(ctx.clone())?;
    for (i, c) in rows.columns.iter().enumerate() {
        cols.set(i, c.as_str())?;
    }
    let list = Array::new(ctx.clone())?;
    for (i, row) in rows.rows.into_iter().enumerate() {
        let r = Array::new(ctx.clone())?;
        for (j, v) in row.into_iter().enumerate() {
            r.set(j, to_js(ctx, v)?)?;
        }
        list.set(i, r)?;
    }
    out.set(0, cols)?;
    out.set(1, list)?;
    Ok(out)
}

/// `[true, value]`, or `[false, errorJson]`: what every host call of the
/// `wasmbase` module answers (the module shapes it as `{ data, error }`).
pub fn outcome<'js>(
    ctx: &Ctx<'js>,
    r: std::result::Result<Value<'js>, PlatformError>,
) -> Result<Array<'js>> {
    let out = Array::new(ctx.clone())?;
    match r {
        Ok(v) => {
            out.set(0, true)?;
            out.set(1, v)?;
        }
        Err(e) => {
            out.set(0, false)?;
            out.set(1, error_json(&e))?;
        }
    }
    Ok(out)
}

/// A request the `wasmbase` module could not have sent (400 `WB400`).
pub fn bad_request(message: String) -> PlatformError {
    PlatformError {
        code: "WB400".into(),
        message,
        details: None,
        hint: None,
        status: 400,
    }
}

fn statements(params: &str) -> std::result::Result<Vec<Statement>, String> {
    let j: Json = serde_json::from_str(params).map_err(|e| e.to_string())?;
    j.as_array()
        .ok_or("statements must be an array")?
        .iter()
        .map(|s| {
            Ok(Statement {
                sql: s[0].as_str().unwrap_or_default().to_string(),
                params: s[1]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
                    .iter()
                    .map(sql_param)
                    .collect::<std::result::Result<_, _>>()?,
            })
        })
        .collect()
}

/// One `sql.query` / `sql.execute` / `sql.transaction` call, as [`outcome`].
pub fn sql_call<'js>(ctx: &Ctx<'js>, kind: &str, text: &str, params: &str) -> Result<Array<'js>> {
    let r: std::result::Result<Value<'js>, PlatformError> = match kind {
        "query" => match sql_params(params)
            .map_err(bad_request)
            .and_then(|p| sql::query(text, &p))
        {
            Ok(rows) => Ok(rows_to_js(ctx, rows)?.into_value()),
            Err(e) => Err(e),
        },
        "execute" => sql_params(params)
            .map_err(bad_request)
            .and_then(|p| sql::execute(text, &p))
            .map(|n| Value::new_number(ctx.clone(), n as f64)),
        _ => match statements(params)
            .map_err(bad_request)
            .and_then(|s| sql::transaction(&s))
        {
            Ok(all) => {
                let list = Array::new(ctx.clone())?;
                for (i, rows) in all.into_iter().enumerate() {
                    list.set(i, rows_to_js(ctx, rows)?)?;
                }
                Ok(list.into_value())
            }
            Err(e) => Err(e),
        },
    };
    outcome(ctx, r)
}
