//! The size bounds of a preview, and the one builder every OpenGraph object goes through.
//!
//! A preview is stored in the log, so whatever a site sends, the result stays small: at most
//! [`MAX_PROPERTIES`] properties, names of at most [`MAX_NAME_BYTES`] bytes, values trimmed and
//! cut to [`MAX_VALUE_CHARS`] characters, URLs of at most [`MAX_URL_BYTES`] bytes (longer ones
//! are dropped, never cut). This module also owns URL resolution (http/https only).

use std::collections::BTreeSet;

use url::Url;

use crate::Og;

/// At most this many properties in one OpenGraph object (the server adds its image fields).
pub const MAX_PROPERTIES: usize = 64;
/// A property name longer than this (in bytes) is dropped.
pub const MAX_NAME_BYTES: usize = 128;
/// A value is trimmed, then cut to this many characters (URL-valued properties are dropped).
pub const MAX_VALUE_CHARS: usize = 1000;
/// A URL longer than this (in bytes, serialized) is dropped.
pub const MAX_URL_BYTES: usize = 2048;

/// Properties kept first when a page has more than [`MAX_PROPERTIES`].
const PRIORITY: [&str; 6] = [
    "og:title",
    "og:description",
    "og:type",
    "og:url",
    "og:site_name",
    "og:image:alt",
];

/// The first `max` characters of `s` (cut on a char boundary).
pub(crate) fn cut_chars(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((at, _)) => &s[..at],
        None => s,
    }
}

/// A value as stored: trimmed and cut; `None` when nothing is left.
pub(crate) fn clean_value(raw: &str) -> Option<String> {
    let value = cut_chars(raw.trim(), MAX_VALUE_CHARS).trim_end();
    (!value.is_empty()).then(|| value.to_owned())
}

/// Whether a property holds a URL (cutting it would make a different, broken URL).
fn is_url_property(key: &str) -> bool {
    matches!(key, "og:url" | "og:video" | "og:audio")
        || key.ends_with(":url")
        || key.ends_with(":secure_url")
}

/// `raw` resolved against `base`, if the result is an http(s) URL of at most [`MAX_URL_BYTES`].
pub(crate) fn resolve_http(base: &Url, raw: &str) -> Option<Url> {
    let raw = raw.trim();
    if raw.is_empty() || raw.len() > MAX_URL_BYTES {
        return None;
    }
    let url = base.join(raw).ok()?;
    (matches!(url.scheme(), "http" | "https") && url.as_str().len() <= MAX_URL_BYTES).then_some(url)
}

/// Collects properties in document order (first occurrence wins) and enforces the bounds.
///
/// Memory stays bounded whatever the input: once [`MAX_PROPERTIES`] ordinary properties are
/// held, only the few [`PRIORITY`] ones are still accepted.
#[derive(Debug, Default)]
pub(crate) struct OgBuilder {
    entries: Vec<(String, String)>,
    seen: BTreeSet<String>,
    ordinary: usize,
}

impl OgBuilder {
    /// Adds `key` unless it is already present or out of bounds; `true` if it was added.
    pub(crate) fn insert(&mut self, key: &str, value: &str) -> bool {
        if key.is_empty() || key.len() > MAX_NAME_BYTES || self.seen.contains(key) {
            return false;
        }
        let priority = PRIORITY.contains(&key);
        if !priority && self.ordinary >= MAX_PROPERTIES {
            return false;
        }
        let value = if is_url_property(key) {
            let value = value.trim();
            if value.is_empty()
                || value.len() > MAX_URL_BYTES
                || value.chars().count() > MAX_VALUE_CHARS
            {
                return false;
            }
            value.to_owned()
        } else {
            match clean_value(value) {
                Some(value) => value,
                None => return false,
            }
        };
        if !priority {
            self.ordinary += 1;
        }
        self.seen.insert(key.to_owned());
        self.entries.push((key.to_owned(), value));
        true
    }

    /// Whether `key` is present.
    pub(crate) fn contains(&self, key: &str) -> bool {
        self.seen.contains(key)
    }

    /// The object: the priority properties, then the others in document order, up to the cap.
    pub(crate) fn finish(self) -> Og {
        let (first, rest): (Vec<_>, Vec<_>) = self
            .entries
            .into_iter()
            .partition(|(key, _)| PRIORITY.contains(&key.as_str()));
        first.into_iter().chain(rest).take(MAX_PROPERTIES).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cut_respects_char_boundaries() {
        assert_eq!(cut_chars("héllo", 2), "hé");
        assert_eq!(cut_chars("hé", 5), "hé");
    }

    #[test]
    fn priority_keys_survive_a_full_builder() {
        let mut og = OgBuilder::default();
        for i in 0..100 {
            og.insert(&format!("og:custom{i}"), "x");
        }
        assert!(og.insert("og:title", "T"));
        let og = og.finish();
        assert_eq!(og.len(), MAX_PROPERTIES);
        assert_eq!(og.get("og:title").map(String::as_str), Some("T"));
    }

    #[test]
    fn long_url_properties_are_dropped_not_cut() {
        let mut og = OgBuilder::default();
        assert!(!og.insert("og:url", &format!("https://e.com/{}", "a".repeat(1500))));
        assert!(og.insert("og:title", &"a".repeat(1500)));
        assert_eq!(og.finish()["og:title"].len(), MAX_VALUE_CHARS);
    }
}
