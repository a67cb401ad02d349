//! The speaker pods, for gossip peers.

use kube::Client;

/// Speaker pods' addresses, for gossip peers (MetalLB lists its speaker pods
/// by label): sent once at start and then every `interval`, whatever the
/// outcome of a listing, so a failed one only delays discovery.
pub async fn speaker_pod_addresses(
    client: Client,
    namespace: String,
    selector: String,
    interval: std::time::Duration,
    tx: tokio::sync::mpsc::Sender<Vec<std::net::IpAddr>>,
) {
    use k8s_openapi::api::core::v1::Pod;
    let pods: kube::Api<Pod> = super::calls::PODS.api(client, Some(&namespace));
    let params = kube::api::ListParams::default().labels(&selector);
    loop {
        match pods.list(&params).await {
            Ok(list) => {
                let addresses = list
                    .items
                    .iter()
                    .filter_map(|pod| pod.status.as_ref()?.pod_ip.as_deref()?.parse().ok())
                    .collect();
                if tx.send(addresses).await.is_err() {
                    return;
                }
            }
            Err(e) => tracing::warn!("listing speaker pods ({selector}) in {namespace}: {e}"),
        }
        tokio::time::sleep(interval).await;
    }
}
