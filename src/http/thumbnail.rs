//! Thumbnail routes: legacy `/_matrix/media/{r0,v3}/thumbnail` and authenticated
//! `/_matrix/client/v1/media/thumbnail`.

use super::download::header_value;
use super::extract::{media_ref, GuestOk, Homeserver, MPath, MQuery, ReadThroughToken};
use super::headers::add_security_headers;
use super::State;
use crate::auth::Principal;
use crate::error::ApiError;
use crate::thumbnail::{Thumb, ThumbRequest};
use axum::body::Body;
use axum::extract::State as S;
use axum::http::{header, HeaderValue, Method};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use media_ledger_events::{Actor, ThumbnailMethod};
use serde::Deserialize;
use std::time::Duration;

/// Largest width or height a request may ask for.
const MAX_DIMENSION: u32 = 10_000;

/// Query of a thumbnail request (kept as text so a bad value is `M_INVALID_PARAM`).
#[derive(Deserialize, Default)]
pub struct ThumbQuery {
    width: Option<String>,
    height: Option<String>,
    method: Option<String>,
    animated: Option<String>,
    timeout_ms: Option<u64>,
}

fn dimension(name: &str, v: Option<&str>) -> Result<u32, ApiError> {
    let v = v.ok_or_else(|| ApiError::MissingParam(format!("{name} is required")))?;
    match v.parse::<u32>() {
        Ok(n) if (1..=MAX_DIMENSION).contains(&n) => Ok(n),
        _ => Err(ApiError::InvalidParam(format!(
            "{name} must be an integer from 1 to {MAX_DIMENSION}"
        ))),
    }
}

/// The thumbnail request of a query (shared with the federation endpoint).
pub fn parse_query(q: &ThumbQuery) -> Result<ThumbRequest, ApiError> {
    let method = match q.method.as_deref() {
        None | Some("scale") => ThumbnailMethod::Scale,
        Some("crop") => ThumbnailMethod::Crop,
        Some(_) => {
            return Err(ApiError::InvalidParam(
                "method must be crop or scale".into(),
            ))
        }
    };
    let animated = match q.animated.as_deref() {
        None | Some("false") => false,
        Some("true") => true,
        Some(_) => {
            return Err(ApiError::InvalidParam(
                "animated must be true or false".into(),
            ))
        }
    };
    Ok(ThumbRequest {
        width: dimension("width", q.width.as_deref())?,
        height: dimension("height", q.height.as_deref())?,
        method,
        animated,
    })
}

/// `GET /_matrix/media/{r0,v3}/thumbnail/{server}/{id}`.
#[allow(clippy::too_many_arguments)] // axum extractors, one per argument
pub async fn legacy(
    S(state): S<State>,
    Homeserver(hs): Homeserver,
    super::extract::MaybeAuthed(principal): super::extract::MaybeAuthed,
    ReadThroughToken(read_through): ReadThroughToken,
    super::extract::ClientAddr(client): super::extract::ClientAddr,
    MPath((server, id)): MPath<(String, String)>,
    MQuery(q): MQuery<ThumbQuery>,
    method: Method,
) -> Result<Response, ApiError> {
    if !state.config.downloads.allow_unauthenticated {
        return Err(ApiError::NotFound(
            "use the authenticated media endpoints".into(),
        ));
    }
    let caller = super::download::limited_as(&state, principal.as_ref(), client);
    state
        .rate_limits
        .request(crate::abuse::rate::Class::Downloads, &caller)?;
    serve(
        &state,
        principal,
        &hs.name,
        (&server, &id),
        q,
        method == Method::HEAD,
        read_through.as_deref(),
    )
    .await
}

/// `GET /_matrix/client/v1/media/thumbnail/{server}/{id}`.
pub async fn authed(
    S(state): S<State>,
    GuestOk(auth): GuestOk,
    ReadThroughToken(read_through): ReadThroughToken,
    super::extract::ClientAddr(client): super::extract::ClientAddr,
    MPath((server, id)): MPath<(String, String)>,
    MQuery(q): MQuery<ThumbQuery>,
    method: Method,
) -> Result<Response, ApiError> {
    let caller = super::download::limited_as(&state, Some(&auth.principal), client);
    state
        .rate_limits
        .request(crate::abuse::rate::Class::Downloads, &caller)?;
    serve(
        &state,
        Some(auth.principal),
        &auth.homeserver.name,
        (&server, &id),
        q,
        method == Method::HEAD,
        read_through.as_deref(),
    )
    .await
}

async fn serve(
    state: &State,
    principal: Option<Principal>,
    ours: &media_ledger_events::ServerName,
    (server, id): (&str, &str),
    q: ThumbQuery,
    head: bool,
    read_through: Option<&str>,
) -> Result<Response, ApiError> {
    let media = media_ref(server, id)?;
    let req = parse_query(&q)?;
    let dl = &state.config.downloads;
    let timeout = Duration::from_millis(
        q.timeout_ms
            .unwrap_or(dl.default_timeout_ms)
            .min(dl.max_timeout_ms),
    );
    // Without a token the homeserver knows (an anonymous legacy request) nothing is fetched
    // and nothing generated: what exists is served (ARCHITECTURE invariant 21).
    let requester = principal.as_ref().map(Principal::actor);
    let actor = requester.clone().unwrap_or(Actor::System);
    let allow_remote = requester.is_some();
    // A purge racing the generation or the open: look the media up once more (as downloads
    // do), which answers 404 for a purged local media and fetches a purged remote copy again.
    let mut looked_again = false;
    let (stream, len, content_type) = loop {
        let record = state
            .reader
            .resolve(
                &media,
                timeout,
                allow_remote,
                actor.clone(),
                ours,
                read_through,
            )
            .await?;
        super::download::refuse_frozen(state, principal.as_ref(), &record)?;
        let replace = !head && state.config.quarantine.replace_thumbnails;
        if let Some(refused) =
            super::download::refuse_unservable(&record, req.width, req.height, replace).await?
        {
            return Ok(refused);
        }
        if !head {
            super::download::note_access(state, principal.as_ref(), &media, &record);
        }
        let opened = async {
            let (thumb, _size) = state
                .thumbnails
                .get(requester.clone(), &media, &record, req)
                .await?;
            let (sha, len, content_type) = thumb.served(&record);
            let stream = if head {
                futures_util::stream::empty().boxed()
            } else {
                state.reader.open_blob(&sha, 0, len).await?
            };
            Ok::<_, ApiError>((stream, len, content_type))
        }
        .await;
        match opened {
            Ok(done) => break done,
            Err(e) if !looked_again && state.reader.removed_since(&media, &record)? => {
                tracing::debug!(%media, error = %e, "media removed while thumbnailing it; looking again");
                looked_again = true;
            }
            Err(e) => return Err(e),
        }
    };
    let mut resp = Body::from_stream(stream).into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, header_value(&content_type)?);
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    h.insert(
        header::CONTENT_DISPOSITION,
        header_value(&format!(
            "inline; filename=\"{}\"",
            Thumb::file_name(&content_type)
        ))?,
    );
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, max-age=86400"),
    );
    add_security_headers(h);
    Ok(resp)
}
