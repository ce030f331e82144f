//! Admin routes (repository admins and the shared secret only): datastores, their size
//! estimates, transfers between them and the tasks that run those.

use super::extract::{request_id, Admin, MPath, MQuery};
use super::State;
use crate::error::ApiError;
use crate::ledger::LedgerError;
use axum::extract::State as S;
use axum::Json;
use media_ledger_events::{DatastoreId, Seq};
use media_ledger_projections::names;
use media_ledger_projections::size_estimate::{SizeEstimate, SizeEstimator};
use media_ledger_projections::tasks::{self, TaskRecord};
use media_ledger_projections::{datastore_sizes, hash_refs, import_tasks, media_index};
use serde::Deserialize;
use serde_json::{json, Map, Value};

/// `GET /_matrix/media/unstable/admin/datastores`.
pub async fn datastores(S(state): S<State>, _admin: Admin) -> Json<Value> {
    let mut out = Map::new();
    for c in state.datastores.all() {
        out.insert(
            c.store.id().to_string(),
            json!({ "type": c.store.type_name(), "uri": c.store.uri() }),
        );
    }
    Json(Value::Object(out))
}

/// Query of `size_estimate`.
#[derive(Deserialize)]
pub struct EstimateQuery {
    before_ts: Option<u64>,
}

/// `GET /_matrix/media/unstable/admin/datastores/{id}/size_estimate[?before_ts=]`.
pub async fn size_estimate(
    S(state): S<State>,
    _admin: Admin,
    MPath(id): MPath<String>,
    MQuery(q): MQuery<EstimateQuery>,
) -> Result<Json<SizeEstimate>, ApiError> {
    let id: DatastoreId = id
        .parse()
        .map_err(|_| ApiError::NotFound("unknown datastore".into()))?;
    if state.datastores.get(&id).is_none() {
        return Err(ApiError::NotFound(format!("unknown datastore {id}")));
    }
    let estimate = match q.before_ts {
        None => datastore_sizes::totals(&state.ledger.view(names::DATASTORE_SIZES)?, &id)?,
        Some(before) => {
            let s = state.clone();
            tokio::task::spawn_blocking(move || estimate_before(&s, &id, before))
                .await
                .map_err(ApiError::internal)??
        }
    };
    Ok(Json(estimate))
}

/// Scans the media index: media of `ds` whose hash was last accessed before `before_ms`.
fn estimate_before(
    state: &State,
    ds: &DatastoreId,
    before_ms: u64,
) -> Result<SizeEstimate, ApiError> {
    let hashes = state.ledger.view(names::HASH_REFS)?;
    let mut est = SizeEstimator::default();
    state.ledger.scan(names::MEDIA_INDEX, b"", |k, v| {
        if !media_index::is_record_key(k) {
            return Ok(());
        }
        let r = media_index::decode_record(v)?;
        if &r.datastore == ds {
            let last =
                hash_refs::get(&hashes, &r.sha256)?.map_or(r.last_access_ms, |h| h.last_access_ms);
            if last < before_ms {
                est.add_media(r.sha256, r.size_bytes);
            }
        }
        Ok::<(), LedgerError>(())
    })?;
    // Thumbnail rows: their blob's datastore and last access come from the hash record.
    state.ledger.scan(names::THUMBNAILS, b"", |_, v| {
        let t = media_ledger_projections::thumbnails::decode_record(v)?;
        if let Some(h) = hash_refs::get(&hashes, &t.sha256)? {
            if &h.datastore == ds && h.last_access_ms < before_ms {
                est.add_thumbnail(t.sha256, t.size_bytes);
            }
        }
        Ok::<(), LedgerError>(())
    })?;
    Ok(est.finish())
}

/// Query of `transfer_to`.
#[derive(Deserialize)]
pub struct TransferQuery {
    before_ts: Option<u64>,
}

/// `POST /_matrix/media/unstable/admin/datastores/{src}/transfer_to/{dst}[?before_ts=]`:
/// the source's size estimate with the same `before_ts`, plus the new `task_id`.
pub async fn transfer_to(
    S(state): S<State>,
    Admin(admin): Admin,
    MPath((src, dst)): MPath<(String, String)>,
    MQuery(q): MQuery<TransferQuery>,
) -> Result<Json<Value>, ApiError> {
    let parse = |s: &str| -> Result<DatastoreId, ApiError> {
        s.parse()
            .map_err(|_| ApiError::NotFound(format!("unknown datastore {s}")))
    };
    let (src, dst) = (parse(&src)?, parse(&dst)?);
    for id in [&src, &dst] {
        if state.datastores.get(id).is_none() {
            return Err(ApiError::NotFound(format!("unknown datastore {id}")));
        }
    }
    let estimate = estimate_of(&state, &src, q.before_ts).await?;
    let task = state
        .transfers
        .start(admin.actor(), request_id(), src, dst, q.before_ts, estimate)
        .await?;
    let mut body = serde_json::to_value(estimate).map_err(ApiError::internal)?;
    if let Value::Object(m) = &mut body {
        m.insert("task_id".into(), json!(task.0));
    }
    Ok(Json(body))
}

async fn estimate_of(
    state: &State,
    id: &DatastoreId,
    before_ts: Option<u64>,
) -> Result<SizeEstimate, ApiError> {
    match before_ts {
        None => Ok(datastore_sizes::totals(
            &state.ledger.view(names::DATASTORE_SIZES)?,
            id,
        )?),
        Some(before) => {
            let (s, id) = (state.clone(), id.clone());
            tokio::task::spawn_blocking(move || estimate_before(&s, &id, before))
                .await
                .map_err(ApiError::internal)?
        }
    }
}

fn task_json(seq: Seq, t: &TaskRecord) -> Value {
    json!({
        "task_id": seq.0,
        "task_name": "storage_migration",
        "params": {
            "source_datastore_id": t.source,
            "target_datastore_id": t.target,
            "before_ts": t.before_ts_ms,
        },
        "start_ts": t.started_at_ms,
        "end_ts": t.ended_at_ms.unwrap_or(0),
        "is_finished": t.is_finished(),
        "error_message": t.error_message.clone().unwrap_or_default(),
        "blobs_done": t.blobs_done,
        "blobs_total": t.blobs_total,
        "bytes_done": t.bytes_done,
        "bytes_total": t.bytes_total,
        "blobs_failed": t.blobs_failed,
        "attempts_failed": t.attempts_failed,
        "last_error": t.last_error,
    })
}

fn all_tasks(state: &State, unfinished_only: bool) -> Result<Vec<Value>, ApiError> {
    let mut out = Vec::new();
    state.ledger.scan(names::TASKS, b"t", |k, v| {
        if let Some(entry) = tasks::decode_task_entry(k, v) {
            let (seq, t) = entry?;
            if !unfinished_only || !t.is_finished() {
                out.push(task_json(seq, &t));
            }
        }
        Ok::<(), LedgerError>(())
    })?;
    state
        .ledger
        .scan(names::TASKS, import_tasks::IMPORT_PREFIX, |k, v| {
            if let Some(entry) = import_tasks::decode_entry(k, v) {
                let (seq, t) = entry?;
                if !unfinished_only || !t.is_finished() {
                    out.push(import_task_json(seq, &t));
                }
            }
            Ok::<(), LedgerError>(())
        })?;
    out.sort_by_key(|t| t["task_id"].as_u64());
    if state.config.retention.enabled() {
        // The recurring retention purge: never finished, task id 0 (no event starts it).
        let s = state.retention.lock().clone();
        out.insert(
            0,
            json!({
                "task_id": 0,
                "task_name": "retention",
                "params": {
                    "local_media_days": state.config.retention.local_media_days,
                    "remote_media_days": state.config.retention.remote_media_days,
                    "thumbnail_days": state.config.retention.thumbnail_days,
                    "remote_max_bytes": state.config.retention.remote_max_bytes,
                    "interval_ms": state.config.retention.interval_ms,
                },
                "start_ts": s.last_run_start_ts,
                "end_ts": s.last_run_end_ts,
                "is_finished": false,
                "next_run_ts": s.next_run_ts,
                "media_removed": s.last_media_removed,
                "thumbnails_removed": s.last_thumbnails_removed,
                "error_message": s.last_error.unwrap_or_default(),
            }),
        );
    }
    Ok(out)
}

/// An import task (`media-ledger import`, the archive import API) in the tasks API's shape.
fn import_task_json(seq: Seq, t: &import_tasks::ImportTask) -> Value {
    let p = t.progress.as_ref();
    json!({
        "task_id": seq.0,
        "task_name": "import",
        "params": { "kind": t.kind, "source": t.source },
        "start_ts": t.started_at_ms,
        "end_ts": t.ended_at_ms.unwrap_or(0),
        "is_finished": t.is_finished(),
        "error_message": p.and_then(|p| p.error.clone()).unwrap_or_default(),
        "rows_total": t.rows_total,
        "rows_done": p.map_or(0, |p| p.rows_done),
        "imported": p.map_or(0, |p| p.imported),
        "already_imported": p.map_or(0, |p| p.already_imported),
        "skipped": p.map_or(0, |p| p.skipped),
        "bytes_done": p.map_or(0, |p| p.bytes),
    })
}

/// `GET /_matrix/media/unstable/admin/tasks/all`.
pub async fn tasks_all(S(state): S<State>, _admin: Admin) -> Result<Json<Value>, ApiError> {
    Ok(Json(Value::Array(all_tasks(&state, false)?)))
}

/// `GET /_matrix/media/unstable/admin/tasks/unfinished`.
pub async fn tasks_unfinished(S(state): S<State>, _admin: Admin) -> Result<Json<Value>, ApiError> {
    Ok(Json(Value::Array(all_tasks(&state, true)?)))
}

/// `GET /_matrix/media/unstable/admin/tasks/{id}`.
pub async fn task(
    S(state): S<State>,
    _admin: Admin,
    MPath(id): MPath<String>,
) -> Result<Json<Value>, ApiError> {
    let seq = id
        .parse::<u64>()
        .map(Seq)
        .map_err(|_| ApiError::InvalidParam(format!("invalid task id {id:?}")))?;
    let view = state.ledger.view(names::TASKS)?;
    if let Some(t) = tasks::get(&view, seq)? {
        return Ok(Json(task_json(seq, &t)));
    }
    let t = import_tasks::get(&view, seq)?
        .ok_or_else(|| ApiError::NotFound(format!("no task {id}")))?;
    Ok(Json(import_task_json(seq, &t)))
}

/// `POST /_matrix/media/unstable/admin/snapshot`: a consistent copy of the ledger into
/// `<database.path>.snapshots/<head seq>-<ms>` (repository admins). Answers its path and the
/// head it includes at least.
pub async fn snapshot(S(state): S<State>, _admin: Admin) -> Result<Json<Value>, ApiError> {
    let base = state.config.database.path.clone();
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let name = format!(
        "{}-{}-{}",
        state.ledger.head().0,
        crate::clock::now_ms(),
        NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    );
    let mut dir = base.clone().into_os_string();
    dir.push(".snapshots");
    let dir = std::path::PathBuf::from(dir);
    let ledger = state.ledger.clone();
    let (path, head) = tokio::task::spawn_blocking(move || {
        std::fs::create_dir_all(&dir).map_err(ApiError::internal)?;
        let path = dir.join(name);
        let head = ledger.snapshot(&path)?;
        Ok::<_, ApiError>((path, head))
    })
    .await
    .map_err(ApiError::internal)??;
    tracing::info!(path = %path.display(), head = head.0, "ledger snapshot written");
    Ok(Json(
        json!({ "path": path.display().to_string(), "head": head.0 }),
    ))
}
