#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The admin API: datastore listing, access control, `size_estimate` figures and the choice of
//! datastore for new bytes.

use crate::common;

use common::{count_blobs, expect_error, random_bytes, Opts, TestServer, ADMIN, ALICE, DS, SECRET};
use reqwest::StatusCode;
use serde_json::{json, Value};

const DATASTORES: &str = "/_matrix/media/unstable/admin/datastores";

fn estimate(
    media_affected: u64,
    media_hashes_affected: u64,
    media_bytes: u64,
    total_hashes_affected: u64,
    total_bytes: u64,
) -> Value {
    json!({
        "thumbnails_affected": 0,
        "thumbnail_hashes_affected": 0,
        "thumbnail_bytes": 0,
        "media_affected": media_affected,
        "media_hashes_affected": media_hashes_affected,
        "media_bytes": media_bytes,
        "total_hashes_affected": total_hashes_affected,
        "total_bytes": total_bytes,
    })
}

fn zeros() -> Value {
    estimate(0, 0, 0, 0, 0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_datastores_and_access_control() {
    let mut srv = TestServer::start().await;
    let expected = json!({
        DS: { "type": "file", "uri": srv.media_dir().display().to_string() }
    });
    for token in [SECRET, ADMIN] {
        let resp = srv
            .client
            .get(srv.url(DATASTORES))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        let v: Value = resp.json().await.unwrap();
        assert_eq!(v, expected);
    }
    let resp = srv
        .client
        .get(srv.url(DATASTORES))
        .query(&[("access_token", SECRET)])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);

    let estimate_url = srv.url(&format!("{DATASTORES}/{DS}/size_estimate"));
    for url in [srv.url(DATASTORES), estimate_url.clone()] {
        let resp = srv
            .client
            .get(&url)
            .bearer_auth(ALICE)
            .send()
            .await
            .unwrap();
        expect_error(resp, StatusCode::FORBIDDEN, "M_FORBIDDEN").await;
        let resp = srv.client.get(&url).send().await.unwrap();
        expect_error(resp, StatusCode::UNAUTHORIZED, "M_MISSING_TOKEN").await;
    }
    let resp = srv
        .client
        .get(&estimate_url)
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.json::<Value>().await.unwrap(), zeros());
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn size_estimate_counts_shared_hashes() {
    let mut srv = TestServer::start().await;
    assert_eq!(srv.size_estimate(DS, None).await, zeros());

    let a = random_bytes(100);
    let b = random_bytes(50);
    srv.upload_bytes(a.clone()).await;
    srv.upload(ALICE, a, Some("image/png"), Some("again.png"))
        .await;
    srv.upload_bytes(b).await;
    assert_eq!(count_blobs(&srv.media_dir()), 2);

    let expected = estimate(3, 2, 150, 2, 150);
    assert_eq!(srv.size_estimate(DS, None).await, expected);
    assert_eq!(
        srv.size_estimate(DS, Some(32_503_680_000_000)).await,
        expected,
        "before_ts far in the future"
    );
    assert_eq!(
        srv.size_estimate(DS, Some(1)).await,
        zeros(),
        "before_ts before everything"
    );
    assert_eq!(srv.size_estimate(DS, Some(0)).await, zeros());

    for unknown in ["nope", "no%20such", "x.y"] {
        let resp = srv
            .client
            .get(srv.url(&format!("{DATASTORES}/{unknown}/size_estimate")))
            .bearer_auth(SECRET)
            .send()
            .await
            .unwrap();
        expect_error(resp, StatusCode::NOT_FOUND, "M_NOT_FOUND").await;
    }
    srv.stop().await;
}

/// Downloads update last-access times but never the figures.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn size_estimate_ignores_downloads() {
    let mut srv = TestServer::start().await;
    let mxc = srv.upload_bytes(random_bytes(42)).await;
    for _ in 0..3 {
        srv.download_bytes(&mxc).await;
    }
    assert_eq!(srv.size_estimate(DS, None).await, estimate(1, 1, 42, 1, 42));
    assert_eq!(
        srv.size_estimate(DS, Some(u64::MAX / 2)).await,
        estimate(1, 1, 42, 1, 42)
    );
    srv.stop().await;
}

fn two_datastores(third: &str) -> Opts {
    Opts {
        datastores: Some(format!(
            r#"
[[datastores]]
id = "ds-a"
type = "file"
path = {{dir:media-a}}
kinds = ["all"]

[[datastores]]
id = "ds-b"
type = "file"
path = {{dir:media-b}}
kinds = ["all"]
{third}
"#
        )),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_bytes_go_to_the_smallest_datastore() {
    let mut srv = TestServer::start_with(two_datastores(
        r#"
[[datastores]]
id = "ds-ro"
type = "file"
path = {dir:media-ro}
kinds = []
"#,
    ))
    .await;

    let resp = srv
        .client
        .get(srv.url(DATASTORES))
        .bearer_auth(SECRET)
        .send()
        .await
        .unwrap();
    let v: Value = resp.json().await.unwrap();
    assert_eq!(
        v,
        json!({
            "ds-a": { "type": "file", "uri": srv.path_of("media-a").display().to_string() },
            "ds-b": { "type": "file", "uri": srv.path_of("media-b").display().to_string() },
            "ds-ro": { "type": "file", "uri": srv.path_of("media-ro").display().to_string() },
        })
    );

    // Tie (both empty): the first in config order.
    let big = srv.upload_bytes(random_bytes(1000)).await;
    assert_eq!(
        srv.size_estimate("ds-a", None).await,
        estimate(1, 1, 1000, 1, 1000)
    );
    assert_eq!(srv.size_estimate("ds-b", None).await, zeros());

    // The next two go to the smaller one.
    let s1 = srv.upload_bytes(random_bytes(10)).await;
    assert_eq!(
        srv.size_estimate("ds-b", None).await,
        estimate(1, 1, 10, 1, 10)
    );
    let s2 = srv.upload_bytes(random_bytes(10)).await;
    assert_eq!(
        srv.size_estimate("ds-b", None).await,
        estimate(2, 2, 20, 2, 20)
    );
    assert_eq!(
        srv.size_estimate("ds-a", None).await,
        estimate(1, 1, 1000, 1, 1000)
    );

    // A duplicate of bytes held in ds-a is recorded there, not copied to ds-b.
    let dup_bytes = srv.download_bytes(&big).await;
    srv.upload_bytes(dup_bytes).await;
    assert_eq!(
        srv.size_estimate("ds-a", None).await,
        estimate(2, 1, 1000, 1, 1000)
    );
    assert_eq!(
        srv.size_estimate("ds-b", None).await,
        estimate(2, 2, 20, 2, 20)
    );

    // The read-only datastore never receives anything.
    for i in 0..5u8 {
        srv.upload_bytes(vec![i]).await;
    }
    assert_eq!(srv.size_estimate("ds-ro", None).await, zeros());
    assert_eq!(count_blobs(&srv.path_of("media-ro")), 0);
    assert_eq!(count_blobs(&srv.path_of("media-a")), 1);
    assert_eq!(count_blobs(&srv.path_of("media-b")), 7);

    for mxc in [&big, &s1, &s2] {
        assert_eq!(srv.download(mxc).await.status(), StatusCode::OK);
    }
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_datastore_first_in_order_is_skipped() {
    let mut srv = TestServer::start_with(Opts {
        datastores: Some(
            r#"
[[datastores]]
id = "ds-ro"
type = "file"
path = {dir:media-ro}
kinds = []

[[datastores]]
id = "ds-rw"
type = "file"
path = {dir:media-rw}
kinds = ["local_media"]
"#
            .to_owned(),
        ),
        ..Default::default()
    })
    .await;
    let bytes = random_bytes(33);
    let mxc = srv.upload_bytes(bytes.clone()).await;
    assert_eq!(srv.download_bytes(&mxc).await, bytes);
    assert_eq!(srv.size_estimate("ds-ro", None).await, zeros());
    assert_eq!(
        srv.size_estimate("ds-rw", None).await,
        estimate(1, 1, 33, 1, 33)
    );
    assert_eq!(count_blobs(&srv.path_of("media-ro")), 0);
    assert_eq!(count_blobs(&srv.path_of("media-rw")), 1);
    srv.stop().await;
}
