//! `/rest/v1` against real PostgreSQL: schema reloads observed through the cache
//! version, row-level security between two users, anon and service, read-only
//! GETs, SECURITY DEFINER behaviour, profiles, limits, hostile input.

use crate::harness::*;
use serde_json::{json, Value};
use wasmbase_host_api::keys::KeyKind;

impl TestServer {
    /// Schema-cache version of this server.
    pub fn schema_version(&self) -> u64 {
        self.srv.state.schema.version()
    }

    /// Waits until the schema cache reloaded past `v` (bounded).
    pub async fn wait_schema_after(&self, v: u64) {
        wait_until("schema cache did not reload", 10, || {
            self.schema_version() > v
        })
        .await;
    }

    /// A `/rest/v1` request; returns status, headers and body (JSON or text).
    pub async fn rest(
        &self,
        method: &str,
        path: &str,
        key: &str,
        bearer: Option<&str>,
        headers: &[(&str, &str)],
        body: Option<Value>,
    ) -> (u16, http::HeaderMap, Value) {
        let mut r = self
            .http
            .request(
                method.parse().unwrap(),
                format!("{}/rest/v1/{path}", self.url),
            )
            .header("apikey", key);
        if let Some(b) = bearer {
            r = r.header("authorization", format!("Bearer {b}"));
        }
        for (k, v) in headers {
            r = r.header(*k, *v);
        }
        if let Some(b) = body {
            r = r.json(&b);
        }
        let resp = r.send().await.unwrap();
        let status = resp.status().as_u16();
        let h = resp.headers().clone();
        let text = resp.text().await.unwrap();
        let v = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, h, v)
    }
}

/// Runs `sql` as the owner and waits for the server to see it.
pub(crate) async fn ddl(db: &TestDb, srv: &TestServer, sql: &str) {
    let v = srv.schema_version();
    db.owner().await.batch_execute(sql).await.unwrap();
    srv.wait_schema_after(v).await;
}

#[tokio::test]
async fn schema_cache_follows_ddl_and_pgrst_reload_notifications() {
    let db = TestDb::new().await;
    // Keys exist before the server starts, so its first key load has them.
    let (_, anon) = db.key(KeyKind::Publishable).await;
    let (_, secret) = db.key(KeyKind::Secret).await;
    let srv = db.server().await;
    let (s, _, b) = srv.rest("GET", "notes", &anon, None, &[], None).await;
    assert_eq!((s, b["code"].as_str()), (404, Some("PGRST205")));

    ddl(
        &db,
        &srv,
        "CREATE TABLE notes (id int PRIMARY KEY, body text); \
        CREATE POLICY read ON notes FOR SELECT USING (true); INSERT INTO notes VALUES (1, 'hi');",
    )
    .await;
    let (s, _, b) = srv
        .rest("GET", "notes?select=body", &anon, None, &[], None)
        .await;
    assert_eq!((s, b), (200, json!([{"body": "hi"}])));

    // A column type change: statements prepared against the old schema are not reused.
    ddl(&db, &srv, "ALTER TABLE notes ALTER COLUMN id TYPE text").await;
    let (s, _, b) = srv
        .rest("GET", "notes?id=eq.abc", &anon, None, &[], None)
        .await;
    assert_eq!((s, b), (200, json!([])));

    let v = srv.schema_version();
    db.owner()
        .await
        .batch_execute("NOTIFY pgrst, 'reload schema'")
        .await
        .unwrap();
    srv.wait_schema_after(v).await;

    let (s, info) = srv.get("/admin/v1/schema", Some(&secret), None).await;
    assert_eq!(s, 200);
    assert_eq!(info["version"].as_u64(), Some(srv.schema_version()));
    let (s, _) = srv.get("/admin/v1/schema", Some(&anon), None).await;
    assert_eq!(s, 403);
}

const TODOS: &str = "
CREATE TABLE todos (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  owner uuid NOT NULL DEFAULT auth.uid(), task text NOT NULL);
CREATE POLICY own ON todos FOR ALL TO authenticated
  USING (owner = auth.uid()) WITH CHECK (owner = auth.uid());";

#[tokio::test]
async fn rls_isolates_two_users_anon_sees_nothing_service_sees_all() {
    let db = TestDb::new().await;
    // Keys exist before the server starts, so its first key load has them.
    let (_, anon) = db.key(KeyKind::Publishable).await;
    let (_, secret) = db.key(KeyKind::Secret).await;
    let srv = db.server().await;
    ddl(&db, &srv, TODOS).await;
    let (a, b) = (
        uuid::Uuid::new_v4().to_string(),
        uuid::Uuid::new_v4().to_string(),
    );
    let (ta, tb) = (user_token(&a), user_token(&b));
    let repr = [("prefer", "return=representation")];
    let (s, _, rows) = srv
        .rest(
            "POST",
            "todos",
            &anon,
            Some(&ta),
            &repr,
            Some(json!({"task": "a1"})),
        )
        .await;
    assert_eq!(s, 201, "{rows}");
    assert_eq!(rows[0]["owner"], json!(a));
    let (s, _, rows) = srv
        .rest(
            "POST",
            "todos",
            &anon,
            Some(&tb),
            &repr,
            Some(json!([{"task": "b1"}, {"task": "b2"}])),
        )
        .await;
    assert_eq!((s, rows.as_array().unwrap().len()), (201, 2));
    let b_id = rows[0]["id"].clone();

    let (_, _, mine) = srv
        .rest(
            "GET",
            "todos?select=task&order=task",
            &anon,
            Some(&ta),
            &[],
            None,
        )
        .await;
    assert_eq!(mine, json!([{"task": "a1"}]));
    let (_, _, mine) = srv
        .rest(
            "GET",
            "todos?select=task&order=task",
            &anon,
            Some(&tb),
            &[],
            None,
        )
        .await;
    assert_eq!(mine, json!([{"task": "b1"}, {"task": "b2"}]));

    // A cannot touch B's rows: nothing matches under A's policy.
    let path = format!("todos?id=eq.{b_id}");
    let (s, _, rows) = srv
        .rest(
            "PATCH",
            &path,
            &anon,
            Some(&ta),
            &repr,
            Some(json!({"task": "pwned"})),
        )
        .await;
    assert_eq!((s, rows), (200, json!([])));
    let (s, _, rows) = srv
        .rest("DELETE", &path, &anon, Some(&ta), &repr, None)
        .await;
    assert_eq!((s, rows), (200, json!([])));
    // Nor write a row in B's name.
    let (s, _, e) = srv
        .rest(
            "POST",
            "todos",
            &anon,
            Some(&ta),
            &[],
            Some(json!({"task": "x", "owner": b})),
        )
        .await;
    assert_eq!((s, e["code"].as_str()), (403, Some("42501")));

    // Anon: no policy for anon, no rows, and a write is a 401.
    let (s, _, rows) = srv.rest("GET", "todos", &anon, None, &[], None).await;
    assert_eq!((s, rows), (200, json!([])));
    let (s, _, e) = srv
        .rest(
            "POST",
            "todos",
            &anon,
            None,
            &[],
            Some(json!({"task": "x"})),
        )
        .await;
    assert_eq!((s, e["code"].as_str()), (401, Some("42501")));

    // Service sees all three, B's row untouched; count header as PostgREST.
    let (s, h, rows) = srv
        .rest(
            "GET",
            "todos?select=task&order=task",
            &secret,
            None,
            &[("prefer", "count=exact")],
            None,
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(
        rows,
        json!([{"task": "a1"}, {"task": "b1"}, {"task": "b2"}])
    );
    assert_eq!(h["content-range"], "0-2/3");

    // A claim cannot be smuggled in: a token for A with role service_role
    // in app_metadata is still `authenticated`.
    let sneaky = sign(
        json!({"role": "authenticated", "aud": "authenticated", "sub": a,
        "app_metadata": {"role": "service_role"}, "exp": now() + 600}),
    );
    let (_, _, rows) = srv
        .rest("GET", "todos?select=task", &anon, Some(&sneaky), &[], None)
        .await;
    assert_eq!(rows, json!([{"task": "a1"}]));
}

#[tokio::test]
async fn views_run_as_the_caller_so_rls_of_the_base_table_applies() {
    let db = TestDb::new().await;
    let (_, anon) = db.key(KeyKind::Publishable).await;
    let srv = db.server().await;
    let (a, b) = (
        uuid::Uuid::new_v4().to_string(),
        uuid::Uuid::new_v4().to_string(),
    );
    // A migration's view, written the obvious way; and one that opts out.
    ddl(
        &db,
        &srv,
        &format!(
            "{TODOS}
            INSERT INTO todos (owner, task) VALUES ('{a}', 'a1'), ('{b}', 'b1');
            CREATE VIEW todos_view AS SELECT * FROM todos;
            CREATE VIEW todos_owner_view WITH (security_invoker = false) AS SELECT * FROM todos;"
        ),
    )
    .await;
    let b_id: i64 = db
        .owner()
        .await
        .query_one("SELECT id FROM todos WHERE task = 'b1'", &[])
        .await
        .unwrap()
        .get(0);
    let (ta, tb) = (user_token(&a), user_token(&b));
    let get = |bearer: Option<String>| {
        let (srv, anon) = (&srv, &anon);
        async move {
            srv.rest(
                "GET",
                "todos_view?select=task&order=task",
                anon,
                bearer.as_deref(),
                &[],
                None,
            )
            .await
        }
    };
    let (s, _, rows) = get(None).await;
    assert_eq!(
        (s, rows),
        (200, json!([])),
        "anon reads nothing through the view"
    );
    let (s, _, rows) = get(Some(ta.clone())).await;
    assert_eq!((s, rows), (200, json!([{"task": "a1"}])));

    // A cannot change B's row through the view.
    let (s, _, rows) = srv
        .rest(
            "PATCH",
            &format!("todos_view?id=eq.{b_id}"),
            &anon,
            Some(&ta),
            &[("prefer", "return=representation")],
            Some(json!({"task": "pwned"})),
        )
        .await;
    assert_eq!((s, rows), (200, json!([])));
    let (s, _, rows) = srv
        .rest(
            "PATCH",
            &format!("todos_view?id=eq.{b_id}"),
            &anon,
            None,
            &[],
            Some(json!({"task": "pwned"})),
        )
        .await;
    assert!(matches!(s, 204 | 401), "{s} {rows}");
    let task: String = db
        .owner()
        .await
        .query_one("SELECT task FROM todos WHERE id = $1", &[&b_id])
        .await
        .unwrap()
        .get(0);
    assert_eq!(task, "b1");
    // The owner of the row still can.
    let (s, _, rows) = srv
        .rest(
            "PATCH",
            &format!("todos_view?id=eq.{b_id}"),
            &anon,
            Some(&tb),
            &[("prefer", "return=representation")],
            Some(json!({"task": "b2"})),
        )
        .await;
    assert_eq!((s, rows[0]["task"].clone()), (200, json!("b2")));

    // CREATE OR REPLACE VIEW (which resets the view's options) stays invoker.
    ddl(
        &db,
        &srv,
        "CREATE OR REPLACE VIEW todos_view AS SELECT id, owner, task FROM todos",
    )
    .await;
    let (s, _, rows) = get(None).await;
    assert_eq!((s, rows), (200, json!([])));

    // The explicit opt-out is respected: that view runs as its owner.
    let (s, _, rows) = srv
        .rest(
            "GET",
            "todos_owner_view?select=task&order=task",
            &anon,
            None,
            &[],
            None,
        )
        .await;
    assert_eq!((s, rows), (200, json!([{"task": "a1"}, {"task": "b2"}])));
}

#[tokio::test]
async fn get_is_read_only_and_security_definer_runs_as_its_owner() {
    let db = TestDb::new().await;
    // Keys exist before the server starts, so its first key load has them.
    let (_, anon) = db.key(KeyKind::Publishable).await;
    let (_, secret) = db.key(KeyKind::Secret).await;
    let srv = db.server().await;
    ddl(&db, &srv, "
        CREATE TABLE secrets (id int PRIMARY KEY, v text);
        INSERT INTO secrets VALUES (1, 'top');
        CREATE FUNCTION add_secret(val text) RETURNS int LANGUAGE sql AS
          'INSERT INTO public.secrets SELECT max(id) + 1, val FROM public.secrets RETURNING id';
        CREATE FUNCTION peek_invoker() RETURNS SETOF secrets LANGUAGE sql STABLE AS 'SELECT * FROM public.secrets';
        CREATE FUNCTION peek_definer() RETURNS SETOF secrets LANGUAGE sql STABLE SECURITY DEFINER
          SET search_path = '' AS 'SELECT * FROM public.secrets';").await;

    // A volatile function through GET fails: the transaction is READ ONLY.
    let (s, _, e) = srv
        .rest("GET", "rpc/add_secret?val=x", &secret, None, &[], None)
        .await;
    assert_eq!((s, e["code"].as_str()), (405, Some("25006")));
    let (s, _, v) = srv
        .rest(
            "POST",
            "rpc/add_secret",
            &secret,
            None,
            &[],
            Some(json!({"val": "x"})),
        )
        .await;
    assert_eq!((s, v), (200, json!(2)));

    // RLS (no policies) hides the table from anon, also through an invoker function…
    let (_, _, rows) = srv.rest("GET", "secrets", &anon, None, &[], None).await;
    assert_eq!(rows, json!([]));
    let (_, _, rows) = srv
        .rest(
            "POST",
            "rpc/peek_invoker",
            &anon,
            None,
            &[],
            Some(json!({})),
        )
        .await;
    assert_eq!(rows, json!([]));
    // …but a SECURITY DEFINER function runs with its owner's rights (documented).
    let (s, _, rows) = srv
        .rest(
            "POST",
            "rpc/peek_definer?select=v&order=id",
            &anon,
            None,
            &[],
            Some(json!({})),
        )
        .await;
    assert_eq!((s, rows), (200, json!([{"v": "top"}, {"v": "x"}])));
}

#[tokio::test]
async fn profiles_max_rows_and_unfiltered_writes() {
    let db = TestDb::new().await;
    // Keys exist before the server starts, so its first key load has them.
    let (_, secret) = db.key(KeyKind::Secret).await;
    db.owner()
        .await
        .batch_execute(
            "CREATE SCHEMA api; CREATE TABLE api.things (id int PRIMARY KEY); \
            GRANT USAGE ON SCHEMA api TO anon, authenticated, service_role; \
            GRANT SELECT ON api.things TO service_role; \
            INSERT INTO api.things SELECT generate_series(1, 5);",
        )
        .await
        .unwrap();
    let srv = db
        .server_with(|c| {
            c.database.exposed_schemas = vec!["public".into(), "api".into()];
            c.database.max_rows = 3;
        })
        .await;
    let prof = [("accept-profile", "api")];
    let (s, h, rows) = srv
        .rest(
            "GET",
            "things?order=id&limit=10",
            &secret,
            None,
            &prof,
            None,
        )
        .await;
    assert_eq!((s, rows), (200, json!([{"id": 1}, {"id": 2}, {"id": 3}])));
    assert_eq!(h["content-range"], "0-2/*");
    let (s, _, e) = srv
        .rest(
            "GET",
            "things",
            &secret,
            None,
            &[("accept-profile", "auth")],
            None,
        )
        .await;
    assert_eq!((s, e["code"].as_str()), (406, Some("PGRST106")));
    let (s, _, e) = srv
        .rest(
            "GET",
            "users",
            &secret,
            None,
            &[("accept-profile", "public; drop")],
            None,
        )
        .await;
    assert_eq!((s, e["code"].as_str()), (406, Some("PGRST106")));
    let (s, _, e) = srv
        .rest(
            "DELETE",
            "things",
            &secret,
            None,
            &[("content-profile", "api")],
            None,
        )
        .await;
    assert_eq!((s, e["code"].as_str()), (400, Some("21000")));
}

#[tokio::test]
async fn hostile_input_is_a_4xx_and_the_table_survives() {
    let db = TestDb::new().await;
    // Keys exist before the server starts, so its first key load has them.
    let (_, anon) = db.key(KeyKind::Publishable).await;
    let srv = db.server().await;
    ddl(
        &db,
        &srv,
        "CREATE TABLE items (id int PRIMARY KEY, name text, data jsonb); \
        CREATE POLICY all_ ON items FOR ALL USING (true) WITH CHECK (true); \
        INSERT INTO items VALUES (1, 'a', '{\"x\": 1}');",
    )
    .await;
    let evil = "x\"; DROP TABLE items; --";
    let enc = |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
    let cases = [
        format!("items?select={}", enc(evil)),
        format!("items?select=id::{}", enc(evil)),
        format!("items?select=data->>{}", enc(evil)),
        format!("items?order={}", enc(evil)),
        format!("items?{}=eq.1", enc(evil)),
        format!("items?id={}", enc(evil)),
        format!("items?id=eq.{}", enc(evil)),
        format!("items?or=({})", enc(evil)),
        format!("items?select=*,{}(*)", enc(evil)),
        enc(evil),
        format!("rpc/{}", enc(evil)),
        "items?limit=1e9".to_string(),
        "items?id=in.(1,2".to_string(),
        "items?select=id,data->>a->b->>c->d->e->f->g->h->i->j->k->l->m->n->o->p->q->r".to_string(),
    ];
    for path in &cases {
        let (s, _, b) = srv.rest("GET", path, &anon, None, &[], None).await;
        assert!((400..500).contains(&s), "{path}: {s} {b}");
        assert!(
            b["code"].is_string() && b["message"].is_string(),
            "{path}: {b}"
        );
    }
    let (s, _, b) = srv
        .rest(
            "POST",
            &format!("items?on_conflict={}", enc(evil)),
            &anon,
            None,
            &[("prefer", "resolution=merge-duplicates")],
            Some(json!({"id": 1, "name": "b"})),
        )
        .await;
    assert!((400..500).contains(&s), "{s} {b}");
    let (s, _, b) = srv
        .rest("POST", "items", &anon, None, &[], Some(json!({evil: 1})))
        .await;
    assert_eq!((s, b["code"].as_str()), (400, Some("PGRST204")));
    let (s, _, b) = srv
        .rest(
            "POST",
            "items",
            &anon,
            None,
            &[("content-type", "application/json")],
            None,
        )
        .await;
    assert!((400..500).contains(&s), "{s} {b}");
    // A value of the wrong type is PostgreSQL's 22P02, a 400.
    let (s, _, b) = srv
        .rest("GET", "items?id=eq.abc", &anon, None, &[], None)
        .await;
    assert_eq!((s, b["code"].as_str()), (400, Some("22P02")));
    // A NUL character is a data exception (class 22): 400 with its SQLSTATE,
    // in a text column, inside JSON, or in a token's `sub`.
    for row in [
        json!({"id": 2, "name": "a\u{0}b"}),
        json!({"id": 3, "data": {"x": "\u{0}"}}),
    ] {
        let (s, _, b) = srv.rest("POST", "items", &anon, None, &[], Some(row)).await;
        assert_eq!(s, 400, "{b}");
        assert!(b["code"].as_str().unwrap().starts_with("22"), "{b}");
    }
    let (s, _, b) = srv
        .rest("GET", "items?name=eq.a%00b", &anon, None, &[], None)
        .await;
    assert!((400..500).contains(&s), "{s} {b}");
    let nul_sub = user_token("a\u{0}b");
    ddl(
        &db,
        &srv,
        "CREATE TABLE mine (id int PRIMARY KEY, owner text); ALTER TABLE mine ENABLE ROW LEVEL SECURITY; \
         CREATE POLICY own ON mine FOR SELECT USING (owner = auth.uid()::text);",
    )
    .await;
    let (s, _, b) = srv
        .rest("GET", "mine", &anon, Some(&nul_sub), &[], None)
        .await;
    assert_eq!(s, 400, "{b}");
    // Still there, still one row.
    let (s, _, rows) = srv
        .rest("GET", "items?select=id", &anon, None, &[], None)
        .await;
    assert_eq!((s, rows), (200, json!([{"id": 1}])));
}

#[tokio::test]
async fn many_to_many_null_filtered_embeds_related_order_and_any_all() {
    let db = TestDb::new().await;
    // Keys exist before the server starts, so its first key load has them.
    let (_, secret) = db.key(KeyKind::Secret).await;
    let srv = db.server().await;
    ddl(&db, &srv, "
        CREATE TABLE authors (id int PRIMARY KEY, name text);
        CREATE TABLE posts (id int PRIMARY KEY, title text, author_id int REFERENCES authors);
        CREATE TABLE tags (id int PRIMARY KEY, label text);
        CREATE TABLE post_tags (post_id int REFERENCES posts, tag_id int REFERENCES tags,
          PRIMARY KEY (post_id, tag_id));
        INSERT INTO authors VALUES (1, 'Zed'), (2, 'Ann');
        INSERT INTO posts VALUES (1, 'apple pie', 1), (2, 'banana bread', 2), (3, 'cherry tart', NULL);
        INSERT INTO tags VALUES (1, 'sweet'), (2, 'baked');
        INSERT INTO post_tags VALUES (1, 1), (1, 2), (2, 2);").await;
    let get = |p: &'static str| {
        let (srv, secret) = (&srv, secret.clone());
        async move { srv.rest("GET", p, &secret, None, &[], None).await }
    };
    // many-to-many through post_tags
    let (s, _, rows) = get("posts?select=title,tags(label)&order=id&tags.order=label").await;
    assert_eq!(s, 200, "{rows}");
    assert_eq!(
        rows[0]["tags"],
        json!([{"label": "baked"}, {"label": "sweet"}])
    );
    assert_eq!(rows[2]["tags"], json!([]));
    // null filtering on an embed: posts with / without an author
    let (_, _, rows) = get("posts?select=id,authors(name)&authors=not.is.null&order=id").await;
    assert_eq!(
        rows,
        json!([{"id": 1, "authors": {"name": "Zed"}}, {"id": 2, "authors": {"name": "Ann"}}])
    );
    let (_, _, rows) = get("posts?select=id,authors(name)&authors=is.null").await;
    assert_eq!(rows, json!([{"id": 3, "authors": null}]));
    // order by a many-to-one embed's column
    let (_, _, rows) =
        get("posts?select=id,authors(name)&authors=not.is.null&order=authors(name).asc").await;
    assert_eq!(rows[0]["id"], json!(2));
    let (s, _, e) = get("authors?select=id,posts(title)&order=posts(title)").await;
    assert_eq!((s, e["code"].as_str()), (400, Some("PGRST118")));
    // like(any) / like(all), as supabase-js likeAnyOf / likeAllOf send them
    let (_, _, rows) = get("posts?select=id&title=like(any).{*pie,*tart}&order=id").await;
    assert_eq!(rows, json!([{"id": 1}, {"id": 3}]));
    let (_, _, rows) = get("posts?select=id&title=ilike(all).{A*,*PIE}").await;
    assert_eq!(rows, json!([{"id": 1}]));
    // OpenAPI lists the tables
    let (s, _, doc) = get("").await;
    assert_eq!(s, 200);
    assert!(doc["paths"]["/posts"]["get"].is_object(), "{doc}");
    assert!(doc["definitions"]["tags"]["properties"]["label"].is_object());
}

#[tokio::test]
async fn write_preferences_and_call_edge_cases() {
    let db = TestDb::new().await;
    let (_, anon) = db.key(KeyKind::Publishable).await;
    let (_, secret) = db.key(KeyKind::Secret).await;
    let srv = db.server().await;
    ddl(
        &db,
        &srv,
        "
        CREATE TABLE inbox (id int GENERATED ALWAYS AS IDENTITY PRIMARY KEY, msg text NOT NULL);
        CREATE POLICY drop_only ON inbox FOR INSERT TO anon WITH CHECK (true);
        CREATE TABLE counters (id int PRIMARY KEY, n int NOT NULL DEFAULT 0);
        INSERT INTO counters VALUES (1, 0), (2, 0), (3, 0);
        CREATE FUNCTION nothing() RETURNS int LANGUAGE sql AS 'SELECT NULL::int';
        CREATE FUNCTION bump() RETURNS SETOF counters LANGUAGE sql AS
          'UPDATE public.counters SET n = n + 1 WHERE id = 1 RETURNING *';",
    )
    .await;

    // A write-only table: anon may insert (minimal) without any SELECT policy.
    let (s, _, b) = srv
        .rest(
            "POST",
            "inbox",
            &anon,
            None,
            &[],
            Some(json!({"msg": "hi"})),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    // …but asking for the row back needs SELECT rights.
    let (s, _, _) = srv
        .rest(
            "POST",
            "inbox",
            &anon,
            None,
            &[("prefer", "return=representation")],
            Some(json!({"msg": "hi"})),
        )
        .await;
    assert_eq!(s, 401);
    // An empty array inserts nothing.
    let (s, _, b) = srv
        .rest(
            "POST",
            "inbox",
            &secret,
            None,
            &[("prefer", "return=representation")],
            Some(json!([])),
        )
        .await;
    assert_eq!((s, b), (201, json!([])));

    // max-affected with handling=strict: too many rows is an error and nothing changes.
    let strict = [(
        "prefer",
        "handling=strict, max-affected=2, return=representation",
    )];
    let (s, _, e) = srv
        .rest(
            "PATCH",
            "counters?id=gt.0",
            &secret,
            None,
            &strict,
            Some(json!({"n": 9})),
        )
        .await;
    assert_eq!((s, e["code"].as_str()), (400, Some("PGRST124")));
    let (s, _, rows) = srv
        .rest(
            "PATCH",
            "counters?id=lt.3",
            &secret,
            None,
            &strict,
            Some(json!({"n": 5})),
        )
        .await;
    assert_eq!((s, rows.as_array().map(Vec::len)), (200, Some(2)));
    // tx=rollback answers as if committed, then rolls back.
    let rb = [("prefer", "tx=rollback, return=representation")];
    let (s, _, rows) = srv
        .rest("DELETE", "counters?id=eq.3", &secret, None, &rb, None)
        .await;
    assert_eq!((s, rows), (200, json!([{"id": 3, "n": 0}])));
    let (_, _, rows) = srv
        .rest(
            "GET",
            "counters?select=id,n&order=id",
            &secret,
            None,
            &[],
            None,
        )
        .await;
    assert_eq!(
        rows,
        json!([{"id": 1, "n": 5}, {"id": 2, "n": 5}, {"id": 3, "n": 0}])
    );
    // Unknown preferences are an error only with handling=strict.
    let (s, _, e) = srv
        .rest(
            "GET",
            "counters",
            &secret,
            None,
            &[("prefer", "handling=strict, bogus=1")],
            None,
        )
        .await;
    assert_eq!((s, e["code"].as_str()), (400, Some("PGRST122")));

    // A scalar function returning NULL answers null (not 204).
    let (s, _, v) = srv
        .rest("POST", "rpc/nothing", &secret, None, &[], Some(json!({})))
        .await;
    assert_eq!((s, v), (200, Value::Null));
    // Counting a set-returning call runs the function once.
    let (s, h, rows) = srv
        .rest(
            "POST",
            "rpc/bump?select=n",
            &secret,
            None,
            &[("prefer", "count=exact")],
            Some(json!({})),
        )
        .await;
    assert_eq!((s, rows), (200, json!([{"n": 6}])));
    assert_eq!(h["content-range"], "0-0/1");
    // Unknown select column: PostgreSQL's code, as PostgREST answers it.
    let (s, _, e) = srv
        .rest("GET", "counters?select=nope", &secret, None, &[], None)
        .await;
    assert_eq!((s, e["code"].as_str()), (400, Some("42703")));
}

#[tokio::test]
async fn answers_match_postgrest_ranges_counts_upserts_calls_embeds_and_csv() {
    let db = TestDb::new().await;
    let (_, secret) = db.key(KeyKind::Secret).await;
    let srv = db.server().await;
    ddl(
        &db,
        &srv,
        r#"
        CREATE TABLE bookings (id int PRIMARY KEY, age_range int4range);
        INSERT INTO bookings VALUES (1, '[1,10)'), (2, '[5,30)'), (3, '[20,40)');
        CREATE TABLE kv (k text PRIMARY KEY, v int);
        INSERT INTO kv VALUES ('a', 1);
        CREATE FUNCTION forty_two() RETURNS int LANGUAGE sql AS 'SELECT 42';
        CREATE FUNCTION unnamed(int) RETURNS int LANGUAGE sql AS 'SELECT $1';
        CREATE FUNCTION unnamed_json(jsonb) RETURNS jsonb LANGUAGE sql AS 'SELECT $1';
        CREATE FUNCTION one_kv() RETURNS kv LANGUAGE sql AS $$SELECT * FROM public.kv WHERE k = 'a'$$;
        CREATE TABLE users (id int PRIMARY KEY, name text);
        CREATE TABLE messages (id int PRIMARY KEY, message text, user_id int REFERENCES users);
        INSERT INTO users VALUES (1, 'Ann'), (2, 'Bob');
        INSERT INTO messages VALUES (1, 'hi', 1), (2, 'yo', 2);
        CREATE TABLE docs (id int PRIMARY KEY, title text, data jsonb, flag bool);
        INSERT INTO docs VALUES (1, 'say "hi", twice', '{"a":1,"b":[1,2]}', true),
          (2, NULL, NULL, false), (3, 'x y', '"s"', NULL);
        CREATE TABLE ids (id int GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, name text NOT NULL);
        "#,
    )
    .await;
    let get = |p: String, h: Vec<(&'static str, &'static str)>| {
        let (srv, secret) = (&srv, secret.clone());
        async move { srv.rest("GET", &p, &secret, None, &h, None).await }
    };

    // nxl is `&>` (supabase-js rangeGte), nxr is `&<` (rangeLte).
    let (s, _, rows) = get(
        "bookings?select=id&age_range=nxl.[2,25)&order=id".into(),
        vec![],
    )
    .await;
    assert_eq!((s, rows), (200, json!([{"id": 2}, {"id": 3}])));
    let (_, _, rows) = get(
        "bookings?select=id&age_range=nxr.[2,25)&order=id".into(),
        vec![],
    )
    .await;
    assert_eq!(rows, json!([{"id": 1}]));

    // A Range past 2^63 is 416 PGRST103, not a wrapped negative LIMIT.
    let (s, _, e) = get("bookings".into(), vec![("range", "0-9223372036854775807")]).await;
    assert_eq!((s, e["code"].as_str()), (416, Some("PGRST103")), "{e}");

    // count=exact on a single-value rpc: 0-0/1, for POST, GET and HEAD.
    let count = [("prefer", "count=exact")];
    let (s, h, v) = srv
        .rest(
            "POST",
            "rpc/forty_two",
            &secret,
            None,
            &count,
            Some(json!({})),
        )
        .await;
    assert_eq!((s, v), (200, json!(42)));
    assert_eq!(h["content-range"], "0-0/1");
    for method in ["GET", "HEAD"] {
        let (s, h, _) = srv
            .rest(method, "rpc/forty_two", &secret, None, &count, None)
            .await;
        assert_eq!(s, 200, "{method}");
        assert_eq!(h["content-range"], "0-0/1", "{method}");
    }

    // A merging upsert that only updated is 200; one that inserted is 201.
    let merge = [("prefer", "resolution=merge-duplicates")];
    let (s, _, b) = srv
        .rest(
            "POST",
            "kv",
            &secret,
            None,
            &merge,
            Some(json!({"k": "a", "v": 2})),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    let merge_repr = [(
        "prefer",
        "resolution=merge-duplicates,return=representation",
    )];
    let (s, _, rows) = srv
        .rest(
            "POST",
            "kv",
            &secret,
            None,
            &merge_repr,
            Some(json!({"k": "a", "v": 3})),
        )
        .await;
    assert_eq!((s, rows), (200, json!([{"k": "a", "v": 3}])));
    let (s, _, b) = srv
        .rest(
            "POST",
            "kv",
            &secret,
            None,
            &merge,
            Some(json!([{"k": "a", "v": 4}, {"k": "b", "v": 1}])),
        )
        .await;
    assert_eq!(s, 201, "{b}");

    // An argument named "" is not a parameter name: PGRST202, not a 42601.
    let (s, _, e) = srv
        .rest(
            "POST",
            "rpc/unnamed",
            &secret,
            None,
            &[],
            Some(json!({"": 5})),
        )
        .await;
    assert_eq!((s, e["code"].as_str()), (404, Some("PGRST202")), "{e}");
    // A single unnamed jsonb parameter takes the whole body.
    let (s, _, v) = srv
        .rest(
            "POST",
            "rpc/unnamed_json",
            &secret,
            None,
            &[],
            Some(json!({"": 5})),
        )
        .await;
    assert_eq!((s, v), (200, json!({"": 5})));

    // One composite row: an object; filtered away: null (406 only with the
    // single-object Accept).
    let (s, _, v) = get("rpc/one_kv?select=k".into(), vec![]).await;
    assert_eq!((s, v), (200, json!({"k": "a"})));
    let (s, _, v) = get("rpc/one_kv?k=eq.zzz".into(), vec![]).await;
    assert_eq!((s, v), (200, Value::Null));
    let (s, _, e) = get(
        "rpc/one_kv?k=eq.zzz".into(),
        vec![("accept", "application/vnd.pgrst.object+json")],
    )
    .await;
    assert_eq!((s, e["code"].as_str()), (406, Some("PGRST116")));

    // An empty embed filters but is not in the output.
    let (s, _, rows) = get("messages?select=message,users()&order=id".into(), vec![]).await;
    assert_eq!(
        (s, rows),
        (200, json!([{"message": "hi"}, {"message": "yo"}]))
    );
    let (_, _, rows) = get(
        "messages?select=message,users!inner()&users.name=eq.Bob".into(),
        vec![],
    )
    .await;
    assert_eq!(rows, json!([{"message": "yo"}]));

    // CSV is PostgreSQL's text output, quoted as PostgREST quotes it.
    let csv = vec![("accept", "text/csv")];
    let (s, h, body) = get(
        "docs?select=id,title,data,flag&order=id".into(),
        csv.clone(),
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(h["content-type"], "text/csv; charset=utf-8");
    assert_eq!(
        body,
        Value::String(
            "id,title,data,flag\n\
             1,\"say \"\"hi\"\", twice\",\"{\"\"a\"\": 1, \"\"b\"\": [1, 2]}\",t\n\
             2,,,f\n\
             3,\"x y\",\"\"\"s\"\"\","
                .into()
        )
    );
    let (_, _, body) = get("docs?select=id&id=eq.99".into(), csv.clone()).await;
    assert_eq!(body, Value::String("\n".into()));

    // A bulk insert with missing=default fills an identity column from its sequence.
    let (s, _, rows) = srv
        .rest(
            "POST",
            "ids?select=id,name",
            &secret,
            None,
            &[("prefer", "missing=default,return=representation")],
            Some(json!([{"id": 100, "name": "a"}, {"name": "b"}])),
        )
        .await;
    assert_eq!(
        (s, rows),
        (
            201,
            json!([{"id": 100, "name": "a"}, {"id": 1, "name": "b"}])
        )
    );
}

#[tokio::test]
async fn a_database_that_refuses_connections_is_pgrst001_not_a_pool_timeout() {
    let db = TestDb::new().await;
    let (_, anon) = db.key(KeyKind::Publishable).await;
    let srv = db.server().await;
    ddl(
        &db,
        &srv,
        "CREATE TABLE up (id int PRIMARY KEY); CREATE POLICY r ON up FOR SELECT USING (true);",
    )
    .await;
    let (s, _, _) = srv.rest("GET", "up", &anon, None, &[], None).await;
    assert_eq!(s, 200);
    // The database goes away for this server: new connections are refused and
    // the open ones are closed (the shared cluster keeps running).
    let admin = connect("postgres").await;
    admin
        .batch_execute(&format!(
            "ALTER DATABASE \"{}\" WITH ALLOW_CONNECTIONS false",
            db.name
        ))
        .await
        .unwrap();
    admin
        .query(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1",
            &[&db.name],
        )
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let n: i64 = admin
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = $1",
                &[&db.name],
            )
            .await
            .unwrap()
            .get(0);
        if n == 0 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "backends survived");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    // More requests than the pool holds (4), so the last ones must open a
    // connection; one handed a connection whose end it had not yet read is told
    // the server terminated it (57P01), a 503 as well.
    let mut last = Value::Null;
    for _ in 0..6 {
        let (s, _, b) = srv.rest("GET", "up", &anon, None, &[], None).await;
        assert_eq!(s, 503, "{b}");
        assert_ne!(b["code"], "PGRST003", "not a pool wait: {b}");
        last = b;
    }
    assert_eq!(last["code"], "PGRST001", "{last}");
    admin
        .batch_execute(&format!(
            "ALTER DATABASE \"{}\" WITH ALLOW_CONNECTIONS true",
            db.name
        ))
        .await
        .unwrap();
    // Back: the next requests connect again.
    let (s, _, b) = srv.rest("GET", "up", &anon, None, &[], None).await;
    assert_eq!(s, 200, "{b}");
}
