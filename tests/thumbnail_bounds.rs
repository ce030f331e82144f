#![allow(clippy::unwrap_used, clippy::expect_used)]
//! What bounds thumbnail generation under hostile load, over real HTTP: the source is read
//! only once a worker is free, a full queue answers 429 `M_LIMIT_EXCEEDED` with
//! `retry_after_ms` (nothing read, nothing decoded), a failed render is remembered (the junk
//! is read and decoded once), an anonymous legacy request never generates, the served file
//! name's extension comes from a fixed table, and a halted projection answers 503.
//!
//! Reads of a source are counted (and held) by the fault-injecting datastore of
//! `fault_injection`: a read of the source is what every decode needs first.

use crate::common;
use crate::fault_injection::{start, Faults, Op};
use media_ledger_projections::names;

use common::{expect_error, header, parse_mxc, random_bytes, Opts, TestServer, ALICE, DS};
use futures_util::stream::{FuturesUnordered, StreamExt};
use media_ledger_events::Seq;
use reqwest::StatusCode;
use serde_json::Value;
use std::io::Cursor;
use std::time::Duration;

/// Guard against a hang (a bound that does not hold would leave requests waiting forever).
const GUARD: Duration = Duration::from_secs(60);

fn png(w: u32, h: u32, seed: u8) -> Vec<u8> {
    let img = image::RgbImage::from_fn(w, h, |x, y| image::Rgb([x as u8, y as u8, seed]));
    let mut out = Vec::new();
    image::DynamicImage::ImageRgb8(img)
        .write_to(&mut Cursor::new(&mut out), image::ImageFormat::Png)
        .unwrap();
    out
}

/// `[thumbnails]` with `keys`.
fn opts(keys: &str) -> Opts {
    Opts {
        extra_toml: format!("[thumbnails]\n{keys}\n"),
        ..Opts::default()
    }
}

fn path(mxc: &str, legacy: bool, query: &str) -> String {
    let (server, id) = parse_mxc(mxc);
    if legacy {
        format!("/_matrix/media/v3/thumbnail/{server}/{id}?{query}")
    } else {
        format!("/_matrix/client/v1/media/thumbnail/{server}/{id}?{query}")
    }
}

async fn get(srv: &TestServer, token: Option<&str>, path: &str) -> reqwest::Response {
    let mut req = srv.client.get(srv.url(path));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    req.send().await.unwrap()
}

fn generated(srv: &TestServer) -> usize {
    let mut n = 0;
    srv.server()
        .ledger
        .events(Seq(1), Seq(u64::MAX), |env| {
            n += usize::from(env.event.type_name() == "thumbnail.generated.v1");
            true
        })
        .unwrap();
    n
}

/// One worker, two waiting: while the worker is held inside its source read, of 8 more
/// requests (distinct thumbnails) exactly 6 are refused with 429 `M_LIMIT_EXCEEDED` and
/// `retry_after_ms`, and no other source is read; released, the rest are served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_answers_429_and_only_workers_read_sources() {
    let faults = Faults::new();
    let mut srv = start(opts("workers = 1\nmax_queued = 2"), &faults).await;
    let mut media = Vec::new();
    for seed in 0..9u8 {
        media.push(
            srv.upload(ALICE, png(200, 150, seed), Some("image/png"), None)
                .await,
        );
    }
    let query = "width=32&height=32&method=crop";
    let held = faults.pause(Op::Open, Some(DS));
    let first = {
        let (client, url) = (srv.client.clone(), srv.url(&path(&media[0], false, query)));
        tokio::spawn(async move { client.get(url).bearer_auth(ALICE).send().await.unwrap() })
    };
    // The first generation holds the only worker, inside its source read.
    held.reached().await;
    let mut pending: FuturesUnordered<_> = media[1..]
        .iter()
        .map(|m| {
            let (client, url) = (srv.client.clone(), srv.url(&path(m, false, query)));
            tokio::spawn(async move {
                let resp = client.get(url).bearer_auth(ALICE).send().await.unwrap();
                let status = resp.status();
                let retry_after = resp
                    .headers()
                    .get("retry-after")
                    .map(|v| v.to_str().unwrap().to_owned());
                (status, retry_after, resp.text().await.unwrap())
            })
        })
        .collect();
    for _ in 0..6 {
        let (status, retry_after, body) = tokio::time::timeout(GUARD, pending.next())
            .await
            .expect("requests beyond the queue are answered at once")
            .unwrap()
            .unwrap();
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["errcode"], "M_LIMIT_EXCEEDED", "{body}");
        assert!(v["retry_after_ms"].as_u64().unwrap() > 0, "{body}");
        assert!(retry_after.is_some(), "Retry-After header");
    }
    // Only the worker read a source: the queued and the refused read nothing.
    assert_eq!(faults.calls(DS, Op::Open), 1);
    assert_eq!(generated(&srv), 0);
    // Let the first go (the pause holds before and after the real read).
    held.release();
    held.reached().await;
    held.release();
    let resp = tokio::time::timeout(GUARD, first).await.unwrap().unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    // The two queued are served in turn.
    for _ in 0..2 {
        let (status, _, body) = tokio::time::timeout(GUARD, pending.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    assert_eq!(generated(&srv), 3);
    // A refused request succeeds once the queue has room.
    let resp = get(&srv, Some(ALICE), &path(&media[8], false, query)).await;
    assert_eq!(resp.status(), StatusCode::OK);
    srv.stop().await;
}

/// A source that cannot be thumbnailed is read (and decoded) once per size: the next requests,
/// on either route, get the same 400 from memory without reading it again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_render_is_remembered() {
    let faults = Faults::new();
    let mut srv = start(Opts::default(), &faults).await;
    let mut junk = b"\x89PNG\r\n\x1a\n".to_vec();
    junk.extend(random_bytes(200_000));
    let mxc = srv.upload(ALICE, junk, Some("image/png"), None).await;
    let query = "width=96&height=96&method=crop";
    let first = expect_error(
        get(&srv, Some(ALICE), &path(&mxc, false, query)).await,
        StatusCode::BAD_REQUEST,
        "M_UNKNOWN",
    )
    .await;
    assert_eq!(faults.calls(DS, Op::Open), 1);
    for (token, legacy) in [
        (Some(ALICE), false),
        (Some(ALICE), true),
        (None, true),
        (Some(ALICE), false),
    ] {
        let again = expect_error(
            get(&srv, token, &path(&mxc, legacy, query)).await,
            StatusCode::BAD_REQUEST,
            "M_UNKNOWN",
        )
        .await;
        assert_eq!(again, first, "the same answer");
    }
    assert_eq!(faults.calls(DS, Op::Open), 1, "the junk was read again");
    // Another size is another render (and is remembered in turn).
    for _ in 0..2 {
        expect_error(
            get(
                &srv,
                Some(ALICE),
                &path(&mxc, false, "width=320&height=240"),
            )
            .await,
            StatusCode::BAD_REQUEST,
            "M_UNKNOWN",
        )
        .await;
    }
    assert_eq!(faults.calls(DS, Op::Open), 2);
    assert_eq!(generated(&srv), 0);
    srv.stop().await;
}

/// Without a token the legacy route serves what exists and generates nothing (no source
/// read, no event): 404 until a request with a token has generated it, then the same bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anonymous_legacy_requests_never_generate() {
    let faults = Faults::new();
    let mut srv = start(Opts::default(), &faults).await;
    let mxc = srv
        .upload(ALICE, png(640, 480, 1), Some("image/png"), None)
        .await;
    let query = "width=96&height=96&method=crop";
    for _ in 0..3 {
        expect_error(
            get(&srv, None, &path(&mxc, true, query)).await,
            StatusCode::NOT_FOUND,
            "M_NOT_FOUND",
        )
        .await;
    }
    // A token the homeserver does not know is no token.
    expect_error(
        get(&srv, Some("no-such-token"), &path(&mxc, true, query)).await,
        StatusCode::NOT_FOUND,
        "M_NOT_FOUND",
    )
    .await;
    assert_eq!(faults.calls(DS, Op::Open), 0, "a source was read");
    assert_eq!(generated(&srv), 0);
    // With a token (legacy or authenticated route) it is generated once, then served to all.
    let resp = get(&srv, Some(ALICE), &path(&mxc, true, query)).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let made = resp.bytes().await.unwrap();
    assert_eq!(generated(&srv), 1);
    let resp = get(&srv, None, &path(&mxc, true, query)).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.bytes().await.unwrap(), made);
    assert_eq!(generated(&srv), 1);
    srv.stop().await;
}

/// A content type's parameters never reach `Content-Disposition`: the extension comes from
/// a fixed table of image types.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_file_extension_comes_from_a_fixed_table() {
    let srv = TestServer::start().await;
    let evil = "image/png; x=a/png\";filename*=UTF-8''evil.html";
    // Smaller than every size: served as its own thumbnail, with its recorded content type.
    let tiny = png(20, 20, 3);
    // Such a type is refused at upload now ...
    let resp = srv.upload_raw(ALICE, tiny.clone(), Some(evil), None).await;
    expect_error(resp, StatusCode::BAD_REQUEST, "M_INVALID_PARAM").await;
    // ... but an older build recorded it: the same bytes under another id, with that type.
    let plain = srv
        .upload(ALICE, tiny.clone(), Some("image/png"), None)
        .await;
    let ledger = srv.server().ledger.clone();
    let (server, _) = parse_mxc(&plain);
    let hash = media_ledger_projections::hash_refs::get(
        &ledger.view(names::HASH_REFS).unwrap(),
        &common::sha256_hex(&tiny).parse().unwrap(),
    )
    .unwrap()
    .unwrap();
    let mxc = format!("mxc://{server}/OlderBuildEvilType");
    ledger
        .submit(
            media_ledger_events::Actor::User("@alice:localhost".parse().unwrap()),
            media_ledger_events::RequestId("older".into()),
            media_ledger::ledger::Command::Upload {
                event: media_ledger_events::MediaUploaded {
                    media: mxc.parse().unwrap(),
                    sha256: common::sha256_hex(&tiny).parse().unwrap(),
                    size_bytes: tiny.len() as u64,
                    content_type: Some(evil.parse().unwrap()),
                    upload_name: None,
                    uploader: media_ledger_events::Actor::User("@alice:localhost".parse().unwrap()),
                    datastore: hash.datastore,
                    location: hash.location,
                },
                completes_async: None,
                quota: None,
            },
        )
        .await
        .unwrap();
    drop(ledger);
    let resp = get(&srv, Some(ALICE), &path(&mxc, false, "width=32&height=32")).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        header(&resp, "content-disposition"),
        "inline; filename=\"thumbnail.png\""
    );
    assert_eq!(resp.bytes().await.unwrap(), tiny);
}

/// A projection a thumbnail's record is validated against has halted: the documented 503
/// (writes suspended), not a 500, and the body names no internal cause.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_halted_projection_answers_503_on_the_thumbnail_path() {
    let mut srv = TestServer::start().await;
    let mxc = srv
        .upload(ALICE, png(640, 480, 4), Some("image/png"), None)
        .await;
    srv.server()
        .ledger
        .halt_projection(names::THUMBNAILS, "halted by the test");
    let v = expect_error(
        get(&srv, Some(ALICE), &path(&mxc, false, "width=96&height=96")).await,
        StatusCode::SERVICE_UNAVAILABLE,
        "M_UNKNOWN",
    )
    .await;
    let msg = v["error"].as_str().unwrap();
    assert!(!msg.contains("thumbnails"), "{msg}");
    srv.stop().await;
}
