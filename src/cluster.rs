//! The work that must run on one node at a time, and who runs it. A single node runs it at
//! start-up; in a cluster (`[database] backend = "postgres"`) the leader does: the node holding
//! the shared log's advisory lock (`ledger::shared::LeaderLock`). It finishes the purge
//! deletions a crash left pending, runs every transfer (those other nodes record included,
//! picked up every 2 s) and the remote-media expiry and retention loops. When the leader dies its PostgreSQL session ends, the lock is
//! free, and the next node to try takes it and resumes from the projections, as a restart
//! does.

use crate::abuse::retention::{Clock, SharedStatus};
use crate::config::Config;
use crate::datastore::Datastores;
use crate::ledger::shared::LeaderLock;
use crate::ledger::{Ledger, LedgerError};
use crate::moderation::deleter::DeletionHook;
use crate::moderation::Moderation;
use crate::transfer::Transfers;
use std::sync::Arc;
use std::time::Duration;

/// How often a node that does not lead tries to take the lock, and the leader checks it
/// still holds it.
const LEADER_POLL: Duration = Duration::from_secs(2);

/// What the once-only work needs.
#[derive(Clone)]
pub struct OnceOnly {
    /// The ledger.
    pub ledger: Arc<Ledger>,
    /// The datastores.
    pub datastores: Arc<Datastores>,
    /// Purges and expiry.
    pub moderation: Arc<Moderation>,
    /// Transfer tasks.
    pub transfers: Arc<Transfers>,
    /// The config.
    pub config: Arc<Config>,
    /// Leaves purge deletions pending (tests).
    pub deletion_hook: Option<DeletionHook>,
    /// The retention runs' status.
    pub retention: SharedStatus,
    /// The retention runs' clock (tests).
    pub retention_clock: Option<Clock>,
    /// Set when the server stops.
    pub shutdown: tokio::sync::watch::Receiver<bool>,
}

impl OnceOnly {
    /// Resumes unfinished transfers and starts the expiry and retention loops (purge
    /// deletions are resumed before, see [`lead`] and `server`).
    pub fn start(&self) -> Result<(), LedgerError> {
        if self.config.downloads.expire_after_days > 0 {
            tokio::spawn(crate::moderation::expire_remote_loop(
                self.moderation.clone(),
                self.config.downloads.expire_after_days,
                self.shutdown.clone(),
            ));
        }
        if self.config.retention.enabled() {
            let first = Duration::from_millis(self.config.retention.interval_ms.min(10_000));
            tokio::spawn(crate::abuse::retention::retention_loop(
                self.moderation.clone(),
                self.config.retention.clone(),
                self.retention.clone(),
                first,
                self.retention_clock.clone(),
                self.shutdown.clone(),
            ));
        }
        self.transfers.resume_all()
    }
}

/// A cluster node: downloads waiting here for a pending async upload look again whenever the
/// log grows (the upload may have been filled on another node, whose event this node learns
/// by following the shared log).
pub async fn wake_waiters(
    ledger: Arc<Ledger>,
    waiters: Arc<crate::upload_waiters::UploadWaiters>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let mut head = ledger.subscribe();
    loop {
        tokio::select! {
            changed = head.changed() => if changed.is_err() { return },
            _ = shutdown.changed() => return,
        }
        waiters.wake_all();
    }
}

/// A cluster node's leadership: a thread of its own holds the lock's PostgreSQL session
/// (tried every [`LEADER_POLL`] until taken, then kept alive); once this node holds it, the
/// once-only work runs here. The thread ends when this task does.
pub async fn lead(url: String, once: OnceOnly) {
    let mut shutdown = once.shutdown.clone();
    let (held_tx, mut held) = tokio::sync::watch::channel(false);
    let spawned = std::thread::Builder::new()
        .name("leader-lock".into())
        .spawn(move || hold_lock(&url, &held_tx));
    if let Err(e) = spawned {
        tracing::error!(error = %e, "cannot start the leader election thread");
        return;
    }
    loop {
        tokio::select! {
            r = held.wait_for(|h| *h) => if r.is_err() { return },
            _ = shutdown.changed() => return,
        }
        tracing::info!("this node leads the cluster: it finishes pending purge deletions, runs the transfers, remote-media expiry and retention");
        // The loops started now stop when the server does or this node stops leading.
        let (term_tx, term_rx) = tokio::sync::watch::channel(false);
        let term = OnceOnly {
            shutdown: term_rx,
            ..once.clone()
        };
        match crate::moderation::deleter::resume(
            &term.ledger,
            &term.datastores,
            term.deletion_hook.as_ref(),
        )
        .await
        {
            Ok(n) if n > 0 => tracing::info!(deletions = n, "pending purge deletions finished"),
            Ok(_) => {}
            Err(e) => tracing::error!(error = %e, "cannot resume purge deletions"),
        }
        term.transfers.set_runs_here(true);
        if let Err(e) = term.start() {
            tracing::error!(error = %e, "cannot resume transfers");
        }
        // Meanwhile pick up the transfers other nodes record (they run here only).
        loop {
            tokio::select! {
                _ = tokio::time::sleep(LEADER_POLL) => {}
                _ = shutdown.changed() => {
                    term_tx.send_replace(true);
                    return;
                }
                r = held.wait_for(|h| !*h) => {
                    if r.is_err() {
                        return;
                    }
                    // Another node may take the lock now: stop starting work here. (A
                    // transfer already running finishes; the writer refuses a second move
                    // of a blob, so the new leader's run of it cannot double anything.)
                    tracing::warn!("this node no longer leads the cluster: its expiry and retention loops stop, new transfers run elsewhere");
                    term_tx.send_replace(true);
                    term.transfers.set_runs_here(false);
                    break;
                }
            }
            if let Err(e) = term.transfers.resume_all() {
                tracing::warn!(error = %e, "cannot look for new transfers");
            }
        }
    }
}

/// The leader lock's thread: tries, then keeps, the lock; says whether it holds it. Ends when
/// nobody listens any more (its session, and the lock, end with it).
fn hold_lock(url: &str, held_tx: &tokio::sync::watch::Sender<bool>) {
    let mut lock = LeaderLock::new(url);
    let mut was = false;
    loop {
        let now = lock.try_hold();
        if was && !now {
            tracing::warn!("this node lost the cluster's leader lock (its database session ended)");
        }
        was = now;
        if held_tx.send(now).is_err() {
            return;
        }
        std::thread::sleep(LEADER_POLL);
    }
}
