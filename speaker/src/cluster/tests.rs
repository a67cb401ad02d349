//! Loading cluster state: the example file, directories, multi-document
//! files and lists, and every kind of bad input.

use std::fs;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use super::*;
use crate::election::{ExternalTrafficPolicy, LabelSelector, SelectorOperator};

pub(super) fn iris_example() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/examples/iris-regression.yaml")
}

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

/// A fresh directory under the system temp dir, removed on drop.
pub(super) struct Scratch(PathBuf);

impl Scratch {
    pub(super) fn new() -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "xdp-speaker-cluster-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    pub(super) fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.0.join(name);
        fs::write(&path, text).unwrap();
        path
    }

    pub(super) fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Loads `text` as a single file and returns the state.
fn load_text(text: &str) -> ClusterState {
    let scratch = Scratch::new();
    let file = scratch.write("state.yaml", text);
    load(&file).unwrap_or_else(|e| panic!("{e}"))
}

fn load_error(text: &str) -> (ClusterError, String) {
    let scratch = Scratch::new();
    let file = scratch.write("state.yaml", text);
    let err = load(&file).expect_err("the load should fail");
    let message = err.to_string();
    (err, message)
}

fn node_names(state: &ClusterState) -> Vec<&str> {
    state.nodes.iter().map(|n| n.name.as_str()).collect()
}

const POOL: &str = "
apiVersion: metallb.io/v1beta1
kind: IPAddressPool
metadata: {name: lab, namespace: metallb-system}
spec: {addresses: [192.0.2.0/24]}
";

#[test]
fn loads_the_iris_example() {
    let state = load(&iris_example()).unwrap();
    assert_eq!(node_names(&state), ["iris1", "iris2"]);
    assert_eq!(state.nodes[0].condition("Ready"), Some("True"));

    assert_eq!(state.pools.len(), 1);
    let pool = &state.pools[0];
    assert_eq!(
        (pool.name.as_str(), pool.namespace.as_str()),
        ("lab", "metallb-system")
    );
    assert!(pool.contains(ip("192.0.2.100")) && pool.contains(ip("192.0.2.110")));
    assert!(!pool.contains(ip("192.0.2.111")));
    assert!(pool.contains(ip("2001:db8::10f")) && !pool.contains(ip("2001:db8::110")));

    assert_eq!(state.advertisements.len(), 1);
    let ad = &state.advertisements[0];
    assert_eq!(ad.name, "lab");
    assert!(ad.ip_address_pools.is_empty() && ad.node_selectors.is_empty());

    assert_eq!(state.services.len(), 1);
    let entry = &state.services[0];
    assert_eq!(entry.service.key(), "default/web");
    assert_eq!(
        entry.service.external_traffic_policy,
        ExternalTrafficPolicy::Local
    );
    assert_eq!(entry.service.ingress_ips, [ip("192.0.2.100")]);
    assert_eq!(entry.endpoints.len(), 1);
    assert_eq!(entry.endpoints[0].node_name.as_deref(), Some("iris1"));
    assert_eq!(entry.endpoints[0].ready, Some(true));
    assert!(state.problems.is_empty(), "{:?}", state.problems);
}

#[test]
fn reads_a_directory_in_name_order_and_only_yaml_files() {
    let scratch = Scratch::new();
    scratch.write(
        "b.yaml",
        "apiVersion: v1\nkind: Node\nmetadata: {name: n1, labels: {from: b}}\n",
    );
    scratch.write(
        "a.yml",
        "apiVersion: v1\nkind: Node\nmetadata: {name: n1, labels: {from: a}}\n---\n\
         apiVersion: v1\nkind: Node\nmetadata: {name: n2}\n",
    );
    // None of these is read: each would fail the load if it were.
    scratch.write("c.txt", "not: [yaml");
    scratch.write(".hidden.yaml", "not: [yaml");
    fs::create_dir(scratch.path().join("sub.yaml")).unwrap();

    let state = load(scratch.path()).unwrap();
    assert_eq!(node_names(&state), ["n1", "n2"]);
    // b.yaml is read after a.yml, so its n1 replaces a.yml's.
    assert_eq!(state.nodes[0].labels["from"], "b");
    assert_eq!(state.problems.len(), 1);
    let problem = &state.problems[0];
    assert!(problem.file.as_deref().unwrap().ends_with("a.yml"));
    assert_eq!(problem.document, Some(1));
    assert_eq!(problem.object(), "Node n1");
    assert!(
        problem.reason.contains("b.yaml, document 1"),
        "{}",
        problem.reason
    );
}

#[test]
fn a_directory_without_yaml_files_is_an_error() {
    let scratch = Scratch::new();
    scratch.write("notes.txt", "hello");
    let err = load(scratch.path()).unwrap_err();
    assert!(matches!(err, ClusterError::NoFiles { .. }), "{err:?}");
    assert!(err.to_string().contains("holds no .yaml or .yml file"));
}

#[test]
fn an_empty_file_is_an_error_unless_allowed_or_an_explicit_list() {
    let scratch = Scratch::new();
    for text in ["", "\n\n", "# only a comment\n---\n"] {
        let file = scratch.write("state.yaml", text);
        let err = load(&file).unwrap_err();
        assert!(
            matches!(err, ClusterError::Empty { .. }),
            "{text:?}: {err:?}"
        );
        assert!(
            err.to_string().contains("--allow-empty-cluster-state"),
            "{err}"
        );
        let allowed = ReadOptions {
            allow_empty: true,
            ..ReadOptions::default()
        };
        assert_eq!(read(&file, allowed).unwrap().state, ClusterState::default());
    }
    let file = scratch.write("state.yaml", "apiVersion: v1\nkind: List\nitems: []\n");
    assert_eq!(load(&file).unwrap(), ClusterState::default());
    // In a directory, one empty file (being rewritten) fails the read.
    scratch.write(
        "a.yaml",
        "apiVersion: v1\nkind: Node\nmetadata: {name: a}\n",
    );
    scratch.write("b.yaml", "");
    fs::remove_file(scratch.path().join("state.yaml")).unwrap();
    let err = load(scratch.path()).unwrap_err();
    assert!(
        matches!(&err, ClusterError::Empty { path } if path.ends_with("b.yaml")),
        "{err:?}"
    );
}

#[test]
fn input_over_the_size_cap_is_refused() {
    let scratch = Scratch::new();
    let text = "apiVersion: v1\nkind: Node\nmetadata: {name: a}\n";
    let file = scratch.write("state.yaml", text);
    let capped = |max_bytes| ReadOptions {
        max_bytes,
        ..ReadOptions::default()
    };
    assert!(read(&file, capped(text.len() as u64)).is_ok());
    let err = read(&file, capped(text.len() as u64 - 1)).unwrap_err();
    assert!(matches!(err, ClusterError::TooLarge { .. }), "{err:?}");
    assert!(
        err.to_string().contains("--cluster-state-max-bytes"),
        "{err}"
    );
    // The cap is for all files of a directory together.
    scratch.write(
        "other.yaml",
        "apiVersion: v1\nkind: Node\nmetadata: {name: b}\n",
    );
    let err = read(scratch.path(), capped(text.len() as u64 + 10)).unwrap_err();
    assert!(matches!(err, ClusterError::TooLarge { .. }), "{err:?}");
}

#[test]
fn the_digest_follows_the_content() {
    let scratch = Scratch::new();
    let file = scratch.write(
        "state.yaml",
        "apiVersion: v1\nkind: Node\nmetadata: {name: a}\n",
    );
    let first = read(&file, ReadOptions::default()).unwrap().digest;
    assert_eq!(read(&file, ReadOptions::default()).unwrap().digest, first);
    scratch.write(
        "state.yaml",
        "apiVersion: v1\nkind: Node\nmetadata: {name: b}\n",
    );
    assert_ne!(read(&file, ReadOptions::default()).unwrap().digest, first);
}

#[test]
fn a_configmap_volume_is_read_through_its_links() {
    use std::os::unix::fs::symlink;
    let scratch = Scratch::new();
    let version = |name: &str, node: &str| {
        let dir = scratch.path().join(name);
        fs::create_dir(&dir).unwrap();
        let text = format!("apiVersion: v1\nkind: Node\nmetadata: {{name: {node}}}\n");
        fs::write(dir.join("cluster.yaml"), text).unwrap();
    };
    version("..2026_11_30_1", "a");
    symlink("..2026_11_30_1", scratch.path().join("..data")).unwrap();
    symlink("..data/cluster.yaml", scratch.path().join("cluster.yaml")).unwrap();
    let file = scratch.path().join("cluster.yaml");
    assert_eq!(node_names(&load(&file).unwrap()), ["a"]);
    assert_eq!(node_names(&load(scratch.path()).unwrap()), ["a"]);
    // The kubelet's swap: a new directory, a new link renamed over `..data`.
    version("..2026_11_30_2", "b");
    symlink("..2026_11_30_2", scratch.path().join("..data_tmp")).unwrap();
    fs::rename(
        scratch.path().join("..data_tmp"),
        scratch.path().join("..data"),
    )
    .unwrap();
    assert_eq!(node_names(&load(&file).unwrap()), ["b"]);
    assert_eq!(node_names(&load(scratch.path()).unwrap()), ["b"]);
}

#[test]
fn multi_document_files_and_lists() {
    let state = load_text(
        "---
# an empty document, then comments only
---
apiVersion: v1
kind: Node
metadata: {name: a}
---
apiVersion: v1
kind: List
items:
  - apiVersion: v1
    kind: Node
    metadata: {name: b}
  - apiVersion: metallb.io/v1beta1
    kind: IPAddressPool
    metadata: {name: broken, namespace: metallb-system}
    spec: {addresses: [nope]}
---
# What the API server returns: the items carry no apiVersion/kind.
apiVersion: v1
kind: NodeList
items:
  - metadata: {name: c}
---
apiVersion: v1
kind: List
items: []
...
",
    );
    assert_eq!(node_names(&state), ["a", "b", "c"]);
    assert!(state.pools.is_empty());
    assert_eq!(state.problems.len(), 1);
    let problem = &state.problems[0];
    // The first `---` opens document 1, which holds only a comment.
    assert_eq!(
        (problem.document, problem.item),
        (Some(3), Some(2)),
        "{problem}"
    );
    assert_eq!(problem.object(), "IPAddressPool metallb-system/broken");
}

#[test]
fn a_missing_path_is_an_error_naming_it() {
    let scratch = Scratch::new();
    let missing = scratch.path().join("nowhere.yaml");
    let err = load(&missing).unwrap_err();
    assert!(matches!(err, ClusterError::Read { .. }), "{err:?}");
    let message = err.to_string();
    assert!(message.contains("nowhere.yaml"), "{message}");
}

#[test]
fn a_file_that_is_not_text_is_an_error_naming_it() {
    let scratch = Scratch::new();
    let file = scratch.path().join("binary.yaml");
    fs::write(&file, [0xff, 0xfe, 0x00, 0x80]).unwrap();
    let err = load(scratch.path()).unwrap_err();
    assert!(matches!(err, ClusterError::Read { .. }), "{err:?}");
    assert!(err.to_string().contains("binary.yaml"), "{err}");
}

#[test]
fn invalid_yaml_names_the_file_and_the_document() {
    let (err, message) = load_error(
        "apiVersion: v1\nkind: Node\nmetadata: {name: a}\n---\n\
         apiVersion: v1\nkind: Node\nmetadata: {name: b\n",
    );
    let ClusterError::Yaml { origin, .. } = &err else {
        panic!("{err:?}");
    };
    assert_eq!(origin.document, 2);
    assert!(
        message.contains("state.yaml, document 2: invalid YAML"),
        "{message}"
    );
    // serde_yaml_ng adds where in the file.
    assert!(message.contains("line"), "{message}");

    let (_, message) = load_error("a: 1\na: 2\n");
    assert!(message.contains("document 1: invalid YAML"), "{message}");
    assert!(message.contains("duplicate"), "{message}");
}

#[test]
fn objects_with_wrongly_typed_fields_are_errors_naming_the_object() {
    let (err, message) = load_error(&format!(
        "{POOL}---
apiVersion: v1
kind: Service
metadata: {{name: web, namespace: shop}}
spec:
  type: LoadBalancer
  ports: eighty
"
    ));
    assert!(matches!(err, ClusterError::Object { .. }), "{err:?}");
    assert!(
        message.contains("state.yaml, document 2: Service shop/web: invalid type"),
        "{message}"
    );

    let (_, message) = load_error(
        "apiVersion: metallb.io/v1beta1\nkind: IPAddressPool\n\
         metadata: {name: lab}\nspec: {addresses: 192.0.2.0/24}\n",
    );
    assert!(
        message.contains("document 1: IPAddressPool lab: invalid type"),
        "{message}"
    );
}

#[test]
fn documents_that_are_not_objects_are_errors() {
    let (_, message) = load_error("- a\n- b\n");
    assert!(message.contains("document 1: object (unnamed): not a Kubernetes object"));
    let (_, message) = load_error("apiVersion: v1\nmetadata: {name: a}\n");
    assert!(
        message.contains("object a: kind is missing or not a string"),
        "{message}"
    );
    let (_, message) = load_error("kind: Node\nmetadata: {name: a}\n");
    assert!(
        message.contains("Node a: apiVersion is missing"),
        "{message}"
    );
    let (_, message) = load_error("apiVersion: v1\nkind: List\nitems: {a: 1}\n");
    assert!(message.contains("List: items must be a list"), "{message}");
}

#[test]
fn an_invalid_pool_is_skipped_and_everything_else_works() {
    let state = load_text(&format!(
        "{POOL}---
apiVersion: metallb.io/v1beta1
kind: IPAddressPool
metadata: {{name: bad, namespace: metallb-system}}
spec:
  addresses: [192.0.2.0/33]
---
apiVersion: metallb.io/v1beta1
kind: IPAddressPool
metadata: {{name: empty, namespace: metallb-system}}
"
    ));
    assert_eq!(state.pools.len(), 1);
    assert_eq!(state.pools[0].name, "lab");
    assert_eq!(state.problems.len(), 2, "{:?}", state.problems);
    let bad = &state.problems[0];
    assert_eq!(bad.document, Some(2));
    assert_eq!(bad.kind, "IPAddressPool");
    assert_eq!(bad.namespace.as_deref(), Some("metallb-system"));
    assert_eq!(bad.name.as_deref(), Some("bad"));
    assert_eq!(
        bad.reason,
        "pool \"bad\": invalid CIDR \"192.0.2.0/33\": prefix length 33 is longer than 32"
    );
    assert!(
        bad.to_string().ends_with(
            "state.yaml, document 2: IPAddressPool metallb-system/bad: pool \"bad\": invalid \
             CIDR \"192.0.2.0/33\": prefix length 33 is longer than 32"
        ),
        "{bad}"
    );
    assert_eq!(state.problems[1].name.as_deref(), Some("empty"));
    assert!(state.problems[1].reason.contains("has no addresses"));
}

#[test]
fn other_kinds_are_ignored_but_other_versions_of_ours_are_problems() {
    let state = load_text(
        "apiVersion: v1
kind: ConfigMap
metadata: {name: config}
data: {a: b}
---
# Knative's Service shares the name, not the group.
apiVersion: serving.knative.dev/v1
kind: Service
metadata: {name: hello}
---
apiVersion: metallb.io/v1beta2
kind: BGPPeer
metadata: {name: peer, namespace: metallb-system}
---
apiVersion: metallb.io/v1alpha1
kind: IPAddressPool
metadata: {name: old, namespace: metallb-system}
spec: {addresses: [192.0.2.0/24]}
",
    );
    assert!(state.services.is_empty() && state.pools.is_empty());
    assert_eq!(state.problems.len(), 1, "{:?}", state.problems);
    assert_eq!(state.problems[0].document, Some(4));
    assert_eq!(
        state.problems[0].reason,
        "apiVersion metallb.io/v1alpha1 is not supported, use metallb.io/v1beta1"
    );
}

#[test]
fn services_load_balancer_only_and_unusable_ones_are_problems() {
    let state = load_text(
        "apiVersion: v1
kind: Service
metadata: {name: internal}
spec: {type: ClusterIP}
---
apiVersion: v1
kind: Service
metadata: {namespace: shop}
spec: {type: LoadBalancer}
---
apiVersion: v1
kind: Service
metadata: {name: pending, labels: {app: x}, annotations: {metallb.io/address-pool: lab}}
spec: {type: LoadBalancer, loadBalancerClass: example.com/lb}
---
apiVersion: v1
kind: Service
metadata: {name: cloud, namespace: shop}
spec: {type: LoadBalancer, externalTrafficPolicy: local}
status:
  loadBalancer:
    ingress:
      - hostname: lb.example.com
      - ip: 2001:db8::1
      - ip: 192.0.2.1
---
apiVersion: v1
kind: Service
metadata: {name: typo, namespace: shop}
spec: {type: LoadBalancer}
status: {loadBalancer: {ingress: [{ip: 192.0.2.300}]}}
",
    );
    let keys: Vec<String> = state.services.iter().map(|s| s.service.key()).collect();
    assert_eq!(keys, ["default/pending", "shop/cloud"]);

    let pending = &state.services[0].service;
    assert!(pending.ingress_ips.is_empty());
    assert_eq!(pending.lb_class.as_deref(), Some("example.com/lb"));
    assert_eq!(pending.labels["app"], "x");
    assert_eq!(pending.annotations["metallb.io/address-pool"], "lab");

    let cloud = &state.services[1].service;
    assert_eq!(cloud.ingress_ips, [ip("2001:db8::1"), ip("192.0.2.1")]);
    // Only exactly "Local" is Local, as in MetalLB.
    assert_eq!(
        cloud.external_traffic_policy,
        ExternalTrafficPolicy::Cluster
    );

    let reasons: Vec<(String, &str)> = state
        .problems
        .iter()
        .map(|p| (p.object(), p.reason.as_str()))
        .collect();
    assert_eq!(
        reasons,
        [
            (
                "Service shop/(unnamed)".to_owned(),
                "metadata.name is missing"
            ),
            (
                "Service shop/typo".to_owned(),
                "status.loadBalancer.ingress[0].ip \"192.0.2.300\" is not an IP address"
            ),
        ]
    );
}

#[test]
fn endpoint_slices_join_their_service_across_slices() {
    let state = load_text(
        "apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec: {type: LoadBalancer}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: web-1, namespace: shop, labels: {kubernetes.io/service-name: web}}
addressType: IPv4
endpoints:
  - addresses: [10.0.0.1]
    nodeName: n1
    conditions: {ready: false, serving: true, terminating: true}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: web-2, namespace: shop, labels: {kubernetes.io/service-name: web}}
addressType: IPv6
endpoints:
  - addresses: [fd00::1]
---
# Same Service name, other namespace: not web's.
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: web-3, labels: {kubernetes.io/service-name: web}}
addressType: IPv4
endpoints:
  - addresses: [10.0.0.3]
    nodeName: n3
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: orphan, namespace: shop}
addressType: IPv4
endpoints: []
",
    );
    let endpoints = &state.services[0].endpoints;
    assert_eq!(endpoints.len(), 2);
    assert_eq!(endpoints[0].node_name.as_deref(), Some("n1"));
    assert_eq!(
        (
            endpoints[0].ready,
            endpoints[0].serving,
            endpoints[0].terminating
        ),
        (Some(false), Some(true), Some(true))
    );
    assert_eq!(endpoints[1].node_name, None);
    assert_eq!(endpoints[1].ready, None);
    assert_eq!(state.problems.len(), 1);
    assert_eq!(state.problems[0].object(), "EndpointSlice shop/orphan");
    assert_eq!(
        state.problems[0].reason,
        "label kubernetes.io/service-name is missing"
    );
}

#[test]
fn advertisements_convert_selectors_and_refuse_invalid_ones() {
    let state = load_text(
        "apiVersion: metallb.io/v1beta1
kind: L2Advertisement
metadata: {name: zoned, namespace: metallb-system}
spec:
  ipAddressPools: [lab]
  ipAddressPoolSelectors:
    - matchLabels: {tier: front}
  nodeSelectors:
    - matchLabels: {zone: a}
      matchExpressions:
        - {key: role, operator: NotIn, values: [storage]}
  interfaces: [eth1]
  serviceSelectors:
    - matchExpressions:
        - {key: expose, operator: Exists}
  unknownField: ignored
---
apiVersion: metallb.io/v1beta1
kind: L2Advertisement
metadata: {name: typo, namespace: metallb-system}
spec:
  nodeSelectors:
    - matchExpressions:
        - {key: zone, operator: in, values: [a]}
---
apiVersion: metallb.io/v1beta1
kind: L2Advertisement
metadata: {name: empty-in, namespace: metallb-system}
spec:
  serviceSelectors:
    - matchExpressions:
        - {key: zone, operator: In}
",
    );
    assert_eq!(state.advertisements.len(), 1);
    let ad = &state.advertisements[0];
    assert_eq!(ad.ip_address_pools, ["lab"]);
    assert_eq!(
        ad.ip_address_pool_selectors,
        [LabelSelector::with_labels(&[("tier", "front")])]
    );
    assert_eq!(ad.node_selectors.len(), 1);
    assert_eq!(ad.node_selectors[0].match_labels["zone"], "a");
    let requirement = &ad.node_selectors[0].match_expressions[0];
    assert_eq!(requirement.operator, SelectorOperator::NotIn);
    assert_eq!(requirement.values, ["storage"]);
    assert_eq!(ad.interfaces, ["eth1"]);
    assert_eq!(
        ad.service_selectors[0].match_expressions[0].operator,
        SelectorOperator::Exists
    );

    let reasons: Vec<&str> = state.problems.iter().map(|p| p.reason.as_str()).collect();
    assert_eq!(
        reasons,
        [
            "spec.nodeSelectors[0]: unknown label selector operator \"in\": use In, NotIn, \
             Exists or DoesNotExist",
            "spec.serviceSelectors[0]: label selector requirement on \"zone\": In needs at \
             least one value",
        ]
    );
}

#[test]
fn missing_namespaces_default_like_kubectl_and_pools_follow_the_metallb_namespace() {
    let state = load_text(
        "apiVersion: metallb.io/v1beta1
kind: IPAddressPool
metadata: {name: lab}
spec: {addresses: [192.0.2.0/24]}
---
apiVersion: metallb.io/v1beta1
kind: L2Advertisement
metadata: {name: lab}
---
apiVersion: metallb.io/v1beta1
kind: IPAddressPool
metadata: {name: elsewhere, namespace: other}
spec: {addresses: [198.51.100.0/24]}
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec: {type: LoadBalancer}
---
apiVersion: v1
kind: Node
metadata: {name: n1, namespace: ignored-for-nodes}
",
    );
    assert_eq!(state.services[0].service.namespace, "default");
    assert_eq!(state.pools[0].namespace, "");
    assert_eq!(state.advertisements[0].namespace, "");

    let options = ElectionOptions {
        metallb_namespace: "lb".to_owned(),
        ..ElectionOptions::default()
    };
    let view = state.view(options);
    let pools: Vec<(&str, &str)> = view
        .pools()
        .iter()
        .map(|p| (p.name.as_str(), p.namespace.as_str()))
        .collect();
    assert_eq!(pools, [("lab", "lb")]);
    assert_eq!(view.advertisements_for_pool("lab").count(), 1);
    assert_eq!(view.nodes()[0].name, "n1");
}

mod never_panics {
    use proptest::prelude::*;

    use super::super::{file, Loader};
    use super::*;

    // Fields that make up plausible and implausible objects, so that the
    // generated files reach the conversions and not only the YAML parser.
    const TYPES: &[&str] = &[
        "apiVersion: v1\nkind: Node",
        "apiVersion: v1\nkind: Service",
        "apiVersion: v1\nkind: List",
        "apiVersion: v1\nkind: NodeList",
        "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice",
        "apiVersion: metallb.io/v1beta1\nkind: IPAddressPool",
        "apiVersion: metallb.io/v1beta1\nkind: L2Advertisement",
        "apiVersion: metallb.io/v1beta2\nkind: IPAddressPool",
        "apiVersion: v1\nkind: ConfigMap",
    ];
    const METADATA: &[&str] = &[
        "metadata: {name: a, namespace: metallb-system}",
        "metadata: {name: b, labels: {kubernetes.io/service-name: a, zone: x}}",
        "metadata: {name: ''}",
        "metadata: {namespace: default}",
    ];
    const SPECS: &[&str] = &[
        "spec: {type: LoadBalancer, externalTrafficPolicy: Local}",
        "spec: {type: LoadBalancer}",
        "spec: {addresses: [192.0.2.0/24, '2001:db8::/64']}",
        "spec: {addresses: ['192.0.2.9-192.0.2.1', '::/129', '-']}",
        "spec: {nodeSelectors: [{matchExpressions: [{key: k, operator: In}]}]}",
        "spec: {nodeSelectors: [{matchLabels: {zone: x}}], interfaces: [eth0]}",
        "spec: {serviceSelectors: [{}], ipAddressPoolSelectors: [{matchLabels: {a: b}}]}",
    ];
    const STATUSES: &[&str] = &[
        "status: {loadBalancer: {ingress: [{ip: 192.0.2.1}, {hostname: h}]}}",
        "status: {loadBalancer: {ingress: [{ip: 'x'}]}}",
        "status: {conditions: [{type: Ready, status: 'True'}]}",
        "status: {conditions: [{type: NetworkUnavailable, status: 'True'}]}",
    ];
    const EXTRAS: &[&str] = &[
        "endpoints: [{addresses: [a], nodeName: a, conditions: {ready: true}}]",
        "endpoints: [{addresses: [a], nodeName: b, conditions: {ready: false}}]",
        "items: [{metadata: {name: x}}, {apiVersion: v1, kind: Node, metadata: {name: y}}]",
        "items: [null, 4]",
        "x: &a [1]\ny: *a",
    ];

    fn document() -> impl Strategy<Value = String> {
        use prop::option::of;
        use prop::sample::select;
        (
            select(TYPES),
            of(select(METADATA)),
            of(select(SPECS)),
            of(select(STATUSES)),
            of(select(EXTRAS)),
        )
            .prop_map(|(t, m, s, st, e)| {
                let fields: Vec<&str> = [Some(t), m, s, st, e].into_iter().flatten().collect();
                fields.join("\n")
            })
    }

    fn load_str(text: &str) -> Result<ClusterState, ClusterError> {
        let mut loader = Loader::default();
        file::for_each_object(Path::new("generated.yaml"), text, &mut |object| {
            loader.add(object.origin, object.value)
        })?;
        Ok(loader.finish())
    }

    proptest! {
        #[test]
        fn loading_any_text_returns_a_state_or_an_error(
            documents in prop::collection::vec(document(), 0..8),
        ) {
            let text = documents.join("\n---\n");
            match load_str(&text) {
                Ok(state) => {
                    let report = crate::cluster::dry_run(
                        &state,
                        ElectionOptions::default(),
                        &crate::election::Membership::Disabled,
                    );
                    prop_assert_eq!(report.services.len(), state.services.len());
                    let _ = report.to_table();
                }
                Err(err) => prop_assert!(!err.to_string().is_empty()),
            }
        }

        #[test]
        fn arbitrary_text_never_panics(text in "\\PC{0,200}") {
            let _ = load_str(&text);
        }
    }
}
