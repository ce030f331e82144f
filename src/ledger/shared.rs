//! The log shared by the nodes of a cluster, in PostgreSQL (`[database] backend =
//! "postgres"`): one table of records keyed by sequence, the same encoded, hash-chained
//! records the embedded log keeps. A node appends a group at `head+1…` in one transaction;
//! the primary key is the serialization point: when another node appended first the insert
//! fails, and the node's writer catches up, validates the group again against the new state
//! and retries (`writer.rs`). Also the leader lock: a session advisory lock the node doing
//! the once-only work (sweeps, purge deletions, transfers) holds (ARCHITECTURE, "Several
//! nodes").
//!
//! Everything here blocks: it runs on the writer's thread, or on a blocking task.

use super::LedgerError;
use media_ledger_events::Seq;

/// The table of records.
const TABLE: &str = "media_ledger_log";

/// The advisory lock key of the leader (any fixed 64-bit number: "mledger1").
const LEADER_KEY: i64 = 0x6d6c_6564_6765_7231;

/// The `LISTEN` channel an append notifies, with the new head as payload.
const CHANNEL: &str = "media_ledger_log";

/// SQLSTATE of a unique violation: another node appended at that sequence first.
const UNIQUE_VIOLATION: &str = "23505";

/// The outcome of an append.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Appended {
    /// The group is the log's new tail.
    Done,
    /// Another node appended at one of its sequences first: catch up and try again.
    Lost,
}

/// A connection to the shared log.
pub(crate) struct SharedLog {
    url: String,
    client: Option<postgres::Client>,
}

fn unavailable(context: &str, e: impl std::fmt::Display) -> LedgerError {
    LedgerError::SharedLogUnavailable(format!("{context}: {e}"))
}

impl SharedLog {
    /// Connects to `url` and creates the table if it is missing (a role that may not create
    /// tables is fine once the table exists).
    pub(crate) fn connect(url: &str) -> Result<Self, LedgerError> {
        let mut client = connect(url)?;
        if client
            .simple_query(&format!("SELECT 1 FROM {TABLE} LIMIT 0"))
            .is_err()
        {
            client
                .batch_execute(&format!(
                    "CREATE TABLE IF NOT EXISTS {TABLE} (seq BIGINT PRIMARY KEY CHECK (seq > 0), record BYTEA NOT NULL)"
                ))
                .map_err(|e| unavailable("creating the log table", e))?;
        }
        Ok(Self {
            url: url.to_owned(),
            client: Some(client),
        })
    }

    /// The connection, opened again after a failure (PostgreSQL restarted, network cut).
    fn client(&mut self) -> Result<&mut postgres::Client, LedgerError> {
        if self.client.as_ref().is_none_or(|c| c.is_closed()) {
            self.client = Some(connect(&self.url)?);
        }
        self.client
            .as_mut()
            .ok_or_else(|| unavailable("connecting", "no connection"))
    }

    /// Runs `f` on the connection; a failure drops the connection (the next call opens a new
    /// one) and is answered as the shared log being unavailable.
    fn with<T>(
        &mut self,
        context: &str,
        f: impl FnOnce(&mut postgres::Client) -> Result<T, postgres::Error>,
    ) -> Result<T, LedgerError> {
        let client = self.client()?;
        match f(client) {
            Ok(v) => Ok(v),
            Err(e) => {
                self.client = None;
                Err(unavailable(context, e))
            }
        }
    }

    /// The last sequence of the shared log (0 when empty).
    pub(crate) fn head(&mut self) -> Result<Seq, LedgerError> {
        let n: i64 = self.with("reading the head", |c| {
            c.query_one(&format!("SELECT coalesce(max(seq), 0) FROM {TABLE}"), &[])
                .map(|r| r.get(0))
        })?;
        Ok(Seq(u64::try_from(n).unwrap_or(0)))
    }

    /// Up to `limit` records after `after`, in order.
    pub(crate) fn read_after(
        &mut self,
        after: Seq,
        limit: i64,
    ) -> Result<Vec<(Seq, Vec<u8>)>, LedgerError> {
        let from = i64::try_from(after.0).unwrap_or(i64::MAX);
        let rows = self.with("reading records", |c| {
            c.query(
                &format!("SELECT seq, record FROM {TABLE} WHERE seq > $1 ORDER BY seq LIMIT $2"),
                &[&from, &limit],
            )
        })?;
        rows.iter()
            .map(|r| {
                let seq: i64 = r.get(0);
                let seq = u64::try_from(seq)
                    .map_err(|_| unavailable("reading records", "a negative sequence"))?;
                Ok((Seq(seq), r.get::<_, Vec<u8>>(1)))
            })
            .collect()
    }

    /// Appends `records` (consecutive sequences) in one transaction: all or none.
    pub(crate) fn append(&mut self, records: &[(Seq, Vec<u8>)]) -> Result<Appended, LedgerError> {
        let seqs: Vec<i64> = records
            .iter()
            .map(|(s, _)| i64::try_from(s.0).unwrap_or(i64::MAX))
            .collect();
        let bodies: Vec<&[u8]> = records.iter().map(|(_, r)| r.as_slice()).collect();
        let client = self.client()?;
        // One statement, one transaction: the records, and a notification (delivered at
        // commit) carrying the new head to every listening node.
        let result = client.execute(
            &format!(
                "WITH ins AS (INSERT INTO {TABLE} (seq, record) SELECT * FROM unnest($1::bigint[], $2::bytea[]) RETURNING seq) SELECT pg_notify('{CHANNEL}', max(seq)::text) FROM ins"
            ),
            &[&seqs, &bodies],
        );
        match result {
            Ok(_) => Ok(Appended::Done),
            Err(e) if e.code().map(|c| c.code()) == Some(UNIQUE_VIOLATION) => Ok(Appended::Lost),
            Err(e) => {
                // The connection may have failed after the commit: if our first record is
                // there, byte for byte (its chain covers everything before it), the group
                // was committed; else, or if that cannot be read, nothing is known to be.
                self.client = None;
                let Some((first, ours)) = records.first() else {
                    return Err(unavailable("appending", e));
                };
                match self.read_after(Seq(first.0.saturating_sub(1)), 1) {
                    Ok(found) if found.first().is_some_and(|(s, r)| s == first && r == ours) => {
                        Ok(Appended::Done)
                    }
                    Ok(found) if !found.is_empty() => Ok(Appended::Lost),
                    _ => Err(unavailable("appending", e)),
                }
            }
        }
    }
}

/// Checks that the local store's log is a prefix of the shared log (the same record at the
/// local head), so the local projections describe this cluster's log. A store of another log
/// (a former single node, another cluster) is refused with what to do.
pub(crate) fn check_prefix(
    db: &rocksdb::DB,
    log: &mut SharedLog,
    local: super::Head,
) -> Result<(), LedgerError> {
    if local.seq.0 == 0 {
        return Ok(());
    }
    let theirs = log.read_after(media_ledger_events::Seq(local.seq.0 - 1), 1)?;
    let ours = db.get_cf(
        super::store::cf(db, super::store::CF_LOG)?,
        super::store::seq_key(local.seq),
    )?;
    match (theirs.first(), ours) {
        (Some((seq, r)), Some(o)) if *seq == local.seq && *r == o => Ok(()),
        _ => Err(LedgerError::Storage(format!(
            "the local store's log (head {}) is not a prefix of the shared log: it belongs to another log; move [database] path away and start again to rebuild it from the shared log (or `migrate-log` a single node's log into an empty shared log)",
            local.seq
        ))),
    }
}

fn connect(url: &str) -> Result<postgres::Client, LedgerError> {
    let mut config: postgres::Config = url
        .parse()
        .map_err(|e| unavailable("the database url", e))?;
    use std::time::Duration;
    // A cut network or a frozen database host must fail a write within seconds (503), not
    // after TCP's default ~15 minutes, and end a dead leader's session (and lock) quickly:
    // keepalives both ways, unacknowledged data given up on after 10 s, statements after 30 s.
    config
        .connect_timeout(Duration::from_secs(5))
        .keepalives(true)
        .keepalives_idle(Duration::from_secs(5))
        .keepalives_interval(Duration::from_secs(2))
        .keepalives_retries(3)
        .tcp_user_timeout(Duration::from_secs(10))
        .options(
            "-c statement_timeout=30000 -c tcp_keepalives_idle=5 -c tcp_keepalives_interval=2 -c tcp_keepalives_count=3",
        );
    config
        .connect(postgres::NoTls)
        .map_err(|e| unavailable("connecting", e))
}

/// Listens for appends: calls `appended(head)` for each notification; reconnects after a
/// lost connection (the writer's follow interval covers what was missed meanwhile). Returns
/// when `stop` is set (checked every second).
pub(crate) fn listen(
    url: &str,
    stop: &std::sync::atomic::AtomicBool,
    mut appended: impl FnMut(Seq),
) {
    use postgres::fallible_iterator::FallibleIterator;
    use std::sync::atomic::Ordering;
    while !stop.load(Ordering::Relaxed) {
        let mut client = match connect(url).and_then(|mut c| {
            c.batch_execute(&format!("LISTEN {CHANNEL}"))
                .map_err(|e| unavailable("listening", e))?;
            Ok(c)
        }) {
            Ok(c) => c,
            Err(_) => {
                std::thread::sleep(std::time::Duration::from_secs(1));
                continue;
            }
        };
        loop {
            if stop.load(Ordering::Relaxed) {
                return;
            }
            let mut notes = client.notifications();
            let mut it = notes.timeout_iter(std::time::Duration::from_secs(1));
            match it.next() {
                Ok(Some(n)) => {
                    if let Ok(seq) = n.payload().parse::<u64>() {
                        appended(Seq(seq));
                    }
                }
                Ok(None) => {}
                Err(_) => break,
            }
        }
    }
}

/// The leader lock: held by at most one node of the cluster, for as long as its session
/// lives. A node that dies loses its session, and with it the lock.
pub struct LeaderLock {
    url: String,
    session: Option<postgres::Client>,
}

impl LeaderLock {
    /// Not held yet.
    pub fn new(url: &str) -> Self {
        Self {
            url: url.to_owned(),
            session: None,
        }
    }

    /// Whether this node holds the lock now: takes it when free, notices when its session
    /// was lost (PostgreSQL restarted: the lock went with it, and is taken again if free).
    pub fn try_hold(&mut self) -> bool {
        if let Some(s) = &mut self.session {
            if s.simple_query("SELECT 1").is_ok() {
                return true;
            }
            self.session = None;
        }
        let Ok(mut client) = connect(&self.url) else {
            return false;
        };
        let held = client
            .query_one("SELECT pg_try_advisory_lock($1)", &[&LEADER_KEY])
            .map(|r| r.get::<_, bool>(0))
            .unwrap_or(false);
        if held {
            self.session = Some(client);
        }
        held
    }
}
