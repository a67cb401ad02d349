//! Whether a SIGTERM is a restart: asked of the API server at stop time.
//!
//! Kubernetes sends the same SIGTERM for a rolling update (the DaemonSet
//! replaces this Pod on this node) and for a real stop (uninstall, the node
//! no longer selected). A restart keeps ownership where it is and asks the
//! peers to hold this node (`membership::hold`); a real stop hands over. The
//! Pod's controlling DaemonSet decides: it still exists, is not being
//! deleted and still selects this Node → a new Pod will come → restart.
//!
//! Anything that cannot be established (API unreachable, Pod without a
//! DaemonSet owner, Node unknown) is a real stop: a handover's worst case is
//! one needless move and back (two gratuitous bursts, no request lost), a
//! wrongly assumed restart's is the restart window without answers when
//! the node is really going away.

use std::{collections::BTreeMap, time::Duration};

use k8s_openapi::api::{
    apps::v1::DaemonSet,
    core::v1::{NodeSelectorRequirement, NodeSelectorTerm, Pod, PodSpec},
};
use kube::Client;

use super::{calls, status::SpeakerPod};

/// How long the stop waits for the API server before handing over: the
/// decision spends the pod's termination grace period.
pub const DECISION_LIMIT: Duration = Duration::from_secs(3);

/// What the API server says about this stop.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StopVerdict {
    /// The DaemonSet will start a new speaker on this node.
    Restart,
    /// No new speaker is coming, or we cannot tell (the reason).
    RealStop(String),
}

/// Asks the API server about this Pod's DaemonSet; `node_labels` is this
/// Node's labels as the Node watch last saw them (`None`: not in the view).
pub async fn judge(
    client: Client,
    pod: &SpeakerPod,
    pod_namespace: &str,
    node: &str,
    node_labels: Option<&BTreeMap<String, String>>,
) -> StopVerdict {
    let asked = async {
        let pods: kube::Api<Pod> = calls::PODS.api(client.clone(), Some(pod_namespace));
        let this = pods.get(&pod.name).await.map_err(|e| {
            StopVerdict::RealStop(format!("cannot get Pod {pod_namespace}/{}: {e}", pod.name))
        })?;
        let Some(owner) = daemon_set_owner(&this) else {
            return Err(StopVerdict::RealStop(format!(
                "Pod {pod_namespace}/{} has no controlling DaemonSet",
                pod.name
            )));
        };
        let daemon_sets: kube::Api<DaemonSet> = calls::DAEMON_SETS.api(client, Some(pod_namespace));
        match daemon_sets.get_opt(&owner).await {
            Ok(found) => Ok(found),
            Err(e) => Err(StopVerdict::RealStop(format!(
                "cannot get DaemonSet {pod_namespace}/{owner}: {e}"
            ))),
        }
        .map(|found| (owner, found))
    };
    match tokio::time::timeout(DECISION_LIMIT, asked).await {
        Err(_) => StopVerdict::RealStop(format!(
            "the API server did not answer within {DECISION_LIMIT:?}"
        )),
        Ok(Err(verdict)) => verdict,
        Ok(Ok((owner, found))) => verdict_for(&owner, found.as_ref(), node, node_labels),
    }
}

/// The name of the DaemonSet that controls `pod`.
pub fn daemon_set_owner(pod: &Pod) -> Option<String> {
    pod.metadata
        .owner_references
        .as_ref()?
        .iter()
        .find(|o| o.kind == "DaemonSet" && o.controller == Some(true))
        .map(|o| o.name.clone())
}

/// The decision table, without I/O.
pub fn verdict_for(
    name: &str,
    daemon_set: Option<&DaemonSet>,
    node: &str,
    node_labels: Option<&BTreeMap<String, String>>,
) -> StopVerdict {
    let Some(daemon_set) = daemon_set else {
        return StopVerdict::RealStop(format!("DaemonSet {name} is gone"));
    };
    if daemon_set.metadata.deletion_timestamp.is_some() {
        return StopVerdict::RealStop(format!("DaemonSet {name} is being deleted"));
    }
    let Some(labels) = node_labels else {
        return StopVerdict::RealStop(format!("Node {node} is not in the cluster view"));
    };
    let spec = daemon_set
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref());
    if spec.is_none_or(|spec| selects_node(spec, node, labels)) {
        StopVerdict::Restart
    } else {
        StopVerdict::RealStop(format!("DaemonSet {name} no longer selects node {node}"))
    }
}

/// Whether the DaemonSet controller places this pod template on the node:
/// `nodeSelector` and required node affinity, as the scheduler reads them.
/// Taints and tolerations are left out: the DaemonSet controller adds
/// tolerations for the node conditions itself, and a taint added to make
/// the speaker leave a node is rare enough to cost one needless handover.
pub fn selects_node(spec: &PodSpec, node: &str, labels: &BTreeMap<String, String>) -> bool {
    let selector_matches = spec
        .node_selector
        .iter()
        .flatten()
        .all(|(key, value)| labels.get(key) == Some(value));
    let required = spec
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|a| {
            a.required_during_scheduling_ignored_during_execution
                .as_ref()
        });
    // The terms are ORed; an empty list matches no node (the API's rule).
    let affinity_matches = required.is_none_or(|selector| {
        selector
            .node_selector_terms
            .iter()
            .any(|term| term_matches(term, node, labels))
    });
    selector_matches && affinity_matches
}

/// A term's requirements are ANDed; a term with none matches nothing.
fn term_matches(term: &NodeSelectorTerm, node: &str, labels: &BTreeMap<String, String>) -> bool {
    let expressions = term.match_expressions.as_deref().unwrap_or_default();
    let fields = term.match_fields.as_deref().unwrap_or_default();
    if expressions.is_empty() && fields.is_empty() {
        return false;
    }
    // `metadata.name` is the only field the API server allows in matchFields.
    let name_fields = BTreeMap::from([("metadata.name".to_owned(), node.to_owned())]);
    expressions.iter().all(|r| requirement_matches(r, labels))
        && fields.iter().all(|r| requirement_matches(r, &name_fields))
}

fn requirement_matches(
    requirement: &NodeSelectorRequirement,
    labels: &BTreeMap<String, String>,
) -> bool {
    let value = labels.get(&requirement.key);
    let values = requirement.values.as_deref().unwrap_or_default();
    let as_number = |s: &str| s.parse::<i64>().ok();
    match requirement.operator.as_str() {
        "In" => value.is_some_and(|v| values.contains(v)),
        "NotIn" => value.is_none_or(|v| !values.contains(v)),
        "Exists" => value.is_some(),
        "DoesNotExist" => value.is_none(),
        // Gt/Lt take exactly one integer value.
        "Gt" | "Lt" => match (value.and_then(|v| as_number(v)), values) {
            (Some(have), [bound]) => match as_number(bound) {
                Some(bound) if requirement.operator == "Gt" => have > bound,
                Some(bound) => have < bound,
                None => false,
            },
            _ => false,
        },
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::{
        api::{
            apps::v1::DaemonSetSpec,
            core::v1::{Affinity, NodeAffinity, NodeSelector, PodTemplateSpec},
        },
        apimachinery::pkg::apis::meta::v1::{OwnerReference, Time},
        jiff::Timestamp,
    };

    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn requirement(key: &str, operator: &str, values: &[&str]) -> NodeSelectorRequirement {
        NodeSelectorRequirement {
            key: key.into(),
            operator: operator.into(),
            values: (!values.is_empty()).then(|| values.iter().map(|v| v.to_string()).collect()),
        }
    }

    fn term(expressions: Vec<NodeSelectorRequirement>) -> NodeSelectorTerm {
        NodeSelectorTerm {
            match_expressions: Some(expressions),
            match_fields: None,
        }
    }

    fn spec(selector: &[(&str, &str)], terms: Option<Vec<NodeSelectorTerm>>) -> PodSpec {
        PodSpec {
            node_selector: (!selector.is_empty()).then(|| labels(selector)),
            affinity: terms.map(|node_selector_terms| Affinity {
                node_affinity: Some(NodeAffinity {
                    required_during_scheduling_ignored_during_execution: Some(NodeSelector {
                        node_selector_terms,
                    }),
                    ..NodeAffinity::default()
                }),
                ..Affinity::default()
            }),
            ..PodSpec::default()
        }
    }

    fn daemon_set(pod: PodSpec, deleting: bool) -> DaemonSet {
        let mut ds = DaemonSet {
            spec: Some(DaemonSetSpec {
                template: PodTemplateSpec {
                    spec: Some(pod),
                    ..PodTemplateSpec::default()
                },
                ..DaemonSetSpec::default()
            }),
            ..DaemonSet::default()
        };
        if deleting {
            ds.metadata.deletion_timestamp = Some(Time(Timestamp::UNIX_EPOCH));
        }
        ds
    }

    #[test]
    fn node_selector_and_required_affinity_both_apply() {
        let node = labels(&[
            ("kubernetes.io/os", "linux"),
            ("tier", "edge"),
            ("cores", "8"),
        ]);
        let selects = |spec: &PodSpec| selects_node(spec, "n1", &node);
        assert!(selects(&spec(&[], None)));
        assert!(selects(&spec(&[("kubernetes.io/os", "linux")], None)));
        assert!(!selects(&spec(&[("kubernetes.io/os", "windows")], None)));
        assert!(!selects(&spec(&[("missing", "x")], None)));
        let cases = [
            (requirement("tier", "In", &["edge", "core"]), true),
            (requirement("tier", "In", &["core"]), false),
            (requirement("tier", "NotIn", &["core"]), true),
            (requirement("absent", "NotIn", &["core"]), true),
            (requirement("tier", "Exists", &[]), true),
            (requirement("tier", "DoesNotExist", &[]), false),
            (requirement("absent", "DoesNotExist", &[]), true),
            (requirement("cores", "Gt", &["4"]), true),
            (requirement("cores", "Lt", &["4"]), false),
            (requirement("tier", "Gt", &["4"]), false),
            (requirement("cores", "Gt", &["4", "5"]), false),
            (requirement("tier", "Bogus", &["edge"]), false),
        ];
        for (r, want) in cases {
            assert_eq!(
                selects(&spec(&[], Some(vec![term(vec![r.clone()])]))),
                want,
                "{r:?}"
            );
        }
        // Terms are ORed, requirements ANDed.
        let miss = requirement("tier", "In", &["core"]);
        let hit = requirement("tier", "Exists", &[]);
        assert!(selects(&spec(
            &[],
            Some(vec![term(vec![miss.clone()]), term(vec![hit.clone()])])
        )));
        assert!(!selects(&spec(
            &[],
            Some(vec![term(vec![miss, hit.clone()])])
        )));
        // No terms, or an empty term, match nothing; both selectors must hold.
        assert!(!selects(&spec(&[], Some(vec![]))));
        assert!(!selects(&spec(&[], Some(vec![term(vec![])]))));
        assert!(!selects(&spec(
            &[("tier", "core")],
            Some(vec![term(vec![hit])])
        )));
    }

    #[test]
    fn match_fields_name_the_node() {
        let pinned = |name: &str| {
            spec(
                &[],
                Some(vec![NodeSelectorTerm {
                    match_expressions: None,
                    match_fields: Some(vec![requirement("metadata.name", "In", &[name])]),
                }]),
            )
        };
        assert!(selects_node(&pinned("n1"), "n1", &labels(&[])));
        assert!(!selects_node(&pinned("n2"), "n1", &labels(&[])));
    }

    #[test]
    fn the_daemon_set_decides_restart_or_real_stop() {
        let node = labels(&[("tier", "edge")]);
        let edge = daemon_set(spec(&[("tier", "edge")], None), false);
        let core = daemon_set(spec(&[("tier", "core")], None), false);
        let deleting = daemon_set(spec(&[], None), true);
        let verdict = |ds: Option<&DaemonSet>, labels: Option<&BTreeMap<String, String>>| {
            verdict_for("speaker", ds, "n1", labels)
        };
        assert_eq!(verdict(Some(&edge), Some(&node)), StopVerdict::Restart);
        let real = |v: StopVerdict, why: &str| match v {
            StopVerdict::RealStop(reason) => assert!(reason.contains(why), "{reason}"),
            StopVerdict::Restart => panic!("a restart, expected a real stop ({why})"),
        };
        real(verdict(None, Some(&node)), "gone");
        real(verdict(Some(&deleting), Some(&node)), "being deleted");
        real(verdict(Some(&core), Some(&node)), "no longer selects");
        real(verdict(Some(&edge), None), "not in the cluster view");
    }

    #[test]
    fn the_owner_is_the_controlling_daemon_set() {
        let owner = |kind: &str, name: &str, controller: bool| OwnerReference {
            api_version: "apps/v1".into(),
            kind: kind.into(),
            name: name.into(),
            uid: "u".into(),
            controller: Some(controller),
            block_owner_deletion: None,
        };
        let mut pod = Pod::default();
        assert_eq!(daemon_set_owner(&pod), None);
        pod.metadata.owner_references = Some(vec![
            owner("ReplicaSet", "rs", true),
            owner("DaemonSet", "other", false),
        ]);
        assert_eq!(daemon_set_owner(&pod), None);
        pod.metadata
            .owner_references
            .as_mut()
            .unwrap()
            .push(owner("DaemonSet", "speaker", true));
        assert_eq!(daemon_set_owner(&pod).as_deref(), Some("speaker"));
    }
}
