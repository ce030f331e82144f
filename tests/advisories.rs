#![allow(clippy::unwrap_used, clippy::expect_used)]
//! One test per advisory class of ../shared/reference/reliability.md §4.3 (Matrix homeserver
//! advisories in media and outbound-fetch handling), each against real HTTP on loopback:
//!
//! | advisory | test |
//! |---|---|
//! | GHSA-5crw-6j7v-xc72 (SVG served inline) | `active_content_is_never_served_inline` |
//! | CVE-2021-29453 (thumbnail bomb) | `thumbnail_bombs_are_refused_before_decoding_with_bounded_memory` |
//! | CVE-2024-52791 (unbounded remote JSON) | `remote_json_is_capped_while_streaming` |
//! | CVE-2024-53863 (uncommon decoders) | `only_png_jpeg_gif_and_webp_are_thumbnailed` |
//! | CVE-2024-52805 (unbounded request bodies) | `upload_bodies_are_cut_off_while_streaming`, `json_bodies_are_capped_with_a_matrix_error` |
//! | CVE-2024-37303 (unauthenticated remote fetches) | `unauthenticated_requests_never_fetch_remote_media` |
//! | CVE-2022-31052, GHSA-98px-6486-j7qc (URL previews) | `url_previews_never_reach_private_addresses` |
//! | CVE-2021-21273 (every outbound fetch) | `signature_key_fetches_obey_the_address_rule` |
//! | CVE-2021-21392 (IPv6 transition forms) + SSRF | `ssrf_*` |
//! | tokens in logs, request ids | `tokens_never_reach_the_logs_and_request_ids_do` (the real binary) |
//!
//! None of the SSRF tests pins the server names under test (`[federation] pins` bypass the
//! address rule); pins are used only for the fake remotes that answer with a redirect or
//! hostile JSON, never for the private address the test checks is not contacted.

mod common;

use axum::body::Body;
use axum::extract::Path as AxPath;
use axum::response::IntoResponse;
use common::{
    expect_error, header, parse_mxc, random_bytes, Opts, TestServer, ADMIN, ALICE, SECRET,
};
use media_ledger::federation::keys::SigningKey;
use media_ledger::federation::xmatrix;
use media_ledger::ledger::Ledger;
use media_ledger_events::{Event, Seq};
use reqwest::StatusCode;
use serde_json::Value;
use std::io::Cursor;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Tests that measure the process's memory run one at a time.
static MEMORY: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// A free loopback port.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Serves `router` on a fresh loopback port; returns `http://127.0.0.1:PORT`.
async fn serve(router: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    format!("http://{addr}")
}

/// A listener on 127.0.0.1:PORT (and [::1]:PORT when IPv6 is there) that counts every
/// connection it accepts: the private address no fetch may reach.
struct Sentinel {
    port: u16,
    hits: Arc<AtomicUsize>,
}

async fn sentinel() -> Sentinel {
    let v4 = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = v4.local_addr().unwrap().port();
    let hits = Arc::new(AtomicUsize::new(0));
    let mut listeners = vec![v4];
    if let Ok(v6) = tokio::net::TcpListener::bind(("::1", port)).await {
        listeners.push(v6);
    }
    for l in listeners {
        let hits = hits.clone();
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((sock, _)) = l.accept().await {
                hits.fetch_add(1, Ordering::SeqCst);
                held.push(sock);
            }
        });
    }
    Sentinel { port, hits }
}

impl Sentinel {
    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

/// A server with federation on, its own signing key, short timeouts, no pins but `pins`.
async fn federating_server(pins: &[(&str, &str)], extra: &str) -> TestServer {
    let pins = pins
        .iter()
        .map(|(n, u)| format!("{n:?} = {u:?}"))
        .collect::<Vec<_>>()
        .join(", ");
    TestServer::start_with(Opts {
        extra_toml: format!(
            "[federation]\nsigning_key_path = {{dir:signing.key}}\nconnect_timeout_ms = 300\ntimeout_ms = 3000\nbackoff_base_ms = 1\npins = {{ {pins} }}\n{extra}\n"
        ),
        ..Opts::default()
    })
    .await
}

/// `GET /_matrix/client/v1/media/download/{mxc}` as alice; `(status, errcode, took)`.
async fn authed_download(srv: &TestServer, server: &str, id: &str) -> (u16, String, Duration) {
    let t = Instant::now();
    let resp = srv
        .client
        .get(srv.url(&format!("/_matrix/client/v1/media/download/{server}/{id}")))
        .bearer_auth(ALICE)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let v: Value = resp.json().await.unwrap_or_default();
    (
        status,
        v["errcode"].as_str().unwrap_or_default().to_owned(),
        t.elapsed(),
    )
}

/// Every event of the ledger at `db` (server stopped).
fn events(db: &std::path::Path) -> Vec<media_ledger_events::Envelope> {
    let mut out = Vec::new();
    Ledger::events_at(db, Seq(1), Seq(u64::MAX), |env| {
        out.push(env);
        true
    })
    .unwrap();
    out
}

fn remote_cached(db: &std::path::Path) -> Vec<media_ledger_events::Envelope> {
    events(db)
        .into_iter()
        .filter(|e| matches!(e.event, Event::RemoteMediaCachedV1(_)))
        .collect()
}

/// The resident set of this process, in bytes.
fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// Samples the resident set every 5 ms until dropped; `peak()` is the highest seen.
struct RssSampler {
    stop: Arc<AtomicBool>,
    peak: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl RssSampler {
    fn start() -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let peak = Arc::new(AtomicU64::new(rss_bytes()));
        let (s, p) = (stop.clone(), peak.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::SeqCst) {
                p.fetch_max(rss_bytes(), Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(5));
            }
        });
        Self {
            stop,
            peak,
            thread: Some(thread),
        }
    }

    fn peak(&self) -> u64 {
        self.peak.load(Ordering::SeqCst).max(rss_bytes())
    }
}

impl Drop for RssSampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

const MIB: u64 = 1024 * 1024;

// ---------------------------------------------------------------------------------------------
// GHSA-5crw-6j7v-xc72: active content served inline
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn active_content_is_never_served_inline() {
    let mut srv = TestServer::start().await;
    let svg: &[u8] = br#"<svg xmlns="http://www.w3.org/2000/svg" onload="alert(document.domain)"><script>alert(1)</script></svg>"#;
    let html: &[u8] = b"<html><body><script>alert(document.cookie)</script></body></html>";
    let js: &[u8] = b"fetch('/_matrix/client/v3/account/whoami').then(r => r.text()).then(alert)";
    // (content type, bytes, upload name)
    let cases: Vec<(&str, &[u8], Option<&str>)> = vec![
        ("image/svg+xml", svg, Some("cat.svg")),
        ("image/svg+xml; charset=utf-8", svg, Some("cat.png")),
        ("IMAGE/SVG+XML", svg, None),
        ("text/html", html, Some("index.html")),
        ("text/html; charset=utf-8", html, Some("photo.jpg")),
        ("TEXT/HTML", html, None),
        ("application/xhtml+xml", html, Some("a.xhtml")),
        ("text/xml", svg, Some("a.xml")),
        ("application/xml", svg, None),
        ("application/javascript", js, Some("app.js")),
        ("text/javascript", js, Some("app.js")),
        ("application/ecmascript", js, None),
        (
            "application/x-shockwave-flash",
            &b"FWS\x0a"[..],
            Some("a.swf"),
        ),
        (
            "application/pdf",
            &b"%PDF-1.4 /JS (app.alert(1))"[..],
            Some("a.pdf"),
        ),
        ("multipart/x-mixed-replace; boundary=x", html, None),
        ("text/vtt", html, None),
    ];
    let mut checked = 0;
    for (ct, bytes, name) in &cases {
        let mxc = srv.upload(ALICE, bytes.to_vec(), Some(*ct), *name).await;
        let (server, id) = parse_mxc(&mxc);
        // Every way of downloading it, including a path file name that looks harmless.
        let paths = [
            format!("/_matrix/media/v3/download/{server}/{id}"),
            format!("/_matrix/media/r0/download/{server}/{id}/innocent.png"),
            format!("/_matrix/client/v1/media/download/{server}/{id}"),
            format!("/_matrix/client/v1/media/download/{server}/{id}/innocent.txt"),
        ];
        for path in &paths {
            for head in [false, true] {
                let req = if head {
                    srv.client.head(srv.url(path))
                } else {
                    srv.client.get(srv.url(path))
                };
                let resp = req.bearer_auth(ALICE).send().await.unwrap();
                assert_eq!(resp.status(), StatusCode::OK, "{ct} at {path}");
                let cd = header(&resp, "content-disposition");
                assert!(
                    cd.starts_with("attachment"),
                    "{ct} at {path} (head {head}) is served {cd:?}"
                );
                let csp = header(&resp, "content-security-policy");
                for needle in ["sandbox", "default-src 'none'", "script-src 'none'"] {
                    assert!(
                        csp.contains(needle),
                        "{ct} at {path}: CSP {csp:?} lacks {needle}"
                    );
                }
                assert_eq!(header(&resp, "x-content-type-options"), "nosniff", "{ct}");
                checked += 1;
            }
        }
        // The thumbnail endpoint does not hand the source back either.
        let resp = srv
            .client
            .get(srv.url(&format!(
                "/_matrix/client/v1/media/thumbnail/{server}/{id}?width=32&height=32"
            )))
            .bearer_auth(ALICE)
            .send()
            .await
            .unwrap();
        expect_error(resp, StatusCode::BAD_REQUEST, "M_UNKNOWN").await;
    }
    // An SVG disguised as PNG is served as the PNG it claims to be, and browsers are told
    // not to sniff it into SVG.
    let mxc = srv
        .upload(ALICE, svg.to_vec(), Some("image/png"), Some("x.svg"))
        .await;
    let resp = srv.download(&mxc).await;
    assert_eq!(header(&resp, "content-type"), "image/png");
    assert_eq!(header(&resp, "x-content-type-options"), "nosniff");
    assert!(header(&resp, "content-security-policy").contains("sandbox"));
    println!(
        "active content: {} uploads, {checked} answers checked",
        cases.len()
    );
    srv.stop().await;
}

// ---------------------------------------------------------------------------------------------
// CVE-2021-29453: thumbnail bombs
// ---------------------------------------------------------------------------------------------

/// Bits of a deflate stream, least significant first.
struct Bits {
    out: Vec<u8>,
    acc: u32,
    n: u32,
}

impl Bits {
    fn put(&mut self, v: u32, len: u32) {
        self.acc |= v << self.n;
        self.n += len;
        while self.n >= 8 {
            self.out.push(self.acc as u8);
            self.acc >>= 8;
            self.n -= 8;
        }
    }

    /// A Huffman code, most significant bit first.
    fn code(&mut self, code: u32, len: u32) {
        let mut r = 0;
        for i in 0..len {
            r |= ((code >> i) & 1) << (len - 1 - i);
        }
        self.put(r, len);
    }
}

/// A zlib stream of `n` zero bytes: one fixed-Huffman block of a literal 0 followed by
/// length-258/distance-1 copies, about 13 bits per 258 bytes.
fn zlib_zeros(n: usize) -> Vec<u8> {
    let mut b = Bits {
        out: vec![0x78, 0x01],
        acc: 0,
        n: 0,
    };
    b.put(1, 1); // BFINAL
    b.put(1, 2); // BTYPE 01: fixed Huffman codes
    b.code(0x30, 8); // literal 0
    let mut left = n - 1;
    while left >= 258 {
        b.code(0xC5, 8); // length code 285: 258 bytes
        b.code(0, 5); // distance code 0: 1 byte back
        left -= 258;
    }
    for _ in 0..left {
        b.code(0x30, 8);
    }
    b.code(0, 7); // end of block
    if b.n > 0 {
        b.out.push(b.acc as u8);
    }
    // Adler-32 of n zeros: a = 1, b = n.
    let adler = (((n % 65521) as u32) << 16) | 1;
    b.out.extend_from_slice(&adler.to_be_bytes());
    b.out
}

fn crc32(parts: &[&[u8]]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for b in parts.iter().flat_map(|p| p.iter()) {
        crc ^= u32::from(*b);
        for _ in 0..8 {
            let mask = (crc & 1).wrapping_neg();
            crc = (crc >> 1) ^ (0xEDB8_8320 & mask);
        }
    }
    !crc
}

fn png_chunk(kind: &[u8; 4], data: &[u8]) -> Vec<u8> {
    let mut c = (data.len() as u32).to_be_bytes().to_vec();
    c.extend_from_slice(kind);
    c.extend_from_slice(data);
    c.extend_from_slice(&crc32(&[kind, data]).to_be_bytes());
    c
}

/// A complete, valid 1-bit greyscale PNG of `w`×`h` black pixels: every row is there, so a
/// decoder that trusted it would allocate `w`×`h` bytes or more. 30000×30000 is ~0.7 MB.
fn png_bomb(w: u32, h: u32) -> Vec<u8> {
    let mut ihdr = w.to_be_bytes().to_vec();
    ihdr.extend_from_slice(&h.to_be_bytes());
    ihdr.extend_from_slice(&[1, 0, 0, 0, 0]);
    let raw = h as usize * (1 + (w as usize).div_ceil(8));
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    out.extend(png_chunk(b"IHDR", &ihdr));
    for part in zlib_zeros(raw).chunks(1 << 20) {
        out.extend(png_chunk(b"IDAT", part));
    }
    out.extend(png_chunk(b"IEND", &[]));
    out
}

/// A real JPEG whose frame header claims `w`×`h`.
fn jpeg_claiming(w: u16, h: u16) -> Vec<u8> {
    let img = image::RgbImage::from_fn(64, 48, |x, y| image::Rgb([x as u8 * 4, y as u8 * 5, 90]));
    let mut j = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut j, 80)
        .encode_image(&img)
        .unwrap();
    let sof = j.windows(2).position(|p| p == [0xFF, 0xC0]).unwrap();
    j[sof + 5..sof + 7].copy_from_slice(&h.to_be_bytes());
    j[sof + 7..sof + 9].copy_from_slice(&w.to_be_bytes());
    j
}

fn thumbnail_server_opts(thumbnails: &str) -> Opts {
    Opts {
        datastores: Some(format!(
            "[[datastores]]\nid = \"files\"\ntype = \"file\"\npath = {{dir:media}}\nkinds = [\"all\"]\n\n[thumbnails]\n{thumbnails}\n"
        )),
        ..Opts::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thumbnail_bombs_are_refused_before_decoding_with_bounded_memory() {
    let _one = MEMORY.lock().await;
    // The generator is right: a small one decodes to all-black pixels.
    let small = image::load_from_memory(&png_bomb(64, 40))
        .unwrap()
        .to_luma8();
    assert_eq!(small.dimensions(), (64, 40));
    assert!(small.pixels().all(|p| p.0[0] == 0));
    let bomb = png_bomb(30_000, 30_000);
    let reader = image::ImageReader::new(Cursor::new(&bomb))
        .with_guessed_format()
        .unwrap();
    assert_eq!(reader.into_dimensions().unwrap(), (30_000, 30_000));
    let jpeg = jpeg_claiming(60_000, 60_000);
    println!(
        "thumbnail bomb: PNG {} bytes for 900 M pixels, JPEG {} bytes claiming 3.6 G pixels",
        bomb.len(),
        jpeg.len()
    );

    // The default limits (max_pixels from the header), then only the decoder's allocation
    // limit (max_pixels out of the way): either must refuse without decoding.
    for (label, cfg) in [
        ("default limits", String::new()),
        (
            "max_pixels off, max_alloc_bytes = 64 MiB",
            "max_pixels = 1000000000000\nmax_alloc_bytes = 67108864\n".to_owned(),
        ),
    ] {
        let mut srv = TestServer::start_with(thumbnail_server_opts(&cfg)).await;
        let png_mxc = srv
            .upload(ALICE, bomb.clone(), Some("image/png"), None)
            .await;
        let jpeg_mxc = srv
            .upload(ALICE, jpeg.clone(), Some("image/jpeg"), None)
            .await;
        let base = rss_bytes();
        let sampler = RssSampler::start();
        let mut slowest = Duration::ZERO;
        // Several at once, on both endpoints and both methods.
        let mut tasks = Vec::new();
        for mxc in [&png_mxc, &jpeg_mxc] {
            let (server, id) = parse_mxc(mxc);
            for (prefix, q) in [
                ("/_matrix/client/v1/media", "width=96&height=96&method=crop"),
                ("/_matrix/media/v3", "width=800&height=600&method=scale"),
                ("/_matrix/client/v1/media", "width=320&height=240"),
            ] {
                let url = srv.url(&format!("{prefix}/thumbnail/{server}/{id}?{q}"));
                let c = srv.client.clone();
                tasks.push(tokio::spawn(async move {
                    let t = Instant::now();
                    let resp = c.get(&url).bearer_auth(ALICE).send().await.unwrap();
                    (url, resp.status(), resp.text().await.unwrap(), t.elapsed())
                }));
            }
        }
        for t in tasks {
            let (url, status, body, took) = t.await.unwrap();
            slowest = slowest.max(took);
            assert_eq!(status, StatusCode::BAD_REQUEST, "{label}: {url}: {body}");
            let v: Value = serde_json::from_str(&body).unwrap();
            assert_eq!(v["errcode"], "M_UNKNOWN", "{label}: {body}");
        }
        let peak = sampler.peak();
        drop(sampler);
        let grew = peak.saturating_sub(base);
        println!(
            "thumbnail bomb ({label}): 6 requests refused, slowest {slowest:?}, RSS {} MiB -> peak {} MiB (+{} MiB)",
            base / MIB,
            peak / MIB,
            grew / MIB
        );
        assert!(
            slowest < Duration::from_secs(3),
            "{label}: took {slowest:?}"
        );
        assert!(
            grew < 200 * MIB,
            "{label}: memory grew by {} MiB while refusing bombs",
            grew / MIB
        );
        // Nothing was generated, and the server still thumbnails a real image.
        let ok = srv
            .upload(ALICE, common_png(200, 150), Some("image/png"), None)
            .await;
        let (server, id) = parse_mxc(&ok);
        let resp = srv
            .client
            .get(srv.url(&format!(
                "/_matrix/media/v3/thumbnail/{server}/{id}?width=32&height=32&method=crop"
            )))
            .bearer_auth(ALICE)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "{label}");
        srv.stop().await;
        let generated: Vec<_> = events(&srv.db_path())
            .into_iter()
            .filter_map(|e| match e.event {
                Event::ThumbnailGeneratedV1(t) => Some(t.media.to_string()),
                _ => None,
            })
            .collect();
        assert_eq!(generated, vec![ok.clone()], "{label}");
    }
}

fn common_png(w: u32, h: u32) -> Vec<u8> {
    let img = image::RgbImage::from_fn(w, h, |x, y| image::Rgb([x as u8, y as u8, 7]));
    let mut out = Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

// ---------------------------------------------------------------------------------------------
// CVE-2024-53863: only the four formats
// ---------------------------------------------------------------------------------------------

/// A 2×2 24-bit BMP.
fn bmp() -> Vec<u8> {
    let mut b = b"BM".to_vec();
    let pixels = 2 * 8; // two rows of 2×3 bytes padded to 8
    b.extend_from_slice(&(54u32 + pixels).to_le_bytes());
    b.extend_from_slice(&[0; 4]);
    b.extend_from_slice(&54u32.to_le_bytes());
    b.extend_from_slice(&40u32.to_le_bytes());
    b.extend_from_slice(&2i32.to_le_bytes());
    b.extend_from_slice(&2i32.to_le_bytes());
    b.extend_from_slice(&1u16.to_le_bytes());
    b.extend_from_slice(&24u16.to_le_bytes());
    b.extend_from_slice(&[0; 24]);
    b.extend_from_slice(&[0xff; 16]);
    b
}

/// A little-endian TIFF header with one empty IFD.
fn tiff() -> Vec<u8> {
    let mut t = b"II*\0".to_vec();
    t.extend_from_slice(&8u32.to_le_bytes());
    t.extend_from_slice(&0u16.to_le_bytes());
    t.extend_from_slice(&0u32.to_le_bytes());
    t
}

/// The issue's reproduction: 100 anonymous and 100 authenticated thumbnail requests at once
/// over 10 junk "PNGs" just under `max_source_bytes` (20 MiB). Before the bounds, every
/// request read its source before waiting for a worker (RSS grew by gigabytes); now an
/// anonymous request reads nothing, an authenticated one reads only with a worker, the queue
/// beyond `max_queued` answers 429, and each junk source is decoded once per size.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn junk_thumbnail_requests_do_not_pin_memory() {
    let _one = MEMORY.lock().await;
    let mut srv = TestServer::start_with(thumbnail_server_opts("")).await;
    let mut media = Vec::new();
    for _ in 0..10 {
        let mut junk = b"\x89PNG\r\n\x1a\n".to_vec();
        junk.extend(random_bytes(20 * 1024 * 1024 - 1024));
        media.push(srv.upload(ALICE, junk, Some("image/png"), None).await);
    }
    let base = rss_bytes();
    let sampler = RssSampler::start();
    let sizes = [
        "width=32&height=32&method=crop",
        "width=96&height=96&method=crop",
        "width=320&height=240&method=scale",
        "width=640&height=480&method=scale",
        "width=800&height=600&method=scale",
    ];
    let mut tasks = Vec::new();
    for i in 0..200 {
        let (server, id) = parse_mxc(&media[i % 10]);
        let url = srv.url(&format!(
            "/_matrix/media/v3/thumbnail/{server}/{id}?{}",
            sizes[(i / 10) % 5]
        ));
        let (c, authed) = (srv.client.clone(), i % 2 == 1);
        tasks.push(tokio::spawn(async move {
            let mut req = c.get(&url);
            if authed {
                req = req.bearer_auth(ALICE);
            }
            let resp = req.send().await.unwrap();
            (authed, resp.status(), resp.text().await.unwrap())
        }));
    }
    let mut answers = std::collections::BTreeMap::<(bool, u16), usize>::new();
    for t in tasks {
        let (authed, status, body) = t.await.unwrap();
        let allowed: &[u16] = if authed { &[400, 429] } else { &[400, 404] };
        assert!(
            allowed.contains(&status.as_u16()),
            "authed {authed}: {status} {body}"
        );
        *answers.entry((authed, status.as_u16())).or_default() += 1;
    }
    let peak = sampler.peak();
    drop(sampler);
    let grew = peak.saturating_sub(base);
    println!(
        "200 thumbnail requests over 10 junk 20 MiB PNGs: {answers:?}, RSS {} MiB -> peak {} MiB (+{} MiB)",
        base / MIB,
        peak / MIB,
        grew / MIB
    );
    assert!(
        grew < 200 * MIB,
        "memory grew by {} MiB answering junk thumbnail requests",
        grew / MIB
    );
    srv.stop().await;
    let generated = events(&srv.db_path())
        .into_iter()
        .filter(|e| matches!(e.event, Event::ThumbnailGeneratedV1(_)))
        .count();
    assert_eq!(generated, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_png_jpeg_gif_and_webp_are_thumbnailed() {
    let mut srv = TestServer::start().await;
    let eps =
        b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 2000 2000\n(%pipe%id) (w) file\nshowpage\n"
            .to_vec();
    let pdf = b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n"
        .to_vec();
    let svg = br#"<svg xmlns="http://www.w3.org/2000/svg" width="2000" height="2000"/>"#.to_vec();
    let ico = [0u8, 0, 1, 0, 1, 0, 0, 0, 0, 0, 1, 0, 32, 0].to_vec();
    let xcf = b"gimp xcf v011\0".to_vec();
    // The magic numbers are real: the image crate recognises these.
    assert_eq!(
        image::guess_format(&bmp()).unwrap(),
        image::ImageFormat::Bmp
    );
    assert_eq!(
        image::guess_format(&tiff()).unwrap(),
        image::ImageFormat::Tiff
    );
    let sources: Vec<(&str, Vec<u8>, &str)> = vec![
        ("BMP", bmp(), "image/bmp"),
        ("TIFF", tiff(), "image/tiff"),
        ("EPS", eps.clone(), "application/postscript"),
        ("EPS as image/eps", eps.clone(), "image/x-eps"),
        ("PDF", pdf, "application/pdf"),
        ("SVG", svg.clone(), "image/svg+xml"),
        ("ICO", ico, "image/x-icon"),
        ("XCF", xcf, "image/x-xcf"),
        // Declared as a thumbnailable type, sniffed as something else.
        ("BMP declared PNG", bmp(), "image/png"),
        ("TIFF declared JPEG", tiff(), "image/jpeg"),
        ("EPS declared PNG", eps, "image/png"),
        ("SVG declared WebP", svg, "image/webp"),
    ];
    for (what, bytes, ct) in &sources {
        let mxc = srv.upload(ALICE, bytes.clone(), Some(*ct), None).await;
        let (server, id) = parse_mxc(&mxc);
        for q in [
            "width=32&height=32&method=crop",
            "width=640&height=480&method=scale",
        ] {
            let t = Instant::now();
            let resp = srv
                .client
                .get(srv.url(&format!(
                    "/_matrix/client/v1/media/thumbnail/{server}/{id}?{q}"
                )))
                .bearer_auth(ALICE)
                .send()
                .await
                .unwrap();
            let status = resp.status();
            let body = resp.text().await.unwrap();
            assert_eq!(status, StatusCode::BAD_REQUEST, "{what} ({ct}) {q}: {body}");
            assert!(body.contains("M_UNKNOWN"), "{what}: {body}");
            assert!(
                t.elapsed() < Duration::from_secs(2),
                "{what}: {:?}",
                t.elapsed()
            );
        }
    }
    srv.stop().await;
    let thumbs = events(&srv.db_path())
        .into_iter()
        .filter(|e| matches!(e.event, Event::ThumbnailGeneratedV1(_)))
        .count();
    assert_eq!(thumbs, 0, "an uncommon format was thumbnailed");
    println!(
        "uncommon formats: {} sources refused, 0 thumbnails",
        sources.len()
    );
}

// ---------------------------------------------------------------------------------------------
// CVE-2024-52805 and unbounded bodies
// ---------------------------------------------------------------------------------------------

/// Streams a chunked body of up to `offer` bytes over a raw connection after `head`, while
/// reading the answer; returns the status line (or what happened) and how many body bytes
/// had been written when the answer arrived.
async fn stream_until_answered(
    addr: SocketAddr,
    head: String,
    offer: u64,
) -> (String, u64, Duration) {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut rd, mut wr) = stream.into_split();
    let sent = Arc::new(AtomicU64::new(0));
    let answered = Arc::new(AtomicBool::new(false));
    let (s, a) = (sent.clone(), answered.clone());
    let writer = tokio::spawn(async move {
        wr.write_all(head.as_bytes()).await?;
        let chunk = vec![b'x'; 64 * 1024];
        let framed = [
            format!("{:x}\r\n", chunk.len()).into_bytes(),
            chunk,
            b"\r\n".to_vec(),
        ]
        .concat();
        while s.load(Ordering::SeqCst) < offer && !a.load(Ordering::SeqCst) {
            wr.write_all(&framed).await?;
            s.fetch_add(64 * 1024, Ordering::SeqCst);
        }
        wr.write_all(b"0\r\n\r\n").await?;
        Ok::<_, std::io::Error>(wr)
    });
    let t = Instant::now();
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 16 * 1024];
    let status = loop {
        match tokio::time::timeout(Duration::from_secs(60), rd.read(&mut chunk)).await {
            Err(_) => break "no answer within 60 s".to_owned(),
            Ok(Ok(0)) => break format!("closed after {} bytes", buf.len()),
            Ok(Ok(n)) => {
                buf.extend_from_slice(&chunk[..n]);
                if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    answered.store(true, Ordering::SeqCst);
                    // The body too (for the errcode), briefly.
                    let until = Instant::now() + Duration::from_millis(500);
                    while Instant::now() < until {
                        match tokio::time::timeout(Duration::from_millis(100), rd.read(&mut chunk))
                            .await
                        {
                            Ok(Ok(n)) if n > 0 => buf.extend_from_slice(&chunk[..n]),
                            Ok(_) => break,
                            Err(_) => {}
                        }
                    }
                    let head = String::from_utf8_lossy(&buf[..i]).into_owned();
                    break format!(
                        "{} {}",
                        head.lines().next().unwrap_or_default(),
                        String::from_utf8_lossy(&buf[i + 4..])
                    );
                }
            }
            Ok(Err(e)) => break format!("error {e} after {} bytes", buf.len()),
        }
    };
    answered.store(true, Ordering::SeqCst);
    let took = t.elapsed();
    writer.abort();
    (status, sent.load(Ordering::SeqCst), took)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_bodies_are_cut_off_while_streaming() {
    let _one = MEMORY.lock().await;
    const MAX: u64 = 1024 * 1024;
    let mut srv = TestServer::start_with(Opts {
        max_bytes: MAX,
        ..Opts::default()
    })
    .await;
    let addr: SocketAddr = srv.base.strip_prefix("http://").unwrap().parse().unwrap();
    let reservation: Value = srv
        .client
        .post(srv.url("/_matrix/media/v1/create"))
        .bearer_auth(ALICE)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let (_, async_id) = parse_mxc(reservation["content_uri"].as_str().unwrap());
    let offer = 512 * MIB;
    let put_line = format!("PUT /_matrix/media/v3/upload/localhost/{async_id}");
    let base = rss_bytes();
    let sampler = RssSampler::start();
    for (label, line, ct) in [
        (
            "POST upload",
            "POST /_matrix/media/v3/upload",
            "application/octet-stream",
        ),
        (
            "POST upload as multipart/form-data",
            "POST /_matrix/media/v3/upload?filename=x",
            "multipart/form-data; boundary=----x",
        ),
        ("PUT async upload", put_line.as_str(), "image/png"),
    ] {
        let head = format!(
            "{line} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {ALICE}\r\nContent-Type: {ct}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        );
        let (status, sent, took) = stream_until_answered(addr, head, offer).await;
        println!(
            "unbounded body ({label}): answered {:?} after {} MiB of a {} MiB chunked body, in {took:?}",
            status.chars().take(120).collect::<String>(),
            sent / MIB,
            offer / MIB
        );
        assert!(status.starts_with("HTTP/1.1 413"), "{label}: {status}");
        assert!(status.contains("M_TOO_LARGE"), "{label}: {status}");
        // Cut off while streaming: the limit, the bounded drain (64 MiB) and socket buffers.
        assert!(
            sent < MAX + 64 * MIB + 32 * MIB,
            "{label}: {} MiB were taken before the 413",
            sent / MIB
        );
        assert_eq!(common::spool_entries(&srv.media_dir()), 0, "{label}");
        assert_eq!(common::count_blobs(&srv.media_dir()), 0, "{label}");
    }
    let grew = sampler.peak().saturating_sub(base);
    drop(sampler);
    println!("unbounded body: RSS grew by {} MiB at most", grew / MIB);
    assert!(grew < 128 * MIB, "memory grew by {} MiB", grew / MIB);
    // A Content-Length above the limit is refused before any byte is read.
    let (status, sent, _) = stream_until_answered(
        addr,
        format!("POST /_matrix/media/v3/upload HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {ALICE}\r\nContent-Length: 1099511627776\r\nConnection: close\r\n\r\n"),
        0,
    )
    .await;
    assert!(status.starts_with("HTTP/1.1 413"), "{status} ({sent})");
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_bodies_are_capped_with_a_matrix_error() {
    let _one = MEMORY.lock().await;
    let mut srv = TestServer::start().await;
    let addr: SocketAddr = srv.base.strip_prefix("http://").unwrap().parse().unwrap();
    let mxc = srv.upload_bytes(random_bytes(10)).await;
    let (_, id) = parse_mxc(&mxc);
    let base = rss_bytes();
    let sampler = RssSampler::start();
    let mut failures = Vec::new();
    for path in [
        format!("/_matrix/media/unstable/admin/media/localhost/{id}/attributes"),
        format!("/_matrix/media/unstable/admin/quarantine/localhost/{id}"),
        "/_matrix/media/unstable/admin/purge/quarantined".to_owned(),
    ] {
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {SECRET}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        );
        let (status, sent, took) = stream_until_answered(addr, head, 256 * MIB).await;
        println!(
            "JSON body on {path}: {:?} after {} MiB, in {took:?}",
            status.chars().take(200).collect::<String>(),
            sent / MIB
        );
        if sent > 64 * MIB {
            failures.push(format!("{path}: {} MiB read before an answer", sent / MIB));
        }
        if !(status.starts_with("HTTP/1.1 413") && status.contains("\"errcode\":\"M_TOO_LARGE\"")) {
            failures.push(format!(
                "{path}: answered {status:?}, not 413 M_TOO_LARGE JSON"
            ));
        }
    }
    let grew = sampler.peak().saturating_sub(base);
    drop(sampler);
    println!("JSON bodies: RSS grew by {} MiB at most", grew / MIB);
    assert!(grew < 128 * MIB, "memory grew by {} MiB", grew / MIB);
    srv.stop().await;
    assert!(failures.is_empty(), "{failures:#?}");
}

// ---------------------------------------------------------------------------------------------
// CVE-2024-52791: remote JSON parsed without bounds
// ---------------------------------------------------------------------------------------------

/// A body of `prefix` then `x` forever (up to `limit` bytes), counting what was pulled.
fn endless(prefix: &'static str, limit: u64, pulled: Arc<AtomicU64>) -> Body {
    let chunk = bytes::Bytes::from(vec![b'x'; 64 * 1024]);
    let head = futures_util::stream::once(async move {
        Ok::<_, std::io::Error>(bytes::Bytes::from_static(prefix.as_bytes()))
    });
    let tail = futures_util::stream::unfold(0u64, move |sent| {
        let chunk = chunk.clone();
        let pulled = pulled.clone();
        async move {
            if sent >= limit {
                return None;
            }
            pulled.fetch_add(chunk.len() as u64, Ordering::SeqCst);
            Some((Ok::<_, std::io::Error>(chunk), sent + 64 * 1024))
        }
    });
    Body::from_stream(futures_util::StreamExt::chain(head, tail))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_json_is_capped_while_streaming() {
    let _one = MEMORY.lock().await;
    const OFFER: u64 = 256 * MIB;
    let error_json = Arc::new(AtomicU64::new(0));
    let keys_json = Arc::new(AtomicU64::new(0));
    let part_json = Arc::new(AtomicU64::new(0));
    let (e, k, p) = (error_json.clone(), keys_json.clone(), part_json.clone());
    let router = axum::Router::new()
        .route(
            "/_matrix/federation/v1/media/download/{id}",
            axum::routing::get(move |AxPath(id): AxPath<String>| {
                let (e, p) = (e.clone(), p.clone());
                async move {
                    if id == "multipartjson" {
                        (
                            [("content-type", "multipart/mixed; boundary=b")],
                            endless(
                                "--b\r\nContent-Type: application/json\r\n\r\n{\"a\":\"",
                                OFFER,
                                p,
                            ),
                        )
                            .into_response()
                    } else {
                        (
                            axum::http::StatusCode::NOT_FOUND,
                            [("content-type", "application/json")],
                            endless("{\"errcode\":\"M_UNRECOGNIZED\",\"error\":\"", OFFER, e),
                        )
                            .into_response()
                    }
                }
            }),
        )
        .route(
            "/_matrix/media/v3/download/{server}/{id}",
            axum::routing::get(|| async {
                (
                    axum::http::StatusCode::NOT_FOUND,
                    [("content-type", "application/json")],
                    r#"{"errcode":"M_NOT_FOUND","error":"no"}"#,
                )
            }),
        )
        .route(
            "/_matrix/key/v2/server",
            axum::routing::get(move || {
                let k = k.clone();
                async move {
                    (
                        [("content-type", "application/json")],
                        endless(
                            "{\"server_name\":\"huge.test\",\"old_verify_keys\":\"",
                            OFFER,
                            k,
                        ),
                    )
                }
            }),
        );
    let fake = serve(router).await;
    let mut srv = federating_server(
        &[
            ("huge.test", &fake),
            ("huge2.test", &fake),
            ("huge3.test", &fake),
        ],
        "",
    )
    .await;
    let base = rss_bytes();
    let sampler = RssSampler::start();

    let (status, code, took) = authed_download(&srv, "huge.test", "errorjson").await;
    println!(
        "remote JSON error body: {status} {code} in {took:?}, {} MiB pulled of {} MiB",
        error_json.load(Ordering::SeqCst) / MIB,
        OFFER / MIB
    );
    let (status2, code2, took2) = authed_download(&srv, "huge2.test", "multipartjson").await;
    println!(
        "remote multipart JSON part: {status2} {code2} in {took2:?}, {} MiB pulled",
        part_json.load(Ordering::SeqCst) / MIB
    );
    // An unsigned-looking X-Matrix request makes the server fetch the origin's keys.
    let t = Instant::now();
    let resp = srv
        .client
        .get(srv.url("/_matrix/federation/v1/media/download/abc"))
        .header(
            "Authorization",
            "X-Matrix origin=\"huge3.test\",destination=\"localhost\",key=\"ed25519:a\",sig=\"AAAA\"",
        )
        .send()
        .await
        .unwrap();
    let key_status = resp.status();
    let key_body = resp.text().await.unwrap();
    println!(
        "remote keys JSON: {key_status} in {:?}, {} MiB pulled: {}",
        t.elapsed(),
        keys_json.load(Ordering::SeqCst) / MIB,
        key_body.chars().take(150).collect::<String>()
    );
    let grew = sampler.peak().saturating_sub(base);
    drop(sampler);
    println!("remote JSON: RSS grew by {} MiB at most", grew / MIB);
    srv.stop().await;

    let mut failures = Vec::new();
    for (what, n) in [
        ("federation error JSON", &error_json),
        ("multipart JSON part", &part_json),
        ("server keys JSON", &keys_json),
    ] {
        let n = n.load(Ordering::SeqCst);
        if n > 32 * MIB {
            failures.push(format!(
                "{what}: {} MiB of an endless body were read",
                n / MIB
            ));
        }
    }
    if grew > 128 * MIB {
        failures.push(format!("memory grew by {} MiB", grew / MIB));
    }
    assert!(status < 500 || status == 502, "{status}");
    assert_eq!(key_status, StatusCode::UNAUTHORIZED, "{key_body}");
    assert!(failures.is_empty(), "{failures:#?}");
}

// ---------------------------------------------------------------------------------------------
// CVE-2024-37303: unauthenticated remote fetches
// ---------------------------------------------------------------------------------------------

/// A remote serving every media id as a small multipart answer, counting requests.
async fn counting_remote() -> (String, Arc<AtomicUsize>) {
    let hits = Arc::new(AtomicUsize::new(0));
    let h = hits.clone();
    let router = axum::Router::new().fallback(move || {
        let h = h.clone();
        async move {
            h.fetch_add(1, Ordering::SeqCst);
            (
                [("content-type", "multipart/mixed; boundary=b")],
                "--b\r\nContent-Type: application/json\r\n\r\n{}\r\n--b\r\nContent-Type: text/plain\r\n\r\nplanted content\r\n--b--\r\n",
            )
        }
    });
    (serve(router).await, hits)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unauthenticated_requests_never_fetch_remote_media() {
    let (remote, hits) = counting_remote().await;
    let mut srv = federating_server(&[("remote.test", &remote)], "").await;
    let mut unauthenticated = Vec::new();
    for path in [
        "/_matrix/media/v3/download/remote.test/plantedA",
        "/_matrix/media/r0/download/remote.test/plantedB/x.txt",
        "/_matrix/media/v3/thumbnail/remote.test/plantedC?width=32&height=32",
    ] {
        let resp = srv.client.get(srv.url(path)).send().await.unwrap();
        unauthenticated.push((path, resp.status().as_u16()));
    }
    let after_unauthenticated = hits.load(Ordering::SeqCst);
    // An authenticated request may fetch; the fetch records who asked.
    let (status, _, _) = authed_download(&srv, "remote.test", "plantedD").await;
    assert_eq!(status, 200);
    let after_authed = hits.load(Ordering::SeqCst);
    srv.stop().await;
    let cached = remote_cached(&srv.db_path());
    let actors: Vec<(String, String)> = cached
        .iter()
        .map(|e| match &e.event {
            Event::RemoteMediaCachedV1(c) => (c.media.to_string(), e.actor.to_string()),
            _ => unreachable!(),
        })
        .collect();
    println!(
        "unauthenticated: answers {unauthenticated:?}, remote requests {after_unauthenticated} before the authenticated one, {after_authed} after; cached {actors:?}"
    );
    let authed = actors
        .iter()
        .find(|(m, _)| m.ends_with("/plantedD"))
        .expect("the authenticated fetch was recorded");
    assert_eq!(authed.1, "@alice:localhost", "who asked is recorded");
    assert_eq!(
        after_unauthenticated, 0,
        "unauthenticated legacy requests made the server fetch remote media: {actors:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// CVE-2022-31052, GHSA-98px-6486-j7qc: URL previews
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn url_previews_never_reach_private_addresses() {
    let s = sentinel().await;
    let mut srv = TestServer::start().await;
    let target = format!("http%3A%2F%2F127.0.0.1%3A{}%2F", s.port);
    for prefix in [
        "/_matrix/media/v3",
        "/_matrix/media/r0",
        "/_matrix/client/v1/media",
    ] {
        let resp = srv
            .client
            .get(srv.url(&format!("{prefix}/preview_url?url={target}&ts=0")))
            .bearer_auth(ALICE)
            .send()
            .await
            .unwrap();
        // The default config allows no private range: refused before any connection.
        expect_error(resp, StatusCode::FORBIDDEN, "M_FORBIDDEN").await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(s.hits(), 0);
    srv.stop().await;
}

// ---------------------------------------------------------------------------------------------
// CVE-2021-21273: every outbound fetch obeys the address rule (here: signature keys)
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signature_key_fetches_obey_the_address_rule() {
    let s = sentinel().await;
    let mut srv = federating_server(&[], "").await;
    let key = SigningKey::from_seed("a", [9; 32]).unwrap();
    let path = "/_matrix/federation/v1/media/download/abc";
    let p = s.port;
    let mut answers = Vec::new();
    for origin in [
        format!("127.0.0.1:{p}"),
        format!("localhost:{p}"),
        format!("[::1]:{p}"),
        format!("[::ffff:127.0.0.1]:{p}"),
        format!("0.0.0.0:{p}"),
        format!("127.1:{p}"),
    ] {
        let auth = xmatrix::authorization(&key, &origin, "localhost", "GET", path, None).unwrap();
        let resp = srv
            .client
            .get(srv.url(path))
            .header("Authorization", auth)
            .send()
            .await
            .unwrap();
        let status = resp.status();
        let body = resp.text().await.unwrap();
        answers.push(format!("{origin}: {status} {body}"));
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{origin}: {body}");
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    println!("key fetches: {answers:#?}");
    assert_eq!(s.hits(), 0, "a key fetch reached the private listener");
    srv.stop().await;
}

// ---------------------------------------------------------------------------------------------
// SSRF and CVE-2021-21392
// ---------------------------------------------------------------------------------------------

/// Downloads `mxc://{server}/{id}` for each server; returns the answers.
async fn try_servers(srv: &TestServer, servers: &[String]) -> Vec<(String, u16, String, Duration)> {
    let mut out = Vec::new();
    for (i, server) in servers.iter().enumerate() {
        let (status, code, took) = authed_download(srv, server, &format!("ssrf{i}")).await;
        out.push((server.clone(), status, code, took));
    }
    out
}

fn refused(answers: &[(String, u16, String, Duration)]) -> Vec<String> {
    answers
        .iter()
        .filter(|(_, s, c, _)| !(*s == 403 && c == "M_FORBIDDEN"))
        .map(|(srv, s, c, took)| {
            format!("{srv}: {s} {c} after {took:?} (expected 403 M_FORBIDDEN)")
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssrf_names_resolving_to_private_addresses_are_refused() {
    let s = sentinel().await;
    let mut srv = federating_server(&[], "").await;
    let p = s.port;
    let servers: Vec<String> = [
        "localhost",
        "LOCALHOST",
        "127.0.0.1",
        "127.1",
        "127.0.0.2",
        "2130706433",
        "0x7f.1",
        "0.0.0.0",
        "0",
        "[::1]",
        "[0:0:0:0:0:0:0:1]",
        "10.0.0.1",
        "172.16.0.1",
        "192.168.1.1",
        "169.254.169.254",
        "100.64.0.1",
        "[fe80::1]",
        "[fd00::1]",
        "[::]",
    ]
    .iter()
    .map(|h| format!("{h}:{p}"))
    .collect();
    let answers = try_servers(&srv, &servers).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    for a in &answers {
        println!("ssrf private: {a:?}");
    }
    let bad = refused(&answers);
    assert_eq!(
        s.hits(),
        0,
        "a fetch reached the private listener: {answers:#?}"
    );
    srv.stop().await;
    assert!(remote_cached(&srv.db_path()).is_empty());
    assert!(bad.is_empty(), "{bad:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssrf_ipv4_mapped_compatible_and_6to4_forms_are_refused() {
    let s = sentinel().await;
    let mut srv = federating_server(&[], "").await;
    let p = s.port;
    let servers: Vec<String> = [
        "[::ffff:127.0.0.1]",
        "[::ffff:7f00:1]",
        "[0:0:0:0:0:ffff:127.0.0.1]",
        "[::FFFF:127.0.0.1]",
        "[::ffff:10.0.0.1]",
        "[::ffff:169.254.169.254]",
        "[::ffff:0.0.0.0]",
        "[::127.0.0.1]",
        "[2002:7f00:1::]",
        "[2002:a9fe:a9fe::1]",
        "[2002:c0a8:101::]",
    ]
    .iter()
    .map(|h| format!("{h}:{p}"))
    .collect();
    let answers = try_servers(&srv, &servers).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    for a in &answers {
        println!("ssrf transition forms: {a:?}");
    }
    let bad = refused(&answers);
    assert_eq!(
        s.hits(),
        0,
        "a fetch reached the private listener: {answers:#?}"
    );
    srv.stop().await;
    assert!(remote_cached(&srv.db_path()).is_empty());
    assert!(bad.is_empty(), "{bad:#?}");
}

/// The ranges reliability.md §4.2/§4.3 lists beyond loopback and RFC 1918: NAT64 of private
/// addresses, documentation, benchmarking, reserved, multicast, 6to4 relay, site-local.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssrf_nat64_documentation_and_reserved_ranges_are_refused() {
    let mut srv = federating_server(&[], "").await;
    let servers: Vec<String> = [
        "[64:ff9b::7f00:1]",
        "[64:ff9b::a00:1]",
        "[64:ff9b::a9fe:a9fe]",
        "[64:ff9b:1::a00:1]",
        "192.0.0.8",
        "192.0.2.1",
        "198.51.100.1",
        "203.0.113.1",
        "198.18.0.1",
        "192.88.99.1",
        "224.0.0.1",
        "239.255.255.250",
        "240.0.0.1",
        "255.255.255.255",
        "[2001:db8::1]",
        "[ff02::1]",
        "[fec0::1]",
        "[100::1]",
    ]
    .iter()
    .map(|h| format!("{h}:8448"))
    .collect();
    let answers = try_servers(&srv, &servers).await;
    for a in &answers {
        println!("ssrf reserved: {a:?}");
    }
    srv.stop().await;
    assert!(remote_cached(&srv.db_path()).is_empty());
    let bad = refused(&answers);
    assert!(bad.is_empty(), "not refused by the address rule: {bad:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssrf_redirects_to_private_addresses_are_refused() {
    let s = sentinel().await;
    let p = s.port;
    // The redirecting remote (pinned: it is on loopback); where it points is not.
    let router = axum::Router::new()
        .route(
            "/_matrix/federation/v1/media/download/{id}",
            axum::routing::get(move |AxPath(id): AxPath<String>| async move {
                let location = match id.as_str() {
                    "loopback" => format!("http://127.0.0.1:{p}/media"),
                    "localhost" => format!("http://localhost:{p}/media"),
                    "mapped" => format!("http://[::ffff:127.0.0.1]:{p}/media"),
                    "zero" => format!("http://0.0.0.0:{p}/media"),
                    "userinfo" => format!("http://user:pass@127.0.0.1:{p}/media"),
                    "v6" => format!("https://[::1]:{p}/media"),
                    "file" => "file:///etc/passwd".to_owned(),
                    "http302" | "legacy302" => {
                        if id == "legacy302" {
                            return (
                                axum::http::StatusCode::NOT_FOUND,
                                [("content-type", "application/json")],
                                r#"{"errcode":"M_UNRECOGNIZED","error":"no"}"#,
                            )
                                .into_response();
                        }
                        return (
                            axum::http::StatusCode::FOUND,
                            [("location", format!("http://127.0.0.1:{p}/media"))],
                            "",
                        )
                            .into_response();
                    }
                    _ => return axum::http::StatusCode::NOT_FOUND.into_response(),
                };
                (
                    [("content-type", "multipart/mixed; boundary=b")],
                    format!(
                        "--b\r\nContent-Type: application/json\r\n\r\n{{}}\r\n--b\r\nLocation: {location}\r\n\r\n\r\n--b--\r\n"
                    ),
                )
                    .into_response()
            }),
        )
        .route(
            "/_matrix/media/v3/download/{server}/{id}",
            axum::routing::get(move || async move {
                (
                    axum::http::StatusCode::FOUND,
                    [("location", format!("http://127.0.0.1:{p}/legacy"))],
                    "",
                )
            }),
        );
    let fake = serve(router).await;
    let cases = [
        "loopback",
        "localhost",
        "mapped",
        "zero",
        "userinfo",
        "v6",
        "file",
        "http302",
        "legacy302",
    ];
    // One pinned name per case: a failing remote is backed off, which would hide later cases.
    let names: Vec<String> = cases.iter().map(|c| format!("{c}.redir.test")).collect();
    let pins: Vec<(&str, &str)> = names.iter().map(|n| (n.as_str(), fake.as_str())).collect();
    let mut srv = federating_server(&pins, "").await;
    let mut answers = Vec::new();
    for (case, name) in cases.iter().zip(&names) {
        let (status, code, took) = authed_download(&srv, name, case).await;
        answers.push(format!("{case}: {status} {code} in {took:?}"));
        assert_ne!(status, 200, "{case}: the redirect was followed");
        if ["loopback", "localhost", "mapped", "zero", "userinfo", "v6"].contains(case) {
            assert_eq!(
                (status, code.as_str()),
                (403, "M_FORBIDDEN"),
                "{case}: a Location to a private address"
            );
        }
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    println!("redirects: {answers:#?}");
    assert_eq!(s.hits(), 0, "a redirect reached the private listener");
    srv.stop().await;
    assert!(remote_cached(&srv.db_path()).is_empty());
}

// ---------------------------------------------------------------------------------------------
// Tokens never in logs; request ids are (the real binary)
// ---------------------------------------------------------------------------------------------

/// Notes the `X-Request-Id` and status of an answer.
fn record(
    what: &'static str,
    resp: &reqwest::Response,
    ids: &mut Vec<(&'static str, String, u16)>,
) {
    let id = resp
        .headers()
        .get("x-request-id")
        .unwrap_or_else(|| panic!("{what}: no X-Request-Id"))
        .to_str()
        .unwrap()
        .to_owned();
    ids.push((what, id, resp.status().as_u16()));
}

/// A `media-ledger serve` child process, killed when dropped.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_never_reach_the_logs_and_request_ids_do() {
    let bin = env!("CARGO_BIN_EXE_media-ledger");
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = common::config_text(
        dir.path(),
        &Opts {
            bind: Some(format!("127.0.0.1:{port}")),
            ..Opts::default()
        },
    );
    let config_path = dir.path().join("config.toml");
    std::fs::write(&config_path, &config).unwrap();
    let stderr_path = dir.path().join("stderr.log");
    let stdout_path = dir.path().join("stdout.log");
    let child = std::process::Command::new(bin)
        .args(["serve", "--config"])
        .arg(&config_path)
        .env("RUST_LOG", "debug")
        .env("LOG_FORMAT", "json")
        .stderr(std::fs::File::create(&stderr_path).unwrap())
        .stdout(std::fs::File::create(&stdout_path).unwrap())
        .spawn()
        .unwrap();
    let mut child = Child(child);
    let base = format!("http://127.0.0.1:{port}");
    let client = common::client();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if client.get(format!("{base}/metrics")).send().await.is_ok() {
            break;
        }
        assert!(Instant::now() < deadline, "the server did not start");
        assert!(child.0.try_wait().unwrap().is_none(), "the server exited");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    const FORGED: &str = "forged-token-value-9f8e7d";
    let mut ids: Vec<(&'static str, String, u16)> = Vec::new();
    // Uploads with the token in the query and in the header, by the shared secret and alice.
    let resp = client
        .post(format!(
            "{base}/_matrix/media/v3/upload?filename=a.txt&access_token={SECRET}"
        ))
        .body("uploaded with the secret in the query")
        .send()
        .await
        .unwrap();
    record("upload ?access_token=SECRET", &resp, &mut ids);
    let v: Value = resp.json().await.unwrap();
    let mxc1 = v["content_uri"].as_str().unwrap().to_owned();
    let resp = client
        .post(format!("{base}/_matrix/media/v3/upload?filename=b.txt"))
        .bearer_auth(ALICE)
        .body("uploaded with a bearer token")
        .send()
        .await
        .unwrap();
    record("upload Bearer ALICE", &resp, &mut ids);
    let v: Value = resp.json().await.unwrap();
    let mxc2 = v["content_uri"].as_str().unwrap().to_owned();
    let (_, id1) = parse_mxc(&mxc1);
    let (_, id2) = parse_mxc(&mxc2);
    for (what, req) in [
        (
            "download ?access_token=SECRET",
            client.get(format!(
                "{base}/_matrix/client/v1/media/download/localhost/{id1}?access_token={SECRET}"
            )),
        ),
        (
            "download Bearer SECRET",
            client
                .get(format!("{base}/_matrix/client/v1/media/download/localhost/{id2}"))
                .bearer_auth(SECRET),
        ),
        (
            "forged ?access_token",
            client.get(format!(
                "{base}/_matrix/client/v1/media/download/localhost/{id1}?access_token={FORGED}"
            )),
        ),
        (
            "forged Bearer",
            client
                .get(format!("{base}/_matrix/client/v1/media/download/localhost/{id1}"))
                .bearer_auth(FORGED),
        ),
        (
            "bad query with the secret",
            client.get(format!(
                "{base}/_matrix/client/v1/media/thumbnail/localhost/{id1}?width=x&access_token={SECRET}"
            )),
        ),
        (
            "size estimate Bearer SECRET",
            client
                .get(format!(
                    "{base}/_matrix/media/unstable/admin/datastores/files/size_estimate?before_ts=1"
                ))
                .bearer_auth(SECRET),
        ),
        (
            "wrong method with the secret",
            client
                .delete(format!("{base}/_matrix/media/v3/upload?access_token={SECRET}"))
                .bearer_auth(SECRET),
        ),
        (
            "quarantine ?access_token=ADMIN",
            client.post(format!(
                "{base}/_matrix/media/unstable/admin/quarantine/localhost/{id2}?reason=log%20test&access_token={ADMIN}"
            )),
        ),
    ] {
        let resp = req.send().await.unwrap();
        record(what, &resp, &mut ids);
        let _ = resp.bytes().await;
    }
    // Stop it (SIGTERM: graceful, the logs flushed).
    let pid = child.0.id().to_string();
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status();
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.0.try_wait().unwrap().is_none() {
        assert!(
            Instant::now() < deadline,
            "the server did not stop on SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let stderr = std::fs::read_to_string(&stderr_path).unwrap();
    let stdout = std::fs::read_to_string(&stdout_path).unwrap();
    let lines: Vec<&str> = stderr.lines().collect();
    println!(
        "logs: {} stderr lines ({} bytes), {} stdout bytes",
        lines.len(),
        stderr.len(),
        stdout.len()
    );
    for l in &lines {
        assert!(
            serde_json::from_str::<Value>(l).is_ok(),
            "LOG_FORMAT=json wrote a line that is not JSON: {l}"
        );
    }
    for secret in [SECRET, ALICE, ADMIN, FORGED] {
        for (name, text) in [("stderr", &stderr), ("stdout", &stdout)] {
            let hit = text.lines().find(|l| l.contains(secret));
            assert!(
                hit.is_none(),
                "token {secret:?} in {name}: {}",
                hit.unwrap_or_default()
            );
        }
    }

    // The events, as `media-ledger events` prints them.
    let out = std::process::Command::new(bin)
        .args(["events", "--config"])
        .arg(&config_path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let events_text = String::from_utf8(out.stdout).unwrap();
    for secret in [SECRET, ALICE, ADMIN, FORGED] {
        assert!(
            !events_text.contains(secret),
            "token {secret:?} in the events"
        );
    }
    let events: Vec<Value> = events_text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let mut report = Vec::new();
    let mut missing = Vec::new();
    for (what, id, status) in &ids {
        let in_logs = lines
            .iter()
            .filter(|l| l.contains(&format!("\"request_id\":\"{id}\"")))
            .count();
        let event_types: Vec<&str> = events
            .iter()
            .filter(|e| e["request_id"] == id.as_str())
            .map(|e| e["type"].as_str().unwrap_or_default())
            .collect();
        report.push(format!(
            "{what}: {status} X-Request-Id {id}: {in_logs} log lines, events {event_types:?}"
        ));
        let must_log =
            what.starts_with("upload") || what.starts_with("quarantine") || *status >= 400;
        if must_log && in_logs == 0 {
            missing.push(format!("{what} ({id}): not in the logs"));
        }
        let must_record = what.starts_with("upload") || what.starts_with("quarantine");
        if must_record && event_types.is_empty() {
            missing.push(format!("{what} ({id}): no event carries it"));
        }
    }
    println!("request ids:\n  {}", report.join("\n  "));
    assert!(missing.is_empty(), "{missing:#?}");
    // Uploads are recorded under their request's id, with the uploader as actor.
    let uploads: Vec<&Value> = events
        .iter()
        .filter(|e| {
            e["type"]
                .as_str()
                .unwrap_or_default()
                .starts_with("media.uploaded")
        })
        .collect();
    assert_eq!(uploads.len(), 2, "{events_text}");
    assert_eq!(uploads[0]["request_id"], ids[0].1.as_str());
    assert_eq!(uploads[1]["request_id"], ids[1].1.as_str());
    assert_eq!(uploads[1]["actor"], "@alice:localhost");
}
