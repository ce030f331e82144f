#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Read-through of media the homeserver stored itself (`read_through.rs`): a download or
//! thumbnail of a `localhost` media we have no record of asks the fake Synapse's media API
//! with the request's token, stores the bytes once (`media.imported.v1`) and serves them; the
//! same protections as remote fetches (size cap, quarantined bytes, coalescing, nothing for
//! anonymous requests or tokens of ours).

use crate::common;

use common::synapse::FakeSynapse;
use common::{expect_error, random_bytes, Opts, TestServer, ALICE, SECRET};
use media_ledger_events::{Event, MediaImported, Seq};
use reqwest::{Response, StatusCode};

const CAROL: &str = "carol-token";
const V1: &str = "/_matrix/client/v1/media/download/";
const LEGACY: &str = "/_matrix/media/v3/download/";

/// A fake Synapse knowing carol; a server whose `localhost` has it as `cs_api`, with
/// `homeserver_extra` appended to the homeserver's table and `downloads_extra` to
/// `[downloads]`.
async fn start(homeserver_extra: &str, downloads_extra: &str) -> (TestServer, FakeSynapse) {
    let hs = FakeSynapse::start(&[]).await;
    hs.add_user(CAROL, "@carol:localhost", false);
    let srv = TestServer::start_with(Opts {
        homeservers: Some(format!(
            "[[homeservers]]\nname = \"localhost\"\ncs_api = \"{}\"\ndefault = true\n{homeserver_extra}\n",
            hs.url
        )),
        downloads_extra: downloads_extra.to_owned(),
        ..Opts::default()
    })
    .await;
    (srv, hs)
}

async fn get(srv: &TestServer, path: &str, token: Option<&str>) -> Response {
    let mut req = srv.client.get(srv.url(path));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    req.send().await.unwrap()
}

async fn download(srv: &TestServer, id: &str, token: Option<&str>) -> Response {
    get(srv, &format!("{V1}localhost/{id}"), token).await
}

/// Every `media.imported.v1` of the running server.
fn imports(srv: &TestServer) -> Vec<MediaImported> {
    let mut out = Vec::new();
    srv.server()
        .ledger
        .events(Seq(1), Seq(u64::MAX), |env| {
            if let Event::MediaImportedV1(e) = env.event {
                out.push(e);
            }
            true
        })
        .unwrap();
    out
}

#[tokio::test]
async fn a_miss_reads_through_once_then_serves_the_copy() {
    let (srv, hs) = start("", "").await;
    let bytes = random_bytes(3000);
    hs.put_media("localhost/OldUpload1", &bytes, "image/png", Some("cat.png"));

    let first = download(&srv, "OldUpload1", Some(CAROL)).await;
    assert_eq!(first.status(), StatusCode::OK);
    assert_eq!(common::header(&first, "content-type"), "image/png");
    assert!(common::header(&first, "content-disposition").contains("cat.png"));
    assert_eq!(first.bytes().await.unwrap().as_ref(), &bytes[..]);
    // Asked with carol's own token.
    let asked: Vec<_> = hs
        .calls()
        .into_iter()
        .filter(|(p, _)| p.starts_with(V1))
        .collect();
    assert_eq!(
        asked,
        vec![(format!("{V1}localhost/OldUpload1"), Some(CAROL.to_owned()))]
    );

    // Served from here afterwards: the v1 route, the legacy route, a static token of ours.
    let again = download(&srv, "OldUpload1", Some(CAROL)).await;
    assert_eq!(again.bytes().await.unwrap().as_ref(), &bytes[..]);
    let legacy = get(&srv, &format!("{LEGACY}localhost/OldUpload1"), Some(ALICE)).await;
    assert_eq!(legacy.bytes().await.unwrap().as_ref(), &bytes[..]);
    assert_eq!(hs.calls_to(V1) + hs.calls_to(LEGACY), 1);

    let recorded = imports(&srv);
    assert_eq!(recorded.len(), 1);
    let e = &recorded[0];
    assert_eq!(e.media.to_string(), "mxc://localhost/OldUpload1");
    assert_eq!(e.size_bytes, 3000);
    assert_eq!(e.sha256.to_hex(), common::sha256_hex(&bytes));
    assert_eq!(e.origin_homeserver, hs.url);
    assert_eq!(e.upload_name.as_deref(), Some("cat.png"));
    assert_eq!(e.origin_created_at_ms, None);
}

#[tokio::test]
async fn concurrent_misses_read_through_once() {
    let (srv, hs) = start("", "").await;
    let bytes = random_bytes(50_000);
    hs.put_media(
        "localhost/Popular1",
        &bytes,
        "application/octet-stream",
        None,
    );
    let gets = (0..8).map(|_| download(&srv, "Popular1", Some(CAROL)));
    for resp in futures_util::future::join_all(gets).await {
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(resp.bytes().await.unwrap().as_ref(), &bytes[..]);
    }
    assert_eq!(hs.calls_to(V1), 1);
    assert_eq!(imports(&srv).len(), 1);
}

#[tokio::test]
async fn a_media_the_homeserver_lacks_stays_404() {
    let (srv, hs) = start("", "").await;
    expect_error(
        download(&srv, "NeverWas1", Some(CAROL)).await,
        StatusCode::NOT_FOUND,
        "M_NOT_FOUND",
    )
    .await;
    assert_eq!(hs.calls_to(V1), 1);
    assert!(imports(&srv).is_empty());
}

#[tokio::test]
async fn an_old_synapse_is_read_on_the_legacy_endpoint() {
    let (srv, hs) = start("", "").await;
    hs.without_v1_media();
    let bytes = random_bytes(100);
    hs.put_media("localhost/Legacy1", &bytes, "text/plain", None);
    let resp = download(&srv, "Legacy1", Some(CAROL)).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.bytes().await.unwrap().as_ref(), &bytes[..]);
    assert_eq!((hs.calls_to(V1), hs.calls_to(LEGACY)), (1, 1));
}

#[tokio::test]
async fn oversize_media_is_refused_and_not_stored() {
    let (srv, hs) = start("", "max_bytes = 1000").await;
    hs.put_media("localhost/Huge1", &random_bytes(5000), "image/png", None);
    expect_error(
        download(&srv, "Huge1", Some(CAROL)).await,
        StatusCode::PAYLOAD_TOO_LARGE,
        "M_TOO_LARGE",
    )
    .await;
    assert!(imports(&srv).is_empty());
    assert_eq!(common::count_blobs(&srv.media_dir()), 0);
    assert_eq!(common::spool_entries(&srv.media_dir()), 0);
}

#[tokio::test]
async fn quarantined_bytes_are_refused() {
    let (srv, hs) = start("", "").await;
    let bytes = random_bytes(700);
    let mxc = srv
        .upload_raw(ALICE, bytes.clone(), Some("image/png"), None)
        .await;
    assert_eq!(mxc.status(), StatusCode::OK);
    let mxc: serde_json::Value = mxc.json().await.unwrap();
    let (server, id) = common::parse_mxc(mxc["content_uri"].as_str().unwrap());
    let q = srv
        .client
        .post(srv.url(&format!(
            "/_matrix/media/unstable/admin/quarantine/{server}/{id}"
        )))
        .bearer_auth(SECRET)
        .send()
        .await
        .unwrap();
    assert_eq!(q.status(), StatusCode::OK, "{}", q.text().await.unwrap());
    let blobs = common::count_blobs(&srv.media_dir());

    hs.put_media("localhost/SameBytes1", &bytes, "image/png", None);
    expect_error(
        download(&srv, "SameBytes1", Some(CAROL)).await,
        StatusCode::FORBIDDEN,
        "M_FORBIDDEN",
    )
    .await;
    assert!(imports(&srv).is_empty());
    assert_eq!(common::count_blobs(&srv.media_dir()), blobs);
}

#[tokio::test]
async fn anonymous_requests_and_tokens_of_ours_do_not_read_through() {
    let (srv, hs) = start("", "").await;
    hs.put_media("localhost/Kept1", &random_bytes(10), "image/png", None);
    // No token (legacy route), a static token, the shared secret: never sent on.
    for token in [None, Some(ALICE), Some(SECRET)] {
        let path = format!("{LEGACY}localhost/Kept1");
        expect_error(
            get(&srv, &path, token).await,
            StatusCode::NOT_FOUND,
            "M_NOT_FOUND",
        )
        .await;
        let thumb = "/_matrix/media/v3/thumbnail/localhost/Kept1?width=32&height=32";
        expect_error(
            get(&srv, thumb, token).await,
            StatusCode::NOT_FOUND,
            "M_NOT_FOUND",
        )
        .await;
    }
    expect_error(
        download(&srv, "Kept1", Some(ALICE)).await,
        StatusCode::NOT_FOUND,
        "M_NOT_FOUND",
    )
    .await;
    assert_eq!(hs.calls_to(V1) + hs.calls_to(LEGACY), 0);
    // A read-through's own request (a cs_api routed back to us) does not read through again.
    let looped = srv
        .client
        .get(srv.url(&format!("{V1}localhost/Kept1")))
        .bearer_auth(CAROL)
        .header("x-media-ledger-read-through", "1")
        .send()
        .await
        .unwrap();
    expect_error(looped, StatusCode::NOT_FOUND, "M_NOT_FOUND").await;
    assert_eq!(hs.calls_to(V1) + hs.calls_to(LEGACY), 0);
    assert!(imports(&srv).is_empty());
}

#[tokio::test]
async fn read_through_can_be_turned_off() {
    let (srv, hs) = start("read_through = false", "").await;
    hs.put_media("localhost/Off1", &random_bytes(10), "image/png", None);
    expect_error(
        download(&srv, "Off1", Some(CAROL)).await,
        StatusCode::NOT_FOUND,
        "M_NOT_FOUND",
    )
    .await;
    assert_eq!(hs.calls_to(V1), 0);
}

#[tokio::test]
async fn a_thumbnail_reads_the_original_through() {
    let (srv, hs) = start("", "").await;
    let img =
        image::RgbImage::from_fn(64, 48, |x, y| image::Rgb([(x * 4) as u8, (y * 5) as u8, 9]));
    let mut png = Vec::new();
    image::DynamicImage::ImageRgb8(img)
        .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .unwrap();
    hs.put_media("localhost/Photo1", &png, "image/png", None);
    let thumb = get(
        &srv,
        "/_matrix/client/v1/media/thumbnail/localhost/Photo1?width=32&height=32&method=scale",
        Some(CAROL),
    )
    .await;
    assert_eq!(thumb.status(), StatusCode::OK);
    assert!(common::header(&thumb, "content-type").starts_with("image/"));
    assert!(!thumb.bytes().await.unwrap().is_empty());
    // The original is here now.
    let original = download(&srv, "Photo1", Some(CAROL)).await;
    assert_eq!(original.bytes().await.unwrap().as_ref(), &png[..]);
    assert_eq!(hs.calls_to(V1), 1);
    assert_eq!(imports(&srv).len(), 1);
}

/// A media the homeserver stored before the switch, never read through yet, quarantined by a
/// homeserver admin (our route and Synapse's): it is read through first with the admin's token,
/// so the quarantine reaches it, and a later download does not read it through and serve it.
#[tokio::test]
async fn quarantine_reaches_media_not_read_through_yet() {
    const MOD: &str = "mod-token";
    let hs = FakeSynapse::start(&[(MOD, "@mod:localhost")]).await;
    hs.add_user(CAROL, "@carol:localhost", false);
    let srv = TestServer::start_with(Opts {
        homeservers: Some(format!(
            "[[homeservers]]\nname = \"localhost\"\ncs_api = \"{}\"\ndefault = true\n",
            hs.url
        )),
        ..Opts::default()
    })
    .await;
    for (id, path) in [
        (
            "OldQuarantine1",
            "/_matrix/media/unstable/admin/quarantine/localhost/OldQuarantine1",
        ),
        (
            "OldQuarantine2",
            "/_synapse/admin/v1/media/quarantine/localhost/OldQuarantine2",
        ),
    ] {
        hs.put_media(
            &format!("localhost/{id}"),
            &random_bytes(2000),
            "image/png",
            None,
        );
        let resp = srv
            .client
            .post(srv.url(path))
            .bearer_auth(MOD)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "{path}");
        let resp = download(&srv, id, Some(CAROL)).await;
        expect_error(resp, StatusCode::NOT_FOUND, "M_NOT_FOUND").await;
    }
    assert_eq!(
        imports(&srv).len(),
        2,
        "each read through once, by the quarantine"
    );
}

/// A media read through and then purged here stays gone: the homeserver still has it, but the
/// next download answers 404 without asking it again, and the writer refuses to import that
/// id again (whoever asks).
#[tokio::test]
async fn a_purged_media_is_not_read_through_again() {
    let (srv, hs) = start("", "").await;
    let bytes = random_bytes(1200);
    hs.put_media("localhost/PurgeMe1", &bytes, "image/png", None);
    let first = download(&srv, "PurgeMe1", Some(CAROL)).await;
    assert_eq!(first.status(), StatusCode::OK);
    assert_eq!(first.bytes().await.unwrap().as_ref(), &bytes[..]);

    let p = srv
        .client
        .post(srv.url("/_matrix/media/unstable/admin/purge/localhost/PurgeMe1"))
        .bearer_auth(SECRET)
        .send()
        .await
        .unwrap();
    assert_eq!(p.status(), StatusCode::OK, "{}", p.text().await.unwrap());

    for _ in 0..2 {
        expect_error(
            download(&srv, "PurgeMe1", Some(CAROL)).await,
            StatusCode::NOT_FOUND,
            "M_NOT_FOUND",
        )
        .await;
    }
    assert_eq!(hs.calls_to(V1) + hs.calls_to(LEGACY), 1, "{:?}", hs.calls());
    let recorded = imports(&srv);
    assert_eq!(recorded.len(), 1);

    // The writer itself refuses the import of that id again.
    let refused = srv
        .server()
        .ledger
        .submit(
            media_ledger_events::Actor::System,
            media_ledger_events::RequestId("again".into()),
            media_ledger::ledger::Command::ImportMedia(recorded[0].clone()),
        )
        .await;
    assert!(
        matches!(
            refused,
            Err(media_ledger::ledger::LedgerError::Conflict(
                media_ledger::ledger::Conflict::MediaExists
            ))
        ),
        "{refused:?}"
    );
    assert_eq!(imports(&srv).len(), 1);
}
