//! A small web site on loopback for the link-preview suite (`url_preview.rs`): realistic
//! fixture pages (OpenGraph, plain HTML, legacy charsets), real images, redirect chains, an
//! oEmbed provider, pages too big or too slow, and what the site saw: hits per path and the
//! last request (URI and headers) per path.
//!
//! Paths:
//! - `/og`: a full OpenGraph page (title, description, site name, type, url, a custom
//!   `og:custom:thing`, a relative `og:image` = `/img/red.png`, and misleading
//!   `og:image:width`/`og:image:type` that the server must not pass on); `/og-utf8` is the same
//!   page typed `text/html; charset=UTF-8` (every other page is typed plain `text/html`, but
//!   `/cp1252`); `/slow-og` is the same page after [`SLOW_OG_DELAY`]; `/secret/…` and
//!   `/private/…` are small OpenGraph pages too.
//! - `/plain`: no OpenGraph: a `<title>`, a `<meta name="description">`, three `<img>` with
//!   sizes (the largest, 200×100, is `/img/photo.jpg`); `/plain-nosize`: `<img>` without sizes
//!   (the first is `/img/red.png`).
//! - `/cp1252` (charset in the header), `/sjis` (`<meta charset>`), `/koi8` (`<meta
//!   http-equiv>`), `/utf16` (a UTF-16LE byte-order mark, nothing else): titles [`CP1252_TITLE`],
//!   [`SJIS_TITLE`], [`KOI8_TITLE`], [`UTF16_TITLE`].
//! - `/img/red.png` ([`red_png`], 64×48), `/img/photo.jpg` ([`photo_jpeg`], 200×100),
//!   `/img/quarantined.png` ([`quarantined_png`], 40×30); `/quarantined-image-page` shows the
//!   last one as its `og:image`; `/og-blocked-image` shows `/img/secret.png` (a red PNG),
//!   `/og-private-image` an image at 10.0.0.1, `/discover-private` links an oEmbed at 10.0.0.1.
//! - `/redirect/N`: 302 to `/redirect/N-1`, `/redirect/1` to `/og`; `/redirect-to?to=URL`:
//!   302 to `URL`, setting a cookie.
//! - `/big`: an endless page (chunked, no `Content-Length`, capped at [`BIG_CAP`]);
//!   `/big-declared`: 2 MB with its `Content-Length`; `/slow`: answers after [`SLOW_DELAY`].
//! - `/oembed?url=…&format=json`: an oEmbed provider for `/video/1` (video), `/video/2`
//!   (photo), `/video/3` (link), `/discover` and `/discover-app` (rich); `/discover` (a full
//!   OpenGraph page) and `/discover-app` (an app shell saying nothing itself) link to it;
//!   `/video/N` itself is an HTML page that must not be used when the provider answers.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

/// How long `/slow-og` takes to answer.
pub const SLOW_OG_DELAY: Duration = Duration::from_millis(300);
/// How long `/slow` takes to answer.
pub const SLOW_DELAY: Duration = Duration::from_secs(30);
/// Most bytes `/big` sends.
pub const BIG_CAP: usize = 32 * 1024 * 1024;
/// Length of `/big-declared`.
pub const BIG_DECLARED: usize = 2_000_000;

/// `og:title` of `/og`.
pub const OG_TITLE: &str = "The Red Square";
/// `og:description` of `/og`.
pub const OG_DESCRIPTION: &str = "A small red rectangle, photographed at noon from the north side.";
/// `og:site_name` of `/og`.
pub const OG_SITE_NAME: &str = "Fixture Gallery";
/// `og:custom:thing` of `/og`.
pub const OG_CUSTOM: &str = "a property no one standardised";

/// `<title>` of `/plain`.
pub const PLAIN_TITLE: &str = "Plain Old Page";
/// `<meta name="description">` of `/plain`.
pub const PLAIN_DESCRIPTION: &str =
    "A page from before OpenGraph, with only a title and a description.";

/// The title of `/cp1252`, as Unicode.
pub const CP1252_TITLE: &str = "Café “Résumé” — 5 €";
/// The title of `/sjis`, as Unicode.
pub const SJIS_TITLE: &str = "日本語のページ";
/// The description of `/sjis`, as Unicode.
pub const SJIS_DESCRIPTION: &str = "東京の天気";
/// The title of `/koi8`, as Unicode.
pub const KOI8_TITLE: &str = "Привет, мир";
/// The description of `/koi8`, as Unicode.
pub const KOI8_DESCRIPTION: &str = "Новости дня";
/// The title of `/utf16`, as Unicode.
pub const UTF16_TITLE: &str = "Grüße aus Köln ✓";

/// oEmbed of `/video/1`.
pub const VIDEO_TITLE: &str = "A Fixture Video";
/// `provider_name` of the oEmbed answers.
pub const PROVIDER_NAME: &str = "FixtureTube";
/// oEmbed title of `/video/2` (a photo).
pub const PHOTO_TITLE: &str = "A Red Photo";
/// oEmbed title of `/video/3` (a link).
pub const LINK_TITLE: &str = "A Fixture Link";
/// oEmbed title of `/discover` (the page says otherwise).
pub const DISCOVERED_TITLE: &str = "Discovered Through oEmbed";
/// oEmbed title of `/discover-app` (the page itself says nothing).
pub const APP_TITLE: &str = "An Item Of The App";
/// `provider_name` of the `/discover` and `/discover-app` oEmbeds.
pub const DISCOVERED_PROVIDER: &str = "FixtureEmbed";

fn png(img: image::RgbImage) -> Vec<u8> {
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

/// A 64×48 PNG, red with a soft vertical shade (`/img/red.png`).
pub fn red_png() -> &'static [u8] {
    static IMG: OnceLock<Vec<u8>> = OnceLock::new();
    IMG.get_or_init(|| {
        png(image::RgbImage::from_fn(64, 48, |_, y| {
            image::Rgb([200 + (y as u8), 16, 24])
        }))
    })
}

/// A 200×100 JPEG gradient (`/img/photo.jpg`).
pub fn photo_jpeg() -> &'static [u8] {
    static IMG: OnceLock<Vec<u8>> = OnceLock::new();
    IMG.get_or_init(|| {
        let img = image::RgbImage::from_fn(200, 100, |x, y| {
            image::Rgb([(x % 256) as u8, (y * 2 % 256) as u8, ((x + y) % 256) as u8])
        });
        let mut out = std::io::Cursor::new(Vec::new());
        img.write_to(&mut out, image::ImageFormat::Jpeg).unwrap();
        out.into_inner()
    })
}

/// A 40×30 PNG (`/img/quarantined.png`) the tests quarantine.
pub fn quarantined_png() -> &'static [u8] {
    static IMG: OnceLock<Vec<u8>> = OnceLock::new();
    IMG.get_or_init(|| {
        png(image::RgbImage::from_fn(40, 30, |x, y| {
            image::Rgb([(x * 6) as u8, 90, (y * 8) as u8])
        }))
    })
}

/// What the site saw.
#[derive(Default)]
struct Seen {
    hits: HashMap<String, usize>,
    headers: HashMap<String, HeaderMap>,
    uris: HashMap<String, String>,
}

struct Inner {
    base: String,
    seen: Mutex<Seen>,
}

/// The running site.
pub struct Site {
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    /// Its port.
    pub port: u16,
    inner: Arc<Inner>,
}

impl Site {
    /// Starts the site on a fresh loopback port (it runs until the test's runtime ends).
    pub async fn start() -> Site {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let base = format!("http://127.0.0.1:{port}");
        let inner = Arc::new(Inner {
            base: base.clone(),
            seen: Mutex::new(Seen::default()),
        });
        let router = axum::Router::new()
            .fallback(handle)
            .with_state(inner.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        Site { base, port, inner }
    }

    /// `base` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Requests the site answered for `path` (query strings ignored).
    pub fn hits(&self, path: &str) -> usize {
        let seen = self.inner.seen.lock().unwrap();
        seen.hits.get(path).copied().unwrap_or(0)
    }

    /// Requests the site answered, all paths.
    pub fn total_hits(&self) -> usize {
        let seen = self.inner.seen.lock().unwrap();
        seen.hits.values().sum()
    }

    /// The headers of the last request for `path`.
    pub fn last_headers(&self, path: &str) -> Option<HeaderMap> {
        let seen = self.inner.seen.lock().unwrap();
        seen.headers.get(path).cloned()
    }

    /// The path and query of the last request for `path`.
    pub fn last_uri(&self, path: &str) -> Option<String> {
        let seen = self.inner.seen.lock().unwrap();
        seen.uris.get(path).cloned()
    }
}

/// An HTML answer typed `text/html` (as nginx serves static pages: no parameter).
fn html(body: impl Into<Body>) -> Response {
    bytes_with_type(body, "text/html")
}

fn bytes_with_type(body: impl Into<Body>, content_type: &str) -> Response {
    let mut resp = Response::new(body.into());
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_str(content_type).unwrap(),
    );
    resp
}

fn redirect(location: &str) -> Response {
    let mut resp = Response::new(Body::from("Moved"));
    *resp.status_mut() = StatusCode::FOUND;
    resp.headers_mut()
        .insert(header::LOCATION, HeaderValue::from_str(location).unwrap());
    resp
}

fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query.unwrap_or("")).ok()?;
    pairs.into_iter().find(|(k, _)| k == name).map(|(_, v)| v)
}

async fn handle(State(site): State<Arc<Inner>>, req: Request) -> Response {
    let path = req.uri().path().to_owned();
    let query = req.uri().query().map(str::to_owned);
    {
        let mut seen = site.seen.lock().unwrap();
        *seen.hits.entry(path.clone()).or_default() += 1;
        seen.headers.insert(path.clone(), req.headers().clone());
        let uri = req
            .uri()
            .path_and_query()
            .map_or(path.clone(), |p| p.as_str().to_owned());
        seen.uris.insert(path.clone(), uri);
    }
    let base = site.base.as_str();
    match path.as_str() {
        "/og" => html(og_page(base)),
        "/og-utf8" => bytes_with_type(og_page(base), "text/html; charset=UTF-8"),
        "/slow-og" => {
            tokio::time::sleep(SLOW_OG_DELAY).await;
            html(og_page(base))
        }
        "/plain" => html(PLAIN_PAGE),
        "/plain-nosize" => html(PLAIN_NOSIZE_PAGE),
        "/cp1252" => bytes_with_type(cp1252_page(), "text/html; charset=windows-1252"),
        "/sjis" => bytes_with_type(sjis_page(), "text/html"),
        "/koi8" => bytes_with_type(koi8_page(), "text/html"),
        "/utf16" => bytes_with_type(utf16_page(), "text/html"),
        "/img/red.png" => bytes_with_type(red_png(), "image/png"),
        "/img/photo.jpg" => bytes_with_type(photo_jpeg(), "image/jpeg"),
        "/img/quarantined.png" => bytes_with_type(quarantined_png(), "image/png"),
        "/img/secret.png" => bytes_with_type(red_png(), "image/png"),
        "/og-blocked-image" => html(small_page("Blocked Image Page", "/img/secret.png", "")),
        "/og-private-image" => html(small_page(
            "Private Image Page",
            "http://10.0.0.1/avatar.png",
            "",
        )),
        "/discover-private" => html(small_page(
            "Private oEmbed Page",
            "",
            "<link rel=\"alternate\" type=\"application/json+oembed\" \
             href=\"http://10.0.0.1/oembed?url=x&amp;format=json\">",
        )),
        "/quarantined-image-page" => html(QUARANTINED_IMAGE_PAGE),
        "/redirect-to" => {
            let to = query_param(query.as_deref(), "to").unwrap_or_else(|| "/og".into());
            let mut resp = redirect(&to);
            resp.headers_mut().insert(
                header::SET_COOKIE,
                HeaderValue::from_static("session=s3cr3t-session; Path=/; HttpOnly"),
            );
            resp
        }
        "/big" => big_page(),
        "/big-declared" => {
            let mut body = Vec::with_capacity(BIG_DECLARED);
            body.extend_from_slice(b"<!DOCTYPE html><html><head><title>Declared</title></head><body>");
            while body.len() < BIG_DECLARED {
                body.extend_from_slice(LOREM);
            }
            body.truncate(BIG_DECLARED);
            html(body)
        }
        "/slow" => {
            tokio::time::sleep(SLOW_DELAY).await;
            html(og_page(base))
        }
        "/oembed" => oembed(base, query.as_deref()),
        "/discover" => html(discover_page(base)),
        "/discover-app" => html(discover_app_page(base)),
        p if p.starts_with("/redirect/") => match p["/redirect/".len()..].parse::<u32>() {
            Ok(n) if n > 1 => redirect(&format!("/redirect/{}", n - 1)),
            Ok(_) => redirect("/og"),
            Err(_) => StatusCode::NOT_FOUND.into_response(),
        },
        p if p.starts_with("/video/") => html(format!(
            "<!DOCTYPE html><html><head><title>Video page itself</title>\
             <meta property=\"og:title\" content=\"The page, not the oEmbed\"></head>\
             <body><video src=\"{base}/media/clip.mp4\"></video></body></html>"
        )),
        p if p.starts_with("/secret") || p.starts_with("/private") => html(format!(
            "<!DOCTYPE html><html><head><meta charset=\"utf-8\">\
             <meta property=\"og:title\" content=\"Page at {p}\"></head><body><p>{p}</p></body></html>"
        )),
        _ => (StatusCode::NOT_FOUND, "Not Found").into_response(),
    }
}

fn og_page(base: &str) -> String {
    format!(
        r#"<!DOCTYPE html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <title>The Red Square | Fixture Gallery</title>
  <meta name="description" content="The plain description, which OpenGraph overrides.">
  <meta property="og:title" content="{OG_TITLE}">
  <meta property="og:description" content="{OG_DESCRIPTION}">
  <meta property="og:site_name" content="{OG_SITE_NAME}">
  <meta property="og:type" content="article">
  <meta property="og:url" content="{base}/og">
  <meta property="og:custom:thing" content="{OG_CUSTOM}">
  <meta property="og:image" content="/img/red.png">
  <meta property="og:image:width" content="9999">
  <meta property="og:image:height" content="9999">
  <meta property="og:image:type" content="image/gif">
  <link rel="icon" href="/favicon.ico">
  <link rel="stylesheet" href="/static/site.css">
</head>
<body>
  <header><nav><a href="/">Home</a> · <a href="/about">About</a></nav></header>
  <main>
    <article>
      <h1>The Red Square</h1>
      <p>We took this picture at noon. The light was flat and the square was very red.</p>
      <img src="/img/photo.jpg" width="200" height="100" alt="Another picture">
    </article>
  </main>
  <footer>© Fixture Gallery</footer>
  <script>console.log("analytics");</script>
</body>
</html>
"#
    )
}

/// A small OpenGraph page titled `title`, with `image` as its `og:image` (if not empty) and
/// `head` added to its head.
fn small_page(title: &str, image: &str, head: &str) -> String {
    let image = if image.is_empty() {
        String::new()
    } else {
        format!("<meta property=\"og:image\" content=\"{image}\">")
    };
    format!(
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{title}</title>\n\
         <meta property=\"og:title\" content=\"{title}\">\n{image}\n{head}\n</head>\n\
         <body><p>{title}</p></body></html>\n"
    )
}

const PLAIN_PAGE: &str = r#"<!DOCTYPE html>
<html>
<head>
  <title>Plain Old Page</title>
  <meta name="description" content="A page from before OpenGraph, with only a title and a description.">
  <meta name="keywords" content="plain, old, page">
</head>
<body>
  <img src="/img/spacer.gif" width="1" height="1">
  <h2>Welcome</h2>
  <img src="/img/red.png" width="64" height="48" alt="a red square">
  <p>Some text about the page, long enough to look like a real paragraph of content.</p>
  <img src="/img/photo.jpg" width="200" height="100" alt="a photo">
</body>
</html>
"#;

const PLAIN_NOSIZE_PAGE: &str = r#"<!DOCTYPE html>
<html>
<head><title>No Sizes Here</title></head>
<body>
  <p>Images without width or height attributes.</p>
  <img src="/img/red.png" alt="first">
  <img src="/img/photo.jpg" alt="second">
</body>
</html>
"#;

const QUARANTINED_IMAGE_PAGE: &str = r#"<!DOCTYPE html>
<html>
<head>
  <meta charset="utf-8">
  <title>Page With A Bad Image</title>
  <meta property="og:title" content="Page With A Bad Image">
  <meta property="og:description" content="The image of this page is quarantined.">
  <meta property="og:image" content="/img/quarantined.png">
</head>
<body><p>Nothing to see.</p></body>
</html>
"#;

fn discover_page(base: &str) -> String {
    let target = format!("{base}/discover");
    let href: String =
        serde_urlencoded::to_string([("url", target.as_str()), ("format", "json")]).unwrap();
    format!(
        r#"<!DOCTYPE html>
<html>
<head>
  <meta charset="utf-8">
  <title>Discover Page</title>
  <meta property="og:title" content="The page's own title">
  <meta property="og:site_name" content="The page's own site name">
  <meta property="og:description" content="The page's own description.">
  <meta property="og:url" content="{base}/discover">
  <meta property="og:image" content="/img/red.png">
  <link rel="alternate" type="application/json+oembed" href="/oembed?{href}" title="Discover Page">
</head>
<body><p>A page that offers an oEmbed representation.</p></body>
</html>
"#
    )
}

/// A single-page-app shell: nothing but an oEmbed discovery link (and a script) to preview.
fn discover_app_page(base: &str) -> String {
    let target = format!("{base}/discover-app");
    let href: String =
        serde_urlencoded::to_string([("url", target.as_str()), ("format", "json")]).unwrap();
    format!(
        r#"<!DOCTYPE html>
<html>
<head>
  <meta charset="utf-8">
  <link rel="alternate" type="application/json+oembed" href="/oembed?{href}">
  <script src="/static/app.js" defer></script>
</head>
<body><div id="app"></div></body>
</html>
"#
    )
}

fn oembed(base: &str, query: Option<&str>) -> Response {
    let Some(url) = query_param(query, "url") else {
        return (StatusCode::BAD_REQUEST, "url missing").into_response();
    };
    if query_param(query, "format").as_deref() != Some("json") {
        return (StatusCode::NOT_IMPLEMENTED, "json only").into_response();
    }
    let body = if url == format!("{base}/video/1") {
        serde_json::json!({
            "version": "1.0",
            "type": "video",
            "title": VIDEO_TITLE,
            "author_name": "Fixture Author",
            "author_url": format!("{base}/authors/fixture"),
            "provider_name": PROVIDER_NAME,
            "provider_url": format!("{base}/"),
            "thumbnail_url": format!("{base}/img/photo.jpg"),
            "thumbnail_width": 200,
            "thumbnail_height": 100,
            "width": 640,
            "height": 360,
            "html": format!("<iframe width=\"640\" height=\"360\" src=\"{base}/embed/1\" frameborder=\"0\" allowfullscreen></iframe>"),
        })
    } else if url == format!("{base}/video/2") {
        serde_json::json!({
            "version": "1.0",
            "type": "photo",
            "title": PHOTO_TITLE,
            "provider_name": PROVIDER_NAME,
            "url": format!("{base}/img/red.png"),
            "width": 64,
            "height": 48,
        })
    } else if url == format!("{base}/video/3") {
        serde_json::json!({
            "version": "1.0",
            "type": "link",
            "title": LINK_TITLE,
            "provider_name": PROVIDER_NAME,
            "thumbnail_url": format!("{base}/img/red.png"),
            "thumbnail_width": 64,
            "thumbnail_height": 48,
        })
    } else if url == format!("{base}/discover-app") {
        serde_json::json!({
            "version": "1.0",
            "type": "rich",
            "title": APP_TITLE,
            "author_name": "Fixture Author",
            "provider_name": DISCOVERED_PROVIDER,
            "thumbnail_url": format!("{base}/img/photo.jpg"),
            "thumbnail_width": 200,
            "thumbnail_height": 100,
            "width": 500,
            "height": 300,
        })
    } else if url == format!("{base}/discover") {
        serde_json::json!({
            "version": "1.0",
            "type": "rich",
            "title": DISCOVERED_TITLE,
            "provider_name": DISCOVERED_PROVIDER,
            "thumbnail_url": format!("{base}/img/photo.jpg"),
            "thumbnail_width": 200,
            "thumbnail_height": 100,
            "width": 500,
            "height": 300,
        })
    } else {
        return (StatusCode::NOT_FOUND, "no such resource").into_response();
    };
    bytes_with_type(body.to_string(), "application/json")
}

const LOREM: &[u8] =
    b"<p>Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor \
incididunt ut labore et dolore magna aliqua. Ut enim ad minim veniam, quis nostrud.</p>\n";

/// Chunks of ~16 KiB until [`BIG_CAP`], with no `Content-Length`.
fn big_page() -> Response {
    let chunk: Bytes = LOREM.repeat(16 * 1024 / LOREM.len()).into();
    let head = Bytes::from_static(b"<!DOCTYPE html><html><head><title>Big</title></head><body>");
    let stream = futures_util::stream::unfold(0usize, move |sent| {
        let next = if sent == 0 {
            head.clone()
        } else {
            chunk.clone()
        };
        async move {
            (sent < BIG_CAP).then(|| (Ok::<_, std::io::Error>(next.clone()), sent + next.len()))
        }
    });
    bytes_with_type(Body::from_stream(stream), "text/html")
}

/// `/cp1252`: windows-1252 bytes (0x80–0x9F hold €, “, ”, —: wrong as Latin-1).
fn cp1252_page() -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(b"<!DOCTYPE html>\n<html><head>\n<title>");
    // "Café “Résumé” — 5 €"
    out.extend_from_slice(b"Caf\xe9 \x93R\xe9sum\xe9\x94 \x97 5 \x80");
    out.extend_from_slice(b"</title>\n<meta name=\"description\" content=\"Cr\xe8me br\xfbl\xe9e \x96 \x84quoted\x93\">\n</head>\n<body><p>Men\xfc</p></body></html>\n");
    out
}

/// `/sjis`: Shift_JIS bytes, declared by `<meta charset>` only.
fn sjis_page() -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(
        b"<!DOCTYPE html>\n<html lang=\"ja\"><head>\n<meta charset=\"shift_jis\">\n<title>",
    );
    // "日本語のページ"
    out.extend_from_slice(b"\x93\xfa\x96{\x8c\xea\x82\xcc\x83y\x81[\x83W");
    out.extend_from_slice(b"</title>\n<meta name=\"description\" content=\"");
    // "東京の天気"
    out.extend_from_slice(b"\x93\x8c\x8b\x9e\x82\xcc\x93V\x8bC");
    out.extend_from_slice(
        b"\">\n</head>\n<body><p>\x82\xb1\x82\xf1\x82\xc9\x82\xbf\x82\xcd</p></body></html>\n",
    );
    out
}

/// `/koi8`: KOI8-R bytes, declared by `<meta http-equiv="Content-Type">` only.
fn koi8_page() -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(b"<!DOCTYPE html>\n<html lang=\"ru\"><head>\n<meta http-equiv=\"Content-Type\" content=\"text/html; charset=koi8-r\">\n<title>");
    // "Привет, мир"
    out.extend_from_slice(b"\xf0\xd2\xc9\xd7\xc5\xd4, \xcd\xc9\xd2");
    out.extend_from_slice(b"</title>\n<meta name=\"description\" content=\"");
    // "Новости дня"
    out.extend_from_slice(b"\xee\xcf\xd7\xcf\xd3\xd4\xc9 \xc4\xce\xd1");
    out.extend_from_slice(b"\">\n</head>\n<body><p>\xf4\xc5\xcb\xd3\xd4</p></body></html>\n");
    out
}

/// `/utf16`: UTF-16LE with a byte-order mark, no charset anywhere else.
fn utf16_page() -> Vec<u8> {
    let text = format!(
        "<!DOCTYPE html>\n<html><head><title>{UTF16_TITLE}</title></head><body><p>Hallo</p></body></html>\n"
    );
    let mut out = vec![0xFF, 0xFE];
    for unit in text.encode_utf16() {
        out.extend_from_slice(&unit.to_le_bytes());
    }
    out
}
