//! Principals: what role and claims a request's transaction really runs with, and
//! that nothing a client sends reaches superuser or owner rights.

use crate::harness::*;
use serde_json::json;
use std::time::Duration;
use wasmbase_host_api::keys::KeyKind;
use wasmbase_host_api::{db, Principal, Role};

const USER: &str = "6f1c2a9e-8b7d-4c3e-9f1a-2b3c4d5e6f70";

#[tokio::test]
async fn each_key_and_token_runs_as_its_role_never_as_owner_or_superuser() {
    let db = TestDb::new().await;
    let (_, pk) = db.key(KeyKind::Publishable).await;
    let (_, sk) = db.key(KeyKind::Secret).await;
    let s = db.server().await;
    let owner_name: String = db
        .owner()
        .await
        .query_one("SELECT current_user::text", &[])
        .await
        .unwrap()
        .get(0);

    let cases = [
        (pk.clone(), None, "anon"),
        (sk.clone(), None, "service_role"),
        (pk.clone(), Some(pk.clone()), "anon"),
        (pk.clone(), Some(user_token(USER)), "authenticated"),
        (sign(json!({"role":"anon","exp": now() + 60})), None, "anon"),
        (
            sign(json!({"role":"service_role","exp": now() + 60})),
            None,
            "service_role",
        ),
    ];
    for (key, bearer, role) in cases {
        let (st, body) = s
            .get("/platform/v1/whoami", Some(&key), bearer.as_deref())
            .await;
        assert_eq!(st, 200, "{body}");
        let d = &body["database"];
        assert_eq!(d["current_user"], role, "{body}");
        assert_eq!(d["session_user"], "authenticator", "{body}");
        assert_eq!(d["superuser"], false);
        assert_ne!(d["current_user"], owner_name.as_str());
        assert_eq!(d["auth_role"], role);
    }
    let (_, body) = s
        .get("/platform/v1/whoami", Some(&pk), Some(&user_token(USER)))
        .await;
    assert_eq!(body["database"]["auth_uid"], USER);
    assert_eq!(body["database"]["statement_timeout"], "8s");
    // A session that sets only the claims (a policy test in psql) is read as
    // on Supabase: auth.uid() and auth.role() fall back to the claims JSON.
    let owner = db.owner().await;
    let claims = json!({"sub": USER, "role": "authenticated"}).to_string();
    owner
        .execute(
            "SELECT set_config('request.jwt.claims', $1, false)",
            &[&claims],
        )
        .await
        .unwrap();
    let r = owner
        .query_one("SELECT auth.uid()::text, auth.role()", &[])
        .await
        .unwrap();
    assert_eq!(
        (r.get::<_, String>(0), r.get::<_, String>(1)),
        (USER.to_string(), "authenticated".to_string())
    );
    // A `sub` PostgreSQL cannot read (a NUL in it) is the caller's input: 400.
    let (st, body) = s
        .get(
            "/platform/v1/whoami",
            Some(&pk),
            Some(&user_token("a\u{0}b")),
        )
        .await;
    assert_eq!(
        (st, body["code"].as_str()),
        (400, Some("invalid_input")),
        "{body}"
    );
    let (_, body) = s.get("/platform/v1/whoami", Some(&pk), None).await;
    assert_eq!(body["claims"], json!({"role": "anon"}));
    assert_eq!(body["database"]["statement_timeout"], "3s");
}

#[tokio::test]
async fn forged_expired_none_and_foreign_role_tokens_are_401() {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let db = TestDb::new().await;
    let (_, pk) = db.key(KeyKind::Publishable).await;
    let s = db.server().await;
    let forged =
        wasmbase_host_api::jwt::JwtKeys::hs256("another-secret-another-secret-00000000", None, "x")
            .unwrap()
            .sign(&json!({"role":"service_role","exp": now() + 60}))
            .unwrap();
    let none = format!(
        "{}.{}.",
        b64.encode(r#"{"alg":"none","typ":"JWT"}"#),
        b64.encode(json!({"role":"service_role","exp": now() + 60}).to_string())
    );
    let cases = [
        (forged, "invalid_jwt"),
        (none, "invalid_jwt"),
        (
            sign(
                json!({"role":"authenticated","aud":"authenticated","sub":USER,"exp": now() - 120}),
            ),
            "jwt_expired",
        ),
        (
            sign(json!({"role":"authenticated","aud":"authenticated","sub":USER})),
            "invalid_jwt",
        ),
        (
            sign(json!({"role":"postgres","exp": now() + 60})),
            "invalid_jwt",
        ),
        (
            sign(json!({"role":"authenticator","exp": now() + 60})),
            "invalid_jwt",
        ),
        (
            sign(json!({"role":"authenticated","aud":"elsewhere","sub":USER,"exp": now() + 60})),
            "invalid_jwt",
        ),
        ("not.a.jwt".to_string(), "invalid_jwt"),
    ];
    for (token, code) in cases {
        let (st, body) = s.get("/platform/v1/whoami", Some(&pk), Some(&token)).await;
        assert_eq!(
            (st, body["code"].as_str()),
            (401, Some(code)),
            "{token}: {body}"
        );
    }
    let r = s
        .http
        .get(format!("{}/platform/v1/whoami", s.url))
        .header("apikey", &pk)
        .header("authorization", "Basic abc")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
}

fn pool_for(db: &TestDb, size: usize) -> deadpool_postgres::Pool {
    let owner: tokio_postgres::Config = db.url().parse().unwrap();
    let pw = db.config().database.authenticator_password;
    let cfg = wasmbase::server::authenticator_config(&owner, pw.as_deref());
    db::pool(
        cfg,
        &db::PoolSettings {
            max_size: size,
            wait_timeout: Duration::from_secs(5),
            application_name: "wasmbase-test",
        },
    )
    .unwrap()
}

#[tokio::test]
async fn a_principal_transaction_cannot_climb_to_owner_or_superuser() {
    let db = TestDb::new().await;
    let pool = pool_for(&db, 1);
    for role in [Role::Anon, Role::Authenticated, Role::ServiceRole] {
        let p = Principal::for_role(role);
        // Even with SQL of its choosing, a request transaction cannot become the
        // owner or a superuser: authenticator is a member of the three API roles only.
        for attempt in [
            "SET ROLE postgres",
            "SET SESSION AUTHORIZATION postgres",
            "SET ROLE authenticator; CREATE ROLE x SUPERUSER",
            "SET ROLE wasmbase_auth",
            "SELECT set_config('role', 'wasmbase_auth', true)",
        ] {
            let r = db::run_as::<_, db::DbError, _>(
                &pool,
                &db::Acting::principal(&p, Duration::from_secs(5)),
                |c| Box::pin(async move { Ok(c.batch_execute(attempt).await?) }),
            )
            .await;
            let e = r.expect_err(attempt);
            assert_eq!(db::sqlstate(&e), Some("42501"), "{attempt}: {e}");
        }
    }
}

#[tokio::test]
async fn a_cancelled_transaction_never_returns_its_connection_to_the_pool() {
    let db = TestDb::new().await;
    let pool = pool_for(&db, 1);
    let service = Principal::for_role(Role::ServiceRole);
    let first_pid = std::sync::Arc::new(std::sync::atomic::AtomicI32::new(0));
    let pid = first_pid.clone();
    let acting = db::Acting::principal(&service, Duration::from_secs(30));
    let slow = db::run_as::<_, db::DbError, _>(&pool, &acting, move |c| {
        Box::pin(async move {
            let p: i32 = c.query_one("SELECT pg_backend_pid()", &[]).await?.get(0);
            pid.store(p, std::sync::atomic::Ordering::SeqCst);
            c.batch_execute("SELECT pg_sleep(30)").await?;
            Ok(())
        })
    });
    // The client goes away mid-transaction.
    assert!(tokio::time::timeout(Duration::from_millis(500), slow)
        .await
        .is_err());
    let first = first_pid.load(std::sync::atomic::Ordering::SeqCst);
    assert_ne!(first, 0, "the slow transaction had started");
    let anon = Principal::for_role(Role::Anon);
    let row = db::run_as::<_, db::DbError, _>(
        &pool,
        &db::Acting::principal(&anon, Duration::from_secs(5)),
        |c| {
            Box::pin(async move {
                Ok(c.query_one(
                    "SELECT current_user::text, auth.role(), pg_backend_pid()",
                    &[],
                )
                .await?)
            })
        },
    )
    .await
    .unwrap();
    assert_eq!(row.get::<_, String>(0), "anon");
    assert_eq!(row.get::<_, Option<String>>(1).as_deref(), Some("anon"));
    // A new connection: the one left inside the service_role transaction was discarded.
    assert_ne!(row.get::<_, i32>(2), first);
}

#[tokio::test]
async fn statement_timeout_applies_to_principal_transactions() {
    let db = TestDb::new().await;
    let pool = pool_for(&db, 1);
    let p = Principal::for_role(Role::Authenticated);
    let e = db::run_as::<_, db::DbError, _>(
        &pool,
        &db::Acting::principal(&p, Duration::from_millis(100)),
        |c| Box::pin(async move { Ok(c.batch_execute("SELECT pg_sleep(5)").await?) }),
    )
    .await
    .unwrap_err();
    assert_eq!(db::sqlstate(&e), Some("57014"));
}
