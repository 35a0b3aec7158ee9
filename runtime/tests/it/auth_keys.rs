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
