//! What the watches say, turned into [`Change`]s: the source's memory and
//! the differences it sends. No I/O; see [`super::watch`] for the rules the
//! daemon relies on (one Reset once every kind is listed, then differences
//! only, a relist replacing the old list only once complete).

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt,
};

use tracing::{debug, error, info};

use super::translate::{Converted, ObjectKey, Slice};
use crate::{
    cluster::{Change, ClusterState, Kind, Problem, ServiceEntry, ServiceKey},
    election::{Endpoint, IpAddressPool, L2Advertisement, Node, Service},
};

/// One watcher event, the object already converted.
#[derive(Debug)]
pub(super) enum Update<T> {
    /// A (re-)list starts; the objects follow as `InitApply`.
    Init,
    InitApply(ObjectKey, Converted<T>),
    /// The list is complete and replaces what was known.
    InitDone,
    Apply(ObjectKey, Converted<T>),
    Delete(ObjectKey),
}

#[derive(Debug)]
pub(super) enum Event {
    Nodes(Update<Node>),
    Services(Update<Service>),
    EndpointSlices(Update<Slice>),
    Pools(Update<IpAddressPool>),
    Advertisements(Update<L2Advertisement>),
}

/// What one kind's watch currently says, and the objects it skipped.
struct Store<T> {
    kind: Kind,
    /// The first list has completed.
    listed: bool,
    live: BTreeMap<ObjectKey, T>,
    problems: BTreeMap<ObjectKey, String>,
    /// A list in progress, which replaces `live` and `problems` when done.
    listing: Option<(BTreeMap<ObjectKey, T>, BTreeMap<ObjectKey, String>)>,
    problems_changed: bool,
}

/// Which objects of a store an update changed.
enum Touched<T> {
    Nothing,
    /// One object; `before` is its previous value.
    One {
        key: ObjectKey,
        before: Option<T>,
    },
    /// A list completed: anything may have changed.
    All,
}

impl<T> Touched<T> {
    fn any(&self) -> bool {
        !matches!(self, Touched::Nothing)
    }
}

impl<T: Clone + PartialEq> Store<T> {
    fn new(kind: Kind) -> Self {
        Store {
            kind,
            listed: false,
            live: BTreeMap::new(),
            problems: BTreeMap::new(),
            listing: None,
            problems_changed: false,
        }
    }

    fn apply(&mut self, update: Update<T>) -> Touched<T> {
        match update {
            Update::Init => {
                self.listing = Some(Default::default());
                Touched::Nothing
            }
            Update::InitApply(key, value) => {
                let (live, problems) = self.listing.get_or_insert_with(Default::default);
                match value {
                    Ok(Some(value)) => {
                        live.insert(key, value);
                    }
                    Ok(None) => {}
                    Err(reason) => {
                        problems.insert(key, reason);
                    }
                }
                Touched::Nothing
            }
            Update::InitDone => {
                let (live, problems) = self.listing.take().unwrap_or_default();
                for (key, reason) in &problems {
                    if self.problems.get(key) != Some(reason) {
                        self.log_skipped(key, reason);
                    }
                }
                self.problems_changed |= self.problems != problems;
                self.problems = problems;
                self.live = live;
                self.listed = true;
                Touched::All
            }
            Update::Apply(key, value) => {
                let value = match value {
                    Ok(value) => {
                        if self.problems.remove(&key).is_some() {
                            self.problems_changed = true;
                            info!("{} {} is usable now", self.kind.name(), Named(&key));
                        }
                        value
                    }
                    Err(reason) => {
                        if self.problems.get(&key) != Some(&reason) {
                            self.log_skipped(&key, &reason);
                            self.problems.insert(key.clone(), reason);
                            self.problems_changed = true;
                        }
                        None
                    }
                };
                self.set(key, value)
            }
            Update::Delete(key) => {
                if self.problems.remove(&key).is_some() {
                    self.problems_changed = true;
                }
                self.set(key, None)
            }
        }
    }

    fn set(&mut self, key: ObjectKey, value: Option<T>) -> Touched<T> {
        let before = match value {
            Some(value) => self.live.insert(key.clone(), value),
            None => self.live.remove(&key),
        };
        if before.as_ref() == self.live.get(&key) {
            Touched::Nothing
        } else {
            Touched::One { key, before }
        }
    }

    fn log_skipped(&self, key: &ObjectKey, reason: &str) {
        error!(
            event = "objectSkipped",
            kind = self.kind.name(),
            object = %Named(key),
            reason,
            "skipping {} {}: {reason}",
            self.kind.name(),
            Named(key)
        );
    }

    fn values(&self) -> Vec<T> {
        self.live.values().cloned().collect()
    }

    fn problems(&self) -> impl Iterator<Item = Problem> + '_ {
        self.problems
            .iter()
            .map(|((namespace, name), reason)| Problem {
                file: None,
                document: None,
                item: None,
                kind: self.kind.name().to_owned(),
                namespace: Some(namespace.clone()).filter(|ns| !ns.is_empty()),
                name: Some(name.clone()).filter(|n| !n.is_empty()),
                reason: reason.clone(),
            })
    }
}

/// `namespace/name`, or `name` for cluster-scoped objects.
struct Named<'a>(&'a ObjectKey);

impl fmt::Display for Named<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            (namespace, name) if namespace.is_empty() => f.write_str(name),
            (namespace, name) => write!(f, "{namespace}/{name}"),
        }
    }
}

/// Everything the watches currently say.
struct Cluster {
    nodes: Store<Node>,
    /// Services of type LoadBalancer only.
    services: Store<Service>,
    slices: Store<Slice>,
    pools: Store<IpAddressPool>,
    advertisements: Store<L2Advertisement>,
}

impl Cluster {
    fn listed(&self) -> bool {
        self.nodes.listed
            && self.services.listed
            && self.slices.listed
            && self.pools.listed
            && self.advertisements.listed
    }

    fn has_service(&self, key: &ServiceKey) -> bool {
        self.services
            .live
            .contains_key(&(key.namespace.clone(), key.name.clone()))
    }

    /// The endpoints of all of one Service's slices, in slice name order.
    fn endpoints_of(&self, key: &ServiceKey) -> Vec<Endpoint> {
        self.slices
            .live
            .range((key.namespace.clone(), String::new())..)
            .take_while(|((namespace, _), _)| *namespace == key.namespace)
            .filter(|(_, slice)| slice.service == key.name)
            .flat_map(|(_, slice)| slice.endpoints.iter().cloned())
            .collect()
    }

    /// [`Self::endpoints_of`] for every Service, in one pass.
    fn all_endpoints(&self) -> BTreeMap<ServiceKey, Vec<Endpoint>> {
        let mut endpoints: BTreeMap<ServiceKey, Vec<Endpoint>> = BTreeMap::new();
        for ((namespace, _), slice) in &self.slices.live {
            endpoints
                .entry(ServiceKey::new(namespace, &slice.service))
                .or_default()
                .extend(slice.endpoints.iter().cloned());
        }
        endpoints
    }

    fn problems(&self) -> Vec<Problem> {
        let mut problems: Vec<Problem> = self.nodes.problems().collect();
        problems.extend(self.services.problems());
        problems.extend(self.slices.problems());
        problems.extend(self.pools.problems());
        problems.extend(self.advertisements.problems());
        problems
    }

    fn state(&self) -> ClusterState {
        let mut endpoints = self.all_endpoints();
        let services = self
            .services
            .live
            .iter()
            .map(|((namespace, name), service)| ServiceEntry {
                service: service.clone(),
                endpoints: endpoints
                    .remove(&ServiceKey::new(namespace, name))
                    .unwrap_or_default(),
            })
            .collect();
        ClusterState {
            nodes: self.nodes.values(),
            services,
            pools: self.pools.values(),
            advertisements: self.advertisements.values(),
            problems: self.problems(),
        }
    }
}

/// What the receiver has been told: it holds exactly this.
struct Sent {
    nodes: Vec<Node>,
    pools: Vec<IpAddressPool>,
    advertisements: Vec<L2Advertisement>,
    services: BTreeMap<ServiceKey, Service>,
    /// The reconciler keeps a deleted Service's endpoints, and so does this.
    endpoints: BTreeMap<ServiceKey, Vec<Endpoint>>,
}

impl Sent {
    fn of(state: &ClusterState) -> Self {
        Sent {
            nodes: state.nodes.clone(),
            pools: state.pools.clone(),
            advertisements: state.advertisements.clone(),
            services: state
                .services
                .iter()
                .map(|entry| (ServiceKey::of(&entry.service), entry.service.clone()))
                .collect(),
            endpoints: state
                .services
                .iter()
                .map(|entry| (ServiceKey::of(&entry.service), entry.endpoints.clone()))
                .collect(),
        }
    }

    /// A Service's endpoints, then the Service itself: a Service becoming
    /// a LoadBalancer is first elected with its endpoints known.
    fn service(&mut self, cluster: &Cluster, key: &ServiceKey, out: &mut Vec<Change>) {
        match cluster
            .services
            .live
            .get(&(key.namespace.clone(), key.name.clone()))
        {
            Some(service) => {
                self.endpoints(key, cluster.endpoints_of(key), out);
                if self.services.get(key) != Some(service) {
                    self.services.insert(key.clone(), service.clone());
                    out.push(Change::ServiceApplied(service.clone()));
                }
            }
            None => {
                if self.services.remove(key).is_some() {
                    out.push(Change::ServiceDeleted(key.clone()));
                }
            }
        }
    }

    /// Missing and empty are the same to the reconciler.
    fn endpoints(&mut self, key: &ServiceKey, endpoints: Vec<Endpoint>, out: &mut Vec<Change>) {
        let sent = self.endpoints.get(key).map_or(&[][..], Vec::as_slice);
        if sent != endpoints.as_slice() {
            self.endpoints.insert(key.clone(), endpoints.clone());
            out.push(Change::Endpoints(key.clone(), endpoints));
        }
    }
}

/// `Some(now)` when it differs from what was sent, which it then becomes.
fn changed<T: Clone + PartialEq>(sent: &mut Vec<T>, now: Vec<T>) -> Option<Vec<T>> {
    (*sent != now).then(|| {
        sent.clone_from(&now);
        now
    })
}

/// The source's memory: the watches' state and what was sent. No I/O.
pub(super) struct SourceState {
    cluster: Cluster,
    /// `None` until the first [`Change::Reset`].
    sent: Option<Sent>,
}

impl Default for SourceState {
    fn default() -> Self {
        SourceState {
            cluster: Cluster {
                nodes: Store::new(Kind::Node),
                services: Store::new(Kind::Service),
                slices: Store::new(Kind::EndpointSlice),
                pools: Store::new(Kind::IpAddressPool),
                advertisements: Store::new(Kind::L2Advertisement),
            },
            sent: None,
        }
    }
}

impl SourceState {
    /// The changes to send for one watch event.
    pub(super) fn apply(&mut self, event: Event) -> Vec<Change> {
        let cluster = &mut self.cluster;
        // Only the services a change can affect.
        let services: BTreeSet<ServiceKey> = match event {
            Event::Nodes(update) => {
                let touched = cluster.nodes.apply(update).any();
                return self.list_changed(Kind::Node, touched);
            }
            Event::Pools(update) => {
                let touched = cluster.pools.apply(update).any();
                return self.list_changed(Kind::IpAddressPool, touched);
            }
            Event::Advertisements(update) => {
                let touched = cluster.advertisements.apply(update).any();
                return self.list_changed(Kind::L2Advertisement, touched);
            }
            Event::Services(update) => match cluster.services.apply(update) {
                Touched::Nothing => return Vec::new(),
                Touched::One { key, .. } => BTreeSet::from([ServiceKey::new(key.0, key.1)]),
                Touched::All => {
                    let mut keys: BTreeSet<ServiceKey> = cluster
                        .services
                        .live
                        .keys()
                        .map(|(namespace, name)| ServiceKey::new(namespace, name))
                        .collect();
                    if let Some(sent) = &self.sent {
                        keys.extend(sent.services.keys().cloned());
                    }
                    keys
                }
            },
            Event::EndpointSlices(update) => match cluster.slices.apply(update) {
                Touched::Nothing => return Vec::new(),
                Touched::One { key, before } => {
                    let (namespace, name) = &key;
                    before
                        .map(|slice| slice.service)
                        .into_iter()
                        .chain(cluster.slices.live.get(&key).map(|s| s.service.clone()))
                        .map(|service| ServiceKey::new(namespace, service))
                        .filter(|service| {
                            let affected = cluster.has_service(service);
                            if !affected {
                                debug!("EndpointSlice {namespace}/{name}: no LoadBalancer Service {service}");
                            }
                            affected
                        })
                        .collect()
                }
                Touched::All => return self.all_endpoints_changed(),
            },
        };
        let Some(sent) = &mut self.sent else {
            return self.first_reset();
        };
        let mut out = Vec::new();
        for key in &services {
            sent.service(&self.cluster, key, &mut out);
        }
        out
    }

    /// After a Node, pool or advertisement changed: the whole list.
    fn list_changed(&mut self, kind: Kind, touched: bool) -> Vec<Change> {
        if !touched {
            return Vec::new();
        }
        let Some(sent) = &mut self.sent else {
            return self.first_reset();
        };
        let cluster = &self.cluster;
        let change = match kind {
            Kind::Node => changed(&mut sent.nodes, cluster.nodes.values()).map(Change::Nodes),
            Kind::IpAddressPool => {
                changed(&mut sent.pools, cluster.pools.values()).map(Change::Pools)
            }
            Kind::L2Advertisement => {
                changed(&mut sent.advertisements, cluster.advertisements.values())
                    .map(Change::Advertisements)
            }
            Kind::Service | Kind::EndpointSlice => unreachable!("{kind:?} is not sent as a list"),
        };
        change.into_iter().collect()
    }

    /// After the slices were listed again.
    fn all_endpoints_changed(&mut self) -> Vec<Change> {
        let Some(sent) = &mut self.sent else {
            return self.first_reset();
        };
        let mut endpoints = self.cluster.all_endpoints();
        let mut out = Vec::new();
        for (namespace, name) in self.cluster.services.live.keys() {
            let key = ServiceKey::new(namespace, name);
            let now = endpoints.remove(&key).unwrap_or_default();
            sent.endpoints(&key, now, &mut out);
        }
        out
    }

    /// The one Reset, once every kind has been listed.
    fn first_reset(&mut self) -> Vec<Change> {
        if self.sent.is_some() || !self.cluster.listed() {
            return Vec::new();
        }
        let state = self.cluster.state();
        info!(
            "cluster listed: {} nodes, {} LoadBalancer services, {} pools, {} L2 advertisements, {} skipped objects",
            state.nodes.len(),
            state.services.len(),
            state.pools.len(),
            state.advertisements.len(),
            state.problems.len()
        );
        self.sent = Some(Sent::of(&state));
        vec![Change::Reset(state)]
    }

    /// All skipped objects, when that changed since the last call.
    pub(super) fn take_changed_problems(&mut self) -> Option<Vec<Problem>> {
        let c = &mut self.cluster;
        let changed = std::mem::take(&mut c.nodes.problems_changed)
            | std::mem::take(&mut c.services.problems_changed)
            | std::mem::take(&mut c.slices.problems_changed)
            | std::mem::take(&mut c.pools.problems_changed)
            | std::mem::take(&mut c.advertisements.problems_changed);
        changed.then(|| c.problems())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::election::Labels;

    fn key(namespace: &str, name: &str) -> ObjectKey {
        (namespace.to_owned(), name.to_owned())
    }

    fn ready_node(name: &str) -> Node {
        Node {
            conditions: BTreeMap::from([("Ready".to_owned(), "True".to_owned())]),
            ..Node::new(name)
        }
    }

    fn lb(name: &str, ip: &str) -> Service {
        Service {
            namespace: "default".to_owned(),
            name: name.to_owned(),
            ingress_ips: vec![ip.parse().unwrap()],
            ..Service::default()
        }
    }

    fn on(node: &str) -> Endpoint {
        Endpoint {
            node_name: Some(node.to_owned()),
            ready: Some(true),
            ..Endpoint::default()
        }
    }

    fn slice(service: &str, nodes: &[&str]) -> Slice {
        Slice {
            service: service.to_owned(),
            endpoints: nodes.iter().map(|n| on(n)).collect(),
        }
    }

    fn pool(name: &str) -> IpAddressPool {
        IpAddressPool::new(name, "metallb-system", Labels::new(), &["192.0.2.0/24"]).unwrap()
    }

    fn ad(name: &str) -> L2Advertisement {
        L2Advertisement {
            name: name.to_owned(),
            namespace: "metallb-system".to_owned(),
            ..L2Advertisement::default()
        }
    }

    /// A complete list of one kind, as the watcher delivers it.
    fn list<T>(
        wrap: fn(Update<T>) -> Event,
        objects: Vec<(ObjectKey, Converted<T>)>,
    ) -> Vec<Event> {
        let mut events = vec![wrap(Update::Init)];
        events.extend(
            objects
                .into_iter()
                .map(|(key, value)| wrap(Update::InitApply(key, value))),
        );
        events.push(wrap(Update::InitDone));
        events
    }

    fn all<const N: usize>(lists: [Vec<Event>; N]) -> Vec<Event> {
        lists.into_iter().flatten().collect()
    }

    fn feed(state: &mut SourceState, events: Vec<Event>) -> Vec<Change> {
        events.into_iter().flat_map(|e| state.apply(e)).collect()
    }

    fn nodes() -> Vec<Event> {
        list(
            Event::Nodes,
            vec![
                (key("", "a"), Ok(Some(ready_node("a")))),
                (key("", "b"), Ok(Some(ready_node("b")))),
            ],
        )
    }

    fn services() -> Vec<Event> {
        list(
            Event::Services,
            vec![
                (key("default", "web"), Ok(Some(lb("web", "192.0.2.1")))),
                (key("default", "db"), Ok(Some(lb("db", "192.0.2.2")))),
                (key("default", "plain"), Ok(None)),
            ],
        )
    }

    fn slices() -> Vec<Event> {
        list(
            Event::EndpointSlices,
            vec![
                (key("default", "web-1"), Ok(Some(slice("web", &["a"])))),
                (key("default", "web-2"), Ok(Some(slice("web", &["b"])))),
                (key("default", "plain-1"), Ok(Some(slice("plain", &["a"])))),
            ],
        )
    }

    fn pools() -> Vec<Event> {
        list(
            Event::Pools,
            vec![
                (key("metallb-system", "lab"), Ok(Some(pool("lab")))),
                (key("metallb-system", "bad"), Err("bad CIDR".to_owned())),
            ],
        )
    }

    fn ads() -> Vec<Event> {
        list(
            Event::Advertisements,
            vec![(key("metallb-system", "lab"), Ok(Some(ad("lab"))))],
        )
    }

    /// A state that has sent its Reset.
    fn started() -> SourceState {
        let mut state = SourceState::default();
        let changes = feed(
            &mut state,
            all([nodes(), services(), slices(), pools(), ads()]),
        );
        assert_eq!(changes.len(), 1);
        state
    }

    #[test]
    fn one_reset_once_every_kind_is_listed() {
        let mut state = SourceState::default();
        let mut early = feed(&mut state, all([nodes(), services(), slices(), pools()]));
        // Changes before the last kind is listed only update the state.
        early.extend(state.apply(Event::Nodes(Update::Apply(
            key("", "c"),
            Ok(Some(ready_node("c"))),
        ))));
        assert!(early.is_empty(), "{early:?}");

        let changes = feed(&mut state, ads());
        let [Change::Reset(reset)] = changes.as_slice() else {
            panic!("expected one Reset, got {changes:?}");
        };
        let names: Vec<_> = reset.nodes.iter().map(|n| n.name.as_str()).collect();
        assert_eq!(names, ["a", "b", "c"]);
        let services: Vec<_> = reset
            .services
            .iter()
            .map(|e| (e.service.name.as_str(), e.endpoints.clone()))
            .collect();
        assert_eq!(
            services,
            [("db", vec![]), ("web", vec![on("a"), on("b")])],
            "LoadBalancer services only, slices merged in name order"
        );
        assert_eq!(reset.pools, [pool("lab")]);
        assert_eq!(reset.advertisements, [ad("lab")]);
        assert_eq!(reset.problems.len(), 1);
        assert_eq!(
            reset.problems[0].object(),
            "IPAddressPool metallb-system/bad"
        );
    }

    #[test]
    fn unchanged_values_send_nothing() {
        let mut state = started();
        let same = [
            Event::Nodes(Update::Apply(key("", "a"), Ok(Some(ready_node("a"))))),
            Event::Services(Update::Apply(
                key("default", "web"),
                Ok(Some(lb("web", "192.0.2.1"))),
            )),
            Event::EndpointSlices(Update::Apply(
                key("default", "web-1"),
                Ok(Some(slice("web", &["a"]))),
            )),
            Event::Services(Update::Apply(key("default", "plain"), Ok(None))),
            Event::Services(Update::Delete(key("default", "never-seen"))),
        ];
        assert!(feed(&mut state, same.into()).is_empty());

        let mut not_ready = ready_node("a");
        not_ready.conditions.insert("Ready".into(), "False".into());
        let changes = state.apply(Event::Nodes(Update::Apply(
            key("", "a"),
            Ok(Some(not_ready.clone())),
        )));
        assert!(
            matches!(changes.as_slice(), [Change::Nodes(n)] if n == &[not_ready.clone(), ready_node("b")])
        );
    }

    #[test]
    fn a_complete_relist_sends_only_differences() {
        let mut state = started();
        // A list in progress changes nothing, even when partial.
        let mut changes = feed(
            &mut state,
            vec![
                Event::Services(Update::Init),
                Event::Services(Update::InitApply(
                    key("default", "web"),
                    Ok(Some(lb("web", "192.0.2.1"))),
                )),
                Event::Nodes(Update::Init),
            ],
        );
        assert!(changes.is_empty(), "{changes:?}");
        changes = feed(
            &mut state,
            vec![
                Event::Services(Update::InitApply(
                    key("default", "db"),
                    Ok(Some(lb("db", "192.0.2.2"))),
                )),
                Event::Services(Update::InitDone),
            ],
        );
        assert!(changes.is_empty(), "same services: {changes:?}");
        let unchanged = all([nodes(), slices(), pools(), ads()]);
        changes = feed(&mut state, unchanged);
        assert!(changes.is_empty(), "same everything: {changes:?}");

        // `db` deleted and `web` moved while the watch was down.
        let relist = list(
            Event::Services,
            vec![(key("default", "web"), Ok(Some(lb("web", "192.0.2.9"))))],
        );
        changes = feed(&mut state, relist);
        assert!(
            matches!(changes.as_slice(), [
                Change::ServiceDeleted(db),
                Change::ServiceApplied(web),
            ] if db == &ServiceKey::new("default", "db") && web == &lb("web", "192.0.2.9")),
            "{changes:?}"
        );
    }

    #[test]
    fn services_leaving_and_joining_load_balancing() {
        let mut state = started();
        let changes = state.apply(Event::Services(Update::Apply(
            key("default", "web"),
            Ok(None),
        )));
        assert!(
            matches!(changes.as_slice(), [Change::ServiceDeleted(k)] if k.name == "web"),
            "{changes:?}"
        );
        // `plain` becomes a LoadBalancer: its endpoints come first.
        let changes = state.apply(Event::Services(Update::Apply(
            key("default", "plain"),
            Ok(Some(lb("plain", "192.0.2.3"))),
        )));
        assert!(
            matches!(changes.as_slice(), [
                Change::Endpoints(k, endpoints),
                Change::ServiceApplied(s),
            ] if k.name == "plain" && endpoints == &[on("a")] && s.name == "plain"),
            "{changes:?}"
        );
    }

    #[test]
    fn a_slice_moving_between_services_updates_both() {
        let mut state = started();
        let changes = state.apply(Event::EndpointSlices(Update::Apply(
            key("default", "web-2"),
            Ok(Some(slice("db", &["b"]))),
        )));
        assert!(
            matches!(changes.as_slice(), [
                Change::Endpoints(db, db_endpoints),
                Change::Endpoints(web, web_endpoints),
            ] if db.name == "db" && db_endpoints == &[on("b")]
                && web.name == "web" && web_endpoints == &[on("a")]),
            "{changes:?}"
        );
        // Slices of Services that are not LoadBalancers send nothing.
        let changes = state.apply(Event::EndpointSlices(Update::Delete(key(
            "default", "plain-1",
        ))));
        assert!(changes.is_empty(), "{changes:?}");
    }

    #[test]
    fn unusable_objects_are_skipped_and_remembered() {
        let mut state = started();
        assert_eq!(state.take_changed_problems().map(|p| p.len()), Some(1));
        assert!(state.take_changed_problems().is_none());

        let changes = state.apply(Event::Pools(Update::Apply(
            key("metallb-system", "lab"),
            Err("bad CIDR".to_owned()),
        )));
        assert!(
            matches!(changes.as_slice(), [Change::Pools(p)] if p.is_empty()),
            "{changes:?}"
        );
        let changes = state.apply(Event::Pools(Update::Apply(
            key("metallb-system", "bad"),
            Ok(Some(pool("bad"))),
        )));
        assert!(
            matches!(changes.as_slice(), [Change::Pools(p)] if p == &[pool("bad")]),
            "{changes:?}"
        );
        let problems = state.take_changed_problems().unwrap();
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].object(), "IPAddressPool metallb-system/lab");
    }
}
