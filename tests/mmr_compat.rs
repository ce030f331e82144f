#![allow(clippy::unwrap_used, clippy::expect_used)]
//! matrix-media-repo's extras that operators script against: `GET`/`HEAD /healthz` and the
//! `/_matrix/media/unstable/io.t2bot.media/admin/…` prefix, an alias of every admin route
//! (same answers, same access control, same acts recorded).

use crate::common;

use common::{expect_error, parse_mxc, random_bytes, TestServer, ADMIN, ALICE, SECRET};
use reqwest::StatusCode;
use serde_json::{json, Value};

const API: &str = "/_matrix/media/unstable/admin";
const T2BOT: &str = "/_matrix/media/unstable/io.t2bot.media/admin";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_answers_without_a_token() {
    let mut srv = TestServer::start().await;
    let resp = srv.client.get(srv.url("/healthz")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        common::header(&resp, "content-type"),
        "application/json",
        "healthz is JSON"
    );
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v, json!({"ok": true, "status": "Probably not dead"}));

    let resp = srv.client.head(srv.url("/healthz")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(resp.bytes().await.unwrap().is_empty(), "HEAD has no body");

    let resp = srv.client.post(srv.url("/healthz")).send().await.unwrap();
    expect_error(resp, StatusCode::METHOD_NOT_ALLOWED, "M_UNRECOGNIZED").await;
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t2bot_prefix_is_an_alias_of_the_admin_api() {
    let mut srv = TestServer::start().await;

    // Read-only routes answer the same under both prefixes, with the same access control.
    for path in ["datastores", "tasks/all", "audit"] {
        let mut answers = Vec::new();
        for prefix in [API, T2BOT] {
            let url = srv.url(&format!("{prefix}/{path}"));
            let resp = srv
                .client
                .get(&url)
                .bearer_auth(SECRET)
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), StatusCode::OK, "{url}");
            answers.push(resp.json::<Value>().await.unwrap());
            let resp = srv
                .client
                .get(&url)
                .bearer_auth(ALICE)
                .send()
                .await
                .unwrap();
            expect_error(resp, StatusCode::FORBIDDEN, "M_FORBIDDEN").await;
            let resp = srv.client.get(&url).send().await.unwrap();
            expect_error(resp, StatusCode::UNAUTHORIZED, "M_MISSING_TOKEN").await;
        }
        assert_eq!(answers[0], answers[1], "{path}");
    }

    // An act through the alias is an act: quarantine hides the media, unquarantine shows it.
    let bytes = random_bytes(2048);
    let mxc = srv.upload_bytes(bytes.clone()).await;
    let (server, id) = parse_mxc(&mxc);
    let resp = srv
        .client
        .post(srv.url(&format!("{T2BOT}/quarantine/{server}/{id}")))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["num_quarantined"], 1, "{v}");
    expect_error(
        srv.download(&mxc).await,
        StatusCode::NOT_FOUND,
        "M_NOT_FOUND",
    )
    .await;

    let resp = srv
        .client
        .post(srv.url(&format!("{T2BOT}/unquarantine/{server}/{id}")))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(srv.download_bytes(&mxc).await, bytes);

    // The history read through the original prefix shows both acts.
    let resp = srv
        .client
        .get(srv.url(&format!("{API}/media/{server}/{id}/history")))
        .bearer_auth(SECRET)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let text = resp.text().await.unwrap();
    assert!(text.contains("quarantin"), "history: {text}");
    assert!(text.contains("unquarantin"), "history: {text}");

    // An unknown route under the alias is still a Matrix error.
    let resp = srv
        .client
        .get(srv.url(&format!("{T2BOT}/no_such_route")))
        .bearer_auth(SECRET)
        .send()
        .await
        .unwrap();
    expect_error(resp, StatusCode::NOT_FOUND, "M_UNRECOGNIZED").await;
    srv.stop().await;
}
