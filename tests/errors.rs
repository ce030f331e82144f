#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Error answers: size limit, malformed paths, unknown media and routes, wrong methods, bad
//! tokens. Every error is a Matrix JSON body with `errcode` and `error`.

use crate::common;

use common::{
    count_blobs, expect_error, parse_mxc, random_bytes, spool_entries, Opts, TestServer, ALICE,
};
use reqwest::{Method, StatusCode};

fn small() -> Opts {
    Opts {
        max_bytes: 1024,
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_large_with_content_length() {
    let mut srv = TestServer::start_with(small()).await;
    // Exactly the limit is fine.
    let ok = srv.upload_bytes(random_bytes(1024)).await;
    assert_eq!(srv.download_bytes(&ok).await.len(), 1024);
    assert_eq!(count_blobs(&srv.media_dir()), 1);

    let resp = srv.upload_raw(ALICE, random_bytes(1025), None, None).await;
    let v = expect_error(resp, StatusCode::PAYLOAD_TOO_LARGE, "M_TOO_LARGE").await;
    assert!(v["error"].as_str().unwrap().contains("1024"), "{v}");

    let resp = srv
        .upload_raw(ALICE, random_bytes(4096), Some("image/png"), None)
        .await;
    expect_error(resp, StatusCode::PAYLOAD_TOO_LARGE, "M_TOO_LARGE").await;

    assert_eq!(
        count_blobs(&srv.media_dir()),
        1,
        "a refused upload left a blob"
    );
    assert_eq!(
        spool_entries(&srv.media_dir()),
        0,
        "a refused upload left a spool file"
    );
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_large_chunked() {
    let mut srv = TestServer::start_with(small()).await;
    // 4 chunks of 400 B, no Content-Length: the limit is only noticed while streaming.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        (0..4).map(|_| Ok(random_bytes(400))).collect();
    let body = reqwest::Body::wrap_stream(futures_util::stream::iter(chunks));
    let resp = srv
        .client
        .post(srv.url("/_matrix/media/v3/upload"))
        .bearer_auth(ALICE)
        .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
        .body(body)
        .send()
        .await
        .unwrap();
    expect_error(resp, StatusCode::PAYLOAD_TOO_LARGE, "M_TOO_LARGE").await;
    assert_eq!(
        count_blobs(&srv.media_dir()),
        0,
        "a refused upload left a blob"
    );
    assert_eq!(
        spool_entries(&srv.media_dir()),
        0,
        "a refused upload left a spool file"
    );

    // A chunked body within the limit is accepted.
    let parts: Vec<Vec<u8>> = (0..3).map(|_| random_bytes(300)).collect();
    let whole: Vec<u8> = parts.concat();
    let stream = futures_util::stream::iter(
        parts
            .into_iter()
            .map(Ok::<_, std::io::Error>)
            .collect::<Vec<_>>(),
    );
    let resp = srv
        .client
        .post(srv.url("/_matrix/media/v3/upload"))
        .bearer_auth(ALICE)
        .body(reqwest::Body::wrap_stream(stream))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let v: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(
        srv.download_bytes(v["content_uri"].as_str().unwrap()).await,
        whole
    );
    assert_eq!(spool_entries(&srv.media_dir()), 0);
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_large_async_put() {
    let mut srv = TestServer::start_with(small()).await;
    let resp = srv
        .client
        .post(srv.url("/_matrix/media/v1/create"))
        .bearer_auth(ALICE)
        .send()
        .await
        .unwrap();
    let v: serde_json::Value = resp.json().await.unwrap();
    let (server, id) = parse_mxc(v["content_uri"].as_str().unwrap());
    let url = srv.url(&format!("/_matrix/media/v3/upload/{server}/{id}"));
    let resp = srv
        .client
        .put(&url)
        .bearer_auth(ALICE)
        .body(random_bytes(2000))
        .send()
        .await
        .unwrap();
    expect_error(resp, StatusCode::PAYLOAD_TOO_LARGE, "M_TOO_LARGE").await;
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        (0..3).map(|_| Ok(random_bytes(500))).collect();
    let resp = srv
        .client
        .put(&url)
        .bearer_auth(ALICE)
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
            chunks,
        )))
        .send()
        .await
        .unwrap();
    expect_error(resp, StatusCode::PAYLOAD_TOO_LARGE, "M_TOO_LARGE").await;
    assert_eq!(count_blobs(&srv.media_dir()), 0);
    assert_eq!(spool_entries(&srv.media_dir()), 0);
    // The reservation is still usable.
    let resp = srv
        .client
        .put(&url)
        .bearer_auth(ALICE)
        .body(b"small".to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_path_params_are_400() {
    let mut srv = TestServer::start().await;
    let good = srv.upload_bytes(random_bytes(10)).await;
    let (_, id) = parse_mxc(&good);
    let bad: Vec<(String, String)> = vec![
        ("bad%20host".into(), id.clone()),
        ("bad_host".into(), id.clone()),
        ("host:99999999".into(), id.clone()),
        ("%FF".into(), id.clone()),
        ("[::1".into(), id.clone()),
        ("localhost".into(), "abc.def".into()),
        ("localhost".into(), "abc%2F..".into()),
        ("localhost".into(), "%2E%2E%2Fetc".into()),
        ("localhost".into(), "a%20b".into()),
        ("localhost".into(), "%FF%FE".into()),
        ("localhost".into(), "x".repeat(300)),
    ];
    for (server, media) in &bad {
        for prefix in [
            "/_matrix/media/v3/download",
            "/_matrix/media/r0/download",
            "/_matrix/client/v1/media/download",
        ] {
            let url = srv.url(&format!("{prefix}/{server}/{media}"));
            let resp = srv
                .client
                .get(&url)
                .bearer_auth(ALICE)
                .send()
                .await
                .unwrap();
            expect_error(resp, StatusCode::BAD_REQUEST, "M_INVALID_PARAM").await;
            let url = srv.url(&format!("{prefix}/{server}/{media}/name.bin"));
            let resp = srv
                .client
                .get(&url)
                .bearer_auth(ALICE)
                .send()
                .await
                .unwrap();
            expect_error(resp, StatusCode::BAD_REQUEST, "M_INVALID_PARAM").await;
        }
        let url = srv.url(&format!("/_matrix/media/v3/upload/{server}/{media}"));
        let resp = srv
            .client
            .put(&url)
            .bearer_auth(ALICE)
            .body(vec![1u8])
            .send()
            .await
            .unwrap();
        expect_error(resp, StatusCode::BAD_REQUEST, "M_INVALID_PARAM").await;
    }

    // Malformed queries and upload metadata.
    let (server, id) = parse_mxc(&good);
    let resp = srv
        .client
        .get(srv.url(&format!(
            "/_matrix/media/v3/download/{server}/{id}?timeout_ms=soon"
        )))
        .send()
        .await
        .unwrap();
    expect_error(resp, StatusCode::BAD_REQUEST, "M_INVALID_PARAM").await;
    let resp = srv
        .upload_raw(ALICE, vec![1], Some("not a mime type"), None)
        .await;
    expect_error(resp, StatusCode::BAD_REQUEST, "M_INVALID_PARAM").await;
    let resp = srv
        .upload_raw(ALICE, vec![1], None, Some("line\nbreak.txt"))
        .await;
    expect_error(resp, StatusCode::BAD_REQUEST, "M_INVALID_PARAM").await;
    let long = "n".repeat(256);
    let resp = srv.upload_raw(ALICE, vec![1], None, Some(&long)).await;
    expect_error(resp, StatusCode::BAD_REQUEST, "M_INVALID_PARAM").await;
    let resp = srv
        .client
        .get(srv.url(
            "/_matrix/media/unstable/admin/datastores/files/size_estimate?before_ts=yesterday",
        ))
        .bearer_auth(common::SECRET)
        .send()
        .await
        .unwrap();
    expect_error(resp, StatusCode::BAD_REQUEST, "M_INVALID_PARAM").await;
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_media_is_404() {
    let mut srv = TestServer::start().await;
    for path in [
        "/_matrix/media/v3/download/localhost/NoSuchMediaNoSuchMediaNoSuchMe",
        "/_matrix/media/r0/download/localhost/NoSuchMediaNoSuchMediaNoSuchMe/f.txt",
        "/_matrix/client/v1/media/download/localhost/NoSuchMediaNoSuchMediaNoSuchMe",
        // Remote media is fetched over federation unless the request says not to.
        "/_matrix/media/v3/download/elsewhere.example/NoSuchMediaNoSuchMediaNoSuchMe?allow_remote=false",
    ] {
        let resp = srv
            .client
            .get(srv.url(path))
            .bearer_auth(ALICE)
            .send()
            .await
            .unwrap();
        expect_error(resp, StatusCode::NOT_FOUND, "M_NOT_FOUND").await;
    }
    // A known id under another server name is another media.
    let mxc = srv.upload_bytes(random_bytes(10)).await;
    let (_, id) = parse_mxc(&mxc);
    let resp = srv
        .client
        .get(srv.url(&format!(
            "/_matrix/media/v3/download/other.example/{id}?allow_remote=false"
        )))
        .send()
        .await
        .unwrap();
    expect_error(resp, StatusCode::NOT_FOUND, "M_NOT_FOUND").await;
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_route_and_wrong_method() {
    let mut srv = TestServer::start().await;
    for path in [
        "/",
        "/_matrix/media/v3/nope",
        "/_matrix/media/v4/upload",
        "/_matrix/media/v3/download/localhost",
        "/_matrix/media/v3/download/localhost/a/b/c",
        "/_matrix/client/v3/account/whoami",
    ] {
        let resp = srv.client.get(srv.url(path)).send().await.unwrap();
        expect_error(resp, StatusCode::NOT_FOUND, "M_UNRECOGNIZED").await;
    }
    let mxc = srv.upload_bytes(random_bytes(10)).await;
    let (server, id) = parse_mxc(&mxc);
    let download = format!("/_matrix/media/v3/download/{server}/{id}");
    for (method, path) in [
        (Method::GET, "/_matrix/media/v3/upload".to_owned()),
        (Method::PUT, "/_matrix/media/v3/upload".to_owned()),
        (Method::DELETE, "/_matrix/media/r0/upload".to_owned()),
        (Method::GET, "/_matrix/media/v1/create".to_owned()),
        (Method::POST, download.clone()),
        (Method::DELETE, download),
        (Method::POST, "/_matrix/media/v3/config".to_owned()),
        (
            Method::POST,
            "/_matrix/media/unstable/admin/datastores".to_owned(),
        ),
    ] {
        let resp = srv
            .client
            .request(method.clone(), srv.url(&path))
            .bearer_auth(ALICE)
            .send()
            .await
            .unwrap();
        expect_error(resp, StatusCode::METHOD_NOT_ALLOWED, "M_UNRECOGNIZED").await;
    }
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tokens_are_401() {
    let mut srv = TestServer::start().await;
    let mxc = srv.upload_bytes(random_bytes(10)).await;
    let (server, id) = parse_mxc(&mxc);
    let paths = [
        "/_matrix/media/v3/config".to_owned(),
        "/_matrix/client/v1/media/config".to_owned(),
        format!("/_matrix/client/v1/media/download/{server}/{id}"),
        "/_matrix/media/unstable/admin/datastores".to_owned(),
    ];
    for path in &paths {
        let url = srv.url(path);
        let resp = srv
            .client
            .get(&url)
            .bearer_auth("not-a-token")
            .send()
            .await
            .unwrap();
        expect_error(resp, StatusCode::UNAUTHORIZED, "M_UNKNOWN_TOKEN").await;
        let resp = srv
            .client
            .get(&url)
            .query(&[("access_token", "not-a-token")])
            .send()
            .await
            .unwrap();
        expect_error(resp, StatusCode::UNAUTHORIZED, "M_UNKNOWN_TOKEN").await;
        // Not a Bearer credential.
        let resp = srv
            .client
            .get(&url)
            .basic_auth("alice", Some(ALICE))
            .send()
            .await
            .unwrap();
        expect_error(resp, StatusCode::UNAUTHORIZED, "M_UNKNOWN_TOKEN").await;
        let resp = srv.client.get(&url).send().await.unwrap();
        expect_error(resp, StatusCode::UNAUTHORIZED, "M_MISSING_TOKEN").await;
    }
    let resp = srv
        .client
        .post(srv.url("/_matrix/media/v3/upload"))
        .bearer_auth("not-a-token")
        .body(vec![1, 2, 3])
        .send()
        .await
        .unwrap();
    expect_error(resp, StatusCode::UNAUTHORIZED, "M_UNKNOWN_TOKEN").await;
    let resp = srv
        .client
        .post(srv.url("/_matrix/media/v3/upload"))
        .body(vec![1, 2, 3])
        .send()
        .await
        .unwrap();
    expect_error(resp, StatusCode::UNAUTHORIZED, "M_MISSING_TOKEN").await;
    assert_eq!(count_blobs(&srv.media_dir()), 1);
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_large_big_body_is_answered() {
    let mut srv = TestServer::start_with(small()).await;
    // Far above the limit: the answer must still reach the client as a Matrix error.
    let resp = srv
        .client
        .post(srv.url("/_matrix/media/v3/upload"))
        .bearer_auth(ALICE)
        .body(random_bytes(8 * 1024 * 1024))
        .send()
        .await;
    match resp {
        Ok(resp) => {
            expect_error(resp, StatusCode::PAYLOAD_TOO_LARGE, "M_TOO_LARGE").await;
        }
        Err(e) => panic!("no 413 reached the client: {e:?}"),
    }
    assert_eq!(count_blobs(&srv.media_dir()), 0);
    assert_eq!(spool_entries(&srv.media_dir()), 0);
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aborted_upload_leaves_nothing() {
    let mut srv = TestServer::start().await;
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = vec![
        Ok(random_bytes(64 * 1024)),
        Ok(random_bytes(64 * 1024)),
        Err(std::io::Error::other("client gave up")),
    ];
    let result = srv
        .client
        .post(srv.url("/_matrix/media/v3/upload"))
        .bearer_auth(ALICE)
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
            chunks,
        )))
        .send()
        .await;
    if let Ok(resp) = result {
        assert!(
            !resp.status().is_success(),
            "an aborted upload succeeded: {}",
            resp.status()
        );
    }
    // The server notices the abort on its own schedule: poll with a generous deadline.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while spool_entries(&srv.media_dir()) > 0 && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(
        spool_entries(&srv.media_dir()),
        0,
        "aborted upload left a spool file"
    );
    assert_eq!(count_blobs(&srv.media_dir()), 0);
    assert_eq!(
        srv.size_estimate(common::DS, None).await["media_affected"],
        0
    );
    srv.stop().await;
}
