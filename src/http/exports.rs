//! matrix-media-repo's export API: `POST user/{userId}/export` (the user themself or a
//! repository admin) and `POST server/{serverName}/export` (admins of that server, repository
//! admins) start an export in the background (`export.rs`, into
//! `<database.path>-exports/<export id>/`) and answer `{export_id, task_id}`; `GET
//! export/{id}/metadata` lists its finished parts, `GET export/{id}/part/{n}` serves one,
//! `DELETE export/{id}` removes it — for whoever asked for it, the exported user and
//! repository admins. Unlike matrix-media-repo, an export id is checked before any path is
//! built and the three read routes are refused to anyone else.

use super::extract::{Authed, MPath, ServerPath, UserPath};
use super::moderator::{need, Moderator};
use super::State;
use crate::error::ApiError;
use crate::export::{Entity, STATE_FILE};
use axum::body::Body;
use axum::extract::State as S;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Json;
use media_ledger_events::Actor;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::path::PathBuf;
use std::sync::Arc;

/// Bytes per part of an export started over HTTP.
const PART_SIZE: u64 = 100 * 1024 * 1024;

/// What an export folder records about itself.
#[derive(Serialize, Deserialize)]
struct ExportState {
    /// The user id or server name exported.
    entity: String,
    /// Who asked (a user id, or `shared-secret-admin`).
    requested_by: String,
    /// Set once every part is written and the export recorded.
    complete: bool,
    /// Why it failed, if it did.
    error: Option<String>,
}

fn exports_dir(state: &State) -> PathBuf {
    super::beside_ledger(state, "exports")
}

/// The folder of export `id`; an id is 32 ASCII letters and digits (what we hand out).
fn export_dir(state: &State, id: &str) -> Result<PathBuf, ApiError> {
    if id.len() != crate::media::MEDIA_ID_LEN || !id.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(ApiError::InvalidParam("invalid export id".into()));
    }
    Ok(exports_dir(state).join(id))
}

fn read_state(dir: &std::path::Path) -> Result<ExportState, ApiError> {
    let text = std::fs::read_to_string(dir.join(STATE_FILE))
        .map_err(|_| ApiError::NotFound("no such export".into()))?;
    serde_json::from_str(&text).map_err(ApiError::internal)
}

fn write_state(dir: &std::path::Path, s: &ExportState) -> std::io::Result<()> {
    let tmp = dir.join(format!("{STATE_FILE}.tmp"));
    std::fs::write(&tmp, serde_json::to_vec(s).unwrap_or_default())?;
    std::fs::rename(tmp, dir.join(STATE_FILE))
}

async fn start(state: &State, entity: Entity, actor: Actor) -> Result<Json<Value>, ApiError> {
    let id = crate::media::new_media_id()?.to_string();
    let requester = actor.to_string();
    {
        let mut running = state.archives.exports.lock();
        if running.iter().any(|(_, r)| r == &requester) {
            return Err(ApiError::LimitExceeded(
                "an export of yours is still being written; wait for it".into(),
            ));
        }
        running.push((id.clone(), requester));
    }
    let done = RunningGuard(state.archives.exports.clone(), id.clone());
    let dir = exports_dir(state).join(&id);
    std::fs::create_dir_all(&dir).map_err(ApiError::internal)?;
    let mut st = ExportState {
        entity: entity.to_string(),
        requested_by: actor.to_string(),
        complete: false,
        error: None,
    };
    write_state(&dir, &st).map_err(ApiError::internal)?;
    let (ledger, datastores) = (state.ledger.clone(), state.datastores.clone());
    let export_id = id.clone();
    tokio::spawn(async move {
        let _done = done;
        let result =
            crate::export::export(&ledger, &datastores, &entity, &dir, PART_SIZE, actor).await;
        match result {
            Ok(done) => {
                tracing::info!(export_id, entity = %entity, media = done.media, "export written");
                st.complete = true;
            }
            Err(e) => {
                tracing::warn!(export_id, entity = %entity, error = %format!("{e:#}"), "export failed");
                st.error = Some("the export failed; see the server log".into());
            }
        }
        if let Err(e) = write_state(&dir, &st) {
            tracing::warn!(export_id, error = %e, "cannot record the export's state");
        }
    });
    // No task of the tasks API runs it (those are datastore transfers): `task_id` is 0.
    Ok(Json(json!({ "export_id": id, "task_id": 0 })))
}

/// `POST user/{userId}/export`: the user themself, or a repository admin.
pub async fn user_export(
    S(state): S<State>,
    auth: Authed,
    UserPath(user): UserPath,
) -> Result<Json<Value>, ApiError> {
    let own = !auth.masqueraded && auth.principal.user() == Some(&user);
    if !own && !is_admin(&state, &auth) {
        return Err(ApiError::Forbidden(
            "only the user themself or a repository admin may export a user's media".into(),
        ));
    }
    start(&state, Entity::User(user), auth.principal.actor()).await
}

/// `POST server/{serverName}/export`: admins of that server, repository admins.
pub async fn server_export(
    S(state): S<State>,
    m: Moderator<need::Admin>,
    ServerPath(server): ServerPath,
) -> Result<Json<Value>, ApiError> {
    m.own_server(server.as_str())?;
    start(&state, Entity::Server(server), m.caller.principal.actor()).await
}

/// A repository admin (never an appservice acting as one of its users, invariant 31).
fn is_admin(state: &State, auth: &Authed) -> bool {
    !auth.masqueraded && state.auth.is_admin(&auth.principal)
}

/// Archive work of one server (invariant 29: nothing of it is process-wide): the exports
/// being written, by id and requester — one at a time per requester (each copies every media of
/// its entity), and a running one is neither deleted nor started twice — and the lock under
/// which uploaded archive parts are numbered and imports closed (`imports.rs`).
#[derive(Default)]
pub struct ArchiveJobs {
    exports: Arc<parking_lot::Mutex<Vec<(String, String)>>>,
    pub(super) parts: tokio::sync::Mutex<()>,
}

/// The export `id` if the caller may read it.
fn readable(state: &State, auth: &Authed, id: &str) -> Result<(PathBuf, ExportState), ApiError> {
    let dir = export_dir(state, id)?;
    let st = read_state(&dir)?;
    let me = auth.principal.actor().to_string();
    if auth.masqueraded || (st.requested_by != me && st.entity != me && !is_admin(state, auth)) {
        // Not yours: as if it did not exist.
        return Err(ApiError::NotFound("no such export".into()));
    }
    Ok((dir, st))
}

/// The finished parts of an export folder, in order: `export-part-N.tgz`, then the manifest.
fn parts(dir: &std::path::Path) -> Vec<(usize, String, u64)> {
    let mut data: Vec<(usize, String, u64)> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let n = name
                .strip_prefix("export-part-")?
                .strip_suffix(".tgz")?
                .parse()
                .ok()?;
            Some((n, name, e.metadata().ok()?.len()))
        })
        .collect();
    data.sort();
    if let Ok(m) = std::fs::metadata(dir.join("export-manifest.tgz")) {
        data.push((data.len() + 1, "export-manifest.tgz".into(), m.len()));
    }
    data
}

/// `GET export/{id}/metadata`: `{entity, parts: [{index, size, name}], complete}`.
pub async fn metadata(
    S(state): S<State>,
    auth: Authed,
    MPath(id): MPath<String>,
) -> Result<Json<Value>, ApiError> {
    let (dir, st) = readable(&state, &auth, &id)?;
    let list: Vec<Value> = parts(&dir)
        .into_iter()
        .map(|(index, name, size)| json!({ "index": index, "size": size, "name": name }))
        .collect();
    Ok(Json(json!({
        "entity": st.entity,
        "parts": list,
        "complete": st.complete,
        "error": st.error,
    })))
}

/// `GET export/{id}/part/{n}`: the part as `application/gzip`.
pub async fn part(
    S(state): S<State>,
    auth: Authed,
    MPath((id, n)): MPath<(String, String)>,
) -> Result<Response, ApiError> {
    let (dir, _) = readable(&state, &auth, &id)?;
    let n: usize = n
        .parse()
        .map_err(|_| ApiError::InvalidParam("invalid part index".into()))?;
    let (_, name, size) = parts(&dir)
        .into_iter()
        .find(|(i, _, _)| *i == n)
        .ok_or_else(|| ApiError::NotFound("no such part".into()))?;
    let file = tokio::fs::File::open(dir.join(&name))
        .await
        .map_err(|_| ApiError::NotFound("no such part".into()))?;
    let body = Body::from_stream(tokio_util::io::ReaderStream::new(file));
    Ok((
        [
            (header::CONTENT_TYPE, "application/gzip".to_owned()),
            (header::CONTENT_LENGTH, size.to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{name}\""),
            ),
        ],
        body,
    )
        .into_response())
}

/// `DELETE export/{id}`: removes its folder (the `media.exported.v1` record stays).
pub async fn delete(
    S(state): S<State>,
    auth: Authed,
    MPath(id): MPath<String>,
) -> Result<Json<Value>, ApiError> {
    let (dir, _) = readable(&state, &auth, &id)?;
    // A folder left unfinished by a restart is no longer written: it may go.
    if state.archives.exports.lock().iter().any(|(e, _)| e == &id) {
        return Err(ApiError::InvalidParam(
            "the export is still being written".into(),
        ));
    }
    tokio::fs::remove_dir_all(&dir)
        .await
        .map_err(ApiError::internal)?;
    Ok(Json(json!({})))
}

/// Removes export `.1` from the running exports `.0` when dropped (the export ended, however).
struct RunningGuard(Arc<parking_lot::Mutex<Vec<(String, String)>>>, String);

impl Drop for RunningGuard {
    fn drop(&mut self) {
        self.0.lock().retain(|(e, _)| e != &self.1);
    }
}
