#![allow(clippy::unwrap_used, clippy::expect_used)]
//! matrix-media-repo's v2 export archives, both ways, through the binary (`media-ledger export`
//! and `media-ledger import archive`, servers stopped) and over HTTP on loopback: a user's
//! export leaves quarantined media out and restores on a fresh server byte-identical under the
//! same ids with their names, types, times and uploaders (and a second import changes nothing);
//! a server export holds every user's media; an archive laid out the way MMR's
//! `archival/v2archive/writer.go` writes one (gzip member names, entries
//! `<origin>__<id><ext>`, an empty part before the manifest's) imports, its foreign origin as
//! cached remote media; broken archives skip the rows they cannot prove or are refused whole.

use crate::common;

use common::{parse_mxc, random_bytes, sha256_hex, TestServer, ADMIN, ALICE, BOB};
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

const MIB: usize = 1024 * 1024;

// ---------------------------------------------------------------------------------------------
// The binary
// ---------------------------------------------------------------------------------------------

/// What a run of the binary left.
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Run {
    /// The one JSON summary line on stdout, asserting exit 0.
    fn summary(&self) -> Value {
        assert_eq!(
            self.code,
            Some(0),
            "stdout: {}\nstderr: {}",
            self.stdout,
            self.stderr
        );
        serde_json::from_str(self.stdout.trim())
            .unwrap_or_else(|e| panic!("summary is not JSON ({e}): {}", self.stdout))
    }

    /// Asserts a failure (non-zero exit, nothing on stdout); stderr.
    fn failure(&self) -> &str {
        assert!(
            matches!(self.code, Some(c) if c != 0),
            "expected a failure, got {:?}\nstdout: {}\nstderr: {}",
            self.code,
            self.stdout,
            self.stderr
        );
        assert!(
            self.stdout.trim().is_empty(),
            "a refused run printed a summary: {}",
            self.stdout
        );
        &self.stderr
    }
}

fn run<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> Run {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_media-ledger"))
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Writes the server's config text beside its data; the path.
fn config_file(srv: &TestServer) -> PathBuf {
    let path = srv.dir.path().join("config.toml");
    std::fs::write(&path, &srv.config_text).unwrap();
    path
}

/// `export --config C <entity args> --into DIR --part-size-mb 1`.
fn export(config: &Path, entity: &[&str], into: &Path) -> Run {
    let mut args: Vec<std::ffi::OsString> = vec!["export".into(), "--config".into()];
    args.push(config.into());
    args.extend(entity.iter().map(Into::into));
    args.extend(["--into".into(), into.into()]);
    args.extend(["--part-size-mb".into(), "1".into()]);
    run(&args)
}

/// `import archive --config C PARTS...`.
fn import(config: &Path, parts: &[PathBuf]) -> Run {
    let mut args: Vec<std::ffi::OsString> =
        vec!["import".into(), "archive".into(), "--config".into()];
    args.push(config.into());
    args.extend(parts.iter().map(Into::into));
    run(&args)
}

/// The ledger's events (`events --config C`), one JSON object each.
fn events(config: &Path) -> Vec<Value> {
    let r = run(&[
        std::ffi::OsStr::new("events"),
        "--config".as_ref(),
        config.as_os_str(),
    ]);
    assert_eq!(r.code, Some(0), "events: {}", r.stderr);
    r.stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The payloads of the events of `type_name` (externally tagged: the one value of `event`).
fn events_of(config: &Path, type_name: &str) -> Vec<Value> {
    events(config)
        .into_iter()
        .filter(|e| e["type"] == type_name)
        .map(|e| {
            e["event"]
                .as_object()
                .and_then(|o| o.values().next().cloned())
                .unwrap_or_else(|| panic!("event without a payload: {e}"))
        })
        .collect()
}

/// A server started once (its ledger and datastores exist) and stopped, and its config file.
async fn fresh_stopped_server() -> (TestServer, PathBuf) {
    let mut srv = TestServer::start().await;
    srv.stop().await;
    let config = config_file(&srv);
    (srv, config)
}

/// Nothing of an import's work folder is left beside the ledger.
fn assert_no_work_folder(srv: &TestServer) {
    let left: Vec<_> = std::fs::read_dir(srv.dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".import-archive"))
        .collect();
    assert!(left.is_empty(), "work folders left: {left:?}");
}

fn skipped(summary: &Value) -> Vec<(String, String)> {
    summary["skipped"]
        .as_array()
        .unwrap_or_else(|| panic!("no skipped list: {summary}"))
        .iter()
        .map(|s| {
            (
                s["media"].as_str().unwrap().to_owned(),
                s["reason"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Reading archives
// ---------------------------------------------------------------------------------------------

/// Every regular entry of a gzipped tar part: name → bytes.
fn entries_of(part: &Path) -> Vec<(String, Vec<u8>)> {
    let file = std::fs::File::open(part).unwrap();
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(file));
    let mut out = Vec::new();
    for entry in tar.entries().unwrap() {
        let mut entry = entry.unwrap();
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let name = entry.path().unwrap().to_string_lossy().into_owned();
        let mut data = Vec::new();
        entry.read_to_end(&mut data).unwrap();
        out.push((name, data));
    }
    out
}

/// The summary's part paths.
fn parts_of(summary: &Value) -> Vec<PathBuf> {
    summary["parts"]
        .as_array()
        .unwrap_or_else(|| panic!("no parts: {summary}"))
        .iter()
        .map(|p| PathBuf::from(p.as_str().unwrap()))
        .collect()
}

/// Checks the layout of an export (data parts `export-part-N.tgz` in order, then
/// `export-manifest.tgz` holding `manifest.json` alone, every part in `into`); returns the data
/// entries (name → bytes) and the manifest.
fn read_export(into: &Path, parts: &[PathBuf]) -> (BTreeMap<String, Vec<u8>>, Value) {
    let (manifest_part, data_parts) = parts.split_last().expect("no parts");
    assert_eq!(
        manifest_part.file_name().unwrap(),
        "export-manifest.tgz",
        "{parts:?}"
    );
    let mut data = BTreeMap::new();
    for (i, p) in data_parts.iter().enumerate() {
        assert_eq!(p.parent().unwrap(), into, "{p:?}");
        assert_eq!(
            p.file_name().unwrap().to_string_lossy(),
            format!("export-part-{}.tgz", i + 1)
        );
        for (name, bytes) in entries_of(p) {
            assert!(
                data.insert(name.clone(), bytes).is_none(),
                "{name} twice in the archive"
            );
        }
    }
    let mut files: Vec<_> = std::fs::read_dir(into)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    let mut listed = parts.to_vec();
    listed.sort();
    assert_eq!(files, listed, "the folder holds exactly the parts");
    let manifest_entries = entries_of(manifest_part);
    assert_eq!(
        manifest_entries
            .iter()
            .map(|(n, _)| n.as_str())
            .collect::<Vec<_>>(),
        ["manifest.json"]
    );
    let manifest: Value = serde_json::from_slice(&manifest_entries[0].1).unwrap();
    (data, manifest)
}

// ---------------------------------------------------------------------------------------------
// HTTP
// ---------------------------------------------------------------------------------------------

/// `GET /_synapse/admin/v1/media/{server}/{id}` as the repository admin: `media_info`.
async fn media_info(srv: &TestServer, mxc: &str) -> Value {
    let (server, id) = parse_mxc(mxc);
    let resp = srv
        .client
        .get(srv.url(&format!("/_synapse/admin/v1/media/{server}/{id}")))
        .header(reqwest::header::HOST, "localhost")
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    let status = resp.status();
    let text = resp.text().await.unwrap();
    assert_eq!(status, StatusCode::OK, "media_info of {mxc}: {text}");
    let v: Value = serde_json::from_str(&text).unwrap();
    v["media_info"].clone()
}

/// What an export and an import must keep of a media, as the Synapse admin API shows it.
fn kept(info: &Value) -> Value {
    json!({
        "upload_name": info["upload_name"],
        "media_type": info["media_type"],
        "media_length": info["media_length"],
        "created_ts": info["created_ts"],
        "user_id": info["user_id"],
        "sha256": info["sha256"],
    })
}

/// Quarantines `mxc` as the repository admin (MMR's route).
async fn quarantine(srv: &TestServer, mxc: &str) {
    let (server, id) = parse_mxc(mxc);
    let resp = srv
        .client
        .post(srv.url(&format!(
            "/_matrix/media/unstable/admin/quarantine/{server}/{id}"
        )))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    let status = resp.status();
    let text = resp.text().await.unwrap();
    assert_eq!(status, StatusCode::OK, "quarantine of {mxc}: {text}");
}

/// Server A's media: alice's big one (3 MiB), alice's named and typed one (1.5 MiB: each of
/// alice's exported media fills a 1 MiB part alone, whatever their order), alice's
/// quarantined one, bob's.
struct Population {
    big: (String, Vec<u8>),
    named: (String, Vec<u8>),
    quarantined: (String, Vec<u8>),
    bobs: (String, Vec<u8>),
}

const NAMED_FILENAME: &str = "Grüße – 日本語 ✓.txt";
const NAMED_TYPE: &str = "text/plain; charset=utf-8";

async fn populate(a: &TestServer) -> Population {
    let big = random_bytes(3 * MIB);
    let named = random_bytes(MIB + MIB / 2);
    let bad = random_bytes(5000);
    let bobs = random_bytes(7000);
    let big_mxc = a
        .upload(ALICE, big.clone(), Some("image/png"), Some("big.png"))
        .await;
    let named_mxc = a
        .upload(ALICE, named.clone(), Some(NAMED_TYPE), Some(NAMED_FILENAME))
        .await;
    let bad_mxc = a
        .upload(
            ALICE,
            bad.clone(),
            Some("application/octet-stream"),
            Some("bad.bin"),
        )
        .await;
    let bobs_mxc = a
        .upload(BOB, bobs.clone(), Some("video/mp4"), Some("bob.mp4"))
        .await;
    quarantine(a, &bad_mxc).await;
    Population {
        big: (big_mxc, big),
        named: (named_mxc, named),
        quarantined: (bad_mxc, bad),
        bobs: (bobs_mxc, bobs),
    }
}

/// No part holds the bytes (nor the id) of the quarantined media.
fn assert_left_out(
    data: &BTreeMap<String, Vec<u8>>,
    manifest: &Value,
    (mxc, bytes): &(String, Vec<u8>),
) {
    let (_, id) = parse_mxc(mxc);
    for (name, entry) in data {
        assert!(!name.contains(&id), "{name}: the quarantined media's entry");
        assert!(entry != bytes, "{name} holds the quarantined media's bytes");
    }
    assert!(manifest["media"].get(mxc).is_none(), "{manifest}");
}

/// The manifest's record of `mxc` matches the media and its entry holds its bytes.
fn assert_recorded(
    data: &BTreeMap<String, Vec<u8>>,
    manifest: &Value,
    (mxc, bytes): &(String, Vec<u8>),
    name: &str,
    content_type: &str,
    uploader: &str,
) {
    let (origin, id) = parse_mxc(mxc);
    let r = &manifest["media"][mxc.as_str()];
    assert_eq!(r["name"], name, "{r}");
    assert_eq!(r["content_type"], content_type, "{r}");
    assert_eq!(r["uploader"], uploader, "{r}");
    assert_eq!(r["origin"], origin.as_str(), "{r}");
    assert_eq!(r["media_id"], id.as_str(), "{r}");
    assert_eq!(r["size_bytes"], bytes.len(), "{r}");
    assert_eq!(r["sha256"], sha256_hex(bytes), "{r}");
    assert!(r["created_ts"].as_u64().unwrap() > 0, "{r}");
    let file = r["file_name"].as_str().unwrap();
    assert_eq!(file, format!("{origin}__{id}"));
    assert!(
        data.get(file) == Some(bytes),
        "the entry {file} does not hold {mxc}'s bytes"
    );
}

// ---------------------------------------------------------------------------------------------
// Export and import
// ---------------------------------------------------------------------------------------------

/// `export --user` writes alice's live media (not bob's, not the quarantined one) as MMR's v2
/// archive in 1 MiB parts and records it once; `import archive` into a fresh server restores
/// them byte-identical under the same mxc URIs with the same name, type, length, creation time,
/// uploader and hash; a second import imports nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_users_export_leaves_quarantined_media_out_and_restores_identically_elsewhere() {
    let mut a = TestServer::start().await;
    let pop = populate(&a).await;
    let mut before = BTreeMap::new();
    for (mxc, _) in [&pop.big, &pop.named] {
        before.insert(mxc.clone(), kept(&media_info(&a, mxc).await));
    }
    assert_eq!(before[&pop.named.0]["upload_name"], NAMED_FILENAME);
    a.stop().await;
    let a_config = config_file(&a);
    let out = tempfile::tempdir().unwrap();
    let into = out.path().join("alice");

    let summary = export(&a_config, &["--user", "@alice:localhost"], &into).summary();
    assert_eq!(summary["media"], 2, "{summary}");
    assert_eq!(
        summary["bytes"],
        pop.big.1.len() + pop.named.1.len(),
        "{summary}"
    );
    assert_eq!(summary["quarantined_left_out"], 1, "{summary}");
    let parts = parts_of(&summary);
    assert!(
        parts.len() >= 3,
        "two data parts and the manifest's: {summary}"
    );
    let (data, manifest) = read_export(&into, &parts);
    assert_eq!(manifest["version"], 2);
    assert_eq!(manifest["entity_id"], "@alice:localhost");
    assert!(manifest["created_ts"].as_u64().unwrap() > 0);
    let keys: BTreeSet<&str> = manifest["media"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        BTreeSet::from([pop.big.0.as_str(), pop.named.0.as_str()]),
        "alice's live media only"
    );
    assert_eq!(data.len(), 2, "{:?}", data.keys());
    assert_recorded(
        &data,
        &manifest,
        &pop.big,
        "big.png",
        "image/png",
        "@alice:localhost",
    );
    assert_recorded(
        &data,
        &manifest,
        &pop.named,
        NAMED_FILENAME,
        NAMED_TYPE,
        "@alice:localhost",
    );
    for (mxc, _) in [&pop.big, &pop.named] {
        assert_eq!(
            manifest["media"][mxc.as_str()]["created_ts"],
            before[mxc]["created_ts"]
        );
    }
    assert_left_out(&data, &manifest, &pop.quarantined);
    assert!(
        data.values().all(|d| d != &pop.bobs.1),
        "bob's media in alice's export"
    );

    let exported = events_of(&a_config, "media.exported.v1");
    assert_eq!(exported.len(), 1, "{exported:?}");
    assert_eq!(exported[0]["entity"], "@alice:localhost");
    assert_eq!(exported[0]["media_count"], 2);
    assert_eq!(exported[0]["bytes"], summary["bytes"]);
    assert_eq!(exported[0]["quarantined_left_out"], 1);
    assert_eq!(exported[0]["parts"], parts.len());

    // A fresh server: nothing of A's.
    let (mut b, b_config) = fresh_stopped_server().await;
    let summary = import(&b_config, &parts).summary();
    assert_eq!(summary["imported"], 2, "{summary}");
    assert_eq!(summary["already_imported"], 0, "{summary}");
    assert_eq!(summary["bytes"], pop.big.1.len() + pop.named.1.len());
    assert_eq!(skipped(&summary), [], "{summary}");
    assert_no_work_folder(&b);
    let migrated = events_of(&b_config, "media.migrated.v1");
    assert_eq!(migrated.len(), 2, "{migrated:?}");
    assert!(
        migrated.iter().all(|m| m["remote"] == false),
        "{migrated:?}"
    );

    b.restart().await;
    for (mxc, bytes) in [&pop.big, &pop.named] {
        assert!(&b.download_bytes(mxc).await == bytes, "{mxc} differs on B");
        assert_eq!(kept(&media_info(&b, mxc).await), before[mxc], "{mxc}");
    }
    for (mxc, _) in [&pop.quarantined, &pop.bobs] {
        let resp = b.download(mxc).await;
        assert_eq!(resp.status(), StatusCode::NOT_FOUND, "{mxc} on B");
    }
    b.stop().await;

    // The run was a task: `media-ledger tasks` lists it, finished.
    let listed = run(&[
        std::ffi::OsStr::new("tasks"),
        std::ffi::OsStr::new("--config"),
        b_config.as_os_str(),
    ]);
    assert!(
        listed.stdout.contains("import archive\tfinished\t2/2 rows"),
        "{}",
        listed.stdout
    );

    // Again: everything is there already; nothing but the run's own task is recorded.
    let not_task = |evs: Vec<Value>| {
        evs.into_iter()
            .filter(|e| {
                !e["type"]
                    .as_str()
                    .unwrap_or_default()
                    .starts_with("import.")
            })
            .count()
    };
    let events_before = not_task(events(&b_config));
    let summary = import(&b_config, &parts).summary();
    assert_eq!(summary["imported"], 0, "{summary}");
    assert_eq!(summary["already_imported"], 2, "{summary}");
    assert_eq!(skipped(&summary), [], "{summary}");
    assert_eq!(not_task(events(&b_config)), events_before);
    assert_no_work_folder(&b);
}

/// `export --server localhost` holds every user's live media (bob's too, with his id as
/// uploader), never the quarantined one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_export_holds_every_users_media_but_not_quarantined_media() {
    let mut a = TestServer::start().await;
    let pop = populate(&a).await;
    a.stop().await;
    let a_config = config_file(&a);
    let out = tempfile::tempdir().unwrap();
    let into = out.path().join("server");

    let summary = export(&a_config, &["--server", "localhost"], &into).summary();
    assert_eq!(summary["media"], 3, "{summary}");
    assert_eq!(summary["quarantined_left_out"], 1, "{summary}");
    let (data, manifest) = read_export(&into, &parts_of(&summary));
    assert_eq!(manifest["entity_id"], "localhost");
    assert_eq!(
        manifest["media"].as_object().unwrap().len(),
        3,
        "{manifest}"
    );
    assert_recorded(
        &data,
        &manifest,
        &pop.bobs,
        "bob.mp4",
        "video/mp4",
        "@bob:localhost",
    );
    assert_recorded(
        &data,
        &manifest,
        &pop.big,
        "big.png",
        "image/png",
        "@alice:localhost",
    );
    assert_recorded(
        &data,
        &manifest,
        &pop.named,
        NAMED_FILENAME,
        NAMED_TYPE,
        "@alice:localhost",
    );
    assert_left_out(&data, &manifest, &pop.quarantined);
    let exported = events_of(&a_config, "media.exported.v1");
    assert_eq!(exported.len(), 1, "{exported:?}");
    assert_eq!(exported[0]["entity"], "localhost");
}

// ---------------------------------------------------------------------------------------------
// Archives as matrix-media-repo writes them
// ---------------------------------------------------------------------------------------------

/// One media for [`write_mmr_archive`].
struct MmrMedia {
    origin: &'static str,
    id: &'static str,
    /// What MMR's mimetype sniffing appends to the entry name (`.txt`, `.png`, or nothing).
    ext: &'static str,
    name: &'static str,
    content_type: &'static str,
    created_ts: u64,
    uploader: &'static str,
    bytes: Vec<u8>,
}

impl MmrMedia {
    fn mxc(&self) -> String {
        format!("mxc://{}/{}", self.origin, self.id)
    }

    fn entry_name(&self) -> String {
        format!("{}__{}{}", self.origin, self.id, self.ext)
    }

    /// Its manifest record, as `ManifestRecord` of MMR's manifest.go serialises.
    fn record(&self) -> Value {
        json!({
            "name": self.name,
            "file_name": self.entry_name(),
            "size_bytes": self.bytes.len(),
            "content_type": self.content_type,
            "s3_url": "",
            "sha256": sha256_hex(&self.bytes),
            "origin": self.origin,
            "media_id": self.id,
            "created_ts": self.created_ts,
            "uploader": self.uploader,
        })
    }
}

/// A tar entry as Go's `archive/tar` writes `putFile`'s header (USTAR, regular file, mode 0644,
/// uid/gid 0, the creation time in seconds). The name is copied into the header as raw bytes,
/// unchecked, so that a test can write names the tar crate would refuse to write.
fn append_raw(builder: &mut tar::Builder<Vec<u8>>, name: &str, data: &[u8], mtime_s: u64) {
    let mut h = tar::Header::new_ustar();
    {
        let ustar = h.as_ustar_mut().unwrap();
        assert!(name.len() < ustar.name.len(), "{name}: too long for a test");
        ustar.name[..name.len()].copy_from_slice(name.as_bytes());
    }
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_size(data.len() as u64);
    h.set_mtime(mtime_s);
    h.set_entry_type(tar::EntryType::Regular);
    h.set_cksum();
    builder.append(&h, data).unwrap();
}

/// A tar of `entries`, gzipped like MMR's `writeTar` (`gzip.Writer` with `Name` =
/// `<part name>.tar`), written to `dir/file`.
fn write_part(
    dir: &Path,
    file: &str,
    gz_name: &str,
    entries: &[(String, Vec<u8>, u64)],
) -> PathBuf {
    let mut builder = tar::Builder::new(Vec::new());
    for (name, data, mtime) in entries {
        append_raw(&mut builder, name, data, *mtime);
    }
    let tar = builder.into_inner().unwrap();
    let path = dir.join(file);
    let mut gz = flate2::GzBuilder::new()
        .filename(gz_name)
        .operating_system(255)
        .write(
            std::fs::File::create(&path).unwrap(),
            flate2::Compression::default(),
        );
    gz.write_all(&tar).unwrap();
    gz.finish().unwrap().sync_all().unwrap();
    path
}

/// An archive laid out as MMR's `ArchiveWriter` does (archival/v2archive/writer.go): media
/// appended in order, the part rotated once it holds `part_size` bytes or more; `Finish`
/// rotates once more (writing the current part even when empty), then writes `manifest.json`
/// and `index.html` in a part of their own, `export-manifest.tgz`. `manifest_of` may alter the
/// manifest; `files` says which media have their entry written. Returns the part paths in the
/// order MMR writes them.
fn write_mmr_archive(
    dir: &Path,
    entity: &str,
    media: &[MmrMedia],
    part_size: usize,
    files: impl Fn(&MmrMedia) -> bool,
    manifest_of: impl FnOnce(&mut Value),
) -> Vec<PathBuf> {
    let mut parts = Vec::new();
    let mut current: Vec<(String, Vec<u8>, u64)> = Vec::new();
    let mut size = 0usize;
    let mut records = serde_json::Map::new();
    let flush = |current: &mut Vec<(String, Vec<u8>, u64)>, parts: &mut Vec<PathBuf>| {
        let n = parts.len() + 1;
        parts.push(write_part(
            dir,
            &format!("export-part-{n}.tgz"),
            &format!("export-part-{n}.tar"),
            current,
        ));
        current.clear();
    };
    for m in media {
        if files(m) {
            current.push((m.entry_name(), m.bytes.clone(), m.created_ts / 1000));
        }
        size += m.bytes.len();
        records.insert(m.mxc(), m.record());
        if size >= part_size {
            flush(&mut current, &mut parts);
            size = 0;
        }
    }
    flush(&mut current, &mut parts);
    let mut manifest = json!({
        "version": 2,
        "entity_id": entity,
        "created_ts": 1_700_000_100_000u64,
        "media": records,
    });
    manifest_of(&mut manifest);
    parts.push(write_manifest_part(dir, &manifest));
    parts
}

/// `export-manifest.tgz` as MMR's `Finish` writes it: `manifest.json` (Go's `json.Encoder`
/// ends it with a newline), then `index.html`.
fn write_manifest_part(dir: &Path, manifest: &Value) -> PathBuf {
    let mut json = serde_json::to_vec(manifest).unwrap();
    json.push(b'\n');
    let index = b"<!DOCTYPE html><html><body><h1>Export</h1></body></html>".to_vec();
    write_part(
        dir,
        "export-manifest.tgz",
        "export-manifest.tar",
        &[
            ("manifest.json".into(), json, 1_700_000_100),
            ("index.html".into(), index, 1_700_000_100),
        ],
    )
}

/// The gzip member name (FNAME) of a part.
fn gzip_name(part: &Path) -> String {
    let file = std::fs::File::open(part).unwrap();
    let gz = flate2::read::GzDecoder::new(file);
    let name = gz.header().and_then(|h| h.filename()).unwrap_or_default();
    String::from_utf8_lossy(name).into_owned()
}

fn local_media(id: &'static str, bytes: Vec<u8>) -> MmrMedia {
    MmrMedia {
        origin: "localhost",
        id,
        ext: ".txt",
        name: "notes.txt",
        content_type: "text/plain",
        created_ts: 1_600_000_000_123,
        uploader: "@carol:localhost",
        bytes,
    }
}

/// An archive as MMR writes it (gzip member names `export-part-N.tar`, entries named
/// `<origin>__<id><ext>`, an empty last data part, the manifest with `index.html` in a part of
/// its own) imports: the `localhost` media as local media of its uploader, the
/// `remote.example` one as cached remote media (served without a fetch); both byte-identical,
/// with their names, types and creation times.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_archive_written_like_matrix_media_repos_imports_local_and_remote_media() {
    let work = tempfile::tempdir().unwrap();
    let local = local_media(
        "LocalFromMmr01",
        b"hello from matrix-media-repo\n".repeat(100),
    );
    let remote = MmrMedia {
        origin: "remote.example",
        id: "RemoteFromMmr01",
        ext: "",
        name: "photo.bin",
        content_type: "application/octet-stream",
        created_ts: 1_650_000_000_456,
        uploader: "",
        bytes: random_bytes(200_000),
    };
    let media = [local, remote];
    // A part size below each media: every media rotates the part, as in MMR.
    let parts = write_mmr_archive(work.path(), "localhost", &media, 1000, |_| true, |_| {});
    let [local, remote] = media;
    let names: Vec<String> = parts
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names,
        [
            "export-part-1.tgz",
            "export-part-2.tgz",
            "export-part-3.tgz",
            "export-manifest.tgz"
        ]
    );
    assert_eq!(gzip_name(&parts[0]), "export-part-1.tar");
    assert_eq!(gzip_name(&parts[3]), "export-manifest.tar");
    assert!(
        entries_of(&parts[2]).is_empty(),
        "MMR's last data part is empty"
    );
    assert_eq!(
        entries_of(&parts[0])[0].0,
        "localhost__LocalFromMmr01.txt",
        "MMR's entry name carries the sniffed extension"
    );

    let (mut b, b_config) = fresh_stopped_server().await;
    // The parts in any order: the manifest's first.
    let mut shuffled = parts.clone();
    shuffled.rotate_right(1);
    let summary = import(&b_config, &shuffled).summary();
    assert_eq!(summary["imported"], 2, "{summary}");
    assert_eq!(skipped(&summary), [], "{summary}");
    assert_no_work_folder(&b);
    let migrated = events_of(&b_config, "media.migrated.v1");
    let by_origin = |origin: &str| {
        migrated
            .iter()
            .find(|m| m["media"].to_string().contains(origin))
            .unwrap_or_else(|| panic!("no {origin} media in {migrated:?}"))
            .clone()
    };
    let l = by_origin("localhost");
    assert_eq!(l["remote"], false, "{l}");
    assert_eq!(l["uploader"], "@carol:localhost", "{l}");
    assert_eq!(l["created_at_ms"], local.created_ts, "{l}");
    let r = by_origin("remote.example");
    assert_eq!(r["remote"], true, "{r}");
    assert_eq!(r["uploader"], Value::Null, "{r}");
    assert_eq!(r["created_at_ms"], remote.created_ts, "{r}");

    b.restart().await;
    assert!(b.download_bytes(&local.mxc()).await == local.bytes);
    // No [federation] and no resolvable remote.example: only the imported copy can answer.
    assert!(b.download_bytes(&remote.mxc()).await == remote.bytes);
    let info = media_info(&b, &local.mxc()).await;
    assert_eq!(info["user_id"], "@carol:localhost");
    assert_eq!(info["upload_name"], "notes.txt");
    assert_eq!(info["media_type"], "text/plain");
    assert_eq!(info["created_ts"], local.created_ts);
    assert_eq!(info["media_length"], local.bytes.len());
    b.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Bad archives
// ---------------------------------------------------------------------------------------------

/// Rows the archive cannot prove are skipped with their reason, the others imported: a SHA-256
/// that disagrees with the file, a length that disagrees, a file in no part. Nothing is
/// recorded for the skipped ones and no spooled copy is left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_whose_file_is_missing_or_disagrees_with_the_manifest_are_skipped() {
    let work = tempfile::tempdir().unwrap();
    let good = local_media("GoodOne", b"good bytes".repeat(50));
    let bad_hash = local_media("BadHash", b"hash will not match".repeat(50));
    let bad_length = local_media("BadLength", b"length will not match".repeat(50));
    let missing = local_media("Missing", b"never written".repeat(50));
    let parts = write_mmr_archive(
        work.path(),
        "localhost",
        &[good, bad_hash, bad_length, missing],
        MIB,
        |m| m.id != "Missing",
        |manifest| {
            manifest["media"]["mxc://localhost/BadHash"]["sha256"] = json!(sha256_hex(b"other"));
            manifest["media"]["mxc://localhost/BadLength"]["size_bytes"] = json!(3);
        },
    );
    let (mut b, b_config) = fresh_stopped_server().await;
    let summary = import(&b_config, &parts).summary();
    assert_eq!(summary["imported"], 1, "{summary}");
    assert_eq!(summary["bytes"], 500, "{summary}");
    let skipped: BTreeMap<String, String> = skipped(&summary).into_iter().collect();
    assert_eq!(
        skipped.keys().map(String::as_str).collect::<Vec<_>>(),
        [
            "mxc://localhost/BadHash",
            "mxc://localhost/BadLength",
            "mxc://localhost/Missing"
        ],
        "{summary}"
    );
    let hash_reason = &skipped["mxc://localhost/BadHash"];
    assert!(
        hash_reason.contains("SHA-256") && hash_reason.contains(&sha256_hex(b"other")),
        "{hash_reason}"
    );
    let length_reason = &skipped["mxc://localhost/BadLength"];
    assert!(length_reason.contains("says 3"), "{length_reason}");
    let missing_reason = &skipped["mxc://localhost/Missing"];
    assert!(
        missing_reason.contains("localhost__Missing.txt"),
        "{missing_reason}"
    );
    assert_no_work_folder(&b);
    assert_eq!(
        common::spool_entries(&b.media_dir()),
        0,
        "spooled copies left"
    );
    let migrated = events_of(&b_config, "media.migrated.v1");
    assert_eq!(migrated.len(), 1, "{migrated:?}");
    assert!(migrated[0]["media"].to_string().contains("GoodOne"));
    assert_eq!(common::count_blobs(&b.media_dir()), 1);

    b.restart().await;
    assert!(b.download_bytes("mxc://localhost/GoodOne").await == b"good bytes".repeat(50));
    for id in ["BadHash", "BadLength", "Missing"] {
        let resp = b.download(&format!("mxc://localhost/{id}")).await;
        assert_eq!(resp.status(), StatusCode::NOT_FOUND, "{id}");
    }
    b.stop().await;
}

/// A tar entry whose name is not one plain file name (`../evil`, `a/b`, an absolute path)
/// refuses the whole import, before anything is recorded: a non-zero exit naming the entry,
/// nothing written outside the work folder, the work folder removed, not even the archive's
/// good media imported.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_entry_with_an_unsafe_name_refuses_the_whole_import() {
    let (b, b_config) = fresh_stopped_server().await;
    let events_before = events(&b_config).len();
    let outside = tempfile::tempdir().unwrap();
    let absolute = outside.path().join("abs-evil");
    for bad in ["../evil", "a/b", absolute.to_str().unwrap()] {
        let work = tempfile::tempdir().unwrap();
        let good = local_media("GoodOne", b"good bytes".repeat(50));
        let good_entry = (good.entry_name(), good.bytes.clone(), 1_600_000_000);
        let evil = (bad.to_owned(), b"evil".to_vec(), 1_600_000_000);
        // The good media first: the refusal must also undo what was unpacked before.
        let data = write_part(
            work.path(),
            "export-part-1.tgz",
            "export-part-1.tar",
            &[good_entry, evil],
        );
        let manifest = write_manifest_part(
            work.path(),
            &json!({
                "version": 2,
                "entity_id": "localhost",
                "created_ts": 1_700_000_100_000u64,
                "media": { good.mxc(): good.record() },
            }),
        );
        let parts = vec![data, manifest];
        let r = import(&b_config, &parts);
        let err = r.failure();
        assert!(err.contains(&format!("{bad:?}")), "{bad}: {err}");
        assert!(err.contains("export-part-1.tgz"), "{bad}: {err}");
        assert!(
            !b.dir.path().join("evil").exists(),
            "{bad}: written beside the ledger"
        );
        assert!(
            !work.path().join("evil").exists(),
            "{bad}: written beside the parts"
        );
        assert!(!absolute.exists(), "{bad}: written at an absolute path");
        assert_no_work_folder(&b);
        assert_eq!(events(&b_config).len(), events_before, "{bad}: recorded");
        assert_eq!(common::count_blobs(&b.media_dir()), 0, "{bad}");
    }
}

/// Parts without the manifest's: a non-zero exit saying so, nothing recorded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_archive_without_its_manifest_is_refused() {
    let work = tempfile::tempdir().unwrap();
    let good = local_media("GoodOne", b"good bytes".repeat(50));
    let parts = write_mmr_archive(work.path(), "localhost", &[good], MIB, |_| true, |_| {});
    let (b, b_config) = fresh_stopped_server().await;
    let events_before = events(&b_config).len();
    let r = import(&b_config, &parts[..parts.len() - 1]);
    let err = r.failure();
    assert!(err.contains("no manifest.json"), "{err}");
    assert_no_work_folder(&b);
    assert_eq!(events(&b_config).len(), events_before);
}

/// A part that is not gzip (a plain tar, or garbage) refuses the import: a non-zero exit
/// naming the part, nothing recorded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_part_that_is_not_gzip_is_refused() {
    let work = tempfile::tempdir().unwrap();
    let good = local_media("GoodOne", b"good bytes".repeat(50));
    let parts = write_mmr_archive(work.path(), "localhost", &[good], MIB, |_| true, |_| {});
    let (b, b_config) = fresh_stopped_server().await;
    let events_before = events(&b_config).len();
    // The first part, un-gzipped: a plain tar.
    let mut plain = Vec::new();
    flate2::read::GzDecoder::new(std::fs::File::open(&parts[0]).unwrap())
        .read_to_end(&mut plain)
        .unwrap();
    let plain_tar = work.path().join("plain-part.tgz");
    std::fs::write(&plain_tar, &plain).unwrap();
    let garbage = work.path().join("garbage-part.tgz");
    std::fs::write(&garbage, random_bytes(4096)).unwrap();
    for bad in [&plain_tar, &garbage] {
        let mut with_bad = parts.clone();
        with_bad.insert(1, bad.clone());
        let r = import(&b_config, &with_bad);
        let err = r.failure();
        let file = bad.file_name().unwrap().to_string_lossy();
        assert!(err.contains(file.as_ref()), "{file}: {err}");
        assert_no_work_folder(&b);
        assert_eq!(events(&b_config).len(), events_before, "{file}");
    }
    // The good archive alone still imports: the refusals left nothing behind.
    let summary = import(&b_config, &parts).summary();
    assert_eq!(summary["imported"], 1, "{summary}");
}

// ---------------------------------------------------------------------------------------------
// The export API (matrix-media-repo's routes)
// ---------------------------------------------------------------------------------------------

const ADMIN_API: &str = "/_matrix/media/unstable/admin";

async fn post_export(srv: &TestServer, token: &str, path: &str) -> reqwest::Response {
    srv.client
        .post(srv.url(&format!("{ADMIN_API}{path}")))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
}

async fn get_as(srv: &TestServer, token: &str, path: &str) -> reqwest::Response {
    srv.client
        .get(srv.url(&format!("{ADMIN_API}{path}")))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
}

/// The metadata of export `id` once it is complete.
async fn finished_metadata(srv: &TestServer, token: &str, id: &str) -> Value {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let resp = get_as(srv, token, &format!("/export/{id}/metadata")).await;
        assert_eq!(resp.status(), StatusCode::OK);
        let v: Value = resp.json().await.unwrap();
        if v["complete"] == true {
            return v;
        }
        assert!(v["error"].is_null(), "{v}");
        assert!(std::time::Instant::now() < deadline, "export not done: {v}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// A user exports their own media over HTTP; the parts download and restore on a fresh server;
/// another user can neither start that export nor see it; the export can be deleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_exports_their_own_media_over_http_and_nobody_else_sees_it() {
    let mut a = TestServer::start().await;
    let p = populate(&a).await;

    // bob may not export alice; alice may.
    let resp = post_export(&a, BOB, "/user/@alice:localhost/export").await;
    common::expect_error(resp, StatusCode::FORBIDDEN, "M_FORBIDDEN").await;
    let resp = post_export(&a, ALICE, "/user/@alice:localhost/export").await;
    assert_eq!(resp.status(), StatusCode::OK);
    let started: Value = resp.json().await.unwrap();
    let id = started["export_id"].as_str().unwrap().to_owned();
    assert!(started["task_id"].is_number(), "{started}");

    let meta = finished_metadata(&a, ALICE, &id).await;
    assert_eq!(meta["entity"], "@alice:localhost", "{meta}");
    let listed = meta["parts"].as_array().unwrap().clone();
    assert_eq!(
        listed.last().unwrap()["name"],
        "export-manifest.tgz",
        "{meta}"
    );
    // Not alice's export: bob sees nothing of it (404 as for an unknown id); an admin does.
    for path in [
        format!("/export/{id}/metadata"),
        format!("/export/{id}/part/1"),
    ] {
        let resp = get_as(&a, BOB, &path).await;
        common::expect_error(resp, StatusCode::NOT_FOUND, "M_NOT_FOUND").await;
    }
    assert_eq!(
        get_as(&a, ADMIN, &format!("/export/{id}/metadata"))
            .await
            .status(),
        StatusCode::OK
    );
    let resp = get_as(&a, ALICE, "/export/..%2F..%2Fetc/metadata").await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);

    // Download every part, then restore them on a fresh server.
    let dl = tempfile::tempdir().unwrap();
    let mut parts = Vec::new();
    for part in &listed {
        let n = part["index"].as_u64().unwrap();
        let resp = get_as(&a, ALICE, &format!("/export/{id}/part/{n}")).await;
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(resp.headers()["content-type"], "application/gzip");
        let bytes = resp.bytes().await.unwrap();
        assert_eq!(bytes.len() as u64, part["size"].as_u64().unwrap());
        let path = dl.path().join(part["name"].as_str().unwrap());
        std::fs::write(&path, &bytes).unwrap();
        parts.push(path);
    }
    let (mut b, b_config) = fresh_stopped_server().await;
    let summary = import(&b_config, &parts).summary();
    assert_eq!(summary["imported"], 2, "{summary}");
    assert!(skipped(&summary).is_empty(), "{summary}");
    b.restart().await;
    for (mxc, bytes) in [&p.big, &p.named] {
        assert_eq!(&b.download_bytes(mxc).await, bytes);
    }
    let resp = b.download(&p.quarantined.0).await;
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);

    // Deleted: gone for everyone; the export stays recorded in A's log.
    let resp = a
        .client
        .delete(a.url(&format!("{ADMIN_API}/export/{id}")))
        .bearer_auth(ALICE)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let resp = get_as(&a, ADMIN, &format!("/export/{id}/metadata")).await;
    common::expect_error(resp, StatusCode::NOT_FOUND, "M_NOT_FOUND").await;
    a.stop().await;
    let recorded = events_of(&config_file(&a), "media.exported.v1");
    assert_eq!(recorded.len(), 1, "{recorded:?}");
    b.stop().await;
}

/// A server export over HTTP needs an admin of that server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_export_over_http_needs_an_admin() {
    let mut a = TestServer::start().await;
    populate(&a).await;
    let resp = post_export(&a, ALICE, "/server/localhost/export").await;
    common::expect_error(resp, StatusCode::FORBIDDEN, "M_FORBIDDEN").await;
    let resp = post_export(&a, ADMIN, "/server/localhost/export").await;
    assert_eq!(resp.status(), StatusCode::OK);
    let id = resp.json::<Value>().await.unwrap()["export_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let meta = finished_metadata(&a, ADMIN, &id).await;
    assert_eq!(meta["entity"], "localhost", "{meta}");
    a.stop().await;
}

/// An archive uploaded part by part to a running server (matrix-media-repo's import API,
/// repository admins only) is imported once closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_archive_uploaded_to_the_import_api_is_imported_when_closed() {
    let mut a = TestServer::start().await;
    let p = populate(&a).await;
    a.stop().await;
    let into = tempfile::tempdir().unwrap();
    let summary = export(
        &config_file(&a),
        &["--user", "@alice:localhost"],
        into.path(),
    )
    .summary();
    let parts = parts_of(&summary);
    assert!(parts.len() >= 2, "{summary}");

    let b = TestServer::start().await;
    let post = |path: String, token: &'static str, body: Vec<u8>| {
        let req = b
            .client
            .post(b.url(&format!("{ADMIN_API}{path}")))
            .bearer_auth(token)
            .body(body);
        async move { req.send().await.unwrap() }
    };
    let first = std::fs::read(&parts[0]).unwrap();
    let resp = post("/import".into(), ALICE, first.clone()).await;
    common::expect_error(resp, StatusCode::FORBIDDEN, "M_FORBIDDEN").await;
    let resp = post("/import".into(), ADMIN, first).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let id = resp.json::<Value>().await.unwrap()["import_id"]
        .as_str()
        .unwrap()
        .to_owned();
    for part in &parts[1..] {
        let resp = post(
            format!("/import/{id}/part"),
            ADMIN,
            std::fs::read(part).unwrap(),
        )
        .await;
        assert_eq!(resp.status(), StatusCode::OK);
    }
    let resp = post(format!("/import/{id}/close"), ADMIN, Vec::new()).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let done = loop {
        let v: Value = get_as(&b, ADMIN, &format!("/import/{id}"))
            .await
            .json()
            .await
            .unwrap();
        if v["done"] == true {
            break v;
        }
        assert!(std::time::Instant::now() < deadline, "{v}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert_eq!(done["summary"]["imported"], 2, "{done}");
    assert_eq!(done["closed"], true, "{done}");
    // The import is a task of the tasks API, finished, with its figures.
    let tasks: Value = get_as(&b, ADMIN, "/tasks/all").await.json().await.unwrap();
    let import_task = tasks
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["task_name"] == "import")
        .unwrap_or_else(|| panic!("no import task: {tasks}"))
        .clone();
    assert_eq!(import_task["is_finished"], true, "{import_task}");
    assert_eq!(import_task["imported"], 2, "{import_task}");
    assert_eq!(import_task["params"]["kind"], "archive", "{import_task}");
    let id_of_task = import_task["task_id"].as_u64().unwrap();
    let one: Value = get_as(&b, ADMIN, &format!("/tasks/{id_of_task}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(one, import_task);
    for (mxc, bytes) in [&p.big, &p.named] {
        assert_eq!(&b.download_bytes(mxc).await, bytes);
    }
    // Closed: no more parts.
    let resp = post(format!("/import/{id}/part"), ADMIN, vec![1, 2, 3]).await;
    common::expect_error(resp, StatusCode::BAD_REQUEST, "M_INVALID_PARAM").await;
    let resp = get_as(&b, ADMIN, "/import/not-an-id").await;
    common::expect_error(resp, StatusCode::BAD_REQUEST, "M_INVALID_PARAM").await;
}
