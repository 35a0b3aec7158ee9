//! Phoenix channel frames as realtime-js speaks them (docs/REALTIME.md,
//! "Protocol"): `vsn=1.0.0` JSON objects, `vsn=2.0.0` JSON arrays
//! `[join_ref, ref, topic, event, payload]` plus two binary kinds for user
//! broadcasts — 3 (client → server) and 4 (server → client). Pure parsing and
//! encoding: no I/O, so every byte rule is unit-tested here.

use bytes::{BufMut, Bytes, BytesMut};
use serde_json::{json, Value};
use std::sync::Arc;

/// The protocol version a socket negotiated (`?vsn=`; none means 1.0.0).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Vsn {
    /// JSON objects, text frames only.
    V1,
    /// JSON arrays, and binary frames for user broadcasts.
    V2,
}

impl Vsn {
    /// `1.0.0`/`1.x`, `2.0.0`/`2.x`; anything else is refused at upgrade.
    pub fn parse(v: Option<&str>) -> Option<Vsn> {
        match v {
            None => Some(Vsn::V1),
            Some(v) if v == "1" || v.starts_with("1.") => Some(Vsn::V1),
            Some(v) if v == "2" || v.starts_with("2.") => Some(Vsn::V2),
            _ => None,
        }
    }
}

/// A user broadcast's payload, kept as the bytes it arrived in, so fan-out
/// never re-parses it.
#[derive(Debug, Clone, PartialEq)]
pub enum Payload {
    /// JSON text.
    Json(Arc<str>),
    /// Raw bytes (realtime-js sends an `ArrayBuffer` payload this way).
    Binary(Bytes),
}

impl Payload {
    /// Bytes it takes (what `realtime.max_payload_bytes` limits).
    pub fn len(&self) -> usize {
        match self {
            Payload::Json(s) => s.len(),
            Payload::Binary(b) => b.len(),
        }
    }

    /// A stored message's payload (`realtime.messages`: the JSON as text, or
    /// the bytes), if it has one.
    pub fn stored(json: Option<String>, bytes: Option<Vec<u8>>) -> Option<Payload> {
        match (json, bytes) {
            (Some(j), _) => Some(Payload::Json(Arc::from(j))),
            (None, Some(b)) => Some(Payload::Binary(b.into())),
            (None, None) => None,
        }
    }
}

/// A user broadcast: an event name and its payload.
#[derive(Debug, Clone, PartialEq)]
pub struct Broadcast {
    /// The user's event name (`channel.send({event})`).
    pub event: String,
    /// The user's payload.
    pub payload: Payload,
}

/// What a client frame carries.
#[derive(Debug, Clone, PartialEq)]
pub enum Body {
    /// Any JSON event (`phx_join`, `heartbeat`, `presence`, a JSON broadcast ...).
    Json(Value),
    /// A kind-3 binary user broadcast.
    Broadcast(Broadcast),
}

/// One frame from a client.
#[derive(Debug, Clone, PartialEq)]
pub struct Incoming {
    /// The channel's join ref (None for heartbeats).
    pub join_ref: Option<String>,
    /// This message's ref, echoed in its reply.
    pub reference: Option<String>,
    /// `realtime:<name>` or `phoenix`.
    pub topic: String,
    /// `phx_join`, `phx_leave`, `heartbeat`, `broadcast`, `presence`, `access_token` ...
    pub event: String,
    /// The payload.
    pub body: Body,
}

/// Why a frame was not understood (logged; the socket carries on, as Phoenix
/// does).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("malformed realtime frame: {0}")]
pub struct FrameError(pub &'static str);

fn opt_string(v: &Value) -> Result<Option<String>, FrameError> {
    match v {
        Value::Null => Ok(None),
        Value::String(s) => Ok(Some(s.clone())),
        // Refs are strings in realtime-js; a number is taken as its text.
        Value::Number(n) => Ok(Some(n.to_string())),
        _ => Err(FrameError("join_ref and ref must be strings or null")),
    }
}

/// Decodes a text frame of either version.
pub fn decode_text(vsn: Vsn, text: &str) -> Result<Incoming, FrameError> {
    let v: Value = serde_json::from_str(text).map_err(|_| FrameError("not JSON"))?;
    let (join_ref, reference, topic, event, payload) = match (vsn, v) {
        (Vsn::V2, Value::Array(a)) if a.len() >= 5 => {
            let mut it = a.into_iter();
            let j = it.next().unwrap_or_default();
            let r = it.next().unwrap_or_default();
            let t = it.next().unwrap_or_default();
            let e = it.next().unwrap_or_default();
            let p = it.next().unwrap_or_default();
            (j, r, t, e, p)
        }
        (Vsn::V1, Value::Object(mut m)) => (
            m.remove("join_ref").unwrap_or_default(),
            m.remove("ref").unwrap_or_default(),
            m.remove("topic").unwrap_or_default(),
            m.remove("event").unwrap_or_default(),
            m.remove("payload").unwrap_or_default(),
        ),
        (Vsn::V2, _) => return Err(FrameError("a vsn 2.0.0 frame is a 5-element array")),
        (Vsn::V1, _) => return Err(FrameError("a vsn 1.0.0 frame is an object")),
    };
    let (Value::String(topic), Value::String(event)) = (topic, event) else {
        return Err(FrameError("topic and event must be strings"));
    };
    Ok(Incoming {
        join_ref: opt_string(&join_ref)?,
        reference: opt_string(&reference)?,
        topic,
        event,
        body: Body::Json(payload),
    })
}

/// Kind byte of a client's user broadcast push.
const USER_BROADCAST_PUSH: u8 = 3;
/// Kind byte of a user broadcast to a client.
const USER_BROADCAST: u8 = 4;
const BINARY_ENCODING: u8 = 0;
const JSON_ENCODING: u8 = 1;

/// Decodes a binary frame: only kind 3 (a user broadcast push) comes from
/// clients. Layout: kind, then the byte lengths of join_ref, ref, topic,
/// event and metadata, the payload encoding, then those fields and the
/// payload.
pub fn decode_binary(b: &[u8]) -> Result<Incoming, FrameError> {
    if b.first() != Some(&USER_BROADCAST_PUSH) {
        return Err(FrameError(
            "only binary kind 3 (user broadcast push) is accepted",
        ));
    }
    if b.len() < 7 {
        return Err(FrameError("binary frame shorter than its header"));
    }
    let lens = [b[1], b[2], b[3], b[4], b[5]].map(usize::from);
    let encoding = b[6];
    let mut at = 7;
    let mut fields: [&[u8]; 5] = [&[]; 5];
    for (i, len) in lens.iter().enumerate() {
        fields[i] = b
            .get(at..at + len)
            .ok_or(FrameError("binary frame shorter than its lengths"))?;
        at += len;
    }
    let text = |s: &[u8]| {
        std::str::from_utf8(s)
            .map(str::to_string)
            .map_err(|_| FrameError("binary frame field is not UTF-8"))
    };
    let rest = &b[at..];
    let payload = match encoding {
        JSON_ENCODING => {
            let s =
                std::str::from_utf8(rest).map_err(|_| FrameError("JSON payload is not UTF-8"))?;
            serde_json::from_str::<serde::de::IgnoredAny>(s)
                .map_err(|_| FrameError("JSON payload is not JSON"))?;
            Payload::Json(Arc::from(s))
        }
        BINARY_ENCODING => Payload::Binary(Bytes::copy_from_slice(rest)),
        _ => return Err(FrameError("unknown payload encoding")),
    };
    let non_empty = |s: String| (!s.is_empty()).then_some(s);
    Ok(Incoming {
        join_ref: non_empty(text(fields[0])?),
        reference: non_empty(text(fields[1])?),
        topic: text(fields[2])?,
        event: "broadcast".into(),
        body: Body::Broadcast(Broadcast {
            event: text(fields[3])?,
            payload,
        }),
    })
}

/// The sub-topic of `realtime:<name>` (what `system` messages and the HTTP
/// API call a channel).
pub fn subtopic(topic: &str) -> &str {
    topic.strip_prefix("realtime:").unwrap_or(topic)
}

/// A `system` message's payload, as Supabase sends it for `topic`.
pub fn system_payload(topic: &str, extension: &str, status: &str, message: &str) -> Value {
    json!({
        "extension": extension,
        "status": status,
        "message": message,
        "channel": subtopic(topic),
    })
}

/// A text frame in `vsn`'s shape.
pub fn encode_text<P: serde::Serialize + ?Sized>(
    vsn: Vsn,
    join_ref: Option<&str>,
    reference: Option<&str>,
    topic: &str,
    event: &str,
    payload: &P,
) -> String {
    /// vsn 1's object (serialized straight from borrowed parts: no copy of
    /// the payload into a `Value` first).
    #[derive(serde::Serialize)]
    struct V1<'a, P: ?Sized> {
        join_ref: Option<&'a str>,
        #[serde(rename = "ref")]
        reference: Option<&'a str>,
        topic: &'a str,
        event: &'a str,
        payload: &'a P,
    }
    let out = match vsn {
        Vsn::V2 => serde_json::to_string(&(join_ref, reference, topic, event, payload)),
        Vsn::V1 => serde_json::to_string(&V1 {
            join_ref,
            reference,
            topic,
            event,
            payload,
        }),
    };
    // Strings, options and a JSON payload always serialize.
    out.unwrap_or_default()
}

/// A frame on its way to a client.
#[derive(Debug, Clone, PartialEq)]
pub enum Frame {
    /// A text frame; shared, so fan-out to a topic's subscribers clones a
    /// reference, never the text.
    Text(axum::extract::ws::Utf8Bytes),
    /// A binary frame (shared the same way).
    Binary(Bytes),
}

impl Frame {
    /// Its size in bytes (what a socket's writer gathers into one write).
    pub fn len(&self) -> usize {
        match self {
            Frame::Text(t) => t.as_str().len(),
            Frame::Binary(b) => b.len(),
        }
    }
}

/// A user broadcast for a subscriber of `topic` (its joined topic, with the
/// `realtime:` prefix): kind 4 on vsn 2 (the client decodes nothing else in
/// binary), a JSON text frame on vsn 1, where a binary payload cannot go
/// (None). `meta` (a JSON object's text, at most 255 bytes: `{"id": ...}` of a
/// database message, `"replayed": true` of a replayed one) reaches the app as
/// realtime-js's `meta`.
pub fn encode_broadcast(vsn: Vsn, topic: &str, b: &Broadcast, meta: Option<&str>) -> Option<Frame> {
    let meta = meta.filter(|m| m.len() <= 255);
    let fits = topic.len() <= 255 && b.event.len() <= 255;
    match (vsn, &b.payload) {
        (Vsn::V2, p) if fits => {
            let (enc, bytes): (u8, &[u8]) = match p {
                Payload::Json(s) => (JSON_ENCODING, s.as_bytes()),
                Payload::Binary(b) => (BINARY_ENCODING, b),
            };
            let meta = meta.unwrap_or("");
            let mut out =
                BytesMut::with_capacity(5 + topic.len() + b.event.len() + meta.len() + bytes.len());
            out.put_u8(USER_BROADCAST);
            out.put_u8(topic.len() as u8);
            out.put_u8(b.event.len() as u8);
            out.put_u8(meta.len() as u8);
            out.put_u8(enc);
            out.put_slice(topic.as_bytes());
            out.put_slice(b.event.as_bytes());
            out.put_slice(meta.as_bytes());
            out.put_slice(bytes);
            Some(Frame::Binary(out.freeze()))
        }
        (_, Payload::Json(s)) => {
            let payload: Value = serde_json::from_str(s).unwrap_or(Value::Null);
            let mut body = json!({"type": "broadcast", "event": b.event, "payload": payload});
            if let Some(m) = meta.and_then(|m| serde_json::from_str::<Value>(m).ok()) {
                body["meta"] = m;
            }
            Some(Frame::Text(
                encode_text(vsn, None, None, topic, "broadcast", &body).into(),
            ))
        }
        (Vsn::V1, Payload::Binary(_)) | (Vsn::V2, Payload::Binary(_)) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_frames_of_both_versions() {
        let f = decode_text(
            Vsn::V2,
            r#"["6","7","realtime:room1","phx_join",{"config":{}}]"#,
        )
        .unwrap();
        assert_eq!(f.join_ref.as_deref(), Some("6"));
        assert_eq!(f.reference.as_deref(), Some("7"));
        assert_eq!(
            (f.topic.as_str(), f.event.as_str()),
            ("realtime:room1", "phx_join")
        );
        let f = decode_text(
            Vsn::V1,
            r#"{"topic":"phoenix","event":"heartbeat","payload":{},"ref":"3"}"#,
        )
        .unwrap();
        assert_eq!((f.join_ref, f.reference.as_deref()), (None, Some("3")));
        assert!(decode_text(Vsn::V2, r#"{"topic":"x"}"#).is_err());
        assert!(decode_text(Vsn::V1, r#"[null,null,"t","e",{}]"#).is_err());
        assert!(decode_text(Vsn::V2, r#"[null,null,5,"e",{}]"#).is_err());
        assert!(decode_text(Vsn::V2, "not json").is_err());
        assert_eq!(
            encode_text(Vsn::V2, Some("6"), None, "realtime:a", "system", &json!({})),
            r#"["6",null,"realtime:a","system",{}]"#
        );
    }

    #[test]
    fn kind_3_in_and_kind_4_out_as_realtime_js_frames_them() {
        // Captured from realtime-js 2.119.1: send({event: "msg", payload: {hello: "wörld"}}).
        let mut f = vec![3, 1, 1, 14, 3, 0, 1];
        f.extend_from_slice(b"67realtime:room1msg");
        f.extend_from_slice("{\"hello\":\"wörld\"}".as_bytes());
        let m = decode_binary(&f).unwrap();
        assert_eq!(m.topic, "realtime:room1");
        let Body::Broadcast(b) = m.body else { panic!() };
        assert_eq!(b.event, "msg");
        assert_eq!(b.payload, Payload::Json(Arc::from("{\"hello\":\"wörld\"}")));
        let Some(Frame::Binary(out)) = encode_broadcast(Vsn::V2, "realtime:room1", &b, None) else {
            panic!()
        };
        let mut want = vec![4, 14, 3, 0, 1];
        want.extend_from_slice(b"realtime:room1msg");
        want.extend_from_slice("{\"hello\":\"wörld\"}".as_bytes());
        assert_eq!(&out[..], &want[..]);
        // vsn 1 gets JSON text; a binary payload cannot go there.
        let Some(Frame::Text(t)) = encode_broadcast(Vsn::V1, "realtime:room1", &b, None) else {
            panic!()
        };
        let t = t.as_str();
        assert!(
            t.contains(
                r#""payload":{"event":"msg","payload":{"hello":"wörld"},"type":"broadcast"}"#
            ) || t.contains(r#""type":"broadcast""#),
            "{t}"
        );
        let bin = Broadcast {
            event: "e".into(),
            payload: Payload::Binary(Bytes::from_static(&[9, 8])),
        };
        assert_eq!(encode_broadcast(Vsn::V1, "realtime:x", &bin, None), None);
        // Truncated, wrong kind, bad JSON: errors, never panics.
        for bad in [&f[..5], &[0u8, 1, 2][..], &[3, 200, 0, 0, 0, 0, 1][..]] {
            assert!(decode_binary(bad).is_err());
        }
        let mut not_json = vec![3, 0, 0, 1, 1, 0, 1];
        not_json.extend_from_slice(b"te{");
        assert!(decode_binary(&not_json).is_err());
    }

    #[test]
    fn versions() {
        assert_eq!(Vsn::parse(None), Some(Vsn::V1));
        assert_eq!(Vsn::parse(Some("2.0.0")), Some(Vsn::V2));
        assert_eq!(Vsn::parse(Some("1.0.0")), Some(Vsn::V1));
        assert_eq!(Vsn::parse(Some("3.0.0")), None);
    }
}
