//! One piece of work per key at a time: concurrent callers for the same key queue behind the
//! first, and each re-checks (inside its work) whether the first already did it. The key's
//! entry is counted: it stays while any caller holds or waits for the lock (a waiter that goes
//! away does not remove it from under the one working), and is dropped with the last caller.

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::sync::Arc;

/// A key's lock and how many callers hold or wait for it.
type Slot = (Arc<tokio::sync::Mutex<()>>, usize);

/// Per-key locks for work that must not run twice at once.
pub struct Coalescer<K> {
    map: parking_lot::Mutex<HashMap<K, Slot>>,
}

impl<K: Hash + Eq + Clone> Default for Coalescer<K> {
    fn default() -> Self {
        Self {
            map: parking_lot::Mutex::new(HashMap::new()),
        }
    }
}

struct Entry<'a, K: Hash + Eq> {
    map: &'a parking_lot::Mutex<HashMap<K, Slot>>,
    key: K,
}

impl<K: Hash + Eq> Drop for Entry<'_, K> {
    fn drop(&mut self) {
        let mut map = self.map.lock();
        if let Some(slot) = map.get_mut(&self.key) {
            slot.1 = slot.1.saturating_sub(1);
            if slot.1 == 0 {
                map.remove(&self.key);
            }
        }
    }
}

impl<K: Hash + Eq + Clone> Coalescer<K> {
    /// Runs `work` while holding `key`'s lock.
    pub async fn run<T>(&self, key: K, work: impl Future<Output = T>) -> T {
        let lock = {
            let mut map = self.map.lock();
            let slot = map.entry(key.clone()).or_default();
            slot.1 += 1;
            slot.0.clone()
        };
        let _entry = Entry {
            map: &self.map,
            key,
        };
        let _held = lock.lock().await;
        work.await
    }

    /// Keys with a caller (for tests).
    pub fn len(&self) -> usize {
        self.map.lock().len()
    }

    /// Whether no key has a caller.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    // The first caller works (until released); a second waits and goes away; a third must
    // still queue behind the first, not start the work beside it.
    #[tokio::test]
    async fn a_waiter_leaving_keeps_the_key() {
        let c = Arc::new(Coalescer::<u32>::default());
        let running = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let work = |release: tokio::sync::oneshot::Receiver<()>| {
            let (running, most) = (running.clone(), most.clone());
            async move {
                let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(now, Ordering::SeqCst);
                let _ = release.await;
                running.fetch_sub(1, Ordering::SeqCst);
            }
        };
        let (tx1, rx1) = tokio::sync::oneshot::channel();
        let first = tokio::spawn({
            let c = c.clone();
            let w = work(rx1);
            async move { c.run(7, w).await }
        });
        while running.load(Ordering::SeqCst) == 0 {
            tokio::task::yield_now().await;
        }
        let (_tx2, rx2) = tokio::sync::oneshot::channel();
        let second = tokio::spawn({
            let c = c.clone();
            let w = work(rx2);
            async move { c.run(7, w).await }
        });
        while c.map.lock().get(&7).map(|s| s.1) != Some(2) {
            tokio::task::yield_now().await;
        }
        second.abort();
        let _ = second.await;
        let (tx3, rx3) = tokio::sync::oneshot::channel();
        let third = tokio::spawn({
            let c = c.clone();
            let w = work(rx3);
            async move { c.run(7, w).await }
        });
        while c.map.lock().get(&7).map(|s| s.1) != Some(2) {
            tokio::task::yield_now().await;
        }
        assert_eq!(
            running.load(Ordering::SeqCst),
            1,
            "the third runs beside the first"
        );
        let _ = tx1.send(());
        first.await.unwrap();
        let _ = tx3.send(());
        third.await.unwrap();
        assert_eq!(most.load(Ordering::SeqCst), 1);
        assert!(c.is_empty());
    }
}
