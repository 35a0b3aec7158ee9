//! The local-disk backend (the default for `wasmbase dev`): an object's bytes
//! are the file `<root>/objects/<first two hex digits>/<key>`, where the key is
//! the version UUID — no path ever comes from a user-supplied name. An upload
//! goes to `<root>/tmp/<random>`, is fsynced, then renamed into place, so a
//! crash or a disconnect never leaves half an object visible; what a crash
//! leaves in `tmp/` is removed at start. A resumable upload grows in
//! `<root>/resumable/<key>` (parts are appended; one stored again is written
//! over what followed its offset) and is renamed into place when complete;
//! it survives restarts, and other nodes reach it only if they share `<root>`.

use super::backend::{is_key, ByteRange, ByteStream, Fetched, ObjectStore, StoreError, Stored};
use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
use md5::{Digest, Md5};
use std::path::{Path, PathBuf};
use std::time::SystemTime;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Read buffer of downloads.
const CHUNK: usize = 256 * 1024;

/// Reads up to this size are done whole, in one blocking call.
const SMALL: u64 = 64 * 1024;

/// A file opened for reading: small ones already read whole.
enum Opened {
    Whole(bytes::Bytes),
    File(std::fs::File),
}

/// Objects on a local filesystem.
#[derive(Debug, Clone)]
pub struct LocalDisk {
    root: PathBuf,
}

impl LocalDisk {
    /// Opens (creating if needed) a store under `root`, clearing temporary
    /// files an earlier process left.
    pub fn open(root: &Path) -> std::io::Result<LocalDisk> {
        std::fs::create_dir_all(root.join("objects"))?;
        let tmp = root.join("tmp");
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp)?;
        }
        std::fs::create_dir_all(&tmp)?;
        std::fs::create_dir_all(root.join("resumable"))?;
        Ok(LocalDisk {
            root: root.to_path_buf(),
        })
    }

    fn path(&self, key: &str) -> Result<PathBuf, StoreError> {
        if !is_key(key) {
            return Err(StoreError::Backend(format!("not a storage key: {key:?}")));
        }
        Ok(self.root.join("objects").join(&key[..2]).join(key))
    }

    fn partial(&self, key: &str) -> Result<PathBuf, StoreError> {
        if !is_key(key) {
            return Err(StoreError::Backend(format!("not a storage key: {key:?}")));
        }
        Ok(self.root.join("resumable").join(key))
    }

    async fn write(&self, key: &str, mut body: ByteStream) -> Result<Stored, StoreError> {
        let dest = self.path(key)?;
        let tmp = self.root.join("tmp").join(super::backend::new_key());
        let result = async {
            let mut file = tokio::fs::File::create(&tmp).await?;
            let mut md5 = Md5::new();
            let mut size = 0u64;
            while let Some(chunk) = body.next().await {
                let chunk = chunk?;
                md5.update(&chunk);
                size += chunk.len() as u64;
                file.write_all(&chunk).await?;
            }
            file.sync_all().await?;
            drop(file);
            if let Some(dir) = dest.parent() {
                tokio::fs::create_dir_all(dir).await?;
            }
            tokio::fs::rename(&tmp, &dest).await?;
            Ok::<_, StoreError>(Stored {
                size,
                etag: format!("\"{}\"", hex::encode(md5.finalize())),
                last_modified: SystemTime::now(),
            })
        }
        .await;
        if result.is_err() {
            let _ = tokio::fs::remove_file(&tmp).await;
        }
        result
    }
}

impl ObjectStore for LocalDisk {
    fn put(&self, key: &str, body: ByteStream) -> BoxFuture<'_, Result<Stored, StoreError>> {
        let key = key.to_string();
        async move { self.write(&key, body).await }.boxed()
    }

    fn get(
        &self,
        key: &str,
        range: Option<ByteRange>,
    ) -> BoxFuture<'_, Result<Fetched, StoreError>> {
        let path = self.path(key);
        async move {
            let path = path?;
            // Open, size, seek — and for a small read the bytes themselves — in
            // one trip to the blocking pool (each tokio::fs call is one).
            let opened = tokio::task::spawn_blocking(move || -> std::io::Result<_> {
                use std::io::{Read, Seek};
                let mut file = std::fs::File::open(path)?;
                let size = file.metadata()?.len();
                let (start, len) = match range {
                    Some(r) => (r.start, r.end.saturating_sub(r.start) + 1),
                    None => (0, size),
                };
                if start > 0 {
                    file.seek(std::io::SeekFrom::Start(start))?;
                }
                if len <= SMALL {
                    let mut buf = Vec::with_capacity(len as usize);
                    file.take(len).read_to_end(&mut buf)?;
                    return Ok((Opened::Whole(bytes::Bytes::from(buf)), len));
                }
                Ok((Opened::File(file), len))
            })
            .await
            .map_err(|e| StoreError::Backend(e.to_string()))??;
            let (file, len) = match opened {
                (Opened::Whole(small), len) => {
                    let body = futures::stream::once(async move { Ok(small) }).boxed();
                    return Ok(Fetched { body, len });
                }
                (Opened::File(file), len) => (tokio::fs::File::from_std(file), len),
            };
            let reader = file.take(len);
            let body = tokio_util::io::ReaderStream::with_capacity(reader, CHUNK)
                .map(|r| r.map_err(StoreError::from))
                .boxed();
            Ok(Fetched { body, len })
        }
        .boxed()
    }

    fn copy(&self, from: &str, to: &str) -> BoxFuture<'_, Result<Stored, StoreError>> {
        let (from, to) = (from.to_string(), to.to_string());
        async move {
            let src = self.get(&from, None).await?;
            self.write(&to, src.body).await
        }
        .boxed()
    }

    fn list(&self) -> BoxFuture<'_, Result<Vec<(String, SystemTime)>, StoreError>> {
        let objects = self.root.join("objects");
        async move {
            tokio::task::spawn_blocking(move || -> std::io::Result<_> {
                let mut out = Vec::new();
                for shard in std::fs::read_dir(objects)? {
                    let shard = shard?;
                    if !shard.file_type()?.is_dir() {
                        continue;
                    }
                    for f in std::fs::read_dir(shard.path())? {
                        let f = f?;
                        let name = f.file_name().to_string_lossy().into_owned();
                        if is_key(&name) {
                            out.push((name, f.metadata()?.modified()?));
                        }
                    }
                }
                Ok(out)
            })
            .await
            .map_err(|e| StoreError::Backend(e.to_string()))?
            .map_err(StoreError::from)
        }
        .boxed()
    }

    fn min_part(&self) -> u64 {
        0
    }

    fn begin_parts(&self, key: &str) -> BoxFuture<'_, Result<String, StoreError>> {
        let path = self.partial(key);
        async move {
            tokio::fs::File::create(path?).await?;
            Ok(String::new())
        }
        .boxed()
    }

    fn put_part<'a>(
        &'a self,
        key: &'a str,
        _handle: &'a str,
        _number: i32,
        offset: u64,
        bytes: bytes::Bytes,
    ) -> BoxFuture<'a, Result<String, StoreError>> {
        let path = self.partial(key);
        async move {
            let path = path?;
            tokio::task::spawn_blocking(move || -> Result<String, StoreError> {
                use std::io::{Seek, Write};
                let mut file = std::fs::OpenOptions::new().write(true).open(path)?;
                let len = file.metadata()?.len();
                if len < offset {
                    return Err(StoreError::Backend(format!(
                        "resumable upload file is {len} bytes, expected at least {offset}"
                    )));
                }
                // What followed `offset` was never recorded (a crash or a cut
                // request): this part replaces it.
                file.set_len(offset)?;
                file.seek(std::io::SeekFrom::Start(offset))?;
                file.write_all(&bytes)?;
                Ok(String::new())
            })
            .await
            .map_err(|e| StoreError::Backend(e.to_string()))?
        }
        .boxed()
    }

    fn sync_parts<'a>(
        &'a self,
        key: &'a str,
        _handle: &'a str,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        let path = self.partial(key);
        async move {
            let file = tokio::fs::OpenOptions::new()
                .write(true)
                .open(path?)
                .await?;
            file.sync_data().await?;
            Ok(())
        }
        .boxed()
    }

    fn complete_parts<'a>(
        &'a self,
        key: &'a str,
        _handle: &'a str,
        parts: &'a [super::backend::Part],
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        let (from, to) = (self.partial(key), self.path(key));
        let size: u64 = parts.iter().map(|p| p.size).sum();
        async move {
            let (from, to) = (from?, to?);
            let file = tokio::fs::OpenOptions::new()
                .write(true)
                .open(&from)
                .await?;
            // Bytes past the recorded parts were never acknowledged.
            file.set_len(size).await?;
            file.sync_all().await?;
            drop(file);
            if let Some(dir) = to.parent() {
                tokio::fs::create_dir_all(dir).await?;
            }
            tokio::fs::rename(&from, &to).await?;
            Ok(())
        }
        .boxed()
    }

    fn abort_parts<'a>(
        &'a self,
        key: &'a str,
        _handle: &'a str,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        remove(self.partial(key)).boxed()
    }

    fn delete(&self, key: &str) -> BoxFuture<'_, Result<(), StoreError>> {
        remove(self.path(key)).boxed()
    }
}

/// Removes a file; one that is not there is removed already.
async fn remove(path: Result<PathBuf, StoreError>) -> Result<(), StoreError> {
    match tokio::fs::remove_file(path?).await {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn body(parts: &[&'static [u8]]) -> ByteStream {
        let v: Vec<Result<Bytes, StoreError>> =
            parts.iter().map(|p| Ok(Bytes::from_static(p))).collect();
        futures::stream::iter(v).boxed()
    }

    async fn read_all(f: Fetched) -> Vec<u8> {
        let mut out = Vec::new();
        let mut b = f.body;
        while let Some(c) = b.next().await {
            out.extend_from_slice(&c.unwrap());
        }
        out
    }

    #[tokio::test]
    async fn put_get_range_copy_delete_and_nothing_half_written() {
        let dir = tempfile::tempdir().unwrap();
        let disk = LocalDisk::open(dir.path()).unwrap();
        let k = super::super::backend::new_key();
        let s = disk.put(&k, body(&[b"hello ", b"world"])).await.unwrap();
        assert_eq!(s.size, 11);
        assert_eq!(s.etag, "\"5eb63bbbe01eeed093cb22bb8f5acdc3\"");
        assert_eq!(
            read_all(disk.get(&k, None).await.unwrap()).await,
            b"hello world"
        );
        let r = ByteRange { start: 6, end: 10 };
        assert_eq!(
            read_all(disk.get(&k, Some(r)).await.unwrap()).await,
            b"world"
        );
        let k2 = super::super::backend::new_key();
        disk.copy(&k, &k2).await.unwrap();
        disk.delete(&k).await.unwrap();
        disk.delete(&k).await.unwrap();
        assert!(matches!(
            disk.get(&k, None).await,
            Err(StoreError::NotFound)
        ));
        assert_eq!(
            read_all(disk.get(&k2, None).await.unwrap()).await,
            b"hello world"
        );
        // A body that fails midway leaves nothing under its key, nor in tmp/.
        let k3 = super::super::backend::new_key();
        let failing = futures::stream::iter(vec![
            Ok(Bytes::from_static(b"part")),
            Err(StoreError::TooLarge),
        ])
        .boxed();
        assert!(matches!(
            disk.put(&k3, failing).await,
            Err(StoreError::TooLarge)
        ));
        assert!(matches!(
            disk.get(&k3, None).await,
            Err(StoreError::NotFound)
        ));
        assert_eq!(
            std::fs::read_dir(dir.path().join("tmp")).unwrap().count(),
            0
        );
        assert!(disk.get("../../etc/passwd", None).await.is_err());
    }
}
