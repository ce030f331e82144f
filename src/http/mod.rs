//! The HTTP API: routes, the shared state, CORS and the fallbacks.
//!
//! Route groups live one per file ([`upload`], [`download`], [`admin`]); this file merges them
//! and adds what every response needs: CORS headers, `OPTIONS` answered without endpoint logic,
//! a request id, and Matrix errors for unknown routes and wrong methods. The admin routes are
//! served under matrix-media-repo's two prefixes (`unstable/admin` and
//! `unstable/io.t2bot.media/admin`); the media part of Synapse's admin API under
//! `/_synapse/admin/v1` ([`synapse_admin`]); `/healthz` answers liveness probes.

pub mod admin;
pub mod audit;
pub mod download;
pub mod exports;
pub mod extract;
pub mod federation;
pub mod forwarded;
pub mod headers;
pub mod imports;
pub mod logout;
pub mod moderation;
pub mod moderator;
pub mod preview;
pub mod purge;
pub mod range;
pub mod serve;
pub mod synapse_admin;
pub mod thumbnail;
pub mod upload;

use crate::auth::Auth;
use crate::config::Config;
use crate::datastore::Datastores;
use crate::error::ApiError;
use crate::ledger::Ledger;
use crate::media::{MediaReader, MediaService};
use crate::metrics::Metrics;
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
    /// What handlers read media through: records, waits on pending uploads, blobs.
    pub reader: MediaReader,
    /// Datastore transfers.
    pub transfers: Arc<crate::transfer::Transfers>,
    /// Thumbnails.
    pub thumbnails: crate::thumbnail::Thumbnailer,
    /// Remote media over federation.
    pub remote: Arc<crate::remote::RemoteMedia>,
    /// Quarantine, purge and attributes.
    pub moderation: Arc<crate::moderation::Moderation>,
    /// Link previews.
    pub previews: Arc<crate::preview::Previews>,
    /// Running exports and the archive-import part lock.
    pub archives: exports::ArchiveJobs,
    /// Turns `true` when the server starts shutting down: long waits end early.
    pub shutdown: tokio::sync::watch::Receiver<bool>,
    /// The server's metrics registry.
    pub metrics: Arc<Metrics>,
    /// Rate limits per user, address and requesting server.
    pub rate_limits: crate::abuse::rate::RateLimits,
    /// The retention schedule's state (the tasks API shows it).
    pub retention: crate::abuse::retention::SharedStatus,
}

/// The shared state handle.
pub type State = Arc<AppState>;

/// `<database.path>-<what>`: a folder beside the ledger (exports, uploaded archive parts).
fn beside_ledger(state: &State, what: &str) -> std::path::PathBuf {
    let db = &state.config.database.path;
    let name = db
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "ledger".into());
    db.with_file_name(format!("{name}-{what}"))
}

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
            )
            .route(
                &format!("/_matrix/media/{v}/preview_url"),
                get(preview::legacy),
            );
    }
    r.route("/_matrix/media/v1/create", post(upload::create))
        .route(
            "/_matrix/media/unstable/org.matrix.msc4034/usage",
            get(upload::usage),
        )
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
        .route("/_matrix/client/v1/media/preview_url", get(preview::authed))
        .route("/_matrix/client/{version}/logout", post(logout::logout))
        .route(
            "/_matrix/client/{version}/logout/all",
            post(logout::logout_all),
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
        .merge(admin_routes(ADMIN_PREFIX))
        .merge(admin_routes(T2BOT_ADMIN_PREFIX))
        .merge(synapse_admin::routes())
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .fallback(|| async { ApiError::Unrecognized })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(axum::middleware::from_fn_with_state(
            forwarded::HostCheck::new(state.config.clone()),
            forwarded::forwarded,
        ))
        .layer(axum::middleware::from_fn_with_state(
            (state.metrics.clone(), state.config.server.access_log),
            observe,
        ))
        .layer(axum::middleware::from_fn(cors))
        .with_state(state)
}

/// The admin API's first path prefix (matrix-media-repo's).
const ADMIN_PREFIX: &str = "/_matrix/media/unstable/admin";
/// matrix-media-repo's second admin prefix, an alias of [`ADMIN_PREFIX`] operators script against.
const T2BOT_ADMIN_PREFIX: &str = "/_matrix/media/unstable/io.t2bot.media/admin";

/// Every admin route (datastores, tasks, moderation, audit and usage) under the prefix `a`.
fn admin_routes(a: &str) -> Router<State> {
    Router::new()
        .route(&format!("{a}/datastores"), get(admin::datastores))
        .route(
            &format!("{a}/user/{{user_id}}/export"),
            post(exports::user_export),
        )
        .route(
            &format!("{a}/server/{{server}}/export"),
            post(exports::server_export),
        )
        .route(
            &format!("{a}/export/{{id}}/metadata"),
            get(exports::metadata),
        )
        .route(&format!("{a}/export/{{id}}/part/{{n}}"), get(exports::part))
        .route(
            &format!("{a}/export/{{id}}"),
            axum::routing::delete(exports::delete),
        )
        .route(&format!("{a}/import"), post(imports::start))
        .route(&format!("{a}/import/{{id}}"), get(imports::status))
        .route(&format!("{a}/import/{{id}}/part"), post(imports::part))
        .route(&format!("{a}/import/{{id}}/close"), post(imports::close))
        .route(
            &format!("{a}/datastores/{{id}}/size_estimate"),
            get(admin::size_estimate),
        )
        .route(
            &format!("{a}/datastores/{{src}}/transfer_to/{{dst}}"),
            post(admin::transfer_to),
        )
        .route(&format!("{a}/tasks/all"), get(admin::tasks_all))
        .route(
            &format!("{a}/tasks/unfinished"),
            get(admin::tasks_unfinished),
        )
        .route(&format!("{a}/tasks/{{id}}"), get(admin::task))
        .route(&format!("{a}/snapshot"), post(admin::snapshot))
        .merge(moderation_routes(a))
}

/// The moderation, audit and usage routes under the admin prefix `a`.
fn moderation_routes(a: &str) -> Router<State> {
    use moderation as m;
    Router::new()
        .route(
            &format!("{a}/quarantine/user/{{user_id}}"),
            post(m::quarantine_user),
        )
        .route(
            &format!("{a}/quarantine/server/{{server_name}}"),
            post(m::quarantine_server),
        )
        .route(
            &format!("{a}/quarantine/room/{{room_id}}"),
            post(m::quarantine_room),
        )
        .route(
            &format!("{a}/quarantine/{{server}}/{{media_id}}"),
            post(m::quarantine_media),
        )
        .route(
            &format!("{a}/unquarantine/{{server}}/{{media_id}}"),
            post(m::unquarantine_media),
        )
        .route(
            &format!("{a}/media/{{server}}/{{media_id}}/attributes"),
            get(m::get_attributes).post(m::set_attributes),
        )
        .route(
            &format!("{a}/media/{{server}}/{{media_id}}/attributes/set"),
            post(m::set_attributes),
        )
        .route(
            &format!("{a}/media/{{server}}/{{media_id}}/history"),
            get(audit::history),
        )
        .route(&format!("{a}/purge/remote"), post(purge::purge_remote))
        .route(&format!("{a}/purge_remote"), post(purge::purge_remote))
        .route(
            &format!("{a}/purge/quarantined"),
            post(purge::purge_quarantined),
        )
        .route(&format!("{a}/purge/old"), post(purge::purge_old))
        .route(
            &format!("{a}/purge/user/{{user_id}}"),
            post(purge::purge_user),
        )
        .route(
            &format!("{a}/purge/server/{{server_name}}"),
            post(purge::purge_server),
        )
        .route(
            &format!("{a}/purge/room/{{room_id}}"),
            post(purge::purge_room),
        )
        .route(
            &format!("{a}/purge/{{server}}/{{media_id}}"),
            post(purge::purge_media),
        )
        .route(&format!("{a}/audit"), get(audit::audit))
        .route(&format!("{a}/usage/{{server_name}}"), get(audit::usage))
        .route(
            &format!("{a}/usage/{{server_name}}/users"),
            get(audit::usage_users),
        )
        .route(
            &format!("{a}/usage/{{server_name}}/uploads"),
            get(audit::usage_uploads),
        )
}

/// `GET /metrics`: the Prometheus text format.
async fn metrics(axum::extract::State(state): axum::extract::State<State>) -> Response {
    let ledger = state.ledger.clone();
    let metrics = state.metrics.clone();
    let ids: Vec<_> = state
        .datastores
        .all()
        .iter()
        .map(|c| c.store.id().clone())
        .collect();
    match tokio::task::spawn_blocking(move || crate::metrics::render(&metrics, &ledger, &ids)).await
    {
        Ok(text) => ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response(),
        Err(e) => ApiError::internal(e).into_response(),
    }
}

/// Gives the request an id (its events and log lines carry it, with the client address, the
/// host and the user; the answer says it in `X-Request-Id`), logs its answer (every answer
/// with `server.access_log`, else those of 500 and more), and counts it, its bytes and its latency per route in the server's `m`.
async fn observe(
    axum::extract::State((m, access_log)): axum::extract::State<(Arc<Metrics>, bool)>,
    req: Request,
    next: Next,
) -> Response {
    let started = std::time::Instant::now();
    let method = crate::metrics::method_label(req.method());
    let route = req
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    if let Some(n) = content_length(req.headers()) {
        m.bytes_in
            .fetch_add(n, std::sync::atomic::Ordering::Relaxed);
    }
    let id = extract::new_request_id();
    // `client` and `host` are filled by `forwarded`, `user` by the token extractors.
    let span = tracing::info_span!(
        "request",
        request_id = %id,
        %method,
        %route,
        client = tracing::field::Empty,
        host = tracing::field::Empty,
        user = tracing::field::Empty,
    );
    let mut resp = extract::REQUEST_ID
        .scope(
            id.clone(),
            tracing::Instrument::instrument(next.run(req), span.clone()),
        )
        .await;
    let status = resp.status().as_u16();
    if access_log || status >= 500 {
        span.in_scope(|| {
            let ms = started.elapsed().as_millis() as u64;
            tracing::info!(status, ms, "request answered");
        });
    }
    if let Ok(v) = HeaderValue::from_str(&id.0) {
        resp.headers_mut().insert("x-request-id", v);
    }
    if let Some(n) = content_length(resp.headers()) {
        m.bytes_out
            .fetch_add(n, std::sync::atomic::Ordering::Relaxed);
    }
    m.request(
        method,
        &route,
        resp.status().as_u16(),
        started.elapsed().as_secs_f64(),
    );
    resp
}

fn content_length(h: &axum::http::HeaderMap) -> Option<u64> {
    h.get(header::CONTENT_LENGTH)?.to_str().ok()?.parse().ok()
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

/// `GET`/`HEAD /healthz`: matrix-media-repo's liveness answer, for probes that script
/// against it. It answers while the server accepts requests; it reads no state.
async fn healthz() -> Response {
    axum::Json(serde_json::json!({"ok": true, "status": "Probably not dead"})).into_response()
}
