//! The start-up orphan sweep: removes leftover spool files and blobs that nothing claims (a
//! crash between committing a blob and appending its event, a failed transfer's copy).
//!
//! Runs before the server accepts requests, so no upload is in flight; read-only datastores
//! and those whose identity marker could not be read are left alone. A blob is removed only
//! when no record claims it in any datastore: a blob whose hash is recorded in *another*
//! datastore is the live copy itself if the two datastores are the same storage under two
//! names, so it is removed only when both are local files and provably different files
//! (device and inode), and kept and logged otherwise; a blob with a pending purge or transfer
//! deletion is left to the task that owns that deletion.

use crate::datastore::{Configured, Datastores};
use crate::ledger::{Ledger, LedgerError};
use media_ledger_events::{BlobLocation, DatastoreId, Sha256};
use media_ledger_projections::hash_refs::{self, HashRecord};
use media_ledger_projections::names;
use media_ledger_projections::{moderation, tasks};
use std::collections::HashSet;

/// What the sweep decided for one blob file.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    /// The hash record names this very blob.
    Live,
    /// Nothing claims it: removed.
    Orphan,
    /// A distinct copy of a blob recorded elsewhere: removed.
    StrayCopy,
    /// Kept, with the reason logged.
    Kept(String),
}

/// Hashes with a deletion pending in a purge or a transfer: their owners finish them.
struct PendingDeletions {
    purge: HashSet<Sha256>,
    transfer: HashSet<Sha256>,
}

impl PendingDeletions {
    fn read(ledger: &Ledger) -> Result<Self, LedgerError> {
        let mut purge = HashSet::new();
        ledger.scan(names::MODERATION, moderation::PENDING_PREFIX, |k, v| {
            if let Some(entry) = moderation::decode_pending(k, v) {
                purge.insert(entry?.1.sha256);
            }
            Ok(())
        })?;
        let mut transfer = HashSet::new();
        ledger.scan(names::TASKS, tasks::DELETION_PREFIX, |k, v| {
            if let Some(entry) = tasks::decode_deletion_entry(k, v) {
                transfer.insert(entry?.0);
            }
            Ok(())
        })?;
        Ok(Self { purge, transfer })
    }
}

/// Sweeps every writable datastore not in `skip`.
pub async fn sweep_orphans(ledger: &Ledger, datastores: &Datastores, skip: &[DatastoreId]) {
    let pending = match PendingDeletions::read(ledger) {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read pending deletions; no orphan sweep at this start");
            return;
        }
    };
    for c in datastores.all() {
        if c.config.kinds.is_empty() || skip.contains(c.store.id()) {
            continue;
        }
        sweep_one(ledger, datastores, c, &pending).await;
    }
}

async fn sweep_one(
    ledger: &Ledger,
    datastores: &Datastores,
    c: &Configured,
    pending: &PendingDeletions,
) {
    let id = c.store.id();
    let listing = match c.store.list().await {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!(datastore = %id, error = %e, "cannot list datastore for the orphan sweep");
            return;
        }
    };
    for tmp in listing.temp_files {
        tracing::info!(datastore = %id, path = %tmp.display(), "removing leftover spool file");
        let _ = tokio::fs::remove_file(&tmp).await;
    }
    let (mut swept, mut kept) = (0u64, 0u64);
    for (loc, sha) in listing.blobs {
        let record = match ledger
            .view(names::HASH_REFS)
            .and_then(|v| Ok(hash_refs::get(&v, &sha)?))
        {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read hash_refs; skipping the rest of this datastore");
                break;
            }
        };
        let verdict = verdict(datastores, c, &loc, &sha, record.as_ref(), pending);
        match verdict {
            Verdict::Live => continue,
            Verdict::Kept(why) => {
                tracing::warn!(datastore = %id, location = %loc, "blob kept by the orphan sweep: {why}");
                kept += 1;
                continue;
            }
            Verdict::Orphan => {
                tracing::warn!(datastore = %id, location = %loc, "removing orphan blob (no event refers to it)");
            }
            Verdict::StrayCopy => {
                tracing::warn!(datastore = %id, location = %loc, "removing a stray copy (its hash lives in another datastore, in another file)");
            }
        }
        if let Err(e) = c.store.delete(&loc).await {
            tracing::warn!(error = %e, "cannot remove orphan blob");
        } else {
            swept += 1;
        }
    }
    if swept > 0 || kept > 0 {
        tracing::info!(datastore = %id, swept, kept, "orphan sweep done");
    }
}

fn verdict(
    datastores: &Datastores,
    c: &Configured,
    loc: &BlobLocation,
    sha: &Sha256,
    record: Option<&HashRecord>,
    pending: &PendingDeletions,
) -> Verdict {
    let id = c.store.id();
    match record {
        Some(h) if &h.datastore == id && &h.location == loc => Verdict::Live,
        Some(h) => {
            // Two names of one storage would make this file the live copy itself.
            let other = datastores
                .get(&h.datastore)
                .and_then(|s| s.local_path(&h.location));
            match (c.store.local_path(loc), other) {
                (Some(mine), Some(live)) if distinct_files(&mine, &live) => Verdict::StrayCopy,
                _ => Verdict::Kept(format!(
                    "its hash {sha} is recorded in datastore {} at {}, and this may be that very blob (the same storage under two names) or its only other copy",
                    h.datastore, h.location
                )),
            }
        }
        None if pending.purge.contains(sha) => Verdict::Kept(format!(
            "{sha} awaits a purge's deletion (finished at a later start)"
        )),
        None if pending.transfer.contains(sha) => {
            Verdict::Kept(format!("{sha} is a transfer's pending source deletion"))
        }
        None => Verdict::Orphan,
    }
}

/// Whether two paths are provably different files: both exist and their device or inode
/// differ. Anything unknown answers false (keep).
#[cfg(unix)]
fn distinct_files(a: &std::path::Path, b: &std::path::Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(x), Ok(y)) => (x.dev(), x.ino()) != (y.dev(), y.ino()),
        _ => false,
    }
}

#[cfg(not(unix))]
fn distinct_files(_a: &std::path::Path, _b: &std::path::Path) -> bool {
    false
}
