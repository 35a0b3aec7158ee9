//! Realtime part two: private channels authorized by the policies on
//! `realtime.messages` (joins, sends, presence, a new token), and broadcast
//! from the database (`realtime.send`, `realtime.broadcast_changes` from a
//! trigger) reaching subscribers on two nodes, with old messages pruned.

use crate::harness::*;
use crate::realtime::Ws;
use serde_json::{json, Value};
use wasmbase_host_api::keys::KeyKind;

const POLICIES: &str = "
  CREATE POLICY team_read ON realtime.messages FOR SELECT TO authenticated
    USING (realtime.topic() = 'team:' || (auth.jwt() ->> 'team'));
  CREATE POLICY team_write ON realtime.messages FOR INSERT TO authenticated
    WITH CHECK (realtime.topic() = 'team:' || (auth.jwt() ->> 'team')
                AND extension = 'broadcast' AND (auth.jwt() ->> 'writer') = 'true');
";

fn member(team: &str, writer: bool) -> String {
    sign(json!({
        "role": "authenticated", "aud": "authenticated", "exp": now() + 600,
        "sub": uuid::Uuid::new_v4().to_string(), "team": team, "writer": writer,
    }))
}

/// Joins `topic` with `config` and the token; returns the reply payload.
async fn join_as(ws: &mut Ws, topic: &str, config: Value, token: Option<&str>) -> Value {
    let mut payload = json!({ "config": config });
    if let Some(t) = token {
        payload["access_token"] = json!(t);
    }
    let r = ws.push(None, topic, "phx_join", payload).await;
    ws.until(|g| g.3 == "phx_reply" && g.1 == json!(r)).await.4
}

/// Pushes a broadcast on a joined topic; returns its ref.
async fn say(ws: &mut Ws, topic: &str, event: &str, n: u64) -> String {
    ws.push(
        Some("1"),
        topic,
        "broadcast",
        json!({"type": "broadcast", "event": event, "payload": {"n": n}}),
    )
    .await
}

const UNAUTHORIZED: &str =
    "Unauthorized: You do not have permissions to read from this Channel topic: team:a";

#[tokio::test]
async fn private_channels_follow_the_policies_on_realtime_messages() {
    let db = TestDb::new().await;
    let (_, anon) = db.key(KeyKind::Publishable).await;
    db.owner().await.batch_execute(POLICIES).await.unwrap();
    let srv = db.server().await;
    let private = json!({"private": true, "broadcast": {"self": false, "ack": true}});
    let (writer, reader, stranger) = (member("a", true), member("a", false), member("b", true));

    // Join: the SELECT policies decide; anon and another team are refused.
    let mut w = Ws::connect(&srv, &anon, true).await;
    let reply = join_as(&mut w, "realtime:team:a", private.clone(), Some(&writer)).await;
    assert_eq!(reply["status"], "ok", "{reply}");
    let mut r = Ws::connect(&srv, &anon, false).await;
    let reply = join_as(&mut r, "realtime:team:a", private.clone(), Some(&reader)).await;
    assert_eq!(reply["status"], "ok", "{reply}");
    for token in [Some(stranger.as_str()), None] {
        let mut s = Ws::connect(&srv, &anon, true).await;
        let reply = join_as(&mut s, "realtime:team:a", private.clone(), token).await;
        assert_eq!(
            reply,
            json!({"status": "error", "response": {"reason": UNAUTHORIZED}})
        );
    }
    // The public channel of the same name is another topic.
    let mut p = Ws::connect(&srv, &anon, true).await;
    let reply = join_as(
        &mut p,
        "realtime:team:a",
        json!({"broadcast": {"self": true}}),
        None,
    )
    .await;
    assert_eq!(reply["status"], "ok");

    // Sending needs the INSERT policies: the writer's is acked and reaches
    // the private reader only; the reader's is dropped without a reply.
    let denied = say(&mut r, "realtime:team:a", "from-reader", 1).await;
    r.heartbeat().await;
    let sent = say(&mut w, "realtime:team:a", "from-writer", 2).await;
    let g = w.until(|g| g.3 == "phx_reply" && g.1 == json!(sent)).await;
    assert_eq!(g.4["status"], "ok");
    let g = r
        .until(|g| g.3 == "broadcast" || (g.3 == "phx_reply" && g.1 == json!(denied)))
        .await;
    assert_eq!(g.4["event"], "from-writer", "{g:?}");
    say(&mut p, "realtime:team:a", "public", 3).await;
    let g = p.until(|g| g.3 == "broadcast").await;
    assert_eq!(
        g.4["event"], "public",
        "the public channel heard a private message"
    );
    // Presence needs INSERT for `presence`, which no policy gives.
    let t = w
        .push(
            Some("1"),
            "realtime:team:a",
            "presence",
            json!({"type": "presence", "event": "track", "payload": {"at": 1}}),
        )
        .await;
    let g = w.until(|g| g.3 == "phx_reply" && g.1 == json!(t)).await;
    assert_eq!(g.4["status"], "error");

    // The HTTP API asks the same INSERT policy.
    let http = |token: &str| {
        srv.http
            .post(format!(
                "{}/realtime/v1/api/broadcast/team:a/events/http?private=true",
                srv.url
            ))
            .header("apikey", &anon)
            .bearer_auth(token)
            .json(&json!({"n": 4}))
            .send()
    };
    assert_eq!(http(&reader).await.unwrap().status(), 403);
    assert_eq!(http(&writer).await.unwrap().status(), 202);
    let g = r.until(|g| g.3 == "broadcast").await;
    assert_eq!(g.4["event"], "http");

    // A new token is checked again: another team's closes the channel.
    r.push(
        Some("1"),
        "realtime:team:a",
        "access_token",
        json!({"access_token": member("a", false)}),
    )
    .await;
    r.heartbeat().await;
    r.push(
        Some("1"),
        "realtime:team:a",
        "access_token",
        json!({"access_token": stranger}),
    )
    .await;
    let g = r.until(|g| g.3 == "system").await;
    assert_eq!(
        (&g.4["status"], &g.4["message"]),
        (
            &json!("error"),
            &json!("You no longer have permission to read from this Channel topic: team:a")
        )
    );
    r.until(|g| g.3 == "phx_close").await;
    r.heartbeat().await;

    // With realtime.private_only, public joins are refused.
    let strict = db.server_with(|c| c.realtime.private_only = true).await;
    let mut s = Ws::connect(&strict, &anon, true).await;
    let reply = join_as(&mut s, "realtime:news", json!({}), None).await;
    assert_eq!(
        reply["response"]["reason"],
        "PrivateOnly: This project only allows private channels"
    );
    let reply = join_as(&mut s, "realtime:team:a", private, Some(&writer)).await;
    assert_eq!(reply["status"], "ok");
}

#[tokio::test]
async fn database_messages_reach_subscribers_on_every_node_and_old_ones_go() {
    let db = TestDb::new().await;
    let (_, anon) = db.key(KeyKind::Publishable).await;
    let c = db.owner().await;
    c.batch_execute(POLICIES).await.unwrap();
    // Supabase's documented pattern: a SECURITY DEFINER row trigger.
    c.batch_execute(
        "CREATE TABLE public.notes (id serial PRIMARY KEY, team text NOT NULL, body text);
         CREATE FUNCTION public.notes_broadcast() RETURNS trigger
           LANGUAGE plpgsql SECURITY DEFINER AS $$
           BEGIN
             PERFORM realtime.broadcast_changes('team:' || coalesce(NEW.team, OLD.team),
               TG_OP, TG_OP, TG_TABLE_NAME, TG_TABLE_SCHEMA, NEW, OLD);
             RETURN NULL;
           END $$;
         CREATE TRIGGER notes_broadcast AFTER INSERT OR UPDATE OR DELETE ON public.notes
           FOR EACH ROW EXECUTE FUNCTION public.notes_broadcast();",
    )
    .await
    .unwrap();
    let one = db
        .server_with(|c| c.realtime.presence_timeout_secs = 3)
        .await;
    let two = db.server().await;
    let mut public = Ws::connect(&one, &anon, false).await;
    assert_eq!(
        join_as(&mut public, "realtime:news", json!({}), None).await["status"],
        "ok"
    );
    let mut team = Ws::connect(&two, &anon, true).await;
    let reply = join_as(
        &mut team,
        "realtime:team:a",
        json!({"private": true}),
        Some(&member("a", false)),
    )
    .await;
    assert_eq!(reply["status"], "ok");

    // realtime.send: public on one node, private (the default) on the other.
    c.execute(
        "SELECT realtime.send('{\"n\": 1}', 'flash', 'news', false)",
        &[],
    )
    .await
    .unwrap();
    let g = public.until(|g| g.3 == "broadcast").await;
    assert_eq!(
        (&g.4["event"], &g.4["payload"]["n"]),
        (&json!("flash"), &json!(1))
    );
    assert!(
        g.4["payload"]["id"].is_string(),
        "the payload carries the message id: {}",
        g.4
    );
    assert_eq!(
        g.4["meta"]["id"], g.4["payload"]["id"],
        "and the frame's meta: {}",
        g.4
    );
    // A rolled-back send says nothing; a committed one after it arrives.
    c.batch_execute(
        "BEGIN; SELECT realtime.send('{\"n\": 2}', 'flash', 'team:a'); ROLLBACK;
         SELECT realtime.send('{\"n\": 3}', 'flash', 'team:a');",
    )
    .await
    .unwrap();
    let g = team.until(|g| g.3 == "broadcast").await;
    assert_eq!(g.4["payload"]["n"], json!(3), "{}", g.4);
    // A large message (past a NOTIFY's 8000 bytes) arrives whole.
    let big = "x".repeat(100_000);
    c.execute(
        "SELECT realtime.send(jsonb_build_object('big', $1::text), 'big', 'team:a')",
        &[&big],
    )
    .await
    .unwrap();
    let g = team.until(|g| g.3 == "broadcast").await;
    assert_eq!(g.4["payload"]["big"].as_str().map(str::len), Some(100_000));
    // broadcast_changes from the trigger, as Supabase's migrations use it.
    c.execute(
        "INSERT INTO public.notes (team, body) VALUES ('a', 'hello')",
        &[],
    )
    .await
    .unwrap();
    c.execute(
        "INSERT INTO public.notes (team, body) VALUES ('b', 'not yours')",
        &[],
    )
    .await
    .unwrap();
    c.execute("UPDATE public.notes SET body = 'hi' WHERE team = 'a'", &[])
        .await
        .unwrap();
    let g = team.until(|g| g.3 == "broadcast").await;
    assert_eq!(g.4["event"], "INSERT");
    let p = &g.4["payload"];
    assert_eq!(
        (
            &p["operation"],
            &p["table"],
            &p["schema"],
            &p["record"]["body"],
            &p["old_record"]
        ),
        (
            &json!("INSERT"),
            &json!("notes"),
            &json!("public"),
            &json!("hello"),
            &Value::Null
        )
    );
    let g = team.until(|g| g.3 == "broadcast").await;
    assert_eq!(
        (
            &g.4["event"],
            &g.4["payload"]["old_record"]["body"],
            &g.4["payload"]["record"]["body"]
        ),
        (&json!("UPDATE"), &json!("hello"), &json!("hi"))
    );
    // Replay (private channels): the latest private broadcasts, oldest first.
    let mut late = Ws::connect(&one, &anon, false).await;
    let reply = join_as(
        &mut late,
        "realtime:team:a",
        json!({"private": true, "broadcast": {"replay": {"since": 0, "limit": 2}}}),
        Some(&member("a", false)),
    )
    .await;
    assert_eq!(reply["status"], "ok", "{reply}");
    for event in ["INSERT", "UPDATE"] {
        let g = late.until(|g| g.3 == "broadcast").await;
        assert_eq!(
            (&g.4["event"], &g.4["meta"]["replayed"]),
            (&json!(event), &json!(true)),
            "{}",
            g.4
        );
        assert_eq!(g.4["meta"]["id"], g.4["payload"]["id"]);
    }
    late.heartbeat().await;
    for (config, reason) in [
        (
            json!({"broadcast": {"replay": {"since": 0}}}),
            "UnableToReplayMessages: Replay is not allowed for public channels",
        ),
        (
            json!({"private": true, "broadcast": {"replay": {"since": "yesterday"}}}),
            "UnableToReplayMessages: Replay params are not valid",
        ),
    ] {
        let reply = join_as(
            &mut late,
            "realtime:team:z",
            config,
            Some(&member("z", false)),
        )
        .await;
        assert_eq!(reply["response"]["reason"], reason);
    }
    let e = c
        .execute(
            "SELECT realtime.broadcast_changes('t', 'e', 'INSERT', 'notes', 'public', NULL::record, NULL::record, 'STATEMENT')",
            &[],
        )
        .await
        .unwrap_err();
    assert!(
        e.as_db_error().unwrap().message().contains(
            "Failed to process the row: function can only be triggered for each row, not for each statement"
        ),
        "{e}"
    );
    // The read-check probe can never commit, whoever calls it.
    let e = c
        .batch_execute(
            "BEGIN; SET LOCAL ROLE authenticated;
             SELECT realtime.wasmbase_probe('forged', ARRAY[gen_random_uuid(), gen_random_uuid()]);
             COMMIT;",
        )
        .await
        .unwrap_err();
    assert!(format!("{e:?}").contains("always rolled back"), "{e:?}");
    let _ = c.batch_execute("ROLLBACK").await;
    let n: i64 = c
        .query_one(
            "SELECT count(*) FROM realtime.messages WHERE topic = 'forged'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 0);
    // Messages older than the retention go (a beat is a second here).
    c.execute(
        "UPDATE realtime.messages SET inserted_at = now() - interval '73 hours' WHERE event = 'big'",
        &[],
    )
    .await
    .unwrap();
    until_rows(
        &c,
        "the old message is pruned",
        30,
        "SELECT 1 FROM realtime.messages WHERE event = 'big'",
        |r| r.is_empty(),
    )
    .await;
    let left: i64 = c
        .query_one(
            "SELECT count(*) FROM realtime.messages WHERE event = 'flash'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(left, 2, "newer messages stay");
}
