//! One node's realtime hub: which local channels are joined to which topic,
//! fan-out to them, and the bus that makes N nodes behave as one through
//! PostgreSQL, the only shared service — a message published on any node is
//! delivered locally at once and sent to the others as a NOTIFY on
//! [`CHANNEL`] (one too large for a NOTIFY payload crosses by id through
//! `wasmbase.realtime_outbox`). Presence lives in `wasmbase.realtime_presence`
//! (the union over nodes is a topic's state); each node says it is alive in
//! `wasmbase.realtime_nodes`, and any node removes a dead node's presences
//! everywhere.
//!
//! Fan-out never waits on a socket: each joined channel has a bounded queue
//! ([`Sub`]); a socket whose queue is full is told to close, so one slow
//! client never delays the others and nothing is buffered without bound.

use super::frame::{self, Broadcast, Frame, Payload, Vsn};
use base64::Engine;
use deadpool_postgres::Pool;
use parking_lot::RwLock;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// NOTIFY channel of the bus.
pub const CHANNEL: &str = "wasmbase_realtime";

/// Largest NOTIFY payload sent inline (PostgreSQL's limit is 8000 bytes).
const INLINE_MAX: usize = 7900;

/// A joined channel as fan-out sees it.
#[derive(Clone)]
pub struct Sub {
    /// Unique on this node.
    pub id: u64,
    /// The socket's protocol version.
    pub vsn: Vsn,
    /// The socket's outgoing queue.
    pub tx: mpsc::Sender<Frame>,
    /// Cancelled when the socket must close (its queue overflowed).
    pub kill: CancellationToken,
    /// Whether it wants presence diffs (and, on a private topic, may read
    /// them).
    pub presence: bool,
    /// Whether it may read broadcasts (always on a public topic; on a private
    /// one, what the SELECT policies allow).
    pub read_broadcast: bool,
}

impl Sub {
    /// Queues `f`; a full queue closes the socket (it stopped reading).
    fn deliver(&self, f: Frame, out: &AtomicU64) {
        out.fetch_add(1, Ordering::Relaxed);
        if let Err(mpsc::error::TrySendError::Full(_)) = self.tx.try_send(f) {
            self.kill.cancel();
        }
    }
}

/// What crosses nodes.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Wire {
    /// Sending node.
    n: uuid::Uuid,
    /// The node's message number: it makes every payload unique, since
    /// PostgreSQL folds identical notifications of one transaction (a batch).
    s: u64,
    /// Sub-topic (without `realtime:`).
    t: String,
    /// A private channel's message (a private and a public channel of one
    /// name are different topics).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    p: bool,
    #[serde(flatten)]
    m: WireMsg,
}

/// A row of `realtime.messages`: its id and `inserted_at` (microseconds
/// since the epoch, as written), its primary key.
type MessageKey = (uuid::Uuid, i64);

/// Most messages one replay sends (Supabase's hard limit).
pub const REPLAY_MAX: i64 = 25;

/// NOTIFY channel of messages written to `realtime.messages` (migration 0024).
pub const MESSAGES_CHANNEL: &str = "wasmbase_realtime_messages";

/// The hub's key of a channel topic (`realtime:<name>`): the topic itself
/// for a public channel, `private:` before it for a private one.
pub fn key(topic: &str, private: bool) -> String {
    if private {
        format!("private:{topic}")
    } else {
        topic.to_string()
    }
}

/// The client's topic of a hub key, and whether it is private.
fn split_key(key: &str) -> (&str, bool) {
    match key.strip_prefix("private:") {
        Some(topic) => (topic, true),
        None => (key, false),
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "k")]
enum WireMsg {
    /// A user broadcast: event, and JSON payload or base64 bytes.
    #[serde(rename = "b")]
    Broadcast {
        e: String,
        // (A `Value`, not a `RawValue`: serde cannot buffer a raw value
        // through the tagged, flattened shape.)
        #[serde(skip_serializing_if = "Option::is_none")]
        j: Option<Value>,
        #[serde(skip_serializing_if = "Option::is_none")]
        b: Option<String>,
    },
    /// A presence diff.
    #[serde(rename = "p")]
    Presence { joins: Value, leaves: Value },
    /// A private channel's broadcast. Its own tag, so a node from before
    /// private channels cannot parse it (and drops it) rather than deliver
    /// it to the public topic of the same name.
    #[serde(rename = "B")]
    PrivateBroadcast {
        e: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        j: Option<Value>,
        #[serde(skip_serializing_if = "Option::is_none")]
        b: Option<String>,
    },
    /// A private channel's presence diff (see `PrivateBroadcast`).
    #[serde(rename = "P")]
    PrivatePresence { joins: Value, leaves: Value },
}

/// The node's hub.
pub struct Hub {
    /// This node's id on the bus.
    pub node: uuid::Uuid,
    system: Pool,
    subs: RwLock<HashMap<String, Vec<Sub>>>,
    next: AtomicU64,
    /// Server shutdown: sockets close.
    pub stop: CancellationToken,
    /// postgres_changes subscriptions and delivery.
    pub changes: Arc<super::changes::Changes>,
    /// WebSocket connections open on this node.
    connections: Arc<std::sync::atomic::AtomicUsize>,
    /// Frames received from clients.
    pub messages_in: AtomicU64,
    /// Frames queued to clients by fan-out (broadcast, presence diffs).
    pub messages_out: AtomicU64,
    /// The bus writer's queue.
    bus: mpsc::Sender<Outgoing>,
    /// Database messages waiting to be read back (`read_messages`), with the
    /// payload limit of when they came.
    inbox: mpsc::Sender<(MessageKey, usize)>,
    inbox_rx: parking_lot::Mutex<Option<mpsc::Receiver<(MessageKey, usize)>>>,
    /// Whether the bus's LISTEN is in place (the node is ready only then).
    pub listening: tokio::sync::watch::Sender<bool>,
}

/// One open connection's place under `realtime.max_connections`; given back
/// when dropped.
pub struct Slot(Arc<std::sync::atomic::AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A message on its way to the other nodes.
struct Outgoing {
    text: String,
    /// Told once it is sent.
    done: Option<tokio::sync::oneshot::Sender<()>>,
}

/// Messages waiting for the bus writer; past this, senders wait.
const BUS_QUEUE: usize = 10_000;

/// Sends queued messages to the other nodes: everything that queued up while
/// the last statement ran goes in the next one (`pg_notify` over an array,
/// in order), so a burst costs a round trip per batch, not per message. A
/// message too large for a NOTIFY goes through the outbox, in its place.
async fn bus_writer(system: Pool, mut rx: mpsc::Receiver<Outgoing>) {
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while batch.len() < 512 {
            match rx.try_recv() {
                Ok(o) => batch.push(o),
                Err(_) => break,
            }
        }
        let r = async {
            let c = system.get().await?;
            let mut small: Vec<&str> = Vec::new();
            for o in &batch {
                if o.text.len() <= INLINE_MAX {
                    small.push(&o.text);
                    continue;
                }
                if !small.is_empty() {
                    notify_all(&c, &small).await?;
                    small.clear();
                }
                // Too large for a NOTIFY: the body goes by id, in the same statement.
                c.execute(
                    "WITH o AS (INSERT INTO wasmbase.realtime_outbox (body) VALUES ($2) RETURNING id) \
                     SELECT pg_notify($1, json_build_object('o', o.id)::text) FROM o",
                    &[&CHANNEL, &o.text],
                )
                .await?;
            }
            if !small.is_empty() {
                notify_all(&c, &small).await?;
            }
            anyhow::Ok(())
        };
        if let Err(e) = r.await {
            tracing::warn!(error = %format!("{e:#}"), "realtime: could not reach the other nodes");
        }
        for o in batch {
            if let Some(d) = o.done {
                let _ = d.send(());
            }
        }
    }
}

async fn notify_all(
    c: &deadpool_postgres::Object,
    texts: &[&str],
) -> Result<(), tokio_postgres::Error> {
    c.execute(
        "SELECT pg_notify($1, m) FROM unnest($2::text[]) WITH ORDINALITY AS u(m, i) ORDER BY i",
        &[&CHANNEL, &texts],
    )
    .await
    .map(drop)
}

/// A presence entry of one channel: its key, ref and meta.
#[derive(Debug, Clone)]
pub struct Tracked {
    /// Presence key.
    pub key: String,
    /// `phx_ref`.
    pub phx_ref: String,
    /// The tracked payload.
    pub meta: Map<String, Value>,
}

/// A new `phx_ref`: 8 random bytes, base64 (as Phoenix.Tracker makes them).
fn new_ref() -> String {
    base64::engine::general_purpose::STANDARD.encode(rand::random::<[u8; 8]>())
}

/// A deleted presence row (`RETURNING topic, key, ref, meta`): its topic and entry.
fn removed(r: &tokio_postgres::Row) -> (String, Tracked) {
    let meta = match r.get::<_, Value>(3) {
        Value::Object(m) => m,
        _ => Map::new(),
    };
    (
        r.get(0),
        Tracked {
            key: r.get(1),
            phx_ref: r.get(2),
            meta,
        },
    )
}

/// `{key: {metas: [meta + phx_ref (+ phx_ref_prev)]}}` for one entry.
fn metas(t: &Tracked, prev: Option<&str>) -> Value {
    let mut m = t.meta.clone();
    m.insert("phx_ref".into(), json!(t.phx_ref));
    if let Some(p) = prev {
        m.insert("phx_ref_prev".into(), json!(p));
    }
    json!({ t.key.clone(): { "metas": [m] } })
}

impl Hub {
    /// A hub for a node writing through `system`.
    pub fn new(
        system: Pool,
        stop: CancellationToken,
        changes: Arc<super::changes::Changes>,
    ) -> Hub {
        let (bus, rx) = mpsc::channel(BUS_QUEUE);
        tokio::spawn(bus_writer(system.clone(), rx));
        let (inbox, inbox_rx) = mpsc::channel(BUS_QUEUE);
        Hub {
            bus,
            inbox,
            inbox_rx: parking_lot::Mutex::new(Some(inbox_rx)),
            listening: tokio::sync::watch::channel(false).0,
            node: uuid::Uuid::new_v4(),
            system,
            subs: RwLock::new(HashMap::new()),
            next: AtomicU64::new(1),
            stop,
            changes,
            connections: Default::default(),
            messages_in: AtomicU64::new(0),
            messages_out: AtomicU64::new(0),
        }
    }

    /// A place for one more connection, if fewer than `max` are open.
    pub fn connect(&self, max: usize) -> Option<Slot> {
        let c = &self.connections;
        c.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
            (n < max).then_some(n + 1)
        })
        .ok()
        .map(|_| Slot(c.clone()))
    }

    /// WebSocket connections open on this node.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::Acquire)
    }

    /// The platform pool (for join-time lookups).
    pub fn system(&self) -> &Pool {
        &self.system
    }

    /// A fresh id for a channel or a postgres_changes binding.
    pub fn next_id(&self) -> u64 {
        self.next.fetch_add(1, Ordering::Relaxed)
    }

    /// Joins `sub` to `topic` (the full `realtime:` topic).
    pub fn subscribe(&self, topic: &str, sub: Sub) {
        self.subs
            .write()
            .entry(topic.to_string())
            .or_default()
            .push(sub);
    }

    /// Removes channel `id` from `topic`.
    pub fn unsubscribe(&self, topic: &str, id: u64) {
        let mut subs = self.subs.write();
        if let Some(v) = subs.get_mut(topic) {
            v.retain(|s| s.id != id);
            if v.is_empty() {
                subs.remove(topic);
            }
        }
    }

    /// Channels joined on this node, by topic (for metrics and the admin list).
    pub fn counts(&self) -> Vec<(String, usize)> {
        self.subs
            .read()
            .iter()
            .map(|(t, v)| (t.clone(), v.len()))
            .collect()
    }

    fn local_broadcast(&self, key: &str, b: &Broadcast, except: Option<u64>) {
        self.local_broadcast_meta(key, b, except, None)
    }

    fn local_broadcast_meta(
        &self,
        key: &str,
        b: &Broadcast,
        except: Option<u64>,
        meta: Option<&str>,
    ) {
        let subs = self.subs.read();
        let Some(list) = subs.get(key) else { return };
        let (topic, _) = split_key(key);
        // One encoding per protocol version, shared by every subscriber.
        let mut encoded: [Option<Option<Frame>>; 2] = [None, None];
        for s in list
            .iter()
            .filter(|s| Some(s.id) != except && s.read_broadcast)
        {
            let slot = &mut encoded[(s.vsn == Vsn::V2) as usize];
            let f = slot.get_or_insert_with(|| frame::encode_broadcast(s.vsn, topic, b, meta));
            if let Some(f) = f {
                s.deliver(f.clone(), &self.messages_out);
            }
        }
    }

    fn local_presence(&self, key: &str, joins: &Value, leaves: &Value) {
        let subs = self.subs.read();
        let Some(list) = subs.get(key) else { return };
        let (topic, _) = split_key(key);
        let payload = json!({ "joins": joins, "leaves": leaves });
        let mut text: [Option<axum::extract::ws::Utf8Bytes>; 2] = [None, None];
        for s in list.iter().filter(|s| s.presence) {
            let t = text[(s.vsn == Vsn::V2) as usize].get_or_insert_with(|| {
                frame::encode_text(s.vsn, None, None, topic, "presence_diff", &payload).into()
            });
            s.deliver(Frame::Text(t.clone()), &self.messages_out);
        }
    }

    /// Broadcasts `b` on `topic` to every channel on every node, except the
    /// local channel `except` (a sender without `self`); with `wait`, returns
    /// once the other nodes have been sent it.
    pub async fn broadcast(&self, topic: &str, b: Broadcast, except: Option<u64>, wait: bool) {
        self.local_broadcast(topic, &b, except);
        let (j, bin) = match &b.payload {
            Payload::Json(s) => (serde_json::from_str::<Value>(s).ok(), None),
            Payload::Binary(bytes) => (
                None,
                Some(base64::engine::general_purpose::STANDARD.encode(bytes)),
            ),
        };
        self.send(
            topic,
            WireMsg::Broadcast {
                e: b.event,
                j,
                b: bin,
            },
            wait,
        )
        .await;
    }

    async fn presence_diff(&self, topic: &str, joins: Value, leaves: Value) {
        self.local_presence(topic, &joins, &leaves);
        self.send(topic, WireMsg::Presence { joins, leaves }, false)
            .await;
    }

    /// Sends to the other nodes: queued for the bus writer, which sends
    /// whatever has queued up in one statement, in order; with `wait`,
    /// returns once it is sent (an acked broadcast).
    async fn send(&self, key: &str, m: WireMsg, wait: bool) {
        let (topic, private) = split_key(key);
        let Some(sub) = topic.strip_prefix("realtime:") else {
            return;
        };
        let m = match (m, private) {
            (WireMsg::Broadcast { e, j, b }, true) => WireMsg::PrivateBroadcast { e, j, b },
            (WireMsg::Presence { joins, leaves }, true) => {
                WireMsg::PrivatePresence { joins, leaves }
            }
            (m, _) => m,
        };
        let wire = Wire {
            n: self.node,
            s: self.next_id(),
            t: sub.to_string(),
            p: private,
            m,
        };
        let Ok(text) = serde_json::to_string(&wire) else {
            return;
        };
        let (done, sent) = match wait {
            true => {
                let (tx, rx) = tokio::sync::oneshot::channel();
                (Some(tx), Some(rx))
            }
            false => (None, None),
        };
        // A full queue (the database is slow) holds the sender back.
        if self.bus.send(Outgoing { text, done }).await.is_err() {
            return;
        }
        if let Some(rx) = sent {
            let _ = rx.await;
        }
    }

    /// A NOTIFY on [`CHANNEL`] from the listener: delivers another node's
    /// message to this node's channels.
    pub async fn on_notify(&self, payload: &str) {
        let text = match serde_json::from_str::<Value>(payload) {
            Ok(v) if v.get("o").is_some() => {
                let Some(id) = v["o"].as_i64() else { return };
                let body = async {
                    let c = self.system.get().await?;
                    let row = c
                        .query_opt(
                            "SELECT body FROM wasmbase.realtime_outbox WHERE id = $1",
                            &[&id],
                        )
                        .await?;
                    anyhow::Ok(row.map(|r| r.get::<_, String>(0)))
                };
                match body.await {
                    Ok(Some(b)) => b,
                    _ => return,
                }
            }
            Ok(_) => payload.to_string(),
            Err(_) => return,
        };
        let Ok(w) = serde_json::from_str::<Wire>(&text) else {
            return;
        };
        if w.n == self.node {
            return;
        }
        let private = matches!(
            w.m,
            WireMsg::PrivateBroadcast { .. } | WireMsg::PrivatePresence { .. }
        );
        if private != w.p {
            return;
        }
        let topic = key(&format!("realtime:{}", w.t), private);
        match w.m {
            WireMsg::Broadcast { e, j, b } | WireMsg::PrivateBroadcast { e, j, b } => {
                let payload = match (j, b) {
                    (Some(j), _) => Payload::Json(Arc::from(j.to_string())),
                    (None, Some(b64)) => {
                        match base64::engine::general_purpose::STANDARD.decode(b64) {
                            Ok(bytes) => Payload::Binary(bytes.into()),
                            Err(_) => return,
                        }
                    }
                    (None, None) => return,
                };
                self.local_broadcast(&topic, &Broadcast { event: e, payload }, None);
            }
            WireMsg::Presence { joins, leaves } | WireMsg::PrivatePresence { joins, leaves } => {
                self.local_presence(&topic, &joins, &leaves)
            }
        }
    }

    /// What channel `id` on `key` may read now (a new token's policies).
    pub fn set_reads(&self, key: &str, id: u64, read_broadcast: bool, presence: bool) {
        if let Some(list) = self.subs.write().get_mut(key) {
            for s in list.iter_mut().filter(|s| s.id == id) {
                s.read_broadcast = read_broadcast;
                s.presence = presence;
            }
        }
    }

    /// A NOTIFY on [`MESSAGES_CHANNEL`]: a message committed to
    /// `realtime.messages` (by `realtime.send`, a trigger, any INSERT the
    /// policies allowed). Queued for [`Hub::read_messages`] — only when this
    /// node has a channel on its topic — so the bus's listener never waits
    /// on a read; every node gets the NOTIFY, so it is not sent on the bus.
    pub fn on_message(&self, payload: &str, max_payload: usize) {
        #[derive(Deserialize)]
        struct Note {
            i: uuid::Uuid,
            a: i64,
            #[serde(default)]
            p: bool,
            t: Option<String>,
        }
        let Ok(n) = serde_json::from_str::<Note>(payload) else {
            return;
        };
        if let Some(t) = &n.t {
            if !self
                .subs
                .read()
                .contains_key(&key(&format!("realtime:{t}"), n.p))
            {
                return;
            }
        }
        if self.inbox.try_send(((n.i, n.a), max_payload)).is_err() {
            tracing::warn!("realtime: too many database messages waiting; one is not delivered");
        }
    }

    /// Reads queued database messages back — whatever queued up while the
    /// last read ran, in one query — and delivers them in the order their
    /// transactions committed, each with `meta: {id}`. Runs until the server
    /// stops (started by [`Hub::run`]).
    async fn read_messages(self: Arc<Self>) {
        let Some(mut rx) = self.inbox_rx.lock().take() else {
            return;
        };
        loop {
            let first = tokio::select! {
                m = rx.recv() => m,
                _ = self.stop.cancelled() => None,
            };
            let Some(first) = first else { return };
            let mut batch = vec![first];
            while batch.len() < 512 {
                match rx.try_recv() {
                    Ok(m) => batch.push(m),
                    Err(_) => break,
                }
            }
            let ids: Vec<uuid::Uuid> = batch.iter().map(|((i, _), _)| *i).collect();
            let rows = async {
                let c = self.system.get().await?;
                let rows = c
                    .query(
                        "SELECT id, (extract(epoch FROM inserted_at) * 1000000)::bigint, topic, \
                           event, coalesce(private, false), payload::text, binary_payload \
                         FROM realtime.messages \
                         WHERE id = ANY($1) AND extension = 'broadcast' AND event IS NOT NULL",
                        &[&ids],
                    )
                    .await?;
                anyhow::Ok(rows)
            };
            let rows = match rows.await {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(error = %format!("{e:#}"), "realtime: reading database messages");
                    continue;
                }
            };
            // By the whole key: one id may stand in several rows.
            let by_key: HashMap<MessageKey, &tokio_postgres::Row> = rows
                .iter()
                .filter_map(|r| Some(((r.try_get(0).ok()?, r.try_get(1).ok()?), r)))
                .collect();
            for (k, max_payload) in batch {
                let Some(row) = by_key.get(&k) else { continue };
                self.deliver_message(k.0, row, max_payload);
            }
        }
    }

    /// Delivers one row read back by [`Hub::read_messages`].
    fn deliver_message(&self, id: uuid::Uuid, row: &tokio_postgres::Row, max_payload: usize) {
        let (Ok(topic), Ok(event), Ok(private)) = (
            row.try_get::<_, String>(2),
            row.try_get::<_, String>(3),
            row.try_get::<_, bool>(4),
        ) else {
            return;
        };
        let Some(payload) =
            Payload::stored(row.try_get(5).ok().flatten(), row.try_get(6).ok().flatten())
        else {
            return;
        };
        let size = payload.len();
        if size > max_payload {
            tracing::warn!(topic, size, "realtime: a database message is larger than realtime.max_payload_bytes; not delivered");
            return;
        }
        let meta = json!({ "id": id }).to_string();
        self.local_broadcast_meta(
            &key(&format!("realtime:{topic}"), private),
            &Broadcast { event, payload },
            None,
            Some(&meta),
        );
    }

    /// The last `limit` (at most [`REPLAY_MAX`]) private broadcasts of
    /// `topic` (the sub-topic) in `realtime.messages` since `since_ms`
    /// (milliseconds since the epoch), oldest first: Supabase's broadcast
    /// replay, read after the join was authorized, as Supabase reads it.
    pub async fn replay(
        &self,
        topic: &str,
        since_ms: i64,
        limit: i64,
        max_payload: usize,
    ) -> anyhow::Result<Vec<(uuid::Uuid, Broadcast)>> {
        let c = self.system.get().await?;
        let rows = c
            .query(
                "SELECT id, event, payload::text, binary_payload FROM ( \
                   SELECT id, event, payload, binary_payload, inserted_at FROM realtime.messages \
                   WHERE topic = $1 AND private IS TRUE AND extension = 'broadcast' \
                     AND event IS NOT NULL \
                     AND inserted_at >= to_timestamp($2::float8 / 1000)::timestamp \
                     AND inserted_at < now()::timestamp + interval '1 minute' \
                     AND coalesce(octet_length(payload::text), octet_length(binary_payload), 0) <= $4::bigint \
                   ORDER BY inserted_at DESC LIMIT $3) m ORDER BY inserted_at",
                &[
                    &topic,
                    &(since_ms as f64),
                    &limit.clamp(1, REPLAY_MAX),
                    &(max_payload as i64),
                ],
            )
            .await?;
        Ok(rows
            .iter()
            .filter_map(|r| {
                let payload =
                    Payload::stored(r.try_get(2).ok().flatten(), r.try_get(3).ok().flatten())?;
                Some((
                    r.try_get(0).ok()?,
                    Broadcast {
                        event: r.try_get(1).ok()?,
                        payload,
                    },
                ))
            })
            .collect())
    }

    /// Tracks (or, with `prev`, updates) a channel's presence on `topic`;
    /// returns the new entry.
    pub async fn track(
        &self,
        topic: &str,
        key: &str,
        meta: Map<String, Value>,
        prev: Option<Tracked>,
    ) -> anyhow::Result<Tracked> {
        let t = Tracked {
            key: key.to_string(),
            phx_ref: new_ref(),
            meta,
        };
        let c = self.system.get().await?;
        c.execute(
            "WITH d AS (DELETE FROM wasmbase.realtime_presence WHERE node = $1 AND ref = $6) \
             INSERT INTO wasmbase.realtime_presence (node, topic, key, ref, meta) VALUES ($1, $2, $3, $4, $5)",
            &[
                &self.node,
                &topic,
                &t.key,
                &t.phx_ref,
                &Value::Object(t.meta.clone()),
                &prev.as_ref().map(|p| p.phx_ref.clone()),
            ],
        )
        .await?;
        drop(c);
        let leaves = prev.as_ref().map_or(json!({}), |p| metas(p, None));
        let joins = metas(&t, prev.as_ref().map(|p| p.phx_ref.as_str()));
        self.presence_diff(topic, joins, leaves).await;
        Ok(t)
    }

    /// Removes a channel's presence from `topic`.
    pub async fn untrack(&self, topic: &str, t: &Tracked) {
        let r = async {
            let c = self.system.get().await?;
            c.execute(
                "DELETE FROM wasmbase.realtime_presence WHERE node = $1 AND ref = $2",
                &[&self.node, &t.phx_ref],
            )
            .await?;
            anyhow::Ok(())
        };
        if let Err(e) = r.await {
            tracing::warn!(error = %format!("{e:#}"), "realtime: removing a presence");
        }
        self.presence_diff(topic, json!({}), metas(t, None)).await;
    }

    /// A topic's presence state over all nodes: `{key: {metas: [...]}}`.
    pub async fn presence_state(&self, topic: &str) -> anyhow::Result<Value> {
        let c = self.system.get().await?;
        let rows = c
            .query(
                "SELECT key, ref, meta FROM wasmbase.realtime_presence WHERE topic = $1 ORDER BY key, ref",
                &[&topic],
            )
            .await?;
        let mut state = Map::new();
        for r in rows {
            let mut meta = match r.get::<_, Value>(2) {
                Value::Object(m) => m,
                _ => Map::new(),
            };
            meta.insert("phx_ref".into(), json!(r.get::<_, String>(1)));
            let entry = state
                .entry(r.get::<_, String>(0))
                .or_insert_with(|| json!({ "metas": [] }));
            if let Some(Value::Array(a)) = entry.get_mut("metas") {
                a.push(Value::Object(meta));
            }
        }
        Ok(Value::Object(state))
    }

    /// Says this node is alive, removes nodes silent for longer than
    /// `timeout` with their presences (sending the leaves), drops outbox
    /// rows every node has had time to read, and database messages older
    /// than `retention`.
    async fn beat(&self, timeout: Duration, retention: Duration) -> anyhow::Result<()> {
        let channels: Map<String, Value> = self
            .counts()
            .into_iter()
            .map(|(t, n)| (t, json!(n)))
            .collect();
        let connections = self.connections() as i32;
        let c = self.system.get().await?;
        c.execute(
            "INSERT INTO wasmbase.realtime_nodes (node, channels, connections) VALUES ($1, $2, $3) \
             ON CONFLICT (node) DO UPDATE SET seen_at = now(), channels = $2, connections = $3",
            &[&self.node, &Value::Object(channels), &connections],
        )
        .await?;
        let secs = timeout.as_secs_f64();
        let gone = c
            .query(
                "WITH dead AS (DELETE FROM wasmbase.realtime_nodes \
                   WHERE seen_at < now() - make_interval(secs => $1) RETURNING node) \
                 DELETE FROM wasmbase.realtime_presence p USING dead WHERE p.node = dead.node \
                 RETURNING p.topic, p.key, p.ref, p.meta",
                &[&secs],
            )
            .await?;
        c.batch_execute(
            "DELETE FROM wasmbase.realtime_outbox WHERE created_at < now() - interval '5 minutes'",
        )
        .await?;
        let pruned = async {
            let mut c = self.system.get().await?;
            super::changes::prune(&mut c, self.changes.window()).await
        };
        if let Err(e) = pruned.await {
            tracing::warn!(error = %format!("{e:#}"), "realtime: pruning old changes");
        }
        for r in gone {
            let (topic, t) = removed(&r);
            self.presence_diff(&topic, json!({}), metas(&t, None)).await;
        }
        // Old database messages, a batch a beat (nodes skip each other's rows).
        if let Err(e) = c
            .execute(
                "DELETE FROM realtime.messages WHERE (id, inserted_at) IN ( \
                   SELECT id, inserted_at FROM realtime.messages \
                   WHERE inserted_at < (now() - make_interval(secs => $1))::timestamp \
                   ORDER BY inserted_at LIMIT 10000 FOR UPDATE SKIP LOCKED)",
                &[&retention.as_secs_f64()],
            )
            .await
        {
            tracing::warn!(error = %e, "realtime: pruning old messages");
        }
        Ok(())
    }

    /// The node's liveness loop (every third of `timeout`), until shutdown;
    /// then its own presences go, with their leaves.
    pub async fn run(self: Arc<Self>, timeout: Duration, retention: Duration) {
        tokio::spawn(self.clone().read_messages());
        let every = (timeout / 3).max(Duration::from_millis(100));
        loop {
            if let Err(e) = self.beat(timeout, retention).await {
                tracing::warn!(error = %format!("{e:#}"), "realtime: node heartbeat");
            }
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = self.stop.cancelled() => break,
            }
        }
        let r = async {
            let c = self.system.get().await?;
            let rows = c
                .query(
                    "WITH n AS (DELETE FROM wasmbase.realtime_nodes WHERE node = $1) \
                     DELETE FROM wasmbase.realtime_presence WHERE node = $1 \
                     RETURNING topic, key, ref, meta",
                    &[&self.node],
                )
                .await?;
            anyhow::Ok(rows)
        };
        if let Ok(rows) = r.await {
            for r in rows {
                let (topic, t) = removed(&r);
                self.send(
                    &topic,
                    WireMsg::Presence {
                        joins: json!({}),
                        leaves: metas(&t, None),
                    },
                    true,
                )
                .await;
            }
        }
    }
}
