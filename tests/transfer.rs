#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Datastore transfers (`POST …/datastores/{src}/transfer_to/{dst}` and the task routes):
//! file→S3, S3→file and S3→S3 with shared hashes, access control and refusals, downloads
//! during a transfer, S3 dying mid-transfer, and SIGKILLs of the real binary mid-transfer.

use crate::common;
use media_ledger_projections::names;

use common::s3::{file_blob_path, free_port, S3Server, BUCKET, MULTIPART};
use common::{
    config_text, expect_error, parse_mxc, random_bytes, sha256_hex, Opts, TestServer, ADMIN, ALICE,
    SECRET,
};
use media_ledger::ledger::Ledger;
use reqwest::{Client, Response, StatusCode};
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const ADMIN_API: &str = "/_matrix/media/unstable/admin";
/// How long a task may take to finish.
const TASK_DEADLINE: Duration = Duration::from_secs(60);

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

fn zeros() -> Value {
    estimate(0, 0, 0, 0, 0)
}

/// The HTTP calls of these tests, against any base URL (in-process server or child process).
#[derive(Clone)]
struct Api {
    client: Client,
    base: String,
}

impl Api {
    fn of(srv: &TestServer) -> Self {
        Self {
            client: srv.client.clone(),
            base: srv.base.clone(),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    async fn upload(&self, bytes: Vec<u8>, content_type: &str) -> String {
        let resp = self
            .client
            .post(self.url("/_matrix/media/v3/upload"))
            .bearer_auth(ALICE)
            .header(reqwest::header::CONTENT_TYPE, content_type)
            .body(bytes)
            .send()
            .await
            .unwrap();
        let status = resp.status();
        let text = resp.text().await.unwrap();
        assert_eq!(status, StatusCode::OK, "upload: {text}");
        let v: Value = serde_json::from_str(&text).unwrap();
        v["content_uri"].as_str().unwrap().to_owned()
    }

    async fn download(&self, mxc: &str) -> Response {
        let (server, id) = parse_mxc(mxc);
        self.client
            .get(self.url(&format!("/_matrix/media/v3/download/{server}/{id}")))
            .send()
            .await
            .unwrap()
    }

    async fn transfer_raw(
        &self,
        src: &str,
        dst: &str,
        token: Option<&str>,
        before_ts: Option<u64>,
    ) -> Response {
        let mut req = self
            .client
            .post(self.url(&format!("{ADMIN_API}/datastores/{src}/transfer_to/{dst}")));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(ts) = before_ts {
            req = req.query(&[("before_ts", ts)]);
        }
        req.send().await.unwrap()
    }

    /// Starts a transfer as the shared secret; returns the answer and the task id.
    async fn transfer(&self, src: &str, dst: &str) -> (Value, u64) {
        let resp = self.transfer_raw(src, dst, Some(SECRET), None).await;
        let status = resp.status();
        let text = resp.text().await.unwrap();
        assert_eq!(status, StatusCode::OK, "transfer {src} → {dst}: {text}");
        let v: Value = serde_json::from_str(&text).unwrap();
        let id = v["task_id"]
            .as_u64()
            .unwrap_or_else(|| panic!("no task_id: {text}"));
        (v, id)
    }

    async fn get_json(&self, path: &str) -> Value {
        let resp = self
            .client
            .get(self.url(path))
            .bearer_auth(SECRET)
            .send()
            .await
            .unwrap();
        let status = resp.status();
        let text = resp.text().await.unwrap();
        assert_eq!(status, StatusCode::OK, "{path}: {text}");
        serde_json::from_str(&text).unwrap()
    }

    async fn task(&self, id: u64) -> Value {
        self.get_json(&format!("{ADMIN_API}/tasks/{id}")).await
    }

    async fn unfinished(&self) -> Value {
        self.get_json(&format!("{ADMIN_API}/tasks/unfinished"))
            .await
    }

    async fn all_tasks(&self) -> Value {
        self.get_json(&format!("{ADMIN_API}/tasks/all")).await
    }

    async fn size_estimate(&self, ds: &str) -> Value {
        self.get_json(&format!("{ADMIN_API}/datastores/{ds}/size_estimate"))
            .await
    }

    /// Polls the task until it is finished ([`TASK_DEADLINE`]).
    async fn wait_task(&self, id: u64) -> Value {
        let deadline = Instant::now() + TASK_DEADLINE;
        loop {
            let t = self.task(id).await;
            if t["is_finished"] == true {
                return t;
            }
            assert!(
                Instant::now() < deadline,
                "task {id} not finished after {TASK_DEADLINE:?}: {t}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Downloads every media and compares the bytes.
    async fn assert_downloads(&self, media: &[Media]) {
        for m in media {
            let resp = self.download(&m.mxc).await;
            assert_eq!(resp.status(), StatusCode::OK, "download of {}", m.mxc);
            let got = resp.bytes().await.unwrap();
            assert!(
                got == m.bytes[..],
                "{}: {} bytes (sha256 {}), expected {} (sha256 {})",
                m.mxc,
                got.len(),
                sha256_hex(&got),
                m.bytes.len(),
                m.sha
            );
        }
    }
}

/// An uploaded media.
#[derive(Clone)]
struct Media {
    mxc: String,
    bytes: Arc<Vec<u8>>,
    sha: String,
}

/// Uploads `sizes.len()` distinct blobs, blob `i` as `1 + i % 3` media (shared hashes).
async fn upload_set(api: &Api, sizes: &[usize]) -> Vec<Media> {
    let mut media = Vec::new();
    for (i, &size) in sizes.iter().enumerate() {
        let bytes = Arc::new(random_bytes(size));
        let sha = sha256_hex(&bytes);
        for copy in 0..=(i % 3) {
            let ct = if copy == 1 {
                "image/png"
            } else {
                "application/octet-stream"
            };
            let mxc = api.upload(bytes.to_vec(), ct).await;
            media.push(Media {
                mxc,
                bytes: bytes.clone(),
                sha: sha.clone(),
            });
        }
    }
    media
}

/// The distinct blobs of `media`: (sha, size).
fn blobs(media: &[Media]) -> Vec<(String, u64)> {
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for m in media {
        if seen.insert(m.sha.clone()) {
            out.push((m.sha.clone(), m.bytes.len() as u64));
        }
    }
    out
}

/// The figures `size_estimate` should show for `media` all in one datastore.
fn figures(media: &[Media]) -> Value {
    let b = blobs(media);
    let bytes: u64 = b.iter().map(|(_, s)| s).sum();
    estimate(
        media.len() as u64,
        b.len() as u64,
        bytes,
        b.len() as u64,
        bytes,
    )
}

/// Where a datastore keeps its blobs on disk, to count and find them.
enum Place<'a> {
    File(PathBuf),
    S3(&'a S3Server, &'static str),
}

impl Place<'_> {
    fn count(&self) -> usize {
        match self {
            Place::File(dir) => common::count_blobs(dir),
            Place::S3(s3, bucket) => s3.object_count(bucket),
        }
    }

    fn has(&self, sha: &str) -> bool {
        match self {
            Place::File(dir) => file_blob_path(dir, sha).is_file(),
            Place::S3(s3, bucket) => s3.has_object(bucket, sha),
        }
    }

    /// Asserts it holds exactly the blobs of `media`, byte-identical.
    fn assert_holds(&self, media: &[Media]) {
        assert_eq!(self.count(), blobs(media).len(), "blobs in the target");
        for m in media {
            let path = match self {
                Place::File(dir) => file_blob_path(dir, &m.sha),
                Place::S3(s3, bucket) => s3.object_path(bucket, &m.sha),
            };
            let stored = std::fs::read(&path)
                .unwrap_or_else(|e| panic!("blob {} missing: {e}", path.display()));
            assert!(stored == m.bytes[..], "blob {} differs", path.display());
        }
    }
}

fn file_ds(id: &str, dir: &str, kinds: &str) -> String {
    format!(
        "\n[[datastores]]\nid = \"{id}\"\ntype = \"file\"\npath = {{dir:{dir}}}\nkinds = {kinds}\n"
    )
}

/// Blob sizes with a multipart one (7 MiB), an empty one and small ones.
fn mixed_sizes() -> Vec<usize> {
    vec![0, 1, 100, 3000, 65_536, 7 << 20, 200_000, 10, 4096, 12_345]
}

fn task_params(t: &Value) -> (&str, &str) {
    (
        t["params"]["source_datastore_id"].as_str().unwrap(),
        t["params"]["target_datastore_id"].as_str().unwrap(),
    )
}

/// Asserts a task finished without failures after moving every blob of `media`.
fn assert_clean_finish(t: &Value, media: &[Media]) {
    let b = blobs(media);
    let bytes: u64 = b.iter().map(|(_, s)| s).sum();
    assert_eq!(t["is_finished"], true, "{t}");
    assert_eq!(t["error_message"], "", "{t}");
    assert_eq!(t["task_name"], "storage_migration", "{t}");
    assert_eq!(t["blobs_total"], b.len() as u64, "{t}");
    assert_eq!(t["blobs_done"], t["blobs_total"], "{t}");
    assert_eq!(t["bytes_total"], bytes, "{t}");
    assert_eq!(t["bytes_done"], bytes, "{t}");
    assert_eq!(t["blobs_failed"], 0, "{t}");
    let (start, end) = (
        t["start_ts"].as_u64().unwrap(),
        t["end_ts"].as_u64().unwrap(),
    );
    assert!(start > 0 && end >= start, "{t}");
}

/// Uploads a set into `src`, moves it to `dst`, checks every figure, then restarts.
async fn transfer_case(
    mut srv: TestServer,
    src: &str,
    dst: &str,
    source: Place<'_>,
    target: Place<'_>,
) {
    let api = Api::of(&srv);
    let media = upload_set(&api, &mixed_sizes()).await;
    let n = blobs(&media).len();
    source.assert_holds(&media);
    assert_eq!(target.count(), 0);
    let before = figures(&media);
    assert_eq!(api.size_estimate(src).await, before);
    assert_eq!(api.size_estimate(dst).await, zeros());

    let (answer, id) = api.transfer(src, dst).await;
    let mut expected = before.clone();
    expected["task_id"] = json!(id);
    assert_eq!(
        answer, expected,
        "the answer is the source's estimate + task_id"
    );

    let t = api.wait_task(id).await;
    assert_clean_finish(&t, &media);
    assert_eq!(task_params(&t), (src, dst));
    assert_eq!(t["params"]["before_ts"], Value::Null);

    api.assert_downloads(&media).await;
    assert_eq!(source.count(), 0, "the source still holds blobs");
    target.assert_holds(&media);
    for (sha, _) in blobs(&media) {
        assert!(!source.has(&sha) && target.has(&sha), "{sha}");
    }
    assert_eq!(api.size_estimate(src).await, zeros());
    assert_eq!(api.size_estimate(dst).await, before);
    assert_eq!(api.unfinished().await, json!([]));
    let all = api.all_tasks().await;
    assert_eq!(all.as_array().unwrap().len(), 1, "{all}");
    assert_eq!(all[0], t);

    // A restart keeps everything where it is (the sweep must not touch the moved blobs).
    srv.restart().await;
    let api = Api::of(&srv);
    api.assert_downloads(&media).await;
    assert_eq!(source.count(), 0);
    assert_eq!(target.count(), n);
    assert_eq!(api.task(id).await, t);
    assert_eq!(api.unfinished().await, json!([]));

    // New uploads of moved bytes deduplicate against the target.
    let again = api
        .upload(media[0].bytes.to_vec(), "application/octet-stream")
        .await;
    api.assert_downloads(&[Media {
        mxc: again,
        ..media[0].clone()
    }])
    .await;
    assert_eq!(source.count(), 0);
    assert_eq!(target.count(), n);

    srv.stop().await;
    let (_, divergence) = Ledger::verify_path(&srv.db_path()).unwrap();
    assert_eq!(divergence, None, "projections diverge from a replay");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_to_s3() {
    let s3 = S3Server::launch();
    let srv = TestServer::start_with(Opts {
        datastores: Some(format!(
            "{}{}",
            file_ds("files", "media", r#"["all"]"#),
            s3.datastore_toml("s3", BUCKET, r#"["remote_media"]"#, MULTIPART)
        )),
        ..Default::default()
    })
    .await;
    let media_dir = srv.media_dir();
    transfer_case(
        srv,
        "files",
        "s3",
        Place::File(media_dir),
        Place::S3(&s3, BUCKET),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_to_file() {
    let s3 = S3Server::launch();
    let srv = TestServer::start_with(Opts {
        datastores: Some(format!(
            "{}{}",
            s3.datastore_toml("s3", BUCKET, r#"["all"]"#, MULTIPART),
            file_ds("files", "media", r#"["remote_media"]"#),
        )),
        ..Default::default()
    })
    .await;
    let media_dir = srv.media_dir();
    transfer_case(
        srv,
        "s3",
        "files",
        Place::S3(&s3, BUCKET),
        Place::File(media_dir),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_to_s3() {
    let s3 = S3Server::launch_with_buckets(&["bucket-a", "bucket-b"]);
    let srv = TestServer::start_with(Opts {
        datastores: Some(format!(
            "{}{}",
            s3.datastore_toml("s3-a", "bucket-a", r#"["all"]"#, MULTIPART),
            s3.datastore_toml("s3-b", "bucket-b", r#"["remote_media"]"#, ""),
        )),
        ..Default::default()
    })
    .await;
    transfer_case(
        srv,
        "s3-a",
        "s3-b",
        Place::S3(&s3, "bucket-a"),
        Place::S3(&s3, "bucket-b"),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_and_access_control() {
    let mut srv = TestServer::start_with(Opts {
        datastores: Some(format!(
            "{}{}{}",
            file_ds("a", "media-a", r#"["all"]"#),
            file_ds("b", "media-b", r#"["remote_media"]"#),
            file_ds("ro", "media-ro", "[]"),
        )),
        ..Default::default()
    })
    .await;
    let api = Api::of(&srv);
    let media = upload_set(&api, &[10, 20]).await;

    let resp = api.transfer_raw("a", "a", Some(SECRET), None).await;
    expect_error(resp, StatusCode::BAD_REQUEST, "M_INVALID_PARAM").await;
    let resp = api.transfer_raw("a", "ro", Some(SECRET), None).await;
    expect_error(resp, StatusCode::BAD_REQUEST, "M_INVALID_PARAM").await;
    for (src, dst) in [("a", "nope"), ("nope", "b"), ("nope", "nope")] {
        let resp = api.transfer_raw(src, dst, Some(SECRET), None).await;
        expect_error(resp, StatusCode::NOT_FOUND, "M_NOT_FOUND").await;
    }
    let resp = api.transfer_raw("a", "b", Some(ALICE), None).await;
    expect_error(resp, StatusCode::FORBIDDEN, "M_FORBIDDEN").await;
    let resp = api.transfer_raw("a", "b", None, None).await;
    expect_error(resp, StatusCode::UNAUTHORIZED, "M_MISSING_TOKEN").await;
    assert_eq!(
        api.all_tasks().await,
        json!([]),
        "a refused request made a task"
    );

    // GET on the transfer route, unknown and malformed task ids.
    let resp = api
        .client
        .get(api.url(&format!("{ADMIN_API}/datastores/a/transfer_to/b")))
        .bearer_auth(SECRET)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::METHOD_NOT_ALLOWED);
    for (id, status, errcode) in [
        ("999999", StatusCode::NOT_FOUND, "M_NOT_FOUND"),
        // Sequence 1 is an upload, not a task.
        ("1", StatusCode::NOT_FOUND, "M_NOT_FOUND"),
        ("abc", StatusCode::BAD_REQUEST, "M_INVALID_PARAM"),
    ] {
        let resp = api
            .client
            .get(api.url(&format!("{ADMIN_API}/tasks/{id}")))
            .bearer_auth(SECRET)
            .send()
            .await
            .unwrap();
        expect_error(resp, status, errcode).await;
    }

    // before_ts before every access selects nothing: an empty task that finishes.
    let resp = api.transfer_raw("a", "b", Some(ADMIN), Some(1)).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let v: Value = resp.json().await.unwrap();
    let mut expected = zeros();
    expected["task_id"] = v["task_id"].clone();
    assert_eq!(v, expected);
    let empty = api.wait_task(v["task_id"].as_u64().unwrap()).await;
    assert_eq!(empty["blobs_total"], 0, "{empty}");
    assert_eq!(empty["blobs_done"], 0, "{empty}");
    assert_eq!(empty["error_message"], "", "{empty}");
    assert_eq!(empty["params"]["before_ts"], 1, "{empty}");
    assert_eq!(api.size_estimate("a").await, figures(&media));

    // Non-admins see no tasks.
    let id = v["task_id"].as_u64().unwrap();
    for path in [
        format!("{ADMIN_API}/tasks/all"),
        format!("{ADMIN_API}/tasks/unfinished"),
        format!("{ADMIN_API}/tasks/{id}"),
    ] {
        let resp = api
            .client
            .get(api.url(&path))
            .bearer_auth(ALICE)
            .send()
            .await
            .unwrap();
        expect_error(resp, StatusCode::FORBIDDEN, "M_FORBIDDEN").await;
        let resp = api.client.get(api.url(&path)).send().await.unwrap();
        expect_error(resp, StatusCode::UNAUTHORIZED, "M_MISSING_TOKEN").await;
        let resp = api
            .client
            .get(api.url(&path))
            .bearer_auth(ADMIN)
            .send()
            .await
            .unwrap();
        assert_eq!(
            resp.status(),
            StatusCode::OK,
            "{path} as a repository admin"
        );
    }

    // The real transfer, by a repository admin.
    let resp = api.transfer_raw("a", "b", Some(ADMIN), None).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let v: Value = resp.json().await.unwrap();
    let t = api.wait_task(v["task_id"].as_u64().unwrap()).await;
    assert_clean_finish(&t, &media);
    api.assert_downloads(&media).await;
    assert_eq!(common::count_blobs(&srv.path_of("media-a")), 0);
    assert_eq!(common::count_blobs(&srv.path_of("media-b")), 2);
    assert_eq!(common::count_blobs(&srv.path_of("media-ro")), 0);
    assert_eq!(api.all_tasks().await.as_array().unwrap().len(), 2);
    assert_eq!(api.unfinished().await, json!([]));
    srv.stop().await;
}

/// Loops of concurrent downloads of every media while ~50 blobs move from `src` to `dst`.
async fn downloads_during(
    mut srv: TestServer,
    src: &str,
    dst: &str,
    source: Place<'_>,
    target: Place<'_>,
) {
    let api = Api::of(&srv);
    let sizes: Vec<usize> = (0..50).map(|i| 20_000 + i * 4_000).collect();
    let media = Arc::new(upload_set(&api, &sizes).await);

    let done = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicUsize::new(0));
    let mut loops = Vec::new();
    for worker in 0..4 {
        let (api, media, done, count) = (api.clone(), media.clone(), done.clone(), count.clone());
        loops.push(tokio::spawn(async move {
            // Each worker starts at a different media; keeps going until the task finished,
            // then does one more full round.
            let mut last_round = false;
            loop {
                last_round |= done.load(Ordering::SeqCst);
                for i in 0..media.len() {
                    let m = &media[(i + worker * 13) % media.len()];
                    let resp = api.download(&m.mxc).await;
                    let status = resp.status();
                    let body = resp.bytes().await.unwrap();
                    assert_eq!(
                        status,
                        StatusCode::OK,
                        "download of {} during the transfer: {}",
                        m.mxc,
                        String::from_utf8_lossy(&body)
                    );
                    assert!(body == m.bytes[..], "{} differs during the transfer", m.mxc);
                    count.fetch_add(1, Ordering::Relaxed);
                }
                if last_round {
                    break;
                }
            }
        }));
    }
    let (_, id) = api.transfer(src, dst).await;
    let t = api.wait_task(id).await;
    done.store(true, Ordering::SeqCst);
    for l in loops {
        l.await.unwrap();
    }
    assert_clean_finish(&t, &media);
    assert!(count.load(Ordering::Relaxed) >= 4 * media.len());
    assert_eq!(source.count(), 0);
    target.assert_holds(&media);
    api.assert_downloads(&media).await;
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn downloads_during_a_file_to_s3_transfer() {
    let s3 = S3Server::launch();
    let srv = TestServer::start_with(Opts {
        datastores: Some(format!(
            "{}{}",
            file_ds("files", "media", r#"["all"]"#),
            s3.datastore_toml("s3", BUCKET, r#"["remote_media"]"#, ""),
        )),
        ..Default::default()
    })
    .await;
    let dir = srv.media_dir();
    downloads_during(srv, "files", "s3", Place::File(dir), Place::S3(&s3, BUCKET)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn downloads_during_an_s3_to_file_transfer() {
    let s3 = S3Server::launch();
    let srv = TestServer::start_with(Opts {
        datastores: Some(format!(
            "{}{}",
            s3.datastore_toml("s3", BUCKET, r#"["all"]"#, ""),
            file_ds("files", "media", r#"["remote_media"]"#),
        )),
        ..Default::default()
    })
    .await;
    let dir = srv.media_dir();
    downloads_during(srv, "s3", "files", Place::S3(&s3, BUCKET), Place::File(dir)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_dies_mid_transfer() {
    let mut s3 = S3Server::launch();
    let mut srv = TestServer::start_with(Opts {
        datastores: Some(format!(
            "{}{}\n[transfers]\nparallel = 8\nmax_attempts = 2\nretry_base_ms = 50\n",
            file_ds("files", "media", r#"["all"]"#),
            s3.datastore_toml("s3", BUCKET, r#"["remote_media"]"#, ""),
        )),
        ..Default::default()
    })
    .await;
    let api = Api::of(&srv);
    let sizes: Vec<usize> = (0..32).map(|i| 512 * 1024 + i).collect();
    let media = upload_set(&api, &sizes).await;
    let n = blobs(&media).len() as u64;

    let (_, id) = api.transfer("files", "s3").await;
    s3.stop();
    let t = api.wait_task(id).await;
    let failed = t["blobs_failed"].as_u64().unwrap();
    let done = t["blobs_done"].as_u64().unwrap();
    assert!(
        !t["error_message"].as_str().unwrap().is_empty(),
        "a task whose target died ends with an error: {t}"
    );
    assert!(failed > 0, "{t}");
    assert_eq!(done + failed, n, "every blob moved or given up on: {t}");
    assert_eq!(t["blobs_total"], n, "{t}");
    assert!(
        t["attempts_failed"].as_u64().unwrap() >= 2 * failed,
        "each blob given up on was tried max_attempts times: {t}"
    );
    assert!(t["last_error"].is_string(), "{t}");
    assert_eq!(api.unfinished().await, json!([]));

    // Nothing is lost: every blob is in the source or (moved) in the bucket, never neither;
    // the ones still in the source download, the moved ones fail with a Matrix error.
    let source = Place::File(srv.media_dir());
    let target = Place::S3(&s3, BUCKET);
    assert_eq!(source.count() as u64, failed);
    for (sha, _) in blobs(&media) {
        assert!(source.has(&sha) || target.has(&sha), "blob {sha} lost");
    }
    for m in &media {
        let resp = tokio::time::timeout(Duration::from_secs(60), api.download(&m.mxc))
            .await
            .expect("a download hangs while S3 is down");
        if source.has(&m.sha) {
            assert_eq!(resp.status(), StatusCode::OK, "{}", m.mxc);
            assert!(resp.bytes().await.unwrap() == m.bytes[..]);
        } else {
            let status = resp.status();
            assert!(
                status == StatusCode::BAD_GATEWAY || status == StatusCode::SERVICE_UNAVAILABLE,
                "{}: {status}",
                m.mxc
            );
        }
    }
    let in_source = estimate_of_blobs(&media, |m| source.has(&m.sha));
    assert_eq!(api.size_estimate("files").await, in_source);

    // S3 is back: everything downloads; a second transfer moves the rest.
    s3.start();
    let target = Place::S3(&s3, BUCKET);
    api.assert_downloads(&media).await;
    let (answer, id2) = api.transfer("files", "s3").await;
    let mut expected = in_source.clone();
    expected["task_id"] = json!(id2);
    assert_eq!(answer, expected);
    let t2 = api.wait_task(id2).await;
    assert_eq!(t2["error_message"], "", "{t2}");
    assert_eq!(t2["blobs_total"], failed, "{t2}");
    assert_eq!(t2["blobs_done"], failed, "{t2}");
    assert_eq!(t2["blobs_failed"], 0, "{t2}");
    assert_eq!(source.count(), 0);
    target.assert_holds(&media);
    api.assert_downloads(&media).await;
    assert_eq!(api.size_estimate("files").await, zeros());
    assert_eq!(api.size_estimate("s3").await, figures(&media));
    assert_eq!(api.unfinished().await, json!([]));
    let spool = srv.dir.path().join("ledger-spool").join("s3");
    assert_eq!(
        std::fs::read_dir(&spool).unwrap().count(),
        0,
        "spool leftovers in {}",
        spool.display()
    );
    srv.stop().await;
    let (_, divergence) = Ledger::verify_path(&srv.db_path()).unwrap();
    assert_eq!(divergence, None);
}

/// The figures of the media that `keep` selects.
fn estimate_of_blobs(media: &[Media], keep: impl Fn(&Media) -> bool) -> Value {
    let kept: Vec<Media> = media.iter().filter(|m| keep(m)).cloned().collect();
    if kept.is_empty() {
        zeros()
    } else {
        figures(&kept)
    }
}

/// The real binary as a child process.
struct Child {
    proc: std::process::Child,
    log: PathBuf,
}

fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_media-ledger")
}

impl Child {
    /// Starts `media-ledger serve` and waits until it answers on `api`.
    async fn start(config: &Path, log: &Path, api: &Api) -> Self {
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap();
        let proc = std::process::Command::new(binary())
            .args(["serve", "--config"])
            .arg(config)
            .env("RUST_LOG", "info")
            .stdin(std::process::Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("media-ledger starts");
        let mut child = Self {
            proc,
            log: log.to_owned(),
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let ready = api
                .client
                .get(api.url(&format!("{ADMIN_API}/datastores")))
                .bearer_auth(SECRET)
                .send()
                .await
                .is_ok_and(|r| r.status() == StatusCode::OK);
            if ready {
                return child;
            }
            if let Some(status) = child.proc.try_wait().unwrap() {
                panic!("media-ledger exited with {status}: {}", child.log_text());
            }
            assert!(
                Instant::now() < deadline,
                "media-ledger not ready after 60 s: {}",
                child.log_text()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGKILL.
    fn kill(mut self) {
        self.proc.kill().unwrap();
        self.proc.wait().unwrap();
    }

    /// SIGTERM, then waits for a clean exit.
    async fn stop(mut self) {
        let status = std::process::Command::new("kill")
            .args(["-TERM", &self.proc.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.proc.try_wait().unwrap() {
                assert!(status.success(), "media-ledger exited with {status}");
                return;
            }
            if Instant::now() > deadline {
                let _ = self.proc.kill();
                panic!(
                    "media-ledger did not stop after SIGTERM: {}",
                    self.log_text()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

fn verify(config: &Path) -> std::process::Output {
    std::process::Command::new(binary())
        .args(["verify", "--config"])
        .arg(config)
        .output()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_transfer_resumes() {
    let s3 = S3Server::launch();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let text = config_text(
        dir.path(),
        &Opts {
            datastores: Some(format!(
                "{}{}\n[transfers]\nparallel = 2\n",
                file_ds("files", "media", r#"["all"]"#),
                s3.datastore_toml("s3", BUCKET, r#"["remote_media"]"#, ""),
            )),
            ..Default::default()
        },
    )
    .replace(
        "bind = \"127.0.0.1:0\"",
        &format!("bind = \"127.0.0.1:{port}\""),
    );
    let config = dir.path().join("config.toml");
    std::fs::write(&config, text).unwrap();
    let log = dir.path().join("media-ledger.log");
    let api = || Api {
        client: common::client(),
        base: format!("http://127.0.0.1:{port}"),
    };

    let mut child = Child::start(&config, &log, &api()).await;
    let sizes: Vec<usize> = (0..100).map(|i| 128 * 1024 + i).collect();
    let media = upload_set(&api(), &sizes).await;
    let n = blobs(&media).len() as u64;
    let before = figures(&media);
    let (_, id) = api().transfer("files", "s3").await;

    // Kill right after the start, then twice after some progress.
    let mut kills_mid_transfer = 0;
    let mut last_done = 0;
    for round in 0..3 {
        let a = api();
        if round > 0 {
            let deadline = Instant::now() + TASK_DEADLINE;
            loop {
                let t = a.task(id).await;
                let d = t["blobs_done"].as_u64().unwrap();
                if t["is_finished"] == true || d > last_done {
                    last_done = d;
                    break;
                }
                assert!(Instant::now() < deadline, "no progress: {t}");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        let t = a.task(id).await;
        if t["is_finished"] == true {
            break;
        }
        child.kill();
        kills_mid_transfer += 1;
        // The ledger of a killed server verifies too.
        let out = verify(&config);
        assert!(
            out.status.success(),
            "verify after SIGKILL {kills_mid_transfer}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        child = Child::start(&config, &log, &api()).await;
    }
    eprintln!("killed {kills_mid_transfer} time(s) mid-transfer");

    let a = api();
    let t = a.wait_task(id).await;
    assert_clean_finish(&t, &media);
    assert_eq!(t["blobs_done"], n);
    a.assert_downloads(&media).await;
    let source = Place::File(dir.path().join("media"));
    let target = Place::S3(&s3, BUCKET);
    assert_eq!(source.count(), 0, "blobs left in the source");
    target.assert_holds(&media);
    for (sha, _) in blobs(&media) {
        assert!(!(source.has(&sha) && target.has(&sha)), "{sha} in both");
    }
    assert_eq!(a.size_estimate("files").await, zeros());
    assert_eq!(a.size_estimate("s3").await, before);
    assert_eq!(a.unfinished().await, json!([]));
    let spool = dir.path().join("ledger-spool").join("s3");
    assert_eq!(
        std::fs::read_dir(&spool).unwrap().count(),
        0,
        "spool leftovers"
    );
    child.stop().await;

    let out = verify(&config);
    assert!(
        out.status.success(),
        "media-ledger verify: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Two transfers of the same source requested at the same time: the second may be refused
/// (400, one transfer per datastore at a time) or run, but every accepted task finishes
/// without error, each blob is moved exactly once, nothing is lost or left behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_concurrent_transfers_move_each_blob_once() {
    let s3 = S3Server::launch();
    let mut srv = TestServer::start_with(Opts {
        datastores: Some(format!(
            "{}{}",
            file_ds("files", "media", r#"["all"]"#),
            s3.datastore_toml("s3", BUCKET, r#"["remote_media"]"#, ""),
        )),
        ..Default::default()
    })
    .await;
    let api = Api::of(&srv);
    let sizes: Vec<usize> = (0..40).map(|i| 100_000 + i).collect();
    let media = upload_set(&api, &sizes).await;
    let n = blobs(&media).len() as u64;
    let (r1, r2) = tokio::join!(
        api.transfer_raw("files", "s3", Some(SECRET), None),
        api.transfer_raw("files", "s3", Some(SECRET), None)
    );
    let mut ids = Vec::new();
    for resp in [r1, r2] {
        if resp.status() == StatusCode::OK {
            let v: Value = resp.json().await.unwrap();
            ids.push(v["task_id"].as_u64().unwrap());
        } else {
            expect_error(resp, StatusCode::BAD_REQUEST, "M_INVALID_PARAM").await;
        }
    }
    assert!(!ids.is_empty(), "both transfers refused");
    let mut done = 0;
    for id in ids {
        let t = api.wait_task(id).await;
        assert_eq!(t["error_message"], "", "{t}");
        assert_eq!(t["blobs_failed"], 0, "{t}");
        assert!(t["blobs_done"].as_u64() <= t["blobs_total"].as_u64(), "{t}");
        done += t["blobs_done"].as_u64().unwrap();
    }
    assert_eq!(done, n, "each blob moved once");
    api.assert_downloads(&media).await;
    assert_eq!(common::count_blobs(&srv.media_dir()), 0);
    Place::S3(&s3, BUCKET).assert_holds(&media);
    assert_eq!(api.size_estimate("files").await, zeros());
    assert_eq!(api.size_estimate("s3").await, figures(&media));
    assert_eq!(api.unfinished().await, json!([]));
    srv.stop().await;
    let (_, divergence) = Ledger::verify_path(&srv.db_path()).unwrap();
    assert_eq!(divergence, None);
}

/// While a transfer drains a datastore, a second one from it, or into it, is refused; once
/// the first finished, it is accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlapping_transfers_are_refused_while_one_runs() {
    let mut s3 = S3Server::launch();
    let mut srv = TestServer::start_with(Opts {
        datastores: Some(format!(
            "{}{}{}\n[transfers]\nmax_attempts = 2\nretry_base_ms = 50\n",
            file_ds("files", "media", r#"["all"]"#),
            file_ds("other", "media-other", r#"["remote_media"]"#),
            s3.datastore_toml("s3", BUCKET, r#"["remote_media"]"#, ""),
        )),
        ..Default::default()
    })
    .await;
    let api = Api::of(&srv);
    let media = upload_set(&api, &[1000, 2000, 3000, 4000]).await;
    // S3 down keeps the first task running (every attempt waits for the SDK's retries).
    s3.stop();
    let (_, id) = api.transfer("files", "s3").await;
    for (src, dst) in [
        ("files", "s3"),
        ("files", "other"),
        ("s3", "files"),
        ("other", "files"),
    ] {
        let resp = api.transfer_raw(src, dst, Some(SECRET), None).await;
        let t = api.task(id).await;
        if t["is_finished"] == true {
            // Too late to overlap (generous SDK retries notwithstanding): nothing to check.
            let _ = resp.text().await;
            continue;
        }
        expect_error(resp, StatusCode::BAD_REQUEST, "M_INVALID_PARAM").await;
    }
    let t = api.wait_task(id).await;
    assert!(!t["error_message"].as_str().unwrap().is_empty(), "{t}");
    s3.start();
    api.assert_downloads(&media).await;
    let (_, id) = api.transfer("files", "s3").await;
    let t = api.wait_task(id).await;
    assert_clean_finish(&t, &media);
    Place::S3(&s3, BUCKET).assert_holds(&media);
    api.assert_downloads(&media).await;
    assert_eq!(api.all_tasks().await.as_array().unwrap().len(), 2);
    srv.stop().await;
}

/// Blobs uploaded after a transfer started are not part of it: they stay in the source.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_during_a_transfer_stay_in_the_source() {
    let s3 = S3Server::launch();
    let mut srv = TestServer::start_with(Opts {
        datastores: Some(format!(
            "{}{}",
            file_ds("files", "media", r#"["all"]"#),
            s3.datastore_toml("s3", BUCKET, r#"["remote_media"]"#, ""),
        )),
        ..Default::default()
    })
    .await;
    let api = Api::of(&srv);
    let sizes: Vec<usize> = (0..30).map(|i| 50_000 + i).collect();
    let old = upload_set(&api, &sizes).await;
    let (answer, id) = api.transfer("files", "s3").await;
    let new = upload_set(&api, &[10, 20_000, 30_000]).await;
    let t = api.wait_task(id).await;
    assert_clean_finish(&t, &old);
    let mut expected = figures(&old);
    expected["task_id"] = json!(id);
    assert_eq!(answer, expected);
    Place::S3(&s3, BUCKET).assert_holds(&old);
    Place::File(srv.media_dir()).assert_holds(&new);
    assert_eq!(api.size_estimate("files").await, figures(&new));
    assert_eq!(api.size_estimate("s3").await, figures(&old));
    api.assert_downloads(&old).await;
    api.assert_downloads(&new).await;
    srv.stop().await;
}

/// file → S3 → file: blobs come back to the same keys; figures follow.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn there_and_back_again() {
    let s3 = S3Server::launch();
    let mut srv = TestServer::start_with(Opts {
        datastores: Some(format!(
            "{}{}",
            file_ds("files", "media", r#"["all"]"#),
            s3.datastore_toml("s3", BUCKET, r#"["remote_media"]"#, ""),
        )),
        ..Default::default()
    })
    .await;
    let api = Api::of(&srv);
    let media = upload_set(&api, &[0, 1, 1000, 70_000, 5]).await;
    for (src, dst) in [
        ("files", "s3"),
        ("s3", "files"),
        ("files", "s3"),
        ("s3", "files"),
    ] {
        let (_, id) = api.transfer(src, dst).await;
        let t = api.wait_task(id).await;
        assert_clean_finish(&t, &media);
        api.assert_downloads(&media).await;
        assert_eq!(api.size_estimate(src).await, zeros());
        assert_eq!(api.size_estimate(dst).await, figures(&media));
    }
    Place::File(srv.media_dir()).assert_holds(&media);
    assert_eq!(s3.object_count(BUCKET), 0);
    srv.restart().await;
    Api::of(&srv).assert_downloads(&media).await;
    Place::File(srv.media_dir()).assert_holds(&media);
    srv.stop().await;
    let (_, divergence) = Ledger::verify_path(&srv.db_path()).unwrap();
    assert_eq!(divergence, None);
}

/// A blob missing from the source: that blob is given up on (the task ends with an error),
/// every other one moves; once the bytes are uploaded again a second transfer moves it too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_source_blob_fails_only_itself() {
    let s3 = S3Server::launch();
    let mut srv = TestServer::start_with(Opts {
        datastores: Some(format!(
            "{}{}\n[transfers]\nmax_attempts = 2\nretry_base_ms = 50\n",
            file_ds("files", "media", r#"["all"]"#),
            s3.datastore_toml("s3", BUCKET, r#"["remote_media"]"#, ""),
        )),
        ..Default::default()
    })
    .await;
    let api = Api::of(&srv);
    let media = upload_set(&api, &[100, 200, 300, 400, 500]).await;
    let lost = media.last().unwrap().clone();
    std::fs::remove_file(file_blob_path(&srv.media_dir(), &lost.sha)).unwrap();

    let (_, id) = api.transfer("files", "s3").await;
    let t = api.wait_task(id).await;
    assert!(!t["error_message"].as_str().unwrap().is_empty(), "{t}");
    assert_eq!(t["blobs_failed"], 1, "{t}");
    assert_eq!(t["blobs_done"], 4, "{t}");
    assert_eq!(t["attempts_failed"], 2, "{t}");
    let (moved, kept): (Vec<Media>, Vec<Media>) =
        media.iter().cloned().partition(|m| m.sha != lost.sha);
    api.assert_downloads(&moved).await;
    Place::S3(&s3, BUCKET).assert_holds(&moved);
    assert_eq!(api.size_estimate("files").await, figures(&kept));
    assert_eq!(api.size_estimate("s3").await, figures(&moved));

    // The bytes come back with a new upload (restored where the hash record points: the
    // source), and a second transfer moves them.
    let again = api
        .upload(lost.bytes.to_vec(), "application/octet-stream")
        .await;
    let mut all = media.clone();
    all.push(Media {
        mxc: again,
        ..lost.clone()
    });
    api.assert_downloads(&all).await;
    let (_, id) = api.transfer("files", "s3").await;
    let t = api.wait_task(id).await;
    assert_eq!(t["error_message"], "", "{t}");
    assert_eq!(t["blobs_done"], 1, "{t}");
    api.assert_downloads(&all).await;
    Place::S3(&s3, BUCKET).assert_holds(&all);
    assert_eq!(common::count_blobs(&srv.media_dir()), 0);
    assert_eq!(api.size_estimate("files").await, zeros());
    assert_eq!(api.size_estimate("s3").await, figures(&all));
    srv.stop().await;
}

/// The `tasks` projection a transfer's start is validated against has halted: the start
/// answers the documented 503 (not a 500) and records no task.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_halted_projection_answers_503_on_the_transfer_path() {
    let mut srv = TestServer::start_with(Opts {
        datastores: Some(format!(
            "{}{}",
            file_ds("a", "media-a", r#"["all"]"#),
            file_ds("b", "media-b", r#"["all"]"#),
        )),
        ..Default::default()
    })
    .await;
    let api = Api::of(&srv);
    upload_set(&api, &[10, 20]).await;
    srv.server()
        .ledger
        .halt_projection(names::TASKS, "halted by the test");
    let resp = api.transfer_raw("a", "b", Some(SECRET), None).await;
    let v = expect_error(resp, StatusCode::SERVICE_UNAVAILABLE, "M_UNKNOWN").await;
    assert!(!v["error"].as_str().unwrap().contains("tasks"), "{v}");
    srv.stop().await;
    let mut started = 0;
    Ledger::events_at(
        &srv.db_path(),
        media_ledger_events::Seq(1),
        media_ledger_events::Seq(u64::MAX),
        |env| {
            started += usize::from(env.event.type_name() == "transfer.started.v1");
            true
        },
    )
    .unwrap();
    assert_eq!(started, 0);
}
