//! `speaker run --cluster-state FILE` end to end, on a real Ethernet segment:
//! two node namespaces (iris1, iris2) and a client on one bridge
//! ([`speaker_tests::lab::fabric`]), each node running the daemon on the SAME
//! cluster file: the MetalLB #2425 regression scenario of
//! `docs/examples/iris-regression.yaml` (membership disabled,
//! `externalTrafficPolicy: Local`, the ready endpoint on iris1), with the
//! IPv6 ingress IP 2001:db8::100 added.
//!
//! What is checked, with the client's own tools and kernel:
//! - `local_policy_owner_answers_then_moves_with_its_endpoint`: iris1's maps
//!   hold both VIPs and iris2's none (as `speaker election` says); arping and
//!   ndisc6 get answers from iris1's MAC only (distinct MACs over several
//!   requests); `ping` + `ip neigh` resolve both VIPs to iris1's MAC; an IP
//!   nobody owns is unanswered. Then the file is edited to move the endpoint
//!   to iris2: the VIPs move in the maps, and the client's EXISTING
//!   neighbour entries switch to iris2's MAC within 2 s while the client
//!   sends nothing (iris2's responder has answered no request: only its
//!   gratuitous ARP / unsolicited NA can have done it); iris1 logs the
//!   withdrawal with its reason; arping is then answered by iris2 only.
//!   Native XDP mode, with pass-through programs on the bridge ports.
//! - `cluster_policy_exactly_one_node_answers_the_elected_one`: with
//!   `externalTrafficPolicy: Cluster` both nodes are candidates; exactly one
//!   answers, and it is the node `speaker election --json` elects. Generic
//!   XDP mode.
//! - `invalid_edit_keeps_the_owner_and_a_later_valid_edit_applies`: broken
//!   YAML written in place is logged and ignored by both speakers; iris1
//!   keeps its VIPs, withdraws nothing and keeps answering; a later valid
//!   edit (atomic rename) moves the VIPs to iris2. Generic XDP mode.
//! - `an_owned_ipv6_vip_is_reported_with_mld_and_left_when_it_goes`: the
//!   daemon's MLD membership for the IPv6 VIP's solicited-node group: an
//!   MLDv2 report joining it when iris1 comes to own the VIP, a leave when
//!   the VIP goes (tcpdump on the client).
//! - `a_task_that_fails_ends_the_process_with_one_line`: a metrics server
//!   that cannot bind ends the daemon with exit status 1 and one error line
//!   (supervision), where a speaker with a usable address keeps running.
//!
//! Needs root, iproute2, arping (either package), ndisc6, ping, tcpdump; fails, not
//! skips, without them. Run: `cargo test -p speaker-tests --test run_file_lab`.

use std::{
    collections::BTreeSet,
    thread,
    time::{Duration, Instant},
};

use serde_json::Value;
use speaker_tests::{
    frames::{
        parse_mld, solicited_node, MldMessage, ICMPV6_MLD_V1_DONE, ICMPV6_MLD_V2_REPORT,
        MLD_BLOCK_OLD_SOURCES, MLD_CHANGE_TO_EXCLUDE, MLD_CHANGE_TO_INCLUDE,
    },
    lab::{
        capture::{Capture, Captured},
        mac, vip_answered, wait_for, workspace_root, Arping, CmdOutput, Fabric, HostSpec, Speaker,
        SpeakerMode, SpeakerOptions, HOST_IF,
    },
};

const VIP_V4: &str = "192.0.2.100";
const VIP_V6: &str = "2001:db8::100";
const VIPS: [&str; 2] = [VIP_V4, VIP_V6];
/// In the example's pool, but no Service has them.
const NOT_OWNED_V4: &str = "192.0.2.101";
const NOT_OWNED_V6: &str = "2001:db8::101";
const SERVICE: &str = "default/web";
const CLIENT: &str = "client";
const NODES: [&str; 2] = ["iris1", "iris2"];

/// Startup (speaker build excluded) and map changes after an edit.
const SETTLE_LIMIT: Duration = Duration::from_secs(10);
const MOVE_LIMIT: Duration = Duration::from_secs(5);
/// The client's neighbour entries must follow a move this fast: the
/// kernel's own timers (base_reachable_time 30 s, gc_stale_time 60 s) are
/// far longer, and the client sends nothing meanwhile.
const GRATUITOUS_LIMIT: Duration = Duration::from_secs(2);

// ---------------------------------------------------------------- scenario

/// docs/examples/iris-regression.yaml, plus the IPv6 ingress IP when the
/// example does not have it.
fn iris_yaml() -> String {
    let path = workspace_root().join("docs/examples/iris-regression.yaml");
    let yaml = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    if yaml.contains(&format!("ip: {VIP_V6}")) {
        return yaml;
    }
    replace_once(
        &yaml,
        &format!("      - ip: {VIP_V4}\n"),
        &format!("      - ip: {VIP_V4}\n      - ip: {VIP_V6}\n"),
    )
}

/// The scenario with the (only) endpoint on `node`.
fn endpoint_on(yaml: &str, node: &str) -> String {
    replace_once(yaml, "nodeName: iris1", &format!("nodeName: {node}"))
}

/// The scenario with `externalTrafficPolicy: policy`.
fn traffic_policy(yaml: &str, policy: &str) -> String {
    replace_once(
        yaml,
        "\n  externalTrafficPolicy: Local\n",
        &format!("\n  externalTrafficPolicy: {policy}\n"),
    )
}

/// Replaces the single occurrence of `from`; panics if there is not exactly
/// one (the example changed: this test must be adapted).
fn replace_once(text: &str, from: &str, to: &str) -> String {
    assert_eq!(
        text.matches(from).count(),
        1,
        "expected exactly one {from:?} in the iris example"
    );
    text.replacen(from, to, 1)
}

// ---------------------------------------------------------------- the lab

/// The switch with iris1 (192.0.2.11, the example's Node address), iris2
/// (192.0.2.12) and the client (192.0.2.10).
fn iris_fabric() -> Fabric {
    Fabric::new(&[
        HostSpec::numbered("iris1", 11),
        HostSpec::numbered("iris2", 12),
        HostSpec::numbered(CLIENT, 10),
    ])
}

/// Writes `yaml` as the cluster file and starts a speaker on each node.
fn start_speakers(fabric: &Fabric, yaml: &str, mode: SpeakerMode) -> Vec<Speaker> {
    fabric.write_cluster_state(yaml);
    let speakers: Vec<Speaker> = NODES
        .iter()
        .map(|node| fabric.start_speaker(node, &SpeakerOptions::file(mode)))
        .collect();
    for s in &speakers {
        wait_started(fabric, s);
    }
    speakers
}

fn wait_started(fabric: &Fabric, speaker: &Speaker) {
    assert!(
        speaker
            .wait_log("speaker running as node", SETTLE_LIMIT)
            .is_some(),
        "the speaker on {} did not start:\n{}",
        speaker.host(),
        fabric.all_logs()
    );
}

fn speaker<'a>(speakers: &'a [Speaker], node: &str) -> &'a Speaker {
    speakers
        .iter()
        .find(|s| s.host() == node)
        .expect("a speaker per node")
}

/// Waits until `owner`'s maps hold both VIPs and every other node's none.
fn wait_owner(fabric: &Fabric, owner: &str, limit: Duration) -> Duration {
    fabric.wait_owner(&NODES, owner, &VIPS, limit)
}

/// The node `speaker election --json` elects for the service.
fn elected(fabric: &Fabric) -> String {
    let report = fabric.election_json();
    let service = report["services"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|s| {
            format!(
                "{}/{}",
                s["namespace"].as_str().unwrap_or(""),
                s["name"].as_str().unwrap_or("")
            ) == SERVICE
        })
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

/// arping `count` requests for `target` from the client, every one of them
/// broadcast (so that a second responder would see and answer each); the
/// distinct MACs that replied, the number of replies, and the output.
fn arping_macs(fabric: &Fabric, target: &str, count: u32) -> (BTreeSet<String>, usize, CmdOutput) {
    let (out, report) = fabric.arping_broadcast(CLIENT, &Arping::new(target, HOST_IF, count));
    let macs = report.replies.iter().map(|r| r.mac.clone()).collect();
    (macs, report.replies.len(), out)
}

/// ndisc6 (`-m`: every answer) for `target` from the client; the distinct
/// MACs that advertised.
fn ndisc6_macs(fabric: &Fabric, target: &str, attempts: u32) -> (BTreeSet<String>, CmdOutput) {
    let (out, macs) = fabric.ndisc6(CLIENT, target, attempts, 1000);
    (macs.into_iter().collect(), out)
}

/// Asserts that `owner` and only `owner` answers ARP and NDP for the VIPs.
fn assert_only_owner_answers(fabric: &Fabric, owner: &str, arp_requests: u32) {
    let mac = fabric.host(owner).mac.clone();
    let (macs, replies, out) = arping_macs(fabric, VIP_V4, arp_requests);
    assert_eq!(
        macs,
        BTreeSet::from([mac.clone()]),
        "ARP replies for {VIP_V4} must come from {owner} ({mac}) only:\n{out}\n{}",
        fabric.all_logs()
    );
    assert_eq!(
        replies, arp_requests as usize,
        "one reply per request:\n{out}"
    );
    let (macs, out) = ndisc6_macs(fabric, VIP_V6, 2);
    assert_eq!(
        macs,
        BTreeSet::from([mac.clone()]),
        "Neighbor Advertisements for {VIP_V6} must come from {owner} ({mac}) only:\n{out}\n{}",
        fabric.all_logs()
    );
}

fn assert_no_withdrawal(speaker: &Speaker, fabric: &Fabric) {
    let withdrawn = speaker.log_lines_with("withdrawn");
    assert!(
        withdrawn.is_empty(),
        "{} withdrew something: {withdrawn:?}\n{}",
        speaker.host(),
        fabric.all_logs()
    );
}

// ---------------------------------------------------------------- tests

#[test]
fn local_policy_owner_answers_then_moves_with_its_endpoint() {
    let fabric = iris_fabric();
    fabric.attach_pass_through_ports();
    let yaml = iris_yaml();
    let speakers = start_speakers(&fabric, &yaml, SpeakerMode::Native);
    let (iris1, iris2) = (fabric.host("iris1").clone(), fabric.host("iris2").clone());

    // The dry run and the daemons agree: iris1 (the #2425 regression: with
    // membership disabled it must announce, not nobody).
    assert_eq!(elected(&fabric), "iris1");
    wait_owner(&fabric, "iris1", SETTLE_LIMIT);
    assert!(
        speaker(&speakers, "iris1")
            .wait_log(
                &format!("{SERVICE}: announcing from this node"),
                SETTLE_LIMIT
            )
            .is_some(),
        "iris1 did not log the announcement:\n{}",
        fabric.all_logs()
    );
    assert!(speaker(&speakers, "iris2")
        .log_lines_with("announcing from this node")
        .is_empty());

    // Only iris1 answers, over several requests.
    assert_only_owner_answers(&fabric, "iris1", 4);

    // The client's kernel resolves the VIPs to iris1's MAC.
    for vip in VIPS {
        let ping = fabric.ping(CLIENT, vip);
        let entry = fabric.wait_neighbour_mac(CLIENT, vip, &iris1.mac, Duration::from_secs(3));
        let shown = fabric.exec(CLIENT, "ip", &["neigh", "show", vip]);
        assert!(
            entry.is_some(),
            "the client did not resolve {vip} to iris1's {}:\n{ping}\n{shown}",
            iris1.mac
        );
        assert!(
            shown.stdout.contains(&iris1.mac),
            "`ip neigh show {vip}`:\n{shown}"
        );
    }

    // Nobody answers for an IP no Service has.
    let (macs, _, out) = arping_macs(&fabric, NOT_OWNED_V4, 2);
    assert!(macs.is_empty(), "{NOT_OWNED_V4} must go unanswered:\n{out}");
    let (macs, out) = ndisc6_macs(&fabric, NOT_OWNED_V6, 2);
    assert!(macs.is_empty(), "{NOT_OWNED_V6} must go unanswered:\n{out}");

    // Move the endpoint to iris2. From here until the entries switched, the
    // client sends nothing: only the neighbour table is read.
    let before: Vec<_> = VIPS
        .iter()
        .map(|vip| fabric.neighbour(CLIENT, vip).expect("an entry per VIP"))
        .collect();
    for entry in &before {
        assert_eq!(
            entry.lladdr.as_deref(),
            Some(iris1.mac.as_str()),
            "{entry:?}"
        );
    }
    let edited = Instant::now();
    fabric.write_cluster_state(&endpoint_on(&yaml, "iris2"));
    for (vip, old) in VIPS.iter().zip(&before) {
        let switched = fabric.wait_neighbour_mac(CLIENT, vip, &iris2.mac, GRATUITOUS_LIMIT);
        let now = fabric.neighbour(CLIENT, vip);
        let (entry, at) = switched.unwrap_or_else(|| {
            panic!(
                "the client's entry for {vip} did not switch to iris2's {} within \
                 {GRATUITOUS_LIMIT:?} of the edit (before: {old:?}, now: {now:?})\n{}",
                iris2.mac,
                fabric.all_logs()
            )
        });
        eprintln!(
            "{vip}: {:?} -> {:?} after {:?}",
            old,
            entry,
            at.duration_since(edited)
        );
        // Updated by an unsolicited frame: not confirmed reachable.
        assert!(
            entry.is("STALE"),
            "{vip}: a gratuitous update leaves the entry STALE, got {entry:?}"
        );
    }
    // iris2's responder answered no request: the switch came from its
    // gratuitous ARP / unsolicited NA alone.
    let maps2 = fabric.maps_json("iris2");
    for vip in VIPS {
        assert_eq!(
            vip_answered(&maps2, vip),
            Some(0),
            "iris2 must hold {vip} and have answered no request yet:\n{maps2}"
        );
    }
    let took = wait_owner(&fabric, "iris2", MOVE_LIMIT);
    eprintln!("maps moved within {took:?} of the check");
    assert_eq!(elected(&fabric), "iris2");

    // The logs: iris1 withdrew with MetalLB's reason, iris2 announces.
    let withdrawn = speaker(&speakers, "iris1")
        .wait_log(&format!("{SERVICE}: withdrawn (notOwner"), MOVE_LIMIT);
    assert!(
        withdrawn.is_some(),
        "iris1 did not log the withdrawal with its reason:\n{}",
        fabric.all_logs()
    );
    assert!(
        speaker(&speakers, "iris2")
            .wait_log(&format!("{SERVICE}: announcing from this node"), MOVE_LIMIT)
            .is_some(),
        "iris2 did not log the announcement:\n{}",
        fabric.all_logs()
    );

    assert_only_owner_answers(&fabric, "iris2", 3);

    for s in &speakers {
        let status = s.terminate(Duration::from_secs(10));
        assert!(
            status.is_some_and(|s| s.success()),
            "{} did not stop cleanly on SIGTERM ({status:?}):\n{}",
            s.host(),
            s.log()
        );
    }
}

#[test]
fn cluster_policy_exactly_one_node_answers_the_elected_one() {
    let fabric = iris_fabric();
    let yaml = traffic_policy(&iris_yaml(), "Cluster");
    let speakers = start_speakers(&fabric, &yaml, SpeakerMode::Generic);

    let winner = elected(&fabric);
    assert!(NODES.contains(&winner.as_str()), "elected {winner:?}");
    wait_owner(&fabric, &winner, SETTLE_LIMIT);
    assert_only_owner_answers(&fabric, &winner, 4);
    for s in &speakers {
        let announced = !s
            .log_lines_with(&format!("{SERVICE}: announcing from this node"))
            .is_empty();
        assert_eq!(
            announced,
            s.host() == winner,
            "only {winner} announces:\n{}",
            fabric.all_logs()
        );
    }
}

#[test]
fn invalid_edit_keeps_the_owner_and_a_later_valid_edit_applies() {
    let fabric = iris_fabric();
    let yaml = iris_yaml();
    let speakers = start_speakers(&fabric, &yaml, SpeakerMode::Generic);
    wait_owner(&fabric, "iris1", SETTLE_LIMIT);
    assert_only_owner_answers(&fabric, "iris1", 2);

    // Half an edit, written in place: the flow sequence is never closed.
    let marks: Vec<usize> = speakers.iter().map(Speaker::log_len).collect();
    let broken = replace_once(&yaml, "nodeName: iris1", "nodeName: [iris2");
    fabric.write_cluster_state_in_place(&broken);
    for (s, mark) in speakers.iter().zip(&marks) {
        assert!(
            s.wait_log_from(*mark, "cluster state not applied", MOVE_LIMIT)
                .is_some(),
            "{} did not report the invalid file:\n{}",
            s.host(),
            fabric.all_logs()
        );
    }
    // Still iris1, nothing withdrawn, still answering.
    thread::sleep(Duration::from_millis(500));
    wait_owner(&fabric, "iris1", Duration::ZERO);
    assert_only_owner_answers(&fabric, "iris1", 3);
    assert_no_withdrawal(speaker(&speakers, "iris1"), &fabric);

    // A valid edit after it is applied.
    fabric.write_cluster_state(&endpoint_on(&yaml, "iris2"));
    wait_owner(&fabric, "iris2", MOVE_LIMIT);
    assert!(
        speaker(&speakers, "iris1")
            .wait_log(&format!("{SERVICE}: withdrawn (notOwner"), MOVE_LIMIT)
            .is_some(),
        "iris1 did not log the withdrawal:\n{}",
        fabric.all_logs()
    );
    assert_only_owner_answers(&fabric, "iris2", 2);
}

/// A long-lived task that cannot run ends the daemon, not just itself: with
/// a metrics address that does not exist in the node's namespace the
/// metrics server fails at once, and the process exits non-zero with one
/// error line (Kubernetes restarts a pod that exits; a daemon left running
/// without its /healthz would be half-alive). An address the namespace has
/// keeps the same speaker running.
#[test]
fn a_task_that_fails_ends_the_process_with_one_line() {
    let fabric = iris_fabric();
    fabric.write_cluster_state(&iris_yaml());
    // TEST-NET-2: assigned to no interface of the lab.
    let unbindable = "198.51.100.1:7472";
    let speaker = fabric.start_speaker(
        "iris1",
        &SpeakerOptions::file(SpeakerMode::Generic).arg(&format!("--metrics-address={unbindable}")),
    );
    let status = speaker.wait(SETTLE_LIMIT).unwrap_or_else(|| {
        panic!(
            "the speaker kept running without its metrics server:\n{}",
            fabric.all_logs()
        )
    });
    assert_eq!(status.code(), Some(1), "{}", speaker.log());
    let log = speaker.log();
    let errors: Vec<&str> = log
        .lines()
        .filter(|l| l.starts_with("speaker: error:"))
        .collect();
    assert_eq!(errors.len(), 1, "{log}");
    assert!(
        errors[0].starts_with(&format!(
            "speaker: error: serving metrics on {unbindable}: "
        )),
        "{log}"
    );
    assert_eq!(
        log.lines().last(),
        Some(errors[0]),
        "the error is the last line:\n{log}"
    );

    let fine = fabric.start_speaker(
        "iris2",
        &SpeakerOptions::file(SpeakerMode::Generic).arg("--metrics-address=192.0.2.12:7472"),
    );
    assert!(
        fine.wait_log("metrics and health on", SETTLE_LIMIT)
            .is_some(),
        "{}",
        fabric.all_logs()
    );
    assert!(fine.is_running(), "{}", fabric.all_logs());
}

/// MLD: when iris1 comes to own the IPv6 VIP the daemon joins its
/// solicited-node group, so the kernel sends an MLDv2 report for it (what
/// an MLD-snooping switch needs to forward the solicitations); when the
/// VIP goes, the kernel reports the leave. Seen by a capture on the
/// client's side of the (non-snooping) bridge, which floods reports.
/// `SIOCADDMULTI` alone, which the speaker also uses, sends no report: the
/// group is not reported before the daemon owns the VIP.
#[test]
fn an_owned_ipv6_vip_is_reported_with_mld_and_left_when_it_goes() {
    let fabric = Fabric::new(&[
        HostSpec::numbered("iris1", 11),
        HostSpec::numbered(CLIENT, 10),
    ]);
    let iris1_mac = fabric.host("iris1").mac.clone();
    let iris1_bytes = mac::parse(&iris1_mac).expect("iris1's MAC");
    let group = solicited_node(VIP_V6.parse().unwrap());
    let client = fabric.host(CLIENT).clone();
    // MLD travels behind a Hop-by-Hop header (Router Alert), which pcap's
    // `icmp6` (next header 58 in the IPv6 header) does not match.
    let capture = Capture::start(&client.ns, HOST_IF, "ip6 and ip6[6] == 0");
    let mld_for_group = |captured: &[Captured]| -> Vec<MldMessage> {
        captured
            .iter()
            .filter(|c| c.frame.get(6..12) == Some(&iris1_bytes[..]))
            .filter_map(|c| parse_mld(&c.frame))
            .filter(|m| m.records.iter().any(|r| r.group == group))
            .collect()
    };

    let yaml = iris_yaml();
    fabric.write_cluster_state(&yaml);
    let speaker = fabric.start_speaker("iris1", &SpeakerOptions::file(SpeakerMode::Generic));
    wait_started(&fabric, &speaker);
    fabric.wait_owner(&["iris1"], "iris1", &VIPS, SETTLE_LIMIT);
    // The kernel sends the state-change report at once and repeats it
    // (robustness 2, within 1 s): 5 s is ample on a loaded machine.
    let joined = wait_for(Duration::from_secs(5), || {
        let reports: Vec<MldMessage> = mld_for_group(&capture.so_far())
            .into_iter()
            .filter(|m| {
                m.icmp_type == ICMPV6_MLD_V2_REPORT
                    && m.records.iter().any(|r| {
                        r.group == group && r.record_type == MLD_CHANGE_TO_EXCLUDE && r.sources == 0
                    })
            })
            .collect();
        (!reports.is_empty()).then_some(reports)
    });
    assert!(
        joined.is_some(),
        "no MLDv2 report joining {group} from iris1 ({iris1_mac}) within 5 s of owning {VIP_V6}; \
         MLD seen for it: {:?}\n{}",
        mld_for_group(&capture.so_far()),
        fabric.all_logs()
    );
    assert!(
        speaker
            .log()
            .contains(&format!("joined the multicast group {group}")),
        "{}",
        speaker.log()
    );

    // The IPv6 ingress IP leaves the Service: the VIP leaves the maps and
    // the group is left.
    let without_v6 = replace_once(&yaml, &format!("      - ip: {VIP_V6}\n"), "");
    let joins_before = mld_for_group(&capture.so_far()).len();
    fabric.write_cluster_state(&without_v6);
    let gone = wait_for(MOVE_LIMIT, || {
        (!fabric.has_vip("iris1", VIP_V6)).then_some(())
    });
    assert!(
        gone.is_some(),
        "{VIP_V6} stayed in iris1's maps\n{}",
        fabric.all_logs()
    );
    let left = wait_for(Duration::from_secs(5), || {
        let leaves: Vec<MldMessage> = mld_for_group(&capture.so_far())
            .into_iter()
            .skip(joins_before)
            .filter(|m| {
                m.icmp_type == ICMPV6_MLD_V1_DONE
                    || m.records.iter().any(|r| {
                        r.group == group
                            && ((r.record_type == MLD_CHANGE_TO_INCLUDE && r.sources == 0)
                                || r.record_type == MLD_BLOCK_OLD_SOURCES)
                    })
            })
            .collect();
        (!leaves.is_empty()).then_some(leaves)
    });
    let all = mld_for_group(&capture.stop());
    assert!(
        left.is_some(),
        "no MLD leave for {group} from iris1 within 5 s of {VIP_V6} leaving its maps; MLD seen \
         for it: {all:?}\n{}",
        fabric.all_logs()
    );
    eprintln!("MLD for {group} from iris1: {all:?}");
}
