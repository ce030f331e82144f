//! Extractors of the moderation routes: [`Moderator`] (who is asking, in which capacity, and
//! what that grants them for the route) and [`ActInput`] (the query and the small JSON body,
//! from which the act's reason comes). The decisions are `moderation::policy`'s and
//! `moderation::scope`'s; these only resolve and hand them over.
//!
//! Order of refusals (handler arguments: `Moderator`, typed path extractors, `ActInput`): no
//! or unknown token (401), then a caller the route is not for (403: nothing of their input is
//! judged, nor the body read), then malformed path parameters, query or body (400, 413), then
//! what needs the named media or server (404, 403 for another server's).

use super::extract::{request_id, Authed, MQuery, SmallBody};
use super::State;
use crate::error::ApiError;
use crate::moderation::policy::{self, Capacity};
use crate::moderation::scope::Scope;
use crate::moderation::Act;
use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use media_ledger_events::{Actor, Authority, MediaRef, RequestId, ServerName, UserId};
use serde::Deserialize;
use serde_json::Value;

/// Longest reason kept with an act.
const MAX_REASON: usize = 1000;

/// What a moderation route requires of its caller, and what it grants them.
pub trait Requirement: Send + Sync + 'static {
    /// What a caller who qualifies gets (an authority to act in, a scope to read).
    type Grant: Send + Sync;
    /// Decides for the caller's capacity (403 for one who does not qualify).
    fn grant(cap: &Capacity) -> Result<Self::Grant, ApiError>;
}

/// The requirements of the moderation routes.
pub mod need {
    use super::*;

    /// Repository admins and admins of the request's homeserver, acting in that authority.
    pub struct Admin;
    /// Repository admins only (acts across every origin).
    pub struct Repository;
    /// Readers of the moderation record (repository or homeserver admins), in their scope.
    pub struct Reader;
    /// Any authenticated caller; the handler decides with the media at hand.
    pub struct Anyone;

    impl Requirement for Admin {
        type Grant = Authority;
        fn grant(cap: &Capacity) -> Result<Authority, ApiError> {
            policy::admin_authority(cap)
        }
    }

    impl Requirement for Repository {
        type Grant = Authority;
        fn grant(cap: &Capacity) -> Result<Authority, ApiError> {
            policy::repository_authority(cap)
        }
    }

    impl Requirement for Reader {
        type Grant = Scope;
        fn grant(cap: &Capacity) -> Result<Scope, ApiError> {
            Scope::of(cap)
        }
    }

    impl Requirement for Anyone {
        type Grant = ();
        fn grant(_: &Capacity) -> Result<(), ApiError> {
            Ok(())
        }
    }
}

/// An authenticated caller of a moderation route, with their capacity on the request's
/// homeserver (its admin API asked when `quarantine.allow_local_admins` is set) and what the
/// route's [`Requirement`] grants them. `M_MISSING_TOKEN`/`M_UNKNOWN_TOKEN` without a valid
/// token, `M_FORBIDDEN` when the requirement refuses.
pub struct Moderator<R: Requirement> {
    /// What the route's requirement grants.
    pub grant: R::Grant,
    /// The caller's capacity.
    pub capacity: Capacity,
    /// Who is asking, for which homeserver, with which token.
    pub caller: Authed,
    /// The request (recorded with the act).
    pub request_id: RequestId,
}

impl<R: Requirement> FromRequestParts<State> for Moderator<R> {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &State) -> Result<Self, ApiError> {
        let caller = Authed::from_request_parts(parts, state).await?;
        // A principal an appservice masquerades as (`?user_id=`) is a plain user here.
        let capacity = if caller.masqueraded {
            Capacity::User
        } else {
            policy::capacity(
                &state.auth,
                state.config.quarantine.allow_local_admins,
                &state.moderation.homeserver,
                &caller.principal,
                &caller.homeserver,
                &caller.token,
            )
            .await?
        };
        let grant = R::grant(&capacity)?;
        Ok(Moderator {
            grant,
            capacity,
            caller,
            request_id: request_id(),
        })
    }
}

impl<R: Requirement> Moderator<R> {
    /// The actor recorded in the events.
    /// Before an act on `media` of the request's homeserver that media-ledger has no record
    /// of: reads it through from the homeserver (it stored the media itself, before the
    /// switch), with the caller's token when the homeserver resolved it, so the act reaches
    /// bytes the next download would otherwise read through and serve. A media the
    /// homeserver does not have either stays unknown (the act then changes nothing).
    pub async fn read_through_first(&self, state: &State, media: &MediaRef) {
        let Some(token) = self.caller.homeserver_token() else {
            return;
        };
        if media.origin != self.caller.homeserver.name {
            return;
        }
        if let Err(e) = state
            .reader
            .resolve(
                media,
                std::time::Duration::ZERO,
                true,
                self.actor(),
                &self.caller.homeserver.name,
                Some(token),
            )
            .await
        {
            tracing::debug!(%media, error = %e, "no read-through before the act");
        }
    }

    pub fn actor(&self) -> Actor {
        self.caller.principal.actor()
    }

    /// The caller's Matrix user, if they are one.
    pub fn user(&self) -> Option<&UserId> {
        self.caller.principal.user()
    }

    /// The act of this caller in `authority`, for `reason`.
    pub fn act_as(&self, authority: Authority, reason: Option<String>) -> Act {
        Act {
            actor: self.actor(),
            request_id: self.request_id.clone(),
            authority,
            reason,
        }
    }
}

impl<R: Requirement<Grant = Authority>> Moderator<R> {
    /// The authority the caller acts in.
    pub fn authority(&self) -> &Authority {
        &self.grant
    }

    /// The one origin the caller's acts are limited to (`None`: every origin).
    pub fn scope(&self) -> Option<&ServerName> {
        self.grant.origin()
    }

    /// A homeserver admin may only name their own server (403).
    pub fn own_server(&self, server: &str) -> Result<(), ApiError> {
        policy::own_server(&self.grant, server)
    }

    /// The caller's act in their authority, for `reason`.
    pub fn act(&self, reason: Option<String>) -> Act {
        self.act_as(self.grant.clone(), reason)
    }
}

impl Moderator<need::Reader> {
    /// The reader's scope.
    pub fn read_scope(&self) -> &Scope {
        &self.grant
    }
}

/// Query parameters of the moderation routes.
#[derive(Deserialize, Default)]
pub struct ModQuery {
    /// The act's reason (before the body's).
    pub reason: Option<String>,
    /// Media created (or last accessed) before this time, ms.
    pub before_ts: Option<u64>,
    /// `purge/old` includes local media.
    pub include_local: Option<bool>,
    /// `purge/old`: only media larger than this many bytes (Synapse's `size_gt`).
    pub size_gt: Option<u64>,
}

/// The query (`M_INVALID_PARAM` when malformed) and the small JSON body (at most 64 KiB,
/// `413 M_TOO_LARGE` past it) of a moderation route. The body is read once and kept: the
/// reason and a route's own fields (`purpose`) are parsed from the same bytes.
pub struct ActInput {
    /// The query.
    pub query: ModQuery,
    body: Bytes,
}

impl<S: Send + Sync> FromRequest<S> for ActInput {
    type Rejection = ApiError;
    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let (mut parts, body) = req.into_parts();
        let MQuery(query) = MQuery::<ModQuery>::from_request_parts(&mut parts, state).await?;
        let SmallBody(body) =
            SmallBody::from_request(Request::from_parts(parts, body), state).await?;
        Ok(ActInput { query, body })
    }
}

impl ActInput {
    /// The body as JSON (`M_NOT_JSON` if it is not).
    pub fn json(&self) -> Result<Value, ApiError> {
        serde_json::from_slice(&self.body)
            .map_err(|e| ApiError::NotJson(format!("body is not JSON: {e}")))
    }

    /// The reason: `?reason=`, else the JSON body's `reason` (an empty or blank body has
    /// none); `M_NOT_JSON` for a body that is not JSON, `M_INVALID_PARAM` for a reason that is
    /// not a string or is longer than 1000 bytes. An empty reason is none.
    pub fn reason(&self) -> Result<Option<String>, ApiError> {
        let from_body = if self.body.iter().all(u8::is_ascii_whitespace) {
            None
        } else {
            match self.json()?.get("reason") {
                None | Some(Value::Null) => None,
                Some(Value::String(s)) => Some(s.clone()),
                Some(_) => return Err(ApiError::InvalidParam("reason must be a string".into())),
            }
        };
        let r = self.query.reason.clone().or(from_body);
        if r.as_ref().is_some_and(|r| r.len() > MAX_REASON) {
            return Err(ApiError::InvalidParam(format!(
                "reason is longer than {MAX_REASON} bytes"
            )));
        }
        Ok(r.filter(|r| !r.is_empty()))
    }

    /// `before_ts`, else now.
    pub fn before_or_now(&self) -> u64 {
        self.query.before_ts.unwrap_or_else(crate::clock::now_ms)
    }
}
