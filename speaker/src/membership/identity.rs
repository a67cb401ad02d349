//! Who a speaker is on the gossip network.

use std::net::SocketAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// A speaker's foca identity: its Kubernetes node name, the address it gossips
/// on, and a generation.
///
/// foca keeps one member per [`foca::Identity::addr`], which is the gossip
/// address: it is what a seed list knows (an `Announce` is accepted by
/// whoever owns the destination address, whatever its name), and a speaker
/// restarted on the same node replaces its old self instead of being a second
/// member. The node name is what the election consumes.
///
/// The generation makes a restarted or falsely-declared-down speaker a new
/// identity that wins over the old one (foca refuses to hear from a Down
/// identity until it forgets it): it starts at the wall-clock second the
/// process started, and foca bumps it with [`foca::Identity::renew`] when the
/// cluster says we are down. Seconds rather than milliseconds because a clock
/// that stepped back across a restart costs one renew round trip per step of
/// the counter.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpeakerId {
    pub node: String,
    pub gossip_addr: SocketAddr,
    pub generation: u32,
}

impl SpeakerId {
    /// A fresh identity for a process starting now.
    pub fn starting_now(node: String, gossip_addr: SocketAddr) -> Self {
        let generation = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |since| {
                u32::try_from(since.as_secs()).unwrap_or(u32::MAX)
            });
        Self {
            node,
            gossip_addr,
            generation,
        }
    }

    /// The destination of an `Announce` to an address whose owner we do not
    /// know yet: foca accepts an `Announce` by address alone.
    pub(crate) fn unknown_at(gossip_addr: SocketAddr) -> Self {
        Self {
            node: String::new(),
            gossip_addr,
            generation: 0,
        }
    }
}

impl foca::Identity for SpeakerId {
    type Addr = SocketAddr;

    fn renew(&self) -> Option<Self> {
        Some(Self {
            generation: self.generation.checked_add(1)?,
            ..self.clone()
        })
    }

    fn addr(&self) -> SocketAddr {
        self.gossip_addr
    }

    /// The newer generation wins; two different nodes claiming one address
    /// (a misconfiguration) are ordered by name so that every speaker keeps
    /// the same one.
    fn win_addr_conflict(&self, adversary: &Self) -> bool {
        (self.generation, &self.node) > (adversary.generation, &adversary.node)
    }
}

#[cfg(test)]
mod tests {
    use foca::Identity;

    use super::*;

    fn id(node: &str, generation: u32) -> SpeakerId {
        SpeakerId {
            node: node.into(),
            gossip_addr: "10.0.0.1:7946".parse().unwrap(),
            generation,
        }
    }

    #[test]
    fn renewed_identity_wins_over_the_old_one() {
        let old = id("node-a", 1_700_000_000);
        let new = old.renew().unwrap();
        assert_eq!(new.generation, old.generation + 1);
        assert_eq!(new.addr(), old.addr());
        assert!(new.win_addr_conflict(&old));
        assert!(!old.win_addr_conflict(&new));
    }

    #[test]
    fn generation_cannot_wrap() {
        assert_eq!(id("node-a", u32::MAX).renew(), None);
    }

    #[test]
    fn same_generation_conflict_is_decided_by_name() {
        let a = id("node-a", 5);
        let b = id("node-b", 5);
        assert!(b.win_addr_conflict(&a));
        assert!(!a.win_addr_conflict(&b));
    }

    #[test]
    fn starting_now_uses_the_wall_clock_second() {
        let addr = "10.0.0.1:7946".parse().unwrap();
        let id = SpeakerId::starting_now("n".into(), addr);
        assert!(id.generation > 1_700_000_000);
    }
}
