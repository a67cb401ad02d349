//! The metric families, built with `prometheus-client`.
//!
//! Naming: MetalLB's counters `metallb_layer2_requests_received`,
//! `_responses_sent` and `_gratuitous_sent` have no `_total` suffix (MetalLB
//! serves the old Prometheus text format, where counters need none).
//! `prometheus-client` appends `_total` to every sample of a counter family,
//! which would rename them and break MetalLB's dashboards and alerts. They are
//! therefore declared `untyped` (`MetricType::Unknown`), which keeps the name
//! exactly; Prometheus stores untyped samples like counters and `rate()`
//! works on them. The same holds for our older counters whose names tests and
//! dashboards already use (`xdp_speaker_verdicts`, `xdp_speaker_gossip_*`).
//! MetalLB's `metallb_k8s_client_updates_total` and `_update_errors_total`
//! end in `_total`, so they are real counters.
//!
//! `metallb_layer2_requests_received{ip}` comes from the program's
//! `VIP_ANSWERED` + `VIP_REFUSED` counters: every valid request for the VIP, answered or
//! refused after the lookup (docs/dataplane.md).

use std::{fmt, net::IpAddr};

use prometheus_client::{
    collector::Collector,
    encoding::DescriptorEncoder,
    metrics::MetricType,
    registry::{Registry, Unit},
};

use super::{ClientStats, MetricsState, Sample};

/// Renders a registry in the Prometheus text format (0.0.4), what MetalLB
/// serves.
pub fn render(registry: &Registry) -> String {
    let mut text = String::new();
    prometheus_client::encoding::prometheus_text::encode(&mut text, registry)
        .expect("writing to a String cannot fail");
    text
}

/// `Content-Type` of [`render`]'s output.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// The speaker's registry: the k8s client family plus everything read per
/// scrape from the maps, links, announcer and gossip.
pub fn registry(state: &MetricsState) -> Registry {
    let errors = state.diagnostics.errors.clone();
    let state = state.clone();
    let mut registry = registry_with(&state.client.clone(), move || state.sample());
    register_errors(&mut registry, errors);
    registry
}

/// `xdp_speaker_errors_total{kind}`.
pub fn register_errors(registry: &mut Registry, errors: super::ErrorCounts) {
    registry.register(
        "xdp_speaker_errors",
        "Errors the daemon logged, by the part of the speaker that failed.",
        errors,
    );
}

/// [`registry`] with the per-scrape numbers coming from `sample`.
pub fn registry_with(
    client: &ClientStats,
    sample: impl Fn() -> Sample + Send + Sync + 'static,
) -> Registry {
    let mut registry = Registry::default();
    registry.register(
        "metallb_k8s_client_updates",
        "Number of k8s object updates that have been processed.",
        client.updates.clone(),
    );
    registry.register(
        "metallb_k8s_client_update_errors",
        "Number of k8s object updates that failed for some reason.",
        client.update_errors.clone(),
    );
    registry.register(
        "metallb_k8s_client_config_loaded_bool",
        "1 if the MetalLB configuration was successfully loaded at least once.",
        client.config_loaded.clone(),
    );
    registry.register(
        "metallb_k8s_client_config_stale_bool",
        "1 if running on a stale configuration, because the latest config failed to load.",
        client.config_stale.clone(),
    );
    registry.register_collector(Box::new(PerScrape(Box::new(sample))));
    registry
}

/// Families whose values are read when Prometheus scrapes.
struct PerScrape(Box<dyn Fn() -> Sample + Send + Sync>);

impl fmt::Debug for PerScrape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PerScrape")
    }
}

/// One family with its samples: `(labels, value)`.
fn family<V: Copy + prometheus_client::encoding::EncodeGaugeValue>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    kind: MetricType,
    samples: impl IntoIterator<Item = (Vec<(&'static str, String)>, V)>,
) -> fmt::Result {
    let mut metric = encoder.encode_descriptor(name, help, unit, kind)?;
    for (labels, value) in samples {
        // Gauges and untyped samples are written alike: name, labels, value.
        metric.encode_family(&labels)?.encode_gauge(&value)?;
    }
    Ok(())
}

fn per_ip(
    values: &std::collections::BTreeMap<IpAddr, u64>,
) -> impl Iterator<Item = (Vec<(&'static str, String)>, u64)> + '_ {
    values
        .iter()
        .map(|(ip, count)| (vec![("ip", ip.to_string())], *count))
}

fn unlabelled<V>(value: V) -> [(Vec<(&'static str, String)>, V); 1] {
    [(Vec::new(), value)]
}

impl Collector for PerScrape {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        let sample = (self.0)();
        let untyped = MetricType::Unknown;
        family(
            &mut encoder,
            "metallb_speaker_announced",
            "The service IPs this node announces (1 per service and IP).",
            None,
            MetricType::Gauge,
            sample.announced.iter().map(|(service, ip)| {
                (
                    vec![
                        ("ip", ip.to_string()),
                        ("node", sample.node.clone()),
                        ("protocol", "layer2".to_owned()),
                        ("service", service.to_string()),
                    ],
                    1u64,
                )
            }),
        )?;
        family(
            &mut encoder,
            "metallb_layer2_requests_received",
            "ARP requests and Neighbor Solicitations for the IP received by the XDP responder.",
            None,
            untyped,
            per_ip(&sample.requests),
        )?;
        family(
            &mut encoder,
            "metallb_layer2_responses_sent",
            "ARP replies and Neighbor Advertisements sent by the XDP responder.",
            None,
            untyped,
            per_ip(&sample.responses),
        )?;
        family(
            &mut encoder,
            "metallb_layer2_gratuitous_sent",
            "Gratuitous ARP and unsolicited NA frames sent.",
            None,
            untyped,
            per_ip(&sample.gratuitous),
        )?;
        family(
            &mut encoder,
            "xdp_speaker_ip_conflicts",
            "ARP and Neighbor Advertisement frames from other MACs claiming the IP (RFC 5227 \
             section 2.4); `speaker maps` names the last MAC.",
            None,
            untyped,
            per_ip(&sample.conflicts),
        )?;
        family(
            &mut encoder,
            "xdp_speaker_gratuitous_failures",
            "Gratuitous frames that could not be sent.",
            None,
            untyped,
            per_ip(&sample.gratuitous_failures),
        )?;
        family(
            &mut encoder,
            "xdp_speaker_verdicts",
            "Frames seen by the XDP responder, by verdict reason.",
            None,
            untyped,
            sample
                .verdicts
                .iter()
                .map(|(reason, count)| (vec![("reason", (*reason).to_owned())], *count)),
        )?;
        family(
            &mut encoder,
            "xdp_speaker_xdp_mode",
            "1 per interface the responder is attached to, labelled with how the kernel runs it \
             (native, generic, offload, multiple; none if the pinned link lost its program).",
            None,
            MetricType::Gauge,
            sample.xdp_modes.iter().map(|(interface, mode)| {
                (
                    vec![
                        ("interface", interface.clone()),
                        ("mode", (*mode).to_owned()),
                    ],
                    1u64,
                )
            }),
        )?;
        if !sample.repairs.is_empty() {
            family(
                &mut encoder,
                "xdp_speaker_dataplane_repairs",
                "Pins and links the daemon had to put back (what: map_pin, link_pin, link).",
                None,
                untyped,
                sample
                    .repairs
                    .iter()
                    .map(|(repair, count)| (vec![("what", repair.name().to_owned())], *count)),
            )?;
        }
        family(
            &mut encoder,
            "xdp_speaker_heartbeat_stale",
            "1 when the dead-man switch has stopped the responder.",
            None,
            MetricType::Gauge,
            unlabelled(u64::from(sample.heartbeat_stale)),
        )?;
        if let Some(age) = sample.heartbeat_age {
            family(
                &mut encoder,
                "xdp_speaker_heartbeat_age",
                "Age of the heartbeat the XDP program checks.",
                Some(&Unit::Seconds),
                MetricType::Gauge,
                unlabelled(age.as_secs_f64()),
            )?;
        }
        if let Some(g) = &sample.gossip {
            family(
                &mut encoder,
                "xdp_speaker_gossip_members",
                "Live speakers in the gossip cluster, this one included.",
                None,
                MetricType::Gauge,
                unlabelled(g.members as u64),
            )?;
            for (name, help, value) in [
                (
                    "xdp_speaker_gossip_bytes_sent",
                    "Gossip bytes sent (sealed).",
                    g.bytes_sent,
                ),
                (
                    "xdp_speaker_gossip_bytes_received",
                    "Gossip bytes received.",
                    g.bytes_received,
                ),
                (
                    "xdp_speaker_gossip_packets_sent",
                    "Gossip datagrams sent.",
                    g.packets_sent,
                ),
                (
                    "xdp_speaker_gossip_packets_received",
                    "Gossip datagrams received.",
                    g.packets_received,
                ),
                (
                    "xdp_speaker_gossip_auth_failures",
                    "Gossip datagrams dropped for failing authentication.",
                    g.auth_failures,
                ),
                (
                    "xdp_speaker_gossip_stray_datagrams",
                    "Unauthenticated gossip datagrams from senders that are neither peers nor \
                     members, ignored (port scans, other meshes).",
                    g.stray_datagrams,
                ),
                (
                    "xdp_speaker_gossip_old_format",
                    "Gossip datagrams in the sealed format of speakers before the keyring \
                     (counted in auth_failures too): a cluster mid-upgrade.",
                    g.old_format,
                ),
                (
                    "xdp_speaker_gossip_replayed",
                    "Authentic gossip datagrams dropped as replays.",
                    g.replayed,
                ),
                (
                    "xdp_speaker_gossip_secondary_key",
                    "Gossip datagrams opened by a keyring key other than the primary \
                     (peers still sending with a key being rotated).",
                    g.opened_by_secondary_key,
                ),
                (
                    "xdp_speaker_gossip_rejoins",
                    "Times the cluster declared this speaker down and it rejoined.",
                    g.rejoins,
                ),
            ] {
                family(&mut encoder, name, help, None, untyped, unlabelled(value))?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
