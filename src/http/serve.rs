//! The accept loop: one task per connection, HTTP/1.1 with keep-alive, and the two
//! slow-client bounds `axum::serve` lacks: a request head (request line and headers) must
//! arrive within `server.header_read_timeout_ms` (hyper closes the connection otherwise; the
//! same bound closes a kept-alive connection left idle), and a request body may pause at
//! most `server.body_idle_timeout_ms` between frames (the reader gets a timeout error, which
//! [`ApiError::body`](crate::error::ApiError::body) answers 408). TCP_NODELAY on every
//! connection (a small answer must not wait for the client's delayed ACK). Every request
//! carries its TCP peer (`ConnectInfo<SocketAddr>`, read by [`super::forwarded`]). On `stop`: no new
//! connections, every open one finishes its request in flight and closes; the future ends
//! when the last one has. The connections are tasks of the future's own set, so dropping it
//! (the caller aborting it after the grace period) closes whatever is still open.

use axum::body::Body;
use axum::extract::Request;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use std::future::Future;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tower::ServiceExt;
use tower_http::timeout::TimeoutBody;

/// The slow-client bounds of every connection.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Longest wait for a whole request head.
    pub header_read: Duration,
    /// Longest pause inside a request body.
    pub body_idle: Duration,
}

/// Serves `app` on `listener` until `stop` completes, then drains the open connections.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    stop: impl Future<Output = ()>,
) {
    // `closing` tells the connections to finish.
    let (closing_tx, closing_rx) = watch::channel(false);
    let mut connections = JoinSet::new();
    tokio::pin!(stop);
    loop {
        let (tcp, peer) = tokio::select! {
            // Reap ended connections as they go (the set keeps them until joined).
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                // The peer gave up before we took it: nothing to do.
                Err(e) if is_connection_error(&e) => continue,
                Err(e) => {
                    // Out of file descriptors and the like: pause rather than spin.
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            },
            () = &mut stop => break,
        };
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY");
        }
        let body_idle = limits.body_idle;
        let service = app.clone().map_request(move |req: Request<Incoming>| {
            let mut req = req.map(|body| Body::new(TimeoutBody::new(body_idle, body)));
            req.extensions_mut()
                .insert(axum::extract::ConnectInfo(peer));
            req
        });
        connections.spawn(connection(
            tcp,
            service,
            limits.header_read,
            closing_rx.clone(),
        ));
    }
    drop(listener);
    let _ = closing_tx.send(true);
    while connections.join_next().await.is_some() {}
}

/// An accept error that concerns one connection only (as axum's serve loop treats them).
fn is_connection_error(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    matches!(
        e.kind(),
        ConnectionRefused | ConnectionAborted | ConnectionReset
    )
}

/// Serves one connection until the client leaves, a bound cuts it, or the stop has let its
/// request in flight finish.
async fn connection<S>(
    tcp: tokio::net::TcpStream,
    service: S,
    header_read: Duration,
    mut closing: watch::Receiver<bool>,
) where
    S: tower::Service<
            Request<Incoming>,
            Response = axum::response::Response,
            Error = std::convert::Infallible,
        > + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(header_read);
    let conn = builder
        .serve_connection(TokioIo::new(tcp), TowerToHyperService::new(service))
        .with_upgrades();
    tokio::pin!(conn);
    let mut told = false;
    loop {
        tokio::select! {
            served = conn.as_mut() => {
                if let Err(e) = served {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
                break;
            }
            _ = closing.wait_for(|c| *c), if !told => {
                told = true;
                conn.as_mut().graceful_shutdown();
            }
        }
    }
}
