//! Where a writer's new bytes go, decided under the blob's lock (`blob_lock`, ARCHITECTURE
//! invariant 17): uploads and remote fetches that have spooled and hashed their bytes reuse
//! the blob already recorded for that hash (checked present, and recorded with *its*
//! datastore, never the writer's own pick), put the bytes back where the record says when that
//! blob is missing, or commit their own copy. After a refused event, a copy the writer
//! committed is removed at once unless a record claims it. [`place_and_record`] is the one
//! sequence uploads, remote fetches and read-throughs go through.

use crate::blob_lock::BlobGuard;
use crate::datastore::{Datastore, Datastores};
use crate::error::ApiError;
use crate::ledger::{Ledger, LedgerError};
use media_ledger_events::{BlobLocation, DatastoreId, Sha256};
use media_ledger_projections::hash_refs;
use media_ledger_projections::names;
use std::path::Path;
use std::sync::Arc;

/// Where the bytes are, for the event to record.
pub struct Placed {
    /// The datastore holding them.
    pub datastore: DatastoreId,
    /// Where in it.
    pub location: BlobLocation,
    /// The datastore this writer committed the spool file into; `None` when it reuses a
    /// recorded blob (the spool file is then still there, for the caller to remove).
    pub committed: Option<Arc<dyn Datastore>>,
}

/// Places the spooled bytes `spool` of `sha`: reuses the recorded blob if it is present,
/// restores it into its recorded datastore if it is missing, else commits into `ds`. The
/// caller holds the blob's lock (`_held`) until its event is committed.
pub async fn place(
    ledger: &Ledger,
    datastores: &Datastores,
    ds: &Arc<dyn Datastore>,
    spool: &Path,
    sha: &Sha256,
    _held: &BlobGuard,
) -> Result<Placed, ApiError> {
    let existing = hash_refs::get(&ledger.view(names::HASH_REFS)?, sha)?;
    match existing {
        Some(h) if blob_present(datastores, &h.datastore, &h.location, h.size_bytes).await => {
            Ok(Placed {
                datastore: h.datastore,
                location: h.location,
                committed: None,
            })
        }
        Some(h) => {
            // The recorded blob is gone: put the bytes back where the record says they are
            // (the record, and every media sharing it, keep pointing there).
            let target = datastores.get(&h.datastore).cloned().ok_or_else(|| {
                ApiError::Internal(format!(
                    "datastore {} of hash {sha} is not configured",
                    h.datastore
                ))
            })?;
            let location = target.commit(spool, sha).await?;
            tracing::warn!(datastore = %h.datastore, %location, "restored a missing blob from new bytes");
            Ok(Placed {
                datastore: h.datastore,
                location,
                committed: Some(target),
            })
        }
        None => {
            let location = ds.commit(spool, sha).await?;
            Ok(Placed {
                datastore: ds.id().clone(),
                location,
                committed: Some(ds.clone()),
            })
        }
    }
}

/// The one way a writer records spooled bytes of `sha`: under the blob's lock (held until
/// the event is committed, invariant 17), places them ([`place`]), removes the spool file
/// unless it was committed, and submits the event `cmd(&placed)`. A refused event removes this
/// writer's copy ([`discard_unrecorded`]). The outer error is a placement failure (the spool
/// file is then the caller's to remove); the inner result is the writer's answer.
#[allow(clippy::too_many_arguments)]
pub async fn place_and_record(
    ledger: &Ledger,
    datastores: &Datastores,
    ds: &Arc<dyn Datastore>,
    spool: &Path,
    sha: &Sha256,
    actor: media_ledger_events::Actor,
    request_id: media_ledger_events::RequestId,
    cmd: impl FnOnce(&Placed) -> crate::ledger::Command,
) -> Result<Result<crate::ledger::Committed, LedgerError>, ApiError> {
    let held = crate::blob_lock::lock(sha).await;
    let placed = place(ledger, datastores, ds, spool, sha, &held).await?;
    if placed.committed.is_none() {
        let _ = tokio::fs::remove_file(spool).await;
    }
    let submitted = ledger.submit(actor, request_id, cmd(&placed)).await;
    if let Err(e) = &submitted {
        discard_unrecorded(ledger, &placed, sha, &held, e).await;
    }
    Ok(submitted)
}

/// After the event recording `placed` was refused: removes the copy this writer committed,
/// unless a record claims it (a record of another writer at the same content-addressed place).
/// Still under the blob's lock (`_held`), so no other writer of these bytes is between its
/// look-up and its commit. A copy that cannot be checked is left for the start-up sweep.
///
/// Only a definite refusal (`why` is a [`LedgerError::Conflict`]: the writer decided against
/// the event) discards: after a halted projection, a storage failure or a stop, what the
/// ledger holds is not certain, and the start-up sweep (after a clean catch-up) decides.
async fn discard_unrecorded(
    ledger: &Ledger,
    placed: &Placed,
    sha: &Sha256,
    _held: &BlobGuard,
    why: &LedgerError,
) {
    let Some(store) = &placed.committed else {
        return;
    };
    if !matches!(why, LedgerError::Conflict(_)) {
        tracing::warn!(%sha, error = %why, "event not recorded; its blob is left for the start-up sweep");
        return;
    }
    let claimed = match ledger
        .view_current(names::HASH_REFS)
        .and_then(|v| Ok(hash_refs::get(&v, sha)?))
    {
        Ok(record) => {
            record.is_some_and(|h| &h.datastore == store.id() && h.location == placed.location)
        }
        Err(e) => {
            tracing::warn!(%sha, error = %e, "cannot check a refused writer's blob; left for the start-up sweep");
            return;
        }
    };
    if claimed {
        return;
    }
    match store.delete(&placed.location).await {
        Ok(()) => {
            tracing::info!(datastore = %store.id(), location = %placed.location, "removed the blob of a refused event")
        }
        Err(e) => {
            tracing::warn!(datastore = %store.id(), error = %e, "cannot remove the blob of a refused event; left for the start-up sweep")
        }
    }
}

/// Whether the recorded blob exists with its recorded length.
async fn blob_present(
    datastores: &Datastores,
    ds: &DatastoreId,
    loc: &BlobLocation,
    size_bytes: u64,
) -> bool {
    match datastores.get(ds) {
        // A blob of the wrong length (damaged outside the server) counts as missing: the
        // new copy repairs it.
        Some(store) => match store.size_of(loc).await {
            Ok(Some(n)) if n == size_bytes => true,
            Ok(Some(n)) => {
                tracing::error!(datastore = %ds, location = %loc, found = n, expected = size_bytes, "deduplicated blob has the wrong length; storing the new copy");
                false
            }
            Ok(None) => {
                tracing::error!(datastore = %ds, location = %loc, "deduplicated blob is missing; storing the new copy");
                false
            }
            Err(e) => {
                tracing::error!(datastore = %ds, error = %e, "cannot check a deduplicated blob; storing the new copy");
                false
            }
        },
        None => false,
    }
}
