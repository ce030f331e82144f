//! Raw access to the log of a closed ledger, for recovery tests and tools: write records
//! without folding them (as if every projection lagged), damage or remove records.
//!
//! Nothing here runs while a server has the database open (RocksDB's lock forbids it).

use super::store::{self, cf, head_entry, seq_key, Head, CF_LOG, CF_META};
use super::LedgerError;
use media_ledger_events::{codec, Envelope, Seq};
use rocksdb::{WriteBatch, WriteOptions};
use std::path::Path;

/// Appends envelopes after the current head, re-sequencing them, without touching any
/// projection. Returns the new head.
pub fn append_unprojected(path: &Path, envelopes: &[Envelope]) -> Result<Head, LedgerError> {
    let db = store::open_db(path)?;
    let mut head = store::verify_log_with(&db, |_| Ok(()), |_| Ok(()))?;
    let mut batch = WriteBatch::default();
    for env in envelopes {
        let mut env = env.clone();
        env.seq = Seq(head.seq.0 + 1);
        let (record, chain) = codec::encode_record(&head.chain, &env)?;
        batch.put_cf(cf(&db, CF_LOG)?, seq_key(env.seq), record);
        head = Head {
            seq: env.seq,
            chain,
        };
    }
    commit_with_head(&db, batch, head)
}

/// Writes `batch` with the new head, synced.
fn commit_with_head(
    db: &rocksdb::DB,
    mut batch: WriteBatch,
    head: Head,
) -> Result<Head, LedgerError> {
    let (k, v) = head_entry(&head)?;
    batch.put_cf(cf(db, CF_META)?, k, v);
    let mut opts = WriteOptions::default();
    opts.set_sync(true);
    db.write_opt(batch, &opts)?;
    Ok(head)
}

/// The stored bytes of record `seq`.
pub fn read_record(path: &Path, seq: Seq) -> Result<Option<Vec<u8>>, LedgerError> {
    let db = store::open_db(path)?;
    Ok(db.get_cf(cf(&db, CF_LOG)?, seq_key(seq))?)
}

/// Overwrites the stored bytes of record `seq`.
pub fn write_record(path: &Path, seq: Seq, bytes: &[u8]) -> Result<(), LedgerError> {
    let db = store::open_db(path)?;
    db.put_cf(cf(&db, CF_LOG)?, seq_key(seq), bytes)?;
    Ok(())
}

/// Forgets where the last start-up's chain check ended, so the next start checks the whole
/// log (benchmarks of that first start).
pub fn forget_verified(path: &Path) -> Result<(), LedgerError> {
    let db = store::open_db(path)?;
    store::forget_verified(&db)
}

/// Removes record `seq`.
pub fn delete_record(path: &Path, seq: Seq) -> Result<(), LedgerError> {
    let db = store::open_db(path)?;
    db.delete_cf(cf(&db, CF_LOG)?, seq_key(seq))?;
    Ok(())
}

/// Appends one record whose body (format byte included) is `body`, chained correctly but not
/// checked: what a newer build, or an older one without the record size bound, could have
/// written. Returns the new head.
pub fn append_body(path: &Path, body: Vec<u8>) -> Result<Head, LedgerError> {
    let db = store::open_db(path)?;
    let head = store::verify_log_with(&db, |_| Ok(()), |_| Ok(()))?;
    let seq = Seq(head.seq.0 + 1);
    let (record, chain) = codec::seal_body(&head.chain, seq, body);
    let head = Head { seq, chain };
    let mut batch = WriteBatch::default();
    batch.put_cf(cf(&db, CF_LOG)?, seq_key(seq), record);
    commit_with_head(&db, batch, head)
}
