//! Resumable uploads (TUS at `/storage/v1/upload/resumable`): an upload cut
//! off midway resumes after a restart (local disk) and on another node (S3,
//! with bytes short of a part kept as a shared tail), concurrent `PATCH`es
//! are refused while one writes, RLS is checked at creation, signed uploads
//! take their token on every request, expired uploads are discarded with
//! their parts, and bad requests get TUS errors in storage-api's shape.

use crate::harness::*;
use crate::storage::{setup, storage_dir, Client, S3Server};
use base64::Engine;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const MIB: usize = 1024 * 1024;

/// A TUS client of one server: a key, maybe a user token or a signature.
struct Tus<'a> {
    srv: &'a TestServer,
    key: String,
    bearer: Option<String>,
    signature: Option<String>,
}

fn metadata(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| {
            format!(
                "{k} {}",
                base64::engine::general_purpose::STANDARD.encode(v)
            )
        })
        .collect::<Vec<_>>()
        .join(",")
}

fn bytes(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 31 % 251) as u8).collect()
}

fn header(r: &reqwest::Response, name: &str) -> Option<String> {
    r.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// The path of an upload URL (the server may answer with an absolute one).
fn path_of(location: &str) -> String {
    match location.find("/storage/v1/") {
        Some(i) => location[i..].to_string(),
        None => panic!("not an upload URL: {location}"),
    }
}

fn id_of(location: &str) -> String {
    location.rsplit('/').next().unwrap().to_string()
}

impl<'a> Tus<'a> {
    fn new(srv: &'a TestServer, key: &str, bearer: Option<String>) -> Tus<'a> {
        Tus {
            srv,
            key: key.to_string(),
            bearer,
            signature: None,
        }
    }

    fn req(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let mut r = self
            .srv
            .http
            .request(method, format!("{}{path}", self.srv.url))
            .header("apikey", &self.key)
            .header("tus-resumable", "1.0.0");
        if let Some(b) = &self.bearer {
            r = r.bearer_auth(b);
        }
        if let Some(s) = &self.signature {
            r = r.header("x-signature", s);
        }
        r
    }

    /// `POST` creating an upload of `len` bytes for `bucket/name`.
    async fn create(
        &self,
        bucket: &str,
        name: &str,
        len: usize,
        extra: &[(&str, &str)],
    ) -> reqwest::Response {
        let base = if self.signature.is_some() {
            "/storage/v1/upload/resumable/sign"
        } else {
            "/storage/v1/upload/resumable"
        };
        let mut r = self
            .req(reqwest::Method::POST, base)
            .header("upload-length", len.to_string())
            .header(
                "upload-metadata",
                metadata(&[
                    ("bucketName", bucket),
                    ("objectName", name),
                    ("contentType", "application/octet-stream"),
                    ("cacheControl", "3600"),
                ]),
            );
        for (k, v) in extra {
            r = r.header(*k, *v);
        }
        r.send().await.unwrap()
    }

    /// Creates and returns the upload's path, panicking on refusal.
    async fn start(&self, bucket: &str, name: &str, len: usize) -> String {
        let r = self.create(bucket, name, len, &[]).await;
        let status = r.status().as_u16();
        let loc = header(&r, "location");
        assert_eq!(status, 201, "{:?}", r.text().await);
        path_of(&loc.expect("a Location"))
    }

    async fn head(&self, path: &str) -> (u16, Option<u64>) {
        let r = self.req(reqwest::Method::HEAD, path).send().await.unwrap();
        let offset = header(&r, "upload-offset").map(|v| v.parse().unwrap());
        (r.status().as_u16(), offset)
    }

    async fn patch(&self, path: &str, offset: usize, body: &[u8]) -> reqwest::Response {
        self.req(reqwest::Method::PATCH, path)
            .header("upload-offset", offset.to_string())
            .header("content-type", "application/offset+octet-stream")
            .body(body.to_vec())
            .send()
            .await
            .unwrap()
    }

    /// A `PATCH` that must be accepted; returns the new offset.
    async fn append(&self, path: &str, offset: usize, body: &[u8]) -> u64 {
        let r = self.patch(path, offset, body).await;
        let status = r.status().as_u16();
        let got = header(&r, "upload-offset");
        assert_eq!(status, 204, "{:?}", r.text().await);
        got.unwrap().parse().unwrap()
    }

    /// Starts a `PATCH` over raw TCP announcing `declared` bytes and sends
    /// `first` of them; the caller sends the rest or cuts the connection.
    async fn raw_patch(
        &self,
        path: &str,
        offset: usize,
        declared: usize,
        first: &[u8],
    ) -> tokio::net::TcpStream {
        let addr = self.srv.url.trim_start_matches("http://").to_string();
        let mut tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
        let mut head = format!(
            "PATCH {path} HTTP/1.1\r\nHost: {addr}\r\napikey: {}\r\ntus-resumable: 1.0.0\r\n\
             upload-offset: {offset}\r\ncontent-type: application/offset+octet-stream\r\n\
             content-length: {declared}\r\n",
            self.key
        );
        if let Some(b) = &self.bearer {
            head.push_str(&format!("authorization: Bearer {b}\r\n"));
        }
        head.push_str("\r\n");
        tcp.write_all(head.as_bytes()).await.unwrap();
        tcp.write_all(first).await.unwrap();
        tcp.flush().await.unwrap();
        tcp
    }
}

/// Cuts a raw request off: the server has read what was sent, then EOF.
async fn cut(mut tcp: tokio::net::TcpStream) {
    tcp.shutdown().await.unwrap();
    let mut sink = Vec::new();
    let _ = tcp.read_to_end(&mut sink).await;
}

/// Waits until the upload's recorded offset is `n` (what a cut-off request
/// kept, once the server finished with it).
async fn wait_received(db: &TestDb, id: &str, n: usize) {
    let c = db.owner().await;
    let sql = format!("SELECT received FROM wasmbase.storage_uploads WHERE id = '{id}'");
    until_rows(
        &c,
        &format!("upload {id} reaches {n} bytes"),
        30,
        &sql,
        |r| r.first().map(|r| r.get::<_, i64>(0)) == Some(n as i64),
    )
    .await;
}

/// Downloads through `/storage/v1/object` (the storage tests' client).
async fn download(srv: &TestServer, key: &str, bearer: Option<&str>, path: &str) -> (u16, Vec<u8>) {
    client(srv, key, bearer).download(path).await
}

fn client<'a>(srv: &'a TestServer, key: &str, bearer: Option<&str>) -> Client<'a> {
    Client {
        srv,
        key: key.to_string(),
        bearer: bearer.map(str::to_string),
    }
}

async fn create_bucket(srv: &TestServer, secret: &str, body: Value) {
    let (s, v) = client(srv, secret, None)
        .json(reqwest::Method::POST, "/bucket", body)
        .await;
    assert_eq!(s, 200, "{v}");
}

fn resumable_files(db: &TestDb) -> usize {
    std::fs::read_dir(storage_dir(db).join("resumable")).map_or(0, |d| d.count())
}

async fn error_code(r: reqwest::Response) -> (u16, String) {
    let s = r.status().as_u16();
    let v: Value = r.json().await.unwrap_or(Value::Null);
    (s, v["code"].as_str().unwrap_or("").to_string())
}

#[tokio::test]
async fn an_upload_cut_off_midway_resumes_after_a_restart() {
    let db = TestDb::new().await;
    let (_, secret) = setup(&db).await;
    let one = db.server().await;
    create_bucket(&one, &secret, json!({"name": "media"})).await;
    let tus = Tus::new(&one, &secret, None);
    let body = bytes(20 * MIB);
    let r = tus.create("media", "big.bin", body.len(), &[]).await;
    assert_eq!(r.status(), 201);
    assert_eq!(header(&r, "tus-resumable").as_deref(), Some("1.0.0"));
    let expires = httpdate::parse_http_date(&header(&r, "upload-expires").unwrap()).unwrap();
    let day = std::time::Duration::from_secs(24 * 3600);
    assert!(expires > std::time::SystemTime::now() + day - std::time::Duration::from_secs(3600));
    let up = path_of(&header(&r, "location").unwrap());
    let r = tus.req(reqwest::Method::HEAD, &up).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "upload-offset").as_deref(), Some("0"));
    assert_eq!(header(&r, "upload-length"), Some((20 * MIB).to_string()));
    assert_eq!(header(&r, "cache-control").as_deref(), Some("no-store"));
    assert!(header(&r, "upload-metadata")
        .unwrap()
        .contains("bucketName"));

    assert_eq!(tus.append(&up, 0, &body[..6 * MIB]).await, 6 * MIB as u64);
    // Nothing is visible before the last byte.
    assert_ne!(download(&one, &secret, None, "media/big.bin").await.0, 200);
    // A request cut off after 2 of its 6 MiB: those 2 MiB are kept.
    let tcp = tus
        .raw_patch(&up, 6 * MIB, 6 * MIB, &body[6 * MIB..8 * MIB])
        .await;
    cut(tcp).await;
    wait_received(&db, &id_of(&up), 8 * MIB).await;

    one.srv.shutdown().await;
    let two = db.server().await;
    let tus = Tus::new(&two, &secret, None);
    assert_eq!(tus.head(&up).await, (200, Some(8 * MIB as u64)));
    // A client that resumes from a stale offset is told so.
    let (s, code) = error_code(tus.patch(&up, 6 * MIB, &body[6 * MIB..12 * MIB]).await).await;
    assert_eq!((s, code.as_str()), (409, "InvalidOffset"));
    assert_eq!(
        tus.append(&up, 8 * MIB, &body[8 * MIB..14 * MIB]).await,
        14 * MIB as u64
    );
    let r = tus.patch(&up, 14 * MIB, &body[14 * MIB..]).await;
    assert_eq!(r.status(), 204);
    assert_eq!(header(&r, "upload-offset"), Some((20 * MIB).to_string()));
    assert_eq!(header(&r, "tus-complete").as_deref(), Some("1"));

    let (s, got) = download(&two, &secret, None, "media/big.bin").await;
    assert_eq!(s, 200);
    assert!(got == body, "the resumed object's bytes differ");
    let info: Value = two
        .http
        .get(format!("{}/storage/v1/object/info/media/big.bin", two.url))
        .header("apikey", &secret)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(info["size"], json!(20 * MIB), "{info}");
    assert_eq!(info["cache_control"], json!("max-age=3600"), "{info}");
    // The upload is over: its URL is gone, its partial file renamed into place.
    assert_eq!(tus.head(&up).await.0, 404);
    assert_eq!(resumable_files(&db), 0);
}

#[tokio::test]
async fn on_s3_an_upload_begun_on_one_node_is_finished_on_another() {
    let s3 = S3Server::start().await;
    let db = TestDb::new().await;
    let (anon, secret) = setup(&db).await;
    let bucket = format!("wb{}", &uuid::Uuid::new_v4().simple().to_string()[..16]);
    let one = db.server_with(|c| s3.configure(c, &bucket)).await;
    let two = db.server_with(|c| s3.configure(c, &bucket)).await;
    create_bucket(&one, &secret, json!({"name": "avatars"})).await;
    let a = uuid::Uuid::new_v4().to_string();
    let token = user_token(&a);
    let on_one = Tus::new(&one, &anon, Some(token.clone()));
    let on_two = Tus::new(&two, &anon, Some(token.clone()));
    let name = format!("{a}/clip.bin");
    let body = bytes(20 * MIB);
    let up = on_one.start("avatars", &name, body.len()).await;
    assert_eq!(
        on_one.append(&up, 0, &body[..6 * MIB]).await,
        6 * MIB as u64
    );
    // Cut after 3 MiB: less than S3's 5 MiB part, so kept as a tail object
    // that the other node reads back.
    let tcp = on_one
        .raw_patch(&up, 6 * MIB, 6 * MIB, &body[6 * MIB..9 * MIB])
        .await;
    cut(tcp).await;
    wait_received(&db, &id_of(&up), 9 * MIB).await;
    assert_eq!(on_two.head(&up).await, (200, Some(9 * MIB as u64)));
    // Someone else is told there is no such upload.
    let b = Tus::new(
        &two,
        &anon,
        Some(user_token(&uuid::Uuid::new_v4().to_string())),
    );
    assert_eq!(b.head(&up).await.0, 404);
    let (s, code) = error_code(b.patch(&up, 9 * MIB, b"x").await).await;
    assert_eq!((s, code.as_str()), (404, "NoSuchUpload"));

    assert_eq!(
        on_two.append(&up, 9 * MIB, &body[9 * MIB..15 * MIB]).await,
        15 * MIB as u64
    );
    assert_eq!(
        on_two.append(&up, 15 * MIB, &body[15 * MIB..]).await,
        20 * MIB as u64
    );
    let (s, got) = download(&one, &anon, Some(&token), &format!("avatars/{name}")).await;
    assert_eq!(s, 200);
    assert!(
        got == body,
        "the bytes read back through the first node differ"
    );
    // The object is the user's, and the tails are deleted: one object remains.
    let c = db.owner().await;
    let owner: Option<String> = c
        .query_one(
            "SELECT owner_id FROM storage.objects WHERE name = $1",
            &[&name],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(owner.as_deref(), Some(a.as_str()));
    wait_until("the tails are deleted from the bucket", 20, || {
        s3.files(&bucket) == 1
    })
    .await;
}

#[tokio::test]
async fn concurrent_patches_are_refused_while_one_writes_and_bad_requests_get_tus_errors() {
    let db = TestDb::new().await;
    let (_, secret) = setup(&db).await;
    let one = db.server().await;
    let two = db.server().await;
    create_bucket(
        &one,
        &secret,
        json!({"name": "small", "file_size_limit": 1000}),
    )
    .await;
    create_bucket(&one, &secret, json!({"name": "media"})).await;
    let on_one = Tus::new(&one, &secret, None);
    let on_two = Tus::new(&two, &secret, None);
    let body = bytes(4 * MIB);
    let up = on_one.start("media", "race.bin", body.len()).await;
    let mut tcp = on_one.raw_patch(&up, 0, body.len(), &body[..MIB]).await;
    // The first request holds the upload's lock (observable in pg_locks).
    let c = db.owner().await;
    until_rows(
        &c,
        "the first PATCH takes the upload's lock",
        30,
        "SELECT 1 FROM pg_locks l JOIN pg_stat_activity a USING (pid) \
         WHERE l.locktype = 'advisory' AND l.granted \
           AND a.application_name = 'wasmbase-upload-locks' AND a.datname = current_database()",
        |r| r.len() == 1,
    )
    .await;
    for tus in [&on_two, &on_one] {
        let (s, code) = error_code(tus.patch(&up, 0, &body).await).await;
        assert_eq!((s, code.as_str()), (409, "ResourceLocked"));
        let r = tus.req(reqwest::Method::DELETE, &up).send().await.unwrap();
        assert_eq!(r.status(), 409);
    }
    tcp.write_all(&body[MIB..]).await.unwrap();
    let mut resp = Vec::new();
    let mut buf = [0u8; 4096];
    while !resp.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tcp.read(&mut buf).await.unwrap();
        assert!(n > 0, "the server closed without answering");
        resp.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&resp).to_ascii_lowercase();
    assert!(text.starts_with("http/1.1 204"), "{text}");
    assert!(
        text.contains(&format!("upload-offset: {}", 4 * MIB)),
        "{text}"
    );
    assert!(text.contains("tus-complete: 1"), "{text}");
    assert_eq!(
        download(&two, &secret, None, "media/race.bin").await.1,
        body
    );

    // Bad requests, each with its status and code.
    let r = one
        .http
        .post(format!("{}/storage/v1/upload/resumable", one.url))
        .header("apikey", &secret)
        .header("tus-resumable", "0.2.2")
        .header("upload-length", "10")
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(r).await, (412, "UnsupportedTusVersion".into()));
    let r = on_one
        .req(reqwest::Method::POST, "/storage/v1/upload/resumable")
        .header(
            "upload-metadata",
            metadata(&[("bucketName", "media"), ("objectName", "x")]),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(r).await, (400, "InvalidRequest".into()));
    let r = on_one
        .req(reqwest::Method::POST, "/storage/v1/upload/resumable")
        .header("upload-length", "10")
        .header("upload-metadata", metadata(&[("objectName", "x")]))
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(r).await, (400, "InvalidRequest".into()));
    let r = on_one.create("small", "big.bin", 1001, &[]).await;
    assert_eq!(error_code(r).await, (413, "EntityTooLarge".into()));
    let r = on_one.create("nope", "x.bin", 10, &[]).await;
    assert_eq!(error_code(r).await, (404, "NoSuchBucket".into()));
    let r = on_one.create("media", "race.bin", 10, &[]).await;
    assert_eq!(error_code(r).await, (409, "KeyAlreadyExists".into()));
    let ten = on_one.start("small", "ten.bin", 10).await;
    let up = ten.clone();
    let r = on_one
        .req(reqwest::Method::PATCH, &up)
        .header("upload-offset", "0")
        .header("content-type", "application/octet-stream")
        .body(vec![1u8; 10])
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(r).await, (415, "InvalidContentType".into()));
    let (s, code) = error_code(on_one.patch(&up, 0, &[1u8; 11]).await).await;
    assert_eq!((s, code.as_str()), (413, "EntityTooLarge"));
    let (s, code) = error_code(on_one.patch(&up, 3, &[1u8; 2]).await).await;
    assert_eq!((s, code.as_str()), (409, "InvalidOffset"));
    let r = on_one
        .req(
            reqwest::Method::HEAD,
            "/storage/v1/upload/resumable/00000000000000000000000000000000",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    // Creation with its first bytes, and an empty upload: complete at once.
    let r = on_one
        .req(reqwest::Method::POST, "/storage/v1/upload/resumable")
        .header("upload-length", "5")
        .header(
            "upload-metadata",
            metadata(&[("bucketName", "media"), ("objectName", "inline2.txt")]),
        )
        .header("content-type", "application/offset+octet-stream")
        .body(b"hello".to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    assert_eq!(header(&r, "upload-offset").as_deref(), Some("5"));
    assert_eq!(
        download(&one, &secret, None, "media/inline2.txt").await,
        (200, b"hello".to_vec())
    );
    let r = on_one.create("media", "empty.txt", 0, &[]).await;
    assert_eq!(r.status(), 201);
    assert_eq!(
        download(&one, &secret, None, "media/empty.txt").await,
        (200, vec![])
    );

    // A bucket deleted midway: the last PATCH is refused, nothing is left.
    create_bucket(&one, &secret, json!({"name": "brief"})).await;
    let up = on_one.start("brief", "gone.bin", 10).await;
    assert_eq!(on_one.append(&up, 0, &[1u8; 5]).await, 5);
    let r = one
        .http
        .delete(format!("{}/storage/v1/bucket/brief", one.url))
        .header("apikey", &secret)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let (s, code) = error_code(on_one.patch(&up, 5, &[1u8; 5]).await).await;
    assert_eq!((s, code.as_str()), (404, "NoSuchBucket"));
    assert_eq!(on_one.head(&up).await.0, 404);
    // Terminated uploads are gone too, with their parts.
    let up = on_one.start("media", "dropped.bin", 10).await;
    assert_eq!(on_one.append(&up, 0, &[1u8; 4]).await, 4);
    assert_eq!(resumable_files(&db), 2);
    for up in [up, ten] {
        let r = on_one
            .req(reqwest::Method::DELETE, &up)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 204);
        assert_eq!(on_one.head(&up).await.0, 404);
    }
    assert_eq!(resumable_files(&db), 0);
    let n: i64 = c
        .query_one("SELECT count(*) FROM wasmbase.storage_uploads", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 0);
    // OPTIONS says what is spoken, without a key.
    let r = one
        .http
        .request(
            reqwest::Method::OPTIONS,
            format!("{}/storage/v1/upload/resumable", one.url),
        )
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    assert_eq!(header(&r, "tus-version").as_deref(), Some("1.0.0"));
    assert!(header(&r, "tus-extension").unwrap().contains("termination"));
}

#[tokio::test]
async fn rls_is_checked_at_creation_and_signed_uploads_take_their_token() {
    let db = TestDb::new().await;
    let (anon, secret) = setup(&db).await;
    let srv = db.server().await;
    create_bucket(&srv, &secret, json!({"name": "avatars"})).await;
    let (a, b) = (
        uuid::Uuid::new_v4().to_string(),
        uuid::Uuid::new_v4().to_string(),
    );
    let as_a = Tus::new(&srv, &anon, Some(user_token(&a)));
    // Someone else's folder: refused before any byte.
    let r = as_a.create("avatars", &format!("{b}/x.bin"), 10, &[]).await;
    assert_eq!(error_code(r).await, (403, "AccessDenied".into()));
    let nobody = Tus::new(&srv, &anon, None);
    let r = nobody
        .create("avatars", &format!("{a}/x.bin"), 10, &[])
        .await;
    assert_eq!(error_code(r).await, (403, "AccessDenied".into()));
    let c = db.owner().await;
    let n: i64 = c
        .query_one("SELECT count(*) FROM wasmbase.storage_uploads", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 0);
    // Their own: fine, and only they (or the service) may continue it.
    let up = as_a.start("avatars", &format!("{a}/x.bin"), 10).await;
    assert_eq!(nobody.head(&up).await.0, 404);
    assert_eq!(as_a.append(&up, 0, b"0123456789").await, 10);
    // Replacing needs x-upsert (and the UPDATE policy).
    let r = as_a.create("avatars", &format!("{a}/x.bin"), 3, &[]).await;
    assert_eq!(error_code(r).await, (409, "KeyAlreadyExists".into()));
    let r = as_a
        .create("avatars", &format!("{a}/x.bin"), 3, &[("x-upsert", "true")])
        .await;
    assert_eq!(r.status(), 201);
    let up = path_of(&header(&r, "location").unwrap());
    assert_eq!(as_a.append(&up, 0, b"new").await, 3);
    let token = user_token(&a);
    assert_eq!(
        download(&srv, &anon, Some(&token), &format!("avatars/{a}/x.bin")).await,
        (200, b"new".to_vec())
    );

    // Signed: a's signed upload URL's token, sent as x-signature with no key
    // of a user; the object is a's.
    let r = srv
        .http
        .post(format!(
            "{}/storage/v1/object/upload/sign/avatars/{a}/signed.bin",
            srv.url
        ))
        .header("apikey", &anon)
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let t = r.json::<Value>().await.unwrap()["token"]
        .as_str()
        .unwrap()
        .to_string();
    let mut signed = Tus::new(&srv, &anon, None);
    let r = signed
        .create("avatars", &format!("{a}/signed.bin"), 4, &[])
        .await;
    assert_eq!(
        error_code(r).await,
        (403, "AccessDenied".into()),
        "the keyed route wants RLS, not a token"
    );
    signed.signature = Some("not-a-token".into());
    let r = signed
        .create("avatars", &format!("{a}/signed.bin"), 4, &[])
        .await;
    assert_eq!(r.status(), 400);
    signed.signature = Some(t.clone());
    let r = signed
        .create("avatars", &format!("{a}/other.bin"), 4, &[])
        .await;
    assert_eq!(error_code(r).await, (400, "InvalidSignature".into()));
    let up = signed.start("avatars", &format!("{a}/signed.bin"), 4).await;
    assert!(up.starts_with("/storage/v1/upload/resumable/sign/"), "{up}");
    let unsigned = Tus::new(&srv, &anon, None);
    let (s, code) = error_code(unsigned.patch(&up, 0, b"sign").await).await;
    assert_eq!((s, code.as_str()), (400, "InvalidSignature"));
    assert_eq!(signed.append(&up, 0, b"sign").await, 4);
    let owner: Option<String> = c
        .query_one(
            "SELECT owner_id FROM storage.objects WHERE name = $1",
            &[&format!("{a}/signed.bin")],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(owner.as_deref(), Some(a.as_str()));
}

#[tokio::test]
async fn expired_uploads_are_discarded_with_their_parts() {
    let db = TestDb::new().await;
    let (_, secret) = setup(&db).await;
    let srv = db.server().await;
    create_bucket(&srv, &secret, json!({"name": "media"})).await;
    let tus = Tus::new(&srv, &secret, None);
    let up = tus.start("media", "old.bin", 10 * MIB).await;
    assert_eq!(tus.append(&up, 0, &bytes(3 * MIB)).await, 3 * MIB as u64);
    let fresh = tus.start("media", "fresh.bin", 10).await;
    assert_eq!(resumable_files(&db), 2);
    // Time passes for one of them.
    let c = db.owner().await;
    c.execute(
        "UPDATE wasmbase.storage_uploads SET expires_at = now() - interval '1 second' WHERE id = $1",
        &[&id_of(&up)],
    )
    .await
    .unwrap();
    assert_eq!(tus.head(&up).await.0, 404);
    let (s, code) = error_code(tus.patch(&up, 3 * MIB, b"more").await).await;
    assert_eq!((s, code.as_str()), (404, "NoSuchUpload"));
    let n = wasmbase_host_api::storage::resumable::expire(&srv.srv.state.storage)
        .await
        .unwrap();
    assert_eq!(n, 1);
    assert_eq!(resumable_files(&db), 1);
    assert_eq!(tus.head(&fresh).await, (200, Some(0)));
    let left: Vec<String> = c
        .query("SELECT id FROM wasmbase.storage_uploads", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(left, vec![id_of(&fresh)]);
}

#[tokio::test]
async fn a_finish_that_fails_midway_is_completed_by_the_next_request() {
    let db = TestDb::new().await;
    let (anon, secret) = setup(&db).await;
    let c = db.owner().await;
    // An INSERT policy that fails (not refuses) while a switch is off: the
    // object row cannot be written for a while, as in a database outage.
    c.batch_execute(
        "CREATE TABLE public.switch (up boolean NOT NULL);
         INSERT INTO public.switch VALUES (true);
         CREATE FUNCTION public.gate() RETURNS boolean LANGUAGE plpgsql SECURITY DEFINER
           SET search_path = pg_catalog AS $$
           BEGIN
             IF NOT (SELECT up FROM public.switch) THEN RAISE EXCEPTION 'not now'; END IF;
             RETURN true;
           END $$;
         CREATE POLICY flaky ON storage.objects FOR INSERT TO authenticated
           WITH CHECK (bucket_id = 'flaky' AND public.gate());
         CREATE POLICY flaky_read ON storage.objects FOR SELECT TO authenticated
           USING (bucket_id = 'flaky');",
    )
    .await
    .unwrap();
    let srv = db.server().await;
    create_bucket(&srv, &secret, json!({"name": "flaky"})).await;
    let token = user_token(&uuid::Uuid::new_v4().to_string());
    let tus = Tus::new(&srv, &anon, Some(token.clone()));
    let up = tus.start("flaky", "doc.bin", 10).await;
    c.execute("UPDATE public.switch SET up = false", &[])
        .await
        .unwrap();
    // Every byte is in, but the row cannot be written: a retryable 5xx, and
    // the upload is not reported whole while its object does not exist.
    let r = tus.patch(&up, 0, b"0123456789").await;
    assert_eq!(r.status(), 500, "{:?}", r.text().await);
    let (s, offset) = tus.head(&up).await;
    assert_eq!((s, offset), (500, None));
    assert_ne!(
        download(&srv, &anon, Some(&token), "flaky/doc.bin").await.0,
        200
    );
    // The database is back: the next request finishes it.
    c.execute("UPDATE public.switch SET up = true", &[])
        .await
        .unwrap();
    assert_eq!(tus.head(&up).await, (200, Some(10)));
    assert_eq!(
        download(&srv, &anon, Some(&token), "flaky/doc.bin").await,
        (200, b"0123456789".to_vec())
    );
    assert_eq!(tus.head(&up).await.0, 404);
    assert_eq!(resumable_files(&db), 0);
}
