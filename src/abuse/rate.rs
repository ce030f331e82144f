//! Rate limits (`[rate_limits]`): token buckets per user and per client address for uploads,
//! `/create` and downloads, a leaky byte bucket for what is downloaded, and a bucket per
//! requesting server for federation media requests. Bucket state is in memory only (no event
//! per request) and bounded: at most `max_tracked` keys per class; past it, full buckets are
//! forgotten, then any (a forgotten key starts full again).

use crate::config::{BucketConfig, ByteBucketConfig, RateLimitsConfig};
use crate::error::ApiError;
use media_ledger_events::{ServerName, UserId};
use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::time::Instant;

/// What a 429 of ours says.
const TOO_MANY: &str = "too many requests; slow down";

/// Who is asking, as far as limits go.
#[derive(Debug, Clone, Copy)]
pub struct Caller<'a> {
    /// The user, if the request has one.
    pub user: Option<&'a UserId>,
    /// A repository admin or the shared secret: never limited.
    pub admin: bool,
    /// The client address (the peer, or a trusted proxy's `X-Forwarded-For`).
    pub addr: Option<IpAddr>,
}

/// A limited class of requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// `POST /upload`, `PUT /upload/{server}/{id}`.
    Uploads,
    /// `POST /create`.
    Create,
    /// Downloads and thumbnails.
    Downloads,
}

/// A bucket key: a user (by a keyed hash of their id: no allocation per request, and with
/// the process's random key nobody can pick an id colliding with another's), or an address
/// (IPv6 by its /64, what one subscriber gets).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Key {
    User(u64),
    V4(u32),
    V6(u64),
}

fn addr_key(ip: IpAddr) -> Key {
    match ip {
        IpAddr::V4(v4) => Key::V4(u32::from(v4)),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => Key::V4(u32::from(v4)),
            None => Key::V6((u128::from(v6) >> 64) as u64),
        },
    }
}

/// Bounded map of `key → (level, at)`.
struct Table<K> {
    map: parking_lot::Mutex<HashMap<K, (f64, Instant)>>,
    max: usize,
}

impl<K: Hash + Eq + Clone> Table<K> {
    fn new(max: usize) -> Self {
        Self {
            map: parking_lot::Mutex::new(HashMap::new()),
            max,
        }
    }

    /// Makes room for a new key: forgets idle (full or empty) entries, then, if still full,
    /// about half of the rest (amortised: this runs once per `max / 2` new keys at worst).
    fn make_room(
        map: &mut HashMap<K, (f64, Instant)>,
        max: usize,
        idle: impl Fn(&K, &(f64, Instant)) -> bool,
    ) {
        if map.len() < max {
            return;
        }
        map.retain(|k, v| !idle(k, v));
        if map.len() >= max {
            let drop: Vec<K> = map.keys().take(map.len() - max / 2).cloned().collect();
            for k in drop {
                map.remove(&k);
            }
        }
    }
}

/// Token buckets of one class: `burst` tokens, `per_second` regained.
fn level(b: &BucketConfig, (tokens, at): (f64, Instant), now: Instant) -> f64 {
    let secs = now.saturating_duration_since(at).as_secs_f64();
    (tokens + secs * b.per_second).min(f64::from(b.burst))
}

/// The longest wait a 429 names (a day).
const MAX_WAIT_MS: f64 = 86_400_000.0;

fn wait_ms(b: &BucketConfig, level: f64) -> u64 {
    (((1.0 - level) / b.per_second) * 1000.0)
        .ceil()
        .clamp(1.0, MAX_WAIT_MS) as u64
}

struct ClassBuckets {
    user: BucketConfig,
    address: BucketConfig,
    table: Table<Key>,
}

impl ClassBuckets {
    /// Takes a token of each bucket the caller has (user, address), or none if one is empty.
    fn take(&self, user: Option<Key>, addr: Option<Key>) -> Result<(), u64> {
        let keys = [
            user.filter(|_| self.user.enabled())
                .map(|k| (k, &self.user)),
            addr.filter(|_| self.address.enabled())
                .map(|k| (k, &self.address)),
        ];
        if keys.iter().all(Option::is_none) {
            return Ok(());
        }
        let now = Instant::now();
        let mut map = self.table.map.lock();
        let mut levels = [0.0f64; 2];
        let mut wait = 0;
        for (slot, (k, b)) in keys
            .iter()
            .enumerate()
            .filter_map(|(i, k)| Some((i, (*k)?)))
        {
            let l = map
                .get(&k)
                .map_or(f64::from(b.burst), |v| level(b, *v, now));
            if l < 1.0 {
                wait = wait.max(wait_ms(b, l));
            }
            levels[slot] = l;
        }
        if wait > 0 {
            return Err(wait);
        }
        for (slot, (k, _)) in keys
            .iter()
            .enumerate()
            .filter_map(|(i, k)| Some((i, (*k)?)))
        {
            let taken = (levels[slot] - 1.0, now);
            if let Some(v) = map.get_mut(&k) {
                *v = taken;
                continue;
            }
            let (user, address) = (self.user, self.address);
            Table::make_room(&mut map, self.table.max, |k, v| {
                let b = match k {
                    Key::User(_) => &user,
                    Key::V4(_) | Key::V6(_) => &address,
                };
                level(b, *v, now) >= f64::from(b.burst)
            });
            map.insert(k, taken);
        }
        Ok(())
    }
}

/// The leaky byte bucket per user and address.
struct ByteBuckets {
    cfg: ByteBucketConfig,
    table: Table<Key>,
}

impl ByteBuckets {
    fn level(&self, (level, at): (f64, Instant), now: Instant) -> f64 {
        let secs = now.saturating_duration_since(at).as_secs_f64();
        (level - secs * self.cfg.drain_bytes_per_second as f64).max(0.0)
    }

    /// Pours `bytes` into each of the caller's buckets, or says when they would fit.
    fn pour(&self, user: Option<Key>, addr: Option<Key>, bytes: u64) -> Result<(), u64> {
        let keys = [user, addr];
        let now = Instant::now();
        let limit = (self
            .cfg
            .capacity_bytes
            .saturating_add(self.cfg.overflow_bytes)) as f64;
        let drain = self.cfg.drain_bytes_per_second as f64;
        let mut map = self.table.map.lock();
        let mut levels = [0.0f64; 2];
        let mut wait = 0u64;
        let capacity = self.cfg.capacity_bytes as f64;
        // The level at which this download fits: at most the capacity, and room for it below
        // capacity + overflow; one larger than the whole bucket passes once it is empty.
        let target = capacity.min((limit - bytes as f64).max(0.0));
        for (slot, k) in keys
            .iter()
            .enumerate()
            .filter_map(|(i, k)| Some((i, (*k)?)))
        {
            let l = map.get(&k).map_or(0.0, |v| self.level(*v, now));
            if l > target {
                let ms = (((l - target) / drain) * 1000.0).ceil();
                wait = wait.max(ms.clamp(1.0, MAX_WAIT_MS) as u64);
            }
            levels[slot] = l;
        }
        if wait > 0 {
            return Err(wait);
        }
        for (slot, k) in keys
            .iter()
            .enumerate()
            .filter_map(|(i, k)| Some((i, (*k)?)))
        {
            let poured = (levels[slot] + bytes as f64, now);
            if let Some(v) = map.get_mut(&k) {
                *v = poured;
                continue;
            }
            Table::make_room(&mut map, self.table.max, |_, v| self.level(*v, now) <= 0.0);
            map.insert(k, poured);
        }
        Ok(())
    }
}

/// Every rate limit of one server.
pub struct RateLimits {
    enabled: bool,
    uploads: ClassBuckets,
    create: ClassBuckets,
    downloads: ClassBuckets,
    bytes: Option<ByteBuckets>,
    federation: BucketConfig,
    servers: Table<String>,
    exempt_users: Vec<UserId>,
    exempt_addresses: Vec<crate::config::IpNet>,
    user_keys: std::collections::hash_map::RandomState,
}

impl RateLimits {
    /// Builds the limits of `[rate_limits]`.
    pub fn new(cfg: &RateLimitsConfig) -> Self {
        let class = |c: &crate::config::ClassConfig| ClassBuckets {
            user: c.user,
            address: c.address,
            table: Table::new(cfg.max_tracked),
        };
        Self {
            enabled: cfg.enabled,
            uploads: class(&cfg.uploads),
            create: class(&cfg.create),
            downloads: class(&cfg.downloads),
            bytes: (cfg.download_bytes.capacity_bytes > 0).then(|| ByteBuckets {
                cfg: cfg.download_bytes,
                table: Table::new(cfg.max_tracked),
            }),
            federation: cfg.federation,
            servers: Table::new(cfg.max_tracked),
            exempt_users: cfg.exempt_users.clone(),
            exempt_addresses: cfg.exempt_addresses.clone(),
            user_keys: std::collections::hash_map::RandomState::new(),
        }
    }

    fn keys(&self, caller: &Caller<'_>) -> (Option<Key>, Option<Key>) {
        use std::hash::BuildHasher;
        (
            caller
                .user
                .map(|u| Key::User(self.user_keys.hash_one(u.as_str()))),
            caller.addr.map(addr_key),
        )
    }

    fn exempt(&self, caller: &Caller<'_>) -> bool {
        !self.enabled
            || caller.admin
            || caller.user.is_some_and(|u| self.exempt_users.contains(u))
            || caller
                .addr
                .is_some_and(|a| self.exempt_addresses.iter().any(|n| n.contains(a)))
    }

    /// One request of `class`: 429 `M_LIMIT_EXCEEDED` with `retry_after_ms` when a bucket of
    /// the caller is empty.
    pub fn request(&self, class: Class, caller: &Caller<'_>) -> Result<(), ApiError> {
        if self.exempt(caller) {
            return Ok(());
        }
        let buckets = match class {
            Class::Uploads => &self.uploads,
            Class::Create => &self.create,
            Class::Downloads => &self.downloads,
        };
        if !buckets.user.enabled() && !buckets.address.enabled() {
            return Ok(());
        }
        let (user, addr) = self.keys(caller);
        buckets.take(user, addr).map_err(busy)
    }

    /// `bytes` about to be downloaded: 429 while the caller's byte bucket is over its
    /// capacity, or would be by more than the overflow.
    pub fn download_bytes(&self, caller: &Caller<'_>, bytes: u64) -> Result<(), ApiError> {
        match &self.bytes {
            Some(b) if !self.exempt(caller) => {
                let (user, addr) = self.keys(caller);
                b.pour(user, addr, bytes).map_err(busy)
            }
            _ => Ok(()),
        }
    }

    /// A federation media request from `origin` (its signature checked).
    pub fn federation(&self, origin: &ServerName) -> Result<(), ApiError> {
        let b = &self.federation;
        if !self.enabled || !b.enabled() {
            return Ok(());
        }
        let now = Instant::now();
        let mut map = self.servers.map.lock();
        let key = origin.as_str().to_ascii_lowercase();
        let l = map
            .get(&key)
            .map_or(f64::from(b.burst), |v| level(b, *v, now));
        if l < 1.0 {
            return Err(busy(wait_ms(b, l)));
        }
        if !map.contains_key(&key) {
            Table::make_room(&mut map, self.servers.max, |_, v| {
                level(b, *v, now) >= f64::from(b.burst)
            });
        }
        map.insert(key, (l - 1.0, now));
        Ok(())
    }
}

fn busy(retry_after_ms: u64) -> ApiError {
    ApiError::Busy {
        what: TOO_MANY,
        retry_after_ms,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::config::ClassConfig;

    fn cfg() -> RateLimitsConfig {
        RateLimitsConfig {
            uploads: ClassConfig {
                user: BucketConfig {
                    per_second: 1.0,
                    burst: 2,
                },
                address: BucketConfig {
                    per_second: 1.0,
                    burst: 3,
                },
            },
            download_bytes: ByteBucketConfig {
                capacity_bytes: 1000,
                drain_bytes_per_second: 100,
                overflow_bytes: 500,
            },
            max_tracked: 4,
            ..RateLimitsConfig::default()
        }
    }

    fn user(s: &str) -> UserId {
        s.parse().unwrap()
    }

    #[test]
    fn user_and_address_buckets() {
        let r = RateLimits::new(&cfg());
        let (a, b) = (user("@a:x"), user("@b:x"));
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let ca = Caller {
            user: Some(&a),
            admin: false,
            addr: Some(ip),
        };
        r.request(Class::Uploads, &ca).unwrap();
        r.request(Class::Uploads, &ca).unwrap();
        let Err(ApiError::Busy { retry_after_ms, .. }) = r.request(Class::Uploads, &ca) else {
            panic!("third upload passed");
        };
        assert!((1..=1000).contains(&retry_after_ms), "{retry_after_ms}");
        // b from the same address: the address bucket has one token left, then none.
        let cb = Caller {
            user: Some(&b),
            admin: false,
            addr: Some(ip),
        };
        r.request(Class::Uploads, &cb).unwrap();
        assert!(r.request(Class::Uploads, &cb).is_err());
        // Admins are never limited; create has buckets of its own.
        let admin = Caller { admin: true, ..ca };
        r.request(Class::Uploads, &admin).unwrap();
        r.request(Class::Create, &ca).unwrap();
    }

    #[test]
    fn ipv6_is_limited_by_its_64() {
        assert_eq!(
            addr_key("2001:db8::1".parse().unwrap()),
            addr_key("2001:db8::ffff:1".parse().unwrap())
        );
        assert_ne!(
            addr_key("2001:db8:0:1::1".parse().unwrap()),
            addr_key("2001:db8::1".parse().unwrap())
        );
    }

    #[test]
    fn byte_bucket_overflow_and_wait() {
        let r = RateLimits::new(&cfg());
        let a = user("@a:x");
        let c = Caller {
            user: Some(&a),
            admin: false,
            addr: None,
        };
        r.download_bytes(&c, 900).unwrap();
        // 900 + 600 = 1500 <= 1000 + 500.
        r.download_bytes(&c, 600).unwrap();
        // Over the capacity now: refused, about 5 s of drain.
        let Err(ApiError::Busy { retry_after_ms, .. }) = r.download_bytes(&c, 1) else {
            panic!("passed over capacity");
        };
        assert!((4000..=5100).contains(&retry_after_ms), "{retry_after_ms}");
        // A download larger than the whole bucket passes when it is empty.
        let b = user("@b:x");
        let cb = Caller {
            user: Some(&b),
            ..c
        };
        r.download_bytes(&cb, 10_000).unwrap();
    }

    #[test]
    fn tracked_keys_stay_bounded() {
        let r = RateLimits::new(&cfg());
        for i in 0..100 {
            let u = user(&format!("@u{i}:x"));
            let c = Caller {
                user: Some(&u),
                admin: false,
                addr: None,
            };
            r.request(Class::Uploads, &c).unwrap();
            assert!(r.uploads.table.map.lock().len() <= 4);
        }
    }
}
