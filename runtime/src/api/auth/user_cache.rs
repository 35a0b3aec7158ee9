//! The rendered user object of recently seen users, per node.
//!
//! `GET /auth/v1/user` is what every `supabase.auth.getUser()` costs. Rendering
//! the user (columns, metadata, identities) in PostgreSQL took more time than the
//! rest of the request, yet the object only changes when the user row does. So
//! the request still checks the session, the ban and the user on every call, and
//! reads the row's version (`xmin`, which migration 0008 also bumps when an
//! identity changes); the rendering is reused while that version is unchanged.
//! A stale entry can never be served: a different version misses.

use bytes::Bytes;
use std::collections::HashMap;
use std::sync::Mutex;
use uuid::Uuid;

/// Entries kept at most; at about 1 KiB each, a few MiB per node.
const CAPACITY: usize = 4096;

/// Rendered users keyed by id, each with the row version it was rendered from.
#[derive(Default)]
pub struct UserCache {
    entries: Mutex<HashMap<Uuid, (i64, Bytes)>>,
}

impl UserCache {
    /// The rendering of `id` at exactly `version`, if this node has it.
    pub fn get(&self, id: Uuid, version: i64) -> Option<Bytes> {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        match entries.get(&id) {
            Some((v, json)) if *v == version => Some(json.clone()),
            _ => None,
        }
    }

    /// Remembers a rendering; when full, an arbitrary other entry makes room
    /// (cheap, and a miss only costs one more query).
    pub fn put(&self, id: Uuid, version: i64, json: Bytes) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if entries.len() >= CAPACITY && !entries.contains_key(&id) {
            if let Some(victim) = entries.keys().next().copied() {
                entries.remove(&victim);
            }
        }
        entries.insert(id, (version, json));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serves_only_the_version_it_was_rendered_from() {
        let cache = UserCache::default();
        let id = Uuid::new_v4();
        cache.put(id, 7, Bytes::from_static(b"{\"v\":7}"));
        assert_eq!(cache.get(id, 7).as_deref(), Some(&b"{\"v\":7}"[..]));
        assert!(cache.get(id, 8).is_none());
        assert!(cache.get(Uuid::new_v4(), 7).is_none());
    }

    #[test]
    fn stays_bounded() {
        let cache = UserCache::default();
        for i in 0..CAPACITY + 10 {
            cache.put(Uuid::new_v4(), i as i64, Bytes::new());
        }
        assert_eq!(cache.entries.lock().unwrap().len(), CAPACITY);
    }
}
