#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The unauthenticated media freeze of spec v1.11 (issue #11 item 10):
//! `downloads.freeze_unauthenticated` (on by default) keeps media created at or after
//! `downloads.freeze_unauthenticated_after_ms` (default 2024-09-01) off the deprecated
//! `/_matrix/media/{r0,v3}/{download,thumbnail}` endpoints for requests without a valid token
//! (404 `M_NOT_FOUND`); media from before stays served, a valid token on those endpoints and the
//! authenticated endpoints are served as before.

use crate::common;

use common::{expect_error, parse_mxc, Opts, TestServer, ALICE};
use media_ledger::clock::now_ms;
use reqwest::{Method, StatusCode};

const FAR_FUTURE: &str = "freeze_unauthenticated_after_ms = 4000000000000";
const CROP: &str = "width=32&height=32&method=crop";

/// A 64×64 PNG (thumbnailable).
fn png() -> Vec<u8> {
    let img = image::RgbImage::from_fn(64, 64, |x, y| image::Rgb([x as u8 * 4, y as u8 * 4, 9]));
    let mut out = Vec::new();
    image::DynamicImage::ImageRgb8(img)
        .write_to(&mut std::io::Cursor::new(&mut out), image::ImageFormat::Png)
        .unwrap();
    out
}

/// The deprecated paths of `mxc` (v3 and r0 downloads, named, and a thumbnail).
fn legacy_paths(mxc: &str) -> Vec<String> {
    let (s, id) = parse_mxc(mxc);
    vec![
        format!("/_matrix/media/v3/download/{s}/{id}"),
        format!("/_matrix/media/r0/download/{s}/{id}"),
        format!("/_matrix/media/v3/download/{s}/{id}/name.png"),
        format!("/_matrix/media/v3/thumbnail/{s}/{id}?{CROP}"),
        format!("/_matrix/media/r0/thumbnail/{s}/{id}?{CROP}"),
    ]
}

async fn get(
    srv: &TestServer,
    method: Method,
    path: &str,
    token: Option<&str>,
) -> reqwest::Response {
    let mut req = srv.client.request(method, srv.url(path));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    req.send().await.unwrap()
}

/// Generates the 32×32 thumbnail (authenticated), so a refusal is the freeze, not a missing
/// thumbnail.
async fn make_thumbnail(srv: &TestServer, mxc: &str) {
    let (s, id) = parse_mxc(mxc);
    let path = format!("/_matrix/client/v1/media/thumbnail/{s}/{id}?{CROP}");
    let resp = get(srv, Method::GET, &path, Some(ALICE)).await;
    assert_eq!(resp.status(), StatusCode::OK);
}

async fn assert_frozen(srv: &TestServer, mxc: &str) {
    for path in legacy_paths(mxc) {
        let body = expect_error(
            get(srv, Method::GET, &path, None).await,
            StatusCode::NOT_FOUND,
            "M_NOT_FOUND",
        )
        .await;
        assert!(
            body["error"].as_str().unwrap().contains("authenticated"),
            "{path}: {body}"
        );
        let head = get(srv, Method::HEAD, &path, None).await;
        assert_eq!(head.status(), StatusCode::NOT_FOUND, "HEAD {path}");
        // An unknown token is anonymous too.
        let resp = get(srv, Method::GET, &path, Some("no-such-token")).await;
        assert_eq!(
            resp.status(),
            StatusCode::NOT_FOUND,
            "{path} with an unknown token"
        );
    }
}

async fn assert_served_anonymously(srv: &TestServer, mxc: &str) {
    for path in legacy_paths(mxc) {
        let resp = get(srv, Method::GET, &path, None).await;
        assert_eq!(resp.status(), StatusCode::OK, "{path}");
    }
}

#[tokio::test]
async fn by_default_new_media_is_served_on_the_legacy_endpoints_only_with_a_token() {
    let srv = TestServer::start_with(Opts {
        freeze_unauthenticated: None,
        ..Opts::default()
    })
    .await;
    let config = media_ledger::config::Config::parse(&srv.config_text).unwrap();
    assert!(!srv.config_text.contains("freeze_unauthenticated"));
    assert!(config.downloads.freeze_unauthenticated, "on by default");
    let mxc = srv.upload(ALICE, png(), Some("image/png"), None).await;
    make_thumbnail(&srv, &mxc).await;
    assert_frozen(&srv, &mxc).await;
    // A valid token makes a legacy request authenticated (as matrix-media-repo); the
    // authenticated endpoints are not frozen.
    for path in legacy_paths(&mxc) {
        let resp = get(&srv, Method::GET, &path, Some(ALICE)).await;
        assert_eq!(resp.status(), StatusCode::OK, "{path} with a token");
    }
    let (s, id) = parse_mxc(&mxc);
    let authed = format!("/_matrix/client/v1/media/download/{s}/{id}");
    assert_eq!(
        get(&srv, Method::GET, &authed, Some(ALICE)).await.status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn media_created_before_the_freeze_time_stays_served() {
    // Freeze far in the future: what is uploaded now is from before it.
    let mut srv = TestServer::start_with(Opts {
        freeze_unauthenticated: None,
        downloads_extra: FAR_FUTURE.into(),
        ..Opts::default()
    })
    .await;
    let before = srv.upload(ALICE, png(), Some("image/png"), None).await;
    make_thumbnail(&srv, &before).await;
    assert_served_anonymously(&srv, &before).await;

    // The operator sets the freeze time to now: older media stays served, newer is frozen.
    let freeze = now_ms() + 1;
    srv.config_text = srv.config_text.replace(
        FAR_FUTURE,
        &format!("freeze_unauthenticated_after_ms = {freeze}"),
    );
    srv.restart().await;
    // The next upload's time (never before the wall clock at its commit) is after the freeze.
    while now_ms() <= freeze {
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
    let after = srv.upload(ALICE, png(), Some("image/png"), None).await;
    make_thumbnail(&srv, &after).await;
    assert_served_anonymously(&srv, &before).await;
    assert_frozen(&srv, &after).await;
}

#[tokio::test]
async fn freeze_off_serves_new_media_anonymously() {
    let srv = TestServer::start_with(Opts {
        freeze_unauthenticated: Some(false),
        ..Opts::default()
    })
    .await;
    let mxc = srv.upload(ALICE, png(), Some("image/png"), None).await;
    make_thumbnail(&srv, &mxc).await;
    assert_served_anonymously(&srv, &mxc).await;
}
