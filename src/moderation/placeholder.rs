//! The generated "media not allowed" image served in place of quarantined media when
//! `quarantine.replace_downloads` / `replace_thumbnails` are set.

use crate::error::ApiError;
use image::{ImageBuffer, Rgb};

/// Largest side of a placeholder (thumbnail sizes are configured, so this only bounds bugs).
const MAX_SIDE: u32 = 1024;

/// A PNG of `width`×`height`: grey with a red "no entry" ring and bar.
pub fn png(width: u32, height: u32) -> Result<Vec<u8>, ApiError> {
    let (w, h) = (width.clamp(1, MAX_SIDE), height.clamp(1, MAX_SIDE));
    let (cx, cy) = (f64::from(w) / 2.0, f64::from(h) / 2.0);
    let r = cx.min(cy) * 0.8;
    let ring = (r * 0.15).max(1.0);
    let img = ImageBuffer::from_fn(w, h, |x, y| {
        let dx = f64::from(x) + 0.5 - cx;
        let dy = f64::from(y) + 0.5 - cy;
        let d = (dx * dx + dy * dy).sqrt();
        let on_ring = d <= r && d >= r - ring;
        let on_bar = d < r && (dx + dy).abs() / std::f64::consts::SQRT_2 <= ring / 2.0;
        if on_ring || on_bar {
            Rgb([200u8, 30, 30])
        } else {
            Rgb([90u8, 90, 90])
        }
    });
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png)
        .map_err(ApiError::internal)?;
    Ok(out.into_inner())
}
