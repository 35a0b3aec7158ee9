//! Files through the `storage` interface, as the caller (see function.toml):
//!
//! - `PUT /fn/files/<bucket>/<path>`: stores the body (its `content-type`;
//!   `?upsert` replaces an existing object).
//! - `GET /fn/files/<bucket>/<path>`: the object's bytes; with `?sign=<secs>`
//!   a signed URL instead.
//! - `GET /fn/files/<bucket>?prefix=<folder>`: one folder level.
//! - `DELETE /fn/files/<bucket>/<path>`: removes it.
//!
//! Failures answer with the platform's status and `{code, message}`.

use serde_json::json;
use wasmbase_sdk::storage::{self, FileOptions, SearchOptions};
use wasmbase_sdk::{Error, Handler, Request, Response};

struct Files;

/// The value of `key` in the query, if present (`?upsert` reads as "").
fn query<'a>(query: &'a str, key: &str) -> Option<&'a str> {
    query.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        (k == key).then_some(v)
    })
}

fn failed(e: Error) -> Response {
    Response::json(e.status, &json!({"code": e.code, "message": e.message}))
}

fn handle(req: &Request) -> Result<Response, Error> {
    let (path, q) = req.path.split_once('?').unwrap_or((&req.path, ""));
    // After `/fn/<name>/` or `/functions/v1/<name>/` (whatever it is deployed as).
    let after = path
        .strip_prefix("/functions/v1/")
        .or_else(|| path.strip_prefix("/fn/"))
        .unwrap_or(path);
    let rest = after.split_once('/').map_or("", |(_, r)| r);
    let (bucket, name) = rest.split_once('/').unwrap_or((rest, ""));
    let files = storage::from(bucket);
    Ok(match (req.method.as_str(), name) {
        ("GET", "") => {
            let prefix = query(q, "prefix").unwrap_or("");
            let names: Vec<String> = files
                .list(prefix, SearchOptions::default())?
                .into_iter()
                .map(|f| f.name)
                .collect();
            Response::json(200, &names)
        }
        ("GET", name) => match query(q, "sign").and_then(|s| s.parse().ok()) {
            Some(secs) => Response::json(
                200,
                &json!({"signedURL": files.create_signed_url(name, secs)?}),
            ),
            None => {
                let mut d = files.open(name)?;
                let mut body = Vec::new();
                std::io::Read::read_to_end(&mut d, &mut body).map_err(|e| Error {
                    code: "StorageBackendError".into(),
                    message: e.to_string(),
                    details: None,
                    hint: None,
                    status: 503,
                })?;
                Response::new(200)
                    .with_header("content-type", &d.info.content_type)
                    .with_header("etag", &d.info.etag)
                    .with_body(body)
            }
        },
        ("PUT", name) => {
            let mut options =
                FileOptions::new().upsert(query(q, "upsert").is_some());
            if let Some(t) = req.header("content-type") {
                options = options.content_type(t);
            }
            let info = files.upload(name, &req.body, options)?;
            Response::json(
                200,
                &json!({
                    "id": info.id,
                    "name": info.name,
                    "size": info.size,
                    "contentType": info.content_type,
                    "etag": info.etag,
                }),
            )
        }
        ("DELETE", name) => Response::json(200, &files.remove(&[name])?),
        _ => Response::json(405, &json!({"code": "MethodNotAllowed"})),
    })
}

impl Handler for Files {
    fn handle(req: Request) -> Response {
        handle(&req).unwrap_or_else(failed)
    }
}

wasmbase_sdk::export!(Files);
