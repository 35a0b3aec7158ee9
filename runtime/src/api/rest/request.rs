//! HTTP → `data::Request`: method, path, query string, `Prefer`, `Accept`,
//! `Range`, profile headers and body. Nothing here touches SQL; names are only
//! checked against the schema cache by the planner.

use super::error::RestError;
use http::request::Parts;
use http::{HeaderMap, Method};
use wasmbase_host_api::data::parse::{parse_filter_value, parse_query, RESERVED_KEYS};
use wasmbase_host_api::data::request::{
    Action, CallBody, Count, Field, RawType, Request, Resolution, Return,
};
use wasmbase_host_api::data::{DataError, Schema};

/// What the path names.
pub enum Target {
    /// `/rest/v1/:relation`.
    Relation(String),
    /// `/rest/v1/rpc/:function`.
    Function(String),
}

/// A request ready for the planner, plus what the response needs.
pub struct Parsed {
    /// The data request.
    pub req: Request,
    /// `Accept: text/csv`.
    pub csv: bool,
    /// First row's position (for `Content-Range`).
    pub offset: i64,
    /// `Preference-Applied` values.
    pub applied: Vec<String>,
    /// Path (for `Location`).
    pub path: String,
}

fn header<'h>(h: &'h HeaderMap, name: &str) -> Option<&'h str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

/// Every `Prefer` token, across repeated headers.
fn prefer(h: &HeaderMap) -> Vec<(String, String)> {
    h.get_all("prefer")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| {
            let (k, v) = t.trim().split_once('=')?;
            Some((k.trim().to_ascii_lowercase(), v.trim().to_ascii_lowercase()))
        })
        .collect()
}

/// The schema a request works in: `Accept-Profile` on reads, `Content-Profile`
/// on writes, resolved by [`Schema::profile`] like every data request's.
pub fn profile<'s>(h: &HeaderMap, reading: bool, schema: &'s Schema) -> Result<&'s str, DataError> {
    let name = if reading {
        "accept-profile"
    } else {
        "content-profile"
    };
    schema.profile(header(h, name).map(str::trim))
}

/// Parses the HTTP request.
pub fn parse(
    parts: &Parts,
    schema: &Schema,
    target: Target,
    body: &[u8],
    plan_enabled: bool,
) -> Result<Parsed, RestError> {
    let h = &parts.headers;
    let method = &parts.method;
    let reading = *method == Method::GET || *method == Method::HEAD;
    let schema_name = profile(h, reading, schema)?.to_string();
    let mut pairs: Vec<(String, String)> =
        url::form_urlencoded::parse(parts.uri.query().unwrap_or("").as_bytes())
            .filter(|(k, _)| k != "apikey")
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();

    let mut applied = Vec::new();
    let mut returning = Return::Minimal;
    let mut count = None;
    let mut resolution = None;
    let mut missing_default = false;
    let mut single_object = false;
    let (mut strict, mut max_affected, mut rollback) = (false, None, false);
    let mut unknown = Vec::new();
    for (k, v) in prefer(h) {
        match (k.as_str(), v.as_str()) {
            ("handling", "strict") => strict = true,
            ("handling", "lenient") => {}
            ("max-affected", n) => {
                max_affected = Some(
                    n.parse::<i64>()
                        .map_err(|_| DataError::preferences(&[format!("max-affected={n}")]))?,
                )
            }
            ("tx", "rollback") => rollback = true,
            ("tx", "commit") => {}
            ("return", "representation") => returning = Return::Representation,
            ("return", "headers-only") => returning = Return::HeadersOnly,
            ("return", "minimal") => returning = Return::Minimal,
            ("count", "exact") => count = Some(Count::Exact),
            ("count", "planned") => count = Some(Count::Planned),
            ("count", "estimated") => count = Some(Count::Estimated),
            ("resolution", "merge-duplicates") => resolution = Some(Resolution::Merge),
            ("resolution", "ignore-duplicates") => resolution = Some(Resolution::Ignore),
            ("missing", "default") => missing_default = true,
            ("missing", "null") => {}
            ("params", "single-object") => single_object = true,
            _ => {
                unknown.push(format!("{k}={v}"));
                continue;
            }
        }
        applied.push(format!("{k}={v}"));
    }

    if strict && !unknown.is_empty() {
        return Err(DataError::preferences(&unknown).into());
    }
    // max-affected only binds with handling=strict, as in PostgREST.
    let max_affected = if strict { max_affected } else { None };
    if let Some(n) = max_affected {
        applied.push(format!("max-affected={n}"));
    }
    let accept = header(h, "accept").unwrap_or("application/json");
    let produce = super::accept::negotiate(accept, plan_enabled)?;
    let (single, csv) = (produce.single, produce.csv);

    // A call may post a raw body for a function with one unnamed text, xml
    // or bytea parameter (PostgREST's `hasSingleUnnamedParam`).
    let content_type = header(h, "content-type")
        .map(|ct| {
            ct.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
        .unwrap_or_default();
    let raw = match (&target, content_type.as_str()) {
        (Target::Function(_), "text/plain") => Some(RawType::Text),
        (Target::Function(_), "text/xml") => Some(RawType::Xml),
        (Target::Function(_), "application/octet-stream") => Some(RawType::Bytea),
        _ => None,
    };
    if !reading
        && raw.is_none()
        && !body.is_empty()
        && !matches!(content_type.as_str(), "" | "application/json")
    {
        return Err(DataError::new(
            415,
            "PGRST107",
            format!("Content-Type not acceptable: {content_type}"),
        )
        .hint("Send the body as application/json")
        .into());
    }
    let text_body = if body.is_empty() {
        None
    } else if raw == Some(RawType::Bytea) {
        Some(format!("\\x{}", hex::encode(body)))
    } else {
        Some(
            std::str::from_utf8(body)
                .map_err(|_| DataError::body("Invalid request body: the body is not UTF-8"))?
                .to_string(),
        )
    };

    let take = |pairs: &mut Vec<(String, String)>, key: &str| -> Option<String> {
        let i = pairs.iter().position(|(k, _)| k == key)?;
        Some(pairs.remove(i).1)
    };
    let list = |s: String| -> Vec<String> {
        s.split(',')
            .map(|c| c.trim().trim_matches('"').to_string())
            .filter(|c| !c.is_empty())
            .collect()
    };

    let (relation, action, body) = match target {
        Target::Relation(name) => {
            let action = match *method {
                Method::GET | Method::HEAD => Action::Read,
                Method::POST => Action::Insert {
                    resolution,
                    on_conflict: take(&mut pairs, "on_conflict").map(list),
                    columns: take(&mut pairs, "columns").map(list),
                    missing_default,
                },
                Method::PATCH => Action::Update,
                Method::DELETE => Action::Delete,
                _ => return Err(DataError::unsupported_method(method.as_str()).into()),
            };
            if matches!(action, Action::Insert { .. } | Action::Update) && text_body.is_none() {
                return Err(DataError::body("Empty or invalid json").into());
            }
            (name, action, text_body)
        }
        Target::Function(name) => {
            let body = match *method {
                Method::POST => text_body,
                Method::GET | Method::HEAD => {
                    // Query parameters named like an argument are arguments;
                    // the rest filter the result. A variadic parameter may
                    // repeat (`?v=a&v=b` is the array); another one keeps its
                    // last value, as in PostgREST (`toRpcParams`).
                    let args_of = schema.functions(&schema_name, &name);
                    // An argument name, or (as PostgREST's `qsParams`) a
                    // parameter whose value is no `operator.value` filter.
                    let is_arg = |k: &str, v: &str| {
                        !RESERVED_KEYS.contains(&k)
                            && !matches!(k, "or" | "and")
                            && !k.contains('.')
                            && (args_of.iter().any(|f| f.args.iter().any(|a| a.name == k))
                                || parse_filter_value(Field::col(k), v).is_err())
                    };
                    let variadic = |k: &str| {
                        args_of
                            .iter()
                            .any(|f| f.args.iter().any(|a| a.name == k && a.variadic))
                    };
                    let mut args = serde_json::Map::new();
                    pairs.retain(|(k, v)| {
                        if !is_arg(k, v) {
                            return true;
                        }
                        let value = serde_json::Value::String(v.clone());
                        match args.get_mut(k) {
                            Some(serde_json::Value::Array(list)) => list.push(value),
                            _ if variadic(k) => {
                                args.insert(k.clone(), serde_json::Value::Array(vec![value]));
                            }
                            _ => {
                                args.insert(k.clone(), value);
                            }
                        }
                        false
                    });
                    Some(serde_json::Value::Object(args).to_string())
                }
                _ => return Err(DataError::rpc_method(method.as_str()).into()),
            };
            let how = match raw {
                Some(t) if *method == Method::POST => CallBody::Raw(t),
                _ if single_object => CallBody::SingleObject,
                _ => CallBody::Named,
            };
            if single_object {
                applied.push("params=single-object".into());
            }
            (
                String::new(),
                Action::Call {
                    function: name,
                    body: how,
                },
                body,
            )
        }
    };

    let mut query = parse_query(&pairs)?;
    if let Some(range) = header(h, "range") {
        let (start, count) = parse_range(range)?;
        let root = query.root_mut();
        root.offset = Some(root.offset.unwrap_or(0).max(start));
        if let Some(n) = count {
            root.limit = Some(root.limit.map_or(n, |l| l.min(n)));
        }
    }
    let offset = query.root().and_then(|r| r.offset).unwrap_or(0);
    Ok(Parsed {
        req: Request {
            schema: schema_name,
            relation,
            action,
            query,
            body,
            count,
            returning,
            single,
            read_only: reading,
            head: *method == Method::HEAD,
            max_affected,
            rollback,
            csv,
            strip_nulls: produce.strip_nulls,
            explain: produce.plan,
            geojson: produce.geojson,
        },
        csv,
        offset,
        applied,
        path: parts.uri.path().to_string(),
    })
}

/// `Range: [items=]START-[END]` → (offset, row count if END is given).
fn parse_range(value: &str) -> Result<(i64, Option<i64>), DataError> {
    let r = value.trim().trim_start_matches("items=");
    let (a, b) = r.split_once('-').ok_or_else(|| DataError::range(None))?;
    let start: i64 = a.trim().parse().map_err(|_| DataError::range(None))?;
    if b.trim().is_empty() {
        return Ok((start, None));
    }
    let end: i64 = b.trim().parse().map_err(|_| DataError::range(None))?;
    if end < start {
        return Err(DataError::range(Some(
            "The lower boundary must be lower than or equal to the upper boundary in the Range header."
                .into(),
        )));
    }
    // Checked: `0-9223372036854775807` is more rows than an int8 LIMIT holds.
    let count = end
        .checked_sub(start)
        .and_then(|n| n.checked_add(1))
        .ok_or_else(|| DataError::range(None))?;
    Ok((start, Some(count)))
}

#[cfg(test)]
mod tests {
    use super::parse_range;

    #[test]
    fn ranges_parse_and_overflow_is_416_not_a_wrapped_limit() {
        assert_eq!(parse_range("0-9").unwrap(), (0, Some(10)));
        assert_eq!(parse_range("items=10-").unwrap(), (10, None));
        for bad in [
            "0-9223372036854775807",
            "-1-9223372036854775807",
            "5-4",
            "x",
            "0-99999999999999999999",
        ] {
            let e = parse_range(bad).unwrap_err();
            assert_eq!((e.status, e.code.as_str()), (416, "PGRST103"), "{bad}");
        }
    }
}
