//! The moderation facts: quarantine, unquarantine, media attributes, purge and the blob
//! deletions a purge leads to.
//!
//! Each act names who may have done it ([`Authority`]), what was asked for
//! ([`ModerationTarget`]), an optional reason and, decided by the log's writer against the
//! state of the moment, the exact media it changed. Replaying the log therefore reproduces
//! the act, not a re-evaluation of it.

use crate::envelope::Actor;
use crate::event::ThumbnailMethod;
use crate::ids::{BlobLocation, DatastoreId, MediaRef, Seq, ServerName, Sha256, UserId};
use serde::{Deserialize, Serialize};

/// In what capacity the actor acted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Authority {
    /// A repository admin (config) or the shared secret: every origin.
    RepositoryAdmin,
    /// An admin of this homeserver (as its admin API says): only this origin.
    HomeserverAdmin(ServerName),
    /// The uploader of the media (purge of their own media only).
    Uploader,
    /// A migration from another media store carrying over that store's own act (Synapse's
    /// `quarantined_by`, its protection): every origin, like a repository admin; the actor is
    /// who acted there.
    Import,
}

impl Authority {
    /// The origin this authority is limited to (`None`: every origin).
    pub fn origin(&self) -> Option<&ServerName> {
        match self {
            Authority::HomeserverAdmin(s) => Some(s),
            Authority::RepositoryAdmin | Authority::Uploader | Authority::Import => None,
        }
    }
}

/// What a moderation request asked for (the affected media are listed beside it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ModerationTarget {
    /// One media.
    Media(MediaRef),
    /// Every media uploaded by a user.
    User(UserId),
    /// Every media of an origin.
    Server(ServerName),
    /// The media a homeserver lists for a room.
    Room(String),
    /// Every quarantined media (`purge/quarantined`).
    Quarantined,
    /// Remote media cached before a time (`purge/remote`, or the periodic expiry).
    Remote,
    /// Media last accessed before a time (`purge/old`).
    Old {
        /// Whether local media is included.
        include_local: bool,
    },
    /// Bytes by their SHA-256, whether or not a media holds them yet (the content check's
    /// deny).
    Hash(Sha256),
    /// Thumbnails generated before a time (`retention.thumbnail_days`): the media stay.
    Thumbnails,
}

/// Media quarantined: downloads are refused and later uploads or fetches of the same bytes
/// are refused in the scope (every origin, or the homeserver admin's own).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MediaQuarantined {
    /// Repository-wide or one homeserver's.
    pub authority: Authority,
    /// What was asked for.
    pub target: ModerationTarget,
    /// The media whose flag changed (pinned and already quarantined ones are not listed).
    pub media: Vec<MediaRef>,
    /// The hashes now blocked in the scope.
    pub hashes: Vec<Sha256>,
    /// Why, as the moderator said.
    pub reason: Option<String>,
}

/// A quarantine lifted (for one media, its same-hash siblings in scope and the hash block).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MediaUnquarantined {
    /// Repository-wide or one homeserver's.
    pub authority: Authority,
    /// What was asked for.
    pub target: ModerationTarget,
    /// The media whose flag was cleared.
    pub media: Vec<MediaRef>,
    /// The hashes no longer blocked in the scope.
    pub hashes: Vec<Sha256>,
    /// Why.
    pub reason: Option<String>,
}

/// What a media is kept for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum MediaPurpose {
    /// Ordinary media.
    None,
    /// Protected: never quarantined, never purged.
    Pinned,
}

impl MediaPurpose {
    /// The admin API's name.
    pub fn as_str(self) -> &'static str {
        match self {
            MediaPurpose::None => "none",
            MediaPurpose::Pinned => "pinned",
        }
    }
}

/// A media's attributes were set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MediaAttributesSet {
    /// The media.
    pub media: MediaRef,
    /// Its purpose from now on.
    pub purpose: MediaPurpose,
    /// Who acted, in what capacity.
    pub authority: Authority,
    /// Why.
    pub reason: Option<String>,
}

/// One media removed by a purge.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PurgedMedia {
    /// The media.
    pub media: MediaRef,
    /// Its content.
    pub sha256: Sha256,
    /// Its length.
    pub size_bytes: u64,
    /// Who uploaded it (`System` for cached remote media).
    pub uploader: Actor,
    /// Whether it was cached remote media.
    pub remote: bool,
    /// The datastore its blob was in.
    pub datastore: DatastoreId,
    /// The sequence of the event that created it (for its history once it is gone).
    pub created_seq: Seq,
    /// Kept as a tombstone (a quarantined media: its id stays blocked and visible to audit).
    pub tombstone: bool,
}

/// One thumbnail removed with its media.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PurgedThumbnail {
    /// The media it showed.
    pub media: MediaRef,
    /// Its configured width.
    pub width: u32,
    /// Its configured height.
    pub height: u32,
    /// Crop or scale.
    pub method: ThumbnailMethod,
    /// Made for an animated request.
    pub animated: bool,
    /// Its bytes.
    pub sha256: Sha256,
    /// Their length.
    pub size_bytes: u64,
    /// The datastore holding them.
    pub datastore: DatastoreId,
}

/// A blob no live media or thumbnail refers to any more: to be deleted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FreedBlob {
    /// The content.
    pub sha256: Sha256,
    /// Its length.
    pub size_bytes: u64,
    /// Where it is.
    pub datastore: DatastoreId,
    /// Where in it.
    pub location: BlobLocation,
}

/// A purge decision. Appended before any byte is deleted; the deletions follow as
/// [`BlobDeleted`] events and resume after a crash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MediaPurged {
    /// In what capacity.
    pub authority: Authority,
    /// What was asked for.
    pub target: ModerationTarget,
    /// The `before_ts` of the request, if any (ms).
    pub before_ts_ms: Option<u64>,
    /// The media removed (or tombstoned).
    pub media: Vec<PurgedMedia>,
    /// Their thumbnails.
    pub thumbnails: Vec<PurgedThumbnail>,
    /// Blobs whose last reference went with this purge.
    pub freed: Vec<FreedBlob>,
    /// Why.
    pub reason: Option<String>,
}

/// A blob freed by a purge was dealt with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobDeleted {
    /// The purge (sequence of its `MediaPurgedV1`).
    pub purge: Seq,
    /// The blob.
    pub sha256: Sha256,
    /// Where it was.
    pub datastore: DatastoreId,
    /// Where in it.
    pub location: BlobLocation,
    /// `true` when the bytes were kept because a new upload of them referred to the same
    /// blob before the deletion ran.
    pub kept: bool,
}
