//! Steps of transfers between the two datastores: an admin starts one (its task id is the
//! sequence the step gets), blobs that sit in its source move to its target (from where the
//! model has them, as the writer demands; the ledger never touches a real datastore, so
//! locations are only names), and the task records source deletions, failed attempts and its
//! end.

use super::{At, Step};
use crate::model::{datastore, size_of_sha, Model, OpenTask};
use crate::{location_of, pool_sha, BoxError, FAR_FUTURE_MS};
use media_ledger::ledger::Command;
use media_ledger_events::{
    Actor, BlobMoved, BlobSourceDeleted, BlobTransferFailed, Event, TransferFinished,
    TransferStarted,
};
use std::collections::BTreeMap;

/// A step of a task's progress, which the server records.
fn progress(at: At, event: Event) -> Step {
    Step {
        actor: Actor::System,
        request_id: at.request_id,
        command: Command::TaskProgress(event.clone()),
        expected: event,
    }
}

impl Model {
    /// The admin starts a transfer from datastore `source` to the other one (skipped while
    /// one is open).
    pub(super) fn start_transfer(
        &mut self,
        at: At,
        source: usize,
        before_ts: bool,
    ) -> Result<Option<Step>, BoxError> {
        // The writer runs one transfer at a time between two datastores (blob locations are
        // content-addressed); with two datastores, any open task overlaps a new one.
        if !self.tasks.is_empty() {
            return Ok(None);
        }
        let source_ds = datastore(source)?;
        let target = datastore(source + 1)?;
        let selected = self.blobs_in(&source_ds);
        let event = TransferStarted {
            source: source_ds.clone(),
            target: target.clone(),
            before_ts_ms: before_ts.then_some(FAR_FUTURE_MS),
            blobs_total: u64::try_from(selected.len())?,
            bytes_total: selected.iter().map(|(sha, _)| size_of_sha(sha)).sum(),
        };
        self.tasks.insert(
            at.seq,
            OpenTask {
                source: source_ds,
                target,
                pending: BTreeMap::new(),
                attempts: BTreeMap::new(),
            },
        );
        Ok(Some(Step {
            actor: Actor::SharedSecretAdmin,
            request_id: at.request_id,
            command: Command::StartTransfer(event.clone()),
            expected: Event::TransferStartedV1(event),
        }))
    }

    /// The `task`-th open transfer moves the `pick`-th blob of its source (skipped when no
    /// transfer is open or its source holds nothing).
    pub(super) fn move_blob(
        &mut self,
        at: At,
        task: usize,
        pick: usize,
    ) -> Result<Option<Step>, BoxError> {
        let Some(task) = self.open_task(task) else {
            return Ok(None);
        };
        let Some(t) = self.tasks.get(&task) else {
            return Ok(None);
        };
        let in_source = self.blobs_in(&t.source);
        let Some((sha, from_location)) = in_source.get(pick % in_source.len().max(1)).cloned()
        else {
            return Ok(None);
        };
        let event = BlobMoved {
            task,
            sha256: sha,
            size_bytes: size_of_sha(&sha),
            from_datastore: t.source.clone(),
            from_location: from_location.clone(),
            to_datastore: t.target.clone(),
            to_location: location_of(&sha)?,
        };
        self.blobs
            .insert(sha, (event.to_datastore.clone(), event.to_location.clone()));
        if let Some(t) = self.tasks.get_mut(&task) {
            t.pending
                .insert(sha, (event.from_datastore.clone(), from_location));
        }
        Ok(Some(Step {
            actor: Actor::System,
            request_id: at.request_id,
            command: Command::MoveBlob(event.clone()),
            expected: Event::BlobMovedV1(event),
        }))
    }

    /// The `task`-th open transfer deletes the old copy of the `pick`-th blob it moved
    /// (skipped when none is pending).
    pub(super) fn source_deleted(&mut self, at: At, task: usize, pick: usize) -> Option<Step> {
        let task = self.open_task(task)?;
        let t = self.tasks.get_mut(&task)?;
        let sha = t
            .pending
            .keys()
            .nth(pick % t.pending.len().max(1))
            .copied()?;
        let (datastore, location) = t.pending.remove(&sha)?;
        let event = Event::BlobSourceDeletedV1(BlobSourceDeleted {
            task,
            sha256: sha,
            datastore,
            location,
        });
        Some(progress(at, event))
    }

    /// An attempt of the `task`-th open transfer to move content `sha` fails.
    pub(super) fn transfer_failed(
        &mut self,
        at: At,
        task: usize,
        sha: usize,
        final_attempt: bool,
    ) -> Option<Step> {
        let task = self.open_task(task)?;
        let t = self.tasks.get_mut(&task)?;
        let sha = pool_sha(sha);
        let attempt = t.attempts.entry(sha).or_insert(0);
        *attempt += 1;
        let event = Event::BlobTransferFailedV1(BlobTransferFailed {
            task,
            sha256: sha,
            attempt: *attempt,
            final_attempt,
            error: format!("attempt {attempt} at step {} failed", at.i),
        });
        Some(progress(at, event))
    }

    /// The `task`-th open transfer ends, with an error message or not.
    pub(super) fn finish_transfer(&mut self, at: At, task: usize, error: bool) -> Option<Step> {
        let task = self.open_task(task)?;
        self.tasks.remove(&task);
        let event = Event::TransferFinishedV1(TransferFinished {
            task,
            error_message: error.then(|| format!("gave up at step {}", at.i)),
        });
        Some(progress(at, event))
    }
}
