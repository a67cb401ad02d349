//! Speaker discovery by pod label (`--memberlist-pod-selector`) against the
//! stand-in API server: only matching pods in the namespace, by pod IP.

use std::{net::IpAddr, time::Duration};

use serde_json::json;
use speaker::kube::speaker_pod_addresses;
use speaker_tests::kube_emulator::KubeEmulator;

fn pod(namespace: &str, name: &str, component: &str, ip: &str) -> serde_json::Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace,
                     "labels": {"app.kubernetes.io/name": "xdp-speaker", "app.kubernetes.io/component": component}},
        "spec": {"containers": [{"name": "speaker", "image": "xdp-speaker"}]},
        "status": {"podIP": ip},
    })
}

#[test]
fn lists_matching_speaker_pods_by_ip() {
    let emulator = KubeEmulator::start(&[]);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        for object in [
            pod("metallb-system", "speaker-a", "speaker", "192.0.2.11"),
            pod("metallb-system", "speaker-b", "speaker", "192.0.2.12"),
            pod("metallb-system", "controller", "controller", "192.0.2.50"),
            pod("default", "speaker-elsewhere", "speaker", "192.0.2.60"),
        ] {
            emulator.create(object);
        }
        let (tx, mut rx) = tokio::sync::mpsc::channel(1);
        tokio::spawn(speaker_pod_addresses(
            emulator.client(),
            "metallb-system".into(),
            "app.kubernetes.io/name=xdp-speaker,app.kubernetes.io/component=speaker".into(),
            Duration::from_millis(200),
            tx,
        ));
        let first = tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .unwrap()
            .unwrap();
        let mut first: Vec<IpAddr> = first;
        first.sort();
        assert_eq!(
            first,
            [
                "192.0.2.11".parse::<IpAddr>().unwrap(),
                "192.0.2.12".parse().unwrap()
            ]
        );

        // Re-listed: a new speaker pod shows up without a restart.
        emulator.create(pod("metallb-system", "speaker-c", "speaker", "192.0.2.13"));
        let seen = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                let list = rx.recv().await.unwrap();
                if list.len() == 3 {
                    return list;
                }
            }
        })
        .await
        .expect("the new pod was not listed within 10 s");
        assert!(seen.contains(&"192.0.2.13".parse().unwrap()));
    });
}
