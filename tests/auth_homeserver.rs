#![allow(clippy::unwrap_used, clippy::expect_used)]
//! What the homeserver says of a token, passed on as Synapse 1.163 says it (the fake Synapse of
//! [`common::synapse`]): guest accounts download but neither upload, reserve nor moderate (403
//! `M_GUEST_ACCESS_FORBIDDEN`); an expired refreshable token is a soft logout (401
//! `M_UNKNOWN_TOKEN`, `"soft_logout": true`); `POST /_matrix/client/{r0,v3}/logout[/all]` is
//! proxied to the homeserver and the whoami cache forgets the token (for `logout/all`, every
//! token of the user) at once, not after `auth.whoami_cache_ttl_ms`.

use crate::common;

use common::synapse::FakeSynapse;
use common::{expect_error, parse_mxc, random_bytes, Opts, TestServer, ALICE, SECRET};
use reqwest::{Response, StatusCode};
use serde_json::{json, Value};

const GUEST: &str = "guest-token";
const CAROL: &str = "carol-token";
const CAROL_2: &str = "carol-second-token";
const ERIN: &str = "erin-token";
const WHOAMI: &str = "/_matrix/client/v3/account/whoami";

/// A fake Synapse knowing a guest, carol (two sessions) and erin; a server whose `localhost`
/// asks it, with the default five-minute whoami cache.
async fn start() -> (TestServer, FakeSynapse) {
    let hs = FakeSynapse::start(&[]).await;
    hs.add_guest(GUEST, "@guest:localhost");
    hs.add_user(CAROL, "@carol:localhost", false);
    hs.add_user(CAROL_2, "@carol:localhost", false);
    hs.add_user(ERIN, "@erin:localhost", false);
    let srv = TestServer::start_with(Opts {
        homeservers: Some(format!(
            "[[homeservers]]\nname = \"localhost\"\ncs_api = \"{}\"\ndefault = true\n",
            hs.url
        )),
        whoami_cache_ttl_ms: 300_000,
        ..Opts::default()
    })
    .await;
    (srv, hs)
}

async fn send(srv: &TestServer, method: reqwest::Method, path: &str, token: &str) -> Response {
    srv.client
        .request(method, srv.url(path))
        .bearer_auth(token)
        .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
        .body(b"some bytes".to_vec())
        .send()
        .await
        .unwrap()
}

async fn upload(srv: &TestServer, token: &str) -> Response {
    srv.upload_raw(
        token,
        random_bytes(64),
        Some("application/octet-stream"),
        None,
    )
    .await
}

async fn authed_download(srv: &TestServer, token: &str, mxc: &str) -> Response {
    let (server, id) = parse_mxc(mxc);
    send(
        srv,
        reqwest::Method::GET,
        &format!("/_matrix/client/v1/media/download/{server}/{id}"),
        token,
    )
    .await
}

async fn logout(srv: &TestServer, path: &str, token: Option<&str>) -> Response {
    let mut req = srv.client.post(srv.url(path)).json(&json!({}));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    req.send().await.unwrap()
}

async fn json_of(resp: Response, status: StatusCode) -> Value {
    let got = resp.status();
    let text = resp.text().await.unwrap();
    assert_eq!(got, status, "{text}");
    serde_json::from_str(&text).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guests_download_but_neither_upload_nor_reserve() {
    let (mut srv, hs) = start().await;
    let bytes = random_bytes(300);
    let mxc = srv.upload_bytes(bytes.clone()).await;

    // Downloads: the authenticated endpoint and the legacy one with the guest's token.
    let resp = authed_download(&srv, GUEST, &mxc).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.bytes().await.unwrap().as_ref(), &bytes[..]);
    let (server, id) = parse_mxc(&mxc);
    let resp = send(
        &srv,
        reqwest::Method::GET,
        &format!("/_matrix/media/v3/download/{server}/{id}"),
        GUEST,
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK);

    // Uploads, reservations, filling a reservation, the config, moderation: refused as
    // Synapse refuses them (its `get_user_by_req` without `allow_guest`).
    let reserved = json_of(
        send(
            &srv,
            reqwest::Method::POST,
            "/_matrix/media/v1/create",
            ALICE,
        )
        .await,
        StatusCode::OK,
    )
    .await;
    let (rs, rid) = parse_mxc(reserved["content_uri"].as_str().unwrap());
    let refused = [
        upload(&srv, GUEST).await,
        send(
            &srv,
            reqwest::Method::POST,
            "/_matrix/media/r0/upload",
            GUEST,
        )
        .await,
        send(
            &srv,
            reqwest::Method::POST,
            "/_matrix/media/v1/create",
            GUEST,
        )
        .await,
        send(
            &srv,
            reqwest::Method::PUT,
            &format!("/_matrix/media/v3/upload/{rs}/{rid}"),
            GUEST,
        )
        .await,
        send(
            &srv,
            reqwest::Method::GET,
            "/_matrix/media/v3/config",
            GUEST,
        )
        .await,
        send(
            &srv,
            reqwest::Method::GET,
            "/_matrix/client/v1/media/config",
            GUEST,
        )
        .await,
        send(
            &srv,
            reqwest::Method::POST,
            &format!("/_matrix/media/unstable/admin/quarantine/{server}/{id}"),
            GUEST,
        )
        .await,
    ];
    for resp in refused {
        let e = expect_error(resp, StatusCode::FORBIDDEN, "M_GUEST_ACCESS_FORBIDDEN").await;
        assert_eq!(e["error"], "Guest access not allowed");
    }
    // A full account of the same homeserver uploads (whoami said `is_guest: false`).
    assert_eq!(upload(&srv, CAROL).await.status(), StatusCode::OK);
    // Nothing the guest asked for was recorded: alice's reservation is still empty.
    let resp = srv
        .client
        .put(srv.url(&format!("/_matrix/media/v3/upload/{rs}/{rid}")))
        .bearer_auth(ALICE)
        .body(b"alice's bytes".to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        hs.calls()
            .iter()
            .filter(|(p, t)| p == WHOAMI && t.as_deref() == Some(GUEST))
            .count(),
        1,
        "the guest's whoami answer (with is_guest) is cached like any other"
    );
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_token_is_a_soft_logout_as_the_homeserver_says() {
    let (mut srv, hs) = start().await;
    let mxc = srv.upload_bytes(random_bytes(100)).await;
    hs.expire(ERIN);
    for resp in [
        upload(&srv, ERIN).await,
        authed_download(&srv, ERIN, &mxc).await,
    ] {
        let e = expect_error(resp, StatusCode::UNAUTHORIZED, "M_UNKNOWN_TOKEN").await;
        assert_eq!(e["soft_logout"], json!(true), "{e}");
        assert_eq!(e["error"], "Access token has expired", "{e}");
    }
    // A token the homeserver never issued: a hard logout, as it says.
    let e = expect_error(
        upload(&srv, "nobody-token").await,
        StatusCode::UNAUTHORIZED,
        "M_UNKNOWN_TOKEN",
    )
    .await;
    assert_eq!(e["soft_logout"], json!(false), "{e}");
    // Refusals are not cached: the refreshed session (a new token) works at once.
    hs.add_user("erin-refreshed", "@erin:localhost", false);
    assert_eq!(
        upload(&srv, "erin-refreshed").await.status(),
        StatusCode::OK
    );
    // Our own refusals say nothing of soft logout.
    let e = expect_error(
        srv.client
            .post(srv.url("/_matrix/media/v3/upload"))
            .send()
            .await
            .unwrap(),
        StatusCode::UNAUTHORIZED,
        "M_MISSING_TOKEN",
    )
    .await;
    assert!(e.get("soft_logout").is_none(), "{e}");
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_is_proxied_and_evicts_the_cached_token() {
    let (mut srv, hs) = start().await;
    // Cached (five minutes) by a first request each.
    for t in [CAROL, CAROL_2, ERIN] {
        assert_eq!(upload(&srv, t).await.status(), StatusCode::OK, "{t}");
    }
    hs.add_user("erin-r0", "@erin:localhost", false);
    assert_eq!(upload(&srv, "erin-r0").await.status(), StatusCode::OK);

    // Logout: the homeserver's answer, and the token no longer works here at once.
    let v = json_of(
        logout(&srv, "/_matrix/client/v3/logout", Some(ERIN)).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(v, json!({}));
    assert!(!hs.knows(ERIN));
    let e = expect_error(
        upload(&srv, ERIN).await,
        StatusCode::UNAUTHORIZED,
        "M_UNKNOWN_TOKEN",
    )
    .await;
    assert_eq!(e["soft_logout"], json!(false), "{e}");
    // r0 too; the other sessions stay cached (no new whoami for them).
    let before = hs.calls_to(WHOAMI);
    json_of(
        logout(&srv, "/_matrix/client/r0/logout", Some("erin-r0")).await,
        StatusCode::OK,
    )
    .await;
    assert!(hs.calls_to("/_matrix/client/r0/logout") == 1);
    assert_eq!(upload(&srv, CAROL_2).await.status(), StatusCode::OK);
    assert_eq!(
        hs.calls_to(WHOAMI),
        before,
        "carol's second session is still cached"
    );
    expect_error(
        upload(&srv, "erin-r0").await,
        StatusCode::UNAUTHORIZED,
        "M_UNKNOWN_TOKEN",
    )
    .await;

    // logout/all: every cached token of the user goes, the other users' stay.
    hs.add_user(ERIN, "@erin:localhost", false);
    assert_eq!(upload(&srv, ERIN).await.status(), StatusCode::OK);
    let v = json_of(
        logout(&srv, "/_matrix/client/v3/logout/all", Some(CAROL)).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(v, json!({}));
    for t in [CAROL, CAROL_2] {
        assert!(!hs.knows(t));
        expect_error(
            upload(&srv, t).await,
            StatusCode::UNAUTHORIZED,
            "M_UNKNOWN_TOKEN",
        )
        .await;
    }
    let before = hs.calls_to(WHOAMI);
    assert_eq!(upload(&srv, ERIN).await.status(), StatusCode::OK);
    assert_eq!(
        hs.calls_to(WHOAMI),
        before,
        "erin's session is still cached"
    );

    // The homeserver's refusals are passed on; no token is ours to refuse; configured tokens
    // are never sent to the homeserver; other versions are not routes.
    expect_error(
        logout(&srv, "/_matrix/client/v3/logout", Some(CAROL)).await,
        StatusCode::UNAUTHORIZED,
        "M_UNKNOWN_TOKEN",
    )
    .await;
    expect_error(
        logout(&srv, "/_matrix/client/v3/logout", None).await,
        StatusCode::UNAUTHORIZED,
        "M_MISSING_TOKEN",
    )
    .await;
    let sent = hs.calls_to("/_matrix/client/v3/logout");
    for t in [ALICE, SECRET] {
        for path in ["/_matrix/client/v3/logout", "/_matrix/client/v3/logout/all"] {
            expect_error(
                logout(&srv, path, Some(t)).await,
                StatusCode::FORBIDDEN,
                "M_FORBIDDEN",
            )
            .await;
        }
    }
    assert_eq!(
        hs.calls_to("/_matrix/client/v3/logout"),
        sent,
        "a configured token was sent"
    );
    expect_error(
        logout(&srv, "/_matrix/client/v1/logout", Some(ERIN)).await,
        StatusCode::NOT_FOUND,
        "M_UNRECOGNIZED",
    )
    .await;
    assert_eq!(upload(&srv, ALICE).await.status(), StatusCode::OK);
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_without_a_homeserver_api_is_not_found() {
    let mut srv = TestServer::start().await;
    expect_error(
        logout(&srv, "/_matrix/client/v3/logout", Some("some-token")).await,
        StatusCode::NOT_FOUND,
        "M_NOT_FOUND",
    )
    .await;
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_strangers_logout_evicts_nothing_of_anyone_else() {
    let (srv, hs) = start().await;
    assert_eq!(upload(&srv, ERIN).await.status(), StatusCode::OK);
    for path in ["/_matrix/client/v3/logout", "/_matrix/client/v3/logout/all"] {
        for _ in 0..5 {
            expect_error(
                logout(&srv, path, Some("garbage-token")).await,
                StatusCode::UNAUTHORIZED,
                "M_UNKNOWN_TOKEN",
            )
            .await;
        }
    }
    // erin's token is still cached, and a user first seen now is cached as usual.
    let before = hs.calls_to(WHOAMI);
    assert_eq!(upload(&srv, ERIN).await.status(), StatusCode::OK);
    assert_eq!(hs.calls_to(WHOAMI), before, "erin's token was evicted");
    assert_eq!(upload(&srv, CAROL).await.status(), StatusCode::OK);
    assert_eq!(upload(&srv, CAROL).await.status(), StatusCode::OK);
    assert_eq!(
        hs.calls_to(WHOAMI),
        before + 1,
        "carol's token was not cached"
    );
}
