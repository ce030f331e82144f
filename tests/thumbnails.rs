#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Thumbnails over real HTTP (`GET /_matrix/media/{r0,v3}/thumbnail/…` and the authenticated
//! `/_matrix/client/v1/media/thumbnail/…`): fixture images made in memory (JPEG, PNG with
//! alpha, a tiny PNG, an animated GIF, a WebP), content types and dispositions, dimensions per
//! method, the documented size picking, originals served as their own thumbnail, one
//! generation under concurrent identical requests, parameter errors, hostile inputs (headers
//! claiming huge sizes, truncated and random data, a source above `max_source_bytes`), the
//! admin `size_estimate` figures, restarts, an S3 thumbnail datastore and transfers.

use crate::common;

use common::s3::{file_blob_path, S3Server, BUCKET};
use common::{
    count_blobs, expect_error, header, parse_mxc, random_bytes, sha256_hex, Opts, TestServer,
    ADMIN, ALICE, DS, SECRET,
};
use image::{GenericImageView, ImageFormat};
use media_ledger::config::{ThumbnailMethodConfig, ThumbnailSize};
use media_ledger::ledger::Ledger;
use media_ledger::thumbnail::pick_size;
use media_ledger_events::{Event, Seq, ThumbnailGenerated, ThumbnailMethod};
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::io::Cursor;
use std::path::Path;
use std::time::{Duration, Instant};

const ADMIN_API: &str = "/_matrix/media/unstable/admin";
/// How long a refusal of a hostile image may take.
const QUICK: Duration = Duration::from_secs(5);

// ---------------------------------------------------------------------------------------------
// Fixture images, made in memory.

/// A `w`×`h` JPEG with a gradient (`seed` shifts it, so different seeds give different bytes).
fn jpeg_gradient(w: u32, h: u32, seed: u32) -> Vec<u8> {
    let img = image::RgbImage::from_fn(w, h, |x, y| {
        image::Rgb([
            (x * 255 / w) as u8,
            (y * 255 / h) as u8,
            ((x + y + seed * 37) % 256) as u8,
        ])
    });
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 85)
        .encode_image(&img)
        .unwrap();
    out
}

/// A `w`×`h` RGBA PNG whose alpha runs from transparent (left) to opaque (right).
fn png_alpha(w: u32, h: u32) -> Vec<u8> {
    let img = image::RgbaImage::from_fn(w, h, |x, y| {
        image::Rgba([
            (y * 255 / h) as u8,
            100,
            (x * 255 / w) as u8,
            (x * 255 / w) as u8,
        ])
    });
    encode(image::DynamicImage::ImageRgba8(img), ImageFormat::Png)
}

/// A small opaque RGB PNG.
fn png_small(w: u32, h: u32) -> Vec<u8> {
    let img =
        image::RgbImage::from_fn(w, h, |x, y| image::Rgb([(x * 12) as u8, (y * 12) as u8, 7]));
    encode(image::DynamicImage::ImageRgb8(img), ImageFormat::Png)
}

/// A lossless WebP with a gradient.
fn webp(w: u32, h: u32) -> Vec<u8> {
    let img = image::RgbImage::from_fn(w, h, |x, y| {
        image::Rgb([(x % 256) as u8, (y % 256) as u8, ((x * y) % 256) as u8])
    });
    encode(image::DynamicImage::ImageRgb8(img), ImageFormat::WebP)
}

/// The colours of the two frames of [`gif_animated`].
const GIF_FRAME_COLOURS: [[u8; 4]; 2] = [[255, 0, 0, 255], [0, 0, 255, 255]];

/// An animated `w`×`h` GIF of two frames: solid red, then solid blue (few colours, so the
/// encoder builds an exact palette instead of quantising).
fn gif_animated(w: u32, h: u32) -> Vec<u8> {
    let mut out = Vec::new();
    {
        let mut enc = image::codecs::gif::GifEncoder::new_with_speed(&mut out, 30);
        enc.set_repeat(image::codecs::gif::Repeat::Infinite)
            .unwrap();
        let frames = GIF_FRAME_COLOURS.iter().map(|c| {
            image::Frame::from_parts(
                image::RgbaImage::from_pixel(w, h, image::Rgba(*c)),
                0,
                0,
                image::Delay::from_numer_denom_ms(100, 1),
            )
        });
        enc.encode_frames(frames).unwrap();
    }
    out
}

fn encode(img: image::DynamicImage, format: ImageFormat) -> Vec<u8> {
    let mut out = Vec::new();
    img.write_to(&mut Cursor::new(&mut out), format).unwrap();
    out
}

/// CRC-32 (ISO-HDLC, as PNG chunks use it).
fn crc32(parts: &[&[u8]]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for b in parts.iter().flat_map(|p| p.iter()) {
        crc ^= u32::from(*b);
        for _ in 0..8 {
            let mask = (crc & 1).wrapping_neg();
            crc = (crc >> 1) ^ (0xEDB8_8320 & mask);
        }
    }
    !crc
}

fn png_chunk(kind: &[u8; 4], data: &[u8]) -> Vec<u8> {
    let mut c = Vec::new();
    c.extend_from_slice(&(data.len() as u32).to_be_bytes());
    c.extend_from_slice(kind);
    c.extend_from_slice(data);
    c.extend_from_slice(&crc32(&[kind, data]).to_be_bytes());
    c
}

/// A PNG whose IHDR (valid CRC) claims `w`×`h` RGBA pixels, followed by the IDAT of a tiny
/// image and IEND: a decompression-bomb header.
fn png_claiming(w: u32, h: u32) -> Vec<u8> {
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&w.to_be_bytes());
    ihdr.extend_from_slice(&h.to_be_bytes());
    ihdr.extend_from_slice(&[8, 6, 0, 0, 0]);
    // Take the IDAT of a real 1×1 image (the rest of the claimed pixels are missing).
    let tiny = png_small(1, 1);
    let idat = chunk_data(&tiny, b"IDAT").expect("a PNG has an IDAT");
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    out.extend(png_chunk(b"IHDR", &ihdr));
    out.extend(png_chunk(b"IDAT", &idat));
    out.extend(png_chunk(b"IEND", &[]));
    out
}

/// The data of the first chunk of `kind` of a PNG.
fn chunk_data(png: &[u8], kind: &[u8; 4]) -> Option<Vec<u8>> {
    let mut i = 8;
    while i + 8 <= png.len() {
        let len = u32::from_be_bytes(png[i..i + 4].try_into().unwrap()) as usize;
        if &png[i + 4..i + 8] == kind {
            return Some(png[i + 8..i + 8 + len].to_vec());
        }
        i += 12 + len;
    }
    None
}

/// A valid JPEG with its SOF0 frame header patched to claim `w`×`h`.
fn jpeg_claiming(w: u16, h: u16) -> Vec<u8> {
    let mut j = jpeg_gradient(64, 48, 0);
    let sof = j
        .windows(2)
        .position(|p| p == [0xFF, 0xC0])
        .expect("baseline JPEG has SOF0");
    // FF C0, length (2), precision (1), height (2), width (2).
    j[sof + 5..sof + 7].copy_from_slice(&h.to_be_bytes());
    j[sof + 7..sof + 9].copy_from_slice(&w.to_be_bytes());
    j
}

/// A valid GIF with its logical screen patched to claim `w`×`h`.
fn gif_claiming_screen(w: u16, h: u16) -> Vec<u8> {
    let mut g = gif_animated(8, 8);
    g[6..8].copy_from_slice(&w.to_le_bytes());
    g[8..10].copy_from_slice(&h.to_le_bytes());
    g
}

/// A valid 400×300 GIF whose first image descriptor claims a `w`×`h` frame (the screen stays
/// 400×300, larger than 320×240, so it is decoded rather than served as is).
fn gif_claiming_frame(w: u16, h: u16) -> Vec<u8> {
    let mut g = gif_animated(400, 300);
    // Image descriptor: 0x2C, left (2), top (2), width (2), height (2), flags. The first 0x2C
    // after the header, the logical screen descriptor and its colour table.
    let flags = g[10];
    let mut i = 13;
    if flags & 0x80 != 0 {
        i += 3 * (1usize << ((flags & 7) + 1));
    }
    // Skip extension blocks (0x21 label, sub-blocks).
    while g[i] == 0x21 {
        i += 2;
        while g[i] != 0 {
            i += usize::from(g[i]) + 1;
        }
        i += 1;
    }
    assert_eq!(g[i], 0x2C, "image descriptor expected");
    g[i + 5..i + 7].copy_from_slice(&w.to_le_bytes());
    g[i + 7..i + 9].copy_from_slice(&h.to_le_bytes());
    g
}

// ---------------------------------------------------------------------------------------------
// HTTP helpers.

/// `[[datastores]]` of the default file datastore followed by a `[thumbnails]` table with
/// `keys` (the datastores text is the last thing of the generated config).
fn thumbnails_opts(keys: &str) -> Opts {
    Opts {
        datastores: Some(format!(
            "[[datastores]]\nid = \"{DS}\"\ntype = \"file\"\npath = {{dir:media}}\nkinds = [\"all\"]\n\n[thumbnails]\n{keys}\n"
        )),
        ..Default::default()
    }
}

fn legacy_path(mxc: &str, query: &str) -> String {
    let (server, id) = parse_mxc(mxc);
    format!("/_matrix/media/v3/thumbnail/{server}/{id}?{query}")
}

/// The legacy route with a token the homeserver knows (which may generate; an anonymous
/// request is served only what exists).
async fn get_legacy(srv: &TestServer, mxc: &str, query: &str) -> reqwest::Response {
    srv.client
        .get(srv.url(&legacy_path(mxc, query)))
        .bearer_auth(ALICE)
        .send()
        .await
        .unwrap()
}

async fn get_authed(
    srv: &TestServer,
    token: Option<&str>,
    mxc: &str,
    query: &str,
) -> reqwest::Response {
    let (server, id) = parse_mxc(mxc);
    let mut req = srv.client.get(srv.url(&format!(
        "/_matrix/client/v1/media/thumbnail/{server}/{id}?{query}"
    )));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    req.send().await.unwrap()
}

/// A thumbnail response that was a 200.
#[derive(Debug, Clone)]
struct Thumb {
    content_type: String,
    disposition: String,
    content_length: u64,
    bytes: Vec<u8>,
}

impl Thumb {
    fn image(&self) -> image::DynamicImage {
        image::load_from_memory(&self.bytes)
            .unwrap_or_else(|e| panic!("thumbnail ({}) does not decode: {e}", self.content_type))
    }

    fn dimensions(&self) -> (u32, u32) {
        self.image().dimensions()
    }
}

async fn into_thumb(resp: reqwest::Response) -> Thumb {
    let status = resp.status();
    let url = resp.url().clone();
    if status != StatusCode::OK {
        let text = resp.text().await.unwrap();
        panic!("thumbnail {url}: {status}: {text}");
    }
    let content_type = header(&resp, "content-type").to_owned();
    let disposition = header(&resp, "content-disposition").to_owned();
    let content_length: u64 = header(&resp, "content-length").parse().unwrap();
    let bytes = resp.bytes().await.unwrap().to_vec();
    assert_eq!(
        bytes.len() as u64,
        content_length,
        "Content-Length of {url}"
    );
    Thumb {
        content_type,
        disposition,
        content_length,
        bytes,
    }
}

/// `GET` the legacy thumbnail route; asserts 200.
async fn thumb(srv: &TestServer, mxc: &str, query: &str) -> Thumb {
    into_thumb(get_legacy(srv, mxc, query).await).await
}

/// Every `thumbnail.generated.v1` of the running server, in order.
fn thumb_events(srv: &TestServer) -> Vec<ThumbnailGenerated> {
    let mut out = Vec::new();
    srv.server()
        .ledger
        .events(Seq(1), Seq(u64::MAX), |env| {
            if let Event::ThumbnailGeneratedV1(e) = env.event {
                out.push(e);
            }
            true
        })
        .unwrap();
    out
}

/// Every `thumbnail.generated.v1` of the ledger at `db` (read-only; the server may be stopped).
fn thumb_events_at(db: &Path) -> Vec<ThumbnailGenerated> {
    let mut out = Vec::new();
    Ledger::events_at(db, Seq(1), Seq(u64::MAX), |env| {
        if env.event.type_name() == "thumbnail.generated.v1" {
            if let Event::ThumbnailGeneratedV1(e) = env.event {
                out.push(e);
            }
        }
        true
    })
    .unwrap();
    out
}

/// (media, width, height, method, animated) of a recorded thumbnail.
type ThumbKey = (String, u32, u32, ThumbnailMethod, bool);
/// A configured size: (width, height, method).
type SizeKey = (u32, u32, ThumbnailMethod);

fn key_of(e: &ThumbnailGenerated) -> ThumbKey {
    (e.media.to_string(), e.width, e.height, e.method, e.animated)
}

/// Asserts no (media, size, method, animated) was recorded twice; returns the count per key.
fn assert_unique(events: &[ThumbnailGenerated]) -> BTreeMap<ThumbKey, usize> {
    let mut n = BTreeMap::new();
    for e in events {
        *n.entry(key_of(e)).or_insert(0) += 1;
    }
    let dupes: Vec<_> = n.iter().filter(|(_, c)| **c > 1).collect();
    assert!(
        dupes.is_empty(),
        "thumbnails recorded more than once: {dupes:?}"
    );
    n
}

fn assert_scaled_within(got: (u32, u32), src: (u32, u32), bound: (u32, u32), what: &str) {
    let (w, h) = got;
    assert!(
        w <= bound.0 && h <= bound.1,
        "{what}: {w}×{h} does not fit {bound:?}"
    );
    assert!(
        w == bound.0 || h == bound.1,
        "{what}: {w}×{h} does not touch the {bound:?} box"
    );
    // Aspect kept: within a pixel of rounding on the shorter side.
    let want_h = f64::from(w) * f64::from(src.1) / f64::from(src.0);
    let want_w = f64::from(h) * f64::from(src.0) / f64::from(src.1);
    assert!(
        (f64::from(h) - want_h).abs() <= 1.0 || (f64::from(w) - want_w).abs() <= 1.0,
        "{what}: {w}×{h} does not keep the aspect of {src:?}"
    );
}

async fn size_estimate(srv: &TestServer, ds: &str, before_ts: Option<u64>) -> Value {
    srv.size_estimate(ds, before_ts).await
}

fn far_future_ms() -> u64 {
    4_000_000_000_000
}

// ---------------------------------------------------------------------------------------------
// Formats, dimensions, headers.

struct Fixture {
    name: &'static str,
    bytes: Vec<u8>,
    upload_type: &'static str,
    dims: (u32, u32),
    thumb_type: &'static str,
    ext: &'static str,
}

fn fixtures() -> Vec<Fixture> {
    vec![
        Fixture {
            name: "jpeg 1920×1080",
            bytes: jpeg_gradient(1920, 1080, 0),
            upload_type: "image/jpeg",
            dims: (1920, 1080),
            thumb_type: "image/jpeg",
            ext: "jpg",
        },
        Fixture {
            name: "png 640×480 alpha",
            bytes: png_alpha(640, 480),
            upload_type: "image/png",
            dims: (640, 480),
            thumb_type: "image/png",
            ext: "png",
        },
        Fixture {
            name: "gif 400×300 animated",
            bytes: gif_animated(400, 300),
            upload_type: "image/gif",
            dims: (400, 300),
            thumb_type: "image/png",
            ext: "png",
        },
        Fixture {
            name: "webp 500×400",
            bytes: webp(500, 400),
            upload_type: "image/webp",
            dims: (500, 400),
            // Opaque: a photo to thumbnail, as Synapse does (see `thumbnail_output`).
            thumb_type: "image/jpeg",
            ext: "jpg",
        },
    ]
}

#[tokio::test]
async fn each_format_crops_and_scales_with_the_right_headers() {
    let srv = TestServer::start().await;
    for f in fixtures() {
        // The fixtures themselves are what they claim.
        assert_eq!(
            image::load_from_memory(&f.bytes).unwrap().dimensions(),
            f.dims,
            "{}",
            f.name
        );
        let mxc = srv
            .upload(ALICE, f.bytes.clone(), Some(f.upload_type), None)
            .await;

        let crop = thumb(&srv, &mxc, "width=96&height=96&method=crop").await;
        assert_eq!(crop.content_type, f.thumb_type, "{} crop", f.name);
        assert_eq!(
            crop.disposition,
            format!("inline; filename=\"thumbnail.{}\"", f.ext),
            "{} crop",
            f.name
        );
        assert_eq!(crop.dimensions(), (96, 96), "{} crop 96×96", f.name);
        let format = image::guess_format(&crop.bytes).unwrap();
        let want_format = if f.thumb_type == "image/jpeg" {
            ImageFormat::Jpeg
        } else {
            ImageFormat::Png
        };
        assert_eq!(
            format, want_format,
            "{}: bytes match the Content-Type",
            f.name
        );

        let scale = thumb(&srv, &mxc, "width=320&height=240&method=scale").await;
        assert_eq!(scale.content_type, f.thumb_type, "{} scale", f.name);
        assert_eq!(
            scale.disposition,
            format!("inline; filename=\"thumbnail.{}\"", f.ext),
            "{} scale",
            f.name
        );
        assert_scaled_within(scale.dimensions(), f.dims, (320, 240), f.name);

        // Method defaults to scale.
        let default = thumb(&srv, &mxc, "width=320&height=240").await;
        assert_eq!(default.bytes, scale.bytes, "{}: default method", f.name);

        // The authenticated route, the r0 route and HEAD serve the same thumbnail.
        let authed =
            into_thumb(get_authed(&srv, Some(ALICE), &mxc, "width=96&height=96&method=crop").await)
                .await;
        assert_eq!(authed.bytes, crop.bytes, "{}: authenticated route", f.name);
        let (server, id) = parse_mxc(&mxc);
        let r0 = into_thumb(
            srv.client
                .get(srv.url(&format!(
                    "/_matrix/media/r0/thumbnail/{server}/{id}?width=96&height=96&method=crop"
                )))
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(r0.bytes, crop.bytes, "{}: r0 route", f.name);
        let head = srv
            .client
            .head(srv.url(&legacy_path(&mxc, "width=96&height=96&method=crop")))
            .send()
            .await
            .unwrap();
        assert_eq!(head.status(), StatusCode::OK, "{}: HEAD", f.name);
        assert_eq!(header(&head, "content-type"), f.thumb_type);
        assert_eq!(
            header(&head, "content-length"),
            crop.content_length.to_string()
        );
        assert!(head.bytes().await.unwrap().is_empty());
    }
    assert_unique(&thumb_events(&srv));
}

#[tokio::test]
async fn png_alpha_is_kept_and_gif_uses_its_first_frame() {
    let srv = TestServer::start().await;
    let png = srv
        .upload(ALICE, png_alpha(640, 480), Some("image/png"), None)
        .await;
    let t = thumb(&srv, &png, "width=320&height=240&method=scale").await;
    let img = t.image();
    assert!(img.color().has_alpha(), "alpha dropped: {:?}", img.color());
    let rgba = img.to_rgba8();
    assert!(
        rgba.get_pixel(2, 120)[3] < 40,
        "left edge should stay transparent"
    );
    assert!(
        rgba.get_pixel(317, 120)[3] > 215,
        "right edge should stay opaque"
    );

    let gif = srv
        .upload(ALICE, gif_animated(400, 300), Some("image/gif"), None)
        .await;
    for query in [
        "width=96&height=96&method=crop",
        "width=96&height=96&method=crop&animated=true",
    ] {
        let t = thumb(&srv, &gif, query).await;
        assert_eq!(t.content_type, "image/png", "{query}");
        let rgba = t.image().to_rgba8();
        let p = rgba.get_pixel(48, 48);
        let [r, g, b, _] = GIF_FRAME_COLOURS[0];
        assert!(
            p[0].abs_diff(r) < 8 && p[1].abs_diff(g) < 8 && p[2].abs_diff(b) < 8,
            "{query}: not the first frame: {p:?}"
        );
    }
    // `animated=true` is a thumbnail of its own (same bytes, separate record).
    let events = thumb_events(&srv);
    let n = assert_unique(&events);
    assert_eq!(n.len(), 3, "{n:?}");
    assert!(events.iter().any(|e| e.animated));
}

/// The configured sizes of the default config.
fn default_sizes() -> Vec<ThumbnailSize> {
    media_ledger::config::ThumbnailsConfig::default().sizes
}

#[test]
fn pick_size_follows_its_documentation() {
    use ThumbnailMethod::{Crop, Scale};
    let size = |width, height, method| ThumbnailSize {
        width,
        height,
        method,
    };
    let c = |w, h| size(w, h, ThumbnailMethodConfig::Crop);
    let s = |w, h| size(w, h, ThumbnailMethodConfig::Scale);
    let sizes = default_sizes();
    assert_eq!(
        sizes,
        vec![c(32, 32), c(96, 96), s(320, 240), s(640, 480), s(800, 600)]
    );
    // The smallest of the method at least as large as asked.
    assert_eq!(pick_size(&sizes, 1, 1, Crop), Some(c(32, 32)));
    assert_eq!(pick_size(&sizes, 32, 32, Crop), Some(c(32, 32)));
    assert_eq!(pick_size(&sizes, 33, 20, Crop), Some(c(96, 96)));
    assert_eq!(pick_size(&sizes, 96, 96, Crop), Some(c(96, 96)));
    assert_eq!(pick_size(&sizes, 1, 1, Scale), Some(s(320, 240)));
    assert_eq!(pick_size(&sizes, 100, 100, Scale), Some(s(320, 240)));
    assert_eq!(pick_size(&sizes, 321, 240, Scale), Some(s(640, 480)));
    assert_eq!(pick_size(&sizes, 320, 241, Scale), Some(s(640, 480)));
    assert_eq!(pick_size(&sizes, 641, 10, Scale), Some(s(800, 600)));
    // Else the largest of the method (never one of the other method).
    assert_eq!(pick_size(&sizes, 100, 100, Crop), Some(c(96, 96)));
    assert_eq!(pick_size(&sizes, 10_000, 10_000, Crop), Some(c(96, 96)));
    assert_eq!(pick_size(&sizes, 801, 600, Scale), Some(s(800, 600)));
    assert_eq!(pick_size(&sizes, 10_000, 10_000, Scale), Some(s(800, 600)));
    // Else (no size of the method) the same rule over every size.
    let only_scale = vec![s(320, 240), s(640, 480)];
    assert_eq!(pick_size(&only_scale, 96, 96, Crop), Some(s(320, 240)));
    assert_eq!(pick_size(&only_scale, 500, 400, Crop), Some(s(640, 480)));
    assert_eq!(pick_size(&only_scale, 5000, 4000, Crop), Some(s(640, 480)));
    assert_eq!(pick_size(&[], 96, 96, Crop), None);
}

#[tokio::test]
async fn requests_are_served_by_the_picked_size() {
    let srv = TestServer::start().await;
    let mxc = srv
        .upload(
            ALICE,
            jpeg_gradient(1920, 1080, 1),
            Some("image/jpeg"),
            None,
        )
        .await;
    // (query, configured size it maps to, dimensions of the 1920×1080 thumbnail)
    let cases: [(&str, SizeKey, (u32, u32)); 8] = [
        (
            "width=20&height=20&method=crop",
            (32, 32, ThumbnailMethod::Crop),
            (32, 32),
        ),
        (
            "width=50&height=50&method=crop",
            (96, 96, ThumbnailMethod::Crop),
            (96, 96),
        ),
        // No crop size ≥ 100×100: the largest crop size.
        (
            "width=100&height=100&method=crop",
            (96, 96, ThumbnailMethod::Crop),
            (96, 96),
        ),
        (
            "width=100&height=100&method=scale",
            (320, 240, ThumbnailMethod::Scale),
            (320, 180),
        ),
        (
            "width=320&height=240&method=scale",
            (320, 240, ThumbnailMethod::Scale),
            (320, 180),
        ),
        (
            "width=640&height=300&method=scale",
            (640, 480, ThumbnailMethod::Scale),
            (640, 360),
        ),
        (
            "width=700&height=500&method=scale",
            (800, 600, ThumbnailMethod::Scale),
            (800, 450),
        ),
        // Larger than every scale size: the largest scale size.
        (
            "width=4000&height=4000&method=scale",
            (800, 600, ThumbnailMethod::Scale),
            (800, 450),
        ),
    ];
    let mut by_size: BTreeMap<SizeKey, Vec<u8>> = BTreeMap::new();
    for (query, size, dims) in cases {
        let t = thumb(&srv, &mxc, query).await;
        assert_eq!(t.dimensions(), dims, "{query}");
        if let Some(prev) = by_size.get(&size) {
            assert_eq!(prev, &t.bytes, "{query}: same size, same thumbnail");
        }
        by_size.insert(size, t.bytes);
    }
    let events = thumb_events(&srv);
    let n = assert_unique(&events);
    let recorded: BTreeSet<SizeKey> = n.keys().map(|k| (k.1, k.2, k.3)).collect();
    let want: BTreeSet<_> = by_size.keys().copied().collect();
    assert_eq!(recorded, want, "one record per configured size used");
    for e in &events {
        assert_eq!(e.content_type.as_str(), "image/jpeg");
        assert_eq!(
            sha256_hex(&by_size[&(e.width, e.height, e.method)]),
            e.sha256.to_hex()
        );
    }
}

#[tokio::test]
async fn small_image_is_its_own_thumbnail() {
    let srv = TestServer::start().await;
    let bytes = png_small(20, 20);
    let mxc = srv
        .upload(ALICE, bytes.clone(), Some("image/png"), None)
        .await;
    for query in [
        "width=96&height=96&method=crop",
        "width=32&height=32&method=crop",
        "width=320&height=240&method=scale",
    ] {
        let t = thumb(&srv, &mxc, query).await;
        assert_eq!(t.bytes, bytes, "{query}: the original bytes");
        assert_eq!(t.content_type, "image/png", "{query}");
        assert_eq!(t.disposition, "inline; filename=\"thumbnail.png\"");
    }
    // A small GIF is served as itself too (its own type).
    let gif = gif_animated(16, 16);
    let gmxc = srv
        .upload(ALICE, gif.clone(), Some("image/gif"), None)
        .await;
    let t = thumb(&srv, &gmxc, "width=96&height=96&method=crop").await;
    assert_eq!(t.bytes, gif);
    assert_eq!(t.content_type, "image/gif");
    assert_eq!(t.disposition, "inline; filename=\"thumbnail.gif\"");
    assert!(thumb_events(&srv).is_empty(), "nothing generated");
    assert_eq!(count_blobs(&srv.media_dir()), 2, "no thumbnail blob");
}

// ---------------------------------------------------------------------------------------------
// One generation per thumbnail.

#[tokio::test]
async fn concurrent_identical_requests_generate_once() {
    let mut srv = TestServer::start().await;
    let jpeg = srv
        .upload(
            ALICE,
            jpeg_gradient(1920, 1080, 2),
            Some("image/jpeg"),
            None,
        )
        .await;
    let png = srv
        .upload(ALICE, png_alpha(640, 480), Some("image/png"), None)
        .await;
    let base = srv.base.clone();
    for (mxc, query) in [
        (&jpeg, "width=320&height=240&method=scale"),
        (&jpeg, "width=96&height=96&method=crop"),
        (&png, "width=96&height=96&method=crop"),
    ] {
        let before = thumb_events(&srv).len();
        let url = format!("{base}{}", legacy_path(mxc, query));
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let (client, url) = (srv.client.clone(), url.clone());
                tokio::spawn(async move {
                    into_thumb(client.get(url).bearer_auth(ALICE).send().await.unwrap()).await
                })
            })
            .collect();
        let mut bodies = BTreeSet::new();
        for t in tasks {
            bodies.insert(t.await.unwrap().bytes);
        }
        assert_eq!(bodies.len(), 1, "{query}: the 8 answers differ");
        let events = thumb_events(&srv);
        assert_eq!(
            events.len(),
            before + 1,
            "{query}: one generation for 8 requests"
        );
        // The next request is served from the store.
        let again = thumb(&srv, mxc, query).await;
        assert!(bodies.contains(&again.bytes));
        assert_eq!(thumb_events(&srv).len(), before + 1, "{query}: regenerated");
    }
    // Blobs: 2 media + 3 thumbnails.
    assert_eq!(count_blobs(&srv.media_dir()), 5);
    srv.stop().await;
    let events = thumb_events_at(&srv.db_path());
    assert_eq!(events.len(), 3);
    let n = assert_unique(&events);
    assert!(n.values().all(|c| *c == 1));
}

#[tokio::test]
async fn small_cached_thumbnail_on_a_kept_alive_connection_is_fast() {
    let srv = TestServer::start().await;
    let mxc = srv
        .upload(
            ALICE,
            jpeg_gradient(1920, 1080, 13),
            Some("image/jpeg"),
            None,
        )
        .await;
    let query = "width=96&height=96&method=crop";
    let first = thumb(&srv, &mxc, query).await;
    assert!(first.bytes.len() < 32 * 1024, "{} bytes", first.bytes.len());
    // One client: the same kept-alive connection for every request.
    let mut took = Vec::new();
    for _ in 0..15 {
        let t = Instant::now();
        let again = thumb(&srv, &mxc, query).await;
        took.push(t.elapsed());
        assert_eq!(again.bytes, first.bytes);
    }
    took.sort();
    let median = took[took.len() / 2];
    assert!(
        median < Duration::from_millis(20),
        "median {median:?} for a {} byte cached thumbnail: {took:?}",
        first.bytes.len()
    );
}

// ---------------------------------------------------------------------------------------------
// Errors.

#[tokio::test]
async fn bad_parameters_are_refused() {
    let srv = TestServer::start().await;
    let mxc = srv
        .upload(ALICE, png_alpha(640, 480), Some("image/png"), None)
        .await;
    for query in ["height=96", "width=96", "", "method=crop"] {
        expect_error(
            get_legacy(&srv, &mxc, query).await,
            StatusCode::BAD_REQUEST,
            "M_MISSING_PARAM",
        )
        .await;
    }
    for query in [
        "width=0&height=96",
        "width=96&height=0",
        "width=abc&height=96",
        "width=96&height=abc",
        "width=-1&height=96",
        "width=9.5&height=96",
        "width=100000&height=96",
        "width=96&height=100000",
        "width=99999999999999999999&height=96",
        "width=96&height=96&method=foo",
        "width=96&height=96&method=CROP",
        "width=96&height=96&animated=maybe",
        "width=96&height=96&animated=1",
    ] {
        expect_error(
            get_legacy(&srv, &mxc, query).await,
            StatusCode::BAD_REQUEST,
            "M_INVALID_PARAM",
        )
        .await;
        // The authenticated route says the same.
        expect_error(
            get_authed(&srv, Some(ALICE), &mxc, query).await,
            StatusCode::BAD_REQUEST,
            "M_INVALID_PARAM",
        )
        .await;
    }
    // The bounds themselves are fine.
    thumb(&srv, &mxc, "width=1&height=1&method=crop").await;
    thumb(&srv, &mxc, "width=10000&height=10000&method=scale").await;
    thumb(&srv, &mxc, "width=96&height=96&method=crop&animated=false").await;
}

#[tokio::test]
async fn unthumbnailable_unknown_and_unauthenticated() {
    let srv = TestServer::start().await;
    let text = srv
        .upload(ALICE, b"hello, world".to_vec(), Some("text/plain"), None)
        .await;
    let body = expect_error(
        get_legacy(&srv, &text, "width=96&height=96").await,
        StatusCode::BAD_REQUEST,
        "M_UNKNOWN",
    )
    .await;
    assert!(!body["error"].as_str().unwrap().is_empty());
    // No content type at all: not an image either.
    let untyped = srv.upload(ALICE, png_alpha(200, 200), None, None).await;
    expect_error(
        get_legacy(&srv, &untyped, "width=96&height=96").await,
        StatusCode::BAD_REQUEST,
        "M_UNKNOWN",
    )
    .await;

    let (server, _) = parse_mxc(&text);
    let unknown = format!("mxc://{server}/NoSuchMediaHere0123456789");
    expect_error(
        get_legacy(&srv, &unknown, "width=96&height=96").await,
        StatusCode::NOT_FOUND,
        "M_NOT_FOUND",
    )
    .await;
    expect_error(
        get_authed(&srv, Some(ALICE), &unknown, "width=96&height=96").await,
        StatusCode::NOT_FOUND,
        "M_NOT_FOUND",
    )
    .await;

    let png = srv
        .upload(ALICE, png_alpha(640, 480), Some("image/png"), None)
        .await;
    expect_error(
        get_authed(&srv, None, &png, "width=96&height=96").await,
        StatusCode::UNAUTHORIZED,
        "M_MISSING_TOKEN",
    )
    .await;
    expect_error(
        get_authed(&srv, Some("no-such-token"), &png, "width=96&height=96").await,
        StatusCode::UNAUTHORIZED,
        "M_UNKNOWN_TOKEN",
    )
    .await;
    // Nothing was generated by refused requests.
    assert!(thumb_events(&srv).is_empty());
    into_thumb(get_authed(&srv, Some(ADMIN), &png, "width=96&height=96").await).await;
}

// ---------------------------------------------------------------------------------------------
// Hostile inputs.

/// Asserts a 400 M_UNKNOWN that came back within [`QUICK`].
async fn expect_refused_quickly(srv: &TestServer, mxc: &str, query: &str, what: &str) {
    let t = Instant::now();
    let resp = get_legacy(srv, mxc, query).await;
    let took = t.elapsed();
    expect_error(resp, StatusCode::BAD_REQUEST, "M_UNKNOWN").await;
    assert!(took < QUICK, "{what}: refused after {took:?}");
}

#[tokio::test]
async fn hostile_images_are_refused_quickly_and_the_server_keeps_serving() {
    let srv = TestServer::start().await;
    let good = srv
        .upload(ALICE, png_alpha(640, 480), Some("image/png"), None)
        .await;

    let bomb = png_claiming(100_000, 100_000);
    // The crafted header is valid: a decoder sees the claimed size.
    let reader = image::ImageReader::new(Cursor::new(&bomb))
        .with_guessed_format()
        .unwrap();
    assert_eq!(reader.into_dimensions().unwrap(), (100_000, 100_000));
    let jpeg = jpeg_gradient(640, 480, 3);
    let jpeg_headers_only = jpeg[..jpeg_scan_start(&jpeg)].to_vec();
    let mut truncated_png = png_alpha(640, 480);
    truncated_png.truncate(truncated_png.len() / 2);
    let mut truncated_gif = gif_animated(400, 300);
    truncated_gif.truncate(truncated_gif.len() / 4);
    let hostile: Vec<(&str, Vec<u8>, &str)> = vec![
        ("png claiming 100000×100000", bomb, "image/png"),
        (
            "png claiming 40000×1000",
            png_claiming(40_000, 1_000),
            "image/png",
        ),
        (
            "jpeg claiming 65000×65000",
            jpeg_claiming(65_000, 65_000),
            "image/jpeg",
        ),
        (
            "gif screen 65535×65535",
            gif_claiming_screen(65_535, 65_535),
            "image/gif",
        ),
        (
            "gif frame 65535×65535",
            gif_claiming_frame(65_535, 65_535),
            "image/gif",
        ),
        (
            "png claiming 3000×2000, data of 1×1",
            png_claiming(3000, 2000),
            "image/png",
        ),
        ("jpeg without scan data", jpeg_headers_only, "image/jpeg"),
        ("truncated png", truncated_png, "image/png"),
        ("truncated gif", truncated_gif, "image/gif"),
        ("random bytes as png", random_bytes(50_000), "image/png"),
        ("random bytes as jpeg", random_bytes(50_000), "image/jpeg"),
        ("empty png", Vec::new(), "image/png"),
        (
            "png signature only",
            b"\x89PNG\r\n\x1a\n".to_vec(),
            "image/png",
        ),
    ];
    for (what, bytes, ct) in hostile {
        let mxc = srv.upload(ALICE, bytes, Some(ct), None).await;
        // Every source here is larger than both sizes (a smaller one is served as is).
        for query in [
            "width=96&height=96&method=crop",
            "width=320&height=240&method=scale",
        ] {
            expect_refused_quickly(&srv, &mxc, query, what).await;
        }
        // Still serving.
        let t = thumb(&srv, &good, "width=96&height=96&method=crop").await;
        assert_eq!(t.dimensions(), (96, 96), "after {what}");
    }
    // Only the good image got a thumbnail.
    let events = thumb_events(&srv);
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].media.to_string(), good);
    // Spools are clean.
    assert_eq!(common::spool_entries(&srv.media_dir()), 0);
}

/// Offset of the SOS marker of a baseline JPEG: everything before it is headers.
fn jpeg_scan_start(j: &[u8]) -> usize {
    j.windows(2)
        .position(|p| p == [0xFF, 0xDA])
        .expect("a JPEG has a start of scan")
}

#[tokio::test]
async fn jpeg_truncated_in_its_headers_is_refused() {
    let srv = TestServer::start().await;
    let full = jpeg_gradient(1920, 1080, 4);
    let sos = jpeg_scan_start(&full);
    for keep in [2, 20, sos / 2, sos, sos + 8] {
        let mxc = srv
            .upload(ALICE, full[..keep].to_vec(), Some("image/jpeg"), None)
            .await;
        expect_refused_quickly(
            &srv,
            &mxc,
            "width=320&height=240&method=scale",
            &format!(
                "jpeg truncated to {keep} of {} bytes (scan at {sos})",
                full.len()
            ),
        )
        .await;
    }
}

#[tokio::test]
async fn jpeg_truncated_in_its_scan_data_is_refused() {
    let srv = TestServer::start().await;
    let full = jpeg_gradient(1920, 1080, 4);
    let sos = jpeg_scan_start(&full);
    for keep in [sos + 200, full.len() / 2, full.len() - 100, full.len() - 2] {
        let mxc = srv
            .upload(ALICE, full[..keep].to_vec(), Some("image/jpeg"), None)
            .await;
        expect_refused_quickly(
            &srv,
            &mxc,
            "width=320&height=240&method=scale",
            &format!("jpeg truncated to {keep} of {} bytes", full.len()),
        )
        .await;
    }
    assert!(
        thumb_events(&srv).is_empty(),
        "thumbnails of damaged images recorded"
    );
}

#[tokio::test]
async fn sources_above_max_source_bytes_are_refused() {
    let srv = TestServer::start_with(thumbnails_opts("max_source_bytes = 20000")).await;
    let big = jpeg_gradient(1920, 1080, 5);
    assert!(big.len() > 20_000, "fixture too small: {}", big.len());
    let small = jpeg_gradient(200, 150, 5);
    assert!(small.len() <= 20_000, "fixture too big: {}", small.len());
    let big_mxc = srv.upload(ALICE, big, Some("image/jpeg"), None).await;
    let small_mxc = srv.upload(ALICE, small, Some("image/jpeg"), None).await;
    expect_refused_quickly(&srv, &big_mxc, "width=96&height=96&method=crop", "over max").await;
    let t = thumb(&srv, &small_mxc, "width=96&height=96&method=crop").await;
    assert_eq!(t.dimensions(), (96, 96));
    assert_eq!(thumb_events(&srv).len(), 1);
}

#[tokio::test]
async fn sources_above_max_pixels_are_refused() {
    // 640×480 = 307200 pixels; 1920×1080 = 2073600.
    let srv = TestServer::start_with(thumbnails_opts("max_pixels = 500000")).await;
    let under = srv
        .upload(ALICE, png_alpha(640, 480), Some("image/png"), None)
        .await;
    let over = srv
        .upload(
            ALICE,
            jpeg_gradient(1920, 1080, 6),
            Some("image/jpeg"),
            None,
        )
        .await;
    expect_refused_quickly(&srv, &over, "width=96&height=96&method=crop", "over pixels").await;
    thumb(&srv, &under, "width=96&height=96&method=crop").await;
}

#[tokio::test]
async fn disabled_thumbnails_are_not_found() {
    let srv = TestServer::start_with(thumbnails_opts("enabled = false")).await;
    let mxc = srv
        .upload(ALICE, png_alpha(640, 480), Some("image/png"), None)
        .await;
    expect_error(
        get_legacy(&srv, &mxc, "width=96&height=96").await,
        StatusCode::NOT_FOUND,
        "M_NOT_FOUND",
    )
    .await;
}

#[tokio::test]
async fn generation_over_its_timeout_is_unavailable() {
    let srv = TestServer::start_with(thumbnails_opts("timeout_ms = 1")).await;
    let jpeg = jpeg_gradient(1920, 1080, 11);
    let mxc = srv
        .upload(ALICE, jpeg.clone(), Some("image/jpeg"), None)
        .await;
    expect_error(
        get_legacy(&srv, &mxc, "width=800&height=600&method=scale").await,
        StatusCode::SERVICE_UNAVAILABLE,
        "M_UNKNOWN",
    )
    .await;
    // Give the abandoned work time to end: it records nothing and leaves no blob.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(thumb_events(&srv).is_empty());
    assert_eq!(count_blobs(&srv.media_dir()), 1);
    assert_eq!(srv.download_bytes(&mxc).await, jpeg);
}

#[tokio::test]
async fn thumbnail_waits_for_an_async_upload() {
    let srv = TestServer::start().await;
    let resp = srv
        .client
        .post(srv.url("/_matrix/media/v1/create"))
        .bearer_auth(ALICE)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let v: Value = resp.json().await.unwrap();
    let mxc = v["content_uri"].as_str().unwrap().to_owned();
    expect_error(
        get_legacy(&srv, &mxc, "width=96&height=96&method=crop&timeout_ms=200").await,
        StatusCode::GATEWAY_TIMEOUT,
        "M_NOT_YET_UPLOADED",
    )
    .await;
    let waiting = {
        let (client, url) = (
            srv.client.clone(),
            srv.url(&legacy_path(
                &mxc,
                "width=96&height=96&method=crop&timeout_ms=20000",
            )),
        );
        tokio::spawn(async move {
            into_thumb(client.get(url).bearer_auth(ALICE).send().await.unwrap()).await
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (server, id) = parse_mxc(&mxc);
    let put = srv
        .client
        .put(srv.url(&format!("/_matrix/media/v3/upload/{server}/{id}")))
        .bearer_auth(ALICE)
        .header(reqwest::header::CONTENT_TYPE, "image/jpeg")
        .body(jpeg_gradient(640, 480, 12))
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), StatusCode::OK);
    let t = waiting.await.unwrap();
    assert_eq!(t.content_type, "image/jpeg");
    assert_eq!(t.dimensions(), (96, 96));
}

// ---------------------------------------------------------------------------------------------
// Figures.

/// The `size_estimate` thumbnail figures expected from recorded events in `ds`, and the total
/// over those and `media` (sha hex → size of each media row).
fn expected_estimate(events: &[ThumbnailGenerated], ds: &str, media: &[(String, u64)]) -> Value {
    let thumbs: Vec<_> = events
        .iter()
        .filter(|e| e.datastore.as_str() == ds)
        .collect();
    let thumb_hashes: BTreeMap<String, u64> = thumbs
        .iter()
        .map(|e| (e.sha256.to_hex(), e.size_bytes))
        .collect();
    let media_hashes: BTreeMap<String, u64> = media.iter().cloned().collect();
    let mut all = media_hashes.clone();
    all.extend(thumb_hashes.clone());
    json!({
        "thumbnails_affected": thumbs.len(),
        "thumbnail_hashes_affected": thumb_hashes.len(),
        "thumbnail_bytes": thumb_hashes.values().sum::<u64>(),
        "media_affected": media.len(),
        "media_hashes_affected": media_hashes.len(),
        "media_bytes": media_hashes.values().sum::<u64>(),
        "total_hashes_affected": all.len(),
        "total_bytes": all.values().sum::<u64>(),
    })
}

#[tokio::test]
async fn size_estimate_counts_thumbnails() {
    let srv = TestServer::start().await;
    let jpeg = jpeg_gradient(1920, 1080, 7);
    let png = png_alpha(640, 480);
    let mut media: Vec<(String, u64)> = Vec::new();
    // Two media with the same bytes: their thumbnails have the same bytes too.
    let j1 = srv
        .upload(ALICE, jpeg.clone(), Some("image/jpeg"), None)
        .await;
    let j2 = srv
        .upload(ALICE, jpeg.clone(), Some("image/jpeg"), None)
        .await;
    let p = srv
        .upload(ALICE, png.clone(), Some("image/png"), None)
        .await;
    media.push((sha256_hex(&jpeg), jpeg.len() as u64));
    media.push((sha256_hex(&jpeg), jpeg.len() as u64));
    media.push((sha256_hex(&png), png.len() as u64));

    // Blob sizes as the responses give them (Content-Length), per thumbnail hash.
    let mut served: BTreeMap<String, u64> = BTreeMap::new();
    let mut rows = 0u64;
    for (mxc, query) in [
        (&j1, "width=96&height=96&method=crop"),
        (&j1, "width=320&height=240&method=scale"),
        (&j2, "width=96&height=96&method=crop"),
        (&j2, "width=320&height=240&method=scale"),
        (&j2, "width=32&height=32&method=crop"),
        (&p, "width=96&height=96&method=crop"),
        (&p, "width=96&height=96&method=crop&animated=true"),
        (&p, "width=320&height=240&method=scale"),
    ] {
        let t = thumb(&srv, mxc, query).await;
        served.insert(sha256_hex(&t.bytes), t.content_length);
        rows += 1;
    }
    // Served again: no new rows.
    thumb(&srv, &j1, "width=96&height=96&method=crop").await;

    let est = size_estimate(&srv, DS, None).await;
    assert_eq!(est["thumbnails_affected"], rows, "{est}");
    // j1 and j2 share 2 hashes; p's crop with and without animated share one.
    assert_eq!(served.len(), 5, "{served:?}");
    assert_eq!(est["thumbnail_hashes_affected"], served.len(), "{est}");
    assert_eq!(
        est["thumbnail_bytes"],
        served.values().sum::<u64>(),
        "{est}"
    );
    assert_eq!(est["media_affected"], 3, "{est}");
    assert_eq!(est["media_hashes_affected"], 2, "{est}");
    assert_eq!(
        est["total_hashes_affected"],
        2 + served.len() as u64,
        "{est}"
    );
    assert_eq!(
        est["total_bytes"],
        (jpeg.len() + png.len()) as u64 + served.values().sum::<u64>(),
        "{est}"
    );
    let events = thumb_events(&srv);
    assert_eq!(est, expected_estimate(&events, DS, &media));
    // The scan path (`before_ts` in the future) agrees with the running figures.
    assert_eq!(size_estimate(&srv, DS, Some(far_future_ms())).await, est);
    // Nothing is older than the epoch.
    let zero = size_estimate(&srv, DS, Some(1)).await;
    assert_eq!(zero["thumbnails_affected"], 0, "{zero}");
    assert_eq!(zero["total_bytes"], 0, "{zero}");

    // A media upload of a thumbnail's bytes: a new media hash, the same total hashes.
    let crop = thumb(&srv, &p, "width=96&height=96&method=crop").await;
    srv.upload(ALICE, crop.bytes.clone(), Some("image/png"), None)
        .await;
    media.push((sha256_hex(&crop.bytes), crop.bytes.len() as u64));
    let after = size_estimate(&srv, DS, None).await;
    assert_eq!(after["media_affected"], 4, "{after}");
    assert_eq!(after["media_hashes_affected"], 3, "{after}");
    assert_eq!(
        after["media_bytes"],
        (jpeg.len() + png.len() + crop.bytes.len()) as u64,
        "{after}"
    );
    assert_eq!(
        after["total_hashes_affected"], est["total_hashes_affected"],
        "{after}"
    );
    assert_eq!(after["total_bytes"], est["total_bytes"], "{after}");
    assert_eq!(after["thumbnails_affected"], rows, "{after}");
    assert_eq!(after, expected_estimate(&events, DS, &media));
    assert_eq!(size_estimate(&srv, DS, Some(far_future_ms())).await, after);
    // Blobs: 2 media + 5 thumbnails, the uploaded thumbnail bytes deduplicated.
    assert_eq!(count_blobs(&srv.media_dir()), 7);
}

// ---------------------------------------------------------------------------------------------
// Restart, S3, transfers.

#[tokio::test]
async fn thumbnails_survive_a_restart() {
    let mut srv = TestServer::start().await;
    let jpeg = srv
        .upload(
            ALICE,
            jpeg_gradient(1920, 1080, 8),
            Some("image/jpeg"),
            None,
        )
        .await;
    let gif = srv
        .upload(ALICE, gif_animated(400, 300), Some("image/gif"), None)
        .await;
    let queries = [
        (&jpeg, "width=96&height=96&method=crop"),
        (&jpeg, "width=640&height=480&method=scale"),
        (&gif, "width=320&height=240&method=scale"),
    ];
    let mut before = Vec::new();
    for (mxc, q) in queries {
        before.push(thumb(&srv, mxc, q).await.bytes);
    }
    let estimate = size_estimate(&srv, DS, None).await;
    srv.stop().await;
    let events = thumb_events_at(&srv.db_path());
    assert_eq!(events.len(), 3);
    let (_, divergence) = Ledger::verify_path(&srv.db_path()).unwrap();
    assert_eq!(divergence, None, "projections diverge from a replay");

    srv.restart().await;
    for ((mxc, q), bytes) in queries.iter().zip(&before) {
        assert_eq!(&thumb(&srv, mxc, q).await.bytes, bytes, "{q} after restart");
    }
    assert_eq!(size_estimate(&srv, DS, None).await, estimate);
    srv.stop().await;
    assert_eq!(
        thumb_events_at(&srv.db_path()),
        events,
        "served without regenerating"
    );
    let (_, divergence) = Ledger::verify_path(&srv.db_path()).unwrap();
    assert_eq!(divergence, None, "projections diverge from a replay");
}

/// Media in the file datastore, thumbnails in an S3 bucket.
fn s3_thumbnail_opts(s3: &S3Server) -> Opts {
    Opts {
        datastores: Some(format!(
            "[[datastores]]\nid = \"{DS}\"\ntype = \"file\"\npath = {{dir:media}}\nkinds = [\"local_media\"]\n{}",
            s3.datastore_toml("s3", BUCKET, r#"["thumbnails"]"#, "")
        )),
        ..Default::default()
    }
}

#[tokio::test]
async fn thumbnails_stored_in_and_served_from_s3() {
    let mut s3 = S3Server::launch();
    let mut srv = TestServer::start_with(s3_thumbnail_opts(&s3)).await;
    let queries = [
        "width=96&height=96&method=crop",
        "width=320&height=240&method=scale",
        "width=800&height=600&method=scale",
    ];
    let mut media = Vec::new();
    for seed in 0..3 {
        let jpeg = jpeg_gradient(1920, 1080, 20 + seed);
        let mxc = srv
            .upload(ALICE, jpeg.clone(), Some("image/jpeg"), None)
            .await;
        media.push((mxc, jpeg));
    }
    let png = png_alpha(640, 480);
    let pmxc = srv
        .upload(ALICE, png.clone(), Some("image/png"), None)
        .await;
    media.push((pmxc, png));

    // Every thumbnail request, its status noted (checked after the objects are).
    let mut answers = Vec::new();
    for (mxc, _) in &media {
        for q in queries {
            let resp = get_legacy(&srv, mxc, q).await;
            let status = resp.status();
            let body = resp.bytes().await.unwrap().to_vec();
            answers.push((mxc.clone(), q, status, body));
        }
    }
    // Every recorded thumbnail is an object of the recorded size and hash.
    let events = thumb_events(&srv);
    assert_eq!(
        events.len(),
        media.len() * queries.len() - 1,
        "640×480 at 800×600 is the original"
    );
    let mut bad = Vec::new();
    for e in &events {
        assert_eq!(e.datastore.as_str(), "s3");
        let sha = e.sha256.to_hex();
        match std::fs::read(s3.object_path(BUCKET, &sha)) {
            Ok(b) if b.len() as u64 == e.size_bytes && sha256_hex(&b) == sha => {}
            Ok(b) => bad.push(format!(
                "{} {}×{} {:?}: object of {} bytes hashing to {}, recorded {} bytes of {sha}",
                e.media,
                e.width,
                e.height,
                e.method,
                b.len(),
                sha256_hex(&b),
                e.size_bytes
            )),
            Err(err) => bad.push(format!(
                "{} {}×{}: no object ({err})",
                e.media, e.width, e.height
            )),
        }
    }
    assert!(
        bad.is_empty(),
        "S3 objects differ from the recorded thumbnails:\n{}",
        bad.join("\n")
    );
    for (mxc, q, status, body) in &answers {
        assert_eq!(
            *status,
            StatusCode::OK,
            "{mxc} {q}: {}",
            String::from_utf8_lossy(body)
        );
    }

    // The media stays in the file datastore, the thumbnails are objects in the bucket.
    assert_eq!(count_blobs(&srv.media_dir()), media.len());
    for (_, bytes) in &media {
        assert!(file_blob_path(&srv.media_dir(), &sha256_hex(bytes)).is_file());
    }
    assert_eq!(s3.object_count(BUCKET), events.len());
    let first = &media[0].0;
    let crop = thumb(&srv, first, queries[0]).await;
    let scale = thumb(&srv, first, queries[1]).await;
    assert_eq!(crop.dimensions(), (96, 96));
    assert_eq!(scale.dimensions(), (320, 180));
    for t in [&crop, &scale] {
        let sha = sha256_hex(&t.bytes);
        assert_eq!(
            std::fs::read(s3.object_path(BUCKET, &sha)).unwrap(),
            t.bytes
        );
    }
    let est = size_estimate(&srv, "s3", None).await;
    assert_eq!(est, expected_estimate(&events, "s3", &[]));
    assert_eq!(size_estimate(&srv, "s3", Some(far_future_ms())).await, est);
    let files = size_estimate(&srv, DS, None).await;
    assert_eq!(files["thumbnails_affected"], 0, "{files}");
    assert_eq!(files["media_affected"], media.len(), "{files}");
    // The S3 spool is empty.
    let spool = srv.dir.path().join("ledger-spool").join("s3");
    let left = std::fs::read_dir(&spool).map_or(0, |r| r.count());
    assert_eq!(left, 0, "spool files left in {}", spool.display());

    // Served from S3 after a restart too, without regenerating.
    srv.restart().await;
    assert_eq!(thumb(&srv, first, queries[0]).await.bytes, crop.bytes);
    // With S3 down a stored thumbnail cannot be served: it is read from there.
    s3.stop();
    let resp = get_legacy(&srv, first, queries[0]).await;
    assert!(
        resp.status().is_server_error(),
        "served with S3 down: {}",
        resp.status()
    );
    s3.start();
    assert_eq!(thumb(&srv, first, queries[1]).await.bytes, scale.bytes);
    srv.stop().await;
    assert_eq!(thumb_events_at(&srv.db_path()), events);
    let (_, divergence) = Ledger::verify_path(&srv.db_path()).unwrap();
    assert_eq!(divergence, None);
}

async fn transfer_and_wait(srv: &TestServer, src: &str, dst: &str) -> Value {
    let resp = srv
        .client
        .post(srv.url(&format!("{ADMIN_API}/datastores/{src}/transfer_to/{dst}")))
        .bearer_auth(SECRET)
        .send()
        .await
        .unwrap();
    let status = resp.status();
    let text = resp.text().await.unwrap();
    assert_eq!(status, StatusCode::OK, "transfer: {text}");
    let v: Value = serde_json::from_str(&text).unwrap();
    let task = v["task_id"].as_u64().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let t: Value = srv
            .client
            .get(srv.url(&format!("{ADMIN_API}/tasks/{task}")))
            .bearer_auth(SECRET)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if t["is_finished"] == true {
            return json!({ "start": v, "task": t });
        }
        assert!(Instant::now() < deadline, "transfer unfinished: {t}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn thumbnails_move_with_a_transfer() {
    let datastores = "[[datastores]]\nid = \"a\"\ntype = \"file\"\npath = {dir:media-a}\nkinds = [\"all\"]\n\n[[datastores]]\nid = \"b\"\ntype = \"file\"\npath = {dir:media-b}\nkinds = [\"remote_media\"]\n".to_owned();
    let mut srv = TestServer::start_with(Opts {
        datastores: Some(datastores),
        ..Default::default()
    })
    .await;
    let jpeg = jpeg_gradient(1920, 1080, 10);
    let png = png_alpha(640, 480);
    let j = srv
        .upload(ALICE, jpeg.clone(), Some("image/jpeg"), None)
        .await;
    let p = srv
        .upload(ALICE, png.clone(), Some("image/png"), None)
        .await;
    let queries = [
        (&j, "width=96&height=96&method=crop"),
        (&j, "width=320&height=240&method=scale"),
        (&p, "width=96&height=96&method=crop"),
        (&p, "width=96&height=96&method=crop&animated=true"),
    ];
    let mut served = Vec::new();
    for (mxc, q) in queries {
        served.push(thumb(&srv, mxc, q).await);
    }
    let media_a = srv.path_of("media-a");
    let media_b = srv.path_of("media-b");
    // 2 media + 3 distinct thumbnail blobs.
    assert_eq!(count_blobs(&media_a), 5);
    assert_eq!(count_blobs(&media_b), 0);
    let est_a = size_estimate(&srv, "a", None).await;
    assert_eq!(est_a["thumbnails_affected"], 4, "{est_a}");
    assert_eq!(est_a["thumbnail_hashes_affected"], 3, "{est_a}");

    let done = transfer_and_wait(&srv, "a", "b").await;
    assert_eq!(done["task"]["error_message"], "", "{done}");
    assert_eq!(done["start"]["thumbnails_affected"], 4, "{done}");
    assert_eq!(done["task"]["blobs_done"], 5, "{done}");

    assert_eq!(count_blobs(&media_a), 0, "source datastore not empty");
    assert_eq!(count_blobs(&media_b), 5);
    for t in &served {
        assert!(file_blob_path(&media_b, &sha256_hex(&t.bytes)).is_file());
    }
    let est_b = size_estimate(&srv, "b", None).await;
    assert_eq!(est_b, est_a, "figures moved to b");
    let zero = json!({
        "thumbnails_affected": 0, "thumbnail_hashes_affected": 0, "thumbnail_bytes": 0,
        "media_affected": 0, "media_hashes_affected": 0, "media_bytes": 0,
        "total_hashes_affected": 0, "total_bytes": 0,
    });
    assert_eq!(size_estimate(&srv, "a", None).await, zero);
    assert_eq!(size_estimate(&srv, "a", Some(far_future_ms())).await, zero);
    assert_eq!(size_estimate(&srv, "b", Some(far_future_ms())).await, est_b);

    let before = thumb_events(&srv).len();
    for ((mxc, q), t) in queries.iter().zip(&served) {
        assert_eq!(
            thumb(&srv, mxc, q).await.bytes,
            t.bytes,
            "{q} after transfer"
        );
    }
    assert_eq!(
        thumb_events(&srv).len(),
        before,
        "regenerated after transfer"
    );
    assert_eq!(srv.download_bytes(&j).await, jpeg);

    // A new thumbnail goes to the datastore accepting thumbnails (a).
    let new = thumb(&srv, &p, "width=320&height=240&method=scale").await;
    assert!(file_blob_path(&media_a, &sha256_hex(&new.bytes)).is_file());

    srv.stop().await;
    assert_unique(&thumb_events_at(&srv.db_path()));
    let (_, divergence) = Ledger::verify_path(&srv.db_path()).unwrap();
    assert_eq!(divergence, None);
}
