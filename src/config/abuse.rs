//! The abuse controls' configuration: upload quotas and time-window limits (`[[uploads.quotas]]`,
//! `[[uploads.window_limits]]`), `[rate_limits]`, `[retention]` and `[content_check]`.

use super::{ConfigError, IpNet};
use media_ledger_events::UserId;
use serde::Deserialize;

/// `[[uploads.quotas]]`: what the users matching `glob` may store (matrix-media-repo's
/// `uploads.quotas`). The first rule matching a user is theirs; 0 is no limit.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuotaRule {
    /// User ids this rule applies to: `*` any run of characters, `?` one character
    /// (`@*:example.org`). Repository admins are exempt unless the glob is their exact id.
    pub glob: String,
    /// Total bytes of the user's live media.
    #[serde(default)]
    pub max_bytes: u64,
    /// Number of the user's live media.
    #[serde(default)]
    pub max_files: u64,
    /// Unfilled `/create` reservations (0: `uploads.max_pending_per_user`, which also bounds
    /// this).
    #[serde(default)]
    pub max_pending: u64,
}

impl QuotaRule {
    /// Whether this rule applies to `user` (`admin`: a repository admin).
    pub fn applies_to(&self, user: &UserId, admin: bool) -> bool {
        if admin {
            self.glob == user.as_str()
        } else {
            glob_match(self.glob.as_bytes(), user.as_str().as_bytes())
        }
    }
}

/// `[[uploads.window_limits]]`: at most `max_bytes` uploaded per user in any `time_period`
/// (Synapse's `media_upload_limits`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WindowLimit {
    /// The window: a number and a unit, `s`, `m`, `h`, `d` or `w` (`"1d"`), at most 31 days.
    pub time_period: Duration,
    /// Bytes a user may upload within it.
    pub max_bytes: u64,
}

/// A duration written `30s`, `15m`, `1h`, `1d`, `1w`, or a number of milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Duration(pub u64);

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Ms(u64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Ms(ms) => Ok(Duration(ms)),
            Raw::Text(s) => parse_duration(&s).map(Duration).ok_or_else(|| {
                serde::de::Error::custom(format!(
                    "{s:?} is not a duration (a number and s, m, h, d or w: \"1d\")"
                ))
            }),
        }
    }
}

fn parse_duration(s: &str) -> Option<u64> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit())?;
    let (n, unit) = s.split_at(split);
    let n: u64 = n.parse().ok()?;
    let unit_ms: u64 = match unit.trim() {
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        "w" => 7 * 86_400_000,
        _ => return None,
    };
    n.checked_mul(unit_ms)
}

/// `*` and `?` over bytes; linear-time matching (the last `*` is the only one backtracked to).
pub fn glob_match(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        match pattern.get(p) {
            Some(b'*') => {
                star = Some((p, t));
                p += 1;
            }
            Some(&c) if c == b'?' || c == text[t] => {
                p += 1;
                t += 1;
            }
            _ => match star {
                Some((sp, st)) => {
                    p = sp + 1;
                    t = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p.min(pattern.len())..].iter().all(|&c| c == b'*')
}

/// A token bucket: `per_second` regained, at most `burst` at once; `per_second = 0` is no
/// limit.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BucketConfig {
    /// Requests regained per second.
    pub per_second: f64,
    /// Requests allowed at once.
    pub burst: u32,
}

impl BucketConfig {
    const fn new(per_second: f64, burst: u32) -> Self {
        Self { per_second, burst }
    }

    /// Whether it limits anything.
    pub fn enabled(&self) -> bool {
        self.per_second > 0.0
    }
}

/// A class of requests limited per user and per client address.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassConfig {
    /// Per user (by their token's user).
    pub user: BucketConfig,
    /// Per client address (the TCP peer, or `X-Forwarded-For` of a trusted proxy).
    pub address: BucketConfig,
}

/// The download byte bucket (matrix-media-repo's leaky bucket): each download pours its bytes
/// in, `drain_bytes_per_second` leak out; a download is refused while the bucket holds more
/// than `capacity_bytes`, and one download may overflow it by at most `overflow_bytes`.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ByteBucketConfig {
    /// What the bucket holds (0: no byte limit).
    pub capacity_bytes: u64,
    /// What leaks out per second.
    pub drain_bytes_per_second: u64,
    /// How far one download may take it past the capacity.
    pub overflow_bytes: u64,
}

/// `[rate_limits]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimitsConfig {
    /// Limit at all.
    pub enabled: bool,
    /// `POST /upload` and `PUT /upload/{server}/{id}` (Synapse's `rc_media_create`: 10/s,
    /// burst 50).
    pub uploads: ClassConfig,
    /// `POST /create`.
    pub create: ClassConfig,
    /// Downloads and thumbnails (0: off, the default).
    pub downloads: ClassConfig,
    /// Bytes downloaded, per user and per address.
    pub download_bytes: ByteBucketConfig,
    /// Federation media requests per requesting server (the X-Matrix origin).
    pub federation: BucketConfig,
    /// Users never limited (repository admins and the shared secret never are).
    pub exempt_users: Vec<UserId>,
    /// Client addresses never limited (IPs or CIDR blocks).
    pub exempt_addresses: Vec<IpNet>,
    /// Keys (users, addresses, servers) tracked per bucket; past it, full buckets are
    /// forgotten first.
    pub max_tracked: usize,
}

impl Default for RateLimitsConfig {
    fn default() -> Self {
        // Per address: off until the operator says (behind a proxy that is not in
        // `server.trusted_proxies`, every client has the proxy's address).
        let upload = ClassConfig {
            user: BucketConfig::new(10.0, 50),
            address: BucketConfig::new(0.0, 0),
        };
        Self {
            enabled: true,
            uploads: upload,
            create: upload,
            downloads: ClassConfig {
                user: BucketConfig::new(0.0, 0),
                address: BucketConfig::new(0.0, 0),
            },
            download_bytes: ByteBucketConfig {
                capacity_bytes: 0,
                drain_bytes_per_second: 0,
                overflow_bytes: 0,
            },
            federation: BucketConfig::new(0.0, 0),
            exempt_users: Vec::new(),
            exempt_addresses: Vec::new(),
            max_tracked: 100_000,
        }
    }
}

/// `[retention]`: media not accessed for this many days are purged by the system, on a
/// schedule (0: never). Pinned and quarantined media are kept.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetentionConfig {
    /// Local media last accessed this many days ago (Synapse's
    /// `media_retention.local_media_lifetime`).
    pub local_media_days: u64,
    /// Remote media last accessed this many days ago (`remote_media_lifetime`).
    pub remote_media_days: u64,
    /// Thumbnails generated this many days ago (matrix-media-repo's
    /// `thumbnails.expireAfterDays`; they are generated again on demand).
    pub thumbnail_days: u64,
    /// Cached remote media above this many bytes in all: the least recently accessed go
    /// until under it (0: no cap).
    pub remote_max_bytes: u64,
    /// Time between runs.
    pub interval_ms: u64,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        Self {
            local_media_days: 0,
            remote_media_days: 0,
            thumbnail_days: 0,
            remote_max_bytes: 0,
            interval_ms: 3_600_000,
        }
    }
}

impl RetentionConfig {
    /// Whether any rule is set.
    pub fn enabled(&self) -> bool {
        self.local_media_days > 0
            || self.remote_media_days > 0
            || self.thumbnail_days > 0
            || self.remote_max_bytes > 0
    }
}

/// What happens when the checker cannot answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailurePolicy {
    /// Store the media as if allowed (and log).
    Open,
    /// Refuse the media (503).
    Closed,
}

/// `[content_check]`: an HTTP checker asked about each new local upload and remote fetch
/// before the media is recorded.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ContentCheckConfig {
    /// The checker's URL (`POST`); empty: no check.
    pub url: String,
    /// Media up to this size are sent as the request body; larger ones are described only
    /// (the checker decides on the metadata).
    pub max_body_bytes: u64,
    /// How long the checker may take.
    pub timeout_ms: u64,
    /// When it fails or times out: `open` (allow) or `closed` (refuse).
    pub failure_policy: FailurePolicy,
    /// On a deny, quarantine the bytes repository-wide as the system, with the checker's
    /// reason (so they are refused everywhere without asking again).
    pub quarantine_on_deny: bool,
    /// Sent as `Authorization: Bearer …` when set.
    pub secret: String,
    /// Check remote media fetched over federation too.
    pub check_remote: bool,
}

impl Default for ContentCheckConfig {
    fn default() -> Self {
        Self {
            url: String::new(),
            max_body_bytes: 20 * 1024 * 1024,
            timeout_ms: 10_000,
            failure_policy: FailurePolicy::Open,
            quarantine_on_deny: false,
            secret: String::new(),
            check_remote: true,
        }
    }
}

/// Checks the abuse controls' values.
pub fn validate(
    quotas: &[QuotaRule],
    windows: &[WindowLimit],
    rate: &RateLimitsConfig,
    retention: &RetentionConfig,
    check: &ContentCheckConfig,
) -> Result<(), ConfigError> {
    let invalid = |m: String| Err(ConfigError::Invalid(m));
    if let Some(q) = quotas.iter().find(|q| q.glob.is_empty()) {
        return invalid(format!("uploads.quotas: an empty glob ({q:?})"));
    }
    for w in windows {
        if w.time_period.0 == 0 || w.time_period.0 > media_ledger_projections::usage::MAX_WINDOW_MS
        {
            return invalid("uploads.window_limits: time_period must be between 1s and 31d".into());
        }
        if w.max_bytes == 0 {
            return invalid(
                "uploads.window_limits: max_bytes must be > 0 (leave the window out for no limit)"
                    .into(),
            );
        }
    }
    let buckets = [
        ("uploads.user", rate.uploads.user),
        ("uploads.address", rate.uploads.address),
        ("create.user", rate.create.user),
        ("create.address", rate.create.address),
        ("downloads.user", rate.downloads.user),
        ("downloads.address", rate.downloads.address),
        ("federation", rate.federation),
    ];
    for (name, b) in buckets {
        let ok = b.per_second == 0.0 || (b.per_second.is_finite() && b.per_second >= 0.001);
        if !ok || (b.enabled() && b.burst == 0) {
            return invalid(format!(
                "rate_limits.{name}: per_second must be 0 (off) or at least 0.001, and burst >= 1 when it is set"
            ));
        }
    }
    if rate.download_bytes.capacity_bytes > 0 && rate.download_bytes.drain_bytes_per_second == 0 {
        return invalid("rate_limits.download_bytes: drain_bytes_per_second must be > 0".into());
    }
    if rate.max_tracked == 0 {
        return invalid("rate_limits.max_tracked must be > 0".into());
    }
    if retention.enabled() && retention.interval_ms < 1_000 {
        return invalid("retention.interval_ms must be at least 1000".into());
    }
    if !check.url.is_empty() {
        let ok =
            reqwest::Url::parse(&check.url).is_ok_and(|u| matches!(u.scheme(), "http" | "https"));
        if !ok {
            return invalid(format!(
                "content_check.url {:?} is not an http(s) URL",
                check.url
            ));
        }
        if check.timeout_ms == 0 {
            return invalid("content_check.timeout_ms must be > 0".into());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob_match(b"@*:example.org", b"@alice:example.org"));
        assert!(!glob_match(b"@*:example.org", b"@alice:example.com"));
        assert!(glob_match(b"*", b""));
        assert!(glob_match(b"@a?ice:*", b"@alice:x"));
        assert!(glob_match(b"*b*b*", b"abababab"));
        assert!(!glob_match(b"*b*c", b"abababab"));
        assert!(glob_match(b"@bob:x", b"@bob:x"));
        assert!(!glob_match(b"@bob:x", b"@bob:xy"));
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("1d"), Some(86_400_000));
        assert_eq!(parse_duration("30s"), Some(30_000));
        assert_eq!(parse_duration("2w"), Some(14 * 86_400_000));
        assert_eq!(parse_duration("d"), None);
        assert_eq!(parse_duration("5y"), None);
    }
}
