//! The cluster as the election sees it: nodes, pools and advertisements, with
//! everything that does not depend on the service worked out once (which node
//! each advertisement selects, which pools it is attached to), the way
//! MetalLB resolves `config.L2Advertisement.Nodes` when the config loads.

use std::collections::BTreeMap;
use std::net::IpAddr;

use super::model::{L2Advertisement, Node};
use super::pool::IpAddressPool;
use super::selector::matches_any;

pub const DEFAULT_METALLB_NAMESPACE: &str = "metallb-system";

/// The speaker's flags that shape the election.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ElectionOptions {
    /// Pools and advertisements elsewhere are ignored.
    pub metallb_namespace: String,
    /// `--lb-class`: only services whose `loadBalancerClass` equals this are
    /// handled (`None` = only services without a class).
    pub lb_class: Option<String>,
    /// `--ignore-exclude-lb`: keep nodes labelled
    /// `node.kubernetes.io/exclude-from-external-load-balancers`.
    pub ignore_exclude_lb: bool,
    /// Beyond MetalLB (#3116, #2514): with `Membership::Disabled`, drop nodes
    /// whose `Ready` condition is not `"True"`, since nothing else notices a
    /// dead node in that mode. Has no effect with live membership.
    pub require_node_ready: bool,
}

impl Default for ElectionOptions {
    fn default() -> Self {
        Self {
            metallb_namespace: DEFAULT_METALLB_NAMESPACE.to_owned(),
            lb_class: None,
            ignore_exclude_lb: false,
            require_node_ready: false,
        }
    }
}

/// Per-node facts that do not depend on the service.
#[derive(Debug, Clone, Copy)]
pub(super) struct NodeFacts {
    /// Not `NetworkUnavailable=True` and not excluded from load balancers.
    pub(super) balanceable: bool,
    pub(super) ready: bool,
}

/// Nodes, pools and advertisements, indexed for the election.
#[derive(Debug, Clone)]
pub struct ClusterView {
    options: ElectionOptions,
    /// Sorted by name, names unique.
    nodes: Vec<Node>,
    node_facts: Vec<NodeFacts>,
    /// In the MetalLB namespace, sorted by name.
    pools: Vec<IpAddressPool>,
    /// Per pool: indices into `advertisements` of the ads attached to it.
    pool_advertisements: Vec<Vec<usize>>,
    /// In the MetalLB namespace, sorted by name.
    advertisements: Vec<L2Advertisement>,
    /// Per advertisement, per node: does its `nodeSelectors` select the node.
    advertisement_nodes: Vec<Vec<bool>>,
}

impl ClusterView {
    /// Names are unique per kind in a namespace in Kubernetes; should the
    /// caller pass duplicates anyway, the last one wins, as in a cache.
    pub fn new(
        options: ElectionOptions,
        nodes: impl IntoIterator<Item = Node>,
        pools: impl IntoIterator<Item = IpAddressPool>,
        advertisements: impl IntoIterator<Item = L2Advertisement>,
    ) -> Self {
        let namespace = options.metallb_namespace.as_str();
        let nodes: Vec<Node> = by_name(nodes.into_iter().map(|n| (n.name.clone(), n)));
        let pools: Vec<IpAddressPool> = by_name(
            pools
                .into_iter()
                .filter(|p| p.namespace == namespace)
                .map(|p| (p.name.clone(), p)),
        );
        let advertisements: Vec<L2Advertisement> = by_name(
            advertisements
                .into_iter()
                .filter(|a| a.namespace == namespace)
                .map(|a| (a.name.clone(), a)),
        );

        let node_facts = nodes
            .iter()
            .map(|n| NodeFacts {
                balanceable: !n.network_unavailable()
                    && (options.ignore_exclude_lb || !n.excluded_from_load_balancers()),
                ready: n.ready(),
            })
            .collect();

        let advertisement_nodes = advertisements
            .iter()
            .map(|ad| {
                nodes
                    .iter()
                    .map(|n| {
                        ad.node_selectors.is_empty() || matches_any(&ad.node_selectors, &n.labels)
                    })
                    .collect()
            })
            .collect();

        let mut pool_advertisements = vec![Vec::new(); pools.len()];
        for (ad_index, ad) in advertisements.iter().enumerate() {
            let all_pools =
                ad.ip_address_pools.is_empty() && ad.ip_address_pool_selectors.is_empty();
            for (pool, attached) in pools.iter().zip(pool_advertisements.iter_mut()) {
                if all_pools
                    || ad.ip_address_pools.contains(&pool.name)
                    || matches_any(&ad.ip_address_pool_selectors, &pool.labels)
                {
                    attached.push(ad_index);
                }
            }
        }

        Self {
            options,
            nodes,
            node_facts,
            pools,
            pool_advertisements,
            advertisements,
            advertisement_nodes,
        }
    }

    pub fn options(&self) -> &ElectionOptions {
        &self.options
    }

    /// The Node cache, sorted by name.
    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    pub fn node(&self, name: &str) -> Option<&Node> {
        self.node_index(name).map(|i| &self.nodes[i])
    }

    /// The pools in the MetalLB namespace, sorted by name.
    pub fn pools(&self) -> &[IpAddressPool] {
        &self.pools
    }

    /// The L2Advertisements in the MetalLB namespace, sorted by name.
    pub fn advertisements(&self) -> &[L2Advertisement] {
        &self.advertisements
    }

    /// The pool holding every one of `ips` (MetalLB's `poolFor`). MetalLB
    /// refuses overlapping pools; if they overlap anyway, the first by name.
    pub fn pool_for(&self, ips: &[IpAddr]) -> Option<&IpAddressPool> {
        self.pool_index_for(ips).map(|i| &self.pools[i])
    }

    /// The advertisements attached to `pool` (by name, by selector, or
    /// because they name no pool at all), sorted by name.
    pub fn advertisements_for_pool(&self, pool: &str) -> impl Iterator<Item = &L2Advertisement> {
        let index = self
            .pools
            .binary_search_by(|p| p.name.as_str().cmp(pool))
            .ok();
        index.into_iter().flat_map(|i| {
            self.pool_advertisements[i]
                .iter()
                .map(|&ad| &self.advertisements[ad])
        })
    }

    pub(super) fn node_index(&self, name: &str) -> Option<usize> {
        self.nodes
            .binary_search_by(|n| n.name.as_str().cmp(name))
            .ok()
    }

    pub(super) fn node_facts(&self) -> &[NodeFacts] {
        &self.node_facts
    }

    pub(super) fn pool_index_for(&self, ips: &[IpAddr]) -> Option<usize> {
        if ips.is_empty() {
            return None;
        }
        self.pools
            .iter()
            .position(|p| ips.iter().all(|&ip| p.contains(ip)))
    }

    pub(super) fn pool_advertisement_indices(&self, pool_index: usize) -> &[usize] {
        &self.pool_advertisements[pool_index]
    }

    pub(super) fn advertisement(&self, index: usize) -> &L2Advertisement {
        &self.advertisements[index]
    }

    pub(super) fn advertisement_selects_node(&self, advertisement: usize, node: usize) -> bool {
        self.advertisement_nodes[advertisement][node]
    }

    pub(super) fn any_advertisement_selects_node(
        &self,
        advertisements: &[usize],
        node: usize,
    ) -> bool {
        advertisements
            .iter()
            .any(|&ad| self.advertisement_selects_node(ad, node))
    }
}

fn by_name<T>(items: impl Iterator<Item = (String, T)>) -> Vec<T> {
    items.collect::<BTreeMap<_, _>>().into_values().collect()
}
