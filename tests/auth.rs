#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Access tokens resolved by the homeserver's `whoami` (with a fake homeserver in the test),
//! the cache, an unreachable homeserver, and homeserver selection by `Host`.

use crate::common;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use common::{expect_error, parse_mxc, random_bytes, token_on, Opts, TestServer, ALICE, SECRET};
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

const CAROL: &str = "carol-token";

/// A homeserver that knows one token, counting `whoami` calls.
struct FakeHomeserver {
    base: String,
    calls: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl FakeHomeserver {
    async fn start() -> Self {
        async fn whoami(State(calls): State<Arc<AtomicUsize>>, headers: HeaderMap) -> Response {
            calls.fetch_add(1, Ordering::SeqCst);
            let auth = headers
                .get(axum::http::header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok());
            match auth {
                Some("Bearer carol-token") => {
                    Json(json!({ "user_id": "@carol:localhost" })).into_response()
                }
                Some("Bearer dave-token") => {
                    Json(json!({ "user_id": "@dave:other.example" })).into_response()
                }
                Some("Bearer broken-token") => {
                    (axum::http::StatusCode::INTERNAL_SERVER_ERROR, "boom").into_response()
                }
                Some("Bearer impostor-token") => {
                    Json(json!({ "user_id": "@admin:localhost" })).into_response()
                }
                Some("Bearer garbage-token") => Json(json!({ "user": 1 })).into_response(),
                _ => (
                    axum::http::StatusCode::UNAUTHORIZED,
                    Json(json!({ "errcode": "M_UNKNOWN_TOKEN", "error": "Unknown token" })),
                )
                    .into_response(),
            }
        }
        let calls = Arc::new(AtomicUsize::new(0));
        let app = Router::new()
            .route("/_matrix/client/v3/account/whoami", get(whoami))
            .with_state(calls.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Self {
            base: format!("http://{addr}"),
            calls,
            task,
        }
    }

    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

impl Drop for FakeHomeserver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn with_cs_api(cs_api: &str, ttl_ms: u64) -> Opts {
    Opts {
        homeservers: Some(format!(
            "[[homeservers]]\nname = \"localhost\"\ncs_api = \"{cs_api}\"\ndefault = true\n"
        )),
        whoami_cache_ttl_ms: ttl_ms,
        ..Default::default()
    }
}

/// A loopback port nobody listens on.
async fn closed_port() -> u16 {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap().port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whoami_resolves_and_is_cached() {
    let hs = FakeHomeserver::start().await;
    let mut srv = TestServer::start_with(with_cs_api(&hs.base, 300_000)).await;

    let bytes = random_bytes(100);
    let mxc = srv
        .upload(CAROL, bytes.clone(), Some("text/plain"), None)
        .await;
    assert_eq!(parse_mxc(&mxc).0, "localhost");
    assert_eq!(hs.calls(), 1);

    // Served from the cache.
    let (server, id) = parse_mxc(&mxc);
    let resp = srv
        .client
        .get(srv.url(&format!("/_matrix/client/v1/media/download/{server}/{id}")))
        .bearer_auth(CAROL)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.bytes().await.unwrap(), bytes);
    let resp = srv
        .client
        .get(srv.url("/_matrix/client/v1/media/config"))
        .query(&[("access_token", CAROL)])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(hs.calls(), 1, "a cached token was looked up again");

    // Carol owns her reservations.
    let resp = srv
        .client
        .post(srv.url("/_matrix/media/v1/create"))
        .bearer_auth(CAROL)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let v: Value = resp.json().await.unwrap();
    let (server, id) = parse_mxc(v["content_uri"].as_str().unwrap());
    let put_url = srv.url(&format!("/_matrix/media/v3/upload/{server}/{id}"));
    let resp = srv
        .client
        .put(&put_url)
        .bearer_auth(ALICE)
        .body(b"not alice's".to_vec())
        .send()
        .await
        .unwrap();
    expect_error(resp, StatusCode::FORBIDDEN, "M_FORBIDDEN").await;
    let resp = srv
        .client
        .put(&put_url)
        .bearer_auth(CAROL)
        .body(b"carol's".to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);

    // Carol is not a repository admin.
    let resp = srv
        .client
        .get(srv.url("/_matrix/media/unstable/admin/datastores"))
        .bearer_auth(CAROL)
        .send()
        .await
        .unwrap();
    expect_error(resp, StatusCode::FORBIDDEN, "M_FORBIDDEN").await;
    assert_eq!(hs.calls(), 1);

    // Static tokens and the shared secret never ask the homeserver.
    srv.upload_bytes(random_bytes(10)).await;
    let resp = srv
        .client
        .get(srv.url("/_matrix/media/unstable/admin/datastores"))
        .bearer_auth(SECRET)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(hs.calls(), 1);

    // Unknown tokens are refused, and failures are not cached.
    for n in 0..2 {
        let resp = srv
            .client
            .post(srv.url("/_matrix/media/v3/upload"))
            .bearer_auth("who-is-this")
            .body(vec![1, 2, 3])
            .send()
            .await
            .unwrap();
        expect_error(resp, StatusCode::UNAUTHORIZED, "M_UNKNOWN_TOKEN").await;
        assert_eq!(hs.calls(), 2 + n);
    }
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_entries_expire() {
    let hs = FakeHomeserver::start().await;
    let mut srv = TestServer::start_with(with_cs_api(&hs.base, 1)).await;
    srv.upload(CAROL, random_bytes(10), None, None).await;
    assert_eq!(hs.calls(), 1);
    tokio::time::sleep(Duration::from_millis(50)).await;
    srv.upload(CAROL, random_bytes(10), None, None).await;
    assert_eq!(hs.calls(), 2, "an expired cache entry was trusted");
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn homeserver_failures_are_503() {
    let hs = FakeHomeserver::start().await;
    let mut srv = TestServer::start_with(with_cs_api(&hs.base, 300_000)).await;
    for token in ["broken-token", "garbage-token"] {
        let resp = srv
            .client
            .post(srv.url("/_matrix/media/v3/upload"))
            .bearer_auth(token)
            .body(vec![1, 2, 3])
            .send()
            .await
            .unwrap();
        expect_error(resp, StatusCode::SERVICE_UNAVAILABLE, "M_UNKNOWN").await;
    }
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn homeserver_down_is_503() {
    let port = closed_port().await;
    let mut srv =
        TestServer::start_with(with_cs_api(&format!("http://127.0.0.1:{port}/"), 300_000)).await;
    let resp = srv
        .client
        .post(srv.url("/_matrix/media/v3/upload"))
        .bearer_auth(CAROL)
        .body(vec![1, 2, 3])
        .send()
        .await
        .unwrap();
    let v = expect_error(resp, StatusCode::SERVICE_UNAVAILABLE, "M_UNKNOWN").await;
    // The cause (address, connection error) is logged; the body is a fixed message.
    assert_eq!(v["error"], "the homeserver cannot be reached", "{v}");
    let resp = srv
        .client
        .get(srv.url("/_matrix/client/v1/media/config"))
        .bearer_auth(CAROL)
        .send()
        .await
        .unwrap();
    expect_error(resp, StatusCode::SERVICE_UNAVAILABLE, "M_UNKNOWN").await;
    // Static tokens keep working while the homeserver is down.
    let bytes = random_bytes(10);
    let mxc = srv.upload_bytes(bytes.clone()).await;
    assert_eq!(srv.download_bytes(&mxc).await, bytes);
    assert_eq!(common::count_blobs(&srv.media_dir()), 1);
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_header_selects_the_homeserver() {
    let hs = FakeHomeserver::start().await;
    let mut srv = TestServer::start_with(Opts {
        homeservers: Some(format!(
            r#"
[[homeservers]]
name = "localhost"
default = true

[[homeservers]]
name = "other.example"
cs_api = "{}"
"#,
            hs.base
        )),
        ..Default::default()
    })
    .await;
    let alice_other = token_on("alice", "other.example");
    let upload = |host: Option<&'static str>, token: &str| {
        let mut req = srv
            .client
            .post(srv.url("/_matrix/media/v3/upload"))
            .bearer_auth(token)
            .body(random_bytes(16));
        if let Some(h) = host {
            req = req.header(reqwest::header::HOST, h);
        }
        req.send()
    };
    async fn uri(resp: reqwest::Response) -> String {
        let status = resp.status();
        let text = resp.text().await.unwrap();
        assert_eq!(status, StatusCode::OK, "{text}");
        let v: Value = serde_json::from_str(&text).unwrap();
        v["content_uri"].as_str().unwrap().to_owned()
    }

    let other = uri(upload(Some("other.example"), &alice_other).await.unwrap()).await;
    assert!(other.starts_with("mxc://other.example/"), "{other}");
    let with_port = uri(upload(Some("other.example:8448"), &alice_other)
        .await
        .unwrap())
    .await;
    assert!(with_port.starts_with("mxc://other.example/"), "{with_port}");
    let default = uri(upload(None, ALICE).await.unwrap()).await;
    assert!(default.starts_with("mxc://localhost/"), "{default}");
    let unknown = uri(upload(Some("unknown.example"), ALICE).await.unwrap()).await;
    assert!(unknown.starts_with("mxc://localhost/"), "{unknown}");
    let explicit = uri(upload(Some("localhost"), ALICE).await.unwrap()).await;
    assert!(explicit.starts_with("mxc://localhost/"), "{explicit}");

    // The homeserver picked by Host also resolves the token: only other.example knows dave.
    let carol = uri(upload(Some("other.example"), "dave-token").await.unwrap()).await;
    assert!(carol.starts_with("mxc://other.example/"), "{carol}");
    assert_eq!(hs.calls(), 1);
    let resp = upload(None, "dave-token").await.unwrap();
    expect_error(resp, StatusCode::UNAUTHORIZED, "M_UNKNOWN_TOKEN").await;
    assert_eq!(hs.calls(), 1, "localhost has no cs_api and must not ask");

    // Async reservations follow Host too.
    let resp = srv
        .client
        .post(srv.url("/_matrix/media/v1/create"))
        .header(reqwest::header::HOST, "other.example")
        .bearer_auth(&alice_other)
        .send()
        .await
        .unwrap();
    let v: Value = resp.json().await.unwrap();
    assert!(v["content_uri"]
        .as_str()
        .unwrap()
        .starts_with("mxc://other.example/"));

    // Media of either homeserver download from any Host.
    for mxc in [&other, &default, &carol] {
        assert_eq!(srv.download(mxc).await.status(), StatusCode::OK, "{mxc}");
    }
    srv.stop().await;
}

/// RFC 9110 §4.2.3: the host is case-insensitive, so `Host: Other.Example` is other.example.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_header_is_case_insensitive() {
    let mut srv = TestServer::start_with(Opts {
        homeservers: Some(
            "[[homeservers]]\nname = \"localhost\"\ndefault = true\n\n\
             [[homeservers]]\nname = \"other.example\"\n"
                .to_owned(),
        ),
        ..Default::default()
    })
    .await;
    for host in ["OTHER.EXAMPLE", "Other.Example:8448"] {
        let resp = srv
            .client
            .post(srv.url("/_matrix/media/v3/upload"))
            .header(reqwest::header::HOST, host)
            .bearer_auth(token_on("alice", "other.example"))
            .body(random_bytes(8))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        let v: Value = resp.json().await.unwrap();
        let uri = v["content_uri"].as_str().unwrap();
        assert!(
            uri.starts_with("mxc://other.example/"),
            "Host {host}: {uri}"
        );
    }
    srv.stop().await;
}

/// A homeserver's whoami may only vouch for its own users: other.example answering
/// `@admin:localhost` must not make its token a localhost user, let alone a repository admin.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whoami_cannot_claim_users_of_other_servers() {
    let hs = FakeHomeserver::start().await;
    let mut srv = TestServer::start_with(Opts {
        homeservers: Some(format!(
            "[[homeservers]]\nname = \"localhost\"\ndefault = true\n\n\
             [[homeservers]]\nname = \"other.example\"\ncs_api = \"{}\"\n",
            hs.base
        )),
        ..Default::default()
    })
    .await;
    let resp = srv
        .client
        .get(srv.url("/_matrix/media/unstable/admin/datastores"))
        .header(reqwest::header::HOST, "other.example")
        .bearer_auth("impostor-token")
        .send()
        .await
        .unwrap();
    assert_eq!(hs.calls(), 1);
    let status = resp.status();
    let text = resp.text().await.unwrap();
    assert!(
        status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN,
        "other.example's token acted as @admin:localhost: {status} {text}"
    );
    srv.stop().await;
}
