//! Upload quotas and time-window upload limits (issue #14) over real HTTP on loopback:
//! `[[uploads.quotas]]` (`max_bytes` crossed while a chunked body streams, `max_files`,
//! `max_pending` on `/create`, first-matching-glob precedence, repository admins and the
//! shared secret), `[[uploads.window_limits]]` (roll-over, purges give no allowance back),
//! concurrent uploads that together would cross a quota (the writer's re-check), the
//! `M_USER_LIMIT_EXCEEDED` answer with `info_uri`, the MSC4034 usage and config fields, and the
//! `usage` projection after a restart and a rebuild from the log (`verify`, `replay`).
//!
//! Each refusal is checked where it matters: the answer, no blob file and no spool file left,
//! no `media.uploaded.v1` recorded, the usage endpoint unchanged.

use crate::common;

use common::{
    count_blobs, expect_error, parse_mxc, random_bytes, spool_entries, Opts, TestServer, ADMIN,
    ALICE, BOB, SECRET,
};
use media_ledger::ledger::Ledger;
use media_ledger_events::{Event, Seq};
use reqwest::{Response, StatusCode};
use serde_json::Value;
use std::time::{Duration, Instant};

/// `uploads.limit_info_uri` of every server of this suite.
const INFO_URI: &str = "https://example.org/media-limits";
const USAGE_PATH: &str = "/_matrix/media/unstable/org.matrix.msc4034/usage";
const OCTETS: &str = "application/octet-stream";

// ---------------------------------------------------------------------------------------------
// Helpers

/// A `[[uploads.quotas]]` rule.
fn quota(glob: &str, max_bytes: u64, max_files: u64, max_pending: u64) -> String {
    format!(
        "[[uploads.quotas]]\nglob = \"{glob}\"\nmax_bytes = {max_bytes}\nmax_files = {max_files}\n\
         max_pending = {max_pending}\n\n"
    )
}

/// A `[[uploads.window_limits]]` rule.
fn window(time_period: &str, max_bytes: u64) -> String {
    format!(
        "[[uploads.window_limits]]\ntime_period = \"{time_period}\"\nmax_bytes = {max_bytes}\n\n"
    )
}

/// A server with `rules` (quota and window TOML) and `uploads.limit_info_uri` = [`INFO_URI`]
/// (written into the `[uploads]` table the common config already has).
async fn start(rules: &str) -> TestServer {
    let dir = tempfile::tempdir().unwrap();
    let text = common::config_text(
        dir.path(),
        &Opts {
            extra_toml: rules.to_owned(),
            ..Opts::default()
        },
    );
    assert!(text.contains("\n[uploads]\n"), "{text}");
    let config_text = text.replacen(
        "\n[uploads]\n",
        &format!("\n[uploads]\nlimit_info_uri = \"{INFO_URI}\"\n"),
        1,
    );
    let mut srv = TestServer {
        base: String::new(),
        client: common::client(),
        dir,
        config_text,
        server: None,
    };
    // Nothing runs yet: `restart` only boots.
    srv.restart().await;
    srv
}

/// Uploads `bytes` as `token`, asserting 200; the `content_uri`.
async fn upload_ok(srv: &TestServer, token: &str, bytes: Vec<u8>) -> String {
    srv.upload(token, bytes, Some(OCTETS), None).await
}

/// `POST /upload` as `token`, the raw answer.
async fn upload_raw(srv: &TestServer, token: &str, bytes: Vec<u8>) -> Response {
    srv.upload_raw(token, bytes, Some(OCTETS), None).await
}

/// `POST /upload` as `token` with a chunked body (no `Content-Length`): the quota can only be
/// noticed while the body streams.
async fn upload_chunked(srv: &TestServer, token: &str, chunks: Vec<Vec<u8>>) -> Response {
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = chunks.into_iter().map(Ok).collect();
    srv.client
        .post(srv.url("/_matrix/media/v3/upload"))
        .bearer_auth(token)
        .header(reqwest::header::CONTENT_TYPE, OCTETS)
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
            chunks,
        )))
        .send()
        .await
        .unwrap()
}

/// `POST /upload` as `token` of a large body (4 MiB, with a `Content-Length` or chunked),
/// asserting that an answer arrives (a server that answers without reading the body and
/// closes the connection makes the client's write fail instead).
async fn upload_large(srv: &TestServer, token: &str, chunked: bool) -> Response {
    let req = srv
        .client
        .post(srv.url("/_matrix/media/v3/upload"))
        .bearer_auth(token)
        .header(reqwest::header::CONTENT_TYPE, OCTETS);
    let req = if chunked {
        let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
            (0..64).map(|_| Ok(random_bytes(64 * 1024))).collect();
        req.body(reqwest::Body::wrap_stream(futures_util::stream::iter(
            chunks,
        )))
    } else {
        req.body(random_bytes(4 << 20))
    };
    req.send()
        .await
        .unwrap_or_else(|e| panic!("no answer to a refused upload (chunked: {chunked}): {e:?}"))
}

/// Asserts the answer to a crossed per-user limit: 403 `M_USER_LIMIT_EXCEEDED` with the
/// configured `info_uri` and `can_upgrade: false`. Returns the body.
async fn expect_limit(resp: Response) -> Value {
    let v = expect_error(resp, StatusCode::FORBIDDEN, "M_USER_LIMIT_EXCEEDED").await;
    assert_eq!(v["info_uri"], INFO_URI, "{v}");
    assert_eq!(v["can_upgrade"], false, "{v}");
    v
}

/// `GET` `path` as `token`, asserting 200; the JSON body.
async fn get_json(srv: &TestServer, token: &str, path: &str) -> Value {
    let resp = srv
        .client
        .get(srv.url(path))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let status = resp.status();
    let text = resp.text().await.unwrap();
    assert_eq!(status, StatusCode::OK, "{path}: {text}");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: not JSON ({e}): {text}"))
}

/// The MSC4034 usage of `token`: `(bytes, files)`, asserting the answer has just those two.
async fn usage(srv: &TestServer, token: &str) -> (u64, u64) {
    let v = get_json(srv, token, USAGE_PATH).await;
    let o = v.as_object().unwrap_or_else(|| panic!("{v}"));
    assert_eq!(o.len(), 2, "{v}");
    let bytes = v["org.matrix.msc4034.storage.used"]
        .as_u64()
        .unwrap_or_else(|| panic!("{v}"));
    let files = v["org.matrix.msc4034.storage.files"]
        .as_u64()
        .unwrap_or_else(|| panic!("{v}"));
    (bytes, files)
}

/// The uploader's (or an admin's) purge of one media, asserting it was purged.
async fn purge(srv: &TestServer, token: &str, mxc: &str) {
    let (server, id) = parse_mxc(mxc);
    let resp = srv
        .client
        .post(srv.url(&format!(
            "/_matrix/media/unstable/admin/purge/{server}/{id}"
        )))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let status = resp.status();
    let text = resp.text().await.unwrap();
    assert_eq!(status, StatusCode::OK, "purge of {mxc}: {text}");
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["purged"], true, "{v}");
    assert_eq!(v["affected"], serde_json::json!([mxc]), "{v}");
}

/// `POST /v1/create` as `token`, the raw answer.
async fn create_raw(srv: &TestServer, token: &str) -> Response {
    srv.client
        .post(srv.url("/_matrix/media/v1/create"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
}

/// `POST /v1/create` as `token`, asserting 200; the `content_uri`.
async fn create_ok(srv: &TestServer, token: &str) -> String {
    let resp = create_raw(srv, token).await;
    let status = resp.status();
    let text = resp.text().await.unwrap();
    assert_eq!(status, StatusCode::OK, "create: {text}");
    let v: Value = serde_json::from_str(&text).unwrap();
    v["content_uri"].as_str().expect("content_uri").to_owned()
}

/// `PUT /upload/{server}/{id}` as `token`, the raw answer.
async fn put(srv: &TestServer, token: &str, mxc: &str, bytes: Vec<u8>) -> Response {
    let (server, id) = parse_mxc(mxc);
    srv.client
        .put(srv.url(&format!("/_matrix/media/v3/upload/{server}/{id}")))
        .bearer_auth(token)
        .header(reqwest::header::CONTENT_TYPE, OCTETS)
        .body(bytes)
        .send()
        .await
        .unwrap()
}

/// `(all events, media.uploaded.v1 events)` in the running server's log.
fn event_counts(srv: &TestServer) -> (usize, usize) {
    let (mut all, mut uploaded) = (0, 0);
    srv.server()
        .ledger
        .events(Seq(1), Seq(u64::MAX), |env| {
            all += 1;
            if matches!(env.event, Event::MediaUploadedV1(_)) {
                uploaded += 1;
            }
            true
        })
        .unwrap();
    (all, uploaded)
}

/// What a refusal must leave as it was: blob files, spool entries, the log, the usage.
struct Snapshot {
    blobs: usize,
    events: (usize, usize),
    usage: (u64, u64),
}

async fn snapshot(srv: &TestServer, token: &str) -> Snapshot {
    assert_eq!(spool_entries(&srv.media_dir()), 0, "spool not empty");
    Snapshot {
        blobs: count_blobs(&srv.media_dir()),
        events: event_counts(srv),
        usage: usage(srv, token).await,
    }
}

/// Asserts nothing was stored or recorded since `before` (`what` names the refusal).
async fn assert_unchanged(srv: &TestServer, token: &str, before: &Snapshot, what: &str) {
    assert_eq!(
        spool_entries(&srv.media_dir()),
        0,
        "{what}: spool file left"
    );
    assert_eq!(
        count_blobs(&srv.media_dir()),
        before.blobs,
        "{what}: a blob file was kept"
    );
    assert_eq!(
        event_counts(srv),
        before.events,
        "{what}: an event was recorded"
    );
    assert_eq!(
        usage(srv, token).await,
        before.usage,
        "{what}: usage changed"
    );
}

// ---------------------------------------------------------------------------------------------
// Quotas

/// `max_bytes` crossed while a chunked body streams: 403 `M_USER_LIMIT_EXCEEDED` with
/// `info_uri`, the body drained (the client gets the answer), no blob, no spool file, no
/// event, usage unchanged. What is exactly left still fits; then nothing more does, and a
/// refused async `PUT` leaves its reservation to fill once a purge frees room.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quota_crossed_mid_stream_stores_nothing() {
    let mut srv = start(&quota("@*:localhost", 10_000, 0, 0)).await;

    let first = upload_ok(&srv, ALICE, random_bytes(6_000)).await;
    assert_eq!(usage(&srv, ALICE).await, (6_000, 1));

    // 4 × 1500 B, no Content-Length: the quota (4000 B left) is crossed in the third chunk.
    let before = snapshot(&srv, ALICE).await;
    let chunks = (0..4).map(|_| random_bytes(1_500)).collect();
    let v = expect_limit(upload_chunked(&srv, ALICE, chunks).await).await;
    assert!(
        v["error"].as_str().unwrap().contains("quota"),
        "the message names the quota: {v}"
    );
    assert_unchanged(&srv, ALICE, &before, "chunked upload over the quota").await;

    // The same with a Content-Length (under `uploads.max_bytes`, over the quota).
    let resp = upload_raw(&srv, ALICE, random_bytes(4_001)).await;
    expect_limit(resp).await;
    assert_unchanged(&srv, ALICE, &before, "sized upload over the quota").await;

    // Exactly what is left fits (the limit is inclusive), streamed in chunks too.
    let chunks = (0..4).map(|_| random_bytes(1_000)).collect();
    let resp = upload_chunked(&srv, ALICE, chunks).await;
    assert_eq!(
        resp.status(),
        StatusCode::OK,
        "{}",
        resp.text().await.unwrap()
    );
    assert_eq!(usage(&srv, ALICE).await, (10_000, 2));

    // Full: even one byte is refused, and so is filling a reservation.
    let reserved = create_ok(&srv, ALICE).await;
    let before = snapshot(&srv, ALICE).await;
    expect_limit(upload_raw(&srv, ALICE, vec![7]).await).await;
    expect_limit(put(&srv, ALICE, &reserved, random_bytes(100)).await).await;
    assert_unchanged(&srv, ALICE, &before, "upload and PUT past a full quota").await;

    // Another user of the same rule has their own quota.
    upload_ok(&srv, BOB, random_bytes(10_000)).await;

    // A purge frees room: the reservation can be filled now.
    purge(&srv, ALICE, &first).await;
    assert_eq!(usage(&srv, ALICE).await, (4_000, 1));
    let resp = put(&srv, ALICE, &reserved, random_bytes(6_000)).await;
    assert_eq!(
        resp.status(),
        StatusCode::OK,
        "{}",
        resp.text().await.unwrap()
    );
    assert_eq!(usage(&srv, ALICE).await, (10_000, 2));
    srv.stop().await;
}

/// `max_files`: the upload after the last allowed file is refused (whatever its size, and a
/// large body still gets its answer); after a purge of one, one more is accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_files_refuses_until_a_purge() {
    let mut srv = start(&quota("@alice:localhost", 0, 3, 0)).await;
    let mut mine = Vec::new();
    for _ in 0..3 {
        mine.push(upload_ok(&srv, ALICE, random_bytes(1_000)).await);
    }
    assert_eq!(usage(&srv, ALICE).await, (3_000, 3));

    let before = snapshot(&srv, ALICE).await;
    let v = expect_limit(upload_raw(&srv, ALICE, vec![1]).await).await;
    assert!(
        v["error"].as_str().unwrap().contains("files"),
        "the message names the file count: {v}"
    );
    // Large bodies refused before they are read still get their answer (the server reads
    // and discards them rather than resetting the connection under the client). Whether an
    // unread body resets the connection before the answer is read depends on timing, hence
    // several tries.
    for i in 0..8 {
        expect_limit(upload_large(&srv, ALICE, i % 2 == 1).await).await;
    }
    assert_unchanged(&srv, ALICE, &before, "upload past max_files").await;

    // Bob has no rule.
    for _ in 0..4 {
        upload_ok(&srv, BOB, random_bytes(100)).await;
    }

    purge(&srv, ALICE, &mine[1]).await;
    assert_eq!(usage(&srv, ALICE).await, (2_000, 2));
    upload_ok(&srv, ALICE, random_bytes(50_000)).await;
    assert_eq!(usage(&srv, ALICE).await, (52_000, 3));
    expect_limit(upload_raw(&srv, ALICE, vec![2]).await).await;
    srv.stop().await;
}

/// The first rule whose glob matches is the user's; repository admins are exempt from
/// wildcard rules but held to a rule naming them exactly; the shared secret is never limited.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_matching_rule_wins_admins_and_secret() {
    let rules = [
        quota("@alice:*", 1_000, 0, 0),
        quota("@*:localhost", 2_000, 0, 0),
        quota("@admin:localhost", 6_000, 0, 0),
        // Never reached by anyone above.
        quota("*", 1, 0, 0),
    ]
    .concat();
    let mut srv = start(&rules).await;

    // Alice: the first rule (1000), not the larger second one.
    expect_limit(upload_raw(&srv, ALICE, random_bytes(1_001)).await).await;
    upload_ok(&srv, ALICE, random_bytes(1_000)).await;
    expect_limit(upload_raw(&srv, ALICE, vec![0]).await).await;

    // Bob: the second (2000).
    upload_ok(&srv, BOB, random_bytes(1_500)).await;
    expect_limit(upload_raw(&srv, BOB, random_bytes(501)).await).await;
    upload_ok(&srv, BOB, random_bytes(500)).await;
    assert_eq!(usage(&srv, BOB).await, (2_000, 2));

    // The admin: not `@*:localhost` (2000) nor `*`, but their own rule (6000).
    upload_ok(&srv, ADMIN, random_bytes(5_000)).await;
    expect_limit(upload_raw(&srv, ADMIN, random_bytes(1_001)).await).await;
    upload_ok(&srv, ADMIN, random_bytes(1_000)).await;
    assert_eq!(usage(&srv, ADMIN).await, (6_000, 2));

    // The shared secret: no limit, and counted for no one.
    upload_ok(&srv, SECRET, random_bytes(20_000)).await;
    upload_ok(&srv, SECRET, random_bytes(20_000)).await;
    assert_eq!(usage(&srv, SECRET).await, (0, 0));

    // The config endpoint tells each their own rule.
    for (token, size) in [(ALICE, 1_000), (BOB, 2_000), (ADMIN, 6_000)] {
        let v = get_json(&srv, token, "/_matrix/client/v1/media/config").await;
        assert_eq!(v["org.matrix.msc4034.storage.size"], size, "{v}");
    }
    let v = get_json(&srv, SECRET, "/_matrix/client/v1/media/config").await;
    assert!(v.get("org.matrix.msc4034.storage.size").is_none(), "{v}");
    srv.stop().await;
}

/// An admin with no rule naming them is not limited by wildcard rules at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admins_are_exempt_from_wildcard_rules() {
    let mut srv = start(&[quota("*", 100, 1, 1), window("1h", 100)].concat()).await;
    for _ in 0..3 {
        upload_ok(&srv, ADMIN, random_bytes(1_000)).await;
        create_ok(&srv, ADMIN).await;
    }
    assert_eq!(usage(&srv, ADMIN).await, (3_000, 3));
    expect_limit(upload_raw(&srv, ALICE, random_bytes(101)).await).await;
    srv.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Time windows

/// A 2 s window: its bytes are refused once used up, and allowed again once the window (and
/// the one-second bucket reaching into it) has passed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn window_limit_rolls_over() {
    let mut srv = start(&window("2s", 5_000)).await;

    upload_ok(&srv, ALICE, random_bytes(5_000)).await;
    let uploaded = Instant::now();
    let before = snapshot(&srv, ALICE).await;
    let v = expect_limit(upload_raw(&srv, ALICE, vec![1]).await).await;
    // Counted for at least the 2 s window after the upload.
    assert!(
        uploaded.elapsed() < Duration::from_millis(2_000),
        "the refusal took too long to be meaningful"
    );
    assert!(v["error"].as_str().unwrap().contains("seconds"), "{v}");
    assert_unchanged(&srv, ALICE, &before, "upload over the window").await;

    // Other users have their own window; repository admins have none.
    upload_ok(&srv, BOB, random_bytes(5_000)).await;
    upload_ok(&srv, ADMIN, random_bytes(20_000)).await;

    // A bucket counts whole while it reaches into the window: at most 3 s after the upload.
    tokio::time::sleep_until((uploaded + Duration::from_millis(3_500)).into()).await;
    upload_ok(&srv, ALICE, random_bytes(5_000)).await;
    // And the new upload fills the window again.
    expect_limit(upload_raw(&srv, ALICE, vec![1]).await).await;
    assert_eq!(usage(&srv, ALICE).await, (10_000, 2));
    srv.stop().await;
}

/// Purging media gives back storage, not upload allowance: within the window the bytes stay
/// counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purge_does_not_restore_window_allowance() {
    let mut srv = start(&[quota("@*:localhost", 8_000, 0, 0), window("1h", 5_000)].concat()).await;
    let a = upload_ok(&srv, ALICE, random_bytes(3_000)).await;
    let b = upload_ok(&srv, ALICE, random_bytes(2_000)).await;
    expect_limit(upload_raw(&srv, ALICE, vec![1]).await).await;

    purge(&srv, ALICE, &a).await;
    purge(&srv, ALICE, &b).await;
    assert_eq!(usage(&srv, ALICE).await, (0, 0));
    let before = snapshot(&srv, ALICE).await;
    expect_limit(upload_raw(&srv, ALICE, vec![1]).await).await;
    assert_unchanged(&srv, ALICE, &before, "upload after purge, window used").await;

    // The config shows the storage quota, not the window.
    let v = get_json(&srv, ALICE, "/_matrix/media/v3/config").await;
    assert_eq!(v["org.matrix.msc4034.storage.size"], 8_000, "{v}");
    srv.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Concurrency

/// Eight concurrent 4 KiB uploads against a 10 KiB quota, each held back before its last
/// chunk until all eight have passed the check at the start (each has its spool file): each
/// saw room for itself, so only the writer's check at commit keeps them from crossing
/// together. Exactly two are recorded; the others are refused with nothing left behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_uploads_cannot_cross_together() {
    use futures_util::StreamExt;
    const N: usize = 8;
    let mut srv = start(&quota("@alice:localhost", 10 * 1024, 0, 0)).await;
    let (release, released) = tokio::sync::watch::channel(false);
    let uploads: Vec<_> = (0..N)
        .map(|_| {
            let (first, last) = (random_bytes(2 * 1024), random_bytes(2 * 1024));
            let mut released = released.clone();
            let body = futures_util::stream::once(async move { Ok::<_, std::io::Error>(first) })
                .chain(futures_util::stream::once(async move {
                    released.wait_for(|r| *r).await.unwrap();
                    Ok(last)
                }));
            let req = srv
                .client
                .post(srv.url("/_matrix/media/v3/upload"))
                .bearer_auth(ALICE)
                .header(reqwest::header::CONTENT_TYPE, OCTETS)
                .body(reqwest::Body::wrap_stream(body));
            tokio::spawn(async move { req.send().await.unwrap() })
        })
        .collect();
    // Every upload passes the quota check (with the whole 10 KiB free) before its first chunk
    // is read, and then waits for its last one. Their spools are still in memory (a small
    // body makes no file before it is whole), so there is nothing to watch: give them a
    // moment. One that had not started by the release would be refused by the check at the
    // start instead, which the assertions below accept too (at most two get through either
    // way); the writer's check is what stops the ones that did.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    release.send(true).unwrap();

    let mut ok = 0;
    for a in futures_util::future::join_all(uploads).await {
        let resp = a.unwrap();
        if resp.status() == StatusCode::OK {
            ok += 1;
        } else {
            // Refused at commit (not while streaming: each had room for its 4 KiB).
            let v = expect_limit(resp).await;
            assert!(!v["error"].as_str().unwrap().contains("left"), "{v}");
        }
    }
    assert_eq!(ok, 2, "uploads accepted");
    let (bytes, files) = usage(&srv, ALICE).await;
    assert!(bytes <= 10 * 1024, "usage {bytes} past the quota");
    assert_eq!((bytes, files), (8 * 1024, 2));
    assert_eq!(event_counts(&srv).1, 2, "media.uploaded.v1 recorded");
    assert_eq!(count_blobs(&srv.media_dir()), 2, "blob files kept");
    assert_eq!(spool_entries(&srv.media_dir()), 0);
    srv.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Reservations

/// `max_pending`: `/create` is refused once the user holds that many unfilled reservations;
/// filling one makes room for another. Others (no rule, admins) are not held to it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_pending_limits_create() {
    let mut srv = start(&[quota("@alice:*", 0, 0, 2), quota("*", 0, 0, 0)].concat()).await;
    let r1 = create_ok(&srv, ALICE).await;
    let _r2 = create_ok(&srv, ALICE).await;
    let (all, _) = event_counts(&srv);
    let v = expect_limit(create_raw(&srv, ALICE).await).await;
    assert!(v["error"].as_str().unwrap().contains("reservations"), "{v}");
    assert_eq!(
        event_counts(&srv).0,
        all,
        "a refused create recorded an event"
    );

    // Bob's rule sets no limit (0); the admin is exempt.
    for _ in 0..3 {
        create_ok(&srv, BOB).await;
        create_ok(&srv, ADMIN).await;
    }

    // Filling one reservation frees a place.
    let resp = put(&srv, ALICE, &r1, random_bytes(10)).await;
    assert_eq!(
        resp.status(),
        StatusCode::OK,
        "{}",
        resp.text().await.unwrap()
    );
    create_ok(&srv, ALICE).await;
    expect_limit(create_raw(&srv, ALICE).await).await;
    srv.stop().await;
}

/// Concurrent `/create`s cannot together take a user past `max_pending`: exactly that many
/// reservations are made, the others refused with `M_USER_LIMIT_EXCEEDED`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_creates_cannot_exceed_max_pending() {
    let mut srv = start(&quota("@alice:*", 0, 0, 2)).await;
    let creates: Vec<_> = (0..16)
        .map(|_| {
            let req = srv
                .client
                .post(srv.url("/_matrix/media/v1/create"))
                .bearer_auth(ALICE);
            tokio::spawn(async move { req.send().await.unwrap() })
        })
        .collect();
    let mut ok = 0;
    for c in futures_util::future::join_all(creates).await {
        let resp = c.unwrap();
        if resp.status() == StatusCode::OK {
            ok += 1;
        } else {
            expect_limit(resp).await;
        }
    }
    let created = srv
        .server()
        .ledger
        .view(media_ledger_projections::names::PENDING_UPLOADS)
        .and_then(|v| {
            let alice = "@alice:localhost"
                .parse::<media_ledger_events::UserId>()
                .unwrap();
            Ok(media_ledger_projections::pending_uploads::owner(&v, &alice)?.live_at(0))
        })
        .unwrap();
    assert_eq!(
        (ok, created),
        (2, 2),
        "(reservations answered, reservations held) with max_pending = 2"
    );
    srv.stop().await;
}

// ---------------------------------------------------------------------------------------------
// MSC4034

/// The usage endpoint counts live local media per uploader (identical bytes count per
/// media), goes down after a purge; the config endpoints carry the caller's rule's limits,
/// and leave out what the rule does not set (and everything without a rule).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn msc4034_usage_and_config() {
    let rules = [
        quota("@alice:localhost", 100_000, 10, 0),
        quota("@bob:localhost", 0, 5, 0),
    ]
    .concat();
    let mut srv = start(&rules).await;
    let max = Opts::default().max_bytes;

    for path in [
        "/_matrix/media/v3/config",
        "/_matrix/media/r0/config",
        "/_matrix/client/v1/media/config",
    ] {
        let v = get_json(&srv, ALICE, path).await;
        assert_eq!(
            v,
            serde_json::json!({
                "m.upload.size": max,
                "org.matrix.msc4034.storage.size": 100_000,
                "org.matrix.msc4034.storage.max_files": 10,
            }),
            "{path}"
        );
        let v = get_json(&srv, BOB, path).await;
        assert_eq!(
            v,
            serde_json::json!({
                "m.upload.size": max,
                "org.matrix.msc4034.storage.max_files": 5,
            }),
            "{path}"
        );
        for token in [ADMIN, SECRET] {
            let v = get_json(&srv, token, path).await;
            assert_eq!(v, serde_json::json!({ "m.upload.size": max }), "{path}");
        }
    }

    for token in [ALICE, BOB, ADMIN, SECRET] {
        assert_eq!(usage(&srv, token).await, (0, 0));
    }
    let same = random_bytes(1_234);
    let a = upload_ok(&srv, ALICE, same.clone()).await;
    let b = upload_ok(&srv, ALICE, same.clone()).await;
    let c = upload_ok(&srv, ALICE, random_bytes(4_321)).await;
    upload_ok(&srv, BOB, same).await;
    upload_ok(&srv, SECRET, random_bytes(999)).await;
    assert_eq!(usage(&srv, ALICE).await, (2 * 1_234 + 4_321, 3));
    assert_eq!(usage(&srv, BOB).await, (1_234, 1));
    assert_eq!(usage(&srv, ADMIN).await, (0, 0));
    assert_eq!(usage(&srv, SECRET).await, (0, 0));

    // Purged by the uploader, then by an admin: each gives its own bytes back, once.
    purge(&srv, ALICE, &a).await;
    assert_eq!(usage(&srv, ALICE).await, (1_234 + 4_321, 2));
    purge(&srv, ADMIN, &c).await;
    assert_eq!(usage(&srv, ALICE).await, (1_234, 1));
    // Purging it again gives nothing back twice.
    let (server, id) = parse_mxc(&c);
    srv.client
        .post(srv.url(&format!(
            "/_matrix/media/unstable/admin/purge/{server}/{id}"
        )))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(usage(&srv, ALICE).await, (1_234, 1));
    assert_eq!(usage(&srv, BOB).await, (1_234, 1));
    purge(&srv, ALICE, &b).await;
    assert_eq!(usage(&srv, ALICE).await, (0, 0));

    // Anonymous: no usage.
    let resp = srv.client.get(srv.url(USAGE_PATH)).send().await.unwrap();
    expect_error(resp, StatusCode::UNAUTHORIZED, "M_MISSING_TOKEN").await;
    srv.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Replay

/// The `usage` projection is a fold of the log: after uploads, a purge and refusals it equals
/// a replay (`verify`), a usage projection emptied behind the server's back is caught by
/// `verify` and rebuilt exactly by `replay`, and after a restart the usage answers and what
/// the quota and the window allow are the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_rebuilds_usage_exactly() {
    let rules = [quota("@*:localhost", 20_000, 0, 0), window("1h", 20_000)].concat();
    let mut srv = start(&rules).await;
    let a = upload_ok(&srv, ALICE, random_bytes(8_000)).await;
    upload_ok(&srv, ALICE, random_bytes(8_000)).await;
    upload_ok(&srv, BOB, random_bytes(3_000)).await;
    upload_ok(&srv, ADMIN, random_bytes(30_000)).await;
    upload_ok(&srv, SECRET, random_bytes(30_000)).await;
    purge(&srv, ALICE, &a).await;
    // Storage room 12000, window room 4000: the window decides.
    expect_limit(upload_raw(&srv, ALICE, random_bytes(5_000)).await).await;

    let tokens = [ALICE, BOB, ADMIN, SECRET];
    let mut before = Vec::new();
    for t in tokens {
        before.push(usage(&srv, t).await);
    }
    assert_eq!(
        before,
        vec![(8_000, 1), (3_000, 1), (30_000, 1), (0, 0)],
        "usage of {tokens:?}"
    );

    srv.stop().await;
    let db = srv.db_path();
    let (head, divergence) = Ledger::verify_path(&db).expect("the ledger verifies");
    assert_eq!(
        divergence, None,
        "projections differ from a replay at {head:?}"
    );

    // Empty the usage projection: verify notices, replay rebuilds it.
    {
        let names = rocksdb::DB::list_cf(&rocksdb::Options::default(), &db).unwrap();
        let rdb = rocksdb::DB::open_cf(&rocksdb::Options::default(), &db, &names).unwrap();
        let cf = rdb
            .cf_handle(media_ledger_projections::names::USAGE.as_str())
            .unwrap();
        let keys: Vec<Box<[u8]>> = rdb
            .iterator_cf(cf, rocksdb::IteratorMode::Start)
            .map(|kv| kv.unwrap().0)
            .collect();
        assert!(!keys.is_empty(), "the usage projection holds nothing");
        for k in keys {
            rdb.delete_cf(cf, k).unwrap();
        }
    }
    let (_, divergence) = Ledger::verify_path(&db).expect("the log verifies");
    assert!(divergence.is_some(), "an emptied usage projection verifies");
    let (ledger, _) = Ledger::open_rebuilt(&db, &mut |_, _| {}).expect("replay");
    ledger.shutdown();
    drop(ledger);
    let (head, divergence) = Ledger::verify_path(&db).expect("the ledger verifies");
    assert_eq!(
        divergence, None,
        "after replay, projections differ at {head:?}"
    );

    srv.restart().await;
    let mut after = Vec::new();
    for t in tokens {
        after.push(usage(&srv, t).await);
    }
    assert_eq!(
        after, before,
        "usage of {tokens:?} after replay and restart"
    );
    // The window still holds the purged bytes: 4000 left of it, not 12000.
    expect_limit(upload_raw(&srv, ALICE, random_bytes(4_001)).await).await;
    upload_ok(&srv, ALICE, random_bytes(4_000)).await;
    expect_limit(upload_raw(&srv, ALICE, vec![1]).await).await;
    upload_ok(&srv, BOB, random_bytes(17_000)).await;
    expect_limit(upload_raw(&srv, BOB, vec![1]).await).await;
    srv.stop().await;
}
