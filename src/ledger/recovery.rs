//! Recovery tooling: a ledger as of an earlier sequence (`replay --until`), and consistent
//! snapshots of a ledger (RocksDB checkpoints) for backups.

use super::store::{self, cf, head_entry, seq_key, Head, CF_LOG, CF_META};
use super::{Ledger, LedgerError};
use media_ledger_events::Seq;
use rocksdb::{Direction, IteratorMode, WriteBatch};
use std::path::Path;

/// Events copied per write batch.
const COPY_BATCH: usize = 10_000;

fn refuse_existing(dst: &Path) -> Result<(), LedgerError> {
    if dst.exists()
        && std::fs::read_dir(dst)
            .map(|mut d| d.next().is_some())
            .unwrap_or(true)
    {
        return Err(LedgerError::Storage(format!(
            "{} exists and is not empty; give a new directory",
            dst.display()
        )));
    }
    Ok(())
}

/// Writes into `dst` (a new directory) a ledger whose log is records `1..=until` of the
/// ledger at `src` (verified on the way), with its projections rebuilt: the state as it was
/// right after `until`. `src` is only read (a running server may hold it). The chain of the
/// whole log is checked, but only records up to `until` must decode: a record this build
/// cannot read never locks the operator out of the events before it.
pub fn export_until(src: &Path, dst: &Path, until: Seq) -> Result<Head, LedgerError> {
    refuse_existing(dst)?;
    let from = store::open_db_read_only(src)?;
    let full = store::verify_log_with(
        &from,
        |_| Ok(()),
        |u| {
            if u.seq <= until {
                Err(LedgerError::Corrupt {
                    seq: u.seq,
                    reason: format!(
                        "{} (replay --until {} exports the events before it)",
                        u.reason,
                        u.seq.0.saturating_sub(1)
                    ),
                })
            } else {
                Ok(())
            }
        },
    )?;
    if until > full.seq {
        return Err(LedgerError::Storage(format!(
            "the log ends at {}; cannot replay until {until}",
            full.seq
        )));
    }
    let to = store::open_db(dst)?;
    let log_from = cf(&from, CF_LOG)?;
    let log_to = cf(&to, CF_LOG)?;
    let mut batch = WriteBatch::default();
    let mut n = 0usize;
    for item in from.iterator_cf(
        log_from,
        IteratorMode::From(&seq_key(Seq(1)), Direction::Forward),
    ) {
        let (k, v) = item?;
        let seq = k
            .as_ref()
            .try_into()
            .map(u64::from_be_bytes)
            .unwrap_or(u64::MAX);
        if seq > until.0 {
            break;
        }
        batch.put_cf(log_to, k, v);
        n += 1;
        if n % COPY_BATCH == 0 {
            to.write(std::mem::take(&mut batch))?;
        }
    }
    let head = Head {
        seq: until,
        chain: store::chain_at(&from, until)?,
    };
    let (key, value) = head_entry(&head)?;
    batch.put_cf(cf(&to, CF_META)?, key, value);
    to.write(batch)?;
    to.flush_wal(true)?;
    drop(to);
    let (ledger, _) = Ledger::open_rebuilt(dst, &mut |_, _| {})?;
    ledger.shutdown();
    Ok(head)
}

impl Ledger {
    /// Writes a consistent copy of the whole database (log, projections, checkpoints) into
    /// `dst`, a new directory on the same filesystem (hard links where possible). Every
    /// acknowledged event is in it. Restore: stop the server, put the copy at
    /// `database.path`, and restore the datastores (see README).
    pub fn snapshot(&self, dst: &Path) -> Result<Seq, LedgerError> {
        refuse_existing(dst)?;
        if dst.exists() {
            std::fs::remove_dir(dst)
                .map_err(|e| LedgerError::Storage(format!("{}: {e}", dst.display())))?;
        }
        self.db.flush_wal(true)?;
        let head = self.head();
        rocksdb::checkpoint::Checkpoint::new(&self.db)?.create_checkpoint(dst)?;
        Ok(head)
    }
}
