//! matrix-media-repo's archive import API, for repository admins: `POST import` (the body is
//! the first part) answers `{import_id, task_id}`, `POST import/{id}/part` adds a part,
//! `POST import/{id}/close` imports them (in the background: unpack, then the importer of
//! `media-ledger import archive`, `import/`), and `GET import/{id}` (ours) tells how it went
//! (`{"closed", "done", "summary", "error"}`). Parts are streamed to
//! `<database.path>-imports/<import id>/` (at most [`MAX_PART_BYTES`] each), never held in
//! memory.

use super::extract::MPath;
use super::moderator::{need, Moderator};
use super::State;
use crate::error::ApiError;
use axum::body::Body;
use axum::extract::State as S;
use axum::Json;
use futures_util::StreamExt;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::io::AsyncWriteExt;

/// Largest part accepted.
pub const MAX_PART_BYTES: u64 = 4 << 30;

fn imports_dir(state: &State) -> PathBuf {
    super::beside_ledger(state, "imports")
}

fn import_dir(state: &State, id: &str) -> Result<PathBuf, ApiError> {
    if id.len() != crate::media::MEDIA_ID_LEN || !id.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(ApiError::InvalidParam("invalid import id".into()));
    }
    let dir = imports_dir(state).join(id);
    if !dir.is_dir() {
        return Err(ApiError::NotFound("no such import".into()));
    }
    Ok(dir)
}

/// Streams `body` into the next part file of `dir`.
async fn save_part(state: &State, dir: &Path, body: Body) -> Result<(), ApiError> {
    if dir.join("closed").exists() {
        return Err(ApiError::InvalidParam("the import is closed".into()));
    }
    // Written as `upload-<random>.partial`, renamed to the next `part-N.tgz` once whole and
    // synced: an interrupted or concurrent upload never leaves or mixes a part.
    let path = dir.join(format!("upload-{}.partial", crate::media::new_media_id()?));
    let mut file = tokio::fs::File::create(&path)
        .await
        .map_err(ApiError::internal)?;
    let mut stream = body.into_data_stream();
    let mut size = 0u64;
    while let Some(chunk) = stream.next().await {
        let chunk = match chunk {
            Ok(c) => c,
            Err(e) => {
                let _ = tokio::fs::remove_file(&path).await;
                return Err(ApiError::body(e));
            }
        };
        size += chunk.len() as u64;
        if size > MAX_PART_BYTES {
            let _ = tokio::fs::remove_file(&path).await;
            return Err(ApiError::TooLarge {
                limit_bytes: MAX_PART_BYTES,
            });
        }
        if let Err(e) = file.write_all(&chunk).await {
            let _ = tokio::fs::remove_file(&path).await;
            return Err(ApiError::internal(e));
        }
    }
    if let Err(e) = file.sync_all().await {
        let _ = tokio::fs::remove_file(&path).await;
        return Err(ApiError::internal(e));
    }
    if size == 0 {
        let _ = tokio::fs::remove_file(&path).await;
        return Err(ApiError::MissingParam(
            "the body is the archive part".into(),
        ));
    }
    let _numbering = state.archives.parts.lock().await;
    if dir.join("closed").exists() {
        let _ = tokio::fs::remove_file(&path).await;
        return Err(ApiError::InvalidParam("the import is closed".into()));
    }
    let n = std::fs::read_dir(dir)
        .map_err(ApiError::internal)?
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with("part-"))
        .count();
    std::fs::rename(&path, dir.join(format!("part-{:05}.tgz", n + 1)))
        .map_err(ApiError::internal)?;
    Ok(())
}

/// The body, when the caller may upload parts; else the refusal, once (a bounded part of) the
/// body is read: a client still sending then sees the answer, not a reset connection.
async fn allowed(
    m: Result<Moderator<need::Repository>, ApiError>,
    body: Body,
) -> Result<Body, ApiError> {
    match m {
        Ok(_) => Ok(body),
        Err(e) => {
            crate::media::drain(body.into_data_stream()).await;
            Err(e)
        }
    }
}

/// `POST import`: the body is the archive's first part.
pub async fn start(
    S(state): S<State>,
    m: Result<Moderator<need::Repository>, ApiError>,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let body = allowed(m, body).await?;
    let id = crate::media::new_media_id()?.to_string();
    let dir = imports_dir(&state).join(&id);
    std::fs::create_dir_all(&dir).map_err(ApiError::internal)?;
    if let Err(e) = save_part(&state, &dir, body).await {
        let _ = std::fs::remove_dir_all(&dir);
        return Err(e);
    }
    Ok(Json(json!({ "import_id": id, "task_id": 0 })))
}

/// `POST import/{id}/part`: one more part.
pub async fn part(
    S(state): S<State>,
    m: Result<Moderator<need::Repository>, ApiError>,
    MPath(id): MPath<String>,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let body = allowed(m, body).await?;
    let dir = import_dir(&state, &id)?;
    save_part(&state, &dir, body).await?;
    Ok(Json(json!({})))
}

/// `POST import/{id}/close`: no more parts; the import runs in the background.
pub async fn close(
    S(state): S<State>,
    _m: Moderator<need::Repository>,
    MPath(id): MPath<String>,
) -> Result<Json<Value>, ApiError> {
    let dir = import_dir(&state, &id)?;
    {
        // Under the numbering lock: no part is being renamed in, and one close only.
        let _numbering = state.archives.parts.lock().await;
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(dir.join("closed"))
        {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                return Err(ApiError::InvalidParam(
                    "the import is closed already".into(),
                ));
            }
            Err(e) => return Err(ApiError::internal(e)),
        }
    }
    let state = state.clone();
    tokio::spawn(async move {
        let outcome = run(&state, &dir).await;
        let result = match outcome {
            Ok(report) => json!({ "done": true, "summary": report }),
            Err(e) => {
                tracing::warn!(import_id = %id, error = %format!("{e:#}"), "archive import failed");
                json!({ "done": true, "error": format!("{e:#}") })
            }
        };
        let _ = std::fs::write(dir.join("result.json"), result.to_string());
    });
    Ok(Json(json!({})))
}

async fn run(state: &State, dir: &Path) -> anyhow::Result<crate::import::Report> {
    let mut parts: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("part-"))
        })
        .collect();
    parts.sort();
    let work = dir.join("unpacked");
    std::fs::create_dir_all(&work)?;
    let config = state.config.clone();
    let (parts2, work2) = (parts.clone(), work.clone());
    let source = tokio::task::spawn_blocking(move || {
        crate::import::cli::archive_source(&config, &parts2, &work2)
    })
    .await??;
    let importer = crate::import::Importer::new(
        state.ledger.clone(),
        state.datastores.clone(),
        Arc::clone(&state.moderation),
        crate::import::Options {
            parallel: 4,
            ..Default::default()
        },
    );
    let id = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let report = importer
        .run_task(
            source,
            "archive",
            &format!("archive uploaded as import {id}"),
        )
        .await;
    let _ = std::fs::remove_dir_all(&work);
    for p in parts {
        let _ = std::fs::remove_file(p);
    }
    Ok(report?)
}

/// `GET import/{id}`: `{"closed", "done", "summary" | "error"}`.
pub async fn status(
    S(state): S<State>,
    _m: Moderator<need::Repository>,
    MPath(id): MPath<String>,
) -> Result<Json<Value>, ApiError> {
    let dir = import_dir(&state, &id)?;
    let closed = dir.join("closed").exists();
    let mut out = match std::fs::read_to_string(dir.join("result.json")) {
        Ok(text) => serde_json::from_str(&text).map_err(ApiError::internal)?,
        Err(_) => json!({ "done": false }),
    };
    out["closed"] = json!(closed);
    Ok(Json(out))
}
