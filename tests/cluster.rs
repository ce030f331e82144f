#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Several nodes sharing one log in a real PostgreSQL (issue #16): three media-ledger servers
//! in this process, each with its own local store, one PostgreSQL (`common::pg`), blobs in one
//! file datastore every node reaches (`shared = true`).

use crate::common;

use common::pg::PgServer;
use common::{parse_mxc, random_bytes, Opts, TestServer, SECRET};
use reqwest::StatusCode;
use serde_json::Value;
use std::path::Path;
use std::sync::Arc;
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
async fn serves(srv: &TestServer, mxc: &str, bytes: &[u8]) {
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
fn log_shape(pg: &PgServer) -> (u64, u64) {
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

/// A node process of the cluster (the real binary, so it can be SIGKILLed), in `dir`.
fn spawn_node(dir: &Path, port: u16, pg: &PgServer, media: &Path) -> common::proxy::Child {
    let datastores = ["a", "b"]
        .iter()
        .map(|id| {
            format!(
                "[[datastores]]\nid = \"shared-{id}\"\ntype = \"file\"\npath = \"{}\"\nshared = true\nkinds = [{}]\n",
                media.join(id).display(),
                if *id == "a" { "\"all\"" } else { "\"remote_media\"" }
            )
        })
        .collect::<String>();
    let config = common::config_text(
        dir,
        &Opts {
            bind: Some(format!("127.0.0.1:{port}")),
            database_extra: format!(
                "backend = \"postgres\"\nurl = \"{}\"\nfollow_interval_ms = 50\n",
                pg.url()
            ),
            datastores: Some(datastores),
            extra_toml: "[transfers]\nparallel = 1\n".into(),
            ..Opts::default()
        },
    );
    std::fs::create_dir_all(dir).unwrap();
    let path = dir.join("config.toml");
    std::fs::write(&path, config).unwrap();
    common::proxy::Child(
        std::process::Command::new(env!("CARGO_BIN_EXE_media-ledger"))
            .args(["serve", "--config"])
            .arg(&path)
            .env("RUST_LOG", "info")
            .stderr(std::fs::File::create(dir.join("node.log")).unwrap())
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    )
}

/// The leader SIGKILLed while it runs a transfer and takes uploads: the other node keeps
/// serving, takes the leader lock, resumes the transfer to its end; every upload the killed
/// node acknowledged is there; the killed node restarts and catches up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_leader_is_replaced_and_its_transfer_finished() {
    let pg = PgServer::launch();
    let root = tempfile::tempdir().unwrap();
    let media = root.path().join("media");
    let (p1, p2) = (common::proxy::free_port(), common::proxy::free_port());
    let log1 = root.path().join("n1/node.log");
    let mut n1 = spawn_node(&root.path().join("n1"), p1, &pg, &media);
    common::proxy::wait_listening(p1, "node 1", &log1).await;
    // Node 1 leads: it started first.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !std::fs::read_to_string(&log1)
        .unwrap_or_default()
        .contains("this node leads the cluster")
    {
        assert!(Instant::now() < deadline, "node 1 never leads");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let log2 = root.path().join("n2/node.log");
    let _n2 = spawn_node(&root.path().join("n2"), p2, &pg, &media);
    common::proxy::wait_listening(p2, "node 2", &log2).await;
    let client = reqwest::Client::new();
    let url = |p: u16, path: &str| format!("http://127.0.0.1:{p}{path}");
    let upload = |p: u16, bytes: Vec<u8>| {
        client
            .post(url(p, "/_matrix/media/v3/upload"))
            .bearer_auth(common::ALICE)
            .body(bytes)
            .send()
    };
    let mut acked = Vec::new();
    for _ in 0..40 {
        let bytes = random_bytes(1024 * 1024);
        let v: Value = upload(p2, bytes.clone())
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        acked.push((v["content_uri"].as_str().unwrap().to_owned(), bytes));
    }
    // Uploads acknowledged by the leader.
    for _ in 0..5 {
        let bytes = random_bytes(3000);
        if let Ok(resp) = upload(p1, bytes.clone()).await {
            if resp.status() == StatusCode::OK {
                let v: Value = resp.json().await.unwrap();
                acked.push((v["content_uri"].as_str().unwrap().to_owned(), bytes));
            }
        }
    }
    // A transfer on the leader, SIGKILLed at once.
    let resp = client
        .post(url(
            p1,
            "/_matrix/media/unstable/admin/datastores/shared-a/transfer_to/shared-b",
        ))
        .bearer_auth(SECRET)
        .send()
        .await
        .unwrap();
    let status = resp.status();
    let v: Value = resp.json().await.unwrap();
    assert_eq!(status, StatusCode::OK, "{v}");
    let task = v["task_id"].clone();
    n1.0.kill().unwrap();
    n1.0.wait().unwrap();

    // Node 2 takes over and finishes the transfer.
    task_ends_well(&client, &url(p2, ""), &task, 60).await;
    let text2 = std::fs::read_to_string(&log2).unwrap();
    assert!(text2.contains("this node leads the cluster"), "{text2}");
    assert!(
        text2.contains("resuming transfer"),
        "the transfer ended before the kill; nothing was resumed: {text2}"
    );
    let fetch = |p: u16, mxc: String| {
        let (server, id) = parse_mxc(&mxc);
        client
            .get(url(p, &format!("/_matrix/media/v3/download/{server}/{id}")))
            .bearer_auth(common::ALICE)
            .send()
    };
    for (mxc, bytes) in &acked {
        let resp = fetch(p2, mxc.clone()).await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "{mxc} lost");
        assert!(resp.bytes().await.unwrap() == *bytes, "{mxc} differs");
    }
    // Node 1 again: it catches up and serves everything.
    let _n1 = spawn_node(&root.path().join("n1"), p1, &pg, &media);
    common::proxy::wait_listening(p1, "node 1 again", &log1).await;
    for (mxc, bytes) in &acked {
        let resp = fetch(p1, mxc.clone()).await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "{mxc} after the restart");
        assert!(resp.bytes().await.unwrap() == *bytes);
    }
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
    let resp = other
        .client
        .post(other.url("/_matrix/media/unstable/admin/datastores/a/transfer_to/b"))
        .bearer_auth(SECRET)
        .send()
        .await
        .unwrap();
    let status = resp.status();
    let v: Value = resp.json().await.unwrap();
    assert_eq!(status, StatusCode::OK, "{v}");
    let task = v["task_id"].clone();
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

/// The crash harness's cluster mode, small: two node processes under an upload load, one
/// of them SIGKILLed at a random moment each cycle and restarted. Every upload either node
/// acknowledged is served byte-identical by both at the end, the shared log has no gap, and
/// both nodes reach its head. `CLUSTER_CRASH_CYCLES` (default 4) cycles; the seed is printed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_cycles_lose_nothing_acknowledged() {
    let cycles: u64 = std::env::var("CLUSTER_CRASH_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4);
    let mut seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    eprintln!("cluster kill cycles: seed {seed}");
    let mut rand = move |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    let pg = PgServer::launch();
    let root = tempfile::tempdir().unwrap();
    let media = root.path().join("media");
    let ports = [common::proxy::free_port(), common::proxy::free_port()];
    let dirs = [root.path().join("n0"), root.path().join("n1")];
    let mut nodes: Vec<common::proxy::Child> = Vec::new();
    for i in 0..2 {
        nodes.push(spawn_node(&dirs[i], ports[i], &pg, &media));
        common::proxy::wait_listening(ports[i], "node", &dirs[i].join("node.log")).await;
    }
    let client = reqwest::Client::new();
    let acked = Arc::new(parking_lot::Mutex::new(Vec::<(String, Vec<u8>)>::new()));
    let mut cut = 0usize;
    for cycle in 0..cycles {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut load = Vec::new();
        for w in 0..8u64 {
            let (client, acked, stop) = (client.clone(), acked.clone(), stop.clone());
            let port = ports[(w % 2) as usize];
            load.push(tokio::spawn(async move {
                let mut failed = 0usize;
                let mut i = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    i += 1;
                    let bytes = random_bytes(1000 + ((cycle * 100 + w * 10 + i) % 5000) as usize);
                    let sent = client
                        .post(format!("http://127.0.0.1:{port}/_matrix/media/v3/upload"))
                        .bearer_auth(common::ALICE)
                        .body(bytes.clone())
                        .send()
                        .await;
                    match sent {
                        Ok(r) if r.status() == StatusCode::OK => {
                            if let Ok(v) = r.json::<Value>().await {
                                if let Some(uri) = v["content_uri"].as_str() {
                                    acked.lock().push((uri.to_owned(), bytes));
                                    continue;
                                }
                            }
                            failed += 1;
                        }
                        _ => {
                            failed += 1;
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                    }
                }
                failed
            }));
        }
        tokio::time::sleep(Duration::from_millis(300 + rand(1200))).await;
        let victim = rand(2) as usize;
        nodes[victim].0.kill().unwrap();
        nodes[victim].0.wait().unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        nodes[victim] = spawn_node(&dirs[victim], ports[victim], &pg, &media);
        common::proxy::wait_listening(
            ports[victim],
            "restarted node",
            &dirs[victim].join("node.log"),
        )
        .await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for t in load {
            cut += t.await.unwrap();
        }
        eprintln!(
            "cycle {}/{cycles}: node {victim} killed; {} uploads acknowledged so far",
            cycle + 1,
            acked.lock().len()
        );
    }
    let acked = acked.lock().clone();
    let (count, last) = log_shape(&pg);
    assert_eq!(count, last, "the shared log has gaps");
    for port in ports {
        for (mxc, bytes) in &acked {
            let (server, id) = parse_mxc(mxc);
            let url = format!("http://127.0.0.1:{port}/_matrix/media/v3/download/{server}/{id}");
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                let r = client
                    .get(&url)
                    .bearer_auth(common::ALICE)
                    .send()
                    .await
                    .unwrap();
                if r.status() == StatusCode::OK {
                    assert!(
                        r.bytes().await.unwrap() == *bytes,
                        "{mxc} differs on {port}"
                    );
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "{mxc} lost on {port}: {}",
                    r.status()
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
    eprintln!(
        "cluster kill cycles: {cycles} cycles, {} uploads acknowledged, {cut} requests failed or cut, {last} records in the shared log, losses 0",
        acked.len()
    );
    assert!(
        acked.len() > 10 * cycles as usize,
        "too little load to mean anything"
    );
}

/// Polls `tasks/{task}` on `base` until it finished (within `secs`), and checks it ended
/// without an error.
async fn task_ends_well(client: &reqwest::Client, base: &str, task: &Value, secs: u64) {
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
