//! Files in storage buckets, mirroring storage-js (needs a `storage` grant in
//! `function.toml`, e.g. `storage = ["avatars:read", "uploads:write"]`).
//! Calls act as the function's caller, so the bucket's policies apply; with
//! `db = "service"` they act as `service_role`. A bucket that is not granted
//! for the mode a call needs answers 403 `AccessDenied`.
//!
//! ```ignore
//! use wasmbase_sdk::storage::{self, FileOptions};
//! let avatars = storage::from("avatars");
//! avatars.upload("u1/me.png", &png, FileOptions::new().content_type("image/png"))?;
//! let bytes = avatars.download("u1/me.png")?;
//! let url = avatars.create_signed_url("u1/me.png", 60)?;
//! ```
//!
//! Bytes stream both ways (`upload_from` takes any `Read`, `open` gives
//! one), so an object never needs to fit in the function's memory.

use crate::bindings::wasi::io::streams::{InputStream, StreamError};
use crate::bindings::wasmbase::platform::storage as wit;
use crate::Error;
use std::io::Read;

pub use wit::ObjectInfo;

/// A bucket, as storage-js's `supabase.storage.from(id)`.
pub fn from(bucket: &str) -> Bucket {
    Bucket {
        id: bucket.to_string(),
    }
}

/// Operations on one bucket.
#[derive(Debug, Clone)]
pub struct Bucket {
    id: String,
}

/// How an upload is stored (storage-js's `FileOptions`).
#[derive(Debug, Clone, Default)]
pub struct FileOptions {
    content_type: Option<String>,
    cache_control: Option<String>,
    upsert: bool,
    metadata: Option<serde_json::Value>,
}

impl FileOptions {
    /// Defaults: `application/octet-stream`, `no-cache`, no upsert.
    pub fn new() -> FileOptions {
        FileOptions::default()
    }

    /// The object's MIME type.
    pub fn content_type(mut self, mime: &str) -> FileOptions {
        self.content_type = Some(mime.to_string());
        self
    }

    /// Seconds clients may cache it (`Cache-Control: max-age=N`).
    pub fn cache_control(mut self, seconds: u32) -> FileOptions {
        self.cache_control = Some(seconds.to_string());
        self
    }

    /// Replace an object of the same name.
    pub fn upsert(mut self, upsert: bool) -> FileOptions {
        self.upsert = upsert;
        self
    }

    /// A JSON object kept with the object.
    pub fn metadata(mut self, metadata: serde_json::Value) -> FileOptions {
        self.metadata = Some(metadata);
        self
    }
}

/// One entry of a listing (storage-js's `FileObject`); folders have no `id`.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct FileObject {
    /// Name within the listed folder.
    pub name: String,
    /// Row id (None for a folder).
    pub id: Option<String>,
    /// RFC 3339.
    pub updated_at: Option<String>,
    /// RFC 3339.
    pub created_at: Option<String>,
    /// RFC 3339.
    pub last_accessed_at: Option<String>,
    /// `{size, mimetype, eTag, cacheControl, ...}`.
    pub metadata: Option<serde_json::Value>,
}

/// What `list` returns and how many (storage-js's `SearchOptions`).
#[derive(Debug, Clone, Default)]
pub struct SearchOptions {
    /// At most this many (default 100).
    pub limit: Option<u32>,
    /// Skip this many.
    pub offset: Option<u32>,
    /// Only names starting with this.
    pub search: Option<String>,
}

fn error(status: u16, code: &str, message: String) -> Error {
    Error {
        code: code.to_string(),
        message,
        details: None,
        hint: None,
        status,
    }
}

/// An object being read: its metadata, and its bytes through `Read`.
pub struct Download {
    /// Size, type, eTag, ...
    pub info: ObjectInfo,
    stream: InputStream,
}

impl Read for Download {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        match self.stream.blocking_read(buf.len() as u64) {
            Ok(chunk) => {
                buf[..chunk.len()].copy_from_slice(&chunk);
                Ok(chunk.len())
            }
            Err(StreamError::Closed) => Ok(0),
            Err(StreamError::LastOperationFailed(e)) => {
                Err(std::io::Error::other(e.to_debug_string()))
            }
        }
    }
}

impl Bucket {
    /// Uploads `bytes` to `path` (storage-js's `upload`).
    pub fn upload(&self, path: &str, bytes: &[u8], options: FileOptions) -> Result<ObjectInfo, Error> {
        self.upload_from(path, bytes, options)
    }

    /// Uploads what `reader` yields to `path`, streaming.
    pub fn upload_from(
        &self,
        path: &str,
        mut reader: impl Read,
        options: FileOptions,
    ) -> Result<ObjectInfo, Error> {
        let opts = wit::UploadOptions {
            content_type: options.content_type,
            cache_control: options.cache_control,
            upsert: options.upsert,
            user_metadata: options.metadata.map(|m| m.to_string()),
        };
        let upload = wit::begin_upload(&self.id, path, &opts)?;
        let stream = upload.body()?;
        let mut buf = vec![0u8; 64 * 1024];
        let mut read_error = None;
        loop {
            match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    // A closed stream means the upload ended: `finish` says why.
                    if !crate::http::write_stream(&stream, &buf[..n]) {
                        break;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    read_error = Some(e);
                    break;
                }
            }
        }
        let _ = stream.blocking_flush();
        drop(stream);
        if let Some(e) = read_error {
            // Dropping the unfinished upload discards its bytes.
            drop(upload);
            return Err(error(400, "ReadFailed", format!("reading the upload failed: {e}")));
        }
        wit::Upload::finish(upload)
    }

    /// Opens `path` for reading (metadata now, bytes as they are read).
    pub fn open(&self, path: &str) -> Result<Download, Error> {
        let (info, stream) = wit::download(&self.id, path)?;
        Ok(Download { info, stream })
    }

    /// Downloads `path` whole (storage-js's `download`).
    pub fn download(&self, path: &str) -> Result<Vec<u8>, Error> {
        let mut d = self.open(path)?;
        let mut out = Vec::with_capacity(d.info.size.min(64 << 20) as usize);
        d.read_to_end(&mut out)
            .map_err(|e| error(503, "StorageBackendError", e.to_string()))?;
        Ok(out)
    }

    /// One folder level under `prefix` (storage-js's `list`).
    pub fn list(&self, prefix: &str, options: SearchOptions) -> Result<Vec<FileObject>, Error> {
        let json = wit::list(
            &self.id,
            &wit::ListOptions {
                prefix: Some(prefix.to_string()),
                search: options.search,
                limit: options.limit,
                offset: options.offset,
            },
        )?;
        serde_json::from_str(&json).map_err(|e| error(500, "InternalError", e.to_string()))
    }

    /// Removes objects by name; returns the names removed (storage-js's
    /// `remove`).
    pub fn remove(&self, paths: &[&str]) -> Result<Vec<String>, Error> {
        let paths: Vec<String> = paths.iter().map(|p| p.to_string()).collect();
        wit::remove(&self.id, &paths)
    }

    /// A URL that downloads `path` without a key for `expires_in` seconds
    /// (storage-js's `createSignedUrl`).
    pub fn create_signed_url(&self, path: &str, expires_in: u32) -> Result<String, Error> {
        wit::create_signed_url(&self.id, path, expires_in)
    }
}
