//! `speaker run` end to end against the stand-in API server
//! ([`kube_standin`]), in a network-namespace [`Lab`].
//!
//! The stand-in listens on 127.0.0.1, and a speaker in another network
//! namespace cannot reach the root namespace's loopback. So the stand-in
//! serves **inside the lab's node namespace**, next to the speaker, and both
//! share that namespace's loopback (which the lab brings up):
//!
//! ```text
//!   node namespace                                   client namespace
//!   lo: stand-in API server 127.0.0.1:PORT           arping
//!   speaker run --kubeconfig (server: that URL)
//!   xn<pid>_<seq> (XDP responder, native) ────────── xc<pid>_<seq> (XDP pass-through)
//! ```
//!
//! [`KubeEmulator::start_in`] starts the stand-in with its network-namespace option: its
//! server thread joins the node namespace with `setns(2)` before it binds
//! (only that thread moves). The test changes objects with the stand-in's
//! in-process calls, which open no sockets. The speaker is started with
//! `ip netns exec`, like every other command of the lab, so it sees the
//! node namespace's own /sys.
//!
//! Everything is torn down in `Drop`, in order: the speaker (SIGKILL if it
//! still runs), the emulator, the kubeconfig and cluster files, then the lab
//! (namespaces, bpffs). Temporary directories of killed runs are removed
//! when the next lab starts.

use std::{
    fs,
    path::{Path, PathBuf},
    time::Duration,
};

use kube_standin::Options;
use serde_json::Value;

use super::{
    arping::{Arping, ArpingReport},
    command::CmdOutput,
    maps::vips_on,
    pair::{Lab, Side},
    speaker::{Speaker, SpeakerLaunch},
    wait_for,
};
use crate::kube_emulator::KubeEmulator;

/// The node this lab's speaker runs as (the iris example's node with the
/// endpoint).
pub const NODE: &str = "iris1";
/// The other node of the iris example.
pub const OTHER_NODE: &str = "iris2";
/// Where MetalLB's objects live.
pub const METALLB_NAMESPACE: &str = "metallb-system";
pub const METALLB: &str = "metallb.io/v1beta1";
pub const EVENTS: &str = "events.k8s.io/v1";

/// `docs/examples/iris-regression.yaml`: nodes iris1 and iris2, pool and
/// advertisement `lab`, Service default/web (ETP Local, 192.0.2.100) with
/// its endpoint on iris1.
pub fn iris_example() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/examples/iris-regression.yaml")
}

/// A kubeconfig whose only cluster is `url`, without credentials.
pub fn kubeconfig_for(url: &str) -> String {
    format!(
        "apiVersion: v1\n\
         kind: Config\n\
         clusters:\n\
         - name: emulator\n  cluster:\n    server: {url}\n\
         contexts:\n\
         - name: emulator\n  context:\n    cluster: emulator\n    user: nobody\n\
         current-context: emulator\n\
         users:\n\
         - name: nobody\n  user: {{}}\n"
    )
}

// ---------------------------------------------------------------------------
// The lab
// ---------------------------------------------------------------------------

/// A [`Lab`] whose node namespace runs the kube emulator and `speaker run`.
/// Fields are public for the tests; tear-down is in `Drop`.
pub struct KubeLab {
    speaker: Option<Speaker>,
    kube: Option<KubeEmulator>,
    /// Holds the kubeconfig and the speaker's log (inside the lab's
    /// directory under /run).
    pub temp_dir: PathBuf,
    pub kubeconfig: PathBuf,
    /// Declared last: dropped after everything above is gone.
    pub lab: Lab,
}

impl KubeLab {
    /// Builds the namespaces (node and client on a veth pair, see [`Lab`]),
    /// attaches the pass-through program to the client's veth (the
    /// speaker attaches its responder in native mode), and starts the
    /// emulator in the node namespace with `load` preloaded. The speaker is
    /// started by [`KubeLab::start_speaker`].
    pub fn new(load: &[PathBuf]) -> KubeLab {
        KubeLab::with_options(load, Options::default())
    }

    /// [`KubeLab::new`] with the stand-in started with `options` (its
    /// network namespace and preload are the lab's).
    pub fn with_options(load: &[PathBuf], options: Options) -> KubeLab {
        let lab = Lab::new();
        let temp_dir = lab.run_dir.join("kube");
        let mut kube_lab = KubeLab {
            speaker: None,
            kube: None,
            kubeconfig: temp_dir.join("kubeconfig"),
            temp_dir,
            lab,
        };
        let _ = fs::remove_dir_all(&kube_lab.temp_dir);
        fs::create_dir_all(&kube_lab.temp_dir)
            .unwrap_or_else(|e| panic!("creating {}: {e}", kube_lab.temp_dir.display()));
        kube_lab.lab.attach_pass_through().assert_success();
        let kube = KubeEmulator::start_in_with(&kube_lab.lab.node_ns, load, options);
        fs::write(&kube_lab.kubeconfig, kubeconfig_for(kube.url()))
            .unwrap_or_else(|e| panic!("writing {}: {e}", kube_lab.kubeconfig.display()));
        kube_lab.kube = Some(kube);
        kube_lab
    }

    /// The emulator (requests run inside the node namespace).
    pub fn kube(&self) -> &KubeEmulator {
        self.kube.as_ref().expect("the emulator is stopped")
    }

    /// Starts `speaker run --node-name node --kubeconfig … --pin-dir <node
    /// pin dir> --memberlist=false --mode native --exclude-interfaces ^lo$`
    /// plus `extra` in the node namespace.
    pub fn start_speaker(&mut self, node: &str, extra: &[&str]) -> &Speaker {
        assert!(self.speaker.is_none(), "a speaker is already running");
        let mut args: Vec<String> = [
            "run",
            "--node-name",
            node,
            "--kubeconfig",
            &self.kubeconfig.to_string_lossy(),
            "--pin-dir",
            &self.lab.pin_dir.to_string_lossy(),
            "--memberlist=false",
            "--mode",
            "native",
            "--exclude-interfaces",
            "^lo$",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend(extra.iter().map(|s| s.to_string()));
        self.speaker = Some(Speaker::start(SpeakerLaunch {
            host: node.to_owned(),
            netns: self.lab.ns(Side::Node).to_owned(),
            args,
            log_path: self.temp_dir.join("speaker.log"),
            rust_log: "info".to_owned(),
            env: Vec::new(),
            open_files_limit: None,
        }));
        self.speaker()
    }

    pub fn speaker(&self) -> &Speaker {
        self.speaker.as_ref().expect("no speaker running")
    }

    /// SIGTERM to the speaker, waiting at most `limit` for it to exit; its
    /// log, and whether it exited successfully. A later
    /// [`KubeLab::start_speaker`] may then start another.
    pub fn stop_speaker(&mut self, limit: Duration) -> (String, bool) {
        let speaker = self.speaker.take().expect("no speaker running");
        let status = speaker.terminate(limit);
        (speaker.log(), status.is_some_and(|s| s.success()))
    }

    /// `speaker maps --json` in the node, parsed; `None` while it fails
    /// (e.g. before the daemon created the pins).
    pub fn try_maps_json(&self) -> Option<Value> {
        let out = self.lab.speaker(Side::Node, &["maps", "--json"]);
        if !out.success() {
            return None;
        }
        serde_json::from_str(&out.stdout).ok()
    }

    /// The VIPs `speaker maps --json` lists on the node's veth (none while
    /// nothing is pinned).
    pub fn vips(&self) -> Vec<String> {
        self.try_maps_json()
            .map(|maps| vips_on(&maps, &self.lab.node_if))
            .unwrap_or_default()
    }

    /// Waits until `ip` is (`present`) or is not in the node's map.
    pub fn wait_vip(&self, ip: &str, present: bool, limit: Duration) -> bool {
        wait_for(limit, || {
            (self.vips().iter().any(|v| v == ip) == present).then_some(())
        })
        .is_some()
    }

    /// arping from the client: `count` requests, giving up after
    /// `deadline` seconds.
    pub fn arping(&self, ip: &str, count: u32, deadline: u32) -> (CmdOutput, ArpingReport) {
        let arping = Arping::new(ip, &self.lab.client_if, count).deadline(deadline);
        self.lab.arping(&arping)
    }

    /// Polls `probe` (which reads the API) until it returns `Some`, at most
    /// `limit`; panics naming `what`, with [`Self::diagnostics`], if not.
    pub fn wait_api<T>(&self, what: &str, limit: Duration, probe: impl FnMut() -> Option<T>) -> T {
        wait_for(limit, probe)
            .unwrap_or_else(|| panic!("{what}: not seen within {limit:?}\n{}", self.diagnostics()))
    }

    /// The ServiceL2Statuses in MetalLB's namespace.
    pub fn statuses(&self) -> Vec<Value> {
        self.kube()
            .list(METALLB, "ServiceL2Status", Some(METALLB_NAMESPACE))
    }

    /// The ServiceL2Statuses labelled for `service` (namespace default) and
    /// `node`.
    pub fn statuses_of(&self, service: &str, node: &str) -> Vec<Value> {
        let mut found = self.statuses();
        found.retain(|s| {
            label(s, "metallb.io/service-name") == Some(service)
                && label(s, "metallb.io/service-namespace") == Some("default")
                && label(s, "metallb.io/node") == Some(node)
        });
        found
    }

    /// Context for assertion messages: the speaker's log and the last
    /// requests the stand-in served.
    pub fn diagnostics(&self) -> String {
        let log = self.speaker.as_ref().map(Speaker::log).unwrap_or_default();
        let requests = self
            .kube
            .as_ref()
            .map(KubeEmulator::request_log)
            .unwrap_or_default();
        format!("--- speaker log ---\n{log}--- last API requests ---\n{requests}")
    }
}

impl Drop for KubeLab {
    fn drop(&mut self) {
        // Never panic here: this also runs while a failed test unwinds.
        drop(self.speaker.take());
        drop(self.kube.take());
        let _ = fs::remove_dir_all(&self.temp_dir);
        // `lab` is dropped after this: namespaces, veths, XDP links, bpffs.
    }
}

/// `metadata.labels[key]` of a Kubernetes object as JSON.
pub fn label<'a>(object: &'a Value, key: &str) -> Option<&'a str> {
    object["metadata"]["labels"][key].as_str()
}
