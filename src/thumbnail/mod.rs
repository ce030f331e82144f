//! Thumbnails: pick a configured size, generate it once, store it as a blob, record it.
//!
//! Generation is bounded ([`bounds`]): a request takes a place among `workers` generations and
//! `max_queued` waiting ones (beyond, 429 `M_LIMIT_EXCEEDED` with `retry_after_ms`), and reads
//! the source only once it holds a worker, so at most `workers` sources are in memory. Sources
//! above `thumbnails.max_source_bytes` or with more pixels than `max_pixels` (read from the
//! header before decoding) are refused; decoders run with an allocation limit on the blocking
//! pool, under a timeout ([`render`]). A render that fails is remembered per (source SHA-256,
//! size, method), so the same junk is decoded once and later requests get the same answer.
//! Concurrent requests for the same missing thumbnail generate it once (the others wait on a
//! per-thumbnail lock and then find it recorded). Only a requester with an identity (a token,
//! a signed federation request) makes a generation; others are served what exists. Animated
//! sources are thumbnailed from their first frame (the spec lets a server answer
//! `animated=true` with a still).

pub mod bounds;
pub mod render;

use crate::coalesce::Coalescer;
use crate::config::{Config, DatastoreKind, ThumbnailMethodConfig, ThumbnailSize};
use crate::datastore::Datastores;
use crate::error::ApiError;
use crate::ledger::{Command, Conflict, Ledger, LedgerError};
use bounds::{Admission, FailedRenders, Failure};
use futures_util::StreamExt;
use media_ledger_events::{
    Actor, MediaRef, RequestId, Sha256, ThumbnailGenerated, ThumbnailMethod,
};
use media_ledger_projections::media_index::MediaRecord;
use media_ledger_projections::names;
use media_ledger_projections::thumbnails::{self, ThumbRecord};
use render::{cannot, render, THUMBNAILABLE};
use sha2::Digest;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;

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
        format!("thumbnail.{}", render::extension(content_type))
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
    admission: Admission,
    failed: FailedRenders,
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
        let admission = Admission::new(config.thumbnails.workers, config.thumbnails.max_queued);
        Self {
            ledger,
            datastores,
            config,
            admission,
            failed: FailedRenders::default(),
            inflight: Coalescer::default(),
        }
    }

    /// The thumbnail of `media` (whose record is `record`) for a request of this size.
    /// `requester` is who generates a missing thumbnail; `None` (an anonymous legacy request)
    /// is served only what exists: 404 `M_NOT_FOUND` for a thumbnail not generated yet.
    pub async fn get(
        &self,
        requester: Option<Actor>,
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
            &self.ledger.view(names::THUMBNAILS)?,
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
        let failed_key = (record.sha256, size.width, size.height, m);
        if let Some(f) = self.failed.get(&failed_key) {
            return Err(f.error());
        }
        let Some(actor) = requester else {
            return Err(ApiError::NotFound(
                "this thumbnail has not been generated; request it with an access token".into(),
            ));
        };
        // One generation per thumbnail: later requests wait, then find it recorded (or its
        // failure remembered).
        let key = thumbnails::thumb_key(media, size.width, size.height, m, animated);
        let work = async {
            if let Some(t) = thumbnails::get(
                &self.ledger.view(names::THUMBNAILS)?,
                media,
                size.width,
                size.height,
                m,
                animated,
            )? {
                return Ok(Thumb::Stored(t));
            }
            if let Some(f) = self.failed.get(&failed_key) {
                return Err(f.error());
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
        // A place in the queue, then a worker, and only then the source in memory: at most
        // `workers` sources are held at once, however many requests arrive.
        let place = self.admission.enter()?;
        let permit = self.admission.worker(&place).await?;
        let source = self.read_source(record).await?;
        let cfg = self.config.thumbnails.clone();
        let work = tokio::task::spawn_blocking(move || {
            // The worker stays taken until the decoder returns, even after a timeout.
            let _permit = permit;
            render(&source, size, method, &cfg)
        });
        let rendered = match tokio::time::timeout(
            Duration::from_millis(self.config.thumbnails.timeout_ms),
            work,
        )
        .await
        {
            Err(_) => Err(bounds::timed_out()),
            Ok(joined) => joined.map_err(ApiError::internal).and_then(|r| r),
        };
        drop(place);
        let rendered = rendered.inspect_err(|e| {
            if let Some(f) = Failure::of(e) {
                tracing::info!(sha256 = %record.sha256, width = size.width, height = size.height, error = %e, "thumbnail render failed; remembered");
                self.failed
                    .remember((record.sha256, size.width, size.height, method), f);
            }
        })?;
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
            Err(e) => return Err(e.into()),
        }
        thumbnails::get(
            &self.ledger.view(names::THUMBNAILS)?,
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
        let mut stream = crate::media::read::open_blob(
            &self.ledger,
            &self.datastores,
            &record.sha256,
            0,
            record.size_bytes,
        )
        .await?;
        // Bounded by the record's size (already checked against `max_source_bytes`), whatever
        // the stream yields.
        let limit = record
            .size_bytes
            .min(self.config.thumbnails.max_source_bytes);
        let mut out = Vec::with_capacity(usize::try_from(limit).unwrap_or(0));
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(ApiError::internal)?;
            if (out.len() as u64).saturating_add(chunk.len() as u64) > limit {
                return Err(ApiError::Internal(format!(
                    "blob {} is longer than its record says",
                    record.sha256
                )));
            }
            out.extend_from_slice(&chunk);
        }
        Ok(out)
    }
}
