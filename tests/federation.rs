#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Remote media over federation, over real HTTP on loopback: two media-ledger instances as two
//! homeservers (A = "a.test", B = "b.test") pinning each other, plus small fake servers (a
//! counting reverse proxy, a legacy-only homeserver, a server that never answers).

use crate::common;
use media_ledger_projections::names;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Uri};
use axum::response::{IntoResponse, Response};
use common::{expect_error, parse_mxc, random_bytes, Opts, TestServer, ALICE, DS};
use media_ledger::federation::keys::{parse_server_keys, SigningKey};
use media_ledger::federation::xmatrix;
use media_ledger::ledger::Ledger;
use media_ledger_events::{Event, RemoteMediaCached, Seq};
use reqwest::StatusCode;
use serde_json::Value;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------------------------
// Setup helpers
// ---------------------------------------------------------------------------------------------

/// A free loopback port (bound on 127.0.0.1:0, then released).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// What differs between the A instances of the tests.
#[derive(Default)]
struct AOpts {
    /// Extra lines of A's `[federation]` table.
    federation: String,
    /// Extra lines of A's `[downloads]` table.
    downloads: String,
    /// Extra pins of A: `(server name, base URL)`.
    pins: Vec<(String, String)>,
    /// Pin b.test to this URL instead of B itself (a proxy in front of B).
    b_via: Option<String>,
}

/// The `[federation]` table of a server.
fn federation_toml(pins: &[(String, String)], extra: &str) -> String {
    let pins = pins
        .iter()
        .map(|(name, url)| format!("{name:?} = {url:?}"))
        .collect::<Vec<_>>()
        .join(", ");
    format!("[federation]\nsigning_key_path = {{dir:signing.key}}\npins = {{ {pins} }}\n{extra}\n")
}

fn homeserver_toml(name: &str) -> String {
    format!("[[homeservers]]\nname = \"{name}\"\ndefault = true\n")
}

/// Starts B ("b.test", pinning "a.test" to `a_port`).
async fn start_b(a_port: u16) -> TestServer {
    TestServer::start_with(Opts {
        homeservers: Some(homeserver_toml("b.test")),
        extra_toml: federation_toml(
            &[("a.test".into(), format!("http://127.0.0.1:{a_port}"))],
            "",
        ),
        ..Opts::default()
    })
    .await
}

/// Starts A ("a.test") on `port`, pinning "b.test" to `b_url` and whatever `o` adds.
async fn start_a(port: u16, b_url: &str, o: &AOpts) -> TestServer {
    let mut pins = vec![("b.test".to_owned(), b_url.to_owned())];
    pins.extend(o.pins.iter().cloned());
    TestServer::start_with(Opts {
        homeservers: Some(homeserver_toml("a.test")),
        bind: Some(format!("127.0.0.1:{port}")),
        downloads_extra: o.downloads.clone(),
        extra_toml: federation_toml(&pins, &o.federation),
        ..Opts::default()
    })
    .await
}

/// B, then A, each pinning the other (A may reach B through `o.b_via`).
async fn pair(o: AOpts) -> (TestServer, TestServer) {
    let a_port = free_port();
    let b = start_b(a_port).await;
    let b_url = o.b_via.clone().unwrap_or_else(|| b.base.clone());
    let a = start_a(a_port, &b_url, &o).await;
    (a, b)
}

/// `GET /_matrix/client/v1/media/download/{server}/{id}` on `srv` as alice.
async fn authed_download(srv: &TestServer, mxc: &str) -> reqwest::Response {
    let (server, id) = parse_mxc(mxc);
    srv.client
        .get(srv.url(&format!("/_matrix/client/v1/media/download/{server}/{id}")))
        .bearer_auth(ALICE)
        .send()
        .await
        .unwrap()
}

/// The `media.remote_cached.v1` events of the (stopped or running) ledger at `db`.
fn remote_cached_events(db: &Path) -> Vec<RemoteMediaCached> {
    let mut out = Vec::new();
    Ledger::events_at(db, Seq(1), Seq(u64::MAX), |env| {
        if let Event::RemoteMediaCachedV1(e) = env.event {
            out.push(e);
        }
        true
    })
    .unwrap();
    out
}

/// Serves `router` on a fresh loopback port; returns `http://127.0.0.1:PORT`.
async fn serve(router: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    format!("http://{addr}")
}

/// A reverse proxy in front of `target` counting the federation media downloads it forwards.
struct Proxy {
    base: String,
    downloads: Arc<AtomicUsize>,
}

#[derive(Clone)]
struct ProxyState {
    target: String,
    client: reqwest::Client,
    downloads: Arc<AtomicUsize>,
}

async fn proxy_handler(State(st): State<ProxyState>, req: Request) -> Response {
    let path = req
        .uri()
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_owned();
    if req
        .uri()
        .path()
        .starts_with("/_matrix/federation/v1/media/download/")
    {
        st.downloads.fetch_add(1, Ordering::SeqCst);
    }
    let method = reqwest::Method::from_bytes(req.method().as_str().as_bytes()).unwrap();
    let mut rb = st.client.request(method, format!("{}{path}", st.target));
    for (k, v) in req.headers() {
        if k != axum::http::header::HOST {
            rb = rb.header(k.as_str(), v.as_bytes());
        }
    }
    let resp = match rb.send().await {
        Ok(r) => r,
        Err(e) => return (axum::http::StatusCode::BAD_GATEWAY, e.to_string()).into_response(),
    };
    let mut out = Response::builder().status(resp.status().as_u16());
    for (k, v) in resp.headers() {
        out = out.header(k.as_str(), v.as_bytes());
    }
    out.body(Body::from_stream(resp.bytes_stream())).unwrap()
}

async fn proxy(target: &str) -> Proxy {
    let downloads = Arc::new(AtomicUsize::new(0));
    let st = ProxyState {
        target: target.to_owned(),
        client: common::client(),
        downloads: downloads.clone(),
    };
    let router = axum::Router::new().fallback(proxy_handler).with_state(st);
    Proxy {
        base: serve(router).await,
        downloads,
    }
}

/// A TCP listener that accepts connections, counts them and never answers.
async fn silent_listener() -> (u16, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((sock, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            held.push(sock);
        }
    });
    (port, accepted)
}

/// A PNG of `w`×`h` pixels.
fn png(w: u32, h: u32) -> Vec<u8> {
    let img = image::RgbImage::from_fn(w, h, |x, y| {
        image::Rgb([(x * 4) as u8, (y * 4) as u8, ((x + y) * 2) as u8])
    });
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

// ---------------------------------------------------------------------------------------------
// A fetches B's media
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetches_remote_media_over_signed_federation_and_caches_it() {
    let (mut a, mut b) = pair(AOpts::default()).await;
    let bytes = random_bytes(150_000);
    let mxc = b
        .upload(
            ALICE,
            bytes.clone(),
            Some("application/pdf"),
            Some("report.pdf"),
        )
        .await;
    assert!(mxc.starts_with("mxc://b.test/"), "{mxc}");

    let resp = authed_download(&a, &mxc).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(common::header(&resp, "content-type"), "application/pdf");
    let disposition = common::header(&resp, "content-disposition").to_owned();
    assert!(
        disposition.contains("filename=\"report.pdf\""),
        "{disposition}"
    );
    assert_eq!(resp.bytes().await.unwrap().to_vec(), bytes);

    // Served from A's cache with B gone (also on the unauthenticated endpoint).
    b.stop().await;
    let resp = authed_download(&a, &mxc).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(common::header(&resp, "content-type"), "application/pdf");
    assert_eq!(resp.bytes().await.unwrap().to_vec(), bytes);
    assert_eq!(a.download_bytes(&mxc).await, bytes);

    let estimate = a.size_estimate(DS, None).await;
    assert_eq!(estimate["media_affected"], 1, "{estimate}");
    assert_eq!(estimate["media_bytes"], bytes.len() as u64, "{estimate}");

    a.stop().await;
    let events = remote_cached_events(&a.db_path());
    assert_eq!(events.len(), 1, "{events:?}");
    let e = &events[0];
    assert_eq!(e.media.to_string(), mxc);
    assert_eq!(e.fetched_from, b.base);
    assert_eq!(e.size_bytes, bytes.len() as u64);
    assert_eq!(e.upload_name.as_deref(), Some("report.pdf"));
    assert_eq!(
        e.content_type.as_ref().map(|c| c.as_str().to_owned()),
        Some("application/pdf".to_owned())
    );
    assert_eq!(e.sha256.to_string(), common::sha256_hex(&bytes));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_downloads_share_one_fetch() {
    let a_port = free_port();
    let mut b = start_b(a_port).await;
    let px = proxy(&b.base).await;
    let mut a = start_a(a_port, &px.base, &AOpts::default()).await;

    let bytes = random_bytes(3 * 1024 * 1024);
    let mxc = b.upload_bytes(bytes.clone()).await;
    let (server, id) = parse_mxc(&mxc);
    let url = a.url(&format!("/_matrix/client/v1/media/download/{server}/{id}"));
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let client = a.client.clone();
            let url = url.clone();
            tokio::spawn(async move {
                let resp = client.get(&url).bearer_auth(ALICE).send().await.unwrap();
                let status = resp.status();
                (status, resp.bytes().await.unwrap().to_vec())
            })
        })
        .collect();
    for t in tasks {
        let (status, got) = t.await.unwrap();
        assert_eq!(status, StatusCode::OK);
        assert!(got == bytes, "a concurrent download got other bytes");
    }
    assert_eq!(px.downloads.load(Ordering::SeqCst), 1);

    a.stop().await;
    b.stop().await;
    assert_eq!(remote_cached_events(&a.db_path()).len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thumbnail_of_remote_image() {
    let (mut a, mut b) = pair(AOpts::default()).await;
    let mxc = b
        .upload(ALICE, png(100, 80), Some("image/png"), Some("pic.png"))
        .await;
    let (server, id) = parse_mxc(&mxc);
    let resp = a
        .client
        .get(a.url(&format!(
            "/_matrix/client/v1/media/thumbnail/{server}/{id}?width=32&height=32&method=crop"
        )))
        .bearer_auth(ALICE)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(common::header(&resp, "content-type"), "image/png");
    let body = resp.bytes().await.unwrap();
    let img = image::load_from_memory_with_format(&body, image::ImageFormat::Png).unwrap();
    assert_eq!((img.width(), img.height()), (32, 32));
    a.stop().await;
    b.stop().await;
}

// ---------------------------------------------------------------------------------------------
// B's federation endpoints
// ---------------------------------------------------------------------------------------------

/// The X-Matrix header of a GET of `path` from a.test to b.test signed with `key`.
fn signed(key: &SigningKey, path: &str) -> String {
    xmatrix::authorization(key, "a.test", "b.test", "GET", path, None).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn federation_endpoint_requires_a_valid_signature() {
    let (mut a, mut b) = pair(AOpts::default()).await;
    let bytes = random_bytes(1000);
    let mxc = b
        .upload(ALICE, bytes.clone(), Some("text/plain"), Some("n.txt"))
        .await;
    let (_, id) = parse_mxc(&mxc);
    let path = format!("/_matrix/federation/v1/media/download/{id}");

    // B's server keys: signed, for b.test.
    let resp = b
        .client
        .get(b.url("/_matrix/key/v2/server"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let keys: Value = resp.json().await.unwrap();
    assert_eq!(keys["server_name"], "b.test", "{keys}");
    assert!(keys["signatures"]["b.test"].is_object(), "{keys}");
    let now = u64::try_from(chrono::Utc::now().timestamp_millis()).unwrap();
    let verify = parse_server_keys(&keys, "b.test", now).unwrap();
    assert!(!verify.is_empty());

    // Unsigned: 401 M_UNAUTHORIZED, as Synapse answers a federation request without X-Matrix
    // (M_MISSING_TOKEN is for access tokens).
    let resp = b.client.get(b.url(&path)).send().await.unwrap();
    let status = resp.status();
    let v: Value = resp.json().await.unwrap();
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{v}");
    assert_eq!(v["errcode"], "M_UNAUTHORIZED", "{v}");

    // A's real key (generated at A's first start) signs a request B accepts.
    let real = SigningKey::load_or_generate(&a.dir.path().join("signing.key")).unwrap();
    let resp = b
        .client
        .get(b.url(&path))
        .header("Authorization", signed(&real, &path))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let ct = common::header(&resp, "content-type").to_owned();
    assert!(ct.starts_with("multipart/mixed"), "{ct}");
    let body = resp.bytes().await.unwrap();
    assert!(
        body.windows(bytes.len()).any(|w| w == bytes.as_slice()),
        "the multipart body holds the media"
    );

    // Signed thumbnail endpoint too (of an image).
    let img = b.upload(ALICE, png(64, 64), Some("image/png"), None).await;
    let (_, img_id) = parse_mxc(&img);
    let tpath =
        format!("/_matrix/federation/v1/media/thumbnail/{img_id}?width=32&height=32&method=crop");
    let resp = b
        .client
        .get(b.url(&tpath))
        .header("Authorization", signed(&real, &tpath))
        .send()
        .await
        .unwrap();
    let status = resp.status();
    let ct = common::header(&resp, "content-type").to_owned();
    assert_eq!(status, StatusCode::OK, "{}", resp.text().await.unwrap());
    assert!(ct.starts_with("multipart/mixed"), "{ct}");
    let resp = b.client.get(b.url(&tpath)).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);

    // A signature of another request (a different media id).
    let other = "/_matrix/federation/v1/media/download/someothermedia";
    let resp = b
        .client
        .get(b.url(&path))
        .header("Authorization", signed(&real, other))
        .send()
        .await
        .unwrap();
    expect_error(resp, StatusCode::UNAUTHORIZED, "M_UNAUTHORIZED").await;

    // A random key claiming A's key id.
    let version = real.key_id().strip_prefix("ed25519:").unwrap().to_owned();
    let seed: [u8; 32] = random_bytes(32).try_into().unwrap();
    let forged = SigningKey::from_seed(&version, seed).unwrap();
    let resp = b
        .client
        .get(b.url(&path))
        .header("Authorization", signed(&forged, &path))
        .send()
        .await
        .unwrap();
    expect_error(resp, StatusCode::UNAUTHORIZED, "M_UNAUTHORIZED").await;

    // A tampered signature.
    let good = signed(&real, &path);
    let tampered = {
        let i = good.find("sig=\"").unwrap() + 5;
        let mut chars: Vec<char> = good.chars().collect();
        chars[i] = if chars[i] == 'A' { 'B' } else { 'A' };
        chars.into_iter().collect::<String>()
    };
    let resp = b
        .client
        .get(b.url(&path))
        .header("Authorization", tampered)
        .send()
        .await
        .unwrap();
    expect_error(resp, StatusCode::UNAUTHORIZED, "M_UNAUTHORIZED").await;

    a.stop().await;
    b.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Fallback, limits, failures
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Default)]
struct FakeState {
    /// Query strings of the legacy downloads received.
    legacy_queries: Arc<Mutex<Vec<String>>>,
}

const FAKE_BYTES: &[u8] = b"bytes from the legacy endpoint of fake.test";

async fn fake_federation(uri: Uri) -> Response {
    let _ = uri;
    (
        axum::http::StatusCode::NOT_FOUND,
        [("content-type", "application/json")],
        r#"{"errcode":"M_UNRECOGNIZED","error":"Unrecognized request"}"#,
    )
        .into_response()
}

async fn fake_legacy(
    State(st): State<FakeState>,
    axum::extract::Path((server, id)): axum::extract::Path<(String, String)>,
    uri: Uri,
    _headers: HeaderMap,
) -> Response {
    st.legacy_queries
        .lock()
        .unwrap()
        .push(uri.query().unwrap_or_default().to_owned());
    if server != "fake.test" {
        return axum::http::StatusCode::BAD_REQUEST.into_response();
    }
    match id.as_str() {
        "legacymedia" => (
            [
                ("content-type", "text/plain"),
                ("content-disposition", "inline; filename=\"old.txt\""),
            ],
            FAKE_BYTES,
        )
            .into_response(),
        // A type list a browser would read as SVG.
        "commatype" => {
            ([("content-type", "image/png;, image/svg+xml")], FAKE_BYTES).into_response()
        }
        // 5000 bytes, chunked (no Content-Length to check up front).
        "bigchunked" => {
            let chunks =
                (0..5).map(|_| Ok::<_, std::io::Error>(bytes::Bytes::from(vec![7u8; 1000])));
            Body::from_stream(futures_util::stream::iter(chunks)).into_response()
        }
        _ => (
            axum::http::StatusCode::NOT_FOUND,
            [("content-type", "application/json")],
            r#"{"errcode":"M_NOT_FOUND","error":"no"}"#,
        )
            .into_response(),
    }
}

async fn fake_homeserver() -> (String, FakeState) {
    let st = FakeState::default();
    let router = axum::Router::new()
        .route(
            "/_matrix/federation/v1/media/download/{id}",
            axum::routing::get(fake_federation),
        )
        .route(
            "/_matrix/media/v3/download/{server}/{id}",
            axum::routing::get(fake_legacy),
        )
        .with_state(st.clone());
    (serve(router).await, st)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn falls_back_to_the_legacy_endpoint_on_unrecognized() {
    let (fake, st) = fake_homeserver().await;
    let (mut a, mut b) = pair(AOpts {
        pins: vec![("fake.test".into(), fake.clone())],
        ..AOpts::default()
    })
    .await;
    let resp = authed_download(&a, "mxc://fake.test/legacymedia").await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(common::header(&resp, "content-type"), "text/plain");
    assert!(common::header(&resp, "content-disposition").contains("old.txt"));
    assert_eq!(resp.bytes().await.unwrap().as_ref(), FAKE_BYTES);
    {
        let q = st.legacy_queries.lock().unwrap();
        assert_eq!(q.len(), 1, "{q:?}");
        assert!(q[0].split('&').any(|p| p == "allow_remote=false"), "{q:?}");
    }
    a.stop().await;
    b.stop().await;
    let events = remote_cached_events(&a.db_path());
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].fetched_from, fake);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_content_type_lists_are_recorded_as_their_first_type() {
    let (fake, _st) = fake_homeserver().await;
    let (mut a, mut b) = pair(AOpts {
        pins: vec![("fake.test".into(), fake)],
        ..AOpts::default()
    })
    .await;
    let resp = authed_download(&a, "mxc://fake.test/commatype").await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(common::header(&resp, "content-type"), "image/png");
    a.stop().await;
    b.stop().await;
    let events = remote_cached_events(&a.db_path());
    assert_eq!(events.len(), 1);
    assert_eq!(
        events[0].content_type.as_ref().map(|c| c.as_str()),
        Some("image/png")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_media_over_max_bytes_is_refused_and_not_cached() {
    let (fake, _st) = fake_homeserver().await;
    let (mut a, mut b) = pair(AOpts {
        downloads: "max_bytes = 1000".into(),
        pins: vec![("fake.test".into(), fake)],
        ..AOpts::default()
    })
    .await;
    let mxc = b.upload_bytes(random_bytes(5000)).await;
    let resp = authed_download(&a, &mxc).await;
    expect_error(resp, StatusCode::PAYLOAD_TOO_LARGE, "M_TOO_LARGE").await;
    // Not a remote failure: no back-off, the same answer again.
    let resp = authed_download(&a, &mxc).await;
    expect_error(resp, StatusCode::PAYLOAD_TOO_LARGE, "M_TOO_LARGE").await;
    // A small media of B still comes through.
    let small = random_bytes(500);
    let small_mxc = b.upload_bytes(small.clone()).await;
    let resp = authed_download(&a, &small_mxc).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.bytes().await.unwrap().to_vec(), small);
    // The legacy endpoint streaming 5000 bytes without a Content-Length.
    let resp = authed_download(&a, "mxc://fake.test/bigchunked").await;
    expect_error(resp, StatusCode::PAYLOAD_TOO_LARGE, "M_TOO_LARGE").await;

    let spool = a.media_dir().join(".spool");
    let leftovers: Vec<_> = std::fs::read_dir(&spool)
        .map(|r| r.map(|e| e.unwrap().file_name()).collect())
        .unwrap_or_default();
    assert!(leftovers.is_empty(), "spool leftovers: {leftovers:?}");

    a.stop().await;
    b.stop().await;
    let events = remote_cached_events(&a.db_path());
    assert_eq!(
        events.len(),
        1,
        "only the small media is cached: {events:?}"
    );
    assert_eq!(events[0].media.to_string(), small_mxc);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_remote_times_out_with_a_matrix_error() {
    let (port, accepted) = silent_listener().await;
    let (mut a, mut b) = pair(AOpts {
        federation: "timeout_ms = 500".into(),
        pins: vec![("slow.test".into(), format!("http://127.0.0.1:{port}"))],
        ..AOpts::default()
    })
    .await;
    let started = Instant::now();
    let resp = authed_download(&a, "mxc://slow.test/somemedia").await;
    let elapsed = started.elapsed();
    let v = expect_error(resp, StatusCode::BAD_GATEWAY, "M_UNKNOWN").await;
    assert!(elapsed < Duration::from_secs(5), "took {elapsed:?}: {v}");
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
    // The cause (address, timeout) is logged; the body is a fixed message.
    assert_eq!(v["error"], "fetching the remote media failed", "{v}");

    // Backed off: answered at once without contacting it again.
    let started = Instant::now();
    let resp = authed_download(&a, "mxc://slow.test/othermedia").await;
    let v = expect_error(resp, StatusCode::BAD_GATEWAY, "M_UNKNOWN").await;
    assert_eq!(
        v["error"], "the remote server is failing; retry later",
        "{v}"
    );
    assert!(started.elapsed() < Duration::from_millis(400));
    assert_eq!(accepted.load(Ordering::SeqCst), 1);

    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocked_server_is_forbidden() {
    let a_port = free_port();
    let mut b = start_b(a_port).await;
    let px = proxy(&b.base).await;
    let mut a = start_a(
        a_port,
        &px.base,
        &AOpts {
            federation: "blocked_servers = [\"b.test\"]".into(),
            ..AOpts::default()
        },
    )
    .await;
    let mxc = b.upload_bytes(random_bytes(100)).await;
    let resp = authed_download(&a, &mxc).await;
    expect_error(resp, StatusCode::FORBIDDEN, "M_FORBIDDEN").await;
    let (server, id) = parse_mxc(&mxc);
    let resp = a
        .client
        .get(a.url(&format!(
            "/_matrix/client/v1/media/thumbnail/{server}/{id}?width=32&height=32&method=crop"
        )))
        .bearer_auth(ALICE)
        .send()
        .await
        .unwrap();
    expect_error(resp, StatusCode::FORBIDDEN, "M_FORBIDDEN").await;
    // The same host with an explicit port is blocked too.
    let resp = authed_download(&a, "mxc://b.test:8448/somemedia").await;
    expect_error(resp, StatusCode::FORBIDDEN, "M_FORBIDDEN").await;
    assert_eq!(px.downloads.load(Ordering::SeqCst), 0);
    a.stop().await;
    b.stop().await;
    assert!(remote_cached_events(&a.db_path()).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unpinned_private_addresses_are_refused() {
    let (port, accepted) = silent_listener().await;
    let (mut a, mut b) = pair(AOpts::default()).await;
    for server in [format!("127.0.0.1:{port}"), format!("localhost:{port}")] {
        let resp = authed_download(&a, &format!("mxc://{server}/somemedia")).await;
        expect_error(resp, StatusCode::FORBIDDEN, "M_FORBIDDEN").await;
    }
    let resp = authed_download(&a, &format!("mxc://[::1]:{port}/somemedia")).await;
    expect_error(resp, StatusCode::FORBIDDEN, "M_FORBIDDEN").await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(accepted.load(Ordering::SeqCst), 0, "a request reached it");
    a.stop().await;
    b.stop().await;
    assert!(remote_cached_events(&a.db_path()).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allow_remote_false_does_not_fetch() {
    let a_port = free_port();
    let mut b = start_b(a_port).await;
    let px = proxy(&b.base).await;
    let mut a = start_a(a_port, &px.base, &AOpts::default()).await;
    let bytes = random_bytes(100);
    let mxc = b.upload_bytes(bytes.clone()).await;
    let (server, id) = parse_mxc(&mxc);
    let resp = a
        .client
        .get(a.url(&format!(
            "/_matrix/media/v3/download/{server}/{id}?allow_remote=false"
        )))
        .send()
        .await
        .unwrap();
    expect_error(resp, StatusCode::NOT_FOUND, "M_NOT_FOUND").await;
    assert_eq!(px.downloads.load(Ordering::SeqCst), 0);
    // Without it, it is fetched (once), and then allow_remote=false finds it cached.
    assert_eq!(a.download_bytes(&mxc).await, bytes);
    assert_eq!(px.downloads.load(Ordering::SeqCst), 1);
    let resp = a
        .client
        .get(a.url(&format!(
            "/_matrix/media/v3/download/{server}/{id}?allow_remote=false"
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.bytes().await.unwrap().to_vec(), bytes);
    assert_eq!(px.downloads.load(Ordering::SeqCst), 1);
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_remote_media_is_not_found() {
    let (mut a, mut b) = pair(AOpts::default()).await;
    let resp = authed_download(&a, "mxc://b.test/nosuchmedia0123456789").await;
    expect_error(resp, StatusCode::NOT_FOUND, "M_NOT_FOUND").await;
    // Not a failure of B: B is not backed off, its media still come through.
    let bytes = random_bytes(100);
    let mxc = b.upload_bytes(bytes.clone()).await;
    let resp = authed_download(&a, &mxc).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.bytes().await.unwrap().to_vec(), bytes);
    a.stop().await;
    b.stop().await;
    assert_eq!(remote_cached_events(&a.db_path()).len(), 1);
}

/// A projection the remote cache's record is validated against has halted: the fetch answers
/// the documented 503, not a 500, and records nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_halted_projection_answers_503_on_the_remote_path() {
    let (mut a, mut b) = pair(AOpts::default()).await;
    let mxc = b.upload_bytes(random_bytes(1000)).await;
    a.server()
        .ledger
        .halt_projection(names::HASH_REFS, "halted by the test");
    let resp = authed_download(&a, &mxc).await;
    let v = expect_error(resp, StatusCode::SERVICE_UNAVAILABLE, "M_UNKNOWN").await;
    assert!(!v["error"].as_str().unwrap().contains("hash_refs"), "{v}");
    a.stop().await;
    b.stop().await;
    assert!(remote_cached_events(&a.db_path()).is_empty());
}
