//! What bounds thumbnail generation under load: admission (a worker permit, taken before the
//! source is read, and a bounded queue of requests waiting for one) and the memory of failed
//! renders (a source that cannot be thumbnailed at a size is decoded once, not once per
//! request).

use crate::error::ApiError;
use media_ledger_events::{Sha256, ThumbnailMethod};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// What a client refused for a full queue is told to wait before trying again.
pub const RETRY_AFTER_MS: u64 = 1_000;

/// Failed renders remembered at most (the oldest expiring entry goes first).
pub const FAILED_CAPACITY: usize = 10_000;

/// How long a source that cannot be thumbnailed (not an image, undecodable, too many pixels)
/// is remembered as such: its bytes never change, so this only bounds staleness after a
/// configuration change.
pub const FAILED_TTL: Duration = Duration::from_secs(3600);

/// How long a generation that timed out is remembered (the machine may only have been busy).
pub const TIMED_OUT_TTL: Duration = Duration::from_secs(60);

/// Worker permits and the bounded queue in front of them.
pub struct Admission {
    /// `workers` permits: one per generation that holds a source in memory.
    workers: Arc<Semaphore>,
    /// `workers + max_queued` permits: every generation working or waiting for a worker.
    admitted: Arc<Semaphore>,
}

/// A generation's place: released when dropped.
pub struct Admitted {
    _place: OwnedSemaphorePermit,
}

impl Admission {
    /// `workers` generations at once, `max_queued` more waiting.
    pub fn new(workers: usize, max_queued: usize) -> Self {
        let workers = workers.max(1);
        Self {
            workers: Arc::new(Semaphore::new(workers)),
            admitted: Arc::new(Semaphore::new(workers.saturating_add(max_queued))),
        }
    }

    /// A place among the generations working or queued, or 429 `M_LIMIT_EXCEEDED` (with
    /// `retry_after_ms`) when they are all taken.
    pub fn enter(&self) -> Result<Admitted, ApiError> {
        self.admitted
            .clone()
            .try_acquire_owned()
            .map(|p| Admitted { _place: p })
            .map_err(|_| ApiError::Busy {
                what: "too many thumbnails are being generated; retry later",
                retry_after_ms: RETRY_AFTER_MS,
            })
    }

    /// Waits for a worker (hold [`Admitted`] meanwhile); only then may the source be read.
    pub async fn worker(&self, _place: &Admitted) -> Result<OwnedSemaphorePermit, ApiError> {
        self.workers
            .clone()
            .acquire_owned()
            .await
            .map_err(ApiError::internal)
    }
}

/// A source and the size asked of it.
pub type FailedKey = (Sha256, u32, u32, ThumbnailMethod);

/// Renders that failed, with the error they answered, until their expiry.
#[derive(Default)]
pub struct FailedRenders {
    entries: parking_lot::Mutex<HashMap<FailedKey, (Instant, Failure)>>,
}

/// A remembered failure.
#[derive(Clone, Debug)]
pub enum Failure {
    /// The source cannot be thumbnailed (400 `M_UNKNOWN` with this message).
    Cannot(String),
    /// The generation timed out (503).
    TimedOut,
}

impl Failure {
    /// The answer to a request meeting this failure.
    pub fn error(&self) -> ApiError {
        match self {
            Failure::Cannot(why) => ApiError::CannotThumbnail(why.clone()),
            Failure::TimedOut => timed_out(),
        }
    }

    /// The failure worth remembering in `e`, if any (not a storage or ledger failure: those
    /// say nothing about the source).
    pub fn of(e: &ApiError) -> Option<Self> {
        match e {
            ApiError::CannotThumbnail(why) => Some(Failure::Cannot(why.clone())),
            ApiError::Unavailable { message, .. } if *message == TIMED_OUT => {
                Some(Failure::TimedOut)
            }
            _ => None,
        }
    }

    fn ttl(&self) -> Duration {
        match self {
            Failure::Cannot(_) => FAILED_TTL,
            Failure::TimedOut => TIMED_OUT_TTL,
        }
    }
}

const TIMED_OUT: &str = "thumbnail generation timed out";

/// The answer to a generation over `thumbnails.timeout_ms`.
pub fn timed_out() -> ApiError {
    ApiError::Unavailable {
        message: TIMED_OUT,
        cause: String::new(),
    }
}

impl FailedRenders {
    /// The remembered failure of `key`, if it has not expired.
    pub fn get(&self, key: &FailedKey) -> Option<Failure> {
        let mut entries = self.entries.lock();
        match entries.get(key) {
            Some((until, f)) if *until > Instant::now() => Some(f.clone()),
            Some(_) => {
                entries.remove(key);
                None
            }
            None => None,
        }
    }

    /// Remembers that `key` failed with `failure`; past [`FAILED_CAPACITY`] entries the
    /// expired ones, else the one expiring first, make room.
    pub fn remember(&self, key: FailedKey, failure: Failure) {
        let now = Instant::now();
        let until = now.checked_add(failure.ttl()).unwrap_or(now);
        let mut entries = self.entries.lock();
        if entries.len() >= FAILED_CAPACITY && !entries.contains_key(&key) {
            entries.retain(|_, (u, _)| *u > now);
            if entries.len() >= FAILED_CAPACITY {
                if let Some(oldest) = entries.iter().min_by_key(|(_, (u, _))| *u).map(|(k, _)| *k) {
                    entries.remove(&oldest);
                }
            }
        }
        entries.insert(key, (until, failure));
    }

    /// Entries held (expired ones included until met).
    pub fn len(&self) -> usize {
        self.entries.lock().len()
    }

    /// Whether nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn key(n: u32) -> FailedKey {
        (Sha256([0; 32]), n, n, ThumbnailMethod::Crop)
    }

    #[test]
    fn remembered_failures_are_bounded() {
        let failed = FailedRenders::default();
        for n in 0..(FAILED_CAPACITY as u32 + 50) {
            failed.remember(key(n), Failure::Cannot("junk".into()));
        }
        assert_eq!(failed.len(), FAILED_CAPACITY);
        // The newest is kept.
        let last = FAILED_CAPACITY as u32 + 49;
        assert!(matches!(failed.get(&key(last)), Some(Failure::Cannot(_))));
    }

    #[test]
    fn the_queue_is_bounded() {
        let admission = Admission::new(1, 2);
        let held: Vec<_> = (0..3).map(|_| admission.enter().unwrap()).collect();
        let refused = admission.enter().err().unwrap();
        assert_eq!(refused.errcode(), "M_LIMIT_EXCEEDED");
        drop(held);
        assert!(admission.enter().is_ok());
    }
}
