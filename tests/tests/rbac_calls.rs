//! The chart's RBAC grants exactly the Kubernetes calls the speaker makes
//! (`speaker::kube::calls::ALL`, from which the speaker builds its API
//! handles, plus `METRICS_AUTHZ` with secure metrics): nothing missing,
//! nothing more, each in the right place (cluster-wide, the configuration
//! namespace, the pods' namespace).
//!
//! The chart is rendered with real Helm (`tests/chart/render.sh`,
//! helm-python-sdk in the chart tests' venv). Run:
//! `cargo test -p speaker-tests --test rbac_calls`.

use std::{collections::BTreeSet, time::Duration};

use serde::Deserialize;
use serde_json::{json, Value};
use speaker::kube::calls::{self, Call, Scope};
use speaker_tests::lab::{command::Spawn, workspace_root};

const RELEASE: &str = "lb";
/// Where the chart is installed (and the speaker pods run).
const RELEASE_NAMESPACE: &str = "lb-system";
/// MetalLB's objects, apart from the release so that Roles tell apart.
const CONFIG_NAMESPACE: &str = "metallb-system";
const SERVICE_ACCOUNT: &str = "lb-xdp-speaker";
/// The Prometheus granted `get` on /metrics with secure metrics.
const PROMETHEUS: (&str, &str) = ("monitoring", "prometheus-k8s");

/// One permission: scope, API group, resource (with `/subresource`), verb.
type Grant = (String, String, String, String);

fn scope_name(scope: Scope) -> String {
    match scope {
        Scope::Cluster => "cluster-wide".to_owned(),
        Scope::ConfigNamespace => format!("namespace {CONFIG_NAMESPACE}"),
        Scope::PodNamespace => format!("namespace {RELEASE_NAMESPACE}"),
    }
}

fn grants_of(calls: &[&Call]) -> BTreeSet<Grant> {
    calls
        .iter()
        .flat_map(|call| {
            call.verbs.iter().map(move |verb| {
                (
                    scope_name(call.scope),
                    call.group.to_owned(),
                    call.resource.to_owned(),
                    (*verb).to_owned(),
                )
            })
        })
        .collect()
}

fn render(values: &Value) -> Vec<Value> {
    let out = Spawn::tool("bash")
        .args([
            "tests/chart/render.sh",
            "--release",
            RELEASE,
            "--namespace",
            RELEASE_NAMESPACE,
            "--values-json",
            &values.to_string(),
        ])
        .current_dir(workspace_root())
        .run(Duration::from_secs(600));
    assert!(out.success(), "rendering the chart failed:\n{out}");
    serde_yaml_ng::Deserializer::from_str(&out.stdout)
        .map(|document| Value::deserialize(document).expect("a rendered YAML document"))
        .filter(|document| !document.is_null())
        .collect()
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .map(|items| {
            items
                .iter()
                .map(|item| item.as_str().expect("a string").to_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// The (kind, name, namespace) of the roles bound to a service account.
fn roles_bound_to(
    documents: &[Value],
    account: &str,
    namespace: &str,
) -> BTreeSet<(String, String, String)> {
    documents
        .iter()
        .filter(|d| d["kind"] == "ClusterRoleBinding" || d["kind"] == "RoleBinding")
        .filter(|d| {
            d["subjects"].as_array().is_some_and(|subjects| {
                subjects.iter().any(|s| {
                    s["kind"] == "ServiceAccount"
                        && s["name"] == account
                        && s["namespace"] == namespace
                })
            })
        })
        .map(|d| {
            (
                d["roleRef"]["kind"].as_str().unwrap_or("").to_owned(),
                d["roleRef"]["name"].as_str().unwrap_or("").to_owned(),
                d["metadata"]["namespace"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect()
}

/// The Prometheus' own ClusterRole (secure metrics): `get` on /metrics,
/// nothing else; not the speaker's.
fn is_metrics_reader(role: &Value) -> bool {
    role["kind"] == "ClusterRole"
        && role["rules"] == json!([{"nonResourceURLs": ["/metrics"], "verbs": ["get"]}])
}

/// Everything the rendered RBAC grants the speaker's service account:
/// rules of every (Cluster)Role bound to it, expanded to single grants.
fn granted(documents: &[Value]) -> BTreeSet<Grant> {
    let bound_roles = roles_bound_to(documents, SERVICE_ACCOUNT, RELEASE_NAMESPACE);
    let mut grants = BTreeSet::new();
    for role in documents
        .iter()
        .filter(|d| d["kind"] == "ClusterRole" || d["kind"] == "Role")
        .filter(|d| !is_metrics_reader(d))
    {
        let kind = role["kind"].as_str().unwrap_or("");
        let name = role["metadata"]["name"].as_str().unwrap_or("").to_owned();
        let namespace = role["metadata"]["namespace"]
            .as_str()
            .unwrap_or("")
            .to_owned();
        let binding_namespace = if kind == "Role" {
            namespace.clone()
        } else {
            String::new()
        };
        let bound = bound_roles.iter().any(|(k, n, ns)| {
            k == kind && *n == name && (kind == "ClusterRole" || *ns == binding_namespace)
        });
        assert!(bound, "{kind} {name} is bound to nothing: {role:#}");
        let scope = match kind {
            "ClusterRole" => "cluster-wide".to_owned(),
            _ => format!("namespace {namespace}"),
        };
        for rule in role["rules"].as_array().expect("rules") {
            assert!(
                rule.get("resourceNames").is_none() && rule.get("nonResourceURLs").is_none(),
                "unexpected rule shape: {rule:#}"
            );
            for group in strings(&rule["apiGroups"]) {
                for resource in strings(&rule["resources"]) {
                    for verb in strings(&rule["verbs"]) {
                        grants.insert((scope.clone(), group.clone(), resource.clone(), verb));
                    }
                }
            }
        }
    }
    grants
}

fn assert_grants_exactly(values: Value, wanted: &[&Call]) {
    let documents = render(&values);
    let granted = granted(&documents);
    let wanted = grants_of(wanted);
    let missing: Vec<&Grant> = wanted.difference(&granted).collect();
    let extra: Vec<&Grant> = granted.difference(&wanted).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "the chart's RBAC ({values}) differs from speaker::kube::calls:\n\
         missing (the speaker would be refused): {missing:#?}\n\
         extra (granted, never used): {extra:#?}"
    );
}

#[test]
fn the_chart_grants_exactly_the_speakers_calls() {
    assert_grants_exactly(
        json!({"speaker": {"configNamespace": CONFIG_NAMESPACE}}),
        calls::ALL,
    );
}

#[test]
fn without_gossip_pods_are_not_granted() {
    let without_pods: Vec<&Call> = calls::ALL
        .iter()
        .copied()
        // Both serve gossip only: peers, and the restart-or-handover decision.
        .filter(|call| **call != calls::PODS && **call != calls::DAEMON_SETS)
        .collect();
    assert_grants_exactly(
        json!({"speaker": {"configNamespace": CONFIG_NAMESPACE, "memberlist": {"enabled": false}}}),
        &without_pods,
    );
}

fn secure_metrics_values() -> Value {
    json!({
        "speaker": {"configNamespace": CONFIG_NAMESPACE},
        "prometheus": {
            "secureMetricsPort": 9120,
            "speakerMetricsTLSSecret": "speaker-metrics-tls",
            "serviceAccount": PROMETHEUS.1,
            "namespace": PROMETHEUS.0,
        },
    })
}

#[test]
fn with_secure_metrics_token_and_access_reviews_are_granted_too() {
    let with_reviews: Vec<&Call> = calls::ALL
        .iter()
        .chain(calls::METRICS_AUTHZ)
        .copied()
        .collect();
    assert_grants_exactly(secure_metrics_values(), &with_reviews);
}

#[test]
fn with_secure_metrics_only_the_prometheus_may_get_metrics() {
    let documents = render(&secure_metrics_values());
    let readers: Vec<&Value> = documents.iter().filter(|d| is_metrics_reader(d)).collect();
    assert_eq!(readers.len(), 1, "one /metrics reader role: {readers:#?}");
    let name = readers[0]["metadata"]["name"].as_str().expect("a name");
    let bound = roles_bound_to(&documents, PROMETHEUS.1, PROMETHEUS.0);
    assert_eq!(
        bound,
        BTreeSet::from([("ClusterRole".to_owned(), name.to_owned(), String::new())]),
        "the Prometheus' bindings"
    );
    assert!(
        !roles_bound_to(&documents, SERVICE_ACCOUNT, RELEASE_NAMESPACE)
            .iter()
            .any(|(_, role, _)| role == name),
        "the speaker itself must not read /metrics"
    );
}
