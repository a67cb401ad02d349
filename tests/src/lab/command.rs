//! Running external programs. Every process the labs start goes through
//! [`Spawn::start`], the one place in the tests crate that builds a
//! `std::process::Command`: it refuses programs that `tools.toml` does not
//! declare (see [`super::tools`]); the speaker binary (the project's own)
//! and `cargo` (the toolchain's) have their own entry points.

use std::{
    fmt,
    fs::File,
    io::{self, Read},
    os::unix::process::CommandExt,
    path::PathBuf,
    process::{Child, Command, ExitStatus, Stdio},
    sync::{Mutex, MutexGuard},
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

use nix::{
    sys::signal::{self, Signal},
    unistd::Pid,
};

use super::{speaker::speaker_bin, tools};

/// Default limit for any one command; the commands carry their own shorter
/// timeouts (`arping -w`, `ping -W`, `ndisc6 -w`), this only catches hangs.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

/// Which program to start.
#[derive(Clone, Debug)]
enum Program {
    /// Declared in tools.toml, found on `PATH`.
    Tool(String),
    /// `$CARGO` (the cargo running the tests) or `cargo`.
    Cargo,
    /// The project's speaker binary ([`speaker_bin`]).
    Speaker,
}

/// Where a process's stdout or stderr goes.
#[derive(Debug)]
pub enum Sink {
    Null,
    /// Read by the handle ([`Background`] collects it).
    Piped,
    File(File),
}

impl Sink {
    fn stdio(self) -> Stdio {
        match self {
            Sink::Null => Stdio::null(),
            Sink::Piped => Stdio::piped(),
            Sink::File(file) => Stdio::from(file),
        }
    }
}

/// A process to start: the program, optionally inside a network namespace
/// (`ip netns exec <ns> <program>`, which execs the program, so the child's
/// id is the program's own), its arguments and environment.
#[derive(Debug)]
pub struct Spawn {
    netns: Option<String>,
    program: Program,
    args: Vec<String>,
    env: Vec<(String, String)>,
    env_remove: Vec<String>,
    current_dir: Option<PathBuf>,
    stdout: Sink,
    stderr: Sink,
    die_with_parent: bool,
    open_files_limit: Option<u64>,
}

impl Spawn {
    fn new(program: Program) -> Spawn {
        Spawn {
            netns: None,
            program,
            args: Vec::new(),
            env: Vec::new(),
            env_remove: Vec::new(),
            current_dir: None,
            stdout: Sink::Piped,
            stderr: Sink::Piped,
            die_with_parent: false,
            open_files_limit: None,
        }
    }

    /// A program declared in tools.toml (checked when started).
    pub fn tool(command: &str) -> Spawn {
        Spawn::new(Program::Tool(command.to_owned()))
    }

    /// The project's speaker binary.
    pub fn speaker() -> Spawn {
        Spawn::new(Program::Speaker)
    }

    /// The cargo that runs the tests (`$CARGO`), else `cargo`.
    pub fn cargo() -> Spawn {
        Spawn::new(Program::Cargo)
    }

    /// Runs it inside network namespace `ns`.
    pub fn in_netns(mut self, ns: &str) -> Spawn {
        self.netns = Some(ns.to_owned());
        self
    }

    pub fn arg(mut self, arg: impl AsRef<str>) -> Spawn {
        self.args.push(arg.as_ref().to_owned());
        self
    }

    pub fn args<S: AsRef<str>>(mut self, args: impl IntoIterator<Item = S>) -> Spawn {
        self.args
            .extend(args.into_iter().map(|a| a.as_ref().to_owned()));
        self
    }

    pub fn env(mut self, key: &str, value: &str) -> Spawn {
        self.env.push((key.to_owned(), value.to_owned()));
        self
    }

    pub fn env_remove(mut self, key: &str) -> Spawn {
        self.env_remove.push(key.to_owned());
        self
    }

    pub fn current_dir(mut self, dir: impl Into<PathBuf>) -> Spawn {
        self.current_dir = Some(dir.into());
        self
    }

    pub fn stdout(mut self, sink: Sink) -> Spawn {
        self.stdout = sink;
        self
    }

    pub fn stderr(mut self, sink: Sink) -> Spawn {
        self.stderr = sink;
        self
    }

    /// `PR_SET_PDEATHSIG(SIGKILL)`: killed when the spawning thread ends
    /// (a test process killed outright leaves no daemon behind).
    pub fn die_with_parent(mut self) -> Spawn {
        self.die_with_parent = true;
        self
    }

    /// Starts it with `RLIMIT_NOFILE` at `limit`, soft and hard (so the
    /// program cannot raise it either).
    pub fn open_files_limit(mut self, limit: u64) -> Spawn {
        self.open_files_limit = Some(limit);
        self
    }

    fn executable(&self) -> String {
        match &self.program {
            Program::Tool(command) => command.clone(),
            Program::Cargo => std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned()),
            Program::Speaker => speaker_bin().to_string_lossy().into_owned(),
        }
    }

    /// The program and arguments as executed (with `ip netns exec`).
    fn argv(&self) -> (String, Vec<String>) {
        let program = self.executable();
        match &self.netns {
            Some(ns) => {
                let mut args = vec!["netns".to_owned(), "exec".to_owned(), ns.clone(), program];
                args.extend(self.args.iter().cloned());
                ("ip".to_owned(), args)
            }
            None => (program, self.args.clone()),
        }
    }

    /// The command line, for messages.
    pub fn display(&self) -> String {
        let (program, args) = self.argv();
        display_command(&program, &args)
    }

    /// Starts it; panics when the program is not declared in tools.toml or
    /// cannot be started. Returns the child and its command line.
    pub fn start(self) -> (Child, String) {
        match &self.program {
            Program::Tool(command) => {
                tools::declared(command);
            }
            Program::Cargo => {
                tools::declared("cargo");
            }
            Program::Speaker => {}
        }
        if self.netns.is_some() {
            tools::declared("ip");
        }
        let (program, args) = self.argv();
        let display = display_command(&program, &args);
        let mut command = Command::new(&program);
        command
            .args(&args)
            .stdin(Stdio::null())
            .stdout(self.stdout.stdio())
            .stderr(self.stderr.stdio());
        for key in &self.env_remove {
            command.env_remove(key);
        }
        command.envs(self.env.iter().map(|(k, v)| (k, v)));
        if let Some(dir) = &self.current_dir {
            command.current_dir(dir);
        }
        if self.die_with_parent {
            // SAFETY: prctl is async-signal-safe and nothing else runs in the
            // child before exec.
            unsafe {
                command.pre_exec(|| {
                    nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(io::Error::from)
                });
            }
        }
        if let Some(limit) = self.open_files_limit {
            // SAFETY: setrlimit is async-signal-safe; limits survive exec
            // (also `ip netns exec`'s).
            unsafe {
                command.pre_exec(move || {
                    nix::sys::resource::setrlimit(
                        nix::sys::resource::Resource::RLIMIT_NOFILE,
                        limit,
                        limit,
                    )
                    .map_err(io::Error::from)
                });
            }
        }
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start `{display}`: {e}"));
        (child, display)
    }

    /// Starts it with its output collected, in the background.
    pub fn background(self) -> Background {
        Background::start(self.stdout(Sink::Piped).stderr(Sink::Piped))
    }

    /// Runs it to the end (killed after `timeout`) and captures its output.
    pub fn run(self, timeout: Duration) -> CmdOutput {
        self.background().wait(timeout)
    }

    /// Starts it as a [`Process`] (output where the sinks say).
    pub fn process(self) -> Process {
        let started = Instant::now();
        let (child, command) = self.start();
        Process {
            command,
            pid: child.id(),
            started,
            child: Mutex::new(child),
            status: Mutex::new(None),
        }
    }
}

/// Quotes arguments with whitespace, for messages.
pub fn display_command(program: &str, args: &[String]) -> String {
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

/// Runs `program args` (in the current namespace) and captures its output,
/// killing it after `timeout`.
pub fn run(program: &str, args: &[&str], timeout: Duration) -> CmdOutput {
    Spawn::tool(program).args(args).run(timeout)
}

/// Runs a setup command that must succeed.
pub fn must(program: &str, args: &[&str]) -> CmdOutput {
    let out = run(program, args, COMMAND_TIMEOUT);
    assert!(out.success(), "lab setup failed:\n{out}");
    out
}

// ---------------------------------------------------------------------------
// Captured output
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

fn reader<R: Read + Send + 'static>(mut source: R) -> JoinHandle<String> {
    thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = source.read_to_end(&mut bytes);
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

/// A command running in the background with its output collected (e.g.
/// arping during a restart). It is killed when dropped unfinished.
pub struct Background {
    command: String,
    child: Option<Child>,
    stdout: Option<JoinHandle<String>>,
    stderr: Option<JoinHandle<String>>,
    started: Instant,
}

impl Background {
    fn start(spawn: Spawn) -> Self {
        let started = Instant::now();
        let (mut child, command) = spawn.start();
        let stdout = child.stdout.take().map(reader);
        let stderr = child.stderr.take().map(reader);
        Background {
            command,
            child: Some(child),
            stdout,
            stderr,
            started,
        }
    }

    pub fn command(&self) -> &str {
        &self.command
    }

    /// Waits for the command to end, killing it after `timeout`.
    pub fn wait(mut self, timeout: Duration) -> CmdOutput {
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

// ---------------------------------------------------------------------------
// Long-running processes
// ---------------------------------------------------------------------------

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A long-running child (a daemon, a capture) signalled by its id; killed
/// (SIGKILL) when dropped still running. Usable from several threads.
pub struct Process {
    command: String,
    pid: u32,
    started: Instant,
    child: Mutex<Child>,
    status: Mutex<Option<ExitStatus>>,
}

impl Process {
    /// The command line it was started with.
    pub fn command(&self) -> &str {
        &self.command
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    pub fn started(&self) -> Instant {
        self.started
    }

    /// Its exit status, once it has ended.
    pub fn exit_status(&self) -> Option<ExitStatus> {
        let mut status = lock(&self.status);
        if status.is_none() {
            if let Ok(Some(s)) = lock(&self.child).try_wait() {
                *status = Some(s);
            }
        }
        *status
    }

    pub fn is_running(&self) -> bool {
        self.exit_status().is_none()
    }

    /// Sends `signal` unless it has been reaped already.
    pub fn signal(&self, signal: Signal) {
        // Only while not yet reaped (reaping takes the status lock first):
        // the pid is still ours, at worst a zombie.
        let status = lock(&self.status);
        if status.is_none() {
            let _ = signal::kill(Pid::from_raw(self.pid as i32), signal);
        }
    }

    /// Waits up to `limit` for it to end.
    pub fn wait(&self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.exit_status() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Sends SIGTERM and waits up to `limit` for it to exit; `None` if it is
    /// still running then.
    pub fn terminate(&self, limit: Duration) -> Option<ExitStatus> {
        if self.is_running() {
            self.signal(Signal::SIGTERM);
        }
        self.wait(limit)
    }

    /// SIGKILL, and waits for it; panics if it survives 30 s.
    pub fn kill(&self) -> ExitStatus {
        if self.is_running() {
            self.signal(Signal::SIGKILL);
        }
        self.wait(Duration::from_secs(30))
            .unwrap_or_else(|| panic!("`{}` (pid {}) survived SIGKILL", self.command, self.pid))
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if self.is_running() {
            self.signal(Signal::SIGKILL);
            let _ = self.wait(Duration::from_secs(10));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[should_panic(expected = "not declared in tools.toml")]
    fn undeclared_programs_are_not_started() {
        Spawn::tool("no-such-tool-xyz").run(Duration::from_secs(5));
    }

    #[test]
    fn captures_output_and_status() {
        let out = run(
            "sh",
            &["-c", "echo out; echo err >&2; exit 3"],
            COMMAND_TIMEOUT,
        );
        assert_eq!(
            (out.stdout.as_str(), out.stderr.as_str()),
            ("out\n", "err\n")
        );
        assert_eq!(out.code(), Some(3));
        assert!(!out.success() && !out.timed_out);
    }

    #[test]
    fn kills_what_outlives_its_limit() {
        // `exec`: no grandchild holding the output pipes open after the kill.
        let out = run("sh", &["-c", "exec sleep 30"], Duration::from_millis(200));
        assert!(out.timed_out, "{out}");
        assert!(out.elapsed < Duration::from_secs(10), "{out}");
    }

    #[test]
    fn quotes_arguments_with_blanks() {
        let spawn = Spawn::tool("ip").in_netns("x").args(["a b", "", "c"]);
        assert_eq!(spawn.display(), "ip netns exec x ip 'a b' '' c");
    }
}
