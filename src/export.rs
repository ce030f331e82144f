//! Export archives in matrix-media-repo's v2 format (`media-ledger export`): the live local
//! media of a user (by uploader) or of a server (by origin), each blob as a tar entry
//! `<origin>__<media id>` in gzipped tar parts of about `part_size` bytes
//! (`export-part-N.tgz`), then `export-manifest.tgz` holding `manifest.json` (version 2: entity,
//! time, and per `mxc://` URI the name, archived file name, size, type, SHA-256, origin, id,
//! creation time and uploader). Quarantined media are never exported (counted, left out). The
//! export is recorded as `media.exported.v1` once every part is written and synced. The
//! archive reads back with `media-ledger import archive` (and MMR's `gdpr_import`).

use crate::datastore::Datastores;
use crate::ledger::{Command, Ledger, LedgerError};
use crate::moderation::select::visit_records;
use anyhow::Context;
use futures_util::StreamExt;
use media_ledger_events::{Actor, MediaExported, MediaRef, RequestId, ServerName, UserId};
use media_ledger_projections::media_index::{MediaKind, MediaRecord};
use media_ledger_projections::origin_prefix;
use serde_json::{json, Map, Value};
use std::path::{Path, PathBuf};

/// The file of an export folder (server exports) saying whose export it is.
pub const STATE_FILE: &str = "export.json";

/// Whose media.
#[derive(Debug, Clone)]
pub enum Entity {
    /// Media this user uploaded (to their own server).
    User(UserId),
    /// Every local media of this origin.
    Server(ServerName),
}

impl std::fmt::Display for Entity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Entity::User(u) => f.write_str(u.as_str()),
            Entity::Server(s) => f.write_str(s.as_str()),
        }
    }
}

/// What was written.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Exported {
    /// Media in the archive.
    pub media: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Quarantined media left out.
    pub quarantined_left_out: u64,
    /// The part files, in order (the manifest's last).
    pub parts: Vec<PathBuf>,
}

/// The media of `entity`: live local media (quarantined ones counted apart).
fn select(
    ledger: &Ledger,
    entity: &Entity,
) -> Result<(Vec<(MediaRef, MediaRecord)>, u64), LedgerError> {
    let (prefix, user) = match entity {
        Entity::User(u) => (
            u.server_name()
                .parse::<ServerName>()
                .map(|s| origin_prefix(&s))
                .unwrap_or_default(),
            Some(Actor::User(u.clone())),
        ),
        Entity::Server(s) => (origin_prefix(s), None),
    };
    let (mut out, mut quarantined) = (Vec::new(), 0u64);
    visit_records(ledger, &prefix, |m, r| {
        if r.kind != MediaKind::Local || user.as_ref().is_some_and(|u| &r.uploader != u) {
            return;
        }
        if r.quarantined {
            quarantined += 1;
        } else {
            out.push((m, r));
        }
    })?;
    Ok((out, quarantined))
}

struct Part {
    builder: tar::Builder<flate2::write::GzEncoder<std::fs::File>>,
    path: PathBuf,
    size: u64,
}

/// A part is written as `<name>.partial` and renamed to its name once complete and synced, so
/// a listing of `*.tgz` (the export API's metadata) shows only whole parts.
fn new_part(into: &Path, name: &str) -> anyhow::Result<Part> {
    let path = into.join(name);
    let partial = into.join(format!("{name}.partial"));
    let file = std::fs::File::create(&partial).with_context(|| partial.display().to_string())?;
    Ok(Part {
        builder: tar::Builder::new(flate2::write::GzEncoder::new(
            file,
            flate2::Compression::fast(),
        )),
        path,
        size: 0,
    })
}

fn finish_part(part: Part) -> anyhow::Result<PathBuf> {
    let file = part.builder.into_inner()?.finish()?;
    file.sync_all()?;
    let name = part
        .path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned());
    let partial = part
        .path
        .with_file_name(format!("{}.partial", name.unwrap_or_default()));
    std::fs::rename(&partial, &part.path)?;
    Ok(part.path)
}

fn append(part: &mut Part, name: &str, data: &[u8], mtime_ms: u64) -> anyhow::Result<()> {
    let mut header = tar::Header::new_ustar();
    header.set_entry_type(tar::EntryType::Regular);
    header.set_size(data.len() as u64);
    header.set_mode(0o644);
    header.set_mtime(mtime_ms / 1000);
    header.set_cksum();
    part.builder.append_data(&mut header, name, data)?;
    part.size += data.len() as u64;
    Ok(())
}

/// Writes the archive of `entity` into the directory `into` (created; it must be empty) and
/// records `media.exported.v1` as `actor`.
pub async fn export(
    ledger: &Ledger,
    datastores: &Datastores,
    entity: &Entity,
    into: &Path,
    part_size: u64,
    actor: Actor,
) -> anyhow::Result<Exported> {
    std::fs::create_dir_all(into)?;
    if std::fs::read_dir(into)?
        .filter_map(Result::ok)
        .any(|e| e.file_name() != STATE_FILE)
    {
        anyhow::bail!("{}: not empty", into.display());
    }
    let (media, quarantined_left_out) = select(ledger, entity)?;
    let mut parts = Vec::new();
    let mut part = new_part(into, "export-part-1.tgz")?;
    let mut manifest = Map::new();
    let mut bytes = 0u64;
    for (m, r) in &media {
        // One media in memory at a time (a blob is at most `uploads.max_bytes`).
        let mut data = Vec::with_capacity(usize::try_from(r.size_bytes).unwrap_or(0));
        let mut stream =
            crate::media::read::open_blob(ledger, datastores, &r.sha256, 0, r.size_bytes)
                .await
                .map_err(|e| anyhow::anyhow!("{m}: {e}"))?;
        while let Some(chunk) = stream.next().await {
            data.extend_from_slice(&chunk.with_context(|| format!("reading {m}"))?);
        }
        let name = format!("{}__{}", m.origin, m.media_id);
        append(&mut part, &name, &data, r.created_at_ms)?;
        bytes += data.len() as u64;
        manifest.insert(
            m.to_string(),
            json!({
                "name": r.upload_name.clone().unwrap_or_default(),
                "file_name": name,
                "size_bytes": data.len(),
                "content_type": r.content_type.as_ref().map(|c| c.as_str().to_owned()).unwrap_or_default(),
                "s3_url": "",
                "sha256": r.sha256.to_string(),
                "origin": m.origin.as_str(),
                "media_id": m.media_id.as_str(),
                "created_ts": r.created_at_ms,
                // MMR's importer reads this as a user id: media without one (migrated without
                // an uploader) are attributed to the exported entity's user, else left out.
                "uploader": match (&r.uploader, entity) {
                    (Actor::User(u), _) | (_, Entity::User(u)) => u.as_str().to_owned(),
                    _ => String::new(),
                },
            }),
        );
        if part.size >= part_size {
            parts.push(finish_part(part)?);
            part = new_part(into, &format!("export-part-{}.tgz", parts.len() + 1))?;
        }
    }
    if part.size > 0 || parts.is_empty() {
        parts.push(finish_part(part)?);
    } else {
        let partial = part.path.with_extension("tgz.partial");
        drop(part);
        let _ = std::fs::remove_file(partial);
    }
    let mut last = new_part(into, "export-manifest.tgz")?;
    let body = json!({
        "version": 2,
        "entity_id": entity.to_string(),
        "created_ts": crate::clock::now_ms(),
        "media": Value::Object(manifest),
    });
    append(
        &mut last,
        "manifest.json",
        &serde_json::to_vec(&body)?,
        crate::clock::now_ms(),
    )?;
    parts.push(finish_part(last)?);
    // The parts are durable; the directory entries too.
    std::fs::File::open(into)?.sync_all()?;
    let exported = Exported {
        media: media.len() as u64,
        bytes,
        quarantined_left_out,
        parts,
    };
    ledger
        .submit(
            actor,
            RequestId(format!("export-{}", crate::clock::now_ms())),
            Command::Export(MediaExported {
                entity: entity.to_string(),
                media_count: exported.media,
                bytes,
                quarantined_left_out,
                parts: u32::try_from(exported.parts.len()).unwrap_or(u32::MAX),
            }),
        )
        .await?;
    Ok(exported)
}

/// Usage of `export`.
pub const USAGE: &str = "usage: media-ledger export (--user @u:server | --server NAME) --into DIR
         [--part-size-mb N] [--config PATH]
  Writes the live local media of a user (or a server) as a matrix-media-repo v2 archive
  (gzipped tar parts and export-manifest.tgz) into DIR; quarantined media are left out.
  Run it with the server stopped.";

/// Runs `export` with the arguments after it; prints the summary as JSON.
pub fn run(args: impl Iterator<Item = String>) -> anyhow::Result<()> {
    let mut config_path = PathBuf::from("config.toml");
    let (mut entity, mut into, mut part_mb) = (None, None, 100u64);
    let mut it = args;
    while let Some(a) = it.next() {
        let mut value = |name: &str| it.next().with_context(|| format!("{name} needs a value"));
        match a.as_str() {
            "--config" | "-c" => config_path = value("--config")?.into(),
            "--user" => {
                let u = value("--user")?;
                entity = Some(Entity::User(
                    u.parse().map_err(|e| anyhow::anyhow!("--user {u}: {e}"))?,
                ));
            }
            "--server" => {
                let s = value("--server")?;
                entity = Some(Entity::Server(
                    ServerName::parse_strict(&s)
                        .map_err(|e| anyhow::anyhow!("--server {s}: {e}"))?,
                ));
            }
            "--into" => into = Some(PathBuf::from(value("--into")?)),
            "--part-size-mb" => {
                part_mb = value("--part-size-mb")?.parse().context("--part-size-mb")?
            }
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(());
            }
            other => anyhow::bail!("unexpected argument {other:?}\n{USAGE}"),
        }
    }
    let entity = entity.context("--user or --server is required")?;
    let into = into.context("--into DIR is required")?;
    let config = crate::config::Config::load(&config_path)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let exported = rt.block_on(async {
        let (ledger, datastores) = crate::import::cli::open_exclusive(&config).await?;
        let out = export(
            &ledger,
            &datastores,
            &entity,
            &into,
            part_mb.max(1) * 1024 * 1024,
            Actor::System,
        )
        .await;
        // Everything recorded is synced before the writer stops.
        tokio::task::spawn_blocking(move || ledger.shutdown()).await?;
        out
    })?;
    println!("{}", serde_json::to_string(&exported)?);
    Ok(())
}
