//! Background tasks (datastore transfers; imports in [`crate::import_tasks`]) and their
//! progress.
//!
//! Keys: `b't' ‖ task seq (8 bytes BE)` → [`TaskRecord`]; `b'd' ‖ task seq ‖ sha256` →
//! [`PendingDeletion`], blobs moved by the task whose source copy is not yet deleted (a restart
//! deletes them before moving anything else).

use crate::{get_value, invariant, put_value, KvRead, KvTx, Projection, ProjectionError};
use media_ledger_events::{BlobLocation, DatastoreId, Envelope, Event, Seq, Sha256};
use serde::{Deserialize, Serialize};

const NAME: &str = crate::names::TASKS.as_str();

/// One task as the admin API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskRecord {
    /// Source datastore.
    pub source: DatastoreId,
    /// Target datastore.
    pub target: DatastoreId,
    /// The `before_ts` parameter.
    pub before_ts_ms: Option<u64>,
    /// When it started (envelope time).
    pub started_at_ms: u64,
    /// When it ended, if it did.
    pub ended_at_ms: Option<u64>,
    /// Blobs selected at start.
    pub blobs_total: u64,
    /// Their bytes.
    pub bytes_total: u64,
    /// Blobs moved (copied, verified, switched).
    pub blobs_done: u64,
    /// Their bytes.
    pub bytes_done: u64,
    /// Failed attempts so far.
    pub attempts_failed: u64,
    /// Blobs the task gave up on.
    pub blobs_failed: u64,
    /// The latest failure.
    pub last_error: Option<String>,
    /// Set when the task ended with failures.
    pub error_message: Option<String>,
}

impl TaskRecord {
    /// Whether the task ended.
    pub fn is_finished(&self) -> bool {
        self.ended_at_ms.is_some()
    }
}

/// A moved blob whose old copy still exists.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingDeletion {
    /// Where the old copy is.
    pub datastore: DatastoreId,
    /// Where in it.
    pub location: BlobLocation,
}

/// The tasks projection.
pub struct Tasks;

/// The key of a task record.
pub fn task_key(task: Seq) -> Vec<u8> {
    let mut k = vec![b't'];
    k.extend_from_slice(&task.0.to_be_bytes());
    k
}

/// The key prefix of every task's pending deletions, for scans.
pub const DELETION_PREFIX: &[u8] = b"d";

/// The key prefix of a task's pending deletions.
pub fn deletion_prefix(task: Seq) -> Vec<u8> {
    let mut k = DELETION_PREFIX.to_vec();
    k.extend_from_slice(&task.0.to_be_bytes());
    k
}

fn deletion_key(task: Seq, sha: &Sha256) -> Vec<u8> {
    let mut k = deletion_prefix(task);
    k.extend_from_slice(&sha.0);
    k
}

fn update(
    tx: &mut dyn KvTx,
    task: Seq,
    f: impl FnOnce(&mut TaskRecord),
) -> Result<(), ProjectionError> {
    let key = task_key(task);
    let mut t: TaskRecord = get_value(NAME, tx, &key)?
        .ok_or_else(|| invariant(NAME, format!("unknown task {task}")))?;
    f(&mut t);
    put_value(NAME, tx, &key, &t)
}

impl Projection for Tasks {
    fn name(&self) -> &'static str {
        NAME
    }
    fn version(&self) -> u32 {
        1
    }
    fn apply(&self, env: &Envelope, tx: &mut dyn KvTx) -> Result<(), ProjectionError> {
        match &env.event {
            Event::TransferStartedV1(e) => {
                let t = TaskRecord {
                    source: e.source.clone(),
                    target: e.target.clone(),
                    before_ts_ms: e.before_ts_ms,
                    started_at_ms: env.recorded_at_ms,
                    ended_at_ms: None,
                    blobs_total: e.blobs_total,
                    bytes_total: e.bytes_total,
                    blobs_done: 0,
                    bytes_done: 0,
                    attempts_failed: 0,
                    blobs_failed: 0,
                    last_error: None,
                    error_message: None,
                };
                put_value(NAME, tx, &task_key(env.seq), &t)
            }
            Event::BlobMovedV1(e) => {
                update(tx, e.task, |t| {
                    t.blobs_done += 1;
                    t.bytes_done += e.size_bytes;
                })?;
                let d = PendingDeletion {
                    datastore: e.from_datastore.clone(),
                    location: e.from_location.clone(),
                };
                put_value(NAME, tx, &deletion_key(e.task, &e.sha256), &d)
            }
            Event::BlobSourceDeletedV1(e) => {
                if get_value::<TaskRecord>(NAME, tx, &task_key(e.task))?.is_none() {
                    return Err(invariant(NAME, format!("unknown task {}", e.task)));
                }
                tx.delete(&deletion_key(e.task, &e.sha256));
                Ok(())
            }
            Event::BlobTransferFailedV1(e) => update(tx, e.task, |t| {
                t.attempts_failed += 1;
                if e.final_attempt {
                    t.blobs_failed += 1;
                }
                t.last_error = Some(e.error.clone());
            }),
            Event::TransferFinishedV1(e) => update(tx, e.task, |t| {
                t.ended_at_ms = Some(env.recorded_at_ms);
                t.error_message = e.error_message.clone();
            }),
            Event::ImportStartedV1(e) => crate::import_tasks::started(tx, env, e),
            Event::ImportProgressV1(e) => crate::import_tasks::progressed(tx, env, e),
            Event::MediaUploadedV1(_)
            | Event::AsyncUploadCreatedV1(_)
            | Event::MediaAccessedV1(_)
            | Event::ThumbnailGeneratedV1(_)
            | Event::RemoteMediaCachedV1(_)
            | Event::MediaImportedV1(_)
            | Event::UrlPreviewedV1(_)
            | Event::UrlPreviewsExpiredV1(_)
            | Event::MediaExportedV1(_)
            | Event::MediaMigratedV1(_)
            | Event::MediaQuarantinedV1(_)
            | Event::MediaUnquarantinedV1(_)
            | Event::MediaAttributesSetV1(_)
            | Event::MediaPurgedV1(_)
            | Event::BlobDeletedV1(_) => Ok(()),
        }
    }
}

/// The record of `task`.
pub fn get(kv: &(impl KvRead + ?Sized), task: Seq) -> Result<Option<TaskRecord>, ProjectionError> {
    get_value(NAME, kv, &task_key(task))
}

/// Decodes a `(key, value)` of a scan over task records (`t` prefix).
pub fn decode_task_entry(
    key: &[u8],
    value: &[u8],
) -> Option<Result<(Seq, TaskRecord), ProjectionError>> {
    let rest = key.strip_prefix(b"t")?;
    let seq: [u8; 8] = rest.try_into().ok()?;
    Some(
        media_ledger_events::codec::decode(value)
            .map(|t| (Seq(u64::from_be_bytes(seq)), t))
            .map_err(|source| ProjectionError::Corrupt { name: NAME, source }),
    )
}

/// Decodes a `(key, value)` of a scan over a task's pending deletions.
pub fn decode_deletion_entry(
    key: &[u8],
    value: &[u8],
) -> Option<Result<(Sha256, PendingDeletion), ProjectionError>> {
    let sha: [u8; 32] = key.get(9..)?.try_into().ok()?;
    Some(
        media_ledger_events::codec::decode(value)
            .map(|d| (Sha256(sha), d))
            .map_err(|source| ProjectionError::Corrupt { name: NAME, source }),
    )
}
