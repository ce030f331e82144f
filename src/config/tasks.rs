//! `[transfers]`, `[thumbnails]` and `[federation]`: the work the server does with blobs
//! beyond plain uploads and downloads.

use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::PathBuf;

/// `[federation]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FederationConfig {
    /// Fetch media of other servers, and serve ours to them.
    pub enabled: bool,
    /// Our ed25519 signing key, in Synapse's key file format; generated at first start.
    /// Default: `signing.key` beside the database directory.
    pub signing_key_path: Option<PathBuf>,
    /// Homeserver name → its own signing key file, for homeservers whose keys differ (each
    /// must publish the key media-ledger signs its requests with); the others use
    /// `signing_key_path`.
    pub signing_key_paths: BTreeMap<String, PathBuf>,
    /// At start-up, fetch each homeserver's `/_matrix/key/v2/server` (from its `cs_api`, else
    /// through federation discovery) and warn when our signing key is not among its
    /// `verify_keys` (remote servers would refuse our requests with 401).
    pub check_published_key: bool,
    /// Server name → base URL, bypassing discovery and the private-address rule (for
    /// private deployments and tests; plain `http://` is allowed only here).
    pub pins: BTreeMap<String, String>,
    /// Servers whose media is never fetched.
    pub blocked_servers: Vec<String>,
    /// Connect timeout of a fetch.
    pub connect_timeout_ms: u64,
    /// Whole-request timeout of a fetch.
    pub timeout_ms: u64,
    /// First back-off after a failing host; doubled up to 10 minutes.
    pub backoff_base_ms: u64,
}

impl Default for FederationConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            signing_key_path: None,
            signing_key_paths: BTreeMap::new(),
            check_published_key: true,
            pins: BTreeMap::new(),
            blocked_servers: Vec::new(),
            connect_timeout_ms: 5_000,
            timeout_ms: 60_000,
            backoff_base_ms: 5_000,
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

/// One configured thumbnail size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ThumbnailSize {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// `crop` or `scale`.
    pub method: ThumbnailMethodConfig,
}

/// `crop` or `scale` in config.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ThumbnailMethodConfig {
    /// Fill and crop.
    Crop,
    /// Fit inside.
    Scale,
}

/// `[thumbnails]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ThumbnailsConfig {
    /// Serve thumbnails at all.
    pub enabled: bool,
    /// The sizes generated; a request gets the smallest one at least as large as it asks
    /// (of its method), or the largest.
    pub sizes: Vec<ThumbnailSize>,
    /// Media larger than this are not thumbnailed.
    pub max_source_bytes: u64,
    /// Images with more pixels than this are not decoded (decompression bombs).
    pub max_pixels: u64,
    /// Decoder allocation limit.
    pub max_alloc_bytes: u64,
    /// Thumbnails generated at the same time (a bounded pool off the async runtime); each
    /// holds its source in memory.
    pub workers: usize,
    /// Generations waiting for a worker; beyond, 429 `M_LIMIT_EXCEEDED` with `retry_after_ms`.
    pub max_queued: usize,
    /// Longest a generation may take.
    pub timeout_ms: u64,
}

impl Default for ThumbnailsConfig {
    fn default() -> Self {
        let size = |width, height, method| ThumbnailSize {
            width,
            height,
            method,
        };
        Self {
            enabled: true,
            sizes: vec![
                size(32, 32, ThumbnailMethodConfig::Crop),
                size(96, 96, ThumbnailMethodConfig::Crop),
                size(320, 240, ThumbnailMethodConfig::Scale),
                size(640, 480, ThumbnailMethodConfig::Scale),
                size(800, 600, ThumbnailMethodConfig::Scale),
            ],
            max_source_bytes: 20 * 1024 * 1024,
            max_pixels: 32_000_000,
            max_alloc_bytes: 512 * 1024 * 1024,
            workers: 1,
            max_queued: 16,
            timeout_ms: 15_000,
        }
    }
}
