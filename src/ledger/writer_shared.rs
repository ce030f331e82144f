//! The writer of a cluster node (`[database] backend = "postgres"`): the same validation and
//! folds as the embedded writer, with the shared log's commit as the durability point.
//!
//! Per group, optimistically: validate the group against the local state, append its records
//! at `head+1…` in one transaction. When another node appended first, the insert fails on the
//! primary key, and the node catches up (folds what other nodes appended into its
//! projections), validates the group again and retries, so every event is still decided
//! against the state of the moment, across nodes, and the sequence stays gap-free. (A group
//! that appends nothing checks the shared head instead.) After the
//! commit the group is written to the local store (a cache of the shared log, unsynced:
//! after a crash the node reads the lost tail again from the shared log) before anyone is
//! answered, so a node reads its own writes. Between groups the writer follows the shared log
//! every `follow_interval`.

use super::overlay::Overlay;
use super::shared::{Appended, SharedLog};
use super::store::{cf, seq_key, Head, CF_LOG};
use super::writer::{send, Committed, Reply, Request, Writer, MAX_GROUP};
use super::LedgerError;
use media_ledger_events::{codec, Seq};
use rocksdb::WriteBatch;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// Attempts at appending one group before its requests are answered 503 (each lost attempt
/// means another node appended meanwhile: the cluster is making progress).
const MAX_ATTEMPTS: usize = 64;

/// Records read from the shared log per catch-up step.
const CATCH_UP_STEP: i64 = 1024;

/// How a node follows the shared log.
pub(crate) struct Shared {
    pub(crate) log: SharedLog,
    /// The database, for the listener's own connection.
    pub(crate) url: String,
    pub(crate) follow_interval: Duration,
}

/// What wakes the cluster writer.
enum Wake {
    /// A command.
    Request(Box<Request>),
    /// The shared log's head after some node's append.
    Appended(Seq),
    /// The request queue closed: the writer stops.
    Closed,
}

type Outcome = (Option<Reply>, Result<Committed, LedgerError>);

impl Writer {
    /// The writer loop of a cluster node: groups as the embedded writer takes them, and a
    /// catch-up whenever `follow_interval` passes without one.
    ///
    /// A forwarding thread moves requests from the async queue to a std channel, whose
    /// `recv_timeout` gives the writer its follow interval without a runtime's timer (the
    /// writer outlives no runtime and needs none); it ends when the queue closes.
    pub(crate) fn run_shared(mut self, mut rx: mpsc::Receiver<Request>) {
        let Some(interval) = self.shared.as_ref().map(|s| s.follow_interval) else {
            return;
        };
        // Bounded like the async queue: a slow database slows submitters down instead of
        // queueing without limit here.
        let (tx, wakes) = std::sync::mpsc::sync_channel::<Wake>(super::QUEUE);
        let forward = tx.clone();
        let forwarder = std::thread::Builder::new()
            .name("ledger-forward".into())
            .spawn(move || {
                while let Some(r) = rx.blocking_recv() {
                    if let Err(std::sync::mpsc::SendError(Wake::Request(r))) =
                        forward.send(Wake::Request(Box::new(r)))
                    {
                        send(r.reply, Err(LedgerError::Closed));
                        return;
                    }
                }
                // The queue closed (the ledger shuts down); the listener still holds a
                // sender, so the writer is told.
                let _ = forward.send(Wake::Closed);
            });
        if let Err(e) = forwarder {
            tracing::error!(error = %e, "cannot start the ledger's forwarding thread");
            return;
        }
        // Other nodes' appends wake the writer at once (LISTEN/NOTIFY); the interval is the
        // fallback.
        let stop = Arc::new(AtomicBool::new(false));
        if let Some(url) = self.shared.as_ref().map(|s| s.url.clone()) {
            let stop = stop.clone();
            let spawned = std::thread::Builder::new()
                .name("ledger-listen".into())
                .spawn(move || {
                    // A notification dropped on a full queue is harmless: the interval, and the
                    // next append's lost race, catch up anyway.
                    super::shared::listen(&url, &stop, |head| {
                        let _ = tx.try_send(Wake::Appended(head));
                    })
                });
            if let Err(e) = spawned {
                tracing::warn!(error = %e, "cannot start the shared log's listener; following by interval only");
            }
        }
        let mut group = Vec::with_capacity(MAX_GROUP);
        loop {
            match wakes.recv_timeout(interval) {
                Ok(Wake::Request(first)) => {
                    group.push(*first);
                    let mut closing = false;
                    while group.len() < MAX_GROUP {
                        match wakes.try_recv() {
                            Ok(Wake::Request(r)) => group.push(*r),
                            Ok(Wake::Appended(_)) => {}
                            Ok(Wake::Closed) => {
                                closing = true;
                                break;
                            }
                            Err(_) => break,
                        }
                    }
                    self.commit_group_shared(&mut group);
                    if closing {
                        break;
                    }
                }
                // Our own appends notify too: only a head beyond ours is news.
                Ok(Wake::Appended(head)) if head <= self.head.seq => {}
                Ok(Wake::Appended(_)) | Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                    if let Err(e) = self.catch_up_shared(true) {
                        tracing::warn!(error = %e, "cannot follow the shared log");
                    }
                }
                Ok(Wake::Closed) | Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
            }
        }
        stop.store(true, Ordering::Relaxed);
        tracing::debug!("ledger writer stopped");
    }

    /// Folds every record of the shared log after the local head into the local store and
    /// projections (unsynced). Returns how many. With `following`, each event's lag goes to
    /// the follow-lag histogram (not at start-up, when the events are as old as the log).
    pub(crate) fn catch_up_shared(&mut self, following: bool) -> Result<u64, LedgerError> {
        let Some(mut shared) = self.shared.take() else {
            return Ok(0);
        };
        let result = self.catch_up_from(&mut shared.log, following);
        self.shared = Some(shared);
        result
    }

    fn catch_up_from(&mut self, log: &mut SharedLog, following: bool) -> Result<u64, LedgerError> {
        let mut total = 0u64;
        loop {
            let records = log.read_after(self.head.seq, CATCH_UP_STEP)?;
            if records.is_empty() {
                return Ok(total);
            }
            let mut overlay = Overlay::new();
            let mut batch = WriteBatch::default();
            let mut head = self.head;
            let mut last_ms = self.last_ms;
            let mut stuck = None;
            for (seq, record) in records {
                if seq.0 != head.seq.0 + 1 {
                    return Err(LedgerError::Corrupt {
                        seq: Seq(head.seq.0 + 1),
                        reason: format!("the shared log's next record is {seq}"),
                    });
                }
                let (chain, body) = codec::check_chain(&head.chain, seq, &record).map_err(|e| {
                    LedgerError::Corrupt {
                        seq,
                        reason: format!("shared log: {e}"),
                    }
                })?;
                let env = match codec::decode_checked_body(seq, body) {
                    Ok(env) => env,
                    // A record of a newer build (a rolling upgrade): deciding anything without
                    // it would break C1, so this node stops here and refuses writes (503)
                    // until it runs a build that reads it; it keeps serving reads.
                    Err(e) => {
                        tracing::error!(seq = seq.0, error = %e, "the shared log holds a record this build cannot decode: writes are refused until this node is upgraded");
                        stuck = Some(LedgerError::SharedLogUnavailable(format!(
                            "record {seq} of the shared log cannot be decoded by this build ({e}): upgrade this node"
                        )));
                        break;
                    }
                };
                last_ms = last_ms.max(env.recorded_at_ms);
                if following {
                    let lag_ms = crate::clock::now_ms().saturating_sub(env.recorded_at_ms);
                    self.metrics
                        .follow_lag_seconds
                        .observe(lag_ms as f64 / 1000.0);
                }
                self.fold(&env, &mut overlay)?;
                batch.put_cf(cf(&self.db, CF_LOG)?, seq_key(seq), &record);
                head = Head { seq, chain };
                total += 1;
            }
            if head.seq != self.head.seq {
                self.finish_batch(&mut overlay, &mut batch, head)?;
                self.head = head;
                self.last_ms = last_ms;
                self.head_tx.send_replace(head.seq);
            }
            if let Some(e) = stuck {
                return Err(e);
            }
        }
    }

    /// Decides and appends one group (see the module doc); answers every request.
    fn commit_group_shared(&mut self, group: &mut Vec<Request>) {
        let requests: Vec<Request> = std::mem::take(group);
        for _ in 0..MAX_ATTEMPTS {
            let Some(mut shared) = self.shared.take() else {
                return;
            };
            // A projection halted by a fold of this attempt halts only if the attempt's
            // events are recorded: a lost or failed attempt recorded nothing.
            let halted_before = self.failed.lock().clone();
            let attempt = self.attempt(&requests, &mut shared.log);
            self.shared = Some(shared);
            if !matches!(attempt, Attempt::Decided(_)) {
                *self.failed.lock() = halted_before;
            }
            match attempt {
                Attempt::Lost => {
                    if let Err(e) = self.catch_up_shared(true) {
                        return answer_all(requests, &e);
                    }
                }
                Attempt::Failed(e) => return answer_all(requests, &e),
                Attempt::Decided(results) => {
                    for (req, result) in requests.into_iter().zip(results) {
                        send(req.reply, result);
                    }
                    return;
                }
            }
        }
        let e = LedgerError::SharedLogUnavailable(format!(
            "other nodes appended first {MAX_ATTEMPTS} times in a row"
        ));
        answer_all(requests, &e);
    }

    /// One try, optimistic: validate against the local state, append at `head+1…`. The
    /// append succeeding proves the state was the log's whole prefix (no node appended after
    /// it), for every decision of the group, refusals included; a group that appends nothing
    /// (every command refused or a no-op) proves it by the shared head being ours.
    /// Otherwise [`Attempt::Lost`]: the caller catches up and tries again.
    fn attempt(&mut self, requests: &[Request], log: &mut SharedLog) -> Attempt {
        let mut overlay = Overlay::new();
        let mut batch = WriteBatch::default();
        let mut head = self.head;
        let mut records = Vec::with_capacity(requests.len());
        let mut results = Vec::with_capacity(requests.len());
        let time = crate::clock::now_ms().max(self.last_ms);
        for req in requests {
            let result = self.append_one(
                req.cmd.clone(),
                req.actor.clone(),
                req.request_id.clone(),
                time,
                &mut head,
                &mut overlay,
                &mut batch,
                Some(&mut records),
            );
            if let Err(e @ (LedgerError::Storage(_) | LedgerError::Codec(_))) = &result {
                tracing::error!(error = %e, "ledger group aborted");
                return Attempt::Failed(LedgerError::Storage(format!("group aborted: {e}")));
            }
            results.push(result);
        }
        if records.is_empty() {
            return match log.head() {
                Ok(h) if h == self.head.seq => Attempt::Decided(results),
                Ok(_) => Attempt::Lost,
                Err(e) => Attempt::Failed(e),
            };
        }
        let started = std::time::Instant::now();
        match log.append(&records) {
            Ok(Appended::Lost) => {
                self.metrics.lost_appends.fetch_add(1, Ordering::Relaxed);
                return Attempt::Lost;
            }
            Ok(Appended::Done) => {}
            Err(e) => return Attempt::Failed(e),
        }
        self.metrics
            .ledger_sync_seconds
            .observe(started.elapsed().as_secs_f64());
        self.metrics
            .ledger_sync_events
            .observe(records.len() as f64);
        self.metrics
            .ledger_events
            .fetch_add(records.len() as u64, Ordering::Relaxed);
        // Durable now. The local copy follows; if it cannot be written the node's cache is
        // behind (the next catch-up reads the group again) but the answers stand.
        match self.finish_batch(&mut overlay, &mut batch, head) {
            Ok(()) => {
                self.head = head;
                self.last_ms = time;
                self.head_tx.send_replace(head.seq);
            }
            Err(e) => {
                tracing::error!(error = %e, "a committed group could not be written locally; it is read again from the shared log");
                // Read-your-writes (C2): try to hold the group locally before answering.
                if let Err(e) = self.catch_up_from(log, false) {
                    tracing::error!(error = %e, "and the catch-up failed: this node's reads lag until it succeeds");
                }
            }
        }
        Attempt::Decided(results)
    }
}

enum Attempt {
    Decided(Vec<Result<Committed, LedgerError>>),
    Lost,
    Failed(LedgerError),
}

fn answer_all(requests: Vec<Request>, e: &LedgerError) {
    let outcomes: Vec<Outcome> = requests
        .into_iter()
        .map(|r| (r.reply, Err(clone_err(e))))
        .collect();
    fail_all_with(outcomes);
}

fn fail_all_with(outcomes: Vec<Outcome>) {
    for (reply, r) in outcomes {
        send(reply, r);
    }
}

/// The same failure for every request of a group.
fn clone_err(e: &LedgerError) -> LedgerError {
    match e {
        LedgerError::SharedLogUnavailable(m) => LedgerError::SharedLogUnavailable(m.clone()),
        other => LedgerError::Storage(other.to_string()),
    }
}
