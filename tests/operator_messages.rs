#![allow(clippy::unwrap_used, clippy::expect_used)]
//! What the operator reads (issue #11 item 11): the real binary's stderr, a file here, carries
//! no ANSI colour codes, and the start-up check says which homeserver has no `cs_api` (only
//! static tokens work there) and which `cs_api` cannot be reached, with the cause, without
//! failing start-up. (The messages themselves are unit-tested in `src/homeserver_check.rs`.)

use crate::common;

use std::time::{Duration, Instant};

struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test]
async fn start_up_names_homeservers_whose_tokens_cannot_be_checked_in_plain_text() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let dead = free_port(); // nothing listens there
    let config = common::config_text(
        dir.path(),
        &common::Opts {
            bind: Some(format!("127.0.0.1:{port}")),
            homeservers: Some(format!(
                "[[homeservers]]\nname = \"localhost\"\ndefault = true\n\n\
                 [[homeservers]]\nname = \"down.test\"\ncs_api = \"http://127.0.0.1:{dead}\"\n"
            )),
            ..common::Opts::default()
        },
    );
    let config_path = dir.path().join("config.toml");
    std::fs::write(&config_path, &config).unwrap();
    let stderr_path = dir.path().join("stderr.log");
    let mut child = Child(
        std::process::Command::new(env!("CARGO_BIN_EXE_media-ledger"))
            .args(["serve", "--config"])
            .arg(&config_path)
            .env("RUST_LOG", "info")
            .env_remove("LOG_FORMAT")
            .stderr(std::fs::File::create(&stderr_path).unwrap())
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    // Both findings are logged (in the background, after the listener is up).
    let deadline = Instant::now() + Duration::from_secs(60);
    let log = loop {
        let log = std::fs::read_to_string(&stderr_path).unwrap();
        if log.contains("homeserver localhost: no cs_api")
            && log.contains("homeserver down.test: cs_api")
        {
            break log;
        }
        assert!(
            child.0.try_wait().unwrap().is_none(),
            "the server exited: {log}"
        );
        assert!(Instant::now() < deadline, "messages missing: {log}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        !log.contains('\u{1b}'),
        "ANSI escape codes in a log file: {log}"
    );
    let line = |needle: &str| {
        log.lines()
            .find(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("no line with {needle}: {log}"))
            .to_owned()
    };
    let no_cs_api = line("homeserver localhost: no cs_api");
    assert!(no_cs_api.contains("WARN"), "{no_cs_api}");
    assert!(no_cs_api.contains("static tokens"), "{no_cs_api}");
    let down = line("homeserver down.test: cs_api");
    assert!(
        down.contains("WARN") && down.contains("cannot be reached"),
        "{down}"
    );
    assert!(down.contains("onnection refused"), "the cause: {down}");
    // Start-up did not fail: the server answers.
    let resp = common::client()
        .get(format!("http://127.0.0.1:{port}/_matrix/media/v3/config"))
        .bearer_auth(common::ALICE)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), reqwest::StatusCode::OK);
}

/// `server.access_log`: on (the default) every answer is a `request answered` line; off, a
/// successful answer is not logged (the same requests, the same binary).
#[tokio::test]
async fn access_log_can_be_turned_off() {
    for on in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let config = common::config_text(
            dir.path(),
            &common::Opts {
                bind: Some(format!("127.0.0.1:{port}")),
                server_extra: format!("access_log = {on}\n"),
                ..common::Opts::default()
            },
        );
        let config_path = dir.path().join("config.toml");
        std::fs::write(&config_path, &config).unwrap();
        let log_path = dir.path().join("stderr.log");
        let _child = Child(
            std::process::Command::new(env!("CARGO_BIN_EXE_media-ledger"))
                .args(["serve", "--config"])
                .arg(&config_path)
                .env("RUST_LOG", "info")
                .env_remove("LOG_FORMAT")
                .stderr(std::fs::File::create(&log_path).unwrap())
                .stdout(std::process::Stdio::null())
                .spawn()
                .unwrap(),
        );
        let client = reqwest::Client::new();
        let url = format!("http://127.0.0.1:{port}/_matrix/media/v3/config");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(r) = client.get(&url).bearer_auth(common::ALICE).send().await {
                assert_eq!(r.status(), 200);
                break;
            }
            assert!(Instant::now() < deadline, "the server did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // The line is written before the answer is sent.
        let log = std::fs::read_to_string(&log_path).unwrap();
        let logged = log
            .lines()
            .any(|l| l.contains("request answered") && l.contains("/_matrix/media/v3/config"));
        assert_eq!(logged, on, "access_log = {on}: {log}");
    }
}
