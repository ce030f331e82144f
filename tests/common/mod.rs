//! Shared helpers of the HTTP integration tests: a config written into a tempdir, the server
//! started in-process on 127.0.0.1:0, and small request/assertion helpers.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

pub mod fake_remote;
pub mod pg;
pub mod proxy;
pub mod s3;
pub mod site;
pub mod synapse;

use media_ledger::config::Config;
use media_ledger::server::Server;
use reqwest::{Response, StatusCode};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tempfile::TempDir;

/// The shared-secret admin token.
pub const SECRET: &str = "test-shared-secret";
/// Static token of `@alice:localhost` (of `@alice:<the default homeserver>`, else of the first,
/// when `Opts::homeservers` names others). Static tokens are valid only on their user's
/// homeserver.
pub const ALICE: &str = "alice-token";
/// Static token of `@bob:localhost` (as [`ALICE`]: of the default or first homeserver).
pub const BOB: &str = "bob-token";
/// Static token of `@admin:localhost` (as [`ALICE`]), a repository admin: valid on every
/// homeserver.
pub const ADMIN: &str = "admin-token";
/// Static token of `@alice:other.test`, when `other.test` is a configured homeserver (each
/// further homeserver `N` has `alice-token@N` and `bob-token@N`: see [`token_on`]).
pub const ALICE_OTHER: &str = "alice-token@other.test";
/// Static token of `@bob:other.test`, when `other.test` is a configured homeserver.
pub const BOB_OTHER: &str = "bob-token@other.test";
/// Id of the default datastore.
pub const DS: &str = "files";

/// What a test may change in the generated config.
#[derive(Debug, Clone)]
pub struct Opts {
    /// `uploads.max_bytes`.
    pub max_bytes: u64,
    /// `uploads.async_expiry_ms`.
    pub async_expiry_ms: u64,
    /// `downloads.default_timeout_ms`.
    pub default_timeout_ms: u64,
    /// `downloads.max_timeout_ms`.
    pub max_timeout_ms: u64,
    /// `auth.whoami_cache_ttl_ms`.
    pub whoami_cache_ttl_ms: u64,
    /// Raw `[[homeservers]]` TOML; `None` = one homeserver "localhost", default.
    pub homeservers: Option<String>,
    /// Raw `[[datastores]]` TOML, `{dir}` replaced by the quoted tempdir path joined with
    /// what follows up to the next `}`: write `path = {dir:media-a}`. `None` = one file
    /// datastore `files` at `<dir>/media`, kinds = ["all"].
    pub datastores: Option<String>,
    /// `server.bind`; `None` = `127.0.0.1:0`.
    pub bind: Option<String>,
    /// Raw lines appended to the `[downloads]` table (`max_bytes = 1000`).
    pub downloads_extra: String,
    /// Raw TOML appended at the end of the config (`[federation]` …), `{dir:NAME}` expanded.
    pub extra_toml: String,
    /// `server.shutdown_grace_ms`; `None` = the default.
    pub shutdown_grace_ms: Option<u64>,
    /// Raw lines appended to the `[server]` table (`header_read_timeout_ms = 500`).
    pub server_extra: String,
    /// Raw lines appended to the `[database]` table (`backend = "postgres"` …).
    pub database_extra: String,
    /// `downloads.freeze_unauthenticated`; `None` = not written (the default: on). The suites
    /// run with `Some(false)`: they test the deprecated endpoints' other behaviour on media
    /// they just uploaded; `tests/freeze.rs` tests the freeze.
    pub freeze_unauthenticated: Option<bool>,
    /// The `[rate_limits]` table; the default turns them off (the suites upload fast as one
    /// user); `tests/abuse_*.rs` test them.
    pub rate_limits: String,
}

impl Default for Opts {
    fn default() -> Self {
        Self {
            max_bytes: 100 * 1024 * 1024,
            async_expiry_ms: 86_400_000,
            default_timeout_ms: 20_000,
            max_timeout_ms: 60_000,
            whoami_cache_ttl_ms: 300_000,
            homeservers: None,
            datastores: None,
            bind: None,
            downloads_extra: String::new(),
            extra_toml: String::new(),
            shutdown_grace_ms: None,
            server_extra: String::new(),
            database_extra: String::new(),
            freeze_unauthenticated: Some(false),
            rate_limits: "[rate_limits]\nenabled = false\n".to_owned(),
        }
    }
}

fn quoted(p: &Path) -> String {
    toml::Value::String(p.display().to_string()).to_string()
}

/// Replaces every `{dir:NAME}` by the quoted path `<dir>/NAME`.
fn expand_dirs(text: &str, dir: &Path) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(i) = rest.find("{dir:") {
        out.push_str(&rest[..i]);
        let after = &rest[i + 5..];
        let end = after.find('}').expect("unterminated {dir:...}");
        out.push_str(&quoted(&dir.join(&after[..end])));
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    out
}

/// The static token of `user` (`ALICE`/`BOB`'s, "alice"/"bob") on a homeserver other than the
/// default (or first) one.
pub fn token_on(user: &str, server: &str) -> String {
    format!("{user}-token@{server}")
}

/// The configured homeserver names, the default one (else the first) first.
fn homeserver_names(homeservers: &str) -> Vec<String> {
    let table: toml::Table = toml::from_str(homeservers).expect("Opts::homeservers is TOML");
    let list = table
        .get("homeservers")
        .and_then(toml::Value::as_array)
        .cloned()
        .unwrap_or_default();
    let mut names: Vec<(bool, String)> = list
        .iter()
        .filter_map(|h| {
            let name = h.get("name")?.as_str()?.to_owned();
            let default = h.get("default").and_then(toml::Value::as_bool) == Some(true);
            Some((default, name))
        })
        .collect();
    // Stable: the default first, the others in config order.
    names.sort_by_key(|(default, _)| !*default);
    names.into_iter().map(|(_, n)| n).collect()
}

/// `[[auth.static_tokens]]`: alice, bob and admin of the first of `names`, alice and bob of
/// every other.
fn static_tokens(names: &[String]) -> String {
    let mut out = String::new();
    let mut token = |token: &str, user: &str, server: &str| {
        out.push_str(&format!(
            "[[auth.static_tokens]]\ntoken = \"{token}\"\nuser_id = \"@{user}:{server}\"\n\n"
        ));
    };
    let primary = names.first().map_or("localhost", String::as_str);
    token(ALICE, "alice", primary);
    token(BOB, "bob", primary);
    token(ADMIN, "admin", primary);
    for n in names.iter().skip(1) {
        for user in ["alice", "bob"] {
            token(&token_on(user, n), user, n);
        }
    }
    out
}

/// The config text for a server whose data lives in `dir`.
pub fn config_text(dir: &Path, opts: &Opts) -> String {
    let homeservers = opts
        .homeservers
        .clone()
        .unwrap_or_else(|| "[[homeservers]]\nname = \"localhost\"\ndefault = true\n".to_owned());
    let names = homeserver_names(&homeservers);
    let primary = names.first().map_or("localhost", String::as_str);
    let static_tokens = static_tokens(&names);
    let datastores = opts.datastores.clone().unwrap_or_else(|| {
        format!("[[datastores]]\nid = \"{DS}\"\ntype = \"file\"\npath = {{dir:media}}\nkinds = [\"all\"]\n")
    });
    let text = format!(
        r#"
[server]
bind = "{bind}"
{grace}
{server_extra}

[database]
path = {{dir:ledger}}
{database_extra}

[uploads]
max_bytes = {max_bytes}
async_expiry_ms = {async_expiry_ms}

[downloads]
default_timeout_ms = {default_timeout_ms}
max_timeout_ms = {max_timeout_ms}
{freeze}
{downloads_extra}

[auth]
shared_secret = "{SECRET}"
admins = ["@admin:{primary}"]
whoami_cache_ttl_ms = {ttl}

{rate_limits}

{static_tokens}
{homeservers}
{datastores}
{extra_toml}
"#,
        rate_limits = opts.rate_limits,
        max_bytes = opts.max_bytes,
        async_expiry_ms = opts.async_expiry_ms,
        default_timeout_ms = opts.default_timeout_ms,
        max_timeout_ms = opts.max_timeout_ms,
        ttl = opts.whoami_cache_ttl_ms,
        bind = opts.bind.as_deref().unwrap_or("127.0.0.1:0"),
        downloads_extra = opts.downloads_extra,
        extra_toml = opts.extra_toml,
        grace = opts
            .shutdown_grace_ms
            .map(|g| format!("shutdown_grace_ms = {g}"))
            .unwrap_or_default(),
        server_extra = opts.server_extra,
        database_extra = opts.database_extra,
        freeze = opts
            .freeze_unauthenticated
            .map(|f| format!("freeze_unauthenticated = {f}"))
            .unwrap_or_default(),
    );
    expand_dirs(&text, dir)
}

/// A server running in-process on a tempdir.
pub struct TestServer {
    /// `http://127.0.0.1:PORT` (changes on restart).
    pub base: String,
    /// An HTTP client (no proxy).
    pub client: reqwest::Client,
    /// The data directory (ledger, datastores).
    pub dir: TempDir,
    /// The config text the server runs with.
    pub config_text: String,
    /// The running server, `None` once stopped.
    pub server: Option<Server>,
}

/// A plain HTTP client for loopback.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(120))
        .build()
        .unwrap()
}

impl TestServer {
    /// Starts a server with the default options.
    pub async fn start() -> Self {
        Self::start_with(Opts::default()).await
    }

    /// Starts a server with `opts`.
    pub async fn start_with(opts: Opts) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let config_text = config_text(dir.path(), &opts);
        let mut s = Self {
            base: String::new(),
            client: client(),
            dir,
            config_text,
            server: None,
        };
        s.boot().await;
        s
    }

    async fn boot(&mut self) {
        assert!(self.server.is_none(), "server already running");
        let config = Config::parse(&self.config_text).expect("test config is valid");
        let server = media_ledger::server::start(config)
            .await
            .expect("server starts");
        self.base = format!("http://{}", server.addr);
        self.server = Some(server);
    }

    /// Stops the server (graceful: in-flight requests finish, the ledger closes).
    pub async fn stop(&mut self) {
        // Idle keep-alive connections would otherwise hold graceful shutdown up.
        self.client = client();
        if let Some(s) = self.server.take() {
            tokio::time::timeout(Duration::from_secs(120), s.stop())
                .await
                .expect("server stops within 120 s")
                .expect("server stops cleanly");
        }
    }

    /// Stops and starts again on the same data directory (the port changes).
    pub async fn restart(&mut self) {
        self.stop().await;
        self.boot().await;
    }

    /// The running server.
    pub fn server(&self) -> &Server {
        self.server.as_ref().expect("server running")
    }

    /// `base` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// The ledger directory.
    pub fn db_path(&self) -> PathBuf {
        self.dir.path().join("ledger")
    }

    /// The directory of datastore `name` (as written `{dir:NAME}` in the config); the default
    /// datastore is `media`.
    pub fn path_of(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The default datastore's directory.
    pub fn media_dir(&self) -> PathBuf {
        self.path_of("media")
    }

    /// `POST /_matrix/media/v3/upload` as `token`; the raw response.
    pub async fn upload_raw(
        &self,
        token: &str,
        bytes: Vec<u8>,
        content_type: Option<&str>,
        filename: Option<&str>,
    ) -> Response {
        let mut req = self
            .client
            .post(self.url("/_matrix/media/v3/upload"))
            .bearer_auth(token)
            .body(bytes);
        if let Some(ct) = content_type {
            req = req.header(reqwest::header::CONTENT_TYPE, ct);
        }
        if let Some(f) = filename {
            req = req.query(&[("filename", f)]);
        }
        req.send().await.unwrap()
    }

    /// Uploads as `token`; returns the `content_uri`.
    pub async fn upload(
        &self,
        token: &str,
        bytes: Vec<u8>,
        content_type: Option<&str>,
        filename: Option<&str>,
    ) -> String {
        let resp = self.upload_raw(token, bytes, content_type, filename).await;
        let status = resp.status();
        let text = resp.text().await.unwrap();
        assert_eq!(status, StatusCode::OK, "upload failed: {text}");
        let v: Value = serde_json::from_str(&text).unwrap();
        v["content_uri"]
            .as_str()
            .expect("content_uri is a string")
            .to_owned()
    }

    /// Uploads as alice with `application/octet-stream`; returns the `content_uri`.
    pub async fn upload_bytes(&self, bytes: Vec<u8>) -> String {
        self.upload(ALICE, bytes, Some("application/octet-stream"), None)
            .await
    }

    /// `GET /_matrix/media/v3/download/{server}/{id}`, unauthenticated.
    pub async fn download(&self, mxc: &str) -> Response {
        let (server, id) = parse_mxc(mxc);
        self.client
            .get(self.url(&format!("/_matrix/media/v3/download/{server}/{id}")))
            // A token: only authenticated requests may fetch remote media.
            .bearer_auth(ALICE)
            .send()
            .await
            .unwrap()
    }

    /// Downloads `mxc` and returns its bytes, asserting 200.
    pub async fn download_bytes(&self, mxc: &str) -> Vec<u8> {
        let resp = self.download(mxc).await;
        assert_eq!(resp.status(), StatusCode::OK, "download of {mxc}");
        resp.bytes().await.unwrap().to_vec()
    }

    /// `GET .../admin/datastores/{id}/size_estimate` with the shared secret.
    pub async fn size_estimate(&self, ds: &str, before_ts: Option<u64>) -> Value {
        let mut req = self
            .client
            .get(self.url(&format!(
                "/_matrix/media/unstable/admin/datastores/{ds}/size_estimate"
            )))
            .bearer_auth(SECRET);
        if let Some(ts) = before_ts {
            req = req.query(&[("before_ts", ts)]);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status();
        let text = resp.text().await.unwrap();
        assert_eq!(status, StatusCode::OK, "size_estimate of {ds}: {text}");
        serde_json::from_str(&text).unwrap()
    }
}

/// `(server, media_id)` of an `mxc://` URI.
pub fn parse_mxc(mxc: &str) -> (String, String) {
    let rest = mxc
        .strip_prefix("mxc://")
        .unwrap_or_else(|| panic!("not an mxc uri: {mxc}"));
    let (server, id) = rest
        .split_once('/')
        .unwrap_or_else(|| panic!("mxc uri without a media id: {mxc}"));
    (server.to_owned(), id.to_owned())
}

/// `n` random bytes.
pub fn random_bytes(n: usize) -> Vec<u8> {
    use rand::RngCore;
    let mut v = vec![0u8; n];
    rand::rng().fill_bytes(&mut v);
    v
}

/// Asserts `resp` is a Matrix error with `status` and `errcode`; returns the body.
pub async fn expect_error(resp: Response, status: StatusCode, errcode: &str) -> Value {
    let got = resp.status();
    let url = resp.url().clone();
    let ct = resp
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let text = resp.text().await.unwrap();
    assert_eq!(got, status, "status of {url}: body {text}");
    assert!(
        ct.starts_with("application/json"),
        "error of {url} is not JSON ({ct:?}): {text}"
    );
    let v: Value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("error body of {url} is not JSON ({e}): {text}"));
    assert_eq!(v["errcode"], errcode, "errcode of {url}: {text}");
    assert!(
        v["error"].is_string(),
        "error of {url} has no `error` string: {text}"
    );
    v
}

/// Every file below `dir`, recursively, skipping the `.spool` directory and the datastore's
/// identity marker.
pub fn blob_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries {
            let e = e.unwrap();
            let p = e.path();
            if e.file_type().unwrap().is_dir() {
                if e.file_name() != ".spool" {
                    stack.push(p);
                }
            } else if e.file_name() != media_ledger::datastore::MARKER_NAME {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// Number of blob files in a datastore directory (excluding `.spool`).
pub fn count_blobs(dir: &Path) -> usize {
    blob_files(dir).len()
}

/// Number of entries in `<dir>/.spool`.
pub fn spool_entries(dir: &Path) -> usize {
    std::fs::read_dir(dir.join(".spool")).map_or(0, |r| r.count())
}

/// Lowercase hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    let d = sha2::Sha256::digest(bytes);
    d.iter().map(|b| format!("{b:02x}")).collect()
}

/// A header as a string (panics when absent).
pub fn header<'a>(resp: &'a Response, name: &str) -> &'a str {
    resp.headers()
        .get(name)
        .unwrap_or_else(|| panic!("header {name} missing from {}", resp.url()))
        .to_str()
        .unwrap()
}

/// The `{server}/{id}` path part of an `mxc://` URI.
pub fn path_of(mxc: &str) -> String {
    let (s, id) = parse_mxc(mxc);
    format!("{s}/{id}")
}

/// The JSON of a 200 answer (the URL and body in the failure message otherwise).
pub async fn json_ok(resp: reqwest::Response) -> Value {
    let status = resp.status();
    let url = resp.url().clone();
    let text = resp.text().await.unwrap();
    assert_eq!(status, StatusCode::OK, "{url}: {text}");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{url}: not JSON ({e}): {text}"))
}

/// `GET /_matrix/media/unstable/admin/{path}` as the repository admin; its JSON.
pub async fn admin_get(srv: &TestServer, path: &str) -> Value {
    let resp = srv
        .client
        .get(srv.url(&format!("/_matrix/media/unstable/admin/{path}")))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    json_ok(resp).await
}
