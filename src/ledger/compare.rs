//! `verify`'s second half: replay the log into memory and compare every stored projection and
//! checkpoint with it.

use super::store::{self, cf, read_checkpoint, Head};
use super::LedgerError;
use media_ledger_projections::memory::MemoryState;
use media_ledger_projections::ALL;
use rocksdb::{IteratorMode, DB};

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
