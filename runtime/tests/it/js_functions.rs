//! JavaScript and TypeScript functions end to end: the real engine component
//! embedded in the binary, user code from `functions/` (or written here),
//! built and snapshotted by the server itself, called over HTTP.

use crate::functions::served_hash;
use crate::harness::*;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
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
    // A top level that reads the environment and calls the database runs per
    // instance (never at build time, where neither is there).
    write_fn(
        dir.path(),
        "toplevel",
        "env = [\"GREETING\"]\ndb = \"service\"",
        &[("index.ts", "import { sql } from 'wasmbase';\nconst greeting = Deno.env.get('GREETING');\nconst [row] = await sql.query('select 41 + 1 as n');\nexport default { fetch: () => Response.json({ greeting, n: row.n, t: performance.now() }) };\n")],
    );
    let db = TestDb::new().await;
    let functions = dir.path().to_path_buf();
    let srv = db.functions_server(|c| c.functions.dir = functions).await;
    srv.wait_function("fresh").await;
    srv.wait_function("warm").await;
    srv.srv.state.functions.env.store(std::sync::Arc::new(
        [("GREETING".to_string(), "hi".to_string())]
            .into_iter()
            .collect(),
    ));
    srv.wait_function("toplevel").await;
    // Three functions, one compiled copy of the engine's code (each brings
    // only its snapshot's memory and globals): the state checks below run on
    // that shared code.
    assert_eq!(srv.srv.state.functions.engine.js_code_copies(), 1);
    let (s, b) = call(&srv, "GET", "/fn/toplevel", None).await;
    assert_eq!(s, 200, "{b}");
    let v: Value = serde_json::from_str(&b).unwrap();
    assert_eq!(
        (v["greeting"].as_str(), v["n"].as_i64()),
        (Some("hi"), Some(42)),
        "{v}"
    );
    let t = v["t"].as_f64().unwrap();
    assert!(
        t >= 0.0,
        "performance.now() counts from the instance's start: {t}"
    );
    let mut fresh = Vec::new();
    for _ in 0..3 {
        let asked = now() * 1000;
        let (s, b) = call(&srv, "GET", "/fn/fresh", None).await;
        assert_eq!(s, 200, "{b}");
        let v = serde_json::from_str::<Value>(&b).unwrap();
        // Date.now() is the time of the call, not the build's.
        assert!(
            v["t"].as_i64().unwrap() >= asked - 1000,
            "{v} asked at {asked}"
        );
        fresh.push(v);
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

/// GET `path`, which must fail with `status` and the platform's `code`; the body.
async fn fails(srv: &TestServer, path: &str, status: u16, code: &str) -> String {
    let (s, b) = call(srv, "GET", path, None).await;
    let got: Value = serde_json::from_str(&b).unwrap_or(Value::Null);
    assert_eq!((s, got["code"].as_str()), (status, Some(code)), "{b}");
    b
}

/// The invocation log lines of `name`'s calls so far, newest call first.
async fn log_lines(srv: &TestServer, secret: &str, name: &str, want: usize) -> Vec<String> {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let resp = srv
            .http
            .get(format!("{}/admin/v1/functions/{name}/logs", srv.url))
            .header("apikey", secret)
            .send()
            .await
            .unwrap();
        let logs: Value = resp.json().await.unwrap();
        let entries = logs["logs"].as_array().cloned().unwrap_or_default();
        if entries.len() >= want {
            return entries
                .iter()
                .flat_map(|e| e["lines"].as_array().cloned().unwrap_or_default())
                .filter_map(|l| l["message"].as_str().map(str::to_string))
                .collect();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no invocation log for {name}: {logs}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn bad_scripts_fail_only_their_own_call_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let limits = "[limits]\ntimeout_ms = 1500\nmemory_mb = 32\n";
    let handler = |body: &str| format!("export default {{ async fetch(req) {{ {body} }} }};\n");
    write_fn(
        root,
        "ok",
        "",
        &[("index.js", &handler("return new Response('fine');"))],
    );
    write_fn(root, "throws", "", &[("index.ts", "function inner(): never {\n  throw new TypeError('boom');\n}\nexport default { fetch() { inner(); } };\n")]);
    write_fn(
        root,
        "rejects",
        "",
        &[(
            "index.js",
            &handler("await Promise.reject(new Error('nope'));"),
        )],
    );
    write_fn(
        root,
        "spins",
        limits,
        &[("index.js", &handler("while (true) {}"))],
    );
    write_fn(
        root,
        "hoards",
        limits,
        &[(
            "index.js",
            &handler("const a = []; for (;;) a.push(new Array(1e6).fill(1));"),
        )],
    );
    write_fn(
        root,
        "recurses",
        "",
        &[(
            "index.js",
            &handler("const f = (n) => f(n + 1) + 1; return new Response(String(f(0)));"),
        )],
    );
    write_fn(
        root,
        "hangs",
        "",
        &[("index.js", &handler("await new Promise(() => {});"))],
    );
    write_fn(
        root,
        "sleeps",
        limits,
        &[(
            "index.js",
            &handler("await new Promise((r) => setTimeout(r, 60000));"),
        )],
    );
    write_fn(
        root,
        "not-a-response",
        "",
        &[("index.js", &handler("return { status: 200 };"))],
    );
    write_fn(
        root,
        "syntax",
        "",
        &[(
            "index.ts",
            "export default {\n  fetch() { return new Response( }\n};\n",
        )],
    );
    write_fn(
        root,
        "missing-import",
        "",
        &[(
            "index.ts",
            "import { x } from './nope';\nexport default { fetch: () => new Response(x) };\n",
        )],
    );
    write_fn(root, "package-import", "", &[("index.ts", "import { createClient } from 'npm:@supabase/supabase-js@2';\nexport default { fetch: () => new Response('') };\n")]);
    write_fn(root, "ungranted", "db = \"caller\"", &[("index.ts", "import { sql } from 'wasmbase';\nexport default { fetch: async () => Response.json(await sql.query('select 1')) };\n")]);
    write_fn(
        root,
        "top-throws",
        "",
        &[("index.js", "throw new Error('at the top');\n")],
    );
    write_fn(
        root,
        "no-handler",
        "",
        &[("index.js", "export const x = 1;\n")],
    );
    // Around the build-time check: the host refuses ungranted calls itself.
    write_fn(root, "sneaky", "", &[("index.js", "import * as wb from 'wasmbase';\nexport default { async fetch() { const viaModule = await wb.db.from('x').select(); const [ok, raw] = globalThis.__wb.sql('query', 'select 1', '[]'); return Response.json({ viaModule: viaModule.error.code, viaNatives: ok ? 'ran' : JSON.parse(raw).code }); } };\n")]);
    // The caller is not known at the top level (it would serve later callers).
    write_fn(root, "top-auth", "env = [\"X\"]", &[("index.js", "Deno.env.get('X');\nimport { auth } from 'wasmbase';\nconst who = auth.principal();\nexport default { fetch: () => Response.json(who) };\n")]);
    let db = TestDb::new().await;
    let (_, secret) = db.key(KeyKind::Secret).await;
    let functions = root.to_path_buf();
    let srv = db.functions_server(|c| c.functions.dir = functions).await;
    for name in [
        "ok",
        "throws",
        "rejects",
        "spins",
        "hoards",
        "recurses",
        "hangs",
        "sleeps",
        "not-a-response",
        "sneaky",
        "top-auth",
    ] {
        srv.wait_function(name).await;
    }
    let registry = &srv.srv.state.functions.registry;
    let build_error = |name: &'static str| async move {
        wait_until(&format!("{name} never failed to build"), 60, || {
            registry.error(name).is_some()
        })
        .await;
        registry.error(name).unwrap()
    };
    let e = build_error("syntax").await;
    assert!(e.contains("index.ts:2:"), "{e}");
    let e = build_error("missing-import").await;
    assert!(
        e.contains("index.ts:1:19: cannot find module \"./nope\""),
        "{e}"
    );
    let e = build_error("package-import").await;
    assert!(
        e.contains("cannot import \"npm:@supabase/supabase-js@2\""),
        "{e}"
    );
    let e = build_error("ungranted").await;
    assert!(
        e.contains("imports `sql` from \"wasmbase\"") && e.contains("db = \"service\""),
        "{e}"
    );
    let e = build_error("top-throws").await;
    assert!(e.contains("Error: at the top"), "{e}");
    let e = build_error("no-handler").await;
    assert!(e.contains("exports no handler"), "{e}");

    let code = |b: &str| {
        serde_json::from_str::<Value>(b).unwrap_or(Value::Null)["code"]
            .as_str()
            .map(str::to_string)
    };
    let b = fails(&srv, "/fn/throws", 500, "function_exception").await;
    assert!(b.contains("TypeError: boom"), "{b}");
    let lines = log_lines(&srv, &secret, "throws", 1).await;
    assert!(
        lines.iter().any(|l| l.contains("TypeError: boom")
            && l.contains("inner")
            && l.contains("index.ts")),
        "the stack is in the invocation log: {lines:?}"
    );
    let b = fails(&srv, "/fn/rejects", 500, "function_exception").await;
    assert!(b.contains("Error: nope"), "{b}");
    fails(&srv, "/fn/spins", 504, "function_timeout").await;
    let (s, b) = call(&srv, "GET", "/fn/hoards", None).await;
    assert_eq!(s, 500, "{b}");
    assert!(
        matches!(
            code(&b).as_deref(),
            Some("function_memory") | Some("function_exception")
        ) && (b.contains("memory") || b.contains("out of memory")),
        "{b}"
    );
    fails(&srv, "/fn/recurses", 500, "function_stack_overflow").await;
    let b = fails(&srv, "/fn/hangs", 500, "function_exception").await;
    assert!(b.contains("never settled"), "{b}");
    fails(&srv, "/fn/sleeps", 504, "function_timeout").await;
    let b = fails(&srv, "/fn/not-a-response", 500, "function_exception").await;
    assert!(b.contains("must return a Response"), "{b}");
    let (s, b) = call(&srv, "GET", "/fn/sneaky", None).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(
        serde_json::from_str::<Value>(&b).unwrap(),
        json!({"viaModule": "WB403", "viaNatives": "WB403"})
    );
    let b = fails(&srv, "/fn/top-auth", 500, "function_exception").await;
    assert!(b.contains("auth is not available at the top level"), "{b}");
    // Nothing above took the server or the other functions down.
    let (s, b) = call(&srv, "GET", "/fn/ok", None).await;
    assert_eq!((s, b.as_str()), (200, "fine"));
}

#[tokio::test]
async fn web_apis_behave_as_apps_expect() {
    let db = TestDb::new().await;
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/js");
    let srv = db.functions_server(|c| c.functions.dir = dir).await;
    srv.wait_function("conformance").await;
    let (s, b) = call(&srv, "GET", "/fn/conformance", None).await;
    assert_eq!(s, 200, "{b}");
    let r: Value = serde_json::from_str(&b).unwrap();
    assert_eq!(
        r["failed"],
        json!([]),
        "{}",
        serde_json::to_string_pretty(&r).unwrap()
    );
    assert_eq!(r["passed"], 12);
}

#[tokio::test]
async fn the_ts_examples_work_end_to_end() {
    let db = TestDb::new().await;
    let (_, anon) = db.key(KeyKind::Publishable).await;
    let (_, secret) = db.key(KeyKind::Secret).await;
    let owner = db.owner().await;
    owner
        .batch_execute(
            "CREATE TABLE todos (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
               user_id uuid NOT NULL DEFAULT auth.uid(), task text NOT NULL, done bool NOT NULL DEFAULT false);
             ALTER TABLE todos ENABLE ROW LEVEL SECURITY;
             CREATE POLICY own ON todos FOR ALL TO authenticated
               USING (user_id = auth.uid()) WITH CHECK (user_id = auth.uid());
             CREATE TABLE public.ticker_runs (id bigserial PRIMARY KEY, run_id uuid, attempt int, name text, payload jsonb);",
        )
        .await
        .unwrap();
    let srv = db.functions_server(|_| {}).await;
    srv.srv.state.functions.env.store(std::sync::Arc::new(
        [("WEBHOOK_SECRET".to_string(), "whsec".to_string())]
            .into_iter()
            .collect(),
    ));
    for f in [
        "todos-ts",
        "webhook-ts",
        "fetch-ts",
        "cron-ts",
        "supabase-hello",
    ] {
        srv.wait_function(f).await;
    }
    let req = |method: reqwest::Method, path: &str, token: Option<&str>| {
        let mut r = srv
            .http
            .request(method, format!("{}{path}", srv.url))
            .header("apikey", &anon);
        if let Some(t) = token {
            r = r.header("authorization", format!("Bearer {t}"));
        }
        r
    };

    // todos-ts: as the caller, under RLS.
    let (a, b) = (
        user_token(&uuid::Uuid::new_v4().to_string()),
        user_token(&uuid::Uuid::new_v4().to_string()),
    );
    for (t, task) in [(&a, "a's"), (&b, "b's")] {
        let r = req(reqwest::Method::POST, "/fn/todos-ts", Some(t))
            .json(&json!({"task": task}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
        let row: Value = r.json().await.unwrap();
        assert_eq!(
            (row["task"].as_str(), &row["done"]),
            (Some(task), &json!(false)),
            "{row}"
        );
    }
    let rows: Value = req(reqwest::Method::GET, "/fn/todos-ts", Some(&a))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(rows.as_array().map(|r| r.len()), Some(1), "{rows}");
    assert_eq!(rows[0]["task"], "a's");
    let r = req(reqwest::Method::GET, "/fn/todos-ts", None)
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.json::<Value>().await.unwrap(),
        json!([]),
        "anon sees nothing"
    );
    let r = req(reqwest::Method::POST, "/fn/todos-ts", None)
        .json(&json!({"task": "x"}))
        .send()
        .await
        .unwrap();
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["code"], "42501", "anon cannot insert: {e}");

    // webhook-ts: HMAC-SHA256 of the raw body with the granted secret.
    let body = r#"{"type":"ping","id":7}"#;
    let sig = hex::encode(hmac_sha256(b"whsec", body.as_bytes()));
    let r = srv
        .http
        .post(format!("{}/fn/webhook-ts", srv.url))
        .header("x-signature", format!("sha256={sig}"))
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(
        (v["event"]["id"].as_i64(), v["signature"].as_str()),
        (Some(7), Some(sig.as_str())),
        "{v}"
    );
    let r = srv
        .http
        .post(format!("{}/fn/webhook-ts", srv.url))
        .header("x-signature", format!("sha256={}", "0".repeat(64)))
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);

    // fetch-ts: the granted host answers, another port is refused.
    let granted = tokio::net::TcpListener::bind("127.0.0.1:18932")
        .await
        .unwrap();
    let other = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let other_port = other.local_addr().unwrap().port();
    for l in [granted, other] {
        tokio::spawn(async move {
            let app = axum::Router::new().route(
                "/",
                axum::routing::post(|b: String| async move { format!("upstream got {b}") })
                    .get(|| async { "upstream says hi" }),
            );
            axum::serve(l, app).await.unwrap();
        });
    }
    let r = srv
        .http
        .post(format!("{}/fn/fetch-ts", srv.url))
        .json(&json!({"url": "http://127.0.0.1:18932/"}))
        .send()
        .await
        .unwrap();
    let v: Value = r.json().await.unwrap();
    assert_eq!(
        (v["status"].as_u64(), v["body"].as_str()),
        (Some(200), Some("upstream says hi")),
        "{v}"
    );
    let r = srv
        .http
        .post(format!("{}/fn/fetch-ts", srv.url))
        .json(&json!({"url": "http://127.0.0.1:18932/", "body": "ü"}))
        .send()
        .await
        .unwrap();
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["body"], "upstream got ü", "{v}");
    let r = srv
        .http
        .post(format!("{}/fn/fetch-ts", srv.url))
        .json(&json!({"url": format!("http://127.0.0.1:{other_port}/")}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 502);
    let v: Value = r.json().await.unwrap();
    assert!(
        v["error"].as_str().unwrap().contains("HttpRequestDenied"),
        "{v}"
    );

    // cron-ts: its [[cron]] entry runs the scheduled handler.
    let run = srv
        .http
        .post(format!("{}/admin/v1/cron/jobs/cron-ts.hourly/run", srv.url))
        .header("apikey", &secret)
        .send()
        .await
        .unwrap();
    assert_eq!(run.status(), 202, "{}", run.text().await.unwrap());
    until_rows(
        &owner,
        "the scheduled handler never ran",
        30,
        "SELECT 1 FROM public.ticker_runs WHERE name = 'hourly' AND payload = '{\"note\": \"from function.toml\"}'",
        |r| r.len() == 1,
    )
    .await;
    let v: Value = req(reqwest::Method::GET, "/fn/cron-ts", None)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v, json!({"runs": 1}));

    // A Supabase Edge Function, copied unchanged.
    let r = req(reqwest::Method::POST, "/functions/v1/supabase-hello", None)
        .json(&json!({"name": "Functions"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.json::<Value>().await.unwrap(),
        json!({"message": "Hello Functions!"})
    );
}

#[tokio::test]
async fn fn_new_ts_scaffolds_a_function_that_serves_and_hot_reloads_without_node() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_wasmbase"))
        .args(["fn", "new", "greet", "--lang", "ts"])
        .current_dir(dir.path())
        // No Node, npm or cargo on the way: nothing but the binary.
        .env("PATH", "/nonexistent")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let fdir = dir.path().join("functions/greet");
    for f in ["function.toml", "index.ts", "tsconfig.json"] {
        assert!(fdir.join(f).is_file(), "{f} was not written");
    }
    assert!(dir
        .path()
        .join("functions/.wasmbase-sdk/js/wasmbase.d.ts")
        .is_file());
    let tsconfig: Value =
        serde_json::from_str(&std::fs::read_to_string(fdir.join("tsconfig.json")).unwrap())
            .unwrap();
    assert_eq!(
        tsconfig["compilerOptions"]["paths"]["wasmbase"][0],
        "../.wasmbase-sdk/js/wasmbase.d.ts"
    );

    // Served as `wasmbase dev` serves it: build and watch on.
    let db = TestDb::new().await;
    let (_, anon) = db.key(KeyKind::Publishable).await;
    let functions = dir.path().join("functions");
    let srv = db.dev_functions_server(functions.clone()).await;
    srv.wait_function("greet").await;
    let greet = || async {
        let r = srv
            .http
            .post(format!("{}/functions/v1/greet", srv.url))
            .header("apikey", &anon)
            .json(&json!({"name": "Ada"}))
            .send()
            .await
            .unwrap();
        (
            r.status().as_u16(),
            r.json::<Value>().await.unwrap_or(Value::Null),
        )
    };
    let (s, b) = greet().await;
    assert_eq!(
        (s, b["message"].as_str()),
        (200, Some("Hello, Ada!")),
        "{b}"
    );

    // An edit is rebuilt and swapped in.
    let index = fdir.join("index.ts");
    let src = std::fs::read_to_string(&index).unwrap();
    let old = served_hash(&srv, "greet");
    std::fs::write(&index, src.replace("`Hello, ", "`Howdy, ")).unwrap();
    wait_until("the edit was never rebuilt", 60, || {
        served_hash(&srv, "greet") != old
    })
    .await;
    let (_, b) = greet().await;
    assert_eq!(b["message"], "Howdy, Ada!", "{b}");

    // A broken edit is reported with its position; the last good version serves.
    std::fs::write(&index, "export default {\n  fetch( { return 1 }\n};\n").unwrap();
    let registry = &srv.srv.state.functions.registry;
    wait_until("the broken build was never reported", 60, || {
        registry.error("greet").is_some()
    })
    .await;
    let e = registry.error("greet").unwrap();
    assert!(e.contains("index.ts:2:"), "{e}");
    let (s, b) = greet().await;
    assert_eq!((s, b["message"].as_str()), (200, Some("Howdy, Ada!")));
}

#[tokio::test]
async fn wasmbase_deploy_builds_ts_and_it_serves_and_rolls_back_on_every_node() {
    let db = TestDb::new().await;
    let (_, anon) = db.key(KeyKind::Publishable).await;
    let (_, secret) = db.key(KeyKind::Secret).await;
    let a = db.server().await;
    let b = db.server().await;
    let project = tempfile::tempdir().unwrap();
    let fdir = project.path().join("functions/greeter");
    let version = |word: &str| {
        format!("import {{ auth }} from 'wasmbase';\nexport default {{ fetch: () => Response.json({{ word: '{word}', role: auth.principal().role }}) }};\n")
    };
    std::fs::create_dir_all(&fdir).unwrap();
    std::fs::write(fdir.join("function.toml"), "name = \"greeter\"\n").unwrap();
    // `wasmbase deploy` builds the TS itself (no Node, no cargo) and uploads it.
    // (Run without blocking: the servers share this test's runtime.)
    let deploy = || async {
        tokio::process::Command::new(env!("CARGO_BIN_EXE_wasmbase"))
            .args(["deploy", "greeter", "--url", &a.url, "--key", &secret])
            .current_dir(project.path())
            .env("PATH", "/nonexistent")
            .env("HOME", project.path())
            .output()
            .await
            .unwrap()
    };
    for v in ["one", "two"] {
        std::fs::write(fdir.join("index.ts"), version(v)).unwrap();
        let out = deploy().await;
        assert!(
            out.status.success(),
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let word = |srv: &TestServer| {
        let (http, url, anon) = (srv.http.clone(), srv.url.clone(), anon.clone());
        async move {
            let r = http
                .get(format!("{url}/fn/greeter"))
                .header("apikey", anon)
                .send()
                .await
                .unwrap();
            r.json::<Value>().await.unwrap()
        }
    };
    for srv in [&a, &b] {
        crate::functions::wait_version(srv, "greeter", 2).await;
        assert_eq!(word(srv).await, json!({"word": "two", "role": "anon"}));
    }
    // An ungranted capability is refused at deploy, naming it; nothing changes.
    std::fs::write(fdir.join("index.ts"), "import { sql } from 'wasmbase';\nexport default { fetch: () => new Response(String(sql)) };\n").unwrap();
    let out = deploy().await;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("imports `sql` from \"wasmbase\"") && err.contains("db = \"service\""),
        "{err}"
    );
    let r = a
        .http
        .post(format!("{}/admin/v1/functions/greeter/rollback", a.url))
        .header("apikey", &secret)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    for srv in [&a, &b] {
        crate::functions::wait_version(srv, "greeter", 1).await;
        assert_eq!(word(srv).await["word"], "one");
    }
}

#[tokio::test]
async fn storage_from_js_reaches_granted_buckets_only() {
    use crate::storage::Client;
    let dir = tempfile::tempdir().unwrap();
    let files = r#"import { storage } from "wasmbase";
export default {
  async fetch(req: Request): Promise<Response> {
    const url = new URL(req.url);
    const bucket = url.searchParams.get("bucket") ?? "uploads";
    const b = storage.from(bucket);
    if (req.method === "PUT") {
      return Response.json(await b.upload("docs/note.txt", await req.text(), { contentType: "text/plain", upsert: true }));
    }
    if (req.method === "DELETE") return Response.json(await b.remove(["docs/note.txt"]));
    const { data, error } = await b.download("docs/note.txt");
    if (error) return Response.json({ error }, { status: error.status });
    const list = await b.list("docs");
    const signed = await b.createSignedUrl("docs/note.txt", 60);
    return Response.json({ text: await data.text(), type: data.type, names: list.data.map((f) => f.name), signed: signed.data.signedUrl.includes("token=") });
  },
};
"#;
    write_fn(
        dir.path(),
        "files-ts",
        "db = \"service\"\nstorage = [\"uploads:write\", \"uploads:read\"]",
        &[("index.ts", files)],
    );
    write_fn(
        dir.path(),
        "no-storage",
        "",
        &[("index.ts", "import { storage } from 'wasmbase';\nexport default { fetch: () => new Response(String(storage)) };\n")],
    );
    let db = TestDb::new().await;
    let (_, secret) = db.key(KeyKind::Secret).await;
    let functions = dir.path().to_path_buf();
    let srv = db.functions_server(|c| c.functions.dir = functions).await;
    srv.wait_function("files-ts").await;
    let service = Client {
        srv: &srv,
        key: secret.clone(),
        bearer: None,
    };
    for name in ["uploads", "secret"] {
        let (s, v) = service
            .json(reqwest::Method::POST, "/bucket", json!({"name": name}))
            .await;
        assert_eq!(s, 200, "{v}");
    }
    let (s, b) = call(&srv, "PUT", "/fn/files-ts", Some("héllo")).await;
    assert_eq!(s, 200, "{b}");
    let v: Value = serde_json::from_str(&b).unwrap();
    assert_eq!(
        (v["data"]["path"].as_str(), v["data"]["fullPath"].as_str()),
        (Some("docs/note.txt"), Some("uploads/docs/note.txt")),
        "{v}"
    );
    // It is an object of /storage/v1.
    assert_eq!(
        service.download("uploads/docs/note.txt").await,
        (200, "héllo".as_bytes().to_vec())
    );
    let (s, b) = call(&srv, "GET", "/fn/files-ts", None).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(
        serde_json::from_str::<Value>(&b).unwrap(),
        json!({"text": "héllo", "type": "text/plain", "names": ["note.txt"], "signed": true})
    );
    // A bucket the function is not granted is refused by the host.
    let (s, b) = call(&srv, "GET", "/fn/files-ts?bucket=secret", None).await;
    assert_eq!(s, 403, "{b}");
    assert!(b.contains("AccessDenied"), "{b}");
    let (s, b) = call(&srv, "DELETE", "/fn/files-ts", None).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(service.download("uploads/docs/note.txt").await.0, 400);
    // Importing `storage` without a grant fails the build, naming it.
    let registry = &srv.srv.state.functions.registry;
    wait_until("no-storage never failed", 60, || {
        registry.error("no-storage").is_some()
    })
    .await;
    let e = registry.error("no-storage").unwrap();
    assert!(
        e.contains("imports `storage`") && e.contains("no storage grant"),
        "{e}"
    );
}
