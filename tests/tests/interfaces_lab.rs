//! Interface discovery, link notifications and the VIP map sync against a
//! real kernel, each test in a network namespace of its own
//! (`xdpspk-<pid>-<seq>-ifaces`) so that nothing else's links show up or wake
//! the watcher.
//!
//! How the library gets into the namespace: the test logic runs on a
//! dedicated thread that calls setns(2) on `/run/netns/<name>`. Everything
//! the library asks the kernel goes through sockets that thread creates
//! (netlink for the link list, flags, MACs and masters and for notifications;
//! ioctl sockets for indexes and multicast filters), and a socket belongs to
//! the namespace of the thread that opened it. Nothing reads /sys: sysfs shows
//! the namespace it was mounted in, so a setns'ed thread would still see the
//! test runner's `/sys/class/net`. That is why discovery reads a port's master
//! from netlink (IFLA_MASTER) instead of MetalLB's
//! `/sys/class/net/IF/master` — the same fact, right in any namespace.
//!
//! The link watcher gets a current-thread Tokio runtime made on that same
//! thread, so its netlink socket is opened inside the namespace too.
//!
//! Setup commands use `ip -n <name>`. A private bpffs is mounted at
//! `/run/xdp-speaker-tests/<pid>-<seq>-ifaces/bpffs` for the map tests. `Drop`
//! deletes the namespace and unmounts and removes the bpffs, also while a
//! failing test unwinds; leftovers of killed runs are reaped by the next lab.
//!
//! Needs root and fails, not skips, without it. Run:
//! `cargo test -p speaker-tests --test interfaces_lab`.

use std::{
    collections::BTreeSet,
    net::IpAddr,
    path::{Path, PathBuf},
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant},
};

use aya::maps::{HashMap, MapData, PerCpuArray, PerCpuValues};
use speaker::{
    dataplane::{
        sync::{self, DesiredVip, SyncReport},
        DataplaneMaps, Object, PinDir,
    },
    interfaces::{
        self,
        discovery::{self, Skipped},
        ExcludeList, Interface, LinkWatcher,
    },
};
use speaker_common::{map_names, VipEntry, VipKeyV4, VipKeyV6, VlanPath};
use speaker_tests::lab::{
    command::must, netns, reap_stale, require_root, run, CmdOutput, COMMAND_TIMEOUT, NETNS_PREFIX,
    RUN_ROOT,
};

static SEQ: AtomicU32 = AtomicU32::new(0);

// ---------------------------------------------------------------------------
// The lab
// ---------------------------------------------------------------------------

/// One network namespace, and optionally a bpffs, removed on drop.
struct NsLab {
    name: String,
    run_dir: PathBuf,
}

impl NsLab {
    fn new() -> Self {
        require_root();
        reap_stale();
        let id = format!(
            "{}-{}-ifaces",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::SeqCst)
        );
        let lab = NsLab {
            name: format!("{NETNS_PREFIX}{id}"),
            run_dir: Path::new(RUN_ROOT).join(id),
        };
        must("ip", &["netns", "add", &lab.name]);
        lab
    }

    /// `ip -n <namespace> args…`, which must succeed.
    fn ip(&self, args: &[&str]) -> CmdOutput {
        let mut full = vec!["-n", self.name.as_str()];
        full.extend_from_slice(args);
        must("ip", &full)
    }

    /// A veth pair with the given (name, MAC) ends, both down.
    fn veth_pair(&self, (name, mac): (&str, &str), (peer, peer_mac): (&str, &str)) {
        let args = ["link", "add", name, "address", mac, "type", "veth"];
        let peer_args = ["peer", "name", peer, "address", peer_mac];
        self.ip(&[&args[..], &peer_args[..]].concat());
    }

    /// Runs `test` on a thread inside the namespace.
    fn inside<T: Send>(&self, test: impl FnOnce() -> T + Send) -> T {
        netns::in_namespace(&self.name, test)
    }

    /// Mounts a private bpffs and creates the data plane's maps pinned there.
    fn pinned_maps(&mut self) -> (PinDir, DataplaneMaps) {
        let bpffs = self.run_dir.join("bpffs");
        netns::mount_bpffs(&bpffs);
        let pins = PinDir::new(bpffs.join("xdp-speaker"));
        // Loading pins the maps; the object itself is not needed afterwards.
        Object::load(Some(&pins)).expect("loading the eBPF object (run `cargo xtask build-ebpf`)");
        let maps = DataplaneMaps::from_pins(&pins).expect("opening the pinned maps");
        (pins, maps)
    }

    /// The link-layer multicast addresses on `dev`'s receive filter.
    fn multicast_macs(&self, dev: &str) -> Vec<String> {
        self.ip(&["maddr", "show", "dev", dev])
            .stdout
            .lines()
            .filter_map(|l| l.trim().strip_prefix("link"))
            .filter_map(|rest| rest.split_whitespace().next())
            .map(str::to_owned)
            .collect()
    }
}

impl Drop for NsLab {
    fn drop(&mut self) {
        // Never panic here: this also runs while a failing test unwinds.
        netns::delete(&self.name);
        // Unmounts the bpffs; RUN_ROOT, shared with parallel labs, stays.
        netns::remove_run_dir(&self.run_dir);
    }
}

// ---------------------------------------------------------------------------
// Discovery
// ---------------------------------------------------------------------------

/// The names, sorted: a veth pair's peer is created first, so index order
/// is not the order of the commands.
fn names(interfaces: &[Interface]) -> Vec<&str> {
    let mut names: Vec<&str> = interfaces.iter().map(|i| i.name.as_str()).collect();
    names.sort_unstable();
    names
}

/// Why each link is not announced on, by name (`None`: announced).
fn reasons(exclude: &ExcludeList) -> Vec<(String, Option<Skipped>)> {
    discovery::links()
        .expect("listing links")
        .iter()
        .map(|link| (link.name.clone(), discovery::classify(link, exclude).err()))
        .collect()
}

fn reason_of(exclude: &ExcludeList, name: &str) -> Option<Skipped> {
    reasons(exclude)
        .into_iter()
        .find(|(n, _)| n == name)
        .unwrap_or_else(|| panic!("no link {name}"))
        .1
}

#[test]
fn announces_on_interfaces_by_metallb_rules() {
    let lab = NsLab::new();
    lab.inside(|| {
        let default = ExcludeList::metallb_default();
        // Only the loopback, which is excluded by name.
        assert!(interfaces::announce_interfaces(&default)
            .unwrap()
            .is_empty());
        assert_eq!(reason_of(&default, "lo"), Some(Skipped::Excluded));
        assert_eq!(
            reason_of(&ExcludeList::none(), "lo"),
            Some(Skipped::Down),
            "lo is down in a fresh namespace"
        );

        // A veth pair, both ends up: both announced, with their index and MAC.
        lab.veth_pair(("a0", "02:00:00:00:0a:00"), ("a1", "02:00:00:00:0a:01"));
        lab.ip(&["link", "set", "a0", "up"]);
        lab.ip(&["link", "set", "a1", "up"]);
        let announced = interfaces::announce_interfaces(&default).unwrap();
        assert_eq!(names(&announced), ["a0", "a1"]);
        let a1 = announced.iter().find(|i| i.name == "a1").unwrap();
        assert_eq!(*a1, Interface::by_name("a1").unwrap());
        assert_eq!(a1.mac, [0x02, 0, 0, 0, 0x0a, 0x01]);

        // Excluded by a name pattern of the operator's.
        let no_a1 = ExcludeList::new(["^a1$"]).unwrap();
        let announced = interfaces::announce_interfaces(&no_a1).unwrap();
        assert_eq!(names(&announced), ["a0"]);
        assert_eq!(reason_of(&no_a1, "a1"), Some(Skipped::Excluded));

        // A bridge with an enslaved port: the bridge is announced on, the port not.
        lab.ip(&[
            "link",
            "add",
            "br0",
            "address",
            "02:00:00:00:0b:00",
            "type",
            "bridge",
        ]);
        lab.ip(&["link", "add", "p0", "type", "veth", "peer", "name", "p1"]);
        lab.ip(&["link", "set", "p0", "master", "br0"]);
        for dev in ["br0", "p0", "p1"] {
            lab.ip(&["link", "set", dev, "up"]);
        }
        let announced = interfaces::announce_interfaces(&default).unwrap();
        assert_eq!(names(&announced), ["a0", "a1", "br0", "p1"]);
        assert_eq!(reason_of(&default, "p0"), Some(Skipped::Enslaved));
        assert_eq!(reason_of(&default, "br0"), None);

        // Set down: gone. Its peer loses carrier but stays administratively
        // up, and MetalLB checks IFF_UP only: still announced.
        lab.ip(&["link", "set", "a0", "down"]);
        let announced = interfaces::announce_interfaces(&default).unwrap();
        assert_eq!(names(&announced), ["a1", "br0", "p1"]);
        assert_eq!(reason_of(&default, "a0"), Some(Skipped::Down));

        // ARP off (IFF_NOARP): excluded.
        lab.ip(&["link", "set", "a1", "arp", "off"]);
        let announced = interfaces::announce_interfaces(&default).unwrap();
        assert_eq!(names(&announced), ["br0", "p1"]);
        assert_eq!(reason_of(&default, "a1"), Some(Skipped::NoArp));

        // Names from the MetalLB default list stay excluded when up.
        lab.ip(&[
            "link", "add", "veth9", "type", "veth", "peer", "name", "cni9",
        ]);
        lab.ip(&["link", "set", "veth9", "up"]);
        lab.ip(&["link", "set", "cni9", "up"]);
        let announced = interfaces::announce_interfaces(&default).unwrap();
        assert_eq!(names(&announced), ["br0", "p1"]);
        let all = interfaces::announce_interfaces(&ExcludeList::none()).unwrap();
        assert_eq!(names(&all), ["br0", "cni9", "p1", "veth9"]);

        // An L2Advertisement's list: only present names, never excluded ones.
        let listed: BTreeSet<String> = ["p1", "veth9", "eth7"].map(String::from).into();
        assert_eq!(
            names(&interfaces::select(&announced, Some(&listed))),
            ["p1"]
        );
        assert_eq!(interfaces::select(&announced, None), announced);
    });
}

// ---------------------------------------------------------------------------
// Link notifications
// ---------------------------------------------------------------------------

/// A [`LinkWatcher`] with a single-threaded runtime of its own, driven on
/// the test's thread, so that its socket is opened in that thread's namespace.
struct Watcher {
    runtime: tokio::runtime::Runtime,
    watcher: LinkWatcher,
}

impl Watcher {
    fn new() -> Self {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("starting a runtime");
        let watcher = {
            let _context = runtime.enter();
            LinkWatcher::new().expect("subscribing to link notifications")
        };
        Watcher { runtime, watcher }
    }

    /// True when `changed` resolved within `limit`.
    fn changed_within(&mut self, limit: Duration) -> bool {
        let watcher = &mut self.watcher;
        let waited = self
            .runtime
            .block_on(async { tokio::time::timeout(limit, watcher.changed()).await });
        match waited {
            Ok(result) => {
                result.expect("reading link notifications");
                true
            }
            Err(_elapsed) => false,
        }
    }
}

const CHANGE_LIMIT: Duration = Duration::from_secs(1);
const QUIET_LIMIT: Duration = Duration::from_millis(300);

/// Takes notifications until none came for 1.5 s: the kernel's link-watch
/// work reports carrier and operstate changes up to a second after the
/// command that caused them.
fn settle(watcher: &mut Watcher) {
    for _ in 0..20 {
        if !watcher.changed_within(Duration::from_millis(1500)) {
            return;
        }
    }
    panic!("link notifications never stopped");
}

/// Runs `change` and asserts that the watcher reports it within a second.
fn assert_noticed(watcher: &mut Watcher, what: &str, change: impl FnOnce()) {
    settle(watcher);
    assert!(
        !watcher.changed_within(QUIET_LIMIT),
        "a change was reported with nothing happening (before: {what})"
    );
    change();
    let started = Instant::now();
    assert!(
        watcher.changed_within(CHANGE_LIMIT),
        "{what}: no change reported within {CHANGE_LIMIT:?}"
    );
    eprintln!("{what}: noticed after {:?}", started.elapsed());
}

#[test]
fn link_watcher_notices_changes_and_nothing_else() {
    let lab = NsLab::new();
    lab.inside(|| {
        let mut watcher = Watcher::new();
        assert!(
            !watcher.changed_within(QUIET_LIMIT),
            "a fresh namespace reported a change"
        );
        assert_noticed(&mut watcher, "ip link add", || {
            lab.ip(&["link", "add", "w0", "type", "veth", "peer", "name", "w1"]);
        });
        assert_noticed(&mut watcher, "ip link set up", || {
            lab.ip(&["link", "set", "w0", "up"]);
        });
        assert_noticed(&mut watcher, "ip link set down", || {
            lab.ip(&["link", "set", "w0", "down"]);
        });
        assert_noticed(&mut watcher, "ip link set address", || {
            lab.ip(&["link", "set", "w0", "address", "02:00:00:00:0c:01"]);
        });
        assert_noticed(&mut watcher, "ip link set arp off", || {
            lab.ip(&["link", "set", "w1", "arp", "off"]);
        });
        assert_noticed(&mut watcher, "ip link del", || {
            lab.ip(&["link", "del", "w0"]);
        });
        // An address is not a link change: nothing to rescan for.
        lab.ip(&["link", "add", "w2", "type", "veth", "peer", "name", "w3"]);
        settle(&mut watcher);
        lab.ip(&["addr", "add", "192.0.2.1/24", "dev", "w2"]);
        assert!(
            !watcher.changed_within(QUIET_LIMIT),
            "an address change woke the link watcher"
        );
        settle(&mut watcher);
        assert!(!watcher.changed_within(QUIET_LIMIT));
    });
}

#[test]
fn link_watcher_takes_a_burst_as_few_changes() {
    let lab = NsLab::new();
    lab.inside(|| {
        let mut watcher = Watcher::new();
        // 400 links (200 veth pairs) at once: far more notifications than one read takes, and
        // possibly more than the socket buffer holds (ENOBUFS counts as a change).
        let batch: String = (0..200)
            .map(|i| format!("link add bu{i} type veth peer name bp{i}\n"))
            .collect();
        let path = std::env::temp_dir().join(format!("ifaces-batch-{}", std::process::id()));
        std::fs::write(&path, batch).unwrap();
        let file = path.to_string_lossy().into_owned();
        let added = run("ip", &["-n", &lab.name, "-batch", &file], COMMAND_TIMEOUT);
        let _ = std::fs::remove_file(&path);
        assert!(added.success(), "{added}");
        let mut changes = 0;
        let started = Instant::now();
        while watcher.changed_within(Duration::from_millis(500)) {
            changes += 1;
            assert!(started.elapsed() < Duration::from_secs(10), "never settled");
        }
        assert!(changes >= 1, "the burst went unnoticed");
        assert!(changes <= 5, "the burst was reported as {changes} changes");
        eprintln!("400 links added: {changes} change(s)");
        assert_eq!(
            discovery::links().unwrap().len(),
            401,
            "lo and 200 veth pairs"
        );
    });
}

// ---------------------------------------------------------------------------
// Map sync
// ---------------------------------------------------------------------------

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn want(address: &str, interface: &Interface) -> DesiredVip {
    DesiredVip {
        address: ip(address),
        interface: interface.clone(),
        vlan: VlanPath::UNTAGGED,
    }
}

/// (address, ifindex) → answered, as the maps hold them.
fn answered(maps: &DataplaneMaps) -> Vec<(IpAddr, u32, u64)> {
    maps.vips()
        .unwrap()
        .into_iter()
        .map(|v| (v.address, v.ifindex, v.answered))
        .collect()
}

/// Writes `per_cpu` into every CPU's answered counter of each VIP, as the XDP
/// program would have counted.
fn set_answered(pins: &PinDir, per_cpu: u64) {
    let open = |name: &str| MapData::from_pin(pins.map(name)).unwrap();
    let v4: HashMap<MapData, VipKeyV4, VipEntry> =
        HashMap::try_from(aya::maps::Map::HashMap(open(map_names::VIPS_V4))).unwrap();
    let v6: HashMap<MapData, VipKeyV6, VipEntry> =
        HashMap::try_from(aya::maps::Map::HashMap(open(map_names::VIPS_V6))).unwrap();
    let mut counters: PerCpuArray<MapData, u64> =
        PerCpuArray::try_from(aya::maps::Map::PerCpuArray(open(map_names::VIP_ANSWERED))).unwrap();
    let cpus = aya::util::nr_cpus().unwrap();
    let slots: Vec<u32> = v4
        .iter()
        .map(|e| e.unwrap().1.slot)
        .chain(v6.iter().map(|e| e.unwrap().1.slot))
        .collect();
    for slot in slots {
        let values = PerCpuValues::try_from(vec![per_cpu; cpus]).unwrap();
        counters.set(slot, values, 0).unwrap();
    }
}

/// (address, interface name), sorted.
fn keys(report_entries: &[(IpAddr, Interface, VlanPath)]) -> Vec<(IpAddr, &str)> {
    let mut keys: Vec<_> = report_entries
        .iter()
        .map(|(a, i, vlan)| {
            assert_eq!(*vlan, VlanPath::UNTAGGED);
            (*a, i.name.as_str())
        })
        .collect();
    keys.sort_unstable();
    keys
}

fn assert_noop(report: &SyncReport, unchanged: usize) {
    assert!(report.is_noop(), "expected no change: {report:#?}");
    assert_eq!(report.unchanged, unchanged, "{report:#?}");
}

/// The solicited-node group of 2001:db8::100 and 2001:db8:1::100.
const GROUP_100: &str = "33:33:ff:00:01:00";

#[test]
fn map_sync_changes_only_the_difference() {
    let mut lab = NsLab::new();
    let (pins, mut maps) = lab.pinned_maps();
    lab.inside(|| {
        lab.veth_pair(("s0", "02:00:00:aa:bb:01"), ("s1", "02:00:00:aa:bb:02"));
        for dev in ["s0", "s1"] {
            lab.ip(&["link", "set", dev, "up"]);
        }
        let s0 = Interface::by_name("s0").unwrap();
        let s1 = Interface::by_name("s1").unwrap();
        let cpus = aya::util::nr_cpus().unwrap() as u64;

        // First pass: everything is new.
        let first = [
            want("192.0.2.100", &s0),
            want("2001:db8::100", &s0),
            want("192.0.2.100", &s1),
        ];
        let report = sync::apply(&mut maps, &first).unwrap();
        assert_eq!(
            keys(&report.added),
            [
                (ip("192.0.2.100"), "s0"),
                (ip("192.0.2.100"), "s1"),
                (ip("2001:db8::100"), "s0"),
            ]
        );
        assert!(
            report.removed.is_empty() && report.failed.is_empty(),
            "{report:#?}"
        );
        assert!(lab.multicast_macs("s0").iter().any(|m| m == GROUP_100));
        assert!(!lab.multicast_macs("s1").iter().any(|m| m == GROUP_100));

        // The XDP program has answered a few times; the same set again
        // touches nothing, so the counts stay.
        set_answered(&pins, 7);
        let before = answered(&maps);
        assert!(before.iter().all(|(_, _, n)| *n == 7 * cpus), "{before:?}");
        assert_noop(&sync::apply(&mut maps, &first).unwrap(), 3);
        assert_noop(&sync::apply(&mut maps, &first).unwrap(), 3);
        assert_eq!(answered(&maps), before);

        // One VIP leaves s1, another arrives on s0: exactly that changes.
        let second = [
            want("192.0.2.100", &s0),
            want("2001:db8::100", &s0),
            want("192.0.2.101", &s0),
        ];
        let report = sync::apply(&mut maps, &second).unwrap();
        assert_eq!(keys(&report.added), [(ip("192.0.2.101"), "s0")]);
        assert_eq!(
            report.removed,
            [(ip("192.0.2.100"), s1.index, VlanPath::UNTAGGED)]
        );
        assert!(report.updated_mac.is_empty() && report.failed.is_empty());
        assert_eq!(report.unchanged, 2);
        assert_eq!(
            answered(&maps),
            [
                (ip("192.0.2.100"), s0.index, 7 * cpus),
                (ip("192.0.2.101"), s0.index, 0),
                (ip("2001:db8::100"), s0.index, 7 * cpus),
            ]
        );

        // The interface's MAC changes: entries are rewritten in place and
        // keep their counts.
        lab.ip(&["link", "set", "s0", "address", "02:00:00:aa:bb:99"]);
        let s0 = Interface::by_name("s0").unwrap();
        let third = [
            want("192.0.2.100", &s0),
            want("2001:db8::100", &s0),
            want("192.0.2.101", &s0),
        ];
        let report = sync::apply(&mut maps, &third).unwrap();
        assert_eq!(report.updated_mac.len(), 3, "{report:#?}");
        assert!(report.added.is_empty() && report.removed.is_empty());
        assert!(maps.vips().unwrap().iter().all(|v| v.mac == s0.mac));
        assert_eq!(answered(&maps)[0].2, 7 * cpus);
        assert_noop(&sync::apply(&mut maps, &third).unwrap(), 3);
    });
}

#[test]
fn map_sync_joins_and_leaves_solicited_node_groups() {
    let mut lab = NsLab::new();
    let (_pins, mut maps) = lab.pinned_maps();
    lab.inside(|| {
        lab.ip(&["link", "add", "m0", "type", "veth", "peer", "name", "m1"]);
        lab.ip(&["link", "set", "m0", "up"]);
        let m0 = Interface::by_name("m0").unwrap();
        let joined = || lab.multicast_macs("m0").iter().any(|m| m == GROUP_100);

        let both = [want("2001:db8::100", &m0), want("2001:db8:1::100", &m0)];
        let report = sync::apply(&mut maps, &both).unwrap();
        assert_eq!(report.added.len(), 2, "{report:#?}");
        assert!(joined());

        // One of the two sharing the group goes: the group stays.
        let one = [want("2001:db8:1::100", &m0)];
        let report = sync::apply(&mut maps, &one).unwrap();
        assert_eq!(
            report.removed,
            [(ip("2001:db8::100"), m0.index, VlanPath::UNTAGGED)]
        );
        assert!(joined(), "left a group another VIP still needs");

        // A join lost on the way (here: left behind our back) comes back on
        // the next pass, without touching the map entry.
        lab.ip(&["maddr", "del", GROUP_100, "dev", "m0"]);
        assert!(!joined());
        assert_noop(&sync::apply(&mut maps, &one).unwrap(), 1);
        assert!(joined(), "the group was not joined again");

        // The last one goes: the group is left. IPv4 VIPs need no group.
        let report = sync::apply(&mut maps, &[want("192.0.2.100", &m0)]).unwrap();
        assert_eq!(
            report.removed,
            [(ip("2001:db8:1::100"), m0.index, VlanPath::UNTAGGED)]
        );
        assert!(!joined(), "the group stayed joined");
    });
}

#[test]
fn map_sync_removes_entries_of_vanished_interfaces() {
    let mut lab = NsLab::new();
    let (_pins, mut maps) = lab.pinned_maps();
    lab.inside(|| {
        lab.ip(&["link", "add", "k0", "type", "veth", "peer", "name", "k1"]);
        lab.ip(&["link", "add", "g0", "type", "veth", "peer", "name", "g1"]);
        let k0 = Interface::by_name("k0").unwrap();
        let g0 = Interface::by_name("g0").unwrap();
        let desired = [
            want("192.0.2.100", &k0),
            want("192.0.2.100", &g0),
            want("2001:db8::100", &g0),
        ];
        let report = sync::apply(&mut maps, &desired).unwrap();
        assert_eq!(report.added.len(), 3, "{report:#?}");

        // g0 disappears before the daemon rescans: its entries go, the
        // desired entries naming it fail one by one, and a new VIP on k0 is
        // still added in the same pass.
        lab.ip(&["link", "del", "g0"]);
        let mut stale = desired.to_vec();
        stale.push(want("192.0.2.101", &k0));
        let report = sync::apply(&mut maps, &stale).unwrap();
        let removed: BTreeSet<_> = report.removed.iter().copied().collect();
        assert_eq!(
            removed,
            [
                (ip("192.0.2.100"), g0.index, VlanPath::UNTAGGED),
                (ip("2001:db8::100"), g0.index, VlanPath::UNTAGGED)
            ]
            .into()
        );
        let failed: Vec<IpAddr> = report.failed.iter().map(|(a, _)| *a).collect();
        assert_eq!(
            failed,
            [ip("192.0.2.100"), ip("2001:db8::100")],
            "{report:#?}"
        );
        assert!(report.failed[0].1.contains("g0"), "{report:#?}");
        assert_eq!(keys(&report.added), [(ip("192.0.2.101"), "k0")]);
        assert_eq!(report.unchanged, 1);
        assert!(maps.vips().unwrap().iter().all(|v| v.ifindex == k0.index));

        // Next pass, from a fresh scan: nothing left to do.
        let fresh = [want("192.0.2.100", &k0), want("192.0.2.101", &k0)];
        assert_noop(&sync::apply(&mut maps, &fresh).unwrap(), 2);
    });
}

// ---------------------------------------------------------------------------
// Bonds and VLAN devices
//
// Neither can be created on the machines this lab runs on: the kernel has no
// `bonding` and no `8021q` module (`ip link add b0 type bond` and
// `ip link add link X name X.5 type vlan id 5` both fail with "Unknown device
// type", there is no modprobe and no /lib/modules for the running kernel).
// So the bond and VLAN resolution rules are unit tests on parsed rtnetlink
// messages (`speaker::interfaces::{bonds, vlan}`), and this lab covers the
// kernel-facing parts that do exist: IFLA_MASTER and IFLA_INFO_KIND as the
// kernel reports them, the BOND_SLAVES map kept in step with enslavement,
// and the offload flag that decides the VLAN fallback.
// ---------------------------------------------------------------------------

#[test]
fn bridge_ports_are_not_bond_slaves_and_the_slave_map_follows_enslavement() {
    use speaker::{dataplane::bond_slaves, interfaces::bonds};
    use std::collections::BTreeMap;

    let mut lab = NsLab::new();
    let (_pins, mut maps) = lab.pinned_maps();
    lab.inside(|| {
        lab.ip(&["link", "add", "br0", "type", "bridge"]);
        lab.ip(&["link", "add", "p0", "type", "veth", "peer", "name", "p1"]);
        lab.ip(&["link", "set", "p0", "master", "br0"]);
        let links = discovery::links().unwrap();
        let link = |name: &str| links.iter().find(|l| l.name == name).unwrap().clone();
        let (br0, p0, p1) = (link("br0"), link("p0"), link("p1"));
        assert_eq!(br0.kind.as_deref(), Some("bridge"));
        assert_eq!(p0.kind.as_deref(), Some("veth"));
        assert_eq!(p0.master, Some(br0.index), "IFLA_MASTER of a port");
        assert!(!br0.is_bond());
        // XDP on a bridge never runs on its ports: nothing to map.
        let attached: BTreeSet<u32> = [br0.index, p1.index].into();
        assert!(bonds::slaves_of(&links, &attached).is_empty());

        // The map I/O, with the bridge standing in for a bond (the pairs a
        // bond's slaves would give): enslaved ports are set, released ones go.
        let ports = |links: &[speaker::interfaces::discovery::Link]| -> BTreeMap<u32, u32> {
            links
                .iter()
                .filter(|l| l.master == Some(br0.index))
                .map(|l| (l.index, br0.index))
                .collect()
        };
        let plan = bond_slaves::apply(&mut maps, &ports(&links)).unwrap();
        assert_eq!(plan.set, [(p0.index, br0.index)]);
        assert_eq!(maps.bond_slaves().unwrap(), [(p0.index, br0.index)]);
        assert!(bond_slaves::apply(&mut maps, &ports(&links))
            .unwrap()
            .is_empty());

        lab.ip(&["link", "set", "p1", "master", "br0"]);
        let links = discovery::links().unwrap();
        let plan = bond_slaves::apply(&mut maps, &ports(&links)).unwrap();
        assert_eq!(plan.set, [(p1.index, br0.index)]);

        lab.ip(&["link", "set", "p0", "nomaster"]);
        let links = discovery::links().unwrap();
        let plan = bond_slaves::apply(&mut maps, &ports(&links)).unwrap();
        assert_eq!(plan.remove, [p0.index]);
        assert_eq!(maps.bond_slaves().unwrap(), [(p1.index, br0.index)]);

        // The bridge is deleted: its ports are released, the map empties.
        lab.ip(&["link", "del", "br0"]);
        let links = discovery::links().unwrap();
        bond_slaves::apply(&mut maps, &ports(&links)).unwrap();
        assert!(maps.bond_slaves().unwrap().is_empty());
    });
}

#[test]
fn tag_stripping_follows_the_rx_vlan_offload_flag() {
    use speaker::interfaces::offload;

    let lab = NsLab::new();
    lab.inside(|| {
        lab.ip(&["link", "add", "t0", "type", "veth", "peer", "name", "t1"]);
        // veth advertises rx-vlan-offload (the tag of a frame from a VLAN
        // device on the peer travels as skb metadata, not in the frame), so
        // a VLAN on a veth would fall back to the VLAN device.
        assert!(offload::strips_vlan_tags("t0").unwrap());
        let ethtool = run(
            "ip",
            &[
                "netns", "exec", &lab.name, "ethtool", "-K", "t0", "rxvlan", "off",
            ],
            COMMAND_TIMEOUT,
        );
        assert!(ethtool.success(), "{ethtool}");
        assert!(!offload::strips_vlan_tags("t0").unwrap());
        assert!(
            offload::strips_vlan_tags("t1").unwrap(),
            "the peer keeps it"
        );
        let missing = offload::strips_vlan_tags("nosuch0").unwrap_err();
        assert!(missing.to_string().contains("nosuch0"), "{missing}");
    });
}
