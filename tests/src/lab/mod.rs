//! The network-namespace lab library of the end-to-end tests, demos and
//! benchmarks: one place for running programs, namespaces, hosts, speaker
//! processes and the probes that observe them.
//!
//! - [`tools`]: the registry of external programs (`tools.toml` at the
//!   workspace root); nothing else may be spawned.
//! - [`command`]: the one way to start a process ([`command::Spawn`]),
//!   captured output ([`CmdOutput`]), background commands, timeouts.
//! - [`netns`]: namespaces, entering one on a thread, private bpffs mounts
//!   under [`RUN_ROOT`], removal of what killed runs left ([`reap_stale`]).
//! - [`pair`]: [`Lab`], two namespaces on one veth pair (node and client).
//! - [`fabric`]: [`Fabric`], N hosts ([`host`]) on a bridge in a switch
//!   namespace; [`cluster`]: the cluster file its speakers share.
//! - [`speaker`]: the speaker binary and [`Speaker`], one `speaker run`
//!   process (logs, waiting for log lines, SIGTERM/SIGKILL, exit status).
//! - [`probe`]: an ARP prober on an AF_PACKET socket inside a host;
//!   [`capture`]: tcpdump captures read back as frames; [`flood`]: frames
//!   sent as fast as one thread can (the in-situ benchmark).
//! - [`trio`]: the three-node scenario of the membership labs and the
//!   failover benchmark (probing and idle clients, stalls, loss, outcomes).
//! - [`http`]: metrics and health scraping inside a host.
//! - [`arping`], [`neighbour`], [`maps`], [`mac`]: what arping, ndisc6,
//!   `ip -j neigh` and `speaker maps --json` print, and MAC text.
//! - [`kube`]: the kube emulator inside a lab's node namespace.
//! - [`podman`]: the speaker image under podman (image and chart-pod labs).
//!
//! Only documentation addresses are used: 192.0.2.0/24 and 2001:db8::/64.

pub mod arping;
pub mod capture;
pub mod cluster;
pub mod command;
pub mod fabric;
pub mod flood;
pub mod host;
pub mod http;
pub mod kube;
pub mod mac;
pub mod maps;
pub mod neighbour;
pub mod netns;
pub mod pair;
pub mod podman;
pub mod probe;
pub mod speaker;
pub mod tools;
pub mod trio;

use std::{
    path::{Path, PathBuf},
    thread,
    time::{Duration, Instant},
};

pub use arping::{Arping, ArpingFlavor, ArpingReport, ArpingRun};
pub use command::{run, Background, CmdOutput, Spawn, COMMAND_TIMEOUT};
pub use fabric::{Fabric, BRIDGE, HOST_IF};
pub use host::{Host, HostSpec};
pub use maps::{linked_interfaces, reason_count, vip_addresses, vip_answered, vips_on};
pub use netns::{reap_stale, NETNS_PREFIX, RUN_ROOT};
pub use pair::{Lab, Side, XdpMode};
pub use speaker::{speaker_bin, ClusterSource, Memory, Speaker, SpeakerMode, SpeakerOptions};

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

/// Panics with a clear message unless running as root: labs create
/// namespaces, mount a bpffs and load XDP programs. They are not skipped.
pub fn require_root() {
    let uid = nix::unistd::geteuid().as_raw();
    assert_eq!(
        uid, 0,
        "the network-namespace tests must run as root (effective uid is {uid}): they create \
         network namespaces, mount a bpffs and attach XDP programs. Run them with sudo or as \
         root, as CI does; they are deliberately not skipped."
    );
}

/// The workspace root (the parent of this crate).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate lives inside the workspace")
        .to_path_buf()
}

/// 64 hex digits from /dev/urandom (a memberlist secret key).
pub fn random_hex_key() -> std::io::Result<String> {
    use std::io::Read;
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}
