//! The API resources the speaker uses that k8s-openapi has no type for:
//! MetalLB's, addressed as [`DynamicObject`](kube::api::DynamicObject)s.

use kube::api::ApiResource;

use crate::cluster::Kind;

pub const METALLB_GROUP: &str = "metallb.io";
pub const METALLB_VERSION: &str = "v1beta1";

/// MetalLB's kinds, watched as [`DynamicObject`]s.
pub(crate) fn metallb_resource(kind: Kind) -> ApiResource {
    let plural = match kind {
        Kind::IpAddressPool => "ipaddresspools",
        Kind::L2Advertisement => "l2advertisements",
        _ => unreachable!("{} is a built-in kind", kind.name()),
    };
    ApiResource {
        group: METALLB_GROUP.to_owned(),
        version: METALLB_VERSION.to_owned(),
        api_version: format!("{METALLB_GROUP}/{METALLB_VERSION}"),
        kind: kind.name().to_owned(),
        plural: plural.to_owned(),
    }
}

/// `metallb.io/v1beta1` `ServiceL2Status`.
pub fn service_l2_status_resource() -> ApiResource {
    ApiResource {
        group: METALLB_GROUP.to_owned(),
        version: METALLB_VERSION.to_owned(),
        api_version: format!("{METALLB_GROUP}/{METALLB_VERSION}"),
        kind: "ServiceL2Status".to_owned(),
        plural: "servicel2statuses".to_owned(),
    }
}
