//! postgres_changes catch-up: a client that rejoins with the position of the
//! last change it saw (`config.postgres_changes_options.position`, the `ref`
//! of each event) gets every later committed change it may see exactly once,
//! in commit order, on any node and after a restart; a position whose changes
//! were pruned gets the gap message; bad positions get clear errors.

use crate::harness::*;
use crate::realtime::{Got, Ws};
use serde_json::{json, Value};
use std::time::Duration;
use wasmbase_host_api::keys::KeyKind;

const TODOS: &str = "
  CREATE TABLE public.todos (
    id bigint PRIMARY KEY,
    owner uuid NOT NULL,
    task text NOT NULL
  );
  ALTER TABLE public.todos ENABLE ROW LEVEL SECURITY;
  CREATE POLICY own ON public.todos FOR SELECT TO authenticated USING (owner = auth.uid());
  GRANT SELECT ON public.todos TO authenticated;
  ALTER PUBLICATION supabase_realtime ADD TABLE public.todos;
";

/// Joins `topic` for every change of `todos` as `token`, resuming
/// `position` if given; returns the join reply.
async fn join(ws: &mut Ws, topic: &str, token: &str, position: Option<&str>) -> Value {
    let mut config =
        json!({"postgres_changes": [{"event": "*", "schema": "public", "table": "todos"}]});
    if let Some(p) = position {
        config["postgres_changes_options"] = json!({ "position": p });
    }
    let r = ws
        .push(
            None,
            topic,
            "phx_join",
            json!({"config": config, "access_token": token}),
        )
        .await;
    ws.until(|g| g.1 == json!(r)).await.4
}

/// The next postgres_changes system message.
async fn system(ws: &mut Ws) -> Value {
    ws.until(|g| g.3 == "system" && g.4["extension"] == "postgres_changes")
        .await
        .4
}

/// `(type, id)` of a change event.
fn change(g: &Got) -> (String, i64) {
    let d = &g.4["data"];
    let row = if d["type"] == "DELETE" {
        &d["old_record"]
    } else {
        &d["record"]
    };
    (
        d["type"].as_str().unwrap().to_string(),
        row["id"].as_i64().unwrap(),
    )
}

/// Reads change events until the postgres_changes system message (the end
/// of a catch-up); returns them with their positions, and that message.
async fn caught_up(ws: &mut Ws) -> (Vec<((String, i64), String)>, Value) {
    let mut got = Vec::new();
    loop {
        let g = ws
            .until(|g| g.3 == "postgres_changes" || g.3 == "system")
            .await;
        if g.3 == "system" {
            return (got, g.4);
        }
        got.push((change(&g), g.1.as_str().unwrap().to_string()));
    }
}

/// Every frame until a heartbeat's reply: what arrived in between.
async fn drain(ws: &mut Ws) -> Vec<Got> {
    let r = ws.push(None, "phoenix", "heartbeat", json!({})).await;
    let mut out = Vec::new();
    loop {
        let g = ws.until(|_| true).await;
        if g.2 == "phoenix" && g.1 == json!(r) {
            return out;
        }
        out.push(g);
    }
}

fn ins(id: i64) -> (String, i64) {
    ("INSERT".to_string(), id)
}

#[tokio::test]
async fn a_client_resuming_its_position_gets_each_missed_change_once_in_order_on_any_node() {
    let db = TestDb::new().await;
    let (_, anon) = db.key(KeyKind::Publishable).await;
    let owner = db.owner().await;
    owner.batch_execute(TODOS).await.unwrap();
    let (me, other) = (uuid::Uuid::new_v4(), uuid::Uuid::new_v4());
    let token = user_token(&me.to_string());
    let one = db.server().await;
    let two = db.server().await;
    let insert = |id: i64, who: uuid::Uuid| {
        let c = &owner;
        async move {
            c.execute(
                "INSERT INTO public.todos (id, owner, task) VALUES ($1, $2, 'x')",
                &[&id, &who],
            )
            .await
            .unwrap();
        }
    };

    // A fresh join is told its position once subscribed.
    let mut ws = Ws::connect(&one, &anon, true).await;
    assert_eq!(
        join(&mut ws, "realtime:t", &token, None).await["status"],
        "ok"
    );
    let sys = system(&mut ws).await;
    assert_eq!(sys["message"], "Subscribed to PostgreSQL", "{sys}");
    assert!(sys["position"].as_str().unwrap().contains(':'), "{sys}");
    insert(1, me).await;
    let g = ws.until(|g| g.3 == "postgres_changes").await;
    assert_eq!(change(&g), ins(1));
    let after_one =
        g.1.as_str()
            .expect("each event's ref is its position")
            .to_string();
    drop(ws);

    // Missed while away: mine, someone else's (RLS hides them), in one
    // transaction and in several, an update and a delete.
    insert(2, me).await;
    insert(3, other).await;
    owner
        .batch_execute(&format!(
            "BEGIN; SET CONSTRAINTS ALL IMMEDIATE; \
             INSERT INTO public.todos VALUES (4, '{me}', 'x'), (5, '{other}', 'x'); \
             INSERT INTO public.todos VALUES (6, '{me}', 'x'); COMMIT;"
        ))
        .await
        .unwrap();
    owner
        .execute("UPDATE public.todos SET task = 'y' WHERE id = 2", &[])
        .await
        .unwrap();
    owner
        .execute("DELETE FROM public.todos WHERE id = 1", &[])
        .await
        .unwrap();

    // Resumed on the other node: exactly the missed changes I may see, in
    // commit order, then the system message, then live ones.
    let mut ws = Ws::connect(&two, &anon, false).await;
    assert_eq!(
        join(&mut ws, "realtime:t", &token, Some(&after_one)).await["status"],
        "ok"
    );
    let (got, sys) = caught_up(&mut ws).await;
    let kinds: Vec<_> = got.iter().map(|(c, _)| c.clone()).collect();
    let want = vec![
        ins(2),
        ins(4),
        ins(6),
        ("UPDATE".into(), 2),
        ("DELETE".into(), 1),
    ];
    assert_eq!(kinds, want);
    assert_eq!(
        (&sys["status"], &sys["message"]),
        (&json!("ok"), &json!("Subscribed to PostgreSQL")),
        "{sys}"
    );
    insert(7, me).await;
    let g = ws.until(|g| g.3 == "postgres_changes").await;
    assert_eq!(change(&g), ins(7));
    assert!(
        drain(&mut ws)
            .await
            .iter()
            .all(|g| g.3 != "postgres_changes"),
        "nothing twice"
    );
    drop(ws);

    // From inside a transaction (after 4, before 6): the rest of it, once.
    let inside = got[1].1.clone();
    assert!(
        inside.contains('@'),
        "a position inside a transaction: {inside}"
    );
    let mut ws = Ws::connect(&one, &anon, true).await;
    join(&mut ws, "realtime:t", &token, Some(&inside)).await;
    let (rest, _) = caught_up(&mut ws).await;
    let kinds: Vec<_> = rest.into_iter().map(|(c, _)| c).collect();
    assert_eq!(
        kinds,
        vec![ins(6), ("UPDATE".into(), 2), ("DELETE".into(), 1), ins(7)]
    );
    drop(ws);

    // From a position in the middle (after the transaction of 4 and 6),
    // after node one restarted: the rest, once.
    let middle = got[2].1.clone();
    one.srv.shutdown().await;
    insert(8, me).await;
    let three = db.server().await;
    let mut ws = Ws::connect(&three, &anon, true).await;
    join(&mut ws, "realtime:t", &token, Some(&middle)).await;
    let (got, sys) = caught_up(&mut ws).await;
    let kinds: Vec<_> = got.into_iter().map(|(c, _)| c).collect();
    assert_eq!(
        kinds,
        vec![("UPDATE".into(), 2), ("DELETE".into(), 1), ins(7), ins(8)]
    );
    assert_eq!(sys["message"], "Subscribed to PostgreSQL");
    // A position that saw everything: nothing to catch up on.
    let latest = sys["position"].as_str().unwrap().to_string();
    drop(ws);
    let mut ws = Ws::connect(&two, &anon, true).await;
    join(&mut ws, "realtime:t", &token, Some(&latest)).await;
    let (got, _) = caught_up(&mut ws).await;
    assert!(got.is_empty(), "{got:?}");
}

#[tokio::test]
async fn a_pruned_gap_gets_the_system_message_and_bad_positions_clear_errors() {
    let db = TestDb::new().await;
    let (_, anon) = db.key(KeyKind::Publishable).await;
    let mut owner = db.owner().await;
    owner.batch_execute(TODOS).await.unwrap();
    let me = uuid::Uuid::new_v4();
    let token = user_token(&me.to_string());
    let srv = db.server().await;

    let mut ws = Ws::connect(&srv, &anon, true).await;
    join(&mut ws, "realtime:t", &token, None).await;
    let old = system(&mut ws).await["position"]
        .as_str()
        .unwrap()
        .to_string();
    drop(ws);
    owner
        .execute("INSERT INTO public.todos VALUES (1, $1, 'x')", &[&me])
        .await
        .unwrap();
    // The server's own pruning, as if the window had passed.
    wasmbase::api::realtime::prune_changes(&mut owner, Duration::ZERO)
        .await
        .unwrap();
    let left: i64 = owner
        .query_one("SELECT count(*) FROM wasmbase.realtime_txns", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(left, 0, "pruned");

    let mut ws = Ws::connect(&srv, &anon, true).await;
    join(&mut ws, "realtime:t", &token, Some(&old)).await;
    let gap = system(&mut ws).await;
    assert_eq!(gap["status"], "error", "{gap}");
    assert!(
        gap["message"]
            .as_str()
            .unwrap()
            .starts_with("CatchUpUnavailable: changes after this position are no longer kept"),
        "{gap}"
    );
    let fresh = gap["position"].as_str().unwrap().to_string();
    assert_eq!(system(&mut ws).await["message"], "Subscribed to PostgreSQL");
    // Live changes still come; from the fresh position a rejoin is whole.
    owner
        .execute("INSERT INTO public.todos VALUES (2, $1, 'x')", &[&me])
        .await
        .unwrap();
    let g = ws.until(|g| g.3 == "postgres_changes").await;
    assert_eq!(change(&g), ins(2));
    drop(ws);
    let mut ws = Ws::connect(&srv, &anon, true).await;
    join(&mut ws, "realtime:t", &token, Some(&fresh)).await;
    let (got, sys) = caught_up(&mut ws).await;
    assert_eq!(
        got.into_iter().map(|(c, _)| c).collect::<Vec<_>>(),
        vec![ins(2)]
    );
    assert_eq!(sys["status"], "ok");

    // Not a position: the join is refused with a clear reason.
    for bad in [json!("yesterday"), json!("5:1:"), json!(12)] {
        let mut ws = Ws::connect(&srv, &anon, true).await;
        let r = ws
            .push(
                None,
                "realtime:t",
                "phx_join",
                json!({"config": {"postgres_changes": [{"event": "*", "schema": "public", "table": "todos"}],
                       "postgres_changes_options": {"position": bad}}, "access_token": token}),
            )
            .await;
        let reply = ws.until(|g| g.1 == json!(r)).await.4;
        assert_eq!(reply["status"], "error", "{reply}");
        assert!(
            reply["response"]["reason"]
                .as_str()
                .unwrap()
                .starts_with("InvalidJoinPayload: postgres_changes_options.position"),
            "{reply}"
        );
    }
    // A position from the future (another database): told, then live.
    let mut ws = Ws::connect(&srv, &anon, true).await;
    join(
        &mut ws,
        "realtime:t",
        &token,
        Some("9000000000:9000000000:"),
    )
    .await;
    let sys = system(&mut ws).await;
    assert!(
        sys["message"]
            .as_str()
            .unwrap()
            .starts_with("InvalidPosition"),
        "{sys}"
    );
    assert_eq!(system(&mut ws).await["message"], "Subscribed to PostgreSQL");
    owner
        .execute("INSERT INTO public.todos VALUES (3, $1, 'x')", &[&me])
        .await
        .unwrap();
    let g = ws.until(|g| g.3 == "postgres_changes").await;
    assert_eq!(change(&g), ins(3));

    // A policy that raises for one subscriber's claims: they get nothing,
    // everyone else goes on (the node does not stall on the error).
    owner
        .batch_execute(
            "CREATE POLICY fragile ON public.todos FOR SELECT TO authenticated \
               USING (CASE WHEN auth.jwt() ->> 'fragile' = 'yes' THEN 1 / (length(auth.jwt() ->> 'fragile') - 3) = 1 ELSE false END)",
        )
        .await
        .unwrap();
    let fragile = sign(json!({
        "role": "authenticated", "aud": "authenticated", "exp": now() + 600,
        "sub": uuid::Uuid::new_v4().to_string(), "fragile": "yes",
    }));
    let mut bad = Ws::connect(&srv, &anon, true).await;
    join(&mut bad, "realtime:bad", &fragile, None).await;
    system(&mut bad).await;
    for id in [4, 5] {
        owner
            .execute("INSERT INTO public.todos VALUES ($1, $2, 'x')", &[&id, &me])
            .await
            .unwrap();
        let g = ws.until(|g| g.3 == "postgres_changes").await;
        assert_eq!(change(&g), ins(id));
    }
    assert!(
        drain(&mut bad)
            .await
            .iter()
            .all(|g| g.3 != "postgres_changes"),
        "the failing group sees nothing"
    );
}

#[tokio::test]
async fn a_long_absence_catches_up_in_rounds_paced_to_the_reader_while_live_channels_keep_receiving(
) {
    let db = TestDb::new().await;
    let (_, anon) = db.key(KeyKind::Publishable).await;
    let owner = db.owner().await;
    owner.batch_execute(TODOS).await.unwrap();
    let me = uuid::Uuid::new_v4();
    let token = user_token(&me.to_string());
    let srv = db.server().await;
    let mut live = Ws::connect(&srv, &anon, true).await;
    join(&mut live, "realtime:live", &token, None).await;
    system(&mut live).await;
    let mut away = Ws::connect(&srv, &anon, true).await;
    join(&mut away, "realtime:away", &token, None).await;
    let position = system(&mut away).await["position"]
        .as_str()
        .unwrap()
        .to_string();
    drop(away);
    // More transactions than one round's catch-up budget, one row each; the
    // live channel reads them as they come.
    const N: i64 = 2_600;
    let live = tokio::spawn(async move {
        let mut seen = Vec::new();
        while seen.len() < N as usize {
            let g = live.until(|g| g.3 == "postgres_changes").await;
            seen.push(change(&g).1);
        }
        seen
    });
    let inserts: String = (1..=N)
        .map(|i| format!("BEGIN; INSERT INTO public.todos VALUES ({i}, '{me}', 'x'); COMMIT;"))
        .collect();
    owner.batch_execute(&inserts).await.unwrap();
    assert_eq!(live.await.unwrap(), (1..=N).collect::<Vec<_>>());
    // And one transaction larger than a socket's queue (1,024 frames).
    const BIG: i64 = 1_500;
    owner
        .execute(
            "INSERT INTO public.todos SELECT g, $1, 'big' FROM generate_series($2::bigint, $3::bigint) g",
            &[&me, &(N + 1), &(N + BIG)],
        )
        .await
        .unwrap();
    let mut away = Ws::connect(&srv, &anon, false).await;
    join(&mut away, "realtime:away", &token, Some(&position)).await;
    let (got, sys) = caught_up(&mut away).await;
    assert_eq!(sys["message"], "Subscribed to PostgreSQL");
    let ids: Vec<i64> = got.iter().map(|((_, id), _)| *id).collect();
    assert!(
        ids == (1..=N + BIG).collect::<Vec<_>>(),
        "each once, in commit order, paced to the reader ({} events)",
        ids.len()
    );
}
