//! The single writer: assigns sequences, checks commands against current state, folds the
//! group into every projection and commits log, state and checkpoints in one synced batch.
//!
//! Group commit: the writer takes one request, then every request already queued (up to
//! [`MAX_GROUP`]), writes them in one batch, and a syncer thread pays one WAL fsync for every
//! batch written since its last sync. Nobody waits for a sync they do not share, there is no
//! per-request fsync queue, and the CPU work of the next group overlaps the current fsync.

use super::overlay::Overlay;
use super::store::{cf, head_entry, seq_key, Checkpoint, Head, CF_CHECKPOINTS, CF_LOG, CF_META};
use super::LedgerError;
use media_ledger_events::{codec, Actor, Envelope, Event, RequestId, Seq};
use media_ledger_projections::ALL;
use parking_lot::Mutex;
use rocksdb::{WriteBatch, WriteOptions, DB};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot, watch};

/// Most requests folded into one synced batch.
pub const MAX_GROUP: usize = 1024;

/// What a committed command became.
#[derive(Debug, Clone)]
pub struct Committed {
    /// Its sequence.
    pub seq: Seq,
    /// The event as recorded.
    pub event: Event,
}

pub use super::command::{Command, Conflict, PurgeRequest, UploadQuota};

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
    pub(crate) poisoned: Arc<AtomicBool>,
    pub(crate) max_pending_per_user: Arc<AtomicU64>,
    /// The server's registry (WAL sync time, events per sync).
    pub(crate) metrics: Arc<crate::metrics::Metrics>,
    /// In a cluster: the shared log (durability is its commit; the local store is a cache
    /// of it) and how this node follows it (`writer_shared.rs`).
    pub(crate) shared: Option<super::writer_shared::Shared>,
}

use crate::clock::now_ms;

/// A written but not yet synced group, handed to the syncer.
struct Written {
    head: Seq,
    outcomes: Vec<(Option<Reply>, Result<Committed, LedgerError>)>,
}

impl Writer {
    /// The writer loop. Group N+1 is validated, folded and written (unsynced) while the
    /// syncer thread fsyncs the WAL for group N; replies go out only after the sync that
    /// covers them. The WAL is a sequential file, so a sync covers every earlier write, and a
    /// crash loses at most an unacknowledged tail (the head record is in the same batch).
    pub(crate) fn run(mut self, mut rx: mpsc::Receiver<Request>) {
        if self.shared.is_some() {
            self.run_shared(rx);
            return;
        }
        let (sync_tx, sync_rx) = std::sync::mpsc::channel::<Written>();
        let syncer = {
            let db = self.db.clone();
            let head_tx = self.head_tx.clone();
            let poisoned = self.poisoned.clone();
            let metrics = self.metrics.clone();
            std::thread::Builder::new()
                .name("ledger-sync".into())
                .spawn(move || sync_loop(&db, &sync_rx, &head_tx, &poisoned, &metrics))
        };
        let syncer = match syncer {
            Ok(h) => h,
            Err(e) => {
                tracing::error!(error = %e, "cannot start the ledger syncer");
                return;
            }
        };
        let mut group = Vec::with_capacity(MAX_GROUP);
        while let Some(first) = rx.blocking_recv() {
            group.push(first);
            while group.len() < MAX_GROUP {
                match rx.try_recv() {
                    Ok(r) => group.push(r),
                    Err(_) => break,
                }
            }
            if let Some(written) = self.commit_group(&mut group) {
                if let Err(std::sync::mpsc::SendError(w)) = sync_tx.send(written) {
                    fail_all(w.outcomes, "ledger syncer stopped");
                }
            }
        }
        drop(sync_tx);
        if syncer.join().is_err() {
            tracing::error!("ledger syncer panicked");
        }
        tracing::debug!("ledger writer stopped");
    }

    /// Validates, folds and writes one group (unsynced). Returns what the syncer must
    /// acknowledge, or `None` when every reply was already sent.
    fn commit_group(&mut self, group: &mut Vec<Request>) -> Option<Written> {
        if self.poisoned.load(Ordering::SeqCst) {
            for req in group.drain(..) {
                send(req.reply, Err(LedgerError::Storage(POISONED.into())));
            }
            return None;
        }
        let mut overlay = Overlay::new();
        let mut batch = WriteBatch::default();
        let mut head = self.head;
        let mut outcomes: Vec<(Option<Reply>, Result<Committed, LedgerError>)> =
            Vec::with_capacity(group.len());
        let time = now_ms().max(self.last_ms);
        let mut requests = group.drain(..);
        while let Some(req) = requests.next() {
            let result = self.append_one(
                req.cmd,
                req.actor,
                req.request_id,
                time,
                &mut head,
                &mut overlay,
                &mut batch,
                None,
            );
            if let Err(LedgerError::Storage(_) | LedgerError::Codec(_)) = &result {
                // Nothing of this group is written: fail it whole.
                tracing::error!(error = ?result.as_ref().err(), "ledger group aborted");
                send(req.reply, result);
                fail_all(outcomes, "group aborted");
                for rest in requests {
                    send(
                        rest.reply,
                        Err(LedgerError::Storage("group aborted".into())),
                    );
                }
                return None;
            }
            outcomes.push((req.reply, result));
        }
        drop(requests);
        if head.seq == self.head.seq {
            for (reply, r) in outcomes {
                send(reply, r);
            }
            return None;
        }
        match self.finish_batch(&mut overlay, &mut batch, head) {
            Ok(()) => {
                self.head = head;
                self.last_ms = time;
                Some(Written {
                    head: head.seq,
                    outcomes,
                })
            }
            Err(e) => {
                tracing::error!(error = %e, "ledger write failed");
                fail_all(outcomes, &e.to_string());
                None
            }
        }
    }

    /// Validates `cmd`, and when it stands, puts its record in `batch` (and in `records`, for
    /// the shared log) and folds it into `overlay`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn append_one(
        &self,
        cmd: Command,
        actor: Actor,
        request_id: RequestId,
        time: u64,
        head: &mut Head,
        overlay: &mut Overlay,
        batch: &mut WriteBatch,
        records: Option<&mut Vec<(Seq, Vec<u8>)>>,
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
        // A record the decoder would refuse is never written (it would end the readable log);
        // refusing it fails this command alone: nothing of it is in the batch or the overlay.
        let (record, chain) = match codec::encode_record(&head.chain, &env) {
            Ok(r) => r,
            Err(e @ codec::CodecError::TooLarge { .. }) => {
                tracing::error!(seq = seq.0, event = env.event.type_name(), error = %e, "event refused");
                return Err(LedgerError::Conflict(super::Conflict::RecordTooLarge));
            }
            Err(e) => return Err(e.into()),
        };
        if let Some(records) = records {
            records.push((seq, record.clone()));
        }
        batch.put_cf(cf(&self.db, CF_LOG)?, seq_key(seq), record);
        self.fold(&env, overlay)?;
        *head = Head { seq, chain };
        Ok(Committed {
            seq,
            event: env.event,
        })
    }

    /// Folds `env` into every projection that has not halted (a failing one halts here).
    pub(crate) fn fold(&self, env: &Envelope, overlay: &mut Overlay) -> Result<(), LedgerError> {
        let mut failed = self.failed.lock();
        for (i, p) in ALL.iter().enumerate() {
            if failed.get(i).is_some_and(|f| f.is_some()) {
                continue;
            }
            let mut tx = overlay.tx(&self.db, i)?;
            if let Err(e) = p.apply(env, &mut tx) {
                tracing::error!(projection = p.name(), seq = env.seq.0, error = %e, "projection halted");
                overlay.discard(i);
                if let Some(slot) = failed.get_mut(i) {
                    *slot = Some(format!("at sequence {}: {e}", env.seq));
                }
            }
        }
        Ok(())
    }

    /// Puts the overlay, checkpoints and the head into `batch` and writes it, unsynced.
    pub(crate) fn finish_batch(
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
        // Unsynced here; the syncer fsyncs the WAL before anyone is answered.
        let mut opts = WriteOptions::default();
        opts.set_sync(false);
        db.write_opt(std::mem::take(batch), &opts)?;
        Ok(())
    }
}

const POISONED: &str =
    "the ledger stopped accepting writes after a failed WAL sync; restart the server";

/// Fsyncs the WAL for every written group queued, then answers them and publishes the head.
/// A failed sync poisons the ledger: what the kernel did with the unsynced pages is unknown,
/// so no later write is acknowledged until a restart re-reads the log.
fn sync_loop(
    db: &DB,
    rx: &std::sync::mpsc::Receiver<Written>,
    head_tx: &watch::Sender<Seq>,
    poisoned: &AtomicBool,
    metrics: &crate::metrics::Metrics,
) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while let Ok(more) = rx.try_recv() {
            batch.push(more);
        }
        let started = std::time::Instant::now();
        let synced = if poisoned.load(Ordering::SeqCst) {
            Err(POISONED.to_owned())
        } else {
            db.flush_wal(true).map_err(|e| e.into_string())
        };
        metrics
            .ledger_sync_seconds
            .observe(started.elapsed().as_secs_f64());
        let events: usize = batch
            .iter()
            .map(|w| w.outcomes.iter().filter(|(_, r)| r.is_ok()).count())
            .sum();
        metrics.ledger_sync_events.observe(events as f64);
        metrics
            .ledger_events
            .fetch_add(events as u64, Ordering::Relaxed);
        match synced {
            Ok(()) => {
                if let Some(last) = batch.last() {
                    head_tx.send_replace(last.head);
                }
                for w in batch {
                    for (reply, r) in w.outcomes {
                        send(reply, r);
                    }
                }
            }
            Err(e) => {
                if !poisoned.swap(true, Ordering::SeqCst) {
                    tracing::error!(error = %e, "WAL sync failed: the ledger refuses further writes");
                }
                for w in batch {
                    fail_all(w.outcomes, &e);
                }
            }
        }
    }
}

fn fail_all(outcomes: Vec<(Option<Reply>, Result<Committed, LedgerError>)>, why: &str) {
    for (reply, r) in outcomes {
        send(reply, r.and(Err(LedgerError::Storage(why.to_owned()))));
    }
}

pub(crate) fn send(reply: Option<Reply>, result: Result<Committed, LedgerError>) {
    if let Some(r) = reply {
        // The requester may have gone away (client disconnected); the outcome stands.
        let _ = r.send(result);
    }
}
