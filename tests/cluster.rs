#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Several nodes sharing one log in a real PostgreSQL (issue #16): three media-ledger servers
//! in this process, each with its own local store, one PostgreSQL (`common::pg`), blobs in one
//! file datastore every node reaches (`shared = true`). Node processes SIGKILLed:
//! `cluster_kill.rs`.

use crate::common;

use common::pg::PgServer;
use common::{parse_mxc, random_bytes, Opts, TestServer, SECRET};
use reqwest::StatusCode;
use serde_json::Value;
use std::path::Path;
use std::time::{Duration, Instant};

/// A node of the cluster on `pg`, its blobs in the shared directory `media`.
async fn node(pg: &PgServer, media: &Path) -> TestServer {
    node_on(
        pg,
        format!(
            "[[datastores]]\nid = \"shared\"\ntype = \"file\"\npath = \"{}\"\nshared = true\nkinds = [\"all\"]\n",
            media.display()
        ),
    )
    .await
}

/// A node of the cluster on `pg` with these datastores.
async fn node_on(pg: &PgServer, datastores: String) -> TestServer {
    TestServer::start_with(Opts {
        database_extra: format!(
            "backend = \"postgres\"\nurl = \"{}\"\nfollow_interval_ms = 50\n",
            pg.url()
        ),
        datastores: Some(datastores),
        ..Opts::default()
    })
    .await
}

/// Waits (5 s at most) until `srv` serves `mxc` with exactly `bytes`.
pub(crate) async fn serves(srv: &TestServer, mxc: &str, bytes: &[u8]) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let resp = srv.download(mxc).await;
        if resp.status() == StatusCode::OK {
            let got = resp.bytes().await.unwrap();
            assert!(got == bytes, "{} serves other bytes for {mxc}", srv.base);
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{} does not serve {mxc} after 5 s: {}",
            srv.base,
            resp.status()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The shared log's record count and last sequence.
pub(crate) fn log_shape(pg: &PgServer) -> (u64, u64) {
    let out = pg.psql("SELECT count(*) || ' ' || coalesce(max(seq), 0) FROM media_ledger_log");
    let mut it = out.split_whitespace().map(|n| n.parse::<u64>().unwrap());
    (it.next().unwrap(), it.next().unwrap())
}

/// Uploads spread over three nodes, many at once, blobs in one S3 bucket (s3s-fs): every one
/// acknowledged is downloadable, byte-identical, from every node; the shared log is gap-free
/// and every node's local head reaches its end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_serve_every_upload() {
    let pg = PgServer::launch();
    let s3 = common::s3::S3Server::launch();
    let bucket = s3.datastore_toml("s3", common::s3::BUCKET, r#"["all"]"#, "");
    let nodes = [
        node_on(&pg, bucket.clone()).await,
        node_on(&pg, bucket.clone()).await,
        node_on(&pg, bucket.clone()).await,
    ];
    let mut uploads = Vec::new();
    for round in 0..4 {
        let mut batch = Vec::new();
        for (i, n) in nodes.iter().enumerate() {
            for _ in 0..5 {
                let bytes = random_bytes(1000 + round * 100 + i);
                batch.push(async move { (n.upload_bytes(bytes.clone()).await, bytes) });
            }
        }
        uploads.extend(futures_util::future::join_all(batch).await);
    }
    assert_eq!(uploads.len(), 60);
    for n in &nodes {
        for (mxc, bytes) in &uploads {
            serves(n, mxc, bytes).await;
        }
    }
    let (count, last) = log_shape(&pg);
    assert_eq!(count, last, "the shared log has gaps");
    assert!(count >= 60, "{count} records for 60 uploads");
    for n in &nodes {
        let deadline = Instant::now() + Duration::from_secs(5);
        while n.server().ledger.head().0 < last {
            assert!(Instant::now() < deadline, "{} stays behind", n.base);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(n.server().ledger.head().0, last);
    }
}

/// A quarantine acknowledged on one node holds on the others at once: the same bytes uploaded
/// to another node right after are refused (its writer catches up before deciding), and the
/// same act sent to two nodes at the same moment is recorded once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_moderation_act_is_decided_once_across_nodes() {
    let pg = PgServer::launch();
    let media = tempfile::tempdir().unwrap();
    let a = node(&pg, media.path()).await;
    let b = node(&pg, media.path()).await;
    let bytes = random_bytes(4000);
    let mxc = a.upload_bytes(bytes.clone()).await;
    serves(&b, &mxc, &bytes).await;
    let (server, id) = parse_mxc(&mxc);
    let quarantine = |n: &TestServer| {
        n.client
            .post(n.url(&format!(
                "/_matrix/media/unstable/admin/quarantine/{server}/{id}"
            )))
            .bearer_auth(SECRET)
            .send()
    };
    let (ra, rb) = tokio::join!(quarantine(&a), quarantine(&b));
    let (ra, rb) = (ra.unwrap(), rb.unwrap());
    assert_eq!(ra.status(), StatusCode::OK);
    assert_eq!(rb.status(), StatusCode::OK);
    let (va, vb): (Value, Value) = (ra.json().await.unwrap(), rb.json().await.unwrap());
    let changed = [&va, &vb]
        .iter()
        .map(|v| v["num_quarantined"].as_u64().unwrap_or(0))
        .sum::<u64>();
    assert_eq!(changed, 1, "the act counted twice: {va} {vb}");

    // Right after the acknowledgement, on the other node: refused.
    let resp = b.upload_raw(common::ALICE, bytes.clone(), None, None).await;
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["errcode"], "M_FORBIDDEN", "{v}");
}

/// PostgreSQL stopped: writes answer 503 M_UNKNOWN and record nothing, downloads of known
/// media keep working from the local store; when it is back, writes work again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_outage_refuses_writes_and_keeps_serving() {
    let mut pg = PgServer::launch();
    let media = tempfile::tempdir().unwrap();
    let a = node(&pg, media.path()).await;
    let bytes = random_bytes(3000);
    let mxc = a.upload_bytes(bytes.clone()).await;
    let (before, _) = log_shape(&pg);

    pg.stop();
    let resp = a
        .upload_raw(common::ALICE, random_bytes(2000), None, None)
        .await;
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["errcode"], "M_UNKNOWN", "{v}");
    assert!(a.download_bytes(&mxc).await == bytes);

    pg.start();
    let more = random_bytes(2500);
    let deadline = Instant::now() + Duration::from_secs(20);
    let mxc2 = loop {
        let resp = a.upload_raw(common::ALICE, more.clone(), None, None).await;
        if resp.status() == StatusCode::OK {
            let v: Value = resp.json().await.unwrap();
            break v["content_uri"].as_str().unwrap().to_owned();
        }
        assert!(
            Instant::now() < deadline,
            "writes do not resume: {}",
            resp.status()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(a.download_bytes(&mxc2).await == more);
    let (after, last) = log_shape(&pg);
    assert_eq!(after, last);
    assert_eq!(after, before + 1, "the refused upload left a record");
}

/// An async upload across three nodes: the id is created on one, a download waits for it on a
/// second, the bytes are PUT on a third; the waiting download answers them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_upload_created_put_and_awaited_on_different_nodes() {
    let pg = PgServer::launch();
    let media = tempfile::tempdir().unwrap();
    let (a, b, c) = (
        node(&pg, media.path()).await,
        node(&pg, media.path()).await,
        node(&pg, media.path()).await,
    );
    let resp = a
        .client
        .post(a.url("/_matrix/media/v1/create"))
        .bearer_auth(common::ALICE)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let v: Value = resp.json().await.unwrap();
    let mxc = v["content_uri"].as_str().unwrap().to_owned();
    let (server, id) = parse_mxc(&mxc);
    // C must know the reservation before it waits (else: 404).
    let deadline = Instant::now() + Duration::from_secs(5);
    while media_ledger_projections::pending_uploads::get(
        &c.server()
            .ledger
            .view(media_ledger_projections::names::PENDING_UPLOADS)
            .unwrap(),
        &mxc.parse().unwrap(),
    )
    .unwrap()
    .is_none()
    {
        assert!(Instant::now() < deadline, "C never learns the reservation");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let waiting = c
        .client
        .get(c.url(&format!(
            "/_matrix/media/v3/download/{server}/{id}?timeout_ms=10000"
        )))
        .bearer_auth(common::ALICE)
        .send();
    let bytes = random_bytes(6000);
    let put = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        b.client
            .put(b.url(&format!("/_matrix/media/v3/upload/{server}/{id}")))
            .bearer_auth(common::ALICE)
            .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
            .body(bytes.clone())
            .send()
            .await
            .unwrap()
    };
    let started = Instant::now();
    let (got, put) = tokio::join!(waiting, put);
    assert_eq!(put.status(), StatusCode::OK);
    let got = got.unwrap();
    assert_eq!(got.status(), StatusCode::OK);
    assert!(got.bytes().await.unwrap() == bytes);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the waiting download was not woken by the fill on another node"
    );
}

/// A single node grows into a cluster: its embedded log is copied into PostgreSQL by
/// `media-ledger migrate-log --to postgres` (the real binary), the node restarts as a cluster
/// node on the same local store, a second node with an empty one rebuilds the same state from
/// the shared log, and `media-ledger verify` checks the shared log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_node_migrates_its_log_and_gains_a_second_node() {
    let pg = PgServer::launch();
    let media = tempfile::tempdir().unwrap();
    let shared_media = format!(
        "[[datastores]]\nid = \"shared\"\ntype = \"file\"\npath = \"{}\"\nshared = true\nkinds = [\"all\"]\n",
        media.path().display()
    );
    let mut single = TestServer::start_with(Opts {
        datastores: Some(shared_media),
        ..Opts::default()
    })
    .await;
    let mut uploads = Vec::new();
    for n in [100, 2000, 30_000] {
        let bytes = random_bytes(n);
        uploads.push((single.upload_bytes(bytes.clone()).await, bytes));
    }
    let before = single.size_estimate("shared", None).await;
    let head = single.server().ledger.head().0;
    single.stop().await;

    let config = single.dir.path().join("config.toml");
    std::fs::write(&config, &single.config_text).unwrap();
    let run_with = |config: &Path, args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_media-ledger"))
            .args(args)
            .arg("--config")
            .arg(config)
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.code(), text)
    };
    let run = |args: &[&str]| run_with(&config, args);
    let (code, text) = run(&["migrate-log", "--to", "postgres", "--url", &pg.url()]);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("shared log verified"), "{text}");
    let (count, last) = log_shape(&pg);
    assert_eq!(count, last);
    assert_eq!(last, head);
    // Run again: nothing to copy, still verified.
    let (code, text) = run(&["migrate-log", "--to", "postgres", "--url", &pg.url()]);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("0 copied now"), "{text}");

    // The same local store, now a cluster node; and a second, fresh node.
    single.config_text = single.config_text.replace(
        "[database]\n",
        &format!(
            "[database]\nbackend = \"postgres\"\nurl = \"{}\"\nfollow_interval_ms = 50\n",
            pg.url()
        ),
    );
    std::fs::write(&config, &single.config_text).unwrap();
    single.restart().await;
    let second = node(&pg, media.path()).await;
    for (mxc, bytes) in &uploads {
        serves(&single, mxc, bytes).await;
        serves(&second, mxc, bytes).await;
    }
    assert_eq!(single.size_estimate("shared", None).await, before);
    assert_eq!(second.size_estimate("shared", None).await, before);
    let more = random_bytes(5000);
    let mxc = second.upload_bytes(more.clone()).await;
    serves(&single, &mxc, &more).await;
    single.stop().await;
    let mut second = second;
    second.stop().await;

    // Both local stores — one built by the embedded writer then continued from the shared
    // log, one built from the shared log alone — equal a replay of the same log.
    let (code, text) = run(&["verify"]);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("sequence and chain intact"), "{text}");
    let config2 = second.dir.path().join("config.toml");
    std::fs::write(&config2, &second.config_text).unwrap();
    let (code, text) = run_with(&config2, &["verify"]);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("sequence and chain intact"), "{text}");
}

/// A transfer recorded on a node that does not lead runs on the leader: it finishes, and the
/// node that took the request never started it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transfer_recorded_anywhere_runs_on_the_leader() {
    let pg = PgServer::launch();
    let media = tempfile::tempdir().unwrap();
    let stores = |n: &str| {
        format!(
            "[[datastores]]\nid = \"a\"\ntype = \"file\"\npath = \"{}\"\nshared = true\nkinds = [\"all\"]\n\n[[datastores]]\nid = \"b\"\ntype = \"file\"\npath = \"{}\"\nshared = true\nkinds = [\"remote_media\"]\n# {n}\n",
            media.path().join("a").display(),
            media.path().join("b").display(),
        )
    };
    let opts = |n: &str| Opts {
        database_extra: format!(
            "backend = \"postgres\"\nurl = \"{}\"\nfollow_interval_ms = 50\n",
            pg.url()
        ),
        datastores: Some(stores(n)),
        ..Opts::default()
    };
    let leader = TestServer::start_with(opts("leader")).await;
    // The first node takes the lock at once; give it the moment it needs.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let other = TestServer::start_with(opts("other")).await;
    let mut uploads = Vec::new();
    for n in [1000, 2000, 3000] {
        let bytes = random_bytes(n);
        uploads.push((other.upload_bytes(bytes.clone()).await, bytes));
    }
    let task = start_transfer(&other.client, &other.base, "a", "b").await;
    task_ends_well(&other.client, &other.base, &task, 20).await;
    for (mxc, bytes) in &uploads {
        serves(&leader, mxc, bytes).await;
        serves(&other, mxc, bytes).await;
    }
    assert_eq!(
        leader.size_estimate("b", None).await["total_bytes"],
        6000,
        "the blobs are not in b"
    );
}

/// Polls `tasks/{task}` on `base` until it finished (within `secs`), and checks it ended
/// without an error.
pub(crate) async fn task_ends_well(client: &reqwest::Client, base: &str, task: &Value, secs: u64) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let t: Value = client
            .get(format!("{base}/_matrix/media/unstable/admin/tasks/{task}"))
            .bearer_auth(SECRET)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if t["is_finished"] == true {
            assert_eq!(t["error_message"], "", "{t}");
            return;
        }
        assert!(
            Instant::now() < deadline,
            "task {task} not finished after {secs} s: {t}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A record this build cannot decode in the shared log (a newer build's event during a rolling
/// upgrade): the node does not decide anything without it — writes answer 503 M_UNKNOWN and
/// add nothing — and keeps serving what it holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_of_a_newer_build_stops_writes_not_reads() {
    use media_ledger_events::{codec, Seq};
    let pg = PgServer::launch();
    let media = tempfile::tempdir().unwrap();
    let a = node(&pg, media.path()).await;
    let bytes = random_bytes(2000);
    let mxc = a.upload_bytes(bytes.clone()).await;

    // Append a record with an intact chain and a body no build of ours decodes.
    let url = pg.url();
    let (count, last) = tokio::task::spawn_blocking(move || {
        let mut c = postgres::Client::connect(&url, postgres::NoTls).unwrap();
        let mut chain = codec::GENESIS_CHAIN;
        let rows = c
            .query("SELECT seq, record FROM media_ledger_log ORDER BY seq", &[])
            .unwrap();
        for r in &rows {
            let seq: i64 = r.get(0);
            let record: Vec<u8> = r.get(1);
            chain = codec::check_chain(&chain, Seq(seq as u64), &record)
                .unwrap()
                .0;
        }
        let next = rows.len() as i64 + 1;
        let (record, _) = codec::seal_body(&chain, Seq(next as u64), vec![0xff; 40]);
        c.execute(
            "INSERT INTO media_ledger_log (seq, record) VALUES ($1, $2)",
            &[&next, &record],
        )
        .unwrap();
        (next, next)
    })
    .await
    .unwrap();

    let resp = a
        .upload_raw(common::ALICE, random_bytes(1500), None, None)
        .await;
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["errcode"], "M_UNKNOWN", "{v}");
    assert_eq!(
        log_shape(&pg),
        (count as u64, last as u64),
        "a write went past it"
    );
    assert!(a.download_bytes(&mxc).await == bytes);
}

/// Starts a transfer `from` → `to` on `base` (asserting 200); its task id.
pub(crate) async fn start_transfer(
    client: &reqwest::Client,
    base: &str,
    from: &str,
    to: &str,
) -> Value {
    let resp = client
        .post(format!(
            "{base}/_matrix/media/unstable/admin/datastores/{from}/transfer_to/{to}"
        ))
        .bearer_auth(SECRET)
        .send()
        .await
        .unwrap();
    let status = resp.status();
    let v: Value = resp.json().await.unwrap();
    assert_eq!(status, StatusCode::OK, "{v}");
    v["task_id"].clone()
}
