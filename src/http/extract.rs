//! Extractors that turn request parts into typed values or Matrix errors, never into axum's
//! plain-text rejections.

use super::State;
use crate::auth::Principal;
use crate::config::HomeserverConfig;
use crate::error::ApiError;
use axum::extract::FromRequestParts;
use axum::http::header;
use axum::http::request::Parts;
use media_ledger_events::{MediaId, MediaRef, RequestId, RoomId, ServerName, UserId};
use rand::distr::{Alphanumeric, SampleString};
use serde::de::DeserializeOwned;
use std::collections::HashMap;

/// Query parameters, deserialised; a malformed query is `M_INVALID_PARAM`.
pub struct MQuery<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for MQuery<T> {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let q = parts.uri.query().unwrap_or_default();
        serde_urlencoded::from_str(q)
            .map(MQuery)
            .map_err(|e| ApiError::InvalidParam(format!("invalid query: {e}")))
    }
}

/// Path parameters, deserialised; a malformed one is `M_INVALID_PARAM`.
pub struct MPath<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for MPath<T> {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|p| MPath(p.0))
            .map_err(|e| ApiError::InvalidParam(format!("invalid path: {}", e.body_text())))
    }
}

/// Parses a server name (path segment or query value) by the strict rule
/// ([`ServerName::parse_strict`]): a name that can never resolve (`..`, an empty label, a
/// trailing dot) is refused here, before any look-up.
pub fn parse_server(server: &str) -> Result<ServerName, ApiError> {
    ServerName::parse_strict(server)
        .map_err(|_| ApiError::InvalidParam(format!("invalid server name {server:?}")))
}

/// Parses an `mxc://server/id` URI, its server name by the strict rule.
pub fn parse_mxc(mxc: &str) -> Result<MediaRef, ApiError> {
    let bad = || ApiError::InvalidParam(format!("invalid mxc {mxc:?}"));
    let (server, id) = mxc
        .strip_prefix("mxc://")
        .and_then(|rest| rest.split_once('/'))
        .ok_or_else(bad)?;
    media_ref(server, id).map_err(|_| bad())
}

/// Parses `{server}/{media_id}` path segments by the spec's grammar.
pub fn media_ref(server: &str, media_id: &str) -> Result<MediaRef, ApiError> {
    let origin = parse_server(server)?;
    let id: MediaId = media_id
        .parse()
        .map_err(|_| ApiError::InvalidParam(format!("invalid media id {media_id:?}")))?;
    Ok(MediaRef::new(origin, id))
}

tokio::task_local! {
    /// The id the request middleware gave the request being served.
    pub static REQUEST_ID: RequestId;
}

/// A fresh random request id.
pub fn new_request_id() -> RequestId {
    RequestId(Alphanumeric.sample_string(&mut rand::rng(), 16))
}

/// The id of the request being served (also in its log lines and its `X-Request-Id`
/// header), recorded in its events; a fresh one outside a request.
pub fn request_id() -> RequestId {
    REQUEST_ID
        .try_with(Clone::clone)
        .unwrap_or_else(|_| new_request_id())
}

/// The homeserver the request is addressed to (by `Host`).
pub fn homeserver<'a>(state: &'a State, parts_host: Option<&str>) -> &'a HomeserverConfig {
    state.config.homeserver_for(parts_host)
}

/// The request's access token, from `Authorization: Bearer` or `access_token=`.
pub fn token(parts: &Parts) -> Result<Option<String>, ApiError> {
    if let Some(v) = parts.headers.get(header::AUTHORIZATION) {
        let v = v.to_str().map_err(|_| ApiError::UnknownToken)?;
        return match v.strip_prefix("Bearer ") {
            Some(t) if !t.trim().is_empty() => Ok(Some(t.trim().to_owned())),
            _ => Err(ApiError::UnknownToken),
        };
    }
    let q: HashMap<String, String> =
        serde_urlencoded::from_str(parts.uri.query().unwrap_or_default()).unwrap_or_default();
    Ok(q.get("access_token").filter(|t| !t.is_empty()).cloned())
}

/// The `user_id` query parameter: the user an appservice's token acts as (the homeserver's
/// whoami decides whether it may).
fn masquerade(parts: &Parts) -> Option<String> {
    let q: HashMap<String, String> =
        serde_urlencoded::from_str(parts.uri.query().unwrap_or_default()).unwrap_or_default();
    q.get("user_id").filter(|u| !u.is_empty()).cloned()
}

/// The host the request is for: what [`super::forwarded`] decided (a trusted proxy's
/// `X-Forwarded-Host`, else `Host`), or `Host` where that middleware did not run.
fn host(parts: &Parts) -> Option<String> {
    if let Some(info) = parts.extensions.get::<super::forwarded::ClientInfo>() {
        return info.host.clone();
    }
    parts
        .headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_owned)
}

/// Names the request's user in its span (so in its log lines).
fn record_user(principal: &Principal) {
    let span = tracing::Span::current();
    match principal {
        Principal::User(u) => span.record("user", tracing::field::display(u)),
        Principal::SharedSecretAdmin => {
            span.record("user", tracing::field::display("shared-secret-admin"))
        }
    };
}

/// The homeserver and principal of an authenticated request (`M_MISSING_TOKEN` without one).
/// A guest account is refused (403 `M_GUEST_ACCESS_FORBIDDEN`, as Synapse refuses guests
/// everywhere but the endpoints that allow them): where guests may come, take [`GuestOk`].
pub struct Authed {
    /// Who is asking.
    pub principal: Principal,
    /// For which homeserver.
    pub homeserver: HomeserverConfig,
    /// The access token (to ask the homeserver's admin API on the caller's behalf).
    pub token: String,
    /// The principal is an appservice's user resolved through `?user_id=`, not the token's
    /// own: never a repository or homeserver admin (a plain user's capacity).
    pub masqueraded: bool,
    /// The homeserver resolved the token ([`Authed::homeserver_token`]).
    via_homeserver: bool,
    /// The client's address ([`client_addr`]).
    pub client: Option<std::net::IpAddr>,
}

impl Authed {
    async fn extract(parts: &Parts, state: &State, allow_guest: bool) -> Result<Self, ApiError> {
        let hs = state.config.homeserver_for(host(parts).as_deref()).clone();
        let token = token(parts)?.ok_or(ApiError::MissingToken)?;
        let caller = state
            .auth
            .resolve_as(&hs, &token, masquerade(parts).as_deref())
            .await?;
        record_user(&caller.principal);
        if caller.guest && !allow_guest {
            return Err(ApiError::GuestAccessForbidden);
        }
        Ok(Authed {
            principal: caller.principal,
            homeserver: hs,
            token,
            masqueraded: caller.masqueraded,
            via_homeserver: caller.via_homeserver,
            client: client_addr(parts),
        })
    }

    /// The token, when the homeserver resolved it: only such a token is sent to the
    /// homeserver on the caller's behalf (never the shared secret or a static token).
    pub fn homeserver_token(&self) -> Option<&str> {
        self.via_homeserver.then_some(self.token.as_str())
    }

    /// Whether this is a repository admin (or the shared secret) in their own name.
    pub fn is_repository_admin(&self, state: &State) -> bool {
        !self.masqueraded && state.auth.is_admin(&self.principal)
    }

    /// Who is asking, as the rate limits see them.
    pub fn limited_as(&self, state: &State) -> crate::abuse::rate::Caller<'_> {
        crate::abuse::rate::Caller {
            user: self.principal.user(),
            admin: self.is_repository_admin(state),
            addr: self.client,
        }
    }
}

/// The client's address as [`super::forwarded`] decided it (the TCP peer, or a trusted
/// proxy's `X-Forwarded-For`).
pub fn client_addr(parts: &Parts) -> Option<std::net::IpAddr> {
    parts
        .extensions
        .get::<super::forwarded::ClientInfo>()
        .and_then(|i| i.client)
}

/// The client's address, for handlers without a token ([`client_addr`]).
pub struct ClientAddr(pub Option<std::net::IpAddr>);

impl<S: Send + Sync> FromRequestParts<S> for ClientAddr {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        Ok(ClientAddr(client_addr(parts)))
    }
}

impl FromRequestParts<State> for Authed {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &State) -> Result<Self, ApiError> {
        Authed::extract(parts, state, false).await
    }
}

/// An authenticated request where guest accounts are welcome too (downloads and thumbnails,
/// Synapse's `allow_guest=True`).
pub struct GuestOk(pub Authed);

impl FromRequestParts<State> for GuestOk {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &State) -> Result<Self, ApiError> {
        Authed::extract(parts, state, true).await.map(GuestOk)
    }
}

/// An authenticated repository admin (`M_FORBIDDEN` for anyone else, and for a principal an
/// appservice masquerades as: `?user_id=` never lends an admin's capacity).
pub struct Admin(pub Principal);

impl FromRequestParts<State> for Admin {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &State) -> Result<Self, ApiError> {
        let a = Authed::from_request_parts(parts, state).await?;
        if !a.masqueraded && state.auth.is_admin(&a.principal) {
            Ok(Admin(a.principal))
        } else {
            Err(ApiError::Forbidden(
                "only repository admins may use this endpoint".into(),
            ))
        }
    }
}

/// The homeserver a request is for, authenticated or not.
pub struct Homeserver(pub HomeserverConfig);

impl FromRequestParts<State> for Homeserver {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &State) -> Result<Self, ApiError> {
        Ok(Homeserver(
            state.config.homeserver_for(host(parts).as_deref()).clone(),
        ))
    }
}

/// Largest JSON body an admin route reads.
pub const MAX_SMALL_BODY: usize = 64 * 1024;

/// A small request body (the JSON of admin routes), at most [`MAX_SMALL_BODY`] bytes: a
/// larger one is `413 M_TOO_LARGE`, read no further.
pub struct SmallBody(pub axum::body::Bytes);

impl<S: Send + Sync> axum::extract::FromRequest<S> for SmallBody {
    type Rejection = ApiError;
    async fn from_request(req: axum::extract::Request, _: &S) -> Result<Self, ApiError> {
        use futures_util::StreamExt;
        let too_large = ApiError::TooLarge {
            limit_bytes: MAX_SMALL_BODY as u64,
        };
        let declared = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > MAX_SMALL_BODY as u64) {
            return Err(too_large);
        }
        let mut stream = req.into_body().into_data_stream();
        let mut buf = Vec::new();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(ApiError::body)?;
            if buf.len() + chunk.len() > MAX_SMALL_BODY {
                return Err(too_large);
            }
            buf.extend_from_slice(&chunk);
        }
        Ok(SmallBody(buf.into()))
    }
}

/// The principal of a request to a legacy (unauthenticated) endpoint: a valid access token
/// makes it authenticated; none, or one the homeserver does not know, is anonymous (as
/// matrix-media-repo treats them).
pub struct MaybeAuthed(pub Option<Principal>);

impl FromRequestParts<State> for MaybeAuthed {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &State) -> Result<Self, ApiError> {
        let Ok(Some(token)) = token(parts) else {
            return Ok(MaybeAuthed(None));
        };
        let hs = state.config.homeserver_for(host(parts).as_deref()).clone();
        let caller = state
            .auth
            .resolve_as(&hs, &token, masquerade(parts).as_deref())
            .await;
        let principal = caller.ok().map(|c| c.principal);
        if let Some(p) = &principal {
            record_user(p);
        }
        Ok(MaybeAuthed(principal))
    }
}

/// The request's token, to read a media of its homeserver through from it
/// (`read_through.rs`): `None` without a token, for the shared secret or a static token (never
/// sent to a homeserver), and for a read-through's own request (it carries
/// [`crate::read_through::LOOP_HEADER`]). Whether the token is valid is the principal's
/// extractor's business: this is used only beside a resolved principal.
pub struct ReadThroughToken(pub Option<String>);

impl FromRequestParts<State> for ReadThroughToken {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &State) -> Result<Self, ApiError> {
        if parts.headers.contains_key(crate::read_through::LOOP_HEADER) {
            return Ok(ReadThroughToken(None));
        }
        let token = token(parts).ok().flatten();
        Ok(ReadThroughToken(
            token.filter(|t| !state.auth.is_configured_token(t)),
        ))
    }
}

/// `{server}/{media_id}` path parameters as a [`MediaRef`] ([`media_ref`]: the strict server
/// name, the media id grammar); else `M_INVALID_PARAM`.
pub struct MediaPath(pub MediaRef);

impl<S: Send + Sync> FromRequestParts<S> for MediaPath {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let MPath((server, id)) =
            MPath::<(String, String)>::from_request_parts(parts, state).await?;
        media_ref(&server, &id).map(MediaPath)
    }
}

/// A `{server_name}` path parameter by the strict rule ([`parse_server`]); else
/// `M_INVALID_PARAM`.
pub struct ServerPath(pub ServerName);

impl<S: Send + Sync> FromRequestParts<S> for ServerPath {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let MPath(server) = MPath::<String>::from_request_parts(parts, state).await?;
        parse_server(&server).map(ServerPath)
    }
}

/// A `{user_id}` path parameter by the Matrix user id grammar; else `M_INVALID_PARAM`.
pub struct UserPath(pub UserId);

impl<S: Send + Sync> FromRequestParts<S> for UserPath {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let MPath(user) = MPath::<String>::from_request_parts(parts, state).await?;
        user.parse()
            .map(UserPath)
            .map_err(|_| ApiError::InvalidParam(format!("invalid user id {user:?}")))
    }
}

/// A `{room_id}` path parameter by the room id grammar ([`RoomId`]: `!opaque:server`, or room
/// version 12's `!` + 43 url-safe base64 characters); else `M_INVALID_PARAM`.
pub struct RoomPath(pub RoomId);

impl<S: Send + Sync> FromRequestParts<S> for RoomPath {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let MPath(room) = MPath::<String>::from_request_parts(parts, state).await?;
        room.parse()
            .map(RoomPath)
            .map_err(|_| ApiError::InvalidParam(format!("invalid room id {room:?}")))
    }
}
