//! Read-through of media a homeserver stored itself: a download (or thumbnail) of a media of
//! one of our homeservers' origins that we have no record of (uploaded before the switch to
//! media-ledger, or by a bridge or Synapse itself straight to the homeserver) asks that
//! homeserver, stores the bytes and records `media.imported.v1`.
//!
//! The homeserver is asked on its `cs_api` with the request's own token: first
//! `GET /_matrix/client/v1/media/download/{server}/{id}` (authenticated media), then, if it
//! does not know that endpoint (404 `M_UNRECOGNIZED`, or a 404/405 that is not JSON), the
//! legacy `GET /_matrix/media/v3/download/{server}/{id}`. Only a media of the request's own
//! homeserver is read through (the token is valid there only), only for a token the
//! homeserver resolved (never the shared secret or a static token), and only when the
//! homeserver's `read_through` is on (default when it has a `cs_api`).
//!
//! The protections are the remote cache's (`remote.rs`): one read per media at a time
//! (`coalesce.rs`); the bytes streamed into a spool while hashed and counted against
//! `downloads.max_bytes` (whatever the homeserver declares); quarantined bytes refused before
//! and at commit; the blob placed under its lock (`blob_place`) before the event.
//! Our own outgoing requests carry [`LOOP_HEADER`]: a request carrying it is never read
//! through again (a `cs_api` that routes media back to us would otherwise wait on itself).

use crate::coalesce::Coalescer;
use crate::config::{Config, DatastoreKind, HomeserverConfig};
use crate::datastore::{Datastore, Datastores};
use crate::error::ApiError;
use crate::ledger::{Command, Conflict, Ledger, LedgerError};
use futures_util::StreamExt;
use media_ledger_events::{Actor, ContentType, MediaImported, MediaRef};
use media_ledger_projections::media_index::MediaRecord;
use media_ledger_projections::{moderation, names};
use std::sync::Arc;
use std::time::Duration;

/// Marks a request made by a read-through; such a request never reads through itself.
pub const LOOP_HEADER: &str = "x-media-ledger-read-through";

/// What the homeserver answered.
enum Answer {
    /// The media: its response (status 200).
    Media(reqwest::Response),
    /// The homeserver does not know this endpoint.
    Unrecognized,
}

/// The read-through of our homeservers' media.
pub struct ReadThrough {
    http: reqwest::Client,
    ledger: Arc<Ledger>,
    datastores: Arc<Datastores>,
    config: Arc<Config>,
    inflight: Coalescer<MediaRef>,
}

impl ReadThrough {
    /// Builds it.
    pub fn new(ledger: Arc<Ledger>, datastores: Arc<Datastores>, config: Arc<Config>) -> Self {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .read_timeout(Duration::from_secs(30))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap_or_default();
        Self {
            http,
            ledger,
            datastores,
            config,
            inflight: Coalescer::default(),
        }
    }

    /// The record of `media` of homeserver `hs`, read through from it with `token` if it is
    /// not recorded here. 404 `M_NOT_FOUND` when the homeserver does not have it either.
    pub async fn get(
        &self,
        actor: Actor,
        hs: &HomeserverConfig,
        token: &str,
        media: &MediaRef,
    ) -> Result<MediaRecord, ApiError> {
        let Some(cs_api) = hs.read_through_api() else {
            return Err(ApiError::NotFound("media not found".into()));
        };
        let work = async {
            // A concurrent miss read it meanwhile: served from here.
            if let Some(r) = crate::media::read::record(&self.ledger, media)? {
                return Ok(r);
            }
            // Purged here: not read through again (the writer refuses the import anyway).
            if self.purged_here(media)? {
                return Err(ApiError::NotFound("media not found".into()));
            }
            self.import(actor, cs_api, token, media).await?;
            crate::media::read::record(&self.ledger, media)?
                .ok_or_else(|| ApiError::NotFound("media not found".into()))
        };
        self.inflight.run(media.clone(), work).await
    }

    /// Whether `media` has a history here but no record: it was purged here.
    fn purged_here(&self, media: &MediaRef) -> Result<bool, ApiError> {
        let mut any = false;
        self.ledger.scan(
            names::MODERATION,
            &moderation::history_prefix(media),
            |_, _| {
                any = true;
                Ok(())
            },
        )?;
        Ok(any)
    }

    /// Asks the homeserver: the v1 endpoint, then the legacy one if v1 is unknown there.
    async fn ask(&self, cs_api: &str, token: &str, media: &MediaRef) -> Result<Answer, ApiError> {
        let base = cs_api.trim_end_matches('/');
        let path = format!("{}/{}", media.origin, media.media_id);
        for url in [
            format!("{base}/_matrix/client/v1/media/download/{path}"),
            format!("{base}/_matrix/media/v3/download/{path}?allow_remote=false"),
        ] {
            match self.ask_one(&url, token).await? {
                Answer::Unrecognized => {
                    tracing::debug!(%url, "the homeserver does not know this media endpoint");
                }
                media => return Ok(media),
            }
        }
        Err(ApiError::bad_gateway(
            "the homeserver failed to serve the media",
            format!("{base} knows neither media download endpoint"),
        ))
    }

    async fn ask_one(&self, url: &str, token: &str) -> Result<Answer, ApiError> {
        let resp = self
            .http
            .get(url)
            .bearer_auth(token)
            .header(LOOP_HEADER, "1")
            .send()
            .await
            .map_err(|e| {
                ApiError::bad_gateway(
                    "the homeserver failed to serve the media",
                    format_args!(
                        "read-through {url}: {}",
                        crate::homeserver_check::error_chain(&e)
                    ),
                )
            })?;
        let status = resp.status().as_u16();
        if status == 200 {
            return Ok(Answer::Media(resp));
        }
        let body =
            crate::federation::client::capped_json(resp, crate::federation::client::MAX_JSON_BYTES)
                .await
                .ok();
        let errcode = body
            .as_ref()
            .and_then(|b| b["errcode"].as_str().map(str::to_owned));
        match (status, errcode.as_deref()) {
            (404 | 400 | 405, Some("M_UNRECOGNIZED")) | (404 | 405, None) => {
                Ok(Answer::Unrecognized)
            }
            (404, _) => Err(ApiError::NotFound("media not found".into())),
            (413, _) | (502, Some("M_TOO_LARGE")) => Err(ApiError::TooLarge {
                limit_bytes: self.config.downloads.max_bytes,
            }),
            (s, code) => Err(ApiError::bad_gateway(
                "the homeserver failed to serve the media",
                format!("read-through {url} answered {s} {}", code.unwrap_or("")),
            )),
        }
    }

    async fn import(
        &self,
        actor: Actor,
        cs_api: &str,
        token: &str,
        media: &MediaRef,
    ) -> Result<(), ApiError> {
        let Answer::Media(resp) = self.ask(cs_api, token, media).await? else {
            return Err(ApiError::NotFound("media not found".into()));
        };
        let max = self.config.downloads.max_bytes;
        if resp.content_length().is_some_and(|l| l > max) {
            return Err(ApiError::TooLarge { limit_bytes: max });
        }
        let ds = crate::media::pick_datastore(
            &self.ledger,
            &self.datastores,
            DatastoreKind::LocalMedia,
        )?;
        let spool = ds
            .spool_dir()
            .join(format!("import-{}.part", crate::media::new_media_id()?));
        let result = self.store(&ds, &spool, resp, actor, cs_api, media).await;
        if result.is_err() {
            let _ = tokio::fs::remove_file(&spool).await;
        }
        result
    }

    async fn store(
        &self,
        ds: &Arc<dyn Datastore>,
        spool: &std::path::Path,
        resp: reqwest::Response,
        actor: Actor,
        cs_api: &str,
        media: &MediaRef,
    ) -> Result<(), ApiError> {
        let max = self.config.downloads.max_bytes;
        let header = |name: &str| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let content_type = header("content-type").and_then(|c| ContentType::normalise(&c));
        let upload_name = header("content-disposition")
            .as_deref()
            .and_then(crate::federation::client::filename_of);
        let mut out = crate::media::Spool::create(spool, max).await?;
        let mut body = resp.bytes_stream();
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| {
                ApiError::bad_gateway(
                    "the homeserver failed to serve the media",
                    format_args!("read-through of {media}: {e}"),
                )
            })?;
            out.push(&chunk).await?;
        }
        let (sha, size) = out.finish(ds.spool_needs_sync()).await?;
        crate::media::refuse_quarantined(&self.ledger, media, &sha)?;
        let recorded = crate::blob_place::place_and_record(
            &self.ledger,
            &self.datastores,
            ds,
            spool,
            &sha,
            actor,
            crate::http::extract::request_id(),
            |placed| {
                Command::ImportMedia(MediaImported {
                    media: media.clone(),
                    sha256: sha,
                    size_bytes: size,
                    content_type,
                    upload_name,
                    origin_homeserver: cs_api.to_owned(),
                    // Synapse's download API does not say when it stored the media.
                    origin_created_at_ms: None,
                    datastore: placed.datastore.clone(),
                    location: placed.location.clone(),
                })
            },
        )
        .await?;
        match recorded {
            // Recorded or reserved meanwhile (an upload of ours): the caller looks again.
            Ok(_) | Err(LedgerError::Conflict(Conflict::MediaExists)) => {}
            Err(e) => return Err(e.into()),
        }
        tracing::info!(%media, sha256 = %sha, size_bytes = size, "media read through from its homeserver");
        Ok(())
    }
}
