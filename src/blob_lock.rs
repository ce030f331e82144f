//! Per-hash locks between writers of a blob and the purge's deleter.
//!
//! A content-addressed blob can be freed by a purge and stored again by a new upload of the
//! same bytes before the deletion runs. Whoever stores or adopts a blob holds the lock of its
//! hash from the moment it looks at `hash_refs` until its event is committed; the deleter
//! holds it while it checks that nothing refers to the blob again and deletes it. So the
//! deleter either sees the new reference (and keeps the bytes) or deletes before the new
//! writer looks (and the writer stores its own copy).

use media_ledger_events::Sha256;
use std::sync::LazyLock;
use tokio::sync::{Mutex, MutexGuard};

/// Stripes: two hashes share a lock only when their first 12 bits agree.
const STRIPES: usize = 4096;

static LOCKS: LazyLock<Vec<Mutex<()>>> =
    LazyLock::new(|| (0..STRIPES).map(|_| Mutex::new(())).collect());

/// Holds the lock of `sha` until dropped.
pub struct BlobGuard(#[allow(dead_code)] MutexGuard<'static, ()>);

/// Waits for the lock of `sha`.
pub async fn lock(sha: &Sha256) -> BlobGuard {
    // 12 bits: always below STRIPES (= 2^12), the length of LOCKS.
    let i = usize::from(sha.0[0]) << 4 | usize::from(sha.0[1] >> 4);
    BlobGuard(LOCKS[i].lock().await)
}
