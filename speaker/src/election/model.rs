//! The slice of the cluster the election reads, as plain values. Filled in by
//! the Kubernetes side; nothing here does I/O.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use super::selector::{LabelSelector, Labels};

/// Nodes carrying this label (whatever its value, even `"false"`) are never
/// candidates unless `ignore_exclude_lb` is set.
pub const EXCLUDE_FROM_LB_LABEL: &str = "node.kubernetes.io/exclude-from-external-load-balancers";

/// A Node object from the cache.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Node {
    pub name: String,
    pub labels: Labels,
    /// `status.conditions`: type → status (`"True"`, `"False"`, `"Unknown"`).
    pub conditions: BTreeMap<String, String>,
    /// `status.addresses` of type InternalIP: where this node's speaker gossips
    /// (speakers use the host network). The election does not read them.
    pub internal_ips: Vec<std::net::IpAddr>,
}

impl Node {
    pub fn new(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            ..Self::default()
        }
    }

    pub fn condition(&self, condition_type: &str) -> Option<&str> {
        self.conditions.get(condition_type).map(String::as_str)
    }

    /// Only a `NetworkUnavailable` condition whose status is exactly `"True"`.
    pub fn network_unavailable(&self) -> bool {
        self.condition("NetworkUnavailable") == Some("True")
    }

    /// `Ready` is exactly `"True"`; a missing condition is not ready.
    pub fn ready(&self) -> bool {
        self.condition("Ready") == Some("True")
    }

    pub fn excluded_from_load_balancers(&self) -> bool {
        self.labels.contains_key(EXCLUDE_FROM_LB_LABEL)
    }
}

/// `spec.externalTrafficPolicy`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ExternalTrafficPolicy {
    #[default]
    Cluster,
    Local,
}

impl ExternalTrafficPolicy {
    /// `Local` only when the field is exactly `"Local"`; anything else
    /// (missing, `"Cluster"`, a typo) behaves as `Cluster`, as in MetalLB.
    pub fn from_spec(field: Option<&str>) -> Self {
        match field {
            Some("Local") => Self::Local,
            _ => Self::Cluster,
        }
    }
}

/// A Service of type LoadBalancer (the caller drops other types, as MetalLB
/// withdraws them with `notLoadBalancer` before any election).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Service {
    pub namespace: String,
    pub name: String,
    pub labels: Labels,
    /// Carried for the allocation annotations (`metallb.io/address-pool`,
    /// `metallb.io/loadBalancerIPs`, ...); the election reads none of them.
    pub annotations: Labels,
    /// `spec.loadBalancerClass`.
    pub lb_class: Option<String>,
    pub external_traffic_policy: ExternalTrafficPolicy,
    /// `status.loadBalancer.ingress[].ip`, in order: the first one is hashed.
    pub ingress_ips: Vec<IpAddr>,
}

impl Service {
    /// `namespace/name`, the key MetalLB logs and names balancers by.
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

/// One endpoint of the service's EndpointSlices, flattened.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Endpoint {
    pub node_name: Option<String>,
    pub ready: Option<bool>,
    pub serving: Option<bool>,
    /// Carried for completeness; MetalLB's L2 election ignores it.
    pub terminating: Option<bool>,
}

impl Endpoint {
    /// MetalLB's `EndpointCanServe`: `ready` unset or true, or `serving`
    /// true. So `ready` unset counts even with `serving: false`.
    pub fn can_serve(&self) -> bool {
        self.ready != Some(false) || self.serving == Some(true)
    }
}

/// An L2Advertisement (`metallb.io/v1beta1`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct L2Advertisement {
    pub name: String,
    pub namespace: String,
    /// Pool names; names of pools that do not exist are ignored.
    pub ip_address_pools: Vec<String>,
    /// ORed. With `ip_address_pools` also empty the ad covers all pools; a
    /// selector that matches no pool does not fall back to all pools.
    pub ip_address_pool_selectors: Vec<LabelSelector>,
    /// ORed; empty = every node.
    pub node_selectors: Vec<LabelSelector>,
    /// Empty = every interface the responder would use.
    pub interfaces: Vec<String>,
    /// ORed; empty = every service.
    pub service_selectors: Vec<LabelSelector>,
}

/// Which speakers are alive. The two variants must never be conflated: MetalLB
/// issue #2425 was "unknown" collapsing into "nobody", after which no node
/// announced anything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Membership {
    /// No liveness source (memberlist disabled): every node in the Node cache
    /// is a candidate, assuming a speaker runs on each of them.
    Disabled,
    /// The live speakers by node name. Empty means nobody is alive.
    Members(BTreeSet<String>),
}
