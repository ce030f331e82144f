//! The maps in front of RocksDB during a replay (see `projector`): per projection, a hash
//! map of the keys touched; for a projection rebuilt from 0 and never spilled, the map is its
//! whole state, written at the end as one sorted SST file.

use super::projector::Start;
use super::store::cf;
use super::store::cf_options;
use super::LedgerError;
use media_ledger_projections::{KvRead, KvTx, ProjectionError, ALL};
use rocksdb::{WriteBatch, DB};
use rustc_hash::FxHashMap as HashMap;
use std::path::Path;

/// One cached key: its value (`None` = deleted) and whether the database lacks it.
pub(crate) struct Entry {
    pub(crate) value: Option<Vec<u8>>,
    pub(crate) dirty: bool,
}

/// The maps in front of the database during a replay (see the module docs).
pub(crate) struct RebuildCache {
    pub(crate) spaces: Vec<HashMap<Vec<u8>, Entry>>,
    /// Per projection: the map holds the whole state (fresh and never spilled).
    pub(crate) complete: Vec<bool>,
    pub(crate) entries: usize,
}

impl RebuildCache {
    pub(crate) fn new(starts: &[(usize, Start)]) -> Self {
        let mut complete = vec![false; ALL.len()];
        for &(i, s) in starts {
            if let Some(c) = complete.get_mut(i) {
                *c = s == Start::Fresh;
            }
        }
        Self {
            spaces: ALL.iter().map(|_| HashMap::default()).collect(),
            complete,
            entries: 0,
        }
    }

    /// Writes every dirty entry into batches; with `evict`, empties the maps and marks them
    /// incomplete.
    pub(crate) fn spill(&mut self, db: &DB, evict: bool) -> Result<(), LedgerError> {
        for (i, p) in ALL.iter().enumerate() {
            let cf = cf(db, p.name())?;
            let Some(space) = self.spaces.get_mut(i) else {
                continue;
            };
            let mut batch = WriteBatch::default();
            for (k, e) in space.iter_mut().filter(|(_, e)| e.dirty) {
                match &e.value {
                    Some(v) => batch.put_cf(cf, k, v),
                    None => batch.delete_cf(cf, k),
                }
                e.dirty = false;
                if batch.len() >= 100_000 {
                    db.write(std::mem::take(&mut batch))?;
                }
            }
            db.write(batch)?;
            if evict {
                space.clear();
                if let Some(c) = self.complete.get_mut(i) {
                    *c = false;
                }
            }
        }
        if evict {
            self.entries = 0;
        }
        Ok(())
    }

    /// Writes the final state of projection `i`: a complete map as one sorted SST file
    /// ingested into its (empty) column family, otherwise its dirty entries.
    pub(crate) fn finish(&mut self, db: &DB, i: usize, dir: &Path) -> Result<(), LedgerError> {
        let Some(p) = ALL.get(i) else { return Ok(()) };
        let cf = cf(db, p.name())?;
        let complete = self.complete.get(i).copied().unwrap_or(false);
        let Some(space) = self.spaces.get_mut(i) else {
            return Ok(());
        };
        if !complete {
            let mut batch = WriteBatch::default();
            for (k, e) in space.iter().filter(|(_, e)| e.dirty) {
                match &e.value {
                    Some(v) => batch.put_cf(cf, k, v),
                    None => batch.delete_cf(cf, k),
                }
            }
            db.write(batch)?;
            space.clear();
            return Ok(());
        }
        let mut live: Vec<(Vec<u8>, Vec<u8>)> = space
            .drain()
            .filter_map(|(k, e)| e.value.map(|v| (k, v)))
            .collect();
        if live.is_empty() {
            return Ok(());
        }
        live.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        let path = dir.join(format!("rebuild-{}.sst", p.name()));
        // Uncompressed: the rebuild is bound by CPU, and compaction recompresses later.
        let mut opts = cf_options(
            None,
            super::store::MemoryOptions::default().write_buffer_bytes,
        );
        opts.set_compression_type(rocksdb::DBCompressionType::None);
        let mut writer = rocksdb::SstFileWriter::create(&opts);
        writer.open(&path)?;
        for (k, v) in &live {
            writer.put(k, v)?;
        }
        writer.finish()?;
        drop(live);
        db.ingest_external_file_cf(cf, vec![&path])?;
        if let Err(e) = std::fs::remove_file(&path) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(path = %path.display(), error = %e, "cannot remove a rebuild file");
            }
        }
        Ok(())
    }
}

/// One projection's view of the cache.
pub(crate) struct CachedTx<'a> {
    pub(crate) db: &'a DB,
    pub(crate) cf: &'a rocksdb::ColumnFamily,
    pub(crate) space: &'a mut HashMap<Vec<u8>, Entry>,
    pub(crate) complete: bool,
    pub(crate) entries: &'a mut usize,
}

impl KvRead for CachedTx<'_> {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, ProjectionError> {
        match self.space.get(key) {
            Some(e) => Ok(e.value.clone()),
            None if self.complete => Ok(None),
            None => self
                .db
                .get_cf(self.cf, key)
                .map_err(|e| ProjectionError::Store(e.to_string())),
        }
    }
}

impl KvTx for CachedTx<'_> {
    fn put(&mut self, key: &[u8], value: Vec<u8>) {
        if let Some(e) = self.space.get_mut(key) {
            e.value = Some(value);
            e.dirty = true;
        } else {
            self.space.insert(
                key.to_vec(),
                Entry {
                    value: Some(value),
                    dirty: true,
                },
            );
            *self.entries += 1;
        }
    }
    fn delete(&mut self, key: &[u8]) {
        if let Some(e) = self.space.get_mut(key) {
            e.value = None;
            e.dirty = true;
        } else {
            self.space.insert(
                key.to_vec(),
                Entry {
                    value: None,
                    dirty: true,
                },
            );
            *self.entries += 1;
        }
    }
}
