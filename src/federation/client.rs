//! Outgoing federation: where a server is, whether we may talk to it, and fetching a media.
//!
//! Discovery is in [`super::discovery`]; a server that is not pinned must resolve only to
//! public addresses, and connections go to the checked addresses. Failing hosts are backed
//! off.

use super::cache::BoundedCache;
use super::keyfile::Keyring;
use super::keys::SigningKey;
use super::multipart;
use super::xmatrix;
use crate::config::FederationConfig;
use bytes::Bytes;
use media_ledger_events::{MediaId, ServerName};
use std::time::Duration;

/// Why a remote fetch failed, as the client will be told.
#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    /// The remote says the media does not exist.
    #[error("remote media not found")]
    NotFound,
    /// Larger than `downloads.max_bytes`.
    #[error("remote media exceeds {0} bytes")]
    TooLarge(u64),
    /// Blocked by config or refused by the address rules.
    #[error("{0}")]
    Forbidden(String),
    /// The remote failed, answered badly, or timed out.
    #[error("{0}")]
    Failed(String),
    /// We are backing off this host after failures.
    #[error("remote server {0} is failing; retry later")]
    BackedOff(String),
}

/// A server's verify keys: key id → unpadded base64 public key.
pub type VerifyKeys = std::collections::BTreeMap<String, String>;

/// Where to reach a server.
#[derive(Debug, Clone)]
pub struct Resolved {
    /// `scheme://host[:port]`.
    pub base: String,
    /// Pinned in config (address rules do not apply).
    pub pinned: bool,
    /// An SRV target to connect to instead of the URL's host (which stays the Host header
    /// and the name the certificate must have).
    pub connect_host: Option<String>,
}

/// Metadata of a fetched media.
#[derive(Debug, Clone, Default)]
pub struct Fetched {
    /// The remote's type, normalised ([`media_ledger_events::ContentType::normalise`]).
    pub content_type: Option<String>,
    /// From its `Content-Disposition`.
    pub filename: Option<String>,
}

/// The federation client.
pub struct Client {
    pub(super) http: reqwest::Client,
    pub(super) config: FederationConfig,
    /// Our key per homeserver.
    pub(super) ours: Keyring,
    /// Where servers are; only resolutions a server answered at are kept.
    pub(super) cache: BoundedCache<ServerName, Resolved>,
    /// Verify keys fetched and checked.
    pub(super) keys: BoundedCache<ServerName, VerifyKeys>,
    pub(super) dns: Box<dyn super::srv::SrvLookup>,
    /// Failing hosts: until when, and the last back-off.
    pub(super) backoff: super::cache::Backoff,
}

/// Entries of each per-server cache (resolutions, keys, back-offs): names come from
/// unauthenticated requests, so the caches are bounded (see [`BoundedCache`]).
pub const MAX_CACHED_SERVERS: usize = 10_000;
/// How long a resolution or a server's keys are kept.
const SERVER_TTL: Duration = Duration::from_secs(3600);

impl Client {
    /// Builds the client (no redirects are followed: a `Location` is checked like any host).
    pub fn new(config: FederationConfig, ours: Keyring) -> Self {
        let backoff = super::cache::Backoff::new(
            MAX_CACHED_SERVERS,
            Duration::from_millis(config.backoff_base_ms),
        );
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_millis(config.connect_timeout_ms))
            .timeout(Duration::from_millis(config.timeout_ms))
            .build()
            .unwrap_or_default();
        Self {
            http,
            config,
            ours,
            cache: BoundedCache::new(MAX_CACHED_SERVERS, SERVER_TTL),
            keys: BoundedCache::new(MAX_CACHED_SERVERS, SERVER_TTL),
            dns: Box::new(super::srv::SystemDns::new()),
            backoff,
        }
    }

    /// Replaces the SRV resolver (tests, or a resolver of the operator's choice).
    pub fn with_dns(mut self, dns: Box<dyn super::srv::SrvLookup>) -> Self {
        self.dns = dns;
        self
    }

    /// The signing key of our homeserver `server`.
    pub fn key_for(&self, server: &ServerName) -> &SigningKey {
        self.ours.for_server(server)
    }

    /// The verify keys of `server` (key id → public key), from its `/_matrix/key/v2/server`,
    /// checked and cached for an hour.
    pub async fn server_keys(
        &self,
        server: &ServerName,
    ) -> Result<std::collections::BTreeMap<String, String>, RemoteError> {
        if let Some(k) = self.keys.get(server) {
            return Ok(k);
        }
        let r = self.resolve(server).await?;
        let url = format!("{}/_matrix/key/v2/server", r.base);
        let resp = self
            .http_for(&url, r.pinned, r.connect_host.as_deref())
            .await?
            .get(&url)
            .send()
            .await
            .map_err(|e| RemoteError::Failed(format!("keys of {server}: {e}")))?;
        if !resp.status().is_success() {
            return Err(RemoteError::Failed(format!(
                "keys of {server}: {}",
                resp.status()
            )));
        }
        let v = capped_json(resp, MAX_JSON_BYTES)
            .await
            .map_err(|e| RemoteError::Failed(format!("keys of {server}: {e}")))?;
        let now = crate::clock::now_ms();
        let keys = super::keys::parse_server_keys(&v, server.as_str(), now)
            .map_err(|e| RemoteError::Failed(format!("keys of {server}: {e}")))?;
        self.remember(server, r);
        self.keys.insert(server.clone(), keys.clone());
        Ok(keys)
    }

    /// Whether `origin` (with or without its port) is in `blocked_servers`, compared without
    /// case and without a trailing dot (`Blocked.Test.` blocks `blocked.test`).
    pub fn is_blocked(&self, origin: &ServerName) -> bool {
        let norm = |s: &str| s.trim_end_matches('.').to_ascii_lowercase();
        let (name, host) = (norm(origin.as_str()), norm(origin.host()));
        self.config.blocked_servers.iter().any(|b| {
            let b = norm(b);
            b == name || b == host
        })
    }

    fn check_backoff(&self, host: &str) -> Result<(), RemoteError> {
        if self.backoff.is_backed_off(host) {
            return Err(RemoteError::BackedOff(host.to_owned()));
        }
        Ok(())
    }

    fn record(&self, host: &str, ok: bool) {
        self.backoff.record(host, ok);
    }

    /// Fetches `mxc://origin/id` on behalf of our server `our_name`, feeding the bytes to
    /// `sink` as they arrive (at most `max_bytes`).
    pub async fn download<F, Fut>(
        &self,
        our_name: &ServerName,
        origin: &ServerName,
        id: &MediaId,
        max_bytes: u64,
        mut sink: F,
    ) -> Result<Fetched, RemoteError>
    where
        F: FnMut(Bytes) -> Fut,
        Fut: std::future::Future<Output = Result<(), String>>,
    {
        if self.is_blocked(origin) {
            return Err(RemoteError::Forbidden(format!(
                "media from {origin} is blocked on this server"
            )));
        }
        self.check_backoff(origin.as_str())?;
        let result = self
            .download_inner(our_name, origin, id, max_bytes, &mut sink)
            .await;
        let failed_remote = matches!(result, Err(RemoteError::Failed(_)));
        self.record(origin.as_str(), !failed_remote);
        result
    }

    async fn download_inner<F, Fut>(
        &self,
        our_name: &ServerName,
        origin: &ServerName,
        id: &MediaId,
        max_bytes: u64,
        sink: &mut F,
    ) -> Result<Fetched, RemoteError>
    where
        F: FnMut(Bytes) -> Fut,
        Fut: std::future::Future<Output = Result<(), String>>,
    {
        let r = self.resolve(origin).await?;
        let path = format!("/_matrix/federation/v1/media/download/{id}");
        let url = format!("{}{path}", r.base);
        let http = self
            .http_for(&url, r.pinned, r.connect_host.as_deref())
            .await?;
        let key = self.key_for(our_name);
        let auth =
            xmatrix::authorization(key, our_name.as_str(), origin.as_str(), "GET", &path, None)
                .map_err(|e| RemoteError::Failed(e.to_string()))?;
        let resp = http
            .get(&url)
            .header("Authorization", auth)
            .send()
            .await
            .map_err(|e| RemoteError::Failed(format!("{origin}: {e}")))?;
        // A server answered there: the resolution is worth keeping.
        self.remember(origin, r.clone());
        let status = resp.status().as_u16();
        if status == 404 || status == 400 || status == 405 {
            let body = capped_json(resp, MAX_JSON_BYTES).await.unwrap_or_default();
            if status == 404 && body.get("errcode").and_then(|e| e.as_str()) == Some("M_NOT_FOUND")
            {
                return Err(RemoteError::NotFound);
            }
            // M_UNRECOGNIZED (or an old server without the endpoint): the legacy endpoint.
            return self.legacy(&r, origin, id, max_bytes, sink).await;
        }
        if status != 200 {
            let body = capped_bytes(resp, super::diagnose::MAX_LOGGED_BODY + 1).await;
            if status == 401 || status == 403 {
                tracing::warn!(
                    "{}",
                    super::diagnose::refusal_message(
                        origin.as_str(),
                        our_name.as_str(),
                        key.key_id(),
                        status,
                        &body
                    )
                );
            }
            return Err(RemoteError::Failed(format!(
                "{origin} answered {status}: {}",
                super::diagnose::loggable_body(&body)
            )));
        }
        if resp
            .content_length()
            .is_some_and(|l| l > max_bytes + 64 * 1024)
        {
            return Err(RemoteError::TooLarge(max_bytes));
        }
        let ct = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let boundary = multipart::boundary(&ct).ok_or_else(|| {
            RemoteError::Failed(format!("{origin} did not answer multipart/mixed"))
        })?;
        let mut total = 0u64;
        let (_, headers) = multipart::read(resp.bytes_stream(), &boundary, |b: Bytes| {
            total += b.len() as u64;
            let over = total > max_bytes;
            let fut = sink(b);
            async move {
                if over {
                    return Err(format!("remote media exceeds {max_bytes} bytes"));
                }
                fut.await
            }
        })
        .await
        .map_err(|e| match e {
            multipart::MultipartError::Sink(m) if m.starts_with("remote media exceeds") => {
                RemoteError::TooLarge(max_bytes)
            }
            other => RemoteError::Failed(format!("{origin}: {other}")),
        })?;
        if let Some(location) = headers.get("location") {
            return self.follow(location, max_bytes, sink).await;
        }
        Ok(Fetched {
            content_type: headers.get("content-type").and_then(|c| first_type(c)),
            filename: headers
                .get("content-disposition")
                .and_then(|d| filename_of(d)),
        })
    }

    async fn legacy<F, Fut>(
        &self,
        r: &Resolved,
        origin: &ServerName,
        id: &MediaId,
        max_bytes: u64,
        sink: &mut F,
    ) -> Result<Fetched, RemoteError>
    where
        F: FnMut(Bytes) -> Fut,
        Fut: std::future::Future<Output = Result<(), String>>,
    {
        let url = format!(
            "{}/_matrix/media/v3/download/{origin}/{id}?allow_remote=false",
            r.base
        );
        let http = self
            .http_for(&url, r.pinned, r.connect_host.as_deref())
            .await?;
        self.stream_plain(&http, &url, max_bytes, sink).await
    }

    async fn follow<F, Fut>(
        &self,
        location: &str,
        max_bytes: u64,
        sink: &mut F,
    ) -> Result<Fetched, RemoteError>
    where
        F: FnMut(Bytes) -> Fut,
        Fut: std::future::Future<Output = Result<(), String>>,
    {
        if !(location.starts_with("https://") || location.starts_with("http://")) {
            return Err(RemoteError::Failed(
                "Location is not an absolute http(s) URL".into(),
            ));
        }
        let http = self.http_for(location, false, None).await?;
        self.stream_plain(&http, location, max_bytes, sink).await
    }

    async fn stream_plain<F, Fut>(
        &self,
        http: &reqwest::Client,
        url: &str,
        max_bytes: u64,
        sink: &mut F,
    ) -> Result<Fetched, RemoteError>
    where
        F: FnMut(Bytes) -> Fut,
        Fut: std::future::Future<Output = Result<(), String>>,
    {
        use futures_util::StreamExt;
        let resp = http
            .get(url)
            .send()
            .await
            .map_err(|e| RemoteError::Failed(e.to_string()))?;
        match resp.status().as_u16() {
            200 => {}
            404 => return Err(RemoteError::NotFound),
            s => return Err(RemoteError::Failed(format!("{url} answered {s}"))),
        }
        if resp.content_length().is_some_and(|l| l > max_bytes) {
            return Err(RemoteError::TooLarge(max_bytes));
        }
        let fetched = Fetched {
            content_type: resp
                .headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .and_then(first_type),
            filename: resp
                .headers()
                .get("content-disposition")
                .and_then(|v| v.to_str().ok())
                .and_then(filename_of),
        };
        let mut total = 0u64;
        let mut body = resp.bytes_stream();
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| RemoteError::Failed(e.to_string()))?;
            total += chunk.len() as u64;
            if total > max_bytes {
                return Err(RemoteError::TooLarge(max_bytes));
            }
            sink(chunk).await.map_err(RemoteError::Failed)?;
        }
        Ok(fetched)
    }
}

/// The type a remote's `Content-Type` is recorded as: its first parsed type, or none
/// (served as `application/octet-stream`) — never a comma list a browser reads otherwise.
fn first_type(raw: &str) -> Option<String> {
    media_ledger_events::ContentType::normalise(raw).map(String::from)
}

/// The file name of a `Content-Disposition` value (`filename*=utf-8''…` or `filename="…"`).
pub fn filename_of(disposition: &str) -> Option<String> {
    let mut plain = None;
    for p in disposition.split(';').map(str::trim) {
        if let Some(v) = p.strip_prefix("filename*=") {
            let v = v.trim_matches('"');
            let enc = v.split_once("''").map_or(v, |(_, rest)| rest);
            if let Ok(d) = percent_encoding::percent_decode_str(enc).decode_utf8() {
                return Some(d.into_owned()).filter(|n| !n.is_empty() && n.len() <= 255);
            }
        } else if let Some(v) = p.strip_prefix("filename=") {
            plain = Some(v.trim_matches('"').to_owned());
        }
    }
    plain.filter(|n| !n.is_empty() && n.len() <= 255 && !n.chars().any(char::is_control))
}

/// Largest JSON document read from a remote server (keys, errors, well-known).
pub(crate) const MAX_JSON_BYTES: usize = 64 * 1024;

/// The first `max` bytes of a body (fewer if it ends or fails first), for error messages.
async fn capped_bytes(mut resp: reqwest::Response, max: usize) -> Vec<u8> {
    let mut buf = Vec::new();
    while buf.len() < max {
        match resp.chunk().await {
            Ok(Some(chunk)) => {
                let take = chunk.len().min(max - buf.len());
                buf.extend_from_slice(&chunk[..take]);
            }
            Ok(None) | Err(_) => break,
        }
    }
    buf
}

/// Reads a JSON body of at most `max` bytes, refusing (without reading further) a larger one.
pub(crate) async fn capped_json(
    mut resp: reqwest::Response,
    max: usize,
) -> Result<serde_json::Value, String> {
    if resp.content_length().is_some_and(|n| n > max as u64) {
        return Err(format!("JSON answer larger than {max} bytes"));
    }
    let mut buf = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| e.to_string())? {
        if buf.len() + chunk.len() > max {
            return Err(format!("JSON answer larger than {max} bytes"));
        }
        buf.extend_from_slice(&chunk);
    }
    serde_json::from_slice(&buf).map_err(|e| e.to_string())
}
