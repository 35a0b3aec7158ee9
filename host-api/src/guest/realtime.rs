//! `wasmbase:platform/realtime`: broadcast from a function, on the topics its
//! `function.toml` grants ([`TopicGrants`]). A message is a row of
//! `realtime.messages`, exactly what `realtime.send` writes from the
//! database: every node reads it back and delivers it (a private one to the
//! subscribers the SELECT policies allow, and kept for replay), so a function
//! on one node reaches sockets on all of them with no path of its own.
//! The grant is the authority to send: the row is written by the platform,
//! not under the INSERT policies (which govern clients).

use super::bindings::wasmbase::platform::realtime::Host;
use super::{error, GuestCtx, GuestError};
use deadpool_postgres::Pool;
use std::sync::Arc;
use std::time::Duration;

/// Longest topic (and grant pattern), in bytes.
const MAX_TOPIC: usize = 255;

/// Longest event name, in bytes.
const MAX_EVENT: usize = 255;

/// The topic patterns a function may broadcast to: `room:*` (`*` matches
/// any run of characters, including none), or an exact topic.
#[derive(Debug, Clone, Default)]
pub struct TopicGrants(Vec<String>);

impl TopicGrants {
    /// Checks `function.toml`'s `realtime` list.
    pub fn parse(list: &[String]) -> Result<TopicGrants, String> {
        for p in list {
            if p.is_empty() || p.len() > MAX_TOPIC || p.chars().any(char::is_control) {
                return Err(format!(
                    "{p:?} is not a topic pattern (1 to {MAX_TOPIC} characters, no control characters; `*` matches any run)"
                ));
            }
        }
        Ok(TopicGrants(list.to_vec()))
    }

    /// Whether nothing is granted.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether `topic` matches a grant.
    pub fn allows(&self, topic: &str) -> bool {
        self.0.iter().any(|p| glob(p, topic))
    }
}

/// `*` matches any run of characters.
fn glob(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    crate::wildcard::matches(&t, &p, '*', None)
}

/// Realtime access granted to one invocation.
#[derive(Clone)]
pub struct RealtimeAccess {
    /// The platform's own pool (the owner of `realtime.messages`).
    pub system: Pool,
    /// The topics granted.
    pub grants: Arc<TopicGrants>,
    /// Largest payload (`realtime.max_payload_bytes`).
    pub max_payload: usize,
    /// Longest the insert may take (further capped by the call's time left).
    pub statement_timeout: Duration,
    /// The guests' share of the database pool (shared with `data`/`sql`).
    pub permits: Arc<tokio::sync::Semaphore>,
}

impl Host for GuestCtx {
    async fn broadcast(
        &mut self,
        topic: String,
        event: String,
        payload: String,
        private: bool,
    ) -> Result<(), GuestError> {
        let Some(rt) = self.realtime.clone() else {
            return Err(error(
                403,
                "AccessDenied",
                "this function has no realtime grant (set realtime = [\"<topic pattern>\"] in function.toml)",
            ));
        };
        if topic.is_empty() || topic.len() > MAX_TOPIC || topic.chars().any(char::is_control) {
            return Err(error(
                400,
                "InvalidTopic",
                format!("a topic is 1 to {MAX_TOPIC} characters, with no control characters"),
            ));
        }
        if !rt.grants.allows(&topic) {
            return Err(error(
                403,
                "AccessDenied",
                format!("function.toml's realtime grants do not include the topic {topic:?}"),
            ));
        }
        if event.len() > MAX_EVENT {
            return Err(error(
                400,
                "InvalidEvent",
                format!("an event name is at most {MAX_EVENT} bytes"),
            ));
        }
        if payload.len() > rt.max_payload {
            return Err(error(
                413,
                "PayloadTooLarge",
                format!(
                    "the payload is {} bytes; realtime.max_payload_bytes is {}",
                    payload.len(),
                    rt.max_payload
                ),
            ));
        }
        let json: serde_json::Value = serde_json::from_str(&payload).map_err(|e| {
            error(
                400,
                "InvalidPayload",
                format!("the payload is not JSON: {e}"),
            )
        })?;
        // PostgreSQL's jsonb refuses \u0000.
        if payload.contains("\\u0000") {
            return Err(error(
                400,
                "InvalidPayload",
                "the payload holds \\u0000, which PostgreSQL's jsonb refuses",
            ));
        }
        let _permit = rt
            .permits
            .acquire()
            .await
            .map_err(|_| error(503, "WB503", "database access is shutting down"))?;
        let timeout = self.db_timeout(rt.statement_timeout)?;
        let insert = async {
            let c = rt.system.get().await.map_err(|e| e.to_string())?;
            c.execute(
                "INSERT INTO realtime.messages (topic, extension, event, payload, private) \
                 VALUES ($1, 'broadcast', $2, $3, $4)",
                &[&topic, &event, &json, &private],
            )
            .await
            .map_err(|e| e.to_string())
        };
        match tokio::time::timeout(timeout, insert).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, function = %self.function, "realtime: a function's broadcast");
                Err(error(503, "WB503", "the broadcast could not be stored"))
            }
            Err(_) => Err(error(504, "57014", "the function's time is up")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grants_match_topics_by_pattern() {
        let g = TopicGrants::parse(&["room:*".into(), "lobby".into(), "a*b*c".into()]).unwrap();
        assert!(g.allows("room:1") && g.allows("room:") && g.allows("lobby"));
        assert!(!g.allows("lobby:2") && !g.allows("rooms:1") && !g.allows("x"));
        assert!(g.allows("abc") && g.allows("a-b-c") && !g.allows("a-b-"));
        let slow = format!("{}b", "a".repeat(10_000));
        assert!(!TopicGrants::parse(&["*a*a*a*a*a*a*c".into()])
            .unwrap()
            .allows(&slow));
        assert!(TopicGrants::parse(&["".into()]).is_err());
        assert!(TopicGrants::parse(&["a\nb".into()]).is_err());
        assert!(TopicGrants::default().is_empty());
    }
}
