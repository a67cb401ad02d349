//! The speaker container of a rendered Helm chart, as a kubelet would start it,
//! and the `podman run` that starts the same thing in a lab.
//!
//! [`speaker_container`] takes the chart's rendered manifests (several YAML
//! documents, as `helm template` prints them) and resolves what the kubelet
//! resolves before it asks the runtime for a container: `$(VAR)` references in
//! the arguments, downward-API environment values (from a [`PodIdentity`]),
//! volume mounts against the pod's volumes, the pod and container security
//! contexts, and probe ports named after container ports.
//! [`ContainerRun::podman_args`] turns the result into `podman` arguments for
//! a lab whose "node" is a network namespace.
//!
//! Only what the chart uses is supported; anything else is refused with a
//! one-line error rather than silently dropped, so a chart change that the
//! lab cannot reproduce is noticed.

use std::{
    collections::{BTreeMap, HashMap},
    path::PathBuf,
};

use anyhow::{anyhow, bail, Context, Result};
use k8s_openapi::{
    api::{
        apps::v1::DaemonSet,
        core::v1::{Container, HTTPGetAction, PodSpec, Probe, Volume},
    },
    apimachinery::pkg::util::intstr::IntOrString,
};
use serde::Deserialize;

/// Name of the speaker's container in the chart's DaemonSet.
pub const SPEAKER_CONTAINER: &str = "speaker";

/// What the API server and the scheduler fill in for one pod: the values the
/// downward API hands to the container.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodIdentity {
    pub node_name: String,
    pub pod_name: String,
    pub namespace: String,
    /// With hostNetwork, the node's address (status.podIP = status.hostIP).
    pub pod_ip: String,
    pub pod_uid: String,
}

/// Where a mounted volume's content comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VolumeSource {
    /// A directory (or file) of the node; `kind` is the hostPath `type`.
    HostPath { path: String, kind: Option<String> },
    /// Keys of a Secret written as files: (key, file path in the volume).
    /// No items: every key, each under its own name (`items` is empty).
    Secret {
        secret_name: String,
        items: Vec<(String, String)>,
        /// File mode of the files, e.g. 0o400.
        default_mode: Option<i32>,
    },
    /// Keys of a ConfigMap written as files, as for a Secret.
    ConfigMap {
        name: String,
        items: Vec<(String, String)>,
        default_mode: Option<i32>,
    },
    /// A fresh empty directory per pod.
    EmptyDir,
}

/// How a mount sees mounts made later on either side.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Propagation {
    /// Kubernetes' default: neither side sees the other's later mounts.
    #[default]
    None,
    /// Later host mounts appear in the container (rslave).
    HostToContainer,
    /// Both ways (rshared); Kubernetes allows it in privileged containers only.
    Bidirectional,
}

/// One volume mount, resolved against the pod's volumes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mount {
    /// The pod volume's name: the key of the host directories a lab provides.
    pub volume: String,
    pub source: VolumeSource,
    pub container_path: String,
    pub sub_path: Option<String>,
    pub read_only: bool,
    pub propagation: Propagation,
}

/// The container's effective security settings (container over pod).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Security {
    pub privileged: bool,
    /// Capabilities as the chart spells them (`BPF`, `NET_ADMIN`), without `CAP_`.
    pub add: Vec<String>,
    pub drop: Vec<String>,
    pub read_only_root_filesystem: bool,
    pub run_as_user: Option<i64>,
    pub run_as_group: Option<i64>,
    pub allow_privilege_escalation: Option<bool>,
    /// The seccompProfile type (container over pod): Unconfined,
    /// RuntimeDefault or Localhost; None leaves the kubelet's default.
    pub seccomp_profile: Option<String>,
}

/// An HTTP GET probe with its port resolved to a number.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpProbe {
    pub path: String,
    pub port: u16,
    pub scheme: String,
    pub initial_delay_seconds: i32,
    pub period_seconds: i32,
    pub timeout_seconds: i32,
    pub failure_threshold: i32,
}

/// The speaker container as the kubelet starts it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerRun {
    pub image: String,
    /// Replaces the image's ENTRYPOINT when not empty (the image's CMD is then
    /// ignored too).
    pub command: Vec<String>,
    /// With `$(VAR)` references expanded.
    pub args: Vec<String>,
    /// In the container spec's order, downward-API values filled in.
    pub env: Vec<(String, String)>,
    pub mounts: Vec<Mount>,
    pub security: Security,
    pub host_network: bool,
    pub liveness: Option<HttpProbe>,
    pub readiness: Option<HttpProbe>,
}

/// Options of a lab `podman run` that the pod spec cannot know.
#[derive(Clone, Debug, Default)]
pub struct PodmanTarget {
    /// The network namespace under /run/netns standing in for the node's.
    pub netns: String,
    /// Host directory (or file) for each pod volume, by volume name.
    pub host_dirs: BTreeMap<String, PathBuf>,
    /// `--name` of the container.
    pub name: Option<String>,
    /// The image to run instead of the spec's (e.g. `localhost/...`).
    pub image: Option<String>,
    /// More `podman run` options, before the image: what the kubelet adds
    /// that the pod spec does not say (the service-account volume, the
    /// `KUBERNETES_SERVICE_*` variables).
    pub extra: Vec<String>,
}

/// Global podman options this machine kind needs: crun refuses its hybrid
/// cgroup layout, and systemd cgroup management is not available.
pub const PODMAN_GLOBAL: [&str; 3] = ["--runtime", "runc", "--cgroup-manager=cgroupfs"];
/// `podman run` cannot raise the default limits here: set them explicitly.
pub const PODMAN_ULIMITS: [&str; 4] = [
    "--ulimit",
    "nofile=1024:1024",
    "--ulimit",
    "nproc=1024:1024",
];

/// The speaker container of the chart's DaemonSet in `rendered` (multi-document
/// YAML), resolved for the pod `identity`.
pub fn speaker_container(rendered: &str, identity: &PodIdentity) -> Result<ContainerRun> {
    let daemonset = find_daemonset(rendered)?;
    let name = daemonset.metadata.name.clone().unwrap_or_default();
    let pod = daemonset
        .spec
        .and_then(|spec| spec.template.spec)
        .ok_or_else(|| anyhow!("DaemonSet {name} has no pod template spec"))?;
    let container = pod
        .containers
        .iter()
        .find(|c| c.name == SPEAKER_CONTAINER)
        .ok_or_else(|| anyhow!("DaemonSet {name} has no container named {SPEAKER_CONTAINER:?}"))?;
    resolve(&pod, container, identity)
}

/// The labels of the pods the chart's DaemonSet creates (what the speakers
/// select their gossip peers by).
pub fn pod_labels(rendered: &str) -> Result<BTreeMap<String, String>> {
    let daemonset = find_daemonset(rendered)?;
    daemonset
        .spec
        .and_then(|spec| spec.template.metadata)
        .and_then(|metadata| metadata.labels)
        .ok_or_else(|| anyhow!("the DaemonSet's pod template has no labels"))
}

/// The chart's DaemonSet in `rendered`, for a lab that stores it where the
/// speakers look at a stop (restart or handover).
pub fn daemonset(rendered: &str) -> Result<DaemonSet> {
    find_daemonset(rendered)
}

fn find_daemonset(rendered: &str) -> Result<DaemonSet> {
    let mut found = Vec::new();
    for document in serde_yaml_ng::Deserializer::from_str(rendered) {
        let mut value =
            serde_yaml_ng::Value::deserialize(document).context("rendered chart is not YAML")?;
        if value.get("kind").and_then(|k| k.as_str()) == Some("DaemonSet") {
            octal_file_modes(&mut value);
            found.push(value);
        }
    }
    match found.len() {
        1 => serde_yaml_ng::from_value(found.remove(0))
            .context("the rendered DaemonSet is not a valid apps/v1 DaemonSet"),
        n => bail!("expected one DaemonSet in the rendered chart, found {n}"),
    }
}

/// Kubernetes reads manifests as YAML 1.1, where a plain `0400` is octal
/// (256); serde_yaml_ng reads YAML 1.2, where it is the string "0400". File
/// modes are the integer fields charts write that way (`defaultMode: 0400`).
fn octal_file_modes(value: &mut serde_yaml_ng::Value) {
    use serde_yaml_ng::Value;
    match value {
        Value::Mapping(mapping) => {
            for (key, item) in mapping.iter_mut() {
                let is_mode = matches!(key.as_str(), Some("defaultMode" | "mode"));
                let octal = match item.as_str() {
                    Some(text) if is_mode && text.len() > 1 && text.starts_with('0') => {
                        i64::from_str_radix(&text[1..], 8).ok()
                    }
                    _ => None,
                };
                match octal {
                    Some(mode) => *item = Value::Number(mode.into()),
                    None => octal_file_modes(item),
                }
            }
        }
        Value::Sequence(items) => items.iter_mut().for_each(octal_file_modes),
        Value::Tagged(tagged) => octal_file_modes(&mut tagged.value),
        _ => {}
    }
}

fn resolve(pod: &PodSpec, container: &Container, identity: &PodIdentity) -> Result<ContainerRun> {
    let image = container
        .image
        .clone()
        .ok_or_else(|| anyhow!("container {} has no image", container.name))?;
    let env = resolve_env(pod, container, identity)?;
    let lookup: HashMap<&str, &str> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let expand_all = |items: &Option<Vec<String>>| -> Vec<String> {
        items
            .iter()
            .flatten()
            .map(|item| expand(item, &lookup))
            .collect()
    };
    Ok(ContainerRun {
        image,
        command: expand_all(&container.command),
        args: expand_all(&container.args),
        mounts: resolve_mounts(pod, container)?,
        security: resolve_security(pod, container),
        host_network: pod.host_network.unwrap_or(false),
        liveness: resolve_probe(
            container,
            container.liveness_probe.as_ref(),
            "livenessProbe",
        )?,
        readiness: resolve_probe(
            container,
            container.readiness_probe.as_ref(),
            "readinessProbe",
        )?,
        env,
    })
}

/// Expands `$(NAME)` from `vars` as the kubelet does (k8s.io/kubernetes
/// third_party/forked/golang/expansion): `$$` is a literal `$`, a reference
/// to an undefined variable stays as written, and any other `$` is literal.
pub fn expand(text: &str, vars: &HashMap<&str, &str>) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(inner) = after.strip_prefix('(') {
            match inner.find(')') {
                Some(end) => {
                    let name = &inner[..end];
                    match vars.get(name) {
                        Some(value) => out.push_str(value),
                        None => {
                            out.push_str("$(");
                            out.push_str(name);
                            out.push(')');
                        }
                    }
                    rest = &inner[end + 1..];
                }
                // An unterminated reference is kept as written.
                None => {
                    out.push_str("$(");
                    rest = inner;
                }
            }
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

fn resolve_env(
    pod: &PodSpec,
    container: &Container,
    identity: &PodIdentity,
) -> Result<Vec<(String, String)>> {
    if container.env_from.as_ref().is_some_and(|e| !e.is_empty()) {
        bail!(
            "container {}: envFrom is not supported by the pod-spec lab",
            container.name
        );
    }
    let mut env: Vec<(String, String)> = Vec::new();
    for var in container.env.iter().flatten() {
        let value = match (&var.value, &var.value_from) {
            (_, Some(source)) => {
                let field = source.field_ref.as_ref().ok_or_else(|| {
                    anyhow!(
                        "env {}: only fieldRef values are supported by the pod-spec lab",
                        var.name
                    )
                })?;
                downward_field(&field.field_path, pod, identity)
                    .with_context(|| format!("env {}", var.name))?
            }
            // A value may refer to variables defined before it.
            (Some(value), None) => {
                let earlier: HashMap<&str, &str> =
                    env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
                expand(value, &earlier)
            }
            (None, None) => String::new(),
        };
        // A later definition of the same name wins, as in the kubelet.
        env.retain(|(name, _)| name != &var.name);
        env.push((var.name.clone(), value));
    }
    Ok(env)
}

fn downward_field(path: &str, pod: &PodSpec, identity: &PodIdentity) -> Result<String> {
    Ok(match path {
        "spec.nodeName" => identity.node_name.clone(),
        "metadata.name" => identity.pod_name.clone(),
        "metadata.namespace" => identity.namespace.clone(),
        "metadata.uid" => identity.pod_uid.clone(),
        "status.podIP" | "status.podIPs" => identity.pod_ip.clone(),
        "status.hostIP" | "status.hostIPs" if pod.host_network == Some(true) => {
            identity.pod_ip.clone()
        }
        "spec.serviceAccountName" => pod.service_account_name.clone().unwrap_or_default(),
        other => bail!("fieldRef {other:?} is not supported by the pod-spec lab"),
    })
}

fn key_paths(items: &Option<Vec<k8s_openapi::api::core::v1::KeyToPath>>) -> Vec<(String, String)> {
    items
        .iter()
        .flatten()
        .map(|item| (item.key.clone(), item.path.clone()))
        .collect()
}

fn volume_source(volume: &Volume) -> Result<VolumeSource> {
    if let Some(host) = &volume.host_path {
        return Ok(VolumeSource::HostPath {
            path: host.path.clone(),
            kind: host.type_.clone().filter(|t| !t.is_empty()),
        });
    }
    if let Some(secret) = &volume.secret {
        return Ok(VolumeSource::Secret {
            secret_name: secret
                .secret_name
                .clone()
                .ok_or_else(|| anyhow!("volume {}: secret without secretName", volume.name))?,
            items: key_paths(&secret.items),
            default_mode: secret.default_mode,
        });
    }
    if let Some(config_map) = &volume.config_map {
        return Ok(VolumeSource::ConfigMap {
            name: config_map.name.clone(),
            items: key_paths(&config_map.items),
            default_mode: config_map.default_mode,
        });
    }
    if volume.empty_dir.is_some() {
        return Ok(VolumeSource::EmptyDir);
    }
    bail!(
        "volume {}: its type is not supported by the pod-spec lab",
        volume.name
    )
}

fn resolve_mounts(pod: &PodSpec, container: &Container) -> Result<Vec<Mount>> {
    container
        .volume_mounts
        .iter()
        .flatten()
        .map(|mount| {
            let volume = pod
                .volumes
                .iter()
                .flatten()
                .find(|v| v.name == mount.name)
                .ok_or_else(|| {
                    anyhow!(
                        "volumeMount {} at {}: the pod has no such volume",
                        mount.name,
                        mount.mount_path
                    )
                })?;
            let propagation = match mount.mount_propagation.as_deref() {
                None | Some("None") => Propagation::None,
                Some("HostToContainer") => Propagation::HostToContainer,
                Some("Bidirectional") => Propagation::Bidirectional,
                Some(other) => bail!("volumeMount {}: mountPropagation {other:?}", mount.name),
            };
            let source = volume_source(volume)?;
            // The kubelet always mounts Secret and ConfigMap volumes read-only.
            let read_only = mount.read_only.unwrap_or(false)
                || matches!(
                    source,
                    VolumeSource::Secret { .. } | VolumeSource::ConfigMap { .. }
                );
            Ok(Mount {
                volume: mount.name.clone(),
                source,
                container_path: mount.mount_path.clone(),
                sub_path: mount.sub_path.clone().filter(|p| !p.is_empty()),
                read_only,
                propagation,
            })
        })
        .collect()
}

fn resolve_security(pod: &PodSpec, container: &Container) -> Security {
    let pod_context = pod.security_context.as_ref();
    let context = container.security_context.as_ref();
    let capabilities = context.and_then(|c| c.capabilities.as_ref());
    let names = |list: Option<&Vec<String>>| -> Vec<String> {
        list.into_iter()
            .flatten()
            .map(|c| c.strip_prefix("CAP_").unwrap_or(c).to_owned())
            .collect()
    };
    Security {
        privileged: context.and_then(|c| c.privileged).unwrap_or(false),
        add: names(capabilities.and_then(|c| c.add.as_ref())),
        drop: names(capabilities.and_then(|c| c.drop.as_ref())),
        read_only_root_filesystem: context
            .and_then(|c| c.read_only_root_filesystem)
            .unwrap_or(false),
        run_as_user: context
            .and_then(|c| c.run_as_user)
            .or_else(|| pod_context.and_then(|c| c.run_as_user)),
        run_as_group: context
            .and_then(|c| c.run_as_group)
            .or_else(|| pod_context.and_then(|c| c.run_as_group)),
        allow_privilege_escalation: context.and_then(|c| c.allow_privilege_escalation),
        seccomp_profile: context
            .and_then(|c| c.seccomp_profile.as_ref())
            .or_else(|| pod_context.and_then(|c| c.seccomp_profile.as_ref()))
            .map(|p| p.type_.clone()),
    }
}

fn resolve_port(container: &Container, port: &IntOrString, probe: &str) -> Result<u16> {
    let number = match port {
        IntOrString::Int(n) => *n,
        IntOrString::String(name) => container
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.as_deref() == Some(name))
            .map(|p| p.container_port)
            .ok_or_else(|| {
                anyhow!(
                    "{probe}: port {name:?} is not a named port of {}",
                    container.name
                )
            })?,
    };
    u16::try_from(number)
        .ok()
        .filter(|n| *n != 0)
        .ok_or_else(|| anyhow!("{probe}: port {number} is out of range"))
}

fn resolve_probe(
    container: &Container,
    probe: Option<&Probe>,
    what: &str,
) -> Result<Option<HttpProbe>> {
    let Some(probe) = probe else {
        return Ok(None);
    };
    let HTTPGetAction {
        path, port, scheme, ..
    } = probe
        .http_get
        .as_ref()
        .ok_or_else(|| anyhow!("{what}: only httpGet probes are supported by the pod-spec lab"))?;
    // Defaults from the Kubernetes API reference (Probe).
    Ok(Some(HttpProbe {
        path: path.clone().unwrap_or_else(|| "/".to_owned()),
        port: resolve_port(container, port, what)?,
        scheme: scheme.clone().unwrap_or_else(|| "HTTP".to_owned()),
        initial_delay_seconds: probe.initial_delay_seconds.unwrap_or(0),
        period_seconds: probe.period_seconds.unwrap_or(10),
        timeout_seconds: probe.timeout_seconds.unwrap_or(1),
        failure_threshold: probe.failure_threshold.unwrap_or(3),
    }))
}

impl ContainerRun {
    /// The capabilities the container runs with, as `CAP_*` names: the
    /// added ones, after dropping ALL (refused when the spec does not drop
    /// ALL: the runtime's default set would then be unknown to the lab).
    pub fn capabilities(&self) -> Result<Vec<String>> {
        if !self.security.drop.iter().any(|c| c == "ALL") {
            bail!("the container does not drop ALL capabilities: its set depends on the runtime's defaults");
        }
        Ok(self
            .security
            .add
            .iter()
            .map(|c| format!("CAP_{c}"))
            .collect())
    }

    /// Arguments of `podman` that start this container in `target`'s network
    /// namespace: global options, `run`, the options, the image, the args.
    pub fn podman_args(&self, target: &PodmanTarget) -> Result<Vec<String>> {
        let mut args: Vec<String> = PODMAN_GLOBAL.iter().map(|s| s.to_string()).collect();
        args.push("run".into());
        args.push("--rm".into());
        if let Some(name) = &target.name {
            args.extend(["--name".into(), name.clone()]);
        }
        args.extend(PODMAN_ULIMITS.iter().map(|s| s.to_string()));
        if !self.host_network {
            bail!("the pod is not hostNetwork: the lab only runs pods in the node's namespace");
        }
        args.extend([
            "--network".into(),
            format!("ns:/run/netns/{}", target.netns),
        ]);
        if self.security.privileged {
            args.push("--privileged".into());
        } else {
            args.push("--cap-drop=ALL".into());
            for capability in self.capabilities()? {
                args.push(format!("--cap-add={capability}"));
            }
        }
        match self.security.seccomp_profile.as_deref() {
            // podman's own default profile stands in for the runtime's default
            // (and for the kubelet's Unconfined default: not the same, but the
            // lab runs what the chart sets explicitly).
            None | Some("RuntimeDefault") => {}
            Some("Unconfined") => {
                args.extend(["--security-opt".into(), "seccomp=unconfined".into()]);
            }
            Some(other) => bail!("seccompProfile {other:?} is not supported by the pod-spec lab"),
        }
        if self.security.allow_privilege_escalation == Some(false) {
            args.extend(["--security-opt".into(), "no-new-privileges".into()]);
        }
        if self.security.read_only_root_filesystem {
            args.push("--read-only".into());
        }
        // The kubelet leaves the image's USER alone unless runAsUser is set.
        match (self.security.run_as_user, self.security.run_as_group) {
            (Some(user), Some(group)) => args.extend(["--user".into(), format!("{user}:{group}")]),
            (Some(user), None) => args.extend(["--user".into(), user.to_string()]),
            (None, _) => {}
        }
        for (name, value) in &self.env {
            args.extend(["--env".into(), format!("{name}={value}")]);
        }
        for mount in &self.mounts {
            args.extend(["--volume".into(), volume_arg(mount, target)?]);
        }
        if !self.command.is_empty() {
            // A JSON array keeps every element one argv entry.
            let entrypoint = serde_json::to_string(&self.command).expect("strings");
            args.extend(["--entrypoint".into(), entrypoint]);
        }
        args.extend(target.extra.iter().cloned());
        args.push(target.image.clone().unwrap_or_else(|| self.image.clone()));
        args.extend(self.args.iter().cloned());
        Ok(args)
    }
}

fn volume_arg(mount: &Mount, target: &PodmanTarget) -> Result<String> {
    let host = target.host_dirs.get(&mount.volume).ok_or_else(|| {
        anyhow!(
            "no host directory given for volume {} (mounted at {})",
            mount.volume,
            mount.container_path
        )
    })?;
    let host = match &mount.sub_path {
        Some(sub) => host.join(sub),
        None => host.clone(),
    };
    let host = host
        .to_str()
        .filter(|h| !h.contains([':', ',']))
        .ok_or_else(|| anyhow!("host path {} cannot be a podman volume", host.display()))?;
    let mut options = vec![if mount.read_only { "ro" } else { "rw" }];
    match mount.propagation {
        Propagation::None => {}
        Propagation::HostToContainer => options.push("rslave"),
        Propagation::Bidirectional => options.push("rshared"),
    }
    Ok(format!(
        "{host}:{}:{}",
        mount.container_path,
        options.join(",")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `helm template lb charts/xdp-speaker --namespace lb-system`, defaults.
    const RENDERED: &str = include_str!("../fixtures/chart-default.yaml");

    fn identity() -> PodIdentity {
        PodIdentity {
            node_name: "node-a".into(),
            pod_name: "lb-xdp-speaker-x7k2p".into(),
            namespace: "lb-system".into(),
            pod_ip: "192.0.2.1".into(),
            pod_uid: "0d3c9a1e-5b1f-4c59-9d6e-2f1b8a7c6e10".into(),
        }
    }

    fn speaker() -> ContainerRun {
        speaker_container(RENDERED, &identity()).unwrap()
    }

    fn target() -> PodmanTarget {
        PodmanTarget {
            netns: "lab-node".into(),
            host_dirs: BTreeMap::from([
                ("bpffs".into(), PathBuf::from("/run/lab/bpffs")),
                ("memberlist-key".into(), PathBuf::from("/run/lab/key")),
            ]),
            name: Some("speaker-a".into()),
            image: None,
            extra: Vec::new(),
        }
    }

    #[test]
    fn image_and_command_from_the_chart() {
        let run = speaker();
        assert_eq!(run.image, "localhost/xdp-speaker:0.1.0");
        assert_eq!(run.command, ["speaker"]);
        assert_eq!(run.args.first().map(String::as_str), Some("run"));
        assert!(run.host_network);
    }

    #[test]
    fn args_expand_downward_api_env() {
        let run = speaker();
        assert!(
            run.args.contains(&"--node-name=node-a".to_owned()),
            "{:?}",
            run.args
        );
        assert!(!run.args.iter().any(|a| a.contains("$(")), "{:?}", run.args);
        assert!(run
            .args
            .contains(&"--pin-dir=/sys/fs/bpf/xdp-speaker".to_owned()));
        assert!(run
            .args
            .contains(&"--memberlist-key-file=/etc/xdp-speaker/memberlist/secretkey".to_owned()));
        // POD_IP reaches the speaker: it is the gossip's advertise address.
        assert!(run
            .args
            .contains(&"--memberlist-advertise-address=192.0.2.1".to_owned()));
    }

    #[test]
    fn env_from_the_downward_api() {
        let run = speaker();
        let env: HashMap<&str, &str> = run
            .env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(env["NODE_NAME"], "node-a");
        assert_eq!(env["POD_NAME"], "lb-xdp-speaker-x7k2p");
        assert_eq!(env["POD_NAMESPACE"], "lb-system");
        assert_eq!(env["POD_IP"], "192.0.2.1");
        assert_eq!(run.env.first().map(|(k, _)| k.as_str()), Some("NODE_NAME"));
    }

    #[test]
    fn mounts_resolved_against_volumes() {
        let run = speaker();
        let bpffs = run.mounts.iter().find(|m| m.volume == "bpffs").unwrap();
        assert_eq!(bpffs.container_path, "/sys/fs/bpf");
        assert_eq!(
            bpffs.source,
            VolumeSource::HostPath {
                path: "/sys/fs/bpf".into(),
                kind: Some("DirectoryOrCreate".into())
            }
        );
        assert_eq!(bpffs.propagation, Propagation::HostToContainer);
        assert!(!bpffs.read_only);
        let key = run
            .mounts
            .iter()
            .find(|m| m.volume == "memberlist-key")
            .unwrap();
        assert_eq!(key.container_path, "/etc/xdp-speaker/memberlist");
        assert!(key.read_only);
        let VolumeSource::Secret {
            secret_name,
            items,
            default_mode,
        } = &key.source
        else {
            panic!("memberlist-key is not a secret volume: {:?}", key.source);
        };
        assert_eq!(secret_name, "lb-xdp-speaker-memberlist");
        // The whole Secret: the primary key and any keys of a rotation.
        assert!(items.is_empty(), "{items:?}");
        // The template writes `defaultMode: 0400`, octal to Kubernetes' YAML 1.1.
        assert_eq!(*default_mode, Some(0o400));
    }

    #[test]
    fn security_context_of_the_chart() {
        let security = speaker().security;
        assert!(!security.privileged);
        assert_eq!(security.drop, ["ALL"]);
        assert_eq!(security.add, ["BPF", "PERFMON", "NET_ADMIN", "NET_RAW"]);
        assert!(security.read_only_root_filesystem);
        assert_eq!(security.run_as_user, None);
        assert_eq!(security.allow_privilege_escalation, Some(false));
        assert_eq!(security.seccomp_profile.as_deref(), Some("Unconfined"));
    }

    #[test]
    fn probes_resolve_named_ports() {
        let run = speaker();
        let liveness = run.liveness.unwrap();
        assert_eq!((liveness.path.as_str(), liveness.port), ("/healthz", 7472));
        assert_eq!(liveness.initial_delay_seconds, 10);
        let readiness = run.readiness.unwrap();
        assert_eq!((readiness.path.as_str(), readiness.port), ("/readyz", 7472));
        assert_eq!(readiness.scheme, "HTTP");
    }

    #[test]
    fn podman_arguments() {
        let args = speaker().podman_args(&target()).unwrap();
        let joined = args.join(" ");
        assert!(joined
            .starts_with("--runtime runc --cgroup-manager=cgroupfs run --rm --name speaker-a"));
        for expected in [
            "--ulimit nofile=1024:1024",
            "--ulimit nproc=1024:1024",
            "--network ns:/run/netns/lab-node",
            "--cap-drop=ALL --cap-add=CAP_BPF --cap-add=CAP_PERFMON --cap-add=CAP_NET_ADMIN --cap-add=CAP_NET_RAW",
            "--security-opt seccomp=unconfined --security-opt no-new-privileges",
            "--read-only",
            "--env NODE_NAME=node-a",
            "--volume /run/lab/bpffs:/sys/fs/bpf:rw,rslave",
            "--volume /run/lab/key:/etc/xdp-speaker/memberlist:ro",
            "--entrypoint [\"speaker\"] localhost/xdp-speaker:0.1.0 run --node-name=node-a",
        ] {
            assert!(joined.contains(expected), "missing {expected:?} in {joined}");
        }
        assert!(!args.iter().any(|a| a == "--privileged" || a == "--user"));
    }

    #[test]
    fn runtime_default_seccomp_and_sys_admin() {
        let yaml = RENDERED
            .replace("type: Unconfined", "type: RuntimeDefault")
            .replace(
                "                - PERFMON\n",
                "                - SYS_ADMIN\n",
            )
            .replace("            allowPrivilegeEscalation: false\n", "");
        assert_ne!(yaml, RENDERED, "fixture layout changed");
        let run = speaker_container(&yaml, &identity()).unwrap();
        assert_eq!(
            run.security.seccomp_profile.as_deref(),
            Some("RuntimeDefault")
        );
        assert_eq!(run.security.allow_privilege_escalation, None);
        let args = run.podman_args(&target()).unwrap();
        assert!(
            args.contains(&"--cap-add=CAP_SYS_ADMIN".to_owned()),
            "{args:?}"
        );
        assert!(!args.iter().any(|a| a == "--security-opt"), "{args:?}");
    }

    #[test]
    fn missing_host_dir_is_an_error() {
        let mut target = target();
        target.host_dirs.remove("memberlist-key");
        let error = speaker().podman_args(&target).unwrap_err().to_string();
        assert!(error.contains("memberlist-key"), "{error}");
    }

    #[test]
    fn privileged_and_run_as_user() {
        let mut run = speaker();
        run.security.privileged = true;
        run.security.run_as_user = Some(65534);
        run.security.allow_privilege_escalation = Some(false);
        run.security.seccomp_profile = Some("Localhost".into());
        let error = run.podman_args(&target()).unwrap_err().to_string();
        assert!(error.contains("Localhost"), "{error}");
        run.security.seccomp_profile = None;
        let args = run.podman_args(&target()).unwrap();
        assert!(args.contains(&"--privileged".to_owned()));
        assert!(!args.iter().any(|a| a.starts_with("--cap-")));
        let user = args.iter().position(|a| a == "--user").unwrap();
        assert_eq!(args[user + 1], "65534");
        assert!(args.contains(&"no-new-privileges".to_owned()));
    }

    #[test]
    fn expansion_rules() {
        let vars = HashMap::from([("A", "1"), ("B", "two")]);
        assert_eq!(expand("--x=$(A)", &vars), "--x=1");
        assert_eq!(expand("$(A)$(B)", &vars), "1two");
        assert_eq!(expand("$$(A)", &vars), "$(A)");
        assert_eq!(expand("$(MISSING)", &vars), "$(MISSING)");
        assert_eq!(expand("cost $5", &vars), "cost $5");
        assert_eq!(expand("$(A", &vars), "$(A");
        assert_eq!(expand("end$", &vars), "end$");
    }

    #[test]
    fn env_values_refer_to_earlier_variables() {
        let yaml = RENDERED.replace(
            "                  fieldPath: status.podIP\n",
            "                  fieldPath: status.podIP\n            - name: PEER\n              value: \"speaker=$(NODE_NAME),$(LATER)\"\n            - name: LATER\n              value: x\n",
        );
        assert_ne!(yaml, RENDERED, "fixture layout changed");
        let run = speaker_container(&yaml, &identity()).unwrap();
        let peer = run.env.iter().find(|(k, _)| k == "PEER").unwrap();
        assert_eq!(peer.1, "speaker=node-a,$(LATER)");
    }

    #[test]
    fn unsupported_sources_are_refused() {
        let yaml = RENDERED.replace(
            "fieldPath: metadata.name",
            "fieldPath: metadata.labels['x']",
        );
        assert_ne!(yaml, RENDERED);
        let error = format!("{:#}", speaker_container(&yaml, &identity()).unwrap_err());
        assert!(
            error.contains("POD_NAME") && error.contains("metadata.labels"),
            "{error}"
        );

        let yaml = RENDERED.replace("port: monitoring", "port: nosuchport");
        let error = speaker_container(&yaml, &identity())
            .unwrap_err()
            .to_string();
        assert!(error.contains("nosuchport"), "{error}");
    }

    #[test]
    fn needs_exactly_one_daemonset() {
        let error = speaker_container("kind: ConfigMap\n", &identity())
            .unwrap_err()
            .to_string();
        assert!(error.contains("found 0"), "{error}");
        let twice = format!("{RENDERED}\n---\n{RENDERED}");
        let error = speaker_container(&twice, &identity())
            .unwrap_err()
            .to_string();
        assert!(error.contains("found 2"), "{error}");
    }
}
