//! Property tests: no input panics, and every result respects the bounds.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use media_ledger_preview::{
    decode_html, page_from_bytes, parse_html, parse_oembed, Og, MAX_NAME_BYTES, MAX_PROPERTIES,
    MAX_URL_BYTES, MAX_VALUE_CHARS,
};
use proptest::prelude::*;
use url::Url;

fn base() -> Url {
    Url::parse("https://example.com/dir/page.html").unwrap()
}

fn assert_og_bounded(og: &Og) {
    assert!(og.len() <= MAX_PROPERTIES, "{} properties", og.len());
    for (key, value) in og {
        assert!(!key.is_empty() && key.len() <= MAX_NAME_BYTES, "{key:?}");
        assert!(!value.is_empty(), "{key} is empty");
        assert_eq!(value.trim(), value, "{key} is not trimmed");
        assert!(value.chars().count() <= MAX_VALUE_CHARS, "{key} too long");
        assert_ne!(key, "og:image");
    }
}

fn assert_url_ok(url: Option<&Url>) {
    if let Some(url) = url {
        assert!(matches!(url.scheme(), "http" | "https"), "{url}");
        assert!(url.as_str().len() <= MAX_URL_BYTES);
    }
}

/// HTML-ish text: tags, attributes and entities the parser cares about, in random order.
fn html_soup() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just("<meta property=\"og:".to_owned()),
        Just("<meta name=\"twitter:".to_owned()),
        Just("\" content=\"".to_owned()),
        Just("\">".to_owned()),
        Just("<img src=\"".to_owned()),
        Just("\" width=\"20\" height=\"30\">".to_owned()),
        Just("<link rel=\"icon alternate\" type=\"application/json+oembed\" href=\"".to_owned()),
        Just("<base href=\"".to_owned()),
        Just("<title>".to_owned()),
        Just("</title><h1>".to_owned()),
        Just("<script>".to_owned()),
        Just("<!--".to_owned()),
        Just("javascript:".to_owned()),
        Just("//x.example/".to_owned()),
        Just("&amp;&#0;&#x110000;".to_owned()),
        "[a-z:/.]{0,12}",
        "\\PC{0,40}",
        "[ \t\r\n]{0,5}",
    ];
    prop::collection::vec(piece, 0..60).prop_map(|pieces| pieces.concat())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn arbitrary_bytes_never_panic(body in prop::collection::vec(any::<u8>(), 0..2048), ct in prop::option::of("[ -~]{0,40}")) {
        let _ = decode_html(&body, ct.as_deref());
        let page = page_from_bytes(&body, ct.as_deref(), &base());
        assert_og_bounded(&page.og);
        assert_url_ok(page.image.as_ref());
        assert_url_ok(page.oembed.as_ref());
        if let Ok(oembed) = parse_oembed(&body, &base()) {
            assert_og_bounded(&oembed.og);
            assert_url_ok(oembed.image.as_ref());
        }
    }

    #[test]
    fn html_soup_respects_the_bounds(html in html_soup()) {
        let page = parse_html(&html, &base());
        assert_og_bounded(&page.og);
        assert_url_ok(page.image.as_ref());
        assert_url_ok(page.oembed.as_ref());
    }

    #[test]
    fn many_long_properties_are_bounded(n in 0usize..150, len in 0usize..3000) {
        let value = "v ".repeat(len);
        let html: String = (0..n)
            .map(|i| format!("<meta property=\"og:k{i}\" content=\"{value}\">"))
            .collect();
        let page = parse_html(&html, &base());
        assert_og_bounded(&page.og);
        let expected = if len == 0 { 0 } else { n.min(MAX_PROPERTIES) };
        prop_assert_eq!(page.og.len(), expected);
    }

    #[test]
    fn oembed_json_shapes_never_panic(
        kind in prop::sample::select(vec!["photo", "video", "rich", "link", "other"]),
        title in "\\PC{0,64}",
        html in html_soup(),
        image in "\\PC{0,64}",
        age in prop_oneof![Just("1".to_owned()), Just("-3".to_owned()), Just("1e30".to_owned()), Just("\"12\"".to_owned()), Just("null".to_owned())],
    ) {
        let json = serde_json::json!({
            "type": kind, "version": "1.0", "title": title, "html": html,
            "url": image, "thumbnail_url": image, "author_name": title,
        });
        let mut body = serde_json::to_vec(&json).unwrap();
        body.pop();
        body.extend(format!(",\"cache_age\":{age}}}").bytes());
        let oembed = parse_oembed(&body, &base()).unwrap();
        assert_og_bounded(&oembed.og);
        assert_url_ok(oembed.image.as_ref());
    }
}
