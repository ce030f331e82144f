//! Media index: `(origin, media_id)` → everything the HTTP layer needs to serve a media.
//!
//! Invariant: a key exists exactly for the media that were uploaded and not removed; its
//! `last_access_ms` is the time of the latest upload or recorded access.

use crate::{
    get_value, invariant, media_key, put_value, KvRead, KvTx, Projection, ProjectionError,
};
use media_ledger_events::{
    Actor, BlobLocation, ContentType, DatastoreId, Envelope, Event, MediaRef, Sha256,
};
use serde::{Deserialize, Serialize};

const NAME: &str = "media_index";

/// Whether the media was uploaded here or cached from another server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum MediaKind {
    /// Uploaded to one of our homeservers.
    Local,
    /// Fetched from a remote server and cached.
    Remote,
}

/// One media as the index holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MediaRecord {
    /// Digest of the content.
    pub sha256: Sha256,
    /// Length of the content.
    pub size_bytes: u64,
    /// As declared at upload.
    pub content_type: Option<ContentType>,
    /// The upload's file name.
    pub upload_name: Option<String>,
    /// Who uploaded it.
    pub uploader: Actor,
    /// When it was uploaded (envelope time).
    pub created_at_ms: u64,
    /// Local or remote.
    pub kind: MediaKind,
    /// The datastore holding its blob.
    pub datastore: DatastoreId,
    /// Where the blob is inside that datastore.
    pub location: BlobLocation,
    /// Whether downloads are refused.
    pub quarantined: bool,
    /// Latest upload or recorded access (envelope time).
    pub last_access_ms: u64,
}

/// The media index projection.
pub struct MediaIndex;

impl Projection for MediaIndex {
    fn name(&self) -> &'static str {
        NAME
    }
    fn version(&self) -> u32 {
        1
    }
    fn apply(&self, env: &Envelope, tx: &mut dyn KvTx) -> Result<(), ProjectionError> {
        match &env.event {
            Event::MediaUploadedV1(e) => {
                let key = media_key(&e.media);
                if tx.get(&key)?.is_some() {
                    return Err(invariant(NAME, format!("{} uploaded twice", e.media)));
                }
                let record = MediaRecord {
                    sha256: e.sha256,
                    size_bytes: e.size_bytes,
                    content_type: e.content_type.clone(),
                    upload_name: e.upload_name.clone(),
                    uploader: e.uploader.clone(),
                    created_at_ms: env.recorded_at_ms,
                    kind: MediaKind::Local,
                    datastore: e.datastore.clone(),
                    location: e.location.clone(),
                    quarantined: false,
                    last_access_ms: env.recorded_at_ms,
                };
                put_value(NAME, tx, &key, &record)
            }
            Event::MediaAccessedV1(e) => {
                let key = media_key(&e.media);
                let mut record: MediaRecord = get_value(NAME, tx, &key)?
                    .ok_or_else(|| invariant(NAME, format!("access to unknown {}", e.media)))?;
                record.last_access_ms = record.last_access_ms.max(env.recorded_at_ms);
                put_value(NAME, tx, &key, &record)
            }
            Event::AsyncUploadCreatedV1(_) => Ok(()),
        }
    }
}

/// The record of `media`, if it exists.
pub fn get(
    kv: &(impl KvRead + ?Sized),
    media: &MediaRef,
) -> Result<Option<MediaRecord>, ProjectionError> {
    get_value(NAME, kv, &media_key(media))
}

/// Decodes a stored value of this projection (for scans done by the caller).
pub fn decode_record(bytes: &[u8]) -> Result<MediaRecord, ProjectionError> {
    media_ledger_events::codec::decode(bytes)
        .map_err(|source| ProjectionError::Corrupt { name: NAME, source })
}
