//! The data-plane configuration every fuzz run uses: the VIPs (with their
//! interfaces and MACs) installed in the program's maps and handed to the
//! reference model, and the address and MAC pools the generator draws from.
//!
//! Keys are built in this file only: [`Vip::key`] and [`VipKey::of_record`]
//! (model side, and the program's counters read back) and [`Vip::install`]
//! (program side). When VIP keys gain their VLAN path (issue 7,
//! `speaker_common::VlanPath`), `VipKey`, `Vip` and these three gain it.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use anyhow::{Context, Result};
use speaker::dataplane::{DataplaneMaps, VipRecord};

use crate::frames::{Mac, OTHER_MAC, OUR_MAC, PEER_MAC};

/// `BPF_PROG_TEST_RUN` without an input context runs the program as if the
/// frame came in on the loopback device.
pub const INGRESS_IFINDEX: u32 = 1;
/// An interface frames never arrive on: its VIPs must never be answered.
pub const OTHER_IFINDEX: u32 = 2;

/// The second VIP's interface MAC (two MACs on the ingress interface: the
/// answer must come from the VIP's own).
pub const OUR_MAC_B: Mac = [0x02, 0x5e, 0x00, 0x00, 0x00, 0x11];
/// The MAC of `OTHER_IFINDEX`.
pub const ELSEWHERE_MAC: Mac = [0x02, 0x5e, 0x00, 0x00, 0x00, 0x21];

pub const VIP4_A: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);
pub const VIP4_B: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 11);
pub const VIP4_ELSEWHERE: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 12);
pub const VIP6_A: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0x0a, 0xbc10);
/// A link-local VIP (its solicited-node group differs from `VIP6_A`'s).
pub const VIP6_B: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0x5e, 0, 0x0b);
pub const VIP6_ELSEWHERE: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0x0a, 0xbc12);

/// The model's key of a VIP: what the program's map key holds.
/// VLAN (issue 7): add the tag path here, as `VipKeyV4/6` do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct VipKey {
    pub address: IpAddr,
    pub ifindex: u32,
}

impl VipKey {
    /// The key of a VIP as the program's maps list it.
    pub fn of_record(record: &VipRecord) -> Self {
        VipKey {
            address: record.address,
            ifindex: record.ifindex,
        }
    }
}

#[derive(Clone, Copy, Debug)]
pub struct Vip {
    pub address: IpAddr,
    pub ifindex: u32,
    pub mac: Mac,
}

impl Vip {
    pub fn key(&self) -> VipKey {
        VipKey {
            address: self.address,
            ifindex: self.ifindex,
        }
    }

    /// Puts the VIP in the program's maps.
    pub fn install(&self, maps: &mut DataplaneMaps) -> Result<()> {
        maps.add_vip(
            self.address,
            self.ifindex,
            speaker_common::VlanPath::UNTAGGED,
            self.mac,
        )
        .with_context(|| format!("adding VIP {} on ifindex {}", self.address, self.ifindex))
    }
}

/// The VIPs: two per family on the ingress interface with different MACs,
/// one per family owned only elsewhere, and `VIP4_A` / `VIP6_A` also owned
/// elsewhere with another MAC (the same address on two interfaces: only
/// the ingress interface's entry and counters may move).
pub fn vips() -> Vec<Vip> {
    let vip = |address: IpAddr, ifindex, mac| Vip {
        address,
        ifindex,
        mac,
    };
    vec![
        vip(VIP4_A.into(), INGRESS_IFINDEX, OUR_MAC),
        vip(VIP4_B.into(), INGRESS_IFINDEX, OUR_MAC_B),
        vip(VIP4_ELSEWHERE.into(), OTHER_IFINDEX, ELSEWHERE_MAC),
        vip(VIP4_A.into(), OTHER_IFINDEX, ELSEWHERE_MAC),
        vip(VIP6_A.into(), INGRESS_IFINDEX, OUR_MAC),
        vip(VIP6_B.into(), INGRESS_IFINDEX, OUR_MAC_B),
        vip(VIP6_ELSEWHERE.into(), OTHER_IFINDEX, ELSEWHERE_MAC),
        vip(VIP6_A.into(), OTHER_IFINDEX, ELSEWHERE_MAC),
    ]
}

/// IPv4 addresses frames are built from: the VIPs, neighbours, and the
/// special ones (RFC 5227 probe sender, broadcast, multicast).
pub const IPV4_POOL: [Ipv4Addr; 8] = [
    VIP4_A,
    VIP4_B,
    VIP4_ELSEWHERE,
    Ipv4Addr::new(192, 0, 2, 1),
    Ipv4Addr::new(192, 0, 2, 99),
    Ipv4Addr::UNSPECIFIED,
    Ipv4Addr::BROADCAST,
    Ipv4Addr::new(224, 0, 0, 1),
];

/// IPv6 addresses: the VIPs, one sharing `VIP6_A`'s solicited-node group
/// without being a VIP, neighbours, `::` and multicast.
pub const IPV6_POOL: [Ipv6Addr; 9] = [
    VIP6_A,
    VIP6_B,
    VIP6_ELSEWHERE,
    Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0x77, 0x0a, 0xbc10),
    Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0x0a, 0xbc99),
    Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 2),
    Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2),
    Ipv6Addr::UNSPECIFIED,
    Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1),
];

/// MACs: ours (both), elsewhere's, neighbours, broadcast, group addresses.
pub const MAC_POOL: [Mac; 9] = [
    OUR_MAC,
    OUR_MAC_B,
    ELSEWHERE_MAC,
    PEER_MAC,
    OTHER_MAC,
    [0xff; 6],
    [0x01, 0x00, 0x5e, 0x00, 0x00, 0x01],
    [0x33, 0x33, 0x00, 0x00, 0x00, 0x01],
    [0; 6],
];

/// Hosts that send requests (unicast MACs that are not ours).
pub const SENDER_MACS: [Mac; 2] = [PEER_MAC, OTHER_MAC];
