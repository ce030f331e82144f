#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Behind a reverse proxy (issue #11 item 9): `X-Forwarded-Host` picks the homeserver only
//! from a peer in `server.trusted_proxies`; a homeserver's `hosts` name it too; with
//! `server.refuse_unknown_hosts` a host naming no homeserver is 400 `M_UNRECOGNIZED` instead of
//! going to the default one (`/healthz` still answers). The real nginx in front, with the
//! README's snippet, is `nginx.rs`.

use crate::common;

use common::{expect_error, random_bytes, Opts, TestServer, ALICE, ALICE_OTHER};
use reqwest::header::HOST;
use reqwest::StatusCode;
use serde_json::Value;

const HOMESERVERS: &str = "[[homeservers]]\nname = \"localhost\"\ndefault = true\n\n\
     [[homeservers]]\nname = \"other.test\"\nhosts = [\"matrix.other.test\"]\n";

async fn start(server_extra: &str) -> TestServer {
    TestServer::start_with(Opts {
        homeservers: Some(HOMESERVERS.to_owned()),
        server_extra: server_extra.to_owned(),
        ..Opts::default()
    })
    .await
}

/// Uploads as `token` with extra headers; the response.
async fn upload(srv: &TestServer, token: &str, headers: &[(&str, &str)]) -> reqwest::Response {
    let mut req = srv
        .client
        .post(srv.url("/_matrix/media/v3/upload"))
        .bearer_auth(token)
        .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
        .body(random_bytes(50));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    req.send().await.unwrap()
}

async fn mxc_server(resp: reqwest::Response) -> String {
    let status = resp.status();
    let text = resp.text().await.unwrap();
    assert_eq!(status, StatusCode::OK, "{text}");
    let v: Value = serde_json::from_str(&text).unwrap();
    let mxc = v["content_uri"].as_str().unwrap();
    common::parse_mxc(mxc).0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_host_counts_only_from_a_trusted_proxy() {
    // The test client (127.0.0.1) is a trusted proxy.
    let srv = start("trusted_proxies = [\"10.0.0.0/8\", \"127.0.0.0/8\"]").await;
    let fwd = [
        ("x-forwarded-host", "other.test"),
        ("x-forwarded-for", "203.0.113.9"),
    ];
    assert_eq!(
        mxc_server(upload(&srv, ALICE_OTHER, &fwd).await).await,
        "other.test"
    );
    // A homeserver's `hosts` name it, as Host or forwarded.
    let alias = [(HOST.as_str(), "matrix.other.test:8448")];
    assert_eq!(
        mxc_server(upload(&srv, ALICE_OTHER, &alias).await).await,
        "other.test"
    );
    // Not trusted: the header is ignored, Host (127.0.0.1:port) goes to the default.
    let srv = start("trusted_proxies = [\"10.0.0.0/8\"]").await;
    assert_eq!(
        mxc_server(upload(&srv, ALICE, &fwd).await).await,
        "localhost"
    );
    // … so alice of other.test is not a user of the request's homeserver.
    expect_error(
        upload(&srv, ALICE_OTHER, &fwd).await,
        StatusCode::UNAUTHORIZED,
        "M_UNKNOWN_TOKEN",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_hosts_can_be_refused() {
    let srv = start("refuse_unknown_hosts = true").await;
    // 127.0.0.1:port names no homeserver.
    let body = expect_error(
        upload(&srv, ALICE, &[]).await,
        StatusCode::BAD_REQUEST,
        "M_UNRECOGNIZED",
    )
    .await;
    assert!(
        body["error"].as_str().unwrap().contains("127.0.0.1"),
        "{body}"
    );
    // Untrusted forwarding does not get around it.
    expect_error(
        upload(&srv, ALICE, &[("x-forwarded-host", "localhost")]).await,
        StatusCode::BAD_REQUEST,
        "M_UNRECOGNIZED",
    )
    .await;
    // Named hosts are served, probes answer whatever the host.
    let ok = [(HOST.as_str(), "localhost:8008")];
    assert_eq!(
        mxc_server(upload(&srv, ALICE, &ok).await).await,
        "localhost"
    );
    let ok = [(HOST.as_str(), "MATRIX.other.test")];
    assert_eq!(
        mxc_server(upload(&srv, ALICE_OTHER, &ok).await).await,
        "other.test"
    );
    let resp = srv.client.get(srv.url("/healthz")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
}
