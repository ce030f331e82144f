//! Validation of moderation commands: the writer decides, against the state of the moment,
//! exactly which media a quarantine, unquarantine or purge changes and which blobs a purge
//! frees, so the recorded act is what happened and replaying it needs no re-evaluation.

use super::command::{Conflict, PurgeRequest};
use super::overlay::Overlay;
use super::writer::Writer;
use super::LedgerError;
use media_ledger_events::{
    Authority, BlobDeleted, Event, FreedBlob, MediaPurged, MediaQuarantined, MediaRef,
    MediaUnquarantined, ModerationTarget, PurgedMedia, PurgedThumbnail, Sha256,
};
use media_ledger_projections::media_index::{self, MediaKind};
use media_ledger_projections::names;
use media_ledger_projections::{hash_refs, moderation, thumbnails};
use serde::Serialize;
use std::collections::{BTreeMap, HashSet};

/// Most encoded bytes of the media, hash, thumbnail and freed-blob lists of one act: a quarter
/// of the record limit (`codec::MAX_RECORD_BYTES`), leaving room for the reason, the target
/// and the envelope.
pub const ACT_BUDGET_BYTES: usize = media_ledger_events::codec::MAX_RECORD_BYTES / 4;

/// The encoded size of the lists of an act being decided.
#[derive(Default)]
struct Budget(usize);

impl Budget {
    /// Adds `item`'s encoded size.
    fn add<T: Serialize>(&mut self, item: &T) -> Result<(), LedgerError> {
        self.0 += media_ledger_events::codec::encode(item)?.len();
        Ok(())
    }

    /// Whether the act is full: nothing more is added once it is.
    fn full(&self) -> bool {
        self.0 >= ACT_BUDGET_BYTES
    }
}

fn conflict(c: Conflict) -> LedgerError {
    LedgerError::Conflict(c)
}

/// The entry a purge would record if it freed this blob.
fn freed_entry(sha256: Sha256, blob: &hash_refs::HashRecord) -> FreedBlob {
    FreedBlob {
        sha256,
        size_bytes: blob.size_bytes,
        datastore: blob.datastore.clone(),
        location: blob.location.clone(),
    }
}

fn in_scope(authority: &Authority, media: &MediaRef) -> bool {
    authority.origin().is_none_or(|o| &media.origin == o)
}

impl Writer {
    pub(crate) fn validate_quarantine(
        &self,
        overlay: &Overlay,
        authority: Authority,
        target: ModerationTarget,
        seeds: Vec<MediaRef>,
        reason: Option<String>,
    ) -> Result<Event, LedgerError> {
        if authority == Authority::Uploader {
            return Err(conflict(Conflict::WrongEvent));
        }
        let index = overlay.read(&self.db, names::MEDIA_INDEX)?;
        let mods = overlay.read(&self.db, names::MODERATION)?;
        let mut hashes: Vec<Sha256> = Vec::new();
        let mut hashes_seen: HashSet<Sha256> = HashSet::new();
        let mut changed: Vec<MediaRef> = Vec::new();
        let mut seen: HashSet<MediaRef> = HashSet::new();
        let mut budget = Budget::default();
        // The bytes named: the target's hash (whether or not a media holds it), the seeds'.
        let mut seed_hashes = Vec::new();
        if let ModerationTarget::Hash(sha) = &target {
            seed_hashes.push(*sha);
        }
        for seed in &seeds {
            if !in_scope(&authority, seed) {
                continue;
            }
            if let Some(rec) = media_index::get(&index, seed)? {
                seed_hashes.push(rec.sha256);
            }
        }
        'seeds: for sha in seed_hashes {
            if !hashes_seen.insert(sha) {
                continue;
            }
            budget.add(&sha)?;
            hashes.push(sha);
            for m in media_index::media_with_hash(&index, &sha)? {
                if !in_scope(&authority, &m) || seen.contains(&m) {
                    continue;
                }
                if let Some(r) = media_index::get(&index, &m)? {
                    if !r.pinned && !r.quarantined && !r.tombstone {
                        if budget.full() {
                            // The rest of this hash's media, and the seeds after it, are
                            // the next act's.
                            break 'seeds;
                        }
                        budget.add(&m)?;
                        seen.insert(m.clone());
                        changed.push(m);
                    }
                }
            }
            if budget.full() {
                break;
            }
        }
        let mut new_block = false;
        for sha in &hashes {
            let b = moderation::blocks(&mods, sha)?;
            new_block |= match &authority {
                Authority::HomeserverAdmin(s) => !b.homeservers.iter().any(|(h, _)| h == s),
                _ => b.repository.is_none(),
            };
        }
        if changed.is_empty() && !new_block {
            return Err(conflict(Conflict::NothingToDo));
        }
        Ok(Event::MediaQuarantinedV1(MediaQuarantined {
            authority,
            target,
            media: changed,
            hashes,
            reason,
        }))
    }

    pub(crate) fn validate_unquarantine(
        &self,
        overlay: &Overlay,
        authority: Authority,
        media: MediaRef,
        reason: Option<String>,
    ) -> Result<Event, LedgerError> {
        if authority == Authority::Uploader {
            return Err(conflict(Conflict::WrongEvent));
        }
        if !in_scope(&authority, &media) {
            return Err(conflict(Conflict::OutOfScope));
        }
        let index = overlay.read(&self.db, names::MEDIA_INDEX)?;
        let mods = overlay.read(&self.db, names::MODERATION)?;
        let rec = media_index::get(&index, &media)?.ok_or(conflict(Conflict::UnknownMedia))?;
        let blocks = moderation::blocks(&mods, &rec.sha256)?;
        let lifts_block = match &authority {
            Authority::HomeserverAdmin(s) => {
                if blocks.repository.is_some() {
                    return Err(conflict(Conflict::RepositoryQuarantine));
                }
                blocks.homeservers.iter().any(|(h, _)| h == s)
            }
            _ => !blocks.is_empty(),
        };
        let mut changed = Vec::new();
        let mut budget = Budget::default();
        for m in media_index::media_with_hash(&index, &rec.sha256)? {
            if in_scope(&authority, &m)
                && media_index::get(&index, &m)?.is_some_and(|r| r.quarantined && !r.tombstone)
            {
                if budget.full() {
                    break;
                }
                budget.add(&m)?;
                changed.push(m);
            }
        }
        if changed.is_empty() && !lifts_block {
            return Err(conflict(Conflict::NothingToDo));
        }
        Ok(Event::MediaUnquarantinedV1(MediaUnquarantined {
            authority,
            target: ModerationTarget::Media(media),
            media: changed,
            hashes: if lifts_block {
                vec![rec.sha256]
            } else {
                Vec::new()
            },
            reason,
        }))
    }

    pub(crate) fn validate_purge(
        &self,
        overlay: &Overlay,
        req: PurgeRequest,
    ) -> Result<Event, LedgerError> {
        let index = overlay.read(&self.db, names::MEDIA_INDEX)?;
        let refs = overlay.read(&self.db, names::HASH_REFS)?;
        let mut media = Vec::new();
        let mut thumbs = Vec::new();
        let mut drops: BTreeMap<Sha256, u64> = BTreeMap::new();
        let mut seen: HashSet<&MediaRef> = HashSet::new();
        let mut budget = Budget::default();
        for c in &req.candidates {
            if !seen.insert(c) || !in_scope(&req.authority, c) {
                continue;
            }
            let Some(rec) = media_index::get(&index, c)? else {
                continue;
            };
            if req.target == ModerationTarget::Thumbnails {
                let before = req.before_ts_ms.unwrap_or(0);
                if rec.tombstone || rec.pinned || (rec.quarantined && !req.include_quarantined) {
                    continue;
                }
                let mut size = Budget::default();
                let mut its_thumbs = Vec::new();
                for (k, v) in
                    overlay.scan(&self.db, names::THUMBNAILS, &thumbnails::media_prefix(c))?
                {
                    let t = thumbnails::decode_record(&v)?;
                    if t.created_at_ms >= before {
                        continue;
                    }
                    let thumb = self.purged_thumbnail(&refs, c, &k, &t, &mut size)?;
                    its_thumbs.push(thumb);
                }
                if its_thumbs.is_empty() {
                    continue;
                }
                if !thumbs.is_empty() && budget.0 + size.0 > ACT_BUDGET_BYTES {
                    break;
                }
                budget.0 += size.0;
                for t in &its_thumbs {
                    *drops.entry(t.sha256).or_default() += 1;
                }
                thumbs.extend(its_thumbs);
                continue;
            }
            if req
                .accessed_before_ms
                .is_some_and(|before| rec.last_access_ms >= before)
            {
                continue;
            }
            // Quarantined bytes are evidence: only an admin's purge (with
            // `include_quarantined`) turns them into a tombstone and frees them.
            let admin = req.authority != Authority::Uploader;
            if rec.tombstone
                || rec.pinned
                || (rec.quarantined && !(admin && req.include_quarantined))
            {
                continue;
            }
            if req.authority == Authority::Uploader && req.uploader.as_ref() != Some(&rec.uploader)
            {
                return Err(conflict(Conflict::NotUploader));
            }
            if req.keep_shared {
                let before = req.before_ts_ms.unwrap_or(u64::MAX);
                if rec.kind != MediaKind::Remote || rec.created_at_ms >= before {
                    continue;
                }
                let mut shared = false;
                for sib in media_index::media_with_hash(&index, &rec.sha256)? {
                    if &sib == c {
                        continue;
                    }
                    if let Some(s) = media_index::get(&index, &sib)? {
                        shared |= !s.tombstone
                            && (s.kind == MediaKind::Local || s.created_at_ms >= before);
                    }
                }
                if shared {
                    continue;
                }
            }
            let blob = hash_refs::get(&refs, &rec.sha256)?.ok_or_else(|| {
                LedgerError::Storage(format!("{c} has no hash record for {}", rec.sha256))
            })?;
            // This media's entries, with a freed-blob entry for each of its blobs (the most it
            // can add to the freed list), must fit in the act unless it is the act's first.
            let mut size = Budget::default();
            let entry = PurgedMedia {
                media: c.clone(),
                sha256: rec.sha256,
                size_bytes: rec.size_bytes,
                uploader: rec.uploader.clone(),
                remote: rec.kind == MediaKind::Remote,
                datastore: blob.datastore.clone(),
                created_seq: rec.created_seq,
                tombstone: rec.quarantined,
            };
            size.add(&entry)?;
            size.add(&freed_entry(rec.sha256, &blob))?;
            let mut its_thumbs = Vec::new();
            for (k, v) in overlay.scan(&self.db, names::THUMBNAILS, &thumbnails::media_prefix(c))? {
                let t = thumbnails::decode_record(&v)?;
                its_thumbs.push(self.purged_thumbnail(&refs, c, &k, &t, &mut size)?);
            }
            if !media.is_empty() && budget.0 + size.0 > ACT_BUDGET_BYTES {
                // This candidate, and the ones after it, are the next act's.
                break;
            }
            budget.0 += size.0;
            *drops.entry(rec.sha256).or_default() += 1;
            media.push(entry);
            for t in &its_thumbs {
                *drops.entry(t.sha256).or_default() += 1;
            }
            thumbs.extend(its_thumbs);
        }
        if media.is_empty() && thumbs.is_empty() {
            return Err(conflict(Conflict::NothingToDo));
        }
        let mut freed = Vec::new();
        for (sha, n) in drops {
            if let Some(h) = hash_refs::get(&refs, &sha)? {
                if h.ref_count == n {
                    freed.push(FreedBlob {
                        sha256: sha,
                        size_bytes: h.size_bytes,
                        datastore: h.datastore,
                        location: h.location,
                    });
                }
            }
        }
        Ok(Event::MediaPurgedV1(MediaPurged {
            authority: req.authority,
            target: req.target,
            before_ts_ms: req.before_ts_ms,
            media,
            thumbnails: thumbs,
            freed,
            reason: req.reason,
        }))
    }

    /// The purge entry of one thumbnail of `media` (key `key`, record `t`), its size and its
    /// blob's freed entry added to `size`.
    fn purged_thumbnail(
        &self,
        refs: &impl media_ledger_projections::KvRead,
        media: &MediaRef,
        key: &[u8],
        t: &thumbnails::ThumbRecord,
        size: &mut Budget,
    ) -> Result<PurgedThumbnail, LedgerError> {
        let (width, height, method, animated) = thumbnails::parse_thumb_key(key)
            .ok_or_else(|| LedgerError::Storage("malformed thumbnail key".into()))?;
        let tblob = hash_refs::get(refs, &t.sha256)?.ok_or_else(|| {
            LedgerError::Storage(format!("thumbnail of {media} has no hash record"))
        })?;
        size.add(&freed_entry(t.sha256, &tblob))?;
        let thumb = PurgedThumbnail {
            media: media.clone(),
            width,
            height,
            method,
            animated,
            sha256: t.sha256,
            size_bytes: t.size_bytes,
            datastore: tblob.datastore,
        };
        size.add(&thumb)?;
        Ok(thumb)
    }

    pub(crate) fn validate_blob_deleted(
        &self,
        overlay: &Overlay,
        event: BlobDeleted,
    ) -> Result<Event, LedgerError> {
        let mods = overlay.read(&self.db, names::MODERATION)?;
        if moderation::pending(&mods, event.purge, &event.sha256)?.is_some() {
            Ok(Event::BlobDeletedV1(event))
        } else {
            Err(conflict(Conflict::NoSuchTask))
        }
    }

    /// Refuses new media of `media.origin` whose bytes are quarantined in its scope.
    pub(crate) fn check_not_quarantined(
        &self,
        overlay: &Overlay,
        media: &MediaRef,
        sha: &Sha256,
    ) -> Result<(), LedgerError> {
        let mods = overlay.read(&self.db, names::MODERATION)?;
        if moderation::blocks(&mods, sha)?.blocks(&media.origin) {
            return Err(conflict(Conflict::Quarantined));
        }
        Ok(())
    }
}
