//! `speaker election`: the election run over a cluster state without
//! announcing anything, answering "why is my IP on node X?" for people (a
//! table) and scripts (JSON, schema in docs/election-json.md).

use std::collections::BTreeSet;
use std::fmt::Write as _;

use serde::Serialize;

use super::{ClusterState, Problem};
use crate::election::{
    elect, go_ip_text, owner, Decision, ElectionOptions, ExternalTrafficPolicy, Membership,
    NotOwnerCause, Reason,
};

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ElectionReport {
    pub options: OptionsSummary,
    pub membership: MembershipSummary,
    /// LoadBalancer Services by namespace then name.
    pub services: Vec<ServiceElection>,
    /// Objects that were skipped while loading, then pools and advertisements
    /// outside the MetalLB namespace.
    pub problems: Vec<Problem>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OptionsSummary {
    pub metallb_namespace: String,
    pub lb_class: Option<String>,
    pub ignore_exclude_lb: bool,
    pub require_node_ready: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MembershipSummary {
    /// False: no liveness source, every node with a Node object is a
    /// candidate (MetalLB with memberlist disabled).
    pub enabled: bool,
    /// The live speakers when enabled, sorted; empty when disabled.
    pub members: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ServiceElection {
    pub namespace: String,
    pub name: String,
    /// Every ingress IP, in the Service's order; the election hashes the
    /// first.
    pub ips: Vec<String>,
    /// The pool holding all of `ips`, if any.
    pub pool: Option<String>,
    /// As the election reads it: anything but `Local` is `Cluster`.
    pub external_traffic_policy: &'static str,
    pub load_balancer_class: Option<String>,
    /// Endpoints (of all its EndpointSlices) that can serve.
    pub serving_endpoints: usize,
    /// Nodes hosting one of those, sorted.
    pub serving_endpoint_nodes: Vec<String>,
    pub elected_node: Option<String>,
    /// Why nobody announces; all three `null` when a node is elected.
    pub reason: Option<&'static str>,
    pub cause: Option<&'static str>,
    pub detail: Option<&'static str>,
    /// Every node with a Node object and every member without one, sorted.
    pub nodes: Vec<NodeDecision>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NodeDecision {
    pub node: String,
    /// `"announce"` or MetalLB's reason string (`notOwner`, ...).
    pub decision: &'static str,
    /// Which `notOwner` situation, else `null`.
    pub cause: Option<&'static str>,
    /// Which rule fired, in words; `null` for `announce`.
    pub detail: Option<&'static str>,
    /// For `announce`: the interfaces to answer on; empty = all.
    pub interfaces: Vec<String>,
}

/// Runs the election for every LoadBalancer Service of `state`.
pub fn dry_run(
    state: &ClusterState,
    options: ElectionOptions,
    membership: &Membership,
) -> ElectionReport {
    let mut problems = state.problems.clone();
    problems.extend(outside_namespace(state, &options.metallb_namespace));
    let view = state.view(options.clone());
    let services = state
        .services
        .iter()
        .map(|entry| {
            let service = &entry.service;
            let endpoints = &entry.endpoints;
            let election = elect(service, endpoints, &view, membership);
            let withheld = owner(service, endpoints, &view, membership).err();
            let serving: Vec<_> = endpoints.iter().filter(|e| e.can_serve()).collect();
            let serving_endpoint_nodes: BTreeSet<String> =
                serving.iter().filter_map(|e| e.node_name.clone()).collect();
            ServiceElection {
                namespace: service.namespace.clone(),
                name: service.name.clone(),
                ips: service
                    .ingress_ips
                    .iter()
                    .map(|&ip| go_ip_text(ip))
                    .collect(),
                pool: view.pool_for(&service.ingress_ips).map(|p| p.name.clone()),
                external_traffic_policy: match service.external_traffic_policy {
                    ExternalTrafficPolicy::Cluster => "Cluster",
                    ExternalTrafficPolicy::Local => "Local",
                },
                load_balancer_class: service.lb_class.clone(),
                serving_endpoints: serving.len(),
                serving_endpoint_nodes: serving_endpoint_nodes.into_iter().collect(),
                elected_node: election.winner,
                reason: withheld.map(Reason::as_str),
                cause: withheld.and_then(cause),
                detail: withheld.map(Reason::detail),
                nodes: election
                    .per_node
                    .into_iter()
                    .map(|(node, decision)| node_decision(node, decision))
                    .collect(),
            }
        })
        .collect();
    ElectionReport {
        options: OptionsSummary {
            metallb_namespace: options.metallb_namespace,
            lb_class: options.lb_class,
            ignore_exclude_lb: options.ignore_exclude_lb,
            require_node_ready: options.require_node_ready,
        },
        membership: match membership {
            Membership::Disabled => MembershipSummary {
                enabled: false,
                members: Vec::new(),
            },
            Membership::Members(members) => MembershipSummary {
                enabled: true,
                members: members.iter().cloned().collect(),
            },
        },
        services,
        problems,
    }
}

fn node_decision(node: String, decision: Decision) -> NodeDecision {
    match decision {
        Decision::Announce { interfaces } => NodeDecision {
            node,
            decision: "announce",
            cause: None,
            detail: None,
            interfaces,
        },
        Decision::Withhold(reason) => NodeDecision {
            node,
            decision: reason.as_str(),
            cause: cause(reason),
            detail: Some(reason.detail()),
            interfaces: Vec::new(),
        },
    }
}

fn cause(reason: Reason) -> Option<&'static str> {
    match reason {
        Reason::NotOwner(cause) => Some(match cause {
            NotOwnerCause::NoServingEndpoint => "noServingEndpoint",
            NotOwnerCause::NoCandidates => "noCandidates",
            NotOwnerCause::NotCandidate => "notCandidate",
            NotOwnerCause::LostElection => "lostElection",
        }),
        _ => None,
    }
}

/// Pools and advertisements the election ignores because of their
/// namespace: a common reason for `ipNotAllowed` that is otherwise silent.
fn outside_namespace(state: &ClusterState, metallb_namespace: &str) -> Vec<Problem> {
    let pools = state
        .pools
        .iter()
        .map(|p| ("IPAddressPool", &p.namespace, &p.name));
    let advertisements = state
        .advertisements
        .iter()
        .map(|a| ("L2Advertisement", &a.namespace, &a.name));
    pools
        .chain(advertisements)
        .filter(|(_, namespace, _)| !namespace.is_empty() && *namespace != metallb_namespace)
        .map(|(kind, namespace, name)| Problem {
            file: None,
            document: None,
            item: None,
            kind: kind.to_owned(),
            namespace: Some(namespace.clone()),
            name: Some(name.clone()),
            reason: format!("ignored: not in the MetalLB namespace {metallb_namespace}"),
        })
        .collect()
}

impl ElectionReport {
    pub fn to_table(&self) -> String {
        let mut out = String::new();
        let membership = if self.membership.enabled {
            match self.membership.members.as_slice() {
                [] => "enabled, no live speaker: nobody can announce".to_owned(),
                members => format!("enabled, live speakers: {}", members.join(", ")),
            }
        } else {
            "disabled: every node with a Node object is a candidate".to_owned()
        };
        // Writing to a String cannot fail.
        let _ = writeln!(out, "membership: {membership}");
        if self.services.is_empty() {
            out.push_str("\n(no LoadBalancer services)\n");
        }
        for service in &self.services {
            service.write_table(&mut out);
        }
        if !self.problems.is_empty() {
            out.push_str("\nproblems (these objects were skipped):\n");
            for problem in &self.problems {
                let _ = writeln!(out, "  {problem}");
            }
        }
        out
    }
}

impl ServiceElection {
    fn write_table(&self, out: &mut String) {
        let ips = if self.ips.is_empty() {
            "(no IP)".to_owned()
        } else {
            self.ips.join(", ")
        };
        let outcome = match (&self.elected_node, self.reason, self.detail) {
            (Some(node), _, _) => node.clone(),
            (None, Some(reason), Some(detail)) => format!("nobody: {reason} ({detail})"),
            (None, _, _) => "nobody".to_owned(),
        };
        let _ = writeln!(
            out,
            "\n{}/{}: {ips} -> {outcome}",
            self.namespace, self.name
        );

        let mut facts = vec![
            format!("pool {}", self.pool.as_deref().unwrap_or("(none)")),
            format!("externalTrafficPolicy {}", self.external_traffic_policy),
        ];
        if let Some(class) = &self.load_balancer_class {
            facts.push(format!("loadBalancerClass {class}"));
        }
        let endpoints = match self.serving_endpoints {
            0 => "no serving endpoint".to_owned(),
            1 => "1 serving endpoint".to_owned(),
            n => format!("{n} serving endpoints"),
        };
        facts.push(match self.serving_endpoint_nodes.as_slice() {
            [] => endpoints,
            nodes => format!("{endpoints} on {}", nodes.join(", ")),
        });
        let _ = writeln!(out, "  {}", facts.join(", "));

        let width = self
            .nodes
            .iter()
            .map(|n| n.node.len())
            .chain(["NODE".len()])
            .max()
            .unwrap_or(0);
        let _ = writeln!(out, "    {:<width$}  DECISION", "NODE");
        for node in &self.nodes {
            let marker = if node.decision == "announce" {
                '*'
            } else {
                ' '
            };
            let mut decision = node.decision.to_owned();
            if !node.interfaces.is_empty() {
                decision.push_str(&format!(" on {}", node.interfaces.join(",")));
            }
            if let Some(detail) = node.detail {
                decision.push_str(&format!(" ({detail})"));
            }
            let _ = writeln!(out, "  {marker} {:<width$}  {decision}", node.node);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use serde_json::json;

    use super::*;
    use crate::cluster::load;
    use crate::cluster::tests::{iris_example, Scratch};
    use crate::election::{election_hash, ExternalTrafficPolicy};

    fn iris() -> ClusterState {
        load(&iris_example()).unwrap()
    }

    fn decisions(service: &ServiceElection) -> Vec<(&str, &str, Option<&str>)> {
        service
            .nodes
            .iter()
            .map(|n| (n.node.as_str(), n.decision, n.cause))
            .collect()
    }

    fn members(names: &[&str]) -> Membership {
        Membership::Members(
            names
                .iter()
                .map(|n| (*n).to_owned())
                .collect::<BTreeSet<_>>(),
        )
    }

    #[test]
    fn iris_regression_iris1_announces_with_membership_disabled() {
        let report = dry_run(&iris(), ElectionOptions::default(), &Membership::Disabled);
        assert!(report.problems.is_empty());
        let web = &report.services[0];
        assert_eq!(web.elected_node.as_deref(), Some("iris1"));
        assert_eq!(
            decisions(web),
            [
                ("iris1", "announce", None),
                ("iris2", "notOwner", Some("notCandidate")),
            ]
        );
        assert_eq!(web.nodes[1].detail, Some("this node is not eligible"));
        assert_eq!((web.reason, web.cause, web.detail), (None, None, None));
    }

    #[test]
    fn with_policy_cluster_exactly_one_node_announces_the_lowest_hash() {
        let mut state = iris();
        state.services[0].service.external_traffic_policy = ExternalTrafficPolicy::Cluster;
        let report = dry_run(&state, ElectionOptions::default(), &Membership::Disabled);
        let web = &report.services[0];
        // printf 'iris2#192.0.2.100' | sha256sum -> 3db2dd...; iris1 -> dcbb1c...
        assert!(election_hash("iris2", "192.0.2.100") < election_hash("iris1", "192.0.2.100"));
        assert_eq!(web.elected_node.as_deref(), Some("iris2"));
        assert_eq!(
            decisions(web),
            [
                ("iris1", "notOwner", Some("lostElection")),
                ("iris2", "announce", None),
            ]
        );
        let announcing = web
            .nodes
            .iter()
            .filter(|n| n.decision == "announce")
            .count();
        assert_eq!(announcing, 1);
    }

    #[test]
    fn with_no_live_speaker_nobody_announces() {
        let report = dry_run(&iris(), ElectionOptions::default(), &members(&[]));
        let web = &report.services[0];
        assert_eq!(web.elected_node, None);
        assert_eq!(
            (web.reason, web.cause),
            (Some("notOwner"), Some("noCandidates"))
        );
        assert_eq!(
            decisions(web),
            [
                ("iris1", "notOwner", Some("noCandidates")),
                ("iris2", "notOwner", Some("noCandidates")),
            ]
        );
        assert_eq!(
            report.membership,
            MembershipSummary {
                enabled: true,
                members: vec![]
            }
        );
    }

    #[test]
    fn a_member_without_a_node_object_is_listed_and_never_wins() {
        let report = dry_run(
            &iris(),
            ElectionOptions::default(),
            &members(&["iris1", "ghost"]),
        );
        let web = &report.services[0];
        assert_eq!(web.elected_node.as_deref(), Some("iris1"));
        assert_eq!(
            decisions(web),
            [
                ("ghost", "noMatchingAdvertisement", None),
                ("iris1", "announce", None),
                ("iris2", "notOwner", Some("notCandidate")),
            ]
        );
    }

    #[test]
    fn services_without_ip_or_endpoint_say_why_nobody_announces() {
        let mut state = iris();
        let mut pending = state.services[0].clone();
        pending.service.name = "pending".to_owned();
        pending.service.ingress_ips.clear();
        let mut idle = state.services[0].clone();
        idle.service.name = "idle".to_owned();
        idle.endpoints[0].ready = Some(false);
        state.services.extend([pending, idle]);

        let report = dry_run(&state, ElectionOptions::default(), &Membership::Disabled);
        let by_name = |name: &str| report.services.iter().find(|s| s.name == name).unwrap();
        let pending = by_name("pending");
        assert_eq!(pending.ips, Vec::<String>::new());
        assert_eq!(pending.pool, None);
        assert_eq!(
            (pending.reason, pending.cause),
            (Some("noIPAllocated"), None)
        );
        assert!(pending.nodes.iter().all(|n| n.decision == "noIPAllocated"));

        let idle = by_name("idle");
        assert_eq!(idle.serving_endpoints, 0);
        assert_eq!(idle.cause, Some("noServingEndpoint"));
        assert_eq!(idle.detail, Some("no endpoint can serve"));
        assert!(idle
            .nodes
            .iter()
            .all(|n| n.cause == Some("noServingEndpoint")));
    }

    #[test]
    fn pools_outside_the_metallb_namespace_are_reported() {
        let scratch = Scratch::new();
        scratch.write(
            "pools.yaml",
            "apiVersion: metallb.io/v1beta1
kind: IPAddressPool
metadata: {name: lab, namespace: metallb}
spec: {addresses: [192.0.2.0/24]}
",
        );
        let state = load(scratch.path()).unwrap();
        assert!(state.problems.is_empty());
        let report = dry_run(&state, ElectionOptions::default(), &Membership::Disabled);
        assert_eq!(report.problems.len(), 1);
        let problem = &report.problems[0];
        assert_eq!((problem.file.as_deref(), problem.document), (None, None));
        assert_eq!(
            problem.to_string(),
            "IPAddressPool metallb/lab: ignored: not in the MetalLB namespace metallb-system"
        );
        let options = ElectionOptions {
            metallb_namespace: "metallb".to_owned(),
            ..ElectionOptions::default()
        };
        assert!(dry_run(&state, options, &Membership::Disabled)
            .problems
            .is_empty());
    }

    #[test]
    fn json_shape_of_the_iris_report() {
        let report = dry_run(&iris(), ElectionOptions::default(), &Membership::Disabled);
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(
            json,
            json!({
                "options": {
                    "metallb_namespace": "metallb-system",
                    "lb_class": null,
                    "ignore_exclude_lb": false,
                    "require_node_ready": false
                },
                "membership": { "enabled": false, "members": [] },
                "services": [{
                    "namespace": "default",
                    "name": "web",
                    "ips": ["192.0.2.100"],
                    "pool": "lab",
                    "external_traffic_policy": "Local",
                    "load_balancer_class": null,
                    "serving_endpoints": 1,
                    "serving_endpoint_nodes": ["iris1"],
                    "elected_node": "iris1",
                    "reason": null,
                    "cause": null,
                    "detail": null,
                    "nodes": [
                        {
                            "node": "iris1",
                            "decision": "announce",
                            "cause": null,
                            "detail": null,
                            "interfaces": []
                        },
                        {
                            "node": "iris2",
                            "decision": "notOwner",
                            "cause": "notCandidate",
                            "detail": "this node is not eligible",
                            "interfaces": []
                        }
                    ]
                }],
                "problems": []
            })
        );
    }

    #[test]
    fn problems_serialize_with_their_location() {
        let scratch = Scratch::new();
        let file = scratch.write(
            "bad.yaml",
            "apiVersion: metallb.io/v1beta1
kind: IPAddressPool
metadata: {name: bad, namespace: metallb-system}
spec: {addresses: [nope]}
",
        );
        let state = load(&file).unwrap();
        let report = dry_run(&state, ElectionOptions::default(), &Membership::Disabled);
        let json = serde_json::to_value(&report.problems).unwrap();
        assert_eq!(
            json,
            json!([{
                "file": file.display().to_string(),
                "document": 1,
                "item": null,
                "kind": "IPAddressPool",
                "namespace": "metallb-system",
                "name": "bad",
                "reason": "pool \"bad\": invalid CIDR \"nope\": expected ADDRESS/PREFIX such as \
                           192.0.2.0/24 or 2001:db8::/64, or a FIRST-LAST range"
            }])
        );
    }

    #[test]
    fn table_shows_the_winner_and_every_node_with_its_reason() {
        let report = dry_run(&iris(), ElectionOptions::default(), &Membership::Disabled);
        let table = report.to_table();
        let expected = "\
membership: disabled: every node with a Node object is a candidate

default/web: 192.0.2.100 -> iris1
  pool lab, externalTrafficPolicy Local, 1 serving endpoint on iris1
    NODE   DECISION
  * iris1  announce
    iris2  notOwner (this node is not eligible)
";
        assert_eq!(table, expected);

        let nobody = dry_run(&iris(), ElectionOptions::default(), &members(&[])).to_table();
        assert!(
            nobody.contains("default/web: 192.0.2.100 -> nobody: notOwner (no node is eligible)"),
            "{nobody}"
        );
        assert!(nobody.contains("enabled, no live speaker"), "{nobody}");
    }

    #[test]
    fn table_lists_problems() {
        let mut state = iris();
        state.problems.push(Problem {
            file: Some("c.yaml".to_owned()),
            document: Some(2),
            item: None,
            kind: "IPAddressPool".to_owned(),
            namespace: Some("metallb-system".to_owned()),
            name: Some("bad".to_owned()),
            reason: "pool \"bad\" has no addresses".to_owned(),
        });
        let table = dry_run(&state, ElectionOptions::default(), &Membership::Disabled).to_table();
        assert!(table.ends_with(
            "\nproblems (these objects were skipped):\n  c.yaml, document 2: IPAddressPool \
             metallb-system/bad: pool \"bad\" has no addresses\n"
        ));
    }
}
