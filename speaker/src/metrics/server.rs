//! The HTTP side: axum routes for `/metrics`, `/healthz` and `/readyz`.
//!
//! Connections are accepted through axum's `Listener`, whose accept loop
//! outlives resource exhaustion: on EMFILE/ENFILE it logs and retries after a
//! second instead of ending the server (axum `serve/listener.rs`,
//! `handle_accept_error`). Each connection is then served by hyper with a
//! header read timeout and an overall time limit, so slow or idle clients
//! cannot pin file descriptors (axum::serve sets neither).

use std::{net::SocketAddr, sync::Arc, time::Duration};

use axum::{
    extract::State,
    http::{header, StatusCode},
    response::IntoResponse,
    routing::get,
    serve::Listener,
    Router,
};
use hyper_util::{
    rt::{TokioIo, TokioTimer},
    service::TowerToHyperService,
};
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tracing::{debug, info};

use super::{families, MetricsState};

/// How long a client may take to send its request headers.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one connection may live, keep-alive included.
const CONNECTION_LIMIT: Duration = Duration::from_secs(30);

#[derive(Clone)]
struct Shared {
    state: MetricsState,
    registry: Arc<Registry>,
}

/// The routes, for [`serve`] and for tests.
pub fn router(state: MetricsState, registry: Registry) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .fallback(|| async { (StatusCode::NOT_FOUND, "not found\n") })
        .with_state(Shared {
            state,
            registry: Arc::new(registry),
        })
}

async fn metrics(State(shared): State<Shared>) -> impl IntoResponse {
    // Reading the maps and links is blocking I/O.
    let registry = shared.registry.clone();
    match tokio::task::spawn_blocking(move || families::render(&registry)).await {
        Ok(text) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, families::CONTENT_TYPE)],
            text,
        )
            .into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response(),
    }
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(shared): State<Shared>) -> (StatusCode, &'static str) {
    if shared.state.is_ready() {
        (StatusCode::OK, "ok\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "waiting for the cluster\n")
    }
}

/// Serves until the process ends.
pub async fn serve(address: SocketAddr, state: MetricsState) -> std::io::Result<()> {
    let mut listener = TcpListener::bind(address).await?;
    info!(
        address = %listener.local_addr()?,
        "metrics and health on http://{}",
        listener.local_addr()?
    );
    let registry = families::registry(&state);
    let service = TowerToHyperService::new(router(state, registry));
    loop {
        // Not the inherent TcpListener::accept: axum's retries after EMFILE.
        let (stream, peer) = Listener::accept(&mut listener).await;
        let service = service.clone();
        tokio::spawn(async move {
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service);
            match tokio::time::timeout(CONNECTION_LIMIT, connection).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => debug!(%peer, "metrics connection: {e}"),
                Err(_) => debug!(%peer, "metrics connection closed after {CONNECTION_LIMIT:?}"),
            }
        });
    }
}
