//! Decoding and resizing one thumbnail (on a blocking worker), and the fixed tables of the
//! image types thumbnailed and the file extensions served.

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
/// it as is). PNG output, JPEG for JPEG sources.
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
    let mut bytes = Vec::new();
    let content_type = if format == image::ImageFormat::Jpeg {
        let rgb = out.to_rgb8();
        let mut enc = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut bytes, 80);
        enc.encode_image(&rgb).map_err(ApiError::internal)?;
        "image/jpeg"
    } else {
        out.write_to(&mut Cursor::new(&mut bytes), image::ImageFormat::Png)
            .map_err(ApiError::internal)?;
        "image/png"
    };
    Ok(Some((bytes, content_type)))
}
