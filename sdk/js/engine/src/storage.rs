//! `storage` of the `wasmbase` module: storage-js's bucket calls over the
//! Rust SDK (which the platform's `storage` interface backs). One native,
//! `__wb.storage(op, bucket, arg, body?)`, answers `[true, value]` or
//! `[false, errorJson]`; wasmbase.js shapes both as storage-js does.

use rquickjs::{Array, Ctx, IntoJs, Result, TypedArray, Value};
use serde_json::{json, Value as Json};
use wasmbase_sdk::storage::{self, FileOptions, SearchOptions};

fn info_json(i: &storage::ObjectInfo) -> Json {
    json!({
        "id": i.id, "name": i.name, "size": i.size, "contentType": i.content_type,
        "etag": i.etag, "cacheControl": i.cache_control, "lastModified": i.last_modified,
    })
}

/// Runs `op` on `bucket`; `arg` is the path, or JSON for list and remove.
pub fn call<'js>(
    ctx: &Ctx<'js>,
    op: &str,
    bucket: &str,
    arg: &str,
    body: Option<&[u8]>,
) -> Result<Array<'js>> {
    let b = storage::from(bucket);
    let bad = crate::codec::bad_request;
    let r: std::result::Result<Value<'js>, wasmbase_sdk::Error> = match op {
        "upload" => {
            // arg: {"path", "contentType", "cacheControl", "upsert", "metadata"}
            match serde_json::from_str::<Json>(arg) {
                Ok(o) => {
                    let mut opts =
                        FileOptions::new().upsert(o["upsert"].as_bool().unwrap_or(false));
                    if let Some(t) = o["contentType"].as_str() {
                        opts = opts.content_type(t);
                    }
                    if let Some(c) = o["cacheControl"].as_u64() {
                        opts = opts.cache_control(c.min(u32::MAX as u64) as u32);
                    }
                    if o["metadata"].is_object() {
                        opts = opts.metadata(o["metadata"].clone());
                    }
                    let path = o["path"].as_str().unwrap_or_default();
                    b.upload(path, body.unwrap_or_default(), opts)
                        .map(|i| info_json(&i).to_string().into_js(ctx))
                        .map(|v| v.expect("a string converts"))
                }
                Err(e) => Err(bad(e.to_string())),
            }
        }
        "download" => match b.open(arg) {
            Ok(mut d) => {
                use std::io::Read;
                let mut out = Vec::with_capacity(d.info.size.min(64 << 20) as usize);
                match d.read_to_end(&mut out) {
                    Ok(_) => {
                        let pair = Array::new(ctx.clone())?;
                        pair.set(0, TypedArray::<u8>::new(ctx.clone(), out)?)?;
                        pair.set(1, info_json(&d.info).to_string())?;
                        Ok(pair.into_value())
                    }
                    Err(e) => Err(wasmbase_sdk::Error {
                        code: "StorageBackendError".into(),
                        message: e.to_string(),
                        details: None,
                        hint: None,
                        status: 503,
                    }),
                }
            }
            Err(e) => Err(e),
        },
        "list" => match serde_json::from_str::<Json>(arg) {
            Ok(o) => {
                let opts = SearchOptions {
                    limit: o["limit"].as_u64().map(|n| n.min(u32::MAX as u64) as u32),
                    offset: o["offset"].as_u64().map(|n| n.min(u32::MAX as u64) as u32),
                    search: o["search"].as_str().map(str::to_string),
                };
                b.list(o["prefix"].as_str().unwrap_or_default(), opts).map(|list| {
                    let v: Vec<Json> = list
                        .into_iter()
                        .map(|f| json!({"name": f.name, "id": f.id, "updated_at": f.updated_at, "created_at": f.created_at, "last_accessed_at": f.last_accessed_at, "metadata": f.metadata}))
                        .collect();
                    Json::Array(v).to_string().into_js(ctx).expect("a string converts")
                })
            }
            Err(e) => Err(bad(e.to_string())),
        },
        "remove" => match serde_json::from_str::<Vec<String>>(arg) {
            Ok(paths) => {
                let refs: Vec<&str> = paths.iter().map(String::as_str).collect();
                b.remove(&refs).map(|names| {
                    json!(names)
                        .to_string()
                        .into_js(ctx)
                        .expect("a string converts")
                })
            }
            Err(e) => Err(bad(e.to_string())),
        },
        "signedUrl" => match serde_json::from_str::<Json>(arg) {
            Ok(o) => b
                .create_signed_url(
                    o["path"].as_str().unwrap_or_default(),
                    o["expiresIn"].as_u64().unwrap_or(60).min(u32::MAX as u64) as u32,
                )
                .map(|u| u.into_js(ctx).expect("a string converts")),
            Err(e) => Err(bad(e.to_string())),
        },
        other => Err(bad(format!("unknown storage operation {other}"))),
    };
    crate::codec::outcome(ctx, r)
}
