//! Map key and value types shared by the XDP program (`speaker-ebpf`) and the
//! userspace speaker. Everything here is `#[repr(C)]` plain data: the same bytes
//! are read by the kernel program, written by `speaker`, and printed by
//! `bpftool map dump` (the maps carry BTF).
#![no_std]

/// Pinned names of the maps, under the pin directory. They are also the ELF
/// symbol names in the eBPF object, so `bpftool map show` lists them as is.
pub mod map_names {
    pub const VIPS_V4: &str = "VIPS_V4";
    pub const VIPS_V6: &str = "VIPS_V6";
    pub const VIP_ANSWERED: &str = "VIP_ANSWERED";
    pub const REASONS: &str = "REASONS";
    pub const WATCHDOG: &str = "WATCHDOG";
    pub const VIP_REFUSED: &str = "VIP_REFUSED";
    pub const VIP_FILTER: &str = "VIP_FILTER";
    pub const VIP_CONFLICTS: &str = "VIP_CONFLICTS";
    pub const BOND_SLAVES: &str = "BOND_SLAVES";
    pub const VIP_INDEX_V4: &str = "VIP_INDEX_V4";
    pub const VIP_INDEX_V6: &str = "VIP_INDEX_V6";
    /// The layout version ([`super::LAYOUT_VERSION`]) of the maps pinned
    /// beside it: one `u32` in an array of one. Created by the speaker, not
    /// by the program, hence not in [`ALL`].
    pub const LAYOUT: &str = "LAYOUT";
    pub const ALL: [&str; 11] = [
        VIPS_V4,
        VIPS_V6,
        VIP_ANSWERED,
        REASONS,
        WATCHDOG,
        VIP_REFUSED,
        VIP_FILTER,
        VIP_CONFLICTS,
        BOND_SLAVES,
        VIP_INDEX_V4,
        VIP_INDEX_V6,
    ];
}

/// The layout of the pinned maps (their names, types, sizes and the meaning
/// of their bytes), pinned as `map_names::LAYOUT`. A speaker that finds
/// another version (or maps of another shape) migrates them on start.
/// - 1: the first releases: 14 reasons, no VIP_FILTER or VIP_CONFLICTS.
/// - 2: 15 reasons (`unsupported`), VIP_FILTER, VIP_CONFLICTS.
/// - 3: VIP keys carry a [`VlanPath`] (12 and 24 bytes instead of 8 and
///   20), BOND_SLAVES.
/// - 4: VIP_INDEX_V4 and VIP_INDEX_V6 ([`VipIndexV4`], [`VipIndexV6`]).
///
/// No `LAYOUT` pin: a layout from before versioning, told apart by shape.
pub const LAYOUT_VERSION: u32 = 4;

/// Names of the programs in the eBPF object.
pub mod program_names {
    /// The ARP/NDP responder.
    pub const RESPONDER: &str = "xdp_speaker";
    /// An empty XDP_PASS program: the benchmark baseline, and the program put on a
    /// veth peer so that the kernel delivers the responder's XDP_TX frames.
    pub const PASS: &str = "xdp_pass";
}

/// How many (VIP, interface) pairs the maps hold; also the size of the per-VIP
/// counter array, whose slots the VIP entries point into.
pub const MAX_VIPS: u32 = 4096;

/// Bits in `VIP_FILTER`, a one-sided filter in front of the VIP hash maps:
/// a clear bit proves that no VIP hashes there, so the program skips the
/// hash lookup (the costliest step for requests about other hosts'
/// addresses, and for the conflict check on every ARP sender). A set bit
/// only means "look up". `2^FILTER_BITS_LOG2` bits in `u64` words.
pub const FILTER_BITS_LOG2: u32 = 12;
pub const FILTER_WORDS: u32 = (1 << FILTER_BITS_LOG2) / 64;

/// The filter bit of an address, from its last four bytes (the whole IPv4
/// address; for IPv6 the bytes that also pick its solicited-node group)
/// read as a native-endian word, exactly as the program loads them.
/// Multiply-shift hashing: one multiplication and one shift in BPF.
#[inline(always)]
pub const fn filter_bit(last_four: u32) -> u32 {
    last_four.wrapping_mul(0x9e37_79b1) >> (32 - FILTER_BITS_LOG2)
}

/// The filter bit of an address given as its bytes (the speaker's side).
pub const fn filter_bit_of(addr: &[u8]) -> u32 {
    let n = addr.len();
    filter_bit(u32::from_ne_bytes([
        addr[n - 4],
        addr[n - 3],
        addr[n - 2],
        addr[n - 1],
    ]))
}

/// The VLAN tags a request must carry to be answered for a VIP, outermost
/// first. Each is a VID (1..=4094), with [`VlanPath::AD`] set when the tag's
/// TPID is 802.1ad (0x88a8) rather than 802.1Q (0x8100); 0 means no tag.
/// Host byte order.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct VlanPath {
    pub outer: u16,
    pub inner: u16,
}

impl VlanPath {
    /// Set on a tag whose TPID is 0x88a8 (802.1ad service tag). A VID has
    /// 12 bits, so the bit never collides with one.
    pub const AD: u16 = 0x1000;
    pub const VID_MASK: u16 = 0x0fff;
    /// An untagged request on the interface itself.
    pub const UNTAGGED: VlanPath = VlanPath { outer: 0, inner: 0 };

    /// One tag: 802.1Q, or 802.1ad when `ad`.
    pub const fn single(vid: u16, ad: bool) -> VlanPath {
        VlanPath {
            outer: Self::tag(vid, ad),
            inner: 0,
        }
    }

    /// An outer tag (802.1ad when `outer_ad`) around an 802.1Q tag (QinQ).
    pub const fn stacked(outer_vid: u16, outer_ad: bool, inner_vid: u16) -> VlanPath {
        VlanPath {
            outer: Self::tag(outer_vid, outer_ad),
            inner: Self::tag(inner_vid, false),
        }
    }

    const fn tag(vid: u16, ad: bool) -> u16 {
        (vid & Self::VID_MASK) | if ad { Self::AD } else { 0 }
    }

    pub const fn is_untagged(&self) -> bool {
        self.outer == 0 && self.inner == 0
    }
}

/// Key of the IPv4 VIP map: an owned address on one interface (the one the
/// program is attached to: a VLAN's parent, a bond's master), behind `vlan`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct VipKeyV4 {
    /// The address in network byte order.
    pub addr: [u8; 4],
    pub ifindex: u32,
    pub vlan: VlanPath,
}

/// Key of the IPv6 VIP map.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct VipKeyV6 {
    pub addr: [u8; 16],
    pub ifindex: u32,
    pub vlan: VlanPath,
}

/// What the responder needs to answer for a VIP on an interface.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VipEntry {
    /// The interface's MAC: the answer's sender hardware address, and the only
    /// unicast Ethernet destination accepted for requests.
    pub mac: [u8; 6],
    pub _pad: [u8; 2],
    /// Index into `VIP_ANSWERED` (a per-CPU array): the answered counter of this
    /// (VIP, interface). Slots are handed out by the speaker.
    pub slot: u32,
}

/// One slot of `VIP_INDEX_V4`, the program's way to a VIP without a hash
/// map lookup. Slot `filter_bit(address)` holds, sealed, the one VIP key of
/// the family whose address hashes there, when exactly one does; else it is
/// unsealed (zero) and the program looks in `VIPS_V4`. Why: a hash map
/// lookup is two kernel calls (the lookup and its `memcmp`), and on CPUs
/// whose return-stack mitigations make every `ret` costly (AMD's SRSO
/// "Safe RET") those two calls were most of an answer's cost; an array
/// lookup is inlined by the verifier. The hash map stays the record; the
/// index is derived from it by the speaker (BENCHMARKS.md, docs/dataplane.md).
///
/// The seal covers the key and entry: a slot rewritten while the program
/// reads it (array updates are plain copies) reads as unsealed, and the
/// program falls back to the hash map rather than trust a torn entry.
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VipIndexV4 {
    pub key: VipKeyV4,
    pub entry: VipEntry,
    pub seal: u32,
    pub _pad: u32,
}

/// One slot of `VIP_INDEX_V6`: see [`VipIndexV4`].
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VipIndexV6 {
    pub key: VipKeyV6,
    pub entry: VipEntry,
    pub seal: u32,
}

/// Odd 64-bit multiplier (the golden ratio's fraction) of the seal's mixing.
const SEAL_MULTIPLIER: u64 = 0x9e37_79b9_7f4a_7c15;

/// The seal of a slot's words (everything but the seal itself): each word
/// multiplied into the state, so that every bit of every word reaches the
/// result. Never 0, so a zeroed slot is never sealed.
#[inline(always)]
const fn seal_of(words: &[u64]) -> u32 {
    let mut state = 0u64;
    let mut i = 0;
    while i < words.len() {
        state = (state ^ words[i]).wrapping_mul(SEAL_MULTIPLIER);
        i += 1;
    }
    ((state >> 32) ^ state) as u32 | 1
}

impl VipIndexV4 {
    /// The slot holding `key` and `entry`, sealed.
    pub const fn sealed(key: VipKeyV4, entry: VipEntry) -> Self {
        let mut slot = VipIndexV4 {
            key,
            entry,
            seal: 0,
            _pad: 0,
        };
        slot.seal = slot.expected_seal();
        slot
    }

    #[inline(always)]
    const fn expected_seal(&self) -> u32 {
        // SAFETY: repr(C) of integer and byte fields with explicit padding:
        // 32 bytes, every one initialised; the seal is in the last word.
        let words: [u64; 4] = unsafe { core::mem::transmute(*self) };
        seal_of(&[words[0], words[1], words[2]])
    }

    /// True when the slot holds a key and entry written together.
    #[inline(always)]
    pub const fn is_sealed(&self) -> bool {
        self.seal == self.expected_seal()
    }
}

impl VipIndexV6 {
    /// The slot holding `key` and `entry`, sealed.
    pub const fn sealed(key: VipKeyV6, entry: VipEntry) -> Self {
        let mut slot = VipIndexV6 {
            key,
            entry,
            seal: 0,
        };
        slot.seal = slot.expected_seal();
        slot
    }

    #[inline(always)]
    const fn expected_seal(&self) -> u32 {
        // SAFETY: as in `VipIndexV4`: 40 bytes; the seal is the upper half
        // of the last word, the entry's slot its lower half.
        let words: [u64; 5] = unsafe { core::mem::transmute(*self) };
        seal_of(&[
            words[0],
            words[1],
            words[2],
            words[3],
            words[4] as u32 as u64,
        ])
    }

    /// True when the slot holds a key and entry written together.
    #[inline(always)]
    pub const fn is_sealed(&self) -> bool {
        self.seal == self.expected_seal()
    }
}

/// Another host claiming a VIP (RFC 5227 §2.4, and the NA equivalent), per
/// (VIP, interface): `VIP_CONFLICTS` is indexed by the entry's slot, like the
/// per-VIP counters, and reset when the slot is handed out.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConflictRecord {
    /// Frames claiming the VIP from another MAC.
    pub count: u64,
    /// `CLOCK_MONOTONIC` nanoseconds of the last one (`bpf_ktime_get_coarse_ns`:
    /// to the scheduler tick).
    pub last_ns: u64,
    /// The link-layer address the last one claimed the VIP for.
    pub mac: [u8; 6],
    pub _pad: [u8; 2],
}

/// The dead-man switch. Times are `CLOCK_MONOTONIC` nanoseconds, the clock of
/// `bpf_ktime_get_coarse_ns` (to the scheduler tick).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Watchdog {
    /// When the control plane last said it was alive.
    pub heartbeat_ns: u64,
    /// Answering stops once the heartbeat is older than this; 0 disables the switch.
    pub max_age_ns: u64,
}

/// Why the responder returned the verdict it did. One per-CPU counter each in
/// the `REASONS` map, indexed by the discriminant. The names are a stable
/// interface (`speaker maps`, metrics, docs): append, never renumber.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    /// ARP request for an owned VIP answered with XDP_TX.
    ArpAnswered = 0,
    /// Neighbor Solicitation for an owned VIP answered with a Neighbor Advertisement.
    NsAnswered = 1,
    /// ICMPv6 that is neither a Neighbor Solicitation nor an advertisement
    /// for one of our VIPs: passed. Traffic that is neither ARP nor ICMPv6
    /// is passed uncounted (the interface's own counters carry its volume).
    OtherTraffic = 2,
    /// Retired: counted tagged frames while VLANs were not answered. Tagged
    /// requests now get the reasons untagged ones get (`arp_answered`,
    /// `not_owned`, ...), so nothing counts here any more; the slot stays so
    /// that the numbering (a stable interface) does not move.
    VlanTagged = 3,
    /// The frame ends inside a header it claims to carry.
    Truncated = 4,
    /// A header field has a value the RFCs do not allow for a request we answer.
    Malformed = 5,
    /// ICMPv6 checksum does not verify.
    BadChecksum = 6,
    /// ARP with an operation other than request (replies included).
    ArpNotRequest = 7,
    /// Well-formed request for an address not owned on the ingress interface.
    NotOwned = 8,
    /// Request for an owned VIP sent to a unicast MAC other than ours.
    WrongEthDestination = 9,
    /// Another MAC claims one of our VIPs (an ARP whose sender IP is the VIP,
    /// or a Neighbor Advertisement for it): recorded in `VIP_CONFLICTS`.
    Conflict = 10,
    /// The control plane's heartbeat is older than the limit: not answered.
    HeartbeatStale = 11,
    /// The frame could not be resized for the answer (`bpf_xdp_adjust_tail`).
    ResizeFailed = 12,
    /// An ARP or Neighbor Advertisement claiming one of our VIPs for our own
    /// MAC came back (our own announcement, looped): passed.
    Looped = 13,
    /// A frame deliberately not parsed (IPv6 fragment, routing header, ESP,
    /// AH, an extension-header chain longer than walked, a multi-buffer
    /// request, three or more VLAN tags, a priority-only or reserved VID):
    /// passed.
    Unsupported = 14,
}

impl Reason {
    pub const COUNT: u32 = 15;
    pub const ALL: [Reason; Self::COUNT as usize] = [
        Reason::ArpAnswered,
        Reason::NsAnswered,
        Reason::OtherTraffic,
        Reason::VlanTagged,
        Reason::Truncated,
        Reason::Malformed,
        Reason::BadChecksum,
        Reason::ArpNotRequest,
        Reason::NotOwned,
        Reason::WrongEthDestination,
        Reason::Conflict,
        Reason::HeartbeatStale,
        Reason::ResizeFailed,
        Reason::Looped,
        Reason::Unsupported,
    ];

    /// The stable name used in `speaker maps`, metrics and the docs.
    pub const fn name(self) -> &'static str {
        match self {
            Reason::ArpAnswered => "arp_answered",
            Reason::NsAnswered => "ns_answered",
            Reason::OtherTraffic => "other_traffic",
            Reason::VlanTagged => "vlan_tagged",
            Reason::Truncated => "truncated",
            Reason::Malformed => "malformed",
            Reason::BadChecksum => "bad_checksum",
            Reason::ArpNotRequest => "arp_not_request",
            Reason::NotOwned => "not_owned",
            Reason::WrongEthDestination => "wrong_eth_destination",
            Reason::Conflict => "conflict",
            Reason::HeartbeatStale => "heartbeat_stale",
            Reason::ResizeFailed => "resize_failed",
            Reason::Looped => "looped",
            Reason::Unsupported => "unsupported",
        }
    }
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: all of these are #[repr(C)] with only integer and byte-array fields
    // and explicit padding, so every bit pattern is valid.
    unsafe impl aya::Pod for super::VipKeyV4 {}
    unsafe impl aya::Pod for super::VipKeyV6 {}
    unsafe impl aya::Pod for super::VlanPath {}
    unsafe impl aya::Pod for super::VipEntry {}
    unsafe impl aya::Pod for super::Watchdog {}
    unsafe impl aya::Pod for super::ConflictRecord {}
    unsafe impl aya::Pod for super::VipIndexV4 {}
    unsafe impl aya::Pod for super::VipIndexV6 {}
}

#[cfg(test)]
mod tests {
    extern crate std;

    use super::*;

    #[test]
    fn reasons_are_numbered_by_position() {
        for (i, r) in Reason::ALL.iter().enumerate() {
            assert_eq!(*r as u32, i as u32, "{}", r.name());
        }
    }

    #[test]
    fn layouts_have_no_implicit_padding() {
        assert_eq!(core::mem::size_of::<VlanPath>(), 4);
        assert_eq!(core::mem::size_of::<VipKeyV4>(), 12);
        assert_eq!(core::mem::size_of::<VipKeyV6>(), 24);
        assert_eq!(core::mem::size_of::<VipEntry>(), 12);
        assert_eq!(core::mem::size_of::<Watchdog>(), 16);
        assert_eq!(core::mem::size_of::<ConflictRecord>(), 24);
        assert_eq!(core::mem::size_of::<VipIndexV4>(), 32);
        assert_eq!(core::mem::size_of::<VipIndexV6>(), 40);
    }

    fn index_v4(last: u8, ifindex: u32, vid: u16, slot: u32) -> VipIndexV4 {
        VipIndexV4::sealed(
            VipKeyV4 {
                addr: [192, 0, 2, last],
                ifindex,
                vlan: VlanPath::single(vid, false),
            },
            VipEntry {
                mac: [0x02, 0x5e, 0, 0, 0, last],
                _pad: [0; 2],
                slot,
            },
        )
    }

    fn index_v6(last: u8, ifindex: u32, slot: u32) -> VipIndexV6 {
        let mut addr = [0u8; 16];
        addr[..4].copy_from_slice(&[0x20, 0x01, 0x0d, 0xb8]);
        addr[15] = last;
        VipIndexV6::sealed(
            VipKeyV6 {
                addr,
                ifindex,
                vlan: VlanPath::UNTAGGED,
            },
            VipEntry {
                mac: [0x02, 0x5e, 0, 0, 0, last],
                _pad: [0; 2],
                slot,
            },
        )
    }

    /// Every bit of the key and entry is under the seal, and a zeroed slot
    /// (what the speaker writes to unseal one) is never sealed.
    #[test]
    fn seals_cover_every_key_and_entry_bit() {
        assert!(!VipIndexV4::default().is_sealed());
        assert!(!VipIndexV6::default().is_sealed());
        let v4 = index_v4(100, 3, 100, 7);
        assert!(v4.is_sealed());
        let bytes: [u8; 32] = unsafe { core::mem::transmute(v4) };
        for byte in 0..24 {
            for bit in 0..8 {
                let mut flipped = bytes;
                flipped[byte] ^= 1 << bit;
                let slot: VipIndexV4 = unsafe { core::mem::transmute(flipped) };
                assert!(!slot.is_sealed(), "v4 byte {byte} bit {bit}");
            }
        }
        let v6 = index_v6(1, 2, 9);
        assert!(v6.is_sealed());
        let bytes: [u8; 40] = unsafe { core::mem::transmute(v6) };
        for byte in 0..36 {
            for bit in 0..8 {
                let mut flipped = bytes;
                flipped[byte] ^= 1 << bit;
                let slot: VipIndexV6 = unsafe { core::mem::transmute(flipped) };
                assert!(!slot.is_sealed(), "v6 byte {byte} bit {bit}");
            }
        }
    }

    /// A slot read while the speaker rewrites it mixes the words of two
    /// slots (or of a slot and zeros): such mixes read as unsealed.
    #[test]
    fn torn_slots_are_not_sealed() {
        let slots = [
            index_v4(100, 3, 0, 1),
            index_v4(101, 3, 0, 2),
            index_v4(100, 4, 0, 1),
            index_v4(100, 3, 100, 1),
            VipIndexV4::default(),
        ];
        for a in slots {
            for b in slots {
                if a == b {
                    continue;
                }
                let words = |slot: VipIndexV4| unsafe {
                    core::mem::transmute::<VipIndexV4, [u64; 4]>(slot)
                };
                let (wa, wb) = (words(a), words(b));
                // Any non-empty choice of words from `b`, the rest from `a`.
                for mask in 1u8..16 {
                    let mixed: [u64; 4] =
                        core::array::from_fn(|i| if mask & 1 << i != 0 { wb[i] } else { wa[i] });
                    let slot: VipIndexV4 = unsafe { core::mem::transmute(mixed) };
                    assert!(
                        !slot.is_sealed() || slot == a || slot == b,
                        "words {mask:04b} of {b:?} into {a:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn filter_bits_stay_in_range_and_spread() {
        let bits: std::collections::BTreeSet<u32> = (0u32..256)
            .map(|i| filter_bit_of(&[192, 0, 2, i as u8]))
            .collect();
        assert!(bits.iter().all(|&b| b < 1 << FILTER_BITS_LOG2));
        assert!(bits.len() > 200, "a /24 should spread: {} bits", bits.len());
        let v6 = [0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x0a];
        assert_eq!(filter_bit_of(&v6), filter_bit_of(&[0, 0, 0, 0x0a]));
    }
}
