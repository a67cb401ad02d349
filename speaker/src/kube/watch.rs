//! The Kubernetes source: watches Nodes, Services and EndpointSlices in all
//! namespaces and MetalLB's IPAddressPools and L2Advertisements in its own
//! namespace, and tells the reconciler what changed as [`Change`]s.
//!
//! What the daemon relies on:
//! - Nothing is sent before every kind has been listed once; then one
//!   [`Change::Reset`] holds everything. The maps a restarted speaker adopts
//!   are therefore never compared with a half-listed cluster.
//! - After that only differences are sent, and only when the election's view
//!   of an object changed: Node heartbeats, `resourceVersion`-only updates or
//!   fields the election does not read send nothing.
//! - A watch that fails (including `410 Gone` after an etcd compaction) is
//!   retried with backoff and lists its kind again. The new list replaces the
//!   old one only once complete, and is compared with what was sent: objects
//!   that still exist are never reported deleted, and a failing API server
//!   never withdraws anything.
//! - An object that cannot be used (a pool with a bad CIDR) is skipped with a
//!   logged error and kept in [`SkippedObjects`], as the file source records
//!   [`Problem`]s; everything else keeps flowing.
//!
//! MetalLB's two CRDs are watched as [`DynamicObject`]s and converted through
//! `serde_json` into the serde types of `cluster`: the speaker then needs no
//! `Resource` implementation of its own, and an object of the wrong shape
//! becomes a skipped object instead of a failed list (a typed watcher would
//! fail the whole list on one undecodable object, and keep failing).

use std::{
    fmt,
    sync::{Arc, Mutex},
};

use futures::{stream::BoxStream, StreamExt};
use kube::{
    api::Api,
    runtime::{watcher, WatchStreamExt},
    Client, Resource,
};
use serde::de::DeserializeOwned;
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use super::{
    calls,
    client::SourceError,
    diff::{Event, SourceState, Update},
    translate::{
        endpoint_slice, ip_address_pool, l2_advertisement, node, object_key, service, Converted,
        ObjectKey,
    },
};
use crate::{
    cluster::Change,
    cluster::{Kind, Problem},
    metrics::ClientStats,
};

/// Watches the cluster and sends its changes on `tx` until `tx` is closed.
/// See the module documentation for what is sent when.
pub async fn run(
    client: Client,
    metallb_namespace: String,
    tx: mpsc::Sender<Change>,
    stats: ClientStats,
) -> Result<(), SourceError> {
    KubeSource::new(client, metallb_namespace)
        .with_stats(stats)
        .run(tx)
        .await
}

/// [`run`], with access to the objects it skipped.
pub struct KubeSource {
    client: Client,
    metallb_namespace: String,
    skipped: SkippedObjects,
    stats: ClientStats,
}

impl KubeSource {
    pub fn new(client: Client, metallb_namespace: impl Into<String>) -> Self {
        KubeSource {
            client,
            metallb_namespace: metallb_namespace.into(),
            skipped: SkippedObjects::default(),
            stats: ClientStats::default(),
        }
    }

    /// Counts updates and failed updates into `stats` (MetalLB's
    /// `metallb_k8s_client_updates_total` and `_update_errors_total`).
    pub fn with_stats(mut self, stats: ClientStats) -> Self {
        self.stats = stats;
        self
    }

    /// The objects skipped as unusable, kept current while [`Self::run`] runs.
    pub fn skipped(&self) -> SkippedObjects {
        self.skipped.clone()
    }

    pub async fn run(self, tx: mpsc::Sender<Change>) -> Result<(), SourceError> {
        let client = self.client;
        let namespace = self.metallb_namespace.as_str();
        let mut events = futures::stream::select_all([
            watch(
                calls::NODES.cluster_api(client.clone()),
                Kind::Node,
                node,
                Event::Nodes,
            ),
            watch(
                calls::SERVICES.api(client.clone(), None),
                Kind::Service,
                service,
                Event::Services,
            ),
            watch(
                calls::ENDPOINT_SLICES.api(client.clone(), None),
                Kind::EndpointSlice,
                endpoint_slice,
                Event::EndpointSlices,
            ),
            watch(
                calls::IP_ADDRESS_POOLS.dynamic_api(client.clone(), namespace),
                Kind::IpAddressPool,
                ip_address_pool,
                Event::Pools,
            ),
            watch(
                calls::L2_ADVERTISEMENTS.dynamic_api(client, namespace),
                Kind::L2Advertisement,
                l2_advertisement,
                Event::Advertisements,
            ),
        ]);
        info!("watching Nodes, Services, EndpointSlices, and MetalLB objects in {namespace}");

        let mut state = SourceState::default();
        let stats = self.stats;
        let mut refused = 0;
        while let Some(event) = events.next().await {
            let event = match event {
                Ok(event) => event,
                Err((kind, e)) => {
                    stats.update_errors.inc();
                    log_watch_error(kind, &e);
                    continue;
                }
            };
            stats.updates.inc();
            let changes = state.apply(event);
            if let Some(problems) = state.take_changed_problems() {
                // An update that made one more object unusable failed.
                if problems.len() > refused {
                    stats.update_errors.inc();
                }
                refused = problems.len();
                self.skipped.set(problems);
            }
            for change in changes {
                if tx.send(change).await.is_err() {
                    debug!("change receiver gone, stopping the Kubernetes watches");
                    return Ok(());
                }
            }
        }
        Err(SourceError::WatchesEnded)
    }
}

/// The objects the source skipped as unusable, by kind, namespace and name.
#[derive(Clone, Debug, Default)]
pub struct SkippedObjects(Arc<Mutex<Vec<Problem>>>);

impl SkippedObjects {
    pub fn list(&self) -> Vec<Problem> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn set(&self, problems: Vec<Problem>) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = problems;
    }
}

fn log_watch_error(kind: Kind, e: &watcher::Error) {
    match e {
        watcher::Error::WatchError(status) if status.code == 410 => {
            let kind = kind.name();
            info!("{kind} watch expired ({}), listing again", status.message)
        }
        _ => warn!(
            kind = kind.name(),
            error = %e,
            "{} watch failed, retrying: {e}",
            kind.name()
        ),
    }
}

type EventStream = BoxStream<'static, Result<Event, (Kind, watcher::Error)>>;

fn watch<K, T>(
    api: Api<K>,
    kind: Kind,
    convert: fn(K) -> (ObjectKey, Converted<T>),
    wrap: fn(Update<T>) -> Event,
) -> EventStream
where
    K: Resource + Clone + DeserializeOwned + fmt::Debug + Send + 'static,
    T: 'static,
{
    watcher(api, from_watch_cache(watcher::Config::default()))
        .default_backoff()
        .map(move |event| {
            let update = match event.map_err(|e| (kind, e))? {
                watcher::Event::Init => Update::Init,
                watcher::Event::InitApply(object) => {
                    let (key, value) = convert(object);
                    Update::InitApply(key, value)
                }
                watcher::Event::InitDone => Update::InitDone,
                watcher::Event::Apply(object) => {
                    let (key, value) = convert(object);
                    Update::Apply(key, value)
                }
                watcher::Event::Delete(object) => Update::Delete(object_key(object.meta())),
            };
            Ok(wrap(update))
        })
        .boxed()
}

/// `config` listing from the API server's watch cache (`resourceVersion=0`,
/// `NotOlderThan`), as client-go's reflector does for MetalLB: one response
/// per kind instead of a consistent read from etcd per 500 objects (see
/// docs/kubernetes.md). Without a page size: kube-core 5.0 leaves
/// `resourceVersion=0` out of a list that has a `limit` (its
/// `ListParams::populate_qp`), which would make `any_semantic` a paginated
/// consistent read again, and the watch cache ignores `limit` anyway.
pub(super) fn from_watch_cache(config: watcher::Config) -> watcher::Config {
    watcher::Config {
        page_size: None,
        ..config.any_semantic()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_come_from_the_watch_cache_unpaginated() {
        let config = from_watch_cache(watcher::Config::default().labels("a=b"));
        assert_eq!(config.list_semantic, watcher::ListSemantic::Any);
        assert_eq!(
            config.page_size, None,
            "a limit would drop resourceVersion=0"
        );
        assert_eq!(config.label_selector.as_deref(), Some("a=b"));
    }
}
