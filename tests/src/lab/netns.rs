//! Network namespaces and the lab's directories under /run.
//!
//! Every lab names its namespaces `xdpspk-<pid>-<lab id>-<host>` and its
//! directory `/run/xdp-speaker-tests/<pid>-<lab id>`, so that tests may run
//! in parallel and [`reap_stale`] can tell, from the process id, what a
//! killed run left behind.
//!
//! The private bpffs of a lab is mounted under its /run directory and not
//! inside `ip netns exec` (such a mount would vanish with the command, and
//! /sys/fs/bpf is hidden there); every host gets a distinct pin directory in
//! it, apart from the others' as on separate machines.

use std::{
    fs::{self, File},
    io,
    path::Path,
    thread,
    time::Duration,
};

use nix::{
    sched::{setns, CloneFlags},
    sys::signal::{kill, Signal},
    unistd::Pid,
};

use super::{
    command::{must, run, CmdOutput, Spawn},
    wait_for,
};

/// Where labs mount their bpffs.
pub const RUN_ROOT: &str = "/run/xdp-speaker-tests";
/// Prefix of every namespace a lab creates.
pub const NETNS_PREFIX: &str = "xdpspk-";

/// Runs `program args` inside namespace `ns` and captures its output.
pub fn exec(ns: &str, program: &str, args: &[&str], timeout: Duration) -> CmdOutput {
    Spawn::tool(program).in_netns(ns).args(args).run(timeout)
}

/// `ip netns add ns` and its loopback up; panics on failure.
pub fn add(ns: &str) {
    must("ip", &["netns", "add", ns]);
    must("ip", &["-n", ns, "link", "set", "lo", "up"]);
}

/// Gives `dev` in `ns` its addresses (`v4`/24, `v6`/64) and sets it up;
/// panics on failure.
pub fn configure_interface(ns: &str, dev: &str, v4: Option<&str>, v6: Option<&str>) {
    if let Some(v4) = v4 {
        must(
            "ip",
            &["-n", ns, "addr", "add", &format!("{v4}/24"), "dev", dev],
        );
    }
    if let Some(v6) = v6 {
        // nodad: no Duplicate Address Detection traffic to disturb counters,
        // and the address is usable at once.
        let v6 = format!("{v6}/64");
        must("ip", &["-n", ns, "addr", "add", &v6, "dev", dev, "nodad"]);
    }
    must("ip", &["-n", ns, "link", "set", dev, "up"]);
}

/// The MAC of `dev` in `ns`, lower case; panics when there is none.
pub fn link_mac(ns: &str, dev: &str) -> String {
    let out = must("ip", &["-n", ns, "-j", "link", "show", "dev", dev]);
    let link: serde_json::Value = serde_json::from_str(&out.stdout).unwrap_or_default();
    link[0]["address"]
        .as_str()
        .map(super::mac::normalize)
        .unwrap_or_else(|| panic!("no MAC on {dev} in {ns}:\n{out}"))
}

/// `ip netns del ns`, ignoring failures (used while unwinding).
pub fn delete(ns: &str) {
    let _ = run("ip", &["netns", "del", ns], Duration::from_secs(30));
}

/// True when `/run/netns/<ns>` exists.
pub fn exists(ns: &str) -> bool {
    Path::new("/run/netns").join(ns).exists()
}

/// Moves the calling thread (only it) into network namespace `ns`.
pub fn enter(ns: &str) -> io::Result<()> {
    let file = File::open(Path::new("/run/netns").join(ns))?;
    setns(&file, CloneFlags::CLONE_NEWNET).map_err(io::Error::from)
}

/// Runs `f` on a fresh thread that has entered network namespace `ns` (only
/// that thread: sockets it opens belong to the namespace and stay usable
/// from any thread afterwards; threads it spawns start there too).
pub fn in_namespace<T: Send>(ns: &str, f: impl FnOnce() -> T + Send) -> T {
    thread::scope(|scope| {
        scope
            .spawn(move || {
                enter(ns).unwrap_or_else(|e| panic!("setns into {ns}: {e}"));
                f()
            })
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

/// Kills (SIGKILL, by id) every process in network namespace `ns` but this
/// one, and waits up to 5 s for them to go.
pub fn kill_processes(ns: &str) {
    let pids = |ns: &str| run("ip", &["netns", "pids", ns], Duration::from_secs(30)).stdout;
    let found = pids(ns);
    for pid in found.split_whitespace() {
        if let Ok(pid) = pid.parse::<i32>() {
            if pid > 1 && pid as u32 != std::process::id() {
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
        }
    }
    if !found.trim().is_empty() {
        // Let them go before their namespace does.
        let _ = wait_for(Duration::from_secs(5), || {
            pids(ns).trim().is_empty().then_some(())
        });
    }
}

/// `fs::create_dir_all`, retried: another process removing an empty parent
/// between the creation of the parent and that of the child makes it fail
/// with `NotFound`.
pub fn create_dir_all(dir: &Path) {
    let mut attempts = 0;
    loop {
        match fs::create_dir_all(dir) {
            Ok(()) => return,
            Err(e) if e.kind() == io::ErrorKind::NotFound && attempts < 20 => {
                attempts += 1;
                thread::sleep(Duration::from_millis(10));
            }
            Err(e) => panic!("creating {}: {e}", dir.display()),
        }
    }
}

/// Creates `path` and mounts a bpffs on it; panics on failure.
pub fn mount_bpffs(path: &Path) {
    create_dir_all(path);
    must("mount", &["-t", "bpf", "bpf", &path.to_string_lossy()]);
}

pub fn is_mount_point(path: &Path) -> bool {
    let Ok(mounts) = fs::read_to_string("/proc/self/mounts") else {
        return false;
    };
    let wanted = path.to_string_lossy();
    mounts
        .lines()
        .any(|l| l.split_whitespace().nth(1) == Some(wanted.as_ref()))
}

/// Unmounts `dir/bpffs` (when mounted) and removes `dir` with everything in
/// it, never while anything is still mounted below it. [`RUN_ROOT`] itself
/// stays: removing it while a parallel lab is creating its directory under
/// it makes that lab fail.
pub fn remove_run_dir(dir: &Path) {
    let bpffs = dir.join("bpffs");
    if is_mount_point(&bpffs) {
        let path = bpffs.to_string_lossy().into_owned();
        let out = run("umount", &[&path], Duration::from_secs(30));
        if !out.success() {
            let _ = run("umount", &["-l", &path], Duration::from_secs(30));
        }
    }
    if is_mount_point(&bpffs) {
        eprintln!("warning: {} is still mounted", bpffs.display());
        return;
    }
    if dir.exists() {
        let _ = fs::remove_dir_all(dir);
    }
}

/// The process id a lab name (namespace without the prefix, or directory
/// under [`RUN_ROOT`]) starts with.
fn owner_pid(name: &str) -> Option<u32> {
    name.split('-').next()?.parse().ok()
}

/// Removes what labs of dead processes left behind (killed runs cannot
/// clean up in `Drop`): the processes still in their namespaces (speakers
/// die with their parent; other background commands may not), the
/// namespaces, and their directories under [`RUN_ROOT`] (bpffs included).
pub fn reap_stale() {
    let me = std::process::id();
    let stale = |name: &str| {
        owner_pid(name)
            .is_some_and(|pid| pid != me && !Path::new("/proc").join(pid.to_string()).exists())
    };
    if let Ok(entries) = fs::read_dir("/run/netns") {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.strip_prefix(NETNS_PREFIX).is_some_and(stale) {
                kill_processes(&name);
                delete(&name);
            }
        }
    }
    if let Ok(entries) = fs::read_dir(RUN_ROOT) {
        for entry in entries.flatten() {
            if stale(&entry.file_name().to_string_lossy()) {
                remove_run_dir(&entry.path());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owners_of_lab_names() {
        assert_eq!(owner_pid("1234-0-node"), Some(1234));
        assert_eq!(owner_pid("1234-f3-iris1"), Some(1234));
        assert_eq!(owner_pid("1234-f3"), Some(1234));
        assert_eq!(owner_pid("x-1"), None);
    }
}
