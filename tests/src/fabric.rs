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
//! Either start the speakers with [`SpeakerMode::Generic`], or call
//! [`Fabric::attach_pass_through_ports`] and use native (or auto) mode.
//!
//! In-process tools inside a host ([`Fabric::in_host`] runs a closure on a
//! thread that has entered the host's network namespace): the speaker's
//! `/metrics` ([`Fabric::metrics`], [`Fabric::metric`]), and an ARP prober
//! on an AF_PACKET socket ([`Fabric::arp_prober`]) that tells, for every
//! broadcast request, which MACs answered (a tag in the padding matches
//! replies to requests; see [`ArpProber`]).
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
    fs::{self, File},
    io,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    os::{raw::c_int, unix::process::CommandExt},
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    sync::{
        atomic::{AtomicU32, Ordering},
        Arc, Mutex, MutexGuard,
    },
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

use serde_json::Value;

use crate::netns::{
    self, arping_flavor, normalize_mac, parse_arping, parse_ndisc6, parse_neighbours, require_root,
    require_tools, run, speaker_bin, vip_answered, wait_for, Arping, ArpingFlavor, ArpingReport,
    CmdOutput, Neighbour, COMMAND_TIMEOUT, NETNS_PREFIX, RUN_ROOT,
};

/// The name of every host's interface.
pub const HOST_IF: &str = "eth0";
/// The bridge in the switch namespace.
pub const BRIDGE: &str = "br0";
/// The file name of the cluster description, in [`Fabric::cluster_dir`].
pub const CLUSTER_FILE: &str = "cluster.yaml";

static FABRIC_SEQ: AtomicU32 = AtomicU32::new(0);

extern "C" {
    /// kill(2) and prctl(2), from the C library std links anyway (this crate
    /// has no libc or nix dependency).
    #[link_name = "kill"]
    fn libc_kill(pid: c_int, sig: c_int) -> c_int;
    #[link_name = "prctl"]
    fn libc_prctl(option: c_int, arg2: std::os::raw::c_ulong, ...) -> c_int;
}

const SIGKILL: c_int = 9;
const SIGTERM: c_int = 15;
const PR_SET_PDEATHSIG: c_int = 1;

// ---------------------------------------------------------------------------
// Hosts
// ---------------------------------------------------------------------------

/// A host to create: its name (also the Kubernetes node name speakers get),
/// its addresses (prefixes /24 and /64) and optionally its MAC.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostSpec {
    pub name: String,
    pub v4: Option<Ipv4Addr>,
    pub v6: Option<Ipv6Addr>,
    /// `None`: the kernel picks a random one.
    pub mac: Option<String>,
}

impl HostSpec {
    /// A host without addresses.
    pub fn new(name: &str) -> Self {
        HostSpec {
            name: name.to_owned(),
            v4: None,
            v6: None,
            mac: None,
        }
    }

    /// A host with `192.0.2.<n>` and `2001:db8::<n>` (the same digits, so
    /// `11` gives 192.0.2.11 and 2001:db8::11).
    pub fn numbered(name: &str, n: u8) -> Self {
        assert!((1..=254).contains(&n), "host number {n} is not in 1..=254");
        HostSpec::new(name)
            .v4(&format!("192.0.2.{n}"))
            .v6(&format!("2001:db8::{n}"))
    }

    /// Sets the IPv4 address; it must be in 192.0.2.0/24.
    pub fn v4(mut self, address: &str) -> Self {
        let ip: Ipv4Addr = address
            .parse()
            .unwrap_or_else(|_| panic!("{address:?} is not an IPv4 address"));
        let [a, b, c, d] = ip.octets();
        assert!(
            [a, b, c] == [192, 0, 2] && d != 0 && d != 255,
            "{ip} is not a host address of 192.0.2.0/24 (the lab uses documentation addresses only)"
        );
        self.v4 = Some(ip);
        self
    }

    /// Sets the IPv6 address; it must be in 2001:db8::/64.
    pub fn v6(mut self, address: &str) -> Self {
        let ip: Ipv6Addr = address
            .parse()
            .unwrap_or_else(|_| panic!("{address:?} is not an IPv6 address"));
        assert!(
            ip.segments()[..4] == [0x2001, 0xdb8, 0, 0],
            "{ip} is not in 2001:db8::/64 (the lab uses documentation addresses only)"
        );
        self.v6 = Some(ip);
        self
    }

    /// Sets the MAC of the host's `eth0`.
    pub fn mac(mut self, mac: &str) -> Self {
        self.mac = Some(normalize_mac(mac));
        self
    }
}

/// A created host.
#[derive(Clone, Debug)]
pub struct Host {
    pub name: String,
    /// Its network namespace.
    pub ns: String,
    /// Its interface on the segment: always [`HOST_IF`].
    pub interface: String,
    /// The bridge port its `eth0` is the peer of (in the switch namespace).
    pub port: String,
    /// `eth0`'s MAC, lower case.
    pub mac: String,
    pub v4: Option<Ipv4Addr>,
    pub v6: Option<Ipv6Addr>,
    /// The `--pin-dir` of its speaker commands (inside the lab's bpffs).
    pub pin_dir: PathBuf,
}

// ---------------------------------------------------------------------------
// Speakers
// ---------------------------------------------------------------------------

/// `--mode` of `speaker run`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SpeakerMode {
    Auto,
    Native,
    Generic,
}

impl SpeakerMode {
    pub fn flag(self) -> &'static str {
        match self {
            SpeakerMode::Auto => "auto",
            SpeakerMode::Native => "native",
            SpeakerMode::Generic => "generic",
        }
    }
}

/// Where a speaker reads the cluster from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClusterSource {
    /// `--cluster-state <the fabric's cluster.yaml>`.
    FabricFile,
    /// `--cluster-state PATH`.
    Path(PathBuf),
    /// No `--cluster-state` (pass e.g. `--kubeconfig` in `args`).
    None,
}

/// How to start `speaker run` in a host; see [`Fabric::start_speaker`].
#[derive(Clone, Debug)]
pub struct SpeakerOptions {
    pub source: ClusterSource,
    /// `--mode`; `None`: the speaker's default.
    pub mode: Option<SpeakerMode>,
    /// `--memberlist=<bool>`; `None`: the speaker's default.
    pub memberlist: Option<bool>,
    /// Further arguments, after the ones above.
    pub args: Vec<String>,
    /// `RUST_LOG` (env_logger).
    pub rust_log: String,
    /// Further environment variables.
    pub env: Vec<(String, String)>,
}

impl Default for SpeakerOptions {
    fn default() -> Self {
        SpeakerOptions {
            source: ClusterSource::FabricFile,
            mode: None,
            memberlist: None,
            args: Vec::new(),
            rust_log: "info".to_owned(),
            env: Vec::new(),
        }
    }
}

impl SpeakerOptions {
    /// The fabric's cluster file, membership disabled, in `mode`.
    pub fn file(mode: SpeakerMode) -> Self {
        SpeakerOptions {
            mode: Some(mode),
            memberlist: Some(false),
            ..Default::default()
        }
    }

    pub fn arg(mut self, arg: &str) -> Self {
        self.args.push(arg.to_owned());
        self
    }
}

struct SpeakerInner {
    host: String,
    command: String,
    log_path: PathBuf,
    pid: u32,
    started: Instant,
    child: Mutex<Child>,
    status: Mutex<Option<ExitStatus>>,
}

/// A `speaker run` process in a host (a cheap handle: clones share it). Its
/// stdout and stderr go to [`Speaker::log_path`]. The fabric kills it in its
/// `Drop` if it is still running.
#[derive(Clone)]
pub struct Speaker {
    inner: Arc<SpeakerInner>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Speaker {
    pub fn host(&self) -> &str {
        &self.inner.host
    }

    /// The full command line (`ip netns exec <ns> <speaker> run …`).
    pub fn command(&self) -> &str {
        &self.inner.command
    }

    /// Its process id (`ip netns exec` execs the speaker, so this is the
    /// speaker's own).
    pub fn pid(&self) -> u32 {
        self.inner.pid
    }

    pub fn started(&self) -> Instant {
        self.inner.started
    }

    pub fn log_path(&self) -> &Path {
        &self.inner.log_path
    }

    /// Everything it logged so far.
    pub fn log(&self) -> String {
        fs::read_to_string(&self.inner.log_path).unwrap_or_default()
    }

    /// The length of the log so far, to read only what follows with
    /// [`Speaker::log_from`].
    pub fn log_len(&self) -> usize {
        self.log().len()
    }

    /// The log from byte `offset` on (as returned by [`Speaker::log_len`]).
    pub fn log_from(&self, offset: usize) -> String {
        let log = self.log();
        log.get(offset..).unwrap_or_default().to_owned()
    }

    /// The log lines containing `needle`.
    pub fn log_lines_with(&self, needle: &str) -> Vec<String> {
        self.log()
            .lines()
            .filter(|l| l.contains(needle))
            .map(str::to_owned)
            .collect()
    }

    /// Waits up to `limit` until the log (from byte `offset`) has a line
    /// containing `needle`; returns that line.
    pub fn wait_log_from(&self, offset: usize, needle: &str, limit: Duration) -> Option<String> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(line) = self.log_from(offset).lines().find(|l| l.contains(needle)) {
                return Some(line.to_owned());
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// [`Speaker::wait_log_from`] from the start of the log.
    pub fn wait_log(&self, needle: &str, limit: Duration) -> Option<String> {
        self.wait_log_from(0, needle, limit)
    }

    /// Its exit status, once it has ended.
    pub fn exit_status(&self) -> Option<ExitStatus> {
        let mut status = lock(&self.inner.status);
        if status.is_none() {
            if let Ok(Some(s)) = lock(&self.inner.child).try_wait() {
                *status = Some(s);
            }
        }
        *status
    }

    pub fn is_running(&self) -> bool {
        self.exit_status().is_none()
    }

    fn signal(&self, signal: c_int) {
        // Only while not yet reaped (reaping takes the status lock first):
        // the pid is still ours, at worst a zombie.
        let status = lock(&self.inner.status);
        if status.is_none() {
            // SAFETY: plain syscall on our own child's pid.
            unsafe { libc_kill(self.inner.pid as c_int, signal) };
        }
    }

    /// Waits up to `limit` for it to end.
    pub fn wait(&self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.exit_status() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Sends SIGTERM and waits up to `limit` for it to exit; `None` if it is
    /// still running then.
    pub fn terminate(&self, limit: Duration) -> Option<ExitStatus> {
        if self.is_running() {
            self.signal(SIGTERM);
        }
        self.wait(limit)
    }

    /// SIGKILL, and waits for it.
    pub fn kill(&self) -> ExitStatus {
        if self.is_running() {
            self.signal(SIGKILL);
        }
        self.wait(Duration::from_secs(30)).unwrap_or_else(|| {
            panic!(
                "speaker {} (pid {}) survived SIGKILL",
                self.host(),
                self.pid()
            )
        })
    }
}

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
    mounted: bool,
    spawned: AtomicU32,
}

impl Fabric {
    /// Builds the switch and one host per spec (no XDP program, no speaker).
    /// Panics if anything fails, after removing what was already created.
    pub fn new(specs: &[HostSpec]) -> Fabric {
        require_root();
        require_tools();
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
            mounted: false,
            spawned: AtomicU32::new(0),
        };
        // A leftover of an earlier process that had our pid: remove it.
        fabric.remove_everything();

        // From here on, Drop cleans up whatever exists.
        for dir in [&fabric.bpffs, &fabric.cluster_dir, &fabric.log_dir] {
            create_dir_all(dir);
        }
        must(
            "mount",
            &["-t", "bpf", "bpf", &fabric.bpffs.to_string_lossy()],
        );
        fabric.mounted = true;

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
        must("ip", &["netns", "add", ns]);
        self.namespaces.push(ns.to_owned());
        must("ip", &["-n", ns, "link", "set", "lo", "up"]);
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
        if let Some(v4) = spec.v4 {
            must(
                "ip",
                &[
                    "-n",
                    &ns,
                    "addr",
                    "add",
                    &format!("{v4}/24"),
                    "dev",
                    HOST_IF,
                ],
            );
        }
        if let Some(v6) = spec.v6 {
            // nodad: usable at once, and no DAD traffic.
            must(
                "ip",
                &[
                    "-n",
                    &ns,
                    "addr",
                    "add",
                    &format!("{v6}/64"),
                    "dev",
                    HOST_IF,
                    "nodad",
                ],
            );
        }
        must("ip", &["-n", &ns, "link", "set", HOST_IF, "up"]);
        let out = must("ip", &["-n", &ns, "-j", "link", "show", "dev", HOST_IF]);
        let link: Value = serde_json::from_str(&out.stdout).unwrap_or(Value::Null);
        let mac = link[0]["address"]
            .as_str()
            .map(normalize_mac)
            .unwrap_or_else(|| panic!("no MAC on {HOST_IF} in {ns}:\n{out}"));
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
        let mac = normalize_mac(mac);
        self.hosts
            .iter()
            .find(|h| h.mac == mac)
            .map(|h| h.name.as_str())
    }

    // ----------------------------------------------------------- commands

    fn exec_args(ns: &str, program: &str, args: &[&str]) -> Vec<String> {
        let mut all = vec!["netns".to_owned(), "exec".to_owned(), ns.to_owned()];
        all.push(program.to_owned());
        all.extend(args.iter().map(|s| s.to_string()));
        all
    }

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
        run_in(&ns, program, args, timeout)
    }

    /// Runs `program args` in the switch namespace.
    pub fn exec_switch(&self, program: &str, args: &[&str]) -> CmdOutput {
        run_in(&self.switch_ns, program, args, COMMAND_TIMEOUT)
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
            run_in(&ns, &program, &args, timeout)
        })
    }

    /// Runs `speaker args --pin-dir <host's pin dir>` in host `host`.
    pub fn speaker_cmd(&self, host: &str, args: &[&str]) -> CmdOutput {
        let pin_dir = self.host(host).pin_dir.to_string_lossy().into_owned();
        let bin = self.speaker.to_string_lossy().into_owned();
        let mut all: Vec<&str> = args.to_vec();
        all.extend(["--pin-dir", &pin_dir]);
        self.exec(host, &bin, &all)
    }

    /// Runs `speaker args` in the test's own namespace, adding nothing (for
    /// commands that touch no network, like `speaker election`).
    pub fn speaker_local(&self, args: &[&str]) -> CmdOutput {
        run(&self.speaker.to_string_lossy(), args, COMMAND_TIMEOUT)
    }

    /// `speaker election --cluster-state <the fabric's file> --json`, parsed
    /// (membership disabled, as `--memberlist=false`); panics if it fails.
    pub fn election_json(&self) -> Value {
        let path = self.cluster_state_path().to_string_lossy().into_owned();
        let out = self.speaker_local(&["election", "--cluster-state", &path, "--json"]);
        assert!(out.success(), "speaker election failed:\n{out}");
        serde_json::from_str(&out.stdout).unwrap_or_else(|e| {
            panic!("speaker election --json printed invalid JSON ({e}):\n{out}")
        })
    }

    /// `speaker maps --json` in host `host`, parsed; panics if it fails.
    pub fn maps_json(&self, host: &str) -> Value {
        let out = self.speaker_cmd(host, &["maps", "--json"]);
        assert!(
            out.success(),
            "speaker maps --json failed in {host}:\n{out}"
        );
        serde_json::from_str(&out.stdout).unwrap_or_else(|e| {
            panic!("speaker maps --json printed invalid JSON in {host} ({e}):\n{out}")
        })
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
        let bin = self.speaker.to_string_lossy().into_owned();
        let pin_dir = self.switch_pin_dir.to_string_lossy().into_owned();
        for host in &self.hosts {
            let out = run_in(
                &self.switch_ns,
                &bin,
                &[
                    "xdp",
                    "attach",
                    "--interface",
                    &host.port,
                    "--mode",
                    "native",
                    "--pass-through",
                    "--pin-dir",
                    &pin_dir,
                ],
                COMMAND_TIMEOUT,
            );
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
        let args = arping.args();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let limit = Duration::from_secs(u64::from(arping.deadline) + 30);
        let out = self.exec_timeout(host, "arping", &args, limit);
        let report = parse_arping(&out.stdout);
        (out, report)
    }

    /// [`Fabric::arping`] with every request broadcast: iputils-arping
    /// otherwise unicasts its requests to the first MAC that replied, so a
    /// second responder would see only the first request (`-b`); Habets'
    /// arping broadcasts by default.
    pub fn arping_broadcast(&self, host: &str, arping: &Arping) -> (CmdOutput, ArpingReport) {
        let mut args = arping.args();
        if arping_flavor() == ArpingFlavor::Iputils {
            args.insert(0, "-b".to_owned());
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let limit = Duration::from_secs(u64::from(arping.deadline) + 30);
        let out = self.exec_timeout(host, "arping", &args, limit);
        let report = parse_arping(&out.stdout);
        (out, report)
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
        let mut entries = parse_neighbours(&out.stdout);
        for e in &mut entries {
            e.dev.get_or_insert_with(|| HOST_IF.to_owned());
        }
        entries
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
        let mac = normalize_mac(mac);
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
        let log_path = self.log_dir.join(format!("{n:02}-{}.log", h.name));
        let mut args: Vec<String> = vec![
            "netns".into(),
            "exec".into(),
            h.ns.clone(),
            self.speaker.to_string_lossy().into_owned(),
            "run".into(),
            "--node-name".into(),
            h.name.clone(),
        ];
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

        let log = File::create(&log_path)
            .unwrap_or_else(|e| panic!("creating {}: {e}", log_path.display()));
        let log_err = log.try_clone().expect("duplicating the log descriptor");
        let mut command = Command::new("ip");
        command
            .args(&args)
            .env("RUST_LOG", &options.rust_log)
            .env("RUST_LOG_STYLE", "never")
            .envs(options.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err);
        // SAFETY: prctl is async-signal-safe; nothing else runs in the child
        // before exec.
        unsafe {
            command.pre_exec(|| {
                if libc_prctl(PR_SET_PDEATHSIG, SIGKILL as std::os::raw::c_ulong) != 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let display = display_command("ip", &args);
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start `{display}`: {e}"));
        let speaker = Speaker {
            inner: Arc::new(SpeakerInner {
                host: h.name.clone(),
                command: display,
                log_path,
                pid: child.id(),
                started: Instant::now(),
                child: Mutex::new(child),
                status: Mutex::new(None),
            }),
        };
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

    /// Shortens a command line for printing: the speaker's path becomes
    /// `speaker`.
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

    pub fn pretty(&self, command: &str) -> String {
        command.replace(&*self.speaker.to_string_lossy(), "speaker")
    }

    // ----------------------------------------------------------- teardown

    fn remove_everything(&mut self) {
        // 1. Our speakers.
        for s in self.speakers() {
            if s.is_running() {
                s.signal(SIGKILL);
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
            kill_namespace_processes(ns);
        }
        // 3. The namespaces: veths, bridge and XDP links go with them.
        for ns in &namespaces {
            let _ = run("ip", &["netns", "del", ns], Duration::from_secs(30));
        }
        // 4. The bpffs and the directory.
        remove_fabric_dir(&self.run_dir);
        self.mounted = false;
    }
}

impl Drop for Fabric {
    fn drop(&mut self) {
        // Never panic here: this also runs while a failed test unwinds.
        self.remove_everything();
    }
}

// ---------------------------------------------------------------------------
// In-process tools inside a host's namespace: metrics over HTTP, an ARP
// prober on an AF_PACKET socket
// ---------------------------------------------------------------------------

/// `setns(2)` flag for a network namespace.
const CLONE_NEWNET: c_int = 0x4000_0000;
const AF_PACKET: c_int = 17;
const SOCK_RAW: c_int = 3;
const SOCK_CLOEXEC: c_int = 0o2_000_000;
const ETH_P_ARP: u16 = 0x0806;
const POLLIN: i16 = 1;
/// `sockaddr_ll.sll_pkttype` of a frame this host sent itself.
const PACKET_OUTGOING: u8 = 4;

/// `struct sockaddr_ll`.
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct SockaddrLl {
    family: u16,
    protocol: u16,
    ifindex: c_int,
    hatype: u16,
    pkttype: u8,
    halen: u8,
    addr: [u8; 8],
}

/// `struct pollfd`.
#[repr(C)]
struct PollFd {
    fd: c_int,
    events: i16,
    revents: i16,
}

extern "C" {
    #[link_name = "setns"]
    fn libc_setns(fd: c_int, nstype: c_int) -> c_int;
    #[link_name = "socket"]
    fn libc_socket(domain: c_int, ty: c_int, protocol: c_int) -> c_int;
    #[link_name = "bind"]
    fn libc_bind(fd: c_int, address: *const SockaddrLl, len: u32) -> c_int;
    #[link_name = "send"]
    fn libc_send(fd: c_int, buf: *const std::ffi::c_void, len: usize, flags: c_int) -> isize;
    #[link_name = "recvfrom"]
    fn libc_recvfrom(
        fd: c_int,
        buf: *mut std::ffi::c_void,
        len: usize,
        flags: c_int,
        address: *mut SockaddrLl,
        len: *mut u32,
    ) -> isize;
    #[link_name = "poll"]
    fn libc_poll(fds: *mut PollFd, nfds: std::os::raw::c_ulong, timeout: c_int) -> c_int;
    #[link_name = "if_nametoindex"]
    fn libc_if_nametoindex(name: *const std::os::raw::c_char) -> u32;
}

/// Parses a `aa:bb:cc:dd:ee:ff` MAC.
fn mac_bytes(mac: &str) -> [u8; 6] {
    let mut out = [0u8; 6];
    let parts: Vec<&str> = mac.split(':').collect();
    assert_eq!(parts.len(), 6, "{mac:?} is not a MAC");
    for (o, p) in out.iter_mut().zip(parts) {
        *o = u8::from_str_radix(p, 16).unwrap_or_else(|_| panic!("{mac:?} is not a MAC"));
    }
    out
}

fn mac_text(mac: [u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// The value of Prometheus metric `name` in `text` (the exposition format):
/// the sum over every line of that metric (all label sets); `None` if it
/// has no line.
pub fn metric_value(text: &str, name: &str) -> Option<f64> {
    let mut found = None;
    for line in text.lines() {
        if line.starts_with('#') {
            continue;
        }
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        if !(rest.starts_with(' ') || rest.starts_with('{')) {
            continue;
        }
        let value = rest.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok());
        if let Some(v) = value {
            *found.get_or_insert(0.0) += v;
        }
    }
    found
}

impl Fabric {
    /// Runs `f` on a fresh thread that has entered host `host`'s network
    /// namespace (only that thread: sockets it opens belong to the host and
    /// stay usable from any thread afterwards).
    pub fn in_host<T: Send>(&self, host: &str, f: impl FnOnce() -> T + Send) -> T {
        let ns = self.host(host).ns.clone();
        thread::scope(|scope| {
            scope
                .spawn(move || {
                    let path = Path::new("/run/netns").join(&ns);
                    let file =
                        File::open(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                    use std::os::fd::AsRawFd;
                    // SAFETY: plain syscall on a descriptor we hold.
                    if unsafe { libc_setns(file.as_raw_fd(), CLONE_NEWNET) } != 0 {
                        panic!("setns into {ns}: {}", io::Error::last_os_error());
                    }
                    f()
                })
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    }

    /// `GET path` from `127.0.0.1:port` inside host `host` (HTTP/1.1,
    /// `Connection: close`); the status code and the body.
    pub fn http_get(&self, host: &str, port: u16, path: &str) -> io::Result<(u16, String)> {
        use std::io::{Read, Write};
        let request =
            format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
        self.in_host(host, move || {
            let address = std::net::SocketAddr::from(([127, 0, 0, 1], port));
            let mut stream =
                std::net::TcpStream::connect_timeout(&address, Duration::from_secs(2))?;
            stream.set_read_timeout(Some(Duration::from_secs(5)))?;
            stream.set_write_timeout(Some(Duration::from_secs(5)))?;
            stream.write_all(request.as_bytes())?;
            let mut response = Vec::new();
            stream.read_to_end(&mut response)?;
            let response = String::from_utf8_lossy(&response).into_owned();
            let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
            let code = head
                .split_whitespace()
                .nth(1)
                .and_then(|c| c.parse().ok())
                .ok_or_else(|| {
                    io::Error::new(io::ErrorKind::InvalidData, format!("no status: {head:?}"))
                })?;
            Ok((code, body.to_owned()))
        })
    }

    /// The speaker's `/metrics` in host `host` (MetalLB's port 7472).
    pub fn metrics(&self, host: &str) -> io::Result<String> {
        let (code, body) = self.http_get(host, 7472, "/metrics")?;
        if code != 200 {
            return Err(io::Error::other(format!("/metrics answered {code}")));
        }
        Ok(body)
    }

    /// One metric of the speaker in host `host` ([`metric_value`]); `None`
    /// if the speaker cannot be reached or does not export it.
    pub fn metric(&self, host: &str, name: &str) -> Option<f64> {
        self.metrics(host)
            .ok()
            .and_then(|text| metric_value(&text, name))
    }

    /// An ARP prober in host `host` (which must have an IPv4 address) asking
    /// for `target` on its `eth0`; see [`ArpProber`].
    pub fn arp_prober(&self, host: &str, target: Ipv4Addr) -> ArpProber {
        let h = self.host(host).clone();
        let client_ip =
            h.v4.unwrap_or_else(|| panic!("host {host} has no IPv4 address"));
        let fd = self
            .in_host(host, || -> io::Result<std::os::fd::OwnedFd> {
                use std::os::fd::FromRawFd;
                let name = std::ffi::CString::new(HOST_IF).expect("no NUL in the name");
                // SAFETY: a valid C string.
                let ifindex = unsafe { libc_if_nametoindex(name.as_ptr()) };
                if ifindex == 0 {
                    return Err(io::Error::last_os_error());
                }
                let protocol = ETH_P_ARP.to_be();
                // SAFETY: plain syscall.
                let raw = unsafe {
                    libc_socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC, c_int::from(protocol))
                };
                if raw < 0 {
                    return Err(io::Error::last_os_error());
                }
                // SAFETY: a fresh descriptor nobody else owns.
                let fd = unsafe { std::os::fd::OwnedFd::from_raw_fd(raw) };
                let address = SockaddrLl {
                    family: AF_PACKET as u16,
                    protocol,
                    ifindex: ifindex as c_int,
                    ..Default::default()
                };
                use std::os::fd::AsRawFd;
                // SAFETY: a valid sockaddr_ll of the size passed.
                let ret = unsafe {
                    libc_bind(
                        fd.as_raw_fd(),
                        &address,
                        std::mem::size_of::<SockaddrLl>() as u32,
                    )
                };
                if ret != 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(fd)
            })
            .unwrap_or_else(|e| panic!("opening an AF_PACKET socket in {host}: {e}"));
        ArpProber {
            fd,
            mac: mac_bytes(&h.mac),
            ip: client_ip,
            target,
            seq: 0,
            session: std::process::id() as u16 ^ (FABRIC_SEQ.load(Ordering::SeqCst) as u16),
        }
    }
}

/// One ARP request an [`ArpProber`] sent and what answered it.
#[derive(Clone, Debug)]
pub struct ArpProbe {
    /// Its number in the prober's sequence (from 1).
    pub seq: u64,
    pub sent: Instant,
    /// Every reply to it: the replier's MAC (sender hardware address, lower
    /// case) and when it arrived, in arrival order.
    pub answers: Vec<(String, Instant)>,
}

impl ArpProbe {
    /// The distinct MACs that answered.
    pub fn macs(&self) -> std::collections::BTreeSet<String> {
        self.answers.iter().map(|(m, _)| m.clone()).collect()
    }

    /// When `mac` first answered, if it did.
    pub fn answered_by(&self, mac: &str) -> Option<Instant> {
        self.answers.iter().find(|(m, _)| m == mac).map(|(_, t)| *t)
    }
}

/// A gratuitous ARP (sender IP = target IP = the probed address) the
/// prober saw: who sent it and when.
#[derive(Clone, Debug)]
pub struct GratuitousArp {
    pub mac: String,
    pub at: Instant,
}

/// What a running [`ArpProber::spawn`] series has seen so far.
#[derive(Clone, Debug, Default)]
pub struct ArpSeries {
    pub probes: Vec<ArpProbe>,
    pub gratuitous: Vec<GratuitousArp>,
}

/// Broadcast ARP requests for one address from a host's `eth0`, on an
/// AF_PACKET socket opened in that host's namespace, with every reply
/// matched to its request exactly: each request carries a tag in its
/// Ethernet padding (the responder keeps the padding in its reply), so a
/// late reply is never counted for the wrong request. Replies without the
/// tag (a kernel would drop it) go to the newest request. The host's kernel
/// still sees the replies (they are not consumed) but does not act on them:
/// it sent no request itself.
pub struct ArpProber {
    fd: std::os::fd::OwnedFd,
    mac: [u8; 6],
    ip: Ipv4Addr,
    target: Ipv4Addr,
    seq: u64,
    session: u16,
}

const PROBE_MAGIC: [u8; 2] = *b"xs";

impl ArpProber {
    fn request(&self, seq: u64) -> Vec<u8> {
        let mut frame = crate::frames::arp_request(self.mac, self.ip, self.target);
        frame.resize(60, 0);
        frame[42..44].copy_from_slice(&PROBE_MAGIC);
        frame[44..46].copy_from_slice(&self.session.to_be_bytes());
        frame[46..54].copy_from_slice(&seq.to_be_bytes());
        frame
    }

    fn send_next(&mut self) -> io::Result<u64> {
        use std::os::fd::AsRawFd;
        self.seq += 1;
        let frame = self.request(self.seq);
        // SAFETY: a valid buffer of the length passed.
        let sent = unsafe { libc_send(self.fd.as_raw_fd(), frame.as_ptr().cast(), frame.len(), 0) };
        if sent < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(self.seq)
    }

    /// Waits until `deadline` for frames; each reply for the target is
    /// handed to `on_reply(tag, mac, at)`, each gratuitous ARP for it to
    /// `on_gratuitous(mac, at)`.
    fn receive_until(
        &self,
        deadline: Instant,
        mut on_reply: impl FnMut(Option<u64>, String, Instant),
        mut on_gratuitous: impl FnMut(String, Instant),
    ) {
        use std::os::fd::AsRawFd;
        let mut buf = [0u8; 2048];
        loop {
            let now = Instant::now();
            if now >= deadline {
                return;
            }
            let left = deadline - now;
            let mut pfd = PollFd {
                fd: self.fd.as_raw_fd(),
                events: POLLIN,
                revents: 0,
            };
            let ms = left.as_micros().div_ceil(1000).min(c_int::MAX as u128) as c_int;
            // SAFETY: one valid pollfd.
            let ready = unsafe { libc_poll(&mut pfd, 1, ms) };
            if ready <= 0 {
                continue;
            }
            let mut from = SockaddrLl::default();
            let mut from_len = std::mem::size_of::<SockaddrLl>() as u32;
            // SAFETY: valid buffers of the lengths passed.
            let n = unsafe {
                libc_recvfrom(
                    self.fd.as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    0,
                    &mut from,
                    &mut from_len,
                )
            };
            let at = Instant::now();
            if n <= 0 || from.pkttype == PACKET_OUTGOING {
                continue;
            }
            let frame = &buf[..n as usize];
            let Ok(reply) = crate::frames::parse_arp_reply(frame) else {
                // Gratuitous ARP requests (sender = target = the address).
                if let Ok(request) = parse_arp_request(frame) {
                    if request.0 == self.target && request.1 == self.target {
                        on_gratuitous(mac_text(request.2), at);
                    }
                }
                continue;
            };
            if reply.spa != self.target {
                continue;
            }
            if reply.tpa == self.target {
                on_gratuitous(mac_text(reply.sha), at);
                continue;
            }
            if reply.tpa != self.ip || reply.tha != self.mac || reply.eth_dst != self.mac {
                continue;
            }
            let tag = (frame.len() >= 54
                && frame[42..44] == PROBE_MAGIC
                && frame[44..46] == self.session.to_be_bytes())
            .then(|| {
                let mut seq = [0u8; 8];
                seq.copy_from_slice(&frame[46..54]);
                u64::from_be_bytes(seq)
            });
            on_reply(tag, mac_text(reply.sha), at);
        }
    }

    /// Sends one request and collects the replies for `window`.
    pub fn probe(&mut self, window: Duration) -> io::Result<ArpProbe> {
        let sent = Instant::now();
        let seq = self.send_next()?;
        let mut probe = ArpProbe {
            seq,
            sent,
            answers: Vec::new(),
        };
        self.receive_until(
            sent + window,
            |tag, mac, at| {
                if tag.is_none_or(|t| t == seq) {
                    probe.answers.push((mac, at));
                }
            },
            |_, _| {},
        );
        Ok(probe)
    }

    /// `count` requests, one every `interval`.
    pub fn series(&mut self, count: usize, interval: Duration) -> io::Result<Vec<ArpProbe>> {
        (0..count).map(|_| self.probe(interval)).collect()
    }

    /// Sends a request every `interval` on a thread of its own until the
    /// handle is stopped; what it has seen is readable at any time.
    pub fn spawn(mut self, interval: Duration) -> ArpProbing {
        let shared = Arc::new(Mutex::new(ArpSeries::default()));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let thread = {
            let shared = shared.clone();
            let stop = stop.clone();
            thread::spawn(move || {
                let mut next = Instant::now();
                while !stop.load(Ordering::SeqCst) {
                    let sent = Instant::now();
                    let seq = match self.send_next() {
                        Ok(seq) => seq,
                        Err(e) => return Err(e),
                    };
                    lock(&shared).probes.push(ArpProbe {
                        seq,
                        sent,
                        answers: Vec::new(),
                    });
                    next += interval;
                    if next < Instant::now() {
                        // Fell behind (a stalled thread): no burst to catch up.
                        next = Instant::now() + interval;
                    }
                    self.receive_until(
                        next,
                        |tag, mac, at| {
                            let mut series = lock(&shared);
                            let probe = match tag {
                                Some(t) => series.probes.iter_mut().rev().find(|p| p.seq == t),
                                None => series.probes.last_mut(),
                            };
                            if let Some(p) = probe {
                                p.answers.push((mac, at));
                            }
                        },
                        |mac, at| lock(&shared).gratuitous.push(GratuitousArp { mac, at }),
                    );
                }
                Ok(())
            })
        };
        ArpProbing {
            shared,
            stop,
            thread: Some(thread),
            interval,
        }
    }
}

/// `(sender IP, target IP, sender MAC)` of an Ethernet/IPv4 ARP request.
fn parse_arp_request(frame: &[u8]) -> Result<(Ipv4Addr, Ipv4Addr, [u8; 6]), ()> {
    if frame.len() < 42
        || frame[12..14] != [0x08, 0x06]
        || frame[14..22] != [0, 1, 8, 0, 6, 4, 0, 1]
    {
        return Err(());
    }
    let ip = |o: usize| Ipv4Addr::new(frame[o], frame[o + 1], frame[o + 2], frame[o + 3]);
    let mut sha = [0u8; 6];
    sha.copy_from_slice(&frame[22..28]);
    Ok((ip(28), ip(38), sha))
}

/// A running [`ArpProber::spawn`]: requests go out every `interval` until
/// [`ArpProbing::stop`] (or drop).
pub struct ArpProbing {
    shared: Arc<Mutex<ArpSeries>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: Option<JoinHandle<io::Result<()>>>,
    interval: Duration,
}

impl ArpProbing {
    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// What it has seen so far (the newest request may still get answers).
    pub fn snapshot(&self) -> ArpSeries {
        lock(&self.shared).clone()
    }

    /// Waits up to `limit` for a reply from `mac` to a request sent at or
    /// after `since`; that probe and the reply's arrival time.
    pub fn wait_answer_from(
        &self,
        mac: &str,
        since: Instant,
        limit: Duration,
    ) -> Option<(ArpProbe, Instant)> {
        let deadline = Instant::now() + limit;
        loop {
            let found = lock(&self.shared)
                .probes
                .iter()
                .filter(|p| p.sent >= since)
                .find_map(|p| p.answered_by(mac).map(|at| (p.clone(), at)));
            if found.is_some() {
                return found;
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(5));
        }
    }

    /// Stops sending, waits one more interval for late replies, and returns
    /// everything seen. Panics if the socket failed.
    pub fn stop(mut self) -> ArpSeries {
        self.finish()
    }

    fn finish(&mut self) -> ArpSeries {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            match thread.join() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => panic!("the ARP prober failed: {e}"),
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
        lock(&self.shared).clone()
    }
}

impl Drop for ArpProbing {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

fn run_in(ns: &str, program: &str, args: &[&str], timeout: Duration) -> CmdOutput {
    let all = Fabric::exec_args(ns, program, args);
    let all: Vec<&str> = all.iter().map(String::as_str).collect();
    run("ip", &all, timeout)
}

/// `fs::create_dir_all`, retried: a lab ending meanwhile (in this process or
/// another) removes [`RUN_ROOT`] when it finds it empty, which can happen
/// between the creation of `RUN_ROOT` and that of its subdirectory.
fn create_dir_all(dir: &Path) {
    let mut attempts = 0;
    loop {
        match fs::create_dir_all(dir) {
            Ok(()) => return,
            Err(e) if e.kind() == io::ErrorKind::NotFound && attempts < 20 => {
                attempts += 1;
                thread::sleep(Duration::from_millis(10));
            }
            Err(e) => panic!("creating {}: {e}", dir.display()),
        }
    }
}

/// Runs a setup command that must succeed.
fn must(program: &str, args: &[&str]) -> CmdOutput {
    let out = run(program, args, COMMAND_TIMEOUT);
    assert!(out.success(), "fabric setup failed:\n{out}");
    out
}

fn display_command(program: &str, args: &[String]) -> String {
    let mut parts = vec![program.to_owned()];
    parts.extend(args.iter().map(|a| {
        if a.is_empty() || a.contains(char::is_whitespace) {
            format!("'{a}'")
        } else {
            a.clone()
        }
    }));
    parts.join(" ")
}

fn same_ip(a: &str, b: &str) -> bool {
    match (a.parse::<IpAddr>(), b.parse::<IpAddr>()) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}

/// The VIP addresses of a `speaker maps --json` document (one per VIP, even
/// when it is on several interfaces).
pub fn vip_addresses(maps: &Value) -> Vec<String> {
    let mut out: Vec<String> = maps["vips"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v["address"].as_str().map(str::to_owned))
        .collect();
    out.dedup();
    out
}

/// Kills (SIGKILL, by id) every process in network namespace `ns`.
fn kill_namespace_processes(ns: &str) {
    let out = run("ip", &["netns", "pids", ns], Duration::from_secs(30));
    for pid in out.stdout.split_whitespace() {
        if let Ok(pid) = pid.parse::<c_int>() {
            if pid > 1 && pid as u32 != std::process::id() {
                // SAFETY: plain syscall.
                unsafe { libc_kill(pid, SIGKILL) };
            }
        }
    }
    if !out.stdout.trim().is_empty() {
        // Let them go before their namespace does.
        let _ = wait_for(Duration::from_secs(5), || {
            let again = run("ip", &["netns", "pids", ns], Duration::from_secs(30));
            again.stdout.trim().is_empty().then_some(())
        });
    }
}

fn is_mount_point(path: &Path) -> bool {
    let Ok(mounts) = fs::read_to_string("/proc/self/mounts") else {
        return false;
    };
    let wanted = path.to_string_lossy();
    mounts
        .lines()
        .any(|l| l.split_whitespace().nth(1) == Some(wanted.as_ref()))
}

/// Unmounts `dir/bpffs` and removes `dir` with everything in it (never
/// while anything is still mounted below it).
fn remove_fabric_dir(dir: &Path) {
    let bpffs = dir.join("bpffs");
    if is_mount_point(&bpffs) {
        let path = bpffs.to_string_lossy().into_owned();
        let out = run("umount", &[&path], Duration::from_secs(30));
        if !out.success() {
            let _ = run("umount", &["-l", &path], Duration::from_secs(30));
        }
    }
    if is_mount_point(&bpffs) {
        eprintln!("warning: {} is still mounted", bpffs.display());
        return;
    }
    if dir.exists() {
        let _ = fs::remove_dir_all(dir);
    }
    // RUN_ROOT itself stays (an empty directory in /run): removing it while
    // a parallel lab is creating its directory under it makes that lab fail.
}

/// Removes what labs of dead processes left behind: their namespaces (both
/// kinds of lab) and their directories under [`RUN_ROOT`].
pub fn reap_stale() {
    let me = std::process::id();
    let stale = |pid: u32| pid != me && !Path::new("/proc").join(pid.to_string()).exists();
    // Processes such fabrics left in their namespaces (speakers die with
    // their parent; other background commands may not), before the
    // namespaces go.
    if let Ok(entries) = fs::read_dir("/run/netns") {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            // Only fabrics' namespaces: xdpspk-<pid>-f<seq>-<host>.
            let mut parts = name.strip_prefix(NETNS_PREFIX).unwrap_or("").split('-');
            let owner = parts.next().and_then(|pid| pid.parse::<u32>().ok());
            let fabric = parts.next().is_some_and(|seq| seq.starts_with('f'));
            if fabric && owner.is_some_and(stale) {
                kill_namespace_processes(&name);
            }
        }
    }
    netns::reap_stale();
    let Ok(entries) = fs::read_dir(RUN_ROOT) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some((pid, rest)) = name.split_once('-') else {
            continue;
        };
        let Ok(pid) = pid.parse::<u32>() else {
            continue;
        };
        if rest.starts_with('f') && stale(pid) {
            remove_fabric_dir(&entry.path());
        }
    }
}

/// A cluster for the multi-node labs: `nodes` with InternalIPs 192.0.2.11,
/// .12, …, a pool (192.0.2.100-110, 2001:db8::100/124) and an advertisement
/// for everything, the Service `default/web` with `ingress` and
/// `externalTrafficPolicy: policy`, and one ready endpoint on `endpoint_node`.
pub fn lab_cluster_yaml(
    nodes: &[&str],
    ingress: &[&str],
    policy: &str,
    endpoint_node: &str,
) -> String {
    let mut yaml = String::new();
    for (i, node) in nodes.iter().enumerate() {
        yaml.push_str(&format!(
            "apiVersion: v1\nkind: Node\nmetadata:\n  name: {node}\nstatus:\n  addresses:\n    \
             - type: InternalIP\n      address: 192.0.2.{}\n  conditions:\n    - type: Ready\n      \
             status: \"True\"\n---\n",
            11 + i
        ));
    }
    let ingress: String = ingress
        .iter()
        .map(|ip| format!("      - ip: {ip}\n"))
        .collect();
    let ingress = ingress.trim_end();
    yaml.push_str(&format!(
        r#"apiVersion: metallb.io/v1beta1
kind: IPAddressPool
metadata:
  name: lab
  namespace: metallb-system
spec:
  addresses:
    - 192.0.2.100-192.0.2.110
    - 2001:db8::100/124
---
apiVersion: metallb.io/v1beta1
kind: L2Advertisement
metadata:
  name: lab
  namespace: metallb-system
---
apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: default
spec:
  type: LoadBalancer
  externalTrafficPolicy: {policy}
  selector:
    app: web
  ports:
    - port: 80
      targetPort: 8080
status:
  loadBalancer:
    ingress:
{ingress}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: web-abcde
  namespace: default
  labels:
    kubernetes.io/service-name: web
addressType: IPv4
endpoints:
  - addresses: ["10.244.1.7"]
    nodeName: {endpoint_node}
    conditions:
      ready: true
ports:
  - port: 8080
"#
    ));
    yaml
}
