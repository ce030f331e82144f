//! Moderation routes under `/_matrix/media/unstable/admin/`: quarantine, unquarantine and
//! media attributes, with matrix-media-repo's shapes.
//!
//! Who may do what is `moderation::policy`'s (applied by the [`Moderator`] extractor):
//! repository admins (config, or the shared secret) everything; admins of the request's
//! homeserver (its admin API says so, `quarantine.allow_local_admins`) only that server's
//! media; the uploader may purge their own media (`purge.rs`). Anyone else: 403.

use super::extract::{MediaPath, RoomPath, ServerPath, UserPath};
use super::moderator::{need, ActInput, Moderator};
use super::State;
use crate::error::ApiError;
use crate::ledger::{Ledger, LedgerError};
use crate::moderation::{policy, select, Act};
use axum::extract::State as S;
use axum::Json;
use media_ledger_events::{MediaPurpose, MediaRef, ModerationTarget, RoomId};
use serde_json::{json, Value};

pub(super) fn mxcs(media: &[MediaRef]) -> Vec<String> {
    media.iter().map(|m| m.to_string()).collect()
}

/// Runs a selection scan off the async threads.
pub(super) async fn run_select<T: Send + 'static>(
    state: &State,
    f: impl FnOnce(&Ledger) -> Result<T, LedgerError> + Send + 'static,
) -> Result<T, ApiError> {
    let ledger = state.ledger.clone();
    Ok(tokio::task::spawn_blocking(move || f(&ledger))
        .await
        .map_err(ApiError::internal)??)
}

/// `POST quarantine/{server}/{media_id}`.
pub async fn quarantine_media(
    S(state): S<State>,
    m: Moderator<need::Admin>,
    MediaPath(media): MediaPath,
    input: ActInput,
) -> Result<Json<Value>, ApiError> {
    m.own_server(media.origin.as_str())?;
    m.read_through_first(&state, &media).await;
    let act = m.act(input.reason()?);
    let n = state
        .moderation
        .quarantine(&act, ModerationTarget::Media(media.clone()), vec![media])
        .await?;
    Ok(Json(json!({ "num_quarantined": n })))
}

/// Selects the seeds (off the async threads), quarantines them, answers the count.
pub(super) async fn quarantine_selected(
    state: &State,
    act: &Act,
    target: ModerationTarget,
    selector: impl FnOnce(&Ledger) -> Result<Vec<MediaRef>, LedgerError> + Send + 'static,
) -> Result<Json<Value>, ApiError> {
    let seeds = run_select(state, selector).await?;
    let n = state.moderation.quarantine(act, target, seeds).await?;
    Ok(Json(json!({ "num_quarantined": n })))
}

/// `POST quarantine/user/{user_id}`.
pub async fn quarantine_user(
    S(state): S<State>,
    m: Moderator<need::Admin>,
    UserPath(user): UserPath,
    input: ActInput,
) -> Result<Json<Value>, ApiError> {
    m.own_server(user.server_name())?;
    let act = m.act(input.reason()?);
    let u = user.clone();
    quarantine_selected(&state, &act, ModerationTarget::User(user), move |l| {
        select::by_user(l, &u, u64::MAX)
    })
    .await
}

/// `POST quarantine/server/{server_name}`.
pub async fn quarantine_server(
    S(state): S<State>,
    m: Moderator<need::Admin>,
    ServerPath(server): ServerPath,
    input: ActInput,
) -> Result<Json<Value>, ApiError> {
    m.own_server(server.as_str())?;
    let act = m.act(input.reason()?);
    let s = server.clone();
    quarantine_selected(&state, &act, ModerationTarget::Server(server), move |l| {
        select::by_server(l, &s, u64::MAX)
    })
    .await
}

/// The media of a room the moderator reaches (`policy::room_media`), as the homeserver lists
/// it to them. Only a token the homeserver resolved is sent to it (never the shared secret or
/// a static token): else 400 `M_INVALID_PARAM`.
pub(super) async fn room_media(
    state: &State,
    m: &Moderator<need::Admin>,
    room: &str,
) -> Result<Vec<MediaRef>, ApiError> {
    let token = m.caller.homeserver_token().ok_or_else(|| {
        ApiError::InvalidParam("listing a room's media needs a homeserver admin's token".into())
    })?;
    let listed = state
        .moderation
        .homeserver
        .room_media(&m.caller.homeserver, token, room)
        .await?;
    Ok(policy::room_media(&listed, m.authority()))
}

/// `POST quarantine/room/{room_id}` (needs a Synapse-compatible homeserver admin API).
pub async fn quarantine_room(
    S(state): S<State>,
    m: Moderator<need::Admin>,
    RoomPath(room): RoomPath,
    input: ActInput,
) -> Result<Json<Value>, ApiError> {
    let act = m.act(input.reason()?);
    quarantine_room_as(&state, &m, &act, room).await
}

/// Quarantines the room's media as the homeserver lists them (ours and Synapse's route),
/// reading through first those the homeserver stored itself before the switch; answers the
/// count.
pub(super) async fn quarantine_room_as(
    state: &State,
    m: &Moderator<need::Admin>,
    act: &Act,
    room: RoomId,
) -> Result<Json<Value>, ApiError> {
    let seeds = room_media(state, m, room.as_str()).await?;
    for media in &seeds {
        m.read_through_first(state, media).await;
    }
    let n = state
        .moderation
        .quarantine(act, ModerationTarget::Room(room.into()), seeds)
        .await?;
    Ok(Json(json!({ "num_quarantined": n })))
}

/// `POST unquarantine/{server}/{media_id}`.
pub async fn unquarantine_media(
    S(state): S<State>,
    m: Moderator<need::Admin>,
    MediaPath(media): MediaPath,
    input: ActInput,
) -> Result<Json<Value>, ApiError> {
    m.own_server(media.origin.as_str())?;
    let act = m.act(input.reason()?);
    let n = state.moderation.unquarantine(&act, media).await?;
    Ok(Json(json!({ "num_unquarantined": n })))
}

/// A live (not tombstoned) record, or 404.
pub(super) fn live_record(
    state: &State,
    media: &MediaRef,
) -> Result<media_ledger_projections::media_index::MediaRecord, ApiError> {
    select::live_record(&state.ledger, media)?
        .ok_or_else(|| ApiError::NotFound("media not found".into()))
}

/// `GET media/{server}/{media_id}/attributes`.
pub async fn get_attributes(
    S(state): S<State>,
    m: Moderator<need::Admin>,
    MediaPath(media): MediaPath,
) -> Result<Json<Value>, ApiError> {
    m.own_server(media.origin.as_str())?;
    let r = live_record(&state, &media)?;
    let purpose = if r.pinned {
        MediaPurpose::Pinned
    } else {
        MediaPurpose::None
    };
    Ok(Json(json!({ "purpose": purpose.as_str() })))
}

/// The `purpose` of an attributes body: `none` or `pinned`.
fn purpose(body: &Value) -> Result<MediaPurpose, ApiError> {
    match body.get("purpose").and_then(Value::as_str) {
        Some("none") => Ok(MediaPurpose::None),
        Some("pinned") => Ok(MediaPurpose::Pinned),
        Some(other) => Err(ApiError::InvalidParam(format!(
            "unknown purpose {other:?} (none or pinned)"
        ))),
        None => Err(ApiError::MissingParam("purpose is required".into())),
    }
}

/// `POST media/{server}/{media_id}/attributes` (also `.../attributes/set`), body
/// `{"purpose": "none" | "pinned"}`.
pub async fn set_attributes(
    S(state): S<State>,
    m: Moderator<need::Admin>,
    MediaPath(media): MediaPath,
    input: ActInput,
) -> Result<Json<Value>, ApiError> {
    m.own_server(media.origin.as_str())?;
    let purpose = purpose(&input.json()?)?;
    let act = m.act(input.reason()?);
    state.moderation.set_purpose(&act, media, purpose).await?;
    Ok(Json(json!({ "purpose": purpose.as_str() })))
}
