//! One piece of work per key at a time: concurrent callers for the same key queue behind the
//! first, and each re-checks (inside its work) whether the first already did it. The key's
//! entry is dropped when a caller finishes or its request goes away.

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::sync::Arc;

/// Per-key locks for work that must not run twice at once.
pub struct Coalescer<K> {
    map: parking_lot::Mutex<HashMap<K, Arc<tokio::sync::Mutex<()>>>>,
}

impl<K: Hash + Eq + Clone> Default for Coalescer<K> {
    fn default() -> Self {
        Self {
            map: parking_lot::Mutex::new(HashMap::new()),
        }
    }
}

struct Entry<'a, K: Hash + Eq> {
    map: &'a parking_lot::Mutex<HashMap<K, Arc<tokio::sync::Mutex<()>>>>,
    key: K,
}

impl<K: Hash + Eq> Drop for Entry<'_, K> {
    fn drop(&mut self) {
        self.map.lock().remove(&self.key);
    }
}

impl<K: Hash + Eq + Clone> Coalescer<K> {
    /// Runs `work` while holding `key`'s lock.
    pub async fn run<T>(&self, key: K, work: impl Future<Output = T>) -> T {
        let lock = self.map.lock().entry(key.clone()).or_default().clone();
        let _entry = Entry {
            map: &self.map,
            key,
        };
        let _held = lock.lock().await;
        work.await
    }
}
