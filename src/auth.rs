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
//! the request's principal (the uploader and actor recorded); such a masqueraded principal
//! ([`Caller::masqueraded`]) never has an admin's capacity. A plain user's token ignores
//! `user_id`, as Synapse does: once whoami answered it as its own user for another `user_id`,
//! it is cached under the token alone and answers every `user_id` (no whoami per `user_id`).
//! The cache is bounded ([`MAX_CACHED`], an amortised sweep).
//!
//! Logging out goes through here too ([`Auth::logout`]): the homeserver's
//! `POST /_matrix/client/{r0,v3}/logout[/all]` is asked with the caller's token; when the
//! homeserver logged it out (2xx) the cache forgets the token (or, for `logout/all`, every
//! token of its user), and a whoami answer for it that was on its way meanwhile is not cached;
//! when it refused the token (401) only that token is forgotten. Nothing else is touched.

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
    /// Resolved through `?user_id=` (an appservice acting as one of its users), not the
    /// token's own user: such a principal never has an admin's capacity.
    pub masqueraded: bool,
    /// The homeserver resolved the token (whoami), so it may be sent to that homeserver on
    /// the caller's behalf; never for the shared secret or a static token.
    pub via_homeserver: bool,
}

/// A token the homeserver knows, as whoami answered it.
#[derive(Clone)]
struct Cached {
    user: UserId,
    guest: bool,
    at: Instant,
}

/// What the cache knows of one token of one homeserver.
#[derive(Default)]
struct TokenEntry {
    /// whoami's answer without `user_id`, or with one it ignored.
    own: Option<Cached>,
    /// Whoami answered this token's own user for a `user_id` naming someone else: the token
    /// is no appservice's and ignores `user_id` (as Synapse does), so `own` answers every one.
    ignores_user_id: bool,
    /// An appservice's masquerades: `user_id` → whoami's answer.
    masquerades: HashMap<String, Cached>,
}

impl TokenEntry {
    fn len(&self) -> usize {
        usize::from(self.own.is_some()) + self.masquerades.len()
    }
}

/// Most answers the whoami cache holds: past it, an insert sweeps the expired ones and, if
/// still more than half full, drops tokens until half full (amortised: at most one sweep per
/// `MAX_CACHED / 2` inserts).
const MAX_CACHED: usize = 100_000;

/// How long a logged-out token (or a `logout/all` user) is remembered, so a whoami answer
/// asked before the logout (the whoami client times out after 10 s) is not cached after it;
/// at most [`MAX_CACHED`] of each are (past it, forgotten: a late answer may then be cached).
const LOGOUT_MEMORY: Duration = Duration::from_secs(60);

/// The whoami cache. Logouts evict only their own token's (or user's) entries, and remember
/// them a while so a whoami answer that raced the logout is not cached.
#[derive(Default)]
struct Cache {
    /// (homeserver, token) → whoami's answers.
    tokens: HashMap<(ServerName, String), TokenEntry>,
    /// Answers held (the entries of every token).
    len: usize,
    /// Tokens logged out lately (the homeserver said so).
    logged_out: HashMap<(ServerName, String), Instant>,
    /// Users logged out everywhere lately (`logout/all`).
    logged_out_users: HashMap<(ServerName, UserId), Instant>,
}

impl Cache {
    /// Frees room before an insert ([`MAX_CACHED`]).
    fn make_room(&mut self, ttl: Duration) {
        if self.len < MAX_CACHED {
            return;
        }
        for entry in self.tokens.values_mut() {
            entry.own = entry.own.take().filter(|c| c.at.elapsed() < ttl);
            entry.masquerades.retain(|_, c| c.at.elapsed() < ttl);
        }
        self.tokens.retain(|_, e| e.len() > 0);
        self.len = self.tokens.values().map(TokenEntry::len).sum();
        if self.len > MAX_CACHED / 2 {
            let mut drop = Vec::new();
            let mut left = self.len;
            for (key, entry) in &self.tokens {
                if left <= MAX_CACHED / 2 {
                    break;
                }
                left -= entry.len();
                drop.push(key.clone());
            }
            for key in drop {
                self.tokens.remove(&key);
            }
            self.len = left;
        }
    }

    /// Whether a whoami answer for `token` (standing for `user`) asked at `asked` may be
    /// cached: no logout of the token, nor of every session of the user, since.
    fn may_cache(&self, key: &(ServerName, String), user: &UserId, asked: Instant) -> bool {
        self.logged_out.get(key).is_none_or(|at| *at < asked)
            && self
                .logged_out_users
                .get(&(key.0.clone(), user.clone()))
                .is_none_or(|at| *at < asked)
    }

    /// Forgets every answer of `key`'s token.
    fn forget(&mut self, key: &(ServerName, String)) {
        if let Some(e) = self.tokens.remove(key) {
            self.len -= e.len();
        }
    }
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
            masqueraded: false,
            via_homeserver: false,
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
        let key = (hs.name.clone(), token.to_owned());
        let ttl = Duration::from_millis(self.config.auth.whoami_cache_ttl_ms);
        let fresh = |c: &Cached, masqueraded| {
            (c.at.elapsed() < ttl).then(|| Caller {
                principal: Principal::User(c.user.clone()),
                guest: c.guest,
                masqueraded,
                via_homeserver: true,
            })
        };
        {
            let cache = self.cache.lock();
            if let Some(entry) = cache.tokens.get(&key) {
                let hit = match as_user {
                    None => entry.own.as_ref().and_then(|c| fresh(c, false)),
                    Some(_) if entry.ignores_user_id => {
                        entry.own.as_ref().and_then(|c| fresh(c, false))
                    }
                    Some(u) => entry.masquerades.get(u).and_then(|c| fresh(c, true)),
                };
                if let Some(caller) = hit {
                    return Ok(caller);
                }
            }
        }
        let asked = Instant::now();
        let url = format!(
            "{}/_matrix/client/v3/account/whoami",
            cs_api.trim_end_matches('/')
        );
        let mut request = self.client.get(&url).bearer_auth(token);
        if let Some(user) = as_user {
            request = request.query(&[("user_id", user)]);
        }
        let resp = request
            .send()
            .await
            .map_err(|e| crate::homeserver_check::unreachable(&hs.name, &e))?;
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
                // Answered as the `user_id` asked: a masquerade (the homeserver let the
                // appservice act as that user). Answered as someone else: the token's own
                // user, `user_id` ignored (a plain token), cached as the token's own answer.
                let masquerade = as_user.filter(|u| *u == who.user_id.as_str());
                let cached = Cached {
                    user: who.user_id.clone(),
                    guest: who.is_guest,
                    at: Instant::now(),
                };
                let mut cache = self.cache.lock();
                if cache.may_cache(&key, &who.user_id, asked) {
                    cache.make_room(ttl);
                    let entry = cache.tokens.entry(key).or_default();
                    let before = entry.len();
                    match masquerade {
                        Some(u) => {
                            entry.masquerades.insert(u.to_owned(), cached);
                        }
                        None => {
                            entry.own = Some(cached);
                            entry.ignores_user_id |= as_user.is_some();
                        }
                    }
                    let after = entry.len();
                    cache.len = cache.len + after - before;
                }
                Ok(Caller {
                    principal: Principal::User(who.user_id),
                    guest: who.is_guest,
                    masqueraded: masquerade.is_some(),
                    via_homeserver: true,
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
    /// status and JSON. When it logged the token out, the token (for `all`: every cached token
    /// of the user the token stood for) is forgotten, so the next request asks whoami again.
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
        let resp = self
            .client
            .post(&url)
            .bearer_auth(token)
            .json(&serde_json::json!({}))
            .send()
            .await
            .map_err(|e| crate::homeserver_check::unreachable(&hs.name, &e))?;
        // Only a logout the homeserver did (2xx), or its refusal of this very token (401: it
        // is no session, or no longer), evicts, and only this token's (or user's) entries: a
        // stranger's garbage token evicts nothing of anyone else's.
        if resp.status().is_success() {
            self.evict(hs, token, user.as_ref(), true);
        } else if resp.status() == reqwest::StatusCode::UNAUTHORIZED {
            self.evict(hs, token, None, false);
        }
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
    pub fn is_configured_token(&self, token: &str) -> bool {
        let secret = &self.config.auth.shared_secret;
        (!secret.is_empty() && constant_time_eq(secret.as_bytes(), token.as_bytes()))
            || self
                .config
                .auth
                .static_tokens
                .iter()
                .any(|t| constant_time_eq(t.token.as_bytes(), token.as_bytes()))
    }

    /// Forgets `token` on `hs` and, with `user`, every cached token of that user there;
    /// `logged_out`: remembers the logout a while, so a whoami answer that raced it is not
    /// cached.
    fn evict(&self, hs: &HomeserverConfig, token: &str, user: Option<&UserId>, logged_out: bool) {
        let key = (hs.name.clone(), token.to_owned());
        let mut cache = self.cache.lock();
        cache.forget(&key);
        let now = Instant::now();
        if logged_out {
            if cache.logged_out.len() >= MAX_CACHED {
                cache
                    .logged_out
                    .retain(|_, at| at.elapsed() < LOGOUT_MEMORY);
                if cache.logged_out.len() >= MAX_CACHED / 2 {
                    cache.logged_out.clear();
                }
            }
            cache.logged_out.insert(key, now);
        }
        if let Some(u) = user {
            // A `logout/all` the homeserver did: every token of the user (a full scan, only
            // for a real session's `logout/all`).
            let gone: Vec<_> = cache
                .tokens
                .iter()
                .filter(|((server, _), e)| {
                    *server == hs.name
                        && (e.own.as_ref().is_some_and(|c| c.user == *u)
                            || e.masquerades.values().any(|c| c.user == *u))
                })
                .map(|(k, _)| k.clone())
                .collect();
            for k in gone {
                cache.forget(&k);
            }
            if cache.logged_out_users.len() >= MAX_CACHED {
                cache
                    .logged_out_users
                    .retain(|_, at| at.elapsed() < LOGOUT_MEMORY);
                if cache.logged_out_users.len() >= MAX_CACHED / 2 {
                    cache.logged_out_users.clear();
                }
            }
            cache
                .logged_out_users
                .insert((hs.name.clone(), u.clone()), now);
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
