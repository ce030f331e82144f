//! In-memory state for every projection: what tests fold into, and what `verify` compares the
//! stored column families against.

use crate::{KvRead, KvTx, Projection, ProjectionError, ALL};
use media_ledger_events::Envelope;
use std::collections::BTreeMap;

/// One projection's key space in memory.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemoryKv(pub BTreeMap<Vec<u8>, Vec<u8>>);

impl KvRead for MemoryKv {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, ProjectionError> {
        Ok(self.0.get(key).cloned())
    }
}

impl KvTx for MemoryKv {
    fn put(&mut self, key: &[u8], value: Vec<u8>) {
        self.0.insert(key.to_vec(), value);
    }
    fn delete(&mut self, key: &[u8]) {
        self.0.remove(key);
    }
}

/// The state of every projection in [`ALL`], in memory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemoryState {
    /// Key spaces by projection name.
    pub spaces: BTreeMap<&'static str, MemoryKv>,
}

impl Default for MemoryState {
    fn default() -> Self {
        Self {
            spaces: ALL
                .iter()
                .map(|p| (p.name(), MemoryKv::default()))
                .collect(),
        }
    }
}

impl MemoryState {
    /// Folds one event into every projection.
    pub fn apply(&mut self, env: &Envelope) -> Result<(), ProjectionError> {
        for p in ALL {
            self.apply_one(*p, env)?;
        }
        Ok(())
    }

    /// Folds one event into one projection.
    pub fn apply_one(&mut self, p: &dyn Projection, env: &Envelope) -> Result<(), ProjectionError> {
        let kv = self.spaces.entry(p.name()).or_default();
        p.apply(env, kv)
    }

    /// The key space of the named projection.
    pub fn space(&self, name: &str) -> Option<&MemoryKv> {
        self.spaces.get(name)
    }
}
