#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The README's Caddy snippet, verbatim (read from README.md, only its site address and
//! upstream ports substituted: `http://localhost:PORT` instead of the TLS site), in front of the
//! real binary and a stub "Synapse" (issue #11 item 9): an upload and a download through it, the
//! client's address reaching the request log line (Caddy is a trusted proxy; a client's own
//! `X-Forwarded-For` is replaced by Caddy, not believed), an upload over `uploads.max_bytes`
//! answered 413 in Matrix JSON by media-ledger itself (Caddy sets no limit), and each route to
//! the right upstream: media, federation media, logout and Synapse's media admin API to
//! media-ledger (URL previews included); everything else to Synapse, the request URI unchanged. Needs
//! Debian's `caddy` (`.ci/deps` installs it); skipped with a message when no caddy is found.

use crate::common;
use common::proxy::{
    free_port, installed, media_ledger_behind_proxy, readme_block, request_line, wait_listening,
    Child,
};

use reqwest::StatusCode;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The README's Caddy site address, replaced by a TLS-free one in the test.
const SITE: &str = "matrix.example.org, matrix.example.org:8448 {";

fn caddy() -> Option<PathBuf> {
    installed(&["/usr/bin/caddy", "/usr/local/bin/caddy", "/usr/sbin/caddy"])
}

/// The ```caddy block of README.md.
fn readme_snippet() -> String {
    readme_block("caddy", SITE)
}

/// What the stub Synapse saw: the request URI as received, and its `Host`.
type Seen = Arc<Mutex<Vec<(String, String)>>>;

/// A stub "Synapse" on `port`: answers anything 200 `synapse` with `x-stub: synapse`.
async fn stub_synapse(port: u16) -> Seen {
    let seen: Seen = Arc::default();
    let log = seen.clone();
    let router = axum::Router::new().fallback(move |req: axum::extract::Request| {
        let log = log.clone();
        async move {
            let host = req
                .headers()
                .get("host")
                .and_then(|h| h.to_str().ok())
                .unwrap_or_default()
                .to_owned();
            log.lock().unwrap().push((req.uri().to_string(), host));
            ([("x-stub", "synapse")], "synapse")
        }
    });
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    seen
}

#[tokio::test]
async fn the_readme_caddy_snippet_fronts_media_ledger() {
    let Some(caddy) = caddy() else {
        eprintln!("caddy not installed (apt-get install caddy): skipping");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (ml_port, caddy_port, synapse_port) = (free_port(), free_port(), free_port());
    let synapse_seen = stub_synapse(synapse_port).await;

    // media-ledger: uploads up to 1 MiB, Caddy trusted, unknown hosts refused.
    let (_ml, ml_log) = media_ledger_behind_proxy(dir.path(), ml_port);

    // Caddy: the README's snippet, its site address plain HTTP on a free port, its upstreams
    // ours; no admin endpoint, and its data and config dirs in the temp dir.
    let snippet = readme_snippet();
    for must in [SITE, "127.0.0.1:8008", "127.0.0.1:8448"] {
        assert!(snippet.contains(must), "README snippet lacks {must:?}");
    }
    let snippet = snippet
        .replace(SITE, &format!("http://localhost:{caddy_port} {{"))
        .replace("127.0.0.1:8008", &format!("127.0.0.1:{ml_port}"))
        .replace("127.0.0.1:8448", &format!("127.0.0.1:{synapse_port}"));
    let caddyfile = format!("{{\n    admin off\n}}\n\n{snippet}");
    let caddyfile_path = dir.path().join("Caddyfile");
    std::fs::write(&caddyfile_path, &caddyfile).unwrap();
    let caddy_log = dir.path().join("caddy.log");
    let _caddy = Child(
        std::process::Command::new(&caddy)
            .args(["run", "--adapter", "caddyfile", "--config"])
            .arg(&caddyfile_path)
            .current_dir(dir.path())
            .env("HOME", dir.path())
            .env("XDG_CONFIG_HOME", dir.path().join("config"))
            .env("XDG_DATA_HOME", dir.path().join("data"))
            .stderr(std::fs::File::create(&caddy_log).unwrap())
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_listening(ml_port, "media-ledger", &ml_log).await;
    wait_listening(caddy_port, "caddy", &caddy_log).await;

    // The client connects from 127.0.0.2 (not a trusted proxy) and claims 203.0.113.7.
    let client = reqwest::Client::builder()
        .no_proxy()
        .local_address(std::net::IpAddr::from([127, 0, 0, 2]))
        .timeout(Duration::from_secs(120))
        .build()
        .unwrap();
    let via = |path: &str| format!("http://127.0.0.1:{caddy_port}{path}");
    let host = format!("localhost:{caddy_port}");

    let bytes = common::random_bytes(200_000);
    let resp = client
        .post(via("/_matrix/media/v3/upload"))
        .header(reqwest::header::HOST, &host)
        .header("x-forwarded-for", "203.0.113.7")
        .bearer_auth(common::ALICE)
        .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
        .body(bytes.clone())
        .send()
        .await
        .unwrap();
    let status = resp.status();
    let text = resp.text().await.unwrap();
    assert_eq!(
        status,
        StatusCode::OK,
        "upload through caddy: {text}\ncaddy: {}",
        std::fs::read_to_string(&caddy_log).unwrap_or_default()
    );
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let (server, id) = common::parse_mxc(v["content_uri"].as_str().unwrap());
    assert_eq!(server, "localhost");

    let resp = client
        .get(via(&format!(
            "/_matrix/client/v1/media/download/{server}/{id}"
        )))
        .header(reqwest::header::HOST, &host)
        .bearer_auth(common::ALICE)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(resp.headers().get("x-stub").is_none());
    assert_eq!(resp.bytes().await.unwrap().as_ref(), &bytes[..]);

    // Over uploads.max_bytes: media-ledger answers through Caddy, in Matrix JSON.
    let resp = client
        .post(via("/_matrix/media/v3/upload"))
        .header(reqwest::header::HOST, &host)
        .bearer_auth(common::ALICE)
        .body(vec![0u8; 2 * 1024 * 1024])
        .send()
        .await
        .unwrap();
    let body = common::expect_error(resp, StatusCode::PAYLOAD_TOO_LARGE, "M_TOO_LARGE").await;
    assert!(body["error"].is_string());

    // Each route reaches its upstream; Synapse gets the URI byte for byte and the Host.
    let make_join = "/_matrix/federation/v1/make_join/%21room%3Aexample.org/%40u%3Aexample.org";
    for (path, to_synapse) in [
        ("/_matrix/media/v3/preview_url?url=http://10.0.0.1/", false),
        (
            "/_matrix/client/v1/media/preview_url?url=http://10.0.0.1/",
            false,
        ),
        ("/_matrix/client/v3/login", true),
        ("/_matrix/key/v2/server", true),
        ("/_synapse/admin/v1/users/@alice:localhost", true),
        (make_join, true),
        ("/_matrix/media/v3/config", false),
        ("/_matrix/client/v1/media/config", false),
        ("/_matrix/federation/v1/media/download/nope", false),
        ("/_matrix/client/v3/logout", false),
        ("/_synapse/admin/v1/media/localhost/nope", false),
        ("/_synapse/admin/v1/users/@alice:localhost/media", false),
        ("/_synapse/admin/v1/statistics/users/media", false),
        (
            "/_synapse/admin/v1/room/!r:localhost/media/quarantine",
            false,
        ),
    ] {
        let method = if path.ends_with("/logout") || path.ends_with("/quarantine") {
            reqwest::Method::POST
        } else {
            reqwest::Method::GET
        };
        let resp = client
            .request(method, via(path))
            .header(reqwest::header::HOST, &host)
            .bearer_auth(common::ALICE)
            .send()
            .await
            .unwrap();
        assert_eq!(
            resp.headers().get("x-stub").is_some(),
            to_synapse,
            "{path}: {} {}",
            resp.status(),
            resp.text().await.unwrap_or_default()
        );
    }
    let seen = synapse_seen.lock().unwrap().clone();
    assert!(
        seen.iter().any(|(uri, h)| uri == make_join && h == &host),
        "{seen:?}"
    );

    // The upload's log line names the client Caddy saw (not the one it claimed) and the user.
    let line = request_line(&ml_log, "/_matrix/media/v3/upload").await;
    assert!(line.contains("client=127.0.0.2"), "{line}");
    assert!(line.contains("user=@alice:localhost"), "{line}");
    assert!(line.contains("host=localhost"), "{line}");
}
