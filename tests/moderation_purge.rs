#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The purge family of the moderation API over real HTTP on loopback (`purge/{server}/{id}`,
//! `purge/user`, `purge/server`, `purge/room`, `purge/quarantined`, `purge/old`,
//! `purge/remote`), checked against the blob files in the datastore directory, the download
//! and thumbnail answers, `size_estimate`, `usage`, `history` and the audit API. Homeserver
//! admins and room listings come from a fake Synapse admin API ([`common::synapse`]); remote
//! media from a second media-ledger instance over signed federation (as tests/federation.rs).

use crate::common;

use common::synapse::FakeSynapse;
use common::{
    blob_files, count_blobs, expect_error, parse_mxc, random_bytes, sha256_hex, spool_entries,
    Opts, TestServer, ADMIN, ALICE, BOB, BOB_OTHER, DS, SECRET,
};
use media_ledger_events::{Event, Seq};
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const ADMIN_API: &str = "/_matrix/media/unstable/admin";
/// A token only the fake Synapse knows (of `@admin:localhost`, an admin there): room purges
/// list the room's media with the caller's token.
const HS_ADMIN: &str = "hs-admin-token";

// ---------------------------------------------------------------------------------------------
// Helpers

/// `POST {ADMIN_API}/{path}` as `token`, empty body.
async fn post(srv: &TestServer, token: &str, path: &str) -> reqwest::Response {
    srv.client
        .post(srv.url(&format!("{ADMIN_API}/{path}")))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
}

/// `POST {ADMIN_API}/{path}` as `token` with a JSON body.
async fn post_json(srv: &TestServer, token: &str, path: &str, body: &Value) -> reqwest::Response {
    srv.client
        .post(srv.url(&format!("{ADMIN_API}/{path}")))
        .bearer_auth(token)
        .json(body)
        .send()
        .await
        .unwrap()
}

/// The JSON body of a 200 answer (panics with the body otherwise).
async fn json_ok(resp: reqwest::Response) -> Value {
    let status = resp.status();
    let url = resp.url().clone();
    let text = resp.text().await.unwrap();
    assert_eq!(status, StatusCode::OK, "{url}: {text}");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{url}: not JSON ({e}): {text}"))
}

async fn post_ok(srv: &TestServer, token: &str, path: &str) -> Value {
    json_ok(post(srv, token, path).await).await
}

async fn get_ok(srv: &TestServer, token: &str, path: &str) -> Value {
    let resp = srv
        .client
        .get(srv.url(&format!("{ADMIN_API}/{path}")))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    json_ok(resp).await
}

/// The `affected` list of a purge answer, asserting its shape.
fn affected_of(v: &Value) -> BTreeSet<String> {
    assert_eq!(v["purged"], true, "{v}");
    let list = v["affected"].as_array().unwrap_or_else(|| panic!("{v}"));
    let set: BTreeSet<String> = list
        .iter()
        .map(|m| m.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(set.len(), list.len(), "duplicates in affected: {v}");
    set
}

/// `POST purge/{what}` as `token`, asserting 200; the affected media.
async fn purge(srv: &TestServer, token: &str, what: &str) -> BTreeSet<String> {
    affected_of(&post_ok(srv, token, &format!("purge/{what}")).await)
}

/// A set of mxc URIs.
fn set(items: &[&String]) -> BTreeSet<String> {
    items.iter().map(|s| (*s).clone()).collect()
}

/// `server/id` of an mxc URI (for the admin API paths).
fn sid(mxc: &str) -> String {
    let (server, id) = parse_mxc(mxc);
    format!("{server}/{id}")
}

/// Where a file datastore at `dir` keeps `bytes`: `<dir>/<hh>/<hh>/<sha256 hex>`.
fn blob_path(dir: &Path, bytes: &[u8]) -> PathBuf {
    let h = sha256_hex(bytes);
    dir.join(&h[0..2]).join(&h[2..4]).join(&h)
}

/// `GET media/{server}/{id}/history` as the repository admin.
async fn history(srv: &TestServer, mxc: &str) -> Value {
    get_ok(srv, ADMIN, &format!("media/{}/history", sid(mxc))).await
}

/// The event types of a history answer, in order.
fn types(h: &Value) -> Vec<String> {
    h["events"]
        .as_array()
        .unwrap_or_else(|| panic!("{h}"))
        .iter()
        .map(|e| e["type"].as_str().unwrap().to_owned())
        .collect()
}

/// The purge acts of the audit API, newest first.
async fn purge_audit(srv: &TestServer) -> Vec<Value> {
    get_ok(srv, ADMIN, "audit?kind=purge&limit=500").await["chunk"]
        .as_array()
        .unwrap()
        .clone()
}

/// The `affected` of one audit entry.
fn audit_affected(e: &Value) -> BTreeSet<String> {
    e["affected"]
        .as_array()
        .unwrap_or_else(|| panic!("{e}"))
        .iter()
        .map(|m| m.as_str().unwrap().to_owned())
        .collect()
}

/// Asserts the download of `mxc` answers 404 M_NOT_FOUND.
async fn expect_gone(srv: &TestServer, mxc: &str) {
    expect_error(
        srv.download(mxc).await,
        StatusCode::NOT_FOUND,
        "M_NOT_FOUND",
    )
    .await;
}

/// `GET /_matrix/media/v3/thumbnail/{server}/{id}?{query}` with a token (which may generate).
async fn thumbnail(srv: &TestServer, mxc: &str, query: &str) -> reqwest::Response {
    srv.client
        .get(srv.url(&format!("/_matrix/media/v3/thumbnail/{}?{query}", sid(mxc))))
        .bearer_auth(ALICE)
        .send()
        .await
        .unwrap()
}

fn now_ms() -> u64 {
    u64::try_from(chrono::Utc::now().timestamp_millis()).unwrap()
}

/// Sleeps long enough for the millisecond clock to move on.
async fn tick() {
    tokio::time::sleep(Duration::from_millis(20)).await;
}

/// A `size_estimate` answer.
fn estimate(
    media: u64,
    media_hashes: u64,
    media_bytes: u64,
    thumbs: u64,
    thumb_bytes: u64,
) -> Value {
    json!({
        "thumbnails_affected": thumbs,
        "thumbnail_hashes_affected": thumbs,
        "thumbnail_bytes": thumb_bytes,
        "media_affected": media,
        "media_hashes_affected": media_hashes,
        "media_bytes": media_bytes,
        "total_hashes_affected": media_hashes + thumbs,
        "total_bytes": media_bytes + thumb_bytes,
    })
}

fn zeros() -> Value {
    estimate(0, 0, 0, 0, 0)
}

/// A `w`×`h` JPEG gradient (`seed` changes the bytes).
fn jpeg(w: u32, h: u32, seed: u32) -> Vec<u8> {
    let img = image::RgbImage::from_fn(w, h, |x, y| {
        image::Rgb([
            (x * 255 / w) as u8,
            (y * 255 / h) as u8,
            ((x + y + seed * 37) % 256) as u8,
        ])
    });
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 85)
        .encode_image(&img)
        .unwrap();
    out
}

/// The homeserver `localhost` (default) asking `cs_api` for admins and rooms.
fn localhost_with(cs_api: &str) -> String {
    format!("[[homeservers]]\nname = \"localhost\"\ndefault = true\ncs_api = \"{cs_api}\"\n")
}

/// Uploads `bytes` as `token` to the homeserver named by `host`.
async fn upload_to(srv: &TestServer, host: &str, token: &str, bytes: Vec<u8>) -> String {
    let resp = srv
        .client
        .post(srv.url("/_matrix/media/v3/upload"))
        .header(reqwest::header::HOST, host)
        .bearer_auth(token)
        .body(bytes)
        .send()
        .await
        .unwrap();
    let v = json_ok(resp).await;
    v["content_uri"].as_str().unwrap().to_owned()
}

// ---------------------------------------------------------------------------------------------
// Two instances: A ("a.test") caches B's ("b.test") media.

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn federation_toml(peer: &str, url: &str) -> String {
    format!(
        "[federation]\nsigning_key_path = {{dir:signing.key}}\npins = {{ {peer:?} = {url:?} }}\n"
    )
}

/// What differs between the A instances of the tests.
#[derive(Default)]
struct PairOpts {
    /// Lines of A's `[downloads]` table.
    downloads: String,
    /// A's `cs_api` (a fake Synapse).
    cs_api: Option<String>,
}

/// B, then A, each pinning the other.
async fn pair(o: PairOpts) -> (TestServer, TestServer) {
    let a_port = free_port();
    let b = TestServer::start_with(Opts {
        homeservers: Some("[[homeservers]]\nname = \"b.test\"\ndefault = true\n".into()),
        extra_toml: federation_toml("a.test", &format!("http://127.0.0.1:{a_port}")),
        ..Opts::default()
    })
    .await;
    let cs_api = o
        .cs_api
        .map(|u| format!("cs_api = \"{u}\"\n"))
        .unwrap_or_default();
    let a = TestServer::start_with(Opts {
        homeservers: Some(format!(
            "[[homeservers]]\nname = \"a.test\"\ndefault = true\n{cs_api}"
        )),
        bind: Some(format!("127.0.0.1:{a_port}")),
        downloads_extra: o.downloads,
        extra_toml: federation_toml("b.test", &b.base),
        ..Opts::default()
    })
    .await;
    (a, b)
}

/// How many `media.remote_cached.v1` of `mxc` the running server recorded.
fn cached_count(srv: &TestServer, mxc: &str) -> usize {
    let mut n = 0;
    srv.server()
        .ledger
        .events(Seq(1), Seq(u64::MAX), |env| {
            if let Event::RemoteMediaCachedV1(e) = &env.event {
                if e.media.to_string() == mxc {
                    n += 1;
                }
            }
            true
        })
        .unwrap();
    n
}

/// Waits until the history of `mxc` shows an access at or after `since`.
async fn wait_access(srv: &TestServer, mxc: &str, since: u64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let h = history(srv, mxc).await;
        if h["state"]["last_access_ts"].as_u64().unwrap() >= since {
            assert!(h["state"]["access_count"].as_u64().unwrap() >= 1, "{h}");
            return;
        }
        assert!(
            Instant::now() < deadline,
            "access of {mxc} never recorded: {h}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// Blobs and their references

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blob_is_freed_exactly_when_its_last_reference_goes() {
    let mut srv = TestServer::start().await;
    let dir = srv.media_dir();
    let bytes = random_bytes(20_000);
    let first = srv.upload_bytes(bytes.clone()).await;
    let second = srv
        .upload(BOB, bytes.clone(), Some("text/plain"), Some("same.txt"))
        .await;
    let blob = blob_path(&dir, &bytes);
    assert_eq!(blob_files(&dir), vec![blob.clone()], "one blob for both");
    assert_eq!(
        srv.size_estimate(DS, None).await,
        estimate(2, 1, 20_000, 0, 0)
    );

    assert_eq!(purge(&srv, ADMIN, &sid(&first)).await, set(&[&first]));
    assert_eq!(blob_files(&dir), vec![blob.clone()], "still referenced");
    assert_eq!(std::fs::read(&blob).unwrap(), bytes);
    expect_gone(&srv, &first).await;
    assert_eq!(srv.download_bytes(&second).await, bytes);
    assert_eq!(
        srv.size_estimate(DS, None).await,
        estimate(1, 1, 20_000, 0, 0)
    );

    assert_eq!(purge(&srv, ADMIN, &sid(&second)).await, set(&[&second]));
    assert!(!blob.exists(), "last reference gone, blob kept");
    assert_eq!(count_blobs(&dir), 0);
    expect_gone(&srv, &second).await;
    assert_eq!(srv.size_estimate(DS, None).await, zeros());
    assert_eq!(
        srv.size_estimate(DS, Some(u64::MAX / 2)).await,
        zeros(),
        "with a before_ts"
    );
    let usage = get_ok(&srv, ADMIN, "usage/localhost").await;
    assert_eq!(usage["raw_counts"]["media"], 0, "{usage}");
    assert_eq!(usage["raw_bytes"]["total"], 0, "{usage}");

    // A purge of a non-quarantined media does not block its bytes.
    let again = srv.upload_bytes(bytes.clone()).await;
    assert_ne!(again, first);
    assert_eq!(blob_files(&dir), vec![blob.clone()]);
    assert_eq!(srv.download_bytes(&again).await, bytes);
    assert_eq!(
        srv.size_estimate(DS, None).await,
        estimate(1, 1, 20_000, 0, 0)
    );
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thumbnails_are_freed_with_their_media() {
    let mut srv = TestServer::start().await;
    let dir = srv.media_dir();
    let (one, two) = (jpeg(640, 480, 1), jpeg(640, 480, 2));
    let m1 = srv
        .upload(ALICE, one.clone(), Some("image/jpeg"), None)
        .await;
    let m2 = srv
        .upload(ALICE, two.clone(), Some("image/jpeg"), None)
        .await;
    let query = "width=96&height=96&method=crop";
    let mut thumbs = Vec::new();
    for m in [&m1, &m2] {
        let resp = thumbnail(&srv, m, query).await;
        assert_eq!(resp.status(), StatusCode::OK);
        let t = resp.bytes().await.unwrap().to_vec();
        assert!(t != one && t != two, "a generated thumbnail");
        thumbs.push(t);
    }
    let t1_blob = blob_path(&dir, &thumbs[0]);
    let t2_blob = blob_path(&dir, &thumbs[1]);
    assert!(t1_blob.exists() && t2_blob.exists());
    assert_eq!(count_blobs(&dir), 4);
    let est = srv.size_estimate(DS, None).await;
    assert_eq!(est["thumbnails_affected"], 2, "{est}");

    assert_eq!(purge(&srv, ADMIN, &sid(&m1)).await, set(&[&m1]));
    assert!(!blob_path(&dir, &one).exists(), "media blob kept");
    assert!(!t1_blob.exists(), "thumbnail blob kept");
    assert_eq!(
        blob_files(&dir).into_iter().collect::<BTreeSet<_>>(),
        [blob_path(&dir, &two), t2_blob.clone()]
            .into_iter()
            .collect()
    );
    expect_error(
        thumbnail(&srv, &m1, query).await,
        StatusCode::NOT_FOUND,
        "M_NOT_FOUND",
    )
    .await;
    expect_error(
        thumbnail(&srv, &m1, "width=320&height=240&method=scale").await,
        StatusCode::NOT_FOUND,
        "M_NOT_FOUND",
    )
    .await;
    assert_eq!(count_blobs(&dir), 2, "nothing generated for a purged media");
    let resp = thumbnail(&srv, &m2, query).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.bytes().await.unwrap().to_vec(), thumbs[1]);
    let est = srv.size_estimate(DS, None).await;
    assert_eq!(est["thumbnails_affected"], 1, "{est}");
    assert_eq!(est["thumbnail_bytes"], thumbs[1].len() as u64, "{est}");
    assert_eq!(est["media_bytes"], two.len() as u64, "{est}");

    // The purge event lists the thumbnail and both freed blobs.
    let audit = purge_audit(&srv).await;
    let details = &audit[0]["details"];
    assert_eq!(
        details["thumbnails"].as_array().unwrap().len(),
        1,
        "{details}"
    );
    let freed: BTreeSet<String> = details["freed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["sha256"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        freed,
        [sha256_hex(&one), sha256_hex(&thumbs[0])]
            .into_iter()
            .collect()
    );

    assert_eq!(purge(&srv, ADMIN, &sid(&m2)).await, set(&[&m2]));
    assert_eq!(count_blobs(&dir), 0);
    assert_eq!(srv.size_estimate(DS, None).await, zeros());
    let usage = get_ok(&srv, ADMIN, "usage/localhost").await;
    assert_eq!(usage["raw_counts"]["thumbnails"], 0, "{usage}");
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purged_quarantined_media_stays_a_tombstone() {
    let mut srv = TestServer::start().await;
    let dir = srv.media_dir();
    let bad = random_bytes(5000);
    let worse = random_bytes(6000);
    let keep = random_bytes(100);
    let m = srv.upload_bytes(bad.clone()).await;
    let n = srv.upload_bytes(worse.clone()).await;
    let k = srv.upload_bytes(keep.clone()).await;
    for q in [&m, &n] {
        let v = post_ok(&srv, ADMIN, &format!("quarantine/{}", sid(q))).await;
        assert_eq!(v["num_quarantined"], 1, "{v}");
    }

    // purge/quarantined takes both; purge/{server}/{id} of a quarantined media the same way.
    assert_eq!(
        purge(&srv, ADMIN, "quarantined?reason=cleanup").await,
        set(&[&m, &n])
    );
    assert!(!blob_path(&dir, &bad).exists());
    assert!(!blob_path(&dir, &worse).exists());
    assert_eq!(blob_files(&dir), vec![blob_path(&dir, &keep)]);
    expect_gone(&srv, &m).await;
    expect_gone(&srv, &n).await;
    assert_eq!(srv.download_bytes(&k).await, keep);

    // The bytes stay blocked, for every uploader.
    for (token, bytes) in [(BOB, &bad), (ALICE, &worse)] {
        let resp = srv
            .upload_raw(token, bytes.clone(), Some("application/octet-stream"), None)
            .await;
        expect_error(resp, StatusCode::FORBIDDEN, "M_FORBIDDEN").await;
    }
    assert_eq!(count_blobs(&dir), 1, "a refused upload left a blob");
    assert_eq!(spool_entries(&dir), 0);

    for q in [&m, &n] {
        let h = history(&srv, q).await;
        assert_eq!(h["media"], q.as_str(), "{h}");
        assert_eq!(h["state"]["tombstone"], true, "{h}");
        assert_eq!(h["state"]["exists"], false, "{h}");
        assert_eq!(h["state"]["quarantined"], true, "{h}");
        let t = types(&h);
        for ty in [
            "media.uploaded.v1",
            "media.quarantined.v1",
            "media.purged.v1",
            "blob.deleted.v1",
        ] {
            assert!(t.iter().any(|x| x == ty), "{ty} missing from {t:?}");
        }
        let purged = h["events"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["type"] == "media.purged.v1")
            .unwrap();
        assert_eq!(purged["reason"], "cleanup", "{purged}");
        let me = purged["details"]["media"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| {
                format!(
                    "mxc://{}/{}",
                    x["media"]["origin"].as_str().unwrap(),
                    x["media"]["media_id"].as_str().unwrap()
                ) == *q
            })
            .unwrap_or_else(|| panic!("{purged}"))
            .clone();
        assert_eq!(me["tombstone"], true, "{me}");
        let deleted = h["events"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["type"] == "blob.deleted.v1")
            .unwrap();
        assert_eq!(deleted["details"]["kept"], false, "{deleted}");
    }

    // A tombstone is not purged again and is not live media.
    expect_error(
        post(&srv, ADMIN, &format!("purge/{}", sid(&m))).await,
        StatusCode::NOT_FOUND,
        "M_NOT_FOUND",
    )
    .await;
    assert!(purge(&srv, ADMIN, "quarantined").await.is_empty());
    assert_eq!(srv.size_estimate(DS, None).await, estimate(1, 1, 100, 0, 0));
    let uploads = get_ok(&srv, ADMIN, "usage/localhost/uploads").await;
    assert_eq!(
        uploads.as_object().unwrap().keys().collect::<Vec<_>>(),
        vec![&k],
        "{uploads}"
    );

    // The single-media purge of a quarantined media also leaves a tombstone.
    let third = random_bytes(700);
    let o = srv.upload_bytes(third.clone()).await;
    post_ok(&srv, ADMIN, &format!("quarantine/{}", sid(&o))).await;
    assert_eq!(purge(&srv, ADMIN, &sid(&o)).await, set(&[&o]));
    assert!(!blob_path(&dir, &third).exists());
    let h = history(&srv, &o).await;
    assert_eq!(h["state"]["tombstone"], true, "{h}");
    let resp = srv
        .upload_raw(BOB, third, Some("application/octet-stream"), None)
        .await;
    expect_error(resp, StatusCode::FORBIDDEN, "M_FORBIDDEN").await;
    srv.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Who may purge

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploader_may_purge_own_media_but_not_others() {
    let mut srv = TestServer::start().await;
    let dir = srv.media_dir();
    let mine = random_bytes(300);
    let bobs = random_bytes(400);
    let a = srv.upload(ALICE, mine.clone(), None, None).await;
    let b = srv.upload(BOB, bobs.clone(), None, None).await;

    let resp = post(&srv, ALICE, &format!("purge/{}", sid(&b))).await;
    expect_error(resp, StatusCode::FORBIDDEN, "M_FORBIDDEN").await;
    assert!(blob_path(&dir, &bobs).exists());
    assert_eq!(srv.download_bytes(&b).await, bobs);
    let resp = srv
        .client
        .post(srv.url(&format!("{ADMIN_API}/purge/{}", sid(&b))))
        .send()
        .await
        .unwrap();
    expect_error(resp, StatusCode::UNAUTHORIZED, "M_MISSING_TOKEN").await;
    assert_eq!(srv.download_bytes(&b).await, bobs);

    assert_eq!(
        purge(&srv, ALICE, &format!("{}?reason=mine", sid(&a))).await,
        set(&[&a])
    );
    assert!(!blob_path(&dir, &mine).exists());
    expect_gone(&srv, &a).await;
    assert_eq!(blob_files(&dir), vec![blob_path(&dir, &bobs)]);

    let audit = purge_audit(&srv).await;
    assert_eq!(audit.len(), 1, "{audit:?}");
    assert_eq!(audit[0]["actor"], "@alice:localhost");
    assert_eq!(audit[0]["reason"], "mine");
    assert_eq!(audit[0]["details"]["authority"], "Uploader");
    assert_eq!(audit_affected(&audit[0]), set(&[&a]));

    // Gone for the uploader too; unknown media are 404 before any capacity check.
    for token in [ALICE, BOB] {
        let resp = post(&srv, token, &format!("purge/{}", sid(&a))).await;
        expect_error(resp, StatusCode::NOT_FOUND, "M_NOT_FOUND").await;
    }
    srv.stop().await;
}

/// Quarantined bytes are evidence: their uploader cannot purge them (the request is refused
/// and the writer would skip them anyway), an admin can.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploader_cannot_purge_own_quarantined_media() {
    let mut srv = TestServer::start().await;
    let dir = srv.media_dir();
    let mine = random_bytes(300);
    let a = srv.upload(ALICE, mine.clone(), None, None).await;
    post_ok(&srv, ADMIN, &format!("quarantine/{}", sid(&a))).await;

    let resp = post(&srv, ALICE, &format!("purge/{}", sid(&a))).await;
    expect_error(resp, StatusCode::FORBIDDEN, "M_FORBIDDEN").await;
    assert!(blob_path(&dir, &mine).exists(), "the evidence was deleted");
    assert!(purge_audit(&srv).await.is_empty());

    assert_eq!(purge(&srv, ADMIN, "quarantined").await, set(&[&a]));
    assert!(!blob_path(&dir, &mine).exists());
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_users_cannot_purge_in_bulk() {
    let mut srv = TestServer::start().await;
    let dir = srv.media_dir();
    let a = srv.upload_bytes(random_bytes(100)).await;
    let b = srv.upload(BOB, random_bytes(100), None, None).await;
    let q = srv.upload_bytes(random_bytes(100)).await;
    post_ok(&srv, ADMIN, &format!("quarantine/{}", sid(&q))).await;
    let far = now_ms() + 86_400_000;
    let paths = [
        format!("purge/user/@alice:localhost?before_ts={far}"),
        "purge/user/@bob:localhost".to_owned(),
        format!("purge/server/localhost?before_ts={far}"),
        "purge/quarantined".to_owned(),
        format!("purge/old?before_ts={far}&include_local=true"),
        format!("purge/remote?before_ts={far}"),
        format!("purge_remote?before_ts={far}"),
        "purge/room/!room:localhost".to_owned(),
    ];
    for token in [ALICE, BOB] {
        for path in &paths {
            let resp = post(&srv, token, path).await;
            expect_error(resp, StatusCode::FORBIDDEN, "M_FORBIDDEN").await;
        }
    }
    assert_eq!(count_blobs(&dir), 3, "a refused purge deleted something");
    for m in [&a, &b] {
        srv.download_bytes(m).await;
    }
    assert!(purge_audit(&srv).await.is_empty());
    // The quarantined one is still there for an admin to purge.
    assert_eq!(purge(&srv, ADMIN, "quarantined").await, set(&[&q]));
    assert_eq!(count_blobs(&dir), 2);
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn homeserver_admin_purges_only_their_own_server() {
    let hs = FakeSynapse::start(&[(ALICE, "@alice:localhost")]).await;
    let mut srv = TestServer::start_with(Opts {
        homeservers: Some(format!(
            "{}\n[[homeservers]]\nname = \"other.test\"\n",
            localhost_with(&hs.url)
        )),
        ..Opts::default()
    })
    .await;
    let dir = srv.media_dir();
    let b1 = srv.upload(BOB, random_bytes(100), None, None).await;
    let b3 = srv.upload(BOB, random_bytes(100), None, None).await;
    let other_bytes = random_bytes(100);
    let b2 = upload_to(&srv, "other.test", BOB_OTHER, other_bytes.clone()).await;
    assert!(b2.starts_with("mxc://other.test/"), "{b2}");
    let q_local = srv.upload(BOB, random_bytes(100), None, None).await;
    let q_other = upload_to(&srv, "other.test", BOB_OTHER, random_bytes(100)).await;
    for q in [&q_local, &q_other] {
        post_ok(&srv, ADMIN, &format!("quarantine/{}", sid(q))).await;
    }
    let far = now_ms() + 86_400_000;

    // Another server's media, the remote purge and purge/old: refused.
    for path in [
        format!("purge/{}", sid(&b2)),
        "purge/server/other.test".to_owned(),
        "purge/user/@bob:other.test".to_owned(),
        format!("purge/remote?before_ts={far}"),
        format!("purge/old?before_ts={far}&include_local=true"),
    ] {
        let resp = post(&srv, ALICE, &path).await;
        expect_error(resp, StatusCode::FORBIDDEN, "M_FORBIDDEN").await;
    }
    assert_eq!(count_blobs(&dir), 5);
    assert!(hs.calls_to("/_synapse/admin/v1/users/") >= 1, "never asked");

    // Their own server's media: one, the quarantined ones, the whole server.
    assert_eq!(purge(&srv, ALICE, &sid(&b1)).await, set(&[&b1]));
    assert_eq!(purge(&srv, ALICE, "quarantined").await, set(&[&q_local]));
    assert_eq!(purge(&srv, ALICE, "server/localhost").await, set(&[&b3]));
    assert_eq!(count_blobs(&dir), 2, "other.test's two media remain");
    assert_eq!(srv.download_bytes(&b2).await, other_bytes);
    assert!(blob_path(&dir, &other_bytes).exists());

    let audit = purge_audit(&srv).await;
    assert_eq!(audit.len(), 3, "{audit:?}");
    for e in &audit {
        assert_eq!(e["actor"], "@alice:localhost", "{e}");
        assert_eq!(
            e["details"]["authority"],
            json!({"HomeserverAdmin": "localhost"}),
            "{e}"
        );
    }

    // Bob is no admin of the homeserver.
    let resp = post(&srv, BOB, "purge/server/other.test").await;
    expect_error(resp, StatusCode::FORBIDDEN, "M_FORBIDDEN").await;
    let resp = post(&srv, BOB, "purge/quarantined").await;
    expect_error(resp, StatusCode::FORBIDDEN, "M_FORBIDDEN").await;
    // The repository admin may purge other.test.
    assert_eq!(purge(&srv, ADMIN, "quarantined").await, set(&[&q_other]));
    assert_eq!(purge(&srv, ADMIN, "server/other.test").await, set(&[&b2]));
    assert_eq!(count_blobs(&dir), 0);
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_purge_needs_before_ts_and_a_repository_admin() {
    let hs = FakeSynapse::start(&[(ALICE, "@alice:localhost")]).await;
    let mut srv = TestServer::start_with(Opts {
        homeservers: Some(localhost_with(&hs.url)),
        ..Opts::default()
    })
    .await;
    let m = srv.upload_bytes(random_bytes(100)).await;
    for path in ["purge/remote", "purge_remote"] {
        for token in [ADMIN, SECRET] {
            let resp = post(&srv, token, path).await;
            expect_error(resp, StatusCode::BAD_REQUEST, "M_MISSING_PARAM").await;
        }
    }
    let now = now_ms();
    for path in [
        format!("purge/remote?before_ts={now}"),
        format!("purge_remote?before_ts={now}"),
    ] {
        // Alice is an admin of the homeserver, Bob is not: neither may.
        for token in [ALICE, BOB] {
            let resp = post(&srv, token, &path).await;
            expect_error(resp, StatusCode::FORBIDDEN, "M_FORBIDDEN").await;
        }
        let v = post_ok(&srv, ADMIN, &path).await;
        assert_eq!(v, json!({"total_removed": 0}));
    }
    // Alice is a homeserver admin indeed (purge/quarantined is for admins only).
    assert!(purge(&srv, ALICE, "quarantined").await.is_empty());
    let resp = post(&srv, BOB, "purge/quarantined").await;
    expect_error(resp, StatusCode::FORBIDDEN, "M_FORBIDDEN").await;
    // A remote purge never touches local media.
    assert_eq!(srv.download_bytes(&m).await.len(), 100);
    assert_eq!(count_blobs(&srv.media_dir()), 1);
    srv.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Pinned media, before_ts

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pinned_media_survive_every_purge() {
    let hs = FakeSynapse::start(&[(HS_ADMIN, "@admin:localhost")]).await;
    let mut srv = TestServer::start_with(Opts {
        homeservers: Some(localhost_with(&hs.url)),
        ..Opts::default()
    })
    .await;
    let dir = srv.media_dir();
    let pbytes = random_bytes(1000);
    let p = srv.upload(ALICE, pbytes.clone(), None, None).await;
    let sib = srv.upload(BOB, pbytes.clone(), None, None).await;
    let other = srv.upload(ALICE, random_bytes(200), None, None).await;
    let v = json_ok(
        post_json(
            &srv,
            ADMIN,
            &format!("media/{}/attributes", sid(&p)),
            &json!({"purpose": "pinned"}),
        )
        .await,
    )
    .await;
    assert_eq!(v, json!({"purpose": "pinned"}));
    hs.set_room_media("!pins:localhost", &[&p], &[]);
    let far = now_ms() + 86_400_000;

    assert!(purge(&srv, ADMIN, &sid(&p)).await.is_empty());
    assert!(purge(&srv, ALICE, &sid(&p)).await.is_empty(), "uploader");
    assert_eq!(
        purge(
            &srv,
            ADMIN,
            &format!("user/@alice:localhost?before_ts={far}")
        )
        .await,
        set(&[&other])
    );
    assert!(purge(
        &srv,
        HS_ADMIN,
        &format!("room/!pins:localhost?before_ts={far}")
    )
    .await
    .is_empty());
    // A quarantine skips the pinned media but takes its same-bytes sibling; purging the
    // sibling keeps the pinned media's blob.
    let v = post_ok(&srv, ADMIN, &format!("quarantine/{}", sid(&sib))).await;
    assert_eq!(v["num_quarantined"], 1, "{v}");
    let v = post_ok(&srv, ADMIN, &format!("quarantine/{}", sid(&p))).await;
    assert_eq!(v["num_quarantined"], 0, "{v}");
    assert_eq!(purge(&srv, ADMIN, "quarantined").await, set(&[&sib]));
    assert!(
        purge(&srv, ADMIN, &format!("server/localhost?before_ts={far}"))
            .await
            .is_empty()
    );
    assert!(purge(
        &srv,
        ADMIN,
        &format!("old?before_ts={far}&include_local=true")
    )
    .await
    .is_empty());
    let v = post_ok(&srv, ADMIN, &format!("purge/remote?before_ts={far}")).await;
    assert_eq!(v["total_removed"], 0);

    assert_eq!(blob_files(&dir), vec![blob_path(&dir, &pbytes)]);
    assert_eq!(srv.download_bytes(&p).await, pbytes);
    let v = get_ok(&srv, ADMIN, &format!("media/{}/attributes", sid(&p))).await;
    assert_eq!(v, json!({"purpose": "pinned"}));

    // Unpinned, it goes like any other.
    let v = json_ok(
        post_json(
            &srv,
            ADMIN,
            &format!("media/{}/attributes", sid(&p)),
            &json!({"purpose": "none"}),
        )
        .await,
    )
    .await;
    assert_eq!(v, json!({"purpose": "none"}));
    assert_eq!(purge(&srv, ADMIN, &sid(&p)).await, set(&[&p]));
    assert_eq!(count_blobs(&dir), 0);
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_and_server_purges_honour_before_ts() {
    let mut srv = TestServer::start().await;
    let dir = srv.media_dir();
    let a_old = srv.upload(ALICE, random_bytes(100), None, None).await;
    let b_old = srv.upload(BOB, random_bytes(100), None, None).await;
    tick().await;
    let t = now_ms();
    tick().await;
    let a_new = srv.upload(ALICE, random_bytes(100), None, None).await;
    let b_new = srv.upload(BOB, random_bytes(100), None, None).await;
    let uploads = get_ok(&srv, ADMIN, "usage/localhost/uploads").await;
    let created = |m: &String| {
        uploads[m.as_str()]["created_ts"]
            .as_u64()
            .unwrap_or_else(|| panic!("{m} missing from usage/uploads: {uploads}"))
    };
    for m in [&a_old, &b_old] {
        assert!(created(m) < t, "{uploads}");
    }
    for m in [&a_new, &b_new] {
        assert!(created(m) > t, "{uploads}");
    }

    assert_eq!(
        purge(&srv, ADMIN, &format!("user/@alice:localhost?before_ts={t}")).await,
        set(&[&a_old])
    );
    assert_eq!(
        purge(&srv, ADMIN, &format!("server/localhost?before_ts={t}")).await,
        set(&[&b_old])
    );
    assert!(
        purge(&srv, ADMIN, &format!("server/localhost?before_ts={t}"))
            .await
            .is_empty()
    );
    assert!(purge(&srv, ADMIN, "user/@alice:localhost?before_ts=1")
        .await
        .is_empty());
    expect_gone(&srv, &a_old).await;
    expect_gone(&srv, &b_old).await;
    assert_eq!(count_blobs(&dir), 2);

    // Without before_ts: everything up to now.
    assert_eq!(
        purge(&srv, ADMIN, "user/@alice:localhost").await,
        set(&[&a_new])
    );
    assert_eq!(srv.download_bytes(&b_new).await.len(), 100);
    assert_eq!(purge(&srv, ADMIN, "server/localhost").await, set(&[&b_new]));
    assert_eq!(count_blobs(&dir), 0);

    let audit = purge_audit(&srv).await;
    assert_eq!(audit.len(), 4, "empty purges are not recorded: {audit:?}");
    assert_eq!(audit[3]["details"]["before_ts_ms"], t);
    assert_eq!(
        audit[3]["details"]["target"],
        json!({"User": "@alice:localhost"})
    );
    assert_eq!(
        audit[2]["details"]["target"],
        json!({"Server": "localhost"})
    );

    for bad in ["user/alice", "user/@alice", "server/not%20a%20server"] {
        let resp = post(&srv, ADMIN, &format!("purge/{bad}")).await;
        expect_error(resp, StatusCode::BAD_REQUEST, "M_INVALID_PARAM").await;
    }
    srv.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Remote media

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_purge_removes_old_cached_media_and_a_download_fetches_it_again() {
    let (mut a, mut b) = pair(PairOpts::default()).await;
    let bytes = random_bytes(50_000);
    let r = b.upload_bytes(bytes.clone()).await;
    assert_eq!(a.download_bytes(&r).await, bytes);
    let blob = blob_path(&a.media_dir(), &bytes);
    assert_eq!(blob_files(&a.media_dir()), vec![blob.clone()]);
    assert_eq!(cached_count(&a, &r), 1);
    tick().await;
    let t = now_ms();

    let v = post_ok(&a, ADMIN, &format!("purge/remote?before_ts={t}&reason=old")).await;
    assert_eq!(v, json!({"total_removed": 1}));
    assert!(!blob.exists(), "cached remote blob kept");
    assert_eq!(count_blobs(&a.media_dir()), 0);
    assert_eq!(a.size_estimate(DS, None).await, zeros());
    assert!(
        blob_path(&b.media_dir(), &bytes).exists(),
        "B's copy touched"
    );
    let audit = purge_audit(&a).await;
    assert_eq!(audit.len(), 1, "{audit:?}");
    assert_eq!(audit_affected(&audit[0]), set(&[&r]));
    assert_eq!(audit[0]["details"]["target"], "Remote");
    assert_eq!(audit[0]["details"]["before_ts_ms"], t);
    assert_eq!(audit[0]["reason"], "old");
    assert_eq!(audit[0]["details"]["media"][0]["remote"], true);
    let h = history(&a, &r).await;
    assert_eq!(h["state"]["exists"], false, "{h}");
    assert_eq!(h["state"]["tombstone"], false, "{h}");

    // Fetched again on the next request.
    assert_eq!(a.download_bytes(&r).await, bytes);
    assert!(blob.exists());
    assert_eq!(cached_count(&a, &r), 2);
    // The new copy is newer than before_ts.
    let v = post_ok(&a, ADMIN, &format!("purge/remote?before_ts={t}")).await;
    assert_eq!(v, json!({"total_removed": 0}));
    assert_eq!(a.download_bytes(&r).await, bytes);
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_purge_keeps_shared_and_quarantined_media() {
    let (mut a, mut b) = pair(PairOpts::default()).await;
    let (x, y, z, w) = (
        random_bytes(1000),
        random_bytes(2000),
        random_bytes(3000),
        random_bytes(4000),
    );
    let rx = b.upload_bytes(x.clone()).await;
    let ry1 = b.upload_bytes(y.clone()).await;
    let ry2 = b.upload_bytes(y.clone()).await;
    let rz = b.upload_bytes(z.clone()).await;
    let rw = b.upload_bytes(w.clone()).await;
    let lx = a.upload_bytes(x.clone()).await;
    for (m, bytes) in [(&rx, &x), (&ry1, &y), (&rz, &z), (&rw, &w)] {
        assert_eq!(&a.download_bytes(m).await, bytes);
    }
    let v = post_ok(&a, ADMIN, &format!("quarantine/{}", sid(&rz))).await;
    assert_eq!(v["num_quarantined"], 1, "{v}");
    tick().await;
    let t = now_ms();
    tick().await;
    assert_eq!(a.download_bytes(&ry2).await, y, "the newer copy of y");
    let dir = a.media_dir();
    assert_eq!(count_blobs(&dir), 4);

    let v = post_ok(&a, ADMIN, &format!("purge/remote?before_ts={t}")).await;
    assert_eq!(v, json!({"total_removed": 1}), "only rw goes");
    assert!(!blob_path(&dir, &w).exists());
    for bytes in [&x, &y, &z] {
        assert!(blob_path(&dir, bytes).exists());
    }
    assert_eq!(count_blobs(&dir), 3);
    let audit = purge_audit(&a).await;
    assert_eq!(audit_affected(&audit[0]), set(&[&rw]));

    // Nothing was fetched again for the kept ones.
    for (m, bytes) in [(&rx, &x), (&lx, &x), (&ry1, &y), (&ry2, &y)] {
        assert_eq!(&a.download_bytes(m).await, bytes);
    }
    for m in [&rx, &ry1, &ry2, &rz] {
        assert_eq!(cached_count(&a, m), 1, "{m} re-fetched");
    }
    expect_gone(&a, &rz).await;
    let h = history(&a, &rz).await;
    assert_eq!(h["state"]["exists"], true, "{h}");
    assert_eq!(h["state"]["quarantined"], true, "{h}");
    // rw comes back from B.
    assert_eq!(a.download_bytes(&rw).await, w);
    assert_eq!(cached_count(&a, &rw), 2);
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purge_old_goes_by_last_access_and_include_local() {
    let (mut a, mut b) = pair(PairOpts {
        downloads: "access_record_interval_ms = 0".into(),
        ..PairOpts::default()
    })
    .await;
    let dir = a.media_dir();
    let (lo, ln, ro, rn) = (
        random_bytes(100),
        random_bytes(200),
        random_bytes(300),
        random_bytes(400),
    );
    let l_old = a.upload_bytes(lo.clone()).await;
    let l_new = a.upload_bytes(ln.clone()).await;
    let r_old = b.upload_bytes(ro.clone()).await;
    let r_new = b.upload_bytes(rn.clone()).await;
    assert_eq!(a.download_bytes(&r_old).await, ro);
    assert_eq!(a.download_bytes(&r_new).await, rn);
    tick().await;
    let t0 = now_ms();
    tick().await;
    // Accessed after t0: the newer ones, though all were created before.
    assert_eq!(a.download_bytes(&l_new).await, ln);
    assert_eq!(a.download_bytes(&r_new).await, rn);
    wait_access(&a, &l_new, t0).await;
    wait_access(&a, &r_new, t0).await;
    for m in [&l_old, &r_old] {
        let h = history(&a, m).await;
        assert!(h["state"]["last_access_ts"].as_u64().unwrap() < t0, "{h}");
    }
    assert_eq!(count_blobs(&dir), 4);

    assert_eq!(
        purge(&a, ADMIN, &format!("old?before_ts={t0}")).await,
        set(&[&r_old]),
        "remote only by default"
    );
    assert!(!blob_path(&dir, &ro).exists());
    assert!(purge(
        &a,
        ADMIN,
        &format!("old?before_ts={t0}&include_local=false")
    )
    .await
    .is_empty());
    assert_eq!(
        purge(&a, ADMIN, &format!("old?before_ts={t0}&include_local=true")).await,
        set(&[&l_old])
    );
    assert!(!blob_path(&dir, &lo).exists());
    assert_eq!(
        blob_files(&dir).into_iter().collect::<BTreeSet<_>>(),
        [blob_path(&dir, &ln), blob_path(&dir, &rn)]
            .into_iter()
            .collect()
    );
    let audit = purge_audit(&a).await;
    assert_eq!(audit.len(), 2, "{audit:?}");
    assert_eq!(
        audit[0]["details"]["target"],
        json!({"Old": {"include_local": true}})
    );
    assert_eq!(
        audit[1]["details"]["target"],
        json!({"Old": {"include_local": false}})
    );

    expect_gone(&a, &l_old).await;
    assert_eq!(a.download_bytes(&l_new).await, ln);
    assert_eq!(a.download_bytes(&r_new).await, rn);
    assert_eq!(a.download_bytes(&r_old).await, ro, "fetched again from B");
    assert_eq!(cached_count(&a, &r_old), 2);
    assert_eq!(cached_count(&a, &r_new), 1);
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn room_purge_lists_media_through_the_homeserver() {
    let hs = FakeSynapse::start(&[
        (HS_ADMIN, "@admin:a.test"),
        ("carol-token", "@carol:a.test"),
    ])
    .await;
    let (mut a, mut b) = pair(PairOpts {
        cs_api: Some(hs.url.clone()),
        ..PairOpts::default()
    })
    .await;
    let dir = a.media_dir();
    let l_old = a.upload_bytes(random_bytes(100)).await;
    let l_out = a.upload_bytes(random_bytes(150)).await;
    let r_old = b.upload_bytes(random_bytes(200)).await;
    a.download_bytes(&r_old).await;
    tick().await;
    let t = now_ms();
    tick().await;
    let l_new = a.upload_bytes(random_bytes(300)).await;
    let r_new = b.upload_bytes(random_bytes(400)).await;
    a.download_bytes(&r_new).await;
    let room = "!room:a.test";
    hs.set_room_media(room, &[&l_old, &l_new], &[&r_old, &r_new]);
    assert_eq!(count_blobs(&dir), 5);

    // Plain users may not; unknown rooms are 404.
    let resp = post(&a, BOB, &format!("purge/room/{room}")).await;
    expect_error(resp, StatusCode::FORBIDDEN, "M_FORBIDDEN").await;
    let resp = post(&a, HS_ADMIN, "purge/room/!nosuch:a.test").await;
    expect_error(resp, StatusCode::NOT_FOUND, "M_NOT_FOUND").await;
    let resp = post(&a, ADMIN, "purge/room/notaroom").await;
    expect_error(resp, StatusCode::BAD_REQUEST, "M_INVALID_PARAM").await;

    // The homeserver's admin: only its local media, before before_ts.
    assert_eq!(
        purge(&a, "carol-token", &format!("room/{room}?before_ts={t}")).await,
        set(&[&l_old])
    );
    // The repository admin: the remote ones too.
    assert_eq!(
        purge(&a, HS_ADMIN, &format!("room/{room}?before_ts={t}")).await,
        set(&[&r_old])
    );
    assert_eq!(count_blobs(&dir), 3);
    assert_eq!(
        purge(&a, HS_ADMIN, &format!("room/{room}")).await,
        set(&[&l_new, &r_new])
    );
    assert_eq!(count_blobs(&dir), 1, "only the media outside the room");
    assert_eq!(a.download_bytes(&l_out).await.len(), 150);
    expect_gone(&a, &l_old).await;
    expect_gone(&a, &l_new).await;

    let audit = purge_audit(&a).await;
    assert_eq!(audit.len(), 3, "{audit:?}");
    for e in &audit {
        assert_eq!(e["details"]["target"], json!({"Room": room}), "{e}");
    }
    assert_eq!(audit[2]["actor"], "@carol:a.test");
    assert_eq!(
        audit[2]["details"]["authority"],
        json!({"HomeserverAdmin": "a.test"})
    );
    assert_eq!(audit[2]["details"]["before_ts_ms"], t);
    assert!(hs.calls_to(&format!("/_synapse/admin/v1/room/{room}/media")) >= 3);
    a.stop().await;
    b.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Audit, 404s

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_lists_every_purge_with_its_media() {
    let mut srv = TestServer::start().await;
    let a1 = srv.upload_bytes(random_bytes(100)).await;
    let a2 = srv.upload_bytes(random_bytes(100)).await;
    let b1 = srv.upload(BOB, random_bytes(100), None, None).await;
    let q = srv.upload(BOB, random_bytes(100), None, None).await;
    post_ok(&srv, ADMIN, &format!("quarantine/{}", sid(&q))).await;

    assert_eq!(
        purge(&srv, ALICE, &format!("{}?reason=oops", sid(&a1))).await,
        set(&[&a1])
    );
    let v = json_ok(
        post_json(
            &srv,
            ADMIN,
            "purge/user/@bob:localhost",
            &json!({"reason": "via body"}),
        )
        .await,
    )
    .await;
    assert_eq!(affected_of(&v), set(&[&b1, &q]));
    assert_eq!(purge(&srv, SECRET, "server/localhost").await, set(&[&a2]));

    let audit = purge_audit(&srv).await;
    assert_eq!(audit.len(), 3, "{audit:?}");
    let expected = [
        (
            "shared-secret-admin",
            None,
            set(&[&a2]),
            json!("RepositoryAdmin"),
        ),
        (
            "@admin:localhost",
            Some("via body"),
            set(&[&b1, &q]),
            json!("RepositoryAdmin"),
        ),
        (
            "@alice:localhost",
            Some("oops"),
            set(&[&a1]),
            json!("Uploader"),
        ),
    ];
    for (e, (actor, reason, affected, authority)) in audit.iter().zip(expected) {
        assert_eq!(e["type"], "media.purged.v1", "{e}");
        assert_eq!(e["kind"], "purge", "{e}");
        assert_eq!(e["actor"], actor, "{e}");
        assert_eq!(e["reason"], json!(reason), "{e}");
        assert_eq!(audit_affected(e), affected, "{e}");
        assert_eq!(e["details"]["authority"], authority, "{e}");
        assert!(!e["request_id"].as_str().unwrap().is_empty(), "{e}");
        assert!(e["ts"].as_u64().unwrap() > 0, "{e}");
    }
    let seqs: Vec<u64> = audit.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert!(
        seqs.windows(2).all(|w| w[0] > w[1]),
        "not newest first: {seqs:?}"
    );
    // The user purge tombstoned the quarantined media, removed the other.
    let tomb: Vec<(String, bool)> = audit[1]["details"]["media"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                format!(
                    "mxc://{}/{}",
                    m["media"]["origin"].as_str().unwrap(),
                    m["media"]["media_id"].as_str().unwrap()
                ),
                m["tombstone"].as_bool().unwrap(),
            )
        })
        .collect();
    assert!(tomb.contains(&(q.clone(), true)), "{tomb:?}");
    assert!(tomb.contains(&(b1.clone(), false)), "{tomb:?}");

    // Filters and paging.
    let all = get_ok(&srv, ADMIN, "audit").await;
    let kinds: Vec<&str> = all["chunk"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["purge", "purge", "purge", "quarantine"]);
    let v = get_ok(&srv, ADMIN, "audit?kind=purge&actor=@alice:localhost").await;
    assert_eq!(v["chunk"].as_array().unwrap().len(), 1, "{v}");
    assert_eq!(v["chunk"][0]["seq"], audit[2]["seq"]);
    let page = get_ok(&srv, ADMIN, "audit?kind=purge&limit=2").await;
    assert_eq!(page["chunk"].as_array().unwrap().len(), 2, "{page}");
    let next = page["next_token"].as_str().unwrap().to_owned();
    let rest = get_ok(
        &srv,
        ADMIN,
        &format!("audit?kind=purge&limit=2&from={next}"),
    )
    .await;
    assert_eq!(rest["chunk"].as_array().unwrap().len(), 1, "{rest}");
    assert_eq!(rest["chunk"][0]["seq"], audit[2]["seq"]);
    assert!(rest.get("next_token").is_none(), "{rest}");
    // Each media's history names its purge.
    for (m, i) in [(&a1, 2), (&b1, 1), (&q, 1), (&a2, 0)] {
        let h = history(&srv, m).await;
        let purges: Vec<&Value> = h["events"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["type"] == "media.purged.v1")
            .collect();
        assert_eq!(purges.len(), 1, "{h}");
        assert_eq!(purges[0]["seq"], audit[i]["seq"], "{h}");
    }
    let resp = srv
        .client
        .get(srv.url(&format!("{ADMIN_API}/audit")))
        .bearer_auth(ALICE)
        .send()
        .await
        .unwrap();
    expect_error(resp, StatusCode::FORBIDDEN, "M_FORBIDDEN").await;
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purged_local_media_answers_not_found_everywhere() {
    let mut srv = TestServer::start().await;
    let bytes = jpeg(400, 300, 5);
    let m = srv
        .upload(ALICE, bytes.clone(), Some("image/jpeg"), Some("pic.jpg"))
        .await;
    let resp = thumbnail(&srv, &m, "width=96&height=96&method=crop").await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(purge(&srv, ALICE, &sid(&m)).await, set(&[&m]));
    assert_eq!(count_blobs(&srv.media_dir()), 0);

    let s = sid(&m);
    expect_gone(&srv, &m).await;
    for path in [
        format!("/_matrix/client/v1/media/download/{s}"),
        format!("/_matrix/client/v1/media/download/{s}/pic.jpg"),
        format!("/_matrix/client/v1/media/thumbnail/{s}?width=96&height=96&method=crop"),
        format!("/_matrix/media/v3/download/{s}/pic.jpg"),
        format!("/_matrix/media/v3/thumbnail/{s}?width=96&height=96&method=crop"),
    ] {
        let resp = srv
            .client
            .get(srv.url(&path))
            .bearer_auth(ALICE)
            .send()
            .await
            .unwrap();
        expect_error(resp, StatusCode::NOT_FOUND, "M_NOT_FOUND").await;
    }
    let resp = srv
        .client
        .head(srv.url(&format!("/_matrix/media/v3/download/{s}")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    for path in [format!("purge/{s}"), format!("media/{s}/attributes")] {
        expect_error(
            post_json(&srv, ADMIN, &path, &json!({"purpose": "pinned"})).await,
            StatusCode::NOT_FOUND,
            "M_NOT_FOUND",
        )
        .await;
    }
    let resp = srv
        .client
        .get(srv.url(&format!("{ADMIN_API}/media/{s}/attributes")))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    expect_error(resp, StatusCode::NOT_FOUND, "M_NOT_FOUND").await;
    let v = get_ok(&srv, ADMIN, &format!("usage/localhost/uploads?mxc={m}")).await;
    assert_eq!(v, json!({}));
    let h = history(&srv, &m).await;
    assert_eq!(h["state"]["exists"], false, "{h}");
    assert_eq!(h["state"]["tombstone"], false, "{h}");
    let t = types(&h);
    for ty in [
        "media.uploaded.v1",
        "thumbnail.generated.v1",
        "media.purged.v1",
        "blob.deleted.v1",
    ] {
        assert!(t.iter().any(|x| x == ty), "{ty} missing from {t:?}");
    }
    // Its id is not reusable by a re-upload: the same bytes get a new id.
    let again = srv
        .upload(ALICE, bytes.clone(), Some("image/jpeg"), None)
        .await;
    assert_ne!(again, m);
    expect_gone(&srv, &m).await;
    srv.stop().await;
}

/// Every mxc URI the moderation answers carry is `mxc://server/id`, the `content_uri` form.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moderation_answers_carry_well_formed_mxc_uris() {
    let mut srv = TestServer::start().await;
    let m = srv.upload_bytes(random_bytes(100)).await;
    let k = srv.upload_bytes(random_bytes(100)).await;
    let users = get_ok(&srv, ADMIN, "usage/localhost/users").await;
    assert_eq!(
        users["@alice:localhost"]["uploaded"]
            .as_array()
            .unwrap()
            .iter()
            .map(|u| u.as_str().unwrap().to_owned())
            .collect::<BTreeSet<_>>(),
        set(&[&m, &k]),
        "usage/users: {users}"
    );
    let uploads = get_ok(&srv, ADMIN, &format!("usage/localhost/uploads?mxc={k}")).await;
    assert_eq!(
        uploads.as_object().unwrap().keys().collect::<Vec<_>>(),
        vec![&k],
        "usage/uploads: {uploads}"
    );
    let v = post_ok(&srv, ADMIN, &format!("purge/{}", sid(&m))).await;
    assert_eq!(v, json!({"purged": true, "affected": [m]}), "purge answer");
    let audit = purge_audit(&srv).await;
    assert_eq!(audit[0]["affected"], json!([m]), "audit: {}", audit[0]);
    let h = history(&srv, &m).await;
    assert_eq!(h["media"], m.as_str(), "history: {h}");
    for e in h["events"].as_array().unwrap() {
        for a in e["affected"].as_array().unwrap() {
            assert_eq!(a, m.as_str(), "history event: {e}");
        }
    }
    srv.stop().await;
}

/// `purge/old?size_gt=`: only media larger than that many bytes go (Synapse's filter).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purge_old_with_size_gt_takes_only_larger_media() {
    let mut srv = TestServer::start().await;
    let small = srv.upload_bytes(random_bytes(100)).await;
    let big = srv.upload_bytes(random_bytes(5_000)).await;
    let far = now_ms() + 86_400_000;
    let gone = purge(
        &srv,
        ADMIN,
        &format!("old?before_ts={far}&include_local=true&size_gt=1000"),
    )
    .await;
    assert_eq!(gone, set(&[&big]));
    srv.download_bytes(&small).await;
    let resp = srv.download(&big).await;
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    // Not a number: refused before anything is selected.
    let resp = post(&srv, ADMIN, "purge/old?size_gt=many").await;
    expect_error(resp, StatusCode::BAD_REQUEST, "M_INVALID_PARAM").await;
    srv.stop().await;
}
