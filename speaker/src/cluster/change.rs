//! How the cluster model changes: what the cluster sources tell the
//! reconciler. Both sources — the YAML file and the Kubernetes watches — speak
//! only this, so the election cannot tell them apart. The model owns these
//! types; the sources produce them and the daemon consumes them.

use std::fmt;

use super::ClusterState;
use crate::election::{Endpoint, IpAddressPool, L2Advertisement, Membership, Node, Service};

#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServiceKey {
    pub namespace: String,
    pub name: String,
}

impl ServiceKey {
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        ServiceKey {
            namespace: namespace.into(),
            name: name.into(),
        }
    }

    pub fn of(service: &Service) -> Self {
        ServiceKey::new(&service.namespace, &service.name)
    }
}

impl fmt::Display for ServiceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

#[derive(Clone, Debug)]
pub enum Change {
    /// Everything at once: a re-read file, or a source's first complete list.
    /// Services missing from it are gone.
    Reset(ClusterState),
    /// The complete set of each kind; these affect every service.
    Nodes(Vec<Node>),
    Pools(Vec<IpAddressPool>),
    Advertisements(Vec<L2Advertisement>),
    Membership(Membership),
    /// One LoadBalancer Service created or changed (only it is re-elected).
    ServiceApplied(Service),
    /// A Service deleted, or no longer of type LoadBalancer.
    ServiceDeleted(ServiceKey),
    /// The endpoints of all of one Service's EndpointSlices, merged.
    Endpoints(ServiceKey, Vec<Endpoint>),
}
