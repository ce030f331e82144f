//! The homeserver's admin API, as Synapse exposes it: whether a user is a server admin
//! (`GET /_synapse/admin/v1/users/{userId}/admin`), which media a room holds
//! (`GET /_synapse/admin/v1/room/{roomId}/media`) and the users' avatars
//! (`GET /_synapse/admin/v2/users`, for `keep_profiles`). All are called with the caller's own
//! token, so the homeserver decides what the caller may see.

use crate::config::HomeserverConfig;
use crate::error::ApiError;
use media_ledger_events::UserId;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// (homeserver, token, user asked about): what an admin answer is cached under.
type AdminKey = (String, String, String);

/// Calls a homeserver's admin API.
pub struct HomeserverAdmin {
    client: reqwest::Client,
    ttl: Duration,
    cache: Mutex<HashMap<AdminKey, (bool, Instant)>>,
}

/// The media of a room, as the homeserver lists it.
#[derive(Debug, Default, serde::Deserialize)]
pub struct RoomMedia {
    /// `mxc://` URIs of media uploaded to this homeserver.
    #[serde(default)]
    pub local: Vec<String>,
    /// `mxc://` URIs of media of other servers.
    #[serde(default)]
    pub remote: Vec<String>,
}

/// One page of `GET /_synapse/admin/v2/users`.
#[derive(serde::Deserialize)]
struct UsersPage {
    #[serde(default)]
    users: Vec<UserEntry>,
    next_token: Option<serde_json::Value>,
}

#[derive(serde::Deserialize)]
struct UserEntry {
    avatar_url: Option<String>,
}

/// Most pages of users read for one avatar listing (at 500 a page: a million users).
const MAX_USER_PAGES: usize = 2_000;

#[derive(serde::Deserialize)]
struct IsAdmin {
    admin: bool,
}

impl HomeserverAdmin {
    /// Builds the client; an admin answer is trusted for `ttl`.
    pub fn new(ttl: Duration) -> Self {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap_or_default();
        Self {
            client,
            ttl,
            cache: Mutex::new(HashMap::new()),
        }
    }

    fn url(hs: &HomeserverConfig, segments: &[&str]) -> Result<reqwest::Url, ApiError> {
        let base = hs.cs_api.as_deref().ok_or_else(|| {
            ApiError::Forbidden(format!(
                "homeserver {} has no cs_api configured: its admin API cannot be asked",
                hs.name
            ))
        })?;
        let mut url = reqwest::Url::parse(base).map_err(ApiError::internal)?;
        url.path_segments_mut()
            .map_err(|_| ApiError::Internal("cs_api cannot be a base URL".into()))?
            .pop_if_empty()
            .extend(segments);
        Ok(url)
    }

    /// Whether `user` is an admin of `hs`, as `hs` says when asked with `token` (cached per
    /// homeserver, token and user: one token's answer about one user says nothing of another).
    pub async fn is_admin(
        &self,
        hs: &HomeserverConfig,
        token: &str,
        user: &UserId,
    ) -> Result<bool, ApiError> {
        if hs.cs_api.is_none() {
            return Ok(false);
        }
        let key = (
            hs.name.to_string(),
            token.to_owned(),
            user.as_str().to_owned(),
        );
        if let Some((admin, at)) = self.cache.lock().get(&key) {
            if at.elapsed() < self.ttl {
                return Ok(*admin);
            }
        }
        let url = Self::url(
            hs,
            &["_synapse", "admin", "v1", "users", user.as_str(), "admin"],
        )?;
        let resp = self
            .client
            .get(url)
            .bearer_auth(token)
            .send()
            .await
            .map_err(|e| crate::homeserver_check::unreachable(&hs.name, &e))?;
        let admin = match resp.status().as_u16() {
            200 => {
                resp.json::<IsAdmin>()
                    .await
                    .map_err(|e| {
                        ApiError::unavailable(
                            "the homeserver answered the admin check badly",
                            format_args!("homeserver {} admin check: {e}", hs.name),
                        )
                    })?
                    .admin
            }
            401 | 403 | 404 => false,
            s => {
                return Err(ApiError::unavailable(
                    "the homeserver answered the admin check badly",
                    format_args!("homeserver {} admin check answered {s}", hs.name),
                ))
            }
        };
        let mut cache = self.cache.lock();
        if cache.len() > 10_000 {
            let ttl = self.ttl;
            cache.retain(|_, (_, at)| at.elapsed() < ttl);
            if cache.len() > 5_000 {
                // Still full of fresh answers: start over rather than scan on every insert.
                cache.clear();
            }
        }
        cache.insert(key, (admin, Instant::now()));
        Ok(admin)
    }

    /// The media of `room`, asked of `hs` with the caller's `token`.
    pub async fn room_media(
        &self,
        hs: &HomeserverConfig,
        token: &str,
        room: &str,
    ) -> Result<RoomMedia, ApiError> {
        let url = Self::url(hs, &["_synapse", "admin", "v1", "room", room, "media"])?;
        let resp = self
            .client
            .get(url)
            .bearer_auth(token)
            .send()
            .await
            .map_err(|e| crate::homeserver_check::unreachable(&hs.name, &e))?;
        match resp.status().as_u16() {
            200 => resp.json().await.map_err(|e| {
                ApiError::bad_gateway(
                    "the homeserver answered the room media request badly",
                    format_args!("homeserver {} room media: {e}", hs.name),
                )
            }),
            401 | 403 => Err(ApiError::Forbidden(
                "the homeserver refused to list this room's media for you".into(),
            )),
            404 => Err(ApiError::NotFound(
                "room not known to the homeserver".into(),
            )),
            s => Err(ApiError::bad_gateway(
                "the homeserver answered the room media request badly",
                format_args!("homeserver {} room media answered {s}", hs.name),
            )),
        }
    }

    /// The avatars (`mxc://` URIs) of every user of `hs`, deactivated ones included, as its
    /// `GET /_synapse/admin/v2/users` lists them to the caller's `token`.
    pub async fn profile_avatars(
        &self,
        hs: &HomeserverConfig,
        token: &str,
    ) -> Result<Vec<String>, ApiError> {
        let mut avatars = Vec::new();
        let mut from = String::from("0");
        for _ in 0..MAX_USER_PAGES {
            let mut url = Self::url(hs, &["_synapse", "admin", "v2", "users"])?;
            url.query_pairs_mut()
                .append_pair("from", &from)
                .append_pair("limit", "500")
                .append_pair("guests", "true")
                .append_pair("deactivated", "true");
            let resp = self
                .client
                .get(url)
                .bearer_auth(token)
                .send()
                .await
                .map_err(|e| crate::homeserver_check::unreachable(&hs.name, &e))?;
            let page: UsersPage =
                match resp.status().as_u16() {
                    200 => resp.json().await.map_err(|e| {
                        ApiError::bad_gateway(
                            "the homeserver answered the user listing badly",
                            format_args!("homeserver {} users: {e}", hs.name),
                        )
                    })?,
                    401 | 403 => return Err(ApiError::Forbidden(
                        "keep_profiles needs the homeserver's user list (its admin API refused \
                         your token): ask as an admin of the homeserver, or pass \
                         keep_profiles=false"
                            .into(),
                    )),
                    s => {
                        return Err(ApiError::bad_gateway(
                            "the homeserver answered the user listing badly",
                            format_args!("homeserver {} users answered {s}", hs.name),
                        ))
                    }
                };
            avatars.extend(page.users.into_iter().filter_map(|u| u.avatar_url));
            match page.next_token {
                Some(serde_json::Value::String(t)) => from = t,
                Some(serde_json::Value::Number(n)) => from = n.to_string(),
                _ => return Ok(avatars),
            }
        }
        Err(ApiError::bad_gateway(
            "the homeserver answered the user listing badly",
            format_args!(
                "homeserver {} users: more than {MAX_USER_PAGES} pages",
                hs.name
            ),
        ))
    }
}
