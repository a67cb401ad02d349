//! Kubernetes objects into the election's model. Built-in kinds come as
//! k8s-openapi types; MetalLB's two CRDs have their own serde types here
//! (only the fields the speaker reads; unknown fields are ignored, as the
//! API server would keep them for other readers).
//!
//! Each conversion either gives the model value or the reason the object
//! cannot be used, which the loader records as a problem.

use std::net::IpAddr;

use k8s_openapi::api::core::v1 as core;
use k8s_openapi::api::discovery::v1 as discovery;
use k8s_openapi::apimachinery::pkg::apis::meta::v1 as meta;
use serde::Deserialize;

use crate::election::{
    Endpoint, ExternalTrafficPolicy, IpAddressPool, L2Advertisement, LabelSelector,
    LabelSelectorRequirement, Labels, Node, SelectorOperator, Service,
};

/// The label that ties an EndpointSlice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// `metallb.io/v1beta1` `IPAddressPool`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IpAddressPoolObject {
    #[serde(default)]
    pub metadata: meta::ObjectMeta,
    pub spec: Option<IpAddressPoolSpec>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IpAddressPoolSpec {
    /// CIDRs and `first-last` ranges. `autoAssign`, `avoidBuggyIPs` and
    /// `serviceAllocation` steer allocation, which is not the speaker's job.
    pub addresses: Option<Vec<String>>,
}

/// `metallb.io/v1beta1` `L2Advertisement`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct L2AdvertisementObject {
    #[serde(default)]
    pub metadata: meta::ObjectMeta,
    pub spec: Option<L2AdvertisementSpec>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct L2AdvertisementSpec {
    pub ip_address_pools: Option<Vec<String>>,
    pub ip_address_pool_selectors: Option<Vec<meta::LabelSelector>>,
    pub node_selectors: Option<Vec<meta::LabelSelector>>,
    pub interfaces: Option<Vec<String>>,
    pub service_selectors: Option<Vec<meta::LabelSelector>>,
}

/// `metadata.name`, refusing a missing or empty one.
pub fn required_name(metadata: &meta::ObjectMeta) -> Result<String, String> {
    match metadata.name.as_deref() {
        Some(name) if !name.is_empty() => Ok(name.to_owned()),
        _ => Err("metadata.name is missing".to_owned()),
    }
}

fn labels(metadata: &meta::ObjectMeta) -> Labels {
    metadata.labels.clone().unwrap_or_default()
}

pub fn node(object: core::Node) -> Result<Node, String> {
    let name = required_name(&object.metadata)?;
    let status = object.status.unwrap_or_default();
    let conditions = status
        .conditions
        .unwrap_or_default()
        .into_iter()
        .map(|c| (c.type_, c.status))
        .collect();
    // Unparsable addresses are skipped: they only steer gossip, never the election.
    let internal_ips = status
        .addresses
        .unwrap_or_default()
        .into_iter()
        .filter(|a| a.type_ == "InternalIP")
        .filter_map(|a| a.address.parse().ok())
        .collect();
    Ok(Node {
        name,
        labels: labels(&object.metadata),
        conditions,
        internal_ips,
    })
}

/// `Ok(None)` for a Service that is not of type LoadBalancer: MetalLB
/// withdraws those before any election.
pub fn service(object: core::Service, namespace: &str) -> Result<Option<Service>, String> {
    let name = required_name(&object.metadata)?;
    let spec = object.spec.unwrap_or_default();
    if spec.type_.as_deref() != Some("LoadBalancer") {
        return Ok(None);
    }
    let ingress = object
        .status
        .and_then(|s| s.load_balancer)
        .and_then(|lb| lb.ingress)
        .unwrap_or_default();
    // Hostname-only entries (cloud load balancers) carry no IP to announce.
    let ingress_ips = ingress
        .iter()
        .enumerate()
        .filter_map(|(i, entry)| entry.ip.as_deref().map(|ip| (i, ip)))
        .map(|(i, text)| {
            text.parse::<IpAddr>().map_err(|_| {
                format!("status.loadBalancer.ingress[{i}].ip {text:?} is not an IP address")
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Some(Service {
        namespace: namespace.to_owned(),
        name,
        labels: labels(&object.metadata),
        annotations: object.metadata.annotations.unwrap_or_default(),
        lb_class: spec.load_balancer_class,
        external_traffic_policy: ExternalTrafficPolicy::from_spec(
            spec.external_traffic_policy.as_deref(),
        ),
        ingress_ips,
    }))
}

/// The Service a slice belongs to and its endpoints.
pub fn endpoint_slice(object: discovery::EndpointSlice) -> Result<(String, Vec<Endpoint>), String> {
    let service = object
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(SERVICE_NAME_LABEL))
        .filter(|s| !s.is_empty())
        .cloned()
        .ok_or_else(|| format!("label {SERVICE_NAME_LABEL} is missing"))?;
    let endpoints = object
        .endpoints
        .into_iter()
        .map(|e| {
            let conditions = e.conditions.unwrap_or_default();
            Endpoint {
                node_name: e.node_name,
                ready: conditions.ready,
                serving: conditions.serving,
                terminating: conditions.terminating,
            }
        })
        .collect();
    Ok((service, endpoints))
}

pub fn ip_address_pool(
    object: IpAddressPoolObject,
    namespace: &str,
) -> Result<IpAddressPool, String> {
    let name = required_name(&object.metadata)?;
    let addresses = object.spec.and_then(|s| s.addresses).unwrap_or_default();
    IpAddressPool::new(&name, namespace, labels(&object.metadata), &addresses)
        .map_err(|e| e.to_string())
}

pub fn l2_advertisement(
    object: L2AdvertisementObject,
    namespace: &str,
) -> Result<L2Advertisement, String> {
    let name = required_name(&object.metadata)?;
    let spec = object.spec.unwrap_or_default();
    Ok(L2Advertisement {
        name,
        namespace: namespace.to_owned(),
        ip_address_pools: spec.ip_address_pools.unwrap_or_default(),
        ip_address_pool_selectors: selectors(
            "spec.ipAddressPoolSelectors",
            spec.ip_address_pool_selectors,
        )?,
        node_selectors: selectors("spec.nodeSelectors", spec.node_selectors)?,
        interfaces: spec.interfaces.unwrap_or_default(),
        service_selectors: selectors("spec.serviceSelectors", spec.service_selectors)?,
    })
}

/// MetalLB refuses a configuration holding a selector Kubernetes cannot
/// convert; here only the advertisement carrying it is refused.
fn selectors(
    field: &str,
    selectors: Option<Vec<meta::LabelSelector>>,
) -> Result<Vec<LabelSelector>, String> {
    selectors
        .unwrap_or_default()
        .into_iter()
        .enumerate()
        .map(|(i, s)| label_selector(s).map_err(|e| format!("{field}[{i}]: {e}")))
        .collect()
}

fn label_selector(
    selector: meta::LabelSelector,
) -> Result<LabelSelector, crate::election::SelectorError> {
    let match_expressions = selector
        .match_expressions
        .unwrap_or_default()
        .into_iter()
        .map(|r| {
            Ok(LabelSelectorRequirement {
                operator: SelectorOperator::parse(&r.operator)?,
                key: r.key,
                values: r.values.unwrap_or_default(),
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let selector = LabelSelector {
        match_labels: selector.match_labels.unwrap_or_default(),
        match_expressions,
    };
    selector.validate()?;
    Ok(selector)
}
