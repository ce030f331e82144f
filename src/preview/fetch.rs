//! Fetching for link previews, safely: only `http`/`https`, never with credentials or cookies,
//! every hop of a redirect checked again (the URL rules, the address rules of
//! `federation::discovery::resolve_checked` with the operator's allow- and blocklists, the
//! site's back-off), connections made only to the addresses checked, bodies counted while
//! they stream.

use crate::config::UrlPreviewsConfig;
use crate::federation::cache::Backoff;
use crate::federation::client::RemoteError;
use crate::federation::discovery::{is_public, resolve_checked};
use bytes::Bytes;
use futures_util::StreamExt;
use media_ledger_preview::rules::{self, UrlRule};
use reqwest::Url;
use std::net::IpAddr;
use std::time::Duration;

/// Sites remembered by the back-off.
const MAX_BACKED_OFF_SITES: usize = 10_000;

/// Why a fetch failed.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// Not http(s), a blocked URL, or an address the rules refuse.
    #[error("{0}")]
    Blocked(String),
    /// The body is over the limit.
    #[error("the body exceeds {0} bytes")]
    TooLarge(u64),
    /// The site is backed off after failures.
    #[error("{0} is failing; retry later")]
    BackedOff(String),
    /// The site failed, answered badly or not at all.
    #[error("{0}")]
    Failed(String),
}

/// An answer with a 2xx status, after redirects.
pub struct Opened {
    /// The URL that answered (the last hop).
    pub url: Url,
    /// Its `Content-Type`.
    pub content_type: Option<String>,
    response: reqwest::Response,
}

/// The fetcher of one server.
pub struct Fetcher {
    config: UrlPreviewsConfig,
    rules: Vec<UrlRule>,
    backoff: Backoff,
}

impl Fetcher {
    /// Builds the fetcher; `rules` are the compiled `url_blocklist`.
    pub fn new(config: UrlPreviewsConfig, rules: Vec<UrlRule>) -> Self {
        let backoff = Backoff::new(
            MAX_BACKED_OFF_SITES,
            Duration::from_millis(config.backoff_base_ms),
        );
        Self {
            config,
            rules,
            backoff,
        }
    }

    /// Whether `url` may be previewed at all (scheme and the URL rules), before any fetch.
    pub fn check_url(&self, url: &Url) -> Result<(), FetchError> {
        if !matches!(url.scheme(), "http" | "https") {
            return Err(FetchError::Blocked(format!(
                "scheme {:?} is not http or https",
                url.scheme()
            )));
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err(FetchError::Blocked("URL without a host".into()));
        }
        if rules::is_blocked(&self.rules, url) {
            return Err(FetchError::Blocked(format!("{url} matches url_blocklist")));
        }
        Ok(())
    }

    /// Whether an address may be connected to: public (or allowlisted) and not blocklisted.
    fn permitted(&self, ip: IpAddr) -> bool {
        // `::ffff:a.b.c.d` is a.b.c.d to the rules, as it is to the socket.
        let ip = ip.to_canonical();
        let c = &self.config;
        !c.ip_range_blocklist.iter().any(|n| n.contains(ip))
            && (is_public(ip) || c.ip_range_allowlist.iter().any(|n| n.contains(ip)))
    }

    /// GETs `url`, following at most `max_redirects` redirects, each hop checked; answers the
    /// first 2xx response.
    pub async fn open(&self, url: Url, accept: &str) -> Result<Opened, FetchError> {
        let mut url = url;
        for _ in 0..=self.config.max_redirects {
            // The rules see each hop as given; what is fetched has no credentials.
            self.check_url(&url)?;
            url = strip_credentials(url);
            let host = url.host_str().unwrap_or_default().to_owned();
            if self.backoff.is_backed_off(&host) {
                return Err(FetchError::BackedOff(host));
            }
            let port = url.port_or_known_default().unwrap_or(80);
            let addrs = resolve_checked(&host, port, |ip| self.permitted(ip))
                .await
                .map_err(|e| match e {
                    RemoteError::Forbidden(m) => FetchError::Blocked(m),
                    other => FetchError::Failed(other.to_string()),
                })?;
            let bare = host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned();
            let client = reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .no_proxy()
                .connect_timeout(Duration::from_millis(self.config.connect_timeout_ms))
                .user_agent(self.config.user_agent.clone())
                .resolve_to_addrs(&bare, &addrs)
                .build()
                .map_err(|e| FetchError::Failed(format!("building a client: {e}")))?;
            let sent = client
                .get(url.clone())
                .header(reqwest::header::ACCEPT, accept)
                .header(
                    reqwest::header::ACCEPT_LANGUAGE,
                    self.config.accept_language.join(", "),
                )
                .send()
                .await;
            let response = match sent {
                Ok(r) => r,
                Err(e) => {
                    self.backoff.record(&host, false);
                    return Err(FetchError::Failed(format!(
                        "{host}: {}",
                        crate::homeserver_check::error_chain(&e)
                    )));
                }
            };
            let status = response.status();
            if status.is_redirection() {
                let next = response
                    .headers()
                    .get(reqwest::header::LOCATION)
                    .and_then(|l| l.to_str().ok())
                    .and_then(|l| url.join(l).ok())
                    .ok_or_else(|| {
                        FetchError::Failed(format!("{host}: redirect without a usable Location"))
                    })?;
                url = next;
                continue;
            }
            if !status.is_success() {
                // A site that fails (not one that says "no") is left alone for a while.
                self.backoff.record(&host, !status.is_server_error());
                return Err(FetchError::Failed(format!("{host} answered {status}")));
            }
            self.backoff.record(&host, true);
            let content_type = response
                .headers()
                .get(reqwest::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            return Ok(Opened {
                url,
                content_type,
                response,
            });
        }
        Err(FetchError::Failed(format!(
            "more than {} redirects",
            self.config.max_redirects
        )))
    }

    /// [`Self::open`], then the whole body, at most `max` bytes (counted as it streams,
    /// whatever `Content-Length` says).
    pub async fn read(
        &self,
        url: Url,
        accept: &str,
        max: u64,
    ) -> Result<(Url, Option<String>, Bytes), FetchError> {
        let opened = self.open(url, accept).await?;
        let (url, content_type) = (opened.url.clone(), opened.content_type.clone());
        let body = opened.read_all(max).await?;
        Ok((url, content_type, Bytes::from(body)))
    }
}

impl Opened {
    /// The whole body, at most `max` bytes.
    pub async fn read_all(self, max: u64) -> Result<Vec<u8>, FetchError> {
        let mut body = Vec::new();
        self.stream(max, |chunk| {
            body.extend_from_slice(&chunk);
            std::future::ready(Ok(()))
        })
        .await?;
        Ok(body)
    }

    /// Feeds the body to `sink` chunk by chunk, failing once more than `max` bytes came.
    pub async fn stream<F, Fut>(self, max: u64, mut sink: F) -> Result<u64, FetchError>
    where
        F: FnMut(Bytes) -> Fut,
        Fut: std::future::Future<Output = Result<(), FetchError>>,
    {
        if self.response.content_length().is_some_and(|l| l > max) {
            return Err(FetchError::TooLarge(max));
        }
        let mut total = 0u64;
        let mut body = self.response.bytes_stream();
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| {
                FetchError::Failed(format!(
                    "reading the body: {}",
                    crate::homeserver_check::error_chain(&e)
                ))
            })?;
            total = total.saturating_add(chunk.len() as u64);
            if total > max {
                return Err(FetchError::TooLarge(max));
            }
            sink(chunk).await?;
        }
        Ok(total)
    }
}

/// `url` without user name, password or fragment: credentials are never sent, and the
/// fragment is not part of what is fetched.
pub fn strip_credentials(mut url: Url) -> Url {
    let _ = url.set_username("");
    let _ = url.set_password(None);
    url.set_fragment(None);
    url
}
