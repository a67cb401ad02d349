//! The XDP responder against crafted frames, in the kernel, with
//! BPF_PROG_TEST_RUN. Every case states the verdict, the reason counter that
//! must move (by exactly one, and no other; none at all for traffic that is
//! neither ARP nor ICMPv6), the per-VIP conflict record that must move (and
//! the MAC it must name), and the output: the input
//! unchanged for a pass, or the reply built independently with smoltcp for an
//! answer (compared byte for byte, then parsed back with smoltcp, checksum
//! included). The per-VIP answered counter must move on answers only, and only
//! for the VIP asked for.
//!
//! Needs root (loading BPF programs) and the eBPF object built. Run:
//! `cargo test -p speaker-tests --test xdp_responder`.

use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    time::Duration,
};

use anyhow::{Context, Result};
use aya::{
    programs::{ProgramError, TestRun, TestRunOptions},
    sys::SyscallError,
};
use speaker::dataplane::{DataplaneMaps, Object, RESPONDER};
use speaker_common::{Reason, VlanPath};
use speaker_tests::frames::{self, offset, Mac, Ns, BROADCAST, OTHER_MAC, OUR_MAC, PEER_MAC};

const XDP_PASS: u32 = 2;
const XDP_TX: u32 = 3;

/// BPF_PROG_TEST_RUN without an ingress device in the context runs the
/// program as if the frame came in on the loopback device.
const IFINDEX: u32 = 1;
/// Some other interface, for VIPs owned elsewhere.
const OTHER_IFINDEX: u32 = 2;

/// The MAC of the interface with a second VIP.
const OUR_MAC_B: Mac = [0x02, 0x5e, 0x00, 0x00, 0x00, 0x11];

const VIP4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);
const VIP4_B: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 11);
/// Owned on `OTHER_IFINDEX` only.
const VIP4_ELSEWHERE: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 12);
const NOT_OWNED4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 99);
const PEER4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);

const VIP6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0x0a, 0xbc10);
/// Owned on `OTHER_IFINDEX` only.
const VIP6_ELSEWHERE: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0x0a, 0xbc12);
const NOT_OWNED6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0x0a, 0xbc99);
/// Same low 24 bits as VIP6, so the same solicited-node group.
const NOT_OWNED6_SAME_GROUP: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0x77, 0x0a, 0xbc10);
const PEER6: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 2);
const PEER6_GLOBAL: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2);

/// What the program must do with a frame.
#[derive(Clone, Debug)]
enum Expect {
    /// XDP_PASS with the frame untouched.
    Pass,
    /// XDP_TX with an ARP reply; the answered counter of (vip, IFINDEX) moves.
    ArpReply {
        vip: Ipv4Addr,
        mac: Mac,
        reply: Vec<u8>,
    },
    /// XDP_TX with a Neighbor Advertisement.
    Advertisement {
        vip: Ipv6Addr,
        mac: Mac,
        reply: Vec<u8>,
    },
    /// XDP_PASS with the frame untouched, and the conflict record of (vip,
    /// IFINDEX) moved by one, naming `mac`.
    Conflict { vip: IpAddr, mac: Mac },
}

struct Case {
    name: &'static str,
    frame: Vec<u8>,
    verdict: u32,
    /// `None`: no reason counter may move.
    reason: Option<Reason>,
    expect: Expect,
}

fn pass(name: &'static str, frame: Vec<u8>, reason: Reason) -> Case {
    Case {
        name,
        frame,
        verdict: XDP_PASS,
        reason: Some(reason),
        expect: Expect::Pass,
    }
}

/// Neither ARP nor ICMPv6: passed, and no counter moves.
fn uncounted(name: &'static str, frame: Vec<u8>) -> Case {
    Case {
        name,
        frame,
        verdict: XDP_PASS,
        reason: None,
        expect: Expect::Pass,
    }
}

/// Another host claiming `vip` for `mac`: passed, counted `conflict`, recorded.
fn conflict(name: &'static str, frame: Vec<u8>, vip: impl Into<IpAddr>, mac: Mac) -> Case {
    Case {
        name,
        frame,
        verdict: XDP_PASS,
        reason: Some(Reason::Conflict),
        expect: Expect::Conflict {
            vip: vip.into(),
            mac,
        },
    }
}

/// An ARP request for `vip` answered from `mac`.
fn arp_answer(name: &'static str, frame: Vec<u8>, vip: Ipv4Addr, mac: Mac) -> Case {
    let reply = frames::expected_arp_reply(&frame, mac);
    Case {
        name,
        frame,
        verdict: XDP_TX,
        reason: Some(Reason::ArpAnswered),
        expect: Expect::ArpReply { vip, mac, reply },
    }
}

/// A Neighbor Solicitation for `vip` answered from `mac`.
/// Where the first option after the SLLA starts in [`long_ns`]'s frames (untagged
/// Ethernet, IPv6 without extension headers, 24-byte NS, 8-byte SLLA).
const LONG_NS_FIRST_EXTRA: usize = 14 + 40 + 24 + 8;

/// An address-resolution NS for `VIP6` with its SLLA and then one option
/// per `(kind, data bytes)`, each padded to 8-byte units.
fn long_ns(options: &[(u8, usize)]) -> Vec<u8> {
    options
        .iter()
        .fold(Ns::resolution(PEER_MAC, PEER6, VIP6), |ns, &(kind, len)| {
            ns.with_option(kind, &vec![7; len])
        })
        .build()
}

fn ns_answer(name: &'static str, frame: Vec<u8>, vip: Ipv6Addr, mac: Mac) -> Case {
    let reply = frames::expected_neighbor_advertisement(&frame, mac);
    Case {
        name,
        frame,
        verdict: XDP_TX,
        reason: Some(Reason::NsAnswered),
        expect: Expect::Advertisement { vip, mac, reply },
    }
}

/// Conflict count and last conflicting MAC, per (VIP, ifindex).
type Conflicts = BTreeMap<(IpAddr, u32), (u64, Option<Mac>)>;

/// A loaded responder with private maps holding the test VIPs.
struct Harness {
    object: Object,
    maps: DataplaneMaps,
    /// The device the frames come in on (`ingress_ifindex` in the test run's
    /// context); `None`: the kernel's default, loopback (`IFINDEX`).
    ingress: Option<u32>,
    /// The interface whose VIP counters and conflict records the cases move.
    owner: u32,
}

impl Harness {
    fn new() -> Result<Self> {
        let mut object = Object::load(None).context("loading the eBPF object (root needed)")?;
        object
            .program(RESPONDER)
            .context("verifying the responder")?;
        let mut maps = object.take_maps()?;
        maps.add_vip(VIP4.into(), IFINDEX, VlanPath::UNTAGGED, OUR_MAC)?;
        maps.add_vip(VIP4_B.into(), IFINDEX, VlanPath::UNTAGGED, OUR_MAC_B)?;
        maps.add_vip(
            VIP4_ELSEWHERE.into(),
            OTHER_IFINDEX,
            VlanPath::UNTAGGED,
            OTHER_MAC,
        )?;
        maps.add_vip(VIP6.into(), IFINDEX, VlanPath::UNTAGGED, OUR_MAC)?;
        maps.add_vip(
            VIP6_ELSEWHERE.into(),
            OTHER_IFINDEX,
            VlanPath::UNTAGGED,
            OTHER_MAC,
        )?;
        Ok(Harness {
            object,
            maps,
            ingress: None,
            owner: IFINDEX,
        })
    }

    /// Runs the responder once on `frame`: (return value, output frame), or
    /// `None` when the kernel refuses to run a frame shorter than an Ethernet
    /// header (see `Refusal`).
    fn run(&mut self, frame: &[u8]) -> Result<Option<(u32, Vec<u8>)>> {
        let program = self.object.program(RESPONDER)?;
        let mut out = vec![0u8; frame.len() + 256];
        let ctx = self.ingress.map(|ifindex| xdp_md(frame.len(), ifindex));
        let result = program.test_run(TestRunOptions {
            data_in: Some(frame),
            data_out: Some(&mut out),
            ctx_in: ctx.as_deref(),
            ..Default::default()
        });
        match result {
            Ok(result) => {
                out.truncate(result.data_size_out as usize);
                Ok(Some((result.return_value, out)))
            }
            Err(ProgramError::SyscallError(SyscallError { io_error, .. }))
                if frame.len() < offset::ETH_END
                    && io_error.raw_os_error() == Some(libc_einval()) =>
            {
                Ok(None)
            }
            Err(e) => Err(e).context("BPF_PROG_TEST_RUN"),
        }
    }

    fn reasons(&self) -> Result<BTreeMap<&'static str, u64>> {
        Ok(self
            .maps
            .reasons()?
            .into_iter()
            .map(|(r, n)| (r.name(), n))
            .collect())
    }

    /// Conflict count and last MAC per (VIP, interface).
    fn conflicts(&self) -> Result<Conflicts> {
        Ok(self
            .maps
            .vips()?
            .into_iter()
            .map(|v| {
                (
                    (v.address, v.ifindex),
                    (v.conflicts, v.last_conflict.map(|c| c.mac)),
                )
            })
            .collect())
    }

    fn answered(&self) -> Result<BTreeMap<(IpAddr, u32), u64>> {
        Ok(self
            .maps
            .vips()?
            .into_iter()
            .map(|v| ((v.address, v.ifindex), v.answered))
            .collect())
    }

    /// Runs one case; returns what went wrong, if anything.
    fn check(&mut self, case: &Case) -> Result<Vec<String>> {
        let reasons_before = self.reasons()?;
        let answered_before = self.answered()?;
        let conflicts_before = self.conflicts()?;
        let ran = self.run(&case.frame)?;
        let reasons_after = self.reasons()?;
        let answered_after = self.answered()?;
        let conflicts_after = self.conflicts()?;
        let mut problems = Vec::new();
        let Some((verdict, output)) = ran else {
            // Kernel refusal (frames under 14 bytes): the program never ran, so
            // nothing may have been counted.
            if reasons_after != reasons_before || answered_after != answered_before {
                problems.push("counters moved although the kernel refused the frame".to_string());
            }
            eprintln!(
                "note: {}: BPF_PROG_TEST_RUN refuses frames shorter than an Ethernet header \
                 (EINVAL); expected {} could not be observed",
                case.name,
                case.reason.map_or("no counter", |r| r.name())
            );
            return Ok(problems);
        };

        if verdict != case.verdict {
            problems.push(format!(
                "verdict {} ({}), expected {}",
                verdict,
                action(verdict),
                action(case.verdict)
            ));
        }

        let moved: BTreeMap<&str, u64> = reasons_after
            .iter()
            .filter_map(|(name, after)| {
                let delta = after - reasons_before.get(name).copied().unwrap_or(0);
                (delta != 0).then_some((*name, delta))
            })
            .collect();
        let expected_moved: BTreeMap<&str, u64> =
            case.reason.map(|r| (r.name(), 1u64)).into_iter().collect();
        if moved != expected_moved {
            problems.push(format!(
                "reason counters moved {moved:?}, expected {expected_moved:?}"
            ));
        }

        let answered_moved: BTreeMap<(IpAddr, u32), u64> = answered_after
            .iter()
            .filter_map(|(key, after)| {
                let delta = after - answered_before.get(key).copied().unwrap_or(0);
                (delta != 0).then_some((*key, delta))
            })
            .collect();
        let expected_answered = match &case.expect {
            Expect::Pass | Expect::Conflict { .. } => BTreeMap::new(),
            Expect::ArpReply { vip, .. } => BTreeMap::from([((IpAddr::V4(*vip), self.owner), 1)]),
            Expect::Advertisement { vip, .. } => {
                BTreeMap::from([((IpAddr::V6(*vip), self.owner), 1)])
            }
        };
        if answered_moved != expected_answered {
            problems.push(format!(
                "answered counters moved {answered_moved:?}, expected {expected_answered:?}"
            ));
        }

        let conflicts_moved: Conflicts = conflicts_after
            .iter()
            .filter_map(|(key, (after, mac))| {
                let before = conflicts_before.get(key).map_or(0, |c| c.0);
                (*after != before).then_some((*key, (after - before, *mac)))
            })
            .collect();
        let expected_conflicts = match &case.expect {
            Expect::Conflict { vip, mac } => {
                BTreeMap::from([((*vip, self.owner), (1, Some(*mac)))])
            }
            _ => BTreeMap::new(),
        };
        if conflicts_moved != expected_conflicts {
            problems.push(format!(
                "conflict records moved {conflicts_moved:02x?}, expected {expected_conflicts:02x?}"
            ));
        }

        let expected_output = match &case.expect {
            Expect::Pass | Expect::Conflict { .. } => &case.frame,
            Expect::ArpReply { reply, .. } | Expect::Advertisement { reply, .. } => reply,
        };
        if &output != expected_output {
            problems.push(format!(
                "output differs from the expected frame ({})\n  got:\n{}\n  expected:\n{}",
                frames::diff(&output, expected_output),
                indent(&frames::hex(&output)),
                indent(&frames::hex(expected_output)),
            ));
        }
        // Check the output again the way a receiver would, against the request
        // rather than against the expected frame. A tagged answer must carry
        // the request's tags; the receiver then sees the frame behind them.
        let (request_tags, request) = untag(&case.frame);
        let (output_tags, output) = untag(&output);
        match &case.expect {
            Expect::Pass | Expect::Conflict { .. } => {}
            Expect::ArpReply { vip, mac, .. } => {
                problems.extend(check_arp_reply(&request, &output, *vip, *mac))
            }
            Expect::Advertisement { vip, mac, .. } => {
                problems.extend(check_advertisement(&request, &output, *vip, *mac))
            }
        }
        if output_tags != request_tags {
            problems.push(format!(
                "tags {output_tags:04x?} on the output, the request had {request_tags:04x?}"
            ));
        }
        Ok(problems)
    }

    /// Runs every case, then fails with the names and problems of all failing ones.
    fn run_table(&mut self, cases: &[Case]) {
        let mut names = std::collections::BTreeSet::new();
        for case in cases {
            assert!(names.insert(case.name), "duplicate case name {}", case.name);
        }
        let mut failures = Vec::new();
        for case in cases {
            match self.check(case) {
                Ok(problems) if problems.is_empty() => {}
                Ok(problems) => {
                    failures.push(format!("{}:\n  - {}", case.name, problems.join("\n  - ")))
                }
                Err(e) => failures.push(format!("{}: {e:#}", case.name)),
            }
        }
        eprintln!("{} cases, {} failed", cases.len(), failures.len());
        assert!(
            failures.is_empty(),
            "{} of {} cases failed:\n{}",
            failures.len(),
            cases.len(),
            failures.join("\n")
        );
    }
}

/// The test run's `struct xdp_md` context: the kernel wants `data_end` to
/// be the frame's length and everything else but the ingress device zero;
/// it looks the device up in the caller's network namespace.
fn xdp_md(frame_len: usize, ingress_ifindex: u32) -> Vec<u8> {
    let fields: [u32; 6] = [0, frame_len as u32, 0, ingress_ifindex, 0, 0];
    fields.iter().flat_map(|f| f.to_ne_bytes()).collect()
}

/// The (TPID, TCI) pairs in front of a frame's EtherType, and the frame
/// without them.
fn untag(frame: &[u8]) -> (Vec<(u16, u16)>, Vec<u8>) {
    let mut tags = Vec::new();
    let mut rest = frame.to_vec();
    while rest.len() >= 18 {
        let tpid = u16::from_be_bytes([rest[12], rest[13]]);
        if tpid != frames::ETHERTYPE_VLAN && tpid != frames::ETHERTYPE_QINQ {
            break;
        }
        tags.push((tpid, u16::from_be_bytes([rest[14], rest[15]])));
        rest.drain(12..16);
    }
    (tags, rest)
}

/// `frame` with the tags inserted after the source MAC, outermost first.
fn tagged(frame: &[u8], tags: &[(u16, u16)]) -> Vec<u8> {
    let mut out = frame[..12].to_vec();
    for (tpid, tci) in tags {
        out.extend_from_slice(&tpid.to_be_bytes());
        out.extend_from_slice(&tci.to_be_bytes());
    }
    out.extend_from_slice(&frame[12..]);
    out
}

/// EINVAL, without a libc dependency.
const fn libc_einval() -> i32 {
    22
}

fn action(verdict: u32) -> &'static str {
    match verdict {
        0 => "XDP_ABORTED",
        1 => "XDP_DROP",
        XDP_PASS => "XDP_PASS",
        XDP_TX => "XDP_TX",
        4 => "XDP_REDIRECT",
        _ => "unknown",
    }
}

fn indent(text: &str) -> String {
    text.lines()
        .map(|l| format!("    {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn check_arp_reply(request: &[u8], output: &[u8], vip: Ipv4Addr, mac: Mac) -> Vec<String> {
    let field = |at: usize, len: usize| request[at..at + len].to_vec();
    let mut problems = Vec::new();
    match frames::parse_arp_reply(output) {
        Err(e) => problems.push(format!("output is not an ARP reply: {e}")),
        Ok(reply) => {
            if reply.sha != mac || reply.eth_src != mac {
                problems.push(format!(
                    "reply from {:02x?}/{:02x?}, expected {mac:02x?}",
                    reply.eth_src, reply.sha
                ));
            }
            if reply.spa != vip {
                problems.push(format!("reply says {} is at us, expected {vip}", reply.spa));
            }
            if reply.tha.to_vec() != field(offset::ARP_SHA, 6)
                || reply.tpa.octets().to_vec() != field(offset::ARP_SPA, 4)
                || reply.eth_dst.to_vec() != field(offset::ETH_SRC, 6)
            {
                problems.push(format!(
                    "reply sent to {:02x?} ({:02x?}, {}), not to the requester",
                    reply.eth_dst, reply.tha, reply.tpa
                ));
            }
        }
    }
    problems
}

fn check_advertisement(request: &[u8], output: &[u8], vip: Ipv6Addr, mac: Mac) -> Vec<String> {
    let mut problems = Vec::new();
    let request_src = Ipv6Addr::from(
        <[u8; 16]>::try_from(&request[offset::IPV6_SRC..offset::IPV6_SRC + 16]).unwrap(),
    );
    let request_dst = Ipv6Addr::from(
        <[u8; 16]>::try_from(&request[offset::IPV6_DST..offset::IPV6_DST + 16]).unwrap(),
    );
    // RFC 4861 §7.2.4: only a unicast solicitation may go without our
    // link-layer address, and only one too short to grow into it.
    let short = !request_dst.is_multicast() && request.len() < offset::NA_FRAME_LEN;
    let expected_len = if short {
        offset::NA_SHORT_FRAME_LEN
    } else {
        offset::NA_FRAME_LEN
    };
    if output.len() != expected_len {
        problems.push(format!(
            "advertisement is {} bytes, expected {expected_len}",
            output.len()
        ));
    }
    let dad = request_src.is_unspecified();
    match frames::parse_neighbor_advertisement(output) {
        Err(e) => problems.push(format!("output is not a valid Neighbor Advertisement: {e}")),
        Ok(na) => {
            let expected_dst = if dad { frames::ALL_NODES } else { request_src };
            if na.src != vip || na.target != vip || na.dst != expected_dst {
                problems.push(format!(
                    "advertisement {} -> {} for {}, expected {vip} -> {expected_dst} for {vip}",
                    na.src, na.dst, na.target
                ));
            }
            if na.hop_limit != 255 {
                problems.push(format!("hop limit {}", na.hop_limit));
            }
            if na.solicited == dad || !na.override_ || na.router {
                problems.push(format!(
                    "flags S={} O={} R={}",
                    na.solicited, na.override_, na.router
                ));
            }
            if na.tlla != (!short).then_some(mac) || na.eth_src != mac {
                problems.push(format!(
                    "link-layer address {:02x?} from {:02x?}",
                    na.tlla, na.eth_src
                ));
            }
        }
    }
    problems
}

// ---------------------------------------------------------------- the tables

fn arp_cases() -> Vec<Case> {
    use frames::{arp_request, mutated, set_u16, set_u8, Arp};
    let request = arp_request(PEER_MAC, PEER4, VIP4);
    vec![
        // Answered.
        arp_answer("arp_broadcast_request", request.clone(), VIP4, OUR_MAC),
        arp_answer(
            "arp_request_second_vip",
            arp_request(PEER_MAC, PEER4, VIP4_B),
            VIP4_B,
            OUR_MAC_B,
        ),
        arp_answer(
            "arp_unicast_request_to_our_mac",
            frames::arp_unicast_request(OUR_MAC, PEER_MAC, PEER4, VIP4),
            VIP4,
            OUR_MAC,
        ),
        arp_answer(
            "arp_probe_from_unspecified",
            frames::arp_probe(PEER_MAC, VIP4),
            VIP4,
            OUR_MAC,
        ),
        arp_answer(
            "arp_padded_to_60_zeros",
            frames::padded(&request, 60, 0),
            VIP4,
            OUR_MAC,
        ),
        arp_answer(
            "arp_padded_to_60_pattern",
            frames::padded(&request, 60, 0xa5),
            VIP4,
            OUR_MAC,
        ),
        arp_answer(
            "arp_request_with_nonzero_tha",
            Arp {
                tha: OTHER_MAC,
                ..Arp::request(PEER_MAC, PEER4, VIP4)
            }
            .build(),
            VIP4,
            OUR_MAC,
        ),
        // The reply goes to the request's Ethernet source (see
        // frames::expected_arp_reply); the ARP target fields to its sender.
        arp_answer(
            "arp_sender_mac_differs_from_ethernet_source",
            Arp {
                eth_src: OTHER_MAC,
                ..Arp::request(PEER_MAC, PEER4, VIP4)
            }
            .build(),
            VIP4,
            OUR_MAC,
        ),
        // Truncated.
        pass(
            "arp_truncated_to_41",
            frames::truncated(&request, 41),
            Reason::Truncated,
        ),
        pass(
            "arp_truncated_to_ethernet_header",
            frames::truncated(&request, 14),
            Reason::Truncated,
        ),
        pass(
            "arp_truncated_to_28",
            frames::truncated(&request, 28),
            Reason::Truncated,
        ),
        // Malformed fixed fields.
        pass(
            "arp_htype_ieee802",
            mutated(&request, |f| set_u16(f, offset::ARP_HTYPE, 6)),
            Reason::Malformed,
        ),
        pass(
            "arp_ptype_ipv6",
            mutated(&request, |f| set_u16(f, offset::ARP_PTYPE, 0x86dd)),
            Reason::Malformed,
        ),
        pass(
            "arp_hlen_8",
            mutated(&request, |f| set_u8(f, offset::ARP_HLEN, 8)),
            Reason::Malformed,
        ),
        pass(
            "arp_plen_16",
            mutated(&request, |f| set_u8(f, offset::ARP_PLEN, 16)),
            Reason::Malformed,
        ),
        pass(
            "arp_sender_hardware_address_multicast",
            Arp {
                sha: [0x01, 0x00, 0x5e, 0, 0, 1],
                ..Arp::request(PEER_MAC, PEER4, VIP4)
            }
            .build(),
            Reason::Malformed,
        ),
        pass(
            "arp_ethernet_source_multicast",
            Arp {
                eth_src: [0x03, 0, 0, 0, 0, 1],
                ..Arp::request(PEER_MAC, PEER4, VIP4)
            }
            .build(),
            Reason::Malformed,
        ),
        // Not requests.
        pass(
            "arp_reply_to_us",
            frames::arp_reply(PEER_MAC, PEER4, OUR_MAC, VIP4),
            Reason::ArpNotRequest,
        ),
        pass(
            "arp_operation_3_rarp",
            mutated(&request, |f| set_u16(f, offset::ARP_OPER, 3)),
            Reason::ArpNotRequest,
        ),
        pass(
            "arp_operation_0",
            mutated(&request, |f| set_u16(f, offset::ARP_OPER, 0)),
            Reason::ArpNotRequest,
        ),
        // Ownership and destination.
        pass(
            "arp_not_owned",
            arp_request(PEER_MAC, PEER4, NOT_OWNED4),
            Reason::NotOwned,
        ),
        pass(
            "arp_owned_on_other_ifindex",
            arp_request(PEER_MAC, PEER4, VIP4_ELSEWHERE),
            Reason::NotOwned,
        ),
        pass(
            "arp_unicast_to_other_mac",
            frames::arp_unicast_request(OTHER_MAC, PEER_MAC, PEER4, VIP4),
            Reason::WrongEthDestination,
        ),
        pass(
            "arp_to_multicast_mac",
            frames::arp_unicast_request(
                [0x01, 0x00, 0x5e, 0x00, 0x00, 0x01],
                PEER_MAC,
                PEER4,
                VIP4,
            ),
            Reason::WrongEthDestination,
        ),
        pass(
            "arp_to_second_vips_mac_for_first_vip",
            frames::arp_unicast_request(OUR_MAC_B, PEER_MAC, PEER4, VIP4),
            Reason::WrongEthDestination,
        ),
        // Conflicts (RFC 5227 §2.4): any ARP whose sender IP is our VIP
        // and whose sender MAC is not ours, recorded for that VIP.
        conflict(
            "gratuitous_request_conflict",
            frames::gratuitous_arp(OTHER_MAC, VIP4, 1),
            VIP4,
            OTHER_MAC,
        ),
        conflict(
            "gratuitous_reply_conflict",
            frames::gratuitous_arp(OTHER_MAC, VIP4, 2),
            VIP4,
            OTHER_MAC,
        ),
        conflict(
            "arp_request_from_our_vip_conflict",
            arp_request(OTHER_MAC, VIP4, PEER4),
            VIP4,
            OTHER_MAC,
        ),
        conflict(
            "arp_reply_from_our_vip_conflict",
            frames::arp_reply(OTHER_MAC, VIP4, PEER_MAC, PEER4),
            VIP4,
            OTHER_MAC,
        ),
        // Even when it asks for one of our VIPs: the claim comes first.
        conflict(
            "arp_request_for_vip_from_our_other_vip_conflict",
            arp_request(OTHER_MAC, VIP4_B, VIP4),
            VIP4_B,
            OTHER_MAC,
        ),
        conflict(
            "arp_conflict_on_second_vip",
            frames::gratuitous_arp(PEER_MAC, VIP4_B, 1),
            VIP4_B,
            PEER_MAC,
        ),
        // The sender hardware address is what is claimed, not the Ethernet source.
        conflict(
            "arp_conflict_names_sender_hardware_address",
            Arp {
                eth_src: PEER_MAC,
                ..Arp::request(OTHER_MAC, VIP4, PEER4)
            }
            .build(),
            VIP4,
            OTHER_MAC,
        ),
        pass(
            "arp_request_from_our_vip_looped",
            arp_request(OUR_MAC, VIP4, PEER4),
            Reason::Looped,
        ),
        // Owned on another interface only: not ours to defend here.
        pass(
            "arp_request_from_vip_owned_elsewhere",
            arp_request(OTHER_MAC, VIP4_ELSEWHERE, PEER4),
            Reason::NotOwned,
        ),
        pass(
            "gratuitous_request_looped",
            frames::gratuitous_arp(OUR_MAC, VIP4, 1),
            Reason::Looped,
        ),
        pass(
            "gratuitous_reply_looped",
            frames::gratuitous_arp(OUR_MAC, VIP4, 2),
            Reason::Looped,
        ),
        pass(
            "gratuitous_request_not_owned",
            frames::gratuitous_arp(OTHER_MAC, NOT_OWNED4, 1),
            Reason::NotOwned,
        ),
        pass(
            "gratuitous_reply_not_owned",
            frames::gratuitous_arp(OTHER_MAC, NOT_OWNED4, 2),
            Reason::ArpNotRequest,
        ),
    ]
}

fn ndp_cases() -> Vec<Case> {
    use frames::{mutated, refresh_icmpv6_checksum, set_bytes, set_u16, set_u8};
    let with_slla = frames::neighbor_solicitation(PEER_MAC, PEER6, VIP6, Some(PEER_MAC));
    let without_slla = frames::neighbor_solicitation(PEER_MAC, PEER6, VIP6, None);
    let group = frames::solicited_node(VIP6);
    // Changes bytes, then makes the checksum right again, so that only the
    // change is wrong.
    let edit = |frame: &[u8], f: &dyn Fn(&mut Vec<u8>)| {
        mutated(frame, |g| {
            f(g);
            refresh_icmpv6_checksum(g);
        })
    };
    let other_group = frames::solicited_node(NOT_OWNED6);
    vec![
        // Answered.
        ns_answer("ns_with_slla", with_slla.clone(), VIP6, OUR_MAC),
        ns_answer(
            "ns_without_slla_grows_by_8",
            without_slla.clone(),
            VIP6,
            OUR_MAC,
        ),
        ns_answer(
            "ns_with_slla_and_nonce_shrinks",
            frames::ns_with_nonce(PEER_MAC, PEER6, VIP6, [1, 2, 3, 4, 5, 6]),
            VIP6,
            OUR_MAC,
        ),
        ns_answer(
            "ns_longest_accepted_88",
            Ns::resolution(PEER_MAC, PEER6, VIP6)
                .with_option(frames::NDP_OPTION_NONCE, &[9; 6])
                .with_option(200, &[7; 14])
                .with_option(201, &[8; 30])
                .build(),
            VIP6,
            OUR_MAC,
        ),
        ns_answer(
            "ns_from_global_source",
            frames::neighbor_solicitation(PEER_MAC, PEER6_GLOBAL, VIP6, Some(PEER_MAC)),
            VIP6,
            OUR_MAC,
        ),
        ns_answer(
            "dad_answered_to_all_nodes",
            frames::dad_solicitation(PEER_MAC, VIP6),
            VIP6,
            OUR_MAC,
        ),
        ns_answer(
            "dad_with_nonce",
            Ns::dad(PEER_MAC, VIP6)
                .with_option(frames::NDP_OPTION_NONCE, &[6, 5, 4, 3, 2, 1])
                .build(),
            VIP6,
            OUR_MAC,
        ),
        ns_answer(
            "nud_unicast",
            frames::nud_solicitation(OUR_MAC, PEER_MAC, PEER6, VIP6),
            VIP6,
            OUR_MAC,
        ),
        ns_answer(
            "nud_unicast_without_slla",
            Ns::unreachability(OUR_MAC, PEER_MAC, PEER6, VIP6)
                .with_slla(None)
                .build(),
            VIP6,
            OUR_MAC,
        ),
        ns_answer(
            "ns_with_trailing_bytes_after_payload",
            frames::padded(&with_slla, with_slla.len() + 6, 0x5a),
            VIP6,
            OUR_MAC,
        ),
        ns_answer(
            "ns_with_traffic_class_and_flow_label",
            mutated(&with_slla, |f| {
                set_bytes(f, offset::IPV6_VERSION, &[0x6f, 0xf1, 0x23, 0x45])
            }),
            VIP6,
            OUR_MAC,
        ),
        ns_answer(
            "ns_reserved_bits_set",
            edit(&with_slla, &|f| set_bytes(f, offset::NDP_FLAGS, &[0xff; 4])),
            VIP6,
            OUR_MAC,
        ),
        // Eight 8-byte options: the most the program walks.
        ns_answer(
            "ns_eight_options",
            (0..7)
                .fold(Ns::resolution(PEER_MAC, PEER6, VIP6), |ns, i| {
                    ns.with_option(200 + i, &[i; 6])
                })
                .build(),
            VIP6,
            OUR_MAC,
        ),
        // Truncated at each header boundary.
        pass(
            "ipv6_truncated_to_40",
            frames::truncated(&with_slla, 40),
            Reason::Truncated,
        ),
        pass(
            "ipv6_truncated_to_53",
            frames::truncated(&with_slla, 53),
            Reason::Truncated,
        ),
        pass(
            "ipv6_header_only_54",
            frames::truncated(&with_slla, 54),
            Reason::Truncated,
        ),
        pass(
            "icmpv6_shorter_than_payload_length",
            frames::truncated(&with_slla, 78),
            Reason::Truncated,
        ),
        pass(
            "icmpv6_shorter_than_24",
            frames::truncated(&without_slla, 74),
            Reason::Truncated,
        ),
        pass(
            "icmpv6_type_only",
            frames::truncated(&with_slla, 55),
            Reason::Truncated,
        ),
        // Lengths.
        pass(
            "ns_payload_length_16",
            edit(&without_slla, &|f| set_u16(f, offset::IPV6_PAYLOAD_LEN, 16)),
            Reason::Malformed,
        ),
        pass(
            "ns_payload_length_not_multiple_of_8",
            edit(&with_slla, &|f| set_u16(f, offset::IPV6_PAYLOAD_LEN, 28)),
            Reason::Malformed,
        ),
        // Messages past the inline walks (88 bytes of ICMPv6) are
        // checksummed and walked to their real end with bpf_loop; unknown
        // options are skipped (RFC 4861 §4.6).
        ns_answer(
            "ns_96_bytes_unknown_option",
            long_ns(&[(200, 62)]),
            VIP6,
            OUR_MAC,
        ),
        ns_answer(
            "ns_192_bytes_twenty_options",
            long_ns(&[(200, 6); 20]),
            VIP6,
            OUR_MAC,
        ),
        ns_answer(
            "ns_1432_bytes_one_long_option",
            long_ns(&[(201, 1398)]),
            VIP6,
            OUR_MAC,
        ),
        pass(
            "ns_long_option_length_zero",
            mutated(&long_ns(&[(200, 6), (200, 62)]), |f| {
                f[LONG_NS_FIRST_EXTRA + 1] = 0;
                frames::refresh_icmpv6_checksum(f);
            }),
            Reason::Malformed,
        ),
        pass(
            "ns_long_option_past_the_message",
            mutated(&long_ns(&[(200, 6), (200, 62)]), |f| {
                f[LONG_NS_FIRST_EXTRA + 1] = 10;
                frames::refresh_icmpv6_checksum(f);
            }),
            Reason::Malformed,
        ),
        pass(
            "ns_long_bad_checksum",
            mutated(&long_ns(&[(200, 62)]), |f| f[LONG_NS_FIRST_EXTRA + 40] ^= 1),
            Reason::BadChecksum,
        ),
        // Header fields.
        pass(
            "ipv6_version_4",
            edit(&with_slla, &|f| set_u8(f, offset::IPV6_VERSION, 0x40)),
            Reason::Malformed,
        ),
        pass(
            "ns_hop_limit_254",
            Ns {
                hop_limit: 254,
                ..Ns::resolution(PEER_MAC, PEER6, VIP6)
            }
            .build(),
            Reason::Malformed,
        ),
        pass(
            "ns_code_1",
            edit(&with_slla, &|f| set_u8(f, offset::ICMPV6_CODE, 1)),
            Reason::Malformed,
        ),
        pass(
            "ns_bad_checksum",
            mutated(&with_slla, |f| f[offset::ICMPV6_CHECKSUM + 1] ^= 0x01),
            Reason::BadChecksum,
        ),
        pass(
            "ns_bad_checksum_in_option",
            mutated(&with_slla, |f| f[offset::NDP_OPTIONS + 7] ^= 0x80),
            Reason::BadChecksum,
        ),
        pass(
            "ns_multicast_target",
            frames::neighbor_solicitation(
                PEER_MAC,
                PEER6,
                Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 0x1234),
                None,
            ),
            Reason::Malformed,
        ),
        pass(
            "ns_multicast_source",
            Ns {
                src: frames::ALL_NODES,
                ..Ns::resolution(PEER_MAC, PEER6, VIP6)
            }
            .build(),
            Reason::Malformed,
        ),
        pass(
            "ns_ethernet_source_multicast",
            Ns {
                eth_src: [0x33, 0x33, 0, 0, 0, 1],
                ..Ns::resolution(PEER_MAC, PEER6, VIP6)
            }
            .build(),
            Reason::Malformed,
        ),
        pass(
            "ns_to_wrong_group",
            Ns {
                dst: other_group,
                eth_dst: frames::multicast_mac(other_group),
                ..Ns::resolution(PEER_MAC, PEER6, VIP6)
            }
            .build(),
            Reason::Malformed,
        ),
        pass(
            "ns_to_all_nodes",
            Ns {
                dst: frames::ALL_NODES,
                eth_dst: frames::ALL_NODES_MAC,
                ..Ns::resolution(PEER_MAC, PEER6, VIP6)
            }
            .build(),
            Reason::Malformed,
        ),
        pass(
            "dad_to_unicast_target",
            Ns {
                eth_dst: OUR_MAC,
                dst: VIP6,
                ..Ns::dad(PEER_MAC, VIP6)
            }
            .build(),
            Reason::Malformed,
        ),
        // Options.
        pass(
            "dad_carrying_slla",
            Ns::dad(PEER_MAC, VIP6).with_slla(Some(PEER_MAC)).build(),
            Reason::Malformed,
        ),
        pass(
            "ns_zero_length_option",
            edit(&with_slla, &|f| set_u8(f, offset::NDP_OPTIONS + 1, 0)),
            Reason::Malformed,
        ),
        pass(
            "ns_zero_length_second_option",
            edit(
                &frames::ns_with_nonce(PEER_MAC, PEER6, VIP6, [1; 6]),
                &|f| set_u8(f, offset::NDP_OPTIONS + 9, 0),
            ),
            Reason::Malformed,
        ),
        pass(
            "ns_option_overrunning_message",
            edit(&with_slla, &|f| set_u8(f, offset::NDP_OPTIONS + 1, 2)),
            Reason::Malformed,
        ),
        // Ownership and Ethernet destination.
        pass(
            "ns_not_owned",
            frames::neighbor_solicitation(PEER_MAC, PEER6, NOT_OWNED6, Some(PEER_MAC)),
            Reason::NotOwned,
        ),
        // Ownership is decided before the checksum is computed.
        pass(
            "ns_not_owned_bad_checksum",
            mutated(
                &frames::neighbor_solicitation(PEER_MAC, PEER6, NOT_OWNED6, Some(PEER_MAC)),
                |f| f[offset::ICMPV6_CHECKSUM] ^= 0x01,
            ),
            Reason::NotOwned,
        ),
        pass(
            "ns_not_owned_same_group",
            frames::neighbor_solicitation(PEER_MAC, PEER6, NOT_OWNED6_SAME_GROUP, Some(PEER_MAC)),
            Reason::NotOwned,
        ),
        pass(
            "ns_owned_on_other_ifindex",
            frames::neighbor_solicitation(PEER_MAC, PEER6, VIP6_ELSEWHERE, Some(PEER_MAC)),
            Reason::NotOwned,
        ),
        pass(
            "ns_group_to_wrong_group_mac",
            Ns {
                eth_dst: [0x33, 0x33, 0xff, 0x00, 0x00, 0x99],
                ..Ns::resolution(PEER_MAC, PEER6, VIP6)
            }
            .build(),
            Reason::WrongEthDestination,
        ),
        // RFC 6085: a group solicitation converted to our unicast MAC.
        ns_answer(
            "ns_group_to_our_unicast_mac",
            Ns {
                eth_dst: OUR_MAC,
                ..Ns::resolution(PEER_MAC, PEER6, VIP6)
            }
            .build(),
            VIP6,
            OUR_MAC,
        ),
        ns_answer(
            "dad_group_to_our_unicast_mac",
            Ns {
                eth_dst: OUR_MAC,
                ..Ns::dad(PEER_MAC, VIP6)
            }
            .build(),
            VIP6,
            OUR_MAC,
        ),
        pass(
            "ns_group_to_second_vips_mac",
            Ns {
                eth_dst: OUR_MAC_B,
                ..Ns::resolution(PEER_MAC, PEER6, VIP6)
            }
            .build(),
            Reason::WrongEthDestination,
        ),
        pass(
            "ns_group_to_broadcast_mac",
            Ns {
                eth_dst: BROADCAST,
                ..Ns::resolution(PEER_MAC, PEER6, VIP6)
            }
            .build(),
            Reason::WrongEthDestination,
        ),
        pass(
            "nud_to_other_mac",
            frames::nud_solicitation(OTHER_MAC, PEER_MAC, PEER6, VIP6),
            Reason::WrongEthDestination,
        ),
        pass(
            "nud_to_group_mac",
            frames::nud_solicitation(frames::multicast_mac(group), PEER_MAC, PEER6, VIP6),
            Reason::WrongEthDestination,
        ),
        // Extension headers (RFC 8200 §4.3, §4.6) are skipped.
        ns_answer(
            "ns_after_hop_by_hop",
            frames::with_extension_headers(&with_slla, &[(frames::NEXT_HEADER_HOP_BY_HOP, 1)]),
            VIP6,
            OUR_MAC,
        ),
        ns_answer(
            "ns_after_destination_options",
            frames::with_extension_headers(
                &with_slla,
                &[(frames::NEXT_HEADER_DESTINATION_OPTIONS, 2)],
            ),
            VIP6,
            OUR_MAC,
        ),
        ns_answer(
            "dad_after_hop_by_hop_and_destination_options",
            frames::with_extension_headers(
                &frames::dad_solicitation(PEER_MAC, VIP6),
                &[
                    (frames::NEXT_HEADER_HOP_BY_HOP, 1),
                    (frames::NEXT_HEADER_DESTINATION_OPTIONS, 3),
                ],
            ),
            VIP6,
            OUR_MAC,
        ),
        ns_answer(
            "nud_without_slla_after_hop_by_hop",
            frames::with_extension_headers(
                &Ns::unreachability(OUR_MAC, PEER_MAC, PEER6, VIP6)
                    .with_slla(None)
                    .build(),
                &[(frames::NEXT_HEADER_HOP_BY_HOP, 1)],
            ),
            VIP6,
            OUR_MAC,
        ),
        pass(
            "ns_after_too_many_extension_headers",
            frames::with_extension_headers(
                &with_slla,
                &[
                    (frames::NEXT_HEADER_HOP_BY_HOP, 1),
                    (frames::NEXT_HEADER_DESTINATION_OPTIONS, 1),
                    (frames::NEXT_HEADER_DESTINATION_OPTIONS, 1),
                    (frames::NEXT_HEADER_DESTINATION_OPTIONS, 1),
                ],
            ),
            Reason::Unsupported,
        ),
        pass(
            "hop_by_hop_overrunning_frame",
            mutated(
                &frames::with_extension_headers(&with_slla, &[(frames::NEXT_HEADER_HOP_BY_HOP, 1)]),
                |f| set_u8(f, offset::IPV6_END + 1, 200),
            ),
            Reason::Truncated,
        ),
        pass(
            "ns_in_a_fragment",
            frames::with_extension_headers(&with_slla, &[(frames::NEXT_HEADER_FRAGMENT, 1)]),
            Reason::Unsupported,
        ),
        pass(
            "esp_after_hop_by_hop",
            frames::with_extension_headers(
                &frames::ipv6_udp(OUR_MAC, PEER_MAC, PEER6_GLOBAL, VIP6, 53, b"query"),
                &[
                    (frames::NEXT_HEADER_HOP_BY_HOP, 1),
                    (frames::NEXT_HEADER_ESP, 1),
                ],
            ),
            Reason::Unsupported,
        ),
        uncounted(
            "udp_after_hop_by_hop",
            frames::with_extension_headers(
                &frames::ipv6_udp(OUR_MAC, PEER_MAC, PEER6_GLOBAL, VIP6, 53, b"query"),
                &[(frames::NEXT_HEADER_HOP_BY_HOP, 1)],
            ),
        ),
        // Unicast NUD without options: 78 bytes, answered in place without
        // the Target Link-Layer Address option (RFC 4861 §7.2.4).
        ns_answer(
            "nud_78_bytes_answered_in_place",
            Ns::unreachability(OUR_MAC, PEER_MAC, PEER6_GLOBAL, VIP6)
                .with_slla(None)
                .build(),
            VIP6,
            OUR_MAC,
        ),
        // Advertisements claiming our VIP from another MAC: conflicts.
        conflict(
            "na_claiming_vip_with_tlla",
            frames::neighbor_advertisement(PEER_MAC, PEER6, VIP6, Some(OTHER_MAC)),
            VIP6,
            OTHER_MAC,
        ),
        conflict(
            "na_claiming_vip_without_tlla",
            frames::neighbor_advertisement(OTHER_MAC, PEER6, VIP6, None),
            VIP6,
            OTHER_MAC,
        ),
        conflict(
            "na_claiming_vip_after_hop_by_hop",
            frames::with_extension_headers(
                &frames::neighbor_advertisement(OTHER_MAC, PEER6, VIP6, Some(OTHER_MAC)),
                &[(frames::NEXT_HEADER_HOP_BY_HOP, 1)],
            ),
            VIP6,
            OTHER_MAC,
        ),
        pass(
            "na_for_vip_looped",
            frames::neighbor_advertisement(OUR_MAC, VIP6, VIP6, Some(OUR_MAC)),
            Reason::Looped,
        ),
        pass(
            "na_for_vip_bad_checksum",
            mutated(
                &frames::neighbor_advertisement(OTHER_MAC, PEER6, VIP6, Some(OTHER_MAC)),
                |f| f[offset::ICMPV6_CHECKSUM] ^= 0x01,
            ),
            Reason::BadChecksum,
        ),
        // RFC 4861 §7.1.2: Solicited set on an NA to a multicast address is
        // invalid, not a claim (found by the differential fuzzer).
        pass(
            "na_for_vip_solicited_flag_to_all_nodes",
            mutated(
                &frames::neighbor_advertisement(OTHER_MAC, VIP6, VIP6, Some(OTHER_MAC)),
                |f| {
                    f[offset::NDP_FLAGS] |= 0x40;
                    frames::refresh_icmpv6_checksum(f);
                },
            ),
            Reason::Malformed,
        ),
        // RFC 8200 §4.1: Hop-by-Hop only right after the IPv6 header.
        pass(
            "ns_hop_by_hop_after_destination_options",
            frames::with_extension_headers(
                &frames::neighbor_solicitation(PEER_MAC, PEER6, VIP6, Some(PEER_MAC)),
                &[
                    (frames::NEXT_HEADER_DESTINATION_OPTIONS, 1),
                    (frames::NEXT_HEADER_HOP_BY_HOP, 1),
                ],
            ),
            Reason::Malformed,
        ),
        pass(
            "na_for_vip_owned_elsewhere",
            frames::neighbor_advertisement(OTHER_MAC, PEER6, VIP6_ELSEWHERE, Some(OTHER_MAC)),
            Reason::OtherTraffic,
        ),
        // A received advertisement is not ours to handle.
        pass(
            "na_from_peer",
            frames::expected_neighbor_advertisement(
                &frames::neighbor_solicitation(OUR_MAC, VIP6, PEER6, None),
                PEER_MAC,
            ),
            Reason::OtherTraffic,
        ),
        // Now an NA for our VIP from the peer's Ethernet source (its only
        // option is a source link-layer address, not a target one).
        conflict(
            "ns_with_type_changed_to_na",
            edit(&with_slla, &|f| {
                set_bytes(
                    f,
                    offset::ICMPV6_TYPE,
                    &[frames::ICMPV6_NEIGHBOR_ADVERTISEMENT],
                )
            }),
            VIP6,
            PEER_MAC,
        ),
    ]
}

fn other_cases() -> Vec<Case> {
    let arp = frames::arp_request(PEER_MAC, PEER4, VIP4);
    let ns = frames::neighbor_solicitation(PEER_MAC, PEER6, VIP6, Some(PEER_MAC));
    vec![
        pass(
            "ethernet_truncated_to_13",
            frames::truncated(&arp, 13),
            Reason::Truncated,
        ),
        pass(
            "ethernet_truncated_to_12",
            frames::truncated(&arp, 12),
            Reason::Truncated,
        ),
        pass(
            "ethernet_truncated_to_1",
            frames::truncated(&arp, 1),
            Reason::Truncated,
        ),
        uncounted(
            "ipv4_tcp_syn",
            frames::ipv4_tcp(OUR_MAC, PEER_MAC, PEER4, VIP4, 40000, 443),
        ),
        uncounted(
            "ipv6_udp",
            frames::ipv6_udp(OUR_MAC, PEER_MAC, PEER6_GLOBAL, VIP6, 53, b"query"),
        ),
        pass(
            "ipv6_icmp_echo_request",
            frames::ipv6_echo_request(OUR_MAC, PEER_MAC, PEER6_GLOBAL, VIP6, b"ping"),
            Reason::OtherTraffic,
        ),
        uncounted(
            "other_ethertype_lldp",
            frames::padded(
                &frames::ethernet(
                    [0x01, 0x80, 0xc2, 0, 0, 0x0e],
                    PEER_MAC,
                    frames::ETHERTYPE_LLDP,
                    &[0; 20],
                ),
                60,
                0,
            ),
        ),
        uncounted(
            "ethernet_header_only_ipv4",
            frames::ethernet(OUR_MAC, PEER_MAC, frames::ETHERTYPE_IPV4, &[]),
        ),
        pass(
            "tagged_8021q_arp_for_untagged_vip",
            frames::vlan_tagged(&arp, frames::ETHERTYPE_VLAN, 100),
            Reason::NotOwned,
        ),
        pass(
            "tagged_8021ad_arp_for_untagged_vip",
            frames::vlan_tagged(&arp, frames::ETHERTYPE_QINQ, 100),
            Reason::NotOwned,
        ),
        pass(
            "tagged_8021q_ns_for_untagged_vip",
            frames::vlan_tagged(&ns, frames::ETHERTYPE_VLAN, 7),
            Reason::NotOwned,
        ),
        pass(
            "qinq_arp_for_untagged_vip",
            frames::vlan_tagged(
                &frames::vlan_tagged(&arp, frames::ETHERTYPE_VLAN, 7),
                frames::ETHERTYPE_QINQ,
                100,
            ),
            Reason::NotOwned,
        ),
        // Tagged traffic that cannot be a request is the hot path on a trunk.
        uncounted(
            "vlan_8021q_tagged_tcp",
            frames::vlan_tagged(
                &frames::ipv4_tcp(OUR_MAC, PEER_MAC, PEER4, VIP4, 40000, 443),
                frames::ETHERTYPE_VLAN,
                7,
            ),
        ),
        uncounted(
            "vlan_8021q_tagged_ipv6_udp",
            frames::vlan_tagged(
                &frames::ipv6_udp(OUR_MAC, PEER_MAC, PEER6_GLOBAL, VIP6, 53, b"query"),
                frames::ETHERTYPE_VLAN,
                7,
            ),
        ),
    ]
}

// ---------------------------------------------------------------- VLANs

const TAG_8021Q: u16 = frames::ETHERTYPE_VLAN;
const TAG_8021AD: u16 = frames::ETHERTYPE_QINQ;

/// Announced on VLAN 100 (802.1Q) of `IFINDEX`.
const VIP4_V100: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 40);
const VIP6_V100: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0x0a, 0xbc40);
/// On 802.1ad service VLAN 200 (one 0x88a8 tag).
const VIP4_AD200: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 41);
/// Behind 802.1ad 300 around 802.1Q 30.
const VIP4_QINQ: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 42);
const VIP6_QINQ: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0x0a, 0xbc42);
/// Behind 802.1Q 301 around 802.1Q 31 (two 0x8100 tags).
const VIP4_QQ: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 43);
/// The MAC the VLAN VIPs are announced with (a VLAN device may have its own).
const VLAN_MAC: Mac = [0x02, 0x5e, 0x00, 0x00, 0x01, 0x00];

fn vlan_harness() -> Harness {
    let mut harness = Harness::new().expect("harness");
    let vips: [(IpAddr, VlanPath); 6] = [
        (VIP4_V100.into(), VlanPath::single(100, false)),
        (VIP6_V100.into(), VlanPath::single(100, false)),
        (VIP4_AD200.into(), VlanPath::single(200, true)),
        (VIP4_QINQ.into(), VlanPath::stacked(300, true, 30)),
        (VIP6_QINQ.into(), VlanPath::stacked(300, true, 30)),
        (VIP4_QQ.into(), VlanPath::stacked(301, false, 31)),
    ];
    for (vip, vlan) in vips {
        harness
            .maps
            .add_vip(vip, IFINDEX, vlan, VLAN_MAC)
            .expect("adding a VLAN VIP");
    }
    harness
}

/// A request behind `tags` answered for `vip`: the expected answer is the
/// untagged request's expected answer with the same tags put back (the
/// program rewrites the frame; the tags stay where they are).
fn tagged_arp_answer(
    name: &'static str,
    request: Vec<u8>,
    tags: &[(u16, u16)],
    vip: Ipv4Addr,
) -> Case {
    let reply = tagged(&frames::expected_arp_reply(&request, VLAN_MAC), tags);
    Case {
        name,
        frame: tagged(&request, tags),
        verdict: XDP_TX,
        reason: Some(Reason::ArpAnswered),
        expect: Expect::ArpReply {
            vip,
            mac: VLAN_MAC,
            reply,
        },
    }
}

fn tagged_ns_answer(
    name: &'static str,
    request: Vec<u8>,
    tags: &[(u16, u16)],
    vip: Ipv6Addr,
) -> Case {
    let reply = tagged(
        &frames::expected_neighbor_advertisement(&request, VLAN_MAC),
        tags,
    );
    Case {
        name,
        frame: tagged(&request, tags),
        verdict: XDP_TX,
        reason: Some(Reason::NsAnswered),
        expect: Expect::Advertisement {
            vip,
            mac: VLAN_MAC,
            reply,
        },
    }
}

fn vlan_cases() -> Vec<Case> {
    let q100 = [(TAG_8021Q, 100)];
    let ad200 = [(TAG_8021AD, 200)];
    let qinq = [(TAG_8021AD, 300), (TAG_8021Q, 30)];
    let qq = [(TAG_8021Q, 301), (TAG_8021Q, 31)];
    let arp = |vip| frames::arp_request(PEER_MAC, PEER4, vip);
    let ns = |vip| frames::neighbor_solicitation(PEER_MAC, PEER6, vip, Some(PEER_MAC));
    vec![
        // Answered, with the tags kept.
        tagged_arp_answer("vlan_q100_arp", arp(VIP4_V100), &q100, VIP4_V100),
        // PCP 7 and DEI set: neither is part of the VLAN's identity.
        tagged_arp_answer(
            "vlan_q100_arp_pcp_dei",
            arp(VIP4_V100),
            &[(TAG_8021Q, 0xf000 | 100)],
            VIP4_V100,
        ),
        tagged_arp_answer("vlan_ad200_arp", arp(VIP4_AD200), &ad200, VIP4_AD200),
        tagged_arp_answer("vlan_qinq_ad_q_arp", arp(VIP4_QINQ), &qinq, VIP4_QINQ),
        tagged_arp_answer("vlan_qinq_q_q_arp", arp(VIP4_QQ), &qq, VIP4_QQ),
        tagged_arp_answer(
            "vlan_q100_arp_padded",
            frames::padded(&arp(VIP4_V100), 60, 0),
            &q100,
            VIP4_V100,
        ),
        tagged_ns_answer("vlan_q100_ns_with_slla", ns(VIP6_V100), &q100, VIP6_V100),
        tagged_ns_answer(
            "vlan_q100_ns_without_slla_grows",
            frames::neighbor_solicitation(PEER_MAC, PEER6, VIP6_V100, None),
            &q100,
            VIP6_V100,
        ),
        tagged_ns_answer(
            "vlan_q100_dad_grows",
            frames::dad_solicitation(PEER_MAC, VIP6_V100),
            &q100,
            VIP6_V100,
        ),
        tagged_ns_answer(
            "vlan_q100_nud_without_slla_in_place",
            Ns::unreachability(VLAN_MAC, PEER_MAC, PEER6, VIP6_V100)
                .with_slla(None)
                .build(),
            &q100,
            VIP6_V100,
        ),
        tagged_ns_answer(
            "vlan_q100_ns_after_hop_by_hop",
            frames::with_extension_headers(&ns(VIP6_V100), &[(frames::NEXT_HEADER_HOP_BY_HOP, 1)]),
            &q100,
            VIP6_V100,
        ),
        tagged_ns_answer("vlan_qinq_ns", ns(VIP6_QINQ), &qinq, VIP6_QINQ),
        // The key is the whole path of tags: anything else misses.
        pass(
            "vlan_wrong_vid",
            tagged(&arp(VIP4_V100), &[(TAG_8021Q, 101)]),
            Reason::NotOwned,
        ),
        pass(
            "vlan_ns_wrong_vid",
            tagged(&ns(VIP6_V100), &[(TAG_8021Q, 101)]),
            Reason::NotOwned,
        ),
        pass(
            "vlan_untagged_request_for_vlan_vip",
            arp(VIP4_V100),
            Reason::NotOwned,
        ),
        pass(
            "vlan_untagged_ns_for_vlan_vip",
            ns(VIP6_V100),
            Reason::NotOwned,
        ),
        pass(
            "vlan_tagged_request_for_untagged_vip",
            tagged(&arp(VIP4), &q100),
            Reason::NotOwned,
        ),
        pass(
            "vlan_tagged_ns_for_untagged_vip",
            tagged(&ns(VIP6), &q100),
            Reason::NotOwned,
        ),
        pass(
            "vlan_8021q_tag_for_8021ad_vip",
            tagged(&arp(VIP4_AD200), &[(TAG_8021Q, 200)]),
            Reason::NotOwned,
        ),
        pass(
            "vlan_outer_tag_only_of_qinq_vip",
            tagged(&arp(VIP4_QINQ), &[(TAG_8021AD, 300)]),
            Reason::NotOwned,
        ),
        pass(
            "vlan_qinq_tags_swapped",
            tagged(&arp(VIP4_QINQ), &[(TAG_8021AD, 30), (TAG_8021Q, 300)]),
            Reason::NotOwned,
        ),
        pass(
            "vlan_qinq_outer_8021q_for_8021ad_vip",
            tagged(&arp(VIP4_QINQ), &[(TAG_8021Q, 300), (TAG_8021Q, 30)]),
            Reason::NotOwned,
        ),
        // Shapes not parsed.
        pass(
            "vlan_three_tags",
            tagged(
                &arp(VIP4_QINQ),
                &[(TAG_8021AD, 300), (TAG_8021Q, 30), (TAG_8021Q, 3)],
            ),
            Reason::Unsupported,
        ),
        pass(
            "vlan_8021ad_inside_8021q",
            tagged(&arp(VIP4_QINQ), &[(TAG_8021Q, 300), (TAG_8021AD, 30)]),
            Reason::Unsupported,
        ),
        pass(
            "vlan_priority_tag_vid_0",
            tagged(&arp(VIP4), &[(TAG_8021Q, 0x6000)]),
            Reason::Unsupported,
        ),
        pass(
            "vlan_reserved_vid_4095",
            tagged(&arp(VIP4), &[(TAG_8021Q, 0x0fff)]),
            Reason::Unsupported,
        ),
        pass(
            "vlan_inner_vid_0",
            tagged(&arp(VIP4_QINQ), &[(TAG_8021AD, 300), (TAG_8021Q, 0)]),
            Reason::Unsupported,
        ),
        pass(
            "vlan_tag_without_payload_type",
            frames::truncated(&tagged(&arp(VIP4_V100), &q100), 17),
            Reason::Truncated,
        ),
        pass(
            "vlan_second_tag_truncated",
            frames::truncated(&tagged(&arp(VIP4_QQ), &qq), 21),
            Reason::Truncated,
        ),
        pass(
            "vlan_q100_arp_truncated",
            frames::truncated(&tagged(&arp(VIP4_V100), &q100), 18 + 27),
            Reason::Truncated,
        ),
        // Conflicts are per VIP, and the VIP is the one of the frame's VLAN.
        conflict(
            "vlan_q100_gratuitous_arp_conflict",
            tagged(&frames::gratuitous_arp(OTHER_MAC, VIP4_V100, 1), &q100),
            VIP4_V100,
            OTHER_MAC,
        ),
        conflict(
            "vlan_qinq_arp_reply_conflict",
            tagged(&frames::gratuitous_arp(OTHER_MAC, VIP4_QINQ, 2), &qinq),
            VIP4_QINQ,
            OTHER_MAC,
        ),
        pass(
            "vlan_q100_own_announcement_looped",
            tagged(&frames::gratuitous_arp(VLAN_MAC, VIP4_V100, 1), &q100),
            Reason::Looped,
        ),
        // The same claim on another VLAN is about nobody's VIP there.
        pass(
            "vlan_gratuitous_arp_other_vid",
            tagged(
                &frames::gratuitous_arp(OTHER_MAC, VIP4_V100, 1),
                &[(TAG_8021Q, 101)],
            ),
            Reason::NotOwned,
        ),
        conflict(
            "vlan_q100_na_conflict",
            tagged(
                &frames::neighbor_advertisement(OTHER_MAC, VIP6_V100, VIP6_V100, Some(OTHER_MAC)),
                &q100,
            ),
            VIP6_V100,
            OTHER_MAC,
        ),
        // Tagged traffic that is neither ARP nor IPv6 ICMP: the hot path.
        uncounted(
            "vlan_qinq_tcp",
            tagged(
                &frames::ipv4_tcp(OUR_MAC, PEER_MAC, PEER4, VIP4, 40000, 443),
                &qinq,
            ),
        ),
    ]
}

// ---------------------------------------------------------------- the tests

#[test]
fn arp_table() {
    let mut harness = Harness::new().expect("harness");
    harness.run_table(&arp_cases());
}

#[test]
fn ndp_table() {
    let mut harness = Harness::new().expect("harness");
    harness.run_table(&ndp_cases());
}

#[test]
fn other_traffic_table() {
    let mut harness = Harness::new().expect("harness");
    harness.run_table(&other_cases());
}

#[test]
fn vlan_table() {
    vlan_harness().run_table(&vlan_cases());
}

#[test]
fn tables_cover_enough_cases() {
    let total = arp_cases().len() + ndp_cases().len() + other_cases().len();
    assert!(total >= 30, "only {total} cases");
}

/// The dead-man switch: a stale heartbeat stops answers (after every other
/// check, so the reason is still precise), a fresh one or a zero limit
/// restores them.
#[test]
fn heartbeat_stale_stops_answers() {
    let mut harness = Harness::new().expect("harness");
    let arp = frames::arp_request(PEER_MAC, PEER4, VIP4);
    let ns = frames::neighbor_solicitation(PEER_MAC, PEER6, VIP6, None);

    harness
        .maps
        .heartbeat(Some(Duration::from_nanos(1)))
        .expect("heartbeat");
    // The program reads the coarse clock (a scheduler tick, 1 to 10 ms,
    // behind): wait for it to pass the heartbeat.
    std::thread::sleep(Duration::from_millis(25));
    assert!(harness.maps.watchdog().expect("watchdog").stale());
    harness.run_table(&[
        pass("stale_arp_request", arp.clone(), Reason::HeartbeatStale),
        pass("stale_ns", ns.clone(), Reason::HeartbeatStale),
        pass(
            "stale_dad",
            frames::dad_solicitation(PEER_MAC, VIP6),
            Reason::HeartbeatStale,
        ),
        pass(
            "stale_arp_not_owned",
            frames::arp_request(PEER_MAC, PEER4, NOT_OWNED4),
            Reason::NotOwned,
        ),
        conflict(
            "stale_gratuitous_conflict",
            frames::gratuitous_arp(OTHER_MAC, VIP4, 1),
            VIP4,
            OTHER_MAC,
        ),
        pass(
            "stale_arp_wrong_destination",
            frames::arp_unicast_request(OTHER_MAC, PEER_MAC, PEER4, VIP4),
            Reason::WrongEthDestination,
        ),
        pass(
            "stale_ns_bad_checksum",
            frames::mutated(&ns, |f| f[offset::ICMPV6_CHECKSUM] ^= 0x10),
            Reason::BadChecksum,
        ),
    ]);

    // Zero disables the switch.
    harness
        .maps
        .heartbeat(Some(Duration::ZERO))
        .expect("heartbeat");
    harness.run_table(&[
        arp_answer("disabled_arp_request", arp.clone(), VIP4, OUR_MAC),
        ns_answer("disabled_ns", ns.clone(), VIP6, OUR_MAC),
    ]);

    // A fresh heartbeat within a generous limit answers too.
    harness
        .maps
        .heartbeat(Some(Duration::from_secs(3600)))
        .expect("heartbeat");
    assert!(!harness.maps.watchdog().expect("watchdog").stale());
    harness.run_table(&[
        arp_answer("fresh_arp_request", arp, VIP4, OUR_MAC),
        ns_answer("fresh_ns", ns, VIP6, OUR_MAC),
    ]);
}

/// Removing a VIP stops answers for it; adding it back with another MAC
/// answers from the new MAC.
#[test]
fn vip_removal_and_mac_change() {
    let mut harness = Harness::new().expect("harness");
    let arp = frames::arp_request(PEER_MAC, PEER4, VIP4);
    let ns = frames::neighbor_solicitation(PEER_MAC, PEER6, VIP6, Some(PEER_MAC));
    assert!(harness
        .maps
        .remove_vip(VIP4.into(), IFINDEX, VlanPath::UNTAGGED)
        .unwrap());
    assert!(harness
        .maps
        .remove_vip(VIP6.into(), IFINDEX, VlanPath::UNTAGGED)
        .unwrap());
    harness.run_table(&[
        pass("removed_arp", arp.clone(), Reason::NotOwned),
        pass("removed_ns", ns.clone(), Reason::NotOwned),
        // The other VIP on the interface is unaffected.
        arp_answer(
            "remaining_vip",
            frames::arp_request(PEER_MAC, PEER4, VIP4_B),
            VIP4_B,
            OUR_MAC_B,
        ),
    ]);
    let new_mac: Mac = [0x02, 0x5e, 0x00, 0x00, 0x00, 0x21];
    harness
        .maps
        .add_vip(VIP4.into(), IFINDEX, VlanPath::UNTAGGED, new_mac)
        .unwrap();
    harness
        .maps
        .add_vip(VIP6.into(), IFINDEX, VlanPath::UNTAGGED, new_mac)
        .unwrap();
    harness.run_table(&[
        arp_answer("readded_arp", arp, VIP4, new_mac),
        ns_answer("readded_ns", ns, VIP6, new_mac),
        pass(
            "readded_arp_to_old_mac",
            frames::arp_unicast_request(OUR_MAC, PEER_MAC, PEER4, VIP4),
            Reason::WrongEthDestination,
        ),
    ]);
    let answered = harness.answered().unwrap();
    assert_eq!(
        answered[&(IpAddr::V4(VIP4), IFINDEX)],
        1,
        "a re-added VIP starts counting from zero"
    );
}

/// Bond slaves, in the program: native mode on a bond runs the program on
/// each slave with the slave's `ingress_ifindex`, while the VIPs are keyed
/// by the master. No bond can be built on this machine (no bonding or 8021q
/// module: `ip link add ... type bond` says "Unknown device type", there is
/// no `/lib/modules` and no `modprobe`), so a veth stands in for the slave:
/// declared in `BOND_SLAVES`, it is the frame's ingress device in the test
/// run's context (the kernel resolves it in the calling thread's network
/// namespace, a private one here).
#[test]
fn bond_slave_lookups() {
    use nix::{net::if_::if_nametoindex, sched::CloneFlags};
    use speaker_tests::lab::command::must;

    // This test's thread only: the veths vanish with the namespace.
    nix::sched::unshare(CloneFlags::CLONE_NEWNET).expect("unshare(CLONE_NEWNET), root needed");
    must(
        "ip",
        &[
            "link", "add", "slave0", "type", "veth", "peer", "name", "master0",
        ],
    );
    must(
        "ip",
        &[
            "link", "add", "eth1", "type", "veth", "peer", "name", "eth1peer",
        ],
    );
    let index = |name: &str| if_nametoindex(name).expect("ifindex");
    let (slave, master, other) = (index("slave0"), index("master0"), index("eth1"));

    const VIP4_BOND: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 50);
    const VIP6_BOND: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0x0a, 0xbc50);
    const BOND_MAC: Mac = [0x02, 0x5e, 0x00, 0x00, 0x02, 0x00];
    const OTHER_IF_MAC: Mac = [0x02, 0x5e, 0x00, 0x00, 0x02, 0x01];
    let mut harness = Harness::new().expect("harness");
    let maps = &mut harness.maps;
    maps.add_vip(VIP4_BOND.into(), master, VlanPath::UNTAGGED, BOND_MAC)
        .unwrap();
    maps.add_vip(VIP6_BOND.into(), master, VlanPath::UNTAGGED, BOND_MAC)
        .unwrap();
    maps.add_vip(
        VIP4_V100.into(),
        master,
        VlanPath::single(100, false),
        BOND_MAC,
    )
    .unwrap();
    // The same VIP announced on an unrelated interface, with its own MAC
    // and its own counter slot.
    maps.add_vip(VIP4_BOND.into(), other, VlanPath::UNTAGGED, OTHER_IF_MAC)
        .unwrap();
    maps.set_bond_slave(slave, master).unwrap();

    let arp = frames::arp_request(PEER_MAC, PEER4, VIP4_BOND);
    let ns = frames::neighbor_solicitation(PEER_MAC, PEER6, VIP6_BOND, Some(PEER_MAC));
    harness.ingress = Some(slave);
    harness.owner = master;
    let tagged_arp = frames::arp_request(PEER_MAC, PEER4, VIP4_V100);
    let tagged_reply = tagged(
        &frames::expected_arp_reply(&tagged_arp, BOND_MAC),
        &[(TAG_8021Q, 100)],
    );
    harness.run_table(&[
        arp_answer(
            "slave_arp_answered_for_master",
            arp.clone(),
            VIP4_BOND,
            BOND_MAC,
        ),
        ns_answer(
            "slave_ns_answered_for_master",
            ns.clone(),
            VIP6_BOND,
            BOND_MAC,
        ),
        Case {
            name: "slave_tagged_arp_answered_for_master_vlan",
            frame: tagged(&tagged_arp, &[(TAG_8021Q, 100)]),
            verdict: XDP_TX,
            reason: Some(Reason::ArpAnswered),
            expect: Expect::ArpReply {
                vip: VIP4_V100,
                mac: BOND_MAC,
                reply: tagged_reply,
            },
        },
        conflict(
            "slave_conflict_recorded_for_master",
            frames::gratuitous_arp(OTHER_MAC, VIP4_BOND, 1),
            VIP4_BOND,
            OTHER_MAC,
        ),
        // Owned on loopback, not on the bond.
        pass(
            "slave_arp_for_vip_of_another_interface",
            frames::arp_request(PEER_MAC, PEER4, VIP4),
            Reason::NotOwned,
        ),
    ]);

    // An interface that is no slave answers from its own entry only.
    harness.ingress = Some(other);
    harness.owner = other;
    harness.run_table(&[
        arp_answer(
            "same_vip_other_interface_own_mac",
            arp.clone(),
            VIP4_BOND,
            OTHER_IF_MAC,
        ),
        pass("non_slave_ns_for_master_vip", ns.clone(), Reason::NotOwned),
    ]);
    let answered = harness.answered().unwrap();
    assert_eq!(
        answered[&(IpAddr::V4(VIP4_BOND), master)],
        1,
        "the master's slot"
    );
    assert_eq!(
        answered[&(IpAddr::V4(VIP4_BOND), other)],
        1,
        "the other interface's slot"
    );

    // A slave that left the bond no longer answers for it.
    assert!(harness.maps.remove_bond_slave(slave).unwrap());
    harness.ingress = Some(slave);
    harness.owner = master;
    harness.run_table(&[pass("former_slave_arp", arp, Reason::NotOwned)]);
}

/// A NIC that strips VLAN tags (or a veth whose sender used TX VLAN
/// offload) hands XDP the frame without its tag. The program cannot see the
/// tag (reading it needs the `bpf_xdp_metadata_rx_vlan_tag` kfunc in a
/// device-bound program, which aya 0.14 cannot load), so it looks such a
/// request up as untagged: a VLAN VIP, keyed with its VID, never matches,
/// and the stripped request is never answered untagged onto the parent's
/// L2 domain.
#[test]
fn stripped_tag_never_answered_untagged() {
    let mut harness = vlan_harness();
    let stripped_arp = frames::arp_request(PEER_MAC, PEER4, VIP4_V100);
    let stripped_ns = frames::neighbor_solicitation(PEER_MAC, PEER6, VIP6_V100, Some(PEER_MAC));
    let stripped_qinq = frames::arp_request(PEER_MAC, PEER4, VIP4_QINQ);
    harness.run_table(&[
        pass("stripped_arp_for_vlan_vip", stripped_arp, Reason::NotOwned),
        pass("stripped_ns_for_vlan_vip", stripped_ns, Reason::NotOwned),
        // Only the outer tag stripped (802.1ad offload): still not the path.
        pass(
            "outer_tag_stripped_qinq",
            tagged(&stripped_qinq, &[(TAG_8021Q, 30)]),
            Reason::NotOwned,
        ),
    ]);
}
