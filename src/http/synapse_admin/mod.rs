//! The media part of Synapse's admin API (`/_synapse/admin/v1/…`), served so that an operator
//! can route it to media-ledger and Synapse-side tools (synapse-admin, synadm, Draupnir) act on
//! the media media-ledger serves: media info and deletion, quarantine by media, room and user,
//! protection, a user's media, deletion by date and size, the remote cache purge and the
//! per-user statistics, with Synapse's paths, queries and answers.
//!
//! Auth is the moderation routes' ([`Moderator`]): admins of the request's homeserver (its
//! admin API says so) and repository admins; the remote cache purge is repository admins'
//! only (the cache is shared by every homeserver). "Local" is Synapse's `is_mine`: the
//! request's homeserver. Each act goes through the moderation service like ours (quarantine,
//! unquarantine, purpose `pinned` for protect, purge) and is recorded with its actor and
//! request id; the shapes are in [`listing`].

mod delete;
pub mod listing;

use super::extract::{media_ref, MPath, MQuery, MediaPath, RoomPath, UserPath};
use super::moderation::{quarantine_room_as, quarantine_selected, run_select};
use super::moderator::{need, Moderator, Requirement};
use super::State;
use crate::error::ApiError;
use crate::moderation::{select, Act};
use axum::extract::State as S;
use axum::routing::{get, post};
use axum::{Json, Router};
use delete::{
    delete_by_date, delete_by_date_legacy, delete_media, delete_user_media, purge_media_cache,
};
use listing::{Listed, PageQuery, StatsQuery};
use media_ledger_events::{MediaPurpose, MediaRef, ModerationTarget, ServerName, UserId};
use serde_json::{json, Value};

/// Synapse's admin API prefix.
const P: &str = "/_synapse/admin/v1";

/// The served routes of Synapse's media admin API.
pub fn routes() -> Router<State> {
    Router::new()
        .route(
            &format!("{P}/media/{{server}}/{{media_id}}"),
            get(media_info).delete(delete_media),
        )
        .route(
            &format!("{P}/media/quarantine/{{server}}/{{media_id}}"),
            post(quarantine_media),
        )
        .route(
            &format!("{P}/media/unquarantine/{{server}}/{{media_id}}"),
            post(unquarantine_media),
        )
        .route(
            &format!("{P}/room/{{room_id}}/media/quarantine"),
            post(quarantine_room),
        )
        .route(
            &format!("{P}/quarantine_media/{{room_id}}"),
            post(quarantine_room),
        )
        .route(
            &format!("{P}/user/{{user_id}}/media/quarantine"),
            post(quarantine_user),
        )
        .route(&format!("{P}/media/protect/{{media_id}}"), post(protect))
        .route(
            &format!("{P}/media/unprotect/{{media_id}}"),
            post(unprotect),
        )
        .route(
            &format!("{P}/users/{{user_id}}/media"),
            get(user_media).delete(delete_user_media),
        )
        .route(&format!("{P}/media/delete"), post(delete_by_date))
        .route(
            &format!("{P}/media/{{server}}/delete"),
            post(delete_by_date_legacy),
        )
        .route(&format!("{P}/purge_media_cache"), post(purge_media_cache))
        .route(&format!("{P}/statistics/users/media"), get(user_statistics))
}

/// The request's homeserver.
fn home<R: Requirement>(m: &Moderator<R>) -> &ServerName {
    &m.caller.homeserver.name
}

/// Synapse's `is_mine_server_name`: `server` is the request's homeserver.
fn is_mine<R: Requirement>(m: &Moderator<R>, server: &str) -> bool {
    home(m).as_str().eq_ignore_ascii_case(server)
}

/// A user of the request's homeserver (their own server for a homeserver admin: 403), else
/// 400 as Synapse's "Can only look up local users".
fn local_user(m: &Moderator<need::Admin>, user: &UserId) -> Result<(), ApiError> {
    m.own_server(user.server_name())?;
    if !is_mine(m, user.server_name()) {
        return Err(ApiError::InvalidParam(format!(
            "Can only look up local users ({user} is not a user of {})",
            home(m)
        )));
    }
    Ok(())
}

/// The act of the caller (Synapse's API carries no reason).
fn act(m: &Moderator<need::Admin>) -> Act {
    m.act(None)
}

/// `GET media/{server}/{media_id}`: `{"media_info": …}`, 404 `M_NOT_FOUND` "Unknown media".
async fn media_info(
    S(state): S<State>,
    m: Moderator<need::Admin>,
    MediaPath(media): MediaPath,
) -> Result<Json<Value>, ApiError> {
    m.own_server(media.origin.as_str())?;
    let local = is_mine(&m, media.origin.as_str());
    let listed = run_select(&state, move |l| {
        let Some(record) = select::live_record(l, &media)? else {
            return Ok(None);
        };
        let quarantined_by = listing::quarantined_by(l, &media, &record)?;
        Ok(Some(Listed {
            media,
            record,
            quarantined_by,
        }))
    })
    .await?;
    let l = listed.ok_or_else(|| ApiError::NotFound("Unknown media".into()))?;
    Ok(Json(
        json!({ "media_info": listing::media_info(&state.config, &l, local) }),
    ))
}

/// `POST media/quarantine/{server}/{media_id}`: `{}`.
async fn quarantine_media(
    S(state): S<State>,
    m: Moderator<need::Admin>,
    MediaPath(media): MediaPath,
) -> Result<Json<Value>, ApiError> {
    m.own_server(media.origin.as_str())?;
    m.read_through_first(&state, &media).await;
    state
        .moderation
        .quarantine(
            &act(&m),
            ModerationTarget::Media(media.clone()),
            vec![media],
        )
        .await?;
    Ok(Json(json!({})))
}

/// `POST media/unquarantine/{server}/{media_id}`: `{}` (404 for an unknown media).
async fn unquarantine_media(
    S(state): S<State>,
    m: Moderator<need::Admin>,
    MediaPath(media): MediaPath,
) -> Result<Json<Value>, ApiError> {
    m.own_server(media.origin.as_str())?;
    state.moderation.unquarantine(&act(&m), media).await?;
    Ok(Json(json!({})))
}

/// `POST room/{room_id}/media/quarantine` (and the legacy `quarantine_media/{room_id}`): the
/// room's media as the homeserver lists them; `{"num_quarantined": n}`.
async fn quarantine_room(
    S(state): S<State>,
    m: Moderator<need::Admin>,
    RoomPath(room): RoomPath,
) -> Result<Json<Value>, ApiError> {
    quarantine_room_as(&state, &m, &act(&m), room).await
}

/// `POST user/{user_id}/media/quarantine`: the user's media; `{"num_quarantined": n}`.
async fn quarantine_user(
    S(state): S<State>,
    m: Moderator<need::Admin>,
    UserPath(user): UserPath,
) -> Result<Json<Value>, ApiError> {
    m.own_server(user.server_name())?;
    let u = user.clone();
    quarantine_selected(&state, &act(&m), ModerationTarget::User(user), move |l| {
        select::by_user(l, &u, u64::MAX)
    })
    .await
}

/// A `{media_id}` of the request's homeserver.
fn own_media(m: &Moderator<need::Admin>, media_id: &str) -> Result<MediaRef, ApiError> {
    media_ref(home(m).as_str(), media_id)
}

/// Sets the purpose of a local media (protected = pinned: never quarantined nor purged).
async fn set_protected(
    state: &State,
    m: &Moderator<need::Admin>,
    media_id: &str,
    purpose: MediaPurpose,
) -> Result<Json<Value>, ApiError> {
    let media = own_media(m, media_id)?;
    state
        .moderation
        .set_purpose(&act(m), media, purpose)
        .await?;
    Ok(Json(json!({})))
}

/// `POST media/protect/{media_id}`: `{}`.
async fn protect(
    S(state): S<State>,
    m: Moderator<need::Admin>,
    MPath(media_id): MPath<String>,
) -> Result<Json<Value>, ApiError> {
    set_protected(&state, &m, &media_id, MediaPurpose::Pinned).await
}

/// `POST media/unprotect/{media_id}`: `{}`.
async fn unprotect(
    S(state): S<State>,
    m: Moderator<need::Admin>,
    MPath(media_id): MPath<String>,
) -> Result<Json<Value>, ApiError> {
    set_protected(&state, &m, &media_id, MediaPurpose::None).await
}

/// `GET users/{user_id}/media?from&limit&order_by&dir`: `{"media": [...], "total": n}` and
/// `next_token` while more follow.
async fn user_media(
    S(state): S<State>,
    m: Moderator<need::Admin>,
    UserPath(user): UserPath,
    MQuery(q): MQuery<PageQuery>,
) -> Result<Json<Value>, ApiError> {
    local_user(&m, &user)?;
    let page = q.page()?;
    let (from, limit) = (page.from, page.limit);
    let (listed, total) = run_select(&state, move |l| listing::user_media(l, &user, &page)).await?;
    let media: Vec<Value> = listed
        .iter()
        .map(|l| listing::user_media_entry(&state.config, l))
        .collect();
    let mut out = json!({ "media": media, "total": total });
    if let Some(n) = listing::next_token(from, limit, listed.len(), total) {
        out["next_token"] = json!(n);
    }
    Ok(Json(out))
}

/// `GET statistics/users/media`: per local user of the request's homeserver, their media
/// count and bytes (`from`, `limit`, `order_by`, `dir`, `from_ts`, `until_ts`,
/// `search_term`).
async fn user_statistics(
    S(state): S<State>,
    m: Moderator<need::Admin>,
    MQuery(q): MQuery<StatsQuery>,
) -> Result<Json<Value>, ApiError> {
    let origin = home(&m).clone();
    let ledger = state.ledger.clone();
    let out = tokio::task::spawn_blocking(move || listing::user_statistics(&ledger, &origin, q))
        .await
        .map_err(ApiError::internal)??;
    Ok(Json(out))
}
