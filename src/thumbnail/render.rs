//! Decoding and resizing one thumbnail (on a blocking worker), its output encoding, and the
//! fixed tables of the image types thumbnailed and the file extensions served.

use crate::config::ThumbnailSize;
use crate::error::ApiError;
use media_ledger_events::ThumbnailMethod;
use std::io::Cursor;

/// Source types we decode.
pub const THUMBNAILABLE: &[&str] = &["image/jpeg", "image/png", "image/gif", "image/webp"];

/// The extension a thumbnail of `content_type` is served with: from this table only (a
/// content type's text never reaches `Content-Disposition`).
pub fn extension(content_type: &str) -> &'static str {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    match essence.as_str() {
        "image/jpeg" => "jpg",
        "image/png" => "png",
        "image/gif" => "gif",
        "image/webp" => "webp",
        _ => "bin",
    }
}

pub(super) fn cannot(why: &str) -> ApiError {
    ApiError::CannotThumbnail(why.to_owned())
}

/// Decodes, checks and resizes; `None` when the original is no larger than the size (serve
/// it as is). The output format is [`encode`]'s choice.
pub(super) fn render(
    source: &[u8],
    size: ThumbnailSize,
    method: ThumbnailMethod,
    cfg: &crate::config::ThumbnailsConfig,
) -> Result<Option<(Vec<u8>, &'static str)>, ApiError> {
    let reader = image::ImageReader::new(Cursor::new(source))
        .with_guessed_format()
        .map_err(|_| cannot("cannot read the image"))?;
    let format = reader
        .format()
        .ok_or_else(|| cannot("unknown image format"))?;
    // The JPEG decoder fills in missing data: refuse a file cut short (no end-of-image
    // marker near its end) rather than store a thumbnail of a damaged image.
    if format == image::ImageFormat::Jpeg {
        let tail = source
            .get(source.len().saturating_sub(1024)..)
            .unwrap_or_default();
        if !tail.windows(2).any(|w| w == [0xFF, 0xD9]) {
            return Err(cannot("the JPEG is truncated"));
        }
    }
    let (w, h) = reader
        .into_dimensions()
        .map_err(|_| cannot("cannot read the image header"))?;
    if u64::from(w) * u64::from(h) > cfg.max_pixels {
        return Err(cannot("the image has too many pixels to thumbnail"));
    }
    if w <= size.width && h <= size.height {
        return Ok(None);
    }
    let mut reader = image::ImageReader::with_format(Cursor::new(source), format);
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(w);
    limits.max_image_height = Some(h);
    limits.max_alloc = Some(cfg.max_alloc_bytes);
    reader.limits(limits);
    let img = reader
        .decode()
        .map_err(|_| cannot("the image cannot be decoded"))?;
    let out = match method {
        ThumbnailMethod::Crop => img.resize_to_fill(
            size.width,
            size.height,
            image::imageops::FilterType::Triangle,
        ),
        ThumbnailMethod::Scale => img.resize(
            size.width,
            size.height,
            image::imageops::FilterType::Triangle,
        ),
    };
    encode(out, format)
}

/// The thumbnail's bytes and type: JPEG (quality 80) for photos — JPEG sources, and WebP
/// sources without transparency, as Synapse does — else PNG, compressed with zlib's best level
/// and adaptive filters, 8 bits per channel, with an alpha channel only where a pixel is not
/// opaque (a PNG of a resized image is several times larger with the encoder's fast default).
fn encode(
    out: image::DynamicImage,
    format: image::ImageFormat,
) -> Result<Option<(Vec<u8>, &'static str)>, ApiError> {
    use image::codecs::png::{CompressionType, FilterType, PngEncoder};
    use image::DynamicImage;
    let opaque = !out.color().has_alpha() || out.to_rgba8().pixels().all(|p| p[3] == u8::MAX);
    let photo =
        format == image::ImageFormat::Jpeg || (format == image::ImageFormat::WebP && opaque);
    let mut bytes = Vec::new();
    if photo {
        let rgb = out.to_rgb8();
        let mut enc = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut bytes, 80);
        enc.encode_image(&rgb).map_err(ApiError::internal)?;
        return Ok(Some((bytes, "image/jpeg")));
    }
    let grey = !out.color().has_color();
    let reduced = match (grey, opaque) {
        (true, true) => DynamicImage::ImageLuma8(out.to_luma8()),
        (true, false) => DynamicImage::ImageLumaA8(out.to_luma_alpha8()),
        (false, true) => DynamicImage::ImageRgb8(out.to_rgb8()),
        (false, false) => DynamicImage::ImageRgba8(out.to_rgba8()),
    };
    let enc = PngEncoder::new_with_quality(&mut bytes, CompressionType::Best, FilterType::Adaptive);
    reduced
        .write_with_encoder(enc)
        .map_err(ApiError::internal)?;
    Ok(Some((bytes, "image/png")))
}
