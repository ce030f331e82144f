//! Purges as the writer decides them (`validate_purge`): the candidates each kind of request
//! resolves to, the media it spares (tombstones, pinned media, quarantined bytes unless an
//! admin asks for them, remote bytes a local media shares), quarantined media purged into
//! tombstones, the thumbnails removed with their media and the blobs freed when their last
//! media or thumbnail reference goes; a purge that would remove nothing is skipped (the
//! writer would refuse it). Then the deleter, which records each freed blob (kept when a new
//! upload refers to the same blob again).

use super::{authority, in_scope, moderator, size_of_sha, user, Known, Model};
use crate::plan::{At, Step};
use crate::{BoxError, FAR_FUTURE_MS, THUMB_SIZES};
use media_ledger::ledger::{Command, PurgeRequest};
use media_ledger_events::{
    Actor, Authority, BlobDeleted, Event, FreedBlob, MediaPurged, MediaRef, ModerationTarget,
    PurgedMedia, PurgedThumbnail, RequestId, Seq, Sha256,
};
use std::collections::{BTreeMap, BTreeSet};

/// What a purge removes: media, thumbnails, and how many references each digest loses.
type Removed = (
    Vec<PurgedMedia>,
    Vec<PurgedThumbnail>,
    BTreeMap<Sha256, u64>,
);

impl Model {
    /// A purge as `validate_purge` decides it (the writer's candidates, filters, thumbnails
    /// and freed blobs), applied to the model. `kind`: 0 one media, 1 a user's media, 2 every
    /// quarantined media, 3 remote media whose bytes no local media uses, 4 some media.
    pub(crate) fn purge(
        &mut self,
        at: At,
        kind: usize,
        picks: &[usize],
        scope: usize,
    ) -> Result<Option<Step>, BoxError> {
        let At { i, seq, request_id } = at;
        let first = picks.first().copied().unwrap_or(0);
        let Some(one) = self.pick_media(first, |_| true) else {
            return Ok(None);
        };
        let authority = authority(scope)?.unwrap_or(Authority::Uploader);
        let reason = (!i.is_multiple_of(3)).then(|| format!("purge at step {i}"));
        let request = self.purge_request(kind % 5, picks, &one, authority, reason)?;
        let (media, thumbnails, drops) = self.removed(&request)?;
        if media.is_empty() {
            return Ok(None);
        }
        let freed = self.freed(&drops)?;
        self.apply_purge(seq, &media, &freed);
        let actor = match &request.uploader {
            Some(u) => u.clone(),
            None => moderator(&request.authority)?,
        };
        let expected = Event::MediaPurgedV1(MediaPurged {
            authority: request.authority.clone(),
            target: request.target.clone(),
            before_ts_ms: request.before_ts_ms,
            media,
            thumbnails,
            freed,
            reason: request.reason.clone(),
        });
        Ok(Some(Step {
            actor,
            request_id,
            command: Command::Purge(request),
            expected,
        }))
    }

    /// The request purge `kind` makes, `one` being the first picked media: its target,
    /// `before_ts`, candidates and filters. A remote purge is a repository admin's; an
    /// uploader purges only one of its own local media (else a repository admin acts).
    fn purge_request(
        &self,
        kind: usize,
        picks: &[usize],
        one: &MediaRef,
        authority: Authority,
        reason: Option<String>,
    ) -> Result<PurgeRequest, BoxError> {
        let first = picks.first().copied().unwrap_or(0);
        let mut request = PurgeRequest {
            authority,
            uploader: None,
            target: ModerationTarget::Media(one.clone()),
            before_ts_ms: None,
            candidates: vec![one.clone()],
            include_quarantined: true,
            keep_shared: false,
            accessed_before_ms: None,
            reason,
        };
        let every = |keep: &dyn Fn(&Known) -> bool| -> Vec<MediaRef> {
            self.media
                .iter()
                .filter(|(_, k)| keep(k))
                .map(|(m, _)| m.clone())
                .collect()
        };
        match kind {
            0 => {}
            1 => {
                let u = user(first)?;
                let who = Actor::User(u.clone());
                request.candidates = every(&|k| k.uploader == who);
                request.target = ModerationTarget::User(u);
                request.before_ts_ms = Some(FAR_FUTURE_MS);
            }
            2 => {
                request.candidates = every(&|k| k.quarantined && !k.tombstone);
                request.target = ModerationTarget::Quarantined;
            }
            3 => {
                request.authority = Authority::RepositoryAdmin;
                request.candidates = every(&|k| k.remote && !k.tombstone);
                request.target = ModerationTarget::Remote;
                // `before_ts` far ahead: every cached media qualifies by time, on the
                // ledger's clock as in the plan's envelopes.
                request.before_ts_ms = Some(FAR_FUTURE_MS);
                request.include_quarantined = false;
                request.keep_shared = true;
            }
            _ => {
                request.candidates = picks
                    .iter()
                    .filter_map(|p| self.pick_media(*p, |_| true))
                    .collect();
                request.target = ModerationTarget::Old {
                    include_local: first.is_multiple_of(2),
                };
                request.before_ts_ms = Some(FAR_FUTURE_MS);
            }
        }
        // Only one's own local media, one at a time, for an uploader.
        request.uploader = match (&request.authority, kind, self.media.get(one)) {
            (Authority::Uploader, 0, Some(k)) if matches!(k.uploader, Actor::User(_)) => {
                Some(k.uploader.clone())
            }
            (Authority::Uploader, _, _) => {
                request.authority = Authority::RepositoryAdmin;
                None
            }
            _ => None,
        };
        Ok(request)
    }

    /// Whether the writer leaves candidate `c` alone: a tombstone, a pinned media,
    /// quarantined bytes unless an admin asks for them (an uploader never purges them: they
    /// are evidence), and for a remote purge a local media or a remote whose bytes a live
    /// local media uses.
    fn spared(&self, request: &PurgeRequest, c: &MediaRef, k: &Known) -> bool {
        let admin = request.authority != Authority::Uploader;
        if k.tombstone || k.pinned || (k.quarantined && !(admin && request.include_quarantined)) {
            return true;
        }
        if !request.keep_shared {
            return false;
        }
        if !k.remote {
            return true;
        }
        self.by_hash.get(&k.sha).into_iter().flatten().any(|sib| {
            sib != c
                && self
                    .media
                    .get(sib)
                    .is_some_and(|s| !s.tombstone && !s.remote)
        })
    }

    /// The media and thumbnails `request` removes, in the writer's order.
    fn removed(&self, request: &PurgeRequest) -> Result<Removed, BoxError> {
        let mut media = Vec::new();
        let mut thumbs = Vec::new();
        let mut drops: BTreeMap<Sha256, u64> = BTreeMap::new();
        let mut seen: BTreeSet<&MediaRef> = BTreeSet::new();
        for c in &request.candidates {
            if !seen.insert(c) || !in_scope(&request.authority, c) {
                continue;
            }
            let Some(k) = self.media.get(c) else {
                continue;
            };
            if self.spared(request, c, k) {
                continue;
            }
            let (ds, _) = self
                .blobs
                .get(&k.sha)
                .cloned()
                .ok_or_else(|| format!("{c} has no blob in the model"))?;
            *drops.entry(k.sha).or_default() += 1;
            media.push(PurgedMedia {
                media: c.clone(),
                sha256: k.sha,
                size_bytes: size_of_sha(&k.sha),
                uploader: k.uploader.clone(),
                remote: k.remote,
                datastore: ds,
                created_seq: k.created_seq,
                tombstone: k.quarantined,
            });
            self.removed_thumbnails(c, &mut thumbs, &mut drops)?;
        }
        Ok((media, thumbs, drops))
    }

    /// The thumbnails of `c` a purge removes with it, in key order (that of [`THUMB_SIZES`]).
    fn removed_thumbnails(
        &self,
        c: &MediaRef,
        thumbs: &mut Vec<PurgedThumbnail>,
        drops: &mut BTreeMap<Sha256, u64>,
    ) -> Result<(), BoxError> {
        for (size, &(width, height, method, animated)) in THUMB_SIZES.iter().enumerate() {
            let Some(tsha) = self.thumbnails.get(&(c.clone(), size)).copied() else {
                continue;
            };
            let (tds, _) = self
                .blobs
                .get(&tsha)
                .cloned()
                .ok_or_else(|| format!("a thumbnail of {c} has no blob in the model"))?;
            *drops.entry(tsha).or_default() += 1;
            thumbs.push(PurgedThumbnail {
                media: c.clone(),
                width,
                height,
                method,
                animated,
                sha256: tsha,
                size_bytes: size_of_sha(&tsha),
                datastore: tds,
            });
        }
        Ok(())
    }

    /// The blobs freed: those whose every reference the purge `drops`.
    fn freed(&self, drops: &BTreeMap<Sha256, u64>) -> Result<Vec<FreedBlob>, BoxError> {
        let mut freed = Vec::new();
        for (sha, n) in drops {
            if self.ref_count(sha) == *n {
                let (datastore, location) = self
                    .blobs
                    .get(sha)
                    .cloned()
                    .ok_or("a freed digest has no blob in the model")?;
                freed.push(FreedBlob {
                    sha256: *sha,
                    size_bytes: size_of_sha(sha),
                    datastore,
                    location,
                });
            }
        }
        Ok(freed)
    }

    /// Applies purge `seq`: quarantined media become tombstones, others go (a remote one may
    /// be fetched again), their thumbnails go, freed blobs wait for the deleter.
    fn apply_purge(&mut self, seq: Seq, media: &[PurgedMedia], freed: &[FreedBlob]) {
        for p in media {
            if p.tombstone {
                if let Some(k) = self.media.get_mut(&p.media) {
                    k.tombstone = true;
                }
            } else {
                self.media.remove(&p.media);
                if let Some(list) = self.by_hash.get_mut(&p.sha256) {
                    list.retain(|m| m != &p.media);
                    if list.is_empty() {
                        self.by_hash.remove(&p.sha256);
                    }
                }
                if p.remote {
                    self.purged_remote.push((p.media.clone(), p.sha256));
                }
            }
            self.uploaded.retain(|(m, _)| m != &p.media);
            for size in 0..THUMB_SIZES.len() {
                self.thumbnails.remove(&(p.media.clone(), size));
            }
        }
        for f in freed {
            self.blobs.remove(&f.sha256);
            self.pending.push((seq, f.clone()));
        }
    }

    /// The deleter deals with the `pick`-th blob a purge freed: it keeps the bytes when the
    /// hash record points at them again.
    pub(crate) fn delete_blob(&mut self, pick: usize) -> Option<Step> {
        if self.pending.is_empty() {
            return None;
        }
        let (purge, blob) = self.pending.remove(pick % self.pending.len());
        let kept = self
            .blobs
            .get(&blob.sha256)
            .is_some_and(|(d, l)| *d == blob.datastore && *l == blob.location);
        let event = BlobDeleted {
            purge,
            sha256: blob.sha256,
            datastore: blob.datastore,
            location: blob.location,
            kept,
        };
        Some(Step {
            actor: Actor::System,
            request_id: RequestId(format!("purge-{}", purge.0)),
            command: Command::RecordBlobDeleted(event.clone()),
            expected: Event::BlobDeletedV1(event),
        })
    }
}
