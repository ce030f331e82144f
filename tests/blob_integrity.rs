#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Blob integrity. Datastore identity: two config entries that reach one storage are refused
//! (config: paths as the filesystem resolves them, S3 endpoints normalised; start-up: the
//! identity marker), and the start-up sweep never deletes a blob a record claims in any
//! datastore. `verify --blobs` finds a live blob that is not where its records say.

use crate::common;
use media_ledger_projections::names;

use common::{random_bytes, sha256_hex, Opts, TestServer};
use media_ledger::config::Config;
use media_ledger::datastore::MARKER_NAME;
use std::path::Path;

fn file_ds(id: &str, path: &Path, kinds: &str) -> String {
    format!(
        "[[datastores]]\nid = \"{id}\"\ntype = \"file\"\npath = {}\nkinds = {kinds}\n",
        toml::Value::String(path.display().to_string())
    )
}

fn s3_ds(id: &str, endpoint: &str, bucket: &str, prefix: &str) -> String {
    format!(
        "[[datastores]]\nid = \"{id}\"\ntype = \"s3\"\nkinds = [\"all\"]\nendpoint = \"{endpoint}\"\nbucket = \"{bucket}\"\nprefix = \"{prefix}\"\naccess_key_id = \"ak\"\nsecret_access_key = \"sk\"\n"
    )
}

/// The config text of a server in `dir` with these `[[datastores]]`.
fn config_with(dir: &Path, datastores: String) -> String {
    common::config_text(
        dir,
        &Opts {
            datastores: Some(datastores),
            ..Opts::default()
        },
    )
}

fn refused(text: &str) -> String {
    match Config::parse(text) {
        Ok(_) => panic!("config accepted:\n{text}"),
        Err(e) => e.to_string(),
    }
}

/// A symlinked directory, a nested one reached through a symlink, and `x/../a` all name the
/// same (or a nested) directory: refused. Two real directories side by side: accepted.
#[test]
fn file_datastores_reaching_one_directory_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("media-a");
    std::fs::create_dir_all(a.join("sub")).unwrap();
    std::fs::create_dir_all(dir.path().join("x")).unwrap();
    let link = dir.path().join("link-to-a");
    std::os::unix::fs::symlink(&a, &link).unwrap();
    let link_sub = dir.path().join("link-to-sub");
    std::os::unix::fs::symlink(a.join("sub"), &link_sub).unwrap();

    for other in [
        link.clone(),
        link_sub,
        dir.path().join("x/../media-a"),
        link.join("not-yet/../deeper"),
    ] {
        let text = config_with(
            dir.path(),
            file_ds("a", &a, "[\"all\"]") + &file_ds("b", &other, "[\"all\"]"),
        );
        let e = refused(&text);
        assert!(e.contains("datastores a and b share a directory"), "{e}");
    }

    let b = dir.path().join("media-b");
    std::fs::create_dir_all(&b).unwrap();
    let ok = config_with(
        dir.path(),
        file_ds("a", &a, "[\"all\"]") + &file_ds("b", &b, "[\"all\"]"),
    );
    Config::parse(&ok).unwrap();
}

/// One S3 server named as `127.0.0.1`, `localhost` or `[::1]`, with or without a trailing
/// slash or an explicit default port, is one server: the same bucket with nesting prefixes is
/// refused. Other buckets or disjoint prefixes are accepted.
#[test]
fn loopback_alias_s3_endpoints_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let local = file_ds("local", &dir.path().join("media"), "[\"local_media\"]");
    for (x, y) in [
        ("http://127.0.0.1:19000", "http://localhost:19000"),
        ("http://localhost:19000/", "http://[::1]:19000"),
        ("HTTP://LOCALHOST:19000", "http://127.0.0.1:19000/"),
        ("https://s3.example.com", "https://S3.example.com:443/"),
    ] {
        let text = config_with(
            dir.path(),
            local.clone() + &s3_ds("s1", x, "media", "") + &s3_ds("s2", y, "media", "p/"),
        );
        let e = refused(&text);
        assert!(e.contains("datastores s1 and s2 share bucket media"), "{e}");
    }
    for (bucket, prefix) in [("other", ""), ("media", "q/")] {
        let text = config_with(
            dir.path(),
            local.clone()
                + &s3_ds("s1", "http://127.0.0.1:19000", "media", "p/")
                + &s3_ds("s2", "http://localhost:19000", bucket, prefix),
        );
        Config::parse(&text).unwrap();
    }
}

/// The first start writes the identity marker; a start that finds a marker naming another
/// datastore refuses, naming both, before anything is swept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_marker_of_another_datastore_refuses_to_start() {
    let mut srv = TestServer::start().await;
    let bytes = random_bytes(1000);
    let mxc = srv.upload_bytes(bytes.clone()).await;
    srv.stop().await;
    let marker = srv.media_dir().join(MARKER_NAME);
    assert_eq!(std::fs::read_to_string(&marker).unwrap().trim(), common::DS);

    std::fs::write(&marker, "elsewhere\n").unwrap();
    let blob = common::s3::file_blob_path(&srv.media_dir(), &sha256_hex(&bytes));
    let config = Config::parse(&srv.config_text).unwrap();
    let e = match media_ledger::server::start(config).await {
        Ok(_) => panic!("started on storage marked as another datastore"),
        Err(e) => format!("{e:#}"),
    };
    assert!(
        e.contains("marked as datastore \"elsewhere\"") && e.contains(common::DS),
        "{e}"
    );
    assert!(blob.exists());

    std::fs::write(&marker, format!("{}\n", common::DS)).unwrap();
    srv.restart().await;
    assert_eq!(srv.download_bytes(&mxc).await, bytes);
    srv.stop().await;
}

/// The sweep of datastore `b` meets: the very file of a blob recorded in `a` (a hard link:
/// one file under both datastores' names, as when both are one storage) — kept; a separate
/// copy of a blob recorded in `a` — removed; a blob nothing records — removed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sweep_keeps_a_blob_claimed_by_another_datastore() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("media-a"), dir.path().join("media-b"));
    let opts = Opts {
        datastores: Some(
            file_ds("a", &a, "[\"local_media\"]") + &file_ds("b", &b, "[\"remote_media\"]"),
        ),
        ..Opts::default()
    };
    let mut srv = TestServer::start_with(opts).await;
    let (shared, copied) = (random_bytes(3000), random_bytes(4000));
    let shared_mxc = srv.upload_bytes(shared.clone()).await;
    let copied_mxc = srv.upload_bytes(copied.clone()).await;
    srv.stop().await;

    let in_a = |bytes: &[u8]| common::s3::file_blob_path(&a, &sha256_hex(bytes));
    let in_b = |bytes: &[u8]| common::s3::file_blob_path(&b, &sha256_hex(bytes));
    let orphan = random_bytes(500);
    for p in [in_b(&shared), in_b(&copied), in_b(&orphan)] {
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    }
    std::fs::hard_link(in_a(&shared), in_b(&shared)).unwrap();
    std::fs::copy(in_a(&copied), in_b(&copied)).unwrap();
    std::fs::write(in_b(&orphan), &orphan).unwrap();

    srv.restart().await;
    assert!(in_b(&shared).exists(), "the sweep removed a recorded blob");
    assert!(!in_b(&copied).exists(), "a stray copy survived the sweep");
    assert!(!in_b(&orphan).exists(), "an orphan survived the sweep");
    assert_eq!(srv.download_bytes(&shared_mxc).await, shared);
    assert_eq!(srv.download_bytes(&copied_mxc).await, copied);
    srv.stop().await;
}

/// In S3 the marker is an object under the prefix: a datastore entry with another id on the
/// same bucket and prefix (here: the id changed, the endpoint written another way) refuses to
/// start; the object never shows up as a blob.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_s3_marker_of_another_datastore_refuses_to_start() {
    use common::s3::{S3Server, BUCKET};
    let s3 = S3Server::launch();
    let opts = |id: &str, endpoint: &str| Opts {
        datastores: Some(
            s3.datastore_toml(id, BUCKET, r#"["all"]"#, "")
                .replace(&s3.endpoint(), endpoint),
        ),
        ..Opts::default()
    };
    let mut srv = TestServer::start_with(opts("s1", &s3.endpoint())).await;
    let bytes = random_bytes(1000);
    srv.upload_bytes(bytes.clone()).await;
    srv.stop().await;
    assert!(s3.bucket_dir(BUCKET).join(MARKER_NAME).is_file());
    assert_eq!(s3.object_count(BUCKET), 1);

    let alias = format!("http://localhost:{}/", s3.port);
    let text = common::config_text(srv.dir.path(), &opts("s2", &alias));
    let e = match media_ledger::server::start(Config::parse(&text).unwrap()).await {
        Ok(_) => panic!("started on a bucket marked as another datastore"),
        Err(e) => format!("{e:#}"),
    };
    assert!(e.contains("marked as datastore \"s1\""), "{e}");
    assert!(s3.has_object(BUCKET, &sha256_hex(&bytes)));
}

/// `verify --blobs` (the binary, server stopped): exit 0 while every blob is in place; a
/// deleted blob file (used by two media) and a truncated one are
/// reported with their hash, datastore, problem and users, exit 5. Plain `verify` still
/// passes: the log and projections are consistent, the bytes are not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_blobs_reports_missing_blobs() {
    let mut srv = TestServer::start().await;
    let (gone, cut, fine) = (random_bytes(2000), random_bytes(3000), random_bytes(100));
    let gone_mxc = srv.upload_bytes(gone.clone()).await;
    srv.upload_bytes(gone.clone()).await;
    srv.upload_bytes(cut.clone()).await;
    srv.upload_bytes(fine).await;
    srv.stop().await;
    let config = srv.dir.path().join("config.toml");
    std::fs::write(&config, &srv.config_text).unwrap();
    let run = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_media-ledger"))
            .args(args)
            .arg("--config")
            .arg(&config)
            .env("RUST_LOG", "warn")
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };

    let (code, out) = run(&["verify", "--blobs"]);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("ok: 0 of 3 blobs missing or wrong (4 live media, 0 thumbnails)"),
        "{out}"
    );

    let path = |b: &[u8]| common::s3::file_blob_path(&srv.media_dir(), &sha256_hex(b));
    std::fs::remove_file(path(&gone)).unwrap();
    std::fs::write(path(&cut), &cut[..10]).unwrap();
    let (code, out) = run(&["verify"]);
    assert_eq!(code, Some(0), "{out}");
    let (code, out) = run(&["verify", "--blobs"]);
    assert_eq!(code, Some(5), "{out}");
    let line = |sha: &str| {
        out.lines()
            .find(|l| l.starts_with(&format!("MISSING blob {sha}")))
            .unwrap_or_else(|| panic!("{sha} not reported: {out}"))
            .to_owned()
    };
    let l = line(&sha256_hex(&gone));
    assert!(l.contains(": missing (datastore files, location"), "{l}");
    assert!(l.contains("used by 2: ") && l.contains(&gone_mxc), "{l}");
    let l = line(&sha256_hex(&cut));
    assert!(l.contains(": 10 bytes, recorded 3000"), "{l}");
    assert!(out.contains("FAIL: 2 of 3 blobs missing or wrong"), "{out}");
}

/// An upload refused because a projection halted keeps its blob (for the start-up sweep to
/// judge after a clean catch-up): with `hash_refs` halted, its stored state may lack the record
/// of an upload acknowledged in the halting group, at the very place this writer committed.
/// Before, the refused writer read that stale state, found no record and deleted the bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_writer_refused_by_a_halted_projection_keeps_its_blob() {
    let mut srv = TestServer::start().await;
    let ledger = srv.server().ledger.clone();
    ledger.halt_projection(names::HASH_REFS, "halted by the test");
    assert!(matches!(
        ledger.view_current(media_ledger_projections::names::HASH_REFS),
        Err(media_ledger::ledger::LedgerError::Halted(_))
    ));
    drop(ledger);
    let bytes = random_bytes(1000);
    let resp = srv
        .upload_raw(
            common::ALICE,
            bytes.clone(),
            Some("application/octet-stream"),
            None,
        )
        .await;
    common::expect_error(resp, reqwest::StatusCode::SERVICE_UNAVAILABLE, "M_UNKNOWN").await;
    let hex = sha256_hex(&bytes);
    let kept = common::blob_files(&srv.media_dir())
        .iter()
        .any(|p| p.file_name().is_some_and(|n| n.to_string_lossy() == hex));
    assert!(kept, "the refused writer deleted the bytes");
    srv.stop().await;
}
