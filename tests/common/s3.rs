//! An S3 server for the tests: `s3s-fs` on 127.0.0.1, its data in its own tempdir, killed on
//! drop. `stop()` / `start()` simulate an outage on the same root and port.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tempfile::TempDir;

/// Access key s3s-fs is started with.
pub const S3_ACCESS_KEY: &str = "media-ledger-test-ak";
/// Secret key s3s-fs is started with.
pub const S3_SECRET_KEY: &str = "media-ledger-test-secret";
/// The bucket of [`S3Server::launch`].
pub const BUCKET: &str = "media";
/// Extra datastore keys that make blobs of 6 MiB and more multipart uploads of 5 MiB parts.
pub const MULTIPART: &str = "multipart_threshold_bytes = 6291456\npart_size_bytes = 5242880\n";

/// The s3s-fs binary: `$MEDIA_LEDGER_S3S_FS`, else `target/tools/bin/s3s-fs`.
pub fn s3s_fs_binary() -> PathBuf {
    let path = std::env::var_os("MEDIA_LEDGER_S3S_FS")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target/tools/bin/s3s-fs"));
    assert!(
        path.is_file(),
        "s3s-fs not found: run .ci/run (it installs s3s-fs into target/tools) (looked for {})",
        path.display()
    );
    path
}

/// A port that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Polls until something accepts connections on `port` (panics after `within`); `alive` is
/// asked between attempts and may panic when the process meant to listen has died.
pub fn wait_for_port(port: u16, within: Duration, mut alive: impl FnMut()) {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let deadline = Instant::now() + within;
    loop {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return;
        }
        alive();
        assert!(
            Instant::now() < deadline,
            "nothing listens on {addr} after {within:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A running (or stopped) s3s-fs.
pub struct S3Server {
    dir: TempDir,
    /// Its port (the same across `stop()` / `start()`).
    pub port: u16,
    child: Option<Child>,
}

impl S3Server {
    /// Starts s3s-fs with one bucket, [`BUCKET`].
    pub fn launch() -> Self {
        Self::launch_with_buckets(&[BUCKET])
    }

    /// Starts s3s-fs with these buckets.
    pub fn launch_with_buckets(buckets: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        for b in buckets {
            std::fs::create_dir_all(dir.path().join("data").join(b)).unwrap();
        }
        let mut s = Self {
            dir,
            port: free_port(),
            child: None,
        };
        s.start();
        s
    }

    /// The directory s3s-fs serves (buckets are its subdirectories).
    pub fn root(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("s3s-fs.log")
    }

    /// What s3s-fs printed so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Starts s3s-fs again on the same root and port; returns once it accepts connections.
    pub fn start(&mut self) {
        assert!(self.child.is_none(), "s3s-fs already running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .unwrap();
        let child = Command::new(s3s_fs_binary())
            .args(["--host", "127.0.0.1", "--port"])
            .arg(self.port.to_string())
            .args(["--access-key", S3_ACCESS_KEY, "--secret-key", S3_SECRET_KEY])
            .arg(self.root())
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("s3s-fs starts");
        self.child = Some(child);
        let port = self.port;
        let log_path = self.log_path();
        let child = self.child.as_mut().unwrap();
        wait_for_port(port, Duration::from_secs(30), || {
            if let Some(status) = child.try_wait().unwrap() {
                panic!(
                    "s3s-fs exited with {status} before listening on {port}: {}",
                    std::fs::read_to_string(&log_path).unwrap_or_default()
                );
            }
        });
    }

    /// Kills s3s-fs (SIGKILL) and waits for it; the data stays.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SIGKILL also ends a frozen (SIGSTOPped) process.
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Sends `signal` (`STOP`, `CONT`) to s3s-fs.
    fn signal(&self, signal: &str) {
        let pid = self.child.as_ref().expect("s3s-fs running").id();
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(pid.to_string())
            .status()
            .unwrap();
        assert!(status.success(), "kill -{signal} {pid}");
    }

    /// Freezes s3s-fs (SIGSTOP): connections are still accepted by the kernel, but nothing
    /// answers.
    pub fn freeze(&self) {
        self.signal("STOP");
        // `kill` returns once the signal is sent; a thread busy in the kernel (a slow disk)
        // stops only when it gets back: wait until every thread is stopped.
        let pid = self.child.as_ref().expect("s3s-fs running").id();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while std::time::Instant::now() < deadline {
            let all_stopped = std::fs::read_dir(format!("/proc/{pid}/task"))
                .map(|tasks| {
                    tasks.filter_map(Result::ok).all(|t| {
                        std::fs::read_to_string(t.path().join("stat")).is_ok_and(|stat| {
                            stat.rsplit_once(')')
                                .is_some_and(|(_, rest)| rest.trim_start().starts_with('T'))
                        })
                    })
                })
                .unwrap_or(true);
            if all_stopped {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        panic!("s3s-fs did not stop within 30 s");
    }

    /// Undoes [`S3Server::freeze`] (SIGCONT).
    pub fn thaw(&self) {
        self.signal("CONT");
    }

    /// Whether it is running.
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// What the admin API shows as the uri of a datastore in `bucket`.
    pub fn uri(&self, bucket: &str) -> String {
        format!("s3://127.0.0.1:{}/{bucket}", self.port)
    }

    /// The directory holding the objects of `bucket`.
    pub fn bucket_dir(&self, bucket: &str) -> PathBuf {
        self.root().join(bucket)
    }

    /// Every object file of `bucket` (s3s-fs keeps its metadata outside the bucket directory).
    pub fn objects(&self, bucket: &str) -> Vec<PathBuf> {
        super::blob_files(&self.bucket_dir(bucket))
    }

    /// Number of objects in `bucket`.
    pub fn object_count(&self, bucket: &str) -> usize {
        self.objects(bucket).len()
    }

    /// The object file of the blob whose SHA-256 is `sha_hex` (no key prefix).
    pub fn object_path(&self, bucket: &str, sha_hex: &str) -> PathBuf {
        self.bucket_dir(bucket)
            .join(&sha_hex[0..2])
            .join(&sha_hex[2..4])
            .join(sha_hex)
    }

    /// Writes `bytes` as the object of the blob `sha_hex` behind the server's back (bit rot, a
    /// leftover of another tool). Its metadata goes with it: s3s-fs keeps a deleted object's
    /// checksum record, where a real server deletes it with the object, and a stale SHA-256
    /// checksum would vouch for the planted bytes.
    pub fn plant(&self, bucket: &str, sha_hex: &str, bytes: &[u8]) -> PathBuf {
        use base64::Engine;
        let path = self.object_path(bucket, sha_hex);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, bytes).unwrap();
        let enc = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
        let key = format!("{}/{}/{sha_hex}", &sha_hex[0..2], &sha_hex[2..4]);
        let info = self.root().join(format!(
            ".bucket-{}.object-{}.internal.json",
            enc(bucket),
            enc(&key)
        ));
        let _ = std::fs::remove_file(info);
        path
    }

    /// Whether `bucket` holds the blob whose SHA-256 is `sha_hex`.
    pub fn has_object(&self, bucket: &str, sha_hex: &str) -> bool {
        self.object_path(bucket, sha_hex).is_file()
    }

    /// A `[[datastores]]` entry of type s3 in `bucket`: path-style, us-east-1, a 2 s connect
    /// and 20 s read timeout unless `extra` sets them. `kinds` is TOML (`["all"]`), `extra`
    /// more keys (e.g. [`MULTIPART`]).
    pub fn datastore_toml(&self, id: &str, bucket: &str, kinds: &str, extra: &str) -> String {
        let mut timeouts = String::new();
        for (key, value) in [("connect_timeout_ms", 2000), ("read_timeout_ms", 20_000)] {
            if !extra.contains(key) {
                timeouts.push_str(&format!("{key} = {value}\n"));
            }
        }
        format!(
            r#"
[[datastores]]
id = "{id}"
type = "s3"
kinds = {kinds}
endpoint = "{endpoint}"
region = "us-east-1"
bucket = "{bucket}"
access_key_id = "{S3_ACCESS_KEY}"
secret_access_key = "{S3_SECRET_KEY}"
path_style = true
{timeouts}{extra}
"#,
            endpoint = self.endpoint(),
        )
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Where files of a file datastore `dir` for the blob `sha_hex` live.
pub fn file_blob_path(dir: &Path, sha_hex: &str) -> PathBuf {
    dir.join(&sha_hex[0..2]).join(&sha_hex[2..4]).join(sha_hex)
}
