//! Upgrades in place (issue 7, item 7): a node still running the previous
//! release's data plane (its maps and link pinned, its program answering) is
//! taken over by this speaker without a request going unanswered.
//!
//! What is crafted, and how faithfully:
//! - `previous_release_is_migrated_without_a_lost_answer`: the previous
//!   release's own eBPF object (`tests/fixtures/speaker-ebpf-layout2.o`,
//!   layout version 2: 8- and 20-byte VIP keys, 15 reasons, no BOND_SLAVES,
//!   no LAYOUT pin; see `tests/fixtures/README.md` for how it was built) is
//!   loaded with its maps pinned where that release pinned them, attached to
//!   the node's veth through a pinned link, and given two VIPs the way that
//!   release's `speaker vip add` wrote them. Only its userspace is missing.
//!   It answers a client, and this speaker's `speaker maps` reads its maps
//!   as they are (`speaker vip add` refuses to write them, naming both
//!   versions); then this speaker's `speaker xdp attach` runs
//!   while the client sends a broadcast ARP request every 20 ms: every
//!   request is answered, the link is the same link running the new
//!   program, the maps have the new layout, and `speaker maps` shows the
//!   counts from before the upgrade (answered, a reason, a conflict claimed
//!   by the client before the upgrade) carried over.
//! - `the_daemon_migrates_on_start`: the same previous-release node, taken
//!   over by `speaker run` (the daemon, cluster-state file of
//!   docs/examples/iris-regression.yaml) on a bridge with a client probing
//!   every 20 ms: no request lost, the VIP still owned, counts kept.
//! - `first_release_maps_are_migrated`: maps of layout version 1 (14
//!   reasons, no VIP_FILTER or VIP_CONFLICTS) created with the old sizes,
//!   with no program (no object of that release is kept): `speaker maps`
//!   reads them, and on attach the counters and VIPs are carried over and
//!   the missing maps created.
//!
//! Needs root (namespaces, bpffs, XDP) and fails, not skips, without it.
//! Run: `cargo test -p speaker-tests --test upgrade_lab`.

use std::{
    fs,
    net::{Ipv4Addr, Ipv6Addr},
    path::Path,
    sync::{Mutex, MutexGuard},
    thread,
    time::Duration,
};

use aya::{
    maps::{Array, HashMap, MapData, MapInfo, PerCpuArray, PerCpuValues},
    programs::{links::FdLink, links::PinnedLink, Xdp, XdpMode},
    util::nr_cpus,
    EbpfLoader,
};
use speaker_common::{filter_bit_of, map_names, Reason, VipEntry, LAYOUT_VERSION};
use speaker_tests::frames;
use speaker_tests::lab::{
    mac, netns,
    pair::{CLIENT_V4, VIP_V4, VIP_V6},
    probe::{send_frames, unanswered, ArpProber},
    reason_count, require_root, vip_answered, workspace_root, Fabric, HostSpec, Lab, Side,
    SpeakerMode, SpeakerOptions, XdpMode as LabMode,
};

/// The previous release's object (layout version 2), debug info stripped.
static PREVIOUS_RELEASE: &[u8] = aya::include_bytes_aligned!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/fixtures/speaker-ebpf-layout2.o"
));

/// The maps the previous release pinned (it had no BOND_SLAVES or LAYOUT),
/// its log ring buffer included.
const PREVIOUS_MAPS: [&str; 9] = [
    "AYA_LOGS",
    map_names::VIPS_V4,
    map_names::VIPS_V6,
    map_names::VIP_ANSWERED,
    map_names::REASONS,
    map_names::WATCHDOG,
    map_names::VIP_REFUSED,
    map_names::VIP_FILTER,
    map_names::VIP_CONFLICTS,
];

fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    let guard = LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    require_root();
    guard
}

/// A VIP key of layouts 1 and 2: the address, then the ifindex.
fn untagged_key<const N: usize>(addr: &[u8], ifindex: u32) -> [u8; N] {
    let mut key = [0u8; N];
    key[..addr.len()].copy_from_slice(addr);
    key[addr.len()..].copy_from_slice(&ifindex.to_ne_bytes());
    key
}

fn entry(mac: [u8; 6], slot: u32) -> VipEntry {
    VipEntry {
        mac,
        _pad: [0; 2],
        slot,
    }
}

/// Adds the VIPs as the old `speaker vip add` did: filter bit, then entry.
fn add_old_vips(pin_dir: &Path, ifindex: u32, mac: [u8; 6], with_filter: bool) {
    let v4: Ipv4Addr = VIP_V4.parse().unwrap();
    let v6: Ipv6Addr = VIP_V6.parse().unwrap();
    if with_filter {
        let data = MapData::from_pin(pin_dir.join(map_names::VIP_FILTER)).unwrap();
        let mut filter = Array::<_, u64>::try_from(aya::maps::Map::Array(data)).unwrap();
        for bit in [filter_bit_of(&v4.octets()), filter_bit_of(&v6.octets())] {
            let word = filter.get(&(bit / 64), 0).unwrap();
            filter.set(bit / 64, word | 1 << (bit % 64), 0).unwrap();
        }
    }
    let data = MapData::from_pin(pin_dir.join(map_names::VIPS_V4)).unwrap();
    let mut vips = HashMap::<_, [u8; 8], VipEntry>::try_from(aya::maps::Map::HashMap(data))
        .expect("VIPS_V4 of the old layout has 8-byte keys");
    vips.insert(untagged_key(&v4.octets(), ifindex), entry(mac, 0), 0)
        .unwrap();
    let data = MapData::from_pin(pin_dir.join(map_names::VIPS_V6)).unwrap();
    let mut vips = HashMap::<_, [u8; 20], VipEntry>::try_from(aya::maps::Map::HashMap(data))
        .expect("VIPS_V6 of the old layout has 20-byte keys");
    vips.insert(untagged_key(&v6.octets(), ifindex), entry(mac, 1), 0)
        .unwrap();
}

/// The previous release, as it leaves a node: maps and link pinned, no
/// process. Returns the link's id and the old program's id.
fn install_previous_release(lab: &Lab) -> (u32, u32) {
    previous_release_on(&lab.node_ns, &lab.node_if, &lab.node_mac, &lab.pin_dir)
}

fn previous_release_on(ns: &str, interface: &str, mac: &str, pin_dir: &Path) -> (u32, u32) {
    fs::create_dir_all(pin_dir.join("links")).unwrap();
    let mac = mac::parse(mac).unwrap();
    netns::in_namespace(ns, move || {
        let mut loader = EbpfLoader::new();
        for name in PREVIOUS_MAPS {
            loader.map_pin_path(name, pin_dir.join(name));
        }
        let mut ebpf = loader
            .load(PREVIOUS_RELEASE)
            .expect("loading the previous release's object");
        let xdp: &mut Xdp = ebpf
            .program_mut("xdp_speaker")
            .expect("the previous release's responder")
            .try_into()
            .unwrap();
        xdp.load()
            .expect("verifying the previous release's program");
        let ifindex = nix::net::if_::if_nametoindex(interface).unwrap();
        let link_id = xdp.attach_to_if_index(ifindex, XdpMode::Skb).unwrap();
        let link = FdLink::try_from(xdp.take_link(link_id).unwrap()).unwrap();
        let info = link.info().unwrap();
        link.pin(pin_dir.join("links").join(interface)).unwrap();
        add_old_vips(pin_dir, ifindex, mac, true);
        (info.id(), info.program_id())
    })
}

fn key_size(pin_dir: &Path, name: &str) -> u32 {
    MapInfo::from_pin(pin_dir.join(name))
        .unwrap_or_else(|e| panic!("{name} is not pinned: {e}"))
        .key_size()
}

fn pinned_layout(pin_dir: &Path) -> u32 {
    let data = MapData::from_pin(pin_dir.join(map_names::LAYOUT)).expect("a LAYOUT pin");
    Array::<_, u32>::try_from(aya::maps::Map::Array(data))
        .unwrap()
        .get(&0, 0)
        .unwrap()
}

fn prober(lab: &Lab, session: u16) -> ArpProber {
    ArpProber::open(
        &lab.client_ns,
        &lab.client_if,
        mac::parse(&lab.client_mac).unwrap(),
        CLIENT_V4.parse().unwrap(),
        VIP_V4.parse().unwrap(),
        session,
    )
    .expect("opening the ARP prober")
}

#[test]
fn previous_release_is_migrated_without_a_lost_answer() {
    let _serial = serial();
    let lab = Lab::new();
    let (link_id, old_program) = install_previous_release(&lab);

    // The old release answers, and counts into its own maps.
    let mut probe = prober(&lab, 1);
    let before = probe.series(5, Duration::from_millis(200)).unwrap();
    assert!(
        unanswered(&before).is_empty(),
        "the previous release's program does not answer: {before:?}"
    );

    // A host claiming the VIP: the old program records the conflict in
    // the VIP's slot, to be carried over.
    let claim = frames::gratuitous_arp(
        mac::parse(&lab.client_mac).unwrap(),
        VIP_V4.parse().unwrap(),
        2,
    );
    send_frames(&lab.client_ns, &lab.client_if, &[claim.clone(), claim]).unwrap();

    // This speaker reads the old maps as they are (keys without a vlan):
    // `speaker maps` works across the upgrade, before anything migrated.
    let old_maps = lab.maps_json();
    let answered_before = vip_answered(&old_maps, VIP_V4).expect("the old VIP is listed");
    assert!(
        answered_before >= before.len() as u64 && answered_before <= before.len() as u64 + 2,
        "answered {answered_before} of {} requests:\n{old_maps:#}",
        before.len()
    );
    let old_vip = old_maps["vips"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["address"] == VIP_V4)
        .unwrap();
    assert!(old_vip["vlan"].is_null(), "{old_maps:#}");
    assert_eq!(old_vip["conflicts"], 2, "{old_maps:#}");
    assert_eq!(
        reason_count(&old_maps, "arp_answered"),
        Some(answered_before)
    );
    // Writing them is refused in one line naming both versions.
    let refused = lab.speaker(
        Side::Node,
        &["vip", "add", "192.0.2.103", "--interface", &lab.node_if],
    );
    assert!(
        !refused.success(),
        "a VIP was written into old maps:\n{refused}"
    );
    let message = refused.stderr.trim();
    assert!(
        message.contains("layout version 2")
            && message.contains(&format!("version {LAYOUT_VERSION}")),
        "{refused}"
    );

    let probing = prober(&lab, 2).spawn(Duration::from_millis(20));
    thread::sleep(Duration::from_millis(300));
    let attach = lab.attach_responder(LabMode::Generic);
    thread::sleep(Duration::from_millis(500));
    let series = probing.stop();
    attach.assert_success();
    println!("{attach}");
    for map in [map_names::VIPS_V4, map_names::VIPS_V6] {
        assert!(
            attach.stderr.contains(&format!("{map} migrated")),
            "no mapMigrated line for {map}:\n{attach}"
        );
    }
    assert!(
        attach.stderr.contains("BOND_SLAVES created"),
        "no line for the new map:\n{attach}"
    );

    let lost = unanswered(&series.probes);
    assert!(
        series.probes.len() >= 20,
        "too few requests across the upgrade: {}",
        series.probes.len()
    );
    assert!(
        lost.is_empty(),
        "requests unanswered across the upgrade: {lost:?} of {}",
        series.probes.len()
    );
    for p in &series.probes {
        let macs: Vec<String> = p.macs().into_iter().collect();
        assert_eq!(
            macs,
            std::slice::from_ref(&lab.node_mac),
            "request {}",
            p.seq
        );
    }

    // The same link, now running this speaker's program on the new maps.
    let pinned =
        FdLink::from(PinnedLink::from_pin(lab.pin_dir.join("links").join(&lab.node_if)).unwrap());
    let info = pinned.info().unwrap();
    assert_eq!(info.id(), link_id, "the link was recreated, not updated");
    assert_ne!(
        info.program_id(),
        old_program,
        "the old program is still attached"
    );
    assert_eq!(key_size(&lab.pin_dir, map_names::VIPS_V4), 12);
    assert_eq!(key_size(&lab.pin_dir, map_names::VIPS_V6), 24);
    assert_eq!(key_size(&lab.pin_dir, map_names::BOND_SLAVES), 4);
    assert_eq!(pinned_layout(&lab.pin_dir), LAYOUT_VERSION);
    assert!(!lab.pin_dir.join("VIPS_V4_migrating").exists());

    // Counts carried over: each request answered once, before or after.
    let maps = lab.maps_json();
    let answered_probes = (before.len() + series.probes.len()) as u64;
    let answered = vip_answered(&maps, VIP_V4).expect("the VIP survived the upgrade");
    assert!(
        answered >= answered_probes && answered <= answered_probes + 2,
        "answered {answered}, requests {answered_probes}:\n{maps:#}"
    );
    let vip = maps["vips"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["address"] == VIP_V4)
        .unwrap();
    assert_eq!(vip["conflicts"], 2, "conflicts carried over:\n{maps:#}");
    assert_eq!(
        vip["last_conflict_mac"],
        lab.client_mac.as_str(),
        "{maps:#}"
    );
    assert_eq!(reason_count(&maps, "conflict"), Some(2), "{maps:#}");
    let reason = reason_count(&maps, "arp_answered").unwrap();
    assert!(
        reason >= answered_probes,
        "arp_answered {reason}:\n{maps:#}"
    );
    assert!(vip_answered(&maps, VIP_V6).is_some(), "{maps:#}");

    // Still answered afterwards, by the new program; new VIPs can be added.
    let after = probe.series(3, Duration::from_millis(200)).unwrap();
    assert!(unanswered(&after).is_empty(), "{after:?}");
    assert_eq!(
        vip_answered(&lab.maps_json(), VIP_V4).unwrap(),
        answered + 3,
        "the new program counts into the migrated counters"
    );
    lab.speaker(
        Side::Node,
        &["vip", "add", "192.0.2.102", "--interface", &lab.node_if],
    )
    .assert_success();
}

#[test]
fn first_release_maps_are_migrated() {
    let _serial = serial();
    let lab = Lab::new();
    let pin_dir = lab.pin_dir.clone();
    fs::create_dir_all(pin_dir.join("links")).unwrap();
    let ifindex = netns::in_namespace(&lab.node_ns, || {
        nix::net::if_::if_nametoindex(lab.node_if.as_str()).unwrap()
    });
    let cpus = nr_cpus().unwrap();
    let counts = |value: u64| PerCpuValues::try_from(vec![value; cpus]).unwrap();
    // Layout 1 as created by the first releases' object (same types and
    // sizes; the maps' kernel names differ, which nothing reads).
    HashMap::<MapData, [u8; 8], VipEntry>::create(4096, 0)
        .unwrap()
        .pin(pin_dir.join(map_names::VIPS_V4))
        .unwrap();
    HashMap::<MapData, [u8; 20], VipEntry>::create(4096, 0)
        .unwrap()
        .pin(pin_dir.join(map_names::VIPS_V6))
        .unwrap();
    let mut answered = PerCpuArray::<MapData, u64>::create(4096, 0).unwrap();
    answered.set(0, counts(5), 0).unwrap();
    answered.pin(pin_dir.join(map_names::VIP_ANSWERED)).unwrap();
    PerCpuArray::<MapData, u64>::create(4096, 0)
        .unwrap()
        .pin(pin_dir.join(map_names::VIP_REFUSED))
        .unwrap();
    let mut reasons = PerCpuArray::<MapData, u64>::create(14, 0).unwrap();
    reasons
        .set(Reason::ArpAnswered as u32, counts(5), 0)
        .unwrap();
    reasons.set(Reason::NotOwned as u32, counts(3), 0).unwrap();
    reasons.pin(pin_dir.join(map_names::REASONS)).unwrap();
    Array::<MapData, [u64; 2]>::create(1, 0)
        .unwrap()
        .pin(pin_dir.join(map_names::WATCHDOG))
        .unwrap();
    add_old_vips(&pin_dir, ifindex, mac::parse(&lab.node_mac).unwrap(), false);

    // Read as they are: no conflict records in layout 1, 14 reasons.
    let per_cpu = |n: u64| n * cpus as u64;
    let old_maps = lab.maps_json();
    assert_eq!(
        vip_answered(&old_maps, VIP_V4),
        Some(per_cpu(5)),
        "{old_maps:#}"
    );
    assert_eq!(reason_count(&old_maps, "not_owned"), Some(per_cpu(3)));
    assert_eq!(reason_count(&old_maps, "unsupported"), Some(0));

    lab.attach_responder(LabMode::Generic).assert_success();

    let maps = lab.maps_json();
    assert_eq!(vip_answered(&maps, VIP_V4), Some(per_cpu(5)), "{maps:#}");
    assert_eq!(vip_answered(&maps, VIP_V6), Some(0), "{maps:#}");
    assert_eq!(reason_count(&maps, "arp_answered"), Some(per_cpu(5)));
    assert_eq!(reason_count(&maps, "not_owned"), Some(per_cpu(3)));
    assert_eq!(reason_count(&maps, "unsupported"), Some(0));
    assert_eq!(pinned_layout(&pin_dir), LAYOUT_VERSION);
    for map in [
        map_names::VIP_FILTER,
        map_names::VIP_CONFLICTS,
        map_names::BOND_SLAVES,
    ] {
        assert!(pin_dir.join(map).exists(), "{map} was not created");
    }
    // The filter was rebuilt: the migrated VIP is answered.
    let mut probe = prober(&lab, 3);
    let after = probe.series(3, Duration::from_millis(200)).unwrap();
    assert!(unanswered(&after).is_empty(), "{after:?}");
    assert_eq!(vip_answered(&lab.maps_json(), VIP_V4), Some(per_cpu(5) + 3));
}

/// `speaker run` (the daemon, from the cluster-state file of
/// docs/examples/iris-regression.yaml, whose only endpoint is on iris1)
/// started on a node running the previous release: it migrates on start,
/// every request of a client sending one every 20 ms is answered, and the
/// daemon goes on owning the VIP with the counts kept.
#[test]
fn the_daemon_migrates_on_start() {
    let _serial = serial();
    let fabric = Fabric::new(&[
        HostSpec::numbered("iris1", 11),
        HostSpec::numbered("client", 10),
    ]);
    let node = fabric.host("iris1").clone();
    let client = fabric.host("client").clone();
    previous_release_on(&node.ns, &node.interface, &node.mac, &node.pin_dir);
    let yaml_path = workspace_root().join("docs/examples/iris-regression.yaml");
    fabric.write_cluster_state(&fs::read_to_string(&yaml_path).unwrap());

    let open = |session| {
        ArpProber::open(
            &client.ns,
            &client.interface,
            mac::parse(&client.mac).unwrap(),
            client.v4.unwrap(),
            VIP_V4.parse().unwrap(),
            session,
        )
        .expect("opening the ARP prober")
    };
    let before = open(1).series(3, Duration::from_millis(200)).unwrap();
    assert!(unanswered(&before).is_empty(), "{before:?}");

    let probing = open(2).spawn(Duration::from_millis(20));
    thread::sleep(Duration::from_millis(300));
    let speaker = fabric.start_speaker("iris1", &SpeakerOptions::file(SpeakerMode::Generic));
    let started = speaker.wait_log("speaker running as node", Duration::from_secs(20));
    thread::sleep(Duration::from_millis(1000));
    let series = probing.stop();
    assert!(started.is_some(), "{}", fabric.all_logs());
    let logs = fabric.all_logs();
    assert!(logs.contains("VIPS_V4 migrated"), "{logs}");

    let lost = unanswered(&series.probes);
    assert!(
        series.probes.len() >= 20,
        "{} requests",
        series.probes.len()
    );
    assert!(
        lost.is_empty(),
        "requests unanswered across the upgrade: {lost:?} of {}\n{logs}",
        series.probes.len()
    );
    let maps = fabric.maps_json("iris1");
    let requests = (before.len() + series.probes.len()) as u64;
    let answered = vip_answered(&maps, VIP_V4).expect("the VIP is still owned");
    assert!(
        answered >= requests,
        "answered {answered} of {requests}:\n{maps:#}"
    );
    assert_eq!(pinned_layout(&node.pin_dir), LAYOUT_VERSION);
    speaker.terminate(Duration::from_secs(10));
}
