//! Read-only moderation routes: the audit log of moderation acts, one media's history, and
//! usage figures (matrix-media-repo's shapes). All answered from projections and the log;
//! what a homeserver admin may read is `moderation::scope`'s, this file shapes the JSON.

use super::extract::{parse_server, MQuery, MediaPath, ServerPath};
use super::moderator::{need, Moderator};
use super::State;
use crate::error::ApiError;
use crate::moderation::scope::{self, AuditFilter};
use crate::moderation::select;
use axum::extract::State as S;
use axum::http::Uri;
use axum::Json;
use media_ledger_events::{Actor, Envelope, Event, MediaRef, ServerName};
use media_ledger_projections::names;
use media_ledger_projections::{hash_refs, media_index, thumbnails};
use serde::Deserialize;
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;

/// Largest page of the audit API.
const MAX_LIMIT: usize = 500;

/// One event as the audit and history APIs show it.
fn render(env: &Envelope) -> Value {
    let details = match serde_json::to_value(&env.event) {
        Ok(Value::Object(m)) => m.into_iter().next().map(|(_, v)| v).unwrap_or(Value::Null),
        _ => Value::Null,
    };
    let affected: Vec<String> = env
        .event
        .affected_media()
        .iter()
        .map(|m| m.to_string())
        .collect();
    let reason = match &env.event {
        Event::MediaQuarantinedV1(e) => e.reason.clone(),
        Event::MediaUnquarantinedV1(e) => e.reason.clone(),
        Event::MediaAttributesSetV1(e) => e.reason.clone(),
        Event::MediaPurgedV1(e) => e.reason.clone(),
        _ => None,
    };
    json!({
        "seq": env.seq.0,
        "type": env.event.type_name(),
        "ts": env.recorded_at_ms,
        "actor": env.actor.to_string(),
        "request_id": env.request_id.0,
        "reason": reason,
        "affected": affected,
        "details": details,
    })
}

/// Query of `GET audit`.
#[derive(Deserialize, Default)]
pub struct AuditQuery {
    from: Option<u64>,
    limit: Option<usize>,
    actor: Option<String>,
    kind: Option<String>,
    server: Option<String>,
    since_ts: Option<u64>,
    until_ts: Option<u64>,
}

/// `GET audit?from=&limit=&actor=&kind=&server=&since_ts=&until_ts=`: moderation acts, newest
/// first; `next_token` is the `from` of the next page. A homeserver admin sees the acts that
/// touched their server (`moderation::scope`).
pub async fn audit(
    S(state): S<State>,
    m: Moderator<need::Reader>,
    MQuery(q): MQuery<AuditQuery>,
) -> Result<Json<Value>, ApiError> {
    scope::check_kind(q.kind.as_deref())?;
    let server: Option<ServerName> = q.server.as_deref().map(parse_server).transpose()?;
    let filter = AuditFilter {
        scope: m.read_scope().clone(),
        kind: q.kind,
        actor: q.actor,
        server,
        since_ts: q.since_ts,
        until_ts: q.until_ts,
    };
    let limit = q.limit.unwrap_or(50).clamp(1, MAX_LIMIT);
    let page = filter.page(&state.ledger, q.from, limit)?;
    let chunk: Vec<Value> = page
        .events
        .iter()
        .map(|env| {
            let mut v = render(env);
            if let (Value::Object(obj), Some(kind)) = (&mut v, env.event.moderation_kind()) {
                obj.insert("kind".into(), json!(kind));
            }
            v
        })
        .collect();
    let mut out = json!({ "chunk": chunk });
    if let Some(last) = page.more_after {
        out["next_token"] = json!(last.0.to_string());
    }
    Ok(Json(out))
}

/// `GET media/{server}/{media_id}/history`: every event about one media (creation,
/// thumbnails, moderation acts, moves and deletions of its blob) and its access count.
pub async fn history(
    S(state): S<State>,
    m: Moderator<need::Reader>,
    MediaPath(media): MediaPath,
) -> Result<Json<Value>, ApiError> {
    m.read_scope().check_server(&media.origin)?;
    let scope::History { record, events } = scope::history(&state.ledger, &media, m.read_scope())?
        .ok_or_else(|| ApiError::NotFound("no history for this media".into()))?;
    let state_json = match &record {
        Some(r) => json!({
            "exists": !r.tombstone,
            "tombstone": r.tombstone,
            "quarantined": r.quarantined,
            "purpose": if r.pinned { "pinned" } else { "none" },
            "sha256": r.sha256.to_hex(),
            "access_count": r.access_count,
            "last_access_ts": r.last_access_ms,
        }),
        None => json!({ "exists": false, "tombstone": false }),
    };
    let events: Vec<Value> = events.iter().map(render).collect();
    Ok(Json(json!({
        "media": media.to_string(),
        "state": state_json,
        "events": events,
    })))
}

/// Repeated query parameters (`user_id=`, `mxc=`).
fn repeated(uri: &Uri, name: &str) -> Result<Vec<String>, ApiError> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(uri.query().unwrap_or(""))
        .map_err(|e| ApiError::InvalidParam(format!("invalid query: {e}")))?;
    Ok(pairs
        .into_iter()
        .filter(|(k, _)| k == name)
        .map(|(_, v)| v)
        .collect())
}

/// `GET usage/{server_name}`: bytes and counts of the server's media and thumbnails (rows
/// counted with duplicates, as the reference).
pub async fn usage(
    S(state): S<State>,
    m: Moderator<need::Reader>,
    ServerPath(origin): ServerPath,
) -> Result<Json<Value>, ApiError> {
    m.read_scope().check_server(&origin)?;
    let ledger = state.ledger.clone();
    let figures = tokio::task::spawn_blocking(move || {
        let prefix = media_ledger_projections::origin_prefix(&origin);
        let (mut media, mut media_bytes) = (0u64, 0u64);
        select::visit_records(&ledger, &prefix, |_, r| {
            media += 1;
            media_bytes += r.size_bytes;
        })?;
        let (mut thumbs, mut thumb_bytes) = (0u64, 0u64);
        ledger.scan(names::THUMBNAILS, &prefix, |_, v| {
            thumbs += 1;
            thumb_bytes += thumbnails::decode_record(v)?.size_bytes;
            Ok(())
        })?;
        Ok::<_, crate::ledger::LedgerError>((media, media_bytes, thumbs, thumb_bytes))
    })
    .await
    .map_err(ApiError::internal)??;
    let (media, media_bytes, thumbs, thumb_bytes) = figures;
    Ok(Json(json!({
        "raw_bytes": { "total": media_bytes + thumb_bytes, "media": media_bytes, "thumbnails": thumb_bytes },
        "raw_counts": { "total": media + thumbs, "media": media, "thumbnails": thumbs },
    })))
}

/// `GET usage/{server_name}/users[?user_id=...]`: per uploader.
pub async fn usage_users(
    S(state): S<State>,
    m: Moderator<need::Reader>,
    ServerPath(origin): ServerPath,
    uri: Uri,
) -> Result<Json<Value>, ApiError> {
    m.read_scope().check_server(&origin)?;
    let wanted = repeated(&uri, "user_id")?;
    let ledger = state.ledger.clone();
    let per_user = tokio::task::spawn_blocking(move || {
        let mut per: BTreeMap<String, (u64, u64, Vec<String>)> = BTreeMap::new();
        select::visit_records(
            &ledger,
            &media_ledger_projections::origin_prefix(&origin),
            |m, r| {
                if let Actor::User(u) = &r.uploader {
                    if wanted.is_empty() || wanted.iter().any(|w| w == u.as_str()) {
                        let e = per.entry(u.to_string()).or_default();
                        e.0 += 1;
                        e.1 += r.size_bytes;
                        e.2.push(m.to_string());
                    }
                }
            },
        )?;
        Ok::<_, crate::ledger::LedgerError>(per)
    })
    .await
    .map_err(ApiError::internal)??;
    let mut out = Map::new();
    for (user, (count, bytes, uploaded)) in per_user {
        out.insert(
            user,
            json!({
                "raw_bytes": { "total": bytes, "media": bytes },
                "raw_counts": { "total": count, "media": count },
                "uploaded": uploaded,
            }),
        );
    }
    Ok(Json(Value::Object(out)))
}

/// `GET usage/{server_name}/uploads[?mxc=...]`: the records of the server's media.
pub async fn usage_uploads(
    S(state): S<State>,
    m: Moderator<need::Reader>,
    ServerPath(origin): ServerPath,
    uri: Uri,
) -> Result<Json<Value>, ApiError> {
    m.read_scope().check_server(&origin)?;
    let mut wanted: Vec<MediaRef> = Vec::new();
    for mxc in repeated(&uri, "mxc")? {
        let m = super::extract::parse_mxc(&mxc)?;
        if m.origin != origin {
            return Err(ApiError::InvalidParam(format!("{mxc} is not on {origin}")));
        }
        wanted.push(m);
    }
    let ledger = state.ledger.clone();
    let records = tokio::task::spawn_blocking(move || {
        let mut out = Vec::new();
        if wanted.is_empty() {
            select::visit_records(
                &ledger,
                &media_ledger_projections::origin_prefix(&origin),
                |m, r| {
                    out.push((m, r));
                },
            )?;
        } else {
            let index = ledger.view(names::MEDIA_INDEX)?;
            for m in wanted {
                if let Some(r) = media_index::get(&index, &m)?.filter(|r| !r.tombstone) {
                    out.push((m, r));
                }
            }
        }
        Ok::<_, crate::ledger::LedgerError>(out)
    })
    .await
    .map_err(ApiError::internal)??;
    let refs = state.ledger.view(names::HASH_REFS)?;
    let mut out = Map::new();
    for (m, r) in records {
        let location = hash_refs::get(&refs, &r.sha256)?.map(|h| h.location.to_string());
        out.insert(
            m.to_string(),
            json!({
                "size_bytes": r.size_bytes,
                "uploaded_by": match &r.uploader { Actor::User(u) => u.to_string(), _ => String::new() },
                "datastore_id": r.datastore.to_string(),
                "datastore_location": location,
                "sha256_hash": r.sha256.to_hex(),
                "quarantined": r.quarantined,
                "upload_name": r.upload_name,
                "content_type": r.content_type.as_ref().map(|c| c.as_str()),
                "created_ts": r.created_at_ms,
            }),
        );
    }
    Ok(Json(Value::Object(out)))
}
