//! Properties over random clusters: at most one announcer, the same one every
//! node computes, and stability when a non-owner disappears.

use std::collections::BTreeSet;

use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;
use proptest::sample::subsequence;

use super::*;

const NODE_NAMES: [&str; 6] = ["n0", "n1", "n2", "n3", "n4", "n5"];
/// Appears in memberships and endpoints but never has a Node object.
const GHOST: &str = "ghost";
/// Addresses inside p0 (both families), p1 and p2's range.
const POOL_IPS: [&[&str]; 3] = [
    &["10.0.0.7", "10.0.0.9", "fd00::7"],
    &["10.1.0.1"],
    &["10.2.0.40"],
];
/// Just past p2's range, and in no pool.
const STRAY_IPS: [&str; 2] = ["10.2.0.60", "192.168.0.1"];

fn some_labels(
    key: &'static str,
    values: &'static [&'static str],
) -> impl Strategy<Value = Labels> {
    option::of(proptest::sample::select(values))
        .prop_map(move |value| value.map(|v| labels(&[(key, v)])).unwrap_or_default())
}

fn arb_selector(
    key: &'static str,
    values: &'static [&'static str],
) -> impl Strategy<Value = LabelSelector> {
    let operator = proptest::sample::select(
        &[
            SelectorOperator::In,
            SelectorOperator::NotIn,
            SelectorOperator::Exists,
            SelectorOperator::DoesNotExist,
        ][..],
    );
    prop_oneof![
        Just(LabelSelector::everything()),
        some_labels(key, values).prop_map(|match_labels| LabelSelector {
            match_labels,
            ..LabelSelector::default()
        }),
        (operator, subsequence(values, 1..=values.len())).prop_map(move |(operator, chosen)| {
            let values = match operator {
                SelectorOperator::In | SelectorOperator::NotIn => chosen,
                SelectorOperator::Exists | SelectorOperator::DoesNotExist => Vec::new(),
            };
            LabelSelector {
                match_labels: Labels::new(),
                match_expressions: vec![LabelSelectorRequirement::new(key, operator, &values)],
            }
        }),
    ]
}

fn arb_node(name: &'static str) -> impl Strategy<Value = Node> {
    let condition = || option::of(proptest::sample::select(&["True", "False", "Unknown"][..]));
    (
        some_labels("zone", &["a", "b"]),
        prop::bool::weighted(0.15),
        condition(),
        condition(),
    )
        .prop_map(move |(mut labels, excluded, network_unavailable, ready)| {
            if excluded {
                labels.insert(EXCLUDE_FROM_LB_LABEL.to_owned(), "false".to_owned());
            }
            let conditions = [
                ("NetworkUnavailable", network_unavailable),
                ("Ready", ready),
            ]
            .into_iter()
            .filter_map(|(kind, status)| status.map(|s| (kind.to_owned(), s.to_owned())))
            .collect();
            Node {
                name: name.to_owned(),
                labels,
                conditions,
                internal_ips: Vec::new(),
            }
        })
}

fn arb_nodes() -> impl Strategy<Value = Vec<Node>> {
    let all: Vec<_> = NODE_NAMES.iter().map(|n| arb_node(n)).collect();
    (all, vec(any::<bool>(), NODE_NAMES.len())).prop_map(|(nodes, keep)| {
        nodes
            .into_iter()
            .zip(keep)
            .filter(|(_, k)| *k)
            .map(|(n, _)| n)
            .collect()
    })
}

fn arb_namespace() -> impl Strategy<Value = String> {
    prop_oneof![9 => Just(NS.to_owned()), 1 => Just("default".to_owned())]
}

fn arb_pools() -> impl Strategy<Value = Vec<IpAddressPool>> {
    let addresses: [&[&str]; 3] = [
        &["10.0.0.0/24", "fd00::/64"],
        &["10.1.0.0/24"],
        &["10.2.0.0-10.2.0.50"],
    ];
    let tiers = vec(
        (
            arb_namespace(),
            proptest::sample::select(&["gold", "silver"][..]),
        ),
        3,
    );
    tiers.prop_map(move |tiers| {
        tiers
            .into_iter()
            .enumerate()
            .map(|(i, (namespace, tier))| pool(&format!("p{i}"), &namespace, tier, addresses[i]))
            .collect()
    })
}

fn arb_advertisement(index: usize) -> impl Strategy<Value = L2Advertisement> {
    (
        arb_namespace(),
        prop_oneof![2 => Just(vec![]), 1 => subsequence(&["p0", "p1", "p2", "missing"][..], 1..=2)],
        vec(arb_selector("tier", &["gold", "silver", "bronze"]), 0..=1),
        vec(arb_selector("zone", &["a", "b"]), 0..=2),
        subsequence(&["eth0", "eth1"][..], 0..=2),
        vec(arb_selector("app", &["web", "db"]), 0..=1),
    )
        .prop_map(
            move |(
                namespace,
                pools,
                pool_selectors,
                node_selectors,
                interfaces,
                service_selectors,
            )| {
                L2Advertisement {
                    name: format!("l2-{index}"),
                    namespace,
                    ip_address_pools: strings(&pools),
                    ip_address_pool_selectors: pool_selectors,
                    node_selectors,
                    interfaces: strings(&interfaces),
                    service_selectors,
                }
            },
        )
}

fn arb_advertisements() -> impl Strategy<Value = Vec<L2Advertisement>> {
    prop_oneof![1 => Just(0usize), 6 => 1..=3usize]
        .prop_flat_map(|count| (0..count).map(arb_advertisement).collect::<Vec<_>>())
}

fn arb_endpoint() -> impl Strategy<Value = Endpoint> {
    let node_names: Vec<&str> = NODE_NAMES.iter().copied().chain([GHOST]).collect();
    (
        option::weighted(0.9, proptest::sample::select(node_names)),
        option::of(any::<bool>()),
        option::of(any::<bool>()),
        option::of(any::<bool>()),
    )
        .prop_map(|(node, ready, serving, terminating)| Endpoint {
            node_name: node.map(str::to_owned),
            ready,
            serving,
            terminating,
        })
}

/// Mostly addresses of one pool, so that most services get to the election.
fn arb_ingress_ips() -> impl Strategy<Value = Vec<&'static str>> {
    let stray = proptest::sample::select(&STRAY_IPS[..]);
    let any_ip = proptest::sample::select(
        POOL_IPS
            .iter()
            .flat_map(|p| p.iter().copied())
            .collect::<Vec<_>>(),
    );
    prop_oneof![
        8 => (0..POOL_IPS.len()).prop_flat_map(|pool| vec(proptest::sample::select(POOL_IPS[pool]), 1..=2)),
        1 => Just(vec![]),
        1 => vec(prop_oneof![stray, any_ip], 1..=2),
    ]
}

fn arb_service(index: usize) -> impl Strategy<Value = (Service, Vec<Endpoint>)> {
    (
        arb_ingress_ips(),
        some_labels("app", &["web", "db"]),
        prop::bool::ANY,
        option::weighted(0.05, Just("other")),
        vec(arb_endpoint(), 0..=4),
    )
        .prop_map(move |(ingress, labels, local, lb_class, endpoints)| {
            let service = Service {
                namespace: "default".to_owned(),
                name: format!("svc-{index}"),
                labels,
                external_traffic_policy: if local {
                    ExternalTrafficPolicy::Local
                } else {
                    ExternalTrafficPolicy::Cluster
                },
                lb_class: lb_class.map(str::to_owned),
                ingress_ips: ingress.into_iter().map(ip).collect(),
                ..Service::default()
            };
            (service, endpoints)
        })
}

fn arb_membership() -> impl Strategy<Value = Membership> {
    let names: Vec<&str> = NODE_NAMES.iter().copied().chain([GHOST]).collect();
    prop_oneof![
        Just(Membership::Disabled),
        subsequence(names, 0..=NODE_NAMES.len() + 1).prop_map(|chosen| Membership::Members(
            chosen.into_iter().map(str::to_owned).collect()
        )),
    ]
}

fn arb_options() -> impl Strategy<Value = ElectionOptions> {
    (
        any::<bool>(),
        any::<bool>(),
        option::weighted(0.05, Just("other")),
    )
        .prop_map(
            |(ignore_exclude_lb, require_node_ready, lb_class)| ElectionOptions {
                ignore_exclude_lb,
                require_node_ready,
                lb_class: lb_class.map(str::to_owned),
                ..ElectionOptions::default()
            },
        )
}

#[derive(Debug, Clone)]
struct World {
    options: ElectionOptions,
    nodes: Vec<Node>,
    pools: Vec<IpAddressPool>,
    advertisements: Vec<L2Advertisement>,
    membership: Membership,
    services: Vec<(Service, Vec<Endpoint>)>,
}

impl World {
    fn view(&self) -> ClusterView {
        view_of(
            &self.options,
            &self.nodes,
            &self.pools,
            &self.advertisements,
        )
    }

    fn without_node(&self, name: &str) -> World {
        let mut world = self.clone();
        world.nodes.retain(|n| n.name != name);
        if let Membership::Members(members) = &mut world.membership {
            members.remove(name);
        }
        world
    }
}

fn arb_world() -> impl Strategy<Value = World> {
    (
        arb_options(),
        arb_nodes(),
        arb_pools(),
        arb_advertisements(),
        arb_membership(),
        (1..=3usize).prop_flat_map(|count| (0..count).map(arb_service).collect::<Vec<_>>()),
    )
        .prop_map(
            |(options, nodes, pools, advertisements, membership, services)| World {
                options,
                nodes,
                pools,
                advertisements,
                membership,
                services,
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    #[test]
    fn exactly_the_winner_announces(world in arb_world()) {
        let view = world.view();
        let askers: BTreeSet<&str> = NODE_NAMES.iter().copied().chain([GHOST]).collect();
        for (service, endpoints) in &world.services {
            let election = elect(service, endpoints, &view, &world.membership);
            let announcers: Vec<&str> = askers
                .iter()
                .copied()
                .filter(|node| should_announce(node, service, endpoints, &view, &world.membership).is_announce())
                .collect();
            prop_assert_eq!(announcers, election.winner.as_deref().into_iter().collect::<Vec<_>>());
            for (node, decision) in &election.per_node {
                prop_assert_eq!(decision, &should_announce(node, service, endpoints, &view, &world.membership));
            }
            if let Some(winner) = &election.winner {
                prop_assert!(view.node(winner).is_some(), "a node without a Node object won");
            }
        }
    }

    #[test]
    fn removing_a_non_owner_never_moves_the_ip(world in arb_world()) {
        let view = world.view();
        for (service, endpoints) in &world.services {
            let Some(winner) = elect(service, endpoints, &view, &world.membership).winner else {
                continue;
            };
            for gone in NODE_NAMES.iter().chain(&[GHOST]).filter(|n| **n != winner) {
                let smaller = world.without_node(gone);
                let after = elect(service, endpoints, &smaller.view(), &smaller.membership);
                prop_assert_eq!(after.winner.as_deref(), Some(winner.as_str()), "after removing {}", gone);
            }
        }
    }
}
