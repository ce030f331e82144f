//! The facts the ledger records.
//!
//! Each variant is one event type at one schema version; its name ends in its version. The
//! variant's *position* is part of the encoding (bincode writes the index), so variants are
//! only ever appended, never reordered or edited. A new version of a fact is a new variant,
//! and consumers handle both.

use crate::envelope::Actor;
use crate::ids::{
    BlobLocation, ContentType, DatastoreId, MediaRef, Seq, ServerName, Sha256, UserId,
};
pub use crate::moderation::{
    Authority, BlobDeleted, FreedBlob, MediaAttributesSet, MediaPurged, MediaPurpose,
    MediaQuarantined, MediaUnquarantined, ModerationTarget, PurgedMedia, PurgedThumbnail,
};
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
    /// An admin started moving blobs from one datastore to another. The task's id is this
    /// event's sequence.
    TransferStartedV1(TransferStarted),
    /// A blob was copied to the target, read back and verified; every media sharing it now
    /// points at the copy. The source copy still exists.
    BlobMovedV1(BlobMoved),
    /// The source copy of a moved blob was deleted.
    BlobSourceDeletedV1(BlobSourceDeleted),
    /// One attempt to move a blob failed; the blob stays where it was.
    BlobTransferFailedV1(BlobTransferFailed),
    /// A transfer ended (with `error_message` when some blobs could not be moved).
    TransferFinishedV1(TransferFinished),
    /// A thumbnail of a media was generated and stored (blob durable before this).
    ThumbnailGeneratedV1(ThumbnailGenerated),
    /// Media of another server was fetched over federation and cached (blob durable before
    /// this); the envelope's actor is who asked for it.
    RemoteMediaCachedV1(RemoteMediaCached),
    /// Media (and its same-hash siblings in scope) quarantined by a moderator.
    MediaQuarantinedV1(MediaQuarantined),
    /// A quarantine lifted.
    MediaUnquarantinedV1(MediaUnquarantined),
    /// A media's purpose (pinned or not) set.
    MediaAttributesSetV1(MediaAttributesSet),
    /// A purge decided: media removed or tombstoned, thumbnails dropped, blobs freed.
    MediaPurgedV1(MediaPurged),
    /// A blob freed by a purge was deleted (or kept, re-referenced meanwhile).
    BlobDeletedV1(BlobDeleted),
    /// Media one of our homeservers stored itself (before the switch to media-ledger, or
    /// uploaded to it directly) was read through from that homeserver and stored here (blob
    /// durable before this); the envelope's actor is who asked for it, its time the import's.
    MediaImportedV1(MediaImported),
    /// A link preview was fetched for a user of `homeserver` (the envelope's actor): the
    /// OpenGraph object answered and the image it offers, stored as media of that homeserver
    /// by a `media.uploaded.v1` recorded just before. Served from the `url_previews`
    /// projection while fresh.
    UrlPreviewedV1(UrlPreviewed),
    /// Previews fetched before `before_ms` were dropped from the cache (`purge/old`); their
    /// images are no longer offered and become purgeable.
    UrlPreviewsExpiredV1(UrlPreviewsExpired),
    /// A media of another media store (Synapse's, matrix-media-repo's, an archive) was
    /// migrated here with its id, origin, uploader and times (blob durable before this); the
    /// envelope's actor is who ran the import, `source` says where the row came from.
    MediaMigratedV1(MediaMigrated),
    /// Media of a user or a server were exported as an archive (matrix-media-repo's format);
    /// the envelope's actor is who exported them.
    MediaExportedV1(MediaExported),
    /// An import from another media store started; the task's id is this event's sequence.
    ImportStartedV1(ImportStarted),
    /// How far an import task got (the last one of a task says it finished).
    ImportProgressV1(ImportProgress),
}

/// The kinds of moderation act, in the audit API's words.
pub const MODERATION_KINDS: [&str; 4] = ["quarantine", "unquarantine", "attributes", "purge"];

impl Event {
    /// The event type with its version, as shown by `media-ledger events`.
    pub fn type_name(&self) -> &'static str {
        match self {
            Event::MediaUploadedV1(_) => "media.uploaded.v1",
            Event::AsyncUploadCreatedV1(_) => "media.async_created.v1",
            Event::MediaAccessedV1(_) => "media.accessed.v1",
            Event::TransferStartedV1(_) => "transfer.started.v1",
            Event::BlobMovedV1(_) => "blob.moved.v1",
            Event::BlobSourceDeletedV1(_) => "blob.source_deleted.v1",
            Event::BlobTransferFailedV1(_) => "blob.transfer_failed.v1",
            Event::TransferFinishedV1(_) => "transfer.finished.v1",
            Event::ThumbnailGeneratedV1(_) => "thumbnail.generated.v1",
            Event::RemoteMediaCachedV1(_) => "media.remote_cached.v1",
            Event::MediaQuarantinedV1(_) => "media.quarantined.v1",
            Event::MediaUnquarantinedV1(_) => "media.unquarantined.v1",
            Event::MediaAttributesSetV1(_) => "media.attributes_set.v1",
            Event::MediaPurgedV1(_) => "media.purged.v1",
            Event::BlobDeletedV1(_) => "blob.deleted.v1",
            Event::MediaImportedV1(_) => "media.imported.v1",
            Event::UrlPreviewedV1(_) => "url.previewed.v1",
            Event::UrlPreviewsExpiredV1(_) => "url.previews_expired.v1",
            Event::MediaMigratedV1(_) => "media.migrated.v1",
            Event::MediaExportedV1(_) => "media.exported.v1",
            Event::ImportStartedV1(_) => "import.started.v1",
            Event::ImportProgressV1(_) => "import.progress.v1",
        }
    }

    /// The media the event is about, if it is about one.
    pub fn media(&self) -> Option<&MediaRef> {
        match self {
            Event::MediaUploadedV1(e) => Some(&e.media),
            Event::AsyncUploadCreatedV1(e) => Some(&e.media),
            Event::MediaAccessedV1(e) => Some(&e.media),
            Event::ThumbnailGeneratedV1(e) => Some(&e.media),
            Event::RemoteMediaCachedV1(e) => Some(&e.media),
            Event::MediaImportedV1(e) => Some(&e.media),
            Event::MediaAttributesSetV1(e) => Some(&e.media),
            Event::UrlPreviewedV1(e) => e.image.as_ref(),
            Event::MediaMigratedV1(e) => Some(&e.media),
            // Moderation acts name many media: see `affected_media`.
            Event::MediaQuarantinedV1(_)
            | Event::MediaUnquarantinedV1(_)
            | Event::MediaPurgedV1(_)
            | Event::BlobDeletedV1(_)
            | Event::TransferStartedV1(_)
            | Event::BlobMovedV1(_)
            | Event::BlobSourceDeletedV1(_)
            | Event::BlobTransferFailedV1(_)
            | Event::TransferFinishedV1(_)
            | Event::UrlPreviewsExpiredV1(_)
            | Event::MediaExportedV1(_)
            | Event::ImportStartedV1(_)
            | Event::ImportProgressV1(_) => None,
        }
    }

    /// The content hash the event is about, if it is about one.
    pub fn sha256(&self) -> Option<&Sha256> {
        match self {
            Event::MediaUploadedV1(e) => Some(&e.sha256),
            Event::MediaAccessedV1(e) => Some(&e.sha256),
            Event::BlobMovedV1(e) => Some(&e.sha256),
            Event::BlobSourceDeletedV1(e) => Some(&e.sha256),
            Event::BlobTransferFailedV1(e) => Some(&e.sha256),
            Event::ThumbnailGeneratedV1(e) => Some(&e.sha256),
            Event::RemoteMediaCachedV1(e) => Some(&e.sha256),
            Event::MediaImportedV1(e) => Some(&e.sha256),
            Event::MediaMigratedV1(e) => Some(&e.sha256),
            Event::BlobDeletedV1(e) => Some(&e.sha256),
            Event::MediaQuarantinedV1(_)
            | Event::MediaUnquarantinedV1(_)
            | Event::MediaAttributesSetV1(_)
            | Event::MediaPurgedV1(_)
            | Event::AsyncUploadCreatedV1(_)
            | Event::TransferStartedV1(_)
            | Event::TransferFinishedV1(_)
            | Event::UrlPreviewedV1(_)
            | Event::UrlPreviewsExpiredV1(_)
            | Event::MediaExportedV1(_)
            | Event::ImportStartedV1(_)
            | Event::ImportProgressV1(_) => None,
        }
    }
}

impl Event {
    /// Every media the event is about: the one of [`Event::media`], or the list a
    /// moderation act changed.
    pub fn affected_media(&self) -> Vec<&MediaRef> {
        match self {
            Event::MediaQuarantinedV1(e) => e.media.iter().collect(),
            Event::MediaUnquarantinedV1(e) => e.media.iter().collect(),
            Event::MediaPurgedV1(e) => e.media.iter().map(|m| &m.media).collect(),
            other => other.media().into_iter().collect(),
        }
    }

    /// The kind of a moderation act (one of [`MODERATION_KINDS`], as the audit API shows
    /// and filters it); `None` for any other event.
    pub fn moderation_kind(&self) -> Option<&'static str> {
        match self {
            Event::MediaQuarantinedV1(_) => Some(MODERATION_KINDS[0]),
            Event::MediaUnquarantinedV1(_) => Some(MODERATION_KINDS[1]),
            Event::MediaAttributesSetV1(_) => Some(MODERATION_KINDS[2]),
            Event::MediaPurgedV1(_) => Some(MODERATION_KINDS[3]),
            _ => None,
        }
    }

    /// Whether this is a moderation act (shown by the audit API).
    pub fn is_moderation(&self) -> bool {
        self.moderation_kind().is_some()
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

/// A transfer between datastores began.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransferStarted {
    /// Where the blobs are.
    pub source: DatastoreId,
    /// Where they go.
    pub target: DatastoreId,
    /// Only blobs last accessed before this time (ms), as matrix-media-repo's `before_ts`.
    pub before_ts_ms: Option<u64>,
    /// Blobs selected when the task started.
    pub blobs_total: u64,
    /// Their bytes.
    pub bytes_total: u64,
}

/// A blob was copied, verified and switched to its new datastore.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobMoved {
    /// The transfer (sequence of its `TransferStartedV1`).
    pub task: Seq,
    /// The blob.
    pub sha256: Sha256,
    /// Its length.
    pub size_bytes: u64,
    /// Where it was.
    pub from_datastore: DatastoreId,
    /// Where in that datastore.
    pub from_location: BlobLocation,
    /// Where it is now.
    pub to_datastore: DatastoreId,
    /// Where in that datastore.
    pub to_location: BlobLocation,
}

/// The old copy of a moved blob is gone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobSourceDeleted {
    /// The transfer.
    pub task: Seq,
    /// The blob.
    pub sha256: Sha256,
    /// The datastore it was deleted from.
    pub datastore: DatastoreId,
    /// Where in it.
    pub location: BlobLocation,
}

/// One attempt to move a blob failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobTransferFailed {
    /// The transfer.
    pub task: Seq,
    /// The blob.
    pub sha256: Sha256,
    /// Which attempt (1-based).
    pub attempt: u32,
    /// Whether the transfer gave up on this blob.
    pub final_attempt: bool,
    /// What went wrong.
    pub error: String,
}

/// A transfer ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransferFinished {
    /// The transfer.
    pub task: Seq,
    /// `None` when every selected blob moved; else why not.
    pub error_message: Option<String>,
}

/// How a thumbnail was fitted to its size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum ThumbnailMethod {
    /// Filled and cropped to exactly the size.
    Crop,
    /// Scaled to fit inside the size, aspect kept.
    Scale,
}

impl ThumbnailMethod {
    /// The spec's name.
    pub fn as_str(self) -> &'static str {
        match self {
            ThumbnailMethod::Crop => "crop",
            ThumbnailMethod::Scale => "scale",
        }
    }
}

/// A thumbnail of `media` at one size.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ThumbnailGenerated {
    /// The media it shows.
    pub media: MediaRef,
    /// The configured width it was made for.
    pub width: u32,
    /// The configured height it was made for.
    pub height: u32,
    /// Crop or scale.
    pub method: ThumbnailMethod,
    /// Whether it was made for an `animated=true` request.
    pub animated: bool,
    /// Digest of the thumbnail bytes.
    pub sha256: Sha256,
    /// Their length.
    pub size_bytes: u64,
    /// Their type (`image/png` or `image/jpeg`).
    pub content_type: ContentType,
    /// The datastore holding the blob.
    pub datastore: DatastoreId,
    /// Where in it.
    pub location: BlobLocation,
}

/// A remote media now cached here.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteMediaCached {
    /// The remote media (its origin is not one of ours).
    pub media: MediaRef,
    /// Digest of the bytes.
    pub sha256: Sha256,
    /// Their length.
    pub size_bytes: u64,
    /// As the remote declared it.
    pub content_type: Option<ContentType>,
    /// The remote's file name.
    pub upload_name: Option<String>,
    /// Where it was fetched from (the resolved base URL).
    pub fetched_from: String,
    /// The datastore holding the blob.
    pub datastore: DatastoreId,
    /// Where in it.
    pub location: BlobLocation,
}

/// A local media the homeserver stored itself, now stored here: a media of one of our
/// homeservers' origins that media-ledger had no record of. It is local media (the import
/// time is the envelope's); its uploader is unknown (the homeserver's download API does not
/// say).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MediaImported {
    /// The media (its origin is one of our homeservers).
    pub media: MediaRef,
    /// Digest of the bytes.
    pub sha256: Sha256,
    /// Their length.
    pub size_bytes: u64,
    /// As the homeserver declared it.
    pub content_type: Option<ContentType>,
    /// The homeserver's file name.
    pub upload_name: Option<String>,
    /// Where it was read from (the homeserver's `cs_api` base URL).
    pub origin_homeserver: String,
    /// When the homeserver created the media, if it said (the read-through cannot know: then
    /// `None`, and the import's envelope time stands for it).
    pub origin_created_at_ms: Option<u64>,
    /// The datastore holding the blob.
    pub datastore: DatastoreId,
    /// Where in it.
    pub location: BlobLocation,
}

/// A link preview, as fetched: what `preview_url` answers for `url` on `homeserver` while the
/// preview is fresh.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UrlPreviewed {
    /// The homeserver whose user asked (the image is media of this origin).
    pub homeserver: ServerName,
    /// The URL asked for, normalised (no fragment, no credentials).
    pub url: String,
    /// The OpenGraph object answered, as JSON text (an object): `og:image` is the image's
    /// `mxc://` URI, with `og:image:type`, `og:image:width`, `og:image:height` and
    /// `matrix:image:size` beside it.
    pub og: String,
    /// The stored image, a media of `homeserver` recorded before this event.
    pub image: Option<MediaRef>,
}

/// Previews dropped from the cache: each `(homeserver, url)` listed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UrlPreviewsExpired {
    /// The previews, fetched before `before_ms`.
    pub previews: Vec<(ServerName, String)>,
    /// The cut-off the purge was asked for.
    pub before_ms: u64,
}

/// A media migrated from another media store, as it was there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MediaMigrated {
    /// Its id and origin, unchanged.
    pub media: MediaRef,
    /// Digest of the bytes (computed here, checked against the source's when it had one).
    pub sha256: Sha256,
    /// Their length.
    pub size_bytes: u64,
    /// As the source recorded it.
    pub content_type: Option<ContentType>,
    /// As the source recorded it.
    pub upload_name: Option<String>,
    /// Who uploaded it (local media whose source names a valid user).
    pub uploader: Option<UserId>,
    /// Cached remote media (else local media of `media.origin`).
    pub remote: bool,
    /// When the source stored it.
    pub created_at_ms: u64,
    /// When the source last served it.
    pub last_access_ms: u64,
    /// Where it came from: `synapse <server name> <table>`, `mmr …`, `archive …`.
    pub source: String,
    /// The datastore holding the blob.
    pub datastore: DatastoreId,
    /// Where in it.
    pub location: BlobLocation,
}

/// An export archive was written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MediaExported {
    /// The user id or server name exported.
    pub entity: String,
    /// Media in the archive (quarantined media are never exported).
    pub media_count: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Quarantined media left out.
    pub quarantined_left_out: u64,
    /// The archive's parts (the manifest's included).
    pub parts: u32,
}

/// An import task began.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImportStarted {
    /// `synapse`, `mmr` or `archive`.
    pub kind: String,
    /// What is imported (a database without its password, archive parts).
    pub source: String,
    /// Rows the source holds.
    pub rows_total: u64,
}

/// How far an import task got.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImportProgress {
    /// The task (its `import.started.v1`).
    pub task: Seq,
    /// Rows dealt with.
    pub rows_done: u64,
    /// Media recorded by this task.
    pub imported: u64,
    /// Media found recorded already.
    pub already_imported: u64,
    /// Rows (and thumbnails) skipped.
    pub skipped: u64,
    /// Bytes of the media recorded.
    pub bytes: u64,
    /// The task ended (with `error` when it stopped on one).
    pub finished: bool,
    /// Why it stopped.
    pub error: Option<String>,
}
