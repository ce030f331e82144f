#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Uploads and downloads over real HTTP: round trips, dedup, download variants, HEAD, ranges,
//! response headers, CORS and the config endpoints.

use crate::common;

use common::{
    count_blobs, expect_error, header, parse_mxc, random_bytes, TestServer, ADMIN, ALICE, BOB,
};
use reqwest::{Method, StatusCode};
use serde_json::Value;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_trip_is_byte_identical() {
    let mut srv = TestServer::start().await;
    for size in [0usize, 1, 10 * 1024 * 1024] {
        let bytes = random_bytes(size);
        let mxc = srv.upload_bytes(bytes.clone()).await;
        let (server, id) = parse_mxc(&mxc);
        assert_eq!(server, "localhost");
        assert!(id.len() >= 24, "media id {id:?} is shorter than 24");
        assert!(
            id.bytes().all(|b| b.is_ascii_alphanumeric()),
            "media id {id:?} is not [A-Za-z0-9]"
        );
        let resp = srv.download(&mxc).await;
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(header(&resp, "content-length"), size.to_string());
        let got = resp.bytes().await.unwrap();
        assert_eq!(got.len(), size);
        assert!(got == bytes, "{size} B round trip differs");
    }
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_bytes_twice_two_ids_one_blob() {
    let mut srv = TestServer::start().await;
    let bytes = random_bytes(4096);
    let a = srv.upload_bytes(bytes.clone()).await;
    let b = srv
        .upload(BOB, bytes.clone(), Some("text/plain"), Some("b.txt"))
        .await;
    assert_ne!(a, b, "two uploads share an mxc id");
    assert_eq!(
        count_blobs(&srv.media_dir()),
        1,
        "deduplicated bytes stored twice"
    );
    assert_eq!(srv.download_bytes(&a).await, bytes);
    assert_eq!(srv.download_bytes(&b).await, bytes);
    // Each keeps its own metadata.
    let resp = srv.download(&b).await;
    assert_eq!(header(&resp, "content-type"), "text/plain");
    assert_eq!(
        header(&resp, "content-disposition"),
        "inline; filename=\"b.txt\""
    );
    let resp = srv.download(&a).await;
    assert_eq!(header(&resp, "content-type"), "application/octet-stream");

    // Different bytes: a second blob.
    srv.upload_bytes(random_bytes(10)).await;
    assert_eq!(count_blobs(&srv.media_dir()), 2);
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn download_variants() {
    let mut srv = TestServer::start().await;
    let bytes = random_bytes(1000);
    let mxc = srv
        .upload(ALICE, bytes.clone(), Some("image/png"), Some("orig.png"))
        .await;
    let (server, id) = parse_mxc(&mxc);

    for path in [
        format!("/_matrix/media/v3/download/{server}/{id}"),
        format!("/_matrix/media/r0/download/{server}/{id}"),
    ] {
        let resp = srv.client.get(srv.url(&path)).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "{path}");
        assert_eq!(
            header(&resp, "content-disposition"),
            "inline; filename=\"orig.png\"",
            "{path}"
        );
        assert_eq!(resp.bytes().await.unwrap(), bytes, "{path}");
    }

    for path in [
        format!("/_matrix/media/v3/download/{server}/{id}/other.png"),
        format!("/_matrix/media/r0/download/{server}/{id}/other.png"),
    ] {
        let resp = srv.client.get(srv.url(&path)).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "{path}");
        assert_eq!(
            header(&resp, "content-disposition"),
            "inline; filename=\"other.png\"",
            "{path}"
        );
        assert_eq!(resp.bytes().await.unwrap(), bytes, "{path}");
    }

    let authed = format!("/_matrix/client/v1/media/download/{server}/{id}");
    let resp = srv.client.get(srv.url(&authed)).send().await.unwrap();
    expect_error(resp, StatusCode::UNAUTHORIZED, "M_MISSING_TOKEN").await;

    let resp = srv
        .client
        .get(srv.url(&authed))
        .bearer_auth(BOB)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.bytes().await.unwrap(), bytes);

    let resp = srv
        .client
        .get(srv.url(&authed))
        .query(&[("access_token", BOB)])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.bytes().await.unwrap(), bytes);

    let resp = srv
        .client
        .get(srv.url(&format!("{authed}/renamed.png")))
        .bearer_auth(ALICE)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        header(&resp, "content-disposition"),
        "inline; filename=\"renamed.png\""
    );
    assert_eq!(resp.bytes().await.unwrap(), bytes);

    let resp = srv
        .client
        .get(srv.url(&format!("{authed}/renamed.png")))
        .send()
        .await
        .unwrap();
    expect_error(resp, StatusCode::UNAUTHORIZED, "M_MISSING_TOKEN").await;
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn head_has_headers_and_no_body() {
    let mut srv = TestServer::start().await;
    let bytes = random_bytes(777);
    let mxc = srv
        .upload(ALICE, bytes, Some("image/png"), Some("h.png"))
        .await;
    let (server, id) = parse_mxc(&mxc);
    for path in [
        format!("/_matrix/media/v3/download/{server}/{id}"),
        format!("/_matrix/client/v1/media/download/{server}/{id}"),
    ] {
        let resp = srv
            .client
            .head(srv.url(&path))
            .bearer_auth(ALICE)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "{path}");
        assert_eq!(header(&resp, "content-length"), "777", "{path}");
        assert_eq!(header(&resp, "content-type"), "image/png", "{path}");
        assert_eq!(
            header(&resp, "content-disposition"),
            "inline; filename=\"h.png\""
        );
        assert_eq!(header(&resp, "x-content-type-options"), "nosniff");
        assert!(resp.bytes().await.unwrap().is_empty(), "HEAD has a body");
    }
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ranges() {
    let mut srv = TestServer::start().await;
    let bytes = random_bytes(100);
    let mxc = srv.upload_bytes(bytes.clone()).await;
    let (server, id) = parse_mxc(&mxc);
    let url = srv.url(&format!("/_matrix/media/v3/download/{server}/{id}"));
    let get = |range: &'static str| {
        srv.client
            .get(&url)
            .header(reqwest::header::RANGE, range)
            .send()
    };

    let resp = get("bytes=0-9").await.unwrap();
    assert_eq!(resp.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(header(&resp, "content-range"), "bytes 0-9/100");
    assert_eq!(header(&resp, "content-length"), "10");
    assert_eq!(header(&resp, "accept-ranges"), "bytes");
    assert_eq!(resp.bytes().await.unwrap(), bytes[0..10]);

    let resp = get("bytes=-5").await.unwrap();
    assert_eq!(resp.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(header(&resp, "content-range"), "bytes 95-99/100");
    assert_eq!(header(&resp, "content-length"), "5");
    assert_eq!(resp.bytes().await.unwrap(), bytes[95..]);

    let resp = get("bytes=5-").await.unwrap();
    assert_eq!(resp.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(header(&resp, "content-range"), "bytes 5-99/100");
    assert_eq!(header(&resp, "content-length"), "95");
    assert_eq!(resp.bytes().await.unwrap(), bytes[5..]);

    let resp = get("bytes=90-200").await.unwrap();
    assert_eq!(resp.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(header(&resp, "content-range"), "bytes 90-99/100");
    assert_eq!(resp.bytes().await.unwrap(), bytes[90..]);

    for beyond in ["bytes=100-", "bytes=150-160"] {
        let resp = get(beyond).await.unwrap();
        assert_eq!(header(&resp, "content-range"), "bytes */100", "{beyond}");
        expect_error(resp, StatusCode::RANGE_NOT_SATISFIABLE, "M_INVALID_PARAM").await;
    }

    // Ranges the server ignores: the whole content, 200.
    for ignored in ["bytes=0-1,5-6", "bytes=abc", "items=0-1", "bytes=9-3"] {
        let resp = get(ignored).await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "{ignored}");
        assert!(resp.headers().get("content-range").is_none(), "{ignored}");
        assert_eq!(resp.bytes().await.unwrap(), bytes, "{ignored}");
    }

    // Ranges on the authenticated endpoint too.
    let resp = srv
        .client
        .get(srv.url(&format!("/_matrix/client/v1/media/download/{server}/{id}")))
        .bearer_auth(ALICE)
        .header(reqwest::header::RANGE, "bytes=10-19")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(header(&resp, "content-range"), "bytes 10-19/100");
    assert_eq!(resp.bytes().await.unwrap(), bytes[10..20]);

    // HEAD with a range: the partial headers, no body.
    let resp = srv
        .client
        .head(&url)
        .header(reqwest::header::RANGE, "bytes=0-9")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(header(&resp, "content-length"), "10");
    assert!(resp.bytes().await.unwrap().is_empty());
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn response_headers() {
    let mut srv = TestServer::start().await;
    let png = srv
        .upload(ALICE, random_bytes(10), Some("image/png"), Some("cat.png"))
        .await;
    let html = srv
        .upload(
            ALICE,
            b"<script>alert(1)</script>".to_vec(),
            Some("text/html"),
            Some("x.html"),
        )
        .await;
    let unicode = srv
        .upload(
            ALICE,
            random_bytes(10),
            Some("text/plain"),
            Some("naïve ü.txt"),
        )
        .await;
    let plain = srv
        .upload(
            ALICE,
            random_bytes(10),
            Some("image/png; charset=binary"),
            None,
        )
        .await;

    let resp = srv.download(&png).await;
    assert_eq!(header(&resp, "content-type"), "image/png");
    assert_eq!(
        header(&resp, "content-disposition"),
        "inline; filename=\"cat.png\""
    );
    let csp = header(&resp, "content-security-policy");
    assert!(csp.contains("sandbox"), "CSP without sandbox: {csp}");
    assert_eq!(header(&resp, "x-content-type-options"), "nosniff");
    assert_eq!(
        header(&resp, "cross-origin-resource-policy"),
        "cross-origin"
    );
    assert_eq!(header(&resp, "access-control-allow-origin"), "*");

    let resp = srv.download(&html).await;
    assert_eq!(header(&resp, "content-type"), "text/html");
    assert_eq!(
        header(&resp, "content-disposition"),
        "attachment; filename=\"x.html\""
    );
    assert!(header(&resp, "content-security-policy").contains("sandbox"));
    assert_eq!(header(&resp, "x-content-type-options"), "nosniff");

    let resp = srv.download(&unicode).await;
    assert_eq!(
        header(&resp, "content-disposition"),
        "inline; filename*=utf-8''na%C3%AFve%20%C3%BC.txt"
    );

    let resp = srv.download(&plain).await;
    assert_eq!(header(&resp, "content-type"), "image/png; charset=binary");
    assert_eq!(header(&resp, "content-disposition"), "inline");

    // A non-ASCII name given in the download path is encoded the same way.
    let (server, id) = parse_mxc(&html);
    let resp = srv
        .client
        .get(srv.url(&format!(
            "/_matrix/media/v3/download/{server}/{id}/%C3%A9t%C3%A9.html"
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        header(&resp, "content-disposition"),
        "attachment; filename*=utf-8''%C3%A9t%C3%A9.html"
    );

    // An upload without a Content-Type is served as application/octet-stream, attachment.
    let resp = srv.upload_raw(ALICE, random_bytes(5), None, None).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let v: Value = resp.json().await.unwrap();
    let resp = srv.download(v["content_uri"].as_str().unwrap()).await;
    assert_eq!(header(&resp, "content-type"), "application/octet-stream");
    assert_eq!(header(&resp, "content-disposition"), "attachment");
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn options_answers_cors_everywhere() {
    let mut srv = TestServer::start().await;
    let mxc = srv.upload_bytes(random_bytes(10)).await;
    let (server, id) = parse_mxc(&mxc);
    for path in [
        "/_matrix/media/v3/upload".to_owned(),
        format!("/_matrix/media/v3/download/{server}/{id}"),
        format!("/_matrix/client/v1/media/download/{server}/{id}"),
        "/_matrix/media/unstable/admin/datastores".to_owned(),
        "/no/such/route".to_owned(),
        "/".to_owned(),
    ] {
        let resp = srv
            .client
            .request(Method::OPTIONS, srv.url(&path))
            .header("origin", "https://app.example")
            .header("access-control-request-method", "GET")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "OPTIONS {path}");
        assert_eq!(header(&resp, "access-control-allow-origin"), "*", "{path}");
        let methods = header(&resp, "access-control-allow-methods");
        for m in ["GET", "POST", "PUT", "OPTIONS"] {
            assert!(methods.contains(m), "{path}: allow-methods {methods}");
        }
        let allowed = header(&resp, "access-control-allow-headers").to_ascii_lowercase();
        assert!(allowed.contains("authorization"), "{path}: {allowed}");
    }
    // Ordinary responses, errors included, carry CORS headers too.
    let resp = srv
        .client
        .get(srv.url("/no/such/route"))
        .send()
        .await
        .unwrap();
    assert_eq!(header(&resp, "access-control-allow-origin"), "*");
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_endpoints() {
    let mut srv = TestServer::start_with(common::Opts {
        max_bytes: 12345,
        ..Default::default()
    })
    .await;
    for path in [
        "/_matrix/media/v3/config",
        "/_matrix/media/r0/config",
        "/_matrix/client/v1/media/config",
    ] {
        let resp = srv.client.get(srv.url(path)).send().await.unwrap();
        expect_error(resp, StatusCode::UNAUTHORIZED, "M_MISSING_TOKEN").await;

        for token in [ALICE, ADMIN, common::SECRET] {
            let resp = srv
                .client
                .get(srv.url(path))
                .bearer_auth(token)
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), StatusCode::OK, "{path}");
            let v: Value = resp.json().await.unwrap();
            assert_eq!(v, serde_json::json!({ "m.upload.size": 12345 }), "{path}");
        }
    }
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_identical_uploads_share_one_blob() {
    let mut srv = TestServer::start().await;
    let bytes = random_bytes(256 * 1024);
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let client = srv.client.clone();
        let url = srv.url("/_matrix/media/v3/upload");
        let body = bytes.clone();
        tasks.push(tokio::spawn(async move {
            let resp = client
                .post(url)
                .bearer_auth(ALICE)
                .body(body)
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), StatusCode::OK);
            let v: Value = resp.json().await.unwrap();
            v["content_uri"].as_str().unwrap().to_owned()
        }));
    }
    let mut uris = Vec::new();
    for t in tasks {
        uris.push(t.await.unwrap());
    }
    let distinct: std::collections::HashSet<_> = uris.iter().collect();
    assert_eq!(distinct.len(), 8, "concurrent uploads share an mxc id");
    for mxc in &uris {
        assert!(srv.download_bytes(mxc).await == bytes);
    }
    assert_eq!(count_blobs(&srv.media_dir()), 1);
    assert_eq!(common::spool_entries(&srv.media_dir()), 0);
    let est = srv.size_estimate(common::DS, None).await;
    assert_eq!(est["media_affected"], 8);
    assert_eq!(est["media_hashes_affected"], 1);
    assert_eq!(est["total_bytes"], 256 * 1024);
    srv.stop().await;
}

/// A deduplicated blob deleted from disk behind the server's back: uploading the same bytes
/// again stores a new copy, and both media are served again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_dedup_blob_is_stored_again() {
    let mut srv = TestServer::start().await;
    let bytes = random_bytes(2000);
    let first = srv.upload_bytes(bytes.clone()).await;
    let blob = common::blob_files(&srv.media_dir());
    assert_eq!(blob.len(), 1);
    std::fs::remove_file(&blob[0]).unwrap();
    let resp = srv.download(&first).await;
    assert!(resp.status().is_server_error(), "{}", resp.status());

    let second = srv.upload_bytes(bytes.clone()).await;
    assert_eq!(srv.download_bytes(&second).await, bytes);
    assert_eq!(srv.download_bytes(&first).await, bytes);
    srv.stop().await;
}

/// As above with two datastores: the missing blob lived in `ds-a`; although `ds-b` is now
/// the smaller one, the new copy is restored into `ds-a`, where the hash record points.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_dedup_blob_is_stored_again_across_datastores() {
    let mut srv = TestServer::start_with(common::Opts {
        datastores: Some(
            r#"
[[datastores]]
id = "ds-a"
type = "file"
path = {dir:media-a}
kinds = ["all"]

[[datastores]]
id = "ds-b"
type = "file"
path = {dir:media-b}
kinds = ["all"]
"#
            .to_owned(),
        ),
        ..Default::default()
    })
    .await;
    let bytes = random_bytes(1000);
    let first = srv.upload_bytes(bytes.clone()).await; // ds-a (tie: first)
    srv.upload_bytes(random_bytes(10)).await; // ds-b
    let blob = common::blob_files(&srv.path_of("media-a"));
    assert_eq!(blob.len(), 1);
    std::fs::remove_file(&blob[0]).unwrap();

    // ds-b is the smaller one now, but the hash record (and `first`) point at ds-a: the new
    // copy restores the missing blob there.
    let second = srv.upload_bytes(bytes.clone()).await;
    assert_eq!(count_blobs(&srv.path_of("media-a")), 1);
    assert_eq!(count_blobs(&srv.path_of("media-b")), 1);
    let resp = srv.download(&second).await;
    assert_eq!(
        resp.status(),
        StatusCode::OK,
        "the re-uploaded media is not served"
    );
    assert_eq!(resp.bytes().await.unwrap(), bytes);
    assert_eq!(srv.download_bytes(&first).await, bytes);
    srv.stop().await;
}
