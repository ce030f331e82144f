//! Command validation: the writer checks each command against the current state (committed
//! plus its group's overlay) and turns it into the event to record.

use super::command::{Command, Conflict};
use super::overlay::Overlay;
use super::writer::Writer;
use super::LedgerError;
use media_ledger_events::{Event, Seq};
use media_ledger_projections::{
    hash_refs, media_index, moderation, pending_uploads, tasks, thumbnails, usage, ALL,
};
use media_ledger_projections::{names, ProjectionName};
use std::sync::atomic::Ordering;

impl Writer {
    /// Checks a command against the state (committed plus this group's overlay) and turns it
    /// into the event to record.
    pub(crate) fn validate(
        &self,
        cmd: Command,
        time: u64,
        overlay: &Overlay,
    ) -> Result<Event, LedgerError> {
        let db = &self.db;
        // Validation must read the true state: a halted projection's state is stale.
        let needs: &[ProjectionName] = match &cmd {
            Command::Upload { quota: None, .. } => &[
                names::MEDIA_INDEX,
                names::PENDING_UPLOADS,
                names::HASH_REFS,
                names::MODERATION,
            ],
            Command::Upload { quota: Some(_), .. } => &[
                names::MEDIA_INDEX,
                names::PENDING_UPLOADS,
                names::HASH_REFS,
                names::MODERATION,
                names::USAGE,
            ],
            Command::CreateAsync(_) | Command::ReserveWithin { .. } => {
                &[names::MEDIA_INDEX, names::PENDING_UPLOADS]
            }
            Command::Access(_) => &[names::MEDIA_INDEX],
            Command::StartTransfer(_) | Command::TaskProgress(_) => &[names::TASKS],
            Command::MoveBlob(_) => &[names::HASH_REFS, names::TASKS],
            Command::RecordThumbnail(_) => {
                &[names::MEDIA_INDEX, names::HASH_REFS, names::THUMBNAILS]
            }
            Command::CacheRemote(_) => &[names::MEDIA_INDEX, names::HASH_REFS, names::MODERATION],
            Command::ImportMedia(_) | Command::Migrate(_) => &[
                names::MEDIA_INDEX,
                names::PENDING_UPLOADS,
                names::HASH_REFS,
                names::MODERATION,
            ],
            Command::Quarantine { .. } | Command::Unquarantine { .. } => {
                &[names::MEDIA_INDEX, names::MODERATION]
            }
            Command::SetAttributes(_) => &[names::MEDIA_INDEX],
            Command::Purge(_) => &[names::MEDIA_INDEX, names::HASH_REFS, names::THUMBNAILS],
            Command::RecordBlobDeleted(_) => &[names::MODERATION],
            Command::RecordPreview(_) => &[names::MEDIA_INDEX, names::MODERATION],
            Command::ExpirePreviews(_) | Command::Export(_) | Command::StartImport(_) => &[],
            Command::ImportProgress(_) => &[names::TASKS],
        };
        {
            let failed = self.failed.lock();
            for (p, f) in ALL.iter().zip(failed.iter()) {
                if f.is_some() && needs.iter().any(|n| n.as_str() == p.name()) {
                    return Err(LedgerError::Halted(p.name()));
                }
            }
        }
        match cmd {
            Command::Upload {
                mut event,
                completes_async,
                quota,
            } => {
                let index = overlay.read(db, names::MEDIA_INDEX)?;
                let pending = overlay.read(db, names::PENDING_UPLOADS)?;
                let reservation = pending_uploads::get(&pending, &event.media)?;
                if media_index::get(&index, &event.media)?.is_some() {
                    return Err(LedgerError::Conflict(match completes_async {
                        Some(_) => Conflict::AlreadyUploaded,
                        None => Conflict::MediaExists,
                    }));
                }
                match (completes_async, reservation) {
                    (None, Some(_)) => return Err(LedgerError::Conflict(Conflict::MediaExists)),
                    (None, None) => {}
                    (Some(_), None) => return Err(LedgerError::Conflict(Conflict::NotPending)),
                    (Some(user), Some(r)) => {
                        if r.owner != user {
                            return Err(LedgerError::Conflict(Conflict::NotOwner));
                        }
                        if r.expires_at_ms <= time {
                            return Err(LedgerError::Conflict(Conflict::NotPending));
                        }
                    }
                }
                self.check_not_quarantined(overlay, &event.media, &event.sha256)?;
                if let Some(q) = quota {
                    let used = usage::get(&overlay.read(db, names::USAGE)?, &q.user)?;
                    if !quota_allows(&q, &used, event.size_bytes, time) {
                        return Err(LedgerError::Conflict(Conflict::QuotaExceeded));
                    }
                }
                self.adopt_existing_blob(
                    overlay,
                    &event.sha256,
                    &mut event.datastore,
                    &mut event.location,
                )?;
                Ok(Event::MediaUploadedV1(event))
            }
            Command::ReserveWithin { event, max_pending } => {
                let pending = overlay.read(db, names::PENDING_UPLOADS)?;
                let live = pending_uploads::owner(&pending, &event.owner)?.live_at(time);
                if u64::try_from(live).unwrap_or(u64::MAX) >= max_pending {
                    return Err(LedgerError::Conflict(Conflict::PendingQuota));
                }
                self.validate(Command::CreateAsync(event), time, overlay)
            }
            Command::CreateAsync(event) => {
                let index = overlay.read(db, names::MEDIA_INDEX)?;
                let pending = overlay.read(db, names::PENDING_UPLOADS)?;
                if media_index::get(&index, &event.media)?.is_some()
                    || pending_uploads::get(&pending, &event.media)?.is_some()
                {
                    return Err(LedgerError::Conflict(Conflict::MediaExists));
                }
                let limit = self.max_pending_per_user.load(Ordering::Relaxed);
                if limit > 0 {
                    let live = pending_uploads::owner(&pending, &event.owner)?.live_at(time);
                    if u64::try_from(live).unwrap_or(u64::MAX) >= limit {
                        return Err(LedgerError::Conflict(Conflict::TooManyPending));
                    }
                }
                Ok(Event::AsyncUploadCreatedV1(event))
            }
            Command::Access(event) => {
                let index = overlay.read(db, names::MEDIA_INDEX)?;
                match media_index::get(&index, &event.media)? {
                    Some(r) if r.sha256 == event.sha256 && !r.tombstone => {
                        Ok(Event::MediaAccessedV1(event))
                    }
                    _ => Err(LedgerError::Conflict(Conflict::UnknownMedia)),
                }
            }
            Command::CacheRemote(mut event) => {
                if media_index::get(&overlay.read(db, names::MEDIA_INDEX)?, &event.media)?.is_some()
                {
                    return Err(LedgerError::Conflict(Conflict::MediaExists));
                }
                self.check_not_quarantined(overlay, &event.media, &event.sha256)?;
                self.adopt_existing_blob(
                    overlay,
                    &event.sha256,
                    &mut event.datastore,
                    &mut event.location,
                )?;
                Ok(Event::RemoteMediaCachedV1(event))
            }
            Command::ImportMedia(mut event) => {
                self.check_new_media_id(overlay, &event.media)?;
                self.check_not_quarantined(overlay, &event.media, &event.sha256)?;
                self.adopt_existing_blob(
                    overlay,
                    &event.sha256,
                    &mut event.datastore,
                    &mut event.location,
                )?;
                Ok(Event::MediaImportedV1(event))
            }
            Command::RecordPreview(event) => {
                if let Some(image) = &event.image {
                    let record = media_index::get(&overlay.read(db, names::MEDIA_INDEX)?, image)?;
                    match record {
                        Some(r) if !r.tombstone && image.origin == event.homeserver => {
                            // Quarantined since it was stored: never offered.
                            self.check_not_quarantined(overlay, image, &r.sha256)?;
                        }
                        _ => return Err(LedgerError::Conflict(Conflict::UnknownMedia)),
                    }
                }
                Ok(Event::UrlPreviewedV1(event))
            }
            Command::ExpirePreviews(event) => Ok(Event::UrlPreviewsExpiredV1(event)),
            Command::Export(event) => Ok(Event::MediaExportedV1(event)),
            Command::StartImport(event) => Ok(Event::ImportStartedV1(event)),
            Command::ImportProgress(event) => {
                let tasks = overlay.read(db, names::TASKS)?;
                match media_ledger_projections::import_tasks::get(&tasks, event.task)? {
                    Some(t) if !t.is_finished() => Ok(Event::ImportProgressV1(event)),
                    _ => Err(LedgerError::Conflict(Conflict::NoSuchTask)),
                }
            }
            Command::Migrate(mut event) => {
                // No quarantine check: the media existed before, in the source; when its
                // bytes are quarantined here, the importer quarantines it right after
                // (invariant 38), so it is kept as evidence and never served.
                self.check_new_media_id(overlay, &event.media)?;
                self.adopt_existing_blob(
                    overlay,
                    &event.sha256,
                    &mut event.datastore,
                    &mut event.location,
                )?;
                Ok(Event::MediaMigratedV1(event))
            }
            Command::RecordThumbnail(mut event) => {
                if media_index::get(&overlay.read(db, names::MEDIA_INDEX)?, &event.media)?
                    .is_none_or(|r| r.tombstone)
                {
                    return Err(LedgerError::Conflict(Conflict::UnknownMedia));
                }
                let thumbs = overlay.read(db, names::THUMBNAILS)?;
                if thumbnails::get(
                    &thumbs,
                    &event.media,
                    event.width,
                    event.height,
                    event.method,
                    event.animated,
                )?
                .is_some()
                {
                    return Err(LedgerError::Conflict(Conflict::ThumbnailExists));
                }
                self.adopt_existing_blob(
                    overlay,
                    &event.sha256,
                    &mut event.datastore,
                    &mut event.location,
                )?;
                Ok(Event::ThumbnailGeneratedV1(event))
            }
            Command::StartTransfer(event) if event.source == event.target => {
                Err(LedgerError::Conflict(Conflict::WrongEvent))
            }
            Command::StartTransfer(event) => {
                // One direction at a time (content-addressed locations): no unfinished task
                // may drain the new target, fill the new source, or drain the same source.
                for t in self.unfinished_tasks(overlay)? {
                    if t.source == event.target
                        || t.target == event.source
                        || t.source == event.source
                    {
                        return Err(LedgerError::Conflict(Conflict::TransferRunning));
                    }
                }
                Ok(Event::TransferStartedV1(event))
            }
            Command::MoveBlob(event) => {
                self.require_unfinished(overlay, event.task)?;
                let hashes = overlay.read(db, names::HASH_REFS)?;
                match hash_refs::get(&hashes, &event.sha256)? {
                    Some(h)
                        if h.datastore == event.from_datastore
                            && h.location == event.from_location =>
                    {
                        Ok(Event::BlobMovedV1(event))
                    }
                    _ => Err(LedgerError::Conflict(Conflict::BlobElsewhere)),
                }
            }
            Command::Quarantine {
                authority,
                target,
                seeds,
                reason,
            } => self.validate_quarantine(overlay, authority, target, seeds, reason),
            Command::Unquarantine {
                authority,
                media,
                reason,
            } => self.validate_unquarantine(overlay, authority, media, reason),
            Command::SetAttributes(event) => {
                match media_index::get(&overlay.read(db, names::MEDIA_INDEX)?, &event.media)? {
                    Some(r) if !r.tombstone => Ok(Event::MediaAttributesSetV1(event)),
                    _ => Err(LedgerError::Conflict(Conflict::UnknownMedia)),
                }
            }
            Command::Purge(req) => self.validate_purge(overlay, req),
            Command::RecordBlobDeleted(event) => self.validate_blob_deleted(overlay, event),
            Command::TaskProgress(event) => {
                let task = match &event {
                    Event::BlobSourceDeletedV1(e) => e.task,
                    Event::BlobTransferFailedV1(e) => e.task,
                    Event::TransferFinishedV1(e) => e.task,
                    _ => return Err(LedgerError::Conflict(Conflict::WrongEvent)),
                };
                self.require_unfinished(overlay, task)?;
                Ok(event)
            }
        }
    }

    /// Every unfinished task: committed ones from the database, with this group's own
    /// changes (the overlay) on top.
    fn unfinished_tasks(&self, overlay: &Overlay) -> Result<Vec<tasks::TaskRecord>, LedgerError> {
        let mut all = std::collections::BTreeMap::new();
        let cf = super::store::cf(&self.db, names::TASKS.as_str())?;
        for item in self.db.iterator_cf(
            cf,
            rocksdb::IteratorMode::From(b"t", rocksdb::Direction::Forward),
        ) {
            let (k, v) = item?;
            if !k.starts_with(b"t") {
                break;
            }
            if let Some(entry) = tasks::decode_task_entry(&k, &v) {
                let (seq, t) = entry?;
                all.insert(seq, t);
            }
        }
        for (k, v) in overlay.entries(&self.db, names::TASKS)? {
            if let Some(entry) = v.and_then(|v| tasks::decode_task_entry(k, v)) {
                let (seq, t) = entry?;
                all.insert(seq, t);
            }
        }
        Ok(all.into_values().filter(|t| !t.is_finished()).collect())
    }

    /// Points a new reference at the blob already recorded for `sha`, if any: two writers of
    /// the same new bytes may each have stored a copy; the first recorded wins and the other
    /// is an orphan for the start-up sweep.
    fn adopt_existing_blob(
        &self,
        overlay: &Overlay,
        sha: &media_ledger_events::Sha256,
        datastore: &mut media_ledger_events::DatastoreId,
        location: &mut media_ledger_events::BlobLocation,
    ) -> Result<(), LedgerError> {
        if let Some(existing) = hash_refs::get(&overlay.read(&self.db, names::HASH_REFS)?, sha)? {
            *datastore = existing.datastore;
            *location = existing.location;
        }
        Ok(())
    }

    fn require_unfinished(&self, overlay: &Overlay, task: Seq) -> Result<(), LedgerError> {
        let view = overlay.read(&self.db, names::TASKS)?;
        match tasks::get(&view, task)? {
            Some(t) if !t.is_finished() => Ok(()),
            _ => Err(LedgerError::Conflict(Conflict::NoSuchTask)),
        }
    }
}

impl Writer {
    /// Refuses (`MediaExists`) an id recorded or reserved here (a reservation of ours, an
    /// async upload on its way, wins), or that had a history here and no record: it was
    /// purged here, and recording it again would undo the purge.
    fn check_new_media_id(
        &self,
        overlay: &Overlay,
        media: &media_ledger_events::MediaRef,
    ) -> Result<(), LedgerError> {
        let db = &self.db;
        if media_index::get(&overlay.read(db, names::MEDIA_INDEX)?, media)?.is_some()
            || pending_uploads::get(&overlay.read(db, names::PENDING_UPLOADS)?, media)?.is_some()
        {
            return Err(LedgerError::Conflict(Conflict::MediaExists));
        }
        let history = moderation::history_prefix(media);
        if !overlay.scan(db, names::MODERATION, &history)?.is_empty() {
            return Err(LedgerError::Conflict(Conflict::MediaExists));
        }
        Ok(())
    }
}

/// Whether `size_bytes` more, uploaded at `now_ms`, keep `used` within `q`.
pub fn quota_allows(
    q: &super::command::UploadQuota,
    used: &usage::UserUsage,
    size_bytes: u64,
    now_ms: u64,
) -> bool {
    let within = |max: u64, have: u64| max == 0 || have.saturating_add(size_bytes) <= max;
    (q.max_files == 0 || used.files < q.max_files)
        && within(q.max_bytes, used.bytes)
        && q.windows
            .iter()
            .all(|&(window, max)| within(max, used.window.within(now_ms, window)))
}
