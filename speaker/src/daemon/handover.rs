//! What a stop (SIGTERM) does with the IPs this node answers for.
//!
//! The pinned entries outlive the process so that a restart needs no
//! handover, but on a real stop (uninstall, the node leaving the DaemonSet)
//! they keep answering until the dead-man limit while the successor answers
//! too: two MACs for the same IP, and clients flip between them. With
//! [`OnStop::Handover`] the speaker leaves the gossip (the others re-elect at
//! once), listens for the successor's first gratuitous round for each IP
//! (it programs its maps before it announces) and removes that IP's entry
//! right then; whatever no successor announced within the bound is removed
//! at the bound. Two MACs then answer for about one announcement's flight
//! time instead of the dead-man limit.
//!
//! The price is that a restart with `handover` moves every IP away and back
//! (two gratuitous bursts, a few lost requests in between); a restart stop
//! (`restart`) avoids that and `auto` picks it when the API server says a
//! new speaker is coming (issue 10, item 3).

use std::{collections::BTreeSet, net::IpAddr, time::Duration};

use speaker_common::VlanPath;
use tracing::{info, warn};

use super::{context::Context, reconcile::NodeState};
use crate::{
    announce::listen::{AnnouncementListener, Heard},
    dataplane::{
        conflicts::RELEASE_QUIET,
        sync::{self, DesiredVip},
    },
    interfaces::{self, Interface},
};

/// How many probe periods a handover waits at most for successors.
const HANDOVER_PROBE_PERIODS: u32 = 2;

/// `--on-stop`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnStop {
    /// Decide at stop time: ask the API server (`kube::restart`); without
    /// it, hand over.
    Auto,
    /// Every stop is a restart (`daemon::restart`).
    Restart,
    /// Leave the gossip, stop answering once the successor announces.
    Handover,
    /// Leave the pinned entries answering (until the dead-man limit) for the
    /// next speaker to adopt.
    Keep,
}

/// How long a handover waits for successors: two probe periods with
/// gossip (the leave reaches the others at once; this only bounds a slow
/// or missing successor), none without (nobody takes over then).
pub fn handover_limit(probe_period: Option<Duration>) -> Duration {
    probe_period.map_or(Duration::ZERO, |p| p * HANDOVER_PROBE_PERIODS)
}

/// The held entries still to answer for after `heard`: those on the
/// interface it was heard on, for its IP, are handed over.
fn remaining_after(held: &mut Vec<(IpAddr, Interface, VlanPath)>, heard: &Heard) -> bool {
    let before = held.len();
    held.retain(|(ip, interface, _)| !(*ip == heard.ip && interface.index == heard.ifindex));
    held.len() != before
}

/// Leaves the gossip and stops answering each held IP as soon as another
/// node announces it on the same interface, the rest after the limit.
pub async fn hand_over(ctx: &mut Context, node: &mut NodeState) {
    let mut held: Vec<(IpAddr, Interface, VlanPath)> = node
        .answering
        .entries()
        .map(|(ip, interface, vlan)| (ip, interface.clone(), vlan))
        .collect();
    // Our own rounds must not flip clients back while the successor's go out.
    // Stopping every schedule of the IP also stops those on VLAN devices.
    for (ip, interface, _) in &held {
        ctx.announcer.lost(*ip, interface.index);
    }
    for placement in node.placements.keys() {
        for (ip, _, _) in &held {
            ctx.announcer.lost(*ip, *placement);
        }
    }
    let limit = handover_limit(ctx.config.gossip.as_ref().map(|g| g.timers.probe_period));
    // The successors' announcements reach our entries before we remove
    // them: counted in the map (a true observation), not reported as
    // conflicts.
    expect_successors(ctx, &held, limit);
    let ifindexes: BTreeSet<u32> = held.iter().map(|(_, i, _)| i.index).collect();
    let own_macs: Vec<[u8; 6]> = node
        .interfaces
        .iter()
        .map(|i| i.mac)
        .chain(held.iter().map(|(_, i, _)| i.mac))
        .collect();
    let listener = if held.is_empty() || limit.is_zero() {
        None
    } else {
        let ifindexes: Vec<u32> = ifindexes.into_iter().collect();
        match AnnouncementListener::open(&ifindexes, own_macs) {
            Ok(listener) => Some(listener),
            Err(e) => {
                warn!("cannot listen for the successors' announcements ({e}); stopping answers {limit:?} after leaving");
                None
            }
        }
    };
    if let Some(gossip) = &node.gossip {
        info!("leaving the gossip cluster");
        gossip.leave().await;
    }
    let started = tokio::time::Instant::now();
    let deadline = started + limit;
    while !held.is_empty() {
        let heard = match &listener {
            Some(listener) => tokio::select! {
                heard = listener.next() => heard,
                () = tokio::time::sleep_until(deadline) => break,
            },
            None => {
                tokio::time::sleep_until(deadline).await;
                break;
            }
        };
        let heard = match heard {
            Ok(heard) => heard,
            Err(e) => {
                warn!("listening for the successors' announcements: {e}");
                tokio::time::sleep_until(deadline).await;
                break;
            }
        };
        if remaining_after(&mut held, &heard) {
            info!(
                event = "handedOver",
                ip = %heard.ip,
                "{}: {} announces it; stopped answering {:?} after leaving",
                heard.ip,
                interfaces::format_mac(&heard.mac),
                started.elapsed()
            );
            withdraw_all_but(ctx, node, &held);
        }
    }
    if !held.is_empty() {
        let ips: Vec<String> = held.iter().map(|(ip, _, _)| ip.to_string()).collect();
        info!(
            "no successor announced {} within {limit:?}; stopped answering",
            ips.join(", ")
        );
        withdraw_all_but(ctx, node, &[]);
    }
    info!("handover done: pinned maps and links stay, without VIPs");
}

/// Claims of the `held` IPs are expected for the handover's `limit` and
/// [`RELEASE_QUIET`] after it.
fn expect_successors(ctx: &Context, held: &[(IpAddr, Interface, VlanPath)], limit: Duration) {
    let until = std::time::Instant::now() + limit + RELEASE_QUIET;
    let mut ownership = ctx.ownership.lock().unwrap_or_else(|p| p.into_inner());
    for (ip, _, _) in held {
        ownership.expect_claims(*ip, until);
    }
}

/// Brings the maps to just `kept` (removals only).
fn withdraw_all_but(ctx: &mut Context, node: &NodeState, kept: &[(IpAddr, Interface, VlanPath)]) {
    let desired: Vec<DesiredVip> = kept
        .iter()
        .map(|(address, interface, vlan)| DesiredVip {
            address: *address,
            interface: interface.clone(),
            vlan: *vlan,
        })
        .collect();
    match sync::apply(&mut ctx.maps, &desired) {
        Ok(report) => ctx.sync_groups(&report, &node.placements),
        Err(e) => ctx.report_error("removing handed-over VIPs", &e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn interface(index: u32) -> Interface {
        Interface {
            name: format!("eth{index}"),
            index,
            mac: [0x02, 0, 0, 0, 0, index as u8],
        }
    }

    #[test]
    fn a_heard_announcement_hands_over_that_ip_on_that_interface_only() {
        let v4: IpAddr = "192.0.2.100".parse().unwrap();
        let v6: IpAddr = "2001:db8::100".parse().unwrap();
        let vlan = VlanPath::single(100, false);
        let mut held = vec![
            (v4, interface(2), VlanPath::UNTAGGED),
            (v4, interface(3), vlan),
            (v6, interface(2), VlanPath::UNTAGGED),
        ];
        let heard = |ip, ifindex| Heard {
            ip,
            ifindex,
            mac: [0x02, 0, 0, 0, 0, 0x0b],
        };
        assert!(remaining_after(&mut held, &heard(v4, 2)));
        assert_eq!(
            held,
            [
                (v4, interface(3), vlan),
                (v6, interface(2), VlanPath::UNTAGGED)
            ]
        );
        // Another IP, or the same IP again: nothing more.
        assert!(!remaining_after(
            &mut held,
            &heard("192.0.2.101".parse().unwrap(), 3)
        ));
        assert!(!remaining_after(&mut held, &heard(v4, 2)));
        assert!(remaining_after(&mut held, &heard(v6, 2)));
        assert!(remaining_after(&mut held, &heard(v4, 3)));
        assert!(held.is_empty());
    }

    #[test]
    fn the_bound_is_two_probe_periods_and_none_without_gossip() {
        assert_eq!(
            handover_limit(Some(Duration::from_millis(300))),
            Duration::from_millis(600)
        );
        assert_eq!(
            handover_limit(Some(Duration::from_secs(1))),
            Duration::from_secs(2)
        );
        assert_eq!(handover_limit(None), Duration::ZERO);
    }
}
