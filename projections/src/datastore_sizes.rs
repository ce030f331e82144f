//! Datastore contents and running size figures, per datastore.
//!
//! Keys: `b't' ‖ datastore id` → [`DatastoreTotals`]; `b'h' ‖ datastore id ‖ 0x00 ‖ sha256` →
//! [`HashCount`]. The totals follow matrix-media-repo's `size_estimate` counting: rows are
//! counted with duplicates, bytes once per distinct hash; thumbnails are counted apart from
//! media, and a hash used by both counts once in the totals.

use crate::size_estimate::SizeEstimate;
use crate::{get_value, invariant, put_value, KvRead, KvTx, Projection, ProjectionError};
use media_ledger_events::{DatastoreId, Envelope, Event, Sha256};
use serde::{Deserialize, Serialize};

const NAME: &str = crate::names::DATASTORE_SIZES.as_str();

/// How many media and thumbnail rows of one datastore have one hash.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HashCount {
    /// Media rows with this hash.
    pub media: u64,
    /// Thumbnail rows with this hash.
    pub thumbnails: u64,
}

/// The running figures of one datastore (the seed's `size_estimate` without `before_ts`).
pub type DatastoreTotals = SizeEstimate;

/// The datastore sizes projection.
pub struct DatastoreSizes;

fn totals_key(ds: &DatastoreId) -> Vec<u8> {
    let mut k = vec![b't'];
    k.extend_from_slice(ds.as_str().as_bytes());
    k
}

fn hash_key(ds: &DatastoreId, sha: &Sha256) -> Vec<u8> {
    let mut k = vec![b'h'];
    k.extend_from_slice(ds.as_str().as_bytes());
    k.push(0);
    k.extend_from_slice(&sha.0);
    k
}

impl Projection for DatastoreSizes {
    fn name(&self) -> &'static str {
        NAME
    }
    fn version(&self) -> u32 {
        // 4: thumbnails, remote media. 5: purges remove rows.
        5
    }
    fn apply(&self, env: &Envelope, tx: &mut dyn KvTx) -> Result<(), ProjectionError> {
        match &env.event {
            Event::MediaUploadedV1(e) => {
                add_row(tx, &e.datastore, &e.sha256, e.size_bytes, Row::Media)
            }
            Event::RemoteMediaCachedV1(e) => {
                add_row(tx, &e.datastore, &e.sha256, e.size_bytes, Row::Media)
            }
            Event::MediaImportedV1(e) => {
                add_row(tx, &e.datastore, &e.sha256, e.size_bytes, Row::Media)
            }
            Event::MediaMigratedV1(e) => {
                add_row(tx, &e.datastore, &e.sha256, e.size_bytes, Row::Media)
            }
            Event::ThumbnailGeneratedV1(e) => {
                add_row(tx, &e.datastore, &e.sha256, e.size_bytes, Row::Thumbnail)
            }
            Event::BlobMovedV1(e) => {
                let from_hk = hash_key(&e.from_datastore, &e.sha256);
                let count: HashCount = get_value(NAME, tx, &from_hk)?.unwrap_or_default();
                tx.delete(&from_hk);
                let from_tk = totals_key(&e.from_datastore);
                let mut from: DatastoreTotals = get_value(NAME, tx, &from_tk)?.unwrap_or_default();
                let under = || {
                    invariant(
                        NAME,
                        format!("move of {} underflows {}", e.sha256, e.from_datastore),
                    )
                };
                from.media_affected = from
                    .media_affected
                    .checked_sub(count.media)
                    .ok_or_else(under)?;
                from.thumbnails_affected = from
                    .thumbnails_affected
                    .checked_sub(count.thumbnails)
                    .ok_or_else(under)?;
                if count.media > 0 {
                    from.media_hashes_affected = from
                        .media_hashes_affected
                        .checked_sub(1)
                        .ok_or_else(under)?;
                    from.media_bytes = from
                        .media_bytes
                        .checked_sub(e.size_bytes)
                        .ok_or_else(under)?;
                }
                if count.thumbnails > 0 {
                    from.thumbnail_hashes_affected = from
                        .thumbnail_hashes_affected
                        .checked_sub(1)
                        .ok_or_else(under)?;
                    from.thumbnail_bytes = from
                        .thumbnail_bytes
                        .checked_sub(e.size_bytes)
                        .ok_or_else(under)?;
                }
                if count.media > 0 || count.thumbnails > 0 {
                    from.total_hashes_affected = from
                        .total_hashes_affected
                        .checked_sub(1)
                        .ok_or_else(under)?;
                    from.total_bytes = from
                        .total_bytes
                        .checked_sub(e.size_bytes)
                        .ok_or_else(under)?;
                }
                put_value(NAME, tx, &from_tk, &from)?;

                let to_hk = hash_key(&e.to_datastore, &e.sha256);
                let before: HashCount = get_value(NAME, tx, &to_hk)?.unwrap_or_default();
                let to_tk = totals_key(&e.to_datastore);
                let mut to: DatastoreTotals = get_value(NAME, tx, &to_tk)?.unwrap_or_default();
                to.media_affected += count.media;
                to.thumbnails_affected += count.thumbnails;
                if before.media == 0 && count.media > 0 {
                    to.media_hashes_affected += 1;
                    to.media_bytes += e.size_bytes;
                }
                if before.thumbnails == 0 && count.thumbnails > 0 {
                    to.thumbnail_hashes_affected += 1;
                    to.thumbnail_bytes += e.size_bytes;
                }
                if before.media == 0
                    && before.thumbnails == 0
                    && (count.media > 0 || count.thumbnails > 0)
                {
                    to.total_hashes_affected += 1;
                    to.total_bytes += e.size_bytes;
                }
                let after = HashCount {
                    media: before.media + count.media,
                    thumbnails: before.thumbnails + count.thumbnails,
                };
                put_value(NAME, tx, &to_hk, &after)?;
                put_value(NAME, tx, &to_tk, &to)
            }
            Event::MediaPurgedV1(e) => {
                for m in &e.media {
                    remove_row(tx, &m.datastore, &m.sha256, m.size_bytes, Row::Media)?;
                }
                for t in &e.thumbnails {
                    remove_row(tx, &t.datastore, &t.sha256, t.size_bytes, Row::Thumbnail)?;
                }
                Ok(())
            }
            Event::AsyncUploadCreatedV1(_)
            | Event::MediaQuarantinedV1(_)
            | Event::MediaUnquarantinedV1(_)
            | Event::MediaAttributesSetV1(_)
            | Event::BlobDeletedV1(_)
            | Event::MediaAccessedV1(_)
            | Event::TransferStartedV1(_)
            | Event::BlobSourceDeletedV1(_)
            | Event::BlobTransferFailedV1(_)
            | Event::TransferFinishedV1(_)
            | Event::UrlPreviewedV1(_)
            | Event::UrlPreviewsExpiredV1(_)
            | Event::MediaExportedV1(_)
            | Event::ImportStartedV1(_)
            | Event::ImportProgressV1(_) => Ok(()),
        }
    }
}

/// Which figures a new row counts in.
enum Row {
    Media,
    Thumbnail,
}

/// Counts one media or thumbnail row of `sha` in `ds`: rows always, the hash and its bytes
/// once per kind, and once in the totals whichever kind came first.
fn add_row(
    tx: &mut dyn KvTx,
    ds: &DatastoreId,
    sha: &Sha256,
    size_bytes: u64,
    row: Row,
) -> Result<(), ProjectionError> {
    let hk = hash_key(ds, sha);
    let tk = totals_key(ds);
    let mut count: HashCount = get_value(NAME, tx, &hk)?.unwrap_or_default();
    let mut t: DatastoreTotals = get_value(NAME, tx, &tk)?.unwrap_or_default();
    let new_hash = count.media == 0 && count.thumbnails == 0;
    let (rows, hashes, bytes, seen) = match row {
        Row::Media => (
            &mut t.media_affected,
            &mut t.media_hashes_affected,
            &mut t.media_bytes,
            &mut count.media,
        ),
        Row::Thumbnail => (
            &mut t.thumbnails_affected,
            &mut t.thumbnail_hashes_affected,
            &mut t.thumbnail_bytes,
            &mut count.thumbnails,
        ),
    };
    *rows += 1;
    if *seen == 0 {
        *hashes += 1;
        *bytes += size_bytes;
    }
    *seen += 1;
    if new_hash {
        t.total_hashes_affected += 1;
        t.total_bytes += size_bytes;
    }
    put_value(NAME, tx, &hk, &count)?;
    put_value(NAME, tx, &tk, &t)
}

/// Uncounts one media or thumbnail row: the exact inverse of [`add_row`].
fn remove_row(
    tx: &mut dyn KvTx,
    ds: &DatastoreId,
    sha: &Sha256,
    size_bytes: u64,
    row: Row,
) -> Result<(), ProjectionError> {
    let hk = hash_key(ds, sha);
    let tk = totals_key(ds);
    let mut count: HashCount = get_value(NAME, tx, &hk)?.unwrap_or_default();
    let mut t: DatastoreTotals = get_value(NAME, tx, &tk)?.unwrap_or_default();
    let under = || invariant(NAME, format!("removal of {sha} underflows {ds}"));
    let (rows, hashes, bytes, seen) = match row {
        Row::Media => (
            &mut t.media_affected,
            &mut t.media_hashes_affected,
            &mut t.media_bytes,
            &mut count.media,
        ),
        Row::Thumbnail => (
            &mut t.thumbnails_affected,
            &mut t.thumbnail_hashes_affected,
            &mut t.thumbnail_bytes,
            &mut count.thumbnails,
        ),
    };
    *seen = seen.checked_sub(1).ok_or_else(under)?;
    *rows = rows.checked_sub(1).ok_or_else(under)?;
    if *seen == 0 {
        *hashes = hashes.checked_sub(1).ok_or_else(under)?;
        *bytes = bytes.checked_sub(size_bytes).ok_or_else(under)?;
    }
    if count.media == 0 && count.thumbnails == 0 {
        t.total_hashes_affected = t.total_hashes_affected.checked_sub(1).ok_or_else(under)?;
        t.total_bytes = t.total_bytes.checked_sub(size_bytes).ok_or_else(under)?;
        tx.delete(&hk);
    } else {
        put_value(NAME, tx, &hk, &count)?;
    }
    put_value(NAME, tx, &tk, &t)
}

/// The running figures of `ds` (all zero for a datastore that never held anything).
pub fn totals(
    kv: &(impl KvRead + ?Sized),
    ds: &DatastoreId,
) -> Result<DatastoreTotals, ProjectionError> {
    Ok(get_value(NAME, kv, &totals_key(ds))?.unwrap_or_default())
}
