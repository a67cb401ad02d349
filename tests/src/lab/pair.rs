//! Two namespaces joined by a veth pair, for end-to-end tests of the
//! speaker CLI and its XDP responder.
//!
//! [`Lab::new`] builds:
//!
//! ```text
//!   node   (xdpspk-<pid>-<seq>-node)              client (xdpspk-<pid>-<seq>-client)
//!   xn<pid>_<seq>  192.0.2.1/24 2001:db8::1/64 ── xc<pid>_<seq>  192.0.2.10/24 2001:db8::10/64
//! ```
//!
//! plus a private bpffs mounted at `/run/xdp-speaker-tests/<pid>-<seq>/bpffs`
//! (see [`super::netns`]), with the node's pin directory (`bpffs/node`,
//! every node-side `speaker` command's `--pin-dir`) apart from the client's
//! (`bpffs/client`). The VIPs ([`VIP_V4`], [`VIP_V6`]) are never configured
//! as addresses: only the XDP responder may answer for them.
//!
//! Everything is removed in `Drop` (namespaces, which takes the veth pair and
//! the XDP links with them, then the bpffs and the directories), also while a
//! failing test unwinds. Leftovers of killed runs (their process id no longer
//! exists) are removed when the next lab starts ([`super::reap_stale`]).

use std::{
    path::{Path, PathBuf},
    sync::atomic::{AtomicU32, Ordering},
    time::Duration,
};

use serde_json::Value;

use super::{
    arping::{number_after, Arping, ArpingReport, ArpingRun},
    command::{must, Background, CmdOutput, Spawn, COMMAND_TIMEOUT},
    maps::parse_maps,
    neighbour::{parse_ndisc6, parse_neighbours, same_ip, Neighbour},
    netns::{self, reap_stale, NETNS_PREFIX, RUN_ROOT},
    require_root,
    speaker::speaker_bin,
    tools::require_lab_tools,
    wait_for,
};

pub const NODE_V4: &str = "192.0.2.1";
pub const NODE_V6: &str = "2001:db8::1";
pub const CLIENT_V4: &str = "192.0.2.10";
pub const CLIENT_V6: &str = "2001:db8::10";
/// The VIPs the responder answers for (never configured as addresses).
pub const VIP_V4: &str = "192.0.2.100";
pub const VIP_V6: &str = "2001:db8::100";
/// Addresses nobody owns: requests for them must go unanswered.
pub const NOT_OWNED_V4: &str = "192.0.2.101";
pub const NOT_OWNED_V6: &str = "2001:db8::101";

static LAB_SEQ: AtomicU32 = AtomicU32::new(0);

/// How the node's responder is attached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum XdpMode {
    /// `--mode native`; the client's veth gets `--pass-through` so that the
    /// responder's XDP_TX frames are delivered.
    Native,
    /// `--mode generic`; no pass-through program needed.
    Generic,
}

impl XdpMode {
    pub fn flag(self) -> &'static str {
        match self {
            XdpMode::Native => "native",
            XdpMode::Generic => "generic",
        }
    }
}

/// Which side of the veth pair.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    Node,
    Client,
}

/// Two namespaces, a veth pair, a private bpffs. See the module docs.
pub struct Lab {
    pub id: String,
    pub node_ns: String,
    pub client_ns: String,
    pub node_if: String,
    pub client_if: String,
    /// The node veth's MAC, lower case.
    pub node_mac: String,
    pub client_mac: String,
    /// The lab's directory under /run.
    pub run_dir: PathBuf,
    /// The bpffs mount point.
    pub bpffs: PathBuf,
    /// The `--pin-dir` of the node's speaker commands (inside the bpffs).
    pub pin_dir: PathBuf,
    /// The `--pin-dir` of the client's (its pass-through program): apart
    /// from the node's, as on two machines.
    pub client_pin_dir: PathBuf,
    pub speaker: PathBuf,
    namespaces: Vec<String>,
}

impl Lab {
    /// Builds the topology (no XDP program yet). Panics if anything fails,
    /// after removing what was already created.
    pub fn new() -> Lab {
        require_root();
        require_lab_tools();
        let speaker = speaker_bin();
        reap_stale();

        let pid = std::process::id();
        let seq = LAB_SEQ.fetch_add(1, Ordering::SeqCst);
        let id = format!("{pid}-{seq}");
        let run_dir = Path::new(RUN_ROOT).join(&id);
        let bpffs = run_dir.join("bpffs");
        let mut lab = Lab {
            node_ns: format!("{NETNS_PREFIX}{id}-node"),
            client_ns: format!("{NETNS_PREFIX}{id}-client"),
            node_if: format!("xn{pid}_{seq}"),
            client_if: format!("xc{pid}_{seq}"),
            node_mac: String::new(),
            client_mac: String::new(),
            pin_dir: bpffs.join("node"),
            client_pin_dir: bpffs.join("client"),
            bpffs,
            run_dir,
            speaker,
            id,
            namespaces: Vec::new(),
        };
        for name in [&lab.node_if, &lab.client_if] {
            assert!(
                name.len() <= 15,
                "interface name {name} is longer than 15 characters"
            );
        }
        // A leftover of an earlier process that had our pid: remove it.
        lab.remove_everything();

        // From here on, Drop cleans up whatever exists.
        netns::mount_bpffs(&lab.bpffs);

        for ns in [lab.node_ns.clone(), lab.client_ns.clone()] {
            lab.namespaces.push(ns.clone());
            netns::add(&ns);
        }
        // Created inside the namespaces, so names never collide in the root one.
        must(
            "ip",
            &[
                "-n",
                &lab.node_ns,
                "link",
                "add",
                &lab.node_if,
                "type",
                "veth",
                "peer",
                "name",
                &lab.client_if,
                "netns",
                &lab.client_ns,
            ],
        );
        for (ns, dev, v4, v6) in [
            (&lab.node_ns, &lab.node_if, NODE_V4, NODE_V6),
            (&lab.client_ns, &lab.client_if, CLIENT_V4, CLIENT_V6),
        ] {
            netns::configure_interface(ns, dev, Some(v4), Some(v6));
        }
        lab.node_mac = netns::link_mac(&lab.node_ns, &lab.node_if);
        lab.client_mac = netns::link_mac(&lab.client_ns, &lab.client_if);
        lab
    }

    /// [`Lab::new`], then the responder attached in `mode` on the node (and
    /// the pass-through program on the client's veth in native mode), and
    /// both VIPs added. Asserts that every step succeeded.
    pub fn with_responder(mode: XdpMode) -> Lab {
        let lab = Lab::new();
        if mode == XdpMode::Native {
            lab.attach_pass_through().assert_success();
        }
        lab.attach_responder(mode).assert_success();
        lab.add_vip(VIP_V4).assert_success();
        lab.add_vip(VIP_V6).assert_success();
        lab
    }

    pub fn ns(&self, side: Side) -> &str {
        match side {
            Side::Node => &self.node_ns,
            Side::Client => &self.client_ns,
        }
    }

    pub fn interface(&self, side: Side) -> &str {
        match side {
            Side::Node => &self.node_if,
            Side::Client => &self.client_if,
        }
    }

    /// Runs `program args` inside a namespace and captures its output.
    pub fn exec(&self, side: Side, program: &str, args: &[&str]) -> CmdOutput {
        self.exec_timeout(side, program, args, COMMAND_TIMEOUT)
    }

    pub fn exec_timeout(
        &self,
        side: Side,
        program: &str,
        args: &[&str],
        timeout: Duration,
    ) -> CmdOutput {
        netns::exec(self.ns(side), program, args, timeout)
    }

    /// Starts `program args` inside a namespace in the background.
    pub fn spawn(&self, side: Side, program: &str, args: &[&str]) -> Background {
        Spawn::tool(program)
            .in_netns(self.ns(side))
            .args(args)
            .background()
    }

    /// The `--pin-dir` of `side`'s speaker commands.
    pub fn pin_dir(&self, side: Side) -> &Path {
        match side {
            Side::Node => &self.pin_dir,
            Side::Client => &self.client_pin_dir,
        }
    }

    /// Runs `speaker args --pin-dir <side's pin dir>` inside a namespace.
    pub fn speaker(&self, side: Side, args: &[&str]) -> CmdOutput {
        let pin_dir = self.pin_dir(side).to_string_lossy().into_owned();
        let mut all: Vec<&str> = args.to_vec();
        all.extend(["--pin-dir", &pin_dir]);
        self.speaker_raw(side, &all)
    }

    /// Runs `speaker args` inside a namespace, adding nothing.
    pub fn speaker_raw(&self, side: Side, args: &[&str]) -> CmdOutput {
        Spawn::speaker()
            .in_netns(self.ns(side))
            .args(args)
            .run(COMMAND_TIMEOUT)
    }

    /// `speaker xdp attach --interface <node if> --mode <mode>` in the node.
    pub fn attach_responder(&self, mode: XdpMode) -> CmdOutput {
        self.speaker(
            Side::Node,
            &[
                "xdp",
                "attach",
                "--interface",
                &self.node_if,
                "--mode",
                mode.flag(),
            ],
        )
    }

    /// `speaker xdp attach --interface <client if> --pass-through` in the client.
    pub fn attach_pass_through(&self) -> CmdOutput {
        self.speaker(
            Side::Client,
            &[
                "xdp",
                "attach",
                "--interface",
                &self.client_if,
                "--mode",
                "native",
                "--pass-through",
            ],
        )
    }

    /// `speaker xdp detach --interface <node if>` in the node.
    pub fn detach_responder(&self) -> CmdOutput {
        self.speaker(Side::Node, &["xdp", "detach", "--interface", &self.node_if])
    }

    /// `speaker vip add <address> --interface <node if>` in the node.
    pub fn add_vip(&self, address: &str) -> CmdOutput {
        self.speaker(
            Side::Node,
            &["vip", "add", address, "--interface", &self.node_if],
        )
    }

    /// `speaker maps --json` in the node, parsed. Panics if it fails.
    pub fn maps_json(&self) -> Value {
        parse_maps(&self.speaker(Side::Node, &["maps", "--json"]), "the node")
    }

    /// Runs arping in the client (towards the node) and parses its output.
    pub fn arping(&self, arping: &Arping) -> (CmdOutput, ArpingReport) {
        self.arping_background(arping).wait()
    }

    /// `arping -c count` from the client to `target` with default timing.
    pub fn arping_count(&self, target: &str, count: u32) -> (CmdOutput, ArpingReport) {
        self.arping(&Arping::new(target, &self.client_if, count))
    }

    /// Starts an arping from the client in the background: one process, or
    /// a series of one-request processes when the installed arping cannot
    /// do the interval (see [`Arping::needs_series`]).
    pub fn arping_background(&self, arping: &Arping) -> ArpingRun {
        arping.start_in(&self.client_ns)
    }

    /// One Neighbor Solicitation (`ndisc6 -r attempts`) from the client; the
    /// link-layer addresses of the advertisements it printed.
    pub fn ndisc6(&self, target: &str, attempts: u32) -> (CmdOutput, Vec<String>) {
        let attempts = attempts.to_string();
        let out = self.exec(
            Side::Client,
            "ndisc6",
            &[
                "-n",
                "-1",
                "-r",
                &attempts,
                "-w",
                "1000",
                target,
                &self.client_if,
            ],
        );
        let macs = parse_ndisc6(&out.stdout);
        (out, macs)
    }

    /// `ping -c 1 -W 1 target` from the client: only the neighbour resolution
    /// it triggers matters (nobody holds the VIPs, so the ping itself fails).
    pub fn ping(&self, target: &str) -> CmdOutput {
        self.exec(Side::Client, "ping", &["-c", "1", "-W", "1", target])
    }

    /// The neighbour entries of `side`'s veth.
    pub fn neighbours(&self, side: Side) -> Vec<Neighbour> {
        let dev = self.interface(side).to_owned();
        let out = self.exec(side, "ip", &["-j", "neigh", "show", "dev", &dev]);
        assert!(out.success(), "ip neigh failed:\n{out}");
        parse_neighbours(&out.stdout, Some(&dev))
    }

    /// The client's neighbour entry for `address`, if any.
    pub fn client_neighbour(&self, address: &str) -> Option<Neighbour> {
        self.neighbours(Side::Client)
            .into_iter()
            .find(|n| same_ip(&n.dst, address))
    }

    /// Waits (up to `limit`) until the client has a neighbour entry for
    /// `address` with a link-layer address; returns the last entry seen.
    pub fn wait_client_neighbour(&self, address: &str, limit: Duration) -> Option<Neighbour> {
        let mut last = None;
        wait_for(limit, || {
            last = self.client_neighbour(address);
            last.clone().filter(|n| n.lladdr.is_some())
        })
        .or(last)
    }

    /// The addresses configured in `side`'s namespace (all interfaces).
    pub fn addresses(&self, side: Side) -> Vec<String> {
        let out = self.exec(side, "ip", &["-j", "addr", "show"]);
        assert!(out.success(), "ip addr failed:\n{out}");
        let value: Value = serde_json::from_str(&out.stdout).unwrap_or(Value::Null);
        value
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|link| link["addr_info"].as_array().cloned().unwrap_or_default())
            .filter_map(|a| a["local"].as_str().map(str::to_owned))
            .collect()
    }

    /// True when `address` is configured in either namespace.
    pub fn address_configured(&self, address: &str) -> bool {
        [Side::Node, Side::Client]
            .iter()
            .any(|&side| self.addresses(side).iter().any(|a| same_ip(a, address)))
    }

    /// `ip -d -j link show` of `side`'s veth, as JSON.
    pub fn link_details(&self, side: Side) -> Value {
        let dev = self.interface(side).to_owned();
        let out = self.exec(side, "ip", &["-d", "-j", "link", "show", "dev", &dev]);
        assert!(out.success(), "ip link failed:\n{out}");
        let value: Value = serde_json::from_str(&out.stdout).unwrap_or(Value::Null);
        value[0].clone()
    }

    /// The XDP attachment of `side`'s veth: (mode name, program id), `None`
    /// when no program is attached. Mode names as iproute2 prints them
    /// (`"xdp"` native, `"xdpgeneric"` generic); read from `ip -d link`.
    pub fn xdp_attachment(&self, side: Side) -> Option<(String, u64)> {
        let out = self.exec(
            side,
            "ip",
            &["-d", "link", "show", "dev", self.interface(side)],
        );
        assert!(out.success(), "ip link failed:\n{out}");
        // e.g. "... mtu 1500 xdp qdisc ..." and "prog/xdp id 42 ..."
        let first = out.stdout.lines().next().unwrap_or_default();
        let mode = first
            .split_whitespace()
            .find(|w| {
                matches!(
                    *w,
                    "xdp" | "xdpgeneric" | "xdpdrv" | "xdpoffload" | "xdpmulti"
                )
            })?
            .to_owned();
        let id = out
            .stdout
            .lines()
            .map(str::trim)
            .find(|l| l.starts_with("prog/xdp"))
            .and_then(|l| number_after(l, "id"))
            .map(u64::from)?;
        Some((mode, id))
    }

    /// Shortens a command line for printing: the speaker path becomes `speaker`.
    pub fn pretty(&self, command: &str) -> String {
        super::speaker::pretty(command)
    }

    fn remove_everything(&mut self) {
        let mut namespaces = std::mem::take(&mut self.namespaces);
        for ns in [&self.node_ns, &self.client_ns] {
            if !namespaces.contains(ns) && netns::exists(ns) {
                namespaces.push(ns.clone());
            }
        }
        for ns in namespaces {
            netns::delete(&ns);
        }
        netns::remove_run_dir(&self.run_dir);
    }
}

impl Default for Lab {
    fn default() -> Self {
        Lab::new()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        // Never panic here: this also runs while a failed test unwinds.
        self.remove_everything();
    }
}
