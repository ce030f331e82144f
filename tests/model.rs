#![allow(clippy::unwrap_used, clippy::expect_used)]
//! A model-based property test: random sequences of public operations (uploads with
//! repeated bytes, downloads, async create + put, quarantine, unquarantine, pin / unpin,
//! purge of one media, purge of the quarantined, and crash-and-reopen by SIGKILL of the real
//! `media-ledger` binary) run against the server and against a small in-memory model. After
//! every step they must agree: every known media downloads byte-identical or answers 404
//! (504 while an async reservation is unfilled), uploads of quarantined bytes answer 403,
//! the counts the moderation routes return are the model's, the uploads listing is the
//! model's live media, the datastore holds exactly the blobs of live media, no spool file is
//! left. At the end of each case `media-ledger verify` exits 0.
//!
//! `MODEL_CASES` (default 16) and `MODEL_OPS` (most operations per case, default 30) raise
//! the effort: `MODEL_CASES=200 MODEL_OPS=60 cargo test --test server model::`. Shrinking a failure
//! runs whole cases again: it stops after `MODEL_SHRINK` steps (256) or `MODEL_SHRINK_MS`
//! (30 000 ms), whichever comes first.

use crate::common;

use common::s3::{file_blob_path, free_port};
use common::{blob_files, config_text, parse_mxc, sha256_hex, Opts, ADMIN, ALICE, SECRET};
use proptest::prelude::*;
use reqwest::{Client, StatusCode};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const ADMIN_API: &str = "/_matrix/media/unstable/admin";
/// Distinct byte strings a case draws its uploads from (so duplicates are frequent).
const POOL: usize = 5;

fn env_or(name: &str, default: u32) -> u32 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[derive(Debug, Clone)]
enum Op {
    Upload(usize),
    Download(usize),
    /// `POST /v1/create` then `PUT` of pool entry `.1`.
    AsyncUpload(usize),
    Quarantine(usize),
    Unquarantine(usize),
    SetPinned(usize, bool),
    Purge(usize),
    PurgeQuarantined,
    /// SIGKILL, then start again on the same directories.
    Crash,
}

fn op() -> impl Strategy<Value = Op> {
    let pick = 0usize..64;
    prop_oneof![
        5 => (0..POOL).prop_map(Op::Upload),
        3 => pick.clone().prop_map(Op::Download),
        2 => (0..POOL).prop_map(Op::AsyncUpload),
        3 => pick.clone().prop_map(Op::Quarantine),
        2 => pick.clone().prop_map(Op::Unquarantine),
        2 => (pick.clone(), any::<bool>()).prop_map(|(m, p)| Op::SetPinned(m, p)),
        3 => pick.prop_map(Op::Purge),
        1 => Just(Op::PurgeQuarantined),
        1 => Just(Op::Crash),
    ]
}

// ---------------------------------------------------------------------------------------------
// The model.
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Reserved by `create`, never filled (its `PUT` was refused).
    Pending,
    /// A media record that can be served unless quarantined.
    Live,
    /// Purged while quarantined: the record stays, never served, holds no blob.
    Tombstone,
    /// Purged: no record.
    Gone,
}

#[derive(Debug, Clone)]
struct Media {
    mxc: String,
    data: usize,
    state: State,
    quarantined: bool,
    pinned: bool,
}

#[derive(Debug, Default)]
struct Model {
    media: Vec<Media>,
    /// Hashes (pool indexes) blocked by a repository-wide quarantine.
    blocked: BTreeSet<usize>,
}

impl Model {
    /// Whether `i` has a media record (live or tombstone).
    fn recorded(&self, i: usize) -> bool {
        matches!(self.media[i].state, State::Live | State::Tombstone)
    }

    /// The live media with the bytes of pool entry `data`. Tombstones are never changed by a
    /// quarantine or an unquarantine (they are purged: nothing to show or hide), so neither
    /// counts them.
    fn siblings(&self, data: usize) -> impl Iterator<Item = usize> + '_ {
        (0..self.media.len())
            .filter(move |&j| self.media[j].data == data && self.media[j].state == State::Live)
    }

    /// `quarantine/{server}/{id}` as a repository admin: the count it answers. A tombstone
    /// seed blocks its hash again.
    fn quarantine(&mut self, i: usize) -> u64 {
        if !self.recorded(i) {
            return 0;
        }
        let data = self.media[i].data;
        let changed: Vec<usize> = self
            .siblings(data)
            .filter(|&j| !self.media[j].pinned && !self.media[j].quarantined)
            .collect();
        for &j in &changed {
            self.media[j].quarantined = true;
        }
        self.blocked.insert(data);
        changed.len() as u64
    }

    /// `unquarantine/{server}/{id}`: the count, or `None` for a 404 (no record; a tombstone
    /// seed lifts its hash's block).
    fn unquarantine(&mut self, i: usize) -> Option<u64> {
        if !self.recorded(i) {
            return None;
        }
        let data = self.media[i].data;
        let changed: Vec<usize> = self
            .siblings(data)
            .filter(|&j| self.media[j].quarantined)
            .collect();
        for &j in &changed {
            self.media[j].quarantined = false;
        }
        self.blocked.remove(&data);
        Some(changed.len() as u64)
    }

    /// Purges `i` if it qualifies; whether it was affected.
    fn purge_one(&mut self, i: usize) -> bool {
        let m = &mut self.media[i];
        if m.state != State::Live || m.pinned {
            return false;
        }
        m.state = if m.quarantined {
            State::Tombstone
        } else {
            State::Gone
        };
        true
    }

    /// The pool entries whose blob must be on disk.
    fn blobs(&self) -> BTreeSet<usize> {
        self.media
            .iter()
            .filter(|m| m.state == State::Live)
            .map(|m| m.data)
            .collect()
    }
}

// ---------------------------------------------------------------------------------------------
// The server: the real binary.
// ---------------------------------------------------------------------------------------------

struct Child {
    proc: Option<std::process::Child>,
    config: PathBuf,
    log: PathBuf,
    base: String,
    client: Client,
}

fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_media-ledger")
}

impl Child {
    /// Writes a config for `dir` (a new port each time) and starts `media-ledger serve`.
    async fn start(dir: &Path) -> Self {
        let port = free_port();
        let opts = Opts {
            bind: Some(format!("127.0.0.1:{port}")),
            ..Opts::default()
        };
        let config = dir.join("config.toml");
        std::fs::write(&config, config_text(dir, &opts)).unwrap();
        let log = dir.join("server.log");
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        let proc = std::process::Command::new(binary())
            .args(["serve", "--config"])
            .arg(&config)
            .env("RUST_LOG", "warn")
            .stdin(std::process::Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("media-ledger starts");
        let mut child = Self {
            proc: Some(proc),
            config,
            log,
            base: format!("http://127.0.0.1:{port}"),
            client: common::client(),
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let ready = child
                .client
                .get(child.url("/_matrix/media/v3/config"))
                .bearer_auth(ALICE)
                .send()
                .await
                .is_ok_and(|r| r.status() == StatusCode::OK);
            if ready {
                return child;
            }
            if let Some(status) = child.proc.as_mut().unwrap().try_wait().unwrap() {
                panic!("media-ledger exited with {status}: {}", child.log_text());
            }
            assert!(Instant::now() < deadline, "not ready: {}", child.log_text());
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn kill(&mut self) {
        if let Some(mut p) = self.proc.take() {
            let _ = p.kill();
            let _ = p.wait();
        }
    }

    /// SIGTERM and a clean exit.
    fn stop(&mut self) {
        let mut p = self.proc.take().unwrap();
        let status = std::process::Command::new("kill")
            .args(["-TERM", &p.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = p.try_wait().unwrap() {
                assert!(
                    status.success(),
                    "exited with {status}: {}",
                    self.log_text()
                );
                return;
            }
            if Instant::now() > deadline {
                let _ = p.kill();
                panic!("no exit after SIGTERM: {}", self.log_text());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    async fn post(&self, path: &str, token: &str, body: Option<Value>) -> (StatusCode, Value) {
        let mut req = self.client.post(self.url(path)).bearer_auth(token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status();
        let text = resp.text().await.unwrap();
        let v = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{path}: {status} not JSON ({e}): {text}"));
        (status, v)
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        self.kill();
    }
}

fn sid(mxc: &str) -> String {
    let (server, id) = parse_mxc(mxc);
    format!("{server}/{id}")
}

fn assert_error(what: &str, got: (StatusCode, Value), status: StatusCode, errcode: &str) {
    assert_eq!(got.0, status, "{what}: {}", got.1);
    assert_eq!(got.1["errcode"], errcode, "{what}: {}", got.1);
}

// ---------------------------------------------------------------------------------------------
// Running a case.
// ---------------------------------------------------------------------------------------------

struct Case {
    dir: tempfile::TempDir,
    pool: Vec<Vec<u8>>,
    model: Model,
    srv: Child,
    /// What has run so far, for failure messages.
    trace: Vec<String>,
}

impl Case {
    fn media_dir(&self) -> PathBuf {
        self.dir.path().join("media")
    }

    fn pick(&self, i: usize) -> Option<usize> {
        (!self.model.media.is_empty()).then(|| i % self.model.media.len())
    }

    async fn upload(&mut self, data: usize) {
        let bytes = self.pool[data].clone();
        let resp = self
            .srv
            .client
            .post(self.srv.url("/_matrix/media/v3/upload"))
            .bearer_auth(ALICE)
            .header("content-type", "application/octet-stream")
            .body(bytes)
            .send()
            .await
            .unwrap();
        let status = resp.status();
        let v: Value = resp.json().await.unwrap();
        if self.model.blocked.contains(&data) {
            assert_error(
                "upload of quarantined bytes",
                (status, v),
                StatusCode::FORBIDDEN,
                "M_FORBIDDEN",
            );
            return;
        }
        assert_eq!(status, StatusCode::OK, "upload: {v}");
        self.model.media.push(Media {
            mxc: v["content_uri"].as_str().unwrap().to_owned(),
            data,
            state: State::Live,
            quarantined: false,
            pinned: false,
        });
    }

    async fn async_upload(&mut self, data: usize) {
        let (status, v) = self.srv.post("/_matrix/media/v1/create", ALICE, None).await;
        assert_eq!(status, StatusCode::OK, "create: {v}");
        let mxc = v["content_uri"].as_str().unwrap().to_owned();
        let (server, id) = parse_mxc(&mxc);
        let resp = self
            .srv
            .client
            .put(
                self.srv
                    .url(&format!("/_matrix/media/v3/upload/{server}/{id}")),
            )
            .bearer_auth(ALICE)
            .body(self.pool[data].clone())
            .send()
            .await
            .unwrap();
        let status = resp.status();
        let v: Value = resp.json().await.unwrap();
        let state = if self.model.blocked.contains(&data) {
            assert_error(
                "put of quarantined bytes",
                (status, v),
                StatusCode::FORBIDDEN,
                "M_FORBIDDEN",
            );
            State::Pending
        } else {
            assert_eq!(status, StatusCode::OK, "put: {v}");
            State::Live
        };
        self.model.media.push(Media {
            mxc,
            data,
            state,
            quarantined: false,
            pinned: false,
        });
    }

    /// Downloads media `i` and compares with the model.
    async fn check_download(&self, i: usize) {
        let m = &self.model.media[i];
        let (server, id) = parse_mxc(&m.mxc);
        let resp = self
            .srv
            .client
            .get(self.srv.url(&format!(
                "/_matrix/media/v3/download/{server}/{id}?timeout_ms=0"
            )))
            .send()
            .await
            .unwrap();
        let status = resp.status();
        let body = resp.bytes().await.unwrap();
        let what = format!("download of {} ({m:?})", m.mxc);
        match m.state {
            State::Live if !m.quarantined => {
                assert_eq!(status, StatusCode::OK, "{what}");
                assert!(
                    body == self.pool[m.data],
                    "{what}: {} bytes differ",
                    body.len()
                );
            }
            State::Pending => {
                let v: Value = serde_json::from_slice(&body).unwrap();
                assert_error(
                    &what,
                    (status, v),
                    StatusCode::GATEWAY_TIMEOUT,
                    "M_NOT_YET_UPLOADED",
                );
            }
            _ => {
                let v: Value = serde_json::from_slice(&body).unwrap();
                assert_error(&what, (status, v), StatusCode::NOT_FOUND, "M_NOT_FOUND");
            }
        }
    }

    async fn step(&mut self, op: &Op) {
        match *op {
            Op::Upload(d) => self.upload(d).await,
            Op::AsyncUpload(d) => self.async_upload(d).await,
            Op::Download(i) => {
                if let Some(i) = self.pick(i) {
                    self.check_download(i).await;
                }
            }
            Op::Quarantine(i) => {
                let Some(i) = self.pick(i) else { return };
                let path = format!("{ADMIN_API}/quarantine/{}", sid(&self.model.media[i].mxc));
                let (status, v) = self.srv.post(&path, ADMIN, None).await;
                assert_eq!(status, StatusCode::OK, "quarantine: {v}");
                let want = self.model.quarantine(i);
                assert_eq!(v, json!({ "num_quarantined": want }), "quarantine of {i}");
            }
            Op::Unquarantine(i) => {
                let Some(i) = self.pick(i) else { return };
                let path = format!("{ADMIN_API}/unquarantine/{}", sid(&self.model.media[i].mxc));
                let got = self.srv.post(&path, ADMIN, None).await;
                match self.model.unquarantine(i) {
                    Some(n) => {
                        assert_eq!(got.0, StatusCode::OK, "unquarantine: {}", got.1);
                        assert_eq!(
                            got.1,
                            json!({ "num_unquarantined": n }),
                            "unquarantine of {i}"
                        );
                    }
                    None => assert_error("unquarantine", got, StatusCode::NOT_FOUND, "M_NOT_FOUND"),
                }
            }
            Op::SetPinned(i, pinned) => {
                let Some(i) = self.pick(i) else { return };
                let purpose = if pinned { "pinned" } else { "none" };
                let path = format!(
                    "{ADMIN_API}/media/{}/attributes",
                    sid(&self.model.media[i].mxc)
                );
                let got = self
                    .srv
                    .post(&path, ADMIN, Some(json!({ "purpose": purpose })))
                    .await;
                if self.model.media[i].state == State::Live {
                    assert_eq!(got.0, StatusCode::OK, "attributes: {}", got.1);
                    assert_eq!(got.1, json!({ "purpose": purpose }));
                    self.model.media[i].pinned = pinned;
                } else {
                    assert_error("attributes", got, StatusCode::NOT_FOUND, "M_NOT_FOUND");
                }
            }
            Op::Purge(i) => {
                let Some(i) = self.pick(i) else { return };
                let mxc = self.model.media[i].mxc.clone();
                let got = self
                    .srv
                    .post(&format!("{ADMIN_API}/purge/{}", sid(&mxc)), ADMIN, None)
                    .await;
                if self.model.media[i].state != State::Live {
                    assert_error("purge", got, StatusCode::NOT_FOUND, "M_NOT_FOUND");
                    return;
                }
                let affected = self.model.purge_one(i);
                assert_eq!(got.0, StatusCode::OK, "purge: {}", got.1);
                let want: Vec<&str> = if affected { vec![&mxc] } else { vec![] };
                assert_eq!(got.1, json!({ "purged": true, "affected": want }));
            }
            Op::PurgeQuarantined => {
                let got = self
                    .srv
                    .post(&format!("{ADMIN_API}/purge/quarantined"), ADMIN, None)
                    .await;
                assert_eq!(got.0, StatusCode::OK, "purge/quarantined: {}", got.1);
                let mut want = BTreeSet::new();
                for j in 0..self.model.media.len() {
                    if self.model.media[j].quarantined && self.model.purge_one(j) {
                        want.insert(self.model.media[j].mxc.clone());
                    }
                }
                let affected: BTreeSet<String> = got.1["affected"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|m| m.as_str().unwrap().to_owned())
                    .collect();
                assert_eq!(affected, want, "purge/quarantined");
            }
            Op::Crash => {
                self.srv.kill();
                self.srv = Child::start(self.dir.path()).await;
            }
        }
    }

    /// Everything the server shows equals the model.
    async fn check_all(&self) {
        for i in 0..self.model.media.len() {
            self.check_download(i).await;
        }
        // The uploads listing: the live media, with their hash and quarantine flag.
        let resp = self
            .srv
            .client
            .get(
                self.srv
                    .url(&format!("{ADMIN_API}/usage/localhost/uploads")),
            )
            .bearer_auth(SECRET)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        let listing: BTreeMap<String, Value> = resp.json().await.unwrap();
        let got: BTreeMap<&str, (String, bool)> = listing
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str(),
                    (
                        v["sha256_hash"].as_str().unwrap().to_owned(),
                        v["quarantined"].as_bool().unwrap(),
                    ),
                )
            })
            .collect();
        let want: BTreeMap<&str, (String, bool)> = self
            .model
            .media
            .iter()
            .filter(|m| m.state == State::Live)
            .map(|m| {
                (
                    m.mxc.as_str(),
                    (sha256_hex(&self.pool[m.data]), m.quarantined),
                )
            })
            .collect();
        assert_eq!(got, want, "uploads listing");
        // The datastore: exactly the blobs of live media, byte-identical, nothing spooled.
        let dir = self.media_dir();
        let want_blobs = self.model.blobs();
        let mut want_files: Vec<PathBuf> = Vec::new();
        for &d in &want_blobs {
            let path = file_blob_path(&dir, &sha256_hex(&self.pool[d]));
            assert!(
                std::fs::read(&path).is_ok_and(|b| b == self.pool[d]),
                "blob of pool entry {d} missing or wrong at {}",
                path.display()
            );
            want_files.push(path);
        }
        want_files.sort();
        want_files.dedup();
        assert_eq!(blob_files(&dir), want_files, "blob files");
        assert_eq!(common::spool_entries(&dir), 0, "spool files left");
    }
}

/// Shrinking panics hundreds of times: after the first few, one line per panic instead of
/// the message and a backtrace each.
fn quiet_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let full = std::panic::take_hook();
        let seen = std::sync::atomic::AtomicUsize::new(0);
        std::panic::set_hook(Box::new(move |info| {
            let msg = info
                .payload()
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| info.payload().downcast_ref::<&str>().copied())
                .unwrap_or("");
            // proptest's own last panic carries the minimal failing input.
            if seen.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < 3
                || msg.contains("minimal failing input")
            {
                full(info);
            } else {
                let at = info.location().map(|l| l.to_string()).unwrap_or_default();
                let first = msg.lines().next().unwrap_or("");
                eprintln!("panic at {at}: {first}");
            }
        }));
    });
}

async fn run_case(mut pool: Vec<Vec<u8>>, ops: Vec<Op>) {
    quiet_panics();
    // The model tells pool entries apart by index: make them distinct byte strings.
    for i in 0..pool.len() {
        while pool[..i].contains(&pool[i]) {
            pool[i].push(i as u8);
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let srv = Child::start(dir.path()).await;
    let mut case = Case {
        dir,
        pool,
        model: Model::default(),
        srv,
        trace: Vec::new(),
    };
    for op in &ops {
        case.trace.push(format!("{op:?}"));
        let step = async {
            case.step(op).await;
            case.check_all().await;
        };
        if let Err(e) =
            futures_util::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(step)).await
        {
            // Shrinking fails many times: describe the first few failures only (proptest
            // prints the minimal input at the end).
            static SHOWN: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
            if SHOWN.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < 2 {
                eprintln!(
                    "failed after {:?}\nmodel: {:?}\nlog:\n{}",
                    case.trace,
                    case.model,
                    case.srv.log_text()
                );
            }
            std::panic::resume_unwind(e);
        }
    }
    let m = &case.model.media;
    eprintln!(
        "model case: {} ops ({} crashes), {} media: {} live, {} tombstones, {} gone, {} pending; {} quarantined, {} pinned, {} blocked hashes",
        ops.len(),
        ops.iter().filter(|o| matches!(o, Op::Crash)).count(),
        m.len(),
        m.iter().filter(|x| x.state == State::Live).count(),
        m.iter().filter(|x| x.state == State::Tombstone).count(),
        m.iter().filter(|x| x.state == State::Gone).count(),
        m.iter().filter(|x| x.state == State::Pending).count(),
        m.iter().filter(|x| x.quarantined).count(),
        m.iter().filter(|x| x.pinned).count(),
        case.model.blocked.len(),
    );
    case.srv.stop();
    let out = std::process::Command::new(binary())
        .args(["verify", "--config"])
        .arg(&case.srv.config)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "verify failed after {:?}: {}{}",
        case.trace,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: env_or("MODEL_CASES", 16),
        max_shrink_iters: env_or("MODEL_SHRINK", 256),
        // Each shrink step is a whole case against a fresh server: bound the time, not only
        // the steps.
        max_shrink_time: env_or("MODEL_SHRINK_MS", 30_000),
        ..ProptestConfig::default()
    })]

    #[test]
    fn server_agrees_with_the_model(
        pool in proptest::collection::vec((any::<u64>(), 0usize..3000), POOL),
        ops in proptest::collection::vec(op(), 1..=env_or("MODEL_OPS", 30) as usize),
    ) {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(run_case(pool.iter().map(|&(seed, len)| bytes_of(seed, len)).collect(), ops));
    }
}

/// `len` pseudo-random bytes from `seed` (splitmix64), so a failing case prints as two
/// numbers per pool entry instead of its bytes.
fn bytes_of(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed;
    (0..len)
        .map(|_| {
            x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = x;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            (z ^ (z >> 31)) as u8
        })
        .collect()
}

fn fixed_pool() -> Vec<Vec<u8>> {
    (0..POOL)
        .map(|i| common::random_bytes(100 + 700 * i))
        .collect()
}

fn run_fixed(ops: Vec<Op>) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(run_case(fixed_pool(), ops));
}

/// Hand-picked sequences through pinned-while-quarantined media, a refused async `PUT`
/// (an unfilled reservation across a crash), and re-uploads after purges.
#[test]
fn fixed_sequences_agree_with_the_model() {
    use Op::*;
    run_fixed(vec![
        Upload(0),
        Quarantine(0),
        SetPinned(0, true),
        PurgeQuarantined,
        Crash,
        Download(0),
        Unquarantine(0),
        Download(0),
        Purge(0),
        SetPinned(0, false),
        Purge(0),
        Upload(0),
        Purge(1),
    ]);
    run_fixed(vec![
        Upload(1),
        Quarantine(0),
        AsyncUpload(1),
        Crash,
        Download(1),
        Unquarantine(0),
        Download(1),
        Upload(1),
        Crash,
        Download(2),
        Purge(0),
        Upload(1),
    ]);
}

/// Found by `server_agrees_with_the_model`: a quarantine skips tombstones, an unquarantine
/// counts them. Two media with the same bytes are quarantined (2) and purged into
/// tombstones; unquarantining one of them must answer 0 (no media it can show again) and lift
/// the block; quarantining it again answers 0 and blocks again. The server answers
/// `num_unquarantined: 2` (it clears the flag of the tombstones), so the two routes disagree
/// about the same media.
#[test]
fn unquarantine_does_not_count_tombstones() {
    use Op::*;
    run_fixed(vec![
        Upload(3),
        Upload(3),
        Quarantine(0),
        PurgeQuarantined,
        Unquarantine(0),
        Upload(3),
        Quarantine(0),
        Upload(3),
    ]);
}
