//! ServiceL2Status and Events through the real `speaker run`, against the
//! stand-in API server (see `speaker_tests::lab::kube`): created with the
//! owner reference, labels and no interfaces; a refused write retried; this
//! node's stale statuses removed at start (another node's left alone); a
//! deleted status recreated; the `nodeAssigned` Event; interfaces listed
//! (in the same object) when the L2Advertisement names them, and no status
//! but `announceFailed` when none of them exists here.
//!
//! Needs root (namespaces, bpffs, XDP) and fails, not skips, without it.
//! Run: `cargo test -p speaker-tests --test kube_status_lab`.

use std::time::Duration;

use kube_standin::Fault;
use serde_json::{json, Value};
use speaker_tests::{
    kube_emulator::Part,
    lab::{
        kube::{iris_example, KubeLab, EVENTS, METALLB, METALLB_NAMESPACE, NODE, OTHER_NODE},
        require_root, speaker_bin,
    },
};

const POD_NAME: &str = "lb-xdp-speaker-x7k2p";
const POD_UID: &str = "6f1c2b7e-3a4d-4e5f-8a9b-0c1d2e3f4a5b";
const REACT: Duration = Duration::from_secs(15);

fn wait_api<T>(k: &KubeLab, what: &str, probe: impl FnMut() -> Option<T>) -> T {
    k.wait_api(what, REACT, probe)
}

fn named(k: &KubeLab, name: &str) -> Option<Value> {
    k.statuses()
        .into_iter()
        .find(|s| s["metadata"]["name"] == name)
}

/// This node's one status of default/web, once it has its status.
fn web_status(k: &KubeLab) -> Value {
    wait_api(k, "iris1's ServiceL2Status of default/web", || {
        let mine = k.statuses_of("web", NODE);
        match mine.as_slice() {
            [one] if one["status"]["node"] == NODE => Some(one.clone()),
            _ => None,
        }
    })
}

fn leftover(k: &KubeLab, name: &str, node: &str, service: &str) {
    k.kube().create(json!({
        "apiVersion": METALLB,
        "kind": "ServiceL2Status",
        "metadata": {
            "name": name,
            "namespace": METALLB_NAMESPACE,
            "labels": {
                "metallb.io/node": node,
                "metallb.io/service-name": service,
                "metallb.io/service-namespace": "default",
            },
        },
        "status": {"node": node, "serviceName": service, "serviceNamespace": "default"},
    }));
}

#[test]
fn statuses_and_events_of_speaker_run() {
    require_root();
    speaker_bin();
    let mut k = KubeLab::new(&[iris_example()]);
    // Left by an earlier run of this node (a Service it no longer
    // announces), and by the other node.
    leftover(&k, "l2-stale", NODE, "gone");
    leftover(&k, "l2-theirs", OTHER_NODE, "web");
    // The first create is refused.
    k.kube().standin().inject(Fault {
        verb: "create".into(),
        resource: "servicel2statuses".into(),
        subresource: None,
        code: 500,
        times: 1,
    });

    k.start_speaker(NODE, &["--pod-name", POD_NAME, "--pod-uid", POD_UID]);

    // ---- Created (after the refusal), with owner, labels, no interfaces.
    let status = web_status(&k);
    assert_eq!(
        status["metadata"]["ownerReferences"],
        json!([{"apiVersion": "v1", "kind": "Pod", "name": POD_NAME, "uid": POD_UID}]),
        "{status:#}"
    );
    assert_eq!(
        status["metadata"]["labels"],
        json!({
            "metallb.io/node": NODE,
            "metallb.io/service-name": "web",
            "metallb.io/service-namespace": "default",
        }),
        "{status:#}"
    );
    assert_eq!(
        status["status"],
        json!({"node": NODE, "serviceName": "web", "serviceNamespace": "default"}),
        "the iris advertisement names no interface: none listed\n{status:#}"
    );
    assert!(
        status["metadata"]["name"]
            .as_str()
            .is_some_and(|n| n.starts_with("l2-")),
        "{status:#}"
    );
    let creates: Vec<u16> = k
        .kube()
        .standin()
        .requests()
        .iter()
        .filter(|r| r.verb == "create" && r.resource == "servicel2statuses")
        .map(|r| r.code)
        .collect();
    assert_eq!(
        creates,
        [500, 201],
        "refused once, then retried once\n{}",
        k.diagnostics()
    );

    // ---- This node's stale status went; the other node's stays.
    wait_api(&k, "l2-stale deleted", || {
        named(&k, "l2-stale").is_none().then_some(())
    });
    assert!(
        named(&k, "l2-theirs").is_some(),
        "another node's status is not this node's to delete"
    );

    // ---- nodeAssigned, as MetalLB words it.
    let event = wait_api(&k, "the nodeAssigned event", || {
        k.kube()
            .list(EVENTS, "Event", Some("default"))
            .into_iter()
            .find(|e| e["reason"] == "nodeAssigned" && e["regarding"]["name"] == "web")
    });
    assert_eq!(event["type"], "Normal", "{event:#}");
    assert_eq!(
        event["note"], "announcing from node \"iris1\" with protocol \"layer2\"",
        "{event:#}"
    );

    // ---- Deleted by someone: recreated.
    let first_name = status["metadata"]["name"].as_str().unwrap().to_owned();
    k.kube().delete(
        METALLB,
        "ServiceL2Status",
        Some(METALLB_NAMESPACE),
        &first_name,
    );
    let recreated = web_status(&k);
    assert_ne!(
        recreated["metadata"]["name"],
        first_name.as_str(),
        "a new object replaces the deleted one"
    );
    assert_eq!(recreated["status"], status["status"]);

    // ---- The advertisement names interfaces: those this node has are
    // listed, in the same object; none of them here: no status, and
    // MetalLB's announceFailed.
    let advertise_on = |names: &[&str]| {
        k.kube().patch(
            Part::Object,
            METALLB,
            "L2Advertisement",
            Some(METALLB_NAMESPACE),
            "lab",
            json!({"spec": {"interfaces": names}}),
        );
    };
    let node_if = k.lab.node_if.clone();
    advertise_on(&[&node_if, "absent0"]);
    let listed = wait_api(&k, "the status listing the node's interface", || {
        let status = web_status(&k);
        (status["status"]["interfaces"] == json!([{"name": node_if}])).then_some(status)
    });
    assert_eq!(listed["metadata"]["name"], recreated["metadata"]["name"]);
    advertise_on(&["absent0"]);
    wait_api(&k, "the status deleted", || {
        k.statuses_of("web", NODE).is_empty().then_some(())
    });
    let failed = wait_api(&k, "the announceFailed event", || {
        k.kube()
            .list(EVENTS, "Event", Some("default"))
            .into_iter()
            .find(|e| e["reason"] == "announceFailed")
    });
    assert_eq!(failed["type"], "Warning", "{failed:#}");
    assert_eq!(
        failed["note"],
        "the interfaces specified by LB IP \"192.0.2.100\" doesn't exist in assigned node \"iris1\" with protocol \"layer2\"",
        "{failed:#}"
    );
    advertise_on(&[]);
    let back = web_status(&k);
    assert!(back["status"].get("interfaces").is_none(), "{back:#}");

    assert!(
        k.speaker().exit_status().is_none(),
        "the speaker is still running\n{}",
        k.diagnostics()
    );
}
