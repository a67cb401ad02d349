//! The stand-in Kubernetes API server (`shared/tools/kube-emulator`) for
//! tests of the Kubernetes source and the status writer.
//!
//! [`KubeEmulator::start`] creates the emulator's Python venv once (its
//! `setup.sh`, which installs the pinned `kmock` from PyPI; a file lock keeps
//! parallel test binaries from building it twice), starts `serve.py` on a
//! free port with the given files preloaded, and kills it on `Drop`. Objects
//! are created, patched and deleted with kube-rs as [`Value`]s named by
//! `apiVersion`, `kind`, namespace and name; [`KubeEmulator::compact`] makes
//! every open watch fail with `410 Gone`.
//!
//! The emulator is found at `$KUBE_EMULATOR_DIR`, else at
//! `shared/tools/kube-emulator` next to the workspace. It is required: a
//! test that cannot start it fails, it is never skipped.

use std::{
    fs::{self, File},
    io::{BufRead, BufReader, Read, Write},
    net::TcpStream,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{mpsc, Arc, Mutex, OnceLock},
    thread,
    time::Duration,
};

use kube::{
    api::{Api, ApiResource, DeleteParams, DynamicObject, ListParams, Patch, PatchParams},
    Client, Config,
};
use serde_json::Value;

/// How long `serve.py` may take to print `READY`.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// Where the emulator's files are.
pub fn emulator_dir() -> PathBuf {
    match std::env::var_os("KUBE_EMULATOR_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/tools/kube-emulator"),
    }
}

/// The venv's python, set up once per process (and once per machine).
fn python() -> &'static Path {
    static PYTHON: OnceLock<PathBuf> = OnceLock::new();
    PYTHON.get_or_init(|| {
        let setup = emulator_dir().join("setup.sh");
        assert!(
            setup.is_file(),
            "kube emulator not found at {} (set KUBE_EMULATOR_DIR)",
            setup.display()
        );
        let cache =
            Path::new(&std::env::var("HOME").unwrap_or_else(|_| "/root".into())).join(".cache");
        fs::create_dir_all(&cache).expect("creating ~/.cache");
        let lock = File::create(cache.join("kube-emulator-venv.lock")).expect("creating lock file");
        lock.lock().expect("locking the emulator venv");
        let output = Command::new("bash")
            .arg(&setup)
            .stderr(Stdio::inherit())
            .output()
            .expect("running the emulator's setup.sh");
        drop(lock);
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "{} failed ({}): {stdout}",
            setup.display(),
            output.status
        );
        let python = PathBuf::from(stdout.lines().last().unwrap_or_default().trim());
        assert!(
            python.is_file(),
            "setup.sh printed no python path: {stdout:?}"
        );
        python
    })
}

/// What a patch writes: the object (whose `status` a real API server
/// ignores there) or its `status` subresource.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Part {
    Object,
    Status,
}

/// A running emulator; killed on drop.
pub struct KubeEmulator {
    child: Child,
    url: String,
    stderr: Arc<Mutex<String>>,
}

impl KubeEmulator {
    /// Starts an emulator with the objects of `load` (multi-document YAML).
    pub fn start(load: &[&Path]) -> KubeEmulator {
        let mut command = Command::new(python());
        command
            .arg(emulator_dir().join("serve.py"))
            .args(["--port", "0"]);
        for file in load {
            command.arg("--load").arg(file);
        }
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting the kube emulator");

        let stderr = Arc::new(Mutex::new(String::new()));
        let mut pipe = child.stderr.take().unwrap();
        let collected = Arc::clone(&stderr);
        thread::spawn(move || {
            let mut buffer = [0u8; 4096];
            while let Ok(n @ 1..) = pipe.read(&mut buffer) {
                let text = String::from_utf8_lossy(&buffer[..n]);
                collected.lock().unwrap().push_str(&text);
            }
        });
        let (lines_tx, lines) = mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = lines_tx.send(line);
            }
        });

        let mut emulator = KubeEmulator {
            child,
            url: String::new(),
            stderr,
        };
        match lines.recv_timeout(START_TIMEOUT) {
            Ok(line) if line.starts_with("READY ") => {
                emulator.url = line
                    .split_whitespace()
                    .nth(1)
                    .unwrap_or_default()
                    .to_owned();
            }
            other => panic!(
                "kube emulator did not start ({other:?}); stderr:\n{}",
                emulator.stderr()
            ),
        }
        // Keep draining stdout so the emulator never blocks on it.
        thread::spawn(move || while lines.recv().is_ok() {});
        emulator
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// What the emulator printed on stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// A client for the emulator (no authentication). Needs a Tokio runtime.
    pub fn client(&self) -> Client {
        let config = Config::new(self.url.parse().expect("emulator URL"));
        Client::try_from(config).expect("kube client")
    }

    fn api(&self, api_version: &str, kind: &str, namespace: Option<&str>) -> Api<DynamicObject> {
        let resource = api_resource(api_version, kind);
        match namespace {
            Some(namespace) => Api::namespaced_with(self.client(), namespace, &resource),
            None => Api::all_with(self.client(), &resource),
        }
    }

    /// Creates `object` (`apiVersion`, `kind` and `metadata.namespace` say
    /// where) and returns it as stored.
    pub async fn create(&self, object: Value) -> Value {
        let text = |field: &str| object[field].as_str().map(str::to_owned);
        let (api_version, kind) = (text("apiVersion").unwrap(), text("kind").unwrap());
        let namespace = object["metadata"]["namespace"].as_str().map(str::to_owned);
        let object: DynamicObject = serde_json::from_value(object).expect("a Kubernetes object");
        let created = self
            .api(&api_version, &kind, namespace.as_deref())
            .create(&Default::default(), &object)
            .await
            .unwrap_or_else(|e| panic!("creating {kind}: {e}"));
        serde_json::to_value(created).unwrap()
    }

    /// A JSON merge patch of the object or of its `status` subresource.
    pub async fn patch(
        &self,
        part: Part,
        api_version: &str,
        kind: &str,
        namespace: Option<&str>,
        name: &str,
        patch: Value,
    ) -> Value {
        let api = self.api(api_version, kind, namespace);
        let (params, patch) = (PatchParams::default(), Patch::Merge(&patch));
        let patched = match part {
            Part::Object => api.patch(name, &params, &patch).await,
            Part::Status => api.patch_status(name, &params, &patch).await,
        };
        let patched = patched.unwrap_or_else(|e| panic!("patching {kind} {name} ({part:?}): {e}"));
        serde_json::to_value(patched).unwrap()
    }

    pub async fn delete(&self, api_version: &str, kind: &str, namespace: Option<&str>, name: &str) {
        self.api(api_version, kind, namespace)
            .delete(name, &DeleteParams::default())
            .await
            .unwrap_or_else(|e| panic!("deleting {kind} {name}: {e}"));
    }

    pub async fn get(
        &self,
        api_version: &str,
        kind: &str,
        namespace: Option<&str>,
        name: &str,
    ) -> Option<Value> {
        self.api(api_version, kind, namespace)
            .get_opt(name)
            .await
            .unwrap_or_else(|e| panic!("reading {kind} {name}: {e}"))
            .map(|object| serde_json::to_value(object).unwrap())
    }

    /// The objects of a kind in `namespace` (all namespaces for `None`).
    pub async fn list(&self, api_version: &str, kind: &str, namespace: Option<&str>) -> Vec<Value> {
        self.api(api_version, kind, namespace)
            .list(&ListParams::default())
            .await
            .unwrap_or_else(|e| panic!("listing {kind}: {e}"))
            .items
            .into_iter()
            .map(|object| serde_json::to_value(object).unwrap())
            .collect()
    }

    /// Every open watch fails with `410 Gone`, as after an etcd compaction.
    pub fn compact(&self) {
        let address = self.url.trim_start_matches("http://");
        let mut stream = TcpStream::connect(address).expect("connecting to the emulator");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        write!(
            stream,
            "POST /_kmock/compact HTTP/1.1\r\nHost: {address}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut response = String::new();
        let _ = stream.read_to_string(&mut response);
        assert!(
            response.starts_with("HTTP/1.1 200"),
            "compact failed: {response}"
        );
    }
}

impl Drop for KubeEmulator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The resource of a kind; plurals follow the regular English rule, which
/// covers every kind the tests use (`ServiceL2Status` → `servicel2statuses`).
pub fn api_resource(api_version: &str, kind: &str) -> ApiResource {
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
    let lower = kind.to_lowercase();
    let plural = if lower.ends_with('s') {
        format!("{lower}es")
    } else {
        format!("{lower}s")
    };
    ApiResource {
        group: group.to_owned(),
        version: version.to_owned(),
        api_version: api_version.to_owned(),
        kind: kind.to_owned(),
        plural,
    }
}
