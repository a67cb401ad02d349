//! The chart's pod, run for real.
//!
//! A user installs the Helm chart and the kubelet starts the speaker container
//! the rendered DaemonSet describes. This lab does what the kubelet would, as
//! far as this machine allows:
//!
//! - the chart is rendered with real Helm (`tests/chart/render.sh`, Helm v4
//!   through helm-python-sdk), against the stand-in API server, so Helm's
//!   `lookup` sees the live objects as on a real install or upgrade;
//! - the speaker container is taken from the rendered DaemonSet
//!   ([`pod_spec`]: `$(VAR)` expansion, downward-API values, volumes,
//!   security context, probes) and run with podman, from the image
//!   `cargo xtask image` built, in each node namespace of a two-node fabric;
//! - the pods reach the project's stand-in API server (`kube-standin`, in a
//!   host of its own on the bridge) with in-cluster configuration: HTTPS with
//!   the server's CA and a service-account token mounted where the kubelet
//!   mounts them, `KUBERNETES_SERVICE_HOST`/`_PORT` in the environment.
//!
//! Not a kubelet: no image pull (the archive is loaded), no cgroup limits,
//! the probes are called by the test rather than acted upon, and the
//! DaemonSet controller's work (creating Pod objects, rolling pods) is done
//! by the test in the order a `RollingUpdate` with `maxUnavailable: 1` would.

use std::{
    collections::BTreeSet,
    fs,
    net::{Ipv4Addr, SocketAddr},
    path::{Path, PathBuf},
    sync::Mutex,
    time::{Duration, Instant},
};

use k8s_openapi::api::core::v1::Secret;
use kube_standin::{Options, Server};
use serde_json::{json, Value};
use speaker_tests::{
    lab::{
        self,
        cluster::lab_cluster_yaml,
        command::{Process, Sink},
        http, podman, probe, Fabric, HostSpec, Spawn,
    },
    pod_spec::{self, ContainerRun, PodIdentity, PodmanTarget},
};

const RELEASE: &str = "lb";
/// The chart's default configuration namespace is its release namespace;
/// MetalLB's objects live in metallb-system, as in the supported deployment.
const NAMESPACE: &str = "metallb-system";
const NODES: [&str; 2] = ["node1", "node2"];
const CLIENT: &str = "client";
/// The stand-in API server's host: 192.0.2.250, port 6443 as a real one.
const API_HOST: &str = "api";
const API_PORT: u16 = 6443;
const VIP: &str = "192.0.2.100";
/// Where the kubelet mounts the service account (token, ca.crt, namespace).
const SERVICE_ACCOUNT_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
/// The service-account token the stand-in demands.
const TOKEN: &str = "chart-pod-lab-token";
/// Probes and requests every 50 ms: a restart that lost answers shows.
const PROBE_INTERVAL: Duration = Duration::from_millis(50);
const POD_START: Duration = Duration::from_secs(60);

/// The fabric, the API server, the files the kubelet would provide, and the
/// pods' podman processes.
struct PodLab {
    fabric: Fabric,
    api: Server,
    /// Holds the service-account directory and the pods' secret volumes.
    files: PathBuf,
    pods: Mutex<Vec<Pod>>,
    image: String,
}

/// One running pod: its podman process (`podman run --rm`, in the
/// foreground, its output in a log file).
struct Pod {
    node: String,
    name: String,
    container: String,
    process: Process,
    log: PathBuf,
}

impl PodLab {
    fn new() -> PodLab {
        let image = podman::speaker_image().to_owned();
        let mut specs = vec![HostSpec::new(API_HOST).v4("192.0.2.250")];
        specs.extend(
            NODES
                .iter()
                .enumerate()
                .map(|(i, node)| HostSpec::numbered(node, 11 + i as u8)),
        );
        specs.push(HostSpec::numbered(CLIENT, 20));
        let fabric = Fabric::new(&specs);
        // XDP_TX on a veth in native mode needs an XDP program on the peer.
        fabric.attach_pass_through_ports();
        let cluster = lab_cluster_yaml(&NODES, &[VIP], "Cluster", NODES[0]);
        fabric.write_cluster_state(&cluster);
        let api_ns = fabric.host(API_HOST).ns.clone();
        let api = Server::start(Options {
            listen: SocketAddr::from(([192, 0, 2, 250], API_PORT)),
            netns: Some(Path::new("/run/netns").join(&api_ns)),
            tls: true,
            token: Some(TOKEN.to_owned()),
            preload: vec![fabric.cluster_state_path()],
            ..Options::default()
        })
        .unwrap_or_else(|e| panic!("starting the stand-in API server in {api_ns}: {e}"));
        api.create(json!({"apiVersion": "v1", "kind": "Namespace",
                          "metadata": {"name": NAMESPACE}}))
            .expect("creating the namespace");
        let files = fabric.run_dir.join("kubelet");
        let service_account = files.join("serviceaccount");
        fs::create_dir_all(&service_account).unwrap();
        fs::write(service_account.join("token"), TOKEN).unwrap();
        fs::write(
            service_account.join("ca.crt"),
            api.ca_pem().expect("the API server serves TLS"),
        )
        .unwrap();
        fs::write(service_account.join("namespace"), NAMESPACE).unwrap();
        PodLab {
            fabric,
            api,
            files,
            pods: Mutex::new(Vec::new()),
            image,
        }
    }

    /// The chart rendered with real Helm against the API server (`lookup`
    /// reads live objects), for an install or an upgrade, with `values`.
    fn render(&self, values: &Value, upgrade: bool) -> String {
        let ca = self.files.join("serviceaccount/ca.crt");
        let mut args = vec![
            "tests/chart/render.sh".to_owned(),
            "--release".into(),
            RELEASE.into(),
            "--namespace".into(),
            NAMESPACE.into(),
            "--values-json".into(),
            values.to_string(),
            "--apiserver".into(),
            self.api.url().to_owned(),
            "--token".into(),
            TOKEN.into(),
            "--ca-file".into(),
            ca.to_string_lossy().into_owned(),
        ];
        if upgrade {
            args.push("--upgrade".into());
        }
        let out = Spawn::tool("bash")
            .in_netns(&self.fabric.host(API_HOST).ns)
            .args(&args)
            .current_dir(lab::workspace_root())
            .run(Duration::from_secs(600));
        assert!(out.success(), "rendering the chart failed:\n{out}");
        out.stdout
    }

    /// Creates (or replaces) every rendered Secret in the API server, as
    /// `helm install`/`upgrade` would; returns the memberlist Secret.
    fn apply_secrets(&self, rendered: &str) -> Secret {
        let mut memberlist = None;
        for document in rendered.split("\n---\n") {
            let Ok(object) = serde_yaml_ng::from_str::<Value>(document) else {
                continue;
            };
            if object["kind"] != "Secret" {
                continue;
            }
            let name = object["metadata"]["name"].as_str().unwrap().to_owned();
            let _ = self.api.delete("v1", "Secret", Some(NAMESPACE), &name);
            let created = self
                .api
                .create(object)
                .unwrap_or_else(|e| panic!("creating Secret {name}: {e}"));
            if name.ends_with("-memberlist") {
                memberlist = Some(serde_json::from_value(created).expect("a Secret"));
            }
        }
        memberlist.expect("the chart renders a memberlist Secret by default")
    }

    fn identity(&self, node: &str) -> PodIdentity {
        let host = self.fabric.host(node);
        PodIdentity {
            node_name: node.to_owned(),
            pod_name: format!("{RELEASE}-xdp-speaker-{node}"),
            namespace: NAMESPACE.to_owned(),
            pod_ip: host.v4.expect("nodes have IPv4").to_string(),
            pod_uid: format!("00000000-0000-4000-8000-0000000000{:02x}", host.name.len()),
        }
    }

    /// The Pod object the DaemonSet controller would create (the speakers
    /// find their gossip peers by the pod labels), with the node's address.
    fn register_pod(&self, rendered: &str, identity: &PodIdentity) {
        let labels = pod_spec::pod_labels(rendered).expect("the DaemonSet's pod labels");
        let owner = self.register_daemonset(rendered);
        let _ = self
            .api
            .delete("v1", "Pod", Some(NAMESPACE), &identity.pod_name);
        self.api
            .create(json!({
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": identity.pod_name, "namespace": NAMESPACE,
                             "uid": identity.pod_uid, "labels": labels,
                             "ownerReferences": [owner]},
                "spec": {"nodeName": identity.node_name, "hostNetwork": true,
                         "containers": [{"name": "speaker", "image": self.image}]},
                "status": {"phase": "Running", "podIP": identity.pod_ip,
                           "hostIP": identity.pod_ip},
            }))
            .expect("creating the Pod object");
    }

    /// The rendered DaemonSet as the API server holds it (created at the
    /// first pod, its spec replaced on an upgrade), and the controller
    /// reference its pods carry: at SIGTERM a speaker asks for it to tell a
    /// restart from a real stop.
    fn register_daemonset(&self, rendered: &str) -> Value {
        let daemonset = pod_spec::daemonset(rendered).expect("the rendered DaemonSet");
        let name = daemonset
            .metadata
            .name
            .clone()
            .expect("the DaemonSet's name");
        let mut object = serde_json::to_value(&daemonset).expect("the DaemonSet as JSON");
        object["metadata"]["namespace"] = json!(NAMESPACE);
        let stored = match self
            .api
            .get("apps/v1", "DaemonSet", Some(NAMESPACE), &name)
            .expect("reading the DaemonSet")
        {
            Some(_) => self
                .api
                .patch(
                    kube_standin::Part::Object,
                    "apps/v1",
                    "DaemonSet",
                    Some(NAMESPACE),
                    &name,
                    json!({"spec": object["spec"]}),
                )
                .expect("updating the DaemonSet"),
            None => self.api.create(object).expect("creating the DaemonSet"),
        };
        json!({"apiVersion": "apps/v1", "kind": "DaemonSet", "name": name,
               "uid": stored["metadata"]["uid"], "controller": true})
    }

    /// The speaker container of `rendered` for `node`, as the kubelet
    /// resolves it.
    fn container(&self, rendered: &str, node: &str) -> ContainerRun {
        pod_spec::speaker_container(rendered, &self.identity(node))
            .unwrap_or_else(|e| panic!("the chart's speaker container for {node}: {e:#}"))
    }

    /// The `podman run` arguments of `container` on `node`, with the
    /// kubelet's additions (service account, API server address).
    fn podman_args(&self, container: &ContainerRun, node: &str, name: &str) -> Vec<String> {
        let host = self.fabric.host(node);
        let bpffs = host.pin_dir.clone();
        fs::create_dir_all(&bpffs).unwrap();
        let mut host_dirs = std::collections::BTreeMap::new();
        for mount in &container.mounts {
            let dir = match &mount.source {
                pod_spec::VolumeSource::HostPath { path, .. } if path == "/sys/fs/bpf" => {
                    bpffs.clone()
                }
                pod_spec::VolumeSource::Secret {
                    secret_name, items, ..
                } => self.secret_volume(node, secret_name, items),
                other => panic!("the lab cannot provide volume {other:?}"),
            };
            host_dirs.insert(mount.volume.clone(), dir);
        }
        let target = PodmanTarget {
            netns: host.ns.clone(),
            host_dirs,
            name: Some(name.to_owned()),
            image: None,
            extra: vec![
                "--volume".into(),
                format!(
                    "{}:{SERVICE_ACCOUNT_DIR}:ro",
                    self.files.join("serviceaccount").display()
                ),
                "--env".into(),
                "KUBERNETES_SERVICE_HOST=192.0.2.250".into(),
                "--env".into(),
                format!("KUBERNETES_SERVICE_PORT={API_PORT}"),
            ],
        };
        container
            .podman_args(&target)
            .unwrap_or_else(|e| panic!("podman arguments for {node}: {e:#}"))
    }

    /// The files of Secret `name` (from the API server, as the kubelet reads
    /// it) in a directory for `node`.
    fn secret_volume(&self, node: &str, name: &str, items: &[(String, String)]) -> PathBuf {
        let object = self
            .api
            .get("v1", "Secret", Some(NAMESPACE), name)
            .expect("reading a Secret")
            .unwrap_or_else(|| panic!("Secret {name} is not in the API server"));
        let secret: Secret = serde_json::from_value(object).expect("a Secret");
        let data = secret.data.unwrap_or_default();
        let dir = self.files.join(format!("{node}-{name}"));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        // No items: every key, under its own name (as the kubelet does).
        let every_key: Vec<(String, String)> =
            data.keys().map(|key| (key.clone(), key.clone())).collect();
        let items = if items.is_empty() { &every_key } else { items };
        for (key, path) in items {
            let value = data
                .get(key)
                .unwrap_or_else(|| panic!("Secret {name} has no key {key}"));
            fs::write(dir.join(path), &value.0).unwrap();
        }
        dir
    }

    /// Starts the pod of `rendered` on `node` and returns its container name.
    fn start_pod(&self, rendered: &str, node: &str, generation: u32) -> String {
        let identity = self.identity(node);
        self.register_pod(rendered, &identity);
        let container = self.container(rendered, node);
        let name = format!("xdpspk-{}-{node}-{generation}", self.fabric.id);
        let args = self.podman_args(&container, node, &name);
        let log = self.fabric.log_dir.join(format!("{name}.log"));
        let file = fs::File::create(&log).unwrap();
        let process = Spawn::tool("podman")
            .args(&args)
            .stdout(Sink::File(file.try_clone().unwrap()))
            .stderr(Sink::File(file))
            .process();
        self.pods.lock().unwrap().push(Pod {
            node: node.to_owned(),
            name: identity.pod_name,
            container: name.clone(),
            process,
            log,
        });
        name
    }

    /// Stops the pod on `node` as the kubelet does (SIGTERM, then the
    /// grace period) and waits for its container to be gone.
    fn stop_pod(&self, node: &str) {
        let pod = {
            let mut pods = self.pods.lock().unwrap();
            let at = pods
                .iter()
                .position(|p| p.node == node)
                .unwrap_or_else(|| panic!("no pod runs on {node}"));
            pods.remove(at)
        };
        podman::run(&["stop", "--time", "30", &pod.container]).assert_success();
        let status = pod.process.wait(Duration::from_secs(40));
        assert!(
            status.is_some(),
            "the pod on {node} did not end after podman stop:\n{}",
            fs::read_to_string(&pod.log).unwrap_or_default()
        );
        let _ = pod.name;
    }

    fn pod_log(&self, node: &str) -> String {
        let pods = self.pods.lock().unwrap();
        let pod = pods.iter().find(|p| p.node == node).expect("a pod");
        fs::read_to_string(&pod.log).unwrap_or_default()
    }

    /// Waits until the pod on `node` answers its readiness probe (the
    /// chart's path and port) with 200; panics with its log otherwise.
    fn wait_ready(&self, rendered: &str, node: &str) {
        let container = self.container(rendered, node);
        let readiness = container
            .readiness
            .expect("the chart sets a readiness probe");
        let ns = self.fabric.host(node).ns.clone();
        let ready = lab::wait_for(POD_START, || {
            matches!(
                http::get_in(&ns, readiness.port, &readiness.path),
                Ok((200, _))
            )
            .then_some(())
        });
        assert!(
            ready.is_some(),
            "the pod on {node} never became ready on :{}{}; its log:\n{}",
            readiness.port,
            readiness.path,
            self.pod_log(node)
        );
    }

    fn container_pid(&self, container: &str) -> u32 {
        let out = podman::run(&["inspect", "--format", "{{.State.Pid}}", container]);
        assert!(out.success(), "podman inspect {container}:\n{out}");
        out.stdout.trim().parse().expect("a pid")
    }

    /// The node elected for the VIP, by `speaker election` over the same
    /// objects with both speakers alive.
    fn expected_owner(&self) -> String {
        let path = self.fabric.cluster_state_path();
        let out = self.fabric.speaker_local(&[
            "election",
            "--cluster-state",
            &path.to_string_lossy(),
            "--members",
            &NODES.join(","),
            "--json",
        ]);
        assert!(out.success(), "speaker election:\n{out}");
        let election: Value = serde_json::from_str(&out.stdout).expect("election JSON");
        election["services"]
            .as_array()
            .and_then(|services| services.iter().find(|s| s["name"] == "web"))
            .and_then(|service| service["elected_node"].as_str())
            .unwrap_or_else(|| panic!("no winner for {VIP} in {election:#}"))
            .to_owned()
    }

    /// Waits until the API server holds a ServiceL2Status for the Service
    /// naming `node`.
    fn wait_status_on(&self, node: &str) {
        let found = lab::wait_for(Duration::from_secs(30), || {
            self.api
                .list("metallb.io/v1beta1", "ServiceL2Status", Some(NAMESPACE))
                .expect("listing ServiceL2Statuses")
                .into_iter()
                .any(|s| s["status"]["node"] == node && s["status"]["serviceName"] == "web")
                .then_some(())
        });
        assert!(
            found.is_some(),
            "no ServiceL2Status names {node}; statuses: {:#?}\nlogs:\n{}",
            self.api
                .list("metallb.io/v1beta1", "ServiceL2Status", Some(NAMESPACE)),
            NODES
                .iter()
                .map(|n| self.pod_log(n))
                .collect::<Vec<_>>()
                .join("\n")
        );
    }

    /// Sends `count` ARP requests for the VIP from the client; the MACs that
    /// answered each.
    fn probe_vip(&self, count: usize) -> Vec<BTreeSet<String>> {
        let mut prober = self
            .fabric
            .arp_prober(CLIENT, VIP.parse::<Ipv4Addr>().unwrap());
        prober
            .series(count, Duration::from_millis(200))
            .expect("probing the VIP")
            .into_iter()
            .map(|p| p.macs())
            .collect()
    }

    /// `speaker maps --json` over the pins of the pod on `node` (read from
    /// the host, as an operator would with the host's speaker binary).
    fn pod_maps(&self, node: &str) -> Value {
        let pin_dir = self.fabric.host(node).pin_dir.join("xdp-speaker");
        let out = Spawn::speaker()
            .args(["maps", "--json", "--pin-dir", &pin_dir.to_string_lossy()])
            .run(Duration::from_secs(30));
        assert!(out.success(), "speaker maps on {node}'s pins:\n{out}");
        serde_json::from_str(&out.stdout).expect("maps JSON")
    }
}

impl Drop for PodLab {
    fn drop(&mut self) {
        for pod in self.pods.lock().unwrap().drain(..) {
            let _ = podman::run(&["rm", "--force", "--time", "0", &pod.container]);
            let _ = pod.process.kill();
        }
    }
}

/// The chart's values for the lab: the default image and everything else
/// as installed, except what the lab cannot give (no busybox image to pull
/// for the init container: the lab mounts the bpffs itself, as the init
/// container would).
fn install_values() -> Value {
    json!({"speaker": {"bpffs": {"mountInit": {"enabled": false}}}})
}

/// Effective capabilities of process `pid`, as `CAP_*` names.
fn effective_capabilities(pid: u32) -> BTreeSet<String> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc/PID/status");
    let mask = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .map(|hex| u64::from_str_radix(hex.trim(), 16).expect("a hex mask"))
        .expect("a CapEff line");
    caps::all()
        .into_iter()
        .filter(|c| mask & c.bitmask() != 0)
        .map(|c| c.to_string())
        .collect()
}

#[test]
fn chart_pods_run_announce_restart_and_upgrade() {
    let lab = PodLab::new();
    let rendered = lab.render(&install_values(), false);
    let installed_key = lab.apply_secrets(&rendered);

    // A pod without one of the chart's capabilities stops at once, with one
    // line naming it (the kubelet would restart it; the operator reads why).
    let mut crippled = lab.container(&rendered, NODES[1]);
    let dropped = crippled
        .security
        .add
        .pop()
        .expect("the chart adds capabilities");
    let args = lab.podman_args(
        &crippled,
        NODES[1],
        &format!("xdpspk-{}-crippled", lab.fabric.id),
    );
    let out = Spawn::tool("podman")
        .args(&args)
        .run(Duration::from_secs(60));
    assert!(
        !out.success(),
        "a pod without CAP_{dropped} kept running:\n{out}"
    );
    let errors: Vec<&str> = out
        .stderr
        .lines()
        .chain(out.stdout.lines())
        .filter(|l| l.contains("error"))
        .collect();
    assert_eq!(errors.len(), 1, "not one error line:\n{out}");
    assert!(
        errors[0].contains(&format!("CAP_{dropped}")),
        "the error does not name CAP_{dropped}: {}",
        errors[0]
    );

    // The pods as the chart describes them.
    for node in NODES {
        lab.start_pod(&rendered, node, 1);
    }
    for node in NODES {
        lab.wait_ready(&rendered, node);
        let container = lab.container(&rendered, node);
        let liveness = container.liveness.clone().expect("a liveness probe");
        let (code, body) = http::get_in(&lab.fabric.host(node).ns, liveness.port, &liveness.path)
            .expect("the liveness probe answers");
        assert_eq!(code, 200, "liveness on {node}: {body}");
        let wanted: BTreeSet<String> = container.capabilities().unwrap().into_iter().collect();
        let name = lab
            .pods
            .lock()
            .unwrap()
            .iter()
            .find(|p| p.node == node)
            .unwrap()
            .container
            .clone();
        let have = effective_capabilities(lab.container_pid(&name));
        assert_eq!(
            have, wanted,
            "the pod on {node} runs with other capabilities than the chart's"
        );
    }

    // The elected node announces: status in the API server, answers on the wire.
    let owner = lab.expected_owner();
    let owner_mac = lab.fabric.host(&owner).mac.clone();
    lab.wait_status_on(&owner);
    let answered = lab::wait_for(Duration::from_secs(20), || {
        let rounds = lab.probe_vip(3);
        rounds
            .iter()
            .all(|macs| *macs == BTreeSet::from([owner_mac.clone()]))
            .then_some(rounds)
    });
    assert!(
        answered.is_some(),
        "the client is not answered by {owner} ({owner_mac}) alone: {:?}",
        lab.probe_vip(3)
    );

    // A container restart of the owner: the pins (maps, XDP link) are the
    // host's, so answering never stops and the counters carry on.
    let before =
        lab::vip_answered(&lab.pod_maps(&owner), VIP).expect("the VIP in the owner's maps");
    let probing = lab
        .fabric
        .arp_prober(CLIENT, VIP.parse().unwrap())
        .spawn(PROBE_INTERVAL);
    lab.stop_pod(&owner);
    let restarted = Instant::now();
    lab.start_pod(&rendered, &owner, 2);
    lab.wait_ready(&rendered, &owner);
    let back = probing.wait_answer_from(&owner_mac, restarted, Duration::from_secs(30));
    std::thread::sleep(Duration::from_millis(500));
    let series = probing.stop();
    assert!(
        back.is_some(),
        "{owner} never answered again after its restart"
    );
    let settled: Vec<_> = series
        .probes
        .iter()
        .filter(|p| p.sent + PROBE_INTERVAL * 4 < Instant::now())
        .collect();
    let lost = probe::unanswered(settled.iter().copied());
    assert!(
        lost.is_empty(),
        "{} of {} probes unanswered during the owner's restart: {lost:?}",
        lost.len(),
        settled.len()
    );
    let other_macs = settled
        .iter()
        .filter(|p| p.answers.iter().any(|(mac, _)| *mac != owner_mac))
        .count();
    eprintln!(
        "owner {owner} restarted: {} probes every {PROBE_INTERVAL:?}, none lost, {other_macs} \
         answered by the other node meanwhile; answering again after {:?}",
        settled.len(),
        back.map(|(_, at)| at - restarted).unwrap_or_default()
    );
    // The chart's `onStop: auto` found the DaemonSet selecting the node: a
    // restart stop, so no other node took over meanwhile.
    assert_eq!(
        other_macs,
        0,
        "another node answered during the owner's restart (ownership moved):\n{}",
        lab.pod_log(&owner)
    );
    let after = lab::vip_answered(&lab.pod_maps(&owner), VIP).expect("the VIP after the restart");
    assert!(
        after > before,
        "the answered counter restarted ({before} -> {after}): pins lost"
    );

    // `helm upgrade` with changed values: the memberlist key is kept (Helm's
    // lookup reads the live Secret), and the rolled pods still agree.
    let values = json!({"speaker": {"bpffs": {"mountInit": {"enabled": false}},
                                    "logLevel": "debug", "gratuitousInterval": 30}});
    let upgraded = lab.render(&values, true);
    let upgraded_key = lab.apply_secrets(&upgraded);
    assert_eq!(
        upgraded_key.data, installed_key.data,
        "helm upgrade rendered a new memberlist key: old and new pods could not gossip"
    );
    let new_args = lab.container(&upgraded, NODES[0]).args;
    assert!(
        new_args.iter().any(|a| a == "--gratuitous-interval=30"),
        "the upgraded DaemonSet does not carry the changed value: {new_args:?}"
    );
    for node in NODES {
        lab.stop_pod(node);
        lab.start_pod(&upgraded, node, 3);
        lab.wait_ready(&upgraded, node);
    }
    lab.wait_status_on(&owner);
    let answered = lab::wait_for(Duration::from_secs(20), || {
        lab.probe_vip(3)
            .iter()
            .all(|macs| *macs == BTreeSet::from([owner_mac.clone()]))
            .then_some(())
    });
    assert!(
        answered.is_some(),
        "after the upgrade the client is not answered by {owner} alone: {:?}\n{}",
        lab.probe_vip(3),
        lab.pod_log(&owner)
    );
}
