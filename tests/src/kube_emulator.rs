//! The stand-in Kubernetes API server ([`kube_standin`], a crate of this
//! workspace) for tests of the Kubernetes source and the status writer.
//!
//! [`KubeEmulator::start`] serves on a free port of 127.0.0.1 with the given
//! files preloaded and stops on `Drop`. Objects are created, patched and
//! deleted in-process as [`Value`]s named by `apiVersion`, `kind`,
//! namespace and name, and watches see those changes as they would see a
//! controller's; [`KubeEmulator::compact`] makes every open watch fail with
//! `410 Gone`. A stand-in that cannot start fails the test.

use std::path::{Path, PathBuf};

use kube::{Client, Config};
pub use kube_standin::Part;
use kube_standin::{ApiError, Options, Server};
use serde_json::Value;

/// How many of the last requests [`KubeEmulator::request_log`] shows.
const LOG_TAIL: usize = 20;

/// A running stand-in API server; stopped on drop.
pub struct KubeEmulator {
    server: Server,
}

/// The value of an in-process call, or a panic naming `what` failed.
fn must<T>(what: impl FnOnce() -> String, result: Result<T, ApiError>) -> T {
    result.unwrap_or_else(|e| panic!("{}: {e}", what()))
}

impl KubeEmulator {
    /// Starts a stand-in with the objects of `load` (multi-document YAML).
    pub fn start(load: &[&Path]) -> KubeEmulator {
        KubeEmulator::start_with(Options {
            preload: load.iter().map(|path| path.to_path_buf()).collect(),
            ..Options::default()
        })
    }

    /// Starts a stand-in serving inside network namespace `ns` (its server
    /// thread joins it before binding), with `load` preloaded: reachable at
    /// the namespace's own loopback.
    pub fn start_in(ns: &str, load: &[PathBuf]) -> KubeEmulator {
        KubeEmulator::start_in_with(ns, load, Options::default())
    }

    /// [`Self::start_in`] with other `options` (reviews, a token...).
    pub fn start_in_with(ns: &str, load: &[PathBuf], options: Options) -> KubeEmulator {
        KubeEmulator::start_with(Options {
            netns: Some(Path::new("/run/netns").join(ns)),
            preload: load.to_vec(),
            ..options
        })
    }

    /// Starts a stand-in with any [`Options`] (a network namespace, TLS...).
    pub fn start_with(options: Options) -> KubeEmulator {
        let server = Server::start(options)
            .unwrap_or_else(|e| panic!("the stand-in API server did not start: {e}"));
        KubeEmulator { server }
    }

    pub fn url(&self) -> &str {
        self.server.url()
    }

    /// The stand-in itself: its test controls (faults, request log).
    pub fn standin(&self) -> &Server {
        &self.server
    }

    /// The last requests served, one per line, for assertion messages.
    pub fn request_log(&self) -> String {
        let requests = self.server.requests();
        let tail = &requests[requests.len().saturating_sub(LOG_TAIL)..];
        tail.iter()
            .map(|r| {
                let query = if r.query.is_empty() {
                    String::new()
                } else {
                    format!("?{}", r.query)
                };
                format!(
                    "{:>8.3}s {} {}{query} -> {}\n",
                    r.at.as_secs_f64(),
                    r.method,
                    r.path,
                    r.code
                )
            })
            .collect()
    }

    /// A client for the stand-in (no authentication). Needs a Tokio runtime.
    pub fn client(&self) -> Client {
        let config = Config::new(self.url().parse().expect("the stand-in's URL"));
        Client::try_from(config).expect("kube client")
    }

    /// Creates `object` (`apiVersion`, `kind` and `metadata.namespace` say
    /// where), its `status` included, and returns it as stored.
    pub fn create(&self, object: Value) -> Value {
        let kind = object["kind"].clone();
        must(|| format!("creating {kind}"), self.server.create(object))
    }

    /// A JSON merge patch of the object or of its `status` subresource.
    pub fn patch(
        &self,
        part: Part,
        api_version: &str,
        kind: &str,
        namespace: Option<&str>,
        name: &str,
        patch: Value,
    ) -> Value {
        must(
            || format!("patching {kind} {name} ({part:?})"),
            self.server
                .patch(part, api_version, kind, namespace, name, patch),
        )
    }

    pub fn delete(&self, api_version: &str, kind: &str, namespace: Option<&str>, name: &str) {
        must(
            || format!("deleting {kind} {name}"),
            self.server.delete(api_version, kind, namespace, name),
        );
    }

    pub fn get(
        &self,
        api_version: &str,
        kind: &str,
        namespace: Option<&str>,
        name: &str,
    ) -> Option<Value> {
        must(
            || format!("reading {kind} {name}"),
            self.server.get(api_version, kind, namespace, name),
        )
    }

    /// The objects of a kind in `namespace` (all namespaces for `None`).
    pub fn list(&self, api_version: &str, kind: &str, namespace: Option<&str>) -> Vec<Value> {
        must(
            || format!("listing {kind}"),
            self.server.list(api_version, kind, namespace),
        )
    }

    /// Every open watch fails with `410 Gone`, as after an etcd compaction.
    pub fn compact(&self) {
        self.server.compact();
    }
}
