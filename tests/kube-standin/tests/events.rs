//! kube-rs's event recorder against the stand-in: an event is created once
//! and patched (as a series) when it repeats.

mod common;

use common::{client, server};
use k8s_openapi::api::core::v1::Service;
use kube::{
    runtime::events::{Event, EventType, Recorder, Reporter},
    Api, Resource,
};
use serde_json::json;

#[tokio::test]
async fn the_recorder_creates_then_patches_a_series() {
    let server = server();
    server
        .create(json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "web", "namespace": "default"}}))
        .unwrap();
    let client = client(&server);
    let service = Api::<Service>::namespaced(client.clone(), "default")
        .get("web")
        .await
        .unwrap();
    let reporter = Reporter {
        controller: "standin-test".into(),
        instance: Some("node-1".into()),
    };
    let recorder = Recorder::new(client, reporter);
    let event = Event {
        type_: EventType::Normal,
        reason: "nodeAssigned".into(),
        note: Some("announcing".into()),
        action: "Announce".into(),
        secondary: None,
    };
    let reference = service.object_ref(&());
    recorder.publish(&event, &reference).await.unwrap();
    recorder.publish(&event, &reference).await.unwrap();

    let events = server
        .list("events.k8s.io/v1", "Event", Some("default"))
        .unwrap();
    let [stored] = events.as_slice() else {
        panic!("expected one event: {events:#?}");
    };
    assert_eq!(stored["reason"], "nodeAssigned");
    assert_eq!(stored["regarding"]["uid"], service.metadata.uid.unwrap());
    assert_eq!(stored["reportingController"], "standin-test");
    assert_eq!(stored["series"]["count"], 2);
    assert_eq!(server.count_requests("create", "events"), 1);
    assert_eq!(server.count_requests("patch", "events"), 1);
}
