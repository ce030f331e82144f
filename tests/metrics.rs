//! `GET /metrics` follows the traffic: per-route request counters and latency histograms,
//! bytes in and out, ledger sync histograms, the ledger head and projection lag gauges,
//! datastore sizes and transfer task progress, scraped before and after known work.
//!
//! Each server has its own registry, so these tests run beside every other suite of the
//! binary: what one server counts never shows in another's scrape.

use crate::common;

use common::{random_bytes, Opts, TestServer, ALICE, SECRET};
use reqwest::StatusCode;
use serde_json::Value;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// Every sample of a scrape, keyed `name{labels}` exactly as printed.
struct Scrape {
    samples: BTreeMap<String, f64>,
}

impl Scrape {
    fn get(&self, key: &str) -> f64 {
        self.samples.get(key).copied().unwrap_or(0.0)
    }

    fn has(&self, key: &str) -> bool {
        self.samples.contains_key(key)
    }

    /// Samples whose key starts with `prefix`.
    fn with_prefix(&self, prefix: &str) -> Vec<(&str, f64)> {
        self.samples
            .iter()
            .filter(|(k, _)| k.starts_with(prefix))
            .map(|(k, v)| (k.as_str(), *v))
            .collect()
    }
}

/// Scrapes and checks the text format: every sample line is `name[{labels}] value`, its
/// family declared by a `# TYPE` line before it.
async fn scrape(srv: &TestServer) -> Scrape {
    let resp = srv.client.get(srv.url("/metrics")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        common::header(&resp, "content-type"),
        "text/plain; version=0.0.4"
    );
    let text = resp.text().await.unwrap();
    let mut typed: Vec<String> = Vec::new();
    let mut samples = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split(' ');
            let name = parts.next().unwrap().to_owned();
            let kind = parts.next().unwrap();
            assert!(
                ["counter", "gauge", "histogram"].contains(&kind),
                "bad TYPE line {line:?}"
            );
            typed.push(name);
            continue;
        }
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        let (key, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("bad sample line {line:?}"));
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("bad value in {line:?}"));
        let name = key.split('{').next().unwrap();
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .filter(|f| typed.iter().any(|t| t == f))
            .unwrap_or(name);
        assert!(
            typed.iter().any(|t| t == family),
            "sample {key} has no # TYPE before it"
        );
        if key.contains('{') {
            assert!(key.ends_with('}'), "bad labels in {line:?}");
        }
        assert!(
            samples.insert(key.to_owned(), value).is_none(),
            "duplicate sample {key}"
        );
    }
    Scrape { samples }
}

const UPLOAD: &str = "/_matrix/media/v3/upload";
const DOWNLOAD: &str = "/_matrix/media/v3/download/{server}/{media_id}";

fn requests(method: &str, route: &str, status: u16) -> String {
    format!("media_ledger_http_requests_total{{method=\"{method}\",route=\"{route}\",status=\"{status}\"}}")
}

fn latency(method: &str, route: &str, suffix: &str) -> String {
    format!(
        "media_ledger_http_request_duration_seconds_{suffix}{{method=\"{method}\",route=\"{route}\"}}"
    )
}

/// The buckets of one latency histogram, in `le` order, and its count.
fn buckets(s: &Scrape, method: &str, route: &str) -> (Vec<(f64, f64)>, f64) {
    let prefix = format!(
        "media_ledger_http_request_duration_seconds_bucket{{method=\"{method}\",route=\"{route}\",le=\""
    );
    let mut out: Vec<(f64, f64)> = s
        .with_prefix(&prefix)
        .into_iter()
        .map(|(k, v)| {
            let le = k[prefix.len()..].trim_end_matches("\"}");
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().unwrap()
            };
            (le, v)
        })
        .collect();
    out.sort_by(|a, b| a.0.partial_cmp(&b.0).unwrap());
    (out, s.get(&latency(method, route, "count")))
}

fn check_histogram(s: &Scrape, method: &str, route: &str) {
    let (b, count) = buckets(s, method, route);
    assert!(b.len() >= 2, "{method} {route}: no buckets");
    assert!(
        b.windows(2).all(|w| w[0].1 <= w[1].1),
        "{method} {route}: buckets not cumulative: {b:?}"
    );
    assert_eq!(
        b.last().unwrap(),
        &(f64::INFINITY, count),
        "{method} {route}"
    );
}

/// Requests counted under the `OTHER` method label, over every route and status.
fn other_requests(s: &Scrape) -> f64 {
    s.with_prefix("media_ledger_http_requests_total{method=\"OTHER\"")
        .iter()
        .map(|(_, v)| v)
        .sum()
}

/// Waits until the ledger head stops moving (queued access events get synced).
async fn settle(srv: &TestServer) -> Scrape {
    let mut last = scrape(srv).await;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = scrape(srv).await;
        if now.get("media_ledger_ledger_head") == last.get("media_ledger_ledger_head") {
            return now;
        }
        last = now;
    }
    last
}

/// Two servers in one process: each scrape shows only its own server's traffic and syncs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_servers_keep_their_own_counters() {
    let mut a = TestServer::start().await;
    let mut b = TestServer::start().await;
    for n in [100usize, 200, 300] {
        a.upload_bytes(random_bytes(n)).await;
    }
    let mxc = b.upload_bytes(random_bytes(400)).await;
    assert_eq!(b.download_bytes(&mxc).await.len(), 400);
    let sa = settle(&a).await;
    let sb = settle(&b).await;
    assert_eq!(sa.get(&requests("POST", UPLOAD, 200)), 3.0);
    assert_eq!(sb.get(&requests("POST", UPLOAD, 200)), 1.0);
    assert_eq!(sa.get(&requests("GET", DOWNLOAD, 200)), 0.0);
    assert_eq!(sb.get(&latency("POST", UPLOAD, "count")), 1.0);
    assert_eq!(sa.get("media_ledger_http_received_bytes_total"), 600.0);
    assert_eq!(sb.get("media_ledger_http_received_bytes_total"), 400.0);
    // Each ledger's syncer records into its own server's registry.
    for (name, s) in [("a", &sa), ("b", &sb)] {
        assert_eq!(
            s.get("media_ledger_ledger_sync_events_sum"),
            s.get("media_ledger_ledger_head"),
            "server {name}: synced events add up to its own head"
        );
    }
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_follow_the_traffic() {
    let mut srv = TestServer::start_with(Opts {
        datastores: Some(
            "[[datastores]]\nid = \"files-a\"\ntype = \"file\"\npath = {dir:media-a}\nkinds = [\"all\"]\n\n[[datastores]]\nid = \"files-b\"\ntype = \"file\"\npath = {dir:media-b}\nkinds = [\"thumbnails\"]\n"
                .into(),
        ),
        ..Opts::default()
    })
    .await;
    let s0 = settle(&srv).await;
    assert!(s0.has("media_ledger_ledger_head"));
    assert_eq!(
        s0.get("media_ledger_datastore_bytes{datastore=\"files-a\"}"),
        0.0
    );

    // Known work: distinct uploads, a duplicate, a chunked upload, downloads, misses.
    let sizes = [1000usize, 2000, 3000, 4000, 5000];
    let mut uploaded = Vec::new();
    let mut cl_bytes = 0u64;
    for n in sizes {
        let bytes = random_bytes(n);
        cl_bytes += n as u64;
        let mxc = srv.upload_bytes(bytes.clone()).await;
        uploaded.push((mxc, bytes));
    }
    let dup = uploaded[0].1.clone();
    cl_bytes += dup.len() as u64;
    srv.upload_bytes(dup).await;
    let chunked: Vec<Vec<u8>> = (0..3).map(|_| random_bytes(700)).collect();
    let chunked_len: u64 = chunked.iter().map(|c| c.len() as u64).sum();
    let resp = srv
        .client
        .post(srv.url(UPLOAD))
        .bearer_auth(ALICE)
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
            chunked.into_iter().map(Ok::<_, std::io::Error>),
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let mut downloaded = 0u64;
    for (mxc, bytes) in uploaded.iter().take(4) {
        assert_eq!(&srv.download_bytes(mxc).await, bytes);
        downloaded += bytes.len() as u64;
    }
    for _ in 0..2 {
        let resp = srv.download("mxc://localhost/NoSuchMedia0123456789").await;
        assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    }
    let resp = srv
        .client
        .get(srv.url("/no/such/route"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    let s1 = settle(&srv).await;

    // Per-route counters.
    let d = |k: &str| s1.get(k) - s0.get(k);
    assert_eq!(d(&requests("POST", UPLOAD, 200)), 7.0, "uploads");
    assert_eq!(d(&requests("GET", DOWNLOAD, 200)), 4.0, "downloads");
    assert_eq!(d(&requests("GET", DOWNLOAD, 404)), 2.0, "misses");
    let unmatched =
        s1.with_prefix("media_ledger_http_requests_total{method=\"GET\",route=\"unmatched\"");
    println!("metrics: unmatched routes: {unmatched:?}");
    assert_eq!(
        d(&requests("GET", "unmatched", 404)),
        1.0,
        "unknown route counted as unmatched"
    );
    // Methods a client makes up share one label: each distinct one would be kept for good.
    let before_other = other_requests(&s1);
    for m in ["BREW", "XYZZY", "PROPFIND"] {
        let method = reqwest::Method::from_bytes(m.as_bytes()).unwrap();
        for path in ["/no/such/route", UPLOAD] {
            let resp = srv
                .client
                .request(method.clone(), srv.url(path))
                .send()
                .await
                .unwrap();
            assert!(resp.status().is_client_error(), "{m} {path}");
        }
    }
    let after = scrape(&srv).await;
    assert_eq!(other_requests(&after) - before_other, 6.0);
    for m in ["BREW", "XYZZY", "PROPFIND"] {
        assert!(
            after
                .with_prefix("media_ledger_http_")
                .iter()
                .all(|(k, _)| !k.contains(m)),
            "{m} became a label"
        );
    }
    // RocksDB's memory: the memtables hold this test's events (under their 64 MiB cap).
    let memtables = s1.get("media_ledger_rocksdb_memtable_bytes");
    assert!(
        memtables > 0.0 && memtables <= (64 << 20) as f64,
        "memtables {memtables}"
    );
    assert!(s1.has("media_ledger_rocksdb_block_cache_bytes"));
    // Latency histograms.
    for (m, r) in [("POST", UPLOAD), ("GET", DOWNLOAD)] {
        check_histogram(&s1, m, r);
    }
    assert_eq!(d(&latency("POST", UPLOAD, "count")), 7.0);
    assert_eq!(d(&latency("GET", DOWNLOAD, "count")), 6.0);
    assert!(d(&latency("POST", UPLOAD, "sum")) > 0.0);
    // Bytes.
    let bytes_in = d("media_ledger_http_received_bytes_total");
    let bytes_out = d("media_ledger_http_sent_bytes_total");
    println!(
        "metrics: bytes in +{bytes_in} (Content-Length uploads {cl_bytes}, chunked {chunked_len}), bytes out +{bytes_out} (downloads {downloaded})"
    );
    assert!(
        bytes_in >= cl_bytes as f64,
        "bytes in {bytes_in} < {cl_bytes}"
    );
    assert!(
        bytes_out >= downloaded as f64,
        "bytes out {bytes_out} < {downloaded}"
    );
    // Ledger sync histograms and the head.
    let head = d("media_ledger_ledger_head");
    let syncs = d("media_ledger_ledger_sync_seconds_count");
    let synced_events = d("media_ledger_ledger_sync_events_sum");
    println!("metrics: head +{head}, {syncs} syncs carrying {synced_events} events");
    assert!(head >= 7.0, "head moved by {head}");
    assert!(syncs >= 1.0 && syncs <= synced_events, "{syncs} syncs");
    assert_eq!(synced_events, head, "events per sync add up to the head");
    assert!(d("media_ledger_ledger_sync_seconds_sum") > 0.0);
    for h in [
        "media_ledger_ledger_sync_seconds",
        "media_ledger_ledger_sync_events",
    ] {
        let inf = s1.get(&format!("{h}_bucket{{le=\"+Inf\"}}"));
        assert_eq!(inf, s1.get(&format!("{h}_count")), "{h}");
    }
    // Projection lag: every projection, caught up.
    let lag = s1.with_prefix("media_ledger_projection_lag_events{");
    println!("metrics: projection lag {lag:?}");
    assert!(lag.len() >= 5, "{lag:?}");
    assert!(lag.iter().all(|(_, v)| *v == 0.0), "{lag:?}");
    // Datastore sizes: each distinct blob once.
    let distinct: u64 = sizes.iter().map(|n| *n as u64).sum::<u64>() + chunked_len;
    assert_eq!(
        s1.get("media_ledger_datastore_bytes{datastore=\"files-a\"}"),
        distinct as f64
    );
    assert_eq!(
        s1.get("media_ledger_datastore_hashes{datastore=\"files-a\"}"),
        6.0
    );
    assert_eq!(
        s1.get("media_ledger_datastore_bytes{datastore=\"files-b\"}"),
        0.0
    );

    // A transfer moves the bytes; its task gauges end at done = total.
    let resp = srv
        .client
        .post(srv.url("/_matrix/media/unstable/admin/datastores/files-a/transfer_to/files-b"))
        .bearer_auth(SECRET)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let v: Value = resp.json().await.unwrap();
    let task = v["task_id"].as_u64().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let t: Value = srv
            .client
            .get(srv.url(&format!("/_matrix/media/unstable/admin/tasks/{task}")))
            .bearer_auth(SECRET)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if t["is_finished"] == true {
            break;
        }
        assert!(Instant::now() < deadline, "transfer did not finish: {t}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let s2 = settle(&srv).await;
    println!(
        "metrics: after the transfer: {:?} {:?}",
        s2.with_prefix("media_ledger_datastore_"),
        s2.with_prefix("media_ledger_task_")
    );
    assert_eq!(
        s2.get("media_ledger_datastore_bytes{datastore=\"files-a\"}"),
        0.0
    );
    assert_eq!(
        s2.get("media_ledger_datastore_bytes{datastore=\"files-b\"}"),
        distinct as f64
    );
    let done = format!("media_ledger_task_bytes_done{{task=\"{task}\",finished=\"true\"}}");
    let total = format!("media_ledger_task_bytes_total{{task=\"{task}\",finished=\"true\"}}");
    assert_eq!(s2.get(&done), distinct as f64, "{done}");
    assert_eq!(s2.get(&total), distinct as f64, "{total}");
    assert_eq!(
        s2.get(&requests(
            "POST",
            "/_matrix/media/unstable/admin/datastores/{src}/transfer_to/{dst}",
            200
        )),
        1.0
    );
    assert!(s2.get("media_ledger_ledger_head") > s1.get("media_ledger_ledger_head"));
    // The scrapes themselves are counted too.
    assert!(s2.get(&requests("GET", "/metrics", 200)) > s1.get(&requests("GET", "/metrics", 200)));
    // Still served from files-b.
    assert_eq!(srv.download_bytes(&uploaded[4].0).await, uploaded[4].1);
    srv.stop().await;
}
