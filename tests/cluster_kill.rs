#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Cluster nodes as real processes (issue #16), SIGKILLed: the leader in the middle of a
//! transfer, and kill cycles under an upload load. Helpers shared with `cluster.rs`.

use crate::cluster::{log_shape, start_transfer, task_ends_well};
use crate::common;

use common::pg::PgServer;
use common::{parse_mxc, random_bytes, Opts};
use reqwest::StatusCode;
use serde_json::Value;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

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
    let task = start_transfer(&client, &url(p1, ""), "shared-a", "shared-b").await;
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
