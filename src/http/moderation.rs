//! Moderation routes under `/_matrix/media/unstable/admin/`: quarantine, unquarantine,
//! media attributes and the purge family, with matrix-media-repo's shapes.
//!
//! Who may do what: repository admins (config, or the shared secret) everything; admins of
//! the request's homeserver (its admin API says so, `quarantine.allow_local_admins`) only
//! that server's media; the uploader may purge their own media. Anyone else: 403.

use super::extract::{media_ref, parse_server, request_id, Authed, MPath, MQuery, SmallBody};
use super::State;
use crate::error::ApiError;
use crate::moderation::{select, Act};
use axum::body::Bytes;
use axum::extract::State as S;
use axum::Json;
use media_ledger_events::{
    Authority, MediaPurpose, MediaRef, ModerationTarget, ServerName, UserId,
};
use media_ledger_projections::media_index;
use serde::Deserialize;
use serde_json::{json, Value};

/// Longest reason kept with an act.
const MAX_REASON: usize = 1000;

/// Query parameters of the moderation routes.
#[derive(Deserialize, Default)]
pub struct ModQuery {
    pub(super) reason: Option<String>,
    pub(super) before_ts: Option<u64>,
    pub(super) include_local: Option<bool>,
}

/// The caller's capacity on the request's homeserver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Capacity {
    /// Repository admin.
    Repository,
    /// Admin of this homeserver.
    Homeserver(ServerName),
    /// Anyone else.
    User,
}

/// Works out the caller's capacity (asks the homeserver for non-repository admins).
pub async fn capacity(state: &State, a: &Authed) -> Result<Capacity, ApiError> {
    if state.auth.is_admin(&a.principal) {
        return Ok(Capacity::Repository);
    }
    if state.config.quarantine.allow_local_admins {
        if let Some(user) = a.principal.user() {
            if user
                .server_name()
                .eq_ignore_ascii_case(a.homeserver.name.as_str())
                && state
                    .moderation
                    .homeserver
                    .is_admin(&a.homeserver, &a.token, user)
                    .await?
            {
                return Ok(Capacity::Homeserver(a.homeserver.name.clone()));
            }
        }
    }
    Ok(Capacity::User)
}

pub(super) fn admin_only(cap: &Capacity) -> Result<Authority, ApiError> {
    match cap {
        Capacity::Repository => Ok(Authority::RepositoryAdmin),
        Capacity::Homeserver(s) => Ok(Authority::HomeserverAdmin(s.clone())),
        Capacity::User => Err(ApiError::Forbidden(
            "only repository admins and admins of this homeserver may do this".into(),
        )),
    }
}

pub(super) fn repository_only(cap: &Capacity) -> Result<Authority, ApiError> {
    match cap {
        Capacity::Repository => Ok(Authority::RepositoryAdmin),
        _ => Err(ApiError::Forbidden(
            "only repository admins may do this".into(),
        )),
    }
}

/// A homeserver admin may only name their own server.
pub(super) fn own_server(authority: &Authority, server: &str) -> Result<(), ApiError> {
    match authority.origin() {
        Some(o) if !o.as_str().eq_ignore_ascii_case(server) => Err(ApiError::Forbidden(
            "homeserver admins may only moderate their own server's media".into(),
        )),
        _ => Ok(()),
    }
}

/// The reason: `?reason=`, else a JSON body's `reason`.
pub(super) fn reason(q: &ModQuery, body: &Bytes) -> Result<Option<String>, ApiError> {
    let from_body = if body.iter().all(u8::is_ascii_whitespace) {
        None
    } else {
        let v: Value = serde_json::from_slice(body)
            .map_err(|e| ApiError::NotJson(format!("body is not JSON: {e}")))?;
        match v.get("reason") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(_) => return Err(ApiError::InvalidParam("reason must be a string".into())),
        }
    };
    let r = q.reason.clone().or(from_body);
    if r.as_ref().is_some_and(|r| r.len() > MAX_REASON) {
        return Err(ApiError::InvalidParam(format!(
            "reason is longer than {MAX_REASON} bytes"
        )));
    }
    Ok(r.filter(|r| !r.is_empty()))
}

pub(super) fn act(a: &Authed, authority: Authority, reason: Option<String>) -> Act {
    Act {
        actor: a.principal.actor(),
        request_id: request_id(),
        authority,
        reason,
    }
}

pub(super) fn parse_user(user: &str) -> Result<UserId, ApiError> {
    user.parse()
        .map_err(|_| ApiError::InvalidParam(format!("invalid user id {user:?}")))
}

pub(super) fn parse_room(room: &str) -> Result<String, ApiError> {
    let ok = room.len() <= 255
        && room.starts_with('!')
        && room.contains(':')
        && room.chars().all(|c| c.is_ascii_graphic());
    if ok {
        Ok(room.to_owned())
    } else {
        Err(ApiError::InvalidParam(format!("invalid room id {room:?}")))
    }
}

pub(super) fn mxcs(media: &[MediaRef]) -> Vec<String> {
    media.iter().map(|m| m.to_string()).collect()
}

/// Runs a selection scan off the async threads.
pub(super) async fn run_select<T: Send + 'static>(
    state: &State,
    f: impl FnOnce(&crate::ledger::Ledger) -> Result<T, crate::ledger::LedgerError> + Send + 'static,
) -> Result<T, ApiError> {
    let ledger = state.ledger.clone();
    Ok(tokio::task::spawn_blocking(move || f(&ledger))
        .await
        .map_err(ApiError::internal)??)
}

/// `POST quarantine/{server}/{media_id}`.
pub async fn quarantine_media(
    S(state): S<State>,
    a: Authed,
    MPath((server, id)): MPath<(String, String)>,
    MQuery(q): MQuery<ModQuery>,
    SmallBody(body): SmallBody,
) -> Result<Json<Value>, ApiError> {
    let authority = admin_only(&capacity(&state, &a).await?)?;
    let media = media_ref(&server, &id)?;
    own_server(&authority, &server)?;
    let act = act(&a, authority, reason(&q, &body)?);
    let n = state
        .moderation
        .quarantine(&act, ModerationTarget::Media(media.clone()), vec![media])
        .await?;
    Ok(Json(json!({ "num_quarantined": n })))
}

/// Selects the seeds (off the async threads), quarantines them, answers the count.
async fn quarantine_selected(
    state: &State,
    act: &Act,
    target: ModerationTarget,
    selector: impl FnOnce(&crate::ledger::Ledger) -> Result<Vec<MediaRef>, crate::ledger::LedgerError>
        + Send
        + 'static,
) -> Result<Json<Value>, ApiError> {
    let seeds = run_select(state, selector).await?;
    let n = state.moderation.quarantine(act, target, seeds).await?;
    Ok(Json(json!({ "num_quarantined": n })))
}

/// `POST quarantine/user/{user_id}`.
pub async fn quarantine_user(
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
    let u = user.clone();
    quarantine_selected(&state, &act, ModerationTarget::User(user), move |l| {
        select::by_user(l, &u, u64::MAX)
    })
    .await
}

/// `POST quarantine/server/{server_name}`.
pub async fn quarantine_server(
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
    let s = server.clone();
    quarantine_selected(&state, &act, ModerationTarget::Server(server), move |l| {
        select::by_server(l, &s, u64::MAX)
    })
    .await
}

/// The media a room holds, as the homeserver lists it (its local media only for a
/// homeserver admin).
pub(super) async fn room_media(
    state: &State,
    a: &Authed,
    authority: &Authority,
    room: &str,
) -> Result<Vec<MediaRef>, ApiError> {
    let listed = state
        .moderation
        .homeserver
        .room_media(&a.homeserver, &a.token, room)
        .await?;
    let mut media = select::parse_mxcs(&listed.local);
    if authority.origin().is_none() {
        media.extend(select::parse_mxcs(&listed.remote));
    }
    Ok(media)
}

/// `POST quarantine/room/{room_id}` (needs a Synapse-compatible homeserver admin API).
pub async fn quarantine_room(
    S(state): S<State>,
    a: Authed,
    MPath(room): MPath<String>,
    MQuery(q): MQuery<ModQuery>,
    SmallBody(body): SmallBody,
) -> Result<Json<Value>, ApiError> {
    let authority = admin_only(&capacity(&state, &a).await?)?;
    let room = parse_room(&room)?;
    let reason = reason(&q, &body)?;
    let seeds = room_media(&state, &a, &authority, &room).await?;
    let act = act(&a, authority, reason);
    let n = state
        .moderation
        .quarantine(&act, ModerationTarget::Room(room), seeds)
        .await?;
    Ok(Json(json!({ "num_quarantined": n })))
}

/// `POST unquarantine/{server}/{media_id}`.
pub async fn unquarantine_media(
    S(state): S<State>,
    a: Authed,
    MPath((server, id)): MPath<(String, String)>,
    MQuery(q): MQuery<ModQuery>,
    SmallBody(body): SmallBody,
) -> Result<Json<Value>, ApiError> {
    let authority = admin_only(&capacity(&state, &a).await?)?;
    let media = media_ref(&server, &id)?;
    own_server(&authority, &server)?;
    let act = act(&a, authority, reason(&q, &body)?);
    let n = state.moderation.unquarantine(&act, media).await?;
    Ok(Json(json!({ "num_unquarantined": n })))
}

/// A live (not tombstoned) record, or 404.
pub(super) fn live_record(
    state: &State,
    media: &MediaRef,
) -> Result<media_index::MediaRecord, ApiError> {
    media_index::get(&state.ledger.view("media_index")?, media)?
        .filter(|r| !r.tombstone)
        .ok_or_else(|| ApiError::NotFound("media not found".into()))
}

/// `GET media/{server}/{media_id}/attributes`.
pub async fn get_attributes(
    S(state): S<State>,
    a: Authed,
    MPath((server, id)): MPath<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let authority = admin_only(&capacity(&state, &a).await?)?;
    let media = media_ref(&server, &id)?;
    own_server(&authority, &server)?;
    let r = live_record(&state, &media)?;
    let purpose = if r.pinned {
        MediaPurpose::Pinned
    } else {
        MediaPurpose::None
    };
    Ok(Json(json!({ "purpose": purpose.as_str() })))
}

/// `POST media/{server}/{media_id}/attributes` (also `.../attributes/set`), body
/// `{"purpose": "none" | "pinned"}`.
pub async fn set_attributes(
    S(state): S<State>,
    a: Authed,
    MPath((server, id)): MPath<(String, String)>,
    MQuery(q): MQuery<ModQuery>,
    SmallBody(body): SmallBody,
) -> Result<Json<Value>, ApiError> {
    let authority = admin_only(&capacity(&state, &a).await?)?;
    let media = media_ref(&server, &id)?;
    own_server(&authority, &server)?;
    let v: Value = serde_json::from_slice(&body)
        .map_err(|e| ApiError::NotJson(format!("body is not JSON: {e}")))?;
    let purpose = match v.get("purpose").and_then(Value::as_str) {
        Some("none") => MediaPurpose::None,
        Some("pinned") => MediaPurpose::Pinned,
        Some(other) => {
            return Err(ApiError::InvalidParam(format!(
                "unknown purpose {other:?} (none or pinned)"
            )))
        }
        None => return Err(ApiError::MissingParam("purpose is required".into())),
    };
    let reason = reason(&q, &body)?;
    state
        .moderation
        .set_purpose(&act(&a, authority, reason), media, purpose)
        .await?;
    Ok(Json(json!({ "purpose": purpose.as_str() })))
}
