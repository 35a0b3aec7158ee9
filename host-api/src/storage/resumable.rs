//! Resumable uploads (TUS, `/storage/v1/upload/resumable`): the state of an
//! upload in PostgreSQL (`wasmbase.storage_uploads`), its bytes as numbered
//! parts in the backend, and the steps the protocol's requests take —
//! [`create`] (the caller's rights checked then, as storage-api does),
//! [`append`] (under the upload's lock, see `upload_locks`), [`discard`]
//! (termination and expiry). The object row is written as the caller only
//! when the last byte is in, through `objects::record_row` as every other
//! upload's row is (a finish that fails midway is ended by the next request:
//! [`settle`]), so nothing half-written is ever visible.
//!
//! On S3 bytes become parts of [`part_size`], and bytes short of S3's 5 MiB
//! minimum at the end of a request a temporary backend object, the upload's
//! `tail`, which the next request — on any node — reads back first. The
//! local disk takes any size: bytes are appended a MiB at a time (storing one
//! while the next arrives) and recorded as one growing part. Either way the
//! offset a client is told is durable (flushed before it is recorded) and
//! shared.

use super::backend::{self, ByteStream, Part, StoreError, Stored};
use super::meta::As;
use super::objects::{self, Describe, Written};
use super::upload_locks::UploadLock;
use super::{Storage, StorageError};
use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use std::time::SystemTime;

/// Size of a part (at least; see [`part_size`]).
pub const PART: u64 = 8 * 1024 * 1024;

/// Where requests are cut into parts on a backend that takes any size.
const LOCAL_STEP: usize = 1024 * 1024;

/// Most parts an upload may have (S3's limit).
const MAX_PARTS: u64 = 10_000;

/// Who may continue an upload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Creator {
    /// Whoever holds a signed upload token for the upload's object (the API
    /// checks the token on every request).
    Signed,
    /// A caller with this role and, for a user, this `sub`.
    Caller {
        /// Role name (`anon`, `authenticated`, `service_role`).
        role: String,
        /// The user, if one.
        sub: Option<String>,
    },
}

/// What a creation request asks for.
#[derive(Debug, Clone)]
pub struct NewUpload {
    /// Bucket id.
    pub bucket: String,
    /// Object name.
    pub name: String,
    /// `Upload-Length`.
    pub length: u64,
    /// How the object will be described.
    pub describe: Describe,
    /// `Upload-Metadata` as sent (echoed by `HEAD`).
    pub metadata_header: String,
    /// Whether an existing object may be replaced.
    pub upsert: bool,
    /// The object's owner.
    pub owner: Option<String>,
    /// Who may continue it.
    pub creator: Creator,
}

/// An upload as recorded.
#[derive(Debug, Clone)]
pub struct Upload {
    /// The id in its URL.
    pub id: String,
    /// Bucket id.
    pub bucket: String,
    /// Object name.
    pub name: String,
    /// `Upload-Length`.
    pub length: u64,
    /// `Upload-Offset`: bytes durably received.
    pub received: u64,
    /// `Upload-Metadata` as sent.
    pub metadata_header: String,
    /// Who may continue it.
    pub creator: Creator,
    /// Whether an existing object may be replaced.
    pub upsert: bool,
    /// `Upload-Expires`.
    pub expires_at: SystemTime,
    version: String,
    handle: String,
    parts: Vec<Part>,
    tail: Option<(String, u64)>,
    describe: Describe,
    owner: Option<String>,
    /// `received` and the number of parts as last read or saved.
    saved: (u64, usize),
}

impl Upload {
    /// The object's owner when it is written.
    pub fn owner(&self) -> Option<&str> {
        self.owner.as_deref()
    }

    /// Whether every byte is recorded (the object is written, or is being:
    /// see [`settle`]).
    pub fn complete(&self) -> bool {
        self.received == self.length
    }
}

/// The part size of an upload of `length` bytes: [`PART`], or more where
/// that would take more than S3's 10,000 parts.
pub fn part_size(length: u64) -> u64 {
    const MIB: u64 = 1024 * 1024;
    PART.max(length.div_ceil(MAX_PARTS).div_ceil(MIB) * MIB)
}

/// The upload is unknown, finished, terminated or expired.
pub fn no_such_upload() -> StorageError {
    StorageError::new(404, "NoSuchUpload", "not_found", "Upload not found")
}

/// Another request is writing the upload (TUS clients retry on 409).
pub fn locked() -> StorageError {
    StorageError::new(
        409,
        "ResourceLocked",
        "Conflict",
        "The upload is being written by another request",
    )
}

/// Checks the request as storage-api does at creation — the names, the
/// bucket's limits and types, and `who`'s right to write the object (the
/// INSERT policy; with upsert, SELECT and UPDATE) — and starts the upload.
/// An empty upload is written at once (its result is already complete).
pub async fn create(
    storage: &Storage,
    who: &As<'_>,
    new: NewUpload,
) -> Result<Upload, StorageError> {
    let target = objects::target(storage, who, &new.bucket, &new.name).await?;
    if new.length > target.limit {
        return Err(StorageError::too_large());
    }
    target.check_mime(&new.describe.mime)?;
    super::meta::can_insert(who, &new.bucket, &new.name, new.upsert).await?;
    let mut up = Upload {
        id: hex::encode(rand::random::<[u8; 16]>()),
        bucket: new.bucket,
        name: new.name,
        length: new.length,
        received: 0,
        metadata_header: new.metadata_header,
        creator: new.creator,
        upsert: new.upsert,
        expires_at: SystemTime::now() + storage.resumable_expiry,
        version: backend::new_key(),
        handle: String::new(),
        parts: Vec::new(),
        tail: None,
        describe: new.describe,
        owner: new.owner,
        saved: (0, 0),
    };
    if up.length == 0 {
        let empty = futures::stream::empty().boxed();
        let written = objects::store(storage, empty).await?;
        let (describe, owner) = (up.describe.clone(), up.owner.clone());
        objects::record(storage, who, &target, written, describe, owner, up.upsert).await?;
        return Ok(up);
    }
    up.handle = storage.store.begin_parts(&up.version).await?;
    if let Err(e) = insert(storage, &up).await {
        let _ = storage.store.abort_parts(&up.version, &up.handle).await;
        return Err(e);
    }
    Ok(up)
}

fn creator_columns(c: &Creator) -> (bool, String, Option<String>) {
    match c {
        Creator::Signed => (true, String::new(), None),
        Creator::Caller { role, sub } => (false, role.clone(), sub.clone()),
    }
}

async fn insert(storage: &Storage, up: &Upload) -> Result<(), StorageError> {
    let c = storage
        .system
        .get()
        .await
        .map_err(crate::db::DbError::from)?;
    let (signed, role, sub) = creator_columns(&up.creator);
    c.execute(
        "INSERT INTO wasmbase.storage_uploads (id, bucket_id, name, version, handle, length, \
           mime, cache_control, user_metadata, metadata_header, upsert, owner, signed, \
           creator_role, creator_sub, expires_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)",
        &[
            &up.id,
            &up.bucket,
            &up.name,
            &up.version,
            &up.handle,
            &(up.length as i64),
            &up.describe.mime,
            &up.describe.cache_control,
            &up.describe.user_metadata,
            &up.metadata_header,
            &up.upsert,
            &up.owner,
            &signed,
            &role,
            &sub,
            &up.expires_at,
        ],
    )
    .await?;
    Ok(())
}

/// The upload `id`, unless it is unknown or expired.
pub async fn load(storage: &Storage, id: &str) -> Result<Upload, StorageError> {
    load_row(storage, id, false).await
}

async fn load_row(storage: &Storage, id: &str, expired: bool) -> Result<Upload, StorageError> {
    let c = storage
        .system
        .get()
        .await
        .map_err(crate::db::DbError::from)?;
    let row = c
        .query_opt(
            "SELECT bucket_id, name, version, handle, length, received, parts, tail, tail_size, \
               mime, cache_control, user_metadata, metadata_header, upsert, owner, signed, \
               creator_role, creator_sub, expires_at \
             FROM wasmbase.storage_uploads WHERE id = $1 AND (expires_at > now()) <> $2",
            &[&id, &expired],
        )
        .await?
        .ok_or_else(no_such_upload)?;
    let parts: serde_json::Value = row.get(6);
    let parts: Vec<Part> = serde_json::from_value(parts).map_err(|e| {
        tracing::error!(id, error = %e, "a resumable upload's parts do not parse");
        StorageError::internal()
    })?;
    let tail: Option<String> = row.get(7);
    let tail_size: i64 = row.get(8);
    let creator = if row.get::<_, bool>(15) {
        Creator::Signed
    } else {
        Creator::Caller {
            role: row.get(16),
            sub: row.get(17),
        }
    };
    let received = row.get::<_, i64>(5) as u64;
    Ok(Upload {
        saved: (received, parts.len()),
        id: id.to_string(),
        bucket: row.get(0),
        name: row.get(1),
        version: row.get(2),
        handle: row.get(3),
        length: row.get::<_, i64>(4) as u64,
        received,
        parts,
        tail: tail.map(|t| (t, tail_size as u64)),
        describe: Describe {
            mime: row.get(9),
            cache_control: row.get(10),
            user_metadata: row.get(11),
        },
        metadata_header: row.get(12),
        upsert: row.get(13),
        owner: row.get(14),
        creator,
        expires_at: row.get(18),
    })
}

/// The lock was lost midway: another node may be writing the upload now, so
/// nothing more is recorded (retryable: the client asks for the offset again).
fn lock_lost() -> StorageError {
    StorageError::new(
        503,
        "UploadLockLost",
        "ServiceUnavailable",
        "The upload's lock was lost; resume it",
    )
}

/// Records progress, if the row is still as this request last saw it (a
/// writer whose lock was lost cannot overwrite another's progress).
async fn save(storage: &Storage, lock: &UploadLock, up: &mut Upload) -> Result<(), StorageError> {
    if !lock.held() {
        return Err(lock_lost());
    }
    storage.store.sync_parts(&up.version, &up.handle).await?;
    let c = storage
        .system
        .get()
        .await
        .map_err(crate::db::DbError::from)?;
    let parts = serde_json::to_value(&up.parts).map_err(|_| StorageError::internal())?;
    let (tail, tail_size) = match &up.tail {
        Some((k, n)) => (Some(k.clone()), *n as i64),
        None => (None, 0),
    };
    let n = c
        .execute(
            "UPDATE wasmbase.storage_uploads SET received = $2, parts = $3, tail = $4, \
               tail_size = $5, expires_at = $6 \
             WHERE id = $1 AND received = $7 AND jsonb_array_length(parts) = $8",
            &[
                &up.id,
                &(up.received as i64),
                &parts,
                &tail,
                &tail_size,
                &up.expires_at,
                &(up.saved.0 as i64),
                &(up.saved.1 as i32),
            ],
        )
        .await?;
    if n == 0 {
        return Err(locked());
    }
    up.saved = (up.received, up.parts.len());
    Ok(())
}

/// A part being stored while the request's next bytes arrive.
struct InFlight {
    number: i32,
    size: u64,
    task: tokio::task::JoinHandle<Result<String, StoreError>>,
}

/// Starts storing `bytes` as the upload's next part. At most one is in
/// flight: see [`land`].
fn start_part(storage: &Storage, up: &Upload, bytes: Bytes) -> InFlight {
    let number = up.parts.len() as i32 + 1;
    let offset: u64 = up.parts.iter().map(|p| p.size).sum();
    let size = bytes.len() as u64;
    let store = storage.store.clone();
    let (version, handle) = (up.version.clone(), up.handle.clone());
    let task = tokio::spawn(async move {
        store
            .put_part(&version, &handle, number, offset, bytes)
            .await
    });
    InFlight { number, size, task }
}

/// Waits for the part in flight, if any, and adds it to the upload's parts.
/// Where the backend takes parts of any size (the local disk appends), the
/// bytes extend the last part instead, so the list stays one entry long.
async fn land(
    storage: &Storage,
    up: &mut Upload,
    pending: &mut Option<InFlight>,
) -> Result<(), StorageError> {
    let Some(p) = pending.take() else {
        return Ok(());
    };
    let etag = p
        .task
        .await
        .map_err(|e| StoreError::Backend(format!("storing a part: {e}")))??;
    match up.parts.last_mut() {
        Some(last) if storage.store.min_part() == 0 => last.size += p.size,
        _ => up.parts.push(Part {
            number: p.number,
            size: p.size,
            etag,
        }),
    }
    Ok(())
}

/// Reads a tail object back (smaller than a part, so bounded).
async fn read_tail(storage: &Storage, key: &str, buf: &mut BytesMut) -> Result<(), StorageError> {
    let mut body = storage.store.get(key, None).await?.body;
    while let Some(chunk) = body.next().await {
        buf.extend_from_slice(&chunk?);
    }
    Ok(())
}

/// `PATCH`: appends `body` (already cut at the bytes left and at the idle
/// timeout, see `backend::limited`) at `offset`, which must be the upload's
/// offset. What arrived before a cut-off is kept, as TUS asks (bytes past
/// `Upload-Length` are dropped). With the last byte the object is written as
/// `who` ([`finish`]). Returns the upload as it now stands. Call it holding
/// the upload's lock, from a task the request cannot cancel.
pub async fn append(
    storage: &Storage,
    lock: &UploadLock,
    who: &As<'_>,
    mut up: Upload,
    offset: u64,
    mut body: ByteStream,
) -> Result<Upload, StorageError> {
    if up.complete() {
        // Every byte is in but an earlier finish did not end: end it now.
        finish(storage, lock, who, &up).await?;
        return Ok(up);
    }
    if offset != up.received {
        return Err(StorageError::new(
            409,
            "InvalidOffset",
            "Conflict",
            format!(
                "Upload-Offset {offset} does not match the upload's offset {}",
                up.received
            ),
        ));
    }
    // Where a request's bytes are cut into parts: the part size, or on a
    // backend that takes any size (the local disk) every MiB, so storing one
    // overlaps receiving the next.
    let step = match storage.store.min_part() {
        0 => LOCAL_STEP,
        _ => part_size(up.length) as usize,
    };
    // A request's last bytes become a part of their own only from this size
    // (the backend's least part, and never more than S3's 10,000 parts).
    let least = storage.store.min_part().max(up.length.div_ceil(MAX_PARTS));
    let mut buf = BytesMut::new();
    // The old tail is read into the buffer; it is dropped once the row no
    // longer names it.
    let mut old_tail = up.tail.take();
    if let Some((key, _)) = &old_tail {
        read_tail(storage, key, &mut buf).await?;
    }
    let mut cut = None;
    let mut pending = None;
    let mut unsaved = 0u64;
    loop {
        match body.next().await {
            None => break,
            Some(Err(e)) => {
                cut = Some(e);
                break;
            }
            Some(Ok(chunk)) => {
                buf.extend_from_slice(&chunk);
                while buf.len() >= step {
                    land(storage, &mut up, &mut pending).await?;
                    pending = Some(start_part(storage, &up, buf.split_to(step).freeze()));
                    unsaved += step as u64;
                    if unsaved < PART {
                        continue;
                    }
                    // A long request records its progress every part size.
                    land(storage, &mut up, &mut pending).await?;
                    unsaved = 0;
                    let in_parts: u64 = up.parts.iter().map(|p| p.size).sum();
                    if in_parts < up.length {
                        up.received = in_parts;
                        save(storage, lock, &mut up).await?;
                        if let Some((k, _)) = old_tail.take() {
                            storage.forget(&k).await;
                        }
                    }
                }
            }
        }
    }
    land(storage, &mut up, &mut pending).await?;
    let in_parts: u64 = up.parts.iter().map(|p| p.size).sum();
    let total = in_parts + buf.len() as u64;
    let done = total == up.length;
    if !buf.is_empty() && (done || buf.len() as u64 >= least) {
        pending = Some(start_part(storage, &up, buf.freeze()));
        land(storage, &mut up, &mut pending).await?;
    } else if !buf.is_empty() {
        let key = backend::new_key();
        let len = buf.len() as u64;
        let bytes = buf.freeze();
        storage
            .store
            .put(&key, futures::stream::once(async { Ok(bytes) }).boxed())
            .await?;
        up.tail = Some((key, len));
    }
    up.received = total;
    up.expires_at = SystemTime::now() + storage.resumable_expiry;
    if let Err(e) = save(storage, lock, &mut up).await {
        if let Some((k, _)) = up.tail.take() {
            storage.forget(&k).await;
        }
        return Err(e);
    }
    if let Some((k, _)) = old_tail {
        storage.forget(&k).await;
    }
    if done {
        finish(storage, lock, who, &up).await?;
        return Ok(up);
    }
    match cut {
        // The client went away or stalled: it will ask where to resume.
        None | Some(StoreError::Client(_) | StoreError::Idle) => Ok(up),
        Some(e) => Err(e.into()),
    }
}

/// `HEAD` on an upload whose every byte is in: ends an earlier finish that
/// did not (a client must never see the whole offset of an upload whose
/// object is not written).
pub async fn settle(
    storage: &Storage,
    lock: &UploadLock,
    who: &As<'_>,
    up: &Upload,
) -> Result<(), StorageError> {
    if up.complete() {
        finish(storage, lock, who, up).await?;
    }
    Ok(())
}

/// A resumable upload's eTag: its version (new with every upload, as an
/// eTag must change with the bytes) and its number of parts, in S3's
/// multipart shape. Not an MD5 of the bytes (S3's multipart eTags are not
/// either), so no request spends CPU hashing megabytes.
fn multipart_etag(version: &str, parts: &[Part]) -> String {
    format!("\"{}-{}\"", version.replace('-', ""), parts.len())
}

/// Joins the parts and writes the object row as `who`, for an upload whose
/// every byte is recorded. A refusal (RLS, the bucket gone or its limit
/// lowered, an existing name) ends the upload and deletes its bytes; a
/// failure (the database, the backend, the lock) leaves it to be finished by
/// the client's retry, which may find the parts already joined.
async fn finish(
    storage: &Storage,
    lock: &UploadLock,
    who: &As<'_>,
    up: &Upload,
) -> Result<(), StorageError> {
    let refused = |e: &StorageError| e.status < 500;
    let target = match objects::target(storage, who, &up.bucket, &up.name).await {
        Ok(t) if up.length > t.limit => Err(StorageError::too_large()),
        other => other,
    };
    let target = match target {
        Ok(t) => t,
        Err(e) => {
            if refused(&e) {
                let _ = discard(storage, up).await;
            }
            return Err(e);
        }
    };
    if !lock.held() {
        return Err(lock_lost());
    }
    if let Err(e) = storage
        .store
        .complete_parts(&up.version, &up.handle, &up.parts)
        .await
    {
        // Joined by an earlier finish that did not end?
        let probe = backend::ByteRange { start: 0, end: 0 };
        if storage.store.get(&up.version, Some(probe)).await.is_err() {
            return Err(e.into());
        }
    }
    let w = Written {
        version: up.version.clone(),
        stored: Stored {
            size: up.length,
            etag: multipart_etag(&up.version, &up.parts),
            last_modified: SystemTime::now(),
        },
    };
    let (describe, owner) = (up.describe.clone(), up.owner.clone());
    match objects::record_row(storage, who, &target, w, describe, owner, up.upsert).await {
        Ok(_) => {
            delete_row(storage, &up.id).await;
            Ok(())
        }
        Err(e) if refused(&e) => {
            storage.forget(&up.version).await;
            delete_row(storage, &up.id).await;
            Err(e)
        }
        Err(e) => Err(e),
    }
}

async fn delete_row(storage: &Storage, id: &str) {
    let deleted = async {
        let c = storage.system.get().await?;
        c.execute("DELETE FROM wasmbase.storage_uploads WHERE id = $1", &[&id])
            .await?;
        Ok::<_, crate::db::DbError>(())
    }
    .await;
    if let Err(e) = deleted {
        tracing::warn!(id, error = %e.describe(), "could not delete a resumable upload's row; it expires");
    }
}

/// Ends an unfinished upload (termination, expiry, a refused finish): its
/// parts are dropped, then its tail and row. If the backend cannot drop the
/// parts, the row stays (expiry tries again). Call it holding the lock.
pub async fn discard(storage: &Storage, up: &Upload) -> Result<(), StorageError> {
    if let Err(e) = storage.store.abort_parts(&up.version, &up.handle).await {
        tracing::warn!(id = up.id, error = %e, "could not drop an upload's parts; expiry tries again");
        return Err(e.into());
    }
    if let Some((k, _)) = &up.tail {
        storage.forget(k).await;
    }
    delete_row(storage, &up.id).await;
    Ok(())
}

/// Discards up to 100 expired uploads that no request holds; returns how many.
pub async fn expire(storage: &Storage) -> Result<usize, StorageError> {
    let ids: Vec<String> = {
        let c = storage
            .system
            .get()
            .await
            .map_err(crate::db::DbError::from)?;
        c.query(
            "SELECT id FROM wasmbase.storage_uploads WHERE expires_at <= now() \
             ORDER BY expires_at LIMIT 100",
            &[],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect()
    };
    let mut n = 0;
    for id in ids {
        let Some(_lock) = storage.upload_locks.try_lock(&id).await? else {
            continue;
        };
        // Read again under the lock: a request may have just extended it.
        let up = match load_row(storage, &id, true).await {
            Ok(up) => up,
            Err(e) if e.code == "NoSuchUpload" => continue,
            Err(e) => return Err(e),
        };
        if discard(storage, &up).await.is_ok() {
            tracing::info!(
                id,
                bucket = up.bucket,
                name = up.name,
                "expired resumable upload discarded"
            );
            n += 1;
        }
    }
    Ok(n)
}

/// How often a node looks for expired uploads.
pub const EXPIRY_POLL: std::time::Duration = std::time::Duration::from_secs(60);

/// Discards expired uploads every [`EXPIRY_POLL`] until `stop`; every node
/// runs it, and the upload locks keep two from discarding the same one.
pub async fn expiry_worker(storage: Storage, stop: tokio_util::sync::CancellationToken) {
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(EXPIRY_POLL) => {}
        }
        loop {
            match expire(&storage).await {
                Ok(100) => continue,
                Ok(_) => break,
                Err(e) => {
                    tracing::warn!(error = %e, "expiring resumable uploads failed; trying again");
                    break;
                }
            }
        }
    }
}
