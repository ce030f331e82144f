//! oEmbed: which provider serves a URL, the request to send it, and its JSON as OpenGraph.
//!
//! Provider schemes are oembed.com-style globs, matched as Synapse does (`_glob_to_pattern`):
//! the scheme is literal (`http` or `https`, no wildcard: list both if both are wanted), a `*`
//! in the host is one or more `[a-zA-Z0-9_-]` (so it never spans a dot), a `*` elsewhere is one
//! or more characters, and the glob must match the whole URL. Endpoints ending in `.xml` are
//! skipped (only JSON is supported). The response mapping is Synapse's
//! `parse_oembed_response`.

use serde_json::{Map, Value};
use url::Url;

use crate::bounds::{resolve_http, OgBuilder};
use crate::glob::Glob;
use crate::text::{describe, next_node};
use crate::Og;

/// An oEmbed provider: its API endpoint (`{format}` is replaced by `json`) and URL globs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Provider {
    /// The API endpoint, e.g. `https://www.youtube.com/oembed`.
    pub endpoint: String,
    /// URL globs with `*`, e.g. `https://*.youtube.com/watch*`.
    pub schemes: Vec<String>,
}

/// A provider an operator configured that cannot work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProviderError {
    /// The endpoint is not an http(s) URL.
    #[error("oEmbed endpoint `{0}` is not an http or https URL")]
    BadEndpoint(String),
    /// A scheme glob does not start with `http://` or `https://`.
    #[error("oEmbed URL pattern `{0}` must start with http:// or https://")]
    BadScheme(String),
}

impl Provider {
    fn new(endpoint: &str, schemes: &[&str]) -> Provider {
        Provider {
            endpoint: endpoint.to_owned(),
            schemes: schemes.iter().map(|&s| s.to_owned()).collect(),
        }
    }

    /// Checks the provider as Synapse's config loader does (for configuration validation): the
    /// endpoint must be an http(s) URL and every glob must start with `http://` or `https://`.
    pub fn check(&self) -> Result<(), ProviderError> {
        let endpoint = Url::parse(&self.endpoint.replace("{format}", "json"));
        if !endpoint.is_ok_and(|url| matches!(url.scheme(), "http" | "https")) {
            return Err(ProviderError::BadEndpoint(self.endpoint.clone()));
        }
        match self
            .schemes
            .iter()
            .find(|scheme| Glob::oembed(scheme).is_none())
        {
            Some(scheme) => Err(ProviderError::BadScheme(scheme.clone())),
            None => Ok(()),
        }
    }
}

/// A small built-in provider list (endpoints as on oembed.com; Vimeo's over https).
pub fn builtin_providers() -> Vec<Provider> {
    vec![
        Provider::new(
            "https://www.youtube.com/oembed",
            &[
                "https://*.youtube.com/watch*",
                "https://youtube.com/watch*",
                "https://*.youtube.com/v/*",
                "https://youtu.be/*",
                "https://youtube.com/shorts/*",
                "https://*.youtube.com/shorts/*",
            ],
        ),
        Provider::new(
            "https://vimeo.com/api/oembed.{format}",
            &[
                "http://vimeo.com/*",
                "http://vimeo.com/groups/*/videos/*",
                "https://vimeo.com/*",
                "https://vimeo.com/groups/*/videos/*",
            ],
        ),
        Provider::new(
            "https://publish.twitter.com/oembed",
            &[
                "https://twitter.com/*/status/*",
                "https://*.twitter.com/*/status/*",
                "https://x.com/*/status/*",
                "https://*.x.com/*/status/*",
            ],
        ),
        Provider::new(
            "https://www.flickr.com/services/oembed/",
            &[
                "http://*.flickr.com/photos/*",
                "http://flic.kr/p/*",
                "http://flic.kr/s/*",
                "https://*.flickr.com/photos/*",
                "https://flic.kr/p/*",
                "https://flic.kr/s/*",
                "https://*.*.flickr.com/*/*",
                "http://*.*.flickr.com/*/*",
            ],
        ),
        Provider::new(
            "https://soundcloud.com/oembed",
            &["http://soundcloud.com/*", "https://soundcloud.com/*"],
        ),
        Provider::new(
            "https://open.spotify.com/oembed",
            &["https://open.spotify.com/*"],
        ),
        Provider::new(
            "https://www.tiktok.com/oembed",
            &[
                "https://www.tiktok.com/*",
                "https://www.tiktok.com/*/video/*",
            ],
        ),
        Provider::new(
            "https://www.reddit.com/oembed",
            &[
                "https://reddit.com/r/*/comments/*/*",
                "https://www.reddit.com/r/*/comments/*/*",
            ],
        ),
    ]
}

/// The first provider (in list order) one of whose globs matches the whole of `url`.
pub fn match_provider<'a>(providers: &'a [Provider], url: &Url) -> Option<&'a Provider> {
    providers.iter().find(|provider| {
        !provider.endpoint.ends_with(".xml")
            && provider
                .schemes
                .iter()
                .any(|scheme| Glob::oembed(scheme).is_some_and(|glob| glob.matches(url.as_str())))
    })
}

/// The request for `url`'s oEmbed: the endpoint (`{format}` → `json`) with `url=<url>` and
/// `format=json` appended to its query. `None` unless the endpoint is an http(s) URL.
pub fn request_url(provider_endpoint: &str, url: &Url) -> Option<Url> {
    let mut request = Url::parse(&provider_endpoint.replace("{format}", "json")).ok()?;
    if !matches!(request.scheme(), "http" | "https") {
        return None;
    }
    request.set_fragment(None);
    request
        .query_pairs_mut()
        .append_pair("url", url.as_str())
        .append_pair("format", "json");
    Some(request)
}

/// An oEmbed response as OpenGraph.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OEmbed {
    /// `og:url` (the previewed URL), `og:title` (else `author_name`), `og:site_name`,
    /// `og:type`, `og:description`, `og:video*`; never `og:image`.
    pub og: Og,
    /// The image (`url` of a photo, else `thumbnail_url`, else the first `<img>` of the
    /// `html`), resolved, http/https only.
    pub image: Option<Url>,
    /// `cache_age`, in milliseconds (a negative age is 0).
    pub cache_age_ms: Option<u64>,
}

/// Why an oEmbed response was not used.
#[derive(Debug, thiserror::Error)]
pub enum OEmbedError {
    /// Not UTF-8 JSON.
    #[error("the oEmbed response is not JSON: {0}")]
    NotJson(#[from] serde_json::Error),
    /// JSON, but not an object.
    #[error("the oEmbed response is not a JSON object")]
    NotAnObject,
    /// `version` is present and is neither `"1.0"` nor `1`.
    #[error("unsupported oEmbed version {0}")]
    UnsupportedVersion(String),
}

/// A non-empty string field.
fn string<'a>(object: &'a Map<String, Value>, key: &str) -> Option<&'a str> {
    object
        .get(key)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
}

/// Python's `int(cache_age) * 1000`, for the shapes a JSON value can take.
fn cache_age_ms(value: Option<&Value>) -> Option<u64> {
    let seconds: i128 = match value? {
        Value::Number(n) => match (n.as_i64(), n.as_u64(), n.as_f64()) {
            (Some(i), _, _) => i.into(),
            (_, Some(u), _) => u.into(),
            (_, _, Some(f)) if f.is_finite() => f.trunc().clamp(-1.0, u64::MAX as f64) as i128,
            _ => return None,
        },
        Value::String(s) => s.trim().parse::<i64>().ok()?.into(),
        _ => return None,
    };
    Some(u64::try_from(seconds.max(0) * 1000).unwrap_or(u64::MAX))
}

/// Decodes HTML character references in a title (some WordPress plug-ins escape them), with
/// html5ever's tokenizer: `<` is escaped first so that no markup can be interpreted.
fn unescape(title: &str) -> String {
    let doc = scraper::Html::parse_fragment(&title.replace('<', "&lt;"));
    let root = doc.tree.root();
    let mut text = String::new();
    let mut next = Some(root);
    while let Some(node) = next {
        if let scraper::Node::Text(t) = node.value() {
            text.push_str(&t.text);
        }
        next = next_node(root, node, true);
    }
    text
}

/// Synapse's `calc_description_and_urls`: the description, first image and first video of an
/// oEmbed `html` snippet.
fn describe_html(html: &str, og: &mut OgBuilder, image: &mut Option<String>, base: &Url) {
    let doc = crate::parse::document(html);
    let root = doc.tree.root();
    let (mut first_img, mut video, mut embed) = (None, None, None);
    let mut next = Some(root);
    while let Some(node) = next {
        if let scraper::Node::Element(element) = node.value() {
            let src = element.attr("src").filter(|s| !s.trim().is_empty());
            match element.name() {
                "img" => first_img = first_img.or(src),
                "video" => video = video.or(src),
                "embed" => embed = embed.or(src),
                _ => {}
            }
        }
        next = next_node(root, node, true);
    }
    if image.is_none() {
        *image = first_img.map(str::to_owned);
    }
    if let Some(video) = video.or(embed).and_then(|src| resolve_http(base, src)) {
        og.insert("og:video", video.as_str());
    }
    if let Some(description) = describe(root) {
        og.insert("og:description", &description);
    }
}

/// Maps an oEmbed JSON response to OpenGraph. `base` is the URL being previewed: it becomes
/// `og:url` and relative image and video URLs are resolved against it.
pub fn parse_oembed(body: &[u8], base: &Url) -> Result<OEmbed, OEmbedError> {
    let body = body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(body);
    let Value::Object(object) = serde_json::from_slice::<Value>(body)? else {
        return Err(OEmbedError::NotAnObject);
    };
    match object.get("version") {
        None => {}
        Some(Value::String(v)) if v == "1.0" => {}
        Some(Value::Number(n)) if n.as_f64() == Some(1.0) => {}
        Some(other) => return Err(OEmbedError::UnsupportedVersion(other.to_string())),
    }

    let mut og = OgBuilder::default();
    og.insert("og:url", base.as_str());
    if let Some(title) = string(&object, "title") {
        og.insert("og:title", &unescape(title));
    }
    if let Some(author) = object.get("author_name").and_then(Value::as_str) {
        // Synapse copies `author_name` to a missing or empty title.
        og.insert("og:title", author);
    }
    if let Some(provider) = string(&object, "provider_name") {
        og.insert("og:site_name", provider);
    }
    let mut image = string(&object, "thumbnail_url").map(str::to_owned);

    match object.get("type").and_then(Value::as_str) {
        Some("rich") => {
            if let Some(html) = string(&object, "html") {
                describe_html(html, &mut og, &mut image, base);
            }
        }
        Some("photo") => {
            if let Some(url) = string(&object, "url") {
                image = Some(url.to_owned());
            }
        }
        Some("video") => {
            og.insert("og:type", "video.other");
            if let Some(html) = string(&object, "html") {
                describe_html(html, &mut og, &mut image, base);
            }
            for size in ["width", "height"] {
                if let Some(n) = object.get(size).and_then(Value::as_number) {
                    if n.is_i64() || n.is_u64() {
                        og.insert(&format!("og:video:{size}"), &n.to_string());
                    }
                }
            }
        }
        Some("link") => {
            og.insert("og:type", "website");
        }
        _ => {}
    }

    Ok(OEmbed {
        og: og.finish(),
        image: image.and_then(|raw| resolve_http(base, &raw)),
        cache_age_ms: cache_age_ms(object.get("cache_age")),
    })
}
