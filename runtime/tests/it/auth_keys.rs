//! The `apikey` requirement, opaque keys, revocation across nodes, the admin key API.

use crate::harness::*;
use serde_json::json;
use wasmbase_host_api::keys::KeyKind;

#[tokio::test]
async fn apikey_is_required_and_must_be_valid() {
    let db = TestDb::new().await;
    let (_, pk) = db.key(KeyKind::Publishable).await;
    let s = db.server().await;
    let (st, body) = s.get("/platform/v1/whoami", None, None).await;
    assert_eq!((st, body["code"].as_str()), (401, Some("no_api_key")));
    // Right shape, never issued.
    let unknown = format!("sb_publishable_{}", "A".repeat(43));
    let (st, body) = s.get("/platform/v1/whoami", Some(&unknown), None).await;
    assert_eq!((st, body["code"].as_str()), (401, Some("invalid_api_key")));
    // One character changed.
    let mut tampered = pk.clone();
    let last = tampered.pop().unwrap();
    tampered.push(if last == 'A' { 'B' } else { 'A' });
    let (st, _) = s.get("/platform/v1/whoami", Some(&tampered), None).await;
    assert_eq!(st, 401);
    // Garbage and a user's access token are not API keys.
    for bad in [
        "garbage",
        "sb_secret_x",
        &user_token("6f1c2a9e-8b7d-4c3e-9f1a-2b3c4d5e6f70"),
    ] {
        let (st, body) = s.get("/platform/v1/whoami", Some(bad), None).await;
        assert_eq!(
            (st, body["code"].as_str()),
            (401, Some("invalid_api_key")),
            "{bad}"
        );
    }
    // Legacy JWT keys can be switched off.
    let anon_jwt = sign(json!({"role": "anon", "exp": now() + 600}));
    let (st, _) = s.get("/platform/v1/whoami", Some(&anon_jwt), None).await;
    assert_eq!(st, 200);
    let strict = db.server_with(|c| c.auth.legacy_jwt_keys = false).await;
    let (st, _) = strict
        .get("/platform/v1/whoami", Some(&anon_jwt), None)
        .await;
    assert_eq!(st, 401);
    let (st, _) = strict.get("/platform/v1/whoami", Some(&pk), None).await;
    assert_eq!(st, 200);
}

#[tokio::test]
async fn revoke_reaches_every_node_through_notify() {
    let db = TestDb::new().await;
    let (_, secret) = db.key(KeyKind::Secret).await;
    let (victim_id, victim) = db.key(KeyKind::Publishable).await;
    let a = db.server().await;
    let b = db.server().await;
    assert_eq!(
        a.get("/platform/v1/whoami", Some(&victim), None).await.0,
        200
    );
    assert_eq!(
        b.get("/platform/v1/whoami", Some(&victim), None).await.0,
        200
    );

    let vb = b.keys_version();
    let r = a
        .http
        .delete(format!("{}/admin/v1/keys/{victim_id}", a.url))
        .header("apikey", &secret)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    b.wait_keys_after(vb).await;
    let (st, body) = b.get("/platform/v1/whoami", Some(&victim), None).await;
    assert_eq!((st, body["code"].as_str()), (401, Some("invalid_api_key")));
    assert_eq!(
        a.get("/platform/v1/whoami", Some(&victim), None).await.0,
        401
    );
}

#[tokio::test]
async fn key_cache_resyncs_after_the_listener_reconnects() {
    let db = TestDb::new().await;
    let (victim_id, victim) = db.key(KeyKind::Publishable).await;
    let s = db.server().await;
    assert_eq!(
        s.get("/platform/v1/whoami", Some(&victim), None).await.0,
        200
    );
    let owner = db.owner().await;
    // Cut the LISTEN connection (the only one in this database that is LISTENing
    // from this server's owner session besides the system pool, which we spare).
    let v = s.keys_version();
    owner
        .execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE datname = current_database() AND pid <> pg_backend_pid() AND application_name = 'wasmbase-listen'",
            &[],
        )
        .await
        .unwrap();
    // Revoke while the listener may be away: the NOTIFY can be lost, the resync
    // after the reconnect must still catch it.
    wasmbase_host_api::keys::revoke(&owner, victim_id, "test")
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut seen = v;
    loop {
        s.wait_keys_after(seen).await;
        seen = s.keys_version();
        if s.get("/platform/v1/whoami", Some(&victim), None).await.0 == 401 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "revoked key still accepted"
        );
    }
}

#[tokio::test]
async fn admin_key_api_is_service_only_and_never_lists_secrets() {
    let db = TestDb::new().await;
    let (_, secret) = db.key(KeyKind::Secret).await;
    let (_, pk) = db.key(KeyKind::Publishable).await;
    let s = db.server().await;
    let (st, body) = s.get("/admin/v1/keys", Some(&pk), None).await;
    assert_eq!((st, body["code"].as_str()), (403, Some("forbidden")));
    assert_eq!(
        s.get("/admin/v1/mail", Some(&pk), None).await.0,
        403,
        "the mailbox holds sign-in links"
    );
    let user = user_token("6f1c2a9e-8b7d-4c3e-9f1a-2b3c4d5e6f70");
    assert_eq!(s.get("/admin/v1/keys", Some(&pk), Some(&user)).await.0, 403);

    let post = |body: serde_json::Value| {
        s.http
            .post(format!("{}/admin/v1/keys", s.url))
            .header("apikey", &secret)
            .json(&body)
            .send()
    };
    let r = post(json!({"kind": "root"})).await.unwrap();
    assert_eq!(r.status(), 400);
    let r = post(json!({"kind": "publishable", "name": "web"}))
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let created: serde_json::Value = r.json().await.unwrap();
    let new_key = created["key"].as_str().unwrap().to_string();
    let id = created["info"]["id"].as_str().unwrap().to_string();

    let v = s.keys_version();
    let (st, list) = s.get("/admin/v1/keys", Some(&secret), None).await;
    assert_eq!(st, 200);
    let text = list.to_string();
    assert!(
        !text.contains(&new_key) && !text.contains(&secret),
        "list leaks a key"
    );
    assert!(text.contains("web"));
    let _ = v;
    // The new key works once the cache has it; rotate replaces it.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while s.get("/platform/v1/whoami", Some(&new_key), None).await.0 != 200 {
        let v = s.keys_version();
        assert!(tokio::time::Instant::now() < deadline);
        s.wait_keys_after(v).await;
    }
    let v = s.keys_version();
    let r = s
        .http
        .post(format!("{}/admin/v1/keys/{id}/rotate", s.url))
        .header("apikey", &secret)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let rotated: serde_json::Value = r.json().await.unwrap();
    let newer = rotated["key"].as_str().unwrap().to_string();
    s.wait_keys_after(v).await;
    while s.get("/platform/v1/whoami", Some(&newer), None).await.0 != 200 {
        let v = s.keys_version();
        assert!(tokio::time::Instant::now() < deadline);
        s.wait_keys_after(v).await;
    }
    assert_eq!(
        s.get("/platform/v1/whoami", Some(&new_key), None).await.0,
        401
    );
    let r = s
        .http
        .delete(format!("{}/admin/v1/keys/not-a-uuid", s.url))
        .header("apikey", &secret)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);

    // Every admin action is in the audit log, without key material.
    let owner = db.owner().await;
    let rows = owner
        .query(
            "SELECT action, details::text FROM wasmbase.audit_log ORDER BY id",
            &[],
        )
        .await
        .unwrap();
    let actions: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
    assert!(
        actions.contains(&"key.create".to_string()) && actions.contains(&"key.revoke".to_string())
    );
    for r in rows {
        let d: String = r.get(1);
        assert!(!d.contains("sb_"), "audit details hold key material: {d}");
    }
}

#[tokio::test]
async fn only_publishable_keys_may_come_in_the_query_string() {
    let db = TestDb::new().await;
    let (_, pk) = db.key(KeyKind::Publishable).await;
    let (_, sk) = db.key(KeyKind::Secret).await;
    let s = db.server().await;
    let anon_jwt = sign(json!({"role": "anon", "exp": now() + 600}));
    let service_jwt = sign(json!({"role": "service_role", "exp": now() + 600}));
    let q = |path: &str, key: &str| format!("{path}?apikey={key}");
    // What realtime-js sends: a publishable key or a legacy anon JWT.
    for key in [&pk, &anon_jwt] {
        let (st, body) = s.get(&q("/platform/v1/whoami", key), None, None).await;
        assert_eq!((st, body["role"].as_str()), (200, Some("anon")), "{key}");
    }
    // A secret key, valid or not, or a service_role JWT: refused in every API,
    // each in its own shape, with a stable code and a hint to use the header.
    let unknown = format!("sb_secret_{}", "A".repeat(43));
    for key in [&sk, &unknown, &service_jwt] {
        let (st, body) = s.get(&q("/platform/v1/whoami", key), None, None).await;
        assert_eq!(
            (st, body["code"].as_str()),
            (401, Some("secret_key_in_query"))
        );
        assert!(
            body["message"].as_str().unwrap().contains("header"),
            "{body}"
        );
        let (st, body) = s.get(&q("/rest/v1/", key), None, None).await;
        assert_eq!(
            (st, body["code"].as_str()),
            (401, Some("secret_key_in_query"))
        );
        let (st, body) = s.get(&q("/auth/v1/settings", key), None, None).await;
        assert_eq!(
            (st, body["error_code"].as_str()),
            (401, Some("secret_key_in_query"))
        );
        assert!(body["msg"].as_str().unwrap().contains("header"), "{body}");
    }
    // The same keys in the header are fine.
    for key in [&sk, &service_jwt] {
        let (st, body) = s.get("/platform/v1/whoami", Some(key), None).await;
        assert_eq!((st, body["role"].as_str()), (200, Some("service_role")));
    }
    // The auth API reads the query key like every other API.
    let (st, _) = s.get(&q("/auth/v1/settings", &pk), None, None).await;
    assert_eq!(st, 200);
}

#[tokio::test]
async fn every_open_route_answers_without_a_key() {
    let db = TestDb::new().await;
    let mut s = db.server().await;
    // Browser routes (`/auth/v1/callback`) answer with redirects: look at the
    // answer itself, not at the site it sends the browser to.
    s.http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    for r in wasmbase_host_api::gate::OPEN_ROUTES {
        if r.only_if.is_some() || r.path.contains(['{', '*']) {
            continue;
        }
        let (st, body) = s.get(r.path, None, None).await;
        assert!(
            ![401, 403].contains(&st),
            "{} answered {st} without a key: {body}",
            r.path
        );
    }
    let (st, _) = s.get("/auth/v1/settings", None, None).await;
    assert_eq!(st, 401);
}
