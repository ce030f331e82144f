//! The configuration file: typed, parsed once, validated at start-up.
//!
//! Every key is documented in the root `config.toml`. Unknown keys are refused so a typo fails
//! loudly at start-up instead of silently meaning a default.

mod abuse;
mod datastore;
mod overlap;
mod previews;
mod tasks;

pub use abuse::{
    glob_match, BucketConfig, ByteBucketConfig, ClassConfig, ContentCheckConfig, FailurePolicy,
    QuotaRule, RateLimitsConfig, RetentionConfig, WindowLimit,
};
pub use datastore::{
    Backend, ChecksumMode, DatastoreConfig, DatastoreKind, DatastoreType, S3Config,
};
pub use previews::{OEmbedProvider, UrlPreviewsConfig};
pub use tasks::{
    FederationConfig, ThumbnailMethodConfig, ThumbnailSize, ThumbnailsConfig, TransfersConfig,
};

use media_ledger_events::{ServerName, UserId};
use serde::Deserialize;
use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// Longest a download may wait for an async upload (one hour).
pub const MAX_TIMEOUT_MS: u64 = 3_600_000;

/// Why the configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The failure.
        source: std::io::Error,
    },
    /// The file is not valid TOML of the expected shape.
    #[error("parsing config: {0}")]
    Parse(#[from] toml::de::Error),
    /// The values are inconsistent.
    #[error("invalid config: {0}")]
    Invalid(String),
}

/// The whole configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Listening socket.
    pub server: ServerConfig,
    /// Where the ledger lives.
    pub database: DatabaseConfig,
    /// Upload limits.
    #[serde(default)]
    pub uploads: UploadsConfig,
    /// Download behaviour.
    #[serde(default)]
    pub downloads: DownloadsConfig,
    /// Tokens and admins.
    #[serde(default)]
    pub auth: AuthConfig,
    /// Datastore transfers.
    #[serde(default)]
    pub transfers: TransfersConfig,
    /// Thumbnail generation.
    #[serde(default)]
    pub thumbnails: ThumbnailsConfig,
    /// Remote media over federation.
    #[serde(default)]
    pub federation: FederationConfig,
    /// Moderation.
    #[serde(default)]
    pub quarantine: QuarantineConfig,
    /// Link previews.
    #[serde(default)]
    pub url_previews: UrlPreviewsConfig,
    /// Rate limits per user, client address and requesting server.
    #[serde(default)]
    pub rate_limits: RateLimitsConfig,
    /// Purging media nobody accessed for long, and the remote cache's size cap.
    #[serde(default)]
    pub retention: RetentionConfig,
    /// The external checker of new media.
    #[serde(default)]
    pub content_check: ContentCheckConfig,
    /// The homeservers whose media this repository serves.
    pub homeservers: Vec<HomeserverConfig>,
    /// Where blobs are kept.
    pub datastores: Vec<DatastoreConfig>,
}

/// `[server]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Address to listen on.
    pub bind: SocketAddr,
    /// On stop, how long in-flight requests may take to finish before their connections
    /// are closed (a stalled client must not hold the process up).
    #[serde(default = "default_shutdown_grace_ms")]
    pub shutdown_grace_ms: u64,
    /// A connection that does not send a whole request head (request line and headers)
    /// within this long is closed; also how long an idle kept-alive connection stays open.
    #[serde(default = "default_header_read_timeout_ms")]
    pub header_read_timeout_ms: u64,
    /// A request body that sends no bytes for this long is answered 408 (`M_UNKNOWN`)
    /// and its connection closed.
    #[serde(default = "default_body_idle_timeout_ms")]
    pub body_idle_timeout_ms: u64,
    /// Reverse proxies (IP addresses or CIDR blocks) whose `X-Forwarded-For`,
    /// `X-Forwarded-Host` and `X-Forwarded-Proto` are believed; from any other peer they are
    /// ignored. Empty (the default): none.
    #[serde(default)]
    pub trusted_proxies: Vec<IpNet>,
    /// A request whose host (`Host`, or a trusted proxy's `X-Forwarded-Host`) names no
    /// homeserver (`name` or `hosts`) is answered 400 `M_UNRECOGNIZED` instead of going to the
    /// default homeserver (`/healthz` and `/metrics` excepted). Off by default: it is logged.
    #[serde(default)]
    pub refuse_unknown_hosts: bool,
    /// Logs one line per answered request (`request answered`, with its id, route, client,
    /// host, user, status and milliseconds) at `info`. Default true; answers of 500 and
    /// more are logged either way.
    #[serde(default = "default_access_log")]
    pub access_log: bool,
}

fn default_access_log() -> bool {
    true
}

/// An IP address or a CIDR block (`10.0.0.0/8`, `::1`, `fd00::/8`), as in `trusted_proxies`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpNet {
    addr: std::net::IpAddr,
    prefix: u8,
}

impl IpNet {
    /// Whether `ip` is in the block (an IPv4-mapped IPv6 address counts as its IPv4).
    pub fn contains(&self, ip: std::net::IpAddr) -> bool {
        use std::net::IpAddr;
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        let bits = |a: IpAddr| -> (u128, u8) {
            match a {
                IpAddr::V4(v4) => (u128::from(u32::from(v4)), 32),
                IpAddr::V6(v6) => (u128::from(v6), 128),
            }
        };
        let ((net, width), (ip, ip_width)) = (bits(self.addr), bits(ip));
        if width != ip_width {
            return false;
        }
        let host_bits = u32::from(width - self.prefix);
        net.checked_shr(host_bits).unwrap_or(0) == ip.checked_shr(host_bits).unwrap_or(0)
    }
}

impl std::str::FromStr for IpNet {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: std::net::IpAddr = addr
            .parse()
            .map_err(|_| format!("{s:?} is not an IP address or CIDR block"))?;
        let width = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => width,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= width)
                .ok_or_else(|| format!("{s:?}: the prefix length must be 0..={width}"))?,
        };
        Ok(IpNet { addr, prefix })
    }
}

impl<'de> Deserialize<'de> for IpNet {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

fn default_shutdown_grace_ms() -> u64 {
    10_000
}

fn default_header_read_timeout_ms() -> u64 {
    // As nginx's keepalive_timeout: clients keeping pooled connections longer (reqwest: 90 s)
    // notice the close before they reuse it.
    75_000
}

fn default_body_idle_timeout_ms() -> u64 {
    60_000
}

/// `[database]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseConfig {
    /// RocksDB directory holding the log and every projection.
    pub path: PathBuf,
    /// RocksDB's block cache, shared by every column family (what it keeps of the log and the
    /// projections read from disk).
    #[serde(default = "default_block_cache_bytes")]
    pub block_cache_bytes: usize,
    /// All of RocksDB's memtables together (writes not yet flushed to disk).
    #[serde(default = "default_write_buffer_bytes")]
    pub write_buffer_bytes: usize,
    /// Where the log lives: `rocksdb` (the default: embedded, in `path`) or `postgres` (the
    /// log shared by the nodes of a cluster, at `url`; `path` then holds this node's cache
    /// of it: its projections, rebuilt from the shared log when missing).
    #[serde(default)]
    pub backend: LogBackend,
    /// `postgres`: `postgres://user:password@host:port/database`.
    #[serde(default)]
    pub url: Option<String>,
    /// `postgres`: how often an idle node reads what the other nodes appended (default 100).
    #[serde(default = "default_follow_interval_ms")]
    pub follow_interval_ms: u64,
}

/// `[database] backend`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogBackend {
    /// The embedded log in RocksDB.
    #[default]
    Rocksdb,
    /// The log in PostgreSQL, shared by several nodes.
    Postgres,
}

fn default_follow_interval_ms() -> u64 {
    100
}

fn default_block_cache_bytes() -> usize {
    32 << 20
}

fn default_write_buffer_bytes() -> usize {
    64 << 20
}

/// `[uploads]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UploadsConfig {
    /// Largest accepted upload.
    pub max_bytes: u64,
    /// How long a `POST /v1/create` reservation stays valid.
    pub async_expiry_ms: u64,
    /// How many unexpired reservations one user may hold.
    pub max_pending_per_user: u64,
    /// Per-user quotas, first matching rule wins.
    pub quotas: Vec<QuotaRule>,
    /// Bytes a user may upload per time window (every user but repository admins).
    pub window_limits: Vec<WindowLimit>,
    /// Sent as `info_uri` with `M_USER_LIMIT_EXCEEDED` (where the user learns about their
    /// limits).
    pub limit_info_uri: Option<String>,
}

impl Default for UploadsConfig {
    fn default() -> Self {
        Self {
            max_bytes: 100 * 1024 * 1024,
            async_expiry_ms: 24 * 3600 * 1000,
            max_pending_per_user: 32,
            quotas: Vec::new(),
            window_limits: Vec::new(),
            limit_info_uri: None,
        }
    }
}

/// 2024-09-01T00:00:00Z: the default `downloads.freeze_unauthenticated_after_ms`.
pub const DEFAULT_FREEZE_AFTER_MS: u64 = 1_725_148_800_000;

/// `[downloads]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DownloadsConfig {
    /// Wait for a pending async upload when the request gives no `timeout_ms`.
    pub default_timeout_ms: u64,
    /// Cap on a request's `timeout_ms`.
    pub max_timeout_ms: u64,
    /// At most one access event per media per this interval.
    pub access_record_interval_ms: u64,
    /// Serve the deprecated unauthenticated `/_matrix/media/{r0,v3}/download` endpoints.
    pub allow_unauthenticated: bool,
    /// The spec v1.11 freeze: media created at or after `freeze_unauthenticated_after_ms` is
    /// served on the deprecated endpoints only to a request with a valid access token (else
    /// 404 `M_NOT_FOUND`), as matrix-media-repo's `freezeUnauthenticatedMedia`.
    pub freeze_unauthenticated: bool,
    /// The freeze time (ms since the epoch); the default is 2024-09-01T00:00:00Z, shortly
    /// after spec v1.11 (the date matrix.org froze its media).
    pub freeze_unauthenticated_after_ms: u64,
    /// Largest remote media fetched, enforced while streaming.
    pub max_bytes: u64,
    /// Purge remote media cached more than this many days ago, hourly (0: never).
    pub expire_after_days: u64,
    /// Downloads waiting on one pending async upload; more are answered 429.
    pub max_waiters_per_media: usize,
    /// Downloads waiting on pending async uploads in all; more are answered 429.
    pub max_waiters: usize,
}

/// `[quarantine]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QuarantineConfig {
    /// Serve a generated "media not allowed" image instead of 404 for quarantined downloads.
    pub replace_downloads: bool,
    /// Serve that image at the requested size instead of 404 for quarantined thumbnails.
    pub replace_thumbnails: bool,
    /// Homeserver admins (as their homeserver's admin API says) may moderate their own
    /// server's media.
    pub allow_local_admins: bool,
}

impl Default for QuarantineConfig {
    fn default() -> Self {
        Self {
            replace_downloads: false,
            replace_thumbnails: true,
            allow_local_admins: true,
        }
    }
}

impl Default for DownloadsConfig {
    fn default() -> Self {
        Self {
            default_timeout_ms: 20_000,
            max_timeout_ms: 60_000,
            access_record_interval_ms: 60_000,
            allow_unauthenticated: true,
            freeze_unauthenticated: true,
            freeze_unauthenticated_after_ms: DEFAULT_FREEZE_AFTER_MS,
            max_bytes: 100 * 1024 * 1024,
            expire_after_days: 0,
            max_waiters_per_media: 100,
            max_waiters: 10_000,
        }
    }
}

/// `[auth]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// A token that acts as repository admin (for operators' scripts). Empty = disabled.
    pub shared_secret: String,
    /// Users who are repository admins.
    pub admins: Vec<UserId>,
    /// How long a token resolved by the homeserver's `whoami` is trusted.
    pub whoami_cache_ttl_ms: u64,
    /// Tokens resolved without asking a homeserver (standalone use and tests); each is valid
    /// only on its user's homeserver, a repository admin's on every one.
    pub static_tokens: Vec<StaticToken>,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            shared_secret: String::new(),
            admins: Vec::new(),
            whoami_cache_ttl_ms: 300_000,
            static_tokens: Vec::new(),
        }
    }
}

/// `[[auth.static_tokens]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StaticToken {
    /// The access token.
    pub token: String,
    /// The user it stands for.
    pub user_id: UserId,
}

/// `[[homeservers]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HomeserverConfig {
    /// The server name in MXC URIs, matched against the request's Host.
    pub name: ServerName,
    /// Base URL of its client-server API, for `whoami`; absent = only static tokens.
    #[serde(default)]
    pub cs_api: Option<String>,
    /// Serves requests whose Host matches no homeserver.
    #[serde(default)]
    pub default: bool,
    /// Read through media of this homeserver we have no record of (media it stored itself)
    /// from its `cs_api`, with the request's token (`read_through.rs`); default: on when
    /// `cs_api` is set.
    #[serde(default)]
    pub read_through: Option<bool>,
    /// Further host names that address this homeserver (the client-facing
    /// `matrix.example.org` of `example.org`), matched as `name` is.
    #[serde(default)]
    pub hosts: Vec<String>,
}

impl HomeserverConfig {
    /// The `cs_api` to read media through from, if read-through is on.
    pub fn read_through_api(&self) -> Option<&str> {
        match (self.read_through, &self.cs_api) {
            (Some(false), _) | (_, None) => None,
            (_, Some(api)) => Some(api),
        }
    }
}

impl Config {
    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text)
    }

    /// Parses and validates config text.
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        let mut config: Config = toml::from_str(text)?;
        let db = config.database.path.clone();
        for d in &mut config.datastores {
            d.resolve(&db)?;
        }
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |m: String| Err(ConfigError::Invalid(m));
        if self.homeservers.is_empty() {
            return invalid("at least one [[homeservers]] is required".into());
        }
        if self.database.block_cache_bytes < 1 << 20 || self.database.write_buffer_bytes < 1 << 20 {
            return invalid(
                "database.block_cache_bytes and database.write_buffer_bytes must be at least 1 MiB"
                    .into(),
            );
        }
        if self.database.backend == LogBackend::Postgres {
            if self.database.url.is_none() {
                return invalid("database.backend = \"postgres\" needs database.url".into());
            }
            if self.database.follow_interval_ms == 0 {
                return invalid("database.follow_interval_ms must be > 0".into());
            }
            // Every node must reach every blob: a node-local directory would hold blobs the
            // other nodes record but cannot serve.
            if let Some(d) = self
                .datastores
                .iter()
                .find(|d| d.kind == datastore::DatastoreType::File && !d.shared)
            {
                return invalid(format!(
                    "datastore {}: a cluster (database.backend = \"postgres\") needs storage every node reaches: use S3, or a file datastore on shared storage (NFS, CephFS) marked `shared = true`",
                    d.id
                ));
            }
        } else if self.database.url.is_some() {
            return invalid("database.url applies to backend = \"postgres\" only".into());
        }
        if self.server.header_read_timeout_ms == 0 || self.server.body_idle_timeout_ms == 0 {
            return invalid(
                "server.header_read_timeout_ms and server.body_idle_timeout_ms must be > 0".into(),
            );
        }
        let mut hosts = HashSet::new();
        for h in &self.homeservers {
            for host in std::iter::once(h.name.as_str()).chain(h.hosts.iter().map(String::as_str)) {
                if !hosts.insert(host.to_ascii_lowercase()) {
                    return invalid(format!(
                        "host {host:?} names two homeservers (a homeserver's name or hosts)"
                    ));
                }
            }
        }
        if self.homeservers.iter().filter(|h| h.default).count() > 1 {
            return invalid("at most one homeserver may have default = true".into());
        }
        if let Some(h) = self
            .homeservers
            .iter()
            .find(|h| ServerName::parse_strict(h.name.as_str()).is_err())
        {
            return invalid(format!(
                "homeserver name {} is not a resolvable server name (labels of [A-Za-z0-9-] separated by single dots, or an IP literal)",
                h.name
            ));
        }
        let mut names = HashSet::new();
        for h in &self.homeservers {
            if !names.insert(h.name.as_str()) {
                return invalid(format!("homeserver {} configured twice", h.name));
            }
            if h.read_through == Some(true) && h.cs_api.is_none() {
                return invalid(format!(
                    "homeserver {}: read_through = true needs its cs_api (where to read media through from)",
                    h.name
                ));
            }
        }
        self.validate_static_tokens()?;
        self.url_previews.validate()?;
        abuse::validate(
            &self.uploads.quotas,
            &self.uploads.window_limits,
            &self.rate_limits,
            &self.retention,
            &self.content_check,
        )?;
        if let Some(name) = self.federation.signing_key_paths.keys().find(|n| {
            !self
                .homeservers
                .iter()
                .any(|h| h.name.as_str().eq_ignore_ascii_case(n))
        }) {
            return invalid(format!(
                "federation.signing_key_paths names {name}, which is not in [[homeservers]]"
            ));
        }
        let mut ids = HashSet::new();
        for d in &self.datastores {
            if !ids.insert(d.id.as_str()) {
                return invalid(format!("datastore id {} configured twice", d.id));
            }
        }
        if !self
            .datastores
            .iter()
            .any(|d| d.accepts(DatastoreKind::LocalMedia))
        {
            return invalid("no datastore accepts local_media".into());
        }
        overlap::check(&self.datastores)?;
        if self.thumbnails.enabled {
            if self.thumbnails.sizes.is_empty() {
                return invalid("thumbnails.sizes is empty (set enabled = false instead)".into());
            }
            if self
                .thumbnails
                .sizes
                .iter()
                .any(|s| !(1..=4096).contains(&s.width) || !(1..=4096).contains(&s.height))
            {
                return invalid("thumbnail sizes must be 1..=4096 pixels".into());
            }
        }
        if !(1..=10_000).contains(&self.uploads.max_pending_per_user) {
            return invalid("uploads.max_pending_per_user must be between 1 and 10000".into());
        }
        if self.downloads.max_timeout_ms > MAX_TIMEOUT_MS {
            return invalid(format!("downloads.max_timeout_ms above {MAX_TIMEOUT_MS}"));
        }
        if self.downloads.max_timeout_ms < self.downloads.default_timeout_ms {
            return invalid("downloads.max_timeout_ms < default_timeout_ms".into());
        }
        Ok(())
    }

    /// A static token is valid only on its user's homeserver (repository admins' on every
    /// one), so one whose user is of no configured homeserver could never authenticate;
    /// and one token string stands for one user.
    fn validate_static_tokens(&self) -> Result<(), ConfigError> {
        let mut tokens = HashSet::new();
        for t in &self.auth.static_tokens {
            if !tokens.insert(t.token.as_str()) {
                return Err(ConfigError::Invalid(format!(
                    "auth.static_tokens: the token of {} is configured twice",
                    t.user_id
                )));
            }
            let server = t.user_id.server_name();
            if !self.auth.admins.contains(&t.user_id)
                && !self
                    .homeservers
                    .iter()
                    .any(|h| h.name.as_str().eq_ignore_ascii_case(server))
            {
                return Err(ConfigError::Invalid(format!(
                    "auth.static_tokens: {} is not a user of a configured homeserver ({server} is not in [[homeservers]]); a static token is valid only on its user's homeserver",
                    t.user_id
                )));
            }
        }
        Ok(())
    }

    /// The homeserver that a request with this `Host` header is for.
    pub fn homeserver_for(&self, host: Option<&str>) -> &HomeserverConfig {
        host.and_then(|h| self.homeserver_named(h))
            .or_else(|| self.homeservers.iter().find(|h| h.default))
            .unwrap_or(&self.homeservers[0])
    }

    /// The homeserver a host (`Host` header value) names by its `name` or one of its `hosts`,
    /// exactly or without the port; none for any other host.
    pub fn homeserver_named(&self, host: &str) -> Option<&HomeserverConfig> {
        // Host names are case-insensitive (RFC 9110 §4.2.3).
        let by_name = |n: &str| {
            self.homeservers.iter().find(|h| {
                h.name.as_str().eq_ignore_ascii_case(n)
                    || h.hosts.iter().any(|a| a.eq_ignore_ascii_case(n))
            })
        };
        by_name(host).or_else(|| by_name(host.rsplit_once(':').map_or(host, |(name, _)| name)))
    }

    /// Where the signing key of our homeserver `server` lives: its own
    /// `federation.signing_key_paths` entry, else [`Config::signing_key_path`].
    pub fn signing_key_path_for(&self, server: &ServerName) -> PathBuf {
        self.federation
            .signing_key_paths
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(server.as_str()))
            .map_or_else(|| self.signing_key_path(), |(_, path)| path.clone())
    }

    /// Where our federation signing key lives (every homeserver's without its own).
    pub fn signing_key_path(&self) -> PathBuf {
        self.federation.signing_key_path.clone().unwrap_or_else(|| {
            let db = &self.database.path;
            db.parent()
                .map_or_else(|| PathBuf::from("signing.key"), |p| p.join("signing.key"))
        })
    }

    /// Whether `server` is one of ours.
    pub fn is_local(&self, server: &ServerName) -> bool {
        self.homeservers.iter().any(|h| &h.name == server)
    }
}
