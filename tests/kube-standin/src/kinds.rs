//! The resources the stand-in serves: one table, read by discovery, by the
//! URL router and by the in-process helpers.

/// One served resource (a kind in one group/version).
#[derive(Debug, PartialEq, Eq)]
pub struct Resource {
    /// `""` for the core group.
    pub group: &'static str,
    pub version: &'static str,
    pub kind: &'static str,
    /// The plural in URLs (`servicel2statuses`).
    pub plural: &'static str,
    pub singular: &'static str,
    pub namespaced: bool,
    /// Has a `/status` subresource: object writes leave `status` alone and
    /// status writes change only `status`.
    pub status_subresource: bool,
    /// Whether a create over HTTP keeps the `status` it was given. The
    /// apiserver resets it for Services, Pods, Namespaces and custom
    /// resources with a status subresource (their strategies'
    /// `PrepareForCreate`); Nodes keep theirs (the kubelet registers a Node
    /// with its status in one call).
    pub status_on_create: bool,
    pub short_names: &'static [&'static str],
}

impl Resource {
    /// `v1` or `group/version`.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_owned()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }
}

const fn resource(
    group: &'static str,
    version: &'static str,
    kind: &'static str,
    plural: &'static str,
    singular: &'static str,
    namespaced: bool,
) -> Resource {
    Resource {
        group,
        version,
        kind,
        plural,
        singular,
        namespaced,
        status_subresource: false,
        status_on_create: true,
        short_names: &[],
    }
}

const fn with_status(mut resource: Resource, kept_on_create: bool) -> Resource {
    resource.status_subresource = true;
    resource.status_on_create = kept_on_create;
    resource
}

const fn short(mut resource: Resource, names: &'static [&'static str]) -> Resource {
    resource.short_names = names;
    resource
}

pub const METALLB_GROUP: &str = "metallb.io";

/// Everything served. Order is discovery order.
pub static RESOURCES: &[Resource] = &[
    short(
        with_status(resource("", "v1", "Node", "nodes", "node", false), true),
        &["no"],
    ),
    short(
        with_status(
            resource("", "v1", "Service", "services", "service", true),
            false,
        ),
        &["svc"],
    ),
    short(
        with_status(resource("", "v1", "Pod", "pods", "pod", true), false),
        &["po"],
    ),
    short(
        with_status(
            resource("", "v1", "Namespace", "namespaces", "namespace", false),
            false,
        ),
        &["ns"],
    ),
    resource("", "v1", "Secret", "secrets", "secret", true),
    short(
        resource("", "v1", "ConfigMap", "configmaps", "configmap", true),
        &["cm"],
    ),
    short(
        resource("", "v1", "Event", "events", "event", true),
        &["ev"],
    ),
    resource(
        "discovery.k8s.io",
        "v1",
        "EndpointSlice",
        "endpointslices",
        "endpointslice",
        true,
    ),
    short(
        resource("events.k8s.io", "v1", "Event", "events", "event", true),
        &["ev"],
    ),
    resource(
        "coordination.k8s.io",
        "v1",
        "Lease",
        "leases",
        "lease",
        true,
    ),
    // The speaker reads its Pod's DaemonSet at a stop (restart or handover).
    short(
        resource("apps", "v1", "DaemonSet", "daemonsets", "daemonset", true),
        &["ds"],
    ),
    resource(
        METALLB_GROUP,
        "v1beta1",
        "IPAddressPool",
        "ipaddresspools",
        "ipaddresspool",
        true,
    ),
    resource(
        METALLB_GROUP,
        "v1beta1",
        "L2Advertisement",
        "l2advertisements",
        "l2advertisement",
        true,
    ),
    with_status(
        resource(
            METALLB_GROUP,
            "v1beta1",
            "ServiceL2Status",
            "servicel2statuses",
            "servicel2status",
            true,
        ),
        false,
    ),
];

/// The resource of `apiVersion` + `kind`.
pub fn by_kind(api_version: &str, kind: &str) -> Option<&'static Resource> {
    RESOURCES
        .iter()
        .find(|r| r.kind == kind && r.api_version() == api_version)
}

/// The resource of a URL's group, version and plural.
pub fn by_plural(group: &str, version: &str, plural: &str) -> Option<&'static Resource> {
    RESOURCES
        .iter()
        .find(|r| r.group == group && r.version == version && r.plural == plural)
}

/// The groups other than core, each once, in table order.
pub fn groups() -> Vec<(&'static str, &'static str)> {
    let mut groups: Vec<(&str, &str)> = Vec::new();
    for r in RESOURCES.iter().filter(|r| !r.group.is_empty()) {
        if !groups.contains(&(r.group, r.version)) {
            groups.push((r.group, r.version));
        }
    }
    groups
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_resource_is_found_by_kind_and_by_plural() {
        for r in RESOURCES {
            assert_eq!(by_kind(&r.api_version(), r.kind), Some(r));
            assert_eq!(by_plural(r.group, r.version, r.plural), Some(r));
        }
        assert_eq!(by_kind("v1", "Event").unwrap().group, "");
        assert_eq!(
            by_kind("events.k8s.io/v1", "Event").unwrap().group,
            "events.k8s.io"
        );
        assert!(by_kind("apps/v1", "Deployment").is_none());
    }
}
