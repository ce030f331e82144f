//! Access tokens → principals, and who is a repository admin.
//!
//! A token is, in order: the shared-secret admin token, a static token from config, or a token
//! the request's homeserver knows (`GET /_matrix/client/v3/account/whoami` on its `cs_api`,
//! cached for `auth.whoami_cache_ttl_ms`, with whoami's `is_guest`). Failed look-ups are not
//! cached; a token the homeserver refuses is answered with the homeserver's status, errcode
//! and `soft_logout` (an expired refreshable token stays a soft logout). Whichever way it
//! resolves, a token stands for a user of the request's homeserver: a whoami answer naming
//! another server is refused, and a static token is valid only on its user's homeserver
//! (a repository admin's on every homeserver).
//!
//! An appservice masquerading as one of its users (`?user_id=@ghost:hs` beside its `as_token`)
//! is resolved as the homeserver resolves it: whoami is asked with the same `user_id`, and
//! Synapse answers the masqueraded user when the appservice may act as them (else 403, passed
//! on). The answer is cached per (token, `user_id`), so the ghost, not the bridge bot, is
//! the request's principal (the uploader and actor recorded). A plain user's token ignores
//! `user_id`, as Synapse does.
//!
//! Logging out goes through here too ([`Auth::logout`]): the homeserver's
//! `POST /_matrix/client/{r0,v3}/logout[/all]` is asked with the caller's token, then the
//! cache forgets the token (or, for `logout/all`, every token of its user), and a whoami
//! answer that was on its way while the logout happened is not cached.

use crate::config::{Config, HomeserverConfig};
use crate::error::ApiError;
use media_ledger_events::{Actor, ServerName, UserId};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Who a request acts as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// A Matrix user.
    User(UserId),
    /// The shared-secret admin.
    SharedSecretAdmin,
}

impl Principal {
    /// The actor recorded in events.
    pub fn actor(&self) -> Actor {
        match self {
            Principal::User(u) => Actor::User(u.clone()),
            Principal::SharedSecretAdmin => Actor::SharedSecretAdmin,
        }
    }

    /// The user, if this is one.
    pub fn user(&self) -> Option<&UserId> {
        match self {
            Principal::User(u) => Some(u),
            Principal::SharedSecretAdmin => None,
        }
    }
}

/// A resolved token: who, and whether the homeserver calls them a guest (guests may
/// download, not upload or reserve: Synapse's `allow_guest`).
#[derive(Debug, Clone)]
pub struct Caller {
    /// Who is asking.
    pub principal: Principal,
    /// A guest account of the homeserver (whoami's `is_guest`).
    pub guest: bool,
}

/// A token the homeserver knows, as whoami answered it.
struct Cached {
    user: UserId,
    guest: bool,
    at: Instant,
}

/// The whoami cache, and how many logouts have evicted from it: a whoami answer is cached only
/// if no logout evicted while it was asked (it may have raced the logout).
#[derive(Default)]
struct Cache {
    /// (homeserver, token, masqueraded `user_id`) → whoami's answer.
    tokens: HashMap<(ServerName, String, Option<String>), Cached>,
    evictions: u64,
}

/// Resolves tokens.
pub struct Auth {
    config: Arc<Config>,
    client: reqwest::Client,
    cache: Mutex<Cache>,
}

/// The longest `user_id` (masquerading) query parameter passed on: Synapse's user id limit.
pub const MAX_USER_ID_LEN: usize = 255;

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[derive(serde::Deserialize)]
struct WhoAmI {
    user_id: UserId,
    #[serde(default)]
    is_guest: bool,
}

/// The homeserver's refusal of a token (401 or 403), passed on as it said it: its errcode
/// (when it looks like one), its message (bounded) and its `soft_logout`.
async fn refusal(resp: reqwest::Response) -> ApiError {
    let status = resp.status();
    let body =
        crate::federation::client::capped_json(resp, crate::federation::client::MAX_JSON_BYTES)
            .await
            .unwrap_or_default();
    let errcode = body["errcode"]
        .as_str()
        .filter(|c| {
            !c.is_empty()
                && c.len() <= 128
                && c.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.')
        })
        .unwrap_or("M_UNKNOWN_TOKEN");
    let message: String = body["error"]
        .as_str()
        .unwrap_or("unknown access token")
        .chars()
        .filter(|c| !c.is_control())
        .take(512)
        .collect();
    ApiError::TokenRefused {
        status,
        errcode: errcode.to_owned(),
        message,
        soft_logout: body["soft_logout"].as_bool(),
    }
}

impl Auth {
    /// Builds the resolver.
    pub fn new(config: Arc<Config>) -> Self {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap_or_default();
        Self {
            config,
            client,
            cache: Mutex::new(Cache::default()),
        }
    }

    /// The principal of `token` on homeserver `hs`.
    pub async fn resolve(&self, hs: &HomeserverConfig, token: &str) -> Result<Principal, ApiError> {
        self.resolve_caller(hs, token).await.map(|c| c.principal)
    }

    /// The principal of `token` on homeserver `hs`, and whether it is a guest.
    pub async fn resolve_caller(
        &self,
        hs: &HomeserverConfig,
        token: &str,
    ) -> Result<Caller, ApiError> {
        self.resolve_as(hs, token, None).await
    }

    /// The principal of `token` on homeserver `hs` with the request's `user_id` query
    /// parameter (an appservice's masquerading, [`MAX_USER_ID_LEN`] bytes at most): whoami is
    /// asked with it, so the homeserver decides whether the token may act as that user. A
    /// configured token (shared secret, static token) ignores it.
    pub async fn resolve_as(
        &self,
        hs: &HomeserverConfig,
        token: &str,
        as_user: Option<&str>,
    ) -> Result<Caller, ApiError> {
        if as_user.is_some_and(|u| u.len() > MAX_USER_ID_LEN) {
            return Err(ApiError::InvalidParam(format!(
                "user_id longer than {MAX_USER_ID_LEN} bytes"
            )));
        }
        let member = |principal| Caller {
            principal,
            guest: false,
        };
        let secret = &self.config.auth.shared_secret;
        if !secret.is_empty() && constant_time_eq(secret.as_bytes(), token.as_bytes()) {
            return Ok(member(Principal::SharedSecretAdmin));
        }
        if let Some(t) = self
            .config
            .auth
            .static_tokens
            .iter()
            .find(|t| constant_time_eq(t.token.as_bytes(), token.as_bytes()))
        {
            // Like a whoami answer, a static token stands for a user of the request's
            // homeserver only (repository admins act on every homeserver, as the shared
            // secret does). Refused here, it is never sent on to this homeserver's whoami:
            // it is another homeserver's secret.
            if self.static_token_valid_on(&t.user_id, hs) {
                return Ok(member(Principal::User(t.user_id.clone())));
            }
            tracing::warn!(homeserver = %hs.name, user_id = %t.user_id, "static token of a user of another server; token refused");
            return Err(ApiError::UnknownToken);
        }
        let Some(cs_api) = &hs.cs_api else {
            // Said once at WARN at start-up (`homeserver_check`).
            tracing::debug!(homeserver = %hs.name, "token refused: not a static token, and this homeserver has no cs_api to ask");
            return Err(ApiError::UnknownToken);
        };
        let key = (
            hs.name.clone(),
            token.to_owned(),
            as_user.map(str::to_owned),
        );
        let ttl = Duration::from_millis(self.config.auth.whoami_cache_ttl_ms);
        let evictions = {
            let cache = self.cache.lock();
            if let Some(c) = cache.tokens.get(&key) {
                if c.at.elapsed() < ttl {
                    return Ok(Caller {
                        principal: Principal::User(c.user.clone()),
                        guest: c.guest,
                    });
                }
            }
            cache.evictions
        };
        let url = format!(
            "{}/_matrix/client/v3/account/whoami",
            cs_api.trim_end_matches('/')
        );
        let mut request = self.client.get(&url).bearer_auth(token);
        if let Some(user) = as_user {
            request = request.query(&[("user_id", user)]);
        }
        let resp = request.send().await.map_err(|e| {
            ApiError::unavailable(
                "the homeserver cannot be reached",
                format_args!(
                    "homeserver {} unreachable: {}",
                    hs.name,
                    crate::homeserver_check::error_chain(&e)
                ),
            )
        })?;
        match resp.status().as_u16() {
            200 => {
                let who: WhoAmI = resp.json().await.map_err(|e| {
                    ApiError::unavailable(
                        "the homeserver answered whoami badly",
                        format_args!("homeserver {} whoami: {e}", hs.name),
                    )
                })?;
                if !who
                    .user_id
                    .server_name()
                    .eq_ignore_ascii_case(hs.name.as_str())
                {
                    tracing::warn!(
                        "{}",
                        crate::homeserver_check::name_mismatch(
                            hs,
                            who.user_id.as_str(),
                            who.user_id.server_name()
                        )
                    );
                    return Err(ApiError::UnknownToken);
                }
                let mut cache = self.cache.lock();
                if cache.evictions == evictions {
                    if cache.tokens.len() > 100_000 {
                        cache.tokens.retain(|_, c| c.at.elapsed() < ttl);
                    }
                    cache.tokens.insert(
                        key,
                        Cached {
                            user: who.user_id.clone(),
                            guest: who.is_guest,
                            at: Instant::now(),
                        },
                    );
                }
                Ok(Caller {
                    principal: Principal::User(who.user_id),
                    guest: who.is_guest,
                })
            }
            401 | 403 => Err(refusal(resp).await),
            s => Err(ApiError::unavailable(
                "the homeserver answered whoami badly",
                format_args!("homeserver {} whoami answered {s}", hs.name),
            )),
        }
    }

    /// Logs `token` out at homeserver `hs` (`all`: every session of its user), asking its
    /// `POST /_matrix/client/{version}/logout[/all]` with the token; answers the homeserver's
    /// status and JSON. Whatever it answers, the token (for `all`: every cached token of the
    /// user the token stood for) is forgotten, so the next request asks whoami again.
    pub async fn logout(
        &self,
        hs: &HomeserverConfig,
        token: &str,
        version: &str,
        all: bool,
    ) -> Result<(reqwest::StatusCode, serde_json::Value), ApiError> {
        if self.is_configured_token(token) {
            // Never sent to a homeserver: it is ours (or another homeserver's user's).
            return Err(ApiError::Forbidden(
                "a configured token (shared secret, static token) cannot be logged out".into(),
            ));
        }
        let Some(cs_api) = &hs.cs_api else {
            return Err(ApiError::NotFound(format!(
                "homeserver {} has no cs_api: log out at the homeserver",
                hs.name
            )));
        };
        // The user of a `logout/all`, learnt before the homeserver forgets the token.
        let user = if all {
            match self.resolve(hs, token).await {
                Ok(Principal::User(u)) => Some(u),
                _ => None,
            }
        } else {
            None
        };
        let url = format!(
            "{}/_matrix/client/{version}/logout{}",
            cs_api.trim_end_matches('/'),
            if all { "/all" } else { "" }
        );
        let sent = self
            .client
            .post(&url)
            .bearer_auth(token)
            .json(&serde_json::json!({}))
            .send()
            .await;
        // Evict after the homeserver acted (or failed to): a whoami asked before this point
        // finds its answer refused by the eviction count, one asked after sees the logout.
        self.evict(hs, token, user.as_ref());
        let resp = sent.map_err(|e| {
            ApiError::unavailable(
                "the homeserver cannot be reached",
                format_args!("homeserver {} unreachable: {e}", hs.name),
            )
        })?;
        let status = resp.status();
        let body =
            crate::federation::client::capped_json(resp, crate::federation::client::MAX_JSON_BYTES)
                .await
                .map_err(|e| {
                    ApiError::bad_gateway(
                        "the homeserver answered the logout badly",
                        format_args!("homeserver {} logout answered {status}: {e}", hs.name),
                    )
                })?;
        Ok((status, body))
    }

    /// Whether `token` is the shared secret or a static token of the config.
    fn is_configured_token(&self, token: &str) -> bool {
        let secret = &self.config.auth.shared_secret;
        (!secret.is_empty() && constant_time_eq(secret.as_bytes(), token.as_bytes()))
            || self
                .config
                .auth
                .static_tokens
                .iter()
                .any(|t| constant_time_eq(t.token.as_bytes(), token.as_bytes()))
    }

    /// Forgets `token` on `hs` and, with `user`, every cached token of that user there.
    fn evict(&self, hs: &HomeserverConfig, token: &str, user: Option<&UserId>) {
        let mut cache = self.cache.lock();
        cache.evictions += 1;
        // Every entry of the token (each masqueraded user_id), and with `user` every one of
        // that user.
        cache.tokens.retain(|(server, t, _), c| {
            !(*server == hs.name && (t == token || user.is_some_and(|u| c.user == *u)))
        });
    }

    /// Whether a static token standing for `user` authenticates on homeserver `hs`: the
    /// user's server is `hs`, or the user is a repository admin.
    fn static_token_valid_on(&self, user: &UserId, hs: &HomeserverConfig) -> bool {
        user.server_name().eq_ignore_ascii_case(hs.name.as_str())
            || self.config.auth.admins.contains(user)
    }

    /// Whether `token` is one the homeserver resolves (neither the shared secret nor a static
    /// token): only such a token is sent on to the homeserver to read media through.
    pub fn is_homeserver_token(&self, token: &str) -> bool {
        let secret = &self.config.auth.shared_secret;
        (secret.is_empty() || !constant_time_eq(secret.as_bytes(), token.as_bytes()))
            && !self
                .config
                .auth
                .static_tokens
                .iter()
                .any(|t| constant_time_eq(t.token.as_bytes(), token.as_bytes()))
    }

    /// Whether `p` may use the admin API.
    pub fn is_admin(&self, p: &Principal) -> bool {
        match p {
            Principal::SharedSecretAdmin => true,
            Principal::User(u) => self.config.auth.admins.contains(u),
        }
    }
}
