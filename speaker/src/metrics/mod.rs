//! `/metrics`, `/healthz` and `/readyz`, as MetalLB's speaker serves them:
//! the families are built with `prometheus-client` ([`families`]) and served
//! by axum ([`server`]). Metric names follow MetalLB so its dashboards and
//! alerts keep working; `xdp_speaker_*` are ours. docs/metrics.md lists them.

pub mod families;
pub mod server;

use std::{
    collections::BTreeMap,
    net::IpAddr,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, OnceLock, RwLock,
    },
    time::Duration,
};

use prometheus_client::metrics::{counter::Counter, gauge::Gauge};
use tracing::warn;

pub use self::families::registry;
pub use self::server::serve;

use crate::{
    announce::Announcer,
    cluster::config::Staleness,
    daemon::change::ServiceKey,
    dataplane::{DataplaneMaps, PinDir},
    interfaces,
    membership::{Gossip, GossipStats},
};

/// MetalLB's `metallb_k8s_client_*` family: what the cluster source did with
/// the updates it received. Cheap to clone; every clone counts into the same
/// series.
#[derive(Clone, Debug)]
pub struct ClientStats {
    /// Object updates (watch events, re-read files) processed.
    pub updates: Counter,
    /// Updates that failed: watch errors, objects refused as invalid, files
    /// that could not be read or parsed.
    pub update_errors: Counter,
    /// 1 once a complete configuration has been applied.
    pub config_loaded: Gauge,
    /// 1 while running on the last good configuration because a newer one
    /// was refused or could not be read; set through `stale`.
    pub config_stale: Gauge,
    /// Why the configuration is stale; drives `config_stale`.
    pub stale: Staleness,
}

impl Default for ClientStats {
    fn default() -> Self {
        let config_stale = Gauge::default();
        ClientStats {
            updates: Counter::default(),
            update_errors: Counter::default(),
            config_loaded: Gauge::default(),
            stale: Staleness::new(config_stale.clone()),
            config_stale,
        }
    }
}

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
    pub gossip: Arc<OnceLock<Gossip>>,
    pub client: ClientStats,
}

impl MetricsState {
    pub fn new(node: impl Into<String>, pins: PinDir, announcer: Announcer) -> Self {
        MetricsState {
            node: node.into(),
            pins,
            announcer,
            announced: Default::default(),
            ready: Default::default(),
            gossip: Default::default(),
            client: ClientStats::default(),
        }
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }
}

/// The per-scrape numbers that live outside this process (BPF maps, links)
/// or in other components, read once per scrape.
#[derive(Debug, Default, PartialEq)]
pub struct Sample {
    pub node: String,
    pub announced: Vec<(ServiceKey, IpAddr)>,
    /// Requests for the VIP answered by the XDP program, per IP (summed
    /// over interfaces).
    pub responses: BTreeMap<IpAddr, u64>,
    /// Requests for the VIP the XDP program received (answered or refused
    /// after the lookup), per IP.
    pub requests: BTreeMap<IpAddr, u64>,
    pub gratuitous: BTreeMap<IpAddr, u64>,
    pub gratuitous_failures: BTreeMap<IpAddr, u64>,
    /// Every verdict reason of the data plane with its count.
    pub verdicts: Vec<(&'static str, u64)>,
    pub heartbeat_stale: bool,
    /// Age of the heartbeat the XDP program checks; `None`: never written.
    pub heartbeat_age: Option<Duration>,
    /// Interfaces with a pinned link, and how the kernel runs their program.
    pub xdp_modes: Vec<(String, &'static str)>,
    /// `None` when membership is disabled.
    pub gossip: Option<GossipStats>,
}

impl MetricsState {
    /// Reads everything a scrape reports; blocking (BPF syscalls, netlink).
    pub fn sample(&self) -> Sample {
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
                    *sample.requests.entry(vip.address).or_default() += vip.requests;
                }
                sample.verdicts = maps
                    .reasons()
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(reason, count)| (reason.name(), count))
                    .collect();
                if let Ok(watchdog) = maps.watchdog() {
                    sample.heartbeat_stale = watchdog.stale();
                    sample.heartbeat_age = watchdog.heartbeat_age;
                }
            }
            Err(e) => warn!(error = %e, "metrics: reading the maps: {e}"),
        }
        let linked = self.pins.linked_interfaces();
        if !linked.is_empty() {
            match interfaces::discovery::links() {
                Ok(links) => {
                    sample.xdp_modes = linked
                        .into_iter()
                        .map(|name| {
                            let mode = links
                                .iter()
                                .find(|l| l.name == name)
                                .map_or("none", |l| l.xdp.name());
                            (name, mode)
                        })
                        .collect();
                }
                Err(e) => warn!(error = %e, "metrics: listing links: {e}"),
            }
        }
        sample
    }
}
