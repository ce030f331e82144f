#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Quarantine, unquarantine, media attributes and the read-only moderation APIs (audit,
//! history, usage) over real HTTP on loopback, with real files and a real ledger: same-hash
//! propagation across homeservers, repository vs homeserver-admin scope (the homeserver's
//! admin API answered by a fake Synapse), pinned media, placeholders for quarantined
//! downloads and thumbnails, upload blocks, reasons, restarts, and a remote fetch of
//! quarantined bytes over federation.

use crate::common;

use common::synapse::FakeSynapse;
use common::{
    count_blobs, expect_error, header, parse_mxc, random_bytes, sha256_hex, spool_entries, Opts,
    TestServer, ADMIN, ALICE, ALICE_OTHER, BOB, BOB_OTHER, DS, SECRET,
};
use reqwest::{Response, StatusCode};
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

const API: &str = "/_matrix/media/unstable/admin";
const OTHER: &str = "other.test";
/// Tokens only the fake Synapse knows (of `@bob:localhost` and `@admin:localhost`, admins
/// there): the routes that list a room's media ask the homeserver with the caller's token.
const HS_BOB: &str = "hs-bob-token";
const HS_ADMIN: &str = "hs-admin-token";

// ---------------------------------------------------------------------------------------------
// Setup and request helpers
// ---------------------------------------------------------------------------------------------

/// `localhost` (default, with `cs_api` when given) and `other.test` (no `cs_api`).
fn two_homeservers(cs_api: Option<&str>) -> String {
    let cs = cs_api.map_or(String::new(), |u| format!("cs_api = \"{u}\"\n"));
    format!(
        "[[homeservers]]\nname = \"localhost\"\ndefault = true\n{cs}\n\
         [[homeservers]]\nname = \"{OTHER}\"\n"
    )
}

fn opts(cs_api: Option<&str>) -> Opts {
    Opts {
        homeservers: Some(two_homeservers(cs_api)),
        ..Opts::default()
    }
}

/// alice's static token on `host` (static tokens are valid only on their user's homeserver).
fn alice_on(host: &str) -> &'static str {
    if host == OTHER {
        ALICE_OTHER
    } else {
        ALICE
    }
}

/// A server with both homeservers and no `cs_api`.
async fn start_plain() -> TestServer {
    TestServer::start_with(opts(None)).await
}

/// A fake Synapse where bob is an admin of localhost (and the repository admin's token is
/// accepted too, for room listings), alice a plain user; and a server whose localhost asks it.
async fn start_with_synapse(extra: Opts) -> (TestServer, FakeSynapse) {
    let hs = FakeSynapse::start(&[(BOB, "@bob:localhost"), (ADMIN, "@admin:localhost")]).await;
    hs.add_user(ALICE, "@alice:localhost", false);
    hs.add_user(HS_BOB, "@bob:localhost", true);
    hs.add_user(HS_ADMIN, "@admin:localhost", true);
    let srv = TestServer::start_with(Opts {
        homeservers: Some(two_homeservers(Some(&hs.url))),
        ..extra
    })
    .await;
    (srv, hs)
}

/// `POST /_matrix/media/v3/upload` with `Host: host` as `token`.
async fn upload_to(srv: &TestServer, host: &str, token: &str, bytes: Vec<u8>) -> Response {
    srv.client
        .post(srv.url("/_matrix/media/v3/upload?filename=f.bin"))
        .header(reqwest::header::HOST, host)
        .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
        .bearer_auth(token)
        .body(bytes)
        .send()
        .await
        .unwrap()
}

/// Uploads to `host` as `token`, asserting 200; the `content_uri`.
async fn upload_ok(srv: &TestServer, host: &str, token: &str, bytes: Vec<u8>) -> String {
    let resp = upload_to(srv, host, token, bytes).await;
    let v = json_ok(resp).await;
    let mxc = v["content_uri"].as_str().unwrap().to_owned();
    assert!(
        mxc.starts_with(&format!("mxc://{host}/")),
        "{mxc} on {host}"
    );
    mxc
}

/// Asserts 200 and returns the JSON body.
async fn json_ok(resp: Response) -> Value {
    let status = resp.status();
    let url = resp.url().clone();
    let text = resp.text().await.unwrap();
    assert_eq!(status, StatusCode::OK, "{url}: {text}");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{url}: not JSON ({e}): {text}"))
}

/// `POST {API}/{path}` as `token` with an optional JSON body.
async fn post(srv: &TestServer, token: &str, path: &str, body: Option<Value>) -> Response {
    let mut req = srv
        .client
        .post(srv.url(&format!("{API}/{path}")))
        .bearer_auth(token);
    if let Some(b) = body {
        req = req.json(&b);
    }
    req.send().await.unwrap()
}

/// `GET {API}/{path}` as `token`.
async fn get(srv: &TestServer, token: &str, path: &str) -> Response {
    srv.client
        .get(srv.url(&format!("{API}/{path}")))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
}

/// `server/id` of an mxc URI.
fn path_of(mxc: &str) -> String {
    let (s, id) = parse_mxc(mxc);
    format!("{s}/{id}")
}

/// `POST quarantine/{server}/{id}` as `token`.
async fn quarantine(srv: &TestServer, token: &str, mxc: &str) -> Response {
    post(srv, token, &format!("quarantine/{}", path_of(mxc)), None).await
}

/// Quarantines, asserting 200; `num_quarantined`.
async fn quarantine_n(srv: &TestServer, token: &str, mxc: &str) -> u64 {
    let v = json_ok(quarantine(srv, token, mxc).await).await;
    v["num_quarantined"]
        .as_u64()
        .unwrap_or_else(|| panic!("{v}"))
}

/// `POST unquarantine/{server}/{id}` as `token`.
async fn unquarantine(srv: &TestServer, token: &str, mxc: &str) -> Response {
    post(srv, token, &format!("unquarantine/{}", path_of(mxc)), None).await
}

/// Unquarantines, asserting 200; `num_unquarantined`.
async fn unquarantine_n(srv: &TestServer, token: &str, mxc: &str) -> u64 {
    let v = json_ok(unquarantine(srv, token, mxc).await).await;
    v["num_unquarantined"]
        .as_u64()
        .unwrap_or_else(|| panic!("{v}"))
}

/// `num_quarantined` of a bulk quarantine (`user/..`, `server/..`, `room/..`).
async fn quarantine_bulk(srv: &TestServer, token: &str, what: &str) -> u64 {
    let v = json_ok(post(srv, token, &format!("quarantine/{what}"), None).await).await;
    v["num_quarantined"]
        .as_u64()
        .unwrap_or_else(|| panic!("{v}"))
}

/// Asserts a quarantined (or otherwise hidden) download: 404 M_NOT_FOUND on the legacy and
/// the authenticated endpoints.
async fn assert_hidden(srv: &TestServer, mxc: &str) {
    expect_error(
        srv.download(mxc).await,
        StatusCode::NOT_FOUND,
        "M_NOT_FOUND",
    )
    .await;
    let resp = srv
        .client
        .get(srv.url(&format!(
            "/_matrix/client/v1/media/download/{}",
            path_of(mxc)
        )))
        .bearer_auth(ALICE)
        .send()
        .await
        .unwrap();
    expect_error(resp, StatusCode::NOT_FOUND, "M_NOT_FOUND").await;
}

/// Asserts `mxc` downloads as `bytes`.
async fn assert_serves(srv: &TestServer, mxc: &str, bytes: &[u8]) {
    let got = srv.download_bytes(mxc).await;
    assert!(got == bytes, "{mxc} served other bytes");
}

/// Asserts an upload of `bytes` to `host` is refused as quarantined content (and stores
/// nothing: no new blob, no spool file left).
async fn assert_upload_blocked(srv: &TestServer, host: &str, bytes: &[u8]) {
    let blobs = count_blobs(&srv.media_dir());
    let resp = upload_to(srv, host, alice_on(host), bytes.to_vec()).await;
    let v = expect_error(resp, StatusCode::FORBIDDEN, "M_FORBIDDEN").await;
    let msg = v["error"].as_str().unwrap();
    assert!(msg.contains("quarantine"), "error message: {msg}");
    assert_eq!(
        count_blobs(&srv.media_dir()),
        blobs,
        "refused upload stored a blob"
    );
    assert_eq!(
        spool_entries(&srv.media_dir()),
        0,
        "refused upload left a spool file"
    );
}

/// A PNG of `w`×`h` pixels (`seed` varies the bytes).
fn png_image(w: u32, h: u32, seed: u8) -> Vec<u8> {
    let img = image::RgbImage::from_fn(w, h, |x, y| {
        image::Rgb([
            (x * 3) as u8,
            (y * 5) as u8,
            seed.wrapping_add((x + y) as u8),
        ])
    });
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

const PNG_MAGIC: &[u8] = b"\x89PNG\r\n\x1a\n";

/// Width and height from a PNG's IHDR (asserting the signature and chunk type), cross-checked
/// by decoding the whole image.
fn png_dims(bytes: &[u8]) -> (u32, u32) {
    assert!(
        bytes.len() > 24,
        "too short for a PNG: {} bytes",
        bytes.len()
    );
    assert_eq!(&bytes[..8], PNG_MAGIC, "not a PNG signature");
    assert_eq!(&bytes[12..16], b"IHDR", "first chunk is not IHDR");
    let w = u32::from_be_bytes(bytes[16..20].try_into().unwrap());
    let h = u32::from_be_bytes(bytes[20..24].try_into().unwrap());
    let decoded = image::load_from_memory_with_format(bytes, image::ImageFormat::Png)
        .expect("placeholder decodes as PNG");
    assert_eq!((decoded.width(), decoded.height()), (w, h));
    (w, h)
}

/// `GET /_matrix/media/v3/thumbnail/{server}/{id}?width=&height=&method=`.
async fn thumbnail(srv: &TestServer, mxc: &str, w: u32, h: u32, method: &str) -> Response {
    srv.client
        .get(srv.url(&format!(
            "/_matrix/media/v3/thumbnail/{}?width={w}&height={h}&method={method}",
            path_of(mxc)
        )))
        .bearer_auth(ALICE)
        .send()
        .await
        .unwrap()
}

/// The audit chunk for `query` (asserting 200), and its `next_token`.
async fn audit(srv: &TestServer, token: &str, query: &str) -> (Vec<Value>, Option<String>) {
    let v = json_ok(get(srv, token, &format!("audit{query}")).await).await;
    let chunk = v["chunk"]
        .as_array()
        .unwrap_or_else(|| panic!("{v}"))
        .clone();
    let next = v.get("next_token").map(|t| t.as_str().unwrap().to_owned());
    (chunk, next)
}

fn seqs(chunk: &[Value]) -> Vec<u64> {
    chunk.iter().map(|e| e["seq"].as_u64().unwrap()).collect()
}

/// `GET media/{server}/{id}/history` as the repository admin.
async fn history(srv: &TestServer, mxc: &str) -> Value {
    json_ok(get(srv, ADMIN, &format!("media/{}/history", path_of(mxc))).await).await
}

// ---------------------------------------------------------------------------------------------
// Scope and propagation
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repository_quarantine_flags_the_same_bytes_on_every_origin() {
    let mut srv = start_plain().await;
    let bytes = random_bytes(20_000);
    let local = upload_ok(&srv, "localhost", ALICE, bytes.clone()).await;
    let other = upload_ok(&srv, OTHER, BOB_OTHER, bytes.clone()).await;
    let unrelated_bytes = random_bytes(5_000);
    let unrelated = upload_ok(&srv, "localhost", ALICE, unrelated_bytes.clone()).await;
    assert_eq!(
        count_blobs(&srv.media_dir()),
        2,
        "identical bytes share one blob"
    );

    assert_eq!(quarantine_n(&srv, ADMIN, &local).await, 2);
    assert_hidden(&srv, &local).await;
    assert_hidden(&srv, &other).await;
    assert_serves(&srv, &unrelated, &unrelated_bytes).await;
    // The bytes stay on disk (quarantine hides, purge deletes).
    assert_eq!(count_blobs(&srv.media_dir()), 2);
    let blob_contents: Vec<Vec<u8>> = common::blob_files(&srv.media_dir())
        .iter()
        .map(|p| std::fs::read(p).unwrap())
        .collect();
    assert!(
        blob_contents.contains(&bytes),
        "quarantined blob was removed"
    );

    // Nothing changes a second time, whichever copy is named.
    assert_eq!(quarantine_n(&srv, ADMIN, &local).await, 0);
    assert_eq!(quarantine_n(&srv, SECRET, &other).await, 0);

    // The bytes are blocked on every origin; other bytes are not.
    assert_upload_blocked(&srv, "localhost", &bytes).await;
    assert_upload_blocked(&srv, OTHER, &bytes).await;
    upload_ok(&srv, OTHER, ALICE_OTHER, random_bytes(100)).await;

    // The upload listing and the media's state agree.
    let v = json_ok(get(&srv, ADMIN, "usage/localhost/uploads").await).await;
    assert_eq!(v[&local]["quarantined"], true, "{v}");
    assert_eq!(v[&unrelated]["quarantined"], false, "{v}");
    let h = history(&srv, &other).await;
    assert_eq!(h["media"], other.as_str(), "{h}");
    assert_eq!(h["state"]["quarantined"], true, "{h}");
    assert_eq!(h["state"]["sha256"], sha256_hex(&bytes), "{h}");
    let types: Vec<&str> = h["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert_eq!(types, ["media.uploaded.v1", "media.quarantined.v1"], "{h}");
    let affected: BTreeSet<&str> = h["events"][1]["affected"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(affected, BTreeSet::from([local.as_str(), other.as_str()]));
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn homeserver_admin_quarantines_only_its_own_server() {
    let (mut srv, hs) = start_with_synapse(Opts::default()).await;
    let bytes = random_bytes(12_345);
    let local_a = upload_ok(&srv, "localhost", ALICE, bytes.clone()).await;
    let local_b = upload_ok(&srv, "localhost", ALICE, bytes.clone()).await;
    let other = upload_ok(&srv, OTHER, ALICE_OTHER, bytes.clone()).await;
    let other_only = upload_ok(&srv, OTHER, ALICE_OTHER, random_bytes(300)).await;

    // Bob is an admin of localhost (the fake Synapse says so): both localhost copies.
    assert_eq!(quarantine_n(&srv, BOB, &local_a).await, 2);
    assert!(
        hs.calls().iter().any(
            |(p, t)| p == "/_synapse/admin/v1/users/@bob:localhost/admin"
                && t.as_deref() == Some(BOB)
        ),
        "the homeserver was not asked with bob's token: {:?}",
        hs.calls()
    );
    assert_hidden(&srv, &local_a).await;
    assert_hidden(&srv, &local_b).await;
    assert_serves(&srv, &other, &bytes).await;

    // Other servers' media and names are out of reach.
    expect_error(
        quarantine(&srv, BOB, &other_only).await,
        StatusCode::FORBIDDEN,
        "M_FORBIDDEN",
    )
    .await;
    expect_error(
        quarantine(&srv, BOB, &other).await,
        StatusCode::FORBIDDEN,
        "M_FORBIDDEN",
    )
    .await;
    expect_error(
        post(&srv, BOB, &format!("quarantine/server/{OTHER}"), None).await,
        StatusCode::FORBIDDEN,
        "M_FORBIDDEN",
    )
    .await;
    expect_error(
        post(&srv, BOB, &format!("quarantine/user/@x:{OTHER}"), None).await,
        StatusCode::FORBIDDEN,
        "M_FORBIDDEN",
    )
    .await;
    expect_error(
        unquarantine(&srv, BOB, &other).await,
        StatusCode::FORBIDDEN,
        "M_FORBIDDEN",
    )
    .await;
    expect_error(
        get(&srv, BOB, &format!("usage/{OTHER}")).await,
        StatusCode::FORBIDDEN,
        "M_FORBIDDEN",
    )
    .await;
    expect_error(
        get(&srv, BOB, &format!("media/{}/history", path_of(&other))).await,
        StatusCode::FORBIDDEN,
        "M_FORBIDDEN",
    )
    .await;
    // Asking through other.test's Host: bob's token is localhost's, other.test does not know
    // it; and other.test's bob is no admin there (it has no admin API).
    for (token, status, errcode) in [
        (BOB, StatusCode::UNAUTHORIZED, "M_UNKNOWN_TOKEN"),
        (BOB_OTHER, StatusCode::FORBIDDEN, "M_FORBIDDEN"),
    ] {
        let resp = srv
            .client
            .post(srv.url(&format!("{API}/quarantine/{}", path_of(&other_only))))
            .header(reqwest::header::HOST, OTHER)
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        expect_error(resp, status, errcode).await;
    }
    assert_serves(&srv, &other, &bytes).await;
    assert_eq!(srv.download(&other_only).await.status(), StatusCode::OK);

    // The block covers uploads to localhost only.
    assert_upload_blocked(&srv, "localhost", &bytes).await;
    let again = upload_ok(&srv, OTHER, ALICE_OTHER, bytes.clone()).await;
    assert_serves(&srv, &again, &bytes).await;

    // A homeserver admin may read its own server's figures.
    json_ok(get(&srv, BOB, "usage/localhost").await).await;

    // Bob lifts his own quarantine: both localhost copies back, uploads allowed again.
    assert_eq!(unquarantine_n(&srv, BOB, &local_b).await, 2);
    assert_serves(&srv, &local_a, &bytes).await;
    assert_serves(&srv, &local_b, &bytes).await;
    upload_ok(&srv, "localhost", ALICE, bytes.clone()).await;

    // A repository-wide quarantine is beyond a homeserver admin.
    assert_eq!(quarantine_n(&srv, ADMIN, &local_a).await, 5);
    expect_error(
        unquarantine(&srv, BOB, &local_a).await,
        StatusCode::FORBIDDEN,
        "M_FORBIDDEN",
    )
    .await;
    assert_hidden(&srv, &local_a).await;
    assert_hidden(&srv, &other).await;
    assert_upload_blocked(&srv, "localhost", &bytes).await;
    assert_upload_blocked(&srv, OTHER, &bytes).await;
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_users_are_forbidden_everywhere() {
    let (mut srv, _hs) = start_with_synapse(Opts::default()).await;
    let bytes = random_bytes(1_000);
    let mxc = upload_ok(&srv, "localhost", ALICE, bytes.clone()).await;
    let p = path_of(&mxc);

    // Alice is known to the homeserver but not an admin (its admin API answers her 403).
    for resp in [
        quarantine(&srv, ALICE, &mxc).await,
        unquarantine(&srv, ALICE, &mxc).await,
        post(&srv, ALICE, "quarantine/user/@alice:localhost", None).await,
        post(&srv, ALICE, "quarantine/server/localhost", None).await,
        post(&srv, ALICE, "quarantine/room/!r:localhost", None).await,
        post(
            &srv,
            ALICE,
            &format!("media/{p}/attributes"),
            Some(json!({"purpose": "pinned"})),
        )
        .await,
        get(&srv, ALICE, &format!("media/{p}/attributes")).await,
        get(&srv, ALICE, &format!("media/{p}/history")).await,
        get(&srv, ALICE, "audit").await,
        get(&srv, ALICE, "usage/localhost").await,
        get(&srv, ALICE, "usage/localhost/users").await,
        get(&srv, ALICE, "usage/localhost/uploads").await,
    ] {
        expect_error(resp, StatusCode::FORBIDDEN, "M_FORBIDDEN").await;
    }
    // Without a token: 401.
    let resp = srv
        .client
        .post(srv.url(&format!("{API}/quarantine/{p}")))
        .send()
        .await
        .unwrap();
    expect_error(resp, StatusCode::UNAUTHORIZED, "M_MISSING_TOKEN").await;

    assert_serves(&srv, &mxc, &bytes).await;
    upload_ok(&srv, "localhost", ALICE, bytes.clone()).await;
    let (chunk, _) = audit(&srv, ADMIN, "").await;
    assert!(chunk.is_empty(), "refused acts were recorded: {chunk:?}");
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_user_without_a_homeserver_admin_api_is_forbidden() {
    let mut srv = start_plain().await;
    let mxc = upload_ok(&srv, "localhost", ALICE, random_bytes(100)).await;
    expect_error(
        quarantine(&srv, ALICE, &mxc).await,
        StatusCode::FORBIDDEN,
        "M_FORBIDDEN",
    )
    .await;
    expect_error(
        quarantine(&srv, BOB, &mxc).await,
        StatusCode::FORBIDDEN,
        "M_FORBIDDEN",
    )
    .await;
    assert_eq!(srv.download(&mxc).await.status(), StatusCode::OK);
    srv.stop().await;
}

/// The moderation extractors refuse in one order: the token (401), then a caller the route is
/// not for (403, whatever else is wrong), then malformed path parameters or body (400), then
/// what needs the named media (404).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_come_token_then_caller_then_input() {
    let (mut srv, _hs) = start_with_synapse(Opts::default()).await;
    let mxc = upload_ok(&srv, "localhost", ALICE, random_bytes(100)).await;
    let p = path_of(&mxc);
    let bad_paths = [
        "quarantine/localhost/bad%20id".to_owned(),
        "quarantine/a..b/abc".to_owned(),
        "quarantine/server/a..b".to_owned(),
        "quarantine/user/alice".to_owned(),
        "quarantine/room/notaroom".to_owned(),
        "unquarantine/localhost./abc".to_owned(),
        "media/localhost/bad%20id/attributes".to_owned(),
        "purge/user/alice".to_owned(),
        "purge/server/a..b".to_owned(),
        "purge/room/notaroom".to_owned(),
    ];
    for path in &bad_paths {
        let resp = srv
            .client
            .post(srv.url(&format!("{API}/{path}")))
            .send()
            .await
            .unwrap();
        expect_error(resp, StatusCode::UNAUTHORIZED, "M_MISSING_TOKEN").await;
        let resp = post(&srv, ALICE, path, None).await;
        expect_error(resp, StatusCode::FORBIDDEN, "M_FORBIDDEN").await;
        let resp = post(&srv, ADMIN, path, None).await;
        expect_error(resp, StatusCode::BAD_REQUEST, "M_INVALID_PARAM").await;
    }
    for path in [
        "media/a..b/abc/history",
        "usage/a..b",
        "usage/a..b/users",
        "usage/a..b/uploads",
    ] {
        expect_error(
            get(&srv, ALICE, path).await,
            StatusCode::FORBIDDEN,
            "M_FORBIDDEN",
        )
        .await;
        expect_error(
            get(&srv, ADMIN, path).await,
            StatusCode::BAD_REQUEST,
            "M_INVALID_PARAM",
        )
        .await;
    }
    // A body that is not JSON: the plain user is refused first, the admin told.
    for token in [ALICE, ADMIN] {
        let resp = srv
            .client
            .post(srv.url(&format!("{API}/quarantine/{p}")))
            .bearer_auth(token)
            .body("why not")
            .send()
            .await
            .unwrap();
        let (status, code) = if token == ALICE {
            (StatusCode::FORBIDDEN, "M_FORBIDDEN")
        } else {
            (StatusCode::BAD_REQUEST, "M_NOT_JSON")
        };
        expect_error(resp, status, code).await;
    }
    // Purging one media is open to its uploader: a malformed path is 400, a missing media 404
    // and another's media 403.
    let resp = post(&srv, BOB, "purge/localhost/bad%20id", None).await;
    expect_error(resp, StatusCode::BAD_REQUEST, "M_INVALID_PARAM").await;
    let resp = post(&srv, ALICE, "purge/localhost/NoSuchMedia0", None).await;
    expect_error(resp, StatusCode::NOT_FOUND, "M_NOT_FOUND").await;
    let theirs = upload_ok(&srv, "localhost", ADMIN, random_bytes(100)).await;
    let resp = post(&srv, ALICE, &format!("purge/{}", path_of(&theirs)), None).await;
    expect_error(resp, StatusCode::FORBIDDEN, "M_FORBIDDEN").await;

    let (chunk, _) = audit(&srv, ADMIN, "").await;
    assert!(chunk.is_empty(), "refused acts were recorded: {chunk:?}");
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_racing_a_quarantine_never_stay_servable() {
    let mut srv = start_plain().await;
    let bytes = random_bytes(64 * 1024);
    let seed = upload_ok(&srv, "localhost", ALICE, bytes.clone()).await;

    // Uploads of the same bytes to both origins, and five identical quarantines, at once.
    let mut uploads = Vec::new();
    for i in 0..16 {
        let client = srv.client.clone();
        let url = srv.url("/_matrix/media/v3/upload");
        let body = bytes.clone();
        let host = if i % 2 == 0 { "localhost" } else { OTHER };
        uploads.push(tokio::spawn(async move {
            let resp = client
                .post(url)
                .header(reqwest::header::HOST, host)
                .bearer_auth(alice_on(host))
                .body(body)
                .send()
                .await
                .unwrap();
            let status = resp.status();
            let v: Value = resp.json().await.unwrap();
            (status, v)
        }));
    }
    let mut quarantines = Vec::new();
    for _ in 0..5 {
        let client = srv.client.clone();
        let url = srv.url(&format!("{API}/quarantine/{}", path_of(&seed)));
        quarantines.push(tokio::spawn(async move {
            let resp = client.post(url).bearer_auth(ADMIN).send().await.unwrap();
            assert_eq!(resp.status(), StatusCode::OK);
            let v: Value = resp.json().await.unwrap();
            v["num_quarantined"].as_u64().unwrap()
        }));
    }
    let mut flagged = 0;
    for q in quarantines {
        flagged += q.await.unwrap();
    }
    let mut stored = vec![seed.clone()];
    for u in uploads {
        let (status, v) = u.await.unwrap();
        match status {
            StatusCode::OK => stored.push(v["content_uri"].as_str().unwrap().to_owned()),
            StatusCode::FORBIDDEN => assert_eq!(v["errcode"], "M_FORBIDDEN", "{v}"),
            s => panic!("upload answered {s}: {v}"),
        }
    }
    // Every copy that got in was flagged, each exactly once across the five acts (an
    // upload committed after the acts would have been refused).
    assert_eq!(flagged, stored.len() as u64, "stored: {stored:?}");
    for m in &stored {
        assert_hidden(&srv, m).await;
    }
    assert_upload_blocked(&srv, OTHER, &bytes).await;
    assert_eq!(count_blobs(&srv.media_dir()), 1);
    assert_eq!(spool_entries(&srv.media_dir()), 0);
    srv.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Attributes
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pinned_media_is_skipped_by_quarantine() {
    let mut srv = start_plain().await;
    let bytes = random_bytes(4_000);
    let pinned = upload_ok(&srv, "localhost", ALICE, bytes.clone()).await;
    let p = path_of(&pinned);

    let v = json_ok(get(&srv, ADMIN, &format!("media/{p}/attributes")).await).await;
    assert_eq!(v, json!({"purpose": "none"}));
    let v = json_ok(
        post(
            &srv,
            ADMIN,
            &format!("media/{p}/attributes"),
            Some(json!({"purpose": "pinned"})),
        )
        .await,
    )
    .await;
    assert_eq!(v, json!({"purpose": "pinned"}));
    let v = json_ok(get(&srv, ADMIN, &format!("media/{p}/attributes")).await).await;
    assert_eq!(v, json!({"purpose": "pinned"}));

    assert_eq!(quarantine_n(&srv, ADMIN, &pinned).await, 0);
    assert_serves(&srv, &pinned, &bytes).await;
    let h = history(&srv, &pinned).await;
    assert_eq!(h["state"]["quarantined"], false, "{h}");
    assert_eq!(h["state"]["purpose"], "pinned", "{h}");

    // A same-hash sibling that is not pinned is quarantined through the pinned one; the
    // pinned one stays served.
    let unrelated = upload_ok(&srv, OTHER, ALICE_OTHER, random_bytes(10)).await;
    let sibling_same = {
        // The hash is blocked by now (the act above still blocked it), so unquarantine
        // first to let the same bytes in again.
        unquarantine_n(&srv, ADMIN, &pinned).await;
        upload_ok(&srv, OTHER, BOB_OTHER, bytes.clone()).await
    };
    assert_eq!(quarantine_n(&srv, ADMIN, &pinned).await, 1);
    assert_serves(&srv, &pinned, &bytes).await;
    assert_hidden(&srv, &sibling_same).await;
    assert_eq!(srv.download(&unrelated).await.status(), StatusCode::OK);

    // Unpinned through `attributes/set`, it is then quarantined like any other.
    let v = json_ok(
        post(
            &srv,
            SECRET,
            &format!("media/{p}/attributes/set"),
            Some(json!({"purpose": "none"})),
        )
        .await,
    )
    .await;
    assert_eq!(v, json!({"purpose": "none"}));
    assert_eq!(quarantine_n(&srv, ADMIN, &pinned).await, 1);
    assert_hidden(&srv, &pinned).await;
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attribute_errors() {
    let mut srv = start_plain().await;
    let mxc = upload_ok(&srv, "localhost", ALICE, random_bytes(100)).await;
    let p = path_of(&mxc);
    let url = srv.url(&format!("{API}/media/{p}/attributes"));

    let resp = post(
        &srv,
        ADMIN,
        &format!("media/{p}/attributes"),
        Some(json!({"purpose": "favourite"})),
    )
    .await;
    expect_error(resp, StatusCode::BAD_REQUEST, "M_INVALID_PARAM").await;
    let resp = srv
        .client
        .post(&url)
        .bearer_auth(ADMIN)
        .body("purpose=pinned")
        .send()
        .await
        .unwrap();
    expect_error(resp, StatusCode::BAD_REQUEST, "M_NOT_JSON").await;
    let resp = srv
        .client
        .post(&url)
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    expect_error(resp, StatusCode::BAD_REQUEST, "M_NOT_JSON").await;
    let resp = post(
        &srv,
        ADMIN,
        &format!("media/{p}/attributes"),
        Some(json!({})),
    )
    .await;
    expect_error(resp, StatusCode::BAD_REQUEST, "M_MISSING_PARAM").await;

    let missing = "localhost/AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
    let resp = post(
        &srv,
        ADMIN,
        &format!("media/{missing}/attributes"),
        Some(json!({"purpose": "pinned"})),
    )
    .await;
    expect_error(resp, StatusCode::NOT_FOUND, "M_NOT_FOUND").await;
    let resp = get(&srv, ADMIN, &format!("media/{missing}/attributes")).await;
    expect_error(resp, StatusCode::NOT_FOUND, "M_NOT_FOUND").await;
    let resp = post(&srv, ADMIN, &format!("unquarantine/{missing}"), None).await;
    expect_error(resp, StatusCode::NOT_FOUND, "M_NOT_FOUND").await;
    let v = json_ok(post(&srv, ADMIN, &format!("quarantine/{missing}"), None).await).await;
    assert_eq!(v, json!({"num_quarantined": 0}));

    // Nothing of the refused requests was recorded.
    let v = json_ok(get(&srv, ADMIN, &format!("media/{p}/attributes")).await).await;
    assert_eq!(v, json!({"purpose": "none"}));
    let (chunk, _) = audit(&srv, ADMIN, "").await;
    assert!(chunk.is_empty(), "{chunk:?}");
    srv.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Bulk quarantines
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quarantine_by_user_and_by_server() {
    let mut srv = start_plain().await;
    let a1 = random_bytes(1_001);
    let a2 = random_bytes(1_002);
    let b1 = random_bytes(1_003);
    let o1 = random_bytes(1_004);
    let o2 = random_bytes(1_005);
    let alice1 = upload_ok(&srv, "localhost", ALICE, a1.clone()).await;
    let alice2 = upload_ok(&srv, "localhost", ALICE, a2.clone()).await;
    let bob1 = upload_ok(&srv, "localhost", BOB, b1.clone()).await;
    let other1 = upload_ok(&srv, OTHER, BOB_OTHER, o1.clone()).await;
    let other2 = upload_ok(&srv, OTHER, BOB_OTHER, o2.clone()).await;

    assert_eq!(
        quarantine_bulk(&srv, ADMIN, "user/@alice:localhost").await,
        2
    );
    assert_hidden(&srv, &alice1).await;
    assert_hidden(&srv, &alice2).await;
    assert_serves(&srv, &bob1, &b1).await;
    assert_serves(&srv, &other1, &o1).await;
    assert_upload_blocked(&srv, "localhost", &a1).await;
    assert_upload_blocked(&srv, OTHER, &a2).await;
    assert_eq!(
        quarantine_bulk(&srv, ADMIN, "user/@alice:localhost").await,
        0
    );
    assert_eq!(
        quarantine_bulk(&srv, ADMIN, "user/@nobody:localhost").await,
        0
    );

    assert_eq!(
        quarantine_bulk(&srv, SECRET, &format!("server/{OTHER}")).await,
        2
    );
    assert_hidden(&srv, &other1).await;
    assert_hidden(&srv, &other2).await;
    assert_serves(&srv, &bob1, &b1).await;
    assert_upload_blocked(&srv, "localhost", &o2).await;
    assert_eq!(
        quarantine_bulk(&srv, SECRET, &format!("server/{OTHER}")).await,
        0
    );

    expect_error(
        post(&srv, ADMIN, "quarantine/user/not-a-user", None).await,
        StatusCode::BAD_REQUEST,
        "M_INVALID_PARAM",
    )
    .await;

    let (chunk, _) = audit(&srv, ADMIN, "").await;
    assert_eq!(chunk.len(), 2, "{chunk:?}");
    let affected: BTreeSet<&str> = chunk[0]["affected"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(
        affected,
        BTreeSet::from([other1.as_str(), other2.as_str()]),
        "{chunk:?}"
    );
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quarantine_by_room_uses_the_homeserver_listing() {
    let (mut srv, hs) = start_with_synapse(Opts::default()).await;
    let l1 = random_bytes(2_001);
    let l2 = random_bytes(2_002);
    let r1 = random_bytes(2_003);
    let outside = random_bytes(2_004);
    let local1 = upload_ok(&srv, "localhost", ALICE, l1.clone()).await;
    let local2 = upload_ok(&srv, "localhost", ALICE, l2.clone()).await;
    let remote1 = upload_ok(&srv, OTHER, ALICE_OTHER, r1.clone()).await;
    let not_in_room = upload_ok(&srv, "localhost", ALICE, outside.clone()).await;

    // A homeserver admin gets only the room's local media.
    hs.set_room_media("!one:localhost", &[&local1], &[&remote1]);
    assert_eq!(
        quarantine_bulk(&srv, HS_BOB, "room/!one:localhost").await,
        1
    );
    assert_hidden(&srv, &local1).await;
    assert_serves(&srv, &remote1, &r1).await;
    assert!(
        hs.calls()
            .iter()
            .any(|(p, t)| p == "/_synapse/admin/v1/room/!one:localhost/media"
                && t.as_deref() == Some(HS_BOB)),
        "{:?}",
        hs.calls()
    );

    // A repository admin gets local and remote (media not known here are ignored).
    hs.set_room_media(
        "!two:localhost",
        &[&local2],
        &[
            &remote1,
            "mxc://elsewhere.test/BBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB",
        ],
    );
    assert_eq!(
        quarantine_bulk(&srv, HS_ADMIN, "room/!two:localhost").await,
        2
    );
    assert_hidden(&srv, &local2).await;
    assert_hidden(&srv, &remote1).await;
    assert_serves(&srv, &not_in_room, &outside).await;
    assert_eq!(
        quarantine_bulk(&srv, HS_ADMIN, "room/!two:localhost").await,
        0
    );

    // A room the homeserver does not know, and a malformed room id.
    expect_error(
        post(&srv, HS_ADMIN, "quarantine/room/!unknown:localhost", None).await,
        StatusCode::NOT_FOUND,
        "M_NOT_FOUND",
    )
    .await;
    expect_error(
        post(&srv, ADMIN, "quarantine/room/not-a-room", None).await,
        StatusCode::BAD_REQUEST,
        "M_INVALID_PARAM",
    )
    .await;

    let (chunk, _) = audit(&srv, ADMIN, "?kind=quarantine").await;
    assert_eq!(chunk.len(), 2, "{chunk:?}");
    assert_eq!(chunk[1]["actor"], "@bob:localhost");
    assert_eq!(chunk[1]["affected"], json!([local1]));
    srv.stop().await;
}

/// Room version 12 (Synapse 1.163's default) ids have no server part: `!` + the create event's
/// reference hash, 43 url-safe base64 characters. Quarantine and purge by room take them as
/// they take `!opaque:server`, and ask the homeserver's room listing with the id as it is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn room_version_12_ids_quarantine_and_purge() {
    let (mut srv, hs) = start_with_synapse(Opts::default()).await;
    let l1 = random_bytes(2_101);
    let l2 = random_bytes(2_102);
    let local1 = upload_ok(&srv, "localhost", ALICE, l1.clone()).await;
    let local2 = upload_ok(&srv, "localhost", ALICE, l2.clone()).await;
    let v12 = "!cZ4Xg0K8yE_2m-Wq9LhVb7TnRj5aPd3sUfOiYkM1e6w";
    assert_eq!(v12.len(), 44);
    hs.set_room_media(v12, &[&local1], &[]);
    assert_eq!(
        quarantine_bulk(&srv, HS_BOB, &format!("room/{v12}")).await,
        1
    );
    assert_hidden(&srv, &local1).await;
    assert_serves(&srv, &local2, &l2).await;
    assert!(
        hs.calls().iter().any(
            |(p, t)| *p == format!("/_synapse/admin/v1/room/{v12}/media")
                && t.as_deref() == Some(HS_BOB)
        ),
        "{:?}",
        hs.calls()
    );
    let (chunk, _) = audit(&srv, ADMIN, "?kind=quarantine").await;
    assert_eq!(chunk.len(), 1, "{chunk:?}");
    assert_eq!(
        chunk[0]["details"]["target"],
        json!({ "Room": v12 }),
        "{chunk:?}"
    );

    // The purge by room takes the same id (the quarantined media becomes a tombstone).
    hs.set_room_media(v12, &[&local1, &local2], &[]);
    let resp = post(&srv, HS_ADMIN, &format!("purge/room/{v12}"), None).await;
    let v = json_ok(resp).await;
    let affected: BTreeSet<&str> = v["affected"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m.as_str().unwrap())
        .collect();
    assert_eq!(
        affected,
        BTreeSet::from([local1.as_str(), local2.as_str()]),
        "{v}"
    );
    assert_hidden(&srv, &local2).await;

    // Still refused: almost-v12 ids, padded or standard base64, a v12 id with a bad server.
    for bad in [
        &v12[..43],
        &format!("{v12}A"),
        &format!("{v12}="),
        &v12.replace('_', "%2F"),
        "!abc",
        "!:localhost",
    ] {
        for route in ["quarantine/room", "purge/room"] {
            expect_error(
                post(&srv, ADMIN, &format!("{route}/{bad}"), None).await,
                StatusCode::BAD_REQUEST,
                "M_INVALID_PARAM",
            )
            .await;
        }
    }
    srv.stop().await;
}

// ---------------------------------------------------------------------------------------------
// What quarantined media serve
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quarantined_download_is_not_found_and_head_too() {
    let mut srv = start_plain().await;
    let img = png_image(120, 90, 1);
    let mxc = srv
        .upload(ALICE, img.clone(), Some("image/png"), Some("a.png"))
        .await;
    assert_eq!(quarantine_n(&srv, ADMIN, &mxc).await, 1);
    assert_hidden(&srv, &mxc).await;
    let resp = srv
        .client
        .head(srv.url(&format!("/_matrix/media/v3/download/{}", path_of(&mxc))))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);

    // Thumbnails: a placeholder PNG of the requested size (replace_thumbnails defaults on).
    for (w, h, method) in [(64, 48, "scale"), (32, 32, "crop"), (200, 100, "scale")] {
        let resp = thumbnail(&srv, &mxc, w, h, method).await;
        assert_eq!(resp.status(), StatusCode::OK, "{w}x{h}");
        assert_eq!(header(&resp, "content-type"), "image/png");
        let body = resp.bytes().await.unwrap();
        assert_eq!(png_dims(&body), (w, h));
        assert!(body.to_vec() != img, "the original was served");
    }
    let resp = srv
        .client
        .get(srv.url(&format!(
            "/_matrix/client/v1/media/thumbnail/{}?width=40&height=30&method=scale",
            path_of(&mxc)
        )))
        .bearer_auth(ALICE)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(png_dims(&resp.bytes().await.unwrap()), (40, 30));
    let resp = srv
        .client
        .head(srv.url(&format!(
            "/_matrix/media/v3/thumbnail/{}?width=32&height=32",
            path_of(&mxc)
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);

    // No thumbnail was generated from quarantined bytes.
    let usage = json_ok(get(&srv, ADMIN, "usage/localhost").await).await;
    assert_eq!(usage["raw_counts"]["thumbnails"], 0, "{usage}");
    assert_eq!(count_blobs(&srv.media_dir()), 1);
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replace_downloads_serves_a_placeholder_png() {
    let mut srv = TestServer::start_with(Opts {
        extra_toml: "[quarantine]\nreplace_downloads = true\n".into(),
        ..Opts::default()
    })
    .await;
    let bytes = random_bytes(3_000);
    let mxc = srv.upload_bytes(bytes.clone()).await;
    assert_eq!(quarantine_n(&srv, ADMIN, &mxc).await, 1);

    let resp = srv.download(&mxc).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(header(&resp, "content-type"), "image/png");
    let body = resp.bytes().await.unwrap().to_vec();
    assert_eq!(&body[..8], PNG_MAGIC);
    let (w, h) = png_dims(&body);
    assert!(w > 0 && h > 0);
    assert!(body != bytes);
    let resp = srv
        .client
        .get(srv.url(&format!(
            "/_matrix/client/v1/media/download/{}",
            path_of(&mxc)
        )))
        .bearer_auth(ALICE)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(&resp.bytes().await.unwrap()[..8], PNG_MAGIC);

    // HEAD stays 404.
    let resp = srv
        .client
        .head(srv.url(&format!("/_matrix/media/v3/download/{}", path_of(&mxc))))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);

    // Unquarantined, the real bytes again.
    assert_eq!(unquarantine_n(&srv, ADMIN, &mxc).await, 1);
    assert_serves(&srv, &mxc, &bytes).await;
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replace_thumbnails_false_gives_not_found() {
    let mut srv = TestServer::start_with(Opts {
        extra_toml: "[quarantine]\nreplace_thumbnails = false\n".into(),
        ..Opts::default()
    })
    .await;
    let mxc = srv
        .upload(ALICE, png_image(100, 100, 2), Some("image/png"), None)
        .await;
    // A thumbnail generated before the quarantine is hidden too.
    let resp = thumbnail(&srv, &mxc, 32, 32, "crop").await;
    assert_eq!(resp.status(), StatusCode::OK);
    let thumb = image::load_from_memory(&resp.bytes().await.unwrap()).unwrap();
    assert_eq!((thumb.width(), thumb.height()), (32, 32));

    assert_eq!(quarantine_n(&srv, ADMIN, &mxc).await, 1);
    for (w, h, m) in [(32, 32, "crop"), (64, 64, "scale")] {
        expect_error(
            thumbnail(&srv, &mxc, w, h, m).await,
            StatusCode::NOT_FOUND,
            "M_NOT_FOUND",
        )
        .await;
    }
    assert_hidden(&srv, &mxc).await;
    srv.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Unquarantine
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unquarantine_restores_downloads_and_lifts_the_block() {
    let mut srv = start_plain().await;
    let bytes = random_bytes(9_000);
    let local = upload_ok(&srv, "localhost", ALICE, bytes.clone()).await;
    let other = upload_ok(&srv, OTHER, ALICE_OTHER, bytes.clone()).await;
    assert_eq!(quarantine_n(&srv, ADMIN, &other).await, 2);
    assert_upload_blocked(&srv, "localhost", &bytes).await;

    assert_eq!(unquarantine_n(&srv, SECRET, &local).await, 2);
    assert_serves(&srv, &local, &bytes).await;
    assert_serves(&srv, &other, &bytes).await;
    let third = upload_ok(&srv, "localhost", ALICE, bytes.clone()).await;
    let fourth = upload_ok(&srv, OTHER, ALICE_OTHER, bytes.clone()).await;
    assert_serves(&srv, &third, &bytes).await;
    assert_serves(&srv, &fourth, &bytes).await;
    assert_eq!(unquarantine_n(&srv, ADMIN, &local).await, 0);
    assert_eq!(count_blobs(&srv.media_dir()), 1);

    // Quarantine again: all four now.
    assert_eq!(quarantine_n(&srv, ADMIN, &third).await, 4);
    for m in [&local, &other, &third, &fourth] {
        assert_hidden(&srv, m).await;
    }
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn homeserver_admin_cannot_lift_a_repository_quarantine() {
    let (mut srv, _hs) = start_with_synapse(Opts::default()).await;
    let bytes = random_bytes(700);
    let mxc = upload_ok(&srv, "localhost", ALICE, bytes.clone()).await;
    // Both scopes block the hash; only the repository admin can lift it all.
    assert_eq!(quarantine_n(&srv, ADMIN, &mxc).await, 1);
    assert_eq!(quarantine_n(&srv, BOB, &mxc).await, 0);
    let resp = unquarantine(&srv, BOB, &mxc).await;
    let v = expect_error(resp, StatusCode::FORBIDDEN, "M_FORBIDDEN").await;
    assert!(!v["error"].as_str().unwrap().is_empty());
    assert_hidden(&srv, &mxc).await;
    assert_upload_blocked(&srv, "localhost", &bytes).await;
    assert_upload_blocked(&srv, OTHER, &bytes).await;
    let (chunk, _) = audit(&srv, ADMIN, "?kind=unquarantine").await;
    assert!(chunk.is_empty(), "{chunk:?}");

    assert_eq!(unquarantine_n(&srv, ADMIN, &mxc).await, 1);
    assert_serves(&srv, &mxc, &bytes).await;
    upload_ok(&srv, "localhost", ALICE, bytes.clone()).await;
    upload_ok(&srv, OTHER, ALICE_OTHER, bytes).await;

    // A repository admin also lifts a homeserver admin's quarantine.
    let bytes = random_bytes(701);
    let mxc = upload_ok(&srv, "localhost", ALICE, bytes.clone()).await;
    assert_eq!(quarantine_n(&srv, BOB, &mxc).await, 1);
    assert_upload_blocked(&srv, "localhost", &bytes).await;
    assert_eq!(unquarantine_n(&srv, ADMIN, &mxc).await, 1);
    assert_serves(&srv, &mxc, &bytes).await;
    upload_ok(&srv, "localhost", ALICE, bytes).await;
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_upload_of_quarantined_bytes_is_refused() {
    let mut srv = start_plain().await;
    let bytes = random_bytes(6_000);
    let first = srv.upload_bytes(bytes.clone()).await;
    assert_eq!(quarantine_n(&srv, ADMIN, &first).await, 1);

    let create = |host: &'static str| {
        srv.client
            .post(srv.url("/_matrix/media/v1/create"))
            .header(reqwest::header::HOST, host)
            .bearer_auth(alice_on(host))
            .send()
    };
    let put = |mxc: String, body: Vec<u8>| {
        let host = parse_mxc(&mxc).0;
        srv.client
            .put(srv.url(&format!("/_matrix/media/v3/upload/{}", path_of(&mxc))))
            .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
            .header(reqwest::header::HOST, &host)
            .bearer_auth(alice_on(&host))
            .body(body)
            .send()
    };
    for host in ["localhost", OTHER] {
        let v = json_ok(create(host).await.unwrap()).await;
        let mxc = v["content_uri"].as_str().unwrap().to_owned();
        let blobs = count_blobs(&srv.media_dir());
        let resp = put(mxc.clone(), bytes.clone()).await.unwrap();
        expect_error(resp, StatusCode::FORBIDDEN, "M_FORBIDDEN").await;
        assert_eq!(count_blobs(&srv.media_dir()), blobs);
        assert_eq!(spool_entries(&srv.media_dir()), 0);
        // The reservation is still open for other bytes.
        let other = random_bytes(50);
        let resp = put(mxc.clone(), other.clone()).await.unwrap();
        assert_eq!(
            resp.status(),
            StatusCode::OK,
            "{}",
            resp.text().await.unwrap()
        );
        assert_serves(&srv, &mxc, &other).await;
    }
    srv.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Reasons, audit, history
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reasons_are_recorded_from_query_and_body() {
    let mut srv = start_plain().await;
    let m1 = srv.upload_bytes(random_bytes(10)).await;
    let m2 = srv.upload_bytes(random_bytes(11)).await;
    let m3 = srv.upload_bytes(random_bytes(12)).await;
    let m4 = srv.upload_bytes(random_bytes(13)).await;

    let v = json_ok(
        post(
            &srv,
            ADMIN,
            &format!("quarantine/{}?reason=spam%20wave", path_of(&m1)),
            None,
        )
        .await,
    )
    .await;
    assert_eq!(v["num_quarantined"], 1);
    let v = json_ok(
        post(
            &srv,
            ADMIN,
            &format!("quarantine/{}", path_of(&m2)),
            Some(json!({"reason": "reported by @carol:localhost"})),
        )
        .await,
    )
    .await;
    assert_eq!(v["num_quarantined"], 1);
    // The query wins over the body.
    json_ok(
        post(
            &srv,
            ADMIN,
            &format!("quarantine/{}?reason=from-query", path_of(&m3)),
            Some(json!({"reason": "from-body"})),
        )
        .await,
    )
    .await;
    json_ok(
        post(
            &srv,
            SECRET,
            &format!("unquarantine/{}", path_of(&m1)),
            Some(json!({"reason": "false positive"})),
        )
        .await,
    )
    .await;
    json_ok(
        post(
            &srv,
            ADMIN,
            &format!("media/{}/attributes?reason=keep", path_of(&m4)),
            Some(json!({"purpose": "pinned"})),
        )
        .await,
    )
    .await;
    // A body that is not JSON, or a reason that is not a string: refused, nothing recorded.
    let resp = srv
        .client
        .post(srv.url(&format!("{API}/quarantine/{}", path_of(&m4))))
        .bearer_auth(ADMIN)
        .body("why not")
        .send()
        .await
        .unwrap();
    expect_error(resp, StatusCode::BAD_REQUEST, "M_NOT_JSON").await;
    let resp = post(
        &srv,
        ADMIN,
        &format!("quarantine/{}", path_of(&m4)),
        Some(json!({"reason": 5})),
    )
    .await;
    expect_error(resp, StatusCode::BAD_REQUEST, "M_INVALID_PARAM").await;
    let resp = post(
        &srv,
        ADMIN,
        &format!("quarantine/{}", path_of(&m4)),
        Some(json!({"reason": "x".repeat(1001)})),
    )
    .await;
    expect_error(resp, StatusCode::BAD_REQUEST, "M_INVALID_PARAM").await;

    let (chunk, _) = audit(&srv, ADMIN, "").await;
    let got: Vec<(String, String, Value, Value)> = chunk
        .iter()
        .map(|e| {
            (
                e["kind"].as_str().unwrap().to_owned(),
                e["actor"].as_str().unwrap().to_owned(),
                e["reason"].clone(),
                e["affected"].clone(),
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            (
                "attributes".into(),
                "@admin:localhost".into(),
                json!("keep"),
                json!([m4])
            ),
            (
                "unquarantine".into(),
                "shared-secret-admin".into(),
                json!("false positive"),
                json!([m1])
            ),
            (
                "quarantine".into(),
                "@admin:localhost".into(),
                json!("from-query"),
                json!([m3])
            ),
            (
                "quarantine".into(),
                "@admin:localhost".into(),
                json!("reported by @carol:localhost"),
                json!([m2])
            ),
            (
                "quarantine".into(),
                "@admin:localhost".into(),
                json!("spam wave"),
                json!([m1])
            ),
        ]
    );
    assert_hidden(&srv, &m2).await;
    assert_eq!(srv.download(&m4).await.status(), StatusCode::OK);
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_filters_and_pagination() {
    let (mut srv, _hs) = start_with_synapse(Opts::default()).await;
    let m1 = upload_ok(&srv, "localhost", ALICE, random_bytes(101)).await;
    let m2 = upload_ok(&srv, OTHER, ALICE_OTHER, random_bytes(102)).await;
    let m3 = upload_ok(&srv, "localhost", ALICE, random_bytes(103)).await;
    let m4 = upload_ok(&srv, "localhost", BOB, random_bytes(104)).await;
    let m5 = upload_ok(&srv, OTHER, ALICE_OTHER, random_bytes(105)).await;
    let pause = || tokio::time::sleep(Duration::from_millis(25));

    // Seven acts, with distinct timestamps.
    assert_eq!(quarantine_n(&srv, ADMIN, &m1).await, 1); // 1 quarantine  admin  localhost
    pause().await;
    assert_eq!(quarantine_n(&srv, SECRET, &m2).await, 1); // 2 quarantine  secret other
    pause().await;
    assert_eq!(unquarantine_n(&srv, ADMIN, &m1).await, 1); // 3 unquarantine admin localhost
    pause().await;
    let attr = format!("media/{}/attributes", path_of(&m3));
    json_ok(post(&srv, ADMIN, &attr, Some(json!({"purpose": "pinned"}))).await).await; // 4
    pause().await;
    assert_eq!(quarantine_n(&srv, BOB, &m4).await, 1); // 5 quarantine  bob    localhost
    pause().await;
    let v = json_ok(post(&srv, SECRET, &format!("purge/{}", path_of(&m5)), None).await).await; // 6
    assert_eq!(v["affected"], json!([m5]), "{v}");
    pause().await;
    json_ok(post(&srv, BOB, &attr, Some(json!({"purpose": "none"}))).await).await; // 7

    let (all, next) = audit(&srv, ADMIN, "").await;
    assert!(next.is_none());
    assert_eq!(all.len(), 7, "{all:?}");
    let s = seqs(&all);
    assert!(s.windows(2).all(|w| w[0] > w[1]), "not newest first: {s:?}");
    let kinds: Vec<&str> = all.iter().map(|e| e["kind"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        [
            "attributes",
            "purge",
            "quarantine",
            "attributes",
            "unquarantine",
            "quarantine",
            "quarantine"
        ]
    );
    let actors: Vec<&str> = all.iter().map(|e| e["actor"].as_str().unwrap()).collect();
    assert_eq!(
        actors,
        [
            "@bob:localhost",
            "shared-secret-admin",
            "@bob:localhost",
            "@admin:localhost",
            "@admin:localhost",
            "shared-secret-admin",
            "@admin:localhost"
        ]
    );
    let types: Vec<&str> = all.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(
        types,
        [
            "media.attributes_set.v1",
            "media.purged.v1",
            "media.quarantined.v1",
            "media.attributes_set.v1",
            "media.unquarantined.v1",
            "media.quarantined.v1",
            "media.quarantined.v1"
        ]
    );
    let ts: Vec<u64> = all.iter().map(|e| e["ts"].as_u64().unwrap()).collect();
    assert!(ts.windows(2).all(|w| w[0] > w[1]), "timestamps: {ts:?}");
    for e in &all {
        assert!(!e["request_id"].as_str().unwrap().is_empty(), "{e}");
        assert!(e["details"].is_object(), "{e}");
    }
    assert_eq!(all[1]["affected"], json!([m5]));
    assert_eq!(all[6]["affected"], json!([m1]));

    let check = |query: &'static str, want: Vec<u64>| {
        let srv = &srv;
        async move {
            let (chunk, next) = audit(srv, ADMIN, query).await;
            assert!(next.is_none(), "{query}");
            assert_eq!(seqs(&chunk), want, "{query}");
        }
    };
    check("?kind=quarantine", vec![s[2], s[5], s[6]]).await;
    check("?kind=unquarantine", vec![s[4]]).await;
    check("?kind=attributes", vec![s[0], s[3]]).await;
    check("?kind=purge", vec![s[1]]).await;
    check("?actor=@bob:localhost", vec![s[0], s[2]]).await;
    check("?actor=shared-secret-admin", vec![s[1], s[5]]).await;
    check("?server=other.test", vec![s[1], s[5]]).await;
    check("?server=localhost", vec![s[0], s[2], s[3], s[4], s[6]]).await;
    check("?kind=quarantine&actor=@admin:localhost", vec![s[6]]).await;
    check("?from=0", vec![]).await;

    // Time windows, both bounds inclusive.
    let (chunk, _) = audit(
        &srv,
        ADMIN,
        &format!("?since_ts={}&until_ts={}", ts[4], ts[2]),
    )
    .await;
    assert_eq!(seqs(&chunk), vec![s[2], s[3], s[4]]);
    let (chunk, _) = audit(&srv, ADMIN, &format!("?since_ts={}", ts[1])).await;
    assert_eq!(seqs(&chunk), vec![s[0], s[1]]);
    let (chunk, _) = audit(&srv, ADMIN, &format!("?until_ts={}", ts[5])).await;
    assert_eq!(seqs(&chunk), vec![s[5], s[6]]);
    let (chunk, _) = audit(&srv, ADMIN, &format!("?since_ts={}", ts[0] + 1)).await;
    assert!(chunk.is_empty());

    // Pagination: every entry exactly once, in order, whatever the page size.
    for limit in [1usize, 2, 3, 6, 7] {
        let mut got = Vec::new();
        let mut from: Option<String> = None;
        let mut pages = 0;
        loop {
            let q = match &from {
                Some(f) => format!("?limit={limit}&from={f}"),
                None => format!("?limit={limit}"),
            };
            let (chunk, next) = audit(&srv, ADMIN, &q).await;
            assert!(chunk.len() <= limit);
            got.extend(seqs(&chunk));
            pages += 1;
            assert!(pages <= 8, "pagination does not end");
            match next {
                Some(n) => from = Some(n),
                None => break,
            }
        }
        assert_eq!(got, s, "limit {limit}");
        assert_eq!(pages, 7usize.div_ceil(limit), "limit {limit}");
    }
    // Pagination with a filter.
    let (chunk, next) = audit(&srv, ADMIN, "?kind=quarantine&limit=2").await;
    assert_eq!(seqs(&chunk), vec![s[2], s[5]]);
    let (chunk, next) = audit(
        &srv,
        ADMIN,
        &format!("?kind=quarantine&limit=2&from={}", next.unwrap()),
    )
    .await;
    assert_eq!(seqs(&chunk), vec![s[6]]);
    assert!(next.is_none());

    // A homeserver admin sees the acts that touched its server.
    let (chunk, _) = audit(&srv, BOB, "").await;
    assert_eq!(seqs(&chunk), vec![s[0], s[2], s[3], s[4], s[6]]);
    let (chunk, _) = audit(&srv, BOB, "?server=other.test").await;
    assert!(chunk.is_empty(), "{chunk:?}");

    // Refusals.
    expect_error(
        get(&srv, ALICE, "audit").await,
        StatusCode::FORBIDDEN,
        "M_FORBIDDEN",
    )
    .await;
    expect_error(
        get(&srv, ADMIN, "audit?kind=delete").await,
        StatusCode::BAD_REQUEST,
        "M_INVALID_PARAM",
    )
    .await;
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_shows_upload_acts_and_accesses() {
    let mut srv = TestServer::start_with(Opts {
        downloads_extra: "access_record_interval_ms = 0".into(),
        ..Opts::default()
    })
    .await;
    let bytes = random_bytes(2_500);
    let mxc = srv
        .upload(ALICE, bytes.clone(), Some("text/plain"), Some("notes.txt"))
        .await;
    let h = history(&srv, &mxc).await;
    assert_eq!(h["media"], mxc);
    assert_eq!(h["state"]["exists"], true);
    assert_eq!(h["state"]["tombstone"], false);
    assert_eq!(h["state"]["quarantined"], false);
    assert_eq!(h["state"]["purpose"], "none");
    assert_eq!(h["state"]["sha256"], sha256_hex(&bytes));
    assert_eq!(h["state"]["access_count"], 0);
    let events = h["events"].as_array().unwrap();
    assert_eq!(events.len(), 1, "{h}");
    assert_eq!(events[0]["type"], "media.uploaded.v1");
    assert_eq!(events[0]["actor"], "@alice:localhost");

    // Two downloads: two accesses (recorded asynchronously).
    assert_serves(&srv, &mxc, &bytes).await;
    assert_serves(&srv, &mxc, &bytes).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    let h = loop {
        let h = history(&srv, &mxc).await;
        if h["state"]["access_count"] == 2 || Instant::now() > deadline {
            break h;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(h["state"]["access_count"], 2, "{h}");
    assert!(h["state"]["last_access_ts"].as_u64().unwrap() > 0, "{h}");

    let resp = post(
        &srv,
        ADMIN,
        &format!("quarantine/{}?reason=illegal", path_of(&mxc)),
        None,
    )
    .await;
    json_ok(resp).await;
    let resp = post(
        &srv,
        SECRET,
        &format!("unquarantine/{}", path_of(&mxc)),
        Some(json!({"reason": "appeal granted"})),
    )
    .await;
    assert_eq!(json_ok(resp).await["num_unquarantined"], 1);

    let h = history(&srv, &mxc).await;
    let events = h["events"].as_array().unwrap();
    let summary: Vec<(&str, &str, Value)> = events
        .iter()
        .map(|e| {
            (
                e["type"].as_str().unwrap(),
                e["actor"].as_str().unwrap(),
                e["reason"].clone(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            ("media.uploaded.v1", "@alice:localhost", Value::Null),
            ("media.quarantined.v1", "@admin:localhost", json!("illegal")),
            (
                "media.unquarantined.v1",
                "shared-secret-admin",
                json!("appeal granted")
            ),
        ],
        "{h}"
    );
    let s = seqs(events);
    assert!(s.windows(2).all(|w| w[0] < w[1]), "oldest first: {s:?}");
    assert_eq!(events[1]["affected"], json!([mxc]));
    assert_eq!(h["state"]["quarantined"], false);
    assert_eq!(h["state"]["access_count"], 2, "{h}");

    // Unknown media: 404.
    expect_error(
        get(
            &srv,
            ADMIN,
            "media/localhost/AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA/history",
        )
        .await,
        StatusCode::NOT_FOUND,
        "M_NOT_FOUND",
    )
    .await;
    srv.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Usage
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_figures_per_server_user_and_upload() {
    let mut srv = start_plain().await;
    let img = png_image(200, 160, 7);
    let raw = random_bytes(3_333);
    let pic = srv
        .upload(ALICE, img.clone(), Some("image/png"), Some("pic.png"))
        .await;
    let raw1 = upload_ok(&srv, "localhost", ALICE, raw.clone()).await;
    // The same bytes again: rows are counted with duplicates.
    let raw2 = upload_ok(&srv, "localhost", BOB, raw.clone()).await;
    let other = upload_ok(&srv, OTHER, ALICE_OTHER, random_bytes(999)).await;

    let resp = thumbnail(&srv, &pic, 32, 32, "crop").await;
    assert_eq!(resp.status(), StatusCode::OK);
    let thumb_len = resp.bytes().await.unwrap().len() as u64;
    assert!(thumb_len > 0);
    let media_bytes = (img.len() + 2 * raw.len()) as u64;

    let v = json_ok(get(&srv, ADMIN, "usage/localhost").await).await;
    assert_eq!(
        v,
        json!({
            "raw_bytes": {"total": media_bytes + thumb_len, "media": media_bytes, "thumbnails": thumb_len},
            "raw_counts": {"total": 4, "media": 3, "thumbnails": 1},
        })
    );
    let v = json_ok(get(&srv, SECRET, &format!("usage/{OTHER}")).await).await;
    assert_eq!(v["raw_bytes"]["media"], 999, "{v}");
    assert_eq!(
        v["raw_counts"],
        json!({"total": 1, "media": 1, "thumbnails": 0})
    );
    let v = json_ok(get(&srv, ADMIN, "usage/nowhere.test").await).await;
    assert_eq!(v["raw_counts"]["total"], 0, "{v}");

    // Per user.
    let v = json_ok(get(&srv, ADMIN, "usage/localhost/users").await).await;
    let users: BTreeSet<&String> = v.as_object().unwrap().keys().collect();
    assert_eq!(
        users,
        BTreeSet::from([&"@alice:localhost".to_owned(), &"@bob:localhost".to_owned()])
    );
    let alice_bytes = (img.len() + raw.len()) as u64;
    let alice = &v["@alice:localhost"];
    assert_eq!(
        alice["raw_bytes"],
        json!({"total": alice_bytes, "media": alice_bytes})
    );
    assert_eq!(alice["raw_counts"], json!({"total": 2, "media": 2}));
    let uploaded: BTreeSet<&str> = alice["uploaded"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u.as_str().unwrap())
        .collect();
    assert_eq!(uploaded, BTreeSet::from([pic.as_str(), raw1.as_str()]));
    let v = json_ok(get(&srv, ADMIN, "usage/localhost/users?user_id=@bob:localhost").await).await;
    assert_eq!(
        v,
        json!({"@bob:localhost": {
            "raw_bytes": {"total": raw.len(), "media": raw.len()},
            "raw_counts": {"total": 1, "media": 1},
            "uploaded": [raw2],
        }})
    );

    // Per upload.
    let v = json_ok(get(&srv, ADMIN, "usage/localhost/uploads").await).await;
    let keys: BTreeSet<&String> = v.as_object().unwrap().keys().collect();
    assert_eq!(keys, BTreeSet::from([&pic, &raw1, &raw2]));
    let p = &v[&pic];
    assert_eq!(p["size_bytes"], img.len());
    assert_eq!(p["uploaded_by"], "@alice:localhost");
    assert_eq!(p["datastore_id"], DS);
    assert!(
        p["datastore_location"]
            .as_str()
            .is_some_and(|l| !l.is_empty()),
        "{p}"
    );
    assert_eq!(p["sha256_hash"], sha256_hex(&img));
    assert_eq!(p["quarantined"], false);
    assert_eq!(p["upload_name"], "pic.png");
    assert_eq!(p["content_type"], "image/png");
    assert!(p["created_ts"].as_u64().unwrap() > 1_600_000_000_000, "{p}");
    assert_eq!(
        v[&raw1]["datastore_location"],
        v[&raw2]["datastore_location"]
    );
    assert_eq!(v[&raw2]["uploaded_by"], "@bob:localhost");

    let resp = srv
        .client
        .get(srv.url(&format!("{API}/usage/localhost/uploads")))
        .query(&[("mxc", raw1.as_str()), ("mxc", pic.as_str())])
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    let v = json_ok(resp).await;
    let keys: BTreeSet<&String> = v.as_object().unwrap().keys().collect();
    assert_eq!(keys, BTreeSet::from([&pic, &raw1]));
    let resp = srv
        .client
        .get(srv.url(&format!("{API}/usage/localhost/uploads")))
        .query(&[("mxc", other.as_str())])
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    expect_error(resp, StatusCode::BAD_REQUEST, "M_INVALID_PARAM").await;

    // Quarantine shows in the listing.
    assert_eq!(quarantine_n(&srv, ADMIN, &raw1).await, 2);
    let resp = srv
        .client
        .get(srv.url(&format!("{API}/usage/localhost/uploads")))
        .query(&[("mxc", raw2.as_str())])
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(json_ok(resp).await[&raw2]["quarantined"], true);
    srv.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Restart
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_keeps_quarantines_and_blocks() {
    let (mut srv, _hs) = start_with_synapse(Opts::default()).await;
    let repo_bytes = random_bytes(1_111);
    let hs_bytes = random_bytes(2_222);
    let pinned_bytes = random_bytes(3_333);
    let repo_local = upload_ok(&srv, "localhost", ALICE, repo_bytes.clone()).await;
    let repo_other = upload_ok(&srv, OTHER, ALICE_OTHER, repo_bytes.clone()).await;
    let hs_local = upload_ok(&srv, "localhost", ALICE, hs_bytes.clone()).await;
    let hs_other = upload_ok(&srv, OTHER, ALICE_OTHER, hs_bytes.clone()).await;
    let pinned = upload_ok(&srv, "localhost", ALICE, pinned_bytes.clone()).await;

    assert_eq!(quarantine_n(&srv, ADMIN, &repo_local).await, 2);
    assert_eq!(quarantine_n(&srv, BOB, &hs_local).await, 1);
    json_ok(
        post(
            &srv,
            ADMIN,
            &format!("media/{}/attributes", path_of(&pinned)),
            Some(json!({"purpose": "pinned"})),
        )
        .await,
    )
    .await;
    let (before, _) = audit(&srv, ADMIN, "").await;

    srv.restart().await;

    assert_hidden(&srv, &repo_local).await;
    assert_hidden(&srv, &repo_other).await;
    assert_hidden(&srv, &hs_local).await;
    assert_serves(&srv, &hs_other, &hs_bytes).await;
    assert_serves(&srv, &pinned, &pinned_bytes).await;
    assert_upload_blocked(&srv, "localhost", &repo_bytes).await;
    assert_upload_blocked(&srv, OTHER, &repo_bytes).await;
    assert_upload_blocked(&srv, "localhost", &hs_bytes).await;
    upload_ok(&srv, OTHER, ALICE_OTHER, hs_bytes.clone()).await;
    let v = json_ok(
        get(
            &srv,
            ADMIN,
            &format!("media/{}/attributes", path_of(&pinned)),
        )
        .await,
    )
    .await;
    assert_eq!(v, json!({"purpose": "pinned"}));
    assert_eq!(quarantine_n(&srv, ADMIN, &pinned).await, 0);
    let (after, _) = audit(&srv, ADMIN, "").await;
    // The same entries (plus the quarantine of the pinned media, which only blocks its hash).
    assert_eq!(&after[after.len() - before.len()..], &before[..]);
    expect_error(
        unquarantine(&srv, BOB, &repo_local).await,
        StatusCode::FORBIDDEN,
        "M_FORBIDDEN",
    )
    .await;

    // Lifting still works after the restart, and survives another.
    assert_eq!(unquarantine_n(&srv, ADMIN, &repo_other).await, 2);
    srv.restart().await;
    assert_serves(&srv, &repo_local, &repo_bytes).await;
    assert_serves(&srv, &repo_other, &repo_bytes).await;
    upload_ok(&srv, "localhost", ALICE, repo_bytes).await;
    srv.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Remote media
// ---------------------------------------------------------------------------------------------

/// A free loopback port (bound on 127.0.0.1:0, then released).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn federated(name: &str, peer: &str, peer_url: &str, bind: Option<String>) -> Opts {
    Opts {
        homeservers: Some(format!(
            "[[homeservers]]\nname = \"{name}\"\ndefault = true\n"
        )),
        bind,
        extra_toml: format!(
            "[federation]\nsigning_key_path = {{dir:signing.key}}\npins = {{ {peer:?} = {peer_url:?} }}\n"
        ),
        ..Opts::default()
    }
}

/// `GET /_matrix/client/v1/media/download/{server}/{id}` as alice.
async fn authed_download(srv: &TestServer, mxc: &str) -> Response {
    srv.client
        .get(srv.url(&format!(
            "/_matrix/client/v1/media/download/{}",
            path_of(mxc)
        )))
        .bearer_auth(ALICE)
        .send()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_fetch_of_quarantined_bytes_is_refused() {
    // B ("b.test") holds the media; A ("a.test") fetches it over federation.
    let a_port = free_port();
    let mut b = TestServer::start_with(federated(
        "b.test",
        "a.test",
        &format!("http://127.0.0.1:{a_port}"),
        None,
    ))
    .await;
    let mut a = TestServer::start_with(federated(
        "a.test",
        "b.test",
        &b.base.clone(),
        Some(format!("127.0.0.1:{a_port}")),
    ))
    .await;

    let bad = random_bytes(40_000);
    let fine = random_bytes(41_000);
    let cached = random_bytes(42_000);
    let remote_bad = b.upload_bytes(bad.clone()).await;
    let remote_fine = b.upload_bytes(fine.clone()).await;
    let remote_cached = b.upload_bytes(cached.clone()).await;
    assert!(remote_bad.starts_with("mxc://b.test/"), "{remote_bad}");

    // A quarantines the bad bytes repository-wide through a local copy.
    let local_bad = a.upload_bytes(bad.clone()).await;
    assert_eq!(quarantine_n(&a, ADMIN, &local_bad).await, 1);
    let blobs = count_blobs(&a.media_dir());

    // Fetching them from B is refused, nothing is cached; other bytes are fetched.
    let resp = authed_download(&a, &remote_bad).await;
    expect_error(resp, StatusCode::FORBIDDEN, "M_FORBIDDEN").await;
    assert_eq!(count_blobs(&a.media_dir()), blobs);
    assert_eq!(spool_entries(&a.media_dir()), 0);
    let resp = authed_download(&a, &remote_bad).await;
    expect_error(resp, StatusCode::FORBIDDEN, "M_FORBIDDEN").await;
    let resp = authed_download(&a, &remote_fine).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(resp.bytes().await.unwrap().to_vec() == fine);

    // Remote media already cached is quarantined with its hash; B still serves its own.
    let resp = authed_download(&a, &remote_cached).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(quarantine_n(&a, ADMIN, &remote_cached).await, 1);
    assert_hidden(&a, &remote_cached).await;
    assert_upload_blocked(&a, "a.test", &cached).await;
    assert_serves(&b, &remote_cached, &cached).await;
    assert_serves(&b, &remote_bad, &bad).await;

    // Lifted: the fetch succeeds.
    assert_eq!(unquarantine_n(&a, ADMIN, &local_bad).await, 1);
    let resp = authed_download(&a, &remote_bad).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(resp.bytes().await.unwrap().to_vec() == bad);
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn homeserver_block_does_not_refuse_remote_fetches() {
    // A's homeserver a.test asks a fake Synapse, where carol is an admin of a.test.
    let hs = FakeSynapse::start(&[("carol-token", "@carol:a.test")]).await;
    let a_port = free_port();
    let mut b = TestServer::start_with(federated(
        "b.test",
        "a.test",
        &format!("http://127.0.0.1:{a_port}"),
        None,
    ))
    .await;
    let mut a_opts = federated(
        "a.test",
        "b.test",
        &b.base.clone(),
        Some(format!("127.0.0.1:{a_port}")),
    );
    a_opts.homeservers = Some(format!(
        "[[homeservers]]\nname = \"a.test\"\ndefault = true\ncs_api = \"{}\"\n",
        hs.url
    ));
    let mut a = TestServer::start_with(a_opts).await;

    let bytes = random_bytes(30_000);
    let remote = b.upload_bytes(bytes.clone()).await;
    let local = a.upload_bytes(bytes.clone()).await;
    assert_eq!(quarantine_n(&a, "carol-token", &local).await, 1);
    assert_hidden(&a, &local).await;
    assert_upload_blocked(&a, "a.test", &bytes).await;

    // The block covers uploads to a.test only: b.test's media with these bytes is fetched.
    let resp = authed_download(&a, &remote).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(resp.bytes().await.unwrap().to_vec() == bytes);
    // Carol cannot quarantine b.test's copy.
    expect_error(
        quarantine(&a, "carol-token", &remote).await,
        StatusCode::FORBIDDEN,
        "M_FORBIDDEN",
    )
    .await;
    // A repository admin can; then the remote copy is hidden too.
    assert_eq!(quarantine_n(&a, ADMIN, &remote).await, 1);
    assert_hidden(&a, &remote).await;
    assert_serves(&b, &remote, &bytes).await;
    a.stop().await;
    b.stop().await;
}
