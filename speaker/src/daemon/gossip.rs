//! The daemon's side of gossip: starting it once our address is known,
//! telling it every peer, and forwarding its member set to the election
//! (through the settle gate).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use tokio::sync::{mpsc, watch};
use tracing::{info, warn};

use super::{context::Context, reconcile::NodeState, supervise::Task};
use crate::{
    cluster::Change,
    election::Membership,
    error::{Error, Result},
    membership::{Gossip, GossipConfig},
};

/// Gossip peers are every Node's InternalIP (speakers use the host
/// network); also where our own advertise address comes from.
pub async fn nodes_changed(ctx: &mut Context, node: &mut NodeState) {
    if ctx.config.gossip.is_none() {
        return;
    }
    if node.gossip.is_none() {
        let own = node
            .reconciler
            .view()
            .node(&ctx.config.node_name)
            .and_then(|n| n.internal_ips.first().copied());
        match own {
            Some(ip) => {
                if let Err(e) = start(ctx, node, ip).await {
                    ctx.report_standing_error("gossip", &e);
                }
            }
            None => warn!(
                "node {:?} has no InternalIP: cannot gossip until it has one \
                 (or pass --memberlist-advertise-address)",
                ctx.config.node_name
            ),
        }
    }
    join_peers(ctx, node);
}

/// Tells gossip every peer we know: Nodes' InternalIPs, speaker pods and
/// `--memberlist-join`. Cheap when nothing is new.
pub fn join_peers(ctx: &Context, node: &NodeState) {
    let (Some(gossip), Some(settings)) = (&node.gossip, &ctx.config.gossip) else {
        return;
    };
    let own = gossip.advertised_addr();
    let node_ips = node
        .reconciler
        .view()
        .nodes()
        .iter()
        .flat_map(|n| n.internal_ips.iter());
    let mut peers: Vec<SocketAddr> = node_ips
        .chain(node.pod_peers.iter())
        .map(|ip| SocketAddr::new(*ip, settings.port))
        .filter(|addr| *addr != own)
        .collect();
    peers.extend(settings.join.iter().copied());
    peers.sort();
    peers.dedup();
    gossip.join(peers);
}

/// Starts gossip advertising `advertise`; its member set is forwarded by a
/// supervised task from the returned receiver.
pub async fn start(ctx: &mut Context, node: &mut NodeState, advertise: IpAddr) -> Result<()> {
    let Some(settings) = ctx.config.gossip.clone() else {
        return Ok(());
    };
    let bind = SocketAddr::new(
        if advertise.is_ipv4() {
            IpAddr::V4(Ipv4Addr::UNSPECIFIED)
        } else {
            IpAddr::V6(Ipv6Addr::UNSPECIFIED)
        },
        settings.port,
    );
    let config = GossipConfig {
        node: ctx.config.node_name.clone(),
        bind,
        advertise: Some(SocketAddr::new(advertise, settings.port)),
        keyring: settings.keyring.clone(),
        keyring_files: settings.keyring_files.clone(),
        timers: settings.timers.clone(),
        seeds: settings.join.clone(),
    };
    let (gossip, members) = Gossip::start(config)
        .await
        .map_err(|e| Error::membership(format!("starting gossip on {bind}"), e))?;
    info!(
        "gossiping on {bind} as {:?}, advertising {}",
        ctx.config.node_name,
        gossip.advertised_addr()
    );
    ctx.recovered("gossip");
    node.pending_members = Some(members);
    node.gate.gossip_started(
        tokio::time::Instant::now(),
        settings.timers.max_detection_for(3),
    );
    let _ = ctx.metrics.gossip.set(gossip.clone());
    node.gossip = Some(gossip);
    Ok(())
}

/// Forwards every member set gossip reports into the change queue. Ends
/// with an error when gossip stops reporting (its driver is gone), and
/// quietly when the daemon is gone.
pub async fn forward_members(
    mut members: watch::Receiver<std::collections::BTreeSet<String>>,
    changes: mpsc::Sender<Change>,
) -> Result<()> {
    loop {
        let set = members.borrow_and_update().clone();
        let names: Vec<&str> = set.iter().map(String::as_str).collect();
        info!(
            event = "membersChanged",
            members = names.join(","),
            "members: {}",
            names.join(", ")
        );
        if changes
            .send(Change::Membership(Membership::Members(set)))
            .await
            .is_err()
        {
            return Ok(());
        }
        if members.changed().await.is_err() {
            return Err(Error::TaskEnded {
                task: Task::Membership.name(),
                how: "stopped: gossip no longer reports members".to_owned(),
            });
        }
    }
}
