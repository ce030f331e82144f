//! Reading a page: its OpenGraph properties, Synapse's fallbacks, its image and oEmbed link.
//!
//! This is Synapse's `parse_html_to_open_graph` (and `autodiscover_from_html`) over an
//! html5ever tree, in one iterative pass over the document:
//!
//! * `og:*`, `article:*` and `profile:*` `<meta property content>` pass through (first
//!   occurrence wins); `<meta name="twitter:*">` fill the `og:*` gaps (except `twitter:card`,
//!   `twitter:creator`, `twitter:site`). `og:image` becomes [`Page::image`]; the other
//!   `og:image:*` (sizes, type) are dropped since the server measures the real image, except
//!   `og:image:alt`;
//! * `og:title` ← the first non-empty `<title>`, `<h1>`, `<h2>` or `<h3>`;
//! * `og:description` ← the first `<meta name="…description…">`, else a summary of the visible
//!   body text; a page's own `og:description` is summarized (cut near 500 characters);
//! * the image ← `og:image`, `twitter:image`, `<meta itemprop="…image…">`, the largest
//!   `<img src width height>` over 10×10, the first `<img src>`, a `<link rel="icon">`;
//!   resolved against the base (`<base href>` when http/https), http/https only.

use scraper::node::Element;
use scraper::{Html, Node};
use url::Url;

use crate::bounds::{clean_value, resolve_http, OgBuilder};
use crate::text::{describe, next_node, summarize_paragraphs};
use crate::Page;

const HTML_NS: &str = "http://www.w3.org/1999/xhtml";

/// Everything one pass over the document finds (attribute values borrowed from the tree).
#[derive(Default)]
struct Scan<'a> {
    /// `og:*` then `article:*` / `profile:*` properties, each in document order.
    og: Vec<(&'a str, &'a str)>,
    other: Vec<(&'a str, &'a str)>,
    /// `twitter:*` names mapped to `og:*`.
    twitter: Vec<(String, &'a str)>,
    base: Option<&'a str>,
    title: Option<String>,
    itemprop_image: Option<&'a str>,
    meta_description: Option<&'a str>,
    /// The largest `<img>` over 10×10 (area, src); the first one wins a tie.
    sized_image: Option<(f64, &'a str)>,
    first_image: Option<&'a str>,
    favicon: Option<&'a str>,
    oembed_alternate: Vec<&'a str>,
    oembed_alternative: Vec<&'a str>,
}

/// A non-blank attribute value.
fn attr<'a>(element: &'a Element, name: &str) -> Option<&'a str> {
    element.attr(name).filter(|value| !value.trim().is_empty())
}

/// Whether the whitespace-separated `list` holds `token` (ASCII case-insensitively).
fn has_token(list: &str, token: &str) -> bool {
    list.split_ascii_whitespace()
        .any(|t| t.eq_ignore_ascii_case(token))
}

fn contains_ignore_case(haystack: &str, needle: &str) -> bool {
    haystack.to_ascii_lowercase().contains(needle)
}

/// Python's `float()` of a dimension attribute, 0 when it does not parse.
fn dimension(value: &str) -> f64 {
    value.trim().parse().unwrap_or(0.0)
}

/// Maps a `twitter:*` name to its `og:*` counterpart (Synapse's `_map_twitter_to_open_graph`).
fn twitter_to_og(name: &str) -> Option<String> {
    let rest = name.strip_prefix("twitter:")?;
    (!matches!(rest, "card" | "creator" | "site")).then(|| format!("og:{rest}"))
}

impl<'a> Scan<'a> {
    fn run(doc: &'a Html) -> Scan<'a> {
        let mut scan = Scan::default();
        let root = doc.tree.root();
        let mut next = Some(root);
        while let Some(node) = next {
            let descend = match node.value() {
                Node::Element(element) if element.name() == "template" => false,
                Node::Element(element) if &*element.name.ns == HTML_NS => {
                    scan.element(element, node);
                    true
                }
                _ => true,
            };
            next = next_node(root, node, descend);
        }
        scan
    }

    fn element(&mut self, element: &'a Element, node: ego_tree::NodeRef<'a, Node>) {
        match element.name() {
            "meta" => self.meta(element),
            "base" if self.base.is_none() => self.base = element.attr("href"),
            "title" | "h1" | "h2" | "h3" if self.title.is_none() => {
                let text = scraper::ElementRef::wrap(node)
                    .map(|element| {
                        element
                            .text()
                            .flat_map(str::split_whitespace)
                            .collect::<Vec<_>>()
                            .join(" ")
                    })
                    .unwrap_or_default();
                self.title = (!text.is_empty()).then_some(text);
            }
            "img" => {
                let Some(src) = attr(element, "src") else {
                    return;
                };
                self.first_image.get_or_insert(src);
                if let (Some(width), Some(height)) =
                    (attr(element, "width"), attr(element, "height"))
                {
                    let (width, height) = (dimension(width), dimension(height));
                    if width > 10.0 && height > 10.0 {
                        let area = width * height;
                        if self.sized_image.is_none_or(|(best, _)| area > best) {
                            self.sized_image = Some((area, src));
                        }
                    }
                }
            }
            "link" => {
                let (Some(rel), Some(href)) = (element.attr("rel"), attr(element, "href")) else {
                    return;
                };
                if has_token(rel, "icon") {
                    self.favicon.get_or_insert(href);
                }
                let oembed = element.attr("type").is_some_and(|kind| {
                    kind.trim().eq_ignore_ascii_case("application/json+oembed")
                });
                if oembed && has_token(rel, "alternate") {
                    self.oembed_alternate.push(href);
                } else if oembed && has_token(rel, "alternative") {
                    self.oembed_alternative.push(href);
                }
            }
            _ => {}
        }
    }

    fn meta(&mut self, element: &'a Element) {
        let Some(content) = attr(element, "content") else {
            return;
        };
        if let Some(property) = element.attr("property") {
            if property.starts_with("og:") {
                self.og.push((property, content));
            } else if property.starts_with("article:") || property.starts_with("profile:") {
                self.other.push((property, content));
            }
        }
        if let Some(name) = element.attr("name") {
            if let Some(key) = twitter_to_og(name) {
                self.twitter.push((key, content));
            }
            if self.meta_description.is_none() && contains_ignore_case(name, "description") {
                self.meta_description = Some(content);
            }
        }
        if self.itemprop_image.is_none()
            && element
                .attr("itemprop")
                .is_some_and(|p| contains_ignore_case(p, "image"))
        {
            self.itemprop_image = Some(content);
        }
    }
}

/// Parses decoded HTML into a [`Page`]. `base` is the URL the page was fetched from (after
/// redirects); a `<base href>` in the page is honoured if it resolves to an http(s) URL.
pub fn parse_html(html: &str, base: &Url) -> Page {
    let doc = crate::parse::document(html);
    let scan = Scan::run(&doc);
    let base = scan
        .base
        .and_then(|href| resolve_http(base, href))
        .unwrap_or_else(|| base.clone());

    let mut og = OgBuilder::default();
    let mut image = None;
    let properties = scan.og.iter().chain(&scan.other).copied();
    let twitter = scan
        .twitter
        .iter()
        .map(|(key, value)| (key.as_str(), *value));
    for (key, value) in properties.chain(twitter) {
        if key == "og:image" {
            image = image.or(Some(value));
        } else if key.starts_with("og:image:") && key != "og:image:alt" {
            continue;
        } else if key == "og:description" && !og.contains(key) {
            if let Some(summary) = summarize_paragraphs([value]) {
                og.insert(key, &summary);
            }
        } else {
            og.insert(key, value);
        }
    }

    if !og.contains("og:title") {
        if let Some(title) = &scan.title {
            og.insert("og:title", title);
        }
    }
    if !og.contains("og:description") {
        let description = scan
            .meta_description
            .and_then(clean_value)
            .or_else(|| describe(doc.tree.root()));
        if let Some(description) = description {
            og.insert("og:description", &description);
        }
    }

    let image = image
        .or(scan.itemprop_image)
        .or(scan.sized_image.map(|(_, src)| src))
        .or(scan.first_image)
        .or(scan.favicon)
        .and_then(|raw| resolve_http(&base, raw));
    let oembed = scan
        .oembed_alternate
        .iter()
        .chain(&scan.oembed_alternative)
        .find_map(|href| resolve_http(&base, href));

    Page {
        og: og.finish(),
        image,
        oembed,
    }
}
