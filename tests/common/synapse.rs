//! A fake Synapse admin API for the moderation tests, served by axum on 127.0.0.1:0:
//!
//! - `GET /_synapse/admin/v1/users/{userId}/admin` → `{"admin": bool}`; like Synapse, the
//!   caller must be an admin itself (401 for an unknown token, 403 for a non-admin caller).
//! - `GET /_synapse/admin/v1/room/{roomId}/media` → `{"local": [..], "remote": [..]}` as set
//!   by [`FakeSynapse::set_room_media`]; admins only; 404 for a room never set.
//! - `GET /_synapse/admin/v2/users?from&limit` → `{"users": [{"name", "avatar_url"}], "total"}`
//!   and `next_token` (a string, as Synapse's) while more follow; admins only; avatars as set
//!   by [`FakeSynapse::set_avatar`].
//! - `GET /_matrix/client/v3/account/whoami` → `{"user_id", "is_guest", "device_id"}` for
//!   every known token (only needed for tokens that are not static tokens of the media-ledger
//!   config). Like Synapse 1.163, an unknown token is 401 `M_UNKNOWN_TOKEN` with
//!   `"soft_logout": false`, an expired one ([`FakeSynapse::expire`]) 401 `M_UNKNOWN_TOKEN`
//!   "Access token has expired" with `"soft_logout": true`; guests ([`FakeSynapse::add_guest`])
//!   answer `"is_guest": true` and are refused by the admin API (403
//!   `M_GUEST_ACCESS_FORBIDDEN`).
//! - Appservices ([`FakeSynapse::add_appservice`]): whoami with the `as_token` answers the
//!   sender, or with `?user_id=` the user it masquerades as, checked as Synapse 1.163's
//!   `validate_appservice_can_control_user_id` does: the sender itself, else a user of the
//!   namespace (here a user id prefix) that is registered ([`FakeSynapse::register`]); else 403
//!   `M_FORBIDDEN` ("Application service cannot masquerade as this user (…)." / "Application
//!   service has not registered this user (…)"). A plain user's token ignores `user_id`.
//! - `POST /_matrix/client/{r0,v3}/logout` → `{}`, the token forgotten (an expired token may
//!   log out, as Synapse's `allow_expired`); `logout/all` → `{}`, every token of its user
//!   forgotten.
//! - `GET /_matrix/client/v1/media/download/{server}/{id}` and the legacy
//!   `GET /_matrix/media/v3/download/{server}/{id}` → the bytes stored by
//!   [`FakeSynapse::put_media`] (its `Content-Type`, `Content-Disposition` with its name), for
//!   a valid token only (401 like whoami otherwise; Synapse 1.163 asks a token on the legacy
//!   endpoint too once media is frozen); 404 `M_NOT_FOUND` for unknown media. With
//!   [`FakeSynapse::without_v1_media`] the v1 endpoint answers 404 `M_UNRECOGNIZED`, as a
//!   Synapse before 1.111.
//!
//! ```ignore
//! let hs = FakeSynapse::start(&[("bob-token", "@bob:localhost")]).await;
//! // homeserver config: cs_api = hs.url
//! hs.set_room_media("!room:localhost", &["mxc://localhost/abc"], &["mxc://remote/def"]);
//! ```
#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::result_large_err
)]

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

#[derive(Default)]
struct Inner {
    /// token → (user id, is admin).
    users: HashMap<String, (String, bool)>,
    /// Tokens of guest accounts.
    guests: HashSet<String>,
    /// Tokens past their expiry (refreshable tokens): soft-logged-out.
    expired: HashSet<String>,
    /// room id → (local, remote).
    rooms: HashMap<String, (Vec<String>, Vec<String>)>,
    /// user id → avatar `mxc://` URI.
    avatars: HashMap<String, String>,
    /// as_token → (sender, user id prefix of its exclusive namespace).
    appservices: HashMap<String, (String, String)>,
    /// Users registered on the homeserver (the ghosts an appservice registered).
    registered: HashSet<String>,
    /// Every request: (path, bearer token).
    calls: Vec<(String, Option<String>)>,
    /// `server/id` → (bytes, content type, file name): media the homeserver stored itself.
    media: HashMap<String, (Vec<u8>, String, Option<String>)>,
    /// The v1 media endpoints are unknown (an old Synapse).
    no_v1_media: bool,
}

type Shared = Arc<Mutex<Inner>>;

/// A running fake Synapse; stops when dropped.
pub struct FakeSynapse {
    /// `http://127.0.0.1:PORT`: put it in the homeserver's `cs_api`.
    pub url: String,
    inner: Shared,
    task: tokio::task::JoinHandle<()>,
}

fn bearer(headers: &HeaderMap) -> Option<String> {
    headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_owned)
}

fn matrix_error(status: StatusCode, errcode: &str, error: &str) -> Response {
    (status, Json(json!({ "errcode": errcode, "error": error }))).into_response()
}

/// Synapse's refusal of a token it does not know (`InvalidClientTokenError`): 401
/// `M_UNKNOWN_TOKEN` with `soft_logout` (true for an expired token).
fn token_error(message: &str, soft_logout: bool) -> Response {
    (
        StatusCode::UNAUTHORIZED,
        Json(json!({
            "errcode": "M_UNKNOWN_TOKEN",
            "error": message,
            "soft_logout": soft_logout,
        })),
    )
        .into_response()
}

/// The user of a valid token, or Synapse's refusal (`allow_expired`: an expired token counts).
fn user_of(inner: &Inner, token: Option<&String>, allow_expired: bool) -> Result<String, Response> {
    let Some(token) = token else {
        return Err(matrix_error(
            StatusCode::UNAUTHORIZED,
            "M_MISSING_TOKEN",
            "Missing access token",
        ));
    };
    match inner.users.get(token) {
        None => Err(token_error("Invalid access token passed.", false)),
        Some(_) if inner.expired.contains(token) && !allow_expired => {
            Err(token_error("Access token has expired", true))
        }
        Some((user, _)) => Ok(user.clone()),
    }
}

/// `None` if the caller is an admin; else the error response Synapse would give.
fn refuse_non_admin(inner: &Inner, token: Option<&String>) -> Option<Response> {
    if let Err(r) = user_of(inner, token, false) {
        return Some(r);
    }
    if token.is_some_and(|t| inner.guests.contains(t)) {
        return Some(matrix_error(
            StatusCode::FORBIDDEN,
            "M_GUEST_ACCESS_FORBIDDEN",
            "Guest access not allowed",
        ));
    }
    match token.and_then(|t| inner.users.get(t)) {
        None => Some(token_error("Invalid access token passed.", false)),
        Some((_, false)) => Some(matrix_error(
            StatusCode::FORBIDDEN,
            "M_FORBIDDEN",
            "You are not a server admin",
        )),
        Some((_, true)) => None,
    }
}

async fn user_admin(
    State(inner): State<Shared>,
    Path(user): Path<String>,
    headers: HeaderMap,
) -> Response {
    let token = bearer(&headers);
    let mut g = inner.lock().unwrap();
    g.calls.push((
        format!("/_synapse/admin/v1/users/{user}/admin"),
        token.clone(),
    ));
    if let Some(r) = refuse_non_admin(&g, token.as_ref()) {
        return r;
    }
    let admin = g.users.values().any(|(u, a)| *a && *u == user);
    Json(json!({ "admin": admin })).into_response()
}

async fn room_media(
    State(inner): State<Shared>,
    Path(room): Path<String>,
    headers: HeaderMap,
) -> Response {
    let token = bearer(&headers);
    let mut g = inner.lock().unwrap();
    g.calls.push((
        format!("/_synapse/admin/v1/room/{room}/media"),
        token.clone(),
    ));
    if let Some(r) = refuse_non_admin(&g, token.as_ref()) {
        return r;
    }
    match g.rooms.get(&room) {
        Some((local, remote)) => Json(json!({ "local": local, "remote": remote })).into_response(),
        None => matrix_error(StatusCode::NOT_FOUND, "M_NOT_FOUND", "Unknown room"),
    }
}

async fn users_v2(
    State(inner): State<Shared>,
    axum::extract::Query(q): axum::extract::Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let token = bearer(&headers);
    let mut g = inner.lock().unwrap();
    g.calls
        .push(("/_synapse/admin/v2/users".to_owned(), token.clone()));
    if let Some(r) = refuse_non_admin(&g, token.as_ref()) {
        return r;
    }
    let mut names: Vec<String> = g.users.values().map(|(u, _)| u.clone()).collect();
    names.extend(g.avatars.keys().cloned());
    names.sort();
    names.dedup();
    let from: usize = q.get("from").map_or(0, |f| f.parse().unwrap());
    let limit: usize = q.get("limit").map_or(100, |l| l.parse().unwrap());
    let page: Vec<_> = names
        .iter()
        .skip(from)
        .take(limit)
        .map(|n| json!({ "name": n, "avatar_url": g.avatars.get(n) }))
        .collect();
    let mut out = json!({ "users": page, "total": names.len() });
    if from + limit < names.len() {
        out["next_token"] = json!((from + limit).to_string());
    }
    Json(out).into_response()
}

async fn whoami(
    State(inner): State<Shared>,
    axum::extract::Query(query): axum::extract::Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let token = bearer(&headers);
    let mut g = inner.lock().unwrap();
    let path = match query.get("user_id") {
        Some(u) => format!("/_matrix/client/v3/account/whoami?user_id={u}"),
        None => "/_matrix/client/v3/account/whoami".to_owned(),
    };
    g.calls.push((path, token.clone()));
    if let Some((sender, prefix)) = token.as_ref().and_then(|t| g.appservices.get(t)) {
        let user = query.get("user_id").unwrap_or(sender);
        if user != sender && !user.starts_with(prefix.as_str()) {
            return matrix_error(
                StatusCode::FORBIDDEN,
                "M_FORBIDDEN",
                &format!("Application service cannot masquerade as this user ({user})."),
            );
        }
        if user != sender && !g.registered.contains(user) {
            return matrix_error(
                StatusCode::FORBIDDEN,
                "M_FORBIDDEN",
                &format!("Application service has not registered this user ({user})"),
            );
        }
        return Json(json!({ "user_id": user, "is_guest": false })).into_response();
    }
    match user_of(&g, token.as_ref(), false) {
        Ok(user) => {
            let guest = token.as_ref().is_some_and(|t| g.guests.contains(t));
            Json(json!({ "user_id": user, "is_guest": guest, "device_id": "FAKEDEVICE" }))
                .into_response()
        }
        Err(r) => r,
    }
}

/// `POST /_matrix/client/{version}/logout[/all]`: the token (`all`: every token of its user)
/// is forgotten; `{}`.
fn logout_as(inner: &Shared, version: &str, headers: &HeaderMap, all: bool) -> Response {
    let token = bearer(headers);
    let mut g = inner.lock().unwrap();
    let suffix = if all { "/all" } else { "" };
    g.calls.push((
        format!("/_matrix/client/{version}/logout{suffix}"),
        token.clone(),
    ));
    if version != "r0" && version != "v3" {
        return matrix_error(
            StatusCode::NOT_FOUND,
            "M_UNRECOGNIZED",
            "Unrecognized request",
        );
    }
    let user = match user_of(&g, token.as_ref(), true) {
        Ok(u) => u,
        Err(r) => return r,
    };
    let gone: Vec<String> = g
        .users
        .iter()
        .filter(|(t, (u, _))| {
            if all {
                *u == user
            } else {
                Some(*t) == token.as_ref()
            }
        })
        .map(|(t, _)| t.clone())
        .collect();
    for t in gone {
        g.users.remove(&t);
        g.guests.remove(&t);
        g.expired.remove(&t);
    }
    Json(json!({})).into_response()
}

async fn logout(
    State(inner): State<Shared>,
    Path(version): Path<String>,
    headers: HeaderMap,
) -> Response {
    logout_as(&inner, &version, &headers, false)
}

async fn logout_all(
    State(inner): State<Shared>,
    Path(version): Path<String>,
    headers: HeaderMap,
) -> Response {
    logout_as(&inner, &version, &headers, true)
}

/// A media download as Synapse serves it on `path` (`v1`: the authenticated endpoint).
fn media_download(
    inner: &Shared,
    path: String,
    key: &str,
    v1: bool,
    headers: &HeaderMap,
) -> Response {
    let token = bearer(headers);
    let mut g = inner.lock().unwrap();
    g.calls.push((path, token.clone()));
    if v1 && g.no_v1_media {
        return matrix_error(
            StatusCode::NOT_FOUND,
            "M_UNRECOGNIZED",
            "Unrecognized request",
        );
    }
    if let Err(r) = user_of(&g, token.as_ref(), false) {
        return r;
    }
    match g.media.get(key) {
        Some((bytes, content_type, name)) => {
            let mut resp = bytes.clone().into_response();
            let h = resp.headers_mut();
            h.insert(
                axum::http::header::CONTENT_TYPE,
                content_type.parse().unwrap(),
            );
            if let Some(n) = name {
                h.insert(
                    axum::http::header::CONTENT_DISPOSITION,
                    format!("inline; filename={n}").parse().unwrap(),
                );
            }
            resp
        }
        None => matrix_error(StatusCode::NOT_FOUND, "M_NOT_FOUND", "Not found"),
    }
}

async fn download_v1(
    State(inner): State<Shared>,
    Path((server, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let key = format!("{server}/{id}");
    let path = format!("/_matrix/client/v1/media/download/{key}");
    media_download(&inner, path, &key, true, &headers)
}

async fn download_legacy(
    State(inner): State<Shared>,
    Path((server, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let key = format!("{server}/{id}");
    let path = format!("/_matrix/media/v3/download/{key}");
    media_download(&inner, path, &key, false, &headers)
}

impl FakeSynapse {
    /// Starts a fake Synapse whose admins are `admins` (`(access token, user id)`).
    pub async fn start(admins: &[(&str, &str)]) -> Self {
        let inner: Shared = Arc::default();
        {
            let mut g = inner.lock().unwrap();
            for (token, user) in admins {
                g.users
                    .insert((*token).to_owned(), ((*user).to_owned(), true));
            }
        }
        let app = Router::new()
            .route("/_synapse/admin/v1/users/{user}/admin", get(user_admin))
            .route("/_synapse/admin/v1/room/{room}/media", get(room_media))
            .route("/_synapse/admin/v2/users", get(users_v2))
            .route("/_matrix/client/v3/account/whoami", get(whoami))
            .route("/_matrix/client/{version}/logout", post(logout))
            .route("/_matrix/client/{version}/logout/all", post(logout_all))
            .route(
                "/_matrix/client/v1/media/download/{server}/{id}",
                get(download_v1),
            )
            .route(
                "/_matrix/media/v3/download/{server}/{id}",
                get(download_legacy),
            )
            .with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self {
            url: format!("http://{addr}"),
            inner,
            task,
        }
    }

    /// Adds (or replaces) a known token: `admin = false` makes a plain user whose admin
    /// checks are answered 403 like Synapse does.
    pub fn add_user(&self, token: &str, user_id: &str, admin: bool) {
        self.inner
            .lock()
            .unwrap()
            .users
            .insert(token.to_owned(), (user_id.to_owned(), admin));
    }

    /// Adds a guest account's token (whoami answers `"is_guest": true`).
    pub fn add_guest(&self, token: &str, user_id: &str) {
        let mut g = self.inner.lock().unwrap();
        g.users
            .insert(token.to_owned(), (user_id.to_owned(), false));
        g.guests.insert(token.to_owned());
    }

    /// Adds an appservice: its `as_token`, its sender (`@bot:server`) and the user id prefix
    /// of its namespace (`@ghost_`), standing for Synapse's namespace regex.
    pub fn add_appservice(&self, as_token: &str, sender: &str, prefix: &str) {
        self.inner
            .lock()
            .unwrap()
            .appservices
            .insert(as_token.to_owned(), (sender.to_owned(), prefix.to_owned()));
    }

    /// Registers a user (as an appservice registers its ghosts).
    pub fn register(&self, user_id: &str) {
        self.inner
            .lock()
            .unwrap()
            .registered
            .insert(user_id.to_owned());
    }

    /// Lets `token` expire (a refreshable token past its lifetime): Synapse then answers it
    /// 401 `M_UNKNOWN_TOKEN` with `"soft_logout": true`.
    pub fn expire(&self, token: &str) {
        self.inner.lock().unwrap().expired.insert(token.to_owned());
    }

    /// Whether the homeserver still knows `token` (it was not logged out).
    pub fn knows(&self, token: &str) -> bool {
        self.inner.lock().unwrap().users.contains_key(token)
    }

    /// Sets what `GET /_synapse/admin/v1/room/{room}/media` answers.
    pub fn set_room_media(&self, room: &str, local: &[&str], remote: &[&str]) {
        let own = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        self.inner
            .lock()
            .unwrap()
            .rooms
            .insert(room.to_owned(), (own(local), own(remote)));
    }

    /// Sets `user`'s avatar (listed by `GET /_synapse/admin/v2/users`).
    pub fn set_avatar(&self, user: &str, mxc: &str) {
        self.inner
            .lock()
            .unwrap()
            .avatars
            .insert(user.to_owned(), mxc.to_owned());
    }

    /// Stores a media the homeserver holds itself, `server/id` (as in an mxc URI).
    pub fn put_media(&self, server_id: &str, bytes: &[u8], content_type: &str, name: Option<&str>) {
        self.inner.lock().unwrap().media.insert(
            server_id.to_owned(),
            (
                bytes.to_vec(),
                content_type.to_owned(),
                name.map(str::to_owned),
            ),
        );
    }

    /// Makes the v1 media endpoints unknown (404 `M_UNRECOGNIZED`), as before Synapse 1.111.
    pub fn without_v1_media(&self) {
        self.inner.lock().unwrap().no_v1_media = true;
    }

    /// Every request received so far: `(path, bearer token)`.
    pub fn calls(&self) -> Vec<(String, Option<String>)> {
        self.inner.lock().unwrap().calls.clone()
    }

    /// How many requests hit a path starting with `prefix`.
    pub fn calls_to(&self, prefix: &str) -> usize {
        self.calls()
            .iter()
            .filter(|(p, _)| p.starts_with(prefix))
            .count()
    }
}

impl Drop for FakeSynapse {
    fn drop(&mut self) {
        self.task.abort();
    }
}
