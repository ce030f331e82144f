//! The per-blob steps of a transfer: which blobs a task moves, copying one through the
//! target's spool while hashing it, and reading a copy back to verify it.

use crate::datastore::Datastore;
use crate::ledger::{Ledger, LedgerError};
use futures_util::StreamExt;
use media_ledger_events::{DatastoreId, Seq, Sha256};
use media_ledger_projections::hash_refs::{self, HashRecord};
use media_ledger_projections::names;
use sha2::Digest;
use std::sync::Arc;
use tokio::io::AsyncWriteExt;

/// Hash records in `source` created before `task` (and, with `before_ts`, last accessed
/// before it), in key order.
pub(super) fn select(
    ledger: &Ledger,
    source: &DatastoreId,
    task: Seq,
    before_ts_ms: Option<u64>,
) -> Result<Vec<(Sha256, HashRecord)>, LedgerError> {
    let mut out = Vec::new();
    ledger.scan(names::HASH_REFS, hash_refs::HASH_PREFIX, |k, v| {
        if let Some(entry) = hash_refs::decode_hash_entry(k, v) {
            let (sha, h) = entry?;
            let accessed_before = before_ts_ms.is_none_or(|b| h.last_access_ms < b);
            if &h.datastore == source && h.created_seq < task && accessed_before {
                out.push((sha, h));
            }
        }
        Ok(())
    })?;
    Ok(out)
}

/// Streams the source blob into the target's spool while hashing, checks it, commits it.
pub(super) async fn copy(
    source: &Arc<dyn Datastore>,
    target: &Arc<dyn Datastore>,
    from: &media_ledger_events::BlobLocation,
    sha: &Sha256,
    size: u64,
) -> Result<(), String> {
    // A local source file is stored as it is (the read-back verification that follows checks
    // its bytes); anything else is streamed through the target's spool while hashed.
    if let Some(path) = source.local_path(from) {
        target
            .put_from(&path, sha)
            .await
            .map_err(|e| format!("writing the target: {e}"))?;
        return Ok(());
    }
    let mut stream = source
        .open(from, 0, size)
        .await
        .map_err(|e| format!("reading the source: {e}"))?;
    let spool = target.spool_dir().join(format!(
        "transfer-{}-{}.part",
        sha.to_hex(),
        crate::media::new_media_id().map_err(|e| e.to_string())?
    ));
    let result = async {
        let file = tokio::fs::File::create(&spool).await.map_err(|e| format!("spool: {e}"))?;
        // 512 KiB writes: see `media::spool` on 1 MiB writes into the page cache.
        let mut out = tokio::io::BufWriter::with_capacity(512 << 10, file);
        let mut hasher = sha2::Sha256::new();
        let mut n = 0u64;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| format!("reading the source: {e}"))?;
            n += chunk.len() as u64;
            hasher.update(&chunk);
            out.write_all(&chunk).await.map_err(|e| format!("spool: {e}"))?;
        }
        out.flush().await.map_err(|e| format!("spool: {e}"))?;
        let file = out.into_inner();
        if target.spool_needs_sync() {
            file.sync_all().await.map_err(|e| format!("spool: {e}"))?;
        }
        let got = Sha256(hasher.finalize().into());
        if n != size || &got != sha {
            return Err(format!("the source copy is damaged: {n} bytes hashing to {got}, expected {size} bytes of {sha}"));
        }
        target.commit(&spool, sha).await.map_err(|e| format!("writing the target: {e}"))?;
        Ok(())
    }
    .await;
    if result.is_err() {
        let _ = tokio::fs::remove_file(&spool).await;
    }
    result
}

/// Checks that a blob is `size` bytes hashing to `sha`: from the checksum the store checked
/// when it was written, where the store keeps one ([`Datastore::vouches_for`]), otherwise by
/// reading it back.
pub(super) async fn verify(
    store: &Arc<dyn Datastore>,
    location: &media_ledger_events::BlobLocation,
    sha: &Sha256,
    size: u64,
) -> Result<bool, String> {
    if let Some(answer) = store
        .vouches_for(location, sha, size)
        .await
        .map_err(|e| e.to_string())?
    {
        return Ok(answer);
    }
    match store.size_of(location).await {
        Ok(Some(n)) if n == size => {}
        Ok(_) => return Ok(false),
        Err(e) => return Err(e.to_string()),
    }
    let mut stream = store
        .open(location, 0, size)
        .await
        .map_err(|e| e.to_string())?;
    let mut hasher = sha2::Sha256::new();
    let mut n = 0u64;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| e.to_string())?;
        n += chunk.len() as u64;
        hasher.update(&chunk);
    }
    Ok(n == size && Sha256(hasher.finalize().into()) == *sha)
}
