//! The container image `cargo xtask image` builds, run the way the Helm chart
//! runs it: under podman, in the "node's" network namespace, root file system
//! read-only, ALL capabilities dropped and exactly the chart's
//! `speaker.capabilities` added, with the chart's `speaker.seccompProfile`
//! (both read from charts/xdp-speaker/values.yaml), the node's bpffs bind-mounted
//! at /sys/fs/bpf and `--pin-dir /sys/fs/bpf/xdp-speaker` as in the DaemonSet.
//!
//! ```text
//!   node ns (imglab-<pid>-<n>-node)            client ns (imglab-<pid>-<n>-client)
//!   in<pid>x<n> 192.0.2.1/24  ───── veth ─────  ic<pid>x<n> 192.0.2.10/24
//!   (podman --network ns:/run/netns/...)       arping 192.0.2.100
//! ```
//!
//! - `chart_capabilities_answer_arp`: `speaker xdp attach` and `speaker vip
//!   add` from the image; a real client's ARP request for the VIP (never an
//!   address of the node) is answered with the node interface's MAC.
//! - `chart_pod_spec_attaches_under_podman`: the same through the podman
//!   arguments `speaker_tests::pod_spec` derives from the rendered chart.
//! - `each_missing_chart_capability_is_named`: `speaker run` with one of the
//!   chart's capabilities dropped at a time exits non-zero, printing exactly
//!   one line that names that capability; so does `speaker xdp attach`
//!   without CAP_BPF.
//!
//! Needs root, podman and runc (`cargo xtask image` installs them), iproute2,
//! arping, and the archive `target/image/xdp-speaker-<appVersion>.oci.tar`
//! that `cargo xtask image` writes; fails, not skips, without them. Run:
//! `cargo xtask image && cargo test -p speaker-tests --test image_lab`.

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Command, Output},
    sync::{
        atomic::{AtomicU32, Ordering},
        OnceLock,
    },
};

use serde::Deserialize;
use speaker_tests::pod_spec::{PODMAN_GLOBAL, PODMAN_ULIMITS};

const NODE_V4: &str = "192.0.2.1/24";
const CLIENT_V4: &str = "192.0.2.10/24";
const VIP_V4: &str = "192.0.2.100";
/// The DaemonSet mounts the host's bpffs here and pins below it.
const POD_BPFFS: &str = "/sys/fs/bpf";
const POD_PIN_DIR: &str = "/sys/fs/bpf/xdp-speaker";
/// Where the cluster-state file is mounted for `speaker run`.
const POD_STATE: &str = "/etc/xdp-speaker/state.yaml";

static LAB_SEQ: AtomicU32 = AtomicU32::new(0);

fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

// ---------------------------------------------------------------------------
// What the chart says
// ---------------------------------------------------------------------------

#[derive(Deserialize)]
struct ChartMeta {
    #[serde(rename = "appVersion")]
    app_version: String,
}

#[derive(Deserialize)]
struct ChartValues {
    speaker: SpeakerValues,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SpeakerValues {
    capabilities: Vec<String>,
    seccomp_profile: Option<SeccompProfile>,
}

#[derive(Deserialize)]
struct SeccompProfile {
    #[serde(rename = "type")]
    kind: String,
}

fn read_yaml<T: for<'de> Deserialize<'de>>(relative: &str) -> T {
    let path = workspace_root().join(relative);
    let text =
        fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    serde_yaml_ng::from_str(&text).unwrap_or_else(|e| panic!("parsing {}: {e}", path.display()))
}

fn chart_values() -> &'static ChartValues {
    static VALUES: OnceLock<ChartValues> = OnceLock::new();
    VALUES.get_or_init(|| read_yaml("charts/xdp-speaker/values.yaml"))
}

/// `speaker.capabilities` as podman names them.
fn chart_capabilities() -> Vec<String> {
    let capabilities = &chart_values().speaker.capabilities;
    assert!(!capabilities.is_empty(), "the chart adds no capabilities");
    capabilities
        .iter()
        .map(|c| format!("CAP_{}", c.strip_prefix("CAP_").unwrap_or(c)))
        .collect()
}

/// podman options for `speaker.seccompProfile`.
fn chart_seccomp_options() -> Vec<String> {
    match chart_values()
        .speaker
        .seccomp_profile
        .as_ref()
        .map(|p| p.kind.as_str())
    {
        None | Some("RuntimeDefault") => Vec::new(),
        Some("Unconfined") => vec!["--security-opt".into(), "seccomp=unconfined".into()],
        Some(other) => {
            panic!("speaker.seccompProfile.type {other:?} is not reproduced by this lab")
        }
    }
}

// ---------------------------------------------------------------------------
// Commands
// ---------------------------------------------------------------------------

fn run(program: &str, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot start {program}: {e} (is it installed? `cargo xtask image` installs podman and runc)"))
}

fn must(program: &str, args: &[&str]) -> Output {
    let output = run(program, args);
    assert!(
        output.status.success(),
        "{program} {} failed ({}): {}",
        args.join(" "),
        output.status,
        String::from_utf8_lossy(&output.stderr).trim()
    );
    output
}

fn require_root() {
    let status = fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let euid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1))
        .expect("Uid line");
    assert_eq!(
        euid, "0",
        "the image lab needs root (network namespaces, bpffs, podman)"
    );
}

/// Loads the archive into podman's storage, once, and returns the image name.
fn image() -> &'static str {
    static IMAGE: OnceLock<String> = OnceLock::new();
    IMAGE.get_or_init(|| {
        let meta: ChartMeta = read_yaml("charts/xdp-speaker/Chart.yaml");
        let archive = workspace_root().join(format!(
            "target/image/xdp-speaker-{}.oci.tar",
            meta.app_version
        ));
        assert!(
            archive.exists(),
            "{} is missing: run `cargo xtask image` first",
            archive.display()
        );
        let mut args = PODMAN_GLOBAL.to_vec();
        let archive_arg = archive.to_str().expect("UTF-8 path");
        args.extend(["load", "--input", archive_arg]);
        let output = must("podman", &args);
        let stdout = String::from_utf8_lossy(&output.stdout);
        // "Loaded image: localhost/xdp-speaker:0.1.0" (older podman: "Loaded image(s): ...").
        let name = stdout
            .lines()
            .find_map(|l| {
                l.strip_prefix("Loaded image")
                    .and_then(|rest| rest.split_once(": "))
            })
            .map(|(_, name)| name.trim().to_owned())
            .unwrap_or_else(|| panic!("podman load printed no image name: {stdout}"));
        assert!(
            name.ends_with(&format!(":{}", meta.app_version)),
            "{} holds {name}, not the chart's appVersion {}",
            archive.display(),
            meta.app_version
        );
        name
    })
}

// ---------------------------------------------------------------------------
// The lab
// ---------------------------------------------------------------------------

struct ImageLab {
    node_ns: String,
    client_ns: String,
    node_if: String,
    client_if: String,
    /// The node's bpffs, mounted at /sys/fs/bpf in the container.
    bpffs: PathBuf,
    run_dir: PathBuf,
}

impl ImageLab {
    fn new() -> ImageLab {
        require_root();
        let pid = std::process::id();
        let seq = LAB_SEQ.fetch_add(1, Ordering::SeqCst);
        let name = format!("imglab-{pid}-{seq}");
        let run_dir = PathBuf::from(format!("/run/xdp-speaker-image-lab/{pid}-{seq}"));
        let lab = ImageLab {
            node_ns: format!("{name}-node"),
            client_ns: format!("{name}-client"),
            node_if: format!("in{pid}x{seq}"),
            client_if: format!("ic{pid}x{seq}"),
            bpffs: run_dir.join("bpffs"),
            run_dir,
        };
        // From here on Drop cleans up whatever was made.
        must("ip", &["netns", "add", &lab.node_ns]);
        must("ip", &["netns", "add", &lab.client_ns]);
        must(
            "ip",
            &[
                "link",
                "add",
                &lab.node_if,
                "netns",
                &lab.node_ns,
                "type",
                "veth",
                "peer",
                "name",
                &lab.client_if,
                "netns",
                &lab.client_ns,
            ],
        );
        for (ns, interface, address) in [
            (&lab.node_ns, &lab.node_if, NODE_V4),
            (&lab.client_ns, &lab.client_if, CLIENT_V4),
        ] {
            must(
                "ip",
                &["-n", ns, "address", "add", address, "dev", interface],
            );
            must("ip", &["-n", ns, "link", "set", interface, "up"]);
            must("ip", &["-n", ns, "link", "set", "lo", "up"]);
        }
        fs::create_dir_all(&lab.bpffs).expect("creating the lab's bpffs directory");
        must("mount", &["-t", "bpf", "bpf", lab.bpffs.to_str().unwrap()]);
        lab
    }

    /// The node interface's MAC, from the kernel.
    fn node_mac(&self) -> String {
        let output = must(
            "ip",
            &[
                "-n",
                &self.node_ns,
                "-j",
                "link",
                "show",
                "dev",
                &self.node_if,
            ],
        );
        let links: serde_json::Value =
            serde_json::from_slice(&output.stdout).expect("ip -j output");
        links[0]["address"]
            .as_str()
            .expect("the node interface has an address")
            .to_ascii_lowercase()
    }

    /// `podman run` of the image in the node's namespace, as the chart runs
    /// it, with `capabilities` added after dropping ALL.
    fn speaker(&self, capabilities: &[String], mounts: &[(&Path, &str)], args: &[&str]) -> Output {
        let mut podman: Vec<String> = PODMAN_GLOBAL.iter().map(|s| s.to_string()).collect();
        podman.extend(["run", "--rm", "--read-only"].map(String::from));
        podman.extend(PODMAN_ULIMITS.iter().map(|s| s.to_string()));
        podman.extend([
            "--network".into(),
            format!("ns:/run/netns/{}", self.node_ns),
        ]);
        podman.push("--cap-drop=ALL".into());
        podman.extend(capabilities.iter().map(|c| format!("--cap-add={c}")));
        podman.extend(chart_seccomp_options());
        // HostToContainer, as the chart mounts the host's bpffs.
        podman.extend([
            "--volume".into(),
            format!("{}:{POD_BPFFS}:rw,rslave", self.bpffs.display()),
        ]);
        for (host, pod) in mounts {
            podman.extend(["--volume".into(), format!("{}:{pod}:ro", host.display())]);
        }
        podman.push(image().to_owned());
        podman.extend(args.iter().map(|s| s.to_string()));
        let args: Vec<&str> = podman.iter().map(String::as_str).collect();
        run("podman", &args)
    }

    fn arping_vip(&self) -> String {
        let output = run(
            "ip",
            &[
                "netns",
                "exec",
                &self.client_ns,
                "arping",
                "-c",
                "3",
                "-w",
                "5",
                "-I",
                &self.client_if,
                VIP_V4,
            ],
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }
}

impl Drop for ImageLab {
    fn drop(&mut self) {
        // Deleting the namespaces takes the veth pair and its XDP link along.
        for ns in [&self.node_ns, &self.client_ns] {
            let _ = run("ip", &["netns", "delete", ns]);
        }
        let _ = run("umount", &[self.bpffs.to_str().unwrap()]);
        let _ = fs::remove_dir_all(&self.run_dir);
    }
}

/// MACs in arping's reply lines, lower case (iputils: "Unicast reply from
/// IP [MAC]", Habets: "N bytes from MAC (IP)").
fn reply_macs(arping_output: &str) -> Vec<String> {
    arping_output
        .lines()
        .filter(|l| l.contains("reply from") || l.contains("bytes from"))
        .flat_map(|l| l.split_whitespace())
        .map(|token| token.trim_matches(|c| c == '[' || c == ']' || c == '(' || c == ')'))
        .filter(|token| token.len() == 17 && token.split(':').count() == 6)
        .map(str::to_ascii_lowercase)
        .collect()
}

fn stderr_lines(output: &Output) -> Vec<String> {
    String::from_utf8_lossy(&output.stderr)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(str::to_owned)
        .collect()
}

fn show(output: &Output) -> String {
    format!(
        "status {}, stdout {:?}, stderr {:?}",
        output.status,
        String::from_utf8_lossy(&output.stdout).trim(),
        String::from_utf8_lossy(&output.stderr).trim()
    )
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

#[test]
fn chart_capabilities_answer_arp() {
    let lab = ImageLab::new();
    let capabilities = chart_capabilities();
    let node_mac = lab.node_mac();

    // Generic mode: XDP_TX on a native-mode veth is dropped unless the peer
    // has an XDP program too (kernel quirk), and the client has none.
    let attach = lab.speaker(
        &capabilities,
        &[],
        &[
            "xdp",
            "attach",
            "--interface",
            &lab.node_if,
            "--mode",
            "generic",
            "--pin-dir",
            POD_PIN_DIR,
        ],
    );
    assert!(
        attach.status.success(),
        "xdp attach in the image: {}",
        show(&attach)
    );
    assert!(
        String::from_utf8_lossy(&attach.stdout)
            .contains(&format!("attached xdp_speaker to {}", lab.node_if)),
        "{}",
        show(&attach)
    );
    // The link is pinned on the node's bpffs, outliving the container.
    assert!(lab
        .bpffs
        .join("xdp-speaker/links")
        .join(&lab.node_if)
        .exists());

    let vip = lab.speaker(
        &capabilities,
        &[],
        &[
            "vip",
            "add",
            VIP_V4,
            "--interface",
            &lab.node_if,
            "--pin-dir",
            POD_PIN_DIR,
        ],
    );
    assert!(vip.status.success(), "vip add in the image: {}", show(&vip));

    let arping = lab.arping_vip();
    let macs = reply_macs(&arping);
    assert!(!macs.is_empty(), "no ARP reply for {VIP_V4}:\n{arping}");
    assert!(
        macs.iter().all(|mac| *mac == node_mac),
        "replies for {VIP_V4} not all from the node's {node_mac}: {macs:?}\n{arping}"
    );

    // The answers came from the data plane: its per-VIP counter moved.
    let maps = lab.speaker(
        &capabilities,
        &[],
        &["maps", "--json", "--pin-dir", POD_PIN_DIR],
    );
    assert!(maps.status.success(), "maps in the image: {}", show(&maps));
    let report: serde_json::Value = serde_json::from_slice(&maps.stdout).expect("maps --json");
    let answered = report["vips"]
        .as_array()
        .and_then(|vips| vips.iter().find(|v| v["address"] == VIP_V4))
        .and_then(|v| v["answered"].as_u64());
    assert!(
        answered.is_some_and(|n| n >= 1),
        "VIP_ANSWERED for {VIP_V4} did not move: {report}"
    );
}

#[test]
fn each_missing_chart_capability_is_named() {
    let lab = ImageLab::new();
    let capabilities = chart_capabilities();
    let state = workspace_root().join("docs/examples/iris-regression.yaml");
    for missing in &capabilities {
        let kept: Vec<String> = capabilities
            .iter()
            .filter(|c| *c != missing)
            .cloned()
            .collect();
        let output = lab.speaker(
            &kept,
            &[(&state, POD_STATE)],
            &[
                "run",
                "--cluster-state",
                POD_STATE,
                "--node-name",
                "iris1",
                "--memberlist=false",
                "--metrics-address=",
                "--pin-dir",
                POD_PIN_DIR,
            ],
        );
        assert!(
            !output.status.success(),
            "speaker run without {missing} succeeded: {}",
            show(&output)
        );
        let lines = stderr_lines(&output);
        assert_eq!(
            lines.len(),
            1,
            "speaker run without {missing}: not one line: {}",
            show(&output)
        );
        assert!(
            lines[0].starts_with(&format!("speaker: error: missing capability {missing} (")),
            "speaker run without {missing}: {:?}",
            lines[0]
        );
    }

    let without_bpf: Vec<String> = capabilities
        .iter()
        .filter(|c| *c != "CAP_BPF")
        .cloned()
        .collect();
    assert_ne!(
        without_bpf.len(),
        capabilities.len(),
        "the chart does not add CAP_BPF"
    );
    let attach = lab.speaker(
        &without_bpf,
        &[],
        &[
            "xdp",
            "attach",
            "--interface",
            &lab.node_if,
            "--pin-dir",
            POD_PIN_DIR,
        ],
    );
    assert!(
        !attach.status.success(),
        "xdp attach without CAP_BPF succeeded: {}",
        show(&attach)
    );
    let lines = stderr_lines(&attach);
    assert_eq!(lines.len(), 1, "{}", show(&attach));
    assert!(
        lines[0].starts_with("speaker: error: missing capability CAP_BPF ("),
        "{:?}",
        lines[0]
    );
    // Nothing was attached.
    assert!(!lab
        .bpffs
        .join("xdp-speaker/links")
        .join(&lab.node_if)
        .exists());
}

/// The chart's speaker container as `pod_spec` resolves it from the rendered
/// chart (tests/fixtures/chart-default.yaml), started by the podman
/// arguments `pod_spec` makes: every flag of the pod spec (capabilities,
/// seccomp, no-new-privileges, read-only root, the bpffs and key mounts,
/// the entrypoint) is accepted by podman and gives a speaker that attaches
/// and answers. Only the arguments are replaced: `speaker run` needs an API
/// server.
#[test]
fn chart_pod_spec_attaches_under_podman() {
    use speaker_tests::pod_spec::{speaker_container, PodIdentity, PodmanTarget};

    let lab = ImageLab::new();
    let rendered = fs::read_to_string(workspace_root().join("tests/fixtures/chart-default.yaml"))
        .expect("reading the rendered chart fixture");
    let identity = PodIdentity {
        node_name: "node-a".into(),
        pod_name: "lb-xdp-speaker-lab".into(),
        namespace: "lb-system".into(),
        pod_ip: NODE_V4.split('/').next().unwrap().into(),
        pod_uid: "00000000-0000-4000-8000-000000000001".into(),
    };
    let mut pod = speaker_container(&rendered, &identity).expect("resolving the chart's pod spec");
    assert_eq!(
        pod.security
            .add
            .iter()
            .map(|c| format!("CAP_{c}"))
            .collect::<Vec<_>>(),
        chart_capabilities(),
        "tests/fixtures/chart-default.yaml is older than values.yaml: re-render it"
    );
    pod.args = [
        "xdp",
        "attach",
        "--interface",
        &lab.node_if,
        "--mode",
        "generic",
        "--pin-dir",
        POD_PIN_DIR,
    ]
    .map(String::from)
    .to_vec();
    let key_dir = lab.run_dir.join("memberlist-key");
    fs::create_dir_all(&key_dir).unwrap();
    fs::write(key_dir.join("secretkey"), [7u8; 32]).unwrap();
    let target = PodmanTarget {
        netns: lab.node_ns.clone(),
        host_dirs: [
            ("bpffs".to_owned(), lab.bpffs.clone()),
            ("memberlist-key".to_owned(), key_dir),
        ]
        .into_iter()
        .collect(),
        name: None,
        image: Some(image().to_owned()),
        extra: Vec::new(),
    };
    let args = pod
        .podman_args(&target)
        .expect("podman arguments for the pod spec");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let attach = run("podman", &args);
    assert!(
        attach.status.success(),
        "podman {}: {}",
        args.join(" "),
        show(&attach)
    );

    let vip = lab.speaker(
        &chart_capabilities(),
        &[],
        &[
            "vip",
            "add",
            VIP_V4,
            "--interface",
            &lab.node_if,
            "--pin-dir",
            POD_PIN_DIR,
        ],
    );
    assert!(vip.status.success(), "vip add in the image: {}", show(&vip));
    let node_mac = lab.node_mac();
    let arping = lab.arping_vip();
    let macs = reply_macs(&arping);
    assert!(
        !macs.is_empty() && macs.iter().all(|mac| *mac == node_mac),
        "replies for {VIP_V4} should all come from {node_mac}: {macs:?}\n{arping}"
    );
}

#[test]
fn reply_macs_from_both_arping_flavours() {
    let iputils = "ARPING 192.0.2.100 from 192.0.2.10 ic1\n\
        Unicast reply from 192.0.2.100 [5A:BB:06:4F:E6:D1]  0.527ms\n\
        Sent 1 probes (1 broadcast(s))\nReceived 1 response(s)\n";
    assert_eq!(reply_macs(iputils), ["5a:bb:06:4f:e6:d1"]);
    let habets = "ARPING 192.0.2.100\n\
        42 bytes from 5a:bb:06:4f:e6:d1 (192.0.2.100): index=0 time=1.2 msec\n";
    assert_eq!(reply_macs(habets), ["5a:bb:06:4f:e6:d1"]);
    assert!(reply_macs("Sent 3 probes\nReceived 0 response(s)\n").is_empty());
}
