//! Thumbnails: which sizes of which media exist, and the blob of each.
//!
//! Key: [`thumb_key`] = `media key ‖ 0x00 ‖ width (4 BE) ‖ height (4 BE) ‖ method ‖ animated`
//! → [`ThumbRecord`]. A media id never contains 0x00, so every thumbnail of a media shares the
//! prefix `media key ‖ 0x00`. Where the blob lives is in `hash_refs` (a transfer moves it
//! without touching this projection).

use crate::{
    get_value, invariant, media_key, put_value, KvRead, KvTx, Projection, ProjectionError,
};
use media_ledger_events::{ContentType, Envelope, Event, MediaRef, Sha256, ThumbnailMethod};
use serde::{Deserialize, Serialize};

const NAME: &str = crate::names::THUMBNAILS.as_str();

/// One stored thumbnail.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ThumbRecord {
    /// Digest of its bytes (the blob, in `hash_refs`).
    pub sha256: Sha256,
    /// Length of its bytes.
    pub size_bytes: u64,
    /// `image/png` or `image/jpeg`.
    pub content_type: ContentType,
    /// When it was generated (envelope time).
    pub created_at_ms: u64,
}

/// The key of one thumbnail of `media`.
pub fn thumb_key(
    media: &MediaRef,
    width: u32,
    height: u32,
    method: ThumbnailMethod,
    animated: bool,
) -> Vec<u8> {
    let mut k = media_prefix(media);
    k.extend_from_slice(&width.to_be_bytes());
    k.extend_from_slice(&height.to_be_bytes());
    k.push(match method {
        ThumbnailMethod::Crop => 0,
        ThumbnailMethod::Scale => 1,
    });
    k.push(u8::from(animated));
    k
}

/// The size, method and animation of a key made by [`thumb_key`] (its last 10 bytes).
pub fn parse_thumb_key(key: &[u8]) -> Option<(u32, u32, ThumbnailMethod, bool)> {
    let tail = key.get(key.len().checked_sub(10)?..)?;
    let width = u32::from_be_bytes(tail.get(0..4)?.try_into().ok()?);
    let height = u32::from_be_bytes(tail.get(4..8)?.try_into().ok()?);
    let method = match tail.get(8)? {
        0 => ThumbnailMethod::Crop,
        1 => ThumbnailMethod::Scale,
        _ => return None,
    };
    let animated = *tail.get(9)? == 1;
    Some((width, height, method, animated))
}

/// The prefix shared by every thumbnail of `media`.
pub fn media_prefix(media: &MediaRef) -> Vec<u8> {
    let mut k = media_key(media);
    k.push(0);
    k
}

/// The thumbnails projection.
pub struct Thumbnails;

impl Projection for Thumbnails {
    fn name(&self) -> &'static str {
        NAME
    }
    fn version(&self) -> u32 {
        // 2: purges remove thumbnails.
        2
    }
    fn apply(&self, env: &Envelope, tx: &mut dyn KvTx) -> Result<(), ProjectionError> {
        match &env.event {
            Event::ThumbnailGeneratedV1(e) => {
                let key = thumb_key(&e.media, e.width, e.height, e.method, e.animated);
                if tx.get(&key)?.is_some() {
                    return Err(invariant(
                        NAME,
                        format!("thumbnail of {} recorded twice", e.media),
                    ));
                }
                let r = ThumbRecord {
                    sha256: e.sha256,
                    size_bytes: e.size_bytes,
                    content_type: e.content_type.clone(),
                    created_at_ms: env.recorded_at_ms,
                };
                put_value(NAME, tx, &key, &r)
            }
            Event::MediaPurgedV1(e) => {
                for t in &e.thumbnails {
                    tx.delete(&thumb_key(
                        &t.media, t.width, t.height, t.method, t.animated,
                    ));
                }
                Ok(())
            }
            Event::MediaQuarantinedV1(_)
            | Event::MediaUnquarantinedV1(_)
            | Event::MediaAttributesSetV1(_)
            | Event::BlobDeletedV1(_)
            | Event::MediaUploadedV1(_)
            | Event::AsyncUploadCreatedV1(_)
            | Event::MediaAccessedV1(_)
            | Event::TransferStartedV1(_)
            | Event::BlobMovedV1(_)
            | Event::BlobSourceDeletedV1(_)
            | Event::BlobTransferFailedV1(_)
            | Event::TransferFinishedV1(_)
            | Event::RemoteMediaCachedV1(_)
            | Event::MediaImportedV1(_)
            | Event::UrlPreviewedV1(_)
            | Event::UrlPreviewsExpiredV1(_)
            | Event::MediaExportedV1(_)
            | Event::ImportStartedV1(_)
            | Event::ImportProgressV1(_)
            | Event::MediaMigratedV1(_) => Ok(()),
        }
    }
}

/// The thumbnail of `media` at this size, if generated.
pub fn get(
    kv: &(impl KvRead + ?Sized),
    media: &MediaRef,
    width: u32,
    height: u32,
    method: ThumbnailMethod,
    animated: bool,
) -> Result<Option<ThumbRecord>, ProjectionError> {
    get_value(NAME, kv, &thumb_key(media, width, height, method, animated))
}

/// Decodes a stored value (for scans done by the caller).
pub fn decode_record(bytes: &[u8]) -> Result<ThumbRecord, ProjectionError> {
    media_ledger_events::codec::decode(bytes)
        .map_err(|source| ProjectionError::Corrupt { name: NAME, source })
}
