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

async fn readyz(State(shared): State<Shared>) -> (StatusCode, String) {
    if !shared.state.is_ready() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "waiting for the cluster\n".into(),
        );
    }
    // Still ready: the last good configuration is being served.
    let stale: String = (shared.state.client.stale.reasons().into_iter())
        .map(|reason| format!("configuration stale: {reason}\n"))
        .collect();
    (StatusCode::OK, format!("ok\n{stale}"))
}

/// Serves until the process ends.
pub async fn serve(address: SocketAddr, state: MetricsState) -> std::io::Result<()> {
    serve_on(TcpListener::bind(address).await?, state).await
}

/// [`serve`] on a bound listener.
pub async fn serve_on(mut listener: TcpListener, state: MetricsState) -> std::io::Result<()> {
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

#[cfg(test)]
mod tests {
    use std::{
        io::{Read, Write},
        sync::atomic::Ordering,
        time::Instant,
    };

    use super::*;
    use crate::{
        announce::{AnnounceConfig, Announcer},
        dataplane::PinDir,
    };

    /// One request on a fresh connection: status code, headers, body.
    fn get(address: SocketAddr, path: &str) -> (u16, String, String) {
        let mut stream = std::net::TcpStream::connect(address).unwrap();
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        let (head, body) = response.split_once("\r\n\r\n").unwrap();
        let code = head.split_whitespace().nth(1).unwrap().parse().unwrap();
        (code, head.to_owned(), body.to_owned())
    }

    async fn server() -> (SocketAddr, MetricsState) {
        let pins = PinDir::new("/nonexistent/xdp-speaker-metrics-test");
        let state = MetricsState::new("node-a", pins, Announcer::new(AnnounceConfig::default()));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(serve_on(listener, state.clone()));
        (address, state)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn serves_metrics_health_and_readiness() {
        let (address, state) = server().await;
        let answers = tokio::task::spawn_blocking(move || {
            let health = get(address, "/healthz");
            let not_ready = get(address, "/readyz");
            state.ready.store(true, Ordering::Relaxed);
            state.client.config_loaded.set(1);
            let ready = get(address, "/readyz");
            let metrics = get(address, "/metrics");
            let missing = get(address, "/nope");
            (health, not_ready, ready, metrics, missing)
        })
        .await
        .unwrap();
        let (health, not_ready, ready, metrics, missing) = answers;
        assert_eq!((health.0, health.2.as_str()), (200, "ok\n"));
        assert_eq!(not_ready.0, 503);
        assert_eq!(ready.0, 200);
        assert_eq!(missing.0, 404);
        assert_eq!(metrics.0, 200);
        assert!(
            metrics
                .1
                .to_ascii_lowercase()
                .contains("content-type: text/plain; version=0.0.4"),
            "{}",
            metrics.1
        );
        assert!(
            metrics
                .2
                .lines()
                .any(|l| l == "metallb_k8s_client_config_loaded_bool 1"),
            "{}",
            metrics.2
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_client_that_never_finishes_its_headers_is_dropped() {
        let (address, _state) = server().await;
        let waited = tokio::task::spawn_blocking(move || {
            let mut stream = std::net::TcpStream::connect(address).unwrap();
            stream
                .set_read_timeout(Some(HEADER_READ_TIMEOUT * 3))
                .unwrap();
            stream
                .write_all(b"GET /metrics HTTP/1.1\r\nHost: slow\r\n")
                .unwrap();
            let started = Instant::now();
            let mut rest = Vec::new();
            // The server must close (or answer 408 and close) on its own.
            let closed = stream.read_to_end(&mut rest).is_ok();
            (closed, started.elapsed())
        })
        .await
        .unwrap();
        assert!(
            waited.0,
            "the connection was still open after {:?}",
            waited.1
        );
        assert!(
            waited.1 < HEADER_READ_TIMEOUT * 2,
            "closed only after {:?}",
            waited.1
        );
    }
}
