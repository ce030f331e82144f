//! The purge family under `/_matrix/media/unstable/admin/purge…`, with matrix-media-repo's
//! shapes: each route selects candidates, the ledger's writer decides the act (see
//! `moderation::Moderation::purge`), and the answer lists what was removed.

use super::extract::{media_ref, parse_server, Authed, MPath, MQuery, SmallBody};
use super::moderation::{
    act, admin_only, capacity, live_record, mxcs, own_server, parse_room, parse_user, reason,
    repository_only, room_media, run_select, Capacity, ModQuery,
};
use super::State;
use crate::error::ApiError;
use crate::moderation::{select, PurgeSpec};
use axum::extract::State as S;
use axum::Json;
use media_ledger_events::{Actor, Authority, MediaRef, ModerationTarget};
use media_ledger_projections::media_index;
use serde_json::{json, Value};

fn purged(affected: &[MediaRef]) -> Json<Value> {
    Json(json!({ "purged": true, "affected": mxcs(affected) }))
}

fn spec(target: ModerationTarget, before_ts_ms: Option<u64>) -> PurgeSpec {
    PurgeSpec {
        target,
        before_ts_ms,
        include_quarantined: true,
        keep_shared: false,
    }
}

/// `POST purge/remote?before_ts=` (also `purge_remote`): repository admins only.
pub async fn purge_remote(
    S(state): S<State>,
    a: Authed,
    MQuery(q): MQuery<ModQuery>,
    SmallBody(body): SmallBody,
) -> Result<Json<Value>, ApiError> {
    let authority = repository_only(&capacity(&state, &a).await?)?;
    let before = q
        .before_ts
        .ok_or_else(|| ApiError::MissingParam("before_ts (ms) is required".into()))?;
    let act = act(&a, authority, reason(&q, &body)?);
    let candidates = run_select(&state, move |l| select::remote_before(l, before)).await?;
    let spec = PurgeSpec {
        target: ModerationTarget::Remote,
        before_ts_ms: Some(before),
        include_quarantined: false,
        keep_shared: true,
    };
    let removed = state.moderation.purge(&act, spec, candidates).await?;
    Ok(Json(json!({ "total_removed": removed.len() })))
}

/// `POST purge/quarantined`: every quarantined media (a homeserver admin: their server's);
/// records stay as tombstones so the hashes stay blocked.
pub async fn purge_quarantined(
    S(state): S<State>,
    a: Authed,
    MQuery(q): MQuery<ModQuery>,
    SmallBody(body): SmallBody,
) -> Result<Json<Value>, ApiError> {
    let authority = admin_only(&capacity(&state, &a).await?)?;
    let act = act(&a, authority.clone(), reason(&q, &body)?);
    let origin = authority.origin().cloned();
    purge_selected(
        &state,
        &act,
        spec(ModerationTarget::Quarantined, None),
        move |l| select::quarantined(l, origin.as_ref()),
    )
    .await
}

/// `POST purge/{server}/{media_id}`: admins, or the uploader.
pub async fn purge_media(
    S(state): S<State>,
    a: Authed,
    MPath((server, id)): MPath<(String, String)>,
    MQuery(q): MQuery<ModQuery>,
    SmallBody(body): SmallBody,
) -> Result<Json<Value>, ApiError> {
    let media = media_ref(&server, &id)?;
    let record = live_record(&state, &media)?;
    let authority = match capacity(&state, &a).await? {
        Capacity::Repository => Authority::RepositoryAdmin,
        Capacity::Homeserver(s) if s == media.origin => Authority::HomeserverAdmin(s),
        _ if a
            .principal
            .user()
            .is_some_and(|u| record.uploader == Actor::User(u.clone())) =>
        {
            Authority::Uploader
        }
        _ => {
            return Err(ApiError::Forbidden(
                "only admins and the uploader may purge this media".into(),
            ))
        }
    };
    if authority == Authority::Uploader && record.quarantined {
        // Quarantined bytes are evidence: the writer never lets an uploader purge them.
        return Err(ApiError::Forbidden(
            "this media is quarantined; only an admin can purge it".into(),
        ));
    }
    let act = act(&a, authority, reason(&q, &body)?);
    let affected = state
        .moderation
        .purge(
            &act,
            spec(ModerationTarget::Media(media.clone()), None),
            vec![media],
        )
        .await?;
    Ok(purged(&affected))
}

/// Selects the candidates (off the async threads), purges them, answers what went.
async fn purge_selected(
    state: &State,
    act: &crate::moderation::Act,
    spec: PurgeSpec,
    selector: impl FnOnce(&crate::ledger::Ledger) -> Result<Vec<MediaRef>, crate::ledger::LedgerError>
        + Send
        + 'static,
) -> Result<Json<Value>, ApiError> {
    let candidates = run_select(state, selector).await?;
    let affected = state.moderation.purge(act, spec, candidates).await?;
    Ok(purged(&affected))
}

fn before(q: &ModQuery) -> u64 {
    q.before_ts.unwrap_or_else(crate::clock::now_ms)
}

/// `POST purge/user/{user_id}?before_ts=` (by creation time).
pub async fn purge_user(
    S(state): S<State>,
    a: Authed,
    MPath(user): MPath<String>,
    MQuery(q): MQuery<ModQuery>,
    SmallBody(body): SmallBody,
) -> Result<Json<Value>, ApiError> {
    let authority = admin_only(&capacity(&state, &a).await?)?;
    let user = parse_user(&user)?;
    own_server(&authority, user.server_name())?;
    let act = act(&a, authority, reason(&q, &body)?);
    let before = before(&q);
    let u = user.clone();
    purge_selected(
        &state,
        &act,
        spec(ModerationTarget::User(user), Some(before)),
        move |l| select::by_user(l, &u, before),
    )
    .await
}

/// `POST purge/server/{server_name}?before_ts=` (by creation time).
pub async fn purge_server(
    S(state): S<State>,
    a: Authed,
    MPath(server): MPath<String>,
    MQuery(q): MQuery<ModQuery>,
    SmallBody(body): SmallBody,
) -> Result<Json<Value>, ApiError> {
    let authority = admin_only(&capacity(&state, &a).await?)?;
    let server = parse_server(&server)?;
    own_server(&authority, server.as_str())?;
    let act = act(&a, authority, reason(&q, &body)?);
    let before = before(&q);
    let s = server.clone();
    purge_selected(
        &state,
        &act,
        spec(ModerationTarget::Server(server), Some(before)),
        move |l| select::by_server(l, &s, before),
    )
    .await
}

/// `POST purge/room/{room_id}?before_ts=` (by creation time; the reference ignores it).
pub async fn purge_room(
    S(state): S<State>,
    a: Authed,
    MPath(room): MPath<String>,
    MQuery(q): MQuery<ModQuery>,
    SmallBody(body): SmallBody,
) -> Result<Json<Value>, ApiError> {
    let authority = admin_only(&capacity(&state, &a).await?)?;
    let room = parse_room(&room)?;
    let reason = reason(&q, &body)?;
    let before = before(&q);
    let listed = room_media(&state, &a, &authority, &room).await?;
    let mut candidates = Vec::new();
    {
        let index = state.ledger.view("media_index")?;
        for m in listed {
            if media_index::get(&index, &m)?.is_some_and(|r| r.created_at_ms < before) {
                candidates.push(m);
            }
        }
    }
    let act = act(&a, authority, reason);
    let affected = state
        .moderation
        .purge(
            &act,
            spec(ModerationTarget::Room(room), Some(before)),
            candidates,
        )
        .await?;
    Ok(purged(&affected))
}

/// `POST purge/old?before_ts=&include_local=` (by last access): repository admins only.
pub async fn purge_old(
    S(state): S<State>,
    a: Authed,
    MQuery(q): MQuery<ModQuery>,
    SmallBody(body): SmallBody,
) -> Result<Json<Value>, ApiError> {
    let authority = repository_only(&capacity(&state, &a).await?)?;
    let act = act(&a, authority, reason(&q, &body)?);
    let before = before(&q);
    let include_local = q.include_local.unwrap_or(false);
    purge_selected(
        &state,
        &act,
        spec(ModerationTarget::Old { include_local }, Some(before)),
        move |l| select::old(l, before, include_local),
    )
    .await
}
