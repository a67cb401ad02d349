//! The cluster as YAML files: the same v1 Node, v1 Service,
//! discovery.k8s.io/v1 EndpointSlice and metallb.io/v1beta1 IPAddressPool /
//! L2Advertisement objects MetalLB users already have, read from a
//! multi-document file or a directory (`--cluster-state PATH`), for users
//! without Kubernetes, for tests, and for the election dry run.
//!
//! Input that is not YAML, or an object whose fields have the wrong shape,
//! stops the load with an error naming the file and document. An object that
//! is well formed but unusable (a pool with a bad CIDR, a Service without a
//! name) is skipped and recorded as a [`Problem`], and everything else keeps
//! working, as MetalLB keeps serving when one object is wrong.

mod change;
pub mod config;
mod dry_run;
mod file;
pub(crate) mod objects;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_yaml_ng::Value;

use crate::election::{
    ClusterView, ElectionOptions, Endpoint, IpAddressPool, L2Advertisement, Node, Service,
};

pub use change::{Change, ServiceKey};
pub use file::{ReadOptions, DEFAULT_MAX_BYTES};

pub use dry_run::{
    dry_run, ElectionReport, MembershipSummary, NodeDecision, OptionsSummary, ServiceElection,
};
pub use objects::{
    IpAddressPoolObject, IpAddressPoolSpec, L2AdvertisementObject, L2AdvertisementSpec,
    SERVICE_NAME_LABEL,
};

/// Namespaced objects without `metadata.namespace` land here, as with
/// `kubectl apply` in the default context.
pub const DEFAULT_NAMESPACE: &str = "default";

/// Everything the election needs, read from files.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClusterState {
    /// Sorted by name.
    pub nodes: Vec<Node>,
    /// Services of type LoadBalancer only, sorted by namespace then name.
    pub services: Vec<ServiceEntry>,
    /// Sorted by namespace then name. An empty namespace (none in the file)
    /// stands for the MetalLB namespace, whichever [`ElectionOptions`] names:
    /// these files are written to be applied with `kubectl -n metallb-system`.
    pub pools: Vec<IpAddressPool>,
    /// Sorted by namespace then name; empty namespace as for `pools`.
    pub advertisements: Vec<L2Advertisement>,
    /// Objects that were skipped, in reading order.
    pub problems: Vec<Problem>,
}

/// A LoadBalancer Service and the endpoints of all its EndpointSlices.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceEntry {
    pub service: Service,
    pub endpoints: Vec<Endpoint>,
}

/// Where an object was read: a file, the 1-based index of the YAML document
/// in it, and for the items of a `List` the 1-based index of the item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// Shared by every object of the file: the loader keeps an origin per
    /// object, and a path per object added up for large files.
    pub file: Arc<Path>,
    pub document: usize,
    pub item: Option<usize>,
}

impl Origin {
    fn new(file: &Arc<Path>, document: usize) -> Self {
        Self {
            file: Arc::clone(file),
            document,
            item: None,
        }
    }

    fn item(&self, item: usize) -> Self {
        Self {
            item: Some(item),
            ..self.clone()
        }
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}, document {}", self.file.display(), self.document)?;
        match self.item {
            Some(item) => write!(f, ", item {item}"),
            None => Ok(()),
        }
    }
}

/// An object that was skipped, and why. `file`/`document` are `null` for
/// problems found against the election options (see [`dry_run`]) rather than
/// while reading.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    pub file: Option<String>,
    pub document: Option<usize>,
    pub item: Option<usize>,
    pub kind: String,
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub reason: String,
}

impl Problem {
    fn at(origin: &Origin, object: &ObjectName, reason: String) -> Self {
        Self {
            file: Some(origin.file.display().to_string()),
            document: Some(origin.document),
            item: origin.item,
            kind: object.kind.clone(),
            namespace: object.namespace.clone(),
            name: object.name.clone(),
            reason,
        }
    }

    /// `kind namespace/name`, as kubectl names objects.
    pub fn object(&self) -> String {
        ObjectName {
            kind: self.kind.clone(),
            namespace: self.namespace.clone(),
            name: self.name.clone(),
        }
        .to_string()
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let (Some(file), Some(document)) = (&self.file, self.document) {
            write!(f, "{file}, document {document}")?;
            if let Some(item) = self.item {
                write!(f, ", item {item}")?;
            }
            f.write_str(": ")?;
        }
        write!(f, "{}: {}", self.object(), self.reason)
    }
}

/// Why the cluster state could not be read at all.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("cannot read cluster state {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("cluster state directory {path} holds no .yaml or .yml file")]
    NoFiles { path: PathBuf },
    /// Not one document: most likely a file being rewritten in place.
    #[error(
        "cluster state file {path} is empty (write `kind: List` with `items: []`, or pass \
         --allow-empty-cluster-state, to mean an empty cluster)"
    )]
    Empty { path: PathBuf },
    #[error("cluster state {path} is larger than --cluster-state-max-bytes ({limit} bytes)")]
    TooLarge { path: PathBuf, limit: u64 },
    /// Transient: the file was being written or replaced while read.
    #[error("cluster state file {path} changed while it was read")]
    Changed { path: PathBuf },
    #[error("{origin}: invalid YAML: {source}")]
    Yaml {
        origin: Origin,
        source: serde_yaml_ng::Error,
    },
    /// A document that is YAML but not a usable Kubernetes object, or whose
    /// fields do not have the types of its kind.
    #[error("{origin}: {object}: {message}")]
    Object {
        origin: Origin,
        /// `Kind namespace/name` as far as known.
        object: String,
        message: String,
    },
}

/// Reads `path`: one multi-document YAML file, or every `.yaml`/`.yml` file
/// of a directory in name order, with the default [`ReadOptions`].
pub fn load(path: &Path) -> Result<ClusterState, ClusterError> {
    read(path, ReadOptions::default()).map(|snapshot| snapshot.state)
}

/// A consistent read of the cluster state files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub state: ClusterState,
    /// Of the files' names and contents: equal digests, same input.
    pub digest: u64,
}

/// Reads `path` as [`load`] does, under `options`.
pub fn read(path: &Path, options: ReadOptions) -> Result<Snapshot, ClusterError> {
    let mut loader = Loader::default();
    let digest = file::read_objects(path, options, |object| {
        loader.add(object.origin, object.value)
    })?;
    Ok(Snapshot {
        state: loader.finish(),
        digest,
    })
}

impl ClusterState {
    /// The election's view of these objects under `options`.
    pub fn view(&self, options: ElectionOptions) -> ClusterView {
        let namespace = options.metallb_namespace.clone();
        let resolve = |ns: &mut String| {
            if ns.is_empty() {
                ns.clone_from(&namespace);
            }
        };
        let pools = self.pools.iter().cloned().map(|mut pool| {
            resolve(&mut pool.namespace);
            pool
        });
        let advertisements = self.advertisements.iter().cloned().map(|mut ad| {
            resolve(&mut ad.namespace);
            ad
        });
        ClusterView::new(options, self.nodes.iter().cloned(), pools, advertisements)
    }
}

/// `Kind namespace/name` of an object, as far as known.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ObjectName {
    kind: String,
    namespace: Option<String>,
    name: Option<String>,
}

impl ObjectName {
    /// Read from the raw YAML, so that errors can name the object even when
    /// it does not deserialize.
    fn of(value: &Value) -> Self {
        let text = |v: Option<&Value>| {
            v.and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
        };
        let metadata = value.get("metadata");
        Self {
            kind: text(value.get("kind")).unwrap_or_else(|| "object".to_owned()),
            namespace: text(metadata.and_then(|m| m.get("namespace"))),
            name: text(metadata.and_then(|m| m.get("name"))),
        }
    }
}

impl fmt::Display for ObjectName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.kind)?;
        match (&self.namespace, &self.name) {
            (Some(ns), Some(name)) => write!(f, " {ns}/{name}"),
            (None, Some(name)) => write!(f, " {name}"),
            (Some(ns), None) => write!(f, " {ns}/(unnamed)"),
            (None, None) => f.write_str(" (unnamed)"),
        }
    }
}

/// The kinds we read, by API group (`""` = core) and kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Node,
    Service,
    EndpointSlice,
    IpAddressPool,
    L2Advertisement,
}

impl Kind {
    const ALL: [Kind; 5] = [
        Kind::Node,
        Kind::Service,
        Kind::EndpointSlice,
        Kind::IpAddressPool,
        Kind::L2Advertisement,
    ];

    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Node => "Node",
            Self::Service => "Service",
            Self::EndpointSlice => "EndpointSlice",
            Self::IpAddressPool => "IPAddressPool",
            Self::L2Advertisement => "L2Advertisement",
        }
    }

    fn api_version(self) -> &'static str {
        match self {
            Self::Node | Self::Service => "v1",
            Self::EndpointSlice => "discovery.k8s.io/v1",
            Self::IpAddressPool | Self::L2Advertisement => "metallb.io/v1beta1",
        }
    }

    fn group(api_version: &str) -> &str {
        api_version.rsplit_once('/').map_or("", |(group, _)| group)
    }

    /// Namespaced kinds without a namespace in the file.
    fn default_namespace(self) -> Option<&'static str> {
        match self {
            Self::Node => None,
            Self::Service | Self::EndpointSlice => Some(DEFAULT_NAMESPACE),
            Self::IpAddressPool | Self::L2Advertisement => Some(""),
        }
    }
}

/// Objects by key, so that a later definition replaces an earlier one as in
/// a cache, with a problem recorded for the earlier one.
type Keyed<T> = BTreeMap<(String, String), (Origin, ObjectName, T)>;

#[derive(Default)]
struct Loader {
    nodes: Keyed<Node>,
    services: Keyed<Service>,
    /// Keyed by the slice's namespace and name; holds its Service's name.
    endpoint_slices: Keyed<(String, Vec<Endpoint>)>,
    pools: Keyed<IpAddressPool>,
    advertisements: Keyed<L2Advertisement>,
    problems: Vec<Problem>,
}

impl Loader {
    fn add(&mut self, origin: Origin, value: Value) -> Result<(), ClusterError> {
        let mut object = ObjectName::of(&value);
        if !value.is_mapping() {
            return Err(refuse(
                &origin,
                &object,
                "not a Kubernetes object: expected a mapping with apiVersion and kind",
            ));
        }
        let field = |name: &str| match value.get(name) {
            Some(Value::String(text)) if !text.is_empty() => Ok(text.clone()),
            _ => Err(refuse(
                &origin,
                &object,
                format!("{name} is missing or not a string"),
            )),
        };
        let api_version = field("apiVersion")?;
        let kind_name = field("kind")?;

        let Some(kind) = Kind::ALL.into_iter().find(|k| k.name() == kind_name) else {
            tracing::debug!("{origin}: skipping {object}: kind {kind_name} plays no part here");
            return Ok(());
        };
        if api_version != kind.api_version() {
            // Same group, other version: meant for us but not readable.
            // Another group's kind that shares the name (a Knative Service)
            // is none of our business.
            if Kind::group(&api_version) == Kind::group(kind.api_version()) {
                let reason = format!(
                    "apiVersion {api_version} is not supported, use {}",
                    kind.api_version()
                );
                self.problems.push(Problem::at(&origin, &object, reason));
            } else {
                tracing::debug!("{origin}: skipping {object}: apiVersion {api_version}");
            }
            return Ok(());
        }
        match kind.default_namespace() {
            None => object.namespace = None,
            Some(default) if object.namespace.as_deref().is_none_or(str::is_empty) => {
                object.namespace = Some(default.to_owned()).filter(|ns| !ns.is_empty());
            }
            Some(_) => {}
        }
        let namespace = object.namespace.clone().unwrap_or_default();

        let stored = match kind {
            Kind::Node => objects::node(typed(value, &origin, &object)?)
                .map(|node| keep(&mut self.nodes, &origin, &object, node)),
            Kind::Service => {
                objects::service(typed(value, &origin, &object)?, &namespace).map(|service| {
                    match service {
                        Some(service) => keep(&mut self.services, &origin, &object, service),
                        None => {
                            tracing::debug!(
                                "{origin}: skipping {object}: not of type LoadBalancer"
                            );
                            None
                        }
                    }
                })
            }
            Kind::EndpointSlice => objects::endpoint_slice(typed(value, &origin, &object)?)
                .map(|slice| keep(&mut self.endpoint_slices, &origin, &object, slice)),
            Kind::IpAddressPool => {
                objects::ip_address_pool(typed(value, &origin, &object)?, &namespace)
                    .map(|pool| keep(&mut self.pools, &origin, &object, pool))
            }
            Kind::L2Advertisement => {
                objects::l2_advertisement(typed(value, &origin, &object)?, &namespace)
                    .map(|ad| keep(&mut self.advertisements, &origin, &object, ad))
            }
        };
        match stored {
            Ok(None) => {}
            Ok(Some(replaced)) => self.problems.push(replaced),
            Err(reason) => {
                tracing::warn!("{origin}: skipping {object}: {reason}");
                self.problems.push(Problem::at(&origin, &object, reason));
            }
        }
        Ok(())
    }

    fn finish(self) -> ClusterState {
        let mut endpoints: BTreeMap<(String, String), Vec<Endpoint>> = BTreeMap::new();
        for ((namespace, slice), (_, _, (service, slice_endpoints))) in self.endpoint_slices {
            let key = (namespace, service);
            if !self.services.contains_key(&key) {
                tracing::debug!(
                    "EndpointSlice {}/{slice}: no LoadBalancer Service {}/{}",
                    key.0,
                    key.0,
                    key.1
                );
            }
            endpoints.entry(key).or_default().extend(slice_endpoints);
        }
        let services = self
            .services
            .into_iter()
            .map(|(key, (_, _, service))| ServiceEntry {
                service,
                endpoints: endpoints.remove(&key).unwrap_or_default(),
            })
            .collect();
        ClusterState {
            nodes: values(self.nodes),
            services,
            pools: values(self.pools),
            advertisements: values(self.advertisements),
            problems: self.problems,
        }
    }
}

fn refuse(origin: &Origin, object: &ObjectName, message: impl Into<String>) -> ClusterError {
    ClusterError::Object {
        origin: origin.clone(),
        object: object.to_string(),
        message: message.into(),
    }
}

/// The object as its kind's type; a field of the wrong type is an error,
/// like a document that is not YAML, since nothing sensible can be guessed.
fn typed<T: DeserializeOwned>(
    value: Value,
    origin: &Origin,
    object: &ObjectName,
) -> Result<T, ClusterError> {
    serde_yaml_ng::from_value(value).map_err(|e| refuse(origin, object, e.to_string()))
}

/// Stores `value` under its namespace and name. Kubernetes names are unique
/// per kind and namespace; a second definition replaces the first, as an
/// update would, and the first is returned as a problem.
fn keep<T>(
    objects: &mut Keyed<T>,
    origin: &Origin,
    object: &ObjectName,
    value: T,
) -> Option<Problem> {
    let key = (
        object.namespace.clone().unwrap_or_default(),
        object.name.clone().unwrap_or_default(),
    );
    let (earlier, earlier_object, _) =
        objects.insert(key, (origin.clone(), object.clone(), value))?;
    let reason = format!("defined again at {origin}, which is used instead");
    Some(Problem::at(&earlier, &earlier_object, reason))
}

fn values<T>(objects: Keyed<T>) -> Vec<T> {
    objects.into_values().map(|(_, _, value)| value).collect()
}
