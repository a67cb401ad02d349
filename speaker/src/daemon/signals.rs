//! What each signal does to the daemon. Operators and tools send signals
//! for their own reasons (`kill -HUP` after editing a file, log rotators,
//! profilers): a signal left at its default action would end the process
//! with nothing logged, and with it the VIPs once the dead-man switch runs
//! out. So every signal whose default action is to terminate has a handler:
//!
//! | signal | action |
//! |---|---|
//! | SIGTERM, SIGINT, SIGQUIT | stop as `--on-stop` says: restart, handover or keep (logged) |
//! | SIGHUP | re-read the configuration files: cluster state file, memberlist keyring (logged) |
//! | SIGUSR2 | the next stop is a restart, whatever `--on-stop` says (logged; for tools that restart the speaker without Kubernetes) |
//! | SIGUSR1, SIGALRM, SIGVTALRM, SIGPROF, SIGIO, SIGPWR, SIGSTKFLT, SIGXCPU, SIGXFSZ, SIGRTMIN..SIGRTMAX | logged and otherwise ignored |
//! | SIGPIPE | ignored without a log line: the Rust runtime sets it to SIG_IGN before `main`, so a write to a closed connection returns EPIPE instead |
//! | SIGILL, SIGTRAP, SIGABRT, SIGBUS, SIGFPE, SIGSEGV, SIGSYS | default: they report a fault in this process, which must not go on |
//! | SIGKILL, SIGSTOP | cannot be caught |
//!
//! SIGXCPU comes from a soft `RLIMIT_CPU`; ignoring it leaves the hard limit
//! (SIGKILL) as the end, with our log line before it.

use tokio::signal::unix::{signal, Signal, SignalKind};
use tracing::{error, info, warn};

use crate::{
    error::{Error, Result},
    membership::{Gossip, KeyringFiles},
};

/// What the daemon's loop must do about a signal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Stop (the signal's name).
    Stop(&'static str),
    /// Re-read the configuration files.
    Reload,
    /// The next stop is a restart (SIGUSR2).
    RestartNext,
}

/// The signals the daemon's loop acts on; see the module comment. The
/// logged-only ones are handled by a task of their own from [`Signals::install`].
pub struct Signals {
    terminate: Signal,
    interrupt: Signal,
    quit: Signal,
    hangup: Signal,
    restart_next: Signal,
}

/// Signals that are logged and otherwise ignored, by name.
fn logged_only() -> Vec<(String, SignalKind)> {
    use nix::{libc, sys::signal::Signal as Unix};
    let mut kinds: Vec<(String, SignalKind)> = [
        Unix::SIGUSR1,
        Unix::SIGALRM,
        Unix::SIGVTALRM,
        Unix::SIGPROF,
        Unix::SIGIO,
        Unix::SIGPWR,
        Unix::SIGSTKFLT,
        Unix::SIGXCPU,
        Unix::SIGXFSZ,
    ]
    .into_iter()
    .map(|signal| {
        (
            signal.as_str().to_owned(),
            SignalKind::from_raw(signal as i32),
        )
    })
    .collect();
    // glibc keeps the first real-time signals for its threads; SIGRTMIN()
    // is the first one free for applications.
    let (first, last) = (libc::SIGRTMIN(), libc::SIGRTMAX());
    for number in first..=last {
        kinds.push((
            format!("SIGRTMIN+{}", number - first),
            SignalKind::from_raw(number),
        ));
    }
    kinds
}

impl Signals {
    /// Installs every handler; from here on no catchable signal ends the
    /// process without a log line.
    pub fn install() -> Result<Self> {
        let install = |kind: SignalKind, name: &str| {
            signal(kind).map_err(|e| Error::io(format!("installing the {name} handler"), e))
        };
        for (name, kind) in logged_only() {
            let mut stream = install(kind, &name)?;
            tokio::spawn(async move {
                while stream.recv().await.is_some() {
                    warn!(
                        event = "signalIgnored",
                        signal = name,
                        "received {name}: no action is bound to it; ignored"
                    );
                }
            });
        }
        Ok(Signals {
            terminate: install(SignalKind::terminate(), "SIGTERM")?,
            interrupt: install(SignalKind::interrupt(), "SIGINT")?,
            quit: install(SignalKind::quit(), "SIGQUIT")?,
            hangup: install(SignalKind::hangup(), "SIGHUP")?,
            restart_next: install(SignalKind::user_defined2(), "SIGUSR2")?,
        })
    }

    /// The next signal the loop must act on.
    pub async fn next(&mut self) -> Action {
        tokio::select! {
            _ = self.terminate.recv() => Action::Stop("SIGTERM"),
            _ = self.interrupt.recv() => Action::Stop("SIGINT"),
            _ = self.quit.recv() => Action::Stop("SIGQUIT"),
            _ = self.hangup.recv() => Action::Reload,
            _ = self.restart_next.recv() => Action::RestartNext,
        }
    }
}

/// SIGHUP: asks the cluster file source to re-read its file (`cluster`,
/// absent with Kubernetes) and replaces the gossip keyring from its files.
/// A keyring that cannot be read or is invalid keeps the one in use.
pub fn reload(
    cluster: Option<&tokio::sync::Notify>,
    gossip: Option<&Gossip>,
    keyring_files: Option<&KeyringFiles>,
) {
    info!(
        event = "signalReload",
        "received SIGHUP: re-reading configuration files"
    );
    if let Some(cluster) = cluster {
        cluster.notify_one();
    }
    let (Some(gossip), Some(files)) = (gossip, keyring_files) else {
        return;
    };
    match files.load() {
        Ok(keyring) => {
            info!(
                "gossip keyring re-read from {}: {}",
                files.primary.display(),
                keyring.describe()
            );
            gossip.set_keyring(Some(keyring));
        }
        Err(e) => error!(
            error = %e,
            "keeping the gossip keyring in use: {e}"
        ),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use nix::sys::signal::{raise, Signal};

    use super::*;

    #[tokio::test]
    async fn unbound_signals_are_survived_and_sighup_asks_for_a_reload() {
        let mut signals = Signals::install().expect("installing the handlers");
        // Each of these would end the process at its default action.
        for signal in [Signal::SIGUSR1, Signal::SIGALRM, Signal::SIGPROF] {
            raise(signal).expect("raising a signal");
        }
        raise(Signal::SIGHUP).expect("raising SIGHUP");
        let action = tokio::time::timeout(Duration::from_secs(5), signals.next())
            .await
            .expect("SIGHUP reaches the loop");
        assert_eq!(action, Action::Reload);
        raise(Signal::SIGUSR2).expect("raising SIGUSR2");
        let action = tokio::time::timeout(Duration::from_secs(5), signals.next())
            .await
            .expect("SIGUSR2 reaches the loop");
        assert_eq!(action, Action::RestartNext);
    }

    #[test]
    fn every_real_time_signal_is_covered() {
        let names: Vec<String> = logged_only().into_iter().map(|(n, _)| n).collect();
        let count = (nix::libc::SIGRTMAX() - nix::libc::SIGRTMIN() + 1) as usize;
        assert_eq!(
            names.iter().filter(|n| n.starts_with("SIGRTMIN")).count(),
            count
        );
        assert!(names.iter().any(|n| n == "SIGUSR1"));
    }
}
