//! A fake Synapse admin API for the moderation tests, served by axum on 127.0.0.1:0:
//!
//! - `GET /_synapse/admin/v1/users/{userId}/admin` → `{"admin": bool}`; like Synapse, the
//!   caller must be an admin itself (401 for an unknown token, 403 for a non-admin caller).
//! - `GET /_synapse/admin/v1/room/{roomId}/media` → `{"local": [..], "remote": [..]}` as set
//!   by [`FakeSynapse::set_room_media`]; admins only; 404 for a room never set.
//! - `GET /_matrix/client/v3/account/whoami` → `{"user_id": ..}` for every known token (only
//!   needed for tokens that are not static tokens of the media-ledger config).
//!
//! ```ignore
//! let hs = FakeSynapse::start(&[("bob-token", "@bob:localhost")]).await;
//! // homeserver config: cs_api = hs.url
//! hs.set_room_media("!room:localhost", &["mxc://localhost/abc"], &["mxc://remote/def"]);
//! ```
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

#[derive(Default)]
struct Inner {
    /// token → (user id, is admin).
    users: HashMap<String, (String, bool)>,
    /// room id → (local, remote).
    rooms: HashMap<String, (Vec<String>, Vec<String>)>,
    /// Every request: (path, bearer token).
    calls: Vec<(String, Option<String>)>,
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

/// `None` if the caller is an admin; else the error response Synapse would give.
fn refuse_non_admin(inner: &Inner, token: Option<&String>) -> Option<Response> {
    match token.and_then(|t| inner.users.get(t)) {
        None => Some(matrix_error(
            StatusCode::UNAUTHORIZED,
            "M_UNKNOWN_TOKEN",
            "Unknown access token",
        )),
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

async fn whoami(State(inner): State<Shared>, headers: HeaderMap) -> Response {
    let token = bearer(&headers);
    let mut g = inner.lock().unwrap();
    g.calls.push((
        "/_matrix/client/v3/account/whoami".to_owned(),
        token.clone(),
    ));
    match token.and_then(|t| g.users.get(&t).cloned()) {
        Some((user, _)) => Json(json!({ "user_id": user })).into_response(),
        None => matrix_error(
            StatusCode::UNAUTHORIZED,
            "M_UNKNOWN_TOKEN",
            "Unknown access token",
        ),
    }
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
            .route("/_matrix/client/v3/account/whoami", get(whoami))
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

    /// Sets what `GET /_synapse/admin/v1/room/{room}/media` answers.
    pub fn set_room_media(&self, room: &str, local: &[&str], remote: &[&str]) {
        let own = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        self.inner
            .lock()
            .unwrap()
            .rooms
            .insert(room.to_owned(), (own(local), own(remote)));
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
