//! The configuration file: typed, parsed once, validated at start-up.
//!
//! Every key is documented in the root `config.toml`. Unknown keys are refused so a typo fails
//! loudly at start-up instead of silently meaning a default.

use media_ledger_events::{DatastoreId, ServerName, UserId};
use serde::Deserialize;
use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// Longest a download may wait for an async upload (one hour).
pub const MAX_TIMEOUT_MS: u64 = 3_600_000;

/// `path` made absolute and lexically normalised (`.` and `..` folded), for comparing paths
/// that may not exist yet.
fn absolute(path: &Path) -> PathBuf {
    let abs = std::path::absolute(path).unwrap_or_else(|_| path.to_owned());
    let mut out = PathBuf::new();
    for c in abs.components() {
        match c {
            std::path::Component::ParentDir => {
                out.pop();
            }
            std::path::Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

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
}

/// `[database]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseConfig {
    /// RocksDB directory holding the log and every projection.
    pub path: PathBuf,
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
}

impl Default for UploadsConfig {
    fn default() -> Self {
        Self {
            max_bytes: 100 * 1024 * 1024,
            async_expiry_ms: 24 * 3600 * 1000,
            max_pending_per_user: 32,
        }
    }
}

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
}

impl Default for DownloadsConfig {
    fn default() -> Self {
        Self {
            default_timeout_ms: 20_000,
            max_timeout_ms: 60_000,
            access_record_interval_ms: 60_000,
            allow_unauthenticated: true,
        }
    }
}

/// `[transfers]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TransfersConfig {
    /// Blobs copied at the same time by one transfer.
    pub parallel: usize,
    /// Attempts per blob before the transfer gives up on it.
    pub max_attempts: u32,
    /// Wait before the second attempt; doubled after each failure.
    pub retry_base_ms: u64,
}

impl Default for TransfersConfig {
    fn default() -> Self {
        Self {
            parallel: 8,
            max_attempts: 5,
            retry_base_ms: 500,
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
    /// Tokens resolved without asking a homeserver (standalone use and tests).
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
}

/// What a datastore may receive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DatastoreKind {
    /// Uploads to our homeservers.
    LocalMedia,
    /// Media cached from other servers.
    RemoteMedia,
    /// Generated thumbnails.
    Thumbnails,
    /// Everything.
    All,
}

/// The backend of a datastore.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DatastoreType {
    /// A local directory.
    File,
    /// An S3-compatible bucket.
    S3,
}

/// When the S3 client adds or checks checksums (`aws-sdk-s3`'s two settings).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChecksumMode {
    /// Only when the operation requires it: works with Garage, MinIO, Ceph and older gateways.
    #[default]
    WhenRequired,
    /// Whenever the operation supports it (the SDK's default; streamed uploads become
    /// aws-chunked with a trailing checksum, which Garage rejects).
    WhenSupported,
}

/// `[[datastores]]`: common keys, then the keys of its `type`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatastoreConfig {
    /// Stable id; events refer to it, so never change it once media exists.
    pub id: DatastoreId,
    /// Backend type: `file` or `s3`.
    #[serde(rename = "type")]
    pub kind: DatastoreType,
    /// Kinds it accepts; empty = read-only.
    #[serde(default)]
    pub kinds: Vec<DatastoreKind>,
    /// `file`: the directory.
    #[serde(default)]
    pub path: Option<PathBuf>,
    /// `s3`: endpoint URL, e.g. `https://s3.eu-west-1.amazonaws.com` or `http://127.0.0.1:3900`.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// `s3`: region (default `us-east-1`).
    #[serde(default)]
    pub region: Option<String>,
    /// `s3`: bucket name.
    #[serde(default)]
    pub bucket: Option<String>,
    /// `s3`: access key id; absent = the `AWS_ACCESS_KEY_ID` environment variable.
    #[serde(default)]
    pub access_key_id: Option<String>,
    /// `s3`: secret; absent = the `AWS_SECRET_ACCESS_KEY` environment variable.
    #[serde(default)]
    pub secret_access_key: Option<String>,
    /// `s3`: path-style addressing (`endpoint/bucket/key`; default true, needed by most
    /// self-hosted servers).
    #[serde(default)]
    pub path_style: Option<bool>,
    /// `s3`: key prefix inside the bucket (default none).
    #[serde(default)]
    pub prefix: Option<String>,
    /// `s3`: checksum calculation on requests (default `when_required`).
    #[serde(default)]
    pub request_checksum_calculation: Option<ChecksumMode>,
    /// `s3`: checksum validation of responses (default `when_required`).
    #[serde(default)]
    pub response_checksum_validation: Option<ChecksumMode>,
    /// `s3`: blobs from this size up are sent as multipart uploads (default 16 MiB).
    #[serde(default)]
    pub multipart_threshold_bytes: Option<u64>,
    /// `s3`: multipart part size (default 8 MiB, at least 5 MiB).
    #[serde(default)]
    pub part_size_bytes: Option<u64>,
    /// `s3`: connect timeout (default 5000 ms).
    #[serde(default)]
    pub connect_timeout_ms: Option<u64>,
    /// `s3`: read timeout (default 30000 ms).
    #[serde(default)]
    pub read_timeout_ms: Option<u64>,
    /// `s3`: local directory where uploads are spooled and hashed before they are sent
    /// (default `<database.path>-spool/<id>`).
    #[serde(default)]
    pub spool_path: Option<PathBuf>,
    /// The resolved backend, filled by validation.
    #[serde(skip)]
    pub backend: Option<Backend>,
}

/// A datastore's backend with every default applied.
#[derive(Debug, Clone)]
pub enum Backend {
    /// A local directory.
    File {
        /// The directory.
        path: PathBuf,
    },
    /// An S3 bucket.
    S3(S3Config),
}

/// Everything an S3 datastore needs.
#[derive(Debug, Clone)]
pub struct S3Config {
    /// Endpoint URL.
    pub endpoint: String,
    /// Region.
    pub region: String,
    /// Bucket.
    pub bucket: String,
    /// Access key id.
    pub access_key_id: String,
    /// Secret access key.
    pub secret_access_key: String,
    /// Path-style addressing.
    pub path_style: bool,
    /// Key prefix.
    pub prefix: String,
    /// Request checksums.
    pub request_checksum_calculation: ChecksumMode,
    /// Response checksums.
    pub response_checksum_validation: ChecksumMode,
    /// Multipart from this size up.
    pub multipart_threshold_bytes: u64,
    /// Part size.
    pub part_size_bytes: u64,
    /// Connect timeout.
    pub connect_timeout_ms: u64,
    /// Read timeout.
    pub read_timeout_ms: u64,
    /// Local spool directory.
    pub spool_path: PathBuf,
}

impl DatastoreConfig {
    fn resolve(&mut self, database: &Path) -> Result<(), ConfigError> {
        let id = self.id.clone();
        let missing =
            |key: &str| ConfigError::Invalid(format!("datastore {id}: `{key}` is required"));
        let s3_keys = [
            ("endpoint", self.endpoint.is_some()),
            ("bucket", self.bucket.is_some()),
            ("region", self.region.is_some()),
            ("access_key_id", self.access_key_id.is_some()),
            ("secret_access_key", self.secret_access_key.is_some()),
            ("path_style", self.path_style.is_some()),
            ("prefix", self.prefix.is_some()),
            ("spool_path", self.spool_path.is_some()),
        ];
        self.backend = Some(match self.kind {
            DatastoreType::File => {
                if let Some((key, _)) = s3_keys.iter().find(|(_, set)| *set) {
                    return Err(ConfigError::Invalid(format!(
                        "datastore {id}: `{key}` applies to type = \"s3\" only"
                    )));
                }
                Backend::File {
                    path: self.path.clone().ok_or_else(|| missing("path"))?,
                }
            }
            DatastoreType::S3 => {
                if self.path.is_some() {
                    return Err(ConfigError::Invalid(format!(
                        "datastore {id}: `path` applies to type = \"file\" only (use spool_path)"
                    )));
                }
                let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
                let prefix = self.prefix.clone().unwrap_or_default();
                if prefix.starts_with('/') {
                    return Err(ConfigError::Invalid(format!(
                        "datastore {id}: prefix must not start with /"
                    )));
                }
                let mut spool_default = database.as_os_str().to_owned();
                spool_default.push("-spool");
                Backend::S3(S3Config {
                    endpoint: self.endpoint.clone().ok_or_else(|| missing("endpoint"))?,
                    region: self.region.clone().unwrap_or_else(|| "us-east-1".into()),
                    bucket: self.bucket.clone().ok_or_else(|| missing("bucket"))?,
                    access_key_id: self
                        .access_key_id
                        .clone()
                        .or_else(|| env("AWS_ACCESS_KEY_ID"))
                        .ok_or_else(|| missing("access_key_id (or AWS_ACCESS_KEY_ID)"))?,
                    secret_access_key: self
                        .secret_access_key
                        .clone()
                        .or_else(|| env("AWS_SECRET_ACCESS_KEY"))
                        .ok_or_else(|| missing("secret_access_key (or AWS_SECRET_ACCESS_KEY)"))?,
                    path_style: self.path_style.unwrap_or(true),
                    prefix,
                    request_checksum_calculation: self
                        .request_checksum_calculation
                        .unwrap_or_default(),
                    response_checksum_validation: self
                        .response_checksum_validation
                        .unwrap_or_default(),
                    multipart_threshold_bytes: self.multipart_threshold_bytes.unwrap_or(16 << 20),
                    part_size_bytes: self.part_size_bytes.unwrap_or(8 << 20).max(5 << 20),
                    connect_timeout_ms: self.connect_timeout_ms.unwrap_or(5_000),
                    read_timeout_ms: self.read_timeout_ms.unwrap_or(30_000),
                    spool_path: self
                        .spool_path
                        .clone()
                        .unwrap_or_else(|| PathBuf::from(spool_default).join(id.as_str())),
                })
            }
        });
        Ok(())
    }

    /// The directory this datastore owns on local disk (a file datastore's root, an S3
    /// datastore's spool).
    pub fn local_dir(&self) -> Option<&Path> {
        match &self.backend {
            Some(Backend::File { path }) => Some(path),
            Some(Backend::S3(s3)) => Some(&s3.spool_path),
            None => None,
        }
    }
}

impl DatastoreConfig {
    /// Whether new blobs of `kind` may be written here.
    pub fn accepts(&self, kind: DatastoreKind) -> bool {
        self.kinds
            .iter()
            .any(|k| *k == kind || *k == DatastoreKind::All)
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
        if self.homeservers.iter().filter(|h| h.default).count() > 1 {
            return invalid("at most one homeserver may have default = true".into());
        }
        let mut names = HashSet::new();
        for h in &self.homeservers {
            if !names.insert(h.name.as_str()) {
                return invalid(format!("homeserver {} configured twice", h.name));
            }
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
        for (i, a) in self.datastores.iter().enumerate() {
            for b in self.datastores.iter().skip(i + 1) {
                let (Some(da), Some(db)) = (a.local_dir(), b.local_dir()) else {
                    continue;
                };
                let (pa, pb) = (absolute(da), absolute(db));
                if pa.starts_with(&pb) || pb.starts_with(&pa) {
                    return invalid(format!(
                        "datastores {} and {} share a directory ({} and {}): each needs its own",
                        a.id,
                        b.id,
                        da.display(),
                        db.display()
                    ));
                }
            }
        }
        for (i, a) in self.datastores.iter().enumerate() {
            for b in self.datastores.iter().skip(i + 1) {
                if let (Some(Backend::S3(x)), Some(Backend::S3(y))) = (&a.backend, &b.backend) {
                    let same_bucket = x.endpoint.trim_end_matches('/')
                        == y.endpoint.trim_end_matches('/')
                        && x.bucket == y.bucket;
                    if same_bucket
                        && (x.prefix.starts_with(&y.prefix) || y.prefix.starts_with(&x.prefix))
                    {
                        return invalid(format!(
                            "datastores {} and {} share bucket {} (prefixes {:?} and {:?}): give each its own bucket or a prefix the other's does not contain",
                            a.id, b.id, x.bucket, x.prefix, y.prefix
                        ));
                    }
                }
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

    /// The homeserver that a request with this `Host` header is for.
    pub fn homeserver_for(&self, host: Option<&str>) -> &HomeserverConfig {
        // Host names are case-insensitive (RFC 9110 §4.2.3).
        let by_name = |n: &str| {
            self.homeservers
                .iter()
                .find(|h| h.name.as_str().eq_ignore_ascii_case(n))
        };
        host.and_then(|h| {
            by_name(h).or_else(|| by_name(h.rsplit_once(':').map_or(h, |(name, _)| name)))
        })
        .or_else(|| self.homeservers.iter().find(|h| h.default))
        .unwrap_or(&self.homeservers[0])
    }

    /// Whether `server` is one of ours.
    pub fn is_local(&self, server: &ServerName) -> bool {
        self.homeservers.iter().any(|h| &h.name == server)
    }
}
