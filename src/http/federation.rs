//! Federation routes: our signing key (`/_matrix/key/v2/server`) and our media for other
//! servers (`/_matrix/federation/v1/media/{download,thumbnail}/{id}`, X-Matrix signed
//! requests only, answered as `multipart/mixed`).

use super::download::header_value;
use super::extract::Homeserver;
use super::headers::content_disposition;
use super::thumbnail::{parse_query, ThumbQuery};
use super::State;
use crate::error::ApiError;
use crate::federation::xmatrix;
use crate::thumbnail::Thumb;
use axum::body::Body;
use axum::extract::State as S;
use axum::http::{header, HeaderMap, HeaderValue, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use bytes::Bytes;
use futures_util::StreamExt;
use media_ledger_events::{Actor, MediaId, MediaRef, ServerName};
use media_ledger_projections::media_index::MediaRecord;
use serde_json::Value;
use std::time::Duration;

/// `GET /_matrix/key/v2/server`.
pub async fn server_keys(
    S(state): S<State>,
    Homeserver(hs): Homeserver,
) -> Result<Json<Value>, ApiError> {
    let now = crate::clock::now_ms();
    let keys = state
        .remote
        .client()
        .key_for(&hs.name)
        .server_keys(hs.name.as_str(), now + 24 * 3600 * 1000)
        .map_err(ApiError::internal)?;
    Ok(Json(keys))
}

/// Checks the request's X-Matrix signature; returns the calling server.
async fn authenticate(
    state: &State,
    headers: &HeaderMap,
    uri: &Uri,
    ours: &ServerName,
) -> Result<ServerName, ApiError> {
    let value = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        // Synapse's answer to a federation request without X-Matrix (not M_MISSING_TOKEN, which
        // is about access tokens).
        .ok_or_else(|| ApiError::Unauthorized("missing X-Matrix Authorization header".into()))?;
    let x = xmatrix::parse(value).map_err(|e| ApiError::Unauthorized(e.to_string()))?;
    let origin = ServerName::parse_strict(&x.origin)
        .map_err(|_| ApiError::Unauthorized("bad origin".into()))?;
    let keys = state
        .remote
        .client()
        .server_keys(&origin)
        .await
        .map_err(|e| ApiError::Unauthorized(format!("cannot get the keys of {origin}: {e}")))?;
    let key = keys
        .get(&x.key_id)
        .ok_or_else(|| ApiError::Unauthorized(format!("unknown key {}", x.key_id)))?;
    let path = uri.path_and_query().map_or(uri.path(), |p| p.as_str());
    xmatrix::verify(&x, key, "GET", path, ours.as_str(), None)
        .map_err(|e| ApiError::Unauthorized(e.to_string()))?;
    Ok(origin)
}

fn multipart(
    content_type: &str,
    disposition: &str,
    len: u64,
    body: crate::datastore::BlobStream,
) -> Result<Response, ApiError> {
    let boundary = crate::media::new_media_id()?.to_string();
    let head = format!(
        "--{boundary}\r\nContent-Type: application/json\r\n\r\n{{}}\r\n--{boundary}\r\nContent-Type: {content_type}\r\nContent-Disposition: {disposition}\r\nContent-Length: {len}\r\n\r\n"
    );
    let tail = format!("\r\n--{boundary}--\r\n");
    let stream =
        futures_util::stream::once(async move { Ok::<Bytes, std::io::Error>(Bytes::from(head)) })
            .chain(body)
            .chain(futures_util::stream::once(
                async move { Ok(Bytes::from(tail)) },
            ));
    let mut resp = Body::from_stream(stream).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header_value(&format!("multipart/mixed; boundary={boundary}"))?,
    );
    Ok(resp)
}

fn local_media(ours: &ServerName, id: &str) -> Result<MediaRef, ApiError> {
    let id: MediaId = id
        .parse()
        .map_err(|_| ApiError::InvalidParam(format!("invalid media id {id:?}")))?;
    Ok(MediaRef::new(ours.clone(), id))
}

/// `GET /_matrix/federation/v1/media/download/{id}`.
pub async fn download(
    S(state): S<State>,
    Homeserver(hs): Homeserver,
    super::extract::MPath(id): super::extract::MPath<String>,
    headers: HeaderMap,
    uri: Uri,
) -> Result<Response, ApiError> {
    let origin = authenticate(&state, &headers, &uri, &hs.name).await?;
    state.rate_limits.federation(&origin)?;
    let media = local_media(&hs.name, &id)?;
    let record = servable(&state, &media).await?;
    super::download::note_access(&state, None, &media, &record);
    let ct = record
        .content_type
        .as_ref()
        .map_or_else(|| "application/octet-stream".to_owned(), |c| c.served());
    let essence = record
        .content_type
        .as_ref()
        .map(|c| c.essence())
        .unwrap_or_default();
    let disposition = content_disposition(&essence, record.upload_name.as_deref());
    let body = state
        .reader
        .open_blob(&record.sha256, 0, record.size_bytes)
        .await?;
    multipart(&ct, &disposition, record.size_bytes, body)
}

/// The record of a local media another server asks for, waiting on a pending async upload as
/// a client download does; 404 unless it can be served.
async fn servable(state: &State, media: &MediaRef) -> Result<MediaRecord, ApiError> {
    let record = state
        .reader
        .find(
            media,
            Duration::from_millis(state.config.downloads.default_timeout_ms),
        )
        .await?;
    if !record.servable() {
        return Err(ApiError::NotFound("media not found".into()));
    }
    Ok(record)
}

/// `GET /_matrix/federation/v1/media/thumbnail/{id}`.
pub async fn thumbnail(
    S(state): S<State>,
    Homeserver(hs): Homeserver,
    super::extract::MPath(id): super::extract::MPath<String>,
    super::extract::MQuery(q): super::extract::MQuery<ThumbQuery>,
    headers: HeaderMap,
    uri: Uri,
) -> Result<Response, ApiError> {
    let origin = authenticate(&state, &headers, &uri, &hs.name).await?;
    state.rate_limits.federation(&origin)?;
    let media = local_media(&hs.name, &id)?;
    let req = parse_query(&q)?;
    let record = servable(&state, &media).await?;
    super::download::note_access(&state, None, &media, &record);
    let (thumb, _) = state
        .thumbnails
        .get(Some(Actor::System), &media, &record, req)
        .await?;
    let (sha, len, ct) = thumb.served(&record);
    let body = state.reader.open_blob(&sha, 0, len).await?;
    multipart(
        &ct,
        &format!("inline; filename=\"{}\"", Thumb::file_name(&ct)),
        len,
        body,
    )
    .map(|mut r| {
        r.headers_mut().insert(
            "x-content-type-options",
            HeaderValue::from_static("nosniff"),
        );
        r
    })
}
