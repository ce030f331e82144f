#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The media part of Synapse's admin API (`/_synapse/admin/v1/…`) served by media-ledger, over
//! real HTTP on loopback with a real ledger and real files: each route's shape (Synapse's
//! paths, queries and answers) and auth (admins of the request's homeserver as the fake
//! Synapse's admin API says, repository admins; 401 without a token, 403 for anyone else),
//! and each act recorded in the audit log like ours.

use crate::common;

use common::synapse::FakeSynapse;
use common::{expect_error, parse_mxc, random_bytes, Opts, TestServer, ADMIN, ALICE, BOB};
use reqwest::{Method, Response, StatusCode};
use serde_json::Value;

const SA: &str = "/_synapse/admin/v1";
const OTHER: &str = "other.test";
/// A token only the fake Synapse knows (of `@bob:localhost`, an admin there): the routes that
/// ask the homeserver with the caller's token need one.
const HS_BOB: &str = "hs-bob-token";

/// bob is an admin of localhost (and the repository admin's token is accepted by the fake
/// Synapse too), alice a plain user; localhost asks the fake Synapse, other.test has no
/// `cs_api`.
async fn start() -> (TestServer, FakeSynapse) {
    let hs = FakeSynapse::start(&[(BOB, "@bob:localhost"), (ADMIN, "@admin:localhost")]).await;
    hs.add_user(ALICE, "@alice:localhost", false);
    hs.add_user(HS_BOB, "@bob:localhost", true);
    let homeservers = format!(
        "[[homeservers]]\nname = \"localhost\"\ndefault = true\ncs_api = \"{}\"\n\n\
         [[homeservers]]\nname = \"{OTHER}\"\n",
        hs.url
    );
    let srv = TestServer::start_with(Opts {
        homeservers: Some(homeservers),
        ..Opts::default()
    })
    .await;
    (srv, hs)
}

async fn call(srv: &TestServer, method: Method, token: Option<&str>, path: &str) -> Response {
    let mut req = srv
        .client
        .request(method, srv.url(&format!("{SA}/{path}")))
        .header(reqwest::header::HOST, "localhost");
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    req.send().await.unwrap()
}

async fn json_ok(resp: Response) -> Value {
    let status = resp.status();
    let url = resp.url().clone();
    let text = resp.text().await.unwrap();
    assert_eq!(status, StatusCode::OK, "{url}: {text}");
    serde_json::from_str(&text).unwrap()
}

async fn ok(srv: &TestServer, method: Method, token: &str, path: &str) -> Value {
    json_ok(call(srv, method, Some(token), path).await).await
}

/// Uploads `n` bytes as `token`; the media id.
async fn upload(srv: &TestServer, token: &str, n: usize) -> String {
    let resp = srv
        .client
        .post(srv.url("/_matrix/media/v3/upload?filename=f.bin"))
        .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
        .bearer_auth(token)
        .body(random_bytes(n))
        .send()
        .await
        .unwrap();
    let v = json_ok(resp).await;
    parse_mxc(v["content_uri"].as_str().unwrap()).1
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// The audit log's acts (type, actor), oldest first.
async fn acts(srv: &TestServer) -> Vec<(String, String)> {
    let v = json_ok(
        srv.client
            .get(srv.url("/_matrix/media/unstable/admin/audit?limit=500"))
            .bearer_auth(ADMIN)
            .send()
            .await
            .unwrap(),
    )
    .await;
    let mut out: Vec<(String, String)> = v["chunk"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["type"].as_str().unwrap().to_owned(),
                e["actor"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    out.reverse();
    out
}

#[tokio::test]
async fn every_route_needs_an_admin_of_the_homeserver() {
    let (srv, _hs) = start().await;
    let id = upload(&srv, ALICE, 10).await;
    let routes: Vec<(Method, String)> = vec![
        (Method::GET, format!("media/localhost/{id}")),
        (Method::DELETE, format!("media/localhost/{id}")),
        (Method::POST, format!("media/quarantine/localhost/{id}")),
        (Method::POST, format!("media/unquarantine/localhost/{id}")),
        (Method::POST, "room/!room:localhost/media/quarantine".into()),
        (Method::POST, "quarantine_media/!room:localhost".into()),
        (
            Method::POST,
            "user/@alice:localhost/media/quarantine".into(),
        ),
        (Method::POST, format!("media/protect/{id}")),
        (Method::POST, format!("media/unprotect/{id}")),
        (Method::GET, "users/@alice:localhost/media".into()),
        (Method::DELETE, "users/@alice:localhost/media".into()),
        (Method::POST, "media/delete?before_ts=40000000000".into()),
        (
            Method::POST,
            "media/localhost/delete?before_ts=40000000000".into(),
        ),
        (
            Method::POST,
            "purge_media_cache?before_ts=40000000000".into(),
        ),
        (Method::GET, "statistics/users/media".into()),
    ];
    for (method, path) in &routes {
        let r = call(&srv, method.clone(), None, path).await;
        expect_error(r, StatusCode::UNAUTHORIZED, "M_MISSING_TOKEN").await;
        let r = call(&srv, method.clone(), Some("nobody-knows-me"), path).await;
        expect_error(r, StatusCode::UNAUTHORIZED, "M_UNKNOWN_TOKEN").await;
        // A plain user of the homeserver: 403 before anything is judged or done.
        let r = call(&srv, method.clone(), Some(ALICE), path).await;
        expect_error(r, StatusCode::FORBIDDEN, "M_FORBIDDEN").await;
    }
    // The remote cache is every homeserver's: a homeserver admin may not purge it.
    let r = call(
        &srv,
        Method::POST,
        Some(BOB),
        "purge_media_cache?before_ts=40000000000",
    )
    .await;
    expect_error(r, StatusCode::FORBIDDEN, "M_FORBIDDEN").await;
    // Nothing was recorded, and the media is still there.
    assert!(acts(&srv).await.is_empty());
    ok(&srv, Method::GET, BOB, &format!("media/localhost/{id}")).await;
}

#[tokio::test]
async fn media_info_quarantine_and_protect_have_synapses_shapes() {
    let (srv, _hs) = start().await;
    let id = upload(&srv, ALICE, 1234).await;
    let info = ok(&srv, Method::GET, BOB, &format!("media/localhost/{id}")).await;
    let i = &info["media_info"];
    assert_eq!(i["media_origin"], Value::Null);
    assert_eq!(i["user_id"], "@alice:localhost");
    assert_eq!(i["media_id"], id.as_str());
    assert_eq!(i["media_type"], "application/octet-stream");
    assert_eq!(i["media_length"], 1234);
    assert_eq!(i["upload_name"], "f.bin");
    assert!(i["created_ts"].as_u64().unwrap() > 0);
    assert_eq!(i["quarantined_by"], Value::Null);
    assert_eq!(i["safe_from_quarantine"], false);
    assert_eq!(i["sha256"].as_str().unwrap().len(), 64);
    // Unknown media: 404 "Unknown media"; another server's for a homeserver admin: 403.
    let r = call(&srv, Method::GET, Some(BOB), "media/localhost/nosuchmedia").await;
    expect_error(r, StatusCode::NOT_FOUND, "M_NOT_FOUND").await;
    let r = call(&srv, Method::GET, Some(BOB), &format!("media/{OTHER}/{id}")).await;
    expect_error(r, StatusCode::FORBIDDEN, "M_FORBIDDEN").await;

    // Quarantine: `{}`, the download refused, quarantined_by the admin.
    let v = ok(
        &srv,
        Method::POST,
        BOB,
        &format!("media/quarantine/localhost/{id}"),
    )
    .await;
    assert_eq!(v, serde_json::json!({}));
    let info = ok(&srv, Method::GET, BOB, &format!("media/localhost/{id}")).await;
    assert_eq!(info["media_info"]["quarantined_by"], "@bob:localhost");
    let dl = srv.download(&format!("mxc://localhost/{id}")).await;
    assert_ne!(dl.status(), StatusCode::OK);
    // Unquarantine: `{}`, served again.
    let v = ok(
        &srv,
        Method::POST,
        BOB,
        &format!("media/unquarantine/localhost/{id}"),
    )
    .await;
    assert_eq!(v, serde_json::json!({}));
    let info = ok(&srv, Method::GET, ADMIN, &format!("media/localhost/{id}")).await;
    assert_eq!(info["media_info"]["quarantined_by"], Value::Null);
    assert_eq!(
        srv.download(&format!("mxc://localhost/{id}"))
            .await
            .status(),
        StatusCode::OK
    );

    // Protect: safe from quarantine; unprotect lifts it.
    assert_eq!(
        ok(&srv, Method::POST, BOB, &format!("media/protect/{id}")).await,
        serde_json::json!({})
    );
    let info = ok(&srv, Method::GET, BOB, &format!("media/localhost/{id}")).await;
    assert_eq!(info["media_info"]["safe_from_quarantine"], true);
    ok(
        &srv,
        Method::POST,
        BOB,
        &format!("media/quarantine/localhost/{id}"),
    )
    .await;
    let info = ok(&srv, Method::GET, BOB, &format!("media/localhost/{id}")).await;
    assert_eq!(info["media_info"]["quarantined_by"], Value::Null);
    ok(&srv, Method::POST, BOB, &format!("media/unprotect/{id}")).await;
    let info = ok(&srv, Method::GET, BOB, &format!("media/localhost/{id}")).await;
    assert_eq!(info["media_info"]["safe_from_quarantine"], false);
    let r = call(&srv, Method::POST, Some(BOB), "media/protect/nosuchmedia").await;
    expect_error(r, StatusCode::NOT_FOUND, "M_NOT_FOUND").await;

    // Each act is recorded like ours, with its actor.
    let types: Vec<(String, String)> = acts(&srv).await;
    let bob = "@bob:localhost".to_owned();
    assert_eq!(
        types,
        vec![
            ("media.quarantined.v1".to_owned(), bob.clone()),
            ("media.unquarantined.v1".to_owned(), bob.clone()),
            ("media.attributes_set.v1".to_owned(), bob.clone()),
            // The protected media is not quarantined; the act still blocks its bytes.
            ("media.quarantined.v1".to_owned(), bob.clone()),
            ("media.attributes_set.v1".to_owned(), bob.clone()),
        ]
    );
}

#[tokio::test]
async fn room_and_user_quarantine_count_what_they_quarantined() {
    let (srv, hs) = start().await;
    let a1 = upload(&srv, ALICE, 10).await;
    let a2 = upload(&srv, ALICE, 11).await;
    let b1 = upload(&srv, BOB, 12).await;
    let v = ok(
        &srv,
        Method::POST,
        BOB,
        "user/@alice:localhost/media/quarantine",
    )
    .await;
    assert_eq!(v["num_quarantined"], 2);
    let room = "!abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQ";
    hs.set_room_media(room, &[&format!("mxc://localhost/{b1}")], &[]);
    let v = ok(
        &srv,
        Method::POST,
        HS_BOB,
        &format!("room/{room}/media/quarantine"),
    )
    .await;
    assert_eq!(v["num_quarantined"], 1);
    // Already quarantined: nothing more, through the legacy path too.
    let v = ok(
        &srv,
        Method::POST,
        HS_BOB,
        &format!("quarantine_media/{room}"),
    )
    .await;
    assert_eq!(v["num_quarantined"], 0);
    for id in [a1, a2, b1] {
        let info = ok(&srv, Method::GET, BOB, &format!("media/localhost/{id}")).await;
        assert_eq!(info["media_info"]["quarantined_by"], "@bob:localhost");
    }
    let r = call(
        &srv,
        Method::POST,
        Some(BOB),
        "room/not-a-room/media/quarantine",
    )
    .await;
    expect_error(r, StatusCode::BAD_REQUEST, "M_INVALID_PARAM").await;
}

#[tokio::test]
async fn a_users_media_is_paged_sorted_and_deleted_as_synapse_does() {
    let (srv, _hs) = start().await;
    let small = upload(&srv, ALICE, 10).await;
    let big = upload(&srv, ALICE, 300).await;
    let mid = upload(&srv, ALICE, 200).await;
    upload(&srv, BOB, 50).await;
    // Default: newest first, 100 a page.
    let v = ok(&srv, Method::GET, BOB, "users/@alice:localhost/media").await;
    assert_eq!(v["total"], 3);
    assert!(v.get("next_token").is_none());
    let ids: Vec<&str> = v["media"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["media_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec![mid.as_str(), big.as_str(), small.as_str()]);
    let m0 = &v["media"][0];
    assert_eq!(m0["media_length"], 200);
    assert_eq!(m0["user_id"], "@alice:localhost");
    assert_eq!(m0["safe_from_quarantine"], false);
    assert_eq!(m0["quarantined_by"], Value::Null);
    // By size, ascending, two a page.
    let v = ok(
        &srv,
        Method::GET,
        BOB,
        "users/@alice:localhost/media?order_by=media_length&dir=f&limit=2",
    )
    .await;
    assert_eq!(v["total"], 3);
    assert_eq!(v["next_token"], 2);
    assert_eq!(v["media"][0]["media_id"], small.as_str());
    assert_eq!(v["media"][1]["media_id"], mid.as_str());
    let v = ok(
        &srv,
        Method::GET,
        BOB,
        "users/@alice:localhost/media?order_by=media_length&dir=f&limit=2&from=2",
    )
    .await;
    assert_eq!(v["media"][0]["media_id"], big.as_str());
    assert!(v.get("next_token").is_none());
    // Bad queries and non-local users.
    for q in ["order_by=size", "dir=x", "from=-1", "limit=abc"] {
        let r = call(
            &srv,
            Method::GET,
            Some(BOB),
            &format!("users/@alice:localhost/media?{q}"),
        )
        .await;
        expect_error(r, StatusCode::BAD_REQUEST, "M_INVALID_PARAM").await;
    }
    let r = call(
        &srv,
        Method::GET,
        Some(ADMIN),
        &format!("users/@alice:{OTHER}/media"),
    )
    .await;
    expect_error(r, StatusCode::BAD_REQUEST, "M_INVALID_PARAM").await;
    let r = call(
        &srv,
        Method::GET,
        Some(BOB),
        &format!("users/@alice:{OTHER}/media"),
    )
    .await;
    expect_error(r, StatusCode::FORBIDDEN, "M_FORBIDDEN").await;
    // DELETE the page of the smallest one.
    let v = ok(
        &srv,
        Method::DELETE,
        BOB,
        "users/@alice:localhost/media?order_by=media_length&dir=f&limit=1",
    )
    .await;
    assert_eq!(v["deleted_media"], serde_json::json!([small]));
    assert_eq!(v["total"], 1);
    let v = ok(&srv, Method::GET, BOB, "users/@alice:localhost/media").await;
    assert_eq!(v["total"], 2);
    assert_eq!(
        acts(&srv).await,
        vec![("media.purged.v1".into(), "@bob:localhost".into())]
    );
}

#[tokio::test]
async fn deletion_by_id_and_by_date_spare_what_synapse_spares() {
    let (srv, hs) = start().await;
    let one = upload(&srv, ALICE, 10).await;
    let v = ok(&srv, Method::DELETE, BOB, &format!("media/localhost/{one}")).await;
    assert_eq!(v["deleted_media"], serde_json::json!([one]));
    assert_eq!(v["total"], 1);
    let r = call(
        &srv,
        Method::GET,
        Some(BOB),
        &format!("media/localhost/{one}"),
    )
    .await;
    expect_error(r, StatusCode::NOT_FOUND, "M_NOT_FOUND").await;
    let r = call(
        &srv,
        Method::DELETE,
        Some(BOB),
        &format!("media/localhost/{one}"),
    )
    .await;
    expect_error(r, StatusCode::NOT_FOUND, "M_NOT_FOUND").await;
    let r = call(
        &srv,
        Method::DELETE,
        Some(ADMIN),
        &format!("media/{OTHER}/{one}"),
    )
    .await;
    expect_error(r, StatusCode::BAD_REQUEST, "M_INVALID_PARAM").await;

    let tiny = upload(&srv, ALICE, 5).await;
    let avatar = upload(&srv, ALICE, 500).await;
    let quarantined = upload(&srv, ALICE, 501).await;
    let protected = upload(&srv, ALICE, 502).await;
    let old = upload(&srv, ALICE, 503).await;
    hs.set_avatar("@alice:localhost", &format!("mxc://localhost/{avatar}"));
    ok(
        &srv,
        Method::POST,
        BOB,
        &format!("media/quarantine/localhost/{quarantined}"),
    )
    .await;
    ok(
        &srv,
        Method::POST,
        BOB,
        &format!("media/protect/{protected}"),
    )
    .await;
    // Synapse's checks of the query.
    for (q, status, code) in [
        ("", StatusCode::BAD_REQUEST, "M_MISSING_PARAM"),
        (
            "?before_ts=1000",
            StatusCode::BAD_REQUEST,
            "M_INVALID_PARAM",
        ),
        ("?before_ts=-1", StatusCode::BAD_REQUEST, "M_INVALID_PARAM"),
        (
            "?before_ts=40000000000&keep_profiles=maybe",
            StatusCode::BAD_REQUEST,
            "M_INVALID_PARAM",
        ),
    ] {
        let r = call(&srv, Method::POST, Some(BOB), &format!("media/delete{q}")).await;
        expect_error(r, status, code).await;
    }
    let r = call(
        &srv,
        Method::POST,
        Some(BOB),
        &format!("media/{OTHER}/delete?before_ts=40000000000"),
    )
    .await;
    expect_error(r, StatusCode::BAD_REQUEST, "M_INVALID_PARAM").await;
    // Before the uploads: nothing.
    let v = ok(
        &srv,
        Method::POST,
        HS_BOB,
        "media/delete?before_ts=40000000000",
    )
    .await;
    assert_eq!(v["total"], 0);
    // Now, larger than 100 bytes, keeping profiles: only `old` (the avatar is kept, the
    // quarantined and protected media too, `tiny` is too small).
    let before = now_ms() + 60_000;
    let v = ok(
        &srv,
        Method::POST,
        HS_BOB,
        &format!("media/delete?before_ts={before}&size_gt=100"),
    )
    .await;
    assert_eq!(v["deleted_media"], serde_json::json!([old]));
    assert_eq!(v["total"], 1);
    // Without keep_profiles (the older path), the avatar goes too.
    let v = ok(
        &srv,
        Method::POST,
        BOB,
        &format!("media/localhost/delete?before_ts={before}&size_gt=100&keep_profiles=false"),
    )
    .await;
    assert_eq!(v["deleted_media"], serde_json::json!([avatar]));
    for id in [tiny, quarantined, protected] {
        ok(&srv, Method::GET, BOB, &format!("media/localhost/{id}")).await;
    }
}

#[tokio::test]
async fn purge_media_cache_and_statistics_answer_synapses_shapes() {
    let (srv, _hs) = start().await;
    let r = call(&srv, Method::POST, Some(ADMIN), "purge_media_cache").await;
    expect_error(r, StatusCode::BAD_REQUEST, "M_MISSING_PARAM").await;
    let r = call(
        &srv,
        Method::POST,
        Some(ADMIN),
        "purge_media_cache?before_ts=5",
    )
    .await;
    expect_error(r, StatusCode::BAD_REQUEST, "M_INVALID_PARAM").await;
    let local = upload(&srv, ALICE, 10).await;
    let v = ok(
        &srv,
        Method::POST,
        ADMIN,
        &format!("purge_media_cache?before_ts={}", now_ms() + 60_000),
    )
    .await;
    // Local media is not the remote cache.
    assert_eq!(v, serde_json::json!({ "deleted": 0 }));
    ok(&srv, Method::GET, BOB, &format!("media/localhost/{local}")).await;

    upload(&srv, ALICE, 100).await;
    upload(&srv, BOB, 1000).await;
    let v = ok(&srv, Method::GET, BOB, "statistics/users/media").await;
    assert_eq!(v["total"], 2);
    assert_eq!(
        v["users"],
        serde_json::json!([
            { "user_id": "@alice:localhost", "displayname": null, "media_count": 2, "media_length": 110 },
            { "user_id": "@bob:localhost", "displayname": null, "media_count": 1, "media_length": 1000 },
        ])
    );
    let v = ok(
        &srv,
        Method::GET,
        BOB,
        "statistics/users/media?order_by=media_length&dir=b&limit=1",
    )
    .await;
    assert_eq!(v["users"][0]["user_id"], "@bob:localhost");
    assert_eq!(v["next_token"], 1);
    let v = ok(
        &srv,
        Method::GET,
        BOB,
        "statistics/users/media?search_term=ALI",
    )
    .await;
    assert_eq!(v["total"], 1);
    let v = ok(
        &srv,
        Method::GET,
        BOB,
        "statistics/users/media?from_ts=1&until_ts=2",
    )
    .await;
    assert_eq!(v["total"], 0);
    for q in [
        "order_by=size",
        "from=-1",
        "search_term=",
        "from_ts=5&until_ts=5",
        "dir=sideways",
    ] {
        let r = call(
            &srv,
            Method::GET,
            Some(BOB),
            &format!("statistics/users/media?{q}"),
        )
        .await;
        expect_error(r, StatusCode::BAD_REQUEST, "M_INVALID_PARAM").await;
    }
}

/// The shared secret and static tokens are never sent to the homeserver: listing a room's
/// media (Synapse's route and ours) and `keep_profiles` (the avatars) need a token the
/// homeserver resolved, else 400 saying so; `keep_profiles=false` works with any admin token.
#[tokio::test]
async fn secrets_and_static_tokens_never_reach_the_homeserver() {
    let (srv, hs) = start().await;
    let room = "!r:localhost";
    hs.set_room_media(room, &[], &[]);
    let before = now_ms() + 60_000;
    for token in [common::SECRET, ADMIN] {
        for (method, path) in [
            (Method::POST, format!("{SA}/room/{room}/media/quarantine")),
            (Method::POST, format!("{SA}/quarantine_media/{room}")),
            (
                Method::POST,
                format!("{SA}/media/delete?before_ts={before}"),
            ),
            (
                Method::POST,
                format!("{SA}/media/localhost/delete?before_ts={before}&keep_profiles=true"),
            ),
            (
                Method::POST,
                format!("/_matrix/media/unstable/admin/quarantine/room/{room}"),
            ),
            (
                Method::POST,
                format!("/_matrix/media/unstable/admin/purge/room/{room}"),
            ),
        ] {
            let r = srv
                .client
                .request(method, srv.url(&path))
                .header(reqwest::header::HOST, "localhost")
                .bearer_auth(token)
                .send()
                .await
                .unwrap();
            let status = r.status();
            let v: Value = r.json().await.unwrap();
            assert_eq!(status, StatusCode::BAD_REQUEST, "{path}: {v}");
            assert_eq!(v["errcode"], "M_INVALID_PARAM", "{path}: {v}");
            assert!(
                v["error"]
                    .as_str()
                    .unwrap()
                    .contains("homeserver admin's token"),
                "{path}: {v}"
            );
        }
        let v = ok(
            &srv,
            Method::POST,
            token,
            &format!("media/delete?before_ts={before}&keep_profiles=false"),
        )
        .await;
        assert_eq!(v["total"], 0);
    }
    let leaked: Vec<_> = hs
        .calls()
        .into_iter()
        .filter(|(_, t)| matches!(t.as_deref(), Some(common::SECRET) | Some(ADMIN)))
        .collect();
    assert!(leaked.is_empty(), "{leaked:?}");
}
