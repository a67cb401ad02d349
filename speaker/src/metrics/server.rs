//! The HTTP side: axum routes for `/metrics`, `/healthz` and `/readyz`.
//!
//! The server must outlive whatever clients do to it:
//! - at most [`connection_limit`] connections are served at once; beyond
//!   that, new ones wait in the kernel's accept queue (they cost no
//!   descriptor of ours) until one ends, so idle clients can never take the
//!   descriptors the data path and gossip need;
//! - an accept that fails (EMFILE/ENFILE when descriptors run out anyway,
//!   ECONNABORTED, ...) is logged and retried after a growing pause instead
//!   of ending the server;
//! - hyper closes a connection whose request headers take longer than
//!   [`HEADER_READ_TIMEOUT`] (which also ends idle keep-alive connections),
//!   and none lives longer than [`CONNECTION_LIFETIME`] (axum::serve sets
//!   neither).
//!
//! With a certificate ([`Security::tls`]) every route is served over HTTPS
//! (the handshake gets [`HEADER_READ_TIMEOUT`] too); [`Security::access`]
//! decides who may read `/metrics` (see [`super::access`]).

use std::{net::SocketAddr, sync::Arc, time::Duration};

use axum::{
    extract::State,
    http::{header, HeaderMap, StatusCode},
    response::IntoResponse,
    routing::get,
    Router,
};
use hyper_util::{
    rt::{TokioIo, TokioTimer},
    service::TowerToHyperService,
};
use prometheus_client::registry::Registry;
use rustls::ServerConfig;
use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::TcpListener,
    sync::Semaphore,
};
use tokio_rustls::TlsAcceptor;
use tracing::{debug, info, warn};

use super::{
    access::{Decision, MetricsAccess},
    families, MetricsState,
};

/// How long a client may take to send its request headers.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one connection may live, keep-alive included.
const CONNECTION_LIFETIME: Duration = Duration::from_secs(30);
/// First and longest pause after a failed accept.
const ACCEPT_BACKOFF: (Duration, Duration) = (Duration::from_millis(10), Duration::from_secs(1));

/// How many connections are served at once: a quarter of the open files
/// limit, at most 512. Prometheus and the kubelet's probes need a handful.
pub fn connection_limit() -> usize {
    let open_files = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .map_or(1024, |(soft, _)| soft);
    usize::try_from(open_files / 4)
        .unwrap_or(usize::MAX)
        .clamp(4, 512)
}

/// How the server is reached and who may read `/metrics`.
#[derive(Clone)]
pub struct Security {
    /// `None`: plain HTTP.
    pub tls: Option<Arc<ServerConfig>>,
    pub access: MetricsAccess,
}

impl Security {
    /// Plain HTTP, `/metrics` open to anyone (MetalLB's default).
    pub fn plain() -> Self {
        Self {
            tls: None,
            access: MetricsAccess::Anyone,
        }
    }
}

#[derive(Clone)]
struct Shared {
    state: MetricsState,
    registry: Arc<Registry>,
    access: MetricsAccess,
}

/// The routes, for [`serve`] and for tests.
pub fn router(state: MetricsState, registry: Registry, access: MetricsAccess) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .fallback(|| async { (StatusCode::NOT_FOUND, "not found\n") })
        .with_state(Shared {
            state,
            registry: Arc::new(registry),
            access,
        })
}

async fn metrics(State(shared): State<Shared>, headers: HeaderMap) -> axum::response::Response {
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok());
    match shared.access.decide(authorization).await {
        Decision::Allowed => {}
        Decision::Unauthenticated(why) => {
            return (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, "Bearer")],
                format!("Unauthorized: {why}\n"),
            )
                .into_response()
        }
        Decision::Forbidden(why) => {
            return (StatusCode::FORBIDDEN, format!("Forbidden: {why}\n")).into_response()
        }
        Decision::Failed(why) => {
            return (StatusCode::INTERNAL_SERVER_ERROR, format!("{why}\n")).into_response()
        }
    }
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

/// 200 while the daemon loop is alive; a loop wedged past the stall limit
/// gets the pod restarted (a dead process answers nothing at all).
async fn healthz(State(shared): State<Shared>) -> (StatusCode, &'static str) {
    if shared.state.is_alive() {
        (StatusCode::OK, "ok\n")
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "the daemon loop is stuck (see the log)\n",
        )
    }
}

/// 200 once the cluster has been applied, nothing stands failed and the
/// kernel runs the responder on every interface the daemon attached it to;
/// else 503 with one line per reason.
async fn readyz(State(shared): State<Shared>) -> (StatusCode, String) {
    let mut reasons: Vec<String> = shared
        .state
        .diagnostics
        .conditions()
        .into_iter()
        .map(|(what, c)| format!("{what} ({}): {}", c.kind, c.message))
        .collect();
    if !shared.state.is_ready() {
        reasons.insert(0, "waiting for the cluster".to_owned());
    }
    let state = shared.state.clone();
    match tokio::task::spawn_blocking(move || state.unattached_interfaces()).await {
        Ok(Ok(unattached)) if unattached.is_empty() => {}
        Ok(Ok(unattached)) => {
            reasons.push(format!("XDP not attached on {}", unattached.join(", ")))
        }
        Ok(Err(e)) => reasons.push(format!("listing links: {e}")),
        Err(e) => reasons.push(format!("checking the links: {e}")),
    }
    // A stale configuration does not make the speaker unready: the last
    // good one is being served. It is said, though.
    let stale: String = (shared.state.client.stale.reasons().into_iter())
        .map(|reason| format!("configuration stale: {reason}\n"))
        .collect();
    if reasons.is_empty() {
        (StatusCode::OK, format!("ok\n{stale}"))
    } else {
        let mut body: String = reasons.iter().map(|r| format!("{r}\n")).collect();
        body.push_str(&stale);
        (StatusCode::SERVICE_UNAVAILABLE, body)
    }
}

/// Serves until the process ends.
pub async fn serve(
    address: SocketAddr,
    state: MetricsState,
    security: Security,
) -> std::io::Result<()> {
    serve_on(TcpListener::bind(address).await?, state, security).await
}

/// [`serve`] on a bound listener.
pub async fn serve_on(
    listener: TcpListener,
    state: MetricsState,
    security: Security,
) -> std::io::Result<()> {
    let limit = connection_limit();
    let scheme = if security.tls.is_some() {
        "https"
    } else {
        "http"
    };
    let guarded = match security.access {
        MetricsAccess::Anyone => "",
        MetricsAccess::Kubernetes(_) => ", /metrics for users the API server allows",
    };
    info!(
        address = %listener.local_addr()?,
        "metrics and health on {scheme}://{} (at most {limit} connections at once{guarded})",
        listener.local_addr()?
    );
    let tls = security.tls.map(TlsAcceptor::from);
    let registry = families::registry(&state);
    let service = TowerToHyperService::new(router(state, registry, security.access));
    let slots = Arc::new(Semaphore::new(limit));
    let mut backoff = ACCEPT_BACKOFF.0;
    let mut full_logged = false;
    loop {
        let slot = match slots.clone().try_acquire_owned() {
            Ok(slot) => slot,
            Err(_) => {
                if !full_logged {
                    warn!("metrics server: {limit} connections open; new ones wait until one ends");
                    full_logged = true;
                }
                slots
                    .clone()
                    .acquire_owned()
                    .await
                    .expect("the semaphore is never closed")
            }
        };
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => {
                backoff = ACCEPT_BACKOFF.0;
                full_logged = false;
                accepted
            }
            Err(e) => {
                // Nothing was accepted; the queue keeps the client waiting.
                warn!(error = %e, "metrics server: accept failed: {e}; retrying in {backoff:?}");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(ACCEPT_BACKOFF.1);
                continue;
            }
        };
        let service = service.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let connection = async move {
                match tls {
                    None => serve_connection(stream, service).await,
                    Some(acceptor) => {
                        match tokio::time::timeout(HEADER_READ_TIMEOUT, acceptor.accept(stream))
                            .await
                        {
                            Ok(Ok(stream)) => serve_connection(stream, service).await,
                            Ok(Err(e)) => Err(format!("TLS handshake: {e}")),
                            Err(_) => Err("TLS handshake timed out".to_owned()),
                        }
                    }
                }
            };
            match tokio::time::timeout(CONNECTION_LIFETIME, connection).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => debug!(%peer, "metrics connection: {e}"),
                Err(_) => {
                    debug!(%peer, "metrics connection closed after {CONNECTION_LIFETIME:?}")
                }
            }
        });
    }
}

async fn serve_connection<S>(stream: S, service: TowerToHyperService<Router>) -> Result<(), String>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .serve_connection(TokioIo::new(stream), service)
        .await
        .map_err(|e| e.to_string())
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
        tokio::spawn(serve_on(listener, state.clone(), Security::plain()));
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
        assert_eq!(
            (not_ready.0, not_ready.2.as_str()),
            (503, "waiting for the cluster\n")
        );
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
    async fn readiness_and_health_say_what_failed() {
        let (address, state) = server().await;
        state.ready.store(true, Ordering::Relaxed);
        let failure = crate::Error::Config("the API server refused the watch".into());
        state.diagnostics.raise("the Kubernetes watches", &failure);
        state.diagnostics.count(&failure);
        let probe = state.clone();
        let (failing, errors) = tokio::task::spawn_blocking(move || {
            (get(address, "/readyz"), get(address, "/metrics"))
        })
        .await
        .unwrap();
        assert_eq!(failing.0, 503);
        assert_eq!(
            failing.2,
            "the Kubernetes watches (config): the API server refused the watch\n"
        );
        // Counted by kind, every kind present from 0.
        for expected in [
            r#"xdp_speaker_errors_total{kind="config"} 1"#,
            r#"xdp_speaker_errors_total{kind="dataplane"} 0"#,
        ] {
            assert!(errors.2.lines().any(|l| l == expected), "{}", errors.2);
        }
        probe.diagnostics.clear("the Kubernetes watches");
        // A daemon that is gone (its Health closed) is not healthy.
        probe.health.close();
        let (ready, health) = tokio::task::spawn_blocking(move || {
            (get(address, "/readyz"), get(address, "/healthz"))
        })
        .await
        .unwrap();
        assert_eq!(ready.0, 200);
        assert_eq!(health.0, 503);
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
