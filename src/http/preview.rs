//! `GET /_matrix/client/v1/media/preview_url` and the legacy `/_matrix/media/{r0,v3}/preview_url`
//! (served while the legacy endpoints are, token required on both, as Synapse does).

use super::extract::{request_id, Authed, MQuery};
use super::State;
use crate::error::ApiError;
use axum::extract::State as S;
use axum::Json;
use serde::Deserialize;
use serde_json::Value;

/// Query of `preview_url`.
#[derive(Deserialize)]
pub struct PreviewQuery {
    url: Option<String>,
    ts: Option<String>,
}

/// `GET /_matrix/client/v1/media/preview_url?url=…[&ts=…]`.
pub async fn authed(
    S(state): S<State>,
    auth: Result<Authed, ApiError>,
    query: Result<MQuery<PreviewQuery>, ApiError>,
) -> Result<Json<Value>, ApiError> {
    preview(&state, auth, query).await
}

/// `GET /_matrix/media/{r0,v3}/preview_url?url=…[&ts=…]`.
pub async fn legacy(
    S(state): S<State>,
    auth: Result<Authed, ApiError>,
    query: Result<MQuery<PreviewQuery>, ApiError>,
) -> Result<Json<Value>, ApiError> {
    if state.config.url_previews.enabled {
        super::download::legacy_allowed(&state)?;
    }
    preview(&state, auth, query).await
}

async fn preview(
    state: &State,
    auth: Result<Authed, ApiError>,
    query: Result<MQuery<PreviewQuery>, ApiError>,
) -> Result<Json<Value>, ApiError> {
    // Previews off: the endpoint does not exist, whoever asks (Synapse's answer).
    if !state.config.url_previews.enabled {
        return Err(ApiError::Unrecognized);
    }
    let auth = auth?;
    let MQuery(q) = query?;
    let url = q
        .url
        .filter(|u| !u.is_empty())
        .ok_or_else(|| ApiError::MissingParam("missing url parameter".into()))?;
    // `ts` asks for a preview as of a time; a cached preview is served whatever it says
    // (as Synapse does within its cache), but it must be a number.
    if let Some(ts) = q.ts {
        ts.parse::<u64>()
            .map_err(|_| ApiError::InvalidParam("ts must be an integer (ms)".into()))?;
    }
    let og = state
        .previews
        .preview(
            auth.principal.actor(),
            request_id(),
            &auth.homeserver.name,
            &url,
        )
        .await?;
    Ok(Json(og))
}
