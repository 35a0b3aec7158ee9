//! The S3 backend (AWS S3, MinIO, R2, any S3-compatible server): for N nodes,
//! which then share the bytes as they share PostgreSQL. An object's bytes are
//! `<prefix><version uuid>` in one bucket. Uploads stream: a body that ends
//! within [`PART`] bytes goes up in one `PutObject`, a longer one as a
//! multipart upload of [`PART`]-sized parts (aborted on any failure, so a cut-off
//! upload leaves nothing), so at most one part per upload is in memory.
//! Downloads stream `GetObject`'s body, with the range passed through.

use super::backend::{ByteRange, ByteStream, Fetched, ObjectStore, Part, StoreError, Stored};
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata};
use aws_sdk_s3::primitives::ByteStream as S3Body;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use aws_sdk_s3::Client;
use bytes::{Bytes, BytesMut};
use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
use md5::{Digest, Md5};
use std::time::SystemTime;

/// Size of one multipart part (S3's minimum is 5 MiB, except the last).
pub const PART: usize = 8 * 1024 * 1024;

/// S3's least part size (all but the last part).
pub const MIN_PART: u64 = 5 * 1024 * 1024;

/// Where the S3 backend keeps bytes.
#[derive(Debug, Clone)]
pub struct S3Settings {
    /// Endpoint URL (`http://127.0.0.1:9000`); `None` for AWS itself.
    pub endpoint: Option<String>,
    /// Region (`us-east-1` when the server does not care).
    pub region: String,
    /// The one bucket all objects go to.
    pub bucket: String,
    /// Access key id.
    pub access_key_id: String,
    /// Secret access key.
    pub secret_access_key: String,
    /// Path-style addressing (`endpoint/bucket/key`), as MinIO and most
    /// self-hosted servers want.
    pub force_path_style: bool,
    /// Prefix of every key (e.g. `wasmbase/`).
    pub prefix: String,
}

/// Objects in an S3 bucket.
#[derive(Clone)]
pub struct S3 {
    client: Client,
    bucket: String,
    prefix: String,
}

impl std::fmt::Debug for S3 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3")
            .field("bucket", &self.bucket)
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

fn backend_error<E>(what: &str, e: E) -> StoreError
where
    E: std::error::Error + ProvideErrorMetadata,
{
    if e.code() == Some("NoSuchKey") || e.code() == Some("NotFound") {
        return StoreError::NotFound;
    }
    StoreError::Backend(format!("S3 {what}: {}", DisplayErrorContext(&e)))
}

impl S3 {
    /// A client for `s`; nothing is contacted until the first call.
    pub fn new(s: &S3Settings) -> S3 {
        let creds = aws_sdk_s3::config::Credentials::new(
            &s.access_key_id,
            &s.secret_access_key,
            None,
            None,
            "wasmbase",
        );
        let mut b = aws_sdk_s3::Config::builder()
            .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
            .region(aws_sdk_s3::config::Region::new(s.region.clone()))
            .credentials_provider(creds)
            .force_path_style(s.force_path_style);
        if let Some(e) = &s.endpoint {
            b = b.endpoint_url(e);
        }
        S3 {
            client: Client::from_conf(b.build()),
            bucket: s.bucket.clone(),
            prefix: s.prefix.clone(),
        }
    }

    fn key(&self, key: &str) -> Result<String, StoreError> {
        if !super::backend::is_key(key) {
            return Err(StoreError::Backend(format!("not a storage key: {key:?}")));
        }
        Ok(format!("{}{key}", self.prefix))
    }

    /// Creates the bucket if it does not exist (for `dev`-style setups and
    /// tests; production buckets are made by the operator).
    pub async fn ensure_bucket(&self) -> Result<(), StoreError> {
        match self.client.head_bucket().bucket(&self.bucket).send().await {
            Ok(_) => Ok(()),
            Err(_) => match self
                .client
                .create_bucket()
                .bucket(&self.bucket)
                .send()
                .await
            {
                Ok(_) => Ok(()),
                Err(e) if e.code() == Some("BucketAlreadyOwnedByYou") => Ok(()),
                Err(e) => Err(backend_error("CreateBucket", e)),
            },
        }
    }

    async fn upload(&self, key: &str, mut body: ByteStream) -> Result<Stored, StoreError> {
        let mut md5 = Md5::new();
        let mut size = 0u64;
        let mut buf = BytesMut::with_capacity(PART);
        // First part: small bodies go up in one PutObject.
        let mut ended = fill(&mut body, &mut buf, &mut md5, &mut size).await?;
        if ended {
            self.client
                .put_object()
                .bucket(&self.bucket)
                .key(self.key(key)?)
                .content_length(buf.len() as i64)
                .body(S3Body::from(buf.freeze()))
                .send()
                .await
                .map_err(|e| backend_error("PutObject", e))?;
        } else {
            // The part path resumable uploads use, in one go.
            let id = self.begin_parts(key).await?;
            let parts = async {
                let mut parts = Vec::new();
                loop {
                    let number = parts.len() as i32 + 1;
                    let chunk: Bytes =
                        std::mem::replace(&mut buf, BytesMut::with_capacity(PART)).freeze();
                    let len = chunk.len() as u64;
                    let etag = self.put_part(key, &id, number, 0, chunk).await?;
                    parts.push(Part {
                        number,
                        size: len,
                        etag,
                    });
                    if ended {
                        return Ok::<_, StoreError>(parts);
                    }
                    ended = fill(&mut body, &mut buf, &mut md5, &mut size).await?;
                    if ended && buf.is_empty() {
                        return Ok(parts);
                    }
                }
            }
            .await;
            let finished = match parts {
                Ok(parts) => self.complete_parts(key, &id, &parts).await,
                Err(e) => Err(e),
            };
            if let Err(e) = finished {
                // Nothing half-made stays behind (the parts cost storage).
                let _ = self.abort_parts(key, &id).await;
                return Err(e);
            }
        }
        Ok(Stored {
            size,
            etag: format!("\"{}\"", hex::encode(md5.finalize())),
            last_modified: SystemTime::now(),
        })
    }
}

/// Reads the body into `buf` until it holds [`PART`] bytes or the body ends
/// (then `true`), hashing and counting as it goes.
async fn fill(
    body: &mut ByteStream,
    buf: &mut BytesMut,
    md5: &mut Md5,
    size: &mut u64,
) -> Result<bool, StoreError> {
    while buf.len() < PART {
        match body.next().await {
            None => return Ok(true),
            Some(chunk) => {
                let chunk = chunk?;
                md5.update(&chunk);
                *size += chunk.len() as u64;
                buf.extend_from_slice(&chunk);
            }
        }
    }
    Ok(false)
}

impl ObjectStore for S3 {
    fn put(&self, key: &str, body: ByteStream) -> BoxFuture<'_, Result<Stored, StoreError>> {
        let key = key.to_string();
        async move { self.upload(&key, body).await }.boxed()
    }

    fn get(
        &self,
        key: &str,
        range: Option<ByteRange>,
    ) -> BoxFuture<'_, Result<Fetched, StoreError>> {
        let key = self.key(key);
        async move {
            let mut req = self.client.get_object().bucket(&self.bucket).key(key?);
            if let Some(r) = range {
                req = req.range(format!("bytes={}-{}", r.start, r.end));
            }
            let out = req
                .send()
                .await
                .map_err(|e| backend_error("GetObject", e))?;
            let len = out.content_length().unwrap_or(0).max(0) as u64;
            let reader = out.body.into_async_read();
            let body = tokio_util::io::ReaderStream::with_capacity(reader, 256 * 1024)
                .map(|r| r.map_err(|e| StoreError::Backend(format!("S3 body: {e}"))))
                .boxed();
            Ok(Fetched { body, len })
        }
        .boxed()
    }

    fn copy(&self, from: &str, to: &str) -> BoxFuture<'_, Result<Stored, StoreError>> {
        let (from, to) = (self.key(from), self.key(to));
        async move {
            let (from, to) = (from?, to?);
            // Streamed through this node rather than CopyObject, so the stored
            // ETag stays the MD5 of the bytes (and copies past 5 GiB work).
            let src = self
                .client
                .get_object()
                .bucket(&self.bucket)
                .key(&from)
                .send()
                .await
                .map_err(|e| backend_error("GetObject", e))?;
            let reader = src.body.into_async_read();
            let body = tokio_util::io::ReaderStream::with_capacity(reader, 256 * 1024)
                .map(|r| r.map_err(|e| StoreError::Backend(format!("S3 body: {e}"))))
                .boxed();
            let to_key = to.strip_prefix(&self.prefix).unwrap_or(&to).to_string();
            self.upload(&to_key, body).await
        }
        .boxed()
    }

    fn list(&self) -> BoxFuture<'_, Result<Vec<(String, SystemTime)>, StoreError>> {
        async move {
            let mut out = Vec::new();
            let mut token: Option<String> = None;
            loop {
                let page = self
                    .client
                    .list_objects_v2()
                    .bucket(&self.bucket)
                    .prefix(&self.prefix)
                    .set_continuation_token(token.take())
                    .send()
                    .await
                    .map_err(|e| backend_error("ListObjectsV2", e))?;
                for o in page.contents() {
                    let key = o.key().unwrap_or("");
                    let Some(k) = key.strip_prefix(&self.prefix) else {
                        continue;
                    };
                    if !super::backend::is_key(k) {
                        continue;
                    }
                    let at = o
                        .last_modified()
                        .and_then(|t| SystemTime::try_from(*t).ok())
                        .unwrap_or_else(SystemTime::now);
                    out.push((k.to_string(), at));
                }
                match page.next_continuation_token() {
                    Some(t) if page.is_truncated() == Some(true) => token = Some(t.to_string()),
                    _ => return Ok(out),
                }
            }
        }
        .boxed()
    }

    fn min_part(&self) -> u64 {
        MIN_PART
    }

    fn begin_parts(&self, key: &str) -> BoxFuture<'_, Result<String, StoreError>> {
        let key = self.key(key);
        async move {
            let out = self
                .client
                .create_multipart_upload()
                .bucket(&self.bucket)
                .key(key?)
                .send()
                .await
                .map_err(|e| backend_error("CreateMultipartUpload", e))?;
            out.upload_id()
                .map(str::to_string)
                .ok_or_else(|| StoreError::Backend("S3 gave no UploadId".into()))
        }
        .boxed()
    }

    fn put_part<'a>(
        &'a self,
        key: &'a str,
        handle: &'a str,
        number: i32,
        _offset: u64,
        bytes: Bytes,
    ) -> BoxFuture<'a, Result<String, StoreError>> {
        let key = self.key(key);
        async move {
            let done = self
                .client
                .upload_part()
                .bucket(&self.bucket)
                .key(key?)
                .upload_id(handle)
                .part_number(number)
                .content_length(bytes.len() as i64)
                .body(S3Body::from(bytes))
                .send()
                .await
                .map_err(|e| backend_error("UploadPart", e))?;
            Ok(done.e_tag().unwrap_or_default().to_string())
        }
        .boxed()
    }

    fn complete_parts<'a>(
        &'a self,
        key: &'a str,
        handle: &'a str,
        parts: &'a [Part],
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        let key = self.key(key);
        async move {
            let parts = parts
                .iter()
                .map(|p| {
                    CompletedPart::builder()
                        .part_number(p.number)
                        .e_tag(&p.etag)
                        .build()
                })
                .collect();
            self.client
                .complete_multipart_upload()
                .bucket(&self.bucket)
                .key(key?)
                .upload_id(handle)
                .multipart_upload(
                    CompletedMultipartUpload::builder()
                        .set_parts(Some(parts))
                        .build(),
                )
                .send()
                .await
                .map_err(|e| backend_error("CompleteMultipartUpload", e))?;
            Ok(())
        }
        .boxed()
    }

    fn abort_parts<'a>(
        &'a self,
        key: &'a str,
        handle: &'a str,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        let key = self.key(key);
        async move {
            match self
                .client
                .abort_multipart_upload()
                .bucket(&self.bucket)
                .key(key?)
                .upload_id(handle)
                .send()
                .await
            {
                Ok(_) => Ok(()),
                Err(e) if e.code() == Some("NoSuchUpload") => Ok(()),
                Err(e) => match backend_error("AbortMultipartUpload", e) {
                    StoreError::NotFound => Ok(()),
                    other => Err(other),
                },
            }
        }
        .boxed()
    }

    fn delete(&self, key: &str) -> BoxFuture<'_, Result<(), StoreError>> {
        let key = self.key(key);
        async move {
            match self
                .client
                .delete_object()
                .bucket(&self.bucket)
                .key(key?)
                .send()
                .await
            {
                Ok(_) => Ok(()),
                Err(e) => match backend_error("DeleteObject", e) {
                    StoreError::NotFound => Ok(()),
                    other => Err(other),
                },
            }
        }
        .boxed()
    }
}
