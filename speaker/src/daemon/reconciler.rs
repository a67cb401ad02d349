//! The node-local decision core: keeps the cluster as the sources describe it
//! and this node's election decision for every Service, re-electing only what a
//! change can affect. No I/O: the daemon turns its output into map updates,
//! announcements and status.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    net::IpAddr,
};

use crate::{
    cluster::{
        config::{self, ConfigGuard, Configuration},
        Change, ClusterState, ServiceKey,
    },
    election::{
        should_announce, ClusterView, Decision, ElectionOptions, Endpoint, IpAddressPool,
        L2Advertisement, Membership, Service,
    },
};

/// Where an owned IP is to be answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InterfaceSelection {
    /// Every interface the speaker announces on (no advertisement lists any).
    All,
    /// Only these names (the union of the advertisements' `interfaces`).
    Named(BTreeSet<String>),
}

/// An IP this node answers for, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OwnedIp {
    pub services: BTreeSet<ServiceKey>,
    pub interfaces: InterfaceSelection,
}

/// A Service whose decision on this node changed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DecisionChange {
    pub service: ServiceKey,
    /// `None`: the service was not known before / is gone now.
    pub before: Option<Decision>,
    pub after: Option<Decision>,
}

pub struct Reconciler {
    node: String,
    options: ElectionOptions,
    membership: Membership,
    /// Nodes, pools and advertisements (its `services` stay empty).
    base: ClusterState,
    view: ClusterView,
    services: HashMap<ServiceKey, Service>,
    endpoints: HashMap<ServiceKey, Vec<Endpoint>>,
    decisions: HashMap<ServiceKey, Decision>,
    /// What each service this node announces for claims, kept with the
    /// decisions so that [`Self::owned`] costs nothing and a change updates
    /// only the IPs of the services it re-elected.
    claims: HashMap<ServiceKey, Claim>,
    owned: BTreeMap<IpAddr, OwnedIp>,
    /// Refuses pools and advertisements that would orphan announced IPs.
    config: ConfigGuard,
}

/// The IPs (canonical) and interface names (empty: all) one announcing
/// service holds.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Claim {
    ips: Vec<IpAddr>,
    interfaces: Vec<String>,
}

impl Reconciler {
    pub fn new(node: impl Into<String>, options: ElectionOptions, membership: Membership) -> Self {
        let base = ClusterState::default();
        let view = base.view(options.clone());
        Reconciler {
            node: node.into(),
            options,
            membership,
            base,
            view,
            services: HashMap::new(),
            endpoints: HashMap::new(),
            decisions: HashMap::new(),
            claims: HashMap::new(),
            owned: BTreeMap::new(),
            config: ConfigGuard::default(),
        }
    }

    pub fn node(&self) -> &str {
        &self.node
    }

    pub fn view(&self) -> &ClusterView {
        &self.view
    }

    /// Applies one change and returns the services whose decision changed.
    pub fn apply(&mut self, change: Change) -> Vec<DecisionChange> {
        match change {
            Change::Reset(mut state) => {
                let services = std::mem::take(&mut state.services);
                // New tables, not cleared ones: a large previous state must
                // not keep its capacity.
                self.services = HashMap::with_capacity(services.len());
                self.endpoints = HashMap::with_capacity(services.len());
                for entry in services {
                    let key = ServiceKey::of(&entry.service);
                    self.endpoints.insert(key.clone(), entry.endpoints);
                    self.services.insert(key, entry.service);
                }
                self.base.nodes = state.nodes;
                self.propose_config(state.pools, state.advertisements);
                self.rebuild_view();
                let changed = self.reelect_all();
                self.decisions.shrink_to_fit();
                self.claims.shrink_to_fit();
                changed
            }
            Change::Nodes(nodes) => {
                self.base.nodes = nodes;
                self.rebuild_view();
                self.reelect_all()
            }
            Change::Pools(pools) => {
                let (_, advertisements) = self.latest_config();
                self.propose_config(pools, advertisements);
                self.rebuild_view();
                self.reelect_all()
            }
            Change::Advertisements(advertisements) => {
                let (pools, _) = self.latest_config();
                self.propose_config(pools, advertisements);
                self.rebuild_view();
                self.reelect_all()
            }
            Change::Membership(membership) => {
                self.membership = membership;
                self.reelect_all()
            }
            Change::ServiceApplied(service) => {
                let key = ServiceKey::of(&service);
                self.services.insert(key.clone(), service);
                let mut changed: Vec<DecisionChange> = self.reelect(&key).into_iter().collect();
                changed.extend(self.retry_refused_config());
                changed
            }
            Change::ServiceDeleted(key) => {
                self.services.remove(&key);
                let mut changed: Vec<DecisionChange> = self.reelect(&key).into_iter().collect();
                changed.extend(self.retry_refused_config());
                changed
            }
            Change::Endpoints(key, endpoints) => {
                self.endpoints.insert(key.clone(), endpoints);
                self.reelect(&key).into_iter().collect()
            }
        }
    }

    /// Takes the proposed pools and advertisements unless they would orphan
    /// an IP this node announces (see [`config`]); then the last good ones
    /// stay and [`Self::stale_config`] says why. `true` when applied.
    fn propose_config(
        &mut self,
        pools: Vec<IpAddressPool>,
        advertisements: Vec<L2Advertisement>,
    ) -> bool {
        // Services still there, with the IPs they have now: a Service removed
        // together with its pool orphans nothing.
        let announced = self.claims.keys().filter_map(|key| {
            let service = self.services.get(key)?;
            Some((key.to_string(), service.ingress_ips.as_slice()))
        });
        let proposed = Configuration {
            pools,
            advertisements,
        };
        let current = (&self.base.pools[..], &self.base.advertisements[..]);
        let Some(applied) = self
            .config
            .propose(&self.options, current, proposed, announced)
        else {
            return false;
        };
        self.base.pools = applied.pools;
        self.base.advertisements = applied.advertisements;
        true
    }

    /// The newest pools and advertisements the source sent, applied or not.
    fn latest_config(&self) -> (Vec<IpAddressPool>, Vec<L2Advertisement>) {
        match self.config.newest() {
            Some(newest) => (newest.pools.clone(), newest.advertisements.clone()),
            None => (self.base.pools.clone(), self.base.advertisements.clone()),
        }
    }

    /// Tries a refused configuration again once services changed (the
    /// services it would orphan may be gone).
    fn retry_refused_config(&mut self) -> Vec<DecisionChange> {
        let Some(refused) = self.config.take_refused() else {
            return Vec::new();
        };
        if !self.propose_config(refused.pools, refused.advertisements) {
            return Vec::new();
        }
        self.rebuild_view();
        self.reelect_all()
    }

    /// Why the pools and advertisements in use are not the newest ones.
    pub fn stale_config(&self) -> Option<&config::Refusal> {
        self.config.refused()
    }

    fn rebuild_view(&mut self) {
        self.view = self.base.view(self.options.clone());
    }

    /// Re-elects one service; `Some` when its decision changed.
    fn reelect(&mut self, key: &ServiceKey) -> Option<DecisionChange> {
        let after = self.services.get(key).map(|service| {
            let endpoints = self.endpoints.get(key).map_or(&[][..], Vec::as_slice);
            should_announce(&self.node, service, endpoints, &self.view, &self.membership)
        });
        let before = match &after {
            Some(decision) => self.decisions.insert(key.clone(), decision.clone()),
            None => self.decisions.remove(key),
        };
        self.update_claim(key);
        (before != after).then(|| DecisionChange {
            service: key.clone(),
            before,
            after,
        })
    }

    fn reelect_all(&mut self) -> Vec<DecisionChange> {
        let mut keys: BTreeSet<ServiceKey> = self.services.keys().cloned().collect();
        keys.extend(self.decisions.keys().cloned());
        keys.iter().filter_map(|key| self.reelect(key)).collect()
    }

    /// This node's current decision for a service.
    pub fn decision(&self, key: &ServiceKey) -> Option<&Decision> {
        self.decisions.get(key)
    }

    pub fn service(&self, key: &ServiceKey) -> Option<&Service> {
        self.services.get(key)
    }

    /// Every IP this node announces, from every service that elected it.
    /// Dual-stack services and services sharing an IP elect one node for all
    /// their IPs, so the union is consistent across nodes.
    pub fn owned(&self) -> &BTreeMap<IpAddr, OwnedIp> {
        &self.owned
    }

    /// The IPs a service holds on this node and where they are answered.
    pub fn owned_by(&self, key: &ServiceKey) -> impl Iterator<Item = (&IpAddr, &OwnedIp)> {
        self.claims
            .get(key)
            .into_iter()
            .flat_map(|claim| claim.ips.iter())
            .filter_map(|ip| self.owned.get_key_value(ip))
    }

    /// Brings `owned` in line with one service's current decision: only the
    /// IPs it held or holds now are touched.
    fn update_claim(&mut self, key: &ServiceKey) {
        let claim = match (self.decisions.get(key), self.services.get(key)) {
            (Some(Decision::Announce { interfaces }), Some(service)) => {
                let mut ips: Vec<IpAddr> = service
                    .ingress_ips
                    .iter()
                    .map(IpAddr::to_canonical)
                    .collect();
                ips.sort();
                ips.dedup();
                Some(Claim {
                    ips,
                    interfaces: interfaces.clone(),
                })
            }
            _ => None,
        };
        if self.claims.get(key) == claim.as_ref() {
            return;
        }
        let old = match claim {
            Some(claim) => self.claims.insert(key.clone(), claim),
            None => self.claims.remove(key),
        };
        let mut touched: BTreeSet<IpAddr> =
            old.map(|c| c.ips).unwrap_or_default().into_iter().collect();
        for ip in &touched {
            if let Some(entry) = self.owned.get_mut(ip) {
                entry.services.remove(key);
            }
        }
        if let Some(claim) = self.claims.get(key) {
            for ip in &claim.ips {
                self.owned
                    .entry(*ip)
                    .or_insert_with(|| OwnedIp {
                        services: BTreeSet::new(),
                        interfaces: InterfaceSelection::Named(BTreeSet::new()),
                    })
                    .services
                    .insert(key.clone());
                touched.insert(*ip);
            }
        }
        for ip in touched {
            let Some(entry) = self.owned.get_mut(&ip) else {
                continue;
            };
            if entry.services.is_empty() {
                self.owned.remove(&ip);
                continue;
            }
            entry.interfaces =
                selection_of(entry.services.iter().filter_map(|s| self.claims.get(s)));
        }
    }
}

/// The interfaces an IP is answered on: all of them if any claiming service
/// names none, else the union of the names.
fn selection_of<'a>(claims: impl Iterator<Item = &'a Claim>) -> InterfaceSelection {
    let mut names = BTreeSet::new();
    for claim in claims {
        if claim.interfaces.is_empty() {
            return InterfaceSelection::All;
        }
        names.extend(claim.interfaces.iter().cloned());
    }
    InterfaceSelection::Named(names)
}
