//! The real `media-ledger` binary as a child process for the crash test: where it is (built
//! when missing or older than the sources), its config, start until it answers, SIGKILL,
//! graceful stop, and `media-ledger verify`.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::io::Read;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

/// The tests' throwaway PostgreSQL (the server crate's `tests/common/pg.rs`), for the cluster
/// mode (`CRASH_CLUSTER=1`).
#[path = "../../../tests/common/pg.rs"]
pub mod pg;

/// What `pg` takes its port from.
pub mod s3 {
    /// A free loopback port.
    pub fn free_port() -> u16 {
        super::free_port()
    }
}

/// The shared-secret admin token of the config.
pub const SECRET: &str = "crash-shared-secret";
/// The homeserver name.
pub const SERVER: &str = "localhost";
/// Static user tokens and their users.
pub const USERS: [(&str, &str); 2] = [
    ("crash-alice-token", "@alice:localhost"),
    ("crash-bob-token", "@bob:localhost"),
];

/// The workspace root (the parent of `replay-tests/`).
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("replay-tests sits in the workspace")
        .to_owned()
}

/// Newest modification time of the files below `dir` (recursively).
fn newest_below(dir: &Path, newest: &mut SystemTime) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        let Ok(meta) = e.metadata() else { continue };
        if meta.is_dir() {
            newest_below(&p, newest);
        } else if let Ok(m) = meta.modified() {
            *newest = (*newest).max(m);
        }
    }
}

/// Whether `bin` is older than a source it is built from (the server, events, projections,
/// their manifests, the lock file).
fn stale(bin: &Path, ws: &Path) -> bool {
    let Ok(built) = std::fs::metadata(bin).and_then(|m| m.modified()) else {
        return true;
    };
    let mut newest = SystemTime::UNIX_EPOCH;
    for d in ["src", "events/src", "projections/src"] {
        newest_below(&ws.join(d), &mut newest);
    }
    for f in [
        "Cargo.toml",
        "Cargo.lock",
        "events/Cargo.toml",
        "projections/Cargo.toml",
    ] {
        if let Ok(m) = std::fs::metadata(ws.join(f)).and_then(|m| m.modified()) {
            newest = newest.max(m);
        }
    }
    newest > built
}

/// The server binary: `CRASH_BIN` if set, else `media-ledger` in this test's profile
/// directory (`<target dir>/<profile>/`, found from the test executable, so `CARGO_TARGET_DIR`
/// and `--release` are followed). Built with `cargo build --bin media-ledger` when missing or
/// older than the sources (`cargo test --workspace` builds it before the tests run; `cargo
/// test -p media-ledger-replay-tests` does not).
pub fn server_binary() -> PathBuf {
    if let Ok(p) = std::env::var("CRASH_BIN") {
        return p.into();
    }
    let exe = std::env::current_exe().expect("test executable path");
    // <target>/<profile>/deps/crash-<hash>
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test executable in <target>/<profile>/deps")
        .to_owned();
    let bin = profile_dir.join("media-ledger");
    let ws = workspace();
    if stale(&bin, &ws) {
        eprintln!(
            "crash: building {} (missing or older than the sources)",
            bin.display()
        );
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.args(["build", "-p", "media-ledger", "--bin", "media-ledger"])
            .current_dir(&ws);
        if profile_dir.file_name().is_some_and(|n| n == "release") {
            cmd.arg("--release");
        }
        if let Some(target) = profile_dir.parent() {
            cmd.env("CARGO_TARGET_DIR", target);
        }
        let status = cmd.status().expect("running cargo build");
        assert!(status.success(), "cargo build --bin media-ledger failed");
    }
    assert!(bin.exists(), "no server binary at {}", bin.display());
    bin
}

/// A free loopback port (free when asked: another process may take it before the server
/// binds, which [`start`] retries).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A TOML basic string.
fn quoted(p: &Path) -> String {
    format!("{:?}", p.display().to_string())
}

/// The remote homeserver of the crash test: a second server process, never killed, whose
/// media the killed server fetches over federation.
pub const ORIGIN: &str = "origin.test";
/// The origin's static user token and user.
pub const ORIGIN_USER: (&str, &str) = ("crash-origin-token", "@carol:origin.test");

/// One server process of the test: its homeserver, directory, port (kept across restarts, so
/// that its peer's pin stays right), the peer it pins, and its file datastores.
pub struct Node {
    /// The homeserver it serves.
    pub server: &'static str,
    /// Its static user tokens and users.
    pub users: Vec<(&'static str, &'static str)>,
    /// Everything it keeps is below this directory.
    pub dir: PathBuf,
    /// Its loopback port.
    pub port: u16,
    /// The other server: (name, base URL), pinned for federation.
    pub peer: (&'static str, String),
    /// Its file datastores: ids; each keeps its files in `<media root>/<id>`.
    pub datastores: Vec<&'static str>,
    /// Cluster mode: the shared log's URL (then the datastores are `shared = true`).
    pub shared_log: Option<String>,
    /// Where its datastores and signing key are, when not in `dir` (a second node of a
    /// cluster uses the first one's).
    pub media_root: Option<PathBuf>,
}

impl Node {
    /// `http://127.0.0.1:PORT`.
    pub fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The directory of datastore `id`.
    pub fn media_dir(&self, id: &str) -> PathBuf {
        self.media_root.as_ref().unwrap_or(&self.dir).join(id)
    }

    /// Its config file.
    pub fn config_path(&self) -> PathBuf {
        self.dir.join("config.toml")
    }

    /// Its config.
    pub fn config_text(&self) -> String {
        let tokens: String = self
            .users
            .iter()
            .map(|(t, u)| format!("[[auth.static_tokens]]\ntoken = \"{t}\"\nuser_id = \"{u}\"\n\n"))
            .collect();
        let datastores: String = self
            .datastores
            .iter()
            .map(|id| {
                format!(
                    "[[datastores]]\nid = \"{id}\"\ntype = \"file\"\npath = {}\nkinds = [\"all\"]\n{}\n",
                    quoted(&self.media_dir(id)),
                    if self.shared_log.is_some() { "shared = true\n" } else { "" }
                )
            })
            .collect();
        let dir = &self.dir;
        format!(
            r#"[server]
bind = "127.0.0.1:{port}"

[database]
path = {ledger}
{shared}

[uploads]
max_bytes = 4194304
max_pending_per_user = 10000

[downloads]
# Every download records an access event: more writes in flight when the process is killed.
access_record_interval_ms = 0
default_timeout_ms = 0
# Anonymous downloads of new media on the deprecated endpoints are part of the load.
freeze_unauthenticated = false

[auth]
shared_secret = "{SECRET}"
admins = []

[federation]
signing_key_path = {key}
pins = {{ {peer:?} = {peer_url:?} }}
timeout_ms = 20000

[transfers]
retry_base_ms = 50

[rate_limits]
enabled = false

{tokens}[[homeservers]]
name = "{server}"
default = true

{datastores}"#,
            port = self.port,
            server = self.server,
            peer = self.peer.0,
            peer_url = self.peer.1,
            ledger = quoted(&dir.join("ledger")),
            key = quoted(&self.media_root.as_ref().unwrap_or(dir).join("signing.key")),
            shared = self
                .shared_log
                .as_ref()
                .map(|url| format!(
                    "backend = \"postgres\"\nurl = {url:?}\nfollow_interval_ms = 50"
                ))
                .unwrap_or_default(),
        )
    }
}

/// A running server process. Dropping it kills the process (a failed test leaves none behind).
pub struct Proc {
    /// The child process.
    pub child: Child,
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    /// Its stderr (the log).
    pub log: PathBuf,
}

impl Drop for Proc {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

impl Proc {
    /// SIGKILL, then reap.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM (the graceful stop path) and wait up to `limit`; the exit status must be 0.
    pub fn terminate(&mut self, limit: Duration) -> Result<(), String> {
        let pid = self.child.id().to_string();
        let status = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .map_err(|e| format!("kill -TERM {pid}: {e}"))?;
        if !status.success() {
            return Err(format!("kill -TERM {pid} failed"));
        }
        let started = Instant::now();
        loop {
            match self.child.try_wait() {
                Ok(Some(s)) if s.success() => return Ok(()),
                Ok(Some(s)) => {
                    return Err(format!(
                        "server exited with {s} on SIGTERM; log:\n{}",
                        log_tail(&self.log)
                    ))
                }
                Ok(None) if started.elapsed() > limit => {
                    self.kill();
                    return Err(format!("server did not stop within {limit:?} of SIGTERM"));
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(20)),
                Err(e) => return Err(format!("waiting for the server: {e}")),
            }
        }
    }

    /// Whether the process still runs.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

/// The last lines of a log file.
pub fn log_tail(log: &Path) -> String {
    let mut text = String::new();
    if let Ok(mut f) = std::fs::File::open(log) {
        let _ = f.read_to_string(&mut text);
    }
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

/// Writes the node's config to `<dir>/config.toml` and spawns `bin serve` with its stderr
/// in `log`. Does not wait.
pub fn spawn(bin: &Path, node: &Node, log: &Path) -> Proc {
    let config = node.config_path();
    std::fs::write(&config, node.config_text()).expect("writing the config");
    let err = std::fs::File::create(log).expect("creating the log file");
    let child = Command::new(bin)
        .args(["serve", "--config"])
        .arg(&config)
        .env(
            "RUST_LOG",
            std::env::var("CRASH_LOG").unwrap_or_else(|_| "info".into()),
        )
        .env_remove("LOG_FORMAT")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(err)
        .spawn()
        .expect("spawning the server");
    Proc {
        child,
        base: node.base(),
        log: log.to_owned(),
    }
}

/// Spawns the server and waits until `GET /_matrix/media/v3/config` (with a user token)
/// answers 200 (at most `limit`). The port stays the node's: when it is still taken (the
/// killed process's socket, or another program), the start is retried after a pause.
pub async fn start(bin: &Path, node: &Node, log: &Path, limit: Duration) -> (Proc, Duration) {
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let token = node.users[0].0;
    for attempt in 0..40 {
        let started = Instant::now();
        let mut p = spawn(bin, node, log);
        let url = format!("{}/_matrix/media/v3/config", p.base);
        loop {
            if !p.alive() {
                let tail = log_tail(log);
                if tail.contains("binding") && attempt < 39 {
                    std::thread::sleep(Duration::from_millis(500));
                    break; // the port is still taken: again
                }
                panic!("the server exited during start-up; log:\n{tail}");
            }
            if started.elapsed() > limit {
                p.kill();
                panic!(
                    "the server did not answer within {limit:?}; log:\n{}",
                    log_tail(log)
                );
            }
            if let Ok(r) = client.get(&url).bearer_auth(token).send().await {
                if r.status() == reqwest::StatusCode::OK {
                    return (p, started.elapsed());
                }
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    unreachable!("start retries ended")
}

/// `media-ledger verify --config <dir>/config.toml`: `Ok(stdout)` on exit 0, else what it
/// said and its exit code.
pub fn verify(bin: &Path, node: &Node) -> Result<String, String> {
    let out = Command::new(bin)
        .args(["verify", "--config"])
        .arg(node.config_path())
        .env("RUST_LOG", "warn")
        .output()
        .map_err(|e| format!("running verify: {e}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    if out.status.success() {
        Ok(stdout)
    } else {
        Err(format!(
            "verify exited with {}: {stdout} {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Every file below the datastore directory `media`, outside `.spool`, but its identity
/// marker (`.media-ledger-datastore`): (file name, path).
pub fn blob_files(media: &Path) -> Vec<(String, PathBuf)> {
    let mut out = Vec::new();
    let mut stack = vec![media.to_owned()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                if e.file_name() != ".spool" {
                    stack.push(p);
                }
            } else if e.file_name() != media_ledger::datastore::MARKER_NAME {
                out.push((e.file_name().to_string_lossy().into_owned(), p));
            }
        }
    }
    out.sort();
    out
}

/// The entries of `<media>/.spool`.
pub fn spool_entries(media: &Path) -> Vec<String> {
    std::fs::read_dir(media.join(".spool"))
        .map(|r| {
            r.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}
