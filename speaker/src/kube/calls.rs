//! Every Kubernetes API call the speaker makes, named once: API group,
//! resource, verbs and where. The code builds its `Api` handles from these
//! entries (`Call::api`, `Call::dynamic_api`), so the table is what the
//! speaker can do, and the chart's RBAC must grant exactly [`ALL`], plus
//! [`METRICS_AUTHZ`] when the chart turns on secure metrics: the chart test (`tests/tests/rbac_calls.rs`) renders it with Helm and
//! compares rule by rule.

use kube::{
    api::{ApiResource, DynamicObject},
    Api, Client, Resource,
};

use super::resources::{metallb_resource, service_l2_status_resource, METALLB_GROUP};
use crate::cluster::Kind;

/// Where a call reaches, which decides the RBAC object that grants it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Scope {
    /// Cluster-scoped objects, or namespaced ones in every namespace: a
    /// ClusterRole.
    Cluster,
    /// MetalLB's configuration namespace (`--namespace`): a Role there.
    ConfigNamespace,
    /// The speaker pods' own namespace: a Role there.
    PodNamespace,
}

/// One resource the speaker uses, and how.
#[derive(Debug, PartialEq, Eq)]
pub struct Call {
    /// `""` for the core group.
    pub group: &'static str,
    /// The plural, with `/subresource` when the call is on one.
    pub resource: &'static str,
    pub verbs: &'static [&'static str],
    pub scope: Scope,
    /// Why the speaker needs it (documentation, and the test's messages).
    pub why: &'static str,
}

pub const NODES: Call = Call {
    group: "",
    resource: "nodes",
    verbs: &["list", "watch"],
    scope: Scope::Cluster,
    why: "the election's candidates; gossip peers' InternalIPs",
};

pub const SERVICES: Call = Call {
    group: "",
    resource: "services",
    // `get`: the Service's uid for the Events recorded on it.
    verbs: &["get", "list", "watch"],
    scope: Scope::Cluster,
    why: "LoadBalancer Services in every namespace",
};

pub const ENDPOINT_SLICES: Call = Call {
    group: "discovery.k8s.io",
    resource: "endpointslices",
    verbs: &["list", "watch"],
    scope: Scope::Cluster,
    why: "which nodes have ready endpoints (externalTrafficPolicy: Local)",
};

pub const IP_ADDRESS_POOLS: Call = Call {
    group: METALLB_GROUP,
    resource: "ipaddresspools",
    verbs: &["list", "watch"],
    scope: Scope::ConfigNamespace,
    why: "MetalLB's pools",
};

pub const L2_ADVERTISEMENTS: Call = Call {
    group: METALLB_GROUP,
    resource: "l2advertisements",
    verbs: &["list", "watch"],
    scope: Scope::ConfigNamespace,
    why: "MetalLB's layer-2 advertisements",
};

pub const SERVICE_L2_STATUSES: Call = Call {
    group: METALLB_GROUP,
    resource: "servicel2statuses",
    // `patch`: adopting (owner reference) the objects of an earlier Pod.
    verbs: &["list", "watch", "create", "delete", "patch"],
    scope: Scope::ConfigNamespace,
    why: "this node's ServiceL2Status objects, reconciled",
};

pub const SERVICE_L2_STATUSES_STATUS: Call = Call {
    group: METALLB_GROUP,
    resource: "servicel2statuses/status",
    verbs: &["patch"],
    scope: Scope::ConfigNamespace,
    why: "a ServiceL2Status's status (dropped by the API server on create)",
};

pub const EVENTS: Call = Call {
    group: "events.k8s.io",
    resource: "events",
    // `patch`: the recorder counts a repeated event into its series.
    verbs: &["create", "patch"],
    scope: Scope::Cluster,
    why: "nodeAssigned and announceFailed on Services, in their namespaces",
};

pub const PODS: Call = Call {
    group: "",
    resource: "pods",
    // `get`: this Pod's controlling DaemonSet, at a stop (`restart`).
    verbs: &["get", "list"],
    scope: Scope::PodNamespace,
    why:
        "speaker pods' IPs, as gossip peers (--memberlist-pod-selector); this Pod's owner at a stop",
};

pub const DAEMON_SETS: Call = Call {
    group: "apps",
    resource: "daemonsets",
    verbs: &["get"],
    scope: Scope::PodNamespace,
    why: "whether a stop is a restart: this Pod's DaemonSet still exists and selects this node",
};

pub const TOKEN_REVIEWS: Call = Call {
    group: "authentication.k8s.io",
    resource: "tokenreviews",
    verbs: &["create"],
    scope: Scope::Cluster,
    why: "who a /metrics client's bearer token belongs to (--metrics-authz kubernetes)",
};

pub const SUBJECT_ACCESS_REVIEWS: Call = Call {
    group: "authorization.k8s.io",
    resource: "subjectaccessreviews",
    verbs: &["create"],
    scope: Scope::Cluster,
    why: "whether that user may get /metrics (--metrics-authz kubernetes)",
};

/// The calls `--metrics-authz kubernetes` adds to [`ALL`].
pub const METRICS_AUTHZ: &[&Call] = &[&TOKEN_REVIEWS, &SUBJECT_ACCESS_REVIEWS];

/// Every call, in the order of the chart's rules.
pub const ALL: &[&Call] = &[
    &NODES,
    &SERVICES,
    &ENDPOINT_SLICES,
    &IP_ADDRESS_POOLS,
    &L2_ADVERTISEMENTS,
    &SERVICE_L2_STATUSES,
    &SERVICE_L2_STATUSES_STATUS,
    &EVENTS,
    &PODS,
    &DAEMON_SETS,
];

impl Call {
    /// The plural without a subresource.
    fn plural(&self) -> &'static str {
        self.resource.split('/').next().unwrap_or(self.resource)
    }

    /// A typed handle on this resource, in `namespace` or (`None`) in every
    /// namespace / cluster-wide.
    ///
    /// # Panics
    /// When `K` is not this call's resource: a programming error the unit
    /// tests catch.
    pub fn api<K>(&self, client: Client, namespace: Option<&str>) -> Api<K>
    where
        K: Resource<DynamicType = (), Scope = kube::core::NamespaceResourceScope>,
    {
        assert_eq!(
            (K::group(&()).as_ref(), K::plural(&()).as_ref()),
            (self.group, self.plural()),
            "an Api handle for another resource than the call names"
        );
        match namespace {
            Some(namespace) => Api::namespaced(client, namespace),
            None => Api::all(client),
        }
    }

    /// [`Self::api`] for cluster-scoped kinds (Nodes).
    pub fn cluster_api<K>(&self, client: Client) -> Api<K>
    where
        K: Resource<DynamicType = (), Scope = kube::core::ClusterResourceScope>,
    {
        assert_eq!(
            (K::group(&()).as_ref(), K::plural(&()).as_ref()),
            (self.group, self.plural()),
            "an Api handle for another resource than the call names"
        );
        Api::all(client)
    }

    /// A handle on one of MetalLB's resources as [`DynamicObject`]s, in
    /// `namespace`.
    pub fn dynamic_api(&self, client: Client, namespace: &str) -> Api<DynamicObject> {
        Api::namespaced_with(client, namespace, &self.api_resource())
    }

    fn api_resource(&self) -> ApiResource {
        let resource = match self.plural() {
            "ipaddresspools" => metallb_resource(Kind::IpAddressPool),
            "l2advertisements" => metallb_resource(Kind::L2Advertisement),
            "servicel2statuses" => service_l2_status_resource(),
            other => panic!("{other} is not one of MetalLB's resources"),
        };
        debug_assert_eq!(resource.group, self.group);
        resource
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::{
        authentication::v1::TokenReview,
        authorization::v1::SubjectAccessReview,
        core::v1::{Node, Pod, Service},
        discovery::v1::EndpointSlice,
        events::v1::Event,
    };

    use super::*;

    fn client() -> Client {
        let config = kube::Config::new("http://127.0.0.1:9".parse().unwrap());
        Client::try_from(config).unwrap()
    }

    #[tokio::test]
    async fn every_handle_is_the_resource_its_call_names() {
        let client = client();
        let _: Api<Node> = NODES.cluster_api(client.clone());
        let _: Api<TokenReview> = TOKEN_REVIEWS.cluster_api(client.clone());
        let _: Api<SubjectAccessReview> = SUBJECT_ACCESS_REVIEWS.cluster_api(client.clone());
        let _: Api<Service> = SERVICES.api(client.clone(), None);
        let _: Api<EndpointSlice> = ENDPOINT_SLICES.api(client.clone(), None);
        let _: Api<Event> = EVENTS.api(client.clone(), Some("default"));
        let _: Api<Pod> = PODS.api(client.clone(), Some("metallb-system"));
        let _: Api<k8s_openapi::api::apps::v1::DaemonSet> =
            DAEMON_SETS.api(client.clone(), Some("metallb-system"));
        for call in [
            &IP_ADDRESS_POOLS,
            &L2_ADVERTISEMENTS,
            &SERVICE_L2_STATUSES,
            &SERVICE_L2_STATUSES_STATUS,
        ] {
            assert_eq!(call.api_resource().plural, call.plural());
        }
    }

    #[tokio::test]
    #[should_panic(expected = "another resource")]
    async fn a_handle_of_the_wrong_kind_is_refused() {
        let _: Api<Pod> = SERVICES.api(client(), None);
    }

    #[test]
    fn each_resource_is_named_once() {
        let mut seen = std::collections::BTreeSet::new();
        for call in ALL.iter().chain(METRICS_AUTHZ) {
            assert!(seen.insert((call.group, call.resource)), "{call:?} twice");
            assert!(!call.verbs.is_empty(), "{call:?} has no verb");
        }
    }
}
