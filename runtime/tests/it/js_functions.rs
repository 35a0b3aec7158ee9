//! JavaScript and TypeScript functions end to end: the real engine component
//! embedded in the binary, user code from `functions/` (or written here),
//! built and snapshotted by the server itself, called over HTTP.

use crate::harness::*;
use serde_json::{json, Value};
use std::path::Path;
use wasmbase_host_api::keys::KeyKind;

/// Writes a function directory `name` with `files` under `root`.
fn write_fn(root: &Path, name: &str, toml_extra: &str, files: &[(&str, &str)]) {
    let d = root.join(name);
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(
        d.join("function.toml"),
        format!("name = \"{name}\"\nverify_jwt = false\n{toml_extra}\n"),
    )
    .unwrap();
    for (f, text) in files {
        let p = d.join(f);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }
}

async fn call(srv: &TestServer, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
    let mut r = srv
        .http
        .request(method.parse().unwrap(), format!("{}{path}", srv.url));
    if let Some(b) = body {
        r = r.body(b.to_string());
    }
    let resp = r.send().await.unwrap();
    (resp.status().as_u16(), resp.text().await.unwrap())
}

#[tokio::test]
async fn hello_ts_echoes_json_and_knows_the_caller() {
    let db = TestDb::new().await;
    let (_, anon) = db.key(KeyKind::Publishable).await;
    let srv = db.functions_server(|_| {}).await;
    srv.wait_function("hello-ts").await;
    let sub = uuid::Uuid::new_v4().to_string();
    let resp = srv
        .http
        .post(format!("{}/functions/v1/hello-ts", srv.url))
        .header("apikey", &anon)
        .header("authorization", format!("Bearer {}", user_token(&sub)))
        .json(&json!({"a": [1, "two"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()["content-type"].to_str().unwrap(),
        "application/json"
    );
    let b: Value = resp.json().await.unwrap();
    assert_eq!(
        b,
        json!({"message": "Hello from Wasmbase!", "received": {"a": [1, "two"]}, "user": sub})
    );
    // Bad JSON is the function's own 400; no key is the platform's 401.
    let (s, b) = call(&srv, "POST", "/fn/hello-ts", Some("{nope")).await;
    assert_eq!(s, 401, "{b}");
}

#[tokio::test]
async fn each_request_gets_a_fresh_sandbox_unless_the_function_opts_into_reuse() {
    let dir = tempfile::tempdir().unwrap();
    let counter = "let n = 0;\nexport default { fetch() { n += 1; return Response.json({ n, r: Math.random(), u: crypto.randomUUID(), t: Date.now() }); } };\n";
    write_fn(dir.path(), "fresh", "", &[("index.js", counter)]);
    write_fn(dir.path(), "warm", "reuse = 100", &[("index.js", counter)]);
    let db = TestDb::new().await;
    let functions = dir.path().to_path_buf();
    let srv = db.functions_server(|c| c.functions.dir = functions).await;
    srv.wait_function("fresh").await;
    srv.wait_function("warm").await;
    let mut fresh = Vec::new();
    for _ in 0..3 {
        let (s, b) = call(&srv, "GET", "/fn/fresh", None).await;
        assert_eq!(s, 200, "{b}");
        fresh.push(serde_json::from_str::<Value>(&b).unwrap());
    }
    assert!(
        fresh.iter().all(|b| b["n"] == 1),
        "state leaked between requests: {fresh:?}"
    );
    let distinct = |k: &str| {
        let mut v: Vec<String> = fresh.iter().map(|b| b[k].to_string()).collect();
        v.sort();
        v.dedup();
        v.len()
    };
    assert_eq!(
        distinct("r"),
        3,
        "Math.random repeats across instances: {fresh:?}"
    );
    assert_eq!(
        distinct("u"),
        3,
        "randomUUID repeats across instances: {fresh:?}"
    );
    let mut warm = Vec::new();
    for _ in 0..3 {
        let (_, b) = call(&srv, "GET", "/fn/warm", None).await;
        warm.push(
            serde_json::from_str::<Value>(&b).unwrap()["n"]
                .as_i64()
                .unwrap(),
        );
    }
    assert_eq!(
        warm,
        [1, 2, 3],
        "reuse keeps globals between requests of one function"
    );
}
