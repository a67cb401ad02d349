//! The three-node scenario of the membership labs and the failover
//! benchmark: three node namespaces (iris1..3, InternalIPs 192.0.2.11–13)
//! running `speaker run --cluster-state FILE` (memberlist on unless said
//! otherwise, one shared key, native XDP with pass-through programs on the
//! bridge ports), a probing client (192.0.2.10) and an idle client
//! (192.0.2.20) on one bridge ([`super::fabric`]). The cluster has one
//! LoadBalancer Service (192.0.2.100 and 2001:db8::100, policy as given);
//! who owns it is computed with the dry run, never assumed.
//!
//! - The probing client sends broadcast ARP requests from an AF_PACKET
//!   socket ([`super::probe`]), each reply matched to its request, so every
//!   request tells which MACs answered; [`Outcome`] turns a window of them
//!   into the figures of issue 10 (failover time, lost requests, requests
//!   answered by two MACs and for how long, ownership changes).
//! - The idle client resolves the VIP once with `ping` and then sends
//!   nothing: only gratuitous ARP can move its neighbour entry, which is
//!   read with `ip neigh`. It must always end on the node that answers.
//! - Operations: kill -9, SIGTERM, SIGSTOP/SIGCONT for a duration, restart
//!   with the same arguments, random loss on the bridge ([`Loss`], an
//!   nftables rule in the bridge family of the switch namespace).
//!
//! Labs that time failovers take [`TrioSpec::exclusive`] (the default): one
//! lab of the process at a time, since their margins assume the cores are
//! not shared with another lab of the same run.

use std::{
    cell::RefCell,
    collections::{BTreeMap, BTreeSet},
    fs,
    net::Ipv4Addr,
    path::PathBuf,
    sync::{Mutex, MutexGuard},
    thread,
    time::{Duration, Instant},
};

use super::{
    cluster::lab_cluster_yaml,
    probe::{ArpProbe, ArpProbing},
    random_hex_key, tools, Fabric, HostSpec, Speaker, SpeakerMode, SpeakerOptions,
};

pub const NODES: [&str; 3] = ["iris1", "iris2", "iris3"];
pub const PROBER: &str = "client";
pub const IDLE: &str = "idle";
pub const VIP_V4: &str = "192.0.2.100";
pub const VIP_V6: &str = "2001:db8::100";
pub const VIPS: [&str; 2] = [VIP_V4, VIP_V6];
pub const SERVICE: &str = "default/web";

/// Start-up, gossip settling and map convergence.
pub const SETTLE_LIMIT: Duration = Duration::from_secs(15);

static EXCLUSIVE: Mutex<()> = Mutex::new(());

/// `--memberlist-profile`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Profile {
    Lan,
    Fast,
}

impl Profile {
    pub fn flag(self) -> &'static str {
        match self {
            Profile::Lan => "lan",
            Profile::Fast => "fast",
        }
    }

    /// The speaker library's timers of this profile (detection bounds).
    pub fn timers(self) -> speaker::membership::Timers {
        match self {
            Profile::Lan => speaker::membership::Timers::lan(),
            Profile::Fast => speaker::membership::Timers::fast_lan(),
        }
    }
}

impl std::str::FromStr for Profile {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "lan" => Ok(Profile::Lan),
            "fast" => Ok(Profile::Fast),
            other => Err(format!("unknown profile {other:?} (lan or fast)")),
        }
    }
}

/// What to build.
#[derive(Clone, Debug)]
pub struct TrioSpec {
    /// `--memberlist=`; with it, the lab's key file is passed too.
    pub memberlist: bool,
    /// `--memberlist-profile`; `None`: the speaker's default.
    pub profile: Option<Profile>,
    /// Passed to every speaker started (restarted ones too).
    pub speaker_args: Vec<String>,
    /// Hosts besides the nodes and the clients (not started).
    pub extra_hosts: Vec<HostSpec>,
    /// `externalTrafficPolicy` of the Service (its endpoint is on iris1).
    pub policy: &'static str,
    /// The nodes whose speakers start at once.
    pub started: Vec<&'static str>,
    /// `RLIMIT_NOFILE` of every speaker.
    pub open_files_limit: Option<u64>,
    /// One exclusive lab per process at a time (see the module docs).
    pub exclusive: bool,
    /// When this environment variable is set, every speaker's log is
    /// printed when the lab is dropped, also after a passing test.
    pub logs_env: &'static str,
}

impl Default for TrioSpec {
    fn default() -> Self {
        TrioSpec {
            memberlist: true,
            profile: None,
            speaker_args: Vec::new(),
            extra_hosts: Vec::new(),
            policy: "Cluster",
            started: NODES.to_vec(),
            open_files_limit: None,
            exclusive: true,
            logs_env: "LAB_LOGS",
        }
    }
}

impl TrioSpec {
    pub fn profile(mut self, profile: Profile) -> Self {
        self.profile = Some(profile);
        self
    }

    pub fn args(mut self, args: &[&str]) -> Self {
        self.speaker_args.extend(args.iter().map(|a| a.to_string()));
        self
    }
}

/// The lab: the fabric, the key file and the current speaker of each node.
pub struct Trio {
    pub fabric: Fabric,
    /// The gossip key every speaker gets (in `keys/` of the lab's directory).
    pub key: PathBuf,
    spec: TrioSpec,
    /// The arguments every speaker started from now on gets (from
    /// [`TrioSpec::speaker_args`], replaced by [`Trio::set_speaker_args`]).
    speaker_args: RefCell<Vec<String>>,
    speakers: RefCell<BTreeMap<String, Speaker>>,
    // Last: released after the fabric is gone.
    _exclusive: Option<MutexGuard<'static, ()>>,
}

impl Trio {
    /// Builds the lab and starts (and waits for) the speakers of
    /// `spec.started`.
    pub fn start(spec: TrioSpec) -> Trio {
        let exclusive = spec
            .exclusive
            .then(|| EXCLUSIVE.lock().unwrap_or_else(|p| p.into_inner()));
        let mut hosts = HostSpec::nodes_and_client(&NODES, &spec.extra_hosts, PROBER);
        hosts.push(HostSpec::numbered(IDLE, 20));
        let fabric = Fabric::new(&hosts);
        fabric.attach_pass_through_ports();
        fabric.write_cluster_state(&lab_cluster_yaml(&NODES, &VIPS, spec.policy, "iris1"));
        let keys = fabric.run_dir.join("keys");
        fs::create_dir_all(&keys).expect("creating the key directory");
        let key = keys.join("gossip.key");
        fs::write(&key, random_hex_key().expect("reading /dev/urandom")).expect("writing the key");
        let trio = Trio {
            fabric,
            key,
            speaker_args: RefCell::new(spec.speaker_args.clone()),
            spec,
            speakers: RefCell::new(BTreeMap::new()),
            _exclusive: exclusive,
        };
        for node in trio.spec.started.clone() {
            trio.start_speaker(node, &[]);
        }
        for node in trio.spec.started.clone() {
            trio.wait_started(node);
        }
        trio
    }

    pub fn spec(&self) -> &TrioSpec {
        &self.spec
    }

    /// The options a speaker of this lab starts with, with `key` as its
    /// gossip key and `extra` after the lab's arguments.
    pub fn options_with_key(&self, key: &std::path::Path, extra: &[&str]) -> SpeakerOptions {
        let mut options = SpeakerOptions::file(SpeakerMode::Native);
        options.memberlist = Some(self.spec.memberlist);
        options.open_files_limit = self.spec.open_files_limit;
        if self.spec.memberlist {
            options.args.extend([
                "--memberlist-key-file".to_owned(),
                key.display().to_string(),
            ]);
            if let Some(profile) = self.spec.profile {
                options
                    .args
                    .extend(["--memberlist-profile".to_owned(), profile.flag().to_owned()]);
            }
        }
        options
            .args
            .extend(self.speaker_args.borrow().iter().cloned());
        options.args.extend(extra.iter().map(|s| s.to_string()));
        options
    }

    /// Replaces the arguments every speaker started from now on gets (e.g.
    /// another `--on-stop` before a rolling restart).
    pub fn set_speaker_args(&self, args: &[&str]) {
        *self.speaker_args.borrow_mut() = args.iter().map(|a| a.to_string()).collect();
    }

    /// Starts a speaker on `node` (not waiting for it) with the lab's
    /// arguments and `extra`.
    pub fn start_speaker(&self, node: &str, extra: &[&str]) -> Speaker {
        self.start_speaker_keyed(node, &self.key.clone(), extra)
    }

    /// [`Trio::start_speaker`] with its own gossip key file (keyrings per
    /// node: the key rotation lab).
    pub fn start_speaker_keyed(
        &self,
        node: &str,
        key: &std::path::Path,
        extra: &[&str],
    ) -> Speaker {
        let speaker = self
            .fabric
            .start_speaker(node, &self.options_with_key(key, extra));
        self.speakers
            .borrow_mut()
            .insert(node.to_owned(), speaker.clone());
        speaker
    }

    /// Panics with every log unless `node`'s speaker is running within
    /// [`SETTLE_LIMIT`].
    pub fn wait_started(&self, node: &str) {
        let s = self.speaker(node);
        assert!(
            s.wait_log("speaker running as node", SETTLE_LIMIT)
                .is_some(),
            "the speaker on {node} did not start:\n{}",
            self.fabric.all_logs()
        );
    }

    /// Starts `node` again (lab arguments and `extra`) and waits until it
    /// runs and its membership has settled.
    pub fn restart(&self, node: &str, extra: &[&str]) -> Speaker {
        let s = self.start_speaker(node, extra);
        self.wait_started(node);
        if self.spec.memberlist {
            assert!(
                s.wait_log("membership settled", SETTLE_LIMIT).is_some(),
                "the restarted speaker on {node} did not settle:\n{}",
                self.fabric.all_logs()
            );
        }
        s
    }

    /// The current speaker of `node`.
    pub fn speaker(&self, node: &str) -> Speaker {
        self.speakers
            .borrow()
            .get(node)
            .unwrap_or_else(|| panic!("no speaker was started on {node}"))
            .clone()
    }

    /// The nodes with a speaker started so far.
    pub fn started_nodes(&self) -> Vec<String> {
        self.speakers.borrow().keys().cloned().collect()
    }

    pub fn mac(&self, node: &str) -> String {
        self.fabric.host(node).mac.clone()
    }

    /// The node the dry run elects among `members` (all nodes: `&NODES`).
    pub fn elected(&self, members: &[&str]) -> String {
        self.fabric.elected(SERVICE, Some(members))
    }

    /// The node the dry run elects when `node` is gone.
    pub fn successor_of(&self, node: &str) -> String {
        self.elected(&others(node))
    }

    /// Waits until `owner`'s maps hold both VIPs and those of the other
    /// `nodes` none; how long that took.
    pub fn wait_owner(&self, owner: &str, nodes: &[&str], limit: Duration) -> Duration {
        let mut all = vec![owner];
        all.extend(nodes.iter().copied().filter(|n| *n != owner));
        self.fabric.wait_owner(&all, owner, &VIPS, limit)
    }

    /// Waits until every one of `nodes` counts `count` gossip members.
    pub fn wait_members(&self, nodes: &[&str], count: usize, limit: Duration) -> Duration {
        self.fabric.wait_gossip_members(nodes, count, limit)
    }

    /// Every speaker counts 3 members and the owner by hash holds the VIPs;
    /// that owner.
    pub fn settled_owner(&self) -> String {
        let owner = self.elected(&NODES);
        self.wait_members(&NODES, 3, SETTLE_LIMIT);
        self.wait_owner(&owner, &NODES, SETTLE_LIMIT);
        owner
    }

    /// A prober from the probing client for the IPv4 VIP, every `interval`.
    pub fn probing(&self, interval: Duration) -> ArpProbing {
        self.fabric
            .arp_prober(PROBER, VIP_V4.parse::<Ipv4Addr>().expect("an IPv4 VIP"))
            .spawn(interval)
    }

    /// `count` requests from the probing client, `interval` apart.
    pub fn probe_series(&self, count: usize, interval: Duration) -> Vec<ArpProbe> {
        self.fabric
            .arp_prober(PROBER, VIP_V4.parse().expect("an IPv4 VIP"))
            .series(count, interval)
            .expect("the ARP prober")
    }

    /// The probes, one line each: offset from `t0` and who answered.
    pub fn timeline(&self, probes: &[ArpProbe], t0: Instant) -> String {
        self.fabric.probe_timeline(probes, t0)
    }

    /// SIGTERM; panics unless it exits cleanly within 10 s.
    pub fn stop(&self, node: &str) {
        let s = self.speaker(node);
        let status = s.terminate(Duration::from_secs(10));
        assert!(
            status.is_some_and(|s| s.success()),
            "{node} did not stop cleanly on SIGTERM ({status:?}):\n{}",
            s.log()
        );
    }

    /// SIGKILL (`kill -9`).
    pub fn kill(&self, node: &str) {
        self.speaker(node).kill();
    }

    /// SIGSTOP, `duration`, SIGCONT.
    pub fn stall(&self, node: &str, duration: Duration) {
        let s = self.speaker(node);
        s.suspend();
        thread::sleep(duration);
        s.resume();
    }

    /// The idle client resolves the IPv4 VIP once (one ping); panics unless
    /// its entry then holds `node`'s MAC.
    pub fn idle_resolves(&self, node: &str) {
        let ping = self.fabric.ping(IDLE, VIP_V4);
        let mac = self.mac(node);
        assert!(
            self.fabric
                .wait_neighbour_mac(IDLE, VIP_V4, &mac, Duration::from_secs(3))
                .is_some(),
            "the idle client did not resolve {VIP_V4} to {node} ({mac}):\n{ping}\n{:?}",
            self.fabric.neighbour(IDLE, VIP_V4)
        );
    }

    /// The MAC the idle client's entry for the IPv4 VIP holds.
    pub fn idle_entry(&self) -> Option<String> {
        self.fabric.neighbour(IDLE, VIP_V4).and_then(|n| n.lladdr)
    }

    /// Waits up to `limit` until the idle client's entry holds `mac`; false
    /// if it still holds another then.
    pub fn idle_reaches(&self, mac: &str, limit: Duration) -> bool {
        self.fabric
            .wait_neighbour_mac(IDLE, VIP_V4, mac, limit)
            .is_some()
    }

    /// Waits until the idle client's entry holds `node`'s MAC; panics with
    /// what it holds otherwise. Returns when, from `since`.
    pub fn idle_follows(
        &self,
        node: &str,
        since: Instant,
        limit: Duration,
        what: &str,
    ) -> Duration {
        let mac = self.mac(node);
        match self.fabric.wait_neighbour_mac(IDLE, VIP_V4, &mac, limit) {
            Some((_, at)) => at - since,
            None => {
                let holds = self.idle_entry().map(|m| self.fabric.name_of_mac(&m));
                panic!(
                    "{what}: the idle client's entry for {VIP_V4} should hold {node} ({mac}) \
                     within {limit:?}, but holds {holds:?}:\n{}",
                    self.fabric.all_logs()
                )
            }
        }
    }

    /// Drops `percent` % of the frames the bridge forwards, at random,
    /// until the returned guard is dropped.
    pub fn loss(&self, percent: u32) -> Loss<'_> {
        Loss::start(&self.fabric, percent)
    }
}

impl Drop for Trio {
    fn drop(&mut self) {
        if std::env::var_os(self.spec.logs_env).is_some() && !thread::panicking() {
            eprintln!("{}", self.fabric.all_logs());
        }
    }
}

/// The nodes other than `node`.
pub fn others(node: &str) -> Vec<&'static str> {
    NODES.iter().copied().filter(|n| *n != node).collect()
}

// ---------------------------------------------------------------- loss

/// The nftables table of [`Loss`], in the switch namespace.
const LOSS_TABLE: &str = "lab_loss";

/// Random loss on the bridge: an nftables rule in the bridge family's
/// forward hook of the switch namespace (`numgen random mod 100 < P drop`;
/// `tc netem` is not available on every kernel, nf_tables is). Every
/// forwarded frame is subject to it: gossip, ARP requests and replies,
/// gratuitous announcements. Removed when dropped.
pub struct Loss<'a> {
    fabric: &'a Fabric,
}

impl<'a> Loss<'a> {
    fn start(fabric: &'a Fabric, percent: u32) -> Loss<'a> {
        assert!(percent <= 100, "loss of {percent} %");
        tools::require("nft");
        let script = format!(
            "table bridge {LOSS_TABLE} {{\n  chain forward {{\n    type filter hook forward \
             priority 0; policy accept;\n    numgen random mod 100 < {percent} counter drop\n  }}\n}}\n"
        );
        let path = fabric.run_dir.join("loss.nft");
        fs::write(&path, script).expect("writing the nftables script");
        let out = fabric.exec_switch("nft", &["-f", &path.display().to_string()]);
        assert!(
            out.success(),
            "adding the loss rule (does the kernel have nf_tables with bridge support?):\n{out}"
        );
        Loss { fabric }
    }

    /// Frames the rule dropped so far (from `nft list table`), if readable.
    pub fn dropped(&self) -> Option<u64> {
        let out = self
            .fabric
            .exec_switch("nft", &["list", "table", "bridge", LOSS_TABLE]);
        out.stdout
            .split("counter packets ")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse().ok())
    }
}

impl Drop for Loss<'_> {
    fn drop(&mut self) {
        let _ = self
            .fabric
            .exec_switch("nft", &["delete", "table", "bridge", LOSS_TABLE]);
    }
}

// ---------------------------------------------------------------- outcome

/// What a client saw in a window of probes (issue 10's figures).
#[derive(Clone, Debug, PartialEq)]
pub struct Outcome {
    /// Requests in the window.
    pub probes: usize,
    /// From the window's start to the first reply from a MAC other than
    /// the one answering before it, if any did.
    pub failover: Option<Duration>,
    /// Requests nobody answered.
    pub lost: usize,
    /// Requests answered by two (or more) MACs.
    pub double_answered: usize,
    /// From the first request answered by two MACs to the last, plus one
    /// interval (each request stands for the interval it opens); zero when
    /// none was.
    pub double_answer_time: Duration,
    /// How often the answering MAC changed (requests answered by one MAC,
    /// in order, starting from the one answering before the window).
    pub ownership_changes: usize,
    /// The MAC that answered the last answered request alone.
    pub last_answerer: Option<String>,
}

impl Outcome {
    /// The figures of the requests sent in `[t0, end)` of `probes` (a whole
    /// series, in order), `interval` apart. The newest request is ignored
    /// when it was sent less than an interval before `end` (its replies may
    /// still be on the way).
    pub fn of(probes: &[ArpProbe], t0: Instant, end: Instant, interval: Duration) -> Outcome {
        let before = probes
            .iter()
            .filter(|p| p.sent < t0)
            .rev()
            .find_map(sole_answerer);
        let window: Vec<&ArpProbe> = probes
            .iter()
            .filter(|p| p.sent >= t0 && p.sent + interval <= end)
            .collect();
        let failover = window.iter().find_map(|p| {
            p.answers
                .iter()
                .find(|(mac, _)| Some(mac) != before.as_ref())
                .map(|(_, at)| *at - t0)
        });
        let doubles: Vec<&&ArpProbe> = window.iter().filter(|p| p.macs().len() > 1).collect();
        let double_answer_time = match (doubles.first(), doubles.last()) {
            (Some(first), Some(last)) => last.sent - first.sent + interval,
            _ => Duration::ZERO,
        };
        let mut current = before;
        let mut ownership_changes = 0;
        for mac in window.iter().filter_map(|p| sole_answerer(p)) {
            if current.as_ref().is_some_and(|c| *c != mac) {
                ownership_changes += 1;
            }
            current = Some(mac);
        }
        Outcome {
            probes: window.len(),
            failover,
            lost: window.iter().filter(|p| p.answers.is_empty()).count(),
            double_answered: doubles.len(),
            double_answer_time,
            ownership_changes,
            last_answerer: current,
        }
    }
}

/// The MAC that answered `probe`, when exactly one did.
fn sole_answerer(probe: &ArpProbe) -> Option<String> {
    let macs: BTreeSet<String> = probe.macs();
    (macs.len() == 1).then(|| macs.into_iter().next().unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probe(seq: u64, t0: Instant, ms: u64, macs: &[&str]) -> ArpProbe {
        let sent = t0 + Duration::from_millis(ms);
        ArpProbe {
            seq,
            sent,
            answers: macs
                .iter()
                .map(|m| (m.to_string(), sent + Duration::from_millis(1)))
                .collect(),
        }
    }

    #[test]
    fn a_failover_with_a_gap_and_a_double_answer() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let probes = [
            probe(1, t0, 0, &["a"]),
            probe(2, t0, 50, &["a"]),
            probe(3, t0, 100, &[]),
            probe(4, t0, 150, &["a", "b"]),
            probe(5, t0, 200, &["a", "b"]),
            probe(6, t0, 250, &["b"]),
            probe(7, t0, 300, &["b"]),
        ];
        let start = t0 + ms(50);
        let outcome = Outcome::of(&probes, start, t0 + ms(400), ms(50));
        assert_eq!(outcome.probes, 6);
        assert_eq!(outcome.failover, Some(ms(101)));
        assert_eq!(outcome.lost, 1);
        assert_eq!(outcome.double_answered, 2);
        assert_eq!(outcome.double_answer_time, ms(100));
        assert_eq!(outcome.ownership_changes, 1);
        assert_eq!(outcome.last_answerer.as_deref(), Some("b"));
    }

    #[test]
    fn a_move_and_back_counts_two_changes_and_no_failover_is_none() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let flap = [
            probe(1, t0, 0, &["a"]),
            probe(2, t0, 50, &["b"]),
            probe(3, t0, 100, &["a"]),
        ];
        let outcome = Outcome::of(&flap, t0 + ms(10), t0 + ms(200), ms(50));
        assert_eq!(outcome.ownership_changes, 2);
        assert_eq!(outcome.lost, 0);
        let steady = [probe(1, t0, 0, &["a"]), probe(2, t0, 50, &["a"])];
        let outcome = Outcome::of(&steady, t0 + ms(10), t0 + ms(200), ms(50));
        assert_eq!(outcome.failover, None);
        assert_eq!(outcome.ownership_changes, 0);
        assert_eq!(outcome.double_answer_time, Duration::ZERO);
        // The newest request, still waiting, is not counted as lost.
        let waiting = [probe(1, t0, 0, &["a"]), probe(2, t0, 50, &[])];
        assert_eq!(Outcome::of(&waiting, t0, t0 + ms(80), ms(50)).lost, 0);
    }
}
