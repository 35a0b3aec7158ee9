//! The functions' `storage` interface end to end: the `files` example
//! (built from the real SDK) on one node, `/storage/v1` on another, one
//! database and one storage directory. Calls act as the caller under the
//! buckets' policies, only on granted buckets and modes; a `db = "service"`
//! deployment acts as service_role; refused or oversized uploads leave no
//! row and no bytes.

use crate::functions::{deploy, wait_version};
use crate::harness::*;
use crate::storage::{wait_files, Client};
use serde_json::{json, Value};
use wasmbase_host_api::keys::KeyKind;

const POLICIES: &str = "
  CREATE POLICY up_read ON storage.objects FOR SELECT TO authenticated
    USING (bucket_id = 'uploads' AND (storage.foldername(name))[1] = auth.uid()::text);
  CREATE POLICY up_insert ON storage.objects FOR INSERT TO authenticated
    WITH CHECK (bucket_id = 'uploads' AND (storage.foldername(name))[1] = auth.uid()::text);
  CREATE POLICY up_update ON storage.objects FOR UPDATE TO authenticated
    USING (bucket_id = 'uploads' AND (storage.foldername(name))[1] = auth.uid()::text);
  CREATE POLICY up_delete ON storage.objects FOR DELETE TO authenticated
    USING (bucket_id = 'uploads' AND (storage.foldername(name))[1] = auth.uid()::text);
  CREATE POLICY avatars_read ON storage.objects FOR SELECT TO authenticated
    USING (bucket_id = 'avatars');
";

/// A call of a function as `token`'s user (anon key); the status and body.
async fn call(
    srv: &TestServer,
    key: &str,
    token: String,
    method: reqwest::Method,
    path: String,
    body: Vec<u8>,
) -> (u16, Vec<u8>) {
    let r = srv
        .http
        .request(method, format!("{}{path}", srv.url))
        .header("apikey", key)
        .bearer_auth(token)
        .header("content-type", "text/plain")
        .body(body)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.bytes().await.unwrap().to_vec())
}

fn json_of(b: &[u8]) -> Value {
    serde_json::from_slice(b).unwrap_or(Value::Null)
}

#[tokio::test]
async fn functions_use_granted_buckets_as_the_caller_and_nothing_else() {
    use reqwest::Method;
    let db = TestDb::new().await;
    let (_, anon) = db.key(KeyKind::Publishable).await;
    let (_, secret) = db.key(KeyKind::Secret).await;
    db.owner().await.batch_execute(POLICIES).await.unwrap();
    let node = db.functions_server(|_| {}).await;
    node.wait_function("files").await;
    let other = db.server().await;
    let service = Client {
        srv: &other,
        key: secret.clone(),
        bearer: None,
    };
    for (name, limit) in [("avatars", None), ("uploads", Some(1000)), ("secret", None)] {
        let (s, v) = service
            .json(
                Method::POST,
                "/bucket",
                json!({"name": name, "file_size_limit": limit}),
            )
            .await;
        assert_eq!(s, 200, "{v}");
    }
    let (a_id, b_id) = (
        uuid::Uuid::new_v4().to_string(),
        uuid::Uuid::new_v4().to_string(),
    );
    let (a, b) = (user_token(&a_id), user_token(&b_id));
    let fcall = |token: &str, method: Method, path: String, body: &[u8]| {
        call(&node, &anon, token.to_string(), method, path, body.to_vec())
    };

    // An upload through the function is an object of /storage/v1, on the
    // other node, owned by the caller.
    let (s, v) = fcall(
        &a,
        Method::PUT,
        format!("/fn/files/uploads/{a_id}/note.txt"),
        b"hello",
    )
    .await;
    let v = json_of(&v);
    assert_eq!(
        (s, &v["size"], &v["contentType"]),
        (200, &json!(5), &json!("text/plain")),
        "{v}"
    );
    let as_a = Client {
        srv: &other,
        key: anon.clone(),
        bearer: Some(a.clone()),
    };
    assert_eq!(
        as_a.download(&format!("uploads/{a_id}/note.txt")).await,
        (200, b"hello".to_vec())
    );
    let owner: Option<String> = db
        .owner()
        .await
        .query_one(
            "SELECT owner_id FROM storage.objects WHERE name = $1",
            &[&format!("{a_id}/note.txt")],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(owner.as_deref(), Some(a_id.as_str()));
    // The same name again without upsert is a duplicate; with it, replaced.
    let (s, v) = fcall(
        &a,
        Method::PUT,
        format!("/fn/files/uploads/{a_id}/note.txt"),
        b"again",
    )
    .await;
    assert_eq!(
        (s, json_of(&v)["code"].as_str()),
        (409, Some("KeyAlreadyExists"))
    );
    let (s, _) = fcall(
        &a,
        Method::PUT,
        format!("/fn/files/uploads/{a_id}/note.txt?upsert"),
        b"hello!",
    )
    .await;
    assert_eq!(s, 200);

    // The bucket's policies apply to the caller: not into B's folder, and B
    // cannot read A's file.
    let (s, v) = fcall(
        &a,
        Method::PUT,
        format!("/fn/files/uploads/{b_id}/x.txt"),
        b"intruder",
    )
    .await;
    assert_eq!(
        (s, json_of(&v)["code"].as_str()),
        (403, Some("AccessDenied")),
        "{:?}",
        json_of(&v)
    );
    let (s, v) = fcall(
        &b,
        Method::GET,
        format!("/fn/files/uploads/{a_id}/note.txt"),
        b"",
    )
    .await;
    assert_eq!((s, json_of(&v)["code"].as_str()), (404, Some("NoSuchKey")));
    // Past the bucket's 1000-byte limit: refused while streaming.
    let (s, v) = fcall(
        &a,
        Method::PUT,
        format!("/fn/files/uploads/{a_id}/big.bin"),
        &[7u8; 5000],
    )
    .await;
    assert_eq!(
        (s, json_of(&v)["code"].as_str()),
        (413, Some("EntityTooLarge"))
    );

    // Grants: avatars is read-only for this function, `secret` not granted.
    let (s, v) = fcall(
        &a,
        Method::PUT,
        format!("/fn/files/avatars/{a_id}/x.png"),
        b"png",
    )
    .await;
    let v = json_of(&v);
    assert_eq!((s, v["code"].as_str()), (403, Some("AccessDenied")), "{v}");
    assert!(
        v["message"].as_str().unwrap().contains("avatars:write"),
        "{v}"
    );
    let (s, v) = fcall(&a, Method::GET, "/fn/files/secret/x".into(), b"").await;
    let v = json_of(&v);
    assert_eq!((s, v["code"].as_str()), (403, Some("AccessDenied")), "{v}");
    assert!(
        v["message"].as_str().unwrap().contains("secret:read"),
        "{v}"
    );

    // Reads stream several chunks back, byte for byte.
    let pic: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let (s, v) = service
        .upload("avatars/pic.bin", pic.clone(), "image/x-test", false)
        .await;
    assert_eq!(s, 200, "{v}");
    let (s, got) = fcall(&b, Method::GET, "/fn/files/avatars/pic.bin".into(), b"").await;
    assert_eq!((s, got.len()), (200, pic.len()));
    assert!(got == pic, "the bytes differ");

    // List one folder, sign a URL that works without a key on the other
    // node, remove.
    let (s, v) = fcall(
        &a,
        Method::GET,
        format!("/fn/files/uploads?prefix={a_id}"),
        b"",
    )
    .await;
    assert_eq!((s, json_of(&v)), (200, json!(["note.txt"])));
    let (s, v) = fcall(
        &a,
        Method::GET,
        format!("/fn/files/uploads/{a_id}/note.txt?sign=60"),
        b"",
    )
    .await;
    assert_eq!(s, 200);
    let url = json_of(&v)["signedURL"].as_str().unwrap().to_string();
    assert!(url.starts_with("/storage/v1/object/sign/uploads/"), "{url}");
    let r = other
        .http
        .get(format!("{}{url}", other.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.bytes().await.unwrap().as_ref(), b"hello!");
    let (s, v) = fcall(
        &b,
        Method::DELETE,
        format!("/fn/files/uploads/{a_id}/note.txt"),
        b"",
    )
    .await;
    assert_eq!(
        (s, json_of(&v)),
        (200, json!([])),
        "B may not delete A's file"
    );
    let (s, v) = fcall(
        &a,
        Method::DELETE,
        format!("/fn/files/uploads/{a_id}/note.txt"),
        b"",
    )
    .await;
    assert_eq!((s, json_of(&v)), (200, json!([format!("{a_id}/note.txt")])));
    // Refused, oversized and replaced uploads left nothing: one file (pic).
    wait_files(&db, 1).await;

    // `db = "service"` acts as service_role: B's policies do not hide A's
    // object; the grant still bounds the buckets and modes.
    let wasm = std::fs::read(guests().join("wasm32-wasip2/release/files.wasm")).unwrap();
    let (s, _) = fcall(
        &a,
        Method::PUT,
        format!("/fn/files/uploads/{a_id}/kept.txt"),
        b"kept",
    )
    .await;
    assert_eq!(s, 200);
    let manifest = "name = \"admin\"\ndb = \"service\"\nstorage = [\"uploads:read\"]\n";
    let (s, v) = deploy(&node, &secret, "admin", manifest, &wasm).await;
    assert_eq!(s, 201, "{v}");
    wait_version(&node, "admin", v["version"].as_i64().unwrap()).await;
    let (s, got) = fcall(
        &b,
        Method::GET,
        format!("/fn/admin/uploads/{a_id}/kept.txt"),
        b"",
    )
    .await;
    assert_eq!((s, got.as_slice()), (200, b"kept".as_slice()));
    let (s, v) = fcall(
        &b,
        Method::DELETE,
        format!("/fn/admin/uploads/{a_id}/kept.txt"),
        b"",
    )
    .await;
    assert_eq!(
        (s, json_of(&v)["code"].as_str()),
        (403, Some("AccessDenied"))
    );

    // A component that imports storage without a grant is refused at deploy.
    let (s, v) = deploy(&node, &secret, "nogrant", "name = \"nogrant\"\n", &wasm).await;
    assert_eq!(s, 400, "{v}");
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .contains("wasmbase:platform/storage"),
        "{v}"
    );
}
