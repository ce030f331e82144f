//! Link previews (`preview_url`): the OpenGraph object of a URL for a user of one of our
//! homeservers, fetched safely ([`fetch`]), parsed by the pure `media-ledger-preview` crate,
//! its image stored as media of that homeserver ([`image`]), recorded as
//! `url.previewed.v1` and served from the `url_previews` projection while fresh.
//!
//! Order: the URL rules, then the cache (a fresh preview costs no fetch and no rate-limit
//! token), then one fetch per (homeserver, URL) at a time (`coalesce.rs`: a second request
//! waits and finds the first's preview), the caller's token bucket ([`limits`]), and the
//! whole fetch under `url_previews.timeout_ms`.

pub mod fetch;
pub mod image;
pub mod limits;

use crate::coalesce::Coalescer;
use crate::config::Config;
use crate::datastore::Datastores;
use crate::error::ApiError;
use crate::ledger::{Command, Conflict, Ledger, LedgerError};
use crate::media::MediaService;
use fetch::{FetchError, Fetcher};
use media_ledger_events::{Actor, ContentType, RequestId, ServerName, UrlPreviewed};
use media_ledger_preview::oembed::{self, Provider};
use media_ledger_preview::rules::UrlRule;
use media_ledger_projections::url_previews::{self, PreviewRecord};
use media_ledger_projections::{moderation, names};
use reqwest::Url;
use serde_json::{Map, Value};
use std::sync::Arc;
use std::time::Duration;

/// Longest URL previewed (bytes).
pub const MAX_URL_BYTES: usize = 2048;

const ACCEPT_PAGE: &str = "text/html,application/xhtml+xml,image/*;q=0.9,*/*;q=0.5";
const ACCEPT_JSON: &str = "application/json";

/// The link preview service of one server.
pub struct Previews {
    pub(crate) config: Arc<Config>,
    pub(crate) ledger: Arc<Ledger>,
    pub(crate) datastores: Arc<Datastores>,
    pub(crate) media: MediaService,
    fetcher: Fetcher,
    providers: Vec<Provider>,
    limiter: limits::RateLimiter,
    inflight: Coalescer<(ServerName, String)>,
}

impl From<FetchError> for ApiError {
    fn from(e: FetchError) -> Self {
        match e {
            FetchError::Blocked(m) => {
                // Which rule refused stays in the log (invariant 26).
                tracing::info!(reason = %m, "preview refused");
                ApiError::Forbidden("previewing this URL is not allowed".into())
            }
            FetchError::TooLarge(limit) => ApiError::UpstreamTooLarge { limit_bytes: limit },
            e @ FetchError::BackedOff(_) => {
                ApiError::bad_gateway("the site is failing; retry later", e)
            }
            FetchError::Failed(m) => ApiError::bad_gateway("fetching the URL failed", m),
        }
    }
}

impl Previews {
    /// Builds the service; the URL rules were checked when the config was loaded.
    pub fn new(
        config: Arc<Config>,
        ledger: Arc<Ledger>,
        datastores: Arc<Datastores>,
        media: MediaService,
    ) -> Result<Self, ApiError> {
        let c = &config.url_previews;
        let rules = compile_rules(&config).map_err(ApiError::internal)?;
        let mut providers: Vec<Provider> = c
            .oembed_providers
            .iter()
            .map(|p| Provider {
                endpoint: p.endpoint.clone(),
                schemes: p.schemes.clone(),
            })
            .collect();
        if c.builtin_oembed_providers {
            providers.extend(oembed::builtin_providers());
        }
        Ok(Self {
            fetcher: Fetcher::new(c.clone(), rules),
            limiter: limits::RateLimiter::new(c.rate_limit_burst, c.rate_limit_per_minute),
            providers,
            inflight: Coalescer::default(),
            config,
            ledger,
            datastores,
            media,
        })
    }

    /// The preview of `raw_url` for `actor`, a user of `homeserver`.
    pub async fn preview(
        &self,
        actor: Actor,
        request_id: RequestId,
        homeserver: &ServerName,
        raw_url: &str,
    ) -> Result<Value, ApiError> {
        let given = parse_url(raw_url)?;
        // The rules see the URL as given (credentials and fragment included), then the
        // URL fetched and cached has neither.
        self.fetcher.check_url(&given)?;
        let url = fetch::strip_credentials(given);
        let key = url.to_string();
        if let Some(og) = self.fresh(homeserver, &key)? {
            return Ok(og);
        }
        let work = async {
            // The request this one waited behind may have fetched it.
            if let Some(og) = self.fresh(homeserver, &key)? {
                return Ok(og);
            }
            self.limiter
                .take(&actor.to_string())
                .map_err(|retry_after_ms| ApiError::Busy {
                    what: "too many link previews; slow down",
                    retry_after_ms,
                })?;
            let budget = Duration::from_millis(self.config.url_previews.timeout_ms);
            match tokio::time::timeout(
                budget,
                self.fetch_and_record(&actor, &request_id, homeserver, url),
            )
            .await
            {
                Ok(answer) => answer,
                Err(_) => Err(ApiError::bad_gateway(
                    "fetching the URL timed out",
                    format!("{key}: no preview within {budget:?}"),
                )),
            }
        };
        self.inflight
            .run((homeserver.clone(), key.clone()), work)
            .await
    }

    /// The cached preview if it is fresh; its image fields are left out when the image may
    /// no longer be offered (quarantined since).
    fn fresh(&self, homeserver: &ServerName, url: &str) -> Result<Option<Value>, ApiError> {
        let view = self.ledger.view(names::URL_PREVIEWS)?;
        let Some(record) = url_previews::get(&view, homeserver, url)? else {
            return Ok(None);
        };
        let age = crate::clock::now_ms().saturating_sub(record.fetched_at_ms);
        if age >= self.config.url_previews.cache_ttl_ms {
            return Ok(None);
        }
        self.answer_of(&record).map(Some)
    }

    fn answer_of(&self, record: &PreviewRecord) -> Result<Value, ApiError> {
        let mut og: Map<String, Value> = serde_json::from_str(&record.og).unwrap_or_default();
        if let Some(image) = &record.image {
            let mods = self.ledger.view(names::MODERATION)?;
            if moderation::quarantine_act(&mods, image)?.is_some() {
                for f in image::IMAGE_FIELDS {
                    og.remove(f);
                }
            }
        }
        Ok(Value::Object(og))
    }

    async fn fetch_and_record(
        &self,
        actor: &Actor,
        request_id: &RequestId,
        homeserver: &ServerName,
        url: Url,
    ) -> Result<Value, ApiError> {
        let key = url.to_string();
        let (mut og, image_url) = match self.via_provider(&url).await {
            Some(found) => found,
            None => {
                let opened = self.fetcher.open(url.clone(), ACCEPT_PAGE).await?;
                let ct = opened.content_type.clone();
                if let Some(image_type) = image::is_image(ct.as_deref()) {
                    // The URL is an image: it is its own preview.
                    let stored = self
                        .store_image(actor, request_id, homeserver, opened, image_type)
                        .await?;
                    return self
                        .record(actor, request_id, homeserver, key, Map::new(), stored)
                        .await;
                }
                if !is_html(ct.as_deref()) {
                    tracing::info!(url = %key, content_type = ?ct, "not a page or an image: an empty preview");
                    return self
                        .record(actor, request_id, homeserver, key, Map::new(), None)
                        .await;
                }
                let max = self.config.url_previews.max_page_bytes;
                let page_url = opened.url.clone();
                let body = opened.read_all(max).await?;
                let mut page =
                    media_ledger_preview::page_from_bytes(&body, ct.as_deref(), &page_url);
                // A discovery link: its answer fills what the page does not say (Synapse's
                // order: many sites serve stub oEmbed beside full OpenGraph).
                if let Some(link) = page.oembed.take() {
                    if let Some(found) = self.oembed_at(link, &url).await {
                        page.merge_oembed(found);
                    }
                }
                (to_json(page.og), page.image)
            }
        };
        let stored = match image_url {
            Some(u) => self.image_at(actor, request_id, homeserver, u).await?,
            None => None,
        };
        og.retain(|k, _| !image::IMAGE_FIELDS.contains(&k.as_str()));
        self.record(actor, request_id, homeserver, key, og, stored)
            .await
    }

    /// The preview from a configured or built-in oEmbed provider of `url`, if one matches
    /// and answers.
    async fn via_provider(&self, url: &Url) -> Option<(Map<String, Value>, Option<Url>)> {
        let provider = oembed::match_provider(&self.providers, url)?;
        let at = oembed::request_url(&provider.endpoint, url)?;
        let found = self.oembed_at(at, url).await?;
        Some((to_json(found.og), found.image))
    }

    /// The oEmbed answer at `at` about `previewed` (its `og:url`, the base of its relative
    /// URLs); `None` when it fails (the page is previewed instead).
    async fn oembed_at(&self, at: Url, previewed: &Url) -> Option<oembed::OEmbed> {
        let max = self.config.url_previews.max_page_bytes;
        let read = self.fetcher.read(at.clone(), ACCEPT_JSON, max).await;
        let parsed = read.map_err(|e| e.to_string()).and_then(|(_, _, body)| {
            oembed::parse_oembed(&body, previewed).map_err(|e| e.to_string())
        });
        match parsed {
            Ok(o) => Some(o),
            Err(e) => {
                tracing::info!(oembed = %at, error = %e, "oEmbed answer not used");
                None
            }
        }
    }

    /// Fetches and stores the image at `url`; a failure leaves the preview without image.
    async fn image_at(
        &self,
        actor: &Actor,
        request_id: &RequestId,
        homeserver: &ServerName,
        url: Url,
    ) -> Result<Option<image::StoredImage>, ApiError> {
        let opened = match self.fetcher.open(url.clone(), "image/*").await {
            Ok(o) => o,
            Err(e) => {
                tracing::info!(image = %url, error = %e, "preview image not fetched");
                return Ok(None);
            }
        };
        let Some(ct) = image::is_image(opened.content_type.as_deref()) else {
            tracing::info!(image = %url, content_type = ?opened.content_type, "preview image is not an image");
            return Ok(None);
        };
        self.store_image(actor, request_id, homeserver, opened, ct)
            .await
    }

    async fn record(
        &self,
        actor: &Actor,
        request_id: &RequestId,
        homeserver: &ServerName,
        url: String,
        mut og: Map<String, Value>,
        stored: Option<image::StoredImage>,
    ) -> Result<Value, ApiError> {
        let plain = Value::Object(og.clone()).to_string();
        if let Some(s) = &stored {
            s.describe(&mut og);
        }
        let event = UrlPreviewed {
            homeserver: homeserver.clone(),
            url: url.clone(),
            og: Value::Object(og.clone()).to_string(),
            image: stored.as_ref().map(|s| s.media.clone()),
        };
        let submitted = self
            .ledger
            .submit(
                actor.clone(),
                request_id.clone(),
                Command::RecordPreview(event.clone()),
            )
            .await;
        match submitted {
            Ok(_) => Ok(Value::Object(og)),
            // The image was quarantined or purged between its upload and now: never offered.
            Err(LedgerError::Conflict(Conflict::Quarantined | Conflict::UnknownMedia)) => {
                let without = UrlPreviewed {
                    og: plain.clone(),
                    image: None,
                    ..event
                };
                self.ledger
                    .submit(
                        actor.clone(),
                        request_id.clone(),
                        Command::RecordPreview(without),
                    )
                    .await?;
                Ok(serde_json::from_str(&plain).unwrap_or_default())
            }
            Err(e) => Err(e.into()),
        }
    }
}

/// Previews listed per `url.previews_expired.v1` event: with URLs of at most
/// [`MAX_URL_BYTES`], an event stays far below the record limit (invariant 23).
const EXPIRED_PER_EVENT: usize = 1000;

impl Previews {
    /// Drops `previews` (fetched before `before_ms`) from the cache, in events of at most
    /// [`EXPIRED_PER_EVENT`]; their images become purgeable.
    pub async fn expire(
        &self,
        actor: Actor,
        request_id: RequestId,
        before_ms: u64,
        previews: Vec<(ServerName, String)>,
    ) -> Result<usize, ApiError> {
        let total = previews.len();
        for chunk in previews.chunks(EXPIRED_PER_EVENT) {
            let event = media_ledger_events::UrlPreviewsExpired {
                previews: chunk.to_vec(),
                before_ms,
            };
            self.ledger
                .submit(
                    actor.clone(),
                    request_id.clone(),
                    Command::ExpirePreviews(event),
                )
                .await?;
        }
        if total > 0 {
            tracing::info!(previews = total, before_ms, "link previews expired");
        }
        Ok(total)
    }
}

/// Compiles `url_previews.url_blocklist` (config validation and the service).
pub fn compile_rules(config: &Config) -> Result<Vec<UrlRule>, String> {
    config
        .url_previews
        .url_blocklist
        .iter()
        .map(|r| UrlRule::new(r).map_err(|e| format!("url_previews.url_blocklist: {e}")))
        .collect()
}

/// Parses the `url` parameter: an absolute http(s) URL of at most [`MAX_URL_BYTES`].
fn parse_url(raw: &str) -> Result<Url, ApiError> {
    if raw.len() > MAX_URL_BYTES {
        return Err(ApiError::InvalidParam(format!(
            "url is longer than {MAX_URL_BYTES} bytes"
        )));
    }
    let url = Url::parse(raw).map_err(|e| ApiError::InvalidParam(format!("invalid url: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(ApiError::InvalidParam(
            "only http and https URLs can be previewed".into(),
        ));
    }
    Ok(url)
}

fn is_html(content_type: Option<&str>) -> bool {
    // No type at all: try it as a page, as browsers would.
    content_type
        .and_then(ContentType::normalise)
        .is_none_or(|ct| matches!(ct.essence().as_str(), "text/html" | "application/xhtml+xml"))
}

fn to_json(og: media_ledger_preview::Og) -> Map<String, Value> {
    og.into_iter().map(|(k, v)| (k, Value::String(v))).collect()
}
