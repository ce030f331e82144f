#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Federation signing keys beside a homeserver (issue #11 item 8): `media-ledger keys print`
//! prints the key file line in Synapse's exact format and `keys import` makes Synapse's key ours
//! (the real binary, then the key a real server publishes), one key per homeserver, the start-up
//! check against a fake homeserver key server, and a remote's 401 body in the fetch error.

use crate::common::{self, Opts, TestServer};

use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use base64::Engine as _;
use media_ledger::config::{Config, FederationConfig, HomeserverConfig};
use media_ledger::federation::client::{Client, RemoteError};
use media_ledger::federation::diagnose::check_published;
use media_ledger::federation::keyfile::Keyring;
use media_ledger::federation::keys::SigningKey;
use media_ledger::homeserver_check::Finding;
use media_ledger_events::ServerName;
use serde_json::Value;
use std::path::Path;
use std::sync::Arc;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD_NO_PAD;

/// Runs the binary with `args` and the config `config`; (success, stdout, stderr).
fn run(config: &Path, args: &[&str]) -> (bool, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_media-ledger"))
        .args(args)
        .arg("--config")
        .arg(config)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

/// `keys import X --force` where X is our own key file (README's layout pointing
/// `signing_key_path` at Synapse's file), even spelt differently, is refused and leaves
/// Synapse's file (all its keys, its mode) as it was.
#[test]
fn keys_import_of_our_own_key_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let synapse = dir.path().join("hs.signing.key");
    let text = format!(
        "ed25519 a_HsKy {}\ned25519 a_Old1 {}\n",
        B64.encode([8u8; 32]),
        B64.encode([9u8; 32])
    );
    std::fs::write(&synapse, &text).unwrap();
    let opts = Opts {
        extra_toml: "[federation]\nsigning_key_path = {dir:hs.signing.key}\n".to_owned(),
        ..Opts::default()
    };
    let config = dir.path().join("config.toml");
    std::fs::write(&config, common::config_text(dir.path(), &opts)).unwrap();
    let same = dir.path().join(".").join("hs.signing.key");
    for arg in [synapse.to_str().unwrap(), same.to_str().unwrap()] {
        let (ok, _, err) = run(&config, &["keys", "import", arg, "--force"]);
        assert!(!ok, "{err}");
        assert!(err.contains("already the key file"), "{err}");
        assert_eq!(std::fs::read_to_string(&synapse).unwrap(), text);
    }
}

fn two_homeservers() -> String {
    "[[homeservers]]\nname = \"a.test\"\ndefault = true\n\n\
     [[homeservers]]\nname = \"b.test\"\n"
        .to_owned()
}

#[tokio::test]
async fn keys_print_and_import_speak_synapses_key_file_format() {
    let dir = tempfile::tempdir().unwrap();
    let opts = Opts {
        homeservers: Some(two_homeservers()),
        extra_toml: "[federation]\nsigning_key_path = {dir:keys/ml.key}\n".to_owned(),
        ..Opts::default()
    };
    let config = dir.path().join("config.toml");
    std::fs::write(&config, common::config_text(dir.path(), &opts)).unwrap();
    let key_file = dir.path().join("keys/ml.key");

    // print: generates the key, prints exactly the file's line (Synapse's format).
    let (ok, out, err) = run(&config, &["keys", "print"]);
    assert!(ok, "{err}");
    assert_eq!(out, std::fs::read_to_string(&key_file).unwrap());
    let fields: Vec<&str> = out.strip_suffix('\n').unwrap().split(' ').collect();
    assert_eq!(fields.len(), 3, "{out:?}");
    assert_eq!(fields[0], "ed25519");
    assert!(
        fields[1].starts_with("a_") && fields[1].len() == 6,
        "{out:?}"
    );
    assert_eq!(B64.decode(fields[2]).unwrap().len(), 32, "{out:?}");
    let generated = SigningKey::load_or_generate(&key_file).unwrap();
    assert!(err.contains(generated.key_id()) && err.contains(&generated.public_key_base64()));
    // Printed again: the same key.
    assert_eq!(run(&config, &["keys", "print"]).1, out);

    // import: refused over our existing key without --force, then Synapse's first key.
    let synapse = dir.path().join("hs.signing.key");
    std::fs::write(
        &synapse,
        format!(
            "ed25519 a_HsKy {}\ned25519 a_Old1 {}\n",
            B64.encode([8u8; 32]),
            B64.encode([9u8; 32])
        ),
    )
    .unwrap();
    let synapse_arg = synapse.to_str().unwrap();
    let (ok, _, err) = run(&config, &["keys", "import", synapse_arg]);
    assert!(!ok && err.contains("--force"), "{err}");
    assert_eq!(std::fs::read_to_string(&key_file).unwrap(), out);
    let (ok, _, err) = run(&config, &["keys", "import", synapse_arg, "--force"]);
    assert!(ok, "{err}");
    let line = format!("ed25519 a_HsKy {}\n", B64.encode([8u8; 32]));
    assert_eq!(std::fs::read_to_string(&key_file).unwrap(), line);
    assert_eq!(run(&config, &["keys", "print"]).1, line);
    let (ok, _, err) = run(&config, &["keys", "nonsense"]);
    assert!(!ok && err.contains("keys needs"), "{err}");

    // The server publishes the imported key, for both homeservers (one key file).
    let server = media_ledger::server::start(Config::load(&config).unwrap())
        .await
        .unwrap();
    let base = format!("http://{}", server.addr);
    let imported = SigningKey::from_seed("a_HsKy", [8; 32]).unwrap();
    for host in ["a.test", "b.test"] {
        let keys = published_at(&base, host).await;
        assert_eq!(
            keys["verify_keys"]["ed25519:a_HsKy"]["key"],
            imported.public_key_base64().as_str(),
            "{host}: {keys}"
        );
    }
    server.stop().await.unwrap();
}

async fn published(srv: &TestServer, host: &str) -> Value {
    published_at(&srv.base, host).await
}

async fn published_at(base: &str, host: &str) -> Value {
    common::client()
        .get(format!("{base}/_matrix/key/v2/server"))
        .header("Host", host)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

#[tokio::test]
async fn each_homeserver_signs_with_its_own_key_file() {
    let opts = Opts {
        homeservers: Some(two_homeservers()),
        extra_toml: "[federation]\nsigning_key_path = {dir:a.key}\n\
                     signing_key_paths = { \"b.test\" = {dir:b.key} }\n"
            .to_owned(),
        ..Opts::default()
    };
    let mut srv = TestServer::start_with(opts).await;
    let a = SigningKey::load_or_generate(&srv.path_of("a.key")).unwrap();
    let b = SigningKey::load_or_generate(&srv.path_of("b.key")).unwrap();
    assert_ne!(a.public_key_base64(), b.public_key_base64());
    for (host, key) in [("a.test", &a), ("b.test", &b)] {
        let keys = published(&srv, host).await;
        let ids: Vec<&String> = keys["verify_keys"].as_object().unwrap().keys().collect();
        assert_eq!(ids, [key.key_id()], "{host}: {keys}");
        assert_eq!(
            keys["verify_keys"][key.key_id()]["key"],
            key.public_key_base64().as_str()
        );
    }
    // The CLI needs to be told which one.
    let config = srv.dir.path().join("config.toml");
    std::fs::write(&config, &srv.config_text).unwrap();
    let (ok, _, err) = run(&config, &["keys", "print"]);
    assert!(!ok && err.contains("--homeserver"), "{err}");
    let (ok, out, err) = run(&config, &["keys", "print", "--homeserver", "b.test"]);
    assert!(ok, "{err}");
    assert_eq!(out, b.synapse_line());
    srv.stop().await;

    // A key file for a homeserver that is not configured is refused.
    let text = srv.config_text.replace("\"b.test\" =", "\"c.test\" =");
    let err = Config::parse(&text).unwrap_err().to_string();
    assert!(err.contains("c.test"), "{err}");
}

/// A homeserver's `/_matrix/key/v2/server` answer publishing `keys` (the first signs), as
/// Synapse does: every key of its key file in `verify_keys`, signed by each.
fn homeserver_answer(name: &str, keys: &[&SigningKey]) -> Value {
    let mut verify = serde_json::Map::new();
    for k in keys {
        verify.insert(
            k.key_id().to_owned(),
            serde_json::json!({ "key": k.public_key_base64() }),
        );
    }
    let mut answer = serde_json::json!({
        "server_name": name,
        "valid_until_ts": media_ledger::clock::now_ms() + 3_600_000,
        "verify_keys": verify,
        "old_verify_keys": {},
    });
    for k in keys {
        k.sign_json(name, &mut answer).unwrap();
    }
    answer
}

/// Serves `answer` at `/_matrix/key/v2/server` (or 404 with `None`) on loopback.
async fn key_server(answer: Option<Value>) -> String {
    let router = axum::Router::new().route(
        "/_matrix/key/v2/server",
        get(move || {
            let answer = answer.clone();
            async move {
                match answer {
                    Some(a) => axum::Json(a).into_response(),
                    None => StatusCode::NOT_FOUND.into_response(),
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    format!("http://{addr}")
}

fn hs(name: &str, cs_api: Option<String>) -> HomeserverConfig {
    toml::from_str(&match cs_api {
        Some(url) => format!("name = \"{name}\"\ncs_api = \"{url}\"\n"),
        None => format!("name = \"{name}\"\n"),
    })
    .unwrap()
}

fn federation_client(pins: &[(&str, &str)], key: &SigningKey) -> Client {
    let mut config = FederationConfig::default();
    for (name, url) in pins {
        config.pins.insert((*name).to_owned(), (*url).to_owned());
    }
    let key = SigningKey::from_seed(key.version(), seed_of(key)).unwrap();
    Client::new(config, Keyring::single(Arc::new(key)))
}

/// The seed of a test key, read back from its Synapse line.
fn seed_of(key: &SigningKey) -> [u8; 32] {
    let line = key.synapse_line();
    let seed = line.trim_end().rsplit(' ').next().unwrap();
    B64.decode(seed).unwrap().try_into().unwrap()
}

#[tokio::test]
async fn start_up_check_finds_whether_the_homeserver_publishes_our_key() {
    let ours = SigningKey::from_seed("a_ml01", [1; 32]).unwrap();
    let synapse = SigningKey::from_seed("a_hs01", [2; 32]).unwrap();
    let http = common::client();
    let fed = federation_client(&[], &ours);

    // Synapse's key file alone: a problem naming our key and telling what to do.
    let url = key_server(Some(homeserver_answer("hs.test", &[&synapse]))).await;
    let found = check_published(&http, &fed, &hs("hs.test", Some(url)), &ours, "/k").await;
    let Finding::Problem(m) = found else {
        panic!("{found:?}")
    };
    assert!(
        m.contains("homeserver hs.test does not publish media-ledger's signing key ed25519:a_ml01"),
        "{m}"
    );
    assert!(m.contains("lists ed25519:a_hs01"), "{m}");
    assert!(m.contains("keys print") && m.contains("keys import"), "{m}");

    // Our line appended to Synapse's key file: fine.
    let url = key_server(Some(homeserver_answer("hs.test", &[&synapse, &ours]))).await;
    let found = check_published(&http, &fed, &hs("hs.test", Some(url)), &ours, "/k").await;
    assert!(matches!(found, Finding::Fine(_)), "{found:?}");

    // A key answer of another server is not taken for the homeserver's.
    let url = key_server(Some(homeserver_answer("other.test", &[&ours]))).await;
    let found = check_published(&http, &fed, &hs("hs.test", Some(url)), &ours, "/k").await;
    let Finding::Problem(m) = found else {
        panic!("{found:?}")
    };
    assert!(m.contains("cannot check"), "{m}");

    // cs_api without the keys (404): asked over federation (here a pin), as remote servers do.
    let no_keys = key_server(None).await;
    let published = key_server(Some(homeserver_answer("hs.test", &[&ours]))).await;
    let fed = federation_client(&[("hs.test", &published)], &ours);
    let found = check_published(&http, &fed, &hs("hs.test", Some(no_keys)), &ours, "/k").await;
    let Finding::Fine(m) = found else {
        panic!("{found:?}")
    };
    assert!(m.contains("over federation"), "{m}");
}

#[tokio::test]
async fn a_remote_refusal_of_our_request_carries_its_body() {
    let body = r#"{"errcode":"M_UNAUTHORIZED","error":"Invalid signature for server a.test with key ed25519:a_ml01"}"#;
    let router = axum::Router::new().route(
        "/_matrix/federation/v1/media/download/{id}",
        get(move || async move {
            (
                StatusCode::UNAUTHORIZED,
                [("content-type", "application/json")],
                body,
            )
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    let ours = SigningKey::from_seed("a_ml01", [1; 32]).unwrap();
    let fed = federation_client(&[("remote.test", &format!("http://{addr}"))], &ours);
    let err = fed
        .download(
            &ServerName::parse_strict("a.test").unwrap(),
            &ServerName::parse_strict("remote.test").unwrap(),
            &"abcdef".parse().unwrap(),
            1024,
            |_| async { Ok(()) },
        )
        .await
        .unwrap_err();
    let RemoteError::Failed(m) = err else {
        panic!("{err:?}")
    };
    assert!(m.contains("remote.test answered 401"), "{m}");
    assert!(m.contains(body), "{m}");
}
