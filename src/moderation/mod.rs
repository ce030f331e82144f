//! Moderation commands: quarantine, unquarantine, attributes and purge, and the deletions a
//! purge leads to.
//!
//! Each act is one event whose exact effect the ledger's writer decides (see
//! `ledger/validate_moderation.rs`); this module resolves what the request names (a user's
//! media, a room's, ...) into candidates, submits the act, then deletes the blobs the act
//! freed and records each deletion ([`deleter`]). A request naming more than
//! [`MAX_ACT_MEDIA`] media is recorded as several acts, each whole; so is one whose event would
//! outgrow the writer's act budget (same-hash siblings and thumbnails count): the writer
//! records the part that fits and the same command, submitted again, records the next part,
//! until the writer answers that nothing is left to do.

pub mod deleter;
pub mod homeserver;
pub mod placeholder;
pub mod policy;
pub mod scope;
pub mod select;

use crate::config::Config;
use crate::datastore::Datastores;
use crate::error::ApiError;
use crate::ledger::{Command, Committed, Conflict, Ledger, LedgerError, PurgeRequest};
use media_ledger_events::{
    Actor, Authority, Event, MediaAttributesSet, MediaPurpose, MediaRef, ModerationTarget,
    RequestId,
};
use std::sync::Arc;

/// Most seed media one command carries (bounds the command; the size of the recorded act is
/// bounded by the writer's `ACT_BUDGET_BYTES`).
pub const MAX_ACT_MEDIA: usize = 5_000;

/// Who acts, in what capacity, and why.
#[derive(Debug, Clone)]
pub struct Act {
    /// Recorded as the events' actor.
    pub actor: Actor,
    /// The request.
    pub request_id: RequestId,
    /// Repository admin, homeserver admin or uploader.
    pub authority: Authority,
    /// The moderator's reason, if given.
    pub reason: Option<String>,
}

/// What a purge request selects, besides its candidates.
#[derive(Debug, Clone)]
pub struct PurgeSpec {
    /// What was asked for.
    pub target: ModerationTarget,
    /// The request's `before_ts`.
    pub before_ts_ms: Option<u64>,
    /// Quarantined media become tombstones (else they are skipped).
    pub include_quarantined: bool,
    /// Remote purge's sharing rule.
    pub keep_shared: bool,
    /// Keep candidates accessed since (retention).
    pub accessed_before_ms: Option<u64>,
}

/// The moderation service.
pub struct Moderation {
    ledger: Arc<Ledger>,
    datastores: Arc<Datastores>,
    deletion_hook: Option<deleter::DeletionHook>,
    /// The homeserver admin API client.
    pub homeserver: homeserver::HomeserverAdmin,
}

impl Moderation {
    /// Builds the service (`deletion_hook`: see [`deleter::DeletionHook`]).
    pub fn new(
        ledger: Arc<Ledger>,
        datastores: Arc<Datastores>,
        config: &Config,
        deletion_hook: Option<deleter::DeletionHook>,
    ) -> Self {
        let ttl = std::time::Duration::from_millis(config.auth.whoami_cache_ttl_ms);
        Self {
            ledger,
            datastores,
            deletion_hook,
            homeserver: homeserver::HomeserverAdmin::new(ttl),
        }
    }

    /// The ledger (for the selection scans).
    pub fn ledger(&self) -> &Arc<Ledger> {
        &self.ledger
    }

    /// Submits one act of a moderation command: `None` once the writer answers that nothing
    /// is left to do. An act cut at the writer's budget leaves the rest still qualifying, so
    /// callers submit the same command again until then.
    async fn next_act(&self, act: &Act, cmd: Command) -> Result<Option<Committed>, LedgerError> {
        match self
            .ledger
            .submit(act.actor.clone(), act.request_id.clone(), cmd)
            .await
        {
            Ok(c) => Ok(Some(c)),
            Err(LedgerError::Conflict(Conflict::NothingToDo)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Quarantines `seeds` and their same-hash siblings in scope; the number of media changed.
    pub async fn quarantine(
        &self,
        act: &Act,
        target: ModerationTarget,
        seeds: Vec<MediaRef>,
    ) -> Result<u64, ApiError> {
        let mut changed = 0u64;
        for chunk in seeds.chunks(MAX_ACT_MEDIA) {
            let cmd = || Command::Quarantine {
                authority: act.authority.clone(),
                target: target.clone(),
                seeds: chunk.to_vec(),
                reason: act.reason.clone(),
            };
            while let Some(c) = self.next_act(act, cmd()).await? {
                if let Event::MediaQuarantinedV1(e) = &c.event {
                    tracing::info!(actor = %act.actor, media = e.media.len(), seq = c.seq.0, "media quarantined");
                    changed += e.media.len() as u64;
                }
            }
        }
        Ok(changed)
    }

    /// Lifts the quarantine of `media`; the number of media changed.
    pub async fn unquarantine(&self, act: &Act, media: MediaRef) -> Result<u64, ApiError> {
        let mut changed = 0u64;
        let cmd = || Command::Unquarantine {
            authority: act.authority.clone(),
            media: media.clone(),
            reason: act.reason.clone(),
        };
        loop {
            match self.next_act(act, cmd()).await {
                Ok(Some(c)) => {
                    if let Event::MediaUnquarantinedV1(e) = &c.event {
                        changed += e.media.len() as u64;
                    }
                }
                Ok(None) => return Ok(changed),
                Err(LedgerError::Conflict(Conflict::UnknownMedia)) => {
                    return Err(ApiError::NotFound("media not found".into()))
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Sets the purpose of `media`.
    pub async fn set_purpose(
        &self,
        act: &Act,
        media: MediaRef,
        purpose: MediaPurpose,
    ) -> Result<(), ApiError> {
        let cmd = Command::SetAttributes(MediaAttributesSet {
            media,
            purpose,
            authority: act.authority.clone(),
            reason: act.reason.clone(),
        });
        match self
            .ledger
            .submit(act.actor.clone(), act.request_id.clone(), cmd)
            .await
        {
            Ok(_) => Ok(()),
            Err(LedgerError::Conflict(Conflict::UnknownMedia)) => {
                Err(ApiError::NotFound("media not found".into()))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Purges the candidates that still qualify, then deletes the blobs freed; returns the
    /// media removed or tombstoned.
    pub async fn purge(
        &self,
        act: &Act,
        spec: PurgeSpec,
        candidates: Vec<MediaRef>,
    ) -> Result<Vec<MediaRef>, ApiError> {
        Ok(self.purge_counting(act, spec, candidates).await?.0)
    }

    /// Purges the thumbnails `spec` selects (target [`ModerationTarget::Thumbnails`]) of the
    /// candidates, then deletes the blobs freed; returns how many thumbnails went.
    pub async fn purge_thumbnails(
        &self,
        act: &Act,
        spec: PurgeSpec,
        candidates: Vec<MediaRef>,
    ) -> Result<u64, ApiError> {
        Ok(self.purge_counting(act, spec, candidates).await?.1)
    }

    async fn purge_counting(
        &self,
        act: &Act,
        spec: PurgeSpec,
        candidates: Vec<MediaRef>,
    ) -> Result<(Vec<MediaRef>, u64), ApiError> {
        let mut affected = Vec::new();
        let mut thumbnails = 0u64;
        for chunk in candidates.chunks(MAX_ACT_MEDIA) {
            let cmd = || {
                Command::Purge(PurgeRequest {
                    authority: act.authority.clone(),
                    uploader: (act.authority == Authority::Uploader).then(|| act.actor.clone()),
                    target: spec.target.clone(),
                    before_ts_ms: spec.before_ts_ms,
                    candidates: chunk.to_vec(),
                    include_quarantined: spec.include_quarantined,
                    keep_shared: spec.keep_shared,
                    accessed_before_ms: spec.accessed_before_ms,
                    reason: act.reason.clone(),
                })
            };
            while let Some(c) = self.next_act(act, cmd()).await? {
                if let Event::MediaPurgedV1(e) = c.event {
                    tracing::info!(actor = %act.actor, media = e.media.len(), thumbnails = e.thumbnails.len(), freed = e.freed.len(), seq = c.seq.0, "purge recorded");
                    affected.extend(e.media.iter().map(|m| m.media.clone()));
                    thumbnails += e.thumbnails.len() as u64;
                    deleter::delete_freed(
                        &self.ledger,
                        &self.datastores,
                        self.deletion_hook.as_ref(),
                        c.seq,
                        e.freed,
                    )
                    .await;
                }
            }
        }
        Ok((affected, thumbnails))
    }
}

/// The periodic remote-media expiry (`downloads.expire_after_days`): hourly, the same purge
/// as `POST purge/remote` with `before_ts = now - days`, recorded as the system's act.
pub async fn expire_remote_loop(
    service: Arc<Moderation>,
    days: u64,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let period = std::time::Duration::from_secs(3600);
    loop {
        let before = crate::clock::now_ms().saturating_sub(days.saturating_mul(86_400_000));
        let ledger = service.ledger.clone();
        let candidates =
            tokio::task::spawn_blocking(move || select::remote_before(&ledger, before)).await;
        match candidates {
            Ok(Ok(candidates)) if !candidates.is_empty() => {
                let act = Act {
                    actor: Actor::System,
                    request_id: RequestId(format!("expiry-{before}")),
                    authority: Authority::RepositoryAdmin,
                    reason: Some(format!("remote media older than {days} days")),
                };
                let spec = PurgeSpec {
                    target: ModerationTarget::Remote,
                    before_ts_ms: Some(before),
                    include_quarantined: false,
                    keep_shared: true,
                    accessed_before_ms: None,
                };
                match service.purge(&act, spec, candidates).await {
                    Ok(removed) => tracing::info!(removed = removed.len(), "remote media expired"),
                    Err(e) => tracing::warn!(error = %e, "remote media expiry failed"),
                }
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "remote media expiry: selection failed"),
            Err(e) => tracing::warn!(error = %e, "remote media expiry: selection panicked"),
        }
        tokio::select! {
            _ = tokio::time::sleep(period) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}
