//! A bounded cache with a time to live, for what federation learns about other servers
//! (where they are, their verify keys, their back-off). Unauthenticated requests choose the
//! server names (an X-Matrix origin, an mxc URI), so no such cache may grow with them: each
//! holds at most `capacity` entries; a full cache first drops the expired entries it samples,
//! else a random one (random eviction needs no recency bookkeeping on reads and cannot be
//! steered by the order of an attacker's requests).

use rand::Rng;
use std::collections::HashMap;
use std::hash::Hash;
use std::time::{Duration, Instant};

/// Entries sampled for an expired one before a random entry is evicted.
const EXPIRED_SAMPLES: usize = 8;

/// A map of at most `capacity` entries, each valid for `ttl` after it was inserted.
pub struct BoundedCache<K, V> {
    inner: parking_lot::Mutex<Inner<K, V>>,
    capacity: usize,
    ttl: Duration,
}

struct Inner<K, V> {
    /// Key → value, insertion time, index in `keys`.
    map: HashMap<K, (V, Instant, usize)>,
    /// Every key once, for O(1) random choice.
    keys: Vec<K>,
}

impl<K: Hash + Eq + Clone, V: Clone> BoundedCache<K, V> {
    /// An empty cache (`capacity` at least 1).
    pub fn new(capacity: usize, ttl: Duration) -> Self {
        Self {
            inner: parking_lot::Mutex::new(Inner {
                map: HashMap::new(),
                keys: Vec::new(),
            }),
            capacity: capacity.max(1),
            ttl,
        }
    }

    /// The value of `key` if it is there and younger than the time to live (an expired one
    /// is dropped).
    pub fn get(&self, key: &K) -> Option<V> {
        let mut inner = self.inner.lock();
        let (value, at, _) = inner.map.get(key)?;
        if at.elapsed() < self.ttl {
            return Some(value.clone());
        }
        inner.remove(key);
        None
    }

    /// Inserts or replaces `key`, evicting an entry first if the cache is full.
    pub fn insert(&self, key: K, value: V) {
        let mut inner = self.inner.lock();
        let now = Instant::now();
        if let Some(entry) = inner.map.get_mut(&key) {
            entry.0 = value;
            entry.1 = now;
            return;
        }
        if inner.keys.len() >= self.capacity {
            inner.evict_one(self.ttl);
        }
        let index = inner.keys.len();
        inner.keys.push(key.clone());
        inner.map.insert(key, (value, now, index));
    }

    /// Removes `key`.
    pub fn remove(&self, key: &K) {
        self.inner.lock().remove(key);
    }

    /// How many entries are held (expired ones included until they are dropped).
    pub fn len(&self) -> usize {
        self.inner.lock().keys.len()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<K: Hash + Eq + Clone, V> Inner<K, V> {
    fn remove(&mut self, key: &K) {
        let Some((_, _, index)) = self.map.remove(key) else {
            return;
        };
        self.keys.swap_remove(index);
        if let Some(moved) = self.keys.get(index) {
            if let Some(entry) = self.map.get_mut(moved) {
                entry.2 = index;
            }
        }
    }

    fn evict_one(&mut self, ttl: Duration) {
        if self.keys.is_empty() {
            return;
        }
        let mut rng = rand::rng();
        let mut victim = None;
        for _ in 0..EXPIRED_SAMPLES {
            let key = &self.keys[rng.random_range(0..self.keys.len())];
            victim = Some(key.clone());
            if self
                .map
                .get(key)
                .is_some_and(|(_, at, _)| at.elapsed() >= ttl)
            {
                break;
            }
        }
        if let Some(key) = victim {
            self.remove(&key);
        }
    }
}

/// Failing hosts and until when they are left alone: the first failure backs a host off for
/// `base`, each further one doubles it (at most 10 minutes), a success forgets it. Bounded
/// like every per-host cache here (hosts come from requests).
pub struct Backoff {
    hosts: BoundedCache<String, (Instant, Duration)>,
    base: Duration,
}

/// The longest back-off.
const MAX_BACKOFF: Duration = Duration::from_secs(600);

impl Backoff {
    /// No host backed off yet; at most `capacity` hosts remembered.
    pub fn new(capacity: usize, base: Duration) -> Self {
        Self {
            // Longer than the longest back-off, so doubling continues.
            hosts: BoundedCache::new(capacity, MAX_BACKOFF * 2),
            base,
        }
    }

    /// Whether `host` is being left alone now.
    pub fn is_backed_off(&self, host: &str) -> bool {
        self.hosts
            .get(&host.to_owned())
            .is_some_and(|(until, _)| Instant::now() < until)
    }

    /// Records how a request to `host` went.
    pub fn record(&self, host: &str, ok: bool) {
        let host = host.to_owned();
        if ok {
            self.hosts.remove(&host);
        } else {
            let next = self
                .hosts
                .get(&host)
                .map_or(self.base, |(_, d)| (d * 2).min(MAX_BACKOFF));
            self.hosts.insert(host, (Instant::now() + next, next));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_at_most_capacity_and_stays_consistent() {
        let c = BoundedCache::new(100, Duration::from_secs(3600));
        for i in 0..10_000u32 {
            c.insert(i, i * 2);
            assert!(c.len() <= 100);
        }
        assert_eq!(c.len(), 100);
        // Every held key still finds its own value (indexes survived the swaps).
        let inner = c.inner.lock();
        for (i, k) in inner.keys.iter().enumerate() {
            let (v, _, index) = inner.map[k];
            assert_eq!((v, index), (k * 2, i));
        }
        assert_eq!(inner.map.len(), inner.keys.len());
    }

    #[test]
    fn expired_entries_are_not_returned() {
        let c = BoundedCache::new(10, Duration::ZERO);
        c.insert("a", 1);
        assert_eq!(c.get(&"a"), None);
        assert!(c.is_empty());
        let c = BoundedCache::new(10, Duration::from_secs(60));
        c.insert("a", 1);
        c.insert("a", 2);
        assert_eq!((c.get(&"a"), c.len()), (Some(2), 1));
        c.remove(&"a");
        assert_eq!(c.get(&"a"), None);
    }
}
