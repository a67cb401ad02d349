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
    pub const ALL: [&str; 6] = [
        VIPS_V4,
        VIPS_V6,
        VIP_ANSWERED,
        REASONS,
        WATCHDOG,
        VIP_REFUSED,
    ];
}

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

/// Key of the IPv4 VIP map: an owned address on one interface.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct VipKeyV4 {
    /// The address in network byte order.
    pub addr: [u8; 4],
    pub ifindex: u32,
}

/// Key of the IPv6 VIP map.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct VipKeyV6 {
    pub addr: [u8; 16],
    pub ifindex: u32,
}

/// What the responder needs to answer for a VIP on an interface.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VipEntry {
    /// The interface's MAC: the answer's sender hardware address, and the only
    /// unicast Ethernet destination accepted for requests.
    pub mac: [u8; 6],
    pub _pad: [u8; 2],
    /// Index into `VIP_ANSWERED` (a per-CPU array): the answered counter of this
    /// (VIP, interface). Slots are handed out by the speaker.
    pub slot: u32,
}

/// The dead-man switch. Times are `CLOCK_MONOTONIC` nanoseconds, the clock of
/// `bpf_ktime_get_ns`.
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
    /// Neither ARP nor an ICMPv6 Neighbor Solicitation: passed.
    OtherTraffic = 2,
    /// 802.1Q/802.1ad tagged frame: passed (VLANs are not handled yet).
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
    /// Another MAC claims one of our VIPs (gratuitous ARP): not answered.
    Conflict = 10,
    /// The control plane's heartbeat is older than the limit: not answered.
    HeartbeatStale = 11,
    /// The frame could not be resized for the answer (`bpf_xdp_adjust_tail`).
    ResizeFailed = 12,
    /// A gratuitous ARP for one of our VIPs from our own MAC came back: passed.
    Looped = 13,
}

impl Reason {
    pub const COUNT: u32 = 14;
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
        }
    }
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: all of these are #[repr(C)] with only integer and byte-array fields
    // and explicit padding, so every bit pattern is valid.
    unsafe impl aya::Pod for super::VipKeyV4 {}
    unsafe impl aya::Pod for super::VipKeyV6 {}
    unsafe impl aya::Pod for super::VipEntry {}
    unsafe impl aya::Pod for super::Watchdog {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_are_numbered_by_position() {
        for (i, r) in Reason::ALL.iter().enumerate() {
            assert_eq!(*r as u32, i as u32, "{}", r.name());
        }
    }

    #[test]
    fn layouts_have_no_implicit_padding() {
        assert_eq!(core::mem::size_of::<VipKeyV4>(), 8);
        assert_eq!(core::mem::size_of::<VipKeyV6>(), 20);
        assert_eq!(core::mem::size_of::<VipEntry>(), 12);
        assert_eq!(core::mem::size_of::<Watchdog>(), 16);
    }
}
