//! What a request URL names, and the Kubernetes verb of a request.

use http::Method;

use crate::kinds::{self, Resource};

/// An object or a collection of one resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourcePath {
    pub resource: &'static Resource,
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub subresource: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    Version,
    Health,
    CoreVersions,
    Groups,
    Group(String),
    GroupResources(String, String),
    Resource(ResourcePath),
    /// `POST` of a TokenReview or SubjectAccessReview: answered, never
    /// stored (the plural).
    Review(&'static str),
    /// `/_standin/...`: the test controls (the rest of the path).
    Control(Vec<String>),
    /// A well-formed resource URL of a resource not served.
    UnknownResource(String),
    NotFound,
}

/// The route of `path`.
pub fn route(path: &str) -> Route {
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    match segments.as_slice() {
        ["version"] => Route::Version,
        ["healthz" | "livez" | "readyz"] => Route::Health,
        ["api"] => Route::CoreVersions,
        ["api", "v1"] => Route::GroupResources(String::new(), "v1".into()),
        ["api", "v1", rest @ ..] => resource_route("", "v1", rest),
        ["apis"] => Route::Groups,
        ["apis", group] => Route::Group((*group).into()),
        ["apis", "authentication.k8s.io", "v1", "tokenreviews"] => Route::Review("tokenreviews"),
        ["apis", "authorization.k8s.io", "v1", "subjectaccessreviews"] => {
            Route::Review("subjectaccessreviews")
        }
        ["apis", group, version] => Route::GroupResources((*group).into(), (*version).into()),
        ["apis", group, version, rest @ ..] => resource_route(group, version, rest),
        ["_standin", rest @ ..] => Route::Control(rest.iter().map(|s| (*s).to_owned()).collect()),
        _ => Route::NotFound,
    }
}

fn resource_route(group: &str, version: &str, rest: &[&str]) -> Route {
    // `namespaces/NAME/status` is the Namespace's own status, not a
    // resource called "status" in namespace NAME.
    let (namespace, rest) = match rest {
        ["namespaces", namespace, plural, rest @ ..]
            if *plural != "status" && *plural != "finalize" =>
        {
            (
                Some((*namespace).to_owned()),
                std::iter::once(plural)
                    .chain(rest)
                    .copied()
                    .collect::<Vec<_>>(),
            )
        }
        _ => (None, rest.to_vec()),
    };
    let (plural, name, subresource) = match rest.as_slice() {
        [plural] => (*plural, None, None),
        [plural, name] => (*plural, Some(*name), None),
        [plural, name, subresource] => (*plural, Some(*name), Some(*subresource)),
        _ => return Route::NotFound,
    };
    let Some(resource) = kinds::by_plural(group, version, plural) else {
        return Route::UnknownResource(plural.to_owned());
    };
    if namespace.is_some() && !resource.namespaced {
        return Route::NotFound;
    }
    Route::Resource(ResourcePath {
        resource,
        namespace,
        name: name.map(str::to_owned),
        subresource: subresource.map(str::to_owned),
    })
}

/// The Kubernetes verb of a request on a resource.
pub fn verb(method: &Method, has_name: bool, watch: bool) -> &'static str {
    match (method.as_str(), has_name) {
        ("GET", true) => "get",
        ("GET", false) if watch => "watch",
        ("GET", false) => "list",
        ("POST", _) => "create",
        ("PUT", _) => "update",
        ("PATCH", _) => "patch",
        ("DELETE", true) => "delete",
        ("DELETE", false) => "deletecollection",
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_name_resources_objects_and_subresources() {
        let Route::Resource(path) = route("/api/v1/namespaces/default/services/web/status") else {
            panic!("not a resource route");
        };
        assert_eq!(path.resource.kind, "Service");
        assert_eq!(path.namespace.as_deref(), Some("default"));
        assert_eq!(path.name.as_deref(), Some("web"));
        assert_eq!(path.subresource.as_deref(), Some("status"));

        let Route::Resource(path) = route("/api/v1/namespaces/kube-system/status") else {
            panic!("not a resource route");
        };
        assert_eq!(path.resource.kind, "Namespace");
        assert_eq!(path.name.as_deref(), Some("kube-system"));
        assert_eq!(path.subresource.as_deref(), Some("status"));

        let Route::Resource(path) = route("/apis/metallb.io/v1beta1/servicel2statuses") else {
            panic!("not a resource route");
        };
        assert_eq!((path.namespace, path.name), (None, None));

        assert_eq!(route("/api/v1/namespaces/x/nodes"), Route::NotFound);
        assert_eq!(
            route("/apis/apps/v1/deployments"),
            Route::UnknownResource("deployments".into())
        );
        assert_eq!(route("/apis/metallb.io"), Route::Group("metallb.io".into()));
        assert_eq!(
            route("/apis/authorization.k8s.io/v1/subjectaccessreviews"),
            Route::Review("subjectaccessreviews")
        );
    }
}
