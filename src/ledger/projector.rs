//! Start-up catch-up, full replay and the replay-equality check of `verify`.
//!
//! Each projection resumes from its checkpoint; one whose stored version differs from the
//! code's is dropped and rebuilt from sequence 0. Rebuild batches are written unsynced with
//! their checkpoint (a crash mid-rebuild resumes from the last batch) and synced at the end.

use super::overlay::Overlay;
use super::store::{self, cf, chain_at, read_checkpoint, Checkpoint, Head, CF_CHECKPOINTS};
use super::LedgerError;
use media_ledger_events::{codec, Seq};
use media_ledger_projections::memory::MemoryState;
use media_ledger_projections::ALL;
use rocksdb::{IteratorMode, Options, WriteBatch, DB};
use std::time::Instant;

/// Events folded between two rebuild batches.
const REBUILD_BATCH: u64 = 50_000;

/// Progress of a replay: `(events done, events to do)`.
pub type Progress<'a> = &'a mut dyn FnMut(u64, u64);

/// What a replay did.
#[derive(Debug, Clone, Copy)]
pub struct ReplayReport {
    /// Events folded.
    pub events: u64,
    /// Wall time.
    pub seconds: f64,
}

/// Brings every projection up to `head`: resumes from checkpoints, rebuilds changed versions.
pub(crate) fn catch_up(
    db: &mut DB,
    head: Head,
    progress: Progress<'_>,
) -> Result<ReplayReport, LedgerError> {
    let mut starts = Vec::new();
    for (i, p) in ALL.iter().enumerate() {
        let from = match read_checkpoint(db, p.name())? {
            Some(cp) if cp.version == p.version() => cp.seq,
            Some(cp) => {
                tracing::info!(
                    projection = p.name(),
                    stored = cp.version,
                    current = p.version(),
                    "projection version changed: rebuilding from sequence 0"
                );
                reset(db, p.name())?;
                Seq(0)
            }
            None => {
                reset(db, p.name())?;
                Seq(0)
            }
        };
        if from > head.seq {
            return Err(LedgerError::Corrupt {
                seq: Seq(head.seq.0 + 1),
                reason: format!(
                    "projection {} is at {from}, past the end of the log",
                    p.name()
                ),
            });
        }
        if from < head.seq {
            starts.push((i, from));
        }
    }
    run_from(db, head, &starts, progress)
}

/// Drops and rebuilds every projection from sequence 0.
pub(crate) fn rebuild_all(
    db: &mut DB,
    head: Head,
    progress: Progress<'_>,
) -> Result<ReplayReport, LedgerError> {
    for p in ALL {
        reset(db, p.name())?;
    }
    let starts: Vec<_> = (0..ALL.len()).map(|i| (i, Seq(0))).collect();
    run_from(db, head, &starts, progress)
}

fn reset(db: &mut DB, name: &str) -> Result<(), LedgerError> {
    db.drop_cf(name)?;
    let mut opts = Options::default();
    let mut block = rocksdb::BlockBasedOptions::default();
    block.set_bloom_filter(10.0, false);
    opts.set_block_based_table_factory(&block);
    db.create_cf(name, &opts)?;
    // An empty state is the state at sequence 0: say so, so that a ledger closed before its
    // first commit still verifies.
    let version = ALL
        .iter()
        .find(|p| p.name() == name)
        .map_or(0, |p| p.version());
    let cp = Checkpoint {
        version,
        seq: Seq(0),
    };
    db.put_cf(
        cf(db, CF_CHECKPOINTS)?,
        name.as_bytes(),
        codec::encode(&cp)?,
    )?;
    Ok(())
}

/// Folds `(projection index, resume after)` pairs up to `head` in one pass over the log.
fn run_from(
    db: &DB,
    head: Head,
    starts: &[(usize, Seq)],
    progress: Progress<'_>,
) -> Result<ReplayReport, LedgerError> {
    let started = Instant::now();
    let Some(from) = starts.iter().map(|(_, s)| *s).min() else {
        return Ok(ReplayReport {
            events: 0,
            seconds: 0.0,
        });
    };
    let total = head.seq.0 - from.0;
    let mut overlay = Overlay::new();
    let mut done = 0u64;
    let mut in_batch = 0u64;
    let prev = chain_at(db, from)?;
    store::walk_log(db, Seq(from.0 + 1), prev, |env| {
        for &(i, after) in starts {
            if env.seq > after {
                let p = ALL
                    .get(i)
                    .ok_or_else(|| LedgerError::Storage("projection index".into()))?;
                let mut tx = overlay.tx(db, i)?;
                p.apply(&env, &mut tx).map_err(|e| LedgerError::Corrupt {
                    seq: env.seq,
                    reason: format!("projection {} cannot apply it: {e}", p.name()),
                })?;
            }
        }
        done += 1;
        in_batch += 1;
        if in_batch >= REBUILD_BATCH {
            flush(db, &mut overlay, starts, env.seq)?;
            in_batch = 0;
            progress(done, total);
        }
        Ok(())
    })?;
    flush(db, &mut overlay, starts, head.seq)?;
    db.flush_wal(true)?;
    progress(done, total);
    Ok(ReplayReport {
        events: done,
        seconds: started.elapsed().as_secs_f64(),
    })
}

fn flush(
    db: &DB,
    overlay: &mut Overlay,
    starts: &[(usize, Seq)],
    seq: Seq,
) -> Result<(), LedgerError> {
    let mut batch = WriteBatch::default();
    overlay.drain_into(db, &mut batch)?;
    let checkpoints = cf(db, CF_CHECKPOINTS)?;
    for &(i, after) in starts {
        if let Some(p) = ALL.get(i) {
            let cp = Checkpoint {
                version: p.version(),
                seq: seq.max(after),
            };
            batch.put_cf(checkpoints, p.name().as_bytes(), codec::encode(&cp)?);
        }
    }
    db.write(batch)?;
    Ok(())
}

/// The first difference between a stored projection and a fresh replay, if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Divergence {
    /// The projection.
    pub projection: &'static str,
    /// What differs.
    pub detail: String,
}

/// Replays the log into memory and compares every stored projection and checkpoint with it.
pub(crate) fn compare_with_replay(db: &DB, head: Head) -> Result<Option<Divergence>, LedgerError> {
    let mut fresh = MemoryState::default();
    store::verify_log(db, |env| {
        fresh.apply(&env).map_err(|e| LedgerError::Corrupt {
            seq: env.seq,
            reason: format!("replay cannot apply it: {e}"),
        })
    })?;
    for p in ALL {
        match read_checkpoint(db, p.name())? {
            Some(cp) if cp.seq == head.seq && cp.version == p.version() => {}
            other => {
                return Ok(Some(Divergence {
                    projection: p.name(),
                    detail: format!("checkpoint {other:?}, log head {}", head.seq),
                }))
            }
        }
        let expected = fresh.space(p.name()).map(|kv| &kv.0);
        let mut expected_iter = expected.into_iter().flatten();
        for item in db.iterator_cf(cf(db, p.name())?, IteratorMode::Start) {
            let (k, v) = item?;
            match expected_iter.next() {
                Some((ek, ev)) if ek.as_slice() == &*k && ev.as_slice() == &*v => {}
                Some((ek, _)) if ek.as_slice() == &*k => {
                    return Ok(Some(Divergence {
                        projection: p.name(),
                        detail: format!("value of key {} differs", hex(&k)),
                    }))
                }
                Some((ek, _)) => {
                    return Ok(Some(Divergence {
                        projection: p.name(),
                        detail: format!("stored key {} where replay has {}", hex(&k), hex(ek)),
                    }))
                }
                None => {
                    return Ok(Some(Divergence {
                        projection: p.name(),
                        detail: format!("extra stored key {}", hex(&k)),
                    }))
                }
            }
        }
        if let Some((ek, _)) = expected_iter.next() {
            return Ok(Some(Divergence {
                projection: p.name(),
                detail: format!("stored state lacks key {}", hex(ek)),
            }));
        }
    }
    Ok(None)
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
