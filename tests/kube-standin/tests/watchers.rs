//! kube-rs watchers and reflectors against the stand-in: they see creates,
//! patches and deletes, and list again after a compaction.

mod common;

use std::{collections::BTreeSet, time::Duration};

use common::{client, eventually, pools, server, WAIT};
use futures::StreamExt;
use k8s_openapi::api::{
    core::v1::{Node, Service},
    discovery::v1::EndpointSlice,
};
use kube::{
    runtime::{reflector, watcher, WatchStreamExt},
    Api, Resource, ResourceExt,
};
use kube_standin::Part;
use serde_json::json;

/// A reflector's store, kept current by a task.
fn reflect<K>(api: Api<K>, config: watcher::Config, dyntype: K::DynamicType) -> reflector::Store<K>
where
    K: Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + Sync + 'static,
    K::DynamicType: Clone + Eq + std::hash::Hash + Send + Sync,
{
    let writer = reflector::store::Writer::new(dyntype);
    let reader = writer.as_reader();
    let stream = reflector(writer, watcher(api, config).default_backoff()).applied_objects();
    tokio::spawn(stream.for_each(|_| async {}));
    reader
}

fn names<K>(store: &reflector::Store<K>) -> BTreeSet<String>
where
    K: Resource + Clone,
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    store.state().iter().map(|o| o.name_any()).collect()
}

#[tokio::test]
async fn reflectors_see_creates_patches_and_deletes() {
    let server = server();
    let client = client(&server);
    let nodes = reflect(
        Api::<Node>::all(client.clone()),
        watcher::Config::default(),
        (),
    );
    let services = reflect(
        Api::<Service>::all(client.clone()),
        watcher::Config::default(),
        (),
    );
    let slices = reflect(
        Api::<EndpointSlice>::all(client.clone()),
        watcher::Config::default(),
        (),
    );
    let pools_store = reflect(
        pools(&client),
        watcher::Config::default(),
        common::metallb("IPAddressPool"),
    );
    tokio::time::timeout(WAIT, nodes.wait_until_ready())
        .await
        .unwrap()
        .unwrap();
    tokio::time::timeout(WAIT, services.wait_until_ready())
        .await
        .unwrap()
        .unwrap();
    tokio::time::timeout(WAIT, slices.wait_until_ready())
        .await
        .unwrap()
        .unwrap();
    tokio::time::timeout(WAIT, pools_store.wait_until_ready())
        .await
        .unwrap()
        .unwrap();

    server
        .create(json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"}}))
        .unwrap();
    server
        .create(json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "web", "namespace": "default"}, "spec": {"type": "LoadBalancer"}}))
        .unwrap();
    server
        .create(
            json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": "web-1", "namespace": "default",
                         "labels": {"kubernetes.io/service-name": "web"}},
            "addressType": "IPv4", "endpoints": []}),
        )
        .unwrap();
    server
        .create(
            json!({"apiVersion": "metallb.io/v1beta1", "kind": "IPAddressPool",
            "metadata": {"name": "lab", "namespace": "metallb-system"},
            "spec": {"addresses": ["192.0.2.0/24"]}}),
        )
        .unwrap();
    eventually("all four created", || async {
        (names(&nodes).contains("n1")
            && names(&services).contains("web")
            && names(&slices).contains("web-1")
            && names(&pools_store).contains("lab"))
        .then_some(())
    })
    .await;

    server
        .patch(
            Part::Object,
            "v1",
            "Node",
            None,
            "n1",
            json!({"metadata": {"labels": {"zone": "a"}}}),
        )
        .unwrap();
    server
        .patch(
            Part::Object,
            "metallb.io/v1beta1",
            "IPAddressPool",
            Some("metallb-system"),
            "lab",
            json!({"spec": {"addresses": ["198.51.100.0/24"]}}),
        )
        .unwrap();
    eventually("the patches", || async {
        let node = nodes.get(&reflector::ObjectRef::new("n1"))?;
        let pool = pools_store.state().into_iter().next()?;
        (node.labels().get("zone").map(String::as_str) == Some("a")
            && pool.data["spec"]["addresses"][0] == "198.51.100.0/24")
            .then_some(())
    })
    .await;

    server
        .delete("v1", "Service", Some("default"), "web")
        .unwrap();
    server
        .delete(
            "metallb.io/v1beta1",
            "IPAddressPool",
            Some("metallb-system"),
            "lab",
        )
        .unwrap();
    eventually("the deletions", || async {
        (names(&services).is_empty() && names(&pools_store).is_empty()).then_some(())
    })
    .await;
    assert_eq!(names(&nodes), BTreeSet::from(["n1".to_owned()]));
    assert_eq!(names(&slices), BTreeSet::from(["web-1".to_owned()]));
}

#[tokio::test]
async fn a_compaction_makes_watchers_list_again() {
    let server = server();
    let client = client(&server);
    let api = Api::<Node>::all(client);
    let (tx, mut events) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(
        watcher(api, watcher::Config::default())
            .default_backoff()
            .for_each(move |event| {
                let _ = tx.send(event.map_err(|e| e.to_string()));
                async {}
            }),
    );
    let mut next = async || {
        tokio::time::timeout(WAIT, events.recv())
            .await
            .expect("a watcher event")
            .expect("the watcher goes on")
    };
    assert!(matches!(next().await, Ok(watcher::Event::Init)));
    assert!(matches!(next().await, Ok(watcher::Event::InitDone)));
    eventually("the watch request", || async {
        (server.count_requests("watch", "nodes") == 1).then_some(())
    })
    .await;
    assert_eq!(server.count_requests("list", "nodes"), 1);

    server.compact();
    // Created while no watch runs: only the new list can bring it.
    server
        .create(json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "late"}}))
        .unwrap();
    let mut seen = Vec::new();
    let mut errors = Vec::new();
    loop {
        match next().await {
            Ok(watcher::Event::InitDone) => break,
            Ok(watcher::Event::InitApply(node)) => seen.push(node.name_any()),
            Ok(watcher::Event::Init) => {}
            Ok(other) => panic!("unexpected before the relist: {other:?}"),
            Err(error) => errors.push(error),
        }
    }
    assert_eq!(seen, ["late"]);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].contains("Expired"), "{errors:?}");
    assert_eq!(server.count_requests("list", "nodes"), 2);

    // Watching again from the new list's version works.
    server
        .patch(
            Part::Object,
            "v1",
            "Node",
            None,
            "late",
            json!({"metadata": {"labels": {"x": "y"}}}),
        )
        .unwrap();
    match next().await {
        Ok(watcher::Event::Apply(node)) => {
            assert_eq!(node.labels().get("x").map(String::as_str), Some("y"))
        }
        other => panic!("expected the patched node, got {other:?}"),
    }
}

#[tokio::test]
async fn streaming_lists_and_selectors() {
    let server = server();
    for (name, zone) in [("a", "one"), ("b", "two")] {
        server
            .create(json!({"apiVersion": "v1", "kind": "Node",
                "metadata": {"name": name, "labels": {"zone": zone}}}))
            .unwrap();
    }
    let client = client(&server);
    let config = watcher::Config::default()
        .streaming_lists()
        .labels("zone in (one)");
    let store = reflect(Api::<Node>::all(client), config, ());
    tokio::time::timeout(WAIT, store.wait_until_ready())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(names(&store), BTreeSet::from(["a".to_owned()]));
    assert_eq!(
        server.count_requests("list", "nodes"),
        0,
        "a streaming list is a watch"
    );

    // Leaving the selection is a deletion for this watch, entering one an
    // addition.
    server
        .patch(
            Part::Object,
            "v1",
            "Node",
            None,
            "a",
            json!({"metadata": {"labels": {"zone": "two"}}}),
        )
        .unwrap();
    server
        .patch(
            Part::Object,
            "v1",
            "Node",
            None,
            "b",
            json!({"metadata": {"labels": {"zone": "one"}}}),
        )
        .unwrap();
    eventually("b replaces a", || async {
        (names(&store) == BTreeSet::from(["b".to_owned()])).then_some(())
    })
    .await;
}

#[tokio::test]
async fn watches_from_old_versions_are_gone_and_bookmarks_flow() {
    let server = server();
    let client = client(&server);
    for name in ["a", "b"] {
        server
            .create(json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name}}))
            .unwrap();
    }
    let api = Api::<Node>::all(client.clone());
    let old = server.revision() - 1;
    server.compact();
    let params = kube::api::WatchParams::default();
    let mut stream = api.watch(&params, &old.to_string()).await.unwrap().boxed();
    match stream.next().await {
        Some(Ok(kube::api::WatchEvent::Error(status))) => {
            assert_eq!((status.code, status.reason.as_str()), (410, "Expired"))
        }
        other => panic!("expected 410 Expired, got {other:?}"),
    }

    let now = server.revision().to_string();
    let mut stream = api.watch(&params, &now).await.unwrap().boxed();
    match tokio::time::timeout(Duration::from_secs(5), stream.next())
        .await
        .unwrap()
    {
        Some(Ok(kube::api::WatchEvent::Bookmark(bookmark))) => {
            assert_eq!(bookmark.metadata.resource_version, now)
        }
        other => panic!("expected a bookmark, got {other:?}"),
    }

    // timeoutSeconds ends the stream.
    let params = kube::api::WatchParams::default()
        .timeout(1)
        .disable_bookmarks();
    let stream = api.watch(&params, &now).await.unwrap();
    let ended = tokio::time::timeout(Duration::from_secs(5), stream.collect::<Vec<_>>()).await;
    assert!(ended.unwrap().is_empty());
}
