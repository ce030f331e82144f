//! The single writer: assigns sequences, checks commands against current state, folds the
//! group into every projection and commits log, state and checkpoints in one synced batch.
//!
//! Group commit: the writer takes one request, then every request already queued (up to
//! [`MAX_GROUP`]), and pays one WAL sync for all of them. Nobody waits for a sync they do not
//! share, and there is no per-request fsync queue.

use super::overlay::Overlay;
use super::store::{cf, head_entry, seq_key, Checkpoint, Head, CF_CHECKPOINTS, CF_LOG, CF_META};
use super::LedgerError;
use media_ledger_events::{
    codec, Actor, AsyncUploadCreated, Envelope, Event, MediaAccessed, MediaUploaded, RequestId,
    Seq, UserId,
};
use media_ledger_projections::{hash_refs, media_index, pending_uploads, ALL};
use parking_lot::Mutex;
use rocksdb::{WriteBatch, WriteOptions, DB};
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot, watch};

/// Most requests folded into one synced batch.
pub const MAX_GROUP: usize = 1024;

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
}

/// What a committed command became.
#[derive(Debug, Clone)]
pub struct Committed {
    /// Its sequence.
    pub seq: Seq,
    /// The event as recorded.
    pub event: Event,
}

pub(crate) type Reply = oneshot::Sender<Result<Committed, LedgerError>>;

pub(crate) struct Request {
    pub(crate) cmd: Command,
    pub(crate) actor: Actor,
    pub(crate) request_id: RequestId,
    pub(crate) reply: Option<Reply>,
}

pub(crate) struct Writer {
    pub(crate) db: Arc<DB>,
    pub(crate) head: Head,
    pub(crate) last_ms: u64,
    pub(crate) failed: Arc<Mutex<Vec<Option<String>>>>,
    pub(crate) head_tx: watch::Sender<Seq>,
}

fn now_ms() -> u64 {
    u64::try_from(chrono::Utc::now().timestamp_millis()).unwrap_or(0)
}

impl Writer {
    pub(crate) fn run(mut self, mut rx: mpsc::Receiver<Request>) {
        let mut group = Vec::with_capacity(MAX_GROUP);
        while let Some(first) = rx.blocking_recv() {
            group.push(first);
            while group.len() < MAX_GROUP {
                match rx.try_recv() {
                    Ok(r) => group.push(r),
                    Err(_) => break,
                }
            }
            self.commit_group(&mut group);
        }
        tracing::debug!("ledger writer stopped");
    }

    fn commit_group(&mut self, group: &mut Vec<Request>) {
        let mut overlay = Overlay::new();
        let mut batch = WriteBatch::default();
        let mut head = self.head;
        let mut outcomes: Vec<(Option<Reply>, Result<Committed, LedgerError>)> = Vec::new();
        let time = now_ms().max(self.last_ms);
        for req in group.drain(..) {
            let result = self.append_one(
                req.cmd,
                req.actor,
                req.request_id,
                time,
                &mut head,
                &mut overlay,
                &mut batch,
            );
            if let Err(LedgerError::Storage(_) | LedgerError::Codec(_)) = &result {
                // Fail the whole group: nothing of it is committed.
                for (reply, _) in outcomes.drain(..) {
                    send(reply, Err(LedgerError::Storage("group aborted".into())));
                }
                send(req.reply, result);
                return;
            }
            outcomes.push((req.reply, result));
        }
        if head.seq == self.head.seq {
            for (reply, r) in outcomes {
                send(reply, r);
            }
            return;
        }
        match self.finish_batch(&mut overlay, &mut batch, head) {
            Ok(()) => {
                self.head = head;
                self.last_ms = time;
                self.head_tx.send_replace(head.seq);
                for (reply, r) in outcomes {
                    send(reply, r);
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "ledger commit failed");
                for (reply, r) in outcomes {
                    send(reply, r.and(Err(LedgerError::Storage(e.to_string()))));
                }
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn append_one(
        &self,
        cmd: Command,
        actor: Actor,
        request_id: RequestId,
        time: u64,
        head: &mut Head,
        overlay: &mut Overlay,
        batch: &mut WriteBatch,
    ) -> Result<Committed, LedgerError> {
        let event = self.validate(cmd, time, overlay)?;
        let seq = Seq(head.seq.0 + 1);
        let env = Envelope {
            seq,
            recorded_at_ms: time,
            actor,
            request_id,
            event,
        };
        let (record, chain) = codec::encode_record(&head.chain, &env)?;
        batch.put_cf(cf(&self.db, CF_LOG)?, seq_key(seq), record);
        let mut failed = self.failed.lock();
        for (i, p) in ALL.iter().enumerate() {
            if failed.get(i).is_some_and(|f| f.is_some()) {
                continue;
            }
            let mut tx = overlay.tx(&self.db, i)?;
            if let Err(e) = p.apply(&env, &mut tx) {
                tracing::error!(projection = p.name(), seq = seq.0, error = %e, "projection halted");
                overlay.discard(i);
                if let Some(slot) = failed.get_mut(i) {
                    *slot = Some(format!("at sequence {seq}: {e}"));
                }
            }
        }
        *head = Head { seq, chain };
        Ok(Committed {
            seq,
            event: env.event,
        })
    }

    /// Checks a command against the state (committed plus this group's overlay) and turns it
    /// into the event to record.
    fn validate(&self, cmd: Command, time: u64, overlay: &Overlay) -> Result<Event, LedgerError> {
        let db = &self.db;
        match cmd {
            Command::Upload {
                mut event,
                completes_async,
            } => {
                let index = overlay.read(db, "media_index")?;
                let pending = overlay.read(db, "pending_uploads")?;
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
                // Two concurrent uploads of the same new bytes may have stored two blobs; the
                // first recorded wins and the other becomes an orphan for the start-up sweep.
                let hashes = overlay.read(db, "hash_refs")?;
                if let Some(existing) = hash_refs::get(&hashes, &event.sha256)? {
                    event.datastore = existing.datastore;
                    event.location = existing.location;
                }
                Ok(Event::MediaUploadedV1(event))
            }
            Command::CreateAsync(event) => {
                let index = overlay.read(db, "media_index")?;
                let pending = overlay.read(db, "pending_uploads")?;
                if media_index::get(&index, &event.media)?.is_some()
                    || pending_uploads::get(&pending, &event.media)?.is_some()
                {
                    return Err(LedgerError::Conflict(Conflict::MediaExists));
                }
                Ok(Event::AsyncUploadCreatedV1(event))
            }
            Command::Access(event) => {
                let index = overlay.read(db, "media_index")?;
                match media_index::get(&index, &event.media)? {
                    Some(r) if r.sha256 == event.sha256 => Ok(Event::MediaAccessedV1(event)),
                    _ => Err(LedgerError::Conflict(Conflict::UnknownMedia)),
                }
            }
        }
    }

    fn finish_batch(
        &self,
        overlay: &mut Overlay,
        batch: &mut WriteBatch,
        head: Head,
    ) -> Result<(), LedgerError> {
        let db = &self.db;
        overlay.drain_into(db, batch)?;
        let checkpoints = cf(db, CF_CHECKPOINTS)?;
        let failed = self.failed.lock();
        for (i, p) in ALL.iter().enumerate() {
            if failed.get(i).is_some_and(|f| f.is_some()) {
                continue;
            }
            let cp = Checkpoint {
                version: p.version(),
                seq: head.seq,
            };
            batch.put_cf(checkpoints, p.name().as_bytes(), codec::encode(&cp)?);
        }
        drop(failed);
        let (k, v) = head_entry(&head)?;
        batch.put_cf(cf(db, CF_META)?, k, v);
        let mut opts = WriteOptions::default();
        opts.set_sync(true);
        db.write_opt(std::mem::take(batch), &opts)?;
        Ok(())
    }
}

fn send(reply: Option<Reply>, result: Result<Committed, LedgerError>) {
    if let Some(r) = reply {
        // The requester may have gone away (client disconnected); the outcome stands.
        let _ = r.send(result);
    }
}
