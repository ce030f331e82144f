#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The HTTP edge against hostile input that the catalogue of `bad_input` does not reach:
//! content types a browser reads as a list, server names that can never resolve, waiters on a
//! pending async upload, tenants reading each other's history, static tokens on another
//! homeserver.

use crate::common;

use common::{expect_error, header, parse_mxc, random_bytes, TestServer, ALICE, DS};
use media_ledger::ledger::Command;
use media_ledger_events::{Actor, ContentType, MediaUploaded, RequestId};
use reqwest::StatusCode;

/// An upload's `Content-Type` with a comma (a browser takes the last type of a list) is
/// refused; other types are stored in their canonical form.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn comma_content_types_are_refused_at_upload() {
    let mut srv = TestServer::start().await;
    for ct in [
        "text/plain;, text/html",
        "image/png;, image/svg+xml",
        "image/png, image/svg+xml",
        "text/plain; charset=utf-8, text/html",
    ] {
        let resp = srv
            .upload_raw(ALICE, random_bytes(10), Some(ct), None)
            .await;
        expect_error(resp, StatusCode::BAD_REQUEST, "M_INVALID_PARAM").await;
    }
    let mxc = srv
        .upload(
            ALICE,
            random_bytes(10),
            Some("Image/PNG;Charset=binary"),
            None,
        )
        .await;
    let resp = srv.download(&mxc).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(header(&resp, "content-type"), "image/png; charset=binary");
    srv.stop().await;
}

/// A record from before the strict rule (events are immutable) is served with its parsed
/// type only, on every serving path.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stored_comma_content_types_are_served_as_the_parsed_type() {
    let mut srv = TestServer::start().await;
    let bytes = b"<svg xmlns='http://www.w3.org/2000/svg'><script>alert(1)</script></svg>".to_vec();
    let first = srv.upload_bytes(bytes.clone()).await;
    let (server, _) = parse_mxc(&first);
    let mut served = Vec::new();
    for (id, stored) in [
        ("oldcomma", "text/plain;, text/html"),
        ("oldlist", "image/png;, image/svg+xml"),
        ("oldjunk", "x y/z"),
    ] {
        let media = format!("mxc://{server}/{id}").parse().unwrap();
        let event = MediaUploaded {
            media,
            sha256: common::sha256_hex(&bytes).parse().unwrap(),
            size_bytes: bytes.len() as u64,
            // The lenient decoding of stored values accepts it, as an old log holds it.
            content_type: Some(stored.parse::<ContentType>().unwrap()),
            upload_name: None,
            uploader: Actor::System,
            datastore: DS.parse().unwrap(),
            location: "placeholder/location".parse().unwrap(),
        };
        srv.server()
            .ledger
            .submit(
                Actor::System,
                RequestId("test".into()),
                Command::Upload {
                    event,
                    completes_async: None,
                    quota: None,
                },
            )
            .await
            .unwrap();
        let resp = srv.download(&format!("mxc://{server}/{id}")).await;
        assert_eq!(resp.status(), StatusCode::OK);
        served.push((
            header(&resp, "content-type").to_owned(),
            header(&resp, "content-disposition").to_owned(),
        ));
        assert_eq!(resp.bytes().await.unwrap().to_vec(), bytes);
    }
    assert_eq!(
        served,
        [
            ("text/plain".to_owned(), "inline".to_owned()),
            ("image/png".to_owned(), "inline".to_owned()),
            (
                "application/octet-stream".to_owned(),
                "attachment".to_owned()
            ),
        ]
    );
    srv.stop().await;
}

/// `GET target` over raw TCP (so `..` reaches the server as written); the status and body.
async fn raw_get(srv: &TestServer, target: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = srv.base.trim_start_matches("http://");
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "GET {target} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {ALICE}\r\nConnection: close\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.unwrap();
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_owned();
    (status, body)
}

/// Server names that can never resolve are refused at the edge, before any look-up; a
/// blocked server is blocked whatever the case or a trailing dot in the config.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unresolvable_server_names_are_refused_and_blocklists_normalised() {
    // A pinned "blocked.test" that would answer 404 if it were asked.
    let asked = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = asked.clone();
    let router = axum::Router::new().fallback(move || {
        counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        async {
            (
                axum::http::StatusCode::NOT_FOUND,
                [("content-type", "application/json")],
                r#"{"errcode":"M_NOT_FOUND","error":"no"}"#,
            )
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let pinned = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    let mut srv = TestServer::start_with(common::Opts {
        extra_toml: format!(
            "[federation]\nsigning_key_path = {{dir:signing.key}}\nblocked_servers = [\"Blocked.Test.\"]\npins = {{ \"blocked.test\" = {pinned:?}, \"blocked.test:8448\" = {pinned:?} }}\n"
        ),
        ..common::Opts::default()
    })
    .await;
    for server in [
        "..",
        ".",
        "a..b",
        ".a.test",
        "trailing.test.",
        "blocked.test.",
        "x_y.test",
        "host:0",
    ] {
        for path in [
            format!("/_matrix/client/v1/media/download/{server}/someid"),
            format!("/_matrix/client/v1/media/thumbnail/{server}/someid?width=8&height=8"),
        ] {
            let (status, body) = raw_get(&srv, &path).await;
            assert_eq!(status, 400, "{path}: {body}");
            assert!(body.contains("M_INVALID_PARAM"), "{path}: {body}");
        }
    }
    for server in ["blocked.test", "BLOCKED.test", "blocked.test:8448"] {
        let resp = srv
            .client
            .get(srv.url(&format!(
                "/_matrix/client/v1/media/download/{server}/someid"
            )))
            .bearer_auth(ALICE)
            .send()
            .await
            .unwrap();
        expect_error(resp, StatusCode::FORBIDDEN, "M_FORBIDDEN").await;
    }
    assert_eq!(asked.load(std::sync::atomic::Ordering::SeqCst), 0);
    srv.stop().await;
}

/// A homeserver name that could never be resolved is refused by config validation.
#[test]
fn config_refuses_unresolvable_homeserver_names() {
    let dir = tempfile::tempdir().unwrap();
    for name in ["trailing.test.", "a..b"] {
        let text = common::config_text(
            dir.path(),
            &common::Opts {
                homeservers: Some(format!("[[homeservers]]\nname = \"{name}\"\n")),
                ..common::Opts::default()
            },
        );
        let err = media_ledger::config::Config::parse(&text).unwrap_err();
        assert!(err.to_string().contains("resolvable"), "{name}: {err}");
    }
}

/// `POST /v1/create` as alice; the mxc.
async fn create(srv: &TestServer) -> String {
    let resp = srv
        .client
        .post(srv.url("/_matrix/media/v1/create"))
        .bearer_auth(ALICE)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let v: serde_json::Value = resp.json().await.unwrap();
    v["content_uri"].as_str().unwrap().to_owned()
}

/// An anonymous download of `mxc` waiting up to `timeout_ms`.
async fn wait_download(client: reqwest::Client, url: String) -> reqwest::Response {
    client.get(url).send().await.unwrap()
}

fn waiting_url(srv: &TestServer, mxc: &str, timeout_ms: u64) -> String {
    let (server, id) = parse_mxc(mxc);
    srv.url(&format!(
        "/_matrix/media/v3/download/{server}/{id}?timeout_ms={timeout_ms}"
    ))
}

/// Polls with `timeout_ms=0` until the waiter caps answer 429 while every one of `waiters`
/// (long waits on `mxc`) holds its slot. A poll holds a slot for a moment too, so a long waiter
/// arriving meanwhile may be the one refused: it is started again.
async fn until_limited(
    srv: &TestServer,
    mxc: &str,
    waiters: &mut [tokio::task::JoinHandle<reqwest::Response>],
) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while std::time::Instant::now() < deadline {
        for w in waiters.iter_mut() {
            if w.is_finished() {
                let refused = std::mem::replace(
                    w,
                    tokio::spawn(wait_download(
                        srv.client.clone(),
                        waiting_url(srv, mxc, 60_000),
                    )),
                );
                let resp = refused.await.unwrap();
                expect_error(resp, StatusCode::TOO_MANY_REQUESTS, "M_LIMIT_EXCEEDED").await;
            }
        }
        let resp = wait_download(srv.client.clone(), waiting_url(srv, mxc, 0)).await;
        match resp.status() {
            StatusCode::TOO_MANY_REQUESTS if waiters.iter().all(|w| !w.is_finished()) => {
                expect_error(resp, StatusCode::TOO_MANY_REQUESTS, "M_LIMIT_EXCEEDED").await;
                return;
            }
            StatusCode::TOO_MANY_REQUESTS | StatusCode::GATEWAY_TIMEOUT => {
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
            s => panic!("unexpected {s}"),
        }
    }
    panic!("the waiter caps never answered 429");
}

/// Waiters on a pending upload are capped per media and in total (429 `M_LIMIT_EXCEEDED`
/// beyond), and a fill wakes its own media's waiters, which then leave their slots.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiters_on_pending_uploads_are_capped() {
    let mut srv = TestServer::start_with(common::Opts {
        downloads_extra: "max_waiters_per_media = 3\nmax_waiters = 5".into(),
        ..common::Opts::default()
    })
    .await;
    let (m1, m2) = (create(&srv).await, create(&srv).await);
    let mut first = Vec::new();
    for _ in 0..3 {
        first.push(tokio::spawn(wait_download(
            srv.client.clone(),
            waiting_url(&srv, &m1, 60_000),
        )));
    }
    // A fourth on m1 is over the per-media cap.
    until_limited(&srv, &m1, &mut first).await;
    let mut second = Vec::new();
    for _ in 0..2 {
        second.push(tokio::spawn(wait_download(
            srv.client.clone(),
            waiting_url(&srv, &m2, 60_000),
        )));
    }
    // A third on m2 is under its media's cap but over the total.
    until_limited(&srv, &m2, &mut second).await;

    let bytes = random_bytes(100);
    let (server, id) = parse_mxc(&m1);
    let resp = srv
        .client
        .put(srv.url(&format!("/_matrix/media/v3/upload/{server}/{id}")))
        .bearer_auth(ALICE)
        .body(bytes.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    for w in first {
        let resp = w.await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(resp.bytes().await.unwrap().to_vec(), bytes);
    }
    // m1's waiters left: m2 has room again (a slot, then the spec's 504 at its timeout).
    let resp = wait_download(srv.client.clone(), waiting_url(&srv, &m2, 0)).await;
    expect_error(resp, StatusCode::GATEWAY_TIMEOUT, "M_NOT_YET_UPLOADED").await;
    for w in &second {
        assert!(!w.is_finished());
    }
    srv.stop().await;
    for w in second {
        let _ = w.await;
    }
}

/// A request to `path` with `Host: host` as `token`; the JSON answer, asserting 200.
async fn as_on(
    srv: &TestServer,
    method: reqwest::Method,
    host: &str,
    token: &str,
    path: &str,
    body: Vec<u8>,
) -> serde_json::Value {
    let resp = srv
        .client
        .request(method, srv.url(path))
        .header(reqwest::header::HOST, host)
        .bearer_auth(token)
        .body(body)
        .send()
        .await
        .unwrap();
    let status = resp.status();
    let text = resp.text().await.unwrap();
    assert_eq!(status, StatusCode::OK, "{path} on {host}: {text}");
    serde_json::from_str(&text).unwrap()
}

/// Two tenants share bytes; hs-b's admin purges hs-b's copy, which frees the blob. hs-a's
/// admin, reading the history of hs-a's media, sees hs-a's own acts and not hs-b's purge
/// (its actor, reason and uploader); the repository admin sees both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_does_not_show_other_tenants_acts_on_shared_bytes() {
    use common::synapse::FakeSynapse;
    let syn_a = FakeSynapse::start(&[("hsa-admin", "@hsadmin:localhost")]).await;
    let syn_b = FakeSynapse::start(&[("hsb-admin", "@hsbadmin:other.test")]).await;
    let mut srv = TestServer::start_with(common::Opts {
        homeservers: Some(format!(
            "[[homeservers]]\nname = \"localhost\"\ndefault = true\ncs_api = \"{}\"\n\n[[homeservers]]\nname = \"other.test\"\ncs_api = \"{}\"\n",
            syn_a.url, syn_b.url
        )),
        ..common::Opts::default()
    })
    .await;
    const A: &str = "/_matrix/media/unstable/admin";
    let bytes = random_bytes(300);
    let m1 = srv.upload(ALICE, bytes.clone(), None, None).await;
    let v = as_on(
        &srv,
        reqwest::Method::POST,
        "other.test",
        "hsb-admin",
        "/_matrix/media/v3/upload",
        bytes.clone(),
    )
    .await;
    let m2 = v["content_uri"].as_str().unwrap().to_owned();
    assert!(m2.starts_with("mxc://other.test/"), "{m2}");
    let (s1, id1) = parse_mxc(&m1);
    let (s2, id2) = parse_mxc(&m2);
    as_on(
        &srv,
        reqwest::Method::POST,
        "localhost",
        "hsa-admin",
        &format!("{A}/purge/{s1}/{id1}?reason=a-cleanup"),
        Vec::new(),
    )
    .await;
    as_on(
        &srv,
        reqwest::Method::POST,
        "other.test",
        "hsb-admin",
        &format!("{A}/purge/{s2}/{id2}?reason=b-private-reason"),
        Vec::new(),
    )
    .await;

    let history = format!("{A}/media/{s1}/{id1}/history");
    let repo = as_on(
        &srv,
        reqwest::Method::GET,
        "localhost",
        common::ADMIN,
        &history,
        Vec::new(),
    )
    .await;
    let repo_text = repo.to_string();
    assert!(repo_text.contains("b-private-reason"), "{repo}");
    assert!(repo_text.contains("blob.deleted"), "{repo}");

    let ours = as_on(
        &srv,
        reqwest::Method::GET,
        "localhost",
        "hsa-admin",
        &history,
        Vec::new(),
    )
    .await;
    let text = ours.to_string();
    assert!(text.contains("a-cleanup"), "{ours}");
    for leak in ["b-private-reason", "hsbadmin", "other.test", "blob.deleted"] {
        assert!(!text.contains(leak), "{leak} leaked: {ours}");
    }
    srv.stop().await;
}
