//! Uncommitted projection writes, and the readers that see them.
//!
//! A group of events is folded into an [`Overlay`] (one map per projection) before anything is
//! written; reads inside the group see the group's own earlier writes, then the database. The
//! overlay then goes into the same `WriteBatch` as the log records and checkpoints.

use super::store::cf;
use super::LedgerError;
use media_ledger_projections::{KvRead, KvTx, ProjectionError, ProjectionName, ALL};
use rocksdb::{WriteBatch, DB};
use std::collections::HashMap;

type Space = HashMap<Vec<u8>, Option<Vec<u8>>>;

/// One `(key, value)` of a scan.
pub(crate) type KeyValue = (Vec<u8>, Vec<u8>);

/// Pending writes of every projection in `ALL`, by position.
pub(crate) struct Overlay {
    spaces: Vec<Space>,
}

impl Overlay {
    pub(crate) fn new() -> Self {
        Self {
            spaces: ALL.iter().map(|_| Space::new()).collect(),
        }
    }

    /// A transaction over projection `index`.
    pub(crate) fn tx<'a>(
        &'a mut self,
        db: &'a DB,
        index: usize,
    ) -> Result<ScopedTx<'a>, LedgerError> {
        let name = ALL
            .get(index)
            .map(|p| p.name())
            .ok_or_else(|| LedgerError::Storage(format!("no projection {index}")))?;
        let cf = cf(db, name)?;
        let space = self
            .spaces
            .get_mut(index)
            .ok_or_else(|| LedgerError::Storage(format!("no projection {index}")))?;
        Ok(ScopedTx { db, cf, space })
    }

    /// A read-only view of projection `name`, overlay first.
    pub(crate) fn read<'a>(
        &'a self,
        db: &'a DB,
        name: ProjectionName,
    ) -> Result<ScopedRead<'a>, LedgerError> {
        let name = name.as_str();
        let index = ALL
            .iter()
            .position(|p| p.name() == name)
            .ok_or_else(|| LedgerError::Storage(format!("no projection {name}")))?;
        let space = self
            .spaces
            .get(index)
            .ok_or_else(|| LedgerError::Storage(format!("no projection {name}")))?;
        Ok(ScopedRead {
            db,
            cf: cf(db, name)?,
            space,
        })
    }

    /// This group's pending writes of projection `name` (`None` = deleted).
    pub(crate) fn entries<'a>(
        &'a self,
        _db: &DB,
        name: ProjectionName,
    ) -> Result<impl Iterator<Item = (&'a [u8], Option<&'a [u8]>)> + 'a, LedgerError> {
        let index = ALL
            .iter()
            .position(|p| p.name() == name.as_str())
            .ok_or_else(|| LedgerError::Storage(format!("no projection {name}")))?;
        let space = self
            .spaces
            .get(index)
            .ok_or_else(|| LedgerError::Storage(format!("no projection {name}")))?;
        Ok(space.iter().map(|(k, v)| (k.as_slice(), v.as_deref())))
    }

    /// Every `(key, value)` of projection `name` under `prefix`: committed state with this
    /// group's pending writes on top, in key order.
    pub(crate) fn scan(
        &self,
        db: &DB,
        name: ProjectionName,
        prefix: &[u8],
    ) -> Result<Vec<KeyValue>, LedgerError> {
        let mut all = std::collections::BTreeMap::new();
        let handle = cf(db, name.as_str())?;
        for item in db.iterator_cf(
            handle,
            rocksdb::IteratorMode::From(prefix, rocksdb::Direction::Forward),
        ) {
            let (k, v) = item?;
            if !k.starts_with(prefix) {
                break;
            }
            all.insert(k.to_vec(), v.to_vec());
        }
        for (k, v) in self.entries(db, name)? {
            if k.starts_with(prefix) {
                match v {
                    Some(v) => all.insert(k.to_vec(), v.to_vec()),
                    None => all.remove(k),
                };
            }
        }
        Ok(all.into_iter().collect())
    }

    /// Drops the pending writes of one projection (after it failed).
    pub(crate) fn discard(&mut self, index: usize) {
        if let Some(s) = self.spaces.get_mut(index) {
            s.clear();
        }
    }

    /// Moves every pending write into `batch`.
    pub(crate) fn drain_into(
        &mut self,
        db: &DB,
        batch: &mut WriteBatch,
    ) -> Result<(), LedgerError> {
        for (p, space) in ALL.iter().zip(self.spaces.iter_mut()) {
            let cf = cf(db, p.name())?;
            for (k, v) in space.drain() {
                match v {
                    Some(v) => batch.put_cf(cf, k, v),
                    None => batch.delete_cf(cf, k),
                }
            }
        }
        Ok(())
    }
}

fn db_get(
    db: &DB,
    cf: &rocksdb::ColumnFamily,
    key: &[u8],
) -> Result<Option<Vec<u8>>, ProjectionError> {
    db.get_cf(cf, key)
        .map_err(|e| ProjectionError::Store(e.to_string()))
}

/// Read-write access to one projection inside a group.
pub(crate) struct ScopedTx<'a> {
    db: &'a DB,
    cf: &'a rocksdb::ColumnFamily,
    space: &'a mut Space,
}

impl KvRead for ScopedTx<'_> {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, ProjectionError> {
        match self.space.get(key) {
            Some(v) => Ok(v.clone()),
            None => db_get(self.db, self.cf, key),
        }
    }
}

impl KvTx for ScopedTx<'_> {
    fn put(&mut self, key: &[u8], value: Vec<u8>) {
        self.space.insert(key.to_vec(), Some(value));
    }
    fn delete(&mut self, key: &[u8]) {
        self.space.insert(key.to_vec(), None);
    }
}

/// Read access to one projection inside a group.
pub(crate) struct ScopedRead<'a> {
    db: &'a DB,
    cf: &'a rocksdb::ColumnFamily,
    space: &'a Space,
}

impl KvRead for ScopedRead<'_> {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, ProjectionError> {
        match self.space.get(key) {
            Some(v) => Ok(v.clone()),
            None => db_get(self.db, self.cf, key),
        }
    }
}

/// Committed state of one projection, as the HTTP layer reads it.
pub struct DbRead<'a> {
    pub(crate) db: &'a DB,
    pub(crate) cf: &'a rocksdb::ColumnFamily,
}

impl KvRead for DbRead<'_> {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, ProjectionError> {
        db_get(self.db, self.cf, key)
    }
}
