#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Link previews (`GET /_matrix/client/v1/media/preview_url` and the legacy
//! `/_matrix/media/{r0,v3}/preview_url`) over real HTTP on loopback, against a small fixture
//! site (`common::site`) that counts what it is asked: the OpenGraph answer and its fallbacks,
//! charsets, image URLs, oEmbed (configured providers and discovery), the stored image
//! (downloadable, thumbnailable, never offered when quarantined), the cache (one fetch per
//! URL, also when two requests race, across a restart and a replay of the log), the image's
//! history, `purge/old`, and the safety rules (every redirect hop checked against the address
//! and URL rules, redirect and size limits, the timeout, no credentials or cookies sent, the
//! per-user rate limit), plus the endpoints' errors.

use crate::common;
use common::site::{self, Site};
use common::{expect_error, parse_mxc, Opts, TestServer, ADMIN, ALICE, ALICE_OTHER, BOB};
use media_ledger::ledger::Ledger;
use media_ledger_events::{Envelope, Event, Seq};
use media_ledger_projections::names;
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

const PREVIEW: &str = "/_matrix/client/v1/media/preview_url";
const ADMIN_API: &str = "/_matrix/media/unstable/admin";

/// The fields a stored preview image adds.
const IMAGE_FIELDS: [&str; 5] = [
    "og:image",
    "og:image:type",
    "og:image:width",
    "og:image:height",
    "matrix:image:size",
];

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// A `[url_previews]` table allowing the fixture site (on 127.0.0.1) plus `lines` (keys first,
/// then any `[[url_previews.oembed_providers]]`).
fn previews_toml(lines: &str) -> String {
    format!("[url_previews]\nip_range_allowlist = [\"127.0.0.1/32\"]\n{lines}\n")
}

/// A server whose `[url_previews]` is [`previews_toml`]`(lines)`.
async fn start(lines: &str) -> TestServer {
    TestServer::start_with(Opts {
        extra_toml: previews_toml(lines),
        ..Opts::default()
    })
    .await
}

/// `GET {endpoint}?url=…` with `token`, the raw response.
async fn preview_at(
    srv: &TestServer,
    endpoint: &str,
    token: Option<&str>,
    url: &str,
) -> reqwest::Response {
    let mut req = srv.client.get(srv.url(endpoint)).query(&[("url", url)]);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    req.send().await.unwrap()
}

/// The client endpoint as `token`, raw.
async fn preview_raw(srv: &TestServer, token: &str, url: &str) -> reqwest::Response {
    preview_at(srv, PREVIEW, Some(token), url).await
}

/// The preview of `url` as `token`, asserting 200 and a JSON object.
async fn preview_as(srv: &TestServer, token: &str, url: &str) -> Value {
    json_object(preview_raw(srv, token, url).await).await
}

/// The preview of `url` as alice.
async fn preview(srv: &TestServer, url: &str) -> Value {
    preview_as(srv, ALICE, url).await
}

/// The JSON object of a 200 answer (panics with the body otherwise).
async fn json_object(resp: reqwest::Response) -> Value {
    let status = resp.status();
    let url = resp.url().clone();
    let text = resp.text().await.unwrap();
    assert_eq!(status, StatusCode::OK, "{url}: {text}");
    let v: Value =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{url}: not JSON ({e}): {text}"));
    assert!(v.is_object(), "{url}: not a JSON object: {text}");
    v
}

/// The `og:image` of a preview: an mxc URI of the requesting homeserver.
fn image_mxc(og: &Value) -> String {
    let mxc = og["og:image"]
        .as_str()
        .unwrap_or_else(|| panic!("no og:image in {og}"));
    assert!(
        mxc.starts_with("mxc://localhost/") && mxc.len() > "mxc://localhost/".len(),
        "og:image is not a media of localhost: {og}"
    );
    mxc.to_owned()
}

/// Asserts the preview offers no image.
fn assert_no_image(og: &Value) {
    for f in IMAGE_FIELDS {
        assert!(og.get(f).is_none(), "{f} offered: {og}");
    }
}

/// Asserts the image fields of `og` describe `bytes` (`ty`, `w`×`h`).
fn assert_image(og: &Value, ty: &str, w: u32, h: u32, bytes: &[u8]) {
    image_mxc(og);
    assert_eq!(og["og:image:type"], ty, "{og}");
    assert_eq!(og["og:image:width"], json!(w), "{og}");
    assert_eq!(og["og:image:height"], json!(h), "{og}");
    assert_eq!(og["matrix:image:size"], json!(bytes.len()), "{og}");
}

/// The keys of a preview.
fn keys(og: &Value) -> BTreeSet<String> {
    og.as_object().unwrap().keys().cloned().collect()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

/// `GET /_matrix/client/v1/media/download/{server}/{id}` as alice.
async fn download(srv: &TestServer, mxc: &str) -> reqwest::Response {
    let (server, id) = parse_mxc(mxc);
    srv.client
        .get(srv.url(&format!("/_matrix/client/v1/media/download/{server}/{id}")))
        .bearer_auth(ALICE)
        .send()
        .await
        .unwrap()
}

/// Downloads `mxc`, asserting 200; its bytes.
async fn download_bytes(srv: &TestServer, mxc: &str) -> Vec<u8> {
    let resp = download(srv, mxc).await;
    let status = resp.status();
    let bytes = resp.bytes().await.unwrap().to_vec();
    assert_eq!(
        status,
        StatusCode::OK,
        "download of {mxc}: {}",
        String::from_utf8_lossy(&bytes)
    );
    bytes
}

/// `POST {ADMIN_API}/{path}` as the repository admin, asserting 200; the JSON answer.
async fn admin_post(srv: &TestServer, path: &str) -> Value {
    let resp = srv
        .client
        .post(srv.url(&format!("{ADMIN_API}/{path}")))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    json_object(resp).await
}

/// Quarantines `mxc` as the repository admin.
async fn quarantine(srv: &TestServer, mxc: &str) {
    let (server, id) = parse_mxc(mxc);
    admin_post(srv, &format!("quarantine/{server}/{id}")).await;
}

/// Every event of the running server's ledger.
fn ledger_events(srv: &TestServer) -> Vec<Envelope> {
    let mut out = Vec::new();
    srv.server()
        .ledger
        .events(Seq(1), Seq(u64::MAX), |e| {
            out.push(e);
            true
        })
        .unwrap();
    out
}

fn now_ms() -> u64 {
    u64::try_from(chrono::Utc::now().timestamp_millis()).unwrap()
}

/// The `/og` preview every fixture test expects (the image fields checked apart).
fn expected_og(site: &Site, og: &Value) -> Value {
    json!({
        "og:title": site::OG_TITLE,
        "og:description": site::OG_DESCRIPTION,
        "og:site_name": site::OG_SITE_NAME,
        "og:type": "article",
        "og:url": site.url("/og"),
        "og:custom:thing": site::OG_CUSTOM,
        "og:image": og["og:image"].clone(),
        "og:image:type": "image/png",
        "og:image:width": 64,
        "og:image:height": 48,
        "matrix:image:size": site::red_png().len(),
    })
}

// ---------------------------------------------------------------------------------------------
// What a preview says
// ---------------------------------------------------------------------------------------------

/// Every `og:` property of the page passes through (a custom one too); the image is the
/// page's relative `og:image`, stored and measured (the page's own `og:image:width`/`type`
/// are not believed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn og_page_previews_every_og_property_and_its_measured_image() {
    let site = Site::start().await;
    let mut srv = start("").await;
    let og = preview(&srv, &site.url("/og")).await;
    assert_eq!(og, expected_og(&site, &og));
    image_mxc(&og);
    assert_eq!(site.hits("/og"), 1);
    assert_eq!(site.hits("/img/red.png"), 1);
    // Only the og:image is fetched, not the other images of the page.
    assert_eq!(site.hits("/img/photo.jpg"), 0);
    srv.stop().await;
}

/// `Content-Type: text/html; charset=UTF-8` (what most sites send) is a page like plain
/// `text/html`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn page_typed_with_a_charset_parameter_is_previewed_as_a_page() {
    let site = Site::start().await;
    let mut srv = start("").await;
    let og = preview(&srv, &site.url("/og-utf8")).await;
    assert_eq!(og, expected_og(&site, &og));
    image_mxc(&og);
    assert_eq!(site.hits("/og-utf8"), 1);
    srv.stop().await;
}

/// A page without OpenGraph: `<title>` → og:title, `<meta name="description">` →
/// og:description, the largest `<img>` with sizes over 10 → the image; without sizes, the
/// first `<img>`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn page_without_og_falls_back_to_title_description_and_largest_image() {
    let site = Site::start().await;
    let mut srv = start("").await;
    let og = preview(&srv, &site.url("/plain")).await;
    assert_eq!(og["og:title"], site::PLAIN_TITLE, "{og}");
    assert_eq!(og["og:description"], site::PLAIN_DESCRIPTION, "{og}");
    assert_image(&og, "image/jpeg", 200, 100, site::photo_jpeg());
    assert_eq!(
        keys(&og),
        set(&[
            "og:title",
            "og:description",
            "og:image",
            "og:image:type",
            "og:image:width",
            "og:image:height",
            "matrix:image:size",
        ]),
        "{og}"
    );
    assert_eq!(site.hits("/img/photo.jpg"), 1);
    assert_eq!(site.hits("/img/red.png"), 0);
    assert_eq!(site.hits("/img/spacer.gif"), 0);

    let og = preview(&srv, &site.url("/plain-nosize")).await;
    assert_eq!(og["og:title"], "No Sizes Here", "{og}");
    assert_image(&og, "image/png", 64, 48, site::red_png());
    assert_eq!(
        site.hits("/img/photo.jpg"),
        1,
        "the second image was fetched"
    );
    srv.stop().await;
}

/// windows-1252 bytes (€, curly quotes and a dash in 0x80–0x9F) with the charset in the
/// `Content-Type` header come out as the right Unicode.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn windows_1252_page_is_decoded_by_its_header_charset() {
    let site = Site::start().await;
    let mut srv = start("").await;
    let og = preview(&srv, &site.url("/cp1252")).await;
    assert_eq!(og["og:title"], site::CP1252_TITLE, "{og}");
    assert_eq!(og["og:description"], "Crème brûlée – „quoted“", "{og}");
    srv.stop().await;
}

/// Shift_JIS bytes declared only by `<meta charset="shift_jis">`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shift_jis_page_is_decoded_by_its_meta_charset() {
    let site = Site::start().await;
    let mut srv = start("").await;
    let og = preview(&srv, &site.url("/sjis")).await;
    assert_eq!(og["og:title"], site::SJIS_TITLE, "{og}");
    assert_eq!(og["og:description"], site::SJIS_DESCRIPTION, "{og}");
    srv.stop().await;
}

/// KOI8-R bytes declared only by `<meta http-equiv="Content-Type" content="…charset=koi8-r">`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn koi8_r_page_is_decoded_by_its_http_equiv() {
    let site = Site::start().await;
    let mut srv = start("").await;
    let og = preview(&srv, &site.url("/koi8")).await;
    assert_eq!(og["og:title"], site::KOI8_TITLE, "{og}");
    assert_eq!(og["og:description"], site::KOI8_DESCRIPTION, "{og}");
    srv.stop().await;
}

/// UTF-16LE bytes announced by nothing but their byte-order mark.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn utf16_page_is_decoded_by_its_byte_order_mark() {
    let site = Site::start().await;
    let mut srv = start("").await;
    let og = preview(&srv, &site.url("/utf16")).await;
    assert_eq!(og["og:title"], site::UTF16_TITLE, "{og}");
    srv.stop().await;
}

/// A URL answering `image/*` previews as that image: the image fields and nothing else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_url_previews_as_the_image_alone() {
    let site = Site::start().await;
    let mut srv = start("").await;
    let og = preview(&srv, &site.url("/img/photo.jpg")).await;
    assert_eq!(keys(&og), set(&IMAGE_FIELDS), "{og}");
    assert_image(&og, "image/jpeg", 200, 100, site::photo_jpeg());
    assert_eq!(
        download_bytes(&srv, &image_mxc(&og)).await,
        site::photo_jpeg()
    );
    assert_eq!(site.hits("/img/photo.jpg"), 1);
    srv.stop().await;
}

/// The `[[url_previews.oembed_providers]]` TOML of a provider at the site.
fn provider_toml(site: &Site) -> String {
    format!(
        "[[url_previews.oembed_providers]]\nendpoint = \"{}\"\nschemes = [\"{}\"]\n",
        site.url("/oembed"),
        site.url("/video/*")
    )
}

/// A URL of a configured provider is previewed from `endpoint?url=<url>&format=json`, not
/// from the page: a video's title, provider name and thumbnail (as the image).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configured_oembed_provider_previews_a_video_with_its_thumbnail() {
    let site = Site::start().await;
    let mut srv = start(&provider_toml(&site)).await;
    let url = site.url("/video/1");
    let og = preview(&srv, &url).await;
    assert_eq!(og["og:title"], site::VIDEO_TITLE, "{og}");
    assert_eq!(og["og:site_name"], site::PROVIDER_NAME, "{og}");
    assert_eq!(
        og["og:url"],
        url.as_str(),
        "og:url is the previewed URL: {og}"
    );
    assert_image(&og, "image/jpeg", 200, 100, site::photo_jpeg());
    assert_eq!(site.hits("/video/1"), 0, "the page itself was fetched");
    assert_eq!(site.hits("/oembed"), 1);
    let asked = site.last_uri("/oembed").unwrap();
    let query: Vec<(String, String)> =
        serde_urlencoded::from_str(asked.split_once('?').unwrap().1).unwrap();
    assert!(query.contains(&("url".into(), url.clone())), "{asked}");
    assert!(query.contains(&("format".into(), "json".into())), "{asked}");
    srv.stop().await;
}

/// A `photo` oEmbed answer: its `url` is the image; a `link` answer: its `thumbnail_url`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configured_oembed_provider_takes_a_photos_url_and_a_links_thumbnail() {
    let site = Site::start().await;
    let mut srv = start(&provider_toml(&site)).await;
    let og = preview(&srv, &site.url("/video/2")).await;
    assert_eq!(og["og:title"], site::PHOTO_TITLE, "{og}");
    assert_eq!(og["og:site_name"], site::PROVIDER_NAME, "{og}");
    assert_image(&og, "image/png", 64, 48, site::red_png());
    assert_eq!(download_bytes(&srv, &image_mxc(&og)).await, site::red_png());

    let og = preview(&srv, &site.url("/video/3")).await;
    assert_eq!(og["og:title"], site::LINK_TITLE, "{og}");
    assert_eq!(og["og:site_name"], site::PROVIDER_NAME, "{og}");
    assert_image(&og, "image/png", 64, 48, site::red_png());

    assert_eq!(site.hits("/video/2") + site.hits("/video/3"), 0);
    assert_eq!(site.hits("/oembed"), 2);
    assert_eq!(site.hits("/img/red.png"), 2);
    srv.stop().await;
}

/// A page linking an oEmbed representation (`<link rel="alternate"
/// type="application/json+oembed">`) has that answer merged in: an app shell that says nothing
/// itself is previewed from it (title, provider as site name, the thumbnail as image), with
/// the previewed URL as `og:url`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oembed_discovery_link_is_fetched_and_merged_in() {
    let site = Site::start().await;
    let mut srv = start("").await;
    let url = site.url("/discover-app");
    let og = preview(&srv, &url).await;
    assert_eq!(og["og:title"], site::APP_TITLE, "{og}");
    assert_eq!(og["og:site_name"], site::DISCOVERED_PROVIDER, "{og}");
    assert_eq!(
        og["og:url"],
        url.as_str(),
        "og:url is the previewed URL: {og}"
    );
    assert_image(&og, "image/jpeg", 200, 100, site::photo_jpeg());
    assert_eq!(site.hits("/discover-app"), 1);
    assert_eq!(site.hits("/oembed"), 1);
    let asked = site.last_uri("/oembed").unwrap();
    assert!(asked.contains("discover-app"), "{asked}");
    srv.stop().await;
}

/// Where the page and its discovered oEmbed answer disagree, the page's own values win (title,
/// site name, its `og:image` over the oEmbed thumbnail), as on Synapse: oEmbed only fills what
/// the page does not say.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oembed_discovery_fills_gaps_but_the_pages_own_values_win() {
    let site = Site::start().await;
    let mut srv = start("").await;
    let url = site.url("/discover");
    let og = preview(&srv, &url).await;
    assert_eq!(og["og:title"], "The page's own title", "{og}");
    assert_eq!(og["og:site_name"], "The page's own site name", "{og}");
    assert_eq!(og["og:description"], "The page's own description.", "{og}");
    assert_image(&og, "image/png", 64, 48, site::red_png());
    assert_eq!(site.hits("/discover"), 1);
    assert_eq!(site.hits("/oembed"), 1, "the discovery link was followed");
    assert_eq!(
        site.hits("/img/photo.jpg"),
        0,
        "the oEmbed thumbnail was fetched although the page has an image"
    );
    srv.stop().await;
}

// ---------------------------------------------------------------------------------------------
// The stored image
// ---------------------------------------------------------------------------------------------

/// The image is a media of the requesting homeserver: downloadable byte for byte,
/// thumbnailable, recorded as `media.uploaded.v1` just before the `url.previewed.v1` of the
/// user who asked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preview_image_is_stored_downloadable_and_thumbnailable() {
    let site = Site::start().await;
    let mut srv = start("").await;
    let url = site.url("/og");
    let og = preview(&srv, &url).await;
    let mxc = image_mxc(&og);

    let resp = download(&srv, &mxc).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(common::header(&resp, "content-type"), "image/png");
    assert_eq!(resp.bytes().await.unwrap().as_ref(), site::red_png());

    let (server, id) = parse_mxc(&mxc);
    let resp = srv
        .client
        .get(srv.url(&format!(
            "/_matrix/client/v1/media/thumbnail/{server}/{id}?width=32&height=32&method=crop"
        )))
        .bearer_auth(ALICE)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(
        common::header(&resp, "content-type").starts_with("image/"),
        "{:?}",
        resp.headers()
    );
    let thumb = image::load_from_memory(&resp.bytes().await.unwrap()).unwrap();
    assert_eq!((thumb.width(), thumb.height()), (32, 32));

    let events = ledger_events(&srv);
    let at = events
        .iter()
        .position(|e| matches!(&e.event, Event::UrlPreviewedV1(_)))
        .expect("a url.previewed.v1");
    let Event::UrlPreviewedV1(p) = &events[at].event else {
        unreachable!()
    };
    assert_eq!(p.url, url);
    assert_eq!(p.homeserver.as_str(), "localhost");
    assert_eq!(p.image.as_ref().map(ToString::to_string), Some(mxc.clone()));
    assert_eq!(events[at].actor.to_string(), "@alice:localhost");
    let stored: Value = serde_json::from_str(&p.og).unwrap();
    assert_eq!(stored, og, "the event records the answer");
    let Event::MediaUploadedV1(u) = &events[at - 1].event else {
        panic!("the event before the preview is {:?}", events[at - 1].event)
    };
    assert_eq!(u.media.to_string(), mxc);
    assert_eq!(u.size_bytes, site::red_png().len() as u64);
    assert_eq!(events[at - 1].actor.to_string(), "@alice:localhost");
    srv.stop().await;
}

/// Bytes quarantined before the preview: the preview comes back without any image field.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quarantined_image_bytes_are_never_offered_in_a_new_preview() {
    let site = Site::start().await;
    let mut srv = start("").await;
    let earlier = srv
        .upload(
            ALICE,
            site::quarantined_png().to_vec(),
            Some("image/png"),
            None,
        )
        .await;
    quarantine(&srv, &earlier).await;

    let og = preview(&srv, &site.url("/quarantined-image-page")).await;
    assert_eq!(og["og:title"], "Page With A Bad Image", "{og}");
    assert_eq!(
        og["og:description"], "The image of this page is quarantined.",
        "{og}"
    );
    assert_no_image(&og);
    let recorded: Vec<_> = ledger_events(&srv)
        .into_iter()
        .filter_map(|e| match e.event {
            Event::UrlPreviewedV1(p) => Some(p),
            _ => None,
        })
        .collect();
    assert_eq!(recorded.len(), 1);
    assert_eq!(recorded[0].image, None, "{:?}", recorded[0]);
    srv.stop().await;
}

/// The stored image quarantined after the preview was cached: the cached preview is served
/// (no new fetch) without its image fields, and a new preview using the same bytes offers
/// none either.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_quarantined_after_caching_is_left_out_of_the_cached_preview() {
    let site = Site::start().await;
    let mut srv = start("").await;
    let og = preview(&srv, &site.url("/og")).await;
    let mxc = image_mxc(&og);
    quarantine(&srv, &mxc).await;

    let again = preview(&srv, &site.url("/og")).await;
    assert_no_image(&again);
    let mut without = og.clone();
    for f in IMAGE_FIELDS {
        without.as_object_mut().unwrap().remove(f);
    }
    assert_eq!(
        again, without,
        "the rest of the cached preview is unchanged"
    );
    assert_eq!(site.hits("/og"), 1, "served from the cache");

    // /plain-nosize shows the same (now quarantined) red.png.
    let other = preview(&srv, &site.url("/plain-nosize")).await;
    assert_eq!(other["og:title"], "No Sizes Here", "{other}");
    assert_no_image(&other);
    srv.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Cache
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_url_twice_fetches_the_page_once() {
    let site = Site::start().await;
    let mut srv = start("").await;
    let first = preview(&srv, &site.url("/og")).await;
    let second = preview_as(&srv, BOB, &site.url("/og")).await;
    assert_eq!(first, second);
    assert_eq!(site.hits("/og"), 1);
    assert_eq!(site.hits("/img/red.png"), 1);
    let previewed = ledger_events(&srv)
        .iter()
        .filter(|e| matches!(e.event, Event::UrlPreviewedV1(_)))
        .count();
    assert_eq!(previewed, 1, "one url.previewed.v1");
    srv.stop().await;
}

/// A preview older than `cache_ttl_ms` is fetched again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preview_older_than_cache_ttl_is_fetched_again() {
    let site = Site::start().await;
    let mut srv = start("cache_ttl_ms = 300").await;
    let first = preview(&srv, &site.url("/og")).await;
    assert_eq!(site.hits("/og"), 1);
    let deadline = Instant::now() + Duration::from_secs(10);
    let again = loop {
        let og = preview(&srv, &site.url("/og")).await;
        if site.hits("/og") == 2 {
            break og;
        }
        assert!(Instant::now() < deadline, "never fetched again");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(again, expected_og(&site, &again));
    assert_ne!(again["og:image"], first["og:image"], "a new image stored");
    srv.stop().await;
}

/// The image is a media of the homeserver of the user who asked: a user of `other.test` gets
/// an `mxc://other.test/…` image, downloadable there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preview_image_is_media_of_the_requesting_homeserver() {
    const OTHER: &str = "other.test";
    let site = Site::start().await;
    let mut srv = TestServer::start_with(Opts {
        homeservers: Some(format!(
            "[[homeservers]]\nname = \"localhost\"\ndefault = true\n\n\
             [[homeservers]]\nname = \"{OTHER}\"\n"
        )),
        extra_toml: previews_toml(""),
        ..Opts::default()
    })
    .await;
    let local = preview(&srv, &site.url("/og")).await;
    image_mxc(&local);
    let resp = srv
        .client
        .get(srv.url(PREVIEW))
        .query(&[("url", site.url("/og"))])
        .header(reqwest::header::HOST, OTHER)
        .bearer_auth(ALICE_OTHER)
        .send()
        .await
        .unwrap();
    let og = json_object(resp).await;
    let mxc = og["og:image"].as_str().unwrap_or_else(|| panic!("{og}"));
    assert!(mxc.starts_with("mxc://other.test/"), "{og}");
    assert_eq!(og["og:title"], site::OG_TITLE, "{og}");
    let (server, id) = parse_mxc(mxc);
    let resp = srv
        .client
        .get(srv.url(&format!("/_matrix/client/v1/media/download/{server}/{id}")))
        .header(reqwest::header::HOST, OTHER)
        .bearer_auth(ALICE_OTHER)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.bytes().await.unwrap().as_ref(), site::red_png());
    srv.stop().await;
}

/// Two requests racing for a page the site answers after 300 ms: one fetch, one answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_previews_of_one_url_fetch_the_page_once() {
    let site = Site::start().await;
    let mut srv = start("").await;
    let url = site.url("/slow-og");
    let (a, b) = tokio::join!(preview_as(&srv, ALICE, &url), preview_as(&srv, BOB, &url));
    assert_eq!(a, b);
    assert_eq!(a["og:title"], site::OG_TITLE, "{a}");
    image_mxc(&a);
    assert_eq!(site.hits("/slow-og"), 1);
    assert_eq!(site.hits("/img/red.png"), 1);
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cached_preview_survives_a_restart_without_a_fetch() {
    let site = Site::start().await;
    let mut srv = start("").await;
    let first = preview(&srv, &site.url("/og")).await;
    srv.restart().await;
    let again = preview(&srv, &site.url("/og")).await;
    assert_eq!(again, first);
    assert_eq!(site.hits("/og"), 1);
    assert_eq!(
        download_bytes(&srv, &image_mxc(&again)).await,
        site::red_png()
    );
    srv.stop().await;
}

/// The `url_previews` projection wiped, then rebuilt from the log (`Ledger::open_rebuilt`,
/// what `media-ledger replay` runs): the preview is served from it without a fetch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cached_preview_is_rebuilt_by_a_replay_without_a_fetch() {
    let site = Site::start().await;
    let mut srv = start("").await;
    let first = preview(&srv, &site.url("/og")).await;
    srv.stop().await;

    let db = srv.db_path();
    {
        let cfs = rocksdb::DB::list_cf(&rocksdb::Options::default(), &db).unwrap();
        let rdb = rocksdb::DB::open_cf(&rocksdb::Options::default(), &db, &cfs).unwrap();
        let cf = rdb.cf_handle(names::URL_PREVIEWS.as_str()).unwrap();
        let keys: Vec<Box<[u8]>> = rdb
            .iterator_cf(cf, rocksdb::IteratorMode::Start)
            .map(|kv| kv.unwrap().0)
            .collect();
        assert!(!keys.is_empty(), "the projection holds the preview");
        for k in keys {
            rdb.delete_cf(cf, k).unwrap();
        }
    }
    let (_, divergence) = Ledger::verify_path(&db).unwrap();
    assert!(divergence.is_some(), "the wipe is seen");
    let rebuilt_db = db.clone();
    let report = tokio::task::spawn_blocking(move || {
        let (ledger, report) = Ledger::open_rebuilt(&rebuilt_db, &mut |_, _| {}).unwrap();
        ledger.shutdown();
        report
    })
    .await
    .unwrap();
    assert!(report.events > 0);
    let (_, divergence) = Ledger::verify_path(&db).unwrap();
    assert_eq!(divergence, None, "projections equal a replay");

    srv.restart().await;
    let again = preview(&srv, &site.url("/og")).await;
    assert_eq!(again, first);
    assert_eq!(site.hits("/og"), 1, "fetched again after the replay");
    srv.stop().await;
}

/// The image's history (admin API) names the preview that stored it, after its upload.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preview_image_history_shows_the_preview() {
    let site = Site::start().await;
    let mut srv = start("").await;
    let og = preview(&srv, &site.url("/og")).await;
    let mxc = image_mxc(&og);
    let (server, id) = parse_mxc(&mxc);
    let resp = srv
        .client
        .get(srv.url(&format!("{ADMIN_API}/media/{server}/{id}/history")))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    let h = json_object(resp).await;
    assert_eq!(h["media"], mxc.as_str(), "{h}");
    assert_eq!(h["state"]["exists"], true, "{h}");
    let events = h["events"].as_array().unwrap_or_else(|| panic!("{h}"));
    let types: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    let uploaded = types.iter().position(|t| *t == "media.uploaded.v1");
    let previewed = types.iter().position(|t| *t == "url.previewed.v1");
    assert!(
        matches!((uploaded, previewed), (Some(u), Some(p)) if u < p),
        "history types {types:?}"
    );
    let p = &events[previewed.unwrap()];
    assert_eq!(p["actor"], "@alice:localhost", "{p}");
    assert_eq!(p["affected"], json!([mxc]), "{p}");
    srv.stop().await;
}

/// `purge/old` (without `include_local`) expires previews fetched before `before_ts` (the next
/// request fetches the page again) and purges their images; other local media stay, and a
/// cut-off before the fetch leaves the preview alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purge_old_expires_previews_and_purges_their_images() {
    let site = Site::start().await;
    let mut srv = start("").await;
    let kept = srv.upload_bytes(common::random_bytes(1000)).await;
    let before_preview = now_ms() - 1;
    let og = preview(&srv, &site.url("/og")).await;
    let old = image_mxc(&og);

    // A cut-off before the preview was fetched: nothing expires, nothing is purged.
    let v = admin_post(&srv, &format!("purge/old?before_ts={before_preview}")).await;
    assert_eq!(v["affected"], json!([]), "{v}");
    assert_eq!(preview(&srv, &site.url("/og")).await, og);
    assert_eq!(site.hits("/og"), 1);
    assert_eq!(download_bytes(&srv, &old).await, site::red_png());

    let v = admin_post(&srv, &format!("purge/old?before_ts={}", now_ms() + 1000)).await;
    assert_eq!(v["purged"], true, "{v}");
    let affected: Vec<&str> = v["affected"]
        .as_array()
        .unwrap_or_else(|| panic!("{v}"))
        .iter()
        .map(|m| m.as_str().unwrap())
        .collect();
    assert_eq!(affected, vec![old.as_str()], "{v}");
    expect_error(
        download(&srv, &old).await,
        StatusCode::NOT_FOUND,
        "M_NOT_FOUND",
    )
    .await;
    srv.download_bytes(&kept).await;

    let again = preview(&srv, &site.url("/og")).await;
    assert_eq!(
        site.hits("/og"),
        2,
        "the expired preview was not fetched again"
    );
    assert_eq!(site.hits("/img/red.png"), 2);
    let new = image_mxc(&again);
    assert_ne!(new, old);
    assert_eq!(again, expected_og(&site, &again));
    assert_eq!(download_bytes(&srv, &new).await, site::red_png());
    srv.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Safety
// ---------------------------------------------------------------------------------------------

/// 302 → 302 → 302 → the OG page: the final page's preview, each hop asked once; the
/// preview is cached under the URL asked for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirect_chain_is_followed_to_the_final_page() {
    let site = Site::start().await;
    let mut srv = start("").await;
    let og = preview(&srv, &site.url("/redirect/3")).await;
    assert_eq!(og, expected_og(&site, &og));
    for p in ["/redirect/3", "/redirect/2", "/redirect/1", "/og"] {
        assert_eq!(site.hits(p), 1, "{p}");
    }
    assert_eq!(preview(&srv, &site.url("/redirect/3")).await, og);
    assert_eq!(site.hits("/redirect/3"), 1, "served from the cache");
    srv.stop().await;
}

/// A redirect to a private, link-local or unspecified address, or to loopback outside the
/// allowlist: 403, the target never asked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirect_to_a_private_address_is_forbidden() {
    let site = Site::start().await;
    let mut srv = start("rate_limit_burst = 100").await;
    let port = site.port;
    let targets = [
        "http://10.0.0.1/".to_owned(),
        "http://169.254.169.254/latest/meta-data/".to_owned(),
        format!("http://[::1]:{port}/og"),
        format!("http://0.0.0.0:{port}/og"),
        format!("http://[::ffff:10.0.0.1]:{port}/og"),
    ];
    for (i, to) in targets.iter().enumerate() {
        let from = format!(
            "{}?{}",
            site.url("/redirect-to"),
            serde_urlencoded::to_string([("to", to.as_str())]).unwrap()
        );
        let started = Instant::now();
        let resp = preview_raw(&srv, ALICE, &from).await;
        expect_error(resp, StatusCode::FORBIDDEN, "M_FORBIDDEN").await;
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{to}: refused only after {:?}",
            started.elapsed()
        );
        assert_eq!(site.hits("/redirect-to"), i + 1, "{to}");
    }
    assert_eq!(site.hits("/og"), 0);
    srv.stop().await;
}

/// URLs naming private, reserved, link-local, IPv6 transition or unspecified addresses (and
/// loopback outside the allowlisted 127.0.0.1/32): 403 at once, no connection made.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_and_reserved_addresses_are_forbidden_before_any_connection() {
    let site = Site::start().await;
    let mut srv = start("rate_limit_burst = 100\nconnect_timeout_ms = 10000").await;
    let port = site.port;
    let urls = [
        "http://10.0.0.1/".to_owned(),
        "http://192.168.1.1/admin".to_owned(),
        "http://172.16.0.1/".to_owned(),
        "http://100.64.0.1/".to_owned(),
        "http://169.254.169.254/latest/meta-data/".to_owned(),
        "http://0x0a000001/".to_owned(),
        "http://224.0.0.1/".to_owned(),
        "http://255.255.255.255/".to_owned(),
        format!("http://0.0.0.0:{port}/og"),
        format!("http://127.0.0.2:{port}/og"),
        "http://[::1]:1/".to_owned(),
        format!("http://[::1]:{port}/og"),
        "http://[::ffff:10.0.0.1]/".to_owned(),
        format!("http://[::ffff:127.0.0.2]:{port}/og"),
        "http://[64:ff9b::a00:1]/".to_owned(),
        "http://[2002:a00:1::]/".to_owned(),
        "http://[fe80::1]/".to_owned(),
        "http://[fc00::1]/".to_owned(),
        "https://10.0.0.1/".to_owned(),
    ];
    for url in &urls {
        let started = Instant::now();
        let resp = preview_raw(&srv, ALICE, url).await;
        expect_error(resp, StatusCode::FORBIDDEN, "M_FORBIDDEN").await;
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{url}: refused only after {:?}",
            started.elapsed()
        );
    }
    assert_eq!(site.total_hits(), 0);
    // The allowlisted address itself works.
    preview(&srv, &site.url("/og")).await;
    srv.stop().await;
}

/// Loopback is refused unless allowlisted, and the blocklist wins over the allowlist: the
/// site is never asked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loopback_is_forbidden_unless_allowlisted_and_not_blocklisted() {
    let site = Site::start().await;
    let mut plain = TestServer::start().await;
    let resp = preview_raw(&plain, ALICE, &site.url("/og")).await;
    expect_error(resp, StatusCode::FORBIDDEN, "M_FORBIDDEN").await;
    plain.stop().await;

    let mut blocked = start("ip_range_blocklist = [\"127.0.0.0/8\"]").await;
    let resp = preview_raw(&blocked, ALICE, &site.url("/og")).await;
    expect_error(resp, StatusCode::FORBIDDEN, "M_FORBIDDEN").await;
    blocked.stop().await;
    assert_eq!(site.total_hits(), 0);
}

/// `url_blocklist`: a glob rule (netloc and path) and a regex rule (path, `^…`) refuse the
/// URLs matching every part of a rule, with no request, also as a redirect target; a URL
/// matching only some parts of a rule is previewed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn url_blocklist_glob_and_regex_rules_refuse_without_a_request() {
    let site = Site::start().await;
    let mut srv = start(
        "url_blocklist = [\n\
         { netloc = \"127.0.0.1:*\", path = \"/secret/*\" },\n\
         { path = \"^/private/[0-9]+\" },\n\
         { scheme = \"https\", path = \"/og\" },\n\
         ]",
    )
    .await;
    for blocked in [
        "/secret/page",
        "/secret/a/b",
        "/private/123",
        "/private/42x",
    ] {
        let resp = preview_raw(&srv, ALICE, &site.url(blocked)).await;
        expect_error(resp, StatusCode::FORBIDDEN, "M_FORBIDDEN").await;
        assert_eq!(site.hits(blocked), 0, "{blocked} was asked");
    }
    // A redirect into a blocked URL.
    let from = format!(
        "{}?{}",
        site.url("/redirect-to"),
        serde_urlencoded::to_string([("to", site.url("/secret/page"))]).unwrap()
    );
    let resp = preview_raw(&srv, ALICE, &from).await;
    expect_error(resp, StatusCode::FORBIDDEN, "M_FORBIDDEN").await;
    assert_eq!(site.hits("/redirect-to"), 1);
    assert_eq!(site.hits("/secret/page"), 0);
    // Not every part matches: previewed.
    for allowed in ["/secret", "/private/abc", "/og"] {
        let og = preview(&srv, &site.url(allowed)).await;
        assert!(og["og:title"].is_string(), "{allowed}: {og}");
        assert_eq!(site.hits(allowed), 1, "{allowed}");
    }
    srv.stop().await;
}

/// Rules on `username` and `fragment` see the URL as the client gave it (Synapse's
/// `url_preview_url_blacklist` semantics), although neither is ever sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn url_blocklist_rules_see_the_credentials_and_fragment_as_given() {
    let site = Site::start().await;
    let mut srv = start(
        "url_blocklist = [\n\
         { username = \"mallory\" },\n\
         { fragment = \"block-me\" },\n\
         ]",
    )
    .await;
    let port = site.port;
    for url in [
        format!("http://mallory:pw@127.0.0.1:{port}/og"),
        format!("http://127.0.0.1:{port}/og#block-me"),
    ] {
        let resp = preview_raw(&srv, ALICE, &url).await;
        expect_error(resp, StatusCode::FORBIDDEN, "M_FORBIDDEN").await;
    }
    assert_eq!(site.hits("/og"), 0);
    srv.stop().await;
}

/// What a page points at is fetched under the same rules as the page: an `og:image` matching
/// `url_blocklist` is never asked for, one at a private address and an oEmbed discovery link
/// to a private address are refused without a connection; the page's own preview is still
/// answered (without the refused image).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn page_image_and_oembed_links_obey_the_url_and_address_rules() {
    let site = Site::start().await;
    let mut srv = start(
        "connect_timeout_ms = 10000\n\
         url_blocklist = [{ path = \"/img/secret.png\" }]",
    )
    .await;
    for (path, title) in [
        ("/og-blocked-image", "Blocked Image Page"),
        ("/og-private-image", "Private Image Page"),
        ("/discover-private", "Private oEmbed Page"),
    ] {
        let started = Instant::now();
        let og = preview(&srv, &site.url(path)).await;
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{path}: answered only after {:?}",
            started.elapsed()
        );
        assert_eq!(og["og:title"], title, "{og}");
        assert_no_image(&og);
    }
    assert_eq!(site.hits("/img/secret.png"), 0);
    srv.stop().await;
}

/// More redirects than `max_redirects`: 502, the final page never asked; exactly
/// `max_redirects` is fine.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_redirects_than_max_redirects_is_a_bad_gateway() {
    let site = Site::start().await;
    let mut srv = start("max_redirects = 2").await;
    let og = preview(&srv, &site.url("/redirect/2")).await;
    assert_eq!(og["og:title"], site::OG_TITLE, "{og}");
    assert_eq!(site.hits("/og"), 1);
    let resp = preview_raw(&srv, ALICE, &site.url("/redirect/3")).await;
    expect_error(resp, StatusCode::BAD_GATEWAY, "M_UNKNOWN").await;
    assert_eq!(site.hits("/redirect/3"), 1);
    assert_eq!(site.hits("/og"), 1, "followed past max_redirects");
    srv.stop().await;
}

/// A page over `max_page_bytes`: 502 `M_TOO_LARGE`, whether it streams endlessly without a
/// `Content-Length` or declares its length.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn page_over_max_page_bytes_is_too_large() {
    let site = Site::start().await;
    let mut srv = start("max_page_bytes = 100000").await;
    for path in ["/big", "/big-declared"] {
        let started = Instant::now();
        let resp = preview_raw(&srv, ALICE, &site.url(path)).await;
        expect_error(resp, StatusCode::BAD_GATEWAY, "M_TOO_LARGE").await;
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{path}: {:?}",
            started.elapsed()
        );
        assert_eq!(site.hits(path), 1);
    }
    // The limit is the page's only: a small page still previews.
    preview(&srv, &site.url("/og")).await;
    srv.stop().await;
}

/// An image over `max_image_bytes` is left out; the page is still previewed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_over_max_image_bytes_is_left_out() {
    let site = Site::start().await;
    assert!(site::photo_jpeg().len() > 2000);
    let mut srv = start("max_image_bytes = 2000").await;
    let og = preview(&srv, &site.url("/plain")).await;
    assert_eq!(og["og:title"], site::PLAIN_TITLE, "{og}");
    assert_no_image(&og);
    srv.stop().await;
}

/// A page slower than `timeout_ms`: 502 within a few seconds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_page_times_out_with_a_bad_gateway() {
    let site = Site::start().await;
    let mut srv = start("timeout_ms = 1000").await;
    let started = Instant::now();
    let resp = preview_raw(&srv, ALICE, &site.url("/slow")).await;
    expect_error(resp, StatusCode::BAD_GATEWAY, "M_UNKNOWN").await;
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(5),
        "answered after {took:?}"
    );
    assert_eq!(site.hits("/slow"), 1);
    srv.stop().await;
}

/// A failing site (an error status, nothing listening): 502 `M_UNKNOWN`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_or_unreachable_site_is_a_bad_gateway() {
    let site = Site::start().await;
    let mut srv = start("").await;
    let resp = preview_raw(&srv, ALICE, &site.url("/no-such-page")).await;
    expect_error(resp, StatusCode::BAD_GATEWAY, "M_UNKNOWN").await;
    assert_eq!(site.hits("/no-such-page"), 1);
    let closed = common::proxy::free_port();
    let resp = preview_raw(&srv, ALICE, &format!("http://127.0.0.1:{closed}/")).await;
    expect_error(resp, StatusCode::BAD_GATEWAY, "M_UNKNOWN").await;
    srv.stop().await;
}

/// Every request (page and image) carries the configured `User-Agent` and `Accept-Language`,
/// and never an `Authorization` or `Cookie`, even for a URL with `user:pass@`; the
/// credentials are not recorded either.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_carry_the_configured_agent_and_language_and_no_credentials() {
    let site = Site::start().await;
    let ua = "FixtureBot/2.1 (+https://bot.example/about)";
    let mut srv = start(&format!(
        "user_agent = \"{ua}\"\naccept_language = [\"de-CH\", \"de;q=0.9\", \"en;q=0.5\"]"
    ))
    .await;
    let url = format!("http://alice:hunter2@127.0.0.1:{}/og", site.port);
    let og = preview(&srv, &url).await;
    assert_eq!(og["og:title"], site::OG_TITLE, "{og}");
    for path in ["/og", "/img/red.png"] {
        let h = site.last_headers(path).unwrap();
        assert_eq!(h["user-agent"], ua, "{path}");
        assert_eq!(h["accept-language"], "de-CH, de;q=0.9, en;q=0.5", "{path}");
        for never in ["authorization", "cookie", "proxy-authorization"] {
            assert!(h.get(never).is_none(), "{path} got {never}: {h:?}");
        }
    }
    for e in ledger_events(&srv) {
        let text = format!("{:?}", e.event);
        assert!(!text.contains("hunter2"), "credentials recorded: {text}");
    }
    srv.stop().await;
}

/// A cookie the site sets on a redirect hop is not sent to the next hop, nor on a later
/// preview.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cookie_set_on_a_redirect_hop_is_not_sent_back() {
    let site = Site::start().await;
    let mut srv = start("").await;
    for target in ["/plain", "/plain-nosize"] {
        let from = format!(
            "{}?{}",
            site.url("/redirect-to"),
            serde_urlencoded::to_string([("to", target)]).unwrap()
        );
        let og = preview(&srv, &from).await;
        assert!(og["og:title"].is_string(), "{og}");
        for path in [target, "/redirect-to"] {
            let h = site.last_headers(path).unwrap();
            assert!(h.get("cookie").is_none(), "{path} got a cookie: {h:?}");
        }
    }
    assert_eq!(site.hits("/redirect-to"), 2);
    srv.stop().await;
}

/// Each user may have `rate_limit_burst` cache misses, then 429 `M_LIMIT_EXCEEDED` with
/// `retry_after_ms` (the site not asked); cached previews are served and not counted; other
/// users have buckets of their own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_refuses_cache_misses_past_the_burst_but_not_cached_previews() {
    let site = Site::start().await;
    let mut srv = start("rate_limit_burst = 3\nrate_limit_per_minute = 1").await;
    let url = |n: u32| site.url(&format!("/og?n={n}"));
    for n in 1..=3 {
        preview(&srv, &url(n)).await;
    }
    assert_eq!(site.hits("/og"), 3);
    let body = expect_error(
        preview_raw(&srv, ALICE, &url(4)).await,
        StatusCode::TOO_MANY_REQUESTS,
        "M_LIMIT_EXCEEDED",
    )
    .await;
    let retry = body["retry_after_ms"]
        .as_u64()
        .unwrap_or_else(|| panic!("no retry_after_ms: {body}"));
    assert!(retry > 0 && retry <= 60_000, "{body}");
    assert_eq!(site.hits("/og"), 3, "the refused preview was fetched");

    // Cached: served, and not counted.
    for n in [1, 2, 3, 1] {
        preview(&srv, &url(n)).await;
    }
    assert_eq!(site.hits("/og"), 3);
    // Bob's bucket is his own; what he fetched is cached for alice too.
    preview_as(&srv, BOB, &url(4)).await;
    assert_eq!(site.hits("/og"), 4);
    preview(&srv, &url(4)).await;
    assert_eq!(site.hits("/og"), 4);
    expect_error(
        preview_raw(&srv, ALICE, &url(5)).await,
        StatusCode::TOO_MANY_REQUESTS,
        "M_LIMIT_EXCEEDED",
    )
    .await;
    assert_eq!(site.hits("/og"), 4);
    srv.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Endpoints and errors
// ---------------------------------------------------------------------------------------------

/// `enabled = false`: 404 `M_UNRECOGNIZED` on the client and legacy endpoints, with or
/// without a token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disabled_previews_are_unrecognized_on_every_endpoint() {
    let site = Site::start().await;
    let mut srv = start("enabled = false").await;
    for endpoint in [
        PREVIEW,
        "/_matrix/media/v3/preview_url",
        "/_matrix/media/r0/preview_url",
    ] {
        for token in [Some(ALICE), None] {
            let resp = preview_at(&srv, endpoint, token, &site.url("/og")).await;
            expect_error(resp, StatusCode::NOT_FOUND, "M_UNRECOGNIZED").await;
        }
    }
    assert_eq!(site.total_hits(), 0);
    srv.stop().await;
}

/// The legacy `/_matrix/media/{v3,r0}/preview_url` preview like the client endpoint (and
/// share its cache), and need a token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn legacy_endpoints_preview_and_need_a_token() {
    let site = Site::start().await;
    let mut srv = start("").await;
    let first = preview(&srv, &site.url("/og")).await;
    for endpoint in [
        "/_matrix/media/v3/preview_url",
        "/_matrix/media/r0/preview_url",
    ] {
        let og = json_object(preview_at(&srv, endpoint, Some(ALICE), &site.url("/og")).await).await;
        assert_eq!(og, first, "{endpoint}");
        let resp = preview_at(&srv, endpoint, None, &site.url("/og")).await;
        expect_error(resp, StatusCode::UNAUTHORIZED, "M_MISSING_TOKEN").await;
    }
    assert_eq!(site.hits("/og"), 1);
    srv.stop().await;
}

/// `downloads.allow_unauthenticated = false`: the legacy endpoints are 404 `M_NOT_FOUND`, the
/// client endpoint still previews.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn legacy_endpoints_are_not_found_without_unauthenticated_downloads() {
    let site = Site::start().await;
    let mut srv = TestServer::start_with(Opts {
        downloads_extra: "allow_unauthenticated = false".into(),
        extra_toml: previews_toml(""),
        ..Opts::default()
    })
    .await;
    for endpoint in [
        "/_matrix/media/v3/preview_url",
        "/_matrix/media/r0/preview_url",
    ] {
        for token in [Some(ALICE), None] {
            let resp = preview_at(&srv, endpoint, token, &site.url("/og")).await;
            expect_error(resp, StatusCode::NOT_FOUND, "M_NOT_FOUND").await;
        }
    }
    assert_eq!(site.total_hits(), 0);
    let og = preview(&srv, &site.url("/og")).await;
    assert_eq!(og["og:title"], site::OG_TITLE, "{og}");
    srv.stop().await;
}

/// No token: 401 `M_MISSING_TOKEN`; an unknown one: 401 `M_UNKNOWN_TOKEN`; the site is not
/// asked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preview_needs_a_valid_access_token() {
    let site = Site::start().await;
    let mut srv = start("").await;
    let resp = preview_at(&srv, PREVIEW, None, &site.url("/og")).await;
    expect_error(resp, StatusCode::UNAUTHORIZED, "M_MISSING_TOKEN").await;
    let resp = preview_at(&srv, PREVIEW, Some("no-such-token"), &site.url("/og")).await;
    expect_error(resp, StatusCode::UNAUTHORIZED, "M_UNKNOWN_TOKEN").await;
    assert_eq!(site.total_hits(), 0);
    srv.stop().await;
}

/// Missing `url` → `M_MISSING_PARAM`; a URL that is not http(s) or does not parse, or a `ts`
/// that is not an integer → `M_INVALID_PARAM`; all 400, the site never asked. An integer `ts`
/// is accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_inputs_are_refused_with_their_errcodes() {
    let site = Site::start().await;
    let mut srv = start("").await;
    let get = |query: Vec<(&'static str, String)>| {
        srv.client
            .get(srv.url(PREVIEW))
            .query(&query)
            .bearer_auth(ALICE)
            .send()
    };
    let resp = get(vec![]).await.unwrap();
    expect_error(resp, StatusCode::BAD_REQUEST, "M_MISSING_PARAM").await;
    let resp = get(vec![("ts", "1700000000000".into())]).await.unwrap();
    expect_error(resp, StatusCode::BAD_REQUEST, "M_MISSING_PARAM").await;

    for bad in [
        format!("ftp://127.0.0.1:{}/og", site.port),
        "file:///etc/passwd".to_owned(),
        "javascript:alert(1)".to_owned(),
        "mxc://localhost/abcdef".to_owned(),
        "not a url".to_owned(),
        "http://".to_owned(),
        "//127.0.0.1/og".to_owned(),
        "http://[::1/".to_owned(),
    ] {
        let resp = get(vec![("url", bad.clone())]).await.unwrap();
        let body = expect_error(resp, StatusCode::BAD_REQUEST, "M_INVALID_PARAM").await;
        assert!(body["error"].is_string(), "{bad}: {body}");
    }
    for ts in ["abc", "1.5", "-5", ""] {
        let resp = get(vec![("url", site.url("/og")), ("ts", ts.into())])
            .await
            .unwrap();
        expect_error(resp, StatusCode::BAD_REQUEST, "M_INVALID_PARAM").await;
    }
    assert_eq!(site.total_hits(), 0);

    let resp = get(vec![
        ("url", site.url("/og")),
        ("ts", "1700000000000".into()),
    ])
    .await
    .unwrap();
    let og = json_object(resp).await;
    assert_eq!(og["og:title"], site::OG_TITLE, "{og}");
    srv.stop().await;
}
