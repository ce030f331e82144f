//! The link preview cache: the latest preview of each (homeserver, URL), and which media are
//! preview images.
//!
//! Keys:
//! - `b'p' ‖ homeserver ‖ 0x00 ‖ url` → [`PreviewRecord`]: the latest preview fetched for a
//!   user of that homeserver (freshness is the reader's business: a projection has no clock).
//! - `b'i' ‖ media key` → [`ImageOf`]: a media stored as a preview's image, until it is purged
//!   (`purge/old` purges such images once no fresh preview offers them).
//!
//! A preview goes when `url.previews_expired.v1` lists it, or when its image is purged (the
//! next request fetches it again).

use crate::{get_value, media_key, put_value, KvRead, KvTx, Projection, ProjectionError};
use media_ledger_events::{Actor, Envelope, Event, MediaRef, Seq, ServerName};
use serde::{Deserialize, Serialize};

const NAME: &str = crate::names::URL_PREVIEWS.as_str();

/// Prefix of every preview key.
pub const PREVIEW_PREFIX: &[u8] = b"p";
/// Prefix of every preview-image key.
pub const IMAGE_PREFIX: &[u8] = b"i";

/// One cached preview.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreviewRecord {
    /// The `url.previewed.v1` event.
    pub seq: Seq,
    /// When it was fetched (envelope time).
    pub fetched_at_ms: u64,
    /// Who asked.
    pub actor: Actor,
    /// The OpenGraph object, JSON text.
    pub og: String,
    /// Its stored image.
    pub image: Option<MediaRef>,
}

/// The preview a media was stored for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageOf {
    /// The `url.previewed.v1` event.
    pub seq: Seq,
    /// Its homeserver.
    pub homeserver: ServerName,
    /// Its URL.
    pub url: String,
}

/// The key of the preview of `url` for `homeserver`.
pub fn preview_key(homeserver: &ServerName, url: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(2 + homeserver.as_str().len() + url.len());
    k.extend_from_slice(PREVIEW_PREFIX);
    k.extend_from_slice(homeserver.as_str().as_bytes());
    k.push(0);
    k.extend_from_slice(url.as_bytes());
    k
}

/// Parses a key made by [`preview_key`].
pub fn parse_preview_key(key: &[u8]) -> Option<(ServerName, String)> {
    let rest = key.strip_prefix(PREVIEW_PREFIX)?;
    let nul = rest.iter().position(|&b| b == 0)?;
    let hs = std::str::from_utf8(rest.get(..nul)?).ok()?.parse().ok()?;
    let url = std::str::from_utf8(rest.get(nul + 1..)?).ok()?.to_owned();
    Some((hs, url))
}

/// The key marking `media` as a preview image.
pub fn image_key(media: &MediaRef) -> Vec<u8> {
    let mut k = IMAGE_PREFIX.to_vec();
    k.extend_from_slice(&media_key(media));
    k
}

/// The cached preview of `url` for `homeserver`, fresh or not.
pub fn get(
    kv: &(impl KvRead + ?Sized),
    homeserver: &ServerName,
    url: &str,
) -> Result<Option<PreviewRecord>, ProjectionError> {
    get_value(NAME, kv, &preview_key(homeserver, url))
}

/// The preview `media` was stored for, if it is a preview image.
pub fn image_of(
    kv: &(impl KvRead + ?Sized),
    media: &MediaRef,
) -> Result<Option<ImageOf>, ProjectionError> {
    get_value(NAME, kv, &image_key(media))
}

/// Decodes a stored [`PreviewRecord`] (for scans).
pub fn decode_record(bytes: &[u8]) -> Result<PreviewRecord, ProjectionError> {
    media_ledger_events::codec::decode(bytes)
        .map_err(|source| ProjectionError::Corrupt { name: NAME, source })
}

/// The preview cache projection.
pub struct UrlPreviews;

fn drop_preview(tx: &mut dyn KvTx, key: &[u8]) -> Result<(), ProjectionError> {
    tx.delete(key);
    Ok(())
}

impl Projection for UrlPreviews {
    fn name(&self) -> &'static str {
        NAME
    }
    fn version(&self) -> u32 {
        1
    }
    fn apply(&self, env: &Envelope, tx: &mut dyn KvTx) -> Result<(), ProjectionError> {
        match &env.event {
            Event::UrlPreviewedV1(e) => {
                let record = PreviewRecord {
                    seq: env.seq,
                    fetched_at_ms: env.recorded_at_ms,
                    actor: env.actor.clone(),
                    og: e.og.clone(),
                    image: e.image.clone(),
                };
                put_value(NAME, tx, &preview_key(&e.homeserver, &e.url), &record)?;
                if let Some(image) = &e.image {
                    let of = ImageOf {
                        seq: env.seq,
                        homeserver: e.homeserver.clone(),
                        url: e.url.clone(),
                    };
                    put_value(NAME, tx, &image_key(image), &of)?;
                }
                Ok(())
            }
            Event::UrlPreviewsExpiredV1(e) => {
                for (hs, url) in &e.previews {
                    drop_preview(tx, &preview_key(hs, url))?;
                }
                Ok(())
            }
            Event::MediaPurgedV1(e) => {
                for m in &e.media {
                    let key = image_key(&m.media);
                    let Some(of) = get_value::<ImageOf>(NAME, tx, &key)? else {
                        continue;
                    };
                    tx.delete(&key);
                    let pkey = preview_key(&of.homeserver, &of.url);
                    let current: Option<PreviewRecord> = get_value(NAME, tx, &pkey)?;
                    if current.is_some_and(|p| p.image.as_ref() == Some(&m.media)) {
                        drop_preview(tx, &pkey)?;
                    }
                }
                Ok(())
            }
            Event::MediaUploadedV1(_)
            | Event::AsyncUploadCreatedV1(_)
            | Event::MediaAccessedV1(_)
            | Event::TransferStartedV1(_)
            | Event::BlobMovedV1(_)
            | Event::BlobSourceDeletedV1(_)
            | Event::BlobTransferFailedV1(_)
            | Event::TransferFinishedV1(_)
            | Event::ThumbnailGeneratedV1(_)
            | Event::RemoteMediaCachedV1(_)
            | Event::MediaQuarantinedV1(_)
            | Event::MediaUnquarantinedV1(_)
            | Event::MediaAttributesSetV1(_)
            | Event::BlobDeletedV1(_)
            | Event::MediaImportedV1(_)
            | Event::MediaMigratedV1(_)
            | Event::MediaExportedV1(_)
            | Event::ImportStartedV1(_)
            | Event::ImportProgressV1(_) => Ok(()),
        }
    }
}
