//! `cargo bench --bench ledger -- cluster`: the PostgreSQL-backed log (issue #16) beside the
//! embedded one on this machine — durable appends (in-process ledgers), 64 KiB uploads and
//! downloads of one node, the follow lag of a second node under an upload load, downloads
//! spread over 1, 2 and 3 nodes with each node's CPU per request. PostgreSQL is a throwaway
//! cluster (the tests' `common::pg`), on the same 2 cores as everything else.

use super::{pseudo_random, tempdir};
use media_ledger::ledger::{Ledger, MemoryOptions, SharedOptions};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

mod s3 {
    /// What `common::pg` takes its port from.
    pub fn free_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }
}

#[path = "../../tests/common/pg.rs"]
mod pg;

const CLIENTS: usize = 32;
const SIZE: usize = 64 * 1024;

pub fn bench_cluster() {
    let pg = pg::PgServer::launch();
    appends(&pg);
    http(&pg);
}

/// Durable appends from 1 and 32 writers, embedded and on PostgreSQL.
fn appends(pg: &pg::PgServer) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    for backend in ["rocksdb", "postgres"] {
        pg.psql("DROP TABLE IF EXISTS media_ledger_log");
        let dir = tempdir();
        let shared = (backend == "postgres").then(|| SharedOptions {
            url: pg.url(),
            follow_interval: Duration::from_millis(100),
        });
        let ledger = Arc::new(
            Ledger::open_node(
                &dir.path().join("db"),
                Arc::default(),
                MemoryOptions::default(),
                shared,
                &mut |_, _| {},
            )
            .unwrap(),
        );
        let next = Arc::new(AtomicU64::new(0));
        let rates: Vec<f64> = [1usize, 32]
            .iter()
            .map(|w| super::append_rate(&rt, &ledger, &next, *w))
            .collect();
        println!(
            "cluster: durable appends, {backend}: 1 writer {:.0}/s, 32 writers {:.0}/s",
            rates[0], rates[1]
        );
        ledger.shutdown();
    }
}

/// A node process: `backend` "rocksdb" (alone) or "postgres" (on `pg`), blobs in `media`.
struct Node {
    proc: std::process::Child,
    base: String,
}

impl Node {
    fn start(dir: &Path, media: &Path, pg: Option<&pg::PgServer>) -> Self {
        let port = s3::free_port();
        let database = match pg {
            Some(pg) => format!(
                "backend = \"postgres\"\nurl = \"{}\"\nfollow_interval_ms = 100\n",
                pg.url()
            ),
            None => String::new(),
        };
        std::fs::create_dir_all(dir).unwrap();
        let config = format!(
            r#"[server]
bind = "127.0.0.1:{port}"
access_log = false
[database]
path = "{d}/db"
{database}
[downloads]
freeze_unauthenticated = false
[auth]
shared_secret = "bench-admin"
[[auth.static_tokens]]
token = "bench-user"
user_id = "@bench:localhost"
[[homeservers]]
name = "localhost"
[[datastores]]
id = "files"
type = "file"
path = "{m}"
shared = true
kinds = ["all"]
[rate_limits]
enabled = false
"#,
            d = dir.display(),
            m = media.display(),
        );
        let cfg = dir.join("config.toml");
        std::fs::write(&cfg, config).unwrap();
        let proc = std::process::Command::new(env!("CARGO_BIN_EXE_media-ledger"))
            .args(["serve", "--config"])
            .arg(&cfg)
            .env("RUST_LOG", "warn")
            .spawn()
            .unwrap();
        for _ in 0..400 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        Node {
            proc,
            base: format!("http://127.0.0.1:{port}"),
        }
    }

    /// User + system CPU seconds of the process so far.
    fn cpu_s(&self) -> f64 {
        let stat =
            std::fs::read_to_string(format!("/proc/{}/stat", self.proc.id())).unwrap_or_default();
        let after = stat.rsplit(')').next().unwrap_or("");
        let f: Vec<&str> = after.split_whitespace().collect();
        let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
        // Fields 14 and 15 (utime, stime), counted from after the command name.
        (ticks(11) + ticks(12)) / 100.0
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.proc.kill();
        let _ = self.proc.wait();
    }
}

/// `CLIENTS` clients for 5 s against `bases` (round robin): uploads (returning their ids) or
/// downloads of `ids`. Requests per second.
async fn load(
    client: &reqwest::Client,
    bases: &[String],
    upload: bool,
    ids: &[String],
    seed: u64,
) -> (f64, Vec<String>) {
    let done = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let uploaded = Arc::new(parking_lot::Mutex::new(Vec::new()));
    let ids = Arc::new(ids.to_vec());
    let counter = Arc::new(AtomicU64::new(seed));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..CLIENTS {
        let base = bases[c % bases.len()].clone();
        let (client, done, stop, uploaded, ids, counter) = (
            client.clone(),
            done.clone(),
            stop.clone(),
            uploaded.clone(),
            ids.clone(),
            counter.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut k = c;
            while !stop.load(Ordering::Relaxed) {
                if upload {
                    let body = pseudo_random(SIZE, counter.fetch_add(1, Ordering::Relaxed));
                    let resp = client
                        .post(format!("{base}/_matrix/media/v3/upload"))
                        .bearer_auth("bench-user")
                        .body(body)
                        .send()
                        .await
                        .unwrap();
                    assert!(resp.status().is_success(), "{}", resp.status());
                    let v: serde_json::Value = resp.json().await.unwrap();
                    let uri = v["content_uri"].as_str().unwrap();
                    uploaded
                        .lock()
                        .push(uri.trim_start_matches("mxc://").to_owned());
                } else {
                    let uri = &ids[k % ids.len()];
                    k += 7;
                    let resp = client
                        .get(format!("{base}/_matrix/media/v3/download/{uri}"))
                        .send()
                        .await
                        .unwrap();
                    assert!(resp.status().is_success(), "{}", resp.status());
                    assert_eq!(resp.bytes().await.unwrap().len(), SIZE);
                }
                done.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(5)).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    let rate = done.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64();
    let ids = uploaded.lock().clone();
    (rate, ids)
}

fn http(pg: &pg::PgServer) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(CLIENTS)
        .build()
        .unwrap();
    // One node of each backend: uploads, then downloads of what was uploaded.
    for backend in ["rocksdb", "postgres"] {
        // Each part starts from an empty shared log.
        pg.psql("DROP TABLE IF EXISTS media_ledger_log");
        let dir = tempdir();
        let node = Node::start(
            &dir.path().join("n1"),
            &dir.path().join("media"),
            (backend == "postgres").then_some(pg),
        );
        let bases = vec![node.base.clone()];
        let (up, ids) = rt.block_on(load(&client, &bases, true, &[], 1));
        let (down, _) = rt.block_on(load(&client, &bases, false, &ids, 0));
        let metrics = rt.block_on(async {
            client
                .get(format!("{}/metrics", node.base))
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap()
        });
        let figure = |name: &str| {
            metrics
                .lines()
                .find(|l| l.starts_with(name))
                .and_then(|l| l.split_whitespace().last())
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        let commits = figure("media_ledger_ledger_sync_events_count");
        let events = figure("media_ledger_ledger_sync_events_sum");
        let secs = figure("media_ledger_ledger_sync_seconds_sum");
        println!(
            "cluster: one node, {backend}: 64 KiB uploads {up:.0} req/s, downloads {down:.0} req/s ({CLIENTS} clients); {commits:.0} commits of {:.1} events on average, {:.2} ms each",
            events / commits.max(1.0),
            secs * 1000.0 / commits.max(1.0)
        );
    }
    // Three nodes on the shared log: follow lag under an upload load on node 1, then
    // downloads over 1, 2, 3 nodes.
    pg.psql("DROP TABLE IF EXISTS media_ledger_log");
    let dir = tempdir();
    let media = dir.path().join("media");
    let nodes: Vec<Node> = (1..=3)
        .map(|i| Node::start(&dir.path().join(format!("n{i}")), &media, Some(pg)))
        .collect();
    let lags = rt.block_on(follow_lag(&client, &nodes[0].base, &nodes[1].base));
    let pct = |p: f64| lags[((lags.len() as f64 - 1.0) * p) as usize];
    println!(
        "cluster: follow lag of node 2 (upload acknowledged by node 1 → served by node 2), {} probes under a {CLIENTS}-client upload load on node 1: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms (follow_interval_ms = 100; groups of the writer wake it earlier)",
        lags.len(),
        pct(0.5),
        pct(0.99),
        pct(1.0)
    );
    let bases: Vec<String> = nodes.iter().map(|n| n.base.clone()).collect();
    let (_, ids) = rt.block_on(load(&client, &bases[..1], true, &[], 5_000_000));
    std::thread::sleep(Duration::from_secs(1));
    for n in 1..=3 {
        let before: Vec<f64> = nodes.iter().map(Node::cpu_s).collect();
        let (rate, _) = rt.block_on(load(&client, &bases[..n], false, &ids, 0));
        let cpu: Vec<String> = nodes[..n]
            .iter()
            .zip(&before)
            .map(|(node, b)| {
                let share = rate * 5.0 / n as f64;
                format!("{:.3}", (node.cpu_s() - b) * 1000.0 / share)
            })
            .collect();
        println!(
            "cluster: downloads over {n} node(s): {rate:.0} req/s; server CPU ms per request per node: [{}] (the nodes, PostgreSQL and the clients share 2 cores)",
            cpu.join(", ")
        );
    }
}

/// Upload probes on `a` every 20 ms while 31 clients upload there too; for each, the time
/// until `b` serves it. Sorted, in ms.
async fn follow_lag(client: &reqwest::Client, a: &str, b: &str) -> Vec<f64> {
    let stop = Arc::new(AtomicBool::new(false));
    let mut load_tasks = Vec::new();
    for c in 0..CLIENTS - 1 {
        let (client, base, stop) = (client.clone(), a.to_owned(), stop.clone());
        load_tasks.push(tokio::spawn(async move {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let body = pseudo_random(SIZE, 9_000_000 + c as u64 * 1_000_000 + i);
                i += 1;
                let _ = client
                    .post(format!("{base}/_matrix/media/v3/upload"))
                    .bearer_auth("bench-user")
                    .body(body)
                    .send()
                    .await;
            }
        }));
    }
    let mut lags = Vec::new();
    let until = Instant::now() + Duration::from_secs(5);
    let mut i = 0u64;
    while Instant::now() < until {
        i += 1;
        let resp = client
            .post(format!("{a}/_matrix/media/v3/upload"))
            .bearer_auth("bench-user")
            .body(pseudo_random(1024, 77_000_000 + i))
            .send()
            .await
            .unwrap();
        let v: serde_json::Value = resp.json().await.unwrap();
        let uri = v["content_uri"]
            .as_str()
            .unwrap()
            .trim_start_matches("mxc://")
            .to_owned();
        let acked = Instant::now();
        loop {
            let r = client
                .get(format!("{b}/_matrix/media/v3/download/{uri}"))
                .send()
                .await
                .unwrap();
            if r.status().is_success() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        lags.push(acked.elapsed().as_secs_f64() * 1000.0);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for t in load_tasks {
        let _ = t.await;
    }
    lags.sort_by(|x, y| x.total_cmp(y));
    lags
}
