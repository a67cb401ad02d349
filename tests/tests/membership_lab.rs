//! `speaker run` with gossip membership, end to end on a real Ethernet
//! segment, in the three-node scenario of [`speaker_tests::lab::trio`]:
//! three node namespaces (iris1, iris2, iris3, InternalIPs
//! 192.0.2.11–13) and a client (192.0.2.10) on one bridge
//! ([`speaker_tests::lab::fabric`]), each node running `speaker run
//! --cluster-state FILE` with memberlist on (UDP 7946 in its own namespace),
//! one shared key file, the `fast` gossip profile, its own pin directory, XDP in native mode with
//! pass-through programs on the bridge ports. The cluster: one LoadBalancer
//! Service (192.0.2.100 and 2001:db8::100) with `externalTrafficPolicy:
//! Cluster`, so any member may own it; who does is computed with the dry
//! run (`speaker election --members …`), never assumed.
//!
//! The client asks with its own tools (`arping -b`, `ndisc6 -m`, `ping`,
//! `ip neigh`) and with an in-process prober
//! ([`speaker_tests::lab::probe::ArpProber`]: a broadcast ARP request every
//! 100 ms from an AF_PACKET socket in the client's namespace, each reply
//! matched to its request by a tag in the padding), which tells for EVERY
//! request which MACs answered.
//!
//! - `steady_state_only_the_elected_node_answers`: every request of a 3 s
//!   series is answered by exactly one MAC, the one the dry run elects; the
//!   same with `arping -b` and with `ndisc6 -m` (every answer counted);
//!   every speaker counts 3 members.
//! - `sigkill_of_the_owner_moves_the_ip_to_the_next_by_hash`: after `kill
//!   -9` of the owner, the node the dry run elects among the two others
//!   takes the IPs; the client's existing neighbour entries (from `ping`)
//!   switch to its MAC while the client sends nothing (gratuitous ARP /
//!   unsolicited NA alone); from 1.5 s after the kill (the dead node's
//!   dead-man switch, 1.2 s, has expired) every request is answered by the
//!   successor alone; the survivors count 2 members.
//! - `sigterm_of_the_owner_hands_over_without_losing_a_request`: requests
//!   every 100 ms from 1 s before the SIGTERM to 2 s after: every one is
//!   answered; the successor answers within 0.5 s of the signal; once the
//!   stopped node's dead-man switch has expired only the successor answers.
//! - `restarts_lose_no_request_and_the_owner_comes_back`: a non-owner, then
//!   the owner, are stopped (SIGTERM, `--on-stop keep`) and started again
//!   while requests go out every 100 ms: none is unanswered; afterwards every
//!   speaker counts 3 members, the owner by hash holds the IPs again and
//!   alone answers.
//! - `a_speaker_with_another_key_cannot_join`: a fourth speaker (iris4, no
//!   Node object, `--memberlist-advertise-address`) with a different key:
//!   the three keep counting 3 members, their
//!   `xdp_speaker_gossip_auth_failures` grow, ownership does not change
//!   (maps, answers), iris4 stays alone.
//! - `memberlist_disabled_local_policy_issue_2425`: the same lab with
//!   `--memberlist=false`, `externalTrafficPolicy: Local` and the ready
//!   endpoint on iris1 (MetalLB #2425): iris1 answers (ARP and NDP), iris2
//!   and iris3 hold nothing and never answer; no gossip metrics.
//!
//! `MEMBERSHIP_LAB_LOGS=1` prints every speaker's log at the end of each test
//! (a failing test prints them anyway).
//!
//! The tests take a lock and run one after the other: the failover timings
//! assume the two cores are not shared with two other labs.
//!
//! Needs root, iproute2, arping (either package), ndisc6, ping; fails, not
//! skips, without them. Run: `cargo test -p speaker-tests --test membership_lab`.

use std::{
    collections::BTreeSet,
    fs,
    ops::Deref,
    thread,
    time::{Duration, Instant},
};

use serde_json::Value;
use speaker_tests::lab::{
    probe::{self, ArpProbe, ArpProbing},
    trio::{
        others, Profile, Trio, TrioSpec, NODES, PROBER as CLIENT, SERVICE, VIPS, VIP_V4, VIP_V6,
    },
    vip_answered, Arping, HostSpec, Speaker, HOST_IF,
};

/// Start-up (lab, speakers, gossip settling) and map convergence.
const SETTLE_LIMIT: Duration = Duration::from_secs(10);
/// The prober's pace.
const PROBE_INTERVAL: Duration = Duration::from_millis(100);
/// The default dead-man limit with memberlist is 1.2 s; from this long after
/// a speaker's death its responder must be silent.
const DEAD_MAN_EXPIRED: Duration = Duration::from_millis(1500);
/// kill -9: detection (≤ 2.05 s for 3 speakers) plus the first gratuitous
/// round, with slack.
const KILL_FAILOVER_LIMIT: Duration = Duration::from_secs(5);
/// SIGTERM: the successor answers this fast.
const GRACEFUL_LIMIT: Duration = Duration::from_millis(500);

// ---------------------------------------------------------------- the lab

/// The three-node scenario ([`Trio`]) with this file's checks.
struct Lab {
    trio: Trio,
}

impl Deref for Lab {
    type Target = Trio;
    fn deref(&self) -> &Trio {
        &self.trio
    }
}

/// 64 hex digits from /dev/urandom.
fn random_hex_key() -> String {
    speaker_tests::lab::random_hex_key().expect("reading /dev/urandom")
}

impl Lab {
    /// iris1..3 (and `extra` hosts), the clients, the Service with
    /// `policy`; a speaker on every node (the timings below are the `fast`
    /// profile's), each with `args`.
    fn start(policy: &'static str, memberlist: bool, extra: &[HostSpec], args: &[&str]) -> Lab {
        Lab {
            trio: Trio::start(TrioSpec {
                memberlist,
                policy,
                extra_hosts: extra.to_vec(),
                logs_env: "MEMBERSHIP_LAB_LOGS",
                ..TrioSpec::default().profile(Profile::Fast).args(args)
            }),
        }
    }

    /// The node `speaker election --members members --json` elects
    /// (membership disabled when `members` is `None`).
    fn elected(&self, members: Option<&[&str]>) -> String {
        let report = self.fabric.election_json_among(members);
        let service = report["services"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|s| format!("{}/{}", s["namespace"], s["name"]).replace('"', "") == SERVICE)
            .unwrap_or_else(|| panic!("{SERVICE} missing from the dry run:\n{report}"));
        let ips: Vec<&str> = service["ips"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        assert_eq!(ips, VIPS, "the dry run's ingress IPs:\n{report}");
        service["elected_node"]
            .as_str()
            .unwrap_or_else(|| panic!("the dry run elects nobody:\n{report}"))
            .to_owned()
    }

    fn metric(&self, node: &str, name: &str) -> Option<f64> {
        self.fabric.metric(node, name)
    }

    /// A prober from the client for 192.0.2.100, every [`PROBE_INTERVAL`].
    fn probing(&self) -> ArpProbing {
        self.trio.probing(PROBE_INTERVAL)
    }

    /// `count` requests, [`PROBE_INTERVAL`] apart.
    fn probe_series(&self, count: usize) -> Vec<ArpProbe> {
        self.trio.probe_series(count, PROBE_INTERVAL)
    }

    /// Asserts that every probe was answered by `owner` and by nobody else.
    fn assert_only(&self, owner: &str, probes: &[ArpProbe], t0: Instant, what: &str) {
        let mac = self.mac(owner);
        let bad: Vec<&ArpProbe> = probes
            .iter()
            .filter(|p| p.macs() != BTreeSet::from([mac.clone()]) || p.answers.len() != 1)
            .collect();
        assert!(
            bad.is_empty(),
            "{what}: every request must be answered once, by {owner} ({mac}) alone; {} of {} \
             were not:\n{}\n{}",
            bad.len(),
            probes.len(),
            self.timeline(probes, t0),
            self.fabric.all_logs()
        );
    }

    /// `arping -b` (every request broadcast) and `ndisc6 -m` (every answer)
    /// from the client: `owner` and only `owner` answers, once per request.
    fn assert_tools_see_only(&self, owner: &str) {
        let mac = self.mac(owner);
        let count = 4;
        let (out, report) = self
            .fabric
            .arping_broadcast(CLIENT, &Arping::new(VIP_V4, HOST_IF, count));
        assert_eq!(
            report.macs(),
            vec![mac.as_str(); count as usize],
            "arping -b {VIP_V4}: one reply per request, from {owner} ({mac}) only:\n{out}"
        );
        for attempt in 0..3 {
            let (out, macs) = self.fabric.ndisc6(CLIENT, VIP_V6, 1, 1000);
            assert_eq!(
                macs,
                vec![mac.clone()],
                "ndisc6 -m {VIP_V6} (attempt {attempt}): exactly one advertisement, from \
                 {owner} ({mac}):\n{out}"
            );
        }
    }

    /// The client resolves both VIPs (ping) and its entries hold `owner`'s MAC.
    fn resolve_from_client(&self, owner: &str) {
        let mac = self.mac(owner);
        for vip in VIPS {
            let ping = self.fabric.ping(CLIENT, vip);
            let entry = self
                .fabric
                .wait_neighbour_mac(CLIENT, vip, &mac, Duration::from_secs(3));
            assert!(
                entry.is_some(),
                "the client did not resolve {vip} to {owner}'s {mac}:\n{ping}\n{:?}",
                self.fabric.neighbour(CLIENT, vip)
            );
        }
    }

    /// Starts `node` again and waits until it has settled with 3 members.
    fn restart(&self, node: &str) -> Speaker {
        self.trio.restart(node, &[])
    }

    /// The settled lab: every speaker counts 3 members and the dry run's
    /// owner (all three members) holds the VIPs. Returns the owner.
    fn settled_owner(&self) -> String {
        let owner = self.elected(Some(&NODES));
        self.wait_members(&NODES, 3, SETTLE_LIMIT);
        let took = self.wait_owner(&owner, &NODES, SETTLE_LIMIT);
        eprintln!("owner by hash: {owner}; maps agreed within {took:?} of the member count");
        owner
    }
}

fn summary(label: &str, t0: Instant, at: Instant) {
    eprintln!("{label}: {:?}", at.duration_since(t0));
}

// ---------------------------------------------------------------- tests

#[test]
fn steady_state_only_the_elected_node_answers() {
    let lab = Lab::start("Cluster", true, &[], &[]);
    let owner = lab.settled_owner();
    for node in NODES {
        let announced = lab
            .speaker(node)
            .wait_log(
                &format!("{SERVICE}: announcing from this node"),
                Duration::ZERO,
            )
            .is_some();
        assert_eq!(
            announced,
            node == owner,
            "only {owner} announces:\n{}",
            lab.fabric.all_logs()
        );
    }

    // 3 s of broadcast requests: one answer each, from the owner.
    let t0 = Instant::now();
    let probes = lab.probe_series(30);
    lab.assert_only(&owner, &probes, t0, "steady state");
    // The same with the client's own tools, IPv4 and IPv6.
    lab.assert_tools_see_only(&owner);
    // And still nothing else happened: 3 members, owner unchanged.
    lab.wait_members(&NODES, 3, Duration::ZERO);
    lab.wait_owner(&owner, &NODES, Duration::ZERO);
    for node in NODES {
        assert_eq!(
            lab.metric(node, "xdp_speaker_gossip_auth_failures"),
            Some(0.0),
            "{node}: no datagram failed authentication"
        );
    }
}

#[test]
fn sigkill_of_the_owner_moves_the_ip_to_the_next_by_hash() {
    let lab = Lab::start("Cluster", true, &[], &[]);
    let owner = lab.settled_owner();
    let survivors = others(&owner);
    let successor = lab.elected(Some(&survivors));
    assert_ne!(successor, owner);
    let (owner_mac, successor_mac) = (lab.mac(&owner), lab.mac(&successor));

    // The client has entries for both VIPs, pointing at the owner.
    lab.resolve_from_client(&owner);

    // kill -9. From here until the entries switched, the client sends
    // nothing: only its neighbour table is read.
    let killed = Instant::now();
    lab.speaker(&owner).kill();
    for vip in VIPS {
        let switched =
            lab.fabric
                .wait_neighbour_mac(CLIENT, vip, &successor_mac, KILL_FAILOVER_LIMIT);
        let (entry, at) = switched.unwrap_or_else(|| {
            panic!(
                "the client's entry for {vip} did not switch from {owner} ({owner_mac}) to \
                 {successor} ({successor_mac}) within {KILL_FAILOVER_LIMIT:?} of kill -9 \
                 (now: {:?})\n{}",
                lab.fabric.neighbour(CLIENT, vip),
                lab.fabric.all_logs()
            )
        });
        summary(
            &format!("kill -9 {owner}: client entry for {vip} -> {successor} ({entry:?})"),
            killed,
            at,
        );
    }
    lab.wait_owner(&successor, &survivors, Duration::from_secs(1));
    assert!(
        lab.speaker(&successor)
            .wait_log(
                &format!("{SERVICE}: announcing from this node"),
                Duration::ZERO
            )
            .is_some(),
        "{successor} did not log the takeover:\n{}",
        lab.fabric.all_logs()
    );

    // Once the dead node's dead-man switch has expired, the successor alone
    // answers.
    let expired = killed + DEAD_MAN_EXPIRED;
    if let Some(wait) = expired.checked_duration_since(Instant::now()) {
        thread::sleep(wait);
    }
    let probes = lab.probe_series(20);
    lab.assert_only(&successor, &probes, killed, "after the dead-man expiry");
    lab.wait_members(&survivors, 2, Duration::from_secs(1));
    let maps = lab.fabric.maps_json(&owner);
    eprintln!(
        "{owner} after the kill: heartbeat age {}, VIPs still pinned: {}",
        maps["watchdog"]["heartbeat_age_seconds"],
        VIPS.iter().all(|v| vip_answered(&maps, v).is_some())
    );
}

#[test]
fn sigterm_of_the_owner_hands_over_without_losing_a_request() {
    let lab = Lab::start("Cluster", true, &[], &[]);
    let owner = lab.settled_owner();
    let survivors = others(&owner);
    let successor = lab.elected(Some(&survivors));
    let successor_mac = lab.mac(&successor);

    let probing = lab.probing();
    thread::sleep(Duration::from_secs(1));
    let stopped = Instant::now();
    lab.stop(&owner);
    let exited = Instant::now();
    let first = probing.wait_answer_from(&successor_mac, stopped, Duration::from_secs(3));
    if let Some(wait) = (stopped + Duration::from_secs(2)).checked_duration_since(Instant::now()) {
        thread::sleep(wait);
    }
    let series = probing.stop();
    let probes = &series.probes;
    let timeline = lab.timeline(probes, stopped);
    eprintln!(
        "SIGTERM {owner} (exited after {:?}); requests around it:\n{timeline}",
        exited - stopped
    );

    let (_, at) = first.unwrap_or_else(|| {
        panic!(
            "{successor} never answered after {owner}'s SIGTERM:\n{timeline}\n{}",
            lab.fabric.all_logs()
        )
    });
    summary(
        &format!("SIGTERM {owner}: first answer from {successor}"),
        stopped,
        at,
    );
    assert!(
        at - stopped <= GRACEFUL_LIMIT,
        "{successor} answered only {:?} after the SIGTERM (limit {GRACEFUL_LIMIT:?}):\n{timeline}\n{}",
        at - stopped,
        lab.fabric.all_logs()
    );
    let before = probes.iter().filter(|p| p.sent < stopped).count();
    let after = probes.len() - before;
    assert!(
        before >= 8 && after >= 18,
        "the prober fell behind ({before} requests before the stop, {after} after):\n{timeline}"
    );
    let lost = probe::unanswered(probes);
    assert!(
        lost.is_empty(),
        "requests {lost:?} went unanswered around the SIGTERM:\n{timeline}\n{}",
        lab.fabric.all_logs()
    );
    let late: Vec<ArpProbe> = probes
        .iter()
        .filter(|p| p.sent >= stopped + DEAD_MAN_EXPIRED)
        .cloned()
        .collect();
    assert!(!late.is_empty());
    lab.assert_only(&successor, &late, stopped, "after the dead-man expiry");
    lab.wait_owner(&successor, &survivors, Duration::from_secs(1));
    lab.wait_members(&survivors, 2, Duration::ZERO);
    assert!(
        lab.speaker(&owner)
            .wait_log("leaving the gossip cluster", Duration::ZERO)
            .is_some(),
        "{owner} did not log its leave:\n{}",
        lab.speaker(&owner).log()
    );
}

#[test]
fn restarts_lose_no_request_and_the_owner_comes_back() {
    // A restart keeps the pins (with `handover` the successor withdraws when
    // the owner rejoins, before the owner has settled: a gap).
    let lab = Lab::start("Cluster", true, &[], &["--on-stop", "keep"]);
    let owner = lab.settled_owner();
    let survivors = others(&owner);
    let successor = lab.elected(Some(&survivors));
    let bystander = survivors
        .iter()
        .copied()
        .find(|n| *n != successor)
        .expect("three nodes");

    let probing = lab.probing();
    let t0 = Instant::now();
    thread::sleep(Duration::from_millis(500));

    // A non-owner: nothing moves.
    let mark = Instant::now();
    lab.stop(bystander);
    lab.restart(bystander);
    lab.wait_members(&NODES, 3, SETTLE_LIMIT);
    lab.wait_owner(&owner, &NODES, SETTLE_LIMIT);
    eprintln!(
        "{bystander} restarted and settled within {:?}",
        mark.elapsed()
    );
    thread::sleep(Duration::from_millis(500));

    // The owner: the IPs go to the successor, then come back.
    let owner_stopped = Instant::now();
    lab.stop(&owner);
    let taken =
        probing.wait_answer_from(&lab.mac(&successor), owner_stopped, Duration::from_secs(3));
    lab.restart(&owner);
    lab.wait_members(&NODES, 3, SETTLE_LIMIT);
    lab.wait_owner(&owner, &NODES, SETTLE_LIMIT);
    eprintln!(
        "{owner} restarted and back as owner (maps) {:?} after its SIGTERM",
        owner_stopped.elapsed()
    );
    thread::sleep(Duration::from_millis(1500));
    let series = probing.stop();
    let probes = &series.probes;
    let timeline = lab.timeline(probes, owner_stopped);
    eprintln!("requests during both restarts (t = 0 at the owner's SIGTERM):\n{timeline}");
    if let Some((_, at)) = &taken {
        summary(
            &format!("SIGTERM {owner}: first answer from {successor}"),
            owner_stopped,
            *at,
        );
    }

    let lost = probe::unanswered(probes);
    assert!(
        lost.is_empty(),
        "requests {lost:?} went unanswered during the restarts:\n{timeline}\n{}",
        lab.fabric.all_logs()
    );
    let expected = (t0.elapsed().as_secs_f64() / PROBE_INTERVAL.as_secs_f64()) as usize;
    assert!(
        probes.len() + 5 >= expected,
        "the prober fell behind: {} requests in {:?}",
        probes.len(),
        t0.elapsed()
    );
    // The bystander's restart changed nothing: until the owner's stop,
    // the owner alone answered.
    let before: Vec<ArpProbe> = probes
        .iter()
        .filter(|p| p.sent < owner_stopped)
        .cloned()
        .collect();
    lab.assert_only(
        &owner,
        &before,
        owner_stopped,
        "around the non-owner's restart",
    );
    assert!(
        taken.is_some(),
        "{successor} never answered while {owner} was stopped:\n{timeline}\n{}",
        lab.fabric.all_logs()
    );

    // Settled: the owner by hash, alone.
    assert_eq!(lab.elected(Some(&NODES)), owner);
    let t1 = Instant::now();
    let probes = lab.probe_series(15);
    lab.assert_only(&owner, &probes, t1, "after the restarts");
    lab.assert_tools_see_only(&owner);
}

#[test]
fn a_speaker_with_another_key_cannot_join() {
    let lab = Lab::start("Cluster", true, &[HostSpec::numbered("iris4", 14)], &[]);
    let owner = lab.settled_owner();
    let baseline: Vec<f64> = NODES
        .iter()
        .map(|n| {
            lab.metric(n, "xdp_speaker_gossip_auth_failures")
                .expect("gossip metrics")
        })
        .collect();

    // iris4: no Node object (so it can never be elected), its own address,
    // the Nodes' InternalIPs as peers, and another key.
    let bad_key = lab.fabric.run_dir.join("keys").join("other.key");
    fs::write(&bad_key, random_hex_key()).expect("writing the other key");
    let intruder = lab.fabric.start_speaker(
        "iris4",
        &lab.options_with_key(&bad_key, &["--memberlist-advertise-address", "192.0.2.14"]),
    );
    assert!(
        intruder.wait_log("gossiping on", SETTLE_LIMIT).is_some(),
        "iris4 did not start gossiping:\n{}",
        intruder.log()
    );
    let started = Instant::now();

    // Its datagrams reach all three and fail authentication there.
    let deadline = started + Duration::from_secs(8);
    let grown = loop {
        let now: Vec<Option<f64>> = NODES
            .iter()
            .map(|n| lab.metric(n, "xdp_speaker_gossip_auth_failures"))
            .collect();
        let grown = now
            .iter()
            .zip(&baseline)
            .all(|(n, b)| n.is_some_and(|n| n > *b));
        if grown || Instant::now() >= deadline {
            break (grown, now);
        }
        thread::sleep(Duration::from_millis(100));
    };
    assert!(
        grown.0,
        "the auth failures of {NODES:?} did not all grow ({baseline:?} -> {:?}):\n{}",
        grown.1,
        lab.fabric.all_logs()
    );
    eprintln!(
        "auth failures {baseline:?} -> {:?} within {:?}",
        grown.1,
        started.elapsed()
    );

    // Meanwhile and afterwards: 3 members each, iris4 alone, the owner
    // unchanged and alone answering.
    let t0 = Instant::now();
    let probing = lab.probing();
    while t0.elapsed() < Duration::from_secs(3) {
        for node in NODES {
            assert_eq!(
                lab.metric(node, "xdp_speaker_gossip_members"),
                Some(3.0),
                "{node} must keep counting 3 members:\n{}",
                lab.fabric.all_logs()
            );
        }
        thread::sleep(Duration::from_millis(200));
    }
    let series = probing.stop();
    lab.assert_only(&owner, &series.probes, t0, "with iris4 knocking");
    lab.wait_owner(&owner, &NODES, Duration::ZERO);
    assert_eq!(
        lab.metric("iris4", "xdp_speaker_gossip_members"),
        Some(1.0),
        "iris4 must stay alone:\n{}",
        intruder.log()
    );
    assert!(
        lab.fabric.vips("iris4").is_empty(),
        "iris4 (no Node object) must hold no VIP:\n{}",
        intruder.log()
    );
    for node in NODES {
        let lines = lab.speaker(node).log_lines_with("iris4");
        assert!(
            lines.is_empty(),
            "{node} must never see iris4 as a member: {lines:?}"
        );
    }
    assert!(
        lab.speaker(&owner).log_lines_with("withdrawn").is_empty(),
        "{owner} withdrew something:\n{}",
        lab.fabric.all_logs()
    );
}

#[test]
fn memberlist_disabled_local_policy_issue_2425() {
    let lab = Lab::start("Local", false, &[], &[]);
    // The dry run without members (membership disabled): iris1, not nobody.
    assert_eq!(lab.elected(None), "iris1");
    lab.wait_owner("iris1", &NODES, SETTLE_LIMIT);
    for node in NODES {
        let s = lab.speaker(node);
        assert!(
            s.wait_log("membership disabled", Duration::ZERO).is_some(),
            "{node} must say membership is disabled:\n{}",
            s.log()
        );
        assert!(
            s.log_lines_with("gossip").is_empty(),
            "{node} must not gossip with --memberlist=false:\n{}",
            s.log()
        );
        assert_eq!(
            lab.metric(node, "xdp_speaker_gossip_members"),
            None,
            "{node}: no gossip without memberlist"
        );
    }
    assert!(lab
        .speaker("iris1")
        .wait_log(
            &format!("{SERVICE}: announcing from this node"),
            SETTLE_LIMIT
        )
        .is_some());
    let t0 = Instant::now();
    let probes = lab.probe_series(20);
    lab.assert_only("iris1", &probes, t0, "membership disabled");
    lab.assert_tools_see_only("iris1");
    for node in ["iris2", "iris3"] {
        assert!(
            lab.speaker(node)
                .log_lines_with("announcing from this node")
                .is_empty(),
            "{node} must not announce:\n{}",
            lab.fabric.all_logs()
        );
        assert!(lab.fabric.vips(node).is_empty());
    }
}
