//! The command side of media (uploads): streams an upload into a datastore, then records it.
//!
//! Order is the durability contract: bytes are spooled and hashed, fsynced, committed into the
//! datastore (rename + directory fsync), and only then is `MediaUploaded` appended. The HTTP
//! answer waits for the append's sync.

use super::{new_media_id, pick_datastore};
use crate::config::{Config, DatastoreKind};
use crate::datastore::Datastores;
use crate::error::ApiError;
use crate::ledger::{Command, Ledger, UploadQuota};
use crate::upload_waiters::UploadWaiters;
use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use media_ledger_events::{
    Actor, AsyncUploadCreated, ContentType, Event, MediaRef, MediaUploaded, RequestId, ServerName,
    Sha256, UserId,
};
use media_ledger_projections::names;
use std::path::PathBuf;
use std::sync::Arc;

/// What the uploader said about the bytes.
#[derive(Debug, Clone, Default)]
pub struct UploadMeta {
    /// `Content-Type` of the request.
    pub content_type: Option<ContentType>,
    /// `filename` query parameter.
    pub upload_name: Option<String>,
}

/// The upload/create commands.
pub struct MediaService {
    ledger: Arc<Ledger>,
    datastores: Arc<Datastores>,
    config: Arc<Config>,
    waiters: Arc<UploadWaiters>,
    checker: Option<Arc<crate::abuse::check::ContentChecker>>,
}

/// Bytes spooled and hashed in a datastore's spool, not yet recorded.
pub struct Spooled {
    /// The datastore whose spool holds them (and that takes them unless the blob exists).
    pub ds: Arc<dyn crate::datastore::Datastore>,
    /// The spool file.
    pub path: PathBuf,
    /// Their digest.
    pub sha: Sha256,
    /// Their length.
    pub size_bytes: u64,
}

/// Removes a spool file unless the upload got as far as committing it.
pub(crate) struct SpoolGuard(pub(crate) Option<PathBuf>);

impl Drop for SpoolGuard {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            match std::fs::remove_file(&p) {
                // A body refused while it was still held in memory never made a file.
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    tracing::warn!(path = %p.display(), error = %e, "cannot remove spool file");
                }
                _ => {}
            }
        }
    }
}

/// At most this much of a refused body is read and discarded (see [`drain`]).
pub const DRAIN_MAX_BYTES: u64 = 64 * 1024 * 1024;

/// Reads and discards up to [`DRAIN_MAX_BYTES`] of `body` within 10 seconds.
pub async fn drain<S>(mut body: S)
where
    S: Stream<Item = Result<Bytes, axum::Error>> + Unpin,
{
    let read = async {
        let mut n = 0u64;
        while let Some(Ok(chunk)) = body.next().await {
            n += chunk.len() as u64;
            if n > DRAIN_MAX_BYTES {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(std::time::Duration::from_secs(10), read).await;
}

use crate::clock::now_ms;

impl MediaService {
    /// Builds the service.
    pub fn new(ledger: Arc<Ledger>, datastores: Arc<Datastores>, config: Arc<Config>) -> Self {
        let waiters = Arc::new(UploadWaiters::new(
            config.downloads.max_waiters_per_media,
            config.downloads.max_waiters,
        ));
        Self {
            ledger,
            datastores,
            config,
            waiters,
            checker: None,
        }
    }

    /// The downloads waiting for pending async uploads (woken when [`Self::upload_async`]
    /// commits; the read side waits on them).
    pub fn waiters(&self) -> &Arc<UploadWaiters> {
        &self.waiters
    }

    /// Asks `checker` about every new media before recording it (`content_check`).
    pub fn with_checker(
        mut self,
        checker: Option<Arc<crate::abuse::check::ContentChecker>>,
    ) -> Self {
        self.checker = checker;
        self
    }

    /// `POST /upload`: stores the body under a new media id of `origin`, within `quota`.
    pub async fn upload<S>(
        &self,
        actor: Actor,
        request_id: RequestId,
        origin: ServerName,
        meta: UploadMeta,
        body: S,
        quota: Option<UploadQuota>,
    ) -> Result<MediaRef, ApiError>
    where
        S: Stream<Item = Result<Bytes, axum::Error>> + Unpin,
    {
        let media = MediaRef::new(origin, new_media_id()?);
        self.store(actor, request_id, media, None, meta, body, quota)
            .await
    }

    /// `PUT /upload/{server}/{id}`: fills a reserved media id.
    #[allow(clippy::too_many_arguments)] // the request's parts, each named
    pub async fn upload_async<S>(
        &self,
        actor: Actor,
        owner: UserId,
        request_id: RequestId,
        media: MediaRef,
        meta: UploadMeta,
        body: S,
        quota: Option<UploadQuota>,
    ) -> Result<MediaRef, ApiError>
    where
        S: Stream<Item = Result<Bytes, axum::Error>> + Unpin,
    {
        // Refuse early, before storing a byte (the body is drained so the client sees the
        // answer); the writer checks again at commit.
        if let Err(e) = self.fillable(&media, &owner) {
            drain(body).await;
            return Err(e);
        }
        self.store(actor, request_id, media, Some(owner), meta, body, quota)
            .await
    }

    /// Whether `owner` may fill the reservation `media` now.
    fn fillable(&self, media: &MediaRef, owner: &UserId) -> Result<(), ApiError> {
        if super::read::record(&self.ledger, media)?.is_some() {
            return Err(ApiError::CannotOverwrite);
        }
        let pending = media_ledger_projections::pending_uploads::get(
            &self.ledger.view(names::PENDING_UPLOADS)?,
            media,
        )?;
        match pending {
            Some(p) if p.expires_at_ms <= now_ms() => {
                Err(ApiError::NotFound("media id reservation expired".into()))
            }
            Some(p) if &p.owner != owner => Err(ApiError::Forbidden(
                "media id reserved by another user".into(),
            )),
            Some(_) => Ok(()),
            None => Err(ApiError::NotFound(
                "no pending upload for this media id".into(),
            )),
        }
    }

    /// `POST /v1/create`: reserves a media id for `owner`, who may hold at most
    /// `max_pending` unfilled reservations when their quota rule says (the writer also holds
    /// everyone to `uploads.max_pending_per_user`).
    pub async fn create(
        &self,
        owner: UserId,
        request_id: RequestId,
        origin: ServerName,
        max_pending: Option<u64>,
    ) -> Result<(MediaRef, u64), ApiError> {
        let media = MediaRef::new(origin, new_media_id()?);
        let expires_at_ms = now_ms().saturating_add(self.config.uploads.async_expiry_ms);
        let event = AsyncUploadCreated {
            media: media.clone(),
            owner: owner.clone(),
            expires_at_ms,
        };
        let cmd = match max_pending.filter(|m| *m > 0) {
            Some(max_pending) => Command::ReserveWithin { event, max_pending },
            None => Command::CreateAsync(event),
        };
        self.ledger
            .submit(Actor::User(owner), request_id, cmd)
            .await
            .map_err(|e| match ApiError::from(e) {
                ApiError::UserLimitExceeded { message, .. } => {
                    crate::abuse::quota::exceeded(&self.config, message)
                }
                e => e,
            })?;
        Ok((media, expires_at_ms))
    }

    #[allow(clippy::too_many_arguments)] // the request's parts, each named
    async fn store<S>(
        &self,
        actor: Actor,
        request_id: RequestId,
        media: MediaRef,
        completes_async: Option<UserId>,
        meta: UploadMeta,
        body: S,
        quota: Option<UploadQuota>,
    ) -> Result<MediaRef, ApiError>
    where
        S: Stream<Item = Result<Bytes, axum::Error>> + Unpin,
    {
        let max = self.config.uploads.max_bytes;
        // What is left of the uploader's limits bounds what is read (refused before a byte
        // when nothing is).
        let room = match &quota {
            Some(q) => match crate::abuse::quota::room(&self.config, &self.ledger, q, now_ms()) {
                Ok(room) => room,
                Err(e) => {
                    // Read (a bounded part of) the body first, so the client sees the 403.
                    drain(body).await;
                    return Err(e);
                }
            },
            None => u64::MAX,
        };
        let limit = max.min(room);
        let ds = pick_datastore(&self.ledger, &self.datastores, DatastoreKind::LocalMedia)?;
        let spool_path = ds.spool_dir().join(format!("{}.part", new_media_id()?));
        let mut guard = SpoolGuard(Some(spool_path.clone()));
        let (sha, size_bytes) = match self
            .spool(&spool_path, body, ds.spool_needs_sync(), limit)
            .await
        {
            Err(ApiError::TooLarge { .. }) if room < max => {
                return Err(crate::abuse::quota::exceeded(
                    &self.config,
                    format!("this upload would exceed your quota ({room} bytes left)"),
                ))
            }
            other => other?,
        };
        guard.0 = None;
        let spooled = Spooled {
            ds,
            path: spool_path,
            sha,
            size_bytes,
        };
        self.record_within(
            actor,
            request_id,
            media,
            completes_async,
            meta,
            spooled,
            quota,
        )
        .await
    }

    /// Records bytes already spooled (and hashed) in `spooled.ds`'s spool as the new local
    /// media `media`: refuses quarantined bytes, places the blob under its lock and records
    /// `media.uploaded.v1` (the spool file is committed or removed, whatever happens).
    pub async fn record_spooled(
        &self,
        actor: Actor,
        request_id: RequestId,
        media: MediaRef,
        completes_async: Option<UserId>,
        meta: UploadMeta,
        spooled: Spooled,
    ) -> Result<MediaRef, ApiError> {
        self.record_within(
            actor,
            request_id,
            media,
            completes_async,
            meta,
            spooled,
            None,
        )
        .await
    }

    /// [`Self::record_spooled`] after the content check, with the uploader's limits checked
    /// again by the writer.
    #[allow(clippy::too_many_arguments)]
    async fn record_within(
        &self,
        actor: Actor,
        request_id: RequestId,
        media: MediaRef,
        completes_async: Option<UserId>,
        meta: UploadMeta,
        spooled: Spooled,
        quota: Option<UploadQuota>,
    ) -> Result<MediaRef, ApiError> {
        let Spooled {
            ds,
            path: spool_path,
            sha,
            size_bytes,
        } = spooled;
        let mut guard = SpoolGuard(Some(spool_path.clone()));
        refuse_quarantined(&self.ledger, &media, &sha)?;
        if let Some(checker) = &self.checker {
            checker
                .check(crate::abuse::check::Subject {
                    media: &media,
                    sha256: &sha,
                    size_bytes,
                    content_type: meta.content_type.as_ref(),
                    uploader: Some(&actor),
                    kind: crate::abuse::check::Kind::Upload,
                    path: &spool_path,
                    request_id: &request_id,
                })
                .await?;
        }
        let fills_reservation = completes_async.is_some();
        let (meta_ct, meta_name, uploader) = (meta.content_type, meta.upload_name, actor.clone());
        let recorded = crate::blob_place::place_and_record(
            &self.ledger,
            &self.datastores,
            &ds,
            &spool_path,
            &sha,
            actor,
            request_id,
            |placed| Command::Upload {
                event: MediaUploaded {
                    media: media.clone(),
                    sha256: sha,
                    size_bytes,
                    content_type: meta_ct,
                    upload_name: meta_name,
                    uploader,
                    datastore: placed.datastore.clone(),
                    location: placed.location.clone(),
                },
                completes_async,
                quota,
            },
        )
        .await?;
        // Placed: the spool file was committed or removed.
        guard.0 = None;
        // E.g. the loser of two PUTs filling one reservation (its blob is gone already).
        let committed = recorded.map_err(|e| match ApiError::from(e) {
            ApiError::UserLimitExceeded { message, .. } => {
                crate::abuse::quota::exceeded(&self.config, message)
            }
            e => e,
        })?;
        if fills_reservation {
            self.waiters.filled(&media);
        }
        if let Event::MediaUploadedV1(e) = &committed.event {
            tracing::info!(media = %e.media, sha256 = %e.sha256, size_bytes, seq = committed.seq.0, "media uploaded");
        }
        Ok(media)
    }

    /// Streams `body` into `path`, hashing it and enforcing the size limit (the rest of a
    /// body over it is drained); fsyncs the file when `sync` (the datastore will rename it
    /// into place).
    async fn spool<S>(
        &self,
        path: &std::path::Path,
        mut body: S,
        sync: bool,
        limit: u64,
    ) -> Result<(Sha256, u64), ApiError>
    where
        S: Stream<Item = Result<Bytes, axum::Error>> + Unpin,
    {
        let mut spool = super::Spool::create(path, limit).await?;
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(ApiError::body)?;
            if let Err(e) = spool.push(&chunk).await {
                if matches!(e, ApiError::TooLarge { .. }) {
                    drain(body).await;
                }
                return Err(e);
            }
        }
        spool.finish(sync).await
    }
}

/// The answer to new bytes that are quarantined in the media's scope.
pub fn quarantined_error() -> ApiError {
    ApiError::Forbidden(
        "this content has been quarantined by a moderator and cannot be stored here".into(),
    )
}

/// Refuses early (before storing anything) bytes quarantined for `media`'s origin; the
/// writer checks again at commit.
pub fn refuse_quarantined(ledger: &Ledger, media: &MediaRef, sha: &Sha256) -> Result<(), ApiError> {
    let mods = ledger.view(names::MODERATION)?;
    if media_ledger_projections::moderation::blocks(&mods, sha)?.blocks(&media.origin) {
        return Err(quarantined_error());
    }
    Ok(())
}
