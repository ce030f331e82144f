//! Response headers of served media: `Content-Disposition` (RFC 6266), the spec's inline
//! allow-list, and the security headers every download carries.

use axum::http::{header, HeaderMap, HeaderValue};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

/// Content types the spec allows to be served `inline`.
const INLINE: &[&str] = &[
    "text/css",
    "text/plain",
    "text/csv",
    "application/json",
    "application/ld+json",
    "image/jpeg",
    "image/gif",
    "image/png",
    "image/apng",
    "image/webp",
    "image/avif",
    "video/mp4",
    "video/webm",
    "video/ogg",
    "video/quicktime",
    "audio/mp4",
    "audio/webm",
    "audio/aac",
    "audio/mpeg",
    "audio/ogg",
    "audio/wave",
    "audio/wav",
    "audio/x-wav",
    "audio/x-pn-wav",
    "audio/flac",
    "audio/x-flac",
];

/// `attr-char` of RFC 5987: what may stay unencoded in `filename*`.
const ATTR: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'!')
    .remove(b'#')
    .remove(b'$')
    .remove(b'&')
    .remove(b'+')
    .remove(b'-')
    .remove(b'.')
    .remove(b'^')
    .remove(b'_')
    .remove(b'`')
    .remove(b'|')
    .remove(b'~');

/// Whether `essence` (lowercase `type/subtype`) may be shown inline.
pub fn is_inline(essence: &str) -> bool {
    INLINE.contains(&essence)
}

/// `inline` or `attachment`, with the file name encoded per RFC 6266: a quoted `filename` when
/// it is plain printable ASCII, `filename*=utf-8''…` otherwise.
pub fn content_disposition(essence: &str, filename: Option<&str>) -> String {
    let kind = if is_inline(essence) {
        "inline"
    } else {
        "attachment"
    };
    match filename.filter(|f| !f.is_empty()) {
        None => kind.to_owned(),
        Some(name)
            if name
                .bytes()
                .all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\' && b != b'%') =>
        {
            format!("{kind}; filename=\"{name}\"")
        }
        Some(name) => format!(
            "{kind}; filename*=utf-8''{}",
            utf8_percent_encode(name, ATTR)
        ),
    }
}

/// The headers every served media carries.
pub fn add_security_headers(h: &mut HeaderMap) {
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("sandbox; default-src 'none'; script-src 'none'; plugin-types application/pdf; style-src 'unsafe-inline'; media-src 'self'; object-src 'self';"),
    );
    h.insert(
        "x-content-security-policy",
        HeaderValue::from_static("sandbox"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        "cross-origin-resource-policy",
        HeaderValue::from_static("cross-origin"),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dispositions() {
        assert_eq!(
            content_disposition("image/png", Some("cat.png")),
            "inline; filename=\"cat.png\""
        );
        assert_eq!(
            content_disposition("text/html", Some("x.html")),
            "attachment; filename=\"x.html\""
        );
        assert_eq!(content_disposition("image/png", None), "inline");
        assert_eq!(
            content_disposition("application/pdf", Some("naïve \"q\".pdf")),
            "attachment; filename*=utf-8''na%C3%AFve%20%22q%22.pdf"
        );
    }
}
