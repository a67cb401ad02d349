//! The XDP program's own debug records (`aya-log`) reach the speaker's JSON
//! log through `tracing`: the real `speaker run` (file source, generic XDP)
//! on a node of a bridged segment; the client sends ARP requests for the VIP
//! to another host's MAC, which the program refuses
//! (`wrong_eth_destination`) and logs. With `--log-level debug` every one
//! of them is a `"level":"debug"` line with the VIP and the reason; with the
//! default level (info) the same frames leave no record — not in the log,
//! and not in the program's ring buffer (pinned as `AYA_LOGS`, unread at
//! that level), because the speaker loads the program with its log level
//! below debug.
//!
//! Needs root and iproute2; fails, not skips, without them. Run:
//! `cargo test -p speaker-tests --test ebpf_log_lab`.

use std::{net::Ipv4Addr, path::Path, thread, time::Duration};

use aya::maps::{Map, MapData, RingBuf};
use serde_json::Value;
use speaker_tests::{
    frames::{self, Mac},
    lab::{
        cluster::lab_cluster_yaml, mac, probe, Fabric, HostSpec, SpeakerMode, SpeakerOptions,
        HOST_IF,
    },
};

const NODE: &str = "node1";
const CLIENT: &str = "client";
const VIP: &str = "192.0.2.100";
/// No host has it: the bridge floods frames sent to it.
const STRANGER_MAC: Mac = [0x02, 0x00, 0x00, 0x00, 0x00, 0x99];
const REFUSED: usize = 3;
/// What the program says for each refused request.
const RECORD: &str = "xdp: ARP request for 192.0.2.100 not answered: sent to another unicast MAC";

/// Starts a speaker with `options`, sends the refused requests, and returns
/// its log lines as JSON, once the refusals are counted.
fn refused_requests_logged(options: SpeakerOptions) -> (Vec<Value>, String, usize) {
    let fabric = Fabric::new(&[HostSpec::numbered(NODE, 11), HostSpec::numbered(CLIENT, 10)]);
    fabric.write_cluster_state(&lab_cluster_yaml(&[NODE], &[VIP], "Cluster", NODE));
    let speaker = fabric.start_speaker(NODE, &options);
    assert!(
        speaker
            .wait_log("speaker running as node", Duration::from_secs(10))
            .is_some(),
        "the speaker did not start:\n{}",
        fabric.all_logs()
    );
    fabric.wait_owner(&[NODE], NODE, &[VIP], Duration::from_secs(10));

    let client = fabric.host(CLIENT);
    let client_mac = mac::parse(&client.mac).expect("the client's MAC");
    let client_ip: Ipv4Addr = client.v4.expect("the client's IPv4 address");
    let vip: Ipv4Addr = VIP.parse().unwrap();
    let refused = |maps: &Value| {
        maps["reasons"]
            .as_array()
            .expect("reasons")
            .iter()
            .find(|r| r["reason"] == "wrong_eth_destination")
            .and_then(|r| r["count"].as_u64())
            .expect("a wrong_eth_destination count")
    };
    let before = refused(&fabric.maps_json(NODE));
    let request = frames::arp_unicast_request(STRANGER_MAC, client_mac, client_ip, vip);
    probe::send_frames(&client.ns, HOST_IF, &vec![request; REFUSED]).expect("sending the frames");
    // The program took the logged path for every frame: the counter says so
    // whatever the log says, so a missing record is the logger's fault.
    let counted = (0..20).find_map(|_| {
        let now = refused(&fabric.maps_json(NODE));
        if now - before == REFUSED as u64 {
            return Some(now);
        }
        thread::sleep(Duration::from_millis(100));
        None
    });
    assert!(
        counted.is_some(),
        "the program did not refuse {REFUSED} requests"
    );
    // Records are read from the ring buffer as they come; give the reader a
    // moment either way.
    thread::sleep(Duration::from_millis(500));
    let log = speaker.log();
    let lines = log
        .lines()
        .map(|line| {
            serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}"))
        })
        .collect();
    (lines, log, unread_records(&fabric.host(NODE).pin_dir))
}

/// Records waiting in the program's pinned ring buffer. Nothing consumes it
/// below debug, so any record the program wrote is still there.
fn unread_records(pin_dir: &Path) -> usize {
    let map = MapData::from_pin(pin_dir.join("AYA_LOGS")).expect("the pinned AYA_LOGS ring buffer");
    let mut ring = RingBuf::try_from(Map::RingBuf(map)).expect("AYA_LOGS is a ring buffer");
    let mut count = 0;
    while ring.next().is_some() {
        count += 1;
    }
    count
}

fn program_records(lines: &[Value]) -> Vec<&Value> {
    lines
        .iter()
        .filter(|line| line["msg"].as_str().is_some_and(|m| m.starts_with("xdp: ")))
        .collect()
}

#[test]
fn debug_level_forwards_the_programs_records() {
    let options = SpeakerOptions {
        // RUST_LOG would win over --log-level.
        rust_log: String::new(),
        ..SpeakerOptions::file(SpeakerMode::Generic)
    }
    .arg("--log-level")
    .arg("debug");
    let (lines, log, _) = refused_requests_logged(options);
    let records = program_records(&lines);
    assert_eq!(
        records.iter().filter(|r| r["msg"] == RECORD).count(),
        REFUSED,
        "one record per refused request:\n{log}"
    );
    eprintln!("first record: {}", records[0]);
    for record in &records {
        assert_eq!(record["level"], "debug", "{record}");
        let caller = record["caller"].as_str().expect("a caller");
        assert!(
            caller.contains("log.rs:"),
            "the program's source line: {record}"
        );
    }
}

#[test]
fn default_level_leaves_no_program_records() {
    let options = SpeakerOptions {
        rust_log: String::new(),
        ..SpeakerOptions::file(SpeakerMode::Generic)
    };
    let (lines, log, unread) = refused_requests_logged(options);
    assert_eq!(unread, 0, "the program wrote records at info level");
    assert!(
        lines.iter().any(|line| line["level"] == "info"),
        "the speaker logged at info:\n{log}"
    );
    assert_eq!(program_records(&lines), Vec::<&Value>::new(), "{log}");
}
