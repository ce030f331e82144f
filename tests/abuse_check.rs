//! The content check (`[content_check]`, `src/abuse/check.rs`) over real HTTP on loopback,
//! against a checker written here (a small axum server recording each request's headers and
//! body and answering as the test says: allow, deny with or without a reason, an error status,
//! too late, or not JSON). Covered: what the checker is sent for an upload (`POST` and the
//! async `PUT`: the `X-Media-Ledger-*` headers, the bytes, the bearer secret), for a larger
//! upload than `max_body_bytes` (described only), for a link-preview image and for a remote
//! fetch (and not with `check_remote = false`); a deny (403, nothing recorded: no blob, no
//! event, no spool file, usage unchanged); a deny with `quarantine_on_deny` (the bytes
//! quarantined repository-wide by the system, existing media with them too, later uploads of
//! them refused without asking); a failing checker under `failure_policy` open (accepted) and
//! closed (503, nothing kept).

use crate::common;
use common::fake_remote::fake_remote;
use common::{admin_get, json_ok, path_of};

use axum::extract::{DefaultBodyLimit, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use common::site::{self, Site};
use common::{
    count_blobs, expect_error, random_bytes, sha256_hex, spool_entries, Opts, TestServer, ALICE,
    BOB,
};
use media_ledger_events::{Actor, Authority, Envelope, Event, ModerationTarget, Seq};
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------------------------
// The checker
// ---------------------------------------------------------------------------------------------

/// How the checker answers.
#[derive(Debug, Clone)]
enum Mode {
    /// `{"allow": true}`.
    Allow,
    /// `{"allow": false}`, with `"reason"` when given.
    Deny(Option<&'static str>),
    /// This status, a text body.
    Status(u16),
    /// `{"allow": true}` after this long.
    Sleep(Duration),
    /// 200 with a body that is not JSON.
    Garbage,
}

/// One request the checker received.
#[derive(Debug, Clone)]
struct Seen {
    headers: HeaderMap,
    body: Vec<u8>,
}

impl Seen {
    fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
    }

    /// A header that must be there.
    fn h(&self, name: &str) -> String {
        self.header(name)
            .unwrap_or_else(|| panic!("header {name} missing: {:?}", self.headers))
    }
}

#[derive(Clone)]
struct Checker {
    /// Where to `POST`.
    url: String,
    mode: Arc<Mutex<Mode>>,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Checker {
    async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let c = Checker {
            url: format!("http://{addr}/check"),
            mode: Arc::new(Mutex::new(Mode::Allow)),
            seen: Arc::default(),
        };
        let router = axum::Router::new()
            .route("/check", axum::routing::post(answer))
            .layer(DefaultBodyLimit::disable())
            .with_state(c.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        c
    }

    fn set(&self, mode: Mode) {
        *self.mode.lock().unwrap() = mode;
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    fn count(&self) -> usize {
        self.seen.lock().unwrap().len()
    }

    fn last(&self) -> Seen {
        self.seen().last().cloned().expect("the checker was asked")
    }
}

async fn answer(State(c): State<Checker>, headers: HeaderMap, body: Bytes) -> Response {
    c.seen.lock().unwrap().push(Seen {
        headers,
        body: body.to_vec(),
    });
    let mode = c.mode.lock().unwrap().clone();
    let json_answer = |v: Value| {
        (
            [("content-type", "application/json")],
            serde_json::to_vec(&v).unwrap(),
        )
            .into_response()
    };
    match mode {
        Mode::Allow => json_answer(json!({"allow": true})),
        Mode::Deny(Some(reason)) => json_answer(json!({"allow": false, "reason": reason})),
        Mode::Deny(None) => json_answer(json!({"allow": false})),
        Mode::Status(code) => (
            axum::http::StatusCode::from_u16(code).unwrap(),
            "the checker is broken",
        )
            .into_response(),
        Mode::Sleep(d) => {
            tokio::time::sleep(d).await;
            json_answer(json!({"allow": true}))
        }
        Mode::Garbage => {
            ([("content-type", "application/json")], "{\"allow\": tru").into_response()
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Setup and helpers
// ---------------------------------------------------------------------------------------------

/// The `[content_check]` table asking `checker`, with `lines` added.
fn check_toml(checker: &Checker, lines: &str) -> String {
    format!("[content_check]\nurl = {:?}\n{lines}\n", checker.url)
}

/// A server asking `checker` with `lines` in `[content_check]`.
async fn start(checker: &Checker, lines: &str) -> TestServer {
    TestServer::start_with(Opts {
        extra_toml: check_toml(checker, lines),
        ..Opts::default()
    })
    .await
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

/// What a refused upload must leave as it was: the log's head, the usage figures, the blobs
/// and the spool.
struct Snapshot {
    head: Seq,
    usage: Value,
    blobs: usize,
}

async fn snapshot(srv: &TestServer) -> Snapshot {
    Snapshot {
        head: srv.server().ledger.head(),
        usage: admin_get(srv, "usage/localhost").await,
        blobs: count_blobs(&srv.media_dir()),
    }
}

/// Asserts nothing was recorded or kept since `before`.
async fn assert_nothing_kept(srv: &TestServer, before: &Snapshot) {
    assert_eq!(srv.server().ledger.head(), before.head, "no event recorded");
    assert_eq!(admin_get(srv, "usage/localhost").await, before.usage);
    assert_eq!(count_blobs(&srv.media_dir()), before.blobs, "no blob kept");
    assert_eq!(spool_entries(&srv.media_dir()), 0, "no spool file left");
}

/// `POST /_matrix/media/v1/create` as `token`; the reserved `mxc://` URI.
async fn create(srv: &TestServer, token: &str) -> String {
    let resp = srv
        .client
        .post(srv.url("/_matrix/media/v1/create"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let v = json_ok(resp).await;
    v["content_uri"].as_str().unwrap().to_owned()
}

/// `PUT /_matrix/media/v3/upload/{server}/{id}` as `token`.
async fn put(srv: &TestServer, token: &str, mxc: &str, bytes: Vec<u8>) -> reqwest::Response {
    srv.client
        .put(srv.url(&format!("/_matrix/media/v3/upload/{}", path_of(mxc))))
        .bearer_auth(token)
        .header(reqwest::header::CONTENT_TYPE, "image/png")
        .body(bytes)
        .send()
        .await
        .unwrap()
}

/// Asserts `seen` describes an upload of `bytes` as `mxc` by `uploader`, typed
/// `content_type`, sent in full.
fn assert_describes_upload(
    seen: &Seen,
    bytes: &[u8],
    mxc: &str,
    uploader: &str,
    content_type: &str,
) {
    assert_eq!(seen.h("x-media-ledger-sha256"), sha256_hex(bytes));
    assert_eq!(seen.h("x-media-ledger-size"), bytes.len().to_string());
    assert_eq!(seen.h("x-media-ledger-kind"), "upload");
    assert_eq!(seen.h("x-media-ledger-media"), mxc);
    assert_eq!(seen.h("x-media-ledger-origin"), "localhost");
    assert_eq!(seen.h("x-media-ledger-uploader"), uploader);
    assert_eq!(seen.h("x-media-ledger-body"), "full");
    assert_eq!(seen.h("content-type"), content_type);
    assert!(seen.body == bytes, "the body is the media's bytes");
}

// ---------------------------------------------------------------------------------------------
// Allowed uploads
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_allowed_upload_is_described_to_the_checker_and_stored() {
    let checker = Checker::start().await;
    let mut srv = start(&checker, "secret = \"checker-secret\"").await;
    let bytes = random_bytes(5_000);
    let mxc = srv
        .upload(ALICE, bytes.clone(), Some("text/plain"), Some("notes.txt"))
        .await;
    assert_eq!(checker.count(), 1);
    let seen = checker.last();
    assert_describes_upload(&seen, &bytes, &mxc, "@alice:localhost", "text/plain");
    assert_eq!(seen.h("authorization"), "Bearer checker-secret");
    assert_eq!(seen.h("content-length"), bytes.len().to_string());
    assert_eq!(srv.download_bytes(&mxc).await, bytes);

    // The async upload: the reserved media id, checked at the PUT.
    let reserved = create(&srv, BOB).await;
    assert_eq!(checker.count(), 1, "a reservation is not checked");
    let png = site::red_png().to_vec();
    let resp = put(&srv, BOB, &reserved, png.clone()).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(checker.count(), 2);
    assert_describes_upload(
        &checker.last(),
        &png,
        &reserved,
        "@bob:localhost",
        "image/png",
    );
    assert_eq!(srv.download_bytes(&reserved).await, png);

    // Bytes already stored are asked about again for a new media (the check is per upload).
    let again = srv.upload(BOB, bytes.clone(), None, None).await;
    assert_eq!(checker.count(), 3);
    assert_describes_upload(
        &checker.last(),
        &bytes,
        &again,
        "@bob:localhost",
        "application/octet-stream",
    );
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn media_above_max_body_bytes_are_described_without_their_bytes() {
    let checker = Checker::start().await;
    let mut srv = start(&checker, "max_body_bytes = 1000").await;
    let at_limit = random_bytes(1_000);
    let mxc = srv.upload(ALICE, at_limit.clone(), None, None).await;
    assert_describes_upload(
        &checker.last(),
        &at_limit,
        &mxc,
        "@alice:localhost",
        "application/octet-stream",
    );

    let above = random_bytes(1_001);
    let mxc = srv.upload(ALICE, above.clone(), None, None).await;
    let seen = checker.last();
    assert_eq!(seen.h("x-media-ledger-body"), "none");
    assert!(seen.body.is_empty(), "{} bytes sent", seen.body.len());
    assert_eq!(seen.h("x-media-ledger-size"), "1001");
    assert_eq!(seen.h("x-media-ledger-sha256"), sha256_hex(&above));
    assert_eq!(seen.h("x-media-ledger-media"), mxc);
    assert_eq!(seen.header("authorization"), None, "no secret, no header");
    assert_eq!(checker.count(), 2);
    assert_eq!(srv.download_bytes(&mxc).await, above);
    srv.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Denials
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_denied_upload_is_refused_and_nothing_is_kept() {
    let checker = Checker::start().await;
    let mut srv = start(&checker, "").await;
    let kept = srv.upload(ALICE, random_bytes(700), None, None).await;
    let before = snapshot(&srv).await;

    checker.set(Mode::Deny(Some("not on my server")));
    let bytes = random_bytes(4_000);
    let resp = srv
        .upload_raw(ALICE, bytes.clone(), Some("text/plain"), None)
        .await;
    expect_error(resp, StatusCode::FORBIDDEN, "M_FORBIDDEN").await;
    assert_eq!(checker.count(), 2);
    assert_eq!(
        checker.last().h("x-media-ledger-sha256"),
        sha256_hex(&bytes)
    );
    assert_nothing_kept(&srv, &before).await;

    // Without a reason; and the async PUT.
    checker.set(Mode::Deny(None));
    let resp = srv.upload_raw(BOB, random_bytes(300), None, None).await;
    expect_error(resp, StatusCode::FORBIDDEN, "M_FORBIDDEN").await;
    let reserved = create(&srv, BOB).await;
    let before = snapshot(&srv).await;
    let resp = put(&srv, BOB, &reserved, random_bytes(900)).await;
    expect_error(resp, StatusCode::FORBIDDEN, "M_FORBIDDEN").await;
    assert_nothing_kept(&srv, &before).await;
    assert_eq!(checker.count(), 4);
    // The reservation is still unfilled: a later PUT the checker allows fills it.
    checker.set(Mode::Allow);
    let png = site::red_png().to_vec();
    assert_eq!(
        put(&srv, BOB, &reserved, png.clone()).await.status(),
        StatusCode::OK
    );
    assert_eq!(srv.download_bytes(&reserved).await, png);

    // Nothing was quarantined: once the checker allows, the same bytes are stored.
    checker.set(Mode::Allow);
    let mxc = srv.upload(ALICE, bytes.clone(), None, None).await;
    assert_eq!(srv.download_bytes(&mxc).await, bytes);
    assert_eq!(srv.download(&kept).await.status(), StatusCode::OK);
    assert!(
        !envelopes(&srv)
            .iter()
            .any(|e| matches!(e.event, Event::MediaQuarantinedV1(_))),
        "nothing quarantined"
    );
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quarantine_on_deny_quarantines_the_bytes_everywhere() {
    let checker = Checker::start().await;
    let mut srv = start(&checker, "quarantine_on_deny = true").await;
    let bytes = random_bytes(6_000);
    let sha = sha256_hex(&bytes);
    let existing = srv.upload(ALICE, bytes.clone(), None, None).await;
    let other_bytes = random_bytes(600);
    let other = srv.upload(ALICE, other_bytes.clone(), None, None).await;

    checker.set(Mode::Deny(Some("matches a known hash")));
    let before_blobs = count_blobs(&srv.media_dir());
    let resp = srv.upload_raw(BOB, bytes.clone(), None, None).await;
    expect_error(resp, StatusCode::FORBIDDEN, "M_FORBIDDEN").await;
    assert_eq!(checker.count(), 3);
    assert_eq!(count_blobs(&srv.media_dir()), before_blobs);
    assert_eq!(spool_entries(&srv.media_dir()), 0);

    // One quarantine by the system, of the hash, taking the existing media with it.
    let acts: Vec<Envelope> = envelopes(&srv)
        .into_iter()
        .filter(|e| matches!(e.event, Event::MediaQuarantinedV1(_)))
        .collect();
    assert_eq!(acts.len(), 1, "{acts:?}");
    assert_eq!(acts[0].actor, Actor::System);
    let Event::MediaQuarantinedV1(q) = &acts[0].event else {
        unreachable!()
    };
    assert_eq!(q.authority, Authority::RepositoryAdmin);
    assert!(
        matches!(&q.target, ModerationTarget::Hash(h) if h.to_hex() == sha),
        "{q:?}"
    );
    assert_eq!(
        q.reason.as_deref(),
        Some("content check: matches a known hash")
    );
    let media: Vec<String> = q.media.iter().map(|m| m.to_string()).collect();
    assert_eq!(media, vec![existing.clone()]);
    let hashes: Vec<String> = q.hashes.iter().map(|h| h.to_hex()).collect();
    assert_eq!(hashes, vec![sha.clone()]);
    // No upload event for the refused one.
    assert_eq!(
        envelopes(&srv)
            .iter()
            .filter(|e| matches!(e.event, Event::MediaUploadedV1(_)))
            .count(),
        2
    );

    expect_error(
        srv.download(&existing).await,
        StatusCode::NOT_FOUND,
        "M_NOT_FOUND",
    )
    .await;
    let h = admin_get(&srv, &format!("media/{}/history", path_of(&existing))).await;
    assert_eq!(h["state"]["quarantined"], true, "{h}");
    let audit = admin_get(&srv, "audit").await;
    let entry = &audit["chunk"][0];
    assert_eq!(entry["type"], "media.quarantined.v1", "{audit}");
    assert_eq!(entry["actor"], "system", "{audit}");
    assert_eq!(
        entry["reason"], "content check: matches a known hash",
        "{audit}"
    );

    // The checker now allows: the bytes are refused anyway, without asking it.
    checker.set(Mode::Allow);
    for token in [ALICE, BOB] {
        let resp = srv.upload_raw(token, bytes.clone(), None, None).await;
        expect_error(resp, StatusCode::FORBIDDEN, "M_FORBIDDEN").await;
    }
    assert_eq!(
        checker.count(),
        3,
        "quarantined bytes are refused before the check"
    );
    assert_eq!(spool_entries(&srv.media_dir()), 0);
    // Other bytes are not.
    assert_eq!(srv.download_bytes(&other).await, other_bytes);
    let fresh = random_bytes(800);
    let mxc = srv.upload(BOB, fresh.clone(), None, None).await;
    assert_eq!(srv.download_bytes(&mxc).await, fresh);
    assert_eq!(checker.count(), 4);
    srv.stop().await;
}

// ---------------------------------------------------------------------------------------------
// A failing checker
// ---------------------------------------------------------------------------------------------

/// The failures tried under each policy (a checker slower than `timeout_ms = 400`).
fn failures() -> [Mode; 4] {
    [
        Mode::Status(500),
        Mode::Status(302),
        Mode::Garbage,
        Mode::Sleep(Duration::from_secs(4)),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_checker_lets_uploads_through_under_the_open_policy() {
    let checker = Checker::start().await;
    let mut srv = start(&checker, "timeout_ms = 400\nfailure_policy = \"open\"").await;
    for (i, mode) in failures().into_iter().enumerate() {
        checker.set(mode.clone());
        let bytes = random_bytes(1_000 + i);
        let t = Instant::now();
        let mxc = srv.upload(ALICE, bytes.clone(), None, None).await;
        assert!(
            t.elapsed() < Duration::from_secs(3),
            "{mode:?}: the upload waited {:?}",
            t.elapsed()
        );
        assert_eq!(checker.count(), i + 1, "{mode:?}");
        assert_eq!(srv.download_bytes(&mxc).await, bytes, "{mode:?}");
    }
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_checker_refuses_uploads_under_the_closed_policy() {
    let checker = Checker::start().await;
    let mut srv = start(&checker, "timeout_ms = 400\nfailure_policy = \"closed\"").await;
    let before = snapshot(&srv).await;
    for (i, mode) in failures().into_iter().enumerate() {
        checker.set(mode.clone());
        let t = Instant::now();
        let resp = srv
            .upload_raw(ALICE, random_bytes(1_000 + i), None, None)
            .await;
        assert!(
            t.elapsed() < Duration::from_secs(3),
            "{mode:?}: the upload waited {:?}",
            t.elapsed()
        );
        expect_error(resp, StatusCode::SERVICE_UNAVAILABLE, "M_UNKNOWN").await;
        assert_eq!(checker.count(), i + 1, "{mode:?}");
        assert_nothing_kept(&srv, &before).await;
    }
    // Answering again, it is obeyed again.
    checker.set(Mode::Allow);
    let bytes = random_bytes(2_000);
    let mxc = srv.upload(ALICE, bytes.clone(), None, None).await;
    assert_eq!(srv.download_bytes(&mxc).await, bytes);
    srv.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Link-preview images
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn link_preview_images_are_checked() {
    let site = Site::start().await;
    let checker = Checker::start().await;
    let mut srv = TestServer::start_with(Opts {
        extra_toml: format!(
            "[url_previews]\nip_range_allowlist = [\"127.0.0.1/32\"]\n\n{}",
            check_toml(&checker, "")
        ),
        ..Opts::default()
    })
    .await;
    let preview = |url: String| {
        let req = srv
            .client
            .get(srv.url("/_matrix/client/v1/media/preview_url"))
            .query(&[("url", url)])
            .bearer_auth(ALICE);
        async move { json_ok(req.send().await.unwrap()).await }
    };
    let red = site::red_png();

    // Denied: the preview comes without its image, nothing stored.
    checker.set(Mode::Deny(Some("no red squares")));
    let og = preview(site.url("/og")).await;
    assert_eq!(og["og:title"], site::OG_TITLE, "{og}");
    assert!(og.get("og:image").is_none(), "{og}");
    assert_eq!(checker.count(), 1);
    let seen = checker.last();
    assert_eq!(seen.h("x-media-ledger-sha256"), sha256_hex(red));
    assert_eq!(seen.h("x-media-ledger-kind"), "upload");
    assert_eq!(seen.h("x-media-ledger-body"), "full");
    assert!(seen.body == red, "the image's bytes are sent");
    assert_eq!(count_blobs(&srv.media_dir()), 0);
    assert_eq!(spool_entries(&srv.media_dir()), 0);

    // Allowed: stored and offered (another URL of the same page: previews are cached).
    checker.set(Mode::Allow);
    let og = preview(site.url("/og-utf8")).await;
    let mxc = og["og:image"]
        .as_str()
        .unwrap_or_else(|| panic!("{og}"))
        .to_owned();
    assert_eq!(checker.count(), 2);
    assert_eq!(checker.last().h("x-media-ledger-media"), mxc);
    assert_eq!(
        checker.last().h("x-media-ledger-uploader"),
        "@alice:localhost"
    );
    assert_eq!(srv.download_bytes(&mxc).await, red);
    srv.stop().await;

    // Under the closed policy a failing checker fails the preview (503), which is not
    // cached: once the checker answers, the preview comes with its image.
    let mut srv = TestServer::start_with(Opts {
        extra_toml: format!(
            "[url_previews]\nip_range_allowlist = [\"127.0.0.1/32\"]\n\n{}",
            check_toml(&checker, "failure_policy = \"closed\"")
        ),
        ..Opts::default()
    })
    .await;
    checker.set(Mode::Status(500));
    let resp = srv
        .client
        .get(srv.url("/_matrix/client/v1/media/preview_url"))
        .query(&[("url", site.url("/og"))])
        .bearer_auth(ALICE)
        .send()
        .await
        .unwrap();
    expect_error(resp, StatusCode::SERVICE_UNAVAILABLE, "M_UNKNOWN").await;
    assert_eq!(count_blobs(&srv.media_dir()), 0);
    assert_eq!(spool_entries(&srv.media_dir()), 0);
    checker.set(Mode::Allow);
    let resp = srv
        .client
        .get(srv.url("/_matrix/client/v1/media/preview_url"))
        .query(&[("url", site.url("/og"))])
        .bearer_auth(ALICE)
        .send()
        .await
        .unwrap();
    let og = json_ok(resp).await;
    assert!(og["og:image"].as_str().is_some(), "{og}");
    srv.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Remote media
// ---------------------------------------------------------------------------------------------

/// A server asking `checker` (`lines` in `[content_check]`) and pinning `fake.test` to `url`.
async fn start_federating(checker: &Checker, lines: &str, url: &str) -> TestServer {
    TestServer::start_with(Opts {
        extra_toml: format!(
            "[federation]\nsigning_key_path = {{dir:signing.key}}\npins = {{ \"fake.test\" = {url:?} }}\n\n{}",
            check_toml(checker, lines)
        ),
        ..Opts::default()
    })
    .await
}

fn remote_cached(srv: &TestServer) -> Vec<String> {
    envelopes(srv)
        .into_iter()
        .filter_map(|e| match e.event {
            Event::RemoteMediaCachedV1(c) => Some(c.media.to_string()),
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetched_remote_media_are_checked() {
    let (fake, url) = fake_remote().await;
    let checker = Checker::start().await;
    let mut srv = start_federating(&checker, "secret = \"s3cr3t\"", &url).await;
    let a_bytes = random_bytes(2_500);
    let a = fake.add("a", a_bytes.clone());
    assert_eq!(srv.download_bytes(&a).await, a_bytes);
    assert_eq!(checker.count(), 1);
    let seen = checker.last();
    assert_eq!(seen.h("x-media-ledger-kind"), "remote");
    assert_eq!(seen.h("x-media-ledger-media"), a);
    assert_eq!(seen.h("x-media-ledger-origin"), "fake.test");
    assert_eq!(seen.h("x-media-ledger-sha256"), sha256_hex(&a_bytes));
    assert_eq!(seen.h("x-media-ledger-size"), "2500");
    assert_eq!(seen.h("x-media-ledger-body"), "full");
    assert_eq!(seen.header("x-media-ledger-uploader"), None);
    assert_eq!(seen.h("authorization"), "Bearer s3cr3t");
    assert!(seen.body == a_bytes);
    // Served from the cache: not asked again.
    assert_eq!(srv.download_bytes(&a).await, a_bytes);
    assert_eq!(checker.count(), 1);

    // Denied: 403, not cached, nothing left behind. The denial is remembered (an hour, in
    // memory): asking again neither fetches nor asks the checker, even once it would allow.
    checker.set(Mode::Deny(Some("remote says no")));
    let b_bytes = random_bytes(1_700);
    let b = fake.add("b", b_bytes.clone());
    expect_error(srv.download(&b).await, StatusCode::FORBIDDEN, "M_FORBIDDEN").await;
    assert_eq!(checker.count(), 2);
    assert_eq!(remote_cached(&srv), vec![a.clone()]);
    assert_eq!(count_blobs(&srv.media_dir()), 1);
    assert_eq!(spool_entries(&srv.media_dir()), 0);
    checker.set(Mode::Allow);
    expect_error(srv.download(&b).await, StatusCode::FORBIDDEN, "M_FORBIDDEN").await;
    assert_eq!(fake.hits("b"), 1);
    assert_eq!(checker.count(), 2);
    // A restart forgets it: fetched and asked again.
    srv.restart().await;
    assert_eq!(srv.download_bytes(&b).await, b_bytes);
    assert_eq!(fake.hits("b"), 2);
    assert_eq!(checker.count(), 3);
    srv.stop().await;

    // `check_remote = false`: remote media are not asked about; uploads still are.
    let checker = Checker::start().await;
    let mut srv = start_federating(&checker, "check_remote = false", &url).await;
    let c_bytes = random_bytes(900);
    let c = fake.add("c", c_bytes.clone());
    checker.set(Mode::Deny(Some("everything")));
    assert_eq!(srv.download_bytes(&c).await, c_bytes);
    assert_eq!(checker.count(), 0);
    let resp = srv.upload_raw(ALICE, random_bytes(100), None, None).await;
    expect_error(resp, StatusCode::FORBIDDEN, "M_FORBIDDEN").await;
    assert_eq!(checker.count(), 1);
    srv.stop().await;
}
