//! The event log and the projection state, in one RocksDB.
//!
//! [`Ledger`] owns the database. Writes go through one writer thread ([`writer`]) that commits
//! log records, projection state and checkpoints in one synced batch, so a write that returned
//! is durable and visible to every later read (read-your-writes). Start-up verifies the whole
//! hash chain, then brings every projection up to the head ([`projector`]).

mod command;
mod compare;
pub mod migrate;
mod overlay;
mod projector;
#[doc(hidden)]
pub mod raw;
mod rebuild_cache;
pub mod recovery;
pub mod shared;
mod store;
mod validate;
mod validate_moderation;
mod writer;
mod writer_shared;

pub use compare::Divergence;
pub use overlay::DbRead;
pub use projector::{Progress, ReplayReport};
pub use store::{Checkpoint, Head, MemoryOptions, Undecodable};
pub use writer::{Command, Committed, Conflict, PurgeRequest, UploadQuota, MAX_GROUP};

use crate::metrics::Metrics;
use media_ledger_events::codec::CodecError;
use media_ledger_events::{codec, Actor, Envelope, MediaAccessed, RequestId, Seq};
use media_ledger_projections::{ProjectionName, ALL};
use parking_lot::Mutex;
use rocksdb::{Direction, IteratorMode, DB};
use std::path::Path;
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot, watch};

/// How a cluster node reaches the shared log (`[database] backend = "postgres"`).
#[derive(Debug, Clone)]
pub struct SharedOptions {
    /// `postgres://user:password@host:port/database`.
    pub url: String,
    /// How often an idle node reads what other nodes appended.
    pub follow_interval: std::time::Duration,
}

/// Unexpired async reservations one user may hold unless configured otherwise.
pub const DEFAULT_MAX_PENDING: u64 = 32;

/// Requests queued for the writer before senders wait.
pub(crate) const QUEUE: usize = 8192;

/// Why a ledger operation failed.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    /// RocksDB failed.
    #[error("storage: {0}")]
    Storage(String),
    /// Encoding failed.
    #[error("codec: {0}")]
    Codec(#[from] CodecError),
    /// The log is damaged at `seq`.
    #[error("log corrupt at sequence {seq}: {reason}")]
    Corrupt {
        /// The first bad sequence.
        seq: Seq,
        /// What is wrong there.
        reason: String,
    },
    /// Reading projection state failed.
    #[error("projection: {0}")]
    Projection(#[from] media_ledger_projections::ProjectionError),
    /// The command contradicts the current state.
    #[error("conflict: {0}")]
    Conflict(Conflict),
    /// A projection this command is validated against has halted; the ledger refuses such
    /// commands until a restart resumes (or `replay` rebuilds) it.
    #[error("projection {0} has halted; see the server log, then `media-ledger verify`")]
    Halted(&'static str),
    /// The ledger is shutting down.
    #[error("ledger closed")]
    Closed,
    /// The shared log (a cluster's PostgreSQL) cannot be reached or refused the write:
    /// nothing of the command was recorded.
    #[error("shared log unavailable: {0}")]
    SharedLogUnavailable(String),
}

impl From<rocksdb::Error> for LedgerError {
    fn from(e: rocksdb::Error) -> Self {
        LedgerError::Storage(e.into_string())
    }
}

/// What `verify` found.
#[derive(Debug)]
pub struct VerifyReport {
    /// The last record (the chain is intact up to it).
    pub head: Head,
    /// Records whose chain is intact but which this build cannot decode, in order.
    pub undecodable: Vec<Undecodable>,
    /// The first projection that differs from a replay (only compared when every record
    /// decodes).
    pub divergence: Option<Divergence>,
}

/// The log and its projections.
pub struct Ledger {
    db: Arc<DB>,
    sender: Mutex<Option<mpsc::Sender<writer::Request>>>,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
    head_rx: watch::Receiver<Seq>,
    failed: Arc<Mutex<Vec<Option<String>>>>,
    max_pending: Arc<std::sync::atomic::AtomicU64>,
}

impl Ledger {
    /// Opens the ledger: verifies the log from where the last start's verification ended
    /// (`store::verify_log_since_verified`; the whole log is `verify`'s), catches projections
    /// up, starts the writer (its figures go to a registry of its own; see
    /// [`Ledger::open_measured`]).
    pub fn open(path: &Path, progress: Progress<'_>) -> Result<Self, LedgerError> {
        Self::open_measured(path, Arc::default(), progress)
    }

    /// [`Ledger::open`], the writer's figures (WAL syncs) recorded in `metrics`.
    pub fn open_measured(
        path: &Path,
        metrics: Arc<Metrics>,
        progress: Progress<'_>,
    ) -> Result<Self, LedgerError> {
        Self::open_with(path, metrics, MemoryOptions::default(), progress)
    }

    /// [`Ledger::open_measured`] with RocksDB's memory bounded by `memory` (the server's
    /// `[database]` settings).
    pub fn open_with(
        path: &Path,
        metrics: Arc<Metrics>,
        memory: MemoryOptions,
        progress: Progress<'_>,
    ) -> Result<Self, LedgerError> {
        Self::open_node(path, metrics, memory, None, progress)
    }

    /// [`Ledger::open_with`]; with `shared`, as a node of a cluster: the log is the shared one
    /// in PostgreSQL and the local store at `path` a cache of it (checked to be a prefix of
    /// it, then caught up before this returns).
    pub fn open_node(
        path: &Path,
        metrics: Arc<Metrics>,
        memory: MemoryOptions,
        shared: Option<SharedOptions>,
        progress: Progress<'_>,
    ) -> Result<Self, LedgerError> {
        std::fs::create_dir_all(path)
            .map_err(|e| LedgerError::Storage(format!("{}: {e}", path.display())))?;
        let mut db = store::open_db_with(path, memory)?;
        let head = store::verify_log_since_verified(&db)?;
        if head.seq.0 > 0 {
            store::write_verified(&db, &head)?;
        }
        let report = projector::catch_up(&mut db, head, progress)?;
        if report.events > 0 {
            tracing::info!(
                events = report.events,
                seconds = report.seconds,
                "projections caught up"
            );
        }
        let shared = match shared {
            None => None,
            Some(o) => {
                let mut log = shared::SharedLog::connect(&o.url)?;
                shared::check_prefix(&db, &mut log, head)?;
                Some(writer_shared::Shared {
                    log,
                    url: o.url.clone(),
                    follow_interval: o.follow_interval,
                })
            }
        };
        Self::start_node(db, head, metrics, shared)
    }

    /// Opens the ledger and rebuilds every projection from sequence 0 before starting.
    pub fn open_rebuilt(
        path: &Path,
        progress: Progress<'_>,
    ) -> Result<(Self, ReplayReport), LedgerError> {
        let mut db = store::open_db(path)?;
        // A rebuild reads every record anyway: the whole chain is checked.
        let head = store::verify_log(&db, |_| Ok(()))?;
        let report = projector::rebuild_all(&mut db, head, progress)?;
        if head.seq.0 > 0 {
            store::write_verified(&db, &head)?;
        }
        Ok((Self::start_node(db, head, Arc::default(), None)?, report))
    }

    /// Opens a ledger read-only for inspection (a running server may hold it): checks the
    /// chain and compares the projections with a fresh replay. Returns the head and the first
    /// divergence, or the first bad sequence as [`LedgerError::Corrupt`].
    pub fn verify_path(path: &Path) -> Result<(Head, Option<Divergence>), LedgerError> {
        let report = Self::verify_report(path)?;
        if let Some(u) = report.undecodable.into_iter().next() {
            return Err(LedgerError::Corrupt {
                seq: u.seq,
                reason: u.reason,
            });
        }
        Ok((report.head, report.divergence))
    }

    /// [`Ledger::verify_path`] for an operator: checks the chain of the whole log, stepping
    /// past records whose chain is intact but which this build cannot decode (all of them are
    /// reported); the projections are compared with a replay only when every record decodes.
    pub fn verify_report(path: &Path) -> Result<VerifyReport, LedgerError> {
        let db = store::open_db_read_only(path)?;
        let mut undecodable = Vec::new();
        let head = store::verify_log_with(
            &db,
            |_| Ok(()),
            |u| {
                undecodable.push(u);
                Ok(())
            },
        )?;
        let divergence = if undecodable.is_empty() {
            compare::compare_with_replay(&db, head)?
        } else {
            None
        };
        Ok(VerifyReport {
            head,
            undecodable,
            divergence,
        })
    }

    /// Opens a ledger read-only, beside a running server, as of now: reads work, every
    /// write answers [`LedgerError::Closed`]. No chain check (use `verify`).
    pub fn open_read_only(path: &Path) -> Result<Self, LedgerError> {
        let db = store::open_db_read_only(path)?;
        let head = store::read_head(&db)?.unwrap_or(Head::EMPTY);
        let (_, head_rx) = watch::channel(head.seq);
        Ok(Self {
            db: Arc::new(db),
            sender: Mutex::new(None),
            writer: Mutex::new(None),
            head_rx,
            failed: Arc::new(Mutex::new(vec![None; ALL.len()])),
            max_pending: Arc::new(std::sync::atomic::AtomicU64::new(DEFAULT_MAX_PENDING)),
        })
    }

    fn start_node(
        db: DB,
        head: Head,
        metrics: Arc<Metrics>,
        shared: Option<writer_shared::Shared>,
    ) -> Result<Self, LedgerError> {
        let db = Arc::new(db);
        let (tx, rx) = mpsc::channel(QUEUE);
        let (head_tx, head_rx) = watch::channel(head.seq);
        let failed = Arc::new(Mutex::new(vec![None; ALL.len()]));
        let max_pending = Arc::new(std::sync::atomic::AtomicU64::new(DEFAULT_MAX_PENDING));
        let w = writer::Writer {
            db: db.clone(),
            head,
            last_ms: 0,
            failed: failed.clone(),
            head_tx,
            poisoned: Arc::new(std::sync::atomic::AtomicBool::new(false)),
            max_pending_per_user: max_pending.clone(),
            metrics,
            shared,
        };
        let mut w = w;
        if w.shared.is_some() {
            // Not fatal: the node serves reads from what it holds, and its writer keeps trying.
            match w.catch_up_shared(false) {
                Ok(0) => {}
                Ok(n) => tracing::info!(events = n, "caught up with the shared log"),
                Err(e) => tracing::error!(error = %e, "cannot catch up with the shared log"),
            }
        }
        let handle = std::thread::Builder::new()
            .name("ledger-writer".into())
            .spawn(move || w.run(rx));
        let writer = match handle {
            Ok(h) => Some(h),
            Err(e) => {
                tracing::error!(error = %e, "cannot start the ledger writer");
                None
            }
        };
        Ok(Self {
            db,
            sender: Mutex::new(Some(tx)),
            writer: Mutex::new(writer),
            head_rx,
            failed,
            max_pending,
        })
    }

    /// Caps the unexpired async reservations one user may hold (at least 1); checked by the
    /// writer, so concurrent `create`s cannot overshoot it. The cap also bounds the owner
    /// lists of the `pending_uploads` projection.
    pub fn set_max_pending_per_user(&self, limit: u64) {
        self.max_pending
            .store(limit.max(1), std::sync::atomic::Ordering::Relaxed);
    }

    fn sender(&self) -> Result<mpsc::Sender<writer::Request>, LedgerError> {
        self.sender.lock().clone().ok_or(LedgerError::Closed)
    }

    /// Validates and durably records a command; returns once it is synced.
    pub async fn submit(
        &self,
        actor: Actor,
        request_id: RequestId,
        cmd: Command,
    ) -> Result<Committed, LedgerError> {
        let (reply, rx) = oneshot::channel();
        let req = writer::Request {
            cmd,
            actor,
            request_id,
            reply: Some(reply),
        };
        self.sender()?
            .send(req)
            .await
            .map_err(|_| LedgerError::Closed)?;
        rx.await.map_err(|_| LedgerError::Closed)?
    }

    /// Records a download without waiting: it rides in the next group commit. Dropped (with a
    /// debug log) when the writer's queue is full; an access figure is not worth back-pressure
    /// on downloads.
    pub fn record_access(&self, actor: Actor, request_id: RequestId, event: MediaAccessed) {
        let req = writer::Request {
            cmd: Command::Access(event),
            actor,
            request_id,
            reply: None,
        };
        if let Ok(s) = self.sender() {
            if s.try_send(req).is_err() {
                tracing::debug!("access event dropped: writer queue full");
            }
        }
    }

    /// The last committed sequence.
    pub fn head(&self) -> Seq {
        *self.head_rx.borrow()
    }

    /// A receiver that changes whenever a group commits.
    pub fn subscribe(&self) -> watch::Receiver<Seq> {
        self.head_rx.clone()
    }

    /// Read access to a projection's committed state.
    pub fn view(&self, projection: ProjectionName) -> Result<DbRead<'_>, LedgerError> {
        Ok(DbRead {
            db: &self.db,
            cf: store::cf(&self.db, projection.as_str())?,
        })
    }

    /// [`Ledger::view`] for a decision that deletes bytes: refused ([`LedgerError::Halted`])
    /// when the projection has halted, as its stored state may lack what events already
    /// committed (and acknowledged) in the halting group recorded.
    pub fn view_current(&self, projection: ProjectionName) -> Result<DbRead<'_>, LedgerError> {
        let failed = self.failed.lock();
        for (p, f) in ALL.iter().zip(failed.iter()) {
            if p.name() == projection.as_str() && f.is_some() {
                return Err(LedgerError::Halted(p.name()));
            }
        }
        drop(failed);
        self.view(projection)
    }

    /// Visits every `(key, value)` of a projection whose key starts with `prefix`.
    pub fn scan(
        &self,
        projection: ProjectionName,
        prefix: &[u8],
        mut visit: impl FnMut(&[u8], &[u8]) -> Result<(), LedgerError>,
    ) -> Result<(), LedgerError> {
        let cf = store::cf(&self.db, projection.as_str())?;
        for item in self
            .db
            .iterator_cf(cf, IteratorMode::From(prefix, Direction::Forward))
        {
            let (k, v) = item?;
            if !k.starts_with(prefix) {
                break;
            }
            visit(&k, &v)?;
        }
        Ok(())
    }

    /// Visits `(key, value)` pairs of a projection whose key starts with `prefix`, from the
    /// last key `<= start` downwards, while `visit` returns `Ok(true)`.
    pub fn scan_rev(
        &self,
        projection: ProjectionName,
        prefix: &[u8],
        start: &[u8],
        mut visit: impl FnMut(&[u8], &[u8]) -> Result<bool, LedgerError>,
    ) -> Result<(), LedgerError> {
        let cf = store::cf(&self.db, projection.as_str())?;
        for item in self
            .db
            .iterator_cf(cf, IteratorMode::From(start, Direction::Reverse))
        {
            let (k, v) = item?;
            if !k.starts_with(prefix) {
                if k.as_ref() < prefix {
                    break;
                }
                continue;
            }
            if !visit(&k, &v)? {
                break;
            }
        }
        Ok(())
    }

    /// What RocksDB holds in memory now: all memtables together, and the shared block
    /// cache's usage (for the memory gauges; `[database] write_buffer_bytes` and
    /// `block_cache_bytes` bound them).
    pub fn memory_usage(&self) -> (u64, u64) {
        let mut memtables = 0u64;
        let mut cache = 0u64;
        for name in [store::CF_LOG, store::CF_META, store::CF_CHECKPOINTS]
            .into_iter()
            .chain(ALL.iter().map(|p| p.name()))
        {
            if let Some(cf) = self.db.cf_handle(name) {
                let prop = |p: &str| {
                    self.db
                        .property_int_value_cf(cf, p)
                        .ok()
                        .flatten()
                        .unwrap_or(0)
                };
                memtables += prop("rocksdb.cur-size-all-mem-tables");
                // One cache shared by every family: each reports the same figure.
                cache = cache.max(prop("rocksdb.block-cache-usage"));
            }
        }
        (memtables, cache)
    }

    /// The checkpoint sequence of every projection (for the lag metric).
    pub fn checkpoints(&self) -> Vec<(&'static str, Seq)> {
        ALL.iter()
            .filter_map(|p| {
                store::read_checkpoint(&self.db, p.name())
                    .ok()
                    .flatten()
                    .map(|c| (p.name(), c.seq))
            })
            .collect()
    }

    /// The envelope at `seq`, if the log has it.
    pub fn event_at(&self, seq: Seq) -> Result<Option<Envelope>, LedgerError> {
        let mut found = None;
        read_events(&self.db, seq, seq, |env| {
            found = Some(env);
            false
        })?;
        Ok(found.filter(|e| e.seq == seq))
    }

    /// Projections halted by an invariant violation, with the reason.
    pub fn failed_projections(&self) -> Vec<(&'static str, String)> {
        let failed = self.failed.lock();
        ALL.iter()
            .zip(failed.iter())
            .filter_map(|(p, f)| f.clone().map(|f| (p.name(), f)))
            .collect()
    }

    /// Reads committed envelopes in `[from, to]`, in order (no chain check: see `verify`).
    pub fn events(
        &self,
        from: Seq,
        to: Seq,
        visit: impl FnMut(Envelope) -> bool,
    ) -> Result<(), LedgerError> {
        read_events(&self.db, from, to, visit)
    }

    /// Reads envelopes of the ledger at `path` read-only (beside a running server).
    pub fn events_at(
        path: &Path,
        from: Seq,
        to: Seq,
        visit: impl FnMut(Envelope) -> bool,
    ) -> Result<(), LedgerError> {
        read_events(&store::open_db_read_only(path)?, from, to, visit)
    }

    /// Reads the records of the ledger at `path` read-only, stepping past those this build
    /// cannot decode (handed over as [`Undecodable`]): the `events` command.
    pub fn log_at(
        path: &Path,
        from: Seq,
        to: Seq,
        mut visit: impl FnMut(Result<Envelope, Undecodable>) -> bool,
    ) -> Result<(), LedgerError> {
        read_log(&store::open_db_read_only(path)?, from, to, |e| Ok(visit(e)))
    }

    /// Halts a projection as if it had failed: later events skip it and its checkpoint stays
    /// where it is, so the next open resumes it from that checkpoint. For recovery tests.
    #[doc(hidden)]
    pub fn halt_projection(&self, name: ProjectionName, reason: &str) {
        if let Some(i) = ALL.iter().position(|p| p.name() == name.as_str()) {
            if let Some(slot) = self.failed.lock().get_mut(i) {
                *slot = Some(reason.to_owned());
            }
        }
    }

    /// Stops the writer after it has committed everything queued.
    pub fn shutdown(&self) {
        self.sender.lock().take();
        if let Some(h) = self.writer.lock().take() {
            if h.join().is_err() {
                tracing::error!("ledger writer panicked");
            }
        }
    }
}

fn read_events(
    db: &DB,
    from: Seq,
    to: Seq,
    mut visit: impl FnMut(Envelope) -> bool,
) -> Result<(), LedgerError> {
    read_log(db, from, to, |entry| match entry {
        Ok(env) => Ok(visit(env)),
        Err(u) => Err(LedgerError::Corrupt {
            seq: u.seq,
            reason: u.reason,
        }),
    })
}

/// Reads records in `[from, to]`, in order. A record that chains to the stored chain value of
/// its predecessor is decoded as authentic (see `codec::decode_record`); one that does not is
/// decoded with the standard limit (tools print a damaged log). A record that cannot be decoded
/// is handed over as [`Undecodable`].
fn read_log(
    db: &DB,
    from: Seq,
    to: Seq,
    mut visit: impl FnMut(Result<Envelope, Undecodable>) -> Result<bool, LedgerError>,
) -> Result<(), LedgerError> {
    let log = store::cf(db, store::CF_LOG)?;
    let start = store::seq_key(from);
    let mut prev: Option<(Seq, codec::Chain)> = None;
    for item in db.iterator_cf(log, IteratorMode::From(&start, Direction::Forward)) {
        let (k, v) = item?;
        let seq = Seq(k
            .as_ref()
            .try_into()
            .map(u64::from_be_bytes)
            .unwrap_or(u64::MAX));
        if seq > to {
            break;
        }
        let prev_chain = match prev {
            Some((p, chain)) if p.0 + 1 == seq.0 => Some(chain),
            _ => store::chain_at(db, Seq(seq.0.saturating_sub(1))).ok(),
        };
        let decoded = match prev_chain.map(|c| codec::check_chain(&c, seq, &v)) {
            Some(Ok((chain, body))) => {
                prev = Some((seq, chain));
                codec::decode_checked_body(seq, body)
            }
            _ => {
                prev = None;
                codec::decode_record_unchecked(&v)
            }
        };
        let entry = decoded.map_err(|e| Undecodable {
            seq,
            reason: e.to_string(),
        });
        if !visit(entry)? {
            break;
        }
    }
    Ok(())
}

impl Drop for Ledger {
    fn drop(&mut self) {
        self.shutdown();
    }
}
