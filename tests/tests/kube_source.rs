//! The Kubernetes source against the kube emulator: one Reset after the
//! first complete list, then only real differences, including across
//! watch expiry (410 Gone) and with unusable objects in the cluster.

use std::{
    net::IpAddr,
    path::{Path, PathBuf},
    sync::atomic::{AtomicU32, Ordering},
    time::Duration,
};

use serde_json::{json, Value};
use speaker::{
    cluster::{self, Change, Problem, ServiceKey},
    election::{Endpoint, Node, Service},
    kube::{KubeSource, SkippedObjects},
};
use speaker_tests::kube_emulator::{KubeEmulator, Part};
use tokio::{sync::mpsc, task::JoinHandle};

const METALLB: &str = "metallb.io/v1beta1";
const NAMESPACE: &str = "metallb-system";
/// Long enough for any change to travel through the emulator.
const WAIT: Duration = Duration::from_secs(20);
/// How long "nothing else" is watched for.
const QUIET: Duration = Duration::from_millis(1500);
/// Longer than the watcher's first retry after an error.
const RELIST_QUIET: Duration = Duration::from_secs(4);

fn iris() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/examples/iris-regression.yaml")
}

/// A YAML file for `--load`, removed on drop.
struct TempYaml(PathBuf);

impl TempYaml {
    fn new(text: &str) -> Self {
        static SEQ: AtomicU32 = AtomicU32::new(0);
        let path = std::env::temp_dir().join(format!(
            "kube-source-{}-{}.yaml",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::write(&path, text).unwrap();
        TempYaml(path)
    }
}

impl Drop for TempYaml {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

struct Running {
    emulator: KubeEmulator,
    changes: mpsc::Receiver<Change>,
    skipped: SkippedObjects,
    source: JoinHandle<()>,
}

impl Running {
    async fn start(load: &[&Path]) -> Running {
        let emulator = KubeEmulator::start(load);
        let source = KubeSource::new(emulator.client(), NAMESPACE);
        let skipped = source.skipped();
        let (tx, changes) = mpsc::channel(64);
        let source = tokio::spawn(async move {
            if let Err(e) = source.run(tx).await {
                panic!("source stopped: {e}");
            }
        });
        Running {
            emulator,
            changes,
            skipped,
            source,
        }
    }

    async fn next(&mut self) -> Change {
        match tokio::time::timeout(WAIT, self.changes.recv()).await {
            Ok(Some(change)) => change,
            Ok(None) => panic!("the source stopped: {:?}", self.source),
            Err(_) => panic!(
                "no change within {WAIT:?}; last requests:\n{}",
                self.emulator.request_log()
            ),
        }
    }

    /// The next change, which must be a Service applied.
    async fn applied(&mut self) -> Service {
        match self.next().await {
            Change::ServiceApplied(service) => service,
            other => panic!("expected a Service applied, got {other:?}"),
        }
    }

    async fn reset(&mut self) -> cluster::ClusterState {
        match self.next().await {
            Change::Reset(state) => state,
            other => panic!("expected a Reset first, got {other:?}"),
        }
    }

    /// Fails if anything arrives within [`QUIET`].
    async fn assert_quiet(&mut self) {
        self.assert_quiet_for(QUIET).await;
    }

    async fn assert_quiet_for(&mut self, quiet: Duration) {
        if let Ok(change) = tokio::time::timeout(quiet, self.changes.recv()).await {
            panic!("expected nothing, got {change:?}");
        }
    }

    /// The next changes, `n` of them, in whatever order the watches of
    /// different kinds delivered them.
    async fn next_n(&mut self, n: usize) -> Vec<Change> {
        let mut changes = Vec::new();
        for _ in 0..n {
            changes.push(self.next().await);
        }
        changes
    }

    async fn skipped_soon(&self, wanted: impl Fn(&[Problem]) -> bool) -> Vec<Problem> {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let problems = self.skipped.list();
            if wanted(&problems) {
                return problems;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "skipped objects never became as expected: {problems:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

/// What MetalLB's controller does when it (re)allocates.
fn set_ingress(emulator: &KubeEmulator, service: &str, ip: &str) {
    let status = json!({"status": {"loadBalancer": {"ingress": [{"ip": ip}]}}});
    emulator.patch(
        Part::Status,
        "v1",
        "Service",
        Some("default"),
        service,
        status,
    );
}

fn label_node(emulator: &KubeEmulator, node: &str, zone: &str) {
    let labels = json!({"metadata": {"labels": {"zone": zone}}});
    emulator.patch(Part::Object, "v1", "Node", None, node, labels);
}

/// Replaces the endpoints of web's slice with ready ones at (address, node).
fn set_web_endpoints(emulator: &KubeEmulator, endpoints: &[(&str, &str)]) {
    let endpoints: Vec<Value> = endpoints
        .iter()
        .map(|(address, node)| {
            json!({"addresses": [address], "nodeName": node, "conditions": {"ready": true}})
        })
        .collect();
    emulator.patch(
        Part::Object,
        "discovery.k8s.io/v1",
        "EndpointSlice",
        Some("default"),
        "web-abcde",
        json!({ "endpoints": endpoints }),
    );
}

fn lb_service(name: &str, ip: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": "default", "labels": {"app": name}},
        "spec": {"type": "LoadBalancer", "ports": [{"port": 80}]},
        "status": {"loadBalancer": {"ingress": [{"ip": ip}]}},
    })
}

fn pool(name: &str, addresses: &[&str]) -> Value {
    json!({
        "apiVersion": METALLB,
        "kind": "IPAddressPool",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {"addresses": addresses},
    })
}

fn ready_on(node: &str) -> Endpoint {
    Endpoint {
        node_name: Some(node.to_owned()),
        ready: Some(true),
        ..Endpoint::default()
    }
}

fn names<T>(items: &[T], name: impl Fn(&T) -> &str) -> Vec<String> {
    items.iter().map(|item| name(item).to_owned()).collect()
}

fn web() -> ServiceKey {
    ServiceKey::new("default", "web")
}

#[tokio::test]
async fn first_message_is_one_reset_of_the_whole_cluster() {
    let mut run = Running::start(&[&iris()]).await;
    let reset = run.reset().await;

    // The same cluster read from the file gives the same state.
    let from_file = cluster::load(&iris()).unwrap();
    assert_eq!(reset, from_file);
    assert_eq!(names(&reset.nodes, |n| &n.name), ["iris1", "iris2"]);
    assert!(reset.nodes.iter().all(Node::ready));
    let [web] = reset.services.as_slice() else {
        panic!("expected only web: {:?}", reset.services);
    };
    assert_eq!(web.service.key(), "default/web");
    assert_eq!(web.service.ingress_ips, [ip("192.0.2.100")]);
    assert_eq!(web.endpoints, [ready_on("iris1")]);
    assert_eq!(names(&reset.pools, |p| &p.name), ["lab"]);
    assert_eq!(reset.pools[0].namespace, NAMESPACE);
    assert_eq!(names(&reset.advertisements, |a| &a.name), ["lab"]);
    assert!(reset.problems.is_empty(), "{:?}", reset.problems);

    run.assert_quiet().await;
}

#[tokio::test]
async fn changes_arrive_one_by_one_and_only_when_the_model_changes() {
    let mut run = Running::start(&[&iris()]).await;
    let _ = run.reset().await;

    run.emulator.create(lb_service("api", "192.0.2.101"));
    let api = run.applied().await;
    assert_eq!(api.key(), "default/api");
    assert_eq!(api.ingress_ips, [ip("192.0.2.101")]);

    set_ingress(&run.emulator, "api", "192.0.2.102");
    assert_eq!(run.applied().await.ingress_ips, [ip("192.0.2.102")]);

    // Fields the election does not read: nothing.
    run.emulator.patch(
        Part::Object,
        "v1",
        "Service",
        Some("default"),
        "api",
        json!({"spec": {"ports": [{"port": 8080}]}}),
    );

    set_web_endpoints(&run.emulator, &[("10.244.2.7", "iris2")]);
    match run.next().await {
        Change::Endpoints(key, endpoints) => {
            assert_eq!(key, web());
            assert_eq!(endpoints, [ready_on("iris2")]);
        }
        other => panic!("expected web's endpoints, got {other:?}"),
    }

    run.emulator.delete("v1", "Service", Some("default"), "web");
    match run.next().await {
        Change::ServiceDeleted(key) => assert_eq!(key, web()),
        other => panic!("expected web deleted, got {other:?}"),
    }

    // A kubelet heartbeat: only the status times change. Then a label on
    // the other node, on the same watch: its Nodes list must come next.
    run.emulator.patch(
        Part::Status,
        "v1",
        "Node",
        None,
        "iris1",
        json!({"status": {
            "conditions": [{
                "type": "Ready",
                "status": "True",
                "lastHeartbeatTime": "2030-01-01T00:00:00Z",
                "reason": "KubeletReady",
            }],
        }}),
    );
    label_node(&run.emulator, "iris2", "b");
    match run.next().await {
        Change::Nodes(nodes) => {
            assert_eq!(names(&nodes, |n| &n.name), ["iris1", "iris2"]);
            assert_eq!(nodes[1].labels.get("zone").map(String::as_str), Some("b"));
        }
        other => panic!("expected the Node list after the label, got {other:?}"),
    }

    run.assert_quiet().await;
}

#[tokio::test]
async fn an_expired_watch_lists_again_without_false_deletions() {
    let mut run = Running::start(&[&iris()]).await;
    let _ = run.reset().await;
    run.emulator.create(lb_service("api", "192.0.2.101"));
    assert!(matches!(run.next().await, Change::ServiceApplied(_)));

    // Every watch fails with 410; the changes below happen while they are
    // down and can only arrive through the lists that follow.
    run.emulator.compact();
    let emulator = &run.emulator;
    label_node(emulator, "iris2", "b");
    set_ingress(emulator, "api", "192.0.2.105");
    set_web_endpoints(
        emulator,
        &[("10.244.1.7", "iris1"), ("10.244.2.7", "iris2")],
    );
    emulator.create(pool("extra", &["198.51.100.0/24"]));
    emulator.patch(
        Part::Object,
        METALLB,
        "L2Advertisement",
        Some(NAMESPACE),
        "lab",
        json!({"spec": {"interfaces": ["eth0"]}}),
    );

    // Exactly one change per kind, in any order across kinds; no deletions.
    let mut changes = run.next_n(5).await;
    changes.sort_by_key(|change| match change {
        Change::Nodes(_) => 0,
        Change::ServiceApplied(_) => 1,
        Change::Endpoints(..) => 2,
        Change::Pools(_) => 3,
        Change::Advertisements(_) => 4,
        other => panic!("unexpected change after the relist: {other:?}"),
    });
    let [Change::Nodes(nodes), Change::ServiceApplied(api), Change::Endpoints(key, endpoints), Change::Pools(pools), Change::Advertisements(ads)] =
        changes.as_slice()
    else {
        panic!("expected one change of each kind: {changes:?}");
    };
    assert_eq!(names(nodes, |n| &n.name), ["iris1", "iris2"]);
    assert_eq!(api.key(), "default/api");
    assert_eq!(api.ingress_ips, [ip("192.0.2.105")]);
    assert_eq!(key, &web());
    assert_eq!(endpoints, &[ready_on("iris1"), ready_on("iris2")]);
    assert_eq!(names(pools, |p| &p.name), ["extra", "lab"]);
    assert_eq!(ads.len(), 1);
    assert_eq!(ads[0].interfaces, ["eth0"]);
    run.assert_quiet().await;

    // A second expiry with nothing changed sends nothing at all (the lists
    // follow within the watcher's first backoff, 0.8 s plus jitter), and the
    // watches still work afterwards.
    run.emulator.compact();
    run.assert_quiet_for(RELIST_QUIET).await;
    run.emulator.delete("v1", "Service", Some("default"), "api");
    match run.next().await {
        Change::ServiceDeleted(key) => assert_eq!(key, ServiceKey::new("default", "api")),
        other => panic!("expected api deleted, got {other:?}"),
    }
    run.assert_quiet().await;
}

#[tokio::test]
async fn unusable_objects_are_skipped_and_the_rest_keeps_flowing() {
    let preloaded = TempYaml::new(
        "apiVersion: metallb.io/v1beta1\n\
         kind: IPAddressPool\n\
         metadata: {name: preloaded-bad, namespace: metallb-system}\n\
         spec: {addresses: [not-an-address]}\n",
    );
    let mut run = Running::start(&[&iris(), &preloaded.0]).await;
    let reset = run.reset().await;
    assert_eq!(names(&reset.pools, |p| &p.name), ["lab"]);
    let objects: Vec<String> = reset.problems.iter().map(Problem::object).collect();
    assert_eq!(objects, ["IPAddressPool metallb-system/preloaded-bad"]);

    // A pool with a bad CIDR created over HTTP: skipped, nothing sent.
    run.emulator.create(pool("broken", &["192.0.2.300/24"]));
    let problems = run.skipped_soon(|p| p.len() == 2).await;
    let broken = problems
        .iter()
        .find(|p| p.name.as_deref() == Some("broken"))
        .expect("the broken pool is reported");
    assert_eq!(broken.kind, "IPAddressPool");
    assert_eq!(broken.namespace.as_deref(), Some(NAMESPACE));
    assert!(
        broken.reason.contains("192.0.2.300/24"),
        "{}",
        broken.reason
    );

    // Everything else keeps working.
    run.emulator.create(lb_service("api", "192.0.2.101"));
    assert!(matches!(run.next().await, Change::ServiceApplied(s) if s.name == "api"));
    run.emulator.create(pool("good", &["198.51.100.0/24"]));
    match run.next().await {
        Change::Pools(pools) => assert_eq!(names(&pools, |p| &p.name), ["good", "lab"]),
        other => panic!("expected the pools, got {other:?}"),
    }

    // Fixed, it joins the pools and leaves the skipped objects.
    run.emulator.patch(
        Part::Object,
        METALLB,
        "IPAddressPool",
        Some(NAMESPACE),
        "broken",
        json!({"spec": {"addresses": ["192.0.2.200/29"]}}),
    );
    match run.next().await {
        Change::Pools(pools) => {
            assert_eq!(names(&pools, |p| &p.name), ["broken", "good", "lab"])
        }
        other => panic!("expected the pools, got {other:?}"),
    }
    run.skipped_soon(|p| p.len() == 1).await;
    run.assert_quiet().await;
}
