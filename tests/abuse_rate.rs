//! Rate limits (`[rate_limits]`, issue #14) over real HTTP: the per-user upload bucket (burst,
//! 429 `M_LIMIT_EXCEEDED` with `retry_after_ms` and `Retry-After`, the refused body drained,
//! recovery after the advertised wait, a bucket per user, `PUT /upload` in the same class),
//! admins, the shared secret and `exempt_users` never limited; `/create` with a bucket of its
//! own; downloads and thumbnails (legacy and `/_matrix/client/v1`) in one class; the leaky
//! download byte bucket (capacity, overflow, the wait, a download larger than the whole bucket
//! once it is empty, `HEAD` not charged, the per-address byte bucket); address buckets shared
//! between users, `X-Forwarded-For` believed only from `server.trusted_proxies`, IPv6 by its
//! /64, `exempt_addresses`; `enabled = false`; the bucket per requesting server of signed
//! federation media requests. The bound on tracked keys is unit-tested in `src/abuse/rate.rs`.
//!
//! Timing: buckets regain 1–2 tokens a second, so a refusal is asserted only right after the
//! burst (well inside the time one token takes to come back), and every wait is the server's
//! `retry_after_ms` plus a margin.

use crate::common;

use common::{
    expect_error, header, parse_mxc, random_bytes, Opts, TestServer, ADMIN, ALICE, BOB, SECRET,
};
use media_ledger::federation::keys::SigningKey;
use media_ledger::federation::xmatrix;
use reqwest::{Method, RequestBuilder, Response, StatusCode};
use serde_json::Value;
use std::time::Duration;

/// A class with both buckets off.
const OFF: &str =
    "{ user = { per_second = 0.0, burst = 0 }, address = { per_second = 0.0, burst = 0 } }";

/// A class limited per user only.
fn per_user(per_second: f64, burst: u32) -> String {
    format!(
        "{{ user = {{ per_second = {per_second:.1}, burst = {burst} }}, address = {{ per_second = 0.0, burst = 0 }} }}"
    )
}

/// A class limited per client address only.
fn per_address(per_second: f64, burst: u32) -> String {
    format!(
        "{{ user = {{ per_second = 0.0, burst = 0 }}, address = {{ per_second = {per_second:.1}, burst = {burst} }} }}"
    )
}

/// Starts a server with `[rate_limits]` holding `body`, and `server_extra` in `[server]`.
async fn start(body: &str, server_extra: &str) -> TestServer {
    TestServer::start_with(Opts {
        rate_limits: format!("[rate_limits]\n{body}\n"),
        server_extra: server_extra.to_owned(),
        ..Opts::default()
    })
    .await
}

const TRUST_LOOPBACK: &str = "trusted_proxies = [\"127.0.0.1\"]";

/// A request as `token` (none: anonymous), with `X-Forwarded-For: xff` when given.
fn request(
    srv: &TestServer,
    method: Method,
    path: &str,
    token: Option<&str>,
    xff: Option<&str>,
) -> RequestBuilder {
    let mut req = srv.client.request(method, srv.url(path));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(x) = xff {
        req = req.header("x-forwarded-for", x);
    }
    req
}

/// `POST /_matrix/media/v3/upload` of `len` random bytes as `token` from `xff`.
async fn upload_from(srv: &TestServer, token: &str, xff: Option<&str>, len: usize) -> Response {
    request(
        srv,
        Method::POST,
        "/_matrix/media/v3/upload",
        Some(token),
        xff,
    )
    .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
    .body(random_bytes(len))
    .send()
    .await
    .unwrap()
}

/// Asserts an upload of `token` from `xff` passes.
async fn upload_ok(srv: &TestServer, token: &str, xff: Option<&str>, what: &str) {
    let resp = upload_from(srv, token, xff, 100).await;
    let status = resp.status();
    let text = resp.text().await.unwrap();
    assert_eq!(status, StatusCode::OK, "{what}: {text}");
}

/// `POST /_matrix/media/v1/create` as `token`.
async fn create(srv: &TestServer, token: &str) -> Response {
    request(
        srv,
        Method::POST,
        "/_matrix/media/v1/create",
        Some(token),
        None,
    )
    .send()
    .await
    .unwrap()
}

/// Asserts a `/create` of `token` passes; returns the `content_uri`.
async fn create_ok(srv: &TestServer, token: &str, what: &str) -> String {
    let resp = create(srv, token).await;
    let status = resp.status();
    let text = resp.text().await.unwrap();
    assert_eq!(status, StatusCode::OK, "{what}: {text}");
    let v: Value = serde_json::from_str(&text).unwrap();
    v["content_uri"].as_str().expect("content_uri").to_owned()
}

/// `PUT /_matrix/media/v3/upload/{server}/{id}` of `bytes` as `token`.
async fn put(srv: &TestServer, token: &str, mxc: &str, bytes: Vec<u8>) -> Response {
    let (server, id) = parse_mxc(mxc);
    request(
        srv,
        Method::PUT,
        &format!("/_matrix/media/v3/upload/{server}/{id}"),
        Some(token),
        None,
    )
    .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
    .body(bytes)
    .send()
    .await
    .unwrap()
}

/// Asserts `resp` is a rate limit refusal: 429 `M_LIMIT_EXCEEDED`, `retry_after_ms` in
/// `1..=max_ms`, and `Retry-After` its seconds rounded up. Returns `retry_after_ms`.
async fn limited(resp: Response, max_ms: u64, what: &str) -> u64 {
    let retry_after = resp
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .map(|v| v.to_str().unwrap().to_owned());
    let body = expect_error(resp, StatusCode::TOO_MANY_REQUESTS, "M_LIMIT_EXCEEDED").await;
    let ms = body["retry_after_ms"]
        .as_u64()
        .unwrap_or_else(|| panic!("{what}: no retry_after_ms: {body}"));
    assert!(
        (1..=max_ms).contains(&ms),
        "{what}: retry_after_ms {ms} not in 1..={max_ms}"
    );
    let secs: u64 = retry_after
        .unwrap_or_else(|| panic!("{what}: no Retry-After header"))
        .parse()
        .unwrap_or_else(|e| panic!("{what}: Retry-After is not a number of seconds: {e}"));
    assert_eq!(
        secs,
        ms.div_ceil(1000).max(1),
        "{what}: Retry-After of {ms} ms"
    );
    ms
}

/// Sleeps the advertised `retry_after_ms` plus a margin.
async fn wait_out(retry_after_ms: u64) {
    tokio::time::sleep(Duration::from_millis(retry_after_ms + 250)).await;
}

/// A PNG of `w`×`h` pixels.
fn png(w: u32, h: u32) -> Vec<u8> {
    let img = image::RgbImage::from_fn(w, h, |x, y| {
        image::Rgb([(x * 4) as u8, (y * 4) as u8, ((x + y) * 2) as u8])
    });
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

// ---------------------------------------------------------------------------------------------
// Uploads and /create
// ---------------------------------------------------------------------------------------------

/// A user's uploads (POST and async PUT) pass up to the burst, then 429 with the wait; the
/// refused body is drained (the client reads the 429); another user, admins and the shared
/// secret are unaffected; after the advertised wait the user uploads again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_burst_then_429_then_recover() {
    let uploads = per_user(1.0, 3);
    let mut srv = start(&format!("uploads = {uploads}\ncreate = {OFF}"), "").await;

    for i in 1..=3 {
        upload_ok(
            &srv,
            ALICE,
            None,
            &format!("alice's upload {i} of the burst"),
        )
        .await;
    }
    // A 4 MiB body: refused, and read before the answer (no reset, the client sees the 429).
    let resp = upload_from(&srv, ALICE, None, 4 * 1024 * 1024).await;
    limited(resp, 1000, "alice's 4th upload").await;

    // PUT /upload/{server}/{id} is an upload too (/create is not limited here).
    let mxc = create_ok(&srv, ALICE, "alice's create").await;
    let resp = put(&srv, ALICE, &mxc, random_bytes(64 * 1024)).await;
    let retry = limited(resp, 1000, "alice's PUT past the burst").await;

    // Bob has a bucket of his own; admins and the shared secret are never limited.
    upload_ok(&srv, BOB, None, "bob's first upload").await;
    for i in 1..=6 {
        upload_ok(&srv, ADMIN, None, &format!("admin upload {i}")).await;
        upload_ok(&srv, SECRET, None, &format!("shared-secret upload {i}")).await;
    }

    // After the wait alice may upload again: the async PUT first, then (a token later) a POST.
    wait_out(retry).await;
    let resp = put(&srv, ALICE, &mxc, random_bytes(1000)).await;
    assert_eq!(resp.status(), StatusCode::OK, "alice's PUT after the wait");
    let retry = limited(
        upload_from(&srv, ALICE, None, 100).await,
        1000,
        "alice's upload right after the PUT",
    )
    .await;
    wait_out(retry).await;
    upload_ok(&srv, ALICE, None, "alice's upload after the second wait").await;
    srv.stop().await;
}

/// A user named in `exempt_users` is not limited; the others are.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exempt_users_are_not_limited() {
    let uploads = per_user(1.0, 2);
    let mut srv = start(
        &format!("uploads = {uploads}\nexempt_users = [\"@bob:localhost\"]"),
        "",
    )
    .await;
    upload_ok(&srv, ALICE, None, "alice 1").await;
    upload_ok(&srv, ALICE, None, "alice 2").await;
    limited(upload_from(&srv, ALICE, None, 100).await, 1000, "alice 3").await;
    for i in 1..=6 {
        upload_ok(&srv, BOB, None, &format!("exempt bob {i}")).await;
    }
    srv.stop().await;
}

/// `/create` and uploads have buckets of their own: exhausting one leaves the other whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_and_uploads_have_separate_buckets() {
    let class = per_user(1.0, 2);
    let mut srv = start(&format!("uploads = {class}\ncreate = {class}"), "").await;

    // Alice: uploads exhausted, then /create still has its burst.
    upload_ok(&srv, ALICE, None, "alice upload 1").await;
    upload_ok(&srv, ALICE, None, "alice upload 2").await;
    limited(
        upload_from(&srv, ALICE, None, 100).await,
        1000,
        "alice upload 3",
    )
    .await;
    let first = create_ok(&srv, ALICE, "alice create 1").await;
    create_ok(&srv, ALICE, "alice create 2").await;
    limited(create(&srv, ALICE).await, 1000, "alice create 3").await;
    // Filling a reservation is an upload: refused while the upload bucket is empty.
    limited(
        put(&srv, ALICE, &first, random_bytes(100)).await,
        1000,
        "alice's PUT with an empty upload bucket",
    )
    .await;

    // Bob: /create exhausted, then uploads still have their burst.
    create_ok(&srv, BOB, "bob create 1").await;
    create_ok(&srv, BOB, "bob create 2").await;
    limited(create(&srv, BOB).await, 1000, "bob create 3").await;
    upload_ok(&srv, BOB, None, "bob upload 1").await;
    upload_ok(&srv, BOB, None, "bob upload 2").await;
    srv.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Downloads
// ---------------------------------------------------------------------------------------------

/// Downloads and thumbnails, legacy and authenticated, share one bucket per user (a thumbnail
/// is one request, not two); other users and admins are unaffected; the wait restores it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn downloads_and_thumbnails_share_the_per_user_bucket() {
    let downloads = per_user(2.0, 3);
    let mut srv = start(&format!("uploads = {OFF}\ndownloads = {downloads}"), "").await;
    let mxc = srv
        .upload(ADMIN, png(64, 64), Some("image/png"), None)
        .await;
    let (server, id) = parse_mxc(&mxc);
    let legacy_dl = format!("/_matrix/media/v3/download/{server}/{id}");
    let v1_dl = format!("/_matrix/client/v1/media/download/{server}/{id}");
    let q = "width=32&height=32&method=scale";
    let legacy_th = format!("/_matrix/media/v3/thumbnail/{server}/{id}?{q}");
    let v1_th = format!("/_matrix/client/v1/media/thumbnail/{server}/{id}?{q}");
    let get = |path: &str, token: &str| request(&srv, Method::GET, path, Some(token), None).send();

    // The admin (never limited) has the thumbnail generated, so alice's requests are quick.
    for path in [&legacy_dl, &v1_dl, &legacy_th, &v1_th, &v1_th, &legacy_th] {
        let resp = get(path, ADMIN).await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "admin GET {path}");
    }

    for path in [&legacy_dl, &v1_th, &legacy_th] {
        let resp = get(path, ALICE).await.unwrap();
        assert_eq!(
            resp.status(),
            StatusCode::OK,
            "alice GET {path} within the burst"
        );
        assert!(!resp.bytes().await.unwrap().is_empty());
    }
    let retry = limited(get(&v1_dl, ALICE).await.unwrap(), 500, "alice's 4th GET").await;
    limited(
        get(&legacy_th, ALICE).await.unwrap(),
        500,
        "alice's 5th GET",
    )
    .await;

    let resp = get(&v1_dl, BOB).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK, "bob has his own bucket");
    let resp = get(&v1_th, ADMIN).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK, "the admin is not limited");

    wait_out(retry).await;
    let resp = get(&v1_dl, ALICE).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK, "alice after the wait");
    assert_eq!(resp.bytes().await.unwrap().len(), png(64, 64).len());
    srv.stop().await;
}

/// The leaky byte bucket (capacity 1000, overflow 1000, 500 B/s): `HEAD` is not charged nor
/// refused; a download may take the level past the capacity by the overflow but not further
/// (the wait is until it fits); over the capacity everything waits; a download larger than
/// capacity + overflow passes once the bucket is empty; the address has a byte bucket too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn download_byte_bucket_capacity_overflow_and_drain() {
    let mut srv = start(
        &format!(
            "uploads = {OFF}\ndownload_bytes = {{ capacity_bytes = 1000, drain_bytes_per_second = 500, overflow_bytes = 1000 }}"
        ),
        TRUST_LOOPBACK,
    )
    .await;
    let mut media = std::collections::HashMap::new();
    for len in [300usize, 800, 1000, 1500, 3000] {
        let mxc = srv
            .upload(
                ADMIN,
                random_bytes(len),
                Some("application/octet-stream"),
                None,
            )
            .await;
        media.insert(len, mxc);
    }
    let path = |len: usize| {
        let (server, id) = parse_mxc(&media[&len]);
        format!("/_matrix/client/v1/media/download/{server}/{id}")
    };
    // GET (or HEAD) of the media of `len` bytes as `token` from `xff`; `one_byte`: `Range:
    // bytes=0-0` (only what is served is poured in).
    let get = |len: usize, token: &'static str, xff: &'static str, head: bool, one_byte: bool| {
        let method = if head { Method::HEAD } else { Method::GET };
        let mut req = request(&srv, method, &path(len), Some(token), Some(xff));
        if one_byte {
            req = req.header(reqwest::header::RANGE, "bytes=0-0");
        }
        req.send()
    };
    let ok = |resp: Response, status: StatusCode, len: usize, what: &'static str| async move {
        let got = resp.status();
        let body = resp.bytes().await.unwrap();
        assert_eq!(got, status, "{what}: {}", String::from_utf8_lossy(&body));
        assert_eq!(body.len(), len, "{what}: body length");
    };
    const A1: &str = "192.0.2.1";
    const A2: &str = "192.0.2.2";
    const A3: &str = "192.0.2.3";

    // HEAD is neither charged nor refused: 4500 bytes' worth of HEADs leave the bucket empty.
    for _ in 0..3 {
        let resp = get(1500, ALICE, A1, true, false).await.unwrap();
        ok(resp, StatusCode::OK, 0, "HEAD of 1500 bytes").await;
    }
    ok(
        get(800, ALICE, A1, false, false).await.unwrap(),
        StatusCode::OK,
        800,
        "800 bytes into an empty bucket",
    )
    .await;
    // 800 + 1500 > 1000 + 1000: it waits until 1500 fits (about 600 ms of drain).
    limited(
        get(1500, ALICE, A1, false, false).await.unwrap(),
        600,
        "1500 bytes on top of 800",
    )
    .await;
    // 800 + 1000 fits within capacity + overflow.
    ok(
        get(1000, ALICE, A1, false, false).await.unwrap(),
        StatusCode::OK,
        1000,
        "1000 bytes on top of 800 (into the overflow)",
    )
    .await;
    // Over the capacity now: even one byte waits (up to 1.6 s of drain), HEAD does not.
    let retry = limited(
        get(300, ALICE, A1, false, true).await.unwrap(),
        1600,
        "one byte over the capacity",
    )
    .await;
    let resp = get(1000, ALICE, A1, true, false).await.unwrap();
    ok(resp, StatusCode::OK, 0, "HEAD over the capacity").await;
    wait_out(retry).await;
    ok(
        get(300, ALICE, A1, false, true).await.unwrap(),
        StatusCode::PARTIAL_CONTENT,
        1,
        "one byte after the wait",
    )
    .await;

    // Bob from another address: a fresh bucket. 3000 bytes (more than capacity + overflow)
    // waits for the bucket to be empty, then passes.
    ok(
        get(300, BOB, A2, false, false).await.unwrap(),
        StatusCode::OK,
        300,
        "bob's 300 bytes",
    )
    .await;
    let retry = limited(
        get(3000, BOB, A2, false, false).await.unwrap(),
        600,
        "3000 bytes with 300 in the bucket",
    )
    .await;
    wait_out(retry).await;
    ok(
        get(3000, BOB, A2, false, false).await.unwrap(),
        StatusCode::OK,
        3000,
        "3000 bytes into the empty bucket",
    )
    .await;
    // The address A2 holds 3000 bytes now: alice from it waits, though her own bucket has
    // room; from A3 she does not; the admin never does.
    limited(
        get(300, ALICE, A2, false, true).await.unwrap(),
        4000,
        "alice from bob's full address",
    )
    .await;
    ok(
        get(300, ALICE, A3, false, false).await.unwrap(),
        StatusCode::OK,
        300,
        "alice from another address",
    )
    .await;
    ok(
        get(3000, ADMIN, A2, false, false).await.unwrap(),
        StatusCode::OK,
        3000,
        "the admin from the full address",
    )
    .await;
    srv.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Client addresses
// ---------------------------------------------------------------------------------------------

/// With address buckets only and no trusted proxy, every user from 127.0.0.1 shares one
/// bucket, and an `X-Forwarded-For` of the client's choosing does not escape it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn address_bucket_is_shared_and_untrusted_forwarded_for_is_ignored() {
    let uploads = per_address(1.0, 2);
    let mut srv = start(&format!("uploads = {uploads}"), "").await;
    upload_ok(&srv, ALICE, None, "alice from 127.0.0.1").await;
    upload_ok(&srv, BOB, None, "bob from 127.0.0.1").await;
    limited(
        upload_from(&srv, ALICE, None, 100).await,
        1000,
        "alice, 3rd from the address",
    )
    .await;
    limited(
        upload_from(&srv, BOB, None, 100).await,
        1000,
        "bob, 4th from the address",
    )
    .await;
    for xff in ["198.51.100.7", "10.0.0.1", "2001:db8::1"] {
        limited(
            upload_from(&srv, BOB, Some(xff), 100).await,
            1000,
            &format!("bob claiming X-Forwarded-For {xff} (not from a trusted proxy)"),
        )
        .await;
    }
    upload_ok(&srv, ADMIN, None, "the admin from the same address").await;
    srv.stop().await;
}

/// Behind a trusted proxy (127.0.0.1) the client is the rightmost untrusted `X-Forwarded-For`
/// address: each has its own bucket, shared by its users; IPv6 addresses share one per /64;
/// `exempt_addresses` are not limited.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trusted_proxy_forwarded_for_chooses_the_address_bucket() {
    let uploads = per_address(1.0, 2);
    let mut srv = start(
        &format!("uploads = {uploads}\nexempt_addresses = [\"10.0.0.0/8\"]"),
        TRUST_LOOPBACK,
    )
    .await;
    let a = Some("192.0.2.1");
    upload_ok(&srv, ALICE, a, "alice from 192.0.2.1").await;
    upload_ok(&srv, BOB, a, "bob from 192.0.2.1").await;
    limited(
        upload_from(&srv, ALICE, a, 100).await,
        1000,
        "3rd from 192.0.2.1",
    )
    .await;
    // What the client wrote left of the proxies' entries does not help; our proxy's own
    // address (trusted) is skipped.
    for xff in ["203.0.113.9, 192.0.2.1", "192.0.2.1, 127.0.0.1"] {
        limited(
            upload_from(&srv, ALICE, Some(xff), 100).await,
            1000,
            &format!("X-Forwarded-For: {xff}"),
        )
        .await;
    }
    // Other addresses, and the proxy itself without the header, have buckets of their own.
    upload_ok(&srv, ALICE, Some("192.0.2.2"), "alice from 192.0.2.2").await;
    upload_ok(&srv, ALICE, None, "alice from the proxy itself").await;
    // Exempt addresses.
    for i in 1..=5 {
        upload_ok(
            &srv,
            ALICE,
            Some("10.1.2.3"),
            &format!("exempt 10.1.2.3, {i}"),
        )
        .await;
    }
    // IPv6: one bucket per /64.
    upload_ok(&srv, ALICE, Some("2001:db8::1"), "2001:db8::1").await;
    upload_ok(&srv, BOB, Some("2001:db8::ffff:2"), "2001:db8::ffff:2").await;
    limited(
        upload_from(&srv, ALICE, Some("2001:db8::abcd"), 100).await,
        1000,
        "a third address of 2001:db8::/64",
    )
    .await;
    upload_ok(&srv, ALICE, Some("2001:db8:0:1::1"), "another /64").await;
    srv.stop().await;
}

/// `enabled = false`: the tightest buckets limit nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disabled_rate_limits_limit_nothing() {
    let tight =
        "{ user = { per_second = 1.0, burst = 1 }, address = { per_second = 1.0, burst = 1 } }";
    let mut srv = start(
        &format!(
            "enabled = false\nuploads = {tight}\ncreate = {tight}\ndownloads = {tight}\n\
             download_bytes = {{ capacity_bytes = 10, drain_bytes_per_second = 1, overflow_bytes = 0 }}\n\
             federation = {{ per_second = 1.0, burst = 1 }}"
        ),
        "",
    )
    .await;
    let mut uris = Vec::new();
    for i in 1..=4 {
        let resp = upload_from(&srv, ALICE, None, 100).await;
        let status = resp.status();
        let v: Value = resp.json().await.unwrap();
        assert_eq!(status, StatusCode::OK, "upload {i}: {v}");
        uris.push(v["content_uri"].as_str().unwrap().to_owned());
        create_ok(&srv, ALICE, &format!("create {i}")).await;
    }
    for mxc in uris.iter().chain(uris.iter()) {
        assert_eq!(srv.download_bytes(mxc).await.len(), 100);
    }
    srv.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Federation
// ---------------------------------------------------------------------------------------------

/// A homeserver `name` with a signing key and federation pins.
async fn federation_server(name: &str, pins: &[(&str, &str)], rate_limits: &str) -> TestServer {
    let pins = pins
        .iter()
        .map(|(n, url)| format!("{n:?} = {url:?}"))
        .collect::<Vec<_>>()
        .join(", ");
    TestServer::start_with(Opts {
        homeservers: Some(format!(
            "[[homeservers]]\nname = \"{name}\"\ndefault = true\n"
        )),
        extra_toml: format!(
            "[federation]\nsigning_key_path = {{dir:signing.key}}\npins = {{ {pins} }}\n"
        ),
        rate_limits: format!("[rate_limits]\n{rate_limits}\n"),
        ..Opts::default()
    })
    .await
}

/// Signed federation media requests are limited per requesting server (X-Matrix origin),
/// downloads and thumbnails together; another server has its own bucket; clients are not
/// counted in it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn federation_requests_are_limited_per_origin() {
    let mut a = federation_server("a.test", &[], "enabled = false").await;
    let mut c = federation_server("c.test", &[], "enabled = false").await;
    let mut b = federation_server(
        "b.test",
        &[("a.test", &a.base), ("c.test", &c.base)],
        &format!("uploads = {OFF}\nfederation = {{ per_second = 1.0, burst = 2 }}"),
    )
    .await;
    let img = png(64, 64);
    let mxc = b.upload(ALICE, img.clone(), Some("image/png"), None).await;
    let (_, id) = parse_mxc(&mxc);
    let download = format!("/_matrix/federation/v1/media/download/{id}");
    let thumbnail =
        format!("/_matrix/federation/v1/media/thumbnail/{id}?width=32&height=32&method=scale");
    let key_a = SigningKey::load_or_generate(&a.dir.path().join("signing.key")).unwrap();
    let key_c = SigningKey::load_or_generate(&c.dir.path().join("signing.key")).unwrap();
    let signed = |key: &SigningKey, origin: &str, path: &str| {
        let auth = xmatrix::authorization(key, origin, "b.test", "GET", path, None).unwrap();
        b.client
            .get(b.url(path))
            .header("Authorization", auth)
            .send()
    };
    let ok = |resp: Response, what: &'static str| async move {
        let status = resp.status();
        let ct = header(&resp, "content-type").to_owned();
        let body = resp.bytes().await.unwrap();
        assert_eq!(
            status,
            StatusCode::OK,
            "{what}: {}",
            String::from_utf8_lossy(&body)
        );
        assert!(ct.starts_with("multipart/mixed"), "{what}: {ct}");
    };

    ok(
        signed(&key_a, "a.test", &download).await.unwrap(),
        "a.test 1",
    )
    .await;
    ok(
        signed(&key_a, "a.test", &download).await.unwrap(),
        "a.test 2",
    )
    .await;
    let retry = limited(
        signed(&key_a, "a.test", &thumbnail).await.unwrap(),
        1000,
        "a.test's thumbnail past the burst",
    )
    .await;
    limited(
        signed(&key_a, "a.test", &download).await.unwrap(),
        1000,
        "a.test's download past the burst",
    )
    .await;
    // Another server, and B's own clients, are not in a.test's bucket.
    ok(
        signed(&key_c, "c.test", &download).await.unwrap(),
        "c.test 1",
    )
    .await;
    ok(
        signed(&key_c, "c.test", &thumbnail).await.unwrap(),
        "c.test 2",
    )
    .await;
    let resp = b
        .client
        .get(b.url(&format!("/_matrix/client/v1/media/download/b.test/{id}")))
        .bearer_auth(ALICE)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK, "a client download on b.test");

    wait_out(retry).await;
    ok(
        signed(&key_a, "a.test", &thumbnail).await.unwrap(),
        "a.test's thumbnail after the wait",
    )
    .await;
    b.stop().await;
    a.stop().await;
    c.stop().await;
}
