//! The README's election demo: `speaker run` on two nodes reading the same
//! cluster file (MetalLB issue #2425: membership disabled,
//! `externalTrafficPolicy: Local`, the ready endpoint on iris1), a client on
//! the same Ethernet segment, and the IP moving to iris2 when the file says
//! the endpoint moved. Every step prints the real command and its real
//! output; the lab ([`speaker_tests::lab::fabric`]) is removed at the end.
//!
//! Run as root: `cargo run -p speaker-tests --bin election_demo`. Exits
//! non-zero when an expected step fails.

use std::{
    collections::BTreeSet,
    process::ExitCode,
    time::{Duration, Instant},
};

use speaker_tests::lab::{
    require_root, run, speaker_bin, vip_answered, workspace_root, Arping, CmdOutput, Fabric,
    HostSpec, Speaker, SpeakerMode, SpeakerOptions, BRIDGE, HOST_IF,
};
use speaker_tests::narration::Narrator;

const VIP_V4: &str = "192.0.2.100";
const VIP_V6: &str = "2001:db8::100";
const SERVICE: &str = "default/web";
const CLIENT: &str = "client";
const EXAMPLE: &str = "docs/examples/iris-regression.yaml";

struct Demo<'a> {
    fabric: &'a Fabric,
    narrator: Narrator,
}

impl std::ops::Deref for Demo<'_> {
    type Target = Narrator;
    fn deref(&self) -> &Narrator {
        &self.narrator
    }
}

impl std::ops::DerefMut for Demo<'_> {
    fn deref_mut(&mut self) -> &mut Narrator {
        &mut self.narrator
    }
}

impl Demo<'_> {
    fn show_log(&self, speaker: &Speaker, text: &str) {
        for line in text.lines() {
            println!("  {}| {line}", speaker.host());
        }
    }

    /// arping from the client, every request broadcast (so that any node
    /// answering would be seen): each of `count` requests must get one reply,
    /// all from `mac`.
    fn arping(&mut self, count: u32, node: &str, mac: &str) {
        let (out, report) = self
            .fabric
            .arping_broadcast(CLIENT, &Arping::new(VIP_V4, HOST_IF, count));
        self.show(&out);
        let macs: BTreeSet<&str> = report.macs().into_iter().collect();
        self.expect(
            report.replies.len() == count as usize && macs == BTreeSet::from([mac]),
            format!("{count} replies, all from {node}'s MAC {mac}"),
        );
    }

    fn maps(&mut self, owner: &str, others: &[&str]) {
        for node in std::iter::once(owner).chain(others.iter().copied()) {
            let out = self.fabric.speaker_cmd(node, &["maps"]);
            println!("[{node}]");
            self.show(&out);
            let maps = self.fabric.maps_json(node);
            let holds = [VIP_V4, VIP_V6]
                .iter()
                .all(|vip| vip_answered(&maps, vip).is_some());
            let holds_none = [VIP_V4, VIP_V6]
                .iter()
                .all(|vip| vip_answered(&maps, vip).is_none());
            if node == owner {
                self.expect(holds, format!("{node}'s maps hold {VIP_V4} and {VIP_V6}"));
            } else {
                self.expect(holds_none, format!("{node}'s maps hold neither VIP"));
            }
        }
    }
}

/// True when the dry run's table elects `node` for the service.
fn elects(out: &CmdOutput, node: &str) -> bool {
    let suffix = format!("-> {node}");
    out.stdout
        .lines()
        .any(|l| l.starts_with(&format!("{SERVICE}:")) && l.trim_end().ends_with(&suffix))
}

/// The example, with the IPv6 ingress IP added when it lacks one.
fn scenario() -> Result<String, String> {
    let path = workspace_root().join(EXAMPLE);
    let yaml = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    if yaml.contains(&format!("ip: {VIP_V6}")) {
        return Ok(yaml);
    }
    let line = format!("      - ip: {VIP_V4}\n");
    if yaml.matches(&line).count() != 1 {
        return Err(format!("{EXAMPLE}: no single ingress line {line:?}"));
    }
    Ok(yaml.replacen(&line, &format!("{line}      - ip: {VIP_V6}\n"), 1))
}

fn run_demo(fabric: &Fabric) -> Vec<String> {
    let mut demo = Demo {
        fabric,
        narrator: Narrator::default(),
    };
    let iris1 = fabric.host("iris1").clone();
    let iris2 = fabric.host("iris2").clone();
    let file = fabric.cluster_state_path();
    let file_arg = file.to_string_lossy().into_owned();

    println!(
        "lab {}: one Ethernet segment (bridge {BRIDGE} in {})",
        fabric.id, fabric.switch_ns
    );
    for h in &fabric.hosts {
        println!(
            "  {:<7} {:<28} {HOST_IF} {}  {}  {}",
            h.name,
            h.ns,
            h.mac,
            h.v4.map(|a| a.to_string()).unwrap_or_default(),
            h.v6.map(|a| a.to_string()).unwrap_or_default()
        );
    }
    println!(
        "bpffs for the pins: {} (one pin dir per node)",
        fabric.bpffs.display()
    );

    demo.heading(&format!("The cluster: {EXAMPLE} (+ the IPv6 ingress IP)"));
    let yaml = match scenario() {
        Ok(yaml) => yaml,
        Err(e) => {
            demo.expect(false, e);
            return demo.problems().to_vec();
        }
    };
    fabric.write_cluster_state(&yaml);
    let out = run(
        "grep",
        &[
            "-n",
            "-E",
            "^kind:|^ +externalTrafficPolicy:|- ip:|nodeName:|ready:",
            &file_arg,
        ],
        Duration::from_secs(10),
    );
    demo.show(&out);

    demo.heading("Dry run: who should announce, and why the others do not");
    let out = fabric.speaker_local(&["election", "--cluster-state", &file_arg]);
    demo.show(&out);
    demo.expect(
        out.success() && elects(&out, "iris1"),
        "the dry run elects iris1 (not nobody, as MetalLB v0.14 did)",
    );

    demo.heading("Start `speaker run` on both nodes, on the same file");
    let options = SpeakerOptions::file(SpeakerMode::Native);
    let speakers: Vec<Speaker> = ["iris1", "iris2"]
        .iter()
        .map(|node| fabric.start_speaker(node, &options))
        .collect();
    let (s1, s2) = (&speakers[0], &speakers[1]);
    for s in &speakers {
        println!(
            "$ {} >{} 2>&1",
            fabric.pretty(s.command()),
            s.log_path().display()
        );
    }
    let announced = s1
        .wait_log(
            &format!("{SERVICE}: announcing from this node"),
            Duration::from_secs(10),
        )
        .is_some();
    let started2 = s2
        .wait_log("speaker running as node", Duration::from_secs(10))
        .is_some();
    // The first burst's log lines.
    std::thread::sleep(Duration::from_millis(300));
    for s in &speakers {
        println!("[{}'s log]", s.host());
        demo.show_log(s, &s.log());
    }
    demo.expect(
        announced,
        format!("iris1 logs \"{SERVICE}: announcing from this node\""),
    );
    demo.expect(
        started2 && s2.log_lines_with("announcing from this node").is_empty(),
        "iris2 runs and announces nothing",
    );

    demo.heading(&format!("The client asks: arping {VIP_V4}"));
    demo.arping(3, "iris1", &iris1.mac);

    demo.heading("The pinned maps: speaker maps on both nodes");
    demo.maps("iris1", &["iris2"]);

    demo.heading("The client's kernel resolves the VIPs: ping, then ip neigh");
    for vip in [VIP_V4, VIP_V6] {
        let out = fabric.ping(CLIENT, vip);
        demo.show(&out);
        let entry = fabric.wait_neighbour_mac(CLIENT, vip, &iris1.mac, Duration::from_secs(3));
        let out = fabric.exec(CLIENT, "ip", &["neigh", "show", vip]);
        demo.show(&out);
        demo.expect(
            entry.is_some(),
            format!("{vip} resolved to iris1's MAC {}", iris1.mac),
        );
    }

    demo.heading("The endpoint moves to iris2: edit the file");
    let marks: Vec<usize> = speakers.iter().map(Speaker::log_len).collect();
    let edited = Instant::now();
    let out = run(
        "sed",
        &["-i", "s/nodeName: iris1/nodeName: iris2/", &file_arg],
        Duration::from_secs(10),
    );
    // Nothing is sent by the client from here on: only its neighbour table
    // is read, until both entries show iris2's MAC.
    let switched: Vec<_> = [VIP_V4, VIP_V6]
        .iter()
        .map(|vip| {
            fabric
                .wait_neighbour_mac(CLIENT, vip, &iris2.mac, Duration::from_secs(3))
                .map(|(entry, at)| (entry, at.duration_since(edited)))
        })
        .collect();
    demo.show(&out);
    demo.expect(out.success(), "sed -i succeeded");
    let out = run(
        "grep",
        &["-n", "nodeName:", &file_arg],
        Duration::from_secs(10),
    );
    demo.show(&out);
    let out = fabric.speaker_local(&["election", "--cluster-state", &file_arg]);
    demo.show(&out);
    demo.expect(
        out.success() && elects(&out, "iris2"),
        "the dry run now elects iris2",
    );

    demo.heading("The speakers' logs since the edit");
    let withdrawn = s1
        .wait_log_from(
            marks[0],
            &format!("{SERVICE}: withdrawn"),
            Duration::from_secs(5),
        )
        .is_some();
    let announcing = s2
        .wait_log_from(
            marks[1],
            &format!("{SERVICE}: announcing from this node"),
            Duration::from_secs(5),
        )
        .is_some();
    std::thread::sleep(Duration::from_millis(200));
    for (s, mark) in speakers.iter().zip(&marks) {
        println!("[{}'s log]", s.host());
        demo.show_log(s, &s.log_from(*mark));
    }
    demo.expect(
        withdrawn,
        format!("iris1 logs \"{SERVICE}: withdrawn (<reason>)\""),
    );
    demo.expect(
        announcing,
        format!("iris2 logs \"{SERVICE}: announcing from this node\""),
    );

    demo.heading("The client's existing entries now point at iris2 (gratuitous ARP / NA)");
    println!("(the client sent nothing since the edit; its entries were read every 20 ms)");
    for (vip, result) in [VIP_V4, VIP_V6].iter().zip(&switched) {
        let out = fabric.exec(CLIENT, "ip", &["neigh", "show", vip]);
        demo.show(&out);
        match result {
            Some((entry, after)) => {
                println!(
                    "   switched {:.0} ms after the edit, state {}",
                    after.as_secs_f64() * 1000.0,
                    entry.state.join(",")
                );
                demo.expect(
                    *after < Duration::from_secs(2),
                    format!(
                        "{vip} -> iris2's MAC {} within 2 s, without a request",
                        iris2.mac
                    ),
                );
            }
            None => {
                demo.expect(
                    false,
                    format!("{vip} -> iris2's MAC {} within 3 s", iris2.mac),
                );
            }
        }
    }

    demo.heading(&format!("The client asks again: arping {VIP_V4}"));
    demo.arping(3, "iris2", &iris2.mac);

    demo.heading("The pinned maps after the move");
    demo.maps("iris2", &["iris1"]);

    demo.heading("Stop the speakers (SIGTERM; the pins stay for the next speaker)");
    for s in &speakers {
        let mark = s.log_len();
        let status = s.terminate(Duration::from_secs(10));
        demo.show_log(s, &s.log_from(mark));
        demo.expect(
            status.is_some_and(|s| s.success()),
            format!("the speaker on {} exited cleanly", s.host()),
        );
    }
    demo.problems().to_vec()
}

fn main() -> ExitCode {
    require_root();
    // Built (or found up to date) first, so that the time below is the demo's.
    let build = Instant::now();
    let bin = speaker_bin();
    println!(
        "speaker binary: {} (cargo build -p speaker: {:.1} s)",
        bin.display(),
        build.elapsed().as_secs_f64()
    );
    let started = Instant::now();
    println!(
        "Building the lab (a bridge, two nodes and a client in network namespaces, a bpffs)..."
    );
    let problems = {
        // Documentation MACs (RFC 7042), to tell the nodes apart at a glance.
        let fabric = Fabric::new(&[
            HostSpec::numbered("iris1", 11).mac("00:00:5e:00:53:11"),
            HostSpec::numbered("iris2", 12).mac("00:00:5e:00:53:12"),
            HostSpec::numbered(CLIENT, 10).mac("00:00:5e:00:53:10"),
        ]);
        // The responders run in native mode: the bridge ports need an XDP
        // program for the kernel to deliver their XDP_TX frames.
        fabric.attach_pass_through_ports();
        let problems = run_demo(&fabric);
        println!("\n==> Tearing down the lab");
        problems
        // `fabric` is dropped here: speakers stopped, namespaces deleted,
        // bpffs unmounted.
    };
    println!("done in {:.1} s", started.elapsed().as_secs_f64());
    if problems.is_empty() {
        println!("\nEvery expected step happened.");
        ExitCode::SUCCESS
    } else {
        println!("\n{} expected step(s) failed:", problems.len());
        for p in &problems {
            println!("  - {p}");
        }
        ExitCode::FAILURE
    }
}
