//! A throwaway PostgreSQL server for the tests (the Rust twin of `tests/real_synapse/pg.py`):
//! `initdb` into a fresh folder under /tmp, `postgres` on a free port of 127.0.0.1 (its unix
//! socket in that folder, no system service involved), one UTF8 database owned by one
//! password-protected user. `stop()` / `start()` simulate an outage on the same data and port;
//! dropping it stops the server and removes the folder.
//!
//! PostgreSQL refuses to run as root: when the tests run as root (as in CI), the server and its
//! tools run as the `postgres` system user (created by Debian's `postgresql` package; its uid
//! and gid set in the child, as `runuser -u postgres` would, the program staying our own child:
//! signals reach it and we reap it), and the folder is theirs. Otherwise they run as the
//! current user. Either way the cluster's superuser is `postgres` (`initdb -U postgres`).
//!
//! The binaries are looked for in `$RS_PG_BIN`, then `/usr/lib/postgresql/<newest>/bin`
//! (where Debian puts them, off PATH), then on PATH.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::fs::File;
use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};
use tempfile::TempDir;

/// The role [`PgServer::launch`] creates (it owns [`DATABASE`]).
pub const USER: &str = "media_ledger";
/// The database [`PgServer::launch`] creates.
pub const DATABASE: &str = "media_ledger";
/// The cluster's superuser (whatever OS user runs it).
pub const SUPERUSER: &str = "postgres";
/// How long the server gets to start (and to stop, before harsher signals).
const READY_WITHIN: Duration = Duration::from_secs(30);

/// The folder holding PostgreSQL's programs (`initdb`, `postgres`, `psql`, `pg_isready`).
pub fn pg_bindir() -> PathBuf {
    if let Some(dir) = std::env::var_os("RS_PG_BIN").filter(|d| !d.is_empty()) {
        let dir = PathBuf::from(dir);
        assert!(
            dir.join("initdb").is_file(),
            "RS_PG_BIN={} holds no initdb: point it at PostgreSQL's bin folder, or unset it and \
             install Debian's postgresql package: .ci/deps does",
            dir.display()
        );
        return dir;
    }
    let version = |p: &Path| -> Vec<u64> {
        p.file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .split(|c: char| !c.is_ascii_digit())
            .filter_map(|n| n.parse().ok())
            .collect()
    };
    let newest = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.join("bin/initdb").is_file())
        .max_by_key(|p| version(p));
    if let Some(dir) = newest {
        return dir.join("bin");
    }
    let on_path = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .find(|d| d.join("initdb").is_file() && d.join("postgres").is_file());
    on_path.unwrap_or_else(|| {
        panic!(
            "PostgreSQL's binaries were not found (no /usr/lib/postgresql/*/bin/initdb, none on \
             PATH): install Debian's postgresql package: .ci/deps does (or set RS_PG_BIN to its \
             bin folder)"
        )
    })
}

/// The output of `id ARGS`, as a number.
fn id(args: &[&str]) -> u32 {
    let out = Command::new("id").args(args).output().expect("`id` runs");
    assert!(
        out.status.success(),
        "id {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or_else(|e| panic!("id {args:?} printed no number: {e}"))
}

/// `Some((uid, gid))` of the `postgres` system user when we are root (PostgreSQL refuses root),
/// `None` otherwise.
fn run_as() -> Option<(u32, u32)> {
    static AS: OnceLock<Option<(u32, u32)>> = OnceLock::new();
    *AS.get_or_init(|| {
        if id(&["-u"]) != 0 {
            return None;
        }
        let known = Command::new("id")
            .args(["-u", "postgres"])
            .output()
            .is_ok_and(|o| o.status.success());
        assert!(
            known,
            "running as root, and there is no `postgres` system user to run PostgreSQL as: \
             install Debian's postgresql package: .ci/deps does"
        );
        Some((id(&["-u", "postgres"]), id(&["-g", "postgres"])))
    })
}

/// A running (or stopped) PostgreSQL server.
pub struct PgServer {
    /// The cluster's folder: `data/`, the unix socket, `postgres.log`.
    dir: TempDir,
    bindir: PathBuf,
    /// Its port on 127.0.0.1 (the same across `stop()` / `start()`).
    pub port: u16,
    child: Option<Child>,
    /// The role owning [`PgServer::database`].
    pub user: String,
    /// Its password (random).
    pub password: String,
    /// The database made for the test.
    pub database: String,
}

impl PgServer {
    /// `initdb` into a fresh folder under /tmp, starts `postgres` on 127.0.0.1 on a free port
    /// (its unix socket in that folder, no system service), and creates one password-protected
    /// role ([`USER`]) owning one UTF8 database ([`DATABASE`]). Panics with a clear message
    /// when PostgreSQL is not installed.
    pub fn launch() -> Self {
        let bindir = pg_bindir();
        // Under /tmp (not a 0700 folder of ours): the postgres user must reach it. Short, too:
        // the unix socket's path has to fit in 107 bytes.
        let dir = tempfile::Builder::new()
            .prefix("ml-pg-")
            .tempdir_in("/tmp")
            .unwrap();
        if let Some((uid, gid)) = run_as() {
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid)).unwrap();
        }
        let password = {
            use rand::RngCore;
            let mut bytes = [0u8; 18];
            rand::rng().fill_bytes(&mut bytes);
            bytes.iter().map(|b| format!("{b:02x}")).collect::<String>()
        };
        let mut pg = Self {
            dir,
            bindir,
            port: super::s3::free_port(),
            child: None,
            user: USER.to_owned(),
            password,
            database: DATABASE.to_owned(),
        };
        let data = pg.data_dir();
        let initdb = pg
            .command("initdb")
            .arg("-D")
            .arg(&data)
            .args(["-U", SUPERUSER, "-E", "UTF8", "--locale=C"])
            .args(["--auth-local=trust", "--auth-host=scram-sha-256"])
            .args(["--no-sync", "--no-instructions"])
            .output()
            .expect("initdb runs");
        check("initdb", &initdb);
        pg.start();
        pg.psql_on(
            "postgres",
            &format!(
                "CREATE ROLE \"{}\" LOGIN PASSWORD '{}'",
                pg.user, pg.password
            ),
        );
        pg.psql_on(
            "postgres",
            &format!(
                "CREATE DATABASE \"{}\" OWNER \"{}\" ENCODING 'UTF8' LC_COLLATE 'C' \
                 LC_CTYPE 'C' TEMPLATE template0",
                pg.database, pg.user
            ),
        );
        pg
    }

    /// `postgres://user:password@127.0.0.1:port/database` (the user, password and database
    /// need no escaping).
    pub fn url(&self) -> String {
        format!(
            "postgres://{}:{}@127.0.0.1:{}/{}",
            self.user, self.password, self.port, self.database
        )
    }

    /// The cluster's folder (`data/`, the unix socket, `postgres.log`).
    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    /// The folder of the unix socket.
    pub fn socket_dir(&self) -> &Path {
        self.root()
    }

    fn data_dir(&self) -> PathBuf {
        self.root().join("data")
    }

    fn log_path(&self) -> PathBuf {
        self.root().join("postgres.log")
    }

    /// What the server logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// The last 3000 bytes of the log (for panic messages).
    fn log_tail(&self) -> String {
        let log = self.log();
        let mut start = log.len().saturating_sub(3000);
        while !log.is_char_boundary(start) {
            start += 1;
        }
        log[start..].to_owned()
    }

    /// Whether the server is running.
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// A command running `program` of the bindir: as `postgres` when we are root, in the
    /// cluster's folder, in the C.UTF-8 locale, no `PG*` variables of ours leaking in.
    fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(self.bindir.join(program));
        cmd.current_dir(self.root())
            .env("LC_ALL", "C.UTF-8")
            .env("LANG", "C.UTF-8")
            .stdin(Stdio::null());
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("PG") {
                cmd.env_remove(name);
            }
        }
        if let Some((uid, gid)) = run_as() {
            // std drops the supplementary groups (setgroups(0)) when root sets a uid.
            cmd.uid(uid).gid(gid);
        }
        cmd
    }

    /// Starts the server (again) on the same port and data; returns once it accepts
    /// connections (panics with the log's tail after 30 s, or if it exits).
    pub fn start(&mut self) {
        assert!(self.child.is_none(), "postgres already running");
        let log = File::options()
            .create(true)
            .append(true)
            .open(self.log_path())
            .unwrap();
        // The server as our child (not daemonized by pg_ctl): stopped with a signal, reaped by
        // us.
        let child = self
            .command("postgres")
            .arg("-D")
            .arg(self.data_dir())
            .arg("-p")
            .arg(self.port.to_string())
            .arg("-k")
            .arg(self.socket_dir())
            .args(["-c", "listen_addresses=127.0.0.1"])
            .args(["-c", "fsync=on", "-c", "synchronous_commit=on"])
            .args(["-c", "max_connections=100"])
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("postgres of {} starts: {e}", self.bindir.display()));
        self.child = Some(child);
        let deadline = Instant::now() + READY_WITHIN;
        loop {
            let ready = self
                .command("pg_isready")
                .arg("-q")
                .args(["-U", SUPERUSER, "-d", "postgres", "-h"])
                .arg(self.socket_dir())
                .arg("-p")
                .arg(self.port.to_string())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .expect("pg_isready runs");
            if ready.success() {
                return;
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                self.child = None;
                panic!(
                    "postgres exited with {status} before accepting connections on port {}:\n{}",
                    self.port,
                    self.log_tail()
                );
            }
            if Instant::now() >= deadline {
                let tail = self.log_tail();
                self.stop();
                panic!("postgres not ready within {READY_WITHIN:?}:\n{tail}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops the server (fast shutdown: SIGINT; SIGQUIT, then SIGKILL, if it lingers), keeping
    /// its data: simulates an outage. Returns once it has exited.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        for signal in ["INT", "QUIT"] {
            // As root we may signal the postgres user's process; otherwise it is ours.
            let _ = Command::new("kill")
                .arg(format!("-{signal}"))
                .arg(child.id().to_string())
                .stderr(Stdio::null())
                .status();
            let deadline = Instant::now() + READY_WITHIN;
            while Instant::now() < deadline {
                if child.try_wait().unwrap().is_some() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Runs one SQL statement in [`PgServer::database`] as the superuser (psql over the unix
    /// socket) and returns its output trimmed (unaligned, tuples only: `SELECT count(*) FROM t`
    /// gives `"3"`). Panics when psql fails.
    pub fn psql(&self, sql: &str) -> String {
        self.psql_on(&self.database, sql)
    }

    /// [`PgServer::psql`] in another database (`postgres`, …).
    pub fn psql_on(&self, database: &str, sql: &str) -> String {
        let out = self
            .command("psql")
            .args(["-X", "-q", "-tA", "-v", "ON_ERROR_STOP=1", "-h"])
            .arg(self.socket_dir())
            .arg("-p")
            .arg(self.port.to_string())
            .args(["-U", SUPERUSER, "-d", database, "-c", sql])
            .output()
            .expect("psql runs");
        check(&format!("psql -c {sql:?}"), &out);
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// Whether something accepts TCP connections on the server's port.
    pub fn accepts_tcp(&self) -> bool {
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_ok()
    }
}

/// Panics with `what`'s output unless it succeeded.
fn check(what: &str, out: &Output) {
    assert!(
        out.status.success(),
        "{what} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Drop for PgServer {
    fn drop(&mut self) {
        self.stop();
        // The folder goes with `dir` (as root, removing the postgres user's files works).
    }
}
