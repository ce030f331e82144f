//! Throughput figures of the real paths, printed beside this machine's own ceilings.
//!
//! `cargo bench --bench ledger [-- fsync append replay upload http transfer thumbnail preview import abuse startup cluster]`
//! (default: all).
//! The HTTP parts start the release `media-ledger` binary as a child process and drive it
//! over loopback; client and server share the machine's cores.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use futures_util::StreamExt;
use media_ledger::ledger::{raw, Command, Ledger};
use media_ledger_events::{
    Actor, AsyncUploadCreated, Envelope, Event, MediaAccessed, MediaRef, MediaUploaded, RequestId,
    Seq, Sha256,
};
use sha2::Digest;
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let want = |name: &str| args.is_empty() || args.iter().any(|a| a == name);
    println!("machine: {} cores, {}", num_cpus(), cpu_model());
    if want("fsync") {
        bench_fsync();
    }
    if want("append") {
        bench_append();
    }
    if want("replay") {
        bench_replay();
    }
    if want("fold") {
        bench_fold();
    }
    if want("upload") {
        bench_upload();
    }
    if want("http") {
        bench_http();
    }
    if want("transfer") {
        bench_transfer();
    }
    if want("thumbnail") {
        bench_thumbnail();
    }
    if want("preview") {
        bench_preview();
    }
    if want("import") {
        bench_import();
    }
    if want("abuse") {
        bench_abuse();
    }
    if want("startup") {
        bench_startup();
    }
    if want("cluster") {
        cluster::bench_cluster();
    }
}

#[path = "ledger_cluster/mod.rs"]
mod cluster;

fn num_cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_default()
}

fn tempdir() -> tempfile::TempDir {
    // Under the target dir: same filesystem as the project, not tmpfs.
    let base = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench-tmp");
    std::fs::create_dir_all(&base).unwrap();
    tempfile::tempdir_in(base).unwrap()
}

fn fdatasync_rate(dir: &Path, secs: f64) -> f64 {
    let mut f = std::fs::File::create(dir.join("fsync-probe")).unwrap();
    let buf = [7u8; 256];
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed().as_secs_f64() < secs {
        f.write_all(&buf).unwrap();
        f.sync_data().unwrap();
        n += 1;
    }
    n as f64 / start.elapsed().as_secs_f64()
}

fn bench_fsync() {
    let dir = tempdir();
    let rate = fdatasync_rate(dir.path(), 2.0);
    println!(
        "fsync: 256 B append + fdatasync: {rate:.0}/s ({:.0} µs each)",
        1e6 / rate
    );
}

fn sha(i: u64) -> Sha256 {
    Sha256(sha2::Sha256::digest(i.to_le_bytes()).into())
}

fn media(i: u64) -> MediaRef {
    MediaRef::new(
        "bench.example".parse().unwrap(),
        format!("m{i:024}").parse().unwrap(),
    )
}

/// Durable appends per second from `writers` concurrent submitters over 3 s (each a
/// reservation with its own owner: the per-user cap is not measured here); `next` numbers
/// the media across calls.
fn append_rate(
    rt: &tokio::runtime::Runtime,
    ledger: &Arc<Ledger>,
    next: &Arc<AtomicU64>,
    writers: usize,
) -> f64 {
    let done = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    rt.block_on(async {
        let mut tasks = Vec::new();
        for _ in 0..writers {
            let (ledger, next, done, stop) =
                (ledger.clone(), next.clone(), done.clone(), stop.clone());
            tasks.push(tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let event = AsyncUploadCreated {
                        media: media(i),
                        owner: format!("@bench{i}:bench.example").parse().unwrap(),
                        expires_at_ms: u64::MAX,
                    };
                    ledger
                        .submit(
                            Actor::System,
                            RequestId("bench".into()),
                            Command::CreateAsync(event),
                        )
                        .await
                        .unwrap();
                    done.fetch_add(1, Ordering::Relaxed);
                }
            }));
        }
        tokio::time::sleep(Duration::from_secs(3)).await;
        stop.store(true, Ordering::Relaxed);
        for t in tasks {
            t.await.unwrap();
        }
    });
    done.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64()
}

fn bench_append() {
    let dir = tempdir();
    let machine = fdatasync_rate(dir.path(), 1.0);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let ledger = Arc::new(Ledger::open(&dir.path().join("db"), &mut |_, _| {}).unwrap());
    let next = Arc::new(AtomicU64::new(0));
    let mut rates = Vec::new();
    for writers in [1usize, 32] {
        let rate = append_rate(&rt, &ledger, &next, writers);
        println!("append: {writers:>2} concurrent writer(s): {rate:.0} durable appends/s ({:.2}× the machine's fdatasync rate of {machine:.0}/s)", rate / machine);
        rates.push(rate);
    }
    if let [one, many] = rates[..] {
        println!(
            "append: group commit gain, 32 writers / 1 writer = {:.1}×",
            many / one
        );
    }
    ledger.shutdown();
}

/// Where replay time goes, without RocksDB: encode, decode+chain check, pure folds.
fn bench_fold() {
    use media_ledger_events::codec;
    const N: u64 = 1_000_000;
    let envs: Vec<Envelope> = (0..N).map(replay_envelope).collect();
    let t = Instant::now();
    let mut chain = codec::GENESIS_CHAIN;
    let mut records = Vec::with_capacity(envs.len());
    for (i, e) in envs.iter().enumerate() {
        let mut e = e.clone();
        e.seq = Seq(i as u64 + 1);
        let (r, c) = codec::encode_record(&chain, &e).unwrap();
        chain = c;
        records.push(r);
    }
    println!(
        "fold: encode+chain {:.0} events/s",
        N as f64 / t.elapsed().as_secs_f64()
    );
    let t = Instant::now();
    let mut chain = codec::GENESIS_CHAIN;
    let mut decoded = Vec::with_capacity(records.len());
    for (i, r) in records.iter().enumerate() {
        let (e, c) = codec::decode_record(&chain, Seq(i as u64 + 1), r).unwrap();
        chain = c;
        decoded.push(e);
    }
    println!(
        "fold: decode+chain check {:.0} events/s",
        N as f64 / t.elapsed().as_secs_f64()
    );
    for p in media_ledger_projections::ALL {
        let t = Instant::now();
        let mut kv = media_ledger_projections::memory::MemoryKv::default();
        for e in &decoded {
            p.apply(e, &mut kv).unwrap();
        }
        println!(
            "fold: {} alone (BTreeMap) {:.0} events/s, {} keys",
            p.name(),
            N as f64 / t.elapsed().as_secs_f64(),
            kv.0.len()
        );
    }
}

fn replay_envelope(i: u64) -> Envelope {
    let event = if i % 4 == 3 {
        let m = i - 1;
        Event::MediaAccessedV1(MediaAccessed {
            media: media(m),
            sha256: sha(m % 200_000),
        })
    } else {
        Event::MediaUploadedV1(MediaUploaded {
            media: media(i),
            sha256: sha(i % 200_000),
            size_bytes: 65_536 + i % 1000,
            content_type: Some("image/png".parse().unwrap()),
            upload_name: Some("cat.png".into()),
            uploader: Actor::User("@alice:bench.example".parse().unwrap()),
            datastore: if i % 2 == 0 { "a" } else { "b" }.parse().unwrap(),
            location: format!("ab/cd/{}", sha(i % 200_000)).parse().unwrap(),
        })
    };
    Envelope {
        seq: Seq(0),
        recorded_at_ms: 1_700_000_000_000 + i,
        actor: Actor::System,
        request_id: RequestId("bench".into()),
        event,
    }
}

fn bench_replay() {
    const N: u64 = 1_000_000;
    let dir = tempdir();
    let db = dir.path().join("db");
    let build = Instant::now();
    let mut seq = 0u64;
    while seq < N {
        let chunk: Vec<Envelope> = (seq..(seq + 100_000).min(N)).map(replay_envelope).collect();
        seq += chunk.len() as u64;
        raw::append_unprojected(&db, &chunk).unwrap();
    }
    println!(
        "replay: wrote a {N}-event log in {:.1} s",
        build.elapsed().as_secs_f64()
    );
    let (ledger, report) = Ledger::open_rebuilt(&db, &mut |_, _| {}).unwrap();
    ledger.shutdown();
    drop(ledger);
    println!("replay: rebuilt {} projections from {} events in {:.2} s = {:.0} events/s (target ≥ 250k/s)", media_ledger_projections::ALL.len(), report.events, report.seconds, report.events as f64 / report.seconds);
    let t = Instant::now();
    let (head, div) = Ledger::verify_path(&db).unwrap();
    println!("replay: verify (chain + full in-memory replay + compare) of {} events: {:.2} s, divergence: {div:?}", head.seq, t.elapsed().as_secs_f64());
}

/// A child `media-ledger serve` on a free port with its data in `dir`.
struct Child {
    proc: std::process::Child,
    base: String,
}

impl Child {
    fn start(dir: &Path, max_bytes: u64) -> Self {
        Self::start_with(dir, max_bytes, "")
    }

    /// With extra TOML appended (more datastores).
    fn start_with(dir: &Path, max_bytes: u64, extra: &str) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let config = format!(
            r#"[server]
bind = "127.0.0.1:{port}"
[database]
path = "{d}/db"
[uploads]
max_bytes = {max_bytes}
[downloads]
# The figures are of anonymous downloads on the deprecated endpoints (no whoami).
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
path = "{d}/media"
kinds = ["all"]
{limits}
{extra}
"#,
            d = dir.display(),
            limits = if extra.contains("[rate_limits]") {
                ""
            } else {
                "[rate_limits]\nenabled = false"
            },
        );
        let cfg = dir.join("config.toml");
        std::fs::write(&cfg, config).unwrap();
        let proc = std::process::Command::new(env!("CARGO_BIN_EXE_media-ledger"))
            .args(["serve", "--config"])
            .arg(&cfg)
            .env("RUST_LOG", "warn")
            .spawn()
            .unwrap();
        let base = format!("http://127.0.0.1:{port}");
        for _ in 0..200 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        Child { proc, base }
    }

    fn peak_rss_mib(&self) -> f64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.proc.id())).unwrap_or_default();
        status
            .lines()
            .find(|l| l.starts_with("VmHWM:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<f64>().ok())
            .map_or(0.0, |kb| kb / 1024.0)
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.proc.kill();
        let _ = self.proc.wait();
    }
}

fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn bench_upload() {
    const TOTAL: usize = 1 << 30;
    const CHUNK: usize = 1 << 20;
    let dir = tempdir();
    let chunk = bytes::Bytes::from(pseudo_random(CHUNK, 1));

    // The machine's own figure for the same work: hash, write and fsync 1 GiB.
    let t = Instant::now();
    {
        let mut f = std::fs::File::create(dir.path().join("baseline")).unwrap();
        let mut h = sha2::Sha256::new();
        for _ in 0..TOTAL / CHUNK {
            h.update(&chunk);
            f.write_all(&chunk).unwrap();
        }
        f.sync_all().unwrap();
        let _ = h.finalize();
    }
    let baseline = TOTAL as f64 / 1e6 / t.elapsed().as_secs_f64();
    std::fs::remove_file(dir.path().join("baseline")).unwrap();
    println!("upload: machine baseline, sha256 + write + fsync of 1 GiB in one thread: {baseline:.0} MB/s");

    let child = Child::start(dir.path(), 2 << 30);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let rss_before = child.peak_rss_mib();
    let (secs, status) = rt.block_on(async {
        let client = reqwest::Client::new();
        let stream = futures_util::stream::iter(
            (0..TOTAL / CHUNK).map(move |_| Ok::<_, std::io::Error>(chunk.clone())),
        );
        let t = Instant::now();
        let resp = client
            .post(format!(
                "{}/_matrix/media/v3/upload?filename=big.bin",
                child.base
            ))
            .bearer_auth("bench-user")
            .header("content-type", "application/octet-stream")
            .header("content-length", TOTAL.to_string())
            .body(reqwest::Body::wrap_stream(stream))
            .send()
            .await
            .unwrap();
        let status = resp.status();
        let _ = resp.text().await;
        (t.elapsed().as_secs_f64(), status)
    });
    let rate = TOTAL as f64 / 1e6 / secs;
    println!(
        "upload: 1 GiB single stream over HTTP: {rate:.0} MB/s ({:.0}% of the machine baseline; status {status}); server peak RSS {:.1} MiB (idle {rss_before:.1} MiB)",
        rate * 100.0 / baseline,
        child.peak_rss_mib()
    );
}

/// The machine's own rate of durable 64 KiB files right now (write, fsync, rename, from
/// `threads` threads for `secs` seconds): the disk-bound ceiling of small uploads, which on
/// this VM varies several-fold over a day.
fn raw_durable_files(threads: usize, secs: u64) -> f64 {
    let dir = tempdir();
    let data = pseudo_random(64 * 1024, 7);
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let workers: Vec<_> = (0..threads)
        .map(|t| {
            let (dir, data, stop, done) = (
                dir.path().to_owned(),
                data.clone(),
                stop.clone(),
                done.clone(),
            );
            std::thread::spawn(move || {
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let tmp = dir.join(format!("{t}-{n}.part"));
                    let mut f = std::fs::File::create(&tmp).unwrap();
                    std::io::Write::write_all(&mut f, &data).unwrap();
                    f.sync_all().unwrap();
                    std::fs::rename(&tmp, dir.join(format!("{t}-{n}"))).unwrap();
                    n += 1;
                    done.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(secs));
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.join().unwrap();
    }
    done.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64()
}

fn bench_http() {
    const SIZE: usize = 64 * 1024;
    const CLIENTS: usize = 32;
    let raw = raw_durable_files(CLIENTS, 3);
    println!("http: machine baseline, 64 KiB file write + fsync + rename from {CLIENTS} threads: {raw:.0} files/s");
    let dir = tempdir();
    let child = Child::start(dir.path(), 1 << 20);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let client = reqwest::Client::builder().pool_max_idle_per_host(CLIENTS).build().unwrap();
        let counter = Arc::new(AtomicU64::new(0));
        let uris = Arc::new(parking_lot::Mutex::new(Vec::<String>::new()));
        for phase in ["upload", "download"] {
            let done = Arc::new(AtomicU64::new(0));
            let stop = Arc::new(AtomicBool::new(false));
            let start = Instant::now();
            let mut tasks = Vec::new();
            let targets: Arc<Vec<String>> = Arc::new(uris.lock().clone());
            for c in 0..CLIENTS {
                let (client, base, done, stop, counter, uris, targets) = (client.clone(), child.base.clone(), done.clone(), stop.clone(), counter.clone(), uris.clone(), targets.clone());
                tasks.push(tokio::spawn(async move {
                    let mut k = c;
                    while !stop.load(Ordering::Relaxed) {
                        if phase == "upload" {
                            let body = pseudo_random(SIZE, counter.fetch_add(1, Ordering::Relaxed) + 10);
                            let resp = client.post(format!("{base}/_matrix/media/v3/upload")).bearer_auth("bench-user").body(body).send().await.unwrap();
                            assert!(resp.status().is_success(), "{}", resp.status());
                            let v: serde_json::Value = resp.json().await.unwrap();
                            let uri = v["content_uri"].as_str().unwrap().trim_start_matches("mxc://").to_owned();
                            uris.lock().push(uri);
                        } else {
                            let uri = &targets[k % targets.len()];
                            k += 7;
                            let resp = client.get(format!("{base}/_matrix/media/v3/download/{uri}")).send().await.unwrap();
                            assert!(resp.status().is_success(), "{}", resp.status());
                            let b = resp.bytes().await.unwrap();
                            assert_eq!(b.len(), SIZE);
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
            let peer = if phase == "upload" { 160.0 } else { 420.0 };
            let beside = if phase == "upload" {
                format!("{:.0}% of the machine's durable-file rate", rate * 100.0 / raw)
            } else {
                "nginx ceiling ~12k/s".to_owned()
            };
            println!("http: 64 KiB {phase}s, {CLIENTS} concurrent clients: {rate:.0} req/s ({:.1}× Synapse's ~{peer:.0}/s; {beside})", rate / peer);
        }
    });
}

/// s3s-fs on a free port (the test server; see `.ci/deps`).
struct S3s {
    proc: std::process::Child,
    endpoint: String,
}

impl S3s {
    fn start(root: &Path, bucket: &str) -> Self {
        let bin = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/tools/bin/s3s-fs");
        assert!(
            bin.exists(),
            "s3s-fs not found: run .ci/run (it installs s3s-fs into target/tools)"
        );
        std::fs::create_dir_all(root.join(bucket)).unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let proc = std::process::Command::new(bin)
            .args([
                "--host",
                "127.0.0.1",
                "--port",
                &port.to_string(),
                "--access-key",
                "benchak",
                "--secret-key",
                "benchsk",
            ])
            .arg(root)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        for _ in 0..200 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        S3s {
            proc,
            endpoint: format!("http://127.0.0.1:{port}"),
        }
    }
}

impl Drop for S3s {
    fn drop(&mut self) {
        let _ = self.proc.kill();
        let _ = self.proc.wait();
    }
}

/// A file → S3 transfer of 64 blobs of 4 MiB, beside raw PUTs of the same sizes to the same
/// server with the same parallelism (4).
fn bench_transfer() {
    const BLOBS: usize = 64;
    const SIZE: usize = 4 << 20;
    let dir = tempdir();
    let s3 = S3s::start(&dir.path().join("s3"), "bench");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();

    // Raw PUT throughput of this server, 4 at a time.
    let raw = rt.block_on(async {
        use aws_sdk_s3::config::{
            BehaviorVersion, Builder, Credentials, Region, RequestChecksumCalculation,
            ResponseChecksumValidation,
        };
        let conf = Builder::new()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .endpoint_url(&s3.endpoint)
            .force_path_style(true)
            .credentials_provider(Credentials::new("benchak", "benchsk", None, None, "bench"))
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
            .build();
        let client = aws_sdk_s3::Client::from_conf(conf);
        let bodies: Vec<bytes::Bytes> = (0..BLOBS)
            .map(|i| bytes::Bytes::from(pseudo_random(SIZE, 1000 + i as u64)))
            .collect();
        let t = Instant::now();
        futures_util::stream::iter(bodies.into_iter().enumerate())
            .map(|(i, b)| {
                let client = client.clone();
                async move {
                    client
                        .put_object()
                        .bucket("bench")
                        .key(format!("raw/{i}"))
                        .body(b.into())
                        .send()
                        .await
                        .unwrap();
                }
            })
            .buffer_unordered(4)
            .collect::<Vec<_>>()
            .await;
        (BLOBS * SIZE) as f64 / 1e6 / t.elapsed().as_secs_f64()
    });
    println!("transfer: raw PutObject to s3s-fs, {BLOBS} × 4 MiB, 4 in parallel: {raw:.0} MB/s");

    for (checksums, how) in [
        (true, "PUT with its SHA-256, verified by HEAD"),
        (false, "PUT, read back and hashed"),
    ] {
        let (secs, status) = transfer_once(&rt, &s3, checksums, BLOBS, SIZE);
        let rate = (BLOBS * SIZE) as f64 / 1e6 / secs;
        println!(
            "transfer: file → S3 of {BLOBS} × 4 MiB ({how}, switch, delete): {rate:.0} MB/s = {:.0}% of raw PUT (target ≥ 70%); blobs_done {}, error {:?}",
            rate * 100.0 / raw,
            status["blobs_done"],
            status["error_message"]
        );
    }
}

/// One server with a file datastore and `s3`, `blobs` uploads (other bytes for each mode, so
/// the second run finds none of its blobs in the bucket), one transfer files → s3: its
/// seconds and final task status.
fn transfer_once(
    rt: &tokio::runtime::Runtime,
    s3: &S3s,
    checksums: bool,
    blobs: usize,
    size: usize,
) -> (f64, serde_json::Value) {
    let dir = tempdir();
    let seed = if checksums { 5000 } else { 9000 };
    let extra = format!(
        r#"[[datastores]]
id = "s3"
type = "s3"
endpoint = "{}"
bucket = "bench"
access_key_id = "benchak"
secret_access_key = "benchsk"
kinds = ["remote_media"]
sha256_checksums = {}
[transfers]
parallel = 8
"#,
        s3.endpoint, checksums
    );
    let child = Child::start_with(dir.path(), 1 << 30, &extra);
    rt.block_on(async {
        let client = reqwest::Client::new();
        for i in 0..blobs {
            let resp = client
                .post(format!("{}/_matrix/media/v3/upload", child.base))
                .bearer_auth("bench-user")
                .body(pseudo_random(size, seed + i as u64))
                .send()
                .await
                .unwrap();
            assert!(resp.status().is_success());
        }
        let t = Instant::now();
        let v: serde_json::Value = client
            .post(format!(
                "{}/_matrix/media/unstable/admin/datastores/files/transfer_to/s3",
                child.base
            ))
            .bearer_auth("bench-admin")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let task = v["task_id"].as_u64().expect("task id");
        loop {
            let t2: serde_json::Value = client
                .get(format!(
                    "{}/_matrix/media/unstable/admin/tasks/{task}",
                    child.base
                ))
                .bearer_auth("bench-admin")
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            if t2["is_finished"].as_bool() == Some(true) {
                return (t.elapsed().as_secs_f64(), t2);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
}

/// A 1920×1080 (2 MP) JPEG of a gradient with some noise; `seed` makes each one distinct.
fn jpeg_2mp(seed: u64) -> Vec<u8> {
    let noise = pseudo_random(1920 * 1080, seed);
    let img = image::RgbImage::from_fn(1920, 1080, |x, y| {
        let n = noise[(y * 1920 + x) as usize] >> 4;
        image::Rgb([
            (x * 255 / 1920) as u8 ^ n,
            (y * 255 / 1080) as u8,
            ((x + y) as u8).wrapping_add(seed as u8),
        ])
    });
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 85)
        .encode_image(&img)
        .unwrap();
    out
}

/// Thumbnail generation of distinct 2 MP JPEGs (each request generates: 320×240 scale, 4
/// concurrent clients), with the default single worker and with one worker per core; then
/// cached thumbnails, 32 concurrent clients for 5 s.
fn bench_thumbnail() {
    const IMAGES: usize = 40;
    const GEN_CLIENTS: usize = 4;
    const CLIENTS: usize = 32;
    const QUERY: &str = "width=320&height=240&method=scale";
    let t = Instant::now();
    let jpegs: Vec<Vec<u8>> = (0..IMAGES as u64).map(|i| jpeg_2mp(100 + i)).collect();
    let avg = jpegs.iter().map(Vec::len).sum::<usize>() / IMAGES;
    println!(
        "thumbnail: made {IMAGES} distinct 1920×1080 JPEGs in memory ({} KiB each on average) in {:.1} s",
        avg / 1024,
        t.elapsed().as_secs_f64()
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut worker_counts = vec![1usize];
    if num_cpus() > 1 {
        worker_counts.push(num_cpus());
    }
    for workers in worker_counts {
        let dir = tempdir();
        let extra = format!("[thumbnails]\nworkers = {workers}\n");
        let child = Child::start_with(dir.path(), 16 << 20, &extra);
        rt.block_on(async {
            let client = reqwest::Client::builder()
                .pool_max_idle_per_host(CLIENTS)
                .build()
                .unwrap();
            let mut uris = Vec::new();
            for j in &jpegs {
                let resp = client
                    .post(format!("{}/_matrix/media/v3/upload", child.base))
                    .bearer_auth("bench-user")
                    .header("content-type", "image/jpeg")
                    .body(j.clone())
                    .send()
                    .await
                    .unwrap();
                assert!(resp.status().is_success(), "{}", resp.status());
                let v: serde_json::Value = resp.json().await.unwrap();
                uris.push(
                    v["content_uri"]
                        .as_str()
                        .unwrap()
                        .trim_start_matches("mxc://")
                        .to_owned(),
                );
            }
            let url = |uri: &str| format!("{}/_matrix/media/v3/thumbnail/{uri}?{QUERY}", child.base);

            // Generation: every request is for a different media.
            let t = Instant::now();
            let sizes: Vec<usize> = futures_util::stream::iter(uris.iter().map(|u| url(u)))
                .map(|u| {
                    let client = client.clone();
                    async move {
                        // A token: anonymous legacy requests do not generate.
                        let resp = client.get(u).bearer_auth("bench-user").send().await.unwrap();
                        assert!(resp.status().is_success(), "{}", resp.status());
                        assert_eq!(resp.headers()["content-type"], "image/jpeg");
                        resp.bytes().await.unwrap().len()
                    }
                })
                .buffer_unordered(GEN_CLIENTS)
                .collect()
                .await;
            let secs = t.elapsed().as_secs_f64();
            println!(
                "thumbnail: generation of 320×240 scale from distinct 2 MP JPEGs, {GEN_CLIENTS} concurrent clients, workers = {workers}: {:.1} generations/s ({:.0} ms each on average, {} KiB thumbnails); server peak RSS {:.1} MiB",
                IMAGES as f64 / secs,
                secs * 1000.0 * GEN_CLIENTS.min(workers) as f64 / IMAGES as f64,
                sizes.iter().sum::<usize>() / IMAGES / 1024,
                child.peak_rss_mib()
            );

            // Cached: the same thumbnails again, served from the store; beside downloads of
            // the originals from the same server.
            let thumbs: Vec<String> = uris.iter().map(|u| url(u)).collect();
            let originals: Vec<String> = uris
                .iter()
                .map(|u| format!("{}/_matrix/media/v3/download/{u}", child.base))
                .collect();
            let rate = requests_for(&client, thumbs, CLIENTS, Duration::from_secs(5)).await;
            println!(
                "thumbnail: cached 320×240 thumbnails, {CLIENTS} concurrent clients, workers = {workers}: {rate:.0} req/s ({:.0}× the generation rate)",
                rate * secs / IMAGES as f64
            );
            let base = requests_for(&client, originals, CLIENTS, Duration::from_secs(5)).await;
            println!(
                "thumbnail: baseline, downloads of the {} KiB originals from the same server, {CLIENTS} concurrent clients: {base:.0} req/s (cached thumbnails at {:.0}% of it)",
                avg / 1024,
                rate * 100.0 / base
            );
            // Media of the thumbnails' size: whether small answers are slow in general.
            let mut small = Vec::new();
            for (i, len) in sizes.iter().enumerate() {
                let resp = client
                    .post(format!("{}/_matrix/media/v3/upload", child.base))
                    .bearer_auth("bench-user")
                    .body(pseudo_random(*len, 9000 + i as u64))
                    .send()
                    .await
                    .unwrap();
                let v: serde_json::Value = resp.json().await.unwrap();
                let uri = v["content_uri"].as_str().unwrap().trim_start_matches("mxc://");
                small.push(format!("{}/_matrix/media/v3/download/{uri}", child.base));
            }
            let small_rate = requests_for(&client, small, CLIENTS, Duration::from_secs(5)).await;
            println!(
                "thumbnail: baseline, downloads of media of the thumbnails' sizes ({} KiB), {CLIENTS} concurrent clients: {small_rate:.0} req/s",
                sizes.iter().sum::<usize>() / IMAGES / 1024
            );
        });
    }
}

/// A small site on loopback for link previews: `/page/{n}` is an OpenGraph page whose image is
/// `/img/{n}.png` (a distinct 64×48 PNG each).
async fn preview_site() -> String {
    use axum::extract::Path as P;
    use axum::response::IntoResponse;
    let app = axum::Router::new()
        .route(
            "/page/{n}",
            axum::routing::get(|P(n): P<u32>| async move {
                let html = format!(
                    "<html><head><title>Page {n}</title>\
                     <meta property=\"og:title\" content=\"Page number {n}\">\
                     <meta property=\"og:description\" content=\"A page to preview, number {n}.\">\
                     <meta property=\"og:site_name\" content=\"Bench site\">\
                     <meta property=\"og:image\" content=\"/img/{n}.png\"></head>\
                     <body><p>{}</p></body></html>",
                    "Some text. ".repeat(200)
                );
                ([("content-type", "text/html; charset=utf-8")], html)
            }),
        )
        .route(
            "/img/{n}",
            axum::routing::get(|P(n): P<String>| async move {
                let seed = n.trim_end_matches(".png").parse::<u32>().unwrap_or(0);
                let img = image::RgbImage::from_fn(64, 48, |x, y| {
                    image::Rgb([seed as u8, (seed >> 8) as u8 ^ (x * 4) as u8, (y * 5) as u8])
                });
                let mut png = std::io::Cursor::new(Vec::new());
                img.write_to(&mut png, image::ImageFormat::Png).unwrap();
                ([("content-type", "image/png")], png.into_inner()).into_response()
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

/// Link previews: the first preview of distinct pages (page, image, two events), then the same
/// previews from the cache, beside the server's cheapest authenticated JSON answer
/// (`/_matrix/client/v1/media/config`), all with a static token (no whoami).
fn bench_preview() {
    const PAGES: usize = 400;
    const FETCH_CLIENTS: usize = 4;
    const CLIENTS: usize = 32;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempdir();
    let extra = "[url_previews]\nip_range_allowlist = [\"127.0.0.1\"]\nrate_limit_burst = 1000\n";
    let child = Child::start_with(dir.path(), 16 << 20, extra);
    rt.block_on(async {
        let site = preview_site().await;
        let mut auth = reqwest::header::HeaderMap::new();
        auth.insert(
            reqwest::header::AUTHORIZATION,
            "Bearer bench-user".parse().unwrap(),
        );
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(CLIENTS)
            .default_headers(auth)
            .build()
            .unwrap();
        let urls: Vec<String> = (0..PAGES)
            .map(|n| {
                format!(
                    "{}/_matrix/client/v1/media/preview_url?url={site}/page/{n}",
                    child.base
                )
            })
            .collect();
        let t = Instant::now();
        futures_util::stream::iter(urls.clone())
            .map(|u| {
                let client = client.clone();
                async move {
                    let resp = client.get(u).send().await.unwrap();
                    assert!(resp.status().is_success(), "{}", resp.status());
                    let og: serde_json::Value = resp.json().await.unwrap();
                    assert!(og["og:image"].as_str().is_some_and(|i| i.starts_with("mxc://")), "{og}");
                }
            })
            .buffer_unordered(FETCH_CLIENTS)
            .collect::<Vec<()>>()
            .await;
        let fetch_rate = PAGES as f64 / t.elapsed().as_secs_f64();
        println!(
            "preview: first previews of distinct pages (page + 64×48 PNG image, both events durable), {FETCH_CLIENTS} concurrent clients: {fetch_rate:.0} previews/s"
        );
        let rate = requests_for(&client, urls, CLIENTS, Duration::from_secs(5)).await;
        println!(
            "preview: cached previews, {CLIENTS} concurrent clients: {rate:.0} req/s ({:.0}× the first previews)",
            rate / fetch_rate
        );
        let config = vec![format!("{}/_matrix/client/v1/media/config", child.base)];
        let base = requests_for(&client, config, CLIENTS, Duration::from_secs(5)).await;
        println!(
            "preview: baseline, /_matrix/client/v1/media/config with the same token, {CLIENTS} concurrent clients: {base:.0} req/s (cached previews at {:.0}% of it)",
            rate * 100.0 / base
        );
    });
}

/// A Synapse media store of `count` local media of `size` bytes each (distinct content) and
/// its SQLite database (the columns of Synapse's `local_media_repository`).
fn synapse_store(dir: &Path, count: usize, size: usize) {
    let db = rusqlite::Connection::open(dir.join("homeserver.db")).unwrap();
    db.execute_batch(
        "CREATE TABLE local_media_repository ( media_id TEXT, media_type TEXT, media_length INTEGER, \
         created_ts BIGINT, upload_name TEXT, user_id TEXT, quarantined_by TEXT, url_cache TEXT, \
         last_access_ts BIGINT, safe_from_quarantine BOOLEAN NOT NULL DEFAULT 0, UNIQUE (media_id) );
         CREATE TABLE remote_media_cache ( media_origin TEXT, media_id TEXT, media_type TEXT, \
         created_ts BIGINT, upload_name TEXT, media_length INTEGER, filesystem_id TEXT, \
         last_access_ts BIGINT, quarantined_by TEXT, UNIQUE (media_origin, media_id) );",
    )
    .unwrap();
    let tx = db.unchecked_transaction().unwrap();
    for i in 0..count {
        let id = format!("BenchMedia{i:08}xxxxxxxx");
        let file = dir
            .join("media_store/local_content")
            .join(&id[0..2])
            .join(&id[2..4]);
        std::fs::create_dir_all(&file).unwrap();
        std::fs::write(file.join(&id[4..]), pseudo_random(size, 50_000 + i as u64)).unwrap();
        tx.execute(
            "INSERT INTO local_media_repository VALUES (?1, 'application/octet-stream', ?2, \
             1600000000000, 'file.bin', '@bench:localhost', NULL, NULL, 1650000000000, 0)",
            rusqlite::params![id, size as i64],
        )
        .unwrap();
    }
    tx.commit().unwrap();
}

/// The machine's own rate of what an import does to each file, from `threads` threads: read
/// it, SHA-256 it, write the copy, fsync it, rename it into place.
fn raw_copy_files(files: &[std::path::PathBuf], into: &Path, threads: usize) -> f64 {
    let next = Arc::new(AtomicU64::new(0));
    let files = Arc::new(files.to_vec());
    let start = Instant::now();
    let workers: Vec<_> = (0..threads)
        .map(|t| {
            let (next, files, into) = (next.clone(), files.clone(), into.to_owned());
            std::thread::spawn(move || loop {
                let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                let Some(src) = files.get(i) else { break };
                let data = std::fs::read(src).unwrap();
                let digest = sha2::Sha256::digest(&data);
                let tmp = into.join(format!("{t}-{i}.part"));
                let mut f = std::fs::File::create(&tmp).unwrap();
                std::io::Write::write_all(&mut f, &data).unwrap();
                f.sync_all().unwrap();
                std::fs::rename(&tmp, into.join(format!("{digest:x}"))).unwrap();
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    files.len() as f64 / start.elapsed().as_secs_f64()
}

/// `import synapse` of a generated media store (the release binary, as an operator runs it),
/// beside the machine doing the same file work itself.
fn bench_import() {
    for (count, size) in [(2000usize, 64 * 1024usize), (64, 4 << 20)] {
        let src = tempdir();
        synapse_store(src.path(), count, size);
        let mb = (count * size) as f64 / 1e6;
        let dir = tempdir();
        let config = format!(
            "[server]\nbind = \"127.0.0.1:1\"\n[database]\npath = \"{d}/db\"\n\
             [[homeservers]]\nname = \"localhost\"\n\
             [[datastores]]\nid = \"files\"\ntype = \"file\"\npath = \"{d}/media\"\nkinds = [\"all\"]\n",
            d = dir.path().display()
        );
        let cfg = dir.path().join("config.toml");
        std::fs::write(&cfg, config).unwrap();
        for parallel in [1usize, 4] {
            let run_dir = tempdir();
            let cfg_run = run_dir.path().join("config.toml");
            std::fs::write(
                &cfg_run,
                std::fs::read_to_string(&cfg).unwrap().replace(
                    &dir.path().display().to_string(),
                    &run_dir.path().display().to_string(),
                ),
            )
            .unwrap();
            let t = Instant::now();
            let out = std::process::Command::new(env!("CARGO_BIN_EXE_media-ledger"))
                .args(["import", "synapse", "--config"])
                .arg(&cfg_run)
                .arg("--database")
                .arg(src.path().join("homeserver.db"))
                .arg("--media-store")
                .arg(src.path().join("media_store"))
                .args(["--parallel", &parallel.to_string()])
                .env("RUST_LOG", "warn")
                .output()
                .unwrap();
            let secs = t.elapsed().as_secs_f64();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            assert_eq!(report["imported"], count as u64, "{report}");
            println!(
                "import: {count} media of {} KiB from a Synapse store (SQLite), --parallel {parallel}: {:.0} media/s, {:.0} MB/s ({secs:.1} s, process start and DB read included)",
                size / 1024,
                count as f64 / secs,
                mb / secs
            );
        }
        let files: Vec<std::path::PathBuf> = (0..count)
            .map(|i| {
                let id = format!("BenchMedia{i:08}xxxxxxxx");
                src.path()
                    .join("media_store/local_content")
                    .join(&id[0..2])
                    .join(&id[2..4])
                    .join(&id[4..])
            })
            .collect();
        for threads in [1usize, 4] {
            let into = tempdir();
            let rate = raw_copy_files(&files, into.path(), threads);
            println!(
                "import: ceiling, the machine reading, hashing, writing, fsyncing and renaming the same {count} files from {threads} thread(s): {rate:.0} files/s, {:.0} MB/s",
                rate * size as f64 / 1e6
            );
        }
    }
}

/// `clients` concurrent loops GETting `urls` (each client walking them from its own offset)
/// for `length`; returns the rate of 2xx answers fully read.
async fn requests_for(
    client: &reqwest::Client,
    urls: Vec<String>,
    clients: usize,
    length: Duration,
) -> f64 {
    let urls = Arc::new(urls);
    let done = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..clients {
        let (client, done, stop, urls) = (client.clone(), done.clone(), stop.clone(), urls.clone());
        tasks.push(tokio::spawn(async move {
            let mut k = c;
            while !stop.load(Ordering::Relaxed) {
                let resp = client.get(&urls[k % urls.len()]).send().await.unwrap();
                k += 7;
                assert!(resp.status().is_success(), "{}", resp.status());
                let b = resp.bytes().await.unwrap();
                assert!(!b.is_empty());
                done.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    tokio::time::sleep(length).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    done.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64()
}

/// Upload then download rates (64 KiB, 32 clients, 5 s each) against `base`, as `bench-user`
/// on the authenticated download endpoint (so per-user download limits apply).
fn authed_http_rates(rt: &tokio::runtime::Runtime, base: &str) -> (f64, f64) {
    const SIZE: usize = 64 * 1024;
    const CLIENTS: usize = 32;
    rt.block_on(async {
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(CLIENTS)
            .build()
            .unwrap();
        let counter = Arc::new(AtomicU64::new(0));
        let uris = Arc::new(parking_lot::Mutex::new(Vec::<String>::new()));
        let mut rates = Vec::new();
        for upload in [true, false] {
            let done = Arc::new(AtomicU64::new(0));
            let stop = Arc::new(AtomicBool::new(false));
            let start = Instant::now();
            let targets: Arc<Vec<String>> = Arc::new(uris.lock().clone());
            let mut tasks = Vec::new();
            for c in 0..CLIENTS {
                let (client, base, done, stop, counter, uris, targets) = (
                    client.clone(),
                    base.to_owned(),
                    done.clone(),
                    stop.clone(),
                    counter.clone(),
                    uris.clone(),
                    targets.clone(),
                );
                tasks.push(tokio::spawn(async move {
                    let mut k = c;
                    while !stop.load(Ordering::Relaxed) {
                        if upload {
                            let body =
                                pseudo_random(SIZE, counter.fetch_add(1, Ordering::Relaxed) + 10);
                            let resp = client
                                .post(format!("{base}/_matrix/media/v3/upload"))
                                .bearer_auth("bench-user")
                                .body(body)
                                .send()
                                .await
                                .unwrap();
                            assert!(resp.status().is_success(), "{}", resp.status());
                            let v: serde_json::Value = resp.json().await.unwrap();
                            let uri = v["content_uri"]
                                .as_str()
                                .unwrap()
                                .trim_start_matches("mxc://")
                                .to_owned();
                            uris.lock().push(uri);
                        } else {
                            let uri = &targets[k % targets.len()];
                            k += 7;
                            let resp = client
                                .get(format!("{base}/_matrix/client/v1/media/download/{uri}"))
                                .bearer_auth("bench-user")
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
            rates.push(done.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64());
        }
        (rates[0], rates[1])
    })
}

/// The hot paths with every abuse control on (a quota rule and an upload window for the user,
/// per-user and per-address buckets on uploads and downloads, the download byte bucket: all
/// with limits far above the load, so every check runs and none refuses) beside the same
/// paths with them off, alternated twice to spread the machine's drift over both.
fn bench_abuse() {
    let controls = r#"
[[uploads.quotas]]
glob = "@bench:*"
max_bytes = 1099511627776
max_files = 100000000
[[uploads.window_limits]]
time_period = "1d"
max_bytes = 1099511627776
[[uploads.window_limits]]
time_period = "1h"
max_bytes = 1099511627776
[rate_limits]
enabled = true
uploads = { user = { per_second = 1000000.0, burst = 1000000 }, address = { per_second = 1000000.0, burst = 1000000 } }
create = { user = { per_second = 1000000.0, burst = 1000000 }, address = { per_second = 1000000.0, burst = 1000000 } }
downloads = { user = { per_second = 1000000.0, burst = 1000000 }, address = { per_second = 1000000.0, burst = 1000000 } }
download_bytes = { capacity_bytes = 1099511627776, drain_bytes_per_second = 1099511627776, overflow_bytes = 0 }
"#;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut off = (0.0, 0.0);
    let mut on = (0.0, 0.0);
    // Round 0 warms the disk and the page cache up (the first uploads of a run are often much
    // faster, BENCHMARKS.md) and is not counted.
    const ROUNDS: usize = 3;
    for round in 0..=ROUNDS {
        for with in [false, true] {
            let dir = tempdir();
            let child = Child::start_with(dir.path(), 1 << 20, if with { controls } else { "" });
            let (up, down) = authed_http_rates(&rt, &child.base);
            println!(
                "abuse: round {round}, controls {}: 64 KiB uploads {up:.0} req/s, authenticated downloads {down:.0} req/s",
                if with { "on " } else { "off" }
            );
            if round > 0 {
                let acc = if with { &mut on } else { &mut off };
                acc.0 += up / ROUNDS as f64;
                acc.1 += down / ROUNDS as f64;
            }
        }
    }
    println!(
        "abuse: with every control on, uploads at {:.0}% and downloads at {:.0}% of the rate without (means of {ROUNDS} alternated rounds after a warm-up: {:.0} vs {:.0} and {:.0} vs {:.0} req/s)",
        on.0 * 100.0 / off.0,
        on.1 * 100.0 / off.1,
        on.0,
        off.0,
        on.1,
        off.1
    );
}

/// Start-up time against the log's length: a log of N events (written raw, projections built
/// by a rebuild), then `Ledger::open` twice — the first verifies the whole chain (no earlier
/// start-up recorded where it got to), the second only from there — beside what reading and
/// chain-checking the whole log costs (`verify_path` without the replay is not separable, so
/// the first open is that figure).
fn bench_startup() {
    for n in [1_000_000u64, 10_000_000] {
        let dir = tempdir();
        let db = dir.path().join("db");
        let build = Instant::now();
        let mut seq = 0u64;
        while seq < n {
            let chunk: Vec<Envelope> = (seq..(seq + 100_000).min(n)).map(replay_envelope).collect();
            seq += chunk.len() as u64;
            raw::append_unprojected(&db, &chunk).unwrap();
        }
        // Build the projections without leaving a verified point behind: the rebuild writes
        // one, so it is removed for the first open below.
        let (ledger, _) = Ledger::open_rebuilt(&db, &mut |_, _| {}).unwrap();
        ledger.shutdown();
        drop(ledger);
        raw::forget_verified(&db).unwrap();
        println!(
            "startup: wrote and projected a {n}-event log in {:.1} s",
            build.elapsed().as_secs_f64()
        );
        let mut times = Vec::new();
        for _ in 0..3 {
            let t = Instant::now();
            let ledger = Ledger::open(&db, &mut |_, _| {}).unwrap();
            times.push(t.elapsed().as_secs_f64());
            ledger.shutdown();
            drop(ledger);
        }
        println!(
            "startup: {n} events: first open (whole chain) {:.2} s, then {:.3} s and {:.3} s (from the verified point)",
            times[0], times[1], times[2]
        );
    }
}
