//! Event types, envelope and durable encoding of the media ledger.
//!
//! This crate owns the *format* of the log: what a fact looks like ([`Event`]), what the log
//! wraps around it ([`Envelope`]) and the bytes both become on disk ([`codec`]). It does no I/O
//! and depends on neither tokio, axum nor RocksDB, so every consumer decodes the same bytes the
//! same way.
//!
//! Released event variants are frozen: a change is a new `...V2` variant appended at the end of
//! [`Event`], with a golden fixture (`tests/fixtures/`) pinning its bytes.
#![warn(missing_docs)]

pub mod codec;
pub mod envelope;
pub mod event;
pub mod ids;
pub mod moderation;

pub use codec::CodecError;
pub use envelope::{Actor, Envelope, RequestId};
pub use event::{
    AsyncUploadCreated, BlobMoved, BlobSourceDeleted, BlobTransferFailed, Event, ImportProgress,
    ImportStarted, MediaAccessed, MediaExported, MediaImported, MediaMigrated, MediaUploaded,
    RemoteMediaCached, ThumbnailGenerated, ThumbnailMethod, TransferFinished, TransferStarted,
    UrlPreviewed, UrlPreviewsExpired, MODERATION_KINDS,
};
pub use ids::{
    BlobLocation, ContentType, DatastoreId, IdError, MediaId, MediaRef, RoomId, Seq, ServerName,
    Sha256, UserId,
};
pub use moderation::{
    Authority, BlobDeleted, FreedBlob, MediaAttributesSet, MediaPurged, MediaPurpose,
    MediaQuarantined, MediaUnquarantined, ModerationTarget, PurgedMedia, PurgedThumbnail,
};
