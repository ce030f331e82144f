//! Read-only moderation routes: the audit log of moderation acts, one media's history, and
//! usage figures (matrix-media-repo's shapes). All answered from projections and the log.

use super::extract::{media_ref, parse_server, Authed, MPath, MQuery};
use super::moderation::{capacity, Capacity};
use super::State;
use crate::error::ApiError;
use crate::moderation::select;
use axum::extract::State as S;
use axum::http::Uri;
use axum::Json;
use media_ledger_events::{Actor, Envelope, Event, MediaRef, Seq, ServerName, Sha256};
use media_ledger_projections::{hash_refs, media_index, moderation, thumbnails};
use serde::Deserialize;
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;

/// Largest page of the audit API.
const MAX_LIMIT: usize = 500;

fn only_admins(cap: &Capacity, server: Option<&str>) -> Result<(), ApiError> {
    match (cap, server) {
        (Capacity::Repository, _) => Ok(()),
        (Capacity::Homeserver(s), Some(server)) if s.as_str().eq_ignore_ascii_case(server) => {
            Ok(())
        }
        (Capacity::Homeserver(_), None) => Ok(()),
        _ => Err(ApiError::Forbidden(
            "only repository admins and admins of that homeserver may read this".into(),
        )),
    }
}

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
/// touched their server.
pub async fn audit(
    S(state): S<State>,
    a: Authed,
    MQuery(q): MQuery<AuditQuery>,
) -> Result<Json<Value>, ApiError> {
    let cap = capacity(&state, &a).await?;
    only_admins(&cap, None)?;
    let forced_server = match &cap {
        Capacity::Homeserver(s) => Some(s.clone()),
        _ => None,
    };
    if let Some(k) = &q.kind {
        if !media_ledger_events::MODERATION_KINDS.contains(&k.as_str()) {
            return Err(ApiError::InvalidParam(format!(
                "unknown kind {k:?} (quarantine, unquarantine, attributes, purge)"
            )));
        }
    }
    let server: Option<ServerName> = q.server.as_deref().map(parse_server).transpose()?;
    let limit = q.limit.unwrap_or(50).clamp(1, MAX_LIMIT);
    let mut start = moderation::audit_key(Seq(q.from.map_or(u64::MAX, |f| f.saturating_sub(1))));
    if q.from == Some(0) {
        return Ok(Json(json!({ "chunk": [] })));
    }
    start.push(0xff);
    let mut seqs: Vec<Seq> = Vec::new();
    let mut more = false;
    state
        .ledger
        .scan_rev("moderation", moderation::AUDIT_PREFIX, &start, |k, v| {
            let Some(entry) = moderation::decode_audit(k, v) else {
                return Ok(true);
            };
            let (seq, e) = entry?;
            if q.until_ts.is_some_and(|u| e.recorded_at_ms > u) {
                return Ok(true);
            }
            if q.since_ts.is_some_and(|s| e.recorded_at_ms < s) {
                return Ok(false);
            }
            let keep = q.kind.as_ref().is_none_or(|k| &e.kind == k)
                && q.actor.as_ref().is_none_or(|x| &e.actor.to_string() == x)
                && server.as_ref().is_none_or(|s| e.origins.contains(s))
                && forced_server.as_ref().is_none_or(|s| e.origins.contains(s));
            if keep {
                if seqs.len() == limit {
                    more = true;
                    return Ok(false);
                }
                seqs.push(seq);
            }
            Ok(true)
        })?;
    let mut chunk = Vec::with_capacity(seqs.len());
    for seq in &seqs {
        if let Some(env) = state.ledger.event_at(*seq)? {
            // A homeserver admin sees an act on several tenants' media with only theirs.
            let env = match &forced_server {
                Some(ours) => match in_scope(std::iter::once(env), ours).pop() {
                    Some(env) => env,
                    None => continue,
                },
                None => env,
            };
            let mut v = render(&env);
            if let (Value::Object(m), Some(kind)) = (&mut v, env.event.moderation_kind()) {
                m.insert("kind".into(), json!(kind));
            }
            chunk.push(v);
        }
    }
    let mut out = json!({ "chunk": chunk });
    if let (true, Some(last)) = (more, seqs.last()) {
        out["next_token"] = json!(last.0.to_string());
    }
    Ok(Json(out))
}

/// `GET media/{server}/{media_id}/history`: every event about one media (creation,
/// thumbnails, moderation acts, moves and deletions of its blob) and its access count.
pub async fn history(
    S(state): S<State>,
    a: Authed,
    MPath((server, id)): MPath<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let cap = capacity(&state, &a).await?;
    only_admins(&cap, Some(&server))?;
    let media = media_ref(&server, &id)?;
    let record = media_index::get(&state.ledger.view("media_index")?, &media)?;
    let mut seqs: Vec<Seq> = record.iter().map(|r| r.created_seq).collect();
    state
        .ledger
        .scan("moderation", &moderation::history_prefix(&media), |k, _| {
            seqs.extend(moderation::seq_of_history_key(k));
            Ok(())
        })?;
    let mut sha: Option<Sha256> = record.as_ref().map(|r| r.sha256);
    let mut envs: BTreeMap<u64, Envelope> = BTreeMap::new();
    for seq in &seqs {
        if let Some(env) = state.ledger.event_at(*seq)? {
            if let Event::MediaPurgedV1(p) = &env.event {
                if let Some(m) = p.media.iter().find(|m| m.media == media) {
                    sha.get_or_insert(m.sha256);
                    seqs_push_created(&mut envs, &state, m.created_seq)?;
                }
            }
            envs.insert(env.seq.0, env);
        }
    }
    if envs.is_empty() {
        return Err(ApiError::NotFound("no history for this media".into()));
    }
    if let Some(sha) = sha {
        let mut blob = Vec::new();
        state.ledger.scan(
            "moderation",
            &moderation::blob_history_prefix(&sha),
            |k, _| {
                blob.extend(moderation::seq_of_history_key(k));
                Ok(())
            },
        )?;
        for seq in blob {
            if let Some(env) = state.ledger.event_at(seq)? {
                envs.insert(env.seq.0, env);
            }
        }
    }
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
    let events: Vec<Value> = match &cap {
        Capacity::Homeserver(ours) => in_scope(envs.into_values(), ours)
            .iter()
            .map(render)
            .collect(),
        _ => envs.values().map(render).collect(),
    };
    Ok(Json(json!({
        "media": media.to_string(),
        "state": state_json,
        "events": events,
    })))
}

/// A homeserver admin's view of a history (in sequence order): the same bytes may be shared
/// with other tenants' media, and a blob's events (or a repository-wide act on all copies)
/// would show their acts, actors, reasons and uploaders. A moderation act is kept only if it
/// was that homeserver's own or changed at least one of its media, and then lists only its
/// media; a blob deletion only if the purge that freed it is kept. Moves of the blob between
/// datastores carry nothing of a tenant and are kept.
fn in_scope(envs: impl Iterator<Item = Envelope>, ours: &ServerName) -> Vec<Envelope> {
    let mine = |m: &MediaRef| &m.origin == ours;
    let own_authority = |a: &media_ledger_events::Authority| a.origin() == Some(ours);
    let mut kept_purges = std::collections::HashSet::new();
    let mut out = Vec::new();
    for mut env in envs {
        let keep = match &mut env.event {
            Event::MediaQuarantinedV1(e) => {
                e.media.retain(mine);
                own_authority(&e.authority) || !e.media.is_empty()
            }
            Event::MediaUnquarantinedV1(e) => {
                e.media.retain(mine);
                own_authority(&e.authority) || !e.media.is_empty()
            }
            Event::MediaPurgedV1(e) => {
                e.media.retain(|m| mine(&m.media));
                e.thumbnails.retain(|t| mine(&t.media));
                let keep = own_authority(&e.authority) || !e.media.is_empty();
                if keep {
                    kept_purges.insert(env.seq);
                }
                keep
            }
            Event::BlobDeletedV1(e) => kept_purges.contains(&e.purge),
            Event::MediaAttributesSetV1(e) => mine(&e.media),
            _ => env.event.affected_media().iter().all(|m| mine(m)),
        };
        if keep {
            out.push(env);
        }
    }
    out
}

fn seqs_push_created(
    envs: &mut BTreeMap<u64, Envelope>,
    state: &State,
    seq: Seq,
) -> Result<(), ApiError> {
    if let Some(env) = state.ledger.event_at(seq)? {
        envs.insert(env.seq.0, env);
    }
    Ok(())
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
    a: Authed,
    MPath(server): MPath<String>,
) -> Result<Json<Value>, ApiError> {
    only_admins(&capacity(&state, &a).await?, Some(&server))?;
    let origin = parse_server(&server)?;
    let ledger = state.ledger.clone();
    let figures = tokio::task::spawn_blocking(move || {
        let prefix = media_ledger_projections::origin_prefix(&origin);
        let (mut media, mut media_bytes) = (0u64, 0u64);
        select::visit_records(&ledger, &prefix, |_, r| {
            media += 1;
            media_bytes += r.size_bytes;
        })?;
        let (mut thumbs, mut thumb_bytes) = (0u64, 0u64);
        ledger.scan("thumbnails", &prefix, |_, v| {
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
    a: Authed,
    MPath(server): MPath<String>,
    uri: Uri,
) -> Result<Json<Value>, ApiError> {
    only_admins(&capacity(&state, &a).await?, Some(&server))?;
    let origin = parse_server(&server)?;
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
    a: Authed,
    MPath(server): MPath<String>,
    uri: Uri,
) -> Result<Json<Value>, ApiError> {
    only_admins(&capacity(&state, &a).await?, Some(&server))?;
    let origin = parse_server(&server)?;
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
            let index = ledger.view("media_index")?;
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
    let refs = state.ledger.view("hash_refs")?;
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
