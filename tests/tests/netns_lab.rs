//! End to end in network namespaces: the `speaker` CLI attaches the XDP
//! responder to a veth in a "node" namespace, and real tools in a "client"
//! namespace (arping, ndisc6, the kernel's own neighbour resolution) must get
//! their answers from it, for VIPs that are configured nowhere.
//!
//! Needs root (namespaces, bpffs, XDP) and fails, not skips, without it.
//! The tests share tools and run one at a time. Run:
//! `cargo test -p speaker-tests --test netns_lab`.

use std::{
    sync::{Mutex, MutexGuard},
    thread,
    time::{Duration, Instant},
};

use speaker_tests::lab::{
    linked_interfaces,
    pair::{NODE_V4, NODE_V6, NOT_OWNED_V4, NOT_OWNED_V6, VIP_V4, VIP_V6},
    reason_count, require_root, vip_answered, Arping, CmdOutput, Lab, Side, Spawn, XdpMode,
};

/// The tests use the same tools and the same kernel: one at a time.
fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    let guard = LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    require_root();
    guard
}

fn answered(lab: &Lab, vip: &str) -> u64 {
    let maps = lab.maps_json();
    vip_answered(&maps, vip)
        .unwrap_or_else(|| panic!("{vip} is not in speaker maps --json:\n{maps:#}"))
}

fn not_owned(lab: &Lab) -> u64 {
    let maps = lab.maps_json();
    reason_count(&maps, "not_owned").unwrap_or_else(|| panic!("no not_owned reason in:\n{maps:#}"))
}

/// arping `count` requests at the VIP must get exactly `count` replies, all
/// from the node's MAC. Returns how many requests arping reported sending.
fn assert_arping_answered(lab: &Lab, arping: &Arping) -> u32 {
    let (out, report) = lab.arping(arping);
    let count = arping.count as usize;
    assert!(out.success(), "arping {} failed:\n{out}", arping.target);
    assert_eq!(
        report.replies.len(),
        count,
        "expected {count} replies:\n{out}"
    );
    for reply in &report.replies {
        assert_eq!(
            reply.mac, lab.node_mac,
            "a reply not from the node's MAC:\n{out}"
        );
        assert_eq!(
            reply.ip, arping.target,
            "a reply for another address:\n{out}"
        );
    }
    assert_eq!(
        report.received,
        Some(arping.count),
        "arping's summary disagrees:\n{out}"
    );
    let sent = report
        .sent
        .unwrap_or_else(|| panic!("arping printed no 'sent' summary:\n{out}"));
    assert_eq!(
        sent, arping.count,
        "arping sent more requests than asked for:\n{out}"
    );
    sent
}

#[test]
fn native_mode_answers_arp_ndp_and_kernel_resolution() {
    let _serial = serial();
    let lab = Lab::with_responder(XdpMode::Native);

    // The data plane alone answers: no VIP is an address anywhere.
    for vip in [VIP_V4, VIP_V6, NOT_OWNED_V4, NOT_OWNED_V6] {
        assert!(
            !lab.address_configured(vip),
            "{vip} is configured as an address in the lab"
        );
    }
    let (mode, _) = lab
        .xdp_attachment(Side::Node)
        .expect("no XDP program on the node's veth");
    assert_eq!(
        mode, "xdp",
        "the responder is not attached in native (driver) mode"
    );
    let (mode, _) = lab
        .xdp_attachment(Side::Client)
        .expect("no pass-through program on the client");
    assert_eq!(
        mode, "xdp",
        "the client's pass-through program is not in native mode"
    );
    let maps = lab.maps_json();
    assert_eq!(
        linked_interfaces(&maps),
        std::slice::from_ref(&lab.node_if),
        "{maps:#}"
    );
    for vip in [VIP_V4, VIP_V6] {
        assert_eq!(
            vip_answered(&maps, vip),
            Some(0),
            "{vip} must start at 0:\n{maps:#}"
        );
    }

    // IPv4: arping gets exactly N replies from the node's MAC, and the VIP's
    // counter moves by exactly the number of requests sent.
    let v4_before = answered(&lab, VIP_V4);
    let sent = assert_arping_answered(&lab, &Arping::new(VIP_V4, &lab.client_if, 3));
    assert_eq!(
        answered(&lab, VIP_V4),
        v4_before + u64::from(sent),
        "answered({VIP_V4})"
    );

    // IPv6: ndisc6 gets a Neighbor Advertisement with the node's MAC, one
    // solicitation (-r 1) per run, each counted once.
    let v6_before = answered(&lab, VIP_V6);
    let runs = 3;
    for _ in 0..runs {
        let (out, macs) = lab.ndisc6(VIP_V6, 1);
        assert!(out.success(), "ndisc6 {VIP_V6} failed:\n{out}");
        assert_eq!(
            macs,
            std::slice::from_ref(&lab.node_mac),
            "ndisc6 did not get the node's MAC:\n{out}"
        );
    }
    assert_eq!(
        answered(&lab, VIP_V6),
        v6_before + runs,
        "answered({VIP_V6})"
    );
    // The other VIP's counter did not move meanwhile.
    assert_eq!(answered(&lab, VIP_V4), v4_before + u64::from(sent));

    // The kernel's own neighbour resolution (triggered by ping, which itself
    // fails: nobody holds the address) learns the node's MAC.
    for vip in [VIP_V4, VIP_V6] {
        let ping = lab.ping(vip);
        let entry = lab.wait_client_neighbour(vip, Duration::from_secs(3));
        let entry =
            entry.unwrap_or_else(|| panic!("no neighbour entry for {vip} after ping:\n{ping}"));
        assert_eq!(
            entry.lladdr.as_deref(),
            Some(lab.node_mac.as_str()),
            "the client's neighbour entry for {vip} is {entry:?}:\n{ping}"
        );
        assert!(
            !entry.is("FAILED") && !entry.is("INCOMPLETE"),
            "neighbour entry for {vip}: {entry:?}"
        );
    }

    // Addresses nobody owns: no answer from anyone.
    let not_owned_before = not_owned(&lab);
    let (out, report) = lab.arping(&Arping::new(NOT_OWNED_V4, &lab.client_if, 2).deadline(3));
    assert!(
        !out.success(),
        "arping {NOT_OWNED_V4} must fail (no answer):\n{out}"
    );
    assert!(
        report.replies.is_empty(),
        "someone answered for {NOT_OWNED_V4}:\n{out}"
    );
    let sent_not_owned = report
        .sent
        .unwrap_or_else(|| panic!("no 'sent' summary:\n{out}"));
    assert!(sent_not_owned >= 2, "{out}");
    let (out, macs) = lab.ndisc6(NOT_OWNED_V6, 1);
    assert!(
        !out.success() && macs.is_empty(),
        "someone answered for {NOT_OWNED_V6}:\n{out}"
    );
    let moved = not_owned(&lab) - not_owned_before;
    assert!(
        moved > u64::from(sent_not_owned),
        "not_owned moved by {moved}, less than the {sent_not_owned} ARP + 1 NS requests sent"
    );

    // Everything else still reaches the node's kernel (XDP_PASS).
    for address in [NODE_V4, NODE_V6] {
        lab.ping(address).assert_success();
    }

    for address in [NOT_OWNED_V4, NOT_OWNED_V6] {
        let ping = lab.ping(address);
        assert!(!ping.success(), "ping {address} succeeded:\n{ping}");
        // Resolution is still being retried or has failed: either way the
        // entry exists (the kernel tried) and has no link-layer address.
        thread::sleep(Duration::from_millis(300));
        let entry = lab.client_neighbour(address);
        let entry = entry.unwrap_or_else(|| panic!("no neighbour entry for {address}:\n{ping}"));
        assert!(
            entry.lladdr.is_none() && (entry.is("INCOMPLETE") || entry.is("FAILED")),
            "{address} was resolved: {entry:?}"
        );
    }

    // Each VIP counted exactly one more request, the kernel's resolution
    // (ping); the unowned traffic and the pings to the node moved neither.
    assert_eq!(
        answered(&lab, VIP_V4),
        v4_before + u64::from(sent) + 1,
        "answered({VIP_V4})"
    );
    assert_eq!(
        answered(&lab, VIP_V6),
        v6_before + runs + 1,
        "answered({VIP_V6})"
    );
}

#[test]
fn restarted_speaker_adopts_pins_without_missing_a_request() {
    const REQUESTS: u32 = 60;
    let _serial = serial();
    let lab = Lab::with_responder(XdpMode::Native);
    let (_, first_program) = lab.xdp_attachment(Side::Node).expect("no XDP program");

    let sent_before =
        assert_arping_answered(&lab, &Arping::new(VIP_V4, &lab.client_if, 3).interval(0.2));
    let before = answered(&lab, VIP_V4);
    assert_eq!(before, u64::from(sent_before));

    // Long enough for two restarts and more: each `speaker xdp attach`
    // loads the program anew, about 1.1 s of it in the kernel's verifier
    // here (BPF_PROG_LOAD, measured with strace).
    let arping = Arping::new(VIP_V4, &lab.client_if, REQUESTS)
        .interval(0.1)
        .deadline(20);
    let background = lab.arping_background(&arping);
    thread::sleep(Duration::from_millis(600));

    // New speaker processes, again and again while arping runs: each adopts
    // the pinned link and maps and replaces the program in place, re-adds
    // the same VIP, and reads the maps. The counter only ever grows.
    let restarts_started = Instant::now();
    let mut last = before;
    let mut restarts = 0;
    while restarts == 0 || restarts_started.elapsed() < Duration::from_millis(1500) {
        let attach = lab.attach_responder(XdpMode::Native);
        attach.assert_success();
        assert!(
            attach
                .stdout
                .contains("replaced the attached program in place"),
            "attach did not replace the program in place:\n{attach}"
        );
        lab.add_vip(VIP_V4).assert_success();
        let maps = lab.speaker(Side::Node, &["maps"]);
        maps.assert_success();
        assert!(
            maps.stdout.contains(VIP_V4),
            "speaker maps does not list {VIP_V4}:\n{maps}"
        );
        let now = answered(&lab, VIP_V4);
        assert!(
            now >= last,
            "the counter went back during restart {restarts}: {last} -> {now}"
        );
        last = now;
        restarts += 1;
    }
    eprintln!(
        "{restarts} restarts in {:?}; answered {before} -> {last} meanwhile",
        restarts_started.elapsed()
    );
    assert!(
        last > before,
        "the counter reset or stalled during the restarts: {before} -> {last}"
    );
    // The restarts happened while the arping run was still going.
    assert!(
        last < before + u64::from(REQUESTS),
        "the arping run was over before the restarts ended: the test proves nothing"
    );

    let (out, report) = background.wait();
    assert!(out.success(), "background arping failed:\n{out}");
    assert_eq!(
        report.replies.len(),
        REQUESTS as usize,
        "replies missing across the restart:\n{out}"
    );
    assert!(
        report.replies.iter().all(|r| r.mac == lab.node_mac),
        "{out}"
    );
    let sent = report
        .sent
        .unwrap_or_else(|| panic!("no 'sent' summary:\n{out}"));
    assert_eq!(sent, REQUESTS, "{out}");

    // The counter kept counting from before the restart.
    assert_eq!(
        answered(&lab, VIP_V4),
        before + u64::from(sent),
        "answered({VIP_V4}) after restart"
    );

    // Same mode, new program.
    let (mode, program) = lab
        .xdp_attachment(Side::Node)
        .expect("no XDP program after restart");
    assert_eq!(
        mode, "xdp",
        "the replaced program is no longer in native mode"
    );
    assert_ne!(program, first_program, "the program was not replaced");
    assert_eq!(
        linked_interfaces(&lab.maps_json()),
        std::slice::from_ref(&lab.node_if)
    );
}

#[test]
fn detached_responder_answers_nothing() {
    let _serial = serial();
    let lab = Lab::with_responder(XdpMode::Native);
    assert_arping_answered(&lab, &Arping::new(VIP_V4, &lab.client_if, 2).interval(0.2));

    let detach = lab.detach_responder();
    detach.assert_success();
    assert_eq!(
        lab.xdp_attachment(Side::Node),
        None,
        "a program is still attached:\n{detach}"
    );
    assert!(
        linked_interfaces(&lab.maps_json()).is_empty(),
        "the link pin remains"
    );

    let (out, report) = lab.arping(&Arping::new(VIP_V4, &lab.client_if, 2).deadline(3));
    assert!(!out.success(), "arping must fail after detach:\n{out}");
    assert!(report.replies.is_empty(), "answered after detach:\n{out}");
    let (out, macs) = lab.ndisc6(VIP_V6, 1);
    assert!(
        !out.success() && macs.is_empty(),
        "NDP answered after detach:\n{out}"
    );

    // Detaching twice is an error, not a crash.
    let again = lab.detach_responder();
    assert_eq!(again.code(), Some(1), "{again}");
    assert_one_line_error(&again);
}

#[test]
fn generic_mode_answers_without_pass_through() {
    let _serial = serial();
    let lab = Lab::new();
    lab.attach_responder(XdpMode::Generic).assert_success();
    lab.add_vip(VIP_V4).assert_success();
    lab.add_vip(VIP_V6).assert_success();
    let (mode, _) = lab
        .xdp_attachment(Side::Node)
        .expect("no XDP program on the node's veth");
    assert_eq!(mode, "xdpgeneric");
    assert_eq!(
        lab.xdp_attachment(Side::Client),
        None,
        "the client must have no program"
    );
    assert!(!lab.address_configured(VIP_V4) && !lab.address_configured(VIP_V6));

    let sent = assert_arping_answered(&lab, &Arping::new(VIP_V4, &lab.client_if, 3).interval(0.2));
    assert_eq!(answered(&lab, VIP_V4), u64::from(sent));
    let (out, macs) = lab.ndisc6(VIP_V6, 1);
    assert_eq!(macs, std::slice::from_ref(&lab.node_mac), "{out}");
    assert_eq!(answered(&lab, VIP_V6), 1);
}

fn assert_one_line_error(out: &CmdOutput) {
    assert!(
        !out.stderr.contains("panicked"),
        "the speaker panicked:\n{out}"
    );
    let lines = out.stderr_lines();
    assert_eq!(lines.len(), 1, "expected a one-line error:\n{out}");
    assert!(
        lines[0].starts_with("speaker: error: "),
        "not a `speaker: error:` line:\n{out}"
    );
}

#[test]
fn bad_input_gives_one_line_errors() {
    let _serial = serial();
    let lab = Lab::with_responder(XdpMode::Native);
    let not_bpffs = std::env::temp_dir().join("not-bpffs");
    let not_bpffs = not_bpffs.to_string_lossy().into_owned();

    let cases: Vec<(&str, CmdOutput)> = vec![
        (
            "invalid address",
            lab.speaker(
                Side::Node,
                &["vip", "add", "999.1.1.1", "--interface", &lab.node_if],
            ),
        ),
        (
            "invalid address (no pin dir)",
            lab.speaker_raw(Side::Node, &["vip", "add", "999.1.1.1", "--interface", "X"]),
        ),
        (
            "unknown interface (vip add)",
            lab.speaker(
                Side::Node,
                &["vip", "add", VIP_V4, "--interface", "nosuchif0"],
            ),
        ),
        (
            "unknown interface (vip del)",
            lab.speaker(
                Side::Node,
                &["vip", "del", VIP_V4, "--interface", "nosuchif0"],
            ),
        ),
        (
            "unknown interface (attach)",
            lab.speaker(Side::Node, &["xdp", "attach", "--interface", "nosuchif0"]),
        ),
        (
            "not a bpffs",
            lab.speaker_raw(Side::Node, &["maps", "--pin-dir", &not_bpffs]),
        ),
        (
            "not a bpffs (root namespace)",
            Spawn::speaker()
                .args(["maps", "--pin-dir", &not_bpffs])
                .run(Duration::from_secs(30)),
        ),
    ];
    let mut failures = Vec::new();
    for (name, out) in &cases {
        let ok = out.code() == Some(1)
            && !out.stderr.contains("panicked")
            && out.stderr_lines().len() == 1
            && out.stderr_lines()[0].starts_with("speaker: error: ");
        if !ok {
            failures.push(format!(
                "{name}: expected exit code 1 and one `speaker: error:` line\n{out}"
            ));
        }
    }
    for (name, out) in &cases {
        eprintln!("{name}: exit {:?}: {}", out.code(), out.stderr.trim());
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );

    // The error names what is wrong.
    assert!(cases[2].1.stderr.contains("nosuchif0"), "{}", cases[2].1);
    assert!(
        cases[5].1.stderr.contains("BPF filesystem"),
        "{}",
        cases[5].1
    );
    // Nothing changed: both VIPs are still there and still answered.
    assert_arping_answered(&lab, &Arping::new(VIP_V4, &lab.client_if, 1));
}
