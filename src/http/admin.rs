//! Admin routes (repository admins and the shared secret only): datastores and their size
//! estimates.

use super::extract::{Admin, MPath, MQuery};
use super::State;
use crate::error::ApiError;
use crate::ledger::LedgerError;
use axum::extract::State as S;
use axum::Json;
use media_ledger_events::DatastoreId;
use media_ledger_projections::size_estimate::{SizeEstimate, SizeEstimator};
use media_ledger_projections::{datastore_sizes, hash_refs, media_index};
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
        None => datastore_sizes::totals(&state.ledger.view("datastore_sizes")?, &id)?,
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
    let hashes = state.ledger.view("hash_refs")?;
    let mut est = SizeEstimator::default();
    state.ledger.scan("media_index", b"", |_, v| {
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
    Ok(est.finish())
}
