//! Writes through kube-rs: create, replace, patch, delete, their conflicts,
//! and the status subresource's isolation.

mod common;

use common::{client, pools, server};
use k8s_openapi::api::core::v1::{Node, Service};
use kube::{
    api::{DeleteParams, DynamicObject, Patch, PatchParams, PostParams},
    Api, ResourceExt,
};
use serde_json::json;

fn service(name: &str) -> Service {
    serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"type": "LoadBalancer", "ports": [{"port": 80}]},
        "status": {"loadBalancer": {"ingress": [{"ip": "192.0.2.1"}]}},
    }))
    .unwrap()
}

fn api_error(result: Result<impl std::fmt::Debug, kube::Error>) -> (u16, String) {
    match result {
        Err(kube::Error::Api(status)) => (status.code, status.reason.clone()),
        other => panic!("expected an API error, got {other:?}"),
    }
}

#[tokio::test]
async fn create_stamps_metadata_and_refuses_duplicates() {
    let server = server();
    let services: Api<Service> = Api::namespaced(client(&server), "default");
    let created = services
        .create(&PostParams::default(), &service("web"))
        .await
        .unwrap();
    let meta = &created.metadata;
    assert_eq!(meta.namespace.as_deref(), Some("default"));
    assert_eq!(meta.uid.as_ref().map(String::len), Some(36));
    assert!(meta.creation_timestamp.is_some());
    assert_eq!(meta.generation, Some(1));
    assert_eq!(meta.resource_version, Some(server.revision().to_string()));
    // The apiserver drops a Service's status on create.
    assert_eq!(created.status, None);

    let again = services
        .create(&PostParams::default(), &service("web"))
        .await;
    assert_eq!(api_error(again), (409, "AlreadyExists".to_owned()));

    let mut generated = service("");
    generated.metadata.name = None;
    generated.metadata.generate_name = Some("web-".into());
    let generated = services
        .create(&PostParams::default(), &generated)
        .await
        .unwrap();
    let name = generated.name_any();
    assert!(name.starts_with("web-") && name.len() == 9, "{name}");

    // A Node keeps the status it registers with.
    let nodes: Api<Node> = Api::all(client(&server));
    let node: Node = serde_json::from_value(json!({
        "metadata": {"name": "n1"},
        "status": {"conditions": [{"type": "Ready", "status": "True"}]},
    }))
    .unwrap();
    let node = nodes.create(&PostParams::default(), &node).await.unwrap();
    assert!(node.status.is_some());
}

#[tokio::test]
async fn stale_resource_versions_conflict() {
    let server = server();
    let services: Api<Service> = Api::namespaced(client(&server), "default");
    let created = services
        .create(&PostParams::default(), &service("web"))
        .await
        .unwrap();

    let mut first = created.clone();
    first.metadata.labels = Some([("a".to_owned(), "1".to_owned())].into());
    let replaced = services
        .replace("web", &PostParams::default(), &first)
        .await
        .unwrap();
    assert_eq!(replaced.labels().get("a").map(String::as_str), Some("1"));

    // `created` carries the old resourceVersion now.
    let stale = services
        .replace("web", &PostParams::default(), &created)
        .await;
    assert_eq!(api_error(stale), (409, "Conflict".to_owned()));
    let stale_patch =
        json!({"metadata": {"resourceVersion": created.resource_version(), "labels": {"b": "2"}}});
    let stale = services
        .patch("web", &PatchParams::default(), &Patch::Merge(&stale_patch))
        .await;
    assert_eq!(api_error(stale), (409, "Conflict".to_owned()));

    // Without a resourceVersion a replace is unconditional.
    let mut unconditional = created.clone();
    unconditional.metadata.resource_version = None;
    services
        .replace("web", &PostParams::default(), &unconditional)
        .await
        .unwrap();

    let missing = services.get("nope").await;
    assert_eq!(api_error(missing), (404, "NotFound".to_owned()));
    let missing = services.delete("nope", &DeleteParams::default()).await;
    assert_eq!(api_error(missing), (404, "NotFound".to_owned()));
}

#[tokio::test]
async fn the_status_subresource_is_isolated() {
    let server = server();
    let services: Api<Service> = Api::namespaced(client(&server), "default");
    services
        .create(&PostParams::default(), &service("web"))
        .await
        .unwrap();

    let ingress = json!({"status": {"loadBalancer": {"ingress": [{"ip": "192.0.2.9"}]}},
                         "metadata": {"labels": {"via": "status"}}});
    let patched = services
        .patch_status("web", &PatchParams::default(), &Patch::Merge(&ingress))
        .await
        .unwrap();
    let ip = |s: &Service| {
        s.status
            .as_ref()
            .unwrap()
            .load_balancer
            .as_ref()
            .unwrap()
            .ingress
            .as_ref()
            .unwrap()[0]
            .ip
            .clone()
    };
    assert_eq!(ip(&patched).as_deref(), Some("192.0.2.9"));
    assert!(
        patched.labels().is_empty(),
        "a status write changes only status"
    );

    let object_write = json!({"status": {"loadBalancer": {"ingress": [{"ip": "192.0.2.77"}]}},
                              "spec": {"ports": [{"port": 8080}]}});
    let patched = services
        .patch("web", &PatchParams::default(), &Patch::Merge(&object_write))
        .await
        .unwrap();
    assert_eq!(
        ip(&patched).as_deref(),
        Some("192.0.2.9"),
        "an object write ignores status"
    );
    assert_eq!(
        patched.spec.as_ref().unwrap().ports.as_ref().unwrap()[0].port,
        8080
    );
    assert_eq!(
        patched.metadata.generation,
        Some(2),
        "a spec change bumps generation"
    );

    // The same for a custom resource with a status subresource.
    let statuses: Api<DynamicObject> = Api::namespaced_with(
        client(&server),
        "metallb-system",
        &common::metallb("ServiceL2Status"),
    );
    let mut object =
        DynamicObject::new("", &common::metallb("ServiceL2Status")).within("metallb-system");
    object.metadata.generate_name = Some("l2-".into());
    object.data = json!({"status": {"node": "n1"}});
    let created = statuses
        .create(&PostParams::default(), &object)
        .await
        .unwrap();
    assert_eq!(
        created.data.get("status"),
        None,
        "status is dropped on create"
    );
    let name = created.name_any();
    let written = statuses
        .patch_status(
            &name,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"node": "n2"}})),
        )
        .await
        .unwrap();
    assert_eq!(written.data["status"]["node"], "n2");
}

#[tokio::test]
async fn json_patches_apply_and_deletes() {
    let server = server();
    let pools = pools(&client(&server));
    let pool = DynamicObject::new("lab", &common::metallb("IPAddressPool"))
        .within("metallb-system")
        .data(json!({"spec": {"addresses": ["192.0.2.0/24"]}}));
    pools.create(&PostParams::default(), &pool).await.unwrap();

    let patch: json_patch::Patch = serde_json::from_value(json!([
        {"op": "add", "path": "/spec/addresses/-", "value": "198.51.100.0/24"}
    ]))
    .unwrap();
    let patched = pools
        .patch("lab", &PatchParams::default(), &Patch::<()>::Json(patch))
        .await
        .unwrap();
    assert_eq!(
        patched.data["spec"]["addresses"],
        json!(["192.0.2.0/24", "198.51.100.0/24"])
    );

    let bad: json_patch::Patch =
        serde_json::from_value(json!([{"op": "remove", "path": "/spec/missing"}])).unwrap();
    let failed = pools
        .patch("lab", &PatchParams::default(), &Patch::<()>::Json(bad))
        .await;
    assert_eq!(api_error(failed), (422, "Invalid".to_owned()));

    // Server-side apply creates what is missing, then merges.
    let applied = json!({"apiVersion": "metallb.io/v1beta1", "kind": "IPAddressPool",
        "metadata": {"name": "applied", "namespace": "metallb-system"},
        "spec": {"addresses": ["203.0.113.0/24"]}});
    let params = PatchParams::apply("test");
    let created = pools
        .patch("applied", &params, &Patch::Apply(&applied))
        .await
        .unwrap();
    assert_eq!(created.data["spec"]["addresses"][0], "203.0.113.0/24");

    pools.delete("lab", &DeleteParams::default()).await.unwrap();
    let names: Vec<String> = pools
        .list(&Default::default())
        .await
        .unwrap()
        .iter()
        .map(|p| p.name_any())
        .collect();
    assert_eq!(names, ["applied"]);
}

#[tokio::test]
async fn lists_page_and_select() {
    let server = server();
    for (name, zone) in [("a", "one"), ("b", "two"), ("c", "one"), ("d", "three")] {
        server
            .create(json!({"apiVersion": "v1", "kind": "Node",
                "metadata": {"name": name, "labels": {"zone": zone}}}))
            .unwrap();
    }
    let nodes: Api<Node> = Api::all(client(&server));
    let names = |list: &kube::api::ObjectList<Node>| -> Vec<String> {
        list.items.iter().map(|n| n.name_any()).collect()
    };
    let params = kube::api::ListParams::default().limit(3);
    let first = nodes.list(&params).await.unwrap();
    assert_eq!(names(&first), ["a", "b", "c"]);
    assert_eq!(first.metadata.remaining_item_count, Some(1));
    let token = first.metadata.continue_.clone().unwrap();
    let second = nodes
        .list(&params.clone().continue_token(&token))
        .await
        .unwrap();
    assert_eq!(names(&second), ["d"]);
    assert_eq!(second.metadata.continue_, None);

    let selected = nodes
        .list(&kube::api::ListParams::default().labels("zone notin (one),zone"))
        .await
        .unwrap();
    assert_eq!(names(&selected), ["b", "d"]);
    let by_name = nodes
        .list(&kube::api::ListParams::default().fields("metadata.name=c"))
        .await
        .unwrap();
    assert_eq!(names(&by_name), ["c"]);
    let unsupported = nodes
        .list(&kube::api::ListParams::default().fields("spec.unschedulable=true"))
        .await;
    assert_eq!(api_error(unsupported), (400, "BadRequest".to_owned()));
}
