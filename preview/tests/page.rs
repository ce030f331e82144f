//! Pages: OpenGraph pass-through, Synapse's fallbacks, `<base href>` and oEmbed discovery.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use media_ledger_preview::{page_from_bytes, parse_html, Page};
use url::Url;

fn base() -> Url {
    Url::parse("https://news.example.com/articles/2024/story.html?ref=home").unwrap()
}

fn parse(html: &str) -> Page {
    parse_html(html, &base())
}

fn og<'a>(page: &'a Page, key: &str) -> Option<&'a str> {
    page.og.get(key).map(String::as_str)
}

const OG_PAGE: &[u8] = br#"<!DOCTYPE html>
<html prefix="og: https://ogp.me/ns#">
<head>
  <meta charset="utf-8">
  <title>The HTML title (not used)</title>
  <meta property="og:title" content="  The Rock  ">
  <meta property="og:title" content="A second title (ignored)">
  <meta property="og:type" content="video.movie">
  <meta property="og:url" content="https://www.imdb.com/title/tt0117500/">
  <meta property="og:site_name" content="IMDb">
  <meta property="og:locale" content="en_GB">
  <meta property="og:custom_thing" content="custom value">
  <meta property="og:image" content="../../img/rock.jpg">
  <meta property="og:image" content="https://cdn.example.com/second.jpg">
  <meta property="og:image:width" content="1200">
  <meta property="og:image:height" content="630">
  <meta property="og:image:type" content="image/jpeg">
  <meta property="og:image:alt" content="A poster of The Rock">
  <meta property="og:description" content="Stanley Goodspeed, a chemist, and John Mason break into Alcatraz.">
  <meta property="og:empty" content="   ">
  <meta property="article:author" content="Jane Doe">
  <meta name="twitter:title" content="Twitter title (og wins)">
  <meta name="twitter:label1" content="Runtime">
  <meta name="twitter:site" content="@imdb">
  <meta name="description" content="meta description (og wins)">
</head>
<body><h1>Heading</h1><p>Body text.</p><img src="/big.png" width="500" height="500"></body>
</html>"#;

#[test]
fn an_og_page_passes_every_property_through() {
    let page = page_from_bytes(OG_PAGE, Some("text/html"), &base());
    assert_eq!(
        og(&page, "og:title"),
        Some("The Rock"),
        "trimmed, first wins"
    );
    assert_eq!(og(&page, "og:type"), Some("video.movie"));
    assert_eq!(
        og(&page, "og:url"),
        Some("https://www.imdb.com/title/tt0117500/")
    );
    assert_eq!(og(&page, "og:site_name"), Some("IMDb"));
    assert_eq!(og(&page, "og:locale"), Some("en_GB"));
    assert_eq!(og(&page, "og:custom_thing"), Some("custom value"));
    assert_eq!(og(&page, "og:image:alt"), Some("A poster of The Rock"));
    assert_eq!(
        og(&page, "og:description"),
        Some("Stanley Goodspeed, a chemist, and John Mason break into Alcatraz.")
    );
    assert_eq!(og(&page, "article:author"), Some("Jane Doe"));
    assert_eq!(
        og(&page, "og:label1"),
        Some("Runtime"),
        "twitter:* fill the gaps"
    );
    // Never: the image (the server replaces it), its page-declared sizes, blank values,
    // twitter:site/card/creator, and anything that is not a property.
    for absent in [
        "og:image",
        "og:image:width",
        "og:image:height",
        "og:image:type",
        "og:empty",
        "og:site",
        "twitter:title",
        "description",
    ] {
        assert_eq!(og(&page, absent), None, "{absent}");
    }
    assert_eq!(
        page.image.unwrap().as_str(),
        "https://news.example.com/img/rock.jpg"
    );
    assert_eq!(page.oembed, None);
}

#[test]
fn a_page_without_og_uses_title_meta_description_and_the_largest_image() {
    let page = parse(
        r#"<html><head><title>
              Plain   page
           </title>
           <meta name="Description" content="What this page is about.">
           <link rel="shortcut icon" href="/favicon.ico"></head>
           <body>
             <img src="/tiny.gif" width="1" height="1">
             <img src="/wide.png" width="300" height="20">
             <img src="/square.png" width="100" height="100">
             <img src="/also-square.png" width="100.0" height="100">
             <img src="/nosize.png">
             <img src="/px.png" width="900px" height="900px">
           </body></html>"#,
    );
    assert_eq!(og(&page, "og:title"), Some("Plain page"));
    assert_eq!(
        og(&page, "og:description"),
        Some("What this page is about.")
    );
    assert_eq!(
        page.image.unwrap().path(),
        "/square.png",
        "100×100 > 300×20; first of a tie"
    );
    assert_eq!(page.og.len(), 2);
}

#[test]
fn the_description_falls_back_to_a_summary_of_the_visible_text() {
    let para = "Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod. ";
    let html = format!(
        r#"<html><head><title>T</title><style>p {{ color: red }}</style></head><body>
           <header>Site header</header><nav>Home | About</nav>
           <script>var x = "script text";</script><noscript>Enable JS</noscript>
           <ul role="menu"><li>Menu item</li></ul>
           <h1>No  title   needed</h1>
           <p>First   paragraph with <b>bold</b> text.</p>
           <p>{}</p><aside>Aside</aside><footer>Footer</footer>
           <!-- a comment --></body></html>"#,
        para.repeat(10)
    );
    let page = parse(&html);
    let description = og(&page, "og:description").unwrap();
    assert!(
        description
            .starts_with("No title needed\n\nFirst paragraph with\n\nbold\n\ntext.\n\nLorem"),
        "{description:?}"
    );
    for hidden in [
        "header", "Home", "script", "Enable", "Menu", "Aside", "Footer", "comment", "color",
    ] {
        assert!(!description.contains(hidden), "{hidden} in {description:?}");
    }
    assert!(description.ends_with('…'));
    assert!(description.chars().count() <= 501);
    assert!(description
        .trim_end_matches('…')
        .ends_with(|c: char| c.is_alphanumeric() || c == ','));
}

#[test]
fn a_long_og_description_is_summarized() {
    let long = "word ".repeat(300);
    let page = parse(&format!(
        r#"<meta property="og:description" content="{long}">"#
    ));
    let description = og(&page, "og:description").unwrap();
    assert!(description.ends_with("word…"));
    assert!(description.chars().count() <= 501);
}

#[test]
fn the_title_falls_back_to_the_first_heading() {
    let page = parse("<html><body><h2>  </h2><h3>Third-level</h3><h1>Later h1</h1></body></html>");
    assert_eq!(og(&page, "og:title"), Some("Third-level"));
    let page = parse("<p>no headings at all</p>");
    assert_eq!(og(&page, "og:title"), None);
    assert_eq!(og(&page, "og:description"), Some("no headings at all"));
}

#[test]
fn image_fallbacks_in_synapse_order() {
    let image = |html: &str| parse(html).image.map(|url| url.to_string());
    assert_eq!(
        image(r#"<meta name="twitter:image" content="/tw.png"><meta itemprop="image" content="/ip.png">"#).as_deref(),
        Some("https://news.example.com/tw.png")
    );
    assert_eq!(
        image(r#"<meta itemprop="thumbnailImage" content="/ip.png"><img src="a.png" width=50 height=50>"#).as_deref(),
        Some("https://news.example.com/ip.png")
    );
    assert_eq!(
        image(r#"<img src="first.png"><img src="second.png" width=5 height=500>"#).as_deref(),
        Some("https://news.example.com/articles/2024/first.png"),
        "no image over 10×10: the first <img src>"
    );
    assert_eq!(
        image(r#"<link rel="apple-touch-icon" href="/apple.png"><link rel="icon" href="/favicon.ico">"#).as_deref(),
        Some("https://news.example.com/favicon.ico")
    );
    assert_eq!(image("<p>nothing</p>"), None);
}

#[test]
fn base_href_is_honoured_when_http() {
    let html = r#"<head><base href="https://static.example.net/assets/">
        <meta property="og:image" content="img/a.png">
        <link rel="alternate" type="application/json+oembed" href="/oembed?id=1"></head>"#;
    let page = parse(html);
    assert_eq!(
        page.image.unwrap().as_str(),
        "https://static.example.net/assets/img/a.png"
    );
    assert_eq!(
        page.oembed.unwrap().as_str(),
        "https://static.example.net/oembed?id=1"
    );

    let relative = parse(r#"<base href="/cdn/"><meta property="og:image" content="a.png">"#);
    assert_eq!(
        relative.image.unwrap().as_str(),
        "https://news.example.com/cdn/a.png"
    );

    let hostile =
        parse(r#"<base href="javascript:alert(1)//"><meta property="og:image" content="a.png">"#);
    assert_eq!(
        hostile.image.unwrap().as_str(),
        "https://news.example.com/articles/2024/a.png"
    );
}

#[test]
fn only_http_image_urls_are_kept() {
    for bad in [
        "javascript:alert(1)",
        "data:image/png;base64,iVBORw0KGgo=",
        "ftp://example.com/a.png",
        "file:///etc/passwd",
        "http://[::1",
    ] {
        let page = parse(&format!(
            r#"<meta property="og:image" content="{bad}"><img src="/ok.png">"#
        ));
        assert_eq!(
            page.image, None,
            "{bad} (and no fallback past a declared og:image)"
        );
    }
    let page = parse(r#"<img src="data:image/gif;base64,R0lGOD"><meta name=x>"#);
    assert_eq!(page.image, None);
    let page = parse(r#"<meta property="og:image" content="//cdn.example.org/p.png">"#);
    assert_eq!(
        page.image.unwrap().as_str(),
        "https://cdn.example.org/p.png"
    );
}

#[test]
fn oembed_discovery_links_are_found_and_resolved() {
    let page = parse(
        r#"<head><link rel="alternate" type="application/json+oembed"
             href="/oembed.json?url=https%3A%2F%2Fnews.example.com%2Fa" title="x">
           <link rel="alternate" type="text/xml+oembed" href="/oembed.xml"></head>"#,
    );
    assert_eq!(
        page.oembed.unwrap().as_str(),
        "https://news.example.com/oembed.json?url=https%3A%2F%2Fnews.example.com%2Fa"
    );
    // Flickr's misspelling is accepted too, after any `alternate`.
    let page = parse(
        r#"<link rel="alternative" type="application/json+oembed" href="https://flickr.com/o">"#,
    );
    assert_eq!(page.oembed.unwrap().as_str(), "https://flickr.com/o");
    let page =
        parse(r#"<link rel="alternate" type="application/json+oembed" href="javascript:x">"#);
    assert_eq!(page.oembed, None);
    let page = parse(r#"<link rel="alternate" type="application/xml+oembed" href="/o.xml">"#);
    assert_eq!(page.oembed, None);
}

#[test]
fn bounds_properties_names_values_and_urls() {
    let mut html = String::from(r#"<meta property="og:title" content="kept">"#);
    for i in 0..100 {
        html.push_str(&format!(r#"<meta property="og:p{i:03}" content="v{i}">"#));
    }
    html.push_str(&format!(
        r#"<meta property="og:{}" content="long name">"#,
        "n".repeat(200)
    ));
    let page = parse(&html);
    assert_eq!(page.og.len(), 64);
    assert_eq!(og(&page, "og:title"), Some("kept"));
    assert_eq!(
        og(&page, "og:p000"),
        Some("v0"),
        "document order decides what is kept"
    );
    assert_eq!(og(&page, "og:p099"), None);

    let value = "é".repeat(5000);
    let page = parse(&format!(
        r#"<meta property="og:site_name" content="{value}">"#
    ));
    assert_eq!(og(&page, "og:site_name").unwrap().chars().count(), 1000);

    let long_name = format!(r#"<meta property="og:{}" content="x">"#, "n".repeat(200));
    assert!(parse(&long_name).og.keys().all(|k| k.len() <= 128));

    let long_url = format!("https://example.com/{}", "a".repeat(3000));
    let page = parse(&format!(
        r#"<meta property="og:image" content="{long_url}"><meta property="og:url" content="{long_url}">
           <link rel="alternate" type="application/json+oembed" href="{long_url}">"#
    ));
    assert_eq!(page.image, None);
    assert_eq!(page.oembed, None);
    assert_eq!(og(&page, "og:url"), None, "a URL is dropped, never cut");
}

#[test]
fn deeply_nested_and_empty_documents_do_not_panic() {
    let deep = "<div>".repeat(50_000) + "deep text" + &"</div>".repeat(50_000);
    let page = parse(&deep);
    assert!(page.og.len() <= 64);
    assert_eq!(parse(""), Page::default());
}

#[test]
fn merging_oembed_prefers_the_page() {
    let mut page = parse(r#"<meta property="og:title" content="Page title">"#);
    let oembed = media_ledger_preview::parse_oembed(
        br#"{"type":"photo","version":"1.0","title":"oEmbed title","provider_name":"P","url":"https://i.example/p.jpg"}"#,
        &base(),
    )
    .unwrap();
    page.merge_oembed(oembed);
    assert_eq!(og(&page, "og:title"), Some("Page title"));
    assert_eq!(og(&page, "og:site_name"), Some("P"));
    assert_eq!(page.image.unwrap().as_str(), "https://i.example/p.jpg");
}
