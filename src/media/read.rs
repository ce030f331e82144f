//! The read side of media: what handlers and services read a media through.
//!
//! - the record ([`record`]; [`MediaReader::find`] waits on a pending async upload,
//!   [`MediaReader::resolve`] also fetches remote media from its origin, and reads a media
//!   of the request's homeserver through from it, `crate::read_through`);
//! - where the bytes of a SHA-256 are: the datastore and location its hash record names
//!   ([`locate`], also used by `verify --blobs`);
//! - opening ([`open_blob`]) or checking ([`check_blob`]) that blob. A transfer may switch the
//!   blob to another datastore and delete the old copy between the look-up and the open, so an
//!   open that finds the blob missing looks again once; a purge may remove the record and its
//!   blob meanwhile, which [`removed_since`] tells the handlers (they look the media up again).
//!
//! Nothing here writes; the command side is [`super::write`].

use crate::clock::now_ms;
use crate::config::Config;
use crate::datastore::{BlobStream, Datastore, DatastoreError, Datastores};
use crate::error::ApiError;
use crate::ledger::Ledger;
use crate::read_through::ReadThrough;
use crate::remote::RemoteMedia;
use crate::upload_waiters::UploadWaiters;
use media_ledger_events::{Actor, MediaRef, ServerName, Sha256};
use media_ledger_projections::hash_refs::{self, HashRecord};
use media_ledger_projections::media_index::{self, MediaRecord};
use media_ledger_projections::names;
use media_ledger_projections::{pending_uploads, KvRead, ProjectionError};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// The live record of `media`, if any (a tombstone is a record).
pub fn record(ledger: &Ledger, media: &MediaRef) -> Result<Option<MediaRecord>, ApiError> {
    Ok(media_index::get(&ledger.view(names::MEDIA_INDEX)?, media)?)
}

/// Whether `record` of `media` is no longer the live record (purged, or replaced by a new
/// fetch) — an open that failed meanwhile raced that change rather than found a broken blob.
pub fn removed_since(
    ledger: &Ledger,
    media: &MediaRef,
    record: &MediaRecord,
) -> Result<bool, ApiError> {
    let now = self::record(ledger, media)?;
    Ok(now.is_none_or(|r| {
        r.tombstone || r.sha256 != record.sha256 || r.created_seq != record.created_seq
    }))
}

/// Where the blob of a hash is: its hash record and the configured datastore it names.
pub struct Located {
    /// The hash record (datastore, location, size).
    pub record: HashRecord,
    /// The datastore holding the bytes.
    pub store: Arc<dyn Datastore>,
}

/// Why the blob of a hash cannot be located.
#[derive(Debug)]
pub enum LocateError {
    /// The hash record could not be read.
    Read(ProjectionError),
    /// No hash record.
    NoHashRecord,
    /// The hash record (here) names a datastore that is not configured.
    NotConfigured(HashRecord),
}

impl LocateError {
    /// The error of a request reading the blob of `sha`.
    fn into_api(self, sha: &Sha256) -> ApiError {
        match self {
            LocateError::Read(e) => e.into(),
            LocateError::NoHashRecord => ApiError::Internal(format!("no hash record for {sha}")),
            LocateError::NotConfigured(h) => ApiError::Internal(format!(
                "datastore {} of {sha} is not configured",
                h.datastore
            )),
        }
    }
}

/// The datastore and location of the blob of `sha`, by its hash record in `refs` (a view of
/// `hash_refs`).
pub fn locate(
    refs: &(impl KvRead + ?Sized),
    datastores: &Datastores,
    sha: &Sha256,
) -> Result<Located, LocateError> {
    let record = hash_refs::get(refs, sha)
        .map_err(LocateError::Read)?
        .ok_or(LocateError::NoHashRecord)?;
    match datastores.get(&record.datastore) {
        Some(store) => Ok(Located {
            store: store.clone(),
            record,
        }),
        None => Err(LocateError::NotConfigured(record)),
    }
}

fn locate_now(ledger: &Ledger, datastores: &Datastores, sha: &Sha256) -> Result<Located, ApiError> {
    locate(&ledger.view(names::HASH_REFS)?, datastores, sha).map_err(|e| e.into_api(sha))
}

fn missing(sha: &Sha256) -> ApiError {
    ApiError::Internal(format!("blob {sha} is missing from its datastore"))
}

/// Opens `len` bytes from `start` of the blob of `sha`. A transfer may switch the blob to
/// another datastore and delete the old copy between the look-up and the open: on a missing
/// blob, look again once.
pub async fn open_blob(
    ledger: &Ledger,
    datastores: &Datastores,
    sha: &Sha256,
    start: u64,
    len: u64,
) -> Result<BlobStream, ApiError> {
    let mut last = None;
    for _ in 0..2 {
        let Located { record, store } = locate_now(ledger, datastores, sha)?;
        if last.as_ref() == Some(&(record.datastore.clone(), record.location.clone())) {
            break;
        }
        match store.open(&record.location, start, len).await {
            Err(DatastoreError::Missing(_)) => {
                last = Some((record.datastore, record.location));
            }
            other => return Ok(other?),
        }
    }
    Err(missing(sha))
}

/// Checks that the blob of `sha` exists where its record says (for `HEAD`: a stat, or a
/// HeadObject on S3, without reading it).
pub async fn check_blob(
    ledger: &Ledger,
    datastores: &Datastores,
    sha: &Sha256,
) -> Result<(), ApiError> {
    let Located { record, store } = locate_now(ledger, datastores, sha)?;
    match store.size_of(&record.location).await? {
        Some(_) => Ok(()),
        None => Err(missing(sha)),
    }
}

/// The read side as the HTTP handlers use it: the free functions above over the server's
/// ledger and datastores, plus waiting on pending async uploads and fetching remote media.
pub struct MediaReader {
    ledger: Arc<Ledger>,
    datastores: Arc<Datastores>,
    config: Arc<Config>,
    waiters: Arc<UploadWaiters>,
    remote: Arc<RemoteMedia>,
    read_through: Arc<ReadThrough>,
    shutdown: watch::Receiver<bool>,
}

impl MediaReader {
    /// Builds the read side. `waiters` are the ones the command side wakes when it fills a
    /// pending upload; `shutdown` turning `true` ends waits early.
    pub fn new(
        ledger: Arc<Ledger>,
        datastores: Arc<Datastores>,
        config: Arc<Config>,
        waiters: Arc<UploadWaiters>,
        remote: Arc<RemoteMedia>,
        shutdown: watch::Receiver<bool>,
    ) -> Self {
        let read_through = Arc::new(ReadThrough::new(
            ledger.clone(),
            datastores.clone(),
            config.clone(),
        ));
        Self {
            ledger,
            datastores,
            config,
            waiters,
            remote,
            read_through,
            shutdown,
        }
    }

    /// The media record: local (waiting for a pending async upload), else fetched from its
    /// origin over federation unless `allow_remote` is false. `ours` is the homeserver the
    /// request is for (a fetch is made on its behalf). A media of `ours` we have no record of
    /// is read through from that homeserver (`read_through.rs`) when `read_through` holds the
    /// request's homeserver token (`None`: anonymous, a token of ours, or a read-through's own
    /// request) and `allow_remote` holds.
    pub async fn resolve(
        &self,
        media: &MediaRef,
        timeout: Duration,
        allow_remote: bool,
        actor: Actor,
        ours: &ServerName,
        read_through: Option<&str>,
    ) -> Result<MediaRecord, ApiError> {
        match self.find(media, timeout).await {
            Err(ApiError::NotFound(_)) if allow_remote && !self.config.is_local(&media.origin) => {
                self.remote.get(actor, ours, media).await
            }
            Err(ApiError::NotFound(m)) => {
                let hs = self.config.homeservers.iter().find(|h| &h.name == ours);
                match (hs, read_through) {
                    (Some(hs), Some(token)) if allow_remote && &media.origin == ours => {
                        self.read_through.get(actor, hs, token, media).await
                    }
                    _ => Err(ApiError::NotFound(m)),
                }
            }
            other => other,
        }
    }

    /// The media record, waiting up to `timeout` for a pending async upload to be filled.
    pub async fn find(&self, media: &MediaRef, timeout: Duration) -> Result<MediaRecord, ApiError> {
        let now = tokio::time::Instant::now();
        let deadline = now.checked_add(timeout).unwrap_or(now);
        let mut waiter = None;
        let mut stopping = self.shutdown.clone();
        loop {
            if let Some(r) = record(&self.ledger, media)? {
                return Ok(r);
            }
            let expires_at_ms =
                match pending_uploads::get(&self.ledger.view(names::PENDING_UPLOADS)?, media)? {
                    Some(p) if p.expires_at_ms > now_ms() => p.expires_at_ms,
                    _ => return Err(ApiError::NotFound("media not found".into())),
                };
            // Pending: register as a waiter of this media (woken only by its own fill), then
            // look again, so a fill committed before the registration is not missed. Beyond
            // the caps: 429 at once.
            let Some(w) = waiter.as_mut() else {
                let registered = self.waiters.wait_on(media).ok_or_else(|| {
                    ApiError::LimitExceeded(
                        "too many downloads are waiting for pending uploads".into(),
                    )
                })?;
                waiter = Some(registered);
                continue;
            };
            // Wake at the deadline, or when the reservation lapses (then it is a 404, not a
            // 504).
            let now = tokio::time::Instant::now();
            let lapse = now
                .checked_add(Duration::from_millis(
                    expires_at_ms.saturating_sub(now_ms()),
                ))
                .unwrap_or(deadline);
            tokio::select! {
                r = tokio::time::timeout_at(deadline.min(lapse), w.filled()) => match r {
                    Ok(()) => continue,
                    Err(_) if tokio::time::Instant::now() >= deadline => return Err(ApiError::NotYetUploaded),
                    Err(_) => continue,
                },
                _ = stopping.wait_for(|s| *s) => return Err(shutting_down()),
            }
        }
    }

    /// [`open_blob`] in the server's datastores.
    pub async fn open_blob(
        &self,
        sha: &Sha256,
        start: u64,
        len: u64,
    ) -> Result<BlobStream, ApiError> {
        open_blob(&self.ledger, &self.datastores, sha, start, len).await
    }

    /// [`check_blob`] in the server's datastores.
    pub async fn check_blob(&self, sha: &Sha256) -> Result<(), ApiError> {
        check_blob(&self.ledger, &self.datastores, sha).await
    }

    /// [`removed_since`] in the server's ledger.
    pub fn removed_since(&self, media: &MediaRef, record: &MediaRecord) -> Result<bool, ApiError> {
        removed_since(&self.ledger, media, record)
    }
}

fn shutting_down() -> ApiError {
    ApiError::unavailable(
        "the server is shutting down",
        "stop requested while waiting",
    )
}
