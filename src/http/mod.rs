//! The HTTP API: routes, the shared state, CORS and the fallbacks.
//!
//! Route groups live one per file ([`upload`], [`download`], [`admin`]); this file merges them
//! and adds what every response needs: CORS headers, `OPTIONS` answered without endpoint logic,
//! a request id, and Matrix errors for unknown routes and wrong methods.

pub mod admin;
pub mod download;
pub mod extract;
pub mod federation;
pub mod headers;
pub mod range;
pub mod thumbnail;
pub mod upload;

use crate::auth::Auth;
use crate::config::Config;
use crate::datastore::Datastores;
use crate::error::ApiError;
use crate::ledger::Ledger;
use crate::media::MediaService;
use axum::extract::Request;
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::Router;
use std::sync::Arc;

/// Everything a handler may use.
pub struct AppState {
    /// The configuration.
    pub config: Arc<Config>,
    /// The log and projections.
    pub ledger: Arc<Ledger>,
    /// The datastores.
    pub datastores: Arc<Datastores>,
    /// Token resolution.
    pub auth: Auth,
    /// Upload commands.
    pub media: MediaService,
    /// Datastore transfers.
    pub transfers: Arc<crate::transfer::Transfers>,
    /// Thumbnails.
    pub thumbnails: crate::thumbnail::Thumbnailer,
    /// Remote media over federation.
    pub remote: crate::remote::RemoteMedia,
    /// Turns `true` when the server starts shutting down: long waits end early.
    pub shutdown: tokio::sync::watch::Receiver<bool>,
}

/// The shared state handle.
pub type State = Arc<AppState>;

/// The full router.
pub fn router(state: State) -> Router {
    let mut r = Router::new();
    for v in ["r0", "v3"] {
        r = r
            .route(&format!("/_matrix/media/{v}/upload"), post(upload::upload))
            .route(
                &format!("/_matrix/media/{v}/upload/{{server}}/{{media_id}}"),
                put(upload::upload_async),
            )
            .route(
                &format!("/_matrix/media/{v}/download/{{server}}/{{media_id}}"),
                get(download::legacy),
            )
            .route(
                &format!("/_matrix/media/{v}/download/{{server}}/{{media_id}}/{{filename}}"),
                get(download::legacy_named),
            )
            .route(
                &format!("/_matrix/media/{v}/config"),
                get(upload::config_legacy),
            )
            .route(
                &format!("/_matrix/media/{v}/thumbnail/{{server}}/{{media_id}}"),
                get(thumbnail::legacy),
            );
    }
    r.route("/_matrix/media/v1/create", post(upload::create))
        .route(
            "/_matrix/client/v1/media/download/{server}/{media_id}",
            get(download::authed),
        )
        .route(
            "/_matrix/client/v1/media/download/{server}/{media_id}/{filename}",
            get(download::authed_named),
        )
        .route(
            "/_matrix/client/v1/media/config",
            get(upload::config_authed),
        )
        .route(
            "/_matrix/client/v1/media/thumbnail/{server}/{media_id}",
            get(thumbnail::authed),
        )
        .route("/_matrix/key/v2/server", get(federation::server_keys))
        .route(
            "/_matrix/federation/v1/media/download/{media_id}",
            get(federation::download),
        )
        .route(
            "/_matrix/federation/v1/media/thumbnail/{media_id}",
            get(federation::thumbnail),
        )
        .route(
            "/_matrix/media/unstable/admin/datastores",
            get(admin::datastores),
        )
        .route(
            "/_matrix/media/unstable/admin/datastores/{id}/size_estimate",
            get(admin::size_estimate),
        )
        .route(
            "/_matrix/media/unstable/admin/datastores/{src}/transfer_to/{dst}",
            post(admin::transfer_to),
        )
        .route(
            "/_matrix/media/unstable/admin/tasks/all",
            get(admin::tasks_all),
        )
        .route(
            "/_matrix/media/unstable/admin/tasks/unfinished",
            get(admin::tasks_unfinished),
        )
        .route("/_matrix/media/unstable/admin/tasks/{id}", get(admin::task))
        .fallback(|| async { ApiError::Unrecognized })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(axum::middleware::from_fn(cors))
        .with_state(state)
}

/// Adds CORS headers to every response and answers `OPTIONS` itself.
async fn cors(req: Request, next: Next) -> Response {
    let mut resp = if req.method() == Method::OPTIONS {
        StatusCode::OK.into_response()
    } else {
        next.run(req).await
    };
    let h = resp.headers_mut();
    h.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("GET, HEAD, POST, PUT, DELETE, OPTIONS"),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("X-Requested-With, Content-Type, Authorization, Range"),
    );
    h.insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static("Content-Length, Content-Range, Content-Disposition"),
    );
    resp
}
