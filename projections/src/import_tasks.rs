//! Import tasks, kept by the `tasks` projection beside the transfers: `b'i' ‖ task seq (8
//! bytes BE)` → [`ImportTask`], folded from `import.started.v1` and `import.progress.v1`.

use crate::{get_value, invariant, put_value, KvRead, KvTx, ProjectionError};
use media_ledger_events::{Envelope, ImportProgress, ImportStarted, Seq};
use serde::{Deserialize, Serialize};

const NAME: &str = crate::names::TASKS.as_str();

/// The key prefix of import tasks, for scans.
pub const IMPORT_PREFIX: &[u8] = b"i";

/// One import task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImportTask {
    /// `synapse`, `mmr` or `archive`.
    pub kind: String,
    /// What is imported.
    pub source: String,
    /// When it started (envelope time).
    pub started_at_ms: u64,
    /// When it ended, if it did.
    pub ended_at_ms: Option<u64>,
    /// Rows of the source.
    pub rows_total: u64,
    /// The latest progress.
    pub progress: Option<ImportProgress>,
}

impl ImportTask {
    /// Whether the task ended.
    pub fn is_finished(&self) -> bool {
        self.ended_at_ms.is_some()
    }
}

/// The key of import task `task`.
pub fn key(task: Seq) -> Vec<u8> {
    let mut k = IMPORT_PREFIX.to_vec();
    k.extend_from_slice(&task.0.to_be_bytes());
    k
}

pub(crate) fn started(
    tx: &mut dyn KvTx,
    env: &Envelope,
    e: &ImportStarted,
) -> Result<(), ProjectionError> {
    let t = ImportTask {
        kind: e.kind.clone(),
        source: e.source.clone(),
        started_at_ms: env.recorded_at_ms,
        ended_at_ms: None,
        rows_total: e.rows_total,
        progress: None,
    };
    put_value(NAME, tx, &key(env.seq), &t)
}

pub(crate) fn progressed(
    tx: &mut dyn KvTx,
    env: &Envelope,
    e: &ImportProgress,
) -> Result<(), ProjectionError> {
    let k = key(e.task);
    let mut t: ImportTask = get_value(NAME, tx, &k)?
        .ok_or_else(|| invariant(NAME, format!("unknown import task {}", e.task)))?;
    if e.finished {
        t.ended_at_ms = Some(env.recorded_at_ms);
    }
    t.progress = Some(e.clone());
    put_value(NAME, tx, &k, &t)
}

/// Import task `task`.
pub fn get(kv: &(impl KvRead + ?Sized), task: Seq) -> Result<Option<ImportTask>, ProjectionError> {
    get_value(NAME, kv, &key(task))
}

/// Decodes a `(key, value)` of a scan over import tasks (`i` prefix).
pub fn decode_entry(
    key: &[u8],
    value: &[u8],
) -> Option<Result<(Seq, ImportTask), ProjectionError>> {
    let seq: [u8; 8] = key.strip_prefix(IMPORT_PREFIX)?.try_into().ok()?;
    Some(
        media_ledger_events::codec::decode(value)
            .map(|t| (Seq(u64::from_be_bytes(seq)), t))
            .map_err(|source| ProjectionError::Corrupt { name: NAME, source }),
    )
}
