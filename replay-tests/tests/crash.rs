#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Crash recovery of the real server binary (issue #6): start `media-ledger serve`, drive a
//! mixed concurrent load over loopback HTTP, SIGKILL the process at a random moment, run
//! `media-ledger verify` on the killed ledger, restart, check every acknowledged fact, repeat.
//!
//! The load (8 concurrent clients): uploads of random bytes of 0..300 KiB (a quarter reuse
//! earlier content, so blobs are shared; some are PNG images; some bodies are chunked),
//! downloads of known media (legacy and authenticated routes, some with a `Range`), async
//! `create` + `PUT`, quarantines (repository admin) and purges (`purge/{server}/{id}`, by the
//! admin or the uploader) of acknowledged media, 32×32 thumbnails of the PNG media, remote
//! media: uploads to a second server process (the peer `origin.test`, never killed) fetched
//! over federation through the killed server's authenticated download route, and
//! `purge/remote` of the cached copies (fetched again later), and in most cycles a transfer
//! of every blob between the killed server's two file datastores, started at a random moment
//! before the kill (a restart resumes it; the check waits for it to end).
//!
//! The model keeps, per media id, the outcomes a download may have (`PRESENT` with its exact
//! bytes, `GONE` = 404, `PENDING` = 504 `M_NOT_YET_UPLOADED`). An acknowledged act makes it
//! one outcome: an upload or PUT answered 200 → present (byte-identical), a purge or a
//! quarantine of its bytes answered 200 → 404; a quarantine answered 200 also blocks the
//! bytes (a later upload of them must be refused). An act cut by the kill leaves both
//! outcomes open; the first observation after the restart decides it, and from then on it is
//! the one allowed outcome (stable). An upload cut by the kill has no known id: a media the
//! server lists after the restart must be one of those (else it is a phantom).
//!
//! After each kill: `media-ledger verify` exits 0 (chain intact, projections equal a full
//! replay), on the stopped ledger; sometimes the server is also killed again during its
//! start-up recovery. After each restart, before any load: the blob files of the datastore
//! are exactly the distinct SHA-256 of the live media (`GET .../admin/usage/{server}/uploads`)
//! and of their thumbnails (from each PNG media's history), each in the datastore its records
//! name (cached remote media included: `usage/origin.test/uploads`), no spool file is left, every
//! model media answers its allowed outcome, every thumbnail serves its recorded bytes, and
//! `verify` exits 0 again beside the running server. At the end a SIGTERM must stop the
//! server cleanly (exit 0) and `verify` pass once more.
//!
//! Environment: `CRASH_CYCLES` (default 10), `CRASH_CYCLES_PER_DIR` (default 25: a fresh data
//! directory, model and server after that many cycles, so a long run's time stays linear: each
//! check downloads every media known and every start verifies the whole log), `CRASH_SEED`
//! (replays a run's choices: sizes, ops, kill delays; thread timing still differs),
//! `CRASH_BIN` (a prebuilt server binary),
//! `CRASH_KEEP=1` (keep the data directory), `CRASH_LOG` (the server's `RUST_LOG`, default
//! `info`), `CRASH_CLUSTER=1` (cluster mode, issue #16: the killed server is a node of a
//! cluster on a throwaway PostgreSQL, its datastores shared with a twin node that is never
//! killed; after each restart the twin is checked the same way as the killed node; `verify`
//! also checks the shared log; a cluster runs no start-up sweep, so leftovers of cut requests
//! are not violations there). Long run:
//! `CRASH_CYCLES=100 cargo test -p media-ledger-replay-tests --test crash -- --nocapture`.

mod crash_support;

use crash_support::{Node, Proc, ORIGIN, ORIGIN_USER, SECRET, SERVER, USERS};
use futures_util::StreamExt;
use image::ImageEncoder;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use reqwest::header::CONTENT_TYPE;
use reqwest::StatusCode;
use serde_json::Value;
use sha2::Digest;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A download answers 200 with the media's exact bytes.
const PRESENT: u8 = 1;
/// A download answers 404 `M_NOT_FOUND` (purged, or quarantined).
const GONE: u8 = 2;
/// A download answers 504 `M_NOT_YET_UPLOADED` (a reservation not filled).
const PENDING: u8 = 4;

/// A quarantine of these bytes was acknowledged.
const BLOCKED: u8 = 1;
/// A quarantine of these bytes was cut by a kill (it may have been recorded).
const MAYBE_BLOCKED: u8 = 2;

/// Concurrent clients of the load.
const WORKERS: u64 = 8;
/// Largest random upload.
const MAX_UPLOAD: usize = 300 * 1024;
/// The killed server's two file datastores (both accept everything; uploads go to the one
/// holding fewer bytes), between which transfers move the blobs.
const DATASTORES: [&str; 2] = ["files", "files2"];

type Sha = [u8; 32];

fn sha256(bytes: &[u8]) -> Sha {
    sha2::Sha256::digest(bytes).into()
}

fn hex(sha: &Sha) -> String {
    sha.iter().map(|b| format!("{b:02x}")).collect()
}

/// `len` pseudo-random bytes from `seed` (splitmix64: cheap in a debug build).
fn random_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut s = seed;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = s;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        out.extend_from_slice(&z.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// A PNG of random pixels, 40..120 pixels a side (larger than the 32×32 thumbnail asked).
fn png_bytes(seed: u64) -> Vec<u8> {
    let w = 40 + (seed % 80) as u32;
    let h = 40 + ((seed >> 8) % 80) as u32;
    let pixels = random_bytes(seed, (w * h * 3) as usize);
    let mut out = Vec::new();
    image::codecs::png::PngEncoder::new(&mut out)
        .write_image(&pixels, w, h, image::ExtendedColorType::Rgb8)
        .expect("encoding a PNG");
    out
}

/// Some media content, regenerated from its seed when needed (the model keeps no bytes).
#[derive(Debug, Clone, Copy)]
struct Content {
    seed: u64,
    len: usize,
    png: bool,
    sha: Sha,
}

impl Content {
    fn bytes(&self) -> Vec<u8> {
        if self.png {
            png_bytes(self.seed)
        } else {
            random_bytes(self.seed, self.len)
        }
    }

    fn generate(rng: &mut StdRng) -> Self {
        let seed: u64 = rng.random();
        let png = rng.random_bool(0.15);
        let bytes = if png {
            png_bytes(seed)
        } else if rng.random_ratio(1, 20) {
            random_bytes(seed, rng.random_range(0..16))
        } else {
            random_bytes(seed, rng.random_range(0..=MAX_UPLOAD))
        };
        Self {
            seed,
            len: bytes.len(),
            png,
            sha: sha256(&bytes),
        }
    }

    fn content_type(&self) -> &'static str {
        if self.png {
            "image/png"
        } else {
            "application/octet-stream"
        }
    }
}

/// One media id the model knows.
#[derive(Debug)]
struct Media {
    /// Its origin: [`SERVER`] (uploaded to the killed server) or [`ORIGIN`] (uploaded to the
    /// peer and fetched over federation).
    server: &'static str,
    id: String,
    /// Index in [`USERS`] of its uploader (or reservation owner).
    owner: usize,
    /// Its bytes, once an upload or PUT of them is known to be recorded.
    content: Option<Content>,
    /// The bytes of a PUT in flight or cut by a kill.
    tentative: Option<Content>,
    /// Bit set of the outcomes a download may have.
    allowed: u8,
    /// PUTs or purges of it in flight.
    busy: u32,
    /// Bumped whenever an act that may change it starts or ends.
    epoch: u64,
}

impl Media {
    fn sha(&self) -> Option<Sha> {
        self.content.map(|c| c.sha)
    }
    fn has_sha(&self, sha: &Sha) -> bool {
        self.content.is_some_and(|c| &c.sha == sha) || self.tentative.is_some_and(|c| &c.sha == sha)
    }
}

#[derive(Debug, Default, Clone)]
struct Stats {
    answered: u64,
    uploads: u64,
    puts: u64,
    creates: u64,
    quarantines: u64,
    purges: u64,
    downloads: u64,
    thumbnails: u64,
    refused_quarantined: u64,
    remote_seeded: u64,
    remote_downloads: u64,
    remote_purges: u64,
    remote_removed: u64,
    transfers: u64,
    transfers_refused: u64,
    transfers_finished: u64,
    transfers_resumed: u64,
    cut: u64,
    cut_uploads_recorded: u64,
    unsure_resolved: u64,
    checked: u64,
}

/// What is known of the server's state.
#[derive(Default)]
struct Model {
    media: Vec<Media>,
    by_id: HashMap<String, usize>,
    /// Per SHA-256: [`BLOCKED`] or [`MAYBE_BLOCKED`].
    blocked: HashMap<Sha, u8>,
    /// Quarantines in flight per SHA-256.
    quarantining: HashMap<Sha, u32>,
    /// Contents uploaded so far (reused for deduplication).
    pool: Vec<Content>,
    /// Uploads cut by the last kill (their ids are unknown).
    cut_uploads: Vec<Content>,
    /// Task ids of the acknowledged transfers.
    transfer_tasks: Vec<u64>,
    stats: Stats,
    violations: Vec<String>,
    losses: u64,
}

impl Model {
    fn violation(&mut self, loss: bool, msg: String) {
        if loss {
            self.losses += 1;
        }
        eprintln!("VIOLATION{}: {msg}", if loss { " (loss)" } else { "" });
        if self.violations.len() < 200 {
            self.violations.push(msg);
        }
    }

    fn insert(&mut self, m: Media) -> usize {
        let i = self.media.len();
        self.by_id.insert(format!("{}/{}", m.server, m.id), i);
        self.media.push(m);
        i
    }

    fn quarantining(&self, sha: &Sha) -> bool {
        self.quarantining.get(sha).copied().unwrap_or(0) > 0
    }

    /// Bumps the epoch of every media holding (or being given) `sha`.
    fn bump(&mut self, sha: &Sha) {
        for m in self.media.iter_mut().filter(|m| m.has_sha(sha)) {
            m.epoch += 1;
        }
    }

    /// A request failed at the transport level: expected once the process is killed, a
    /// violation before.
    fn cut(&mut self, killed: &AtomicBool, what: &str, e: &reqwest::Error) -> Cut {
        self.stats.cut += 1;
        if !killed.load(Ordering::SeqCst) {
            self.violation(
                false,
                format!("{what}: transport error while the server runs: {e}"),
            );
        }
        Cut
    }
}

/// The server is gone (killed): the worker stops.
struct Cut;

/// One server run's clients.
struct Ctx {
    base: String,
    /// The peer server's base URL (never killed).
    origin: String,
    client: reqwest::Client,
    model: Arc<Mutex<Model>>,
    killed: AtomicBool,
}

impl Ctx {
    fn new(base: String, origin: String, model: Arc<Mutex<Model>>) -> Self {
        let client = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap();
        Self {
            base,
            origin,
            client,
            model,
            killed: AtomicBool::new(false),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    fn model(&self) -> std::sync::MutexGuard<'_, Model> {
        self.model.lock().unwrap()
    }
}

/// A whole answer.
struct Answer {
    status: StatusCode,
    body: Vec<u8>,
    request_id: String,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
    fn errcode(&self) -> String {
        self.json()["errcode"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }
    fn describe(&self) -> String {
        let text = String::from_utf8_lossy(&self.body[..self.body.len().min(300)]).into_owned();
        format!(
            "{} {text:?} (request id {})",
            self.status.as_u16(),
            self.request_id
        )
    }
}

async fn send(req: reqwest::RequestBuilder) -> Result<Answer, reqwest::Error> {
    let resp = req.send().await?;
    let status = resp.status();
    let request_id = resp
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let body = resp.bytes().await?.to_vec();
    Ok(Answer {
        status,
        body,
        request_id,
    })
}

/// What a download showed.
enum Seen {
    /// 200 (or 206) with the expected bytes.
    Present,
    /// 404 `M_NOT_FOUND`.
    Gone,
    /// 504 `M_NOT_YET_UPLOADED`.
    Pending,
    /// Bytes other than the expected ones.
    Wrong(String),
    /// Any other answer.
    Other(String),
}

impl Seen {
    fn bit(&self) -> u8 {
        match self {
            Seen::Present => PRESENT,
            Seen::Gone => GONE,
            Seen::Pending => PENDING,
            _ => 0,
        }
    }
}

fn outcomes(bits: u8) -> String {
    let mut v = Vec::new();
    for (b, n) in [(PRESENT, "present"), (GONE, "404"), (PENDING, "pending")] {
        if bits & b != 0 {
            v.push(n);
        }
    }
    v.join("|")
}

fn classify(a: &Answer, content: Option<Content>, range: Option<(usize, usize)>) -> Seen {
    match (a.status, content, range) {
        (StatusCode::OK, Some(c), None) => {
            if a.body.len() == c.len && sha256(&a.body) == c.sha {
                Seen::Present
            } else {
                Seen::Wrong(format!(
                    "{} bytes served, {} expected, or their SHA-256 differs (request id {})",
                    a.body.len(),
                    c.len,
                    a.request_id
                ))
            }
        }
        (StatusCode::PARTIAL_CONTENT, Some(c), Some((from, to))) => {
            if a.body[..] == c.bytes()[from..=to] {
                Seen::Present
            } else {
                Seen::Wrong(format!(
                    "range {from}-{to} differs (request id {})",
                    a.request_id
                ))
            }
        }
        (StatusCode::OK | StatusCode::PARTIAL_CONTENT, None, _) => Seen::Wrong(format!(
            "bytes served for a media that has none (request id {})",
            a.request_id
        )),
        (StatusCode::NOT_FOUND, _, _) if a.errcode() == "M_NOT_FOUND" => Seen::Gone,
        (StatusCode::GATEWAY_TIMEOUT, _, _) if a.errcode() == "M_NOT_YET_UPLOADED" => Seen::Pending,
        _ => Seen::Other(a.describe()),
    }
}

/// Content for an upload: a quarter of the time earlier content (deduplication), else new.
fn content_for_upload(ctx: &Ctx, rng: &mut StdRng) -> Content {
    {
        let m = ctx.model();
        if !m.pool.is_empty() && rng.random_bool(0.25) {
            return m.pool[rng.random_range(0..m.pool.len())];
        }
    }
    let c = Content::generate(rng);
    ctx.model().pool.push(c);
    c
}

fn body_of(bytes: Vec<u8>, rng: &mut StdRng) -> reqwest::Body {
    if bytes.is_empty() || rng.random_bool(0.7) {
        return bytes.into();
    }
    // Chunked: no Content-Length, the server counts while streaming.
    let mut chunks = Vec::new();
    let mut rest = &bytes[..];
    while !rest.is_empty() {
        let n = rng.random_range(1..=65536).min(rest.len());
        chunks.push(Ok::<Vec<u8>, std::io::Error>(rest[..n].to_vec()));
        rest = &rest[n..];
    }
    reqwest::Body::wrap_stream(futures_util::stream::iter(chunks))
}

async fn upload(ctx: &Ctx, rng: &mut StdRng) -> Result<(), Cut> {
    let content = content_for_upload(ctx, rng);
    let sent_blocked = ctx.model().blocked.get(&content.sha) == Some(&BLOCKED);
    let user = rng.random_range(0..USERS.len());
    let path = if rng.random_bool(0.8) {
        "/_matrix/media/v3/upload"
    } else {
        "/_matrix/media/r0/upload"
    };
    let mut req = ctx
        .client
        .post(ctx.url(path))
        .bearer_auth(USERS[user].0)
        .header(CONTENT_TYPE, content.content_type());
    if rng.random_bool(0.3) {
        req = req.query(&[("filename", "crash test.bin")]);
    }
    let res = send(req.body(body_of(content.bytes(), rng))).await;
    let mut m = ctx.model();
    let a = match res {
        Ok(a) => a,
        Err(e) => {
            m.cut_uploads.push(content);
            return Err(m.cut(&ctx.killed, "upload", &e));
        }
    };
    m.stats.answered += 1;
    let blocked = m.blocked.get(&content.sha).copied();
    match a.status {
        StatusCode::OK => {
            let uri = a.json()["content_uri"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            let Some(id) = uri.strip_prefix(&format!("mxc://{SERVER}/")) else {
                m.violation(false, format!("upload answered {}", a.describe()));
                return Ok(());
            };
            if sent_blocked {
                m.violation(
                    true,
                    format!(
                        "upload of quarantined bytes {} accepted as {uri} (request id {})",
                        hex(&content.sha),
                        a.request_id
                    ),
                );
            }
            // A quarantine of these bytes acknowledged while the upload was in flight: it
            // was recorded before it (the writer refuses blocked bytes), so it is quarantined.
            let allowed = if blocked == Some(BLOCKED) {
                GONE
            } else {
                PRESENT
            };
            m.insert(Media {
                server: SERVER,
                id: id.to_owned(),
                owner: user,
                content: Some(content),
                tentative: None,
                allowed,
                busy: 0,
                epoch: 0,
            });
            m.stats.uploads += 1;
        }
        StatusCode::FORBIDDEN
            if a.errcode() == "M_FORBIDDEN"
                && (blocked.is_some() || m.quarantining(&content.sha)) =>
        {
            m.stats.refused_quarantined += 1;
        }
        _ => m.violation(false, format!("upload answered {}", a.describe())),
    }
    Ok(())
}

/// Downloads a media the model knows (only remote ones with `remote_only`): a remote one
/// through the authenticated route (only that one fetches over federation).
async fn download(ctx: &Ctx, rng: &mut StdRng, remote_only: bool) -> Result<(), Cut> {
    let (i, id, content, allowed, epoch, strict, owner, server) = {
        let m = ctx.model();
        let candidates: Vec<usize> = (0..m.media.len())
            .filter(|&i| !remote_only || m.media[i].server == ORIGIN)
            .collect();
        if candidates.is_empty() {
            return Ok(());
        }
        let i = candidates[rng.random_range(0..candidates.len())];
        let md = &m.media[i];
        let strict = md.busy == 0
            && md.allowed.count_ones() == 1
            && md.sha().is_none_or(|s| !m.quarantining(&s));
        (
            i,
            md.id.clone(),
            md.content.or(md.tentative),
            md.allowed,
            md.epoch,
            strict,
            md.owner,
            md.server,
        )
    };
    let range = content
        .filter(|c| c.len > 1 && allowed == PRESENT && rng.random_bool(0.2))
        .map(|c| {
            let from = rng.random_range(0..c.len);
            (from, rng.random_range(from..c.len))
        });
    let mut req = if server == SERVER && rng.random_bool(0.5) {
        ctx.client
            .get(ctx.url(&format!("/_matrix/media/v3/download/{SERVER}/{id}")))
            .query(&[("timeout_ms", "0")])
    } else {
        ctx.client
            .get(ctx.url(&format!("/_matrix/client/v1/media/download/{server}/{id}")))
            .bearer_auth(USERS[owner ^ usize::from(rng.random_bool(0.5))].0)
            .query(&[("timeout_ms", "0")])
    };
    if let Some((from, to)) = range {
        req = req.header(reqwest::header::RANGE, format!("bytes={from}-{to}"));
    }
    let res = send(req).await;
    let mut m = ctx.model();
    let a = match res {
        Ok(a) => a,
        Err(e) => return Err(m.cut(&ctx.killed, "download", &e)),
    };
    m.stats.answered += 1;
    m.stats.downloads += 1;
    let strict = strict && m.media[i].epoch == epoch;
    let seen = classify(&a, content, range);
    if server == ORIGIN && matches!(seen, Seen::Present) {
        m.stats.remote_downloads += 1;
    }
    match seen {
        Seen::Wrong(why) => m.violation(true, format!("download of {id}: {why}")),
        Seen::Other(what) => m.violation(
            strict && allowed == PRESENT,
            format!("download of {id} answered {what}"),
        ),
        s if strict && s.bit() != allowed => m.violation(
            true,
            format!(
                "download of {id}: {} where the acknowledged state is {} (request id {})",
                outcomes(s.bit()),
                outcomes(allowed),
                a.request_id
            ),
        ),
        _ => {}
    }
    Ok(())
}

async fn create(ctx: &Ctx, rng: &mut StdRng) -> Result<(), Cut> {
    let user = rng.random_range(0..USERS.len());
    let res = send(
        ctx.client
            .post(ctx.url("/_matrix/media/v1/create"))
            .bearer_auth(USERS[user].0),
    )
    .await;
    let mut m = ctx.model();
    let a = match res {
        Ok(a) => a,
        Err(e) => return Err(m.cut(&ctx.killed, "create", &e)),
    };
    m.stats.answered += 1;
    let uri = a.json()["content_uri"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    match (a.status, uri.strip_prefix(&format!("mxc://{SERVER}/"))) {
        (StatusCode::OK, Some(id)) => {
            m.insert(Media {
                server: SERVER,
                id: id.to_owned(),
                owner: user,
                content: None,
                tentative: None,
                allowed: PENDING,
                busy: 0,
                epoch: 0,
            });
            m.stats.creates += 1;
        }
        _ => m.violation(false, format!("create answered {}", a.describe())),
    }
    Ok(())
}

async fn put(ctx: &Ctx, rng: &mut StdRng) -> Result<(), Cut> {
    let content = content_for_upload(ctx, rng);
    let (i, id, owner, sent_blocked) = {
        let mut m = ctx.model();
        let pending: Vec<usize> = (0..m.media.len())
            .filter(|&i| m.media[i].allowed == PENDING && m.media[i].busy == 0)
            .collect();
        if pending.is_empty() {
            return Ok(());
        }
        let i = pending[rng.random_range(0..pending.len())];
        let sent_blocked = m.blocked.get(&content.sha) == Some(&BLOCKED);
        let md = &mut m.media[i];
        md.busy += 1;
        md.epoch += 1;
        md.tentative = Some(content);
        (i, md.id.clone(), md.owner, sent_blocked)
    };
    let res = send(
        ctx.client
            .put(ctx.url(&format!("/_matrix/media/v3/upload/{SERVER}/{id}")))
            .bearer_auth(USERS[owner].0)
            .header(CONTENT_TYPE, content.content_type())
            .body(body_of(content.bytes(), rng)),
    )
    .await;
    let mut m = ctx.model();
    let blocked = m.blocked.get(&content.sha).copied();
    let quarantining = m.quarantining(&content.sha);
    m.media[i].busy -= 1;
    m.media[i].epoch += 1;
    let a = match res {
        Ok(a) => a,
        Err(e) => {
            // Recorded or not; if recorded, maybe quarantined by a quarantine in flight.
            let gone = if blocked.is_some() || quarantining {
                GONE
            } else {
                0
            };
            m.media[i].allowed = PENDING | PRESENT | gone;
            return Err(m.cut(&ctx.killed, "PUT", &e));
        }
    };
    m.stats.answered += 1;
    match a.status {
        StatusCode::OK => {
            if sent_blocked {
                m.violation(
                    true,
                    format!(
                        "PUT of quarantined bytes accepted for {id} (request id {})",
                        a.request_id
                    ),
                );
            }
            let md = &mut m.media[i];
            md.content = md.tentative.take();
            md.allowed = if blocked == Some(BLOCKED) {
                GONE
            } else {
                PRESENT
            };
            m.stats.puts += 1;
        }
        StatusCode::FORBIDDEN
            if a.errcode() == "M_FORBIDDEN" && (blocked.is_some() || quarantining) =>
        {
            m.media[i].tentative = None;
            m.stats.refused_quarantined += 1;
        }
        _ => {
            m.media[i].tentative = None;
            m.violation(false, format!("PUT of {id} answered {}", a.describe()));
        }
    }
    Ok(())
}

async fn quarantine(ctx: &Ctx, rng: &mut StdRng) -> Result<(), Cut> {
    let (i, id, sha, strict, epoch) = {
        let mut m = ctx.model();
        let live: Vec<usize> = (0..m.media.len())
            .filter(|&i| {
                let md = &m.media[i];
                md.server == SERVER && md.content.is_some() && md.allowed & PRESENT != 0
            })
            .collect();
        if live.is_empty() {
            return Ok(());
        }
        let i = live[rng.random_range(0..live.len())];
        let md = &m.media[i];
        let (id, sha) = (md.id.clone(), md.sha().unwrap());
        let strict = md.allowed == PRESENT
            && md.busy == 0
            && !m.quarantining(&sha)
            && !m.blocked.contains_key(&sha);
        *m.quarantining.entry(sha).or_default() += 1;
        m.bump(&sha);
        (i, id, sha, strict, m.media[i].epoch)
    };
    let mut req = ctx
        .client
        .post(ctx.url(&format!(
            "/_matrix/media/unstable/admin/quarantine/{SERVER}/{id}"
        )))
        .bearer_auth(SECRET);
    if rng.random_bool(0.5) {
        req = req.query(&[("reason", "crash test")]);
    }
    let res = send(req).await;
    let mut m = ctx.model();
    // A purge of it, or another quarantine of its bytes, started meanwhile: either may come
    // first.
    let strict = strict && m.media[i].epoch == epoch;
    *m.quarantining.get_mut(&sha).unwrap() -= 1;
    m.bump(&sha);
    let a = match res {
        Ok(a) => a,
        Err(e) => {
            if m.blocked.get(&sha) != Some(&BLOCKED) {
                m.blocked.insert(sha, MAYBE_BLOCKED);
            }
            for md in m.media.iter_mut().filter(|md| md.has_sha(&sha)) {
                if md.allowed & PRESENT != 0 {
                    md.allowed |= GONE;
                }
            }
            return Err(m.cut(&ctx.killed, "quarantine", &e));
        }
    };
    m.stats.answered += 1;
    let n = a.json()["num_quarantined"].as_u64();
    match (a.status, n) {
        (StatusCode::OK, Some(n)) if n > 0 || !strict => {
            if n > 0 {
                m.blocked.insert(sha, BLOCKED);
                // Every media with these bytes, on every origin, is quarantined with it.
                for md in m.media.iter_mut().filter(|md| md.sha() == Some(sha)) {
                    if md.allowed & PRESENT != 0 {
                        md.allowed = (md.allowed & !PRESENT) | GONE;
                    }
                }
                m.stats.quarantines += 1;
            } else if m.blocked.get(&sha) != Some(&BLOCKED) {
                m.blocked.insert(sha, MAYBE_BLOCKED);
            }
        }
        (StatusCode::NOT_FOUND, _) if !strict => {}
        _ => m.violation(
            strict,
            format!("quarantine of live media {id} answered {}", a.describe()),
        ),
    }
    Ok(())
}

async fn purge(ctx: &Ctx, rng: &mut StdRng) -> Result<(), Cut> {
    let (i, id, strict, token) = {
        let mut m = ctx.model();
        let settled =
            |md: &Media| md.server == SERVER && md.content.is_some() && md.allowed & PENDING == 0;
        let candidates: Vec<usize> = if rng.random_bool(0.9) {
            (0..m.media.len())
                .filter(|&i| {
                    let md = &m.media[i];
                    settled(md) && md.allowed == PRESENT && md.busy == 0
                })
                .collect()
        } else {
            (0..m.media.len())
                .filter(|&i| settled(&m.media[i]))
                .collect()
        };
        if candidates.is_empty() {
            return Ok(());
        }
        let i = candidates[rng.random_range(0..candidates.len())];
        let md = &mut m.media[i];
        let strict = md.allowed == PRESENT && md.busy == 0;
        md.busy += 1;
        md.epoch += 1;
        let token = if rng.random_bool(0.5) {
            SECRET
        } else {
            USERS[md.owner].0
        };
        (i, md.id.clone(), strict, token)
    };
    let res = send(
        ctx.client
            .post(ctx.url(&format!(
                "/_matrix/media/unstable/admin/purge/{SERVER}/{id}"
            )))
            .bearer_auth(token),
    )
    .await;
    let mut m = ctx.model();
    m.media[i].busy -= 1;
    m.media[i].epoch += 1;
    let a = match res {
        Ok(a) => a,
        Err(e) => {
            m.media[i].allowed |= GONE;
            return Err(m.cut(&ctx.killed, "purge", &e));
        }
    };
    m.stats.answered += 1;
    match a.status {
        // An uploader's purge the writer skipped (quarantined after the route's check):
        // nothing changed.
        StatusCode::OK
            if !strict
                && token != SECRET
                && a.json()["affected"]
                    .as_array()
                    .is_some_and(|v| v.is_empty()) => {}
        StatusCode::OK if a.json()["purged"] == true => {
            m.media[i].allowed = GONE;
            m.stats.purges += 1;
        }
        StatusCode::NOT_FOUND if !strict && a.errcode() == "M_NOT_FOUND" => {}
        // Quarantined bytes are evidence: their uploader may not purge them (refused, or
        // skipped by the writer when the quarantine came after the check); nothing changed.
        StatusCode::FORBIDDEN if !strict && token != SECRET && a.errcode() == "M_FORBIDDEN" => {}
        // The server's record says quarantined (the only reason it refuses the uploader): the
        // model does not always know a quarantine reached the media (one answered across a
        // kill, or of the same bytes through another id). Refused to its uploader, the media
        // is not served any more; the checks after each restart (verify, blobs) still hold.
        StatusCode::FORBIDDEN
            if token != SECRET
                && a.errcode() == "M_FORBIDDEN"
                && a.json()["error"]
                    .as_str()
                    .is_some_and(|e| e.contains("quarantined")) =>
        {
            m.media[i].allowed = GONE;
        }
        _ => m.violation(strict, format!("purge of {id} answered {}", a.describe())),
    }
    Ok(())
}

async fn thumbnail(ctx: &Ctx, rng: &mut StdRng) -> Result<(), Cut> {
    let (i, id, epoch, strict) = {
        let m = ctx.model();
        let pngs: Vec<usize> = (0..m.media.len())
            .filter(|&i| {
                let md = &m.media[i];
                md.server == SERVER && md.content.is_some_and(|c| c.png) && md.allowed == PRESENT
            })
            .collect();
        if pngs.is_empty() {
            return Ok(());
        }
        let i = pngs[rng.random_range(0..pngs.len())];
        let md = &m.media[i];
        let strict = md.busy == 0 && !m.quarantining(&md.sha().unwrap());
        (i, md.id.clone(), md.epoch, strict)
    };
    let res = send(
        ctx.client
            .get(ctx.url(&format!(
                "/_matrix/client/v1/media/thumbnail/{SERVER}/{id}?width=32&height=32&method=crop"
            )))
            .bearer_auth(USERS[rng.random_range(0..USERS.len())].0),
    )
    .await;
    let mut m = ctx.model();
    let a = match res {
        Ok(a) => a,
        Err(e) => return Err(m.cut(&ctx.killed, "thumbnail", &e)),
    };
    m.stats.answered += 1;
    let strict = strict && m.media[i].epoch == epoch;
    match a.status {
        StatusCode::OK if a.body.starts_with(b"\x89PNG") => m.stats.thumbnails += 1,
        StatusCode::NOT_FOUND if !strict => {}
        _ => m.violation(
            strict && a.status == StatusCode::NOT_FOUND,
            format!("thumbnail of {id} answered {}", a.describe()),
        ),
    }
    Ok(())
}

/// Uploads new bytes to the peer (never killed: any failure is a violation). The killed
/// server fetches them when a client asks for them; they are never uploaded locally, so no
/// local quarantine or purge touches them.
async fn remote_seed(ctx: &Ctx, rng: &mut StdRng) -> Result<(), Cut> {
    // At least 1 KiB of random bytes: never the bytes of a local upload (tiny contents may
    // coincide, and a quarantine of them would rightly refuse the fetch).
    let content = loop {
        let c = Content::generate(rng);
        if c.len >= 1024 {
            break c;
        }
    };
    let res = send(
        ctx.client
            .post(format!("{}/_matrix/media/v3/upload", ctx.origin))
            .bearer_auth(ORIGIN_USER.0)
            .header(CONTENT_TYPE, content.content_type())
            .body(content.bytes()),
    )
    .await;
    let mut m = ctx.model();
    let a = match res {
        Ok(a) => a,
        Err(e) => {
            m.violation(false, format!("upload to the peer: {e}"));
            return Ok(());
        }
    };
    let uri = a.json()["content_uri"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    match (a.status, uri.strip_prefix(&format!("mxc://{ORIGIN}/"))) {
        (StatusCode::OK, Some(id)) => {
            m.insert(Media {
                server: ORIGIN,
                id: id.to_owned(),
                owner: 0,
                content: Some(content),
                tentative: None,
                allowed: PRESENT,
                busy: 0,
                epoch: 0,
            });
            m.stats.remote_seeded += 1;
        }
        _ => m.violation(
            false,
            format!("upload to the peer answered {}", a.describe()),
        ),
    }
    Ok(())
}

/// `POST datastores/{from}/transfer_to/{to}` (repository admin): moves every blob of `from`
/// in the background; refused (400 `M_INVALID_PARAM`) while a transfer touching either still
/// runs.
async fn transfer(ctx: &Ctx, from: &str, to: &str) {
    let res = send(
        ctx.client
            .post(ctx.url(&format!(
                "/_matrix/media/unstable/admin/datastores/{from}/transfer_to/{to}"
            )))
            .bearer_auth(SECRET),
    )
    .await;
    let mut m = ctx.model();
    let a = match res {
        Ok(a) => a,
        Err(e) => {
            m.cut(&ctx.killed, "transfer", &e);
            return;
        }
    };
    m.stats.answered += 1;
    match a.status {
        StatusCode::OK if a.json()["task_id"].is_u64() => {
            m.stats.transfers += 1;
            let id = a.json()["task_id"].as_u64().unwrap_or_default();
            m.transfer_tasks.push(id);
        }
        StatusCode::BAD_REQUEST if a.errcode() == "M_INVALID_PARAM" => {
            m.stats.transfers_refused += 1
        }
        _ => m.violation(false, format!("transfer answered {}", a.describe())),
    }
}

/// `purge/remote?before_ts=now` (repository admin): drops the cached copies of the peer's
/// media, which later downloads fetch again (so the model's outcome stays present).
async fn purge_remote(ctx: &Ctx) -> Result<(), Cut> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis()
        .to_string();
    let res = send(
        ctx.client
            .post(ctx.url("/_matrix/media/unstable/admin/purge/remote"))
            .query(&[("before_ts", now.as_str())])
            .bearer_auth(SECRET),
    )
    .await;
    let mut m = ctx.model();
    let a = match res {
        Ok(a) => a,
        Err(e) => return Err(m.cut(&ctx.killed, "purge/remote", &e)),
    };
    m.stats.answered += 1;
    match (a.status, a.json()["total_removed"].as_u64()) {
        (StatusCode::OK, Some(n)) => {
            m.stats.remote_purges += 1;
            m.stats.remote_removed += n;
        }
        _ => m.violation(false, format!("purge/remote answered {}", a.describe())),
    }
    Ok(())
}

async fn worker(ctx: Arc<Ctx>, mut rng: StdRng) {
    while !ctx.killed.load(Ordering::SeqCst) {
        let r = match rng.random_range(0..100) {
            0..30 => upload(&ctx, &mut rng).await,
            30..56 => download(&ctx, &mut rng, false).await,
            56..61 => create(&ctx, &mut rng).await,
            61..68 => put(&ctx, &mut rng).await,
            68..72 => quarantine(&ctx, &mut rng).await,
            72..79 => purge(&ctx, &mut rng).await,
            79..87 => thumbnail(&ctx, &mut rng).await,
            87..91 => remote_seed(&ctx, &mut rng).await,
            91..99 => download(&ctx, &mut rng, true).await,
            _ => purge_remote(&ctx).await,
        };
        if r.is_err() {
            return;
        }
    }
}

/// One entry of `GET .../admin/usage/{server}/uploads`.
struct Listed {
    sha: String,
    quarantined: bool,
    uploader: String,
    datastore: String,
}

/// The media of `server` the killed server holds records of, by media id.
async fn list_uploads(ctx: &Ctx, server: &str) -> BTreeMap<String, Listed> {
    match admin_get(ctx, &format!("usage/{server}/uploads")).await {
        Ok(Value::Object(map)) => map
            .into_iter()
            .map(|(mxc, v)| {
                let id = mxc
                    .strip_prefix(&format!("mxc://{server}/"))
                    .unwrap_or(&mxc)
                    .to_owned();
                let listed = Listed {
                    sha: v["sha256_hash"].as_str().unwrap_or_default().to_owned(),
                    quarantined: v["quarantined"] == true,
                    uploader: v["uploaded_by"].as_str().unwrap_or_default().to_owned(),
                    datastore: v["datastore_id"].as_str().unwrap_or_default().to_owned(),
                };
                (id, listed)
            })
            .collect(),
        other => {
            ctx.model()
                .violation(false, format!("usage listing of {server}: {other:?}"));
            BTreeMap::new()
        }
    }
}

/// Waits until no transfer task is unfinished (a restart resumes them in the background; no
/// load runs meanwhile), then checks that none gave up on a blob. Returns how many tasks
/// the ledger holds.
async fn settle_transfers(ctx: &Ctx) -> u64 {
    let started = Instant::now();
    let mut first = true;
    loop {
        let unfinished = admin_get(ctx, "tasks/unfinished").await;
        if first && matches!(&unfinished, Ok(Value::Array(a)) if !a.is_empty()) {
            ctx.model().stats.transfers_resumed += 1;
        }
        first = false;
        match unfinished {
            Ok(Value::Array(a)) if a.is_empty() => break,
            Ok(Value::Array(_)) if started.elapsed() < Duration::from_secs(120) => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            other => {
                ctx.model().violation(
                    false,
                    format!("transfers still unfinished after 120 s: {other:?}"),
                );
                return 0;
            }
        }
    }
    match admin_get(ctx, "tasks/all").await {
        Ok(Value::Array(all)) => {
            let mut m = ctx.model();
            for t in &all {
                if t["error_message"].as_str().is_some_and(|e| !e.is_empty()) {
                    m.violation(false, format!("a transfer gave up on blobs: {t}"));
                }
            }
            // Every acknowledged transfer survived the kills and has finished.
            for id in m.transfer_tasks.clone() {
                let found = all.iter().find(|t| t["task_id"].as_u64() == Some(id));
                if !found.is_some_and(|t| t["is_finished"] == true) {
                    m.violation(
                        true,
                        format!("acknowledged transfer task {id} is {found:?} after the restart"),
                    );
                }
            }
            all.len() as u64
        }
        other => {
            ctx.model()
                .violation(false, format!("tasks/all answered {other:?}"));
            0
        }
    }
}

async fn admin_get(ctx: &Ctx, path: &str) -> Result<Value, String> {
    let a = send(
        ctx.client
            .get(ctx.url(&format!("/_matrix/media/unstable/admin/{path}")))
            .bearer_auth(SECRET),
    )
    .await
    .map_err(|e| format!("GET {path}: {e}"))?;
    if a.status != StatusCode::OK {
        return Err(format!("GET {path} answered {}", a.describe()));
    }
    serde_json::from_slice(&a.body).map_err(|e| format!("GET {path}: {e}"))
}

/// Figures of one post-restart check.
struct Checked {
    media: usize,
    listed: usize,
    blobs: usize,
    thumbnails: usize,
}

/// Everything checked after a restart, before the load resumes.
async fn check_after_restart(ctx: &Ctx, node: &Node) -> Checked {
    // Resumed transfers first; then the disk holds still (the sweep ran before the server
    // answered, and no load runs during the check).
    let tasks = settle_transfers(ctx).await;
    let mut files: Vec<(&str, String, std::path::PathBuf)> = Vec::new();
    let mut spool: Vec<String> = Vec::new();
    for ds in &node.datastores {
        let dir = node.media_dir(ds);
        for (name, path) in crash_support::blob_files(&dir) {
            files.push((ds, name, path));
        }
        for e in crash_support::spool_entries(&dir) {
            spool.push(format!("{ds}/{e}"));
        }
    }

    let listing = list_uploads(ctx, SERVER).await;
    let remote_listing = list_uploads(ctx, ORIGIN).await;

    // Media the server lists but the model does not know: uploads cut by the kill.
    let items: Vec<(usize, &'static str, String, Option<Content>, u8)> = {
        let mut guard = ctx.model();
        let m = &mut *guard;
        m.stats.transfers_finished = tasks;
        for (id, l) in &remote_listing {
            if !m.by_id.contains_key(&format!("{ORIGIN}/{id}")) {
                m.violation(
                    false,
                    format!(
                        "listed remote media {ORIGIN}/{id} ({}) was never uploaded to the peer",
                        l.sha
                    ),
                );
            }
        }
        let cut = std::mem::take(&mut m.cut_uploads);
        for (id, l) in &listing {
            if m.by_id.contains_key(&format!("{SERVER}/{id}")) {
                continue;
            }
            match cut.iter().find(|c| hex(&c.sha) == l.sha) {
                Some(c) => {
                    let owner = USERS
                        .iter()
                        .position(|(_, u)| *u == l.uploader)
                        .unwrap_or(0);
                    m.insert(Media {
                        server: SERVER,
                        id: id.clone(),
                        owner,
                        content: Some(*c),
                        tentative: None,
                        allowed: if l.quarantined { GONE } else { PRESENT },
                        busy: 0,
                        epoch: 0,
                    });
                    m.stats.cut_uploads_recorded += 1;
                }
                None => m.violation(
                    false,
                    format!(
                        "listed media {id} ({}) is no upload the load sent (phantom)",
                        l.sha
                    ),
                ),
            }
        }
        m.media
            .iter()
            .enumerate()
            .map(|(i, md)| {
                (
                    i,
                    md.server,
                    md.id.clone(),
                    md.content.or(md.tentative),
                    md.allowed,
                )
            })
            .collect()
    };

    // Every media the model knows answers one of its allowed outcomes; that one it keeps.
    // (A remote one through the authenticated route: fetched again when not cached.)
    let seen: Vec<_> = futures_util::stream::iter(items)
        .map(|(i, server, id, content, allowed)| async move {
            let req = if server == SERVER {
                ctx.client
                    .get(ctx.url(&format!("/_matrix/media/v3/download/{SERVER}/{id}")))
            } else {
                ctx.client
                    .get(ctx.url(&format!("/_matrix/client/v1/media/download/{server}/{id}")))
                    .bearer_auth(USERS[0].0)
            };
            let res = send(req.query(&[("timeout_ms", "0")])).await;
            (i, server, id, content, allowed, res)
        })
        .buffer_unordered(8)
        .collect()
        .await;
    let mut pngs: Vec<String> = Vec::new();
    {
        let mut m = ctx.model();
        for (i, server, id, content, allowed, res) in seen {
            m.stats.checked += 1;
            let a = match res {
                Ok(a) => a,
                Err(e) => {
                    m.violation(false, format!("check download of {id}: {e}"));
                    continue;
                }
            };
            let seen = classify(&a, content, None);
            let bit = seen.bit();
            match seen {
                Seen::Wrong(why) => m.violation(true, format!("after restart, {id}: {why}")),
                Seen::Other(what) => m.violation(
                    allowed == PRESENT,
                    format!("after restart, {id} answered {what}"),
                ),
                _ if bit & allowed == 0 => m.violation(
                    true,
                    format!(
                        "after restart, {id} is {} where {} was acknowledged (request id {})",
                        outcomes(bit),
                        outcomes(allowed),
                        a.request_id
                    ),
                ),
                _ => {
                    if allowed.count_ones() > 1 {
                        m.stats.unsure_resolved += 1;
                    }
                    let md = &mut m.media[i];
                    md.allowed = bit;
                    if bit == PRESENT {
                        md.content = content;
                    }
                    md.tentative = None;
                }
            }
            // The listing agrees with what downloads show (a remote media may be listed or
            // not: cached, or purged from the cache).
            let listed = if server == SERVER {
                listing.get(&id)
            } else {
                remote_listing.get(&id)
            };
            let md = &m.media[i];
            let matches = |l: &Listed| !l.quarantined && md.sha().is_some_and(|s| hex(&s) == l.sha);
            let agrees = match md.allowed {
                PRESENT if server == ORIGIN => listed.is_none_or(matches),
                PRESENT => listed.is_some_and(matches),
                GONE => listed.is_none_or(|l| l.quarantined),
                _ => listed.is_none(),
            };
            let png = md.content.is_some_and(|c| c.png);
            if !agrees {
                let msg = format!(
                    "after restart, {id} is {} but the usage listing says {:?}",
                    outcomes(md.allowed),
                    listed.map(|l| (&l.sha, l.quarantined))
                );
                m.violation(false, msg);
            }
            if png && server == SERVER && listed.is_some() {
                pngs.push(id);
            }
        }
    }

    // Where each live blob is, by the records (media of either origin): one datastore per
    // SHA-256, whichever media record says it.
    let mut placed: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for l in listing.values().chain(remote_listing.values()) {
        placed
            .entry(l.sha.as_str())
            .or_default()
            .insert(l.datastore.as_str());
    }
    let mut located: BTreeMap<&str, &str> = BTreeMap::new();
    for (sha, places) in &placed {
        if places.len() > 1 {
            ctx.model().violation(
                false,
                format!("the media records of blob {sha} name several datastores: {places:?}"),
            );
        }
        if let Some(first) = places.first() {
            located.insert(sha, first);
        }
    }
    // Thumbnails of live media, from their history.
    let mut expected: BTreeSet<String> = located.keys().map(|s| s.to_string()).collect();
    let mut thumbs = 0;
    for id in pngs {
        let history = match admin_get(ctx, &format!("media/{SERVER}/{id}/history")).await {
            Ok(h) => h,
            Err(e) => {
                ctx.model().violation(false, e);
                continue;
            }
        };
        let events = history["events"].as_array().cloned().unwrap_or_default();
        for ev in events.iter().filter(|e| {
            e["type"] == "thumbnail.generated.v1" && e["details"]["media"]["media_id"] == id
        }) {
            let d = &ev["details"];
            let sha = d["sha256"].as_str().unwrap_or_default().to_owned();
            expected.insert(sha.clone());
            thumbs += 1;
            if listing.get(&id).is_some_and(|l| l.quarantined) {
                continue;
            }
            let method = d["method"]
                .as_str()
                .unwrap_or_default()
                .to_ascii_lowercase();
            let res = send(ctx.client.get(ctx.url(&format!(
                "/_matrix/client/v1/media/thumbnail/{SERVER}/{id}?width={}&height={}&method={method}",
                d["width"], d["height"]
            ))).bearer_auth(USERS[0].0))
            .await;
            match res {
                Ok(a) if a.status == StatusCode::OK && hex(&sha256(&a.body)) == sha => {}
                Ok(a) => ctx.model().violation(
                    true,
                    format!(
                        "thumbnail of {id} recorded as {sha} answered {} ({} bytes)",
                        a.status,
                        a.body.len()
                    ),
                ),
                Err(e) => ctx
                    .model()
                    .violation(false, format!("thumbnail of {id}: {e}")),
            }
        }
    }

    // No orphan blob, no missing blob, each in the datastore its records name, no spool
    // leftover.
    let on_disk: BTreeSet<String> = files.iter().map(|(_, n, _)| n.clone()).collect();
    {
        let mut m = ctx.model();
        // A cluster runs no start-up sweep (a blob another node stored and has not recorded
        // yet is no orphan): leftovers of cut requests stay there, and are not violations.
        let swept = node.shared_log.is_none();
        for (ds, name, path) in &files {
            if swept && !expected.contains(name) {
                m.violation(
                    false,
                    format!("orphan blob after start-up: {}", path.display()),
                );
            }
            // (In a cluster, a copy a cut transfer left in the other datastore stays too: the
            // one its records name must exist, which the look-up below checks.)
            let in_place = |w: &&str| files.iter().any(|(d, n, _)| n == name && d == w);
            if let Some(want) = located
                .get(name.as_str())
                .filter(|w| *w != ds && (swept || !in_place(w)))
            {
                m.violation(
                    false,
                    format!("blob {name} is in datastore {ds}, its records say {want}"),
                );
            }
        }
        if swept && on_disk.len() != files.len() {
            m.violation(
                false,
                "two blob files with one name (in two datastores?)".into(),
            );
        }
        for sha in expected.difference(&on_disk) {
            m.violation(true, format!("live blob {sha} has no file"));
        }
        if swept && !spool.is_empty() {
            m.violation(false, format!("spool leftovers after start-up: {spool:?}"));
        }
    }
    let media = ctx.model().media.len();
    Checked {
        media,
        listed: listing.len(),
        blobs: files.len(),
        thumbnails: thumbs,
    }
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().map(|v| {
        v.trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name} must be a number, got {v:?}"))
    })
}

#[test]
fn crash_kill_restart_cycles() {
    let cycles = env_u64("CRASH_CYCLES").unwrap_or(10);
    let per_dir = env_u64("CRASH_CYCLES_PER_DIR").unwrap_or(25).max(1);
    let seed = env_u64("CRASH_SEED").unwrap_or_else(|| {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        t.as_nanos() as u64 ^ u64::from(std::process::id()).rotate_left(32)
    });
    println!(
        "crash: seed {seed} (CRASH_SEED={seed} replays its choices), {cycles} cycles, a fresh data directory every {per_dir}"
    );
    let bin = crash_support::server_binary();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let wall = Instant::now();
    let mut rng = StdRng::seed_from_u64(seed);
    let mut total = Series::default();
    let mut first = 1;
    while first <= cycles && total.violations.is_empty() {
        let n = per_dir.min(cycles - first + 1);
        let series = rt.block_on(run_series(&bin, first, n, cycles, &mut rng));
        total.add(series);
        first += n;
    }
    let s = &total.stats;
    println!(
        "crash summary: seed {seed}, cycles {} ({} extra kills during start-up), {} requests answered, {} state changes acknowledged: {} uploads + {} async PUTs ({} creates), {} quarantines, {} purges, {} transfers started ({} refused while one ran; {} tasks recorded, {} cut by a kill and resumed by the restart, all ended without giving up), {} remote purges ({} cached media removed); {} media uploaded to the peer, {} remote downloads byte-identical; {} downloads, {} thumbnails, {} uploads of quarantined bytes refused; {} requests cut by kills ({} cut uploads found recorded, {} open outcomes resolved); {} media checks after restarts; losses {}; violations {}; wall {:.1} s",
        total.cycles,
        total.startup_kills,
        s.answered,
        s.uploads + s.puts + s.creates + s.quarantines + s.purges + s.transfers + s.remote_purges,
        s.uploads,
        s.puts,
        s.creates,
        s.quarantines,
        s.purges,
        s.transfers,
        s.transfers_refused,
        s.transfers_finished,
        s.transfers_resumed,
        s.remote_purges,
        s.remote_removed,
        s.remote_seeded,
        s.remote_downloads,
        s.downloads,
        s.thumbnails,
        s.refused_quarantined,
        s.cut,
        s.cut_uploads_recorded,
        s.unsure_resolved,
        s.checked,
        total.losses,
        total.violations.len(),
        wall.elapsed().as_secs_f64(),
    );
    assert!(
        total.violations.is_empty(),
        "{} violations ({} losses), seed {seed}:\n{}",
        total.violations.len(),
        total.losses,
        total.violations.join("\n")
    );
}

/// The figures of one or more series of cycles.
#[derive(Default)]
struct Series {
    cycles: u64,
    startup_kills: u64,
    stats: Stats,
    losses: u64,
    violations: Vec<String>,
}

impl Series {
    fn add(&mut self, o: Series) {
        self.cycles += o.cycles;
        self.startup_kills += o.startup_kills;
        let (a, b) = (&mut self.stats, &o.stats);
        a.answered += b.answered;
        a.uploads += b.uploads;
        a.puts += b.puts;
        a.creates += b.creates;
        a.quarantines += b.quarantines;
        a.purges += b.purges;
        a.downloads += b.downloads;
        a.thumbnails += b.thumbnails;
        a.refused_quarantined += b.refused_quarantined;
        a.remote_seeded += b.remote_seeded;
        a.remote_downloads += b.remote_downloads;
        a.remote_purges += b.remote_purges;
        a.remote_removed += b.remote_removed;
        a.transfers += b.transfers;
        a.transfers_refused += b.transfers_refused;
        a.transfers_finished += b.transfers_finished;
        a.transfers_resumed += b.transfers_resumed;
        a.cut += b.cut;
        a.cut_uploads_recorded += b.cut_uploads_recorded;
        a.unsure_resolved += b.unsure_resolved;
        a.checked += b.checked;
        self.losses += o.losses;
        self.violations.extend(o.violations);
    }
}

/// Cycles `first..first + n` on one fresh data directory (kept when something failed, or
/// with `CRASH_KEEP`), ending with a graceful stop and a last `verify`.
async fn run_series(bin: &Path, first: u64, n: u64, cycles: u64, rng: &mut StdRng) -> Series {
    let dir = tempfile::Builder::new()
        .prefix("media-ledger-crash-")
        .tempdir()
        .unwrap();
    let data = dir.path().to_owned();
    // The killed server (two file datastores, for transfers) and its peer, each pinning the
    // other's fixed port.
    let port = crash_support::free_port();
    let origin_port = loop {
        let p = crash_support::free_port();
        if p != port {
            break p;
        }
    };
    // Cluster mode: the killed server is a node of a cluster on a throwaway PostgreSQL, with
    // a twin node (never killed) on the same shared log and datastores.
    let pg = std::env::var_os("CRASH_CLUSTER").map(|_| crash_support::pg::PgServer::launch());
    let shared_log = pg.as_ref().map(|p| p.url());
    let node = Node {
        server: SERVER,
        users: USERS.to_vec(),
        dir: data.clone(),
        port,
        peer: (ORIGIN, format!("http://127.0.0.1:{origin_port}")),
        datastores: DATASTORES.to_vec(),
        shared_log: shared_log.clone(),
        media_root: None,
    };
    let origin = Node {
        server: ORIGIN,
        users: vec![ORIGIN_USER],
        dir: data.join("origin"),
        port: origin_port,
        peer: (SERVER, node.base()),
        datastores: vec!["files"],
        shared_log: None,
        media_root: None,
    };
    let twin = shared_log.as_ref().map(|_| Node {
        server: SERVER,
        users: USERS.to_vec(),
        dir: data.join("twin"),
        port: crash_support::free_port(),
        peer: node.peer.clone(),
        datastores: DATASTORES.to_vec(),
        shared_log: shared_log.clone(),
        media_root: Some(data.clone()),
    });
    std::fs::create_dir_all(&origin.dir).unwrap();
    let log = |n: u64| data.join(format!("server-{n}.log"));
    let model = Arc::new(Mutex::new(Model::default()));
    let limit = Duration::from_secs(120);
    let (mut peer, _) = crash_support::start(bin, &origin, &data.join("origin.log"), limit).await;
    let mut boots = 0;
    let (mut proc, mut startup) = crash_support::start(bin, &node, &log(boots), limit).await;
    let mut twin_proc = match &twin {
        Some(t) => {
            std::fs::create_dir_all(&t.dir).unwrap();
            Some(
                crash_support::start(bin, t, &data.join("twin.log"), limit)
                    .await
                    .0,
            )
        }
        None => None,
    };
    let mut series = Series::default();
    for cycle in first..first + n {
        let ctx = Arc::new(Ctx::new(
            proc.base.clone(),
            peer.base.clone(),
            model.clone(),
        ));
        let kill_after = Duration::from_millis(rng.random_range(100..2000));
        let workers: Vec<_> = (0..WORKERS)
            .map(|_| tokio::spawn(worker(ctx.clone(), StdRng::seed_from_u64(rng.random()))))
            .collect();
        // In most cycles a transfer between the two datastores starts at a random moment
        // before the kill (refused while an earlier one still runs).
        if rng.random_bool(0.6) {
            let at = Duration::from_millis(rng.random_range(0..kill_after.as_millis() as u64));
            let (from, to) = if rng.random_bool(0.5) {
                (DATASTORES[0], DATASTORES[1])
            } else {
                (DATASTORES[1], DATASTORES[0])
            };
            tokio::time::sleep(at).await;
            transfer(&ctx, from, to).await;
            tokio::time::sleep(kill_after - at).await;
        } else {
            tokio::time::sleep(kill_after).await;
        }
        if !proc.alive() {
            model.lock().unwrap().violation(
                false,
                format!(
                    "the server exited on its own; log:\n{}",
                    crash_support::log_tail(&proc.log)
                ),
            );
        }
        ctx.killed.store(true, Ordering::SeqCst);
        proc.kill();
        for w in workers {
            tokio::time::timeout(Duration::from_secs(60), w)
                .await
                .expect("a client ends within 60 s of the kill")
                .expect("a client panicked");
        }
        let mut verified = Vec::new();
        match crash_support::verify(bin, &node) {
            Ok(out) => verified.push(out),
            Err(e) => model.lock().unwrap().violation(
                false,
                format!("verify after the kill of cycle {cycle}: {e}"),
            ),
        }
        // Sometimes a second crash, during start-up recovery.
        let killed_in_startup = rng.random_ratio(1, 4);
        if killed_in_startup {
            boots += 1;
            let max = startup.as_millis().max(20) as u64;
            let delay = Duration::from_millis(rng.random_range(0..=max));
            let mut p: Proc = crash_support::spawn(bin, &node, &log(boots));
            tokio::time::sleep(delay).await;
            p.kill();
            series.startup_kills += 1;
            if let Err(e) = crash_support::verify(bin, &node) {
                model.lock().unwrap().violation(
                    false,
                    format!("verify after a kill during start-up ({delay:?}): {e}"),
                );
            }
        }
        boots += 1;
        let (p, took) = crash_support::start(bin, &node, &log(boots), limit).await;
        proc = p;
        startup = took;
        let ctx = Ctx::new(proc.base.clone(), peer.base.clone(), model.clone());
        let check_started = Instant::now();
        let checked = check_after_restart(&ctx, &node).await;
        // Cluster mode: the twin, which saw all of it through the shared log, must agree.
        if let (Some(t), Some(tp)) = (&twin, &twin_proc) {
            let tctx = Ctx::new(tp.base.clone(), peer.base.clone(), model.clone());
            check_after_restart(&tctx, t).await;
        }
        let check_took = check_started.elapsed();
        match crash_support::verify(bin, &node) {
            Ok(out) => verified.push(out),
            Err(e) => model.lock().unwrap().violation(
                false,
                format!("verify beside the running server, cycle {cycle}: {e}"),
            ),
        }
        series.cycles += 1;
        let m = model.lock().unwrap();
        println!(
            "cycle {cycle}/{cycles}: killed after {} ms{}; restart {} ms; checks {} ms: {} media known, {} listed, {} blob files, {} thumbnails; acked in this directory: {} uploads + {} PUTs, {} quarantines, {} purges; {} cut requests; verify ok at {} events",
            kill_after.as_millis(),
            if killed_in_startup { " and again during start-up" } else { "" },
            startup.as_millis(),
            check_took.as_millis(),
            checked.media,
            checked.listed,
            checked.blobs,
            checked.thumbnails,
            m.stats.uploads,
            m.stats.puts,
            m.stats.quarantines,
            m.stats.purges,
            m.stats.cut,
            verified
                .iter()
                .map(|v| {
                    // A cluster node's verify first reports the shared log on a line of its own.
                    let last = v.lines().last().unwrap_or(v);
                    last.trim_start_matches("ok: ").split(' ').next().unwrap_or(last)
                })
                .collect::<Vec<_>>()
                .join(" / "),
        );
        if !m.violations.is_empty() {
            break;
        }
    }
    let stopped = proc.terminate(Duration::from_secs(60));
    let final_verify = crash_support::verify(bin, &node);
    if let (Some(t), Some(mut tp)) = (&twin, twin_proc.take()) {
        let twin_ok = tp
            .terminate(Duration::from_secs(60))
            .and_then(|()| crash_support::verify(bin, t).map(|_| ()));
        if let Err(e) = twin_ok {
            model
                .lock()
                .unwrap()
                .violation(false, format!("the twin node: {e}"));
        }
    }
    drop(pg);
    let peer_stopped = peer.terminate(Duration::from_secs(60));
    let peer_verify = crash_support::verify(bin, &origin);
    let mut m = model.lock().unwrap();
    if let Err(e) = stopped {
        m.violation(false, format!("graceful stop: {e}"));
    }
    if let Err(e) = final_verify {
        m.violation(false, format!("verify after the graceful stop: {e}"));
    }
    if let Err(e) = peer_stopped.and(peer_verify) {
        m.violation(false, format!("the peer server: {e}"));
    }
    if !m.violations.is_empty() || std::env::var_os("CRASH_KEEP").is_some() {
        println!("crash: data kept in {}", dir.keep().display());
    }
    series.stats = m.stats.clone();
    series.losses = m.losses;
    series.violations = std::mem::take(&mut m.violations);
    series
}
