#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Fault injection around the real `file` datastore (`server::start_with` and a wrapping
//! [`Datastore`]): writes, commits (before the rename, after it, torn), spool creation,
//! deletes and reads fail at chosen calls, and pause points stop a request between two of its
//! steps so the state in between can be looked at. What must hold at every step:
//!
//! - blob before event: an upload whose bytes are not durable answers 5xx and records nothing;
//!   no media record points at a missing or wrong blob; a retry succeeds; a torn file is
//!   never served and the next upload or the start-up sweep leaves a correct state;
//! - purge step order: the purge event is durable before any byte is deleted; a failed delete
//!   leaves the deletion pending (media gone from the API, blob on disk) and a start with a
//!   healthy datastore finishes it; the stopped ledger verifies (projections == replay);
//! - transfer step order: a failing target write, read-back or source delete never leaves a
//!   media without a live, downloadable copy.

use crate::common;
use media_ledger_projections::names;

use async_trait::async_trait;
use common::{
    count_blobs, expect_error, parse_mxc, random_bytes, sha256_hex, spool_entries, Opts,
    TestServer, ADMIN, ALICE, SECRET,
};
use futures_util::StreamExt;
use media_ledger::config::Config;
use media_ledger::datastore::{content_location, BlobStream, Datastore, DatastoreError, Listing};
use media_ledger::ledger::Ledger;
use media_ledger::server::DatastoreHook;
use media_ledger_events::{BlobLocation, DatastoreId, Seq, Sha256};
use media_ledger_projections::{hash_refs, moderation};
use reqwest::StatusCode;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

const ADMIN_API: &str = "/_matrix/media/unstable/admin";
/// How long a pause point waits to be reached before the test fails.
const REACH: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------------------------
// The fault-injecting datastore.
// ---------------------------------------------------------------------------------------------

/// A datastore call that can be made to fail or pause.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Op {
    /// `spool_dir`: where an upload's temp file is created.
    Spool,
    Commit,
    PutFrom,
    SizeOf,
    Open,
    List,
    Delete,
}

/// What a faulty call does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fault {
    /// Fails before touching anything (the write, rename or fsync at its start fails). For
    /// `Spool`: the temp file is to be created in a directory that does not exist.
    Fail,
    /// `Commit` / `PutFrom`: the real call runs (the blob is renamed into place and durable),
    /// then it errors, as if the last directory fsync had failed. On disk this is the state
    /// a crash between commit and append leaves.
    FailAfter,
    /// `Commit` / `PutFrom`: the first half of the bytes is left at the final location, then
    /// it errors (a torn, non-atomic write).
    Tear,
    /// `Open`: the stream yields the first half of the range, then an error.
    BreakStream,
}

/// A point where a call waits until the test lets it go.
pub(crate) struct Gate {
    reached: Semaphore,
    release: Semaphore,
}

impl Gate {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            reached: Semaphore::new(0),
            release: Semaphore::new(0),
        })
    }

    /// Called by the datastore: announces the arrival, waits for the release.
    async fn pass(&self) {
        self.reached.add_permits(1);
        self.release.acquire().await.unwrap().forget();
    }

    /// Waits until a call has arrived at this point.
    pub(crate) async fn reached(&self) {
        tokio::time::timeout(REACH, self.reached.acquire())
            .await
            .expect("pause point not reached in time")
            .unwrap()
            .forget();
    }

    /// Lets the waiting call go on.
    pub(crate) fn release(&self) {
        self.release.add_permits(1);
    }
}

#[derive(Clone)]
enum Action {
    Fault(Fault),
    /// Waits at the gate before the real call and again after it.
    Pause(Arc<Gate>),
}

struct Rule {
    op: Op,
    datastore: Option<String>,
    /// Matching calls to let through first.
    skip: u64,
    /// Matching calls to act on after that.
    times: u64,
    action: Action,
}

/// The shared fault plan of every wrapped datastore, and a count of every call.
#[derive(Default)]
pub(crate) struct Faults {
    rules: parking_lot::Mutex<Vec<Rule>>,
    calls: parking_lot::Mutex<BTreeMap<(String, Op), u64>>,
    /// Datastores whose `local_path` is hidden (transfers then stream through `open` and
    /// the target's spool instead of `put_from`).
    streamed: parking_lot::Mutex<Vec<String>>,
}

impl Faults {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Faults the `nth` (1-based, counted from now) matching call and the `times - 1` after it.
    fn at(&self, op: Op, datastore: Option<&str>, nth: u64, times: u64, fault: Fault) {
        self.rules.lock().push(Rule {
            op,
            datastore: datastore.map(str::to_owned),
            skip: nth - 1,
            times,
            action: Action::Fault(fault),
        });
    }

    /// Faults the next matching call.
    fn next(&self, op: Op, datastore: Option<&str>, fault: Fault) {
        self.at(op, datastore, 1, 1, fault);
    }

    /// Pauses the next matching call before and after its real work.
    pub(crate) fn pause(&self, op: Op, datastore: Option<&str>) -> Arc<Gate> {
        let gate = Gate::new();
        self.rules.lock().push(Rule {
            op,
            datastore: datastore.map(str::to_owned),
            skip: 0,
            times: 1,
            action: Action::Pause(gate.clone()),
        });
        gate
    }

    fn pending_rules(&self) -> usize {
        self.rules.lock().len()
    }

    pub(crate) fn calls(&self, datastore: &str, op: Op) -> u64 {
        self.calls
            .lock()
            .get(&(datastore.to_owned(), op))
            .copied()
            .unwrap_or(0)
    }

    /// Counts the call and returns what to do with it.
    fn take(&self, op: Op, datastore: &DatastoreId) -> Option<Action> {
        *self
            .calls
            .lock()
            .entry((datastore.as_str().to_owned(), op))
            .or_default() += 1;
        let mut rules = self.rules.lock();
        let i = rules.iter().position(|r| {
            r.op == op
                && r.datastore
                    .as_deref()
                    .is_none_or(|d| d == datastore.as_str())
        })?;
        let rule = &mut rules[i];
        if rule.skip > 0 {
            rule.skip -= 1;
            return None;
        }
        let action = rule.action.clone();
        rule.times -= 1;
        if rule.times == 0 {
            rules.remove(i);
        }
        Some(action)
    }

    /// The hook `server::start_with` passes every datastore through.
    fn hook(self: &Arc<Self>) -> DatastoreHook {
        let me = self.clone();
        Arc::new(move |inner: Arc<dyn Datastore>| -> Arc<dyn Datastore> {
            let bad_spool = inner.spool_dir().join("no-such-dir");
            Arc::new(Faulty {
                inner,
                faults: me.clone(),
                bad_spool,
            })
        })
    }
}

fn injected(what: &str) -> DatastoreError {
    DatastoreError::Io {
        context: format!("injected fault in {what}"),
        source: std::io::Error::other("injected"),
    }
}

struct Faulty {
    inner: Arc<dyn Datastore>,
    faults: Arc<Faults>,
    bad_spool: PathBuf,
}

impl Faulty {
    /// Leaves the first half of `source`'s bytes at the blob's final place.
    fn tear(&self, source: &Path, sha: &Sha256) -> Result<(), DatastoreError> {
        let location = content_location(sha)?;
        let target = self
            .inner
            .local_path(&location)
            .expect("tears are modelled on file datastores");
        let bytes = std::fs::read(source).map_err(|e| injected(&format!("tear: {e}")))?;
        std::fs::create_dir_all(target.parent().unwrap()).unwrap();
        std::fs::write(&target, &bytes[..bytes.len() / 2]).unwrap();
        Ok(())
    }

    async fn write<F>(
        &self,
        op: Op,
        source: &Path,
        sha: &Sha256,
        real: F,
    ) -> Result<BlobLocation, DatastoreError>
    where
        F: std::future::Future<Output = Result<BlobLocation, DatastoreError>> + Send,
    {
        match self.faults.take(op, self.id()) {
            None => real.await,
            Some(Action::Fault(Fault::Fail)) => Err(injected("write before the rename")),
            Some(Action::Fault(Fault::FailAfter)) => {
                real.await?;
                Err(injected("directory fsync after the rename"))
            }
            Some(Action::Fault(Fault::Tear)) => {
                self.tear(source, sha)?;
                Err(injected("torn write"))
            }
            Some(Action::Fault(Fault::BreakStream)) => real.await,
            Some(Action::Pause(gate)) => {
                gate.pass().await;
                let r = real.await;
                gate.pass().await;
                r
            }
        }
    }
}

#[async_trait]
impl Datastore for Faulty {
    fn id(&self) -> &DatastoreId {
        self.inner.id()
    }

    fn type_name(&self) -> &'static str {
        self.inner.type_name()
    }

    fn uri(&self) -> String {
        self.inner.uri()
    }

    fn spool_dir(&self) -> &Path {
        match self.faults.take(Op::Spool, self.id()) {
            Some(Action::Fault(_)) => &self.bad_spool,
            _ => self.inner.spool_dir(),
        }
    }

    fn spool_needs_sync(&self) -> bool {
        self.inner.spool_needs_sync()
    }

    async fn commit(&self, spooled: &Path, sha: &Sha256) -> Result<BlobLocation, DatastoreError> {
        self.write(Op::Commit, spooled, sha, self.inner.commit(spooled, sha))
            .await
    }

    async fn put_from(&self, path: &Path, sha: &Sha256) -> Result<BlobLocation, DatastoreError> {
        self.write(Op::PutFrom, path, sha, self.inner.put_from(path, sha))
            .await
    }

    fn local_path(&self, location: &BlobLocation) -> Option<PathBuf> {
        if self
            .faults
            .streamed
            .lock()
            .iter()
            .any(|d| d == self.id().as_str())
        {
            return None;
        }
        self.inner.local_path(location)
    }

    async fn size_of(&self, location: &BlobLocation) -> Result<Option<u64>, DatastoreError> {
        match self.faults.take(Op::SizeOf, self.id()) {
            Some(Action::Fault(_)) => Err(injected("size_of")),
            Some(Action::Pause(gate)) => {
                gate.pass().await;
                let r = self.inner.size_of(location).await;
                gate.pass().await;
                r
            }
            None => self.inner.size_of(location).await,
        }
    }

    async fn open(
        &self,
        location: &BlobLocation,
        offset: u64,
        len: u64,
    ) -> Result<BlobStream, DatastoreError> {
        match self.faults.take(Op::Open, self.id()) {
            Some(Action::Fault(Fault::BreakStream)) => {
                let half = len / 2;
                let stream = self.inner.open(location, offset, half).await?;
                let broken = futures_util::stream::once(async {
                    Err(std::io::Error::other("injected read error"))
                });
                Ok(stream.chain(broken).boxed())
            }
            Some(Action::Fault(_)) => Err(injected("open")),
            Some(Action::Pause(gate)) => {
                gate.pass().await;
                let r = self.inner.open(location, offset, len).await;
                gate.pass().await;
                r
            }
            None => self.inner.open(location, offset, len).await,
        }
    }

    async fn list(&self) -> Result<Listing, DatastoreError> {
        match self.faults.take(Op::List, self.id()) {
            Some(Action::Fault(_)) => Err(injected("list")),
            Some(Action::Pause(gate)) => {
                gate.pass().await;
                let r = self.inner.list().await;
                gate.pass().await;
                r
            }
            None => self.inner.list().await,
        }
    }

    async fn delete(&self, location: &BlobLocation) -> Result<(), DatastoreError> {
        match self.faults.take(Op::Delete, self.id()) {
            Some(Action::Fault(_)) => Err(injected("delete")),
            Some(Action::Pause(gate)) => {
                gate.pass().await;
                let r = self.inner.delete(location).await;
                gate.pass().await;
                r
            }
            None => self.inner.delete(location).await,
        }
    }

    async fn read_marker(&self) -> Result<Option<String>, DatastoreError> {
        self.inner.read_marker().await
    }

    async fn write_marker(&self) -> Result<(), DatastoreError> {
        self.inner.write_marker().await
    }
}

// ---------------------------------------------------------------------------------------------
// Harness: a `TestServer` booted through `start_with`.
// ---------------------------------------------------------------------------------------------

/// Starts (or restarts) `srv` with every datastore wrapped by `hook` (`None`: healthy).
async fn boot(srv: &mut TestServer, hook: Option<DatastoreHook>) {
    assert!(srv.server.is_none(), "server already running");
    let config = Config::parse(&srv.config_text).expect("test config is valid");
    let options = media_ledger::server::StartOptions {
        datastore_hook: hook,
        ..Default::default()
    };
    let server = media_ledger::server::start_with(config, options)
        .await
        .expect("server starts");
    srv.base = format!("http://{}", server.addr);
    srv.server = Some(server);
}

/// A server on a fresh directory with `opts`, its datastores wrapped by `faults`.
pub(crate) async fn start(opts: Opts, faults: &Arc<Faults>) -> TestServer {
    let dir = tempfile::tempdir().unwrap();
    let config_text = common::config_text(dir.path(), &opts);
    let mut srv = TestServer {
        base: String::new(),
        client: common::client(),
        dir,
        config_text,
        server: None,
    };
    boot(&mut srv, Some(faults.hook())).await;
    srv
}

fn ledger(srv: &TestServer) -> &Ledger {
    &srv.server().ledger
}

/// How many events of type `ty` the running server's log holds.
fn count_events(srv: &TestServer, ty: &str) -> usize {
    let mut n = 0;
    ledger(srv)
        .events(Seq(1), Seq(u64::MAX), |env| {
            n += usize::from(env.event.type_name() == ty);
            true
        })
        .unwrap();
    n
}

/// Purge deletions recorded but not finished.
fn pending_deletions(srv: &TestServer) -> usize {
    let mut n = 0;
    ledger(srv)
        .scan(names::MODERATION, moderation::PENDING_PREFIX, |k, v| {
            if let Some(e) = moderation::decode_pending(k, v) {
                e.unwrap();
                n += 1;
            }
            Ok(())
        })
        .unwrap();
    n
}

/// The file of the blob of `bytes` in datastore directory `dir`.
fn blob_path(dir: &Path, bytes: &[u8]) -> PathBuf {
    common::s3::file_blob_path(dir, &sha256_hex(bytes))
}

/// Datastore id → directory, for the consistency checks.
type Dirs = BTreeMap<String, PathBuf>;

fn default_dirs(srv: &TestServer) -> Dirs {
    [(common::DS.to_owned(), srv.media_dir())].into()
}

async fn get_json(srv: &TestServer, path: &str) -> Value {
    let resp = srv
        .client
        .get(srv.url(path))
        .bearer_auth(SECRET)
        .send()
        .await
        .unwrap();
    let status = resp.status();
    let text = resp.text().await.unwrap();
    assert_eq!(status, StatusCode::OK, "{path}: {text}");
    serde_json::from_str(&text).unwrap()
}

/// Every live media record (`usage/.../uploads`) and every hash record (`hash_refs`) points
/// at a file holding exactly the recorded bytes: no event refers to a missing or torn blob.
async fn assert_consistent(srv: &TestServer, dirs: &Dirs) -> Value {
    let uploads = get_json(srv, &format!("{ADMIN_API}/usage/localhost/uploads")).await;
    for (mxc, u) in uploads.as_object().unwrap() {
        let ds = u["datastore_id"].as_str().unwrap();
        let path = dirs[ds].join(u["datastore_location"].as_str().unwrap());
        let bytes = std::fs::read(&path)
            .unwrap_or_else(|e| panic!("{mxc} points at {}: {e}", path.display()));
        assert_eq!(
            bytes.len() as u64,
            u["size_bytes"],
            "{mxc}: size of its blob"
        );
        assert_eq!(
            sha256_hex(&bytes),
            u["sha256_hash"],
            "{mxc}: hash of its blob"
        );
    }
    let mut records = Vec::new();
    ledger(srv)
        .scan(names::HASH_REFS, hash_refs::HASH_PREFIX, |k, v| {
            if let Some(e) = hash_refs::decode_hash_entry(k, v) {
                records.push(e.unwrap());
            }
            Ok(())
        })
        .unwrap();
    for (sha, h) in records {
        let path = dirs[h.datastore.as_str()].join(h.location.as_str());
        let bytes = std::fs::read(&path)
            .unwrap_or_else(|e| panic!("hash record {sha} points at {}: {e}", path.display()));
        assert_eq!(bytes.len() as u64, h.size_bytes, "blob {sha}: size");
        assert_eq!(sha256_hex(&bytes), sha.to_hex(), "blob {sha}: content");
    }
    uploads
}

/// Stops the server and checks the chain and that every projection equals a replay.
async fn stop_and_verify(srv: &mut TestServer) {
    srv.stop().await;
    let (head, divergence) = Ledger::verify_path(&srv.db_path()).expect("the ledger verifies");
    assert_eq!(
        divergence, None,
        "projections differ from a replay at {head:?}"
    );
}

/// Asserts a 5xx Matrix error that does not describe the internal cause.
async fn expect_server_error(resp: reqwest::Response) {
    let status = resp.status();
    let text = resp.text().await.unwrap();
    assert!(
        status.is_server_error(),
        "expected 5xx, got {status}: {text}"
    );
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["errcode"], "M_UNKNOWN", "{text}");
    assert!(!text.contains("injected"), "internal cause leaked: {text}");
}

async fn upload_fails(srv: &TestServer, bytes: &[u8]) {
    let resp = srv
        .upload_raw(
            ALICE,
            bytes.to_vec(),
            Some("application/octet-stream"),
            None,
        )
        .await;
    expect_server_error(resp).await;
}

/// A download of `mxc` must not hand out anything but its exact bytes: a 200 whose body
/// completes is byte-identical; anything else is an error status or a broken connection
/// (a fresh client each time: a broken answer closes its connection).
async fn assert_never_wrong(srv: &TestServer, mxc: &str, bytes: &[u8]) {
    let (server, id) = parse_mxc(mxc);
    let url = srv.url(&format!("/_matrix/media/v3/download/{server}/{id}"));
    let Ok(resp) = common::client().get(url).send().await else {
        return;
    };
    if resp.status() == StatusCode::OK {
        if let Ok(body) = resp.bytes().await {
            assert!(
                body == bytes,
                "{mxc} served {} wrong bytes as complete",
                body.len()
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Uploads: blob before event.
// ---------------------------------------------------------------------------------------------

/// Each way a commit can fail answers 5xx, appends nothing, leaves no spool file, and a retry
/// of the same bytes succeeds; what the failure left on disk (nothing, a whole orphan blob, a
/// torn one) is fixed by the retry's rename or by the next start's sweep.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_commits_record_nothing_and_retries_succeed() {
    for fault in [Fault::Fail, Fault::FailAfter, Fault::Tear] {
        for retry in [true, false] {
            let faults = Faults::new();
            let mut srv = start(Opts::default(), &faults).await;
            let dirs = default_dirs(&srv);
            let dir = srv.media_dir();
            let kept = random_bytes(5_000);
            let kept_mxc = srv.upload_bytes(kept.clone()).await;
            let bytes = random_bytes(20_000);
            let blob = blob_path(&dir, &bytes);
            let head = ledger(&srv).head();

            faults.next(Op::Commit, None, fault);
            upload_fails(&srv, &bytes).await;
            assert_eq!(
                faults.pending_rules(),
                0,
                "{fault:?}: the commit was not reached"
            );
            assert_eq!(
                ledger(&srv).head(),
                head,
                "{fault:?}: an event was appended"
            );
            assert_eq!(count_events(&srv, "media.uploaded.v1"), 1);
            assert_eq!(spool_entries(&dir), 0, "{fault:?}: spool file left");
            match fault {
                Fault::Fail => assert!(!blob.exists()),
                Fault::FailAfter => assert_eq!(std::fs::read(&blob).unwrap(), bytes),
                _ => assert_eq!(std::fs::read(&blob).unwrap(), &bytes[..bytes.len() / 2]),
            }
            let uploads = assert_consistent(&srv, &dirs).await;
            assert_eq!(uploads.as_object().unwrap().len(), 1, "{uploads}");

            if retry {
                // The retry finds no hash record and renames its own copy over whatever the
                // failed attempt left.
                let mxc = srv.upload_bytes(bytes.clone()).await;
                assert_eq!(srv.download_bytes(&mxc).await, bytes, "{fault:?}");
                assert_eq!(std::fs::read(&blob).unwrap(), bytes);
                srv.stop().await;
                boot(&mut srv, None).await;
                assert_eq!(srv.download_bytes(&mxc).await, bytes, "{fault:?}");
                assert_eq!(count_blobs(&dir), 2);
            } else {
                srv.stop().await;
                boot(&mut srv, None).await;
                assert!(
                    !blob.exists(),
                    "{fault:?}: the sweep left the unrecorded blob"
                );
                assert_eq!(count_blobs(&dir), 1);
            }
            assert_eq!(srv.download_bytes(&kept_mxc).await, kept);
            assert_consistent(&srv, &dirs).await;
            stop_and_verify(&mut srv).await;
        }
    }
}

/// The spool file cannot be created: 5xx, nothing on disk, nothing recorded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_spool_records_nothing() {
    let faults = Faults::new();
    let mut srv = start(Opts::default(), &faults).await;
    let dir = srv.media_dir();
    let bytes = random_bytes(3_000);
    let head = ledger(&srv).head();
    faults.next(Op::Spool, None, Fault::Fail);
    upload_fails(&srv, &bytes).await;
    assert_eq!(
        faults.calls(common::DS, Op::Commit),
        0,
        "commit without a spool file"
    );
    assert_eq!(ledger(&srv).head(), head);
    assert_eq!(count_blobs(&dir), 0);
    assert_eq!(spool_entries(&dir), 0);
    let mxc = srv.upload_bytes(bytes.clone()).await;
    assert_eq!(srv.download_bytes(&mxc).await, bytes);
    stop_and_verify(&mut srv).await;
}

/// Pause points inside an upload: with the spool file written and before the commit, and
/// with the blob renamed into place but before the event. Neither state is visible through
/// the API, and neither has an event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_steps_are_ordered() {
    let faults = Faults::new();
    let mut srv = start(Opts::default(), &faults).await;
    let dirs = default_dirs(&srv);
    let dir = srv.media_dir();
    let bytes = random_bytes(40_000);
    let blob = blob_path(&dir, &bytes);
    let gate = faults.pause(Op::Commit, None);
    let req = srv
        .client
        .post(srv.url("/_matrix/media/v3/upload"))
        .bearer_auth(ALICE)
        .body(bytes.clone())
        .send();
    let req = tokio::spawn(async move { req.await.unwrap() });

    gate.reached().await;
    // 1. Spooled (and fsynced), not committed.
    assert_eq!(spool_entries(&dir), 1);
    let spooled = std::fs::read_dir(dir.join(".spool"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    assert_eq!(std::fs::read(&spooled).unwrap(), bytes);
    assert!(!blob.exists());
    assert_eq!(count_events(&srv, "media.uploaded.v1"), 0);
    assert_eq!(
        assert_consistent(&srv, &dirs)
            .await
            .as_object()
            .unwrap()
            .len(),
        0
    );
    gate.release();

    gate.reached().await;
    // 2. Committed (renamed, directories fsynced), not recorded.
    assert_eq!(std::fs::read(&blob).unwrap(), bytes);
    assert_eq!(spool_entries(&dir), 0);
    assert_eq!(count_events(&srv, "media.uploaded.v1"), 0);
    assert_eq!(
        assert_consistent(&srv, &dirs)
            .await
            .as_object()
            .unwrap()
            .len(),
        0
    );
    gate.release();

    // 3. Recorded and answered.
    let resp = req.await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let v: Value = resp.json().await.unwrap();
    let mxc = v["content_uri"].as_str().unwrap().to_owned();
    assert_eq!(count_events(&srv, "media.uploaded.v1"), 1);
    assert_eq!(srv.download_bytes(&mxc).await, bytes);
    assert_consistent(&srv, &dirs).await;
    stop_and_verify(&mut srv).await;
}

/// An async upload (`PUT` into a reservation) whose commit fails leaves the reservation
/// pending and unfilled; the retried `PUT` fills it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_async_put_keeps_the_reservation() {
    let faults = Faults::new();
    let mut srv = start(Opts::default(), &faults).await;
    let v: Value = srv
        .client
        .post(srv.url("/_matrix/media/v1/create"))
        .bearer_auth(ALICE)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mxc = v["content_uri"].as_str().unwrap().to_owned();
    let (server, id) = parse_mxc(&mxc);
    let bytes = random_bytes(9_000);
    let put = || {
        srv.client
            .put(srv.url(&format!("/_matrix/media/v3/upload/{server}/{id}")))
            .bearer_auth(ALICE)
            .body(bytes.clone())
            .send()
    };
    for fault in [Fault::Fail, Fault::FailAfter, Fault::Tear] {
        faults.next(Op::Commit, None, fault);
        expect_server_error(put().await.unwrap()).await;
        let resp = srv
            .client
            .get(srv.url(&format!(
                "/_matrix/media/v3/download/{server}/{id}?timeout_ms=0"
            )))
            .send()
            .await
            .unwrap();
        expect_error(resp, StatusCode::GATEWAY_TIMEOUT, "M_NOT_YET_UPLOADED").await;
    }
    assert_eq!(count_events(&srv, "media.uploaded.v1"), 0);
    assert_eq!(put().await.unwrap().status(), StatusCode::OK);
    assert_eq!(srv.download_bytes(&mxc).await, bytes);
    expect_error(
        put().await.unwrap(),
        StatusCode::CONFLICT,
        "M_CANNOT_OVERWRITE_MEDIA",
    )
    .await;
    assert_consistent(&srv, &default_dirs(&srv)).await;
    stop_and_verify(&mut srv).await;
}

/// A duplicate upload whose existence check of the deduplicated blob fails stores its own
/// copy at the same place: the upload succeeds and both media serve the bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_dedup_check_still_stores_correct_bytes() {
    let faults = Faults::new();
    let mut srv = start(Opts::default(), &faults).await;
    let bytes = random_bytes(12_000);
    let first = srv.upload_bytes(bytes.clone()).await;
    faults.next(Op::SizeOf, None, Fault::Fail);
    let second = srv.upload_bytes(bytes.clone()).await;
    assert_eq!(faults.pending_rules(), 0);
    for m in [&first, &second] {
        assert_eq!(srv.download_bytes(m).await, bytes);
    }
    assert_eq!(count_blobs(&srv.media_dir()), 1);
    assert_consistent(&srv, &default_dirs(&srv)).await;
    stop_and_verify(&mut srv).await;
}

/// A blob that was lost is put back by the next upload of the same bytes ("dedup repair").
/// If that repair is torn, the torn file sits where the hash record points: it must never be
/// served as the media's bytes, and the next upload of the same bytes (or a restart) must
/// leave the correct bytes there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn torn_repair_of_a_lost_blob_is_not_served_and_is_repaired() {
    let faults = Faults::new();
    let mut srv = start(Opts::default(), &faults).await;
    let bytes = random_bytes(30_000);
    let blob = blob_path(&srv.media_dir(), &bytes);
    let first = srv.upload_bytes(bytes.clone()).await;
    std::fs::remove_file(&blob).unwrap();
    expect_server_error(srv.download(&first).await).await;

    // The repairing upload's commit tears.
    faults.next(Op::Commit, None, Fault::Tear);
    upload_fails(&srv, &bytes).await;
    assert_eq!(std::fs::read(&blob).unwrap().len(), bytes.len() / 2);
    assert_never_wrong(&srv, &first, &bytes).await;

    // The next upload of the same bytes must repair the blob, not deduplicate onto the torn
    // file.
    let second = srv.upload_bytes(bytes.clone()).await;
    for m in [&first, &second] {
        assert_never_wrong(&srv, m, &bytes).await;
    }
    assert_eq!(
        std::fs::read(&blob).unwrap().len(),
        bytes.len(),
        "the upload was deduplicated onto the torn blob instead of repairing it"
    );
    srv.stop().await;
    boot(&mut srv, None).await;
    for m in [&first, &second] {
        assert_eq!(
            srv.download_bytes(m).await,
            bytes,
            "{m} after the repairing upload and a restart"
        );
    }
    assert_consistent(&srv, &default_dirs(&srv)).await;
    stop_and_verify(&mut srv).await;
}

/// A thumbnail whose blob commit fails (up front, or torn) answers 5xx and records no
/// `thumbnail.generated.v1`; the next request generates and stores it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_thumbnail_commit_records_nothing() {
    let faults = Faults::new();
    let mut srv = start(Opts::default(), &faults).await;
    let img = image::RgbImage::from_fn(200, 150, |x, y| image::Rgb([x as u8, y as u8, 99]));
    let mut png = Vec::new();
    image::DynamicImage::ImageRgb8(img)
        .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .unwrap();
    let mxc = srv.upload(ALICE, png, Some("image/png"), None).await;
    let (server, id) = parse_mxc(&mxc);
    let url = srv.url(&format!(
        "/_matrix/media/v3/thumbnail/{server}/{id}?width=32&height=32&method=crop"
    ));
    for fault in [Fault::Fail, Fault::Tear] {
        faults.next(Op::Commit, None, fault);
        expect_server_error(
            srv.client
                .get(&url)
                .bearer_auth(ALICE)
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(faults.pending_rules(), 0, "{fault:?}: no commit");
        assert_eq!(count_events(&srv, "thumbnail.generated.v1"), 0, "{fault:?}");
        assert_eq!(spool_entries(&srv.media_dir()), 0, "{fault:?}");
    }
    let resp = srv
        .client
        .get(&url)
        .bearer_auth(ALICE)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let thumb = resp.bytes().await.unwrap();
    let decoded = image::load_from_memory(&thumb).unwrap();
    assert_eq!((decoded.width(), decoded.height()), (32, 32));
    assert_eq!(count_events(&srv, "thumbnail.generated.v1"), 1);
    let stored = std::fs::read(blob_path(&srv.media_dir(), &thumb)).unwrap();
    assert!(
        stored == thumb,
        "the stored thumbnail differs from the served one"
    );
    assert_consistent(&srv, &default_dirs(&srv)).await;
    srv.stop().await;
    boot(&mut srv, None).await;
    let url = srv.url(&format!(
        "/_matrix/media/v3/thumbnail/{server}/{id}?width=32&height=32&method=crop"
    ));
    let again = srv
        .client
        .get(&url)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert!(again == thumb);
    assert_eq!(count_events(&srv, "thumbnail.generated.v1"), 1);
    stop_and_verify(&mut srv).await;
}

// ---------------------------------------------------------------------------------------------
// Reads.
// ---------------------------------------------------------------------------------------------

/// A failing open answers 5xx and a read failing mid-stream breaks the body (never a
/// complete 200 of wrong bytes); the next download is whole; nothing is recorded but
/// accesses.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_reads_are_never_served_as_complete() {
    let faults = Faults::new();
    let mut srv = start(Opts::default(), &faults).await;
    let bytes = random_bytes(600_000);
    let mxc = srv.upload_bytes(bytes.clone()).await;

    faults.next(Op::Open, None, Fault::Fail);
    expect_server_error(srv.download(&mxc).await).await;

    faults.next(Op::Open, None, Fault::BreakStream);
    let (server, id) = parse_mxc(&mxc);
    let sent = srv
        .client
        .get(srv.url(&format!("/_matrix/media/v3/download/{server}/{id}")))
        .bearer_auth(ALICE)
        .send()
        .await;
    // The connection is cut when the read fails. Whether the status line left the server
    // before that depends on how much hyper had buffered: either way the client never holds
    // a complete response.
    if let Ok(resp) = sent {
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(
            resp.content_length(),
            Some(bytes.len() as u64),
            "the announced length is the whole blob"
        );
        assert!(
            resp.bytes().await.is_err(),
            "a body broken mid-stream completed"
        );
    }
    assert_eq!(faults.pending_rules(), 0);
    assert_eq!(srv.download_bytes(&mxc).await, bytes);
    assert_eq!(count_events(&srv, "media.uploaded.v1"), 1);
    stop_and_verify(&mut srv).await;
}

/// A failing listing skips the start-up sweep (the server still starts); the next start
/// sweeps.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_listing_defers_the_sweep() {
    let faults = Faults::new();
    let mut srv = start(Opts::default(), &faults).await;
    let bytes = random_bytes(2_000);
    faults.next(Op::Commit, None, Fault::FailAfter);
    upload_fails(&srv, &bytes).await;
    let orphan = blob_path(&srv.media_dir(), &bytes);
    assert!(orphan.exists());
    srv.stop().await;
    faults.next(Op::List, None, Fault::Fail);
    boot(&mut srv, Some(faults.hook())).await;
    assert_eq!(faults.pending_rules(), 0);
    assert!(orphan.exists(), "swept without a listing?");
    srv.stop().await;
    boot(&mut srv, Some(faults.hook())).await;
    assert!(
        !orphan.exists(),
        "the orphan survived a start with a listing"
    );
    stop_and_verify(&mut srv).await;
}

// ---------------------------------------------------------------------------------------------
// Purge: the event before the deletion.
// ---------------------------------------------------------------------------------------------

fn sid(mxc: &str) -> String {
    let (server, id) = parse_mxc(mxc);
    format!("{server}/{id}")
}

async fn purge_request(srv: &TestServer, mxc: &str) -> reqwest::Response {
    srv.client
        .post(srv.url(&format!("{ADMIN_API}/purge/{}", sid(mxc))))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap()
}

async fn purge(srv: &TestServer, mxc: &str) {
    let resp = purge_request(srv, mxc).await;
    let status = resp.status();
    let v: Value = resp.json().await.unwrap();
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["affected"], serde_json::json!([mxc]), "{v}");
}

async fn history_types(srv: &TestServer, mxc: &str) -> Vec<String> {
    let h = get_json(srv, &format!("{ADMIN_API}/media/{}/history", sid(mxc))).await;
    h["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap().to_owned())
        .collect()
}

/// The purged media is gone from every read while its blob is still on disk.
async fn assert_gone_but_on_disk(srv: &TestServer, mxc: &str, blob: &Path, bytes: &[u8]) {
    expect_error(
        srv.download(mxc).await,
        StatusCode::NOT_FOUND,
        "M_NOT_FOUND",
    )
    .await;
    let uploads = assert_consistent(srv, &default_dirs(srv)).await;
    assert!(uploads.get(mxc).is_none(), "{uploads}");
    assert_eq!(
        std::fs::read(blob).unwrap(),
        bytes,
        "blob deleted too early"
    );
}

/// Pause points inside a purge: before the delete (purge recorded, bytes on disk) and after
/// it (bytes gone, deletion not yet recorded).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purge_steps_are_ordered() {
    let faults = Faults::new();
    let mut srv = start(Opts::default(), &faults).await;
    let bytes = random_bytes(10_000);
    let other = random_bytes(10_000);
    let blob = blob_path(&srv.media_dir(), &bytes);
    let mxc = srv.upload_bytes(bytes.clone()).await;
    let other_mxc = srv.upload_bytes(other.clone()).await;

    let gate = faults.pause(Op::Delete, None);
    let req = tokio::spawn({
        let (client, url) = (
            srv.client.clone(),
            srv.url(&format!("{ADMIN_API}/purge/{}", sid(&mxc))),
        );
        async move { client.post(url).bearer_auth(ADMIN).send().await.unwrap() }
    });
    gate.reached().await;
    assert_eq!(count_events(&srv, "media.purged.v1"), 1);
    assert_eq!(pending_deletions(&srv), 1);
    assert_gone_but_on_disk(&srv, &mxc, &blob, &bytes).await;
    let types = history_types(&srv, &mxc).await;
    assert!(types.contains(&"media.purged.v1".to_owned()), "{types:?}");
    gate.release();

    gate.reached().await;
    assert!(!blob.exists());
    assert_eq!(count_events(&srv, "blob.deleted.v1"), 0);
    assert_eq!(pending_deletions(&srv), 1);
    gate.release();

    let resp = req.await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(count_events(&srv, "blob.deleted.v1"), 1);
    assert_eq!(pending_deletions(&srv), 0);
    assert_eq!(srv.download_bytes(&other_mxc).await, other);
    stop_and_verify(&mut srv).await;
}

/// A delete that fails after the purge event leaves the deletion pending: the media is gone
/// from the API, the blob stays on disk. A start whose delete fails again keeps it pending
/// (the sweep removes the unreferenced file, unrecorded); the next healthy start records it.
/// The stopped ledger verifies after each start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_purge_delete_is_finished_by_a_healthy_start() {
    let faults = Faults::new();
    let mut srv = start(Opts::default(), &faults).await;
    let bytes = random_bytes(10_000);
    let other = random_bytes(7_000);
    let blob = blob_path(&srv.media_dir(), &bytes);
    let mxc = srv.upload_bytes(bytes.clone()).await;
    let other_mxc = srv.upload_bytes(other.clone()).await;

    faults.next(Op::Delete, None, Fault::Fail);
    purge(&srv, &mxc).await;
    assert_eq!(faults.pending_rules(), 0);
    assert_eq!(pending_deletions(&srv), 1);
    assert_eq!(count_events(&srv, "blob.deleted.v1"), 0);
    assert_gone_but_on_disk(&srv, &mxc, &blob, &bytes).await;
    expect_error(
        purge_request(&srv, &mxc).await,
        StatusCode::NOT_FOUND,
        "M_NOT_FOUND",
    )
    .await;
    stop_and_verify(&mut srv).await;

    // A start whose resumed delete fails too.
    faults.next(Op::Delete, None, Fault::Fail);
    boot(&mut srv, Some(faults.hook())).await;
    assert_eq!(
        faults.pending_rules(),
        0,
        "the start did not resume the deletion"
    );
    assert_eq!(pending_deletions(&srv), 1);
    assert_eq!(count_events(&srv, "blob.deleted.v1"), 0);
    expect_error(
        srv.download(&mxc).await,
        StatusCode::NOT_FOUND,
        "M_NOT_FOUND",
    )
    .await;
    stop_and_verify(&mut srv).await;

    // A healthy start.
    boot(&mut srv, None).await;
    assert_eq!(pending_deletions(&srv), 0);
    assert_eq!(count_events(&srv, "blob.deleted.v1"), 1);
    assert!(!blob.exists());
    assert_eq!(srv.download_bytes(&other_mxc).await, other);
    assert_eq!(count_blobs(&srv.media_dir()), 1);
    assert_consistent(&srv, &default_dirs(&srv)).await;
    stop_and_verify(&mut srv).await;
}

/// Same bytes uploaded again while the deletion is pending: the next start keeps the blob
/// (`kept`), and the new media serves it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_purge_delete_then_reupload_keeps_the_blob() {
    let faults = Faults::new();
    let mut srv = start(Opts::default(), &faults).await;
    let bytes = random_bytes(10_000);
    let blob = blob_path(&srv.media_dir(), &bytes);
    let mxc = srv.upload_bytes(bytes.clone()).await;
    faults.next(Op::Delete, None, Fault::Fail);
    purge(&srv, &mxc).await;
    assert_gone_but_on_disk(&srv, &mxc, &blob, &bytes).await;
    let again = srv.upload_bytes(bytes.clone()).await;
    srv.stop().await;
    boot(&mut srv, None).await;
    assert_eq!(pending_deletions(&srv), 0);
    assert_eq!(srv.download_bytes(&again).await, bytes);
    expect_error(
        srv.download(&mxc).await,
        StatusCode::NOT_FOUND,
        "M_NOT_FOUND",
    )
    .await;
    let mut kept = Vec::new();
    ledger(&srv)
        .events(Seq(1), Seq(u64::MAX), |env| {
            if let media_ledger_events::Event::BlobDeletedV1(e) = env.event {
                kept.push(e.kept);
            }
            true
        })
        .unwrap();
    assert_eq!(kept, [true]);
    assert_consistent(&srv, &default_dirs(&srv)).await;
    stop_and_verify(&mut srv).await;
}

// ---------------------------------------------------------------------------------------------
// Transfers: the source copy stays live until the target copy is verified and switched in.
// ---------------------------------------------------------------------------------------------

fn transfer_opts() -> Opts {
    Opts {
        datastores: Some(
            "[[datastores]]\nid = \"a\"\ntype = \"file\"\npath = {dir:media-a}\nkinds = [\"all\"]\n\
             [[datastores]]\nid = \"b\"\ntype = \"file\"\npath = {dir:media-b}\nkinds = [\"remote_media\"]\n"
                .to_owned(),
        ),
        extra_toml: "[transfers]\nparallel = 1\nmax_attempts = 3\nretry_base_ms = 10\n".to_owned(),
        ..Opts::default()
    }
}

fn transfer_dirs(srv: &TestServer) -> Dirs {
    [
        ("a".to_owned(), srv.path_of("media-a")),
        ("b".to_owned(), srv.path_of("media-b")),
    ]
    .into()
}

async fn start_transfer(srv: &TestServer) -> u64 {
    let resp = srv
        .client
        .post(srv.url(&format!("{ADMIN_API}/datastores/a/transfer_to/b")))
        .bearer_auth(SECRET)
        .send()
        .await
        .unwrap();
    let status = resp.status();
    let v: Value = resp.json().await.unwrap();
    assert_eq!(status, StatusCode::OK, "{v}");
    v["task_id"].as_u64().unwrap()
}

async fn wait_task(srv: &TestServer, id: u64) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let t = get_json(srv, &format!("{ADMIN_API}/tasks/{id}")).await;
        if t["is_finished"] == true {
            return t;
        }
        assert!(Instant::now() < deadline, "task {id} not finished: {t}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Where the uploads listing says `mxc` lives.
async fn datastore_of(srv: &TestServer, mxc: &str) -> String {
    let uploads = assert_consistent(srv, &transfer_dirs(srv)).await;
    uploads[mxc]["datastore_id"].as_str().unwrap().to_owned()
}

/// One transfer of one blob under `arm`'s faults; returns the server, the task and the
/// media, after checking the media downloads whole.
async fn transfer_with(
    streamed: bool,
    arm: impl FnOnce(&Faults),
) -> (TestServer, Value, String, Vec<u8>, Arc<Faults>) {
    let faults = Faults::new();
    if streamed {
        faults.streamed.lock().push("a".to_owned());
    }
    let srv = start(transfer_opts(), &faults).await;
    let bytes = random_bytes(50_000);
    let mxc = srv.upload_bytes(bytes.clone()).await;
    assert_eq!(datastore_of(&srv, &mxc).await, "a");
    arm(&faults);
    let id = start_transfer(&srv).await;
    let task = wait_task(&srv, id).await;
    assert_eq!(faults.pending_rules(), 0, "a fault was not reached: {task}");
    assert_eq!(srv.download_bytes(&mxc).await, bytes);
    (srv, task, mxc, bytes, faults)
}

/// The target write fails on every attempt (before writing, or torn), by `put_from` (a
/// local source) and by the streamed copy's commit: the task gives up on the blob, whose
/// source copy stays live and downloadable; whatever reached the target is an orphan the
/// next start sweeps.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_target_writes_keep_the_source_live() {
    for streamed in [false, true] {
        for fault in [Fault::Fail, Fault::Tear] {
            let op = if streamed { Op::Commit } else { Op::PutFrom };
            let (mut srv, task, mxc, bytes, _faults) =
                transfer_with(streamed, |f| f.at(op, Some("b"), 1, 3, fault)).await;
            let what = format!("{op:?} {fault:?}");
            assert_eq!(task["blobs_failed"], 1, "{what}: {task}");
            assert_eq!(task["attempts_failed"], 3, "{what}: {task}");
            assert!(
                !task["error_message"].as_str().unwrap().is_empty(),
                "{what}: {task}"
            );
            assert_eq!(datastore_of(&srv, &mxc).await, "a", "{what}");
            let source = blob_path(&srv.path_of("media-a"), &bytes);
            let target = blob_path(&srv.path_of("media-b"), &bytes);
            assert_eq!(std::fs::read(&source).unwrap(), bytes, "{what}");
            assert_eq!(target.exists(), fault != Fault::Fail, "{what}");
            assert_eq!(spool_entries(&srv.path_of("media-b")), 0, "{what}");
            srv.stop().await;
            boot(&mut srv, None).await;
            assert!(
                !target.exists(),
                "{what}: the target orphan survived the sweep"
            );
            assert_eq!(srv.download_bytes(&mxc).await, bytes, "{what}");
            stop_and_verify(&mut srv).await;
        }
    }
}

/// A failed first attempt is retried: after a write that failed up front the copy is made
/// again; after one that failed past its rename the read-back finds the copy whole and it
/// is switched in without a second copy; a torn copy fails the read-back and is replaced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_first_target_write_is_retried() {
    for streamed in [false, true] {
        for fault in [Fault::Fail, Fault::FailAfter, Fault::Tear] {
            let op = if streamed { Op::Commit } else { Op::PutFrom };
            let (mut srv, task, mxc, bytes, faults) =
                transfer_with(streamed, |f| f.next(op, Some("b"), fault)).await;
            let what = format!("{op:?} {fault:?}");
            assert_eq!(task["error_message"], "", "{what}: {task}");
            assert_eq!(task["attempts_failed"], 1, "{what}: {task}");
            assert_eq!(task["blobs_done"], 1, "{what}: {task}");
            let writes = if fault == Fault::FailAfter { 1 } else { 2 };
            assert_eq!(faults.calls("b", op), writes, "{what}");
            assert_eq!(datastore_of(&srv, &mxc).await, "b", "{what}");
            assert!(!blob_path(&srv.path_of("media-a"), &bytes).exists());
            stop_and_verify(&mut srv).await;
        }
    }
}

/// The read-back of the target copy fails on every attempt (one read after the first copy,
/// two in each later attempt: the "already there?" check and the check after copying):
/// never switched, the source stays live.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_read_back_keeps_the_source_live() {
    let (mut srv, task, mxc, bytes, _faults) =
        transfer_with(false, |f| f.at(Op::Open, Some("b"), 1, 5, Fault::Fail)).await;
    assert_eq!(task["blobs_failed"], 1, "{task}");
    assert_eq!(datastore_of(&srv, &mxc).await, "a");
    assert_eq!(
        std::fs::read(blob_path(&srv.path_of("media-a"), &bytes)).unwrap(),
        bytes
    );
    assert_eq!(count_events(&srv, "blob.moved.v1"), 0);
    srv.stop().await;
    boot(&mut srv, None).await;
    assert!(!blob_path(&srv.path_of("media-b"), &bytes).exists());
    assert_eq!(srv.download_bytes(&mxc).await, bytes);
    stop_and_verify(&mut srv).await;
}

/// The source delete fails after the switch: the media reads the target copy, the task
/// ends without error, the old copy is an orphan the next start sweeps.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_source_delete_leaves_an_orphan_only() {
    let (mut srv, task, mxc, bytes, _faults) =
        transfer_with(false, |f| f.next(Op::Delete, Some("a"), Fault::Fail)).await;
    assert_eq!(task["error_message"], "", "{task}");
    assert_eq!(datastore_of(&srv, &mxc).await, "b");
    let source = blob_path(&srv.path_of("media-a"), &bytes);
    assert!(source.exists());
    assert_eq!(count_events(&srv, "blob.source_deleted.v1"), 0);
    srv.stop().await;
    boot(&mut srv, None).await;
    assert!(!source.exists(), "the old source copy survived the sweep");
    assert_eq!(srv.download_bytes(&mxc).await, bytes);
    stop_and_verify(&mut srv).await;
}

/// Pause points inside a transfer: before and after the target write (not switched: the
/// media reads the source), before and after the source delete (switched: the media reads
/// the target). The media downloads whole at every point.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transfer_steps_are_ordered() {
    let faults = Faults::new();
    let mut srv = start(transfer_opts(), &faults).await;
    let bytes = random_bytes(80_000);
    let mxc = srv.upload_bytes(bytes.clone()).await;
    let source = blob_path(&srv.path_of("media-a"), &bytes);
    let target = blob_path(&srv.path_of("media-b"), &bytes);
    let write = faults.pause(Op::PutFrom, Some("b"));
    let delete = faults.pause(Op::Delete, Some("a"));
    let id = start_transfer(&srv).await;

    write.reached().await;
    assert!(source.exists() && !target.exists());
    assert_eq!(datastore_of(&srv, &mxc).await, "a");
    assert_eq!(srv.download_bytes(&mxc).await, bytes);
    write.release();

    write.reached().await;
    assert_eq!(std::fs::read(&target).unwrap(), bytes);
    assert!(source.exists());
    assert_eq!(datastore_of(&srv, &mxc).await, "a");
    assert_eq!(count_events(&srv, "blob.moved.v1"), 0);
    assert_eq!(srv.download_bytes(&mxc).await, bytes);
    write.release();

    delete.reached().await;
    assert_eq!(count_events(&srv, "blob.moved.v1"), 1);
    assert!(source.exists() && target.exists());
    assert_eq!(datastore_of(&srv, &mxc).await, "b");
    assert_eq!(srv.download_bytes(&mxc).await, bytes);
    delete.release();

    delete.reached().await;
    assert!(!source.exists());
    assert_eq!(count_events(&srv, "blob.source_deleted.v1"), 0);
    assert_eq!(datastore_of(&srv, &mxc).await, "b");
    assert_eq!(srv.download_bytes(&mxc).await, bytes);
    delete.release();

    let task = wait_task(&srv, id).await;
    assert_eq!(task["error_message"], "", "{task}");
    assert_eq!(count_events(&srv, "blob.source_deleted.v1"), 1);
    assert_eq!(srv.download_bytes(&mxc).await, bytes);
    stop_and_verify(&mut srv).await;
}

/// A download that found the media just before a purge removed it (its open of the blob
/// comes after the deletion) is answered 404 `M_NOT_FOUND`, not 500: the failed open makes
/// it look the media up again, and it is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_download_racing_a_purge_is_a_404() {
    let faults = Faults::new();
    let mut srv = start(Opts::default(), &faults).await;
    let bytes = random_bytes(10_000);
    let mxc = srv.upload_bytes(bytes.clone()).await;
    let kept = srv.upload_bytes(random_bytes(5_000)).await;

    let gate = faults.pause(Op::Open, None);
    let download = tokio::spawn({
        let (client, url) = (
            srv.client.clone(),
            srv.url(&format!("/_matrix/client/v1/media/download/{}", sid(&mxc))),
        );
        async move { client.get(url).bearer_auth(ALICE).send().await.unwrap() }
    });
    // The download holds the record and the blob's place; the purge runs to its end.
    gate.reached().await;
    purge(&srv, &mxc).await;
    assert_eq!(count_events(&srv, "blob.deleted.v1"), 1);
    gate.release();
    gate.reached().await;
    gate.release();

    expect_error(
        download.await.unwrap(),
        StatusCode::NOT_FOUND,
        "M_NOT_FOUND",
    )
    .await;
    assert_eq!(srv.download_bytes(&kept).await.len(), 5_000);
    stop_and_verify(&mut srv).await;
}

// ---------------------------------------------------------------------------------------------
// Writers racing on one blob or one media id.
// ---------------------------------------------------------------------------------------------

/// A remote homeserver "fake.test" answering every media with `bytes` (federation endpoint:
/// M_UNRECOGNIZED, so the legacy endpoint is used); returns its base URL.
async fn fake_remote(bytes: Vec<u8>) -> String {
    use axum::response::IntoResponse;
    let unrecognized = || async {
        (
            StatusCode::NOT_FOUND,
            [("content-type", "application/json")],
            r#"{"errcode":"M_UNRECOGNIZED","error":"Unrecognized request"}"#,
        )
            .into_response()
    };
    let router = axum::Router::new()
        .route(
            "/_matrix/federation/v1/media/download/{id}",
            axum::routing::get(unrecognized),
        )
        .route(
            "/_matrix/media/v3/download/{server}/{id}",
            axum::routing::get(move || async move {
                ([("content-type", "application/octet-stream")], bytes).into_response()
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    format!("http://{addr}")
}

/// Waits until `cond` holds (panics after [`REACH`]).
async fn wait_until(mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + REACH;
    while !cond() {
        assert!(Instant::now() < deadline, "condition not reached in time");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A remote fetch whose bytes are already stored (a local upload, in datastore `a`; remote
/// media goes to `b`) reuses that blob; a purge of the local media commits between the
/// fetch's look-up and its event. The fetch records the blob where it is (`a`, not its own
/// pick `b`), so the purge's deleter, which waits for the blob's lock, finds it claimed again
/// and keeps it: the remote media downloads, and no live blob is missing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remote_fetch_racing_a_purge_keeps_the_shared_blob() {
    let bytes = random_bytes(20_000);
    let fake = fake_remote(bytes.clone()).await;
    let faults = Faults::new();
    let opts = Opts {
        datastores: Some(
            "[[datastores]]\nid = \"a\"\ntype = \"file\"\npath = {dir:media-a}\nkinds = [\"local_media\"]\n\
             [[datastores]]\nid = \"b\"\ntype = \"file\"\npath = {dir:media-b}\nkinds = [\"remote_media\"]\n"
                .into(),
        ),
        extra_toml: format!(
            "[federation]\nsigning_key_path = {{dir:signing.key}}\npins = {{ \"fake.test\" = \"{fake}\" }}\n"
        ),
        ..Opts::default()
    };
    let mut srv = start(opts, &faults).await;
    let local = srv.upload_bytes(bytes.clone()).await;

    // The fetch holds the blob's lock and has found the local upload's blob in `a`.
    let gate = faults.pause(Op::SizeOf, Some("a"));
    let fetch = {
        let req = srv
            .client
            .get(srv.url("/_matrix/client/v1/media/download/fake.test/racy"))
            .bearer_auth(ALICE);
        tokio::spawn(async move {
            let resp = req.send().await.unwrap();
            (resp.status(), resp.bytes().await.unwrap())
        })
    };
    gate.reached().await;
    let release_after_the_purge_commits = async {
        wait_until(|| count_events(&srv, "media.purged.v1") == 1).await;
        gate.release();
        gate.reached().await;
        gate.release();
    };
    let (purged, ()) = tokio::join!(purge_request(&srv, &local), release_after_the_purge_commits);
    assert_eq!(purged.status(), StatusCode::OK);
    let (status, body) = fetch.await.unwrap();
    assert_eq!(status, StatusCode::OK);
    assert!(body == bytes, "the fetch served other bytes");

    wait_until(|| count_events(&srv, "blob.deleted.v1") == 1).await;
    assert!(blob_path(&srv.path_of("media-a"), &bytes).exists());
    let again = srv
        .client
        .get(srv.url("/_matrix/client/v1/media/download/fake.test/racy"))
        .bearer_auth(ALICE)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), StatusCode::OK);
    assert!(again.bytes().await.unwrap() == bytes);
    let config = Config::parse(&srv.config_text).unwrap();
    let datastores = media_ledger::datastore::Datastores::from_config(&config.datastores).unwrap();
    let report = media_ledger::blob_check::check_blobs(ledger(&srv), &datastores)
        .await
        .unwrap();
    assert!(report.missing.is_empty(), "{report}");
    let dirs: Dirs = [
        ("a".to_owned(), srv.path_of("media-a")),
        ("b".to_owned(), srv.path_of("media-b")),
    ]
    .into();
    assert_consistent(&srv, &dirs).await;
    stop_and_verify(&mut srv).await;
}

/// Two PUTs fill one reservation with different bytes, both past the reservation check with
/// their bytes spooled. The first is recorded; the second is refused (409) and its committed
/// blob, which no record names, is removed right away (not left for the next start's sweep).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_async_puts_leave_no_unrecorded_blob() {
    let faults = Faults::new();
    let mut srv = start(Opts::default(), &faults).await;
    let v: Value = srv
        .client
        .post(srv.url("/_matrix/media/v1/create"))
        .bearer_auth(ALICE)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mxc = v["content_uri"].as_str().unwrap().to_owned();
    let url = srv.url(&format!("/_matrix/media/v3/upload/{}", sid(&mxc)));
    let first = random_bytes(9_000);
    // Other bytes under another blob lock stripe (the first 12 bits of the hash).
    let second = loop {
        let b = random_bytes(7_000);
        if sha256_hex(&b)[..3] != sha256_hex(&first)[..3] {
            break b;
        }
    };
    let put = |bytes: &[u8]| {
        let req = srv.client.put(&url).bearer_auth(ALICE).body(bytes.to_vec());
        tokio::spawn(async move { req.send().await.unwrap() })
    };
    let first_commit = faults.pause(Op::Commit, None);
    let first_put = put(&first);
    first_commit.reached().await;
    let second_commit = faults.pause(Op::Commit, None);
    let second_put = put(&second);
    second_commit.reached().await;

    first_commit.release();
    first_commit.reached().await;
    first_commit.release();
    assert_eq!(first_put.await.unwrap().status(), StatusCode::OK);
    second_commit.release();
    second_commit.reached().await;
    second_commit.release();
    expect_error(
        second_put.await.unwrap(),
        StatusCode::CONFLICT,
        "M_CANNOT_OVERWRITE_MEDIA",
    )
    .await;

    let dir = srv.media_dir();
    assert!(
        !blob_path(&dir, &second).exists(),
        "the refused PUT's blob stayed"
    );
    assert_eq!(count_blobs(&dir), 1);
    assert_eq!(srv.download_bytes(&mxc).await, first);
    assert_consistent(&srv, &default_dirs(&srv)).await;
    stop_and_verify(&mut srv).await;
}
