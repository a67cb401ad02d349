//! The status reconciler and event recorder (`speaker::kube::status`)
//! against the stand-in API server: MetalLB's `ServiceL2Status` objects and
//! Events, kept up to date whatever happens to them on the server.
//! `run_kube_status_lab` checks the same through the real `speaker run`.

use std::{
    future::Future,
    path::{Path, PathBuf},
    time::Duration,
};

use serde_json::{json, Value};
use speaker::{
    cluster::ServiceKey,
    kube::status::{
        AnnouncedServices, SpeakerPod, StatusConfig, StatusReconciler, StatusWriter, LABEL_NODE,
        LABEL_SERVICE_NAME, LABEL_SERVICE_NAMESPACE,
    },
};
use speaker_tests::kube_emulator::KubeEmulator;

const METALLB: &str = "metallb.io/v1beta1";
const NAMESPACE: &str = "metallb-system";
const EVENTS: &str = "events.k8s.io/v1";
const POD_UID: &str = "0d3c9a1e-5b1f-4c59-9d6e-2f1b8a7c6e10";
/// Limit for anything the reconciler does in reaction.
const REACT: Duration = Duration::from_secs(10);

fn iris() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/examples/iris-regression.yaml")
}

fn web() -> ServiceKey {
    ServiceKey::new("default", "web")
}

/// A writer with its reconciler running, as the daemon's supervisor runs it.
fn writer(emulator: &KubeEmulator, node: &str) -> StatusWriter {
    let (writer, reconciler) = unsupervised_writer(emulator, node);
    tokio::spawn(async move { reconciler.run().await });
    writer
}

fn unsupervised_writer(emulator: &KubeEmulator, node: &str) -> (StatusWriter, StatusReconciler) {
    StatusWriter::new(
        emulator.client(),
        StatusConfig {
            node: node.to_owned(),
            namespace: NAMESPACE.to_owned(),
            pod: SpeakerPod::from_downward_api(
                Some(format!("speaker-{node}")),
                Some(POD_UID.to_owned()),
                Some(NAMESPACE.to_owned()),
            ),
        },
    )
}

fn announced(services: &[(ServiceKey, &[&str])]) -> AnnouncedServices {
    services
        .iter()
        .map(|(service, interfaces)| {
            (
                service.clone(),
                interfaces.iter().map(|i| i.to_string()).collect(),
            )
        })
        .collect()
}

fn statuses(emulator: &KubeEmulator) -> Vec<Value> {
    emulator.list(METALLB, "ServiceL2Status", Some(NAMESPACE))
}

fn statuses_of(emulator: &KubeEmulator, node: &str) -> Vec<Value> {
    let mut found = statuses(emulator);
    found.retain(|s| s["metadata"]["labels"][LABEL_NODE] == node);
    found
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

fn labels_for(node: &str, service: &str) -> Value {
    json!({
        LABEL_NODE: node,
        LABEL_SERVICE_NAME: service,
        LABEL_SERVICE_NAMESPACE: "default",
    })
}

/// A status object as an earlier run (or another node) left it.
fn leftover(emulator: &KubeEmulator, name: &str, node: &str, service: &str) {
    emulator.create(json!({
        "apiVersion": METALLB,
        "kind": "ServiceL2Status",
        "metadata": {
            "name": name,
            "namespace": NAMESPACE,
            "labels": labels_for(node, service),
        },
        "status": {"node": node, "serviceName": service, "serviceNamespace": "default"},
    }));
}

/// Polls `probe` until it gives a value, at most [`REACT`].
async fn eventually<T>(what: &str, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = tokio::time::Instant::now() + REACT;
    loop {
        if let Some(value) = probe() {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: not seen within {REACT:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The one status of `node`, once it has `status`.
async fn one_status(emulator: &KubeEmulator, node: &str, status: Value) -> Value {
    let what = format!("one ServiceL2Status of {node} with status {status}");
    eventually(&what, || match statuses_of(emulator, node).as_slice() {
        [object] if object["status"] == status => Some(object.clone()),
        _ => None,
    })
    .await
}

async fn quietly<F: Future>(future: F) -> F::Output {
    tokio::time::timeout(REACT, future)
        .await
        .expect("finished in time")
}

#[tokio::test]
async fn an_announced_service_gets_its_status_with_owner_labels_and_an_event() {
    let emulator = KubeEmulator::start(&[&iris()]);
    let service = emulator
        .get("v1", "Service", Some("default"), "web")
        .expect("web is preloaded");
    let status = writer(&emulator, "iris1");

    status.publish(announced(&[(web(), &[])]));

    let object = one_status(&emulator, "iris1", status_for("iris1", &[])).await;
    let name = object["metadata"]["name"].as_str().unwrap();
    assert!(
        name.starts_with("l2-"),
        "named from generateName l2-: {name}"
    );
    assert_eq!(object["metadata"]["namespace"], NAMESPACE);
    assert_eq!(object["metadata"]["labels"], labels_for("iris1", "web"));
    assert_eq!(
        object["metadata"]["ownerReferences"],
        json!([{"apiVersion": "v1", "kind": "Pod", "name": "speaker-iris1", "uid": POD_UID}]),
        "{object:#}"
    );
    assert!(
        object["status"].get("interfaces").is_none(),
        "no interfaces named: none listed, as MetalLB: {object:#}"
    );

    let event = eventually("the nodeAssigned event", || {
        events(&emulator, "nodeAssigned").into_iter().next()
    })
    .await;
    assert_eq!(event["type"], "Normal");
    assert_eq!(
        event["note"],
        r#"announcing from node "iris1" with protocol "layer2""#
    );
    let regarding = &event["regarding"];
    assert_eq!(regarding["kind"], "Service");
    assert_eq!(regarding["namespace"], "default");
    assert_eq!(regarding["name"], "web");
    assert_eq!(regarding["uid"], service["metadata"]["uid"]);
    assert_eq!(event["reportingController"], "metallb-speaker");
    assert_eq!(event["reportingInstance"], "iris1");
}

/// The supervisor starts a run again when one ends: the new run lists
/// afresh and catches up with what was published while none ran. A run
/// started after the writer is gone ends at once.
#[tokio::test]
async fn a_restarted_reconciler_catches_up_and_ends_with_the_writer() {
    let emulator = KubeEmulator::start(&[&iris()]);
    let (status, reconciler) = unsupervised_writer(&emulator, "iris1");
    let first = tokio::spawn({
        let reconciler = reconciler.clone();
        async move { reconciler.run().await }
    });
    status.publish(announced(&[(web(), &[])]));
    one_status(&emulator, "iris1", status_for("iris1", &[])).await;

    first.abort(); // as a run whose watch ended
    let _ = first.await;
    status.publish(announced(&[(web(), &["eth0"])]));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        statuses_of(&emulator, "iris1")[0]["status"],
        status_for("iris1", &[]),
        "no run, no write"
    );

    let second = tokio::spawn({
        let reconciler = reconciler.clone();
        async move { reconciler.run().await }
    });
    one_status(&emulator, "iris1", status_for("iris1", &["eth0"])).await;

    drop(status);
    quietly(second).await.expect("the run ends with its writer");
    quietly(reconciler.run()).await;
}

#[tokio::test]
async fn interfaces_follow_and_a_withdrawal_deletes_without_an_event() {
    let emulator = KubeEmulator::start(&[&iris()]);
    let status = writer(&emulator, "iris1");

    status.publish(announced(&[(web(), &["eth0"])]));
    let first = one_status(&emulator, "iris1", status_for("iris1", &["eth0"])).await;

    status.publish(announced(&[(web(), &["eth0", "eth1"])]));
    let second = one_status(&emulator, "iris1", status_for("iris1", &["eth0", "eth1"])).await;
    assert_eq!(
        second["metadata"]["name"], first["metadata"]["name"],
        "updated, not recreated"
    );
    status.publish(announced(&[(web(), &[])]));
    let third = one_status(&emulator, "iris1", status_for("iris1", &[])).await;
    assert_eq!(third["metadata"]["name"], first["metadata"]["name"]);

    eventually("the nodeAssigned event", || {
        (events(&emulator, "nodeAssigned").len() == 1).then_some(())
    })
    .await;
    status.publish(AnnouncedServices::new());
    eventually("the status deleted", || {
        statuses(&emulator).is_empty().then_some(())
    })
    .await;
    assert_eq!(
        emulator.list(EVENTS, "Event", Some("default")).len(),
        1,
        "one nodeAssigned for one gain, nothing for the withdrawal"
    );
}

#[tokio::test]
async fn a_deleted_or_changed_status_is_restored() {
    let emulator = KubeEmulator::start(&[&iris()]);
    let status = writer(&emulator, "iris1");
    status.publish(announced(&[(web(), &[])]));
    let first = one_status(&emulator, "iris1", status_for("iris1", &[])).await;
    let first_name = first["metadata"]["name"].as_str().unwrap().to_owned();

    emulator.delete(METALLB, "ServiceL2Status", Some(NAMESPACE), &first_name);
    let second = one_status(&emulator, "iris1", status_for("iris1", &[])).await;
    let second_name = second["metadata"]["name"].as_str().unwrap().to_owned();
    assert_ne!(
        second_name, first_name,
        "a new object replaces the deleted one"
    );

    emulator.patch(
        speaker_tests::kube_emulator::Part::Status,
        METALLB,
        "ServiceL2Status",
        Some(NAMESPACE),
        &second_name,
        json!({"status": {"interfaces": [{"name": "bogus"}]}}),
    );
    let third = one_status(&emulator, "iris1", status_for("iris1", &[])).await;
    assert_eq!(third["metadata"]["name"], second_name.as_str());
}

#[tokio::test]
async fn stale_statuses_of_this_node_go_once_the_first_picture_is_known() {
    let emulator = KubeEmulator::start(&[&iris()]);
    leftover(&emulator, "l2-old", "iris1", "gone");
    leftover(&emulator, "l2-web-twice", "iris1", "web");
    leftover(&emulator, "l2-web-again", "iris1", "web");
    leftover(&emulator, "l2-theirs", "iris2", "other");
    let status = writer(&emulator, "iris1");

    // Nothing is known yet: nothing may be deleted.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(statuses(&emulator).len(), 4, "{:#?}", statuses(&emulator));

    status.publish(announced(&[(web(), &[])]));
    let kept = one_status(&emulator, "iris1", status_for("iris1", &[])).await;
    assert_eq!(
        kept["metadata"]["name"], "l2-web-again",
        "the first of this node's objects for web is kept"
    );
    let theirs = statuses_of(&emulator, "iris2");
    assert_eq!(theirs.len(), 1, "another node's objects are left alone");
}

#[tokio::test]
async fn a_refused_write_is_retried() {
    let emulator = KubeEmulator::start(&[&iris()]);
    emulator.standin().inject(kube_standin::Fault {
        verb: "create".into(),
        resource: "servicel2statuses".into(),
        subresource: None,
        code: 500,
        times: 1,
    });
    emulator.standin().inject(kube_standin::Fault {
        verb: "patch".into(),
        resource: "servicel2statuses".into(),
        subresource: Some("status".into()),
        code: 409,
        times: 1,
    });
    let status = writer(&emulator, "iris1");
    status.publish(announced(&[(web(), &[])]));

    one_status(&emulator, "iris1", status_for("iris1", &[])).await;
    let writes: Vec<(String, String, u16)> = emulator
        .standin()
        .requests()
        .into_iter()
        .filter(|r| r.resource == "servicel2statuses" && (r.verb == "create" || r.verb == "patch"))
        .map(|r| (r.verb, r.subresource, r.code))
        .collect();
    assert!(emulator.standin().pending_faults().is_empty());
    assert_eq!(
        writes.first(),
        Some(&("create".to_owned(), String::new(), 500)),
        "{writes:?}"
    );
    assert!(
        writes.contains(&("patch".to_owned(), "status".to_owned(), 409)),
        "{writes:?}"
    );
    assert_eq!(
        writes.last(),
        Some(&("patch".to_owned(), "status".to_owned(), 200)),
        "{writes:?}"
    );
    let created: Vec<_> = writes
        .iter()
        .filter(|w| w.0 == "create" && w.2 == 201)
        .collect();
    assert_eq!(created.len(), 1, "no duplicate after the retry: {writes:?}");
}

#[tokio::test]
async fn announce_failed_records_metallbs_warning() {
    let emulator = KubeEmulator::start(&[&iris()]);
    let status = writer(&emulator, "iris1");

    status.announce_failed(&web(), "192.0.2.100".parse().unwrap());

    let event = eventually("the announceFailed event", || {
        events(&emulator, "announceFailed").into_iter().next()
    })
    .await;
    assert_eq!(event["type"], "Warning");
    assert_eq!(
        event["note"],
        r#"the interfaces specified by LB IP "192.0.2.100" doesn't exist in assigned node "iris1" with protocol "layer2""#
    );
    assert_eq!(event["regarding"]["name"], "web");
    assert!(statuses(&emulator).is_empty(), "an event, no status");
}

#[tokio::test]
async fn an_unreachable_api_server_stops_nothing() {
    let emulator = KubeEmulator::start(&[&iris()]);
    let status = writer(&emulator, "iris1");
    drop(emulator); // nothing listens any more
    quietly(async {
        status.publish(announced(&[(web(), &[])]));
        status.announce_failed(&web(), "192.0.2.100".parse().unwrap());
        status.publish(AnnouncedServices::new());
    })
    .await;
}

#[tokio::test]
async fn events_do_not_wait_for_statuses() {
    let emulator = KubeEmulator::start(&[&iris()]);
    // The statuses cannot even be listed (as with RBAC missing).
    emulator.standin().inject(kube_standin::Fault {
        verb: "list".into(),
        resource: "servicel2statuses".into(),
        subresource: None,
        code: 403,
        times: 1_000,
    });
    let status = writer(&emulator, "iris1");
    status.publish(announced(&[(web(), &[])]));

    eventually("the nodeAssigned event", || {
        events(&emulator, "nodeAssigned").into_iter().next()
    })
    .await;
    assert!(statuses(&emulator).is_empty());
}

#[tokio::test]
async fn a_status_of_an_earlier_pod_is_adopted() {
    let emulator = KubeEmulator::start(&[&iris()]);
    leftover(&emulator, "l2-before-restart", "iris1", "web");
    emulator.patch(
        speaker_tests::kube_emulator::Part::Object,
        METALLB,
        "ServiceL2Status",
        Some(NAMESPACE),
        "l2-before-restart",
        json!({"metadata": {"ownerReferences": [
            {"apiVersion": "v1", "kind": "Pod", "name": "speaker-old", "uid": "old-uid"}
        ]}}),
    );
    let status = writer(&emulator, "iris1");
    status.publish(announced(&[(web(), &[])]));

    let adopted = eventually("the status owned by this Pod", || {
        let object = statuses_of(&emulator, "iris1").into_iter().next()?;
        (object["metadata"]["ownerReferences"][0]["uid"] == POD_UID).then_some(object)
    })
    .await;
    assert_eq!(
        adopted["metadata"]["name"], "l2-before-restart",
        "kept, not recreated"
    );
    assert_eq!(
        adopted["metadata"]["ownerReferences"]
            .as_array()
            .map(Vec::len),
        Some(1),
        "{adopted:#}"
    );
    assert_eq!(statuses(&emulator).len(), 1);
}
