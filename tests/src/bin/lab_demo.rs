//! The README's lab demo: two network namespaces joined by a veth pair, the
//! XDP responder attached on the "node" side, and real tools on the "client"
//! side asking for VIPs that no interface holds. Every step prints the real
//! command and its output; the lab is removed at the end.
//!
//! Run as root: `cargo run -p speaker-tests --bin lab_demo`. Exits non-zero
//! when an expected answer is missing (or an unexpected one arrives).

use std::{process::ExitCode, time::Duration};

use speaker_tests::lab::{
    pair::{NOT_OWNED_V4, VIP_V4, VIP_V6},
    require_root, vip_answered, Arping, Lab, Side, XdpMode,
};
use speaker_tests::narration::Narrator;

fn run_demo(lab: &Lab) -> Vec<String> {
    let mut demo = Narrator::default();
    let mac = lab.node_mac.clone();

    println!(
        "lab {}: node namespace {} ({} {mac}), client namespace {} ({})",
        lab.id, lab.node_ns, lab.node_if, lab.client_ns, lab.client_if
    );
    println!("bpffs for the pins: {}", lab.bpffs.display());

    demo.heading("Attach the responder to the node's veth (native mode)");
    let out = lab.attach_responder(XdpMode::Native);
    demo.show(&out);
    demo.expect(out.success(), "speaker xdp attach succeeded");
    println!("The client's veth gets the empty XDP_PASS program, so that frames the");
    println!("responder sends back with XDP_TX are delivered (veth in native mode):");
    let out = lab.attach_pass_through();
    demo.show(&out);
    demo.expect(out.success(), "speaker xdp attach --pass-through succeeded");

    demo.heading("Add the VIPs (they are not configured as addresses anywhere)");
    for vip in [VIP_V4, VIP_V6] {
        let out = lab.add_vip(vip);
        demo.show(&out);
        demo.expect(out.success(), format!("speaker vip add {vip} succeeded"));
    }
    let out = lab.exec(Side::Node, "ip", &["-brief", "address", "show"]);
    demo.show(&out);
    demo.expect(
        !lab.address_configured(VIP_V4) && !lab.address_configured(VIP_V6),
        "neither VIP is an address in the node or the client",
    );

    demo.heading(&format!("ARP: arping -c 3 {VIP_V4} from the client"));
    let (out, report) = lab.arping(&Arping::new(VIP_V4, &lab.client_if, 3));
    demo.show(&out);
    demo.expect(
        report.replies.len() == 3 && report.macs().iter().all(|m| *m == mac),
        format!("3 replies, all from the node's MAC {mac}"),
    );

    demo.heading(&format!("NDP: ndisc6 {VIP_V6} from the client"));
    let (out, macs) = lab.ndisc6(VIP_V6, 3);
    demo.show(&out);
    demo.expect(
        macs.first() == Some(&mac),
        format!("a Neighbor Advertisement with {mac}"),
    );

    demo.heading("Kernel neighbour resolution: ping (fails: nobody holds the VIPs), then ip neigh");
    for vip in [VIP_V4, VIP_V6] {
        let out = lab.ping(vip);
        demo.show(&out);
        let entry = lab.wait_client_neighbour(vip, Duration::from_secs(3));
        let out = lab.exec(Side::Client, "ip", &["neigh", "show", vip]);
        demo.show(&out);
        demo.expect(
            entry.and_then(|e| e.lladdr).as_deref() == Some(mac.as_str()),
            format!("the client's kernel resolved {vip} to {mac}"),
        );
    }

    demo.heading(&format!(
        "An address nobody owns: arping {NOT_OWNED_V4} gets no answer"
    ));
    let (out, report) = lab.arping(&Arping::new(NOT_OWNED_V4, &lab.client_if, 2).deadline(2));
    demo.show(&out);
    demo.expect(
        report.replies.is_empty() && !out.success(),
        format!("no reply for {NOT_OWNED_V4}"),
    );

    demo.heading("What the pinned maps say: speaker maps");
    let out = lab.speaker(Side::Node, &["maps"]);
    demo.show(&out);
    demo.expect(out.success(), "speaker maps succeeded");
    let maps = lab.maps_json();
    demo.expect(
        vip_answered(&maps, VIP_V4).is_some_and(|n| n >= 3),
        format!("{VIP_V4} answered at least 3 requests"),
    );
    demo.expect(
        vip_answered(&maps, VIP_V6).is_some_and(|n| n >= 1),
        format!("{VIP_V6} answered at least 1 request"),
    );
    demo.problems().to_vec()
}

fn main() -> ExitCode {
    require_root();
    let started = std::time::Instant::now();
    println!("Building the lab (two network namespaces, a veth pair, a bpffs)...");
    let problems = {
        let lab = Lab::new();
        let problems = run_demo(&lab);
        println!("\n==> Tearing down the lab");
        problems
        // `lab` is dropped here: namespaces deleted, bpffs unmounted.
    };
    println!("done in {:.1} s", started.elapsed().as_secs_f64());
    if problems.is_empty() {
        println!("\nAll expected answers arrived.");
        ExitCode::SUCCESS
    } else {
        println!("\n{} expected answer(s) missing:", problems.len());
        for p in &problems {
            println!("  - {p}");
        }
        ExitCode::FAILURE
    }
}
