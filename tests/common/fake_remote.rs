//! A remote homeserver `fake.test` for remote-media tests: it serves media over the legacy
//! download endpoint (its federation endpoint answers `M_UNRECOGNIZED`, so the fetch falls
//! back) and counts the downloads.

use axum::extract::{Path as APath, State};
use axum::response::{IntoResponse, Response};
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// A homeserver `fake.test` serving its media over the legacy download endpoint (the
/// federation one answers `M_UNRECOGNIZED`), counting the downloads per media id.
#[derive(Clone, Default)]
pub struct FakeRemote {
    media: Arc<Mutex<HashMap<String, Vec<u8>>>>,
    hits: Arc<Mutex<HashMap<String, usize>>>,
    /// Downloads of any media so far.
    pub total: Arc<AtomicUsize>,
}

impl FakeRemote {
    /// Serves `bytes` as `fake.test`'s media `id`; its mxc URI.
    pub fn add(&self, id: &str, bytes: Vec<u8>) -> String {
        self.media.lock().unwrap().insert(id.to_owned(), bytes);
        format!("mxc://fake.test/{id}")
    }

    /// Downloads of media `id` so far.
    pub fn hits(&self, id: &str) -> usize {
        self.hits.lock().unwrap().get(id).copied().unwrap_or(0)
    }
}

async fn fake_unrecognized() -> Response {
    (
        axum::http::StatusCode::NOT_FOUND,
        [("content-type", "application/json")],
        r#"{"errcode":"M_UNRECOGNIZED","error":"Unrecognized request"}"#,
    )
        .into_response()
}

async fn fake_legacy(
    State(st): State<FakeRemote>,
    APath((server, id)): APath<(String, String)>,
) -> Response {
    st.total.fetch_add(1, Ordering::SeqCst);
    *st.hits.lock().unwrap().entry(id.clone()).or_default() += 1;
    let bytes = st.media.lock().unwrap().get(&id).cloned();
    match bytes {
        Some(b) if server == "fake.test" => {
            ([("content-type", "application/octet-stream")], b).into_response()
        }
        _ => (
            axum::http::StatusCode::NOT_FOUND,
            [("content-type", "application/json")],
            r#"{"errcode":"M_NOT_FOUND","error":"no"}"#,
        )
            .into_response(),
    }
}

/// Starts the fake homeserver; returns it and its base URL.
pub async fn fake_remote() -> (FakeRemote, String) {
    let st = FakeRemote::default();
    let router = axum::Router::new()
        .route(
            "/_matrix/federation/v1/media/download/{id}",
            axum::routing::get(fake_unrecognized),
        )
        .route(
            "/_matrix/media/v3/download/{server}/{id}",
            axum::routing::get(fake_legacy),
        )
        .with_state(st.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    (st, format!("http://{addr}"))
}
