//! Tools over a cluster's shared log (server stopped): `migrate-log --to postgres` copies a
//! single node's embedded log into an empty (or partly migrated) shared log, verified record
//! by record; `verify` checks the shared log's sequence and hash chain.

use super::shared::{Appended, SharedLog};
use super::store::{self, cf, CF_LOG};
use super::LedgerError;
use media_ledger_events::codec::{self, Chain, GENESIS_CHAIN};
use media_ledger_events::Seq;
use rocksdb::{Direction, IteratorMode};
use std::path::Path;

/// Records per transaction (and per read-back step).
const STEP: usize = 5_000;

/// What `migrate-log` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Migrated {
    /// Records the shared log already held (a resumed migration), checked equal to ours.
    pub already: u64,
    /// Records copied now.
    pub copied: u64,
    /// The shared log's head afterwards (= the local one).
    pub head: Seq,
}

/// Copies the embedded log at `path` into the shared log at `url`: refuses a shared log
/// holding anything that is not a prefix of ours; appends the rest in transactions of
/// [`STEP`] records (a failure leaves a prefix, which a second run continues); then reads the
/// whole shared log back and checks every record against ours and the chain.
pub fn migrate_to_shared(
    path: &Path,
    url: &str,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<Migrated, LedgerError> {
    // Read-write: RocksDB's lock refuses while a server holds the store (events it would
    // acknowledge during the copy would be missing from it).
    if !path.join("CURRENT").is_file() {
        return Err(LedgerError::Storage(format!(
            "no ledger at {}",
            path.display()
        )));
    }
    let db = store::open_db(path)?;
    let local = store::verify_log(&db, |_| Ok(()))?;
    let mut log = SharedLog::connect(url)?;
    let already = log.head()?;
    if already.0 > local.seq.0 {
        return Err(LedgerError::Storage(format!(
            "the shared log holds {} records, more than this log's {}: it is another log",
            already.0, local.seq.0
        )));
    }
    // What is there must be ours: the same record at its last sequence (each record carries
    // the chain of all before it). Checked again, whole, in the read-back below.
    super::shared::check_prefix(
        &db,
        &mut log,
        super::Head {
            seq: already,
            chain: GENESIS_CHAIN,
        },
    )?;
    let mut copied = 0u64;
    let mut batch: Vec<(Seq, Vec<u8>)> = Vec::with_capacity(STEP);
    let log_cf = cf(&db, CF_LOG)?;
    let start = store::seq_key(Seq(already.0 + 1));
    for item in db.iterator_cf(log_cf, IteratorMode::From(&start, Direction::Forward)) {
        let (key, value) = item?;
        let seq = key
            .as_ref()
            .try_into()
            .map(|k: [u8; 8]| Seq(u64::from_be_bytes(k)))
            .map_err(|_| LedgerError::Storage("malformed log key".into()))?;
        batch.push((seq, value.to_vec()));
        if batch.len() == STEP {
            copied += append(&mut log, &mut batch)?;
            progress(already.0 + copied, local.seq.0);
        }
    }
    copied += append(&mut log, &mut batch)?;
    progress(already.0 + copied, local.seq.0);
    // Read back: the shared log must now be exactly ours.
    let mut ours = db.iterator_cf(log_cf, IteratorMode::Start);
    let head = walk_shared(&mut log, |seq, record| match ours.next() {
        Some(Ok((_, mine))) if *mine == *record => Ok(()),
        _ => Err(LedgerError::Corrupt {
            seq,
            reason: "the shared log's record differs from the embedded log's".into(),
        }),
    })?;
    if head.0 != local.seq.0 {
        return Err(LedgerError::Storage(format!(
            "the shared log ends at {head}, the embedded log at {}",
            local.seq
        )));
    }
    Ok(Migrated {
        already: already.0,
        copied,
        head,
    })
}

fn append(log: &mut SharedLog, batch: &mut Vec<(Seq, Vec<u8>)>) -> Result<u64, LedgerError> {
    if batch.is_empty() {
        return Ok(0);
    }
    let n = batch.len() as u64;
    match log.append(batch)? {
        Appended::Done => {
            batch.clear();
            Ok(n)
        }
        Appended::Lost => Err(LedgerError::Storage(
            "another writer appended to the shared log during the migration: stop every node first"
                .into(),
        )),
    }
}

/// Reads the whole shared log, checking that sequences run 1, 2, … without a gap and the
/// hash chain; hands each record to `visit`. Returns the last sequence.
pub(crate) fn walk_shared(
    log: &mut SharedLog,
    mut visit: impl FnMut(Seq, &[u8]) -> Result<(), LedgerError>,
) -> Result<Seq, LedgerError> {
    let mut chain: Chain = GENESIS_CHAIN;
    let mut last = Seq(0);
    loop {
        let records = log.read_after(last, STEP as i64)?;
        if records.is_empty() {
            return Ok(last);
        }
        for (seq, record) in records {
            if seq.0 != last.0 + 1 {
                return Err(LedgerError::Corrupt {
                    seq: Seq(last.0 + 1),
                    reason: format!("record missing (the next stored record is {seq})"),
                });
            }
            let (next, _) =
                codec::check_chain(&chain, seq, &record).map_err(|e| LedgerError::Corrupt {
                    seq,
                    reason: e.to_string(),
                })?;
            visit(seq, &record)?;
            chain = next;
            last = seq;
        }
    }
}

/// `verify` of a cluster node: the shared log's sequence and chain, and that the local log
/// (checked by the usual `verify` after this) is a prefix of it. Returns the shared head.
pub fn verify_shared(path: &Path, url: &str) -> Result<Seq, LedgerError> {
    let mut log = SharedLog::connect(url)?;
    let head = walk_shared(&mut log, |_, _| Ok(()))?;
    let db = store::open_db_read_only(path)?;
    let local = store::verify_log(&db, |_| Ok(()))?;
    super::shared::check_prefix(&db, &mut log, local)?;
    Ok(head)
}
