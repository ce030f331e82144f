//! A preview's image, stored like an upload: streamed into a local-media datastore's spool
//! (at most `url_previews.max_image_bytes`), hashed, its dimensions read from its header,
//! refused when its bytes are quarantined for the homeserver, then recorded as a
//! `media.uploaded.v1` of the requesting homeserver (the blob deduplicated like every other).

use super::fetch::{FetchError, Opened};
use crate::config::DatastoreKind;
use crate::error::ApiError;
use crate::media::write::{SpoolGuard, Spooled};
use crate::media::{new_media_id, pick_datastore, Spool, UploadMeta};
use bytes::Bytes;
use media_ledger_events::{Actor, ContentType, MediaRef, RequestId, ServerName};
use serde_json::{Map, Value};
use std::sync::Arc;

/// A stored preview image.
pub struct StoredImage {
    /// The new media.
    pub media: MediaRef,
    /// Its type.
    pub content_type: String,
    /// Pixels.
    pub width: u32,
    /// Pixels.
    pub height: u32,
    /// Bytes.
    pub size_bytes: u64,
}

impl StoredImage {
    /// Adds the image's OpenGraph fields to `og`.
    pub fn describe(&self, og: &mut Map<String, Value>) {
        og.insert("og:image".into(), Value::from(self.media.to_string()));
        og.insert(
            "og:image:type".into(),
            Value::from(self.content_type.clone()),
        );
        og.insert("og:image:width".into(), Value::from(self.width));
        og.insert("og:image:height".into(), Value::from(self.height));
        og.insert("matrix:image:size".into(), Value::from(self.size_bytes));
    }
}

/// The OpenGraph fields a stored image adds (removed when the image may not be offered).
pub const IMAGE_FIELDS: [&str; 5] = [
    "og:image",
    "og:image:type",
    "og:image:width",
    "og:image:height",
    "matrix:image:size",
];

/// The image type `content_type` names (its `type/subtype`, parameters dropped), if it is one.
pub fn is_image(content_type: Option<&str>) -> Option<ContentType> {
    let essence = ContentType::normalise(content_type?)?.essence();
    if !essence.starts_with("image/") {
        return None;
    }
    ContentType::normalise(&essence)
}

impl super::Previews {
    /// Stores the body of `opened` (an image response) as media of `homeserver`. `None` when
    /// it cannot be offered (too large, no readable dimensions, quarantined): a preview without
    /// image is still a preview.
    pub(super) async fn store_image(
        &self,
        actor: &Actor,
        request_id: &RequestId,
        homeserver: &ServerName,
        opened: Opened,
        content_type: ContentType,
    ) -> Result<Option<StoredImage>, ApiError> {
        let name = opened
            .url
            .path_segments()
            .and_then(|mut s| s.next_back().map(str::to_owned))
            .filter(|n| !n.is_empty() && n.len() <= 255 && !n.chars().any(char::is_control));
        let ds = pick_datastore(&self.ledger, &self.datastores, DatastoreKind::LocalMedia)?;
        let path = ds
            .spool_dir()
            .join(format!("preview-{}.part", new_media_id()?));
        // Removed if this future is dropped (the preview's timeout) before it is recorded.
        let mut guard = SpoolGuard(Some(path.clone()));
        let max = self.config.url_previews.max_image_bytes;
        let spool = Arc::new(tokio::sync::Mutex::new(Spool::create(&path, max).await?));
        let sink = spool.clone();
        let streamed = opened
            .stream(max, move |chunk: Bytes| {
                let sink = sink.clone();
                async move {
                    sink.lock()
                        .await
                        .push(&chunk)
                        .await
                        .map_err(|e| FetchError::Failed(e.to_string()))
                }
            })
            .await;
        let finished = match (streamed, Arc::try_unwrap(spool)) {
            (Ok(_), Ok(spool)) => spool.into_inner().finish(ds.spool_needs_sync()).await,
            (Err(e), _) => Err(ApiError::internal(e)),
            (Ok(_), Err(_)) => Err(ApiError::internal("preview image sink still shared")),
        };
        let (sha, size_bytes) = match finished {
            Ok(done) => done,
            Err(e) => {
                tracing::info!(error = %e, "preview image not stored");
                return Ok(None);
            }
        };
        let dims = {
            let path = path.clone();
            tokio::task::spawn_blocking(move || {
                image::ImageReader::open(&path)
                    .and_then(|r| r.with_guessed_format())
                    .ok()
                    .and_then(|r| r.into_dimensions().ok())
            })
            .await
            .ok()
            .flatten()
        };
        let Some((width, height)) = dims else {
            tracing::info!(content_type = %content_type, "preview image has no readable dimensions");
            return Ok(None);
        };
        let media = MediaRef::new(homeserver.clone(), new_media_id()?);
        let meta = UploadMeta {
            content_type: Some(content_type.clone()),
            upload_name: name,
        };
        // From here `record_spooled` owns the spool file.
        guard.0 = None;
        let spooled = Spooled {
            ds,
            path,
            sha,
            size_bytes,
        };
        match self
            .media
            .record_spooled(
                actor.clone(),
                request_id.clone(),
                media.clone(),
                None,
                meta,
                spooled,
            )
            .await
        {
            Ok(_) => Ok(Some(StoredImage {
                media,
                content_type: content_type.as_str().to_owned(),
                width,
                height,
                size_bytes,
            })),
            // Quarantined bytes are never offered.
            Err(ApiError::Forbidden(m)) => {
                tracing::info!(sha256 = %sha, reason = %m, "preview image refused");
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }
}
