//! Online, resumable transfers of blobs between datastores (`POST …/transfer_to/…`).
//!
//! A transfer is a task made of events. Per blob: copy it to the target (streamed through the
//! target's spool while hashing), read the copy back and check SHA-256 and size, then record
//! `BlobMovedV1` (every media sharing the blob now points at the copy), then delete the source
//! copy and record `BlobSourceDeletedV1`. The source is never deleted before the copy is
//! verified and the switch is durable, so at every moment at least one recorded copy exists.
//!
//! Resuming needs no saved cursor: the blobs still to move are the hash records that still
//! sit in the source and existed when the task started; the moved-but-not-deleted ones are in
//! the tasks projection. A restart resumes every unfinished task, whatever its age. Failed
//! attempts are recorded and retried with back-off a bounded number of times; a task with
//! blobs it gave up on ends with an `error_message`, those blobs intact in the source.

use crate::config::Config;
use crate::datastore::{content_location, Datastore, Datastores};
use crate::error::ApiError;
use crate::ledger::{Command, Conflict, Ledger, LedgerError};
use futures_util::StreamExt;
use media_ledger_events::{
    Actor, BlobMoved, BlobSourceDeleted, BlobTransferFailed, DatastoreId, Event, RequestId, Seq,
    Sha256, TransferFinished, TransferStarted,
};
use media_ledger_projections::hash_refs::{self, HashRecord};
use media_ledger_projections::names;
use media_ledger_projections::size_estimate::SizeEstimate;
use media_ledger_projections::tasks::{self, TaskRecord};
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

mod blob;

use blob::{copy, select, verify};

/// Runs transfer tasks.
pub struct Transfers {
    ledger: Arc<Ledger>,
    datastores: Arc<Datastores>,
    config: Arc<Config>,
    running: parking_lot::Mutex<HashSet<Seq>>,
    /// Whether tasks run in this process: always on a single node; in a cluster only on the
    /// leader (a task another node records is picked up by the leader's next
    /// [`Transfers::resume_all`]).
    runs_here: std::sync::atomic::AtomicBool,
}

fn request_id(task: Seq) -> RequestId {
    RequestId(format!("task-{task}"))
}

impl Transfers {
    /// Builds the runner.
    pub fn new(ledger: Arc<Ledger>, datastores: Arc<Datastores>, config: Arc<Config>) -> Arc<Self> {
        Arc::new(Self {
            ledger,
            datastores,
            config,
            running: parking_lot::Mutex::new(HashSet::new()),
            runs_here: std::sync::atomic::AtomicBool::new(true),
        })
    }

    /// Says whether tasks run in this process (see `runs_here`).
    pub fn set_runs_here(&self, yes: bool) {
        self.runs_here
            .store(yes, std::sync::atomic::Ordering::SeqCst);
    }

    /// Validates and records a new transfer, then starts it in the background. Returns the
    /// task id and the source's size estimate with the same `before_ts`.
    pub async fn start(
        self: &Arc<Self>,
        actor: Actor,
        request_id: RequestId,
        source: DatastoreId,
        target: DatastoreId,
        before_ts_ms: Option<u64>,
        estimate: SizeEstimate,
    ) -> Result<Seq, ApiError> {
        if source == target {
            return Err(ApiError::InvalidParam(
                "source and target are the same datastore".into(),
            ));
        }
        let writable = self
            .config
            .datastores
            .iter()
            .find(|d| d.id == target)
            .ok_or_else(|| ApiError::NotFound(format!("unknown datastore {target}")))?;
        if writable.kinds.is_empty() {
            return Err(ApiError::InvalidParam(format!(
                "datastore {target} is read-only"
            )));
        }
        if self.datastores.get(&source).is_none() {
            return Err(ApiError::NotFound(format!("unknown datastore {source}")));
        }
        // Blob locations are content-addressed, so a transfer into a datastore that another
        // unfinished transfer is draining could land a live copy where that one is about to
        // delete an old copy. One direction at a time: refuse overlapping transfers.
        let mut clash = None;
        self.ledger.scan(names::TASKS, b"t", |k, v| {
            if let Some(entry) = tasks::decode_task_entry(k, v) {
                let (seq, t) = entry?;
                if !t.is_finished()
                    && (t.source == target || t.target == source || t.source == source)
                {
                    clash = Some(seq);
                }
            }
            Ok(())
        })?;
        if let Some(seq) = clash {
            return Err(ApiError::InvalidParam(format!(
                "transfer {seq} between these datastores is still running; wait for it to finish"
            )));
        }
        // Selection counts as of now (the task itself re-selects by `created_seq`).
        let head = Seq(self.ledger.head().0 + 1);
        let ledger = self.ledger.clone();
        let src = source.clone();
        let selected =
            tokio::task::spawn_blocking(move || select(&ledger, &src, head, before_ts_ms))
                .await
                .map_err(ApiError::internal)??;
        let event = TransferStarted {
            source,
            target,
            before_ts_ms,
            blobs_total: selected.len() as u64,
            bytes_total: selected.iter().map(|(_, h)| h.size_bytes).sum(),
        };
        let committed = self
            .ledger
            .submit(actor, request_id, Command::StartTransfer(event))
            .await?;
        tracing::info!(
            task = committed.seq.0,
            blobs = selected.len(),
            ?estimate,
            "transfer started"
        );
        if self.runs_here.load(std::sync::atomic::Ordering::SeqCst) {
            self.spawn(committed.seq);
        }
        Ok(committed.seq)
    }

    /// Resumes every unfinished task not running here yet (at start-up; on a cluster's
    /// leader, also periodically).
    pub fn resume_all(self: &Arc<Self>) -> Result<(), LedgerError> {
        let mut unfinished = Vec::new();
        self.ledger.scan(names::TASKS, b"t", |k, v| {
            if let Some(entry) = tasks::decode_task_entry(k, v) {
                let (seq, t) = entry?;
                if !t.is_finished() && !self.running.lock().contains(&seq) {
                    unfinished.push(seq);
                }
            }
            Ok(())
        })?;
        for task in unfinished {
            tracing::info!(task = task.0, "resuming transfer");
            self.spawn(task);
        }
        Ok(())
    }

    fn spawn(self: &Arc<Self>, task: Seq) {
        if !self.running.lock().insert(task) {
            return;
        }
        let me = self.clone();
        tokio::spawn(async move {
            if let Err(e) = me.clone().run(task).await {
                tracing::error!(task = task.0, error = %e, "transfer stopped; it resumes at the next start");
            }
            me.running.lock().remove(&task);
        });
    }

    fn record(&self) -> Actor {
        Actor::System
    }

    async fn progress(&self, task: Seq, event: Event) -> Result<(), LedgerError> {
        self.ledger
            .submit(
                self.record(),
                request_id(task),
                Command::TaskProgress(event),
            )
            .await
            .map(|_| ())
    }

    async fn run(self: Arc<Self>, task: Seq) -> Result<(), LedgerError> {
        let Some(t) = tasks::get(&self.ledger.view(names::TASKS)?, task)? else {
            return Ok(());
        };
        if t.is_finished() {
            return Ok(());
        }
        let (Some(source), Some(target)) = (
            self.datastores.get(&t.source).cloned(),
            self.datastores.get(&t.target).cloned(),
        ) else {
            let why = format!(
                "datastore {} or {} is no longer configured",
                t.source, t.target
            );
            return self
                .progress(
                    task,
                    Event::TransferFinishedV1(TransferFinished {
                        task,
                        error_message: Some(why),
                    }),
                )
                .await;
        };

        // 1. Source copies of blobs already moved (a crash came between switch and delete).
        let mut pending = Vec::new();
        self.ledger
            .scan(names::TASKS, &tasks::deletion_prefix(task), |k, v| {
                if let Some(entry) = tasks::decode_deletion_entry(k, v) {
                    pending.push(entry?);
                }
                Ok(())
            })?;
        for (sha, d) in pending {
            self.delete_source(task, &source, sha, &d.datastore, &d.location)
                .await?;
        }

        // 2. Every blob still in the source that existed when the task started.
        let ledger = self.ledger.clone();
        let src_id = t.source.clone();
        let before = t.before_ts_ms;
        let todo = tokio::task::spawn_blocking(move || select(&ledger, &src_id, task, before))
            .await
            .map_err(|e| LedgerError::Storage(e.to_string()))?
            .map_err(|e| LedgerError::Storage(e.to_string()))?;
        let parallel = self.config.transfers.parallel.max(1);
        let failures: Vec<String> = futures_util::stream::iter(todo)
            .map(|(sha, rec)| {
                let me = self.clone();
                let (source, target, t) = (source.clone(), target.clone(), t.clone());
                async move {
                    me.move_with_retries(task, &t, &source, &target, sha, rec)
                        .await
                }
            })
            .buffer_unordered(parallel)
            .filter_map(|r| async move { r.err() })
            .collect()
            .await;

        let error_message = match failures.as_slice() {
            [] => None,
            [first, ..] => Some(format!(
                "{} blob(s) could not be moved; first error: {first}",
                failures.len()
            )),
        };
        tracing::info!(task = task.0, failed = failures.len(), "transfer finished");
        self.progress(
            task,
            Event::TransferFinishedV1(TransferFinished {
                task,
                error_message,
            }),
        )
        .await
    }

    /// Moves one blob, retrying with back-off; `Err` = gave up (already recorded).
    async fn move_with_retries(
        &self,
        task: Seq,
        t: &TaskRecord,
        source: &Arc<dyn Datastore>,
        target: &Arc<dyn Datastore>,
        sha: Sha256,
        rec: HashRecord,
    ) -> Result<(), String> {
        let max = self.config.transfers.max_attempts.max(1);
        let mut delay = Duration::from_millis(self.config.transfers.retry_base_ms);
        for attempt in 1..=max {
            match self.move_blob(task, t, source, target, sha, &rec).await {
                Ok(()) => return Ok(()),
                // Someone else moved it, or it is gone from the source: nothing to do.
                Err(MoveError::Ledger(LedgerError::Conflict(Conflict::BlobElsewhere))) => {
                    return Ok(())
                }
                Err(MoveError::Ledger(e)) => return Err(e.to_string()),
                Err(MoveError::Blob(e)) => {
                    // Purged (or moved by someone else) meanwhile: nothing left to move.
                    let gone = {
                        let view = self
                            .ledger
                            .view(names::HASH_REFS)
                            .map_err(|e| e.to_string())?;
                        hash_refs::get(&view, &sha)
                            .map_err(|e| e.to_string())?
                            .is_none_or(|h| h.datastore != t.source || h.location != rec.location)
                    };
                    if gone {
                        return Ok(());
                    }
                    let final_attempt = attempt == max;
                    tracing::warn!(task = task.0, %sha, attempt, error = %e, "blob transfer attempt failed");
                    let ev = BlobTransferFailed {
                        task,
                        sha256: sha,
                        attempt,
                        final_attempt,
                        error: e.clone(),
                    };
                    if let Err(le) = self.progress(task, Event::BlobTransferFailedV1(ev)).await {
                        return Err(le.to_string());
                    }
                    if final_attempt {
                        return Err(e);
                    }
                    tokio::time::sleep(delay).await;
                    delay = delay.saturating_mul(2);
                }
            }
        }
        Err("no attempt made".into())
    }

    async fn move_blob(
        &self,
        task: Seq,
        t: &TaskRecord,
        source: &Arc<dyn Datastore>,
        target: &Arc<dyn Datastore>,
        sha: Sha256,
        rec: &HashRecord,
    ) -> Result<(), MoveError> {
        let location = content_location(&sha).map_err(|e| MoveError::Blob(e.to_string()))?;
        // Idempotent: a verified copy already at the target is not copied again.
        if !verify(target, &location, &sha, rec.size_bytes)
            .await
            .unwrap_or(false)
        {
            copy(source, target, &rec.location, &sha, rec.size_bytes)
                .await
                .map_err(MoveError::Blob)?;
            match verify(target, &location, &sha, rec.size_bytes).await {
                Ok(true) => {}
                Ok(false) => {
                    return Err(MoveError::Blob("the copy read back does not match".into()))
                }
                Err(e) => return Err(MoveError::Blob(format!("reading the copy back: {e}"))),
            }
        }
        let moved = BlobMoved {
            task,
            sha256: sha,
            size_bytes: rec.size_bytes,
            from_datastore: t.source.clone(),
            from_location: rec.location.clone(),
            to_datastore: t.target.clone(),
            to_location: location,
        };
        self.ledger
            .submit(self.record(), request_id(task), Command::MoveBlob(moved))
            .await
            .map_err(MoveError::Ledger)?;
        self.delete_source(task, source, sha, &t.source, &rec.location)
            .await
            .map_err(MoveError::Ledger)
    }

    async fn delete_source(
        &self,
        task: Seq,
        source: &Arc<dyn Datastore>,
        sha: Sha256,
        ds: &DatastoreId,
        location: &media_ledger_events::BlobLocation,
    ) -> Result<(), LedgerError> {
        // Locations are content-addressed: after A → B → A the "old copy" of one task can be
        // the live copy of another. Never delete where the blob lives now. Under the blob's
        // lock, as the purge deleter: a writer of these bytes that found no record stores its
        // own copy here, and must not lose it between this look-up and the delete.
        let _blob = crate::blob_lock::lock(&sha).await;
        let live = hash_refs::get(&self.ledger.view_current(names::HASH_REFS)?, &sha)?;
        if live.is_some_and(|h| &h.datastore == ds && &h.location == location) {
            tracing::info!(task = task.0, %sha, "source copy is the live copy again; kept");
            return Ok(());
        }
        if let Err(e) = source.delete(location).await {
            // The copy is switched in; the old one is a stray copy for the start-up sweep
            // (removed when provably another file than the live one, else kept and logged).
            tracing::warn!(task = task.0, %sha, error = %e, "cannot delete the source copy; left for the sweep");
            return Ok(());
        }
        let ev = BlobSourceDeleted {
            task,
            sha256: sha,
            datastore: ds.clone(),
            location: location.clone(),
        };
        self.progress(task, Event::BlobSourceDeletedV1(ev)).await
    }
}

enum MoveError {
    Blob(String),
    Ledger(LedgerError),
}
