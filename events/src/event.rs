//! The facts the ledger records.
//!
//! Each variant is one event type at one schema version; its name ends in its version. The
//! variant's *position* is part of the encoding (bincode writes the index), so variants are
//! only ever appended, never reordered or edited. A new version of a fact is a new variant,
//! and consumers handle both.

use crate::envelope::Actor;
use crate::ids::{BlobLocation, ContentType, DatastoreId, MediaRef, Sha256, UserId};
use serde::{Deserialize, Serialize};

/// One fact in the log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Event {
    /// Bytes were uploaded to a local media id (plain or async upload).
    MediaUploadedV1(MediaUploaded),
    /// A media id was reserved for a later asynchronous upload (`POST /v1/create`).
    AsyncUploadCreatedV1(AsyncUploadCreated),
    /// A media was served; drives last-access figures. Recorded without making the download
    /// wait, at most once per media per configured interval.
    MediaAccessedV1(MediaAccessed),
}

impl Event {
    /// The event type with its version, as shown by `media-ledger events`.
    pub fn type_name(&self) -> &'static str {
        match self {
            Event::MediaUploadedV1(_) => "media.uploaded.v1",
            Event::AsyncUploadCreatedV1(_) => "media.async_created.v1",
            Event::MediaAccessedV1(_) => "media.accessed.v1",
        }
    }

    /// The media the event is about.
    pub fn media(&self) -> &MediaRef {
        match self {
            Event::MediaUploadedV1(e) => &e.media,
            Event::AsyncUploadCreatedV1(e) => &e.media,
            Event::MediaAccessedV1(e) => &e.media,
        }
    }
}

/// Bytes were uploaded and are durable in `datastore` at `location` before this was appended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MediaUploaded {
    /// The new media.
    pub media: MediaRef,
    /// Digest of the bytes.
    pub sha256: Sha256,
    /// Length of the bytes.
    pub size_bytes: u64,
    /// As declared by the uploader.
    pub content_type: Option<ContentType>,
    /// The `filename` query parameter of the upload.
    pub upload_name: Option<String>,
    /// Who uploaded it.
    pub uploader: Actor,
    /// The datastore that holds the blob (an existing one when the bytes were a duplicate).
    pub datastore: DatastoreId,
    /// Where in that datastore.
    pub location: BlobLocation,
}

/// A media id was handed out for an asynchronous upload that only `owner` may fill.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AsyncUploadCreated {
    /// The reserved media.
    pub media: MediaRef,
    /// The only user allowed to upload to it.
    pub owner: UserId,
    /// After this time (ms since the epoch) the reservation is void.
    pub expires_at_ms: u64,
}

/// A media was downloaded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MediaAccessed {
    /// The media served.
    pub media: MediaRef,
    /// Its content digest (last access is tracked per hash as well).
    pub sha256: Sha256,
}
