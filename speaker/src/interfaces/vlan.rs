//! Where a VIP announced on a VLAN sub-interface is answered.
//!
//! XDP cannot run natively on a VLAN device (the 8021q driver has no
//! `ndo_bpf`), and generic XDP there sees frames only after the stack has
//! untagged them. So a VIP announced on `eth0.100` is answered by the
//! program on the physical parent `eth0`, keyed by the tags a request must
//! carry ([`VlanPath`]), with the VLAN device's MAC (what hosts on that VLAN
//! resolve to). A VLAN on a VLAN (`eth0.200.100`) is two tags: the lower
//! device's outermost.
//!
//! Where the parent strips tags in hardware (`rx-vlan-hw-parse`), a tagged
//! request reaches native XDP without its tag, and answering it untagged
//! would answer onto the wrong L2 domain. Reading the tag from the RX
//! metadata (`bpf_xdp_metadata_rx_vlan_tag`) needs driver support the
//! speaker cannot see from here, so it falls back: the program is attached
//! to the VLAN device itself (generic mode, which is all a VLAN device
//! offers) and the VIP is keyed there untagged.

use std::fmt;

use speaker_common::VlanPath;

use super::{netlink::Link, Interface};

/// Where and how one announce interface's VIPs are answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Placement {
    /// The interface the program runs on (name and index) with the MAC
    /// answers carry (the announce interface's).
    pub attach: Interface,
    /// The tags a request must carry there.
    pub vlan: VlanPath,
    /// Why a VLAN device is answered on itself rather than on its parent.
    pub fallback: Option<Fallback>,
}

/// Why a VLAN device's VIPs are answered on the VLAN device, in generic mode.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fallback {
    /// The physical parent strips VLAN tags in hardware.
    ParentStripsTags { parent: String },
    /// The parent is not in this namespace's link list.
    ParentMissing { parent: u32 },
    /// More than two tags, or an 802.1ad tag inside another: the program
    /// parses an optional 802.1ad/802.1Q outer tag and an 802.1Q inner one.
    UnsupportedStack,
}

impl fmt::Display for Fallback {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fallback::ParentStripsTags { parent } => write!(
                f,
                "{parent} strips VLAN tags in hardware (rx-vlan-hw-parse), so its XDP program \
                 would see tagged requests untagged"
            ),
            Fallback::ParentMissing { parent } => {
                write!(
                    f,
                    "its parent (interface index {parent}) is not in this namespace"
                )
            }
            Fallback::UnsupportedStack => write!(
                f,
                "its tag stack is not one the program parses (at most an outer 802.1Q/802.1ad \
                 tag and an inner 802.1Q tag)"
            ),
        }
    }
}

impl Placement {
    fn itself(device: &Interface) -> Placement {
        Placement {
            attach: device.clone(),
            vlan: VlanPath::UNTAGGED,
            fallback: None,
        }
    }
}

/// The tags of `vlan` as logs show them, outermost first:
/// `802.1ad 200, 802.1Q 100`; `untagged` for none.
pub fn describe(vlan: VlanPath) -> String {
    let tags: Vec<String> = [vlan.outer, vlan.inner]
        .into_iter()
        .filter(|&tag| tag != 0)
        .map(|tag| {
            let tpid = if tag & VlanPath::AD != 0 {
                "802.1ad"
            } else {
                "802.1Q"
            };
            format!("{tpid} {}", tag & VlanPath::VID_MASK)
        })
        .collect();
    if tags.is_empty() {
        "untagged".to_owned()
    } else {
        tags.join(", ")
    }
}

/// Where `device`'s VIPs are answered, given every link of the namespace
/// and whether a (physical) link strips VLAN tags in hardware. An interface
/// that is not a VLAN device (or is not in `links`) is answered on itself.
pub fn place(device: &Interface, links: &[Link], strips_tags: impl Fn(&Link) -> bool) -> Placement {
    let by_index = |index: u32| links.iter().find(|l| l.index == index);
    let Some(link) = by_index(device.index) else {
        return Placement::itself(device);
    };
    let (Some(tag), Some(parent)) = (link.vlan, link.parent) else {
        return Placement::itself(device);
    };
    let fallback = |reason| Placement {
        fallback: Some(reason),
        ..Placement::itself(device)
    };
    let Some(parent_link) = by_index(parent) else {
        return fallback(Fallback::ParentMissing { parent });
    };
    let (lower, vlan) = match (parent_link.vlan, parent_link.parent) {
        (None, _) => (parent_link, VlanPath::single(tag.vid, tag.ad)),
        // The inner tag of a stack is 802.1Q in the program's parser.
        (Some(outer), Some(grandparent)) if !tag.ad => {
            let Some(lower) = by_index(grandparent) else {
                return fallback(Fallback::ParentMissing {
                    parent: grandparent,
                });
            };
            if lower.vlan.is_some() {
                return fallback(Fallback::UnsupportedStack);
            }
            (lower, VlanPath::stacked(outer.vid, outer.ad, tag.vid))
        }
        _ => return fallback(Fallback::UnsupportedStack),
    };
    if strips_tags(lower) {
        return fallback(Fallback::ParentStripsTags {
            parent: lower.name.clone(),
        });
    }
    Placement {
        attach: Interface {
            name: lower.name.clone(),
            index: lower.index,
            mac: device.mac,
        },
        vlan,
        fallback: None,
    }
}

#[cfg(test)]
mod tests {
    use netlink_packet_route::link::{LinkAttribute, VlanProtocol};

    use super::*;
    use crate::interfaces::netlink::{fixtures, link_of};

    const VLAN_MAC: [u8; 6] = [0x02, 0, 0, 0, 0x01, 0x00];

    /// Links as the kernel would describe them, through the parser.
    fn parsed(index: u32, name: &str, mut attributes: Vec<LinkAttribute>) -> Link {
        attributes.push(LinkAttribute::IfName(name.into()));
        link_of(&fixtures::newlink(index, 0, attributes)).expect("named")
    }

    fn lab() -> Vec<Link> {
        use VlanProtocol::{Ieee8021Ad as AD, Ieee8021Q as Q};
        vec![
            parsed(2, "eth0", vec![]),
            parsed(3, "eth0.100", fixtures::vlan(2, 100, Q)),
            parsed(4, "eth0.200", fixtures::vlan(2, 200, AD)),
            parsed(5, "eth0.200.100", fixtures::vlan(4, 100, Q)),
            parsed(6, "eth0.100.7", fixtures::vlan(3, 7, Q)),
            parsed(7, "eth0.100.7.9", fixtures::vlan(6, 9, Q)),
            parsed(8, "eth0.100.ad", fixtures::vlan(3, 30, AD)),
            parsed(9, "orphan.5", fixtures::vlan(42, 5, Q)),
            parsed(
                10,
                "bond0",
                vec![fixtures::kind(netlink_packet_route::link::InfoKind::Bond)],
            ),
        ]
    }

    fn device(index: u32, name: &str) -> Interface {
        Interface {
            name: name.into(),
            index,
            mac: VLAN_MAC,
        }
    }

    fn never(_: &Link) -> bool {
        false
    }

    fn attached(placement: &Placement) -> (&str, u32, VlanPath, Option<&Fallback>) {
        (
            placement.attach.name.as_str(),
            placement.attach.index,
            placement.vlan,
            placement.fallback.as_ref(),
        )
    }

    #[test]
    fn tags_are_described_outermost_first() {
        assert_eq!(describe(VlanPath::UNTAGGED), "untagged");
        assert_eq!(describe(VlanPath::single(100, false)), "802.1Q 100");
        assert_eq!(
            describe(VlanPath::stacked(200, true, 100)),
            "802.1ad 200, 802.1Q 100"
        );
    }

    #[test]
    fn a_plain_interface_is_answered_on_itself() {
        let links = lab();
        for (index, name) in [(2, "eth0"), (10, "bond0"), (99, "gone0")] {
            let placement = place(&device(index, name), &links, never);
            assert_eq!(placement, Placement::itself(&device(index, name)));
        }
    }

    #[test]
    fn a_vlan_device_is_answered_on_its_parent_with_its_own_mac() {
        let links = lab();
        let placement = place(&device(3, "eth0.100"), &links, never);
        assert_eq!(
            attached(&placement),
            ("eth0", 2, VlanPath::single(100, false), None)
        );
        assert_eq!(placement.attach.mac, VLAN_MAC, "the VLAN device's MAC");
        let ad = place(&device(4, "eth0.200"), &links, never);
        assert_eq!(
            attached(&ad),
            ("eth0", 2, VlanPath::single(200, true), None)
        );
    }

    #[test]
    fn a_vlan_on_a_vlan_is_two_tags_lower_device_outermost() {
        let links = lab();
        let qinq = place(&device(5, "eth0.200.100"), &links, never);
        assert_eq!(
            attached(&qinq),
            ("eth0", 2, VlanPath::stacked(200, true, 100), None)
        );
        let qq = place(&device(6, "eth0.100.7"), &links, never);
        assert_eq!(
            attached(&qq),
            ("eth0", 2, VlanPath::stacked(100, false, 7), None)
        );
    }

    #[test]
    fn stacks_the_program_does_not_parse_fall_back_to_the_device() {
        let links = lab();
        for (index, name) in [(7, "eth0.100.7.9"), (8, "eth0.100.ad")] {
            let placement = place(&device(index, name), &links, never);
            assert_eq!(
                attached(&placement),
                (
                    name,
                    index,
                    VlanPath::UNTAGGED,
                    Some(&Fallback::UnsupportedStack)
                )
            );
        }
        let orphan = place(&device(9, "orphan.5"), &links, never);
        assert_eq!(
            orphan.fallback,
            Some(Fallback::ParentMissing { parent: 42 })
        );
        assert_eq!(orphan.attach, device(9, "orphan.5"));
    }

    #[test]
    fn a_parent_stripping_tags_makes_the_vlan_device_answer_itself() {
        let links = lab();
        let strips_eth0 = |link: &Link| link.name == "eth0";
        for (index, name) in [(3, "eth0.100"), (5, "eth0.200.100")] {
            let placement = place(&device(index, name), &links, strips_eth0);
            assert_eq!(
                attached(&placement),
                (
                    name,
                    index,
                    VlanPath::UNTAGGED,
                    Some(&Fallback::ParentStripsTags {
                        parent: "eth0".into()
                    })
                )
            );
            let reason = placement.fallback.unwrap().to_string();
            assert!(reason.contains("eth0 strips VLAN tags"), "{reason}");
        }
        // The parent's own untagged VIPs are unaffected.
        let eth0 = place(&device(2, "eth0"), &links, strips_eth0);
        assert_eq!(eth0, Placement::itself(&device(2, "eth0")));
    }
}
