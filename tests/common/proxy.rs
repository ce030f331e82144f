//! What the reverse-proxy suites (`nginx.rs`, `caddy.rs`) share: child processes killed on
//! drop, free ports, a README block, the real binary started behind the proxy, and its request
//! log line.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// A child process, killed when dropped.
pub struct Child(pub std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A port nothing listens on now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The first of `candidates` that exists.
pub fn installed(candidates: &[&str]) -> Option<PathBuf> {
    candidates.iter().map(PathBuf::from).find(|p| p.exists())
}

/// The first ```` ```lang ```` block of README.md that contains `marker`.
pub fn readme_block(lang: &str, marker: &str) -> String {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    readme
        .split(&format!("```{lang}\n"))
        .skip(1)
        .filter_map(|block| block.split("```").next())
        .find(|block| block.contains(marker))
        .unwrap_or_else(|| panic!("README has no {lang} block with {marker:?}"))
        .to_owned()
}

/// Waits until something answers on `port`.
pub async fn wait_listening(port: u16, what: &str, log: &Path) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        assert!(
            Instant::now() < deadline,
            "{what} did not start: {}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The real binary on `port` in `dir`, behind a proxy on 127.0.0.1: uploads up to 1 MiB, the
/// proxy trusted, unknown hosts refused; logs at INFO into the returned file.
pub fn media_ledger_behind_proxy(dir: &Path, port: u16) -> (Child, PathBuf) {
    let config = super::config_text(
        dir,
        &super::Opts {
            bind: Some(format!("127.0.0.1:{port}")),
            max_bytes: 1024 * 1024,
            server_extra: "trusted_proxies = [\"127.0.0.1\"]\nrefuse_unknown_hosts = true\n"
                .to_owned(),
            ..super::Opts::default()
        },
    );
    let config_path = dir.join("config.toml");
    std::fs::write(&config_path, &config).unwrap();
    let log = dir.join("media-ledger.log");
    let child = Child(
        std::process::Command::new(env!("CARGO_BIN_EXE_media-ledger"))
            .args(["serve", "--config"])
            .arg(&config_path)
            .env("RUST_LOG", "info")
            .env_remove("LOG_FORMAT")
            .stderr(std::fs::File::create(&log).unwrap())
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    (child, log)
}

/// The `request answered` line of the first request to `path` in `log` (waits for it).
pub async fn request_line(log: &Path, path: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = std::fs::read_to_string(log).unwrap();
        if let Some(line) = text
            .lines()
            .find(|l| l.contains("request answered") && l.contains(path))
        {
            return line.to_owned();
        }
        assert!(Instant::now() < deadline, "no request line in {text}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
