//! The data-plane configuration every fuzz run uses: the VIPs (with their
//! interfaces and MACs) installed in the program's maps and handed to the
//! reference model, and the address and MAC pools the generator draws from.
//!
//! Keys are built in this file only: [`Vip::key`] and [`VipKey::of_record`]
//! (model side, and the program's counters read back) and [`Vip::install`]
//! (program side). Keys carry the VLAN tag path (`speaker_common::VlanPath`).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use anyhow::{Context, Result};
use speaker::dataplane::{DataplaneMaps, VipRecord};
use speaker_common::VlanPath;

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
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct VipKey {
    pub address: IpAddr,
    pub ifindex: u32,
    pub vlan: VlanPath,
}

impl VipKey {
    /// The key of a VIP as the program's maps list it.
    pub fn of_record(record: &VipRecord) -> Self {
        VipKey {
            address: record.address,
            ifindex: record.ifindex,
            vlan: record.vlan,
        }
    }
}

#[derive(Clone, Copy, Debug)]
pub struct Vip {
    pub address: IpAddr,
    pub ifindex: u32,
    pub vlan: VlanPath,
    pub mac: Mac,
}

impl Vip {
    pub fn key(&self) -> VipKey {
        VipKey {
            address: self.address,
            ifindex: self.ifindex,
            vlan: self.vlan,
        }
    }

    /// Puts the VIP in the program's maps.
    pub fn install(&self, maps: &mut DataplaneMaps) -> Result<()> {
        maps.add_vip(self.address, self.ifindex, self.vlan, self.mac)
            .with_context(|| {
                format!(
                    "adding VIP {} on ifindex {} VLAN {:?}",
                    self.address, self.ifindex, self.vlan
                )
            })
    }
}

/// The VIPs: two per family on the ingress interface with different MACs,
/// one per family owned only elsewhere, and `VIP4_A` / `VIP6_A` also owned
/// elsewhere with another MAC (the same address on two interfaces: only
/// the ingress interface's entry and counters may move). VLAN VIPs: one
/// per family on 802.1Q 100 only, one per family on QinQ (802.1ad 200 +
/// 802.1Q 100), and `VIP4_A` / `VIP6_A` also on 802.1Q 300 with their own
/// MAC (the same address untagged and tagged: two entries).
pub fn vips() -> Vec<Vip> {
    let vip = |address: IpAddr, ifindex, vlan, mac| Vip {
        address,
        ifindex,
        vlan,
        mac,
    };
    let untagged = VlanPath::UNTAGGED;
    vec![
        vip(VIP4_A.into(), INGRESS_IFINDEX, untagged, OUR_MAC),
        vip(VIP4_B.into(), INGRESS_IFINDEX, untagged, OUR_MAC_B),
        vip(
            VIP4_ELSEWHERE.into(),
            OTHER_IFINDEX,
            untagged,
            ELSEWHERE_MAC,
        ),
        vip(VIP4_A.into(), OTHER_IFINDEX, untagged, ELSEWHERE_MAC),
        vip(VIP6_A.into(), INGRESS_IFINDEX, untagged, OUR_MAC),
        vip(VIP6_B.into(), INGRESS_IFINDEX, untagged, OUR_MAC_B),
        vip(
            VIP6_ELSEWHERE.into(),
            OTHER_IFINDEX,
            untagged,
            ELSEWHERE_MAC,
        ),
        vip(VIP6_A.into(), OTHER_IFINDEX, untagged, ELSEWHERE_MAC),
        vip(VIP4_VLAN.into(), INGRESS_IFINDEX, VLAN_Q100, VLAN_MAC),
        vip(VIP6_VLAN.into(), INGRESS_IFINDEX, VLAN_Q100, VLAN_MAC),
        vip(VIP4_QINQ.into(), INGRESS_IFINDEX, VLAN_QINQ, QINQ_MAC),
        vip(VIP6_QINQ.into(), INGRESS_IFINDEX, VLAN_QINQ, QINQ_MAC),
        vip(VIP4_A.into(), INGRESS_IFINDEX, VLAN_Q300, VLAN_MAC),
        vip(VIP6_A.into(), INGRESS_IFINDEX, VLAN_Q300, VLAN_MAC),
    ]
}

/// The tag paths VLAN VIPs are announced on (the generator draws most
/// tagged frames' tags from these).
pub const VLAN_Q100: VlanPath = VlanPath::single(100, false);
pub const VLAN_Q300: VlanPath = VlanPath::single(300, false);
pub const VLAN_QINQ: VlanPath = VlanPath::stacked(200, true, 100);
pub const VLAN_PATHS: [VlanPath; 3] = [VLAN_Q100, VLAN_Q300, VLAN_QINQ];

/// The MACs of the VLAN devices (a VLAN VIP answers with its device's MAC).
pub const VLAN_MAC: Mac = [0x02, 0x5e, 0x00, 0x00, 0x01, 0x00];
pub const QINQ_MAC: Mac = [0x02, 0x5e, 0x00, 0x00, 0x02, 0x00];

pub const VIP4_VLAN: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 20);
pub const VIP4_QINQ: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 21);
pub const VIP6_VLAN: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0x0a, 0xbc20);
pub const VIP6_QINQ: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0x0a, 0xbc21);

/// IPv4 addresses frames are built from: the VIPs, neighbours, and the
/// special ones (RFC 5227 probe sender, broadcast, multicast).
pub const IPV4_POOL: [Ipv4Addr; 10] = [
    VIP4_A,
    VIP4_B,
    VIP4_ELSEWHERE,
    VIP4_VLAN,
    VIP4_QINQ,
    Ipv4Addr::new(192, 0, 2, 1),
    Ipv4Addr::new(192, 0, 2, 99),
    Ipv4Addr::UNSPECIFIED,
    Ipv4Addr::BROADCAST,
    Ipv4Addr::new(224, 0, 0, 1),
];

/// IPv6 addresses: the VIPs, one sharing `VIP6_A`'s solicited-node group
/// without being a VIP, neighbours, `::` and multicast.
pub const IPV6_POOL: [Ipv6Addr; 11] = [
    VIP6_A,
    VIP6_B,
    VIP6_ELSEWHERE,
    VIP6_VLAN,
    VIP6_QINQ,
    Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0x77, 0x0a, 0xbc10),
    Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0x0a, 0xbc99),
    Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 2),
    Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2),
    Ipv6Addr::UNSPECIFIED,
    Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1),
];

/// MACs: ours (both), elsewhere's, neighbours, broadcast, group addresses.
pub const MAC_POOL: [Mac; 11] = [
    OUR_MAC,
    OUR_MAC_B,
    VLAN_MAC,
    QINQ_MAC,
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
