//! The request envelope and the ops endpoints.

use crate::harness::*;
use serde_json::json;
use wasmbase_host_api::keys::KeyKind;

#[tokio::test]
async fn health_ready_request_id_and_security_headers() {
    let db = TestDb::new().await;
    let s = db.server().await;
    let r = s
        .http
        .get(format!("{}/health", s.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let id = r.headers()["x-request-id"].to_str().unwrap().to_string();
    assert!(
        uuid::Uuid::parse_str(&id).is_ok(),
        "generated id is a uuid: {id}"
    );
    assert_eq!(r.headers()["x-content-type-options"], "nosniff");
    assert_eq!(r.headers()["x-frame-options"], "DENY");

    let r = s.http.get(format!("{}/ready", s.url)).send().await.unwrap();
    assert_eq!(r.status(), 200);

    let r = s
        .http
        .get(format!("{}/health", s.url))
        .header("x-request-id", "trace-abc.123")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-request-id"], "trace-abc.123");

    let r = s
        .http
        .get(format!("{}/health", s.url))
        .header("x-request-id", "bad id <script>")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["code"], "invalid_request_id");
    assert!(body["requestId"].is_string());
}

#[tokio::test]
async fn database_down_at_start_gives_503_not_a_crash() {
    let db = TestDb::new().await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut c = db.config();
    c.database.url = Some(format!("postgres://postgres@127.0.0.1:{port}/nothing"));
    let srv = wasmbase::server::start(c)
        .await
        .expect("starts without a database");
    let s = TestServer::new(srv);
    let (st, _) = s.get("/health", None, None).await;
    assert_eq!(st, 200);
    let (st, body) = s.get("/ready", None, None).await;
    assert_eq!(st, 503);
    assert_eq!(body["database"], false);
    let (pk, _) = (
        "sb_publishable_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        (),
    );
    let (st, body) = s.get("/platform/v1/whoami", Some(pk), None).await;
    assert_eq!(st, 503, "{body}");
    assert_eq!(body["code"], "not_ready");
    s.srv.shutdown().await;
}

#[tokio::test]
async fn cors_preflight_needs_no_key_and_allows_supabase_headers() {
    let db = TestDb::new().await;
    let s = db.server().await;
    let r = s
        .http
        .request(
            reqwest::Method::OPTIONS,
            format!("{}/platform/v1/whoami", s.url),
        )
        .header("origin", "http://localhost:3000")
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "apikey,authorization,x-client-info,content-type,prefer",
        )
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    let allowed = r.headers()["access-control-allow-headers"]
        .to_str()
        .unwrap()
        .to_string();
    for h in [
        "apikey",
        "authorization",
        "x-client-info",
        "prefer",
        "range",
        "x-supabase-api-version",
    ] {
        assert!(allowed.contains(h), "{h} missing from {allowed}");
    }
    let r = s
        .http
        .get(format!("{}/health", s.url))
        .header("origin", "http://localhost:3000")
        .send()
        .await
        .unwrap();
    let exposed = r.headers()["access-control-expose-headers"]
        .to_str()
        .unwrap();
    assert!(exposed.contains("content-range") && exposed.contains("x-request-id"));
}

#[tokio::test]
async fn cors_allowlist_refuses_other_origins() {
    let db = TestDb::new().await;
    let s = db
        .server_with(|c| c.server.cors_origins = vec!["https://app.example.com".into()])
        .await;
    let pre = |origin: &'static str| {
        s.http
            .request(reqwest::Method::OPTIONS, format!("{}/health", s.url))
            .header("origin", origin)
            .header("access-control-request-method", "GET")
            .send()
    };
    let ok = pre("https://app.example.com").await.unwrap();
    assert_eq!(
        ok.headers()["access-control-allow-origin"],
        "https://app.example.com"
    );
    let bad = pre("https://evil.example").await.unwrap();
    assert!(bad.headers().get("access-control-allow-origin").is_none());
}

#[tokio::test]
async fn oversized_body_is_413_and_unknown_route_is_404() {
    let db = TestDb::new().await;
    let (_, secret) = db.key(KeyKind::Secret).await;
    let s = db.server_with(|c| c.server.body_limit_bytes = 64).await;
    let r = s
        .http
        .post(format!("{}/admin/v1/keys", s.url))
        .header("apikey", &secret)
        .header("content-type", "application/json")
        .body(format!(
            r#"{{"kind":"secret","name":"{}"}}"#,
            "x".repeat(500)
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["code"], "payload_too_large");

    let (st, body) = s.get("/nope", None, None).await;
    assert_eq!(st, 404);
    assert_eq!(body["code"], "not_found");
    assert!(body["requestId"].is_string());
}

#[tokio::test]
async fn metrics_count_requests_by_route_and_status() {
    let db = TestDb::new().await;
    let (_, pk) = db.key(KeyKind::Publishable).await;
    let s = db.server().await;
    s.get("/platform/v1/whoami", Some(&pk), None).await;
    s.get("/platform/v1/whoami", None, None).await;
    let text = s
        .http
        .get(format!("{}/metrics", s.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        text.contains(
            r#"wasmbase_http_requests_total{route="/platform/v1/whoami",status="200"} 1"#
        ),
        "{text}"
    );
    assert!(
        text.contains(
            r#"wasmbase_http_requests_total{route="/platform/v1/whoami",status="401"} 1"#
        ),
        "{text}"
    );
    assert!(text.contains("wasmbase_http_request_duration_seconds_bucket"));
    assert!(text.contains("wasmbase_db_pool_max 4"));
    assert!(text.contains("wasmbase_ready 1"));
}

/// `server.threads`: connections are served on threads of their own. Requests
/// on many connections are answered, the peer address still reaches auth (the
/// session records it), and shutdown stops accepting but lets a request in
/// flight finish with its answer.
#[tokio::test]
async fn serving_threads_answer_every_connection_and_drain_on_shutdown() {
    let db = TestDb::new().await;
    let (_, anon) = db.key(KeyKind::Publishable).await;
    let s = db
        .functions_server(|c| {
            c.server.threads = 2;
            c.auth.autoconfirm = Some(true);
        })
        .await;
    // Separate clients, separate connections: the acceptor hands them to both threads.
    for _ in 0..6 {
        let r = reqwest::Client::new()
            .get(format!("{}/health", s.url))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert!(r.headers().contains_key("x-request-id"));
    }
    let r = s
        .http
        .post(format!("{}/auth/v1/signup", s.url))
        .header("apikey", &anon)
        .json(&json!({"email": "threads@example.com", "password": "password-123"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let ip: Option<String> = db
        .owner()
        .await
        .query_one(
            "SELECT s.ip FROM auth.sessions s JOIN auth.users u ON u.id = s.user_id WHERE u.email = 'threads@example.com'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(ip.as_deref(), Some("127.0.0.1"));

    // A call in flight when shutdown starts still gets its answer (spin: 504
    // after its 1 s budget).
    s.wait_function("spin").await;
    let global = s.srv.state.functions.global.clone();
    let before = global.available_permits();
    let call = tokio::spawn({
        let (http, url, anon) = (s.http.clone(), s.url.clone(), anon.clone());
        async move {
            let r = http
                .post(format!("{url}/fn/spin"))
                .header("apikey", anon)
                .json(&json!({}))
                .send()
                .await
                .unwrap();
            r.status().as_u16()
        }
    });
    wait_until("spin never started", 30, || {
        global.available_permits() < before
    })
    .await;
    let url = s.url.clone();
    s.srv.shutdown().await;
    assert_eq!(call.await.unwrap(), 504);
    assert!(
        reqwest::Client::new()
            .get(format!("{url}/health"))
            .send()
            .await
            .is_err(),
        "a stopped server still accepted a connection"
    );
}
