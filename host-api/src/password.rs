//! Password hashing with argon2id on a bounded pool.
//!
//! A hash costs ~15 ms of CPU and ~19 MiB of memory. Hashing runs on its own
//! threads (about one per core) at a lower CPU priority (nice 10), fed by a
//! bounded queue; when the queue is full, callers get [`HashError::Busy`] at once
//! (the API answers 503 + Retry-After). So a sign-in flood can neither stall the
//! async workers — request threads win the CPU over hashing — nor pile up memory.

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use parking_lot::Mutex;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::Arc;

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

type Job = Box<dyn FnOnce() + Send>;

/// The bounded argon2id hasher.
pub struct Hasher {
    jobs: SyncSender<Job>,
    params: Params,
    dummy: String,
}

impl std::fmt::Debug for Hasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hasher").finish_non_exhaustive()
    }
}

/// OWASP's minimum for argon2id: m = 19456 KiB, t = 2, p = 1.
pub fn default_params() -> Params {
    Params::new(19_456, 2, 1, None).expect("valid argon2 params")
}

fn argon(params: &Params) -> Argon2<'static> {
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone())
}

/// Lowers the calling thread's CPU priority (Linux: per-thread nice value).
fn lower_priority() {
    // SAFETY: setpriority only reads its integer arguments; `0` names this thread.
    unsafe {
        libc::setpriority(libc::PRIO_PROCESS, 0, 10);
    }
}

fn worker(rx: Arc<Mutex<Receiver<Job>>>) {
    lower_priority();
    loop {
        let job = rx.lock().recv();
        match job {
            Ok(job) => job(),
            Err(_) => return, // the Hasher is gone
        }
    }
}

impl Hasher {
    /// `concurrency` hashing threads, `queue` more jobs waiting.
    pub fn new(concurrency: usize, queue: usize, params: Params) -> Hasher {
        let (tx, rx) = sync_channel::<Job>(queue);
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..concurrency.max(1) {
            let rx = rx.clone();
            std::thread::Builder::new()
                .name(format!("wasmbase-hash-{i}"))
                .spawn(move || worker(rx))
                .expect("spawning a hashing thread");
        }
        let salt = SaltString::generate(&mut OsRng);
        let dummy = argon(&params)
            .hash_password(b"wasmbase-dummy-password", &salt)
            .expect("hashing the dummy password")
            .to_string();
        Hasher {
            jobs: tx,
            params,
            dummy,
        }
    }

    async fn run<T: Send + 'static>(
        &self,
        job: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, HashError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let boxed: Job = Box::new(move || {
            let _ = tx.send(job());
        });
        match self.jobs.try_send(boxed) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => return Err(HashError::Busy),
            Err(TrySendError::Disconnected(_)) => {
                return Err(HashError::Internal("hashing threads stopped".into()))
            }
        }
        rx.await
            .map_err(|_| HashError::Internal("hashing job panicked".into()))
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
        let dummy = self.dummy.clone();
        self.run(move || {
            // A hash we cannot read (e.g. bcrypt from an import) is a mismatch, after
            // the same work as any other check.
            let (parsed, readable) = match PasswordHash::new(&phc) {
                Ok(p) => (p, true),
                Err(_) => (
                    PasswordHash::new(&dummy).map_err(|e| HashError::Internal(e.to_string()))?,
                    false,
                ),
            };
            let ok = argon(&params)
                .verify_password(password.as_bytes(), &parsed)
                .is_ok();
            Ok(ok && known && readable)
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
        let bcrypt = "$2a$10$N9qo8uLOickgx2ZMRZoMyeIjZAgcfl7p92ldGxad68LJZdL17lhWy".to_string();
        assert!(
            !h.verify("anything".into(), Some(bcrypt)).await.unwrap(),
            "unreadable hash: no 500, no match"
        );
        // Occupy the only thread, fill the one queue slot, then the next job is
        // refused at once instead of piling up.
        let (started_tx, started_rx) = std::sync::mpsc::channel();
        let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
        let blocker = {
            let h = h.clone();
            tokio::spawn(async move {
                h.run(move || {
                    started_tx.send(()).unwrap();
                    release_rx.recv().unwrap();
                })
                .await
            })
        };
        tokio::task::spawn_blocking(move || started_rx.recv().unwrap())
            .await
            .unwrap();
        // Polling the queued job once performs its try_send into the one slot.
        let mut queued = Box::pin(h.hash("queued".into()));
        assert!(futures::poll!(&mut queued).is_pending());
        let busy = usize::from(matches!(
            h.hash("refused".into()).await,
            Err(HashError::Busy)
        ));
        release_tx.send(()).unwrap();
        blocker.await.unwrap().unwrap();
        assert!(
            queued.await.is_ok(),
            "the queued job runs once the thread frees"
        );
        assert_eq!(busy, 1, "the queue bound did not refuse");
    }
}
