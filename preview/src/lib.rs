//! Pure URL-preview parsing: fetched bytes in, a Matrix URL-preview (OpenGraph) object out.
//!
//! This crate owns the *interpretation* of what a previewed site sends back, and nothing else:
//! it does no I/O, keeps no clock and starts no task. The server fetches (and applies its own
//! SSRF rules), then hands the bytes here:
//!
//! * [`charset`] decodes an HTML body to text ([`decode_html`]);
//! * [`html`] reads a page's OpenGraph properties and Synapse's fallbacks ([`parse_html`]);
//! * [`oembed`] matches oEmbed providers, builds their request URLs and maps their JSON;
//! * [`rules`] is the operator's URL blocklist (`url_preview_url_blacklist` semantics);
//! * [`bounds`] holds the size limits every result respects (the result is stored in a log).
//!
//! Synapse's `preview_html.py`, `oembed.py` and `url_previewer.py` are the reference behaviour.
#![warn(missing_docs)]

pub mod bounds;
pub mod charset;
mod glob;
pub mod html;
pub mod oembed;
mod parse;
pub mod rules;
mod text;

use std::collections::BTreeMap;

pub use bounds::{MAX_NAME_BYTES, MAX_PROPERTIES, MAX_URL_BYTES, MAX_VALUE_CHARS};
pub use charset::{decode_html, html_encoding};
pub use html::parse_html;
pub use oembed::{
    builtin_providers, match_provider, parse_oembed, request_url, OEmbed, OEmbedError, Provider,
    ProviderError,
};
pub use rules::{is_blocked, RuleError, UrlRule};

/// One OpenGraph object: property → value, values as text (the server adds numeric image fields).
pub type Og = BTreeMap<String, String>;

/// What a page says about itself.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Page {
    /// The page's `og:*` (and `article:*`, `profile:*`, mapped `twitter:*`) properties, first
    /// occurrence winning, plus the `og:title` / `og:description` fallbacks. Never `og:image`
    /// nor `og:image:*` other than `og:image:alt`.
    pub og: Og,
    /// `og:image` (or the fallback image) resolved against the base URL; http/https only.
    /// The server downloads it and writes `og:image` (an mxc URI) and the image fields itself.
    pub image: Option<url::Url>,
    /// The oEmbed discovery link (`<link rel="alternate" type="application/json+oembed">`),
    /// resolved; http/https only.
    pub oembed: Option<url::Url>,
}

impl Page {
    /// Folds an oEmbed result into this page the way Synapse does (`og_from_oembed |
    /// og_from_html`): the page's own properties win, oEmbed fills the gaps (within
    /// [`MAX_PROPERTIES`]), and the page's image is preferred over oEmbed's.
    pub fn merge_oembed(&mut self, oembed: OEmbed) {
        for (key, value) in oembed.og {
            if self.og.len() >= MAX_PROPERTIES {
                break;
            }
            self.og.entry(key).or_insert(value);
        }
        if self.image.is_none() {
            self.image = oembed.image;
        }
    }
}

/// [`decode_html`] then [`parse_html`].
pub fn page_from_bytes(body: &[u8], content_type: Option<&str>, base: &url::Url) -> Page {
    parse_html(&decode_html(body, content_type), base)
}
