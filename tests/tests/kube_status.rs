//! The status writer against the kube emulator: MetalLB's Events on the
//! Service and its `ServiceL2Status` objects, and no stop on API errors.

use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use serde_json::{json, Value};
use speaker::{
    daemon::change::ServiceKey,
    kube::status::{StatusWriter, LABEL_NODE, LABEL_SERVICE_NAME, LABEL_SERVICE_NAMESPACE},
};
use speaker_tests::kube_emulator::KubeEmulator;

const METALLB: &str = "metallb.io/v1beta1";
const NAMESPACE: &str = "metallb-system";
const EVENTS: &str = "events.k8s.io/v1";

fn iris() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/examples/iris-regression.yaml")
}

fn web() -> ServiceKey {
    ServiceKey::new("default", "web")
}

fn writer(emulator: &KubeEmulator, node: &str) -> StatusWriter {
    StatusWriter::new(emulator.client(), node.to_owned(), NAMESPACE.to_owned())
}

fn statuses(emulator: &KubeEmulator) -> Vec<Value> {
    emulator.list(METALLB, "ServiceL2Status", Some(NAMESPACE))
}

fn events(emulator: &KubeEmulator, reason: &str) -> Vec<Value> {
    let mut events = emulator.list(EVENTS, "Event", Some("default"));
    events.retain(|e| e["reason"] == reason);
    events
}

fn status_for(node: &str, interfaces: &[&str]) -> Value {
    let mut status = json!({
        "node": node,
        "serviceName": "web",
        "serviceNamespace": "default",
    });
    if !interfaces.is_empty() {
        status["interfaces"] = interfaces.iter().map(|i| json!({ "name": i })).collect();
    }
    status
}

fn labels_for(node: &str) -> Value {
    json!({
        LABEL_NODE: node,
        LABEL_SERVICE_NAME: "web",
        LABEL_SERVICE_NAMESPACE: "default",
    })
}

#[tokio::test]
async fn announcing_records_the_event_and_one_service_l2_status() {
    let emulator = KubeEmulator::start(&[&iris()]);
    let service = emulator
        .get("v1", "Service", Some("default"), "web")
        .expect("web is preloaded");
    let status = writer(&emulator, "iris1");

    status.announcing(&web(), &["eth0".to_owned()]).await;
    status.flush().await;

    let assigned = events(&emulator, "nodeAssigned");
    let [event] = assigned.as_slice() else {
        panic!("expected one nodeAssigned event: {assigned:#?}");
    };
    assert_eq!(event["type"], "Normal");
    assert_eq!(
        event["note"],
        r#"announcing from node "iris1" with protocol "layer2""#
    );
    let regarding = &event["regarding"];
    assert_eq!(regarding["kind"], "Service");
    assert_eq!(regarding["apiVersion"], "v1");
    assert_eq!(regarding["namespace"], "default");
    assert_eq!(regarding["name"], "web");
    assert_eq!(regarding["uid"], service["metadata"]["uid"]);
    assert_eq!(event["reportingController"], "metallb-speaker");
    assert_eq!(event["reportingInstance"], "iris1");

    let objects = statuses(&emulator);
    let [object] = objects.as_slice() else {
        panic!("expected one ServiceL2Status: {objects:#?}");
    };
    let name = object["metadata"]["name"].as_str().unwrap();
    assert!(
        name.starts_with("l2-"),
        "named from generateName l2-: {name}"
    );
    assert_eq!(object["metadata"]["namespace"], NAMESPACE);
    assert_eq!(object["metadata"]["labels"], labels_for("iris1"));
    assert_eq!(object["status"], status_for("iris1", &["eth0"]));
}

#[tokio::test]
async fn announcing_again_updates_and_withdrawing_deletes() {
    let emulator = KubeEmulator::start(&[&iris()]);
    let iris1 = writer(&emulator, "iris1");
    let iris2 = writer(&emulator, "iris2");

    iris1.announcing(&web(), &["eth0".to_owned()]).await;
    iris1.flush().await;
    let first = statuses(&emulator);
    assert_eq!(first.len(), 1, "{first:#?}");
    let name = first[0]["metadata"]["name"].clone();

    // Interfaces changed: the same object, updated.
    iris1
        .announcing(&web(), &["eth1".to_owned(), "eth0".to_owned()])
        .await;
    iris1.flush().await;
    let second = statuses(&emulator);
    assert_eq!(second.len(), 1, "updated, not duplicated: {second:#?}");
    assert_eq!(second[0]["metadata"]["name"], name);
    assert_eq!(second[0]["status"], status_for("iris1", &["eth0", "eth1"]));

    // All interfaces: the list goes away, as in MetalLB.
    iris1.announcing(&web(), &[]).await;
    iris1.flush().await;
    let third = statuses(&emulator);
    assert_eq!(third.len(), 1, "{third:#?}");
    assert_eq!(third[0]["status"], status_for("iris1", &[]));

    // A node that does not own it deletes only its own (it has none).
    iris2.withdrawn(&web(), "notOwner").await;
    iris2.flush().await;
    assert_eq!(statuses(&emulator).len(), 1);

    // The owner withdrawing deletes its status, and records no event.
    let events_before = emulator.list(EVENTS, "Event", Some("default")).len();
    iris1.withdrawn(&web(), "notOwner").await;
    iris1.flush().await;
    assert!(statuses(&emulator).is_empty());
    let events_after = emulator.list(EVENTS, "Event", Some("default")).len();
    assert_eq!(events_before, events_after, "withdrawing records no event");

    // Withdrawing again is harmless.
    iris1.withdrawn(&web(), "notOwner").await;
    iris1.flush().await;
    assert!(statuses(&emulator).is_empty());
}

#[tokio::test]
async fn the_new_owner_removes_the_previous_owners_status() {
    let emulator = KubeEmulator::start(&[&iris()]);
    let iris1 = writer(&emulator, "iris1");
    let iris2 = writer(&emulator, "iris2");

    // iris1 announced, then died without withdrawing; iris2 takes over.
    iris1.announcing(&web(), &[]).await;
    iris1.flush().await;
    iris2.announcing(&web(), &[]).await;
    iris2.flush().await;

    let objects = statuses(&emulator);
    let [object] = objects.as_slice() else {
        panic!("expected only iris2's status: {objects:#?}");
    };
    assert_eq!(object["metadata"]["labels"], labels_for("iris2"));
    assert_eq!(object["status"], status_for("iris2", &[]));
}

#[tokio::test]
async fn announce_failed_records_a_warning() {
    let emulator = KubeEmulator::start(&[&iris()]);
    let status = writer(&emulator, "iris1");
    let message = "none of the interfaces eth9 exists on this node";

    status.announce_failed(&web(), message).await;
    status.flush().await;

    let failed = events(&emulator, "announceFailed");
    let [event] = failed.as_slice() else {
        panic!("expected one announceFailed event: {failed:#?}");
    };
    assert_eq!(event["type"], "Warning");
    assert_eq!(event["note"], message);
    assert_eq!(event["regarding"]["kind"], "Service");
    assert_eq!(event["regarding"]["name"], "web");
    assert!(
        statuses(&emulator).is_empty(),
        "a failed announcement writes no ServiceL2Status"
    );
}

#[tokio::test]
async fn api_errors_are_logged_not_returned() {
    let emulator = KubeEmulator::start(&[&iris()]);
    let status = writer(&emulator, "iris1");
    drop(emulator); // nothing listens any more

    let started = Instant::now();
    status.announcing(&web(), &[]).await;
    status.announce_failed(&web(), "no interface").await;
    status.withdrawn(&web(), "notOwner").await;
    tokio::time::timeout(Duration::from_secs(60), status.flush())
        .await
        .expect("the writer keeps going after API errors");
    assert!(started.elapsed() < Duration::from_secs(60));
}
