//! `/rest/v1` parity with PostgREST 12/13 against real PostgreSQL: aggregates
//! (under row-level security and the cost guard), computed fields and
//! relationships, one-to-one and self-referencing embeds, to-many spreads,
//! the relationship errors' exact shape, planned and estimated counts.
//! Behaviour follows PostgREST's docs (`docs/references/api/*.rst`) and source
//! (`Plan.hs` `findRel`, `Error.hs`), cited where it is subtle.

use crate::harness::*;
use crate::rest::ddl;
use serde_json::{json, Value};
use wasmbase_host_api::keys::KeyKind;

const SHOP: &str = "
    CREATE TABLE customers (id int PRIMARY KEY, name text, city text);
    CREATE TABLE orders (id int PRIMARY KEY, customer_id int REFERENCES customers,
      owner uuid, amount numeric, order_date date, details jsonb);
    CREATE INDEX ON orders (customer_id);
    CREATE POLICY read ON customers FOR SELECT USING (true);
    -- Each user sees their own orders; anon sees none.
    CREATE POLICY own ON orders FOR SELECT TO authenticated USING (owner = auth.uid());
    INSERT INTO customers VALUES (1, 'Ann', 'Oslo'), (2, 'Bob', 'Rome'), (3, 'Cid', 'Oslo');
    INSERT INTO orders VALUES
      (1, 1, '00000000-0000-0000-0000-00000000000a', 10.5, '2024-01-01', '{\"tax\": 1}'),
      (2, 1, '00000000-0000-0000-0000-00000000000a', 20, '2024-01-02', '{\"tax\": 2}'),
      (3, 2, '00000000-0000-0000-0000-00000000000a', 5, '2024-01-01', '{\"tax\": 3}'),
      (4, 2, '00000000-0000-0000-0000-00000000000b', 100, '2024-01-01', '{\"tax\": 4}'),
      (5, NULL, '00000000-0000-0000-0000-00000000000a', NULL, '2024-01-03', NULL);";

const USER_A: &str = "00000000-0000-0000-0000-00000000000a";

#[tokio::test]
async fn aggregates_group_cast_embed_and_respect_rls() {
    let db = TestDb::new().await;
    let (_, anon) = db.key(KeyKind::Publishable).await;
    let (_, secret) = db.key(KeyKind::Secret).await;
    let srv = db.server().await;
    ddl(&db, &srv, SHOP).await;
    let a = user_token(USER_A);
    let get = |path, bearer| get_as(&srv, &anon, bearer, path, &[]);

    // count() alone: the rows the caller may see (RLS), never more.
    let (s, _, b) = get("orders?select=count()", Some(&a)).await;
    assert_eq!((s, b), (200, json!([{"count": 4}])));
    let (_, _, b) = get("orders?select=count()", None).await;
    assert_eq!(b, json!([{"count": 0}]), "anon sees no order");
    let (_, _, b) = srv
        .rest("GET", "orders?select=count()", &secret, None, &[], None)
        .await;
    assert_eq!(b, json!([{"count": 5}]));

    // Grouping by the other selected columns, aliases, casts before and after
    // (PostgREST docs: aggregate_functions.rst).
    let (s, _, b) = get(
        "orders?select=order_date,total:amount.sum(),n:count(),amount.avg()::int,details->tax::numeric.max()&order=order_date",
        Some(&a),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(
        b,
        json!([
            {"order_date": "2024-01-01", "total": 15.5, "n": 2, "avg": 8, "max": 3},
            {"order_date": "2024-01-02", "total": 20, "n": 1, "avg": 20, "max": 2},
            {"order_date": "2024-01-03", "total": null, "n": 1, "avg": null, "max": null}
        ])
    );
    // count(col) counts values, count() rows.
    let (_, _, b) = get("orders?select=values:amount.count(),rows:count()", Some(&a)).await;
    assert_eq!(b, json!([{"values": 3, "rows": 4}]));

    // Inside an embedded resource: per parent, RLS applied to the children.
    let (s, _, b) = get(
        "customers?select=name,orders(amount.sum(),count())&order=id",
        Some(&a),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(
        b,
        json!([
            {"name": "Ann", "orders": [{"sum": 30.5, "count": 2}]},
            {"name": "Bob", "orders": [{"sum": 5, "count": 1}]},
            {"name": "Cid", "orders": [{"sum": null, "count": 0}]}
        ])
    );
    // Grouped by a to-one embed, and by a to-one spread (hoisting).
    let (s, _, b) = get(
        "orders?select=amount.sum(),customers(city)&customer_id=not.is.null",
        Some(&a),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    let mut groups: Vec<Value> = b.as_array().unwrap().clone();
    groups.sort_by_key(|g| g["customers"]["city"].as_str().unwrap_or("").to_string());
    assert_eq!(
        groups,
        vec![
            json!({"sum": 30.5, "customers": {"city": "Oslo"}}),
            json!({"sum": 5, "customers": {"city": "Rome"}})
        ]
    );
    let (s, _, b) = get(
        "orders?select=order_date,...customers(name.max())&order=order_date",
        Some(&a),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(
        b,
        json!([
            {"order_date": "2024-01-01", "max": "Bob"},
            {"order_date": "2024-01-02", "max": "Ann"},
            {"order_date": "2024-01-03", "max": null}
        ])
    );
    // Legacy `count` (supabase-js `posts(count)`), with an exact count header
    // counting groups.
    let (s, h, b) = srv
        .rest(
            "GET",
            "customers?select=name,orders(count)&order=id&limit=1",
            &anon,
            Some(&a),
            &[("prefer", "count=exact")],
            None,
        )
        .await;
    assert_eq!(s, 206, "{b}");
    assert_eq!(h["content-range"], "0-0/3");
    assert_eq!(b, json!([{"name": "Ann", "orders": [{"count": 2}]}]));
    let (_, h, _) = srv
        .rest(
            "GET",
            "orders?select=order_date,count()",
            &anon,
            Some(&a),
            &[("prefer", "count=exact")],
            None,
        )
        .await;
    // The count is of the rows aggregated (PostgREST's count ignores the
    // GROUP BY): three groups of the user's four orders.
    assert_eq!(h["content-range"], "0-2/4");
    // A JSON path grouped and ordered by (one parameter per key text).
    let (s, _, b) = get(
        "orders?select=tax:details->>tax,count()&order=details->>tax&limit=2",
        Some(&a),
    )
    .await;
    assert_eq!(
        (s, b),
        (
            200,
            json!([{"tax": "1", "count": 1}, {"tax": "2", "count": 1}])
        )
    );

    // Hostile or unknown input: PostgREST's error shape, never a 500.
    for (path, code) in [
        ("orders?select=nope.sum()", "42703"),
        ("orders?select=amount.median()", "PGRST100"),
        ("orders?select=amount.sum()::nosuchtype", "PGRST100"),
        ("orders?select=amount.sum();drop table orders()", "PGRST100"),
    ] {
        let (s, _, b) = get(path, Some(&a)).await;
        assert!((400..500).contains(&s), "{path}: {s} {b}");
        assert_eq!(b["code"], code, "{path}: {b}");
    }
    // The rows of a write are not aggregated (PGRST127); its embeds may be.
    let (s, _, b) = srv
        .rest(
            "POST",
            "customers?select=count()",
            &secret,
            None,
            &[("prefer", "return=representation")],
            Some(json!({"id": 9, "name": "Dee"})),
        )
        .await;
    assert_eq!((s, b["code"].as_str()), (400, Some("PGRST127")), "{b}");
}

#[tokio::test]
async fn the_cost_guard_refuses_expensive_aggregates_for_request_roles() {
    let db = TestDb::new().await;
    let (_, anon) = db.key(KeyKind::Publishable).await;
    let (_, secret) = db.key(KeyKind::Secret).await;
    let srv = db.server().await;
    // Children without an index on their parent key: each parent's sum is a
    // scan of every child, so the plan's cost is parents × children.
    ddl(
        &db,
        &srv,
        "CREATE TABLE parents (id int PRIMARY KEY, name text);
         CREATE TABLE children (id int PRIMARY KEY, parent_id int REFERENCES parents, amount int);
         CREATE POLICY read ON parents FOR SELECT USING (true);
         CREATE POLICY read ON children FOR SELECT USING (true);
         INSERT INTO parents SELECT g, 'p' || g FROM generate_series(1, 1000) g;
         INSERT INTO children SELECT g, 1 + g % 1000, g FROM generate_series(1, 10000) g;
         ANALYZE parents; ANALYZE children;",
    )
    .await;
    // A cheap value of a shape does not clear an expensive value of it: the
    // estimate is per request values.
    let (s, _, b) = srv
        .rest(
            "GET",
            "parents?select=name,children(amount.sum())&id=gt.999&order=id",
            &anon,
            None,
            &[],
            None,
        )
        .await;
    assert_eq!(
        (s, b),
        (
            200,
            json!([{"name": "p1000", "children": [{"sum": 54990}]}])
        )
    );
    let (s, _, b) = srv
        .rest(
            "GET",
            "parents?select=name,children(amount.sum())&id=gt.0&order=id",
            &anon,
            None,
            &[],
            None,
        )
        .await;
    assert_eq!(
        (s, b["code"].as_str()),
        (400, Some("WB_AGGREGATE_COST")),
        "{b}"
    );
    let path = "parents?select=name,children(amount.sum())&order=id&limit=1000";
    let (s, _, b) = srv.rest("GET", path, &anon, None, &[], None).await;
    assert_eq!(
        (s, b["code"].as_str()),
        (400, Some("WB_AGGREGATE_COST")),
        "{b}"
    );
    assert!(
        b["details"]
            .as_str()
            .unwrap()
            .contains("aggregate_max_cost"),
        "{b}"
    );
    // The same shape again is refused from the guard's cache, as before.
    let (s, _, b) = srv.rest("GET", path, &anon, None, &[], None).await;
    assert_eq!((s, b["code"].as_str()), (400, Some("WB_AGGREGATE_COST")));
    // service_role is not limited.
    let (s, _, b) = srv.rest("GET", path, &secret, None, &[], None).await;
    assert_eq!(s, 200, "{b}");
    // Parent 1's children are 1000, 2000, … 10000.
    assert_eq!(b[0], json!({"name": "p1", "children": [{"sum": 55000}]}));
    // An index makes it cheap: a new schema version, a new estimate.
    ddl(
        &db,
        &srv,
        "CREATE INDEX ON children (parent_id); ANALYZE children;",
    )
    .await;
    let (s, _, b) = srv.rest("GET", path, &anon, None, &[], None).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b.as_array().unwrap().len(), 1000);
    // Without aggregates nothing is estimated, whatever the cost.
    let (s, _, _) = srv
        .rest(
            "GET",
            "parents?select=name,children(amount)&limit=5",
            &anon,
            None,
            &[],
            None,
        )
        .await;
    assert_eq!(s, 200);
}

#[tokio::test]
async fn aggregates_can_be_turned_off() {
    let db = TestDb::new().await;
    let (_, secret) = db.key(KeyKind::Secret).await;
    let srv = db.server_with(|c| c.data.aggregates = false).await;
    ddl(
        &db,
        &srv,
        "CREATE TABLE t (id int PRIMARY KEY, count int); INSERT INTO t VALUES (1, 7);",
    )
    .await;
    let (s, _, b) = srv
        .rest("GET", "t?select=count()", &secret, None, &[], None)
        .await;
    assert_eq!(
        (s, b["code"].as_str(), b["message"].as_str()),
        (
            400,
            Some("PGRST123"),
            Some("Use of aggregate functions is not allowed")
        )
    );
    // A column called `count` stays a column.
    let (s, _, b) = srv
        .rest("GET", "t?select=count", &secret, None, &[], None)
        .await;
    assert_eq!((s, b), (200, json!([{"count": 7}])));
}

#[tokio::test]
async fn computed_fields_and_relationships() {
    let db = TestDb::new().await;
    let (_, anon) = db.key(KeyKind::Publishable).await;
    let (_, secret) = db.key(KeyKind::Secret).await;
    let srv = db.server().await;
    ddl(
        &db,
        &srv,
        "CREATE TABLE people (id int PRIMARY KEY, first_name text, last_name text, boss_id int);
         CREATE POLICY read ON people FOR SELECT USING (true);
         INSERT INTO people VALUES (1, 'Ada', 'Lovelace', NULL), (2, 'Alan', 'Turing', 1),
           (3, 'Grace', 'Hopper', 1);
         CREATE FUNCTION full_name(people) RETURNS text LANGUAGE sql STABLE AS
           $$ SELECT $1.first_name || ' ' || $1.last_name $$;
         CREATE FUNCTION fragile(people) RETURNS int LANGUAGE plpgsql STABLE AS
           $$ BEGIN IF $1.id = 3 THEN RAISE EXCEPTION 'no %', $1.id; END IF; RETURN $1.id; END $$;
         -- Computed relationships (PostgREST docs: resource_embedding.rst).
         CREATE FUNCTION boss(people) RETURNS SETOF people ROWS 1 LANGUAGE sql STABLE AS
           $$ SELECT * FROM people WHERE id = $1.boss_id $$;
         CREATE FUNCTION reports(people) RETURNS SETOF people LANGUAGE sql STABLE AS
           $$ SELECT * FROM people WHERE boss_id = $1.id $$;",
    )
    .await;
    let get = |path| get_as(&srv, &anon, None, path, &[]);
    // In select (not in `*`), filters (with full-text search) and order.
    let (s, _, b) = get("people?select=id,full_name&full_name=fts.Turing").await;
    assert_eq!(
        (s, b),
        (200, json!([{"id": 2, "full_name": "Alan Turing"}]))
    );
    let (_, _, b) = get("people?select=name:full_name&order=full_name.desc&limit=1").await;
    assert_eq!(b, json!([{"name": "Grace Hopper"}]));
    let (_, _, b) = get("people?id=eq.1").await;
    assert!(b[0].get("full_name").is_none(), "not part of *: {b}");
    // A computed field that raises: the database's error, a 400.
    let (s, _, b) = get("people?select=fragile").await;
    assert_eq!((s, b["code"].as_str()), (400, Some("P0001")), "{b}");
    assert_eq!(b["message"], "no 3");
    // Computed relationships: ROWS 1 is to-one, SETOF to-many.
    let (s, _, b) =
        get("people?select=first_name,boss(first_name),reports(first_name)&order=id").await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(
        b,
        json!([
            {"first_name": "Ada", "boss": null, "reports": [{"first_name": "Alan"}, {"first_name": "Grace"}]},
            {"first_name": "Alan", "boss": {"first_name": "Ada"}, "reports": []},
            {"first_name": "Grace", "boss": {"first_name": "Ada"}, "reports": []}
        ])
    );
    // A merging upsert returns computed fields of the written rows.
    let (s, _, b) = srv
        .rest(
            "POST",
            "people?select=id,full_name&on_conflict=id",
            &secret,
            None,
            &[(
                "prefer",
                "resolution=merge-duplicates,return=representation",
            )],
            Some(json!({"id": 1, "first_name": "Ada", "last_name": "King"})),
        )
        .await;
    assert_eq!((s, b), (200, json!([{"id": 1, "full_name": "Ada King"}])));
    // …filterable like any embed.
    let (_, _, b) =
        get("people?select=first_name,reports!inner(first_name)&reports.first_name=eq.Grace").await;
    assert_eq!(
        b,
        json!([{"first_name": "Ada", "reports": [{"first_name": "Grace"}]}])
    );
}

#[tokio::test]
async fn one_to_one_self_reference_spreads_and_relationship_errors() {
    let db = TestDb::new().await;
    let (_, anon) = db.key(KeyKind::Publishable).await;
    let srv = db.server().await;
    ddl(
        &db,
        &srv,
        "CREATE TABLE films (id int PRIMARY KEY, title text);
         CREATE TABLE technical_specs (film_id int PRIMARY KEY REFERENCES films, camera text);
         CREATE TABLE employees (id int PRIMARY KEY, name text, supervisor_id int REFERENCES employees);
         CREATE TABLE addresses (id int PRIMARY KEY, city text);
         CREATE TABLE shipments (id int PRIMARY KEY,
           billing_address_id int CONSTRAINT billing REFERENCES addresses,
           shipping_address_id int CONSTRAINT shipping REFERENCES addresses);
         CREATE POLICY r ON films FOR SELECT USING (true);
         CREATE POLICY r ON technical_specs FOR SELECT USING (true);
         CREATE POLICY r ON employees FOR SELECT USING (true);
         CREATE POLICY r ON addresses FOR SELECT USING (true);
         CREATE POLICY r ON shipments FOR SELECT USING (true);
         INSERT INTO films VALUES (1, 'Pulp Fiction'), (2, 'Alien');
         INSERT INTO technical_specs VALUES (1, 'Arriflex');
         INSERT INTO employees VALUES (1, 'Taylor', NULL), (2, 'Johnson', 1), (3, 'Miller', 1);
         INSERT INTO addresses VALUES (1, 'Oslo'), (2, 'Rome');
         INSERT INTO shipments VALUES (1, 1, 2);",
    )
    .await;
    let get = |path| get_as(&srv, &anon, None, path, &[]);
    // One-to-one from the referenced side is an object, and spreadable.
    let (s, _, b) = get("films?select=title,technical_specs(camera)&order=id").await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(
        b,
        json!([
            {"title": "Pulp Fiction", "technical_specs": {"camera": "Arriflex"}},
            {"title": "Alien", "technical_specs": null}
        ])
    );
    let (_, _, b) = get("films?select=title,...technical_specs(camera)&id=eq.1").await;
    assert_eq!(b, json!([{"title": "Pulp Fiction", "camera": "Arriflex"}]));

    // Self-reference (Plan.hs findRel): the table's name is the one-to-many,
    // the key's column the many-to-one; no PGRST201.
    let (s, _, b) = get(
        "employees?select=name,supervisor:supervisor_id(name),reports:employees(name)&order=id",
    )
    .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(
        b,
        json!([
            {"name": "Taylor", "supervisor": null, "reports": [{"name": "Johnson"}, {"name": "Miller"}]},
            {"name": "Johnson", "supervisor": {"name": "Taylor"}, "reports": []},
            {"name": "Miller", "supervisor": {"name": "Taylor"}, "reports": []}
        ])
    );
    let (s, _, b) = get("employees?select=name,employees!supervisor_id(name)&id=eq.1").await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b[0]["employees"].as_array().unwrap().len(), 2);

    // A to-many spread (PostgREST 13): each value becomes an array.
    let (s, _, b) =
        get("employees?select=name,...employees(report:name)&id=eq.1&employees.order=name.desc")
            .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(
        b,
        json!([{"name": "Taylor", "report": ["Miller", "Johnson"]}])
    );
    // A spread of nothing adds nothing (and binds nothing).
    let (s, _, b) =
        get("employees?select=name,...employees(employees())&employees.limit=1&id=eq.1").await;
    assert_eq!((s, b), (200, json!([{"name": "Taylor"}])));
    // …in the embed's range too.
    let (_, _, b) = get("employees?select=name,...employees(report:name)&id=eq.1&employees.order=name.desc&employees.limit=1&employees.offset=1").await;
    assert_eq!(b, json!([{"name": "Taylor", "report": ["Johnson"]}]));

    // Two keys to one table: PGRST201 with PostgREST's details and hint…
    let (s, _, b) = get("shipments?select=addresses(city)").await;
    assert_eq!(s, 300, "{b}");
    assert_eq!(
        b,
        json!({
            "code": "PGRST201",
            "message": "Could not embed because more than one relationship was found for 'shipments' and 'addresses'",
            "details": [
                {"cardinality": "many-to-one", "embedding": "shipments with addresses",
                 "relationship": "billing using shipments(billing_address_id) and addresses(id)"},
                {"cardinality": "many-to-one", "embedding": "shipments with addresses",
                 "relationship": "shipping using shipments(shipping_address_id) and addresses(id)"}
            ],
            "hint": "Try changing 'addresses' to one of the following: 'addresses!billing', 'addresses!shipping'. Find the desired relationship in the 'details' key."
        })
    );
    // …resolved by constraint or column, from either side.
    let (_, _, b) = get("shipments?select=to:addresses!shipping(city)").await;
    assert_eq!(b, json!([{"to": {"city": "Rome"}}]));
    let (_, _, b) = get("addresses?select=city,shipments!billing(id)&order=id").await;
    assert_eq!(
        b,
        json!([{"city": "Oslo", "shipments": [{"id": 1}]}, {"city": "Rome", "shipments": []}])
    );
    // Other request errors, word for word (PostgREST's Error.hs).
    let (s, _, b) = get("films?select=title&technical_specs.camera=eq.x").await;
    assert_eq!(
        (s, b),
        (
            400,
            json!({
                "code": "PGRST108",
                "message": "'technical_specs' is not an embedded resource in this request",
                "details": null,
                "hint": "Verify that 'technical_specs' is included in the 'select' query parameter."
            })
        )
    );
    let (s, _, b) = get("films?select=title,technical_specs(camera)&technical_specs=eq.x").await;
    assert_eq!((s, b["code"].as_str()), (400, Some("PGRST120")), "{b}");
    assert_eq!(
        b["message"],
        "Bad operator on the 'technical_specs' embedded resource"
    );
    let (s, _, b) = get("employees?select=name,employees(name)&order=employees(name)").await;
    assert_eq!((s, b["code"].as_str()), (400, Some("PGRST118")), "{b}");
    assert_eq!(
        b["details"],
        "'employees' and 'employees' do not form a many-to-one or one-to-one relationship"
    );
    let (s, _, b) = get("filmz").await;
    assert_eq!((s, b["code"].as_str()), (404, Some("PGRST205")));
    assert_eq!(b["hint"], "Perhaps you meant the table 'public.films'");
    let (s, _, b) = srv
        .rest(
            "GET",
            "films",
            &anon,
            None,
            &[("accept", "application/vnd.pgrst.object+json")],
            None,
        )
        .await;
    assert_eq!(
        (s, b["message"].as_str(), b["details"].as_str()),
        (
            406,
            Some("Cannot coerce the result to a single JSON object"),
            Some("The result contains 2 rows")
        )
    );
    // PGRST200 with the "Perhaps you meant" hint.
    let (s, _, b) = get("films?select=technical_spec(camera)").await;
    assert_eq!(
        (s, b),
        (
            400,
            json!({
                "code": "PGRST200",
                "message": "Could not find a relationship between 'films' and 'technical_spec' in the schema cache",
                "details": "Searched for a foreign key relationship between 'films' and 'technical_spec' in the schema 'public', but no matches were found.",
                "hint": "Perhaps you meant 'technical_specs' instead of 'technical_spec'."
            })
        )
    );
}

#[tokio::test]
async fn planned_and_estimated_counts() {
    let db = TestDb::new().await;
    let (_, anon) = db.key(KeyKind::Publishable).await;
    let srv = db.server().await;
    ddl(
        &db,
        &srv,
        "CREATE TABLE big (id int PRIMARY KEY, even bool);
         CREATE TABLE small (id int PRIMARY KEY);
         CREATE POLICY r ON big FOR SELECT USING (true);
         CREATE POLICY r ON small FOR SELECT USING (true);
         INSERT INTO big SELECT g, g % 2 = 0 FROM generate_series(1, 3000) g;
         INSERT INTO small SELECT generate_series(1, 5);
         ANALYZE big; ANALYZE small;",
    )
    .await;
    let count = |path: &'static str, prefer: &'static str| {
        let (srv, anon) = (&srv, anon.clone());
        async move {
            let (s, h, b) = srv
                .rest("GET", path, &anon, None, &[("prefer", prefer)], None)
                .await;
            assert!(s == 200 || s == 206, "{s} {b}");
            let range = h["content-range"].to_str().unwrap().to_string();
            let total: i64 = range.rsplit('/').next().unwrap().parse().unwrap();
            (s, total, b.as_array().map_or(0, Vec::len))
        }
    };
    // planned: the planner's estimate of the filtered rows (statistics from
    // ANALYZE), as PostgREST; 206 as the page is partial.
    let (s, total, rows) = count("big?select=id&limit=10", "count=planned").await;
    assert_eq!((s, rows), (206, 10));
    assert_eq!(total, 3000);
    let (_, total, _) = count("big?select=id&even=is.true&limit=10", "count=planned").await;
    assert!((1000..=2000).contains(&total), "estimate of half: {total}");
    // estimated: exact up to max_rows (1000), the estimate above it.
    let (s, total, rows) = count("small?select=id&limit=2", "count=estimated").await;
    assert_eq!((s, total, rows), (206, 5, 2));
    let (_, total, _) = count("big?select=id&id=lte.999", "count=estimated").await;
    assert_eq!(total, 999, "below the threshold the count is exact");
    let (_, total, _) = count("big?select=id&limit=1", "count=estimated").await;
    assert_eq!(total, 3000);
}

#[tokio::test]
async fn embedding_through_views_follows_their_columns_to_base_keys() {
    let db = TestDb::new().await;
    let (_, anon) = db.key(KeyKind::Publishable).await;
    let srv = db.server().await;
    // PostgREST's schema isolation pattern: tables in a private schema,
    // views (renaming columns, views of views) in the exposed one.
    ddl(
        &db,
        &srv,
        "CREATE SCHEMA private;
         CREATE TABLE private.directors (id int PRIMARY KEY, name text);
         CREATE TABLE private.films (id int PRIMARY KEY, title text,
           director_id int REFERENCES private.directors);
         INSERT INTO private.directors VALUES (1, 'Lynch'), (2, 'Varda');
         INSERT INTO private.films VALUES (1, 'Dune', 1), (2, 'Eraserhead', 1), (3, 'Cleo', 2);
         CREATE VIEW public.directors AS SELECT id, name FROM private.directors;
         CREATE VIEW public.films AS SELECT id AS film_id, title, director_id AS made_by FROM private.films;
         CREATE VIEW public.lynch_films AS SELECT film_id, title, made_by FROM public.films WHERE made_by = 1;
         -- Renamed after the fact: the rule keeps the old name, the view the new.
         ALTER VIEW public.films RENAME COLUMN made_by TO director_ref;
         -- A subquery column whose own column is also called id: only the
         -- view's top-level columns count.
         CREATE VIEW public.film_cards AS SELECT f.id, f.title,
           (SELECT d.id FROM private.directors d WHERE d.id = f.director_id) AS director
           FROM private.films f ORDER BY f.title;
         CREATE TABLE public.screenings (id int PRIMARY KEY, film int REFERENCES private.films, city text);
         CREATE POLICY r ON public.screenings FOR SELECT USING (true);
         INSERT INTO public.screenings VALUES (1, 1, 'Oslo'), (2, 3, 'Rome');
         GRANT USAGE ON SCHEMA private TO anon;
         GRANT SELECT ON ALL TABLES IN SCHEMA private TO anon;",
    )
    .await;
    let get = |path| get_as(&srv, &anon, None, path, &[]);
    // View to view, both directions, through renamed columns.
    let (s, _, b) = get("films?select=title,directors(name)&order=film_id").await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(
        b,
        json!([
            {"title": "Dune", "directors": {"name": "Lynch"}},
            {"title": "Eraserhead", "directors": {"name": "Lynch"}},
            {"title": "Cleo", "directors": {"name": "Varda"}}
        ])
    );
    let (s, _, b) = get("directors?select=name,films(title)&order=id&films.order=title").await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(
        b[0],
        json!({"name": "Lynch", "films": [{"title": "Dune"}, {"title": "Eraserhead"}]})
    );
    // A view of a view.
    let (s, _, b) = get("lynch_films?select=title,directors(name)&order=film_id&limit=1").await;
    assert_eq!(
        (s, b),
        (
            200,
            json!([{"title": "Dune", "directors": {"name": "Lynch"}}])
        )
    );
    // Table to view and view to table.
    let (s, _, b) = get("screenings?select=city,films(title)&order=id").await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(
        b,
        json!([{"city": "Oslo", "films": {"title": "Dune"}}, {"city": "Rome", "films": {"title": "Cleo"}}])
    );
    let (s, _, b) = get("films?select=title,screenings(city)&film_id=eq.3").await;
    assert_eq!(
        (s, b),
        (
            200,
            json!([{"title": "Cleo", "screenings": [{"city": "Rome"}]}])
        )
    );
    let (s, _, b) = get("screenings?select=city,film_cards(title)&order=id").await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(
        b,
        json!([{"city": "Oslo", "film_cards": {"title": "Dune"}}, {"city": "Rome", "film_cards": {"title": "Cleo"}}])
    );
    // Two views of one table are two relationships to choose from.
    let (s, _, b) = get("screenings?select=city,lynch_films(title)&order=id").await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b[1]["lynch_films"], json!(null));
}

#[tokio::test]
async fn rpc_raw_bodies_variadic_overloads_and_postgrest_errors() {
    let db = TestDb::new().await;
    let (_, anon) = db.key(KeyKind::Publishable).await;
    let srv = db.server().await;
    ddl(
        &db,
        &srv,
        r#"CREATE FUNCTION shout(text) RETURNS text LANGUAGE sql AS $$ SELECT upper($1) $$;
         CREATE FUNCTION size_of(bytea) RETURNS int LANGUAGE sql AS $$ SELECT length($1) $$;
         CREATE FUNCTION root_of(xml) RETURNS text LANGUAGE sql AS
           $$ SELECT (xpath('name(/*)', $1))[1]::text $$;
         CREATE FUNCTION keys_of(json) RETURNS text LANGUAGE sql AS
           $$ SELECT string_agg(k, ',' ORDER BY k) FROM json_object_keys($1) k $$;
         CREATE FUNCTION wrap(payload jsonb) RETURNS jsonb LANGUAGE sql AS
           $$ SELECT jsonb_build_object('got', payload) $$;
         CREATE FUNCTION joined(VARIADIC parts text[]) RETURNS text LANGUAGE sql AS
           $$ SELECT array_to_string(parts, '-') $$;
         CREATE FUNCTION pick(a int) RETURNS text LANGUAGE sql AS $$ SELECT 'a' $$;
         CREATE FUNCTION pick(b int, c int DEFAULT 0) RETURNS text LANGUAGE sql AS $$ SELECT 'b' $$;
         CREATE FUNCTION twin(x int) RETURNS text LANGUAGE sql AS $$ SELECT 'int' $$;
         CREATE FUNCTION twin(x text) RETURNS text LANGUAGE sql AS $$ SELECT 'text' $$;
         CREATE FUNCTION series(n int) RETURNS SETOF int LANGUAGE sql AS
           $$ SELECT generate_series(1, n) $$;"#,
    )
    .await;
    let url = |p: &str| format!("{}/rest/v1/{p}", srv.url);
    let post = |p: &str, ct: &'static str, body: Vec<u8>| {
        srv.http
            .post(url(p))
            .header("apikey", &anon)
            .header("content-type", ct)
            .body(body)
            .send()
    };
    // A raw body for a single unnamed text, bytea, xml or json parameter.
    let r = post("rpc/shout", "text/plain", b"hello".to_vec())
        .await
        .unwrap();
    assert_eq!(r.json::<Value>().await.unwrap(), json!("HELLO"));
    let r = post(
        "rpc/size_of",
        "application/octet-stream",
        vec![0, 159, 146, 150, 255],
    )
    .await
    .unwrap();
    assert_eq!(r.json::<Value>().await.unwrap(), json!(5));
    let r = post(
        "rpc/root_of",
        "text/xml",
        b"<note><to>x</to></note>".to_vec(),
    )
    .await
    .unwrap();
    assert_eq!(r.json::<Value>().await.unwrap(), json!("note"));
    let r = post(
        "rpc/keys_of",
        "application/json",
        br#"{"b":1,"a":2}"#.to_vec(),
    )
    .await
    .unwrap();
    assert_eq!(r.json::<Value>().await.unwrap(), json!("a,b"));
    // Prefer: params=single-object passes the whole body to a named json parameter.
    let (s, h, b) = srv
        .rest(
            "POST",
            "rpc/wrap",
            &anon,
            None,
            &[("prefer", "params=single-object")],
            Some(json!({"x": 1})),
        )
        .await;
    assert_eq!((s, b), (200, json!({"got": {"x": 1}})));
    assert!(h["preference-applied"]
        .to_str()
        .unwrap()
        .contains("params=single-object"));
    // Variadic: a JSON array, or repeated GET parameters.
    let (_, _, b) = srv
        .rest(
            "POST",
            "rpc/joined",
            &anon,
            None,
            &[],
            Some(json!({"parts": ["a", "b", "c"]})),
        )
        .await;
    assert_eq!(b, json!("a-b-c"));
    let (_, _, b) = srv
        .rest("GET", "rpc/joined?parts=x&parts=y", &anon, None, &[], None)
        .await;
    assert_eq!(b, json!("x-y"));
    // Overloads are told apart by argument names…
    let (_, _, b) = srv
        .rest("GET", "rpc/pick?b=1", &anon, None, &[], None)
        .await;
    assert_eq!(b, json!("b"));
    // …and same names are PGRST203, listed as PostgREST lists them.
    let (s, _, b) = srv
        .rest("GET", "rpc/twin?x=1", &anon, None, &[], None)
        .await;
    assert_eq!(s, 300, "{b}");
    assert_eq!(b["code"], "PGRST203");
    let msg = b["message"].as_str().unwrap();
    assert!(
        msg.starts_with("Could not choose the best candidate function between: ")
            && msg.contains("public.twin(x => integer)")
            && msg.contains("public.twin(x => text)"),
        "{msg}"
    );
    // Unknown parameters and functions: PGRST202 with PostgREST's texts and hints.
    let (s, _, b) = srv
        .rest("GET", "rpc/pick?zzzzzz=1&c=1", &anon, None, &[], None)
        .await;
    assert_eq!(
        (s, b),
        (
            404,
            json!({
                "code": "PGRST202",
                "message": "Could not find the function public.pick(c, zzzzzz) in the schema cache",
                "details": "Searched for the function public.pick with parameters c, zzzzzz, but no matches were found in the schema cache.",
                "hint": null
            })
        )
    );
    let (_, _, b) = srv
        .rest("POST", "rpc/pick", &anon, None, &[], Some(json!({"aa": 1})))
        .await;
    assert_eq!(
        b["details"],
        "Searched for the function public.pick with parameter aa or with a single unnamed json/jsonb parameter, but no matches were found in the schema cache."
    );
    assert_eq!(
        b["hint"],
        "Perhaps you meant to call the function public.pick(a)"
    );
    let (_, _, b) = srv.rest("GET", "rpc/shoutt", &anon, None, &[], None).await;
    assert_eq!(
        b["message"],
        "Could not find the function public.shoutt without parameters in the schema cache"
    );
    assert_eq!(
        b["hint"],
        "Perhaps you meant to call the function public.shout"
    );
    // A set-returning function with a count.
    let (s, h, b) = srv
        .rest(
            "GET",
            "rpc/series?n=5&limit=2",
            &anon,
            None,
            &[("prefer", "count=exact")],
            None,
        )
        .await;
    assert_eq!((s, b), (206, json!([1, 2])));
    assert_eq!(h["content-range"], "0-1/5");
    // Other PostgREST errors, word for word.
    let (s, _, b) = srv.rest("PUT", "rpc/shout", &anon, None, &[], None).await;
    assert_eq!(
        (s, b["code"].as_str(), b["message"].as_str()),
        (
            405,
            Some("PGRST101"),
            Some("Cannot use the PUT method on RPC")
        )
    );
    let (s, _, b) = srv.rest("GET", "shouts", &anon, None, &[], None).await;
    assert_eq!((s, b["code"].as_str()), (404, Some("PGRST205")));
    let (s, _, b) = srv
        .rest("GET", "nothing/here", &anon, None, &[], None)
        .await;
    assert_eq!(
        (s, b["code"].as_str(), b["message"].as_str()),
        (
            404,
            Some("PGRST125"),
            Some("Invalid path specified in request URL")
        )
    );
}

#[tokio::test]
async fn media_types_plans_and_stripped_nulls() {
    let db = TestDb::new().await;
    let (_, anon) = db.key(KeyKind::Publishable).await;
    let (_, secret) = db.key(KeyKind::Secret).await;
    let srv = db.server().await;
    let planning = db.server_with(|c| c.data.plan_enabled = true).await;
    let seen = planning.schema_version();
    ddl(
        &db,
        &srv,
        "CREATE TABLE notes (id int PRIMARY KEY, body text, tag text);
         CREATE POLICY r ON notes FOR SELECT USING (true);
         INSERT INTO notes VALUES (1, 'a', NULL), (2, NULL, 'x');",
    )
    .await;
    planning.wait_schema_after(seen).await;
    let get = |s, path, accept| accepting(s, &anon, path, accept);
    // nulls=stripped on arrays and single objects (PostgREST's vnd.pgrst types).
    let (srv, planning) = (&srv, &planning);
    let (s, h, b) = get(
        srv,
        "notes?order=id",
        "application/vnd.pgrst.array+json;nulls=stripped",
    )
    .await;
    assert_eq!(
        (s, b),
        (200, json!([{"id": 1, "body": "a"}, {"id": 2, "tag": "x"}]))
    );
    assert!(h["content-type"]
        .to_str()
        .unwrap()
        .contains("nulls=stripped"));
    let (_, _, b) = get(
        srv,
        "notes?id=eq.2",
        "application/vnd.pgrst.object+json;nulls=stripped",
    )
    .await;
    assert_eq!(b, json!({"id": 2, "tag": "x"}));
    // …and on the rows a write returns.
    let (s, _, b) = srv
        .rest(
            "POST",
            "notes",
            &secret,
            None,
            &[
                ("prefer", "return=representation"),
                ("accept", "application/vnd.pgrst.array+json;nulls=stripped"),
            ],
            Some(json!({"id": 3, "body": "c"})),
        )
        .await;
    assert_eq!((s, b), (201, json!([{"id": 3, "body": "c"}])));
    // Plans are off by default (406), as PostgREST's db-plan-enabled.
    let (s, _, b) = get(srv, "notes", "application/vnd.pgrst.plan+json").await;
    assert_eq!((s, b["code"].as_str()), (406, Some("PGRST107")));
    // When enabled: the statement's EXPLAIN, as the caller (RLS in the plan).
    let (s, h, b) = get(planning, "notes?id=eq.1", "application/vnd.pgrst.plan+json").await;
    assert_eq!(s, 200, "{b}");
    assert!(h["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/vnd.pgrst.plan+json"));
    assert!(b[0]["Plan"]["Total Cost"].is_number(), "{b}");
    let (s, _, b) = get(
        planning,
        "notes",
        "application/vnd.pgrst.plan+text; options=analyze",
    )
    .await;
    assert_eq!(s, 200);
    let text = b.as_str().unwrap();
    assert!(
        text.contains("actual time") && text.contains("Execution Time"),
        "{text}"
    );
    // An analyzed write is rolled back.
    let (s, _, _) = planning
        .rest(
            "DELETE",
            "notes?id=eq.1",
            &secret,
            None,
            &[("accept", "application/vnd.pgrst.plan+json; options=analyze")],
            None,
        )
        .await;
    assert_eq!(s, 200);
    let (_, _, b) = srv
        .rest("GET", "notes?select=id&order=id", &secret, None, &[], None)
        .await;
    assert_eq!(b, json!([{"id": 1}, {"id": 2}, {"id": 3}]));
}

#[tokio::test]
async fn geojson_needs_postgis_and_answers_a_feature_collection() {
    let db = TestDb::new().await;
    let (_, anon) = db.key(KeyKind::Publishable).await;
    let srv = db.server().await;
    ddl(
        &db,
        &srv,
        "CREATE TABLE spots (id int PRIMARY KEY, name text);
         CREATE POLICY r ON spots FOR SELECT USING (true);
         INSERT INTO spots VALUES (1, 'harbour');",
    )
    .await;
    let geo = [("accept", "application/geo+json")];
    // Without PostGIS in the database the media type is not available.
    let (s, _, b) = srv.rest("GET", "spots", &anon, None, &geo, None).await;
    assert_eq!((s, b["code"].as_str()), (406, Some("PGRST107")), "{b}");
    ddl(
        &db,
        &srv,
        "CREATE EXTENSION postgis;
         ALTER TABLE spots ADD COLUMN place geometry(Point, 4326);
         UPDATE spots SET place = ST_SetSRID(ST_MakePoint(10.75, 59.91), 4326);
         INSERT INTO spots VALUES (2, 'nowhere', NULL);",
    )
    .await;
    let (s, h, b) = srv
        .rest(
            "GET",
            "spots?select=name,place&order=id",
            &anon,
            None,
            &geo,
            None,
        )
        .await;
    assert_eq!(s, 200, "{b}");
    assert!(h["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/geo+json"));
    assert_eq!(
        b,
        json!({
            "type": "FeatureCollection",
            "features": [
                {"type": "Feature", "geometry": {"type": "Point", "coordinates": [10.75, 59.91]},
                 "properties": {"name": "harbour"}},
                {"type": "Feature", "geometry": null, "properties": {"name": "nowhere"}}
            ]
        })
    );
}

/// GET `path` with `key`, a user's token and `headers`.
async fn get_as(
    srv: &TestServer,
    key: &str,
    bearer: Option<&str>,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, http::HeaderMap, Value) {
    srv.rest("GET", path, key, bearer, headers, None).await
}

/// GET `path` with `key` and `Accept: accept`.
async fn accepting(
    srv: &TestServer,
    key: &str,
    path: &str,
    accept: &str,
) -> (u16, http::HeaderMap, Value) {
    get_as(srv, key, None, path, &[("accept", accept)]).await
}
