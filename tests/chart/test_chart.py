"""Tests of the Helm chart charts/xdp-speaker, offline.

The chart is rendered with helm-python-sdk (Helm v4 as a library) and the
rendered objects are parsed and checked as data: the DaemonSet the speaker runs
in, its arguments against the speaker's own command line (speaker/src/cli.rs),
RBAC, the memberlist Secret, the CRDs against the objects the speaker reads,
every manifest against Kubernetes 1.33's schemas (kubernetes-validate), the
values schema, and helm lint.

Run with tests/chart/run.sh.
"""

from __future__ import annotations

import base64
import copy
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import helm_python as helm
import jsonschema
import kubernetes_validate
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CHART_DIR = REPO / "charts" / "xdp-speaker"
CLI_RS = REPO / "speaker" / "src" / "cli.rs"
CAPABILITIES_RS = REPO / "speaker" / "src" / "dataplane" / "capabilities.rs"
DISCOVERY_RS = REPO / "speaker" / "src" / "interfaces" / "discovery.rs"
EXAMPLE_STATE = REPO / "docs" / "examples" / "iris-regression.yaml"

RELEASE = "lb"
NAMESPACE = "lb-system"
FULLNAME = "lb-xdp-speaker"
KUBE_VERSION = "1.33"
METRICS_PORT = 7472
PIN_DIR = "/sys/fs/bpf/xdp-speaker"

# Flags the chart passes that the membership work adds to `speaker run`; until
# they land in speaker/src/cli.rs they are allowed to be missing there.
PENDING_FLAGS: set[str] = set()

# Kinds whose schemas kubernetes-validate does not ship (Prometheus Operator).
NO_SCHEMA_GROUPS = {"monitoring.coreos.com"}

# Value sets rendered by the whole-chart checks (lint, schema, validation).
VALUE_SETS: dict[str, dict[str, Any]] = {
    "default": {},
    "memberlist-disabled": {"speaker": {"memberlist": {"enabled": False}}},
    "everything": {
        "loadBalancerClass": "xdp",
        "imagePullSecrets": [{"name": "registry"}],
        "crds": {"enabled": True},
        "serviceAccount": {"annotations": {"example.com/a": "b"}},
        "prometheus": {
            "scrapeAnnotations": True,
            "podMonitor": {"enabled": True, "interval": "30s", "additionalLabels": {"release": "prom"}},
            "serviceMonitor": {"enabled": True, "interval": "1m"},
        },
        "speaker": {
            "image": {"repository": "registry.example/xdp-speaker", "tag": "dev", "pullPolicy": "Always"},
            "logLevel": "debug",
            "configNamespace": "metallb-system",
            "memberlist": {"mlBindPort": 7947, "secretName": "gossip"},
            "excludeInterfaces": {"extra": ["^eth9$", "^br-.*"]},
            "ignoreExcludeLB": True,
            "requireNodeReady": True,
            "gratuitousInterval": 30,
            "deadManTimeout": 5,
            "xdpMode": "native",
            "metricsPort": 9472,
            "metricsBindAddress": "::",
            "nodeSelector": {"kubernetes.io/os": "linux"},
            "affinity": {
                "nodeAffinity": {
                    "requiredDuringSchedulingIgnoredDuringExecution": {
                        "nodeSelectorTerms": [
                            {"matchExpressions": [{"key": "lb", "operator": "Exists"}]}
                        ]
                    }
                }
            },
            "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "lb", "effect": "NoSchedule"}],
            "priorityClassName": "lb-critical",
            "podAnnotations": {"example.com/x": "y"},
            "podLabels": {"team": "net"},
            "resources": {"limits": {"memory": "128Mi"}},
            "extraArgs": ["--kubeconfig=/etc/kubeconfig"],
            "extraEnv": [{"name": "EXTRA", "value": "1"}],
        },
    },
    "privileged": {
        "speaker": {
            "privileged": True,
            "bpffs": {"mountInit": {"enabled": False}},
            "livenessProbe": {"enabled": False},
            "readinessProbe": {"enabled": False},
        }
    },
    "sys-admin-runtime-default": {
        "speaker": {"capabilities": ["SYS_ADMIN", "NET_ADMIN", "NET_RAW"], "seccompProfile": {"type": "RuntimeDefault"}}
    },
    "no-rbac-existing-sa": {"rbac": {"create": False}, "serviceAccount": {"create": False, "name": "speaker"}},
    "secure-metrics": {
        "prometheus": {
            "secureMetricsPort": 9120,
            "speakerMetricsTLSSecret": "speaker-metrics-tls",
            "serviceAccount": "prometheus-k8s",
            "namespace": "monitoring",
            "podMonitor": {
                "enabled": True,
                "authorization": {"type": "Bearer", "credentials": {"name": "scraper", "key": "token"}},
            },
            "serviceMonitor": {"enabled": True},
        }
    },
}


# ---------------------------------------------------------------- helpers


@pytest.fixture(scope="session")
def chart() -> helm.Chart:
    loaded = helm.Chart.load(CHART_DIR)
    yield loaded
    loaded.close()


class Rendered:
    """The objects of one render, by kind and name, and NOTES.txt."""

    def __init__(self, manifests: dict[str, str]):
        self.notes = ""
        self.objects: list[dict[str, Any]] = []
        for path, text in sorted(manifests.items()):
            if path.endswith("NOTES.txt"):
                self.notes = text
                continue
            for document in yaml.safe_load_all(text):
                if document:
                    self.objects.append(document)

    def all(self, kind: str) -> list[dict[str, Any]]:
        return [o for o in self.objects if o["kind"] == kind]

    def one(self, kind: str, name: str | None = None) -> dict[str, Any]:
        found = [o for o in self.all(kind) if name is None or o["metadata"]["name"] == name]
        assert len(found) == 1, f"expected one {kind} {name or ''}, found {[o['metadata']['name'] for o in found]}"
        return found[0]

    @property
    def daemonset(self) -> dict[str, Any]:
        return self.one("DaemonSet", FULLNAME)

    @property
    def pod(self) -> dict[str, Any]:
        return self.daemonset["spec"]["template"]["spec"]

    @property
    def speaker(self) -> dict[str, Any]:
        (container,) = [c for c in self.pod["containers"] if c["name"] == "speaker"]
        return container

    @property
    def args(self) -> list[str]:
        return self.speaker["args"]

    def flag(self, name: str) -> str | None:
        """The value of --name=VALUE, "" for a bare --name, None if absent."""
        values = [a for a in self.args if a == f"--{name}" or a.startswith(f"--{name}=")]
        assert len(values) <= 1, f"--{name} given {len(values)} times: {values}"
        if not values:
            return None
        return values[0].partition("=")[2]


def render(chart: helm.Chart, values: dict[str, Any] | None = None, namespace: str = NAMESPACE) -> Rendered:
    return Rendered(chart.render(values or {}, name=RELEASE, namespace=namespace, is_install=True))


def container_port(container: dict[str, Any], port: int | str) -> int:
    if isinstance(port, int):
        return port
    (found,) = [p["containerPort"] for p in container.get("ports", []) if p.get("name") == port]
    return found


def allows(rules: list[dict[str, Any]], group: str, resource: str, verb: str) -> bool:
    return any(
        group in rule.get("apiGroups", [])
        and (resource in rule.get("resources", []) or "*" in rule.get("resources", []))
        and (verb in rule.get("verbs", []) or "*" in rule.get("verbs", []))
        for rule in rules
    )


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def run_args_flags() -> dict[str, bool]:
    """`speaker run`'s long flags from cli.rs: name -> whether it takes a value.

    Read from the RunArgs struct, the structs it flattens (ElectionArgs,
    PinArgs) and Cli (whose global flags, e.g. --log-level, every subcommand
    takes). A plain `bool` field without `ArgAction::Set` is a switch.
    """
    source = CLI_RS.read_text()

    def struct_body(name: str) -> str:
        match = re.search(r"pub struct " + name + r" \{(.*?)\n\}", source, re.S)
        assert match, f"struct {name} not found in {CLI_RS}"
        return match.group(1)

    flags: dict[str, bool] = {}
    for struct in ("Cli", "RunArgs", "ElectionArgs", "PinArgs"):
        attributes: list[str] = []
        for line in struct_body(struct).splitlines():
            line = line.strip()
            if line.startswith("#["):
                attributes.append(line)
            elif line.startswith("pub "):
                field = re.match(r"pub (\w+): (.+),$", line)
                assert field, line
                attrs = " ".join(attributes)
                if re.search(r"\blong\b", attrs):
                    is_switch = field.group(2) == "bool" and "ArgAction::Set" not in attrs
                    flags[field.group(1).replace("_", "-")] = not is_switch
                attributes = []
            elif not line.startswith("///") and line:
                attributes = []
    return flags


def daemon_default_excludes() -> list[str]:
    source = DISCOVERY_RS.read_text()
    match = re.search(r"METALLB_EXCLUDED: \[&str; \d+\] = \[(.*?)\];", source, re.S)
    assert match, f"METALLB_EXCLUDED not found in {DISCOVERY_RS}"
    return re.findall(r'"([^"]*)"', match.group(1))


# ---------------------------------------------------------------- metadata


def test_chart_metadata(chart: helm.Chart) -> None:
    metadata = chart.metadata
    assert metadata["apiVersion"] == "v2"
    assert metadata["name"] == "xdp-speaker"
    assert metadata["version"] == "0.1.0"
    assert metadata["appVersion"] == "0.1.0"


# ---------------------------------------------------------------- default render


def test_default_daemonset(chart: helm.Chart) -> None:
    r = render(chart)
    ds = r.daemonset
    assert ds["metadata"]["namespace"] == NAMESPACE
    pod = r.pod
    assert pod["hostNetwork"] is True
    assert pod["dnsPolicy"] == "ClusterFirstWithHostNet"
    assert pod["serviceAccountName"] == FULLNAME
    # The selector must select the template's labels.
    labels = ds["spec"]["template"]["metadata"]["labels"]
    assert ds["spec"]["selector"]["matchLabels"].items() <= labels.items()

    speaker = r.speaker
    # The name `cargo xtask image` gives its image (xtask/src/image.rs).
    assert speaker["image"] == "localhost/xdp-speaker:0.1.0"
    assert speaker["command"] == ["speaker"]
    assert r.args[0] == "run"
    env = {e["name"]: e for e in speaker["env"]}
    assert env["NODE_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"
    # The speaker's Pod owns its ServiceL2Statuses (name and uid).
    assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert env["POD_UID"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.uid"
    assert "RUST_LOG" not in env
    assert r.flag("log-level") == "info"
    assert r.flag("log-format") == "json"
    assert env["POD_IP"]["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"
    # POD_IP is read: it is the address the other speakers gossip with.
    assert r.flag("memberlist-advertise-address") == "$(POD_IP)"
    assert r.flag("node-name") == "$(NODE_NAME)"
    assert "--memberlist=true" in r.args
    assert r.flag("memberlist-port") == "7946"
    assert r.flag("namespace") == NAMESPACE
    assert r.flag("mode") == "auto"
    assert r.flag("gratuitous-interval") == "0"
    assert r.flag("metrics-address") == f"0.0.0.0:{METRICS_PORT}"
    assert r.flag("pin-dir") == PIN_DIR
    # The daemon's defaults apply: MetalLB's exclude list and a 10 s dead-man switch.
    # A DaemonSet's SIGTERM is nearly always a rolling update: the speaker
    # asks the API server whether it is one (restart) or not (handover).
    assert r.flag("on-stop") == "auto"
    assert r.flag("restart-window") == "10"
    for absent in ("exclude-interfaces", "dead-man-timeout", "lb-class", "ignore-exclude-lb", "require-node-ready"):
        assert r.flag(absent) is None, absent
    ports = {(p["name"], p["protocol"]): p["containerPort"] for p in speaker["ports"]}
    assert ports == {
        ("monitoring", "TCP"): METRICS_PORT,
        ("memberlist-udp", "UDP"): 7946,
    }


def test_default_bpffs_mount(chart: helm.Chart) -> None:
    r = render(chart)
    volumes = {v["name"]: v for v in r.pod["volumes"]}
    mounts = {m["name"]: m for m in r.speaker["volumeMounts"]}
    bpffs = volumes["bpffs"]["hostPath"]
    assert bpffs == {"path": "/sys/fs/bpf", "type": "DirectoryOrCreate"}
    assert mounts["bpffs"]["mountPath"] == "/sys/fs/bpf"
    assert mounts["bpffs"].get("readOnly") is not True
    assert mounts["bpffs"]["mountPropagation"] in ("HostToContainer", "Bidirectional")
    # The pins go to the host's bpffs, so they outlive the pod.
    assert PIN_DIR.startswith(mounts["bpffs"]["mountPath"] + "/")

    (init,) = r.pod["initContainers"]
    assert init["securityContext"]["privileged"] is True
    (init_mount,) = init["volumeMounts"]
    assert init_mount["name"] == "bpffs"
    assert init_mount["mountPath"] == "/sys/fs/bpf"
    assert init_mount["mountPropagation"] == "Bidirectional"
    script = init["command"][-1]
    assert "mount -t bpf bpf /sys/fs/bpf" in script


def test_init_container_can_be_disabled(chart: helm.Chart) -> None:
    r = render(chart, {"speaker": {"bpffs": {"mountInit": {"enabled": False}}}})
    assert "initContainers" not in r.pod
    assert {v["name"] for v in r.pod["volumes"]} >= {"bpffs"}


def test_default_probes_on_metrics_port(chart: helm.Chart) -> None:
    r = render(chart)
    speaker = r.speaker
    live, ready = speaker["livenessProbe"]["httpGet"], speaker["readinessProbe"]["httpGet"]
    assert live["path"] == "/healthz"
    assert ready["path"] == "/readyz"
    assert container_port(speaker, live["port"]) == METRICS_PORT
    assert container_port(speaker, ready["port"]) == METRICS_PORT


def test_metrics_port_moves_probes_and_address(chart: helm.Chart) -> None:
    r = render(chart, {"speaker": {"metricsPort": 9100, "metricsBindAddress": "::"}})
    speaker = r.speaker
    assert r.flag("metrics-address") == "[::]:9100"
    assert container_port(speaker, speaker["livenessProbe"]["httpGet"]["port"]) == 9100
    assert container_port(speaker, speaker["readinessProbe"]["httpGet"]["port"]) == 9100


def test_default_capabilities(chart: helm.Chart) -> None:
    context = render(chart).speaker["securityContext"]
    assert context.get("privileged") is not True
    assert context["capabilities"]["drop"] == ["ALL"]
    assert set(context["capabilities"]["add"]) == {"BPF", "PERFMON", "NET_ADMIN", "NET_RAW"}
    assert context["readOnlyRootFilesystem"] is True
    # Runtime default profiles allow bpf() only with CAP_SYS_ADMIN.
    assert context["seccompProfile"] == {"type": "Unconfined"}
    assert context["allowPrivilegeEscalation"] is False


def speaker_daemon_capabilities() -> set[str]:
    """The capabilities `speaker run` checks for at start, from capabilities.rs."""
    source = CAPABILITIES_RS.read_text()
    needs = dict(re.findall(r"pub const (\w+): Need = Need \{\s*capability: Capability::(\w+),", source))
    match = re.search(r"pub const DAEMON: \[Need; \d+\] = \[([^\]]*)\];", source)
    assert needs and match, f"Need constants or DAEMON not found in {CAPABILITIES_RS}"
    names = [name.strip() for name in match.group(1).split(",") if name.strip()]
    return {re.sub(r"(?<!^)(?=[A-Z])", "_", needs[name]).upper() for name in names}


def test_default_capabilities_are_what_the_speaker_checks(chart: helm.Chart) -> None:
    added = set(render(chart).speaker["securityContext"]["capabilities"]["add"])
    assert speaker_daemon_capabilities() == added


def test_sys_admin_with_runtime_default_seccomp(chart: helm.Chart) -> None:
    context = render(chart, VALUE_SETS["sys-admin-runtime-default"]).speaker["securityContext"]
    assert context["seccompProfile"] == {"type": "RuntimeDefault"}
    # The API server refuses allowPrivilegeEscalation=false with CAP_SYS_ADMIN.
    assert "allowPrivilegeEscalation" not in context


def test_privileged_value(chart: helm.Chart) -> None:
    r = render(chart, VALUE_SETS["privileged"])
    context = r.speaker["securityContext"]
    assert context["privileged"] is True
    assert "livenessProbe" not in r.speaker and "readinessProbe" not in r.speaker


@pytest.mark.parametrize("value_set", sorted(VALUE_SETS))
def test_security_contexts_pass_api_validation_rules(chart: helm.Chart, value_set: str) -> None:
    """Rules the API server enforces that no JSON schema expresses."""
    r = render(chart, VALUE_SETS[value_set])
    for container in r.pod["containers"] + r.pod.get("initContainers", []):
        context = container.get("securityContext", {})
        privileged = context.get("privileged") is True
        for mount in container.get("volumeMounts", []):
            if mount.get("mountPropagation") == "Bidirectional":
                assert privileged, f"{container['name']}: Bidirectional propagation needs a privileged container"
        if context.get("allowPrivilegeEscalation") is False:
            added = context.get("capabilities", {}).get("add", [])
            assert not privileged, f"{container['name']}: allowPrivilegeEscalation=false with privileged"
            assert not {"SYS_ADMIN", "CAP_SYS_ADMIN"} & set(added), (
                f"{container['name']}: allowPrivilegeEscalation=false with CAP_SYS_ADMIN"
            )


def test_default_tolerations(chart: helm.Chart) -> None:
    tolerations = render(chart).pod["tolerations"]
    keys = {(t["key"], t["operator"], t["effect"]) for t in tolerations}
    assert ("node-role.kubernetes.io/control-plane", "Exists", "NoSchedule") in keys
    assert ("node-role.kubernetes.io/master", "Exists", "NoSchedule") in keys
    assert "tolerations" not in render(chart, {"speaker": {"tolerateMaster": False}}).pod


def test_default_rbac(chart: helm.Chart) -> None:
    # The exact set is checked against the speaker's calls by
    # tests/tests/rbac_calls.rs; here, the shape and least privilege.
    r = render(chart)
    cluster_rules = r.one("ClusterRole", FULLNAME)["rules"]
    for verb in ("list", "watch"):
        assert allows(cluster_rules, "", "nodes", verb), verb
        assert allows(cluster_rules, "discovery.k8s.io", "endpointslices", verb), verb
    for verb in ("get", "list", "watch"):
        assert allows(cluster_rules, "", "services", verb), verb
    for verb in ("create", "patch"):
        assert allows(cluster_rules, "events.k8s.io", "events", verb), verb
    # Nothing cluster-wide beyond that: no pods, no core events, no writes.
    assert not allows(cluster_rules, "", "pods", "list")
    assert not allows(cluster_rules, "", "events", "create")
    assert not allows(cluster_rules, "", "secrets", "get")
    assert not allows(cluster_rules, "", "services", "update")
    assert not allows(cluster_rules, "", "nodes", "get")

    role = r.one("Role", FULLNAME)
    assert role["metadata"]["namespace"] == NAMESPACE
    rules = role["rules"]
    for resource in ("ipaddresspools", "l2advertisements"):
        for verb in ("list", "watch"):
            assert allows(rules, "metallb.io", resource, verb)
        assert not allows(rules, "metallb.io", resource, "update")
    for verb in ("list", "watch", "create", "delete", "patch"):
        assert allows(rules, "metallb.io", "servicel2statuses", verb), verb
    assert not allows(rules, "metallb.io", "servicel2statuses", "update")
    assert allows(rules, "metallb.io", "servicel2statuses/status", "patch")
    assert not allows(rules, "metallb.io", "servicel2statuses/status", "update")

    pods = r.one("Role", f"{FULLNAME}-pods")
    assert pods["metadata"]["namespace"] == NAMESPACE
    # list: gossip peers; get (own Pod, its DaemonSet): restart or handover at a stop.
    assert pods["rules"] == [
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]},
        {"apiGroups": ["apps"], "resources": ["daemonsets"], "verbs": ["get"]},
    ]
    pods_binding = r.one("RoleBinding", f"{FULLNAME}-pods")
    assert pods_binding["roleRef"]["name"] == f"{FULLNAME}-pods"

    subject = {"kind": "ServiceAccount", "name": FULLNAME, "namespace": NAMESPACE}
    for kind, role_kind in (("ClusterRoleBinding", "ClusterRole"), ("RoleBinding", "Role")):
        binding = r.one(kind, FULLNAME)
        assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": role_kind, "name": FULLNAME}
        assert binding["subjects"] == [subject]
    assert r.one("ServiceAccount", FULLNAME)["metadata"]["namespace"] == NAMESPACE


def test_config_namespace_moves_role_and_flag(chart: helm.Chart) -> None:
    r = render(chart, {"speaker": {"configNamespace": "metallb-system"}})
    assert r.flag("namespace") == "metallb-system"
    assert r.one("Role", FULLNAME)["metadata"]["namespace"] == "metallb-system"
    binding = r.one("RoleBinding", FULLNAME)
    assert binding["metadata"]["namespace"] == "metallb-system"
    assert binding["subjects"][0]["namespace"] == NAMESPACE
    assert r.daemonset["metadata"]["namespace"] == NAMESPACE
    # The speaker pods are listed where they run, whatever --namespace says.
    assert r.one("Role", f"{FULLNAME}-pods")["metadata"]["namespace"] == NAMESPACE


def test_existing_service_account_without_rbac(chart: helm.Chart) -> None:
    r = render(chart, VALUE_SETS["no-rbac-existing-sa"])
    assert r.pod["serviceAccountName"] == "speaker"
    for kind in ("ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"):
        assert r.all(kind) == [], kind


# ---------------------------------------------------------------- memberlist


def test_generated_memberlist_key(chart: helm.Chart) -> None:
    r = render(chart)
    secret = r.one("Secret", f"{FULLNAME}-memberlist")
    assert secret["metadata"]["namespace"] == NAMESPACE
    # The file holds base64 text of 32 random bytes, a form --memberlist-key-file takes.
    key_text = base64.b64decode(secret["data"]["secretkey"], validate=True)
    assert len(base64.b64decode(key_text, validate=True)) == 32

    # The key file the speaker is told about is the Secret's key, mounted.
    volumes = {v["name"]: v for v in r.pod["volumes"]}
    mounts = {m["name"]: m for m in r.speaker["volumeMounts"]}
    source = volumes["memberlist-key"]["secret"]
    assert source["secretName"] == f"{FULLNAME}-memberlist"
    assert mounts["memberlist-key"]["readOnly"] is True
    # The whole Secret is the keyring: secretkey is the primary, every other
    # entry (secretkey-* during a rotation) an accepted key.
    assert "items" not in source
    key_dir = mounts["memberlist-key"]["mountPath"]
    assert r.flag("memberlist-keyring-dir") == key_dir
    assert r.flag("memberlist-key-file") == f"{key_dir}/secretkey"

    # Offline, lookup finds no Secret: every render makes a new key (documented).
    again = render(chart).one("Secret", f"{FULLNAME}-memberlist")["data"]["secretkey"]
    assert again != secret["data"]["secretkey"]


class FakeApiServer:
    """Just enough of an API server on loopback for Helm's `lookup` of Secrets."""

    def __init__(self) -> None:
        self.secrets: dict[tuple[str, str], dict[str, str]] = {}
        self.requests: list[str] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                path = self.path.split("?")[0]
                fake.requests.append(path)
                body: dict[str, Any] | None = None
                if path == "/api":
                    body = {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []}
                elif path == "/apis":
                    body = {"kind": "APIGroupList", "apiVersion": "v1", "groups": []}
                elif path == "/api/v1":
                    body = {
                        "kind": "APIResourceList",
                        "groupVersion": "v1",
                        "resources": [
                            {"name": "secrets", "singularName": "secret", "namespaced": True, "kind": "Secret", "verbs": ["get", "list"]}
                        ],
                    }
                else:
                    match = re.fullmatch(r"/api/v1/namespaces/([^/]+)/secrets/([^/]+)", path)
                    if match and match.groups() in fake.secrets:
                        namespace, name = match.groups()
                        body = {
                            "apiVersion": "v1",
                            "kind": "Secret",
                            "metadata": {"name": name, "namespace": namespace},
                            "data": fake.secrets[(namespace, name)],
                        }
                status = 200 if body else 404
                if body is None:
                    body = {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404}
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def api_server() -> FakeApiServer:
    server = FakeApiServer()
    yield server
    server.close()


def render_against(server: FakeApiServer, chart: helm.Chart, values: dict[str, Any]) -> Rendered:
    with helm.Config(kube_apiserver=server.url, namespace=NAMESPACE) as config:
        return Rendered(config.render(chart, values, name=RELEASE, namespace=NAMESPACE, is_upgrade=True))


def test_upgrade_keeps_the_memberlist_key(chart: helm.Chart, api_server: FakeApiServer) -> None:
    secret_name = f"{FULLNAME}-memberlist"
    kept = base64.b64encode(b"k" * 32).decode()
    api_server.secrets[(NAMESPACE, secret_name)] = {"secretkey": kept}
    for _ in range(2):
        secret = render_against(api_server, chart, {}).one("Secret", secret_name)
        assert secret["data"]["secretkey"] == kept
    assert f"/api/v1/namespaces/{NAMESPACE}/secrets/{secret_name}" in api_server.requests

    # In the middle of a rotation the Secret holds more keys: an upgrade keeps
    # every one of them, and the primary.
    rotating = {"secretkey": kept, "secretkey-next": base64.b64encode(b"n" * 32).decode()}
    api_server.secrets[(NAMESPACE, secret_name)] = dict(rotating)
    assert render_against(api_server, chart, {}).one("Secret", secret_name)["data"] == rotating

    # A release without the Secret yet (first install against a cluster) gets a new key.
    del api_server.secrets[(NAMESPACE, secret_name)]
    fresh = render_against(api_server, chart, {}).one("Secret", secret_name)["data"]["secretkey"]
    assert fresh != kept and len(base64.b64decode(base64.b64decode(fresh))) == 32


def test_existing_memberlist_secret(chart: helm.Chart) -> None:
    r = render(chart, {"speaker": {"memberlist": {"secretName": "gossip", "mlBindPort": 8946}}})
    assert r.all("Secret") == []
    volumes = {v["name"]: v for v in r.pod["volumes"]}
    assert volumes["memberlist-key"]["secret"]["secretName"] == "gossip"
    assert r.flag("memberlist-port") == "8946"
    assert {p["containerPort"] for p in r.speaker["ports"] if p["name"].startswith("memberlist")} == {8946}


def test_memberlist_profile_defaults_to_lan(chart: helm.Chart) -> None:
    assert render(chart).flag("memberlist-profile") == "lan"
    fast = render(chart, {"speaker": {"memberlist": {"profile": "fast"}}})
    assert fast.flag("memberlist-profile") == "fast"
    # Without memberlist there are no gossip timers to choose.
    assert render(chart, VALUE_SETS["memberlist-disabled"]).flag("memberlist-profile") is None


def test_memberlist_disabled(chart: helm.Chart) -> None:
    r = render(chart, VALUE_SETS["memberlist-disabled"])
    assert "--memberlist=false" in r.args
    assert "--memberlist=true" not in r.args
    assert r.flag("memberlist-port") is None
    assert r.flag("memberlist-key-file") is None
    assert r.flag("memberlist-advertise-address") is None
    assert r.all("Secret") == []
    assert "memberlist-key" not in {v["name"] for v in r.pod["volumes"]}
    assert "memberlist-key" not in {m["name"] for m in r.speaker["volumeMounts"]}
    assert not [p for p in r.speaker["ports"] if p["name"].startswith("memberlist")]
    assert "every node must run a speaker" in r.notes


RESTRICTIONS = {
    "nodeSelector": ({"nodeSelector": {"kubernetes.io/os": "linux"}}, "speaker.nodeSelector"),
    "required-node-affinity": (
        {
            "affinity": {
                "nodeAffinity": {
                    "requiredDuringSchedulingIgnoredDuringExecution": {
                        "nodeSelectorTerms": [{"matchExpressions": [{"key": "lb", "operator": "Exists"}]}]
                    }
                }
            }
        },
        "speaker.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution",
    ),
}


@pytest.mark.parametrize("restriction", sorted(RESTRICTIONS))
def test_node_restriction_without_memberlist_fails(chart: helm.Chart, restriction: str) -> None:
    speaker_values, named = RESTRICTIONS[restriction]
    values = {"speaker": {**speaker_values, "memberlist": {"enabled": False}}}
    with pytest.raises(helm.HelmRenderError) as failure:
        render(chart, values)
    message = str(failure.value)
    assert named in message
    assert "speaker.memberlist.enabled=false" in message
    assert "every node must run a speaker" in message


@pytest.mark.parametrize("restriction", sorted(RESTRICTIONS))
def test_node_restriction_with_memberlist_renders(chart: helm.Chart, restriction: str) -> None:
    speaker_values, _ = RESTRICTIONS[restriction]
    pod = render(chart, {"speaker": speaker_values}).pod
    for key, value in speaker_values.items():
        assert pod[key] == value


def test_preferred_node_affinity_without_memberlist_renders(chart: helm.Chart) -> None:
    affinity = {
        "nodeAffinity": {
            "preferredDuringSchedulingIgnoredDuringExecution": [
                {"weight": 1, "preference": {"matchExpressions": [{"key": "lb", "operator": "Exists"}]}}
            ]
        }
    }
    pod = render(chart, {"speaker": {"affinity": affinity, "memberlist": {"enabled": False}}}).pod
    assert pod["affinity"] == affinity


def test_gossip_is_udp_only_so_it_may_share_the_metrics_port_number(chart: helm.Chart) -> None:
    # The speaker never listens on TCP for gossip: the chart declares no TCP port for it.
    r = render(chart, {"speaker": {"metricsPort": 7946}})
    ports = {(p["name"], p["protocol"]): p["containerPort"] for p in r.speaker["ports"]}
    assert ports == {("monitoring", "TCP"): 7946, ("memberlist-udp", "UDP"): 7946}


# ---------------------------------------------------------------- flags from values


FLAG_CASES: list[tuple[str, dict[str, Any], str, str | None]] = [
    ("ignoreExcludeLB", {"speaker": {"ignoreExcludeLB": True}}, "ignore-exclude-lb", ""),
    ("requireNodeReady", {"speaker": {"requireNodeReady": True}}, "require-node-ready", ""),
    ("loadBalancerClass", {"loadBalancerClass": "example.com/xdp"}, "lb-class", "example.com/xdp"),
    ("gratuitousInterval", {"speaker": {"gratuitousInterval": 30}}, "gratuitous-interval", "30"),
    ("gratuitousInterval-fraction", {"speaker": {"gratuitousInterval": 2.5}}, "gratuitous-interval", "2.5"),
    ("deadManTimeout", {"speaker": {"deadManTimeout": 5}}, "dead-man-timeout", "5"),
    ("deadManTimeout-off", {"speaker": {"deadManTimeout": 0}}, "dead-man-timeout", "0"),
    ("onStop-keep", {"speaker": {"onStop": "keep"}}, "on-stop", "keep"),
    ("onStop-handover", {"speaker": {"onStop": "handover"}}, "on-stop", "handover"),
    ("onStop-restart", {"speaker": {"onStop": "restart"}}, "on-stop", "restart"),
    ("restartWindow", {"speaker": {"restartWindow": 30}}, "restart-window", "30"),
    ("xdpMode", {"speaker": {"xdpMode": "generic"}}, "mode", "generic"),
    (
        "exclude-extra",
        {"speaker": {"excludeInterfaces": {"extra": ["^eth9$"]}}},
        "exclude-interfaces",
        None,  # checked below: the default list plus the extra
    ),
    (
        "exclude-disabled-extra",
        {"speaker": {"excludeInterfaces": {"enabled": False, "extra": ["^eth9$", "^br-.*"]}}},
        "exclude-interfaces",
        "^eth9$,^br-.*",
    ),
    (
        "exclude-disabled",
        {"speaker": {"excludeInterfaces": {"enabled": False}}},
        "exclude-interfaces",
        "",
    ),
    ("extraArgs", {"speaker": {"extraArgs": ["--kubeconfig=/k"]}}, "kubeconfig", "/k"),
]


@pytest.mark.parametrize("case", FLAG_CASES, ids=[c[0] for c in FLAG_CASES])
def test_flag_from_values(chart: helm.Chart, case: tuple[str, dict[str, Any], str, str | None]) -> None:
    _, values, flag, expected = case
    r = render(chart, values)
    value = r.flag(flag)
    if expected is None:
        assert value == ",".join(daemon_default_excludes() + ["^eth9$"])
    else:
        assert value == expected


def test_exclude_interfaces_disabled_is_explicitly_empty(chart: helm.Chart) -> None:
    # The daemon reads an empty value as "exclude nothing"; no flag would mean its default.
    assert "--exclude-interfaces=" in render(chart, {"speaker": {"excludeInterfaces": {"enabled": False}}}).args


def test_chart_default_excludes_match_the_daemon(chart: helm.Chart) -> None:
    r = render(chart, {"speaker": {"excludeInterfaces": {"extra": ["^x$"]}}})
    chart_default = r.flag("exclude-interfaces").split(",")[:-1]
    assert chart_default == daemon_default_excludes()


@pytest.mark.parametrize("level", ["all", "debug", "info", "warn", "error", "none", "trace", "off"])
def test_log_level(chart: helm.Chart, level: str) -> None:
    # MetalLB's names go to the speaker unchanged: it maps them itself.
    assert render(chart, {"speaker": {"logLevel": level}}).flag("log-level") == level


@pytest.mark.parametrize("fmt", ["json", "text"])
def test_log_format(chart: helm.Chart, fmt: str) -> None:
    assert render(chart, {"speaker": {"logFormat": fmt}}).flag("log-format") == fmt


def test_every_flag_exists_in_speaker_run(chart: helm.Chart) -> None:
    """The chart passes only flags `speaker run` has, switches bare and values after '='."""
    known = run_args_flags()
    assert {"node-name", "memberlist", "namespace", "pin-dir"} <= known.keys()
    values = deep_merge(VALUE_SETS["everything"], {"speaker": {"nodeSelector": {}, "affinity": {}}})
    for value_set in (values, VALUE_SETS["default"], VALUE_SETS["memberlist-disabled"]):
        r = render(chart, value_set)
        for arg in r.args[1:]:
            assert arg.startswith("--"), arg
            name, has_value, _ = arg[2:].partition("=")
            if name not in known:
                assert name in PENDING_FLAGS, f"--{name} is not a flag of `speaker run` ({CLI_RS})"
                continue
            if known[name]:
                assert has_value, f"--{name} takes a value"
            else:
                assert not has_value, f"--{name} is a switch: clap rejects --{name}=VALUE"


def test_scheduling_and_image_values(chart: helm.Chart) -> None:
    values = deep_merge(VALUE_SETS["everything"], {"speaker": {"affinity": {}}})
    r = render(chart, values)
    pod, speaker = r.pod, r.speaker
    assert pod["nodeSelector"] == {"kubernetes.io/os": "linux"}
    assert pod["priorityClassName"] == "lb-critical"
    assert pod["imagePullSecrets"] == [{"name": "registry"}]
    assert {"key": "dedicated", "operator": "Equal", "value": "lb", "effect": "NoSchedule"} in pod["tolerations"]
    template = r.daemonset["spec"]["template"]["metadata"]
    assert template["annotations"]["example.com/x"] == "y"
    assert template["annotations"]["prometheus.io/port"] == "9472"
    assert template["labels"]["team"] == "net"
    assert speaker["image"] == "registry.example/xdp-speaker:dev"
    assert speaker["imagePullPolicy"] == "Always"
    # Helm merges maps: the default requests stay, the limit is added.
    assert speaker["resources"] == {"limits": {"memory": "128Mi"}, "requests": {"cpu": "10m", "memory": "32Mi"}}
    assert {"name": "EXTRA", "value": "1"} in speaker["env"]
    assert r.one("ServiceAccount", FULLNAME)["metadata"]["annotations"] == {"example.com/a": "b"}


# ---------------------------------------------------------------- monitoring


def test_monitors(chart: helm.Chart) -> None:
    assert render(chart).all("PodMonitor") == [] and render(chart).all("ServiceMonitor") == []
    values = {
        "prometheus": {
            "podMonitor": {"enabled": True, "additionalLabels": {"release": "prom"}},
            "serviceMonitor": {"enabled": True},
        }
    }
    r = render(chart, values)
    pod_labels = r.daemonset["spec"]["template"]["metadata"]["labels"]
    port_names = {p["name"] for p in r.speaker["ports"]}

    pod_monitor = r.one("PodMonitor", FULLNAME)
    assert pod_monitor["metadata"]["labels"]["release"] == "prom"
    assert pod_monitor["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert pod_monitor["spec"]["namespaceSelector"]["matchNames"] == [NAMESPACE]
    (endpoint,) = pod_monitor["spec"]["podMetricsEndpoints"]
    assert endpoint["port"] in port_names and endpoint["path"] == "/metrics"

    service = r.one("Service", f"{FULLNAME}-metrics")
    assert service["spec"]["selector"].items() <= pod_labels.items()
    (port,) = service["spec"]["ports"]
    assert port["targetPort"] in port_names and port["port"] == METRICS_PORT
    service_monitor = r.one("ServiceMonitor", FULLNAME)
    assert service_monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert service_monitor["spec"]["endpoints"][0]["port"] == port["name"]


SECURE_METRICS = VALUE_SETS["secure-metrics"]


def test_secure_metrics_off_by_default(chart: helm.Chart) -> None:
    r = render(chart, {"prometheus": {"podMonitor": {"enabled": True}, "serviceMonitor": {"enabled": True}}})
    for flag in ("metrics-tls-cert", "metrics-tls-key", "metrics-authz"):
        assert r.flag(flag) is None, flag
    assert "scheme" not in r.speaker["livenessProbe"]["httpGet"]
    assert "scheme" not in r.one("ServiceMonitor", FULLNAME)["spec"]["endpoints"][0]
    cluster_rules = r.one("ClusterRole", FULLNAME)["rules"]
    assert not allows(cluster_rules, "authentication.k8s.io", "tokenreviews", "create")
    assert r.all("ClusterRole") == [r.one("ClusterRole", FULLNAME)]


def test_secure_metrics(chart: helm.Chart) -> None:
    r = render(chart, SECURE_METRICS)
    speaker = r.speaker
    assert r.flag("metrics-address") == "0.0.0.0:9120"
    assert r.flag("metrics-authz") == "kubernetes"
    cert, key = r.flag("metrics-tls-cert"), r.flag("metrics-tls-key")
    (mount,) = [m for m in speaker["volumeMounts"] if m["name"] == "metrics-tls"]
    assert mount["readOnly"] is True
    assert cert == f"{mount['mountPath']}/tls.crt" and key == f"{mount['mountPath']}/tls.key"
    (volume,) = [v for v in r.pod["volumes"] if v["name"] == "metrics-tls"]
    assert volume["secret"]["secretName"] == "speaker-metrics-tls"
    assert {i["key"] for i in volume["secret"]["items"]} == {"tls.crt", "tls.key"}
    # The probes stay unauthenticated, over HTTPS on the secure port.
    for probe in ("livenessProbe", "readinessProbe"):
        get = speaker[probe]["httpGet"]
        assert get["scheme"] == "HTTPS", probe
        assert container_port(speaker, get["port"]) == 9120, probe
    cluster_rules = r.one("ClusterRole", FULLNAME)["rules"]
    assert allows(cluster_rules, "authentication.k8s.io", "tokenreviews", "create")
    assert allows(cluster_rules, "authorization.k8s.io", "subjectaccessreviews", "create")
    reader = r.one("ClusterRole", f"{FULLNAME}-metrics-reader")
    assert reader["rules"] == [{"nonResourceURLs": ["/metrics"], "verbs": ["get"]}]
    binding = r.one("ClusterRoleBinding", f"{FULLNAME}-metrics-reader")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "prometheus-k8s", "namespace": "monitoring"}]
    (endpoint,) = r.one("ServiceMonitor", FULLNAME)["spec"]["endpoints"]
    assert endpoint["scheme"] == "https"
    assert endpoint["tlsConfig"] == {"insecureSkipVerify": True}
    assert endpoint["bearerTokenFile"] == "/var/run/secrets/kubernetes.io/serviceaccount/token"
    (port,) = r.one("Service", f"{FULLNAME}-metrics")["spec"]["ports"]
    assert port["port"] == 9120
    (pod_endpoint,) = r.one("PodMonitor", FULLNAME)["spec"]["podMetricsEndpoints"]
    assert pod_endpoint["scheme"] == "https"
    assert pod_endpoint["authorization"]["credentials"] == {"name": "scraper", "key": "token"}


@pytest.mark.parametrize(
    "missing,named",
    [
        ("speakerMetricsTLSSecret", "prometheus.speakerMetricsTLSSecret"),
        ("serviceAccount", "prometheus.serviceAccount"),
    ],
)
def test_secure_metrics_refuses_missing_values(chart: helm.Chart, missing: str, named: str) -> None:
    values = copy.deepcopy(SECURE_METRICS)
    del values["prometheus"][missing]
    with pytest.raises(helm.HelmRenderError) as failure:
        render(chart, values)
    assert named in str(failure.value)


def test_secure_metrics_without_prometheus_rbac(chart: helm.Chart) -> None:
    values = copy.deepcopy(SECURE_METRICS)
    for key in ("serviceAccount", "namespace"):
        del values["prometheus"][key]
    values["prometheus"]["rbacPrometheus"] = False
    r = render(chart, values)
    assert r.all("ClusterRole") == [r.one("ClusterRole", FULLNAME)]


# ---------------------------------------------------------------- CRDs


def crd_schemas(r: Rendered) -> dict[str, dict[str, Any]]:
    schemas = {}
    for crd in r.all("CustomResourceDefinition"):
        (version,) = crd["spec"]["versions"]
        schemas[crd["spec"]["names"]["kind"]] = version["schema"]["openAPIV3Schema"]
    return schemas


def test_crds_off_by_default(chart: helm.Chart) -> None:
    assert render(chart).all("CustomResourceDefinition") == []


def test_crds(chart: helm.Chart) -> None:
    r = render(chart, {"crds": {"enabled": True}})
    crds = {c["metadata"]["name"]: c for c in r.all("CustomResourceDefinition")}
    assert set(crds) == {"ipaddresspools.metallb.io", "l2advertisements.metallb.io", "servicel2statuses.metallb.io"}
    for name, crd in crds.items():
        spec = crd["spec"]
        assert spec["group"] == "metallb.io"
        assert spec["scope"] == "Namespaced"
        assert name == f"{spec['names']['plural']}.{spec['group']}"
        (version,) = spec["versions"]
        assert version["name"] == "v1beta1" and version["served"] and version["storage"]
        assert crd["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    (status_version,) = crds["servicel2statuses.metallb.io"]["spec"]["versions"]
    assert status_version["subresources"] == {"status": {}}
    not_kept = render(chart, {"crds": {"enabled": True, "keep": False}}).all("CustomResourceDefinition")
    assert all("annotations" not in c["metadata"] for c in not_kept)


def test_crd_schemas_accept_what_the_speaker_reads(chart: helm.Chart) -> None:
    schemas = crd_schemas(render(chart, {"crds": {"enabled": True}}))
    objects = [o for o in yaml.safe_load_all(EXAMPLE_STATE.read_text()) if o and o["apiVersion"] == "metallb.io/v1beta1"]
    assert {o["kind"] for o in objects} >= {"IPAddressPool", "L2Advertisement"}
    objects.append(
        {
            "apiVersion": "metallb.io/v1beta1",
            "kind": "ServiceL2Status",
            "metadata": {"generateName": "l2-", "labels": {"metallb.io/node": "iris1"}},
            "spec": {},
            "status": {"node": "iris1", "serviceName": "web", "serviceNamespace": "default", "interfaces": [{"name": "eth0"}]},
        }
    )
    objects.append(
        {
            "apiVersion": "metallb.io/v1beta1",
            "kind": "L2Advertisement",
            "metadata": {"name": "selected"},
            "spec": {
                "ipAddressPoolSelectors": [{"matchLabels": {"pool": "a"}}],
                "nodeSelectors": [{"matchExpressions": [{"key": "lb", "operator": "In", "values": ["yes"]}]}],
                "interfaces": ["eth0"],
            },
        }
    )
    for document in objects:
        jsonschema.validate(document, schemas[document["kind"]])

    bad = [
        ("IPAddressPool", {"spec": {"autoAssign": True}}),  # no addresses
        ("IPAddressPool", {"spec": {"addresses": "192.0.2.0/24"}}),  # not a list
        ("L2Advertisement", {"spec": {"nodeSelectors": [{"matchLabels": {"a": 1}}]}}),
        ("ServiceL2Status", {"status": {"interfaces": ["eth0"]}}),
    ]
    for kind, body in bad:
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate({"apiVersion": "metallb.io/v1beta1", "kind": kind, "metadata": {}, **body}, schemas[kind])


# ---------------------------------------------------------------- whole-chart checks


@pytest.mark.parametrize("value_set", sorted(VALUE_SETS))
def test_manifests_validate_against_kubernetes(chart: helm.Chart, value_set: str) -> None:
    r = render(chart, VALUE_SETS[value_set])
    assert r.objects
    skipped = 0
    for document in r.objects:
        group = document["apiVersion"].rpartition("/")[0]
        if group in NO_SCHEMA_GROUPS:
            skipped += 1
            assert document["spec"], document["kind"]
            continue
        try:
            kubernetes_validate.validate(document, KUBE_VERSION, strict=True)
        except kubernetes_validate.ValidationError as error:
            path = ".".join(str(p) for p in error.path)
            pytest.fail(f"{document['kind']}/{document['metadata']['name']}: {path}: {error.message}")
        except kubernetes_validate.SchemaNotFoundError as error:
            pytest.fail(error.message)
    if value_set == "everything":
        assert skipped == 2


def test_kubernetes_validation_can_fail(chart: helm.Chart) -> None:
    """The validation above rejects a broken DaemonSet: it is not vacuous."""
    broken = copy.deepcopy(render(chart).daemonset)
    broken["spec"]["template"]["spec"]["hostNetwork"] = "yes"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBE_VERSION, strict=True)
    typo = copy.deepcopy(render(chart).daemonset)
    typo["spec"]["template"]["spec"]["hostNetwrok"] = True
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(typo, KUBE_VERSION, strict=True)


def lint_problems(report: dict[str, Any]) -> list[str]:
    """Lint findings worse than "info" (1): warnings and errors."""
    return [f"{m['path']}: {m['error']}" for m in report["messages"] if m["severity"] >= 2] + report["errors"]


def test_lint_without_values() -> None:
    report = helm.lint(CHART_DIR, strict=True, kube_version=f"v{KUBE_VERSION}.0")
    assert report["total_charts_linted"] == 1
    assert lint_problems(report) == []


@pytest.mark.parametrize("value_set", sorted(VALUE_SETS))
def test_lint_with_values(value_set: str) -> None:
    report = helm.lint(CHART_DIR, VALUE_SETS[value_set], strict=True, kube_version=f"v{KUBE_VERSION}.0", namespace=NAMESPACE)
    assert lint_problems(report) == []


def test_lint_reports_bad_values() -> None:
    report = helm.lint(CHART_DIR, {"speaker": {"xdpMode": "turbo"}}, strict=True)
    assert any("xdpMode" in problem for problem in lint_problems(report))


@pytest.mark.parametrize("value_set", sorted(VALUE_SETS))
def test_schema_accepts_value_sets(chart: helm.Chart, value_set: str) -> None:
    chart.validate_schema(chart.merge_values(VALUE_SETS[value_set]))


BAD_VALUES: dict[str, tuple[dict[str, Any], str]] = {
    "xdpMode": ({"speaker": {"xdpMode": "turbo"}}, "/speaker/xdpMode"),
    "logLevel": ({"speaker": {"logLevel": "loud"}}, "/speaker/logLevel"),
    "logFormat": ({"speaker": {"logFormat": "xml"}}, "/speaker/logFormat"),
    "metricsPort-zero": ({"speaker": {"metricsPort": 0}}, "/speaker/metricsPort"),
    "metricsPort-high": ({"speaker": {"metricsPort": 70000}}, "/speaker/metricsPort"),
    "mlBindPort-string": ({"speaker": {"memberlist": {"mlBindPort": "7946"}}}, "/speaker/memberlist/mlBindPort"),
    "memberlist-profile": ({"speaker": {"memberlist": {"profile": "wan"}}}, "/speaker/memberlist/profile"),
    "memberlist-enabled-string": ({"speaker": {"memberlist": {"enabled": "false"}}}, "/speaker/memberlist/enabled"),
    "gratuitousInterval-negative": ({"speaker": {"gratuitousInterval": -1}}, "/speaker/gratuitousInterval"),
    "onStop": ({"speaker": {"onStop": "drain"}}, "/speaker/onStop"),
    "restartWindow-zero": ({"speaker": {"restartWindow": 0}}, "/speaker/restartWindow"),
    "restartWindow-high": ({"speaker": {"restartWindow": 121}}, "/speaker/restartWindow"),
    "deadManTimeout-string": ({"speaker": {"deadManTimeout": "10s"}}, "/speaker/deadManTimeout"),
    "exclude-comma": ({"speaker": {"excludeInterfaces": {"extra": ["^a,b$"]}}}, "/speaker/excludeInterfaces/extra/0"),
    "nodeSelector-list": ({"speaker": {"nodeSelector": ["a"]}}, "/speaker/nodeSelector"),
    "unknown-key": ({"speaker": {"frr": {"enabled": True}}}, "/speaker"),
    "pullPolicy": ({"speaker": {"image": {"pullPolicy": "Sometimes"}}}, "/speaker/image/pullPolicy"),
}


@pytest.mark.parametrize("case", sorted(BAD_VALUES))
def test_schema_rejects_bad_values(chart: helm.Chart, case: str) -> None:
    values, where = BAD_VALUES[case]
    with pytest.raises(helm.HelmValuesError) as failure:
        chart.validate_schema(chart.merge_values(values))
    assert where in str(failure.value)
    # Rendering (install, upgrade, template) refuses them too.
    with pytest.raises(helm.HelmValuesError):
        render(chart, values)


def leaf_paths(values: Any, prefix: str = "") -> list[str]:
    if isinstance(values, dict) and values:
        return [p for key, value in values.items() for p in leaf_paths(value, f"{prefix}{key}.")]
    return [prefix[:-1]]


def test_readme_documents_every_value(chart: helm.Chart) -> None:
    readme = (CHART_DIR / "README.md").read_text()
    defaults = yaml.safe_load((CHART_DIR / "values.yaml").read_text())
    missing = [path for path in leaf_paths(defaults) if f"`{path}`" not in readme]
    # Sub-keys of probes and of the default resources are documented as a group.
    missing = [p for p in missing if not re.match(r"speaker\.(livenessProbe|readinessProbe|resources|updateStrategy)\.", p)]
    assert missing == []
    assert "## Migrating from MetalLB's chart" in readme


def test_notes(chart: helm.Chart) -> None:
    notes = render(chart).notes
    assert f"{NAMESPACE}/{FULLNAME}" in notes
    assert "crds.enabled=true" in notes
    assert "every node must run a speaker" not in notes
    assert "crds.enabled=true" not in render(chart, {"crds": {"enabled": True}}).notes
