//! The container image `cargo xtask image` builds, run the way the Helm chart
//! runs it: under podman, in the node namespace of a `speaker_tests::lab::Lab`
//! (nothing attached on its client side), root file system read-only, ALL
//! capabilities dropped and exactly the chart's `speaker.capabilities` added,
//! with the chart's `speaker.seccompProfile` (both read from
//! charts/xdp-speaker/values.yaml), the lab's bpffs bind-mounted at
//! /sys/fs/bpf and `--pin-dir /sys/fs/bpf/xdp-speaker` as in the DaemonSet.
//!
//! ```text
//!   node ns (xdpspk-<pid>-<n>-node)            client ns (xdpspk-<pid>-<n>-client)
//!   xn<pid>_<n> 192.0.2.1/24  ───── veth ─────  xc<pid>_<n> 192.0.2.10/24
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
//! - `reply_macs_from_both_arping_flavours`: the reply MACs these tests
//!   compare are read from either arping package's output.
//!
//! Needs root, podman and runc (`cargo xtask image` installs them), iproute2,
//! arping, and the archive `target/image/xdp-speaker-<appVersion>.oci.tar`
//! that `cargo xtask image` writes; fails, not skips, without them. Run:
//! `cargo xtask image && cargo test -p speaker-tests --test image_lab`.

use std::{
    fs,
    path::{Path, PathBuf},
    sync::OnceLock,
};

use serde::Deserialize;
use speaker_tests::{
    lab::{
        arping::{parse_arping, Arping, ArpingReport},
        maps::parse_maps,
        pair::{NODE_V4, VIP_V4},
        podman::{self, speaker_image, PODMAN_TIMEOUT},
        vip_answered, workspace_root, CmdOutput, Lab, Spawn,
    },
    pod_spec::PODMAN_ULIMITS,
};

/// The DaemonSet mounts the host's bpffs here and pins below it.
const POD_BPFFS: &str = "/sys/fs/bpf";
const POD_PIN_DIR: &str = "/sys/fs/bpf/xdp-speaker";
/// Where the cluster-state file is mounted for `speaker run`.
const POD_STATE: &str = "/etc/xdp-speaker/state.yaml";

// ---------------------------------------------------------------------------
// What the chart says
// ---------------------------------------------------------------------------

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

fn chart_values() -> &'static ChartValues {
    static VALUES: OnceLock<ChartValues> = OnceLock::new();
    VALUES.get_or_init(|| {
        let path = workspace_root().join("charts/xdp-speaker/values.yaml");
        let text =
            fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
        serde_yaml_ng::from_str(&text).unwrap_or_else(|e| panic!("parsing {}: {e}", path.display()))
    })
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
// The image in the lab
// ---------------------------------------------------------------------------

/// `podman run` of the image in the lab's node namespace, as the chart runs
/// it, with `capabilities` added after dropping ALL and the lab's bpffs as
/// the host's.
fn speaker_in_image(
    lab: &Lab,
    capabilities: &[String],
    mounts: &[(&Path, &str)],
    args: &[&str],
) -> CmdOutput {
    let mut podman = podman::command(&["run", "--rm", "--read-only"])
        .args(PODMAN_ULIMITS)
        .args(["--network", &format!("ns:/run/netns/{}", lab.node_ns)])
        .arg("--cap-drop=ALL")
        .args(capabilities.iter().map(|c| format!("--cap-add={c}")))
        .args(chart_seccomp_options())
        // HostToContainer, as the chart mounts the host's bpffs.
        .args([
            "--volume",
            &format!("{}:{POD_BPFFS}:rw,rslave", lab.bpffs.display()),
        ]);
    for (host, pod) in mounts {
        podman = podman.args(["--volume", &format!("{}:{pod}:ro", host.display())]);
    }
    podman.arg(speaker_image()).args(args).run(PODMAN_TIMEOUT)
}

/// Three ARP requests for the VIP from the client, within 5 s.
/// `speaker xdp attach` of the node interface in generic mode, pinned in the
/// pod's pin directory.
fn generic_attach_args(lab: &Lab) -> [&str; 8] {
    [
        "xdp",
        "attach",
        "--interface",
        &lab.node_if,
        "--mode",
        "generic",
        "--pin-dir",
        POD_PIN_DIR,
    ]
}

fn arping_vip(lab: &Lab) -> (CmdOutput, ArpingReport) {
    lab.arping(&Arping::new(VIP_V4, &lab.client_if, 3).deadline(5))
}

/// Exited on its own with a failure status (not killed at the time limit).
fn refused(out: &CmdOutput) -> bool {
    !out.timed_out && !out.status.success()
}

/// The lab's pinned XDP link of the node interface, as the container's
/// `--pin-dir` leaves it on the host's bpffs.
fn pinned_link(lab: &Lab) -> PathBuf {
    lab.bpffs.join("xdp-speaker/links").join(&lab.node_if)
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

#[test]
fn chart_capabilities_answer_arp() {
    let lab = Lab::new();
    let capabilities = chart_capabilities();

    // Generic mode: XDP_TX on a native-mode veth is dropped unless the peer
    // has an XDP program too (kernel quirk), and the client has none.
    let attach = speaker_in_image(&lab, &capabilities, &[], &generic_attach_args(&lab));
    assert!(attach.success(), "xdp attach in the image:\n{attach}");
    assert!(
        attach
            .stdout
            .contains(&format!("attached xdp_speaker to {}", lab.node_if)),
        "{attach}"
    );
    // The link is pinned on the node's bpffs, outliving the container.
    assert!(pinned_link(&lab).exists());

    add_vip_and_expect_answers(&lab, &capabilities);

    // The answers came from the data plane: its per-VIP counter moved.
    let maps = speaker_in_image(
        &lab,
        &capabilities,
        &[],
        &["maps", "--json", "--pin-dir", POD_PIN_DIR],
    );
    let report = parse_maps(&maps, "the image");
    assert!(
        vip_answered(&report, VIP_V4).is_some_and(|n| n >= 1),
        "VIP_ANSWERED for {VIP_V4} did not move: {report}"
    );
}

#[test]
fn each_missing_chart_capability_is_named() {
    let lab = Lab::new();
    let capabilities = chart_capabilities();
    let state = workspace_root().join("docs/examples/iris-regression.yaml");
    for missing in &capabilities {
        let kept: Vec<String> = capabilities
            .iter()
            .filter(|c| *c != missing)
            .cloned()
            .collect();
        let output = speaker_in_image(
            &lab,
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
            refused(&output),
            "speaker run without {missing} did not fail:\n{output}"
        );
        let lines = output.stderr_lines();
        assert_eq!(
            lines.len(),
            1,
            "speaker run without {missing}: not one line:\n{output}"
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
    let attach = speaker_in_image(
        &lab,
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
        refused(&attach),
        "xdp attach without CAP_BPF did not fail:\n{attach}"
    );
    let lines = attach.stderr_lines();
    assert_eq!(lines.len(), 1, "{attach}");
    assert!(
        lines[0].starts_with("speaker: error: missing capability CAP_BPF ("),
        "{:?}",
        lines[0]
    );
    // Nothing was attached.
    assert!(!pinned_link(&lab).exists());
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

    let lab = Lab::new();
    let rendered = fs::read_to_string(workspace_root().join("tests/fixtures/chart-default.yaml"))
        .expect("reading the rendered chart fixture");
    let identity = PodIdentity {
        node_name: "node-a".into(),
        pod_name: "lb-xdp-speaker-lab".into(),
        namespace: "lb-system".into(),
        pod_ip: NODE_V4.into(),
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
    pod.args = generic_attach_args(&lab).map(String::from).to_vec();
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
        image: Some(speaker_image().to_owned()),
        extra: Vec::new(),
    };
    let args = pod
        .podman_args(&target)
        .expect("podman arguments for the pod spec");
    // The arguments start with podman's global options already.
    let attach = Spawn::tool("podman").args(&args).run(PODMAN_TIMEOUT);
    assert!(
        attach.success(),
        "the chart's pod spec under podman:\n{attach}"
    );

    add_vip_and_expect_answers(&lab, &chart_capabilities());
}

/// `speaker vip add` of [`VIP_V4`] in the image (with `capabilities`), then
/// the client's ARP requests for it answered by the node's MAC only.
fn add_vip_and_expect_answers(lab: &Lab, capabilities: &[String]) {
    let vip = speaker_in_image(
        lab,
        capabilities,
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
    assert!(vip.success(), "vip add in the image:\n{vip}");
    let (arping, report) = arping_vip(lab);
    let macs = report.macs();
    assert!(!macs.is_empty(), "no ARP reply for {VIP_V4}:\n{arping}");
    assert!(
        macs.iter().all(|mac| *mac == lab.node_mac),
        "replies for {VIP_V4} not all from the node's {}: {macs:?}\n{arping}",
        lab.node_mac
    );
}

#[test]
fn reply_macs_from_both_arping_flavours() {
    let iputils = "ARPING 192.0.2.100 from 192.0.2.10 ic1\n\
        Unicast reply from 192.0.2.100 [5A:BB:06:4F:E6:D1]  0.527ms\n\
        Sent 1 probes (1 broadcast(s))\nReceived 1 response(s)\n";
    assert_eq!(parse_arping(iputils).macs(), ["5a:bb:06:4f:e6:d1"]);
    let habets = "ARPING 192.0.2.100\n\
        42 bytes from 5a:bb:06:4f:e6:d1 (192.0.2.100): index=0 time=1.2 msec\n";
    assert_eq!(parse_arping(habets).macs(), ["5a:bb:06:4f:e6:d1"]);
    assert!(parse_arping("Sent 3 probes\nReceived 0 response(s)\n")
        .macs()
        .is_empty());
}
