//! A multi-host lab: N "host" network namespaces on one Ethernet segment, for
//! end-to-end tests of `speaker run` (several speakers, a client, the
//! election moving IPs between nodes).
//!
//! ```text
//!                      switch  (xdpspk-<pid>-f<seq>-switch)
//!                 br0 (bridge, multicast snooping off, no addresses)
//!                  |                 |                  |
//!               p0-iris1          p1-iris2          p2-client        <- bridge ports
//!                  |                 |                  |
//!                eth0              eth0               eth0           <- veth peers
//!   (xdpspk-<pid>-f<seq>-iris1) (…-iris2)          (…-client)
//!     192.0.2.11/24               192.0.2.12/24      192.0.2.10/24
//!     2001:db8::11/64             2001:db8::12/64    2001:db8::10/64
//! ```
//!
//! Every host's interface is named `eth0`, so that the speaker's default
//! interface rules (MetalLB's: up, broadcast, not enslaved, not NOARP, name
//! not matching `^veth.*` …) select it. Only documentation addresses are
//! used: 192.0.2.0/24 and 2001:db8::/64 (checked); the switch namespace has
//! IPv6 disabled and no address at all.
//!
//! A private bpffs is mounted at `/run/xdp-speaker-tests/<pid>-f<seq>/bpffs`
//! (a bpffs mounted inside `ip netns exec` would vanish with it, and
//! /sys/fs/bpf is hidden there) with one pin directory per host
//! (`bpffs/<host>`) and one for the switch (`bpffs/switch`, for pass-through
//! programs on the bridge ports). Next to it: `cluster/cluster.yaml` (the
//! `--cluster-state` file every speaker gets by default) and `logs/` (one file
//! per speaker process, stdout and stderr).
//!
//! XDP on veths: the responder's `XDP_TX` frames on a veth in native mode are
//! dropped unless the peer (here the bridge port) has an XDP program too.
//! Either start the speakers with [`super::SpeakerMode::Generic`], or call
//! [`Fabric::attach_pass_through_ports`] and use native (or auto) mode.
//!
//! In-process tools inside a host ([`Fabric::in_host`] runs a closure on a
//! thread that has entered the host's network namespace): the speaker's
//! `/metrics` ([`Fabric::metrics`], [`Fabric::metric`], see
//! [`super::http`]), and an ARP prober on an AF_PACKET socket
//! ([`Fabric::arp_prober`], see [`super::probe`]).
//!
//! Teardown, in `Drop`, also while a failing test unwinds: the speakers are
//! killed (SIGKILL; their logs are printed to stderr first when the thread is
//! panicking), then any other process left in the lab's namespaces, then the
//! namespaces are deleted (taking the veths and XDP links with them), the
//! bpffs unmounted and the directory removed. Speakers also get
//! `PR_SET_PDEATHSIG(SIGKILL)`, so a test process killed outright does not
//! leave them running; the namespaces and directories of such runs are
//! removed by the next lab that starts (their process id no longer exists).
//!
//! The names are unique per process and lab (`<pid>-f<seq>`), so tests may run
//! in parallel.

use std::{
    fs, io,
    net::Ipv4Addr,
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicU32, Ordering},
        Mutex,
    },
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

use nix::sys::signal::Signal;
use serde_json::Value;

use super::host::{Host, HostSpec};
use super::{
    arping::{Arping, ArpingReport},
    command::{lock, must, CmdOutput, Spawn, COMMAND_TIMEOUT},
    http, mac,
    maps::{parse_maps, vip_addresses, vip_answered},
    neighbour::{parse_ndisc6, parse_neighbours, same_ip, Neighbour},
    netns::{self, reap_stale, NETNS_PREFIX, RUN_ROOT},
    probe::{ArpProbe, ArpProber},
    require_root,
    speaker::{pretty, speaker_bin, ClusterSource, Speaker, SpeakerLaunch, SpeakerOptions},
    tools::require_lab_tools,
};

/// The name of every host's interface.
pub const HOST_IF: &str = "eth0";
/// The bridge in the switch namespace.
pub const BRIDGE: &str = "br0";
/// The file name of the cluster description, in [`Fabric::cluster_dir`].
pub const CLUSTER_FILE: &str = "cluster.yaml";

static FABRIC_SEQ: AtomicU32 = AtomicU32::new(0);

// ---------------------------------------------------------------------------
// The fabric
// ---------------------------------------------------------------------------

/// The switch, the hosts, the bpffs, the cluster file, the speakers. See the
/// module docs.
pub struct Fabric {
    /// `<pid>-f<seq>`.
    pub id: String,
    pub switch_ns: String,
    pub hosts: Vec<Host>,
    /// The lab's directory under /run.
    pub run_dir: PathBuf,
    /// The bpffs mount point.
    pub bpffs: PathBuf,
    /// The `--pin-dir` of speaker commands in the switch (pass-through programs).
    pub switch_pin_dir: PathBuf,
    /// Holds [`CLUSTER_FILE`] and nothing else (the speaker watches the directory).
    pub cluster_dir: PathBuf,
    pub log_dir: PathBuf,
    pub speaker: PathBuf,
    speakers: Mutex<Vec<Speaker>>,
    namespaces: Vec<String>,
    spawned: AtomicU32,
}

impl Fabric {
    /// Builds the switch and one host per spec (no XDP program, no speaker).
    /// Panics if anything fails, after removing what was already created.
    pub fn new(specs: &[HostSpec]) -> Fabric {
        require_root();
        require_lab_tools();
        let speaker = speaker_bin();
        reap_stale();

        let mut names: Vec<&str> = specs.iter().map(|s| s.name.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), specs.len(), "host names must be unique");
        for s in specs {
            assert!(
                !s.name.is_empty()
                    && s.name != "switch"
                    && s.name
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.'),
                "unusable host name {:?}",
                s.name
            );
        }

        let pid = std::process::id();
        let seq = FABRIC_SEQ.fetch_add(1, Ordering::SeqCst);
        let id = format!("{pid}-f{seq}");
        let run_dir = Path::new(RUN_ROOT).join(&id);
        let bpffs = run_dir.join("bpffs");
        let mut fabric = Fabric {
            switch_ns: format!("{NETNS_PREFIX}{id}-switch"),
            hosts: Vec::new(),
            switch_pin_dir: bpffs.join("switch"),
            cluster_dir: run_dir.join("cluster"),
            log_dir: run_dir.join("logs"),
            bpffs,
            run_dir,
            speaker,
            id,
            speakers: Mutex::new(Vec::new()),
            namespaces: Vec::new(),
            spawned: AtomicU32::new(0),
        };
        // A leftover of an earlier process that had our pid: remove it.
        fabric.remove_everything();

        // From here on, Drop cleans up whatever exists.
        for dir in [&fabric.bpffs, &fabric.cluster_dir, &fabric.log_dir] {
            netns::create_dir_all(dir);
        }
        netns::mount_bpffs(&fabric.bpffs);

        let switch = fabric.switch_ns.clone();
        fabric.add_namespace(&switch);
        // The switch is a plain L2 device: no IPv6 (no link-local addresses,
        // router solicitations or MLD reports of its own).
        must(
            "ip",
            &[
                "netns",
                "exec",
                &switch,
                "sysctl",
                "-q",
                "-w",
                "net.ipv6.conf.all.disable_ipv6=1",
                "net.ipv6.conf.default.disable_ipv6=1",
            ],
        );
        // Multicast snooping off: the responder listens for solicited-node
        // multicast by MAC filter only (no MLD join), so a snooping bridge
        // could withhold Neighbor Solicitations once it has learnt groups.
        must(
            "ip",
            &[
                "-n",
                &switch,
                "link",
                "add",
                BRIDGE,
                "type",
                "bridge",
                "stp_state",
                "0",
                "mcast_snooping",
                "0",
            ],
        );
        must("ip", &["-n", &switch, "link", "set", BRIDGE, "up"]);

        for (i, spec) in specs.iter().enumerate() {
            let host = fabric.add_host(i, spec);
            fabric.hosts.push(host);
        }
        fabric
    }

    fn add_namespace(&mut self, ns: &str) {
        self.namespaces.push(ns.to_owned());
        netns::add(ns);
    }

    fn add_host(&mut self, index: usize, spec: &HostSpec) -> Host {
        let ns = format!("{NETNS_PREFIX}{}-{}", self.id, spec.name);
        self.add_namespace(&ns);
        let mut port = format!("p{index}-{}", spec.name);
        port.truncate(15);
        // Created in the switch with its peer directly in the host: names
        // never collide in the root namespace.
        let mut args = vec![
            "-n",
            &self.switch_ns,
            "link",
            "add",
            &port,
            "type",
            "veth",
            "peer",
            "name",
            HOST_IF,
        ];
        if let Some(mac) = &spec.mac {
            args.extend(["address", mac]);
        }
        args.extend(["netns", &ns]);
        must("ip", &args);
        must(
            "ip",
            &[
                "-n",
                &self.switch_ns,
                "link",
                "set",
                &port,
                "master",
                BRIDGE,
                "up",
            ],
        );
        let (v4, v6) = (
            spec.v4.map(|a| a.to_string()),
            spec.v6.map(|a| a.to_string()),
        );
        netns::configure_interface(&ns, HOST_IF, v4.as_deref(), v6.as_deref());
        let mac = netns::link_mac(&ns, HOST_IF);
        Host {
            name: spec.name.clone(),
            pin_dir: self.bpffs.join(&spec.name),
            ns,
            interface: HOST_IF.to_owned(),
            port,
            mac,
            v4: spec.v4,
            v6: spec.v6,
        }
    }

    /// The host called `name`; panics if there is none.
    pub fn host(&self, name: &str) -> &Host {
        self.hosts
            .iter()
            .find(|h| h.name == name)
            .unwrap_or_else(|| panic!("the fabric has no host {name:?}"))
    }

    /// The name of the host whose `eth0` has `mac`, if any.
    pub fn host_with_mac(&self, mac: &str) -> Option<&str> {
        let mac = mac::normalize(mac);
        self.hosts
            .iter()
            .find(|h| h.mac == mac)
            .map(|h| h.name.as_str())
    }

    // ----------------------------------------------------------- commands

    /// Runs `program args` in host `host` and captures its output.
    pub fn exec(&self, host: &str, program: &str, args: &[&str]) -> CmdOutput {
        self.exec_timeout(host, program, args, COMMAND_TIMEOUT)
    }

    /// [`Fabric::exec`] killed after `timeout`.
    pub fn exec_timeout(
        &self,
        host: &str,
        program: &str,
        args: &[&str],
        timeout: Duration,
    ) -> CmdOutput {
        let ns = self.host(host).ns.clone();
        netns::exec(&ns, program, args, timeout)
    }

    /// Runs `program args` in the switch namespace.
    pub fn exec_switch(&self, program: &str, args: &[&str]) -> CmdOutput {
        netns::exec(&self.switch_ns, program, args, COMMAND_TIMEOUT)
    }

    /// Runs `program args` in host `host` on another thread (killed after
    /// `timeout`); join the handle for its output.
    pub fn exec_background(
        &self,
        host: &str,
        program: &str,
        args: &[&str],
        timeout: Duration,
    ) -> JoinHandle<CmdOutput> {
        let ns = self.host(host).ns.clone();
        let program = program.to_owned();
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        thread::spawn(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            netns::exec(&ns, &program, &args, timeout)
        })
    }

    /// Runs `speaker args --pin-dir <host's pin dir>` in host `host`.
    pub fn speaker_cmd(&self, host: &str, args: &[&str]) -> CmdOutput {
        let h = self.host(host);
        Spawn::speaker()
            .in_netns(&h.ns)
            .args(args)
            .args(["--pin-dir", &h.pin_dir.to_string_lossy()])
            .run(COMMAND_TIMEOUT)
    }

    /// Runs `speaker args` in the test's own namespace, adding nothing (for
    /// commands that touch no network, like `speaker election`).
    pub fn speaker_local(&self, args: &[&str]) -> CmdOutput {
        Spawn::speaker().args(args).run(COMMAND_TIMEOUT)
    }

    /// `speaker election --cluster-state <the fabric's file> --json`, parsed
    /// (membership disabled, as `--memberlist=false`); panics if it fails.
    pub fn election_json(&self) -> Value {
        self.election_json_among(None)
    }

    /// [`Fabric::election_json`] with `--members` when `members` is given.
    pub fn election_json_among(&self, members: Option<&[&str]>) -> Value {
        let path = self.cluster_state_path().to_string_lossy().into_owned();
        let joined = members.map(|m| m.join(","));
        let mut args = vec!["election", "--cluster-state", &path, "--json"];
        if let Some(members) = &joined {
            args.extend(["--members", members]);
        }
        let out = self.speaker_local(&args);
        assert!(out.success(), "speaker election failed:\n{out}");
        serde_json::from_str(&out.stdout).unwrap_or_else(|e| {
            panic!("speaker election --json printed invalid JSON ({e}):\n{out}")
        })
    }

    /// The node the dry run elects for `service` (`namespace/name`) among
    /// `members` (membership disabled when `None`); panics if nobody.
    pub fn elected(&self, service: &str, members: Option<&[&str]>) -> String {
        let report = self.election_json_among(members);
        report["services"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|s| format!("{}/{}", s["namespace"], s["name"]).replace('"', "") == service)
            .and_then(|s| s["elected_node"].as_str())
            .unwrap_or_else(|| panic!("the dry run elects nobody for {service}:\n{report}"))
            .to_owned()
    }

    /// `speaker maps --json` in host `host`, parsed; panics if it fails.
    pub fn maps_json(&self, host: &str) -> Value {
        parse_maps(&self.speaker_cmd(host, &["maps", "--json"]), host)
    }

    /// The VIP addresses in host `host`'s maps (any interface), as printed.
    pub fn vips(&self, host: &str) -> Vec<String> {
        vip_addresses(&self.maps_json(host))
    }

    /// True when host `host`'s maps hold `address` (on any interface).
    pub fn has_vip(&self, host: &str, address: &str) -> bool {
        vip_answered(&self.maps_json(host), address).is_some()
    }

    /// `speaker xdp attach --interface <port> --mode native --pass-through`
    /// on every bridge port, so that the hosts' responders may run in native
    /// mode (see the module docs). Asserts success.
    pub fn attach_pass_through_ports(&self) {
        let pin_dir = self.switch_pin_dir.to_string_lossy().into_owned();
        for host in &self.hosts {
            let out = Spawn::speaker()
                .in_netns(&self.switch_ns)
                .args([
                    "xdp",
                    "attach",
                    "--interface",
                    &host.port,
                    "--mode",
                    "native",
                    "--pass-through",
                    "--pin-dir",
                    &pin_dir,
                ])
                .run(COMMAND_TIMEOUT);
            assert!(out.success(), "attaching the pass-through program:\n{out}");
        }
    }

    /// Sets host `host`'s `eth0` up or down (inside the host).
    pub fn set_link(&self, host: &str, up: bool) {
        let state = if up { "up" } else { "down" };
        self.exec(host, "ip", &["link", "set", HOST_IF, state])
            .assert_success();
    }

    /// Sets host `host`'s bridge port up or down (a cable pulled on the
    /// switch side: the host's `eth0` loses carrier).
    pub fn set_port(&self, host: &str, up: bool) {
        let state = if up { "up" } else { "down" };
        let port = self.host(host).port.clone();
        self.exec_switch("ip", &["link", "set", &port, state])
            .assert_success();
    }

    // ------------------------------------------------------- client tools

    /// arping from host `host` (its `interface` should be [`HOST_IF`]), in
    /// one process (a fractional interval is rounded for iputils-arping).
    pub fn arping(&self, host: &str, arping: &Arping) -> (CmdOutput, ArpingReport) {
        arping.run_in(&self.host(host).ns, false)
    }

    /// [`Fabric::arping`] with every request broadcast (see
    /// [`Arping::run_in`]).
    pub fn arping_broadcast(&self, host: &str, arping: &Arping) -> (CmdOutput, ArpingReport) {
        arping.run_in(&self.host(host).ns, true)
    }

    /// `ndisc6 -n -m -r attempts -w wait_ms target eth0` from host `host`:
    /// every Neighbor Advertisement's target link-layer address (`-m`: all
    /// answers, not only the first).
    pub fn ndisc6(
        &self,
        host: &str,
        target: &str,
        attempts: u32,
        wait_ms: u32,
    ) -> (CmdOutput, Vec<String>) {
        let attempts = attempts.to_string();
        let wait = wait_ms.to_string();
        let out = self.exec(
            host,
            "ndisc6",
            &["-n", "-m", "-r", &attempts, "-w", &wait, target, HOST_IF],
        );
        let macs = parse_ndisc6(&out.stdout);
        (out, macs)
    }

    /// `ping -c 1 -W 1 target` from host `host` (for the neighbour
    /// resolution it triggers; nobody holds a VIP, so the ping itself fails).
    pub fn ping(&self, host: &str, target: &str) -> CmdOutput {
        self.exec(host, "ping", &["-c", "1", "-W", "1", target])
    }

    /// Host `host`'s neighbour entries on `eth0`.
    pub fn neighbours(&self, host: &str) -> Vec<Neighbour> {
        let out = self.exec(host, "ip", &["-j", "neigh", "show", "dev", HOST_IF]);
        assert!(out.success(), "ip neigh failed in {host}:\n{out}");
        parse_neighbours(&out.stdout, Some(HOST_IF))
    }

    /// Host `host`'s neighbour entry for `address`, if any.
    pub fn neighbour(&self, host: &str, address: &str) -> Option<Neighbour> {
        self.neighbours(host)
            .into_iter()
            .find(|n| same_ip(&n.dst, address))
    }

    /// Waits up to `limit` until host `host`'s entry for `address` has
    /// link-layer address `mac`; returns the entry and when it was seen.
    /// Sends nothing: it only reads the neighbour table (every 20 ms).
    pub fn wait_neighbour_mac(
        &self,
        host: &str,
        address: &str,
        mac: &str,
        limit: Duration,
    ) -> Option<(Neighbour, Instant)> {
        let mac = mac::normalize(mac);
        let deadline = Instant::now() + limit;
        loop {
            if let Some(n) = self.neighbour(host, address) {
                if n.lladdr.as_deref() == Some(mac.as_str()) {
                    return Some((n, Instant::now()));
                }
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    // ------------------------------------------------------ cluster state

    /// The `--cluster-state` file speakers get by default.
    pub fn cluster_state_path(&self) -> PathBuf {
        self.cluster_dir.join(CLUSTER_FILE)
    }

    /// Replaces the cluster file atomically: writes a hidden temporary file
    /// in the same directory, then renames it over the file (what `sed -i`
    /// and most editors do).
    pub fn write_cluster_state(&self, yaml: &str) {
        let path = self.cluster_state_path();
        let temp = self.cluster_dir.join(format!(".{CLUSTER_FILE}.tmp"));
        fs::write(&temp, yaml).unwrap_or_else(|e| panic!("writing {}: {e}", temp.display()));
        fs::rename(&temp, &path)
            .unwrap_or_else(|e| panic!("renaming {} to {}: {e}", temp.display(), path.display()));
    }

    /// Rewrites the cluster file in place (truncate and write, same inode).
    pub fn write_cluster_state_in_place(&self, yaml: &str) {
        let path = self.cluster_state_path();
        fs::write(&path, yaml).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
    }

    /// The cluster file's current text.
    pub fn read_cluster_state(&self) -> String {
        let path = self.cluster_state_path();
        fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
    }

    // ----------------------------------------------------------- speakers

    /// Starts `speaker run --node-name <host> [--cluster-state FILE]
    /// --pin-dir <host's pin dir> [--memberlist=B] [--mode M] args…` in host
    /// `host`, logging to a file in [`Fabric::log_dir`]. It runs until
    /// stopped ([`Speaker::terminate`], [`Speaker::kill`]) or the fabric is
    /// dropped. Spawn from a thread that outlives it: it gets
    /// `PR_SET_PDEATHSIG(SIGKILL)`, which fires when the spawning thread ends.
    pub fn start_speaker(&self, host: &str, options: &SpeakerOptions) -> Speaker {
        let h = self.host(host);
        let n = self.spawned.fetch_add(1, Ordering::SeqCst);
        let mut args: Vec<String> = vec!["run".into(), "--node-name".into(), h.name.clone()];
        match &options.source {
            ClusterSource::FabricFile => {
                args.push("--cluster-state".into());
                args.push(self.cluster_state_path().to_string_lossy().into_owned());
            }
            ClusterSource::Path(path) => {
                args.push("--cluster-state".into());
                args.push(path.to_string_lossy().into_owned());
            }
            ClusterSource::None => {}
        }
        args.push("--pin-dir".into());
        args.push(h.pin_dir.to_string_lossy().into_owned());
        if let Some(m) = options.memberlist {
            args.push(format!("--memberlist={m}"));
        }
        if let Some(mode) = options.mode {
            args.push("--mode".into());
            args.push(mode.flag().into());
        }
        args.extend(options.args.iter().cloned());
        let speaker = Speaker::start(SpeakerLaunch {
            host: h.name.clone(),
            netns: h.ns.clone(),
            args,
            log_path: self.log_dir.join(format!("{n:02}-{}.log", h.name)),
            rust_log: options.rust_log.clone(),
            env: options.env.clone(),
            open_files_limit: options.open_files_limit,
        });
        lock(&self.speakers).push(speaker.clone());
        speaker
    }

    /// Every speaker started so far (running or not), in start order.
    pub fn speakers(&self) -> Vec<Speaker> {
        lock(&self.speakers).clone()
    }

    /// Every speaker's log, with a heading each (for failure messages).
    pub fn all_logs(&self) -> String {
        let mut text = String::new();
        for s in self.speakers() {
            text.push_str(&format!(
                "----- speaker on {} (pid {}, {}) -----\n$ {}\n",
                s.host(),
                s.pid(),
                match s.exit_status() {
                    Some(status) => format!("ended: {status}"),
                    None => "running".to_owned(),
                },
                self.pretty(s.command())
            ));
            text.push_str(&s.log());
            if !text.ends_with('\n') {
                text.push('\n');
            }
        }
        text
    }

    /// Waits until `owner`'s maps hold every one of `vips` and the maps of
    /// every other host in `nodes` none of them; returns how long that took.
    /// Panics with every host's maps and the speakers' logs otherwise.
    pub fn wait_owner(
        &self,
        nodes: &[&str],
        owner: &str,
        vips: &[&str],
        limit: Duration,
    ) -> Duration {
        let started = Instant::now();
        let last = loop {
            let last: Vec<(String, Value)> = nodes
                .iter()
                .map(|n| (n.to_string(), self.maps_json(n)))
                .collect();
            let ok = last.iter().all(|(node, maps)| {
                vips.iter()
                    .all(|vip| vip_answered(maps, vip).is_some() == (node == owner))
            });
            if ok {
                return started.elapsed();
            }
            if started.elapsed() >= limit {
                break last;
            }
            thread::sleep(Duration::from_millis(50));
        };
        panic!(
            "after {limit:?}, {owner} should hold {vips:?} and no other of {nodes:?} any:\n{}\n{}",
            last.iter()
                .map(|(n, m)| format!("{n}: {m}"))
                .collect::<Vec<_>>()
                .join("\n"),
            self.all_logs()
        );
    }

    /// Shortens a command line for printing: the speaker's path becomes
    /// `speaker`.
    pub fn pretty(&self, command: &str) -> String {
        pretty(command)
    }

    // ----------------------------------------------------------- teardown

    fn remove_everything(&mut self) {
        // 1. Our speakers.
        for s in self.speakers() {
            if s.is_running() {
                s.signal(Signal::SIGKILL);
                let _ = s.wait(Duration::from_secs(10));
            }
        }
        if thread::panicking() {
            let logs = self.all_logs();
            if !logs.is_empty() {
                eprintln!("fabric {}: speaker logs\n{logs}", self.id);
            }
        }
        // 2. Anything else still running in our namespaces (started by this
        //    lab: background commands), by id.
        let mut namespaces = std::mem::take(&mut self.namespaces);
        if let Ok(entries) = fs::read_dir("/run/netns") {
            let prefix = format!("{NETNS_PREFIX}{}-", self.id);
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if name.starts_with(&prefix) && !namespaces.contains(&name) {
                    namespaces.push(name);
                }
            }
        }
        for ns in &namespaces {
            netns::kill_processes(ns);
        }
        // 3. The namespaces: veths, bridge and XDP links go with them.
        for ns in &namespaces {
            netns::delete(ns);
        }
        // 4. The bpffs and the directory.
        netns::remove_run_dir(&self.run_dir);
    }
}

impl Drop for Fabric {
    fn drop(&mut self) {
        // Never panic here: this also runs while a failed test unwinds.
        self.remove_everything();
    }
}

impl Fabric {
    /// Runs `f` on a fresh thread that has entered host `host`'s network
    /// namespace (see [`netns::in_namespace`]).
    pub fn in_host<T: Send>(&self, host: &str, f: impl FnOnce() -> T + Send) -> T {
        netns::in_namespace(&self.host(host).ns, f)
    }

    /// `GET path` from `127.0.0.1:port` inside host `host`; the status code
    /// and the body.
    pub fn http_get(&self, host: &str, port: u16, path: &str) -> io::Result<(u16, String)> {
        http::get_in(&self.host(host).ns, port, path)
    }

    /// The speaker's `/metrics` in host `host` (MetalLB's port 7472).
    pub fn metrics(&self, host: &str) -> io::Result<String> {
        http::metrics_in(&self.host(host).ns)
    }

    /// One metric of the speaker in host `host` ([`http::metric_value`]);
    /// `None` if the speaker cannot be reached or does not export it.
    pub fn metric(&self, host: &str, name: &str) -> Option<f64> {
        self.metrics(host)
            .ok()
            .and_then(|text| http::metric_value(&text, name))
    }

    /// Waits until the speaker of every host in `nodes` counts `count`
    /// gossip members; panics with every speaker's log otherwise.
    pub fn wait_gossip_members(&self, nodes: &[&str], count: usize, limit: Duration) -> Duration {
        let started = Instant::now();
        loop {
            let seen: Vec<Option<f64>> = nodes
                .iter()
                .map(|n| self.metric(n, "xdp_speaker_gossip_members"))
                .collect();
            if seen.iter().all(|c| *c == Some(count as f64)) {
                return started.elapsed();
            }
            assert!(
                started.elapsed() < limit,
                "after {limit:?}, {nodes:?} should count {count} members, got {seen:?}\n{}",
                self.all_logs()
            );
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// The name of the host with `mac`, or `?mac`.
    pub fn name_of_mac(&self, mac: &str) -> String {
        self.host_with_mac(mac)
            .map(str::to_owned)
            .unwrap_or_else(|| format!("?{mac}"))
    }

    /// ARP probes one line each: offset from `t0` and which hosts answered.
    pub fn probe_timeline(&self, probes: &[ArpProbe], t0: Instant) -> String {
        probes
            .iter()
            .map(|p| {
                let offset = if p.sent >= t0 {
                    format!("+{:.3}", (p.sent - t0).as_secs_f64())
                } else {
                    format!("-{:.3}", (t0 - p.sent).as_secs_f64())
                };
                let answers: Vec<String> = p
                    .answers
                    .iter()
                    .map(|(mac, at)| format!("{} after {:?}", self.name_of_mac(mac), *at - p.sent))
                    .collect();
                let answers = if answers.is_empty() {
                    "UNANSWERED".to_owned()
                } else {
                    answers.join(", ")
                };
                format!("  #{:<3} sent {offset}s: {answers}", p.seq)
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// An ARP prober in host `host` (which must have an IPv4 address) asking
    /// for `target` on its `eth0`; see [`ArpProber`].
    pub fn arp_prober(&self, host: &str, target: Ipv4Addr) -> ArpProber {
        let h = self.host(host);
        let client_ip =
            h.v4.unwrap_or_else(|| panic!("host {host} has no IPv4 address"));
        let host_mac = mac::parse(&h.mac).unwrap_or_else(|| panic!("{:?} is not a MAC", h.mac));
        let session = std::process::id() as u16 ^ (FABRIC_SEQ.load(Ordering::SeqCst) as u16);
        ArpProber::open(&h.ns, HOST_IF, host_mac, client_ip, target, session)
            .unwrap_or_else(|e| panic!("opening an AF_PACKET socket in {host}: {e}"))
    }
}
