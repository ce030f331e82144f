//! Datastore contents and running size figures, per datastore.
//!
//! Keys: `b't' ‖ datastore id` → [`DatastoreTotals`]; `b'h' ‖ datastore id ‖ 0x00 ‖ sha256` →
//! [`HashCount`]. The totals follow matrix-media-repo's `size_estimate` counting: rows are
//! counted with duplicates, bytes once per distinct hash. Thumbnail figures stay zero until
//! thumbnails exist.

use crate::size_estimate::SizeEstimate;
use crate::{get_value, put_value, KvRead, KvTx, Projection, ProjectionError};
use media_ledger_events::{DatastoreId, Envelope, Event, Sha256};
use serde::{Deserialize, Serialize};

const NAME: &str = "datastore_sizes";

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
        1
    }
    fn apply(&self, env: &Envelope, tx: &mut dyn KvTx) -> Result<(), ProjectionError> {
        match &env.event {
            Event::MediaUploadedV1(e) => {
                let hk = hash_key(&e.datastore, &e.sha256);
                let tk = totals_key(&e.datastore);
                let mut count: HashCount = get_value(NAME, tx, &hk)?.unwrap_or_default();
                let mut t: DatastoreTotals = get_value(NAME, tx, &tk)?.unwrap_or_default();
                t.media_affected += 1;
                if count.media == 0 {
                    t.media_hashes_affected += 1;
                    t.media_bytes += e.size_bytes;
                }
                if count.media == 0 && count.thumbnails == 0 {
                    t.total_hashes_affected += 1;
                    t.total_bytes += e.size_bytes;
                }
                count.media += 1;
                put_value(NAME, tx, &hk, &count)?;
                put_value(NAME, tx, &tk, &t)
            }
            Event::AsyncUploadCreatedV1(_) | Event::MediaAccessedV1(_) => Ok(()),
        }
    }
}

/// The running figures of `ds` (all zero for a datastore that never held anything).
pub fn totals(
    kv: &(impl KvRead + ?Sized),
    ds: &DatastoreId,
) -> Result<DatastoreTotals, ProjectionError> {
    Ok(get_value(NAME, kv, &totals_key(ds))?.unwrap_or_default())
}
