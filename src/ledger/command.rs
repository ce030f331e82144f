//! The commands the writer accepts and why it may refuse them.

use media_ledger_events::{
    Actor, AsyncUploadCreated, Authority, BlobDeleted, BlobMoved, Event, ImportProgress,
    ImportStarted, MediaAccessed, MediaAttributesSet, MediaExported, MediaImported, MediaMigrated,
    MediaRef, MediaUploaded, ModerationTarget, RemoteMediaCached, ThumbnailGenerated,
    TransferStarted, UrlPreviewed, UrlPreviewsExpired, UserId,
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
        /// The uploader's limits, checked against the `usage` projection at commit.
        quota: Option<UploadQuota>,
    },
    /// Reserve a media id.
    CreateAsync(AsyncUploadCreated),
    /// Reserve a media id for an owner whose quota rule allows at most `max_pending` unfilled
    /// reservations (checked with the group's earlier reservations), then as `CreateAsync`.
    ReserveWithin {
        /// The reservation.
        event: AsyncUploadCreated,
        /// The owner's `max_pending`.
        max_pending: u64,
    },
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
    /// Record media one of our homeservers stored itself, read through from it, whose blob is
    /// durable (location may be replaced by an existing blob of the same bytes). Refused when
    /// the media id is recorded or reserved here.
    ImportMedia(MediaImported),
    /// Quarantine the seeds and every media sharing their bytes, in the authority's scope.
    Quarantine {
        /// Repository-wide or one homeserver's.
        authority: Authority,
        /// What was asked for.
        target: ModerationTarget,
        /// The media the request resolved to.
        seeds: Vec<MediaRef>,
        /// Why.
        reason: Option<String>,
    },
    /// Lift the quarantine of a media, its same-hash siblings and its hash, in scope.
    Unquarantine {
        /// Repository-wide or one homeserver's.
        authority: Authority,
        /// The media named by the request.
        media: MediaRef,
        /// Why.
        reason: Option<String>,
    },
    /// Set a media's purpose.
    SetAttributes(MediaAttributesSet),
    /// Decide a purge over the candidates (the writer drops those that no longer qualify).
    Purge(PurgeRequest),
    /// Record that a blob freed by a purge was deleted (or kept).
    RecordBlobDeleted(BlobDeleted),
    /// Record a fetched link preview; its image, if any, must be a live media of the
    /// preview's homeserver (recorded just before).
    RecordPreview(UrlPreviewed),
    /// Drop previews from the cache (`purge/old`).
    ExpirePreviews(UrlPreviewsExpired),
    /// Record a media migrated from another store whose blob is durable (location may be
    /// replaced by an existing blob of the same bytes). Refused when the media id is recorded
    /// or reserved here, or was purged here. Bytes quarantined here are recorded (the importer
    /// then quarantines the media).
    Migrate(MediaMigrated),
    /// Record an export archive written.
    Export(MediaExported),
    /// Start an import task; its id is the sequence it gets.
    StartImport(ImportStarted),
    /// Record an unfinished import task's progress (or its end).
    ImportProgress(ImportProgress),
}

/// The limits an upload must stay within, decided by the upload service from the config
/// (quota rule, window limits) and checked by the writer against the `usage` projection with
/// the group's earlier uploads, so concurrent uploads cannot cross them together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadQuota {
    /// Whose usage.
    pub user: UserId,
    /// Total live bytes (0: none).
    pub max_bytes: u64,
    /// Live media (0: none).
    pub max_files: u64,
    /// `(window_ms, max_bytes)`: bytes uploaded within each window.
    pub windows: Vec<(u64, u64)>,
}

/// What a purge request asks the writer to decide.
#[derive(Debug, Clone)]
pub struct PurgeRequest {
    /// In what capacity; a homeserver admin's candidates of other origins are dropped.
    pub authority: Authority,
    /// With [`Authority::Uploader`]: every candidate must be this actor's upload.
    pub uploader: Option<Actor>,
    /// What was asked for.
    pub target: ModerationTarget,
    /// The request's `before_ts`.
    pub before_ts_ms: Option<u64>,
    /// The media the request resolved to.
    pub candidates: Vec<MediaRef>,
    /// Whether quarantined media is purged (into tombstones) or skipped.
    pub include_quarantined: bool,
    /// Remote purge: keep a candidate whose bytes are also used by local media or by media
    /// created at or after `before_ts_ms`.
    pub keep_shared: bool,
    /// Keep a candidate accessed at or after this time (retention: a download since the
    /// selection saves it).
    pub accessed_before_ms: Option<u64>,
    /// Why.
    pub reason: Option<String>,
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
    /// The upload would cross its uploader's quota or an upload window.
    #[error("the upload would exceed the uploader's quota")]
    QuotaExceeded,
    /// The owner holds as many unfilled reservations as their quota rule allows.
    #[error("too many unfilled reservations for the owner's quota")]
    PendingQuota,
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
    /// The bytes are quarantined in the media's scope.
    #[error("this content is quarantined and cannot be stored")]
    Quarantined,
    /// The act would change nothing.
    #[error("nothing to change")]
    NothingToDo,
    /// A candidate of an uploader's purge was uploaded by someone else.
    #[error("only the uploader may purge this media")]
    NotUploader,
    /// A homeserver admin may not lift a repository-wide quarantine.
    #[error("this content is quarantined repository-wide; only a repository admin can lift it")]
    RepositoryQuarantine,
    /// The media is outside the authority's scope.
    #[error("media outside the caller's homeserver")]
    OutOfScope,
    /// The event's record would be over the record size limit, or one the decoder refuses:
    /// nothing was recorded (acts are budgeted below it, so this is a bug to report).
    #[error("the event is too large to record")]
    RecordTooLarge,
}
