//! Pooled request connections carry no session state from one request to the
//! next: what a function leaves behind (`set_config(.., false)`, advisory
//! locks, temporary tables, LISTEN) is reset with the transaction's end.

use crate::harness::*;
use serde_json::json;
use wasmbase_host_api::keys::KeyKind;

#[tokio::test]
async fn session_state_set_by_one_request_never_reaches_the_next() {
    let db = TestDb::new().await;
    let (_, secret) = db.key(KeyKind::Secret).await;
    let srv = db.server().await;
    let pool_size = srv.srv.state.config.database.pool_size;
    let v = srv.schema_version();
    db.owner()
        .await
        .batch_execute(
            "CREATE TABLE notes (id serial PRIMARY KEY, v text);
             CREATE FUNCTION poison() RETURNS text LANGUAGE plpgsql AS $$
             BEGIN
               PERFORM set_config('default_transaction_read_only', 'on', false);
               PERFORM set_config('app.tenant', 'tenant-a', false);
               PERFORM set_config('search_path', 'pg_catalog', false);
               PERFORM pg_try_advisory_lock(42);
               EXECUTE 'CREATE TEMP TABLE IF NOT EXISTS leak (x int)';
               EXECUTE 'LISTEN leak';
               RETURN 'poisoned';
             END $$;
             CREATE FUNCTION peek() RETURNS json LANGUAGE sql AS $$
               SELECT json_build_object(
                 'tenant', coalesce(current_setting('app.tenant', true), ''),
                 'read_only', current_setting('default_transaction_read_only'),
                 'search_path', current_setting('search_path'),
                 'locks', (SELECT count(*) FROM pg_locks
                           WHERE locktype = 'advisory' AND pid = pg_backend_pid()),
                 'temp', to_regclass('pg_temp.leak') IS NOT NULL,
                 'listening', (SELECT count(*) FROM pg_listening_channels()))
             $$;",
        )
        .await
        .unwrap();
    srv.wait_schema_after(v).await;

    let (s, _, clean) = srv
        .rest("POST", "rpc/peek", &secret, None, &[], Some(json!({})))
        .await;
    assert_eq!(s, 200, "{clean}");
    assert_eq!(clean["tenant"], "");
    assert_eq!(clean["read_only"], "off");

    // Poison every pooled connection, at once so each request holds its own.
    let poison =
        (0..pool_size).map(|_| srv.rest("POST", "rpc/poison", &secret, None, &[], Some(json!({}))));
    for (s, _, b) in futures::future::join_all(poison).await {
        assert_eq!((s, b), (200, json!("poisoned")));
    }
    // Then, on whichever connection each lands, unrelated requests see the
    // defaults: writes succeed, no tenant, no locks, no temp table.
    for i in 0..(3 * pool_size) {
        let (s, _, b) = srv
            .rest(
                "POST",
                "notes",
                &secret,
                None,
                &[("prefer", "return=minimal")],
                Some(json!({"v": format!("n{i}")})),
            )
            .await;
        assert_eq!(s, 201, "write {i} failed after a poisoned request: {b}");
        let (s, _, b) = srv
            .rest("POST", "rpc/peek", &secret, None, &[], Some(json!({})))
            .await;
        assert_eq!(s, 200, "{b}");
        assert_eq!(b, clean, "request {i} saw another request's session state");
    }
    // No session anywhere still holds the advisory lock.
    let held: i64 = db
        .owner()
        .await
        .query_one(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(held, 0);
}
