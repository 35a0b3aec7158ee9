//! The baseline of `bench/storage.sh`'s S3 figures: the same transfer done
//! directly against the S3 server with aws-sdk-s3 (the S3 backend's own client
//! code, no HTTP API, no database), from this same binary.

use anyhow::{Context, Result};
use futures::StreamExt;
use std::path::Path;
use std::time::Instant;
use wasmbase_host_api::storage::backend::{new_key, StoreError};
use wasmbase_host_api::storage::s3::{S3Settings, S3};
use wasmbase_host_api::storage::ObjectStore;

/// Uploads `file` to S3 (settings from `WASMBASE_STORAGE_S3_*`), reads it back,
/// deletes it, and prints `upload_secs download_secs`.
pub async fn run(file: &Path) -> Result<()> {
    let env = |k: &str| std::env::var(format!("WASMBASE_STORAGE_S3_{k}")).ok();
    let s3 = S3::new(&S3Settings {
        endpoint: env("ENDPOINT"),
        region: env("REGION").unwrap_or_else(|| "us-east-1".into()),
        bucket: env("BUCKET").context("WASMBASE_STORAGE_S3_BUCKET")?,
        access_key_id: env("ACCESS_KEY_ID").context("WASMBASE_STORAGE_S3_ACCESS_KEY_ID")?,
        secret_access_key: env("SECRET_ACCESS_KEY")
            .context("WASMBASE_STORAGE_S3_SECRET_ACCESS_KEY")?,
        force_path_style: true,
        prefix: "bench/".into(),
    });
    s3.ensure_bucket().await?;
    let key = new_key();
    let f = tokio::fs::File::open(file).await?;
    let body = tokio_util::io::ReaderStream::with_capacity(f, 256 * 1024)
        .map(|r| r.map_err(|e| StoreError::Client(e.to_string())))
        .boxed();
    let t = Instant::now();
    s3.put(&key, body).await?;
    let up = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let mut got = s3.get(&key, None).await?.body;
    while let Some(c) = got.next().await {
        c?;
    }
    let down = t.elapsed().as_secs_f64();
    s3.delete(&key).await?;
    println!("{up:.3} {down:.3}");
    Ok(())
}
