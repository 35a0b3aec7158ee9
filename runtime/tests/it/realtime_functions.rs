//! Functions broadcasting through the `realtime` interface: the `announce`
//! example (built from the real SDK, granted `room:*`) on one node reaches
//! sockets on another, public and private (policies decide who hears a
//! private one); topics outside the grant, bad payloads and a component
//! whose manifest grants no topic are refused with clear errors.

use crate::functions::deploy;
use crate::harness::*;
use crate::realtime::Ws;
use serde_json::{json, Value};
use wasmbase_host_api::keys::KeyKind;

const POLICIES: &str = "
  CREATE POLICY members_read ON realtime.messages FOR SELECT TO authenticated
    USING (realtime.topic() = 'room:' || (auth.jwt() ->> 'room'));
";

fn member(room: &str) -> String {
    sign(json!({
        "role": "authenticated", "aud": "authenticated", "exp": now() + 600,
        "sub": uuid::Uuid::new_v4().to_string(), "room": room,
    }))
}

async fn announce(srv: &TestServer, key: &str, body: Value) -> (u16, Value) {
    let r = srv
        .http
        .post(format!("{}/fn/announce", srv.url))
        .header("apikey", key)
        .json(&body)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn functions_broadcast_to_granted_topics_on_every_node_and_nowhere_else() {
    let db = TestDb::new().await;
    let (_, anon) = db.key(KeyKind::Publishable).await;
    let (_, secret) = db.key(KeyKind::Secret).await;
    db.owner().await.batch_execute(POLICIES).await.unwrap();
    let fns = db.functions_server(|_| {}).await;
    fns.wait_function("announce").await;
    let other = db.server().await;

    // A public room and a private one, joined on the other node.
    let mut public = Ws::connect(&other, &anon, true).await;
    let (_, reply) = public.join("realtime:room:1", json!({})).await;
    assert_eq!(reply["status"], "ok");
    let mut private = Ws::connect(&other, &anon, false).await;
    let r = private
        .push(
            None,
            "realtime:room:2",
            "phx_join",
            json!({"config": {"private": true}, "access_token": member("2")}),
        )
        .await;
    let reply = private.until(|g| g.1 == json!(r)).await.4;
    assert_eq!(reply["status"], "ok", "{reply}");

    let (s, v) = announce(
        &fns,
        &anon,
        json!({"topic": "room:1", "event": "message", "payload": {"n": 1}}),
    )
    .await;
    assert_eq!((s, &v), (202, &json!({"sent": "room:1"})));
    let g = public.until(|g| g.3 == "broadcast").await;
    assert_eq!(
        (&g.4["event"], &g.4["payload"]["n"]),
        (&json!("message"), &json!(1))
    );

    let (s, _) = announce(
        &fns,
        &anon,
        json!({"topic": "room:2", "event": "secret", "payload": {"n": 2}, "private": true}),
    )
    .await;
    assert_eq!(s, 202);
    let g = private.until(|g| g.3 == "broadcast").await;
    assert_eq!(
        (&g.4["event"], &g.4["payload"]["n"]),
        (&json!("secret"), &json!(2))
    );
    // The public room of that name never hears the private message.
    let mut public2 = Ws::connect(&other, &anon, true).await;
    public2.join("realtime:room:2", json!({})).await;
    announce(
        &fns,
        &anon,
        json!({"topic": "room:2", "event": "open", "private": false}),
    )
    .await;
    let g = public2.until(|g| g.3 == "broadcast").await;
    assert_eq!(g.4["event"], "open");

    // Outside the grant, odd topics, bad payloads: clear errors, nothing sent.
    let refusals = [
        (json!({"topic": "lobby"}), 403, "AccessDenied"),
        (json!({"topic": "rooms:1"}), 403, "AccessDenied"),
        (json!({"topic": ""}), 400, "InvalidTopic"),
        (json!({"topic": "room:\u{7}"}), 400, "InvalidTopic"),
        (
            json!({"topic": "room:1", "payload": "x".repeat(3_000_001)}),
            413,
            "PayloadTooLarge",
        ),
    ];
    for (body, status, code) in refusals {
        let (s, v) = announce(&fns, &anon, body).await;
        assert_eq!((s, v["code"].as_str()), (status, Some(code)), "{v}");
    }
    let n: i64 = db
        .owner()
        .await
        .query_one(
            "SELECT count(*) FROM realtime.messages WHERE topic NOT IN ('room:1', 'room:2')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 0);
    public.heartbeat().await;

    // A manifest that grants no topic: the component is refused at load.
    let wasm = std::fs::read(guests().join("wasm32-wasip2/release/announce.wasm")).unwrap();
    let (s, e) = deploy(&other, &secret, "loose", "name = \"loose\"", &wasm).await;
    assert_eq!(s, 400, "{e}");
    let msg = e["message"].as_str().unwrap_or_default();
    assert!(
        msg.contains("wasmbase:platform/realtime")
            && msg.contains("no realtime grant")
            && msg.contains("realtime = [\"<topic pattern>\""),
        "{e}"
    );
    let (s, e) = deploy(
        &other,
        &secret,
        "loose",
        "name = \"loose\"\nrealtime = [\"\"]",
        &wasm,
    )
    .await;
    assert_eq!(s, 400, "{e}");
    assert!(
        e["message"]
            .as_str()
            .unwrap_or_default()
            .contains("`realtime`"),
        "{e}"
    );
}
