//! The reconcile steps of the daemon: cluster changes through the settle
//! gate into the reconciler, its decisions into logs and status, and what
//! this node owns into the maps and announcements. Each step takes the
//! shared [`Context`] and the node-local [`NodeState`].

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
};

use tracing::{error, info, warn};

use speaker_common::VlanPath;

use super::{
    config::RunConfig,
    context::Context,
    gains::AnsweringView,
    reconciler::{DecisionChange, InterfaceSelection, OwnedIp, Reconciler},
    settle::{GateEvent, SettleGate, Step},
};
use crate::{
    cluster::config::StaleCause,
    cluster::{Change, ServiceKey},
    dataplane::{
        bond_slaves,
        conflicts::{NewConflict, RELEASE_QUIET},
        sync, AttachMode,
    },
    election::{Decision, Membership},
    error::Error,
    interfaces::{
        self, bonds,
        discovery::{self, Link},
        offload,
        vlan::{self, Placement},
        Interface,
    },
    kube::status::announced_services,
    membership::Gossip,
};

/// What the daemon keeps between events, apart from the shared handles.
pub struct NodeState {
    pub reconciler: Reconciler,
    /// When the election may use gossip's member set, and the maps be
    /// written.
    pub gate: SettleGate,
    pub interfaces: Vec<Interface>,
    /// The links of the last scan, the announce list's among them.
    pub links: Vec<Link>,
    /// Where each announce interface's VIPs are answered, by its index
    /// (a VLAN device's on its parent); absent: on the interface itself.
    pub placements: BTreeMap<u32, Placement>,
    /// Services whose listed interfaces are all missing here, already reported.
    pub failed: BTreeSet<ServiceKey>,
    /// Running gossip, once started (at start, or after the first cluster
    /// description when the advertise address comes from our Node object).
    pub gossip: Option<Gossip>,
    /// Speaker pods' IPs, when listed by label.
    pub pod_peers: Vec<IpAddr>,
    /// Gossip's member reports, from a just-started gossip until the loop
    /// hands them to a supervised forwarding task.
    pub pending_members: Option<tokio::sync::watch::Receiver<BTreeSet<String>>>,
    /// What this process answers for and has announced; gains are judged
    /// against it, not against the (possibly adopted) maps.
    pub answering: AnsweringView,
    /// Gossip rejoins already acted upon (see [`AnsweringView::forget`]).
    pub rejoins_seen: u64,
}

impl NodeState {
    pub fn new(config: &RunConfig) -> Self {
        let gossiping = config.gossip.is_some();
        NodeState {
            reconciler: Reconciler::new(
                config.node_name.clone(),
                config.options.clone(),
                if gossiping {
                    // Nobody wins until the gate hands the settled member set.
                    Membership::Members(BTreeSet::new())
                } else {
                    config.membership.clone()
                },
            ),
            gate: if gossiping {
                SettleGate::closed()
            } else {
                SettleGate::without_gossip()
            },
            interfaces: Vec::new(),
            links: Vec::new(),
            placements: BTreeMap::new(),
            failed: BTreeSet::new(),
            gossip: None,
            pod_peers: Vec::new(),
            pending_members: None,
            answering: AnsweringView::default(),
            rejoins_seen: 0,
        }
    }
}

/// Map or link updates failed; `/readyz` says so until a sync succeeds.
const MAPS: &str = "dataplane maps";

/// Applies a batch of cluster changes, then reports and syncs.
pub async fn apply(ctx: &mut Context, node: &mut NodeState, batch: Vec<Change>) {
    let health = ctx.health.clone();
    let busy = health.busy();
    let mut decisions = Vec::new();
    let mut nodes_changed = false;
    let mut reset = false;
    for change in batch {
        if let Change::Membership(Membership::Members(members)) = change {
            // Only through the gate: until membership has settled the
            // reconciler keeps the empty member set it started with.
            let step = node.gate.members_reported(members);
            decisions.extend(pass_gate(node, step));
            continue;
        }
        let synced = matches!(change, Change::Reset(_));
        let nodes = synced || matches!(change, Change::Nodes(_));
        decisions.extend(node.reconciler.apply(change));
        if nodes {
            nodes_changed = true;
            let step = node.gate.nodes_known(gossiping_nodes(&node.reconciler));
            decisions.extend(pass_gate(node, step));
        }
        if synced {
            reset = true;
            ctx.metrics.client.config_loaded.set(1);
            let step = node.gate.source_synced();
            decisions.extend(pass_gate(node, step));
        }
    }
    let refusal = node.reconciler.stale_config().map(ToString::to_string);
    ctx.metrics.client.stale.set(StaleCause::Refused, refusal);
    if reset {
        // The previous state was just dropped, possibly a large one.
        crate::allocator::release_free_memory();
    }
    // Awaiting other components (gossip, the API server) is not work the
    // heartbeat should wait for: only the computing above and below is.
    drop(busy);
    if nodes_changed {
        super::gossip::nodes_changed(ctx, node).await;
    }
    settle_decided(ctx, node, decisions).await;
}

/// The settle deadline came: settles by time unless our gossip key looks
/// wrong.
pub async fn settle_deadline(ctx: &mut Context, node: &mut NodeState) {
    let key_mismatch = node.gossip.as_ref().is_some_and(Gossip::key_mismatch);
    let step = node
        .gate
        .deadline_reached(tokio::time::Instant::now(), key_mismatch);
    let health = ctx.health.clone();
    // Settling re-elects every service: work the heartbeat thread watches.
    let busy = health.busy();
    let decisions = pass_gate(node, step);
    drop(busy);
    settle_decided(ctx, node, decisions).await;
}

/// Reports the decisions and brings the maps in line.
async fn settle_decided(ctx: &mut Context, node: &mut NodeState, decisions: Vec<DecisionChange>) {
    for change in &decisions {
        report(ctx, node, change).await;
    }
    sync(ctx, node).await;
}

/// Logs the gate's event and hands what it lets through to the reconciler.
fn pass_gate(node: &mut NodeState, step: Step) -> Vec<DecisionChange> {
    match step.event {
        Some(GateEvent::SettledByMembers) => info!("membership settled: every node is a member"),
        Some(GateEvent::SettledByTime) => {
            info!("membership settled by time: electing with the members seen so far")
        }
        // Alone because every peer's gossip fails authentication: a
        // configuration error, not dead peers.
        Some(GateEvent::KeyMismatch) => error!(
            "not announcing: gossip from the other speakers fails authentication \
             (is --memberlist-key-file the same on every node?)"
        ),
        None => {}
    }
    match step.hand {
        Some(members) => node
            .reconciler
            .apply(Change::Membership(Membership::Members(members))),
        None => Vec::new(),
    }
}

/// Nodes that could gossip: those with an address.
fn gossiping_nodes(reconciler: &Reconciler) -> BTreeSet<String> {
    reconciler
        .view()
        .nodes()
        .iter()
        .filter(|n| !n.internal_ips.is_empty())
        .map(|n| n.name.clone())
        .collect()
}

/// Logs every gain and withdrawal with its reason, and writes status.
/// Costs what the one service holds, not what the node owns.
async fn report(ctx: &Context, node: &mut NodeState, change: &DecisionChange) {
    let was = change.before.as_ref().is_some_and(Decision::is_announce);
    let is = change.after.as_ref().is_some_and(Decision::is_announce);
    let service = &change.service;
    if !was && is {
        let ips: Vec<String> = node
            .reconciler
            .owned_by(service)
            .map(|(ip, _)| ip.to_string())
            .collect();
        info!(
            event = "serviceAnnounced",
            service = %service,
            ip = ips.join(","),
            node = ctx.config.node_name,
            protocol = "layer2",
            "{service}: announcing from this node"
        );
    } else if was && !is {
        let reason = change
            .after
            .as_ref()
            .map_or_else(|| "service gone".to_owned(), |d| d.to_string());
        info!(
            event = "serviceWithdrawn",
            service = %service,
            node = ctx.config.node_name,
            protocol = "layer2",
            reason,
            "{service}: withdrawn ({reason})"
        );
        node.failed.remove(service);
    }
}

pub fn rescan_interfaces(ctx: &Context, node: &mut NodeState) {
    match discovery::links() {
        Ok(links) => {
            let found = discovery::announce_interfaces_of(&links, &ctx.config.exclude);
            if found != node.interfaces {
                let names: Vec<&str> = found.iter().map(|i| i.name.as_str()).collect();
                info!("announcing on interfaces: {}", names.join(", "));
            }
            node.placements = placements(&found, &links, &node.placements);
            node.interfaces = found;
            node.links = links;
        }
        // Keep the last good list: a failed scan must not withdraw anything.
        Err(e) => ctx.report_error("listing interfaces", &e),
    }
}

/// Where each of `interfaces` is answered, logging each placement that is
/// new or changed since `before`: a VLAN device's parent once, each fallback
/// to the VLAN device itself as a warning with its reason.
fn placements(
    interfaces: &[Interface],
    links: &[Link],
    before: &BTreeMap<u32, Placement>,
) -> BTreeMap<u32, Placement> {
    let strips_tags = |link: &Link| {
        offload::strips_vlan_tags(&link.name).unwrap_or_else(|e| {
            // Unknown counts as stripping: never answer a stripped-tag
            // request untagged.
            warn!(
                "cannot tell whether {} strips VLAN tags ({e}); assuming it does",
                link.name
            );
            true
        })
    };
    let mut placed = BTreeMap::new();
    for interface in interfaces {
        let placement = vlan::place(interface, links, strips_tags);
        if placement.attach == *interface && placement.fallback.is_none() {
            continue;
        }
        if before.get(&interface.index) != Some(&placement) {
            match &placement.fallback {
                Some(reason) => warn!(
                    interface = interface.name,
                    "VLAN interface {}: answering on it in generic mode, untagged, not on its \
                     parent: {reason}",
                    interface.name
                ),
                None => info!(
                    interface = interface.name,
                    "VLAN interface {}: answering on {} for requests tagged {}",
                    interface.name,
                    placement.attach.name,
                    vlan::describe(placement.vlan)
                ),
            }
        }
        placed.insert(interface.index, placement);
    }
    placed
}

/// Brings the maps to exactly what this node owns, on the interfaces it
/// announces on; starts announcements for what is new.
pub async fn sync(ctx: &mut Context, node: &mut NodeState) {
    if !node.gate.is_open() {
        return;
    }
    let health = ctx.health.clone();
    let busy = health.busy();
    ctx.metrics
        .ready
        .store(true, std::sync::atomic::Ordering::Relaxed);
    let owned = node.reconciler.owned();
    if let Ok(mut announced) = ctx.metrics.announced.write() {
        *announced = owned
            .iter()
            .flat_map(|(ip, o)| o.services.iter().map(move |s| (s.clone(), *ip)))
            .collect();
    }
    let (desired, unplaceable) = desired(node);
    if let Some(status) = &ctx.status {
        status.publish(announced_services(
            node.reconciler.owned(),
            &node.interfaces,
        ));
    }
    drop(busy);
    for (ip, entry) in unplaceable {
        announce_failed(ctx, node, ip, &entry).await;
    }
    let _busy = health.busy();
    let mut attach_failed = None;
    // VLAN devices answering on themselves (a fallback) offer generic mode only.
    let generic_only: BTreeSet<u32> = node
        .placements
        .values()
        .filter(|p| p.fallback.is_some())
        .map(|p| p.attach.index)
        .collect();
    for (name, index) in desired
        .iter()
        .map(|d| (d.interface.name.clone(), d.interface.index))
        .collect::<BTreeSet<_>>()
    {
        // Attached (or re-attached, which replaces an adopted program
        // atomically) once by this process; the link stays held.
        let mut ownership = ctx.ownership.lock().unwrap_or_else(|p| p.into_inner());
        if ownership.holds(&name) {
            continue;
        }
        let attached = if generic_only.contains(&index) {
            ownership.attach_in(&name, AttachMode::Generic)
        } else {
            ownership.attach(&name)
        };
        match attached {
            Ok(()) => {}
            Err(e) => {
                ctx.report_error(&format!("attaching XDP to {name}"), &e);
                attach_failed = Some(e);
            }
        }
    }
    let report = match sync::apply(&mut ctx.maps, &desired) {
        Ok(report) => report,
        Err(e) => {
            ctx.report_standing_error(MAPS, &e);
            return;
        }
    };
    ctx.sync_groups(&report, &node.placements);
    if !report.removed.is_empty() {
        // The node that takes a released IP over announces it, and our
        // entry may have seen that before it went.
        let until = std::time::Instant::now() + RELEASE_QUIET;
        let mut ownership = ctx.ownership.lock().unwrap_or_else(|p| p.into_inner());
        for (ip, _, _) in &report.removed {
            ownership.expect_claims(*ip, until);
        }
    }
    let attached: BTreeSet<u32> = desired.iter().map(|d| d.interface.index).collect();
    let slaves = bonds::slaves_of(&node.links, &attached);
    if let Err(e) = bond_slaves::apply(&mut ctx.maps, &slaves) {
        ctx.report_error("updating the bond slave map", &e);
    }
    match attach_failed {
        Some(e) => ctx.metrics.diagnostics.raise(MAPS, &e),
        None => ctx.recovered(MAPS),
    }
    // sync::apply logs each map change; the announcer logs each burst.
    if let Some(rejoins) = node.gossip.as_ref().map(|g| g.stats().rejoins) {
        if rejoins > node.rejoins_seen {
            node.rejoins_seen = rejoins;
            if !node.answering.is_empty() {
                info!("the cluster declared this node down meanwhile: announcing again");
            }
            node.answering.forget();
        }
    }
    let transitions = node.answering.update(&report);
    for (ip, interface, vlan) in &transitions.gained {
        ctx.announcer
            .gained(*ip, &announce_device(node, interface, *vlan));
    }
    for (ip, ifindex, vlan) in report.removed.iter().chain(&transitions.lost) {
        let device = Interface {
            name: String::new(),
            index: *ifindex,
            mac: [0; 6],
        };
        ctx.announcer
            .lost(*ip, announce_device(node, &device, *vlan).index);
    }
    for (ip, why) in &report.failed {
        let e = Error::Bpf {
            context: format!("{ip}: not programmed"),
            message: why.to_string(),
        };
        ctx.report_error("updating the VIP maps", &e);
    }
}

/// Where gratuitous announcements for a VIP answered on `attached` behind
/// `vlan` go out: the VLAN device it was announced on, so that the kernel
/// tags them; the interface itself for an untagged VIP.
fn announce_device(node: &NodeState, attached: &Interface, vlan: VlanPath) -> Interface {
    if vlan.is_untagged() {
        return attached.clone();
    }
    node.placements
        .iter()
        .find(|(_, p)| p.attach.index == attached.index && p.vlan == vlan)
        .and_then(|(device, _)| node.interfaces.iter().find(|i| i.index == *device))
        .cloned()
        .unwrap_or_else(|| attached.clone())
}

/// The (VIP, interface) pairs to program, and the owned IPs none of
/// whose interfaces exist here.
fn desired(node: &NodeState) -> (Vec<sync::DesiredVip>, Vec<(IpAddr, OwnedIp)>) {
    place_owned(node.reconciler.owned(), &node.interfaces, &node.placements)
}

/// [`desired`] from its parts: each owned IP on each of its announce
/// interfaces, moved to where that interface is answered (a VLAN device's
/// parent, behind its tags).
fn place_owned(
    owned: &BTreeMap<IpAddr, OwnedIp>,
    announce: &[Interface],
    placements: &BTreeMap<u32, Placement>,
) -> (Vec<sync::DesiredVip>, Vec<(IpAddr, OwnedIp)>) {
    let mut desired = Vec::new();
    let mut unplaceable = Vec::new();
    for (ip, entry) in owned {
        let named = match &entry.interfaces {
            InterfaceSelection::All => None,
            InterfaceSelection::Named(names) => Some(names),
        };
        let chosen = interfaces::select(announce, named);
        if chosen.is_empty() {
            unplaceable.push((*ip, entry.clone()));
        }
        desired.extend(chosen.into_iter().map(
            |interface| match placements.get(&interface.index) {
                Some(placement) => sync::DesiredVip {
                    address: *ip,
                    interface: placement.attach.clone(),
                    vlan: placement.vlan,
                },
                None => sync::DesiredVip {
                    address: *ip,
                    interface,
                    vlan: VlanPath::UNTAGGED,
                },
            },
        ));
    }
    (desired, unplaceable)
}

/// MetalLB's `announceFailed`: the winner lacks every listed interface.
/// Nobody else takes over (interfaces play no part in the election).
async fn announce_failed(ctx: &Context, node: &mut NodeState, ip: IpAddr, entry: &OwnedIp) {
    for service in &entry.services {
        if !node.failed.insert(service.clone()) {
            continue;
        }
        let message = match &entry.interfaces {
            InterfaceSelection::All => "no usable interface on this node".to_owned(),
            InterfaceSelection::Named(names) => format!(
                "none of the interfaces {} exists on this node",
                names.iter().cloned().collect::<Vec<_>>().join(", ")
            ),
        };
        warn!(
            event = "announceFailed",
            service = %service,
            ip = %ip,
            "{service}: cannot announce {ip}: {message}"
        );
        if let Some(status) = &ctx.status {
            status.announce_failed(service, ip);
        }
    }
}

/// A new burst of claims of an IP this node answers for: an `IPConflict`
/// Event on every Service owning it (the log line is the data path
/// check's). An IP no longer owned by the time it arrives gets none.
pub fn ip_conflict(ctx: &Context, node: &NodeState, conflict: &NewConflict) {
    let Some(status) = &ctx.status else {
        return;
    };
    let Some(owned) = node.reconciler.owned().get(&conflict.address) else {
        return;
    };
    let interface = interfaces::name_of(conflict.ifindex)
        .unwrap_or_else(|| format!("interface index {}", conflict.ifindex));
    let note = crate::kube::events::ip_conflict_message(
        conflict.address,
        &interfaces::format_mac(&conflict.mac),
        &interface,
        conflict.claims,
    );
    for service in &owned.services {
        status.ip_conflict(service, note.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn interface(name: &str, index: u32, mac_tail: u8) -> Interface {
        Interface {
            name: name.into(),
            index,
            mac: [0x02, 0, 0, 0, 0, mac_tail],
        }
    }

    #[test]
    fn a_vip_on_a_vlan_device_is_programmed_on_its_parent_behind_its_tag() {
        let eth0 = interface("eth0", 2, 0x02);
        let eth0_100 = interface("eth0.100", 5, 0x05);
        let eth0_200 = interface("eth0.200", 6, 0x06);
        let announce = [eth0.clone(), eth0_100.clone(), eth0_200.clone()];
        let tag_100 = VlanPath::single(100, false);
        let placements: BTreeMap<u32, Placement> = [
            (
                5,
                Placement {
                    attach: Interface {
                        mac: eth0_100.mac,
                        ..eth0.clone()
                    },
                    vlan: tag_100,
                    fallback: None,
                },
            ),
            (
                6,
                Placement {
                    attach: eth0_200.clone(),
                    vlan: VlanPath::UNTAGGED,
                    fallback: Some(vlan::Fallback::ParentStripsTags {
                        parent: "eth0".into(),
                    }),
                },
            ),
        ]
        .into();
        let ip: IpAddr = "192.0.2.100".parse().unwrap();
        let listed = |names: &[&str]| OwnedIp {
            services: BTreeSet::new(),
            interfaces: InterfaceSelection::Named(names.iter().map(|n| n.to_string()).collect()),
        };
        let placed = |owned: OwnedIp| {
            let (desired, unplaceable) = place_owned(&[(ip, owned)].into(), &announce, &placements);
            assert!(unplaceable.is_empty());
            desired
                .into_iter()
                .map(|d| {
                    (
                        d.interface.name,
                        d.interface.index,
                        d.interface.mac[5],
                        d.vlan,
                    )
                })
                .collect::<Vec<_>>()
        };
        // Parent's index and name, the VLAN device's MAC, the tag.
        assert_eq!(
            placed(listed(&["eth0.100"])),
            [("eth0".to_owned(), 2, 0x05, tag_100)]
        );
        // All interfaces: untagged on eth0 and tagged on eth0 are two entries;
        // the fallback answers on eth0.200 itself, untagged.
        assert_eq!(
            placed(OwnedIp {
                services: BTreeSet::new(),
                interfaces: InterfaceSelection::All,
            }),
            [
                ("eth0".to_owned(), 2, 0x02, VlanPath::UNTAGGED),
                ("eth0".to_owned(), 2, 0x05, tag_100),
                ("eth0.200".to_owned(), 6, 0x06, VlanPath::UNTAGGED),
            ]
        );
    }
}
