//! `speaker run` end to end against the kube emulator, in a network-namespace
//! [`Lab`].
//!
//! The emulator (`serve.py`) listens on 127.0.0.1 only, and a speaker in
//! another network namespace cannot reach the root namespace's loopback. So
//! the emulator runs **inside the lab's node namespace**, next to the
//! speaker, and both share that namespace's loopback (which the lab brings
//! up):
//!
//! ```text
//!   node namespace                                   client namespace
//!   lo: kube emulator 127.0.0.1:PORT                 arping
//!   speaker run --kubeconfig (server: that URL)
//!   xn<pid>_<seq> (XDP responder, native) ────────── xc<pid>_<seq> (XDP pass-through)
//! ```
//!
//! [`NsEmulator`] starts the emulator with the public
//! [`KubeEmulator`] API from a worker thread that first joins the node
//! namespace with `setns(2)` ([`super::netns::enter`]; only that thread moves; the process it spawns
//! inherits the thread's namespace). The same thread then serves every
//! request the test makes (create, patch, delete, list, compact) on a Tokio
//! runtime of its own, so that every socket it opens is in the node
//! namespace too. The speaker is started with `ip netns exec`, like every
//! other command of the lab, so it sees the node namespace's own /sys.
//!
//! Everything is torn down in `Drop`, in order: the speaker (SIGKILL if it
//! still runs), the emulator, the kubeconfig and the speaker's log (in the
//! lab's directory under /run), then the lab (namespaces, bpffs). What
//! killed runs left is removed when the next lab starts
//! ([`super::reap_stale`]).

use std::{
    fs::{self, File},
    path::{Path, PathBuf},
    sync::mpsc,
    thread::{self, JoinHandle},
    time::Duration,
};

use serde_json::Value;

use super::{
    arping::{Arping, ArpingReport},
    command::{run, CmdOutput},
    maps::vips_on,
    netns::enter as enter_netns,
    pair::{Lab, Side},
    speaker::{Speaker, SpeakerLaunch},
    wait_for,
};
use crate::kube_emulator::{emulator_dir, KubeEmulator, Part};

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

// ---------------------------------------------------------------------------
// The emulator inside a namespace
// ---------------------------------------------------------------------------

/// Creates the emulator's venv from the root namespace (its `setup.sh` may
/// need PyPI, which the lab's namespaces cannot reach), under the same lock
/// file as [`KubeEmulator`], so that the emulator started later inside the
/// namespace only finds it.
fn prepare_emulator_venv() {
    let setup = emulator_dir().join("setup.sh");
    assert!(
        setup.is_file(),
        "kube emulator not found at {} (set KUBE_EMULATOR_DIR)",
        setup.display()
    );
    let cache = Path::new(&std::env::var("HOME").unwrap_or_else(|_| "/root".into())).join(".cache");
    fs::create_dir_all(&cache).expect("creating ~/.cache");
    let lock = File::create(cache.join("kube-emulator-venv.lock")).expect("creating lock file");
    lock.lock().expect("locking the emulator venv");
    let out = run(
        "bash",
        &[&setup.to_string_lossy()],
        Duration::from_secs(300),
    );
    drop(lock);
    assert!(out.success(), "the emulator's setup.sh failed:\n{out}");
}

type Job = Box<dyn FnOnce(&KubeEmulator, &tokio::runtime::Runtime) + Send>;

/// A [`KubeEmulator`] running in a network namespace, owned by a worker
/// thread in that namespace which runs every request. Stopped on drop.
pub struct NsEmulator {
    jobs: Option<mpsc::Sender<Job>>,
    worker: Option<JoinHandle<()>>,
    url: String,
}

impl NsEmulator {
    /// Starts the emulator in network namespace `ns` with `load` preloaded.
    pub fn start(ns: &str, load: &[PathBuf]) -> NsEmulator {
        prepare_emulator_venv();
        let (jobs, queue) = mpsc::channel::<Job>();
        let (ready_tx, ready) = mpsc::channel::<thread::Result<String>>();
        let ns = ns.to_owned();
        let load = load.to_vec();
        let worker = thread::Builder::new()
            .name(format!("kube-emulator-{ns}"))
            .spawn(move || {
                let started = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    enter_netns(&ns).unwrap_or_else(|e| panic!("setns into {ns}: {e}"));
                    let paths: Vec<&Path> = load.iter().map(PathBuf::as_path).collect();
                    let emulator = KubeEmulator::start(&paths);
                    let runtime = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .expect("a Tokio runtime");
                    (emulator, runtime)
                }));
                let (emulator, runtime) = match started {
                    Ok(started) => started,
                    Err(panic) => {
                        let _ = ready_tx.send(Err(panic));
                        return;
                    }
                };
                let _ = ready_tx.send(Ok(emulator.url().to_owned()));
                while let Ok(job) = queue.recv() {
                    job(&emulator, &runtime);
                }
                // Dropping the emulator kills it.
            })
            .expect("spawning the emulator thread");
        let url = match ready.recv() {
            Ok(Ok(url)) => url,
            Ok(Err(panic)) => {
                let _ = worker.join();
                std::panic::resume_unwind(panic)
            }
            Err(_) => panic!("the emulator thread ended without a word"),
        };
        NsEmulator {
            jobs: Some(jobs),
            worker: Some(worker),
            url,
        }
    }

    /// `http://127.0.0.1:PORT`, reachable inside the namespace only.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Runs `f` on the worker (in the namespace); a panic in `f` is raised
    /// again here.
    pub fn with<R: Send + 'static>(
        &self,
        f: impl FnOnce(&KubeEmulator, &tokio::runtime::Runtime) -> R + Send + 'static,
    ) -> R {
        let (reply_tx, reply) = mpsc::channel();
        let job: Job = Box::new(move |emulator, runtime| {
            let result =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(emulator, runtime)));
            let _ = reply_tx.send(result);
        });
        self.jobs
            .as_ref()
            .expect("the emulator is stopped")
            .send(job)
            .expect("the emulator thread is gone");
        match reply.recv().expect("the emulator thread is gone") {
            Ok(value) => value,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }

    /// What the emulator printed on stderr so far.
    pub fn stderr(&self) -> String {
        self.with(|emulator, _| emulator.stderr())
    }

    /// Creates `object` and returns it as stored.
    pub fn create(&self, object: Value) -> Value {
        self.with(move |emulator, runtime| runtime.block_on(emulator.create(object)))
    }

    /// A JSON merge patch of an object or of its `status`.
    pub fn patch(
        &self,
        part: Part,
        api_version: &str,
        kind: &str,
        namespace: Option<&str>,
        name: &str,
        patch: Value,
    ) -> Value {
        let (api_version, kind, name) = (api_version.to_owned(), kind.to_owned(), name.to_owned());
        let namespace = namespace.map(str::to_owned);
        self.with(move |emulator, runtime| {
            runtime.block_on(emulator.patch(
                part,
                &api_version,
                &kind,
                namespace.as_deref(),
                &name,
                patch,
            ))
        })
    }

    pub fn delete(&self, api_version: &str, kind: &str, namespace: Option<&str>, name: &str) {
        let (api_version, kind, name) = (api_version.to_owned(), kind.to_owned(), name.to_owned());
        let namespace = namespace.map(str::to_owned);
        self.with(move |emulator, runtime| {
            runtime.block_on(emulator.delete(&api_version, &kind, namespace.as_deref(), &name))
        })
    }

    pub fn get(
        &self,
        api_version: &str,
        kind: &str,
        namespace: Option<&str>,
        name: &str,
    ) -> Option<Value> {
        let (api_version, kind, name) = (api_version.to_owned(), kind.to_owned(), name.to_owned());
        let namespace = namespace.map(str::to_owned);
        self.with(move |emulator, runtime| {
            runtime.block_on(emulator.get(&api_version, &kind, namespace.as_deref(), &name))
        })
    }

    /// The objects of a kind in `namespace` (all namespaces for `None`).
    pub fn list(&self, api_version: &str, kind: &str, namespace: Option<&str>) -> Vec<Value> {
        let (api_version, kind) = (api_version.to_owned(), kind.to_owned());
        let namespace = namespace.map(str::to_owned);
        self.with(move |emulator, runtime| {
            runtime.block_on(emulator.list(&api_version, &kind, namespace.as_deref()))
        })
    }

    /// `POST /_kmock/compact`: every open watch fails with `410 Gone`.
    pub fn compact(&self) {
        self.with(|emulator, _| emulator.compact())
    }
}

impl Drop for NsEmulator {
    fn drop(&mut self) {
        // Closing the queue ends the worker, which drops (kills) the emulator.
        self.jobs.take();
        if let Some(worker) = self.worker.take() {
            let _ = worker.join();
        }
    }
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
    kube: Option<NsEmulator>,
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
        let kube = NsEmulator::start(&kube_lab.lab.node_ns, load);
        fs::write(&kube_lab.kubeconfig, kubeconfig_for(kube.url()))
            .unwrap_or_else(|e| panic!("writing {}: {e}", kube_lab.kubeconfig.display()));
        kube_lab.kube = Some(kube);
        kube_lab
    }

    /// The emulator (requests run inside the node namespace).
    pub fn kube(&self) -> &NsEmulator {
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
        }));
        self.speaker()
    }

    pub fn speaker(&self) -> &Speaker {
        self.speaker.as_ref().expect("no speaker running")
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

    /// Context for assertion messages: the speaker's log and the emulator's
    /// stderr (its last lines).
    pub fn diagnostics(&self) -> String {
        let log = self.speaker.as_ref().map(Speaker::log).unwrap_or_default();
        let emulator = self
            .kube
            .as_ref()
            .map(NsEmulator::stderr)
            .unwrap_or_default();
        let tail: Vec<&str> = emulator.lines().rev().take(20).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        format!(
            "--- speaker log ---\n{log}--- emulator stderr (last lines) ---\n{}",
            tail.join("\n")
        )
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
