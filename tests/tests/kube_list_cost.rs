//! What one `speaker run` start costs the API server, counted in the
//! stand-in's request log, for 1,000 Nodes and 10,000 LoadBalancer Services
//! (each with an EndpointSlice): the bound documented in
//! docs/kubernetes.md. Also checks that every request the speaker made is
//! one `speaker::kube::calls` names (what the chart's RBAC grants).
//!
//! Needs root (the speaker runs in a lab namespace with its XDP program).
//! Run: `cargo test -p speaker-tests --test kube_list_cost -- --nocapture`.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    fs,
    net::Ipv4Addr,
    time::{Duration, Instant},
};

use serde_json::{json, Value};
use speaker::kube::calls::{self, Scope};
use speaker_tests::lab::{
    kube::{KubeLab, METALLB_NAMESPACE},
    require_root, speaker_bin, wait_for,
};

const NODES: usize = 1_000;
const SERVICES: usize = 10_000;
/// The node the lab's speaker runs as.
const NODE: &str = "node-0000";

/// The kinds the speaker watches, by resource (plural).
const WATCHED: [&str; 6] = [
    "nodes",
    "services",
    "endpointslices",
    "ipaddresspools",
    "l2advertisements",
    "servicel2statuses",
];

fn node_name(index: usize) -> String {
    format!("node-{index:04}")
}

fn service_ip(index: usize) -> Ipv4Addr {
    let [_, _, high, low] = (index as u32 + 1).to_be_bytes();
    Ipv4Addr::new(10, 96, high, low)
}

/// The cluster as one multi-document file (JSON documents are YAML).
fn cluster_file() -> String {
    let mut documents: Vec<Value> = Vec::with_capacity(NODES + 2 * SERVICES + 2);
    for index in 0..NODES {
        let third = (index / 250) as u8;
        let fourth = (index % 250) as u8 + 1;
        documents.push(json!({
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": node_name(index)},
            "status": {
                "addresses": [{"type": "InternalIP", "address": format!("172.16.{third}.{fourth}")}],
                "conditions": [{"type": "Ready", "status": "True"}],
            },
        }));
    }
    documents.push(json!({
        "apiVersion": "metallb.io/v1beta1", "kind": "IPAddressPool",
        "metadata": {"name": "cost", "namespace": METALLB_NAMESPACE},
        "spec": {"addresses": ["10.96.0.0/16"]},
    }));
    documents.push(json!({
        "apiVersion": "metallb.io/v1beta1", "kind": "L2Advertisement",
        "metadata": {"name": "cost", "namespace": METALLB_NAMESPACE},
    }));
    for index in 0..SERVICES {
        let name = format!("svc-{index:05}");
        documents.push(json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"type": "LoadBalancer", "ports": [{"port": 80}]},
            "status": {"loadBalancer": {"ingress": [{"ip": service_ip(index).to_string()}]}},
        }));
        documents.push(json!({
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {
                "name": format!("{name}-abcde"), "namespace": "default",
                "labels": {"kubernetes.io/service-name": name},
            },
            "addressType": "IPv4",
            "endpoints": [{
                "addresses": ["10.244.0.7"],
                "nodeName": node_name(index % NODES),
                "conditions": {"ready": true},
            }],
        }));
    }
    let mut text = String::new();
    for document in documents {
        let _ = writeln!(text, "---\n{document}");
    }
    text
}

/// `""` for the core group, else the group of an `/apis/GROUP/...` path.
fn group_of(path: &str) -> &str {
    match path.split('/').nth(1) {
        Some("apis") => path.split('/').nth(2).unwrap_or(""),
        _ => "",
    }
}

#[test]
fn one_start_lists_each_kind_once_from_the_watch_cache() {
    require_root();
    speaker_bin();
    let dir = std::env::temp_dir().join(format!("kube-list-cost-{}", std::process::id()));
    fs::create_dir_all(&dir).unwrap();
    let file = dir.join("cluster.yaml");
    fs::write(&file, cluster_file()).unwrap();
    let mut k = KubeLab::new(std::slice::from_ref(&file));
    let _ = fs::remove_dir_all(&dir);

    let started = Instant::now();
    k.start_speaker(NODE, &[]);
    let listed = k
        .speaker()
        .wait_log("cluster listed", Duration::from_secs(120));
    assert!(
        listed.is_some(),
        "the speaker never listed the cluster\n{}",
        k.diagnostics()
    );
    // The election of 10,000 services takes a while (debug build); then the
    // writes for the Services won, until no new request for two seconds.
    let announced = k
        .speaker()
        .wait_log("serviceAnnounced", Duration::from_secs(300));
    assert!(
        announced.is_some(),
        "{NODE} announced none of {SERVICES} services\n{}",
        k.diagnostics()
    );
    let settled = wait_for(Duration::from_secs(120), || {
        let before = k.kube().standin().requests().len();
        std::thread::sleep(Duration::from_secs(2));
        (k.kube().standin().requests().len() == before).then_some(())
    });
    assert!(
        settled.is_some(),
        "the speaker kept calling\n{}",
        k.diagnostics()
    );
    let requests = k.kube().standin().requests();

    let mut per_call: BTreeMap<(String, String), usize> = BTreeMap::new();
    for request in &requests {
        let resource = if request.subresource.is_empty() {
            request.resource.clone()
        } else {
            format!("{}/{}", request.resource, request.subresource)
        };
        *per_call
            .entry((resource.clone(), request.verb.clone()))
            .or_default() += 1;
        if request.resource.is_empty() {
            continue; // discovery (`/version`...)
        }
        let call = calls::ALL
            .iter()
            .find(|c| c.group == group_of(&request.path) && c.resource == resource);
        let Some(call) = call else {
            panic!(
                "{} {} is not in speaker::kube::calls",
                request.method, request.path
            );
        };
        assert!(
            call.verbs.contains(&request.verb.as_str()),
            "{} {} ({}) is not a verb speaker::kube::calls names for {}",
            request.method,
            request.path,
            request.verb,
            call.resource
        );
        if call.scope == Scope::ConfigNamespace {
            assert_eq!(request.namespace, METALLB_NAMESPACE, "{request:?}");
        }
    }
    let mut report = String::new();
    for ((resource, verb), count) in &per_call {
        let _ = writeln!(report, "  {verb:>6} {resource}: {count}");
    }
    for request in requests.iter().filter(|r| r.verb == "list").take(8) {
        let _ = writeln!(report, "  e.g. GET {}?{}", request.path, request.query);
    }
    eprintln!(
        "one start, {NODES} nodes, {SERVICES} services and slices: {} requests in {:.1} s\n{report}",
        requests.len(),
        started.elapsed().as_secs_f64()
    );

    for resource in WATCHED {
        let lists: Vec<_> = requests
            .iter()
            .filter(|r| r.resource == resource && r.verb == "list")
            .collect();
        assert_eq!(lists.len(), 1, "{resource}: one LIST per start\n{report}");
        assert!(
            lists[0].query.contains("resourceVersion=0"),
            "{resource}: listed from the watch cache: {:?}",
            lists[0].query
        );
        let watches = requests
            .iter()
            .filter(|r| r.resource == resource && r.verb == "watch")
            .count();
        assert_eq!(watches, 1, "{resource}: one WATCH per start\n{report}");
    }
    // Writes only for what this node announces: per Service won, one
    // ServiceL2Status create and status patch, one Service get and one Event.
    let won = k
        .kube()
        .list(
            "metallb.io/v1beta1",
            "ServiceL2Status",
            Some(METALLB_NAMESPACE),
        )
        .len();
    assert!(
        won > 0,
        "{NODE} should win some of {SERVICES} services\n{report}\n{}",
        k.diagnostics()
    );
    let reads = 2 * WATCHED.len();
    let writes = 4 * won;
    assert!(
        requests.len() <= reads + writes,
        "{} requests > {reads} list/watch + 4 × {won} services won\n{report}",
        requests.len()
    );
}
