#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Appservice masquerading (issue #11 item 5): an `as_token` with `?user_id=@ghost` acts as the
//! ghost, as the homeserver decides it (whoami asked with the same `user_id`, answered as
//! Synapse 1.163 answers it by the fake Synapse of [`common::synapse`]); the ghost, not the
//! bridge bot, is recorded as the uploader; a refusal (user outside the namespace, or not
//! registered) is passed on; the whoami cache is per (token, `user_id`).

use crate::common;

use common::synapse::FakeSynapse;
use common::{expect_error, random_bytes, Opts, TestServer, SECRET};
use reqwest::{Response, StatusCode};
use serde_json::Value;

const AS_TOKEN: &str = "bridge-as-token";
const BOT: &str = "@bridgebot:localhost";
const GHOST_1: &str = "@ghost_one:localhost";
const GHOST_2: &str = "@ghost_two:localhost";
const CAROL: &str = "carol-token";
const WHOAMI: &str = "/_matrix/client/v3/account/whoami";

/// A fake Synapse with a bridge (namespace `@ghost_…`, two registered ghosts) and carol; a
/// server asking it, with a long whoami cache.
async fn start() -> (TestServer, FakeSynapse) {
    let hs = FakeSynapse::start(&[]).await;
    hs.add_appservice(AS_TOKEN, BOT, "@ghost_");
    hs.register(GHOST_1);
    hs.register(GHOST_2);
    hs.add_user(CAROL, "@carol:localhost", false);
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

/// `POST /_matrix/media/v3/upload[?user_id=]` as `token`.
async fn upload_as(srv: &TestServer, token: &str, user_id: Option<&str>) -> Response {
    let mut req = srv
        .client
        .post(srv.url("/_matrix/media/v3/upload"))
        .bearer_auth(token)
        .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
        .body(random_bytes(100));
    if let Some(u) = user_id {
        req = req.query(&[("user_id", u)]);
    }
    req.send().await.unwrap()
}

async fn mxc_of(resp: Response) -> String {
    let status = resp.status();
    let text = resp.text().await.unwrap();
    assert_eq!(status, StatusCode::OK, "{text}");
    let v: Value = serde_json::from_str(&text).unwrap();
    v["content_uri"].as_str().unwrap().to_owned()
}

/// The uploader the ledger recorded for each media of `localhost` (usage API).
async fn uploaders(srv: &TestServer) -> Value {
    let resp = srv
        .client
        .get(srv.url("/_matrix/media/unstable/admin/usage/localhost/users"))
        .bearer_auth(SECRET)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    resp.json().await.unwrap()
}

fn whoami_calls(hs: &FakeSynapse, user_id: Option<&str>) -> usize {
    let want = match user_id {
        Some(u) => format!("{WHOAMI}?user_id={u}"),
        None => WHOAMI.to_owned(),
    };
    hs.calls().iter().filter(|(p, _)| *p == want).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_masquerading_appservice_is_recorded_as_its_ghost() {
    let (srv, hs) = start().await;
    let as_ghost_1 = mxc_of(upload_as(&srv, AS_TOKEN, Some(GHOST_1)).await).await;
    let as_ghost_1_again = mxc_of(upload_as(&srv, AS_TOKEN, Some(GHOST_1)).await).await;
    let as_ghost_2 = mxc_of(upload_as(&srv, AS_TOKEN, Some(GHOST_2)).await).await;
    let as_bot = mxc_of(upload_as(&srv, AS_TOKEN, None).await).await;
    // A plain user's token ignores `user_id`, as Synapse does.
    let as_carol = mxc_of(upload_as(&srv, CAROL, Some(GHOST_1)).await).await;

    let usage = uploaders(&srv).await;
    let uploaded = |user: &str| -> Vec<String> {
        usage[user]["uploaded"]
            .as_array()
            .unwrap_or_else(|| panic!("no uploads of {user}: {usage}"))
            .iter()
            .map(|v| v.as_str().unwrap().to_owned())
            .collect()
    };
    let mut ghost_1 = uploaded(GHOST_1);
    ghost_1.sort();
    let mut want = vec![as_ghost_1, as_ghost_1_again];
    want.sort();
    assert_eq!(ghost_1, want, "{usage}");
    assert_eq!(uploaded(GHOST_2), vec![as_ghost_2], "{usage}");
    assert_eq!(uploaded(BOT), vec![as_bot], "{usage}");
    assert_eq!(uploaded("@carol:localhost"), vec![as_carol], "{usage}");

    // whoami was asked with each user_id once: cached per (token, user_id), so ghost_2 is
    // not answered from ghost_1's entry nor the bot from either.
    assert_eq!(whoami_calls(&hs, Some(GHOST_1)), 2, "{:?}", hs.calls()); // the AS, then carol
    assert_eq!(whoami_calls(&hs, Some(GHOST_2)), 1, "{:?}", hs.calls());
    assert_eq!(whoami_calls(&hs, None), 1, "{:?}", hs.calls());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_homeservers_refusal_of_a_masquerade_is_passed_on() {
    let (srv, hs) = start().await;
    // Outside the appservice's namespace.
    let body = expect_error(
        upload_as(&srv, AS_TOKEN, Some("@carol:localhost")).await,
        StatusCode::FORBIDDEN,
        "M_FORBIDDEN",
    )
    .await;
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("cannot masquerade as this user"),
        "{body}"
    );
    // In the namespace, not registered.
    let body = expect_error(
        upload_as(&srv, AS_TOKEN, Some("@ghost_three:localhost")).await,
        StatusCode::FORBIDDEN,
        "M_FORBIDDEN",
    )
    .await;
    assert!(
        body["error"].as_str().unwrap().contains("not registered"),
        "{body}"
    );
    // Refusals are not cached: once registered, the ghost is served.
    hs.register("@ghost_three:localhost");
    mxc_of(upload_as(&srv, AS_TOKEN, Some("@ghost_three:localhost")).await).await;
    // Nothing was recorded for the refused requests.
    let usage = uploaders(&srv).await;
    let users: Vec<&String> = usage.as_object().unwrap().keys().collect();
    assert_eq!(users, vec!["@ghost_three:localhost"], "{usage}");
    // An absurd user_id is refused before the homeserver is asked.
    let long = format!("@{}:localhost", "g".repeat(300));
    expect_error(
        upload_as(&srv, AS_TOKEN, Some(&long)).await,
        StatusCode::BAD_REQUEST,
        "M_INVALID_PARAM",
    )
    .await;
    assert_eq!(hs.calls_to(&format!("{WHOAMI}?user_id=@gg")), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_masqueraded_repository_admin_is_no_admin() {
    let hs = FakeSynapse::start(&[]).await;
    // A bridge whose namespace covers the repository admin `@admin:localhost` (test config).
    hs.add_appservice(AS_TOKEN, BOT, "@admin");
    hs.register("@admin:localhost");
    let srv = TestServer::start_with(Opts {
        homeservers: Some(format!(
            "[[homeservers]]\nname = \"localhost\"\ncs_api = \"{}\"\ndefault = true\n",
            hs.url
        )),
        whoami_cache_ttl_ms: 300_000,
        ..Opts::default()
    })
    .await;
    // The homeserver lets the appservice act as the user (an upload works, as that user)...
    mxc_of(upload_as(&srv, AS_TOKEN, Some("@admin:localhost")).await).await;
    // ...but never in an admin's capacity: an `Admin` route and a moderation route refuse.
    for (method, path) in [
        (
            reqwest::Method::GET,
            "/_matrix/media/unstable/admin/datastores",
        ),
        (
            reqwest::Method::POST,
            "/_matrix/media/unstable/admin/quarantine/user/@carol:localhost",
        ),
        (
            reqwest::Method::GET,
            "/_matrix/media/unstable/admin/usage/localhost/users",
        ),
    ] {
        let resp = srv
            .client
            .request(method, srv.url(path))
            .bearer_auth(AS_TOKEN)
            .query(&[("user_id", "@admin:localhost")])
            .json(&serde_json::json!({}))
            .send()
            .await
            .unwrap();
        expect_error(resp, StatusCode::FORBIDDEN, "M_FORBIDDEN").await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_token_with_many_user_ids_asks_whoami_once() {
    let (srv, hs) = start().await;
    for i in 0..40 {
        let u = format!("@someone_{i}:localhost");
        let resp = upload_as(&srv, CAROL, Some(&u)).await;
        mxc_of(resp).await;
    }
    // The first `user_id` showed the token ignores it (whoami answered carol): every other
    // one is answered from the token's own cache entry.
    let asked = hs
        .calls()
        .iter()
        .filter(|(p, _)| p.starts_with(WHOAMI))
        .count();
    assert_eq!(asked, 1, "{:?}", hs.calls());
    let usage = uploaders(&srv).await;
    assert_eq!(
        usage["@carol:localhost"]["uploaded"]
            .as_array()
            .map(Vec::len),
        Some(40),
        "{usage}"
    );
}
