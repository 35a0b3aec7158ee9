//! `/realtime/v1` with a real WebSocket client: both protocol versions,
//! heartbeats, joins and tokens, broadcast (self, ack, binary frames, the HTTP
//! API), presence, and two nodes on one database behaving as one.

use crate::harness::*;
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;
use wasmbase_host_api::keys::KeyKind;

type Stream =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A realtime client speaking one protocol version.
pub(crate) struct Ws {
    s: Stream,
    v2: bool,
    next: u64,
}

/// A received frame, as (join_ref, ref, topic, event, payload), binary kind 4
/// decoded to a `broadcast` event as realtime-js does.
pub(crate) type Got = (Value, Value, String, String, Value);

impl Ws {
    pub(crate) async fn connect(srv: &TestServer, key: &str, v2: bool) -> Ws {
        let url = format!(
            "{}/realtime/v1/websocket?apikey={key}&vsn={}",
            srv.url.replace("http://", "ws://"),
            if v2 { "2.0.0" } else { "1.0.0" }
        );
        let (s, _) = tokio_tungstenite::connect_async(url)
            .await
            .expect("upgrade");
        Ws { s, v2, next: 1 }
    }

    /// Sends a push; returns its ref.
    pub(crate) async fn push(
        &mut self,
        join_ref: Option<&str>,
        topic: &str,
        event: &str,
        payload: Value,
    ) -> String {
        let r = self.next.to_string();
        self.next += 1;
        // realtime-js's join ref is the join's own ref.
        let join_ref = if event == "phx_join" {
            Some(r.as_str())
        } else {
            join_ref
        };
        let text = if self.v2 {
            json!([join_ref, r, topic, event, payload]).to_string()
        } else {
            json!({"join_ref": join_ref, "ref": r, "topic": topic, "event": event, "payload": payload}).to_string()
        };
        self.s.send(Message::text(text)).await.unwrap();
        r
    }

    pub(crate) async fn join(&mut self, topic: &str, config: Value) -> (String, Value) {
        let r = self
            .push(None, topic, "phx_join", json!({ "config": config }))
            .await;
        // The join ref is the join's own ref.
        let (_, _, _, _, p) = self.until(|g| g.3 == "phx_reply" && g.1 == json!(r)).await;
        (r, p)
    }

    fn decode(&self, m: Message) -> Option<Got> {
        match m {
            Message::Text(t) => {
                let v: Value = serde_json::from_str(t.as_str()).unwrap();
                Some(if self.v2 {
                    (
                        v[0].clone(),
                        v[1].clone(),
                        v[2].as_str().unwrap().into(),
                        v[3].as_str().unwrap().into(),
                        v[4].clone(),
                    )
                } else {
                    (
                        v["join_ref"].clone(),
                        v["ref"].clone(),
                        v["topic"].as_str().unwrap().into(),
                        v["event"].as_str().unwrap().into(),
                        v["payload"].clone(),
                    )
                })
            }
            Message::Binary(b) => {
                assert_eq!(b[0], 4, "only kind 4 goes to clients");
                let (t, e, m, enc) = (b[1] as usize, b[2] as usize, b[3] as usize, b[4]);
                let topic = String::from_utf8(b[5..5 + t].to_vec()).unwrap();
                let event = String::from_utf8(b[5 + t..5 + t + e].to_vec()).unwrap();
                let rest = &b[5 + t + e + m..];
                let payload = if enc == 1 {
                    serde_json::from_slice(rest).unwrap()
                } else {
                    json!({ "binary": rest })
                };
                Some((
                    Value::Null,
                    Value::Null,
                    topic,
                    "broadcast".into(),
                    json!({"type": "broadcast", "event": event, "payload": payload, "kind4": true}),
                ))
            }
            _ => None,
        }
    }

    /// The next frame matching `f` (others are skipped), within 10 s.
    pub(crate) async fn until(&mut self, f: impl Fn(&Got) -> bool) -> Got {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let m = tokio::time::timeout_at(deadline, self.s.next())
                .await
                .expect("the awaited frame did not come")
                .expect("socket open")
                .unwrap();
            if let Message::Close(Some(c)) = &m {
                panic!("the server closed the socket: {} {}", c.code, c.reason);
            }
            if let Some(g) = self.decode(m) {
                if f(&g) {
                    return g;
                }
            }
        }
    }

    /// A heartbeat gets its reply: the socket is alive and in order.
    pub(crate) async fn heartbeat(&mut self) {
        let r = self.push(None, "phoenix", "heartbeat", json!({})).await;
        let g = self.until(|g| g.2 == "phoenix" && g.1 == json!(r)).await;
        assert_eq!(g.4, json!({"status": "ok", "response": {}}));
    }
}

/// realtime-js's kind-3 frame: a user broadcast push.
fn kind3(join_ref: &str, r: &str, topic: &str, event: &str, payload: &[u8], json: bool) -> Vec<u8> {
    let mut f = vec![
        3,
        join_ref.len() as u8,
        r.len() as u8,
        topic.len() as u8,
        event.len() as u8,
        0,
        json as u8,
    ];
    for s in [join_ref, r, topic, event] {
        f.extend_from_slice(s.as_bytes());
    }
    f.extend_from_slice(payload);
    f
}

#[tokio::test]
async fn both_protocols_join_broadcast_with_self_and_ack_and_shrug_off_bad_frames() {
    let db = TestDb::new().await;
    let (_, anon) = db.key(KeyKind::Publishable).await;
    let (_, secret) = db.key(KeyKind::Secret).await;
    let srv = db.server().await;

    // The upgrade checks the key (a secret key in a URL is refused) and vsn.
    let url = |key: &str, vsn: &str| {
        format!(
            "{}/realtime/v1/websocket?apikey={key}&vsn={vsn}",
            srv.url.replace("http://", "ws://")
        )
    };
    for (key, vsn, status) in [
        (secret.as_str(), "2.0.0", 401),
        ("nope", "2.0.0", 401),
        (anon.as_str(), "3.0.0", 400),
    ] {
        match tokio_tungstenite::connect_async(url(key, vsn)).await {
            Err(tokio_tungstenite::tungstenite::Error::Http(r)) => {
                assert_eq!(r.status().as_u16(), status)
            }
            other => panic!("{key} {vsn}: {:?}", other.map(|_| ())),
        }
    }

    let mut a = Ws::connect(&srv, &anon, true).await;
    let mut b = Ws::connect(&srv, &anon, false).await;
    a.heartbeat().await;
    b.heartbeat().await;
    let bindings = json!([{"event": "INSERT", "schema": "public", "table": "todos", "filter": ""}]);
    let (ja, reply) = a
        .join("realtime:room", json!({"broadcast": {"self": true, "ack": true}, "presence": {"key": "", "enabled": false}, "postgres_changes": bindings, "private": false}))
        .await;
    assert_eq!(reply["status"], "ok", "{reply}");
    // Bindings echoed as sent, each with a truthy id (realtime-js matches them).
    let echoed = &reply["response"]["postgres_changes"][0];
    assert_eq!(
        (&echoed["event"], &echoed["filter"]),
        (&json!("INSERT"), &json!(""))
    );
    assert!(echoed["id"].as_u64().unwrap() > 0);
    let (jb, reply) = b
        .join("realtime:room", json!({"broadcast": {"self": false}}))
        .await;
    assert_eq!(
        reply,
        json!({"status": "ok", "response": {"postgres_changes": []}})
    );

    // A (vsn 2) sends realtime-js's binary push: B (vsn 1) gets JSON text, A
    // its own copy (self) as kind 4, and an ack reply in JSON.
    a.s.send(Message::binary(kind3(
        &ja,
        "99",
        "realtime:room",
        "msg",
        br#"{"hello":"w\u00f6rld"}"#,
        true,
    )))
    .await
    .unwrap();
    let g = b.until(|g| g.3 == "broadcast").await;
    assert_eq!(
        g.4,
        json!({"type": "broadcast", "event": "msg", "payload": {"hello": "wörld"}})
    );
    assert_eq!(
        (g.0.clone(), g.1.clone()),
        (Value::Null, Value::Null),
        "fan-out frames carry no refs"
    );
    let g = a.until(|g| g.3 == "broadcast").await;
    assert_eq!(
        (&g.4["event"], &g.4["payload"], &g.4["kind4"]),
        (&json!("msg"), &json!({"hello": "wörld"}), &json!(true))
    );
    let g = a.until(|g| g.3 == "phx_reply" && g.1 == json!("99")).await;
    assert_eq!(g.4["status"], "ok");
    // B (no self, no ack) sends JSON text; A gets it, B does not get it back.
    b.push(
        Some(&jb),
        "realtime:room",
        "broadcast",
        json!({"type": "broadcast", "event": "pong", "payload": {"n": 1}}),
    )
    .await;
    let g = a.until(|g| g.3 == "broadcast").await;
    assert_eq!(
        (&g.4["event"], &g.4["payload"]),
        (&json!("pong"), &json!({"n": 1}))
    );
    // A binary payload (encoding 0) reaches vsn 2 as bytes; vsn 1 cannot take it.
    a.s.send(Message::binary(kind3(
        &ja,
        "100",
        "realtime:room",
        "raw",
        &[1, 2, 3],
        false,
    )))
    .await
    .unwrap();
    let g = a
        .until(|g| g.3 == "broadcast" && g.4["event"] == "raw")
        .await;
    assert_eq!(g.4["payload"], json!({"binary": [1, 2, 3]}));

    // Garbage is ignored; the socket carries on.
    a.s.send(Message::text("not json")).await.unwrap();
    a.s.send(Message::binary(vec![3u8, 200, 0])).await.unwrap();
    a.s.send(Message::binary(vec![0u8, 1, 2, 3])).await.unwrap();
    a.heartbeat().await;
    // Pushing to a topic this socket has not joined.
    let r = a
        .push(
            None,
            "realtime:other",
            "broadcast",
            json!({"event": "x", "payload": {}}),
        )
        .await;
    let g = a.until(|g| g.1 == json!(r)).await;
    assert_eq!(
        g.4,
        json!({"status": "error", "response": {"reason": "unmatched topic"}})
    );
    // A private channel without a policy is refused, as Supabase words it.
    let (_, reply) = a.join("realtime:secret", json!({"private": true})).await;
    assert_eq!(reply["status"], "error");
    assert!(
        reply["response"]["reason"]
            .as_str()
            .unwrap()
            .starts_with("Unauthorized:"),
        "{reply}"
    );
    // A token that does not verify is refused at join.
    let r = a
        .push(
            None,
            "realtime:t",
            "phx_join",
            json!({"config": {}, "access_token": "a.b.c"}),
        )
        .await;
    let g = a.until(|g| g.1 == json!(r)).await;
    assert_eq!(g.4["status"], "error");

    // Leaving: ok, then phx_close with ref = join_ref; broadcasts stop.
    let r = b
        .push(Some(&jb), "realtime:room", "phx_leave", json!({}))
        .await;
    b.until(|g| g.3 == "phx_reply" && g.1 == json!(r)).await;
    let g = b.until(|g| g.3 == "phx_close").await;
    assert_eq!((g.0, g.1), (json!(jb), json!(jb)));
    a.push(
        Some(&ja),
        "realtime:room",
        "broadcast",
        json!({"type": "broadcast", "event": "after", "payload": {}}),
    )
    .await;
    a.until(|g| g.3 == "broadcast" && g.4["event"] == "after")
        .await;
    b.heartbeat().await; // nothing but the heartbeat reply came first
}

#[tokio::test]
async fn a_channel_whose_token_expires_is_closed_with_supabases_message() {
    let db = TestDb::new().await;
    let (_, anon) = db.key(KeyKind::Publishable).await;
    let srv = db.server().await;
    let mut a = Ws::connect(&srv, &anon, true).await;
    let token = sign(
        json!({"role": "authenticated", "aud": "authenticated", "sub": uuid::Uuid::new_v4().to_string(), "exp": now() + 2}),
    );
    let r = a
        .push(
            None,
            "realtime:t",
            "phx_join",
            json!({"config": {}, "access_token": token}),
        )
        .await;
    let g = a.until(|g| g.1 == json!(r)).await;
    assert_eq!(g.4["status"], "ok");
    let g = a.until(|g| g.3 == "system").await;
    assert_eq!(
        (&g.4["extension"], &g.4["status"], &g.4["channel"]),
        (&json!("system"), &json!("error"), &json!("t"))
    );
    assert!(
        g.4["message"]
            .as_str()
            .unwrap()
            .starts_with("Token has expired"),
        "{}",
        g.4
    );
    let g = a.until(|g| g.3 == "phx_close").await;
    assert_eq!(g.1, json!(r));
    a.heartbeat().await; // the socket stays open
}

#[tokio::test]
async fn two_nodes_share_broadcasts_and_presence_and_a_dead_nodes_presences_leave() {
    let db = TestDb::new().await;
    let (_, anon) = db.key(KeyKind::Publishable).await;
    let one = db
        .server_with(|c| c.realtime.presence_timeout_secs = 3)
        .await;
    let two = db
        .server_with(|c| c.realtime.presence_timeout_secs = 3)
        .await;
    let presence = |key: &str| json!({"broadcast": {"self": false}, "presence": {"key": key, "enabled": true}});
    let mut a = Ws::connect(&one, &anon, true).await;
    let mut b = Ws::connect(&two, &anon, false).await;
    let (ja, _) = a.join("realtime:lobby", presence("alice")).await;
    let g = a.until(|g| g.3 == "presence_state").await;
    assert_eq!((g.0, g.4), (json!(ja), json!({})));
    let (_jb, _) = b.join("realtime:lobby", presence("bob")).await;
    b.until(|g| g.3 == "presence_state").await;

    // A broadcast on node one reaches node two, and the HTTP API on node two
    // reaches node one.
    a.push(
        Some(&ja),
        "realtime:lobby",
        "broadcast",
        json!({"type": "broadcast", "event": "hi", "payload": {"from": "a"}}),
    )
    .await;
    let g = b.until(|g| g.3 == "broadcast").await;
    assert_eq!(g.4["payload"], json!({"from": "a"}));
    let r = two
        .http
        .post(format!("{}/realtime/v1/api/broadcast", two.url))
        .header("apikey", &anon)
        .json(&json!({"messages": [{"topic": "lobby", "event": "news", "payload": {"n": 7}, "private": false}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let g = a.until(|g| g.3 == "broadcast").await;
    assert_eq!(
        (&g.4["event"], &g.4["payload"]),
        (&json!("news"), &json!({"n": 7}))
    );
    let r = two
        .http
        .post(format!("{}/realtime/v1/api/broadcast", two.url))
        .header("apikey", &anon)
        .json(&json!({"messages": [{"topic": "lobby", "event": "x", "payload": "not an object"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422);

    // Presence: a track on node one is a diff on both nodes; a later join on
    // node two gets the union as its state; an update mints a new ref.
    let r = a
        .push(
            Some(&ja),
            "realtime:lobby",
            "presence",
            json!({"type": "presence", "event": "track", "payload": {"online_at": 1}}),
        )
        .await;
    let g = a.until(|g| g.1 == json!(r)).await;
    assert_eq!(g.4["status"], "ok");
    let diff = b.until(|g| g.3 == "presence_diff").await.4;
    let meta = &diff["joins"]["alice"]["metas"][0];
    assert_eq!(meta["online_at"], 1);
    let first_ref = meta["phx_ref"].as_str().unwrap().to_string();
    let mut c = Ws::connect(&two, &anon, true).await;
    c.join("realtime:lobby", presence("carol")).await;
    let state = c.until(|g| g.3 == "presence_state").await.4;
    assert_eq!(
        state["alice"]["metas"][0]["phx_ref"],
        json!(first_ref),
        "{state}"
    );
    a.push(
        Some(&ja),
        "realtime:lobby",
        "presence",
        json!({"type": "presence", "event": "track", "payload": {"online_at": 2}}),
    )
    .await;
    let diff = c.until(|g| g.3 == "presence_diff").await.4;
    let new = &diff["joins"]["alice"]["metas"][0];
    assert_eq!(
        (&new["online_at"], &new["phx_ref_prev"]),
        (&json!(2), &json!(first_ref))
    );
    assert_ne!(new["phx_ref"], json!(first_ref));
    assert_eq!(
        diff["leaves"]["alice"]["metas"][0]["phx_ref"],
        json!(first_ref)
    );

    // A node that died without a word (its heartbeat an hour old, its
    // presence still in the table): a surviving node removes it and sends
    // the leave.
    let ghost = uuid::Uuid::new_v4();
    let owner = db.owner().await;
    owner
        .batch_execute(&format!(
            "INSERT INTO wasmbase.realtime_nodes (node, seen_at) VALUES ('{ghost}', now() - interval '1 hour'); \
             INSERT INTO wasmbase.realtime_presence (node, topic, key, ref, meta) \
               VALUES ('{ghost}', 'realtime:lobby', 'ghost', 'g1', '{{}}')"
        ))
        .await
        .unwrap();
    let diff = c
        .until(|g| g.3 == "presence_diff" && g.4["leaves"].get("ghost").is_some())
        .await
        .4;
    assert_eq!(diff["leaves"]["ghost"]["metas"][0]["phx_ref"], "g1");

    // A node that shuts down takes its presences with it, on every node.
    let node_one = one.srv.state.realtime.node;
    one.srv.shutdown().await;
    drop(a);
    let diff = c
        .until(|g| g.3 == "presence_diff" && g.4["leaves"].get("alice").is_some())
        .await
        .4;
    assert_eq!(diff["joins"], json!({}));
    let left: i64 = owner
        .query_one(
            "SELECT count(*) FROM wasmbase.realtime_presence WHERE node = $1",
            &[&node_one],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(left, 0);
}

const TODOS: &str = "
  CREATE TABLE public.todos (
    id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    owner uuid NOT NULL,
    task text NOT NULL,
    done boolean NOT NULL DEFAULT false
  );
  ALTER TABLE public.todos ENABLE ROW LEVEL SECURITY;
  -- The owner rule, written so that PostgreSQL evaluates it (the server
  -- decides only `owner = auth.uid()` itself, tested on its own below).
  CREATE POLICY own ON public.todos FOR SELECT TO authenticated
    USING (owner::text = auth.uid()::text);
  GRANT SELECT ON public.todos TO authenticated;
  CREATE TABLE public.hidden (id int PRIMARY KEY);
  ALTER PUBLICATION supabase_realtime ADD TABLE public.todos;
";

/// A node's visibility checks so far: round trips to PostgreSQL
/// (`wasmbase_realtime_rls_queries_total`) and batches the server decided
/// itself (`wasmbase_realtime_rls_inline_total`).
fn rls_counts(s: &TestServer) -> (u64, u64) {
    let c = &s.srv.state.realtime.changes;
    let load = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
    (load(&c.rls_queries), load(&c.rls_inline))
}

/// Joins `topic` with `bindings` as `token` (None: the key) and waits for
/// the postgres_changes `system` message; returns it and the join reply.
async fn pg_join(ws: &mut Ws, topic: &str, bindings: Value, token: Option<&str>) -> (Value, Value) {
    let mut payload = json!({"config": {"postgres_changes": bindings}});
    if let Some(t) = token {
        payload["access_token"] = json!(t);
    }
    let r = ws.push(None, topic, "phx_join", payload).await;
    let reply = ws.until(|g| g.1 == json!(r)).await.4;
    let system = ws.until(|g| g.3 == "system").await.4;
    (system, reply)
}

#[tokio::test]
async fn postgres_changes_reach_each_subscriber_under_their_rls_in_at_most_one_query_per_change() {
    let db = TestDb::new().await;
    let (_, anon) = db.key(KeyKind::Publishable).await;
    let one = db.server().await;
    let two = db.server().await;
    let owner = db.owner().await;
    owner.batch_execute(TODOS).await.unwrap();
    let (a_id, b_id) = (uuid::Uuid::new_v4(), uuid::Uuid::new_v4());
    let (ta, tb) = (user_token(&a_id.to_string()), user_token(&b_id.to_string()));
    let all = json!([{"event": "*", "schema": "public", "table": "todos"}]);

    let mut a = Ws::connect(&one, &anon, true).await;
    let (sys, reply) = pg_join(&mut a, "realtime:a", all.clone(), Some(&ta)).await;
    assert_eq!(
        (&sys["status"], &sys["message"]),
        (&json!("ok"), &json!("Subscribed to PostgreSQL")),
        "{sys}"
    );
    let a_binding = reply["response"]["postgres_changes"][0]["id"].clone();
    let mut b = Ws::connect(&two, &anon, false).await; // the other node, vsn 1
    assert_eq!(
        pg_join(&mut b, "realtime:b", all.clone(), Some(&tb))
            .await
            .0["status"],
        "ok"
    );
    let mut nobody = Ws::connect(&one, &anon, true).await;
    assert_eq!(
        pg_join(&mut nobody, "realtime:n", all.clone(), None)
            .await
            .0["status"],
        "ok"
    );
    // A second channel of A's, only for done rows.
    let (sys, _) = pg_join(&mut a, "realtime:done", json!([{"event": "INSERT", "schema": "public", "table": "todos", "filter": "done=eq.true"}]), Some(&ta)).await;
    assert_eq!(sys["status"], "ok");
    // What cannot be subscribed: Supabase's words.
    let refusals = [
        (
            "x",
            json!({"table": "hidden"}),
            "Unable to subscribe to changes",
        ),
        (
            "y",
            json!({"table": "todos", "filter": "nope=eq.1"}),
            "Error parsing `filter` params",
        ),
        (
            "z",
            json!({"table": "todos", "filter": "id=regex.1"}),
            "Error parsing `filter` params",
        ),
    ];
    for (topic, mut binding, words) in refusals {
        binding["event"] = json!("*");
        binding["schema"] = json!("public");
        let topic = format!("realtime:{topic}");
        let (sys, _) = pg_join(&mut nobody, &topic, json!([binding]), None).await;
        assert_eq!(sys["status"], "error", "{sys}");
        assert!(sys["message"].as_str().unwrap().starts_with(words), "{sys}");
    }

    let rls = |s: &TestServer| rls_counts(s).0;
    let before = (rls(&one), rls(&two));
    // Written by SQL (not through the API): captured all the same.
    owner
        .execute(
            "INSERT INTO public.todos (id, owner, task) VALUES (1, $1, 'a1')",
            &[&a_id],
        )
        .await
        .unwrap();
    owner
        .execute(
            "INSERT INTO public.todos (id, owner, task, done) VALUES (2, $1, 'b1', true)",
            &[&b_id],
        )
        .await
        .unwrap();
    let g = a.until(|g| g.3 == "postgres_changes").await;
    assert_eq!(g.2, "realtime:a");
    let (ids, data) = (&g.4["ids"], &g.4["data"]);
    assert_eq!(ids, &json!([a_binding]));
    assert_eq!(
        (&data["type"], &data["schema"], &data["table"]),
        (&json!("INSERT"), &json!("public"), &json!("todos"))
    );
    assert_eq!(
        data["record"],
        json!({"id": 1, "owner": a_id, "task": "a1", "done": false})
    );
    assert!(data["columns"]
        .as_array()
        .unwrap()
        .contains(&json!({"name": "id", "type": "int8"})));
    assert!(data["commit_timestamp"].as_str().unwrap().ends_with('Z'));
    // B, on the other node, sees only their own row: their first event is row 2.
    let g = b.until(|g| g.3 == "postgres_changes").await;
    assert_eq!(g.4["data"]["record"]["id"], 2);
    // UPDATE: the new record, and the old one's primary key (default replica identity).
    owner
        .execute("UPDATE public.todos SET done = true WHERE id = 1", &[])
        .await
        .unwrap();
    let g = a
        .until(|g| g.3 == "postgres_changes" && g.2 == "realtime:a")
        .await;
    assert_eq!(
        (&g.4["data"]["type"], &g.4["data"]["old_record"]),
        (&json!("UPDATE"), &json!({"id": 1}))
    );
    assert_eq!(g.4["data"]["record"]["done"], true);
    // DELETE skips RLS (the row is gone) and goes to roles that may SELECT
    // the table: B (authenticated) gets A's delete, with the key only.
    owner
        .execute("DELETE FROM public.todos WHERE id = 1", &[])
        .await
        .unwrap();
    let g = b
        .until(|g| g.3 == "postgres_changes" && g.4["data"]["type"] == "DELETE")
        .await;
    assert_eq!(g.4["data"]["old_record"], json!({"id": 1}));
    assert!(g.4["data"].get("record").is_none());
    // The filtered channel got only the done insert (row 2 is B's: hidden by
    // RLS), so nothing; a done row of A's arrives.
    owner
        .execute(
            "INSERT INTO public.todos (id, owner, task, done) VALUES (3, $1, 'a3', true)",
            &[&a_id],
        )
        .await
        .unwrap();
    let g = a
        .until(|g| g.3 == "postgres_changes" && g.2 == "realtime:done")
        .await;
    assert_eq!(g.4["data"]["record"]["id"], 3);
    // At most one visibility query per change on each node, whatever the
    // number of subscribers (three channels of three principals on node one,
    // one on node two); changes that queue up while one is checked share a
    // query. Five changes so far, all of them checked on node one (its last
    // event is the last change).
    let (q1, q2) = (rls(&one) - before.0, rls(&two) - before.1);
    assert!((1..=5).contains(&q1) && (1..=5).contains(&q2), "{q1} {q2}");
    // anon has no SELECT on todos: nothing at all reached it.
    nobody.heartbeat().await;
    let r = nobody.push(None, "phoenix", "heartbeat", json!({})).await;
    let g = nobody
        .until(|g| g.3 == "postgres_changes" || g.1 == json!(r))
        .await;
    assert_eq!(g.3, "phx_reply", "anon received a change: {:?}", g.4);
}

#[tokio::test]
async fn composite_text_and_array_keys_tables_without_rls_and_regex_filters() {
    let db = TestDb::new().await;
    let (_, anon) = db.key(KeyKind::Publishable).await;
    let srv = db.server().await;
    let owner = db.owner().await;
    owner
        .batch_execute(
            "CREATE TABLE public.notes (owner uuid, slug text, body text,
               PRIMARY KEY (owner, slug));
             CREATE TABLE public.tagged (tags int[] PRIMARY KEY, owner uuid);
             CREATE TABLE public.board (id int PRIMARY KEY, msg text);
             CREATE TABLE public.codes (code char(2) PRIMARY KEY, owner uuid);
             -- Policies PostgreSQL evaluates (not the owner shape the
             -- server decides itself): the lookups by these keys run.
             CREATE POLICY own ON public.codes FOR SELECT TO authenticated USING (owner::text = auth.uid()::text);
             -- RLS is on by default for new tables (database.rls_by_default).
             ALTER TABLE public.board DISABLE ROW LEVEL SECURITY;
             CREATE POLICY own ON public.notes FOR SELECT TO authenticated USING (owner::text = auth.uid()::text);
             CREATE POLICY own ON public.tagged FOR SELECT TO authenticated USING (owner::text = auth.uid()::text);
             GRANT SELECT ON public.notes, public.tagged, public.board, public.codes TO authenticated;
             ALTER PUBLICATION supabase_realtime ADD TABLE public.notes, public.tagged, public.board, public.codes;",
        )
        .await
        .unwrap();
    let (a_id, b_id) = (uuid::Uuid::new_v4(), uuid::Uuid::new_v4());
    let (ta, tb) = (user_token(&a_id.to_string()), user_token(&b_id.to_string()));
    let every = json!([{"event": "*", "schema": "public"}]);
    let mut a = Ws::connect(&srv, &anon, true).await;
    assert_eq!(
        pg_join(&mut a, "realtime:a", every.clone(), Some(&ta))
            .await
            .0["status"],
        "ok"
    );
    let hel = json!([{"event": "INSERT", "schema": "public", "table": "notes", "filter": "body=imatch.^HEL+o"}]);
    assert_eq!(
        pg_join(&mut a, "realtime:hel", hel, Some(&ta)).await.0["status"],
        "ok"
    );
    let mut b = Ws::connect(&srv, &anon, true).await;
    assert_eq!(
        pg_join(&mut b, "realtime:b", every, Some(&tb)).await.0["status"],
        "ok"
    );

    let rls = || rls_counts(&srv).0;
    // A table without RLS: everyone with SELECT gets the row, no RLS query.
    let before = rls();
    owner
        .execute("INSERT INTO public.board VALUES (1, 'hi')", &[])
        .await
        .unwrap();
    for ws in [&mut a, &mut b] {
        let g = ws.until(|g| g.3 == "postgres_changes").await;
        assert_eq!(g.4["data"]["table"], "board");
    }
    assert_eq!(
        rls(),
        before,
        "a table without RLS needs no visibility query"
    );
    // A composite key with text, and an array key: each user sees only
    // their own rows (B's come first; A must skip them).
    for (id, slug) in [(b_id, "b's \"note\""), (a_id, "x,y")] {
        owner
            .execute(
                "INSERT INTO public.notes VALUES ($1, $2, 'hello')",
                &[&id, &slug],
            )
            .await
            .unwrap();
    }
    owner
        .execute(
            "INSERT INTO public.tagged VALUES ('{1,2}', $1), ('{3}', $2)",
            &[&b_id, &a_id],
        )
        .await
        .unwrap();
    let g = a
        .until(|g| g.3 == "postgres_changes" && g.2 == "realtime:a")
        .await;
    assert_eq!(g.4["data"]["record"]["slug"], "x,y");
    let g = a
        .until(|g| g.3 == "postgres_changes" && g.2 == "realtime:hel")
        .await;
    assert_eq!(
        g.4["data"]["record"]["slug"], "x,y",
        "the imatch filter passed"
    );
    let g = a
        .until(|g| g.3 == "postgres_changes" && g.2 == "realtime:a")
        .await;
    assert_eq!(g.4["data"]["record"]["tags"], json!([3]));
    let g = b.until(|g| g.3 == "postgres_changes").await;
    assert_eq!(g.4["data"]["record"]["slug"], "b's \"note\"");
    let g = b.until(|g| g.3 == "postgres_changes").await;
    assert_eq!(g.4["data"]["record"]["tags"], json!([1, 2]));
    assert!(rls() > before);
    // A char(2) key is looked up whole (never cast as char(1)).
    owner
        .execute("INSERT INTO public.codes VALUES ('US', $1)", &[&a_id])
        .await
        .unwrap();
    let g = a
        .until(|g| g.3 == "postgres_changes" && g.2 == "realtime:a")
        .await;
    assert_eq!(g.4["data"]["record"]["code"], "US");
    // Eleven regular expressions in one channel are too many.
    let many: Vec<Value> = (0..11)
        .map(|i| json!({"event": "INSERT", "schema": "public", "table": "notes", "filter": format!("body=match.^{i}")}))
        .collect();
    let (sys, _) = pg_join(&mut a, "realtime:many", json!(many), Some(&ta)).await;
    assert!(
        sys["message"]
            .as_str()
            .unwrap()
            .contains("at most 10 match/imatch"),
        "{sys}"
    );
}

/// The body of the next postgres_changes event on `ws`.
async fn next_body(ws: &mut Ws) -> Value {
    ws.until(|g| g.3 == "postgres_changes").await.4["data"]["record"]["body"].clone()
}

#[tokio::test]
async fn owner_policies_are_decided_without_a_query_and_every_other_policy_by_postgres() {
    let db = TestDb::new().await;
    let (_, anon) = db.key(KeyKind::Publishable).await;
    let srv = db.server().await;
    let owner = db.owner().await;
    // Both ways round, both call forms (Supabase recommends the subquery).
    owner
        .batch_execute(
            "CREATE TABLE public.posts (id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
               author uuid, editor uuid, body text NOT NULL);
             CREATE POLICY mine ON public.posts FOR SELECT TO authenticated USING (author = (SELECT auth.uid()));
             CREATE POLICY edits ON public.posts FOR SELECT TO authenticated USING (auth.uid() = editor);
             GRANT SELECT ON public.posts TO authenticated;
             ALTER PUBLICATION supabase_realtime ADD TABLE public.posts;",
        )
        .await
        .unwrap();
    let (a_id, b_id) = (uuid::Uuid::new_v4(), uuid::Uuid::new_v4());
    let posts = json!([{"event": "INSERT", "schema": "public", "table": "posts"}]);
    let mut a = Ws::connect(&srv, &anon, true).await;
    let ta = user_token(&a_id.to_string());
    assert_eq!(
        pg_join(&mut a, "realtime:a", posts.clone(), Some(&ta))
            .await
            .0["status"],
        "ok"
    );
    let mut b = Ws::connect(&srv, &anon, true).await;
    let tb = user_token(&b_id.to_string());
    assert_eq!(
        pg_join(&mut b, "realtime:b", posts.clone(), Some(&tb))
            .await
            .0["status"],
        "ok"
    );
    let counts = || rls_counts(&srv);
    let insert = |author: uuid::Uuid, editor: Option<uuid::Uuid>, body: &'static str| {
        let owner = &owner;
        async move {
            owner
                .execute(
                    "INSERT INTO public.posts (author, editor, body) VALUES ($1, $2, $3)",
                    &[&author, &editor, &body],
                )
                .await
                .unwrap();
        }
    };
    let before = counts();
    insert(b_id, None, "b1").await;
    insert(a_id, Some(b_id), "a1, edited by b").await;
    insert(a_id, None, "a2").await;
    insert(b_id, None, "b2").await;
    // Each sees their own rows and those they edit, in commit order.
    assert_eq!(next_body(&mut a).await, "a1, edited by b");
    assert_eq!(next_body(&mut a).await, "a2");
    for want in ["b1", "a1, edited by b", "b2"] {
        assert_eq!(next_body(&mut b).await, want);
    }
    let after = counts();
    assert_eq!(
        after.0, before.0,
        "the owner shape needs no visibility query"
    );
    assert!(after.1 > before.1);

    // A `sub` in capitals reads as the same auth.uid() in PostgreSQL, which
    // alone is asked for that subscriber.
    let mut caps = Ws::connect(&srv, &anon, true).await;
    let tc = user_token(&a_id.to_string().to_uppercase());
    assert_eq!(
        pg_join(&mut caps, "realtime:c", posts.clone(), Some(&tc))
            .await
            .0["status"],
        "ok"
    );
    insert(b_id, None, "b3").await;
    insert(a_id, None, "a3").await;
    assert_eq!(next_body(&mut caps).await, "a3");
    assert_eq!(next_body(&mut a).await, "a3");
    assert_eq!(next_body(&mut b).await, "b3");
    assert!(counts().0 > after.0);

    // A policy replaced by one the server does not recognize: from the next
    // change on, PostgreSQL decides for everyone.
    owner
        .batch_execute(
            "DROP POLICY mine ON public.posts;
             CREATE POLICY mine ON public.posts FOR SELECT TO authenticated
               USING (author = auth.uid() AND body <> 'secret');",
        )
        .await
        .unwrap();
    let before = counts();
    insert(a_id, None, "secret").await;
    insert(a_id, None, "open").await;
    insert(b_id, None, "b4").await;
    assert_eq!(next_body(&mut a).await, "open");
    assert_eq!(next_body(&mut caps).await, "open");
    // B saw none of A's rows in between.
    assert_eq!(next_body(&mut b).await, "b4");
    let after = counts();
    assert!(after.0 > before.0);
    assert_eq!(after.1, before.1, "no group was decided by the server");
}

#[tokio::test]
async fn floods_and_too_many_connections_get_supabases_refusals_and_admin_lists_channels() {
    let db = TestDb::new().await;
    let (_, anon) = db.key(KeyKind::Publishable).await;
    let (_, secret) = db.key(KeyKind::Secret).await;
    let srv = db
        .server_with(|c| {
            c.realtime.max_connections = 2;
            c.realtime.max_joins_per_second = 3;
            c.realtime.max_events_per_second = 5;
            c.realtime.presence_timeout_secs = 3;
        })
        .await;
    let mut a = Ws::connect(&srv, &anon, true).await;
    let mut b = Ws::connect(&srv, &anon, true).await;
    // A third connection is refused before the upgrade.
    let url = format!(
        "{}/realtime/v1/websocket?apikey={anon}&vsn=2.0.0",
        srv.url.replace("http://", "ws://")
    );
    match tokio_tungstenite::connect_async(url).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => assert_eq!(r.status(), 429),
        other => panic!("{:?}", other.map(|_| ())),
    }

    // The admin list: B's channel and presence, over all nodes.
    let (jb, _) = b
        .join(
            "realtime:adm",
            json!({"presence": {"key": "b", "enabled": true}}),
        )
        .await;
    let r = b
        .push(
            Some(&jb),
            "realtime:adm",
            "presence",
            json!({"type": "presence", "event": "track", "payload": {}}),
        )
        .await;
    b.until(|g| g.1 == json!(r)).await;
    let admin = || async {
        srv.http
            .get(format!("{}/admin/v1/realtime", srv.url))
            .header("apikey", &secret)
            .send()
            .await
            .unwrap()
    };
    let r = srv
        .http
        .get(format!("{}/admin/v1/realtime", srv.url))
        .header("apikey", &anon)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403, "anon may not list channels");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let v: Value = admin().await.json().await.unwrap();
        let found =
            v["channels"].as_array().unwrap().iter().any(|c| {
                c["topic"] == "realtime:adm" && c["subscribers"] == 1 && c["presences"] == 1
            });
        if found {
            assert_eq!(v["nodes"][0]["connections"], 2, "{v}");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "never listed: {v}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Messages past the per-second limit close the channel, with Supabase's text.
    // (Twenty at once: more than five land in one second however the
    // window falls.)
    for i in 0..20 {
        b.push(
            Some(&jb),
            "realtime:adm",
            "broadcast",
            json!({"type": "broadcast", "event": "e", "payload": {"i": i}}),
        )
        .await;
    }
    let g = b.until(|g| g.3 == "system").await;
    assert_eq!(g.4["message"], "Too many messages per second");
    b.until(|g| g.3 == "phx_close").await;
    b.heartbeat().await;

    // Joins past the per-second limit: refused, then the socket is closed.
    // (Ten at once, not waiting for replies: more than three in one second.)
    for i in 0..10 {
        a.push(
            None,
            &format!("realtime:j{i}"),
            "phx_join",
            json!({"config": {}}),
        )
        .await;
    }
    let g = a
        .until(|g| g.3 == "phx_reply" && g.4["status"] == "error")
        .await;
    assert_eq!(
        g.4["response"]["reason"],
        "ClientJoinRateLimitReached: Too many joins per second"
    );
    let end = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match a.s.next().await {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return,
                Some(Ok(_)) => {}
            }
        }
    })
    .await;
    assert!(end.is_ok(), "the socket was not closed");
}

#[tokio::test]
async fn across_a_server_restart_every_change_committed_after_resubscribing_arrives_once() {
    let db = TestDb::new().await;
    let (_, anon) = db.key(KeyKind::Publishable).await;
    let owner = db.owner().await;
    owner.batch_execute(TODOS).await.unwrap();
    let a_id = uuid::Uuid::new_v4();
    let ta = user_token(&a_id.to_string());
    let bindings = json!([{"event": "INSERT", "schema": "public", "table": "todos"}]);

    // A stream of inserts, one every few milliseconds, across the restart;
    // each row remembers when its insert started.
    let started = std::sync::Arc::new(parking_lot::Mutex::new(
        Vec::<(i64, tokio::time::Instant)>::new(),
    ));
    let stop = tokio_util::sync::CancellationToken::new();
    let writer = {
        let (started, stop, c) = (started.clone(), stop.clone(), db.owner().await);
        tokio::spawn(async move {
            let mut id = 0i64;
            while !stop.is_cancelled() {
                id += 1;
                started.lock().push((id, tokio::time::Instant::now()));
                c.execute(
                    "INSERT INTO public.todos (id, owner, task) VALUES ($1, $2, 'x')",
                    &[&id, &a_id],
                )
                .await
                .unwrap();
                tokio::time::sleep(Duration::from_millis(5)).await; // the stream's pace
            }
        })
    };

    let one = db.server().await;
    let mut ws = Ws::connect(&one, &anon, true).await;
    assert_eq!(
        pg_join(&mut ws, "realtime:t", bindings.clone(), Some(&ta))
            .await
            .0["status"],
        "ok"
    );
    ws.until(|g| g.3 == "postgres_changes").await; // the stream reaches node one
    one.srv.shutdown().await;
    drop(ws);

    // The same clients reconnect to the restarted server and subscribe again.
    let two = db.server().await;
    let mut ws = Ws::connect(&two, &anon, true).await;
    assert_eq!(
        pg_join(&mut ws, "realtime:t", bindings, Some(&ta)).await.0["status"],
        "ok"
    );
    let subscribed = tokio::time::Instant::now();
    // Read until 100 rows started after the subscription have arrived.
    let mut got: Vec<i64> = Vec::new();
    let after = |started: &[(i64, tokio::time::Instant)]| -> Vec<i64> {
        started
            .iter()
            .filter(|(_, t)| *t > subscribed)
            .map(|(i, _)| *i)
            .collect()
    };
    loop {
        let g = ws.until(|g| g.3 == "postgres_changes").await;
        got.push(g.4["data"]["record"]["id"].as_i64().unwrap());
        let want = after(&started.lock());
        if want.len() >= 100 && want.iter().take(100).all(|i| got.contains(i)) {
            break;
        }
    }
    stop.cancel();
    writer.await.unwrap();
    let want: Vec<i64> = after(&started.lock()).into_iter().take(100).collect();
    for i in &want {
        assert_eq!(
            got.iter().filter(|g| *g == i).count(),
            1,
            "row {i} delivered once"
        );
    }
    let mut sorted = got.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(sorted.len(), got.len(), "no change twice: {got:?}");
}
