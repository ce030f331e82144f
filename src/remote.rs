//! Remote media: fetch once over federation, store as a blob, record, serve from the cache.
//!
//! Concurrent requests for the same uncached media share one fetch: the first takes a
//! per-media lock and fetches; the others wait for it and then find the media recorded. The
//! bytes are streamed into the spool of a datastore accepting `remote_media` while hashed and
//! counted (the limit is `downloads.max_bytes`, whatever the remote claims), committed, and
//! only then is `media.remote_cached.v1` appended.

use crate::coalesce::Coalescer;
use crate::config::{Config, DatastoreKind};
use crate::datastore::{Datastore, Datastores};
use crate::error::ApiError;
use crate::federation::client::{Client, RemoteError};
use crate::ledger::{Command, Conflict, Ledger, LedgerError};
use bytes::Bytes;
use media_ledger_events::{Actor, MediaRef, RemoteMediaCached, RequestId, ServerName};
use media_ledger_projections::media_index::MediaRecord;
use std::sync::Arc;

/// How many times a fetch is made when a purge removes the media right after each.
const FETCH_ATTEMPTS: usize = 3;

/// The remote media cache.
pub struct RemoteMedia {
    client: Arc<Client>,
    ledger: Arc<Ledger>,
    datastores: Arc<Datastores>,
    config: Arc<Config>,
    inflight: Coalescer<MediaRef>,
    checker: Option<Arc<crate::abuse::check::ContentChecker>>,
    /// Remote media the content check denied lately: answered 403 without fetching again.
    denied: crate::federation::cache::BoundedCache<MediaRef, ()>,
}

/// Remote media denials remembered at once, and for how long.
const DENIED_REMEMBERED: usize = 10_000;
const DENIED_TTL: std::time::Duration = std::time::Duration::from_secs(3600);

impl From<RemoteError> for ApiError {
    fn from(e: RemoteError) -> Self {
        match e {
            RemoteError::NotFound => ApiError::NotFound("remote media not found".into()),
            RemoteError::TooLarge(limit) => ApiError::TooLarge { limit_bytes: limit },
            RemoteError::Forbidden(m) => {
                // Which rule refused (a blocked name, an address rule) stays in the log.
                tracing::info!(reason = %m, "remote fetch refused");
                ApiError::Forbidden("fetching media from this server is not allowed".into())
            }
            RemoteError::Failed(m) => ApiError::bad_gateway("fetching the remote media failed", m),
            e @ RemoteError::BackedOff(_) => {
                ApiError::bad_gateway("the remote server is failing; retry later", e)
            }
        }
    }
}

impl RemoteMedia {
    /// Builds the cache.
    pub fn new(
        client: Arc<Client>,
        ledger: Arc<Ledger>,
        datastores: Arc<Datastores>,
        config: Arc<Config>,
    ) -> Self {
        Self {
            client,
            ledger,
            datastores,
            checker: None,
            denied: crate::federation::cache::BoundedCache::new(DENIED_REMEMBERED, DENIED_TTL),
            config,
            inflight: Coalescer::default(),
        }
    }

    /// Checks each fetched media with `checker` before recording it (`content_check`).
    pub fn with_checker(
        mut self,
        checker: Option<Arc<crate::abuse::check::ContentChecker>>,
    ) -> Self {
        self.checker = checker.filter(|c| c.checks_remote());
        self
    }

    /// The federation client.
    pub fn client(&self) -> &Arc<Client> {
        &self.client
    }

    /// The record of remote `media`, fetching it first if it is not cached. `our_name` is the
    /// homeserver we fetch on behalf of.
    pub async fn get(
        &self,
        actor: Actor,
        our_name: &ServerName,
        media: &MediaRef,
    ) -> Result<MediaRecord, ApiError> {
        if !self.config.federation.enabled {
            return Err(ApiError::NotFound(
                "media not found (federation is disabled)".into(),
            ));
        }
        if self.denied.get(media).is_some() {
            return Err(crate::abuse::check::denied());
        }
        let work = async {
            // A `purge/remote` may remove the media between the commit of its fetch and the
            // look-up after it: it is still wanted, so it is fetched again (a few times).
            for _ in 0..FETCH_ATTEMPTS {
                if let Some(r) = crate::media::read::record(&self.ledger, media)? {
                    return Ok(r);
                }
                if let Some(r) = self.fetch(actor.clone(), our_name, media).await? {
                    return Ok(r);
                }
                tracing::info!(%media, "remote media purged right after it was cached; fetching it again");
            }
            Err(ApiError::unavailable(
                "the remote media is being purged; try again",
                format!("{media} was purged each time it was fetched"),
            ))
        };
        self.inflight.run(media.clone(), work).await
    }

    async fn fetch(
        &self,
        actor: Actor,
        our_name: &ServerName,
        media: &MediaRef,
    ) -> Result<Option<MediaRecord>, ApiError> {
        let ds = crate::media::pick_datastore(
            &self.ledger,
            &self.datastores,
            DatastoreKind::RemoteMedia,
        )?;
        let spool = ds
            .spool_dir()
            .join(format!("remote-{}.part", crate::media::new_media_id()?));
        let result = self.fetch_into(&ds, &spool, actor, our_name, media).await;
        if result.is_err() {
            let _ = tokio::fs::remove_file(&spool).await;
        }
        result
    }

    async fn fetch_into(
        &self,
        ds: &Arc<dyn Datastore>,
        spool: &std::path::Path,
        actor: Actor,
        our_name: &ServerName,
        media: &MediaRef,
    ) -> Result<Option<MediaRecord>, ApiError> {
        let max = self.config.downloads.max_bytes;
        let out = Arc::new(tokio::sync::Mutex::new(
            crate::media::Spool::create(spool, max).await?,
        ));
        let sink_out = out.clone();
        let fetched = self
            .client
            .download(
                our_name,
                &media.origin,
                &media.media_id,
                max,
                move |chunk: Bytes| {
                    let out = sink_out.clone();
                    async move {
                        out.lock()
                            .await
                            .push(&chunk)
                            .await
                            .map_err(|e| e.to_string())
                    }
                },
            )
            .await?;
        // The sink (and its clone of `out`) is gone with the download: the spool is ours.
        let (sha, size) = Arc::try_unwrap(out)
            .map_err(|_| ApiError::Internal("remote fetch sink still shared".into()))?
            .into_inner()
            .finish(ds.spool_needs_sync())
            .await?;
        crate::media::refuse_quarantined(&self.ledger, media, &sha)?;
        let content_type: Option<media_ledger_events::ContentType> =
            fetched.content_type.and_then(|c| c.parse().ok());
        if let Some(checker) = &self.checker {
            let checked = checker
                .check(crate::abuse::check::Subject {
                    media,
                    sha256: &sha,
                    size_bytes: size,
                    content_type: content_type.as_ref(),
                    uploader: None,
                    kind: crate::abuse::check::Kind::Remote,
                    path: spool,
                    request_id: &RequestId(format!("remote-{}", media.media_id)),
                })
                .await;
            if let Err(e) = checked {
                if matches!(e, ApiError::Forbidden(_)) {
                    self.denied.insert(media.clone(), ());
                }
                return Err(e);
            }
        }
        // Where it came from, resolved before the blob lock is taken: a resolution that missed
        // the cache (SRV, well-known) must not hold other writers of these bytes up.
        let resolved = self
            .client
            .resolve(&media.origin)
            .await
            .map(|r| r.base)
            .unwrap_or_default();
        // The event names the datastore the bytes are really in, so a purge's deleter keeps a
        // blob this media now shares.
        let recorded = crate::blob_place::place_and_record(
            &self.ledger,
            &self.datastores,
            ds,
            spool,
            &sha,
            actor,
            RequestId(format!("remote-{}", media.media_id)),
            |placed| {
                Command::CacheRemote(RemoteMediaCached {
                    media: media.clone(),
                    sha256: sha,
                    size_bytes: size,
                    content_type: content_type.clone(),
                    upload_name: fetched.filename,
                    fetched_from: resolved,
                    datastore: placed.datastore.clone(),
                    location: placed.location.clone(),
                })
            },
        )
        .await?;
        match recorded {
            // Recorded meanwhile by another fetch: looked up below.
            Ok(_) | Err(LedgerError::Conflict(Conflict::MediaExists)) => {}
            Err(e) => return Err(e.into()),
        }
        tracing::info!(%media, sha256 = %sha, size_bytes = size, "remote media cached");
        // `None`: purged since (see `get`).
        crate::media::read::record(&self.ledger, media)
    }
}
