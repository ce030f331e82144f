//! Retention (`[retention]`, `src/abuse/retention.rs`) over real HTTP on loopback: the
//! scheduled purges of the system judged by a test clock (`StartOptions::retention_clock`,
//! tests cannot wait 30 days). Local media last accessed before the cutoff go (404, blob
//! deleted, one purge act by `system` with a `retention: …` reason) while media accessed since,
//! pinned and quarantined media stay; old thumbnails go while their media stay and are
//! generated again on demand; the tasks API's `retention` entry (schedule, last run's counts);
//! a run cut short after its purge was recorded (the deletion hook) is finished by the next
//! start and a later run finds nothing more; remote media, by age (`remote_media_days`,
//! fetched from a fake homeserver over the legacy endpoint) and by the cache's size
//! (`remote_max_bytes`: the least recently accessed go, pinned ones stay).

use crate::common;
use common::fake_remote::fake_remote;
use common::{admin_get, json_ok, path_of};

use common::{
    count_blobs, expect_error, random_bytes, sha256_hex, Opts, TestServer, ADMIN, ALICE, BOB,
};
use media_ledger::config::Config;
use media_ledger::ledger::Ledger;
use media_ledger::server::StartOptions;
use media_ledger_events::{
    Actor, Authority, Envelope, Event, MediaPurged, ModerationTarget, Seq, ThumbnailGenerated,
};
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const API: &str = "/_matrix/media/unstable/admin";
const DAY_MS: u64 = 86_400_000;

// ---------------------------------------------------------------------------------------------
// Setup
// ---------------------------------------------------------------------------------------------

/// Wall-clock now, ms since the epoch.
fn now_ms() -> u64 {
    u64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap()
}

/// The time the retention runs of a server judge ages by: 0 (nothing is old) until a test
/// sets it.
#[derive(Clone, Default)]
struct TestClock(Arc<AtomicU64>);

impl TestClock {
    fn set(&self, ms: u64) {
        self.0.store(ms, Ordering::SeqCst);
    }
}

/// The `Opts` of a retention server: every download records an access, `retention` is the
/// body of the `[retention]` table, `extra` more TOML.
fn opts(retention: &str, extra: &str) -> Opts {
    Opts {
        downloads_extra: "access_record_interval_ms = 0\n".to_owned(),
        extra_toml: format!("[retention]\n{retention}\n{extra}\n"),
        ..Opts::default()
    }
}

/// Starts (or starts again) `srv`'s config on its directory with `clock` and, when given, a
/// deletion hook leaving every purge's deletions pending while `skip` is on.
async fn boot(srv: &mut TestServer, clock: &TestClock, skip: Option<Arc<AtomicBool>>) {
    assert!(srv.server.is_none(), "server already running");
    let config = Config::parse(&srv.config_text).expect("test config is valid");
    let c = clock.0.clone();
    let mut options = StartOptions {
        retention_clock: Some(Arc::new(move || c.load(Ordering::SeqCst))),
        ..StartOptions::default()
    };
    if let Some(skip) = skip {
        options.deletion_hook = Some(Arc::new(move |_| skip.load(Ordering::SeqCst)));
    }
    let server = media_ledger::server::start_with(config, options)
        .await
        .expect("server starts");
    srv.base = format!("http://{}", server.addr);
    srv.server = Some(server);
}

/// A server on a fresh directory with `opts`, judging ages by `clock`.
async fn start(opts: &Opts, clock: &TestClock, skip: Option<Arc<AtomicBool>>) -> TestServer {
    let dir = tempfile::tempdir().unwrap();
    let config_text = common::config_text(dir.path(), opts);
    let mut srv = TestServer {
        base: String::new(),
        client: common::client(),
        dir,
        config_text,
        server: None,
    };
    boot(&mut srv, clock, skip).await;
    srv
}

// ---------------------------------------------------------------------------------------------
// Request and inspection helpers
// ---------------------------------------------------------------------------------------------

async fn admin_post(srv: &TestServer, path: &str, body: Option<Value>) -> Value {
    let mut req = srv
        .client
        .post(srv.url(&format!("{API}/{path}")))
        .bearer_auth(ADMIN);
    if let Some(b) = body {
        req = req.json(&b);
    }
    json_ok(req.send().await.unwrap()).await
}

async fn pin(srv: &TestServer, mxc: &str) {
    let v = admin_post(
        srv,
        &format!("media/{}/attributes", path_of(mxc)),
        Some(json!({"purpose": "pinned"})),
    )
    .await;
    assert_eq!(v, json!({"purpose": "pinned"}));
}

async fn quarantine(srv: &TestServer, mxc: &str) {
    let v = admin_post(srv, &format!("quarantine/{}", path_of(mxc)), None).await;
    assert_eq!(v["num_quarantined"], 1, "{v}");
}

async fn history(srv: &TestServer, mxc: &str) -> Value {
    admin_get(srv, &format!("media/{}/history", path_of(mxc))).await
}

/// Whether the media index still holds `mxc` (read through the history, which records no
/// access, unlike a download).
async fn exists(srv: &TestServer, mxc: &str) -> bool {
    history(srv, mxc).await["state"]["exists"] == true
}

/// Waits until the history of `mxc` shows an access at or after `since`.
async fn wait_access(srv: &TestServer, mxc: &str, since: u64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let h = history(srv, mxc).await;
        if h["state"]["last_access_ts"].as_u64().unwrap() >= since {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "access of {mxc} never recorded: {h}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits (at most 15 s) until `done` holds.
async fn wait_for<F, Fut>(what: &str, mut done: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(15);
    while !done().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Every envelope of the running server.
fn envelopes(srv: &TestServer) -> Vec<Envelope> {
    let mut out = Vec::new();
    srv.server()
        .ledger
        .events(Seq(1), Seq(u64::MAX), |env| {
            out.push(env);
            true
        })
        .unwrap();
    out
}

/// The purges of the running server, with their sequence and actor.
fn purges(srv: &TestServer) -> Vec<(Seq, Actor, MediaPurged)> {
    envelopes(srv)
        .into_iter()
        .filter_map(|env| match env.event {
            Event::MediaPurgedV1(e) => Some((env.seq, env.actor, e)),
            _ => None,
        })
        .collect()
}

/// The `blob.deleted.v1` of the running server: (purge, sha256 hex, kept).
fn blob_deletions(srv: &TestServer) -> Vec<(Seq, String, bool)> {
    envelopes(srv)
        .into_iter()
        .filter_map(|env| match env.event {
            Event::BlobDeletedV1(e) => Some((e.purge, e.sha256.to_hex(), e.kept)),
            _ => None,
        })
        .collect()
}

fn thumbnails_generated(srv: &TestServer) -> Vec<ThumbnailGenerated> {
    envelopes(srv)
        .into_iter()
        .filter_map(|env| match env.event {
            Event::ThumbnailGeneratedV1(e) => Some(e),
            _ => None,
        })
        .collect()
}

/// Asserts a purge is one of the retention's: by the system, as a repository admin, with a
/// `retention: …` reason.
fn assert_retention_act(actor: &Actor, p: &MediaPurged) {
    assert_eq!(*actor, Actor::System, "{p:?}");
    assert_eq!(p.authority, Authority::RepositoryAdmin, "{p:?}");
    let reason = p.reason.as_deref().unwrap_or_default();
    assert!(reason.starts_with("retention: "), "reason {reason:?}");
}

fn purged_media(p: &MediaPurged) -> BTreeSet<String> {
    p.media.iter().map(|m| m.media.to_string()).collect()
}

fn set(items: &[&String]) -> BTreeSet<String> {
    items.iter().map(|s| (*s).clone()).collect()
}

fn hex_path(dir: &Path, hex: &str) -> PathBuf {
    dir.join(&hex[0..2]).join(&hex[2..4]).join(hex)
}

fn blob_path(dir: &Path, bytes: &[u8]) -> PathBuf {
    hex_path(dir, &sha256_hex(bytes))
}

/// The `retention` entry of the tasks API.
async fn retention_task(srv: &TestServer) -> Value {
    let all = admin_get(srv, "tasks/all").await;
    let list = all.as_array().unwrap_or_else(|| panic!("{all}"));
    let found: Vec<&Value> = list
        .iter()
        .filter(|t| t["task_name"] == "retention")
        .collect();
    assert_eq!(found.len(), 1, "one retention entry: {all}");
    found[0].clone()
}

/// Waits (at most 15 s) until the tasks API shows a finished run; its `retention` entry.
async fn wait_run(srv: &TestServer) -> Value {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let t = retention_task(srv).await;
        if t["end_ts"].as_u64().unwrap() > 0 {
            return t;
        }
        assert!(Instant::now() < deadline, "no run ended: {t}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The `retention` entry once its loop has scheduled the first run (`next_run_ts` is 0 until
/// then).
async fn scheduled_task(srv: &TestServer) -> Value {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let t = retention_task(srv).await;
        if t["next_run_ts"].as_u64().unwrap() > 0 {
            return t;
        }
        assert!(Instant::now() < deadline, "no run scheduled: {t}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits (at most 15 s) for the end of a run that starts after now (so it reads the clock as
/// set before this call); its `retention` entry.
async fn wait_run_after_now(srv: &TestServer) -> Value {
    let deadline = Instant::now() + Duration::from_secs(15);
    let scheduled = loop {
        let t = retention_task(srv).await;
        let next = t["next_run_ts"].as_u64().unwrap();
        if next > now_ms() {
            break next;
        }
        assert!(Instant::now() < deadline, "no run scheduled: {t}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    loop {
        let t = retention_task(srv).await;
        if t["end_ts"].as_u64().unwrap() >= scheduled {
            return t;
        }
        assert!(
            Instant::now() < deadline,
            "no run ended after {scheduled}: {t}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A `w`×`h` JPEG gradient (`seed` varies the bytes).
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

/// `GET` an authenticated 64×64 scaled thumbnail of `mxc`; asserts 200.
async fn thumbnail(srv: &TestServer, mxc: &str) -> Vec<u8> {
    let resp = srv
        .client
        .get(srv.url(&format!(
            "/_matrix/client/v1/media/thumbnail/{}?width=64&height=64&method=scale",
            path_of(mxc)
        )))
        .bearer_auth(ALICE)
        .send()
        .await
        .unwrap();
    let status = resp.status();
    let body = resp.bytes().await.unwrap().to_vec();
    assert_eq!(status, StatusCode::OK, "thumbnail of {mxc}");
    body
}

/// A short pause so that the times on both sides of a cutoff differ.
async fn tick() {
    tokio::time::sleep(Duration::from_millis(30)).await;
}

// ---------------------------------------------------------------------------------------------
// Local media
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_media_not_accessed_since_the_cutoff_are_purged_by_the_system() {
    let clock = TestClock::default();
    let mut srv = start(
        &opts("local_media_days = 30\ninterval_ms = 1000", ""),
        &clock,
        None,
    )
    .await;
    let dir = srv.media_dir();
    let old_bytes = random_bytes(3_000);
    let shared = random_bytes(2_000);
    let (pinned_bytes, quarantined_bytes) = (random_bytes(1_000), random_bytes(1_500));
    let old = srv.upload(ALICE, old_bytes.clone(), None, None).await;
    // Holds the same bytes as `recent`: it goes, the blob stays (`recent` still refers to it).
    let old_twin = srv.upload(BOB, shared.clone(), None, None).await;
    let recent = srv.upload(ALICE, shared.clone(), None, None).await;
    let pinned = srv.upload(ALICE, pinned_bytes.clone(), None, None).await;
    let quarantined = srv.upload(BOB, quarantined_bytes.clone(), None, None).await;
    pin(&srv, &pinned).await;
    quarantine(&srv, &quarantined).await;
    assert_eq!(count_blobs(&dir), 4);

    tick().await;
    let t_mid = now_ms();
    tick().await;
    assert_eq!(srv.download_bytes(&recent).await, shared);
    wait_access(&srv, &recent, t_mid).await;
    // Runs so far judged by time 0: nothing is old yet.
    assert!(purges(&srv).is_empty());

    clock.set(t_mid + 30 * DAY_MS);
    wait_for("the retention purge", || async {
        !exists(&srv, &old).await
    })
    .await;

    for m in [&old, &old_twin] {
        expect_error(srv.download(m).await, StatusCode::NOT_FOUND, "M_NOT_FOUND").await;
    }
    assert!(
        !blob_path(&dir, &old_bytes).exists(),
        "the old blob is deleted"
    );
    assert!(
        blob_path(&dir, &shared).exists(),
        "a blob still referred to stays"
    );
    assert_eq!(srv.download_bytes(&recent).await, shared);
    assert_eq!(srv.download_bytes(&pinned).await, pinned_bytes);
    let h = history(&srv, &quarantined).await;
    assert_eq!(h["state"]["exists"], true, "{h}");
    assert_eq!(h["state"]["quarantined"], true, "{h}");
    assert!(blob_path(&dir, &quarantined_bytes).exists());
    assert_eq!(count_blobs(&dir), 3);

    // One act of the system, naming exactly the two idle media, freeing the old blob only.
    let p = purges(&srv);
    assert_eq!(p.len(), 1, "{p:?}");
    let (seq, actor, act) = &p[0];
    assert_retention_act(actor, act);
    assert_eq!(
        act.reason.as_deref(),
        Some("retention: local media not accessed for 30 days")
    );
    assert_eq!(
        act.target,
        ModerationTarget::Old {
            include_local: true
        }
    );
    assert_eq!(purged_media(act), set(&[&old, &old_twin]));
    let freed: Vec<String> = act.freed.iter().map(|f| f.sha256.to_hex()).collect();
    assert_eq!(freed, vec![sha256_hex(&old_bytes)]);
    assert_eq!(
        blob_deletions(&srv),
        vec![(*seq, sha256_hex(&old_bytes), false)]
    );

    // The audit API shows the act as the system's, with its reason.
    let audit = admin_get(&srv, "audit").await;
    let entry = audit["chunk"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["type"] == "media.purged.v1")
        .unwrap_or_else(|| panic!("{audit}"))
        .clone();
    assert_eq!(entry["actor"], "system", "{entry}");
    assert!(
        entry["reason"].as_str().unwrap().starts_with("retention: "),
        "{entry}"
    );

    // Later runs (every second) find nothing more.
    tokio::time::sleep(Duration::from_millis(2_200)).await;
    assert_eq!(purges(&srv).len(), 1);
    assert_eq!(srv.download_bytes(&recent).await, shared);
    srv.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Thumbnails
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_thumbnails_are_purged_and_generated_again_on_demand() {
    let clock = TestClock::default();
    let mut srv = start(
        &opts("thumbnail_days = 7\ninterval_ms = 1000", ""),
        &clock,
        None,
    )
    .await;
    let dir = srv.media_dir();
    let (img_old, img_new, img_pinned) = (jpeg(640, 480, 1), jpeg(640, 480, 2), jpeg(640, 480, 3));
    let old = srv
        .upload(ALICE, img_old.clone(), Some("image/jpeg"), None)
        .await;
    let new = srv
        .upload(ALICE, img_new.clone(), Some("image/jpeg"), None)
        .await;
    let pinned = srv
        .upload(ALICE, img_pinned.clone(), Some("image/jpeg"), None)
        .await;
    pin(&srv, &pinned).await;
    let first = thumbnail(&srv, &old).await;
    thumbnail(&srv, &pinned).await;
    tick().await;
    let t_mid = now_ms();
    tick().await;
    thumbnail(&srv, &new).await;
    let generated = thumbnails_generated(&srv);
    assert_eq!(generated.len(), 3, "{generated:?}");
    let thumb_of = |mxc: &str| -> ThumbnailGenerated {
        generated
            .iter()
            .find(|t| t.media.to_string() == mxc)
            .unwrap()
            .clone()
    };
    let old_thumb = thumb_of(&old);
    assert_eq!(count_blobs(&dir), 6);
    assert!(hex_path(&dir, &old_thumb.sha256.to_hex()).exists());

    clock.set(t_mid + 7 * DAY_MS);
    wait_for("the thumbnail purge", || async { !purges(&srv).is_empty() }).await;

    let p = purges(&srv);
    assert_eq!(p.len(), 1, "{p:?}");
    let (_, actor, act) = &p[0];
    assert_retention_act(actor, act);
    assert_eq!(
        act.reason.as_deref(),
        Some("retention: thumbnails generated 7 days ago")
    );
    assert_eq!(act.target, ModerationTarget::Thumbnails);
    assert!(act.media.is_empty(), "no media purged: {act:?}");
    // Only the old thumbnail of the unpinned media (the pinned media's stays, the one made
    // after the cutoff too).
    let thumbs: Vec<String> = act.thumbnails.iter().map(|t| t.media.to_string()).collect();
    assert_eq!(thumbs, vec![old.clone()]);
    assert_eq!(act.thumbnails[0].sha256, old_thumb.sha256);
    assert_eq!(act.freed.len(), 1, "{act:?}");
    assert_eq!(act.freed[0].sha256, old_thumb.sha256);
    wait_for("the thumbnail blob's deletion", || async {
        !blob_deletions(&srv).is_empty()
    })
    .await;
    assert!(!hex_path(&dir, &old_thumb.sha256.to_hex()).exists());
    assert_eq!(count_blobs(&dir), 5);

    // The media stay downloadable; a thumbnail request generates the thumbnail again.
    for (m, bytes) in [(&old, &img_old), (&new, &img_new), (&pinned, &img_pinned)] {
        assert!(srv.download_bytes(m).await == *bytes, "{m} is served");
    }
    let again = thumbnail(&srv, &old).await;
    assert_eq!(again, first, "the same thumbnail, generated again");
    let generated = thumbnails_generated(&srv);
    assert_eq!(
        generated
            .iter()
            .filter(|t| t.media.to_string() == old)
            .count(),
        2,
        "{generated:?}"
    );
    assert_eq!(count_blobs(&dir), 6);
    let usage = admin_get(&srv, "usage/localhost").await;
    assert_eq!(usage["raw_counts"]["thumbnails"], 3, "{usage}");

    // Later runs leave the new one alone (generated after the cutoff).
    tokio::time::sleep(Duration::from_millis(2_200)).await;
    assert_eq!(purges(&srv).len(), 1);
    assert_eq!(count_blobs(&dir), 6);
    srv.stop().await;
}

// ---------------------------------------------------------------------------------------------
// The tasks API
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_api_shows_the_schedule_and_the_last_run() {
    // A run every 2 s (the first 2 s after start); local media idle for 2 days and
    // thumbnails generated a day ago go.
    let clock = TestClock::default();
    let started = now_ms();
    let mut srv = start(
        &opts(
            "local_media_days = 2\nthumbnail_days = 1\ninterval_ms = 2000",
            "",
        ),
        &clock,
        None,
    )
    .await;
    let t = scheduled_task(&srv).await;
    assert_eq!(t["task_id"], 0, "{t}");
    assert_eq!(t["is_finished"], false, "{t}");
    assert_eq!(
        t["params"],
        json!({
            "local_media_days": 2,
            "remote_media_days": 0,
            "thumbnail_days": 1,
            "remote_max_bytes": 0,
            "interval_ms": 2000,
        }),
        "{t}"
    );
    let next = t["next_run_ts"].as_u64().unwrap();
    let now = now_ms();
    assert!(
        next > now && next <= started + 2_000 + 1_000,
        "next run {next} one interval after the start ({started}), now {now}: {t}"
    );
    assert_eq!(t["end_ts"], 0, "{t}");
    assert_eq!(t["media_removed"], 0, "{t}");
    assert_eq!(t["error_message"], "", "{t}");
    // Listed among the unfinished tasks too; not for plain users.
    let unfinished = admin_get(&srv, "tasks/unfinished").await;
    assert!(
        unfinished
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["task_name"] == "retention"),
        "{unfinished}"
    );
    let resp = srv
        .client
        .get(srv.url(&format!("{API}/tasks/all")))
        .bearer_auth(ALICE)
        .send()
        .await
        .unwrap();
    expect_error(resp, StatusCode::FORBIDDEN, "M_FORBIDDEN").await;

    // An idle media (before the cutoff of the local rule), an image uploaded and
    // thumbnailed after it (its thumbnail is before the thumbnail rule's cutoff).
    let idle = srv.upload(ALICE, random_bytes(1_000), None, None).await;
    tick().await;
    let t_mid = now_ms();
    tick().await;
    let image = srv
        .upload(ALICE, jpeg(640, 480, 4), Some("image/jpeg"), None)
        .await;
    thumbnail(&srv, &image).await;
    assert_eq!(thumbnails_generated(&srv).len(), 1);
    clock.set(t_mid + 2 * DAY_MS);

    let after = wait_run_after_now(&srv).await;
    assert_eq!(after["media_removed"], 1, "{after}");
    assert_eq!(after["thumbnails_removed"], 1, "{after}");
    assert_eq!(after["error_message"], "", "{after}");
    assert!(after["start_ts"].as_u64().unwrap() > 0, "{after}");
    let end = after["end_ts"].as_u64().unwrap();
    assert!(end >= started && end <= now_ms(), "{after}");
    let next = after["next_run_ts"].as_u64().unwrap();
    assert!(next > now_ms(), "the next run is in the future: {after}");
    assert!(next >= end + 1_900, "one interval after the run: {after}");
    assert!(!exists(&srv, &idle).await);
    assert!(exists(&srv, &image).await);
    let p = purges(&srv);
    assert_eq!(p.len(), 2, "one act per rule: {p:?}");
    srv.stop().await;

    // A long interval: the first run is 10 s after the start.
    let started = now_ms();
    let mut long = start(
        &opts("local_media_days = 2\ninterval_ms = 3600000", ""),
        &clock,
        None,
    )
    .await;
    let next = scheduled_task(&long).await["next_run_ts"].as_u64().unwrap();
    assert!(
        next >= started + 10_000 && next <= now_ms() + 10_000,
        "first run {next}, started {started}"
    );
    long.stop().await;

    // Without a rule there is no retention entry.
    let mut plain = TestServer::start().await;
    let all = admin_get(&plain, "tasks/all").await;
    assert!(
        !all.as_array()
            .unwrap()
            .iter()
            .any(|t| t["task_name"] == "retention"),
        "{all}"
    );
    plain.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Restart in the middle
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_cut_short_after_its_purge_is_finished_by_the_next_start() {
    let clock = TestClock::default();
    let skip = Arc::new(AtomicBool::new(true));
    let mut srv = start(
        &opts("local_media_days = 30\ninterval_ms = 1000", ""),
        &clock,
        Some(skip.clone()),
    )
    .await;
    let dir = srv.media_dir();
    let (a_bytes, b_bytes) = (random_bytes(2_000), random_bytes(3_000));
    let a = srv.upload(ALICE, a_bytes.clone(), None, None).await;
    let b = srv.upload(BOB, b_bytes.clone(), None, None).await;
    clock.set(now_ms() + 31 * DAY_MS);
    wait_for("the retention purge", || async { !purges(&srv).is_empty() }).await;

    // Recorded, but its deletions are pending: the blobs are still there.
    let p = purges(&srv);
    assert_eq!(p.len(), 1, "{p:?}");
    let (seq, actor, act) = p[0].clone();
    assert_retention_act(&actor, &act);
    assert_eq!(purged_media(&act), set(&[&a, &b]));
    assert_eq!(act.freed.len(), 2, "{act:?}");
    for m in [&a, &b] {
        expect_error(srv.download(m).await, StatusCode::NOT_FOUND, "M_NOT_FOUND").await;
    }
    assert!(blob_path(&dir, &a_bytes).exists());
    assert!(blob_path(&dir, &b_bytes).exists());
    assert!(blob_deletions(&srv).is_empty());

    // The next start (no hook, the same clock) finishes the deletions before serving.
    srv.stop().await;
    boot(&mut srv, &clock, None).await;
    assert_eq!(count_blobs(&dir), 0, "the freed blobs are deleted at start");
    let deleted: BTreeSet<(Seq, String, bool)> = blob_deletions(&srv).into_iter().collect();
    assert_eq!(
        deleted,
        [
            (seq, sha256_hex(&a_bytes), false),
            (seq, sha256_hex(&b_bytes), false)
        ]
        .into_iter()
        .collect()
    );

    // A run of the restarted server finds nothing more.
    let t = wait_run(&srv).await;
    assert_eq!(t["media_removed"], 0, "{t}");
    assert_eq!(t["error_message"], "", "{t}");
    assert_eq!(purges(&srv).len(), 1);
    for m in [&a, &b] {
        expect_error(srv.download(m).await, StatusCode::NOT_FOUND, "M_NOT_FOUND").await;
    }
    srv.stop().await;
    let (head, divergence) = Ledger::verify_path(&srv.db_path()).expect("the ledger verifies");
    assert!(head.seq.0 > 0);
    assert!(divergence.is_none(), "replay diverges: {divergence:?}");
}

// ---------------------------------------------------------------------------------------------
// Remote media
// ---------------------------------------------------------------------------------------------

/// The `[federation]` table pinning `fake.test` to `url`.
fn federation_toml(url: &str) -> String {
    format!("[federation]\nsigning_key_path = {{dir:signing.key}}\npins = {{ \"fake.test\" = {url:?} }}\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_media_not_accessed_since_the_cutoff_are_purged() {
    let (fake, url) = fake_remote().await;
    let clock = TestClock::default();
    let mut srv = start(
        &opts(
            "remote_media_days = 30\ninterval_ms = 1000",
            &federation_toml(&url),
        ),
        &clock,
        None,
    )
    .await;
    let dir = srv.media_dir();
    let old_bytes = random_bytes(1_200);
    let old = fake.add("old", old_bytes.clone());
    let recent = fake.add("recent", random_bytes(1_300));
    let pinned = fake.add("pinned", random_bytes(1_400));
    for m in [&old, &recent, &pinned] {
        srv.download_bytes(m).await;
    }
    pin(&srv, &pinned).await;
    // A local media as idle as `old`: the local rule is off.
    let local = srv.upload(ALICE, random_bytes(500), None, None).await;
    assert_eq!(count_blobs(&dir), 4);
    tick().await;
    let t_mid = now_ms();
    tick().await;
    srv.download_bytes(&recent).await;
    wait_access(&srv, &recent, t_mid).await;

    clock.set(t_mid + 30 * DAY_MS);
    wait_for("the remote retention purge", || async {
        !exists(&srv, &old).await
    })
    .await;
    let p = purges(&srv);
    assert_eq!(p.len(), 1, "{p:?}");
    let (_, actor, act) = &p[0];
    assert_retention_act(actor, act);
    assert_eq!(
        act.reason.as_deref(),
        Some("retention: remote media not accessed for 30 days")
    );
    assert_eq!(purged_media(act), set(&[&old]));
    assert!(act.media[0].remote);
    wait_for("the blob's deletion", || async {
        !blob_path(&dir, &old_bytes).exists()
    })
    .await;
    assert_eq!(count_blobs(&dir), 3);
    for m in [&recent, &pinned, &local] {
        assert!(exists(&srv, m).await, "{m} stays");
    }
    // Cached no more: the next download fetches it again.
    assert_eq!(fake.hits("old"), 1);
    assert_eq!(srv.download_bytes(&old).await, old_bytes);
    assert_eq!(fake.hits("old"), 2);
    assert_eq!(fake.hits("recent"), 1);
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_cache_above_its_cap_loses_the_least_recently_accessed() {
    let (fake, url) = fake_remote().await;
    let clock = TestClock::default();
    clock.set(now_ms());
    // Four media of 1000 bytes, a cap of 3500: the fourth takes the cache over it.
    let mut srv = start(
        &opts(
            "remote_max_bytes = 3500\ninterval_ms = 1000",
            &federation_toml(&url),
        ),
        &clock,
        None,
    )
    .await;
    let dir = srv.media_dir();
    let r: Vec<(String, Vec<u8>)> = (1..=4)
        .map(|i| {
            let bytes = random_bytes(1_000);
            (fake.add(&format!("r{i}"), bytes.clone()), bytes)
        })
        .collect();
    // r1: the oldest, pinned. r2 fetched before r3 but accessed again after it.
    srv.download_bytes(&r[0].0).await;
    pin(&srv, &r[0].0).await;
    srv.download_bytes(&r[1].0).await;
    srv.download_bytes(&r[2].0).await;
    tick().await;
    let t = now_ms();
    srv.download_bytes(&r[1].0).await;
    wait_access(&srv, &r[1].0, t).await;
    tick().await;
    // At 3000 bytes nothing went.
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    assert!(purges(&srv).is_empty());
    srv.download_bytes(&r[3].0).await;

    wait_for("the cap's purge", || async { !purges(&srv).is_empty() }).await;
    let p = purges(&srv);
    assert_eq!(p.len(), 1, "{p:?}");
    let (_, actor, act) = &p[0];
    assert_retention_act(actor, act);
    assert_eq!(
        act.reason.as_deref(),
        Some("retention: remote media above 3500 bytes")
    );
    assert_eq!(
        purged_media(act),
        set(&[&r[2].0]),
        "r3 was least recently accessed"
    );
    wait_for("the blob's deletion", || async {
        !blob_path(&dir, &r[2].1).exists()
    })
    .await;
    for (m, _) in [&r[0], &r[1], &r[3]] {
        assert!(exists(&srv, m).await, "{m} stays");
    }
    assert_eq!(count_blobs(&dir), 3);
    // Under the cap now: later runs purge nothing more.
    tokio::time::sleep(Duration::from_millis(2_200)).await;
    assert_eq!(purges(&srv).len(), 1);
    assert_eq!(fake.total.load(Ordering::SeqCst), 4);
    srv.stop().await;
}
