//! Download routes: legacy `/_matrix/media/{r0,v3}/download` and authenticated
//! `/_matrix/client/v1/media/download`, with HEAD, single ranges and the security headers.

use super::extract::{
    media_ref, request_id, ClientAddr, GuestOk, Homeserver, MPath, MQuery, MaybeAuthed,
    ReadThroughToken,
};
use super::headers::{add_security_headers, content_disposition};
use super::range::{parse_range, ByteRange};
use super::State;
use crate::abuse::rate::{Caller, Class};
use crate::auth::Principal;
use crate::clock::now_ms;
use crate::error::ApiError;
use axum::body::Body;
use axum::extract::State as S;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use media_ledger_events::{Actor, MediaAccessed};
use media_ledger_projections::media_index::MediaRecord;
use serde::Deserialize;
use std::time::Duration;

/// Query of a download.
#[derive(Deserialize, Default)]
pub struct DownloadQuery {
    timeout_ms: Option<u64>,
    allow_remote: Option<String>,
}

pub(super) fn legacy_allowed(state: &State) -> Result<(), ApiError> {
    if state.config.downloads.allow_unauthenticated {
        Ok(())
    } else {
        Err(ApiError::NotFound(
            "use the authenticated media endpoints".into(),
        ))
    }
}

/// `GET /_matrix/media/{r0,v3}/download/{server}/{id}`.
#[allow(clippy::too_many_arguments)] // axum extractors, one per argument
pub async fn legacy(
    S(state): S<State>,
    Homeserver(hs): Homeserver,
    MaybeAuthed(principal): MaybeAuthed,
    ReadThroughToken(read_through): ReadThroughToken,
    ClientAddr(client): ClientAddr,
    MPath((server, id)): MPath<(String, String)>,
    MQuery(q): MQuery<DownloadQuery>,
    method: Method,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    legacy_allowed(&state)?;
    let wanted = Wanted {
        server: &server,
        id: &id,
        filename: None,
        head: method == Method::HEAD,
        ours: hs.name,
        read_through,
        client,
    };
    serve(&state, principal, wanted, q, &headers).await
}

/// `GET /_matrix/media/{r0,v3}/download/{server}/{id}/{filename}`.
#[allow(clippy::too_many_arguments)] // axum extractors, one per argument
pub async fn legacy_named(
    S(state): S<State>,
    Homeserver(hs): Homeserver,
    MaybeAuthed(principal): MaybeAuthed,
    ReadThroughToken(read_through): ReadThroughToken,
    ClientAddr(client): ClientAddr,
    MPath((server, id, name)): MPath<(String, String, String)>,
    MQuery(q): MQuery<DownloadQuery>,
    method: Method,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    legacy_allowed(&state)?;
    let wanted = Wanted {
        server: &server,
        id: &id,
        filename: Some(name),
        head: method == Method::HEAD,
        ours: hs.name,
        read_through,
        client,
    };
    serve(&state, principal, wanted, q, &headers).await
}

/// `GET /_matrix/client/v1/media/download/{server}/{id}`.
#[allow(clippy::too_many_arguments)] // axum extractors, one per argument
pub async fn authed(
    S(state): S<State>,
    GuestOk(auth): GuestOk,
    ReadThroughToken(read_through): ReadThroughToken,
    ClientAddr(client): ClientAddr,
    MPath((server, id)): MPath<(String, String)>,
    MQuery(q): MQuery<DownloadQuery>,
    method: Method,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let wanted = Wanted {
        server: &server,
        id: &id,
        filename: None,
        head: method == Method::HEAD,
        ours: auth.homeserver.name,
        read_through,
        client,
    };
    serve(&state, Some(auth.principal), wanted, q, &headers).await
}

/// `GET /_matrix/client/v1/media/download/{server}/{id}/{filename}`.
#[allow(clippy::too_many_arguments)] // axum extractors, one per argument
pub async fn authed_named(
    S(state): S<State>,
    GuestOk(auth): GuestOk,
    ReadThroughToken(read_through): ReadThroughToken,
    ClientAddr(client): ClientAddr,
    MPath((server, id, name)): MPath<(String, String, String)>,
    MQuery(q): MQuery<DownloadQuery>,
    method: Method,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let wanted = Wanted {
        server: &server,
        id: &id,
        filename: Some(name),
        head: method == Method::HEAD,
        ours: auth.homeserver.name,
        read_through,
        client,
    };
    serve(&state, Some(auth.principal), wanted, q, &headers).await
}

/// The spec v1.11 freeze (`downloads.freeze_unauthenticated`): a media created at or after
/// `freeze_unauthenticated_after_ms` is not served to a request without a valid token (only
/// the deprecated endpoints have such requests): 404 `M_NOT_FOUND`, as Synapse and
/// matrix-media-repo answer.
pub(crate) fn refuse_frozen(
    state: &State,
    principal: Option<&Principal>,
    record: &MediaRecord,
) -> Result<(), ApiError> {
    let dl = &state.config.downloads;
    if principal.is_none()
        && dl.freeze_unauthenticated
        && record.created_at_ms >= dl.freeze_unauthenticated_after_ms
    {
        return Err(ApiError::NotFound(
            "media not found: media uploaded after the unauthenticated media freeze is served only on the authenticated endpoints (/_matrix/client/v1/media/...)".into(),
        ));
    }
    Ok(())
}

/// What a quarantined or purged media gets instead of its bytes: 404 `M_NOT_FOUND` (the
/// media's existence is not confirmed), or, for quarantined media when the config says so,
/// the generated "media not allowed" PNG at `width`×`height` (`replace` true).
/// `None`: the media is servable.
pub(crate) async fn refuse_unservable(
    record: &MediaRecord,
    width: u32,
    height: u32,
    replace: bool,
) -> Result<Option<Response>, ApiError> {
    if record.servable() {
        return Ok(None);
    }
    if record.tombstone || !replace {
        return Err(ApiError::NotFound("media not found".into()));
    }
    // Drawn and encoded off the async workers (up to 1024×1024 pixels).
    let png =
        tokio::task::spawn_blocking(move || crate::moderation::placeholder::png(width, height))
            .await
            .map_err(ApiError::internal)??;
    let mut resp = Body::from(png).into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("image/png"));
    h.insert(
        header::CONTENT_DISPOSITION,
        HeaderValue::from_static("inline; filename=\"quarantined.png\""),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    add_security_headers(h);
    Ok(Some(resp))
}

/// Records that `media` was served (a download, a thumbnail, a federation request), at most
/// once per `downloads.access_record_interval_ms`, without waiting (ARCHITECTURE invariant
/// 5): the last access is what `purge/old` and retention judge by.
pub(crate) fn note_access(
    state: &State,
    principal: Option<&Principal>,
    media: &media_ledger_events::MediaRef,
    record: &MediaRecord,
) {
    let interval = state.config.downloads.access_record_interval_ms;
    if now_ms().saturating_sub(record.last_access_ms) >= interval {
        state.ledger.record_access(
            principal.map_or(Actor::System, Principal::actor),
            request_id(),
            MediaAccessed {
                media: media.clone(),
                sha256: record.sha256,
            },
        );
    }
}

/// Who is downloading, as the rate limits see them.
pub(crate) fn limited_as<'a>(
    state: &State,
    principal: Option<&'a Principal>,
    addr: Option<std::net::IpAddr>,
) -> Caller<'a> {
    Caller {
        user: principal.and_then(Principal::user),
        admin: principal.is_some_and(|p| state.auth.is_admin(p)),
        addr,
    }
}

pub(crate) fn header_value(s: &str) -> Result<HeaderValue, ApiError> {
    HeaderValue::from_str(s).map_err(ApiError::internal)
}

/// What a download asks for.
struct Wanted<'a> {
    server: &'a str,
    id: &'a str,
    /// The `/{filename}` path variant, overriding the upload's name.
    filename: Option<String>,
    /// A `HEAD` request: headers only.
    head: bool,
    /// The homeserver the request is for (remote fetches are made on its behalf).
    ours: media_ledger_events::ServerName,
    /// The token to read a media of `ours` through with ([`ReadThroughToken`]).
    read_through: Option<String>,
    /// The client's address (rate limits).
    client: Option<std::net::IpAddr>,
}

async fn serve(
    state: &State,
    principal: Option<Principal>,
    wanted: Wanted<'_>,
    q: DownloadQuery,
    req_headers: &HeaderMap,
) -> Result<Response, ApiError> {
    let Wanted {
        server,
        id,
        filename,
        head,
        ours,
        read_through,
        client,
    } = wanted;
    let media = media_ref(server, id)?;
    let caller = limited_as(state, principal.as_ref(), client);
    state.rate_limits.request(Class::Downloads, &caller)?;
    let dl = &state.config.downloads;
    let timeout = Duration::from_millis(
        q.timeout_ms
            .unwrap_or(dl.default_timeout_ms)
            .min(dl.max_timeout_ms),
    );
    // Only an authenticated request may make us fetch (and cache) remote media: the legacy
    // unauthenticated endpoints serve what is cached (CVE-2024-37303).
    let allow_remote = q.allow_remote.as_deref() != Some("false") && principal.is_some();
    let actor = principal.as_ref().map_or(Actor::System, Principal::actor);
    // A purge may remove the record and its blob between the look-up and the open: then the
    // media is looked up once more (a purged remote copy is fetched again, a purged local
    // media is a 404). Any other failure to open is answered as it is.
    let mut looked_again = false;
    let (record, stream, status, start, len) = loop {
        let record = state
            .reader
            .resolve(
                &media,
                timeout,
                allow_remote,
                actor.clone(),
                &ours,
                read_through.as_deref(),
            )
            .await?;
        refuse_frozen(state, principal.as_ref(), &record)?;
        let replace = !head && state.config.quarantine.replace_downloads;
        if let Some(refused) = refuse_unservable(&record, 512, 512, replace).await? {
            return Ok(refused);
        }
        let size = record.size_bytes;
        let range = parse_range(
            req_headers.get(header::RANGE).and_then(|v| v.to_str().ok()),
            size,
        );
        let (status, start, len) = match range {
            ByteRange::Full => (StatusCode::OK, 0, size),
            ByteRange::Part { start, end } => (StatusCode::PARTIAL_CONTENT, start, end - start + 1),
            ByteRange::Unsatisfiable => {
                return Err(ApiError::RangeNotSatisfiable { size_bytes: size })
            }
        };
        if !head {
            state.rate_limits.download_bytes(&caller, len)?;
        }
        // HEAD checks the blob is there (a HeadObject on S3) without reading it.
        let opened = if head {
            state
                .reader
                .check_blob(&record.sha256)
                .await
                .map(|()| futures_util::stream::empty().boxed())
        } else {
            state.reader.open_blob(&record.sha256, start, len).await
        };
        match opened {
            Ok(stream) => break (record, stream, status, start, len),
            Err(e) if !looked_again && state.reader.removed_since(&media, &record)? => {
                tracing::debug!(%media, error = %e, "media removed while opening it; looking again");
                looked_again = true;
            }
            Err(e) => return Err(e),
        }
    };
    let size = record.size_bytes;

    note_access(state, principal.as_ref(), &media, &record);

    let essence = record
        .content_type
        .as_ref()
        .map(|c| c.essence())
        .unwrap_or_else(|| "application/octet-stream".into());
    // Only the parsed type: an older record may hold a value a browser would read otherwise.
    let content_type = record
        .content_type
        .as_ref()
        .map_or_else(|| "application/octet-stream".to_owned(), |c| c.served());
    let name = filename.or(record.upload_name);
    let mut resp = Body::from_stream(stream).into_response();
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, header_value(&content_type)?);
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    h.insert(
        header::CONTENT_DISPOSITION,
        header_value(&content_disposition(&essence, name.as_deref()))?,
    );
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    if status == StatusCode::PARTIAL_CONTENT {
        h.insert(
            header::CONTENT_RANGE,
            header_value(&format!("bytes {start}-{}/{size}", start + len - 1))?,
        );
    }
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, max-age=86400"),
    );
    add_security_headers(h);
    Ok(resp)
}
