#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The README's nginx snippet, verbatim (read from README.md, only its addresses and the body
//! limit substituted), in front of the real binary (issue #11 item 9): an upload and a download
//! through it, the client's `X-Forwarded-For` reaching the request log line (nginx is a trusted
//! proxy) with the user, `X-Forwarded-Host` picking the homeserver under
//! `server.refuse_unknown_hosts`, and nginx's own 413 answered as Matrix JSON. Needs Debian's
//! `nginx-light` (`.ci/deps` installs it); skipped with a message when no nginx is found.

use crate::common;
use common::proxy::{
    free_port, installed, media_ledger_behind_proxy, readme_block, request_line, wait_listening,
    Child,
};

use reqwest::StatusCode;
use std::path::PathBuf;

fn nginx() -> Option<PathBuf> {
    installed(&["/usr/sbin/nginx", "/usr/bin/nginx", "/usr/local/sbin/nginx"])
}

/// The README's nginx block for the whole server (the one that sets the body limit; other
/// nginx blocks are fragments of it).
fn readme_snippet() -> String {
    readme_block("nginx", "client_max_body_size")
}

#[tokio::test]
async fn the_readme_nginx_snippet_fronts_media_ledger() {
    let Some(nginx) = nginx() else {
        eprintln!("nginx not installed (apt-get install nginx-light): skipping");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (ml_port, nginx_port, synapse_port) = (free_port(), free_port(), free_port());

    // media-ledger: uploads up to 1 MiB, nginx trusted, unknown hosts refused.
    let (_ml, ml_log) = media_ledger_behind_proxy(dir.path(), ml_port);

    // nginx: the README's snippet, its addresses and body limit (= uploads.max_bytes) ours.
    let snippet = readme_snippet();
    for must in [
        "127.0.0.1:8008",
        "127.0.0.1:8448",
        "client_max_body_size 100M;",
    ] {
        assert!(snippet.contains(must), "README snippet lacks {must:?}");
    }
    let snippet = snippet
        .replace("127.0.0.1:8008", &format!("127.0.0.1:{ml_port}"))
        .replace("127.0.0.1:8448", &format!("127.0.0.1:{synapse_port}"))
        .replace("client_max_body_size 100M;", "client_max_body_size 1M;");
    let d = dir.path().display();
    let nginx_conf = format!(
        "daemon off;\nmaster_process off;\npid {d}/nginx.pid;\nerror_log {d}/nginx-error.log;\n\
         events {{}}\nhttp {{\n  access_log off;\n  client_body_temp_path {d}/body;\n\
         proxy_temp_path {d}/proxy;\n  fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n\
         scgi_temp_path {d}/scgi;\n  server {{\n    listen 127.0.0.1:{nginx_port};\n\
         server_name localhost;\n{snippet}\n  }}\n}}\n"
    );
    let nginx_conf_path = dir.path().join("nginx.conf");
    std::fs::write(&nginx_conf_path, &nginx_conf).unwrap();
    let nginx_log = dir.path().join("nginx-stderr.log");
    let _nginx = Child(
        std::process::Command::new(&nginx)
            .arg("-p")
            .arg(dir.path())
            .arg("-c")
            .arg(&nginx_conf_path)
            .arg("-e")
            .arg(dir.path().join("nginx-error.log"))
            .stderr(std::fs::File::create(&nginx_log).unwrap())
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_listening(ml_port, "media-ledger", &ml_log).await;
    wait_listening(nginx_port, "nginx", &dir.path().join("nginx-error.log")).await;

    let client = common::client();
    let via = |path: &str| format!("http://127.0.0.1:{nginx_port}{path}");
    // A client of homeserver `localhost` (its Host), from 203.0.113.7 as far as nginx knows.
    let bytes = common::random_bytes(200_000);
    let resp = client
        .post(via("/_matrix/media/v3/upload"))
        .header(reqwest::header::HOST, format!("localhost:{nginx_port}"))
        .header("x-forwarded-for", "203.0.113.7")
        .bearer_auth(common::ALICE)
        .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
        .body(bytes.clone())
        .send()
        .await
        .unwrap();
    let status = resp.status();
    let text = resp.text().await.unwrap();
    assert_eq!(status, StatusCode::OK, "upload through nginx: {text}");
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let (server, id) = common::parse_mxc(v["content_uri"].as_str().unwrap());
    assert_eq!(server, "localhost");

    let resp = client
        .get(via(&format!(
            "/_matrix/client/v1/media/download/{server}/{id}"
        )))
        .header(reqwest::header::HOST, "localhost")
        .bearer_auth(common::ALICE)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.bytes().await.unwrap().as_ref(), &bytes[..]);

    // Over client_max_body_size: nginx answers, in Matrix JSON.
    let resp = client
        .post(via("/_matrix/media/v3/upload"))
        .header(reqwest::header::HOST, "localhost")
        .bearer_auth(common::ALICE)
        .body(vec![0u8; 2 * 1024 * 1024])
        .send()
        .await
        .unwrap();
    let body = common::expect_error(resp, StatusCode::PAYLOAD_TOO_LARGE, "M_TOO_LARGE").await;
    assert!(body["error"].is_string());

    // The upload's log line names the forwarded client and the user.
    let line = request_line(&ml_log, "/_matrix/media/v3/upload").await;
    assert!(line.contains("client=203.0.113.7"), "{line}");
    assert!(line.contains("user=@alice:localhost"), "{line}");
    assert!(line.contains("host=localhost"), "{line}");
}
