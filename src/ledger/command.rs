//! The commands the writer accepts and why it may refuse them.

use media_ledger_events::{
    AsyncUploadCreated, BlobMoved, Event, MediaAccessed, MediaUploaded, RemoteMediaCached,
    ThumbnailGenerated, TransferStarted, UserId,
};

/// A state change to validate and record.
#[derive(Debug, Clone)]
pub enum Command {
    /// Record an upload whose blob is already durable. `completes_async` names the user
    /// who must own the pending reservation of that media id.
    Upload {
        /// The event to record (its blob location may be replaced by an existing one).
        event: MediaUploaded,
        /// Owner check for `PUT /upload/{server}/{id}`.
        completes_async: Option<UserId>,
    },
    /// Reserve a media id.
    CreateAsync(AsyncUploadCreated),
    /// Record a download.
    Access(MediaAccessed),
    /// Start a transfer; its task id is the sequence it gets.
    StartTransfer(TransferStarted),
    /// Switch a verified copy in; refused unless the hash is still where `from_*` says.
    MoveBlob(BlobMoved),
    /// Record progress of an unfinished task: `BlobSourceDeletedV1`, `BlobTransferFailedV1`
    /// or `TransferFinishedV1`.
    TaskProgress(Event),
    /// Record a generated thumbnail whose blob is durable (its location may be replaced by
    /// an existing blob of the same bytes).
    RecordThumbnail(ThumbnailGenerated),
    /// Record a fetched remote media whose blob is durable (location may be replaced by an
    /// existing blob of the same bytes).
    CacheRemote(RemoteMediaCached),
}

/// Why a command was refused by the state it met.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Conflict {
    /// The media id is taken.
    #[error("media id already in use")]
    MediaExists,
    /// The async media was already filled.
    #[error("media already uploaded")]
    AlreadyUploaded,
    /// No such reservation, or it expired.
    #[error("no pending upload for this media id")]
    NotPending,
    /// Reserved by someone else.
    #[error("media reserved by another user")]
    NotOwner,
    /// The media does not exist.
    #[error("unknown media")]
    UnknownMedia,
    /// The owner holds as many unexpired reservations as allowed.
    #[error("too many pending uploads")]
    TooManyPending,
    /// The blob is not (or no longer) where the command says.
    #[error("blob is not where the command expects it")]
    BlobElsewhere,
    /// No such task, or it already finished.
    #[error("no unfinished task with this id")]
    NoSuchTask,
    /// Not an event this command may carry.
    #[error("event not allowed here")]
    WrongEvent,
    /// Another unfinished transfer involves these datastores.
    #[error("another transfer between these datastores is still running")]
    TransferRunning,
    /// This thumbnail was already recorded (a concurrent generation won).
    #[error("thumbnail already recorded")]
    ThumbnailExists,
}
