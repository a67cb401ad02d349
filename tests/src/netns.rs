//! A network-namespace lab for end-to-end tests of the speaker CLI and its
//! XDP responder.
//!
//! [`Lab::new`] builds two namespaces joined by a veth pair:
//!
//! ```text
//!   node   (xdpspk-<pid>-<seq>-node)              client (xdpspk-<pid>-<seq>-client)
//!   xn<pid>_<seq>  192.0.2.1/24 2001:db8::1/64 ── xc<pid>_<seq>  192.0.2.10/24 2001:db8::10/64
//! ```
//!
//! plus a private bpffs mounted at `/run/xdp-speaker-tests/<pid>-<seq>/bpffs`
//! (a bpffs mounted inside `ip netns exec` would vanish with it, and
//! /sys/fs/bpf is hidden there), which every `speaker` command of the lab gets
//! as `--pin-dir`. The VIPs ([`VIP_V4`], [`VIP_V6`]) are never configured as
//! addresses: only the XDP responder may answer for them.
//!
//! Everything is removed in `Drop` (namespaces, which takes the veth pair and
//! the XDP links with them, then the bpffs and the directories), also while a
//! failing test unwinds. Leftovers of killed runs (their process id no longer
//! exists) are removed when the next lab starts.
//!
//! Only documentation addresses are used: 192.0.2.0/24 and 2001:db8::/64.

use std::{
    fmt,
    io::Read,
    net::IpAddr,
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    sync::{
        atomic::{AtomicU32, Ordering},
        OnceLock,
    },
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

use serde_json::Value;

/// Where labs mount their bpffs.
pub const RUN_ROOT: &str = "/run/xdp-speaker-tests";
/// Prefix of every namespace a lab creates.
pub const NETNS_PREFIX: &str = "xdpspk-";

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

/// Default limit for any one command; the commands carry their own shorter
/// timeouts (`arping -w`, `ping -W`, `ndisc6 -w`), this only catches hangs.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

static LAB_SEQ: AtomicU32 = AtomicU32::new(0);

// ---------------------------------------------------------------------------
// Commands
// ---------------------------------------------------------------------------

/// What a finished command printed and how it ended.
#[derive(Clone, Debug)]
pub struct CmdOutput {
    /// The command line, for messages.
    pub command: String,
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
    /// It was killed because it ran longer than its limit.
    pub timed_out: bool,
    pub elapsed: Duration,
}

impl CmdOutput {
    pub fn success(&self) -> bool {
        self.status.success() && !self.timed_out
    }

    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }

    /// Panics with everything the command printed unless it succeeded.
    pub fn assert_success(&self) -> &Self {
        assert!(self.success(), "command failed:\n{self}");
        self
    }

    /// The non-empty lines of stderr.
    pub fn stderr_lines(&self) -> Vec<&str> {
        self.stderr
            .lines()
            .filter(|l| !l.trim().is_empty())
            .collect()
    }
}

impl fmt::Display for CmdOutput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "$ {}", self.command)?;
        let status = if self.timed_out {
            format!("killed after {:?} (timeout)", self.elapsed)
        } else {
            self.status.to_string()
        };
        writeln!(f, "  status: {status}")?;
        for (name, text) in [("stdout", &self.stdout), ("stderr", &self.stderr)] {
            if !text.trim().is_empty() {
                writeln!(f, "  {name}:")?;
                for line in text.lines() {
                    writeln!(f, "    | {line}")?;
                }
            }
        }
        Ok(())
    }
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

fn reader<R: Read + Send + 'static>(mut source: R) -> JoinHandle<String> {
    thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = source.read_to_end(&mut bytes);
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

/// A command running in the background (e.g. arping during a restart). It is
/// killed when dropped unfinished.
pub struct Background {
    command: String,
    child: Option<Child>,
    stdout: Option<JoinHandle<String>>,
    stderr: Option<JoinHandle<String>>,
    started: Instant,
}

impl Background {
    fn spawn(program: &str, args: Vec<String>) -> Self {
        let command = display_command(program, &args);
        let mut child = Command::new(program)
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start `{command}`: {e}"));
        let stdout = child.stdout.take().map(reader);
        let stderr = child.stderr.take().map(reader);
        Background {
            command,
            child: Some(child),
            stdout,
            stderr,
            started: Instant::now(),
        }
    }

    pub fn command(&self) -> &str {
        &self.command
    }

    /// Waits for the command to end, killing it after `timeout`.
    pub fn wait(mut self, timeout: Duration) -> CmdOutput {
        self.finish(timeout)
    }

    fn finish(&mut self, timeout: Duration) -> CmdOutput {
        let mut child = self.child.take().expect("waited for twice");
        let deadline = self.started + timeout;
        let mut timed_out = false;
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) if Instant::now() >= deadline => {
                    timed_out = true;
                    let _ = child.kill();
                    break child.wait().expect("waiting for a killed child");
                }
                Ok(None) => thread::sleep(Duration::from_millis(10)),
                Err(e) => panic!("waiting for `{}`: {e}", self.command),
            }
        };
        let elapsed = self.started.elapsed();
        let join = |h: Option<JoinHandle<String>>| {
            h.map(|h| h.join().unwrap_or_default()).unwrap_or_default()
        };
        CmdOutput {
            command: self.command.clone(),
            status,
            stdout: join(self.stdout.take()),
            stderr: join(self.stderr.take()),
            timed_out,
            elapsed,
        }
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            // Only our own child, by its id.
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Runs `program args` (in the current namespace) and captures its output,
/// killing it after `timeout`.
pub fn run(program: &str, args: &[&str], timeout: Duration) -> CmdOutput {
    Background::spawn(program, args.iter().map(|s| s.to_string()).collect()).wait(timeout)
}

/// Runs a setup command that must succeed.
fn must(program: &str, args: &[&str]) -> CmdOutput {
    let out = run(program, args, COMMAND_TIMEOUT);
    assert!(out.success(), "lab setup failed:\n{out}");
    out
}

/// Retries `probe` every 100 ms until it returns `Some`, for at most `limit`.
pub fn wait_for<T>(limit: Duration, mut probe: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = probe() {
            return Some(value);
        }
        if Instant::now() >= deadline {
            return None;
        }
        thread::sleep(Duration::from_millis(100));
    }
}

// ---------------------------------------------------------------------------
// Preconditions: root, tools, the speaker binary
// ---------------------------------------------------------------------------

/// The effective user id, from /proc (no libc needed).
pub fn effective_uid() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    line.split_whitespace().nth(2)?.parse().ok()
}

/// Panics with a clear message unless running as root: these tests create
/// namespaces, mount a bpffs and load XDP programs. They are not skipped.
pub fn require_root() {
    let uid = effective_uid();
    assert_eq!(
        uid,
        Some(0),
        "the network-namespace tests must run as root (effective uid is {uid:?}): they create \
         network namespaces, mount a bpffs and attach XDP programs. Run them with sudo or as \
         root, as CI does; they are deliberately not skipped."
    );
}

fn require_tool(tool: &str, package: &str) {
    let found = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|dir| dir.join(tool).is_file()))
        .unwrap_or(false);
    assert!(
        found,
        "`{tool}` is not installed: apt-get install -y {package}"
    );
}

/// Checks that every tool the lab drives is installed.
pub fn require_tools() {
    require_tool("ip", "iproute2");
    require_tool("mount", "mount");
    require_tool("arping", "iputils-arping");
    require_tool("ndisc6", "ndisc6");
    require_tool("ping", "iputils-ping");
}

/// The workspace root (the parent of this crate).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate lives inside the workspace")
        .to_path_buf()
}

/// The `speaker` binary: `$SPEAKER_BIN` when set, otherwise the workspace's
/// own `target/<profile>/speaker`, built (or refreshed) once per process with
/// `cargo build -p speaker` so that the tests never drive a stale binary.
pub fn speaker_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(bin) = std::env::var_os("SPEAKER_BIN") {
            let bin = PathBuf::from(bin);
            assert!(
                bin.is_file(),
                "SPEAKER_BIN={} does not exist",
                bin.display()
            );
            return bin;
        }
        let workspace = workspace_root();
        let release = !cfg!(debug_assertions);
        let target_dir = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .map(|d| {
                if d.is_relative() {
                    workspace.join(d)
                } else {
                    d
                }
            })
            .unwrap_or_else(|| workspace.join("target"));
        let bin = target_dir
            .join(if release { "release" } else { "debug" })
            .join("speaker");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
        let mut command = Command::new(&cargo);
        command
            .current_dir(&workspace)
            .args(["build", "--quiet", "-p", "speaker"]);
        if release {
            command.arg("--release");
        }
        let started = Instant::now();
        let output = command
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run `{cargo} build -p speaker`: {e}"));
        let out = CmdOutput {
            command: format!(
                "{cargo} build --quiet -p speaker{}",
                if release { " --release" } else { "" }
            ),
            status: output.status,
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
            timed_out: false,
            elapsed: started.elapsed(),
        };
        assert!(
            out.success(),
            "building the speaker binary failed (set SPEAKER_BIN to use another one):\n{out}"
        );
        assert!(
            bin.is_file(),
            "`cargo build -p speaker` did not produce {}",
            bin.display()
        );
        bin
    })
    .clone()
}

// ---------------------------------------------------------------------------
// arping (either package), ndisc6, ip neigh
// ---------------------------------------------------------------------------

/// Which `arping` is installed: their options and output differ.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArpingFlavor {
    /// iputils-arping: `-I IF`, `-i INTERVAL`, `-w DEADLINE`.
    Iputils,
    /// Thomas Habets' arping (Debian package `arping`): `-i IF`, `-W INTERVAL`, `-w TIMEOUT`.
    Habets,
}

/// Detects the installed arping (once per process).
pub fn arping_flavor() -> ArpingFlavor {
    static FLAVOR: OnceLock<ArpingFlavor> = OnceLock::new();
    *FLAVOR.get_or_init(|| {
        let version = run("arping", &["-V"], Duration::from_secs(10));
        if format!("{}{}", version.stdout, version.stderr).contains("iputils") {
            return ArpingFlavor::Iputils;
        }
        let help = run("arping", &["--help"], Duration::from_secs(10));
        let text = format!("{}{}", help.stdout, help.stderr);
        if text.contains("Habets") || text.contains("ARPing") {
            return ArpingFlavor::Habets;
        }
        panic!("unknown arping implementation:\n{version}\n{help}")
    })
}

/// An ARP ping: `count` requests, `interval` apart, giving up after `deadline`.
#[derive(Clone, Debug)]
pub struct Arping {
    pub target: String,
    pub interface: String,
    pub count: u32,
    /// Seconds between requests; `None`: the tool's default (1 s).
    pub interval: Option<f64>,
    /// Seconds after which arping exits whatever happened.
    pub deadline: u32,
}

impl Arping {
    pub fn new(target: &str, interface: &str, count: u32) -> Self {
        Arping {
            target: target.to_owned(),
            interface: interface.to_owned(),
            count,
            interval: None,
            deadline: count + 2,
        }
    }

    pub fn interval(mut self, seconds: f64) -> Self {
        self.interval = Some(seconds);
        self
    }

    pub fn deadline(mut self, seconds: u32) -> Self {
        self.deadline = seconds;
        self
    }

    /// True when the installed arping cannot send at this interval in one
    /// process: iputils-arping (20221126) takes whole seconds only. The lab
    /// then runs `count` one-request arpings, `interval` apart (a series).
    pub fn needs_series(&self) -> bool {
        arping_flavor() == ArpingFlavor::Iputils && self.interval.is_some_and(|i| i.fract() != 0.0)
    }

    /// One request of a series: `-c 1`, answered within a second.
    pub fn single(&self) -> Arping {
        Arping {
            count: 1,
            interval: None,
            deadline: 1,
            ..self.clone()
        }
    }

    /// The command line for the installed arping (one process; see
    /// [`Arping::needs_series`]).
    pub fn args(&self) -> Vec<String> {
        let mut args = vec!["-c".to_owned(), self.count.to_string()];
        args.extend(["-w".to_owned(), self.deadline.to_string()]);
        match arping_flavor() {
            ArpingFlavor::Iputils => {
                if let Some(i) = self.interval {
                    args.extend(["-i".to_owned(), (i.round().max(1.0) as u64).to_string()]);
                }
                args.extend(["-I".to_owned(), self.interface.clone()]);
            }
            ArpingFlavor::Habets => {
                if let Some(i) = self.interval {
                    args.extend(["-W".to_owned(), i.to_string()]);
                }
                args.extend(["-i".to_owned(), self.interface.clone()]);
            }
        }
        args.push(self.target.clone());
        args
    }
}

/// An arping started with [`Lab::arping_background`].
pub enum ArpingRun {
    Process(Background, Duration),
    Series(JoinHandle<(CmdOutput, ArpingReport)>),
}

impl ArpingRun {
    /// Waits for it to end; its output (merged for a series) and report.
    pub fn wait(self) -> (CmdOutput, ArpingReport) {
        match self {
            ArpingRun::Process(background, limit) => {
                let out = background.wait(limit);
                let report = parse_arping(&out.stdout);
                (out, report)
            }
            ArpingRun::Series(handle) => handle.join().expect("the arping series panicked"),
        }
    }
}

fn merge_series(
    command: String,
    outputs: Vec<CmdOutput>,
    elapsed: Duration,
) -> (CmdOutput, ArpingReport) {
    let mut report = ArpingReport {
        sent: Some(0),
        received: Some(0),
        ..Default::default()
    };
    for out in &outputs {
        let one = parse_arping(&out.stdout);
        report.replies.extend(one.replies);
        report.sent = report.sent.zip(one.sent).map(|(a, b)| a + b);
        report.received = report.received.zip(one.received).map(|(a, b)| a + b);
    }
    let failed = outputs.iter().find(|o| !o.success());
    let status = failed
        .or(outputs.last())
        .map(|o| o.status)
        .unwrap_or_else(|| {
            use std::os::unix::process::ExitStatusExt;
            ExitStatus::from_raw(0)
        });
    let join = |f: fn(&CmdOutput) -> &str| outputs.iter().map(f).collect::<Vec<_>>().concat();
    let out = CmdOutput {
        command,
        status,
        stdout: join(|o| &o.stdout),
        stderr: join(|o| &o.stderr),
        timed_out: outputs.iter().any(|o| o.timed_out),
        elapsed,
    };
    (out, report)
}

/// One reply as arping printed it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArpReply {
    pub ip: String,
    /// Lower case, colon separated.
    pub mac: String,
}

/// What arping reported.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ArpingReport {
    pub replies: Vec<ArpReply>,
    /// Requests sent, from the summary line.
    pub sent: Option<u32>,
    /// Replies received, from the summary line.
    pub received: Option<u32>,
}

impl ArpingReport {
    pub fn macs(&self) -> Vec<&str> {
        self.replies.iter().map(|r| r.mac.as_str()).collect()
    }
}

fn is_mac(text: &str) -> bool {
    let parts: Vec<_> = text.split(':').collect();
    parts.len() == 6
        && parts
            .iter()
            .all(|p| (1..=2).contains(&p.len()) && p.chars().all(|c| c.is_ascii_hexdigit()))
}

/// Normalises a MAC to lower case with two digits per byte.
pub fn normalize_mac(text: &str) -> String {
    text.split(':')
        .map(|p| format!("{:0>2}", p.to_ascii_lowercase()))
        .collect::<Vec<_>>()
        .join(":")
}

fn number_before(line: &str, word: &str) -> Option<u32> {
    let words: Vec<_> = line.split_whitespace().collect();
    let at = words.iter().position(|w| w.starts_with(word))?;
    words.get(at.checked_sub(1)?)?.parse().ok()
}

fn number_after(line: &str, word: &str) -> Option<u32> {
    let words: Vec<_> = line.split_whitespace().collect();
    let at = words.iter().position(|w| *w == word)?;
    words.get(at + 1)?.parse().ok()
}

/// Parses the output of either arping package.
///
/// iputils: `Unicast reply from 192.0.2.100 [AA:BB:CC:DD:EE:FF]  0.512ms`,
/// `Sent 3 probes (1 broadcast(s))`, `Received 3 response(s)`.
/// Habets: `60 bytes from aa:bb:cc:dd:ee:ff (192.0.2.100): index=0 time=...`,
/// `3 packets transmitted, 3 packets received,   0% unanswered (0 extra)`.
pub fn parse_arping(output: &str) -> ArpingReport {
    let mut report = ArpingReport::default();
    for line in output.lines() {
        let line = line.trim();
        if let Some(rest) = line.split_once(" reply from ").map(|(_, r)| r) {
            // iputils: "<ip> [<MAC>] ..."
            let ip = rest.split_whitespace().next().unwrap_or_default();
            let mac = rest
                .split_once('[')
                .and_then(|(_, r)| r.split_once(']'))
                .map(|(m, _)| m);
            if let Some(mac) = mac.filter(|m| is_mac(m)) {
                report.replies.push(ArpReply {
                    ip: ip.to_owned(),
                    mac: normalize_mac(mac),
                });
            }
        } else if line.contains(" bytes from ") {
            // Habets: "60 bytes from <mac> (<ip>): index=..."
            let rest = line
                .split_once(" bytes from ")
                .map(|(_, r)| r)
                .unwrap_or_default();
            let mut words = rest.split_whitespace();
            let mac = words.next().unwrap_or_default();
            let ip = words.next().unwrap_or_default().trim_start_matches('(');
            let ip = ip.split(')').next().unwrap_or_default();
            if is_mac(mac) {
                report.replies.push(ArpReply {
                    ip: ip.to_owned(),
                    mac: normalize_mac(mac),
                });
            }
        } else if line.starts_with("Sent ") && line.contains("probe") {
            report.sent = number_after(line, "Sent");
        } else if line.starts_with("Received ") && line.contains("response") {
            report.received = number_after(line, "Received");
        } else if line.contains("packets transmitted") {
            report.sent = number_before(line, "packets");
            report.received = line
                .split(',')
                .find(|part| part.contains("received"))
                .and_then(|part| number_before(part, "packets"));
        }
    }
    report
}

/// Parses ndisc6's `Target link-layer address: AA:BB:...` lines (lower-cased).
pub fn parse_ndisc6(output: &str) -> Vec<String> {
    output
        .lines()
        .filter_map(|line| line.trim().strip_prefix("Target link-layer address:"))
        .map(|mac| normalize_mac(mac.trim()))
        .filter(|mac| is_mac(mac))
        .collect()
}

/// One entry of `ip -j neigh`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Neighbour {
    pub dst: String,
    pub dev: Option<String>,
    /// Lower case; `None` for entries still resolving or failed.
    pub lladdr: Option<String>,
    /// E.g. `["REACHABLE"]`, `["INCOMPLETE"]`, `["FAILED"]`.
    pub state: Vec<String>,
}

impl Neighbour {
    pub fn is(&self, state: &str) -> bool {
        self.state.iter().any(|s| s == state)
    }
}

/// Parses `ip -j neigh show` output.
pub fn parse_neighbours(json: &str) -> Vec<Neighbour> {
    let value: Value = serde_json::from_str(json.trim()).unwrap_or(Value::Array(Vec::new()));
    value
        .as_array()
        .into_iter()
        .flatten()
        .map(|entry| Neighbour {
            dst: entry["dst"].as_str().unwrap_or_default().to_owned(),
            dev: entry["dev"].as_str().map(str::to_owned),
            lladdr: entry["lladdr"].as_str().map(normalize_mac),
            state: entry["state"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|s| s.as_str().map(str::to_owned))
                .collect(),
        })
        .collect()
}

fn same_ip(a: &str, b: &str) -> bool {
    match (a.parse::<IpAddr>(), b.parse::<IpAddr>()) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}

// ---------------------------------------------------------------------------
// speaker maps --json
// ---------------------------------------------------------------------------

/// The `answered` counter of `address` in a `speaker maps --json` document.
pub fn vip_answered(maps: &Value, address: &str) -> Option<u64> {
    maps["vips"]
        .as_array()?
        .iter()
        .find(|v| v["address"].as_str().is_some_and(|a| same_ip(a, address)))?["answered"]
        .as_u64()
}

/// The count of verdict reason `reason` in a `speaker maps --json` document.
pub fn reason_count(maps: &Value, reason: &str) -> Option<u64> {
    maps["reasons"]
        .as_array()?
        .iter()
        .find(|r| r["reason"] == reason)?["count"]
        .as_u64()
}

/// The interfaces listed under `links`.
pub fn linked_interfaces(maps: &Value) -> Vec<String> {
    maps["links"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|l| l.as_str().map(str::to_owned))
        .collect()
}

// ---------------------------------------------------------------------------
// The lab
// ---------------------------------------------------------------------------

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
    mounted: bool,
}

impl Lab {
    /// Builds the topology (no XDP program yet). Panics if anything fails,
    /// after removing what was already created.
    pub fn new() -> Lab {
        require_root();
        require_tools();
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
            mounted: false,
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
        std::fs::create_dir_all(&lab.bpffs)
            .unwrap_or_else(|e| panic!("creating {}: {e}", lab.bpffs.display()));
        must("mount", &["-t", "bpf", "bpf", &lab.bpffs.to_string_lossy()]);
        lab.mounted = true;

        for ns in [lab.node_ns.clone(), lab.client_ns.clone()] {
            must("ip", &["netns", "add", &ns]);
            lab.namespaces.push(ns.clone());
            must("ip", &["-n", &ns, "link", "set", "lo", "up"]);
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
            must(
                "ip",
                &["-n", ns, "addr", "add", &format!("{v4}/24"), "dev", dev],
            );
            // nodad: no Duplicate Address Detection traffic to disturb counters,
            // and the address is usable at once.
            must(
                "ip",
                &[
                    "-n",
                    ns,
                    "addr",
                    "add",
                    &format!("{v6}/64"),
                    "dev",
                    dev,
                    "nodad",
                ],
            );
            must("ip", &["-n", ns, "link", "set", dev, "up"]);
        }
        lab.node_mac = lab.mac_of(Side::Node);
        lab.client_mac = lab.mac_of(Side::Client);
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

    fn exec_args(&self, side: Side, program: &str, args: &[&str]) -> Vec<String> {
        let mut all = vec![
            "netns".to_owned(),
            "exec".to_owned(),
            self.ns(side).to_owned(),
        ];
        all.push(program.to_owned());
        all.extend(args.iter().map(|s| s.to_string()));
        all
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
        Background::spawn("ip", self.exec_args(side, program, args)).wait(timeout)
    }

    /// Starts `program args` inside a namespace in the background.
    pub fn spawn(&self, side: Side, program: &str, args: &[&str]) -> Background {
        Background::spawn("ip", self.exec_args(side, program, args))
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
        let bin = self.speaker.to_string_lossy().into_owned();
        self.exec(side, &bin, args)
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
        let out = self.speaker(Side::Node, &["maps", "--json"]);
        assert!(out.success(), "speaker maps --json failed:\n{out}");
        serde_json::from_str(&out.stdout)
            .unwrap_or_else(|e| panic!("speaker maps --json printed invalid JSON ({e}):\n{out}"))
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
        let limit = Duration::from_secs(u64::from(arping.deadline) + 30);
        if !arping.needs_series() {
            let args: Vec<String> = arping.args();
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            return ArpingRun::Process(self.spawn(Side::Client, "arping", &args), limit);
        }
        let mut single = vec!["arping".to_owned()];
        single.extend(arping.single().args());
        let single: Vec<&str> = single.iter().map(String::as_str).collect();
        let exec_args = self.exec_args(Side::Client, single[0], &single[1..]);
        let interval = Duration::from_secs_f64(arping.interval.unwrap_or(1.0));
        let count = arping.count;
        let handle = thread::spawn(move || {
            let started = Instant::now();
            let mut outputs = Vec::new();
            for i in 0..count {
                let at = started + interval * i;
                if let Some(wait) = at.checked_duration_since(Instant::now()) {
                    thread::sleep(wait);
                }
                outputs
                    .push(Background::spawn("ip", exec_args.clone()).wait(Duration::from_secs(30)));
            }
            let command = format!(
                "{count} x [{}], {:.1} s apart",
                display_command("ip", &exec_args),
                interval.as_secs_f64()
            );
            merge_series(command, outputs, started.elapsed())
        });
        ArpingRun::Series(handle)
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
        let mut entries = parse_neighbours(&out.stdout);
        for e in &mut entries {
            e.dev.get_or_insert(dev.clone());
        }
        entries
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

    fn mac_of(&self, side: Side) -> String {
        let mac = self.link_details(side)["address"]
            .as_str()
            .map(normalize_mac);
        mac.unwrap_or_else(|| panic!("no MAC address on {}", self.interface(side)))
    }

    /// Shortens a command line for printing: the speaker path becomes `speaker`.
    pub fn pretty(&self, command: &str) -> String {
        command.replace(&*self.speaker.to_string_lossy(), "speaker")
    }

    fn remove_everything(&mut self) {
        let mut namespaces = std::mem::take(&mut self.namespaces);
        for ns in [&self.node_ns, &self.client_ns] {
            if !namespaces.contains(ns) && Path::new("/run/netns").join(ns).exists() {
                namespaces.push(ns.clone());
            }
        }
        for ns in namespaces {
            let _ = run("ip", &["netns", "del", &ns], Duration::from_secs(30));
        }
        remove_run_dir(&self.run_dir, self.mounted);
        self.mounted = false;
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

/// Unmounts the bpffs under `dir` (when mounted) and removes the directories.
fn remove_run_dir(dir: &Path, mounted_hint: bool) {
    let bpffs = dir.join("bpffs");
    if mounted_hint || is_mount_point(&bpffs) {
        let path = bpffs.to_string_lossy().into_owned();
        let out = run("umount", &[&path], Duration::from_secs(30));
        if !out.success() {
            let _ = run("umount", &["-l", &path], Duration::from_secs(30));
        }
    }
    if !is_mount_point(&bpffs) {
        let _ = std::fs::remove_dir(&bpffs);
        let _ = std::fs::remove_dir(dir);
        // RUN_ROOT itself stays: removing it while a parallel lab is
        // creating its directory under it makes that lab fail.
    } else {
        eprintln!("warning: {} is still mounted", bpffs.display());
    }
}

fn is_mount_point(path: &Path) -> bool {
    let Ok(mounts) = std::fs::read_to_string("/proc/self/mounts") else {
        return false;
    };
    let wanted = path.to_string_lossy();
    mounts
        .lines()
        .any(|l| l.split_whitespace().nth(1) == Some(wanted.as_ref()))
}

fn pid_alive(pid: u32) -> bool {
    Path::new("/proc").join(pid.to_string()).exists()
}

fn owner_pid(name: &str) -> Option<u32> {
    name.split('-').next()?.parse().ok()
}

/// Removes the namespaces and bpffs mounts of labs whose process is gone
/// (killed runs cannot clean up in `Drop`).
pub fn reap_stale() {
    let me = std::process::id();
    let stale = |pid: Option<u32>| pid.is_some_and(|pid| pid != me && !pid_alive(pid));
    if let Ok(entries) = std::fs::read_dir("/run/netns") {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(rest) = name.strip_prefix(NETNS_PREFIX) {
                if stale(owner_pid(rest)) {
                    let _ = run("ip", &["netns", "del", &name], Duration::from_secs(30));
                }
            }
        }
    }
    if let Ok(entries) = std::fs::read_dir(RUN_ROOT) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if stale(owner_pid(&name)) {
                remove_run_dir(&entry.path(), false);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_iputils_arping() {
        let out = "ARPING 192.0.2.100 from 192.0.2.10 xc1_0\n\
                   Unicast reply from 192.0.2.100 [6A:0B:1C:2D:3E:4F]  0.611ms\n\
                   Unicast reply from 192.0.2.100 [6A:0B:1C:2D:3E:4F]  0.540ms\n\
                   Sent 2 probes (1 broadcast(s))\n\
                   Received 2 response(s)\n";
        let r = parse_arping(out);
        assert_eq!(r.macs(), ["6a:0b:1c:2d:3e:4f", "6a:0b:1c:2d:3e:4f"]);
        assert_eq!(r.replies[0].ip, "192.0.2.100");
        assert_eq!((r.sent, r.received), (Some(2), Some(2)));
    }

    #[test]
    fn parses_iputils_arping_without_replies() {
        let out = "ARPING 192.0.2.101 from 192.0.2.10 xc1_0\nSent 3 probes (3 broadcast(s))\nReceived 0 response(s)\n";
        let r = parse_arping(out);
        assert!(r.replies.is_empty());
        assert_eq!((r.sent, r.received), (Some(3), Some(0)));
    }

    #[test]
    fn parses_habets_arping() {
        let out = "ARPING 192.0.2.100\n\
                   60 bytes from 6a:0b:1c:2d:3e:4f (192.0.2.100): index=0 time=1.234 usec\n\
                   60 bytes from 6a:b:1c:2d:3e:4f (192.0.2.100): index=1 time=1.100 usec\n\
                   Timeout\n\
                   \n\
                   --- 192.0.2.100 statistics ---\n\
                   3 packets transmitted, 2 packets received,  33% unanswered (0 extra)\n";
        let r = parse_arping(out);
        assert_eq!(r.macs(), ["6a:0b:1c:2d:3e:4f", "6a:0b:1c:2d:3e:4f"]);
        assert_eq!(r.replies[1].ip, "192.0.2.100");
        assert_eq!((r.sent, r.received), (Some(3), Some(2)));
    }

    #[test]
    fn parses_ndisc6() {
        let out = "Soliciting 2001:db8::100 (2001:db8::100) on xc1_0...\n\
                   Target link-layer address: 6A:0B:1C:2D:3E:4F\n from 2001:db8::100\n";
        assert_eq!(parse_ndisc6(out), ["6a:0b:1c:2d:3e:4f"]);
        assert!(parse_ndisc6("Soliciting 2001:db8::101\nTimed out.\nNo response.\n").is_empty());
    }

    #[test]
    fn parses_ip_neigh_json() {
        let json = r#"[{"dst":"192.0.2.100","lladdr":"6a:0b:1c:2d:3e:4f","state":["REACHABLE"]},
                       {"dst":"192.0.2.101","state":["INCOMPLETE"]},
                       {"dst":"2001:db8::101","dev":"xc1_0","state":["FAILED"]}]"#;
        let n = parse_neighbours(json);
        assert_eq!(n.len(), 3);
        assert_eq!(n[0].lladdr.as_deref(), Some("6a:0b:1c:2d:3e:4f"));
        assert!(n[0].is("REACHABLE"));
        assert_eq!(n[1].lladdr, None);
        assert!(n[2].is("FAILED"));
        assert!(parse_neighbours("").is_empty());
    }

    #[test]
    fn reads_maps_json() {
        let maps: Value = serde_json::from_str(
            r#"{"pin_dir":"/x","links":["xn1_0"],
                "vips":[{"address":"2001:db8::100","family":"ipv6","interface":"xn1_0","ifindex":2,
                         "mac":"6a:0b:1c:2d:3e:4f","answered":7}],
                "reasons":[{"reason":"not_owned","count":3}],
                "watchdog":{"max_age_seconds":null,"heartbeat_age_seconds":null,"stale":false}}"#,
        )
        .unwrap();
        assert_eq!(vip_answered(&maps, "2001:0db8::0100"), Some(7));
        assert_eq!(vip_answered(&maps, "192.0.2.100"), None);
        assert_eq!(reason_count(&maps, "not_owned"), Some(3));
        assert_eq!(linked_interfaces(&maps), ["xn1_0"]);
    }
}
