//! Deleting what a purge freed, after the purge is recorded; resumed at start-up.
//!
//! Step order (each step survives a crash): the purge event (with its freed blobs) is
//! committed; for each freed blob, under the blob's lock, the deleter checks whether a new
//! upload referred to the same blob meanwhile (then it keeps it), deletes it otherwise, and
//! records `BlobDeletedV1`. A blob whose deletion failed stays pending and is retried at the
//! next start.

use crate::datastore::{DatastoreError, Datastores};
use crate::ledger::{Command, Conflict, Ledger, LedgerError};
use media_ledger_events::{Actor, BlobDeleted, FreedBlob, RequestId, Seq};
use media_ledger_projections::names;
use media_ledger_projections::{hash_refs, moderation};
use std::sync::Arc;

/// Test hook of one server (`server::StartOptions::deletion_hook`): when it answers `true`
/// for a purge, that purge's deletions are skipped and stay pending, as if the process had
/// died right after the purge event was committed.
pub type DeletionHook = Arc<dyn Fn(Seq) -> bool + Send + Sync>;

/// Deletes (or keeps) each freed blob of purge `purge` and records it (unless `hook` says to
/// leave them pending).
pub async fn delete_freed(
    ledger: &Ledger,
    datastores: &Datastores,
    hook: Option<&DeletionHook>,
    purge: Seq,
    freed: Vec<FreedBlob>,
) {
    if hook.is_some_and(|skip| skip(purge)) {
        tracing::warn!(
            purge = purge.0,
            blobs = freed.len(),
            "test hook: deletions left pending"
        );
        return;
    }
    for blob in freed {
        if let Err(e) = delete_one(ledger, datastores, purge, &blob).await {
            tracing::warn!(purge = purge.0, sha256 = %blob.sha256, error = %e, "freed blob not deleted; retried at the next start");
        }
    }
}

async fn delete_one(
    ledger: &Ledger,
    datastores: &Datastores,
    purge: Seq,
    blob: &FreedBlob,
) -> Result<(), String> {
    let _lock = crate::blob_lock::lock(&blob.sha256).await;
    let kept = {
        let view = ledger
            .view_current(names::HASH_REFS)
            .map_err(|e| e.to_string())?;
        hash_refs::get(&view, &blob.sha256)
            .map_err(|e| e.to_string())?
            .is_some_and(|h| h.datastore == blob.datastore && h.location == blob.location)
    };
    if !kept {
        let store = datastores
            .get(&blob.datastore)
            .ok_or_else(|| format!("datastore {} is not configured", blob.datastore))?;
        match store.delete(&blob.location).await {
            Ok(()) | Err(DatastoreError::Missing(_)) => {}
            Err(e) => return Err(e.to_string()),
        }
    }
    let event = BlobDeleted {
        purge,
        sha256: blob.sha256,
        datastore: blob.datastore.clone(),
        location: blob.location.clone(),
        kept,
    };
    match ledger
        .submit(
            Actor::System,
            RequestId(format!("purge-{}", purge.0)),
            Command::RecordBlobDeleted(event),
        )
        .await
    {
        Ok(_) | Err(LedgerError::Conflict(Conflict::NoSuchTask)) => {
            tracing::info!(purge = purge.0, sha256 = %blob.sha256, kept, "freed blob dealt with");
            Ok(())
        }
        Err(e) => Err(e.to_string()),
    }
}

/// Finishes every deletion a recorded purge left pending (after a crash).
pub async fn resume(
    ledger: &Ledger,
    datastores: &Datastores,
    hook: Option<&DeletionHook>,
) -> Result<usize, LedgerError> {
    let mut pending: Vec<(Seq, FreedBlob)> = Vec::new();
    ledger.scan(names::MODERATION, moderation::PENDING_PREFIX, |k, v| {
        if let Some(entry) = moderation::decode_pending(k, v) {
            pending.push(entry?);
        }
        Ok(())
    })?;
    let n = pending.len();
    for (purge, blob) in pending {
        delete_freed(ledger, datastores, hook, purge, vec![blob]).await;
    }
    if n > 0 {
        tracing::info!(blobs = n, "resumed pending purge deletions");
    }
    Ok(n)
}
