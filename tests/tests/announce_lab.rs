//! Userspace announcements on a real wire: a `speaker::announce` announcer
//! runs in a "node" network namespace and sends over AF_PACKET; `tcpdump` in
//! a "client" namespace, joined to it by a veth pair, records what arrives,
//! and the client kernel's neighbour table shows what the announcements
//! achieved.
//!
//! Frames are parsed with smoltcp (which shares no code with the speaker's
//! emitter), checksums included.
//!
//! Linux behaviour the tests pin down (client sysctls at their defaults unless
//! said otherwise):
//! - IPv4: an *existing* entry is overridden by a gratuitous request or reply
//!   from a new MAC whatever `arp_accept` says, even within `locktime` of its
//!   last update, because `arp_is_garp` forces the override (a reply counts
//!   only when its THA equals its SHA). It ends up STALE (broadcast frames
//!   do not confirm reachability). No entry is *created* unless
//!   `arp_accept=1`.
//! - IPv6: an unsolicited NA with O=1 overrides an existing entry (to STALE,
//!   RFC 4861 §7.2.5); none is created while `accept_untracked_na=0`.
//! - Neither family touches a PERMANENT entry, which is what
//!   `ip neigh replace ... lladdr ...` creates when no `nud` is given: the
//!   tests seed with `nud reachable` to model a cache that learnt the old
//!   owner's MAC.
//!
//! Needs root, tcpdump and the tools `Lab::new` checks for (it also builds
//! the speaker binary once); fails, not skips, without them. Run:
//! `cargo test -p speaker-tests --test announce_lab`.

use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    thread,
    time::{Duration, Instant, SystemTime},
};

use smoltcp::wire::{
    ArpOperation, ArpPacket, ArpRepr, EthernetFrame, EthernetProtocol, EthernetRepr,
};
use speaker::{
    announce::{AnnounceConfig, AnnouncerThread},
    interfaces::Interface,
};
use speaker_tests::{
    frames::{parse_neighbor_advertisement, Advertisement, ALL_NODES, ALL_NODES_MAC, BROADCAST},
    lab::{
        capture::{Capture, Captured},
        mac,
        netns::in_namespace,
        require_root, Lab, Side,
    },
};

/// Announced; the client caches a wrong MAC for them beforehand.
const VIP_V4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 100);
const VIP_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x100);
/// Announced; the client holds a PERMANENT entry for them.
const PINNED_V4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 102);
const PINNED_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x102);
/// Announced; the client has no entry for them.
const UNKNOWN_V4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 103);
const UNKNOWN_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x103);
/// Announced on an interface that is deleted mid-burst.
const DOOMED_V4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 200);
const WRONG_MAC: &str = "02:00:00:00:00:99";

/// Leeway for the arrival instant of a round on a loaded test machine.
const JITTER: Duration = Duration::from_millis(250);

// ---------------------------------------------------------------- the lab

/// The pair lab of `speaker_tests::lab` (two namespaces, a veth pair, removed
/// in `Drop`), without any XDP program: only the announcer sends.
fn lab() -> Lab {
    require_root();
    Lab::new()
}

/// `ip neigh replace ip lladdr mac dev <client veth> [nud state]`.
fn seed_client_neighbour(lab: &Lab, ip: IpAddr, mac: &str, nud: Option<&str>) {
    let ip = ip.to_string();
    let mut args = vec![
        "neigh",
        "replace",
        &ip,
        "lladdr",
        mac,
        "dev",
        &lab.client_if,
    ];
    if let Some(state) = nud {
        args.extend(["nud", state]);
    }
    lab.exec(Side::Client, "ip", &args).assert_success();
}

/// `ip link ...` in the node namespace, which must succeed.
fn node_link(lab: &Lab, args: &[&str]) {
    let mut all = vec!["link"];
    all.extend(args);
    lab.exec(Side::Node, "ip", &all).assert_success();
}

/// Interface `name` of the node, looked up from inside its namespace.
fn node_interface(lab: &Lab, name: &str) -> Interface {
    let name = name.to_owned();
    in_namespace(&lab.node_ns, move || Interface::by_name(&name))
        .unwrap_or_else(|e| panic!("looking up a node interface: {e}"))
}

/// An announcer whose thread (and so every socket) lives in the node
/// namespace.
fn node_announcer(lab: &Lab, config: AnnounceConfig) -> AnnouncerThread {
    in_namespace(&lab.node_ns, move || AnnouncerThread::spawn(config))
        .unwrap_or_else(|e| panic!("starting the announcer thread: {e}"))
}

// ---------------------------------------------------------------- capture

// ---------------------------------------------------------------- frames

/// A gratuitous ARP frame as smoltcp reads it.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Arp {
    eth_dst: [u8; 6],
    eth_src: [u8; 6],
    operation: ArpOperation,
    sha: [u8; 6],
    spa: Ipv4Addr,
    tha: [u8; 6],
    tpa: Ipv4Addr,
}

fn parse_arp(frame: &[u8]) -> Option<Arp> {
    let ethernet = EthernetFrame::new_checked(frame).ok()?;
    let header = EthernetRepr::parse(&ethernet).ok()?;
    if header.ethertype != EthernetProtocol::Arp {
        return None;
    }
    let packet = ArpPacket::new_checked(ethernet.payload()).ok()?;
    match ArpRepr::parse(&packet).ok()? {
        ArpRepr::EthernetIpv4 {
            operation,
            source_hardware_addr,
            source_protocol_addr,
            target_hardware_addr,
            target_protocol_addr,
        } => Some(Arp {
            eth_dst: header.dst_addr.0,
            eth_src: header.src_addr.0,
            operation,
            sha: source_hardware_addr.0,
            spa: source_protocol_addr,
            tha: target_hardware_addr.0,
            tpa: target_protocol_addr,
        }),
        _ => None,
    }
}

/// The announcement frames for `ip` among `captured`, with their instants
/// relative to `since`. NAs are parsed (checksum verified) by smoltcp.
fn frames_for(captured: &[Captured], ip: IpAddr, since: SystemTime) -> Vec<(Duration, Vec<u8>)> {
    captured
        .iter()
        .filter(|c| match ip {
            IpAddr::V4(ip) => parse_arp(&c.frame).is_some_and(|a| a.spa == ip),
            IpAddr::V6(ip) => parse_neighbor_advertisement(&c.frame).is_ok_and(|a| a.target == ip),
        })
        .map(|c| {
            let at = c.at.duration_since(since).unwrap_or_else(|_| {
                panic!("a frame for {ip} was captured before the announcement started")
            });
            (at, c.frame.clone())
        })
        .collect()
}

/// Groups frames into rounds: frames less than half an interval apart.
fn rounds(frames: &[(Duration, Vec<u8>)]) -> Vec<Vec<(Duration, Vec<u8>)>> {
    let mut rounds: Vec<Vec<(Duration, Vec<u8>)>> = Vec::new();
    for frame in frames {
        match rounds.last_mut() {
            Some(round) if frame.0 - round[0].0 < Duration::from_millis(550) => {
                round.push(frame.clone())
            }
            _ => rounds.push(vec![frame.clone()]),
        }
    }
    rounds
}

fn assert_round_instants(ip: IpAddr, rounds: &[Vec<(Duration, Vec<u8>)>], expected_ms: &[u64]) {
    let instants: Vec<Duration> = rounds.iter().map(|r| r[0].0).collect();
    assert_eq!(
        instants.len(),
        expected_ms.len(),
        "{ip}: rounds at {instants:?}, expected at {expected_ms:?} ms"
    );
    for (got, want) in instants.iter().zip(expected_ms) {
        let want = Duration::from_millis(*want);
        let off = got.abs_diff(want);
        assert!(
            off <= JITTER,
            "{ip}: rounds at {instants:?}, expected at {expected_ms:?} ms"
        );
    }
}

fn mac_text(bytes: [u8; 6]) -> String {
    mac::format(bytes)
}

fn sleep_until(since: Instant, offset: Duration) {
    if let Some(wait) = (since + offset).checked_duration_since(Instant::now()) {
        thread::sleep(wait);
    }
}

// ---------------------------------------------------------------- tests

/// One burst of both families: the exact frames of a round, five rounds at
/// MetalLB's instants, every round identical, and the client's neighbour
/// table corrected.
#[test]
fn burst_reaches_the_client_and_corrects_its_neighbour_cache() {
    let lab = lab();
    let node = node_interface(&lab, &lab.node_if);
    let node_mac = mac_text(node.mac);
    for ip in [IpAddr::V4(VIP_V4), IpAddr::V6(VIP_V6)] {
        seed_client_neighbour(&lab, ip, WRONG_MAC, Some("reachable"));
    }
    for ip in [IpAddr::V4(PINNED_V4), IpAddr::V6(PINNED_V6)] {
        seed_client_neighbour(&lab, ip, WRONG_MAC, None);
    }
    let capture = Capture::start(&lab.client_ns, &lab.client_if, "arp or icmp6");
    let announcer = node_announcer(&lab, AnnounceConfig::default());

    let announced: [IpAddr; 6] = [
        VIP_V4.into(),
        VIP_V6.into(),
        PINNED_V4.into(),
        PINNED_V6.into(),
        UNKNOWN_V4.into(),
        UNKNOWN_V6.into(),
    ];
    let (started_wall, started) = (SystemTime::now(), Instant::now());
    for ip in announced {
        announcer.gained(ip, &node);
    }
    sleep_until(started, Duration::from_millis(5500));
    let captured = capture.stop();

    // The announcer's own account.
    let expected_sent: BTreeMap<IpAddr, u64> = announced
        .iter()
        .map(|ip| (*ip, if ip.is_ipv4() { 10 } else { 5 }))
        .collect();
    assert_eq!(announcer.sent(), expected_sent);
    assert!(
        announcer.failures().is_empty(),
        "{:?}",
        announcer.failures()
    );
    assert!(announcer.active().is_empty(), "the burst is over");

    // On the wire: five rounds at 0, 1.1, 2.2, 3.3, 4.4 s, each the same frames.
    for ip in announced {
        let frames = frames_for(&captured, ip, started_wall);
        let rounds = rounds(&frames);
        assert_round_instants(ip, &rounds, &[0, 1100, 2200, 3300, 4400]);
        let first: Vec<&Vec<u8>> = rounds[0].iter().map(|f| &f.1).collect();
        assert_eq!(first.len(), if ip.is_ipv4() { 2 } else { 1 }, "{ip}");
        for round in &rounds[1..] {
            let frames: Vec<&Vec<u8>> = round.iter().map(|f| &f.1).collect();
            assert_eq!(frames, first, "{ip}: every round is the same");
        }
        match ip {
            IpAddr::V4(ip) => {
                let request = parse_arp(first[0]).unwrap();
                let reply = parse_arp(first[1]).unwrap();
                let expected = Arp {
                    eth_dst: BROADCAST,
                    eth_src: node.mac,
                    operation: ArpOperation::Request,
                    sha: node.mac,
                    spa: ip,
                    tha: [0; 6],
                    tpa: ip,
                };
                assert_eq!(request, expected, "{ip}: the request comes first");
                assert_eq!(
                    reply,
                    Arp {
                        operation: ArpOperation::Reply,
                        tha: node.mac,
                        ..expected
                    },
                    "{ip}: then the reply"
                );
                assert_eq!(first[0].len(), 42);
            }
            IpAddr::V6(ip) => {
                let advert =
                    parse_neighbor_advertisement(first[0]).unwrap_or_else(|e| panic!("{ip}: {e}"));
                assert_eq!(
                    advert,
                    Advertisement {
                        eth_dst: ALL_NODES_MAC,
                        eth_src: node.mac,
                        src: ip,
                        dst: ALL_NODES,
                        hop_limit: 255,
                        solicited: false,
                        override_: true,
                        router: false,
                        target: ip,
                        tlla: Some(node.mac),
                    }
                );
            }
        }
    }

    // The client kernel: the wrong MAC is replaced, PERMANENT entries are
    // not, and nothing is created (arp_accept=0, accept_untracked_na=0).
    for ip in [IpAddr::V4(VIP_V4), IpAddr::V6(VIP_V6)] {
        let entry = lab.client_neighbour(&ip.to_string());
        let entry = entry.unwrap_or_else(|| panic!("{ip}: the client entry vanished"));
        assert_eq!(
            entry.lladdr.as_deref(),
            Some(node_mac.as_str()),
            "{ip}: {entry:?}"
        );
        assert!(entry.is("STALE"), "{ip}: {entry:?}");
    }
    for ip in [IpAddr::V4(PINNED_V4), IpAddr::V6(PINNED_V6)] {
        let entry = lab
            .client_neighbour(&ip.to_string())
            .expect("a permanent entry stays");
        assert_eq!(entry.lladdr.as_deref(), Some(WRONG_MAC), "{ip}: {entry:?}");
        assert!(entry.is("PERMANENT"), "{ip}: {entry:?}");
    }
    for ip in [IpAddr::V4(UNKNOWN_V4), IpAddr::V6(UNKNOWN_V6)] {
        let entry = lab.client_neighbour(&ip.to_string());
        assert!(entry.is_none(), "{ip}: {entry:?}");
    }
}

/// `lost` in the middle of a burst: nothing more for that IP (the other
/// schedule goes on, so the capture was listening). With `arp_accept=1` the
/// client creates an entry from the gratuitous ARP it had no entry for.
#[test]
fn lost_stops_sending_at_once() {
    let lab = lab();
    let arp_accept = format!("net.ipv4.conf.{}.arp_accept=1", lab.client_if);
    lab.exec(Side::Client, "sysctl", &["-q", "-w", &arp_accept])
        .assert_success();
    let node = node_interface(&lab, &lab.node_if);
    let capture = Capture::start(&lab.client_ns, &lab.client_if, "arp or icmp6");
    let announcer = node_announcer(&lab, AnnounceConfig::default());

    let (started_wall, started) = (SystemTime::now(), Instant::now());
    announcer.gained(VIP_V4.into(), &node);
    announcer.gained(VIP_V6.into(), &node);
    sleep_until(started, Duration::from_millis(1600));
    announcer.lost(VIP_V4.into(), node.index);
    let lost_at = started.elapsed();
    assert_eq!(announcer.active(), [(IpAddr::V6(VIP_V6), node.index)]);
    sleep_until(started, Duration::from_millis(3600));
    let captured = capture.stop();

    let v4 = frames_for(&captured, VIP_V4.into(), started_wall);
    assert_round_instants(VIP_V4.into(), &rounds(&v4), &[0, 1100]);
    assert!(
        v4.iter().all(|(at, _)| *at < lost_at),
        "{VIP_V4} after lost"
    );
    assert_eq!(announcer.sent()[&IpAddr::V4(VIP_V4)], 4);
    let v6 = frames_for(&captured, VIP_V6.into(), started_wall);
    assert_round_instants(VIP_V6.into(), &rounds(&v6), &[0, 1100, 2200, 3300]);

    let entry = lab
        .client_neighbour(&VIP_V4.to_string())
        .expect("arp_accept=1 creates an entry from a gratuitous ARP");
    assert_eq!(entry.lladdr, Some(mac_text(node.mac)));
}

/// An interface deleted mid-burst: its sends fail, are counted per IP and
/// logged, and the burst on the other interface is untouched.
#[test]
fn interface_deleted_mid_burst_is_counted_not_fatal() {
    let lab = lab();
    let node = node_interface(&lab, &lab.node_if);
    // A veth pair inside the node (the dummy module may be missing);
    // deleting one end deletes both. In its own namespace, names cannot clash.
    let (doomed, peer) = ("doomed0", "doomed1");
    node_link(&lab, &["add", doomed, "type", "veth", "peer", "name", peer]);
    node_link(&lab, &["set", peer, "up"]);
    node_link(&lab, &["set", doomed, "up"]);
    let doomed_interface = node_interface(&lab, doomed);
    let announcer = node_announcer(&lab, AnnounceConfig::default());

    let started = Instant::now();
    announcer.gained(DOOMED_V4.into(), &doomed_interface);
    announcer.gained(VIP_V4.into(), &node);
    sleep_until(started, Duration::from_millis(500));
    node_link(&lab, &["del", doomed]);
    let deadline = started + Duration::from_secs(8);
    while !announcer.active().is_empty() && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(50));
    }

    assert!(announcer.active().is_empty(), "both bursts end");
    let doomed = IpAddr::V4(DOOMED_V4);
    assert_eq!(announcer.sent().get(&doomed), Some(&2), "round 0 went out");
    assert_eq!(
        announcer.failures(),
        BTreeMap::from([(doomed, 8)]),
        "rounds 1.1 to 4.4 failed"
    );
    assert_eq!(announcer.sent()[&IpAddr::V4(VIP_V4)], 10);
}
