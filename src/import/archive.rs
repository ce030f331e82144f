//! matrix-media-repo's export archives (v2, as `archival/v2archive` writes them), read as an
//! import source: gzipped tar parts holding the media files (`<origin>__<media id><ext>`) and,
//! in one of them, `manifest.json` (`{"version": 2, "entity_id", "created_ts", "media": {mxc:
//! {"name", "file_name", "size_bytes", "content_type", "sha256", "origin", "media_id",
//! "created_ts", "uploader"}}}`). The parts are unpacked into a work directory (entries with
//! unsafe names are refused), then every manifest record is a [`Row`] whose file, length and
//! SHA-256 the importer checks like any other source's.

use super::{Row, Source};
use anyhow::{bail, Context};
use media_ledger_events::{MediaId, MediaRef, ServerName, UserId};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// One media of the manifest.
#[derive(Debug, Deserialize)]
pub struct ManifestRecord {
    /// The upload's file name.
    #[serde(default)]
    pub name: String,
    /// Its file in the archive.
    pub file_name: String,
    /// Its length.
    pub size_bytes: i64,
    /// Its type.
    #[serde(default)]
    pub content_type: String,
    /// Hex SHA-256.
    #[serde(default)]
    pub sha256: String,
    /// Its origin.
    pub origin: String,
    /// Its id.
    pub media_id: String,
    /// When it was uploaded (ms).
    #[serde(default)]
    pub created_ts: i64,
    /// Its uploader.
    #[serde(default)]
    pub uploader: String,
}

/// The manifest of an archive.
#[derive(Debug, Deserialize)]
pub struct Manifest {
    /// 2.
    pub version: i64,
    /// The user or server exported.
    pub entity_id: String,
    /// When it was exported (ms).
    #[serde(default)]
    pub created_ts: i64,
    /// mxc URI → record.
    pub media: BTreeMap<String, ManifestRecord>,
}

/// A name a tar entry may have here: one plain component.
fn safe_name(name: &str) -> bool {
    !name.is_empty()
        && name != "."
        && name != ".."
        && !name.contains('/')
        && !name.contains('\\')
        && !name.contains('\0')
}

/// Unpacks the parts into `work` (flat: MMR's parts hold plain file names) and reads the
/// manifest.
pub fn unpack(parts: &[PathBuf], work: &Path) -> anyhow::Result<Manifest> {
    let mut manifest = None;
    for part in parts {
        let file = std::fs::File::open(part).with_context(|| format!("{}", part.display()))?;
        let mut tar = tar::Archive::new(flate2::read::MultiGzDecoder::new(file));
        for entry in tar
            .entries()
            .with_context(|| format!("{}: not a gzipped tar", part.display()))?
        {
            let mut entry = entry.with_context(|| format!("{}: a broken entry", part.display()))?;
            if !entry.header().entry_type().is_file() {
                continue;
            }
            let name = entry.path()?.to_string_lossy().into_owned();
            if !safe_name(&name) {
                bail!("{}: refusing the entry name {name:?}", part.display());
            }
            if name == "manifest.json" {
                let m: Manifest = serde_json::from_reader(&mut entry)
                    .with_context(|| format!("{}: manifest.json", part.display()))?;
                if m.version != 2 {
                    bail!(
                        "manifest version {} (only version 2 archives are read)",
                        m.version
                    );
                }
                manifest = Some(m);
            } else {
                entry
                    .unpack(work.join(&name))
                    .with_context(|| format!("{}: unpacking {name}", part.display()))?;
            }
        }
    }
    manifest.context("no manifest.json in the archive parts (pass every part, the manifest's too)")
}

/// The rows of an unpacked archive.
pub fn read(manifest: &Manifest, work: &Path, label: &str) -> Source {
    let mut rows = Vec::new();
    let mut bad = Vec::new();
    for (mxc, r) in &manifest.media {
        let (Ok(origin), Ok(id)) = (
            ServerName::parse_strict(&r.origin),
            r.media_id.parse::<MediaId>(),
        ) else {
            bad.push((
                mxc.clone(),
                "not a valid server name and media id".to_owned(),
            ));
            continue;
        };
        let created = u64::try_from(r.created_ts).unwrap_or(0);
        rows.push(Row {
            media: MediaRef::new(origin, id),
            path: safe_name(&r.file_name).then(|| work.join(&r.file_name)),
            object: None,
            length: Some(r.size_bytes),
            sha256_hex: Some(r.sha256.clone()).filter(|s| !s.is_empty()),
            content_type: Some(r.content_type.clone()).filter(|s| !s.is_empty()),
            upload_name: Some(r.name.clone()).filter(|s| !s.is_empty()),
            uploader: r.uploader.parse::<UserId>().ok(),
            remote: false,
            created_at_ms: created,
            last_access_ms: created,
            quarantined_by: None,
            pinned: false,
            source: format!("archive {} ({label})", manifest.entity_id),
            thumbnails: Vec::new(),
        });
    }
    Source { rows, bad }
}
