//! Restart stops: ownership stays put while one speaker process replaces
//! another on the same node (issue 10, item 3).
//!
//! At a restart stop the speaker does not leave the gossip. It
//! 1. stops its heartbeat thread and writes one last heartbeat with the
//!    dead-man limit raised to the restart window, so the XDP program goes
//!    on answering without a process;
//! 2. asks every member to hold it for the window (`membership::hold`): they
//!    keep it in their member sets while foca suspects it and declares it
//!    down, so nobody re-elects;
//! 3. exits, leaving the pins.
//!
//! The next speaker adopts the pins, restores the normal limit with its
//! first heartbeat and joins under a newer generation, which replaces the
//! old one in every peer's view and ends the holds with no change in any
//! member set. It also finds the raised limit in the pinned watchdog entry
//! ([`is_restart_handoff`]): the entries it adopts were answered without a
//! gap and, the holds having kept every peer's election where it was, no
//! other MAC was announced for them, so it sends no gratuitous burst for
//! them. Every entry it adds or moves still announces (`gains`).
//!
//! If no speaker comes, the window ends on both sides at about the same
//! time: the dead-man switch stops the answers and the holds expire, and
//! ordinary failure detection (foca has declared the node down long ago)
//! moves the IPs.

use std::time::Duration;

use tracing::{info, warn};

use super::{
    config::{RunConfig, Source},
    context::Context,
    handover::OnStop,
    heartbeat::Heartbeat,
    reconcile::NodeState,
};
use crate::{
    dataplane::WatchdogState,
    kube::{self, restart::StopVerdict},
};

/// What this stop does, decided when it happens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StopKind {
    Restart,
    Handover,
    Keep,
}

/// The stop kind for `--on-stop` and `restart_requested` (SIGUSR2 seen);
/// with `auto` and Kubernetes, asks the API server.
pub async fn decide(config: &RunConfig, node: &NodeState, restart_requested: bool) -> StopKind {
    if restart_requested {
        info!(
            event = "stopKind",
            kind = "restart",
            "SIGUSR2 was received: this stop is a restart"
        );
        return StopKind::Restart;
    }
    match config.on_stop {
        OnStop::Restart => StopKind::Restart,
        OnStop::Handover => StopKind::Handover,
        OnStop::Keep => StopKind::Keep,
        OnStop::Auto => {
            let verdict = ask_api_server(config, node).await;
            match verdict {
                StopVerdict::Restart => {
                    info!(
                        event = "stopKind",
                        kind = "restart",
                        "this Pod's DaemonSet still selects node {}: a restart",
                        config.node_name
                    );
                    StopKind::Restart
                }
                StopVerdict::RealStop(why) => {
                    info!(event = "stopKind", kind = "handover", "{why}: handing over");
                    StopKind::Handover
                }
            }
        }
    }
}

async fn ask_api_server(config: &RunConfig, node: &NodeState) -> StopVerdict {
    let Source::Kubernetes { kubeconfig } = &config.source else {
        return StopVerdict::RealStop("no Kubernetes API (cluster-state file)".to_owned());
    };
    let Some(pod) = &config.speaker_pod else {
        return StopVerdict::RealStop("this Pod is unknown (no --pod-name/--pod-uid)".to_owned());
    };
    let client = match kube::client(kubeconfig.as_deref()).await {
        Ok(client) => client,
        Err(e) => return StopVerdict::RealStop(format!("no client for the API server: {e}")),
    };
    let namespace = pod
        .namespace
        .clone()
        .unwrap_or_else(|| config.options.metallb_namespace.clone());
    let labels = node
        .reconciler
        .view()
        .node(&config.node_name)
        .map(|n| &n.labels);
    kube::restart::judge(client, pod, &namespace, &config.node_name, labels).await
}

/// The restart stop (see the module comment). `heartbeat` is stopped first:
/// a beat after the extension would be harmless, but a beat racing it could
/// write the old limit back.
pub async fn stop_for_restart(ctx: &mut Context, node: &NodeState, heartbeat: Heartbeat) {
    drop(heartbeat);
    let window = ctx.config.restart_window;
    if ctx.config.dead_man.is_zero() {
        info!("restart: the dead-man switch is off; the pins answer until a speaker changes them");
    } else if let Err(e) = ctx.maps.heartbeat(Some(window)) {
        warn!(error = %e, "restart: cannot extend the dead-man limit ({e}); answers stop within {:?}", ctx.config.dead_man);
    }
    if let Some(gossip) = &node.gossip {
        gossip.hold_for_restart(window).await;
    }
    info!(
        event = "restartStop",
        "stopping for a restart: still a member, answering for {window:?} for the next speaker"
    );
}

/// Whether the pinned watchdog entry was left by a restart stop that is
/// still within its window: the limit is the restart window (and cannot be
/// confused with the normal limit) and the last heartbeat is younger.
pub fn is_restart_handoff(
    state: &WatchdogState,
    restart_window: Duration,
    dead_man: Duration,
) -> bool {
    restart_window != dead_man
        && state.max_age == Some(restart_window)
        && state.heartbeat_age.is_some_and(|age| age < restart_window)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_live_restart_window_is_a_handoff() {
        let window = Duration::from_secs(10);
        let dead_man = Duration::from_secs(6);
        let state = |age_ms: u64, max_s: u64| WatchdogState {
            heartbeat_age: Some(Duration::from_millis(age_ms)),
            max_age: Some(Duration::from_secs(max_s)),
        };
        assert!(is_restart_handoff(&state(1500, 10), window, dead_man));
        // Past the window: the switch already stopped the answers.
        assert!(!is_restart_handoff(&state(10_500, 10), window, dead_man));
        // The normal limit: a crash or a keep stop; others may have announced.
        assert!(!is_restart_handoff(&state(500, 6), window, dead_man));
        // Switch off, never written, or a window equal to the normal limit.
        let off = WatchdogState {
            heartbeat_age: Some(Duration::from_millis(1)),
            max_age: None,
        };
        assert!(!is_restart_handoff(&off, window, dead_man));
        let fresh = WatchdogState {
            heartbeat_age: None,
            max_age: Some(window),
        };
        assert!(!is_restart_handoff(&fresh, window, dead_man));
        assert!(!is_restart_handoff(&state(500, 10), window, window));
    }
}
