//! `/metrics` (Prometheus text format), `/healthz` and `/readyz`, as MetalLB's
//! speaker serves them. Metric names follow MetalLB (no `_total` suffix) so
//! existing dashboards keep working; `xdp_speaker_*` are ours.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    net::{IpAddr, SocketAddr},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, RwLock,
    },
};

use log::{info, warn};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpListener,
};

use crate::{
    announce::Announcer,
    daemon::change::ServiceKey,
    dataplane::{DataplaneMaps, PinDir},
    membership::{Gossip, GossipStats},
};

/// What the daemon shares with the HTTP server.
#[derive(Clone)]
pub struct MetricsState {
    pub node: String,
    pub pins: PinDir,
    pub announcer: Announcer,
    /// (service, ip) pairs this node announces, replaced after every sync.
    pub announced: Arc<RwLock<Vec<(ServiceKey, IpAddr)>>>,
    /// True once the first complete cluster description has been applied.
    pub ready: Arc<AtomicBool>,
    /// Gossip, once started.
    pub gossip: Arc<std::sync::OnceLock<Gossip>>,
}

/// The numbers one scrape reports.
#[derive(Debug, Default, PartialEq)]
pub struct Sample {
    pub node: String,
    pub announced: Vec<(ServiceKey, IpAddr)>,
    /// Requests answered by the XDP program, per IP (summed over interfaces).
    pub responses: BTreeMap<IpAddr, u64>,
    pub gratuitous: BTreeMap<IpAddr, u64>,
    pub gratuitous_failures: BTreeMap<IpAddr, u64>,
    /// Every verdict reason of the data plane with its count.
    pub verdicts: Vec<(&'static str, u64)>,
    pub heartbeat_stale: bool,
    /// `None` when membership is disabled.
    pub gossip: Option<GossipStats>,
}

impl MetricsState {
    fn sample(&self) -> Sample {
        let mut sample = Sample {
            node: self.node.clone(),
            announced: self.announced.read().map(|a| a.clone()).unwrap_or_default(),
            gratuitous: self.announcer.sent(),
            gratuitous_failures: self.announcer.failures(),
            gossip: self.gossip.get().map(Gossip::stats),
            ..Sample::default()
        };
        // Read straight from the pins: the same numbers `speaker maps` shows.
        match DataplaneMaps::from_pins(&self.pins) {
            Ok(maps) => {
                for vip in maps.vips().unwrap_or_default() {
                    *sample.responses.entry(vip.address).or_default() += vip.answered;
                }
                sample.verdicts = maps
                    .reasons()
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(reason, count)| (reason.name(), count))
                    .collect();
                sample.heartbeat_stale = maps.watchdog().is_ok_and(|w| w.stale());
            }
            Err(e) => warn!("metrics: reading the maps: {e}"),
        }
        sample
    }
}

/// Renders one scrape in the Prometheus text exposition format.
pub fn render(sample: &Sample) -> String {
    let mut out = String::new();
    let mut family = |name: &str, kind: &str, help: &str| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    };
    family(
        "metallb_speaker_announced",
        "gauge",
        "The service IPs this node announces (1 per service and IP).",
    );
    let mut body = String::new();
    for (service, ip) in &sample.announced {
        let _ = writeln!(
            body,
            "metallb_speaker_announced{{ip=\"{ip}\",node=\"{}\",protocol=\"layer2\",service=\"{service}\"}} 1",
            escape(&sample.node)
        );
    }
    out.push_str(&body);
    counter_per_ip(
        &mut out,
        "metallb_layer2_responses_sent",
        "ARP replies and Neighbor Advertisements sent by the XDP responder.",
        &sample.responses,
    );
    counter_per_ip(
        &mut out,
        "metallb_layer2_gratuitous_sent",
        "Gratuitous ARP and unsolicited NA frames sent.",
        &sample.gratuitous,
    );
    counter_per_ip(
        &mut out,
        "xdp_speaker_gratuitous_failures",
        "Gratuitous frames that could not be sent.",
        &sample.gratuitous_failures,
    );
    let _ = writeln!(
        out,
        "# HELP xdp_speaker_verdicts Frames seen by the XDP responder, by verdict reason.\n# TYPE xdp_speaker_verdicts counter"
    );
    for (reason, count) in &sample.verdicts {
        let _ = writeln!(out, "xdp_speaker_verdicts{{reason=\"{reason}\"}} {count}");
    }
    let _ = writeln!(
        out,
        "# HELP xdp_speaker_heartbeat_stale 1 when the dead-man switch has stopped the responder.\n# TYPE xdp_speaker_heartbeat_stale gauge\nxdp_speaker_heartbeat_stale {}",
        u8::from(sample.heartbeat_stale)
    );
    if let Some(g) = &sample.gossip {
        for (name, kind, help, value) in [
            (
                "xdp_speaker_gossip_members",
                "gauge",
                "Live speakers in the gossip cluster, this one included.",
                g.members as u64,
            ),
            (
                "xdp_speaker_gossip_bytes_sent",
                "counter",
                "Gossip bytes sent (sealed).",
                g.bytes_sent,
            ),
            (
                "xdp_speaker_gossip_bytes_received",
                "counter",
                "Gossip bytes received.",
                g.bytes_received,
            ),
            (
                "xdp_speaker_gossip_packets_sent",
                "counter",
                "Gossip datagrams sent.",
                g.packets_sent,
            ),
            (
                "xdp_speaker_gossip_packets_received",
                "counter",
                "Gossip datagrams received.",
                g.packets_received,
            ),
            (
                "xdp_speaker_gossip_auth_failures",
                "counter",
                "Gossip datagrams dropped for failing authentication.",
                g.auth_failures,
            ),
            (
                "xdp_speaker_gossip_rejoins",
                "counter",
                "Times the cluster declared this speaker down and it rejoined.",
                g.rejoins,
            ),
        ] {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
            );
        }
    }
    out
}

fn counter_per_ip(out: &mut String, name: &str, help: &str, values: &BTreeMap<IpAddr, u64>) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
    for (ip, count) in values {
        let _ = writeln!(out, "{name}{{ip=\"{ip}\"}} {count}");
    }
}

fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Serves until the process ends. Each connection gets one response.
pub async fn serve(address: SocketAddr, state: MetricsState) -> std::io::Result<()> {
    let listener = TcpListener::bind(address).await?;
    info!("metrics and health on http://{}", listener.local_addr()?);
    loop {
        let (mut stream, _) = listener.accept().await?;
        let state = state.clone();
        tokio::spawn(async move {
            let mut request = [0u8; 1024];
            let Ok(n) = stream.read(&mut request).await else {
                return;
            };
            let request = String::from_utf8_lossy(&request[..n]);
            let path = request.split_whitespace().nth(1).unwrap_or("/");
            let (status, body) = match path {
                "/metrics" => {
                    let state = state.clone();
                    let sample = tokio::task::spawn_blocking(move || state.sample()).await;
                    ("200 OK", sample.map(|s| render(&s)).unwrap_or_default())
                }
                "/healthz" => ("200 OK", "ok\n".to_owned()),
                "/readyz" if state.ready.load(Ordering::Relaxed) => ("200 OK", "ok\n".to_owned()),
                "/readyz" => (
                    "503 Service Unavailable",
                    "waiting for the cluster\n".to_owned(),
                ),
                _ => ("404 Not Found", "not found\n".to_owned()),
            };
            let response = format!(
                "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(response.as_bytes()).await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_metallb_names_and_labels() {
        let ip: IpAddr = "192.0.2.100".parse().unwrap();
        let sample = Sample {
            node: "iris1".into(),
            announced: vec![(ServiceKey::new("default", "web"), ip)],
            responses: BTreeMap::from([(ip, 7)]),
            gratuitous: BTreeMap::from([(ip, 10)]),
            gratuitous_failures: BTreeMap::new(),
            verdicts: vec![("arp_answered", 7), ("not_owned", 2)],
            heartbeat_stale: false,
            gossip: Some(GossipStats {
                members: 3,
                auth_failures: 2,
                ..GossipStats::default()
            }),
        };
        let text = render(&sample);
        for line in [
            "metallb_speaker_announced{ip=\"192.0.2.100\",node=\"iris1\",protocol=\"layer2\",service=\"default/web\"} 1",
            "metallb_layer2_responses_sent{ip=\"192.0.2.100\"} 7",
            "metallb_layer2_gratuitous_sent{ip=\"192.0.2.100\"} 10",
            "xdp_speaker_verdicts{reason=\"not_owned\"} 2",
            "xdp_speaker_heartbeat_stale 0",
            "xdp_speaker_gossip_members 3",
            "xdp_speaker_gossip_auth_failures 2",
            "# TYPE metallb_layer2_responses_sent counter",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line:?} in\n{text}");
        }
        // Every sample line belongs to a declared family.
        let families: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .filter_map(|l| l.split_whitespace().next())
            .collect();
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let name = line.split(['{', ' ']).next().unwrap();
            assert!(families.contains(&name), "{name} has no # TYPE");
        }
    }

    #[test]
    fn escapes_label_values() {
        assert_eq!(escape("a\"b\\c"), "a\\\"b\\\\c");
    }
}
