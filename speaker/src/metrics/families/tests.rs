use std::{collections::BTreeMap, net::IpAddr, time::Duration};

use super::*;
use crate::{cluster::ServiceKey, membership::GossipStats};

fn sample() -> Sample {
    let ip: IpAddr = "192.0.2.100".parse().unwrap();
    let v6: IpAddr = "2001:db8::10".parse().unwrap();
    Sample {
        node: "iris\"1".into(),
        announced: vec![
            (ServiceKey::new("default", "web"), ip),
            (ServiceKey::new("default", "web"), v6),
        ],
        responses: BTreeMap::from([(ip, 7), (v6, 3)]),
        requests: BTreeMap::from([(ip, 7), (v6, 3)]),
        gratuitous: BTreeMap::from([(ip, 10)]),
        conflicts: BTreeMap::from([(ip, 2), (v6, 0)]),
        gratuitous_failures: BTreeMap::new(),
        verdicts: vec![("arp_answered", 7), ("not_owned", 2)],
        heartbeat_stale: false,
        heartbeat_age: Some(Duration::from_millis(250)),
        xdp_modes: vec![("eth0".into(), "native"), ("eth1".into(), "generic")],
        gossip: Some(GossipStats {
            members: 3,
            auth_failures: 2,
            stray_datagrams: 1,
            replayed: 4,
            ..GossipStats::default()
        }),
        repairs: vec![
            (crate::dataplane::Repair::MapPin, 0),
            (crate::dataplane::Repair::LinkPin, 1),
            (crate::dataplane::Repair::Link, 0),
        ],
    }
}

fn rendered(sample: impl Fn() -> Sample + Send + Sync + 'static) -> (ClientStats, String) {
    let client = ClientStats::default();
    client.updates.inc_by(5);
    client.update_errors.inc();
    client.config_loaded.set(1);
    let text = render(&registry_with(&client, sample));
    (client, text)
}

/// `# TYPE` per family, and the sample lines, of a text exposition.
fn parse(text: &str) -> (BTreeMap<String, String>, Vec<String>) {
    let mut types = BTreeMap::new();
    let mut samples = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            assert!(
                types.insert(name.to_owned(), kind.to_owned()).is_none(),
                "{name} declared twice"
            );
        } else if !line.starts_with('#') && !line.is_empty() {
            samples.push(line.to_owned());
        }
    }
    (types, samples)
}

#[test]
fn families_have_metallbs_names_labels_and_types() {
    let (_, text) = rendered(sample);
    let (types, samples) = parse(&text);
    let expected_types = [
        ("metallb_k8s_client_updates_total", "counter"),
        ("metallb_k8s_client_update_errors_total", "counter"),
        ("metallb_k8s_client_config_loaded_bool", "gauge"),
        ("metallb_k8s_client_config_stale_bool", "gauge"),
        ("metallb_speaker_announced", "gauge"),
        ("metallb_layer2_requests_received", "untyped"),
        ("metallb_layer2_responses_sent", "untyped"),
        ("metallb_layer2_gratuitous_sent", "untyped"),
        ("xdp_speaker_ip_conflicts", "untyped"),
        ("xdp_speaker_gratuitous_failures", "untyped"),
        ("xdp_speaker_verdicts", "untyped"),
        ("xdp_speaker_xdp_mode", "gauge"),
        ("xdp_speaker_dataplane_repairs", "untyped"),
        ("xdp_speaker_heartbeat_stale", "gauge"),
        ("xdp_speaker_heartbeat_age_seconds", "gauge"),
        ("xdp_speaker_gossip_members", "gauge"),
        ("xdp_speaker_gossip_bytes_sent", "untyped"),
        ("xdp_speaker_gossip_bytes_received", "untyped"),
        ("xdp_speaker_gossip_packets_sent", "untyped"),
        ("xdp_speaker_gossip_packets_received", "untyped"),
        ("xdp_speaker_gossip_auth_failures", "untyped"),
        ("xdp_speaker_gossip_stray_datagrams", "untyped"),
        ("xdp_speaker_gossip_old_format", "untyped"),
        ("xdp_speaker_gossip_replayed", "untyped"),
        ("xdp_speaker_gossip_secondary_key", "untyped"),
        ("xdp_speaker_gossip_rejoins", "untyped"),
    ]
    .map(|(n, t)| (n.to_owned(), t.to_owned()));
    assert_eq!(types, BTreeMap::from(expected_types), "\n{text}");

    let expected_samples = [
        "metallb_k8s_client_updates_total 5",
        "metallb_k8s_client_update_errors_total 1",
        "metallb_k8s_client_config_loaded_bool 1",
        "metallb_k8s_client_config_stale_bool 0",
        "metallb_speaker_announced{ip=\"192.0.2.100\",node=\"iris\\\"1\",protocol=\"layer2\",service=\"default/web\"} 1",
        "metallb_speaker_announced{ip=\"2001:db8::10\",node=\"iris\\\"1\",protocol=\"layer2\",service=\"default/web\"} 1",
        "metallb_layer2_requests_received{ip=\"192.0.2.100\"} 7",
        "metallb_layer2_requests_received{ip=\"2001:db8::10\"} 3",
        "metallb_layer2_responses_sent{ip=\"192.0.2.100\"} 7",
        "metallb_layer2_responses_sent{ip=\"2001:db8::10\"} 3",
        "metallb_layer2_gratuitous_sent{ip=\"192.0.2.100\"} 10",
        "xdp_speaker_ip_conflicts{ip=\"192.0.2.100\"} 2",
        "xdp_speaker_ip_conflicts{ip=\"2001:db8::10\"} 0",
        "xdp_speaker_verdicts{reason=\"arp_answered\"} 7",
        "xdp_speaker_verdicts{reason=\"not_owned\"} 2",
        "xdp_speaker_xdp_mode{interface=\"eth0\",mode=\"native\"} 1",
        "xdp_speaker_xdp_mode{interface=\"eth1\",mode=\"generic\"} 1",
        "xdp_speaker_heartbeat_stale 0",
        "xdp_speaker_heartbeat_age_seconds 0.25",
        "xdp_speaker_gossip_members 3",
        "xdp_speaker_gossip_bytes_sent 0",
        "xdp_speaker_gossip_bytes_received 0",
        "xdp_speaker_gossip_packets_sent 0",
        "xdp_speaker_gossip_packets_received 0",
        "xdp_speaker_gossip_auth_failures 2",
        "xdp_speaker_gossip_stray_datagrams 1",
        "xdp_speaker_gossip_old_format 0",
        "xdp_speaker_gossip_replayed 4",
        "xdp_speaker_gossip_secondary_key 0",
        "xdp_speaker_gossip_rejoins 0",
        "xdp_speaker_dataplane_repairs{what=\"map_pin\"} 0",
        "xdp_speaker_dataplane_repairs{what=\"link_pin\"} 1",
        "xdp_speaker_dataplane_repairs{what=\"link\"} 0",
    ];
    let mut got = samples.clone();
    got.sort();
    let mut want: Vec<String> = expected_samples.iter().map(|s| s.to_string()).collect();
    want.sort();
    assert_eq!(got, want, "\n{text}");
    // Every sample belongs to a declared family.
    for line in &samples {
        let name = line.split(['{', ' ']).next().unwrap();
        assert!(types.contains_key(name), "{name} has no # TYPE");
    }
}

#[test]
fn optional_families_disappear_without_their_source() {
    let (_, text) = rendered(|| Sample {
        gossip: None,
        heartbeat_age: None,
        ..sample()
    });
    assert!(!text.contains("xdp_speaker_gossip_"), "{text}");
    assert!(
        !text.contains("xdp_speaker_heartbeat_age_seconds "),
        "{text}"
    );
    assert!(text.contains("xdp_speaker_heartbeat_stale 0"), "{text}");
}

#[test]
fn counters_move_between_scrapes() {
    let (client, first) = rendered(sample);
    client.updates.inc();
    let registry = registry_with(&client, sample);
    let second = render(&registry);
    assert!(first.contains("metallb_k8s_client_updates_total 5\n"));
    assert!(
        second.contains("metallb_k8s_client_updates_total 6\n"),
        "{second}"
    );
}
