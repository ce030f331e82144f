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
