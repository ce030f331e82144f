#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Stop and start on the same data directory: media survive byte-identically, figures are
//! unchanged, the ledger verifies, and the start-up sweep removes orphans and spool leftovers.

use crate::common;

use common::{
    blob_files, count_blobs, random_bytes, sha256_hex, spool_entries, TestServer, ALICE, BOB, DS,
};
use media_ledger::ledger::Ledger;
use reqwest::StatusCode;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn media_survive_a_restart() {
    let mut srv = TestServer::start().await;
    let shared = random_bytes(3000);
    let mut media: Vec<(String, Vec<u8>)> = Vec::new();
    for bytes in [
        random_bytes(0),
        random_bytes(1),
        shared.clone(),
        random_bytes(200_000),
        shared.clone(),
    ] {
        let mxc = srv.upload_bytes(bytes.clone()).await;
        media.push((mxc, bytes));
    }
    let mxc = srv
        .upload(BOB, shared.clone(), Some("image/png"), Some("s.png"))
        .await;
    media.push((mxc.clone(), shared.clone()));

    // An async upload, filled, and one left pending.
    let create = |srv: &TestServer| {
        srv.client
            .post(srv.url("/_matrix/media/v1/create"))
            .bearer_auth(ALICE)
            .send()
    };
    let v: serde_json::Value = create(&srv).await.unwrap().json().await.unwrap();
    let filled = v["content_uri"].as_str().unwrap().to_owned();
    let (server, id) = common::parse_mxc(&filled);
    let filled_bytes = random_bytes(777);
    let resp = srv
        .client
        .put(srv.url(&format!("/_matrix/media/v3/upload/{server}/{id}")))
        .bearer_auth(ALICE)
        .body(filled_bytes.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    media.push((filled, filled_bytes));
    let v: serde_json::Value = create(&srv).await.unwrap().json().await.unwrap();
    let pending = v["content_uri"].as_str().unwrap().to_owned();

    // Downloads record accesses; let them be part of the log too.
    for (mxc, bytes) in &media {
        assert!(&srv.download_bytes(mxc).await == bytes);
    }
    let estimate = srv.size_estimate(DS, None).await;
    assert_eq!(estimate["media_affected"], 7);
    assert_eq!(estimate["media_hashes_affected"], 5);
    assert_eq!(estimate["media_bytes"], 3000 + 1 + 200_000 + 777);
    let blobs = blob_files(&srv.media_dir());
    assert_eq!(blobs.len(), 5);
    let head = srv.server().ledger.head();

    srv.stop().await;
    let (verified, divergence) = Ledger::verify_path(&srv.db_path()).unwrap();
    assert_eq!(divergence, None, "projections diverge from a replay");
    assert!(
        verified.seq >= head,
        "verified head {verified:?} < {head:?}"
    );

    srv.restart().await;
    assert!(srv.server().ledger.head() >= head);
    for (mxc, bytes) in &media {
        let resp = srv.download(mxc).await;
        assert_eq!(resp.status(), StatusCode::OK, "{mxc} after restart");
        assert!(
            resp.bytes().await.unwrap() == bytes,
            "{mxc} differs after restart"
        );
    }
    let resp = srv.download(&mxc).await;
    assert_eq!(
        common::header(&resp, "content-disposition"),
        "inline; filename=\"s.png\""
    );
    assert_eq!(common::header(&resp, "content-type"), "image/png");
    assert_eq!(srv.size_estimate(DS, None).await, estimate);
    assert_eq!(
        blob_files(&srv.media_dir()),
        blobs,
        "the sweep touched referenced blobs"
    );

    // The pending reservation survived too: still fillable by its owner.
    let (server, id) = common::parse_mxc(&pending);
    let resp = srv
        .client
        .put(srv.url(&format!("/_matrix/media/v3/upload/{server}/{id}")))
        .bearer_auth(ALICE)
        .body(b"late".to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(srv.download_bytes(&pending).await, b"late");

    // New uploads keep deduplicating against pre-restart blobs.
    let again = srv.upload_bytes(shared.clone()).await;
    assert_eq!(srv.download_bytes(&again).await, shared);
    assert_eq!(count_blobs(&srv.media_dir()), 6);

    srv.stop().await;
    let (_, divergence) = Ledger::verify_path(&srv.db_path()).unwrap();
    assert_eq!(divergence, None);

    // A second restart, for good measure.
    srv.restart().await;
    assert_eq!(srv.download_bytes(&again).await, shared);
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn startup_sweeps_orphans_and_spool_leftovers() {
    let mut srv = TestServer::start().await;
    let bytes = random_bytes(512);
    let mxc = srv.upload_bytes(bytes.clone()).await;
    let referenced = srv
        .media_dir()
        .join(&sha256_hex(&bytes)[0..2])
        .join(&sha256_hex(&bytes)[2..4])
        .join(sha256_hex(&bytes));
    assert!(referenced.is_file(), "blob not at {}", referenced.display());
    srv.stop().await;

    let dir = srv.media_dir();
    let orphan_name = format!("abcd{}", "0".repeat(60));
    std::fs::create_dir_all(dir.join("ab/cd")).unwrap();
    let orphan = dir.join("ab/cd").join(&orphan_name);
    std::fs::write(&orphan, b"nobody refers to me").unwrap();
    // A real blob of unrecorded bytes (as after a crash between commit and append).
    let lost = random_bytes(64);
    let lost_hex = sha256_hex(&lost);
    std::fs::create_dir_all(dir.join(&lost_hex[0..2]).join(&lost_hex[2..4])).unwrap();
    let lost_path = dir
        .join(&lost_hex[0..2])
        .join(&lost_hex[2..4])
        .join(&lost_hex);
    std::fs::write(&lost_path, &lost).unwrap();
    let spool = dir.join(".spool").join("Leftover0123456789.part");
    std::fs::write(&spool, b"half an upload").unwrap();
    // Files outside the blob layout are not ours to delete.
    let foreign = dir.join("README.txt");
    std::fs::write(&foreign, b"operator notes").unwrap();
    assert_eq!(count_blobs(&dir), 4);

    srv.restart().await;
    assert!(!orphan.exists(), "orphan blob survived the start-up sweep");
    assert!(
        !lost_path.exists(),
        "unrecorded blob survived the start-up sweep"
    );
    assert!(
        !spool.exists(),
        "spool leftover survived the start-up sweep"
    );
    assert_eq!(spool_entries(&dir), 0);
    assert!(referenced.is_file(), "the sweep removed a referenced blob");
    assert!(
        foreign.is_file(),
        "the sweep removed a file outside the layout"
    );
    assert_eq!(srv.download_bytes(&mxc).await, bytes);

    // Uploading the bytes whose orphan was swept stores them again.
    let again = srv.upload_bytes(lost.clone()).await;
    assert_eq!(srv.download_bytes(&again).await, lost);
    assert!(lost_path.is_file());
    srv.stop().await;
    let (_, divergence) = Ledger::verify_path(&srv.db_path()).unwrap();
    assert_eq!(divergence, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_keeps_datastore_figures_per_datastore() {
    let mut srv = TestServer::start_with(common::Opts {
        datastores: Some(
            r#"
[[datastores]]
id = "ds-a"
type = "file"
path = {dir:media-a}
kinds = ["all"]

[[datastores]]
id = "ds-b"
type = "file"
path = {dir:media-b}
kinds = ["all"]
"#
            .to_owned(),
        ),
        ..Default::default()
    })
    .await;
    let mut all = Vec::new();
    for n in [1000usize, 10, 10, 500] {
        let b = random_bytes(n);
        all.push((srv.upload_bytes(b.clone()).await, b));
    }
    let a = srv.size_estimate("ds-a", None).await;
    let b = srv.size_estimate("ds-b", None).await;
    srv.restart().await;
    assert_eq!(srv.size_estimate("ds-a", None).await, a);
    assert_eq!(srv.size_estimate("ds-b", None).await, b);
    for (mxc, bytes) in &all {
        assert!(&srv.download_bytes(mxc).await == bytes);
    }
    // Placement continues from the persisted figures: ds-b (520 B) < ds-a (1000 B).
    srv.upload_bytes(random_bytes(7)).await;
    assert_eq!(
        srv.size_estimate("ds-b", None).await["total_bytes"],
        b["total_bytes"].as_u64().unwrap() + 7
    );
    srv.stop().await;
}

/// `find()` in src/http/download.rs answers 503 "shutting down" when the ledger's change feed
/// closes, but the feed only closes after graceful shutdown has waited for every in-flight
/// request, so a download waiting on a pending upload holds `stop()` up for its whole timeout
/// (up to downloads.max_timeout_ms, 60 s by default).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_is_not_held_up_by_waiting_downloads() {
    let mut srv = TestServer::start().await;
    let resp = srv
        .client
        .post(srv.url("/_matrix/media/v1/create"))
        .bearer_auth(ALICE)
        .send()
        .await
        .unwrap();
    let v: serde_json::Value = resp.json().await.unwrap();
    let (server, id) = common::parse_mxc(v["content_uri"].as_str().unwrap());
    let url = srv.url(&format!(
        "/_matrix/media/v3/download/{server}/{id}?timeout_ms=60000"
    ));
    let client = srv.client.clone();
    let waiting = tokio::spawn(async move { client.get(url).send().await.map(|r| r.status()) });
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let started = std::time::Instant::now();
    srv.stop().await;
    let took = started.elapsed();
    let outcome = waiting.await.unwrap();
    eprintln!("stop took {took:?}, waiting download: {outcome:?}");
    assert!(
        took < std::time::Duration::from_secs(10),
        "stop() waited {took:?} for a download waiting on a pending upload"
    );
}

/// Two datastore ids on one directory: the start-up sweep of the second sees the first one's
/// blobs, finds their hash records naming the other datastore, and deletes them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn datastores_sharing_a_directory_lose_no_blobs() {
    let opts = common::Opts {
        datastores: Some(
            r#"
[[datastores]]
id = "ds-a"
type = "file"
path = {dir:media}
kinds = ["all"]

[[datastores]]
id = "ds-b"
type = "file"
path = {dir:media}
kinds = ["all"]
"#
            .to_owned(),
        ),
        ..Default::default()
    };
    let probe = tempfile::tempdir().unwrap();
    if media_ledger::config::Config::parse(&common::config_text(probe.path(), &opts)).is_err() {
        return; // Refusing the configuration is a fine answer too.
    }
    let mut srv = TestServer::start_with(opts).await;
    let bytes = random_bytes(100);
    let mxc = srv.upload_bytes(bytes.clone()).await;
    srv.restart().await;
    let resp = srv.download(&mxc).await;
    assert_eq!(
        resp.status(),
        StatusCode::OK,
        "the blob was swept at start-up"
    );
    assert_eq!(resp.bytes().await.unwrap(), bytes);
    srv.stop().await;
}
