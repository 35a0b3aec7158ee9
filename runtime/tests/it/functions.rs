//! Edge functions end to end: the example components in `functions/`, built
//! from the real SDK, served by the real server against real PostgreSQL.

use crate::harness::*;
use serde_json::{json, Value};
use wasmbase_host_api::keys::KeyKind;

async fn post(
    srv: &TestServer,
    path: &str,
    key: Option<&str>,
    bearer: Option<&str>,
    body: Value,
) -> (u16, Value) {
    let mut r = srv.http.post(format!("{}{path}", srv.url)).json(&body);
    if let Some(k) = key {
        r = r.header("apikey", k);
    }
    if let Some(b) = bearer {
        r = r.header("authorization", format!("Bearer {b}"));
    }
    let resp = r.send().await.unwrap();
    let s = resp.status().as_u16();
    (s, resp.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn hello_echoes_json_and_knows_the_caller() {
    let db = TestDb::new().await;
    let (_, anon) = db.key(KeyKind::Publishable).await;
    let srv = db.functions_server(|_| {}).await;
    srv.wait_function("hello").await;
    let (s, b) = post(&srv, "/fn/hello", Some(&anon), None, json!({"a": 1})).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["received"], json!({"a": 1}));
    assert_eq!(b["user"], Value::Null);
    let sub = uuid::Uuid::new_v4().to_string();
    let (s, b) = post(
        &srv,
        "/functions/v1/hello/extra/path",
        Some(&anon),
        Some(&user_token(&sub)),
        json!([1, 2]),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(
        (b["user"].as_str(), &b["received"]),
        (Some(sub.as_str()), &json!([1, 2]))
    );
    // verify_jwt = true: no key, no call.
    let (s, b) = post(&srv, "/fn/hello", None, None, json!({})).await;
    assert_eq!(s, 401, "{b}");
    let (s, b) = post(&srv, "/fn/nope", Some(&anon), None, json!({})).await;
    assert_eq!((s, b["code"].as_str()), (404, Some("function_not_found")));
}

#[tokio::test]
async fn todos_runs_as_the_caller_and_report_as_service() {
    let db = TestDb::new().await;
    let (_, anon) = db.key(KeyKind::Publishable).await;
    db.owner()
        .await
        .batch_execute(
            "CREATE TABLE todos (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
               user_id uuid NOT NULL DEFAULT auth.uid(), task text NOT NULL, done bool NOT NULL DEFAULT false);
             ALTER TABLE todos ENABLE ROW LEVEL SECURITY;
             CREATE POLICY own ON todos FOR ALL TO authenticated
               USING (user_id = auth.uid()) WITH CHECK (user_id = auth.uid());",
        )
        .await
        .unwrap();
    let srv = db.functions_server(|_| {}).await;
    srv.wait_function("todos").await;
    srv.wait_function("report").await;
    let (a, b) = (
        uuid::Uuid::new_v4().to_string(),
        uuid::Uuid::new_v4().to_string(),
    );
    let (ta, tb) = (user_token(&a), user_token(&b));
    let (s, row) = post(
        &srv,
        "/fn/todos",
        Some(&anon),
        Some(&ta),
        json!({"task": "a's"}),
    )
    .await;
    assert_eq!(s, 201, "{row}");
    let (s, _) = post(
        &srv,
        "/fn/todos",
        Some(&anon),
        Some(&tb),
        json!({"task": "b's"}),
    )
    .await;
    assert_eq!(s, 201);
    let get = |t: Option<String>| {
        let (srv, anon) = (&srv, anon.clone());
        async move {
            let mut r = srv
                .http
                .get(format!("{}/fn/todos", srv.url))
                .header("apikey", anon);
            if let Some(t) = t {
                r = r.header("authorization", format!("Bearer {t}"));
            }
            let resp = r.send().await.unwrap();
            (resp.status().as_u16(), resp.json::<Value>().await.unwrap())
        }
    };
    let (s, rows) = get(Some(ta.clone())).await;
    assert_eq!(s, 200);
    assert_eq!(rows.as_array().unwrap().len(), 1);
    assert_eq!(rows[0]["task"], "a's");
    // anon stays anon inside the function: no rows, and no insert.
    let (_, rows) = get(None).await;
    assert_eq!(rows, json!([]));
    let (s, e) = post(&srv, "/fn/todos", Some(&anon), None, json!({"task": "x"})).await;
    assert_eq!((s, e["code"].as_str()), (401, Some("42501")));
    // A forged token (wrong secret) never reaches the function.
    let forged =
        wasmbase_host_api::jwt::JwtKeys::hs256("not-the-secret-not-the-secret-000000", None, "x")
            .unwrap()
            .sign(&json!({"role": "service_role", "sub": a, "exp": now() + 600}))
            .unwrap();
    let (s, _) = get(Some(forged)).await;
    assert_eq!(s, 401);
    // The service function sees everything through raw SQL.
    let (s, b) = post(&srv, "/fn/report", Some(&anon), None, json!({})).await;
    assert_eq!((s, b), (200, json!({"total": 2, "done": 0})));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spin_times_out_while_health_and_other_functions_answer() {
    let db = TestDb::new().await;
    let (_, anon) = db.key(KeyKind::Publishable).await;
    let srv = db.functions_server(|_| {}).await;
    srv.wait_function("spin").await;
    srv.wait_function("hello").await;
    // The example: an endless loop ends with 504 after its 1 s limit.
    let (s, b) = post(&srv, "/fn/spin", Some(&anon), None, json!({})).await;
    assert_eq!(
        (s, b["code"].as_str()),
        (504, Some("function_timeout")),
        "{b}"
    );
    assert!(b["requestId"].is_string());

    // Four spinning guests (twice this machine's cores, 3 s budget each)…
    let fx = db.functions_server(|c| c.functions.dir = fixtures()).await;
    fx.wait_function("misbehave").await;
    let spins: Vec<_> = (0..4)
        .map(|_| {
            let (url, anon, http) = (fx.url.clone(), anon.clone(), fx.http.clone());
            tokio::spawn(async move {
                let r = http
                    .post(format!("{url}/fn/misbehave/spin"))
                    .header("apikey", anon)
                    .send()
                    .await
                    .unwrap();
                (
                    r.status().as_u16(),
                    r.json::<Value>().await.unwrap_or(Value::Null),
                )
            })
        })
        .collect();
    let global = fx.srv.state.functions.global.clone();
    let total = fx.srv.state.config.functions.max_concurrency;
    wait_until("spins never started", 30, || {
        global.available_permits() <= total - 4
    })
    .await;
    // …and the same server keeps answering other routes and functions.
    for _ in 0..5 {
        let r = fx
            .http
            .get(format!("{}/health", fx.url))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let r = fx
            .http
            .get(format!("{}/fn/misbehave/ok", fx.url))
            .header("apikey", &anon)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    assert!(
        global.available_permits() <= total - 4,
        "the other requests were only answered after the spinning guests ended"
    );
    for h in spins {
        let (s, b) = h.await.unwrap();
        assert_eq!(
            (s, b["code"].as_str()),
            (504, Some("function_timeout")),
            "{b}"
        );
    }
}

#[tokio::test]
async fn env_is_only_what_is_granted_and_outbound_only_to_granted_hosts() {
    let db = TestDb::new().await;
    let (_, anon) = db.key(KeyKind::Publishable).await;
    let srv = db.functions_server(|_| {}).await;
    srv.srv.state.functions.env.store(std::sync::Arc::new(
        [("GREETING_SECRET", "s3cr3t"), ("NOT_GRANTED", "leak")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    ));
    srv.wait_function("secret-env").await;
    srv.wait_function("fetch-allowed").await;
    let (s, b) = post(&srv, "/fn/secret-env", Some(&anon), None, json!({})).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["granted_present"], true);
    assert_eq!(b["granted_length"], 6);
    assert_eq!(b["ungranted_present"], false);
    assert_eq!(b["visible"], json!(["GREETING_SECRET"]));

    // A tiny upstream on the granted port, and the same server on another port.
    let granted = tokio::net::TcpListener::bind("127.0.0.1:18931")
        .await
        .unwrap();
    let other = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let other_port = other.local_addr().unwrap().port();
    for l in [granted, other] {
        tokio::spawn(async move {
            let app =
                axum::Router::new().route("/", axum::routing::get(|| async { "upstream says hi" }));
            axum::serve(l, app).await.unwrap();
        });
    }
    let (s, b) = post(
        &srv,
        "/fn/fetch-allowed",
        Some(&anon),
        None,
        json!({"url": "http://127.0.0.1:18931/"}),
    )
    .await;
    assert_eq!(
        (s, b["status"].as_u64(), b["body"].as_str()),
        (200, Some(200), Some("upstream says hi")),
        "{b}"
    );
    let (s, b) = post(
        &srv,
        "/fn/fetch-allowed",
        Some(&anon),
        None,
        json!({"url": format!("http://127.0.0.1:{other_port}/")}),
    )
    .await;
    assert_eq!(s, 502, "{b}");
    assert!(
        b["error"].as_str().unwrap().contains("HttpRequestDenied"),
        "{b}"
    );
    // With a body bigger than the host buffers, the refusal lands while the
    // guest is still writing; the guest must still learn it was a refusal.
    let (s, b) = post(
        &srv,
        "/fn/fetch-allowed",
        Some(&anon),
        None,
        json!({"url": format!("http://127.0.0.1:{other_port}/"), "body": "x".repeat(256 * 1024)}),
    )
    .await;
    assert_eq!(s, 502, "{b}");
    assert!(
        b["error"].as_str().unwrap().contains("HttpRequestDenied"),
        "{b}"
    );
}

#[tokio::test]
async fn misbehaving_guests_get_clear_errors_and_the_server_carries_on() {
    let db = TestDb::new().await;
    let (_, anon) = db.key(KeyKind::Publishable).await;
    let srv = db.functions_server(|c| c.functions.dir = fixtures()).await;
    srv.wait_function("misbehave").await;
    for (path, status, code) in [
        ("/fn/misbehave/alloc", 500, "function_memory"),
        ("/fn/misbehave/panic", 500, "function_crashed"),
        ("/fn/misbehave/noreply", 502, "function_no_response"),
    ] {
        let (s, b) = post(&srv, path, Some(&anon), None, json!({})).await;
        assert_eq!((s, b["code"].as_str()), (status, Some(code)), "{path}: {b}");
    }
    // The same function still serves the next request.
    let r = srv
        .http
        .get(format!("{}/fn/misbehave/ok", srv.url))
        .header("apikey", &anon)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "fine");
}

#[tokio::test]
async fn components_are_checked_against_their_grants_before_they_serve() {
    use wasmbase::functions::{load, manifest::Manifest};
    let db = TestDb::new().await;
    let srv = db.functions_server(|_| {}).await;
    srv.wait_function("report").await;
    let engine = srv.srv.state.functions.engine.clone();
    let wasm =
        |n: &str| std::fs::read(guests().join(format!("wasm32-wasip2/release/{n}.wasm"))).unwrap();
    // report imports wasmbase:platform/sql: refused unless db = "service".
    let m = Manifest::parse("name = \"report\"\ndb = \"caller\"").unwrap();
    let e = load::prepare(&engine, m, &wasm("report"), "test".into(), None)
        .err()
        .unwrap();
    assert!(
        e.0.contains("wasmbase:platform/sql") && e.0.contains("db = \"service\""),
        "{e}"
    );
    // todos imports data: refused with db = "none".
    let m = Manifest::parse("name = \"todos\"").unwrap();
    let e = load::prepare(&engine, m, &wasm("todos"), "test".into(), None)
        .err()
        .unwrap();
    assert!(e.0.contains("wasmbase:platform/data"), "{e}");
    // Not a component at all, or a bare core module.
    let m = Manifest::parse("name = \"junk\"").unwrap();
    let e = load::prepare(
        &engine,
        m.clone(),
        b"definitely not wasm",
        "test".into(),
        None,
    )
    .err()
    .unwrap();
    assert!(e.0.contains("not a valid WebAssembly component"), "{e}");
    let core_module = b"\0asm\x01\0\0\0";
    let e = load::prepare(&engine, m.clone(), core_module, "test".into(), None)
        .err()
        .unwrap();
    assert!(e.0.contains("not a valid WebAssembly component"), "{e}");
    // A valid component (an empty one) that exports no handler.
    let empty_component = b"\0asm\x0d\0\x01\0";
    let e = load::prepare(&engine, m, empty_component, "test".into(), None)
        .err()
        .unwrap();
    assert!(e.0.contains("exports no handler"), "{e}");
}

#[tokio::test]
async fn admission_caps_and_body_limits_answer_503_and_413() {
    let db = TestDb::new().await;
    let (_, anon) = db.key(KeyKind::Publishable).await;
    let srv = db
        .functions_server(|c| {
            c.functions.max_concurrency = 1;
            c.server.body_limit_bytes = 1024;
        })
        .await;
    srv.wait_function("spin").await;
    srv.wait_function("hello").await;
    let (url, key, http) = (srv.url.clone(), anon.clone(), srv.http.clone());
    let spinning = tokio::spawn(async move {
        http.post(format!("{url}/fn/spin"))
            .header("apikey", key)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    });
    // Wait until the spin call holds the only slot (observable: no permits left).
    let global = srv.srv.state.functions.global.clone();
    wait_until("spin never started", 30, || global.available_permits() == 0).await;
    let r = srv
        .http
        .post(format!("{}/fn/hello", srv.url))
        .header("apikey", &anon)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["retry-after"], "1");
    assert_eq!(spinning.await.unwrap(), 504);
    let big = "x".repeat(4096);
    let r = srv
        .http
        .post(format!("{}/fn/hello", srv.url))
        .header("apikey", &anon)
        .body(big)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
}

#[tokio::test]
async fn sdk_functions_get_the_whole_request_and_answer_what_http_allows() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let db = TestDb::new().await;
    let (_, anon) = db.key(KeyKind::Publishable).await;
    let srv = db
        .functions_server(|c| {
            c.functions.dir = fixtures();
            c.server.body_limit_bytes = 1024;
        })
        .await;
    srv.wait_function("echo").await;
    let r = srv
        .http
        .put(format!("{}/fn/echo/a/b?x=1&y=2", srv.url))
        .header("apikey", &anon)
        .header("x-echo", "hello there")
        .body("payload")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    assert_eq!(r.headers()["x-echoed"], "yes");
    // Reserved for the connection: the guest's `connection: close` is dropped,
    // and the length is the body's, not the guest's claim.
    assert!(r.headers().get("connection").is_none(), "{:?}", r.headers());
    let len: usize = r.headers()["content-length"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let body = r.bytes().await.unwrap();
    assert_eq!(len, body.len());
    let b: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        b,
        json!({"method": "PUT", "path": "/fn/echo/a/b?x=1&y=2", "x-echo": "hello there", "body": "payload"})
    );
    // A chunked body (no content-length to refuse up front) past the limit.
    let addr = srv.url.trim_start_matches("http://").to_string();
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let chunk = "x".repeat(2000);
    let req = format!(
        "POST /fn/echo HTTP/1.1\r\nhost: t\r\napikey: {anon}\r\ntransfer-encoding: chunked\r\n\
         connection: close\r\n\r\n{:x}\r\n{chunk}\r\n0\r\n\r\n",
        chunk.len()
    );
    tcp.write_all(req.as_bytes()).await.unwrap();
    let mut out = String::new();
    tcp.read_to_string(&mut out).await.unwrap();
    assert!(out.starts_with("HTTP/1.1 413"), "{out}");
    assert!(out.contains("payload_too_large"), "{out}");
}

fn wasm_of(name: &str) -> Vec<u8> {
    std::fs::read(guests().join(format!(
        "wasm32-wasip2/release/{}.wasm",
        name.replace('-', "_")
    )))
    .unwrap()
}

/// Waits until `srv` serves `name` at deployed `version` (bounded).
pub(crate) async fn wait_version(srv: &TestServer, name: &str, version: i64) {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        if let wasmbase::functions::registry::Availability::Ready(f) =
            srv.srv.state.functions.registry.get(name)
        {
            if f.version == Some(version) {
                return;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{name} v{version} never reached this node (load error: {:?})",
            srv.srv.state.functions.registry.error(name)
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

/// Deploys `wasm` as `name` with `manifest` through the admin API.
pub(crate) async fn deploy(
    srv: &TestServer,
    key: &str,
    name: &str,
    manifest: &str,
    wasm: &[u8],
) -> (u16, Value) {
    use base64::Engine as _;
    let body = json!({
        "manifest": manifest,
        "component": base64::engine::general_purpose::STANDARD.encode(wasm),
    });
    let r = srv
        .http
        .post(format!("{}/admin/v1/functions/{name}", srv.url))
        .header("apikey", key)
        .json(&body)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn deploy_and_rollback_reach_every_node_and_bad_deploys_change_nothing() {
    let db = TestDb::new().await;
    let (_, anon) = db.key(KeyKind::Publishable).await;
    let (_, secret) = db.key(KeyKind::Secret).await;
    // A batch of records older than the retention (seven days by default),
    // written before these servers started: the first log write prunes it.
    let owner = db.owner().await;
    owner
        .batch_execute(
            "INSERT INTO wasmbase.function_log_batches (name, last_at, records) \
             VALUES ('greeter', now() - interval '8 days', '[{\"status\": 299}]')",
        )
        .await
        .unwrap();
    let a = db.server().await;
    let b = db.server().await;
    let manifest = "name = \"greeter\"\n";
    let (s, v) = deploy(&a, &secret, "greeter", manifest, &wasm_of("hello")).await;
    assert_eq!((s, v["version"].as_i64()), (201, Some(1)), "{v}");
    wait_version(&b, "greeter", 1).await;
    let (s, body) = post(&b, "/fn/greeter", Some(&anon), None, json!({"n": 1})).await;
    assert_eq!((s, &body["received"]), (200, &json!({"n": 1})));

    // Version 2 is a different component; both nodes switch.
    let (s, v) = deploy(&a, &secret, "greeter", manifest, &wasm_of("secret-env")).await;
    assert_eq!((s, v["version"].as_i64()), (201, Some(2)), "{v}");
    wait_version(&b, "greeter", 2).await;
    let (_, body) = post(&b, "/fn/greeter", Some(&anon), None, json!({})).await;
    assert_eq!(body["granted_present"], false, "{body}");

    // A bad upload is refused and changes nothing.
    let (s, e) = deploy(&a, &secret, "greeter", manifest, b"not wasm").await;
    assert_eq!(
        (s, e["code"].as_str()),
        (400, Some("invalid_component")),
        "{e}"
    );
    let (s, e) = deploy(&a, &secret, "greeter", manifest, &wasm_of("report")).await;
    assert_eq!(s, 400);
    assert!(
        e["message"]
            .as_str()
            .unwrap()
            .contains("wasmbase:platform/sql"),
        "{e}"
    );
    let (s, e) = deploy(&a, &anon, "greeter", manifest, &wasm_of("hello")).await;
    assert_eq!(s, 403, "{e}");
    let (_, versions) = a
        .get("/admin/v1/functions/greeter/versions", Some(&secret), None)
        .await;
    assert_eq!(
        versions["versions"].as_array().unwrap().len(),
        2,
        "{versions}"
    );

    // Rollback to the previous version reaches the other node too.
    let r = a
        .http
        .post(format!("{}/admin/v1/functions/greeter/rollback", a.url))
        .header("apikey", &secret)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    wait_version(&b, "greeter", 1).await;
    let (_, body) = post(&b, "/fn/greeter", Some(&anon), None, json!({"back": true})).await;
    assert_eq!(body["received"], json!({"back": true}));

    // Invocation logs from node b are visible through node a.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let (_, logs) = a
            .get("/admin/v1/functions/greeter/logs", Some(&secret), None)
            .await;
        let entries = logs["logs"].as_array().cloned().unwrap_or_default();
        if entries.len() >= 3 {
            assert_eq!(entries[0]["status"], 200);
            assert_eq!(entries[0]["outcome"], "ok");
            assert!(
                entries[0]["lines"][0]["message"]
                    .as_str()
                    .unwrap()
                    .contains("hello from"),
                "{logs}"
            );
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "logs never arrived: {logs}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    // The expired batch is deleted and never listed; the new ones stay.
    loop {
        let old: i64 = owner
            .query_one(
                "SELECT count(*) FROM wasmbase.function_log_batches WHERE last_at < now() - interval '7 days'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        if old == 0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the expired batch was never deleted"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let (_, logs) = a
        .get(
            "/admin/v1/functions/greeter/logs?limit=1000",
            Some(&secret),
            None,
        )
        .await;
    let entries = logs["logs"].as_array().unwrap();
    assert!(entries.len() >= 3, "{logs}");
    assert!(entries.iter().all(|e| e["status"] != 299), "{logs}");
}

#[tokio::test]
async fn secrets_are_stored_encrypted_and_reach_granted_functions() {
    let db = TestDb::new().await;
    let (_, anon) = db.key(KeyKind::Publishable).await;
    let key = wasmbase::functions::secrets::generate_key();
    let srv = db
        .functions_server(|c| c.functions.secrets_key = Some(key.clone()))
        .await;
    srv.wait_function("secret-env").await;
    let owner = db.owner().await;
    let cipher = wasmbase::functions::secrets::cipher(&key).unwrap();
    wasmbase::functions::secrets::set(&owner, &cipher, "GREETING_SECRET", "hunter22", "test")
        .await
        .unwrap();
    wasmbase::functions::secrets::set(&owner, &cipher, "NOT_GRANTED", "nope", "test")
        .await
        .unwrap();
    // Ciphertext only in the database.
    let row = owner
        .query_one(
            "SELECT string_agg(encode(ciphertext, 'escape'), '') FROM wasmbase.secrets",
            &[],
        )
        .await
        .unwrap();
    assert!(!row.get::<_, String>(0).contains("hunter22"));
    let env = &srv.srv.state.functions.env;
    wait_until("secrets never reached the node", 10, || {
        env.load().contains_key("NOT_GRANTED")
    })
    .await;
    let (s, b) = post(&srv, "/fn/secret-env", Some(&anon), None, json!({})).await;
    assert_eq!(s, 200);
    assert_eq!(
        (b["granted_present"].as_bool(), b["granted_length"].as_u64()),
        (Some(true), Some(8))
    );
    assert_eq!(b["ungranted_present"], false);
    // A value encrypted under another key does not decrypt (and is skipped).
    let other = wasmbase::functions::secrets::cipher(&wasmbase::functions::secrets::generate_key())
        .unwrap();
    let all = wasmbase::functions::secrets::load_all(&owner, &other)
        .await
        .unwrap();
    assert!(all.is_empty());
}

#[tokio::test]
async fn fn_new_scaffolds_a_function_that_builds_serves_and_hot_reloads() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_wasmbase"))
        .args(["fn", "new", "greet"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let fdir = dir.path().join("functions/greet");
    assert!(fdir.join("function.toml").is_file() && fdir.join("src/lib.rs").is_file());
    assert!(dir
        .path()
        .join("functions/.wasmbase-sdk/wit/platform.wit")
        .is_file());

    // Served with build and watch on, as `wasmbase dev` does.
    let db = TestDb::new().await;
    let (_, anon) = db.key(KeyKind::Publishable).await;
    let functions = dir.path().join("functions");
    let srv = db.dev_functions_server(functions.clone()).await;
    srv.wait_function("greet").await;
    let (s, b) = post(&srv, "/fn/greet", Some(&anon), None, json!({"name": "Ada"})).await;
    assert_eq!(
        (s, b["message"].as_str()),
        (200, Some("Hello, Ada!")),
        "{b}"
    );

    // Edit the source: the watcher rebuilds and swaps it in (observable: the
    // served component's hash changes).
    let lib = fdir.join("src/lib.rs");
    let old_hash = served_hash(&srv, "greet");
    let src = std::fs::read_to_string(&lib).unwrap();
    std::fs::write(&lib, src.replace("Hello, {}!", "Howdy, {}!")).unwrap();
    wait_until("no rebuild happened", 180, || {
        served_hash(&srv, "greet") != old_hash
    })
    .await;
    let (_, b) = post(&srv, "/fn/greet", Some(&anon), None, json!({"name": "Ada"})).await;
    assert_eq!(b["message"], "Howdy, Ada!", "{b}");

    // A broken edit is reported and the last good version keeps serving.
    std::fs::write(&lib, "this is not rust").unwrap();
    let registry = &srv.srv.state.functions.registry;
    wait_until("the broken build was never reported", 180, || {
        registry.error("greet").is_some()
    })
    .await;
    let (s, b) = post(&srv, "/fn/greet", Some(&anon), None, json!({"name": "Ada"})).await;
    assert_eq!((s, b["message"].as_str()), (200, Some("Howdy, Ada!")));
}

#[tokio::test]
async fn dev_serves_a_function_scaffolded_after_it_started_in_an_empty_directory() {
    // `wasmbase dev` in an empty directory (no functions/ yet), then
    // `wasmbase fn new greet` in another terminal: the README's first-function
    // flow, in that order.
    let dir = tempfile::tempdir().unwrap();
    let functions = dir.path().join("functions");
    assert!(!functions.exists());
    let db = TestDb::new().await;
    let (_, anon) = db.key(KeyKind::Publishable).await;
    // The functions config of `dev`: build, watch and local on.
    let srv = db.dev_functions_server(functions.clone()).await;
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_wasmbase"))
        .args(["fn", "new", "greet"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Observable: the registry serves it (bounded; it builds with cargo first).
    srv.wait_function("greet").await;
    let (s, b) = post(&srv, "/fn/greet", Some(&anon), None, json!({"name": "Ada"})).await;
    assert_eq!(
        (s, b["message"].as_str()),
        (200, Some("Hello, Ada!")),
        "{b}"
    );
}

/// Replaces `path` the way careful tools save: written beside, renamed in.
fn replace_file(staging: &std::path::Path, path: &std::path::Path, bytes: &[u8]) {
    let tmp = staging.join("next");
    std::fs::write(&tmp, bytes).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// Waits until `srv` serves `name` with a component other than `old` (bounded)
/// and answers the registry version then.
async fn wait_new_hash(srv: &TestServer, name: &str, old: &str) -> u64 {
    wait_until("the edit was never reloaded", 60, || {
        served_hash(srv, name) != old
    })
    .await;
    srv.functions_version()
}

#[tokio::test]
async fn watch_reloads_once_per_edit_and_never_on_reads_builds_or_temp_files() {
    // Two prebuilt functions, served with the functions config of `dev`
    // (build, watch and local on). Every load reads function.toml and the
    // component; a watcher that took those reads for edits reloaded forever.
    let dir = tempfile::tempdir().unwrap();
    let functions = dir.path().join("functions");
    for name in ["a-idle", "b-edit"] {
        let f = functions.join(name);
        std::fs::create_dir_all(&f).unwrap();
        std::fs::write(f.join("function.toml"), format!("name = \"{name}\"\n")).unwrap();
        std::fs::write(f.join(format!("{name}.wasm")), wasm_of("hello")).unwrap();
    }
    let db = TestDb::new().await;
    let srv = db.dev_functions_server(functions.clone()).await;
    srv.wait_function("a-idle").await;
    srv.wait_function("b-edit").await;
    let v0 = srv.functions_version();

    // What a build does to a function's sources: open and read every file. And
    // what builds and editors leave beside them: target/, swap and backup files.
    let a = functions.join("a-idle");
    for f in [a.join("function.toml"), a.join("a-idle.wasm")] {
        std::hint::black_box(std::fs::read(&f).unwrap());
    }
    std::fs::create_dir_all(a.join("target/release")).unwrap();
    std::fs::write(a.join("target/release/out.wasm"), b"built").unwrap();
    std::fs::write(a.join(".function.toml.swp"), b"swap").unwrap();
    std::fs::write(a.join("function.toml~"), b"backup").unwrap();

    // One edit of b: exactly one reload (the inotify queue is ordered, so
    // every event above was seen before this one).
    let staging = dir.path().to_path_buf();
    let b = functions.join("b-edit");
    let old = served_hash(&srv, "b-edit");
    replace_file(&staging, &b.join("b-edit.wasm"), &wasm_of("secret-env"));
    let v1 = wait_new_hash(&srv, "b-edit", &old).await;
    assert_eq!(v1, v0 + 1, "reads and build output caused reloads");

    // The reload itself read b's files; nothing was edited since: the next
    // edit is again exactly one step.
    let old = served_hash(&srv, "b-edit");
    replace_file(&staging, &b.join("b-edit.wasm"), &wasm_of("hello"));
    let v2 = wait_new_hash(&srv, "b-edit", &old).await;
    assert_eq!(v2, v1 + 1, "the server kept reloading with nothing edited");
}

#[tokio::test]
async fn max_concurrency_holds_across_a_reload() {
    // A function capped at one call at a time, its one slot taken by a
    // spinning call…
    let dir = tempfile::tempdir().unwrap();
    let fdir = dir.path().join("spin");
    std::fs::create_dir_all(&fdir).unwrap();
    std::fs::write(
        fdir.join("function.toml"),
        "name = \"spin\"\n[limits]\nmax_concurrency = 1\ntimeout_ms = 10000\n",
    )
    .unwrap();
    std::fs::write(fdir.join("spin.wasm"), wasm_of("spin")).unwrap();
    let db = TestDb::new().await;
    let (_, anon) = db.key(KeyKind::Publishable).await;
    let srv = db
        .functions_server(|c| c.functions.dir = dir.path().to_path_buf())
        .await;
    srv.wait_function("spin").await;
    let (url, key, http) = (srv.url.clone(), anon.clone(), srv.http.clone());
    let spinning = tokio::spawn(async move {
        http.post(format!("{url}/fn/spin"))
            .header("apikey", key)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    });
    let global = srv.srv.state.functions.global.clone();
    let total = srv.srv.state.config.functions.max_concurrency;
    wait_until("spin never started", 30, || {
        global.available_permits() == total - 1
    })
    .await;
    // …is reloaded (what the watcher does on an edit) while the call runs.
    let v = srv.functions_version();
    let after = wasmbase::functions::load_dir(&srv.srv.state, &fdir).await;
    assert_eq!(after, v + 1);
    assert!(srv.srv.state.functions.registry.error("spin").is_none());
    // The new version is capped by the calls still running on the old one.
    let (s, b) = post(&srv, "/fn/spin", Some(&anon), None, json!({})).await;
    assert_eq!(
        (s, b["code"].as_str()),
        (503, Some("function_busy")),
        "a second call was admitted although the cap is 1: {b}"
    );
    assert_eq!(
        global.available_permits(),
        total - 1,
        "the first call ended before the check; the test proves nothing"
    );
    assert_eq!(spinning.await.unwrap(), 504);
}

#[tokio::test]
async fn deploys_rollbacks_deletes_and_secret_changes_are_audited_without_secrets() {
    let db = TestDb::new().await;
    let (_, secret) = db.key(KeyKind::Secret).await;
    let srv = db.server().await;
    let owner = db.owner().await;
    owner
        .batch_execute("DELETE FROM wasmbase.audit_log")
        .await
        .unwrap();
    use base64::Engine as _;
    let component = base64::engine::general_purpose::STANDARD.encode(wasm_of("hello"));
    let manifest = "name = \"greeter\"\n";
    let admin = |method: reqwest::Method, path: &str, rid: &str| {
        srv.http
            .request(
                method,
                format!("{}/admin/v1/functions/greeter{path}", srv.url),
            )
            .header("apikey", &secret)
            .header("x-request-id", rid)
    };
    for rid in ["req-deploy-1", "req-deploy-2"] {
        let r = admin(reqwest::Method::POST, "", rid)
            .json(&json!({"manifest": manifest, "component": component}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
    }
    let r = admin(reqwest::Method::POST, "/rollback", "req-rollback")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = admin(reqwest::Method::DELETE, "", "req-delete")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    // Refused and failed actions change nothing and record nothing.
    let r = admin(reqwest::Method::DELETE, "", "req-delete-again")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    // Key changes through the admin API carry their request id too.
    let r = srv
        .http
        .post(format!("{}/admin/v1/keys", srv.url))
        .header("apikey", &secret)
        .header("x-request-id", "req-key")
        .json(&json!({"kind": "publishable", "name": "audited"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let created: Value = r.json().await.unwrap();
    let new_key = created["key"].as_str().unwrap().to_string();

    // Secrets are set with the CLI, straight into the database.
    let dir = tempfile::tempdir().unwrap();
    let value = "hunter2-do-not-log-me";
    let cli = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_wasmbase"))
            .args(args)
            .current_dir(dir.path())
            .env("DATABASE_URL", db.url())
            .env(
                "WASMBASE_FUNCTIONS_SECRETS_KEY",
                wasmbase::functions::secrets::generate_key(),
            )
            .env("WASMBASE_LOG_LEVEL", "warn")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let printed = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!printed.contains(value), "{printed}");
    };
    cli(&["secrets", "set", &format!("API_TOKEN={value}")]);
    cli(&["secrets", "unset", "API_TOKEN"]);

    let rows = owner
        .query(
            "SELECT action, target, actor, coalesce(request_id, ''), row_to_json(a)::text \
             FROM wasmbase.audit_log a ORDER BY id",
            &[],
        )
        .await
        .unwrap();
    let got: Vec<(String, String, String, String)> = rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect();
    let api = |action: &str, rid: &str| {
        (
            action.to_string(),
            "greeter".to_string(),
            "key:service_role".to_string(),
            rid.to_string(),
        )
    };
    assert_eq!(
        got[..4],
        [
            api("function.deploy", "req-deploy-1"),
            api("function.deploy", "req-deploy-2"),
            api("function.rollback", "req-rollback"),
            api("function.delete", "req-delete"),
        ],
        "{got:?}"
    );
    assert_eq!(got.len(), 7, "{got:?}");
    assert_eq!(
        (got[4].0.as_str(), got[4].2.as_str(), got[4].3.as_str()),
        ("key.create", "key:service_role", "req-key")
    );
    let cli_rows = &got[5..];
    assert_eq!(
        cli_rows
            .iter()
            .map(|(a, t, actor, _)| (a.as_str(), t.as_str(), actor.as_str()))
            .collect::<Vec<_>>(),
        [
            ("secret.set", "API_TOKEN", "cli"),
            ("secret.unset", "API_TOKEN", "cli")
        ]
    );
    for (_, _, _, rid) in cli_rows {
        assert!(rid.starts_with("cli:") && rid.len() > 10, "{rid}");
    }
    assert_ne!(cli_rows[0].3, cli_rows[1].3, "one id per CLI run");
    let versions: Vec<Option<String>> = owner
        .query(
            "SELECT details->>'version' FROM wasmbase.audit_log \
             WHERE action LIKE 'function.%' ORDER BY id",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let v = |s: &str| Some(s.to_string());
    assert_eq!(versions, [v("1"), v("2"), v("1"), None]);
    for r in &rows {
        let whole: String = r.get(4);
        for never in [value, secret.as_str(), new_key.as_str()] {
            assert!(
                !whole.contains(never),
                "an audit row holds a secret: {whole}"
            );
        }
    }
}

/// The content hash of the component `srv` serves as `name`.
/// The content hash of the version of `name` serving now ("" if none).
pub(crate) fn served_hash(srv: &TestServer, name: &str) -> String {
    match srv.srv.state.functions.registry.get(name) {
        wasmbase::functions::registry::Availability::Ready(f) => f.hash.clone(),
        _ => String::new(),
    }
}

#[tokio::test]
async fn raw_sql_decodes_types_counts_rows_commits_rolls_back_and_is_bounded() {
    let db = TestDb::new().await;
    let (_, anon) = db.key(KeyKind::Publishable).await;
    db.owner()
        .await
        .batch_execute("CREATE TABLE ledger (id serial PRIMARY KEY, note text NOT NULL)")
        .await
        .unwrap();
    let srv = db.functions_server(|c| c.functions.dir = fixtures()).await;
    srv.wait_function("sqlkit").await;
    let (s, b) = post(&srv, "/fn/sqlkit/types", Some(&anon), None, json!({})).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(
        b["row"],
        json!([true, 7, 42, 1.5, {"text": "12345.678"}, {"text": "hi"}, {"json": "{\"a\":1}"},
               {"bytes": [1, 2]}, {"uuid": "6f1c2a9e-8b7d-4c3e-9f1a-2b3c4d5e6f70"},
               {"timestamp": "2001-02-03T04:05:06.500000Z"}, {"text": "2001-02-03"}, null, 42])
    );
    // A transaction commits both statements…
    let (s, b) = post(&srv, "/fn/sqlkit/transaction", Some(&anon), None, json!({})).await;
    assert_eq!((s, b["results"].as_u64()), (200, Some(2)), "{b}");
    // …a failing one leaves nothing, with PostgreSQL's code…
    let (s, b) = post(&srv, "/fn/sqlkit/rollback", Some(&anon), None, json!({})).await;
    assert_eq!((s, b["code"].as_str()), (400, Some("22012")), "{b}");
    // …and execute reports the rows it changed.
    let (s, b) = post(&srv, "/fn/sqlkit/execute", Some(&anon), None, json!({})).await;
    assert_eq!((s, b["updated"].as_u64()), (200, Some(2)), "{b}");
    let notes: Vec<String> = db
        .owner()
        .await
        .query("SELECT note FROM ledger ORDER BY id", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(notes, ["t1!", "t2!"]);
    // Too many rows for the guest: a clear error, not host memory.
    let (s, b) = post(&srv, "/fn/sqlkit/big", Some(&anon), None, json!({})).await;
    assert_eq!((s, b["code"].as_str()), (400, Some("WB413")), "{b}");
}

/// `reuse = 3`: one instance serves three requests, then a fresh one takes
/// over; each call sees its own caller, never the previous one's; a trap
/// discards the instance; a function without `reuse` gets a fresh instance
/// every time.
#[tokio::test]
async fn warm_instances_serve_up_to_reuse_calls_each_as_its_own_caller() {
    let db = TestDb::new().await;
    let (_, anon) = db.key(KeyKind::Publishable).await;
    let srv = db.functions_server(|c| c.functions.dir = fixtures()).await;
    srv.wait_function("warm").await;
    srv.wait_function("misbehave").await;
    let idle = || srv.srv.state.functions.engine.warm.idle();
    // Without `reuse`, nothing is kept after a call.
    let (s, _) = post(&srv, "/fn/misbehave/ok", Some(&anon), None, json!({})).await;
    assert_eq!((s, idle()), (200, 0));
    let user = uuid::Uuid::new_v4().to_string();
    let token = user_token(&user);
    let mut seen = Vec::new();
    for i in 0..4 {
        // Alternate callers: a user, then anon.
        let bearer = (i % 2 == 0).then_some(token.as_str());
        let (s, b) = post(&srv, "/fn/warm", Some(&anon), bearer, json!({})).await;
        assert_eq!(s, 200, "{b}");
        let expected_user = if i % 2 == 0 {
            Value::String(user.clone())
        } else {
            Value::Null
        };
        assert_eq!(b["user"], expected_user, "call {i} saw another caller: {b}");
        seen.push(b["served"].as_u64().unwrap());
    }
    assert_eq!(
        seen,
        [1, 2, 3, 1],
        "three calls per instance, then a new one"
    );
    // A trap discards the instance: the next call starts from a fresh one.
    let (s, _) = post(&srv, "/fn/warm/panic", Some(&anon), None, json!({})).await;
    assert_eq!(s, 500);
    let (_, b) = post(&srv, "/fn/warm", Some(&anon), None, json!({})).await;
    assert_eq!(b["served"], 1, "{b}");
    assert_eq!(idle(), 1, "the instance waits for its next call");
}
