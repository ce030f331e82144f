//! Access tokens → principals, and who is a repository admin.
//!
//! A token is, in order: the shared-secret admin token, a static token from config, or a token
//! the request's homeserver knows (`GET /_matrix/client/v3/account/whoami` on its `cs_api`,
//! cached for `auth.whoami_cache_ttl_ms`). Failed look-ups are not cached. Whichever way it
//! resolves, a token stands for a user of the request's homeserver: a whoami answer naming
//! another server is refused, and a static token is valid only on its user's homeserver
//! (a repository admin's on every homeserver).

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

/// Resolves tokens.
pub struct Auth {
    config: Arc<Config>,
    client: reqwest::Client,
    cache: Mutex<HashMap<(ServerName, String), (UserId, Instant)>>,
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[derive(serde::Deserialize)]
struct WhoAmI {
    user_id: UserId,
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
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// The principal of `token` on homeserver `hs`.
    pub async fn resolve(&self, hs: &HomeserverConfig, token: &str) -> Result<Principal, ApiError> {
        let secret = &self.config.auth.shared_secret;
        if !secret.is_empty() && constant_time_eq(secret.as_bytes(), token.as_bytes()) {
            return Ok(Principal::SharedSecretAdmin);
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
                return Ok(Principal::User(t.user_id.clone()));
            }
            tracing::warn!(homeserver = %hs.name, user_id = %t.user_id, "static token of a user of another server; token refused");
            return Err(ApiError::UnknownToken);
        }
        let Some(cs_api) = &hs.cs_api else {
            // Said once at WARN at start-up (`homeserver_check`).
            tracing::debug!(homeserver = %hs.name, "token refused: not a static token, and this homeserver has no cs_api to ask");
            return Err(ApiError::UnknownToken);
        };
        let key = (hs.name.clone(), token.to_owned());
        let ttl = Duration::from_millis(self.config.auth.whoami_cache_ttl_ms);
        if let Some((user, at)) = self.cache.lock().get(&key) {
            if at.elapsed() < ttl {
                return Ok(Principal::User(user.clone()));
            }
        }
        let url = format!(
            "{}/_matrix/client/v3/account/whoami",
            cs_api.trim_end_matches('/')
        );
        let resp = self
            .client
            .get(&url)
            .bearer_auth(token)
            .send()
            .await
            .map_err(|e| {
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
                if cache.len() > 100_000 {
                    cache.retain(|_, (_, at)| at.elapsed() < ttl);
                }
                cache.insert(key, (who.user_id.clone(), Instant::now()));
                Ok(Principal::User(who.user_id))
            }
            401 | 403 => Err(ApiError::UnknownToken),
            s => Err(ApiError::unavailable(
                "the homeserver answered whoami badly",
                format_args!("homeserver {} whoami answered {s}", hs.name),
            )),
        }
    }

    /// Whether a static token standing for `user` authenticates on homeserver `hs`: the
    /// user's server is `hs`, or the user is a repository admin.
    fn static_token_valid_on(&self, user: &UserId, hs: &HomeserverConfig) -> bool {
        user.server_name().eq_ignore_ascii_case(hs.name.as_str())
            || self.config.auth.admins.contains(user)
    }

    /// Whether `p` may use the admin API.
    pub fn is_admin(&self, p: &Principal) -> bool {
        match p {
            Principal::SharedSecretAdmin => true,
            Principal::User(u) => self.config.auth.admins.contains(u),
        }
    }
}
