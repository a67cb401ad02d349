//! The data plane's behaviour on a veth pair in network namespaces that a
//! BPF_PROG_TEST_RUN table cannot show: native attachment at a jumbo MTU
//! (`xdp.frags`), and a host on the link claiming one of our VIPs with
//! `arping -U`, seen in `speaker maps` with its MAC.
//!
//! Needs root (namespaces, bpffs, XDP) and fails, not skips, without it.
//! Run: `cargo test -p speaker-tests --test dataplane_lab`.

use std::{
    sync::{Mutex, MutexGuard},
    time::{Duration, Instant},
};

use speaker_tests::lab::{
    arping::arping_flavor, pair::VIP_V4, require_root, ArpingFlavor, Lab, Side, XdpMode,
};

/// The tests use the same tools and the same kernel: one at a time.
fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    let guard = LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    require_root();
    guard
}

fn set_mtu(lab: &Lab, side: Side, mtu: u32) {
    let out = lab.exec(
        side,
        "ip",
        &[
            "link",
            "set",
            "dev",
            lab.interface(side),
            "mtu",
            &mtu.to_string(),
        ],
    );
    assert!(out.success(), "setting MTU {mtu}:\n{out}");
}

/// veth refuses a program without `xdp.frags` in native mode once the
/// peer's MTU exceeds a page; the responder declares frags and is accepted.
/// The pass-through program (deliberately not frags-aware) shows the test
/// would catch a responder that lost the declaration.
#[test]
fn native_attach_at_mtu_9000_needs_and_has_frags() {
    let _serial = serial();
    let lab = Lab::new();
    set_mtu(&lab, Side::Node, 9000);
    set_mtu(&lab, Side::Client, 9000);

    let refused = lab.attach_pass_through();
    assert!(
        !refused.success(),
        "a program without xdp.frags was attached natively at MTU 9000; the check below \
         proves nothing:\n{refused}"
    );

    let attached = lab.attach_responder(XdpMode::Native);
    assert!(
        attached.success(),
        "the responder was refused in native mode at MTU 9000:\n{attached}"
    );
    let link = lab.exec(
        Side::Node,
        "ip",
        &["-d", "link", "show", "dev", &lab.node_if],
    );
    assert!(
        link.stdout.contains("xdp ") || link.stdout.contains("xdpdrv"),
        "no native XDP program on {} after attaching:\n{link}",
        lab.node_if
    );
    assert!(
        !link.stdout.contains("xdpgeneric"),
        "attached in generic mode:\n{link}"
    );
}

/// `arping -U` from the client claims the VIP: the node's program records a
/// conflict for that VIP, naming the client's MAC, and does not answer it.
#[test]
fn arping_unsolicited_claim_shows_the_conflict_in_speaker_maps() {
    let _serial = serial();
    let lab = Lab::with_responder(XdpMode::Generic);
    let added = lab.add_vip(VIP_V4);
    assert!(added.success(), "speaker vip add:\n{added}");
    let vip_row = |maps: &serde_json::Value| {
        maps["vips"]
            .as_array()
            .expect("vips")
            .iter()
            .find(|v| v["address"] == VIP_V4)
            .cloned()
            .expect("the VIP in speaker maps")
    };
    let before = vip_row(&lab.maps_json());
    assert_eq!(
        before["conflicts"], 0,
        "conflicts before any claim: {before}"
    );

    // The conflicting host has the address configured (iputils arping -U
    // binds to it as its source).
    let vip_host = format!("{VIP_V4}/32");
    let configured = lab.exec(
        Side::Client,
        "ip",
        &["addr", "add", &vip_host, "dev", &lab.client_if],
    );
    assert!(
        configured.success(),
        "configuring the VIP on the client:\n{configured}"
    );
    let args: Vec<&str> = match arping_flavor() {
        ArpingFlavor::Iputils => vec!["-U", "-c", "2", "-I", &lab.client_if, VIP_V4],
        ArpingFlavor::Habets => vec!["-U", "-c", "2", "-S", VIP_V4, "-i", &lab.client_if, VIP_V4],
    };
    let claim = lab.exec_timeout(Side::Client, "arping", &args, Duration::from_secs(20));
    // arping -U expects no replies; its exit status says nothing here.
    eprintln!("{claim}");

    let deadline = Instant::now() + Duration::from_secs(10);
    let row = loop {
        let row = vip_row(&lab.maps_json());
        if row["conflicts"].as_u64().unwrap_or(0) >= 1 || Instant::now() > deadline {
            break row;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        row["conflicts"].as_u64().unwrap_or(0) >= 1,
        "no conflict recorded for {VIP_V4} after arping -U from the client: {row}"
    );
    assert_eq!(
        row["last_conflict_mac"], lab.client_mac,
        "the conflict names another MAC than the client's: {row}"
    );
    assert_eq!(row["answered"], 0, "the claim was answered: {row}");
    let table = lab.speaker(Side::Node, &["maps"]);
    assert!(
        table.stdout.contains(&lab.client_mac),
        "speaker maps (table) does not name the client's MAC:\n{table}"
    );
}
