//! `POST /_matrix/client/{r0,v3}/logout` and `logout/all`, proxied to the request's homeserver
//! (as matrix-media-repo offers): the homeserver logs the token out, and the whoami cache
//! forgets it at once instead of honouring it until `auth.whoami_cache_ttl_ms` runs out. Route
//! these two paths to media-ledger in front of the homeserver.

use super::extract::{token, Homeserver, MPath};
use super::State;
use crate::error::ApiError;
use axum::extract::{FromRequestParts, State as S};
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use axum::Json;

/// The request's access token (`M_MISSING_TOKEN` without one).
pub struct Token(pub String);

impl<St: Send + Sync> FromRequestParts<St> for Token {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, _: &St) -> Result<Self, ApiError> {
        token(parts)?.ok_or(ApiError::MissingToken).map(Token)
    }
}

/// The client API versions the homeserver serves logout on.
fn version(v: &str) -> Result<&str, ApiError> {
    match v {
        "r0" | "v3" => Ok(v),
        _ => Err(ApiError::Unrecognized),
    }
}

async fn proxy(
    state: &State,
    hs: &Homeserver,
    token: &str,
    v: &str,
    all: bool,
) -> Result<Response, ApiError> {
    let (status, body) = state.auth.logout(&hs.0, token, version(v)?, all).await?;
    Ok((status, Json(body)).into_response())
}

/// `POST /_matrix/client/{version}/logout`: the homeserver's answer, passed on.
pub async fn logout(
    S(state): S<State>,
    hs: Homeserver,
    MPath(v): MPath<String>,
    Token(token): Token,
) -> Result<Response, ApiError> {
    proxy(&state, &hs, &token, &v, false).await
}

/// `POST /_matrix/client/{version}/logout/all`: the homeserver's answer, passed on; every
/// cached token of the user is forgotten.
pub async fn logout_all(
    S(state): S<State>,
    hs: Homeserver,
    MPath(v): MPath<String>,
    Token(token): Token,
) -> Result<Response, ApiError> {
    proxy(&state, &hs, &token, &v, true).await
}
