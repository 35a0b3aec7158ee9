//! One WebSocket connection: a reader that handles the client's frames in
//! order (parse → the channel's rule → reply), a writer that drains a bounded
//! queue, and the channels this socket joined. Heartbeats on `phoenix` are
//! answered whatever the channel state; a socket silent for longer than
//! [`IDLE`] is closed, as Phoenix does.

use super::authz::{self, AuthzError, Ext, Reads};
use super::changes::{self, PgSub};
use super::frame::{self, subtopic, Body, Broadcast, Frame, Incoming, Payload, Vsn};
use super::hub::{Hub, Sub, Tracked};
use super::position::Resume;
use super::RealtimeLimits;
use crate::server::state::AppState;
use axum::extract::ws::{CloseFrame, Message, WebSocket};
use futures::{SinkExt, StreamExt};
use serde_json::{json, Map, Value};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use wasmbase_host_api::{AuthError, Principal};

/// Longest a socket may send nothing (realtime-js heartbeats every 25 s).
pub const IDLE: Duration = Duration::from_secs(60);

/// Frames a socket may have queued; past this it is closed as too slow.
const QUEUE: usize = 1024;

/// Longest one write (a burst of frames) may take before the socket is dropped.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// Most queued frames gathered into one write.
const BURST: usize = 64;

/// How often joined channels' tokens are checked for expiry.
const TOKEN_CHECK: Duration = Duration::from_secs(1);

/// A joined channel.
struct Channel {
    join_ref: Option<String>,
    sub: u64,
    /// The hub's key of its topic (a private channel's differs, see `hub::key`).
    key: String,
    /// Authorized by the policies on `realtime.messages`.
    private: bool,
    /// Whether presence was enabled at join.
    presence_on: bool,
    /// A private channel's INSERT checks, asked at the first write of each
    /// kind and kept until the next token (as Supabase does).
    writes: [Option<bool>; 2],
    /// What a private channel may read (for a new token's check).
    reads: Reads,
    /// The token last checked (the same one again is no news).
    token: Option<String>,
    principal: Principal,
    /// `exp` of the channel's token, if a JWT.
    exp: Option<u64>,
    self_broadcast: bool,
    ack: bool,
    presence_key: String,
    tracked: Option<Tracked>,
}

/// A one-second window of a rate limit.
struct Window {
    start: std::time::Instant,
    n: u32,
}

impl Window {
    fn new() -> Window {
        Window {
            start: std::time::Instant::now(),
            n: 0,
        }
    }

    /// Counts one; true when that makes more than `max` in this second.
    fn over(&mut self, max: u32) -> bool {
        if self.start.elapsed() >= Duration::from_secs(1) {
            *self = Window::new();
        }
        self.n += 1;
        self.n > max
    }
}

/// The socket's state.
struct Conn {
    st: AppState,
    hub: Arc<Hub>,
    limits: RealtimeLimits,
    vsn: Vsn,
    /// What the socket's `apikey` grants (a join without a user token acts so).
    key: Principal,
    out: mpsc::Sender<Frame>,
    kill: CancellationToken,
    channels: HashMap<String, Channel>,
    joins: Window,
    events: Window,
    /// Set when a rule closes the whole socket (a join flood).
    closing: Option<(u16, &'static str)>,
}

/// Serves `ws` until it closes.
pub async fn serve(
    ws: WebSocket,
    st: AppState,
    hub: Arc<Hub>,
    limits: RealtimeLimits,
    vsn: Vsn,
    key: Principal,
) {
    let (mut sink, mut stream) = ws.split();
    let (out, mut rx) = mpsc::channel::<Frame>(QUEUE);
    let kill = CancellationToken::new();
    let writer = tokio::spawn(async move {
        let message = |f| match f {
            Frame::Text(t) => Message::Text(t),
            Frame::Binary(b) => Message::Binary(b),
        };
        while let Some(f) = rx.recv().await {
            // Whatever else is queued goes in the same write, up to
            // `WRITE_BUFFER` bytes or `BURST` frames: a burst of fan-out
            // costs a few writes, not one per frame, and each write's
            // deadline covers about one buffer's worth.
            let burst = async {
                let mut bytes = f.len();
                sink.feed(message(f)).await?;
                for _ in 1..BURST {
                    if bytes >= super::WRITE_BUFFER {
                        break;
                    }
                    let Ok(f) = rx.try_recv() else { break };
                    bytes += f.len();
                    sink.feed(message(f)).await?;
                }
                sink.flush().await
            };
            // A peer that stops reading blocks the write: bounded, so the
            // socket's task and memory are freed all the same.
            match tokio::time::timeout(WRITE_TIMEOUT, burst).await {
                Ok(Ok(())) => {}
                _ => return None,
            }
        }
        Some(sink)
    });
    let mut c = Conn {
        st,
        hub: hub.clone(),
        limits,
        vsn,
        key,
        out,
        kill: kill.clone(),
        channels: HashMap::new(),
        joins: Window::new(),
        events: Window::new(),
        closing: None,
    };
    let mut check = tokio::time::interval(TOKEN_CHECK);
    // One idle deadline, moved only when the client sends something (a
    // timeout around each read would restart with every token check).
    let idle = tokio::time::sleep(IDLE);
    tokio::pin!(idle);
    let close: Option<(u16, &str)> = loop {
        tokio::select! {
            _ = &mut idle => break Some((1000, "heartbeat timeout")),
            m = stream.next() => match m {
                None | Some(Err(_)) => break None,
                Some(Ok(m)) => {
                    idle.as_mut().reset(tokio::time::Instant::now() + IDLE);
                    hub.messages_in.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let parsed = match m {
                        Message::Text(t) => frame::decode_text(vsn, t.as_str()),
                        Message::Binary(b) if vsn == Vsn::V2 => frame::decode_binary(&b),
                        Message::Binary(_) => Err(frame::FrameError("binary frames need vsn 2.0.0")),
                        Message::Close(_) => break None,
                        Message::Ping(_) | Message::Pong(_) => continue,
                    };
                    match parsed {
                        // Boxed: the handling of one frame (a join's database
                        // work) lives only while it runs, not in every idle
                        // socket's task.
                        Ok(f) => Box::pin(c.handle(f)).await,
                        Err(e) => tracing::debug!(error = %e, "realtime: ignoring a frame"),
                    }
                    if let Some(close) = c.closing.take() {
                        break Some(close);
                    }
                }
            },
            _ = check.tick() => c.expire_tokens(),
            _ = kill.cancelled() => break Some((1008, "too slow: the outgoing queue is full")),
            _ = hub.stop.cancelled() => break Some((1001, "server shutting down")),
        }
    };
    // Leaving: presences go, subscriptions end.
    let topics: Vec<String> = c.channels.keys().cloned().collect();
    for t in topics {
        Box::pin(c.drop_channel(&t)).await;
    }
    drop(c);
    // The writer drains what is queued (each send bounded), then says goodbye.
    if let Ok(Some(mut sink)) = writer.await {
        if let Some((code, reason)) = close {
            let _ = tokio::time::timeout(
                WRITE_TIMEOUT,
                sink.send(Message::Close(Some(CloseFrame {
                    code,
                    reason: reason.into(),
                }))),
            )
            .await;
        }
    }
}

/// A boolean that realtime-js may send as a string.
fn flag(v: &Value) -> bool {
    match v {
        Value::Bool(b) => *b,
        Value::String(s) => s.eq_ignore_ascii_case("true"),
        _ => false,
    }
}

impl Conn {
    fn send(&self, f: Frame) {
        if let Err(mpsc::error::TrySendError::Full(_)) = self.out.try_send(f) {
            self.kill.cancel();
        }
    }

    fn push(
        &self,
        join_ref: Option<&str>,
        reference: Option<&str>,
        topic: &str,
        event: &str,
        payload: Value,
    ) {
        self.send(Frame::Text(
            frame::encode_text(self.vsn, join_ref, reference, topic, event, &payload).into(),
        ));
    }

    fn reply(&self, f: &Incoming, status: &str, response: Value) {
        self.push(
            f.join_ref.as_deref(),
            f.reference.as_deref(),
            &f.topic,
            "phx_reply",
            json!({"status": status, "response": response}),
        );
    }

    /// Phoenix's answer for a topic this socket has not joined (no join ref).
    fn unmatched(&self, f: &Incoming) {
        self.push(
            None,
            f.reference.as_deref(),
            &f.topic,
            "phx_reply",
            json!({"status": "error", "response": {"reason": "unmatched topic"}}),
        );
    }

    fn system(
        &self,
        topic: &str,
        join_ref: Option<&str>,
        extension: &str,
        status: &str,
        message: &str,
    ) {
        self.push(
            join_ref,
            None,
            topic,
            "system",
            frame::system_payload(topic, extension, status, message),
        );
    }

    async fn handle(&mut self, f: Incoming) {
        if f.topic == "phoenix" {
            if f.event == "heartbeat" {
                self.reply(&f, "ok", json!({}));
            }
            return;
        }
        match f.event.as_str() {
            "phx_join" if self.joins.over(self.limits.max_joins_per_second) => {
                self.reply(
                    &f,
                    "error",
                    json!({"reason": "ClientJoinRateLimitReached: Too many joins per second"}),
                );
                self.closing = Some((1008, "Too many joins per second"));
            }
            "phx_join" => self.join(f).await,
            "phx_leave" => {
                self.reply(&f, "ok", json!({}));
                self.close_channel(&f.topic).await;
            }
            _ if !self.channels.contains_key(&f.topic) => {
                self.unmatched(&f);
            }
            "broadcast" | "presence" if self.events.over(self.limits.max_events_per_second) => {
                self.shut(&f.topic.clone(), "Too many messages per second");
            }
            "broadcast" => self.broadcast(f).await,
            "presence" => self.presence(f).await,
            "access_token" => self.access_token(f).await,
            _ => self.reply(
                &f,
                "error",
                json!({"reason": format!("unknown event {:?}", f.event)}),
            ),
        }
    }

    /// The principal a join or token update asks for: a verified JWT, or the
    /// socket's key for none or an `sb_` key (as Supabase does).
    fn principal_for(&self, token: Option<&str>) -> Result<(Principal, Option<u64>), String> {
        match token {
            None => Ok((self.key.clone(), None)),
            Some(t) if t.starts_with("sb_") || t.is_empty() => Ok((self.key.clone(), None)),
            Some(t) => match self.st.gate.jwt().principal(t) {
                Ok(p) => {
                    let exp = p.claims.get("exp").and_then(Value::as_u64);
                    Ok((p, exp))
                }
                Err(AuthError::JwtExpired) => Err("InvalidJWTToken: Token has expired".into()),
                Err(e) => Err(format!("InvalidJWTToken: {e}")),
            },
        }
    }

    async fn join(&mut self, f: Incoming) {
        let Body::Json(payload) = &f.body else { return };
        if !f.topic.starts_with("realtime:") {
            return self.unmatched(&f);
        }
        let error = |c: &Self, reason: &str| c.reply(&f, "error", json!({ "reason": reason }));
        if subtopic(&f.topic).is_empty() {
            return error(self, "TopicNameRequired: You must provide a topic name");
        }
        let config = &payload["config"];
        let private = flag(&config["private"]);
        if !private && self.st.config.realtime.private_only {
            return error(
                self,
                "PrivateOnly: This project only allows private channels",
            );
        }
        let token = payload["access_token"]
            .as_str()
            .or(payload["user_token"].as_str());
        let (principal, exp) = match self.principal_for(token) {
            Ok(p) => p,
            Err(reason) => return error(self, &reason),
        };
        // A second join of a joined topic replaces the first.
        self.close_channel(&f.topic).await;
        if self.channels.len() >= self.limits.max_channels_per_client {
            return error(self, "ChannelRateLimitReached: Too many channels");
        }
        // Supabase's broadcast replay: private channels only.
        let replay = match &config["broadcast"]["replay"] {
            Value::Null => None,
            _ if !private => {
                return error(
                    self,
                    "UnableToReplayMessages: Replay is not allowed for public channels",
                );
            }
            r => {
                let since = r["since"].as_i64().filter(|s| *s >= 0);
                let limit = match &r["limit"] {
                    Value::Null => Some(super::hub::REPLAY_MAX),
                    l => l.as_i64(),
                };
                match (since, limit) {
                    (Some(since), Some(limit)) => Some((since, limit)),
                    _ => return error(self, "UnableToReplayMessages: Replay params are not valid"),
                }
            }
        };
        let reads = if private {
            let timeout = self.st.statement_timeout(&principal);
            let topic = subtopic(&f.topic);
            let presence_on = flag(&config["presence"]["enabled"]);
            match authz::reads(&self.st.pool, &principal, timeout, topic).await {
                Ok(r) if r.broadcast || (presence_on && r.presence) => r,
                Ok(_) => return error(self, &authz::unauthorized(topic)),
                Err(e) => return error(self, &e.join_reason(topic)),
            }
        } else {
            Reads::ALL
        };
        let key = super::hub::key(&f.topic, private);
        let presence = &config["presence"];
        let presence_on = flag(&presence["enabled"]);
        let presence_key = match &presence["key"] {
            Value::String(s) if !s.is_empty() => s.clone(),
            Value::Number(n) => n.to_string(),
            _ => uuid::Uuid::new_v4().to_string(),
        };
        // postgres_changes: each binding echoed as sent, with an id.
        if config["postgres_changes"]
            .as_array()
            .is_some_and(|a| a.len() > changes::MAX_BINDINGS)
        {
            return error(
                self,
                &format!(
                    "InvalidJoinPayload: at most {} postgres_changes bindings per channel",
                    changes::MAX_BINDINGS
                ),
            );
        }
        // Catch-up: the position of the last change the client saw.
        let position =
            match &config["postgres_changes_options"]["position"] {
                Value::Null => None,
                Value::String(s) => match Resume::parse(s) {
                    Some(p) => Some(p),
                    None => return error(
                        self,
                        "InvalidJoinPayload: postgres_changes_options.position is not a position \
                         (the `ref` of a postgres_changes event, or a system message's `position`)",
                    ),
                },
                _ => {
                    return error(
                        self,
                        "InvalidJoinPayload: postgres_changes_options.position must be a string",
                    )
                }
            };
        let changes: Vec<Value> = match &config["postgres_changes"] {
            Value::Array(a) => a
                .iter()
                .map(|b| {
                    let mut b = b.clone();
                    if let Value::Object(m) = &mut b {
                        m.insert("id".into(), json!(self.hub.next_id()));
                    }
                    b
                })
                .collect(),
            _ => Vec::new(),
        };
        let sub = self.hub.next_id();
        self.hub.subscribe(
            &key,
            Sub {
                id: sub,
                vsn: self.vsn,
                tx: self.out.clone(),
                kill: self.kill.clone(),
                presence: presence_on && reads.presence,
                read_broadcast: reads.broadcast,
            },
        );
        self.channels.insert(
            f.topic.clone(),
            Channel {
                join_ref: f.join_ref.clone(),
                sub,
                key: key.clone(),
                private,
                presence_on,
                writes: [None; 2],
                reads,
                token: token.map(str::to_string),
                principal,
                exp,
                self_broadcast: flag(&config["broadcast"]["self"]),
                ack: flag(&config["broadcast"]["ack"]),
                presence_key,
                tracked: None,
            },
        );
        self.reply(&f, "ok", json!({ "postgres_changes": changes.clone() }));
        if let Some((since, limit)) = replay.filter(|_| reads.broadcast) {
            let max = self.limits.max_payload_bytes;
            match self.hub.replay(subtopic(&f.topic), since, limit, max).await {
                Ok(messages) => {
                    for (id, b) in messages {
                        let meta = json!({ "replayed": true, "id": id }).to_string();
                        if let Some(frame) =
                            frame::encode_broadcast(self.vsn, &f.topic, &b, Some(&meta))
                        {
                            self.send(frame);
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %format!("{e:#}"), "realtime: replaying broadcasts");
                    self.system(
                        &f.topic,
                        f.join_ref.as_deref(),
                        "system",
                        "error",
                        "UnableToReplayMessages: Realtime was unable to replay messages",
                    );
                }
            }
        }
        if presence_on && reads.presence {
            match self.hub.presence_state(&key).await {
                Ok(state) => self.push(
                    f.join_ref.as_deref(),
                    None,
                    &f.topic,
                    "presence_state",
                    state,
                ),
                Err(e) => tracing::warn!(error = %format!("{e:#}"), "realtime: reading presence"),
            }
        }
        if !changes.is_empty() {
            let principal = self.channels[&f.topic].principal.clone();
            // Success is told by the delivery task once the channel is
            // subscribed (and caught up), with its position.
            let join = (f.topic.as_str(), f.join_ref.clone(), sub);
            if let Err(message) = self.pg_subscribe(join, &changes, principal, position).await {
                self.system(
                    &f.topic,
                    f.join_ref.as_deref(),
                    "postgres_changes",
                    "error",
                    &message,
                );
            }
        }
    }

    /// Checks each binding (a published table, known filter columns) and
    /// subscribes the channel; the error is Supabase's words.
    async fn pg_subscribe(
        &self,
        (topic, join_ref, channel): (&str, Option<String>, u64),
        bindings: &[Value],
        principal: Principal,
        position: Option<Resume>,
    ) -> Result<(), String> {
        let mut parsed = Vec::with_capacity(bindings.len());
        for b in bindings {
            let id = b["id"].as_u64().unwrap_or_default();
            let binding = changes::parse_binding(b, id)?;
            if binding.table != "*" {
                let unable = || {
                    format!(
                        "Unable to subscribe to changes with given parameters. Please check Realtime is enabled for the given connect parameters: [event: {}, schema: {}, table: {}, filters: {}]",
                        b["event"].as_str().unwrap_or("*"),
                        binding.schema,
                        binding.table,
                        b["filter"].as_str().unwrap_or("")
                    )
                };
                let rel = changes::published(self.hub.system(), &binding.schema, &binding.table)
                    .await
                    .map_err(|e| {
                        tracing::warn!(error = %format!("{e:#}"), "realtime: looking up a table");
                        unable()
                    })?
                    .ok_or_else(unable)?;
                if let Some(f) = binding.filters.iter().find(|f| !rel.has_column(f.column())) {
                    return Err(format!(
                        "Error parsing `filter` params: column {:?} does not exist",
                        f.column()
                    ));
                }
            }
            parsed.push(binding);
        }
        let patterns = parsed
            .iter()
            .flat_map(|b| &b.filters)
            .filter(|f| f.is_pattern())
            .count();
        if patterns > changes::MAX_PATTERNS {
            return Err(format!(
                "Error parsing `filter` params: at most {} match/imatch filters per channel",
                changes::MAX_PATTERNS
            ));
        }
        self.hub.changes.subscribe(
            PgSub {
                channel,
                topic: topic.to_string(),
                vsn: self.vsn,
                tx: self.out.clone(),
                kill: self.kill.clone(),
                bindings: parsed,
                digest: super::changes::digest(&principal),
                principal,
                join_ref,
                gone: Default::default(),
            },
            position,
        );
        Ok(())
    }

    async fn broadcast(&mut self, f: Incoming) {
        let Some(ch) = self.channels.get(&f.topic) else {
            return;
        };
        let b = match &f.body {
            Body::Broadcast(b) => b.clone(),
            Body::Json(p) => Broadcast {
                event: p["event"].as_str().unwrap_or_default().to_string(),
                payload: Payload::Json(Arc::from(
                    p.get("payload").unwrap_or(&json!({})).to_string(),
                )),
            },
        };
        if b.payload.len() > self.limits.max_payload_bytes {
            if ch.ack {
                self.reply(&f, "error", json!("payload_size_exceeded"));
            }
            return;
        }
        let (except, ack) = ((!ch.self_broadcast).then_some(ch.sub), ch.ack);
        let key = ch.key.clone();
        // A private channel's sender needs the INSERT policies; a refused
        // broadcast is dropped without a reply, even with ack (as Supabase).
        if !self.may_write(&f.topic, Ext::Broadcast).await {
            return;
        }
        self.hub.broadcast(&key, b, except, ack).await;
        if ack {
            self.reply(&f, "ok", json!({}));
        }
    }

    async fn presence(&mut self, f: Incoming) {
        let Body::Json(p) = &f.body else { return };
        let event = p["event"].as_str().unwrap_or_default().to_ascii_lowercase();
        let Some(ch) = self.channels.get_mut(&f.topic) else {
            return;
        };
        match event.as_str() {
            "track" => {
                let meta = match p.get("payload") {
                    None | Some(Value::Null) => Map::new(),
                    Some(Value::Object(m)) => m.clone(),
                    Some(_) => {
                        return self.reply(
                            &f,
                            "error",
                            json!({"reason": "Presence track payload must be a map"}),
                        )
                    }
                };
                if Value::Object(meta.clone()).to_string().len() > self.limits.max_payload_bytes {
                    return self.reply(
                        &f,
                        "error",
                        json!({"reason": "Track message size exceeded"}),
                    );
                }
                if ch.tracked.as_ref().is_some_and(|t| t.meta == meta) {
                    return self.reply(&f, "ok", json!({}));
                }
                let prev = ch.tracked.clone();
                let (key, hub_key) = (ch.presence_key.clone(), ch.key.clone());
                if !self.may_write(&f.topic, Ext::Presence).await {
                    return self.reply(&f, "error", json!({}));
                }
                // On failure the previous entry stays (its row was not touched).
                match self.hub.track(&hub_key, &key, meta, prev).await {
                    Ok(t) => {
                        if let Some(ch) = self.channels.get_mut(&f.topic) {
                            ch.tracked = Some(t);
                        }
                        self.reply(&f, "ok", json!({}));
                    }
                    Err(e) => {
                        tracing::warn!(error = %format!("{e:#}"), "realtime: tracking a presence");
                        self.reply(&f, "error", json!({}));
                    }
                }
            }
            "untrack" => {
                if let Some(t) = ch.tracked.take() {
                    let key = ch.key.clone();
                    self.hub.untrack(&key, &t).await;
                }
                self.reply(&f, "ok", json!({}));
            }
            _ => self.reply(&f, "error", json!({})),
        }
    }

    /// A token update: later checks (expiry, RLS for postgres_changes, a
    /// private channel's policies, asked again now) use it. A bad one, or
    /// one that may no longer read the private channel, closes the channel;
    /// an `sb_` key keeps the old one, as Supabase does.
    async fn access_token(&mut self, f: Incoming) {
        let Body::Json(p) = &f.body else { return };
        let Some(t) = p["access_token"].as_str() else {
            return;
        };
        if t.starts_with("sb_")
            || self
                .channels
                .get(&f.topic)
                .is_some_and(|c| c.token.as_deref() == Some(t))
        {
            return;
        }
        match self.principal_for(Some(t)) {
            Ok((principal, exp)) => {
                let private = self.channels.get(&f.topic).filter(|c| c.private);
                if let Some((key, sub, presence_on, before)) =
                    private.map(|c| (c.key.clone(), c.sub, c.presence_on, c.reads))
                {
                    let topic = subtopic(&f.topic).to_string();
                    let timeout = self.st.statement_timeout(&principal);
                    match authz::reads(&self.st.pool, &principal, timeout, &topic).await {
                        // Losing either read closes the channel, as Supabase does.
                        Ok(r) if r.keeps(before) => {
                            self.hub
                                .set_reads(&key, sub, r.broadcast, presence_on && r.presence);
                            if let Some(ch) = self.channels.get_mut(&f.topic) {
                                ch.writes = [None; 2];
                                ch.reads = r;
                            }
                        }
                        Ok(_) | Err(AuthzError::Policy) => {
                            return self.shut(
                                &f.topic,
                                &format!("You no longer have permission to read from this Channel topic: {topic}"),
                            );
                        }
                        Err(_) => {
                            return self.shut(
                                &f.topic,
                                "Realtime was unable to connect to the project database",
                            );
                        }
                    }
                }
                if let Some(ch) = self.channels.get_mut(&f.topic) {
                    self.hub.changes.set_principal(ch.sub, &principal);
                    ch.principal = principal;
                    ch.exp = exp;
                    ch.token = Some(t.to_string());
                }
            }
            Err(reason) => {
                let message = reason
                    .split_once(": ")
                    .map_or(reason.as_str(), |(_, m)| m)
                    .to_string();
                self.shut(&f.topic, &message);
            }
        }
    }

    /// Closes every channel whose token has expired, with Supabase's message.
    fn expire_tokens(&mut self) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let expired: Vec<(String, u64)> = self
            .channels
            .iter()
            .filter_map(|(t, c)| c.exp.filter(|e| *e <= now).map(|e| (t.clone(), now - e)))
            .collect();
        for (topic, ago) in expired {
            self.shut(&topic, &format!("Token has expired {ago} seconds ago"));
        }
    }

    /// A `system` error and `phx_close`: the client does not rejoin.
    fn shut(&mut self, topic: &str, message: &str) {
        let Some(ch) = self.channels.get(topic) else {
            return;
        };
        let jr = ch.join_ref.clone();
        self.system(topic, jr.as_deref(), "system", "error", message);
        self.push(jr.as_deref(), jr.as_deref(), topic, "phx_close", json!({}));
        // Leaving needs the database for presence: done on the next turn.
        if let Some((key, t)) = self.unjoin(topic) {
            let hub = self.hub.clone();
            tokio::spawn(async move { hub.untrack(&key, &t).await });
        }
    }

    /// Tells the client a joined channel closed (`phx_close` with its join
    /// ref), then drops it; nothing when `topic` is not joined.
    async fn close_channel(&mut self, topic: &str) {
        let Some(ch) = self.channels.get(topic) else {
            return;
        };
        let jr = ch.join_ref.clone();
        self.push(jr.as_deref(), jr.as_deref(), topic, "phx_close", json!({}));
        self.drop_channel(topic).await;
    }

    async fn drop_channel(&mut self, topic: &str) {
        if let Some((key, t)) = self.unjoin(topic) {
            self.hub.untrack(&key, &t).await;
        }
    }

    /// Takes a joined channel out of this node's fan-out and change
    /// subscriptions; returns its hub key and tracked presence, for the
    /// caller to untrack.
    fn unjoin(&mut self, topic: &str) -> Option<(String, Tracked)> {
        let ch = self.channels.remove(topic)?;
        self.hub.unsubscribe(&ch.key, ch.sub);
        self.hub.changes.unsubscribe(ch.sub);
        ch.tracked.map(|t| (ch.key, t))
    }

    /// Whether this socket may write `ext` on joined channel `topic`: always
    /// on a public channel; on a private one, what the INSERT policies say
    /// (asked once per kind and token; a failed check is a refusal, logged).
    async fn may_write(&mut self, topic: &str, ext: Ext) -> bool {
        let Some(ch) = self.channels.get(topic) else {
            return false;
        };
        if !ch.private {
            return true;
        }
        let slot = ext as usize;
        if let Some(known) = ch.writes[slot] {
            return known;
        }
        let principal = ch.principal.clone();
        let timeout = self.st.statement_timeout(&principal);
        let sub = subtopic(topic).to_string();
        match authz::can_write(&self.st.pool, &principal, timeout, &sub, ext).await {
            Ok(allowed) => {
                if let Some(ch) = self.channels.get_mut(topic) {
                    ch.writes[slot] = Some(allowed);
                }
                allowed
            }
            // Not an answer: this message is refused, the next one asks again.
            Err(_) => false,
        }
    }
}
