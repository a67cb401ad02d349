//! The test controls: injected faults, the request log, and the same
//! controls over HTTP under `/_standin`.

mod common;

use common::{client, server};
use k8s_openapi::api::core::v1::{Node, Service};
use kube::{
    api::{Patch, PatchParams},
    Api, Client,
};
use kube_standin::{Fault, Part, RequestRecord};
use serde_json::{json, Value};

fn fault(verb: &str, resource: &str, subresource: Option<&str>, code: u16, times: u32) -> Fault {
    Fault {
        verb: verb.into(),
        resource: resource.into(),
        subresource: subresource.map(str::to_owned),
        code,
        times,
    }
}

fn code_of<T: std::fmt::Debug>(result: Result<T, kube::Error>) -> Option<u16> {
    match result {
        Ok(_) => None,
        Err(kube::Error::Api(status)) => Some(status.code),
        Err(other) => panic!("not an API error: {other}"),
    }
}

#[tokio::test]
async fn a_fault_answers_exactly_n_matching_requests() {
    let server = server();
    server
        .create(json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "web", "namespace": "default"}}))
        .unwrap();
    let services: Api<Service> = Api::namespaced(client(&server), "default");
    server.inject(fault("patch", "services", Some("status"), 500, 2));
    server.inject(fault("get", "services", None, 409, 1));

    let status = json!({"status": {"loadBalancer": {"ingress": [{"ip": "192.0.2.1"}]}}});
    let (params, status) = (PatchParams::default(), Patch::Merge(&status));
    let patch = || services.patch_status("web", &params, &status);
    // A patch of the object itself is not the status subresource.
    let object_patch = json!({"metadata": {"labels": {"a": "b"}}});
    assert_eq!(
        code_of(
            services
                .patch("web", &PatchParams::default(), &Patch::Merge(&object_patch))
                .await
        ),
        None
    );
    assert_eq!(code_of(patch().await), Some(500));
    assert_eq!(code_of(patch().await), Some(500));
    assert_eq!(code_of(patch().await), None);
    assert_eq!(code_of(services.get("web").await), Some(409));
    assert_eq!(code_of(services.get("web").await), None);
    assert!(server.pending_faults().is_empty());

    // Faulted requests are in the log with their code.
    let codes: Vec<u16> = server
        .requests()
        .iter()
        .filter(|r| r.subresource == "status")
        .map(|r| r.code)
        .collect();
    assert_eq!(codes, [500, 500, 200]);
}

#[tokio::test]
async fn the_request_log_counts_verbs_per_resource() {
    let server = server();
    let client = client(&server);
    let nodes: Api<Node> = Api::all(client.clone());
    for _ in 0..3 {
        nodes.list(&Default::default()).await.unwrap();
    }
    let _ = nodes.get_opt("missing").await.unwrap();
    Api::<Service>::namespaced(client, "default")
        .list(&Default::default())
        .await
        .unwrap();
    assert_eq!(server.count_requests("list", "nodes"), 3);
    assert_eq!(server.count_requests("get", "nodes"), 1);
    assert_eq!(server.count_requests("list", "services"), 1);
    assert_eq!(server.count_requests("watch", "nodes"), 0);
    let requests = server.requests();
    let get = requests.iter().find(|r| r.verb == "get").unwrap();
    assert_eq!(
        (get.method.as_str(), get.path.as_str(), get.code),
        ("GET", "/api/v1/nodes/missing", 404)
    );
    let services = requests.iter().find(|r| r.resource == "services").unwrap();
    assert_eq!(services.namespace, "default");
    server.clear_requests();
    assert!(server.requests().is_empty());
}

async fn control(client: &Client, method: &str, path: &str, body: Value) -> Value {
    let request = http::Request::builder()
        .method(method)
        .uri(format!("/_standin/{path}"))
        .header("content-type", "application/json")
        .body(serde_json::to_vec(&body).unwrap())
        .unwrap();
    let text = client
        .request_text(request)
        .await
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
    serde_json::from_str(&text).unwrap()
}

#[tokio::test]
async fn the_controls_work_over_http() {
    let server = server();
    let client = client(&server);

    let yaml =
        "apiVersion: v1\nkind: Node\nmetadata: {name: n1}\nstatus: {capacity: {pods: '110'}}\n";
    let request = http::Request::post("/_standin/objects")
        .body(yaml.as_bytes().to_vec())
        .unwrap();
    let created: Value =
        serde_json::from_str(&client.request_text(request).await.unwrap()).unwrap();
    assert_eq!(created[0]["metadata"]["name"], "n1");
    assert_eq!(
        server.get("v1", "Node", None, "n1").unwrap().unwrap()["status"]["capacity"]["pods"],
        "110"
    );

    let nodes: Api<Node> = Api::all(client.clone());
    control(
        &client,
        "POST",
        "faults",
        json!({"verb": "list", "resource": "nodes", "code": 500, "times": 1}),
    )
    .await;
    assert_eq!(code_of(nodes.list(&Default::default()).await), Some(500));
    assert_eq!(code_of(nodes.list(&Default::default()).await), None);

    let requests: Vec<RequestRecord> = serde_json::from_value(
        control(
            &client,
            "GET",
            "requests?verb=list&resource=nodes",
            json!({}),
        )
        .await,
    )
    .unwrap();
    assert_eq!(
        requests.iter().map(|r| r.code).collect::<Vec<_>>(),
        [500, 200]
    );

    let before = server.revision();
    let compacted = control(&client, "POST", "compact", json!({})).await;
    assert_eq!(compacted["compactedAt"], before);
    // A watch from before the compaction is gone.
    let params = kube::api::WatchParams::default();
    let mut stream = Box::pin(
        nodes
            .watch(&params, &(before - 1).to_string())
            .await
            .unwrap(),
    );
    use futures::StreamExt;
    match stream.next().await {
        Some(Ok(kube::api::WatchEvent::Error(status))) => assert_eq!(status.code, 410),
        other => panic!("expected 410, got {other:?}"),
    }

    control(&client, "DELETE", "requests", json!({})).await;
    assert!(server.requests().is_empty());
    let all = control(&client, "GET", "objects", json!({})).await;
    assert_eq!(all.as_array().map(Vec::len), Some(1));
    server
        .patch(
            Part::Object,
            "v1",
            "Node",
            None,
            "n1",
            json!({"metadata": {"labels": {"a": "b"}}}),
        )
        .unwrap();
}
