//! Tables of clusters and expected decisions, one row per rule of the
//! election, plus hash vectors computed outside Rust (`printf '...' |
//! sha256sum`) so a change in the hashed text fails here.

mod properties;

use std::net::IpAddr;

use super::*;

const NS: &str = DEFAULT_METALLB_NAMESPACE;
const LOST: Reason = Reason::NotOwner(NotOwnerCause::LostElection);
const NOT_CANDIDATE: Reason = Reason::NotOwner(NotOwnerCause::NotCandidate);
const NO_CANDIDATES: Reason = Reason::NotOwner(NotOwnerCause::NoCandidates);
const NO_ENDPOINT: Reason = Reason::NotOwner(NotOwnerCause::NoServingEndpoint);
const NO_AD: Reason = Reason::NoMatchingAdvertisement;

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

fn node(name: &str, zone: &str) -> Node {
    Node {
        name: name.to_owned(),
        labels: labels(&[("zone", zone)]),
        conditions: [("Ready".to_owned(), "True".to_owned())].into(),
        internal_ips: Vec::new(),
    }
}

fn endpoint(node: Option<&str>, ready: Option<bool>, serving: Option<bool>) -> Endpoint {
    Endpoint {
        node_name: node.map(str::to_owned),
        ready,
        serving,
        terminating: None,
    }
}

fn ready_on(node: &str) -> Endpoint {
    endpoint(Some(node), Some(true), None)
}

fn advertisement(name: &str) -> L2Advertisement {
    L2Advertisement {
        name: name.to_owned(),
        namespace: NS.to_owned(),
        ..L2Advertisement::default()
    }
}

fn pool(name: &str, namespace: &str, tier: &str, addresses: &[&str]) -> IpAddressPool {
    IpAddressPool::new(name, namespace, labels(&[("tier", tier)]), addresses).unwrap()
}

fn view_of(
    options: &ElectionOptions,
    nodes: &[Node],
    pools: &[IpAddressPool],
    advertisements: &[L2Advertisement],
) -> ClusterView {
    ClusterView::new(
        options.clone(),
        nodes.to_vec(),
        pools.to_vec(),
        advertisements.to_vec(),
    )
}

fn members(names: &[&str]) -> Membership {
    Membership::Members(names.iter().map(|n| (*n).to_owned()).collect())
}

/// iris1 and iris2 in zone a, iris3 in zone b, all Ready; pool `default`
/// (192.0.2.0/24, 2001:db8::/64) and `other` (198.51.100.0/24); one
/// L2Advertisement covering everything; memberlist disabled; service
/// default/web on 192.0.2.1 (ETP Cluster) with one ready endpoint on iris1.
/// For 192.0.2.1 the hash order is iris3 < iris2 < iris1.
#[derive(Debug, Clone)]
struct Fixture {
    options: ElectionOptions,
    nodes: Vec<Node>,
    pools: Vec<IpAddressPool>,
    advertisements: Vec<L2Advertisement>,
    membership: Membership,
    service: Service,
    endpoints: Vec<Endpoint>,
}

impl Default for Fixture {
    fn default() -> Self {
        Self {
            options: ElectionOptions::default(),
            nodes: vec![node("iris1", "a"), node("iris2", "a"), node("iris3", "b")],
            pools: vec![
                pool("default", NS, "default", &["192.0.2.0/24", "2001:db8::/64"]),
                pool("other", NS, "other", &["198.51.100.0/24"]),
            ],
            advertisements: vec![advertisement("l2")],
            membership: Membership::Disabled,
            service: Service {
                namespace: "default".into(),
                name: "web".into(),
                labels: labels(&[("app", "web")]),
                ingress_ips: vec![ip("192.0.2.1")],
                ..Service::default()
            },
            endpoints: vec![ready_on("iris1")],
        }
    }
}

impl Fixture {
    fn view(&self) -> ClusterView {
        view_of(
            &self.options,
            &self.nodes,
            &self.pools,
            &self.advertisements,
        )
    }

    fn node_mut(&mut self, name: &str) -> &mut Node {
        self.nodes.iter_mut().find(|n| n.name == name).unwrap()
    }

    fn decide(&self, node: &str) -> Decision {
        should_announce(
            node,
            &self.service,
            &self.endpoints,
            &self.view(),
            &self.membership,
        )
    }

    /// `elect`, after checking it agrees with `should_announce` on every
    /// node and with `owner`.
    fn elect_checked(&self) -> Election {
        let view = self.view();
        let election = elect(&self.service, &self.endpoints, &view, &self.membership);
        for (name, decision) in &election.per_node {
            assert_eq!(
                *decision,
                should_announce(
                    name,
                    &self.service,
                    &self.endpoints,
                    &view,
                    &self.membership
                ),
                "elect and should_announce disagree on {name}"
            );
        }
        let announcers: Vec<&String> = election
            .per_node
            .iter()
            .filter(|(_, d)| d.is_announce())
            .map(|(n, _)| n)
            .collect();
        assert_eq!(announcers, election.winner.iter().collect::<Vec<_>>());
        assert_eq!(
            owner(&self.service, &self.endpoints, &view, &self.membership).ok(),
            election.winner.as_deref()
        );
        election
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Want {
    Announce,
    AnnounceOn(&'static [&'static str]),
    Withhold(Reason),
}

struct Case {
    name: &'static str,
    setup: fn(&mut Fixture),
    want: &'static [(&'static str, Want)],
}

fn run(cases: &[Case]) {
    for case in cases {
        let mut fixture = Fixture::default();
        (case.setup)(&mut fixture);
        let election = fixture.elect_checked();
        for &(node, want) in case.want {
            let got = fixture.decide(node);
            let ok = match (want, &got) {
                (Want::Announce, Decision::Announce { interfaces }) => interfaces.is_empty(),
                (Want::AnnounceOn(expected), Decision::Announce { interfaces }) => {
                    interfaces == expected
                }
                (Want::Withhold(reason), Decision::Withhold(got)) => reason == *got,
                _ => false,
            };
            assert!(
                ok,
                "{}: {node}: want {want:?}, got {got:?} (election {election:?})",
                case.name
            );
        }
    }
}

use Want::{Announce, AnnounceOn, Withhold};

#[test]
fn issue_2425_memberlist_disabled_still_announces() {
    let two_nodes = |f: &mut Fixture| f.nodes.truncate(2);
    run(&[
        Case {
            name: "#2425 ETP Local, endpoint on iris1",
            setup: |f| {
                f.nodes.truncate(2);
                f.service.external_traffic_policy = ExternalTrafficPolicy::Local;
            },
            want: &[("iris1", Announce), ("iris2", Withhold(NOT_CANDIDATE))],
        },
        Case {
            name: "#2425 ETP Cluster: exactly one announces (iris2 hashes lower for 192.0.2.1)",
            setup: two_nodes,
            want: &[("iris2", Announce), ("iris1", Withhold(LOST))],
        },
        Case {
            name: "#2425 live membership with nobody alive: nobody, with a reason",
            setup: |f| {
                f.nodes.truncate(2);
                f.membership = members(&[]);
            },
            want: &[
                ("iris1", Withhold(NO_CANDIDATES)),
                ("iris2", Withhold(NO_CANDIDATES)),
            ],
        },
    ]);
    let mut fixture = Fixture::default();
    two_nodes(&mut fixture);
    fixture.membership = members(&[]);
    assert_eq!(fixture.elect_checked().winner, None);
    assert_eq!(
        fixture.decide("iris1").to_string(),
        "notOwner (no node is eligible)"
    );
}

#[test]
fn membership() {
    run(&[
        Case {
            name: "disabled: every cached node is a candidate, lowest hash wins",
            setup: |_| {},
            want: &[
                ("iris3", Announce),
                ("iris2", Withhold(LOST)),
                ("iris1", Withhold(LOST)),
            ],
        },
        Case {
            name: "members: only members are candidates",
            setup: |f| f.membership = members(&["iris1", "iris2"]),
            want: &[
                ("iris2", Announce),
                ("iris1", Withhold(LOST)),
                ("iris3", Withhold(NOT_CANDIDATE)),
            ],
        },
        Case {
            // ghost#192.0.2.1 = 3667… would beat iris3 (3ef9…) if it could run.
            name: "a member without a Node object never wins",
            setup: |f| f.membership = members(&["ghost", "iris3", "iris1"]),
            want: &[
                ("ghost", Withhold(NO_AD)),
                ("iris3", Announce),
                ("iris1", Withhold(LOST)),
            ],
        },
        Case {
            name: "only ghosts alive: nobody",
            setup: |f| f.membership = members(&["ghost"]),
            want: &[
                ("ghost", Withhold(NO_AD)),
                ("iris3", Withhold(NO_CANDIDATES)),
            ],
        },
        Case {
            name: "a node asking without a Node object",
            setup: |_| {},
            want: &[("phantom", Withhold(NO_AD))],
        },
    ]);
    let fixture = Fixture {
        membership: members(&["ghost", "iris1"]),
        ..Fixture::default()
    };
    let keys: Vec<String> = fixture.elect_checked().per_node.into_keys().collect();
    assert_eq!(keys, strings(&["ghost", "iris1", "iris2", "iris3"]));
}

#[test]
fn serving_endpoint_gate_comes_first() {
    run(&[
        Case {
            name: "no endpoints at all",
            setup: |f| f.endpoints.clear(),
            want: &[
                ("iris1", Withhold(NO_ENDPOINT)),
                ("iris3", Withhold(NO_ENDPOINT)),
            ],
        },
        Case {
            name: "no endpoints and no advertisement: notOwner before noMatchingAdvertisement",
            setup: |f| {
                f.endpoints.clear();
                f.advertisements.clear();
            },
            want: &[("iris1", Withhold(NO_ENDPOINT))],
        },
        Case {
            name: "ready unset counts even with serving false",
            setup: |f| f.endpoints = vec![endpoint(Some("iris1"), None, Some(false))],
            want: &[("iris3", Announce)],
        },
        Case {
            name: "ready false but serving true counts",
            setup: |f| f.endpoints = vec![endpoint(Some("iris1"), Some(false), Some(true))],
            want: &[("iris3", Announce)],
        },
        Case {
            name: "ready false, serving unset does not count",
            setup: |f| f.endpoints = vec![endpoint(Some("iris1"), Some(false), None)],
            want: &[("iris3", Withhold(NO_ENDPOINT))],
        },
        Case {
            name: "ready false, serving false does not count",
            setup: |f| f.endpoints = vec![endpoint(Some("iris1"), Some(false), Some(false))],
            want: &[("iris3", Withhold(NO_ENDPOINT))],
        },
        Case {
            name: "terminating is ignored",
            setup: |f| {
                f.endpoints = vec![Endpoint {
                    terminating: Some(true),
                    ..ready_on("iris1")
                }];
            },
            want: &[("iris3", Announce)],
        },
        Case {
            name: "an endpoint without nodeName passes the gate",
            setup: |f| f.endpoints = vec![endpoint(None, None, None)],
            want: &[("iris3", Announce)],
        },
        Case {
            name:
                "ETP Cluster: an endpoint only on an excluded node still gets announced elsewhere",
            setup: |f| {
                f.node_mut("iris1")
                    .labels
                    .insert(EXCLUDE_FROM_LB_LABEL.into(), String::new());
            },
            want: &[("iris3", Announce), ("iris1", Withhold(NOT_CANDIDATE))],
        },
    ]);
}

#[test]
fn external_traffic_policy_local() {
    assert_eq!(
        ExternalTrafficPolicy::from_spec(Some("Local")),
        ExternalTrafficPolicy::Local
    );
    assert_eq!(
        ExternalTrafficPolicy::from_spec(Some("local")),
        ExternalTrafficPolicy::Cluster
    );
    assert_eq!(
        ExternalTrafficPolicy::from_spec(None),
        ExternalTrafficPolicy::Cluster
    );
    run(&[
        Case {
            name: "only nodes hosting a serving endpoint",
            setup: |f| {
                f.service.external_traffic_policy = ExternalTrafficPolicy::Local;
                f.endpoints = vec![ready_on("iris1"), ready_on("iris2")];
            },
            want: &[
                ("iris2", Announce),
                ("iris1", Withhold(LOST)),
                ("iris3", Withhold(NOT_CANDIDATE)),
            ],
        },
        Case {
            name: "endpoints that cannot serve do not make a node local",
            setup: |f| {
                f.service.external_traffic_policy = ExternalTrafficPolicy::Local;
                f.endpoints = vec![
                    ready_on("iris1"),
                    endpoint(Some("iris3"), Some(false), None),
                ];
            },
            want: &[("iris1", Announce), ("iris3", Withhold(NOT_CANDIDATE))],
        },
        Case {
            name: "endpoints without nodeName count for nobody",
            setup: |f| {
                f.service.external_traffic_policy = ExternalTrafficPolicy::Local;
                f.endpoints = vec![endpoint(None, Some(true), None)];
            },
            want: &[
                ("iris1", Withhold(NO_CANDIDATES)),
                ("iris3", Withhold(NO_CANDIDATES)),
            ],
        },
        Case {
            name: "the only local node is excluded: nobody",
            setup: |f| {
                f.service.external_traffic_policy = ExternalTrafficPolicy::Local;
                f.node_mut("iris1")
                    .labels
                    .insert(EXCLUDE_FROM_LB_LABEL.into(), "true".into());
            },
            want: &[
                ("iris1", Withhold(NO_CANDIDATES)),
                ("iris2", Withhold(NO_CANDIDATES)),
            ],
        },
        Case {
            name: "the only local node is not a member: nobody",
            setup: |f| {
                f.service.external_traffic_policy = ExternalTrafficPolicy::Local;
                f.membership = members(&["iris2", "iris3"]);
            },
            want: &[("iris2", Withhold(NO_CANDIDATES))],
        },
    ]);
}

#[test]
fn node_exclusions() {
    run(&[
        Case {
            name: "NetworkUnavailable=True excludes",
            setup: |f| {
                f.node_mut("iris3")
                    .conditions
                    .insert("NetworkUnavailable".into(), "True".into());
            },
            want: &[("iris3", Withhold(NOT_CANDIDATE)), ("iris2", Announce)],
        },
        Case {
            name: "NetworkUnavailable False or Unknown does not",
            setup: |f| {
                f.node_mut("iris3")
                    .conditions
                    .insert("NetworkUnavailable".into(), "Unknown".into());
                f.node_mut("iris2")
                    .conditions
                    .insert("NetworkUnavailable".into(), "False".into());
            },
            want: &[("iris3", Announce)],
        },
        Case {
            name: "the exclude label excludes whatever its value",
            setup: |f| {
                f.node_mut("iris3")
                    .labels
                    .insert(EXCLUDE_FROM_LB_LABEL.into(), "false".into());
            },
            want: &[("iris3", Withhold(NOT_CANDIDATE)), ("iris2", Announce)],
        },
        Case {
            name: "ignore_exclude_lb keeps labelled nodes",
            setup: |f| {
                f.options.ignore_exclude_lb = true;
                f.node_mut("iris3")
                    .labels
                    .insert(EXCLUDE_FROM_LB_LABEL.into(), String::new());
            },
            want: &[("iris3", Announce)],
        },
        Case {
            name: "ignore_exclude_lb does not keep NetworkUnavailable nodes",
            setup: |f| {
                f.options.ignore_exclude_lb = true;
                f.node_mut("iris3")
                    .conditions
                    .insert("NetworkUnavailable".into(), "True".into());
            },
            want: &[("iris3", Withhold(NOT_CANDIDATE)), ("iris2", Announce)],
        },
        Case {
            name: "Ready is ignored by default (as in MetalLB)",
            setup: |f| {
                f.node_mut("iris3")
                    .conditions
                    .insert("Ready".into(), "False".into());
            },
            want: &[("iris3", Announce)],
        },
        Case {
            name: "require_node_ready drops not-Ready nodes when membership is disabled",
            setup: |f| {
                f.options.require_node_ready = true;
                f.node_mut("iris3")
                    .conditions
                    .insert("Ready".into(), "Unknown".into());
                f.node_mut("iris2").conditions.clear();
            },
            want: &[
                ("iris3", Withhold(NOT_CANDIDATE)),
                ("iris2", Withhold(NOT_CANDIDATE)),
                ("iris1", Announce),
            ],
        },
        Case {
            name: "require_node_ready has no effect with live membership",
            setup: |f| {
                f.options.require_node_ready = true;
                f.membership = members(&["iris1", "iris2", "iris3"]);
                f.node_mut("iris3")
                    .conditions
                    .insert("Ready".into(), "False".into());
            },
            want: &[("iris3", Announce)],
        },
    ]);
}

#[test]
fn advertisements_attached_to_the_pool() {
    run(&[
        Case {
            name: "no advertisement: nobody, per node",
            setup: |f| f.advertisements.clear(),
            want: &[("iris1", Withhold(NO_AD)), ("iris3", Withhold(NO_AD))],
        },
        Case {
            name: "attached by pool name",
            setup: |f| f.advertisements[0].ip_address_pools = strings(&["default"]),
            want: &[("iris3", Announce)],
        },
        Case {
            name: "attached to another pool only",
            setup: |f| f.advertisements[0].ip_address_pools = strings(&["other"]),
            want: &[("iris3", Withhold(NO_AD)), ("iris1", Withhold(NO_AD))],
        },
        Case {
            name: "unknown pool names are ignored, no fallback to all pools",
            setup: |f| f.advertisements[0].ip_address_pools = strings(&["missing"]),
            want: &[("iris3", Withhold(NO_AD))],
        },
        Case {
            name: "unknown names beside a known one",
            setup: |f| f.advertisements[0].ip_address_pools = strings(&["missing", "default"]),
            want: &[("iris3", Announce)],
        },
        Case {
            name: "attached by pool selector",
            setup: |f| {
                f.advertisements[0].ip_address_pool_selectors =
                    vec![LabelSelector::with_labels(&[("tier", "default")])];
            },
            want: &[("iris3", Announce)],
        },
        Case {
            name: "a pool selector matching no pool does not fall back to all pools",
            setup: |f| {
                f.advertisements[0].ip_address_pool_selectors =
                    vec![LabelSelector::with_labels(&[("tier", "gold")])];
            },
            want: &[("iris3", Withhold(NO_AD))],
        },
        Case {
            name: "names and selectors are a union",
            setup: |f| {
                f.advertisements[0].ip_address_pools = strings(&["other"]);
                f.advertisements[0].ip_address_pool_selectors =
                    vec![LabelSelector::with_labels(&[("tier", "default")])];
            },
            want: &[("iris3", Announce)],
        },
        Case {
            name: "advertisements outside the MetalLB namespace are ignored",
            setup: |f| f.advertisements[0].namespace = "default".into(),
            want: &[("iris3", Withhold(NO_AD))],
        },
        Case {
            name: "the MetalLB namespace is configurable",
            setup: |f| {
                f.options.metallb_namespace = "lb".into();
                f.advertisements[0].namespace = "lb".into();
                for pool in &mut f.pools {
                    pool.namespace = "lb".into();
                }
            },
            want: &[("iris3", Announce)],
        },
    ]);
}

#[test]
fn node_and_service_selectors() {
    run(&[
        Case {
            name: "nodeSelectors limit both who may answer and the candidates",
            setup: |f| {
                f.advertisements[0].node_selectors =
                    vec![LabelSelector::with_labels(&[("zone", "a")])]
            },
            want: &[
                ("iris3", Withhold(NO_AD)),
                ("iris2", Announce),
                ("iris1", Withhold(LOST)),
            ],
        },
        Case {
            name: "nodeSelectors are ORed and {} selects every node",
            setup: |f| {
                f.advertisements[0].node_selectors = vec![
                    LabelSelector::with_labels(&[("zone", "z")]),
                    LabelSelector::everything(),
                ];
            },
            want: &[("iris3", Announce)],
        },
        Case {
            name: "NotIn selects nodes without the key",
            setup: |f| {
                f.node_mut("iris3").labels.clear();
                f.advertisements[0].node_selectors = vec![LabelSelector {
                    match_labels: Labels::new(),
                    match_expressions: vec![LabelSelectorRequirement::new(
                        "zone",
                        SelectorOperator::NotIn,
                        &["a"],
                    )],
                }];
            },
            want: &[("iris3", Announce), ("iris1", Withhold(NO_AD))],
        },
        Case {
            name: "two advertisements: candidates are the union of their nodes",
            setup: |f| {
                f.advertisements[0].node_selectors =
                    vec![LabelSelector::with_labels(&[("zone", "a")])];
                let mut second = advertisement("l2-b");
                second.node_selectors = vec![LabelSelector::with_labels(&[("zone", "b")])];
                f.advertisements.push(second);
            },
            want: &[("iris3", Announce), ("iris2", Withhold(LOST))],
        },
        Case {
            name: "serviceSelectors that do not match",
            setup: |f| {
                f.advertisements[0].service_selectors =
                    vec![LabelSelector::with_labels(&[("app", "db")])]
            },
            want: &[("iris3", Withhold(NO_AD)), ("iris1", Withhold(NO_AD))],
        },
        Case {
            name: "serviceSelectors are ORed",
            setup: |f| {
                f.advertisements[0].service_selectors = vec![
                    LabelSelector::with_labels(&[("app", "db")]),
                    LabelSelector::with_labels(&[("app", "web")]),
                ];
            },
            want: &[("iris3", Announce)],
        },
        Case {
            name: "candidates come only from advertisements matching the service",
            setup: |f| {
                // l2 (all nodes) is for app=db only; l2-a (zone a) is for everyone.
                f.advertisements[0].service_selectors =
                    vec![LabelSelector::with_labels(&[("app", "db")])];
                let mut zone_a = advertisement("l2-a");
                zone_a.node_selectors = vec![LabelSelector::with_labels(&[("zone", "a")])];
                f.advertisements.push(zone_a);
            },
            want: &[
                ("iris3", Withhold(NO_AD)),
                ("iris2", Announce),
                ("iris1", Withhold(LOST)),
            ],
        },
    ]);
}

#[test]
fn service_level_reasons() {
    run(&[
        Case {
            name: "a class on the service, none on the speaker",
            setup: |f| f.service.lb_class = Some("other".into()),
            want: &[("iris3", Withhold(Reason::LoadBalancerClassMismatch))],
        },
        Case {
            name: "a class on the speaker, none on the service (MetalLB filters these too)",
            setup: |f| f.options.lb_class = Some("ours".into()),
            want: &[("iris3", Withhold(Reason::LoadBalancerClassMismatch))],
        },
        Case {
            name: "the same class on both",
            setup: |f| {
                f.options.lb_class = Some("ours".into());
                f.service.lb_class = Some("ours".into());
            },
            want: &[("iris3", Announce)],
        },
        Case {
            name: "no ingress IP yet",
            setup: |f| f.service.ingress_ips.clear(),
            want: &[("iris3", Withhold(Reason::NoIpAllocated))],
        },
        Case {
            name: "ingress IP in no pool",
            setup: |f| f.service.ingress_ips = vec![ip("203.0.113.1")],
            want: &[("iris3", Withhold(Reason::IpNotAllowed))],
        },
        Case {
            name: "ingress IPs split over two pools",
            setup: |f| f.service.ingress_ips = vec![ip("192.0.2.1"), ip("198.51.100.1")],
            want: &[("iris3", Withhold(Reason::IpNotAllowed))],
        },
        Case {
            name: "pools outside the MetalLB namespace are ignored",
            setup: |f| f.pools[0].namespace = "default".into(),
            want: &[("iris3", Withhold(Reason::IpNotAllowed))],
        },
        Case {
            name: "the class is checked before everything else",
            setup: |f| {
                f.service.lb_class = Some("other".into());
                f.service.ingress_ips.clear();
                f.endpoints.clear();
            },
            want: &[("iris3", Withhold(Reason::LoadBalancerClassMismatch))],
        },
    ]);
}

#[test]
fn the_first_ingress_ip_decides() {
    // 192.0.2.4: iris1 4dfe… < iris3 5970… < iris2 9feb…
    // 2001:db8::1: iris2 4344… < iris3 449a… < iris1 621f…
    run(&[
        Case {
            name: "IPv4 first",
            setup: |f| f.service.ingress_ips = vec![ip("192.0.2.4"), ip("2001:db8::1")],
            want: &[
                ("iris1", Announce),
                ("iris2", Withhold(LOST)),
                ("iris3", Withhold(LOST)),
            ],
        },
        Case {
            name: "IPv6 first",
            setup: |f| f.service.ingress_ips = vec![ip("2001:db8::1"), ip("192.0.2.4")],
            want: &[
                ("iris2", Announce),
                ("iris3", Withhold(LOST)),
                ("iris1", Withhold(LOST)),
            ],
        },
        Case {
            // Hashing "::ffff:192.0.2.4" would elect iris2 (246e… < 98d7…).
            name: "an IPv4-mapped address hashes as dotted IPv4",
            setup: |f| f.service.ingress_ips = vec![ip("::ffff:192.0.2.4")],
            want: &[("iris1", Announce), ("iris2", Withhold(LOST))],
        },
    ]);
}

#[test]
fn interfaces_follow_the_advertisements_selecting_the_winner() {
    run(&[
        Case {
            name: "one advertisement's list",
            setup: |f| f.advertisements[0].interfaces = strings(&["eth1", "eth0"]),
            want: &[("iris3", AnnounceOn(&["eth0", "eth1"]))],
        },
        Case {
            name: "union over advertisements selecting the node, others ignored",
            setup: |f| {
                f.advertisements[0].interfaces = strings(&["eth0"]);
                let mut zone_b = advertisement("l2-b");
                zone_b.node_selectors = vec![LabelSelector::with_labels(&[("zone", "b")])];
                zone_b.interfaces = strings(&["bond0", "eth0"]);
                let mut zone_a = advertisement("l2-a");
                zone_a.node_selectors = vec![LabelSelector::with_labels(&[("zone", "a")])];
                zone_a.interfaces = strings(&["eth9"]);
                f.advertisements.extend([zone_b, zone_a]);
            },
            want: &[("iris3", AnnounceOn(&["bond0", "eth0"]))],
        },
        Case {
            name: "an advertisement without interfaces means all of them",
            setup: |f| {
                let mut listed = advertisement("l2-listed");
                listed.interfaces = strings(&["eth0"]);
                f.advertisements.push(listed);
            },
            want: &[("iris3", Announce)],
        },
        Case {
            name: "service-mismatched advertisements add no interfaces",
            setup: |f| {
                f.advertisements[0].interfaces = strings(&["eth0"]);
                let mut other = advertisement("l2-db");
                other.service_selectors = vec![LabelSelector::with_labels(&[("app", "db")])];
                other.interfaces = strings(&["eth7"]);
                f.advertisements.push(other);
            },
            want: &[("iris3", AnnounceOn(&["eth0"]))],
        },
    ]);
}

#[test]
fn removing_a_non_owner_never_moves_the_ip() {
    let mut fixture = Fixture::default();
    assert_eq!(fixture.elect_checked().winner.as_deref(), Some("iris3"));
    fixture.nodes.retain(|n| n.name != "iris2");
    assert_eq!(fixture.elect_checked().winner.as_deref(), Some("iris3"));
    fixture.nodes.retain(|n| n.name != "iris3");
    assert_eq!(fixture.elect_checked().winner.as_deref(), Some("iris1"));
}

#[test]
fn reasons_print_metallb_strings() {
    assert_eq!(LOST.to_string(), "notOwner");
    assert_eq!(NO_ENDPOINT.as_str(), "notOwner");
    assert_eq!(NO_AD.to_string(), "noMatchingAdvertisement");
    assert_eq!(Reason::NoIpAllocated.to_string(), "noIPAllocated");
    assert_eq!(Reason::IpNotAllowed.to_string(), "ipNotAllowed");
    assert_eq!(
        Reason::LoadBalancerClassMismatch.to_string(),
        "loadBalancerClassMismatch"
    );
    assert_eq!(
        Decision::Withhold(NO_ENDPOINT).to_string(),
        "notOwner (no endpoint can serve)"
    );
    assert_eq!(
        Decision::Announce {
            interfaces: strings(&["eth0", "eth1"])
        }
        .to_string(),
        "announce on eth0,eth1"
    );
    assert_eq!(Decision::Announce { interfaces: vec![] }.reason(), None);
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn hashes_match_sha256sum() {
    // printf 'iris1#192.0.2.1' | sha256sum, and so on.
    #[rustfmt::skip]
    let vectors = [
        ("iris1", "192.0.2.1", "f5dfc24977befe645f132c592fc299c8a2dadfd855ba3b13cac3956d26c47559"),
        ("iris2", "192.0.2.1", "d302b0ab7147feb49550a36c001fb04acae773032693d91f72fbdfe3ebbfe590"),
        ("iris3", "192.0.2.1", "3ef904ccfc7595de68c2a747d6de6befbd662a463f86cad6e660ebd80ccf00b2"),
        ("iris1", "2001:db8::1", "621f4bb354868f03efece07130e2b432be3588934f593ff37f91e14a35926536"),
        ("iris2", "2001:db8::1", "43441226a574795c04029442c6dde388f6565ad10a6e1f23476961538d71955e"),
        ("node-a", "10.0.0.1", "dd41591fe8f31f9f38e297fe9892a8eff47892ea017c4167619a62f366fb8149"),
        ("node-b", "10.0.0.1", "2acae88581fd8b477d8abf5bd882a2094b0c9631507ebc7770a5682a13cd71f1"),
        ("iris1", "2001:db8:0:1::1", "52a3e073f8586549451b28a4e857195139e54a9431608d0794d0a4db1d9d94bf"),
    ];
    for (node, ip_text, digest) in vectors {
        assert_eq!(
            hex(&election_hash(node, ip_text)),
            digest,
            "{node}#{ip_text}"
        );
    }
}

#[test]
fn hash_order_picks_the_byte_wise_smallest() {
    // (ip, nodes in expected order) from the sha256sum digests:
    // 10.0.0.1: node-b 2aca… < node-a dd41… < node-c f949…
    // 10.0.0.3: node-c 11ea… < node-a 587e… < node-b a448…
    // 192.0.2.5: iris1 38ae… < iris2 3a01… < iris3 5d6b… (first bytes 0x38 < 0x3a)
    // 2001:db8::1: iris2 4344… < iris3 449a… (first bytes equal)
    // 2001:db8:0:1::1: iris1 52a3… < iris2 ac67…; as 2001:db8:0:1:0:0:0:1 it would be iris2.
    let table: &[(&str, &[&str])] = &[
        ("10.0.0.1", &["node-b", "node-a", "node-c"]),
        ("10.0.0.3", &["node-c", "node-a", "node-b"]),
        ("192.0.2.5", &["iris1", "iris2", "iris3"]),
        ("2001:db8::1", &["iris2", "iris3", "iris1"]),
        ("2001:db8:0:1:0:0:0:1", &["iris1", "iris2"]),
    ];
    for &(address, order) in table {
        let pool = pool("all", NS, "all", &["0.0.0.0/0", "::/0"]);
        let mut nodes: Vec<Node> = order.iter().map(|n| node(n, "a")).collect();
        let service = Service {
            ingress_ips: vec![ip(address)],
            ..Service::default()
        };
        let endpoints = [endpoint(None, None, None)];
        for expected_winner in order.iter() {
            let view = ClusterView::new(
                ElectionOptions::default(),
                nodes.clone(),
                [pool.clone()],
                [advertisement("l2")],
            );
            let election = elect(&service, &endpoints, &view, &Membership::Disabled);
            assert_eq!(
                election.winner.as_deref(),
                Some(*expected_winner),
                "{address}"
            );
            // The winner leaving hands the IP to the next in hash order.
            nodes.retain(|n| n.name != *expected_winner);
        }
    }
}

#[test]
fn ip_text_is_go_net_ip_string() {
    #[rustfmt::skip]
    let table = [
        ("192.0.2.1", "192.0.2.1"),
        ("2001:db8::1", "2001:db8::1"),
        ("2001:db8:0:1:0:0:0:1", "2001:db8:0:1::1"),
        ("2001:0DB8:0000:0000:0000:0000:0000:0001", "2001:db8::1"),
        ("::ffff:192.0.2.1", "192.0.2.1"),
        ("::ffff:0:0", "0.0.0.0"),
        ("::", "::"),
        ("::1", "::1"),
        // Leftmost of two equally long runs.
        ("2001:db8:0:0:1:0:0:1", "2001:db8::1:0:0:1"),
        // The longer run wins over the leftmost.
        ("2001:0:0:1:0:0:0:1", "2001:0:0:1::1"),
        // A lone zero group stays 0.
        ("2001:db8:0:1:1:1:1:1", "2001:db8:0:1:1:1:1:1"),
        ("1:0:2:0:3:0:4:0", "1:0:2:0:3:0:4:0"),
        // IPv4-compatible (deprecated) addresses are plain IPv6 to Go.
        ("::102:304", "::102:304"),
        ("::192.0.2.1", "::c000:201"),
        ("fe80::", "fe80::"),
        ("ff02::1:ff00:1", "ff02::1:ff00:1"),
    ];
    for (input, go) in table {
        assert_eq!(go_ip_text(ip(input)), go, "{input}");
    }
}
