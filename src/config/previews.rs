//! `[url_previews]`: link previews (`preview_url`), their fetch limits and the rules on what
//! may be fetched.

use super::{ConfigError, IpNet};
use serde::Deserialize;
use std::collections::BTreeMap;

/// One oEmbed provider: URLs matching one of `schemes` (globs with `*`) are previewed from
/// `endpoint` (`{format}` in it is replaced by `json`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OEmbedProvider {
    /// The provider's oEmbed endpoint.
    pub endpoint: String,
    /// URL globs (`https://*.example.com/watch*`).
    pub schemes: Vec<String>,
}

/// `[url_previews]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UrlPreviewsConfig {
    /// Answer `preview_url`; when false it is 404 `M_UNRECOGNIZED`, as Synapse with previews
    /// off.
    pub enabled: bool,
    /// Largest page (or oEmbed answer) read, enforced while streaming.
    pub max_page_bytes: u64,
    /// Largest preview image stored.
    pub max_image_bytes: u64,
    /// How long a fetched preview is served from the ledger before it is fetched again.
    pub cache_ttl_ms: u64,
    /// Connect timeout of each request.
    pub connect_timeout_ms: u64,
    /// The whole preview (page, oEmbed, image, every redirect) must be done within this.
    pub timeout_ms: u64,
    /// Redirects followed per request (each hop checked like the first URL).
    pub max_redirects: u32,
    /// `User-Agent` of every request.
    pub user_agent: String,
    /// `Accept-Language` of every request (in order of preference).
    pub accept_language: Vec<String>,
    /// Addresses (IPs or CIDR blocks) that may be fetched although private or reserved.
    pub ip_range_allowlist: Vec<IpNet>,
    /// Addresses never fetched, on top of the private and reserved ranges.
    pub ip_range_blocklist: Vec<IpNet>,
    /// URLs never previewed: each rule maps URL parts (`scheme`, `netloc`, `username`,
    /// `password`, `path`, `params`, `query`, `fragment`) to a glob, or to a regex when it
    /// starts with `^`; a URL matching every part of one rule is refused (Synapse's
    /// `url_preview_url_blacklist`).
    pub url_blocklist: Vec<BTreeMap<String, String>>,
    /// oEmbed providers, tried before the built-in ones.
    pub oembed_providers: Vec<OEmbedProvider>,
    /// Use the built-in oEmbed providers (YouTube, Vimeo, X, …).
    pub builtin_oembed_providers: bool,
    /// Previews a user may have fetched in a burst (requests served from the cache are not
    /// counted).
    pub rate_limit_burst: u32,
    /// Fetches a user regains per minute.
    pub rate_limit_per_minute: u32,
    /// First back-off of a failing site; doubled up to 10 minutes.
    pub backoff_base_ms: u64,
}

impl Default for UrlPreviewsConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            max_page_bytes: 10 * 1024 * 1024,
            max_image_bytes: 10 * 1024 * 1024,
            cache_ttl_ms: 3_600_000,
            connect_timeout_ms: 5_000,
            timeout_ms: 20_000,
            max_redirects: 5,
            user_agent: "media-ledger (link preview bot)".into(),
            accept_language: vec!["en".into()],
            ip_range_allowlist: Vec::new(),
            ip_range_blocklist: Vec::new(),
            url_blocklist: Vec::new(),
            oembed_providers: Vec::new(),
            builtin_oembed_providers: true,
            rate_limit_burst: 10,
            rate_limit_per_minute: 30,
            backoff_base_ms: 10_000,
        }
    }
}

impl UrlPreviewsConfig {
    /// Start-up checks.
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |m: &str| Err(ConfigError::Invalid(format!("url_previews.{m}")));
        if self.max_page_bytes == 0 || self.max_image_bytes == 0 {
            return invalid("max_page_bytes and max_image_bytes must be > 0");
        }
        if self.connect_timeout_ms == 0 || self.timeout_ms == 0 {
            return invalid("connect_timeout_ms and timeout_ms must be > 0");
        }
        if self.max_redirects > 20 {
            return invalid("max_redirects must be at most 20");
        }
        if self.rate_limit_burst == 0 || self.rate_limit_per_minute == 0 {
            return invalid("rate_limit_burst and rate_limit_per_minute must be > 0");
        }
        if axum::http::HeaderValue::from_str(&self.user_agent).is_err()
            || axum::http::HeaderValue::from_str(&self.accept_language.join(", ")).is_err()
        {
            return invalid("user_agent and accept_language must be valid header values");
        }
        for p in &self.oembed_providers {
            let provider = media_ledger_preview::oembed::Provider {
                endpoint: p.endpoint.clone(),
                schemes: p.schemes.clone(),
            };
            provider
                .check()
                .map_err(|e| ConfigError::Invalid(format!("url_previews.oembed_providers: {e}")))?;
        }
        for rule in &self.url_blocklist {
            media_ledger_preview::rules::UrlRule::new(rule)
                .map_err(|e| ConfigError::Invalid(format!("url_previews.url_blocklist: {e}")))?;
        }
        Ok(())
    }
}
