#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Recovery tooling through the real `media-ledger` binary: `replay --until N --into DIR`
//! gives the state as of N (a media purged after N is back, one uploaded after N is not)
//! and its ledger verifies and serves; its refusals; `verify`'s exit codes and the exact
//! first bad sequence on a damaged log (the same damage `replay-tests` feeds `verify_path`,
//! here end to end: exit code, output, `serve` refusing to start, `replay --until` refusing
//! to export); and `POST /_matrix/media/unstable/admin/snapshot` taken while uploads run,
//! restored with a later copy of the datastore: every media acknowledged before the
//! snapshot downloads byte-identical and the restored ledger verifies.

use crate::common;
use media_ledger_projections::names;

use common::{
    blob_files, config_text, expect_error, random_bytes, sha256_hex, Opts, TestServer, ADMIN,
    ALICE, SECRET,
};
use media_ledger::config::Config;
use media_ledger::ledger::{raw, Ledger, LedgerError};
use media_ledger_events::{Envelope, MediaRef, Seq};
use media_ledger_projections::media_index;
use reqwest::StatusCode;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::Arc;
use std::time::{Duration, Instant};

const ADMIN_API: &str = "/_matrix/media/unstable/admin";

fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_media-ledger")
}

/// Runs `media-ledger ARGS --config CONFIG`.
fn cli(config: &Path, args: &[&str]) -> Output {
    std::process::Command::new(binary())
        .args(args)
        .arg("--config")
        .arg(config)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap()
}

fn text(out: &Output) -> String {
    format!(
        "exit {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Writes `srv`'s config next to its data; returns the path.
fn write_config(srv: &TestServer) -> PathBuf {
    let path = srv.dir.path().join("config.toml");
    std::fs::write(&path, &srv.config_text).unwrap();
    path
}

/// Copies a directory tree.
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), &target).unwrap();
        }
    }
}

/// A `TestServer` on an existing data directory (`ledger/`, `media/` already in place).
async fn serve_dir(dir: tempfile::TempDir) -> TestServer {
    let config_text = config_text(dir.path(), &Opts::default());
    let config = Config::parse(&config_text).unwrap();
    let server = media_ledger::server::start(config)
        .await
        .expect("server starts on the restored directory");
    TestServer {
        base: format!("http://{}", server.addr),
        client: common::client(),
        dir,
        config_text,
        server: Some(server),
    }
}

fn media_ref(mxc: &str) -> MediaRef {
    mxc.parse().unwrap()
}

fn events(path: &Path, to: u64) -> Vec<Envelope> {
    let mut out = Vec::new();
    Ledger::events_at(path, Seq(1), Seq(to), |e| {
        out.push(e);
        true
    })
    .unwrap();
    out
}

async fn admin_post(srv: &TestServer, path: &str) -> Value {
    let resp = srv
        .client
        .post(srv.url(&format!("{ADMIN_API}/{path}")))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    let status = resp.status();
    let text = resp.text().await.unwrap();
    assert_eq!(status, StatusCode::OK, "{path}: {text}");
    serde_json::from_str(&text).unwrap()
}

fn sid(mxc: &str) -> String {
    mxc.strip_prefix("mxc://").unwrap().to_owned()
}

// ---------------------------------------------------------------------------------------------
// replay --until
// ---------------------------------------------------------------------------------------------

/// As of N: a media purged after N is present (and, with the datastore as backed up at N,
/// downloads byte-identical), a quarantine after N is not in force, a media uploaded after N
/// does not exist. The export's log is records 1..=N byte for byte, it verifies (in process
/// and with the CLI), a server runs on it, and the source ledger is untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_until_gives_the_state_as_of_n() {
    let mut srv = TestServer::start().await;
    let (a, b, c) = (
        random_bytes(4_000),
        random_bytes(5_000),
        random_bytes(6_000),
    );
    let ma = srv.upload_bytes(a.clone()).await;
    let mb = srv.upload_bytes(b.clone()).await;
    let mb2 = srv.upload(ALICE, b.clone(), Some("image/png"), None).await;
    assert_eq!(srv.download_bytes(&ma).await, a);
    let n = srv.server().ledger.head().0;
    // A backup of the datastore as of N.
    let backup = tempfile::tempdir().unwrap();
    copy_dir(&srv.media_dir(), backup.path());

    // After N: purge A (its blob is deleted), quarantine B, upload C.
    let v = admin_post(&srv, &format!("purge/{}", sid(&ma))).await;
    assert_eq!(v["affected"], serde_json::json!([ma]), "{v}");
    let v = admin_post(&srv, &format!("quarantine/{}", sid(&mb))).await;
    assert_eq!(v["num_quarantined"], 2, "{v}");
    let mc = srv.upload_bytes(c.clone()).await;
    assert!(!common::s3::file_blob_path(&srv.media_dir(), &sha256_hex(&a)).exists());
    srv.stop().await;
    let config = write_config(&srv);
    let (full, _) = Ledger::verify_path(&srv.db_path()).unwrap();
    assert!(full.seq.0 > n + 2, "{full:?}");

    let restore = tempfile::tempdir().unwrap();
    let into = restore.path().join("ledger");
    let out = cli(
        &config,
        &[
            "replay",
            "--until",
            &n.to_string(),
            "--into",
            into.to_str().unwrap(),
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(&format!("as of sequence {n}")),
        "{}",
        text(&out)
    );

    // The export: records 1..=N, verified, projections equal to a replay of them.
    assert_eq!(events(&into, u64::MAX), events(&srv.db_path(), n));
    for seq in 1..=n {
        assert_eq!(
            raw::read_record(&into, Seq(seq)).unwrap(),
            raw::read_record(&srv.db_path(), Seq(seq)).unwrap(),
            "record {seq}"
        );
    }
    let (head, divergence) = Ledger::verify_path(&into).unwrap();
    assert_eq!((head.seq, divergence), (Seq(n), None));
    {
        let ledger = Ledger::open_read_only(&into).unwrap();
        let index = ledger.view(names::MEDIA_INDEX).unwrap();
        let ra = media_index::get(&index, &media_ref(&ma))
            .unwrap()
            .expect("the media purged after N is back");
        assert!(!ra.tombstone && !ra.quarantined);
        assert_eq!(ra.sha256.to_hex(), sha256_hex(&a));
        for m in [&mb, &mb2] {
            let r = media_index::get(&index, &media_ref(m)).unwrap().unwrap();
            assert!(!r.quarantined, "{m}: quarantined after N");
        }
        assert!(media_index::get(&index, &media_ref(&mc)).unwrap().is_none());
    }

    // Serve it with the datastore backup.
    copy_dir(backup.path(), &restore.path().join("media"));
    let restored_config = restore.path().join("config.toml");
    std::fs::write(
        &restored_config,
        config_text(restore.path(), &Opts::default()),
    )
    .unwrap();
    let out = cli(&restored_config, &["verify"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).starts_with(&format!("ok: {n} events")),
        "{}",
        text(&out)
    );
    let mut back = serve_dir(restore).await;
    assert_eq!(back.download_bytes(&ma).await, a);
    assert_eq!(back.download_bytes(&mb).await, b);
    assert_eq!(back.download_bytes(&mb2).await, b);
    expect_error(
        back.download(&mc).await,
        StatusCode::NOT_FOUND,
        "M_NOT_FOUND",
    )
    .await;
    // B is not quarantined as of N: its bytes may be uploaded again.
    back.upload_bytes(b.clone()).await;
    back.stop().await;
    let (_, divergence) = Ledger::verify_path(&back.db_path()).unwrap();
    assert_eq!(divergence, None);

    // The source ledger is untouched.
    assert_eq!(Ledger::verify_path(&srv.db_path()).unwrap(), (full, None));
}

/// `--until` beyond the head fails and creates nothing; exactly the head works; 0 gives an
/// empty ledger; an existing non-empty `--into` is refused and left alone; `--until` needs
/// `--into`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_until_refusals_and_bounds() {
    let mut srv = TestServer::start().await;
    for _ in 0..3 {
        srv.upload_bytes(random_bytes(1_000)).await;
    }
    srv.stop().await;
    let config = write_config(&srv);
    let head = Ledger::verify_path(&srv.db_path()).unwrap().0.seq.0;
    assert_eq!(head, 3);
    let out_dir = tempfile::tempdir().unwrap();

    let beyond = out_dir.path().join("beyond");
    let out = cli(
        &config,
        &[
            "replay",
            "--until",
            &(head + 1).to_string(),
            "--into",
            beyond.to_str().unwrap(),
        ],
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(&format!("the log ends at {head}")),
        "{}",
        text(&out)
    );
    assert!(!beyond.exists(), "a refused export created its directory");

    let exact = out_dir.path().join("exact");
    let out = cli(
        &config,
        &[
            "replay",
            "--until",
            &head.to_string(),
            "--into",
            exact.to_str().unwrap(),
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        Ledger::verify_path(&exact).unwrap().0,
        Ledger::verify_path(&srv.db_path()).unwrap().0
    );

    let zero = out_dir.path().join("zero");
    let out = cli(
        &config,
        &["replay", "--until", "0", "--into", zero.to_str().unwrap()],
    );
    assert!(out.status.success(), "{}", text(&out));
    let (h, divergence) = Ledger::verify_path(&zero).unwrap();
    assert_eq!((h.seq, divergence), (Seq(0), None));

    let busy = out_dir.path().join("busy");
    std::fs::create_dir(&busy).unwrap();
    std::fs::write(busy.join("keep"), b"mine").unwrap();
    let out = cli(
        &config,
        &["replay", "--until", "1", "--into", busy.to_str().unwrap()],
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not empty"),
        "{}",
        text(&out)
    );
    assert_eq!(std::fs::read_dir(&busy).unwrap().count(), 1);
    assert_eq!(std::fs::read(busy.join("keep")).unwrap(), b"mine");

    let out = cli(&config, &["replay", "--until", "1"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--into"),
        "{}",
        text(&out)
    );
    // Nothing of this touched the source.
    assert_eq!(
        Ledger::verify_path(&srv.db_path()).unwrap().0.seq,
        Seq(head)
    );
}

// ---------------------------------------------------------------------------------------------
// verify on damaged logs, end to end
// ---------------------------------------------------------------------------------------------

/// A stopped ledger of `n` uploads (one event each), with its config written.
async fn fixture(n: usize) -> (TestServer, PathBuf) {
    let mut srv = TestServer::start().await;
    for _ in 0..n {
        srv.upload_bytes(random_bytes(500)).await;
    }
    srv.stop().await;
    let config = write_config(&srv);
    assert_eq!(
        Ledger::verify_path(&srv.db_path()).unwrap().0.seq.0,
        n as u64
    );
    (srv, config)
}

/// A copy of the fixture's whole data directory, with its config.
fn copy_fixture(srv: &TestServer) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&srv.db_path(), &dir.path().join("ledger"));
    copy_dir(&srv.media_dir(), &dir.path().join("media"));
    let config = dir.path().join("config.toml");
    std::fs::write(&config, config_text(dir.path(), &Opts::default())).unwrap();
    (dir, config)
}

/// `verify` exits 3 naming `seq` (as `verify_path` does), `serve` refuses to start naming
/// it, and `replay --until` refuses to export.
fn assert_cli_refuses_at(dir: &Path, config: &Path, seq: u64) {
    let out = cli(config, &["verify"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.starts_with(&format!("FAIL: first bad sequence {seq}: ")),
        "{}",
        text(&out)
    );
    match Ledger::verify_path(&dir.join("ledger")) {
        Err(LedgerError::Corrupt { seq: at, .. }) => assert_eq!(at, Seq(seq)),
        other => panic!("verify_path: {other:?}"),
    }

    let mut serve = std::process::Command::new(binary())
        .args(["serve", "--config"])
        .arg(config)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while serve.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = serve.kill();
            panic!("serve started on a damaged log");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = serve.wait_with_output().unwrap();
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(&format!("log corrupt at sequence {seq}:")),
        "{}",
        text(&out)
    );

    let into = dir.join("export");
    let out = cli(
        config,
        &["replay", "--until", "1", "--into", into.to_str().unwrap()],
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(&format!("sequence {seq}")),
        "{}",
        text(&out)
    );
    assert!(
        !into.exists(),
        "export of a damaged log created {}",
        into.display()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_cli_names_the_first_bad_sequence() {
    const N: usize = 6;
    let (srv, config) = fixture(N).await;
    let out = cli(&config, &["verify"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).starts_with(&format!("ok: {N} events")),
        "{}",
        text(&out)
    );

    // A flipped byte in record 3 (its envelope, then its chain value).
    for at in [5usize, usize::MAX] {
        let (dir, config) = copy_fixture(&srv);
        let db = dir.path().join("ledger");
        let mut record = raw::read_record(&db, Seq(3)).unwrap().unwrap();
        let i = at.min(record.len() - 1);
        record[i] ^= 0x20;
        raw::write_record(&db, Seq(3), &record).unwrap();
        assert_cli_refuses_at(dir.path(), &config, 3);
    }
    // Record 2 removed from the middle; the last record removed.
    for seq in [2u64, N as u64] {
        let (dir, config) = copy_fixture(&srv);
        raw::delete_record(&dir.path().join("ledger"), Seq(seq)).unwrap();
        assert_cli_refuses_at(dir.path(), &config, seq);
    }

    // A projection that no longer equals a replay: exit 2, naming it; the log is fine.
    let (dir, config) = copy_fixture(&srv);
    {
        let db_path = dir.path().join("ledger");
        let names = rocksdb::DB::list_cf(&rocksdb::Options::default(), &db_path).unwrap();
        let db = rocksdb::DB::open_cf(&rocksdb::Options::default(), &db_path, &names).unwrap();
        let cf = db
            .cf_handle(media_ledger_projections::names::MEDIA_INDEX.as_str())
            .unwrap();
        let (k, _) = db
            .iterator_cf(cf, rocksdb::IteratorMode::Start)
            .next()
            .unwrap()
            .unwrap();
        db.delete_cf(cf, k).unwrap();
    }
    let out = cli(&config, &["verify"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.starts_with(&format!(
            "FAIL: log intact to {N}, but projection media_index differs"
        )),
        "{}",
        text(&out)
    );
    // `replay` rebuilds it; then it verifies.
    let out = cli(&config, &["replay"]);
    assert!(out.status.success(), "{}", text(&out));
    let out = cli(&config, &["verify"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
}

// ---------------------------------------------------------------------------------------------
// Snapshots
// ---------------------------------------------------------------------------------------------

#[derive(Clone)]
struct Acked {
    mxc: String,
    bytes: Arc<Vec<u8>>,
    /// When the request was sent.
    sent: Instant,
    /// When its answer arrived.
    at: Instant,
}

/// A snapshot taken while uploads run, restored with a copy of the datastore made after it:
/// every media acknowledged before the snapshot was asked for downloads byte-identical, no
/// restored record points at a missing blob, uploads the snapshot does not hold are swept
/// as orphans, moderation acts before it hold, and the restored ledger verifies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_while_uploading_restores_every_acknowledged_media() {
    let mut srv = TestServer::start().await;
    // Some history before: a purged media and a quarantined one.
    let purged_bytes = random_bytes(3_000);
    let purged = srv.upload_bytes(purged_bytes.clone()).await;
    admin_post(&srv, &format!("purge/{}", sid(&purged))).await;
    let bad = random_bytes(2_000);
    let quarantined = srv.upload_bytes(bad.clone()).await;
    admin_post(&srv, &format!("quarantine/{}", sid(&quarantined))).await;

    let acked: Arc<parking_lot::Mutex<Vec<Acked>>> = Arc::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..3 {
        let (client, url) = (srv.client.clone(), srv.url("/_matrix/media/v3/upload"));
        let (acked, stop) = (acked.clone(), stop.clone());
        writers.push(tokio::spawn(async move {
            let shared = Arc::new(random_bytes(10_000 + w));
            let mut i = 0usize;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                // Every fifth upload repeats this writer's shared bytes.
                let bytes = if i % 5 == 0 {
                    shared.clone()
                } else {
                    Arc::new(random_bytes(1 + (i * 7919) % 60_000))
                };
                i += 1;
                let sent = Instant::now();
                let resp = client
                    .post(&url)
                    .bearer_auth(ALICE)
                    .body(bytes.to_vec())
                    .send()
                    .await
                    .unwrap();
                assert_eq!(resp.status(), StatusCode::OK);
                let v: Value = resp.json().await.unwrap();
                acked.lock().push(Acked {
                    mxc: v["content_uri"].as_str().unwrap().to_owned(),
                    bytes,
                    sent,
                    at: Instant::now(),
                });
            }
        }));
    }
    let wait_for = |count: usize| {
        let acked = acked.clone();
        async move {
            let deadline = Instant::now() + Duration::from_secs(60);
            while acked.lock().len() < count {
                assert!(Instant::now() < deadline, "uploads too slow");
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    };
    wait_for(30).await;

    let resp = srv
        .client
        .post(srv.url(&format!("{ADMIN_API}/snapshot")))
        .bearer_auth(ALICE)
        .send()
        .await
        .unwrap();
    expect_error(resp, StatusCode::FORBIDDEN, "M_FORBIDDEN").await;
    let asked = Instant::now();
    let resp = srv
        .client
        .post(srv.url(&format!("{ADMIN_API}/snapshot")))
        .bearer_auth(SECRET)
        .send()
        .await
        .unwrap();
    let answered = Instant::now();
    assert_eq!(resp.status(), StatusCode::OK);
    let snap: Value = resp.json().await.unwrap();
    let snap_path = PathBuf::from(snap["path"].as_str().unwrap());
    let snap_head = snap["head"].as_u64().unwrap();
    let before = acked.lock().len();
    wait_for(before + 30).await;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    for w in writers {
        w.await.unwrap();
    }
    let acked = acked.lock().clone();
    let before_snapshot: Vec<&Acked> = acked.iter().filter(|a| a.at < asked).collect();
    // Sent after the snapshot was answered: their events cannot be in it.
    let after_snapshot: Vec<&Acked> = acked.iter().filter(|a| a.sent > answered).collect();
    assert!(before_snapshot.len() >= 30 && after_snapshot.len() >= 20);

    // The datastore is copied after the snapshot (the order a backup must keep).
    let restore = tempfile::tempdir().unwrap();
    copy_dir(&srv.media_dir(), &restore.path().join("media"));
    copy_dir(&snap_path, &restore.path().join("ledger"));
    // The live server went on unharmed.
    for a in acked.iter().step_by(10) {
        assert!(srv.download_bytes(&a.mxc).await == *a.bytes);
    }
    srv.stop().await;

    let mut back = serve_dir(restore).await;
    assert!(back.server().ledger.head().0 >= snap_head);
    for a in &before_snapshot {
        let got = back.download_bytes(&a.mxc).await;
        assert!(got == *a.bytes, "{} differs after the restore", a.mxc);
    }
    for a in &after_snapshot {
        expect_error(
            back.download(&a.mxc).await,
            StatusCode::NOT_FOUND,
            "M_NOT_FOUND",
        )
        .await;
    }
    expect_error(
        back.download(&purged).await,
        StatusCode::NOT_FOUND,
        "M_NOT_FOUND",
    )
    .await;
    expect_error(
        back.download(&quarantined).await,
        StatusCode::NOT_FOUND,
        "M_NOT_FOUND",
    )
    .await;
    let resp = back
        .upload_raw(ALICE, bad.clone(), Some("application/octet-stream"), None)
        .await;
    expect_error(resp, StatusCode::FORBIDDEN, "M_FORBIDDEN").await;

    // Every restored record downloads whole; the blobs on disk are exactly theirs.
    let known: BTreeMap<&str, &Arc<Vec<u8>>> =
        acked.iter().map(|a| (a.mxc.as_str(), &a.bytes)).collect();
    let resp = back
        .client
        .get(back.url(&format!("{ADMIN_API}/usage/localhost/uploads")))
        .bearer_auth(SECRET)
        .send()
        .await
        .unwrap();
    let listing: BTreeMap<String, Value> = resp.json().await.unwrap();
    let mut hashes = BTreeSet::new();
    for (mxc, u) in &listing {
        hashes.insert(u["sha256_hash"].as_str().unwrap().to_owned());
        if mxc == &quarantined {
            continue;
        }
        let bytes = known
            .get(mxc.as_str())
            .unwrap_or_else(|| panic!("restored an unknown media {mxc}"));
        assert!(back.download_bytes(mxc).await == ***bytes, "{mxc}");
    }
    assert!(listing.len() > before_snapshot.len());
    let files: BTreeSet<String> = blob_files(&back.media_dir())
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(files, hashes, "blobs after the restore's sweep");
    back.stop().await;
    let (head, divergence) = Ledger::verify_path(&back.db_path()).unwrap();
    assert_eq!(divergence, None);
    assert!(head.seq.0 >= snap_head);
}

/// `media-ledger snapshot --into DIR` on a stopped server: a copy that verifies and holds
/// the whole log; a second one into the same directory is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_cli_copies_a_stopped_ledger() {
    let (srv, config) = fixture(4).await;
    let into = srv.dir.path().join("snap");
    let out = cli(&config, &["snapshot", "--into", into.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        Ledger::verify_path(&into).unwrap(),
        Ledger::verify_path(&srv.db_path()).unwrap()
    );
    assert_eq!(events(&into, u64::MAX), events(&srv.db_path(), u64::MAX));
    let out = cli(&config, &["snapshot", "--into", into.to_str().unwrap()]);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not empty"),
        "{}",
        text(&out)
    );
}
