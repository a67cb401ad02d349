//! Starting and stopping the server, and the in-process test API.

use std::{
    fs::File,
    net::{Ipv4Addr, SocketAddr},
    path::PathBuf,
    sync::{mpsc, Arc, OnceLock},
    thread::{self, JoinHandle},
    time::Duration,
};

use hyper_util::rt::{TokioExecutor, TokioIo};
use nix::sched::CloneFlags;
use serde_json::Value;
use tokio::{net::TcpListener, sync::oneshot};
use tokio_rustls::TlsAcceptor;

use crate::{
    api_error::ApiError,
    controls::{Controls, Fault, RequestRecord},
    http::{self, Shared},
    kinds::{self, Resource},
    load::{self, LoadError},
    reviews::Reviews,
    selector::Selection,
    store::{Page, Part, PatchBody, Store},
    tls,
};

/// How a [`Server`] serves.
#[derive(Debug, Clone)]
pub struct Options {
    /// Default 127.0.0.1:0 (a free port).
    pub listen: SocketAddr,
    /// A network namespace file (`/run/netns/NAME`) the server thread
    /// enters before it binds, so that it serves inside that namespace.
    pub netns: Option<PathBuf>,
    /// HTTPS with a fresh CA ([`Server::ca_pem`]).
    pub tls: bool,
    /// Require `Authorization: Bearer TOKEN` (401 otherwise).
    pub token: Option<String>,
    /// Multi-document YAML files whose objects exist from the start (no
    /// watch events).
    pub preload: Vec<PathBuf>,
    /// How often a watch that allows bookmarks gets one.
    pub bookmark_interval: Duration,
    /// Who the TokenReviews and SubjectAccessReviews say tokens are and
    /// what they may do (default: nobody, nothing).
    pub reviews: Reviews,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            netns: None,
            tls: false,
            token: None,
            preload: Vec::new(),
            bookmark_interval: Duration::from_secs(5),
            reviews: Reviews::default(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("loading {path}: {source}")]
    Load { path: PathBuf, source: LoadError },
    #[error("entering network namespace {path}: {reason}")]
    Netns { path: PathBuf, reason: String },
    #[error("serving on {listen}: {reason}")]
    Serve { listen: SocketAddr, reason: String },
}

/// A running stand-in API server; stopped (every connection closed) on
/// drop.
pub struct Server {
    url: String,
    local_addr: SocketAddr,
    ca_pem: Option<String>,
    shared: Arc<Shared>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

fn not_served(api_version: &str, kind: &str) -> ApiError {
    ApiError::new(
        404,
        "NotFound",
        format!("kind {api_version} {kind} is not served"),
    )
}

impl Server {
    pub fn start(options: Options) -> Result<Server, StartError> {
        let store = Store::default();
        for path in &options.preload {
            let text = std::fs::read_to_string(path).map_err(|source| StartError::Read {
                path: path.clone(),
                source,
            })?;
            load::preload(&store, &text).map_err(|source| StartError::Load {
                path: path.clone(),
                source,
            })?;
        }
        let address = Arc::new(OnceLock::new());
        let shared = Arc::new(Shared {
            store,
            controls: Controls::default(),
            token: options.token.clone(),
            bookmark_interval: options.bookmark_interval,
            reviews: options.reviews.clone(),
            server_address: Arc::clone(&address),
        });

        let listen = options.listen;
        let (ready_tx, ready) = mpsc::channel();
        let (stop, stopped) = oneshot::channel();
        let serving = Arc::clone(&shared);
        let thread = thread::Builder::new()
            .name("kube-standin".into())
            .spawn(move || serve_thread(options, serving, ready_tx, stopped))
            .map_err(|e| StartError::Serve {
                listen,
                reason: e.to_string(),
            })?;
        let mut server = Server {
            url: String::new(),
            local_addr: listen,
            ca_pem: None,
            shared,
            stop: Some(stop),
            thread: Some(thread),
        };
        match ready.recv() {
            Ok(Ok((local_addr, ca_pem))) => {
                let scheme = if ca_pem.is_some() { "https" } else { "http" };
                server.url = format!("{scheme}://{local_addr}");
                server.local_addr = local_addr;
                server.ca_pem = ca_pem;
                let _ = address.set(local_addr.to_string());
                Ok(server)
            }
            Ok(Err(error)) => Err(error),
            Err(_) => Err(StartError::Serve {
                listen,
                reason: "the server thread ended".into(),
            }),
        }
    }

    /// `http(s)://ADDRESS:PORT`.
    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The CA that signed the server's certificate (with TLS).
    pub fn ca_pem(&self) -> Option<&str> {
        self.ca_pem.as_deref()
    }

    fn resource(&self, api_version: &str, kind: &str) -> Result<&'static Resource, ApiError> {
        kinds::by_kind(api_version, kind).ok_or_else(|| not_served(api_version, kind))
    }

    /// Creates `object` (`apiVersion`, `kind`, `metadata.namespace` say
    /// where) as a client would, except that a given `status` is kept even
    /// where the apiserver drops it on create (as if its controller had
    /// written it right after). Watches see it.
    pub fn create(&self, object: Value) -> Result<Value, ApiError> {
        let text = |field: &str| object[field].as_str().unwrap_or("").to_owned();
        let resource = self.resource(&text("apiVersion"), &text("kind"))?;
        self.shared.store.create(resource, None, object, true)
    }

    /// A JSON merge patch of an object or of its status.
    pub fn patch(
        &self,
        part: Part,
        api_version: &str,
        kind: &str,
        namespace: Option<&str>,
        name: &str,
        patch: Value,
    ) -> Result<Value, ApiError> {
        let resource = self.resource(api_version, kind)?;
        if part == Part::Status && !resource.status_subresource {
            return Err(ApiError::new(
                404,
                "NotFound",
                format!("{kind} has no status subresource"),
            ));
        }
        self.shared
            .store
            .patch(resource, namespace, name, part, PatchBody::Merge(patch))
    }

    pub fn delete(
        &self,
        api_version: &str,
        kind: &str,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<Value, ApiError> {
        let resource = self.resource(api_version, kind)?;
        self.shared.store.delete(resource, namespace, name)
    }

    /// The object, `None` if it does not exist.
    pub fn get(
        &self,
        api_version: &str,
        kind: &str,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<Option<Value>, ApiError> {
        let resource = self.resource(api_version, kind)?;
        match self.shared.store.get(resource, namespace, name) {
            Ok(object) => Ok(Some(object)),
            Err(e) if e.code == 404 => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The objects of a kind in `namespace` (all namespaces for `None`),
    /// by namespace and name.
    pub fn list(
        &self,
        api_version: &str,
        kind: &str,
        namespace: Option<&str>,
    ) -> Result<Vec<Value>, ApiError> {
        let resource = self.resource(api_version, kind)?;
        let selection = Selection {
            namespace: namespace.map(str::to_owned),
            ..Selection::default()
        };
        let (items, ..) = self
            .shared
            .store
            .list(resource, &selection, &Page::default())?;
        Ok(items)
    }

    /// Like an etcd compaction: every open watch ends with `410 Gone`
    /// (reason `Expired`) and watches from older versions are refused.
    /// Returns the revision compacted at.
    pub fn compact(&self) -> u64 {
        self.shared.store.compact()
    }

    /// The current resourceVersion (etcd revision).
    pub fn revision(&self) -> u64 {
        self.shared.store.revision()
    }

    /// Answers the next `fault.times` matching requests with `fault.code`.
    pub fn inject(&self, fault: Fault) {
        self.shared.controls.inject(fault);
    }

    /// The faults not used up yet.
    pub fn pending_faults(&self) -> Vec<Fault> {
        self.shared.controls.faults()
    }

    /// Every request served (not the `/_standin` controls).
    pub fn requests(&self) -> Vec<RequestRecord> {
        self.shared.controls.requests()
    }

    /// How many requests had `verb` on `resource` (plural).
    pub fn count_requests(&self, verb: &str, resource: &str) -> usize {
        self.shared.controls.count(verb, resource)
    }

    pub fn clear_requests(&self) {
        self.shared.controls.clear_requests();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

type Ready = Result<(SocketAddr, Option<String>), StartError>;

fn serve_thread(
    options: Options,
    shared: Arc<Shared>,
    ready: mpsc::Sender<Ready>,
    stopped: oneshot::Receiver<()>,
) {
    let listen = options.listen;
    let serve_error = |reason: String| StartError::Serve { listen, reason };
    if let Some(path) = &options.netns {
        // Only this thread moves; the runtime's threads are spawned from it
        // below and start in the namespace too.
        let entered = File::open(path)
            .map_err(|e| e.to_string())
            .and_then(|file| {
                nix::sched::setns(&file, CloneFlags::CLONE_NEWNET).map_err(|e| e.to_string())
            });
        if let Err(source) = entered {
            let _ = ready.send(Err(StartError::Netns {
                path: path.clone(),
                reason: source,
            }));
            return;
        }
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("kube-standin-worker")
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            let _ = ready.send(Err(serve_error(e.to_string())));
            return;
        }
    };
    let bound = runtime.block_on(async {
        let listener = TcpListener::bind(listen).await.map_err(|e| e.to_string())?;
        let local_addr = listener.local_addr().map_err(|e| e.to_string())?;
        let certificates = if options.tls {
            Some(tls::generate(&[local_addr.ip()]).map_err(|e| format!("TLS: {e}"))?)
        } else {
            None
        };
        Ok::<_, String>((listener, local_addr, certificates))
    });
    let (listener, local_addr, certificates) = match bound {
        Ok(bound) => bound,
        Err(source) => {
            let _ = ready.send(Err(serve_error(source)));
            return;
        }
    };
    let ca_pem = certificates.as_ref().map(|c| c.ca_pem.clone());
    let acceptor = certificates.map(|c| TlsAcceptor::from(c.server_config));
    if ready.send(Ok((local_addr, ca_pem))).is_err() {
        return;
    }
    runtime.block_on(serve(listener, acceptor, shared, stopped));
    // Open watches are tasks of this runtime: dropping it closes them.
    runtime.shutdown_timeout(Duration::from_secs(1));
}

async fn serve(
    listener: TcpListener,
    acceptor: Option<TlsAcceptor>,
    shared: Arc<Shared>,
    mut stopped: oneshot::Receiver<()>,
) {
    loop {
        let stream = tokio::select! {
            _ = &mut stopped => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(_) => {
                    // Out of descriptors, or a connection reset before it
                    // was accepted: try again shortly.
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            },
        };
        let shared = Arc::clone(&shared);
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                http::handle(Arc::clone(&shared), request)
            });
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            match acceptor {
                Some(acceptor) => {
                    if let Ok(stream) = acceptor.accept(stream).await {
                        let _ = builder
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                    }
                }
                None => {
                    let _ = builder
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                }
            }
        });
    }
}
