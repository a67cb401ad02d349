//! The speaker binary and one handle for a `speaker run` process in a
//! namespace, used by every lab.

use std::{
    fs::{self, File},
    io,
    path::{Path, PathBuf},
    process::ExitStatus,
    sync::{Arc, OnceLock},
    thread,
    time::{Duration, Instant},
};

use nix::sys::signal::Signal;

use super::{
    command::{Process, Sink, Spawn},
    workspace_root,
};

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
        let mut build = Spawn::cargo()
            .current_dir(&workspace)
            .args(["build", "--quiet", "-p", "speaker"]);
        if release {
            build = build.arg("--release");
        }
        let out = build.run(Duration::from_secs(3600));
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

/// Shortens a command line for printing: the speaker's path becomes `speaker`.
pub fn pretty(command: &str) -> String {
    command.replace(&*speaker_bin().to_string_lossy(), "speaker")
}

/// `--mode` of `speaker run`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SpeakerMode {
    Auto,
    Native,
    Generic,
}

impl SpeakerMode {
    pub fn flag(self) -> &'static str {
        match self {
            SpeakerMode::Auto => "auto",
            SpeakerMode::Native => "native",
            SpeakerMode::Generic => "generic",
        }
    }
}

/// Where a speaker reads the cluster from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClusterSource {
    /// `--cluster-state <the fabric's cluster.yaml>`.
    FabricFile,
    /// `--cluster-state PATH`.
    Path(PathBuf),
    /// No `--cluster-state` (pass e.g. `--kubeconfig` in `args`).
    None,
}

/// How to start `speaker run` in a fabric host; see
/// [`super::Fabric::start_speaker`].
#[derive(Clone, Debug)]
pub struct SpeakerOptions {
    pub source: ClusterSource,
    /// `--mode`; `None`: the speaker's default.
    pub mode: Option<SpeakerMode>,
    /// `--memberlist=<bool>`; `None`: the speaker's default.
    pub memberlist: Option<bool>,
    /// Further arguments, after the ones above.
    pub args: Vec<String>,
    /// `RUST_LOG` (env_logger).
    pub rust_log: String,
    /// Further environment variables.
    pub env: Vec<(String, String)>,
    /// `RLIMIT_NOFILE` (soft and hard) to start it with; `None`: inherited.
    pub open_files_limit: Option<u64>,
}

impl Default for SpeakerOptions {
    fn default() -> Self {
        SpeakerOptions {
            source: ClusterSource::FabricFile,
            mode: None,
            memberlist: None,
            args: Vec::new(),
            rust_log: "info".to_owned(),
            env: Vec::new(),
            open_files_limit: None,
        }
    }
}

impl SpeakerOptions {
    /// The fabric's cluster file, membership disabled, in `mode`.
    pub fn file(mode: SpeakerMode) -> Self {
        SpeakerOptions {
            mode: Some(mode),
            memberlist: Some(false),
            ..Default::default()
        }
    }

    pub fn arg(mut self, arg: &str) -> Self {
        self.args.push(arg.to_owned());
        self
    }
}

/// What [`Speaker::start`] needs: where it runs and what it gets.
#[derive(Clone, Debug)]
pub struct SpeakerLaunch {
    /// The host's name, for messages.
    pub host: String,
    pub netns: String,
    /// Everything after the binary (`run --node-name …`).
    pub args: Vec<String>,
    /// Receives stdout and stderr.
    pub log_path: PathBuf,
    /// `RUST_LOG`.
    pub rust_log: String,
    pub env: Vec<(String, String)>,
    /// See [`SpeakerOptions::open_files_limit`].
    pub open_files_limit: Option<u64>,
}

struct SpeakerInner {
    host: String,
    log_path: PathBuf,
    process: Process,
}

/// A `speaker run` process in a namespace (a cheap handle: clones share
/// it). Its stdout and stderr go to [`Speaker::log_path`]. It gets
/// `PR_SET_PDEATHSIG(SIGKILL)` and is killed when the last handle goes.
#[derive(Clone)]
pub struct Speaker {
    inner: Arc<SpeakerInner>,
}

impl Speaker {
    /// Starts the speaker binary with `launch.args` inside `launch.netns`.
    /// Start it from a thread that outlives it: `PR_SET_PDEATHSIG` fires
    /// when the spawning thread ends. `KUBECONFIG` of the test's
    /// environment is not passed on (a lab names its cluster explicitly).
    pub fn start(launch: SpeakerLaunch) -> Speaker {
        let log = File::create(&launch.log_path)
            .unwrap_or_else(|e| panic!("creating {}: {e}", launch.log_path.display()));
        let log_err = log.try_clone().expect("duplicating the log descriptor");
        let mut spawn = Spawn::speaker()
            .in_netns(&launch.netns)
            .args(&launch.args)
            .env_remove("KUBECONFIG")
            .env("RUST_LOG", &launch.rust_log)
            .env("RUST_LOG_STYLE", "never")
            .stdout(Sink::File(log))
            .stderr(Sink::File(log_err))
            .die_with_parent();
        for (key, value) in &launch.env {
            spawn = spawn.env(key, value);
        }
        if let Some(limit) = launch.open_files_limit {
            spawn = spawn.open_files_limit(limit);
        }
        Speaker {
            inner: Arc::new(SpeakerInner {
                host: launch.host,
                log_path: launch.log_path,
                process: spawn.process(),
            }),
        }
    }

    pub fn host(&self) -> &str {
        &self.inner.host
    }

    /// The full command line (`ip netns exec <ns> <speaker> run …`).
    pub fn command(&self) -> &str {
        self.inner.process.command()
    }

    /// Its process id (`ip netns exec` execs the speaker, so this is the
    /// speaker's own).
    pub fn pid(&self) -> u32 {
        self.inner.process.pid()
    }

    pub fn started(&self) -> Instant {
        self.inner.process.started()
    }

    pub fn log_path(&self) -> &Path {
        &self.inner.log_path
    }

    /// Everything it logged so far.
    pub fn log(&self) -> String {
        fs::read_to_string(&self.inner.log_path).unwrap_or_default()
    }

    /// The length of the log so far (bytes), to read only what follows with
    /// [`Speaker::log_from`] or [`Speaker::log_lines_since`].
    pub fn log_len(&self) -> usize {
        self.log().len()
    }

    /// The log from byte `offset` on (as returned by [`Speaker::log_len`]).
    pub fn log_from(&self, offset: usize) -> String {
        let log = self.log();
        log.get(offset..).unwrap_or_default().to_owned()
    }

    /// The log's lines from byte `offset` on.
    pub fn log_lines_since(&self, offset: usize) -> Vec<String> {
        self.log_from(offset).lines().map(str::to_owned).collect()
    }

    /// The log lines containing `needle`.
    pub fn log_lines_with(&self, needle: &str) -> Vec<String> {
        self.log()
            .lines()
            .filter(|l| l.contains(needle))
            .map(str::to_owned)
            .collect()
    }

    /// Waits up to `limit` until a log line from byte `offset` on satisfies
    /// `wanted`; returns that line.
    pub fn wait_log_line(
        &self,
        offset: usize,
        limit: Duration,
        wanted: impl Fn(&str) -> bool,
    ) -> Option<String> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(line) = self.log_from(offset).lines().find(|l| wanted(l)) {
                return Some(line.to_owned());
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits up to `limit` until the log (from byte `offset`) has a line
    /// containing `needle`; returns that line.
    pub fn wait_log_from(&self, offset: usize, needle: &str, limit: Duration) -> Option<String> {
        self.wait_log_line(offset, limit, |l| l.contains(needle))
    }

    /// [`Speaker::wait_log_from`] from the start of the log.
    pub fn wait_log(&self, needle: &str, limit: Duration) -> Option<String> {
        self.wait_log_from(0, needle, limit)
    }

    /// Its exit status, once it has ended.
    pub fn exit_status(&self) -> Option<ExitStatus> {
        self.inner.process.exit_status()
    }

    pub fn is_running(&self) -> bool {
        self.inner.process.is_running()
    }

    /// Waits up to `limit` for it to end.
    pub fn wait(&self, limit: Duration) -> Option<ExitStatus> {
        self.inner.process.wait(limit)
    }

    /// Sends SIGTERM and waits up to `limit` for it to exit; `None` if it is
    /// still running then.
    pub fn terminate(&self, limit: Duration) -> Option<ExitStatus> {
        self.inner.process.terminate(limit)
    }

    /// [`Speaker::terminate`], then SIGKILL if it did not exit within
    /// `limit`: the exit status and whether it ended in time.
    pub fn terminate_or_kill(&self, limit: Duration) -> (ExitStatus, bool) {
        match self.terminate(limit) {
            Some(status) => (status, true),
            None => (self.kill(), false),
        }
    }

    /// SIGKILL, and waits for it.
    pub fn kill(&self) -> ExitStatus {
        self.inner.process.kill()
    }

    /// Sends `signal` (any signal: what the daemon does with it is what
    /// the fault lab checks).
    pub fn signal(&self, signal: Signal) {
        self.inner.process.signal(signal);
    }

    /// SIGSTOP: the whole process stalls (its heartbeat thread too), as
    /// under CPU throttling or a long pause.
    pub fn suspend(&self) {
        self.signal(Signal::SIGSTOP);
    }

    /// SIGCONT after [`Speaker::suspend`].
    pub fn resume(&self) {
        self.signal(Signal::SIGCONT);
    }

    /// Its resident set now and its peak (`VmRSS`, `VmHWM` of
    /// /proc/PID/status), in bytes.
    pub fn memory(&self) -> io::Result<Memory> {
        let status = fs::read_to_string(format!("/proc/{}/status", self.pid()))?;
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|rest| rest.trim().strip_suffix("kB"))
                .and_then(|kb| kb.trim().parse::<u64>().ok())
                .map(|kb| kb * 1024)
                .ok_or_else(|| io::Error::other(format!("no {name} in /proc/PID/status")))
        };
        Ok(Memory {
            resident: field("VmRSS:")?,
            peak: field("VmHWM:")?,
        })
    }

    /// Starts a new peak: the kernel resets `VmHWM` to the current resident
    /// set on `5` written to /proc/PID/clear_refs (proc(5)).
    pub fn reset_peak_memory(&self) -> io::Result<()> {
        fs::write(format!("/proc/{}/clear_refs", self.pid()), "5")
    }
}

/// What [`Speaker::memory`] reads, in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Memory {
    pub resident: u64,
    pub peak: u64,
}
