//! The cluster file (`--cluster-state`) of the multi-node labs.

/// A cluster for the multi-node labs: `nodes` with InternalIPs 192.0.2.11,
/// .12, …, a pool (192.0.2.100-110, 2001:db8::100/124) and an advertisement
/// for everything, the Service `default/web` with `ingress` and
/// `externalTrafficPolicy: policy`, and one ready endpoint on `endpoint_node`.
pub fn lab_cluster_yaml(
    nodes: &[&str],
    ingress: &[&str],
    policy: &str,
    endpoint_node: &str,
) -> String {
    let mut yaml = String::new();
    for (i, node) in nodes.iter().enumerate() {
        yaml.push_str(&format!(
            "apiVersion: v1\nkind: Node\nmetadata:\n  name: {node}\nstatus:\n  addresses:\n    \
             - type: InternalIP\n      address: 192.0.2.{}\n  conditions:\n    - type: Ready\n      \
             status: \"True\"\n---\n",
            11 + i
        ));
    }
    let ingress: String = ingress
        .iter()
        .map(|ip| format!("      - ip: {ip}\n"))
        .collect();
    let ingress = ingress.trim_end();
    yaml.push_str(&format!(
        r#"apiVersion: metallb.io/v1beta1
kind: IPAddressPool
metadata:
  name: lab
  namespace: metallb-system
spec:
  addresses:
    - 192.0.2.100-192.0.2.110
    - 2001:db8::100/124
---
apiVersion: metallb.io/v1beta1
kind: L2Advertisement
metadata:
  name: lab
  namespace: metallb-system
---
apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: default
spec:
  type: LoadBalancer
  externalTrafficPolicy: {policy}
  selector:
    app: web
  ports:
    - port: 80
      targetPort: 8080
status:
  loadBalancer:
    ingress:
{ingress}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: web-abcde
  namespace: default
  labels:
    kubernetes.io/service-name: web
addressType: IPv4
endpoints:
  - addresses: ["10.244.1.7"]
    nodeName: {endpoint_node}
    conditions:
      ready: true
ports:
  - port: 8080
"#
    ));
    yaml
}
