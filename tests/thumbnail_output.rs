#![allow(clippy::unwrap_used, clippy::expect_used)]
//! What a thumbnail weighs (issue #11 item 12): PNG output compressed with zlib's best level
//! and adaptive filters, with an alpha channel only where the source image uses it; JPEG
//! output for photos (JPEG sources, and WebP sources without alpha, as Synapse does). Sizes
//! are bounded against figures measured on generated sources (see BENCHMARKS.md); run
//! `cargo test --test server thumbnail_output:: -- --nocapture` to print them.

use crate::common;

use common::{header, parse_mxc, TestServer, ALICE};
use image::{GenericImageView, ImageFormat};
use reqwest::StatusCode;
use std::io::Cursor;

/// A `w`×`h` opaque drawing: a checkerboard of 7-pixel squares with a disc on it (a pattern
/// that resizing turns into many distinct colours), a few KiB as PNG like the source.
fn png_pattern(w: u32, h: u32) -> Vec<u8> {
    let img = image::RgbImage::from_fn(w, h, |x, y| {
        let dx = i64::from(x) - i64::from(w / 2);
        let dy = i64::from(y) - i64::from(h / 2);
        if dx * dx + dy * dy < i64::from(h / 4).pow(2) {
            image::Rgb([220, 60, 40])
        } else if (x / 7 + y / 7) % 2 == 0 {
            image::Rgb([250, 250, 250])
        } else {
            image::Rgb([20, 40, 90])
        }
    });
    let mut out = Vec::new();
    let enc = image::codecs::png::PngEncoder::new_with_quality(
        &mut out,
        image::codecs::png::CompressionType::Best,
        image::codecs::png::FilterType::Adaptive,
    );
    image::DynamicImage::ImageRgb8(img)
        .write_with_encoder(enc)
        .unwrap();
    out
}

/// A `w`×`h` photo-like JPEG: smooth gradients with fine noise (deterministic).
fn jpeg_photo(w: u32, h: u32) -> Vec<u8> {
    let mut state = 0x2545_f491_u32;
    let img = image::RgbImage::from_fn(w, h, |x, y| {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        let n = (state % 24) as u8;
        image::Rgb([
            ((x * 200 / w) as u8).saturating_add(n),
            ((y * 180 / h) as u8).saturating_add(n),
            (((x + y) * 120 / (w + h)) as u8).saturating_add(n),
        ])
    });
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 90)
        .encode_image(&img)
        .unwrap();
    out
}

/// A lossless `w`×`h` WebP, opaque or with an alpha ramp.
fn webp(w: u32, h: u32, alpha: bool) -> Vec<u8> {
    let img = image::RgbaImage::from_fn(w, h, |x, y| {
        let a = if alpha { (x * 255 / w) as u8 } else { 255 };
        image::Rgba([(x % 256) as u8, (y % 256) as u8, 90, a])
    });
    encode(image::DynamicImage::ImageRgba8(img), ImageFormat::WebP)
}

fn encode(img: image::DynamicImage, format: ImageFormat) -> Vec<u8> {
    let mut out = Vec::new();
    img.write_to(&mut Cursor::new(&mut out), format).unwrap();
    out
}

/// The thumbnail's content type and bytes (authenticated route: it generates).
async fn thumb(srv: &TestServer, mxc: &str, query: &str) -> (String, Vec<u8>) {
    let (server, id) = parse_mxc(mxc);
    let resp = srv
        .client
        .get(srv.url(&format!(
            "/_matrix/client/v1/media/thumbnail/{server}/{id}?{query}"
        )))
        .bearer_auth(ALICE)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK, "{query}");
    let ct = header(&resp, "content-type").to_owned();
    (ct, resp.bytes().await.unwrap().to_vec())
}

const CROP_96: &str = "width=96&height=96&method=crop";
const SCALE_800: &str = "width=800&height=600&method=scale";

#[tokio::test]
async fn png_thumbnails_are_compressed_and_opaque_ones_carry_no_alpha() {
    let srv = TestServer::start().await;
    let source = png_pattern(1600, 1200);
    println!("png pattern 1600×1200 source: {} B", source.len());
    let mxc = srv.upload(ALICE, source, Some("image/png"), None).await;
    for (query, bound) in [
        // Measured on this source: 1 738 B with the encoder's fast default, 1 525 B now.
        (CROP_96, 2_500),
        // Measured: 598 620 B with the fast default (the issue saw 673 175 B), 12 819 B now.
        (SCALE_800, 40_000),
    ] {
        let (ct, bytes) = thumb(&srv, &mxc, query).await;
        println!("png pattern {query}: {} B ({ct})", bytes.len());
        assert_eq!(ct, "image/png", "{query}: a drawing stays lossless");
        assert_eq!(image::guess_format(&bytes).unwrap(), ImageFormat::Png);
        let img = image::load_from_memory(&bytes).unwrap();
        assert!(
            !img.color().has_alpha(),
            "{query}: an opaque source gets no alpha channel: {:?}",
            img.color()
        );
        assert!(
            bytes.len() < bound,
            "{query}: {} B, bound {bound} B",
            bytes.len()
        );
    }
}

#[tokio::test]
async fn photos_are_jpeg_and_alpha_sources_stay_png() {
    let srv = TestServer::start().await;
    let photo = jpeg_photo(1600, 1200);
    println!("jpeg photo 1600×1200 source: {} B", photo.len());
    let photo = srv.upload(ALICE, photo, Some("image/jpeg"), None).await;
    for (query, bound) in [
        // Measured: 1 517 B (JPEG quality 80).
        (CROP_96, 3_000),
        // Measured: 38 645 B.
        (SCALE_800, 60_000),
    ] {
        let (ct, bytes) = thumb(&srv, &photo, query).await;
        println!("jpeg photo {query}: {} B ({ct})", bytes.len());
        assert_eq!(ct, "image/jpeg", "{query}");
        assert_eq!(image::guess_format(&bytes).unwrap(), ImageFormat::Jpeg);
        assert!(
            bytes.len() < bound,
            "{query}: {} B, bound {bound} B",
            bytes.len()
        );
    }

    // An opaque WebP is a photo to thumbnail (Synapse makes it JPEG too); one with alpha keeps
    // its transparency as PNG.
    let opaque = srv
        .upload(ALICE, webp(500, 400, false), Some("image/webp"), None)
        .await;
    let (ct, bytes) = thumb(&srv, &opaque, CROP_96).await;
    assert_eq!(ct, "image/jpeg");
    assert_eq!(
        image::load_from_memory(&bytes).unwrap().dimensions(),
        (96, 96)
    );
    let alpha = srv
        .upload(ALICE, webp(500, 400, true), Some("image/webp"), None)
        .await;
    let (ct, bytes) = thumb(&srv, &alpha, CROP_96).await;
    assert_eq!(ct, "image/png");
    let img = image::load_from_memory(&bytes).unwrap();
    assert!(img.color().has_alpha(), "{:?}", img.color());
    let rgba = img.to_rgba8();
    assert!(
        rgba.get_pixel(1, 48)[3] < 100,
        "the left edge stays transparent"
    );
    assert!(
        rgba.get_pixel(94, 48)[3] > 150,
        "the right edge stays opaque"
    );
}
