//! Plans: abstract steps ([`Op`]) resolved in order against the [`Model`] into commands the
//! writer accepts ([`Plan::new`]), one method per kind of step. Each [`Step`] also carries the
//! event the writer is expected to record (with the blob location of the first upload of a
//! digest), so a plan can be submitted to a real ledger ([`crate::submit_all`]) or written as
//! raw envelopes ([`Plan::envelopes`]).

mod media;
mod remote;
mod transfer;

use crate::model::Model;
use crate::{BoxError, Op, PLAN_START_MS, PLAN_STEP_MS};
use media_ledger::ledger::Command;
use media_ledger_events::{Actor, Envelope, Event, RequestId, Seq};

/// A command with its author and the event the writer should turn it into.
#[derive(Debug, Clone)]
pub struct Step {
    /// Who submits it.
    pub actor: Actor,
    /// Its request id.
    pub request_id: RequestId,
    /// The command.
    pub command: Command,
    /// The event the writer records for it.
    pub expected: Event,
}

impl Step {
    /// The command's event as the writer should record it at `seq` and `time`.
    pub fn envelope(&self, seq: Seq, recorded_at_ms: u64) -> Envelope {
        Envelope {
            seq,
            recorded_at_ms,
            actor: self.actor.clone(),
            request_id: self.request_id.clone(),
            event: self.expected.clone(),
        }
    }
}

/// A sequence of commands that is valid when submitted in order to an empty ledger.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    /// The commands, in order.
    pub steps: Vec<Step>,
}

/// Where an abstract step stands in the plan.
pub(crate) struct At {
    /// Its index among the abstract steps (names and reasons carry it).
    pub(crate) i: usize,
    /// The sequence its command gets when the plan is submitted to an empty ledger.
    pub(crate) seq: Seq,
    /// Its request id (`req-<i>`; some steps name theirs otherwise).
    pub(crate) request_id: RequestId,
}

impl Plan {
    /// Resolves abstract steps in order, skipping those that have no valid form (an access
    /// or a thumbnail before any upload, a thumbnail already recorded, a completion without
    /// an open reservation, transfer progress without an open transfer, an upload or fetch
    /// of blocked bytes, a moderation act that would change nothing, a deletion with none
    /// pending). A transfer's task id, and the purge a deletion names, are the sequence the
    /// start (the purge) gets when the plan is submitted to an empty ledger.
    pub fn new(ops: &[Op]) -> Result<Self, BoxError> {
        let mut model = Model::default();
        let mut steps = Vec::new();
        for (i, op) in ops.iter().enumerate() {
            let at = At {
                i,
                seq: Seq(u64::try_from(steps.len())? + 1),
                request_id: RequestId(format!("req-{i:03}")),
            };
            if let Some(step) = model.resolve(op, at)? {
                steps.push(step);
            }
        }
        Ok(Self { steps })
    }

    /// The expected events as a log from sequence 1, at [`PLAN_START_MS`] plus
    /// [`PLAN_STEP_MS`] per step.
    pub fn envelopes(&self) -> Vec<Envelope> {
        (1u64..)
            .zip(&self.steps)
            .map(|(seq, s)| s.envelope(Seq(seq), PLAN_START_MS + PLAN_STEP_MS * (seq - 1)))
            .collect()
    }
}

impl Model {
    /// The step `op` becomes at `at`, applied to the model; `None` when it has no valid form
    /// there.
    fn resolve(&mut self, op: &Op, at: At) -> Result<Option<Step>, BoxError> {
        match op {
            Op::Upload {
                origin,
                media_id,
                sha,
                datastore,
                user,
                content_type,
                upload_name,
            } => self.upload_op(
                at,
                *origin,
                media_id,
                *sha,
                *datastore,
                *user,
                *content_type,
                *upload_name,
            ),
            Op::CreateAsync {
                origin,
                media_id,
                owner,
                expired,
            } => self.create_async(at, *origin, media_id, *owner, *expired),
            Op::CompleteAsync {
                pick,
                sha,
                datastore,
            } => self.complete_async(at, *pick, *sha, *datastore),
            Op::Access { pick, actor } => self.access(at, *pick, *actor),
            Op::StartTransfer { source, before_ts } => self.start_transfer(at, *source, *before_ts),
            Op::MoveBlob { task, pick } => self.move_blob(at, *task, *pick),
            Op::SourceDeleted { task, pick } => Ok(self.source_deleted(at, *task, *pick)),
            Op::TransferFailed {
                task,
                sha,
                final_attempt,
            } => Ok(self.transfer_failed(at, *task, *sha, *final_attempt)),
            Op::FinishTransfer { task, error } => Ok(self.finish_transfer(at, *task, *error)),
            Op::Thumbnail {
                pick,
                size,
                sha,
                datastore,
                actor,
            } => self.thumbnail(*pick, *size, *sha, *datastore, *actor),
            Op::CacheRemote {
                origin,
                media_id,
                sha,
                datastore,
                actor,
                content_type,
                upload_name,
            } => self.cache_remote(
                at,
                *origin,
                media_id,
                *sha,
                *datastore,
                *actor,
                *content_type,
                *upload_name,
            ),
            Op::Quarantine { picks, scope } => self.quarantine(at, picks, *scope),
            Op::Unquarantine { pick, scope } => self.unquarantine(at, *pick, *scope),
            Op::SetAttributes {
                pick,
                pinned,
                scope,
            } => self.set_attributes(at, *pick, *pinned, *scope),
            Op::Purge { kind, picks, scope } => self.purge(at, *kind, picks, *scope),
            Op::DeleteBlob { pick } => Ok(self.delete_blob(*pick)),
            Op::Refetch {
                pick,
                datastore,
                actor,
            } => self.refetch(at, *pick, *datastore, *actor),
        }
    }
}
