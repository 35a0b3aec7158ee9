//! TUS 1.0 at `/storage/v1/upload/resumable` (creation, creation-with-upload,
//! termination, expiration), as storage-api speaks it to tus-js-client and
//! Uppy: `Upload-Metadata` names the object (`bucketName`, `objectName`,
//! `contentType`, `cacheControl`, `metadata`), `x-upsert` asks to replace.
//! Under `/sign` the same protocol takes a signed upload token in
//! `x-signature` instead of a key, on every request. Each request: parse the
//! TUS headers (here) → the upload's steps in host-api's
//! `storage::resumable` → the TUS response headers. Errors keep their real
//! HTTP status (TUS clients retry on 409 and on 5xx) with storage-api's body.

use super::acting;
use super::error::StorageCaller;
use super::upload::{header, upsert_header, user_metadata, SharedBody};
use crate::server::state::AppState;
use axum::extract::{Path, Request, State};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use std::collections::HashMap;
use wasmbase_host_api::storage::backend;
use wasmbase_host_api::storage::meta::As;
use wasmbase_host_api::storage::objects::Describe;
use wasmbase_host_api::storage::resumable::{self, Creator, NewUpload, Upload};
use wasmbase_host_api::storage::token::{self, Scope};
use wasmbase_host_api::storage::upload_locks::UploadLock;
use wasmbase_host_api::storage::StorageError;
use wasmbase_host_api::{Principal, Role};

/// The TUS version spoken.
const TUS_VERSION: &str = "1.0.0";

/// The extensions offered.
const EXTENSIONS: &str = "creation,creation-with-upload,termination,expiration";

/// Body type of `PATCH` (and creation-with-upload).
const OFFSET_OCTET_STREAM: &str = "application/offset+octet-stream";

/// Whether a request came through `/sign` (the token is the credential).
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Route {
    Keyed,
    Signed,
}

impl Route {
    fn base(self) -> &'static str {
        match self {
            Route::Keyed => "/storage/v1/upload/resumable",
            Route::Signed => "/storage/v1/upload/resumable/sign",
        }
    }
}

/// A TUS failure: storage-api's body with the real status.
struct TusError(StorageError);

impl From<StorageError> for TusError {
    fn from(e: StorageError) -> Self {
        TusError(e)
    }
}

impl From<backend::StoreError> for TusError {
    fn from(e: backend::StoreError) -> Self {
        TusError(e.into())
    }
}

impl IntoResponse for TusError {
    fn into_response(self) -> Response {
        let e = self.0;
        let status = match e.status {
            s @ 400..=499 => s,
            503 => 503,
            _ => 500,
        };
        let mut resp = super::error::StorageApiError(e).into_response();
        *resp.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
        tus_headers(resp.headers_mut());
        resp
    }
}

type TusResult = Result<Response, TusError>;

fn tus_headers(h: &mut HeaderMap) {
    h.insert(
        HeaderName::from_static("tus-resumable"),
        HeaderValue::from_static(TUS_VERSION),
    );
}

/// Every request but `OPTIONS` names the protocol version.
fn check_version(h: &HeaderMap) -> Result<(), TusError> {
    match header(h, "tus-resumable") {
        Some(TUS_VERSION) => Ok(()),
        _ => Err(StorageError::new(
            412,
            "UnsupportedTusVersion",
            "PreconditionFailed",
            "Tus-Resumable must be 1.0.0",
        )
        .into()),
    }
}

/// A non-negative integer header.
fn number(h: &HeaderMap, name: &str) -> Result<Option<u64>, TusError> {
    header(h, name)
        .map(|v| {
            v.trim().parse::<u64>().map_err(|_| {
                TusError(StorageError::invalid(format!(
                    "{name} must be a non-negative integer"
                )))
            })
        })
        .transpose()
}

/// `Upload-Metadata`: `key base64,key base64,...` (a key may have no value).
fn parse_metadata(text: &str) -> Result<HashMap<String, String>, StorageError> {
    let mut out = HashMap::new();
    for pair in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (key, value) = match pair.split_once(' ') {
            Some((k, v)) => (k, v.trim()),
            None => (pair, ""),
        };
        let bad = || StorageError::invalid(format!("Upload-Metadata: {key:?} is not valid"));
        if key.is_empty() || out.contains_key(key) {
            return Err(bad());
        }
        let raw = base64::engine::general_purpose::STANDARD
            .decode(value)
            .map_err(|_| bad())?;
        out.insert(key.to_string(), String::from_utf8(raw).map_err(|_| bad())?);
    }
    Ok(out)
}

/// storage-api's `cacheControl` rule for resumable uploads: seconds, or
/// `no-cache`.
fn cache_control(seconds: Option<&str>) -> String {
    match seconds {
        Some(s) if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) => {
            format!("max-age={s}")
        }
        _ => "no-cache".into(),
    }
}

/// Who is asking: the caller, or the holder of a signed upload token.
struct Access {
    principal: Principal,
    signature: Option<String>,
}

impl Access {
    fn new(route: Route, principal: Principal, h: &HeaderMap) -> Result<Access, TusError> {
        let signature = match route {
            Route::Keyed => None,
            Route::Signed => Some(
                header(h, "x-signature")
                    .ok_or_else(|| {
                        StorageError::new(
                            400,
                            "InvalidSignature",
                            "InvalidSignature",
                            "Missing x-signature header",
                        )
                    })?
                    .to_string(),
            ),
        };
        Ok(Access {
            principal,
            signature,
        })
    }

    /// As whom the object row is written: the caller, or `service_role` for
    /// a signed upload (the token's checks were made when it was signed).
    fn who<'a>(&'a self, st: &'a AppState, service: &'a Principal) -> As<'a> {
        match self.signature {
            Some(_) => acting(st, service),
            None => acting(st, &self.principal),
        }
    }

    /// The upload is this caller's to continue; anyone else is told it does
    /// not exist.
    fn check(&self, st: &AppState, up: &Upload) -> Result<(), StorageError> {
        match (&up.creator, &self.signature) {
            (Creator::Signed, Some(t)) => {
                let grant = token::verify(st.gate.jwt(), t, Scope::Upload, &up.bucket, &up.name)?;
                // Another token for the object may grant less (no upsert)
                // or name another owner: only the creating one's terms hold.
                if grant.upsert != up.upsert || grant.owner.as_deref() != up.owner() {
                    return Err(StorageError::new(
                        400,
                        "InvalidSignature",
                        "InvalidSignature",
                        "The token is not the one this upload was created with",
                    ));
                }
                Ok(())
            }
            (Creator::Caller { role, sub }, None) => {
                let p = &self.principal;
                let same = p.role.as_str() == role && acting(st, p).sub() == *sub;
                if same || p.role == Role::ServiceRole {
                    Ok(())
                } else {
                    Err(resumable::no_such_upload())
                }
            }
            _ => Err(resumable::no_such_upload()),
        }
    }
}

fn expires(up: &Upload) -> HeaderValue {
    HeaderValue::from_str(&httpdate::fmt_http_date(up.expires_at))
        .unwrap_or(HeaderValue::from_static(""))
}

fn set(h: &mut HeaderMap, name: &'static str, value: impl ToString) {
    if let Ok(v) = HeaderValue::from_str(&value.to_string()) {
        h.insert(HeaderName::from_static(name), v);
    }
}

/// The headers that say where an upload stands.
fn progress(h: &mut HeaderMap, up: &Upload) {
    set(h, "upload-offset", up.received);
    if up.complete() {
        set(h, "tus-complete", 1);
    } else {
        h.insert(HeaderName::from_static("upload-expires"), expires(up));
    }
}

fn upload_url(st: &AppState, route: Route, id: &str) -> String {
    let base = st
        .config
        .auth
        .external_url
        .as_deref()
        .map(|u| u.trim_end_matches('/'))
        .unwrap_or("");
    format!("{base}{}/{id}", route.base())
}

/// `OPTIONS` on the TUS routes says what this server speaks. Every
/// `OPTIONS` is answered by the CORS layer (as a preflight), so this runs
/// outside it and adds TUS's headers to that answer.
pub async fn tus_options(
    State(st): State<AppState>,
    req: Request,
    next: axum::middleware::Next,
) -> Response {
    let tus =
        req.method() == http::Method::OPTIONS && req.uri().path().starts_with(Route::Keyed.base());
    let mut resp = next.run(req).await;
    if tus {
        let h = resp.headers_mut();
        tus_headers(h);
        set(h, "tus-version", TUS_VERSION);
        set(h, "tus-extension", EXTENSIONS);
        set(h, "tus-max-size", st.storage.max_upload_bytes);
    }
    resp
}

/// `POST`: creates an upload (and appends its first bytes when the body is
/// `application/offset+octet-stream`).
async fn create(st: AppState, route: Route, p: Principal, req: Request) -> TusResult {
    let (parts, body) = req.into_parts();
    let h = &parts.headers;
    check_version(h)?;
    let access = Access::new(route, p, h)?;
    if h.contains_key("upload-defer-length") {
        return Err(StorageError::invalid(
            "Upload-Defer-Length is not supported; send Upload-Length",
        )
        .into());
    }
    let length = number(h, "upload-length")?
        .ok_or_else(|| StorageError::invalid("Upload-Length is required"))?;
    let metadata_header = header(h, "upload-metadata").unwrap_or("").to_string();
    let meta = parse_metadata(&metadata_header)?;
    let required = |k: &str| {
        meta.get(k)
            .filter(|v| !v.is_empty())
            .cloned()
            .ok_or_else(|| StorageError::invalid(format!("Upload-Metadata must name {k}")))
    };
    let (bucket, name) = (required("bucketName")?, required("objectName")?);
    let user_meta = match meta.get("metadata") {
        Some(m) => user_metadata(m)?,
        None => None,
    };
    let describe = Describe {
        mime: meta
            .get("contentType")
            .filter(|v| !v.is_empty())
            .cloned()
            .unwrap_or_else(|| "application/octet-stream".into()),
        cache_control: cache_control(meta.get("cacheControl").map(String::as_str)),
        user_metadata: user_meta,
    };
    let service = Principal::for_role(Role::ServiceRole);
    let who = access.who(&st, &service);
    let (upsert, owner, creator) = match &access.signature {
        Some(t) => {
            let grant = token::verify(st.gate.jwt(), t, Scope::Upload, &bucket, &name)?;
            (grant.upsert, grant.owner, Creator::Signed)
        }
        None => {
            let sub = who.sub();
            let creator = Creator::Caller {
                role: access.principal.role.as_str().to_string(),
                sub: sub.clone(),
            };
            (upsert_header(h), sub, creator)
        }
    };
    let new = NewUpload {
        bucket,
        name,
        length,
        describe,
        metadata_header,
        upsert,
        owner,
        creator,
    };
    let up = resumable::create(&st.storage, &who, new).await?;
    let with_body = header(h, "content-type") == Some(OFFSET_OCTET_STREAM);
    let up = if with_body && !up.complete() {
        write(&st, access, up.id.clone(), 0, h, body).await?
    } else {
        up
    };
    let mut resp = StatusCode::CREATED.into_response();
    let out = resp.headers_mut();
    tus_headers(out);
    set(out, "location", upload_url(&st, route, &up.id));
    progress(out, &up);
    Ok(resp)
}

/// Upload ids are 32 lowercase hex digits; anything else is unknown at once.
fn valid_id(id: &str) -> Result<(), StorageError> {
    if id.len() == 32 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        Ok(())
    } else {
        Err(resumable::no_such_upload())
    }
}

/// Runs `op` on upload `id` under its lock, in a task of its own, so a
/// client that goes away cannot cut it short between two steps that belong
/// together (a part and its record; the parts joined and the object row).
/// The caller is checked before the lock is asked for (strangers cost no
/// lock) and again under it.
async fn under_lock<F, Fut>(
    st: &AppState,
    access: Access,
    id: String,
    op: F,
) -> Result<Upload, StorageError>
where
    F: FnOnce(AppState, Access, Upload, UploadLock) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<Upload, StorageError>> + Send + 'static,
{
    valid_id(&id)?;
    let up = resumable::load(&st.storage, &id).await?;
    access.check(st, &up)?;
    let st = st.clone();
    tokio::spawn(async move {
        let Some(lock) = st.storage.upload_locks.try_lock(&id).await? else {
            return Err(resumable::locked());
        };
        let up = resumable::load(&st.storage, &id).await?;
        access.check(&st, &up)?;
        op(st, access, up, lock).await
    })
    .await
    .map_err(|e| {
        tracing::error!(error = %e, "a resumable upload's task failed");
        StorageError::internal()
    })?
}

/// Appends a request body to upload `id` (see [`under_lock`]).
async fn write(
    st: &AppState,
    access: Access,
    id: String,
    offset: u64,
    h: &HeaderMap,
    body: axum::body::Body,
) -> Result<Upload, TusError> {
    let declared = number(h, "content-length")?;
    let body = SharedBody::new(body);
    let stream = body.clone();
    let result = under_lock(st, access, id, move |st, access, up, lock| async move {
        let left = up.length - up.received;
        if offset == up.received && declared.is_some_and(|n| n > left) {
            return Err(StorageError::new(
                413,
                "EntityTooLarge",
                "Payload too large",
                "The body passes the upload's Upload-Length",
            ));
        }
        let service = Principal::for_role(Role::ServiceRole);
        let who = access.who(&st, &service);
        let limited = backend::limited(stream, left, st.storage.idle_timeout);
        resumable::append(&st.storage, &lock, &who, up, offset, limited).await
    })
    .await;
    if result.is_err() {
        body.drain().await;
    }
    Ok(result?)
}

/// `PATCH`: appends at `Upload-Offset`.
async fn patch(st: AppState, route: Route, p: Principal, id: String, req: Request) -> TusResult {
    let (parts, body) = req.into_parts();
    let h = &parts.headers;
    check_version(h)?;
    let access = Access::new(route, p, h)?;
    if header(h, "content-type") != Some(OFFSET_OCTET_STREAM) {
        return Err(StorageError::new(
            415,
            "InvalidContentType",
            "UnsupportedMediaType",
            "PATCH bodies must be application/offset+octet-stream",
        )
        .into());
    }
    let offset = number(h, "upload-offset")?
        .ok_or_else(|| StorageError::invalid("Upload-Offset is required"))?;
    let up = write(&st, access, id, offset, h, body).await?;
    let mut resp = StatusCode::NO_CONTENT.into_response();
    tus_headers(resp.headers_mut());
    progress(resp.headers_mut(), &up);
    Ok(resp)
}

/// `HEAD`: where to resume.
async fn head(st: AppState, route: Route, p: Principal, id: String, h: HeaderMap) -> TusResult {
    check_version(&h)?;
    let access = Access::new(route, p, &h)?;
    valid_id(&id)?;
    let mut up = resumable::load(&st.storage, &id).await?;
    access.check(&st, &up)?;
    if up.complete() {
        // Every byte is in, but the finish did not end: the whole offset may
        // only be told once the object is written.
        up = under_lock(&st, access, id, |st, access, up, lock| async move {
            let service = Principal::for_role(Role::ServiceRole);
            let who = access.who(&st, &service);
            resumable::settle(&st.storage, &lock, &who, &up).await?;
            Ok(up)
        })
        .await?;
    }
    let mut resp = StatusCode::OK.into_response();
    let out = resp.headers_mut();
    tus_headers(out);
    set(out, "upload-length", up.length);
    set(out, "cache-control", "no-store");
    if !up.metadata_header.is_empty() {
        set(out, "upload-metadata", &up.metadata_header);
    }
    progress(out, &up);
    Ok(resp)
}

/// `DELETE`: terminates the upload; its parts are deleted.
async fn terminate(
    st: AppState,
    route: Route,
    p: Principal,
    id: String,
    h: HeaderMap,
) -> TusResult {
    check_version(&h)?;
    let access = Access::new(route, p, &h)?;
    under_lock(&st, access, id, |st, _, up, _lock| async move {
        resumable::discard(&st.storage, &up).await?;
        Ok(up)
    })
    .await?;
    let mut resp = StatusCode::NO_CONTENT.into_response();
    tus_headers(resp.headers_mut());
    Ok(resp)
}

/// `POST` on an upload with `X-HTTP-Method-Override` (tus-js-client's
/// `overridePatchMethod`, for proxies that drop `PATCH`).
async fn overridden(
    st: AppState,
    route: Route,
    p: Principal,
    id: String,
    req: Request,
) -> TusResult {
    match header(req.headers(), "x-http-method-override")
        .map(str::to_ascii_uppercase)
        .as_deref()
    {
        Some("PATCH") => patch(st, route, p, id, req).await,
        Some("DELETE") => {
            let h = req.headers().clone();
            terminate(st, route, p, id, h).await
        }
        Some("HEAD") => {
            let h = req.headers().clone();
            head(st, route, p, id, h).await
        }
        _ => Err(StorageError::new(
            405,
            "MethodNotAllowed",
            "MethodNotAllowed",
            "POST on an upload needs X-HTTP-Method-Override: PATCH",
        )
        .into()),
    }
}

macro_rules! routes_for {
    ($route:expr, $create:ident, $patch:ident, $head:ident, $delete:ident, $post:ident) => {
        pub(super) async fn $create(
            State(st): State<AppState>,
            StorageCaller(p): StorageCaller,
            req: Request,
        ) -> Response {
            create(st, $route, p, req).await.into_response()
        }

        pub(super) async fn $patch(
            State(st): State<AppState>,
            StorageCaller(p): StorageCaller,
            Path(id): Path<String>,
            req: Request,
        ) -> Response {
            patch(st, $route, p, id, req).await.into_response()
        }

        pub(super) async fn $head(
            State(st): State<AppState>,
            StorageCaller(p): StorageCaller,
            Path(id): Path<String>,
            h: HeaderMap,
        ) -> Response {
            head(st, $route, p, id, h).await.into_response()
        }

        pub(super) async fn $delete(
            State(st): State<AppState>,
            StorageCaller(p): StorageCaller,
            Path(id): Path<String>,
            h: HeaderMap,
        ) -> Response {
            terminate(st, $route, p, id, h).await.into_response()
        }

        pub(super) async fn $post(
            State(st): State<AppState>,
            StorageCaller(p): StorageCaller,
            Path(id): Path<String>,
            req: Request,
        ) -> Response {
            overridden(st, $route, p, id, req).await.into_response()
        }
    };
}

routes_for!(
    Route::Keyed,
    create_keyed,
    patch_keyed,
    head_keyed,
    delete_keyed,
    post_keyed
);
routes_for!(
    Route::Signed,
    create_signed,
    patch_signed,
    head_signed,
    delete_signed,
    post_signed
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_pairs_decode_and_bad_ones_are_refused() {
        let m = parse_metadata("bucketName YXZhdGFycw==,objectName YS9iLnBuZw==,flag").unwrap();
        assert_eq!(m["bucketName"], "avatars");
        assert_eq!(m["objectName"], "a/b.png");
        assert_eq!(m["flag"], "");
        assert!(parse_metadata("bucketName !!!").is_err());
        assert!(parse_metadata("a YQ==,a YQ==").is_err());
    }

    #[test]
    fn cache_control_takes_seconds_only() {
        assert_eq!(cache_control(Some("3600")), "max-age=3600");
        assert_eq!(cache_control(Some("public")), "no-cache");
        assert_eq!(cache_control(None), "no-cache");
    }
}
