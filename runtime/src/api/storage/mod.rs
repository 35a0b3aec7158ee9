//! `/storage/v1`: storage-api-compatible, so `supabase.storage` works
//! unchanged (docs/STORAGE.md). Every request: routes (this file) → parse
//! (`upload` for bodies, serde for JSON) → plan/exec (host-api's
//! `storage::meta` as the caller, bytes through the `ObjectStore`) →
//! response (`download` for bytes, JSON otherwise; `error` for failures).

mod buckets;
mod download;
mod error;
mod objects;
mod render;
mod resumable;
mod upload;

use crate::server::state::AppState;
use axum::routing::{delete, get, head, post};
use axum::Router;
use wasmbase_host_api::db::Acting;
use wasmbase_host_api::storage::meta::As;
use wasmbase_host_api::storage::StorageError;
use wasmbase_host_api::Principal;

pub use error::{StorageApiError, StorageCaller};
pub use render::Renderer;
pub use resumable::tus_options;

/// Routes of this module. Static segments (`list`, `sign`, `public`, ...) win
/// over `{bucket}`, as in storage-api.
pub fn routes() -> Router<AppState> {
    const O: &str = "/storage/v1/object";
    Router::new()
        .route(
            "/storage/v1/bucket",
            get(buckets::list).post(buckets::create),
        )
        .route(
            "/storage/v1/bucket/{id}",
            get(buckets::get)
                .put(buckets::update)
                .delete(buckets::delete),
        )
        .route("/storage/v1/bucket/{id}/empty", post(buckets::empty))
        .route(&format!("{O}/list/{{bucket}}"), post(objects::list))
        .route(&format!("{O}/list-v2/{{bucket}}"), post(objects::list_v2))
        .route(&format!("{O}/move"), post(objects::rename))
        .route(&format!("{O}/copy"), post(objects::copy))
        .route(&format!("{O}/sign/{{bucket}}"), post(objects::sign_many))
        .route(
            &format!("{O}/sign/{{bucket}}/{{*path}}"),
            post(objects::sign).get(download::signed),
        )
        .route(
            &format!("{O}/upload/sign/{{bucket}}/{{*path}}"),
            post(upload::sign_upload).put(upload::signed_upload),
        )
        .route(
            &format!("{O}/public/{{bucket}}/{{*path}}"),
            get(download::public),
        )
        .route(
            &format!("{O}/authenticated/{{bucket}}/{{*path}}"),
            get(download::authenticated),
        )
        .route(
            &format!("{O}/info/{{bucket}}/{{*path}}"),
            get(objects::info),
        )
        .route(
            &format!("{O}/info/authenticated/{{bucket}}/{{*path}}"),
            get(objects::info),
        )
        .route(
            &format!("{O}/info/public/{{bucket}}/{{*path}}"),
            get(objects::info_public),
        )
        .route(
            &format!("{O}/{{bucket}}/{{*path}}"),
            post(upload::create)
                .put(upload::update)
                .get(download::authenticated)
                .delete(objects::delete_one),
        )
        .route(&format!("{O}/{{bucket}}"), delete(objects::remove))
        .route(
            "/storage/v1/upload/resumable",
            post(resumable::create_keyed),
        )
        .route(
            "/storage/v1/upload/resumable/{id}",
            head(resumable::head_keyed)
                .patch(resumable::patch_keyed)
                .delete(resumable::delete_keyed)
                .post(resumable::post_keyed),
        )
        .route(
            "/storage/v1/upload/resumable/sign",
            post(resumable::create_signed),
        )
        .route(
            "/storage/v1/upload/resumable/sign/{id}",
            head(resumable::head_signed)
                .patch(resumable::patch_signed)
                .delete(resumable::delete_signed)
                .post(resumable::post_signed),
        )
        .route(
            "/storage/v1/render/image/authenticated/{bucket}/{*path}",
            get(render::authenticated),
        )
        .route(
            "/storage/v1/render/image/public/{bucket}/{*path}",
            get(render::public),
        )
        .route(
            "/storage/v1/render/image/sign/{bucket}/{*path}",
            get(render::signed),
        )
}

/// A JSON request body (an empty one reads as `{}`, as storage-js sends some
/// bodies empty); bad JSON is `InvalidRequest`.
fn json_body<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, StorageError> {
    let bytes: &[u8] = if bytes.is_empty() { b"{}" } else { bytes };
    serde_json::from_slice(bytes).map_err(|e| StorageError::invalid(format!("invalid body: {e}")))
}

/// The caller as storage's metadata statements act.
fn acting<'a>(st: &'a AppState, p: &'a Principal) -> As<'a> {
    As {
        pool: &st.pool,
        acting: Acting::principal(p, st.statement_timeout(p)),
    }
}
