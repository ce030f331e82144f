//! The RocksDB layout: column families, key formats and the raw log reader.
//!
//! Column families: `log` (8-byte big-endian sequence → record), `meta` (the head: last
//! sequence and its chain value), `checkpoints` (projection name → version and last applied
//! sequence) and one per projection, named after it.

use super::LedgerError;
use media_ledger_events::codec::{self, Chain, GENESIS_CHAIN};
use media_ledger_events::{Envelope, Seq};
use media_ledger_projections::ALL;
use rocksdb::{BlockBasedOptions, ColumnFamilyDescriptor, Direction, IteratorMode, Options, DB};
use serde::{Deserialize, Serialize};
use std::path::Path;

pub(crate) const CF_LOG: &str = "log";
pub(crate) const CF_META: &str = "meta";
pub(crate) const CF_CHECKPOINTS: &str = "checkpoints";
const HEAD_KEY: &[u8] = b"head";
/// The last record a start-up verified the chain through (a [`Head`]).
const VERIFIED_KEY: &[u8] = b"verified";

/// The last committed record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Head {
    /// Its sequence (0 for an empty log).
    pub seq: Seq,
    /// Its chain value.
    pub chain: Chain,
}

impl Head {
    pub(crate) const EMPTY: Head = Head {
        seq: Seq(0),
        chain: GENESIS_CHAIN,
    };
}

/// A projection's progress, written in the same batch as its state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// The projection version the state was built by.
    pub version: u32,
    /// The last sequence folded into the state.
    pub seq: Seq,
}

/// What RocksDB may hold in memory (`[database]`): one block cache shared by every column
/// family, and a cap on all memtables together (RocksDB flushes the largest when the total
/// reaches it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryOptions {
    /// The shared block cache (uncompressed data and index blocks read from SST files).
    pub block_cache_bytes: usize,
    /// All memtables together (writes not yet flushed to SST files).
    pub write_buffer_bytes: usize,
}

impl Default for MemoryOptions {
    fn default() -> Self {
        Self {
            block_cache_bytes: 32 << 20,
            write_buffer_bytes: 64 << 20,
        }
    }
}

/// Options of every column family (bloom filters for point look-ups, the shared cache).
pub(crate) fn cf_options(cache: Option<&rocksdb::Cache>, write_buffer_bytes: usize) -> Options {
    let mut opts = Options::default();
    let mut block = BlockBasedOptions::default();
    block.set_bloom_filter(10.0, false);
    if let Some(cache) = cache {
        block.set_block_cache(cache);
    }
    opts.set_block_based_table_factory(&block);
    // No single memtable larger than the total allowed (RocksDB's default is 64 MiB each).
    opts.set_write_buffer_size(write_buffer_bytes.clamp(1 << 20, 64 << 20));
    opts
}

/// Opens (creating if needed) the database with every column family, with the default
/// memory bounds.
pub(crate) fn open_db(path: &Path) -> Result<DB, LedgerError> {
    open_db_with(path, MemoryOptions::default())
}

/// [`open_db`] with `memory`'s bounds.
pub(crate) fn open_db_with(path: &Path, memory: MemoryOptions) -> Result<DB, LedgerError> {
    let mut opts = Options::default();
    opts.create_if_missing(true);
    opts.create_missing_column_families(true);
    opts.set_max_background_jobs(2);
    opts.set_db_write_buffer_size(memory.write_buffer_bytes);
    let cache = rocksdb::Cache::new_lru_cache(memory.block_cache_bytes)?;
    let names = [CF_LOG, CF_META, CF_CHECKPOINTS]
        .into_iter()
        .chain(ALL.iter().map(|p| p.name()));
    let cfs: Vec<_> = names
        .map(|n| {
            ColumnFamilyDescriptor::new(n, cf_options(Some(&cache), memory.write_buffer_bytes))
        })
        .collect();
    Ok(DB::open_cf_descriptors(&opts, path, cfs)?)
}

/// Opens the database read-only (no lock: works beside a running server, seeing the state
/// as of opening).
pub(crate) fn open_db_read_only(path: &Path) -> Result<DB, LedgerError> {
    if !path.join("CURRENT").is_file() {
        return Err(LedgerError::Storage(format!(
            "no ledger at {}",
            path.display()
        )));
    }
    let names: Vec<&str> = [CF_LOG, CF_META, CF_CHECKPOINTS]
        .into_iter()
        .chain(ALL.iter().map(|p| p.name()))
        .collect();
    Ok(DB::open_cf_for_read_only(
        &Options::default(),
        path,
        names,
        false,
    )?)
}

pub(crate) fn cf<'a>(db: &'a DB, name: &str) -> Result<&'a rocksdb::ColumnFamily, LedgerError> {
    db.cf_handle(name)
        .ok_or_else(|| LedgerError::Storage(format!("column family {name} missing")))
}

pub(crate) fn seq_key(seq: Seq) -> [u8; 8] {
    seq.0.to_be_bytes()
}

pub(crate) fn read_head(db: &DB) -> Result<Option<Head>, LedgerError> {
    match db.get_cf(cf(db, CF_META)?, HEAD_KEY)? {
        Some(b) => Ok(Some(codec::decode(&b)?)),
        None => Ok(None),
    }
}

/// Where the last start-up finished verifying the chain, if one did.
pub(crate) fn read_verified(db: &DB) -> Result<Option<Head>, LedgerError> {
    match db.get_cf(cf(db, CF_META)?, VERIFIED_KEY)? {
        Some(b) => Ok(Some(codec::decode(&b)?)),
        None => Ok(None),
    }
}

/// Records that the chain is verified through `head` (not synced: a lost marker only makes
/// the next start verify more).
pub(crate) fn write_verified(db: &DB, head: &Head) -> Result<(), LedgerError> {
    db.put_cf(cf(db, CF_META)?, VERIFIED_KEY, codec::encode(head)?)?;
    Ok(())
}

/// Removes the verified point ([`read_verified`]).
pub(crate) fn forget_verified(db: &DB) -> Result<(), LedgerError> {
    db.delete_cf(cf(db, CF_META)?, VERIFIED_KEY)?;
    Ok(())
}

pub(crate) fn head_entry(head: &Head) -> Result<(&'static [u8], Vec<u8>), LedgerError> {
    Ok((HEAD_KEY, codec::encode(head)?))
}

pub(crate) fn read_checkpoint(db: &DB, name: &str) -> Result<Option<Checkpoint>, LedgerError> {
    match db.get_cf(cf(db, CF_CHECKPOINTS)?, name.as_bytes())? {
        Some(b) => Ok(Some(codec::decode(&b)?)),
        None => Ok(None),
    }
}

/// A record whose chain is intact (so its bytes are as written) but which this build cannot
/// decode: written by a newer version, or by an older one without the record size bound.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Undecodable {
    /// Its sequence.
    pub seq: Seq,
    /// The decoder's reason.
    pub reason: String,
}

/// Walks the log from `from` (inclusive), checking that keys are gap-free and that every
/// record chains to the previous one. `prev` is the chain value of record `from - 1`
/// (which the caller has verified). Calls `visit` with each envelope; stops at the first bad
/// record with [`LedgerError::Corrupt`].
pub(crate) fn walk_log(
    db: &DB,
    from: Seq,
    prev: Chain,
    visit: impl FnMut(Envelope) -> Result<(), LedgerError>,
) -> Result<Head, LedgerError> {
    walk_log_with(db, from, prev, visit, |u| {
        Err(LedgerError::Corrupt {
            seq: u.seq,
            reason: u.reason,
        })
    })
}

/// [`walk_log`], handing each record whose chain is intact but whose bytes do not decode to
/// `undecodable` (which may step past it: the chain goes on through its bytes).
pub(crate) fn walk_log_with(
    db: &DB,
    from: Seq,
    mut prev: Chain,
    mut visit: impl FnMut(Envelope) -> Result<(), LedgerError>,
    mut undecodable: impl FnMut(Undecodable) -> Result<(), LedgerError>,
) -> Result<Head, LedgerError> {
    let log = cf(db, CF_LOG)?;
    let start = seq_key(from);
    let mut expected = from;
    let mut last = Head {
        seq: Seq(from.0.saturating_sub(1)),
        chain: prev,
    };
    for item in db.iterator_cf(log, IteratorMode::From(&start, Direction::Forward)) {
        let (key, value) = item?;
        let seq = key
            .as_ref()
            .try_into()
            .map(|k: [u8; 8]| Seq(u64::from_be_bytes(k)))
            .map_err(|_| LedgerError::Corrupt {
                seq: expected,
                reason: "malformed log key".into(),
            })?;
        if seq != expected {
            return Err(LedgerError::Corrupt {
                seq: expected,
                reason: format!("record missing (next stored record is {seq})"),
            });
        }
        let (chain, body) =
            codec::check_chain(&prev, seq, &value).map_err(|e| LedgerError::Corrupt {
                seq,
                reason: e.to_string(),
            })?;
        match codec::decode_checked_body(seq, body) {
            Ok(env) => visit(env)?,
            Err(e) => undecodable(Undecodable {
                seq,
                reason: e.to_string(),
            })?,
        }
        prev = chain;
        last = Head { seq, chain };
        expected = Seq(seq.0 + 1);
    }
    Ok(last)
}

/// The chain value of record `seq` (the genesis value for 0), read from the record itself.
pub(crate) fn chain_at(db: &DB, seq: Seq) -> Result<Chain, LedgerError> {
    if seq.0 == 0 {
        return Ok(GENESIS_CHAIN);
    }
    let rec = db
        .get_cf(cf(db, CF_LOG)?, seq_key(seq))?
        .ok_or_else(|| LedgerError::Corrupt {
            seq,
            reason: "record missing".into(),
        })?;
    let tail = rec
        .len()
        .checked_sub(codec::CHAIN_LEN)
        .and_then(|i| rec.get(i..))
        .ok_or_else(|| LedgerError::Corrupt {
            seq,
            reason: "record shorter than its checksum".into(),
        })?;
    let mut chain = GENESIS_CHAIN;
    chain.copy_from_slice(tail);
    Ok(chain)
}

/// Verifies the whole log and that the stored head agrees with its last record (so a
/// removed tail is caught too). Returns the head.
pub(crate) fn verify_log(
    db: &DB,
    visit: impl FnMut(Envelope) -> Result<(), LedgerError>,
) -> Result<Head, LedgerError> {
    let last = walk_log(db, Seq(1), GENESIS_CHAIN, visit)?;
    check_head(db, last)
}

/// What a start-up verifies: from the last verified point ([`read_verified`]) on, so start-up
/// time does not grow with the log. The record at that point must still be there with the
/// chain value verified then (a replaced or removed record there or a removed tail past it is
/// found); every record after it is checked as [`verify_log`] checks; the head must match.
/// Records before the point were verified by an earlier start and are checked again only by
/// `verify` ([`verify_log`]). Without a point, the whole log.
pub(crate) fn verify_log_since_verified(db: &DB) -> Result<Head, LedgerError> {
    let Some(point) = read_verified(db)?.filter(|p| p.seq.0 > 0) else {
        return verify_log(db, |_| Ok(()));
    };
    // The record at the point must still chain from its predecessor to the value verified.
    let record = db
        .get_cf(cf(db, CF_LOG)?, seq_key(point.seq))?
        .ok_or_else(|| LedgerError::Corrupt {
            seq: point.seq,
            reason: "record missing (the last start-up verified the log through it)".into(),
        })?;
    let before = chain_at(db, Seq(point.seq.0 - 1))?;
    let changed = |reason: String| LedgerError::Corrupt {
        seq: point.seq,
        reason,
    };
    let (chain, _) =
        codec::check_chain(&before, point.seq, &record).map_err(|e| changed(e.to_string()))?;
    if chain != point.chain {
        return Err(changed(
            "the record where the last start-up's verification ended has changed".into(),
        ));
    }
    let last = walk_log(db, Seq(point.seq.0 + 1), point.chain, |_| Ok(()))?;
    check_head(db, last)
}

/// [`verify_log`], stepping past records whose chain is intact but which do not decode (handed
/// to `undecodable`, which may refuse them).
pub(crate) fn verify_log_with(
    db: &DB,
    visit: impl FnMut(Envelope) -> Result<(), LedgerError>,
    undecodable: impl FnMut(Undecodable) -> Result<(), LedgerError>,
) -> Result<Head, LedgerError> {
    let last = walk_log_with(db, Seq(1), GENESIS_CHAIN, visit, undecodable)?;
    check_head(db, last)
}

fn check_head(db: &DB, last: Head) -> Result<Head, LedgerError> {
    let stored = read_head(db)?.unwrap_or(Head::EMPTY);
    if stored.seq > last.seq {
        return Err(LedgerError::Corrupt {
            seq: Seq(last.seq.0 + 1),
            reason: format!(
                "record missing (the head says the log ends at {})",
                stored.seq
            ),
        });
    }
    if stored != last {
        return Err(LedgerError::Corrupt {
            seq: last.seq,
            reason: "the stored head does not match the last record".into(),
        });
    }
    Ok(last)
}
