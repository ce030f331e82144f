//! Purge deletions left pending (the process "died" right after the purge event was committed,
//! simulated with the server's deletion hook, `server::StartOptions::deletion_hook`) are
//! finished at the next start, recorded as `blob.deleted.v1`, and the end state is the one of
//! an uninterrupted purge.
//!
//! The hook belongs to one server: other servers of the process (the other suites of the
//! binary, the reference run here) delete as usual.

use crate::common;

use common::{
    blob_files, count_blobs, expect_error, parse_mxc, random_bytes, sha256_hex, Opts, TestServer,
    ADMIN, ALICE, BOB, DS,
};
use media_ledger::config::Config;
use media_ledger::ledger::Ledger;
use media_ledger::server::StartOptions;
use media_ledger_events::Seq;
use reqwest::StatusCode;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

const ADMIN_API: &str = "/_matrix/media/unstable/admin";

/// The switch of one server's deletion hook: while on, its purges' deletions stay pending.
#[derive(Clone, Default)]
struct Skip(Arc<AtomicBool>);

impl Skip {
    /// Turns the hook on until the guard is dropped (also when a test panics).
    fn set(&self) -> SkipGuard {
        self.0.store(true, Ordering::SeqCst);
        SkipGuard(self.clone())
    }

    fn is_on(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

struct SkipGuard(Skip);

impl Drop for SkipGuard {
    fn drop(&mut self) {
        (self.0).0.store(false, Ordering::SeqCst);
    }
}

/// A server on a fresh directory whose deletion hook is `skip` (a restart through
/// `TestServer::restart` starts it without the hook: as after a crash).
async fn start_with_hook(skip: &Skip) -> TestServer {
    let dir = tempfile::tempdir().unwrap();
    let config_text = common::config_text(dir.path(), &Opts::default());
    let config = Config::parse(&config_text).expect("test config is valid");
    let on = skip.clone();
    let options = StartOptions {
        deletion_hook: Some(Arc::new(move |_| on.is_on())),
        ..StartOptions::default()
    };
    let server = media_ledger::server::start_with(config, options)
        .await
        .expect("server starts");
    TestServer {
        base: format!("http://{}", server.addr),
        client: common::client(),
        dir,
        config_text,
        server: Some(server),
    }
}

fn sid(mxc: &str) -> String {
    let (server, id) = parse_mxc(mxc);
    format!("{server}/{id}")
}

async fn json_ok(resp: reqwest::Response) -> Value {
    let status = resp.status();
    let url = resp.url().clone();
    let text = resp.text().await.unwrap();
    assert_eq!(status, StatusCode::OK, "{url}: {text}");
    serde_json::from_str(&text).unwrap()
}

async fn get_ok(srv: &TestServer, path: &str) -> Value {
    let resp = srv
        .client
        .get(srv.url(&format!("{ADMIN_API}/{path}")))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    json_ok(resp).await
}

/// `POST purge/{server}/{id}` as the repository admin; the affected media.
async fn purge(srv: &TestServer, mxc: &str) -> BTreeSet<String> {
    let resp = srv
        .client
        .post(srv.url(&format!("{ADMIN_API}/purge/{}", sid(mxc))))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    let v = json_ok(resp).await;
    assert_eq!(v["purged"], true, "{v}");
    v["affected"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m.as_str().unwrap().to_owned())
        .collect()
}

fn blob_path(dir: &Path, bytes: &[u8]) -> PathBuf {
    let h = sha256_hex(bytes);
    dir.join(&h[0..2]).join(&h[2..4]).join(&h)
}

/// The blob files of the default datastore, relative to it.
fn relative_blobs(srv: &TestServer) -> BTreeSet<PathBuf> {
    let dir = srv.media_dir();
    blob_files(&dir)
        .into_iter()
        .map(|p| p.strip_prefix(&dir).unwrap().to_owned())
        .collect()
}

fn types(h: &Value) -> Vec<String> {
    h["events"]
        .as_array()
        .unwrap_or_else(|| panic!("{h}"))
        .iter()
        .map(|e| e["type"].as_str().unwrap().to_owned())
        .collect()
}

/// A `w`×`h` JPEG gradient.
fn jpeg(w: u32, h: u32) -> Vec<u8> {
    let img = image::RgbImage::from_fn(w, h, |x, y| {
        image::Rgb([
            (x * 255 / w) as u8,
            (y * 255 / h) as u8,
            ((x + y) % 256) as u8,
        ])
    });
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 85)
        .encode_image(&img)
        .unwrap();
    out
}

/// The inputs of the scenario (the same bytes for both runs, so the blob paths match).
struct Inputs {
    shared: Vec<u8>,
    image: Vec<u8>,
    kept: Vec<u8>,
}

/// What the scenario leaves behind.
struct Run {
    a: String,
    b: String,
    c: String,
    d: String,
    thumb: Vec<u8>,
}

/// Two media sharing bytes (a, b), an image with a thumbnail (c), another media (d); purges
/// a (its blob is still b's) and c (frees its blob and its thumbnail's).
async fn scenario(srv: &TestServer, i: &Inputs) -> Run {
    let a = srv.upload(ALICE, i.shared.clone(), None, None).await;
    let b = srv.upload(BOB, i.shared.clone(), None, None).await;
    let c = srv
        .upload(ALICE, i.image.clone(), Some("image/jpeg"), None)
        .await;
    let d = srv.upload(BOB, i.kept.clone(), None, None).await;
    let (server, id) = parse_mxc(&c);
    let resp = srv
        .client
        .get(srv.url(&format!(
            "/_matrix/media/v3/thumbnail/{server}/{id}?width=96&height=96&method=crop"
        )))
        .bearer_auth(ALICE)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let thumb = resp.bytes().await.unwrap().to_vec();
    assert_ne!(thumb, i.image, "a generated thumbnail");
    assert_eq!(count_blobs(&srv.media_dir()), 4);
    assert_eq!(purge(srv, &a).await, [a.clone()].into_iter().collect());
    assert_eq!(purge(srv, &c).await, [c.clone()].into_iter().collect());
    Run { a, b, c, d, thumb }
}

/// The answers every run must end with, whether deletions were interrupted or not.
async fn check_end_state(srv: &TestServer, i: &Inputs, r: &Run) {
    let dir = srv.media_dir();
    assert_eq!(
        blob_files(&dir).into_iter().collect::<BTreeSet<_>>(),
        [blob_path(&dir, &i.shared), blob_path(&dir, &i.kept)]
            .into_iter()
            .collect(),
        "c's blob and its thumbnail's are deleted, the rest kept"
    );
    for m in [&r.a, &r.c] {
        expect_error(srv.download(m).await, StatusCode::NOT_FOUND, "M_NOT_FOUND").await;
    }
    assert_eq!(srv.download_bytes(&r.b).await, i.shared);
    assert_eq!(srv.download_bytes(&r.d).await, i.kept);
    let h = get_ok(srv, &format!("media/{}/history", sid(&r.c))).await;
    let deleted: Vec<&Value> = h["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == "blob.deleted.v1")
        .collect();
    assert_eq!(deleted.len(), 1, "the media blob's deletion: {h}");
    assert_eq!(deleted[0]["details"]["kept"], false, "{h}");
    assert_eq!(deleted[0]["details"]["sha256"], sha256_hex(&i.image), "{h}");
    let purged = h["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["type"] == "media.purged.v1")
        .unwrap_or_else(|| panic!("{h}"));
    assert_eq!(deleted[0]["details"]["purge"], purged["seq"], "{h}");
    assert!(
        deleted[0]["seq"].as_u64().unwrap() > purged["seq"].as_u64().unwrap(),
        "{h}"
    );
}

/// The event types of a stopped ledger, with their counts.
fn type_counts(db: &Path) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    Ledger::events_at(db, Seq(1), Seq(u64::MAX), |env| {
        *out.entry(env.event.type_name().to_owned()).or_default() += 1;
        true
    })
    .unwrap();
    out
}

/// `verify` on a stopped ledger: the chain holds and replay equals the projections.
fn assert_verifies(db: &Path) {
    let (head, divergence) = Ledger::verify_path(db).expect("the ledger verifies");
    assert!(head.seq.0 > 0);
    assert!(divergence.is_none(), "replay diverges: {divergence:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_deletions_are_finished_at_the_next_start() {
    let inputs = Inputs {
        shared: random_bytes(10_000),
        image: jpeg(640, 480),
        kept: random_bytes(3_000),
    };

    // Reference: the same scenario, deletions not interrupted.
    let mut reference = TestServer::start().await;
    let ref_run = scenario(&reference, &inputs).await;
    check_end_state(&reference, &inputs, &ref_run).await;
    let ref_files = relative_blobs(&reference);
    let ref_estimate = reference.size_estimate(DS, None).await;
    let ref_usage = get_ok(&reference, "usage/localhost").await;
    reference.stop().await;
    assert_verifies(&reference.db_path());
    let ref_types = type_counts(&reference.db_path());
    assert_eq!(ref_types["blob.deleted.v1"], 2, "{ref_types:?}");

    // Interrupted: the purge is answered and recorded, the files stay.
    let skip = Skip::default();
    let mut srv = start_with_hook(&skip).await;
    let dir = srv.media_dir();
    let run = {
        let _hook = skip.set();
        let run = scenario(&srv, &inputs).await;
        let c_blob = blob_path(&dir, &inputs.image);
        let t_blob = blob_path(&dir, &run.thumb);
        assert!(c_blob.exists(), "deletion not pending");
        assert!(t_blob.exists(), "thumbnail deletion not pending");
        assert_eq!(count_blobs(&dir), 4);
        // The record is gone all the same.
        for m in [&run.a, &run.c] {
            expect_error(srv.download(m).await, StatusCode::NOT_FOUND, "M_NOT_FOUND").await;
        }
        let uploads = get_ok(&srv, "usage/localhost/uploads").await;
        assert_eq!(uploads.as_object().unwrap().len(), 2, "{uploads}");
        let h = get_ok(&srv, &format!("media/{}/history", sid(&run.c))).await;
        let t = types(&h);
        assert!(t.iter().any(|x| x == "media.purged.v1"), "{t:?}");
        assert!(!t.iter().any(|x| x == "blob.deleted.v1"), "{t:?}");
        assert_eq!(h["state"]["exists"], false, "{h}");
        run
    };
    assert!(!skip.is_on());

    srv.restart().await;
    check_end_state(&srv, &inputs, &run).await;
    assert_eq!(
        relative_blobs(&srv),
        ref_files,
        "files differ from the reference"
    );
    assert_eq!(srv.size_estimate(DS, None).await, ref_estimate);
    assert_eq!(get_ok(&srv, "usage/localhost").await, ref_usage);
    // Nothing left for a second start.
    srv.restart().await;
    assert_eq!(relative_blobs(&srv), ref_files);
    srv.stop().await;
    assert_verifies(&srv.db_path());
    assert_eq!(type_counts(&srv.db_path()), ref_types);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_deletion_keeps_a_blob_uploaded_again_meanwhile() {
    let skip = Skip::default();
    let mut srv = start_with_hook(&skip).await;
    let dir = srv.media_dir();
    let bytes = random_bytes(8_000);
    let blob = blob_path(&dir, &bytes);
    let m = srv.upload(ALICE, bytes.clone(), None, None).await;
    let n = {
        let _hook = skip.set();
        assert_eq!(purge(&srv, &m).await, [m.clone()].into_iter().collect());
        assert!(blob.exists(), "deletion not pending");
        // The same bytes again before the deletion ran.
        let n = srv.upload(BOB, bytes.clone(), None, None).await;
        assert_eq!(srv.download_bytes(&n).await, bytes);
        n
    };
    srv.restart().await;
    assert!(blob.exists(), "a blob in use was deleted");
    assert_eq!(blob_files(&dir), vec![blob.clone()]);
    assert_eq!(srv.download_bytes(&n).await, bytes);
    expect_error(srv.download(&m).await, StatusCode::NOT_FOUND, "M_NOT_FOUND").await;
    let h = get_ok(&srv, &format!("media/{}/history", sid(&n))).await;
    let deleted: Vec<&Value> = h["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == "blob.deleted.v1")
        .collect();
    assert_eq!(deleted.len(), 1, "{h}");
    assert_eq!(deleted[0]["details"]["kept"], true, "{h}");
    let est = srv.size_estimate(DS, None).await;
    assert_eq!(est["media_affected"], 1, "{est}");
    assert_eq!(est["media_bytes"], 8_000, "{est}");

    // Purging the new one frees the blob for good.
    assert_eq!(purge(&srv, &n).await, [n.clone()].into_iter().collect());
    assert!(!blob.exists());
    srv.stop().await;
    assert_verifies(&srv.db_path());
}

/// Two servers in one process, one with its deletion hook on: only that server's deletions
/// stay pending; the other deletes what its purge freed at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deletion_hook_leaves_other_servers_alone() {
    let skip = Skip::default();
    let mut hooked = start_with_hook(&skip).await;
    let mut plain = TestServer::start().await;
    let bytes = random_bytes(5_000);
    let _on = skip.set();
    for srv in [&hooked, &plain] {
        let m = srv.upload(ALICE, bytes.clone(), None, None).await;
        assert_eq!(purge(srv, &m).await, [m.clone()].into_iter().collect());
        expect_error(srv.download(&m).await, StatusCode::NOT_FOUND, "M_NOT_FOUND").await;
    }
    assert!(
        blob_path(&hooked.media_dir(), &bytes).exists(),
        "the hooked server's deletion is pending"
    );
    assert!(
        !blob_path(&plain.media_dir(), &bytes).exists(),
        "the other server deleted its freed blob"
    );
    hooked.stop().await;
    plain.stop().await;
    let types = type_counts(&plain.db_path());
    assert_eq!(types.get("blob.deleted.v1"), Some(&1), "{types:?}");
    let types = type_counts(&hooked.db_path());
    assert_eq!(types.get("blob.deleted.v1"), None, "{types:?}");
}
