//! Thumbnails: pick a configured size, generate it once, store it as a blob, record it.
//!
//! Generation is bounded: sources above `thumbnails.max_source_bytes` or with more pixels than
//! `max_pixels` (read from the header before decoding) are refused; decoders run with an
//! allocation limit, on the blocking pool behind a semaphore of `workers` permits, under a
//! timeout. Concurrent requests for the same missing thumbnail generate it once (the others
//! wait on a per-thumbnail lock and then find it recorded). Animated sources are thumbnailed
//! from their first frame (the spec lets a server answer `animated=true` with a still).

use crate::coalesce::Coalescer;
use crate::config::{Config, DatastoreKind, ThumbnailMethodConfig, ThumbnailSize};
use crate::datastore::Datastores;
use crate::error::ApiError;
use crate::ledger::{Command, Conflict, Ledger, LedgerError};
use futures_util::StreamExt;
use media_ledger_events::{
    Actor, MediaRef, RequestId, Sha256, ThumbnailGenerated, ThumbnailMethod,
};
use media_ledger_projections::media_index::MediaRecord;
use media_ledger_projections::thumbnails::{self, ThumbRecord};
use sha2::Digest;
use std::io::Cursor;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::sync::Semaphore;

/// Source types we decode.
const THUMBNAILABLE: &[&str] = &["image/jpeg", "image/png", "image/gif", "image/webp"];

/// What a thumbnail request resolves to.
pub enum Thumb {
    /// A stored thumbnail.
    Stored(ThumbRecord),
    /// The original is small enough (and of a thumbnail type) to be its own thumbnail.
    Original,
}

impl Thumb {
    /// The blob to serve, its length and content type (`record` is the media's).
    pub fn served(&self, record: &MediaRecord) -> (Sha256, u64, String) {
        match self {
            Thumb::Stored(t) => (t.sha256, t.size_bytes, t.content_type.served()),
            Thumb::Original => (
                record.sha256,
                record.size_bytes,
                record
                    .content_type
                    .as_ref()
                    .map_or_else(|| "application/octet-stream".to_owned(), |c| c.served()),
            ),
        }
    }

    /// The file name a thumbnail is served as.
    pub fn file_name(content_type: &str) -> String {
        let ext = if content_type.contains("jpeg") {
            "jpg"
        } else {
            content_type.rsplit('/').next().unwrap_or("bin")
        };
        format!("thumbnail.{ext}")
    }
}

/// What a client asked for.
#[derive(Debug, Clone, Copy)]
pub struct ThumbRequest {
    /// Desired width.
    pub width: u32,
    /// Desired height.
    pub height: u32,
    /// Crop or scale.
    pub method: ThumbnailMethod,
    /// `animated=true`.
    pub animated: bool,
}

/// The thumbnail service.
pub struct Thumbnailer {
    ledger: Arc<Ledger>,
    datastores: Arc<Datastores>,
    config: Arc<Config>,
    pool: Arc<Semaphore>,
    inflight: Coalescer<Vec<u8>>,
}

/// The configured size that serves a request: the smallest of the method at least as large
/// as asked, else the largest of the method, else the nearest of any method.
pub fn pick_size(
    sizes: &[ThumbnailSize],
    width: u32,
    height: u32,
    method: ThumbnailMethod,
) -> Option<ThumbnailSize> {
    let want = match method {
        ThumbnailMethod::Crop => ThumbnailMethodConfig::Crop,
        ThumbnailMethod::Scale => ThumbnailMethodConfig::Scale,
    };
    let area = |s: &ThumbnailSize| u64::from(s.width) * u64::from(s.height);
    let same: Vec<&ThumbnailSize> = sizes.iter().filter(|s| s.method == want).collect();
    let pool = if same.is_empty() {
        sizes.iter().collect()
    } else {
        same
    };
    pool.iter()
        .filter(|s| s.width >= width && s.height >= height)
        .min_by_key(|s| area(s))
        .or_else(|| pool.iter().max_by_key(|s| area(s)))
        .map(|s| **s)
}

fn method_of(s: &ThumbnailSize) -> ThumbnailMethod {
    match s.method {
        ThumbnailMethodConfig::Crop => ThumbnailMethod::Crop,
        ThumbnailMethodConfig::Scale => ThumbnailMethod::Scale,
    }
}

impl Thumbnailer {
    /// Builds the service.
    pub fn new(ledger: Arc<Ledger>, datastores: Arc<Datastores>, config: Arc<Config>) -> Self {
        let workers = config.thumbnails.workers.max(1);
        Self {
            ledger,
            datastores,
            config,
            pool: Arc::new(Semaphore::new(workers)),
            inflight: Coalescer::default(),
        }
    }

    /// The thumbnail of `media` (whose record is `record`) for a request of this size.
    pub async fn get(
        &self,
        actor: Actor,
        media: &MediaRef,
        record: &MediaRecord,
        req: ThumbRequest,
    ) -> Result<(Thumb, ThumbnailSize), ApiError> {
        let ThumbRequest {
            width,
            height,
            method,
            animated,
        } = req;
        let cfg = &self.config.thumbnails;
        if !cfg.enabled {
            return Err(ApiError::NotFound("thumbnails are disabled".into()));
        }
        let size = pick_size(&cfg.sizes, width, height, method)
            .ok_or_else(|| ApiError::NotFound("no thumbnail sizes configured".into()))?;
        let m = method_of(&size);
        if let Some(t) = thumbnails::get(
            &self.ledger.view("thumbnails")?,
            media,
            size.width,
            size.height,
            m,
            animated,
        )? {
            return Ok((Thumb::Stored(t), size));
        }
        let essence = record
            .content_type
            .as_ref()
            .map(|c| c.essence())
            .unwrap_or_default();
        if !THUMBNAILABLE.contains(&essence.as_str()) {
            return Err(cannot("this media is not an image we can thumbnail"));
        }
        if record.size_bytes > cfg.max_source_bytes {
            return Err(cannot("this media is too large to thumbnail"));
        }
        // One generation per thumbnail: later requests wait, then find it recorded.
        let key = thumbnails::thumb_key(media, size.width, size.height, m, animated);
        let work = async {
            if let Some(t) = thumbnails::get(
                &self.ledger.view("thumbnails")?,
                media,
                size.width,
                size.height,
                m,
                animated,
            )? {
                return Ok(Thumb::Stored(t));
            }
            self.generate(actor, media, record, size, m, animated).await
        };
        self.inflight.run(key, work).await.map(|t| (t, size))
    }

    async fn generate(
        &self,
        actor: Actor,
        media: &MediaRef,
        record: &MediaRecord,
        size: ThumbnailSize,
        method: ThumbnailMethod,
        animated: bool,
    ) -> Result<Thumb, ApiError> {
        let source = self.read_source(record).await?;
        let cfg = self.config.thumbnails.clone();
        let permit = self
            .pool
            .clone()
            .acquire_owned()
            .await
            .map_err(ApiError::internal)?;
        let work = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            render(&source, size, method, &cfg)
        });
        let rendered = tokio::time::timeout(
            Duration::from_millis(self.config.thumbnails.timeout_ms),
            work,
        )
        .await
        .map_err(|_| ApiError::Unavailable("thumbnail generation timed out".into()))?
        .map_err(ApiError::internal)??;
        let Some((bytes, content_type)) = rendered else {
            return Ok(Thumb::Original);
        };
        let sha = Sha256(sha2::Sha256::digest(&bytes).into());
        let ds = crate::media::pick_datastore(
            &self.ledger,
            &self.datastores,
            DatastoreKind::Thumbnails,
        )?;
        let spool = ds
            .spool_dir()
            .join(format!("thumb-{}.part", crate::media::new_media_id()?));
        let _blob = crate::blob_lock::lock(&sha).await;
        let stored = async {
            let mut f = tokio::fs::File::create(&spool)
                .await
                .map_err(ApiError::internal)?;
            f.write_all(&bytes).await.map_err(ApiError::internal)?;
            // tokio writes in the background: flush before anyone reads the file.
            f.flush().await.map_err(ApiError::internal)?;
            if ds.spool_needs_sync() {
                f.sync_all().await.map_err(ApiError::internal)?;
            }
            drop(f);
            Ok::<_, ApiError>(ds.commit(&spool, &sha).await?)
        }
        .await;
        let location = match stored {
            Ok(l) => l,
            Err(e) => {
                let _ = tokio::fs::remove_file(&spool).await;
                return Err(e);
            }
        };
        let event = ThumbnailGenerated {
            media: media.clone(),
            width: size.width,
            height: size.height,
            method,
            animated,
            sha256: sha,
            size_bytes: bytes.len() as u64,
            content_type: content_type.parse().map_err(ApiError::internal)?,
            datastore: ds.id().clone(),
            location,
        };
        match self
            .ledger
            .submit(
                actor,
                RequestId(format!("thumb-{}", media.media_id)),
                Command::RecordThumbnail(event),
            )
            .await
        {
            Ok(_) | Err(LedgerError::Conflict(Conflict::ThumbnailExists)) => {}
            Err(LedgerError::Conflict(Conflict::UnknownMedia)) => {
                return Err(ApiError::NotFound("media not found".into()))
            }
            Err(e) => return Err(e.into()),
        }
        thumbnails::get(
            &self.ledger.view("thumbnails")?,
            media,
            size.width,
            size.height,
            method,
            animated,
        )?
        .map(Thumb::Stored)
        .ok_or_else(|| ApiError::Internal("thumbnail vanished after recording".into()))
    }

    async fn read_source(&self, record: &MediaRecord) -> Result<Vec<u8>, ApiError> {
        let mut stream = crate::media::open_blob(
            &self.ledger,
            &self.datastores,
            &record.sha256,
            0,
            record.size_bytes,
        )
        .await?;
        let mut out = Vec::with_capacity(usize::try_from(record.size_bytes).unwrap_or(0));
        while let Some(chunk) = stream.next().await {
            out.extend_from_slice(&chunk.map_err(ApiError::internal)?);
        }
        Ok(out)
    }
}

fn cannot(why: &str) -> ApiError {
    ApiError::CannotThumbnail(why.to_owned())
}

/// Decodes, checks and resizes; `None` when the original is no larger than the size (serve
/// it as is). PNG output, JPEG for JPEG sources.
fn render(
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
