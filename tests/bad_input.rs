#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Hostile HTTP input against an in-process server, over raw TCP (so `../`, backslashes,
//! NUL and invalid UTF-8 reach the server as written, not as a URL library rewrites them).
//!
//! `hostile_requests_get_matrix_errors_never_5xx` sends a fixed catalogue (every route with
//! every wrong method, every token variant, traversal and overlong values in every path
//! parameter, bad numbers for `before_ts` / `timeout_ms` / `width` / `height`, bad JSON
//! bodies, oversize bodies), then `BAD_INPUT_REQUESTS` (default 1000) seeded random
//! combinations of all of these (the seed is printed; `BAD_INPUT_SEED` replays one). Every answer must be
//! 2xx (valid input) or 4xx with a Matrix error body `{"errcode": "M_…", "error": "…"}`,
//! within a per-request timeout; requests that are not valid HTTP at all (raw NUL, a 100 KB
//! URI, a bad `Content-Length`) may also get hyper's bare 4xx or a closed connection, but
//! never a 5xx or a hang. Afterwards the server still serves an upload and its download,
//! and the datastore holds nothing but content-addressed blobs.
//!
//! Also: `concurrent_snapshots_are_all_answered_without_5xx` (valid admin input, in
//! parallel), `huge_timeout_on_a_pending_media_is_capped` (`timeout_ms` = u64::MAX on a
//! pending async media waits `max_timeout_ms`, then the spec's 504 `M_NOT_YET_UPLOADED`).
//!
//! Slow clients: `slow_clients_do_not_block_others` holds `SLOWLORIS_CONNECTIONS` (16) of
//! each slowloris kind (partial headers, a stalled body, a stalled chunked body, a stalled
//! JSON body, a silent connection) for `SLOWLORIS_SECS` (3) while normal uploads and
//! downloads must keep succeeding promptly, and reports what became of the slow ones;
//! `a_slow_client_does_not_keep_the_server_from_stopping` checks that graceful shutdown
//! finishes within `SLOWLORIS_STOP_SECS` (3) with one slow client of each kind connected.

use crate::common;

use common::{random_bytes, Opts, TestServer, ADMIN, ALICE, BOB, SECRET};
use futures_util::StreamExt;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::Value;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Longest any single answer may take.
const PER_REQUEST: Duration = Duration::from_secs(15);
/// `uploads.max_bytes` of the server under test.
const MAX_BYTES: usize = 8192;

// ---------------------------------------------------------------------------------------------
// A raw HTTP/1.1 client
// ---------------------------------------------------------------------------------------------

/// What a request carries after its head.
#[derive(Clone, Debug)]
enum Body {
    None,
    /// Sent with a matching `Content-Length` (unless the request sets one itself).
    Bytes(Vec<u8>),
    /// `Transfer-Encoding: chunked`, these chunks.
    Chunked(Vec<Vec<u8>>),
}

/// One request as bytes on the wire.
#[derive(Clone, Debug)]
struct Req {
    /// Which family of hostile input this is (for the tallies).
    kind: &'static str,
    method: String,
    /// The request target exactly as sent.
    target: Vec<u8>,
    headers: Vec<(String, Vec<u8>)>,
    body: Body,
    /// Not valid HTTP: hyper's own bare 4xx or a closed connection are acceptable too.
    protocol: bool,
}

impl Req {
    fn new(kind: &'static str, method: &str, target: impl Into<Vec<u8>>) -> Self {
        Self {
            kind,
            method: method.to_owned(),
            target: target.into(),
            headers: Vec::new(),
            body: Body::None,
            protocol: false,
        }
    }

    fn header(mut self, name: &str, value: impl Into<Vec<u8>>) -> Self {
        self.headers.push((name.to_owned(), value.into()));
        self
    }

    fn bearer(self, token: &str) -> Self {
        self.header("Authorization", format!("Bearer {token}"))
    }

    fn body(mut self, b: Body) -> Self {
        self.body = b;
        self
    }

    fn protocol(mut self) -> Self {
        self.protocol = true;
        self
    }

    fn wire(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(self.method.as_bytes());
        out.push(b' ');
        out.extend_from_slice(&self.target);
        out.extend_from_slice(b" HTTP/1.1\r\n");
        let has = |n: &str| self.headers.iter().any(|(k, _)| k.eq_ignore_ascii_case(n));
        if !has("host") {
            out.extend_from_slice(b"Host: localhost\r\n");
        }
        out.extend_from_slice(b"Connection: close\r\n");
        for (k, v) in &self.headers {
            out.extend_from_slice(k.as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(v);
            out.extend_from_slice(b"\r\n");
        }
        match &self.body {
            Body::None => out.extend_from_slice(b"\r\n"),
            Body::Bytes(b) => {
                if !has("content-length") && !has("transfer-encoding") {
                    out.extend_from_slice(format!("Content-Length: {}\r\n", b.len()).as_bytes());
                }
                out.extend_from_slice(b"\r\n");
                out.extend_from_slice(b);
            }
            Body::Chunked(chunks) => {
                out.extend_from_slice(b"Transfer-Encoding: chunked\r\n\r\n");
                for c in chunks {
                    out.extend_from_slice(format!("{:x}\r\n", c.len()).as_bytes());
                    out.extend_from_slice(c);
                    out.extend_from_slice(b"\r\n");
                }
                out.extend_from_slice(b"0\r\n\r\n");
            }
        }
        out
    }

    /// A short printable description.
    fn describe(&self) -> String {
        let target = String::from_utf8_lossy(&self.target);
        let target: String = target.chars().take(160).collect();
        let auth = self
            .headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("authorization"))
            .map(|(_, v)| {
                String::from_utf8_lossy(v)
                    .chars()
                    .take(40)
                    .collect::<String>()
            });
        let body = match &self.body {
            Body::None => String::new(),
            Body::Bytes(b) => format!(
                " body[{}]={:?}",
                b.len(),
                String::from_utf8_lossy(&b[..b.len().min(40)])
            ),
            Body::Chunked(c) => format!(" chunked[{}]", c.iter().map(Vec::len).sum::<usize>()),
        };
        format!(
            "[{}] {} {target} auth={auth:?}{body}",
            self.kind, self.method
        )
    }
}

/// A parsed answer.
#[derive(Debug)]
struct Resp {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Resp {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// How a request ended.
#[derive(Debug)]
enum Outcome {
    Answer(Resp),
    /// The server closed (or reset) the connection without a complete answer.
    Closed(String),
    /// No complete answer within [`PER_REQUEST`].
    TimedOut,
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Decodes a chunked body; `None` while incomplete.
fn dechunk(mut b: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line = find(b, b"\r\n")?;
        let size_text = std::str::from_utf8(&b[..line]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        b = &b[line + 2..];
        if size == 0 {
            return Some(out);
        }
        if b.len() < size + 2 {
            return None;
        }
        out.extend_from_slice(&b[..size]);
        b = &b[size + 2..];
    }
}

/// The answer in `buf`, if it is complete (`eof`: the server closed).
fn parse(buf: &[u8], head_request: bool, eof: bool) -> Option<Resp> {
    let end = find(buf, b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    let mut lines = head.split("\r\n");
    let status_line = lines.next()?;
    let status: u16 = status_line.split(' ').nth(1)?.parse().ok()?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let rest = &buf[end + 4..];
    let get = |n: &str| headers.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
    let body = if head_request || status == 204 || status == 304 || (100..200).contains(&status) {
        Vec::new()
    } else if get("transfer-encoding").is_some_and(|t| t.contains("chunked")) {
        dechunk(rest)?
    } else if let Some(len) = get("content-length").and_then(|l| l.parse::<usize>().ok()) {
        if rest.len() < len {
            return None;
        }
        rest[..len].to_vec()
    } else if eof {
        rest.to_vec()
    } else {
        return None;
    };
    Some(Resp {
        status,
        headers,
        body,
    })
}

/// Sends `req` on a fresh connection and reads one answer.
async fn send(addr: SocketAddr, req: &Req) -> Outcome {
    let wire = req.wire();
    let head_request = req.method == "HEAD";
    let run = async {
        let stream = match TcpStream::connect(addr).await {
            Ok(s) => s,
            Err(e) => return Outcome::Closed(format!("connect: {e}")),
        };
        let (mut rd, mut wr) = stream.into_split();
        // Written beside the reading: a server that answers before reading everything must
        // not deadlock us. The write half stays open (a half-close could abort the request).
        let writer = tokio::spawn(async move {
            let _ = wr.write_all(&wire).await;
            let _ = wr.flush().await;
            wr
        });
        let mut buf = Vec::new();
        let mut chunk = vec![0u8; 64 * 1024];
        let outcome = loop {
            match rd.read(&mut chunk).await {
                Ok(0) => {
                    break match parse(&buf, head_request, true) {
                        Some(r) => Outcome::Answer(r),
                        None => Outcome::Closed(format!("closed after {} bytes", buf.len())),
                    }
                }
                Ok(n) => {
                    buf.extend_from_slice(&chunk[..n]);
                    if let Some(r) = parse(&buf, head_request, false) {
                        break Outcome::Answer(r);
                    }
                }
                Err(e) => {
                    break match parse(&buf, head_request, true) {
                        Some(r) => Outcome::Answer(r),
                        None => Outcome::Closed(format!("{e} after {} bytes", buf.len())),
                    }
                }
            }
        };
        writer.abort();
        outcome
    };
    tokio::time::timeout(PER_REQUEST, run)
        .await
        .unwrap_or(Outcome::TimedOut)
}

// ---------------------------------------------------------------------------------------------
// Judging answers
// ---------------------------------------------------------------------------------------------

/// Why an answer breaks the rules, if it does.
fn judge(req: &Req, out: &Outcome) -> Option<String> {
    match out {
        Outcome::TimedOut => Some(format!("no answer within {PER_REQUEST:?}")),
        Outcome::Closed(_) if req.protocol => None,
        Outcome::Closed(why) => Some(format!("connection closed without an answer: {why}")),
        Outcome::Answer(r) => judge_answer(req, r),
    }
}

fn judge_answer(req: &Req, r: &Resp) -> Option<String> {
    let s = r.status;
    if s >= 500 {
        return Some(format!("{s} {}", snippet(&r.body)));
    }
    if !(200..300).contains(&s) && !(400..500).contains(&s) {
        return Some(format!("status {s} is neither 2xx nor 4xx"));
    }
    if (200..300).contains(&s) {
        return None;
    }
    let ct = r.header("content-type").unwrap_or_default();
    if req.protocol && !ct.starts_with("application/json") {
        // hyper's own answer to something that is not HTTP: a bare 4xx.
        return None;
    }
    if !ct.starts_with("application/json") {
        return Some(format!(
            "{s} with content-type {ct:?}, not a Matrix error: {}",
            snippet(&r.body)
        ));
    }
    if req.method == "HEAD" {
        return None;
    }
    let v: Value = match serde_json::from_slice(&r.body) {
        Ok(v) => v,
        Err(e) => return Some(format!("{s} body is not JSON ({e}): {}", snippet(&r.body))),
    };
    let errcode_ok = v["errcode"].as_str().is_some_and(|e| e.starts_with("M_"));
    if !errcode_ok || !v["error"].is_string() {
        return Some(format!("{s} body is not a Matrix error: {v}"));
    }
    None
}

fn snippet(b: &[u8]) -> String {
    String::from_utf8_lossy(&b[..b.len().min(200)]).into_owned()
}

/// The tallies of a run.
#[derive(Default)]
struct Tally {
    requests: usize,
    by_status: BTreeMap<String, usize>,
    by_kind: BTreeMap<&'static str, usize>,
    errcodes: BTreeMap<String, usize>,
    /// (kind, what went wrong) → (count, one example request).
    violations: BTreeMap<(String, String), (usize, String)>,
    slowest: Duration,
}

impl Tally {
    fn add(&mut self, req: &Req, out: &Outcome, took: Duration) {
        self.requests += 1;
        *self.by_kind.entry(req.kind).or_default() += 1;
        self.slowest = self.slowest.max(took);
        let status = match out {
            Outcome::Answer(r) => {
                if let Ok(v) = serde_json::from_slice::<Value>(&r.body) {
                    if let Some(e) = v["errcode"].as_str() {
                        *self.errcodes.entry(e.to_owned()).or_default() += 1;
                    }
                }
                r.status.to_string()
            }
            Outcome::Closed(_) => "closed".to_owned(),
            Outcome::TimedOut => "timeout".to_owned(),
        };
        *self.by_status.entry(status).or_default() += 1;
        if let Some(why) = judge(req, out) {
            // Group by the violation's first words so one bug is one line.
            let key: String = why.chars().take(90).collect();
            let e = self
                .violations
                .entry((req.kind.to_owned(), key))
                .or_insert((0, req.describe()));
            e.0 += 1;
        }
    }

    fn fivexx(&self) -> usize {
        self.by_status
            .iter()
            .filter(|(s, _)| s.starts_with('5'))
            .map(|(_, n)| n)
            .sum()
    }

    fn print(&self, seed: u64, elapsed: Duration) {
        println!("bad input: seed {seed} (BAD_INPUT_SEED={seed} replays it)");
        println!(
            "bad input: {} requests in {elapsed:.1?}, slowest answer {:.1?}",
            self.requests, self.slowest
        );
        println!("bad input: answers per status: {:?}", self.by_status);
        println!("bad input: requests per kind: {:?}", self.by_kind);
        println!("bad input: errcodes: {:?}", self.errcodes);
        println!("bad input: 5xx answers: {}", self.fivexx());
        for ((kind, why), (n, example)) in &self.violations {
            println!("VIOLATION x{n} [{kind}] {why}\n    e.g. {example}");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// What to send
// ---------------------------------------------------------------------------------------------

/// The fixtures the requests point at.
struct Fixtures {
    /// A text media (downloads).
    text_id: String,
    /// A 40×40 PNG (thumbnails).
    png_id: String,
    /// Media only moderation requests may touch (never downloaded by this suite).
    victims: Vec<String>,
}

/// One route of the router (src/http/mod.rs) with the methods it takes.
struct Route {
    template: &'static str,
    methods: &'static [&'static str],
    /// Takes a JSON body (`reason`, `purpose`).
    json_body: bool,
    /// A moderation route that acts when called by an admin with valid input.
    destructive: bool,
}

const GET: &[&str] = &["GET", "HEAD"];
const POST: &[&str] = &["POST"];
const PUT: &[&str] = &["PUT"];
const GET_POST: &[&str] = &["GET", "HEAD", "POST"];

const fn r(template: &'static str, methods: &'static [&'static str]) -> Route {
    Route {
        template,
        methods,
        json_body: false,
        destructive: false,
    }
}

const fn m(template: &'static str, methods: &'static [&'static str], destructive: bool) -> Route {
    Route {
        template,
        methods,
        json_body: true,
        destructive,
    }
}

/// Every route of the router, `{v}` standing for r0 and v3.
const ROUTES: &[Route] = &[
    r("/_matrix/media/{v}/upload", POST),
    r("/_matrix/media/{v}/upload/{server}/{media_id}", PUT),
    r("/_matrix/media/{v}/download/{server}/{media_id}", GET),
    r(
        "/_matrix/media/{v}/download/{server}/{media_id}/{filename}",
        GET,
    ),
    r("/_matrix/media/{v}/config", GET),
    r("/_matrix/media/{v}/thumbnail/{server}/{media_id}", GET),
    r("/_matrix/media/v1/create", POST),
    r("/_matrix/client/v1/media/download/{server}/{media_id}", GET),
    r(
        "/_matrix/client/v1/media/download/{server}/{media_id}/{filename}",
        GET,
    ),
    r("/_matrix/client/v1/media/config", GET),
    r(
        "/_matrix/client/v1/media/thumbnail/{server}/{media_id}",
        GET,
    ),
    r("/_matrix/key/v2/server", GET),
    r("/_matrix/federation/v1/media/download/{media_id}", GET),
    r("/_matrix/federation/v1/media/thumbnail/{media_id}", GET),
    r("/_matrix/media/unstable/admin/datastores", GET),
    r(
        "/_matrix/media/unstable/admin/datastores/{ds}/size_estimate",
        GET,
    ),
    r(
        "/_matrix/media/unstable/admin/datastores/{ds}/transfer_to/{ds2}",
        POST,
    ),
    r("/_matrix/media/unstable/admin/tasks/all", GET),
    r("/_matrix/media/unstable/admin/tasks/unfinished", GET),
    r("/_matrix/media/unstable/admin/tasks/{task}", GET),
    r("/_matrix/media/unstable/admin/snapshot", POST),
    m(
        "/_matrix/media/unstable/admin/quarantine/user/{user}",
        POST,
        false,
    ),
    m(
        "/_matrix/media/unstable/admin/quarantine/server/{server}",
        POST,
        false,
    ),
    m(
        "/_matrix/media/unstable/admin/quarantine/room/{room}",
        POST,
        false,
    ),
    m(
        "/_matrix/media/unstable/admin/quarantine/{server}/{media_id}",
        POST,
        false,
    ),
    m(
        "/_matrix/media/unstable/admin/unquarantine/{server}/{media_id}",
        POST,
        false,
    ),
    m(
        "/_matrix/media/unstable/admin/media/{server}/{media_id}/attributes",
        GET_POST,
        false,
    ),
    m(
        "/_matrix/media/unstable/admin/media/{server}/{media_id}/attributes/set",
        POST,
        false,
    ),
    r(
        "/_matrix/media/unstable/admin/media/{server}/{media_id}/history",
        GET,
    ),
    m("/_matrix/media/unstable/admin/purge/remote", POST, true),
    m("/_matrix/media/unstable/admin/purge_remote", POST, true),
    m(
        "/_matrix/media/unstable/admin/purge/quarantined",
        POST,
        true,
    ),
    m("/_matrix/media/unstable/admin/purge/old", POST, true),
    m(
        "/_matrix/media/unstable/admin/purge/user/{user}",
        POST,
        true,
    ),
    m(
        "/_matrix/media/unstable/admin/purge/server/{server}",
        POST,
        true,
    ),
    m(
        "/_matrix/media/unstable/admin/purge/room/{room}",
        POST,
        true,
    ),
    m(
        "/_matrix/media/unstable/admin/purge/{server}/{media_id}",
        POST,
        true,
    ),
    r("/_matrix/media/unstable/admin/audit", GET),
    r("/_matrix/media/unstable/admin/usage/{server}", GET),
    r("/_matrix/media/unstable/admin/usage/{server}/users", GET),
    r("/_matrix/media/unstable/admin/usage/{server}/uploads", GET),
    r("/metrics", GET),
];

/// Methods tried on routes that do not take them.
const OTHER_METHODS: &[&str] = &[
    "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "TRACE", "PURGE",
];

/// Path segments (already as sent) that try to escape, confuse or overflow.
fn hostile_segments() -> Vec<String> {
    let mut v: Vec<String> = [
        "..",
        ".",
        "%2e%2e",
        "%2E%2E",
        "%2e",
        "..%2f..%2f..%2fetc%2fpasswd",
        "%2e%2e%2f%2e%2e%2fetc%2fpasswd",
        "%2fetc%2fpasswd",
        "..%5c..%5cwindows%5cwin.ini",
        "%5c",
        "a%00b",
        "%00",
        "%00..%2f",
        "....%2f%2f",
        "%252e%252e%252f",
        "%c0%ae%c0%ae%c0%af",
        "%ff%fe%fd",
        "%80",
        "%ed%a0%80",
        "%f4%90%80%80",
        "%0d%0aSet-Cookie:%20x=1",
        "%20",
        "%09",
        "a;b",
        "a%3Fb",
        "a%23b",
        "%C3%A9t%C3%A9",
        "%F0%9F%98%80",
        "%",
        "%zz",
        "%2",
        "*",
        "~root",
        "CON",
        ".htaccess",
        "mxc:%2f%2fevil%2fx",
        "localhost%2f..",
        "localhost:99999",
        "localhost:-1",
        "localhost:",
        ":8008",
        "[",
        "]",
        "[]",
        "[%3A%3A1]",
        "%5B%3A%3A1%5D:1",
        "local_host",
        "-",
        "@",
        "%40victim%3Alocalhost",
        "!room:localhost",
        "NoSuchMedia0123456789",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    v.push("A".repeat(300));
    v.push("A".repeat(5000));
    v.push("%41".repeat(3000));
    v.push("%ff".repeat(500));
    v.push(format!("{}%2f..", "..%2f".repeat(50)));
    v
}

/// Server names that are valid but must never be fetched from (private literals, with an
/// explicit port so no DNS is involved), and bracketed strings that are not IPv6 addresses.
const PRIVATE_SERVERS: &[&str] = &[
    "127.0.0.1:1",
    "[::1]:1",
    "10.0.0.1:1",
    "[::ffff:127.0.0.1]:1",
    "0.0.0.0:1",
];
const BAD_LITERALS: &[&str] = &["[:::::]:1", "[1.2.3.4]:1", "[::1::1]:1", "[.]:1"];

/// Numeric parameter values.
fn numbers() -> Vec<String> {
    [
        "0",
        "1",
        "-1",
        "-0",
        "+1",
        "1.5",
        "1e3",
        "0x10",
        "abc",
        "",
        "%00",
        "%20",
        "1%00",
        "%201",
        "1,2",
        "18446744073709551615",
        "18446744073709551616",
        "99999999999999999999999999999999",
        "-9223372036854775808",
        "9223372036854775807",
        "4294967295",
        "4294967296",
        "10000",
        "10001",
        "NaN",
        "inf",
        "%ff%fe",
        "96",
        "32",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .chain(std::iter::once("9".repeat(5000)))
    .collect()
}

/// Authorization variants: `(header value, query token)`; `None` leaves it out.
fn token_variants() -> Vec<(Option<Vec<u8>>, Option<String>)> {
    let h = |s: &str| Some(s.as_bytes().to_vec());
    vec![
        (None, None),
        (h("Bearer"), None),
        (h("Bearer "), None),
        (h("Bearer    "), None),
        (h(&format!("bearer {ALICE}")), None),
        (h(&format!("BEARER {ALICE}")), None),
        (h("Basic YWxpY2U6cGFzc3dvcmQ="), None),
        (h("Digest username=\"alice\", realm=\"x\""), None),
        (
            h("X-Matrix origin=\"localhost\",key=\"ed25519:a\",sig=\"AAAA\""),
            None,
        ),
        (h("Negotiate"), None),
        (h(""), None),
        (h(&format!("Bearer {ALICE}x")), None),
        (h(&format!("Bearer {}", &SECRET[..SECRET.len() - 1])), None),
        (h(&format!("Bearer {SECRET}{SECRET}")), None),
        (h(&format!("Bearer {}", "A".repeat(8000))), None),
        (Some(b"Bearer \x80\xff\xfe".to_vec()), None),
        (h(&format!("Bearer {ALICE}, Bearer {BOB}")), None),
        (h("Bearer eyJhbGciOiJub25lIn0.eyJzdWIiOiJhZG1pbiJ9."), None),
        (None, Some(String::new())),
        (None, Some("%00".into())),
        (None, Some("%ff%fe".into())),
        (None, Some("forged-token".into())),
        (None, Some(format!("{SECRET}%00"))),
        (None, Some(format!("{ALICE}&access_token={SECRET}"))),
        (h(&format!("Bearer {ALICE}")), Some(SECRET.into())),
        (h("Bearer garbage"), Some(ALICE.into())),
    ]
}

/// JSON bodies for `purpose` / `reason`.
fn json_bodies() -> Vec<Vec<u8>> {
    let mut v: Vec<Vec<u8>> = [
        "",
        "   ",
        "{",
        "}",
        "[]",
        "null",
        "true",
        "1",
        "\"pinned\"",
        "{\"purpose\":1}",
        "{\"purpose\":\"evil\"}",
        "{\"purpose\":null}",
        "{\"purpose\":[\"pinned\"]}",
        "{\"purpose\":\"PINNED\"}",
        "{\"purpose\":\"pinned\"}garbage",
        "{\"purpose\":\"pinned\",\"purpose\":\"none\"}",
        "{\"reason\":5}",
        "{\"reason\":[]}",
        "{\"reason\":{}}",
        "{\"reason\":\"\\ud800\"}",
        "{\"reason\":\"\\u0000\"}",
        "{\"reason\":\"a\"",
        "NaN",
        "{'reason':'x'}",
        "\0",
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect();
    v.push(b"\xff\xfe{\"reason\":\"x\"}".to_vec());
    v.push(b"\xef\xbb\xbf{\"reason\":\"bom\"}".to_vec());
    v.push(format!("{{\"reason\":\"{}\"}}", "x".repeat(2000)).into_bytes());
    v.push("[".repeat(100_000).into_bytes());
    v.push("{\"a\":".repeat(50_000).into_bytes());
    v.push(vec![b' '; 200_000]);
    v
}

/// Content types of upload bodies.
const CONTENT_TYPES: &[&str] = &[
    "application/octet-stream",
    "text/html",
    "image/svg+xml",
    "a/b/c",
    "",
    "nonsense",
    "image/png; charset=\"",
    "multipart/form-data; boundary=----x",
    "application/json",
    "text/plain; charset=utf-8",
];

/// Upload file names (query values, as sent).
fn filenames() -> Vec<String> {
    let mut v: Vec<String> = [
        "..%2f..%2f..%2fetc%2fpasswd",
        "%2e%2e%2f%2e%2e%2f.bashrc",
        "..%5c..%5cboot.ini",
        "a%00.png",
        "%0d%0aX-Injected:%201",
        "%22%3B%20filename%3D%22evil.html",
        "%ff%fe.txt",
        "%C3%A9t%C3%A9.txt",
        "",
        "normal.txt",
        "a/b/c.txt",
        "%2f",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    v.push("a".repeat(255));
    v.push("a".repeat(256));
    v.push("%C3%A9".repeat(200));
    v.push("b".repeat(10_000));
    v
}

fn pick<'a, T>(rng: &mut StdRng, items: &'a [T]) -> &'a T {
    &items[rng.random_range(0..items.len())]
}

/// Everything the generator draws from.
struct Pools {
    segments: Vec<String>,
    numbers: Vec<String>,
    tokens: Vec<(Option<Vec<u8>>, Option<String>)>,
    bodies: Vec<Vec<u8>>,
    filenames: Vec<String>,
    fx: Fixtures,
}

/// The value of `{name}` in a path: valid (for the route to be reached) or hostile.
fn placeholder(p: &Pools, rng: &mut StdRng, name: &str, hostile: bool, safe: bool) -> String {
    if hostile {
        return match rng.random_range(0..10) {
            0 => pick(rng, PRIVATE_SERVERS).to_string(),
            1 => pick(rng, BAD_LITERALS).to_string(),
            _ => pick(rng, &p.segments).clone(),
        };
    }
    match name {
        "server" => "localhost".into(),
        "media_id" if safe => pick(rng, &p.fx.victims).clone(),
        "media_id" => {
            if rng.random_bool(0.5) {
                p.fx.text_id.clone()
            } else {
                p.fx.png_id.clone()
            }
        }
        "filename" => pick(rng, &["x.txt", "evil.html", "..", "a%00b", "%C3%A9.png"]).to_string(),
        "ds" | "ds2" => "files".into(),
        "task" => pick(rng, &["1", "0", "999999"]).to_string(),
        "user" if safe => "@victim:localhost".into(),
        "user" => "@alice:localhost".into(),
        "room" => "!room:localhost".into(),
        _ => "x".into(),
    }
}

/// Fills a route template.
fn fill(p: &Pools, rng: &mut StdRng, route: &Route, hostile_rate: f64, safe: bool) -> String {
    let version = if rng.random_bool(0.5) { "v3" } else { "r0" };
    let mut out = String::new();
    let mut rest = route.template.replace("{v}", version);
    while let Some(i) = rest.find('{') {
        out.push_str(&rest[..i]);
        let end = rest[i..].find('}').unwrap() + i;
        let name = rest[i + 1..end].to_owned();
        let hostile = rng.random_bool(hostile_rate);
        out.push_str(&placeholder(p, rng, &name, hostile, safe));
        rest = rest[end + 1..].to_owned();
    }
    out.push_str(&rest);
    out
}

/// Query parameters a route reads, with hostile or sane values.
fn query(p: &Pools, rng: &mut StdRng, template: &str, force_bad: bool) -> Vec<String> {
    let mut q = Vec::new();
    let num = |rng: &mut StdRng| {
        if force_bad || rng.random_bool(0.7) {
            pick(rng, &p.numbers).clone()
        } else {
            "1".to_owned()
        }
    };
    if template.contains("thumbnail") {
        q.push(format!("width={}", num(rng)));
        q.push(format!("height={}", num(rng)));
        if rng.random_bool(0.5) {
            let m = pick(
                rng,
                &["crop", "scale", "CROP", "", "%00", "fill", "crop%00"],
            );
            q.push(format!("method={m}"));
        }
        if rng.random_bool(0.3) {
            let a = pick(rng, &["true", "false", "1", "yes", "", "%ff"]);
            q.push(format!("animated={a}"));
        }
    }
    if template.contains("download") || template.contains("thumbnail") {
        if rng.random_bool(0.6) {
            q.push(format!("timeout_ms={}", num(rng)));
        }
        if rng.random_bool(0.2) {
            let a = pick(rng, &["false", "true", "0", "%00"]);
            q.push(format!("allow_remote={a}"));
        }
    }
    if template.contains("size_estimate")
        || template.contains("transfer_to")
        || template.contains("purge")
    {
        if force_bad || rng.random_bool(0.8) {
            q.push(format!("before_ts={}", pick(rng, &p.numbers)));
        }
        if template.contains("purge/old") && rng.random_bool(0.5) {
            let v = pick(rng, &["true", "false", "1", "%00"]);
            q.push(format!("include_local={v}"));
        }
    }
    if template.contains("audit") {
        for k in ["from", "limit", "since_ts", "until_ts"] {
            if rng.random_bool(0.5) {
                q.push(format!("{k}={}", num(rng)));
            }
        }
        if rng.random_bool(0.3) {
            let k = pick(rng, &["quarantine", "purge", "evil", "%00", ""]);
            q.push(format!("kind={k}"));
        }
        if rng.random_bool(0.3) {
            q.push(format!("server={}", pick(rng, &p.segments)));
        }
    }
    if template.ends_with("/users") && rng.random_bool(0.5) {
        q.push(format!("user_id={}", pick(rng, &p.segments)));
    }
    if template.ends_with("/uploads") && rng.random_bool(0.5) {
        q.push(format!("mxc={}", pick(rng, &p.segments)));
    }
    if template.contains("/upload") && rng.random_bool(0.7) {
        q.push(format!("filename={}", pick(rng, &p.filenames)));
    }
    if rng.random_bool(0.1) {
        // Duplicate or junk parameters.
        q.push(pick(rng, &["width=1&width=2", "&&&", "=", "%zz=1", "a=%ff"]).to_string());
    }
    if (template.contains("quarantine") || template.contains("purge")) && rng.random_bool(0.2) {
        q.push(format!("reason={}", pick(rng, &p.segments)));
    }
    q
}

/// Is this token one that may act as an admin?
fn admin_token(t: &(Option<Vec<u8>>, Option<String>)) -> bool {
    let header_admin = t.0.as_deref().is_some_and(|h| {
        h == format!("Bearer {SECRET}").as_bytes() || h == format!("Bearer {ADMIN}").as_bytes()
    });
    let query_admin = t.0.is_none()
        && t.1
            .as_deref()
            .is_some_and(|q| q == SECRET || q == ADMIN || q.contains(&format!("={SECRET}")));
    header_admin || query_admin
}

/// One random request.
fn random_request(p: &Pools, rng: &mut StdRng) -> Req {
    let route = pick(rng, ROUTES);
    let method = if rng.random_bool(0.85) {
        pick(rng, route.methods).to_string()
    } else {
        pick(rng, OTHER_METHODS).to_string()
    };
    // Tokens: a valid one half of the time (the input then reaches the handlers).
    let tokens = &p.tokens;
    let token: (Option<Vec<u8>>, Option<String>) = match rng.random_range(0..8) {
        0 | 1 => (Some(format!("Bearer {ALICE}").into_bytes()), None),
        2 => (Some(format!("Bearer {SECRET}").into_bytes()), None),
        3 => (Some(format!("Bearer {BOB}").into_bytes()), None),
        _ => pick(rng, tokens).clone(),
    };
    // An admin on a moderation route acts: keep that to the victim media, with bad numbers.
    let safe = route.json_body && admin_token(&token);
    let path = fill(p, rng, route, 0.4, safe);
    let mut q = query(p, rng, route.template, safe && route.destructive);
    if let Some(t) = &token.1 {
        q.push(format!("access_token={t}"));
    }
    let target = if q.is_empty() {
        path
    } else {
        format!("{path}?{}", q.join("&"))
    };
    let mut req = Req::new("random", &method, target);
    if let Some(h) = &token.0 {
        req = req.header("Authorization", h.clone());
    }
    if rng.random_bool(0.05) {
        let host = pick(
            rng,
            &["evil.example", "", "localhost:99999", "[::1]", "a b"],
        );
        req = req.header("Host", *host);
    }
    if route.template.contains("/upload") && method != "GET" && method != "HEAD" {
        let ct = pick(rng, CONTENT_TYPES);
        if !ct.is_empty() || rng.random_bool(0.5) {
            req = req.header("Content-Type", *ct);
        }
        let n = match rng.random_range(0..6) {
            0 => 0,
            1 => MAX_BYTES,
            2 => MAX_BYTES + 1,
            3 => MAX_BYTES * 3,
            _ => rng.random_range(1..2000),
        };
        let bytes = random_bytes(n);
        req = if rng.random_bool(0.3) {
            let chunks = bytes.chunks(700).map(<[u8]>::to_vec).collect();
            req.body(Body::Chunked(chunks))
        } else {
            req.body(Body::Bytes(bytes))
        };
    } else if route.json_body && rng.random_bool(0.8) {
        let mut body = pick(rng, &p.bodies).clone();
        if safe && route.destructive && body.iter().all(u8::is_ascii_whitespace) {
            body = b"{".to_vec();
        }
        if rng.random_bool(0.5) {
            let ct = pick(
                rng,
                &["application/json", "text/plain", "multipart/form-data"],
            );
            req = req.header("Content-Type", *ct);
        }
        req = req.body(Body::Bytes(body));
    } else if rng.random_bool(0.05) {
        req = req.body(Body::Bytes(random_bytes(rng.random_range(1..3000))));
    }
    req
}

/// A route filled with valid values (for the method and token catalogues).
fn valid_path(p: &Pools, route: &Route) -> String {
    fill_valid(p, route.template)
}

/// `template` with every remaining placeholder given a valid value (moderation routes get
/// a victim media: an admin's valid request there acts).
fn fill_valid(p: &Pools, template: &str) -> String {
    let media = if template.contains("/admin/") {
        &p.fx.victims[1]
    } else {
        &p.fx.text_id
    };
    template
        .replace("{v}", "v3")
        .replace("{server}", "localhost")
        .replace("{media_id}", media)
        .replace("{filename}", "x.txt")
        .replace("{ds2}", "files")
        .replace("{ds}", "files")
        .replace("{task}", "1")
        .replace("{user}", "@victim:localhost")
        .replace("{room}", "!room:localhost")
}

/// The fixed catalogue: every route × wrong method, every route × token variant, every
/// path parameter × hostile value, the numeric parameters × bad numbers, JSON bodies,
/// oversize bodies and protocol-level garbage.
fn catalogue(p: &Pools) -> Vec<Req> {
    let mut out = Vec::new();
    // Wrong methods on every route (valid path, valid admin token): 405 M_UNRECOGNIZED.
    for route in ROUTES {
        for method in OTHER_METHODS {
            // HEAD is answered on GET routes (axum serves HEAD with the GET handler).
            let allowed = route.methods.contains(method)
                || (*method == "HEAD" && route.methods.contains(&"GET"));
            if allowed {
                continue;
            }
            out.push(Req::new("wrong-method", method, valid_path(p, route)).bearer(SECRET));
        }
        out.push(Req::new("options", "OPTIONS", valid_path(p, route)));
    }
    // Token variants on every route that takes a token.
    for route in ROUTES.iter().filter(|r| !r.template.contains("/metrics")) {
        for (h, q) in token_variants() {
            let mut target = valid_path(p, route);
            if let Some(q) = q {
                target = format!("{target}?access_token={q}");
            }
            let mut req = Req::new("tokens", route.methods[0], target);
            if let Some(h) = h {
                req = req.header("Authorization", h);
            }
            if route.json_body && route.methods[0] == "POST" {
                req = req.body(Body::Bytes(b"{".to_vec()));
            }
            out.push(req);
        }
    }
    // Every hostile segment in every path parameter position.
    for route in ROUTES.iter().filter(|r| r.template.contains('{')) {
        let names: Vec<&str> = route
            .template
            .split('{')
            .skip(1)
            .filter_map(|s| s.split('}').next())
            .filter(|n| *n != "v")
            .collect();
        let mut values = hostile_segments();
        values.extend(PRIVATE_SERVERS.iter().map(|s| (*s).to_owned()));
        values.extend(BAD_LITERALS.iter().map(|s| (*s).to_owned()));
        for name in names {
            for seg in &values {
                // This parameter hostile, the others valid.
                let template = route
                    .template
                    .replace("{v}", "v3")
                    .replace(&format!("{{{name}}}"), seg);
                let method = route.methods[0];
                let mut req =
                    Req::new("traversal", method, fill_valid(p, &template)).bearer(SECRET);
                if method == "PUT" || (method == "POST" && !route.json_body) {
                    req = req.body(Body::Bytes(b"hello".to_vec()));
                }
                if route.destructive {
                    // A refused before_ts keeps a purge that parses from acting.
                    req.target.extend_from_slice(b"?before_ts=x");
                }
                out.push(req);
            }
        }
    }
    // Raw traversal and odd bytes in the request target (not all of them are valid HTTP).
    let dl = format!("/_matrix/media/v3/download/localhost/{}", p.fx.text_id);
    for raw in [
        format!("{dl}/../../../../etc/passwd"),
        "/_matrix/media/v3/download/localhost/../../../etc/passwd".to_owned(),
        "/_matrix/media/v3/download/localhost/..".to_owned(),
        format!("/_matrix/media/v3/download/..\\..\\{}", p.fx.text_id),
        format!("{dl}/..\\..\\windows\\win.ini"),
        "/_matrix/media/v3/download/localhost/.%2e/.%2e/etc/passwd".to_owned(),
        "/../../../etc/passwd".to_owned(),
        "//etc/passwd".to_owned(),
        "/_matrix//media/v3/download/localhost/x".to_owned(),
        "/_matrix/media/v3/download/localhost/x/".to_owned(),
        "*".to_owned(),
        "http://localhost/_matrix/media/v3/config".to_owned(),
        "http://evil.example/_matrix/media/v3/config".to_owned(),
    ] {
        out.push(Req::new("raw-target", "GET", raw).bearer(ALICE).protocol());
    }
    for raw in [
        b"/_matrix/media/v3/download/localhost/a\0b".to_vec(),
        b"/_matrix/media/v3/download/localhost/\xff\xfe".to_vec(),
        b"/_matrix/media/v3/download/localhost/a b".to_vec(),
        b"/_matrix/media/v3/download/localhost/{x}".to_vec(),
        b"/_matrix/media/v3/download/localhost/\"x\"".to_vec(),
        b"/_matrix/media/v3/download/localhost/x|y^z`".to_vec(),
        format!(
            "/_matrix/media/v3/download/localhost/{}",
            "a".repeat(100_000)
        )
        .into_bytes(),
        b"no-leading-slash".to_vec(),
        Vec::new(),
    ] {
        out.push(Req::new("raw-target", "GET", raw).protocol());
    }
    // Numbers for every numeric parameter.
    let png = &p.fx.png_id;
    let text = &p.fx.text_id;
    for n in numbers() {
        let en = n.clone();
        for target in [
            format!("/_matrix/media/unstable/admin/datastores/files/size_estimate?before_ts={en}"),
            format!("/_matrix/media/unstable/admin/datastores/nosuch/size_estimate?before_ts={en}"),
            format!("/_matrix/media/v3/download/localhost/{text}?timeout_ms={en}"),
            format!("/_matrix/client/v1/media/download/localhost/{text}?timeout_ms={en}"),
            format!("/_matrix/client/v1/media/download/localhost/NoSuchMedia0123?timeout_ms={en}"),
            format!("/_matrix/media/v3/thumbnail/localhost/{png}?width={en}&height=32"),
            format!("/_matrix/media/v3/thumbnail/localhost/{png}?width=32&height={en}"),
            format!(
                "/_matrix/client/v1/media/thumbnail/localhost/{png}?width={en}&height={en}&method=crop"
            ),
            format!("/_matrix/client/v1/media/thumbnail/localhost/{png}?width=32&height=32&timeout_ms={en}"),
            format!("/_matrix/media/unstable/admin/audit?limit={en}&from={en}"),
            format!("/_matrix/media/unstable/admin/audit?since_ts={en}&until_ts={en}"),
            format!("/_matrix/media/unstable/admin/tasks/{en}"),
        ] {
            out.push(Req::new("numbers", "GET", target).bearer(SECRET));
        }
        // Acting routes: only refused values (a valid before_ts would purge the fixtures).
        if n.parse::<u64>().is_err() {
            for target in [
                format!("/_matrix/media/unstable/admin/purge/old?before_ts={en}&include_local=true"),
                format!("/_matrix/media/unstable/admin/purge/remote?before_ts={en}"),
                format!("/_matrix/media/unstable/admin/purge/user/@alice:localhost?before_ts={en}"),
                format!("/_matrix/media/unstable/admin/datastores/files/transfer_to/files?before_ts={en}"),
            ] {
                out.push(Req::new("numbers", "POST", target).bearer(SECRET));
            }
        }
    }
    // JSON bodies for attributes and reasons (the acts target a victim).
    let victim = &p.fx.victims[0];
    for body in json_bodies() {
        for (target, token) in [
            (
                format!("/_matrix/media/unstable/admin/media/localhost/{victim}/attributes"),
                SECRET,
            ),
            (
                format!("/_matrix/media/unstable/admin/media/localhost/{victim}/attributes/set"),
                ADMIN,
            ),
            (
                format!("/_matrix/media/unstable/admin/quarantine/localhost/{victim}"),
                SECRET,
            ),
            (
                format!("/_matrix/media/unstable/admin/unquarantine/localhost/{victim}"),
                SECRET,
            ),
            (
                format!(
                    "/_matrix/media/unstable/admin/purge/{}/{}",
                    "localhost", "NoSuchMedia0"
                ),
                SECRET,
            ),
            (
                "/_matrix/media/unstable/admin/quarantine/user/@victim:localhost".to_owned(),
                SECRET,
            ),
        ] {
            for ct in [
                None,
                Some("application/json"),
                Some("text/plain; charset=latin1"),
            ] {
                let mut req = Req::new("json-body", "POST", target.clone())
                    .bearer(token)
                    .body(Body::Bytes(body.clone()));
                if let Some(ct) = ct {
                    req = req.header("Content-Type", ct);
                }
                out.push(req);
            }
        }
    }
    // Upload file names and content types.
    for f in filenames() {
        for ct in CONTENT_TYPES {
            let mut req = Req::new(
                "upload-meta",
                "POST",
                format!("/_matrix/media/v3/upload?filename={f}"),
            )
            .bearer(ALICE)
            .body(Body::Bytes(random_bytes(64)));
            if !ct.is_empty() {
                req = req.header("Content-Type", *ct);
            }
            out.push(req);
        }
    }
    out.push(
        Req::new("upload-meta", "POST", "/_matrix/media/v3/upload")
            .bearer(ALICE)
            .header("Content-Type", b"image/\x80\xffpng".to_vec())
            .body(Body::Bytes(random_bytes(64))),
    );
    out.push(
        Req::new("upload-meta", "POST", "/_matrix/media/v3/upload")
            .bearer(ALICE)
            .header("Content-Type", format!("text/{}", "x".repeat(300)))
            .body(Body::Bytes(random_bytes(64))),
    );
    // Oversize bodies: declared, chunked, on POST and PUT; JSON routes; async create flood.
    let upload = "/_matrix/media/v3/upload";
    for n in [MAX_BYTES + 1, MAX_BYTES * 4, 200_000] {
        out.push(
            Req::new("oversize", "POST", upload)
                .bearer(ALICE)
                .body(Body::Bytes(random_bytes(n))),
        );
        let chunks = random_bytes(n).chunks(1000).map(<[u8]>::to_vec).collect();
        out.push(
            Req::new("oversize", "POST", upload)
                .bearer(ALICE)
                .body(Body::Chunked(chunks)),
        );
        out.push(
            Req::new(
                "oversize",
                "PUT",
                format!("/_matrix/media/v3/upload/localhost/{}", p.fx.text_id),
            )
            .bearer(ALICE)
            .body(Body::Bytes(random_bytes(n))),
        );
    }
    out.push(
        Req::new("oversize", "POST", upload)
            .bearer(ALICE)
            .header("Content-Length", "18446744073709551615")
            .body(Body::Bytes(random_bytes(10)))
            // hyper itself answers this one (a bare 431).
            .protocol(),
    );
    out.push(
        Req::new("oversize", "POST", upload)
            .bearer(ALICE)
            .header("Content-Length", "99999999999999999999999")
            .body(Body::Bytes(random_bytes(10)))
            .protocol(),
    );
    for body_len in [3 * 1024 * 1024, 8 * 1024 * 1024] {
        let mut body = b"{\"reason\":\"".to_vec();
        body.extend(std::iter::repeat_n(b'x', body_len));
        body.extend_from_slice(b"\"}");
        out.push(
            Req::new(
                "oversize-json",
                "POST",
                format!("/_matrix/media/unstable/admin/media/localhost/{victim}/attributes"),
            )
            .bearer(SECRET)
            .header("Content-Type", "application/json")
            .body(Body::Bytes(body)),
        );
    }
    // Protocol-level garbage.
    let garbage: Vec<Req> = vec![
        Req::new("protocol", "POST", upload)
            .bearer(ALICE)
            .header("Content-Length", "abc")
            .body(Body::Bytes(b"abc".to_vec())),
        Req::new("protocol", "POST", upload)
            .bearer(ALICE)
            .header("Content-Length", "-5")
            .body(Body::Bytes(b"abc".to_vec())),
        Req::new("protocol", "POST", upload)
            .bearer(ALICE)
            .header("Content-Length", "5")
            .header("Content-Length", "6")
            .body(Body::Bytes(b"abcdef".to_vec())),
        Req::new("protocol", "POST", upload)
            .bearer(ALICE)
            .header("Content-Length", "3")
            .header("Transfer-Encoding", "chunked")
            .body(Body::Bytes(b"3\r\nabc\r\n0\r\n\r\n".to_vec())),
        Req::new("protocol", "POST", upload)
            .bearer(ALICE)
            .header("Transfer-Encoding", "gzip, chunked")
            .body(Body::Bytes(b"3\r\nabc\r\n0\r\n\r\n".to_vec())),
        Req::new("protocol", "POST", upload)
            .bearer(ALICE)
            .header("Transfer-Encoding", "chunked")
            .body(Body::Bytes(b"zz\r\nabc\r\n0\r\n\r\n".to_vec())),
        Req::new("protocol", "POST", upload)
            .bearer(ALICE)
            .header("Transfer-Encoding", "chunked")
            .body(Body::Bytes(b"ffffffffffffffffff\r\nabc\r\n".to_vec())),
        Req::new("protocol", "POST", upload)
            .bearer(ALICE)
            .header("Content-Length", "2")
            .body(Body::Bytes(b"abcdefGET / HTTP/1.1\r\n\r\n".to_vec())),
        Req::new("protocol", "GET", "/_matrix/media/v3/config")
            .bearer(ALICE)
            .header("X-Big", "a".repeat(200_000)),
        Req::new("protocol", "GET", "/_matrix/media/v3/config")
            .bearer(ALICE)
            .header("Bad Header", "x"),
        Req::new("protocol", "GET", "/_matrix/media/v3/config")
            .header("Authorization", format!("Bearer {ALICE}\0")),
        Req::new("protocol", "GET", "/_matrix/media/v3/config")
            .header("Authorization", format!("Bearer {}", "A".repeat(150_000))),
        Req::new("protocol", "CONNECT", "/_matrix/media/v3/config").bearer(ALICE),
        Req::new("protocol", "CONNECT", "localhost:443").bearer(ALICE),
        Req::new("protocol", "G\0T", "/_matrix/media/v3/config"),
        Req::new("protocol", "", "/_matrix/media/v3/config"),
        Req::new("protocol", "GET", "/_matrix/media/v3/config\r\nX: y"),
    ];
    out.extend(garbage.into_iter().map(Req::protocol));
    let mut many_headers = Req::new("protocol", "GET", "/_matrix/media/v3/config").bearer(ALICE);
    for i in 0..200 {
        many_headers = many_headers.header(&format!("X-H{i}"), "v");
    }
    out.push(many_headers.protocol());
    out
}

/// Uploads the fixtures.
async fn fixtures(srv: &TestServer) -> Fixtures {
    let id = |mxc: String| common::parse_mxc(&mxc).1;
    let text_id = id(srv
        .upload(ALICE, b"hello bad input".to_vec(), Some("text/plain"), None)
        .await);
    let png_id = id(srv
        .upload(ALICE, png(40, 40), Some("image/png"), None)
        .await);
    let mut victims = Vec::new();
    for _ in 0..3 {
        victims.push(id(srv
            .upload(BOB, random_bytes(100), Some("text/plain"), None)
            .await));
    }
    Fixtures {
        text_id,
        png_id,
        victims,
    }
}

/// A smooth PNG of `w`×`h` (small enough for [`MAX_BYTES`]).
fn png(w: u32, h: u32) -> Vec<u8> {
    let img = image::RgbImage::from_fn(w, h, |x, y| image::Rgb([(x * 6) as u8, (y * 6) as u8, 80]));
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).unwrap();
    let v = out.into_inner();
    assert!(v.len() < MAX_BYTES, "fixture PNG of {} bytes", v.len());
    v
}

/// The hostile segments that are valid server names other than ours and not IP literals
/// (`..`, `-`, `CON`: the spec's `dns-name` is any run of letters, digits, `-` and `.`).
/// They are `blocked_servers` of the server under test, so that no request of this suite
/// makes it resolve a name in DNS.
fn dns_names() -> Vec<String> {
    let mut out: Vec<String> = hostile_segments()
        .iter()
        .filter_map(|s| percent_encoding::percent_decode_str(s).decode_utf8().ok())
        .map(|s| s.into_owned())
        .filter(|s| s.parse::<media_ledger_events::ServerName>().is_ok())
        .filter(|s| {
            let host = s.rsplit_once(':').map_or(s.as_str(), |(h, _)| h);
            host != "localhost"
                && !host.starts_with('[')
                && host.parse::<std::net::IpAddr>().is_err()
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

fn bad_input_opts() -> Opts {
    let blocked = dns_names()
        .iter()
        .map(|n| format!("{n:?}"))
        .collect::<Vec<_>>()
        .join(", ");
    Opts {
        max_bytes: MAX_BYTES as u64,
        // Unknown ids answer at once; a pending one (none here) would wait at most this.
        default_timeout_ms: 200,
        max_timeout_ms: 500,
        // Remote fetches: IP literals of private ranges (refused before connecting) and the
        // blocked names; keep any attempt short.
        extra_toml: format!("[federation]\nsigning_key_path = {{dir:signing.key}}\nconnect_timeout_ms = 300\ntimeout_ms = 1000\nblocked_servers = [{blocked}]\n"),
        ..Opts::default()
    }
}

/// Every file of the datastore is a content-addressed blob `<hh>/<hh>/<sha256>` (or spool).
fn assert_only_blobs(srv: &TestServer) {
    for f in common::blob_files(&srv.media_dir()) {
        let rel = f.strip_prefix(srv.media_dir()).unwrap();
        let parts: Vec<String> = rel
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect();
        let ok = parts.len() == 3
            && parts[0].len() == 2
            && parts[1].len() == 2
            && parts[2].len() == 64
            && parts[2].starts_with(&format!("{}{}", parts[0], parts[1]))
            && parts[2].bytes().all(|b| b.is_ascii_hexdigit());
        assert!(ok, "unexpected file in the datastore: {}", f.display());
    }
    // Nothing was written beside the data directories.
    let mut top: Vec<String> = std::fs::read_dir(srv.dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    top.sort();
    for name in &top {
        assert!(
            [
                "ledger",
                "ledger.snapshots",
                "ledger-spool",
                "media",
                "signing.key"
            ]
            .contains(&name.as_str()),
            "unexpected entry {name:?} in the data directory: {top:?}"
        );
    }
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_requests_get_matrix_errors_never_5xx() {
    let mut srv = TestServer::start_with(bad_input_opts()).await;
    let addr: SocketAddr = srv.base.strip_prefix("http://").unwrap().parse().unwrap();
    let seed = std::env::var("BAD_INPUT_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random::<u64>);
    let random = env_usize("BAD_INPUT_REQUESTS", 1000);
    println!(
        "bad input: blocked server names (valid dns-names, never resolved): {:?}",
        dns_names()
    );
    println!("bad input: seed {seed}, {random} random requests beside the catalogue");
    let pools = Pools {
        segments: hostile_segments(),
        numbers: numbers(),
        tokens: token_variants(),
        bodies: json_bodies(),
        filenames: filenames(),
        fx: fixtures(&srv).await,
    };
    let mut rng = StdRng::seed_from_u64(seed);
    let mut reqs = catalogue(&pools);
    let fixed = reqs.len();
    for _ in 0..random {
        reqs.push(random_request(&pools, &mut rng));
    }
    let total = reqs.len();
    println!(
        "bad input: {fixed} catalogue requests + {} random",
        reqs.len() - fixed
    );

    let started = Instant::now();
    let mut tally = Tally::default();
    let results: Vec<(Req, Outcome, Duration)> = futures_util::stream::iter(reqs)
        .map(|req| async move {
            let t = Instant::now();
            let out = send(addr, &req).await;
            (req, out, t.elapsed())
        })
        .buffer_unordered(8)
        .collect()
        .await;
    let elapsed = started.elapsed();
    let mut wrong_method_codes = BTreeMap::new();
    for (req, out, took) in &results {
        tally.add(req, out, *took);
        if req.kind == "wrong-method" {
            let key = match out {
                Outcome::Answer(r) => format!(
                    "{} {}",
                    r.status,
                    serde_json::from_slice::<Value>(&r.body)
                        .map(|v| v["errcode"].to_string())
                        .unwrap_or_default()
                ),
                other => format!("{other:?}"),
            };
            *wrong_method_codes.entry(key).or_insert(0usize) += 1;
        }
    }
    tally.print(seed, elapsed);
    println!("bad input: wrong-method answers: {wrong_method_codes:?}");

    // Afterwards: still serving, nothing written outside content-addressed blobs.
    let bytes = random_bytes(3000);
    let mxc = srv
        .upload(ALICE, bytes.clone(), Some("application/octet-stream"), None)
        .await;
    assert_eq!(srv.download_bytes(&mxc).await, bytes);
    assert_only_blobs(&srv);
    srv.stop().await;

    assert!(tally.requests >= total, "{} requests", tally.requests);
    // Wrong methods are 405 M_UNRECOGNIZED, every one (HEAD answers carry no body).
    let wrong_ok = results
        .iter()
        .filter(|(r, _, _)| r.kind == "wrong-method")
        .all(|(r, out, _)| match out {
            Outcome::Answer(a) => {
                a.status == 405
                    && (r.method == "HEAD"
                        || serde_json::from_slice::<Value>(&a.body)
                            .is_ok_and(|v| v["errcode"] == "M_UNRECOGNIZED"))
            }
            _ => false,
        });
    assert!(
        wrong_ok,
        "a wrong method was not 405 M_UNRECOGNIZED: {wrong_method_codes:?}"
    );
    assert!(
        tally.violations.is_empty(),
        "{} kinds of answers break the rules (see VIOLATION lines above); 5xx: {}",
        tally.violations.len(),
        tally.fivexx()
    );
    assert_eq!(tally.fivexx(), 0);
}

/// Concurrent snapshots (valid admin requests) must all succeed, not collide on one path.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_snapshots_are_all_answered_without_5xx() {
    let mut srv = TestServer::start().await;
    srv.upload_bytes(random_bytes(100)).await;
    let url = srv.url("/_matrix/media/unstable/admin/snapshot");
    // One at a time they all succeed (so a failure below is the concurrency).
    for _ in 0..3 {
        let r = srv
            .client
            .post(&url)
            .bearer_auth(SECRET)
            .send()
            .await
            .unwrap();
        assert_eq!(
            r.status(),
            reqwest::StatusCode::OK,
            "{}",
            r.text().await.unwrap()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut statuses = BTreeMap::new();
    let mut bodies = Vec::new();
    for _round in 0..3 {
        let tasks: Vec<_> = (0..6)
            .map(|_| {
                let c = srv.client.clone();
                let url = url.clone();
                tokio::spawn(async move {
                    let r = c.post(&url).bearer_auth(SECRET).send().await.unwrap();
                    (r.status().as_u16(), r.text().await.unwrap())
                })
            })
            .collect();
        for t in tasks {
            let (s, b) = t.await.unwrap();
            *statuses.entry(s).or_insert(0) += 1;
            if s != 200 {
                bodies.push(b);
            }
        }
    }
    println!("concurrent snapshots: statuses {statuses:?}, non-200 bodies {bodies:?}");
    srv.stop().await;
    assert!(
        statuses.keys().all(|s| *s < 500),
        "concurrent snapshot requests got a 5xx: {statuses:?} {bodies:?}"
    );
}

/// A pending async media with a huge `timeout_ms`: the wait is capped at `max_timeout_ms`
/// and answered 504 `M_NOT_YET_UPLOADED` (the one 5xx the spec prescribes), not held.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_timeout_on_a_pending_media_is_capped() {
    let mut srv = TestServer::start_with(bad_input_opts()).await;
    let resp = srv
        .client
        .post(srv.url("/_matrix/media/v1/create"))
        .bearer_auth(ALICE)
        .send()
        .await
        .unwrap();
    let v: Value = resp.json().await.unwrap();
    let (server, id) = common::parse_mxc(v["content_uri"].as_str().unwrap());
    for t in ["18446744073709551615", "9223372036854775807", "4294967296"] {
        for path in [
            format!("/_matrix/client/v1/media/download/{server}/{id}?timeout_ms={t}"),
            format!(
                "/_matrix/client/v1/media/thumbnail/{server}/{id}?width=32&height=32&timeout_ms={t}"
            ),
        ] {
            let started = Instant::now();
            let resp = srv
                .client
                .get(srv.url(&path))
                .bearer_auth(ALICE)
                .send()
                .await
                .unwrap();
            let took = started.elapsed();
            common::expect_error(
                resp,
                reqwest::StatusCode::GATEWAY_TIMEOUT,
                "M_NOT_YET_UPLOADED",
            )
            .await;
            assert!(
                took >= Duration::from_millis(450) && took < Duration::from_secs(5),
                "{path}: answered after {took:?} (max_timeout_ms = 500)"
            );
        }
    }
    srv.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Slow clients
// ---------------------------------------------------------------------------------------------

/// A connection that sent `prefix` and then stalls.
struct Stalled {
    what: &'static str,
    stream: TcpStream,
}

async fn stall(addr: SocketAddr, what: &'static str, prefix: Vec<u8>) -> Stalled {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(&prefix).await.unwrap();
    stream.flush().await.unwrap();
    Stalled { what, stream }
}

/// Whether the server answered or closed a stalled connection (non-blocking check).
fn answered_or_closed(s: &mut Stalled) -> Option<String> {
    let mut buf = [0u8; 4096];
    match s.stream.try_read(&mut buf) {
        Ok(0) => Some("closed".into()),
        Ok(n) => Some(format!(
            "answered: {}",
            String::from_utf8_lossy(&buf[..n.min(60)])
                .lines()
                .next()
                .unwrap_or_default()
        )),
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => None,
        Err(e) => Some(format!("error {e}")),
    }
}

/// The slow-client openings: what a slowloris sends before it stalls.
fn slow_prefixes(victim: &str) -> Vec<(&'static str, Vec<u8>)> {
    let h = format!("Host: localhost\r\nAuthorization: Bearer {ALICE}\r\n");
    vec![
        // Headers never finished.
        (
            "partial headers",
            format!("POST /_matrix/media/v3/upload HTTP/1.1\r\n{h}X-Slow: ").into_bytes(),
        ),
        // A declared body, a few bytes of it.
        (
            "stalled body",
            format!("POST /_matrix/media/v3/upload HTTP/1.1\r\n{h}Content-Length: 100000\r\n\r\nabcdef")
                .into_bytes(),
        ),
        // A chunked body, one chunk.
        (
            "stalled chunked body",
            format!("POST /_matrix/media/v3/upload HTTP/1.1\r\n{h}Transfer-Encoding: chunked\r\n\r\n5\r\nabcde\r\n")
                .into_bytes(),
        ),
        // A JSON body of a moderation route (buffered whole by the handler).
        (
            "stalled JSON body",
            format!("POST /_matrix/media/unstable/admin/media/localhost/{victim}/attributes HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {SECRET}\r\nContent-Length: 1000\r\n\r\n{{\"pur")
                .into_bytes(),
        ),
        // Connected, nothing sent.
        ("silent connection", Vec::new()),
    ]
}

fn slow_opts() -> Opts {
    Opts {
        max_bytes: 1024 * 1024,
        shutdown_grace_ms: Some(1_000),
        ..Opts::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_do_not_block_others() {
    let hold = Duration::from_secs(env_usize("SLOWLORIS_SECS", 3) as u64);
    let per_kind = env_usize("SLOWLORIS_CONNECTIONS", 16);
    let mut srv = TestServer::start_with(slow_opts()).await;
    let addr: SocketAddr = srv.base.strip_prefix("http://").unwrap().parse().unwrap();
    let mxc = srv.upload_bytes(random_bytes(10_000)).await;
    let victim = common::parse_mxc(&srv.upload(BOB, random_bytes(10), None, None).await).1;

    let mut stalled = Vec::new();
    for _ in 0..per_kind {
        for (what, prefix) in slow_prefixes(&victim) {
            stalled.push(stall(addr, what, prefix).await);
        }
    }
    println!(
        "slowloris: {} stalled connections held for {hold:?}",
        stalled.len()
    );

    // Meanwhile, normal traffic: every request must succeed, promptly.
    let started = Instant::now();
    let mut served = 0usize;
    let mut slowest = Duration::ZERO;
    while started.elapsed() < hold {
        let t = Instant::now();
        let bytes = random_bytes(5000);
        let up = srv
            .upload(ALICE, bytes.clone(), Some("application/octet-stream"), None)
            .await;
        assert_eq!(srv.download_bytes(&up).await, bytes);
        assert_eq!(srv.download_bytes(&mxc).await.len(), 10_000);
        slowest = slowest.max(t.elapsed());
        served += 3;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!("slowloris: {served} normal requests served meanwhile, slowest round {slowest:?}");
    assert!(served >= 3, "no normal request was served");
    assert!(
        slowest < Duration::from_secs(5),
        "a normal round took {slowest:?} beside slow clients"
    );

    // What became of the slow connections after `hold`.
    let mut fate: BTreeMap<String, usize> = BTreeMap::new();
    for s in &mut stalled {
        let f = answered_or_closed(s).unwrap_or_else(|| "still open".into());
        *fate.entry(format!("{}: {f}", s.what)).or_default() += 1;
    }
    println!("slowloris: after {hold:?}: {fate:?}");
    // Once the slow clients go, the server stops as usual.
    drop(stalled);
    tokio::time::sleep(Duration::from_millis(100)).await;
    srv.stop().await;
}

/// Graceful shutdown (SIGTERM in `serve`) must not wait forever for a client that stalls:
/// one slow connection of each kind, alone, against a fresh server, then `stop()`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_client_does_not_keep_the_server_from_stopping() {
    let limit = Duration::from_secs(env_usize("SLOWLORIS_STOP_SECS", 3) as u64);
    let mut blocked = Vec::new();
    for (what, _) in slow_prefixes("x") {
        let mut srv = TestServer::start_with(slow_opts()).await;
        let addr: SocketAddr = srv.base.strip_prefix("http://").unwrap().parse().unwrap();
        let victim = common::parse_mxc(&srv.upload(BOB, random_bytes(10), None, None).await).1;
        let prefix = slow_prefixes(&victim)
            .into_iter()
            .find(|(w, _)| *w == what)
            .unwrap()
            .1;
        let stalled = stall(addr, what, prefix).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        let server = srv.server.take().unwrap();
        let t = Instant::now();
        let stopped = tokio::time::timeout(limit, server.stop()).await.is_ok();
        println!(
            "slowloris stop: one {what}: {} after {:?}",
            if stopped { "stopped" } else { "NOT stopped" },
            t.elapsed()
        );
        if !stopped {
            blocked.push(what);
        }
        // Stopped means its connection is closed too, not left to a task that outlives it.
        let mut stalled = stalled;
        assert!(
            read_until_closed(&mut stalled, Duration::from_secs(2))
                .await
                .is_some(),
            "{what}: the connection outlived the stop"
        );
    }
    assert!(
        blocked.is_empty(),
        "the server did not stop within {limit:?} while one slow client held a connection: {blocked:?}"
    );
}

/// Reads what the server sends on `s` until it closes the connection (or resets it), at
/// most `limit`; `None` if it is still open then.
async fn read_until_closed(s: &mut Stalled, limit: Duration) -> Option<String> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let read_all = async {
        loop {
            match s.stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    };
    tokio::time::timeout(limit, read_all).await.ok()?;
    Some(String::from_utf8_lossy(&got).into_owned())
}

/// The slow-client bounds (`server.header_read_timeout_ms`, `server.body_idle_timeout_ms`,
/// both 500 ms here): an unfinished request head, a silent connection and an idle kept-alive
/// one are closed; a stalled body of every kind is answered 408 `M_UNKNOWN`; all within
/// seconds. A body that keeps coming slowly, each pause shorter than the bound, is not cut.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_are_cut_by_the_timeouts() {
    let mut srv = TestServer::start_with(Opts {
        server_extra: "header_read_timeout_ms = 500\nbody_idle_timeout_ms = 500\n".into(),
        ..slow_opts()
    })
    .await;
    let addr: SocketAddr = srv.base.strip_prefix("http://").unwrap().parse().unwrap();
    let victim = common::parse_mxc(&srv.upload(BOB, random_bytes(10), None, None).await).1;

    let mut stalled = Vec::new();
    for (what, prefix) in slow_prefixes(&victim) {
        stalled.push(stall(addr, what, prefix).await);
    }
    let idle = format!(
        "GET /_matrix/media/v3/config HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {ALICE}\r\n\r\n"
    );
    stalled.push(stall(addr, "idle kept-alive", idle.into_bytes()).await);
    let started = Instant::now();
    for s in &mut stalled {
        let what = s.what;
        let sent = read_until_closed(s, Duration::from_secs(10))
            .await
            .unwrap_or_else(|| panic!("{what}: still open 10 s after it stalled"));
        let status = sent.lines().next().unwrap_or_default().to_owned();
        println!(
            "slow client cut: {what}: {status:?} after {:?}",
            started.elapsed()
        );
        match what {
            "partial headers" | "silent connection" => assert!(
                sent.is_empty() || status.starts_with("HTTP/1.1 408"),
                "{what}: {sent:?}"
            ),
            "idle kept-alive" => assert!(status.starts_with("HTTP/1.1 200"), "{what}: {sent:?}"),
            _ => {
                assert!(status.starts_with("HTTP/1.1 408"), "{what}: {sent:?}");
                let body = sent.split("\r\n\r\n").nth(1).unwrap_or_default();
                assert!(
                    body.contains("\"errcode\":\"M_UNKNOWN\""),
                    "{what}: {sent:?}"
                );
            }
        }
    }

    // The cut uploads recorded nothing and left no spool file.
    assert_eq!(
        common::spool_entries(&srv.media_dir()),
        0,
        "spool leftovers"
    );
    assert_eq!(
        common::count_blobs(&srv.media_dir()),
        1,
        "only the victim's blob"
    );

    // Steady but slow: 20 bytes, one every 200 ms (each pause under the 500 ms bound).
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST /_matrix/media/v3/upload HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {ALICE}\r\nContent-Type: application/octet-stream\r\nContent-Length: 20\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    for b in b"slow but steady body" {
        tokio::time::sleep(Duration::from_millis(200)).await;
        stream.write_all(&[*b]).await.unwrap();
    }
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer))
        .await
        .expect("the slow upload was answered")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("content_uri"), "{answer}");
    srv.stop().await;
}
