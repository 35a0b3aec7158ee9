//! Password hashing with argon2id on a bounded pool.
//!
//! A hash costs ~15 ms of CPU and ~19 MiB of memory. Hashing runs on the blocking
//! pool with at most `concurrency` jobs at once (about one per core) and at most
//! `queue` more waiting; beyond that callers get [`HashError::Busy`] at once (the
//! API answers 503 + Retry-After), so a sign-in flood can neither stall the async
//! workers nor exhaust memory.

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::sync::Semaphore;

/// Why hashing did not happen.
#[derive(Debug, thiserror::Error)]
pub enum HashError {
    /// Too many hashes in flight and queued.
    #[error("too many password operations in flight")]
    Busy,
    /// The hasher itself failed (a bug or a corrupt stored hash).
    #[error("password hashing failed: {0}")]
    Internal(String),
}

/// The bounded argon2id hasher.
#[derive(Debug)]
pub struct Hasher {
    permits: Arc<Semaphore>,
    waiting: AtomicUsize,
    queue: usize,
    params: Params,
    dummy: String,
}

/// OWASP's minimum for argon2id: m = 19456 KiB, t = 2, p = 1.
pub fn default_params() -> Params {
    Params::new(19_456, 2, 1, None).expect("valid argon2 params")
}

fn argon(params: &Params) -> Argon2<'static> {
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone())
}

impl Hasher {
    /// `concurrency` hashes at once, `queue` more waiting.
    pub fn new(concurrency: usize, queue: usize, params: Params) -> Hasher {
        let salt = SaltString::generate(&mut OsRng);
        let dummy = argon(&params)
            .hash_password(b"wasmbase-dummy-password", &salt)
            .expect("hashing the dummy password")
            .to_string();
        Hasher {
            permits: Arc::new(Semaphore::new(concurrency.max(1))),
            waiting: AtomicUsize::new(0),
            queue,
            params,
            dummy,
        }
    }

    async fn run<T: Send + 'static>(
        &self,
        job: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, HashError> {
        if self.waiting.fetch_add(1, Ordering::AcqRel)
            >= self.queue + self.permits.available_permits()
        {
            self.waiting.fetch_sub(1, Ordering::AcqRel);
            return Err(HashError::Busy);
        }
        let permit = self.permits.clone().acquire_owned().await;
        self.waiting.fetch_sub(1, Ordering::AcqRel);
        let permit = permit.map_err(|e| HashError::Internal(e.to_string()))?;
        tokio::task::spawn_blocking(move || {
            let out = job();
            drop(permit);
            out
        })
        .await
        .map_err(|e| HashError::Internal(e.to_string()))
    }

    /// Hashes a password into a PHC string (`$argon2id$…`).
    pub async fn hash(&self, password: String) -> Result<String, HashError> {
        let params = self.params.clone();
        self.run(move || {
            let salt = SaltString::generate(&mut OsRng);
            argon(&params)
                .hash_password(password.as_bytes(), &salt)
                .map(|h| h.to_string())
                .map_err(|e| HashError::Internal(e.to_string()))
        })
        .await?
    }

    /// Checks a password against a stored hash. With no stored hash (unknown user)
    /// it verifies against a dummy hash and answers `false`, so an unknown email
    /// costs the same time as a wrong password.
    pub async fn verify(
        &self,
        password: String,
        stored: Option<String>,
    ) -> Result<bool, HashError> {
        let known = stored.is_some();
        let phc = stored.unwrap_or_else(|| self.dummy.clone());
        let params = self.params.clone();
        self.run(move || {
            let parsed = PasswordHash::new(&phc).map_err(|e| HashError::Internal(e.to_string()))?;
            let ok = argon(&params)
                .verify_password(password.as_bytes(), &parsed)
                .is_ok();
            Ok(ok && known)
        })
        .await?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn hash_verify_and_bounded_queue() {
        let h = Arc::new(Hasher::new(1, 1, Params::new(1024, 1, 1, None).unwrap()));
        let phc = h.hash("correct horse".into()).await.unwrap();
        assert!(phc.starts_with("$argon2id$"));
        assert!(h
            .verify("correct horse".into(), Some(phc.clone()))
            .await
            .unwrap());
        assert!(!h.verify("wrong".into(), Some(phc)).await.unwrap());
        assert!(!h.verify("anything".into(), None).await.unwrap());
        // Occupy the only slot, let one caller queue, then the next is refused at
        // once instead of piling up.
        let held = h.permits.clone().acquire_owned().await.unwrap();
        let queued = {
            let h = h.clone();
            tokio::spawn(async move { h.hash("queued".into()).await })
        };
        while h.waiting.load(Ordering::Acquire) == 0 {
            tokio::task::yield_now().await;
        }
        let busy = usize::from(matches!(
            h.hash("refused".into()).await,
            Err(HashError::Busy)
        ));
        drop(held);
        assert!(
            queued.await.unwrap().is_ok(),
            "the queued job runs once the slot frees"
        );
        assert_eq!(busy, 1, "the queue bound did not refuse");
    }
}
