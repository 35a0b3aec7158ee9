//! Platform and project migrations; RLS on new tables by default.

use crate::harness::*;
use std::time::Duration;
use wasmbase_host_api::{db, Principal, Role};

#[tokio::test]
async fn platform_migrations_are_idempotent_and_safe_concurrently() {
    let db = TestDb::empty().await;
    let (mut a, mut b) = (db.owner().await, db.owner().await);
    let (ra, rb) = tokio::join!(
        wasmbase::migrate::run(&mut a, None),
        wasmbase::migrate::run(&mut b, None)
    );
    let (ra, rb) = (ra.unwrap(), rb.unwrap());
    // Exactly one of them did the work.
    assert_eq!(
        ra.platform.len() + rb.platform.len(),
        wasmbase::migrate::PLATFORM.len()
    );
    let again = wasmbase::migrate::run(&mut a, None).await.unwrap();
    assert!(again.platform.is_empty());
    let n: i64 = a
        .query_one("SELECT count(*) FROM wasmbase.schema_migrations", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n as usize, wasmbase::migrate::PLATFORM.len());
}

#[tokio::test]
async fn two_servers_started_at_once_on_a_fresh_database_both_get_ready() {
    let db = TestDb::empty().await;
    let (a, b) = tokio::join!(db.server(), db.server());
    assert_eq!(a.get("/ready", None, None).await.0, 200);
    assert_eq!(b.get("/ready", None, None).await.0, 200);
}

#[tokio::test]
async fn user_migrations_apply_once_and_changed_files_are_refused_by_name() {
    let db = TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("001_notes.sql"),
        "CREATE TABLE notes (id serial PRIMARY KEY, body text);",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("002_seed.sql"),
        "INSERT INTO notes (body) VALUES ('hi');",
    )
    .unwrap();
    std::fs::write(dir.path().join("README.md"), "not sql").unwrap();
    let mut c = db.owner().await;
    let r = wasmbase::migrate::run(&mut c, Some(dir.path()))
        .await
        .unwrap();
    assert_eq!(r.user, vec!["001_notes.sql", "002_seed.sql"]);
    let r = wasmbase::migrate::run(&mut c, Some(dir.path()))
        .await
        .unwrap();
    assert!(r.user.is_empty());

    std::fs::write(
        dir.path().join("002_seed.sql"),
        "INSERT INTO notes (body) VALUES ('changed');",
    )
    .unwrap();
    let e = wasmbase::migrate::run(&mut c, Some(dir.path()))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("002_seed.sql") && e.contains("changed after it was applied"),
        "{e}"
    );

    // A failing file names itself and leaves nothing half-applied.
    std::fs::write(
        dir.path().join("002_seed.sql"),
        "INSERT INTO notes (body) VALUES ('hi');",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("003_bad.sql"),
        "CREATE TABLE t1 (x int); SELEC broken;",
    )
    .unwrap();
    let e = format!(
        "{:#}",
        wasmbase::migrate::run(&mut c, Some(dir.path()))
            .await
            .unwrap_err()
    );
    assert!(e.contains("003_bad.sql") && e.contains("42601"), "{e}");
    let t1: Option<String> = c
        .query_one("SELECT to_regclass('public.t1')::text", &[])
        .await
        .unwrap()
        .get(0);
    assert!(t1.is_none(), "a failed migration left a table behind");
    let n: i64 = c
        .query_one("SELECT count(*) FROM notes", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 1);
}

#[tokio::test]
async fn new_tables_get_rls_so_anon_sees_nothing_before_policies_exist() {
    let db = TestDb::new().await;
    let owner = db.owner().await;
    // `sync_settings` is what the server does at start.
    wasmbase::migrate::sync_settings(&owner, true, &["public".into()])
        .await
        .unwrap();
    owner
        .batch_execute("CREATE TABLE public.secrets (id int, v text); INSERT INTO public.secrets VALUES (1, 'x');")
        .await
        .unwrap();
    let rls: bool = owner
        .query_one(
            "SELECT relrowsecurity FROM pg_class WHERE oid = 'public.secrets'::regclass",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(rls);
    let owner_url: tokio_postgres::Config = db.url().parse().unwrap();
    let pool = db::pool(
        wasmbase::server::authenticator_config(
            &owner_url,
            db.config().database.authenticator_password.as_deref(),
        ),
        &db::PoolSettings {
            max_size: 1,
            wait_timeout: Duration::from_secs(5),
            application_name: "t",
        },
    )
    .unwrap();
    let count = |role| {
        let pool = pool.clone();
        async move {
            db::run_as::<_, db::DbError, _>(
                &pool,
                &db::Acting::principal(&Principal::for_role(role), Duration::from_secs(5)),
                |c| {
                    Box::pin(async move {
                        Ok(c.query_one("SELECT count(*) FROM public.secrets", &[])
                            .await?
                            .get::<_, i64>(0))
                    })
                },
            )
            .await
            .unwrap()
        }
    };
    assert_eq!(count(Role::Anon).await, 0);
    assert_eq!(count(Role::Authenticated).await, 0);
    assert_eq!(
        count(Role::ServiceRole).await,
        1,
        "service_role bypasses RLS"
    );

    // Configurable: off means the owner decides.
    wasmbase::migrate::sync_settings(&owner, false, &["public".into()])
        .await
        .unwrap();
    owner
        .batch_execute("CREATE TABLE public.open_table (id int)")
        .await
        .unwrap();
    let rls: bool = owner
        .query_one(
            "SELECT relrowsecurity FROM pg_class WHERE oid = 'public.open_table'::regclass",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(!rls);
}

#[tokio::test]
async fn login_roles_each_have_their_own_password() {
    // The harness sets them with `set_login_passwords`, as the server does.
    let db = TestDb::new().await;
    let owner = db.owner().await;
    let verifiers = login_role_verifiers(&owner).await;
    let pw = LOGIN_PASSWORDS.pairs();
    assert_eq!(verifiers.len(), pw.len(), "{verifiers:?}");
    for ((role, verifier), (role2, own)) in verifiers.iter().zip(pw) {
        assert_eq!(role, role2);
        let v = verifier
            .as_deref()
            .unwrap_or_else(|| panic!("{role} has no password"));
        for (other_role, other) in pw {
            assert_eq!(
                scram_matches(v, other),
                other == own,
                "{role}'s password checked against {other_role}'s"
            );
        }
    }
    // On a cluster that checks passwords (the private one CI uses), the request
    // pool's password does not log in as the other two roles.
    let url: tokio_postgres::Config = db.url().parse().unwrap();
    let login = |role: &str, pw: &str| {
        let mut cfg = wasmbase::server::login_config(&url, role, Some(pw));
        cfg.connect_timeout(Duration::from_secs(10));
        async move { cfg.connect(tokio_postgres::NoTls).await.map(|_| ()) }
    };
    if login("wasmbase_auth", "certainly-not-the-password")
        .await
        .is_ok()
    {
        return; // `trust`: this cluster does not check passwords.
    }
    for (role, own) in [
        ("wasmbase_auth", AUTH_PW),
        ("wasmbase_functions", FUNCTIONS_PW),
    ] {
        login(role, own).await.unwrap();
        let e = login(role, AUTHENTICATOR_PW)
            .await
            .expect_err("logged in with the authenticator password");
        assert_eq!(
            e.code(),
            Some(&tokio_postgres::error::SqlState::INVALID_PASSWORD),
            "{role}: {e}"
        );
    }
}
