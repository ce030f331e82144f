#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Asynchronous uploads: `POST /v1/create`, `PUT /upload/{server}/{id}`, waiting downloads and
//! reservation expiry.

use crate::common;

use common::{expect_error, parse_mxc, random_bytes, Opts, TestServer, ALICE, BOB};
use reqwest::StatusCode;
use serde_json::Value;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

fn now_ms() -> u64 {
    u64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap()
}

async fn create(srv: &TestServer, token: &str) -> (String, u64) {
    let resp = srv
        .client
        .post(srv.url("/_matrix/media/v1/create"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let status = resp.status();
    let text = resp.text().await.unwrap();
    assert_eq!(status, StatusCode::OK, "create: {text}");
    let v: Value = serde_json::from_str(&text).unwrap();
    let uri = v["content_uri"].as_str().expect("content_uri").to_owned();
    let expires = v["unused_expires_at"]
        .as_u64()
        .expect("unused_expires_at is an integer");
    (uri, expires)
}

async fn put(srv: &TestServer, token: &str, mxc: &str, bytes: Vec<u8>) -> reqwest::Response {
    let (server, id) = parse_mxc(mxc);
    srv.client
        .put(srv.url(&format!("/_matrix/media/v3/upload/{server}/{id}")))
        .bearer_auth(token)
        .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
        .body(bytes)
        .send()
        .await
        .unwrap()
}

fn download_url(srv: &TestServer, mxc: &str, timeout_ms: u64) -> String {
    let (server, id) = parse_mxc(mxc);
    srv.url(&format!(
        "/_matrix/media/v3/download/{server}/{id}?timeout_ms={timeout_ms}"
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_then_put() {
    let mut srv = TestServer::start().await;
    let before = now_ms();
    let (mxc, expires) = create(&srv, ALICE).await;
    let (server, id) = parse_mxc(&mxc);
    assert_eq!(server, "localhost");
    assert!(id.len() >= 24 && id.bytes().all(|b| b.is_ascii_alphanumeric()));
    assert!(
        expires >= before + 86_400_000 - 1000 && expires <= now_ms() + 86_400_000 + 1000,
        "unused_expires_at {expires} is not about 24 h from now"
    );

    let bytes = random_bytes(5000);
    let resp = put(&srv, ALICE, &mxc, bytes.clone()).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let v: Value = resp.json().await.unwrap();
    assert!(v.is_object());
    assert_eq!(srv.download_bytes(&mxc).await, bytes);

    // Filling it again is refused, whoever tries.
    let resp = put(&srv, ALICE, &mxc, random_bytes(10)).await;
    expect_error(resp, StatusCode::CONFLICT, "M_CANNOT_OVERWRITE_MEDIA").await;
    let resp = put(&srv, ALICE, &mxc, bytes.clone()).await;
    expect_error(resp, StatusCode::CONFLICT, "M_CANNOT_OVERWRITE_MEDIA").await;
    assert_eq!(srv.download_bytes(&mxc).await, bytes);

    // The r0 PUT route is the same endpoint.
    let (mxc2, _) = create(&srv, ALICE).await;
    let (server, id) = parse_mxc(&mxc2);
    let resp = srv
        .client
        .put(srv.url(&format!("/_matrix/media/r0/upload/{server}/{id}")))
        .bearer_auth(ALICE)
        .body(b"r0".to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(srv.download_bytes(&mxc2).await, b"r0");
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_by_another_user_or_to_unknown_id() {
    let mut srv = TestServer::start().await;
    let (mxc, _) = create(&srv, ALICE).await;

    let resp = put(&srv, BOB, &mxc, random_bytes(10)).await;
    expect_error(resp, StatusCode::FORBIDDEN, "M_FORBIDDEN").await;

    // The shared-secret admin is not a user and cannot own a reservation.
    let resp = put(&srv, common::SECRET, &mxc, random_bytes(10)).await;
    expect_error(resp, StatusCode::FORBIDDEN, "M_FORBIDDEN").await;

    // Without a token.
    let (server, id) = parse_mxc(&mxc);
    let resp = srv
        .client
        .put(srv.url(&format!("/_matrix/media/v3/upload/{server}/{id}")))
        .body(vec![1, 2, 3])
        .send()
        .await
        .unwrap();
    expect_error(resp, StatusCode::UNAUTHORIZED, "M_MISSING_TOKEN").await;

    // The owner can still fill it.
    let resp = put(&srv, ALICE, &mxc, b"mine".to_vec()).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(srv.download_bytes(&mxc).await, b"mine");

    let resp = put(
        &srv,
        ALICE,
        "mxc://localhost/AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        random_bytes(10),
    )
    .await;
    expect_error(resp, StatusCode::NOT_FOUND, "M_NOT_FOUND").await;

    // A media id made by a plain upload is not a reservation either.
    let plain = srv.upload_bytes(random_bytes(10)).await;
    let resp = put(&srv, ALICE, &plain, random_bytes(10)).await;
    expect_error(resp, StatusCode::CONFLICT, "M_CANNOT_OVERWRITE_MEDIA").await;
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_download_times_out() {
    let mut srv = TestServer::start().await;
    let (mxc, _) = create(&srv, ALICE).await;
    let resp = srv
        .client
        .get(download_url(&srv, &mxc, 300))
        .send()
        .await
        .unwrap();
    expect_error(resp, StatusCode::GATEWAY_TIMEOUT, "M_NOT_YET_UPLOADED").await;

    let (server, id) = parse_mxc(&mxc);
    let resp = srv
        .client
        .get(srv.url(&format!(
            "/_matrix/client/v1/media/download/{server}/{id}?timeout_ms=300"
        )))
        .bearer_auth(BOB)
        .send()
        .await
        .unwrap();
    expect_error(resp, StatusCode::GATEWAY_TIMEOUT, "M_NOT_YET_UPLOADED").await;
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_download_gets_the_bytes_once_put() {
    let mut srv = TestServer::start().await;
    let (mxc, _) = create(&srv, ALICE).await;
    let bytes = random_bytes(64 * 1024);

    let client = srv.client.clone();
    let url = download_url(&srv, &mxc, 10_000);
    let waiting = tokio::spawn(async move {
        let resp = client.get(url).send().await.unwrap();
        let status = resp.status();
        (status, resp.bytes().await.unwrap().to_vec())
    });
    // Give the download a head start (it must be waiting, not yet answered); generous and
    // only an ordering hint, the assertion below holds either way.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!waiting.is_finished(), "the download did not wait");

    let resp = put(&srv, ALICE, &mxc, bytes.clone()).await;
    assert_eq!(resp.status(), StatusCode::OK);

    let (status, got) = tokio::time::timeout(Duration::from_secs(30), waiting)
        .await
        .expect("the waiting download finishes")
        .unwrap();
    assert_eq!(status, StatusCode::OK);
    assert!(got == bytes, "the waiting download got different bytes");
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_reservation() {
    let mut srv = TestServer::start_with(Opts {
        async_expiry_ms: 1,
        ..Default::default()
    })
    .await;
    let (mxc, expires) = create(&srv, ALICE).await;
    assert!(expires <= now_ms() + 1000);
    tokio::time::sleep(Duration::from_millis(50)).await;

    let resp = put(&srv, ALICE, &mxc, random_bytes(10)).await;
    expect_error(resp, StatusCode::NOT_FOUND, "M_NOT_FOUND").await;

    // An expired reservation is not waited for: 404, not 504.
    let resp = srv
        .client
        .get(download_url(&srv, &mxc, 300))
        .send()
        .await
        .unwrap();
    expect_error(resp, StatusCode::NOT_FOUND, "M_NOT_FOUND").await;
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_requires_a_user() {
    let mut srv = TestServer::start().await;
    let resp = srv
        .client
        .post(srv.url("/_matrix/media/v1/create"))
        .send()
        .await
        .unwrap();
    expect_error(resp, StatusCode::UNAUTHORIZED, "M_MISSING_TOKEN").await;
    let resp = srv
        .client
        .post(srv.url("/_matrix/media/v1/create"))
        .bearer_auth("nobody-knows-this")
        .send()
        .await
        .unwrap();
    expect_error(resp, StatusCode::UNAUTHORIZED, "M_UNKNOWN_TOKEN").await;
    let resp = srv
        .client
        .post(srv.url("/_matrix/media/v1/create"))
        .bearer_auth(common::SECRET)
        .send()
        .await
        .unwrap();
    expect_error(resp, StatusCode::FORBIDDEN, "M_FORBIDDEN").await;
    srv.stop().await;
}

/// `uploads.max_pending_per_user` (default 32) is documented in `src/config.rs` as "how many
/// unexpired reservations one user may hold", so the 33rd reservation should be refused with
/// 429 M_LIMIT_EXCEEDED.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_reservations_are_limited_per_user() {
    let mut srv = TestServer::start().await;
    for _ in 0..32 {
        create(&srv, ALICE).await;
    }
    let resp = srv
        .client
        .post(srv.url("/_matrix/media/v1/create"))
        .bearer_auth(ALICE)
        .send()
        .await
        .unwrap();
    expect_error(resp, StatusCode::TOO_MANY_REQUESTS, "M_LIMIT_EXCEEDED").await;
    // Another user is not affected.
    create(&srv, BOB).await;
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_puts_one_wins() {
    let mut srv = TestServer::start().await;
    for _ in 0..3 {
        let (mxc, _) = create(&srv, ALICE).await;
        let (server, id) = parse_mxc(&mxc);
        let url = srv.url(&format!("/_matrix/media/v3/upload/{server}/{id}"));
        let mut tasks = Vec::new();
        for _ in 0..4 {
            let client = srv.client.clone();
            let url = url.clone();
            let bytes = random_bytes(100_000);
            tasks.push(tokio::spawn(async move {
                let resp = client
                    .put(url)
                    .bearer_auth(ALICE)
                    .body(bytes.clone())
                    .send()
                    .await
                    .unwrap();
                let status = resp.status();
                let body: Value = resp.json().await.unwrap();
                (status, body, bytes)
            }));
        }
        let mut winners = Vec::new();
        for t in tasks {
            let (status, body, bytes) = t.await.unwrap();
            match status {
                StatusCode::OK => winners.push(bytes),
                StatusCode::CONFLICT => assert_eq!(body["errcode"], "M_CANNOT_OVERWRITE_MEDIA"),
                other => panic!("concurrent PUT answered {other}: {body}"),
            }
        }
        assert_eq!(winners.len(), 1, "exactly one PUT may fill a reservation");
        assert!(srv.download_bytes(&mxc).await == winners[0]);
    }
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_is_capped_by_max_timeout() {
    let mut srv = TestServer::start_with(Opts {
        default_timeout_ms: 100,
        max_timeout_ms: 300,
        ..Default::default()
    })
    .await;
    let (mxc, _) = create(&srv, ALICE).await;
    let started = std::time::Instant::now();
    let resp = srv
        .client
        .get(download_url(&srv, &mxc, 600_000))
        .send()
        .await
        .unwrap();
    expect_error(resp, StatusCode::GATEWAY_TIMEOUT, "M_NOT_YET_UPLOADED").await;
    // Without timeout_ms: the default.
    let (server, id) = parse_mxc(&mxc);
    let resp = srv
        .client
        .get(srv.url(&format!("/_matrix/media/v3/download/{server}/{id}")))
        .send()
        .await
        .unwrap();
    expect_error(resp, StatusCode::GATEWAY_TIMEOUT, "M_NOT_YET_UPLOADED").await;
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "timeout_ms was not capped"
    );
    srv.stop().await;
}
