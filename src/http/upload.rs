//! Upload routes: `POST /upload`, `POST /v1/create`, `PUT /upload/{server}/{id}`, and the
//! media config endpoints.

use super::extract::{media_ref, request_id, Authed, MPath, MQuery};
use super::State;
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
    let meta = match meta(&headers, q.filename, state.config.uploads.max_bytes) {
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
    let meta = match meta(&headers, q.filename, state.config.uploads.max_bytes) {
        Ok(m) => m,
        Err(e) => return Err(drain_then(e, body).await),
    };
    state
        .media
        .upload_async(
            auth.principal.actor(),
            owner,
            request_id(),
            media,
            meta,
            body.into_data_stream(),
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
    let (media, expires) = state
        .media
        .create(owner, request_id(), auth.homeserver.name.clone())
        .await?;
    Ok(Json(
        json!({ "content_uri": media.to_string(), "unused_expires_at": expires }),
    ))
}

fn config_body(state: &State) -> Json<Value> {
    Json(json!({ "m.upload.size": state.config.uploads.max_bytes }))
}

/// `GET /_matrix/media/{r0,v3}/config`.
pub async fn config_legacy(S(state): S<State>, _auth: Authed) -> Json<Value> {
    config_body(&state)
}

/// `GET /_matrix/client/v1/media/config`.
pub async fn config_authed(S(state): S<State>, _auth: Authed) -> Json<Value> {
    config_body(&state)
}
