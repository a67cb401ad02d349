use std::{collections::BTreeSet, net::IpAddr, path::Path};

use super::reconciler::{InterfaceSelection, Reconciler};
use crate::{
    cluster::{self, Change, ServiceKey},
    election::{Decision, ElectionOptions, Endpoint, Membership},
};

fn iris() -> cluster::ClusterState {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/examples/iris-regression.yaml");
    cluster::load(&path).expect("the example loads")
}

fn web() -> ServiceKey {
    ServiceKey::new("default", "web")
}

fn ready_on(node: &str) -> Endpoint {
    Endpoint {
        node_name: Some(node.into()),
        ready: Some(true),
        ..Endpoint::default()
    }
}

fn reconciler(node: &str, membership: Membership) -> Reconciler {
    let mut r = Reconciler::new(node, ElectionOptions::default(), membership);
    r.apply(Change::Reset(iris()));
    r
}

fn owned_ips(r: &Reconciler) -> Vec<IpAddr> {
    r.owned().keys().copied().collect()
}

#[test]
fn regression_2425_membership_disabled_owner_announces() {
    let iris1 = reconciler("iris1", Membership::Disabled);
    let iris2 = reconciler("iris2", Membership::Disabled);
    assert_eq!(
        owned_ips(&iris1),
        ["192.0.2.100".parse::<IpAddr>().unwrap()]
    );
    assert!(owned_ips(&iris2).is_empty());
    assert_eq!(
        iris2
            .decision(&web())
            .and_then(Decision::reason)
            .map(|r| r.as_str()),
        Some("notOwner")
    );
}

#[test]
fn empty_member_set_means_nobody() {
    for node in ["iris1", "iris2"] {
        let r = reconciler(node, Membership::Members(BTreeSet::new()));
        assert!(
            owned_ips(&r).is_empty(),
            "{node} announces with no live member"
        );
    }
}

#[test]
fn moving_the_endpoint_moves_the_ip_and_reports_only_that_service() {
    let mut iris1 = reconciler("iris1", Membership::Disabled);
    let mut iris2 = reconciler("iris2", Membership::Disabled);
    let changes1 = iris1.apply(Change::Endpoints(web(), vec![ready_on("iris2")]));
    let changes2 = iris2.apply(Change::Endpoints(web(), vec![ready_on("iris2")]));
    assert!(owned_ips(&iris1).is_empty());
    assert_eq!(
        owned_ips(&iris2),
        ["192.0.2.100".parse::<IpAddr>().unwrap()]
    );
    assert_eq!(changes1.len(), 1);
    assert!(changes1[0]
        .before
        .as_ref()
        .is_some_and(Decision::is_announce));
    assert!(!changes1[0].after.as_ref().unwrap().is_announce());
    assert_eq!(changes2.len(), 1);
    assert!(changes2[0].after.as_ref().unwrap().is_announce());
}

#[test]
fn reapplying_the_same_state_changes_nothing() {
    let mut r = reconciler("iris1", Membership::Disabled);
    assert!(r.apply(Change::Reset(iris())).is_empty());
    assert!(r.apply(Change::Nodes(iris().nodes)).is_empty());
}

#[test]
fn deleting_the_service_withdraws_with_no_decision() {
    let mut r = reconciler("iris1", Membership::Disabled);
    let changes = r.apply(Change::ServiceDeleted(web()));
    assert_eq!(changes.len(), 1);
    assert_eq!(changes[0].after, None);
    assert!(owned_ips(&r).is_empty());
}

#[test]
fn shared_ip_is_owned_once_with_both_services() {
    let mut state = iris();
    let mut other = state.services[0].clone();
    other.service.name = "web-udp".into();
    state.services.push(other);
    let mut r = Reconciler::new("iris1", ElectionOptions::default(), Membership::Disabled);
    r.apply(Change::Reset(state));
    let owned = r.owned();
    assert_eq!(owned.len(), 1);
    let entry = owned.values().next().unwrap();
    assert_eq!(entry.services.len(), 2);
    assert_eq!(entry.interfaces, InterfaceSelection::All);
}

/// The owned set is kept per re-elected service; it must equal what the
/// decisions say after IP changes, sharing and advertisement changes.
#[test]
fn owned_set_follows_ip_changes_sharing_and_interfaces() {
    let mut state = iris();
    state.advertisements[0].interfaces = vec!["eth1".into()];
    let mut other = state.services[0].clone();
    other.service.name = "web-udp".into();
    state.services.push(other.clone());
    let mut r = Reconciler::new("iris1", ElectionOptions::default(), Membership::Disabled);
    r.apply(Change::Reset(state.clone()));
    let shared: IpAddr = "192.0.2.100".parse().unwrap();
    let entry = &r.owned()[&shared];
    assert_eq!(entry.services.len(), 2);
    assert_eq!(
        entry.interfaces,
        InterfaceSelection::Named(BTreeSet::from(["eth1".to_owned()]))
    );

    // web-udp moves to its own IP: the decision stays "announce", the
    // owned set must still change.
    let moved: IpAddr = "192.0.2.101".parse().unwrap();
    let mut service = other.service.clone();
    service.ingress_ips = vec![moved];
    assert!(r.apply(Change::ServiceApplied(service)).is_empty());
    assert_eq!(owned_ips(&r), [shared, moved]);
    assert_eq!(r.owned()[&shared].services, BTreeSet::from([web()]));
    assert_eq!(
        r.owned()[&moved].services,
        BTreeSet::from([ServiceKey::new("default", "web-udp")])
    );

    // No advertisement lists interfaces any more: every IP on all of them.
    let mut ads = state.advertisements.clone();
    ads[0].interfaces.clear();
    r.apply(Change::Advertisements(ads));
    assert!(r
        .owned()
        .values()
        .all(|o| o.interfaces == InterfaceSelection::All));

    r.apply(Change::ServiceDeleted(web()));
    assert_eq!(owned_ips(&r), [moved]);
    assert_eq!(r.owned_by(&web()).count(), 0);
    assert_eq!(
        r.owned_by(&ServiceKey::new("default", "web-udp"))
            .map(|(ip, _)| *ip)
            .collect::<Vec<_>>(),
        [moved]
    );
}
