//! Zero-handover restarts (issue 10, item 3), seen from outside.
//!
//! Gossip labs: three node namespaces (iris1..3, 192.0.2.11–13) running
//! `speaker run` from the cluster-state file with gossip (one key), a prober
//! client (192.0.2.10) sending a broadcast ARP request for the VIP every
//! 50 ms and an idle client (192.0.2.20) that resolves the VIP once and
//! then sends nothing, on one bridge.
//!
//! - `rolling_restart_moves_no_ip` (`lan`) and
//!   `rolling_restart_moves_no_ip_with_the_fast_profile` (`fast`, whose
//!   failure detection, about 2 s, is shorter than the 3 s each new speaker
//!   waits here, so only the peers' holds keep the owner elected): every
//!   speaker in turn is stopped with `--on-stop restart` (with `lan`: the
//!   default `--on-stop` and SIGUSR2 before the SIGTERM) and started again. No request is lost, every
//!   request is answered by the owner's MAC alone, the idle client's entry
//!   stays on the owner, and the restarted owner sends no gratuitous burst
//!   for the IPs it never stopped owning.
//! - `a_restart_without_a_new_speaker_fails_over_after_the_window`
//!   (`fast`, `--restart-window 5`): the owner stops for a restart and no
//!   speaker comes back: the owner's MAC goes on answering alone until
//!   about the window (long past the 2 s detection), then the successor
//!   takes over and the idle client follows it.
//!
//! Kubernetes (`kube_stop_follows_the_daemon_set`, one node against the
//! stand-in API server, `--on-stop auto`): while the Pod's DaemonSet exists
//! and selects the node, SIGTERM is a restart (pins keep answering, the
//! watchdog limit is the restart window); once the node no longer matches
//! its nodeSelector, or the DaemonSet is deleted, it is a handover (the VIP
//! is withdrawn).
//!
//! Needs root, iproute2 and ping; fails, not skips, without them.
//! `RESTART_LAB_LOGS=1` prints every speaker's log at the end. Run:
//! `cargo test -p speaker-tests --test restart_lab`.

use std::{
    sync::{Mutex, MutexGuard},
    thread,
    time::{Duration, Instant},
};

use nix::sys::signal::Signal;
use serde_json::json;
use speaker_tests::{
    kube_emulator::Part,
    lab::{
        kube::{iris_example, KubeLab, NODE},
        probe::{self, ArpProbe},
        require_root, speaker_bin,
        trio::{Profile, Trio, TrioSpec, NODES, SETTLE_LIMIT, VIP_V4},
    },
};

/// A takeover after the window: the holds end, the election moves, the
/// successor programs and announces; with slack for a loaded machine.
const TAKEOVER_LIMIT: Duration = Duration::from_secs(4);
const PROBE_INTERVAL: Duration = Duration::from_millis(50);

/// One lab at a time: the timings assume the cores are not shared (the
/// trio labs also take the trio's own lock; the Kubernetes lab only this).
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

/// The three-node lab with `profile` and `extra` for every speaker.
fn trio(profile: Profile, extra: &[&str]) -> Trio {
    Trio::start(
        TrioSpec {
            logs_env: "RESTART_LAB_LOGS",
            ..TrioSpec::default()
        }
        .profile(profile)
        .args(extra),
    )
}

/// Requests answered by anyone but `mac` alone.
fn not_answered_by_only<'a>(probes: &'a [ArpProbe], mac: &str) -> Vec<&'a ArpProbe> {
    probes
        .iter()
        .filter(|p| p.macs().into_iter().collect::<Vec<_>>() != [mac.to_owned()])
        .collect()
}

/// With the default `--on-stop` (`auto`, a handover without Kubernetes):
/// SIGUSR2 before each SIGTERM makes the stop a restart.
#[test]
fn rolling_restart_moves_no_ip() {
    rolling_restart(Profile::Lan, Duration::ZERO, StopAs::Sigusr2);
}

/// Each new speaker starts 3 s after the old one stopped (a pod being
/// replaced takes seconds), past `fast`'s failure detection: only the
/// holds keep the stopped node elected.
#[test]
fn rolling_restart_moves_no_ip_with_the_fast_profile() {
    rolling_restart(Profile::Fast, Duration::from_secs(3), StopAs::OnStopRestart);
}

/// How the speakers are told that a stop is a restart.
#[derive(Clone, Copy, PartialEq, Eq)]
enum StopAs {
    OnStopRestart,
    Sigusr2,
}

/// Restarts every speaker in turn, each new one `pause` after the old one
/// exited.
fn rolling_restart(profile: Profile, pause: Duration, stop_as: StopAs) {
    let _serial = serial();
    let extra: &[&str] = match stop_as {
        StopAs::OnStopRestart => &["--on-stop", "restart"],
        StopAs::Sigusr2 => &[],
    };
    let lab = trio(profile, extra);
    let owner = lab.settled_owner();
    let owner_mac = lab.mac(&owner);
    lab.idle_resolves(&owner);
    // Past the first owner's own gratuitous burst (rounds up to 4.4 s): a
    // burst from the restarted owner must be its own, not a leftover.
    thread::sleep(Duration::from_secs(5));

    let t0 = Instant::now();
    let probing = lab.probing(PROBE_INTERVAL);
    thread::sleep(Duration::from_millis(500));
    let mut timings = Vec::new();
    // Every process's log, the stopped ones included.
    let mut logs: Vec<(String, String)> = Vec::new();
    for node in NODES {
        if stop_as == StopAs::Sigusr2 {
            let speaker = lab.speaker(node);
            speaker.signal(Signal::SIGUSR2);
            assert!(
                speaker
                    .wait_log("the next stop is a restart", Duration::from_secs(3))
                    .is_some(),
                "{node} did not take SIGUSR2:\n{}",
                speaker.log()
            );
        }
        let stopped = Instant::now();
        logs.push((node.to_owned(), lab.speaker(node).log()));
        lab.stop(node);
        let exited = stopped.elapsed();
        thread::sleep(pause);
        // Rejoined: it has passed the settle gate (so it has synced its
        // maps, adopting what was pinned) and counts every member.
        lab.restart(node, &[]);
        lab.wait_members(&NODES, 3, SETTLE_LIMIT);
        lab.wait_owner(&owner, &NODES, SETTLE_LIMIT);
        timings.push((node, exited, stopped.elapsed()));
        thread::sleep(Duration::from_millis(500));
    }
    let probes = probing.stop().probes;
    let timeline = lab.timeline(&probes, t0);
    eprintln!("rolling restart ({profile:?}): (node, exited after, back after) {timings:?}");

    let lost = probe::unanswered(&probes);
    assert!(
        lost.is_empty(),
        "requests {lost:?} went unanswered during the rolling restart:\n{timeline}\n{}",
        lab.fabric.all_logs()
    );
    let wrong = not_answered_by_only(&probes, &owner_mac);
    assert!(
        wrong.is_empty(),
        "{} request(s) were not answered by {owner} ({owner_mac}) alone:\n{timeline}\n{}",
        wrong.len(),
        lab.fabric.all_logs()
    );
    assert!(probes.len() >= 40, "only {} requests sent", probes.len());
    assert_eq!(
        lab.idle_entry(),
        Some(owner_mac.clone()),
        "the idle client's entry left the owner {owner}:\n{}",
        lab.fabric.all_logs()
    );
    let restarted = lab.speaker(&owner);
    assert!(
        restarted
            .wait_log("restartAdopted", Duration::ZERO)
            .is_some()
            || restarted
                .wait_log("adopting them without a gratuitous burst", Duration::ZERO)
                .is_some(),
        "the restarted owner did not take the handoff:\n{}",
        restarted.log()
    );
    assert!(
        restarted
            .wait_log(&format!("announcing {VIP_V4} on"), Duration::ZERO)
            .is_none(),
        "the restarted owner sent a gratuitous burst for an IP it never stopped owning:\n{}",
        restarted.log()
    );
    // No member set lost a node: nobody re-elected. (foca may declare the
    // restarting node down meanwhile; the hold keeps it in the set.)
    for node in NODES {
        logs.push((node.to_owned(), lab.speaker(node).log()));
    }
    for (node, log) in &logs {
        let sets: Vec<&str> = log.lines().filter(|l| l.contains("members: ")).collect();
        let full = |line: &str| NODES.iter().all(|n| line.contains(n));
        let partial_after_full: Vec<&&str> = sets
            .iter()
            .skip_while(|line| !full(line))
            .filter(|line| !full(line))
            .collect();
        assert!(
            partial_after_full.is_empty() && !log.contains("left the cluster"),
            "a process on {node} saw a member go during the rolling restart: \
             {partial_after_full:?}\n{log}"
        );
    }
}

#[test]
fn a_restart_without_a_new_speaker_fails_over_after_the_window() {
    let _serial = serial();
    let window = Duration::from_secs(5);
    let lab = trio(
        Profile::Fast,
        &["--on-stop", "restart", "--restart-window", "5"],
    );
    let owner = lab.settled_owner();
    let owner_mac = lab.mac(&owner);
    let survivors: Vec<&str> = NODES.iter().copied().filter(|n| *n != owner).collect();
    let successor = lab.elected(&survivors);
    let successor_mac = lab.mac(&successor);
    lab.idle_resolves(&owner);

    let probing = lab.probing(PROBE_INTERVAL);
    thread::sleep(Duration::from_millis(500));
    let stopped = Instant::now();
    lab.stop(&owner);
    let first = probing.wait_answer_from(&successor_mac, stopped, window + TAKEOVER_LIMIT);
    thread::sleep(Duration::from_secs(2));
    let probes = probing.stop().probes;
    let timeline = lab.timeline(&probes, stopped);
    let Some((_, at)) = first else {
        panic!(
            "{successor} never took over after the window:\n{timeline}\n{}",
            lab.fabric.all_logs()
        )
    };
    let failover = at - stopped;
    eprintln!("restart without a new speaker: {successor} answered {failover:?} after the stop");
    // Held well past fast failure detection (about 2 s): only the owner
    // answers until shortly before the window ends.
    let held: Vec<ArpProbe> = probes
        .iter()
        .filter(|p| p.sent >= stopped && p.sent < stopped + window - Duration::from_millis(500))
        .cloned()
        .collect();
    let wrong = not_answered_by_only(&held, &owner_mac);
    assert!(
        wrong.is_empty() && held.len() >= 40,
        "within the window {owner} ({owner_mac}) must answer alone ({} of {} did not):\n{timeline}\n{}",
        wrong.len(),
        held.len(),
        lab.fabric.all_logs()
    );
    assert!(
        failover >= window - Duration::from_millis(500),
        "{successor} took over {failover:?} after the stop, inside the {window:?} window"
    );
    let after: Vec<ArpProbe> = probes
        .iter()
        .filter(|p| p.sent >= at + Duration::from_millis(500))
        .cloned()
        .collect();
    assert!(
        after.len() >= 10 && not_answered_by_only(&after, &successor_mac).is_empty(),
        "after the takeover {successor} must answer alone:\n{timeline}"
    );
    lab.idle_follows(&successor, at, Duration::from_secs(3), "after the window");
    for node in survivors {
        assert!(
            lab.speaker(node)
                .wait_log("is restarting", Duration::ZERO)
                .is_some(),
            "{node} never held {owner}:\n{}",
            lab.speaker(node).log()
        );
    }
}

const POD_NAME: &str = "lb-xdp-speaker-r3st4";
const POD_UID: &str = "7a2d3c4b-1e0f-4a5b-9c8d-7e6f5a4b3c2d";
const POD_NAMESPACE: &str = "lb-system";
const DAEMON_SET: &str = "lb-xdp-speaker";

#[test]
fn kube_stop_follows_the_daemon_set() {
    require_root();
    speaker_bin();
    let _serial = serial();
    let mut k = KubeLab::new(&[iris_example()]);
    let kube = k.kube();
    kube.patch(
        Part::Object,
        "v1",
        "Node",
        None,
        NODE,
        json!({"metadata": {"labels": {"tier": "edge"}}}),
    );
    kube.create(json!({
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": {"name": DAEMON_SET, "namespace": POD_NAMESPACE},
        "spec": {
            "selector": {"matchLabels": {"app": "speaker"}},
            "template": {
                "metadata": {"labels": {"app": "speaker"}},
                "spec": {
                    "nodeSelector": {"tier": "edge"},
                    "containers": [{"name": "speaker", "image": "speaker"}],
                },
            },
        },
    }));
    let ds_uid = kube
        .get("apps/v1", "DaemonSet", Some(POD_NAMESPACE), DAEMON_SET)
        .expect("the DaemonSet")["metadata"]["uid"]
        .clone();
    kube.create(json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": POD_NAME,
            "namespace": POD_NAMESPACE,
            "uid": POD_UID,
            "ownerReferences": [{
                "apiVersion": "apps/v1", "kind": "DaemonSet", "name": DAEMON_SET,
                "uid": ds_uid, "controller": true,
            }],
        },
        "spec": {"containers": [{"name": "speaker", "image": "speaker"}]},
    }));
    // Not the dead-man limit without gossip (10 s): the next speaker tells a
    // restart's limit from the normal one.
    let args = [
        "--restart-window",
        "8",
        "--on-stop",
        "auto",
        "--pod-name",
        POD_NAME,
        "--pod-uid",
        POD_UID,
        "--memberlist-pod-namespace",
        POD_NAMESPACE,
    ];
    let react = Duration::from_secs(15);

    // (a) The DaemonSet exists and selects the node: a restart.
    k.start_speaker(NODE, &args);
    assert!(k.wait_vip(VIP_V4, true, react), "{}", k.diagnostics());
    let (log, clean) = k.stop_speaker(Duration::from_secs(10));
    assert!(clean, "the speaker did not stop cleanly:\n{log}");
    assert!(
        log.contains("still selects node") && log.contains("stopping for a restart"),
        "SIGTERM with the DaemonSet selecting the node was not a restart:\n{log}"
    );
    let maps = k.try_maps_json().expect("speaker maps after the stop");
    assert!(
        k.vips().iter().any(|v| v == VIP_V4),
        "a restart stop withdrew {VIP_V4}: {maps:#}"
    );
    assert_eq!(
        maps["watchdog"]["max_age_seconds"].as_f64(),
        Some(8.0),
        "the dead-man limit is not the restart window: {maps:#}"
    );

    // (b) The node no longer matches the nodeSelector: a handover.
    k.start_speaker(NODE, &args);
    assert!(
        k.speaker().wait_log("restartAdopted", react).is_some()
            || k.speaker()
                .wait_log("adopting them without a gratuitous burst", Duration::ZERO)
                .is_some(),
        "the next speaker did not take the restart handoff:\n{}",
        k.diagnostics()
    );
    assert!(k.wait_vip(VIP_V4, true, react), "{}", k.diagnostics());
    k.kube().patch(
        Part::Object,
        "v1",
        "Node",
        None,
        NODE,
        json!({"metadata": {"labels": {"tier": "core"}}}),
    );
    // The Node watch must have brought the new label before the stop.
    thread::sleep(Duration::from_secs(2));
    let (log, clean) = k.stop_speaker(Duration::from_secs(10));
    assert!(clean, "the speaker did not stop cleanly:\n{log}");
    assert!(
        log.contains("no longer selects node") && log.contains("handing over"),
        "SIGTERM with the node no longer selected was not a handover:\n{log}"
    );
    assert!(
        k.wait_vip(VIP_V4, false, Duration::from_secs(3)),
        "a handover left {VIP_V4} answering"
    );

    // (c) The DaemonSet is deleted: a handover.
    k.kube().patch(
        Part::Object,
        "v1",
        "Node",
        None,
        NODE,
        json!({"metadata": {"labels": {"tier": "edge"}}}),
    );
    k.start_speaker(NODE, &args);
    assert!(k.wait_vip(VIP_V4, true, react), "{}", k.diagnostics());
    k.kube()
        .delete("apps/v1", "DaemonSet", Some(POD_NAMESPACE), DAEMON_SET);
    let (log, clean) = k.stop_speaker(Duration::from_secs(10));
    assert!(clean, "the speaker did not stop cleanly:\n{log}");
    assert!(
        log.contains("is gone") && log.contains("handing over"),
        "SIGTERM with the DaemonSet deleted was not a handover:\n{log}"
    );
    assert!(
        k.wait_vip(VIP_V4, false, Duration::from_secs(3)),
        "a handover left {VIP_V4} answering"
    );
}
