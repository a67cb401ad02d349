//! Starting: preloads (no events), bad inputs as errors, network namespaces.

mod common;

use std::{path::PathBuf, time::Duration};

use common::{client, WAIT};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Node;
use kube::{api::WatchEvent, Api};
use kube_standin::{Options, Server, StartError};
use serde_json::json;

fn temp_file(name: &str, text: &str) -> PathBuf {
    let path = std::env::temp_dir().join(format!("kube-standin-{}-{name}", std::process::id()));
    std::fs::write(&path, text).unwrap();
    path
}

#[tokio::test]
async fn preloaded_objects_exist_without_events() {
    let file = temp_file(
        "preload.yaml",
        "apiVersion: v1\nkind: Node\nmetadata: {name: a}\n---\napiVersion: v1\nkind: Node\nmetadata: {name: b}\n",
    );
    let server = Server::start(Options {
        preload: vec![file.clone()],
        ..Options::default()
    })
    .unwrap();
    std::fs::remove_file(&file).unwrap();
    let nodes: Api<Node> = Api::all(client(&server));
    let list = nodes.list(&Default::default()).await.unwrap();
    assert_eq!(list.items.len(), 2);

    // From the list's version on, only what happens later is sent.
    let version = list.metadata.resource_version.unwrap();
    let params = kube::api::WatchParams::default().disable_bookmarks();
    let mut stream = Box::pin(nodes.watch(&params, &version).await.unwrap());
    server
        .create(json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "c"}}))
        .unwrap();
    match tokio::time::timeout(WAIT, stream.next()).await.unwrap() {
        Some(Ok(WatchEvent::Added(node))) => assert_eq!(node.metadata.name.as_deref(), Some("c")),
        other => panic!("expected c added, got {other:?}"),
    }
    // Watching from before the preload is impossible: it is not in the log.
    let mut stream = Box::pin(nodes.watch(&params, "1").await.unwrap());
    assert!(matches!(
        tokio::time::timeout(Duration::from_secs(5), stream.next()).await.unwrap(),
        Some(Ok(WatchEvent::Error(status))) if status.code == 410
    ));
}

#[test]
fn bad_preloads_and_namespaces_are_errors() {
    let missing = Server::start(Options {
        preload: vec!["/nonexistent/cluster.yaml".into()],
        ..Options::default()
    });
    assert!(matches!(missing, Err(StartError::Read { .. })));

    let unknown = temp_file(
        "unknown.yaml",
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\n",
    );
    let result = Server::start(Options {
        preload: vec![unknown.clone()],
        ..Options::default()
    });
    std::fs::remove_file(&unknown).unwrap();
    match result {
        Err(error @ StartError::Load { .. }) => {
            assert!(error.to_string().contains("Deployment"), "{error}")
        }
        other => panic!("expected a load error, got {:?}", other.err()),
    }

    let netns = Server::start(Options {
        netns: Some("/run/netns/kube-standin-does-not-exist".into()),
        ..Options::default()
    });
    assert!(matches!(netns, Err(StartError::Netns { .. })));
}

#[test]
fn a_server_in_a_network_namespace_serves() {
    // Entering the namespace the process is in exercises setns(2) without
    // needing a second namespace (the labs of speaker-tests use real ones).
    let server = Server::start(Options {
        netns: Some("/proc/self/ns/net".into()),
        ..Options::default()
    })
    .unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let version = runtime
        .block_on(async { client(&server).apiserver_version().await })
        .unwrap();
    assert_eq!(version.minor, "33");
    // Stopping closes the port.
    let address = server.local_addr();
    drop(server);
    assert!(std::net::TcpStream::connect(address).is_err());
}
