//! Downloads waiting for a pending async upload: one wake-up channel per media, so a commit
//! wakes only the waiters of the media it filled (not every waiter on every commit), and caps
//! on waiters per media and in total, so anonymous requests cannot pile up without bound.
//!
//! A waiter subscribes *before* it looks the media up, so a fill committed between its look-up
//! and its wait still wakes it. A media's entry is removed when its last waiter leaves.

use media_ledger_events::MediaRef;
use std::collections::HashMap;
use tokio::sync::watch;

/// The waiters of pending uploads.
pub struct UploadWaiters {
    inner: parking_lot::Mutex<Inner>,
    per_media: usize,
    total: usize,
}

#[derive(Default)]
struct Inner {
    slots: HashMap<MediaRef, Slot>,
    waiters: usize,
}

struct Slot {
    tx: watch::Sender<()>,
    waiters: usize,
}

/// One registered waiter; leaving (drop) unregisters it.
pub struct Waiter<'a> {
    owner: &'a UploadWaiters,
    media: MediaRef,
    rx: watch::Receiver<()>,
}

impl UploadWaiters {
    /// At most `per_media` waiters on one media and `total` in all.
    pub fn new(per_media: usize, total: usize) -> Self {
        Self {
            inner: parking_lot::Mutex::new(Inner::default()),
            per_media,
            total,
        }
    }

    /// Registers a waiter on `media`; `None` when a cap is reached.
    pub fn wait_on(&self, media: &MediaRef) -> Option<Waiter<'_>> {
        let mut inner = self.inner.lock();
        if inner.waiters >= self.total {
            return None;
        }
        let slot = match inner.slots.get_mut(media) {
            Some(slot) if slot.waiters >= self.per_media => return None,
            Some(slot) => slot,
            None => inner.slots.entry(media.clone()).or_insert_with(|| Slot {
                tx: watch::channel(()).0,
                waiters: 0,
            }),
        };
        slot.waiters += 1;
        let rx = slot.tx.subscribe();
        inner.waiters += 1;
        Some(Waiter {
            owner: self,
            media: media.clone(),
            rx,
        })
    }

    /// Wakes the waiters of `media` (its upload was just committed).
    pub fn filled(&self, media: &MediaRef) {
        if let Some(slot) = self.inner.lock().slots.get(media) {
            slot.tx.send_replace(());
        }
    }

    /// Wakes every waiter to look again: on a cluster node, after events other nodes
    /// recorded arrived (one of them may fill a media waited on here).
    pub fn wake_all(&self) {
        for slot in self.inner.lock().slots.values() {
            slot.tx.send_replace(());
        }
    }

    /// Waiters registered now, and media they wait on.
    pub fn counts(&self) -> (usize, usize) {
        let inner = self.inner.lock();
        (inner.waiters, inner.slots.len())
    }
}

impl Waiter<'_> {
    /// Returns when the media was filled since the waiter registered or last woke.
    pub async fn filled(&mut self) {
        // The sender lives in the map as long as this waiter does: no error to see.
        let _ = self.rx.changed().await;
    }
}

impl Drop for Waiter<'_> {
    fn drop(&mut self) {
        let mut inner = self.owner.inner.lock();
        inner.waiters = inner.waiters.saturating_sub(1);
        if let Some(slot) = inner.slots.get_mut(&self.media) {
            slot.waiters = slot.waiters.saturating_sub(1);
            if slot.waiters == 0 {
                inner.slots.remove(&self.media);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn media(id: &str) -> MediaRef {
        MediaRef::new("localhost".parse().unwrap(), id.parse().unwrap())
    }

    #[tokio::test]
    async fn caps_wakes_and_cleans_up() {
        let w = UploadWaiters::new(2, 3);
        let (a, b) = (media("a"), media("b"));
        let mut a1 = w.wait_on(&a).unwrap();
        let a2 = w.wait_on(&a).unwrap();
        assert!(w.wait_on(&a).is_none(), "per-media cap");
        let mut b1 = w.wait_on(&b).unwrap();
        assert!(w.wait_on(&media("c")).is_none(), "total cap");
        // Filling a wakes a's waiters, not b's.
        w.filled(&a);
        a1.filled().await;
        assert!(!b1.rx.has_changed().unwrap_or(true));
        drop((a1, a2));
        assert_eq!(w.counts(), (1, 1));
        w.filled(&b);
        b1.filled().await;
        drop(b1);
        assert_eq!(w.counts(), (0, 0));
    }
}
