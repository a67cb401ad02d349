//! This node's `ServiceL2Status` objects (metallb.io/v1beta1), kept as
//! MetalLB's `Layer2StatusReconciler` keeps them
//! (internal/k8s/controllers/layer2_status_controller.go), so that
//! `kubectl get servicel2status` reads the same:
//!
//! - one object per Service this node announces, in the speaker's
//!   namespace, named by the API server from `generateName: l2-`, labelled
//!   `metallb.io/node`, `metallb.io/service-name`,
//!   `metallb.io/service-namespace`, owned by the speaker's Pod (so the
//!   garbage collector removes them with it);
//! - `status.node`, `serviceName`, `serviceNamespace`, and `interfaces` only
//!   when the L2Advertisement names interfaces (then the named ones this
//!   node has; MetalLB leaves it empty for "all interfaces").
//!
//! The daemon publishes what it announces ([`StatusWriter::publish`]); a
//! task reconciles the API server towards it, level-triggered: it watches
//! this node's objects (label selector on the node), recreates one that
//! was deleted, corrects one that was changed, deletes those of Services
//! no longer announced, and retries failed writes with backoff. At start,
//! objects of this node left by an earlier run for Services not announced
//! any more are deleted, but only once the daemon has published its first
//! complete picture: before that, "not announced" means "not known yet".
//!
//! Unlike MetalLB, a node never deletes another node's objects: two nodes
//! that both believe they own a Service (while membership settles) would
//! otherwise delete each other's and recreate their own in a loop. A dead
//! node's objects go with its Pod (owner reference), a live one removes
//! its own.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
    sync::Arc,
    time::Duration,
};

use futures::StreamExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::{
    api::{DeleteParams, DynamicObject, Patch, PatchParams, PostParams, TypeMeta},
    runtime::{watcher, WatchStreamExt},
    Api, Client, ResourceExt,
};
use serde_json::{json, Value};
use tokio::{sync::watch, time::Instant};
use tracing::{debug, info, warn};

use super::{
    calls, events::EventRecorder, resources::service_l2_status_resource, watch::from_watch_cache,
};
use crate::{
    cluster::ServiceKey,
    daemon::reconciler::{InterfaceSelection, OwnedIp},
    interfaces::Interface,
};

pub use super::events::{node_assigned_message, REPORTING_CONTROLLER};

pub const LABEL_NODE: &str = "metallb.io/node";
pub const LABEL_SERVICE_NAME: &str = "metallb.io/service-name";
pub const LABEL_SERVICE_NAMESPACE: &str = "metallb.io/service-namespace";

/// One write is given up after this (and retried).
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// Backoff after a failed reconcile: doubling from the first, up to the last.
const RETRY_FIRST: Duration = Duration::from_millis(500);
const RETRY_MAX: Duration = Duration::from_secs(30);

/// The Services this node announces, each with the interfaces to list in
/// its status (empty: all interfaces, none listed).
pub type AnnouncedServices = BTreeMap<ServiceKey, Vec<String>>;

/// What the statuses say for what this node owns: every Service with the
/// named interfaces it is announced on here (none listed when its
/// advertisement names none, as MetalLB). A Service none of whose
/// interfaces exist here is not announced, and has no status.
pub fn announced_services(
    owned: &BTreeMap<IpAddr, OwnedIp>,
    interfaces: &[Interface],
) -> AnnouncedServices {
    // `None`: announced on every interface.
    let mut announced: BTreeMap<ServiceKey, Option<BTreeSet<String>>> = BTreeMap::new();
    for entry in owned.values() {
        let named = match &entry.interfaces {
            InterfaceSelection::All => None,
            InterfaceSelection::Named(names) => Some(names),
        };
        let chosen = crate::interfaces::select(interfaces, named);
        if chosen.is_empty() {
            continue;
        }
        for service in &entry.services {
            let listed = announced
                .entry(service.clone())
                .or_insert_with(|| named.map(|_| BTreeSet::new()));
            match (listed.as_mut(), named) {
                (Some(listed), Some(_)) => listed.extend(chosen.iter().map(|i| i.name.clone())),
                // One of its IPs goes out on every interface.
                (_, None) => *listed = None,
                (None, Some(_)) => {}
            }
        }
    }
    announced
        .into_iter()
        .map(|(service, names)| (service, names.into_iter().flatten().collect()))
        .collect()
}

/// The speaker's own Pod (downward API), owner of its statuses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpeakerPod {
    pub name: String,
    pub uid: String,
    /// `None`: assumed to be the statuses' namespace (as in MetalLB).
    pub namespace: Option<String>,
}

impl SpeakerPod {
    /// From `--pod-name`/`--pod-uid` (POD_NAME, POD_UID): both or nothing.
    pub fn from_downward_api(
        name: Option<String>,
        uid: Option<String>,
        namespace: Option<String>,
    ) -> Option<SpeakerPod> {
        match (name, uid) {
            (Some(name), Some(uid)) if !name.is_empty() && !uid.is_empty() => Some(SpeakerPod {
                name,
                uid,
                namespace,
            }),
            _ => None,
        }
    }

    /// An owner reference to this Pod, for objects in `namespace`. `None`
    /// when the Pod lives elsewhere: owners must share their dependents'
    /// namespace, and the garbage collector treats a cross-namespace owner
    /// as absent (and deletes the dependent).
    fn owner_in(&self, namespace: &str) -> Option<OwnerReference> {
        if self.namespace.as_deref().is_some_and(|ns| ns != namespace) {
            return None;
        }
        Some(OwnerReference {
            api_version: "v1".to_owned(),
            kind: "Pod".to_owned(),
            name: self.name.clone(),
            uid: self.uid.clone(),
            // As controller-runtime's SetOwnerReference, which MetalLB uses.
            controller: None,
            block_owner_deletion: None,
        })
    }
}

/// Where this node's statuses and events go.
#[derive(Clone, Debug)]
pub struct StatusConfig {
    pub node: String,
    /// The speaker's (MetalLB's) namespace.
    pub namespace: String,
    pub pod: Option<SpeakerPod>,
}

/// Publishes this node's announcements to the status reconciler, and
/// records Events. Cheap to clone; the reconciler ends when the last clone
/// is dropped.
#[derive(Clone)]
pub struct StatusWriter {
    announced: Arc<watch::Sender<Option<AnnouncedServices>>>,
    events: EventRecorder,
}

/// Starts runs of the status reconciler, for the daemon's supervisor: a run
/// whose watch ends, or that panics, is started again, from a fresh list,
/// against the writer's latest announcement.
#[derive(Clone)]
pub struct StatusReconciler {
    /// Weak: a reconciler must not keep the writer's channel open, or it
    /// would never learn that the writer is gone.
    announced: std::sync::Weak<watch::Sender<Option<AnnouncedServices>>>,
    statuses: Api<DynamicObject>,
    node: String,
    namespace: String,
    owner: Option<OwnerReference>,
}

impl StatusReconciler {
    /// One run: until its watch ends or the writer is dropped (at once when
    /// it already is).
    pub async fn run(&self) {
        let Some(announced) = self.announced.upgrade().map(|sender| sender.subscribe()) else {
            return;
        };
        let reconciler = Reconciler {
            statuses: self.statuses.clone(),
            node: self.node.clone(),
            namespace: self.namespace.clone(),
            owner: self.owner.clone(),
            seen: BTreeMap::new(),
            listing: None,
            listed: false,
        };
        reconciler.run(announced).await;
    }
}

impl StatusWriter {
    /// The writer, and the reconciler for the caller to run (supervised);
    /// the Event recorder's task starts here, so this must be called within
    /// a Tokio runtime.
    pub fn new(client: Client, config: StatusConfig) -> (Self, StatusReconciler) {
        let events = EventRecorder::new(client.clone(), config.node.clone());
        let owner = match &config.pod {
            Some(pod) => {
                let owner = pod.owner_in(&config.namespace);
                if owner.is_none() {
                    warn!(
                        "the speaker pod {:?} is not in {:?}: its ServiceL2Statuses get no owner \
                         and outlive it",
                        pod.name, config.namespace
                    );
                }
                owner
            }
            None => {
                info!("no --pod-name/--pod-uid: ServiceL2Statuses get no owner reference");
                None
            }
        };
        let announced = Arc::new(watch::channel(None).0);
        let reconciler = StatusReconciler {
            announced: Arc::downgrade(&announced),
            statuses: calls::SERVICE_L2_STATUSES.dynamic_api(client, &config.namespace),
            node: config.node,
            namespace: config.namespace,
            owner,
        };
        (StatusWriter { announced, events }, reconciler)
    }

    /// Everything this node announces now. The first call is taken as the
    /// first complete picture: statuses of Services not in it are deleted.
    /// A Service new in it gets a `nodeAssigned` Event.
    pub fn publish(&self, announced: AnnouncedServices) {
        self.announced.send_if_modified(|current| {
            if current.as_ref() == Some(&announced) {
                return false;
            }
            // Events do not wait for the statuses (nor fail with them).
            for service in announced.keys() {
                if !current.as_ref().is_some_and(|c| c.contains_key(service)) {
                    self.events.node_assigned(service);
                }
            }
            *current = Some(announced);
            true
        });
    }

    /// This node won `ip` of `service` but has none of its interfaces:
    /// MetalLB's `announceFailed` Event.
    pub fn announce_failed(&self, service: &ServiceKey, ip: IpAddr) {
        self.events.announce_failed(service, ip);
    }

    /// Another host claims `ip` of `service`: an `IPConflict` Event with
    /// `note` (see [`super::events::ip_conflict_message`]).
    pub fn ip_conflict(&self, service: &ServiceKey, note: String) {
        self.events.ip_conflict(service, note);
    }
}

/// One of this node's objects, as last seen.
#[derive(Clone, Debug, PartialEq)]
struct Seen {
    /// From its labels; `None` when they do not name a Service.
    service: Option<ServiceKey>,
    status: Value,
    /// The uids of its owners.
    owners: Vec<String>,
    resource_version: Option<u64>,
}

impl Seen {
    fn of(object: &DynamicObject) -> Seen {
        let labels = object.labels();
        let service = match (
            labels.get(LABEL_SERVICE_NAMESPACE),
            labels.get(LABEL_SERVICE_NAME),
        ) {
            (Some(namespace), Some(name)) => Some(ServiceKey::new(namespace, name)),
            _ => None,
        };
        Seen {
            service,
            status: object.data.get("status").cloned().unwrap_or(Value::Null),
            owners: object
                .owner_references()
                .iter()
                .map(|owner| owner.uid.clone())
                .collect(),
            resource_version: object
                .resource_version()
                .and_then(|version| version.parse().ok()),
        }
    }

    /// Whether `self` is not older than `other` (etcd revisions are
    /// integers; anything else is taken as newer).
    fn not_older_than(&self, other: &Seen) -> bool {
        match (self.resource_version, other.resource_version) {
            (Some(new), Some(old)) => new >= old,
            _ => true,
        }
    }
}

struct Reconciler {
    statuses: Api<DynamicObject>,
    node: String,
    namespace: String,
    owner: Option<OwnerReference>,
    /// This node's objects by name: the watch's view, updated by our own
    /// writes as they succeed (so a reconcile right after a create does not
    /// create again before the watch reports it).
    seen: BTreeMap<String, Seen>,
    /// A (re)list in progress; replaces `seen` when complete.
    listing: Option<BTreeMap<String, Seen>>,
    listed: bool,
}

impl Reconciler {
    async fn run(mut self, mut announced: watch::Receiver<Option<AnnouncedServices>>) {
        let selector = format!("{LABEL_NODE}={}", self.node);
        let config = from_watch_cache(watcher::Config::default().labels(&selector));
        let mut objects = watcher(self.statuses.clone(), config)
            .default_backoff()
            .boxed();
        let mut dirty = false;
        let mut failures = 0u32;
        let mut retry_at: Option<Instant> = None;
        loop {
            tokio::select! {
                event = objects.next() => match event {
                    Some(Ok(event)) => dirty |= self.apply(event),
                    Some(Err(e)) => warn!(error = %e, "ServiceL2Status watch failed, retrying: {e}"),
                    None => return,
                },
                changed = announced.changed() => {
                    if changed.is_err() {
                        debug!("status writer dropped, stopping the status reconciler");
                        return;
                    }
                    dirty = true;
                }
                _ = sleep_until(retry_at), if retry_at.is_some() => {
                    retry_at = None;
                    dirty = true;
                }
            }
            // While backing off, changes wait for the retry.
            if !dirty || !self.listed || retry_at.is_some() {
                continue;
            }
            let Some(wanted) = announced.borrow_and_update().clone() else {
                continue;
            };
            dirty = false;
            match self.reconcile(&wanted).await {
                Ok(()) => failures = 0,
                Err(e) => {
                    failures = failures.saturating_add(1);
                    let delay = backoff(failures);
                    warn!(
                        error = %e,
                        "ServiceL2Status reconcile failed ({failures} in a row), retrying in {delay:?}: {e}"
                    );
                    retry_at = Some(Instant::now() + delay);
                }
            }
        }
    }

    /// Takes in one watch event; whether it changed what is known.
    fn apply(&mut self, event: watcher::Event<DynamicObject>) -> bool {
        match event {
            watcher::Event::Init => {
                self.listing = Some(BTreeMap::new());
                false
            }
            watcher::Event::InitApply(object) => {
                self.listing
                    .get_or_insert_with(BTreeMap::new)
                    .insert(object.name_any(), Seen::of(&object));
                false
            }
            watcher::Event::InitDone => {
                self.seen = self.listing.take().unwrap_or_default();
                self.listed = true;
                true
            }
            watcher::Event::Apply(object) => {
                let seen = Seen::of(&object);
                let name = object.name_any();
                match self.seen.get(&name) {
                    Some(known) if known == &seen || !seen.not_older_than(known) => false,
                    _ => {
                        self.seen.insert(name, seen);
                        true
                    }
                }
            }
            watcher::Event::Delete(object) => self.seen.remove(&object.name_any()).is_some(),
        }
    }

    /// Brings this node's objects to `wanted`. Every object is attempted;
    /// the first error is returned.
    async fn reconcile(&mut self, wanted: &AnnouncedServices) -> Result<(), kube::Error> {
        let mut first_error = None;
        let mut note = |result: Result<(), kube::Error>| {
            if let Err(e) = result {
                first_error.get_or_insert(e);
            }
        };
        // One object per announced Service (the first by name); the others go.
        let mut kept: BTreeMap<ServiceKey, String> = BTreeMap::new();
        let mut surplus = Vec::new();
        for (name, seen) in &self.seen {
            match &seen.service {
                Some(service) if wanted.contains_key(service) && !kept.contains_key(service) => {
                    kept.insert(service.clone(), name.clone());
                }
                Some(service) => surplus.push((name.clone(), service.clone())),
                None => debug!("ServiceL2Status {name} of this node names no Service; left alone"),
            }
        }
        for (name, service) in surplus {
            let why = if wanted.contains_key(&service) {
                "a second one"
            } else {
                "not announced from this node"
            };
            info!(
                service = %service,
                "{service}: deleting ServiceL2Status {}/{name} ({why})",
                self.namespace
            );
            note(self.delete(&name).await);
        }
        for (service, interfaces) in wanted {
            let status = self.wanted_status(service, interfaces);
            let Some(name) = kept.get(service) else {
                note(self.create(service, status).await);
                continue;
            };
            let Some(seen) = self.seen.get(name) else {
                continue;
            };
            let adopt = self
                .owner
                .as_ref()
                .is_some_and(|owner| !seen.owners.contains(&owner.uid));
            let stale = seen.status != status;
            if adopt {
                note(self.adopt(name.clone()).await);
            }
            if stale {
                note(self.write_status(name.clone(), status).await);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    async fn create(&mut self, service: &ServiceKey, status: Value) -> Result<(), kube::Error> {
        let object = self.new_object(service);
        let created = within_timeout(self.statuses.create(&PostParams::default(), &object)).await?;
        let name = created.name_any();
        info!(
            service = %service,
            "{service}: created ServiceL2Status {}/{name}",
            self.namespace
        );
        self.seen.insert(name.clone(), Seen::of(&created));
        // The API server drops `status` on create (a subresource).
        self.write_status(name, status).await
    }

    /// Makes this Pod the owner of an object an earlier Pod of this node
    /// created (after a restart): the garbage collector would otherwise
    /// delete it with that Pod.
    async fn adopt(&mut self, name: String) -> Result<(), kube::Error> {
        let patch = json!({ "metadata": { "ownerReferences": self.owner.clone().into_iter().collect::<Vec<_>>() } });
        let patched = within_timeout(self.statuses.patch(
            &name,
            &PatchParams::default(),
            &Patch::Merge(patch),
        ))
        .await?;
        info!("adopted ServiceL2Status {}/{name}", self.namespace);
        self.seen.insert(name, Seen::of(&patched));
        Ok(())
    }

    async fn write_status(&mut self, name: String, status: Value) -> Result<(), kube::Error> {
        let mut patch = status;
        if patch.get("interfaces").is_none() {
            // A merge patch keeps what it does not mention.
            patch["interfaces"] = Value::Null;
        }
        let patched = within_timeout(self.statuses.patch_status(
            &name,
            &PatchParams::default(),
            &Patch::Merge(json!({ "status": patch })),
        ))
        .await?;
        debug!("ServiceL2Status {name} updated");
        self.seen.insert(name, Seen::of(&patched));
        Ok(())
    }

    async fn delete(&mut self, name: &str) -> Result<(), kube::Error> {
        match within_timeout(self.statuses.delete(name, &DeleteParams::default())).await {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.is_not_found() => {}
            Err(e) => return Err(e),
        }
        self.seen.remove(name);
        Ok(())
    }

    /// MetalLB's `MetalLBServiceL2Status`, empty fields omitted.
    fn wanted_status(&self, service: &ServiceKey, interfaces: &[String]) -> Value {
        let mut status = json!({
            "node": self.node,
            "serviceName": service.name,
            "serviceNamespace": service.namespace,
        });
        if !interfaces.is_empty() {
            status["interfaces"] = interfaces
                .iter()
                .map(|name| json!({ "name": name }))
                .collect();
        }
        status
    }

    fn new_object(&self, service: &ServiceKey) -> DynamicObject {
        let resource = service_l2_status_resource();
        DynamicObject {
            types: Some(TypeMeta {
                api_version: resource.api_version,
                kind: resource.kind,
            }),
            metadata: ObjectMeta {
                generate_name: Some("l2-".to_owned()),
                namespace: Some(self.namespace.clone()),
                labels: Some(BTreeMap::from([
                    (LABEL_NODE.to_owned(), self.node.clone()),
                    (LABEL_SERVICE_NAME.to_owned(), service.name.clone()),
                    (
                        LABEL_SERVICE_NAMESPACE.to_owned(),
                        service.namespace.clone(),
                    ),
                ])),
                owner_references: self.owner.clone().map(|owner| vec![owner]),
                ..ObjectMeta::default()
            },
            data: json!({ "spec": {} }),
        }
    }
}

async fn within_timeout<T>(
    write: impl std::future::Future<Output = Result<T, kube::Error>>,
) -> Result<T, kube::Error> {
    match tokio::time::timeout(WRITE_TIMEOUT, write).await {
        Ok(result) => result,
        Err(_) => Err(kube::Error::Service(
            format!("no answer within {WRITE_TIMEOUT:?}").into(),
        )),
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// The wait before retry number `failures` (from 1).
fn backoff(failures: u32) -> Duration {
    let doublings = failures.saturating_sub(1).min(16);
    RETRY_FIRST.saturating_mul(1 << doublings).min(RETRY_MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn interface(name: &str) -> Interface {
        Interface {
            name: name.to_owned(),
            index: 1,
            mac: [2, 0, 0, 0, 0, 1],
        }
    }

    fn owned(ip: &str, services: &[&str], interfaces: InterfaceSelection) -> (IpAddr, OwnedIp) {
        (
            ip.parse().unwrap(),
            OwnedIp {
                services: services
                    .iter()
                    .map(|name| ServiceKey::new("default", *name))
                    .collect(),
                interfaces,
            },
        )
    }

    fn named(names: &[&str]) -> InterfaceSelection {
        InterfaceSelection::Named(names.iter().map(|n| n.to_string()).collect())
    }

    #[test]
    fn statuses_list_only_named_interfaces_that_exist_here() {
        let here = [interface("eth0"), interface("eth1")];
        let owned = BTreeMap::from([
            owned("192.0.2.1", &["all"], InterfaceSelection::All),
            owned("192.0.2.2", &["named"], named(&["eth1", "eth9"])),
            owned("192.0.2.3", &["missing"], named(&["eth9"])),
            // Two IPs of one Service: one named, one on every interface.
            owned("192.0.2.4", &["both"], named(&["eth0"])),
            owned("192.0.2.5", &["both"], InterfaceSelection::All),
            owned("192.0.2.6", &["two"], named(&["eth0"])),
            owned("2001:db8::6", &["two"], named(&["eth1"])),
        ]);
        let announced = announced_services(&owned, &here);
        let by_name: BTreeMap<&str, Vec<&str>> = announced
            .iter()
            .map(|(service, names)| {
                (
                    service.name.as_str(),
                    names.iter().map(String::as_str).collect(),
                )
            })
            .collect();
        assert_eq!(
            by_name,
            BTreeMap::from([
                ("all", vec![]),
                ("both", vec![]),
                ("named", vec!["eth1"]),
                ("two", vec!["eth0", "eth1"]),
            ]),
            "`missing` has none of its interfaces here: no status"
        );
        assert!(
            announced_services(&owned, &[]).is_empty(),
            "no interface at all: nothing is announced"
        );
    }

    #[test]
    fn backoff_doubles_up_to_its_limit() {
        let waits: Vec<Duration> = (1..=8).map(backoff).collect();
        assert_eq!(waits[0], Duration::from_millis(500));
        assert_eq!(waits[1], Duration::from_secs(1));
        assert_eq!(waits[3], Duration::from_secs(4));
        assert_eq!(waits[7], RETRY_MAX);
        assert_eq!(backoff(u32::MAX), RETRY_MAX);
    }

    #[test]
    fn the_owner_is_the_pod_only_in_its_own_namespace() {
        let pod = SpeakerPod::from_downward_api(
            Some("speaker-x7k2p".into()),
            Some("0d3c9a1e".into()),
            Some("metallb-system".into()),
        )
        .unwrap();
        let owner = pod.owner_in("metallb-system").unwrap();
        assert_eq!(
            (owner.api_version.as_str(), owner.kind.as_str()),
            ("v1", "Pod")
        );
        assert_eq!(
            (owner.name.as_str(), owner.uid.as_str()),
            ("speaker-x7k2p", "0d3c9a1e")
        );
        assert_eq!(pod.owner_in("elsewhere"), None);
        assert_eq!(
            SpeakerPod::from_downward_api(Some("speaker".into()), None, None),
            None,
            "a name without a uid makes no owner"
        );
    }
}
