//! oEmbed: provider matching, request URLs and the JSON → OpenGraph mapping.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use media_ledger_preview::oembed::ProviderError;
use media_ledger_preview::{
    builtin_providers, match_provider, parse_oembed, request_url, OEmbedError, Provider,
};
use url::Url;

fn url(s: &str) -> Url {
    Url::parse(s).unwrap()
}

fn endpoint_for(s: &str) -> Option<String> {
    let providers = builtin_providers();
    match_provider(&providers, &url(s)).map(|p| p.endpoint.clone())
}

#[test]
fn builtin_providers_match_their_urls() {
    let youtube = Some("https://www.youtube.com/oembed".to_owned());
    assert_eq!(
        endpoint_for("https://www.youtube.com/watch?v=dQw4w9WgXcQ"),
        youtube
    );
    assert_eq!(
        endpoint_for("https://m.youtube.com/watch?v=dQw4w9WgXcQ&t=1"),
        youtube
    );
    assert_eq!(
        endpoint_for("https://youtube.com/watch?v=dQw4w9WgXcQ"),
        youtube
    );
    assert_eq!(endpoint_for("https://youtu.be/dQw4w9WgXcQ"), youtube);
    assert_eq!(endpoint_for("https://youtube.com/shorts/abc123"), youtube);
    assert_eq!(
        endpoint_for("https://www.youtube.com/shorts/abc123"),
        youtube
    );

    let twitter = Some("https://publish.twitter.com/oembed".to_owned());
    assert_eq!(
        endpoint_for("https://x.com/matrixdotorg/status/1234567890"),
        twitter
    );
    assert_eq!(
        endpoint_for("https://twitter.com/matrixdotorg/status/1234567890"),
        twitter
    );
    assert_eq!(
        endpoint_for("https://mobile.twitter.com/a/status/1"),
        twitter
    );
    assert_eq!(
        endpoint_for("https://x.com/matrixdotorg"),
        None,
        "only status URLs"
    );

    assert_eq!(
        endpoint_for("https://vimeo.com/76979871").as_deref(),
        Some("https://vimeo.com/api/oembed.{format}")
    );
    assert!(endpoint_for("https://www.flickr.com/photos/bees/2362225867/").is_some());
    assert!(endpoint_for("https://soundcloud.com/forss/flickermood").is_some());
    assert!(endpoint_for("https://open.spotify.com/track/2qToAcex0ruZfbEbAy9OhW").is_some());
    assert!(endpoint_for("https://www.tiktok.com/@scout2015/video/6718335390845095173").is_some());
    assert!(endpoint_for("https://www.reddit.com/r/aww/comments/4lwccv/woodchips/").is_some());
}

#[test]
fn non_matching_urls_have_no_provider() {
    for s in [
        "https://example.com/watch?v=1",
        "https://www.youtube.com/watch", // `*` needs at least one character
        "http://www.youtube.com/watch?v=1", // the glob's scheme is literal
        "https://evil.com/?u=https://youtu.be/x", // the whole URL must match
        "https://youtube.com.evil.com/watch?v=1", // a host `*` never spans a dot
        "https://a.b.youtube.com/watch?v=1",
        "https://youtu.be/",
    ] {
        assert_eq!(endpoint_for(s), None, "{s}");
    }
}

#[test]
fn custom_providers_are_matched_in_order() {
    let providers = vec![
        Provider {
            endpoint: "https://old.example/oembed.xml".into(),
            schemes: vec!["https://video.example/*".into()],
        },
        Provider {
            endpoint: "https://first.example/oembed".into(),
            schemes: vec![
                "https://*.video.example/v/*".into(),
                "https://video.example/*".into(),
            ],
        },
        Provider {
            endpoint: "https://second.example/oembed".into(),
            schemes: vec!["https://video.example/*".into()],
        },
    ];
    let matched = |s: &str| match_provider(&providers, &url(s)).map(|p| p.endpoint.as_str());
    assert_eq!(
        matched("https://video.example/x"),
        Some("https://first.example/oembed"),
        "XML endpoints are skipped"
    );
    assert_eq!(
        matched("https://cdn.video.example/v/42"),
        Some("https://first.example/oembed")
    );
    assert_eq!(matched("https://other.example/x"), None);

    assert_eq!(providers[1].check(), Ok(()));
    let bad = Provider {
        endpoint: "ftp://x/oembed".into(),
        schemes: vec![],
    };
    assert!(matches!(bad.check(), Err(ProviderError::BadEndpoint(_))));
    let bad = Provider {
        endpoint: "https://x/oembed".into(),
        schemes: vec!["spotify:*".into()],
    };
    assert!(matches!(bad.check(), Err(ProviderError::BadScheme(_))));
    assert!(builtin_providers().iter().all(|p| p.check().is_ok()));
}

#[test]
fn request_urls_append_the_query_properly() {
    let target = url("https://vimeo.com/76979871?a=1&b=2");
    assert_eq!(
        request_url("https://vimeo.com/api/oembed.{format}", &target).unwrap().as_str(),
        "https://vimeo.com/api/oembed.json?url=https%3A%2F%2Fvimeo.com%2F76979871%3Fa%3D1%26b%3D2&format=json"
    );
    assert_eq!(
        request_url(
            "https://example.com/oembed?key=k#frag",
            &url("https://e.com/a b")
        )
        .unwrap()
        .as_str(),
        "https://example.com/oembed?key=k&url=https%3A%2F%2Fe.com%2Fa%2520b&format=json"
    );
    assert_eq!(request_url("not a url", &target), None);
    assert_eq!(request_url("javascript:alert(1)", &target), None);
}

fn parse(json: &str) -> media_ledger_preview::OEmbed {
    parse_oembed(
        json.as_bytes(),
        &url("https://www.flickr.com/photos/bees/2362225867/"),
    )
    .unwrap()
}

#[test]
fn a_photo_uses_its_url_as_the_image() {
    let o = parse(
        r#"{"version":"1.0","type":"photo","width":240,"height":160,"title":"Bacon Lollys &amp; more",
            "author_name":"ZB","author_url":"https://www.flickr.com/photos/bees/",
            "provider_name":"Flickr","url":"https://live.staticflickr.com/3123/2362225867_4de59f6de4_m.jpg",
            "thumbnail_url":"https://live.staticflickr.com/thumb.jpg","cache_age":3600}"#,
    );
    assert_eq!(
        o.og["og:title"], "Bacon Lollys & more",
        "entities are unescaped"
    );
    assert_eq!(o.og["og:site_name"], "Flickr");
    assert_eq!(
        o.og["og:url"],
        "https://www.flickr.com/photos/bees/2362225867/"
    );
    assert!(!o.og.contains_key("og:image"));
    assert!(!o.og.contains_key("og:type"));
    assert_eq!(o.image.unwrap().path(), "/3123/2362225867_4de59f6de4_m.jpg");
    assert_eq!(o.cache_age_ms, Some(3_600_000));
}

#[test]
fn a_video_is_video_other_with_a_description_and_thumbnail() {
    let o = parse(
        r#"{"type":"video","version":"1.0","title":"Rick","author_name":"RickAstleyVEVO",
            "provider_name":"YouTube","width":200,"height":113.5,
            "thumbnail_url":"https://i.ytimg.com/vi/dQw4w9WgXcQ/hqdefault.jpg",
            "html":"<div><p>Never gonna give you up</p><video src=\"/v.mp4\"></video><iframe src=\"https://www.youtube.com/embed/x\">iframe text</iframe></div>",
            "cache_age":"86400"}"#,
    );
    assert_eq!(o.og["og:type"], "video.other");
    assert_eq!(o.og["og:title"], "Rick");
    assert_eq!(o.og["og:description"], "Never gonna give you up");
    assert_eq!(o.og["og:video"], "https://www.flickr.com/v.mp4");
    assert_eq!(o.og["og:video:width"], "200");
    assert!(!o.og.contains_key("og:video:height"), "only integers");
    assert_eq!(o.image.unwrap().host_str(), Some("i.ytimg.com"));
    assert_eq!(o.cache_age_ms, Some(86_400_000));
}

#[test]
fn rich_html_gives_a_description_and_first_image() {
    let o = parse(
        r#"{"type":"rich","version":1,"author_name":"Matrix","provider_name":"Twitter",
            "html":"<blockquote class=\"twitter-tweet\"><p lang=\"en\">Matrix 2.0 is here!</p>&mdash; Matrix (@matrixdotorg) <img src=\"/pic.png\"><script src=\"w.js\">x</script></blockquote>"}"#,
    );
    assert_eq!(
        o.og["og:title"], "Matrix",
        "author_name stands in for a missing title"
    );
    assert_eq!(
        o.og["og:description"],
        "Matrix 2.0 is here!\n\n— Matrix (@matrixdotorg)"
    );
    assert!(!o.og.contains_key("og:type"));
    assert_eq!(o.image.unwrap().as_str(), "https://www.flickr.com/pic.png");
    assert_eq!(o.cache_age_ms, None);
}

#[test]
fn a_link_is_a_website_with_its_thumbnail() {
    let o = parse(
        r#"{"type":"link","title":"","author_name":"","thumbnail_url":"/t.png","cache_age":-5}"#,
    );
    assert_eq!(o.og["og:type"], "website");
    assert!(!o.og.contains_key("og:title"), "empty title and author");
    assert_eq!(o.image.unwrap().as_str(), "https://www.flickr.com/t.png");
    assert_eq!(o.cache_age_ms, Some(0));
}

#[test]
fn oembed_fields_are_bounded_and_urls_checked() {
    let o = parse(&format!(
        r#"{{"type":"photo","title":"{}","url":"javascript:alert(1)","cache_age":true}}"#,
        "t".repeat(5000)
    ));
    assert_eq!(o.og["og:title"].chars().count(), 1000);
    assert_eq!(o.image, None);
    assert_eq!(o.cache_age_ms, None);
    let o = parse(&format!(
        r#"{{"type":"photo","url":"https://e.com/{}"}}"#,
        "a".repeat(3000)
    ));
    assert_eq!(o.image, None);
}

#[test]
fn invalid_oembed_is_an_error() {
    let base = url("https://example.com/");
    assert!(matches!(
        parse_oembed(b"<html>not json</html>", &base),
        Err(OEmbedError::NotJson(_))
    ));
    assert!(matches!(
        parse_oembed(b"{\"title\":\"\xff\"}", &base),
        Err(OEmbedError::NotJson(_))
    ));
    assert!(matches!(
        parse_oembed(b"", &base),
        Err(OEmbedError::NotJson(_))
    ));
    assert!(matches!(
        parse_oembed(b"[1,2]", &base),
        Err(OEmbedError::NotAnObject)
    ));
    assert!(matches!(
        parse_oembed(b"\"x\"", &base),
        Err(OEmbedError::NotAnObject)
    ));
    assert!(matches!(
        parse_oembed(br#"{"version":"2.0","type":"link"}"#, &base),
        Err(OEmbedError::UnsupportedVersion(_))
    ));
    assert!(matches!(
        parse_oembed(br#"{"version":null}"#, &base),
        Err(OEmbedError::UnsupportedVersion(_))
    ));
    // A missing version is accepted, and so is a UTF-8 BOM.
    assert!(parse_oembed(b"\xEF\xBB\xBF{\"type\":\"link\"}", &base).is_ok());
    let deep = "[".repeat(100_000);
    assert!(parse_oembed(deep.as_bytes(), &base).is_err());
}
