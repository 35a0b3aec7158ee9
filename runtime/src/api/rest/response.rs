//! Outcome → HTTP: status, `Content-Range`, `Location`, `Preference-Applied`,
//! and the body PostgreSQL built (JSON or CSV), passed through as text.

use super::error::RestError;
use super::request::Parsed;
use axum::body::Body;
use axum::response::Response;
use http::{header, HeaderValue, StatusCode};
use wasmbase_host_api::data::request::{Action, Return};
use wasmbase_host_api::data::{DataError, Outcome, Statement};

const JSON: &str = "application/json; charset=utf-8";
const OBJECT: &str = "application/vnd.pgrst.object+json; charset=utf-8";
const OBJECT_STRIPPED: &str = "application/vnd.pgrst.object+json; nulls=stripped; charset=utf-8";
const ARRAY_STRIPPED: &str = "application/vnd.pgrst.array+json; nulls=stripped; charset=utf-8";

/// Builds the response of a finished request.
pub fn render(p: &Parsed, stmt: &Statement, out: Outcome) -> Result<Response, RestError> {
    let req = &p.req;
    let mut b = Response::builder();
    if !p.applied.is_empty() {
        b = b.header("preference-applied", p.applied.join(", "));
    }
    let total = out
        .total
        .map(|t| t.to_string())
        .unwrap_or_else(|| "*".into());
    let range = if out.rows > 0 && matches!(req.action, Action::Read | Action::Call { .. }) {
        format!("{}-{}/{total}", p.offset, p.offset + out.rows - 1)
    } else {
        format!("*/{total}")
    };
    b = b.header(header::CONTENT_RANGE, range);
    if req.returning == Return::HeadersOnly && matches!(req.action, Action::Insert { .. }) {
        if let Some(loc) = location(&p.path, stmt, &out) {
            b = b.header(header::LOCATION, loc);
        }
    }
    if let Some(plan) = req.explain {
        let ct = if plan.text {
            "application/vnd.pgrst.plan+text; for=\"application/json\"; charset=utf-8"
        } else {
            "application/vnd.pgrst.plan+json; for=\"application/json\"; charset=utf-8"
        };
        return Ok(b
            .status(StatusCode::OK)
            .header(header::CONTENT_TYPE, ct)
            .body(Body::from(out.body.unwrap_or_default()))
            .unwrap_or_default());
    }
    let (status, body) = match &req.action {
        Action::Read | Action::Call { .. } => {
            if stmt.void {
                return Ok(b
                    .status(StatusCode::NO_CONTENT)
                    .body(Body::empty())
                    .unwrap_or_default());
            }
            let partial = matches!(out.total, Some(t) if out.rows < t);
            let status = if partial {
                StatusCode::PARTIAL_CONTENT
            } else {
                StatusCode::OK
            };
            if let Some(t) = out.total {
                if p.offset > 0 && p.offset >= t && t > 0 {
                    return Err(DataError::range_out_of_bounds(p.offset, t).into());
                }
            }
            (status, out.body)
        }
        // A merging upsert that only updated rows is a 200 (PostgREST).
        Action::Insert { .. } if out.inserted == Some(0) => {
            (StatusCode::OK, body_for(req.returning, out.body))
        }
        Action::Insert { .. } => (StatusCode::CREATED, body_for(req.returning, out.body)),
        Action::Update | Action::Delete => match req.returning {
            Return::Representation => (StatusCode::OK, out.body),
            _ => (StatusCode::NO_CONTENT, None),
        },
    };
    if req.head {
        return Ok(b
            .status(status)
            .header(header::CONTENT_TYPE, JSON)
            .body(Body::empty())
            .unwrap_or_default());
    }
    let Some(body) = body else {
        return Ok(b.status(status).body(Body::empty()).unwrap_or_default());
    };
    if stmt.csv {
        // PostgreSQL built the CSV (see `plan`).
        return Ok(b
            .status(status)
            .header(header::CONTENT_TYPE, "text/csv; charset=utf-8")
            .body(Body::from(body))
            .unwrap_or_default());
    }
    if p.csv && !stmt.scalar {
        // Rows of plain values (a set-returning scalar function): no columns.
        return Err(DataError::new(406, "PGRST107", "text/csv needs rows of objects").into());
    }
    if stmt.single || stmt.object {
        // One row (exactly one when single-object was asked for, checked before
        // commit; at most one for a function returning one composite row):
        // strip the array brackets PostgreSQL put around it; no row is `null`.
        let inner = body.trim();
        let inner = inner
            .strip_prefix('[')
            .and_then(|s| s.strip_suffix(']'))
            .unwrap_or(inner)
            .trim();
        let inner = if inner.is_empty() { "null" } else { inner }.to_string();
        let ct = match (req.single, req.strip_nulls) {
            (true, true) => OBJECT_STRIPPED,
            (true, false) => OBJECT,
            _ => JSON,
        };
        return Ok(b
            .status(status)
            .header(header::CONTENT_TYPE, ct)
            .body(Body::from(inner))
            .unwrap_or_default());
    }
    let ct = if req.geojson {
        "application/geo+json; charset=utf-8"
    } else if req.strip_nulls {
        ARRAY_STRIPPED
    } else {
        JSON
    };
    Ok(b.status(status)
        .header(header::CONTENT_TYPE, ct)
        .body(Body::from(body))
        .unwrap_or_default())
}

fn body_for(r: Return, body: Option<String>) -> Option<String> {
    match r {
        Return::Representation => body,
        _ => None,
    }
}

/// `Location: /rest/v1/items?id=eq.5` for the first written row.
fn location(path: &str, stmt: &Statement, out: &Outcome) -> Option<String> {
    let rows: Vec<serde_json::Map<String, serde_json::Value>> =
        serde_json::from_str(out.body.as_deref()?).ok()?;
    let first = rows.first()?;
    let mut q = url::form_urlencoded::Serializer::new(String::new());
    for k in &stmt.pk {
        let v = match first.get(k)? {
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        q.append_pair(k, &format!("eq.{v}"));
    }
    HeaderValue::from_str(&format!("{path}?{}", q.finish()))
        .ok()?
        .to_str()
        .ok()
        .map(str::to_string)
}
