//! `/metrics` tells the truth: the real `speaker run` (file source, generic
//! XDP, membership disabled) on a node of a bridged segment; the client
//! sends known frames from an AF_PACKET socket — ARP requests and Neighbor
//! Solicitations for the VIPs (answered), ARP requests for a VIP sent to
//! another host's MAC (refused, `wrong_eth_destination`), requests for an
//! address nobody owns and ICMPv6 echo requests (other verdicts). Then the
//! scrape must equal the BPF counters `speaker maps --json` reads from the
//! pins — every `xdp_speaker_verdicts{reason}`, and per VIP
//! `metallb_layer2_responses_sent{ip}` and `_requests_received{ip}` — and
//! the counters must be exactly what was sent. `metallb_speaker_announced`
//! carries MetalLB's labels. Every log line is JSON with `level`, `ts`,
//! `caller` and `msg`; announce events carry `ip` and `service`.
//!
//! Needs root and iproute2; fails, not skips, without them. Run:
//! `cargo test -p speaker-tests --test metrics_lab`.

use std::{
    collections::BTreeMap,
    net::{Ipv4Addr, Ipv6Addr},
    thread,
    time::Duration,
};

use serde_json::Value;
use speaker_tests::{
    frames::{self, Mac},
    lab::{
        cluster::lab_cluster_yaml, mac, neighbour::same_ip, probe, Fabric, HostSpec, SpeakerMode,
        SpeakerOptions, HOST_IF,
    },
};

const NODE: &str = "node1";
const CLIENT: &str = "client";
const VIP: &str = "192.0.2.100";
const VIP6: &str = "2001:db8::100";
const NOT_OWNED: &str = "192.0.2.105";
/// No host has it: the bridge floods frames sent to it.
const STRANGER_MAC: Mac = [0x02, 0x00, 0x00, 0x00, 0x00, 0x99];

const ARP_ANSWERED: u64 = 5;
const NS_ANSWERED: u64 = 3;
const WRONG_DESTINATION: u64 = 4;
const NOT_OWNED_SENT: u64 = 2;
const OTHER_SENT: u64 = 2;

/// Prometheus text: `name{labels} value` lines as (name, labels, value).
fn samples(text: &str) -> Vec<(String, BTreeMap<String, String>, f64)> {
    let mut out = Vec::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let (series, value) = line.rsplit_once(' ').expect("a sample line has a value");
        let value: f64 = value.parse().expect("a numeric sample value");
        let (name, labels) = match series.split_once('{') {
            Some((name, rest)) => {
                let body = rest.strip_suffix('}').expect("labels end with }");
                let labels = body
                    .split("\",")
                    .filter(|pair| !pair.is_empty())
                    .map(|pair| {
                        let (key, value) = pair.split_once("=\"").expect("label=\"value\"");
                        (key.to_owned(), value.trim_end_matches('"').to_owned())
                    })
                    .collect();
                (name.to_owned(), labels)
            }
            None => (series.to_owned(), BTreeMap::new()),
        };
        out.push((name, labels, value));
    }
    out
}

/// Values of family `name` by the value of label `label`.
fn by_label(
    samples: &[(String, BTreeMap<String, String>, f64)],
    name: &str,
    label: &str,
) -> BTreeMap<String, u64> {
    samples
        .iter()
        .filter(|(n, _, _)| n == name)
        .map(|(_, labels, value)| {
            let key = labels
                .get(label)
                .unwrap_or_else(|| panic!("{name} without label {label}: {labels:?}"));
            (key.clone(), *value as u64)
        })
        .collect()
}

/// Per VIP address (as the metrics write it), the sum of `field` over the
/// VIP's rows in `speaker maps --json`.
fn maps_per_vip(maps: &Value, field: &str) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for row in maps["vips"].as_array().expect("vips") {
        let address = row["address"].as_str().expect("an address").to_owned();
        *out.entry(address).or_default() += row[field].as_u64().expect("a counter");
    }
    out
}

fn reasons(maps: &Value) -> BTreeMap<String, u64> {
    maps["reasons"]
        .as_array()
        .expect("reasons")
        .iter()
        .map(|r| {
            (
                r["reason"].as_str().expect("a reason").to_owned(),
                r["count"].as_u64().expect("a count"),
            )
        })
        .collect()
}

fn the_frames(client_mac: Mac, client_ip: Ipv4Addr, node_mac: Mac) -> Vec<Vec<u8>> {
    let vip: Ipv4Addr = VIP.parse().unwrap();
    let vip6: Ipv6Addr = VIP6.parse().unwrap();
    let client6: Ipv6Addr = "2001:db8::10".parse().unwrap();
    let mut out = Vec::new();
    for _ in 0..ARP_ANSWERED {
        out.push(frames::arp_request(client_mac, client_ip, vip));
    }
    for _ in 0..NS_ANSWERED {
        out.push(frames::neighbor_solicitation(
            client_mac,
            client6,
            vip6,
            Some(client_mac),
        ));
    }
    for _ in 0..WRONG_DESTINATION {
        out.push(frames::arp_unicast_request(
            STRANGER_MAC,
            client_mac,
            client_ip,
            vip,
        ));
    }
    for _ in 0..NOT_OWNED_SENT {
        out.push(frames::arp_request(
            client_mac,
            client_ip,
            NOT_OWNED.parse().unwrap(),
        ));
    }
    // ICMPv6 that is not NDP: counted `other_traffic`. Plain IPv4/TCP is
    // not counted by the program at all (docs/dataplane.md, "What is
    // counted where"), so it could not show up here.
    for _ in 0..OTHER_SENT {
        out.push(frames::ipv6_echo_request(
            node_mac,
            client_mac,
            "2001:db8::10".parse().unwrap(),
            "2001:db8::11".parse().unwrap(),
            b"metrics",
        ));
    }
    out
}

#[test]
fn metrics_equal_the_bpf_counters_and_logs_are_json() {
    let fabric = Fabric::new(&[HostSpec::numbered(NODE, 11), HostSpec::numbered(CLIENT, 10)]);
    fabric.write_cluster_state(&lab_cluster_yaml(&[NODE], &[VIP, VIP6], "Cluster", NODE));
    let speaker = fabric.start_speaker(NODE, &SpeakerOptions::file(SpeakerMode::Generic));
    assert!(
        speaker
            .wait_log("speaker running as node", Duration::from_secs(10))
            .is_some(),
        "the speaker did not start:\n{}",
        fabric.all_logs()
    );
    fabric.wait_owner(&[NODE], NODE, &[VIP, VIP6], Duration::from_secs(10));

    let client = fabric.host(CLIENT);
    let client_mac = mac::parse(&client.mac).expect("the client's MAC");
    let node_mac = mac::parse(&fabric.host(NODE).mac).expect("the node's MAC");
    let client_ip = client.v4.expect("the client's IPv4 address");
    let before = reasons(&fabric.maps_json(NODE));
    probe::send_frames(
        &client.ns,
        HOST_IF,
        &the_frames(client_mac, client_ip, node_mac),
    )
    .expect("sending the frames");
    thread::sleep(Duration::from_millis(500));

    // Background frames (the kernels' own IPv6 housekeeping) may move the
    // counters between two reads: compare a scrape with the maps read
    // between two identical scrapes.
    let (metrics, maps) = (0..10)
        .find_map(|_| {
            let first = fabric.metrics(NODE).expect("scraping /metrics");
            let maps = fabric.maps_json(NODE);
            let second = fabric.metrics(NODE).expect("scraping /metrics");
            let counters = |text: &str| {
                samples(text)
                    .into_iter()
                    .filter(|(n, _, _)| {
                        n == "xdp_speaker_verdicts" || n.starts_with("metallb_layer2_re")
                    })
                    .map(|(n, l, v)| format!("{n}{l:?}{v}"))
                    .collect::<Vec<_>>()
            };
            if counters(&first) == counters(&second) {
                return Some((first, maps));
            }
            thread::sleep(Duration::from_millis(300));
            None
        })
        .expect("the counters never held still for two scrapes");
    let scraped = samples(&metrics);

    // Every verdict reason, same names, same counts.
    let verdicts = by_label(&scraped, "xdp_speaker_verdicts", "reason");
    let counted = reasons(&maps);
    assert_eq!(verdicts, counted, "xdp_speaker_verdicts vs speaker maps");
    assert_eq!(
        counted.len(),
        speaker_common::Reason::COUNT as usize,
        "every reason is exported: {counted:?}"
    );

    // Per VIP, the responses and requests.
    let responses = by_label(&scraped, "metallb_layer2_responses_sent", "ip");
    let requests = by_label(&scraped, "metallb_layer2_requests_received", "ip");
    assert_eq!(responses, maps_per_vip(&maps, "answered"));
    assert_eq!(requests, maps_per_vip(&maps, "requests"));

    // And they are what was sent.
    let sent = |reason: &str| counted[reason] - before.get(reason).copied().unwrap_or(0);
    assert_eq!(sent("arp_answered"), ARP_ANSWERED);
    assert_eq!(sent("ns_answered"), NS_ANSWERED);
    assert_eq!(sent("wrong_eth_destination"), WRONG_DESTINATION);
    assert!(sent("not_owned") >= NOT_OWNED_SENT, "{counted:?}");
    assert!(sent("other_traffic") >= OTHER_SENT, "{counted:?}");
    let vip6_key = responses
        .keys()
        .find(|k| same_ip(k, VIP6))
        .expect("VIP6 in the metrics")
        .clone();
    assert_eq!(responses[VIP], ARP_ANSWERED);
    assert_eq!(requests[VIP], ARP_ANSWERED + WRONG_DESTINATION);
    assert_eq!(responses[&vip6_key], NS_ANSWERED);
    assert_eq!(requests[&vip6_key], NS_ANSWERED);

    // MetalLB's announced gauge, with MetalLB's labels.
    let announced: Vec<&BTreeMap<String, String>> = scraped
        .iter()
        .filter(|(n, _, v)| n == "metallb_speaker_announced" && *v == 1.0)
        .map(|(_, labels, _)| labels)
        .collect();
    assert_eq!(announced.len(), 2, "{announced:?}");
    for labels in &announced {
        assert_eq!(labels["node"], NODE);
        assert_eq!(labels["protocol"], "layer2");
        assert_eq!(labels["service"], "default/web");
        assert!(same_ip(&labels["ip"], VIP) || same_ip(&labels["ip"], VIP6));
    }
    eprintln!("verdicts {counted:?}; responses {responses:?}; requests {requests:?}");

    // The logs: every line a JSON object with MetalLB's keys.
    let log = speaker.log();
    let mut announce_events = 0;
    for line in log.lines() {
        let value: Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}"));
        for key in ["level", "ts", "caller", "msg"] {
            assert!(
                value[key].as_str().is_some_and(|v| !v.is_empty()),
                "no {key} in {line}"
            );
        }
        if value["event"] == "serviceAnnounced" {
            announce_events += 1;
            assert_eq!(value["service"], "default/web", "{line}");
            let ips = value["ip"].as_str().expect("ip on serviceAnnounced");
            assert!(ips.split(',').any(|ip| same_ip(ip, VIP)), "{line}");
        }
    }
    assert_eq!(announce_events, 1, "one serviceAnnounced event:\n{log}");
}
