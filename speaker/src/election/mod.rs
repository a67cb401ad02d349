//! Who announces a service's IP: MetalLB's layer-2 election
//! (`speaker/layer2_controller.go`, `ShouldAnnounce`) as a pure function.
//!
//! Every speaker evaluates the same function over the same inputs and only
//! the node that comes out first announces; there is no coordination beyond
//! the shared view of the cluster. Each "no" carries a reason whose text is
//! MetalLB's, so logs and `speaker maps` read the same as MetalLB's.
//!
//! Order of the checks, as in MetalLB v0.16:
//! 1. `loadBalancerClass` must equal the speaker's class (MetalLB drops the
//!    service silently; we say `loadBalancerClassMismatch`).
//! 2. An ingress IP must be set (`noIPAllocated`) and all ingress IPs must lie
//!    in one pool of the MetalLB namespace (`ipNotAllowed`).
//! 3. Some endpoint anywhere can serve, else `notOwner` for every node.
//! 4. The advertisements of the pool whose `serviceSelectors` match the
//!    service; this node must be selected by one of them, else
//!    `noMatchingAdvertisement`.
//! 5. Candidates: the members, or every cached node when membership is
//!    disabled; minus `NetworkUnavailable=True`, minus the exclude label, minus
//!    not-Ready nodes when asked; only nodes selected by one of those ads; with
//!    `externalTrafficPolicy: Local` only nodes hosting a serving endpoint.
//! 6. The candidate with the smallest `sha256(node + "#" + first ingress IP)`
//!    wins; everybody else says `notOwner`.

mod cluster;
mod hash;
mod model;
mod pool;
mod selector;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

pub use cluster::{ClusterView, ElectionOptions, DEFAULT_METALLB_NAMESPACE};
pub use hash::{election_hash, go_ip_text};
pub use model::{
    Endpoint, ExternalTrafficPolicy, L2Advertisement, Membership, Node, Service,
    EXCLUDE_FROM_LB_LABEL,
};
pub use pool::{AddressRange, IpAddressPool, PoolError};
pub use selector::{
    matches_any, LabelSelector, LabelSelectorRequirement, Labels, SelectorError, SelectorOperator,
};

/// What one node should do about one service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Answer for the service's IPs on these interfaces; empty = on every
    /// interface the responder uses. The union (sorted) of the `interfaces` of
    /// the service's advertisements that select this node; empty as soon as
    /// one of them lists none. Interfaces play no part in the election: if
    /// none of them exists here, nobody else takes over.
    Announce {
        interfaces: Vec<String>,
    },
    Withhold(Reason),
}

impl Decision {
    pub fn is_announce(&self) -> bool {
        matches!(self, Self::Announce { .. })
    }

    pub fn reason(&self) -> Option<Reason> {
        match self {
            Self::Announce { .. } => None,
            Self::Withhold(reason) => Some(*reason),
        }
    }
}

impl fmt::Display for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Announce { interfaces } if interfaces.is_empty() => f.write_str("announce"),
            Self::Announce { interfaces } => write!(f, "announce on {}", interfaces.join(",")),
            Self::Withhold(reason) => write!(f, "{reason} ({})", reason.detail()),
        }
    }
}

/// Why a node does not announce. `as_str`/`Display` give MetalLB's reason
/// string; `detail` says which rule fired.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// MetalLB `notOwner`, which it returns for four different situations; the
    /// cause keeps them apart without changing the text.
    NotOwner(NotOwnerCause),
    /// MetalLB `noMatchingAdvertisement`: none of the advertisements that
    /// apply to the service selects this node (or this node has no Node
    /// object, so no `nodeSelectors` can select it).
    NoMatchingAdvertisement,
    /// MetalLB `noIPAllocated`: the service has no ingress IP yet.
    NoIpAllocated,
    /// MetalLB `ipNotAllowed`: no single pool in the MetalLB namespace holds
    /// all the service's ingress IPs.
    IpNotAllowed,
    /// Ours, `loadBalancerClassMismatch`: the service's `loadBalancerClass` is
    /// not the speaker's. MetalLB filters such services out before handling
    /// them and has no reason string for it.
    LoadBalancerClassMismatch,
}

/// The situations MetalLB reports as `notOwner`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NotOwnerCause {
    /// No endpoint anywhere can serve; checked before the advertisements.
    NoServingEndpoint,
    /// The candidate set is empty (no member, all excluded, or with
    /// `externalTrafficPolicy: Local` no candidate hosts a serving endpoint).
    NoCandidates,
    /// Someone else won and this node was not even a candidate (not a
    /// member, excluded, network unavailable, not Ready, or no local endpoint).
    NotCandidate,
    /// This node was a candidate and another one hashed lower.
    LostElection,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NotOwner(_) => "notOwner",
            Self::NoMatchingAdvertisement => "noMatchingAdvertisement",
            Self::NoIpAllocated => "noIPAllocated",
            Self::IpNotAllowed => "ipNotAllowed",
            Self::LoadBalancerClassMismatch => "loadBalancerClassMismatch",
        }
    }

    pub fn detail(self) -> &'static str {
        match self {
            Self::NotOwner(NotOwnerCause::NoServingEndpoint) => "no endpoint can serve",
            Self::NotOwner(NotOwnerCause::NoCandidates) => "no node is eligible",
            Self::NotOwner(NotOwnerCause::NotCandidate) => "this node is not eligible",
            Self::NotOwner(NotOwnerCause::LostElection) => "another node hashes lower",
            Self::NoMatchingAdvertisement => "no L2Advertisement for the service selects this node",
            Self::NoIpAllocated => "the service has no ingress IP",
            Self::IpNotAllowed => "no IPAddressPool holds all the ingress IPs",
            Self::LoadBalancerClassMismatch => "the service's loadBalancerClass is not ours",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The whole election for one service, for the dry-run tool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Election {
    pub winner: Option<String>,
    /// Every cached node and every member without a Node object.
    pub per_node: BTreeMap<String, Decision>,
}

/// What `node` should do about `service`.
pub fn should_announce(
    node: &str,
    service: &Service,
    endpoints: &[Endpoint],
    cluster: &ClusterView,
    membership: &Membership,
) -> Decision {
    match Tally::count(service, endpoints, cluster, membership) {
        Ok(tally) => tally.decision(cluster.node_index(node)),
        Err(reason) => Decision::Withhold(reason),
    }
}

/// The node that announces `service`, or the reason nobody does (a
/// `notOwner` here is always `NoServingEndpoint` or `NoCandidates`).
pub fn owner<'c>(
    service: &Service,
    endpoints: &[Endpoint],
    cluster: &'c ClusterView,
    membership: &Membership,
) -> Result<&'c str, Reason> {
    let tally = Tally::count(service, endpoints, cluster, membership)?;
    tally
        .winner
        .map(|i| cluster.nodes()[i].name.as_str())
        .ok_or(Reason::NotOwner(NotOwnerCause::NoCandidates))
}

/// Every node's decision at once; hashes each candidate once.
pub fn elect(
    service: &Service,
    endpoints: &[Endpoint],
    cluster: &ClusterView,
    membership: &Membership,
) -> Election {
    let tally = Tally::count(service, endpoints, cluster, membership);
    let cached = cluster
        .nodes()
        .iter()
        .enumerate()
        .map(|(i, n)| (n.name.as_str(), Some(i)));
    let uncached: Vec<(&str, Option<usize>)> = match membership {
        Membership::Disabled => Vec::new(),
        Membership::Members(members) => members
            .iter()
            .filter(|m| cluster.node_index(m).is_none())
            .map(|m| (m.as_str(), None))
            .collect(),
    };
    let per_node = cached
        .chain(uncached)
        .map(|(name, index)| {
            let decision = match &tally {
                Ok(tally) => tally.decision(index),
                Err(reason) => Decision::Withhold(*reason),
            };
            (name.to_owned(), decision)
        })
        .collect();
    let winner = tally
        .ok()
        .and_then(|t| t.winner)
        .map(|i| cluster.nodes()[i].name.clone());
    Election { winner, per_node }
}

/// The pool's advertisements whose `serviceSelectors` are empty or match.
fn advertisements_for_service(cluster: &ClusterView, pool: usize, service: &Service) -> Vec<usize> {
    let applies = |&ad: &usize| {
        let selectors = &cluster.advertisement(ad).service_selectors;
        selectors.is_empty() || matches_any(selectors, &service.labels)
    };
    cluster
        .pool_advertisement_indices(pool)
        .iter()
        .copied()
        .filter(applies)
        .collect()
}

/// Per cached node: hosts an endpoint that can serve (by `nodeName`).
fn nodes_with_serving_endpoint(cluster: &ClusterView, endpoints: &[Endpoint]) -> Vec<bool> {
    let mut hosts = vec![false; cluster.nodes().len()];
    let serving = endpoints
        .iter()
        .filter(|e| e.can_serve())
        .filter_map(|e| e.node_name.as_deref());
    for index in serving.filter_map(|name| cluster.node_index(name)) {
        hosts[index] = true;
    }
    hosts
}

/// The per-service part of the election, computed once and then read for
/// any number of nodes.
struct Tally<'c> {
    cluster: &'c ClusterView,
    /// Indices of the pool's advertisements whose `serviceSelectors` match.
    service_advertisements: Vec<usize>,
    /// Per cached node.
    candidates: Vec<bool>,
    winner: Option<usize>,
}

impl<'c> Tally<'c> {
    fn count(
        service: &Service,
        endpoints: &[Endpoint],
        cluster: &'c ClusterView,
        membership: &Membership,
    ) -> Result<Self, Reason> {
        let options = cluster.options();
        if service.lb_class != options.lb_class {
            return Err(Reason::LoadBalancerClassMismatch);
        }
        let Some(&first_ip) = service.ingress_ips.first() else {
            return Err(Reason::NoIpAllocated);
        };
        let pool = cluster
            .pool_index_for(&service.ingress_ips)
            .ok_or(Reason::IpNotAllowed)?;
        if !endpoints.iter().any(Endpoint::can_serve) {
            return Err(Reason::NotOwner(NotOwnerCause::NoServingEndpoint));
        }

        let service_advertisements = advertisements_for_service(cluster, pool, service);

        let nodes = cluster.nodes();
        let facts = cluster.node_facts();
        let local_endpoint_nodes = match service.external_traffic_policy {
            ExternalTrafficPolicy::Cluster => None,
            ExternalTrafficPolicy::Local => Some(nodes_with_serving_endpoint(cluster, endpoints)),
        };
        let require_ready = options.require_node_ready && *membership == Membership::Disabled;
        let eligible = |i: usize| {
            facts[i].balanceable
                && (!require_ready || facts[i].ready)
                && local_endpoint_nodes.as_ref().is_none_or(|hosts| hosts[i])
                && cluster.any_advertisement_selects_node(&service_advertisements, i)
        };

        let ip_text = go_ip_text(first_ip);
        let mut candidates = vec![false; nodes.len()];
        let mut best: Option<([u8; 32], usize)> = None;
        let mut consider = |i: usize| {
            if candidates[i] || !eligible(i) {
                return;
            }
            candidates[i] = true;
            let hash = election_hash(&nodes[i].name, &ip_text);
            if best.as_ref().is_none_or(|(lowest, _)| hash < *lowest) {
                best = Some((hash, i));
            }
        };
        match membership {
            Membership::Disabled => (0..nodes.len()).for_each(&mut consider),
            // A member without a Node object is never selected by an
            // advertisement (MetalLB resolves nodeSelectors against the Node
            // cache), so it can never win.
            Membership::Members(members) => members
                .iter()
                .filter_map(|m| cluster.node_index(m))
                .for_each(&mut consider),
        }
        let winner = best.map(|(_, i)| i);
        Ok(Self {
            cluster,
            service_advertisements,
            candidates,
            winner,
        })
    }

    /// `node` is an index into the Node cache; `None` for a node without a
    /// Node object.
    fn decision(&self, node: Option<usize>) -> Decision {
        let Some(node) = node.filter(|&i| {
            self.cluster
                .any_advertisement_selects_node(&self.service_advertisements, i)
        }) else {
            return Decision::Withhold(Reason::NoMatchingAdvertisement);
        };
        let cause = match self.winner {
            Some(winner) if winner == node => {
                return Decision::Announce {
                    interfaces: self.interfaces(node),
                };
            }
            None => NotOwnerCause::NoCandidates,
            Some(_) if self.candidates[node] => NotOwnerCause::LostElection,
            Some(_) => NotOwnerCause::NotCandidate,
        };
        Decision::Withhold(Reason::NotOwner(cause))
    }

    fn interfaces(&self, node: usize) -> Vec<String> {
        let mut interfaces = BTreeSet::new();
        for &ad in &self.service_advertisements {
            if !self.cluster.advertisement_selects_node(ad, node) {
                continue;
            }
            let listed = &self.cluster.advertisement(ad).interfaces;
            if listed.is_empty() {
                return Vec::new();
            }
            interfaces.extend(listed.iter().cloned());
        }
        interfaces.into_iter().collect()
    }
}
