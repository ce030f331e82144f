//! Start-up catch-up, full replay and the replay-equality check of `verify`.
//!
//! Each projection resumes from its checkpoint; one whose stored version differs from the
//! code's (or that has none) is dropped and rebuilt from sequence 0.
//!
//! Folding goes through a [`RebuildCache`]: a hash map per projection in front of RocksDB. A
//! projection rebuilt from 0 starts from an empty column family, so while its map has never
//! been spilled the map *is* its whole state and a miss needs no database read. At the end its
//! state is sorted and bulk-loaded as an SST file (no memtable, no compaction of the rebuild's
//! churn). If the maps outgrow [`CACHE_ENTRIES`], everything is spilled in write batches and
//! folding continues with database reads for misses.
//!
//! Crash safety: a reset projection carries the checkpoint version [`REBUILDING`] until its
//! final state and real checkpoint are written, so a crash mid-rebuild makes the next start
//! rebuild it again from 0. A projection resumed from a real checkpoint writes its state and
//! checkpoint together in every batch (a crash resumes from the last batch).

use super::rebuild_cache::{CachedTx, RebuildCache};
use super::store::{
    self, cf, cf_options, chain_at, read_checkpoint, Checkpoint, Head, MemoryOptions,
    CF_CHECKPOINTS,
};
use super::LedgerError;
use media_ledger_events::{codec, Seq};
use media_ledger_projections::names;
use media_ledger_projections::ALL;
use rocksdb::{WriteBatch, DB};
use std::path::Path;
use std::time::Instant;

/// Events folded between two progress reports / batches of a resumed projection.
const REBUILD_BATCH: u64 = 50_000;

/// Cached entries (over all projections) before the cache is spilled to the database.
pub const CACHE_ENTRIES: usize = 6_000_000;

/// Checkpoint version of a projection whose rebuild has not finished.
const REBUILDING: u32 = u32::MAX;

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
        let start = match read_checkpoint(db, p.name())? {
            Some(cp) if cp.version == p.version() => Start::Resume(cp.seq),
            Some(cp) => {
                if cp.version == REBUILDING {
                    tracing::info!(
                        projection = p.name(),
                        "an earlier rebuild did not finish: rebuilding from sequence 0"
                    );
                } else {
                    tracing::info!(
                        projection = p.name(),
                        stored = cp.version,
                        current = p.version(),
                        "projection version changed: rebuilding from sequence 0"
                    );
                }
                reset(db, p.name())?;
                Start::Fresh
            }
            None => {
                reset(db, p.name())?;
                Start::Fresh
            }
        };
        match start {
            Start::Resume(from) if from > head.seq => {
                return Err(LedgerError::Corrupt {
                    seq: Seq(head.seq.0 + 1),
                    reason: format!(
                        "projection {} is at {from}, past the end of the log",
                        p.name()
                    ),
                })
            }
            Start::Resume(from) if from == head.seq => {}
            other => starts.push((i, other)),
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
    let starts: Vec<_> = (0..ALL.len()).map(|i| (i, Start::Fresh)).collect();
    run_from(db, head, &starts, progress)
}

/// Where a projection's fold begins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Start {
    /// From sequence 0 into an empty column family.
    Fresh,
    /// After this sequence, over stored state.
    Resume(Seq),
}

impl Start {
    fn after(self) -> Seq {
        match self {
            Start::Fresh => Seq(0),
            Start::Resume(s) => s,
        }
    }
}

fn reset(db: &mut DB, name: &str) -> Result<(), LedgerError> {
    db.drop_cf(name)?;
    // Until the next open this column family has a block cache of its own (RocksDB's
    // default size): a rebuild is rare and the next start shares the cache again.
    db.create_cf(
        name,
        &cf_options(None, MemoryOptions::default().write_buffer_bytes),
    )?;
    let cp = Checkpoint {
        version: REBUILDING,
        seq: Seq(0),
    };
    db.put_cf(
        cf(db, CF_CHECKPOINTS)?,
        name.as_bytes(),
        codec::encode(&cp)?,
    )?;
    Ok(())
}

/// Which fold thread a projection runs on: the log is decoded once, on its own thread, and
/// the projections fold in two groups side by side (the machine has 2 cores; the split puts
/// about half the fold work in each group).
fn group_of(name: &str) -> usize {
    if name == names::HASH_REFS.as_str() || name == names::DATASTORE_SIZES.as_str() {
        1
    } else {
        0
    }
}

/// Folds `(projection index, start)` pairs up to `head` in one pass over the log, then
/// writes final state and checkpoints.
fn run_from(
    db: &DB,
    head: Head,
    starts: &[(usize, Start)],
    progress: Progress<'_>,
) -> Result<ReplayReport, LedgerError> {
    const BATCH: usize = 2048;
    let started = Instant::now();
    let Some(from) = starts.iter().map(|(_, s)| s.after()).min() else {
        return Ok(ReplayReport {
            events: 0,
            seconds: 0.0,
        });
    };
    let total = head.seq.0 - from.0;
    let prev = chain_at(db, from)?;
    let mut groups: Vec<Vec<(usize, Start)>> = vec![Vec::new(), Vec::new()];
    for &(i, s) in starts {
        let g = ALL.get(i).map_or(0, |p| group_of(p.name()));
        if let Some(group) = groups.get_mut(g) {
            group.push((i, s));
        }
    }
    groups.retain(|g| !g.is_empty());
    let budget = CACHE_ENTRIES / groups.len().max(1);
    let done = std::sync::atomic::AtomicU64::new(0);
    let dir = db.path().to_owned();

    std::thread::scope(|scope| -> Result<(), LedgerError> {
        let mut senders = Vec::new();
        let mut workers = Vec::new();
        for (n, group) in groups.iter().enumerate() {
            let (tx, rx) = std::sync::mpsc::sync_channel::<
                std::sync::Arc<Vec<media_ledger_events::Envelope>>,
            >(8);
            senders.push(tx);
            let (done, dir) = (&done, &dir);
            workers.push(scope.spawn(move || {
                fold_group(db, group, rx, head, budget, (n == 0).then_some(done), dir)
            }));
        }
        let producer = scope.spawn(move || {
            let mut batch = Vec::with_capacity(BATCH);
            let send = |batch: Vec<media_ledger_events::Envelope>| -> Result<(), LedgerError> {
                let shared = std::sync::Arc::new(batch);
                for s in &senders {
                    s.send(shared.clone()).map_err(|_| LedgerError::Closed)?;
                }
                Ok(())
            };
            store::walk_log(db, Seq(from.0 + 1), prev, |env| {
                batch.push(env);
                if batch.len() >= BATCH {
                    send(std::mem::replace(&mut batch, Vec::with_capacity(BATCH)))?;
                }
                Ok(())
            })?;
            if !batch.is_empty() {
                send(batch)?;
            }
            Ok::<(), LedgerError>(())
        });
        while !producer.is_finished() || workers.iter().any(|w| !w.is_finished()) {
            std::thread::sleep(std::time::Duration::from_millis(100));
            progress(done.load(std::sync::atomic::Ordering::Relaxed), total);
        }
        // A fold error closes its channel, which stops the reader with `Closed`: report the
        // fold's error first.
        let joined = |r: std::thread::Result<Result<(), LedgerError>>| {
            r.unwrap_or_else(|_| Err(LedgerError::Storage("a replay thread panicked".into())))
        };
        let mut first_err = None;
        for w in workers {
            if let Err(e) = joined(w.join()) {
                first_err.get_or_insert(e);
            }
        }
        if let Err(e) = joined(producer.join()) {
            first_err.get_or_insert(e);
        }
        first_err.map_or(Ok(()), Err)
    })?;

    let mut batch = WriteBatch::default();
    let checkpoints = cf(db, CF_CHECKPOINTS)?;
    for &(i, start) in starts {
        if let (Start::Fresh, Some(p)) = (start, ALL.get(i)) {
            let cp = Checkpoint {
                version: p.version(),
                seq: head.seq,
            };
            batch.put_cf(checkpoints, p.name().as_bytes(), codec::encode(&cp)?);
        }
    }
    db.write(batch)?;
    db.flush_wal(true)?;
    progress(total, total);
    Ok(ReplayReport {
        events: total,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// One fold thread: applies its projections to every batch of envelopes, keeping resumed
/// projections' state and checkpoint together batch by batch, spilling the cache when it
/// outgrows `budget`, and at the end writing the final state of fresh projections.
fn fold_group(
    db: &DB,
    starts: &[(usize, Start)],
    rx: std::sync::mpsc::Receiver<std::sync::Arc<Vec<media_ledger_events::Envelope>>>,
    head: Head,
    budget: usize,
    done: Option<&std::sync::atomic::AtomicU64>,
    dir: &Path,
) -> Result<(), LedgerError> {
    let mut cache = RebuildCache::new(starts);
    let cfs: Vec<&rocksdb::ColumnFamily> = ALL
        .iter()
        .map(|p| cf(db, p.name()))
        .collect::<Result<_, _>>()?;
    let mut in_batch = 0u64;
    for batch in rx {
        for env in batch.iter() {
            for &(i, start) in starts {
                if env.seq <= start.after() {
                    continue;
                }
                let (Some(p), Some(cf), Some(space)) =
                    (ALL.get(i), cfs.get(i), cache.spaces.get_mut(i))
                else {
                    return Err(LedgerError::Storage("projection index".into()));
                };
                let mut tx = CachedTx {
                    db,
                    cf,
                    space,
                    complete: cache.complete.get(i).copied().unwrap_or(false),
                    entries: &mut cache.entries,
                };
                p.apply(env, &mut tx).map_err(|e| LedgerError::Corrupt {
                    seq: env.seq,
                    reason: format!("projection {} cannot apply it: {e}", p.name()),
                })?;
            }
        }
        let n = batch.len() as u64;
        if let Some(d) = done {
            d.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
        }
        in_batch += n;
        if in_batch >= REBUILD_BATCH {
            in_batch = 0;
            if let Some(last) = batch.last() {
                write_resumed(db, &mut cache, starts, last.seq)?;
            }
            if cache.entries > budget {
                tracing::info!(
                    entries = cache.entries,
                    "rebuild cache full: spilling to the database"
                );
                cache.spill(db, true)?;
            }
        }
    }
    write_resumed(db, &mut cache, starts, head.seq)?;
    for &(i, start) in starts {
        if start == Start::Fresh {
            cache.finish(db, i, dir)?;
        }
    }
    Ok(())
}

/// Writes the dirty state of resumed projections with their checkpoint at `seq`.
fn write_resumed(
    db: &DB,
    cache: &mut RebuildCache,
    starts: &[(usize, Start)],
    seq: Seq,
) -> Result<(), LedgerError> {
    let mut batch = WriteBatch::default();
    let checkpoints = cf(db, CF_CHECKPOINTS)?;
    for &(i, start) in starts {
        if start == Start::Fresh {
            continue;
        }
        let (Some(p), Some(space)) = (ALL.get(i), cache.spaces.get_mut(i)) else {
            continue;
        };
        let cf = cf(db, p.name())?;
        for (k, e) in space.iter().filter(|(_, e)| e.dirty) {
            match &e.value {
                Some(v) => batch.put_cf(cf, k, v),
                None => batch.delete_cf(cf, k),
            }
        }
        cache.entries = cache.entries.saturating_sub(space.len());
        space.clear();
        let cp = Checkpoint {
            version: p.version(),
            seq,
        };
        batch.put_cf(checkpoints, p.name().as_bytes(), codec::encode(&cp)?);
    }
    db.write(batch)?;
    Ok(())
}
