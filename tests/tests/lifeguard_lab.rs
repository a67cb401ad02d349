//! The `lan` profile seen from outside (issue 10 item 2): three node
//! namespaces (lg1..3, 192.0.2.11–13) running `speaker run` with gossip
//! (`--memberlist-profile lan`, one key) and a prober client (192.0.2.10)
//! sending a broadcast ARP request for the VIP every 50 ms.
//!
//! One lab, in order:
//! 1. the owner is stopped (SIGSTOP) for 1 s: no request is answered by
//!    another node, and no speaker logs a member going down;
//! 2. a non-owner is stopped for 2 s: no request is answered by another
//!    node than the owner (the stopped one may be declared down and rejoin);
//! 3. `LIFEGUARD_LAB_TRIALS` (default 8) times: kill -9 of the owner, the
//!    failover is the time from the kill to the first reply from the
//!    successor; the killed speaker is then started again and takes the
//!    VIP back. Median ≤ 2.0 s and worst ≤ 3.0 s (issue 10's lan targets
//!    are median and p95; with a handful of trials the worst stands in for
//!    the p95; `cargo xtask bench failover` runs the 20-trial version).
//!
//! `LIFEGUARD_LAB_PROFILE=fast` runs only step 3 with `fast` (median ≤ 1 s,
//! worst ≤ 1.5 s). Figures are printed (`--nocapture`); `LIFEGUARD_LAB_LOGS=1` prints every
//! speaker's log after the kills. Needs root and iproute2; fails, not
//! skips, without them. Run: `cargo test -p speaker-tests --test lifeguard_lab`.

use std::{fs, net::Ipv4Addr, path::PathBuf, thread, time::Duration, time::Instant};

use speaker_tests::lab::{
    probe::{ArpProbe, ArpProbing},
    Fabric, HostSpec, Speaker, SpeakerMode, SpeakerOptions,
};

const VIP: &str = "192.0.2.100";
const SERVICE: &str = "default/web";
const PROBER: &str = "client";
const NODES: [&str; 3] = ["lg1", "lg2", "lg3"];
const SETTLE_LIMIT: Duration = Duration::from_secs(15);
const PROBE_INTERVAL: Duration = Duration::from_millis(50);
const KILL_MEDIAN_TARGET: Duration = Duration::from_millis(2000);
const KILL_WORST_TARGET: Duration = Duration::from_millis(3000);
/// Issue 10's target for `fast`.
const FAST_KILL_MEDIAN_TARGET: Duration = Duration::from_millis(1000);
/// After a stall: long enough for any wrong Down to have happened and its
/// takeover to show.
const AFTER_STALL: Duration = Duration::from_secs(6);

struct Lab {
    fabric: Fabric,
    key: PathBuf,
    profile: String,
}

impl Lab {
    fn start() -> Lab {
        let mut specs: Vec<HostSpec> = NODES
            .iter()
            .enumerate()
            .map(|(i, n)| HostSpec::numbered(n, 11 + i as u8))
            .collect();
        specs.push(HostSpec::numbered(PROBER, 10));
        let fabric = Fabric::new(&specs);
        fabric.attach_pass_through_ports();
        fabric.write_cluster_state(&speaker_tests::lab::cluster::lab_cluster_yaml(
            &NODES,
            &[VIP],
            "Cluster",
            NODES[0],
        ));
        let key = fabric.run_dir.join("gossip.key");
        let hex = speaker_tests::lab::random_hex_key().expect("reading /dev/urandom");
        fs::write(&key, hex).expect("writing the key");
        // LIFEGUARD_LAB_PROFILE=fast measures `fast` instead (kills only:
        // `fast` does not ride out the stalls, by design).
        let profile = std::env::var("LIFEGUARD_LAB_PROFILE").unwrap_or_else(|_| "lan".into());
        let lab = Lab {
            fabric,
            key,
            profile,
        };
        for node in NODES {
            lab.start_speaker(node);
        }
        lab
    }

    fn start_speaker(&self, node: &str) -> Speaker {
        let mut options = SpeakerOptions::file(SpeakerMode::Native);
        options.memberlist = Some(true);
        options.args.extend(
            [
                "--memberlist-key-file",
                &self.key.display().to_string(),
                "--memberlist-profile",
                &self.profile,
            ]
            .map(str::to_owned),
        );
        let speaker = self.fabric.start_speaker(node, &options);
        assert!(
            speaker
                .wait_log("speaker running as node", SETTLE_LIMIT)
                .is_some(),
            "the speaker on {node} did not start:\n{}",
            self.fabric.all_logs()
        );
        speaker
    }

    fn mac(&self, node: &str) -> String {
        self.fabric.host(node).mac.clone()
    }

    fn settled_owner(&self) -> String {
        let owner = self.fabric.elected(SERVICE, Some(&NODES));
        self.fabric.wait_gossip_members(&NODES, 3, SETTLE_LIMIT);
        self.fabric.wait_owner(&NODES, &owner, &[VIP], SETTLE_LIMIT);
        owner
    }

    fn probing(&self) -> ArpProbing {
        self.fabric
            .arp_prober(PROBER, VIP.parse::<Ipv4Addr>().expect("an IPv4 VIP"))
            .spawn(PROBE_INTERVAL)
    }

    /// The speaker process currently running on `node`.
    fn speaker(&self, node: &str) -> Speaker {
        self.fabric
            .speakers()
            .into_iter()
            .filter(|s| s.host() == node && s.is_running())
            .last()
            .unwrap_or_else(|| panic!("no speaker running on {node}"))
    }

    /// Lines saying a member went down, over every running speaker's log.
    fn downs(&self) -> usize {
        NODES
            .iter()
            .map(|n| self.speaker(n).log_lines_with(") is down").len())
            .sum()
    }

    /// Stops `node` for `span` while probing; returns the probes.
    fn stall(&self, node: &str, span: Duration) -> Vec<ArpProbe> {
        let speaker = self.speaker(node);
        let probing = self.probing();
        thread::sleep(Duration::from_millis(500));
        speaker.suspend();
        thread::sleep(span);
        speaker.resume();
        thread::sleep(AFTER_STALL);
        probing.stop().probes
    }
}

fn answered_only_by(probes: &[ArpProbe], mac: &str) -> bool {
    probes
        .iter()
        .all(|p| p.macs().iter().all(|answered| answered == mac))
}

#[test]
fn lan_profile_fails_over_fast_and_rides_out_stalls() {
    let lab = Lab::start();
    let owner = lab.settled_owner();
    let owner_mac = lab.mac(&owner);
    let t0 = Instant::now();
    let fast = lab.profile == "fast";
    let (median_target, worst_target) = if fast {
        (FAST_KILL_MEDIAN_TARGET, KILL_WORST_TARGET / 2)
    } else {
        (KILL_MEDIAN_TARGET, KILL_WORST_TARGET)
    };
    if !fast {
        stalls(&lab, &owner, &owner_mac, t0);
    }
    kills(&lab, median_target, worst_target);
}

fn stalls(lab: &Lab, owner: &str, owner_mac: &str, t0: Instant) {
    // 1. The owner stopped for 1 s.
    let downs = lab.downs();
    let probes = lab.stall(owner, Duration::from_secs(1));
    let timeline = lab.fabric.probe_timeline(&probes, t0);
    let new_downs = lab.downs() - downs;
    eprintln!("owner {owner} stopped 1 s: {new_downs} member-down line(s)");
    assert!(
        answered_only_by(&probes, owner_mac),
        "another node answered while {owner} was stopped for 1 s:\n{timeline}\n{}",
        lab.fabric.all_logs()
    );
    assert_eq!(new_downs, 0, "{}", lab.fabric.all_logs());

    // 2. A non-owner stopped for 2 s.
    let bystander = NODES.iter().find(|n| **n != owner).expect("three nodes");
    let downs = lab.downs();
    let probes = lab.stall(bystander, Duration::from_secs(2));
    let timeline = lab.fabric.probe_timeline(&probes, t0);
    eprintln!(
        "non-owner {bystander} stopped 2 s: {} member-down line(s)",
        lab.downs() - downs
    );
    assert!(
        answered_only_by(&probes, owner_mac),
        "ownership moved while {bystander} was stopped for 2 s:\n{timeline}\n{}",
        lab.fabric.all_logs()
    );
    lab.fabric.wait_gossip_members(&NODES, 3, SETTLE_LIMIT);
}

/// 3. kill -9 of the owner, several times.
fn kills(lab: &Lab, median_target: Duration, worst_target: Duration) {
    let trials: usize = std::env::var("LIFEGUARD_LAB_TRIALS")
        .ok()
        .and_then(|t| t.parse().ok())
        .unwrap_or(8);
    let mut failovers = Vec::new();
    for trial in 0..trials {
        let owner = lab.settled_owner();
        let survivors: Vec<&str> = NODES.iter().copied().filter(|n| *n != owner).collect();
        let successor = lab.fabric.elected(SERVICE, Some(&survivors));
        let successor_mac = lab.mac(&successor);
        let probing = lab.probing();
        // A different phase of the probe cycle each time.
        thread::sleep(Duration::from_millis(700 + 137 * trial as u64));
        let killed = Instant::now();
        lab.speaker(&owner).kill();
        let answer = probing.wait_answer_from(&successor_mac, killed, Duration::from_secs(6));
        let probes = probing.stop().probes;
        let Some((_, at)) = answer else {
            panic!(
                "{successor} never answered after kill -9 of {owner}:\n{}\n{}",
                lab.fabric.probe_timeline(&probes, killed),
                lab.fabric.all_logs()
            );
        };
        let failover = at - killed;
        let wall = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .saturating_sub(killed.elapsed());
        eprintln!(
            "kill -9 of {owner}, trial {trial} (at second {:.3} of the minute, UTC): \
             {successor} answered after {failover:?}",
            (wall.as_millis() % 60_000) as f64 / 1000.0
        );
        failovers.push(failover);
        lab.start_speaker(&owner);
        lab.fabric.wait_gossip_members(&NODES, 3, SETTLE_LIMIT);
    }
    if std::env::var_os("LIFEGUARD_LAB_LOGS").is_some() {
        eprintln!("{}", lab.fabric.all_logs());
    }
    failovers.sort();
    let median = failovers[failovers.len() / 2];
    let worst = *failovers.last().expect("at least one trial");
    eprintln!(
        "{} kill -9 failover, {trials} trials: median {median:?}, worst {worst:?}, all {failovers:?}",
        lab.profile
    );
    assert!(median <= median_target, "median {median:?}");
    assert!(worst <= worst_target, "worst {worst:?}");
}
