//! The purge family under `/_matrix/media/unstable/admin/purge…`, with matrix-media-repo's
//! shapes: each route selects candidates, the ledger's writer decides the act (see
//! `moderation::Moderation::purge`), and the answer lists what was removed. Who may purge is
//! `moderation::policy`'s.

use super::extract::{MediaPath, RoomPath, ServerPath, UserPath};
use super::moderation::{live_record, mxcs, room_media, run_select};
use super::moderator::{need, ActInput, Moderator};
use super::State;
use crate::error::ApiError;
use crate::ledger::{Ledger, LedgerError};
use crate::moderation::{policy, select, Act, PurgeSpec};
use axum::extract::State as S;
use axum::Json;
use media_ledger_events::{MediaRef, ModerationTarget};
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
        accessed_before_ms: None,
    }
}

/// `POST purge/remote?before_ts=` (also `purge_remote`): repository admins only.
pub async fn purge_remote(
    S(state): S<State>,
    m: Moderator<need::Repository>,
    input: ActInput,
) -> Result<Json<Value>, ApiError> {
    let before = input
        .query
        .before_ts
        .ok_or_else(|| ApiError::MissingParam("before_ts (ms) is required".into()))?;
    let act = m.act(input.reason()?);
    let candidates = run_select(&state, move |l| select::remote_before(l, before)).await?;
    let spec = PurgeSpec {
        target: ModerationTarget::Remote,
        before_ts_ms: Some(before),
        include_quarantined: false,
        keep_shared: true,
        accessed_before_ms: None,
    };
    let removed = state.moderation.purge(&act, spec, candidates).await?;
    Ok(Json(json!({ "total_removed": removed.len() })))
}

/// `POST purge/quarantined`: every quarantined media (a homeserver admin: their server's);
/// records stay as tombstones so the hashes stay blocked.
pub async fn purge_quarantined(
    S(state): S<State>,
    m: Moderator<need::Admin>,
    input: ActInput,
) -> Result<Json<Value>, ApiError> {
    let act = m.act(input.reason()?);
    let origin = m.scope().cloned();
    purge_selected(
        &state,
        &act,
        spec(ModerationTarget::Quarantined, None),
        move |l| select::quarantined(l, origin.as_ref()),
    )
    .await
}

/// `POST purge/{server}/{media_id}`: admins, or the uploader (`policy::purge_authority`).
pub async fn purge_media(
    S(state): S<State>,
    m: Moderator<need::Anyone>,
    MediaPath(media): MediaPath,
    input: ActInput,
) -> Result<Json<Value>, ApiError> {
    let record = live_record(&state, &media)?;
    let authority = policy::purge_authority(&m.capacity, m.user(), &media, &record)?;
    let act = m.act_as(authority, input.reason()?);
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
    act: &Act,
    spec: PurgeSpec,
    selector: impl FnOnce(&Ledger) -> Result<Vec<MediaRef>, LedgerError> + Send + 'static,
) -> Result<Json<Value>, ApiError> {
    let candidates = run_select(state, selector).await?;
    let affected = state.moderation.purge(act, spec, candidates).await?;
    Ok(purged(&affected))
}

/// `POST purge/user/{user_id}?before_ts=` (by creation time).
pub async fn purge_user(
    S(state): S<State>,
    m: Moderator<need::Admin>,
    UserPath(user): UserPath,
    input: ActInput,
) -> Result<Json<Value>, ApiError> {
    m.own_server(user.server_name())?;
    let act = m.act(input.reason()?);
    let before = input.before_or_now();
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
    m: Moderator<need::Admin>,
    ServerPath(server): ServerPath,
    input: ActInput,
) -> Result<Json<Value>, ApiError> {
    m.own_server(server.as_str())?;
    let act = m.act(input.reason()?);
    let before = input.before_or_now();
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
    m: Moderator<need::Admin>,
    RoomPath(room): RoomPath,
    input: ActInput,
) -> Result<Json<Value>, ApiError> {
    let reason = input.reason()?;
    let before = input.before_or_now();
    let listed = room_media(&state, &m, room.as_str()).await?;
    let candidates = run_select(&state, move |l| select::created_before(l, listed, before)).await?;
    let affected = state
        .moderation
        .purge(
            &m.act(reason),
            spec(ModerationTarget::Room(room.into()), Some(before)),
            candidates,
        )
        .await?;
    Ok(purged(&affected))
}

/// `POST purge/old?before_ts=&include_local=&size_gt=` (by last access; `size_gt`: only media
/// larger than that many bytes): repository admins only. Link
/// previews fetched before `before_ts` leave the cache first, and preview images no fresh
/// preview offers are purged with the remote media (they are cache too).
pub async fn purge_old(
    S(state): S<State>,
    m: Moderator<need::Repository>,
    input: ActInput,
) -> Result<Json<Value>, ApiError> {
    let act = m.act(input.reason()?);
    let before = input.before_or_now();
    let include_local = input.query.include_local.unwrap_or(false);
    let size_gt = input.query.size_gt.unwrap_or(0);
    let expired = run_select(&state, move |l| select::previews_before(l, before)).await?;
    state
        .previews
        .expire(act.actor.clone(), act.request_id.clone(), before, expired)
        .await?;
    purge_selected(
        &state,
        &act,
        spec(ModerationTarget::Old { include_local }, Some(before)),
        move |l| {
            let mut media = select::old(l, before, include_local)?;
            if !include_local {
                media.extend(select::unused_preview_images(l, before)?);
            }
            if size_gt > 0 {
                media = select::larger_than(l, media, size_gt)?;
            }
            Ok(media)
        },
    )
    .await
}
