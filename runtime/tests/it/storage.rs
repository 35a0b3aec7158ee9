//! `/storage/v1` on the local-disk backend (the default): the policy mapping
//! for two users and anon, streaming a 64 MiB body under the default server
//! limits, ranges and ETags, limits and bad input, racing uploads, bytes
//! deleted with their rows (by the API and by SQL), user deletion, and two
//! nodes sharing one database and one storage directory.

use crate::harness::*;
use futures::StreamExt;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::path::PathBuf;
use wasmbase_host_api::keys::KeyKind;

const POLICIES: &str = "
  CREATE POLICY own_read ON storage.objects FOR SELECT TO authenticated
    USING (bucket_id = 'avatars' AND (storage.foldername(name))[1] = auth.uid()::text);
  CREATE POLICY own_insert ON storage.objects FOR INSERT TO authenticated
    WITH CHECK (bucket_id = 'avatars' AND (storage.foldername(name))[1] = auth.uid()::text);
  CREATE POLICY own_update ON storage.objects FOR UPDATE TO authenticated
    USING (bucket_id = 'avatars' AND (storage.foldername(name))[1] = auth.uid()::text)
    WITH CHECK (bucket_id = 'avatars' AND (storage.foldername(name))[1] = auth.uid()::text);
  CREATE POLICY own_delete ON storage.objects FOR DELETE TO authenticated
    USING (bucket_id = 'avatars' AND (storage.foldername(name))[1] = auth.uid()::text);
";

/// One client of the storage API: a key and maybe a user token.
pub(crate) struct Client<'a> {
    pub(crate) srv: &'a TestServer,
    pub(crate) key: String,
    pub(crate) bearer: Option<String>,
}

impl Client<'_> {
    fn req(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let mut r = self
            .srv
            .http
            .request(method, format!("{}/storage/v1{path}", self.srv.url))
            .header("apikey", &self.key);
        if let Some(b) = &self.bearer {
            r = r.bearer_auth(b);
        }
        r
    }

    pub(crate) async fn json(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Value,
    ) -> (u16, Value) {
        let r = self.req(method, path).json(&body).send().await.unwrap();
        let s = r.status().as_u16();
        (s, r.json().await.unwrap_or(Value::Null))
    }

    pub(crate) async fn upload(
        &self,
        path: &str,
        bytes: Vec<u8>,
        mime: &str,
        upsert: bool,
    ) -> (u16, Value) {
        let r = self
            .req(reqwest::Method::POST, &format!("/object/{path}"))
            .header("content-type", mime)
            .header("cache-control", "max-age=60")
            .header("x-upsert", if upsert { "true" } else { "false" })
            .body(bytes)
            .send()
            .await
            .unwrap();
        let s = r.status().as_u16();
        (s, r.json().await.unwrap_or(Value::Null))
    }

    /// Creates a private bucket; the test's own setup, so a refusal panics.
    pub(crate) async fn bucket(&self, name: &str) {
        let (s, v) = self
            .json(reqwest::Method::POST, "/bucket", json!({ "name": name }))
            .await;
        assert_eq!(s, 200, "creating bucket {name}: {v}");
    }

    pub(crate) async fn download(&self, path: &str) -> (u16, Vec<u8>) {
        let r = self
            .req(reqwest::Method::GET, &format!("/object/{path}"))
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.bytes().await.unwrap().to_vec())
    }
}

/// The body status storage-api puts in `statusCode` (HTTP is 400 for most).
fn code(v: &Value) -> (&str, &str) {
    (
        v["statusCode"].as_str().unwrap_or(""),
        v["code"].as_str().unwrap_or(""),
    )
}

pub(crate) fn storage_dir(db: &TestDb) -> PathBuf {
    db.config().storage.local_dir.unwrap()
}

/// Object files on disk under the storage directory.
pub(crate) fn files(db: &TestDb) -> usize {
    let objects = storage_dir(db).join("objects");
    let Ok(dirs) = std::fs::read_dir(objects) else {
        return 0;
    };
    dirs.flatten()
        .map(|d| std::fs::read_dir(d.path()).map_or(0, |f| f.count()))
        .sum()
}

pub(crate) async fn setup(db: &TestDb) -> (String, String) {
    let (_, anon) = db.key(KeyKind::Publishable).await;
    let (_, secret) = db.key(KeyKind::Secret).await;
    db.owner().await.batch_execute(POLICIES).await.unwrap();
    (anon, secret)
}

/// Waits until the deletion queue is empty and `n` object files remain.
pub(crate) async fn wait_files(db: &TestDb, n: usize) {
    let c = db.owner().await;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let queued: i64 = c
            .query_one("SELECT count(*) FROM wasmbase.storage_garbage", &[])
            .await
            .unwrap()
            .get(0);
        if queued == 0 && files(db) == n {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "queue {queued}, files {} (want {n})",
            files(db)
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn every_operation_runs_as_the_caller_with_supabases_policy_mapping() {
    let db = TestDb::new().await;
    let (anon, secret) = setup(&db).await;
    let srv = db.server().await;
    let service = Client {
        srv: &srv,
        key: secret.clone(),
        bearer: None,
    };
    let (a_id, b_id) = (
        uuid::Uuid::new_v4().to_string(),
        uuid::Uuid::new_v4().to_string(),
    );
    let a = Client {
        srv: &srv,
        key: anon.clone(),
        bearer: Some(user_token(&a_id)),
    };
    let b = Client {
        srv: &srv,
        key: anon.clone(),
        bearer: Some(user_token(&b_id)),
    };
    let nobody = Client {
        srv: &srv,
        key: anon.clone(),
        bearer: None,
    };

    let (s, v) = service
        .json(
            reqwest::Method::POST,
            "/bucket",
            json!({"name": "avatars", "public": false}),
        )
        .await;
    assert_eq!((s, &v), (200, &json!({"name": "avatars"})));
    let (s, v) = service
        .json(reqwest::Method::POST, "/bucket", json!({"name": "avatars"}))
        .await;
    assert_eq!((s, code(&v)), (400, ("409", "BucketAlreadyExists")), "{v}");
    // anon cannot create buckets (no policy on storage.buckets).
    let (s, v) = nobody
        .json(reqwest::Method::POST, "/bucket", json!({"name": "mine"}))
        .await;
    assert_eq!((s, code(&v).1), (400, "AccessDenied"), "{v}");

    // Upload → INSERT: own folder yes, someone else's folder no.
    let (s, v) = a
        .upload(
            &format!("avatars/{a_id}/me.txt"),
            b"hello a".to_vec(),
            "text/plain",
            false,
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["Key"], format!("avatars/{a_id}/me.txt"));
    let (s, v) = a
        .upload(
            &format!("avatars/{b_id}/x.txt"),
            b"intruder".to_vec(),
            "text/plain",
            false,
        )
        .await;
    assert_eq!((s, code(&v)), (400, ("403", "AccessDenied")), "{v}");
    assert!(v["message"]
        .as_str()
        .unwrap()
        .contains("row-level security"));
    // The same name again without upsert: KeyAlreadyExists; with upsert it replaces.
    let (s, v) = a
        .upload(
            &format!("avatars/{a_id}/me.txt"),
            b"again".to_vec(),
            "text/plain",
            false,
        )
        .await;
    assert_eq!((s, code(&v)), (400, ("409", "KeyAlreadyExists")), "{v}");
    let (s, v) = a
        .upload(
            &format!("avatars/{a_id}/me.txt"),
            b"hello again".to_vec(),
            "text/plain",
            true,
        )
        .await;
    assert_eq!(s, 200, "{v}");

    // Download → SELECT: A reads, B and anon see nothing (not found, as Supabase).
    assert_eq!(
        a.download(&format!("avatars/{a_id}/me.txt")).await,
        (200, b"hello again".to_vec())
    );
    let (s, body) = b.download(&format!("avatars/{a_id}/me.txt")).await;
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!((s, code(&v)), (400, ("404", "NoSuchKey")));
    assert_eq!(
        nobody.download(&format!("avatars/{a_id}/me.txt")).await.0,
        400
    );

    // List → SELECT: A sees its folder; B and anon see nothing.
    let (s, v) = a
        .json(
            reqwest::Method::POST,
            "/object/list/avatars",
            json!({"prefix": a_id}),
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(v.as_array().unwrap().len(), 1, "{v}");
    assert_eq!(v[0]["name"], "me.txt");
    assert_eq!(v[0]["metadata"]["size"], 11);
    assert_eq!(v[0]["metadata"]["mimetype"], "text/plain");
    let (_, v) = service
        .json(
            reqwest::Method::POST,
            "/object/list/avatars",
            json!({"prefix": ""}),
        )
        .await;
    assert_eq!(v[0]["name"], a_id, "a folder: {v}");
    assert_eq!(v[0]["id"], Value::Null);
    for c in [&b, &nobody] {
        let (s, v) = c
            .json(
                reqwest::Method::POST,
                "/object/list/avatars",
                json!({"prefix": a_id}),
            )
            .await;
        assert_eq!((s, v), (200, json!([])));
    }

    // Move → SELECT + UPDATE (WITH CHECK sees the new name); copy → SELECT + INSERT.
    let (s, v) = a
        .json(
            reqwest::Method::POST,
            "/object/move",
            json!({"bucketId": "avatars", "sourceKey": format!("{a_id}/me.txt"), "destinationKey": format!("{b_id}/me.txt")}),
        )
        .await;
    assert_eq!((s, code(&v).1), (400, "AccessDenied"), "{v}");
    let (s, v) = a
        .json(
            reqwest::Method::POST,
            "/object/move",
            json!({"bucketId": "avatars", "sourceKey": format!("{a_id}/me.txt"), "destinationKey": format!("{a_id}/moved.txt")}),
        )
        .await;
    assert_eq!((s, &v), (200, &json!({"message": "Successfully moved"})));
    let (s, v) = a
        .json(
            reqwest::Method::POST,
            "/object/copy",
            json!({"bucketId": "avatars", "sourceKey": format!("{a_id}/moved.txt"), "destinationKey": format!("{a_id}/copy.txt")}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["Key"], format!("avatars/{a_id}/copy.txt"));
    assert_eq!(
        a.download(&format!("avatars/{a_id}/copy.txt")).await.1,
        b"hello again"
    );
    let (s, v) = b
        .json(
            reqwest::Method::POST,
            "/object/copy",
            json!({"bucketId": "avatars", "sourceKey": format!("{a_id}/moved.txt"), "destinationKey": format!("{b_id}/stolen.txt")}),
        )
        .await;
    assert_eq!((s, code(&v).1), (400, "NoSuchKey"), "{v}");

    // Remove → SELECT + DELETE: B removes nothing of A's; A removes both.
    let (s, v) = b
        .json(
            reqwest::Method::DELETE,
            "/object/avatars",
            json!({"prefixes": [format!("{a_id}/copy.txt")]}),
        )
        .await;
    assert_eq!((s, v), (200, json!([])));
    wait_files(&db, 2).await;
    let (s, v) = a
        .json(
            reqwest::Method::DELETE,
            "/object/avatars",
            json!({"prefixes": [format!("{a_id}/copy.txt"), format!("{a_id}/moved.txt"), "missing"]}),
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(v.as_array().unwrap().len(), 2, "{v}");
    // The bytes of the removed objects (and of the replaced first upload) are gone.
    wait_files(&db, 0).await;
    // An empty bucket can be deleted.
    let (s, v) = service
        .json(reqwest::Method::DELETE, "/bucket/avatars", json!({}))
        .await;
    assert_eq!((s, &v), (200, &json!({"message": "Successfully deleted"})));
}

#[tokio::test]
async fn a_64_mib_body_streams_under_the_default_limits_with_ranges_and_etags() {
    let db = TestDb::new().await;
    let (_, secret) = setup(&db).await;
    let srv = db.server().await;
    let service = Client {
        srv: &srv,
        key: secret,
        bearer: None,
    };
    service.bucket("big").await;
    const MIB: usize = 1024 * 1024;
    let chunk = |i: usize| -> Vec<u8> { (0..MIB).map(|j| ((i * 31 + j) % 251) as u8).collect() };
    let mut want = Sha256::new();
    for i in 0..64 {
        want.update(chunk(i));
    }
    let want = want.finalize();
    let hwm = || -> u64 {
        std::fs::read_to_string("/proc/self/status")
            .unwrap()
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
            .unwrap_or(0)
    };
    // Reset the peak to the current RSS (Linux: clear_refs "5"), so an earlier
    // peak of this process cannot hide the growth.
    std::fs::write("/proc/self/clear_refs", "5").unwrap();
    let before = hwm();
    let body = reqwest::Body::wrap_stream(futures::stream::iter(
        (0..64).map(move |i| Ok::<_, std::io::Error>(chunk(i))),
    ));
    let r = service
        .req(reqwest::Method::POST, "/object/big/file.bin")
        .header("content-type", "application/octet-stream")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let r = service
        .req(reqwest::Method::GET, "/object/big/file.bin")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let etag = r.headers()["etag"].to_str().unwrap().to_string();
    assert_eq!(r.headers()["content-length"], (64 * MIB).to_string());
    let mut got = Sha256::new();
    let mut s = r.bytes_stream();
    while let Some(c) = s.next().await {
        got.update(c.unwrap());
    }
    assert_eq!(got.finalize(), want, "downloaded bytes differ");
    // Neither direction held the body: the peak of this process (server and
    // client, and the tests running beside it) grew by less than the 64 MiB a
    // held body would take — 128 MiB for holding it both ways.
    let grown_kb = hwm().saturating_sub(before);
    assert!(grown_kb < 48 * 1024, "peak RSS grew by {grown_kb} kB");

    // Range → 206 with the right bytes; a range past the end → 416.
    let r = service
        .req(reqwest::Method::GET, "/object/big/file.bin")
        .header("range", "bytes=1048575-1048577")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 206);
    assert_eq!(
        r.headers()["content-range"],
        format!("bytes 1048575-1048577/{}", 64 * MIB)
    );
    let c0 = chunk(0);
    let c1 = chunk(1);
    assert_eq!(
        r.bytes().await.unwrap().to_vec(),
        vec![c0[MIB - 1], c1[0], c1[1]]
    );
    let r = service
        .req(reqwest::Method::GET, "/object/big/file.bin")
        .header("range", format!("bytes={}-", 64 * MIB))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 416);
    // If-None-Match with the ETag → 304.
    let r = service
        .req(reqwest::Method::GET, "/object/big/file.bin")
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 304);
}

#[tokio::test]
async fn limits_names_tokens_and_races_get_storage_errors_and_leave_no_orphans() {
    let db = TestDb::new().await;
    let (anon, secret) = setup(&db).await;
    let srv = db.server().await;
    let service = Client {
        srv: &srv,
        key: secret,
        bearer: None,
    };
    let (s, v) = service
        .json(
            reqwest::Method::POST,
            "/bucket",
            json!({"name": "pics", "file_size_limit": 1024, "allowed_mime_types": ["image/*"]}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let (s, v) = service
        .upload("pics/a.png", vec![0; 2048], "image/png", false)
        .await;
    assert_eq!((s, code(&v)), (400, ("413", "EntityTooLarge")), "{v}");
    let (s, v) = service
        .upload("pics/a.txt", vec![0; 10], "text/plain", false)
        .await;
    assert_eq!((s, code(&v)), (400, ("415", "InvalidMimeType")), "{v}");
    let (s, v) = service
        .upload("pics/a.png", vec![0; 1024], "image/png", false)
        .await;
    assert_eq!(s, 200, "{v}");
    // A refused upload's error reaches the client whole, however much of the
    // body was unread when it was decided (no connection reset instead).
    for round in 0..20 {
        let (s, v) = service
            .upload("pics/big.png", vec![0; 256 * 1024], "image/png", false)
            .await;
        assert_eq!((s, code(&v).1), (400, "EntityTooLarge"), "round {round}");
        let form = reqwest::multipart::Form::new().part(
            "",
            reqwest::multipart::Part::bytes(vec![0u8; 200 * 1024])
                .file_name("x.txt")
                .mime_str("text/plain")
                .unwrap(),
        );
        let r = service
            .req(reqwest::Method::POST, "/object/pics/x.txt")
            .multipart(form)
            .send()
            .await
            .unwrap();
        let v: Value = r.json().await.unwrap();
        assert_eq!(code(&v).1, "InvalidMimeType", "round {round}");
    }
    // (A literal `a/../b` is normalised away by the client's URL parser; move
    // checks the same rule on a name in a JSON body below.)
    for bad in ["pics/..%2Fx.png", "pics/a%2F..%2Fb.png", "pics/%C3%A9.png"] {
        let (s, v) = service.upload(bad, vec![1], "image/png", false).await;
        assert_eq!((s, code(&v).1), (400, "InvalidKey"), "{bad}: {v}");
    }
    let (s, v) = service
        .json(
            reqwest::Method::POST,
            "/object/move",
            json!({"bucketId": "pics", "sourceKey": "a.png", "destinationKey": "x/../../a.png"}),
        )
        .await;
    assert_eq!((s, code(&v).1), (400, "InvalidKey"), "{v}");
    // Form fields are bounded too (the body is exempt from the server's limit).
    let form = reqwest::multipart::Form::new()
        .text("metadata", "x".repeat(2 * 1024 * 1024))
        .part(
            "",
            reqwest::multipart::Part::bytes(vec![1u8])
                .file_name("m.png")
                .mime_str("image/png")
                .unwrap(),
        );
    let r = service
        .req(reqwest::Method::POST, "/object/pics/m.png")
        .multipart(form)
        .send()
        .await
        .unwrap();
    let v: Value = r.json().await.unwrap();
    assert_eq!(code(&v), ("413", "EntityTooLarge"), "{v}");
    let (s, v) = service
        .upload("nope/a.png", vec![1], "image/png", false)
        .await;
    assert_eq!((s, code(&v)), (400, ("404", "NoSuchBucket")), "{v}");
    wait_files(&db, 1).await;

    // Signed URLs: work without a key, only for their object, not when tampered.
    let (s, v) = service
        .json(
            reqwest::Method::POST,
            "/object/sign/pics/a.png",
            json!({"expiresIn": 60}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let url = v["signedURL"].as_str().unwrap().to_string();
    let get = |u: String| {
        let http = srv.http.clone();
        let base = srv.url.clone();
        async move {
            let r = http
                .get(format!("{base}/storage/v1{u}"))
                .send()
                .await
                .unwrap();
            let s = r.status().as_u16();
            (s, r.bytes().await.unwrap().to_vec())
        }
    };
    assert_eq!(get(url.clone()).await, (200, vec![0; 1024]));
    let token = url.split("token=").nth(1).unwrap().to_string();
    let (s, body) = get(format!("/object/sign/pics/other.png?token={token}")).await;
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!((s, code(&v).1), (400, "InvalidSignature"), "{v}");
    let mut tampered = token.clone();
    tampered.replace_range(tampered.len() - 3.., "AAA");
    let (s, body) = get(format!("/object/sign/pics/a.png?token={tampered}")).await;
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!((s, code(&v).1), (400, "InvalidJWT"), "{v}");
    // A malformed query string is storage's JSON error, not a plain-text one.
    let (s, body) = get(format!("/object/sign/pics/a.png?token={token}&token=x")).await;
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!((s, code(&v).1), (400, "InvalidRequest"), "{v}");
    // A download token is not an upload token.
    let r = srv
        .http
        .put(format!(
            "{}/storage/v1/object/upload/sign/pics/a.png?token={token}",
            srv.url
        ))
        .body(vec![1u8])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);

    // Signed upload URL: issued to the caller, used without a key.
    let (s, v) = service
        .json(
            reqwest::Method::POST,
            "/object/upload/sign/pics/up.png",
            json!({}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let up = format!("{}/storage/v1{}", srv.url, v["url"].as_str().unwrap());
    let r = srv
        .http
        .put(&up)
        .header("content-type", "image/png")
        .body(vec![7u8; 10])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let again = srv
        .http
        .put(&up)
        .header("content-type", "image/png")
        .body(vec![8u8; 10])
        .send()
        .await
        .unwrap();
    assert_eq!(
        again.status(),
        400,
        "a second use without upsert is a duplicate"
    );
    assert_eq!(service.download("pics/up.png").await.1, vec![7u8; 10]);

    // Two uploads of one name at once: one wins, the other is a duplicate, no orphan.
    let race = |n: u8| service.upload("pics/race.png", vec![n; 100], "image/png", false);
    let ((s1, _), (s2, _)) = tokio::join!(race(1), race(2));
    let mut statuses = [s1, s2];
    statuses.sort();
    assert_eq!(statuses, [200, 400]);
    wait_files(&db, 3).await;

    // anon without a session is refused on a private bucket.
    let nobody = Client {
        srv: &srv,
        key: anon,
        bearer: None,
    };
    assert_eq!(nobody.download("pics/a.png").await.0, 400);
}

#[tokio::test]
async fn rows_deleted_by_sql_take_their_bytes_and_deleting_a_user_keeps_their_objects() {
    let db = TestDb::new().await;
    let (_, secret) = setup(&db).await;
    let srv = db.server().await;
    let owner = db.owner().await;
    let user: uuid::Uuid = owner
        .query_one(
            "INSERT INTO auth.users (email) VALUES ('u@example.com') RETURNING id",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let service = Client {
        srv: &srv,
        key: secret.clone(),
        bearer: None,
    };
    service.bucket("avatars").await;
    let a = Client {
        srv: &srv,
        key: secret,
        bearer: Some(user_token(&user.to_string())),
    };
    for n in ["one", "two"] {
        let (s, v) = a
            .upload(
                &format!("avatars/{user}/{n}"),
                b"x".to_vec(),
                "text/plain",
                false,
            )
            .await;
        assert_eq!(s, 200, "{v}");
    }
    wait_files(&db, 2).await;
    owner
        .execute("DELETE FROM storage.objects WHERE name LIKE '%/one'", &[])
        .await
        .unwrap();
    // The SQL delete's bytes go too (the queue is woken by the next pass).
    wait_files(&db, 1).await;
    owner
        .execute("DELETE FROM auth.users WHERE id = $1", &[&user])
        .await
        .unwrap();
    let row = owner
        .query_one(
            "SELECT owner, owner_id FROM storage.objects WHERE name LIKE '%/two'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, Option<uuid::Uuid>>(0), None);
    assert_eq!(row.get::<_, Option<String>>(1), None);
    assert_eq!(
        service.download(&format!("avatars/{user}/two")).await.1,
        b"x"
    );

    // A folder deleted recursively, as its owner (RLS: SELECT + DELETE).
    let other: uuid::Uuid = owner
        .query_one(
            "INSERT INTO auth.users (email) VALUES ('v@example.com') RETURNING id",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let b = Client {
        srv: &srv,
        key: a.key.clone(),
        bearer: Some(user_token(&other.to_string())),
    };
    for n in ["pics/1", "pics/2", "pics/deeper/3", "notes"] {
        let (s, v) = b
            .upload(
                &format!("avatars/{other}/{n}"),
                b"y".to_vec(),
                "text/plain",
                false,
            )
            .await;
        assert_eq!(s, 200, "{v}");
    }
    let (s, v) = b
        .json(
            reqwest::Method::DELETE,
            "/object/avatars",
            json!({"prefixes": [format!("{other}/pics")], "recursive": true}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v.as_array().unwrap().len(), 3, "{v}");
    wait_files(&db, 2).await;

    // With storage.on_user_delete = "delete", a deleted user's objects go too.
    let _delete = db
        .server_with(|c| c.storage.on_user_delete = "delete".into())
        .await;
    owner
        .execute("DELETE FROM auth.users WHERE id = $1", &[&other])
        .await
        .unwrap();
    wait_files(&db, 1).await;
    assert_eq!(b.download(&format!("avatars/{other}/notes")).await.0, 400);
}

#[tokio::test]
async fn two_nodes_serve_and_sign_each_others_objects() {
    let db = TestDb::new().await;
    let (_, secret) = setup(&db).await;
    let one = db.server().await;
    let two = db.server().await;
    let on_one = Client {
        srv: &one,
        key: secret.clone(),
        bearer: None,
    };
    let on_two = Client {
        srv: &two,
        key: secret,
        bearer: None,
    };
    on_one
        .json(
            reqwest::Method::POST,
            "/bucket",
            json!({"name": "shared", "public": true}),
        )
        .await;
    let (s, v) = on_one
        .upload("shared/x.txt", b"from one".to_vec(), "text/plain", false)
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        on_two.download("shared/x.txt").await,
        (200, b"from one".to_vec())
    );
    let (_, v) = on_two
        .json(
            reqwest::Method::POST,
            "/object/sign/shared/x.txt",
            json!({"expiresIn": 60}),
        )
        .await;
    let r = one
        .http
        .get(format!(
            "{}/storage/v1{}",
            one.url,
            v["signedURL"].as_str().unwrap()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.bytes().await.unwrap().as_ref(), b"from one");
    // Public bucket: no key at all.
    let r = two
        .http
        .get(format!("{}/storage/v1/object/public/shared/x.txt", two.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["cache-control"], "max-age=60");
    // Made private, it is refused on the other node at once (no node-local state).
    on_one
        .json(
            reqwest::Method::PUT,
            "/bucket/shared",
            json!({"public": false}),
        )
        .await;
    let r = two
        .http
        .get(format!("{}/storage/v1/object/public/shared/x.txt", two.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
}

/// A real S3-compatible server that checks signatures (s3s-fs, installed by
/// `./scripts/test`), for the S3 backend.
pub(crate) struct S3Server {
    url: String,
    dir: tempfile::TempDir,
    _child: tokio::process::Child,
}

impl S3Server {
    pub(crate) async fn start() -> S3Server {
        use tokio::io::AsyncBufReadExt;
        let bin = std::env::var("WASMBASE_TEST_S3S_FS").unwrap_or_else(|_| {
            panic!(
                "the S3 tests need s3s-fs: run ./scripts/test (it installs it), or \
                 `cargo install s3s-fs --version 0.14.1 --locked --features binary` and set \
                 WASMBASE_TEST_S3S_FS to its path"
            )
        });
        let dir = tempfile::tempdir().unwrap();
        let mut child = tokio::process::Command::new(bin)
            .args([
                "--host",
                "127.0.0.1",
                "--port",
                "0",
                "--access-key",
                "AK",
                "--secret-key",
                "SK",
            ])
            .arg(dir.path())
            .env("RUST_LOG", "s3s_fs=info")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("s3s-fs starts");
        let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
        let url = tokio::time::timeout(std::time::Duration::from_secs(30), async {
            loop {
                let line = lines
                    .next_line()
                    .await
                    .unwrap()
                    .expect("s3s-fs printed its address");
                if let Some(rest) = line.split("server is running at ").nth(1) {
                    return rest.trim().to_string();
                }
            }
        })
        .await
        .expect("s3s-fs is up within 30 s");
        // Keep reading, so its log never blocks it.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        S3Server {
            url,
            dir,
            _child: child,
        }
    }

    /// Points a config at this server, in a fresh bucket.
    pub(crate) fn configure(&self, c: &mut wasmbase::config::Config, bucket: &str) {
        c.storage.backend = "s3".into();
        c.storage.s3_endpoint = Some(self.url.clone());
        c.storage.s3_bucket = Some(bucket.into());
        c.storage.s3_access_key_id = Some("AK".into());
        c.storage.s3_secret_access_key = Some("SK".into());
    }

    /// Files s3s-fs holds for `bucket` (its objects are files under its dir).
    pub(crate) fn files(&self, bucket: &str) -> usize {
        fn count(p: &std::path::Path) -> usize {
            std::fs::read_dir(p).map_or(0, |d| {
                d.flatten()
                    .map(|e| {
                        let p = e.path();
                        if p.is_dir() {
                            count(&p)
                        } else {
                            usize::from(!e.file_name().to_string_lossy().starts_with('.'))
                        }
                    })
                    .sum()
            })
        }
        count(&self.dir.path().join(bucket))
    }
}

#[tokio::test]
async fn on_s3_two_nodes_stream_a_multipart_object_and_deletes_reach_the_bucket() {
    let s3 = S3Server::start().await;
    let db = TestDb::new().await;
    let (_, secret) = setup(&db).await;
    let bucket = format!("wb{}", &uuid::Uuid::new_v4().simple().to_string()[..16]);
    let one = db.server_with(|c| s3.configure(c, &bucket)).await;
    let two = db.server_with(|c| s3.configure(c, &bucket)).await;
    let on_one = Client {
        srv: &one,
        key: secret.clone(),
        bearer: None,
    };
    let on_two = Client {
        srv: &two,
        key: secret,
        bearer: None,
    };
    let (s, v) = on_one
        .json(reqwest::Method::POST, "/bucket", json!({"name": "media"}))
        .await;
    assert_eq!(s, 200, "{v}");
    // 20 MiB: three parts of a multipart upload (8 + 8 + 4 MiB).
    let body: Vec<u8> = (0..20 * 1024 * 1024).map(|i| (i % 251) as u8).collect();
    let (s, v) = on_one
        .upload(
            "media/clip.bin",
            body.clone(),
            "application/octet-stream",
            false,
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(s3.files(&bucket), 1);
    let (s, got) = on_two.download("media/clip.bin").await;
    assert_eq!(s, 200);
    assert!(
        got == body,
        "the bytes read back through the other node differ"
    );
    let r = on_two
        .req(reqwest::Method::GET, "/object/media/clip.bin")
        .header("range", "bytes=8388607-8388609")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 206);
    assert_eq!(
        r.bytes().await.unwrap().to_vec(),
        body[8388607..=8388609].to_vec()
    );
    // A small one (one PutObject), then both removed: the bucket empties.
    let (s, _) = on_two
        .upload("media/small.txt", b"tiny".to_vec(), "text/plain", false)
        .await;
    assert_eq!(s, 200);
    assert_eq!(on_one.download("media/small.txt").await.1, b"tiny");
    let (s, v) = on_two
        .json(
            reqwest::Method::DELETE,
            "/object/media",
            json!({"prefixes": ["clip.bin", "small.txt"]}),
        )
        .await;
    assert_eq!((s, v.as_array().map(Vec::len)), (200, Some(2)));
    wait_until("the S3 bucket empties", 20, || s3.files(&bucket) == 0).await;
}

#[tokio::test]
async fn an_s3_server_that_is_down_gets_a_503_and_the_server_carries_on() {
    let db = TestDb::new().await;
    let (_, secret) = setup(&db).await;
    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let srv = db
        .server_with(|c| {
            c.storage.backend = "s3".into();
            c.storage.s3_endpoint = Some(format!("http://127.0.0.1:{port}"));
            c.storage.s3_bucket = Some("gone".into());
            c.storage.s3_access_key_id = Some("AK".into());
            c.storage.s3_secret_access_key = Some("SK".into());
        })
        .await;
    let service = Client {
        srv: &srv,
        key: secret,
        bearer: None,
    };
    let (s, _) = service
        .json(reqwest::Method::POST, "/bucket", json!({"name": "b"}))
        .await;
    assert_eq!(s, 200, "metadata does not need S3");
    let (s, v) = service
        .upload("b/x.txt", b"x".to_vec(), "text/plain", false)
        .await;
    assert_eq!((s, code(&v)), (503, ("503", "StorageBackendError")), "{v}");
    // Nothing became visible, and the server still answers.
    let (s, v) = service
        .json(
            reqwest::Method::POST,
            "/object/list/b",
            json!({"prefix": ""}),
        )
        .await;
    assert_eq!((s, v), (200, json!([])));
}

#[tokio::test]
async fn the_sweeper_deletes_only_old_unreferenced_bytes_and_reports_missing_ones() {
    use wasmbase_host_api::storage::{local::LocalDisk, sweep, ObjectStore};
    let db = TestDb::new().await;
    let (_, secret) = setup(&db).await;
    let srv = db.server().await;
    let service = Client {
        srv: &srv,
        key: secret,
        bearer: None,
    };
    service.bucket("b").await;
    for n in ["kept.txt", "lost.txt"] {
        let (s, _) = service
            .upload(&format!("b/{n}"), b"z".to_vec(), "text/plain", false)
            .await;
        assert_eq!(s, 200);
    }
    let path = |k: &str| storage_dir(&db).join("objects").join(&k[..2]).join(k);
    // A row whose bytes are gone (reported, not deleted).
    let lost: String = db
        .owner()
        .await
        .query_one(
            "SELECT version FROM storage.objects WHERE name = 'lost.txt'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    std::fs::remove_file(path(&lost)).unwrap();
    // What a crash between bytes and row leaves: bytes no row points at, one
    // older than the grace period and one fresh.
    let store = LocalDisk::open(&storage_dir(&db)).unwrap();
    let (old, fresh) = (
        wasmbase_host_api::storage::backend::new_key(),
        wasmbase_host_api::storage::backend::new_key(),
    );
    for k in [&old, &fresh] {
        let body = futures::stream::iter([Ok(bytes::Bytes::from_static(b"orphan"))]).boxed();
        store.put(k, body).await.unwrap();
    }
    let two_days_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(48 * 3600);
    std::fs::File::options()
        .write(true)
        .open(path(&old))
        .unwrap()
        .set_modified(two_days_ago)
        .unwrap();
    let grace = std::time::Duration::from_secs(24 * 3600);
    let swept = sweep::once(&srv.srv.state.system, &store, grace)
        .await
        .unwrap();
    assert_eq!(
        swept,
        sweep::Swept {
            deleted: 1,
            missing: 1,
            ran: true
        }
    );
    assert!(!path(&old).exists(), "the old orphan is deleted");
    assert!(path(&fresh).exists(), "a fresh one may still get its row");
    assert_eq!(service.download("b/kept.txt").await, (200, b"z".to_vec()));
}

#[tokio::test]
async fn list_v2_pages_by_cursor_and_folds_folders_under_the_callers_rls() {
    let db = TestDb::new().await;
    let (anon, secret) = setup(&db).await;
    let srv = db.server().await;
    let service = Client {
        srv: &srv,
        key: secret,
        bearer: None,
    };
    service.bucket("docs").await;
    for n in ["a/1.txt", "a/2.txt", "b/c/3.txt", "top.txt"] {
        let (s, _) = service
            .upload(&format!("docs/{n}"), b"d".to_vec(), "text/plain", false)
            .await;
        assert_eq!(s, 200);
    }
    let page = |body: Value| service.json(reqwest::Method::POST, "/object/list-v2/docs", body);
    let (s, v) = page(json!({"with_delimiter": true, "limit": 2})).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["hasNext"], true);
    let names = |v: &Value, k: &str| -> Vec<String> {
        v[k].as_array()
            .unwrap()
            .iter()
            .map(|e| e["name"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(names(&v, "folders"), ["a/", "b/"]);
    assert_eq!(v["folders"][0]["key"], "a");
    let (_, v2) =
        page(json!({"with_delimiter": true, "limit": 2, "cursor": v["nextCursor"]})).await;
    assert_eq!(
        (v2["hasNext"].clone(), names(&v2, "objects")),
        (json!(false), vec!["top.txt".to_string()])
    );
    let (_, flat) = page(json!({"prefix": "a/"})).await;
    assert_eq!(names(&flat, "objects"), ["a/1.txt", "a/2.txt"]);
    let (_, desc) =
        page(json!({"prefix": "a/", "sortBy": {"column": "name", "order": "desc"}})).await;
    assert_eq!(names(&desc, "objects"), ["a/2.txt", "a/1.txt"]);
    // anon: no policy, nothing listed.
    let nobody = Client {
        srv: &srv,
        key: anon,
        bearer: None,
    };
    let (s, v) = nobody
        .json(reqwest::Method::POST, "/object/list-v2/docs", json!({}))
        .await;
    assert_eq!((s, v["objects"].as_array().map(Vec::len)), (200, Some(0)));
}

#[tokio::test]
async fn the_cli_lists_copies_both_ways_signs_and_removes_folders() {
    let db = TestDb::new().await;
    let (_, secret) = setup(&db).await;
    let srv = db.server().await;
    let dir = tempfile::tempdir().unwrap();
    let cli = |args: &[&str]| {
        let mut c = tokio::process::Command::new(env!("CARGO_BIN_EXE_wasmbase"));
        c.arg("storage")
            .args(args)
            .args(["--url", &srv.url, "--key", &secret])
            .current_dir(dir.path());
        let shown = format!("{args:?}");
        async move {
            let out = c.output().await.unwrap();
            let text = String::from_utf8_lossy(&out.stdout).to_string();
            assert!(
                out.status.success(),
                "wasmbase storage {shown}: {text}{}",
                String::from_utf8_lossy(&out.stderr)
            );
            text
        }
    };
    let service = Client {
        srv: &srv,
        key: secret.clone(),
        bearer: None,
    };
    service.bucket("files").await;
    assert!(cli(&["buckets"]).await.contains("files\tprivate"));
    let body: Vec<u8> = (0..3 * 1024 * 1024).map(|i| (i % 241) as u8).collect();
    std::fs::write(dir.path().join("in.bin"), &body).unwrap();
    cli(&["cp", "in.bin", "ss:///files/dir/sub/a.bin"]).await;
    cli(&["cp", "in.bin", "ss:///files/dir/b.bin"]).await;
    cli(&["cp", "ss:///files/dir/sub/a.bin", "out.bin"]).await;
    assert!(std::fs::read(dir.path().join("out.bin")).unwrap() == body);
    let listed = cli(&["ls", "ss:///files/dir"]).await;
    assert_eq!(listed, format!("dir/sub/\ndir/b.bin\t{}\n", body.len()));
    let url = cli(&["sign", "ss:///files/dir/b.bin"]).await;
    let r = reqwest::get(url.trim()).await.unwrap();
    assert!(r.bytes().await.unwrap().as_ref() == body.as_slice());
    let removed = cli(&["rm", "-r", "ss:///files/dir"]).await;
    assert_eq!(removed.lines().count(), 2, "{removed}");
    assert_eq!(cli(&["ls", "ss:///files"]).await, "");
}

#[tokio::test]
async fn a_client_that_disconnects_mid_upload_leaves_nothing_behind() {
    use tokio::io::AsyncWriteExt;
    let db = TestDb::new().await;
    let (_, secret) = setup(&db).await;
    let srv = db.server().await;
    let service = Client {
        srv: &srv,
        key: secret.clone(),
        bearer: None,
    };
    service.bucket("up").await;
    let addr = srv.url.trim_start_matches("http://").to_string();
    let mut tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let head = format!(
        "POST /storage/v1/object/up/cut.bin HTTP/1.1\r\nHost: {addr}\r\napikey: {secret}\r\n\
         content-type: application/octet-stream\r\ncontent-length: 1048576\r\n\r\n"
    );
    tcp.write_all(head.as_bytes()).await.unwrap();
    tcp.write_all(&vec![7u8; 300 * 1024]).await.unwrap();
    tcp.flush().await.unwrap();
    // The upload is under way: its temporary file exists.
    let tmp = storage_dir(&db).join("tmp");
    wait_until("the upload starts writing", 20, || {
        std::fs::read_dir(&tmp).map_or(0, |d| d.count()) == 1
    })
    .await;
    drop(tcp);
    // The server notices, discards the partial file, and writes no row.
    wait_until("the partial upload is discarded", 20, || {
        std::fs::read_dir(&tmp).map_or(0, |d| d.count()) == 0
    })
    .await;
    wait_files(&db, 0).await;
    let (s, v) = service
        .json(
            reqwest::Method::POST,
            "/object/list/up",
            json!({"prefix": ""}),
        )
        .await;
    assert_eq!((s, v), (200, json!([])));
    // The name is free: a whole upload of it succeeds.
    let (s, _) = service
        .upload("up/cut.bin", vec![1; 10], "application/octet-stream", false)
        .await;
    assert_eq!(s, 200);
}
