//! The operator command line. These are the commands scripts drive: keep the
//! names and flags stable (documented in README.md).

use std::{net::IpAddr, path::PathBuf, time::Duration};

use clap::{Args, Parser, Subcommand, ValueEnum};

use speaker_common::VlanPath;

use crate::{
    dataplane::{AttachMode, DEFAULT_PIN_DIR},
    logging::{LogFormat, LogLevel},
};

#[derive(Parser, Debug)]
#[command(
    name = "speaker",
    version,
    about = "xdp-speaker: Layer-2 load-balancer speaker with an XDP data plane"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// Log level, as MetalLB's: all, debug, info, warn, error, none (also
    /// trace, off). RUST_LOG, when set, takes precedence.
    #[arg(long, global = true, value_enum, default_value_t = LogLevel::Info)]
    pub log_level: LogLevel,
    /// Log format; default: json when stderr is not a terminal, text on one.
    #[arg(long, global = true, value_enum)]
    pub log_format: Option<LogFormat>,
}

#[derive(Args, Debug, Clone)]
pub struct PinArgs {
    /// Directory on a BPF filesystem holding the pinned maps and links.
    #[arg(long, global = true, default_value = DEFAULT_PIN_DIR, env = "XDP_SPEAKER_PIN_DIR")]
    pub pin_dir: PathBuf,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Attach or detach the XDP responder.
    Xdp {
        #[command(subcommand)]
        action: XdpAction,
        #[command(flatten)]
        pins: PinArgs,
    },
    /// Add or remove an address the responder answers for.
    Vip {
        #[command(subcommand)]
        action: VipAction,
        #[command(flatten)]
        pins: PinArgs,
    },
    /// Refresh the dead-man switch's heartbeat, optionally setting its limit.
    Heartbeat {
        /// Stop answering when the heartbeat is older than this many seconds; 0 disables.
        #[arg(long, value_name = "SECONDS", value_parser = parse_seconds, allow_negative_numbers = true)]
        max_age: Option<Duration>,
        #[command(flatten)]
        pins: PinArgs,
    },
    /// The speaker daemon: watch the cluster, elect, keep the maps in sync, announce.
    Run(Box<RunArgs>),
    /// Dry-run the layer-2 election over a cluster described in YAML: for every
    /// LoadBalancer IP, the elected node and every other node's reason.
    Election {
        /// A multi-document YAML file, or a directory of them.
        #[arg(long, value_name = "PATH")]
        cluster_state: PathBuf,
        /// Machine-readable output (schema in docs/election-json.md).
        #[arg(long)]
        json: bool,
        /// Simulate memberlist: only these nodes are alive (comma-separated;
        /// an empty value means none). Without it, membership is disabled and
        /// every node is a candidate.
        #[arg(long, value_name = "NODES", value_delimiter = ',')]
        members: Option<Vec<String>>,
        #[command(flatten)]
        election: ElectionArgs,
    },
    /// Print the pinned maps: VIPs with their counters, verdict counters, heartbeat.
    Maps {
        /// Machine-readable output (schema in docs/maps-json.md).
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        pins: PinArgs,
    },
}

#[derive(Args, Debug)]
pub struct RunArgs {
    /// This node's name, as in its Node object (the downward API's spec.nodeName).
    #[arg(long, env = "NODE_NAME")]
    pub node_name: String,
    /// The speaker's Pod name and uid (downward API): the owner of its
    /// ServiceL2Statuses, which then go with the Pod.
    #[arg(long, env = "POD_NAME")]
    pub pod_name: Option<String>,
    #[arg(long, env = "POD_UID")]
    pub pod_uid: Option<String>,
    /// Read the cluster from YAML (a file or a directory) instead of the
    /// Kubernetes API; re-read when it changes.
    #[arg(long, value_name = "PATH")]
    pub cluster_state: Option<PathBuf>,
    /// With --cluster-state: the most bytes its files may hold together;
    /// a larger input is refused and the last good state kept.
    #[arg(long, value_name = "BYTES", default_value_t = crate::cluster::DEFAULT_MAX_BYTES,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub cluster_state_max_bytes: u64,
    /// With --cluster-state: take a file without any document as an empty
    /// cluster (withdrawing everything) instead of an error.
    #[arg(long)]
    pub allow_empty_cluster_state: bool,
    /// kubeconfig for the Kubernetes API (default: in-cluster, then KUBECONFIG, then ~/.kube/config).
    #[arg(long, value_name = "PATH", conflicts_with = "cluster_state")]
    pub kubeconfig: Option<PathBuf>,
    /// Use memberlist to know which speakers are alive. `false`: membership is
    /// disabled and every node with a Node object is a candidate.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
    pub memberlist: bool,
    /// UDP port for gossip (MetalLB's memberlist port).
    #[arg(long, default_value_t = 7946, value_name = "PORT")]
    pub memberlist_port: u16,
    /// The address other speakers reach this one at (default: this node's
    /// InternalIP from its Node object).
    #[arg(long, value_name = "IP", env = "XDP_SPEAKER_ADVERTISE_ADDRESS")]
    pub memberlist_advertise_address: Option<std::net::IpAddr>,
    /// File holding the shared gossip key (32 bytes raw, 64 hex digits, or
    /// base64 of 32 bytes), the primary key that seals what this speaker
    /// sends. Without it gossip is not encrypted.
    #[arg(long, value_name = "PATH")]
    pub memberlist_key_file: Option<PathBuf>,
    /// Directory whose files are more gossip keys, accepted on receive next
    /// to the primary key (for key rotation; at most 8 keys in all). Names
    /// starting with a dot are skipped, and so is the key file itself if it
    /// lies here: with the chart this is the memberlist Secret, mounted as a
    /// directory. Read again every 10 s and on SIGHUP.
    #[arg(long, value_name = "DIR", requires = "memberlist_key_file")]
    pub memberlist_keyring_dir: Option<PathBuf>,
    /// Extra peers to gossip with (comma-separated IP or IP:PORT), on top of
    /// every Node's InternalIP.
    #[arg(long, value_name = "PEERS", value_delimiter = ',')]
    pub memberlist_join: Vec<String>,
    /// With Kubernetes: label selector of the speaker pods, whose IPs are
    /// gossip peers too (listed every minute, like MetalLB).
    #[arg(long, value_name = "SELECTOR")]
    pub memberlist_pod_selector: Option<String>,
    /// Namespace of the speaker pods (default: the pod's own, from
    /// POD_NAMESPACE, else --namespace).
    #[arg(long, value_name = "NAMESPACE", env = "POD_NAMESPACE")]
    pub memberlist_pod_namespace: Option<String>,
    /// Gossip timing. `lan`: a crash moves IPs in under 2 s, a speaker
    /// stopped for up to 1 s or on a lossy link keeps them. `fast`: a crash
    /// moves them in under 1 s, but a speaker stalled for more than about
    /// half a second loses them (and takes them back).
    /// The `--memberlist-*` timer flags below override single timers.
    #[arg(long, value_enum, default_value_t = ProfileArg::Lan)]
    pub memberlist_profile: ProfileArg,
    /// Every this often each speaker pings one other (seconds).
    #[arg(long, value_name = "SECONDS", value_parser = parse_seconds)]
    pub memberlist_probe_interval: Option<Duration>,
    /// How long a ping waits for its ack before others are asked to ping
    /// (seconds; below the probe interval).
    #[arg(long, value_name = "SECONDS", value_parser = parse_seconds)]
    pub memberlist_probe_timeout: Option<Duration>,
    /// How many speakers are asked to ping on our behalf.
    #[arg(long, value_name = "COUNT")]
    pub memberlist_indirect_checks: Option<u8>,
    /// How long a suspected speaker has to refute before it is declared down
    /// once other speakers confirmed the suspicion (seconds).
    #[arg(long, value_name = "SECONDS", value_parser = parse_seconds)]
    pub memberlist_suspicion_timeout: Option<Duration>,
    /// How long it has without confirmations; shrinks toward
    /// --memberlist-suspicion-timeout as they come (seconds).
    #[arg(long, value_name = "SECONDS", value_parser = parse_seconds)]
    pub memberlist_suspicion_max_timeout: Option<Duration>,
    /// Up to how many times a speaker whose own probes fail stretches its
    /// probe timeout and interval (1 turns local health off).
    #[arg(long, value_name = "FACTOR")]
    pub memberlist_awareness_max_multiplier: Option<u8>,
    /// How often membership news is pushed to a few speakers (seconds).
    #[arg(long, value_name = "SECONDS", value_parser = parse_seconds)]
    pub memberlist_gossip_interval: Option<Duration>,
    /// How often peers that are not members are contacted, healing
    /// partitions (seconds).
    #[arg(long, value_name = "SECONDS", value_parser = parse_seconds)]
    pub memberlist_announce_interval: Option<Duration>,
    /// How long a speaker declared down is remembered (seconds).
    #[arg(long, value_name = "SECONDS", value_parser = parse_seconds)]
    pub memberlist_down_retention: Option<Duration>,
    /// What a stop (SIGTERM) does with the IPs this node answers for.
    /// `restart`: this stop is a restart: stay in the gossip, ask the others
    /// to hold this node for --restart-window, keep answering (dead-man limit
    /// extended to the window) for the next speaker to adopt; ownership does
    /// not move. `handover`: leave the gossip and stop answering as soon as
    /// the successor announces (at most two probe periods later), for an
    /// uninstall or a node leaving the DaemonSet. `keep`: leave the gossip
    /// and the pinned entries answering until the dead-man limit. `auto`:
    /// with Kubernetes ask the API server at stop time (this Pod's DaemonSet
    /// still exists and selects this node: `restart`, otherwise or when it
    /// cannot tell: `handover`); with a cluster-state file `handover`.
    /// SIGUSR2 before the stop makes it a restart whatever this says.
    /// Default: `auto` with memberlist, `keep` without (nobody takes over).
    #[arg(long, value_enum, value_name = "WHAT")]
    pub on_stop: Option<OnStopArg>,
    /// How long a restart stop keeps answering and the others hold this
    /// node for the next speaker (seconds).
    #[arg(long, value_name = "SECONDS", value_parser = parse_seconds, default_value = "10")]
    pub restart_window: Duration,
    /// Interfaces never announced on (comma-separated regular expressions);
    /// the default is MetalLB's list. An empty value excludes nothing.
    #[arg(long, value_name = "REGEXES", value_delimiter = ',')]
    pub exclude_interfaces: Option<Vec<String>>,
    #[arg(long, value_enum, default_value_t = ModeArg::Auto)]
    pub mode: ModeArg,
    /// Re-announce held IPs with gratuitous ARP / unsolicited NA this often
    /// (seconds; 0 = only on takeover, as MetalLB).
    #[arg(long, value_name = "SECONDS", value_parser = parse_seconds, default_value = "0")]
    pub gratuitous_interval: Duration,
    /// Stop answering when the daemon has not refreshed its heartbeat for this
    /// long (seconds; 0 disables the dead-man switch).
    /// Default: slightly above the gossip's failure-detection time with
    /// memberlist (so a dead control plane stops answering about when the
    /// others take over), 10 s without.
    #[arg(long, value_name = "SECONDS", value_parser = parse_seconds)]
    pub dead_man_timeout: Option<Duration>,
    /// Serve /metrics, /healthz and /readyz here (MetalLB's port); empty: off.
    #[arg(long, value_name = "ADDR:PORT", default_value = "0.0.0.0:7472")]
    pub metrics_address: String,
    /// Serve the metrics address over HTTPS with this certificate chain
    /// (PEM); needs --metrics-tls-key.
    #[arg(long, value_name = "PATH")]
    pub metrics_tls_cert: Option<PathBuf>,
    /// The private key (PEM, PKCS#8, PKCS#1 or SEC1) of --metrics-tls-cert.
    #[arg(long, value_name = "PATH")]
    pub metrics_tls_key: Option<PathBuf>,
    /// Who may read /metrics: `none` (anyone) or `kubernetes` (a bearer
    /// token the API server authenticates, TokenReview, of a user it allows
    /// `get` on the non-resource URL /metrics, SubjectAccessReview, as
    /// kube-rbac-proxy in MetalLB's chart). /healthz and /readyz stay open.
    #[arg(long, value_enum, default_value_t = MetricsAuthzArg::None)]
    pub metrics_authz: MetricsAuthzArg,
    #[command(flatten)]
    pub election: ElectionArgs,
    #[command(flatten)]
    pub pins: PinArgs,
}

/// `--metrics-authz`.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricsAuthzArg {
    None,
    Kubernetes,
}

/// The election's knobs, named as in MetalLB's speaker.
#[derive(Args, Debug, Clone)]
pub struct ElectionArgs {
    /// Namespace whose IPAddressPools and L2Advertisements count.
    #[arg(long, default_value = "metallb-system", env = "METALLB_NAMESPACE")]
    pub namespace: String,
    /// Handle only Services with this spec.loadBalancerClass (default, or
    /// empty: only those without, as MetalLB's `--lb-class`).
    #[arg(long)]
    pub lb_class: Option<String>,
    /// Keep nodes labelled node.kubernetes.io/exclude-from-external-load-balancers.
    #[arg(long)]
    pub ignore_exclude_lb: bool,
    /// With membership disabled, drop nodes whose Ready condition is not True.
    #[arg(long)]
    pub require_node_ready: bool,
}

impl ElectionArgs {
    pub fn options(&self) -> crate::election::ElectionOptions {
        crate::election::ElectionOptions {
            metallb_namespace: self.namespace.clone(),
            lb_class: self.lb_class.clone().filter(|class| !class.is_empty()),
            ignore_exclude_lb: self.ignore_exclude_lb,
            require_node_ready: self.require_node_ready,
        }
    }
}

#[derive(Subcommand, Debug)]
pub enum XdpAction {
    /// Attach to an interface and pin the link, so it stays after this command exits.
    Attach {
        #[arg(long, short = 'i')]
        interface: String,
        #[arg(long, value_enum, default_value_t = ModeArg::Auto)]
        mode: ModeArg,
        /// Attach the empty XDP_PASS program instead of the responder. A veth
        /// peer needs one so that the kernel delivers the responder's XDP_TX
        /// frames to it.
        #[arg(long)]
        pass_through: bool,
    },
    /// Detach from an interface (removes the pinned link).
    Detach {
        #[arg(long, short = 'i')]
        interface: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum VipAction {
    /// Answer ARP/NDP for this address on this interface.
    Add {
        #[arg(value_parser = parse_ip)]
        address: IpAddr,
        #[arg(long, short = 'i')]
        interface: String,
        #[command(flatten)]
        vlan: VlanArgs,
    },
    /// Stop answering for this address on this interface.
    Del {
        #[arg(value_parser = parse_ip)]
        address: IpAddr,
        #[arg(long, short = 'i')]
        interface: String,
        #[command(flatten)]
        vlan: VlanArgs,
    },
}

/// The VLAN a VIP is announced on, behind the interface the XDP program
/// is attached to (the VLAN device's parent).
#[derive(Args, Debug, Clone, Copy)]
pub struct VlanArgs {
    /// Answer only requests tagged with this VLAN: a VID (1-4094), or
    /// OUTER.INNER for two stacked tags (QinQ, e.g. 200.100). Without it,
    /// only untagged requests are answered.
    #[arg(long, value_parser = parse_vlan_ids)]
    pub vlan: Option<VlanIds>,
    /// The outer tag's protocol: 802.1q (TPID 0x8100) or 802.1ad (0x88a8,
    /// a service tag). An inner tag is always 802.1Q.
    #[arg(long, value_enum, default_value_t = VlanProtocolArg::Dot1q, requires = "vlan")]
    pub vlan_protocol: VlanProtocolArg,
}

impl VlanArgs {
    pub fn path(&self) -> VlanPath {
        let ad = self.vlan_protocol == VlanProtocolArg::Dot1ad;
        match self.vlan {
            None => VlanPath::UNTAGGED,
            Some(VlanIds { outer, inner: None }) => VlanPath::single(outer, ad),
            Some(VlanIds {
                outer,
                inner: Some(inner),
            }) => VlanPath::stacked(outer, ad, inner),
        }
    }
}

/// `--vlan`: one VID, or an outer and an inner one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VlanIds {
    pub outer: u16,
    pub inner: Option<u16>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum VlanProtocolArg {
    #[value(name = "802.1q")]
    Dot1q,
    #[value(name = "802.1ad")]
    Dot1ad,
}

fn parse_vlan_ids(text: &str) -> Result<VlanIds, String> {
    // 0 marks a priority-only tag and 4095 is reserved (802.1Q Table 9-2).
    let vid = |part: &str| match part.parse::<u16>() {
        Ok(vid @ 1..=4094) => Ok(vid),
        _ => Err(format!(
            "{text:?} is not a VLAN: expected a VID from 1 to 4094, or OUTER.INNER"
        )),
    };
    match text.split_once('.') {
        None => Ok(VlanIds {
            outer: vid(text)?,
            inner: None,
        }),
        Some((outer, inner)) => Ok(VlanIds {
            outer: vid(outer)?,
            inner: Some(vid(inner)?),
        }),
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ProfileArg {
    Lan,
    Fast,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum OnStopArg {
    Auto,
    Restart,
    Handover,
    Keep,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum ModeArg {
    Auto,
    Native,
    Generic,
}

impl From<ModeArg> for AttachMode {
    fn from(mode: ModeArg) -> Self {
        match mode {
            ModeArg::Auto => AttachMode::Auto,
            ModeArg::Native => AttachMode::Native,
            ModeArg::Generic => AttachMode::Generic,
        }
    }
}

fn parse_ip(text: &str) -> Result<IpAddr, String> {
    text.parse::<IpAddr>()
        .map_err(|_| format!("{text:?} is not an IPv4 or IPv6 address"))
}

fn parse_seconds(text: &str) -> Result<Duration, String> {
    text.parse::<f64>()
        .ok()
        .and_then(|s| Duration::try_from_secs_f64(s).ok())
        .ok_or_else(|| format!("{text:?} is not a number of seconds (0 or more)"))
}

#[cfg(test)]
mod vlan_tests {
    use clap::Parser;

    use super::*;

    fn vlan_of(args: &[&str]) -> Result<VlanPath, String> {
        let mut argv = vec!["speaker", "vip", "add", "192.0.2.1", "-i", "eth0"];
        argv.extend_from_slice(args);
        match Cli::try_parse_from(argv)
            .map_err(|e| e.to_string())?
            .command
        {
            Command::Vip {
                action: VipAction::Add { vlan, .. },
                ..
            } => Ok(vlan.path()),
            other => Err(format!("parsed as {other:?}")),
        }
    }

    #[test]
    fn vlan_arguments_become_the_key_path() {
        assert_eq!(vlan_of(&[]).unwrap(), VlanPath::UNTAGGED);
        assert_eq!(
            vlan_of(&["--vlan", "100"]).unwrap(),
            VlanPath::single(100, false)
        );
        assert_eq!(
            vlan_of(&["--vlan", "200", "--vlan-protocol", "802.1ad"]).unwrap(),
            VlanPath::single(200, true)
        );
        assert_eq!(
            vlan_of(&["--vlan", "300.30", "--vlan-protocol", "802.1ad"]).unwrap(),
            VlanPath::stacked(300, true, 30)
        );
        assert_eq!(
            vlan_of(&["--vlan", "301.31"]).unwrap(),
            VlanPath::stacked(301, false, 31)
        );
    }

    #[test]
    fn bad_vlans_are_one_line_errors() {
        for bad in ["0", "4095", "5000", "x", "1.2.3", "100.", ".100", "-1"] {
            let err = vlan_of(&[&format!("--vlan={bad}")]).unwrap_err();
            assert!(err.contains("is not a VLAN"), "{bad}: {err}");
        }
        let err = vlan_of(&["--vlan-protocol", "802.1ad"]).unwrap_err();
        assert!(err.contains("--vlan"), "{err}");
    }
}
