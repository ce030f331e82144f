#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Static tokens are scoped like whoami tokens: a static token stands for a user of the
//! request's homeserver only (a repository admin's on every homeserver), is never forwarded to
//! another homeserver's whoami, and config refuses one whose user is of no configured
//! homeserver.

use crate::common;

use common::synapse::FakeSynapse;
use common::{
    expect_error, parse_mxc, random_bytes, token_on, Opts, TestServer, ADMIN, ALICE, SECRET,
};
use reqwest::StatusCode;
use serde_json::Value;

const OTHER: &str = "other.example";
const WHOAMI: &str = "/_matrix/client/v3/account/whoami";

/// `localhost` (default, no `cs_api`) and `other.example`, whose `cs_api` is `hs`.
fn two_homeservers(hs: &FakeSynapse) -> Opts {
    Opts {
        homeservers: Some(format!(
            "[[homeservers]]\nname = \"localhost\"\ndefault = true\n\n\
             [[homeservers]]\nname = \"{OTHER}\"\ncs_api = \"{}\"\n",
            hs.url
        )),
        ..Opts::default()
    }
}

/// `POST /_matrix/media/v3/upload` with `Host: host` as `token`.
async fn upload(srv: &TestServer, host: &str, token: &str) -> reqwest::Response {
    srv.client
        .post(srv.url("/_matrix/media/v3/upload"))
        .header(reqwest::header::HOST, host)
        .bearer_auth(token)
        .body(random_bytes(32))
        .send()
        .await
        .unwrap()
}

async fn content_uri(resp: reqwest::Response) -> String {
    let status = resp.status();
    let text = resp.text().await.unwrap();
    assert_eq!(status, StatusCode::OK, "{text}");
    let v: Value = serde_json::from_str(&text).unwrap();
    v["content_uri"].as_str().unwrap().to_owned()
}

/// `POST {admin}/purge/{server}/{id}` with `Host: host` as `token`.
async fn purge(srv: &TestServer, host: &str, token: &str, mxc: &str) -> reqwest::Response {
    let (server, id) = parse_mxc(mxc);
    srv.client
        .post(srv.url(&format!(
            "/_matrix/media/unstable/admin/purge/{server}/{id}"
        )))
        .header(reqwest::header::HOST, host)
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
}

/// `@alice:localhost`'s static token on `Host: other.example`: 401 `M_UNKNOWN_TOKEN` for every
/// route (no upload, reservation or purge of other.example's media as alice), and the token
/// never reaches other.example's whoami; on localhost it cannot purge other.example's media
/// either (not the uploader).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn static_token_is_valid_only_on_its_users_homeserver() {
    let hs = FakeSynapse::start(&[]).await;
    let mut srv = TestServer::start_with(two_homeservers(&hs)).await;
    let alice_other = token_on("alice", OTHER);

    // Her own homeserver: fine.
    let own = content_uri(upload(&srv, "localhost", ALICE).await).await;
    assert!(own.starts_with("mxc://localhost/"), "{own}");

    // other.example: refused, whatever the route.
    expect_error(
        upload(&srv, OTHER, ALICE).await,
        StatusCode::UNAUTHORIZED,
        "M_UNKNOWN_TOKEN",
    )
    .await;
    let resp = srv
        .client
        .post(srv.url("/_matrix/media/v1/create"))
        .header(reqwest::header::HOST, OTHER)
        .bearer_auth(ALICE)
        .send()
        .await
        .unwrap();
    expect_error(resp, StatusCode::UNAUTHORIZED, "M_UNKNOWN_TOKEN").await;
    let resp = srv
        .client
        .get(srv.url("/_matrix/client/v1/media/config"))
        .header(reqwest::header::HOST, format!("{OTHER}:8448"))
        .query(&[("access_token", ALICE)])
        .send()
        .await
        .unwrap();
    expect_error(resp, StatusCode::UNAUTHORIZED, "M_UNKNOWN_TOKEN").await;

    // other.example's media, uploaded by its own alice: localhost's alice purges it neither
    // through other.example (unknown token) nor through localhost (not the uploader).
    let theirs = content_uri(upload(&srv, OTHER, &alice_other).await).await;
    assert!(theirs.starts_with(&format!("mxc://{OTHER}/")), "{theirs}");
    expect_error(
        purge(&srv, OTHER, ALICE, &theirs).await,
        StatusCode::UNAUTHORIZED,
        "M_UNKNOWN_TOKEN",
    )
    .await;
    expect_error(
        purge(&srv, "localhost", ALICE, &theirs).await,
        StatusCode::FORBIDDEN,
        "M_FORBIDDEN",
    )
    .await;
    assert_eq!(srv.download(&theirs).await.status(), StatusCode::OK);
    // Nor does other.example's alice act on localhost.
    expect_error(
        upload(&srv, "localhost", &alice_other).await,
        StatusCode::UNAUTHORIZED,
        "M_UNKNOWN_TOKEN",
    )
    .await;

    // localhost's secret was never sent to other.example's homeserver.
    assert_eq!(hs.calls_to(WHOAMI), 0, "{:?}", hs.calls());
    assert!(
        hs.calls().iter().all(|(_, t)| t.as_deref() != Some(ALICE)),
        "{:?}",
        hs.calls()
    );

    // The uploader still purges her own media, on her own homeserver.
    let resp = purge(&srv, "localhost", ALICE, &own).await;
    assert_eq!(
        resp.status(),
        StatusCode::OK,
        "{}",
        resp.text().await.unwrap()
    );
    srv.stop().await;
}

/// Repository admins act on every homeserver: the shared secret, and a static token of a user
/// in `auth.admins` (here `@admin:localhost`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repository_admin_static_token_is_valid_on_every_homeserver() {
    let hs = FakeSynapse::start(&[]).await;
    let mut srv = TestServer::start_with(two_homeservers(&hs)).await;
    for token in [ADMIN, SECRET] {
        let resp = srv
            .client
            .get(srv.url("/_matrix/media/unstable/admin/datastores"))
            .header(reqwest::header::HOST, OTHER)
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "{token}");
    }
    let mxc = content_uri(upload(&srv, OTHER, ADMIN).await).await;
    assert!(mxc.starts_with(&format!("mxc://{OTHER}/")), "{mxc}");
    let resp = purge(&srv, OTHER, ADMIN, &mxc).await;
    assert_eq!(
        resp.status(),
        StatusCode::OK,
        "{}",
        resp.text().await.unwrap()
    );
    assert_eq!(hs.calls_to(WHOAMI), 0, "{:?}", hs.calls());
    srv.stop().await;
}

/// A static token whose user is of no configured homeserver could never authenticate: config
/// refuses it, naming the user; so does one token string configured for two users.
#[test]
fn config_refuses_static_tokens_of_unconfigured_servers_and_duplicates() {
    let dir = tempfile::tempdir().unwrap();
    let with = |extra: &str| {
        common::config_text(
            dir.path(),
            &Opts {
                extra_toml: extra.to_owned(),
                ..Opts::default()
            },
        )
    };
    let stray =
        "[[auth.static_tokens]]\ntoken = \"carol-token\"\nuser_id = \"@carol:elsewhere.test\"\n";
    let err = media_ledger::config::Config::parse(&with(stray)).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("@carol:elsewhere.test") && msg.contains("configured homeserver"),
        "{msg}"
    );
    let twice =
        format!("[[auth.static_tokens]]\ntoken = \"{ALICE}\"\nuser_id = \"@carol:localhost\"\n");
    let msg = media_ledger::config::Config::parse(&with(&twice))
        .unwrap_err()
        .to_string();
    assert!(msg.contains("configured twice"), "{msg}");
    assert!(!msg.contains(ALICE), "the message shows the token: {msg}");
    // The generated configs themselves are valid.
    media_ledger::config::Config::parse(&with("")).unwrap();
}
