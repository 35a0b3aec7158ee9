//! `wasmbase:platform/storage`: a function's files, through the same steps
//! `/storage/v1` takes (host-api's `storage::meta` as the principal under
//! RLS, `storage::objects` for writes, the one `ObjectStore`), limited to the
//! buckets and modes its `function.toml` grants ([`Grants`]). Bytes move as
//! `wasi:io` streams, so a guest never holds a whole object and can splice an
//! incoming body straight into an upload.

use super::bindings::wasmbase::platform::storage::{
    Host, HostUpload, ListOptions, ObjectInfo, UploadOptions,
};
use super::{GuestCtx, GuestError};
use crate::db::Acting;
use crate::jwt::JwtKeys;
use crate::storage::backend::{self, ByteStream};
use crate::storage::meta::{self, As};
use crate::storage::objects::{self, Describe, Target, Written};
use crate::storage::token::{self, Scope};
use crate::storage::{names, Storage, StorageError};
use crate::Principal;
use bytes::Bytes;
use deadpool_postgres::Pool;
use futures::StreamExt;
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use wasmtime::component::{HasData, Resource, ResourceTable};
use wasmtime_wasi_io::poll::Pollable;
use wasmtime_wasi_io::streams::{
    DynInputStream, DynOutputStream, InputStream, OutputStream, StreamError, StreamResult,
};

/// What a grant allows on a bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Download, list, signed URLs.
    Read,
    /// Upload, remove.
    Write,
}

impl Mode {
    fn as_str(self) -> &'static str {
        match self {
            Mode::Read => "read",
            Mode::Write => "write",
        }
    }
}

/// A function's storage grants, from `storage = ["avatars:read",
/// "uploads:write"]`: the only buckets its guest can name, each for the
/// modes listed (`write` does not imply `read`; list both for both).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Grants(Vec<(String, Mode)>);

impl Grants {
    /// Parses the manifest's list; errors name the bad entry.
    pub fn parse(list: &[String]) -> Result<Grants, String> {
        let mut out = Vec::new();
        for g in list {
            // Bucket names may contain `:`; the mode is after the last one.
            let (bucket, mode) = g
                .rsplit_once(':')
                .ok_or_else(|| format!("{g:?} must be \"<bucket>:read\" or \"<bucket>:write\""))?;
            let mode = match mode {
                "read" => Mode::Read,
                "write" => Mode::Write,
                _ => return Err(format!("{g:?}: the mode must be read or write")),
            };
            names::bucket_name(bucket)
                .map_err(|_| format!("{g:?}: {bucket:?} is not a bucket name"))?;
            out.push((bucket.to_string(), mode));
        }
        Ok(Grants(out))
    }

    /// No bucket granted: the component may not import the interface.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Refuses `mode` on `bucket` unless granted (403 `AccessDenied`, naming
    /// the grant that would allow it).
    pub fn check(&self, bucket: &str, mode: Mode) -> Result<(), StorageError> {
        if self.0.iter().any(|(b, m)| b == bucket && *m == mode) {
            return Ok(());
        }
        Err(StorageError::access_denied(format!(
            "this function is not granted {} on bucket {bucket:?} (function.toml: storage = [\"{bucket}:{}\"])",
            mode.as_str(),
            mode.as_str()
        )))
    }
}

/// Storage granted to one invocation.
#[derive(Clone)]
pub struct StorageAccess {
    /// The node's backend, limits and deletion queue.
    pub storage: Storage,
    /// Request pool (`authenticator`): metadata statements run here as
    /// `principal`.
    pub pool: Pool,
    /// The caller, or service_role for `db = "service"` functions.
    pub principal: Principal,
    /// Longest statement timeout (further capped by the call's time left).
    pub statement_timeout: Duration,
    /// The buckets and modes granted.
    pub grants: Arc<Grants>,
    /// Signs download URLs.
    pub jwt: Arc<JwtKeys>,
    /// Prefix of signed URLs (`auth.external_url`); none: relative URLs.
    pub base_url: Option<Arc<str>>,
    /// The guests' share of the database pool (shared with `data`/`sql`).
    pub permits: Arc<tokio::sync::Semaphore>,
}

/// What the storage interface works on: the call's state and the store's
/// resource table, where its `wasi:io` streams must live for the guest to
/// use them with `wasi:io`.
pub struct StorageView<'a> {
    /// The call's state.
    pub guest: &'a mut GuestCtx,
    /// The store's resource table (shared with WASI).
    pub table: &'a mut ResourceTable,
}

/// [`HasData`] marker selecting [`StorageView`] for the linker.
pub struct StorageData;

impl HasData for StorageData {
    type Data<'a> = StorageView<'a>;
}

impl From<StorageError> for GuestError {
    fn from(e: StorageError) -> GuestError {
        GuestError {
            code: e.code.to_string(),
            message: e.message,
            details: None,
            hint: None,
            status: e.status,
        }
    }
}

fn table_error(e: wasmtime::component::ResourceTableError) -> GuestError {
    super::error(500, "InternalError", format!("resource table: {e}"))
}

/// Most bytes one `write` may hand over (what `check-write` grants).
const WRITE_CHUNK: usize = 64 * 1024;

/// Chunks an upload keeps in flight between the guest and the backend.
const IN_FLIGHT: usize = 4;

impl StorageView<'_> {
    /// The call's storage for `mode` on `bucket`, or why not.
    fn access(&self, bucket: &str, mode: Mode) -> Result<StorageAccess, GuestError> {
        let a = self.guest.storage.clone().ok_or_else(|| {
            super::error(
                403,
                "AccessDenied",
                "this function has no storage grant (function.toml: storage = [\"<bucket>:read\"])",
            )
        })?;
        a.grants.check(bucket, mode)?;
        Ok(a)
    }

    /// The statement timeout of a metadata call: no longer than the call's
    /// time left.
    fn timeout(&self, a: &StorageAccess) -> Result<Duration, GuestError> {
        self.guest.db_timeout(a.statement_timeout)
    }
}

impl StorageAccess {
    /// A share of the database pool for one metadata statement.
    async fn permit(&self) -> Result<tokio::sync::SemaphorePermit<'_>, GuestError> {
        self.permits.acquire().await.map_err(|_| {
            super::error(
                503,
                "DatabaseUnavailable",
                "database access is shutting down",
            )
        })
    }

    /// The principal as storage's metadata statements act.
    fn who(&self, timeout: Duration) -> As<'_> {
        As {
            pool: &self.pool,
            acting: Acting::principal(&self.principal, timeout),
        }
    }
}

/// An upload between `begin-upload` and `finish`: its bytes already
/// streaming into the backend (a task), its row not yet written. Dropped
/// unfinished, the task stops and whatever it stored is queued for deletion.
pub struct UploadState {
    access: StorageAccess,
    target: Target,
    describe: Describe,
    upsert: bool,
    /// The write half until `body` hands it to the guest's stream.
    sender: Option<mpsc::Sender<Bytes>>,
    body_taken: bool,
    task: Option<tokio::task::JoinHandle<Result<Written, StorageError>>>,
}

impl Drop for UploadState {
    fn drop(&mut self) {
        let Some(task) = self.task.take() else {
            return;
        };
        task.abort();
        let storage = self.access.storage.clone();
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                // Finished before the abort: its bytes have no row.
                if let Ok(Ok(w)) = task.await {
                    storage.forget(&w.version).await;
                }
            });
        }
    }
}

/// The guest's end of an upload: `wasi:io/streams.output-stream` over a
/// bounded channel, so a guest that writes faster than the backend stores
/// waits (`check-write` says 0 until there is room).
struct UploadBody {
    tx: mpsc::Sender<Bytes>,
    permit: Option<mpsc::OwnedPermit<Bytes>>,
}

#[wasmtime_wasi_io::async_trait]
impl Pollable for UploadBody {
    async fn ready(&mut self) {
        if self.permit.is_none() {
            // A closed channel is ready too: check-write then says so.
            self.permit = self.tx.clone().reserve_owned().await.ok();
        }
    }
}

#[wasmtime_wasi_io::async_trait]
impl OutputStream for UploadBody {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        if bytes.is_empty() {
            return Ok(());
        }
        if bytes.len() > WRITE_CHUNK {
            return Err(StreamError::trap("write of more than check-write allowed"));
        }
        match self.permit.take() {
            Some(p) => {
                p.send(bytes);
                Ok(())
            }
            None => Err(StreamError::trap("write without check-write")),
        }
    }

    fn flush(&mut self) -> StreamResult<()> {
        if self.tx.is_closed() {
            return Err(StreamError::Closed);
        }
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        if self.permit.is_some() {
            return Ok(WRITE_CHUNK);
        }
        match self.tx.clone().try_reserve_owned() {
            Ok(p) => {
                self.permit = Some(p);
                Ok(WRITE_CHUNK)
            }
            Err(mpsc::error::TrySendError::Full(_)) => Ok(0),
            // The upload ended (its limit passed, or the backend failed):
            // `finish` says why.
            Err(mpsc::error::TrySendError::Closed(_)) => Err(StreamError::Closed),
        }
    }
}

/// A download's bytes as `wasi:io/streams.input-stream`, one backend chunk
/// at a time.
struct DownloadBody {
    body: ByteStream,
    buf: Bytes,
    /// None while open; then how it ended.
    end: Option<Result<(), String>>,
}

#[wasmtime_wasi_io::async_trait]
impl Pollable for DownloadBody {
    async fn ready(&mut self) {
        if !self.buf.is_empty() || self.end.is_some() {
            return;
        }
        match self.body.next().await {
            Some(Ok(b)) => self.buf = b,
            Some(Err(e)) => self.end = Some(Err(e.to_string())),
            None => self.end = Some(Ok(())),
        }
    }
}

#[wasmtime_wasi_io::async_trait]
impl InputStream for DownloadBody {
    fn read(&mut self, size: usize) -> StreamResult<Bytes> {
        if !self.buf.is_empty() {
            let n = size.min(self.buf.len());
            return Ok(self.buf.split_to(n));
        }
        match &self.end {
            None => Ok(Bytes::new()),
            Some(Ok(())) => Err(StreamError::Closed),
            Some(Err(e)) => Err(StreamError::LastOperationFailed(wasmtime::format_err!(
                "{e}"
            ))),
        }
    }
}

/// A user-metadata JSON object, or why not.
fn user_metadata(text: Option<String>) -> Result<Option<Value>, StorageError> {
    let Some(text) = text else { return Ok(None) };
    objects::check_user_metadata_size(&text)?;
    match serde_json::from_str::<Value>(&text) {
        Ok(v @ Value::Object(_)) => Ok(Some(v)),
        _ => Err(StorageError::invalid("user-metadata must be a JSON object")),
    }
}

fn info(id: String, t: &Target, w: &Written, d: &Describe) -> ObjectInfo {
    ObjectInfo {
        id,
        name: t.name.clone(),
        size: w.stored.size,
        content_type: d.mime.clone(),
        etag: w.stored.etag.clone(),
        cache_control: d.cache_control.clone(),
        last_modified: crate::time::rfc3339_millis(w.stored.last_modified),
    }
}

/// What a path segment of a signed URL keeps as is (the rest is
/// percent-encoded; the server decodes it back).
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~')
    .remove(b'/');

impl HostUpload for StorageView<'_> {
    async fn body(
        &mut self,
        this: Resource<UploadState>,
    ) -> Result<Resource<DynOutputStream>, GuestError> {
        let up = self.table.get_mut(&this).map_err(table_error)?;
        let tx = match (up.body_taken, up.sender.take()) {
            (false, Some(tx)) => tx,
            _ => return Err(StorageError::invalid("the upload's body was already taken").into()),
        };
        up.body_taken = true;
        let stream: DynOutputStream = Box::new(UploadBody { tx, permit: None });
        self.table.push_child(stream, &this).map_err(table_error)
    }

    async fn finish(&mut self, this: Resource<UploadState>) -> Result<ObjectInfo, GuestError> {
        let mut up = self.table.delete(this).map_err(|_| {
            GuestError::from(StorageError::invalid(
                "drop the upload's body stream before finish",
            ))
        })?;
        // The guest's stream is gone (or was never taken): the bytes end here.
        up.sender = None;
        let task = up.task.take().expect("an upload's task is taken only once");
        let written = task
            .await
            .map_err(|_| GuestError::from(StorageError::internal()))??;
        let a = &up.access;
        let owner = a.principal.user_id().map(str::to_string);
        // The bytes are stored: from here on a failure must queue them.
        let ready = match self.timeout(a) {
            Ok(t) => a.permit().await.map(|p| (t, p)),
            Err(e) => Err(e),
        };
        let (timeout, _permit) = match ready {
            Ok(r) => r,
            Err(e) => {
                a.storage.forget(&written.version).await;
                return Err(e);
            }
        };
        // `record` queues them itself if the row is refused.
        let id = objects::record(
            &a.storage,
            &a.who(timeout),
            &up.target,
            written.clone(),
            up.describe.clone(),
            owner,
            up.upsert,
        )
        .await?;
        Ok(info(id, &up.target, &written, &up.describe))
    }

    async fn drop(&mut self, rep: Resource<UploadState>) -> wasmtime::Result<()> {
        // With its body stream still open the upload stays in the table
        // until the call ends; dropping it then discards it the same way.
        let _ = self.table.delete(rep);
        Ok(())
    }
}

impl Host for StorageView<'_> {
    async fn begin_upload(
        &mut self,
        bucket: String,
        path: String,
        options: UploadOptions,
    ) -> Result<Resource<UploadState>, GuestError> {
        let a = self.access(&bucket, Mode::Write)?;
        let timeout = self.timeout(&a)?;
        let target = {
            let _permit = a.permit().await?;
            objects::target(&a.storage, &a.who(timeout), &bucket, &path).await?
        };
        let describe = Describe {
            mime: options
                .content_type
                .filter(|m| !m.is_empty())
                .unwrap_or_else(|| "application/octet-stream".into()),
            cache_control: objects::cache_control(options.cache_control.as_deref()),
            user_metadata: user_metadata(options.user_metadata)?,
        };
        target.check_mime(&describe.mime)?;
        let (tx, rx) = mpsc::channel::<Bytes>(IN_FLIGHT);
        let chunks = futures::stream::unfold(rx, |mut rx| async move {
            rx.recv()
                .await
                .map(|b| (Ok::<_, std::convert::Infallible>(b), rx))
        });
        let body = backend::limited(chunks, target.limit, a.storage.idle_timeout);
        let storage = a.storage.clone();
        let task = tokio::spawn(async move { objects::store(&storage, body).await });
        let up = UploadState {
            access: a,
            target,
            describe,
            upsert: options.upsert,
            sender: Some(tx),
            body_taken: false,
            task: Some(task),
        };
        self.table.push(up).map_err(table_error)
    }

    async fn download(
        &mut self,
        bucket: String,
        path: String,
    ) -> Result<(ObjectInfo, Resource<DynInputStream>), GuestError> {
        let a = self.access(&bucket, Mode::Read)?;
        names::object_key(&path)?;
        let timeout = self.timeout(&a)?;
        let obj = {
            let _permit = a.permit().await?;
            meta::find(&a.who(timeout), &bucket, &path).await?
        };
        let fetched = a
            .storage
            .store
            .get(&obj.version, None)
            .await
            .map_err(StorageError::from)?;
        let text = |k: &str| obj.meta_str(k).unwrap_or_default().to_string();
        let info = ObjectInfo {
            id: obj.id.clone(),
            name: path,
            size: obj.size(),
            content_type: obj
                .meta_str("mimetype")
                .unwrap_or("application/octet-stream")
                .to_string(),
            etag: text("eTag"),
            cache_control: text("cacheControl"),
            last_modified: crate::time::rfc3339_millis(obj.updated_at),
        };
        let stream: DynInputStream = Box::new(DownloadBody {
            body: fetched.body,
            buf: Bytes::new(),
            end: None,
        });
        Ok((info, self.table.push(stream).map_err(table_error)?))
    }

    async fn list(&mut self, bucket: String, options: ListOptions) -> Result<String, GuestError> {
        let a = self.access(&bucket, Mode::Read)?;
        let prefix = names::folder(options.prefix.as_deref().unwrap_or(""));
        let limit = options.limit.unwrap_or(100).clamp(1, 1000) as i32;
        let offset = options.offset.unwrap_or(0).min(i32::MAX as u32) as i32;
        let search = options.search.unwrap_or_default();
        let timeout = self.timeout(&a)?;
        let _permit = a.permit().await?;
        let who = a.who(timeout);
        Ok(meta::list(
            &who, &bucket, &prefix, &search, limit, offset, "name", "asc",
        )
        .await?)
    }

    async fn remove(
        &mut self,
        bucket: String,
        paths: Vec<String>,
    ) -> Result<Vec<String>, GuestError> {
        let a = self.access(&bucket, Mode::Write)?;
        if paths.is_empty() || paths.len() > 1000 {
            return Err(StorageError::invalid("paths must list 1 to 1000 names").into());
        }
        let timeout = self.timeout(&a)?;
        let out = {
            let _permit = a.permit().await?;
            meta::remove(&a.who(timeout), &bucket, paths, false).await?
        };
        a.storage.gc_kick.notify_one();
        let rows: Vec<Value> = serde_json::from_str(&out).map_err(|_| StorageError::internal())?;
        Ok(rows
            .iter()
            .filter_map(|r| r.get("name").and_then(Value::as_str).map(str::to_string))
            .collect())
    }

    async fn create_signed_url(
        &mut self,
        bucket: String,
        path: String,
        expires_in: u32,
    ) -> Result<String, GuestError> {
        let a = self.access(&bucket, Mode::Read)?;
        names::object_key(&path)?;
        if expires_in == 0 {
            return Err(StorageError::new(
                400,
                "InvalidParameter",
                "InvalidParameter",
                "Invalid Parameter expiresIn",
            )
            .into());
        }
        // The principal must be able to read it now, as over HTTP.
        let timeout = self.timeout(&a)?;
        {
            let _permit = a.permit().await?;
            meta::find(&a.who(timeout), &bucket, &path).await?;
        }
        let t = token::sign(
            &a.jwt,
            Scope::Download,
            &bucket,
            &path,
            expires_in.into(),
            None,
        )?;
        let url = format!(
            "/storage/v1/object/sign/{}/{}?token={t}",
            utf8_percent_encode(&bucket, SEGMENT),
            utf8_percent_encode(&path, SEGMENT)
        );
        Ok(match &a.base_url {
            Some(base) => format!("{}{url}", base.trim_end_matches('/')),
            None => url,
        })
    }
}
