//! Upload routes: `POST /upload`, `POST /v1/create`, `PUT /upload/{server}/{id}`, and the
//! media config endpoints.

use super::extract::{media_ref, request_id, Authed, MPath, MQuery};
use super::State;
use crate::abuse::{quota, rate::Class};
use crate::error::ApiError;
use crate::media::UploadMeta;
use axum::body::Body;
use axum::extract::State as S;
use axum::http::{header, HeaderMap};
use axum::Json;
use media_ledger_events::ContentType;
use serde::Deserialize;
use serde_json::{json, Value};

/// Query of `POST /upload`.
#[derive(Deserialize)]
pub struct UploadQuery {
    filename: Option<String>,
}

/// Reads and discards (a bounded part of) a refused request's body before answering, so the
/// answer reaches a client that is still sending: closing with unread data makes the kernel
/// reset the connection, and the client then sees a broken pipe instead of the 413.
async fn drain_then(error: ApiError, body: Body) -> ApiError {
    crate::media::drain(body.into_data_stream()).await;
    error
}

fn meta(headers: &HeaderMap, filename: Option<String>, limit: u64) -> Result<UploadMeta, ApiError> {
    if let Some(len) = headers.get(header::CONTENT_LENGTH) {
        let len: u64 = len
            .to_str()
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| ApiError::InvalidParam("invalid Content-Length".into()))?;
        if len > limit {
            return Err(ApiError::TooLarge { limit_bytes: limit });
        }
    }
    let content_type = match headers.get(header::CONTENT_TYPE) {
        None => None,
        Some(v) => Some(
            v.to_str()
                .ok()
                .and_then(|s| ContentType::parse_strict(s).ok())
                .ok_or_else(|| {
                    ApiError::InvalidParam(
                        "invalid Content-Type (one type/subtype, token parameters, no comma)"
                            .into(),
                    )
                })?,
        ),
    };
    if let Some(f) = &filename {
        if f.len() > 255 || f.chars().any(char::is_control) {
            return Err(ApiError::InvalidParam("invalid filename".into()));
        }
    }
    Ok(UploadMeta {
        content_type,
        upload_name: filename.filter(|f| !f.is_empty()),
    })
}

/// `POST /_matrix/media/{r0,v3}/upload`.
pub async fn upload(
    S(state): S<State>,
    auth: Authed,
    MQuery(q): MQuery<UploadQuery>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let meta = match limits(&state, &auth)
        .and_then(|()| meta(&headers, q.filename, state.config.uploads.max_bytes))
    {
        Ok(m) => m,
        Err(e) => return Err(drain_then(e, body).await),
    };
    let media = state
        .media
        .upload(
            auth.principal.actor(),
            request_id(),
            auth.homeserver.name.clone(),
            meta,
            body.into_data_stream(),
            quota_of(&state, &auth),
        )
        .await?;
    Ok(Json(json!({ "content_uri": media.to_string() })))
}

/// `PUT /_matrix/media/{r0,v3}/upload/{server}/{id}`.
pub async fn upload_async(
    S(state): S<State>,
    auth: Authed,
    MPath((server, id)): MPath<(String, String)>,
    MQuery(q): MQuery<UploadQuery>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let media = media_ref(&server, &id)?;
    let owner = auth
        .principal
        .user()
        .cloned()
        .ok_or_else(|| ApiError::Forbidden("async uploads belong to users".into()))?;
    let meta = match limits(&state, &auth)
        .and_then(|()| meta(&headers, q.filename, state.config.uploads.max_bytes))
    {
        Ok(m) => m,
        Err(e) => return Err(drain_then(e, body).await),
    };
    let quota = quota_of(&state, &auth);
    state
        .media
        .upload_async(
            auth.principal.actor(),
            owner,
            request_id(),
            media,
            meta,
            body.into_data_stream(),
            quota,
        )
        .await?;
    Ok(Json(json!({})))
}

/// `POST /_matrix/media/v1/create`.
pub async fn create(S(state): S<State>, auth: Authed) -> Result<Json<Value>, ApiError> {
    let owner = auth
        .principal
        .user()
        .cloned()
        .ok_or_else(|| ApiError::Forbidden("async uploads belong to users".into()))?;
    state
        .rate_limits
        .request(Class::Create, &auth.limited_as(&state))?;
    let max_pending =
        quota::rule(&state.config, &owner, auth.is_repository_admin(&state)).map(|r| r.max_pending);
    let (media, expires) = state
        .media
        .create(
            owner,
            request_id(),
            auth.homeserver.name.clone(),
            max_pending,
        )
        .await?;
    Ok(Json(
        json!({ "content_uri": media.to_string(), "unused_expires_at": expires }),
    ))
}

/// The upload rate limit of the caller.
fn limits(state: &State, auth: &Authed) -> Result<(), ApiError> {
    state
        .rate_limits
        .request(Class::Uploads, &auth.limited_as(state))
}

/// The caller's quota and upload windows (none for the shared secret).
fn quota_of(state: &State, auth: &Authed) -> Option<crate::ledger::UploadQuota> {
    let user = auth.principal.user()?;
    quota::for_uploader(&state.config, user, auth.is_repository_admin(state))
}

/// `m.upload.size`, and the caller's quota as MSC4034 names it (limits that are not set are
/// left out, as matrix-media-repo does).
fn config_body(state: &State, auth: &Authed) -> Json<Value> {
    let mut body = json!({ "m.upload.size": state.config.uploads.max_bytes });
    if let Some(rule) = auth
        .principal
        .user()
        .and_then(|u| quota::rule(&state.config, u, auth.is_repository_admin(state)))
    {
        if rule.max_bytes > 0 {
            body["org.matrix.msc4034.storage.size"] = json!(rule.max_bytes);
        }
        if rule.max_files > 0 {
            body["org.matrix.msc4034.storage.max_files"] = json!(rule.max_files);
        }
    }
    Json(body)
}

/// `GET /_matrix/media/{r0,v3}/config`.
pub async fn config_legacy(S(state): S<State>, auth: Authed) -> Json<Value> {
    config_body(&state, &auth)
}

/// `GET /_matrix/client/v1/media/config`.
pub async fn config_authed(S(state): S<State>, auth: Authed) -> Json<Value> {
    config_body(&state, &auth)
}

/// `GET /_matrix/media/unstable/org.matrix.msc4034/usage`:
/// the caller's stored bytes and files (their live media; the shared secret has none).
pub async fn usage(S(state): S<State>, auth: Authed) -> Result<Json<Value>, ApiError> {
    let used = match auth.principal.user() {
        Some(u) => quota::usage_of(&state.ledger, u)?,
        None => Default::default(),
    };
    Ok(Json(json!({
        "org.matrix.msc4034.storage.used": used.bytes,
        "org.matrix.msc4034.storage.files": used.files,
    })))
}
