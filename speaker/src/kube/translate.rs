//! Kubernetes objects as the election sees them: each watched object
//! becomes its key and its [`Converted`] value.

use k8s_openapi::{
    api::{core::v1 as core, discovery::v1 as discovery},
    apimachinery::pkg::apis::meta::v1::ObjectMeta,
};
use kube::api::DynamicObject;
use serde::de::DeserializeOwned;

use crate::{
    cluster::{objects, IpAddressPoolObject, L2AdvertisementObject},
    election::{Endpoint, IpAddressPool, L2Advertisement, Node, Service},
};

/// Namespace (empty for Nodes) and name.
pub type ObjectKey = (String, String);

/// An object as the election sees it: `Ok(None)` for one that plays no part
/// (a Service not of type LoadBalancer), `Err` for one that is unusable.
pub type Converted<T> = Result<Option<T>, String>;

/// An EndpointSlice: its Service's name (same namespace) and endpoints.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Slice {
    pub service: String,
    pub endpoints: Vec<Endpoint>,
}

pub fn object_key(metadata: &ObjectMeta) -> ObjectKey {
    (
        metadata.namespace.clone().unwrap_or_default(),
        metadata.name.clone().unwrap_or_default(),
    )
}

pub fn node(object: core::Node) -> (ObjectKey, Converted<Node>) {
    (
        object_key(&object.metadata),
        objects::node(object).map(Some),
    )
}

pub fn service(object: core::Service) -> (ObjectKey, Converted<Service>) {
    let key = object_key(&object.metadata);
    let service = objects::service(object, &key.0);
    (key, service)
}

pub fn endpoint_slice(object: discovery::EndpointSlice) -> (ObjectKey, Converted<Slice>) {
    let key = object_key(&object.metadata);
    let slice = objects::endpoint_slice(object)
        .map(|(service, endpoints)| Some(Slice { service, endpoints }));
    (key, slice)
}

pub fn ip_address_pool(object: DynamicObject) -> (ObjectKey, Converted<IpAddressPool>) {
    let key = object_key(&object.metadata);
    let pool = typed::<IpAddressPoolObject>(&object)
        .and_then(|pool| objects::ip_address_pool(pool, &key.0))
        .map(Some);
    (key, pool)
}

pub fn l2_advertisement(object: DynamicObject) -> (ObjectKey, Converted<L2Advertisement>) {
    let key = object_key(&object.metadata);
    let ad = typed::<L2AdvertisementObject>(&object)
        .and_then(|ad| objects::l2_advertisement(ad, &key.0))
        .map(Some);
    (key, ad)
}

pub fn typed<T: DeserializeOwned>(object: &DynamicObject) -> Result<T, String> {
    serde_json::to_value(object)
        .and_then(serde_json::from_value)
        .map_err(|e| e.to_string())
}
