#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The HTTP API against an `s3` datastore served by s3s-fs: byte-identical round trips (single
//! `PutObject` and multipart), dedup to one object, ranges and HEAD, the admin figures and
//! listing, restarts, and an S3 outage (uploads and downloads fail fast with a Matrix error
//! and record nothing; everything works again once S3 is back).

use crate::common;

use common::s3::{S3Server, BUCKET, MULTIPART};
use common::{header, parse_mxc, random_bytes, sha256_hex, Opts, TestServer, ALICE, SECRET};
use media_ledger::datastore::{content_location, Datastore, S3Datastore};
use media_ledger::ledger::Ledger;
use media_ledger_events::{DatastoreId, Seq, Sha256};
use reqwest::{Response, StatusCode};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Id of the S3 datastore.
const DS3: &str = "s3";
/// Longest any request may take while S3 is down (generous: the SDK retries with back-off).
const FAIL_FAST: Duration = Duration::from_secs(60);

fn estimate(
    media_affected: u64,
    media_hashes_affected: u64,
    media_bytes: u64,
    total_hashes_affected: u64,
    total_bytes: u64,
) -> Value {
    json!({
        "thumbnails_affected": 0,
        "thumbnail_hashes_affected": 0,
        "thumbnail_bytes": 0,
        "media_affected": media_affected,
        "media_hashes_affected": media_hashes_affected,
        "media_bytes": media_bytes,
        "total_hashes_affected": total_hashes_affected,
        "total_bytes": total_bytes,
    })
}

/// One S3 datastore `s3` accepting everything, with `extra` keys.
fn s3_opts(s3: &S3Server, extra: &str) -> Opts {
    Opts {
        datastores: Some(s3.datastore_toml(DS3, BUCKET, r#"["all"]"#, extra)),
        ..Default::default()
    }
}

/// The default spool directory of the S3 datastore `id`.
fn spool_dir(srv: &TestServer, id: &str) -> PathBuf {
    srv.dir.path().join("ledger-spool").join(id)
}

fn spool_files(srv: &TestServer, id: &str) -> Vec<PathBuf> {
    std::fs::read_dir(spool_dir(srv, id))
        .map(|r| r.map(|e| e.unwrap().path()).collect())
        .unwrap_or_default()
}

/// Number of `media.uploaded.v1` events in the ledger (read-only, beside the server).
fn uploaded_events(db: &Path) -> usize {
    let mut n = 0;
    Ledger::events_at(db, Seq(1), Seq(u64::MAX), |env| {
        if env.event.type_name() == "media.uploaded.v1" {
            n += 1;
        }
        true
    })
    .unwrap();
    n
}

/// Asserts `resp` is a 502 (or 503) Matrix error; returns the body.
async fn expect_gateway_error(resp: Response, what: &str) -> Value {
    let status = resp.status();
    let ct = resp
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let text = resp.text().await.unwrap();
    assert!(
        status == StatusCode::BAD_GATEWAY || status == StatusCode::SERVICE_UNAVAILABLE,
        "{what}: expected 502/503, got {status}: {text}"
    );
    assert!(
        ct.starts_with("application/json"),
        "{what}: error is not JSON ({ct:?}): {text}"
    );
    let v: Value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{what}: error body is not JSON ({e}): {text}"));
    assert_eq!(v["errcode"], "M_UNKNOWN", "{what}: {text}");
    assert!(v["error"].is_string(), "{what}: {text}");
    v
}

/// Runs `f`, failing the test when it takes longer than [`FAIL_FAST`] (a hang).
async fn within<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(FAIL_FAST, f)
        .await
        .unwrap_or_else(|_| panic!("{what} hangs while S3 is down"))
}

/// Downloads every media and compares the bytes (without printing megabytes on failure).
async fn assert_downloads(srv: &TestServer, media: &[(String, Vec<u8>)]) {
    for (mxc, bytes) in media {
        let got = srv.download_bytes(mxc).await;
        assert!(
            got == *bytes,
            "{mxc}: downloaded {} bytes (sha256 {}), expected {} (sha256 {})",
            got.len(),
            sha256_hex(&got),
            bytes.len(),
            sha256_hex(bytes)
        );
    }
}

/// Asserts the bucket holds exactly the blobs of `media`, each byte-identical.
fn assert_bucket_holds(s3: &S3Server, media: &[(String, Vec<u8>)]) {
    let mut distinct: Vec<&Vec<u8>> = media.iter().map(|(_, b)| b).collect();
    distinct.sort_by_key(|b| sha256_hex(b));
    distinct.dedup_by_key(|b| sha256_hex(b));
    assert_eq!(
        s3.object_count(BUCKET),
        distinct.len(),
        "objects in the bucket: {:?}",
        s3.objects(BUCKET)
    );
    for bytes in distinct {
        let path = s3.object_path(BUCKET, &sha256_hex(bytes));
        let stored = std::fs::read(&path)
            .unwrap_or_else(|e| panic!("object {} missing: {e}", path.display()));
        assert!(
            stored == *bytes,
            "object {} differs from the upload",
            path.display()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_trip_is_byte_identical() {
    let s3 = S3Server::launch();
    let mut srv = TestServer::start_with(s3_opts(&s3, MULTIPART)).await;
    let mut media = Vec::new();
    // 6 MiB and up are multipart uploads of 5 MiB parts: one 2-part, one 3-part with a short
    // last part; just below the threshold is a single PutObject.
    for size in [0, 1, 1000, (6 << 20) - 1, 10 << 20, (11 << 20) + 3] {
        let bytes = random_bytes(size);
        let mxc = srv.upload_bytes(bytes.clone()).await;
        media.push((mxc, bytes));
    }
    assert_downloads(&srv, &media).await;
    assert_bucket_holds(&s3, &media);

    // The authenticated endpoint and the stored metadata.
    let bytes = random_bytes(4321);
    let mxc = srv
        .upload(ALICE, bytes.clone(), Some("image/png"), Some("cat.png"))
        .await;
    let (server, id) = parse_mxc(&mxc);
    let resp = srv
        .client
        .get(srv.url(&format!("/_matrix/client/v1/media/download/{server}/{id}")))
        .bearer_auth(ALICE)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(header(&resp, "content-type"), "image/png");
    assert_eq!(
        header(&resp, "content-disposition"),
        "inline; filename=\"cat.png\""
    );
    assert_eq!(header(&resp, "content-length"), "4321");
    assert!(resp.bytes().await.unwrap() == bytes);
    media.push((mxc, bytes));
    assert_bucket_holds(&s3, &media);

    assert_eq!(
        spool_files(&srv, DS3),
        Vec::<PathBuf>::new(),
        "spool leftovers"
    );
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dedup_keeps_one_object() {
    let s3 = S3Server::launch();
    let mut srv = TestServer::start_with(s3_opts(&s3, MULTIPART)).await;
    let small = random_bytes(3000);
    let big = random_bytes(7 << 20);
    let mut media = Vec::new();
    for bytes in [&small, &small, &big, &big, &Vec::new(), &Vec::new()] {
        let mxc = srv.upload_bytes(bytes.clone()).await;
        media.push((mxc, bytes.clone()));
    }
    let mxc = srv
        .upload(ALICE, small.clone(), Some("text/plain"), Some("again.txt"))
        .await;
    media.push((mxc, small.clone()));
    assert_eq!(s3.object_count(BUCKET), 3, "{:?}", s3.objects(BUCKET));
    assert_bucket_holds(&s3, &media);
    let bytes = 3000 + (7 << 20);
    assert_eq!(
        srv.size_estimate(DS3, None).await,
        estimate(7, 3, bytes, 3, bytes)
    );
    assert_downloads(&srv, &media).await;
    assert_eq!(
        spool_files(&srv, DS3),
        Vec::<PathBuf>::new(),
        "spool leftovers"
    );
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ranges_and_head() {
    let s3 = S3Server::launch();
    let mut srv = TestServer::start_with(s3_opts(&s3, MULTIPART)).await;
    let size = 10 << 20;
    let bytes = random_bytes(size);
    let mxc = srv
        .upload(ALICE, bytes.clone(), Some("video/mp4"), Some("v.mp4"))
        .await;
    let (server, id) = parse_mxc(&mxc);
    let url = srv.url(&format!("/_matrix/media/v3/download/{server}/{id}"));
    let get = |range: String| {
        srv.client
            .get(&url)
            .header(reqwest::header::RANGE, range)
            .send()
    };
    let part = 5 << 20;
    for (range, start, end) in [
        ("bytes=0-9".to_owned(), 0, 9),
        (
            format!("bytes={}-{}", part - 10, part + 9),
            part - 10,
            part + 9,
        ),
        (format!("bytes={part}-"), part, size - 1),
        ("bytes=-100".to_owned(), size - 100, size - 1),
        (
            format!("bytes={}-{}", size - 5, size + 100),
            size - 5,
            size - 1,
        ),
        ("bytes=0-0".to_owned(), 0, 0),
    ] {
        let resp = get(range.clone()).await.unwrap();
        assert_eq!(resp.status(), StatusCode::PARTIAL_CONTENT, "{range}");
        assert_eq!(
            header(&resp, "content-range"),
            format!("bytes {start}-{end}/{size}"),
            "{range}"
        );
        assert_eq!(
            header(&resp, "content-length"),
            (end - start + 1).to_string(),
            "{range}"
        );
        let body = resp.bytes().await.unwrap();
        assert!(body == bytes[start..=end], "{range}: wrong bytes");
    }
    let resp = get(format!("bytes={size}-")).await.unwrap();
    assert_eq!(header(&resp, "content-range"), format!("bytes */{size}"));
    common::expect_error(resp, StatusCode::RANGE_NOT_SATISFIABLE, "M_INVALID_PARAM").await;

    let resp = srv.client.head(&url).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(header(&resp, "content-length"), size.to_string());
    assert_eq!(header(&resp, "content-type"), "video/mp4");
    assert_eq!(header(&resp, "accept-ranges"), "bytes");
    assert!(resp.bytes().await.unwrap().is_empty(), "HEAD has a body");

    let resp = srv
        .client
        .head(&url)
        .header(reqwest::header::RANGE, "bytes=100-199")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(header(&resp, "content-length"), "100");
    assert!(resp.bytes().await.unwrap().is_empty());

    // A small blob (single PutObject) and an empty one.
    let small = random_bytes(100);
    let small_mxc = srv.upload_bytes(small.clone()).await;
    let (server, id) = parse_mxc(&small_mxc);
    let resp = srv
        .client
        .get(srv.url(&format!("/_matrix/media/v3/download/{server}/{id}")))
        .header(reqwest::header::RANGE, "bytes=-5")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(header(&resp, "content-range"), "bytes 95-99/100");
    assert_eq!(resp.bytes().await.unwrap(), small[95..]);

    let empty = srv.upload_bytes(Vec::new()).await;
    let (server, id) = parse_mxc(&empty);
    let empty_url = srv.url(&format!("/_matrix/media/v3/download/{server}/{id}"));
    let resp = srv.client.get(&empty_url).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(header(&resp, "content-length"), "0");
    assert!(resp.bytes().await.unwrap().is_empty());
    let resp = srv.client.head(&empty_url).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(header(&resp, "content-length"), "0");
    let resp = srv
        .client
        .get(&empty_url)
        .header(reqwest::header::RANGE, "bytes=0-")
        .send()
        .await
        .unwrap();
    assert_eq!(header(&resp, "content-range"), "bytes */0");
    common::expect_error(resp, StatusCode::RANGE_NOT_SATISFIABLE, "M_INVALID_PARAM").await;
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listing_and_size_estimate() {
    let s3 = S3Server::launch();
    let mut srv = TestServer::start_with(Opts {
        datastores: Some(format!(
            "{}\n[[datastores]]\nid = \"files\"\ntype = \"file\"\npath = {{dir:media}}\nkinds = [\"remote_media\"]\n",
            s3.datastore_toml(DS3, BUCKET, r#"["all"]"#, "")
        )),
        ..Default::default()
    })
    .await;
    let resp = srv
        .client
        .get(srv.url("/_matrix/media/unstable/admin/datastores"))
        .bearer_auth(SECRET)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(
        v,
        json!({
            DS3: { "type": "s3", "uri": s3.uri(BUCKET) },
            "files": { "type": "file", "uri": srv.media_dir().display().to_string() },
        })
    );
    assert_eq!(
        v[DS3]["uri"],
        format!("s3://127.0.0.1:{}/{BUCKET}", s3.port)
    );

    assert_eq!(srv.size_estimate(DS3, None).await, estimate(0, 0, 0, 0, 0));
    let a = random_bytes(100);
    let b = random_bytes(50);
    srv.upload_bytes(a.clone()).await;
    srv.upload_bytes(a.clone()).await;
    srv.upload_bytes(b).await;
    srv.upload_bytes(Vec::new()).await;
    let expected = estimate(4, 3, 150, 3, 150);
    assert_eq!(srv.size_estimate(DS3, None).await, expected);
    assert_eq!(
        srv.size_estimate(DS3, Some(32_503_680_000_000)).await,
        expected
    );
    assert_eq!(
        srv.size_estimate(DS3, Some(1)).await,
        estimate(0, 0, 0, 0, 0)
    );
    // Local uploads never went to the file datastore (it takes remote media only).
    assert_eq!(
        srv.size_estimate("files", None).await,
        estimate(0, 0, 0, 0, 0)
    );
    assert_eq!(common::count_blobs(&srv.media_dir()), 0);
    assert_eq!(s3.object_count(BUCKET), 3);
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn media_survive_a_restart() {
    let s3 = S3Server::launch();
    let mut srv = TestServer::start_with(s3_opts(&s3, MULTIPART)).await;
    let shared = random_bytes(5000);
    let mut media = Vec::new();
    for bytes in [
        Vec::new(),
        random_bytes(1),
        shared.clone(),
        shared.clone(),
        random_bytes(7 << 20),
    ] {
        let mxc = srv.upload_bytes(bytes.clone()).await;
        media.push((mxc, bytes));
    }
    assert_downloads(&srv, &media).await;
    let figures = srv.size_estimate(DS3, None).await;
    let objects = s3.objects(BUCKET);
    assert_eq!(objects.len(), 4);
    let head = srv.server().ledger.head();

    srv.stop().await;
    let (verified, divergence) = Ledger::verify_path(&srv.db_path()).unwrap();
    assert_eq!(divergence, None, "projections diverge from a replay");
    assert!(verified.seq >= head);

    srv.restart().await;
    assert_downloads(&srv, &media).await;
    assert_eq!(srv.size_estimate(DS3, None).await, figures);
    assert_eq!(
        s3.objects(BUCKET),
        objects,
        "the sweep touched referenced objects"
    );

    // Dedup still finds the pre-restart objects.
    let again = srv.upload_bytes(shared.clone()).await;
    media.push((again, shared));
    assert_eq!(s3.object_count(BUCKET), 4);
    assert_downloads(&srv, &media).await;

    srv.stop().await;
    let (_, divergence) = Ledger::verify_path(&srv.db_path()).unwrap();
    assert_eq!(divergence, None);
}

/// Leftover objects nothing refers to (a crash between `PutObject` and the event) are swept at
/// start-up; referenced ones stay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn startup_sweep_removes_orphan_objects() {
    let s3 = S3Server::launch();
    let mut srv = TestServer::start_with(s3_opts(&s3, "")).await;
    let bytes = random_bytes(2000);
    let mxc = srv.upload_bytes(bytes.clone()).await;
    srv.stop().await;
    let orphan = random_bytes(300);
    let orphan_path = s3.object_path(BUCKET, &sha256_hex(&orphan));
    std::fs::create_dir_all(orphan_path.parent().unwrap()).unwrap();
    std::fs::write(&orphan_path, &orphan).unwrap();
    assert_eq!(s3.object_count(BUCKET), 2);

    srv.restart().await;
    assert_eq!(s3.object_count(BUCKET), 1, "{:?}", s3.objects(BUCKET));
    assert!(!orphan_path.exists());
    assert_downloads(&srv, &[(mxc, bytes)]).await;
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_outage_fails_fast_and_records_nothing() {
    let mut s3 = S3Server::launch();
    let mut srv = TestServer::start_with(s3_opts(&s3, MULTIPART)).await;
    let mut media = Vec::new();
    for bytes in [random_bytes(1000), random_bytes(7 << 20), Vec::new()] {
        let mxc = srv.upload_bytes(bytes.clone()).await;
        media.push((mxc, bytes));
    }
    assert_downloads(&srv, &media).await;
    let figures = srv.size_estimate(DS3, None).await;
    let uploads = uploaded_events(&srv.db_path());
    assert_eq!(uploads, 3);
    let objects = s3.objects(BUCKET);

    // A reservation made before the outage.
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
    let reserved = v["content_uri"].as_str().unwrap().to_owned();

    s3.stop();

    // Uploads: new small bytes (PutObject), new large bytes (multipart), known bytes (dedup
    // cannot check the object), and filling the reservation.
    for (what, bytes) in [
        ("small upload", random_bytes(500)),
        ("multipart upload", random_bytes(7 << 20)),
        ("duplicate upload", media[0].1.clone()),
    ] {
        let resp = within(what, srv.upload_raw(ALICE, bytes, None, None)).await;
        expect_gateway_error(resp, what).await;
    }
    let (server, id) = parse_mxc(&reserved);
    let put = || {
        srv.client
            .put(srv.url(&format!("/_matrix/media/v3/upload/{server}/{id}")))
            .bearer_auth(ALICE)
            .body(b"late bytes".to_vec())
            .send()
    };
    let resp = within("async upload", put()).await.unwrap();
    expect_gateway_error(resp, "async upload").await;

    // Downloads (GET, HEAD, ranges) answer a Matrix error instead of hanging.
    for (mxc, bytes) in &media {
        let (server, id) = parse_mxc(mxc);
        let url = srv.url(&format!("/_matrix/media/v3/download/{server}/{id}"));
        let resp = within("download", srv.client.get(&url).send())
            .await
            .unwrap();
        expect_gateway_error(resp, &format!("download of {} bytes", bytes.len())).await;
        let resp = within("HEAD", srv.client.head(&url).send()).await.unwrap();
        assert!(
            resp.status() == StatusCode::BAD_GATEWAY
                || resp.status() == StatusCode::SERVICE_UNAVAILABLE,
            "HEAD while S3 is down: {}",
            resp.status()
        );
        if !bytes.is_empty() {
            let resp = within(
                "range download",
                srv.client
                    .get(&url)
                    .header(reqwest::header::RANGE, "bytes=0-0")
                    .send(),
            )
            .await
            .unwrap();
            expect_gateway_error(resp, "range download").await;
        }
    }

    // Nothing was recorded and nothing is left in the spool.
    assert_eq!(srv.size_estimate(DS3, None).await, figures);
    assert_eq!(uploaded_events(&srv.db_path()), uploads);
    assert_eq!(
        spool_files(&srv, DS3),
        Vec::<PathBuf>::new(),
        "spool leftovers"
    );
    assert_eq!(s3.objects(BUCKET), objects);

    // S3 is back: everything works again, including the reservation.
    s3.start();
    assert_downloads(&srv, &media).await;
    let bytes = random_bytes(600);
    let mxc = srv.upload_bytes(bytes.clone()).await;
    media.push((mxc, bytes));
    let big = random_bytes(7 << 20);
    let mxc = srv.upload_bytes(big.clone()).await;
    media.push((mxc, big));
    let resp = put().await.unwrap();
    assert_eq!(
        resp.status(),
        StatusCode::OK,
        "{}",
        resp.text().await.unwrap()
    );
    media.push((reserved, b"late bytes".to_vec()));
    assert_downloads(&srv, &media).await;
    assert_bucket_holds(&s3, &media);
    assert_eq!(uploaded_events(&srv.db_path()), uploads + 3);

    srv.stop().await;
    let (_, divergence) = Ledger::verify_path(&srv.db_path()).unwrap();
    assert_eq!(divergence, None);
}

/// The server starts while S3 is down (the sweep cannot list the bucket) and serves once it
/// is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starts_while_s3_is_down() {
    let mut s3 = S3Server::launch();
    let mut srv = TestServer::start_with(s3_opts(&s3, "")).await;
    let bytes = random_bytes(1234);
    let mxc = srv.upload_bytes(bytes.clone()).await;
    srv.stop().await;
    s3.stop();
    srv.restart().await;
    let resp = within("download", srv.download(&mxc)).await;
    expect_gateway_error(resp, "download").await;
    s3.start();
    assert_downloads(&srv, &[(mxc, bytes)]).await;
    srv.stop().await;
}

/// The SDK's default checksum mode (`when_supported`: aws-chunked uploads with a trailing
/// CRC, checksum validation of responses) works against s3s-fs, multipart and ranges too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checksums_when_supported() {
    let s3 = S3Server::launch();
    let extra = format!(
        "{MULTIPART}request_checksum_calculation = \"when_supported\"\nresponse_checksum_validation = \"when_supported\"\n"
    );
    let mut srv = TestServer::start_with(s3_opts(&s3, &extra)).await;
    let mut media = Vec::new();
    for size in [0, 1, 100_000, 10 << 20] {
        let bytes = random_bytes(size);
        let mxc = srv.upload_bytes(bytes.clone()).await;
        media.push((mxc, bytes));
    }
    let dup = media[2].1.clone();
    let mxc = srv.upload_bytes(dup.clone()).await;
    media.push((mxc, dup));
    assert_downloads(&srv, &media).await;
    assert_bucket_holds(&s3, &media);

    for (mxc, bytes) in &media[2..4] {
        let (server, id) = parse_mxc(mxc);
        let resp = srv
            .client
            .get(srv.url(&format!("/_matrix/media/v3/download/{server}/{id}")))
            .header(reqwest::header::RANGE, "bytes=10-99")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::PARTIAL_CONTENT);
        assert!(resp.bytes().await.unwrap() == bytes[10..100]);
    }
    srv.stop().await;
}

/// A key prefix: objects live under it, the sweep lists only it and keeps them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_prefix() {
    let s3 = S3Server::launch();
    let mut srv = TestServer::start_with(s3_opts(
        &s3,
        &format!("{MULTIPART}prefix = \"ml/blobs/\"\n"),
    ))
    .await;
    let mut media = Vec::new();
    for bytes in [random_bytes(10), random_bytes(7 << 20)] {
        let mxc = srv.upload_bytes(bytes.clone()).await;
        media.push((mxc, bytes));
    }
    // An object outside the prefix is not ours: the sweep leaves it alone.
    let foreign = random_bytes(20);
    let foreign_path = s3.object_path(BUCKET, &sha256_hex(&foreign));
    std::fs::create_dir_all(foreign_path.parent().unwrap()).unwrap();
    std::fs::write(&foreign_path, &foreign).unwrap();
    for (_, bytes) in &media {
        let sha = sha256_hex(bytes);
        let path = s3
            .bucket_dir(BUCKET)
            .join("ml/blobs")
            .join(&sha[0..2])
            .join(&sha[2..4])
            .join(&sha);
        assert!(
            std::fs::read(&path).unwrap() == *bytes,
            "{}",
            path.display()
        );
    }
    srv.restart().await;
    assert_eq!(s3.object_count(BUCKET), 3, "{:?}", s3.objects(BUCKET));
    assert!(foreign_path.exists());
    assert_downloads(&srv, &media).await;
    srv.stop().await;
}

/// Two S3 datastores with the same endpoint, bucket and prefix write the same keys: the
/// configuration must be refused (as for file datastores sharing a directory), or at least
/// neither the start-up sweep nor a transfer between them may lose a blob.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_datastores_in_one_bucket() {
    let s3 = S3Server::launch();
    let datastores = format!(
        "{}{}",
        s3.datastore_toml("s3-a", BUCKET, r#"["all"]"#, ""),
        s3.datastore_toml("s3-b", BUCKET, r#"["remote_media"]"#, "")
    );
    let dir = tempfile::tempdir().unwrap();
    let opts = Opts {
        datastores: Some(datastores),
        ..Default::default()
    };
    if let Err(e) = media_ledger::config::Config::parse(&common::config_text(dir.path(), &opts)) {
        let msg = e.to_string();
        assert!(msg.contains("s3-a") && msg.contains("s3-b"), "{msg}");
        return;
    }
    let mut srv = TestServer::start_with(opts).await;
    // A transfer from one to the other: the copy lands on the very key it is read from, and
    // deleting "the source" deletes the only copy.
    let moved = random_bytes(1000);
    let mxc = srv.upload_bytes(moved.clone()).await;
    let mut media = vec![(mxc, moved)];
    transfer_and_wait(&srv, "s3-a", "s3-b").await;
    let resp = srv.download(&media[0].0).await;
    assert_eq!(
        resp.status(),
        StatusCode::OK,
        "the blob is gone after a transfer s3-a → s3-b (objects: {:?}): {}",
        s3.objects(BUCKET),
        resp.text().await.unwrap()
    );

    // The start-up sweep of s3-b sees the objects of s3-a as orphans.
    let kept = random_bytes(2000);
    let mxc = srv.upload_bytes(kept.clone()).await;
    media.push((mxc, kept));
    srv.restart().await;
    for (mxc, _) in &media {
        let resp = srv.download(mxc).await;
        assert_eq!(
            resp.status(),
            StatusCode::OK,
            "a blob is gone after a restart (objects: {:?}): {}",
            s3.objects(BUCKET),
            resp.text().await.unwrap()
        );
    }
    assert_downloads(&srv, &media).await;
    srv.stop().await;
}

/// An object deleted behind the server's back: its downloads fail with a server error (not a
/// hang, not wrong bytes); uploading the same bytes again restores it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_object_is_stored_again() {
    let s3 = S3Server::launch();
    let mut srv = TestServer::start_with(s3_opts(&s3, MULTIPART)).await;
    for bytes in [random_bytes(2000), random_bytes(7 << 20)] {
        let first = srv.upload_bytes(bytes.clone()).await;
        let path = s3.object_path(BUCKET, &sha256_hex(&bytes));
        std::fs::remove_file(&path).unwrap();
        let resp = within("download of a missing object", srv.download(&first)).await;
        assert!(resp.status().is_server_error(), "{}", resp.status());
        let v: Value = resp.json().await.unwrap();
        assert_eq!(v["errcode"], "M_UNKNOWN");

        let second = srv.upload_bytes(bytes.clone()).await;
        assert!(std::fs::read(&path).unwrap() == bytes);
        assert_downloads(&srv, &[(first, bytes.clone()), (second, bytes)]).await;
    }
    assert_eq!(s3.object_count(BUCKET), 2);
    srv.stop().await;
}

/// S3 accepts connections but never answers (SIGSTOP): with a short read timeout, uploads and
/// downloads fail with a Matrix error instead of hanging, and nothing is recorded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frozen_s3_times_out() {
    let s3 = S3Server::launch();
    let mut srv = TestServer::start_with(s3_opts(
        &s3,
        &format!("{MULTIPART}read_timeout_ms = 1000\n"),
    ))
    .await;
    let bytes = random_bytes(3000);
    let mxc = srv.upload_bytes(bytes.clone()).await;
    let figures = srv.size_estimate(DS3, None).await;
    let uploads = uploaded_events(&srv.db_path());

    s3.freeze();
    let resp = within("download", srv.download(&mxc)).await;
    expect_gateway_error(resp, "download from a frozen S3").await;
    for (what, size) in [("small upload", 500), ("multipart upload", 7 << 20)] {
        let resp = within(what, srv.upload_raw(ALICE, random_bytes(size), None, None)).await;
        expect_gateway_error(resp, what).await;
    }
    assert_eq!(srv.size_estimate(DS3, None).await, figures);
    assert_eq!(uploaded_events(&srv.db_path()), uploads);
    assert_eq!(
        spool_files(&srv, DS3),
        Vec::<PathBuf>::new(),
        "spool leftovers"
    );

    s3.thaw();
    assert_downloads(&srv, &[(mxc, bytes)]).await;
    let more = random_bytes(7 << 20);
    let mxc = srv.upload_bytes(more.clone()).await;
    assert_downloads(&srv, &[(mxc, more)]).await;
    srv.stop().await;
}

/// An object of the right key and size but the wrong bytes (bit rot, or the leftover of a
/// failed copy) must not be taken for the blob: an upload of the real bytes and a transfer
/// into the bucket both end with the right bytes stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_size_wrong_object_is_replaced() {
    let s3 = S3Server::launch();
    let mut srv = TestServer::start_with(Opts {
        datastores: Some(format!(
            "{}\n[[datastores]]\nid = \"files\"\ntype = \"file\"\npath = {{dir:media}}\nkinds = [\"remote_media\"]\n\n[transfers]\nmax_attempts = 2\nretry_base_ms = 50\n",
            s3.datastore_toml(DS3, BUCKET, r#"["all"]"#, ""),
        )),
        ..Default::default()
    })
    .await;
    let plant = |bytes: &[u8]| s3.plant(BUCKET, &sha256_hex(bytes), &random_bytes(bytes.len()));

    // Upload: the planted object is not the blob.
    let bytes = random_bytes(5000);
    let path = plant(&bytes);
    let mxc = srv.upload_bytes(bytes.clone()).await;
    let got = srv.download_bytes(&mxc).await;
    assert!(
        got == bytes,
        "an upload was acknowledged but the bucket serves other bytes"
    );
    assert!(std::fs::read(&path).unwrap() == bytes);

    // Transfer: `moved` goes s3 → files, a wrong object of its size appears at its key in
    // the bucket, then files → s3 must still store the right bytes.
    let moved = random_bytes(3000);
    let mxc2 = srv.upload_bytes(moved.clone()).await;
    let media = vec![(mxc, bytes), (mxc2, moved.clone())];
    let t = transfer_and_wait(&srv, DS3, "files").await;
    assert_eq!(t["error_message"], "", "{t}");
    assert_eq!(s3.object_count(BUCKET), 0);
    plant(&moved);
    let t = transfer_and_wait(&srv, "files", DS3).await;
    assert_eq!(
        t["error_message"], "",
        "a wrong object at the target key blocks the transfer: {t}"
    );
    assert_downloads(&srv, &media).await;
    assert_bucket_holds(&s3, &media);
    srv.stop().await;
}

/// Starts a transfer and polls `tasks/{id}` until it finished (60 s).
async fn transfer_and_wait(srv: &TestServer, src: &str, dst: &str) -> Value {
    let resp = srv
        .client
        .post(srv.url(&format!(
            "/_matrix/media/unstable/admin/datastores/{src}/transfer_to/{dst}"
        )))
        .bearer_auth(SECRET)
        .send()
        .await
        .unwrap();
    let status = resp.status();
    let v: Value = resp.json().await.unwrap();
    assert_eq!(status, StatusCode::OK, "transfer {src} → {dst}: {v}");
    let id = &v["task_id"];
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let t: Value = srv
            .client
            .get(srv.url(&format!("/_matrix/media/unstable/admin/tasks/{id}")))
            .bearer_auth(SECRET)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if t["is_finished"] == true {
            return t;
        }
        assert!(std::time::Instant::now() < deadline, "{t}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// An S3 datastore built straight from its config, against `s3`.
fn s3_datastore(s3: &S3Server, sha256_checksums: bool, spool: &Path) -> S3Datastore {
    use media_ledger::config::{ChecksumMode, S3Config};
    let config = S3Config {
        endpoint: s3.endpoint(),
        region: "us-east-1".into(),
        bucket: BUCKET.into(),
        access_key_id: common::s3::S3_ACCESS_KEY.into(),
        secret_access_key: common::s3::S3_SECRET_KEY.into(),
        path_style: true,
        prefix: String::new(),
        request_checksum_calculation: ChecksumMode::WhenRequired,
        response_checksum_validation: ChecksumMode::WhenRequired,
        sha256_checksums,
        multipart_threshold_bytes: 16 << 20,
        part_size_bytes: 8 << 20,
        connect_timeout_ms: 2000,
        read_timeout_ms: 20_000,
        spool_path: spool.to_owned(),
    };
    S3Datastore::open("s3".parse::<DatastoreId>().unwrap(), &config, spool).unwrap()
}

/// With `sha256_checksums` (the default) every PUT carries its SHA-256: the server refuses
/// bytes that do not hash to it, and afterwards vouches for the object from the checksum it
/// kept, so a transfer verifies its copy with one HEAD instead of reading it back. Without
/// the checksum (turned off, or an object written without one) nothing is vouched for and
/// the transfer reads back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sha256_checksums_vouch_for_objects() {
    let s3 = S3Server::launch();
    let dir = tempfile::tempdir().unwrap();
    let store = s3_datastore(&s3, true, &dir.path().join("spool"));
    let file = dir.path().join("blob");
    let bytes = random_bytes(100_000);
    std::fs::write(&file, &bytes).unwrap();
    let sha = digest(&bytes);
    let location = store.put_from(&file, &sha).await.unwrap();
    assert_eq!(
        store.vouches_for(&location, &sha, 100_000).await.unwrap(),
        Some(true)
    );
    assert_eq!(
        store.vouches_for(&location, &sha, 100_001).await.unwrap(),
        Some(false),
        "another size is not the blob"
    );

    // Bytes that are not the named blob are refused by the server and not vouched for
    // (s3s-fs leaves the refused bytes at the key; AWS stores nothing).
    let other = random_bytes(5000);
    let claimed = digest(&random_bytes(5000));
    std::fs::write(&file, &other).unwrap();
    let err = store.put_from(&file, &claimed).await.unwrap_err();
    assert!(err.to_string().contains("BadDigest"), "{err}");
    let refused = content_location(&claimed).unwrap();
    assert_ne!(
        store.vouches_for(&refused, &claimed, 5000).await.unwrap(),
        Some(true)
    );
    let missing = content_location(&digest(b"never stored")).unwrap();
    assert_eq!(
        store
            .vouches_for(&missing, &digest(b"never stored"), 12)
            .await
            .unwrap(),
        Some(false)
    );

    // Without checksums: stored, but not vouched for.
    let plain = s3_datastore(&s3, false, &dir.path().join("spool"));
    let sha_other = digest(&other);
    let location = plain.put_from(&file, &sha_other).await.unwrap();
    assert!(s3.has_object(BUCKET, &sha_other.to_hex()));
    assert_eq!(
        plain
            .vouches_for(&location, &sha_other, 5000)
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        store
            .vouches_for(&location, &sha_other, 5000)
            .await
            .unwrap(),
        None,
        "an object written without a checksum says nothing"
    );
}

fn digest(bytes: &[u8]) -> Sha256 {
    sha256_hex(bytes).parse().unwrap()
}
